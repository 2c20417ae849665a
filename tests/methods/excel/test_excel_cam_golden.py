"""ExCEL's refinement and training targets against the official code's recordings, each fed the recorded inputs
(tests/golden/README.md#excel_training_free: the attention refinement, background, PAR and scores;
#excel_train_step: the training targets): no CLIP runs here.

Float64 where a float64 companion exists; float32 with tolerances from the recorded spreads
(``excel_golden.f32_tol``); boxes, masks, keys and labels exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from excel_golden import f32_tol, npz
from wsss.cam.clip_es import box_mask, caa_transition, scoremap_boxes
from wsss.cam.labels import denormalize_image
from wsss.cam.par import PAR
from wsss.evaluation.metrics import ConfusionMeter
from wsss.losses import balanced_seg_loss
from wsss.methods.excel.cam import (
    affinity_label,
    attention_affinity,
    attention_affinity_loss,
    labels_from_maps,
    layer_selection,
    par_refine,
    radius_mask,
    refine_with_attention,
    scaled_maps,
    with_background,
)

TF, STEP = "excel_training_free.npz", "excel_train_step.npz"
PAR20 = PAR(dilations=(1, 2, 4, 8, 12, 24), num_iter=20)  # ExCEL's PAR(num_iter=20, dilations=[1,2,4,8,12,24])


def _close(actual, file: str, key: str, factor: float = 3.0) -> None:
    actual = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    np.testing.assert_allclose(actual, npz(file)[key], rtol=0, atol=f32_tol(file, key, factor))


def _inputs(i: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    f = npz(TF)
    maps = torch.from_numpy(f[f"img{i}_attr_maps_raw"][0])  # (100, 20)
    attn = torch.from_numpy(f[f"img{i}_attn_weights"][:, 0])  # (12, 101, 101)
    return maps, attn, np.flatnonzero(f[f"img{i}_cls_onehot"])


@pytest.mark.parametrize("i", [0, 1])
def test_golden_excel_attention_refinement(i):
    """``refine_cams_with_aff``: the layer mean, the transition matrix, each class's boxes, column mask, masked
    matrix and refined map."""
    f = npz(TF)
    maps, attn, keys = _inputs(i)
    assert (keys == f[f"img{i}_raff_cls_lst"]).all()
    affinity = attention_affinity(attn, layers=6)
    _close(affinity, TF, f"img{i}_raff_attn_weight_mean")
    trans = caa_transition(affinity)[-1].float()
    _close(trans, TF, f"img{i}_raff_trans_mat")
    refined = refine_with_attention(maps[:, keys], attn, (10, 10), box_threshold=0.79, layers=6, box_edge_loss=True)
    for k, cls in enumerate(keys):
        cam = maps[:, cls].numpy().reshape(10, 10)
        _close(cam, TF, f"img{i}_cls{k}_grayscale_cam")
        boxes = scoremap_boxes(cam, 0.79, clip_minus_one=True)
        assert (boxes == f[f"img{i}_cls{k}_boxes"]).all() and len(boxes) == f[f"img{i}_cls{k}_cnt"]
        mask = box_mask(boxes, (10, 10)).reshape(1, -1)
        assert (mask == f[f"img{i}_cls{k}_aff_mask"]).all()
        _close(trans * torch.from_numpy(mask), TF, f"img{i}_cls{k}_trans_mat_masked")
        _close(refined[k], TF, f"img{i}_cls{k}_cam_refined")


@pytest.mark.parametrize("i", [0, 1])
def test_golden_excel_background_par_and_labels(i):
    """``refine_cams_with_bkg_weclip`` on the recorded refined maps: scaled to the image, background 1 - max,
    PAR on the normalised 160-px input (Q4), the labels (exact)."""
    f = npz(TF)
    _, _, keys = _inputs(i)
    h, w = f[f"img{i}_gt"].shape
    refined = torch.stack([torch.from_numpy(f[f"img{i}_cls{k}_cam_refined"]) for k in range(len(keys))])
    full = with_background(scaled_maps(refined, (h, w)))
    _close(full[:1], TF, f"img{i}_bkg_bg_score")
    if f"img{i}_bkg_cams_with_bg" in f:
        _close(full, TF, f"img{i}_bkg_cams_with_bg")
    assert (np.concatenate([[0], keys + 1]) == f[f"img{i}_bkg_valid_key"]).all()
    guide = torch.from_numpy(f[f"img{i}_model_input"][0])
    # PAR's 20 propagation steps compound the rounding: 6x the spread (measured 3.4x with ATEN_CPU_CAPABILITY=default)
    _close(par_refine(full, guide, PAR20)[None], TF, f"img{i}_par_out", factor=6.0)
    label = labels_from_maps(scaled_maps(refined, (h, w)), torch.from_numpy(keys), guide, PAR20)
    assert (label.numpy() == f[f"img{i}_label_final"][0]).all()


def test_golden_excel_scores_are_wsss_evaluation():
    """``evaluate.scores`` of the two final labels against the masks: wsss's confusion-matrix scores, float64."""
    f = npz(TF)
    meter = ConfusionMeter(21)
    for i in (0, 1):
        meter.update(f[f"img{i}_gt"].astype(np.int64), f[f"img{i}_label_final"][0])
    s = meter.scores()
    for ours, theirs in (
        ("pAcc", "pAcc"),
        ("mAcc", "mAcc"),
        ("miou", "miou"),
        ("iou", "iou"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("confusion", "confusion"),
    ):
        np.testing.assert_allclose(s[ours], f[f"scores_{theirs}__f64run"], rtol=1e-14, atol=0, equal_nan=True)


@pytest.mark.parametrize("k", [0, 1])
def test_golden_excel_training_targets(k):
    """The radius mask, the affinity target of the online labels (the effective definition: diagonal kept,
    Q20), the balanced segmentation loss, and the truncating denormalisation's lost levels (Q18)."""
    s = npz(STEP)
    mask = radius_mask(20, 20, 8)
    assert (mask.numpy() == s["attn_mask_radius8_uint8"]).all()
    pseudo = torch.from_numpy(s[f"it{k}_aff_pseudos_uint8"].astype(np.int64))
    aff = affinity_label(pseudo, (20, 20), mask, ignore_diag=False)
    assert (aff.numpy() == s[f"it{k}_aff_mask_uint8"]).all()
    segs = F.interpolate(torch.from_numpy(s[f"it{k}_segs_raw"]), size=(320, 320), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(balanced_seg_loss(segs, pseudo).item(), s[f"it{k}_seg_loss"], rtol=1e-6)
    assert (segs.argmax(1).numpy() == s[f"it{k}_seg_pred_uint8"]).mean() > 0.9999  # an argmax tie may flip
    from excel_golden import normalized_batch

    x = normalized_batch(s[f"it{k}_inputs_uint8_nhwc"])
    lost = (denormalize_image(x, truncate_uint8=True) * 255).round() < torch.from_numpy(
        s[f"it{k}_inputs_uint8_nhwc"].transpose(0, 3, 1, 2).astype(np.float32)
    )
    assert int(lost.sum()) == int(s[f"it{k}_denorm_trunc_lost_level_count"])


def test_golden_excel_layer_selection_of_the_trained_route():
    """The recorded per-layer differences to the decoder's attention decide which layers the trained route keeps:
    the mask is the layers at most their mean (``layer_selection`` on the recorded sums, float64)."""
    s = npz(STEP)
    for b in range(4):
        diff = torch.from_numpy(s[f"it1_b{b}_segattn_attn_diff_sum__f64run"])
        threshold = diff.mean()
        np.testing.assert_allclose(threshold.item(), s[f"it1_b{b}_segattn_diff_th__f64run"], rtol=1e-12)
        assert ((diff <= threshold).double().numpy() == s[f"it1_b{b}_segattn_layer_mask__f64run"]).all()
    # and layer_selection computes those sums from the layers: a layer equal to the decoder's is kept
    maps = torch.rand(3, 4, 4, dtype=torch.float64)
    d, t, keep = layer_selection(maps, maps[1])
    assert d[1] == 0 and keep.tolist() == [float(v <= t) for v in d]


def test_affinity_loss_is_the_official_formula():
    """``get_aff_loss`` on a small case worked by hand: positives (1 - p), negatives p, each over count + 1."""
    p = torch.tensor([[[0.9, 0.2], [0.4, 0.7]]])
    label = torch.tensor([[[1, 0], [255, 1]]])
    expected = 0.5 * ((0.1 + 0.3) / 3) + 0.5 * (0.2 / 2)
    assert attention_affinity_loss(p, label).item() == pytest.approx(expected)


def test_switches_of_the_refinement_change_what_excel_md_says():
    """Q16: a box at the right / bottom edge loses its last column / row only with the official behaviour;
    Q20: the effective target keeps the diagonal (1), the first definition ignores it (255)."""
    cam = np.zeros((6, 6), dtype=np.float32)
    cam[2:, 3:] = 1.0
    assert scoremap_boxes(cam, 0.5, clip_minus_one=True).tolist() == [[3, 2, 5, 5]]
    assert scoremap_boxes(cam, 0.5, clip_minus_one=False).tolist() == [[3, 2, 6, 6]]
    label = torch.zeros(1, 32, 32, dtype=torch.long)
    mask = radius_mask(2, 2, 1)
    assert affinity_label(label, (2, 2), mask, ignore_diag=False)[0].diagonal().tolist() == [1, 1, 1, 1]
    assert affinity_label(label, (2, 2), mask, ignore_diag=True)[0].diagonal().tolist() == [255] * 4
