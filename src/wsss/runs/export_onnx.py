"""``wsss export onnx RUN --out model.onnx``: a run's segmentation network as an ONNX file (docs/export.md).

The file computes what ``wsss predict`` computes at one scale: the logits of a photo and of its mirror image, fused
as the run's ``infer.flip_fuse`` says, at the input's height and width (both dynamic, as is the batch). It takes the
normalised photo; its ``metadata_props`` state the normalisation and the class names. Exported with
``torch.onnx.export(dynamo=True)`` and checked in onnxruntime (``onnx``, ``onnxscript``, ``onnxruntime``: the
``wsss[export]`` extra).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsss.cam.multiscale import fuse_pair
from wsss.core.errors import UsageError
from wsss.core.files import atomic_write, check_output_apart, check_output_file, remove_dead_temps
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.runs.run import Run, load_run
from wsss.utils.runlock import run_own_files

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
# The size the file is checked at after export: other than the traced example's, and no multiple of a patch or a
# stride, so that a network that fixed a size while tracing (a ViT's patch grid) is caught.
CHECK_SIZE = (1, 3, 75, 101)
CHECK_RTOL = 1e-3  # of the logits' largest magnitude: float32 kernels of two runtimes differ far below it


class SingleScaleSegmenter(nn.Module):
    """A run's segmentation network as ``wsss predict`` runs it at scale 1 (``multi_scale_logits`` with one scale):
    the image and its flip, the logits upsampled to the input's size (bilinear, align_corners=False) and the flips
    fused (on the network's grid first with ``infer.fuse_at: grid``); with ``infer.square_size`` the input is resized
    to that square first."""

    def __init__(self, run: Run):
        super().__init__()
        inf = run.cfg.infer
        self.net = run.method
        self.flip_fuse, self.fuse_at, self.square_size = inf.flip_fuse, inf.fuse_at, inf.square_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, size = image.shape[0], image.shape[-2:]
        x = image
        if self.square_size is not None:
            x = F.interpolate(x, size=(self.square_size, self.square_size), mode="bilinear", align_corners=False)
        low = self.net.seg_logits(torch.cat([x, x.flip(-1)], dim=0))
        if self.fuse_at == "grid":
            return _upsample(fuse_pair(low[:b], low[b:].flip(-1), self.flip_fuse), size)
        up = _upsample(low, size)
        return fuse_pair(up[:b], up[b:].flip(-1), self.flip_fuse)


def _upsample(x: torch.Tensor, size: Any) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def require_export_packages() -> None:
    """A UsageError with the install command for this interpreter when ``onnx`` or ``onnxscript`` is missing."""
    missing = [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(
            f"ONNX export needs the package{'s' * (len(missing) > 1)} {', '.join(missing)}: "
            f"{sys.executable} -m pip install 'wsss[export]'"
        )


def onnx_metadata(run: Run) -> dict[str, str]:
    """The ``metadata_props`` of the file: what a user must do to a photo before it and read from its output."""
    inf = run.cfg.infer
    return {
        "producer": "wsss",
        "method": str(run.cfg.method),
        "run": run.dir.name,
        "step": str(run.step),
        "class_names": json.dumps(run.class_names),
        "input": f"{INPUT_NAME}: float32 (N, 3, H, W), RGB, ((pixel / 255) - mean) / std per channel",
        "color_order": "RGB",
        "input_scale": "0-1",  # the pixel values divided by 255 before the mean and std
        "mean": json.dumps(list(IMAGENET_MEAN)),
        "std": json.dumps(list(IMAGENET_STD)),
        "output": f"{OUTPUT_NAME}: float32 (N, C, H, W), C = len(class_names); argmax over C = class index",
        "flip_fuse": inf.flip_fuse,
        # wsss predict shrinks a photo with a longer side first (infer.max_side); the file takes any size given
        "max_side": "none" if inf.max_side is None else str(inf.max_side),
    }


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, and the run's method and classes."""

    path: Path
    method: str
    class_names: list[str]


def export_onnx(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    checkpoint: str = "auto",
    overrides: tuple[str, ...] = (),
) -> OnnxExport:
    """Write the segmentation network of the run ``run_dir`` to ``out`` (atomically; an existing ``out`` is refused
    unless ``overwrite``). Raises UsageError for a run without a segmentation head, an ``infer.resize_long`` run, or
    a network that ``torch.export`` cannot trace for every height and width."""
    require_export_packages()  # before the run is loaded: the error names what to install
    out = check_output_apart(check_output_file(out), run_own_files(run_dir))
    if out.exists() and not overwrite:
        raise UsageError(f"{out}: exists; pass --overwrite to replace it, or choose another --out")
    run = load_run(Path(run_dir), checkpoint=checkpoint, device="cpu", overrides=overrides)
    if run.checkpoint is not None:
        check_output_apart(out, [run.checkpoint])  # a --checkpoint outside the run
    if not run.method.has_seg_head:
        raise UsageError(f"{run.dir}: this run (method {run.cfg.method}) has no segmentation network to export")
    if run.cfg.infer.resize_long is not None:
        raise UsageError(
            f"{run.dir}: infer.resize_long resizes each photo to a long side computed from its size, which the ONNX "
            "file cannot state for every size; export with infer.resize_long=null"
        )
    module = SingleScaleSegmenter(run).eval()
    model = _trace(module, run)
    _check_other_size(module, model, run)
    for key, value in onnx_metadata(run).items():
        model.metadata_props.add(key=key, value=value)
    data = model.SerializeToString()
    remove_dead_temps(out)  # an earlier export of this file that was killed while writing
    with atomic_write(out) as f:
        f.write(data)
    return OnnxExport(out, str(run.cfg.method), run.class_names)


def _trace(module: SingleScaleSegmenter, run: Run) -> Any:
    """The module as an ONNX ModelProto with a dynamic batch, height and width; a network that does not trace for
    every size (a ViT resizes its position embedding to each photo's patch grid in Python) is a UsageError."""
    example = torch.zeros(2, 3, 64, 96)  # not 1: torch.export would fix a dimension of size 1
    dyn = torch.export.Dim.DYNAMIC
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"image": {0: dyn, 2: dyn, 3: dyn}},
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001 (torch.export's many error types: each one means "does not trace")
        why = next((ln.strip() for ln in str(e).splitlines() if "Error" in ln and ":" in ln), type(e).__name__)
        raise _not_exportable(run, why) from e
    assert program is not None  # dynamo=True: export returns the program or raises
    buf = io.BytesIO()
    program.save(buf)  # type: ignore[arg-type]  # torch's stubs say a path; onnx.save, which it calls, takes a file
    import onnx

    return onnx.load_model_from_string(buf.getvalue())


def _not_exportable(run: Run, why: str) -> UsageError:
    return UsageError(
        f"{run.dir}: the segmentation network of this run (method {run.cfg.method}, backbone {run.cfg.model.backbone}) "
        f"does not export to ONNX for every height and width ({why}); DeepLab runs do (docs/export.md)"
    )


def _check_other_size(module: SingleScaleSegmenter, model: Any, run: Run) -> None:
    """Run the file in onnxruntime at :data:`CHECK_SIZE` against the network: a network that traced one size only
    (a branch on the input's size taken as it was for the example) is refused here rather than written."""
    import onnxruntime as ort

    x = torch.randn(CHECK_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = module(x).numpy()
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {INPUT_NAME: x.numpy()})[0]
    except Exception as e:  # noqa: BLE001 (onnxruntime's errors: a shape the graph cannot take)
        raise _not_exportable(run, f"the file fails on a {CHECK_SIZE[2]}x{CHECK_SIZE[3]} input: {e}") from e
    if got.shape != want.shape or abs(got - want).max() > CHECK_RTOL * max(1.0, float(abs(want).max())):
        raise _not_exportable(
            run,
            f"the traced graph fixed a size: on a {CHECK_SIZE[2]}x{CHECK_SIZE[3]} input it differs from the network",
        )
