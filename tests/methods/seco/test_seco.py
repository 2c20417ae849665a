"""SeCo's method module: one training step with every loss, the teachers, the reservoir, prototypes."""

import numpy as np
import pytest
import torch

from conftest import REPO
from wsss.core.config import load_config
from wsss.methods import build_method, placeholder_classes
from wsss.methods.seco.views import SeCoViews, random_resized_crop

ALL_TERMS = {"cls", "aux", "ptc", "lil", "lig", "seg", "reg"}


def tiny_seco(**options):
    over = [
        "model.backbone_kwargs={patch_size: 8, depth: 3, embed_dim: 32, num_heads: 2, img_size: 64}",
        "model.pretrained=null",
        "cam.scales=[1.0, 0.5]",
        "options.num_patches=3",
        "options.patch_size=16",
        "options.queue_size=60",  # 2 images x (2 + 3) keys = 10 per step
        "options.proj_hidden_dim=16",
        "options.update_prototype=0",
        "options.cam2mask=2",
        *[f"options.{k}={v}" for k, v in options.items()],
    ]
    cfg = load_config(REPO / "configs/seco/voc.yaml", over)
    torch.manual_seed(0)
    return build_method(cfg, placeholder_classes(5))


def batch(b=2, s=64):
    g = torch.Generator().manual_seed(1)
    return {
        "image": torch.randn(b, 3, s, s, generator=g),
        "w_image": torch.randn(b, 3, s, s, generator=g),
        "s_image": torch.randn(b, 3, s, s, generator=g),
        "labels": torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]]),
        "label_idx": torch.tensor([-1, 2]),
        "img_box": torch.tensor([[0, s, 0, s], [4, 60, 8, 64]]),
    }


@pytest.mark.parametrize("corrected", [False, True])
def test_training_step_every_loss_and_backward(corrected):
    quirks = dict.fromkeys(
        [
            "quirk_no_class_global_tag",
            "quirk_area_weighted_by_class_id",
            "quirk_lil_normaliser",
            "quirk_patch_seed",
            "quirk_ptc_box_pixel_scale",
            "quirk_queue_init_dim0",
        ],
        "false" if corrected else "true",
    )
    m = tiny_seco(**quirks)
    m.train()
    teacher_before = [p.clone() for p in m.encoder_k.parameters()]
    protos_before = m.prototypes.clone()
    terms = m.training_step(batch(), step=5, active=ALL_TERMS)
    assert set(terms) == ALL_TERMS
    for k, v in terms.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    loss = sum(terms.values())
    loss.backward()
    # gradients reach the backbone, the heads, the projection head and the decoder; not the teacher
    assert m.backbone.vit.blocks[0].attn.qkv.weight.grad is not None
    assert m.proj_head.mlp[0].weight.grad is not None
    assert m.decoder.branches[0].weight.grad is not None
    assert all(p.grad is None for p in m.encoder_k.parameters())
    # the reservoir advanced by one step of keys; prototypes moved for the single-class image only
    assert int(m.queue_ptr) == 10
    assert torch.allclose(m.prototypes.norm(dim=1), torch.ones(4))
    changed = (m.prototypes != F_normalize(protos_before)).any(dim=1)
    assert changed.tolist() == [False, True, False, False]
    # a second step after the student moved: the teacher takes exactly (1 - m) of the way
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(0.01)
    m.training_step(batch(), step=6, active={"cls"})
    mom = m.options.momentum
    for t, t0, s in zip(m.encoder_k.parameters(), teacher_before, m.backbone.parameters()):
        assert torch.allclose(t, mom * t0 + (1 - mom) * s, atol=1e-6)


def F_normalize(x):
    return torch.nn.functional.normalize(x, dim=1)


def test_inactive_terms_are_skipped_but_the_reservoir_still_fills():
    m = tiny_seco()
    terms = m.training_step(batch(), step=0, active={"cls", "aux", "ptc"})
    assert set(terms) == {"cls", "aux", "ptc"}
    assert int(m.queue_ptr) == 10  # keys are enqueued from the first iteration, as officially


