"""SeCo image decomposition and tag assignment (docs/methods/seco.md#decompose, #decisions S1-S3,
S6, S7).

SeCo does **not** decompose the image on a grid: it samples ``crop_num`` random ``crop_size`` square
patches per image, centred on *uncertain* CAM pixels (``roi_mask == -1``), and tags each patch (local
tag) and the two global views (global tag) from the decomposition mask ``roi_mask`` produced by
:func:`wsss.cam.labels.cam_to_roi_mask` (values: class id, -1 uncertain, 0 background, 255 ignore).

The official ``assign_csc_tags`` does the three steps at once. Here they are split:

1. :func:`sample_patch_positions` draws the top-left corners **once**;
2. :func:`crop_patches` cuts the patches out of any view at those corners (call it twice: q-patches
   from the raw view, k-patches from the strongly augmented view);
3. :func:`assign_tags` computes the flags.

:func:`assign_csc_tags` chains them and matches the official call. The official code runs
``assign_csc_tags`` twice (k then q) and relies on ``torch.manual_seed(0)`` inside the function to pick
identical positions; we never touch the global RNG (seco.md#decisions, S6), we draw the positions
once and reuse them. Whether the k view is flipped relative to ``roi_mask`` (seco.md#decisions, S7, an official
quirk) is the caller's business: :func:`crop_patches` crops whatever view it is given.

Parity: golden ``csc_tags.npz`` (positions, patches and flags, exact).
"""

from __future__ import annotations

import torch

__all__ = ["assign_csc_tags", "assign_tags", "crop_patches", "sample_patch_positions"]


def _check_roi(roi_mask: torch.Tensor) -> None:
    if roi_mask.dim() != 3:
        raise ValueError(f"roi_mask must be (B,H,W), got {tuple(roi_mask.shape)}")
    if roi_mask.dtype.is_floating_point or roi_mask.dtype == torch.bool:
        raise ValueError(f"roi_mask must be an integer tensor, got {roi_mask.dtype}")


