"""Datasets in the PASCAL VOC layout (see docs/datasets.md):

    root/JPEGImages/<id>.jpg               (.png also accepted)
    root/SegmentationClassAug/<id>.png     (preferred) and/or root/SegmentationClass/<id>.png
    root/ImageSets/Segmentation/<split>.txt
    root/cls_labels.npy                    (optional: {id: float32 multi-hot over the fg classes})
    root/classes.txt                       (optional: names, background first; VOC's 21 if absent)

``VOCDataset`` reads images, masks and image-level labels; ``ClsTrainDataset`` wraps it for
classifier training (augmentation, normalisation, ``img_box``, optional extra views).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from wsss.core.config import DATA_ROOT_UNSET, TrueMasks
from wsss.core.errors import ConfigError, DataError
from wsss.core.safe_load import read_npy
from wsss.data.classes import CLASSES_FILE, read_classes
from wsss.data.transforms import TrainAugment
from wsss.utils.io import describe_path, id_problem, read_image, read_label_png, read_text_file, save_npy

IMAGE_DIR = "JPEGImages"
MASK_DIRS = ("SegmentationClassAug", "SegmentationClass")  # in order of preference
SPLIT_DIR = Path("ImageSets") / "Segmentation"
CLS_LABELS_FILE = "cls_labels.npy"
# The names a dataset's image is looked for under, in this order (JPEGImages/<id><ext>); ``prepare folder`` places
# a photo of another case of these (``.Jpg``) under the lower-case one.
IMAGE_EXTS = (".jpg", ".png", ".jpeg", ".webp", ".JPG", ".JPEG", ".PNG", ".WEBP")


class SplitNotFoundError(DataError):
    """A split file that is not there (``read_split``): a command may add what else it can read (``--images``)."""


def available_splits(root: str | os.PathLike) -> list[str]:
    """Names of the split files in ``root/ImageSets/Segmentation``."""
    d = Path(root) / SPLIT_DIR
    return sorted(p.stem for p in d.glob("*.txt")) if d.is_dir() else []


def parse_split(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(ids, problems) of a split file: one id a line, blank lines skipped, surrounding whitespace
    stripped, a line of several words a problem (ids hold no whitespace); a PSA-style line
    ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`` is reduced to ``<id>``. Ids become output
    file names, so a line whose id could leave its folder (a path separator, ``..``, an absolute path)
    is not taken: it gives a ``file:line: ...`` problem instead. DataError if the file cannot be read."""
    path = Path(path)
    lines = read_text_file(path, "split file").splitlines()
    ids, problems = [], []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        first = parts[0]
        token = Path(first)
        if "/" in first and token.suffix in IMAGE_EXTS and ".." not in token.parts:  # PSA list format
            first = token.stem
        elif len(parts) > 1:  # one id a line: cutting "my photo" to "my" would name another image
            problems.append(f"{path}:{n}: {line!r} is not one id (ids cannot contain whitespace)")
            continue
        problem = id_problem(first)
        if problem is not None:
            problems.append(f"{path}:{n}: unsafe image id {first!r} ({problem}; ids are file names)")
            continue
        ids.append(first)
    return ids, problems


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Ids of ``split`` (see :func:`parse_split`); DataError naming ``file:line`` for an unsafe id."""
    path = Path(root) / SPLIT_DIR / f"{split}.txt"
    if not path.is_file():
        have = available_splits(root)
        listing = ", ".join(have) if have else f"none (no .txt files in {Path(root) / SPLIT_DIR})"
        raise SplitNotFoundError(f"{path}: split file not found; available splits: {listing}")
    ids, problems = parse_split(path)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    return ids


def read_cls_labels_file(path: str | os.PathLike) -> dict:
    """The dict of a ``cls_labels.npy`` (PSA / ToCo format: ``np.save`` of {id: multi-hot}), read
    without running code (``safe_load.read_npy``: numpy arrays only); entries are not checked here.
    DataError naming the file if it is unreadable, refused, or not a dict."""
    obj = read_npy(path, "label file")
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict {{id: float32 multi-hot}}, got {type(obj).__name__}")
    return obj


def load_cls_labels(root: str | os.PathLike, num_classes: int | None = None) -> dict[str, np.ndarray] | None:
    """Read ``root/cls_labels.npy`` ({id: float32 (C-1,)}), or None if absent.

    With ``num_classes`` given, the vector length is checked against it (C - 1) and a DataError
    names both cls_labels.npy and classes.txt on disagreement.
    """
    path = Path(root) / CLS_LABELS_FILE
    if not path.is_file():
        return None
    obj = read_cls_labels_file(path)
    out: dict[str, np.ndarray] = {}
    for k, v in obj.items():
        try:
            vec = np.asarray(v, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: entry {k!r} is not a numeric vector ({e})") from e
        out[str(k)] = vec
    if num_classes is not None and out:
        lengths = sorted({v.shape[0] for v in out.values()})
        if lengths != [num_classes - 1]:
            cls_src = Path(root) / CLASSES_FILE
            cls_desc = (
                f"{cls_src} lists {num_classes} classes"
                if cls_src.is_file()
                else f"the default VOC class list ({num_classes} classes; no {cls_src})"
            )
            raise DataError(
                f"{path}: label vectors have length {', '.join(map(str, lengths))} but {cls_desc}, "
                f"so they must have length {num_classes - 1} (foreground classes, background excluded)"
            )
    return out


def write_cls_labels(root: str | os.PathLike, labels: Mapping[str, Any]) -> Path:
    """Write ``root/cls_labels.npy`` ({id: float32 multi-hot}) atomically; returns its path."""
    data = {str(k): np.asarray(v, dtype=np.float32).reshape(-1) for k, v in labels.items()}
    lengths = {v.shape[0] for v in data.values()}
    if len(lengths) > 1:
        raise ValueError(f"label vectors have different lengths: {sorted(lengths)}")
    path = Path(root) / CLS_LABELS_FILE
    save_npy(path, data, pickled_dict=True)  # the format the other WSSS codes read
    return path


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Multi-hot (C-1,) float32 of the foreground classes 1..C-1 present in ``mask``."""
    present = np.zeros(256, dtype=bool)
    present[np.unique(mask)] = True
    return present[1:num_classes].astype(np.float32)


