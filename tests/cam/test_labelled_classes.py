"""CAMs of the labelled classes only: the same maps as the all-class path, the others zero."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from wsss.cam import CamPasses, cam_to_label, labelled_cam_to_label, labelled_classes
from wsss.core.config import load_config
from wsss.methods import build_method, placeholder_classes
from wsss.runs.jobs import labelled_seed
from wsss.runs.run import Run


def conv_cam_fn(num_fg: int, seed: int = 0):
    """A stand-in network: 4x average pooling then two 1x1 convolutions (CAM, aux CAM)."""
    g = torch.Generator().manual_seed(seed)
    w_cam, w_aux = torch.randn(num_fg, 3, 1, 1, generator=g), torch.randn(num_fg, 3, 1, 1, generator=g)

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.avg_pool2d(x, 4)
        return F.conv2d(x, w_cam), F.conv2d(x, w_aux)

    return fn


def random_labels(b: int, num_fg: int, per_image: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(b, num_fg)
    for i in range(b):
        labels[i, torch.randperm(num_fg, generator=g)[:per_image]] = 1
    return labels


@pytest.mark.parametrize("num_fg", [3, 20, 80])
@pytest.mark.parametrize("reuse_scale1", [False, True])
@pytest.mark.parametrize("normalize", ["minmax", "max"])
def test_labelled_classes_match_the_all_class_path(num_fg, reuse_scale1, normalize):
    fn = conv_cam_fn(num_fg)
    images = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    labels = random_labels(2, num_fg, min(3, num_fg), seed=num_fg)
    scales = (1.0, 0.5, 0.75, 1.5)
    unflipped = fn(images) if reuse_scale1 else None
    full = CamPasses(scales, normalize=normalize)(fn, images, unflipped=unflipped)
    classes = labelled_classes(labels)
    assert classes.tolist() == sorted(set(torch.nonzero(labels)[:, 1].tolist()))
    part = CamPasses(scales, normalize=normalize)(fn, images, unflipped=unflipped, classes=classes)
    compact = CamPasses(scales, normalize=normalize)(fn, images, unflipped=unflipped, classes=classes, compact=True)
    others = torch.ones(num_fg, dtype=torch.bool)
    others[classes] = False
    for f, p, c in zip(full, part, compact):
        assert p.shape == f.shape and c.shape == (2, classes.numel(), 48, 40)
        torch.testing.assert_close(p[:, classes], f[:, classes], rtol=0, atol=1e-6)
        torch.testing.assert_close(c, f[:, classes], rtol=0, atol=1e-6)
        assert torch.all(p[:, others] == 0)
        # every consumer multiplies by the labels: their labels agree exactly
        box = [[0, 48, 0, 40], [2, 40, 4, 36]]
        for kw in (
            {"bkg_thre": 0.4},
            {"bkg_thre": 0.5, "ignore_mid": True, "high_thre": 0.6, "low_thre": 0.2, "img_box": box},
        ):
            torch.testing.assert_close(cam_to_label(p, labels, **kw)[1], cam_to_label(f, labels, **kw)[1])
    assert not others.any() or (full[0][:, others] > 0).any()  # the all-class path computed the others


def test_shared_output_is_processed_once_and_no_label_gives_zeros():
    fn = conv_cam_fn(5)

    def same_twice(x):
        cam = fn(x)[0]
        return cam, cam

    x = torch.randn(1, 3, 32, 32)
    a, b = CamPasses((1.0, 0.5))(same_twice, x)
    assert a is b
    torch.testing.assert_close(a, CamPasses((1.0, 0.5))(lambda t: fn(t)[0], x), rtol=0, atol=0)
    empty = CamPasses((1.0, 0.5))(same_twice, x, classes=torch.zeros(0, dtype=torch.long))
    assert empty[0].shape == (1, 5, 32, 32) and torch.all(empty[0] == 0)


@pytest.mark.parametrize("num_fg", [4, 20, 80])
def test_labelled_cam_to_label_is_cam_to_label_of_the_full_cam(num_fg):
    g = torch.Generator().manual_seed(num_fg)
    labels = random_labels(1, num_fg, min(3, num_fg), seed=num_fg + 1)
    full = torch.rand(1, num_fg, 30, 20, generator=g) * labels.view(1, -1, 1, 1)
    classes = labelled_classes(labels)
    full[0, classes[0], :5] = full[0, classes[-1], :5]  # ties go to the lower class id in both
    expected = cam_to_label(full, labels, bkg_thre=0.45)[1]
    got = labelled_cam_to_label(full[:, classes], classes, bkg_thre=0.45)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    np.testing.assert_array_equal(labelled_seed(classes.numpy(), full[0, classes].numpy(), 0.45), expected[0].numpy())


def tiny_run(num_classes: int, tmp_path, names: list[str] | None = None) -> Run:
    over = [
        "model.pretrained=null",
        "model.backbone_kwargs={patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}",
        "infer.cam_scales=[1.0, 0.75, 1.25]",
        "infer.cam_input_size=64",  # the square the ViT takes (75x100 is not a multiple of its patch)
    ]
    cfg = load_config(REPO / "configs/cam/synthetic_cpu.yaml", over)
    torch.manual_seed(0)
    method = build_method(cfg, placeholder_classes(num_classes)).eval()
    names = names or [f"c{i}" for i in range(num_classes)]
    return Run(dir=tmp_path, cfg=cfg, method=method, class_names=names, device=torch.device("cpu"))


@pytest.mark.parametrize("num_classes", [4, 21, 81])
def test_run_cam_labelled_equals_all_classes(num_classes, tmp_path):
    run = tiny_run(num_classes, tmp_path)
    image = np.random.default_rng(0).integers(0, 256, (75, 100, 3), dtype=np.uint8)
    labels = np.zeros(num_classes - 1, dtype=np.float32)
    labels[[0, num_classes // 2 - 1, num_classes - 2]] = 1
    new = run.cam(image, labels)
    old = run.cam(image, labels, all_classes=True)
    assert new.shape == old.shape == (num_classes - 1, 75, 100)
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-6)
    assert np.all(new[labels == 0] == 0) and new[labels > 0].max() > 0.5
    keys, maps = run.labelled_cam(image, labels)
    np.testing.assert_array_equal(keys, np.flatnonzero(labels))
    np.testing.assert_allclose(maps, old[keys], rtol=0, atol=1e-6)


def test_a_labelled_class_the_classifier_does_not_see_gets_a_map_with_the_fallback(tmp_path, monkeypatch):
    """``infer.cam_empty_fallback`` reaches `wsss cam`'s two paths: a labelled class whose map is
    negative at every pixel is empty without it, filled from below the ReLU with it; unlabelled classes, and
    every class of an image without labels, are never filled."""
    run = tiny_run(5, tmp_path)
    network = run.method.cam_maps

    def first_class_unseen(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam, aux = network(x)
        shift = torch.zeros(1, cam.shape[1], 1, 1)
        shift[0, 0] = 1e3
        return cam - shift, aux - shift

    monkeypatch.setattr(run.method, "cam_maps", first_class_unseen)
    image = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    labels = np.array([1, 1, 0, 0], dtype=np.float32)
    assert run.cfg.infer.cam_empty_fallback == "none"  # unless a preset turns it on (the paper presets do not)
    plain, (keys, plain_maps) = run.cam(image, labels), run.labelled_cam(image, labels)
    assert np.all(plain[0] == 0) and np.all(plain_maps[0] == 0) and plain[1].max() > 0.5
    run.cfg.infer.cam_empty_fallback = "peak_odds"
    filled, (keys, maps) = run.cam(image, labels), run.labelled_cam(image, labels)
    assert filled[0].max() > 0.5 and maps[0].max() > 0.5 and keys.tolist() == [0, 1]
    np.testing.assert_allclose(maps, filled[keys], rtol=0, atol=1e-6)  # the two paths agree
    np.testing.assert_array_equal(filled[1:], plain[1:])  # a map with a positive pixel is left as it was
    assert np.all(run.cam(image)[0] == 0)  # without labels nothing says the class is there


@pytest.mark.parametrize("method", ["seco", "cam"])
def test_training_step_same_terms_and_gradients_as_all_classes(method, monkeypatch):
    """The training-time multi-scale CAM over the labelled classes gives SeCo and the CAM baseline the
    same losses and gradients as the all-class CAM (their consumers all multiply by the labels)."""
    import wsss.methods.cam as cam_module
    import wsss.methods.seco as seco_module
    from tests.methods.seco.test_seco import ALL_TERMS, batch, tiny_seco

    if method == "seco":
        make, module, active = tiny_seco, seco_module, ALL_TERMS
    else:
        over = [
            "model.pretrained=null",
            "model.backbone_kwargs={patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}",
            "cam.scales=[1.0, 0.5, 1.5]",
        ]
        cfg = load_config(REPO / "configs/cam/synthetic_cpu.yaml", over)

        def make():
            torch.manual_seed(0)
            return build_method(cfg, placeholder_classes(5))

        module, active = cam_module, {"cls", "aux", "seg"}

    def run(all_classes: bool):
        if all_classes:  # the passes of every class, whatever the labels say

            class AllClasses(module.CamPasses):
                def __call__(self, *a, classes=None, **k):
                    return super().__call__(*a, **k)

            monkeypatch.setattr(module, "CamPasses", AllClasses)
        m = make()
        m.train()
        terms = m.training_step(batch(), step=5, active=active)
        sum(terms.values()).backward()
        monkeypatch.undo()
        return terms, {n: p.grad for n, p in m.named_parameters() if p.grad is not None}

    (t_new, g_new), (t_old, g_old) = run(False), run(True)
    assert set(t_new) == set(t_old) == active
    for k in t_new:
        torch.testing.assert_close(t_new[k], t_old[k], rtol=0, atol=1e-6, msg=k)
    assert g_new.keys() == g_old.keys()
    for n in g_new:
        torch.testing.assert_close(g_new[n], g_old[n], rtol=1e-5, atol=1e-6, msg=n)


def test_run_cam_files_equal_the_all_class_path(synth_root, tmp_path):
    from wsss.data import VOCDataset
    from wsss.runs.jobs import run_cam
    from wsss.utils.io import load_labelled_cam, read_label_png

    ds = VOCDataset(synth_root, "val")
    dirs = {}
    for all_classes in (False, True):
        # the dataset's class names: a split job refuses a run of other names
        run = tiny_run(ds.num_classes, tmp_path / str(all_classes), ds.class_names)
        dirs[all_classes] = run_cam(run, "val", root=str(synth_root), progress=False, all_classes=all_classes)
    for id in ds.ids:
        new_keys, new = load_labelled_cam(dirs[False].parent.parent / "cams/val" / f"{id}.npz")
        old_keys, old = load_labelled_cam(dirs[True].parent.parent / "cams/val" / f"{id}.npz")
        np.testing.assert_array_equal(new_keys, old_keys)
        np.testing.assert_allclose(new, old, rtol=0, atol=1e-3)  # float16 files
        seeds = [read_label_png(dirs[path] / f"{id}.png") for path in (False, True)]
        np.testing.assert_array_equal(seeds[0], seeds[1])
