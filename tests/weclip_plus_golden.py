"""Loading the WeCLIP+ recordings (tests/golden/README.md#weclip_plus): the tiny CLIP (the ExCEL recordings'
CLIP, bit-identical: only the token rows of WeCLIP+'s prompts are WeCLIP+'s own), the tiny DINOv2, the recorded
heads, and a replay of the recorded forward in any dtype. Shared by the golden tests of the model and the method."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch

from golden import load_golden
from wsss.methods.clip_runs import VOC_BACKGROUND

#: the official prompt template and the VOC class prompts (``clip_text.new_class_names``)
TEMPLATE = "a clean origami {}."


@cache
def npz(name: str) -> dict[str, np.ndarray]:
    return load_golden(name)


def normalized(u8: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) or (H, W, 3) uint8 -> (N, 3, H, W) float32 as the official ``normalize_img`` computes it (float64
    ``(x - mean) / std`` per channel, stored as float32): bit-identical to the recorded ``input`` and ``v{j}_input_raw``
    (checked when the recordings were shrunk, which is why those float keys are not kept)."""
    u8 = u8[None] if u8.ndim == 3 else u8
    x = (u8.astype(np.float64) - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
    return torch.from_numpy(np.ascontiguousarray(x.astype(np.float32).transpose(0, 3, 1, 2)))


def clip_state() -> dict[str, torch.Tensor]:
    """The tiny CLIP: ExCEL's recorded weights (the same tensors) with WeCLIP+'s token rows."""
    w, own = npz("excel_weights.npz"), npz("weclip_plus_weights.npz")
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in w.items() if "__row" not in k}
    table = torch.zeros(49408, state["ln_final.weight"].shape[0])
    rows = torch.from_numpy(own["clip.token_embedding.weight__rows"].astype(np.float32))
    table[torch.from_numpy(own["clip.token_embedding.weight__row_ids"])] = rows
    state["token_embedding.weight"] = table
    return state


def dino_state() -> dict[str, torch.Tensor]:
    w = npz("weclip_plus_weights.npz")
    return {k[5:]: torch.from_numpy(w[k].astype(np.float32)) for k in w if k.startswith("dino.")}


def head_state() -> dict[str, torch.Tensor]:
    """The recorded heads (``evalmodel_init.*``) in :class:`WeclipPlusHead`'s (the official) names."""
    w = npz("weclip_plus_weights.npz")
    p = "evalmodel_init."
    return {k[len(p) :]: torch.from_numpy(w[k]) for k in w if k.startswith(p)}


def networks(dtype: torch.dtype = torch.float32) -> tuple[Any, Any, Any]:
    """(clip, dino, head) of the recordings in ``dtype``, eval mode."""
    from wsss.methods.weclip_plus.model import WeclipPlusHead
    from wsss.models.clip import arch_of_state_dict, build_clip
    from wsss.models.dinov2 import Dinov2
    from wsss.models.dinov2 import arch_of_state_dict as dino_arch

    cs = clip_state()
    clip = build_clip(arch_of_state_dict(cs), quick_gelu=True)
    clip.load_state_dict(cs, strict=False)
    ds = dino_state()
    # the tiny DINOv2 has 2 heads of width 32 (tests/golden/README.md#weclip_plus)
    dino = Dinov2(dino_arch(ds, num_heads=2))
    dino.load_state_dict(ds)
    head = WeclipPlusHead(128, 64, 32, 21, decoder_layers=3, decoder_heads=8)
    head.load_state_dict(head_state())
    return clip.to(dtype).eval(), dino.to(dtype).eval(), head.to(dtype).eval()