def sample_patch_positions(
    roi_mask: torch.Tensor,
    crop_num: int,
    crop_size: int,
    *,
    generator: torch.Generator | None = None,
    official_seed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-left corners of SeCo's local patches (docs/methods/seco.md#decompose, golden ``csc_tags.npz``).

    With ``m = crop_size // 2``, the candidates of image b are the pixels with ``roi_mask < 0``
    (uncertain, -1) inside the window ``[m:H-m, m:W-m]``, in row-major (``nonzero``) order. Their
    coordinates **relative to that window** are used directly as full-image top-left corners, so the
    patch ``[h0:h0+s, w0:w0+s]`` is centred on the uncertain pixel ``(h0+m, w0+m)``. With fewer than
    ``crop_num`` candidates every window position is a candidate (uniform random patches,
    ``fallback``). The first ``crop_num`` entries of a random permutation of the candidates are kept.

    Args:
        roi_mask: (B,H,W) integer decomposition mask (-1 uncertain, 0 bg, ids, 255 ignore).
        crop_num: patches per image.
        crop_size: patch side ``s``.
        generator: the RNG used when ``official_seed=False`` (None: torch's global CPU RNG).
        official_seed: True (official behaviour) reproduces the official positions: per image, the
            first ``crop_num`` of ``torch.randperm(n)`` drawn from a CPU generator seeded with 0.
            The official code calls the **global** ``torch.manual_seed(0)`` for this (a quirk that also
            resets every later CPU random draw each iteration); we use a *local*
            ``torch.Generator().manual_seed(0)``, which yields the same permutation and leaves the
            global RNG untouched. Positions are then a deterministic function of the candidate set.
            False (corrected): draw from ``generator``, so positions vary between iterations.

    Returns:
        ``top_left`` (B, crop_num, 2) long ``(h0, w0)`` on ``roi_mask.device``; ``n_candidates`` (B,)
        long; ``fallback`` (B,) bool.
    """
    _check_roi(roi_mask)
    b, h, w = roi_mask.shape
    m = crop_size // 2
    hw, ww = h - 2 * m, w - 2 * m
    if hw <= 0 or ww <= 0 or crop_size > min(h, w):
        raise ValueError(f"crop_size {crop_size} too large for a {h}x{w} roi_mask")
    if hw * ww < crop_num:
        raise ValueError(f"only {hw * ww} window positions for crop_num={crop_num}")
    dev = roi_mask.device
    uncertain = (roi_mask[:, m : h - m, m : w - m] < 0).reshape(b, -1)
    counts = uncertain.sum(dim=1)
    fallback = counts < crop_num
    n_candidates = torch.where(fallback, torch.full_like(counts, hw * ww), counts)

    flat = torch.empty(b, crop_num, dtype=torch.long, device=dev)
    for i in range(b):  # one permutation per image (the candidate counts differ)
        pick = _first_of_permutation(int(n_candidates[i]), crop_num, generator, official_seed).to(dev)
        if bool(fallback[i]):
            flat[i] = pick
        else:
            flat[i] = uncertain[i].nonzero().squeeze(1)[pick]
    top_left = torch.stack([flat // ww, flat % ww], dim=-1)
    return top_left, n_candidates, fallback


def _first_of_permutation(n: int, k: int, generator: torch.Generator | None, official_seed: bool) -> torch.Tensor:
    """The first ``k`` of a random permutation of ``range(n)``: the official draw (a CPU generator seeded with
    0, every time) or one from ``generator`` (on its device)."""
    if official_seed:
        return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:k]
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(n, generator=generator, device=device)[:k]


def _patch_index(top_left: torch.Tensor, crop_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,1,1,1), (B,K,s,1), (B,K,1,s) index tensors selecting every patch of every image."""
    b = top_left.shape[0]
    ar = torch.arange(crop_size, device=top_left.device)
    rows = (top_left[..., 0, None] + ar)[..., :, None]
    cols = (top_left[..., 1, None] + ar)[..., None, :]
    bidx = torch.arange(b, device=top_left.device).view(b, 1, 1, 1)
    return bidx, rows, cols


def _check_positions(top_left: torch.Tensor, size: tuple[int, int], crop_size: int, batch: int) -> None:
    if top_left.dim() != 3 or top_left.shape[0] != batch or top_left.shape[-1] != 2:
        raise ValueError(f"top_left must be (B={batch}, crop_num, 2), got {tuple(top_left.shape)}")
    if top_left.numel() and (
        int(top_left.min()) < 0
        or int(top_left[..., 0].max()) + crop_size > size[0]
        or int(top_left[..., 1].max()) + crop_size > size[1]
    ):
        raise ValueError(f"patches of size {crop_size} at top_left fall outside the {size} map")


def crop_patches(images: torch.Tensor, top_left: torch.Tensor, crop_size: int) -> list[torch.Tensor]:
    """Cut ``crop_size`` square patches of ``images`` (B,C,H,W) at ``top_left`` (B,K,2)
    (docs/methods/seco.md#decompose).

    Returns a **list** of ``K`` tensors (B,C,s,s) (the official return type; patch k of every image is
    entry k; ``torch.stack`` gives (K,B,C,s,s)). Differentiable w.r.t. ``images``. Call it once per
    view with the same ``top_left`` to get aligned q- and k-patches (docs/methods/seco.md#decisions, S6).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B,C,H,W), got {tuple(images.shape)}")
    top_left = top_left.to(images.device)
    _check_positions(top_left, tuple(images.shape[-2:]), crop_size, images.shape[0])
    bidx, rows, cols = _patch_index(top_left, crop_size)
    patches = images.permute(0, 2, 3, 1)[bidx, rows, cols]  # (B,K,s,s,C)
    return list(patches.permute(1, 0, 4, 2, 3).contiguous().unbind(0))


def _distinct_nonzero(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Over ``dims`` of a non-negative id map: (max id, True where exactly one distinct id > 0)."""
    big = torch.iinfo(x.dtype).max
    hi = x.amax(dim=dims)
    lo = torch.where(x > 0, x, torch.full_like(x, big)).amin(dim=dims)
    return hi, (hi > 0) & (lo == hi)


def _global_tags(
    roi: torch.Tensor, uncertain: torch.Tensor, no_class_tag: float, fdtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global tag of each image of ``roi`` (B,H,W class ids): its one id, -1 for two or more, else
    ``no_class_tag``; and ``roi`` with the uncertain pixels of a one-id image filled with that id."""
    b = roi.shape[0]
    cls, single = _distinct_nonzero(roi, (1, 2))
    glob = torch.full((b,), float(no_class_tag), dtype=fdtype, device=roi.device)
    glob = torch.where(single, cls.to(fdtype), glob)
    glob = torch.where((cls > 0) & ~single, torch.full_like(glob, -1.0), glob)
    filled = torch.where(single.view(b, 1, 1) & uncertain, cls.view(b, 1, 1).expand_as(roi), roi)
    return glob, filled


def assign_tags(
    roi_mask: torch.Tensor,
    top_left: torch.Tensor,
    crop_size: int,
    *,
    threshold: float = 0.2,
    no_class_global_tag: float = 1.0,
    area_weighted_by_class_id: bool = True,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Global and local tags of SeCo's decomposition (docs/methods/seco.md#decompose, golden ``csc_tags.npz``).

    Helper maps: ``roi_`` = roi_mask with ``ignore_index`` -> 0; ``roi`` = roi_ with -1 -> 0 (class
    ids only).

    - Global tag (columns 0 and 1, one per global view): the distinct ids > 0 of ``roi``. Two or more
      -> -1 (co-occurrence, ignored); exactly one -> that id, **and** the uncertain pixels of that
      image are filled with it in ``roi`` before the local tags; none -> ``no_class_global_tag``.
    - Local tag of patch k (column 2+k), patch ``[h0:h0+s, w0:w0+s]``: if
      ``sum(area map over the patch) / s**2 <= threshold`` -> 0 (background patch); else the distinct
      ids > 0 of the (filled) ``roi`` in the patch: exactly one -> that id, otherwise -1.

    Args:
        roi_mask: (B,H,W) integer mask from :func:`wsss.cam.labels.cam_to_roi_mask`.
        top_left: (B,K,2) patch corners from :func:`sample_patch_positions`.
        crop_size: patch side ``s``.
        threshold: area threshold (official 0.2).
        no_class_global_tag: global tag of an image without any confident class. Official 1.0 (a
            quirk: the tag silently means class 1, aeroplane); corrected -1.0 (ignore).
        area_weighted_by_class_id: True (official quirk): the area map is ``roi + [roi_ == -1]``, i.e.
            class **ids** at confident pixels and 1 at uncertain pixels (computed before the fill), so
            the area test is weighted by the class id. False (corrected): the area map is the
            indicator of non-background pixels (confident foreground or uncertain), i.e. the test is
            "fraction of non-background pixels > threshold".
        ignore_index: the ignore value of ``roi_mask`` (counts as background).

    Returns:
        flags (B, 2+K) in torch's default float dtype, on ``roi_mask.device``.
    """
    _check_roi(roi_mask)
    b = roi_mask.shape[0]
    top_left = top_left.to(roi_mask.device)
    _check_positions(top_left, tuple(roi_mask.shape[-2:]), crop_size, b)
    fdtype = torch.get_default_dtype()

    roi_ = roi_mask.masked_fill(roi_mask == ignore_index, 0)
    uncertain = roi_ == -1
    roi = roi_.masked_fill(uncertain, 0)
    area_map = roi + uncertain.to(roi.dtype) if area_weighted_by_class_id else (roi_ != 0).to(roi.dtype)

    glob, roi = _global_tags(roi, uncertain, no_class_global_tag, fdtype)

    bidx, rows, cols = _patch_index(top_left, crop_size)
    area = area_map[bidx, rows, cols].sum(dim=(-1, -2)).to(fdtype) / (crop_size * crop_size)
    pcls, psingle = _distinct_nonzero(roi[bidx, rows, cols], (-1, -2))
    local = torch.where(psingle, pcls.to(fdtype), torch.full_like(area, -1.0))
    local = torch.where(area <= threshold, torch.zeros_like(local), local)
    return torch.cat([glob[:, None].expand(b, 2), local], dim=1)


def assign_csc_tags(
    images: torch.Tensor,
    roi_mask: torch.Tensor,
    crop_num: int,
    crop_size: int,
    threshold: float = 0.2,
    *,
    top_left: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    official_seed: bool = True,
    no_class_global_tag: float = 1.0,
    area_weighted_by_class_id: bool = True,
    return_top_left: bool = False,
) -> tuple[list[torch.Tensor], torch.Tensor] | tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The official ``assign_csc_tags`` call: positions, patches and flags (docs/methods/seco.md#decompose).

    Draws the positions with :func:`sample_patch_positions` (unless ``top_left`` is given, e.g. the
    positions of the q call reused for the k view), crops ``images`` with :func:`crop_patches` and tags
    with :func:`assign_tags`. The switches are those of the three functions (official defaults).
    Returns ``(crops, flags)`` (list of ``crop_num`` (B,3,s,s), (B, 2+crop_num)), plus ``top_left``
    when ``return_top_left``.
    """
    if top_left is None:
        top_left, _, _ = sample_patch_positions(
            roi_mask, crop_num, crop_size, generator=generator, official_seed=official_seed
        )
    crops = crop_patches(images, top_left, crop_size)
    flags = assign_tags(
        roi_mask,
        top_left,
        crop_size,
        threshold=threshold,
        no_class_global_tag=no_class_global_tag,
        area_weighted_by_class_id=area_weighted_by_class_id,
    )
    if return_top_left:
        return crops, flags, top_left
    return crops, flags
