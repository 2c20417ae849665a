"""CAM -> labels (docs/methods/seco.md#cam2label, #pseudo-label, #decompose) against golden fixtures, plus
hand-made checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golden import load_golden
from wsss.cam import (
    PAR,
    box_mask,
    cam_to_label,
    cam_to_roi_mask,
    denormalize_image,
    refine_cams_with_bkg,
    scale_img_box,
)


# ----------------------------------------------------------------------------- golden fixtures
def test_cam_to_label_golden():
    g = load_golden("cam_to_label")
    cams, cls = torch.from_numpy(g["cams"]), torch.from_numpy(g["cls_label"])
    _, label_eval = cam_to_label(cams, cls, img_box=None, bkg_thre=float(g["bkg_thre"]))
    assert label_eval.dtype == torch.int64
    np.testing.assert_array_equal(label_eval.numpy(), g["label_eval"])
    valid_cam, label_train = cam_to_label(
        cams,
        cls,
        img_box=g["img_box"],
        ignore_mid=True,
        bkg_thre=float(g["bkg_thre"]),
        high_thre=float(g["high_thre"]),
        low_thre=float(g["low_thre"]),
        ignore_index=int(g["ignore_index"]),
    )
    # exact: valid_cam multiplies by 0 / 1, and the labels compare recorded f64 values with the thresholds
    np.testing.assert_array_equal(valid_cam.numpy(), g["valid_cam"])
    np.testing.assert_array_equal(label_train.numpy(), g["label_train"])


def test_cam_to_roi_mask_golden():
    g = load_golden("csc_tags")
    roi = cam_to_roi_mask(
        torch.from_numpy(g["cams"]),
        torch.from_numpy(g["cls_label"]),
        img_box=torch.from_numpy(g["img_box"]),
        ignore_mid=True,
        bkg_thre=float(g["bkg_thre"]),
        low_thre=float(g["low_thre"]),
        high_thre=float(g["high_thre"]),
        ignore_index=255,
    )
    np.testing.assert_array_equal(roi.numpy(), g["roi_mask"])


def test_denormalize_golden():
    g = load_golden("denormalize_img2")
    out = denormalize_image(torch.from_numpy(g["normalized"]))
    assert out.dtype == torch.float32
    # Exact by construction: x*std and +mean are two elementwise ops, each correctly rounded (no reduction, no
    # fused multiply-add across them), then a truncation and a division; measured identical on the portable
    # and AVX2 kernels. It must be exact: the truncation turns one ulp below an integer into a whole step.
    np.testing.assert_array_equal(out.numpy(), g["denorm"])
    np.testing.assert_array_equal(np.round(out.numpy() * 255).astype(np.uint8), g["uint8_after_cast"])


@pytest.fixture(scope="module")
def refine_golden() -> dict[str, np.ndarray]:
    return load_golden("refine_cams_with_bkg_v2")


def test_golden_refine_input_is_denormalize(refine_golden):
    g = refine_golden
    out = denormalize_image(torch.from_numpy(g["image_normalized"]))
    np.testing.assert_array_equal(out.numpy(), g["image_denorm"])


@pytest.mark.parametrize(("dtype", "key"), [(torch.float64, "refined_label_f64"), (torch.float32, "refined_label_f32")])
def test_refine_cams_with_bkg_golden(refine_golden, dtype, key):
    g = refine_golden
    label = refine_cams_with_bkg(
        PAR(dilations=[1, 2, 4, 8, 12, 24], num_iter=10),
        torch.from_numpy(g["image_denorm"]).to(dtype),
        torch.from_numpy(g["cams"]).to(dtype),
        torch.from_numpy(g["cls_label"]).to(dtype),
        high_thre=float(g["high_thre"]),
        low_thre=float(g["low_thre"]),
        ignore_index=255,
        img_box=g["img_box"],
        down_scale=int(g["down_scale"]),
    )
    assert label.dtype == torch.int64 and label.shape == (2, 64, 72)
    # Labels exact in both dtypes: the smallest top-2 gap of the upsampled PAR scores inside the boxes is
    # 1.1e-4 (f64 run), 50x the float32 noise of PAR (2.1e-6, par.npz), so no argmax can flip.
    np.testing.assert_array_equal(label.numpy(), g[key].astype(np.int64))


def test_golden_refine_batched_equals_per_image(refine_golden):
    # The batched version pads the per-image class subsets; it must equal one image at a time.
    g = refine_golden
    args = dict(high_thre=0.7, low_thre=0.25, ignore_index=255, down_scale=2)
    par = PAR(num_iter=3)
    img = torch.from_numpy(g["image_denorm"]).double()
    cams = torch.from_numpy(g["cams"])
    cls = torch.from_numpy(g["cls_label"])
    box = torch.from_numpy(g["img_box"])
    both = refine_cams_with_bkg(par, img, cams, cls, img_box=box, **args)  # f64: argmax gaps >> f64 rounding
    for i in range(2):
        one = refine_cams_with_bkg(par, img[i : i + 1], cams[i : i + 1], cls[i : i + 1], img_box=box[i : i + 1], **args)
        assert torch.equal(both[i], one[0])


# ----------------------------------------------------------------------------- hand-made
def _cams_with_values(values: list[float], c: int = 3) -> torch.Tensor:
    cam = torch.zeros(1, c, 1, len(values), dtype=torch.float64)
    cam[0, 1, 0] = torch.tensor(values, dtype=torch.float64)
    return cam


def test_cam_to_label_eval_thresholds():
    cam = _cams_with_values([0.5, 0.5000001, 0.0, 1.0])
    cls = torch.tensor([[0.0, 1.0, 0.0]])
    valid, label = cam_to_label(cam, cls, bkg_thre=0.5)
    assert label.tolist() == [[[0, 2, 0, 2]]]
    assert torch.equal(valid, cam * cls.view(1, 3, 1, 1))


def test_cam_to_label_train_thresholds_and_box():
    cam = _cams_with_values([0.7, 0.7000001, 0.25, 0.2500001, 0.5, 0.1])
    cls = torch.tensor([[0.0, 1.0, 0.0]])
    _, label = cam_to_label(cam, cls, img_box=[[0, 1, 0, 6]], ignore_mid=True, bkg_thre=0.5)
    assert label.tolist() == [[[255, 2, 0, 255, 255, 0]]]
    _, label = cam_to_label(cam, cls, img_box=[[0, 1, 1, 4]], ignore_mid=True, bkg_thre=0.5)
    assert label.tolist() == [[[255, 2, 0, 255, 255, 255]]]
    roi = cam_to_roi_mask(cam, cls, img_box=[[0, 1, 1, 4]], bkg_thre=0.5)
    assert roi.tolist() == [[[255, 2, 0, -1, 255, 255]]]
    # one function: the decomposition mask is cam_to_label with the uncertain value -1
    _, same = cam_to_label(cam, cls, img_box=[[0, 1, 1, 4]], ignore_mid=True, bkg_thre=0.5, uncertain=-1)
    assert torch.equal(same, roi)


def test_cam_to_label_absent_class_ignored():
    cam = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    cam[0, 0] = 0.9  # absent
    cam[0, 1] = 0.8  # present
    _, label = cam_to_label(cam, torch.tensor([[0.0, 1.0]]), bkg_thre=0.5)
    assert label.item() == 2


def test_box_mask_matches_slicing():
    boxes = [[0, 5, 0, 7], [1, 3, 2, 20], [2, 100, 0, 4]]
    m = box_mask(boxes, (5, 7))
    for i, (h0, h1, w0, w1) in enumerate(boxes):
        ref = np.zeros((5, 7), bool)
        ref[h0:h1, w0:w1] = True
        np.testing.assert_array_equal(m[i].numpy(), ref)


def test_scale_img_box():
    box = [[0, 448, 0, 448], [100, 348, 20, 460]]
    r = scale_img_box(box, (448, 448), (28, 28))
    assert r.tolist() == [[0, 28, 0, 28], [6, 22, 1, 28]]
    assert scale_img_box(box, (448, 448), (28, 28), mode="outer").tolist()[1] == [6, 22, 1, 28]
    assert scale_img_box(box, (448, 448), (28, 28), mode="inner").tolist()[1] == [7, 21, 2, 28]
    with pytest.raises(ValueError):
        scale_img_box(box, (448, 448), (28, 28), mode="bad")


def test_refine_one_class_toy():
    # Class 3 (channel 2): a confident square (cam 1), an uncertain ring (cam 0.5), bg elsewhere;
    # each region has its own colour, so PAR keeps them apart.
    h = w = 48
    image = torch.full((1, 3, h, w), 0.1)
    image[..., 4:44, 4:44] = 0.5
    image[..., 16:32, 16:32] = 0.9
    cams = torch.zeros(1, 4, h, w)
    cams[0, 2, 4:44, 4:44] = 0.5
    cams[0, 2, 16:32, 16:32] = 1.0
    cls = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    label = refine_cams_with_bkg(PAR(), image, cams, cls, high_thre=0.7, low_thre=0.25, img_box=[[0, 48, 0, 46]])
    assert label.dtype == torch.int64
    assert set(label.unique().tolist()) <= {0, 3, 255}
    assert (label[0, 18:30, 18:30] == 3).all()  # fg even with the high bg score
    assert (label[0, :2, :46] == 0).all()  # bg even with the low bg score
    assert (label[0, :, 46:] == 255).all()  # outside the box
    assert (label[0, 8:12, 8:40] == 255).all()  # uncertain ring: bg for high, fg for low


def test_refine_no_foreground_is_background():
    label = refine_cams_with_bkg(
        PAR(num_iter=2), torch.rand(2, 3, 16, 16), torch.zeros(2, 3, 16, 16), torch.zeros(2, 3), 0.7, 0.25
    )
    assert (label == 0).all()


def test_the_background_level_has_its_default_in_the_schema_only():
    """``cam.bkg_thre`` is given by each caller (from its config); no function of cam/labels.py has a default of
    its own beside the schema's."""
    import inspect

    from wsss.cam.labels import labelled_cam_to_label
    from wsss.core.config import load_config

    for fn in (cam_to_label, cam_to_roi_mask, labelled_cam_to_label):
        assert inspect.signature(fn).parameters["bkg_thre"].default is inspect.Parameter.empty, fn.__name__
    assert isinstance(load_config(None).cam.bkg_thre, float)