def test_queue_is_a_ring_buffer_and_checks_divisibility():
    m = tiny_seco()
    keys = torch.nn.functional.normalize(torch.randn(10, 32), dim=1)
    for i in range(7):
        m._enqueue(keys + i, torch.full((10,), float(i)))
    # 7 steps of 10 into 60 slots: slots 0-9 hold step 6, slots 10-19 step 1, ...
    assert int(m.queue_ptr) == 10
    assert torch.equal(m.queue_flags[:10], torch.full((10,), 6.0))
    assert torch.equal(m.queue_flags[10:20], torch.full((10,), 1.0))
    with pytest.raises(ValueError, match="multiple of the keys per step"):
        m._enqueue(keys[:7], torch.zeros(7))


def test_prototype_update_is_sequential_ema_then_l2():
    m = tiny_seco(proto_momentum=0.5)
    p0 = m.prototypes.clone()
    t = torch.randn(3, 32)
    m._update_prototypes(t, torch.tensor([2, -1, 2]))
    expected = p0.clone()
    expected[1] = 0.5 * (0.5 * p0[1] + 0.5 * t[0]) + 0.5 * t[2]
    assert torch.allclose(m.prototypes, F_normalize(expected), atol=1e-6)


def test_views_are_seeded_and_shaped():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    crop = img[:32, :32]
    views = SeCoViews(global_size=32)
    a = views(img, crop, rng=np.random.default_rng(5))
    b = views(img, crop, rng=np.random.default_rng(5))
    assert a["w_image"].shape == (3, 32, 32) and a["s_image"].shape == (3, 32, 32)
    assert torch.equal(a["w_image"], b["w_image"]) and torch.equal(a["s_image"], b["s_image"])
    c = views(img, crop, rng=np.random.default_rng(6))
    assert not torch.equal(a["w_image"], c["w_image"])  # another sample's generator, another view
    assert random_resized_crop(img, 16, rng=np.random.default_rng(0)).shape == (16, 16, 3)


def test_seco_needs_a_vit():
    cfg = load_config(REPO / "configs/seco/voc.yaml", ["model.backbone=resnet18", "model.pretrained=null"])
    with pytest.raises(ValueError, match="needs a ViT"):
        build_method(cfg, placeholder_classes(5))


def test_voc_preset_architecture_runs_every_loss_on_cpu():
    """The VOC preset's real architecture (ViT-B/16, ASPP, 2048-wide projection head), at a reduced
    crop, for two iterations with every loss active: forward, backward, optimiser step."""
    over = [
        "model.pretrained=null",
        "data.crop_size=96",
        "cam.scales=[1.0, 0.5]",
        "options.num_patches=2",
        "options.patch_size=32",
        "options.queue_size=16",  # 2 images x (2 + 2) keys
        "options.update_prototype=0",
    ]
    cfg = load_config(REPO / "configs/seco/voc.yaml", over)
    torch.manual_seed(0)
    m = build_method(cfg, placeholder_classes(21))
    assert m.backbone.out_dim == 768 and len(m.backbone.vit.blocks) == 12
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5)
    b = batch(s=96)
    b["labels"] = torch.zeros(2, 20)
    b["labels"][0, [0, 14]] = 1
    b["labels"][1, 6] = 1
    b["label_idx"] = torch.tensor([-1, 7])
    for step in (2500, 2501):
        terms = m.training_step(b, step, ALL_TERMS)
        assert set(terms) == ALL_TERMS and all(torch.isfinite(v) for v in terms.values())
        opt.zero_grad()
        sum(cfg.loss.weights[k] * v for k, v in terms.items()).backward()
        opt.step()


