"""What a method provides to the pipeline, and the registries that find methods and refiners by name.

A method owns its networks and says what one training step computes; the engine owns the loop,
optimiser, schedule, loss weighting and staging, checkpoints and logging for all methods.

Contract (``Method``):
- ``training_step(batch, step, active)`` returns the **unweighted** loss terms by name. ``active``
  is the set of terms the engine will use at this step (``LossConfig`` staging), so a method can skip
  computing the others. The engine multiplies by ``cfg.loss.weights`` and sums.
- ``param_groups()`` names its parameters: "backbone", "backbone_norm" (base lr) and "head",
  "decoder" (``train.head_lr_mult`` x lr), the four PolyWarmupAdamW groups of docs/methods/seco.md#optim.
  A method with other groups (RCA's, DeepLab's 10x/20x bias groups) overrides
  ``param_group_options()``: per group name, an lr multiplier and optionally its own weight decay.
- ``on_train_start(ctx)`` runs once before the first step (after a resume), with a ``TrainContext``:
  the run directory, step, device, datasets, the optimiser and a save hook, never the trainer
  itself; ``on_epoch_start(epoch)`` when the data stream enters an epoch
  (RCA's per-epoch centroid refresh); ``lr_factor(epoch)`` a per-epoch LR rule that the engine applies, and
  ``set_training_length(epochs)`` the training's length before anything is written (a rule stated in
  fractions of the training resolves it there, and a rule that does not fit the training is refused).
- ``cam_maps(images)`` returns (cam, cam_aux) before any ReLU or normalisation, for the shared multi-scale
  step (``cam_passes()``: a ``wsss.cam.CamPasses`` that applies the ReLU where ``cams.relu`` says, and can
  fill an empty map from what lies below it: ``infer.cam_empty_fallback``). A method whose ``cams.source`` is
  not "batch" keeps the default, which refuses with one UsageError naming the method.
- ``seg_logits(images)`` returns (B, C, h, w) segmentation logits at the network's resolution.
- ``class_logits(images)`` returns the image classifier's (B, C-1) logits (``has_classifier``): by default
  the CAM pooled as the classifier pools it; ``wsss predict --tags-from`` and ``wsss viz`` read them.
- ``after_step(step)`` runs after each optimiser step (EMA teachers, queues...).
- With ``data.true_masks`` on a method whose CAMs come from ``cam_maps``, ``forward`` adds the term ``mask``
  (``mask_term``: the CAMs of the masked photos taught their pixels, docs/own-photos.md#how-many-masks) to the
  method's own terms; no method implements it.

Capabilities, each declared here with its default, so the pipeline never probes with ``getattr``:

- ``cams``: a ``CamDeclaration``, everything the shared code asks about a method's CAMs, in one place:
  where they come from (``source``: batches through ``cam_maps``, per image, or none; ``has_cams`` is
  derived from it), where the ReLU goes, and the classifier's pooling when the method fixes it.
- ``has_seg_head`` (``wsss predict``), ``refiners`` (the ``wsss pseudo --refine`` names that only runs of this
  method accept; its module registers them; ``refiners_of`` says what a run accepts and ``pseudo`` refuses the
  rest), ``trainable`` (False: a run is made from weights by ``wsss import``).

Hooks, each with a default that does the common path, so that no caller branches on what a method is:

- ``image_cams(image, x, classes=...)``: the CAMs of one image for ``wsss cam``, validation and ``viz``; the
  default runs the shared multi-scale step on ``cam_maps``, or, for a method whose CAMs come per decoded image
  from its labels (``cams.source == "per_image"``: CLIP-ES, ExCEL, WeCLIP+), its ``labelled_cam_of_image``.
- ``crf_refiner(job)``: what ``wsss pseudo --refine crf`` does with a run of the method; the default is
  ToCo's two-level CRF, CLIP-ES overrides it with its own. ``crf_cam(cam)`` is the CAM that PSA's CRF seeds
  (``--refine psa``) read.
- ``train_driver``: a training that is not one run of the loop (SC-CAM's rounds), called as
  ``driver(cfg, engine, progress)`` with the engine's public builders, ``EngineAPI``.
- ``tiny_overrides()``: the settings that make the method train in seconds, for the contract test over
  every registered method.

Registries are open: ``register_method`` / ``register_refiner`` refuse an empty or taken name; a refiner
declares the named options it takes (``register_refiner("affinity", options=("affinity_run",))``) and gets
those alone; a method outside the package registers by being imported, through the config key
``custom_imports: [my_pkg.my_method]`` (imported once the user names the module too: on the command line or in
``WSSS_PLUGINS``, :func:`import_config_modules`) or the Python entry-point group ``wsss.methods``.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from wsss.cam.multiscale import RELU_ORDERS, CamPasses
from wsss.core.config import PLUGINS_ENV, Config, from_dict, named_plugins
from wsss.core.errors import ConfigError, UsageError

if TYPE_CHECKING:  # annotations only: nothing of the data layer runs here
    from wsss.data import ClsTrainDataset, VOCDataset

ENTRY_POINT_GROUP = "wsss.methods"

METHODS: dict[str, type[Method]] = {}


def require_free_name(kind: str, table: dict[str, Any], name: object, obj: object) -> None:
    """Before ``table[name] = obj``: refuse an empty name, or a name that another object holds already (the same
    object again is fine; a registry entry that wraps ``obj`` counts as ``obj``)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a {kind} needs a non-empty name, got {name!r} ({obj!r})")
    held = table.get(name)
    if held is not None and held is not obj and getattr(held, "make", None) is not obj:
        where = getattr(held, "module", None) or getattr(held, "__module__", "?")
        raise ValueError(f"{kind} {name!r} is already registered (by {where}); pick another name")


