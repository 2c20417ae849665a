"""The DeepLab stage's consistency term (docs/methods/deeplab.md#consistency): a mean teacher's confident argmax on
photos the stage does not learn from, taught to the student on a photometrically changed view of the same crop."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from conftest import REPO
from wsss.cli import main
from wsss.core.config import load_config
from wsss.core.errors import ConfigError, ConfigWarning
from wsss.data import VOCDataset, generate_synthetic
from wsss.data.transforms import TrainAugment
from wsss.engine.trainer import Trainer
from wsss.methods import build_method, placeholder_classes
from wsss.methods.deeplab import seg_cross_entropy
from wsss.methods.deeplab.views import BOX, STRONG, WEAK, DeepLabViews

TINY_CNN = "{channels: [8, 16, 16, 32], stem_width: 8}"
ON = ("loss.weights.consistency=1", "options.consistency_splits=[val]")


def tiny_cfg(*extra: str):
    return load_config(
        REPO / "configs/deeplab/synthetic_cpu.yaml", [f"model.backbone_kwargs={TINY_CNN}", "data.num_workers=0", *extra]
    )


def teacher_says(m, cls: int | None) -> None:
    """The teacher's classifier made constant: every pixel ``cls`` at a probability near 1, or (None) every class
    equally likely."""
    with torch.no_grad():
        for conv in m.teacher.classifier.branches:
            conv.weight.zero_()
            conv.bias.zero_()
        if cls is not None:
            m.teacher.classifier.branches[0].bias[cls] = 30.0


def batch_of(n: int = 2, size: int = 32, box: tuple[int, int, int, int] | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([box or (0, size, 0, size)] * n)
    image, weak, strong = (torch.randn(n, 3, size, size, generator=g) for _ in range(3))
    target = torch.randint(0, 7, (n, size, size), generator=g)
    return {"image": image, "target": target, WEAK: weak, STRONG: strong, BOX: boxes}


def test_the_term_is_zero_where_the_teacher_is_never_sure_and_its_argmax_elsewhere():
    m = build_method(tiny_cfg(*ON, "options.consistency_threshold=0.5"), placeholder_classes(7)).train()
    batch = batch_of(box=(0, 32, 0, 16))  # the right half of each crop is padding
    teacher_says(m, None)  # 1/7 everywhere: below the threshold
    terms = m.training_step(batch, 0, {"seg", "consistency"})
    assert set(terms) == {"seg", "consistency"}
    assert float(terms["consistency"].detach()) == 0.0  # zero, not NaN
    terms["consistency"].backward()  # and a graph to go through

    teacher_says(m, 3)  # sure of class 3 everywhere: the term is the student's cross entropy to 3 on the photo
    loss = m.training_step(batch, 0, {"seg", "consistency"})["consistency"]
    m.eval()  # the same graph without BatchNorm's batch statistics, for the reference
    with torch.no_grad():
        strong = m.net(torch.cat([batch["image"], batch[STRONG]]))[2:]
        target = torch.full(strong.shape[:1] + strong.shape[2:], 255)
        target[:, :, : strong.shape[-1] // 2] = 3  # the photo's half, at the logits' size
        ref = seg_cross_entropy(strong, target)
        again = m.training_step(batch, 0, {"seg", "consistency"})["consistency"]
    assert float(loss.detach()) > 0 and torch.allclose(again, ref)


def test_the_terms_gradient_reaches_the_student_only():
    m = build_method(tiny_cfg(*ON, "options.consistency_threshold=0.5"), placeholder_classes(7)).train()
    teacher_says(m, 3)
    m.training_step(batch_of(), 0, {"seg", "consistency"})["consistency"].backward()
    assert all(not p.requires_grad and p.grad is None for p in m.teacher.parameters())
    grads = [p.grad for p in m.net.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_the_teacher_is_the_students_moving_average_after_each_step():
    m = build_method(tiny_cfg(*ON, "options.ema_decay=0.9"), placeholder_classes(7))
    assert all(torch.equal(t, s) for t, s in zip(m.teacher.state_dict().values(), m.net.state_dict().values()))
    before = [p.clone() for p in m.teacher.parameters()]
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(1.0)
    m.after_step(4)  # the 5th step: the ramp's 1 - 1/6 is below 0.9
    m.after_step(49)  # the 50th: 0.9
    d1, d2 = 1 - 1 / 6, 0.9
    for t, t0, s in zip(m.teacher.parameters(), before, m.net.parameters(), strict=True):
        once = d1 * t0 + (1 - d1) * s
        assert torch.allclose(t, d2 * once + (1 - d2) * s, atol=1e-6)
    m.train()
    assert not m.teacher.training and m.net.training  # the teacher always predicts in eval mode


def test_ema_predict_scores_the_teacher():
    x = torch.randn(1, 3, 32, 32)
    m = build_method(tiny_cfg(*ON, "options.ema_predict=true"), placeholder_classes(7)).eval()
    teacher_says(m, 3)
    with torch.no_grad():
        assert torch.equal(m.seg_logits(x), m.teacher(x)) and not torch.equal(m.seg_logits(x), m.net(x))
        student = build_method(tiny_cfg(*ON), placeholder_classes(7)).eval()
        student.load_state_dict(m.state_dict())
        assert torch.equal(student.seg_logits(x), m.net(x))


def test_off_by_default_the_training_is_as_before():
    m = build_method(tiny_cfg(), placeholder_classes(7)).train()
    assert m.teacher is None and m.train_transform_views() is None
    assert {k.split(".")[0] for k in m.state_dict()} == {"net", "_backbone"}  # no teacher in the checkpoints
    batch = batch_of()
    terms = m.training_step(batch, 0, {"seg"})
    assert set(terms) == {"seg"}
    m.eval()
    with torch.no_grad():
        assert torch.allclose(
            m.training_step(batch, 0, {"seg"})["seg"], seg_cross_entropy(m.net(batch["image"]), batch["target"])
        )
    for p in ("deeplabv2_voc", "deeplabv3p_voc", "real_cpu", "route_gpu", "synthetic_cpu", "synthetic_mnv2"):
        assert "consistency" not in load_config(REPO / f"configs/deeplab/{p}.yaml").loss.weights, p


def test_the_settings_that_do_not_fit_together():
    with pytest.raises(ConfigError, match="options.consistency_splits"):
        build_method(tiny_cfg("loss.weights.consistency=1"), placeholder_classes(7))
    with pytest.raises(ConfigError, match="options.ema_predict"):
        build_method(tiny_cfg("options.ema_predict=true"), placeholder_classes(7))
    with pytest.raises(ConfigError, match="consistency_threshold"):
        build_method(tiny_cfg(*ON, "options.consistency_threshold=1.5"), placeholder_classes(7))
    m = build_method(tiny_cfg("options.consistency_splits=[val]"), placeholder_classes(7))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert m.train_transform_views() is None
    assert any(issubclass(w.category, ConfigWarning) and "loss.weights.consistency" in str(w.message) for w in caught)


def test_the_views_draw_every_photo_of_the_splits_reproducibly(synth_root):
    views = DeepLabViews(str(synth_root), ["val", "train", "val"], TrainAugment(32, scale_range=(0.5, 1.0)))
    ids = VOCDataset(synth_root, "val").ids + VOCDataset(synth_root, "train").ids
    assert [i for _, i in views.photos] == ids  # each photo once
    image = np.zeros((8, 8, 3), np.uint8)
    a, b = (views(image, image, rng=np.random.default_rng(7)) for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in (WEAK, STRONG, BOX))
    assert a[WEAK].shape == a[STRONG].shape == (3, 32, 32) and not torch.equal(a[WEAK], a[STRONG])
    h0, h1, w0, w1 = a[BOX].tolist()  # synth photos are 64 px: at scale <= 1 they fill the crop
    assert (h0, h1, w0, w1) == (0, 32, 0, 32)


def unlabelled_data(tmp_path):
    """A synthetic set whose val photos have no mask at all."""
    root = tmp_path / "data"
    generate_synthetic(root, n_train=8, n_val=4, size=32, seed=1, verbose=False)
    for i in VOCDataset(root, "val").ids:
        for p in root.glob(f"Segmentation*/{i}.png"):
            p.unlink()
    return root


def overrides(root, run, *extra: str) -> list[str]:
    return [
        f"data.root={root}",
        f"run.dir={run}",
        f"data.pseudo_dir={root}/SegmentationClass",
        "data.crop_size=32",
        "data.num_workers=0",
        f"model.backbone_kwargs={TINY_CNN}",
        "train.batch_size=4",
        "train.log_iters=1",
        "data.val_split=",
        *ON,
        "options.consistency_threshold=0.2",
        *extra,
    ]


def test_two_steps_on_the_cpu_never_read_the_unlabelled_masks(tmp_path, monkeypatch):
    root = unlabelled_data(tmp_path)
    val = set(VOCDataset(root, "val").ids)
    looked = []
    find = VOCDataset.mask_path
    monkeypatch.setattr(VOCDataset, "mask_path", lambda self, id: looked.append(id) or find(self, id))
    run = tmp_path / "run"
    cfg = str(REPO / "configs/deeplab/synthetic_cpu.yaml")
    assert main(["train", cfg, *overrides(root, run, "train.max_iters=2"), "--quiet"]) == 0
    assert not val & set(looked)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2] and all(np.isfinite(r["loss/consistency"]) for r in logged)


def test_a_resumed_run_keeps_its_teacher(tmp_path):
    root = unlabelled_data(tmp_path)
    cfg = REPO / "configs/deeplab/synthetic_cpu.yaml"
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    common = ("train.max_iters=3", "train.ckpt_iters=2", "train.eval_iters=100")
    Trainer(load_config(cfg, overrides(root, straight, *common)), progress=False).train()
    Trainer(load_config(cfg, overrides(root, killed, *common)), progress=False).train(until=2)
    Trainer(load_config(cfg, overrides(root, killed, *common)), progress=False).train()  # resumes at step 2
    a = torch.load(straight / "checkpoints/last.pt", weights_only=False)["model"]
    b = torch.load(killed / "checkpoints/last.pt", weights_only=False)["model"]
    teacher = [k for k in a if k.startswith("teacher.")]
    assert teacher and set(a) == set(b)
    assert any(not torch.equal(a[k], a["net." + k.removeprefix("teacher.")]) for k in teacher)  # an average, not a copy
    for k in a:
        assert torch.equal(a[k], b[k]), k
