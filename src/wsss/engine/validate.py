"""Training-time validation (docs/methods/seco.md#train-val).

Under torchrun each process scores a share of the images and the confusion matrices are summed.
Each val image is resized to a ``data.val_resize`` square (448 in ToCo/SeCo; None keeps the size);
the segmentation head runs single-scale, the CAM and aux-CAM as the method makes them
(``Method.image_cams``: multi-scale with the training scales, flip fusion and normalisation from ``cfg.infer``,
unless the method makes its maps otherwise), only for the image's labelled classes, turned into
labels with ``labelled_cam_to_label(bkg_thre)``. Predictions are
upsampled to the ground-truth size and scored with one confusion matrix per output. A method
without CAMs (``has_cams = False``: the DeepLab stage) is scored on its segmentation only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from wsss.cam import labelled_cam_to_label, labelled_classes, resize_maps
from wsss.core.config import Config
from wsss.core.distributed import all_reduce_sum, rank, world_size
from wsss.data import VOCDataset
from wsss.data.transforms import prepare_image, resize_to
from wsss.evaluation.metrics import ConfusionMeter
from wsss.methods import Method
from wsss.utils.progress import progress_bar


def _long_side(shape: tuple[int, ...], side: int) -> tuple[int, int]:
    """(h, w) of ``shape`` shrunk (aspect kept) to a longest side of ``side``."""
    h, w = shape[:2]
    scale = side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


@torch.no_grad()
def validate(
    method: Method,
    dataset: VOCDataset,
    cfg: Config,
    device: torch.device,
    *,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """The scores of ``method`` on ``dataset`` (module docstring), or None when ``should_stop()`` turned
    true between two images (Ctrl-C: the trainer then saves and stops; a partial score is no score).
    Each image is shrunk to ``data.val_max_side`` at most, so one image is seconds, not minutes."""
    method.eval()
    C = dataset.num_classes
    has_cams = method.has_cams
    meters = {"cam": ConfusionMeter(C), "aux_cam": ConfusionMeter(C)} if has_cams else {}
    if method.has_seg_head:
        meters["seg"] = ConfusionMeter(C)
    ids = dataset.ids[: cfg.data.val_max_images] if cfg.data.val_max_images else dataset.ids
    stopped = False
    for id in progress_bar(ids[rank() :: world_size()], desc="val", leave=False, disable=not progress):
        if should_stop is not None and should_stop():
            stopped = True
            break
        image, gt = dataset.load_image(id), dataset.load_mask(id)
        labels = torch.from_numpy(dataset.labels(id)).unsqueeze(0).to(device)
        x = prepare_image(image, cfg.data.val_resize, device, max_side=cfg.data.val_max_side)
        cap = cfg.data.val_max_side
        if cap is not None and max(gt.shape) > cap:
            # a mask larger than the cap is scored at the network's size (nearest): 24 M pixels of maps,
            # labels and confusion per 6000x4000 photo were most of its validation time and memory
            gt = resize_to(gt, _long_side(gt.shape, cap), interpolation="nearest")
        size = gt.shape[-2:]
        if has_cams:
            # the labelled classes' maps only: the seed reads nothing else (labelled_cam_to_label)
            classes = labelled_classes(labels)
            cam, cam_aux = method.image_cams(image, x, classes=classes, scales=cfg.cam.scales, aux=True)
            for name, maps in (("cam", cam), ("aux_cam", cam_aux)):
                if maps is None:  # a method without an aux CAM
                    continue
                label = labelled_cam_to_label(resize_maps(maps, size), classes, bkg_thre=cfg.cam.bkg_thre)
                meters[name].update(gt, label[0].cpu().numpy())
        if "seg" in meters:
            logits = F.interpolate(method.seg_logits(x), size=size, mode="bilinear", align_corners=False)
            meters["seg"].update(gt, logits.argmax(1)[0].cpu().numpy())
    # every process takes part in the same reductions, whichever of them stopped
    if float(all_reduce_sum(torch.tensor([float(stopped)]))) > 0:
        return None
    out: dict[str, Any] = {}
    for name, meter in meters.items():  # each process scored its share: the matrices add up
        meter = ConfusionMeter.from_hist(all_reduce_sum(torch.from_numpy(meter.hist.copy())).numpy())
        s = meter.scores()
        out[f"{name}_miou"] = 100.0 * float(s["miou"])
    out["n_images"] = len(ids)
    return out
