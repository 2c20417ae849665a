"""A classifier's CAMs taught the user's own masks (``data.true_masks`` on a classifier's training: the contract's
``Method.mask_term``, the trainer's targets; docs/own-photos.md#how-many-masks)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import REPO
from wsss.cli import main
from wsss.core.config import load_config
from wsss.data import VOCDataset
from wsss.losses import cam_mask_loss
from wsss.methods import MASK_TERM, build_method, placeholder_classes
from wsss.methods.contract import batchnorm_statistics_frozen
from wsss.utils.io import save_label_png

CNN = [
    "model.backbone=resnet18",
    "model.backbone_kwargs={channels: [8, 16, 16, 32], stem_width: 8}",
    "model.pretrained=null",
    "model.decoder=none",
    "model.aux_classifier=false",
]


def _classifier():
    cfg = load_config(REPO / "configs/cam/synthetic_cpu.yaml", CNN)
    torch.manual_seed(0)
    return build_method(cfg, placeholder_classes(4)).train()


def test_mask_term_forwards_the_masked_photos_alone_and_leaves_batchnorm_statistics():
    method = _classifier()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, 32, 32, generator=g)
    target = torch.randint(0, 4, (3, 32, 32), generator=g)
    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    batch = {"image": images, "target": target, "labels": labels, "target_weight": torch.tensor([0.0, 1.0, 2.0])}
    seen = []
    cam_maps = method.cam_maps
    method.cam_maps = lambda x: seen.append(x.shape[0]) or cam_maps(x)
    stats = {k: v.clone() for k, v in method.state_dict().items() if "running" in k}
    assert stats
    term = method.mask_term(batch)
    assert seen == [2]  # the photo of weight 0 is not forwarded
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in stats.items())  # running statistics untouched
    assert all(m.training for m in method.modules())  # every module back in training mode
    with torch.no_grad(), batchnorm_statistics_frozen(method):
        ref = cam_mask_loss(cam_maps(images[1:])[0], target[1:], labels[1:], torch.tensor([1.0, 2.0]))
    # the same network on the same rows: one forward against another (a BLAS result), so not bit equal; the loss
    # is of order 1 and float32 sums over a few thousand terms agree to ~1e-6
    assert term.item() == pytest.approx(ref.item(), abs=1e-5)
    term.backward()
    assert method.backbone.net.conv1.weight.grad.abs().sum() > 0  # the backbone learns from the pixels
    # no masked photo in the batch: no forward, a 0 term
    seen.clear()
    assert method.mask_term({**batch, "target_weight": torch.zeros(3)}).item() == 0.0 and seen == []
    # the term is the forward's only with the weight switched on and the batch carrying masks
    assert MASK_TERM in method(batch, 0, {"cls", MASK_TERM})
    assert MASK_TERM not in method(batch, 0, {"cls"})
    assert MASK_TERM not in method({k: v for k, v in batch.items() if k != "target_weight"}, 0, {"cls", MASK_TERM})


def test_train_a_classifier_on_image_labels_and_a_few_masks(synth_root, tmp_path, capsys):
    base = VOCDataset(synth_root, "train")
    masks = tmp_path / "masks"
    for i in base.ids[:3]:
        save_label_png(masks / f"{i}.png", base.load_mask(i))
    run = tmp_path / "run"
    over = [
        f"data.root={synth_root}",
        f"run.dir={run}",
        "data.crop_size=48",
        "data.num_workers=0",
        "data.val_split=",
        "train.batch_size=4",
        "train.max_iters=3",
        "train.log_iters=1",
        "train.ckpt_iters=3",
        *CNN,
    ]
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                str(REPO / "configs/cam/synthetic_cpu.yaml"),
                *over,
                f"data.true_masks={masks}",
                "data.true_mask_weight=2",
                "--quiet",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert f"the CAMs learn the pixels of 3 of the {len(base.ids)} photos of split train" in err
    assert "loss term 'mask', weight 1; per photo 2" in err
    assert load_config(run / "config.yaml").loss.weights[MASK_TERM] == 1.0  # the default weight, written down
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r[f"loss/{MASK_TERM}"] for r in rows if f"loss/{MASK_TERM}" in r]
    assert len(logged) == 3 and all(v >= 0 for v in logged) and max(logged) > 0
    # the same command again resumes the finished run: its saved weight of the term is no change of settings
    assert (
        main(
            [
                "train",
                str(REPO / "configs/cam/synthetic_cpu.yaml"),
                *over,
                f"data.true_masks={masks}",
                "data.true_mask_weight=2",
                "--quiet",
            ]
        )
        == 0
    )
    assert "other settings" not in capsys.readouterr().err


def test_true_masks_are_resolved_once_in_the_engine(synth_root, tmp_path):
    """``data.true_masks`` is resolved by the engine (``training_targets``) and nowhere else: the CLI
    prints the engine's line, and a method's pseudo-label stage reads the masks the engine hands it
    (``TrainContext.true_masks``) instead of resolving the config's folder again."""
    import ast
    from types import SimpleNamespace

    from wsss.engine.trainer import training_targets
    from wsss.methods import method_class
    from wsss.methods.base import attach_pseudo_labels

    base = VOCDataset(synth_root, "train")
    masks = tmp_path / "masks"
    for i in base.ids[:2]:
        save_label_png(masks / f"{i}.png", base.load_mask(i))
    cfg = load_config(
        REPO / "configs/deeplab/synthetic_cpu.yaml", [f"data.root={synth_root}", f"data.true_masks={masks}"]
    )
    targets = training_targets(cfg, method_class(cfg))
    assert targets.masks == {i: masks / f"{i}.png" for i in base.ids[:2]} and targets.n_photos == len(base.ids)
    assert targets.text.startswith(f"targets: 2 of the {len(base.ids)} photos of split train train on their own")
    assert training_targets(load_config(REPO / "configs/deeplab/synthetic_cpu.yaml"), method_class(cfg)).text == ""
    # the method's stage takes the engine's masks: the config's folder gone, nothing is resolved again
    got = {}
    data = SimpleNamespace(set_target_dir=lambda d, **kw: got.update(kw))
    gone = load_config(
        REPO / "configs/deeplab/synthetic_cpu.yaml", [f"data.root={synth_root}", f"data.true_masks={tmp_path / 'gone'}"]
    )
    attach_pseudo_labels(SimpleNamespace(train_data=data, true_masks=targets.masks), gone, "deeplab")
    assert got["true_masks"] == targets.masks
    # the one call of the data layer's resolution outside the data package is the engine's
    callers = []
    for path in sorted((REPO / "src/wsss").rglob("*.py")):
        if path.parent.name == "data":
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Name) and n.id == "true_mask_paths" for n in ast.walk(tree)):
            callers.append(path.relative_to(REPO / "src/wsss").as_posix())
    assert callers == ["engine/trainer.py"]
