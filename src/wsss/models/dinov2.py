"""DINOv2 ViT (Oquab et al., 2023) as WeCLIP+ runs it: a frozen feature extractor whose normalised patch tokens
(``forward_features(x)['x_norm_patchtokens']``) feed a decoder (docs/methods/weclip_plus.md#weights).

The network is written here from the architecture of the hub model ``dinov2_vits14`` (facebookresearch/dinov2,
``hub/backbones.py``: patch 14, 518 px position table, LayerScale 1.0, MLP ratio 4, no register tokens,
bicubic position resize with the historical offset 0.1 and no antialiasing), with its parameter names, so
that the released ``dinov2_vits14_pretrain.pth`` loads as it is. The sizes (width, depth, heads, grid,
registers) are read off the weight file (:func:`arch_of_state_dict`); nothing is downloaded.

Weight files (:func:`read_dinov2_file`): the hub checkpoint (a plain state dict, ``*_pretrain.pth``), the same
as ``.safetensors`` / ``.npz``, or a Hugging Face ``Dinov2Model`` folder (``config.json`` + ``model.safetensors``
or ``pytorch_model.bin``), whose keys are mapped to the hub names here (no ``transformers`` import).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.core.errors import WeightLoadError


@dataclass(frozen=True)
class Dinov2Arch:
    """A DINOv2 ViT's sizes, as read off its state dict."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    patch_size: int = 14
    pos_grid: int = 37  # the position table's side (518 px / 14)
    mlp_ratio: float = 4.0
    num_register_tokens: int = 0
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    layer_scale: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).unbind(2)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class _LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm block: ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))`` (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, layer_scale: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.ls1 = _LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = _LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Dinov2(nn.Module):
    """DINOv2 ViT with the hub's parameter names (``cls_token``, ``pos_embed``, ``mask_token``,
    ``patch_embed.proj``, ``blocks.N.*``, ``norm``, ``register_tokens`` when it has them)."""

    def __init__(self, arch: Dinov2Arch):
        super().__init__()
        self.arch, d = arch, arch.embed_dim
        self.patch_size = arch.patch_size
        self.patch_embed = _PatchEmbed(arch.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, arch.pos_grid**2 + 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, d))  # unused (masked training only); kept for the key set
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, arch.num_register_tokens, d)) if arch.num_register_tokens else None
        )
        self.blocks = nn.ModuleList(
            _Block(d, arch.num_heads, arch.mlp_ratio, arch.layer_scale) for _ in range(arch.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def position_table(self, gh: int, gw: int) -> torch.Tensor:
        """(1, 1 + gh*gw, D): the class row and the patch table resized (bicubic) to (gh, gw). The hub code asks
        for a scale factor ``(g + offset) / M`` rather than the size (its "historical kludge"); the size torch
        then computes is ``floor(M * (g + offset) / M) = g``, and the bicubic weights follow the scale factor,
        so it is passed the same way here. A grid equal to the table's (square) uses it as it is."""
        pos = self.pos_embed.float()
        m = self.arch.pos_grid
        if (gh, gw) == (m, m):
            return self.pos_embed
        grid = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        off = self.arch.interpolate_offset
        kwargs: dict[str, Any] = {"scale_factor": ((gh + off) / m, (gw + off) / m)} if off else {"size": (gh, gw)}
        grid = F.interpolate(grid, mode="bicubic", antialias=self.arch.interpolate_antialias, **kwargs)
        if tuple(grid.shape[-2:]) != (gh, gw):
            raise ValueError(f"DINOv2 position table resized to {tuple(grid.shape[-2:])}, not {(gh, gw)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return torch.cat([pos[:, :1], grid], dim=1).to(self.pos_embed.dtype)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` (B, 3, H, W), H and W multiples of the patch -> {``x_norm_clstoken`` (B, D),
        ``x_norm_patchtokens`` (B, H/p * W/p, D), ``x_prenorm``}."""
        b, _, h, w = x.shape
        p = self.patch_size
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = tokens + self.position_table(h // p, w // p).to(tokens.dtype)
        if self.register_tokens is not None:
            regs = self.register_tokens.expand(b, -1, -1).to(tokens.dtype)
            tokens = torch.cat([tokens[:, :1], regs, tokens[:, 1:]], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        normed = self.norm(tokens)
        r = self.arch.num_register_tokens
        return {"x_norm_clstoken": normed[:, 0], "x_norm_patchtokens": normed[:, r + 1 :], "x_prenorm": tokens}


# ---- weights --------------------------------------------------------------------------------------------------

_REQUIRED = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "blocks.0.attn.qkv.weight")


def arch_of_state_dict(state: Mapping[str, torch.Tensor], num_heads: int | None = None) -> Dinov2Arch:
    """The :class:`Dinov2Arch` of a hub-layout state dict. The head count is not in the tensors: the hub models
    have 64-wide heads (ViT-S/14 6, B 12, L 16, g 24); ``num_heads`` overrides that (tiny test models).
    KeyError naming what is missing."""
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise KeyError(f"not a DINOv2 ViT state dict in the hub's layout (no {', '.join(missing[:3])})")
    if any(".w12." in k or ".w3." in k for k in state):
        raise KeyError("a DINOv2 with the SwiGLU MLP (ViT-g); WeCLIP+ uses ViT-S/14 and wsss builds the plain MLP")
    if any(k.startswith("blocks.0.0.") for k in state):
        raise KeyError("a DINOv2 state dict in block chunks (blocks.0.0.*); the hub checkpoints have none")
    dim = int(state["cls_token"].shape[-1])
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    n_pos = int(state["pos_embed"].shape[1]) - 1
    grid = math.isqrt(n_pos)
    if grid * grid != n_pos:
        raise KeyError(f"a position table of {n_pos} patches, not a square grid")
    heads = int(num_heads) if num_heads else max(dim // 64, 1)
    if dim % heads:
        raise KeyError(f"width {dim} cannot be split into {heads} heads")
    hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
    regs = int(state["register_tokens"].shape[1]) if "register_tokens" in state else 0
    return Dinov2Arch(
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        patch_size=int(state["patch_embed.proj.weight"].shape[-1]),
        pos_grid=grid,
        mlp_ratio=hidden / dim,
        num_register_tokens=regs,
        layer_scale="blocks.0.ls1.gamma" in state,
    )


def hf_to_hub_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face ``Dinov2Model`` state dict in the hub's names (q, k, v stacked into ``qkv``; ``layer_scale1
    .lambda1`` -> ``ls1.gamma``). KeyError if a key is missing."""
    s = {k.removeprefix("dinov2."): v for k, v in state.items()}
    out = {
        "cls_token": s["embeddings.cls_token"],
        "pos_embed": s["embeddings.position_embeddings"],
        "mask_token": s["embeddings.mask_token"].reshape(1, -1),
        "patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": s["layernorm.weight"],
        "norm.bias": s["layernorm.bias"],
    }
    if "embeddings.register_tokens" in s:
        out["register_tokens"] = s["embeddings.register_tokens"]
    layers = sorted({int(k.split(".")[2]) for k in s if k.startswith("encoder.layer.")})
    for i in layers:
        src, dst = f"encoder.layer.{i}", f"blocks.{i}"
        for p in ("weight", "bias"):
            out[f"{dst}.attn.qkv.{p}"] = torch.cat(
                [s[f"{src}.attention.attention.{n}.{p}"] for n in ("query", "key", "value")]
            )
            for a, b in (
                ("attention.output.dense", "attn.proj"),
                ("norm1", "norm1"),
                ("norm2", "norm2"),
                ("mlp.fc1", "mlp.fc1"),
                ("mlp.fc2", "mlp.fc2"),
            ):
                out[f"{dst}.{b}.{p}"] = s[f"{src}.{a}.{p}"]
        if f"{src}.layer_scale1.lambda1" in s:
            out[f"{dst}.ls1.gamma"] = s[f"{src}.layer_scale1.lambda1"]
            out[f"{dst}.ls2.gamma"] = s[f"{src}.layer_scale2.lambda1"]
    return out


def _hf_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightLoadError(f"{path}: cannot read the config beside the DINOv2 weights ({e})") from None
    return cfg if isinstance(cfg, dict) else {}


def read_dinov2_file(path: str | Path) -> tuple[dict[str, torch.Tensor], int | None, str]:
    """(state dict in the hub's names, the head count a config gives or None, the layout found) of a DINOv2
    weight file or Hugging Face folder; read without running code from it. WeightLoadError naming the file."""
    from wsss.models.clip_files import read_safetensors
    from wsss.models.weights import read_state_dict

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        found = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()]
        if not found:
            raise WeightLoadError(f"{path}: a folder without DINOv2 weights (model.safetensors, pytorch_model.bin)")
        path = found[0]
    if not path.is_file():
        raise WeightLoadError(f"{path}: DINOv2 weight file not found")
    try:
        if path.suffix == ".safetensors":
            state: dict[str, Any] = read_safetensors(path)
        elif path.suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as z:
                state = {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        else:
            state = read_state_dict(path)
    except WeightLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise WeightLoadError(f"{path}: cannot read DINOv2 weights ({type(e).__name__}: {e})") from None
    state = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if any(k.removeprefix("dinov2.").startswith("embeddings.") for k in state):
        cfg = _hf_config(folder)
        if cfg.get("model_type") not in (None, "dinov2"):
            raise WeightLoadError(f"{path}: a Hugging Face {cfg.get('model_type')!r} model, not 'dinov2'")
        if cfg.get("use_swiglu_ffn"):
            raise WeightLoadError(f"{path}: a DINOv2 with the SwiGLU MLP; wsss builds the plain MLP")
        try:
            mapped = hf_to_hub_state_dict(state)
        except KeyError as e:
            raise WeightLoadError(f"{path}: a Hugging Face DINOv2 file without {e.args[0]}") from None
        heads = cfg.get("num_attention_heads")
        return mapped, int(heads) if heads else None, "Hugging Face Dinov2Model"
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    return state, None, "DINOv2 hub state dict"


def load_dinov2_file(path: str | Path, num_heads: int | None = None) -> tuple[Dinov2, Dinov2Arch, str]:
    """(model (float32, eval), arch, one line of what the file is) of a DINOv2 weight file or HF folder."""
    state, cfg_heads, layout = read_dinov2_file(path)
    try:
        arch = arch_of_state_dict(state, num_heads or cfg_heads)
    except KeyError as e:
        raise WeightLoadError(f"{path}: {e.args[0]}") from None
    model = Dinov2(arch).float().eval()
    own = model.state_dict()
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state]
    if bad or missing:
        detail = (
            f"{bad[0]} is {tuple(state[bad[0]].shape)}, this architecture has {tuple(own[bad[0]].shape)}"
            if bad
            else f"no {missing[0]}"
        )
        raise WeightLoadError(f"{path}: not a DINOv2 ViT in the hub's layout ({detail})")
    model.load_state_dict({k: state[k].float() for k in own})
    line = (
        f"{layout}; DINOv2 ViT of width {arch.embed_dim}, {arch.depth} blocks, {arch.num_heads} heads, patch "
        f"{arch.patch_size}"
    )
    return model, arch, line
