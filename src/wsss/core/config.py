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
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from wsss.core.errors import ConfigError, MissingFileError

# The most nodes a YAML document may stand for once its aliases are expanded. An alias is read as a second
# reference to the same object, cheap until something copies the result: a "billion laughs" of nine anchors
# of nine aliases each, inside a free-form mapping (model.backbone_kwargs), passed the schema and then
# grew `wsss config show` to gigabytes in the deep copy of ``Config.to_dict``. The largest preset
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


YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
YAMLLoader.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789."))


def _construct_int(loader: YAMLLoader, node: yaml.ScalarNode) -> int:
    """An integer, or a YAML error at its place when it has more digits than Python converts (a ValueError with a
    traceback before)."""
    try:
        return loader.construct_yaml_int(node)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {len(str(node.value))} digits, more than {sys.get_int_max_str_digits()}",
            node.start_mark,
        ) from None  # fmt: skip


YAMLLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def yaml_load(text: str) -> Any:
    """Parse YAML text with :class:`YAMLLoader` (YAML 1.2 floats, bounded aliases); the one way configs are
    read. A ``yaml.YAMLError`` for text that is not YAML or is nested deeper than Python's stack allows."""
    try:
        return yaml.load(text, Loader=YAMLLoader)
    except RecursionError:  # PyYAML's parser recurses per level: "[[[[...]]]]" 500 deep exhausts the stack
        raise yaml.YAMLError("nested too deeply (hundreds of levels); a config is a few levels deep") from None


# --------------------------------------------------------------------------------------------
# The valid values of a setting, declared beside it in the schema (a field's ``metadata["valid"]``)


