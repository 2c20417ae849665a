"""CLIP for CLIP-ES (docs/methods/clip_es.md#spec): open_clip's model, tokenizer and weights
in OpenAI's key layout, plus what CLIP-ES changes.

The networks are ``open_clip.CLIP`` (its ``VisionTransformer``, text ``Transformer`` and BPE
tokenizer); this module adds only the pieces CLIP-ES runs differently (docs/methods/clip_es.md#pipeline,
steps 2, 5, 7):

- :func:`build_clip`: an ``open_clip.CLIP`` of the architecture a state dict in OpenAI's layout
  implies (open_clip's own ``build_model_from_openai_state_dict`` fixes the text heads to width // 64,
  which a small text tower does not have; the heads are a parameter here), in float32.
- :func:`interpolate_pos_embed`: the patch position embedding resized bilinearly to the image's grid
  (with the official fp16 rounding as a switch).
- :func:`vision_tokens`: conv1, CLS, position embedding, ``ln_pre`` and the first blocks under
  ``no_grad``, keeping each block's head-averaged attention map.
- :func:`last_block_scores`: the last block with gradients, ``ln_post``, the **mean of the patch
  tokens** (not CLS), ``proj`` and the softmax over text classes; returns the ``ln_1`` output that
  Grad-CAM reads.
- :func:`encode_text`: open_clip's ``encode_text`` (EOT = argmax of the token ids).

Weights (:func:`load_clip_file`, :func:`read_clip_state_dict`; the layouts in ``clip_files.py``): OpenAI's
TorchScript archive (``ViT-B-16.pt``, its tensors read from ``data.pkl`` without running code from it) or
plain state dict, open_clip's state dicts, Hugging Face CLIP folders; the activation (QuickGELU or GELU) is
what the file says, else ``options.quick_gelu``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsss.core.errors import ConfigError, WeightLoadError
from wsss.models.clip_files import (  # noqa: F401 - the TorchScript reader lived here; its names stay importable
    REQUIRED_KEYS,
    _is_torchscript,
    _rebuild_tensor,
    _script_state_dict,
    _ScriptObject,
    _TorchScriptUnpickler,
    read_clip_file,
    read_torchscript_state_dict,
    resolve_quick_gelu,
)

#: OpenAI's image normalisation (CLIP's preprocess, CLIP-ES ``_transform_resize``)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipArch:
    """The architecture of a CLIP ViT, as read off its state dict (``arch_of_state_dict``)."""

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    context_length: int
    vocab_size: int
    text_width: int
    text_heads: int
    text_layers: int
    #: MLP width / model width of each tower (CLIP's is 4; a custom or distilled CLIP may differ; open_clip's
    #: ``mlp_ratio``). Defaults keep the runs written before these fields loading.
    vision_mlp_ratio: float = 4.0
    text_mlp_ratio: float = 4.0

    @property
    def vision_heads(self) -> int:
        return self.vision_width // 64  # OpenAI's and open_clip's head width 64

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)

    def describe(self) -> str:
        """``ViT-B/16, 224 px`` for OpenAI's sizes, else the widths and depths."""
        named = {(768, 12): "B", (1024, 24): "L", (512, 12): "B-32-like", (1280, 32): "H"}
        size = named.get((self.vision_width, self.vision_layers))
        mlp = (
            ""
            if (self.vision_mlp_ratio, self.text_mlp_ratio) == (4.0, 4.0)
            else (f", MLP ratio {self.vision_mlp_ratio:g} / {self.text_mlp_ratio:g} (vision / text)")
        )
        if size in ("B", "L", "H"):
            return f"ViT-{size}/{self.patch_size}, {self.image_size} px{mlp}"
        return (
            f"ViT of width {self.vision_width}, {self.vision_layers} layers, patch {self.patch_size}, "
            f"{self.image_size} px{mlp}"
        )


