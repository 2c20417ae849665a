"""Official checkpoints as runs: ``wsss import <method> CHECKPOINT --config CFG --out RUN`` (seco, toco,
rca, sccam).

The checkpoint's keys are mapped to ours by the pure functions of :mod:`wsss.models.official_keys`;
this module only reads the file, builds the method of the config, loads the mapped state strictly and
writes a run directory (``config.yaml`` + ``checkpoints/last.pt``) that ``wsss cam / predict / eval``
use like a trained run. The file is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from wsss.core.checkpoint import save_checkpoint
from wsss.core.config import load_config, save_config
from wsss.core.errors import ConfigError, UsageError, WeightLoadError
from wsss.data.classes import read_classes
from wsss.methods import build_method
from wsss.models.official_keys import (
    OfficialKeyError,
    rca_state_from_official,
    sccam_state_from_official,
    seco_state_from_official,
    toco_state_from_official,
)
from wsss.models.weights import check_state_dict, read_state_dict

Mapper = Callable[[Mapping[str, torch.Tensor]], tuple[dict[str, torch.Tensor], list[str]]]

#: official code -> (our method, key mapper, the mapped key whose rows are the foreground classes, the
#: patterns (regex, full match) of our entries that an official checkpoint may not hold and that keep the
#: freshly built model's value)
OFFICIAL_LAYOUTS: dict[str, tuple[str, Mapper, str, tuple[str, ...]]] = {
    "seco": ("seco", seco_state_from_official, "classifier.conv.weight", ()),
    # ToCo = our CAM baseline with model.decoder: largefov (its CTC heads only train)
    "toco": ("cam", toco_state_from_official, "classifier.conv.weight", ()),
    # RCA: the centroid refresh epoch and the accumulated attention (by image id) are ours
    "rca": ("rca", rca_state_from_official, "coarse_head.6.weight", ("centroid_epoch", "_extra_state")),
    # SC-CAM (and PSA's round-0 classifier): BatchNorm counters are absent from converted / older files
    "sccam": ("sccam", sccam_state_from_official, "classifier.conv.weight", (r".*\.num_batches_tracked",)),
}
# what `wsss import` takes: an official checkpoint of these layouts, or a CLIP weight file (clip_es)
IMPORT_CHOICES: tuple[str, ...] = (*OFFICIAL_LAYOUTS, "clip_es")


def import_official_checkpoint(
    method: str,
    checkpoint: str | Path,
    config: str | Path,
    out: str | Path,
    overrides: Sequence[str] = (),
) -> Path:
    """Write the run directory ``out`` holding the official ``checkpoint`` under our keys; returns ``out``.

    The number of classes comes from the checkpoint's classifier; the class names from the
    dataset at ``data.root`` (its ``classes.txt``, else VOC's 21), which must have as many.
    ``model.pretrained`` is cleared (the checkpoint holds every weight).
    """
    if method not in OFFICIAL_LAYOUTS:
        known = ", ".join(OFFICIAL_LAYOUTS)
        raise UsageError(f"no official checkpoint layout for {method!r}; available: {known}")
    our_method, mapper, class_key, ours_only = OFFICIAL_LAYOUTS[method]
    out = Path(out)
    cfg = load_config(config, list(overrides))
    if cfg.method != our_method:
        raise ConfigError(f"{config}: method is {cfg.method!r}; an official {method} checkpoint needs {our_method!r}")
    cfg.model.pretrained = None
    cfg.run.dir = str(out)
    path = Path(checkpoint)
    try:
        mapped, dropped = mapper(read_state_dict(path))
    except OfficialKeyError as e:
        raise WeightLoadError(f"{path}: {e}") from e
    if class_key not in mapped:
        raise WeightLoadError(f"{path}: no classifier in the checkpoint (expected an official {method} state dict)")
    num_classes = int(mapped[class_key].shape[0]) + 1
    class_names = read_classes(cfg.data.root)
    if len(class_names) != num_classes:
        raise ConfigError(
            f"{path}: the checkpoint has {num_classes} classes (with background) but the dataset at "
            f"data.root={cfg.data.root} has {len(class_names)}; pass data.root=<dataset with its classes.txt>"
        )
    model = build_method(cfg, class_names)  # our method of the official code
    own = model.state_dict()
    mapped.update({k: v for k, v in own.items() if k not in mapped and any(re.fullmatch(p, k) for p in ours_only)})
    tensors = {k: v for k, v in mapped.items() if torch.is_tensor(v)}  # not RCA's attention (extra state)
    own_tensors = {k: v for k, v in own.items() if torch.is_tensor(v)}
    check_state_dict(tensors, own_tensors, f"{path}: official {method} checkpoint does not fit {config}")
    model.load_state_dict(mapped, strict=True)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    state = {
        "step": 0,
        "model": model.state_dict(),
        "num_classes": num_classes,
        "class_names": class_names,
        "config": cfg.to_dict(),
        "imported_from": str(path),
        "dropped_official_keys": dropped,
    }
    save_checkpoint(state, out / "checkpoints" / "last.pt")
    return out


def import_clip_es(weights: str | Path, config: str | Path, out: str | Path, overrides: Sequence[str] = ()) -> Path:
    """Write the run directory ``out`` of method ``clip_es`` (no training) from a CLIP weight file and
    the class list of the dataset at ``data.root``; returns ``out``.

    The file (OpenAI's TorchScript ``ViT-B-16.pt``, or a state dict in OpenAI's / open_clip's layout) is
    read without running code from it (``models/clip.py``); its architecture goes to ``options.arch``, the
    classes' prompts (``options.synonyms`` applied) to ``options.prompts``. WeightLoadError naming the
    file if it is not a CLIP ViT.
    """
    from wsss.models.clip import load_clip

    out, path = Path(out), Path(weights)
    cfg = load_config(config, list(overrides))
    if cfg.method != "clip_es":
        raise ConfigError(f"{config}: method is {cfg.method!r}; `wsss import clip_es` needs a configs/clip_es preset")
    cfg.model.pretrained = None
    cfg.run.dir = str(out)
    class_names = read_classes(cfg.data.root)
    clip, arch = load_clip(path, text_heads=cfg.options.get("text_heads"))
    cfg.options.update(arch=arch.as_dict(), weights=str(path))
    model = build_method(cfg, class_names)
    cfg.options["prompts"] = list(model.options.prompts)  # the class names as prompts, synonyms applied
    model.clip.load_state_dict(clip.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    state = {
        "step": 0,
        "model": model.state_dict(),
        "num_classes": len(class_names),
        "class_names": class_names,
        "config": cfg.to_dict(),
        "imported_from": str(path),
    }
    save_checkpoint(state, out / "checkpoints" / "last.pt")
    return out
