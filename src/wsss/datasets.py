"""Public dataset names (``wsss.datasets.VOCDataset``); the code lives in ``wsss.data``."""

from wsss.data import ClsTrainDataset, VOCDataset, check_dataset, generate_synthetic, read_classes

__all__ = ["ClsTrainDataset", "VOCDataset", "check_dataset", "generate_synthetic", "read_classes"]
