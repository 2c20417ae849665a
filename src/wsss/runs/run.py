"""A trained run as a model: ``load_run(dir)`` -> ``Run`` with ``cam(image)``, ``seg_prob(image)`` and
``predict(image)``. The batch jobs over a split that write into the run directory are ``runs/jobs.py``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsss.cam import labelled_classes, multi_scale_logits, resize_maps
from wsss.core.checkpoint import checkpoint_digest
from wsss.core.config import Config, results_config
from wsss.core.errors import ConfigWarning, DataError, UsageError
from wsss.data.transforms import prepare_image
from wsss.data.voc import VOCDataset, run_dataset
from wsss.engine.defaults import load_trained_method
from wsss.methods import Method, method_class


@dataclass
class Run:
    """A trained run loaded for inference: ``run.cam(image)``, ``run.predict(image)``."""

    dir: Path
    cfg: Config
    method: Method
    class_names: list[str]
    device: torch.device
    ensemble: tuple[Method, ...] = ()  # further segmentation networks averaged with ``method`` (:meth:`with_ensemble`)
    checkpoint: Path | None = None  # the checkpoint file ``method`` was loaded from
    step: int | None = None  # its training step
    members: tuple[Run, ...] = ()  # the runs of ``ensemble``, in order (what the outputs' settings stamp names)
    # the KEY=VALUE words merged over the saved config (``load_run``): what this job was told on its command line
    overrides: tuple[str, ...] = ()
    sha1: str | None = None  # the SHA-1 of the checkpoint's bytes as loaded (None: read from the file when asked)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def names(self, *keys: str) -> bool:
        """Whether this job's command line set one of the config ``keys`` (a word of :attr:`overrides`, or a typed
        flag's: ``--bkg-thre`` is ``cam.bkg_thre``), not only the run's saved config."""
        return bool({word.split("=", 1)[0] for word in self.overrides} & set(keys))

    def model_settings(self, *, own: bool = True) -> dict[str, Any]:
        """Which model this is, for the settings stamp of an output folder (``runs/stamps.py``): its checkpoint
        (relative to the run, as ``checkpoints/best.pt``, so that a moved run keeps its outputs), step and content
        (the SHA-1 of the bytes loaded: another run's checkpoint of the same name and step, or the run retrained to
        the same step, is another model), and the settings that build its network
        (:func:`network_settings`: an override of ``options.*`` is another model); ``own=False`` (another run's
        model: a tagger, an ensemble's member) adds the run's resolved folder."""
        ckpt = self.checkpoint
        if ckpt is not None:
            try:
                ckpt = ckpt.resolve().relative_to(self.dir.resolve())
            except ValueError:  # a .pt path outside the run
                ckpt = ckpt.resolve()
        out: dict[str, Any] = {
            "checkpoint": None if ckpt is None else str(ckpt),
            "step": self.step,
            "sha1": self.sha1
            if self.sha1 is not None or self.checkpoint is None
            else checkpoint_digest(self.checkpoint),
            "network": network_settings(self.cfg, self.method.built_options()),
        }
        return out if own else {"dir": str(self.dir.resolve()), **out}

    @torch.no_grad()
    def cam(
        self,
        image: np.ndarray,
        labels: np.ndarray | None = None,
        scales: Sequence[float] | None = None,
        *,
        all_classes: bool = False,
    ) -> np.ndarray:
        """Multi-scale + flip CAM of an (H, W, 3) uint8 image -> (C-1, H, W) float32 in [0, 1].

        With ``labels`` (multi-hot over the foreground classes), only the labelled classes' maps are
        computed (:meth:`labelled_cam`); the others are zero. ``all_classes``: compute every class's
        map first and zero the absent ones after (the same numbers, the cost of every class).
        """
        if labels is not None and not all_classes:
            classes, maps = self.labelled_cam(image, labels, scales)
            full = np.zeros((self.num_classes - 1, *image.shape[:2]), dtype=np.float32)
            full[classes] = maps
            return full
        cam, _ = self.method.image_cams(image, scales=scales, labelled=labels is not None)
        cam = resize_maps(cam, image.shape[:2])[0]
        if labels is not None:
            cam = cam * torch.as_tensor(labels, dtype=cam.dtype, device=cam.device).view(-1, 1, 1)
        return cam.float().cpu().numpy()

    @torch.no_grad()
    def labelled_cam(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        scales: Sequence[float] | None = None,
        *,
        prepared: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The CAMs of the labelled classes only: (0-based foreground classes (k,), (k, H, W) float32).

        Only these maps are upsampled, fused, normalised and resized (``Method.image_cams(classes=...)``),
        and the aux CAM that ``cam_maps`` also returns is dropped before any of that: what an image
        holds, not what the dataset could. ``prepared``: ``prepare_image(image, infer.cam_input_size)``
        already made (by a loader worker, on the CPU; moved to the device here).
        """
        classes = np.flatnonzero(np.asarray(labels) > 0.5)
        x = _on_device(prepared, self.device) if prepared is not None else None
        cam, _ = self.method.image_cams(image, x, classes=torch.from_numpy(classes), scales=scales)
        return classes, resize_maps(cam, image.shape[:2])[0].float().cpu().numpy()

    def with_ensemble(self, members: Sequence[Run]) -> Run:
        """This run with the segmentation networks of ``members`` averaged into its own: each network's softmax
        probabilities at each scale and flip, averaged with equal weights (an ensemble of trainings of one stage
        on the same labels, differing in their seed: ``wsss predict --ensemble``). Everything else (the scales,
        the CRF, the tags) is this run's. The members must have a segmentation head and this run's classes."""
        seen = {m.dir.resolve() for m in (self, *self.members)}
        for member in members:
            if member.dir.resolve() in seen:  # legal (equal weights per member), but rarely what was meant
                what = "the run itself" if member.dir.resolve() == self.dir.resolve() else "listed twice"
                warnings.warn(
                    f"{member.dir}: an ensemble member that is {what} counts twice in the average",
                    ConfigWarning,
                    stacklevel=2,
                )
            seen.add(member.dir.resolve())
            if not member.method.has_seg_head:
                raise UsageError(f"{member.dir}: this run (method {member.cfg.method}) has no segmentation head")
            if member.device != self.device:
                raise UsageError(f"{member.dir}: on {member.device}, while {self.dir} is on {self.device}")
            self.require_classes_of(member)
        return replace(self, ensemble=(*self.ensemble, *(m.method for m in members)), members=(*self.members, *members))

    def _seg_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The segmentation network's logits, or an ensemble's: the log of the networks' mean softmax, shifted at each
        pixel by the mean of their log-sum-exp. The shift is one number per pixel, which the softmax and the argmax
        after the flip's sum do not see; it puts the ensemble's logits on its members' level, so that the max over
        scales reads them as it reads one network's (a run ensembled with itself is the run alone, at any scales)."""
        if not self.ensemble:
            return self.method.seg_logits(x)
        first = self.method.seg_logits(x).float()
        logits = [first]
        for method in self.ensemble:
            other = method.seg_logits(x).float()
            if other.shape != first.shape:  # another architecture's output stride
                other = F.interpolate(other, size=first.shape[-2:], mode="bilinear", align_corners=False)
            logits.append(other)
        log_probs = torch.stack([torch.log_softmax(v, dim=1) for v in logits])
        level = torch.stack([torch.logsumexp(v, dim=1, keepdim=True) for v in logits]).mean(0)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(logits)) + level

    def require_classes_of(self, other: Run) -> None:
        """A UsageError naming ``other`` unless it has this run's classes (a tagger or an ensemble's member)."""
        if other.class_names != self.class_names:
            raise UsageError(
                f"{other.dir}: its classes ({', '.join(other.class_names[1:4])}, ...) are not those of {self.dir} "
                f"({', '.join(self.class_names[1:4])}, ...)"
            )

    def dataset(self, root: str | None, split: str) -> VOCDataset:
        """The dataset a job on this run reads (``--data-root``, else the run's ``data.root``), refused unless it has
        the run's classes in the run's order: its outputs would be ids of other classes. Every job over a split reads
        its dataset here (``wsss cam | pseudo | predict | tag``: ``predict --split`` wrote and ``eval``
        scored masks of a dataset of 8 classes with a run of 7, where ``cam`` refused)."""
        ds = run_dataset(root, self.cfg.data.root, split, self.dir)
        if ds.num_classes != self.num_classes:
            raise DataError(
                f"{ds.root}: the dataset has {ds.num_classes} classes but the run {self.dir} was trained with "
                f"{self.num_classes}"
            )
        if ds.class_names != self.class_names:
            i = next(i for i, (a, b) in enumerate(zip(ds.class_names, self.class_names, strict=True)) if a != b)
            raise DataError(
                f"{ds.root}: the dataset's classes are not the run's (class {i}: {ds.class_names[i]!r} here, "
                f"{self.class_names[i]!r} in {self.dir})"
            )
        return ds

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
        self,
        image: np.ndarray,
        scales: Sequence[float] | None = None,
        *,
        prepared: torch.Tensor | None = None,
        classes: Sequence[int] | None = None,
        class_weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """Multi-scale + flip segmentation probabilities (C, H, W) float32 (docs/methods/seco.md#inference).
        ``prepared``: ``prepare_image(image, None)`` already made (by a loader worker). ``classes``: the
        only classes (0 = background) the softmax runs over; the others get 0 (:func:`allowed_classes`).
        ``class_weights``: (C,) in [0, 1], each class's probability multiplied by its weight and renormalised
        (:func:`class_weights_of`; ``classes`` is the case of weights 0 and 1)."""
        weigh = self._weigh(classes, class_weights)
        prob = self._fused_logits(image, scales, prepared, lambda x: torch.softmax(weigh(x.float()), dim=1))
        return prob[0].cpu().numpy()

    @torch.no_grad()
    def seg_logits(self, image: np.ndarray, scales: Sequence[float] | None = None) -> np.ndarray:
        """(C, H, W) float32: the fused multi-scale + flip logits whose softmax is :meth:`seg_prob` (at one scale,
        what ``wsss export onnx``'s file computes)."""
        return self._fused_logits(image, scales, None, lambda x: x.float())[0].cpu().numpy()

    @torch.no_grad()
    def seg_label(
        self,
        image: np.ndarray,
        scales: Sequence[float] | None = None,
        *,
        prepared: torch.Tensor | None = None,
        classes: Sequence[int] | None = None,
        class_weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """(H, W) int64: the argmax of :meth:`seg_prob` (over ``classes`` only, if given; of the weighted
        probabilities with ``class_weights``), taken band by band (a large photo's probabilities of every class
        are never whole in memory)."""
        weigh = self._weigh(classes, class_weights)
        label = self._fused_logits(image, scales, prepared, lambda x: weigh(x).argmax(dim=1, keepdim=True))
        return label[0, 0].cpu().numpy()

    def _weigh(
        self, classes: Sequence[int] | None, class_weights: np.ndarray | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Fused (B, C, ...) logits plus each class's log weight: softmax(x + log w) = w * softmax(x),
        renormalised. A class not in ``classes`` (weight 0) is at -inf; a weight of 1 adds exactly 0, so a
        kept class's logits are unchanged. None and None: the logits as they are."""
        if classes is None and class_weights is None:
            return lambda x: x
        if classes is not None and class_weights is not None:
            raise UsageError("give a prediction either its classes or its class weights, not both")
        weights = class_weights_of(classes, self.num_classes) if classes is not None else np.asarray(class_weights)
        if weights.shape != (self.num_classes,) or not np.all((weights >= 0) & (weights <= 1)) or not weights.any():
            raise UsageError(
                f"class weights must be {self.num_classes} numbers in [0, 1], not all 0; got shape {weights.shape}"
            )
        with np.errstate(divide="ignore"):  # log 0 = -inf: the class cannot win a pixel
            log_w = torch.as_tensor(np.log(weights.astype(np.float64)))

        def weigh(x: torch.Tensor) -> torch.Tensor:
            return x + log_w.to(x.device, x.dtype).view(1, -1, *([1] * (x.dim() - 2)))

        return weigh

    def _fused_logits(
        self,
        image: np.ndarray,
        scales: Sequence[float] | None,
        prepared: torch.Tensor | None,
        reduce: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """``reduce`` of the multi-scale + flip logits at the image's size, resized and fused as the ``infer`` keys
        say (``square_size``, ``resize_long``, ``scale_resize``, ``flip_fuse``, ``scale_fuse``, ``fuse_at``)."""
        inf = self.cfg.infer
        x = (
            _on_device(prepared, self.device)
            if prepared is not None
            else prepare_image(image, None, self.device, max_side=inf.max_side)
        )
        return multi_scale_logits(
            self._seg_logits,
            x,
            tuple(scales or inf.scales),
            image.shape[:2],
            square_size=inf.square_size,
            long_side=inf.resize_long,
            scale_resize=inf.scale_resize,
            flip_fuse=inf.flip_fuse,
            scale_fuse=inf.scale_fuse,
            fuse_at=inf.fuse_at,
            reduce=reduce,
        )

    def predict(
        self,
        image: np.ndarray,
        *,
        crf: bool = False,
        scales: Sequence[float] | None = None,
        classes: Sequence[int] | None = None,
        class_weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """(H, W) int64 label map; with ``crf`` a DenseCRF over the classes that can appear; ``classes``:
        the only classes it may name (:func:`allowed_classes`); ``class_weights``: see :meth:`seg_prob`."""
        if not crf:
            return self.seg_label(image, scales, classes=classes, class_weights=class_weights)
        from wsss.cam import crf_label

        prob = self.seg_prob(image, scales, classes=classes, class_weights=class_weights)
        return crf_label(image, prob, present=present_classes(prob), params=self.cfg.infer.crf)


# options that name the file a CLIP method's run was made from, as its build records it: provenance only (the
# checkpoint's digest names its weights)
PROVENANCE_OPTIONS = ("weights",)


def network_settings(cfg: Config, built: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings that build a run's network and its forward, which a checkpoint's weights are loaded into: the
    method, ``model`` (but ``model.pretrained``, the weights a training starts from), ``options`` (but the start
    files the method reads as ``model.pretrained``, ``Method.start_files``, and the file it was made from:
    :data:`PROVENANCE_OPTIONS`) with ``built``, what the build read off those files (``Method.built_options``: a
    CLIP's architecture, whether read off its file or, the file moved since, off the checkpoint), and ``run.amp``.
    A run whose weight files moved is the same network; the checkpoint's digest names its weights."""
    c = results_config(cfg)
    model = {k: v for k, v in c["model"].items() if k != "pretrained"}
    files = {*method_class(cfg).start_files, *PROVENANCE_OPTIONS}
    options = {**{k: v for k, v in c["options"].items() if k not in files}, **(built or {})}
    return {"method": c["method"], "model": model, "options": options, "amp": c["run"]["amp"]}


def _on_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A loader's (pinned, on CUDA) CPU tensor on ``device``, copied without blocking the host."""
    return x.to(device, non_blocking=x.is_pinned())


def allowed_classes(labels: np.ndarray) -> list[int]:
    """The segmentation classes a photo's image-level labels allow (``labels``: multi-hot over the foreground
    classes): the background (0) and each labelled class (``cam.labelled_classes`` + 1). Predicting the training
    photos for a next round's labels, a class the photo is not labelled with is known to be absent."""
    return [0, *(1 + labelled_classes(torch.as_tensor(np.asarray(labels)))).tolist()]


def class_weights_of(classes: Sequence[int], num_classes: int) -> np.ndarray:
    """(C,) float64: 1 for each of ``classes`` (0 = background), 0 for the others: the weights of a hard gate."""
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[np.asarray(list(classes), dtype=np.int64)] = 1.0
    return weights


def soft_tag_weights(probs: np.ndarray) -> np.ndarray:
    """(C,) float64 weights of a soft gate (``wsss predict --tag-gate soft``) from a classifier's (C-1,) class
    probabilities: the background's 1, each class's its probability of being in the photo. The segmentation's
    probability of a class at a pixel is multiplied by it and renormalised (a product of the two experts), so
    no threshold is set: a class the classifier doubts survives where the segmentation is sure of it."""
    return np.concatenate([[1.0], np.asarray(probs, dtype=np.float64)])


def present_classes(prob: np.ndarray, min_prob: float = 0.05) -> list[int]:
    """Classes the CRF keeps: background, every class that wins the argmax somewhere, and any class
    whose probability reaches ``min_prob`` somewhere. A class below that everywhere cannot win a
    pixel after 10 mean-field steps in practice, and a CRF over all 81 COCO classes costs 3-30x more."""
    top = np.unique(prob.argmax(0))
    strong = np.flatnonzero(prob.reshape(prob.shape[0], -1).max(1) >= min_prob)
    return sorted({0, *top.tolist(), *strong.tolist()})


def load_run(
    run_dir: str | Path, *, checkpoint: str = "auto", device: str | None = None, overrides: Sequence[str] = ()
) -> Run:
    """Load a run directory (``config.yaml`` + ``checkpoints/best.pt`` or ``last.pt``): its saved config with the
    ``KEY=VALUE`` words ``overrides`` merged over it (every command that reads a run takes them; its typed flags are
    shorthand for such words), ``device`` shorthand for ``run.device=DEVICE``."""
    words = (*overrides, *([f"run.device={device}"] if device else []))
    t = load_trained_method(run_dir, checkpoint=checkpoint, overrides=words)
    return Run(
        dir=Path(run_dir),
        cfg=t.cfg,
        method=t.method,
        class_names=t.class_names,
        device=t.device,
        checkpoint=t.checkpoint,
        step=t.step,
        overrides=words,
        sha1=t.sha1,
    )
