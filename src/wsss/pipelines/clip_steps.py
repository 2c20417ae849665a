"""The steps the CLIP modes of ``wsss route`` add (docs/own-photos.md#with-clip-files; the modes themselves:
``wsss.pipelines.route_modes``, registered as ``wsss.pipelines.modes`` says), each the library call of the ``wsss``
command named.

The files are config words of the CLIP method's run: ``model.pretrained=CLIP`` (``--clip``) and
``options.dino_weights=DINOV2`` (``--dinov2``). A CLIP file and a DINOv2 file: WeCLIP+ trained on the photos
(:data:`WECLIP_PRESET`), its masks by the official test fusion (the preset's ``infer`` keys, no CRF). A CLIP file
only: CLIP-ES's CAMs of the class names and their CRF pseudo labels (:func:`import_clip_run`), then the route's
DeepLab stage. Class names without labels: the CLIP-ES run tags the photos first (:func:`tag_photos`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsss.pipelines.steps import Setting

# The presets of each mode's CLIP method by device kind: a GPU's (configs/*/route_gpu.yaml); on the CPU the same
# recipe (no CPU preset of these methods is measured on real photos: docs/own-photos.md#with-clip-files)
WECLIP_PRESET = "wsss::weclip_plus/route_gpu.yaml"
CLIP_ES_PRESET = "wsss::clip_es/route_gpu.yaml"
WEIGHTS_NEEDED = (
    "photos with class names and no labels file are tagged by CLIP: give a CLIP ViT-B/16 file (--clip ViT-B-16.pt; "
    "docs/clip-weights.md), or a labels file (--labels)"
)


def words_of(preset: str, words: Sequence[str]) -> list[str]:
    """The ``words`` that ``preset``'s method takes: an ``options.KEY`` word of another method's left out (WeCLIP+'s
    words beside the CLIP-ES run that tags the photos)."""
    from dataclasses import fields

    from wsss.core.config import load_config
    from wsss.methods import get_method_class

    own = {f.name for f in fields(get_method_class(load_config(preset).method).Options)}
    return [w for w in words if not (w.startswith("options.") and w.partition("=")[0][8:].split(".")[0] not in own)]


def import_clip_run(
    clip: str | os.PathLike,
    root: str | os.PathLike,
    out: str | os.PathLike,
    words: Sequence[str] = (),
    *,
    preset: str = CLIP_ES_PRESET,
    device: str | None = None,
) -> Path:
    """``wsss import clip_es CLIP --config PRESET --out OUT data.root=ROOT WORDS``: the CLIP-ES run of the file
    (no training); a run already imported there is kept (a route continued)."""
    from wsss.runs.official_import import import_run

    out = Path(out)
    if (out / "checkpoints" / "last.pt").is_file() and (out / "config.yaml").is_file():
        return out
    extra = [Setting("run.device", device).word] if device else []
    words = [Setting("data.root", root).word, *words, *extra]
    return import_run("clip_es", Path(clip), preset, out, words, overwrite=out.exists())[0]


def tag_photos(
    run_dir: str | os.PathLike, split: str = "train", *, device: str | None = None, progress: bool = True
) -> tuple[Any, bool]:
    """``wsss tag RUN --split SPLIT``: CLIP's labels of the photos into the dataset's ``cls_labels.npy`` and
    ``tags.csv``; once ``tags.csv`` is there, its ``labels`` column (edited or not) is what the photos get
    (``--labels-from tags.csv --overwrite``). (The summary: precision and recall where photos have masks; whether
    the labels came from ``tags.csv``.)"""
    from wsss.runs.run import load_run
    from wsss.runs.tag import TAGS_FILE, tag_split

    run = load_run(Path(run_dir), device=device)
    tags = Path(str(run.cfg.data.root)) / TAGS_FILE
    if tags.is_file():
        return tag_split(run, split, labels_from=tags, overwrite=True, progress=progress), True
    return tag_split(run, split, overwrite=True, progress=progress), False


def labels_from_masks(root: str | os.PathLike, splits: Sequence[str]) -> int:
    """The photos of ``splits`` that have a mask take its classes as their labels in ``root/cls_labels.npy`` (a mask
    is the truth the tags were scored against; check-data refuses labels that disagree with a mask); their count."""
    from wsss.data.voc import VOCDataset, labels_from_mask, load_cls_labels, write_cls_labels

    labels, changed = None, 0
    for split in splits:
        ds = VOCDataset(root, split)
        labels = labels if labels is not None else dict(load_cls_labels(root, ds.num_classes) or {})
        for i in ds.ids:
            if ds.has_mask(i):
                labels[i], changed = labels_from_mask(ds.load_mask(i), ds.num_classes), changed + 1
    if changed:
        write_cls_labels(root, labels or {})
    return changed


def labels_digest(root: str | os.PathLike, ids: Sequence[str]) -> str:
    """A digest of the image-level labels of ``ids`` in ``root/cls_labels.npy``: a route notices labels changed
    (an edited ``tags.csv``) and makes what was made from them again."""
    from wsss.data.classes import read_classes
    from wsss.data.voc import load_cls_labels

    labels = load_cls_labels(root, len(read_classes(root))) or {}
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode() + b"\0" + np.asarray(labels.get(i, []), dtype=np.float32).tobytes())
    return h.hexdigest()[:16]