@dataclass(frozen=True)
class Valid:
    """What values a setting takes: a number in ``[lo, hi]`` (an end left out by ``lo_open`` / ``hi_open``; the
    default ``hi`` is infinity, left out: a number is finite), one of ``choices``, or a string matching
    ``pattern``. A list or tuple setting holds values of that kind each, at least one of them (``nonempty``), the
    first no larger than the second (``ascending``: a pair that is a range); a mapping setting holds them as its
    values. ``text`` is what the value must be, for the message (default: the range written out).

    Declared with :func:`setting` beside the field; :func:`check_value` is the one check of it, run by
    :func:`from_dict` on every config file, run ``config.yaml``, override and method ``options`` it builds, by
    :func:`check_settings` on a Config built in code, and by the command-line flags that set a key."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = True
    choices: tuple[Any, ...] = ()
    pattern: str = ""
    nonempty: bool = False
    ascending: bool = False
    text: str = ""

    def describe(self) -> str:
        """What a value must be, in words ("a number in (0, 1]", "one of sgd, adamw")."""
        if self.text:
            return self.text
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        lo = "-inf" if self.lo == -math.inf else f"{self.lo:g}"
        hi = "inf" if self.hi == math.inf else f"{self.hi:g}"
        return f"a number in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def admits(self, value: Any) -> bool:
        """Whether one value (not a list's) is valid."""
        if self.choices:
            return value in self.choices
        if self.pattern:
            return isinstance(value, str) and re.fullmatch(self.pattern, value) is not None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        above = self.lo < value if self.lo_open else self.lo <= value  # NaN fails every comparison
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, **valid: Any) -> Any:
    """A schema field with its valid values (:class:`Valid`'s keywords) in ``metadata["valid"]``."""
    meta = {"valid": Valid(**valid)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# the kinds of setting most fields are
POSITIVE = {"lo": 1, "text": "a positive integer"}  # a count, a size, a period
NON_NEGATIVE = {"lo": 0, "text": "0 or more"}
POSITIVE_NUMBER = {"lo": 0, "lo_open": True, "text": "a positive number"}
NON_NEGATIVE_NUMBER = {"lo": 0, "text": "a number of 0 or more"}
# Levels of the normalised CAMs (maps in [0, 1]): a level of 2 or -1 turns every seed into background, or none
LEVEL = {"lo": 0, "hi": 1, "hi_open": False,
         "text": "a level between 0 and 1 (the CAMs are normalised to [0, 1])"}  # fmt: skip
# An image side in pixels: above the largest side a JPEG can have (65535) no image or crop is meant, and a typo
# like data.crop_size=100000000000 failed after the training had started ("ValueError: array is too big")
MAX_SIDE = 65535
SIDE = {"lo": 1, "hi": MAX_SIDE, "hi_open": False, "text": f"a side of 1 to {MAX_SIDE} pixels (a JPEG's largest)"}
SCALES = {"lo": 0, "lo_open": True, "nonempty": True, "text": "a non-empty list of positive scales"}
FRACTION = {"lo": 0, "hi": 1, "hi_open": False, "text": "a number in [0, 1]"}
SHARE = {"lo": 0, "lo_open": True, "hi": 1, "hi_open": False, "text": "a number in (0, 1]"}  # a part of a whole
# a random crop's area range (the smallest and the largest share of the image)
AREA_RANGE = {**SHARE, "ascending": True, "text": "two area fractions in (0, 1], the smaller first"}
POSITIVE_INTS = {"lo": 1, "nonempty": True, "text": "a non-empty list of positive integers"}
SEED = {"lo": 0, "hi": 2**32 - 1, "hi_open": False, "text": "an integer from 0 to 4294967295 (numpy's seeds)"}

CAM_EMPTY_FALLBACKS = ("none", "minmax", "peak_odds")  # infer.cam_empty_fallback (cam.multiscale.fill_empty_maps)
# How maps are fused (infer.cam_flip_fuse, infer.flip_fuse, infer.scale_fuse) and the segmentation inference's other
# steps (infer.scale_resize, infer.fuse_at): cam.multiscale's
FUSIONS = ("max", "sum", "mean")
SCALE_RESIZES = ("size", "factor")
FUSE_AT = ("image", "grid")


@dataclass
class RunConfig:
    """``run``: where and how a run executes (``configs/_base_/default_runtime.yaml`` states these)."""

    dir: str = "runs/default"  # run directory: config.yaml, checkpoints/, metrics.jsonl, outputs
    # seeds random, numpy and torch (plus the rank), the data order and augmentation, k-means
    seed: int = setting(0, **SEED)
    # cuda: if available
    device: str = setting("auto", pattern=r"auto|cpu|cuda(:\d+)?", text="auto, cpu, cuda or cuda:N")
    # "none", "bf16" or "fp16"; autocast on CUDA only, the CPU stays fp32
    amp: str = setting("none", choices=("none", "bf16", "fp16"))
    threads: int = setting(0, **NON_NEGATIVE)  # torch intra-op threads on the CPU; 0 = torch's default
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
    crop_size: int = setting(448, **SIDE)
    # random rescale before the crop (seco.md#data, step 1): the smallest and the largest scale
    scale_range: tuple[float, float] = setting(
        (0.5, 2.0), lo=0, lo_open=True, ascending=True, text="two positive scales, the smaller first"
    )
    hflip: bool = True  # random horizontal flip
    color_jitter: bool = False  # ToCo's ColorJitter 0.4/0.4/0.2/0.1 with p 0.8 (SeCo's main input has none)
    num_workers: int = setting(2, **NON_NEGATIVE)  # data loader processes (0 = in the main process)
    # Training-time validation resizes val images to this square (the reference recipe, seco.md#train-val; None =
    # the image's own size)
    val_resize: int | None = setting(448, **SIDE)
    val_max_images: int | None = setting(None, **POSITIVE)  # cap on validation images per evaluation (None = all)
    # Longest side of a val image as the network sees it, after val_resize (None = no cap): one 6000x4000
    # photo at full size is minutes of attention and gigabytes; the score is taken at the mask's size.
    val_max_side: int | None = setting(1024, **SIDE)
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
    true_mask_weight: float = setting(1.0, **NON_NEGATIVE_NUMBER)


@dataclass
class ModelConfig:
    """``model``: backbone and heads. The defaults are the reference network (ToCo's ViT-B/16 with a GMP
    classifier, an auxiliary classifier and an ASPP head); ``configs/_base_/models/*.yaml`` state others."""

    backbone: str = "vit_base_patch16_224"  # a timm model name
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model
    pretrained: str | None = None  # local weights (timm / torchvision state dict, a run's checkpoint); None = random
    freeze_pos_embed: bool = True  # ViT: positional embedding frozen (docs/methods/seco.md#backbone)
    aux_layer: int = -3  # ViT block whose raw output feeds the auxiliary classifier (seco.md#backbone)
    output_stride: int = setting(16, choices=(8, 16, 32))  # CNN backbones: dilate the last stages to reach this stride
    # classifier pooling: "gmp" (ToCo/SeCo, seco.md#heads) or "gap"
    pooling: str = setting("gmp", choices=("gmp", "gap"))
    aux_classifier: bool = True  # a second classifier on the aux_layer block (ToCo's; its CAM feeds PTC)
    # segmentation head: "aspp" (SeCo), "largefov" (ToCo), "none" (seco.md#heads)
    decoder: str = setting("aspp", choices=("aspp", "largefov", "none"))
    decoder_dim: int = setting(512, **POSITIVE)  # LargeFOV hidden width


@dataclass
class PARConfig:
    """``cam.par``: pixel-adaptive refinement of the online pseudo label (ToCo / SeCo)."""

    dilations: tuple[int, ...] = setting((1, 2, 4, 8, 12, 24), **POSITIVE_INTS)  # docs/methods/seco.md#par
    num_iter: int = setting(10, **NON_NEGATIVE)  # refinement iterations


@dataclass
class CamConfig:
    """``cam``: the CAMs of training-time validation and the pseudo labels made from them, shared by every
    method with CAMs. Levels are calibration (docs/configs.md#cam-levels-are-calibration): the defaults are
    ToCo's, for a pretrained ViT-B's CAMs. A method's own seed settings are its ``options`` (PSA's seeds:
    ``options.psa_alphas`` / ``options.psa_seed_stride`` of the methods that derive ``PSASeedOptions``)."""

    # training-time CAM scales (reference recipe, seco.md#defaults)
    scales: tuple[float, ...] = setting((1.0, 0.5, 0.75, 1.5), **SCALES)
    # confident foreground at this level or above (docs/methods/seco.md#cam2label)
    high_thre: float = setting(0.7, **LEVEL)
    low_thre: float = setting(0.25, **LEVEL)  # confident background below this level; 255 (ignored) between the two
    # the constant background score of a single-level label (validation, `wsss cam` seeds)
    bkg_thre: float = setting(0.5, **LEVEL)
    par: PARConfig = field(default_factory=PARConfig)
    # the online pseudo label runs PAR at 1/2 resolution (seco.md#pseudo-label)
    par_down_scale: int = setting(2, **POSITIVE)


@dataclass
class LossConfig:
    """``loss``: the weight and the start of each of the method's loss terms (a preset lists them whole)."""

    # Weight of each loss term, and the iteration after which it is switched on (a term is active
    # when step > start_iters[term]; terms without an entry are active from the start). This is the
    # one place where the staged schedules of docs/methods/seco.md#staging live.
    weights: dict[str, float] = setting(factory=lambda: {"cls": 1.0, "aux": 1.0, "seg": 0.1}, **NON_NEGATIVE_NUMBER)
    start_iters: dict[str, int] = setting(factory=dict, **NON_NEGATIVE)


@dataclass
class TrainConfig:
    """``train``: the optimiser, its schedule and the training length. The defaults are the plain schedule,
    momentum SGD with poly decay and no warm-up (``PolyWarmupSGD``'s own defaults); a paper's schedule is a
    ``configs/_base_/schedules/*.yaml`` (ToCo / SeCo's warm-up AdamW, the official poly SGD, RCA's step SGD).
    The cadence keys (log / eval / ckpt) are ``configs/_base_/default_runtime.yaml``'s."""

    batch_size: int = setting(4, **POSITIVE)  # the global batch, whatever the number of processes
    # images per process per forward (gradient accumulation); None = all
    micro_batch: int | None = setting(None, **POSITIVE)
    max_iters: int = setting(20000, **POSITIVE)  # training length in optimiser steps (ignored when ``epochs`` is set)
    # Training length in epochs of the training split: max_iters = round(epochs * (N // batch_size)),
    # N the images of data.train_split (drop_last batches, as the trainer's stream), resolved by the
    # trainer when it sees the data (``resolve_epochs``) and written to the run's config.yaml. The other
    # ``*_iters`` keys (warmup, log, eval, ckpt, loss.start_iters) stay in iterations; evaluation and
    # the checkpoint also happen at the last iteration, so eval_iters / ckpt_iters larger than the
    # resolved length mean "at the end only". Fractions are allowed (0.5 = half an epoch). None = max_iters.
    epochs: float | None = setting(None, **POSITIVE_NUMBER)
    # linear warm-up from lr x warmup_ratio over this many iterations (0 = none)
    warmup_iters: int = setting(0, **NON_NEGATIVE)
    # "sgd" (PolyWarmupSGD: momentum SGD, the plain one) or "adamw" (PolyWarmupAdamW, ToCo / SeCo, seco.md#optim)
    optimizer: str = setting("sgd", choices=("sgd", "adamw"))
    lr: float = setting(0.01, **POSITIVE_NUMBER)  # the base lr (the backbone's; head groups get head_lr_mult x it)
    momentum: float = setting(0.9, lo=0, hi=1, text="a number in [0, 1)")  # sgd only
    nesterov: bool = False  # sgd only
    warmup_ratio: float = setting(1e-6, **FRACTION)  # the warm-up starts at lr x this
    # poly decay (1 - step / max_iters) ** power; 0 = constant (step schedules, RCA)
    power: float = setting(0.9, **NON_NEGATIVE_NUMBER)
    weight_decay: float = setting(5e-4, **NON_NEGATIVE_NUMBER)
    # adamw only (torch's defaults)
    betas: tuple[float, float] = setting((0.9, 0.999), lo=0, hi=1, text="two numbers in [0, 1)")
    # lr multiplier of the method's head groups (classifier / projection / decoder); the 10x every paper here uses
    head_lr_mult: float = setting(10.0, **POSITIVE_NUMBER)
    # Past max_iters the lr stops being updated instead of going to 0: the official poly optimisers' behaviour
    # (PSA's PolyOptimizer, ToCo / SeCo's PolyWarmupAdamW, kazuto1011's PolynomialLR); matters past the end only
    hold_lr_after_max: bool = False
    # clip the gradients' global norm to this (None = no clipping)
    grad_clip: float | None = setting(None, **POSITIVE_NUMBER)
    log_iters: int = setting(200, **POSITIVE)  # log the losses every this many iterations
    eval_iters: int = setting(2000, **POSITIVE)  # validate every this many iterations (and at the last one)
    # write checkpoints/last.pt every this many iterations (and at the last one)
    ckpt_iters: int = setting(1000, **POSITIVE)


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

    iters: int = setting(10, **NON_NEGATIVE)
    pos_xy_std: float = setting(1.0, **POSITIVE_NUMBER)
    pos_w: float = setting(1.0, **NON_NEGATIVE_NUMBER)
    bi_xy_std: float = setting(121.0, **POSITIVE_NUMBER)
    bi_rgb_std: float = setting(5.0, **POSITIVE_NUMBER)
    bi_w: float = setting(4.0, **NON_NEGATIVE_NUMBER)

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

    scales: tuple[float, ...] = setting((1.0, 1.25, 1.5), **SCALES)  # seg inference (docs/methods/seco.md#inference)
    square_size: int | None = setting(None, **SIDE)  # SeCo's VOC script resizes each scale to int(448*s) squares
    # The segmentation inference's fusion (`wsss predict`; cam.multiscale.multi_scale_logits): the defaults are
    # ToCo / SeCo's (docs/methods/seco.md#inference), WeCLIP+'s test differs in each (docs/methods/weclip_plus.md#test).
    # resize_long: the image resized (bilinear, either way) to this long side before the scales (WeCLIP+: 512)
    resize_long: int | None = setting(None, **SIDE)
    # each scale's input: resized to (int(s h), int(s w)) ("size", ToCo / SeCo) or by the factor s ("factor", WeCLIP+:
    # F.interpolate(scale_factor=s), whose sampling step is 1/s exactly, a third of a pixel off "size" on an odd side)
    scale_resize: str = setting("size", choices=SCALE_RESIZES)
    flip_fuse: str = setting("sum", choices=FUSIONS)  # an image and its flip (WeCLIP+: "mean")
    scale_fuse: str = setting("max", choices=FUSIONS)  # the scales (WeCLIP+: "mean")
    # where the flips and scales are fused: each upsampled to the image first ("image"), or on the first scale's
    # output grid, the fused logits then upsampled to the image ("grid", WeCLIP+)
    fuse_at: str = setting("image", choices=FUSE_AT)
    cam_scales: tuple[float, ...] = setting((1.0, 0.5, 1.5), **SCALES)  # `wsss cam` (seco.md#cam-seeds)
    cam_input_size: int | None = setting(None, **SIDE)  # resize the CAM input to a square first (ToCo/SeCo: 448)
    # `wsss cam` fusion (docs/methods/seco.md#ms-cam / docs/methods/sccam.md#cam-inference): flips "max"-fused and
    # min-max normalised (ToCo/SeCo), or PSA / SC-CAM's "sum" and "max" (divided by the max only; golden
    # psa_infer_cls.npz, sccam_infer_cls_*.npz)
    cam_flip_fuse: str = setting("max", choices=FUSIONS)
    cam_normalize: str = setting("minmax", choices=("minmax", "max", "none"))
    # A labelled class the classifier does not see in a photo has a negative map at every pixel, and the ReLU of
    # every official code (docs/methods/seco.md#ms-cam) makes it zero: no seed names the class. "minmax" / "peak_odds":
    # such a map is made from its sum before the ReLUs (``cam.multiscale.fill_empty_maps``; `wsss cam`, `pseudo`,
    # training-time validation; labelled classes only). Not in any official code: "none" in the paper presets
    # (how many maps were empty on real photos: docs/benchmarks/history/real-photos.md#empty-maps).
    cam_empty_fallback: str = setting("none", choices=CAM_EMPTY_FALLBACKS)
    crf: CRFParams = field(default_factory=CRFParams)
    # processes for DenseCRF: -1 = one per core the command may use (shared among a job's local processes), 0 = in
    # the main process; the network forwards the next photo while the pool runs the CRFs (cam.crf.crf_workers)
    crf_workers: int = setting(-1, lo=-1, text="-1 (every core) or 0 or more")
    # `wsss cam` / `predict` / `viz`: longest side of the image the network sees at scale 1 (None = no cap;
    # VOC and COCO images are at most 640): a larger photo is shrunk first, its outputs keep its size
    max_side: int | None = setting(1024, **SIDE)
    batch_size: int = setting(1, **POSITIVE)


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


# Plugins (``custom_imports``): the modules a config may import are the ones the user names, on the command line or
# in this environment variable (comma-separated); a file names no code to run (docs/security.md).
PLUGINS_ENV = "WSSS_PLUGINS"
_command_line_plugins: frozenset[str] = frozenset()


def name_command_line_plugins(overrides: Sequence[str]) -> None:
    """Record the modules the overrides of this command's line name (``custom_imports=[...]``; a word that is no
    valid override is left to :func:`load_config` to refuse): :func:`named_plugins` holds them until the next
    command's line is read (``cli_common.take_overrides`` calls this for every command and script)."""
    global _command_line_plugins
    named: set[str] = set()
    for text in overrides:
        try:
            keys, value = parse_override(text)
        except ConfigError:
            continue
        if keys == ["custom_imports"] and isinstance(value, list):
            named.update(v for v in value if isinstance(v, str))
    _command_line_plugins = frozenset(named)


def named_plugins() -> frozenset[str]:
    """The plugin modules the user named: on this command's line (:func:`name_command_line_plugins`) or in
    ``WSSS_PLUGINS``. Imported by ``methods.contract.import_config_modules`` when a config lists them."""
    env = (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))
    return _command_line_plugins | {n for n in env if n}


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
    """Build dataclass ``cls`` from ``data``; unknown keys, ill-typed values and values outside a field's
    :class:`Valid` raise ConfigError naming the dotted key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'{_suggest(key, names, where)}")
        kwargs[key] = _check(_field_valid(cls, key), path, _coerce(value, hints[key], path))
    return cls(**kwargs)


BASE_KEY = "_base_"  # a preset's parent preset(s): paths relative to the preset's folder, or scoped names
SCOPE = "wsss::"  # a shipped preset or base by a name that resolves from any folder (mmengine's ``mmseg::``)
MAX_BASE_DEPTH = 64  # the longest _base_ chain read (a shipped preset's is a few files)
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
    """``a.b.c=value`` -> (["a","b","c"], parsed value); the value is parsed as YAML (an error: one line naming the
    key, :func:`yaml_error_text`)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        shown = text if len(text) <= 80 else f"{key}={raw[:20]}... ({len(raw)} characters)"
        raise ConfigError(f"override '{shown}': cannot parse the value of {key} ({yaml_error_text(e)})") from e
    return key.split("."), value


