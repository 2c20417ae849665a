"""The route's modes (docs/adding-a-method.md#adding-a-route-mode): each way from the photos to their masks is one
class registered by name, as methods are (``wsss.methods.register_method``). A mode says which weight files it needs,
whether it applies to the files and options given (with its reason), its CPU and GPU presets and its steps; the route
asks each registered mode (:func:`choose_mode`) and runs the steps of the one that applies. The built-in modes (the
classifier on ImageNet weights, CLIP-ES, WeCLIP+) are ``wsss.pipelines.route_modes``'s, registered when
``wsss.pipelines.route`` is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from wsss.core.errors import UsageError
from wsss.pipelines.steps import Step

# The weight files a mode may need, as the CLIP method's config words, with the flag that gives each and where to get it
CLIP_KEY, DINOV2_KEY = "model.pretrained", "options.dino_weights"  # the words --clip and --dinov2 stand for
FILE_FLAGS = {
    CLIP_KEY: ("--clip", "a CLIP file", "--clip ViT-B-16.pt; docs/clip-weights.md"),
    DINOV2_KEY: ("--dinov2", "a DINOv2 file", "--dinov2 DINOV2; docs/clip-weights.md"),
}


class RouteMode:
    """One way of the route from the photos to their masks. A subclass sets the class attributes and
    :meth:`steps`; :func:`register_mode` makes it available by its ``name``."""

    name: ClassVar[str] = ""  # the mode's name in summary.json's choices (``mode``)
    title: ClassVar[str] = ""  # the mode's name for a reader (WeCLIP+, CLIP-ES, ...)
    files: ClassVar[frozenset[str]] = frozenset()  # the weight words (CLIP method's keys) it needs, all of them
    reason: ClassVar[str] = ""  # why it is the mode of those files
    # the presets of its trainings by role, on the CPU and on a CUDA device (the same roles in both)
    cpu_presets: ClassVar[Mapping[str, str]] = {}
    gpu_presets: ClassVar[Mapping[str, str]] = {}
    final_run: ClassVar[str] = "seg"  # the run in OUT whose masks the route gives, and new photos' masks come from
    crf: ClassVar[bool] = True  # whether its masks are made with the dense CRF
    masks_teach: ClassVar[bool] = True  # whether the train photos' masks teach its final run
    how: ClassVar[str] = "with the dense CRF"  # how its masks are made, as the summary says
    tags: ClassVar[bool] = False  # whether it labels photos given with their classes and no labels file (CLIP)
    measured: ClassVar[bool] = False  # whether the estimates know its steps' rates (pipelines.estimates)
    method_words: ClassVar[bool] = False  # whether it runs the CLIP method (clip.KEY=VALUE words: its settings)
    cpu_note: ClassVar[str] = "the CPU presets (configs/*/real_cpu.yaml)"  # the presets' reason on the CPU

    @classmethod
    def applies(cls, files: Mapping[str, str]) -> str | None:
        """Its reason where it is the mode of the weight ``files`` given ({key: file}), else None: by default where
        they are the files it needs."""
        return cls.reason if set(files) == set(cls.files) else None

    @classmethod
    def refuse(cls, abstain: bool, rounds: int) -> str | None:
        """A route option it cannot take, as a one-line reason (None: it takes them all)."""
        return None

    @classmethod
    def presets(cls, gpu: bool) -> Mapping[str, str]:
        return cls.gpu_presets if gpu else cls.cpu_presets

    def steps(self, route: Any, root: Path, out: Path, facts: Any) -> list[Step]:
        """Its steps after the route's first (prepare or check-data), for the data ``root`` (its ``facts``: a
        ``route.DataFacts``) and the folder ``out``; the choices they make are put in ``route.choices`` (``route``: the
        ``wsss.pipelines.route.Route`` that plans it)."""
        raise NotImplementedError


MODES: dict[str, type[RouteMode]] = {}


def register_mode(cls: type[RouteMode]) -> type[RouteMode]:
    """Class decorator: make a route mode available by its ``name`` (:func:`choose_mode` asks it)."""
    from wsss.methods.contract import require_free_name

    require_free_name("route mode", MODES, getattr(cls, "name", None), cls)
    if set(cls.cpu_presets) != set(cls.gpu_presets):
        raise ValueError(f"route mode {cls.name!r}: its CPU and GPU presets name other roles")
    MODES[cls.name] = cls
    return cls


def weight_keys() -> list[str]:
    """The weight words any registered mode needs."""
    return sorted({k for mode in MODES.values() for k in mode.files})


def weight_words(words: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The weight files among the CLIP method's ``KEY=VALUE`` words: {key: the file} for the keys a mode needs (the
    last word of a key wins, as in a config)."""
    keys, found = weight_keys(), {}
    for word in words:
        key, _, value = word.partition("=")
        if key.strip() in keys and value.strip() not in ("", "null", "None"):
            found[key.strip()] = value.strip()
    return found


@dataclass(frozen=True)
class ModeChoice:
    """The mode the files chose, and why."""

    mode: RouteMode
    reason: str

    @property
    def value(self) -> str:
        return self.mode.name


def choose_mode(files: Mapping[str, str]) -> ModeChoice:
    """Each registered mode asked in turn: the one that applies to the weight ``files`` ({key: file}); none is a
    UsageError naming the file a mode would need beside them (docs/own-photos.md#with-clip-files)."""
    fits = [(mode, reason) for mode in MODES.values() if (reason := mode.applies(files)) is not None]
    if len(fits) == 1:
        return ModeChoice(fits[0][0](), fits[0][1])
    if len(fits) > 1:
        raise RuntimeError(f"route modes {', '.join(m.name for m, _ in fits)} all apply to {sorted(files)}")
    given = " ".join(
        f"{FILE_FLAGS[k][0]} {v}" if k in FILE_FLAGS else f"clip.{k}={v}" for k, v in sorted(files.items())
    )
    wider = [m for m in MODES.values() if set(files) < set(m.files)]
    if not wider:
        raise UsageError(f"{given}: no route mode takes these files; drop one")
    mode = min(wider, key=lambda m: len(m.files))
    missing = sorted(set(mode.files) - set(files))
    needs = " and ".join(FILE_FLAGS.get(k, ("", f"clip.{k}=FILE", ""))[1] for k in missing)
    how = "; ".join(FILE_FLAGS[k][2] for k in missing if k in FILE_FLAGS)
    raise UsageError(f"{given}: {mode.title} needs {needs} too" + (f" ({how})" if how else ""))
