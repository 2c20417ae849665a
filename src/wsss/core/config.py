"""The config schema: documented dataclasses, loaded from YAML with dotted command-line overrides.

A config file holds the sections below; every key but ``data.root`` has a default here, so a config only
states what it changes. The defaults are neutral, not one paper's settings: the plain optimiser
(momentum SGD on a poly schedule, no warm-up, the lr set to 0 past ``train.max_iters``), no data set
(``data.root`` must be given: a preset's ``_base_/datasets/*.yaml`` or ``data.root=DIR``), the toolkit's
runtime (device "auto", logs every 200 iterations); where a key has no neutral value (a crop, a backbone,
CAM levels) the default is the reference recipe's (ToCo's network and CAM post-processing, which the CAM
baseline and SeCo share), and each field says so. A paper's settings live in the presets: a preset
composes them with ``_base_`` from ``configs/_base_/`` (data sets, schedules, models, runtime) and states
what its method adds (:func:`read_preset`, docs/configs.md). Unknown keys are rejected with the closest
valid key suggested. The method-specific section ``options`` is validated against the dataclass the
method registers (``Method.Options``).

    wsss train configs/cam/synthetic_cpu.yaml data.root=data/synth train.max_iters=100
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from wsss.core.errors import ConfigError, MissingFileError

# The most nodes a YAML document may stand for once its aliases are expanded. An alias is read as a second
# reference to the same object, cheap until something copies the result: a "billion laughs" of nine anchors
# of nine aliases each, inside a free-form mapping (model.backbone_kwargs), passed the schema and then
# grew `wsss config show` to gigabytes in the deep copy of ``Config.to_dict`` (issue 58). The largest preset
# is a few hundred nodes.
MAX_YAML_NODES = 100_000


class YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float rule: ``1e-3`` and ``6E-5`` are numbers, and with a bound on
    what its aliases expand to (``MAX_YAML_NODES``; a recursive alias is refused too).

    PyYAML follows YAML 1.1, whose float pattern needs a dot in the mantissa (``1.0e-3``), so it reads
    ``1e-3`` as the string '1e-3'. Every config, override and run file is read with this loader.
    """

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """A ``yaml.YAMLError`` when the node graph ``root`` (aliases are shared nodes) expands to more than
    ``MAX_YAML_NODES`` nodes or into itself. Each distinct node is sized once, children first, without
    recursion (a deeply nested document must not exhaust Python's stack here)."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            on_path.discard(key)
            size[key] = min(MAX_YAML_NODES + 1, 1 + sum(size[id(c)] for c in children))
            if size[key] > MAX_YAML_NODES:
                raise yaml.YAMLError(
                    f"its aliases expand to more than {MAX_YAML_NODES:,} values ({node.start_mark.line + 1}:"
                    f"{node.start_mark.column + 1}); refused as a YAML alias bomb"
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise yaml.YAMLError(f"a recursive alias at line {node.start_mark.line + 1}; a config cannot hold one")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text with :class:`YAMLLoader` (YAML 1.2 floats, bounded aliases); the one way configs are
    read. A ``yaml.YAMLError`` for text that is not YAML or is nested deeper than Python's stack allows."""
    try:
        return yaml.load(text, Loader=YAMLLoader)
    except RecursionError:  # PyYAML's parser recurses per level: "[[[[...]]]]" 500 deep exhausts the stack
        raise yaml.YAMLError("nested too deeply (hundreds of levels); a config is a few levels deep") from None


@dataclass
class RunConfig:
    """``run``: where and how a run executes (``configs/_base_/default_runtime.yaml`` states these)."""

    dir: str = "runs/default"  # run directory: config.yaml, checkpoints/, metrics.jsonl, outputs
    seed: int = 0  # seeds random, numpy and torch (plus the rank), the data order and augmentation, k-means
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    amp: str = "none"  # "none", "bf16" or "fp16"; autocast on CUDA only, the CPU stays fp32
    threads: int = 0  # torch intra-op threads on the CPU; 0 = torch's default
    tensorboard: bool = True  # also log to RUN/tensorboard/ (rank 0) when the tensorboard package is installed


TRUE_MASKS_AUTO = "auto"  # data.true_masks: the data set's own masks


