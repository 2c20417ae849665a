"""From class activation maps to (pseudo) labels (docs/methods/seco.md#cam2label,
#pseudo-label and #decompose), and the online pseudo label of ToCo/SeCo that the CAM baseline and SeCo train
their segmentation heads on (:func:`online_pseudo_label`).

Conventions shared by every function here (golden README, "General conventions"):

- ``cam`` is (B, C-1, H, W): one channel per **foreground** class; ``cls_label`` is the multi-hot
  (B, C-1) image label. Foreground channel c (0-based) is label id c+1; 0 is background.
- ``img_box`` rows are ``[h0, h1, w0, w1]``: the valid region is rows h0:h1, columns w0:w1 (end
  excluded, Python-slice semantics, so coordinates past the map are clipped). Pixels outside the
  box get ``ignore_index``. Boxes may be a tensor, an array or a list of 4-sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .multiscale import resize_maps
from .par import PAR

if TYPE_CHECKING:  # annotations only
    from wsss.core.config import CamConfig

IMAGENET_MEAN_255: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD_255: tuple[float, float, float] = (58.395, 57.12, 57.375)

BoxLike = torch.Tensor | np.ndarray | Sequence[Sequence[int]]


def _as_box_tensor(img_box: BoxLike, device: torch.device | str) -> torch.Tensor:
    box = img_box if torch.is_tensor(img_box) else torch.as_tensor(np.asarray(img_box))
    return box.to(device=device, dtype=torch.long).reshape(-1, 4)


def _apply_box(label: torch.Tensor, img_box: BoxLike | None, ignore_index: int) -> torch.Tensor:
    """Set ``ignore_index`` outside each image's box; ``label`` is (B, H, W)."""
    if img_box is None:
        return label
    n = _as_box_tensor(img_box, label.device).shape[0]
    if n != label.shape[0]:
        raise ValueError(f"img_box has {n} rows but the batch has {label.shape[0]} images")
    inside = box_mask(img_box, tuple(label.shape[-2:]), device=label.device)
    return label.masked_fill(~inside, ignore_index)


