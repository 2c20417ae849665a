"""CLIP-ES CAMs from class names (Lin et al., CVPR 2023). "Step N" is a step of the official pipeline,
docs/methods/clip_es.md#pipeline (anchors ``#step-N``); steps 2-14 are here.

- :func:`text_features`: ``zeroshot_classifier`` (prompt per template, encode, L2, mean, L2).
- :func:`clip_input`: resize to multiples of the patch (PIL bicubic), CLIP normalisation.
- :func:`gradcam_of_labels`: Grad-CAM on the last block's ``ln_1`` for every labelled class: one forward
  of the last block, one backward per class.
- :func:`zero_shot_scores`: the image-level scores of ``wsss tag`` (step 7's softmax on the whole image).
- :func:`scoremap_boxes`, :func:`box_mask`: the boxes of ``utils.scoremap2bbox`` and their mask.
- :func:`caa_transition`, :func:`caa_refine`: class-aware attention affinity (step 11-12).
- :func:`clip_es_cams`: the whole CAM of one image (step 4-13).
- :func:`clip_es_crf_label`: ``eval_cam_with_crf.crf`` (step 14) on the saved CAMs.

Each official quirk is a field of :class:`ClipESQuirks` (docs/methods/clip_es.md#quirk-switches); the paper
presets turn all on, the ``*_corrected`` presets all off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from wsss.cam.crf import CRFParams, dense_crf
from wsss.models.clip import (
    CLIP_MEAN,
    CLIP_STD,
    check_prompts_fit,
    encode_text,
    last_block_scores,
    tokenize,
    vision_tokens,
)

#: ``eval_cam_with_crf.crf``'s DenseCRF (iters 10; pos 1, 3; bilateral 67, 3, 4)
CLIP_ES_CRF = CRFParams(iters=10, pos_xy_std=1, pos_w=3, bi_xy_std=67, bi_rgb_std=3, bi_w=4)
#: the CRF image's mean (BGR) in ``eval_cam_with_crf``
MEAN_BGR = (104.008, 116.669, 122.675)


@dataclass
class ClipESQuirks:
    """The official code's quirks (docs/methods/clip_es.md#quirk-switches), each a switch; True reproduces the
    official code.

    - ``pos_emb_fp16``: the interpolated position embedding is rounded to float16 on every forward.
    - ``layers_by_77_tokens``: an image of exactly 77 tokens runs every block in the no-grad pass (the
      official transformer tells text from images by the token count), so its last block runs twice.
    - ``box_clip_minus_one``: box right/bottom edges clipped to W-1 / H-1 (drops the last row/column).
    - ``crf_image_wrap``: the CRF's image is BGR minus the mean cast to uint8 (negatives wrap mod 256);
      off: the image itself (the bilateral kernel only sees colour differences).
    - ``unlabelled_stops_worker``: an image without labels ends the official worker: no CAM for it
      nor for any later image of the shard; off: it gets an empty CAM (all background).
    - ``unsaved_highres_gradcam``: the Grad-CAM resized to the image is computed and thrown away.
    """

    pos_emb_fp16: bool = True
    layers_by_77_tokens: bool = True
    box_clip_minus_one: bool = True
    crf_image_wrap: bool = True
    unlabelled_stops_worker: bool = True
    unsaved_highres_gradcam: bool = True


# ---- text ----------------------------------------------------------------------------------------


@torch.no_grad()
def text_features(
    model: nn.Module, class_prompts: list[str], templates: list[str], out_proj_fp16: bool = False
) -> torch.Tensor:
    """``zeroshot_classifier`` (step 2): (n_cls, E) unit rows. Every template is filled with the class's
    prompt (its synonyms stay one comma-separated string, as the official names), encoded, L2-normalised,
    averaged over templates and normalised again. All prompts go through the text tower in one batch.
    ``out_proj_fp16``: the attention output projections in float16 (WeCLIP+, ``models.clip.encode_text``)."""
    check_prompts_fit(class_prompts, templates)
    texts = [t.format(name) for name in class_prompts for t in templates]
    emb = encode_text(model, tokenize(texts).to(model.token_embedding.weight.device), out_proj_fp16)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    emb = emb.view(len(class_prompts), len(templates), -1).mean(dim=1)
    return emb / emb.norm(dim=-1, keepdim=True)


# ---- image ---------------------------------------------------------------------------------------


def clip_input(image: np.ndarray, patch: int = 16) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32: PIL bicubic resize to the next multiples of
    ``patch`` (``img_ms_and_flip`` at scale 1), ``ToTensor``, CLIP's ``Normalize``."""
    h, w = image.shape[:2]
    th, tw = int(np.ceil(h / patch) * patch), int(np.ceil(w / patch) * patch)
    pil = Image.fromarray(np.ascontiguousarray(image))
    if (th, tw) != (h, w):
        pil = pil.resize((tw, th), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return x.sub(mean).div(std)[None]


def scale_cam(cam: np.ndarray, size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """``scale_cam_image`` of one map: (x - min) / (1e-7 + max), then cv2.resize (INTER_LINEAR) to
    ``size_wh`` = (W, H) if given; float32."""
    cam = cam - np.min(cam)
    cam = cam / (1e-7 + np.max(cam))
    if size_wh is not None:
        cam = cv2.resize(cam, tuple(int(v) for v in size_wh))
    return np.float32(cam)


# ---- Grad-CAM ------------------------------------------------------------------------------------


def gradcam_of_labels(
    model: nn.Module,
    tokens: torch.Tensor,
    text_feats: torch.Tensor,
    n_labels: int,
    grid_hw: tuple[int, int],
    out_proj_fp16: bool = False,
) -> dict[str, Any]:
    """Grad-CAM of the softmax score of each of the first ``n_labels`` classes of ``text_feats`` on the
    last block's ``ln_1`` output (step 7): one forward of the last block (the same for every label: only the
    target differs), then one backward per label through the kept graph. The official code runs the forward
    again for every label (pytorch_grad_cam's ``__call__``); the numbers are those, the time is not
    (BENCHMARKS.md, CLIP-ES against the official script).

    ``out_proj_fp16``: the block's attention output projection in float16 (WeCLIP+, ``models.clip``).

    Returns numpy arrays: ``probs`` (1, T), ``attn_last`` (1, L, L), ``activations`` (1, D, gh, gw),
    ``gradients`` / (n, D, gh, gw), ``weights`` (n, D), ``cam_raw`` (n, gh, gw) and ``cam`` (n, gh, gw)
    float32 in [0, 1] (ReLU, min-max, then the one-layer aggregate: ReLU and min-max again).
    """
    gh, gw = grid_hw
    with torch.enable_grad():
        # the tokens require grad so that ln_1's output does even with frozen weights
        probs, attn, ln1 = last_block_scores(model, tokens.detach()[:1].requires_grad_(True), text_feats, out_proj_fp16)
        grads = torch.cat(
            [torch.autograd.grad(probs[0, i], ln1, retain_graph=i < n_labels - 1)[0] for i in range(n_labels)]
        )

    def grid(t: torch.Tensor) -> torch.Tensor:  # reshape_transform: drop CLS, (N, D, gh, gw)
        return t[:, 1:, :].reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)

    act = grid(ln1.detach()[:1]).cpu().numpy()
    grad = grid(grads.detach()).cpu().numpy()
    weights = grad.mean(axis=(2, 3))
    cam_raw = (weights[:, :, None, None] * act).sum(axis=1)
    cams = []
    for c in cam_raw:
        layer = scale_cam(np.maximum(c, 0).astype(np.float32))  # compute_cam_per_layer
        cams.append(scale_cam(np.maximum(layer, 0)))  # aggregate_multi_layers (one layer)
    return {
        "probs": probs.detach()[:1].cpu().numpy(),
        "attn_last": attn.detach()[:1].cpu().numpy(),
        "activations": act,
        "gradients": grad,
        "weights": weights,
        "cam_raw": cam_raw,
        "cam": np.stack(cams).astype(np.float32),
    }


# ---- boxes and class-aware attention affinity --------------------------------------------------


def scoremap_boxes(cam: np.ndarray, threshold: float = 0.4, clip_minus_one: bool = True) -> np.ndarray:
    """``scoremap2bbox(multi_contour_eval=True)`` (step 10): uint8(cam*255) (truncating), binary at
    ``int(threshold * max)``, every contour of ``RETR_TREE`` (inner ones too) as its bounding box
    (x0, y0, x1, y1). ``clip_minus_one`` (quirk): x1, y1 at most W-1, H-1. No contour: one empty box."""
    height, width = cam.shape
    img = (cam * 255).astype(np.uint8)[:, :, None]
    _, binary = cv2.threshold(img, int(threshold * np.max(img)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        x1, y1 = x + w, y + h
        if clip_minus_one:
            x1, y1 = min(x1, width - 1), min(y1, height - 1)
        boxes.append([x, y, x1, y1])
    return np.asarray(boxes, dtype=np.int64)


def box_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 mask, 1 inside every box [y0:y1, x0:x1]."""
    mask = np.zeros(shape, dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = 1
    return mask


def average_attention(maps: list[torch.Tensor], last: int = 8) -> torch.Tensor:
    """Patch-to-patch affinity (step 9): mean of the last ``last`` blocks' (1, L, L) attention
    without the CLS row and column -> (n, n) float32."""
    stacked = torch.stack([a[:, 1:, 1:] for a in maps], dim=0)[-last:]
    return stacked.mean(dim=0)[0].float()


def caa_transition(attn: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """CAA's transition matrix (step 11), each step kept: column-normalise, row-normalise, twice more
    (col, row), symmetrise, square; the last entry, with ``mask`` (n,), masks its **columns** (the
    official ``T * aff_mask`` with aff_mask (1, n)). 9 entries with a mask, 8 without (the first 8
    do not depend on the label: :func:`clip_es_cams` computes them once per image)."""
    steps = []
    t = attn
    for _ in range(3):
        t = t / t.sum(dim=0, keepdim=True)
        steps.append(t)
        t = t / t.sum(dim=1, keepdim=True)
        steps.append(t)
    t = (t + t.transpose(1, 0)) / 2
    steps.append(t)
    t = t @ t
    steps.append(t)
    if mask is not None:
        steps.append(t * mask.view(1, -1))
    return steps


def caa_refine(trans: torch.Tensor, cam: np.ndarray) -> np.ndarray:
    """``T @ cam`` (step 12): (h, w) float32 refined map, not normalised. ``trans`` may be half precision (ExCEL's
    online labels under ``run.amp`` autocast); NumPy has no bfloat16, so the product comes back as float32."""
    flat = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32)).view(-1, 1).to(trans)
    return (trans @ flat).reshape(cam.shape).float().cpu().numpy()


# ---- the whole image -----------------------------------------------------------------------------


def clip_es_cams(
    model: nn.Module,
    image: np.ndarray,
    classes: list[int] | np.ndarray,
    fg_feats: torch.Tensor,
    bg_feats: torch.Tensor,
    quirks: ClipESQuirks | None = None,
    *,
    box_threshold: float = 0.4,
    attn_blocks: int = 8,
    record: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """CLIP-ES refined CAMs (steps 4-13) of an (H, W, 3) uint8 RGB image for the foreground classes
    ``classes`` (0-based rows of ``fg_feats``; at least one): (n, H, W) float32 in [0, 1], in ``classes`` order.

    The text classes are the image's own labels first, then every background prompt (step 6); each
    label's Grad-CAM (one shared forward) is refined by the attention affinity restricted to its boxes.
    ``record``: also return every intermediate (the golden names of ``clip_es_cam.npz``).
    """
    q = quirks or ClipESQuirks()
    classes = [int(k) for k in classes]
    if not classes:
        raise ValueError("clip_es_cams needs at least one labelled class")
    height, width = image.shape[:2]
    device = model.visual.conv1.weight.device
    x = clip_input(image, model.visual.conv1.kernel_size[0]).to(device)
    gh, gw = x.shape[-2] // model.visual.conv1.kernel_size[0], x.shape[-1] // model.visual.conv1.kernel_size[0]
    tokens, maps = vision_tokens(model.visual, x, pos_fp16=q.pos_emb_fp16, layers_by_77_tokens=q.layers_by_77_tokens)
    feats = torch.cat([fg_feats[classes], bg_feats], dim=0).to(device)
    g = gradcam_of_labels(model, tokens, feats, len(classes), (gh, gw))
    attn = average_attention([*maps, torch.from_numpy(g["attn_last"]).to(device)], attn_blocks).cpu()
    rec: dict[str, Any] = {}
    if record:
        rec.update(input=x.cpu().numpy(), tokens=tokens.cpu().numpy(), attn_blocks=[m.cpu().numpy() for m in maps])
        rec.update({k: v for k, v in g.items() if k != "cam"}, attn_weight_avg=attn.numpy(), labels={})
    refined = []
    steps = caa_transition(attn)  # the same for every label: only the box mask differs (step 11)
    for i, cam in enumerate(g["cam"]):
        highres = cv2.resize(cam, (width, height)) if q.unsaved_highres_gradcam else None
        boxes = scoremap_boxes(cam, box_threshold, q.box_clip_minus_one)
        mask = box_mask(boxes, cam.shape)
        masked = steps[-1] * torch.from_numpy(mask).view(1, -1)  # masks the columns
        cam_refined = caa_refine(masked, cam)
        refined.append(scale_cam(cam_refined, (width, height)))
        if record:
            rec["labels"][i] = {
                "grayscale_cam": cam,
                "grayscale_cam_highres": highres,
                "bbox_boxes": boxes,
                "bbox_cnt": len(boxes),
                "aff_mask": mask.reshape(1, -1),
                "trans_mat_steps": torch.stack([*steps, masked]).numpy(),
                "cam_refined": cam_refined,
                "cam_refined_highres": refined[-1],
                "gradients": g["gradients"][i : i + 1],
                "weights": g["weights"][i : i + 1],
                "cam_raw": g["cam_raw"][i : i + 1],
            }
    return np.stack(refined).astype(np.float32), rec


@torch.no_grad()
def zero_shot_scores(
    model: nn.Module,
    image: np.ndarray,
    fg_feats: torch.Tensor,
    bg_feats: torch.Tensor,
    quirks: ClipESQuirks | None = None,
) -> np.ndarray:
    """Image-level scores of ``wsss tag`` (runs/tag.py): the softmax of CLIP-ES's step 7 (the mean of the
    patch tokens after the last block, cosine with each text feature x ``logit_scale``) over every foreground
    prompt and every background / scene prompt, on the whole (H, W, 3) uint8 image: ((C-1) + n_bg,) float32,
    foreground first. The background prompts take the share of a photo's scenery, so that a class's score
    is high only where the class is seen."""
    q = quirks or ClipESQuirks()
    device = model.visual.conv1.weight.device
    x = clip_input(image, model.visual.conv1.kernel_size[0]).to(device)
    tokens, _ = vision_tokens(model.visual, x, pos_fp16=q.pos_emb_fp16, layers_by_77_tokens=q.layers_by_77_tokens)
    probs, _, _ = last_block_scores(model, tokens, torch.cat([fg_feats, bg_feats], dim=0).to(device))
    return probs[0].float().cpu().numpy()


# ---- CRF pseudo labels ---------------------------------------------------------------------------


def crf_image(image: np.ndarray, wrap: bool = True) -> np.ndarray:
    """The CRF's image: with ``wrap`` (quirk) ``eval_cam_with_crf``'s BGR minus ``MEAN_BGR`` cast to
    uint8 (truncation toward zero, negatives wrap mod 256, as numpy's cast on x86); else the image."""
    if not wrap:
        return np.ascontiguousarray(image, dtype=np.uint8)
    bgr = image[:, :, ::-1].astype(np.float32) - np.asarray(MEAN_BGR, dtype=np.float32)
    return np.ascontiguousarray(np.mod(np.trunc(bgr).astype(np.int64), 256).astype(np.uint8))


def clip_es_crf_label(
    image: np.ndarray,
    classes: np.ndarray,
    cams: np.ndarray,
    *,
    wrap_image: bool = True,
    confidence: float | None = 0.95,
    params: CRFParams = CLIP_ES_CRF,
    ignore_index: int = 255,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``eval_cam_with_crf.crf`` (step 14): prob = [1 - max_c cams; cams] (unnormalised, in the CAMs'
    dtype: float16 from the saved files), DenseCRF, argmax mapped to ``[0] + classes + 1`` (``classes``
    0-based foreground ids); pixels whose top marginal is below ``confidence`` get ``ignore_index``
    (None: the official ``eval_only``). Returns (label (H, W) uint8, {"image", "prob", "Q"})."""
    classes = np.asarray(classes, dtype=np.int64)
    h, w = image.shape[:2]
    if classes.size == 0:  # nothing labelled: background (only with the corrected unlabelled switch)
        return np.zeros((h, w), dtype=np.uint8), {}
    cams = np.asarray(cams)
    prob = np.concatenate([np.power(1 - np.max(cams, axis=0, keepdims=True), 1), cams], axis=0)
    img = crf_image(image, wrap_image)
    q = dense_crf(img, prob, unary_in_prob_dtype=True, **params.as_kwargs())
    padded = np.concatenate([[0], classes + 1])
    label = padded[q.argmax(axis=0)]
    if confidence is not None:
        label[q.max(axis=0) < confidence] = ignore_index
    return label.astype(np.uint8), {"image": img, "prob": prob, "Q": q}
