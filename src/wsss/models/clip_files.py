"""CLIP weight files as users have them: which layout a file is, its tensors in OpenAI's key layout, and
which activation (QuickGELU or GELU) the network that wrote it used.

The layouts (README "CLIP weights"):

- OpenAI's TorchScript archive (``ViT-B-16.pt`` of the OpenAI release) and OpenAI's plain state dict
  (recognised by the ints OpenAI keeps in it: ``input_resolution``, ``context_length``, ``vocab_size``):
  always QuickGELU.
- open_clip's state dicts (``open_clip_pytorch_model.bin``, ``open_clip_model.safetensors``, or any
  ``.pt``/``.pth``/``.bin``/``.safetensors``/``.npz`` in OpenAI's key layout): the activation comes from the
  open_clip config beside the file (``open_clip_config.json`` as ``open_clip.push_to_hf_hub`` writes it,
  or ``<file stem>.json``: its ``quick_gelu``; open_clip's default is GELU), else from ``options.quick_gelu``.
- Hugging Face's ``CLIPModel`` (a folder with ``config.json`` and ``model.safetensors`` or
  ``pytorch_model.bin``, or one of those files with its ``config.json`` beside it): the keys are mapped here
  (no ``transformers`` import), the activation is ``hidden_act`` of ``config.json`` (HF's default
  ``quick_gelu`` where it is left out), the text heads ``num_attention_heads``.

The architecture is always read from the tensors. Where nothing says which activation a file used, the load
stops and asks for ``options.quick_gelu`` (a GELU file run as QuickGELU computes wrong features without
any error). A file that is not CLIP, or a CLIP of another family (ResNet CLIP, SigLIP, a timm vision tower),
is refused in one line naming the file and what was found.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.core.errors import ConfigWarning, WeightLoadError

#: the ints OpenAI's files hold beside the tensors (OpenAI's ``build_model`` deletes them)
OPENAI_MARKERS = ("input_resolution", "context_length", "vocab_size")
#: open_clip's file names (``open_clip.push_to_hf_hub``: HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: Hugging Face's file names (``CLIPModel.save_pretrained``)
HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass
class ClipFile:
    """A CLIP weight file read: tensors in OpenAI's key layout, and what the file says of itself."""

    path: Path
    layout: str  # "OpenAI TorchScript", "OpenAI state dict", "open_clip state dict", "Hugging Face CLIPModel"
    state: dict[str, torch.Tensor]
    quick_gelu: bool | None  # None: the file does not say
    activation_source: str  # where quick_gelu came from (for messages)
    text_heads: int | None = None  # from a config (HF), else OpenAI's width // 64


# ---- reading ---------------------------------------------------------------------------------------

#: the keys every CLIP ViT state dict in OpenAI's layout holds (what tells it from another architecture)
REQUIRED_KEYS = (
    "visual.conv1.weight",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.proj",
    "visual.ln_post.weight",
    "token_embedding.weight",
    "positional_embedding",
    "text_projection",
    "ln_final.weight",
    "logit_scale",
)


class _ScriptObject:
    """Stands for a TorchScript module object in ``data.pkl``: keeps its attribute dict."""

    def __init__(self, *args: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


def _rebuild_tensor(storage: torch.UntypedStorage | torch.Tensor, offset: int, size: Any, stride: Any, *_: Any):
    return torch.empty(0, dtype=storage.dtype).set_(storage, offset, tuple(size), tuple(stride))


class _TorchScriptUnpickler(pickle.Unpickler):
    """Reads a TorchScript archive's ``data.pkl``: tensors and plain containers; every
    ``__torch__.*`` class (the scripted modules) becomes a ``_ScriptObject`` holding its attributes.
    No other global is allowed, and no code of the archive runs."""

    _DTYPES = {
        "FloatStorage": torch.float32,
        "HalfStorage": torch.float16,
        "DoubleStorage": torch.float64,
        "BFloat16Storage": torch.bfloat16,
        "LongStorage": torch.int64,
        "IntStorage": torch.int32,
        "BoolStorage": torch.bool,
        "ByteStorage": torch.uint8,
    }

    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return _ScriptObject
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in self._DTYPES:
            return self._DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which no CLIP weight needs")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        # ('storage', dtype, key, location, numel)
        _, dtype, key, _, numel = pid
        raw = self.archive.read(f"{self.prefix}data/{key}")
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if not numel:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw[: numel * itemsize]), dtype=dtype)