def box_mask(img_box: BoxLike, size: tuple[int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (B, H, W) mask, True inside each ``[h0, h1, w0, w1]`` box (docs/methods/seco.md#data, #cam2label).

    Same semantics as slicing ``[h0:h1, w0:w1]`` with non-negative coordinates: the end is excluded
    and coordinates larger than the map are clipped.
    """
    if device is None:
        device = img_box.device if torch.is_tensor(img_box) else "cpu"
    dev = torch.device(device)
    box = _as_box_tensor(img_box, dev)
    h, w = int(size[0]), int(size[1])
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    h0, h1, w0, w1 = (box[:, i].view(-1, 1, 1) for i in range(4))
    return (rows >= h0) & (rows < h1) & (cols >= w0) & (cols < w1)


def scale_img_box(
    img_box: BoxLike,
    from_hw: tuple[int, int],
    to_hw: tuple[int, int],
    mode: str = "round",
) -> torch.Tensor:
    """Rescale ``[h0, h1, w0, w1]`` boxes from a ``from_hw`` map to a ``to_hw`` map (docs/methods/seco.md#ptc).

    Used for the PTC target, where the box of the 448-pixel crop must be applied to the 28x28
    token map. ``mode`` decides the partially covered cells: ``"round"`` keeps a cell when at least
    half of it is valid, ``"outer"`` keeps every cell that touches the valid region, ``"inner"``
    keeps only fully valid cells. The official code applies the **unscaled** pixel box to the token
    map (a quirk, golden ``ptc.npz``); to reproduce it, pass the unscaled box to ``cam_to_label``.
    Returns a (B, 4) long tensor.
    """
    box = _as_box_tensor(img_box, img_box.device if torch.is_tensor(img_box) else "cpu").to(torch.float64)
    sh = to_hw[0] / from_hw[0]
    sw = to_hw[1] / from_hw[1]
    scale = torch.tensor([sh, sh, sw, sw], dtype=torch.float64, device=box.device)
    x = box * scale
    starts, ends = x[:, 0::2], x[:, 1::2]  # (h0, w0), (h1, w1)
    if mode == "round":  # a cell is kept when at least half of it is valid
        starts, ends = torch.ceil(starts - 0.5), torch.floor(ends + 0.5)
    elif mode == "outer":
        starts, ends = torch.floor(starts), torch.ceil(ends)
    elif mode == "inner":
        starts, ends = torch.ceil(starts), torch.floor(ends)
    else:
        raise ValueError(f"scale_img_box: unknown mode {mode!r} (round, outer or inner)")
    out = torch.stack([starts[:, 0], ends[:, 0], starts[:, 1], ends[:, 1]], dim=1)
    limit = torch.tensor([to_hw[0], to_hw[0], to_hw[1], to_hw[1]], dtype=torch.float64, device=box.device)
    out = torch.minimum(torch.clamp(out, min=0), limit)
    return out.to(torch.long)


def _valid_cam_max(cam: torch.Tensor, cls_label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if cam.dim() != 4 or cls_label.dim() != 2 or cls_label.shape != cam.shape[:2]:
        raise ValueError(
            f"expected cam (B,C-1,H,W) and cls_label (B,C-1), got {tuple(cam.shape)} and {tuple(cls_label.shape)}"
        )
    valid_cam = cam * cls_label.to(device=cam.device).unsqueeze(-1).unsqueeze(-1)
    value, idx = valid_cam.max(dim=1)
    return valid_cam, value, idx + 1


def cam_to_label(
    cam: torch.Tensor,
    cls_label: torch.Tensor,
    img_box: BoxLike | None = None,
    ignore_mid: bool = False,
    *,
    bkg_thre: float,
    high_thre: float = 0.7,
    low_thre: float = 0.25,
    ignore_index: int = 255,
    uncertain: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CAM -> label map (docs/methods/seco.md#cam2label, golden ``cam_to_label.npz``).

    ``valid_cam = cam * cls_label``; label = argmax over classes + 1, and 0 where the max is
    ``<= bkg_thre``. With ``ignore_mid`` (training): max ``> high_thre`` -> class,
    ``low_thre < max <= high_thre`` -> ``uncertain`` (None: ``ignore_index``), ``<= low_thre`` -> 0 (``bkg_thre``
    then has no effect as long as it is at most ``high_thre``; above it, pixels between the two stay 0).
    Outside ``img_box`` (if given) -> ``ignore_index``. Note that the official code only applies
    ``ignore_mid`` when a box is given; here it applies whenever it is set. SeCo's decomposition mask is this
    with ``uncertain=-1`` (:func:`cam_to_roi_mask`): the two official functions differ in that one value.

    Returns ``(valid_cam (B,C-1,H,W), label (B,H,W) int64)``.
    """
    valid_cam, value, label = _valid_cam_max(cam, cls_label)
    label = label.masked_fill(value <= bkg_thre, 0)
    if ignore_mid:
        label = label.masked_fill(value <= high_thre, ignore_index if uncertain is None else uncertain)
        label = label.masked_fill(value <= low_thre, 0)
    return valid_cam, _apply_box(label, img_box, ignore_index)


def labelled_cam_to_label(cam: torch.Tensor, classes: torch.Tensor, *, bkg_thre: float) -> torch.Tensor:
    """:func:`cam_to_label` (no box, no ``ignore_mid``) of the maps of the labelled classes only.

    ``cam`` (B, k, H, W) holds the channels ``classes`` (0-based foreground indices, ascending,
    the same for every image), the full CAM being zero elsewhere: the label map is the one of the
    full CAM with those classes labelled (argmax ties go to the lower class id either way), without
    an argmax over the channels that cannot win. Returns (B, H, W) int64.
    """
    classes = torch.as_tensor(classes, dtype=torch.long, device=cam.device).flatten()
    if classes.numel() == 0:
        return torch.zeros((cam.shape[0], *cam.shape[-2:]), dtype=torch.long, device=cam.device)
    value, idx = cam.max(dim=1)
    ids = torch.cat([classes.new_zeros(1), classes + 1])
    return ids[(idx + 1).masked_fill(value <= bkg_thre, 0)]


def cam_to_roi_mask(
    cam: torch.Tensor,
    cls_label: torch.Tensor,
    img_box: BoxLike | None = None,
    ignore_mid: bool = True,
    *,
    bkg_thre: float,
    high_thre: float = 0.7,
    low_thre: float = 0.25,
    ignore_index: int = 255,
) -> torch.Tensor:
    """SeCo's decomposition mask (docs/methods/seco.md#decompose; its official name, golden ``csc_tags.npz``,
    ``roi_mask``): :func:`cam_to_label`'s label with uncertain pixels **-1** (``ignore_mid`` on by default).
    Returns (B,H,W) int64."""
    _, mask = cam_to_label(
        cam,
        cls_label,
        img_box,
        ignore_mid,
        bkg_thre=bkg_thre,
        high_thre=high_thre,
        low_thre=low_thre,
        ignore_index=ignore_index,
        uncertain=-1,
    )
    return mask


def label_to_aff_mask(label: torch.Tensor, ignore_index: int = 255, *, ignore_diagonal: bool = True) -> torch.Tensor:
    """Pairwise affinity target of a token label map (docs/methods/seco.md#ptc, ToCo's ``label_to_aff_mask``; ExCEL's
    ``cams_to_affinity_label`` builds on it, ``wsss.methods.excel.cam.affinity_label``).

    ``label`` (B, h, w) -> (B, hw, hw) int64, tokens flattened row-major: 1 where the two tokens
    have the same label, 0 where they differ, ``ignore_index`` in the rows and columns of ignored
    tokens and, with ``ignore_diagonal``, on the diagonal (ExCEL's effective definition keeps the
    diagonal: docs/methods/excel.md#q20).
    """
    b = label.shape[0]
    flat = label.reshape(b, -1)
    n = flat.shape[1]
    aff = (flat.unsqueeze(2) == flat.unsqueeze(1)).to(torch.long)
    ign = flat == ignore_index
    aff = aff.masked_fill(ign.unsqueeze(2) | ign.unsqueeze(1), ignore_index)
    if not ignore_diagonal:
        return aff
    eye = torch.eye(n, dtype=torch.bool, device=label.device).unsqueeze(0)
    return aff.masked_fill(eye, ignore_index)


def denormalize_image(
    x: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN_255,
    std: Sequence[float] = IMAGENET_STD_255,
    truncate_uint8: bool = True,
) -> torch.Tensor:
    """Undo the input normalisation, back to [0, 1] (docs/methods/seco.md#pseudo-label, golden
    ``denormalize_img2.npz``).

    ``x`` is (B,3,H,W) normalised with ``mean``/``std`` given on the 0..255 scale, channel 0 first
    (R, G, B). Computes ``x*std + mean`` in ``x``'s dtype; with ``truncate_uint8`` (the official
    behaviour) the result is cast to uint8 by truncation, as ``Tensor.to(torch.uint8)`` does, and then
    divided by 255, so values lie in {k/255} and a few sit one step below the original pixel.
    Without it, the result is ``(x*std + mean)/255`` unrounded. Output dtype = ``x.dtype``.
    """
    shape = (1, -1, 1, 1) if x.dim() == 4 else (-1, 1, 1)
    m = torch.tensor(list(mean), dtype=x.dtype, device=x.device).view(shape)
    s = torch.tensor(list(std), dtype=x.dtype, device=x.device).view(shape)
    y = x * s + m
    if truncate_uint8:
        # Truncation toward zero, like the official ``.type(torch.uint8)``. The clamp changes
        # nothing for in-range values and keeps out-of-range ones from wrapping around.
        y = y.clamp(0, 255).to(torch.uint8).to(x.dtype)
    return y / 255.0


def _present_channel_table(cls_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the channel ids [0 (bg); present fg ids], left-aligned and padded.

    Returns ``class_ids`` (B, K) long (padded with 0) and ``valid`` (B, K) bool, K = 1 + max #present.
    """
    b = cls_labels.shape[0]
    bg = torch.ones(b, 1, dtype=torch.bool, device=cls_labels.device)
    present = torch.cat([bg, cls_labels != 0], dim=1)  # (B, C)
    count = present.sum(dim=1)
    k = int(count.max())
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)[:, :k]  # present first, ascending
    valid = torch.arange(k, device=cls_labels.device).unsqueeze(0) < count.unsqueeze(1)
    class_ids = torch.where(valid, order, torch.zeros_like(order))
    return class_ids, valid


def refine_cams_with_bkg(
    par: PAR,
    image_denorm: torch.Tensor,
    cams: torch.Tensor,
    cls_labels: torch.Tensor,
    high_thre: float,
    low_thre: float,
    ignore_index: int = 255,
    img_box: BoxLike | None = None,
    down_scale: int = 2,
) -> torch.Tensor:
    """Online pseudo label for the segmentation head, with PAR (docs/methods/seco.md#pseudo-label).

    Re-implements ``refine_cams_with_bkg_v2`` (golden ``refine_cams_with_bkg_v2.npz``):

    1. the image (B,3,H,W) in [0,1] and the stacks [bg; cams] are downsampled to
       (H//down_scale, W//down_scale) (bilinear, align_corners=False), the bg channel being the
       constant ``high_thre`` in one stack and ``low_thre`` in the other;
    2. only bg + the present classes are kept, then a softmax over those channels;
    3. PAR at low resolution, upsample to (H,W) (bilinear, align_corners=False), argmax, map back
       to class ids;
    4. label = high-stack label; 255 where it is bg; 0 where both stacks say bg; ``ignore_index``
       outside ``img_box``.

    Batched: the present-class subsets are left-aligned into K = 1 + max #present channels and
    the padding channels get a -inf score, so they are exactly 0 after the softmax and never win the
    argmax. Both stacks share one PAR affinity. Only each image's labelled channels of ``cams`` are
    read (the others may hold anything). Returns (B,H,W) int64.
    """
    b, _, h, w = cams.shape
    size = (max(1, h // down_scale), max(1, w // down_scale))  # a 1-px side stays 1 px
    dtype = cams.dtype
    image_small = F.interpolate(image_denorm, size=size, mode="bilinear", align_corners=False)
    bkg = torch.empty(b, 2, h, w, dtype=dtype, device=cams.device)
    bkg[:, 0] = high_thre
    bkg[:, 1] = low_thre
    bkg_small = F.interpolate(bkg, size=size, mode="bilinear", align_corners=False)

    class_ids, valid = _present_channel_table(cls_labels.to(cams.device))
    k = class_ids.shape[1]
    # Each image's present classes are gathered first and only they are downsampled (the resize is per
    # channel: the same numbers as downsampling every class). Column 0 of ``class_ids`` is the background;
    # padding columns gather class 0 and are masked to -inf below.
    fg = torch.gather(cams, 1, (class_ids[:, 1:] - 1).clamp(min=0).view(b, k - 1, 1, 1).expand(b, k - 1, h, w))
    fg_small = resize_maps(fg, size)
    refined = []
    for j in range(2):  # high, low
        sel = torch.cat([bkg_small[:, j : j + 1], fg_small], dim=1)  # (B, K, h', w')
        sel = sel.masked_fill(~valid.view(b, k, 1, 1), float("-inf"))
        refined.append(torch.softmax(sel, dim=1))
    masks = par(image_small, torch.cat(refined, dim=1))  # one affinity for both stacks
    masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
    return _two_level_label(masks, class_ids, img_box, ignore_index)


def _two_level_label(
    masks: torch.Tensor, class_ids: torch.Tensor, img_box: BoxLike | None, ignore_index: int
) -> torch.Tensor:
    """Step 4 of :func:`refine_cams_with_bkg`: the argmax of each stack of ``masks`` (B, 2K, H, W: the high
    stack, then the low) mapped to class ids through ``class_ids`` (B, K); the high stack's label, ``ignore_index``
    where it says background, 0 where both do, ``ignore_index`` outside ``img_box``."""
    b, k = class_ids.shape
    h, w = masks.shape[-2:]
    labels = []
    for j in range(2):
        arg = masks[:, j * k : (j + 1) * k].argmax(dim=1)  # (B,H,W) index into class_ids
        labels.append(torch.gather(class_ids, 1, arg.view(b, -1)).view(b, h, w))
    label_h, label_l = (_apply_box(lab, img_box, ignore_index) for lab in labels)
    label = label_h.masked_fill(label_h == 0, ignore_index)
    return label.masked_fill((label_h == 0) & (label_l == 0), 0)


@torch.no_grad()
def online_pseudo_label(
    par: PAR, c: CamConfig, images: torch.Tensor, cam: torch.Tensor, labels: torch.Tensor, img_box: torch.Tensor
) -> torch.Tensor:
    """CAM (B, C-1, H, W) -> valid CAM -> PAR with two background levels (docs/methods/seco.md#pseudo-label)."""
    valid_cam, _ = cam_to_label(
        cam, labels, img_box=img_box, ignore_mid=True, bkg_thre=c.bkg_thre, high_thre=c.high_thre, low_thre=c.low_thre
    )
    return refine_cams_with_bkg(
        par,
        denormalize_image(images),
        valid_cam,
        labels,
        high_thre=c.high_thre,
        low_thre=c.low_thre,
        img_box=img_box,
        down_scale=c.par_down_scale,
    )
