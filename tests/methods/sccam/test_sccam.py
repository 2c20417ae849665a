"""SC-CAM (docs/methods/sccam.md#specification): sub-category labels, the joint loss, the round plan and its quirks, the
round driver (re-initialisation, resume between and within rounds) and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from wsss.cam import CamPasses
from wsss.core.config import load_config
from wsss.engine.defaults import engine_api
from wsss.methods import build_method, placeholder_classes
from wsss.methods.sccam import SCCAM, plan_round, train_rounds
from wsss.methods.sccam.subcategory import SubcategoryLabels, build_subcategory_labels, kmeans_labels

CONFIG = REPO / "configs" / "sccam" / "synthetic_cpu.yaml"


def tiny_cfg(root: Path, run_dir: Path, *extra: str):
    """Two sub-category rounds of 3 iterations on 24 images of 64 px with a 2-block ViT."""
    over = {
        "data.root": str(root),
        "run.dir": str(run_dir),
        "data.crop_size": 64,
        "data.num_workers": 0,
        "data.val_max_images": 4,
        "model.backbone_kwargs": "{patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}",
        "train.batch_size": 8,
        "train.log_iters": 1,
        "train.eval_iters": 100,
        "train.ckpt_iters": 2,
        "cam.scales": "[1.0]",
        "infer.cam_scales": "[1.0]",
        "options.num_subcategories": 3,
        "options.rounds": 2,
        "options.schedule_epochs": 1,  # 24 // 8 = 3 iterations a round
        "options.snapshot_epochs": "[1, 1]",
        "options.round0_epochs": 1,
        "options.kmeans_n_init": 2,
        "options.round_eval_images": 4,
    }
    return load_config(CONFIG, [f"{k}={v}" for k, v in over.items()] + list(extra))


# -- sub-category labels (sccam.md#subcategory-labels) ---------------------------------------------


def test_subcategory_labels_from_clear_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16)) * 50  # well-separated groups
    group = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5])
    feats = centres[group] + rng.normal(size=(len(group), 16))
    parents = np.zeros((len(group), 3), np.float32)
    parents[group <= 2, 0] = 1  # class 0: groups 0, 1, 2
    parents[(group >= 2) & (group <= 4), 1] = 1  # class 1: groups 2, 3, 4 (group 2 is labelled 0 and 1)
    parents[group == 5, 2] = 1  # class 2: group 5 only, 2 images < K
    ids = [f"im{i}" for i in range(len(group))]
    res = build_subcategory_labels(ids, feats, parents, k=3, seed=0, n_init=3)
    for c, groups in ((0, (0, 1, 2)), (1, (2, 3, 4))):
        cluster_of = {g: set(res.assign[(group == g) & (parents[:, c] > 0), c]) for g in groups}
        assert all(len(s) == 1 for s in cluster_of.values())  # a group is one sub-category
        assert len(set.union(*cluster_of.values())) == 3  # distinct groups, distinct sub-categories
    assert sorted(res.assign[group == 5, 2]) == [0, 1]  # fewer images than K: one cluster each
    assert (res.assign[parents == 0] == -1).all()
    labels = res.labels  # layout: column c*K + j
    assert labels.shape == (len(group), 9)
    np.testing.assert_array_equal(labels.sum(1), parents.sum(1))  # one sub-category per parent
    for n, c in zip(*np.nonzero(parents)):
        assert labels[n, c * 3 + res.assign[n, c]] == 1
        assert labels[n, c * 3 : c * 3 + 3].sum() == 1
    multi = np.flatnonzero(group == 2)[0]  # labelled 0 and 1: one 1 in each block, the same feature
    assert labels[multi, 0:3].sum() == 1 and labels[multi, 3:6].sum() == 1 and labels[multi, 6:].sum() == 0
    # deterministic with the seed
    np.testing.assert_array_equal(build_subcategory_labels(ids, feats, parents, 3, 0, n_init=3).assign, res.assign)


def test_subcategory_labels_roundtrip(tmp_path):
    res = SubcategoryLabels(["a", "b"], np.eye(2, dtype=np.float32), np.array([[1, -1], [-1, 0]]), k=2)
    res.save(tmp_path / "l.npz")
    back = SubcategoryLabels.load(tmp_path / "l.npz")
    assert back.ids == ["a", "b"] and back.k == 2
    np.testing.assert_array_equal(back.labels, [[0, 1, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(back.as_lookup()["b"], [0, 0, 1, 0])
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(Exception, match="bad.npz"):
        SubcategoryLabels.load(tmp_path / "bad.npz")
    assert kmeans_labels(np.zeros((2, 4)), 5, 0).tolist() == [0, 1]


# -- the model and the loss (sccam.md#heads, #training) --------------------------------------------


def test_joint_loss_matches_a_direct_computation(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, tmp_path / "run", "options.round=1")
    torch.manual_seed(0)
    m: SCCAM = build_method(
        cfg, placeholder_classes(8)
    ).eval()  # eval: the dropout is the identity, the maths is the same
    assert m.sub_classifier is not None and m.sub_classifier.conv.weight.shape[0] == 7 * 3
    images = torch.randn(3, 3, 32, 32)
    labels = torch.tensor([[1, 0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]], dtype=torch.float32)
    sub = torch.zeros(3, 21)
    sub[0, 0 * 3 + 2] = sub[0, 3 * 3 + 0] = sub[1, 1 * 3 + 1] = sub[2, 6 * 3 + 2] = 1
    m._sub_lookup = {f"i{n}": sub[n].numpy() for n in range(3)}
    terms = m.training_step({"image": images, "labels": labels, "id": ["i0", "i1", "i2"]}, 0, {"cls", "sub"})

    with torch.no_grad():
        f = m.backbone(images).final
        gap = f.mean(dim=(2, 3)).double()  # GAP then the bias-free 1x1 heads
        x_parent = gap @ m.classifier.conv.weight.flatten(1).double().T
        x_sub = gap @ m.sub_classifier.conv.weight.flatten(1).double().T

    def mlsm(x, y):
        total = 0.0
        for n in range(x.shape[0]):
            per = 0.0
            for c in range(x.shape[1]):
                p = 1 / (1 + math.exp(-float(x[n, c])))
                per -= float(y[n, c]) * math.log(p) + (1 - float(y[n, c])) * math.log(1 - p)
            total += per / x.shape[1]
        return total / x.shape[0]

    assert float(terms["cls"].detach()) == pytest.approx(mlsm(x_parent, labels), rel=1e-4)
    assert float(terms["sub"].detach()) == pytest.approx(mlsm(x_sub, sub), rel=1e-4)
    assert cfg.loss.weights == {"cls": 1.0, "sub": 5.0}  # L = cls + 5 sub (sccam.md#training)
    # CAMs: relu(conv(f, fc8_20.weight)) (head_cams, forward_cam); cam_maps leaves the ReLU to the shared step,
    # which applies it to each pass (so an empty map can be filled from below it); the aux map = max over each
    # parent's sub-category CAMs
    cam, merged = m.cam_maps(images)
    ref = torch.einsum("bdhw,kd->bkhw", f, m.classifier.conv.weight.flatten(1))
    assert ref.amin() < 0  # the test can tell the maps before the ReLU from those after it
    torch.testing.assert_close(cam, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.head_cams(f)[0], torch.relu(ref), rtol=1e-4, atol=1e-5)
    ref_sub = torch.einsum("bdhw,kd->bkhw", f, m.sub_classifier.conv.weight.flatten(1))
    torch.testing.assert_close(merged[:, 3], ref_sub[:, 9:12].amax(1), rtol=1e-4, atol=1e-5)
    # through the shared step with SC-CAM's VOC fusion (flips summed, max-normalised): the official path
    official = CamPasses([1.0], flip_fuse="sum", normalize="max")(lambda t: m.head_cams(m.backbone(t).final)[0], images)
    ours = CamPasses([1.0], flip_fuse="sum", normalize="max", relu=m.cams.relu)(lambda t: m.cam_maps(t)[0], images)
    # the same float32 forward and the same ReLU per pass: equal unless a convolution picks another kernel
    # between the calls; 1e-5 of maps in [0, 1] is 100x float32's spacing there
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-5)
    # round 0 is the plain classifier
    m0 = build_method(tiny_cfg(synth_root, tmp_path / "run", "options.round=0"), placeholder_classes(8))
    assert m0.sub_classifier is None and set(
        m0.training_step({"image": images, "labels": labels, "id": ["i0", "i1", "i2"]}, 0, {"cls", "sub"})
    ) == {"cls"}
    groups = m.param_groups()
    assert {n: len(p) for n, p in groups.items() if p}.keys() == {"backbone", "backbone_bias", "head"}
    opts = m.param_group_options()
    assert opts["backbone_bias"] == {"lr_mult": 2.0, "weight_decay": 0.0} and opts["head"]["lr_mult"] == 10.0


def test_round_plan_and_quirks(synth_root, tmp_path):
    voc = load_config(REPO / "configs" / "sccam" / "voc.yaml", [f"run.dir={tmp_path}"])
    n = 10582
    per_epoch = n // 16
    p1 = plan_round(voc, 1, n)
    assert p1.cfg.train.max_iters == 61 * per_epoch and p1.stop == 31 * per_epoch  # ep30 of 61 (sccam.md#rounds)
    assert plan_round(voc, 3, n).stop == 51 * per_epoch
    assert p1.cfg.train.momentum == pytest.approx(5e-4)  # PSA's PolyOptimizer quirk (sccam.md#training)
    assert p1.cfg.options["round"] == 1 and p1.cfg.run.dir == str(tmp_path / "round_1")
    p0 = plan_round(voc, 0, n)
    assert p0.cfg.train.lr == 0.1 and p0.cfg.data.crop_size == 448 and p0.stop == p0.cfg.train.max_iters
    assert p1.cfg.train.lr == 0.01 and p1.cfg.data.crop_size == 224
    fixed = load_config(
        REPO / "configs" / "sccam" / "voc.yaml",
        [f"run.dir={tmp_path}", "options.quirk_mid_schedule_snapshot=false", "options.quirk_psa_momentum=false"],
    )
    q = plan_round(fixed, 2, n)
    assert q.cfg.train.max_iters == q.stop == 41 * per_epoch and q.cfg.train.momentum == 0.9
    with pytest.raises(Exception, match="round0_overrides"):
        plan_round(load_config(CONFIG, ["options.round0_overrides={nope.lr: 1}"]), 0, n)


def test_resnet38_backbone_and_a_psa_round0_checkpoint(synth_root, tmp_path):
    from wsss.methods.sccam import load_round_model
    from wsss.models.resnet38 import ResNet38d

    net = ResNet38d(width=1 / 16)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    fc8 = torch.randn(6, net.num_features, 1, 1)  # the fixture has 6 foreground classes
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"module." + k: v for k, v in state.items()} | {"module.fc8.weight": fc8}, tmp_path / "res38_cls.pth")
    cfg = tiny_cfg(
        synth_root,
        tmp_path / "run",
        "model.backbone=resnet38d",
        "model.output_stride=8",
        "model.backbone_kwargs={width: 0.0625}",
        f"options.round0_checkpoint={tmp_path / 'res38_cls.pth'}",
    )
    m = load_round_model(cfg, engine_api(), 0, device="cpu")
    assert m.round == 0 and not m.training
    torch.testing.assert_close(m.classifier.conv.weight, fc8)
    torch.testing.assert_close(m.backbone.net.b7.conv_branch1.weight, net.b7.conv_branch1.weight)
    # the frozen BN / stem parameters are in no optimiser group (sccam.md#resnet38, #training)
    cfg1 = tiny_cfg(
        synth_root,
        tmp_path / "r",
        "model.backbone=resnet38d",
        "model.output_stride=8",
        "model.backbone_kwargs={width: 0.0625}",
        "options.round=1",
    )
    m1 = build_method(cfg1, placeholder_classes(8))
    grouped = {id(p) for ps in m1.param_groups().values() for p in ps}
    for n, p in m1.backbone.named_parameters():
        assert (id(p) in grouped) == (
            not n.startswith(("net.conv1a", "net.b2.", "net.b2_1.", "net.b2_2.")) and "bn" not in n
        ), n
    assert m1.image_features(torch.randn(1, 3, 40, 48)).shape == (1, net.num_features)
    # this toolkit's round-0 checkpoint (with the RNG states a checkpoint holds) loads the same way
    import numpy as np

    from wsss.core.checkpoint import save_checkpoint

    save_checkpoint({"step": 1, "model": m.state_dict(), "rng": {"numpy": np.random.get_state()}}, tmp_path / "own.pt")
    cfg.options["round0_checkpoint"] = str(tmp_path / "own.pt")
    again = load_round_model(cfg, engine_api(), 0, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), m.state_dict().values()))
    torch.save({"fc8.weight": torch.zeros(3, 5, 1, 1), **state}, tmp_path / "wrong.pth")
    cfg.options["round0_checkpoint"] = str(tmp_path / "wrong.pth")
    with pytest.raises(Exception, match=r"wrong\.pth.*fc8"):
        load_round_model(cfg, engine_api(), 0, device="cpu")


# -- the round driver (sccam.md#rounds) ------------------------------------------------------------


class Stop(Exception):
    pass


def test_rounds_reinitialise_and_resume_between_rounds(synth_root, tmp_path, monkeypatch):
    from wsss.models.backbones import create_backbone

    init = create_backbone("vit_tiny_patch16_224", patch_size=8, depth=2, embed_dim=32, num_heads=2, img_size=64)
    torch.save(init.vit.state_dict(), tmp_path / "init.pth")
    cfg = tiny_cfg(
        synth_root,
        tmp_path / "run",
        f"model.pretrained={tmp_path / 'init.pth'}",
        "options.rounds=1",
        "options.snapshot_epochs=[1]",
    )
    starts: list[tuple[int, dict]] = []
    original_start = SCCAM.on_train_start

    def record(self, trainer):
        starts.append((self.round, {k: v.clone() for k, v in self.backbone.state_dict().items()}))
        original_start(self, trainer)

    monkeypatch.setattr(SCCAM, "on_train_start", record)
    import wsss.methods.sccam as sccam_mod

    def killed(*a, **k):
        raise Stop  # "killed" after round 0, before round 1's labels exist

    monkeypatch.setattr(sccam_mod, "build_subcategory_labels", killed)
    with pytest.raises(Stop):
        train_rounds(cfg, engine_api(), progress=False)
    run = tmp_path / "run"
    assert json.loads((run / "rounds.json").read_text()).keys() == {"0"}
    r0_ckpt = run / "round_0" / "checkpoints" / "last.pt"
    mtime = r0_ckpt.stat().st_mtime_ns
    monkeypatch.undo()
    monkeypatch.setattr(SCCAM, "on_train_start", record)
    out = train_rounds(cfg, engine_api(), progress=False)
    assert r0_ckpt.stat().st_mtime_ns == mtime  # round 0 was not retrained
    assert [r for r, _ in starts] == [0, 1]
    rounds = json.loads((run / "rounds.json").read_text())
    assert rounds.keys() == {"0", "1"} and out["step"] == 3
    assert "cam_train" in rounds["1"] and "val" in rounds["1"]
    # every round starts from the pretrained weights, not from the previous round's
    r0_final = torch.load(r0_ckpt, weights_only=False)["model"]
    for k, v in init.state_dict().items():
        torch.testing.assert_close(starts[0][1][k], v)
        torch.testing.assert_close(starts[1][1][k], v)
    assert any(not torch.equal(starts[1][1][k], r0_final[f"backbone.{k}"]) for k in init.state_dict())
    labels = SubcategoryLabels.load(run / "round_1" / "subcategory_labels.npz")
    assert labels.k == 3 and len(labels.ids) == 24
    # the top-level run holds the last round's final checkpoint
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "config.yaml").is_file()
    # a finished run is not retrained
    starts.clear()
    train_rounds(cfg, engine_api(), progress=False)
    assert starts == []


def test_resume_within_a_round(synth_root, tmp_path, monkeypatch):
    cfg = tiny_cfg(
        synth_root,
        tmp_path / "run",
        "options.rounds=1",
        "options.snapshot_epochs=[1]",
        "data.val_split=",
        "options.round_eval_split=null",
    )
    calls: list[tuple[int, int]] = []
    kill = [True]

    def killer(self, step):
        calls.append((self.round, step))
        if kill[0] and self.round == 1 and step == 2:  # in step 3 of round 1; last.pt holds step 2
            raise Stop

    monkeypatch.setattr(SCCAM, "after_step", killer)
    with pytest.raises(Stop):
        train_rounds(cfg, engine_api(), progress=False)
    labels = tmp_path / "run" / "round_1" / "subcategory_labels.npz"
    mtime = labels.stat().st_mtime_ns
    calls.clear()
    kill[0] = False
    train_rounds(cfg, engine_api(), progress=False)
    assert calls == [(1, 2)]  # only the missing step of round 1 ran
    assert labels.stat().st_mtime_ns == mtime  # the labels were reused
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)["step"] == 3


def test_end_to_end_train_cam_eval(synth_root, tmp_path):
    from wsss.cli import main

    run = tmp_path / "run"
    over = [
        f"data.root={synth_root}",
        f"run.dir={run}",
        "data.crop_size=64",
        "data.num_workers=0",
        "data.val_max_images=4",
        "model.backbone_kwargs={patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}",
        "train.batch_size=8",
        "train.log_iters=1",
        "train.eval_iters=100",
        "train.ckpt_iters=100",
        "cam.scales=[1.0]",
        "infer.cam_scales=[1.0]",
        "options.round_eval_split=null",
        "options.num_subcategories=2",
        "options.rounds=2",
        "options.schedule_epochs=2",
        "options.snapshot_epochs=[1, 2]",
        "options.quirk_mid_schedule_snapshot=true",
        "options.round0_epochs=1",
        "options.kmeans_n_init=1",
        "options.round_eval_images=4",
    ]
    assert main(["train", str(CONFIG), *over, "data.val_split=", "--quiet", "--skip-check"]) == 0
    rounds = json.loads((run / "rounds.json").read_text())
    assert [rounds[str(r)]["step"] for r in range(3)] == [3, 3, 6]  # round 1 cut at its snapshot
    assert rounds["1"]["schedule_iters"] == 6
    assert main(["cam", str(run), "--split", "train", "--quiet"]) == 0
    assert len(list((run / "cam_labels" / "train").glob("*.png"))) == 24
    assert (
        main(
            [
                "eval",
                str(run / "cam_labels" / "train"),
                "--data-root",
                str(synth_root),
                "--split",
                "train",
                "--json",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    assert 0 <= json.loads((tmp_path / "m.json").read_text())["miou"] <= 100
    from wsss.runs.run import load_run

    loaded = load_run(run)
    assert loaded.method.round == 2 and loaded.method.sub_classifier is not None


def test_feature_extraction_caps_the_photo_side_as_every_inference_does():
    """SC-CAM's k-means features (docs/methods/sccam.md#subcategory-labels) read each photo at
    ``infer.max_side`` at most."""
    from wsss.methods.sccam.subcategory import extract_features

    class OnePhoto:
        ids = ["big"]

        def load_image(self, id):
            return np.zeros((300, 200, 3), dtype=np.uint8)

        def labels(self, id):
            return np.ones(2, dtype=np.float32)

    seen = []

    def feature_fn(x):
        seen.append(tuple(x.shape[-2:]))
        return x.mean(dim=(2, 3))

    extract_features(feature_fn, OnePhoto(), torch.device("cpu"), progress=False, max_side=64)
    extract_features(feature_fn, OnePhoto(), torch.device("cpu"), progress=False)
    assert seen == [(64, 43), (300, 200)]