@dataclass
class DataConfig:
    """``data``: the data set (a folder in PASCAL VOC's layout, docs/datasets.md) and the training
    augmentation. ``configs/_base_/datasets/*.yaml`` state a data set's folder and splits."""

    # The data set's folder. No default: a config names it (a preset through its `_base_/datasets/*.yaml`) or the
    # command line does (`data.root=DIR`); a command that reads the data without one stops with one `error:` line.
    root: str | None = None
    train_split: str = "train"  # ROOT/ImageSets/Segmentation/<split>.txt: the images a run trains on
    val_split: str = "val"  # training-time validation split ("" = none; a split the data set lacks: none, a note)
    # Side of the square random crop (the reference recipe's 448, docs/methods/seco.md#data, step 3; no neutral value)
    crop_size: int = 448
    scale_range: tuple[float, float] = (0.5, 2.0)  # random rescale before the crop (seco.md#data, step 1)
    hflip: bool = True  # random horizontal flip
    color_jitter: bool = False  # ToCo's ColorJitter 0.4/0.4/0.2/0.1 with p 0.8 (SeCo's main input has none)
    num_workers: int = 2  # data loader processes (0 = in the main process)
    # Training-time validation resizes val images to this square (the reference recipe, seco.md#train-val; None =
    # the image's own size)
    val_resize: int | None = 448
    val_max_images: int | None = None  # cap on validation images per evaluation (None = all)
    # Longest side of a val image as the network sees it, after val_resize (None = no cap): one 6000x4000
    # photo at full size is minutes of attention and gigabytes; the score is taken at the mask's size.
    val_max_side: int | None = 1024
    # Segmentation targets: a directory of <id>.png label maps (255 = ignore), e.g. `wsss pseudo` output.
    # Methods that train on pseudo labels (deeplab, affinitynet) read it; it goes through the same
    # scale / flip / crop as the image (nearest, padding 255). None: image-level labels only. The dataset's own
    # masks (ROOT/SegmentationClass, or SegmentationClassAug) train the fully supervised ceiling of a route.
    pseudo_dir: str | None = None
    # The user's own masks of some train photos (docs/own-photos.md#how-many-masks): "auto" reads
    # ROOT/SegmentationClass(Aug), a folder its <id>.png. A photo that has one trains on it instead of its pseudo
    # label; without data.pseudo_dir every train photo needs one (a fully supervised stage). On a classifier's
    # training (a method with CAMs) the masks teach its CAMs their pixels: the loss term "mask" (weight
    # loss.weights.mask, 1 unless set), beside the image labels of every photo. None: no masks.
    true_masks: str | None = None  # TRUE_MASKS_AUTO or a folder
    # Weight of a masked photo's pixels in the segmentation loss (1: a pixel like any other; the loss is the mean
    # over the batch's labelled pixels, each weighted by its photo's weight); on a classifier, each masked photo's
    # weight in the mean of the "mask" term
    true_mask_weight: float = 1.0


@dataclass
class ModelConfig:
    """``model``: backbone and heads. The defaults are the reference network (ToCo's ViT-B/16 with a GMP
    classifier, an auxiliary classifier and an ASPP head); ``configs/_base_/models/*.yaml`` state others."""

    backbone: str = "vit_base_patch16_224"  # a timm model name
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model
    pretrained: str | None = None  # local weights (timm / torchvision state dict, a run's checkpoint); None = random
    freeze_pos_embed: bool = True  # ViT: positional embedding frozen (docs/methods/seco.md#backbone)
    aux_layer: int = -3  # ViT block whose raw output feeds the auxiliary classifier (seco.md#backbone)
    output_stride: int = 16  # CNN backbones: dilate the last stages to reach this stride
    pooling: str = "gmp"  # classifier pooling: "gmp" (ToCo/SeCo, seco.md#heads) or "gap"
    aux_classifier: bool = True  # a second classifier on the aux_layer block (ToCo's; its CAM feeds PTC)
    decoder: str = "aspp"  # segmentation head: "aspp" (SeCo), "largefov" (ToCo), "none" (seco.md#heads)
    decoder_dim: int = 512  # LargeFOV hidden width


@dataclass
class PARConfig:
    """``cam.par``: pixel-adaptive refinement of the online pseudo label (ToCo / SeCo)."""

    dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)  # docs/methods/seco.md#par
    num_iter: int = 10  # refinement iterations


