"""wsss: weakly supervised semantic segmentation from image-level labels.

The public API (stable names; everything else is internal)::

    import wsss
    ds = wsss.data.VOCDataset("data/synth", "val")
    run = wsss.load_run("runs/cam_synth")
    cams = run.cam(image, labels)          # (C-1, H, W) float32 in [0, 1]
    mask = run.predict(image, crf=True)    # (H, W) class indices
    result = wsss.evaluate("runs/cam_synth/predictions/val", "data/synth", "val")
    print(result.format_table())
    route = wsss.run_route(wsss.RouteOptions(data="data/synth", out="runs/route"))  # `wsss route`: a RouteResult

Names are imported on first use, so that worker processes (DataLoader, DenseCRF) that import a
submodule do not pay for the whole package.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "wsss.core.config",
    "load_config": "wsss.core.config",
    "Run": "wsss.runs.run",
    "load_run": "wsss.runs.run",
    "train": "wsss.engine.launch",
    "EvalResult": "wsss.evaluation",
    "evaluate": "wsss.evaluation",
    "run_route": "wsss.pipelines.route",
    "RouteOptions": "wsss.pipelines.route_values",
    "RouteResult": "wsss.pipelines.route_values",
}

__all__ = [*sorted(_EXPORTS), "data"]


def __getattr__(name: str) -> Any:
    if name == "data":
        return importlib.import_module("wsss.data")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wsss' has no attribute {name!r}")
