"""The route's typed values and names (``wsss route``, :mod:`wsss.pipelines.route`): its options
(:class:`RouteOptions`, the override words of each training: :func:`split_overrides`), a choice with its reason
(:class:`Choice`), the data facts the choices read (:class:`DataFacts`), the plan (:class:`Plan`) and what a route made
(:class:`RouteResult`), with the presets, file names and folders they name."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsss.core.choices import ROUTE_DRAW_NEXT_FILE, ROUTE_FACTS_FILE, ROUTE_MASKS_DIR
from wsss.core.config import Config
from wsss.core.errors import UsageError
from wsss.pipelines.modes import CLIP_KEY, DINOV2_KEY
from wsss.pipelines.steps import STEPS_LOG, Step

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
    # a train or val photo's mean size in megapixels, from a sample of their headers (None: none readable); the
    # estimates' per-photo steps scale with it. Not compared: the same photos read before or after prepare
    megapixels: float | None = field(default=None, compare=False)

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


def predict_choice(facts: DataFacts, how: str) -> Choice:
    """Which split scores the route's masks (val where there is one), and ``how`` every photo gets its mask."""
    split = "val" if facts.val else "train"
    where = "the val split" if facts.val else "no val split: the train photos"
    return Choice(split, f"{where} scores the masks; every train and val photo gets its mask, {how}")


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
    "batch",
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

    def choice_lines(self) -> list[str]:
        """The lines ``--plan`` and a run print of the :meth:`shown` choices: each value and its reason."""
        return [f"route: {k}: {_shown(self.choices[k].value)} ({self.choices[k].reason})" for k in self.shown()]

    def to_json(self) -> dict[str, Any]:
        """``OUT/plan.json``."""
        return {
            "mode": self.choices["mode"].value,
            "choices": {k: {"value": _jsonable(c.value), "reason": c.reason} for k, c in self.choices.items()},
            "steps": [{"name": step.title, "command": step.command} for step in self.steps],
            "processes": self.processes,
            "data": str(self.facts.root),
        }


def _shown(value: Any) -> str:
    """A choice's value as printed (None: the preset's)."""
    if value is None:
        return "the preset's"
    if isinstance(value, tuple):
        return "/".join(f"{v:g}" for v in value)
    if isinstance(value, dict):  # a value per training: "cls 5, seg 5"
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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
        other = next((w for w in words if word_key(w) == f"clip.{key}" and w.partition("=")[2].strip() != value), None)
        if value and other is not None:
            raise UsageError(f"{flag} {value} and {other}: two files for the CLIP method's {key}; give one of them")
    return [f"clip.{key}={resolved_file(value)}" for _, key, value in flags if value]


def resolved_file(value: str) -> str:
    """A file given to a flag, resolved where it is there (as ``model.pretrained`` is in a run's config): its runs
    record where it was, which a move re-bases (:meth:`RouteRecord.rebase`)."""
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def word_key(word: str) -> str:
    """The key of a ``KEY=VALUE`` word."""
    return word.partition("=")[0].strip()
