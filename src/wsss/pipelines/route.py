"""``wsss route``: from a dataset (or a folder of photos with a labels file and a class list) to masks and a report,
in one command: the route docs/own-photos.md advises, each choice made from the data as the measurements say and
printed with its reason (docs/own-photos.md#what-it-does; the evidence: docs/benchmarks/real-photos.md).

The steps, each the library call of the ``wsss`` command named (in this process, as that command runs it), by the
functions of this module that ``experiments/real_route.py`` runs too (:func:`run_config`, :func:`train_run`,
:func:`stage_config`, :func:`cams`, :func:`pseudo_labels`, :func:`predict_split`, :func:`score`: one implementation
of each step, docs/api.md#the-routes-steps):

1. ``wsss prepare folder`` into ``OUT/data`` when the input is a folder of photos (``labels`` and ``classes``), or
   ``wsss check-data`` of a dataset given (each training checks what it reads again, as ``wsss train`` does);
2. the classifier, ``wsss train``: RCA's ``configs/rca/real_cpu.yaml``, or the CAM baseline's
   ``configs/cam/real_cpu.yaml`` for many classes of few photos (:func:`choose_classifier`), into ``OUT/cls``;
3. ``wsss cam`` of the train split;
4. ``wsss pseudo --refine par --levels B/B``, B the classifier's ``cam.bkg_thre`` (one level: no pixel left at 255);
5. with masked train photos: the DeepLab stage on the weak labels with the masks in their place, or on the masks
   alone, each trained on all but one fold of the masked photos and scored on that fold (``folds``;
   :meth:`Route._choose_stage`), the better one kept;
6. the DeepLab stage ``configs/deeplab/real_cpu.yaml`` (``wsss train``, ``data.true_masks=auto``) into ``OUT/seg``;
7. ``wsss predict --crf`` of the train and the val split, every photo's mask also in ``OUT/masks``
   (:func:`gather_masks`), each split scored where it has masks and each masked photo alone (:func:`photo_scores`);
8. ``wsss report`` of both runs (a report made of the run's outputs as they are is kept); with ``images``,
   ``wsss predict --images`` of new photos into ``OUT/new_masks``.

The plan is made before any step (:func:`plan_route`: a frozen :class:`Plan` of the choices with their reasons and
the typed steps, ``wsss.pipelines.steps.Step``, made from the data facts, the options and the CUDA devices alone;
saved as ``OUT/plan.json`` before the first step): for a folder of photos from what ``wsss prepare folder`` would
write of them (``plan_folder``), every input read, the weight packages the trainings start from and the photos of
``images`` checked (with ``plan_only`` the photos and masks decoded too, as the run's prepare does), so that
``--plan`` prints every step, with an estimate of its time (:mod:`wsss.pipelines.estimates`), and the run numbers
them alike. Where the data prepare wrote differs from what the plan read of the photos, the route plans once more
and ``plan.json`` records both. A choice that needs a measurement is a step: ``stage`` by folds is the step
``choice``, whose ``OUT/choice/stage.json`` the stage's training reads.

A rerun of the same command continues where it stopped: a training resumes from its ``last.pt``, the per-photo
steps skip the photos they finished, the folds keep their scores. ``OUT/route.json`` records the route's settings
(its data's files among them: :func:`data_files`); another setting is refused, naming it, unless ``overwrite`` (the
files wsss made in OUT are then removed and made again; nothing outside OUT, nor the photos, labels or masks given,
nor a file of the user's in OUT, is touched). ``OUT/data_facts.json``: the facts of the
data the choices were made from; ``OUT/summary.json``: the choices, each step's wall time and the scores (the
:class:`RouteResult` :func:`run_route` returns); ``OUT/steps.jsonl``: each run's time of each step, a stopped one's
too (the step runner of :mod:`wsss.pipelines.steps`).

The modes are registered classes (``wsss.pipelines.modes``; this module's :class:`ClassifierMode`,
:class:`ClipESMode`, :class:`WeCLIPMode`): the weight files given choose one. With CLIP files (``clip`` / ``dinov2``:
docs/own-photos.md#with-clip-files; ``wsss.pipelines.clip_steps``) the classifier gives way: with both, WeCLIP+
trained on the photos into ``OUT/weclip`` and its masks by the official test fusion; with CLIP alone, CLIP-ES's CAMs
and CRF labels (``OUT/clip``), then steps 5-8; photos with classes and no labels are tagged by the CLIP-ES run first
(``tags.csv``, read back on a rerun). On a CUDA device the trainings use the GPU presets
(``configs/*/route_gpu.yaml``); with several, one torchrun process each, the per-photo steps shared.

Overrides: ``KEY=VALUE`` words of the config (docs/configs.md); ``cls.KEY=VALUE`` sets the classifier's only,
``seg.KEY=VALUE`` the DeepLab stage's (its folds' too), ``clip.KEY=VALUE`` the CLIP method's, a word without a
prefix all (``run.seed=1``) but the CLIP method for a start file (``model.pretrained=``: :func:`split_overrides`). A
start file is a setting by its content; OUT moved or copied, or a start file moved, is re-based into the route's runs
(:meth:`RouteRecord.rebase`). Where a
command runs (``core.config.EXECUTION_KEYS``: ``run.device``, ``run.threads``, ``data.num_workers``,
``infer.crf_workers``) is no setting of the route: a route stopped on one machine continues on another.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from wsss.core.choices import ROUTE_DRAW_NEXT_FILE, ROUTE_FACTS_FILE, ROUTE_MASKS_DIR
from wsss.core.config import Config, load_config, replace_setting, resolve_epochs
from wsss.core.errors import UsageError
from wsss.core.files import atomic_write, check_output_folder
from wsss.pipelines import clip_steps, gpus
from wsss.pipelines.modes import CLIP_KEY, DINOV2_KEY, RouteMode, choose_mode, register_mode, weight_words
from wsss.pipelines.steps import (
    STEPS_LOG,
    Command,
    Setting,
    Step,
    StepRunner,
    changed_settings,
    computed_words,
    remove_made,
)

# the route's options that its cross-validation did not adopt: why, in their printed reasons
# the mixed stage with few masks: why (the figures: docs/own-photos.md#how-many-masks)
FEW_MASKS = "the better on ccp-dev with few masks (docs/own-photos.md#how-many-masks)"
NOT_ADOPTED = "not adopted, it lost on a fold: docs/benchmarks/history/real-photos.md#past-the-first-labels"
# The classifier presets the route chooses between (docs/own-photos.md#which-route), by shipped name: they resolve
# from any folder (core.config.SCOPE).
CLASSIFIERS = {"rca": "wsss::rca/real_cpu.yaml", "cam": "wsss::cam/real_cpu.yaml"}
SEG_PRESET = "wsss::deeplab/real_cpu.yaml"
# The same trainings on a CUDA device (configs/*/route_gpu.yaml)
GPU_PRESETS = {
    "rca": "wsss::rca/route_gpu.yaml",
    "cam": "wsss::cam/route_gpu.yaml",
    "seg": "wsss::deeplab/route_gpu.yaml",
}
# RCA from this median of train photos per class up, the CAM baseline below it: a round number between the two sets
# measured (docs/own-photos.md#which-route), not a measured edge.
MIN_PHOTOS_PER_CLASS = 10
DEFAULT_FOLDS = 3
GPU_LOADERS = 4  # data.num_workers of the trainings on a GPU (where it runs, not what it computes)
STAGES = ("auto", "mixed", "masks")  # the DeepLab stage's training: chosen by folds, or named
PREFIXES = ("cls", "seg", "clip")  # overrides of one run: cls.KEY=VALUE, seg.KEY=VALUE, clip.KEY=VALUE
# the words that name a network's start file: without a prefix, never the CLIP method's (split_overrides)
START_FILE_KEYS = (CLIP_KEY, DINOV2_KEY)
ROUTE_FILE, SUMMARY_FILE, PLAN_FILE = "route.json", "summary.json", "plan.json"
STAGE_FILE = "stage.json"  # in OUT/choice: the stage the folds chose, which the stage's training reads
FACTS_FILE, MASKS_DIR = ROUTE_FACTS_FILE, ROUTE_MASKS_DIR  # every photo's mask in one folder
PREPARED = ".route_prepared"  # in OUT/data once `wsss prepare folder` has made it
# route.json's mark of a first step (prepare or check-data) finished: before it, its settings made nothing
FIRST_STEP_DONE = "first_step_done"
# What the route makes in OUT: --overwrite with other settings removes the files wsss made there (a file of the user's
# stays: pipelines.steps.remove_made) and makes them again
MASKS_PAGE = "masks.html"  # their overlays on one page, in the report of the run that made them
TAGS_DIGEST = "tags_digest.txt"  # the labels the steps after the tags were made from (an edited tags.csv: again)
OWN_OUTPUTS = (
    "data",
    "cls",
    "clip",
    "weclip",
    "choice",
    "seg_data",
    "seg",
    MASKS_DIR,
    "new_masks",
    SUMMARY_FILE,
    FACTS_FILE,
    STEPS_LOG,
    TAGS_DIGEST,
    PLAN_FILE,
    ROUTE_DRAW_NEXT_FILE,
)
# after the tags: what is made again when the labels changed (tags.csv edited), in OUT and in OUT/clip
AFTER_TAGS = ("weclip", "choice", "seg_data", "seg", MASKS_DIR, "new_masks", ROUTE_DRAW_NEXT_FILE)
AFTER_TAGS_CLIP = ("cams", "cam_labels", "pseudo")


@dataclass
class RouteOptions:
    """What ``wsss route`` is given (its flags: docs/cli.md#wsss-route)."""

    data: str  # a dataset root (wsss prepare), or a folder of photos with labels and classes
    out: str
    labels: str | None = None
    classes: str | None = None
    masks: str | None = None
    classifier: str = "auto"  # auto, rca, cam, or a preset
    seg: str = SEG_PRESET
    stage: str = "auto"  # auto (folds), mixed, masks
    folds: int = DEFAULT_FOLDS
    overrides: Sequence[str] = ()
    device: str | None = None  # run.device of every step (default: cuda where there is one, else the presets')
    crf_workers: int | None = None  # infer.crf_workers of the CRF steps (None: each run's own)
    images: Sequence[str] | None = None  # new photos: their masks at the end
    overwrite: bool = False
    progress: bool = True
    plan_only: bool = False  # print the plan (choices and the equivalent commands), run nothing
    clip: str | None = None  # a CLIP file: the word clip.model.pretrained (docs/own-photos.md#with-clip-files)
    dinov2: str | None = None  # a DINOv2 file: the word clip.options.dino_weights
    rounds: int = 0  # self-training: the DeepLab stage again on its own masks of the train photos, N more times
    abstain: bool = False  # the stage's labels 255 where PAR, the CAM's thresholds and the CRF disagree

    def __post_init__(self) -> None:
        """Each option of the type it is read as (the library API: the CLI's are so already): a path may be an
        ``os.PathLike``, one path or word a list of one; else a UsageError naming the option."""
        for name, value in vars(self).items():
            setattr(self, name, _route_option(name, value))


# RouteOptions's fields by the kind of value (the rest are words: str)
_ROUTE_PATHS = {"data", "out", "labels", "classes", "masks", "clip", "dinov2", "seg", "classifier"}  # presets: files
_ROUTE_LISTS = {"overrides", "images"}  # of words or paths
_ROUTE_INTS = {"folds", "rounds", "crf_workers"}
_ROUTE_BOOLS = {"overwrite", "progress", "plan_only", "abstain"}
_ROUTE_REQUIRED = {"data", "out", "classifier", "seg", "stage", "folds", "rounds"} | _ROUTE_BOOLS


def _route_option(name: str, value: Any) -> Any:
    """``value`` of the RouteOptions field ``name`` as the route reads it (:meth:`RouteOptions.__post_init__`)."""
    if value is None and name not in _ROUTE_REQUIRED:
        return () if name == "overrides" else None
    if name in _ROUTE_LISTS:
        items = [value] if isinstance(value, (str, os.PathLike)) else value
        if isinstance(items, (list, tuple)) and all(isinstance(v, (str, os.PathLike)) for v in items):
            return [os.fspath(v) for v in items]
        want = "a list of words" if name == "overrides" else "a list of paths"
    elif name in _ROUTE_INTS:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        want = "an integer"
    elif name in _ROUTE_BOOLS:
        if isinstance(value, bool):
            return value
        want = "True or False"
    elif isinstance(value, str) or (name in _ROUTE_PATHS and isinstance(value, os.PathLike)):
        return os.fspath(value)
    else:
        want = "a path" if name in _ROUTE_PATHS else "a string"
    raise UsageError(f"RouteOptions.{name}: expected {want}, got {value!r} ({type(value).__name__})")


@dataclass(frozen=True)
class Choice:
    value: Any
    reason: str


@dataclass
class DataFacts:
    """What the choices read from a dataset: its classes and the train photos' labels and masks."""

    root: Path
    class_names: list[str]
    train: list[str]
    val: list[str]
    masked_train: list[str]
    masked_val: list[str]
    photos_per_class: float  # the median over the foreground classes of the train photos labelled with each

    @property
    def classes(self) -> int:
        return len(self.class_names) - 1

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "root": str(self.root)}