def find_image(root: str | os.PathLike, id: str) -> Path | None:
    """JPEGImages/<id> with the first suffix of ``IMAGE_EXTS`` that exists (.jpg first), else None."""
    d = Path(root) / IMAGE_DIR
    return next((p for ext in IMAGE_EXTS if (p := d / f"{id}{ext}").is_file()), None)


def find_mask(root: str | os.PathLike, id: str) -> Path | None:
    """SegmentationClassAug/<id>.png if it exists, else SegmentationClass/<id>.png, else None."""
    return next((p for d in MASK_DIRS if (p := Path(root) / d / f"{id}.png").is_file()), None)


class VOCDataset(Dataset):
    """A split of a dataset in the VOC layout.

    Attributes: ``root``, ``split``, ``ids``, ``class_names``, ``num_classes`` (incl. background).
    ``dataset[i]`` -> dict(id, image (H, W, 3) uint8, mask (H, W) uint8 or None, labels (C-1,)
    float32 multi-hot).

    Image labels come from ``cls_labels.npy`` when present (loaded once, then cached), else from
    the mask. ``require_masks=True`` raises a DataError at construction if any id lacks a mask.
    """

    def __init__(self, root: str | os.PathLike, split: str, *, require_masks: bool = False) -> None:
        if root is None:  # a config without data.root
            raise ConfigError(DATA_ROOT_UNSET)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{describe_path(self.root)}: dataset root not found")
        self.split = split
        self.ids: list[str] = read_split(self.root, split)
        self.class_names: list[str] = read_classes(self.root)
        self.num_classes: int = len(self.class_names)
        self._cls_labels: dict[str, np.ndarray] | None = None
        self._cls_labels_loaded = False
        if require_masks:
            missing = [i for i in self.ids if self.mask_path(i) is None]
            if missing:
                dirs = " or ".join(str(self.root / d) for d in MASK_DIRS)
                raise DataError(
                    f"{self.root / SPLIT_DIR / (split + '.txt')}: {len(missing)} of {len(self.ids)} ids "
                    f"have no mask in {dirs} (first: {', '.join(missing[:5])})"
                )

    # ---- paths -----------------------------------------------------------------------------
    def image_path(self, id: str) -> Path:
        """The photo ``find_image`` finds, else JPEGImages/<id>.jpg (whose reading names the missing file)."""
        return find_image(self.root, id) or self.root / IMAGE_DIR / f"{id}.jpg"

    def mask_path(self, id: str) -> Path | None:
        return find_mask(self.root, id)

    def has_mask(self, id: str) -> bool:
        return self.mask_path(id) is not None

    # ---- loading ---------------------------------------------------------------------------
    def load_image(self, id: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        return read_image(self.image_path(id))

    def load_mask(self, id: str) -> np.ndarray:
        """(H, W) uint8 class-index mask; DataError if there is none."""
        p = self.mask_path(id)
        if p is None:
            raise DataError(
                f"{self.root / MASK_DIRS[1] / (id + '.png')}: mask not found for id {id!r} "
                f"(looked in {', '.join(MASK_DIRS)})"
            )
        return read_label_png(p)

    @property
    def cls_labels(self) -> dict[str, np.ndarray] | None:
        """The cls_labels.npy dict (validated against the class list), or None if absent."""
        if not self._cls_labels_loaded:
            self._cls_labels = load_cls_labels(self.root, self.num_classes)
            self._cls_labels_loaded = True
        return self._cls_labels

    def labels(self, id: str) -> np.ndarray:
        """(C-1,) float32 multi-hot image label (background excluded)."""
        table = self.cls_labels
        if table is not None and id in table:
            return table[id].copy()
        p = self.mask_path(id)
        if p is None:
            if table is not None:
                raise DataError(
                    f"{self.root / CLS_LABELS_FILE}: no entry for id {id!r}, and no mask to derive its labels from"
                )
            raise DataError(
                f"{self.root}: no image label for id {id!r}: no {CLS_LABELS_FILE} and no mask in "
                f"{' or '.join(MASK_DIRS)}"
            )
        mask = read_label_png(p)
        bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(self.num_classes), 255])
        if bad.size:
            raise DataError(f"{p}: mask values {bad.tolist()} are not classes (0..{self.num_classes - 1}) or 255")
        return labels_from_mask(mask, self.num_classes)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the split's data without reading an image: its ids (count and digest), the class list
        and the digest of the ``cls_labels.npy`` entries of its ids (None without that file). Two processes of a
        job, or a resume and its checkpoint, read the same data only if these are equal."""
        table = self.cls_labels
        labels = None
        if table is not None:
            h = hashlib.sha256()
            for id in self.ids:
                h.update(id.encode() + b"\0" + (table[id].tobytes() if id in table else b"-"))
            labels = h.hexdigest()[:16]
        return {
            "split": self.split,
            "n_ids": len(self.ids),
            "ids": hashlib.sha256("\n".join(self.ids).encode()).hexdigest()[:16],
            "classes": list(self.class_names),
            "labels": labels,
        }

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        id = self.ids[i]
        return {
            "id": id,
            "image": self.load_image(id),
            "mask": self.load_mask(id) if self.has_mask(id) else None,
            "labels": self.labels(id),
        }

    def __repr__(self) -> str:
        return f"VOCDataset(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, C={self.num_classes})"


def masked_view(ds: Any) -> Any | None:
    """The photos of ``ds`` that have a ground-truth mask, as a dataset: ``ds`` itself when all have one (or when it
    cannot tell: no ``has_mask``), None when none has, else a copy listing only those (`wsss prepare folder
    --masks` leaves the photos you drew no mask for in the split; `wsss eval` and the report score the others)."""
    has_mask = getattr(ds, "has_mask", None)
    if has_mask is None:
        return ds
    masked = [i for i in ds.ids if has_mask(i)]
    if len(masked) == len(ds.ids):
        return ds if masked else None
    if not masked:
        return None
    view = copy.copy(ds)
    view.ids = masked
    return view


def run_dataset(
    root: str | os.PathLike | None, run_root: str | None, split: str, run_dir: str | os.PathLike
) -> VOCDataset:
    """The dataset a command on a trained run reads: ``root`` (its ``--data-root``), else the run's ``data.root``
    (``run_root``). A run's own root that is not on this machine (a run copied from another, whose config holds
    its absolute paths) is a DataError that names the run and ``--data-root``, not only "root not found"; a run
    without one is a ConfigError that says the same."""
    if root is not None:
        return VOCDataset(root, split)
    if run_root is None:
        raise ConfigError(
            f"{run_dir}: the run's config has no data.root; give the dataset's folder with --data-root DIR"
        )
    if not Path(run_root).is_dir():
        raise DataError(
            f"{describe_path(run_root)}: dataset root not found: the data.root of the run {run_dir} (a run moved or "
            "copied from another machine?); give the dataset's folder here with --data-root DIR"
        )
    return VOCDataset(run_root, split)


ExtraViews = Callable[..., Mapping[str, Any]] | Mapping[str, Callable[..., Any]]


def true_mask_paths(root: str | os.PathLike, split: str, true_masks: TrueMasks) -> dict[str, Path]:
    """``data.true_masks`` as ``core.config.true_masks_of`` read it: the ids of ``split`` that have a mask of the
    user's, and its file. The data set's own masks (``ROOT/SegmentationClassAug`` or ``ROOT/SegmentationClass``, as
    ``VOCDataset``), a folder's ``<id>.png``, or none. A photo without one is simply left out (its pseudo label
    serves)."""
    if not true_masks:
        return {}
    ids = read_split(root, split)
    d = true_masks.folder
    if d is None:  # the data set's own
        ds = VOCDataset(root, split)
        return {i: p for i in ids if (p := ds.mask_path(i)) is not None}
    if not d.is_dir():
        raise DataError(f"{d}: mask folder not found (data.true_masks: 'auto' or a folder of <id>.png masks)")
    return {i: d / f"{i}.png" for i in ids if (d / f"{i}.png").is_file()}


def _accepts_rng(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "rng" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class ClsTrainDataset(Dataset):
    """Classifier-training view of a ``VOCDataset`` (image-level labels only, no masks).

    ``dataset[i]`` -> dict(
        id: str,
        image: (3, S, S) float32 ImageNet-normalised crop,
        labels: (C-1,) float32 multi-hot,
        img_box: (4,) int64 ``[h0, h1, w0, w1]`` valid (non-pad) region of the crop,
        label_idx: int64 scalar, the 1-based class id if the image has exactly one foreground
                   class, else -1 (SeCo uses it),
        target: (S, S) int64 label map, only with ``target_dir`` (see below),
        **extra views)

    ``target_dir`` (``data.pseudo_dir``): a directory of ``<id>.png`` label maps (255 = ignore, e.g.
    pseudo labels) loaded as the sample's ``target`` and transformed with the image (same scale,
    flip and crop; nearest resizing; crop padding 255). A missing file raises a DataError naming it.
    Without it the samples are unchanged (the augmentation draws the same random numbers either way).

    ``extra_views`` lets methods add views: either a callable ``f(image, crop) -> dict[str,
    tensor]`` or a mapping ``{name: f(image, crop) -> tensor}``, where ``image`` is the original
    (H, W, 3) uint8 image and ``crop`` the augmented (S, S, 3) uint8 crop behind ``image``. If the
    callable accepts an ``rng`` keyword it receives the sample's generator (reproducible views).

    Randomness: with ``seed=None`` each sample's ``np.random.Generator`` is seeded from torch's
    RNG (so ``torch.manual_seed`` + DataLoader worker seeding make runs repeatable and epochs
    differ); with an int ``seed`` it is derived from (seed, epoch, index), see ``set_epoch``.
    """

    def __init__(
        self,
        base: VOCDataset,
        augment: TrainAugment,
        *,
        extra_views: ExtraViews | None = None,
        seed: int | None = None,
        target_dir: str | os.PathLike | None = None,
    ) -> None:
        self.base = base
        self.target_dir: Path | None = None
        self.true_masks: dict[str, Path] = {}
        self.true_mask_weight = 1.0
        self.unmasked_ignored = False
        if target_dir is not None:
            self.set_target_dir(target_dir)
        self.augment = augment
        self.extra_views = extra_views
        self.seed = seed
        self.epoch = 0
        if extra_views is None:
            self._views: list[tuple[str | None, Callable, bool]] = []
        elif isinstance(extra_views, Mapping):
            self._views = [(name, fn, _accepts_rng(fn)) for name, fn in extra_views.items()]
        elif callable(extra_views):
            self._views = [(None, extra_views, _accepts_rng(extra_views))]
        else:
            raise TypeError("extra_views must be a callable or a mapping of name -> callable")

    # delegated protocol
    @property
    def ids(self) -> list[str]:
        return self.base.ids

    @property
    def class_names(self) -> list[str]:
        return self.base.class_names

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_target_dir(
        self,
        target_dir: str | os.PathLike | None,
        *,
        true_masks: Mapping[str, Path] | None = None,
        true_mask_weight: float = 1.0,
        unmasked_ignored: bool = False,
    ) -> None:
        """Load ``<target_dir>/<id>.png`` as each sample's ``target``; DataError if any id has none.

        ``true_masks`` (``data.true_masks``, :func:`true_mask_paths`): a user's own masks of some of the ids, which
        win over ``target_dir`` for those ids (docs/own-photos.md#how-many-masks); an id with a true mask needs no
        pseudo label, and without ``target_dir`` every id needs a true mask. Each sample then also has
        ``target_weight``: ``true_mask_weight`` where its target is a true mask, 1 where it is a pseudo label.
        ``unmasked_ignored`` (a classifier's training, no ``target_dir``): an id without a true mask gets a target
        of 255 only (ignored) and weight 0, and no id needs one."""
        d = Path(target_dir) if target_dir is not None else None
        masks = dict(true_masks or {})
        if unmasked_ignored and d is not None:
            raise ValueError("set_target_dir: unmasked_ignored is for a training without pseudo labels")
        self.unmasked_ignored = unmasked_ignored
        if d is None and not masks and not unmasked_ignored:
            raise DataError(
                f"{self.base.root / SPLIT_DIR / (self.base.split + '.txt')}: no segmentation targets for its photos: "
                "data.pseudo_dir is unset and data.true_masks has no mask of any of them"
            )
        if d is not None and not d.is_dir():
            raise DataError(f"{d}: pseudo-label directory not found (data.pseudo_dir)")
        missing = [i for i in self.base.ids if i not in masks and (d is None or not (d / f"{i}.png").is_file())]
        if unmasked_ignored:
            missing = []
        if missing and d is None:
            raise DataError(
                f"{self.base.root / SPLIT_DIR / (self.base.split + '.txt')}: {len(missing)} of {len(self.base.ids)} "
                f"ids have no true mask (first: {missing[0]}) and there is no data.pseudo_dir for them: set it, or "
                "train on a split of the masked photos only"
            )
        if missing and d is not None:
            raise DataError(
                f"{d / (missing[0] + '.png')}: pseudo label not found ({len(missing)} of {len(self.base.ids)} ids of "
                f"split {self.base.split!r} have no <id>.png in {d}" + (" and no true mask)" if masks else ")")
            )
        if not true_mask_weight > 0:
            raise ConfigError(f"data.true_mask_weight must be > 0, got {true_mask_weight}")
        ids = set(self.base.ids)
        self.target_dir, self.true_masks = d, {i: Path(p) for i, p in masks.items() if i in ids}
        self.true_mask_weight = float(true_mask_weight)

    def target_path(self, id: str) -> Path:
        """Where ``id``'s target comes from: its true mask if it has one, else ``target_dir/<id>.png``."""
        if id in self.true_masks:
            return self.true_masks[id]
        assert self.target_dir is not None
        return self.target_dir / f"{id}.png"

    def load_target(self, id: str, shape: tuple[int, ...]) -> np.ndarray:
        """(H, W) uint8 label map of ``id`` (:meth:`target_path`), checked against the image size."""
        if self.unmasked_ignored and id not in self.true_masks:
            return np.full(shape[:2], 255, dtype=np.uint8)  # 255: ignored, as in every mask
        path = self.target_path(id)
        if not path.is_file():
            what = "true mask" if id in self.true_masks else "pseudo label"
            raise DataError(f"{path}: {what} not found for id {id!r}")
        target = read_label_png(path)
        if target.shape != tuple(shape[:2]):
            raise DataError(f"{path}: label size {target.shape} differs from the image size {tuple(shape[:2])}")
        return target

    def rng_for(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([int(self.seed), self.epoch, int(index)])

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        id = self.base.ids[i]
        image = self.base.load_image(id)
        labels = self.base.labels(id)
        rng = self.rng_for(i)
        if self.target_dir is None and not self.true_masks:
            aug = self.augment(image, rng)
        else:
            aug = self.augment(image, rng, mask=self.load_target(id, image.shape))
        fg = np.flatnonzero(labels > 0.5)
        out = {
            "id": id,
            "image": aug["image"],
            "labels": torch.from_numpy(labels.astype(np.float32)),
            "img_box": torch.as_tensor(aug["img_box"], dtype=torch.long),
            "label_idx": torch.tensor(int(fg[0]) + 1 if fg.size == 1 else -1, dtype=torch.long),
        }
        if "mask" in aug:
            out["target"] = torch.from_numpy(aug["mask"].astype(np.int64))
            if self.true_masks:  # the loss's weight of this sample (docs/own-photos.md#how-many-masks)
                other = 0.0 if self.unmasked_ignored else 1.0
                out["target_weight"] = torch.tensor(self.true_mask_weight if id in self.true_masks else other)
        for name, fn, wants_rng in self._views:
            res = fn(image, aug["crop"], rng=rng) if wants_rng else fn(image, aug["crop"])
            if name is None:
                if not isinstance(res, Mapping):
                    raise TypeError("an extra_views callable must return a dict of tensors")
                clash = set(res) & set(out)
                if clash:
                    raise KeyError(f"extra view names clash with sample keys: {sorted(clash)}")
                out.update(res)
            else:
                out[name] = res
        return out