@dataclass
class CamConfig:
    """``cam``: the CAMs of training-time validation and the pseudo labels made from them, shared by every
    method with CAMs. Levels are calibration (docs/configs.md#cam-levels-are-calibration): the defaults are
    ToCo's, for a pretrained ViT-B's CAMs. A method's own seed settings are its ``options`` (PSA's seeds:
    ``options.psa_alphas`` / ``options.psa_seed_stride`` of the methods that derive ``PSASeedOptions``)."""

    scales: tuple[float, ...] = (1.0, 0.5, 0.75, 1.5)  # training-time CAM scales (reference recipe, seco.md#defaults)
    high_thre: float = 0.7  # confident foreground at this level or above (docs/methods/seco.md#cam2label)
    low_thre: float = 0.25  # confident background below this level; 255 (ignored) between the two
    bkg_thre: float = 0.5  # the constant background score of a single-level label (validation, `wsss cam` seeds)
    par: PARConfig = field(default_factory=PARConfig)
    par_down_scale: int = 2  # the online pseudo label runs PAR at 1/2 resolution (seco.md#pseudo-label)


@dataclass
class LossConfig:
    """``loss``: the weight and the start of each of the method's loss terms (a preset lists them whole)."""

    # Weight of each loss term, and the iteration after which it is switched on (a term is active
    # when step > start_iters[term]; terms without an entry are active from the start). This is the
    # one place where the staged schedules of docs/methods/seco.md#staging live.
    weights: dict[str, float] = field(default_factory=lambda: {"cls": 1.0, "aux": 1.0, "seg": 0.1})
    start_iters: dict[str, int] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """``train``: the optimiser, its schedule and the training length. The defaults are the plain schedule,
    momentum SGD with poly decay and no warm-up (``PolyWarmupSGD``'s own defaults); a paper's schedule is a
    ``configs/_base_/schedules/*.yaml`` (ToCo / SeCo's warm-up AdamW, the official poly SGD, RCA's step SGD).
    The cadence keys (log / eval / ckpt) are ``configs/_base_/default_runtime.yaml``'s."""

    batch_size: int = 4  # the global batch, whatever the number of processes
    micro_batch: int | None = None  # images per process per forward (gradient accumulation); None = all
    max_iters: int = 20000  # training length in optimiser steps (ignored when ``epochs`` is set)
    # Training length in epochs of the training split: max_iters = round(epochs * (N // batch_size)),
    # N the images of data.train_split (drop_last batches, as the trainer's stream), resolved by the
    # trainer when it sees the data (``resolve_epochs``) and written to the run's config.yaml. The other
    # ``*_iters`` keys (warmup, log, eval, ckpt, loss.start_iters) stay in iterations; evaluation and
    # the checkpoint also happen at the last iteration, so eval_iters / ckpt_iters larger than the
    # resolved length mean "at the end only". Fractions are allowed (0.5 = half an epoch). None = max_iters.
    epochs: float | None = None
    warmup_iters: int = 0  # linear warm-up from lr x warmup_ratio over this many iterations (0 = none)
    # "sgd" (PolyWarmupSGD: momentum SGD, the plain one) or "adamw" (PolyWarmupAdamW, ToCo / SeCo, seco.md#optim)
    optimizer: str = "sgd"
    lr: float = 0.01  # the base lr (the backbone's; head groups get head_lr_mult x it)
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    warmup_ratio: float = 1e-6  # the warm-up starts at lr x this
    power: float = 0.9  # poly decay (1 - step / max_iters) ** power; 0 = constant (step schedules, RCA)
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)  # adamw only (torch's defaults)
    # lr multiplier of the method's head groups (classifier / projection / decoder); the 10x every paper here uses
    head_lr_mult: float = 10.0
    # Past max_iters the lr stops being updated instead of going to 0: the official poly optimisers' behaviour
    # (PSA's PolyOptimizer, ToCo / SeCo's PolyWarmupAdamW, kazuto1011's PolynomialLR); matters past the end only
    hold_lr_after_max: bool = False
    grad_clip: float | None = None  # clip the gradients' global norm to this (None = no clipping)
    log_iters: int = 200  # log the losses every this many iterations
    eval_iters: int = 2000  # validate every this many iterations (and at the last one)
    ckpt_iters: int = 1000  # write checkpoints/last.pt every this many iterations (and at the last one)


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters (docs/methods/seco.md#inference, docs/datasets.md#evaluation): the config section
    ``infer.crf`` and the named sets the anchors use. One class for both, so a config section is passed to
    ``dense_crf`` as it is.

    - ``SEG``: segmentation inference of ToCo/SeCo (10; 1,1; 121,5,4), the default.
    - ``TOCO_LABEL``: ToCo's CRF pseudo labels, ``infer_cam_crf_label`` (10; 3,3; 36,3,4).
    - ``PSA``: PSA / SC-CAM / RCA CAM CRF (10; 3,3; 80,13,10).

    Order in the tuples above: iters; pos_xy_std, pos_w; bi_xy_std, bi_rgb_std, bi_w.
    """

    iters: int = 10
    pos_xy_std: float = 1.0
    pos_w: float = 1.0
    bi_xy_std: float = 121.0
    bi_rgb_std: float = 5.0
    bi_w: float = 4.0

    SEG: ClassVar[CRFParams]
    TOCO_LABEL: ClassVar[CRFParams]
    PSA: ClassVar[CRFParams]

    def as_kwargs(self) -> dict[str, Any]:
        """The parameters as keyword arguments of ``wsss.cam.crf.dense_crf``."""
        return dataclasses.asdict(self)


CRFParams.SEG = CRFParams(iters=10, pos_xy_std=1, pos_w=1, bi_xy_std=121, bi_rgb_std=5, bi_w=4)
CRFParams.TOCO_LABEL = CRFParams(iters=10, pos_xy_std=3, pos_w=3, bi_xy_std=36, bi_rgb_std=3, bi_w=4)
CRFParams.PSA = CRFParams(iters=10, pos_xy_std=3, pos_w=3, bi_xy_std=80, bi_rgb_std=13, bi_w=10)


@dataclass
class InferConfig:
    """``infer``: inference of the trained run (`wsss cam`, `predict`, `pseudo`): scales, fusion, CRF. The
    defaults are the reference recipe's (ToCo / SeCo's segmentation inference)."""

    scales: tuple[float, ...] = (1.0, 1.25, 1.5)  # seg inference (docs/methods/seco.md#inference)
    square_size: int | None = None  # SeCo's VOC script resizes each scale to int(448*s) squares
    cam_scales: tuple[float, ...] = (1.0, 0.5, 1.5)  # `wsss cam` (seco.md#cam-seeds)
    cam_input_size: int | None = None  # resize the CAM input to a square first (ToCo/SeCo: 448)
    # `wsss cam` fusion (docs/methods/seco.md#ms-cam / docs/methods/sccam.md#cam-inference): flips "max"-fused and
    # min-max normalised (ToCo/SeCo), or PSA / SC-CAM's "sum" and "max" (divided by the max only; golden
    # psa_infer_cls.npz, sccam_infer_cls_*.npz)
    cam_flip_fuse: str = "max"
    cam_normalize: str = "minmax"
    # A labelled class the classifier does not see in a photo has a negative map at every pixel, and the ReLU of
    # every official code (docs/methods/seco.md#ms-cam) makes it zero: no seed names the class. "minmax" / "peak_odds":
    # such a map is made from its sum before the ReLUs (``cam.multiscale.fill_empty_maps``; `wsss cam`, `pseudo`,
    # training-time validation; labelled classes only). Not in any official code: "none" in the paper presets
    # (issue 31: 0.2-1 % of RCA's and SC-CAM's labelled maps on ccp-dev were empty; BENCHMARKS.md "ccp-dev").
    cam_empty_fallback: str = "none"
    crf: CRFParams = field(default_factory=CRFParams)
    # processes for DenseCRF: -1 = one per core the command may use (shared among a job's local processes), 0 = in
    # the main process; the network forwards the next photo while the pool runs the CRFs (cam.crf.crf_workers)
    crf_workers: int = -1
    # `wsss cam` / `predict` / `viz`: longest side of the image the network sees at scale 1 (None = no cap;
    # VOC and COCO images are at most 640): a larger photo is shrunk first, its outputs keep its size
    max_side: int | None = 1024
    batch_size: int = 1


@dataclass
class Config:
    """A whole config: the method and the sections above (docs/configs.md)."""

    method: str = "cam"  # a registered method (`wsss methods` lists them)
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    options: dict[str, Any] = field(default_factory=dict)  # method-specific, see Method.Options
    # modules imported before the method is looked up: a method, backbone or refiner outside the package
    custom_imports: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


def iterations_per_epoch(n_images: int, batch_size: int) -> int:
    """Optimiser steps in one pass over ``n_images`` with global ``batch_size`` (drop_last; at least 1)."""
    return max(1, n_images // batch_size)


def resolve_epochs(cfg: Config, n_images: int) -> Config:
    """``cfg`` with ``train.max_iters`` computed from ``train.epochs`` for a split of ``n_images``.

    A copy is returned (the caller's config is left alone); without ``train.epochs`` it is ``cfg``.
    """
    t = cfg.train
    if t.epochs is None:
        return cfg
    if not t.epochs > 0:
        raise ConfigError(f"train.epochs must be positive, got {t.epochs}")
    iters = max(1, round(t.epochs * iterations_per_epoch(n_images, t.batch_size)))
    return dataclasses.replace(cfg, train=dataclasses.replace(t, max_iters=iters))


# --------------------------------------------------------------------------------------------
# Conversion between plain dicts and the dataclasses, with validation


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _suggest(key: str, valid: list[str], where: str = "") -> str:
    """The closest valid key, with its full dotted path (``train.max_iters``, not ``max_iters``)."""
    prefix = f"{where}." if where else ""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    return f" (valid keys in {where or 'the top level'}: {', '.join(sorted(valid))})"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and ill-typed values raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'{_suggest(key, names, where)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


BASE_KEY = "_base_"  # a preset's parent preset(s), paths relative to the preset's folder
DELETE_KEY = "_delete_"  # `section: {_delete_: true, ...}` replaces the inherited mapping instead of merging into it
REPLACED_WHOLE = ("weights", "start_iters")  # loss.*: the set of loss terms is stated whole, never merged


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: mappings merge key by key (mmseg's rule), any other value replaces.

    Exceptions: ``loss.weights`` / ``loss.start_iters`` replace the inherited mapping (a preset lists
    its loss terms), and so does a mapping holding ``_delete_: true`` (the key itself is dropped).
    """
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and DELETE_KEY in v:
            replace = v[DELETE_KEY]
            if not isinstance(replace, bool):
                raise ConfigError(f"'{k}.{DELETE_KEY}' must be true or false, got {replace!r}")
            v = {kk: vv for kk, vv in v.items() if kk != DELETE_KEY}
            if replace:
                out[k] = _merge({}, v)
                continue
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in REPLACED_WHOLE:
            out[k] = _merge(out[k], v)
        else:
            out[k] = _merge({}, v) if isinstance(v, dict) else v  # a nested _delete_ is consumed too
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], parsed value); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': cannot parse value ({e})") from e
    return key.split("."), value


