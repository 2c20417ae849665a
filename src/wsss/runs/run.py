"""A trained run as a model: ``load_run(dir)`` -> ``Run`` with ``cam(image)``, ``seg_prob(image)`` and
``predict(image)``. The batch jobs over a split that write into the run directory are ``runs/jobs.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss.cam import labelled_classes, multi_scale_logits
from wsss.core.config import Config
from wsss.core.errors import UsageError
from wsss.data.transforms import prepare_image
from wsss.engine.defaults import load_trained_method
from wsss.methods import Method


@dataclass
class Run:
    """A trained run loaded for inference: ``run.cam(image)``, ``run.predict(image)``."""

    dir: Path
    cfg: Config
    method: Method
    class_names: list[str]
    device: torch.device

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @torch.no_grad()
    def cam(
        self, image: np.ndarray, labels: np.ndarray | None = None, scales: Sequence[float] | None = None,
        *, all_classes: bool = False,
    ) -> np.ndarray:  # fmt: skip
        """Multi-scale + flip CAM of an (H, W, 3) uint8 image -> (C-1, H, W) float32 in [0, 1].

        With ``labels`` (multi-hot over the foreground classes), only the labelled classes' maps are
        computed (:meth:`labelled_cam`); the others are zero. ``all_classes``: compute every class's
        map first and zero the absent ones after (the same numbers, the cost of every class).
        """
        num_fg = self.num_classes - 1
        per_image = self.method.cams.source == "per_image"
        if per_image and (labels is None or all_classes):
            full = self.method.labelled_cam_of_image(image, np.arange(num_fg))  # every class: CLIP-ES
            return full if labels is None else full * (np.asarray(labels) > 0.5).astype(np.float32)[:, None, None]
        if labels is not None and not all_classes:
            keys, maps = self.labelled_cam(image, labels, scales)
            full = np.zeros((num_fg, *image.shape[:2]), dtype=np.float32)
            full[keys] = maps
            return full
        inf = self.cfg.infer
        x = prepare_image(image, inf.cam_input_size, self.device, max_side=inf.max_side)
        cam, _ = self.method.cam_passes(scales, labelled=labels is not None)(self.method.cam_maps, x)
        cam = F.interpolate(cam, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
        if labels is not None:
            cam = cam * torch.as_tensor(labels, dtype=cam.dtype, device=cam.device).view(-1, 1, 1)
        return cam.float().cpu().numpy()

    @torch.no_grad()
    def labelled_cam(
        self, image: np.ndarray, labels: np.ndarray, scales: Sequence[float] | None = None,
        *, prepared: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The CAMs of the labelled classes only: (0-based foreground indices (k,), (k, H, W) float32).

        Only these maps are upsampled, fused, normalised and resized (``CamPasses(classes=...)``),
        and the aux CAM that ``cam_maps`` also returns is dropped before any of that: what an image
        holds, not what the dataset could. ``prepared``: ``prepare_image(image, infer.cam_input_size)``
        already made (by a loader worker, on the CPU; moved to the device here).
        """
        keys = np.flatnonzero(np.asarray(labels) > 0.5)
        if self.method.cams.source == "per_image":  # CLIP-ES: CAMs from the labels' text, per image
            return keys, self.method.labelled_cam_of_image(image, keys)
        if keys.size == 0:  # nothing labelled: every map is zero, as the all-class path makes it
            return keys, np.zeros((0, *image.shape[:2]), dtype=np.float32)
        inf = self.cfg.infer
        x = (
            _on_device(prepared, self.device)
            if prepared is not None
            else prepare_image(image, inf.cam_input_size, self.device, max_side=inf.max_side)
        )
        passes = self.method.cam_passes(scales)
        cam = passes(lambda v: self.method.cam_maps(v)[0], x, classes=torch.from_numpy(keys), compact=True)
        cam = F.interpolate(cam, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
        return keys, cam.float().cpu().numpy()

    def require_classifier(self) -> None:
        """A UsageError naming the run unless its method has an image classifier (``Method.has_classifier``)."""
        if not self.method.has_classifier:
            raise UsageError(
                f"{self.dir}: this run (method {self.cfg.method}) has no image classifier to tag photos with; "
                "give a run of a CAM method (cam, seco, rca, sccam)"
            )

    @torch.no_grad()
    def class_probs(self, image: np.ndarray) -> np.ndarray:
        """(C-1,) float32: the image classifier's probabilities (the sigmoid of ``Method.class_logits``) for an
        (H, W, 3) uint8 image, seen as its CAMs see it (``infer.cam_input_size``, ``infer.max_side``), the logits
        of the image and of its flip averaged."""
        self.require_classifier()
        inf = self.cfg.infer
        x = prepare_image(image, inf.cam_input_size, self.device, max_side=inf.max_side)
        logits = self.method.class_logits(torch.cat([x, x.flip(-1)])).float().mean(0)
        return torch.sigmoid(logits).cpu().numpy()

    @torch.no_grad()
    def seg_prob(
        self, image: np.ndarray, scales: Sequence[float] | None = None, *, prepared: torch.Tensor | None = None,
        classes: Sequence[int] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Multi-scale + flip segmentation probabilities (C, H, W) float32 (methods.md 2.11 / 3.10).
        ``prepared``: ``prepare_image(image, None)`` already made (by a loader worker). ``classes``: the
        only classes (0 = background) the softmax runs over; the others get 0 (:func:`allowed_classes`)."""
        keep = self._keep(classes)
        prob = self._fused_logits(image, scales, prepared, lambda x: torch.softmax(keep(x.float()), dim=1))
        return prob[0].cpu().numpy()

    @torch.no_grad()
    def seg_label(
        self, image: np.ndarray, scales: Sequence[float] | None = None, *, prepared: torch.Tensor | None = None,
        classes: Sequence[int] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """(H, W) int64: the argmax of :meth:`seg_prob` (over ``classes`` only, if given), taken band by band
        (a large photo's probabilities of every class are never whole in memory)."""
        keep = self._keep(classes)
        label = self._fused_logits(image, scales, prepared, lambda x: keep(x).argmax(dim=1, keepdim=True))
        return label[0, 0].cpu().numpy()

    @staticmethod
    def _keep(classes: Sequence[int] | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """Fused (B, C, ...) logits with every class not in ``classes`` at -inf (None: all kept)."""
        if classes is None:
            return lambda x: x

        def keep(x: torch.Tensor) -> torch.Tensor:
            mask = torch.ones(x.shape[1], dtype=torch.bool, device=x.device)
            mask[torch.as_tensor(list(classes), dtype=torch.long, device=x.device)] = False
            return x.masked_fill(mask.view(1, -1, *([1] * (x.dim() - 2))), float("-inf"))

        return keep

    def _fused_logits(
        self, image: np.ndarray, scales: Sequence[float] | None, prepared: torch.Tensor | None,
        reduce: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:  # fmt: skip
        inf = self.cfg.infer
        x = (
            _on_device(prepared, self.device)
            if prepared is not None
            else prepare_image(image, None, self.device, max_side=inf.max_side)
        )
        return multi_scale_logits(
            self.method.seg_logits, x, tuple(scales or inf.scales), image.shape[:2],
            flip_fuse="sum", scale_fuse="max", square_size=inf.square_size, reduce=reduce,
        )  # fmt: skip

    def predict(
        self, image: np.ndarray, *, crf: bool = False, scales: Sequence[float] | None = None,
        classes: Sequence[int] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """(H, W) int64 label map; with ``crf`` a DenseCRF over the classes that can appear; ``classes``:
        the only classes it may name (:func:`allowed_classes`)."""
        if not crf:
            return self.seg_label(image, scales, classes=classes)
        from wsss.cam import crf_label

        prob = self.seg_prob(image, scales, classes=classes)
        return crf_label(image, prob, present=present_classes(prob), params=self.cfg.infer.crf)


def _on_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A loader's (pinned, on CUDA) CPU tensor on ``device``, copied without blocking the host."""
    return x.to(device, non_blocking=x.is_pinned())


def allowed_classes(labels: np.ndarray) -> list[int]:
    """The segmentation classes a photo's image-level labels allow (``labels``: multi-hot over the foreground
    classes): the background (0) and each labelled class (``cam.labelled_classes`` + 1). Predicting the training
    photos for a next round's labels, a class the photo is not labelled with is known to be absent."""
    return [0, *(1 + labelled_classes(torch.as_tensor(np.asarray(labels)))).tolist()]


def present_classes(prob: np.ndarray, min_prob: float = 0.05) -> list[int]:
    """Classes the CRF keeps: background, every class that wins the argmax somewhere, and any class
    whose probability reaches ``min_prob`` somewhere. A class below that everywhere cannot win a
    pixel after 10 mean-field steps in practice, and a CRF over all 81 COCO classes costs 3-30x more."""
    top = np.unique(prob.argmax(0))
    strong = np.flatnonzero(prob.reshape(prob.shape[0], -1).max(1) >= min_prob)
    return sorted({0, *top.tolist(), *strong.tolist()})


def load_run(run_dir: str | Path, *, checkpoint: str = "auto", device: str | None = None) -> Run:
    """Load a run directory (``config.yaml`` + ``checkpoints/best.pt`` or ``last.pt``)."""
    t = load_trained_method(run_dir, checkpoint=checkpoint, device=device)
    return Run(dir=Path(run_dir), cfg=t.cfg, method=t.method, class_names=t.class_names, device=t.device)
