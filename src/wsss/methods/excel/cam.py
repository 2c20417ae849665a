"""ExCEL's refinement of its patch-text maps and its training targets (docs/methods/excel.md#refinement, #par,
#losses; official ``utils/affutils.py``, ``utils/camutils.py``, ``model/losses.py``).

The maps of the labelled classes are refined by CLIP's own attention inside boxes of each map (the
class-aware affinity of CLIP-ES, ``cam.clip_es``: same boxes, same transition matrix), scaled to the image,
given a background ``1 - max`` and refined by PAR; their argmax are the labels. Training adds the affinity
target of the decoder's attention and its loss.
"""

from __future__ import annotations

import numpy as np
import torch

from wsss.cam.clip_es import box_mask, caa_refine, caa_transition, scoremap_boxes
from wsss.cam.clip_refine import (  # noqa: F401 - shared with WeCLIP+; the names stay importable here
    affinity_label,
    attention_affinity,
    attention_affinity_loss,
    layer_selection,
    par_refine,
    radius_mask,
    scaled_maps,
    with_background,
)
from wsss.cam.par import PAR


def refine_with_attention(
    attr_maps: torch.Tensor,
    attn: torch.Tensor,
    grid: tuple[int, int],
    *,
    box_threshold: float = 0.79,
    layers: int = 6,
    seg_attn: torch.Tensor | None = None,
    box_edge_loss: bool = True,
) -> torch.Tensor:
    """``refine_cams_with_aff`` (docs/methods/excel.md#refinement): the maps (N, k) of the labelled classes of one
    image, refined by its attention (L, 1+N, 1+N) -> (k, h, w) float32: per class, the boxes of its map at
    ``box_threshold`` of its maximum (every contour; ``box_edge_loss``: a box at the right / bottom edge loses its
    last column / row, Q16), the transition matrix with the columns outside the boxes zeroed, times the map."""
    trans = caa_transition(attention_affinity(attn, layers, seg_attn))[-1].float()
    out = []
    for j in range(attr_maps.shape[1]):
        cam = attr_maps[:, j].detach().cpu().numpy().reshape(grid)
        boxes = scoremap_boxes(cam, box_threshold, clip_minus_one=box_edge_loss)
        mask = torch.from_numpy(box_mask(boxes, grid)).to(trans.device).view(1, -1)
        out.append(caa_refine(trans * mask, cam.astype(np.float32)))
    h, w = grid
    return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, h, w)


def labels_from_maps(maps: torch.Tensor, classes: torch.Tensor, guide: torch.Tensor, par: PAR) -> torch.Tensor:
    """``refine_cams_with_bkg_weclip`` from the scaled maps (k, H, W) of the 0-based foreground ``classes``:
    :func:`with_background`, :func:`par_refine`, argmax -> (H, W) int64 dataset ids (0 background), on the device
    of ``guide``. PAR runs there: in training the images are on the GPU, where the official code refines too
    (its maps go back to the GPU after the boxes and the resizing); on the CPU, PAR made wsss's ExCEL iteration
    several times the official time on an H100 (BENCHMARKS.md, "The official codes beside wsss on an H100")."""
    device = guide.device
    valid = torch.cat([torch.zeros(1, dtype=torch.long), torch.as_tensor(classes, dtype=torch.long).cpu() + 1])
    return valid.to(device)[par_refine(with_background(maps.to(device)), guide, par).argmax(dim=0)]


def labels_from_refined(
    refined: torch.Tensor, classes: torch.Tensor, guide: torch.Tensor, size: tuple[int, int], par: PAR
) -> torch.Tensor:
    """The labels (H, W) of ``size`` from the refined maps (k, h, w): :func:`scaled_maps`, then
    :func:`labels_from_maps`."""
    return labels_from_maps(scaled_maps(refined, size), classes, guide, par)
