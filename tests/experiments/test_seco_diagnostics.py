"""The SeCo diagnostics of BENCHMARKS.md: experiments/seco_oracle.py, seco_prototypes.py, cls_token_pretrain.py."""

import torch

from conftest import REPO
from experiments import cls_token_pretrain, seco_oracle, seco_prototypes
from wsss.core.checkpoint import save_checkpoint
from wsss.core.config import load_config, save_config
from wsss.methods import build_method, placeholder_classes
from wsss.methods.seco.decompose import assign_tags


def test_oracle_roi_marks_a_band_at_label_boundaries():
    target = torch.zeros(1, 12, 12, dtype=torch.long)
    target[0, 3:9, 3:9] = 2  # a 6x6 object
    target[0, :, 11] = 255  # padding column
    roi = seco_oracle.oracle_roi(target, band=1)
    assert roi[0, 5, 5] == 2 and roi[0, 0, 0] == 0  # interior and far background keep their ids
    assert (roi[0, :, 11] == 255).all()  # padding stays ignored
    band = roi[0] == -1
    assert band[2, 5] and band[3, 5] and band[8, 5] and band[9, 5]  # both sides of the edge
    assert not band[4, 5] and not band[1, 5]
    assert not band[:, 10].any()  # the padding is not a boundary


def test_oracle_tags_follow_the_ground_truth():
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[0, :, 8:] = 3
    roi = seco_oracle.oracle_roi(target, band=1)  # columns 7 and 8 uncertain
    top_left = torch.tensor([[[0, 0], [0, 8], [0, 4]]])  # background, object, straddling the edge
    flags = assign_tags(roi, top_left, 8, no_class_global_tag=-1.0, area_weighted_by_class_id=False)
    # the first patch is 1/8 uncertain (<= 0.2: background); a single-class image fills the rest
    assert flags[0].tolist() == [3.0, 3.0, 0.0, 3.0, 3.0]


def test_prototype_cosines_of_a_saved_run(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    protos = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]])  # pairs at 45, 90 and 135 degrees
    save_checkpoint({"model": {"prototypes": protos}}, tmp_path / "checkpoints" / "last.pt")
    c = seco_prototypes.prototype_cosines(tmp_path)
    half = 2**-0.5
    assert abs(c["max"] - half) < 1e-6 and abs(c["min"] + half) < 1e-6 and abs(c["mean"]) < 1e-6


def test_class_token_pretraining_trains_the_class_token():
    over = [
        "method=cam_cls_token",
        "model.backbone_kwargs={patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 32}",
        "model.pretrained=null",
    ]
    m = build_method(load_config(REPO / "configs/cam/synthetic_cpu.yaml", over), placeholder_classes(4))
    assert isinstance(m, cls_token_pretrain.CAMClassToken)
    assert set(m.token_classifier.parameters()) <= set(sum(m.param_groups().values(), []))
    batch = {"image": torch.randn(2, 3, 32, 32), "labels": torch.tensor([[1.0, 0, 0], [0, 1, 1]])}
    terms = m.training_step(batch, step=0, active={"cls", "aux"})
    assert set(terms) == {"cls", "aux", "cls_token"}
    terms["cls_token"].backward()
    assert m.backbone.vit.cls_token.grad.abs().sum() > 0 and m.token_classifier.weight.grad is not None


def test_class_token_cosines_read_a_runs_backbone(tmp_path, synth_root):
    over = ["model.backbone_kwargs={patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}"]
    cfg = load_config(REPO / "configs/cam/synthetic_cpu.yaml", over)
    m = build_method(cfg, placeholder_classes(7))
    save_config(cfg, tmp_path / "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    save_checkpoint({"model": m.state_dict()}, tmp_path / "checkpoints" / "last.pt")
    c = seco_prototypes.class_token_cosines(tmp_path, synth_root, images=24)
    assert -1.0 <= c["min"] <= c["mean"] <= c["max"] <= 1.0
    # a backbone whose class token ignores the image gives parallel class means
    with torch.no_grad():
        for blk in m.backbone.vit.blocks:
            blk.attn.proj.weight.zero_()
            blk.attn.proj.bias.zero_()
    save_checkpoint({"model": m.state_dict()}, tmp_path / "checkpoints" / "last.pt")
    assert seco_prototypes.class_token_cosines(tmp_path, synth_root, images=24)["min"] > 1 - 1e-5
