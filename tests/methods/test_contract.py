"""One contract test over every registered method (as timm's tests/test_models.py over every model name).

Each method, from its CPU preset shrunk to seconds: it builds; every loss term it returns has a weight in
``loss.weights``; every parameter group has options; its CAMs (and segmentation logits) have the right
shapes; two steps train, and a run stopped after one step resumes to the second.
"""

from __future__ import annotations

import pytest
import torch

from conftest import REPO
from wsss.core.config import load_config
from wsss.core.registry import METHODS
from wsss.engine.defaults import build_trainer
from wsss.engine.trainer import build_optimizer

TINY_VIT = "{patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}"
TINY_CNN = "{channels: [8, 16, 16, 32], stem_width: 8}"

# method -> (its CPU preset, the overrides that make it tiny); a registered method missing here fails
PRESETS: dict[str, tuple[str, dict[str, object]]] = {
    "cam": ("configs/cam/synthetic_cpu.yaml", {"model.backbone_kwargs": TINY_VIT}),
    "seco": (
        "configs/seco/synthetic_cpu.yaml",
        {
            "model.backbone_kwargs": TINY_VIT,
            "options.num_patches": 2,
            "options.patch_size": 16,
            "options.queue_size": 32,
            "options.proj_hidden_dim": 16,
            "options.cam2mask": 1,
        },
    ),  # fmt: skip
    "rca": (
        "configs/rca/synthetic_cpu.yaml",
        {
            "model.backbone": "vgg16_dilated",
            "model.backbone_kwargs": "{width: 0.0625}",
            "options.head_dim": 8,
            "options.queue_len": 8,
            "options.num_centroids": 2,
            "options.kmeans_n_init": 1,
            "options.lr_decay_epochs": "[1]",
        },
    ),  # fmt: skip
    "sccam": (
        "configs/sccam/synthetic_cpu.yaml",
        {"model.backbone_kwargs": TINY_VIT, "options.rounds": 0, "options.snapshot_epochs": "[]"},
    ),
    "deeplab": ("configs/seg/synthetic_cpu.yaml", {"model.backbone_kwargs": TINY_CNN, "pseudo": True}),
    "affinitynet": (
        "configs/affinity/synthetic_cpu.yaml",
        {
            "model.backbone_kwargs": TINY_CNN,
            "options.aux_dim": 8,
            "options.final_dim": 8,
            "options.out_dim": 16,
            "pseudo": True,
        },
    ),  # fmt: skip
}

# methods that train nothing (a run is imported from weights): their route is tested on its own
# (clip_es: tests/methods/test_clip_es.py, tests/e2e/test_clip_es_route.py)
NO_TRAINING = {"clip_es"}


def tiny_config(name: str, root, run_dir):
    preset, extra = PRESETS[name]
    extra = dict(extra)
    over = {
        "data.root": root, "run.dir": run_dir, "data.crop_size": 64, "data.num_workers": 0,
        "data.val_split": "''", "data.val_max_images": 2, "train.batch_size": 4, "train.max_iters": 2,
        "train.warmup_iters": 0, "train.log_iters": 1, "train.eval_iters": 100, "train.ckpt_iters": 1,
        "cam.scales": "[1.0]", "infer.scales": "[1.0]", "infer.cam_scales": "[1.0]",
    }  # fmt: skip
    if extra.pop("pseudo", False):  # a stage trained on pseudo labels: the ground truth stands in
        over["data.pseudo_dir"] = root / "SegmentationClass"
    over.update(extra)
    return load_config(REPO / preset, [f"{k}={v}" for k, v in over.items()])


def test_every_registered_method_has_a_contract_entry():
    import wsss.methods  # noqa: F401  (registers the built-ins; experiments/ may have registered more)

    builtin = {name for name, cls in METHODS.items() if cls.__module__.startswith("wsss.")}
    assert builtin == set(PRESETS) | NO_TRAINING


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_method_contract(name, synth_root, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(name, synth_root, tmp_path / "run")
    trainer = build_trainer(cfg, progress=False)
    method = trainer.method
    assert type(method) is METHODS[name] and method.num_classes == trainer.train_set.num_classes
    C = method.num_classes

    # every parameter group has options (lr multiplier...), and the optimiser builds from them
    groups, options = method.param_groups(), method.param_group_options()
    assert groups and set(groups) <= set(options), f"groups without options: {set(groups) - set(options)}"
    assert all("lr_mult" in options[g] for g in groups)
    assert build_optimizer(method, cfg).param_groups

    # loss terms: all weighted in loss.weights, finite scalars (every term active: a late step)
    method.train()
    method.on_train_start(trainer.context())
    batch = next(trainer.stream)[0]
    terms = method.training_step(batch, 10**6, set(cfg.loss.weights))
    assert terms and set(terms) <= set(cfg.loss.weights), f"unweighted terms: {set(terms) - set(cfg.loss.weights)}"
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())

    # inference shapes: CAMs (B, C-1, h, w) with the aux map alike; seg logits (B, C, h, w)
    method.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        if getattr(method, "has_cams", True):
            cam, aux = method.cam_maps(images)
            assert cam.ndim == 4 and tuple(cam.shape[:2]) == (2, C - 1)
            assert aux is None or tuple(aux.shape[:2]) == (2, C - 1)
        if method.has_seg_head:
            logits = method.seg_logits(images)
            assert logits.ndim == 4 and tuple(logits.shape[:2]) == (2, C)
    assert getattr(method, "has_cams", True) or method.has_seg_head or hasattr(method, "random_walk_label")

    # two steps, stopped after one and resumed
    first = build_trainer(cfg, progress=False).train(until=1)
    assert first["step"] == 1 and not first["resumed"]
    second = build_trainer(cfg, progress=False).train()
    assert second["step"] == 2 and second["resumed"]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
