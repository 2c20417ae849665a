"""The config schema: documented dataclasses, loaded from YAML with dotted command-line overrides.

A config file holds the sections below; every key has a default here, so a preset only states what
it changes. A preset that derives from another names it with ``_base_: ../cam/voc.yaml`` (or a list)
and states only what differs (:func:`read_preset`). Unknown keys are rejected with the closest valid
key suggested. The method-specific section ``options`` is validated against the dataclass the method
registers (``Method.Options``).

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
    dir: str = "runs/default"  # run directory: config.yaml, checkpoints/, metrics.jsonl, outputs
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    amp: str = "none"  # "none", "bf16" or "fp16"; autocast on CUDA only, the CPU stays fp32
    threads: int = 0  # torch intra-op threads on the CPU; 0 = torch's default
    tensorboard: bool = True  # also log to RUN/tensorboard/ (rank 0) when the tensorboard package is installed


@dataclass
class DataConfig:
    root: str = "data/synth"
    train_split: str = "train"
    val_split: str = "val"
    crop_size: int = 448  # methods.md 2.4 step 3
    scale_range: tuple[float, float] = (0.5, 2.0)  # methods.md 2.4 step 1
    hflip: bool = True
    color_jitter: bool = False  # SeCo's main input has none (methods.md 3.1 item 2)
    num_workers: int = 2
    val_resize: int | None = 448  # training-time validation resizes val images to a square (2.11)
    val_max_images: int | None = None  # cap on validation images per evaluation (None = all)
    # Longest side of a val image as the network sees it, after val_resize (None = no cap): one 6000x4000
    # photo at full size is minutes of attention and gigabytes; the score is taken at the mask's size.
    val_max_side: int | None = 1024
    # Segmentation targets: a directory of <id>.png label maps (255 = ignore), e.g. `wsss pseudo` output.
    # Methods that train on pseudo labels (deeplab, affinitynet) read it; it goes through the same
    # scale / flip / crop as the image (nearest, padding 255). None: image-level labels only. The dataset's own
    # masks (ROOT/SegmentationClass, or SegmentationClassAug) train the fully supervised ceiling of a route.
    pseudo_dir: str | None = None


@dataclass
class ModelConfig:
    backbone: str = "vit_base_patch16_224"  # a timm model name
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model
    pretrained: str | None = None  # local weights (timm / torchvision state dict, a run's checkpoint); None = random
    freeze_pos_embed: bool = True  # ViT: positional embedding frozen (methods.md 2.2)
    aux_layer: int = -3  # ViT block whose raw output feeds the auxiliary classifier (2.2)
    output_stride: int = 16  # CNN backbones: dilate the last stages to reach this stride
    pooling: str = "gmp"  # classifier pooling: "gmp" (ToCo/SeCo, 2.3) or "gap"
    aux_classifier: bool = True
    decoder: str = "aspp"  # segmentation head: "aspp" (SeCo 3.1), "largefov" (ToCo 2.3), "none"
    decoder_dim: int = 512  # LargeFOV hidden width


@dataclass
class PARConfig:
    dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)  # methods.md 2.7
    num_iter: int = 10


@dataclass
class CamConfig:
    scales: tuple[float, ...] = (1.0, 0.5, 0.75, 1.5)  # training-time CAM scales (SeCo VOC, 3.9)
    high_thre: float = 0.7  # methods.md 2.6 / 3.9
    low_thre: float = 0.25
    bkg_thre: float = 0.5
    par: PARConfig = field(default_factory=PARConfig)
    par_down_scale: int = 2  # the online pseudo label runs PAR at 1/2 resolution (2.8)
    # `wsss pseudo --refine psa`: PSA's AffinityNet seeds, background (1 - max cam)^alpha for the
    # confident-foreground ("la") and confident-background ("ha") CRF maps (methods.md 5.6-5.7)
    psa_alphas: tuple[float, float] = (4.0, 32.0)
    # PSA's seed resolution: its AffinityNet loader average-pools the la / ha CRF score maps by 8 and takes the
    # argmax there (golden psa_aff_labels.npz; ``cam.affinity.psa_seed_grid``); `--refine psa` then writes that
    # grid label, block-constant at the image size (padding -> 255). 1: the label of the full-resolution maps.
    psa_seed_stride: int = 1


@dataclass
class LossConfig:
    # Weight of each loss term, and the iteration after which it is switched on (a term is active
    # when step > start_iters[term]; terms without an entry are active from the start). This is the
    # one place where the staged schedules of methods.md 2.9 and 3.8 live.
    weights: dict[str, float] = field(default_factory=lambda: {"cls": 1.0, "aux": 1.0, "seg": 0.1})
    start_iters: dict[str, int] = field(default_factory=dict)


@dataclass
class TrainConfig:
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
    warmup_iters: int = 1500
    optimizer: str = "adamw"  # "adamw" (PolyWarmupAdamW, 2.10) or "sgd" (PolyWarmupSGD: DeepLab, RCA, SC-CAM)
    lr: float = 6e-5  # methods.md 2.10
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    warmup_ratio: float = 1e-6
    power: float = 0.9
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    head_lr_mult: float = 10.0  # classifier / projection / decoder groups (2.10)
    hold_lr_after_max: bool = True  # official quirk: past max_iters the lr stops being updated
    grad_clip: float | None = None
    log_iters: int = 200
    eval_iters: int = 2000
    ckpt_iters: int = 1000


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters (methods.md 2.11, 8.5): the config section ``infer.crf`` and the named sets
    the anchors use. One class for both, so a config section is passed to ``dense_crf`` as it is.

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
    scales: tuple[float, ...] = (1.0, 1.25, 1.5)  # seg inference (3.10)
    square_size: int | None = None  # SeCo's VOC script resizes each scale to int(448*s) squares
    cam_scales: tuple[float, ...] = (1.0, 0.5, 1.5)  # `wsss cam` (2.11)
    cam_input_size: int | None = None  # resize the CAM input to a square first (ToCo/SeCo: 448)
    # `wsss cam` fusion (2.5 / 5.6): flips "max"-fused and min-max normalised (ToCo/SeCo), or PSA / SC-CAM's
    # "sum" and "max" (divided by the max only; golden psa_infer_cls.npz, sccam_infer_cls_*.npz)
    cam_flip_fuse: str = "max"
    cam_normalize: str = "minmax"
    # A labelled class the classifier does not see in a photo has a negative map at every pixel, and the ReLU of
    # every official code (methods.md 2.5-2.6) makes it zero: no seed names the class. "minmax" / "peak_odds":
    # such a map is made from its sum before the ReLUs (``cam.multiscale.fill_empty_maps``; `wsss cam`, `pseudo`,
    # training-time validation; labelled classes only). Not in any official code: "none" in the paper presets
    # (issue 31: 0.2-1 % of RCA's and SC-CAM's labelled maps on ccp-dev were empty; BENCHMARKS.md "ccp-dev").
    cam_empty_fallback: str = "none"
    crf: CRFParams = field(default_factory=CRFParams)
    crf_workers: int = 0  # processes for DenseCRF; 0 = in the main process
    # `wsss cam` / `predict` / `viz`: longest side of the image the network sees at scale 1 (None = no cap;
    # VOC and COCO images are at most 640): a larger photo is shrunk first, its outputs keep its size
    max_side: int | None = 1024
    batch_size: int = 1


@dataclass
class Config:
    method: str = "cam"
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
    return loaded


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

    ``_base_: ../cam/voc.yaml`` (or a list, merged in order, later ones winning) names the presets this
    one derives from; the file's own keys are merged over them with :func:`_merge`. A missing base or a
    cycle is a ConfigError naming the file; each file's own keys are validated against the schema, so a
    wrong key is blamed on the file that has it. The result holds no ``_base_``: it is what the preset
    would be written out in full, before the schema's defaults and the command-line overrides.
    """
    path = Path(path)
    chain = (*_chain, path.resolve())
    own = _read_yaml_mapping(path)
    bases = _base_paths(path, own)
    try:
        from_dict(Config, _merge(Config().to_dict(), own))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    merged: dict[str, Any] = {}
    for base in bases:
        if base.resolve() in chain:
            cycle = " -> ".join(str(p) for p in (*chain[chain.index(base.resolve()) :], base.resolve()))
            raise ConfigError(f"{path}: {BASE_KEY} cycle: {cycle}")
        merged = _merge(merged, read_preset(base, chain))
    return _merge(merged, own)


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
NON_NEGATIVE_SETTINGS = ("train.warmup_iters", "data.num_workers", "run.threads", "infer.crf_workers")
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
    of ``CHOICE_SETTINGS`` outside its values, a level outside [0, 1] (``LEVEL_SETTINGS``), a learning
    rate that is not a positive number and a scale list with a scale that is not positive. Returns ``cfg``."""
    keys = (*POSITIVE_SETTINGS, *NON_NEGATIVE_SETTINGS, *CHOICE_SETTINGS, *LEVEL_SETTINGS, *POSITIVE_NUMBER_SETTINGS,
            *SCALE_SETTINGS)  # fmt: skip
    for key in keys:
        check_value(key, _get_dotted(cfg, key))
    return cfg


def resolve_paths(cfg: Config) -> Config:
    """Make the run's input paths absolute (``data.root``, ``data.pseudo_dir``, ``model.pretrained``
    when it is a file), so a run's ``config.yaml`` works from any directory. In place; returns ``cfg``."""
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    if cfg.data.pseudo_dir:
        cfg.data.pseudo_dir = str(Path(cfg.data.pseudo_dir).expanduser().resolve())
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
