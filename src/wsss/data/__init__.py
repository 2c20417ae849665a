"""Datasets in the VOC layout, transforms, the synthetic co-occurrence dataset and the checker."""

from wsss.data.check import CheckReport, check_dataset, check_pseudo_labels
from wsss.data.classes import COCO_CLASSES, VOC_CLASSES, read_classes
from wsss.data.synth_files import generate_synthetic
from wsss.data.voc import ClsTrainDataset, VOCDataset, write_cls_labels

__all__ = [
    "COCO_CLASSES",
    "VOC_CLASSES",
    "CheckReport",
    "ClsTrainDataset",
    "VOCDataset",
    "check_dataset",
    "check_pseudo_labels",
    "generate_synthetic",
    "read_classes",
    "write_cls_labels",
]