def _script_state_dict(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a tree of ``_ScriptObject`` into ``{dotted name: tensor}`` (parameters and buffers)."""
    out: dict[str, torch.Tensor] = {}
    if not isinstance(obj, _ScriptObject):
        return out
    for name, value in obj.state.items():
        if name in ("training",) or name.startswith("_"):
            continue
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            out.update(_script_state_dict(value, f"{prefix}{name}."))
    return out


def read_torchscript_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The parameters of a TorchScript archive (OpenAI's ``ViT-B-16.pt``), from its ``data.pkl``,
    without running code from it."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not names:
            raise WeightLoadError(f"{path}: a zip without data.pkl: neither a state dict nor a TorchScript archive")
        name = min(names, key=len)
        prefix = name[: -len("data.pkl")]
        with archive.open(name) as f:
            root = _TorchScriptUnpickler(f, archive, prefix).load()
    return _script_state_dict(root)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file: the ``safetensors`` package when installed, else this reader
    of the format (8-byte little-endian header length, a JSON header of dtype/shape/data_offsets, the raw
    little-endian buffer). WeightLoadError naming the file when it cannot be read (a truncated download)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        load_file = None
    try:
        return _read_safetensors_own(Path(path)) if load_file is None else load_file(str(path))
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 (safetensors' SafetensorError, and the own reader's errors)
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightLoadError(f"{path}: cannot read this .safetensors file ({why}; a truncated download?)") from None


def _read_safetensors_own(path: Path) -> dict[str, torch.Tensor]:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > os.fstat(f.fileno()).st_size - 8:  # before reading it: a damaged length would allocate its size
            raise ValueError(f"its header length {length:,} is beyond the end of the file")
        header = json.loads(f.read(length))
        buffer = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name} has dtype {info['dtype']}, which no CLIP weight needs")
        start, end = info["data_offsets"]
        flat = (
            torch.frombuffer(bytearray(buffer[start:end]), dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
        )
        out[name] = flat.reshape(info["shape"])
    return out


def _read_tensors(path: Path) -> tuple[dict[str, Any], bool]:
    """(the file's entries, whether it is a TorchScript archive)."""
    from wsss.models.weights import read_state_dict

    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(np.array(z[k])) for k in z.files}, False
        if path.suffix == ".safetensors":
            return read_safetensors(path), False
        if _is_torchscript(path):
            return read_torchscript_state_dict(path), True
        return read_state_dict(path), False
    except WeightLoadError:
        raise
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise WeightLoadError(f"{path}: cannot read CLIP weights ({type(e).__name__}: {e})") from e


def _weights_in_folder(folder: Path) -> Path:
    for name in (*HF_WEIGHTS, *OPEN_CLIP_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    raise WeightLoadError(
        f"{folder}: a folder without CLIP weights (looked for {', '.join((*HF_WEIGHTS, *OPEN_CLIP_WEIGHTS))})"
    )


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightLoadError(f"{path}: cannot read the config beside the CLIP weights ({e})") from e
    return data if isinstance(data, dict) else None


# ---- layouts ---------------------------------------------------------------------------------------


def _family_refusal(keys: list[str], config: Mapping[str, Any] | None) -> str | None:
    """What a file of another family is, or None."""
    model_type = str((config or {}).get("model_type", ""))
    if "siglip" in model_type or "logit_bias" in keys:
        return "a SigLIP model (logit_bias / model_type siglip), not CLIP: its sigmoid scores are not CLIP-ES's"
    if any(k.startswith("visual.trunk.") for k in keys):
        return "an open_clip model with a timm vision tower (visual.trunk.*); only CLIP ViTs are supported"
    if any(k.startswith(("visual.attnpool.", "visual.layer1.")) for k in keys):
        return "a ResNet CLIP (visual.attnpool / visual.layer1); CLIP-ES needs a CLIP ViT"
    if model_type and model_type != "clip":
        return f"a Hugging Face {model_type!r} model, not 'clip'"
    return None


def _open_clip_activation(path: Path) -> tuple[bool | None, str, int | None]:
    """(``quick_gelu``, where it was read, text heads) of an open_clip config beside ``path`` (open_clip's
    default: GELU), or (None, '', None)."""
    for name in (OPEN_CLIP_CONFIG, f"{path.stem}.json"):
        cfg = _json(path.parent / name)
        if cfg is None:
            continue
        model_cfg = cfg.get("model_cfg", cfg)
        heads = (model_cfg.get("text_cfg") or {}).get("heads")
        heads = int(heads) if heads else None
        if "quick_gelu" in model_cfg:
            return bool(model_cfg["quick_gelu"]), f"quick_gelu in {path.parent / name}", heads
        if "vision_cfg" in model_cfg:  # an open_clip model config: open_clip's CLIP(quick_gelu=False)
            return False, f"{path.parent / name} (an open_clip model config without quick_gelu: GELU)", heads
    return None, "", None


def _openai_layout(path: Path, state: dict[str, Any], torchscript: bool) -> ClipFile:
    if torchscript:
        return ClipFile(path, "OpenAI TorchScript", state, True, "OpenAI release")
    if all(k in state for k in OPENAI_MARKERS):
        return ClipFile(path, "OpenAI state dict", state, True, "OpenAI release")
    quick_gelu, source, heads = _open_clip_activation(path)
    return ClipFile(path, "open_clip state dict", state, quick_gelu, source, heads)


def _cat(state: Mapping[str, torch.Tensor], prefix: str, part: str) -> torch.Tensor:
    return torch.cat([state[f"{prefix}.self_attn.{p}_proj.{part}"] for p in "qkv"], 0)


def _hf_block(state: Mapping[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    """One HF ``CLIPEncoderLayer`` as an open_clip ``ResidualAttentionBlock`` (q, k, v stacked into
    ``in_proj`` as ``nn.MultiheadAttention`` holds them)."""
    return {
        f"{dst}.attn.in_proj_weight": _cat(state, src, "weight"),
        f"{dst}.attn.in_proj_bias": _cat(state, src, "bias"),
        **{
            f"{dst}.{b}.{p}": state[f"{src}.{a}.{p}"]
            for a, b in (
                ("self_attn.out_proj", "attn.out_proj"),
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            )
            for p in ("weight", "bias")
        },
    }


def hf_to_openai_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face ``CLIPModel`` state dict in OpenAI's key layout (the projections transposed:
    HF's ``nn.Linear`` weight is (out, in), OpenAI's ``proj`` (in, out)). KeyError if a key is missing."""
    v, t = "vision_model", "text_model"
    out = {
        "visual.class_embedding": state[f"{v}.embeddings.class_embedding"],
        "visual.conv1.weight": state[f"{v}.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": state[f"{v}.embeddings.position_embedding.weight"],
        "visual.proj": state["visual_projection.weight"].t().contiguous(),
        "token_embedding.weight": state[f"{t}.embeddings.token_embedding.weight"],
        "positional_embedding": state[f"{t}.embeddings.position_embedding.weight"],
        "text_projection": state["text_projection.weight"].t().contiguous(),
        "logit_scale": state["logit_scale"],
    }
    for p in ("weight", "bias"):
        out[f"visual.ln_pre.{p}"] = state[f"{v}.pre_layrnorm.{p}"]  # sic: HF's name
        out[f"visual.ln_post.{p}"] = state[f"{v}.post_layernorm.{p}"]
        out[f"ln_final.{p}"] = state[f"{t}.final_layer_norm.{p}"]
    for tower, dst in ((v, "visual.transformer"), (t, "transformer")):
        layers = {int(k.split(".")[3]) for k in state if k.startswith(f"{tower}.encoder.layers.")}
        for i in sorted(layers):
            out.update(_hf_block(state, f"{tower}.encoder.layers.{i}", f"{dst}.resblocks.{i}"))
    return out


def _hf_config_values(config: Mapping[str, Any], cfg_path: Path) -> tuple[bool, int]:
    """(quick_gelu, text heads) of an HF ``CLIPConfig`` (HF's defaults where a value is left out, as
    ``save_pretrained`` omits defaults): refuses a config whose towers disagree with what wsss builds."""
    text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
    acts = {text.get("hidden_act", "quick_gelu"), vision.get("hidden_act", "quick_gelu")}
    if not acts <= {"quick_gelu", "gelu"} or len(acts) != 1:
        raise WeightLoadError(f"{cfg_path}: hidden_act {sorted(acts)}; wsss builds one of quick_gelu or gelu")
    for name, tower in (("vision", vision), ("text", text)):
        eps = float(tower.get("layer_norm_eps", 1e-5))
        if abs(eps - 1e-5) > 1e-12:
            raise WeightLoadError(f"{cfg_path}: {name} layer_norm_eps {eps}; CLIP's (and wsss's) is 1e-05")
    width, heads = int(vision.get("hidden_size", 768)), int(vision.get("num_attention_heads", 12))
    if heads != width // 64:
        raise WeightLoadError(f"{cfg_path}: vision tower of {heads} heads at width {width}; wsss builds width // 64")
    return acts == {"quick_gelu"}, int(text.get("num_attention_heads", 8))


def _check_hf_vocab(vocab_path: Path) -> None:
    """wsss tokenizes with open_clip's BPE (OpenAI's vocabulary, the one of ``openai/clip-vit-*``): a
    folder's ``vocab.json`` of another vocabulary is refused rather than fed other token ids."""
    vocab = _json(vocab_path)
    if vocab is None:
        return
    if len(vocab) != 49408 or vocab.get("<|startoftext|>") != 49406 or vocab.get("<|endoftext|>") != 49407:
        raise WeightLoadError(
            f"{vocab_path}: a vocabulary of {len(vocab)} tokens that is not OpenAI CLIP's (49408, start 49406, "
            "end 49407), which wsss's tokenizer uses"
        )


def _hf_layout(path: Path, state: dict[str, Any]) -> ClipFile:
    cfg_path = path.parent / HF_CONFIG
    config = _json(cfg_path)
    refusal = _family_refusal(list(state), config)
    if refusal:
        raise WeightLoadError(f"{path}: {refusal}")
    if "visual_projection.weight" not in state or "text_model.embeddings.token_embedding.weight" not in state:
        raise WeightLoadError(
            f"{path}: a Hugging Face CLIP file without both towers and projections "
            "(CLIPModel's vision_model, text_model, visual_projection, text_projection)"
        )
    try:
        mapped = hf_to_openai_state_dict(state)
    except KeyError as e:
        raise WeightLoadError(f"{path}: a Hugging Face CLIP file without {e.args[0]}") from None
    _check_hf_vocab(path.parent / "vocab.json")
    if config is None:  # the activation is then unknown: say why when it is asked for
        return ClipFile(
            path, "Hugging Face CLIPModel", mapped, None, f"no {HF_CONFIG} beside it, which says hidden_act"
        )
    quick_gelu, text_heads = _hf_config_values(config, cfg_path)
    return ClipFile(path, "Hugging Face CLIPModel", mapped, quick_gelu, f"hidden_act in {cfg_path}", text_heads)


def read_clip_file(path: str | Path) -> ClipFile:
    """The CLIP weights at ``path`` (a file, or a Hugging Face / open_clip folder) in OpenAI's key layout,
    with what the file says of its activation. WeightLoadError naming the file if it is not a CLIP ViT."""
    path = Path(path)
    if path.is_dir():
        path = _weights_in_folder(path)
    if not path.is_file():
        raise WeightLoadError(f"{path}: CLIP weight file not found")
    state, torchscript = _read_tensors(path)
    state = {k: v for k, v in state.items() if torch.is_tensor(v) or k in OPENAI_MARKERS}
    keys = list(state)
    if any(k.startswith(("vision_model.", "text_model.")) for k in keys):
        return _hf_layout(path, state)
    refusal = _family_refusal(keys, None)
    if refusal:
        raise WeightLoadError(f"{path}: {refusal}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        found = ", ".join(keys[:3]) or "nothing"
        raise WeightLoadError(
            f"{path}: not a CLIP ViT (no {missing[0]}; found {found}{', ...' if len(keys) > 3 else ''})"
        )
    return _openai_layout(path, state, torchscript)


def resolve_quick_gelu(clip_file: ClipFile, option: bool | None) -> bool:
    """The activation to build: ``option`` (``options.quick_gelu``) when given (a warning where the file
    says otherwise), else what the file says; WeightLoadError asking for the option where it says nothing."""
    said = clip_file.quick_gelu
    if option is not None:
        if said is not None and bool(option) != said:
            warnings.warn(
                ConfigWarning(
                    f"{clip_file.path}: options.quick_gelu={bool(option)} overrides {clip_file.activation_source} "
                    f"(quick_gelu={said}); features differ from the network that wrote the file"
                ),
                stacklevel=2,
            )
        return bool(option)
    if said is None:
        why = f" ({clip_file.activation_source})" if clip_file.activation_source else ""
        raise WeightLoadError(
            f"{clip_file.path}: {clip_file.layout} that does not say its activation{why} (QuickGELU for OpenAI's "
            "weights, GELU for most open_clip/LAION ones; the wrong one gives silently wrong features): "
            "set options.quick_gelu: true|false (wsss import ... options.quick_gelu=true)"
        )
    return said