@dataclass
class RouteResult:
    """What a route made (:func:`run_route`): each choice with its reason, the data facts it chose from, the masks
    and reports it wrote, its scores (mIoU in %), each step's wall seconds in this run and over every run."""

    choices: dict[str, Choice]
    facts: DataFacts | None
    masks: Path | None
    reports: list[Path]
    new_masks: Path | None
    scores: dict[str, Any]
    seconds: dict[str, float]
    seconds_over_runs: dict[str, float]
    masks_written: int = 0  # the masks in ``masks``: one per train and val photo

    def to_json(self) -> dict[str, Any]:
        """``OUT/summary.json``."""
        return {
            "choices": {k: {"value": c.value, "reason": c.reason} for k, c in self.choices.items()},
            "seconds": self.seconds,
            "seconds_over_runs": self.seconds_over_runs,
            "scores": self.scores,
            "masks": str(self.masks),
            "masks_written": self.masks_written,
            "reports": [str(p) for p in self.reports],
            "new_masks": str(self.new_masks) if self.new_masks is not None else None,
        }


# the choices --plan and a run print, in this order
SHOWN_CHOICES = (
    "mode",
    "classifier",
    "levels",
    "labels",
    "stage",
    "rounds",
    "predict",
    "device",
    "presets",
    "crf_workers",
)


@dataclass(frozen=True)
class Plan:
    """What a route will do, decided before any step runs (:func:`plan_route`; ``OUT/plan.json``): each choice with its
    reason and the steps. A choice that needs a measurement is a step whose output the plan names (``stage`` chosen
    by ``folds``: the step ``choice`` writes ``OUT/choice/stage.json``, which the step ``seg`` reads)."""

    choices: Mapping[str, Choice]
    steps: tuple[Step, ...]
    facts: DataFacts
    processes: int  # a training's processes, a per-photo step's shares: one a CUDA device
    configs: Mapping[str, Config] = field(repr=False)  # the trainings' configs by role, checked
    seg_iters: int | None = None  # the DeepLab stage's iterations on every train photo

    def shown(self) -> list[str]:
        """The choices printed, in order."""
        return [k for k in SHOWN_CHOICES if k in self.choices]

    def to_json(self) -> dict[str, Any]:
        """``OUT/plan.json``."""
        return {
            "mode": self.choices["mode"].value,
            "choices": {k: {"value": _jsonable(c.value), "reason": c.reason} for k, c in self.choices.items()},
            "steps": [{"name": step.title, "command": step.command} for step in self.steps],
            "processes": self.processes,
            "data": str(self.facts.root),
        }


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def plan_route(opts: RouteOptions, facts: DataFacts, cuda_devices: int = 0, *, edited_tags: bool = False) -> Plan:
    """The plan of ``wsss route`` with ``opts`` for the data ``facts`` (a dataset's, or what `wsss prepare folder`
    will write of a folder of photos) on ``cuda_devices``: every choice and step, made from these alone (the presets
    read, no other file, nothing run). ``edited_tags``: a tags.csv of the user's is in the data."""
    return Route(opts, say=lambda _: None)._make_plan(facts, cuda_devices, edited_tags)


def data_facts(root: str | os.PathLike) -> DataFacts:
    """The facts of the dataset ``root`` that the route's choices read (a DataError names what is missing)."""
    import numpy as np

    from wsss.data import VOCDataset
    from wsss.data.voc import available_splits

    train = VOCDataset(root, "train")
    val = VOCDataset(root, "val") if "val" in available_splits(root) else None
    counts = np.zeros(train.num_classes - 1)
    for i in train.ids:
        counts += train.labels(i) > 0
    return DataFacts(
        root=Path(root),
        class_names=list(train.class_names),
        train=list(train.ids),
        val=list(val.ids) if val is not None else [],
        masked_train=[i for i in train.ids if train.has_mask(i)],
        masked_val=[i for i in val.ids if val.has_mask(i)] if val is not None else [],
        photos_per_class=float(statistics.median(counts.tolist())) if len(counts) else 0.0,
    )


def data_files(paths: Sequence[Path], out: Path | None = None, flat: Sequence[Path] = ()) -> dict[str, str]:
    """What names the content of the route's inputs (the dataset, or the photos, labels, classes and masks given):
    each file's path (resolved) and the digest of its bytes (``runs.stamps.content_digest``: a file rewritten with
    its size and time kept is another). A photo replaced, added or removed, labels edited, a mask added or redrawn
    (in a CVAT export's ``SegmentationClass/`` too): another value, and the route's trainings were made of the other
    data (:func:`data_files_change` names the files). Of a dataset, the parts wsss reads (photos, masks, split lists,
    labels, classes); of a folder of ``flat``, its files (the photos, read so); of another folder, every file in it
    and its subfolders (a mask export's layout). The files are read by a few threads (most of the time is the disk's
    and the digest's, both outside Python's lock)."""
    from concurrent.futures import ThreadPoolExecutor

    from wsss.runs.stamps import content_digest

    files = [f for given in paths for f in _input_files(given, out, flat=given in flat)]
    names = [str(f.resolve()) for f in files]
    with ThreadPoolExecutor(DIGEST_THREADS) as pool:
        return dict(sorted(zip(names, pool.map(content_digest, files), strict=True)))


DIGEST_THREADS = 4  # data_files' readers: the disk and the digest run outside Python's lock


def legacy_data_files(paths: Sequence[Path], out: Path | None = None) -> dict[str, Any]:
    """:func:`data_files` as an older wsss recorded it: how many files and a digest of each one's name, size and
    modification time (a folder that is no dataset: its top files). A route.json of it continues while its data is
    as it recorded; the rerun then records the files by content."""
    import hashlib

    digest, count = hashlib.sha1(usedforsecurity=False), 0
    for given in paths:
        dataset = given.is_dir() and (given / "ImageSets").is_dir()
        files = sorted(p for p in given.iterdir() if p.is_file()) if given.is_dir() and not dataset else None
        for path in files if files is not None else _input_files(given, out):
            try:
                record: list[int] | None = [path.stat().st_size, path.stat().st_mtime_ns]
            except OSError:
                record = None
            digest.update(f"{path.relative_to(given) if path != given else given.name}\0{record}\n".encode())
            count += 1
    return {"files": count, "sha1": digest.hexdigest()[:16]}


def data_files_change(old: Any, new: Any, shown: int = 3) -> str:
    """How the data files ``old`` (a :func:`data_files` recorded) became ``new``, naming the first ``shown`` files
    added, removed and changed."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return f"{old!r} -> {new!r}"
    if set(old) == {"files", "sha1"}:  # a record of an older wsss: a digest of the names, sizes and times
        return f"recorded by size and time ({old['files']} files), now by content ({len(new)} files)"
    parts = []
    for what, names in (
        ("added", [n for n in new if n not in old]),
        ("removed", [n for n in old if n not in new]),
        ("changed", [n for n in new if n in old and old[n] != new[n]]),
    ):
        if names:
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            parts.append(f"{len(names)} {what}: {', '.join(names[:shown])}{more}")
    return "; ".join(parts)


def _input_files(given: Path, out: Path | None, flat: bool = False) -> list[Path]:
    """The files of the input ``given`` that :func:`data_files` names (``out``, the route's folder, left out; links to
    folders followed, each folder once; hidden files and folders, a system's, left out of a folder that is no
    dataset): a dataset's parts, the top of a ``flat`` folder, or every file under another folder."""
    from wsss.data.classes import CLASSES_FILE
    from wsss.data.voc import CLS_LABELS_FILE, IMAGE_DIR, MASK_DIRS

    if not given.is_dir():
        return [given]
    if flat:
        return sorted(p for p in given.iterdir() if p.is_file() and not p.name.startswith("."))
    dataset = (given / "ImageSets").is_dir()
    parts = sorted({IMAGE_DIR, *MASK_DIRS, "ImageSets", CLS_LABELS_FILE, CLASSES_FILE}) if dataset else ["."]
    files, seen = [], {os.path.realpath(out)} if out is not None else set()
    for part in parts:
        if (given / part).is_file():
            files.append(given / part)
        for folder, dirs, names in os.walk(given / part, followlinks=True):
            if os.path.realpath(folder) in seen:  # a link back to a folder walked: no loop
                dirs[:] = []
                continue
            seen.add(os.path.realpath(folder))
            dirs[:] = sorted(d for d in dirs if dataset or not d.startswith("."))
            files += [Path(folder) / n for n in sorted(names) if dataset or not n.startswith(".")]
    return files


def planned_facts(root: Path, plan: Any) -> DataFacts:
    """The facts of the dataset ``wsss prepare folder`` would write at ``root`` (its ``FolderPlan``), as
    :func:`data_facts` reads them once it is written."""
    counts = [0] * (len(plan.class_names) - 1)
    for i in plan.train:
        for c in set(plan.labels[i]):
            counts[c - 1] += 1
    return DataFacts(
        root=root,
        class_names=list(plan.class_names),
        train=list(plan.train),
        val=list(plan.val),
        masked_train=[i for i in plan.train if i in plan.masked],
        masked_val=[i for i in plan.val if i in plan.masked],
        photos_per_class=float(statistics.median(counts)) if counts else 0.0,
    )


def choose_classifier(facts: DataFacts) -> Choice:
    """RCA's preset with a handful of classes of tens of photos each, the CAM baseline's with many classes of few
    photos (:data:`MIN_PHOTOS_PER_CLASS`): the rule as measured, with its reason."""
    seen = f"{facts.classes} classes, a median of {facts.photos_per_class:g} train photos per class"
    if facts.photos_per_class >= MIN_PHOTOS_PER_CLASS:
        return Choice(
            "rca",
            f"{seen} (>= {MIN_PHOTOS_PER_CLASS}): RCA, the better of the two on ccp-dev, a handful "
            "of classes of many photos (docs/own-photos.md#which-route)",
        )
    return Choice(
        "cam",
        f"{seen} (< {MIN_PHOTOS_PER_CLASS}): the CAM baseline, the better of the two on "
        "coco128-dev, many classes of few photos (docs/own-photos.md#which-route)",
    )