MASK_TERM = "mask"  # the loss term of a classifier's CAMs on the user's own masks (Method.mask_term)


@contextmanager
def batchnorm_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """Every BatchNorm of ``module`` normalises with its running statistics, and leaves them as they are, inside
    the block (its affine parameters still learn); each is restored to its own mode after it."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.train(False)
    try:
        yield
    finally:
        for m in norms:
            m.train(True)


@dataclass
class TrainContext:
    """What the engine hands a method before training (``Method.on_train_start``): never the trainer.

    ``train_data`` is what the loop draws its batches from (augmented samples of ``train_set``);
    ``save(name)`` writes a checkpoint ``checkpoints/<name>`` of the run at the current step (every
    process must call it); ``true_masks``: ``data.true_masks`` as the engine resolved it (the training split's ids
    that have a mask of the user's, and its file), which a method reads and never resolves again.
    """

    run_dir: Path
    step: int
    device: torch.device
    train_set: VOCDataset
    train_data: ClsTrainDataset
    val_set: VOCDataset | None
    optimizer: torch.optim.Optimizer
    save: Callable[[str], None]
    true_masks: dict[str, Path] = field(default_factory=dict)


@dataclass
class EngineAPI:
    """The engine's public builders, handed to a method's ``train_driver`` (a method sits below the engine
    and never imports it): ``build_trainer(cfg, progress=...)`` -> a trainer with ``train(until=...)``,
    ``save_checkpoint(name)``, ``validate()``, ``step``, ``method``, ``val_set``;
    ``load_trained_method(run_dir, checkpoint=..., device=...)`` -> ``.method``;
    ``validate(method, dataset, cfg, device, progress=...)`` -> scores."""

    build_trainer: Callable[..., Any]
    load_trained_method: Callable[..., Any]
    validate: Callable[..., dict[str, Any]]


TrainDriver = Callable[[Config, EngineAPI, bool], dict[str, Any]]


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name`` in configs (``method: <name>``)."""
    require_free_name("method", METHODS, getattr(cls, "name", None), cls)
    METHODS[cls.name] = cls
    return cls


def import_config_modules(names: Sequence[str]) -> None:
    """Import the modules a config's ``custom_imports`` lists, each one the user named (:func:`named_plugins`) or
    already imported (importing it again runs nothing). A file names no code to run: a run folder or a config
    from elsewhere with ``custom_imports: [plugin_x]`` and a ``plugin_x.py`` beside it ran that file.
    Any other module is a UsageError saying how to name it."""
    _check_module_names(names)
    refused = [n for n in names if n not in sys.modules and n not in named_plugins()]
    if refused:
        listed = ",".join(refused)
        raise UsageError(
            f"custom_imports names {listed}, not imported: a config does not choose code to run; if you trust "
            f"it, name it: {PLUGINS_ENV}={listed} in the environment, or custom_imports=[{listed}] on the command "
            "line of `wsss train | import | config show`"
        )
    import_custom_modules(names)


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _check_module_names(names: Sequence[str]) -> None:
    """UsageError naming the first of ``names`` that is not an absolute module name (``../evil``, ``.x``, "")."""
    bad = next((n for n in names if not isinstance(n, str) or not _MODULE_NAME.fullmatch(n)), None)
    if bad is not None:
        raise UsageError(
            f"custom_imports: {bad!r} is not a module name (dotted Python names, e.g. my_package.my_method; a "
            "plugin is imported from the Python path, never from a file path)"
        )


def import_custom_modules(names: Sequence[str]) -> None:
    """Import the modules of the config key ``custom_imports`` (their methods, backbones and refiners
    register on import). A module that cannot be found, or fails as it is imported, is a user error naming it."""
    _check_module_names(names)
    for name in names:
        if name not in sys.modules:
            _import_plugin(f"custom_imports: plugin {name!r}", partial(importlib.import_module, name), name)


def _import_plugin(what: str, load: Callable[[], Any], name: str = "") -> Any:
    """``load()``, the import of a plugin's code, with every failure of that code as one UsageError naming
    ``what``: a missing module (``name`` itself or one it imports), an exception, a ``sys.exit``."""
    try:
        return load()
    except ModuleNotFoundError as e:
        if name and e.name and name.startswith(e.name):  # the named module itself (not one it imports) is missing
            raise UsageError(f"custom_imports: no module {name!r} (is its package on PYTHONPATH?)") from e
        raise UsageError(f"{what} imports {e.name!r}, which is not installed") from e
    except SystemExit as e:
        raise UsageError(f"{what} called sys.exit({e.code!r}) as it was imported") from None
    except Exception as e:  # noqa: BLE001 (the plugin's own code: any error of it is the plugin's)
        why = (str(e).strip().splitlines() or [""])[0]
        raise UsageError(f"{what} failed as it was imported ({type(e).__name__}{': ' + why if why else ''})") from e


_entry_points_loaded = False


def load_entry_points() -> None:
    """Import every module of the entry-point group ``wsss.methods`` (installed plugins), once."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _import_plugin(f"plugin {ep.value!r} (entry point {ep.name!r} of {ENTRY_POINT_GROUP})", ep.load)


def available_methods() -> list[str]:
    """Every registered method name, plugins of the entry-point group included."""
    load_entry_points()
    return sorted(METHODS)


def get_method_class(name: str) -> type[Method]:
    """The registered class of ``name`` (the built-ins register when ``wsss.methods`` is imported;
    plugins of the entry-point group ``wsss.methods`` are loaded when a name is not found)."""
    if name not in METHODS:
        load_entry_points()
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_class(cfg: Config) -> type[Method]:
    """The class of ``cfg.method``, after importing ``cfg.custom_imports`` (those the user named:
    :func:`import_config_modules`)."""
    import_config_modules(cfg.custom_imports)
    return get_method_class(cfg.method)


def check_method(cfg: Config, source: str | Path) -> type[Method]:
    """The class of ``cfg.method`` once ``cfg.options`` fits its ``Options``; a ConfigError or UsageError naming
    ``source`` (the config file they came from) otherwise. The schema of ``core.config`` cannot see the method's
    options: a run saved by an older wsss with a renamed option (RCA's ``proxy_att_thr``) said "unknown config
    key" without the file to edit, and `wsss config show` printed the unknown key as if valid."""
    try:
        cls = method_class(cfg)
        from_dict(cls.Options, cfg.options, "options")
    except (ConfigError, UsageError) as e:
        raise type(e)(f"{source}: {e}") from e
    return cls


def build_method(cfg: Config, classes: Sequence[str]) -> Method:
    """The method of ``cfg`` for the dataset's class names (``classes[0]`` is the background)."""
    return method_class(cfg)(cfg, classes)


def placeholder_classes(num_classes: int) -> list[str]:
    """Class names ``background, class1, ...`` for a model built without a dataset (tests, benchmarks)."""
    return ["background", *(f"class{i}" for i in range(1, num_classes))]


# -- refiners: ``wsss pseudo --refine NAME`` ---------------------------------------------------------


@dataclass
class PoolCall:
    """A CPU-bound call (a module-level function and its picklable arguments) that a ``wsss pseudo`` job's
    worker pool runs (``CRFPool.imap_calls``; in the job's process when ``infer.crf_workers`` is 0)."""

    fn: Callable[..., Any]
    args: tuple


# A refiner: (id, image uint8 (H, W, 3), labels multi-hot over the foreground) -> label map (255 = ignore),
# or the CPU-bound call that makes it (dense CRFs, RCA's proxy labels), which the job's worker pool runs.
Refiner = Callable[[str, np.ndarray, np.ndarray], "np.ndarray | PoolCall"]


class RefineJob(Protocol):
    """What a refiner factory gets (``wsss.runs.jobs.PseudoJob``): the run (``.cfg``, ``.method``,
    ``.dir``, ``.num_classes``, ``.device``), the split's dataset, its saved CAMs, and ``load_run(dir)``
    for a refiner that reads another run (the affinity network's)."""

    run: Any
    ds: VOCDataset
    levels: tuple[float, float] | None  # `wsss pseudo --levels HIGH/LOW` when given (else None)

    def cam(self, id: str) -> np.ndarray: ...

    def labelled_cam(self, id: str) -> tuple[np.ndarray, np.ndarray]: ...

    def require_cams(self, ids: Sequence[str], have: Callable[[str], bool] | None = None, also: str = "") -> None: ...

    def load_run(self, run_dir: str | Path) -> Any: ...


@dataclass(frozen=True)
class RegisteredRefiner:
    """A ``wsss pseudo --refine`` name: its factory ``make(job, ids to write, **options) -> Refiner`` and the
    named options the factory takes (``affinity_run``, ``saliency``); a job passes it those alone."""

    name: str
    make: Callable[..., Refiner]
    options: tuple[str, ...] = ()
    module: str = ""  # the module that registered it


#: name -> the registered refiner (``REFINERS[name].make``, ``.options``)
REFINERS: dict[str, RegisteredRefiner] = {}


RefinerFactory = TypeVar("RefinerFactory", bound=Callable[..., Refiner])


def register_refiner(name: str, *, options: Sequence[str] = ()) -> Callable[[RefinerFactory], RefinerFactory]:
    """Decorator: make a refiner factory available as ``wsss pseudo --refine <name>``. ``options``: the keyword
    options the factory takes (each None unless given: ``wsss pseudo --affinity-run`` is ``affinity_run``)."""

    def deco(factory: RefinerFactory) -> RefinerFactory:
        require_free_name("refiner", REFINERS, name, factory)
        REFINERS[name] = RegisteredRefiner(name, factory, tuple(options), factory.__module__)
        return factory

    return deco


def refiners_of(method: type[Method] | Method) -> list[str]:
    """The ``--refine`` names a run of ``method`` accepts, sorted: the method's own (``Method.refiners``) and,
    where it makes CAMs, every refiner that no registered method claims as its own (none, par, crf, psa, and
    those like ``affinity`` or ``rca`` that a method's module registers for the CAMs of any run)."""
    load_entry_points()
    claimed = {name for cls in METHODS.values() for name in cls.refiners}
    makes_cams = method.cams.source != "none"
    return sorted({*(name for name in REFINERS if makes_cams and name not in claimed), *method.refiners})


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")  # affinity_run -> --affinity-run, as `wsss pseudo` spells it


def refiner_options(method: type[Method] | Method, refine: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of ``options`` (None: not given) that refiner ``refine`` takes, after checking that a run of
    ``method`` accepts it (``refiners_of``) and that it takes every option given: a UsageError naming what the
    run accepts, or what the refiner takes, otherwise."""
    accepted = refiners_of(method)
    if refine not in accepted:
        what = f"--refine {'|'.join(accepted)}" if accepted else "no --refine (they make no CAMs)"
        raise UsageError(f"{method.name} runs accept {what}; got {refine}")
    takes = REFINERS[refine].options
    given = {k: v for k, v in options.items() if v is not None}
    extra = [k for k in given if k not in takes]
    if extra:
        flags = ", ".join(map(_flag, takes)) or "no option"
        raise UsageError(f"--refine {refine} takes {flags}; got {', '.join(map(_flag, extra))}")
    return given


# -- the method -------------------------------------------------------------------------------------


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm of ``module`` in eval mode with frozen affine parameters.

    kazuto1011's DeepLab freezes the (COCO/ImageNet-initialised) BatchNorm (``base.freeze_bn()``),
    PSA's ResNet-38 all of its BatchNorm (docs/methods/sccam.md#resnet38); call again after ``module.train()``.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)


@dataclass
class NoOptions:
    """This method has no options of its own."""


CAM_SOURCES = ("batch", "per_image", "none")
# Why ``Method.cam_maps`` has nothing to give, per ``CamDeclaration.source`` other than "batch"
NO_BATCH_CAMS = {
    "per_image": "makes its CAMs per image from its labels (`wsss cam` on its run), not from a batch of tensors",
    "none": "has no CAM stage: run `wsss cam` on the run whose CAMs it was trained from",
}
# The capability flags that CamDeclaration replaced: a subclass that still sets one is refused (it would be ignored).
_MOVED_FLAGS = {
    "has_cams": "cams = CamDeclaration(source='none')",
    "cams_per_image": "cams = CamDeclaration(source='per_image') and labelled_cam_of_image",
    "own_crf": "a crf_refiner override",
    "cam_relu_per_pass": "cams = CamDeclaration(relu='per_pass')",
}


@dataclass(frozen=True)
class CamDeclaration:
    """What a method declares about its CAMs: the shared code (training-time validation, ``wsss cam``,
    ``pseudo``, ``viz``) asks this, and nothing else, about them.

    - ``source``: ``"batch"``, ``cam_maps`` on image batches through the shared multi-scale step
      (``Method.cam_passes``, which the default ``Method.image_cams`` runs); ``"per_image"``, the maps of a
      decoded image from its labels, which the method's ``labelled_cam_of_image`` makes (CLIP-ES, ExCEL,
      WeCLIP+: from the labels' text) and the default ``image_cams`` returns, and no image classifier;
      ``"none"``, no CAMs (DeepLab, AffinityNet).
    - ``relu``: where the shared step applies the ReLU: ``"after_fusion"`` (ToCo / SeCo ``multi_scale_cam2``)
      or ``"per_pass"``, before the upsampling and the flip fusion (PSA / SC-CAM ``forward_cam``).
    - ``pooling``: how the classifier pools the CAM into its logits when the method fixes it (``"gap"``: RCA,
      docs/methods/rca.md#modules, and SC-CAM, docs/methods/sccam.md#heads); None: the config's
      ``model.pooling``. ``Method.class_logits`` pools the CAM this way by default.
    """

    source: str = "batch"
    relu: str = "after_fusion"
    pooling: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("source", self.source, CAM_SOURCES),
            ("relu", self.relu, RELU_ORDERS),
            ("pooling", self.pooling, (None, "gap", "gmp")),
        ):
            if value not in allowed:
                raise ValueError(f"CamDeclaration.{name} must be one of {allowed}, got {value!r}")


class JobStop(Exception):  # noqa: N818 - a signal, not an error
    """A method ends a per-id job at this image (the ids after it stay undone, as an official worker that
    stops): CLIP-ES's ``quirk_unlabelled_stops_worker``. The job warns with the message and returns."""


class Method(nn.Module):
    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    # -- capabilities (see the module docstring) --
    cams: ClassVar[CamDeclaration] = CamDeclaration()
    refiners: ClassVar[tuple[str, ...]] = ()
    train_driver: ClassVar[TrainDriver | None] = None
    # False: a run is made from weights (``wsss import``), never trained (CLIP-ES); ``wsss train`` refuses it
    trainable: ClassVar[bool] = True
    # keys of ``options`` naming weight files that only the build reads (as ``model.pretrained``): the checkpoint
    # holds their tensors, so a run whose file was moved since loads without it (``drop_missing_pretrained``)
    start_files: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        moved = [f"{flag} (now {new})" for flag, new in _MOVED_FLAGS.items() if flag in vars(cls)]
        if moved:
            raise TypeError(
                f"{cls.__qualname__} sets {', '.join(moved)}: what a method declares about its CAMs "
                "is one CamDeclaration, what it does differently a hook it overrides"
            )

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__()
        self.cfg = cfg
        self.class_names = list(classes)  # [0] is the background
        self.num_classes = len(self.class_names)
        self.options: Any = from_dict(self.Options, cfg.options, "options")
        self._frozen_bn: list[nn.Module] = []  # see keep_batchnorm_frozen()

    @property
    def has_cams(self) -> bool:
        """Whether the method makes CAMs (validation, ``wsss cam``): ``cams.source`` is not "none"."""
        return self.cams.source != "none"

    @property
    def has_seg_head(self) -> bool:
        """Whether ``seg_logits`` exists for this configuration (``wsss predict``)."""
        return True

    @property
    def classifier_pooling(self) -> str:
        """How the classifier pools ``cam_maps`` into its logits, "gmp" or "gap": ``cams.pooling`` where the
        method's official classifier fixes it (RCA's and SC-CAM's pool by GAP whatever the config says), else
        ``model.pooling``."""
        return self.cams.pooling or self.cfg.model.pooling

    @property
    def has_classifier(self) -> bool:
        """Whether ``class_logits`` exists: an image classifier trained on the image-level labels, whose CAMs
        come from batches (the CAM baseline, SeCo, RCA, SC-CAM); not DeepLab, AffinityNet or the CLIP methods."""
        return self.cams.source == "batch"

    def class_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C-1) logits of the image classifier, the ones its classification loss reads. Here: the CAM
        (``cam_maps``' first map) pooled as the classifier pools it (``classifier_pooling``), which is the logit
        of a bias-free 1x1 classifier after GAP (RCA: docs/methods/rca.md#modules, SC-CAM:
        docs/methods/sccam.md#heads); a classifier that pools its features by max before the 1x1 conv overrides
        this (the max of the map is not the map of the max)."""
        if not self.has_classifier:
            raise NotImplementedError(f"{self.name} has no image classifier (cams.source {self.cams.source!r})")
        cam = self.cam_maps(images)[0].flatten(2)
        return cam.amax(-1) if self.classifier_pooling == "gmp" else cam.mean(-1)

    def cam_passes(self, scales: Sequence[float] | None = None, *, labelled: bool = True) -> CamPasses:
        """The shared multi-scale CAM step for this method (the default ``image_cams``): ``scales`` (default
        ``infer.cam_scales``), the run's ``infer.cam_flip_fuse`` / ``cam_normalize``, the method's ReLU order,
        and the empty-map fallback ``infer.cam_empty_fallback`` where the maps are of ``labelled`` classes."""
        inf = self.cfg.infer
        fallback = inf.cam_empty_fallback if labelled else "none"
        return CamPasses(
            tuple(scales or inf.cam_scales),
            flip_fuse=inf.cam_flip_fuse,
            relu=self.cams.relu,
            normalize=inf.cam_normalize,
            empty_fallback=fallback,
        )

    def image_cams(
        self,
        image: np.ndarray,
        x: torch.Tensor | None = None,
        *,
        classes: torch.Tensor | None = None,
        scales: Sequence[float] | None = None,
        aux: bool = False,
        labelled: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The CAMs of one (H, W, 3) uint8 ``image``: (cam, aux cam or None), each (1, k, h, w) in [0, 1], of
        the 0-based foreground ``classes`` (ascending; None: every class, k = C-1), at the size of ``x`` (or of
        the image: ``resize_maps`` them to the image). ``wsss cam``, validation and ``viz`` call this.

        Here the shared multi-scale step (``cam_passes(scales)``: ``infer.cam_scales`` by default) on
        ``cam_maps`` of ``x``, the network input (None: ``prepare_image(image, infer.cam_input_size)``, made
        here); only the asked classes' maps are fused and normalised. ``aux``: the aux CAM too (else it is
        dropped before any of that). ``labelled``: the maps are of the image's labels, so an empty map may be
        filled (``infer.cam_empty_fallback``). An image without labels (``classes`` empty) gets no network pass.

        A method whose CAMs come per decoded image from its labels (``cams.source == "per_image"``: CLIP-ES,
        ExCEL, WeCLIP+) gets instead its :meth:`labelled_cam_of_image` of ``classes`` (every class when None) as
        (1, k, H, W) at the image's size, on ``x``'s device when given, no aux CAM (``scales``, ``aux`` and
        ``labelled`` do not apply); it may raise ``JobStop`` to end a per-id job at this image."""
        if self.cams.source == "per_image":
            fg = np.arange(self.num_classes - 1) if classes is None else classes.cpu().numpy()
            maps = torch.from_numpy(self.labelled_cam_of_image(image, fg))[None]
            return (maps.to(x.device) if x is not None else maps), None
        if classes is not None and classes.numel() == 0:  # nothing labelled: every map is zero
            size = tuple(x.shape[-2:]) if x is not None else image.shape[:2]
            empty = torch.zeros((1, 0, *size), device=x.device if x is not None else self._device())
            return empty, (empty if aux else None)
        if x is None:
            from wsss.data.transforms import prepare_image

            inf = self.cfg.infer
            x = prepare_image(image, inf.cam_input_size, self._device(), max_side=inf.max_side)
        passes = self.cam_passes(scales, labelled=labelled)
        if classes is None:
            cam, cam_aux = passes(self.cam_maps, x)
        elif aux:
            cam, cam_aux = passes(self.cam_maps, x, classes=classes, compact=True)
        else:
            cam, cam_aux = passes(lambda v: self.cam_maps(v)[0], x, classes=classes, compact=True), None
        return cam, (cam_aux if aux else None)

    def labelled_cam_of_image(self, image: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """The maps (k, H, W) float32 in [0, 1] of an (H, W, 3) uint8 ``image`` for the 0-based foreground
        ``classes``: what :meth:`image_cams` returns for a method whose ``cams.source`` is ``"per_image"``, which
        implements this (CLIP-ES, ExCEL, WeCLIP+: from the labels' text)."""
        raise NotImplementedError(f"{self.name}: cams.source {self.cams.source!r} makes no maps per decoded image")

    def _device(self) -> torch.device:
        """Where the method's parameters are (the CPU for a method without any)."""
        first = next(self.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def crf_cam(self, cam: np.ndarray) -> np.ndarray:
        """The CAM (C-1, H, W) that PSA's CRF seeds read (``wsss pseudo --refine psa``); the CAM itself."""
        return cam

    def crf_refiner(self, job: RefineJob) -> Refiner:
        """What ``wsss pseudo --refine crf`` does with a run of this method (its saved CAMs are there). Here
        ToCo's label CRF: two CRFs with background ``cam.high_thre`` / ``cam.low_thre`` of the job's run,
        combined as in docs/methods/seco.md#pseudo-label, in the job's worker pool. A method with a CRF of its
        own overrides this (CLIP-ES: its CRF of the saved labelled maps)."""
        from wsss.cam.crf import crf_label_two_levels

        c = job.run.cfg.cam
        return lambda id, image, labels: PoolCall(
            crf_label_two_levels, (image, job.cam(id), labels, c.high_thre, c.low_thre)
        )

    @classmethod
    def tiny_overrides(cls) -> tuple[str, dict[str, object]] | None:
        """(a preset, dotted overrides) that make this method train two steps in seconds on the CPU: the
        contract test builds every registered method from it. None: the method is left out of it."""
        return None

    # -- training -------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        """``training_step``, called through ``forward`` so that DistributedDataParallel sees it; with the user's own
        masks in the batch of a classifier (``data.true_masks``), the CAMs' pixel term ``mask`` beside it."""
        terms = self.training_step(batch, step, active)
        if MASK_TERM in active and "target_weight" in batch and self.cams.source == "batch":
            terms[MASK_TERM] = self.mask_term(batch)
        return terms

    def mask_term(self, batch: dict[str, Any]) -> torch.Tensor:
        """The CAMs of the batch's masked photos taught their masks' pixels (``wsss.losses.cam_mask_loss``,
        docs/own-photos.md#how-many-masks), for every method whose CAMs come from ``cam_maps``.

        A forward of its own, on the masked photos alone (none in the batch: no forward, a 0 term), so that no
        method's ``training_step`` changes. BatchNorm layers use their running statistics in it: one or two
        masked photos are too few for batch statistics, and they would move the running ones twice per step."""
        from wsss.losses import cam_mask_loss  # lazy: the losses are not needed to load a method

        weight = batch["target_weight"]
        rows = torch.nonzero(weight > 0).flatten()
        if rows.numel() == 0:
            return weight.new_zeros((), dtype=torch.float32)
        with batchnorm_statistics_frozen(self):
            cam = self.cam_maps(batch["image"][rows])[0]
        labels = batch["labels"][rows]
        if cam.dim() != 4 or cam.shape[1] != labels.shape[1]:
            raise UsageError(
                f"method {self.name}: data.true_masks teaches a classifier's CAMs (one map per class), but its "
                f"cam_maps gives {tuple(cam.shape)} for {labels.shape[1]} classes; train it without data.true_masks"
            )
        return cam_mask_loss(cam, batch["target"][rows], labels, weight[rows])

    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after every optimiser step."""

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def keep_batchnorm_frozen(self, module: nn.Module) -> None:
        """Freeze every BatchNorm of ``module`` (eval statistics, no affine grads), and keep it so
        through later ``train()`` calls (DeepLab's and PSA's frozen BN, docs/methods/sccam.md#resnet38)."""
        self._frozen_bn.append(module)
        freeze_batchnorm(module)

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        for module in self._frozen_bn:
            freeze_batchnorm(module)
        return self

    def param_group_options(self) -> dict[str, dict[str, float]]:
        """Per parameter group: ``{"lr_mult": x}`` and optionally ``"weight_decay"`` (default: the config's)."""
        head = self.cfg.train.head_lr_mult
        return {
            "backbone": {"lr_mult": 1.0},
            "backbone_norm": {"lr_mult": 1.0},
            "head": {"lr_mult": head},
            "decoder": {"lr_mult": head},
        }

    def built_options(self) -> dict[str, Any]:
        """The ``options`` this build read off its start files (``model.pretrained``, ``start_files``): a CLIP's
        architecture and activation. Each checkpoint records them, so that a run whose files were moved since
        builds the same networks without them (its checkpoint then fills every weight)."""
        return {}

    def on_train_start(self, ctx: TrainContext) -> None:
        """Called once before the first training step of this process (also after a resume)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called when the training stream starts epoch ``epoch`` (0-based; also the resumed one)."""

    def lr_factor(self, epoch: int) -> float | None:
        """A per-epoch learning-rate rule on top of the poly schedule: every group's base lr is
        ``train.lr x lr_mult x factor`` from the start of ``epoch`` on (applied by the engine's
        ``EpochLRRule`` hook; RCA's decay, docs/methods/rca.md#training). None: no rule (the default)."""
        return None

    def set_training_length(self, epochs: float) -> None:
        """Called by the engine once, before a training writes anything, with its length in epochs
        (``train.max_iters`` over the training split's iterations per epoch; not whole for a training set by
        iterations). A method whose ``lr_factor`` steps are fractions of the training resolves them here, and
        refuses (ConfigError, naming the key) a rule that does not fit it. The default: nothing to plan."""

    def train_transform_views(self) -> Any:
        """Extra training views the method needs (None: the main crop only)."""
        return None

    # -- inference ------------------------------------------------------------------------
    def cam_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cam, aux cam) of an image batch, before any ReLU: a method whose ``cams.source`` is "batch" implements
        this. Every other method keeps this one, which refuses with one UsageError naming the method."""
        if self.cams.source == "batch":
            raise NotImplementedError(f"{self.name}: cams.source is 'batch' but the method does not implement cam_maps")
        raise UsageError(f"method {self.name} {NO_BATCH_CAMS[self.cams.source]}")

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
