"""The DeepLab segmentation stage: the loss ignoring 255, DeepLab-v2 / v3+ shapes, the optimiser groups,
frozen BatchNorm, and pseudo labels -> `wsss train` -> `wsss predict --crf` -> `wsss eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import REPO
from wsss.cli import main
from wsss.core.config import load_config
from wsss.core.errors import ConfigError, UsageError
from wsss.data import VOCDataset
from wsss.engine.trainer import build_optimizer
from wsss.methods import build_method, placeholder_classes
from wsss.methods.deeplab import seg_cross_entropy
from wsss.models.decoders import ASPP
from wsss.models.weights import resolve_weight_path
from wsss.utils.io import read_label_png, save_label_png

TINY_CNN = "{channels: [8, 16, 16, 32], stem_width: 8}"


def tiny_cfg(*extra: str):
    return load_config(
        REPO / "configs/deeplab/synthetic_cpu.yaml", [f"model.backbone_kwargs={TINY_CNN}", "data.num_workers=0", *extra]
    )


def test_seg_loss_ignores_255():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, generator=g)
    target = torch.randint(0, 4, (2, 3, 5), generator=g)
    target[0, 0, :] = 255
    target[1, 2, 1:4] = 255
    logp = logits.log_softmax(1)
    vals = [
        -logp[b, target[b, y, x], y, x] for b in range(2) for y in range(3) for x in range(5) if target[b, y, x] != 255
    ]
    assert torch.allclose(seg_cross_entropy(logits, target), torch.stack(vals).mean())
    # changing the logits of ignored pixels changes nothing
    other = logits.clone()
    other[0, :, 0, :] += 100 * torch.randn(4, 5, generator=g)
    assert torch.allclose(seg_cross_entropy(other, target), seg_cross_entropy(logits, target))
    # all ignored: zero, with a gradient path, not NaN
    none = seg_cross_entropy(logits.requires_grad_(), torch.full((2, 3, 5), 255))
    assert float(none.detach()) == 0.0
    none.backward()


def test_seg_loss_label_resizing():
    """kazuto1011: the labels go to the logit size by pixel-centre nearest; the alternative upsamples logits."""
    target = torch.arange(16).view(1, 4, 4) % 3
    target[0, 1, 1] = 255  # 2x2 cells are sampled at their centre pixel: rows / cols 1 and 3
    logits = torch.randn(1, 3, 2, 2)
    small = target[:, 1::2, 1::2]
    assert small[0, 0, 0] == 255
    assert torch.allclose(seg_cross_entropy(logits, target), seg_cross_entropy(logits, small))
    up = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(seg_cross_entropy(logits, target, target_at_logit_res=False), seg_cross_entropy(up, target))


def test_deeplab_v2_and_v3plus_shapes():
    x = torch.randn(2, 3, 64, 64)
    v2 = build_method(tiny_cfg(), placeholder_classes(7)).eval()
    assert isinstance(v2.net.classifier, ASPP)
    assert [c.dilation[0] for c in v2.net.classifier.branches] == [2, 4, 6, 8]
    paper = build_method(tiny_cfg("options.rates=[6, 12, 18, 24]"), placeholder_classes(21))
    assert [c.dilation[0] for c in paper.net.classifier.branches] == [6, 12, 18, 24]
    with torch.no_grad():
        assert v2.seg_logits(x).shape == (2, 7, 8, 8)  # output stride 8
        v3 = build_method(
            tiny_cfg("options.arch=v3plus", "options.rates=[1, 2, 3]", "options.v3_dim=16"), placeholder_classes(7)
        ).eval()
        assert v3.seg_logits(x).shape == (2, 7, 16, 16)  # stride-4 decoder
    assert not v2.has_cams and v2.has_seg_head
    with pytest.raises(UsageError, match="^method deeplab has no CAM stage"):
        v2.cam_maps(x)


def test_param_groups_and_frozen_bn():
    cfg = tiny_cfg("options.freeze_bn=true", "train.lr=0.001", "train.weight_decay=0.0005", "train.optimizer=sgd")
    m = build_method(cfg, placeholder_classes(7))
    m.train()
    bns = [mod for mod in m.net.backbone.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert bns and all(not b.training and not b.weight.requires_grad for b in bns)
    opt = build_optimizer(m, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(0.001) and groups["backbone"]["weight_decay"] == 0.0005
    assert groups["head"]["lr"] == pytest.approx(0.01)  # 10x classifier weights
    assert groups["head_bias"]["lr"] == pytest.approx(0.02) and groups["head_bias"]["weight_decay"] == 0.0
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(b.weight) not in optimised for b in bns)


def test_msc_training_step_sums_four_losses():
    cfg = tiny_cfg("options.msc_scales=[0.75, 0.5]")
    m = build_method(cfg, placeholder_classes(7)).train()
    torch.manual_seed(0)
    batch = {"image": torch.randn(2, 3, 32, 32), "target": torch.randint(0, 7, (2, 32, 32))}
    loss = m.training_step(batch, 0, {"seg"})["seg"]
    m.eval()  # same BN statistics for the reference (eval mode runs the identical graph)
    with torch.no_grad():
        x = batch["image"]
        outs = [m.net(x)] + [m.net(F.interpolate(x, scale_factor=s, mode="bilinear")) for s in (0.75, 0.5)]
        up = [F.interpolate(o, size=outs[0].shape[-2:], mode="bilinear") for o in outs[1:]]
        outs.append(torch.stack([outs[0], *up]).max(0).values)
        ref = sum(seg_cross_entropy(o, batch["target"]) for o in outs)
        again = m.training_step(batch, 0, {"seg"})["seg"]
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert torch.allclose(again, ref)


def test_train_on_pseudo_labels_predict_eval(synth_root, tmp_path, capsys):
    base = VOCDataset(synth_root, "train")
    pseudo = tmp_path / "pseudo"
    rng = np.random.default_rng(0)
    for i in base.ids:
        mask = base.load_mask(i).copy()
        mask[rng.random(mask.shape) < 0.2] = 255
        save_label_png(pseudo / f"{i}.png", mask)
    run = tmp_path / "seg"
    over = [
        f"data.root={synth_root}",
        f"run.dir={run}",
        f"data.pseudo_dir={pseudo}",
        "data.crop_size=64",
        "data.num_workers=0",
        f"model.backbone_kwargs={TINY_CNN}",
        "train.batch_size=4",
        "train.max_iters=4",
        "train.eval_iters=2",
        "train.ckpt_iters=2",
        "train.log_iters=2",
        "infer.scales=[1.0]",
        "infer.crf_workers=0",
    ]
    cfg = str(REPO / "configs/deeplab/synthetic_cpu.yaml")
    assert main(["train", cfg, *over, "--quiet"]) == 0
    vals = [json.loads(line)["val"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert len(vals) == 2 and all("seg_miou" in v and "cam_miou" not in v for v in vals)
    assert (run / "checkpoints/best.pt").is_file()

    assert main(["predict", str(run), "--split", "val", "--crf", "--quiet"]) == 0
    ids = VOCDataset(synth_root, "val").ids
    for i in ids:
        assert read_label_png(run / "predictions_crf/val" / f"{i}.png").shape == (64, 64)
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "eval",
                str(run / "predictions_crf/val"),
                "--data-root",
                str(synth_root),
                "--split",
                "val",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert 0.0 <= json.loads(out.read_text())["miou"] <= 1.0
    # a run without CAMs draws its image, ground truth and prediction (it used to stop in cam_maps)
    assert main(["viz", str(run), "--ids", ids[0], "--split", "val", "--quiet"]) == 0
    assert (run / "viz" / f"{ids[0]}.png").is_file()
    image = synth_root / "JPEGImages" / f"{ids[1]}.png"
    image = image if image.is_file() else synth_root / "JPEGImages" / f"{ids[1]}.jpg"
    assert main(["viz", str(run), "--image", str(image), "--out", str(tmp_path / "v"), "--quiet"]) == 0
    assert main(["report", str(run)]) == 0
    capsys.readouterr()
    assert main(["cam", str(run), "--split", "val", "--quiet"]) == 1  # no CAMs: one line, no traceback
    assert "method deeplab has no CAM stage: run `wsss cam` on the run" in capsys.readouterr().err

    # a missing pseudo label: a clear error naming the file; no pseudo_dir: a config error
    (pseudo / f"{base.ids[5]}.png").unlink()
    capsys.readouterr()
    assert main(["train", cfg, *over, f"run.dir={tmp_path / 'seg2'}", "--quiet", "--skip-check"]) == 1
    assert f"{base.ids[5]}.png" in capsys.readouterr().err
    no_dir = [o for o in over if not o.startswith("data.pseudo_dir")]
    assert main(["train", cfg, *no_dir, f"run.dir={tmp_path / 'seg3'}", "--quiet", "--skip-check"]) == 2
    assert "data.pseudo_dir" in capsys.readouterr().err


def test_imagenet_mobilenetv2_preset_loads_and_trains_finite():
    """configs/deeplab/synthetic_mnv2.yaml: the real ImageNet MobileNetV2 file loads into the dilated backbone,
    its BatchNorm stays frozen, and SGD steps at the preset's lr keep the loss finite and falling on a batch."""
    cfg = load_config(REPO / "configs/deeplab/synthetic_mnv2.yaml", ["data.num_workers=0"])
    torch.manual_seed(0)
    m = build_method(cfg, placeholder_classes(7)).train()
    first = next(mod for mod in m.net.backbone.modules() if isinstance(mod, torch.nn.Conv2d))
    state = torch.load(resolve_weight_path(cfg.model.pretrained), map_location="cpu", weights_only=True)
    assert torch.equal(first.weight, state["features.0.0.weight"])  # the stem filters of the ImageNet file
    bns = [mod for mod in m.net.backbone.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert bns and all(not b.training for b in bns)
    opt = build_optimizer(m, cfg)
    x = torch.randn(4, 3, 64, 64)
    target = torch.zeros(4, 64, 64, dtype=torch.long)
    target[:, 16:48, 16:48] = 3
    losses = []
    for step in range(8):
        loss = m.training_step({"image": x, "target": target}, step, {"seg"})["seg"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_pretended_underfitting_caps_the_pixels_the_network_contradicts():
    """``options.pus=clamp``: with a fitted batch (mean loss below beta) the loss is the mean over the labelled
    pixels of min(CE, k); the network is left as the preset's (off by default); a wrong mode is refused."""
    torch.manual_seed(0)
    batch = {"image": torch.randn(2, 3, 32, 32), "target": torch.randint(0, 7, (2, 32, 32))}
    plain = build_method(tiny_cfg(), placeholder_classes(7)).eval()
    assert plain.pus is None
    with torch.no_grad():
        logits = plain.net(batch["image"])
        small = F.interpolate(batch["target"][:, None].float(), size=logits.shape[-2:], mode="nearest-exact")[:, 0]
        pixel = F.cross_entropy(logits, small.long(), reduction="none")
        k = float(pixel.median())  # the cap acts on about half of the pixels
        capped = build_method(
            tiny_cfg("options.pus=clamp", "options.pus_beta=100", f"options.pus_k={k}"), placeholder_classes(7)
        ).eval()
        capped.load_state_dict(plain.state_dict())
        assert torch.allclose(plain.training_step(batch, 0, {"seg"})["seg"], pixel.mean())
        capped_loss = capped.training_step(batch, 0, {"seg"})["seg"]
        assert torch.allclose(capped_loss, pixel.clamp(max=k).mean()) and float(capped_loss) < float(pixel.mean())
    with pytest.raises(ConfigError, match="options.pus"):
        build_method(tiny_cfg("options.pus=cap"), placeholder_classes(7))


def test_seg_loss_weights_each_samples_pixels():
    # data.true_mask_weight: the weighted mean over the labelled pixels, against a float64 reference
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 6, 5, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 6, 5), generator=g)
    target[torch.rand(3, 6, 5, generator=g) < 0.3] = 255
    weight = torch.tensor([4.0, 1.0, 0.5], dtype=torch.float64)
    pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    labelled = (target != 255).double()
    ref = (pixel * weight[:, None, None]).sum() / (labelled * weight[:, None, None]).sum()
    assert torch.allclose(seg_cross_entropy(logits, target, weight=weight), ref, rtol=1e-12, atol=0)
    # weight 1 everywhere is the plain mean; a weight of 2 counts a sample as if it were there twice
    plain = seg_cross_entropy(logits, target)
    assert torch.allclose(seg_cross_entropy(logits, target, weight=torch.ones(3)), plain, rtol=1e-12, atol=0)
    twice = seg_cross_entropy(torch.cat([logits, logits[:1]]), torch.cat([target, target[:1]]))
    assert torch.allclose(
        seg_cross_entropy(logits, target, weight=torch.tensor([2.0, 1.0, 1.0])), twice, rtol=1e-12, atol=0
    )
    assert not torch.allclose(seg_cross_entropy(logits, target, weight=weight), plain)


