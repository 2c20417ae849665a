"""wsss: weakly supervised semantic segmentation from image-level labels.

The public API (stable names; everything else is internal)::

    import wsss
    ds = wsss.datasets.VOCDataset("data/synth", "val")
    run = wsss.load_run("runs/cam_synth")
    cams = run.cam(image, labels)          # (C-1, H, W) float32 in [0, 1]
    mask = run.predict(image, crf=True)    # (H, W) class indices
    result = wsss.evaluate("runs/cam_synth/predictions/val", "data/synth", "val")
    print(result.format_table())
"""

from wsss import datasets
from wsss.engine.config import Config, load_config
from wsss.engine.inference import Run, load_run
from wsss.engine.trainer import train
from wsss.evaluation import EvalResult, evaluate

__version__ = "0.1.0"

__all__ = ["Config", "EvalResult", "Run", "datasets", "evaluate", "load_config", "load_run", "train"]