def test_seco_trains_through_the_engine(synth_root, tmp_path):
    """The synthetic preset, shrunk: the views come through the data loader, every stage runs."""
    from conftest import tiny_overrides
    from wsss.engine.trainer import Trainer

    over = tiny_overrides(
        synth_root,
        tmp_path / "seco",
        **{
            "options.num_patches": 2,
            "options.patch_size": 16,
            "options.queue_size": 64,
            "options.proj_hidden_dim": 16,
            "options.update_prototype": 1,
            "options.cam2mask": 3,
            "loss.start_iters": "{lil: 1, lig: 1, seg: 2, reg: 2}",
        },
    )
    cfg = load_config(REPO / "configs/seco/synthetic_cpu.yaml", over)
    trainer = Trainer(cfg, progress=False)
    out = trainer.train()
    assert out["step"] == 6
    import json

    logs = [json.loads(x) for x in (tmp_path / "seco/metrics.jsonl").read_text().splitlines()]
    last = [r for r in logs if "loss/loss" in r][-1]
    assert {"loss/lil", "loss/lig", "loss/seg", "loss/reg", "loss/ptc"} <= set(last)
    assert int(trainer.method.queue_ptr) == (6 * 4 * 4) % 64


@pytest.mark.parametrize(("proj_lr_mult", "expected"), [(None, 10.0), (1.0, 1.0)])
def test_projection_head_group_lr(proj_lr_mult, expected):
    """The projection head has its own group: the classifiers' multiplier by default (official), or
    ``options.proj_lr_mult``; every trainable parameter sits in exactly one group."""
    from wsss.engine.trainer import build_optimizer

    m = tiny_seco(proj_lr_mult="null" if proj_lr_mult is None else proj_lr_mult)
    opt = build_optimizer(m, m.cfg)
    lr = {g["name"]: g["lr"] / m.cfg.train.lr for g in opt.param_groups}
    assert lr["proj_head"] == pytest.approx(expected) and lr["head"] == pytest.approx(m.cfg.train.head_lr_mult)
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)) == sum(p.requires_grad for p in m.parameters())
    assert {id(p) for p in m.proj_head.parameters()} <= {
        id(p) for g in opt.param_groups if g["name"] == "proj_head" for p in g["params"]
    }


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "configs/seco").glob("*.yaml")))
def test_presets_start_lig_after_the_first_prototype_update(preset):
    from wsss.core.config import from_dict
    from wsss.methods.seco import SeCoOptions, prototype_free_lig_steps

    cfg = load_config(REPO / "configs/seco" / preset, ["model.pretrained=null"])
    assert prototype_free_lig_steps(cfg.loss.weights, cfg.loss.start_iters, from_dict(SeCoOptions, cfg.options)) is None


@pytest.mark.parametrize(
    ("weights", "start_iters", "update_prototype", "expected"),
    [
        ({"lig": 0.1}, {"lig": 1000}, 600, None),
        ({"lig": 0.1}, {"lig": 599}, 600, None),  # LIG's first step, 600, follows the update of step 600
        ({"lig": 0.1}, {"lig": 598}, 600, (599, 600)),
        ({"lig": 0.1}, {}, 600, (0, 600)),  # no entry: active from step 0
        ({"lig": 0.0}, {}, 600, None),  # switched off
        ({"cls": 1.0}, {}, 600, None),
    ],
)
def test_prototype_free_lig_steps(weights, start_iters, update_prototype, expected):
    from wsss.methods.seco import SeCoOptions, prototype_free_lig_steps

    assert prototype_free_lig_steps(weights, start_iters, SeCoOptions(update_prototype=update_prototype)) == expected


def test_lig_before_the_prototypes_warns_at_train_start(tmp_path, capsys):
    """LIG against the random unnormalised initial prototypes can overflow: a ConfigWarning at train
    start (legal, so not an error), printed by the CLI as one ``warning:`` line."""
    import warnings

    from wsss.cli import _show_warning_line
    from wsss.core.errors import ConfigWarning

    m = tiny_seco(update_prototype=5)
    m.cfg.loss.start_iters = {"lig": 0}
    with pytest.warns(ConfigWarning, match=r"from step 1, before options.update_prototype \(5\)"):
        m.on_train_start(None)
    m.cfg.loss.start_iters = {"lig": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        m.on_train_start(None)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning_line
        warnings.simplefilter("always")
        warnings.warn(ConfigWarning("a legal but unlikely setting"), stacklevel=1)
    assert capsys.readouterr().err == "warning: a legal but unlikely setting\n"