def test_train_on_true_masks_and_pseudo_labels(synth_root, tmp_path, capsys):
    # data.true_masks: the masked photos need no pseudo label; "auto" without pseudo labels trains fully
    # supervised on the data set's own masks
    base = VOCDataset(synth_root, "train")
    pseudo, masks = tmp_path / "pseudo", tmp_path / "masks"
    for i in base.ids:
        save_label_png(pseudo / f"{i}.png", base.load_mask(i))
    for i in base.ids[:3]:
        save_label_png(masks / f"{i}.png", base.load_mask(i))
        (pseudo / f"{i}.png").unlink()
    over = [
        f"data.root={synth_root}",
        "data.crop_size=48",
        "data.num_workers=0",
        f"model.backbone_kwargs={TINY_CNN}",
        "train.batch_size=4",
        "train.max_iters=2",
        "train.eval_iters=100",
        "train.ckpt_iters=2",
        "data.val_split=",
    ]
    cfg = str(REPO / "configs/deeplab/synthetic_cpu.yaml")
    run = tmp_path / "mixed"
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                cfg,
                *over,
                f"run.dir={run}",
                f"data.pseudo_dir={pseudo}",
                f"data.true_masks={masks}",
                "data.true_mask_weight=2",
                "--quiet",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert f"targets: 3 of the {len(base.ids)} photos of split train train on their own masks (weight 2)" in err
    assert load_config(run / "config.yaml").data.true_masks == str(masks)
    assert main(["train", cfg, *over, f"run.dir={tmp_path / 'auto'}", "data.true_masks=auto", "--quiet"]) == 0
    # a folder of masks holding an RGB file: check-data names it before training
    Image.new("RGB", (8, 8)).save(masks / f"{base.ids[0]}.png")
    assert (
        main(
            [
                "train",
                cfg,
                *over,
                f"run.dir={tmp_path / 'bad'}",
                f"data.pseudo_dir={pseudo}",
                f"data.true_masks={masks}",
                "--quiet",
            ]
        )
        == 1
    )
    assert f"{masks / base.ids[0]}.png" in capsys.readouterr().err