def set_dotted(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k1][k2]...`` = ``value`` for ``keys`` = [k1, k2, ...], creating sections on the way."""
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{k}' is not a section")
    node[keys[-1]] = value


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    return _move_keys(loaded)


# Keys that left the shared schema for a method's options: (section, key) -> (new section, key, the schema's
# default before the move). PSA's seed settings are options of the methods that make PSA seeds from their CAMs
# (``wsss.methods.base.PSASeedOptions``). A file that still has one (a run's config.yaml written before the move
# holds every key) loads: at the old default the key is dropped (the option has the same default), another value
# moves to the options (where a method without PSA seeds names it as an unknown option).
MOVED_KEYS: dict[tuple[str, str], tuple[str, str, Any]] = {
    ("cam", "psa_alphas"): ("options", "psa_alphas", [4.0, 32.0]),
    ("cam", "psa_seed_stride"): ("options", "psa_seed_stride", 1),
}


def _move_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the keys of ``MOVED_KEYS`` dropped or moved (a copy where one is found)."""
    for (section, key), (new_section, new_key, old_default) in MOVED_KEYS.items():
        old = data.get(section)
        if not isinstance(old, dict) or key not in old:
            continue
        data = {**data, section: {k: v for k, v in old.items() if k != key}}
        value = old[key]
        if _plain_equal(value, old_default):
            continue
        target = data.get(new_section)
        data[new_section] = {**(target if isinstance(target, dict) else {}), new_key: value}
    return data


