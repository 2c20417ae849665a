"""PSA (AffinityNet) against recordings of its official code (golden ``psa_*.npz``): the CAM inference
with its la / ha CRF, the seeds on the feature grid, the affinity labels and loss, the random walk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from golden import assert_close_to_max, load_golden, separated
from wsss.cam.affinity import (
    affinity_labels,
    affinity_loss,
    background_cam,
    dense_affinity,
    pair_indices,
    pairwise_affinity,
    psa_seed_grid,
    random_walk,
    random_walk_scores,
    transition_matrix,
)
from wsss.core.config import load_config


def test_golden_psa_seeds_avg_pooled_scores():
    # Exact: the argmax of each half of the pooled scores has a top-2 gap of 3.1e-4 at least (img0, la) and
    # the padding test (< 1e-5) meets a max channel of 0.50 at least, against float32 pooling noise of ~1e-7.
    g = load_golden("psa_aff_labels")
    for i in range(2):
        la, ha = torch.from_numpy(g[f"img{i}_crf_la"]), torch.from_numpy(g[f"img{i}_crf_ha"])
        seed = psa_seed_grid(la, ha, 8)
        assert np.array_equal(seed.numpy(), g["seed_label"][i]), i
    # the padding rule: a zero (padded) block of both maps is ignored
    la, ha = torch.from_numpy(g["img0_crf_la"]).clone(), torch.from_numpy(g["img0_crf_ha"]).clone()
    la[:, :8, :8] = 0
    ha[:, :8, :8] = 0
    assert int(psa_seed_grid(la, ha, 8)[0, 0]) == 255


def test_golden_psa_affinity_labels_and_pairs():
    g = load_golden("psa_aff_labels")
    src, dst = pair_indices(12, 12, 5)
    assert np.array_equal(src.numpy(), g["ind_from"]) and np.array_equal(dst.reshape(-1).numpy(), g["ind_to"])
    bg, fg, neg = affinity_labels(torch.from_numpy(g["seed_label"]), 5)
    for name, ours in (("bg_pos", bg), ("fg_pos", fg), ("neg", neg)):
        assert np.array_equal(ours.float().numpy(), g[name]), name
    bg, fg, neg = affinity_labels(torch.from_numpy(g["label2"]), 5)
    for name, ours in (("bg_pos2", bg), ("fg_pos2", fg), ("neg2", neg)):
        assert np.array_equal(ours.float().numpy(), g[name]), name


@pytest.mark.parametrize("dt", [torch.float64, torch.float32])
def test_golden_psa_affinity_loss(dt):
    """Both dtypes against the official f64 run. f64: measured 1.1e-16 on aff (max 0.61) and 1.7e-18 on its
    gradient (max 6.8e-3): 1e-12 of the max. f32: the fixture's own f32 run is 7.3e-8 of the max from its f64
    run (aff; 8.9e-8 the gradient, 5.5e-8 the losses), ours 1 ulp from it: 1e-6 of the max, >10x."""
    g = load_golden("psa_aff_labels")
    rel = 1e-12 if dt == torch.float64 else 1e-6
    feat = torch.from_numpy(g["aff_features"]).to(dt)
    aff = pairwise_affinity(feat, 5).requires_grad_(True)
    assert_close_to_max(aff, g["aff_f64"], rel, "aff")
    bg, fg, neg = affinity_labels(torch.from_numpy(g["seed_label"]), 5)
    parts = affinity_loss(aff, bg, fg, neg)
    weights = load_config(REPO / "configs/affinitynet/voc.yaml").loss.weights  # 1/4, 1/4, 1/2
    loss = sum(weights[k] * v for k, v in parts.items())
    for key, ours in (
        ("bg_loss", parts["aff_bg"]),
        ("fg_loss", parts["aff_fg"]),
        ("neg_loss", parts["aff_neg"]),
        ("loss", loss),
    ):
        assert_close_to_max(ours, g[key + "_f64"], rel, key)
    loss.backward()
    assert_close_to_max(aff.grad, g["grad_aff_f64"], rel, "grad_aff")


@pytest.mark.parametrize("i", [0, 1, 2])
def test_golden_psa_random_walk(i):
    g = load_golden("psa_random_walk")
    cam, label = torch.from_numpy(g[f"img{i}_cam"]), g[f"img{i}_label"]
    classes = np.flatnonzero(label > 0.5)
    h, w = cam.shape[1:]
    fg = torch.zeros(20, h, w)
    fg[classes] = cam
    full = background_cam(fg, 16.0)  # the background before the zero padding (PSA)
    hp, wp = -h % 8, -w % 8
    padded = F.pad(full, (0, wp, 0, hp))
    # The official code is float32 only. Elementwise steps (the background power, the padding) measured 6e-8
    # from it (1 ulp), the pooled CAM 1.2e-7, the affinity 6e-8 (our f64 affinity: 3.4e-8, the recording's
    # own rounding); 1e-6 leaves room for the f32 mean over 448 channels summed in another order elsewhere
    # (sqrt(448) ulps is 1.3e-6 relative of the mean).
    np.testing.assert_allclose(padded.numpy(), g[f"img{i}_cam_full_padded"], rtol=0, atol=1e-6)
    feat = torch.from_numpy(g[f"img{i}_aff_features"]).float()
    aff = dense_affinity(feat, 5)
    np.testing.assert_allclose(aff.numpy(), g[f"img{i}_aff_mat"], rtol=0, atol=1e-6)
    pooled = F.avg_pool2d(padded[None], 8)[0]
    np.testing.assert_allclose(pooled.numpy(), g[f"img{i}_cam_pooled"], rtol=0, atol=1e-6)
    # The walk (T^256: 8 squarings amplify float32 rounding). In f64 from the recorded affinity and pooled
    # CAM, against the harness's f64 walk of the same inputs: measured 5.5e-14 of the max, 1e-12.
    ref = g[f"img{i}_cam_rw_f64_harness"]
    aff64 = torch.from_numpy(g[f"img{i}_aff_mat"]).double()
    pooled64 = torch.from_numpy(g[f"img{i}_cam_pooled"]).double().reshape(21, -1)
    walked64 = random_walk(pooled64, transition_matrix(aff64, 8.0), 8).reshape(ref.shape)
    assert_close_to_max(walked64, ref, 1e-12, "cam_rw f64")
    # In f32, against that f64 walk: the official f32 walk is 2.8e-5 of the max from it (img2), ours the same
    # (it follows the official to 1.3e-6, on default and AVX2 kernels, 1 or 2 threads); 1.5e-4 = 5x, so that
    # another BLAS, whose f32 walk may land anywhere within that noise, passes too.
    rel = 1.5e-4
    walked = random_walk(pooled.reshape(21, -1), transition_matrix(aff, 8.0), 8).reshape(pooled.shape)
    assert_close_to_max(walked, ref, rel, "cam_rw f32")
    scores = random_walk_scores(padded, feat, beta=8.0, logt=8, radius=5)
    ref_up = F.interpolate(torch.from_numpy(ref)[None], size=padded.shape[1:], mode="bilinear", align_corners=False)
    ref_up = ref_up[0].numpy()  # the f64 walk upsampled as the official does (measured 2.7e-5 from its f32 one)
    assert_close_to_max(scores, ref_up, rel, "cam_rw_up")
    # labels exactly where the top two walked scores are further apart than the tolerance allows to flip
    pred = scores[:, :h, :w].argmax(0).numpy()
    clear = separated(ref_up[:, :h, :w], rel * float(np.abs(ref_up).max()))
    assert clear.mean() > 0.99
    assert np.array_equal(pred[clear], g[f"img{i}_label_rw"][clear].astype(np.int64))


@pytest.mark.parametrize("i", [0, 1, 2])
def test_golden_psa_cam_inference_and_la_ha_crf(i):
    """PSA's classifier (SC-CAM's round 0, head fc8) on the recorded passes: our heads, the PSA fusion of the
    paper preset, the 0.2-background prediction, the la / ha CRF score maps, and the seeds they give."""
    from methods.sccam.test_sccam_golden import PASS_SCALES, pass_cam_fn
    from wsss.cam import cam_to_label
    from wsss.cam.crf import psa_crf_scores
    from wsss.cam.multiscale import CamPasses
    from wsss.methods import build_method, placeholder_classes
    from wsss.methods.sccam.official_keys import sccam_state_from_official
    from wsss.models.heads import CAMClassifier

    g = load_golden("psa_infer_cls")
    cfg = load_config(
        REPO / "configs/sccam/voc.yaml",
        ["model.pretrained=null", "options.round=0", "model.backbone_kwargs={width: 0.0625}"],
    )
    m = build_method(cfg, placeholder_classes(21)).eval()
    m.classifier = CAMClassifier(4096, 20, "gap")  # the heads of a 4096-channel trunk (ResNet-38)
    m.load_state_dict(
        {**m.state_dict(), **sccam_state_from_official({"fc8.weight": torch.from_numpy(g["fc8.weight"])})[0]}
    )
    image, label = g[f"img{i}_image"], torch.from_numpy(g[f"img{i}_label"])
    h, w = image.shape[:2]
    fn = pass_cam_fn(g, i, lambda f: m.head_cams(f)[0], PASS_SCALES, (h, w), torch.float32)
    with torch.no_grad():
        passes = CamPasses(cfg.infer.cam_scales, flip_fuse=cfg.infer.cam_flip_fuse, normalize=cfg.infer.cam_normalize)
        cam = passes(fn, torch.zeros(1, 3, h, w))
    cam = (cam * label.view(1, -1, 1, 1))[0]
    gt = np.flatnonzero(g[f"img{i}_label"] > 0.5)
    # The official run is float32 only: our f64 run of the same passes is 2.9e-7 from it (its f32 noise; the
    # maps are normalised to a max of 1), our f32 run 2.4e-7 from our f64; so ours vs official <= 5.3e-7
    # (measured 3e-7, default and AVX2 kernels, 1 and 2 threads): 2e-6.
    tol = 2e-6
    np.testing.assert_allclose(cam[gt].numpy(), g[f"img{i}_cam"], rtol=0, atol=tol)
    # the 0.2-background label, exactly where no score within ``tol`` flips it (img2 has a 5.8e-7 near-tie)
    _, pred = cam_to_label(cam[None], label[None], bkg_thre=0.2)
    stack = np.concatenate([np.full((1, h, w), 0.2), g[f"img{i}_cam"].astype(np.float64)])
    clear = separated(stack, tol)
    assert clear.mean() > 0.99
    assert np.array_equal(pred[0].numpy()[clear], g[f"img{i}_cam_pred_bg02"].astype(np.int64)[clear])
    # the la / ha CRF of the recorded CAM (the CRF step alone): measured 4.2e-7 (Q <= 1), 2e-6 = 5x
    recorded = np.zeros((20, h, w), np.float32)
    recorded[gt] = g[f"img{i}_cam"]
    ids, (la, ha) = psa_crf_scores(image, recorded, label.numpy(), (4, 32))
    assert ids.tolist() == [0, *(gt + 1).tolist()]
    np.testing.assert_allclose(la, g[f"img{i}_crf_la"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(ha, g[f"img{i}_crf_ha"], rtol=0, atol=2e-6)
    if i < 2:  # psa_aff_labels' seeds come from these two images' la / ha maps (top-2 gaps >= 3.1e-4: exact)
        seed = psa_seed_grid(torch.from_numpy(la), torch.from_numpy(ha), 8)
        assert np.array_equal(seed.numpy(), load_golden("psa_aff_labels")["seed_label"][i])


def test_golden_psa_seed_label_at_image_size():
    """``options.psa_seed_stride: 8`` (`wsss pseudo --refine psa` of the SC-CAM paper preset): the pooled seed as
    class ids, block-constant at the image size; a size that is not a multiple of 8 is padded (-> 255)."""
    from wsss.cam.affinity import psa_seed_label

    g = load_golden("psa_aff_labels")
    ids = torch.tensor([0, 5, 12])  # background, then the image's classes (ids) in dict order
    la, ha = torch.from_numpy(g["img0_crf_la"]), torch.from_numpy(g["img0_crf_ha"])
    label = psa_seed_label(la, ha, ids, 8)
    grid = torch.from_numpy(g["seed_label"][0]).long()
    expected = torch.where(grid == 255, grid, ids[grid.clamp(max=2)])
    assert torch.equal(label, expected.repeat_interleave(8, 0).repeat_interleave(8, 1))
    cut = psa_seed_label(la[:, :92, :90], ha[:, :92, :90], ids, 8)
    assert cut.shape == (92, 90) and torch.equal(cut[:88, :88], label[:88, :88])


def test_pseudo_refine_psa_writes_the_pooled_seed_with_psa_seed_stride(synth_root, tmp_path):
    """`wsss pseudo --refine psa` with ``options.psa_seed_stride: 8``: the seed PNG is the grid label of the pooled
    la / ha scores, constant on every 8x8 block."""
    import yaml

    from conftest import tiny_overrides
    from wsss.cli import main
    from wsss.data import VOCDataset
    from wsss.utils.io import read_label_png

    run = tmp_path / "cam"
    over = tiny_overrides(synth_root, run, **{"train.max_iters": 2, "train.eval_iters": 100})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *over, "--quiet", "--skip-check"]) == 0
    assert main(["cam", str(run), "--split", "val", "--quiet"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["options"]["psa_seed_stride"] = 8
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["pseudo", str(run), "--split", "val", "--refine", "psa", "--quiet"]) == 0
    ds = VOCDataset(synth_root, "val")
    for i in ds.ids:
        seed = read_label_png(run / "pseudo/val" / f"{i}.png")
        h, w = seed.shape
        assert (h, w) == ds.load_image(i).shape[:2]
        blocks = seed[: h - h % 8, : w - w % 8].reshape(h // 8, 8, w // 8, 8)
        assert (blocks == blocks[:, :1, :, :1]).all()
        assert set(np.unique(seed).tolist()) <= {0, 255} | {int(c) + 1 for c in np.flatnonzero(ds.labels(i))}

    # SC-CAM's quirk_binarised_crf_cam: `--refine psa` of an sccam run feeds the {0, 255} heatmap to the CRF
    from methods.sccam.test_sccam import tiny_cfg
    from wsss.cam.crf import crf_label_psa
    from wsss.methods import build_method
    from wsss.methods.sccam import binarise_cam
    from wsss.runs.jobs import run_pseudo
    from wsss.runs.run import Run
    from wsss.utils.io import load_cam_of

    labels_of = {}
    for quirk in (True, False):
        scfg = tiny_cfg(synth_root, run, f"options.quirk_binarised_crf_cam={str(quirk).lower()}", "options.round=0")
        sccam = Run(
            dir=run,
            cfg=scfg,
            method=build_method(scfg, ds.class_names),
            class_names=ds.class_names,
            device=torch.device("cpu"),
        )
        out = run_pseudo(sccam, "val", refine="psa", overwrite=True, progress=False)
        i = ds.ids[0]
        cam = load_cam_of(run / "cams/val", i, ds.num_classes - 1)
        expected = crf_label_psa(ds.load_image(i), binarise_cam(cam, 0.15) if quirk else cam, ds.labels(i))
        labels_of[quirk] = read_label_png(out / f"{i}.png")
        assert np.array_equal(labels_of[quirk], expected)
    assert not np.array_equal(labels_of[True], labels_of[False])  # the switch changes the seeds here