def arch_of_state_dict(state: Mapping[str, torch.Tensor], text_heads: int | None = None) -> ClipArch:
    """The ``ClipArch`` of an OpenAI-layout CLIP ViT state dict (as OpenAI's ``build_model``), with
    ``text_heads`` (default width // 64, OpenAI's rule) given for text towers narrower than 64."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise KeyError(f"not a CLIP ViT state dict in OpenAI's layout (no {', '.join(missing[:3])})")
    vision_layers = len([k for k in state if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
    text_layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    conv = state["visual.conv1.weight"]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = int(state["ln_final.weight"].shape[0])
    heads = int(text_heads) if text_heads else text_width // 64
    if heads < 1 or text_width % heads:
        raise KeyError(f"text width {text_width} cannot be split into {heads} heads (set text_heads)")
    vision_width = int(conv.shape[0])
    return ClipArch(
        embed_dim=int(state["text_projection"].shape[1]),
        image_size=int(conv.shape[-1]) * grid,
        patch_size=int(conv.shape[-1]),
        vision_width=int(conv.shape[0]),
        vision_layers=vision_layers,
        context_length=int(state["positional_embedding"].shape[0]),
        vocab_size=int(state["token_embedding.weight"].shape[0]),
        text_width=text_width,
        text_heads=heads,
        text_layers=text_layers,
        vision_mlp_ratio=_mlp_ratio(state, "visual.transformer", vision_width),
        text_mlp_ratio=_mlp_ratio(state, "transformer", text_width),
    )


def _mlp_ratio(state: Mapping[str, torch.Tensor], tower: str, width: int) -> float:
    """A tower's MLP width over its model width, read off its first block (CLIP's 4.0 where it has none)."""
    fc = state.get(f"{tower}.resblocks.0.mlp.c_fc.weight")
    if fc is None:
        return 4.0
    hidden = int(fc.shape[0])
    ratio = hidden / width
    if int(width * ratio) != hidden:  # open_clip builds int(width * mlp_ratio) units
        raise KeyError(f"{tower}: an MLP of {hidden} units at width {width}, not a width open_clip can build")
    return ratio


def build_clip(arch: ClipArch, quick_gelu: bool = True) -> nn.Module:
    """An ``open_clip.CLIP`` (float32) of ``arch``, with OpenAI's parameter names; ``quick_gelu``: OpenAI's
    activation (QuickGELU) or plain GELU (most open_clip / LAION weights; ``clip_files.py``)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(
        layers=arch.vision_layers,
        width=arch.vision_width,
        patch_size=arch.patch_size,
        image_size=arch.image_size,
        mlp_ratio=arch.vision_mlp_ratio,
    )
    text = CLIPTextCfg(
        context_length=arch.context_length,
        vocab_size=arch.vocab_size,
        width=arch.text_width,
        heads=arch.text_heads,
        layers=arch.text_layers,
        mlp_ratio=arch.text_mlp_ratio,
    )
    return CLIP(arch.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu, cast_dtype=None).float().eval()


# ---- weights -------------------------------------------------------------------------------------


