"""ExCEL's pieces of a frozen CLIP ViT (official code zwyang6/ExCEL at 2cd7f510; docs/methods/excel.md#spec):
the CLIP-surgery forward (SVC), the patch-text maps (``clip_feature_surgery``), the text enrichment (TSE) and
the trainable decoder. The CLIP is ``models/clip.py``'s open_clip model; nothing here changes it: the surgery
attention of the last blocks is computed from each block's own attention weights.

Official behaviours that look unintended are switches of :class:`ExcelModelQuirks`; ``True`` reproduces the
official code. ``Qn`` is a quirk number: the row ``#qn`` of docs/methods/excel.md#quirks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.clip import block_with_attention, interpolate_pos_embed, tokenize
from wsss.models.clip_decoder import BlockFusion, DecoderTransformer  # noqa: F401 - shared with WeCLIP+


@dataclass(frozen=True)
class ExcelModelQuirks:
    """The official model-side behaviours, each a switch (True: as the official code)."""

    inplace_alias: bool = True  # Q8: the stored block outputs 6..10 as later in-place updates leave them
    heads_summed: bool = True  # Q7: surgery attention (and the attention it returns) summed over heads, not averaged
    token_axis_norm: bool = True  # Q5: the image features normalised over the token axis, not the channels
    cls_in_minmax: bool = True  # Q6: the min-max of the patch-text maps includes the CLS row


# ---- vision: the surgery forward (SVC, docs/methods/excel.md#svc) --------------------------------------------


def lvc_attention(ex_feats: torch.Tensor) -> torch.Tensor:
    """The Learnable Visual Calibration term (docs/methods/excel.md#lvc): from decoder features ``ex_feats``
    (B, c, h, w), ``softmax((S - mean(S)) * 3)`` with ``S`` their cosine similarities (B, hw, hw), the negatives
    set to -inf first. The mean runs over the whole batch (Q10, kept: the method)."""
    f = F.normalize(ex_feats.flatten(2), dim=1)
    sim = torch.einsum("bcm,bcn->bmn", f, f)
    sim = (sim - sim.mean()) * 3.0
    sim = sim.masked_fill(sim < 0, float("-inf"))
    return sim.softmax(dim=-1)


def _surgery_attention(
    block: nn.Module, x: torch.Tensor, quirks: ExcelModelQuirks, ex_attn: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``clip_surgery_model.Attention`` with ``block``'s attention weights on ``x`` (B, N, C) (``ln_1`` applied):
    (new-path output, original-path output, the original attention (B, N, N) over heads)."""
    attn_mod = block.attn
    b, n, c = x.shape
    heads = attn_mod.num_heads
    qkv = F.linear(x, attn_mod.in_proj_weight, attn_mod.in_proj_bias)
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    scale = (c // heads) ** -0.5
    attn_ori = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    attn = (
        (q @ q.transpose(-2, -1) * scale).softmax(dim=-1)
        + (k @ k.transpose(-2, -1) * scale).softmax(dim=-1)
        + (v @ v.transpose(-2, -1) * scale).softmax(dim=-1)
    ) / 3
    if ex_attn is not None:  # LVC: added to every head's patch-to-patch attention
        attn[:, :, 1:, 1:] += ex_attn.unsqueeze(1).to(attn.dtype)
    reduce = torch.sum if quirks.heads_summed else torch.mean
    attn = reduce(attn, dim=1, keepdim=True)  # one map applied to every head's values (Q7)
    out = F.linear((attn @ v).transpose(1, 2).reshape(b, n, c), attn_mod.out_proj.weight, attn_mod.out_proj.bias)
    out_ori = F.linear(
        (attn_ori @ v).transpose(1, 2).reshape(b, n, c), attn_mod.out_proj.weight, attn_mod.out_proj.bias
    )
    return out, out_ori, reduce(attn_ori, dim=1)


@torch.no_grad()
def surgery_forward(
    clip: nn.Module,
    images: torch.Tensor,
    quirks: ExcelModelQuirks,
    surgery_blocks: int = 5,
    ex_feats: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ExCEL's ``generate_clip_fts`` (docs/methods/excel.md#svc): (image features (B, 1+N, E), attention
    (L, B, 1+N, 1+N), every block's tokens (L, B, 1+N, D)) of square ``images`` (B, 3, S, S), normalised for CLIP.

    The first blocks run as CLIP; the last ``surgery_blocks`` run a dual path: the original attention, whose
    stream goes on through the MLPs, and the surgery attention (the mean of the q-q, k-k and v-v softmaxes),
    whose stream adds the attention outputs only. The output tokens are the surgery stream's, with the CLS of
    the original stream, through ``ln_post`` and ``proj``; then normalised (``quirks.token_axis_norm``: over
    the tokens, Q5). The tokens kept for the decoder are each block's output (the original stream's in the
    dual blocks), or with ``quirks.inplace_alias`` what the official in-place updates leave in them (Q8).
    ``ex_feats`` (B, c, h, w): the decoder's features for LVC (:func:`lvc_attention`)."""
    visual = clip.visual
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    bsz, width, gh, gw = x.shape
    x = x.reshape(bsz, width, gh * gw).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(bsz, 1, width, dtype=x.dtype, device=x.device)
    x = torch.cat([cls, x], dim=1)
    x = visual.ln_pre(x + interpolate_pos_embed(visual.positional_embedding, (gh, gw), fp16_round=False).to(x.dtype))
    blocks = list(visual.transformer.resblocks)
    first = len(blocks) - surgery_blocks
    if not 0 < first <= len(blocks):
        raise ValueError(f"surgery_blocks={surgery_blocks} for a CLIP of {len(blocks)} blocks")
    ex_attn = lvc_attention(ex_feats) if ex_feats is not None else None
    attns, feats, attn_outs = [], [], []
    for block in blocks[:first]:
        x, attn, _ = block_with_attention(block, x)  # head-averaged attention (nn.MultiheadAttention's)
        attns.append(attn)
        feats.append(x)
    x_ori = x
    for block in blocks[first:]:
        new, ori, attn = _surgery_attention(block, block.ln_1(x_ori), quirks, ex_attn)
        x_ori = x_ori + ori
        x_ori = x_ori + block.mlp(block.ln_2(x_ori))
        x = x + new  # the surgery stream: no MLP
        attns.append(attn)
        feats.append(x_ori)
        attn_outs.append(ori)
    x = torch.cat([x_ori[:, :1], x[:, 1:]], dim=1)  # the CLS of the original stream
    if quirks.inplace_alias:  # Q8: the last plain block's entry is the surgery stream's own tensor, updated in place
        feats[first - 1] = x
        for i in range(first, len(blocks) - 1):  # a dual block's entry gets the next block's attention output
            feats[i] = feats[i] + attn_outs[i - first + 1]
    out = visual.ln_post(x) @ visual.proj
    out = out / out.norm(dim=1 if quirks.token_axis_norm else -1, keepdim=True)
    return out, torch.stack(attns), torch.stack(feats)


def feature_surgery(image_features: torch.Tensor, text: torch.Tensor, quirks: ExcelModelQuirks) -> torch.Tensor:
    """``clip_feature_surgery`` (docs/methods/excel.md#feature-surgery): patch-text maps (B, 1+N, C) in [0, 1] of
    ``image_features`` (B, 1+N, E) and ``text`` (C, E).

    With ``w`` the class weights of the CLS token (``softmax(2 * cls @ text.T)`` over its mean), the official
    ``((f * t_c * w_c) - mean_c'(f * t_c' * w_c')).sum(-1)`` is computed as ``w_c s_c - mean_c'(w_c' s_c')``
    with ``s = f @ text.T``: the same sum, without the (B, N, C, E) product. Min-max over the tokens, the CLS
    row included with ``quirks.cls_in_minmax`` (Q6)."""
    prob = (image_features[:, :1] @ text.t() * 2).softmax(dim=-1)
    w = prob / prob.mean(dim=-1, keepdim=True)
    weighted = (image_features @ text.t()) * w
    sim = weighted - weighted.mean(dim=-1, keepdim=True)
    rows = sim if quirks.cls_in_minmax else sim[:, 1:]
    lo, hi = rows.min(dim=1, keepdim=True)[0], rows.max(dim=1, keepdim=True)[0]
    return (sim - lo) / (hi - lo)


# ---- text: TSE (docs/methods/excel.md#tse) ------------------------------------------------------------------


@torch.no_grad()
def descriptor_embeddings(clip: nn.Module, descriptions: Mapping[str, list[str]]) -> torch.Tensor:
    """The L2-normalised CLIP text embeddings (n, E) of every class's descriptions, lower-cased, one batch per
    class, in the mapping's order (``attr_clustering``)."""
    out = []
    for sentences in descriptions.values():
        tokens = tokenize([s.lower() for s in sentences]).to(clip.token_embedding.weight.device)
        out.append(F.normalize(clip.encode_text(tokens), p=2, dim=1))
    return torch.cat(out)


def kmeans_bank(embeddings: torch.Tensor, n_clusters: int, seed: int = 0) -> torch.Tensor:
    """The attribute bank (E, K): the centres of ``KMeans(n_clusters, random_state=seed)`` of ``embeddings``
    (n, E), not re-normalised (Q11). ``n_init=1`` (k-means++), what scikit-learn >= 1.4's ``'auto'`` means: the
    official pin (1.0.2) ran 10 inits, so banks differ across versions (Q12); a run keeps the one it computed."""
    from sklearn.cluster import KMeans

    data = embeddings.detach().cpu().double().numpy()
    km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=1).fit(data)
    return torch.from_numpy(np.ascontiguousarray(km.cluster_centers_.T)).to(embeddings.dtype)


def enrich_text(text: torch.Tensor, bank: torch.Tensor, n_fg: int, keep_ratio: float = 0.9) -> torch.Tensor:
    """``attr_aggregate`` (TSE): each foreground text (the first ``n_fg`` rows of ``text`` (C, E)) plus the
    softmax-weighted attributes of ``bank`` (E, K), its lowest ``int((1 - keep_ratio) * K)`` logits masked (Q11:
    the lowest, as official); the background rows as they are; every row L2-normalised. (C, E).
    Where that count is 0 nothing is masked (the official ``[:, -0:]`` would mask every logit)."""
    fg, bg = text[:n_fg], text[n_fg:]
    bank = bank.to(text.dtype)
    logits = fg @ bank
    drop = int((1 - keep_ratio) * bank.shape[1])
    if drop > 0:
        order = logits.argsort(dim=-1, descending=True)
        logits = logits.scatter(-1, order[:, -drop:], float("-inf"))
    enriched = torch.cat([logits.softmax(dim=-1) @ bank.t() + fg, bg])
    return enriched / enriched.norm(dim=1, keepdim=True)


# ---- the decoder (docs/methods/excel.md#decoder; model/segformer_head.py, model/decoder/TransDecoder.py) ---------


class ExcelDecoder(nn.Module):
    """ExCEL's trainable part: ``fuse`` (SegFormerHead over all blocks) and ``head`` (DecoderTransformer)."""

    def __init__(
        self,
        in_channels: int,
        embedding_dim: int,
        num_layers: int,
        num_classes: int,
        decoder_layers: int = 3,
        decoder_heads: int = 8,
    ):
        super().__init__()
        self.fuse = BlockFusion(in_channels, embedding_dim, num_layers)
        self.head = DecoderTransformer(embedding_dim, decoder_layers, decoder_heads, num_classes)

    def forward(self, layers: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``layers`` (L, B, 1+N, D) from :func:`surgery_forward` -> (scores (B, classes, h, w), the fused features
        (B, dim, h, w) after dropout, their attention ``sigmoid(3 (cos - mean cos))`` (B, hw, hw); the mean over
        the whole batch, as official)."""
        n_layers, b, _, d = layers.shape
        tokens = layers[:, :, 1:].permute(0, 1, 3, 2).reshape(n_layers, b, d, *grid)
        fts = self.fuse(tokens)
        seg = self.head(fts)
        flat = F.normalize(fts.reshape(b, fts.shape[1], -1), dim=1)
        cos = flat.transpose(2, 1).bmm(flat)
        return seg, fts, torch.sigmoid((cos - cos.mean()) * 3.0)


def official_decoder_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official ``ExCEL_model`` state dict's decoder (``decoder_fts_fuse.*``, ``decoder.*``; ``module.``
    prefixes dropped) in :class:`ExcelDecoder`'s names (``fuse.*``, ``head.*``); other keys are left out."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("decoder_fts_fuse."):
            out["fuse." + key.removeprefix("decoder_fts_fuse.")] = value
        elif key.startswith("decoder."):
            out["head." + key.removeprefix("decoder.")] = value
    return out