def split_overrides(words: Sequence[str]) -> dict[str, list[str]]:
    """The ``KEY=VALUE`` words of each training: ``cls.KEY=VALUE`` the classifier's, ``seg.KEY=VALUE`` the DeepLab
    stage's, ``clip.KEY=VALUE`` the CLIP method's, the others all three (in the order given), but for a start file
    (:data:`START_FILE_KEYS`): without a prefix, the classifier's and the DeepLab stage's. The CLIP method's files are
    named by their prefix or ``--clip`` / ``--dinov2``, so that a MobileNetV2 file is never read as a CLIP."""
    out: dict[str, list[str]] = {p: [] for p in PREFIXES}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(
                f"{word!r}: an override is KEY=VALUE (cls.KEY=VALUE: the classifier's only, "
                "seg.KEY=VALUE: the DeepLab stage's, clip.KEY=VALUE: the CLIP method's)"
            )
        prefix, dot, rest = key.partition(".")
        if prefix in PREFIXES and dot:
            out[prefix].append(f"{rest}={value}")
        else:
            for p in PREFIXES:
                if p != "clip" or key.strip() not in START_FILE_KEYS:
                    out[p].append(word)
    return out


def file_words(clip: str | None, dinov2: str | None, words: Sequence[str]) -> list[str]:
    """``--clip FILE`` and ``--dinov2 FILE`` as the words they stand for (``clip.model.pretrained=FILE``,
    ``clip.options.dino_weights=FILE``); a word of ``words`` that names another file for the same key is refused,
    naming both (one input, one meaning)."""
    flags = (("--clip", CLIP_KEY, clip), ("--dinov2", DINOV2_KEY, dinov2))
    for flag, key, value in flags:
        other = next((w for w in words if _key(w) == f"clip.{key}" and w.partition("=")[2].strip() != value), None)
        if value and other is not None:
            raise UsageError(f"{flag} {value} and {other}: two files for the CLIP method's {key}; give one of them")
    return [f"clip.{key}={_resolved_file(value)}" for _, key, value in flags if value]


def _resolved_file(value: str) -> str:
    """A file given to a flag, resolved where it is there (as ``model.pretrained`` is in a run's config): its runs
    record where it was, which a move re-bases (:meth:`RouteRecord.rebase`)."""
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def _key(word: str) -> str:
    return word.partition("=")[0].strip()


MASKED_SPLIT = "train_masked"  # the split of a view that lists the masked train photos
# the DeepLab stage's masks: each train photo that has one trains on it (the route's one use of data.true_masks)
TRUE_MASKS = Setting("data.true_masks", "auto")


def mixed_stage_settings(pseudo_dir: str | os.PathLike) -> list[Setting]:
    """The DeepLab stage on the weak labels with the masks in their place: each train photo that has a mask trains
    on it, every other photo on its pseudo label (docs/own-photos.md#how-many-masks)."""
    return [Setting("data.pseudo_dir", pseudo_dir), TRUE_MASKS]


def mixed_stage_words(pseudo_dir: str | os.PathLike) -> list[str]:
    """:func:`mixed_stage_settings` as ``KEY=VALUE`` words."""
    return [s.word for s in mixed_stage_settings(pseudo_dir)]


def masks_alone_words(iterations: int) -> list[str]:
    """The DeepLab stage on the masked photos alone (the split :data:`MASKED_SPLIT` of a view,
    ``wsss.data.views.make_view``) for ``iterations``, the mixed stage's on every train photo: the arm the masks
    measurements compared at equal length (docs/benchmarks/history/real-photos.md#manual-how-many-masks)."""
    settings = (
        Setting("data.train_split", MASKED_SPLIT),
        TRUE_MASKS,
        Setting("train.epochs", None),
        Setting("train.max_iters", iterations),
    )
    return [s.word for s in settings]


def _stage_command(preset: str, root: Path, pseudo_dir: Path, words: Sequence[str], run_dir: Path) -> Command:
    """``wsss train PRESET``: the DeepLab stage on the pseudo labels of ``pseudo_dir`` with the masks in their place."""
    settings: tuple[Setting | str, ...] = (
        Setting("data.root", root),
        *mixed_stage_settings(pseudo_dir),
        *words,
        Setting("run.dir", run_dir),
    )
    return Command(("train",), (preset,), words=settings)


def _cam_command(run_dir: Path, split: str = "train") -> Command:
    return Command(("cam",), (run_dir,), (("--split", split),))


def _pseudo_command(run_dir: Path, refine: str, levels: tuple[float, float] | None, split: str = "train") -> Command:
    """``wsss pseudo``; ``levels`` None: the run's own (CLIP-ES's CRF labels)."""
    return Command(("pseudo",), (run_dir,), (("--split", split), ("--refine", refine), ("--levels", levels)))


def _predict_command(
    run_dir: Path, split: str, root: Path | None = None, crf: bool = True, labelled_only: bool = False
) -> Command:
    options = (("--split", split), ("--data-root", root), ("--labelled-only", labelled_only), ("--crf", crf))
    return Command(("predict",), (run_dir,), options)


# The library call of each per-photo command (Route._job), its arguments those of the command
def _call_cam(command: Command, **where: Any) -> Path:
    return cams(command.args[0], command.option("--split"), **where)


def _call_pseudo(command: Command, **where: Any) -> Path:
    return pseudo_labels(
        command.args[0],
        command.option("--split"),
        command.option("--levels"),
        refine=command.option("--refine"),
        **where,
    )


def _call_predict(command: Command, **where: Any) -> Path:
    return predict_split(
        command.args[0],
        command.option("--split"),
        root=command.option("--data-root"),
        crf=bool(command.option("--crf")),
        labelled_only=bool(command.option("--labelled-only")),
        **where,
    )


JOB_CALLS: dict[str, Callable[..., Path]] = {"cam": _call_cam, "pseudo": _call_pseudo, "predict": _call_predict}


def stage_iterations(preset: str, root: str | os.PathLike, words: Sequence[str] = ()) -> int:
    """The iterations of the stage ``preset`` with ``words`` on every train photo of ``root`` (its ``train.epochs``
    resolved)."""
    from wsss.data.voc import read_split

    cfg = load_config(preset, [Setting("data.root", root).word, *words])
    return resolve_epochs(cfg, len(read_split(root, cfg.data.train_split))).train.max_iters


# -- the route's steps, as library calls ----------------------------------------------------------------------------
# Each is the library call of the ``wsss`` command named, in this process, as that command runs it. :class:`Route`
# runs them, and experiments/real_route.py builds its research (folds of every photo, arms, seeds, extra scoring) on
# the same calls: one implementation of each step, so the product's route and the experiments' cannot drift apart.


def run_config(preset: str, words: Sequence[str], run_dir: str | os.PathLike, *, device: str | None = None) -> Config:
    """The config of a training (``wsss train PRESET WORDS run.dir=RUN_DIR``), checked before any step runs (a wrong
    override word is refused at once). ``device``: ``run.device`` of the training (None: the preset's); on a GPU the
    photos are decoded by :data:`GPU_LOADERS` loader processes, as fast as it trains (the presets' 0 is the CPU's:
    there the cores train), unless a ``data.num_workers`` word says otherwise."""
    from wsss.methods import check_method

    extra = [Setting("run.device", device).word] if device else []
    loaders = [Setting("data.num_workers", GPU_LOADERS).word] if device and str(device).startswith("cuda") else []
    cfg = load_config(preset, [*loaders, *words, *extra, Setting("run.dir", run_dir).word])
    check_method(cfg, f"{preset} with the route's overrides")
    return cfg


# A route's data that fails check-data: what its user can do (the route has no --skip-check of its own)
ROUTE_CHECK_ADVICE = "fix it and run again, or run the steps by hand (`wsss train --skip-check` trains without it)"
# A run of the route whose saved config is not what the route's record makes of it (edited, or of another wsss's
# presets): the options the route has
ROUTE_CHANGE_ADVICE = "Rerun the route as it was recorded, or use another --out"


def train_run(cfg: Config, *, progress: bool = True, check: bool = True, own: bool = False) -> dict[str, Any]:
    """``wsss train``: train the run of ``cfg`` (:func:`run_config`), or resume it from its ``last.pt``; the
    trainer's answer (its final step, its best val mIoU where it validates). First, as ``wsss train`` does, check-data
    on what it reads (``check``; ``wsss.runs.train_checks.check_training_data``: its splits, pseudo labels and true
    masks): a failed check says its report on stderr and is a DataError naming ``data.root`` and what failed, before
    any step trains. ``own``: ``run.dir`` is the pipeline's own folder, trained into though a file of the user's is
    there (what its ``--overwrite`` kept: ``wsss train --overwrite``)."""
    from wsss.engine.launch import train
    from wsss.runs.train_checks import check_training_data

    if check:
        check_training_data(cfg, progress=progress, advice=ROUTE_CHECK_ADVICE)
    return train(cfg, progress=progress, overwrite=own, change_advice=ROUTE_CHANGE_ADVICE if own else None)


def stage_words(
    words: Sequence[str], stage: str, *, view: str | os.PathLike | None = None, iterations: int | None = None
) -> list[str]:
    """The words of the DeepLab stage ``stage`` after ``words`` (the stage's own: its ``data.root``, its pseudo labels,
    the overrides): ``mixed`` as they are, on the data root ``view`` where one is given (the weak labels with the masks
    in their place: :func:`mixed_stage_words`); ``masks`` the masked photos alone (the split :data:`MASKED_SPLIT` of
    ``view``) for ``iterations`` (:func:`masks_alone_words`)."""
    if stage == "mixed":
        return [*words, *([Setting("data.root", view).word] if view is not None else [])]
    if stage != "masks" or view is None or iterations is None:
        raise ValueError(f"stage {stage!r}: mixed, or masks with a view and its iterations")
    return [*words, Setting("data.root", view).word, *masks_alone_words(iterations)]


def stage_config(
    preset: str,
    words: Sequence[str],
    run_dir: str | os.PathLike,
    stage: str,
    *,
    view: str | os.PathLike | None = None,
    iterations: int | None = None,
    device: str | None = None,
) -> Config:
    """The DeepLab stage's config (:func:`stage_words`, :func:`run_config`): ``mixed`` the weak labels with the masks
    in their place; ``masks`` the masked photos alone, for ``iterations`` (as many as the mixed stage has on the whole
    train split, as BENCHMARKS measured them)."""
    return run_config(preset, stage_words(words, stage, view=view, iterations=iterations), run_dir, device=device)


def load_step_run(
    run_dir: str | os.PathLike, *, words: Sequence[str] = (), device: str | None = None, crf_workers: int | None = None
) -> Any:
    """The run ``run_dir`` as every command that reads a run loads it: ``words`` merged over its saved config, with
    where it runs (``device``: ``run.device``; ``crf_workers``: ``infer.crf_workers``, -1 resolved by
    ``cam.crf.crf_workers``; None: the run's own)."""
    import dataclasses

    from wsss.runs.run import load_run

    run = load_run(Path(run_dir), device=device, overrides=words)
    if crf_workers is None:
        return run
    return dataclasses.replace(run, cfg=replace_setting(run.cfg, "infer.crf_workers", crf_workers))