def set_dotted(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k1][k2]...`` = ``value`` for ``keys`` = [k1, k2, ...], creating sections on the way."""
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{k}' is not a section")
    node[keys[-1]] = value


def yaml_error_text(e: yaml.YAMLError, text: str | None = None) -> str:
    """What is wrong with a YAML text and where (line, column; with ``text``, the document, also the key whose
    value it is), in one line and without the text itself: PyYAML's message quotes the line, which printed the
    first line of any file a config named (``_base_: /etc/shadow``)."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if not problem:
        return (str(e).splitlines() or [type(e).__name__])[0]
    if mark is None:
        return problem
    key = _key_at(text, mark) if text is not None else None
    return problem + f" at line {mark.line + 1}, column {mark.column + 1}" + (f", the value of {key}" if key else "")


def _key_at(text: str, mark: yaml.Mark) -> str | None:
    """The dotted key of the value that starts at ``mark`` in the YAML ``text`` (None: not a mapping's value, or a
    text that does not compose)."""
    try:
        root = yaml.compose(text, Loader=YAMLLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if node.start_mark.index == mark.index and path:
            return path
        if isinstance(node, yaml.MappingNode):
            stack.extend((v, f"{path}.{k.value}" if path else str(k.value)) for k, v in node.value)
    return None


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
        loaded = yaml_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({yaml_error_text(e, text)})") from e
    except (OSError, UnicodeDecodeError) as e:  # unreadable, or not text: said without the bytes it holds
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the config ({why})") from e
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


def shipped_configs() -> Path:
    """The folder of the shipped presets and bases: ``wsss/configs`` inside an installed wheel (``setup.py`` copies
    ``configs/`` there), else ``configs/`` of the checkout the package runs from (a source or editable install,
    ``pip install -e .``, what ``make setup`` does). Where neither is, a ``wsss::`` name fails with one line
    saying so (:func:`shipped_config`)."""
    package = Path(__file__).resolve().parents[1]  # wsss/core/config.py -> wsss
    inside = package / "configs"
    return inside if inside.is_dir() else package.parents[1] / "configs"  # src/wsss -> the checkout


def shipped_config(name: str, where: str = "") -> Path:
    """The file of the scoped name ``wsss::REL`` (:data:`SCOPE`): ``configs/REL`` of :func:`shipped_configs`.
    ConfigError (``where``: what named it, e.g. ``"FILE: _base_ 'wsss::x.yaml'"``) for a name that is not a
    shipped config, one that leaves ``configs/``, or an install without ``configs/``."""
    where = where or f"'{name}'"
    root = shipped_configs()
    rel = name.removeprefix(SCOPE)
    if not root.is_dir():
        raise ConfigError(
            f"{where}: the shipped configs are not installed ({root} not found): {SCOPE} names resolve in a wheel of "
            "wsss (its wsss/configs) or a checkout (configs/ beside src/); reinstall wsss, or name a file instead"
        )
    path = root / rel
    if not rel or Path(rel).is_absolute() or root.resolve() not in path.resolve().parents:
        raise ConfigError(f"{where}: a {SCOPE} name is a path inside {root}, e.g. {SCOPE}cam/synthetic_cpu.yaml")
    if not path.is_file():
        close = difflib.get_close_matches(rel, _shipped_names(root), n=1, cutoff=0.6)
        hint = f" (did you mean {SCOPE}{close[0]}?)" if close else ""
        raise ConfigError(f"{where}: not a shipped config ({path} not found){hint}")
    return path


def config_file(name: str | Path) -> Path:
    """The file of a config argument: a path, or a scoped name (``wsss::cam/voc.yaml``, :func:`shipped_config`)."""
    return shipped_config(name) if isinstance(name, str) and name.startswith(SCOPE) else Path(name)


def _shipped_names(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def _shipped_like(base: str) -> list[str]:
    """The scoped names of the shipped configs that a relative ``_base_`` not found may have meant: the path
    without its leading ``./`` and ``../`` is the end of theirs (a preset copied out of ``configs/``
    names ``../_base_/datasets/synthetic.yaml``, or ``voc.yaml`` for the preset beside it)."""
    parts = [p for p in base.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    root = shipped_configs()
    if not parts or not root.is_dir() or Path(base).is_absolute():
        return []
    rest = "/".join(parts)
    return [f"{SCOPE}{n}" for n in _shipped_names(root) if n == rest or n.endswith(f"/{rest}")]


def _base_paths(path: Path, own: dict[str, Any]) -> list[Path]:
    """The presets ``path`` names under ``_base_`` (one name or a list): paths relative to its folder, or scoped
    names of shipped configs (``wsss::_base_/datasets/voc.yaml``, :func:`shipped_config`). A relative one not
    found whose name is a shipped config's is a ConfigError that gives the scoped name to use."""
    bases = own.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths, got {bases!r}")
    found = []
    for base in bases:
        if base.startswith(SCOPE):
            found.append(shipped_config(base, f"{path}: {BASE_KEY} '{base}'"))
            continue
        base_path = path.parent / Path(base).expanduser()
        if base_path.suffix.lower() not in (".yaml", ".yml"):
            # a base is a preset: a file named by a config from elsewhere is read only as one, so that no error
            # quotes a file of another kind (``_base_: /etc/shadow``)
            raise ConfigError(f"{path}: {BASE_KEY} '{base}' is not a YAML preset (.yaml or .yml)")
        if not base_path.is_file():
            like, hint = _shipped_like(base), ""
            if len(like) == 1:
                hint = f"; the shipped config of that name is {like[0]}: name it so, which resolves from any folder"
            elif like:
                hint = (
                    f"; shipped configs of that name: {', '.join(like)}: name the one meant (resolves from any folder)"
                )
            raise ConfigError(f"{path}: {BASE_KEY} '{base}' not found ({base_path}){hint}")
        found.append(base_path)
    return found


def read_preset(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings a YAML preset states, with its ``_base_`` presets merged under them.

    ``_base_: ../cam/voc.yaml`` (or a list, merged in order, later ones winning: mmseg's rule) names the
    presets and the ``configs/_base_/`` parts this one is composed of, by a path relative to the file or by a
    scoped name of a shipped one that resolves from any folder (``wsss::cam/voc.yaml``, :func:`shipped_config`;
    ``path`` may be one too); the file's own keys are merged over
    them with :func:`_merge`. A mapping holding ``_delete_: true`` replaces the one it is merged over: in the
    file, what its bases built; in a base, also what the bases listed before it in the same ``_base_`` built.
    A missing base or a cycle is a ConfigError naming the file; each file's own keys are validated against
    the schema, so a wrong key is blamed on the file that has it. The result holds no ``_base_``: it is what
    the preset would be written out in full, before the schema's defaults and the command-line overrides.
    """
    return _merge({}, _resolve_preset(config_file(path), _chain))  # the _delete_ marks consumed


def _resolve_preset(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """:func:`read_preset`'s merge with the ``_delete_: true`` marks of the file and of its bases kept, so
    that the file that names this one as a base applies them over its earlier bases."""
    chain = (*chain, path.resolve())
    if len(chain) > MAX_BASE_DEPTH:
        raise ConfigError(
            f"{chain[0]}: its {BASE_KEY} chain is more than {MAX_BASE_DEPTH} files deep (at {path}); a preset is "
            "composed of a few"
        )
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
    """``RUN/config.yaml``, the settings a run directory was trained with: the one check of every command that
    reads a run. MissingFileError when ``run_dir`` does not exist (naming the run directories beside it that
    its name is close to), is a file, or is a folder without ``config.yaml`` (with ``hint``, e.g. what to do
    instead)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if path.is_file():
        return path
    if run_dir.is_file():
        raise MissingFileError(
            f"{run_dir}: a file, not a run directory (a folder holding config.yaml and checkpoints/)"
        )
    if not run_dir.is_dir():
        raise MissingFileError(f"{run_dir}: no such run directory (the folder does not exist){_runs_like(run_dir)}")
    raise MissingFileError(f"{path}: not a run directory (no config.yaml){hint}")


def _runs_like(run_dir: Path) -> str:
    """``"; did you mean X?"`` for the run directories beside ``run_dir`` whose name is close to its name."""
    parent = run_dir.parent
    try:
        runs = [p.name for p in parent.iterdir() if (p / "config.yaml").is_file()] if parent.is_dir() else []
    except OSError:  # an unreadable parent: nothing to suggest
        runs = []
    close = difflib.get_close_matches(run_dir.name, runs, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(str(parent / c) for c in close)}?" if close else ""


def load_run_config(run_dir: str | Path, hint: str = "", overrides: Sequence[str] = ()) -> Config:
    """The :class:`Config` of a run directory (:func:`run_config_path`): its saved config, read afresh (a copy: the
    file is never written), then the ``KEY=VALUE`` words ``overrides`` merged over it by :func:`load_config`, the
    one path of a setting given on the command line of a command that reads a run."""
    return load_config(run_config_path(run_dir, hint), list(overrides))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or the defaults) and apply dotted ``key=value`` overrides. ``path``: a file, or the
    scoped name of a shipped preset (``wsss::cam/synthetic_cpu.yaml``, :func:`config_file`).

    The file's ``_base_`` presets are merged under it first (:func:`read_preset`), the overrides last.
    An error in the file names the file; an error in an override names the override (the file is
    validated first, then each override on top of it).
    """
    data: dict[str, Any] = {}
    defaults = Config().to_dict()
    if path is not None:
        path = config_file(path)
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


def _field_valid(cls: type, name: str) -> Valid | None:
    """The :class:`Valid` of field ``name`` of dataclass ``cls`` (None: any value of its type)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("valid")
    return None


def check_value(key: str, value: Any) -> Any:
    """``value`` if it is valid for the setting ``key`` (a dotted key of :class:`Config`), else ConfigError
    ``"<key> must be ..., got <value>"``; a single value of a list setting is checked as one of its values.

    The one check of a setting against the :class:`Valid` its field declares (:func:`setting`), used by
    :func:`from_dict` (config files, runs' config.yaml, overrides), :func:`check_settings` and the command-line
    flags that set a setting directly (``wsss cam --bkg-thre``, ``wsss predict --scales``).
    """
    cls: Any = Config
    *sections, name = key.split(".")
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    valid = _field_valid(cls, name)
    if valid is not None and not isinstance(value, (list, tuple, dict)) and _is_collection(cls, name):
        if not valid.admits(value):  # one value of a list setting (``wsss sweep-bkg --thresholds``)
            raise ConfigError(f"{key} must be {valid.describe()}, got {_shown(value)}")
        return value
    return _check(valid, key, value)


def replace_setting(cfg: Config, key: str, value: Any) -> Config:
    """``cfg`` with the setting ``key`` (dotted) set to the typed ``value``, checked as a config's is
    (:func:`check_value`): a value reaches a config without becoming a word."""
    check_value(key, value)

    def replaced(section: Any, keys: list[str]) -> Any:
        inner = value if len(keys) == 1 else replaced(getattr(section, keys[0]), keys[1:])
        return dataclasses.replace(section, **{keys[0]: inner})

    return replaced(cfg, key.split("."))


def _is_collection(cls: type, name: str) -> bool:
    return typing.get_origin(_strip_optional(typing.get_type_hints(cls)[name])) in (list, tuple, dict)


def _strip_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(list(value) if isinstance(value, tuple) else value)


def _check(valid: Valid | None, key: str, value: Any) -> Any:
    """``value`` checked against ``valid`` (None, or a value None: "not set", allowed); ConfigError naming ``key``.
    A mapping's values are checked each, named ``key.<its key>`` (``loss.weights.cls``)."""
    if valid is None or value is None:
        return value
    if isinstance(value, dict):
        for k, v in value.items():
            _check(valid, f"{key}.{k}", v)
        return value
    if isinstance(value, (list, tuple)):
        ok = all(valid.admits(v) for v in value) and (bool(value) or not valid.nonempty)
        if ok and valid.ascending and len(value) == 2:
            ok = value[0] <= value[1]
    else:
        ok = valid.admits(value)
    if not ok:
        raise ConfigError(f"{key} must be {valid.describe()}, got {_shown(value)}")
    return value


def check_settings(cfg: Any, where: str = "") -> Any:
    """ConfigError naming the first setting of the dataclass ``cfg`` (a :class:`Config`, a section, a method's
    options) and of its sections that is not valid (:func:`check_value`); for a config built in code, which
    :func:`from_dict` did not check. Returns ``cfg``."""
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            check_settings(value, f"{key}.")
        else:
            _check(f.metadata.get("valid"), key, value)
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


class YAMLDumper(yaml.SafeDumper):
    """PyYAML's safe dumper that quotes a string :class:`YAMLLoader` would read as a number (``'1e5'``: YAML 1.1
    writes it plain, YAML 1.2's float rule reads it back as 100000.0), so what is written loads as it was."""


YAMLDumper.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789."))


def dump_yaml(data: dict[str, Any]) -> str:
    """``data`` as YAML that :func:`yaml_load` reads back equal (the one way configs are written)."""
    return yaml.dump(data, Dumper=YAMLDumper, sort_keys=False, default_flow_style=None)


def dump_config(cfg: Config) -> str:
    """``cfg`` in full as YAML: every key, no ``_base_`` (what ``wsss config show`` prints and a run's
    ``config.yaml`` holds, so a run is reproduced without the presets it came from)."""
    return dump_yaml(cfg.to_dict())


def flat_preset(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings preset ``path`` states, its ``_base_`` presets merged in (:func:`read_preset`) and the
    overrides set: one mapping with no ``_base_`` that :func:`load_config` loads to the config ``load_config(path,
    overrides)`` gives (``wsss config show --flat``: a preset to copy that needs none of its bases). The schema's
    defaults stay out of it (what :func:`dump_config` writes holds every key). Validate with load_config first."""
    data = read_preset(path)
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(data, keys, value)
    order = list(Config().to_dict())  # the schema's order of sections (method first), not the bases'
    return {k: data[k] for k in sorted(data, key=lambda k: order.index(k) if k in order else len(order))}


def save_config(cfg: Config, path: str | Path) -> None:
    from wsss.core.files import write_text_if_changed

    write_text_if_changed(path, dump_config(cfg))


# -- the config diff of a resume (``wsss train`` on a run directory with a checkpoint) ---------------------

# The one declaration of the settings that say where and how fast a run or a job runs, not what it computes:
# a resume may change them freely (:func:`config_changes`), the settings stamps of the output folders
# leave them out (:func:`results_config`), and a route that compares its steps' settings drops their words
# (:func:`is_execution_word`, experiments/real_route.py). Every other key can change a result.
EXECUTION_KEYS = frozenset(
    {"run.dir", "run.device", "run.threads", "run.tensorboard", "data.num_workers", "infer.crf_workers"}
)


def is_execution_word(word: str) -> bool:
    """Whether the ``KEY=VALUE`` word ``word`` sets a key of :data:`EXECUTION_KEYS` (where / how fast, not what)."""
    return word.split("=", 1)[0] in EXECUTION_KEYS


def results_config(cfg: Config) -> dict[str, Any]:
    """``cfg`` as a plain dict without the keys of :data:`EXECUTION_KEYS`: the settings a result depends on."""
    out = cfg.to_dict()
    for key in EXECUTION_KEYS:
        section, name = key.split(".")
        out.get(section, {}).pop(name, None)
    return out


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
    cfg: Config, *, allow: bool = False, verify: Callable[[dict[str, Any], Path], None] | None = None,
    advice: str | None = None,
) -> dict[str, tuple[Any, Any]]:  # fmt: skip
    """Before resuming: compare ``cfg`` with the run's saved ``config.yaml``.

    A run with a checkpoint was trained with its saved settings, so other settings are refused (a
    ConfigError naming every differing key) unless ``allow``; an allowed change is appended to
    ``RUN/config_changes.jsonl`` (time, checkpoint step, old and new values). Returns the changes.
    ``verify(state, path)`` is called with ``last.pt`` before the change is recorded: the engine checks
    there that the checkpoint resumes under the new settings, so a change that fails is never recorded.
    ``advice``: what the refusal advises, where the command is not ``wsss train`` (a pipeline's options).
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
        advice = advice or ("Use another run.dir, or pass --allow-config-change to resume with the new settings "
                            f"(recorded in {run_dir / CONFIG_CHANGES_FILE})")  # fmt: skip
        raise ConfigError(f"{saved}: this run was trained with other settings ({listing}); resuming would mix them. "
                          f"{advice}")  # fmt: skip
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