def replay_forward(dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The recorded ``WeCLIP_Plus.forward`` replayed with wsss's pieces on the recorded input, every quirk on."""
    from wsss.cam.clip_es import text_features
    from wsss.cam.clip_refine import par_refine, scaled_maps, with_background
    from wsss.cam.par import PAR
    from wsss.methods.weclip_plus.cam import refined_cams
    from wsss.methods.weclip_plus.model import clip_features, dino_features

    f = npz("weclip_plus_forward.npz")
    clip, dino, head = networks(dtype)
    x = normalized(np.stack([f["fwd0_uint8"], f["fwd1_uint8"]])).to(dtype)
    out: dict[str, Any] = {}
    out["bg_text_features"] = text_features(clip, VOC_BACKGROUND, [TEMPLATE], out_proj_fp16=True)
    cf = clip_features(clip, x)
    out["clip_fts_all_stack"] = torch.stack(cf.blocks).transpose(1, 2)
    out["clip_attn_weight_stack"] = torch.stack(cf.attn).transpose(0, 1)
    dm = dino_features(dino, x)
    out["dino_x_norm_patchtokens"] = dm.flatten(2).transpose(1, 2)
    with torch.no_grad():
        ho = head(cf.decoder_input(), dm, need_weights=True)
    out.update(
        clip_fts_fused=ho.clip_fts,
        dino_fts_fused_resized=ho.dino_fts,
        out_seg_clip=ho.seg_clip,
        out_seg_dino=ho.seg_dino,
        out_attn_pred=ho.attn_pred,
        seg_dino_prob=ho.seg_prob(),
        decoder_attn_weights_clip=torch.stack(ho.decoder_attn),
    )
    fg = torch.from_numpy(f["fg_text_features"]).to(dtype)
    bg = out["bg_text_features"]
    par = PAR(dilations=[1, 2, 4, 8, 12, 24], num_iter=20)
    for b in range(x.shape[0]):
        keys = [int(k) for k in f[f"b{b}_keys"]]
        classes = torch.tensor(sorted(keys))
        ic = refined_cams(
            clip,
            cf.cam_tokens()[b : b + 1],
            torch.cat([fg[classes], bg]),
            len(classes),
            cf.grid,
            torch.stack(cf.attn)[:, b],
            ho.attn_pred[b],
            ho.seg_prob()[b],
            classes,
        )
        out[f"b{b}_attn_weight_cat"] = ic.extra["attn"]
        out[f"b{b}_attn_weight_times_seg_attn"] = ic.extra["affinity"]
        out[f"b{b}_trans_mat"] = ic.trans
        for j, c in enumerate(classes.tolist()):  # the recording's classes are in XML order
            o = keys.index(c)
            out[f"b{b}_c{o}_grayscale_cam"] = ic.gradcam[j]
            cols = [sorted(keys).index(k) for k in keys] + list(range(len(keys), ic.probs.shape[1]))
            out[f"b{b}_c{o}_logits_per_image"] = ic.probs[:, cols]
            out[f"b{b}_c{o}_cam_refined"] = ic.refined[j]
        scores = par_refine(with_background(scaled_maps(ic.refined.float(), tuple(x.shape[-2:]))), x[b].float(), par)
        order = [0] + [1 + sorted(keys).index(k) for k in keys]  # ours sorted -> the recording's XML order
        out[f"b{b}_par_out"] = scores[order][None]
        valid = torch.tensor([0] + [c + 1 for c in sorted(keys)])
        out[f"b{b}_cam_label"] = valid[scores.argmax(dim=0)][None]
    return out


def voc_method(tmp_path: Any, preset: str = "configs/weclip_plus/voc.yaml", **options: object) -> Any:
    """The ``weclip_plus`` method of ``preset`` (default voc.yaml, every official quirk on) on the recorded tiny CLIP
    and DINOv2 and the recorded heads: decoder width 32, radius 4 (the recording's tiny
    settings, tests/golden/README.md#weclip_plus)."""
    from conftest import REPO
    from wsss.core.config import load_config
    from wsss.data.classes import VOC_CLASSES
    from wsss.methods import build_method
    from wsss.models.clip import arch_of_state_dict
    from wsss.models.dinov2 import arch_of_state_dict as dino_arch

    cs, ds = clip_state(), dino_state()
    arch = str(arch_of_state_dict(cs).as_dict()).replace("'", "")
    darch = str(dino_arch(ds, num_heads=2).as_dict()).replace("'", "").replace("False", "false").replace("True", "true")
    over = {
        "options.arch": arch,
        "options.dino_arch": darch,
        "options.quick_gelu": "true",
        "options.embedding_dim": 32,
        "options.radius": 4,
        "run.device": "cpu",
        "data.root": str(tmp_path),
    }
    over.update({f"options.{k}": v for k, v in options.items()})
    cfg = load_config(REPO / preset, [f"{k}={v}" for k, v in over.items()])
    method = build_method(cfg, list(VOC_CLASSES))
    method.clip.load_state_dict(cs, strict=False)
    method.dino.load_state_dict(ds)
    method.decoder.load_state_dict(head_state())
    return method


def step_state(prefix: str) -> dict[str, torch.Tensor]:
    """The recorded heads of the training step (``init__`` or ``it1_before__``), official names."""
    s = npz("weclip_plus_train_step.npz")
    return {k[len(prefix) :]: torch.from_numpy(s[k]) for k in s if k.startswith(prefix)}


def step_batch(k: int) -> dict[str, torch.Tensor]:
    """The recorded batch of iteration ``k``: ``(u8 - mean) / std`` (bit-exact to the official normalisation)."""
    from excel_golden import normalized_batch

    s = npz("weclip_plus_train_step.npz")
    return {
        "image": normalized_batch(s[f"it{k}_inputs_uint8_nhwc"]),
        "labels": torch.from_numpy(s[f"it{k}_cls_labels"].astype(np.float32)),
        "img_box": torch.from_numpy(s[f"it{k}_img_box"].astype(np.int64)),
    }


def write_weight_files(folder: Any) -> tuple[Any, Any]:
    """The tiny CLIP (a plain state dict in OpenAI's layout, which does not say its activation: set
    ``options.quick_gelu=true``) and the tiny DINOv2 (the hub's checkpoint layout, 2 heads: ``options.dino_heads=2``)
    as files."""
    clip, dino = folder / "tiny_clip.pt", folder / "dinov2_tiny_pretrain.pth"
    torch.save(clip_state(), clip)
    torch.save(dino_state(), dino)
    return clip, dino