def cams(
    run_dir: str | os.PathLike,
    split: str,
    *,
    words: Sequence[str] = (),
    device: str | None = None,
    crf_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """``wsss cam RUN --split SPLIT WORDS``: the CAMs and the seeds of the split (``words``: e.g.
    ``infer.cam_scales=[...]``, ``--scales``; ``cam.bkg_thre=L``, ``--bkg-thre``); the seeds' folder."""
    from wsss.runs.jobs import run_cam

    run = load_step_run(run_dir, words=words, device=device, crf_workers=crf_workers)
    return run_cam(run, split, progress=progress)


def levels_words(levels: tuple[float, float]) -> list[str]:
    """``--levels HIGH/LOW`` as its words: class above HIGH, background at or below LOW, 255 between (HIGH = LOW: one
    level, no pixel left undecided)."""
    high, low = levels
    return [Setting("cam.high_thre", high).word, Setting("cam.low_thre", low).word]


def pseudo_labels(
    run_dir: str | os.PathLike,
    split: str,
    levels: tuple[float, float] | None,
    *,
    refine: str = "par",
    words: Sequence[str] = (),
    device: str | None = None,
    crf_workers: int | None = None,
    progress: bool = True,
    **options: Any,
) -> Path:
    """``wsss pseudo RUN --split SPLIT --refine REFINE --levels HIGH/LOW``: the pseudo labels of the split from its
    saved CAMs, ``RUN/pseudo/SPLIT`` (returned). ``options``: the refiner's (``affinity_run=RUN`` of ``--refine
    affinity``); ``levels`` None: the run's own (CLIP-ES's CRF labels: ``--refine crf`` without ``--levels``)."""
    from wsss.runs.jobs import run_pseudo

    level = levels_words(levels) if levels is not None else []
    run = load_step_run(run_dir, words=[*level, *words], device=device, crf_workers=crf_workers)
    return run_pseudo(run, split, refine=refine, progress=progress, **options)


def predict_split(
    run_dir: str | os.PathLike,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    crf: bool = False,
    tags_from: str | os.PathLike | None = None,
    tag_gate: str = "hard",
    labelled_only: bool = False,
    ensemble: Sequence[str | os.PathLike] = (),
    device: str | None = None,
    crf_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """``wsss predict RUN --split SPLIT [--data-root ROOT] [--crf] [--tags-from RUN --tag-gate GATE]
    [--labelled-only] [--ensemble RUN ...]``: the masks of the split's photos; their folder (``run_predict``'s, named
    by ``predictions_folder``). The runs of ``tags_from`` and ``ensemble`` are loaded on ``run_dir``'s device."""
    from wsss.runs.jobs import run_predict
    from wsss.runs.run import load_run

    run = load_step_run(run_dir, device=device, crf_workers=crf_workers)
    if ensemble:
        run = run.with_ensemble([load_run(Path(d), device=str(run.device)) for d in ensemble])
    tagger = load_run(Path(tags_from), device=str(run.device)) if tags_from is not None else None
    return run_predict(
        run,
        split,
        root=None if root is None else str(root),
        crf=crf,
        labelled_only=labelled_only,
        tags_from=tagger,
        tag_gate=tag_gate,
        progress=progress,
    )


def score(pred: str | os.PathLike, root: str | os.PathLike, split: str, *, pseudo: bool = False) -> Any:
    """``wsss eval PRED --data-root ROOT --split SPLIT [--pseudo]`` on the split's photos that have a mask: its
    result (``.miou``: a fraction; ``.to_json()``: what ``--json`` writes)."""
    from wsss.evaluation import evaluate

    return evaluate(pred, root, split, pseudo=pseudo)


def gather_masks(pred: Path, folder: Path) -> int:
    """The masks of ``pred`` (a split's ``predictions_crf``) in ``folder`` too, each a hard link (a copy where the
    file system has none) put in place atomically; how many there are. Their ids are recorded in the folder's
    ``.sources.json`` (``runs.stamps.SOURCES_FILE``): what ``--overwrite`` removes there as the route's
    (``pipelines.steps.remove_made``), a file of the user's left."""
    from wsss.core.files import link_or_copy
    from wsss.runs.stamps import SOURCES_FILE, photo_record, read_sources

    folder.mkdir(parents=True, exist_ok=True)
    masks = sorted(p for p in pred.glob("*.png") if not p.name.startswith("."))
    records = {**(read_sources(folder) or {}), **{m.stem: photo_record(m) for m in masks}}
    with atomic_write(folder / SOURCES_FILE, "w") as f:  # before the masks: a killed step's are named too
        json.dump(records, f, sort_keys=True)
    for mask in masks:
        dst = folder / mask.name
        if dst.exists() and os.path.samefile(mask, dst):
            continue
        link_or_copy(mask, dst)
    return len(masks)


def photo_scores(pred: Path, root: Path, split: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each photo of ``ids`` scored on its own against its mask in the dataset ``root``: its split, mIoU (over the
    classes of its mask) and pixel accuracy, in %, by the evaluator of ``wsss eval``."""
    import math

    from wsss.data import VOCDataset
    from wsss.evaluation import evaluate_arrays
    from wsss.utils.io import read_label_png

    ds = VOCDataset(root, split)
    out: dict[str, dict[str, Any]] = {}
    for i in ids:
        r = evaluate_arrays([ds.load_mask(i)], [read_label_png(pred / f"{i}.png")], class_names=ds.class_names)
        miou, acc = (100 * float(v) for v in (r.miou, r.scores["pAcc"]))
        out[i] = {
            "split": split,
            "miou": round(miou, 2) if math.isfinite(miou) else None,
            "pixel_acc": round(acc, 2) if math.isfinite(acc) else None,
        }
    return out


class RouteRecord:
    """``OUT/route.json`` of a :class:`Route`: its settings (its inputs and options, where they run excepted), checked
    against those recorded (others refused, naming them, unless ``overwrite``), whether their first step finished,
    and where OUT and the start files were (what a rerun from elsewhere re-bases)."""

    def __init__(self, route: Route) -> None:
        self.route, self.opts, self.out, self.runner, self.say = route, route.opts, route.out, route.runner, route.say
        self.first_step_done = False  # whether route.json's settings have passed the step that reads the inputs
        self.start_files: dict[str, str] = {}  # each start file of the overrides (resolved) -> its content digest
        self.as_given: dict[str, str] = {}  # a start file's word by content -> the word as given

    def settings(self) -> dict[str, Any]:
        """What decides the route's outputs (``route.json``): its inputs and options, where they run excepted."""

        def resolved(path: str | None) -> str | None:
            return None if path is None else str(Path(path).resolve())

        given = (self.opts.data, self.opts.labels, self.opts.classes, self.opts.masks)
        photos = (
            [Path(self.opts.data)] if self.route._prepares() else []
        )  # a folder of photos: its top, as they are read
        return {
            "data": resolved(self.opts.data),
            "labels": resolved(self.opts.labels),
            "classes": resolved(self.opts.classes),
            "masks": resolved(self.opts.masks),
            "data_files": data_files([Path(p) for p in given if p], self.out, flat=photos),
            "classifier": self.opts.classifier,
            "seg": self.opts.seg,
            "stage": self.opts.stage,
            "folds": self.opts.folds,
            "cls_overrides": self._by_content(computed_words(self.route.words["cls"])),
            "seg_overrides": self._by_content(computed_words(self.route.words["seg"])),
            # a CLIP mode's words (its files among them): none in the route without CLIP, whose record stays as it was
            **(
                {"clip_overrides": self._by_content(computed_words(self.route.words["clip"]))}
                if self.route.mode.mode.method_words
                else {}
            ),
            # the candidates past the first labels, recorded where given: a record without them is the plain route's
            **({"rounds": self.opts.rounds} if self.opts.rounds else {}),
            **({"abstain": True} if self.opts.abstain else {}),
        }

    def _by_content(self, words: list[str]) -> list[str]:
        """``words`` with each start file that is there (:data:`START_FILE_KEYS`) named by its content
        (``model.pretrained=content:1a2b...``; :attr:`start_files`): a file moved with its content kept is the same
        setting, its new place re-based into the route's runs (:meth:`rebase`)."""
        from wsss.runs.stamps import content_digest

        named = []
        for word in words:
            key, _, value = word.partition("=")
            path = Path(value.strip()).expanduser()
            if key.strip() in START_FILE_KEYS and value.strip() and path.exists():
                where = str(path.resolve())
                self.start_files.setdefault(where, content_digest(path))
                typed = {_resolved_file(v): v for v in (self.opts.clip, self.opts.dinov2) if v}.get(value, value)
                self.as_given[f"{key}=content:{self.start_files[where]}"] = f"{key}={typed}"  # as an older wsss had it
                word = f"{key}=content:{self.start_files[where]}"
            named.append(word)
        return named

    def _as_recorded(self, mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
        """``mine`` as a record of an older wsss names what this one names by content, where that record names the
        same: the data files by their names, sizes and times (:func:`legacy_data_files`), the start files by path."""
        same = dict(mine)
        old = theirs.get("data_files")
        given = [Path(p) for p in (self.opts.data, self.opts.labels, self.opts.classes, self.opts.masks) if p]
        if isinstance(old, dict) and set(old) == {"files", "sha1"} and old == legacy_data_files(given, self.out):
            same["data_files"] = old
        for key in ("cls_overrides", "seg_overrides", "clip_overrides"):
            by_path = [self.as_given.get(w, w) for w in mine.get(key) or []]
            if key in mine and theirs.get(key) == by_path:
                same[key] = by_path
        return same

    def write(self, settings: dict[str, Any]) -> None:
        """``OUT/route.json``: the settings, whether their first step finished, where OUT and the start files were
        (what a rerun from elsewhere re-bases: :meth:`rebase`)."""
        self.runner.record(
            settings,
            **{FIRST_STEP_DONE: self.first_step_done},
            out=str(self.out.resolve()),
            start_files=self.start_files,
        )

    def rebase(self) -> None:
        """OUT moved or copied since the record, or a start file moved with its content kept: the paths its runs'
        configs and its stamps record re-based (``pipelines.steps.rebase_paths``), so that the route continues."""
        from wsss.pipelines.steps import rebase_paths

        moves, was = {}, self.runner.recorded_field("out")
        if isinstance(was, str) and was != str(self.out.resolve()):
            moves[was] = str(self.out.resolve())
        recorded = self.runner.recorded_field("start_files")
        before = {d: p for p, d in recorded.items()} if isinstance(recorded, dict) else {}
        moves |= {before[d]: p for p, d in self.start_files.items() if before.get(d, p) != p}
        rewritten = rebase_paths(self.out, moves)
        for old, new in moves.items():
            self.say(f"route: {old} is now {new}: re-based in {len(rewritten)} files of its runs")

    def refuse_a_foreign_out(self) -> None:
        """OUT is a new folder, an empty one, or a route's: a folder of other files is refused (before the route's
        lock file is put there). Its lock alone is a route's that stopped before its record (killed; or running:
        the lock then says so)."""
        from wsss.utils.runlock import LOCK_FILE

        others = sorted(p.name for p in self.out.iterdir() if p.name != LOCK_FILE) if self.out.is_dir() else []
        if not (self.out / ROUTE_FILE).is_file() and others:
            shown = ", ".join(others[:4])
            raise UsageError(
                f"{self.out}: --out is a folder that holds files ({shown}) but no route ({ROUTE_FILE}); "
                "give a new or empty folder"
            )

    def settle(self) -> dict[str, Any]:
        """This route's settings (:meth:`settings`), checked against those ``OUT/route.json`` records
        (:meth:`StepRunner.settle`: others refused, naming them, unless ``overwrite``). Recorded once the plan has
        taken them (a mistyped override word is then refused unrecorded, and the corrected command is no change of
        settings). Settings whose first step (prepare, or check-data: the one that reads the inputs) never finished
        made nothing: these replace them (a route stopped by bad input continues once the input is fixed)."""
        mine = self.settings()
        theirs = self.runner.recorded()
        compared = mine if theirs is None else self._as_recorded(mine, theirs)
        if theirs is not None and self.runner.recorded_field(FIRST_STEP_DONE) is False:
            if changed_settings(mine, theirs):
                self.say(
                    f"route: its first step never finished with the settings recorded in {self.runner.record_file}"
                    " (nothing was made of them): these replace them"
                )
            self.first_step_done = False
            return mine
        given = [self.opts.data, self.opts.labels, self.opts.classes, self.opts.masks, *(self.opts.images or [])]
        own = (*OWN_OUTPUTS, *self.route._round_dirs())
        self.runner.settle(
            compared,
            overwrite=self.opts.overwrite,
            own=own,
            inputs=[Path(p) for p in given if p],
            shown={"data_files": data_files_change},
        )
        kept = self.runner.kept
        if kept:
            shown = ", ".join(str(p) for p in kept[:3]) + (f" (and {len(kept) - 3} more)" if len(kept) > 3 else "")
            self.say(f"route: --overwrite kept {len(kept)} files that wsss did not make: {shown}")
        self.first_step_done = theirs is not None and not changed_settings(compared, theirs)
        return mine


class Route:
    """One route folder (module docstring): :meth:`plan` then :meth:`run`."""

    def __init__(self, opts: RouteOptions, say: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self.out = Path(opts.out)
        self.say = say or (lambda text: print(text, flush=True))
        if opts.folds < 0 or opts.folds == 1:
            raise UsageError(f"--folds {opts.folds}: 0 (no choice: the mixed stage) or 2 or more")
        if opts.rounds < 0:
            raise UsageError(
                f"--rounds {opts.rounds}: 0 (one stage) or more (its masks of the train photos teach the next)"
            )
        if opts.stage not in STAGES:
            raise UsageError(f"--stage {opts.stage!r}: one of {', '.join(STAGES)}")
        self.words = split_overrides([*opts.overrides, *file_words(opts.clip, opts.dinov2, opts.overrides)])
        self.files = weight_words(self.words["clip"])
        self.mode = choose_mode(self.files)  # the registered mode of the files given (wsss.pipelines.modes)
        refused = self.mode.mode.refuse(opts.abstain, opts.rounds)
        if refused:
            raise UsageError(refused)
        self.processes = 1  # a training's processes, a per-photo step's shares: the CUDA devices (set by the plan)
        self.runner = StepRunner(self.out, command="wsss route", record=ROUTE_FILE)
        self.record = RouteRecord(self)
        self.choices: dict[str, Choice] = {}
        self.times = self.runner.times
        self.scores: dict[str, Any] = {}
        # made by the plan (from the data) and by the steps (what they wrote)
        self.facts: DataFacts | None = None
        self.configs: dict[str, Config] = {}
        self.seg_iters: int | None = None
        self.stage_root: Path | None = None  # the data root the DeepLab stage trained on (a view for the masks alone)
        self.masks: Path | None = None
        self.masks_written = 0
        self.new_photos = 0  # the photos of --images
        self.edited_tags = False  # a tags.csv in the data (the plan's input)
        self.measured: dict[str, Choice] = {}  # the choices a step made by measuring (the plan's "folds")
        self.reports: list[Path] = []
        self.new_masks: Path | None = None

    # -- settings -----------------------------------------------------------------------------------------------
    def _tags(self) -> bool:
        """Whether CLIP tags the photos: a folder of photos with its classes and no labels file."""
        return bool(self.opts.classes) and not self.opts.labels

    def _prepares(self) -> bool:
        """Whether the input is a folder of photos to prepare (classes, with labels or a CLIP file to tag them) or a
        dataset."""
        given = [f for f, v in (("--labels", self.opts.labels), ("--classes", self.opts.classes)) if v]
        if self.opts.masks and not self.opts.classes:
            raise UsageError(
                "--masks goes with --classes (a folder of photos to prepare); a dataset's masks are in "
                "its SegmentationClass folder already"
            )
        if given == ["--labels"]:
            raise UsageError("--labels goes with --classes: a folder of photos needs its class list, or give a dataset")
        if self._tags() and not self.mode.mode.tags:
            raise UsageError(clip_steps.WEIGHTS_NEEDED)
        return bool(given)

    def _classes(self) -> str:
        """The class list of a folder of photos to prepare (:meth:`_prepares` refuses one without)."""
        if not self.opts.classes:
            raise RuntimeError("a folder of photos is prepared with its class list")
        return self.opts.classes

    # -- the plan -----------------------------------------------------------------------------------------------
    def _device(self, cuda_devices: int) -> Choice:
        given = self.opts.device or next(
            (w.partition("=")[2] for w in self.words["cls"] if _key(w) == "run.device"), None
        )
        if given:
            return Choice(given, "given")
        if cuda_devices:
            return Choice(
                "cuda",
                f"a CUDA device is here (the presets' run.device: cpu is for their CPU timings); "
                f"{GPU_LOADERS} loader processes feed it",
            )
        return Choice(None, "no CUDA device: the presets' run.device, cpu")

    def _crf_workers(self) -> Choice:
        """``--crf-workers N`` for every CRF step, else each run's own ``infer.crf_workers`` (a ``cls.`` / ``seg.``
        word sets one training's; -1 resolved by the one rule of ``cam.crf.crf_workers``). A word that says
        otherwise than the flag is refused."""
        from wsss.core.config import check_value
        from wsss.runs.jobs import crf_processes

        given = self.opts.crf_workers
        words = {f"{p}.{w}" for p in PREFIXES for w in self.words[p] if _key(w) == "infer.crf_workers"}
        if given is not None:
            check_value("infer.crf_workers", given)
            other = sorted(w for w in words if w.partition("=")[2].strip() != str(given))
            if other:
                raise UsageError(f"--crf-workers {given} and {other[0]}: give one of them")
            return Choice(given, "given")
        config = self.configs.get("seg") or self.configs["weclip"]
        cfg = config.infer.crf_workers
        shown = f"{cfg}, {crf_processes(config)} processes here" if cfg < 0 else str(cfg)
        source = "given" if words else "the presets'"
        return Choice(None, f"each run's infer.crf_workers ({source}; the DeepLab stage's: {shown})")

    def _config(self, preset: str, words: Sequence[str], run_dir: Path) -> Config:
        """The config of a training on the route's device (:func:`run_config`)."""
        return run_config(preset, words, run_dir, device=self.choices["device"].value)

    def plan(self) -> Plan:
        """The plan (:func:`plan_route`), its choices printed with their reasons, for a folder of photos as for a
        dataset: the photos' choices are made from what `wsss prepare folder` would write (``plan_folder``), every
        input and the weights the trainings start from checked after (:meth:`_check_inputs`)."""
        prepares = self._prepares()
        root = self.out.resolve() / "data" if prepares else Path(self.opts.data).resolve()
        facts = self._read_facts(root, prepares)
        plan = self._make_plan(facts, gpus.cuda_devices(), edited_tags=(root / "tags.csv").is_file())
        self.new_photos = self._check_inputs()
        for key in plan.shown():
            self.say(f"route: {key}: {_shown(plan.choices[key].value)} ({plan.choices[key].reason})")
        return plan

    def _make_plan(self, facts: DataFacts, cuda_devices: int, edited_tags: bool = False) -> Plan:
        """The plan of the route for the data ``facts`` on ``cuda_devices``: each choice with its reason, then the
        steps of the mode (nothing read but the presets, nothing run). ``edited_tags``: a tags.csv is in the data."""
        out, root, prepares = self.out.resolve(), facts.root, self._prepares()
        self.facts, self.choices, self.configs, self.edited_tags = facts, {}, {}, edited_tags
        steps: list[Step] = []
        if prepares:
            prepare = self._prepare_command(root)
            steps.append(Step("prepare", (prepare,), partial(self._prepare, root), outputs=(root,)))
        else:  # `wsss prepare folder` checks its inputs; a dataset given is checked as `wsss train` does
            steps.append(Step("check", (Command(("check-data",), (root,)),), lambda: self._check_data(root)))
        self.choices["mode"] = Choice(self.mode.value, self.mode.reason)
        self.choices["device"] = self._device(cuda_devices)
        self.choices["presets"] = self._presets(cuda_devices)
        steps += self.mode.mode.steps(self, root, out, facts)
        if self.opts.images:
            final, crf = out / self.mode.mode.final_run, self.mode.mode.crf
            given = (
                ("--images", list(self.opts.images)),
                ("--out", out / "new_masks"),
                ("--crf", crf),
                ("--overlay", True),
            )
            predict = Command(("predict",), (final,), given)
            steps.append(
                Step("new photos", (predict,), partial(self._new_photos, predict), outputs=(out / "new_masks",))
            )
        return Plan(
            choices=dict(self.choices),
            steps=tuple(steps),
            facts=facts,
            processes=self.processes,
            configs=dict(self.configs),
            seg_iters=self.seg_iters,
        )

    def _read_facts(self, root: Path, prepares: bool) -> DataFacts:
        """The facts of the dataset the route reads: a dataset's own, or those of the one `wsss prepare folder` will
        write from the photos given (their inputs read and, for ``--plan``, checked as it checks them)."""
        if not prepares or (root / PREPARED).is_file():
            return data_facts(root)
        from wsss.data.prepare.folder import plan_folder

        plan = plan_folder(
            self.opts.data,
            self.opts.labels,
            self._classes(),
            masks=self.opts.masks,
            out=root,
            progress=self.opts.progress,
            check=self.opts.plan_only,
        )
        if self.opts.plan_only:  # what the prepare step will print, before the choices made from it
            for kind, lines in (("note", plan.notes), ("warning", plan.warnings)):
                for line in lines:
                    self.say(f"prepare: {kind}: {line}")
        return planned_facts(root, plan)

    def _presets(self, cuda_devices: int) -> Choice:
        """The GPU presets on a CUDA device (``configs/*/route_gpu.yaml``), else the CPU ones; with several CUDA
        devices a training runs as one process each (``torchrun``) and a per-photo step is shared among them."""
        device = self.choices["device"].value
        if device is None or not str(device).startswith("cuda"):
            self.processes = 1
            return Choice("cpu", self.mode.mode.cpu_note)
        n = self.processes = max(1, cuda_devices)  # one a CUDA device
        many = f"; {n} CUDA devices: a training as {n} torchrun processes, the per-photo steps shared" if n > 1 else ""
        return Choice(
            "gpu",
            "a CUDA device: the presets made for a GPU (configs/*/route_gpu.yaml: the method's crop, "
            f"batch and precision, epochs of your photos){many}",
        )

    def _gpu(self) -> bool:
        return self.choices["presets"].value == "gpu"

    def _job_step(self, title: str, command: Command) -> Step:
        """A per-photo step of one command (``wsss cam | pseudo | predict``), its work rendered from it."""
        return Step(title, (command,), partial(self._job, command), outputs=(Path(command.args[0]),))

    def _seg_steps(self, root: Path, out: Path, facts: DataFacts, labels_run: Path) -> list[Step]:
        """The DeepLab stage on the pseudo labels of ``labels_run`` (chosen by folds where masks allow), its masks
        with the dense CRF, the reports."""
        seg_dir, seg = out / "seg", self._seg_preset()
        stages = [*(out / name for name in self._round_dirs(self.opts.rounds)), seg_dir]  # the last is OUT/seg
        train = _stage_command(seg, root, labels_run / "pseudo" / "train", self.words["seg"], stages[0])
        seg_cfg = self._command_config(train, run_dir=seg_dir)
        self.configs["seg"] = seg_cfg
        self.choices["crf_workers"] = self._crf_workers()
        self.seg_iters = resolve_epochs(seg_cfg, len(facts.train)).train.max_iters
        self.choices["stage"] = self._stage_choice(facts)
        split = "val" if facts.val else "train"
        self.choices["predict"] = Choice(
            split,
            ("the val split" if facts.val else "no val split: the train photos")
            + " scores the masks; every train and val photo gets its mask, with the "
            "dense CRF (better on ccp-dev's folds: "
            "docs/own-photos.md#which-route)",
        )
        steps = []
        seg_words = train.word_list(leave_out=("run.dir",))
        if self.choices["stage"].value == "folds":
            steps.append(
                Step(
                    "choice",
                    (),
                    lambda: self._choose_stage(root, seg_words, out / "choice"),
                    outputs=(out / "choice" / STAGE_FILE,),
                    note=f"{self.opts.folds} folds of the masked train photos, both stages each",
                )
            )
        steps.append(Step("seg", (train,), lambda: self._train_stage(root, seg_words, stages[0]), outputs=(stages[0],)))
        steps += self._round_steps(root, seg, stages)
        return [*steps, self._masks_step(seg_dir, crf=True), self._report_step(labels_run, seg_dir)]

    def _masks_step(self, run_dir: Path, crf: bool) -> Step:
        """Every train and val photo's mask (``wsss predict --labelled-only`` of each split: each photo's labels) in
        ``OUT/masks``."""
        predict = tuple(_predict_command(run_dir, split, crf=crf, labelled_only=True) for split in self._splits())
        return Step("masks", predict, lambda: self._masks(run_dir, crf=crf), outputs=(self.out.resolve() / MASKS_DIR,))

    def _report_step(self, *run_dirs: Path) -> Step:
        reports = tuple(Command(("report",), (d,)) for d in run_dirs)
        return Step("report", reports, lambda: self._report(*run_dirs), outputs=tuple(d / "report" for d in run_dirs))

    def _round_dirs(self, rounds: int | None = None) -> list[str]:
        """The folders of the stages before the last of ``--rounds`` (``seg_r0``, ...): ``rounds`` of them, or those
        in OUT (None: what ``--overwrite`` and edited tags remove)."""
        if rounds is not None:
            return [f"seg_r{r}" for r in range(rounds)]
        return sorted(p.name for p in self.out.glob("seg_r*") if p.name[len("seg_r") :].isdigit())

    def _round_steps(self, root: Path, seg: str, stages: list[Path]) -> list[Step]:
        """``--rounds N``: N more DeepLab stages, each trained afresh on the masks its predecessor predicts for the
        train photos with the dense CRF, naming only each photo's labelled classes, the masks in their place."""
        from wsss.runs.jobs import predictions_folder

        self.choices["rounds"] = Choice(
            self.opts.rounds,
            "given"
            if self.opts.rounds
            else f"one stage (--rounds N: N more, each on its predecessor's masks of the train photos; {NOT_ADOPTED})",
        )
        steps = []
        for r, (before, run_dir) in enumerate(zip(stages, stages[1:]), 1):
            labels = before / predictions_folder(crf=True, labelled_only=True) / "train"
            train = _stage_command(seg, root, labels, self.words["seg"], run_dir)
            steps.append(self._job_step(f"round {r} labels", _predict_command(before, "train", labelled_only=True)))
            steps.append(Step(f"round {r}", (train,), partial(self._train_command, train), outputs=(run_dir,)))
        return steps

    def _command_config(self, command: Command, device: str | None = None, run_dir: Path | None = None) -> Config:
        """The config of the training ``wsss train PRESET WORDS`` (:func:`run_config`) on ``device`` (None: the
        route's); ``run_dir`` in place of its ``run.dir``."""
        words = command.word_list(leave_out=("run.dir",))
        where = run_dir or command.setting("run.dir")
        return run_config(str(command.args[0]), words, where, device=device or self.choices["device"].value)

    def _train_command(self, command: Command, device: str | None = None) -> None:
        self._train(self._command_config(command, device))

    def _seg_preset(self) -> str:
        """The DeepLab stage's preset: ``--seg``, else the GPU's or the CPU's."""
        if self.opts.seg == SEG_PRESET:
            return self.mode.mode.presets(self._gpu()).get("seg", SEG_PRESET)
        return self.opts.seg

    def _check_inputs(self) -> int:
        """What the later steps read, checked before the first: the weights each training starts from (a weight
        package not installed is one error with the line that installs it) and the photos of ``--images``; how
        many of those there are."""
        from wsss.models.weights import resolve_weight_path

        for cfg in self.configs.values():
            if cfg.model.pretrained and str(cfg.model.pretrained).startswith("pkg:"):
                resolve_weight_path(cfg.model.pretrained)
        if not self.opts.images:
            return 0
        from wsss.data.photos import PhotoFolder

        return len(PhotoFolder(list(self.opts.images)).ids)

    def _splits(self) -> list[str]:
        """The splits whose photos get masks: train, and val where there is one."""
        return ["train", *(["val"] if self._facts().val else [])]

    def _stage_choice(self, facts: DataFacts) -> Choice:
        """How the DeepLab stage trains: given, or chosen by folds over the masked train photos where there are
        enough of them, else the weak labels with the masks in their place."""
        masked, folds = len(facts.masked_train), self.opts.folds
        if self.opts.stage != "auto":
            return Choice(self.opts.stage, "given")
        if not masked:
            return Choice("mixed", "no train photo has a mask: the stage on the pseudo labels")
        if masked == len(facts.train):
            return Choice("mixed", "every train photo has a mask: the stage trains on the masks alone either way")
        if folds == 0:
            return Choice("mixed", f"--folds 0: the weak labels with the {masked} masks in their place, {FEW_MASKS}")
        if folds > masked:  # a fold would hold no photo: refused before any training
            raise UsageError(
                f"--folds {folds}: more folds than the {masked} masked train photos (each fold holds some "
                f"of them out); give --folds {masked} or fewer, or --folds 0 (no choice: the mixed stage)"
            )
        batch = self.configs["seg"].train.batch_size
        if masked - -(-masked // folds) < batch:  # a fold's masks alone fill no batch of the stage's training
            return Choice(
                "mixed",
                f"{masked} masked train photos, too few to train the stage on the masks alone in "
                f"{folds} folds (batches of {batch}): the weak labels with the masks in their "
                f"place, {FEW_MASKS}",
            )
        return Choice(
            "folds",
            f"{masked} masked train photos: both stages (the weak labels with the masks in their "
            f"place; the masks alone) scored by {folds} folds of them, the better kept (on ccp-dev "
            "the first won with few masks, the second with many: "
            "docs/own-photos.md#how-many-masks)",
        )

    # -- the steps ------------------------------------------------------------------------------------------------
    def _prepare_command(self, root: Path) -> Command:
        """``wsss prepare folder`` of the photos given into ``root``."""
        given = (
            ("--images", self.opts.data),
            ("--labels", self.opts.labels),
            ("--classes", self._classes()),
            ("--masks", self.opts.masks),
            ("--out", root),
        )
        return Command(("prepare", "folder"), options=given)

    def _prepare(self, root: Path) -> None:
        from wsss.data import prepare

        done = root / PREPARED
        if done.is_file():  # prepared by an earlier run of the route
            return
        command = self._prepare_command(root)
        # a folder there is a stopped try of this step (OUT/data is the route's own): made again
        summary = prepare.prepare_folder(
            command.option("--images"),
            command.option("--labels"),
            command.option("--classes"),
            command.option("--out"),
            masks=command.option("--masks"),
            progress=self.opts.progress,
            overwrite=root.exists(),
        )
        self.say(summary.format())
        done.touch()

    def _check_data(self, root: Path) -> None:
        """check-data on the splits the trainings read (val: every photo needs its mask, as a training's val), as
        each training checks them again (:func:`train_run`): the problems printed and a DataError when one fails,
        the warnings printed."""
        from functools import partial

        from wsss.data import check_dataset
        from wsss.runs.train_checks import run_checks

        checks = [
            (f"split {split}", partial(check_dataset, root, split, full_masks=split == "val"))
            for split in ["train", *(["val"] if self._facts().val else [])]
        ]
        run_checks(root, checks, progress=self.opts.progress, advice=ROUTE_CHECK_ADVICE)

    def _train(self, cfg: Config) -> None:
        """A training: in this process, or as one torchrun process per CUDA device (its config written beside its
        run, checked here first as ``wsss train`` checks it)."""
        if self.processes == 1:
            train_run(cfg, progress=self.opts.progress, own=True)
            return
        from wsss.core.config import save_config
        from wsss.runs.train_checks import check_training_data

        check_training_data(cfg, progress=self.opts.progress, advice=ROUTE_CHECK_ADVICE)
        path = Path(f"{cfg.run.dir}.yaml")
        save_config(cfg, path)
        gpus.train_processes(self.processes, [str(path), "--skip-check", *([] if self.opts.progress else ["--quiet"])])

    def _shared(self, argv: list[str]) -> Any:
        """A per-photo step shared among the route's processes (``wsss ARGV`` in the others), where it runs given."""
        device = self.choices["device"].value
        where = [*(["--device", str(device)] if device else []), *(["--quiet"] if not self.opts.progress else [])]
        workers = self.choices["crf_workers"].value
        where += ["--crf-workers", str(workers)] if workers is not None and argv[0] != "cam" else []
        return gpus.sharded(self.processes, [*argv, *where])

    def _where(self) -> dict[str, Any]:
        """Where the per-photo steps run: the route's device and CRF workers (not what they compute)."""
        return {"device": self.choices["device"].value, "crf_workers": self.choices["crf_workers"].value}

    def _job(self, command: Command) -> Path:
        """A per-photo step: the command's library call in this process (:data:`JOB_CALLS`), shared with the route's
        other processes, which run the command (``wsss ARGV``)."""
        with self._shared(command.argv()):
            return JOB_CALLS[command.name[0]](command, progress=self.opts.progress, **self._where())

    def _tag(self, root: Path, clip_dir: Path) -> None:
        """``wsss tag``: CLIP's labels of the photos (``tags.csv`` read back once there: the user's edits); when the
        labels differ from those the later steps were made from, those steps are made again."""
        summary, edited = clip_steps.tag_photos(
            clip_dir, "train", device=self.choices["device"].value or "cpu", progress=self.opts.progress
        )
        self.say(
            ("  the labels column of tags.csv (edit it and rerun to change them)\n" if edited else "")
            + summary.format()
        )
        if summary.with_mask:
            self.scores["tags"] = {
                "precision": summary.precision,
                "recall": summary.recall,
                "photos": summary.with_mask,
            }
        splits = ["train", *(["val"] if self._facts().val else [])]
        masked = clip_steps.labels_from_masks(root, splits)
        if masked:
            self.say(f"  the {masked} photos with a mask take its classes as their labels (tags.csv keeps CLIP's)")
        digest, record = clip_steps.labels_digest(root, self._facts().train), self.out / TAGS_DIGEST
        if record.is_file() and record.read_text().strip() != digest:
            self.say("route: the labels changed since the steps after the tags ran (tags.csv edited): they run again")
            kept = [k for n in (*AFTER_TAGS, *self._round_dirs()) for k in remove_made(self.out / n)]
            kept += [k for n in AFTER_TAGS_CLIP for k in remove_made(clip_dir / n)]
            if kept:
                self.say(f"  kept {len(kept)} files wsss did not make: {', '.join(map(str, kept[:3]))}")
        with atomic_write(record, "w") as f:
            f.write(digest + "\n")

    def _stage_config(self, root: Path, seg_words: list[str], run_dir: Path, stage: str, view: Path | None) -> Config:
        """The DeepLab stage's config (:func:`stage_config`): ``mixed`` the weak labels with the masks in their
        place; ``masks`` the masked photos alone (the split ``train_masked`` of ``view``), for as many iterations as
        the mixed stage has on the whole train split."""
        return stage_config(
            self._seg_preset(),
            seg_words,
            run_dir,
            stage,
            view=view or root,
            iterations=self.seg_iters,
            device=self.choices["device"].value,
        )

    def _choose_stage(self, root: Path, seg_words: list[str], where: Path) -> None:
        """Each of ``folds`` folds of the masked train photos held out in turn: both stages trained on the rest (the
        held photos out of train), their ``predict --crf`` scored on the held photos; the stage of the better mean
        kept (a tie: the mixed one)."""
        from wsss.data.views import fold_split, make_view

        facts, folds = self._facts(), self.opts.folds
        scores: dict[str, list[float]] = {"mixed": [], "masks": []}
        for f in range(folds):
            rest, held = fold_split(facts.masked_train, f, folds)
            view = make_view(
                root,
                where / f"fold{f}" / "data",
                {"train": [i for i in facts.train if i not in set(held)], MASKED_SPLIT: rest, "val": held},
                facts.masked_train,
            )
            for stage in scores:
                run_dir = where / f"fold{f}" / stage
                record = run_dir / "fold_score.json"
                if not record.is_file():
                    self._train(self._stage_config(root, seg_words, run_dir, stage, view))
                    pred = self._predict_split(run_dir, "val", view)
                    miou = 100 * _miou(pred, view, "val")
                    with atomic_write(record, "w") as fh:
                        fh.write(json.dumps({"miou": miou, "held": held}) + "\n")
                scores[stage].append(float(json.loads(record.read_text())["miou"]))
            self.say(
                f"  fold {f + 1}/{folds} ({len(held)} held photos): mixed {scores['mixed'][-1]:.2f}, masks alone "
                f"{scores['masks'][-1]:.2f}"
            )
        means = {k: statistics.fmean(v) for k, v in scores.items()}
        best = "masks" if means["masks"] > means["mixed"] else "mixed"
        self.scores["folds"] = {k: {"mean": means[k], "folds": v} for k, v in scores.items()}
        names = {"mixed": "the weak labels with the masks in their place", "masks": "the masks alone"}
        chosen = Choice(
            best,
            f"{names[best]}: val mIoU with --crf over {folds} folds of the masked train photos, "
            f"mixed {means['mixed']:.2f}, masks alone {means['masks']:.2f}",
        )
        with atomic_write(where / STAGE_FILE, "w") as fh:  # the step's output, which the stage's training reads
            fh.write(json.dumps({"stage": chosen.value, "reason": chosen.reason}) + "\n")
        self.measured["stage"] = chosen
        self.say(f"route: stage: {best} ({chosen.reason})")

    def _train_stage(self, root: Path, seg_words: list[str], seg_dir: Path) -> None:
        from wsss.data.views import make_view

        stage = self._stage()
        view = None
        if stage == "masks":  # a view whose train_masked split lists the masked train photos
            facts = self._facts()
            splits = {
                "train": facts.train,
                MASKED_SPLIT: facts.masked_train,
                **({"val": facts.val} if facts.val else {}),
            }
            view = make_view(root, self.out.resolve() / "seg_data", splits, [*facts.masked_train, *facts.masked_val])
            self.say(
                f"  the stage on the {len(facts.masked_train)} masked train photos alone (split {MASKED_SPLIT} of "
                f"{view}), {self.seg_iters} iterations as the mixed stage's"
            )
        self.stage_root = view or root
        self._train(self._stage_config(root, seg_words, seg_dir, stage, view))

    def _stage(self) -> str:
        """The DeepLab stage's training: the plan's choice, or where it is ``folds`` the one the step ``choice``
        wrote (``OUT/choice/stage.json``)."""
        planned = str(self.choices["stage"].value)
        if planned != "folds":
            return planned
        return str(json.loads((self.out / "choice" / STAGE_FILE).read_text())["stage"])

    def _predict_split(
        self, run_dir: Path, split: str, root: Path | None = None, crf: bool = True, labelled_only: bool = False
    ) -> Path:
        return self._job(_predict_command(run_dir, split, root=root, crf=crf, labelled_only=labelled_only))

    def _masks(self, seg_dir: Path, crf: bool = True) -> None:
        """Every train and val photo's mask with the dense CRF (``wsss predict --labelled-only --crf`` of each split;
        WeCLIP+'s by its test, ``crf`` False), all of them in ``OUT/masks``, a drawn mask in its prediction's place
        (``pipelines.route_labels``); each split scored on its photos with a mask, and each such photo on its own
        (``scores["photos"]``: its mIoU and pixel accuracy against your mask, in %), the masks against the labels."""
        from wsss.core.config import load_run_config, true_masks_of
        from wsss.pipelines import route_labels

        facts = self._facts()
        folder = self.out.resolve() / MASKS_DIR
        # every route photo has labels: its mask names only the background and them (wsss predict --labelled-only)
        preds = {split: self._predict_split(seg_dir, split, crf=crf, labelled_only=True) for split in self._splits()}
        for pred in preds.values():  # the route's own masks, beside the drawn ones that take their place
            gather_masks(pred, folder / route_labels.PREDICTED_DIR)
        self.masks_written = sum(gather_masks(pred, folder) for pred in preds.values())
        route_labels.return_drawn_masks(folder, facts.root, {"train": facts.masked_train, "val": facts.masked_val})
        self.masks = folder
        photos: dict[str, dict[str, Any]] = {}
        for split, masked in (("val", facts.masked_val), ("train", facts.masked_train)):
            if masked and split in preds:
                self.scores[f"{split}_miou"] = 100 * _miou(preds[split], facts.root, split)
                self.scores[f"{split}_scored_photos"] = len(masked)
                photos |= photo_scores(preds[split], facts.root, split, masked)
        self.scores["photos"] = photos
        taught = self.mode.mode.masks_teach and bool(true_masks_of(load_run_config(seg_dir).data))
        route_labels.set_apart_taught(self.scores, taught)
        drawn = {*facts.masked_train, *facts.masked_val}
        self.scores["labels"] = route_labels.check_labels(preds, facts.root, drawn, facts.class_names, self.out)

    def _report(self, *run_dirs: Path) -> None:
        """The runs' reports, the DeepLab stage's with the folds' advice; a report newer than every output of its run (a
        finished route run again) is kept as it is."""
        from wsss.report import write_report
        from wsss.report.html import report_is_current

        self.reports = []
        links = self._mask_sheet(run_dirs[-1])
        for run_dir in run_dirs:
            folds = (self.scores.get("folds") or {}) if run_dir.name == "seg" else {}
            if report_is_current(run_dir):
                self.reports.append(run_dir / "report" / "index.html")
                self.say(f"  {self.reports[-1]}: newer than every output of its run, kept")
            else:
                last = run_dir == run_dirs[-1]  # the run of the masks: their overlays, their check against the labels
                self.reports.append(
                    write_report(
                        run_dir,
                        folds=folds,
                        links=links if last else (),
                        labels=self.scores.get("labels", {}) if last else {},
                    )
                )

    def _mask_sheet(self, run_dir: Path) -> list[tuple[str, str]]:
        """The overlays of ``OUT/masks`` and their page in the report of ``run_dir`` (the run that made the masks):
        the link that report shows."""
        from wsss.data import VOCDataset
        from wsss.report.overlays import write_mask_overlays

        masks = self.out.resolve() / MASKS_DIR
        if not masks.is_dir():
            return []
        facts = self._facts()
        images = {i: ds.image_path(i) for ds in (VOCDataset(facts.root, s) for s in self._splits()) for i in ds.ids}
        write_mask_overlays(masks, images, facts.class_names, run_dir / "report" / MASKS_PAGE, say=self.say)
        return [(MASKS_PAGE, f"every photo's mask over the photo, with the colours' legend ({MASKS_PAGE})")]

    def _new_photos(self, command: Command) -> None:
        """``wsss predict RUN --images ... --out OUT [--crf] --overlay`` in this process."""
        from wsss.runs.photos import predict_photos
        from wsss.runs.stamps import STAMP_FILE

        run_dir, out, crf = Path(command.args[0]), Path(command.option("--out")), bool(command.option("--crf"))
        # the route's own folder without a stamp holds only files of the user's that --overwrite kept: written among
        mine = out.is_dir() and not (out / STAMP_FILE).exists()
        run = load_step_run(run_dir, **self._where())
        self.new_masks = predict_photos(
            run,
            list(command.option("--images")),
            out,
            crf=crf,
            overlay=True,
            progress=self.opts.progress,
            overwrite=mine,
        )

    # -- the whole route --------------------------------------------------------------------------------------------
    def _facts(self) -> DataFacts:
        if self.facts is None:
            raise RuntimeError("the route's steps run after its plan has read the data")
        return self.facts

    def run(self) -> RouteResult | None:
        """Run (or continue) the route; what it made (also ``OUT/summary.json``). None with ``plan_only``."""
        if self.opts.plan_only:
            self._print_estimates(list(self.plan().steps))
            return None
        self._prepares()  # its refusals before anything is written
        check_output_folder(self.out, "the route's folder (its runs, record and summary)")
        self.record.refuse_a_foreign_out()
        t0 = time.monotonic()
        with self.runner.lock():
            settings = self.record.settle()
            self.record.rebase()
            plan = self.plan()
            self._save_plan(plan)  # before the first step
            steps = list(plan.steps)
            self.record.write(settings)
            self._save_facts()
            done, earlier = self._measured_before()
            for i, step in enumerate(steps, 1):
                self.say(f"[{i}/{len(steps)}] {step.title}: {step.command}")
                self.runner.run(step.title, step.command, step.work)
                self.say(f"[{i}/{len(steps)}] {step.title} done in {_duration(self.times[step.title])}")
                if not self.record.first_step_done:  # its inputs read and accepted: a change of them is now refused
                    self.record.first_step_done = True
                    self.record.write(settings)
                if step.title not in done:  # its work done in this run (and the stopped runs before it)
                    self._learn(step.title, earlier.get(step.title, 0.0) + self.times[step.title])
                if step.title == "prepare" and data_facts(plan.facts.root) != plan.facts:
                    # planned once more, from the data prepare wrote where it differs from what the plan read
                    again = self.plan()
                    self._save_plan(again, before=plan)
                    steps[i:] = again.steps[1:]
                    self._save_facts()
            return self._summary(time.monotonic() - t0)

    def _save_plan(self, plan: Plan, before: Plan | None = None) -> None:
        """``OUT/plan.json``: the plan the steps run; planned again after prepare, the first plan too."""
        record = plan.to_json()
        if before is not None:
            record["planned_before_prepare"] = {
                "reason": "the data prepare wrote differs from what the first plan read of the photos",
                **before.to_json(),
            }
        with atomic_write(self.out / PLAN_FILE, "w") as f:
            f.write(json.dumps(record, indent=1) + "\n")

    def _step_work(self) -> dict[str, Any]:
        """Each step's work (``pipelines.estimates.step_work``) for this route's photos and trainings; none for a CLIP
        mode (not measured), nor before the plan has read the data."""
        from wsss.pipelines.estimates import step_work

        if not self.mode.mode.measured or self.facts is None:
            return {}
        facts, key = self._facts(), str(self.choices["classifier"].value)
        if key not in CLASSIFIERS:  # a preset of the user's: its rate is its own name's
            key = Path(key).stem
        n = len(facts.train)
        folds = self.opts.folds if self.choices["stage"].value == "folds" else 0
        counts = {
            "train": n,
            "val": len(facts.val),
            "new": self.new_photos,
            "folds": folds,
            "masked_train": len(facts.masked_train),
            "rounds": self.opts.rounds,
            "abstain": int(self.opts.abstain),
        }
        iterations = {k: resolve_epochs(self.configs[k], n).train.max_iters for k in ("cls", "seg")}
        return step_work(
            key,
            counts,
            {"classifier": iterations["cls"], "seg": iterations["seg"]},
            device=str(self.choices["presets"].value),
        )

    def _print_estimates(self, steps: list[Step]) -> None:
        """Under the plan: each step's estimate (0 for a step of this folder that a rerun skips), the total and the
        rates they came from."""
        from wsss.pipelines.estimates import rates, step_estimates

        work, known = self._step_work(), rates()
        estimates = step_estimates(work, known)
        done, spent = self._measured_before()
        for i, step in enumerate(steps, 1):
            self.say(f"[{i}/{len(steps)}] {step.title}: {step.command}")
            seconds = estimates.get(step.title)
            if step.title in done:
                estimates[step.title] = 0.0
                self.say("      estimate: 0 s (done: a rerun of this folder skips it)")
            elif seconds is not None and step.title in spent:  # a stopped step goes on where it stopped
                estimates[step.title] = left = max(0.0, seconds - spent[step.title])
                self.say(f"      estimate: about {_duration(left)} ({_duration(spent[step.title])} of it spent)")
            else:
                self.say(f"      estimate: {'about ' + _duration(seconds) if seconds is not None else 'none measured'}")
        if not self.mode.mode.measured:
            self.say(
                "estimate: none measured of the CLIP modes; on a GPU, estimates from single steps in "
                "docs/own-photos.md#with-clip-files"
            )
            return
        total = sum(estimates.get(step.title) or 0.0 for step in steps)
        keys = {k for step in steps for k, _ in work.get(step.title, [])}
        self.say(f"estimate: about {_duration(total)} in all (rates: {known.source(keys)})")

    def _measured_before(self) -> tuple[set[str], dict[str, float]]:
        """The steps of this folder that finished before (none with ``--overwrite``: each runs again) and the seconds
        of the stopped runs of the others (``OUT/steps.jsonl``)."""
        from wsss.pipelines.estimates import read_step_log

        return (set(), {}) if self.opts.overwrite else read_step_log(self.out / STEPS_LOG)

    def _learn(self, title: str, seconds: float) -> None:
        """A step's measured seconds into this machine's rates (``pipelines.estimates.record``)."""
        from wsss.pipelines.estimates import record

        work = self._step_work().get(title)
        if work:
            record(work, seconds, self.out)

    def _save_facts(self) -> None:
        """``OUT/data_facts.json``: the facts the choices were made from, once the plan has read them."""
        if self.facts is not None:
            with atomic_write(self.out / FACTS_FILE, "w") as f:
                f.write(json.dumps(self.facts.to_json(), indent=1) + "\n")

    def result(self) -> RouteResult:
        """What the route made so far."""
        return RouteResult(
            choices={**self.choices, **self.measured},
            facts=self.facts,
            masks=self.masks,
            reports=list(self.reports),
            new_masks=self.new_masks,
            scores=dict(self.scores),
            seconds=dict(self.times),
            seconds_over_runs=self.runner.seconds_over_runs(),
            masks_written=self.masks_written,
        )

    def _how(self) -> str:
        return self.mode.mode.how

    def _summary(self, wall: float) -> RouteResult:
        from wsss.pipelines import route_labels

        result = self.result()
        with atomic_write(self.out / SUMMARY_FILE, "w") as f:
            f.write(json.dumps(result.to_json(), indent=1) + "\n")
        lines = [
            f"route finished in {_duration(wall)} (this run's steps)",
            f"  masks of all {self.masks_written} train and val photos, {self._how()}: {self.masks}",
        ]
        against = [
            f"{s} mIoU {self.scores[f'{s}_miou']:.2f} on its {self.scores[f'{s}_scored_photos']} photos"
            for s in ("val", "train")
            if f"{s}_miou" in self.scores
        ]
        if against:
            lines.append(f"  against your masks: {', '.join(against)} (each photo's: summary.json, scores.photos)")
        taught = self.scores.get("taught")  # only where the train photos' masks taught the stage
        if taught:
            lines.append(
                f"  the {taught['photos']} masked train photos, apart (mIoU {taught['miou']:.2f}): {taught['note']}"
            )
        lines += route_labels.label_lines(self.scores)
        if self.new_masks is not None:
            lines.append(f"  masks of the new photos: {self.new_masks} (overlays in {self.new_masks / 'overlay'})")
        lines += [f"  report: {p}" for p in self.reports]
        lines.append(f"  summary: {self.out / SUMMARY_FILE}")
        self.say("\n".join(lines))
        return result


def _miou(pred: Path, root: Path | str, split: str) -> float:
    """The mIoU (a fraction) of the masks in ``pred`` on the split's photos that have a mask (:func:`score`)."""
    return score(pred, root, split).miou


def _shown(value: Any) -> str:
    if value is None:
        return "the preset's"
    if isinstance(value, tuple):
        return "/".join(f"{v:g}" for v in value)
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def run_route(opts: RouteOptions, say: Callable[[str], None] | None = None) -> RouteResult | None:
    """``wsss route``: run or continue the route of ``opts`` (module docstring); what it made (None with
    ``plan_only``: the plan is printed, nothing runs)."""
    return Route(opts, say).run()


# -- the route's modes (wsss.pipelines.modes: each asked whether it applies to the files given) ---------------------
CLIP_PAPER = (
    "a paper's figure and our parity with its code (docs/own-photos.md#with-clip-files, docs/parity.md), "
    "not a measurement on real photos here"
)
CLIP_CPU_NOTE = (
    "on the CPU: the CLIP method's GPU preset on the CPU (no CPU preset of it was measured on real "
    "photos; slow at full size), the CPU presets for the rest"
)


@register_mode
class ClassifierMode(RouteMode):
    """No weight file: a classifier (RCA or the CAM baseline) on ImageNet weights, its CAMs and PAR labels, then the
    DeepLab stage (the route as measured on real photos)."""

    name, title = "none", "the classifier"
    reason = "no CLIP file: a classifier on ImageNet weights, as measured on real photos here"
    cpu_presets = {**CLASSIFIERS, "seg": SEG_PRESET}
    gpu_presets = GPU_PRESETS
    measured = True

    def steps(self, route: Route, root: Path, out: Path, facts: DataFacts) -> list[Step]:
        """The classifier, its CAMs and PAR labels, then the DeepLab stage (the route without CLIP)."""
        name = route.opts.classifier
        route.choices["classifier"] = choose_classifier(facts) if name == "auto" else Choice(name, "given")
        chosen = route.choices["classifier"].value
        preset = self.presets(route._gpu()).get(chosen, chosen)
        cls_dir = out / "cls"
        train = Command(
            ("train",), (preset,), words=(Setting("data.root", root), Setting("run.dir", cls_dir), *route.words["cls"])
        )
        cls_cfg = route._command_config(train)
        level = float(cls_cfg.cam.bkg_thre)  # the one place the route reads the classifier's background level
        route.choices["levels"] = Choice(
            (level, level),
            f"the classifier's own background level cam.bkg_thre {level:g}, as one level (no pixel "
            "left undecided; cross-validated on ccp-dev: the level sweep-bkg picks lost)",
        )
        route.configs["cls"] = cls_cfg
        refine = "agree" if route.opts.abstain else "par"
        route.choices["labels"] = (
            Choice(
                "agree",
                "given (--abstain): PAR's label where the CAM's thresholds and the CRF label agree with "
                "it, 255 (unlearned) elsewhere",
            )
            if route.opts.abstain
            else Choice(
                "par",
                "PAR's refinement of the CAMs, every pixel labelled (--abstain: 255 where the refiners "
                f"disagree; {NOT_ADOPTED})",
            )
        )
        pseudo = _pseudo_command(cls_dir, refine, (level, level))
        steps = [
            Step("classifier", (train,), lambda: route._train(cls_cfg), outputs=(cls_dir,)),
            route._job_step("cam", _cam_command(cls_dir)),
            route._job_step("pseudo", pseudo),
        ]
        return steps + route._seg_steps(root, out, facts, cls_dir)


class ClipMode(RouteMode):
    """What the CLIP modes share: they tag photos without labels, make their own labels (no ``--abstain``) and record
    the CLIP method's words."""

    tags = method_words = True
    cpu_note = CLIP_CPU_NOTE

    @classmethod
    def refuse(cls, abstain: bool, rounds: int) -> str | None:
        if abstain:
            return "--abstain: labels of the classifier's CAMs; a CLIP mode makes its own (drop --clip)"
        return None

    def tagger_steps(self, route: Route, root: Path, out: Path, words: list[str], *, always: bool) -> list[Step]:
        """The CLIP-ES run of the CLIP file (``always``, or where it tags the photos) and the photos' tags where
        there are no labels (docs/own-photos.md#with-clip-files)."""
        clip_dir, steps = out / "clip", []
        device = route.choices["device"].value or "cpu"  # the CLIP presets name cuda
        clip_file, es = route.files[CLIP_KEY], self.presets(route._gpu())["clip_es"]
        if route._tags() or always:
            command = Command(
                ("import", "clip_es"),
                (clip_file,),
                (("--config", es), ("--out", clip_dir)),
                (Setting("data.root", root), *words),
            )

            def made() -> Path:
                return clip_steps.import_clip_run(
                    command.args[0], root, clip_dir, command.word_list(("data.root",)), preset=es, device=device
                )

            steps.append(Step("clip", (command,), made, outputs=(clip_dir,)))
        if route._tags():
            edited = route.edited_tags  # tags.csv there: its labels column, as the user left it
            options = (("--split", "train"), ("--labels-from", "tags.csv" if edited else None), ("--overwrite", edited))
            tag = Command(("tag",), (clip_dir,), options)
            steps.append(Step("tag", (tag,), lambda: route._tag(root, clip_dir), outputs=(root / "tags.csv",)))
        return steps


@register_mode
class ClipESMode(ClipMode):
    name, title = "clip_es", "CLIP-ES"
    files = frozenset({CLIP_KEY})
    reason = (
        "a CLIP file, no DINOv2: CLIP-ES's CAMs of your class names with CRF labels, then the DeepLab stage; "
        "ExCEL scores higher but needs written descriptions of every class, which your classes lack: "
        f"{CLIP_PAPER}"
    )
    cpu_presets = {"clip_es": clip_steps.CLIP_ES_PRESET, "seg": SEG_PRESET}
    gpu_presets = {"clip_es": clip_steps.CLIP_ES_PRESET, "seg": GPU_PRESETS["seg"]}

    def steps(self, route: Route, root: Path, out: Path, facts: DataFacts) -> list[Step]:
        """CLIP-ES: its CAMs of the class names and CRF labels, then the DeepLab stage."""
        clip_dir = out / "clip"
        es_words = [w for w in route.words["clip"] if _key(w) != CLIP_KEY]  # the CLIP method's words less its file
        steps = self.tagger_steps(route, root, out, es_words, always=True)
        steps += [
            route._job_step("cam", _cam_command(clip_dir)),
            route._job_step("pseudo", _pseudo_command(clip_dir, "crf", None)),
        ]
        return steps + route._seg_steps(root, out, facts, clip_dir)


@register_mode
class WeCLIPMode(ClipMode):
    name, title = "weclip_plus", "WeCLIP+"
    files = frozenset({CLIP_KEY, DINOV2_KEY})
    reason = (
        "a CLIP and a DINOv2 file: WeCLIP+ trained on your photos, its masks by the official test fusion; it "
        f"leads the CLIP methods: {CLIP_PAPER}"
    )
    cpu_presets = gpu_presets = {"weclip": clip_steps.WECLIP_PRESET, "clip_es": clip_steps.CLIP_ES_PRESET}
    final_run, crf, how = "weclip", False, "by WeCLIP+'s test fusion"  # its test has no CRF
    masks_teach = False  # it trains on no mask

    @classmethod
    def refuse(cls, abstain: bool, rounds: int) -> str | None:
        if not abstain and rounds:
            return "--rounds: rounds of the DeepLab stage; WeCLIP+ has none (drop --dinov2 for CLIP-ES)"
        return super().refuse(abstain, rounds)

    def steps(self, route: Route, root: Path, out: Path, facts: DataFacts) -> list[Step]:
        """WeCLIP+ trained on the photos (tagged first by a CLIP-ES run where there are no labels), its masks by its
        official test fusion."""
        words, presets = route.words["clip"], self.presets(route._gpu())
        # beside WeCLIP+, the CLIP-ES run (the tagger) takes the CLIP method's options its method has
        es_words = clip_steps.words_of(presets["clip_es"], [w for w in words if _key(w) != CLIP_KEY])
        steps = self.tagger_steps(route, root, out, es_words, always=False)
        device = route.choices["device"].value or "cpu"  # the CLIP presets name cuda
        weclip_dir, preset = out / "weclip", presets["weclip"]
        train = Command(
            ("train",), (preset,), words=(Setting("data.root", root), *words, Setting("run.dir", weclip_dir))
        )
        cfg = route._command_config(train, device)
        route.configs["weclip"] = cfg
        route.choices["crf_workers"] = route._crf_workers()
        split = "val" if facts.val else "train"
        route.choices["predict"] = Choice(
            split,
            ("the val split" if facts.val else "no val split: the train photos")
            + " scores the masks; every train and val photo gets its mask by WeCLIP+'s "
            "official test fusion (the preset's infer scales with flips; no CRF, as the "
            "paper's test)",
        )
        steps.append(Step("weclip", (train,), lambda: route._train(cfg), outputs=(weclip_dir,)))
        return [*steps, route._masks_step(weclip_dir, crf=False), route._report_step(weclip_dir)]