def _plain_equal(a: Any, b: Any) -> bool:
    return _to_plain(a) == _to_plain(b)


# `data.root` has no default: the one line a command that needs the data set stops with when a config has none.
DATA_ROOT_UNSET = (
    "data.root is not set: name the data set's folder in the config (data: {root: DIR}, or a "
    "_base_/datasets/*.yaml among its _base_) or pass data.root=DIR"
)


def require_data_root(cfg: Config) -> str:
    """``cfg.data.root``, or ConfigError :data:`DATA_ROOT_UNSET` when the config names no data set."""
    if cfg.data.root is None:
        raise ConfigError(DATA_ROOT_UNSET)
    return cfg.data.root


def _base_paths(path: Path, own: dict[str, Any]) -> list[Path]:
    """The presets ``path`` names under ``_base_`` (one path or a list), relative to its folder."""
    bases = own.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths, got {bases!r}")
    found = []
    for base in bases:
        base_path = path.parent / Path(base).expanduser()
        if not base_path.is_file():
            raise ConfigError(f"{path}: {BASE_KEY} '{base}' not found ({base_path})")
        found.append(base_path)
    return found


def read_preset(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings a YAML preset states, with its ``_base_`` presets merged under them.

    ``_base_: ../cam/voc.yaml`` (or a list, merged in order, later ones winning: mmseg's rule) names the
    presets and the ``configs/_base_/`` parts this one is composed of; the file's own keys are merged over
    them with :func:`_merge`. A mapping holding ``_delete_: true`` replaces the one it is merged over: in the
    file, what its bases built; in a base, also what the bases listed before it in the same ``_base_`` built.
    A missing base or a cycle is a ConfigError naming the file; each file's own keys are validated against
    the schema, so a wrong key is blamed on the file that has it. The result holds no ``_base_``: it is what
    the preset would be written out in full, before the schema's defaults and the command-line overrides.
    """
    return _merge({}, _resolve_preset(Path(path), _chain))  # the _delete_ marks consumed


def _resolve_preset(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """:func:`read_preset`'s merge with the ``_delete_: true`` marks of the file and of its bases kept, so
    that the file that names this one as a base applies them over its earlier bases."""
    chain = (*chain, path.resolve())
    own = _read_yaml_mapping(path)
    bases = _base_paths(path, own)
    try:
        from_dict(Config, _merge(Config().to_dict(), own))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    merged: dict[str, Any] = {}
    marks = _delete_marks(own)
    for base in bases:
        if base.resolve() in chain:
            cycle = " -> ".join(str(p) for p in (*chain[chain.index(base.resolve()) :], base.resolve()))
            raise ConfigError(f"{path}: {BASE_KEY} cycle: {cycle}")
        layer = _resolve_preset(base, chain)
        marks += _delete_marks(layer)
        merged = _merge(merged, layer)
    return _with_delete_marks(_merge(merged, own), marks)


def _delete_marks(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key paths of the mappings in ``data`` that hold ``_delete_: true``."""
    found = []
    for k, v in data.items():
        if isinstance(v, dict):
            if v.get(DELETE_KEY) is True:
                found.append((*prefix, k))
            found += _delete_marks(v, (*prefix, k))
    return found


def _with_delete_marks(data: dict[str, Any], marks: list[tuple[str, ...]]) -> dict[str, Any]:
    """``data`` with ``_delete_: true`` put back into the mapping at each path of ``marks`` (copies on the way)."""
    for path in marks:
        data = _mark_path(data, path)
    return data


def _mark_path(node: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    child = node.get(path[0])
    if not isinstance(child, dict):
        return node
    child = {**child, DELETE_KEY: True} if len(path) == 1 else _mark_path(child, path[1:])
    return {**node, path[0]: child}


def run_config_path(run_dir: str | Path, hint: str = "") -> Path:
    """``RUN/config.yaml``, the settings a run directory was trained with; MissingFileError (with
    ``hint``, e.g. what to do instead) when ``run_dir`` is not a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise MissingFileError(f"{path}: not a run directory (no config.yaml){hint}")
    return path


def load_run_config(run_dir: str | Path, hint: str = "") -> Config:
    """The :class:`Config` of a run directory (:func:`run_config_path`)."""
    return load_config(run_config_path(run_dir, hint))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or the defaults) and apply dotted ``key=value`` overrides.

    The file's ``_base_`` presets are merged under it first (:func:`read_preset`), the overrides last.
    An error in the file names the file; an error in an override names the override (the file is
    validated first, then each override on top of it).
    """
    data: dict[str, Any] = {}
    defaults = Config().to_dict()
    if path is not None:
        path = Path(path)
        data = read_preset(path)
        try:
            from_dict(Config, _merge(defaults, data))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    try:
        check_settings(from_dict(Config, _merge(defaults, data)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from e
    if not overrides:
        return from_dict(Config, _merge(defaults, data))
    for text in overrides:
        keys, value = parse_override(text)
        try:
            set_dotted(data, keys, value)
            check_settings(from_dict(Config, _merge(defaults, data)))
        except ConfigError as e:
            raise ConfigError(f"command-line override '{text}': {e}") from e
    return from_dict(Config, _merge(defaults, data))


# Settings that count something (images, steps, pixels) and make no sense at 0 or below: a
# max_iters of 0 would "train" nothing and leave no checkpoint, a batch of -4 fails deep inside the
# loader, a period of 0 divides by zero. Checked when a config is loaded (``check_settings``).
POSITIVE_SETTINGS = (
    "train.batch_size", "train.max_iters", "train.log_iters", "train.eval_iters", "train.ckpt_iters",
    "train.micro_batch", "data.crop_size", "data.val_resize", "data.val_max_images", "data.val_max_side",
    "infer.batch_size", "infer.max_side", "infer.cam_input_size", "infer.square_size",
)  # fmt: skip
# Settings that are an image side in pixels: above the largest side a JPEG can have (65535) no image or crop
# is meant, and a typo like data.crop_size=100000000000 failed after the training had started ("ValueError:
# array is too big", issue 58). Checked with the positive settings.
SIDE_SETTINGS = ("data.crop_size", "data.val_resize", "data.val_max_side", "infer.max_side", "infer.cam_input_size",
                 "infer.square_size")  # fmt: skip
MAX_SIDE = 65535
NON_NEGATIVE_SETTINGS = ("train.warmup_iters", "data.num_workers", "run.threads")
AUTO_SETTINGS = ("infer.crf_workers",)  # -1 = "as many as the machine gives", else 0 or more
# Settings with a fixed set of values (the functions that read them refuse others, but only when they run).
CAM_EMPTY_FALLBACKS = ("none", "minmax", "peak_odds")  # infer.cam_empty_fallback (cam.multiscale.fill_empty_maps)
CHOICE_SETTINGS = {"infer.cam_empty_fallback": CAM_EMPTY_FALLBACKS}


def _get_dotted(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


# Levels of the normalised CAMs (maps in [0, 1]): a level of 2 or -1 turns every seed into background, or none
# (issue 42); checked when a config is loaded and by the command-line flags that set them (``check_value``).
LEVEL_SETTINGS = ("cam.high_thre", "cam.low_thre", "cam.bkg_thre")
# Rates and sizes of the optimiser that must be a positive (finite) number: NaN or -1 fails in torch's optimiser.
POSITIVE_NUMBER_SETTINGS = ("train.lr", "train.head_lr_mult")
SCALE_SETTINGS = ("cam.scales", "infer.scales", "infer.cam_scales")


def check_value(key: str, value: Any) -> Any:
    """``value`` if it is valid for the setting ``key``, else ConfigError ``"<key> must be ..., got <value>"``.

    The one check of a setting, used by :func:`check_settings` (config files and overrides) and by the
    command-line flags that set a setting directly (``wsss cam --bkg-thre``, ``wsss predict --scales``).
    """
    if key in POSITIVE_SETTINGS and value is not None and value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value}")
    if key in SIDE_SETTINGS and value is not None and value > MAX_SIDE:
        raise ConfigError(f"{key} must be a side of at most {MAX_SIDE} pixels (a JPEG's largest), got {value}")
    if key in NON_NEGATIVE_SETTINGS and value is not None and value < 0:
        raise ConfigError(f"{key} must be 0 or more, got {value}")
    if key in AUTO_SETTINGS and value is not None and value < -1:
        raise ConfigError(f"{key} must be -1 (every core) or 0 or more, got {value}")
    if key in CHOICE_SETTINGS and value not in CHOICE_SETTINGS[key]:
        raise ConfigError(f"{key} must be one of {', '.join(CHOICE_SETTINGS[key])}, got {value!r}")
    if key in LEVEL_SETTINGS and not 0.0 <= value <= 1.0:  # NaN fails both comparisons
        raise ConfigError(f"{key} must be a level between 0 and 1 (the CAMs are normalised to [0, 1]), got {value}")
    if key in POSITIVE_NUMBER_SETTINGS and not 0.0 < value < float("inf"):
        raise ConfigError(f"{key} must be a positive number, got {value}")
    if key in SCALE_SETTINGS and (not value or any(not 0.0 < s < float("inf") for s in value)):
        raise ConfigError(f"{key} must be a non-empty list of positive scales, got {list(value)}")
    return value


def check_settings(cfg: Config) -> Config:
    """ConfigError naming the first setting of ``POSITIVE_SETTINGS`` at 0 or below (None, where
    allowed, means "not set"), of ``SIDE_SETTINGS`` above ``MAX_SIDE``, of ``NON_NEGATIVE_SETTINGS`` below 0,
    of ``AUTO_SETTINGS`` below -1, of ``CHOICE_SETTINGS`` outside its values, a level outside [0, 1]
    (``LEVEL_SETTINGS``), a learning rate that is not a positive number and a scale list with a scale that is not
    positive. Returns ``cfg``."""
    keys = (*POSITIVE_SETTINGS, *NON_NEGATIVE_SETTINGS, *AUTO_SETTINGS, *CHOICE_SETTINGS, *LEVEL_SETTINGS,
            *POSITIVE_NUMBER_SETTINGS, *SCALE_SETTINGS)  # fmt: skip
    for key in keys:
        check_value(key, _get_dotted(cfg, key))
    return cfg


def resolve_paths(cfg: Config) -> Config:
    """Make the run's input paths absolute (``data.root``, ``data.pseudo_dir``, a ``data.true_masks`` folder,
    ``model.pretrained`` when it is a file), so a run's ``config.yaml`` works from any directory. In place;
    returns ``cfg``.
    ConfigError :data:`DATA_ROOT_UNSET` when ``data.root`` is not set."""
    cfg.data.root = str(Path(require_data_root(cfg)).expanduser().resolve())
    if cfg.data.pseudo_dir:
        cfg.data.pseudo_dir = str(Path(cfg.data.pseudo_dir).expanduser().resolve())
    if cfg.data.true_masks and cfg.data.true_masks != TRUE_MASKS_AUTO:
        cfg.data.true_masks = str(Path(cfg.data.true_masks).expanduser().resolve())
    if cfg.model.pretrained and Path(cfg.model.pretrained).expanduser().exists():
        cfg.model.pretrained = str(Path(cfg.model.pretrained).expanduser().resolve())
    return cfg


def dump_config(cfg: Config) -> str:
    """``cfg`` in full as YAML: every key, no ``_base_`` (what ``wsss config show`` prints and a run's
    ``config.yaml`` holds, so a run is reproduced without the presets it came from)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str | Path) -> None:
    from wsss.core.files import atomic_write

    with atomic_write(path, "w") as f:
        f.write(dump_config(cfg))


# -- the config diff of a resume (``wsss train`` on a run directory with a checkpoint) ---------------------

# Settings that change how a run is computed, not what it computes: a resume may change them freely.
EXECUTION_KEYS = frozenset({"run.dir", "run.device", "run.threads", "run.tensorboard", "data.num_workers"})
CONFIG_CHANGES_FILE = "config_changes.jsonl"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("weights", "start_iters", "backbone_kwargs"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} for every setting that differs, execution keys excepted."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    return {
        k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in EXECUTION_KEYS
    }


def check_config_change(
    cfg: Config, *, allow: bool = False, verify: Callable[[dict[str, Any], Path], None] | None = None
) -> dict[str, tuple[Any, Any]]:
    """Before resuming: compare ``cfg`` with the run's saved ``config.yaml``.

    A run with a checkpoint was trained with its saved settings, so other settings are refused (a
    ConfigError naming every differing key) unless ``allow``; an allowed change is appended to
    ``RUN/config_changes.jsonl`` (time, checkpoint step, old and new values). Returns the changes.
    ``verify(state, path)`` is called with ``last.pt`` before the change is recorded: the engine checks
    there that the checkpoint resumes under the new settings, so a change that fails is never recorded.
    """
    # imported here: these helpers sit at the end of the schema module, whose top the YAML loading owns
    import json
    import time
    from itertools import chain

    from wsss.core.checkpoint import load_checkpoint
    from wsss.core.distributed import is_main_process

    run_dir = Path(cfg.run.dir)
    saved = run_dir / "config.yaml"
    # a checkpoint of the run, or of one of its rounds (SC-CAM); not a walk of the whole run folder
    ckpt = next(chain(run_dir.glob("checkpoints/*.pt"), run_dir.glob("round_*/checkpoints/*.pt")), None)
    if not saved.is_file() or ckpt is None:
        return {}
    old = resolve_paths(load_config(saved))  # an old run's relative paths were read from the current directory
    changes = config_changes(old, cfg)
    if cfg.train.epochs is not None:
        # max_iters follows from train.epochs (compared itself): a saved config holds it resolved (the
        # trainer's) or not (the SC-CAM driver's), and neither is a change of settings
        changes.pop("train.max_iters", None)
    if not changes:
        return {}
    listing = "; ".join(f"{k}: {old_v!r} -> {new_v!r}" for k, (old_v, new_v) in changes.items())
    if not allow:
        raise ConfigError(
            f"{saved}: this run was trained with other settings ({listing}); resuming would mix them. Use "
            "another run.dir, or pass --allow-config-change to resume with the new settings (recorded in "
            f"{run_dir / CONFIG_CHANGES_FILE})"
        )
    last = run_dir / "checkpoints" / "last.pt"
    step = None
    if last.is_file():
        state = load_checkpoint(last)
        step = state.get("step")
        if verify is not None:
            verify(state, last)
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step,
              "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}}  # fmt: skip
    if is_main_process():
        with open(run_dir / CONFIG_CHANGES_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{run_dir}: resuming with changed settings ({listing}); recorded in {run_dir / CONFIG_CHANGES_FILE}")
    return changes