def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A CLIP state dict in OpenAI's key layout from ``path``: OpenAI's TorchScript ``.pt``, a plain /
    open_clip state dict (``.pt``/``.pth``/``.bin``/``.safetensors``; ``state_dict`` wrappers and ``module.``
    prefixes removed), an ``.npz`` of arrays, or a Hugging Face CLIP folder / file (keys mapped;
    ``clip_files.py``). WeightLoadError naming the file otherwise."""
    state = read_clip_file(path).state
    return {
        k: v
        for k, v in state.items()
        if torch.is_tensor(v) and k not in ("input_resolution", "context_length", "vocab_size")
    }


def load_clip_file(
    path: str | Path, text_heads: int | None = None, quick_gelu: bool | None = None
) -> tuple[nn.Module, ClipArch, bool]:
    """(model, arch, quick_gelu): ``build_clip`` of the file's architecture and activation with the file's
    weights (float32, eval mode). The activation is what the file says (``clip_files.read_clip_file``),
    ``quick_gelu`` when given; WeightLoadError naming the file if it says nothing and ``quick_gelu`` is None,
    or if it is not a CLIP ViT."""
    model, arch, gelu, _ = load_clip_described(path, text_heads, quick_gelu)
    return model, arch, gelu


def load_clip_described(
    path: str | Path, text_heads: int | None = None, quick_gelu: bool | None = None
) -> tuple[nn.Module, ClipArch, bool, str]:
    """``load_clip_file`` and one line of what the file was found to be: its layout, its architecture, and its
    activation with where that was read (what ``wsss import clip_es|excel`` prints)."""
    clip_file = read_clip_file(path)
    gelu = resolve_quick_gelu(clip_file, quick_gelu)
    state = {k: v.float() for k, v in clip_file.state.items() if torch.is_tensor(v)}
    try:
        arch = arch_of_state_dict(state, text_heads or clip_file.text_heads)
    except KeyError as e:
        raise WeightLoadError(f"{path}: {e.args[0]}") from None
    model = build_clip(arch, quick_gelu=gelu)
    own = model.state_dict()
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state and k != "attn_mask"]
    if bad or missing:
        detail = (
            f"{bad[0]} is {tuple(state[bad[0]].shape)} where this architecture has {tuple(own[bad[0]].shape)}"
            if bad
            else f"no {missing[0]}"
        )
        raise WeightLoadError(f"{path}: not a CLIP ViT in OpenAI's layout ({detail})")
    model.load_state_dict(state, strict=False)
    source = (
        clip_file.activation_source
        if clip_file.quick_gelu is not None and quick_gelu is None
        else ("options.quick_gelu")
    )
    line = f"{clip_file.layout}; {arch.describe()}; {'QuickGELU' if gelu else 'GELU'} ({source})"
    return model, arch, gelu, line


def load_clip(
    path: str | Path, text_heads: int | None = None, quick_gelu: bool | None = None
) -> tuple[nn.Module, ClipArch]:
    """``load_clip_file`` without the activation it resolved."""
    model, arch, _ = load_clip_file(path, text_heads, quick_gelu)
    return model, arch


# ---- text ----------------------------------------------------------------------------------------


def check_prompts_fit(names: list[str], templates: list[str], context_length: int = 77) -> None:
    """ConfigError naming the first class name whose prompt does not fit CLIP's context: open_clip's tokenizer
    cuts a longer text without a word, and the cut prompt describes another thing. A token count includes the
    start and end tokens."""
    import open_clip

    encode = open_clip.tokenizer._tokenizer.encode  # the BPE open_clip.tokenize runs (OpenAI's vocabulary)
    for name in names:
        for template in templates:
            text = template.format(name)
            count = len(encode(text)) + 2
            if count > context_length:
                raise ConfigError(
                    f"class {name!r}: its prompt {text!r} is {count} tokens; CLIP's context holds {context_length} "
                    "(shorten the name in classes.txt, or give it a shorter synonym in options.synonyms)"
                )


def tokenize(texts: list[str], context_length: int = 77) -> torch.Tensor:
    """open_clip's BPE tokenizer (OpenAI's vocabulary): (n, context_length) int64 token ids."""
    import open_clip

    return open_clip.tokenize(texts, context_length=context_length)


@torch.no_grad()
def encode_text(model: nn.Module, tokens: torch.Tensor, out_proj_fp16: bool = False) -> torch.Tensor:
    """CLIP's text embedding (before normalisation) of (n, 77) tokens: open_clip's ``encode_text``; with
    ``out_proj_fp16`` the same tower with each attention's output projection in float16
    (:func:`attention_fp16_out`, WeCLIP+)."""
    if not out_proj_fp16:
        return model.encode_text(tokens)
    x = model.token_embedding(tokens) + model.positional_embedding.to(model.token_embedding.weight.dtype)
    for block in model.transformer.resblocks:
        out, _ = attention_fp16_out(block.attn, block.ln_1(x), model.attn_mask)
        x = x + block.ls_1(out.to(x.dtype))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection


# ---- vision --------------------------------------------------------------------------------------


def interpolate_pos_embed(pos: torch.Tensor, grid_hw: tuple[int, int], fp16_round: bool = True) -> torch.Tensor:
    """(1 + n, D) position embedding -> (1 + gh*gw, D): the patch part resized bilinearly
    (align_corners False) to ``grid_hw``, the CLS row kept (docs/methods/clip_es.md#step-5). ``fp16_round``: the
    official ``upsample_pos_emb`` returns ``.half()`` and adds it in the model's dtype (quirk)."""
    cls, patches = pos[:1], pos[1:]
    n, d = patches.shape
    size = math.isqrt(n)
    if size * size != n:
        raise ValueError(f"position embedding of {n} patches is not a square grid")
    grid = patches.permute(1, 0).reshape(1, d, size, size)
    grid = F.interpolate(grid, size=tuple(grid_hw), mode="bilinear", align_corners=False)
    out = torch.cat([cls, grid.reshape(d, -1).permute(1, 0)], 0)
    return out.half().to(pos.dtype) if fp16_round else out


def attention_fp16_out(attn: nn.MultiheadAttention, h: torch.Tensor, mask: torch.Tensor | None = None):
    """``nn.MultiheadAttention`` of batch-first tokens ``h`` (N, L, D) whose output projection runs in float16
    (WeCLIP+'s ``myAtt``: ``F.linear(out.half(), W.half(), b.half())``, docs/methods/weclip_plus.md#q1), returning
    (output in float16, the head-averaged attention (N, L, L) in ``h``'s dtype). ``mask``: an additive (L, L)."""
    n, length, d = h.shape
    heads = attn.num_heads
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(n, length, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    scores = (q / math.sqrt(d // heads)) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask.to(scores)
    weights = scores.softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(n, length, d)
    proj = attn.out_proj
    return F.linear(out.half(), proj.weight.half(), proj.bias.half()), weights.sum(dim=1) / heads


def block_with_attention(
    block: nn.Module, x: torch.Tensor, out_proj_fp16: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One open_clip ``ResidualAttentionBlock`` on batch-first tokens (N, L, D), returning (output,
    the head-averaged attention (N, L, L), the ``ln_1`` output that Grad-CAM reads). ``out_proj_fp16``: the
    attention's output projection in float16 (:func:`attention_fp16_out`, WeCLIP+'s quirk)."""
    h = block.ln_1(x)
    if out_proj_fp16:
        attn_out, attn = attention_fp16_out(block.attn, h)
        attn_out = attn_out.to(x.dtype)
    else:
        attn_out, attn = block.attn(h, h, h, need_weights=True, average_attn_weights=True)
    x = x + block.ls_1(attn_out)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, attn, h


def embed_image(visual: nn.Module, image: torch.Tensor, pos_fp16: bool = True) -> torch.Tensor:
    """conv1 patches + CLS + interpolated position embedding + ``ln_pre``: (N, 1 + gh*gw, D)."""
    x = visual.conv1(image)
    n, d, gh, gw = x.shape
    x = x.reshape(n, d, gh * gw).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(n, 1, d, dtype=x.dtype, device=x.device)
    x = torch.cat([cls, x], dim=1)
    x = x + interpolate_pos_embed(visual.positional_embedding, (gh, gw), pos_fp16).to(x.dtype)
    return visual.ln_pre(x)


@torch.no_grad()
def vision_blocks(
    visual: nn.Module,
    image: torch.Tensor,
    *,
    pos_fp16: bool = True,
    layers_by_77_tokens: bool = True,
    out_proj_fp16: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each block's output tokens (N, L, D) and head-averaged attention (N, L, L), for every block but the last.

    ``layers_by_77_tokens`` (quirk): the official ``Transformer.forward`` of CLIP-ES, ExCEL and WeCLIP+ tells
    text from images by the token count, so an image of exactly 77 tokens (76 patches) runs every block here,
    and the last block then runs a second time in :func:`last_block_scores`.
    """
    x = embed_image(visual, image, pos_fp16)
    blocks = visual.transformer.resblocks
    count = len(blocks) if layers_by_77_tokens and x.shape[1] == 77 else len(blocks) - 1
    outs, maps = [], []
    for block in list(blocks)[:count]:
        x, attn, _ = block_with_attention(block, x, out_proj_fp16)
        outs.append(x)
        maps.append(attn)
    return outs, maps


@torch.no_grad()
def vision_tokens(
    visual: nn.Module, image: torch.Tensor, *, pos_fp16: bool = True, layers_by_77_tokens: bool = True
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Tokens after all blocks but the last (N, L, D) and each of those blocks' attention (N, L, L)
    (:func:`vision_blocks`, its last output)."""
    outs, maps = vision_blocks(visual, image, pos_fp16=pos_fp16, layers_by_77_tokens=layers_by_77_tokens)
    return (outs[-1] if outs else embed_image(visual, image, pos_fp16)), maps


def last_block_scores(
    model: nn.Module, tokens: torch.Tensor, text_features: torch.Tensor, out_proj_fp16: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CLIP-ES ``forward_last_layer`` (docs/methods/clip_es.md#step-7): the last visual block on ``tokens``
    (N, L, D), ``ln_post``, mean of the patch tokens, ``proj``, cosine with ``text_features`` (T, E)
    scaled by ``logit_scale.exp()``, softmax over T. Returns (probs (N, T), attention (N, L, L),
    ``ln_1`` output (N, L, D), which keeps its graph for Grad-CAM). ``out_proj_fp16``: see
    :func:`block_with_attention`."""
    visual = model.visual
    x, attn, ln1 = block_with_attention(visual.transformer.resblocks[-1], tokens, out_proj_fp16)
    x = visual.ln_post(x)
    x = x[:, 1:, :].mean(dim=1) @ visual.proj
    image_features = x / x.norm(dim=1, keepdim=True)
    text = text_features / text_features.norm(dim=1, keepdim=True)
    logits = model.logit_scale.exp() * image_features @ text.t()
    return logits.softmax(dim=-1), attn, ln1