def test_the_seg_term_with_the_generalized_cross_entropy():
    # options.seg_loss=gce: the seg term is the mean over the labelled pixels of the generalized cross entropy of
    # options.gce_q (0 is no q: refused in one line)
    from wsss.losses.seg import generalized_ce_pixels

    cfg = tiny_cfg("options.seg_loss=gce", "options.gce_q=0.5")
    m = build_method(cfg, placeholder_classes(7)).eval()
    torch.manual_seed(0)
    target = torch.randint(0, 7, (2, 32, 32))
    target[:, :4] = 255
    batch = {"image": torch.randn(2, 3, 32, 32), "target": target}
    with torch.no_grad():
        loss = m.training_step(batch, 0, {"seg"})["seg"]
        logits = m.net(batch["image"])
        small = F.interpolate(target[:, None].float(), size=logits.shape[-2:], mode="nearest-exact")[:, 0].long()
        ref = generalized_ce_pixels(logits, small, 0.5).sum() / (small != 255).sum()
        plain = build_method(tiny_cfg(), placeholder_classes(7)).eval()
        plain.load_state_dict(m.state_dict())
        ce = plain.training_step(batch, 0, {"seg"})["seg"]
    assert torch.allclose(loss, ref) and not torch.allclose(loss, ce)
    with pytest.raises(ConfigError, match="gce_q"):
        build_method(tiny_cfg("options.gce_q=0"), placeholder_classes(7))
