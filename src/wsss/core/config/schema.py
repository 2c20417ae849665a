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
from dataclasses import dataclass, field
from typing import Any, ClassVar

from wsss.core.config.rules import (
    FRACTION,
    LEVEL,
    NON_NEGATIVE,
    NON_NEGATIVE_NUMBER,
    POSITIVE,
    POSITIVE_INTS,
    POSITIVE_NUMBER,
    SCALES,
    SEED,
    SIDE,
    _to_plain,
    setting,
)

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
