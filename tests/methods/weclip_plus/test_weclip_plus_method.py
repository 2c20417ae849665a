"""The ``weclip_plus`` method's switches and weights (docs/methods/weclip_plus.md#quirks, #weights): each quirk switch
changes what its row says, the label update, the weight files (CLIP as the other CLIP methods read it, DINOv2 hub
checkpoint) and ``wsss import weclip_plus`` of an official checkpoint's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import REPO
from wsss.core.config import load_config
from wsss.methods import build_method, get_method_class
from wsss.methods.weclip_plus import dice_loss
from wsss.methods.weclip_plus.cam import refined_cams
from wsss.methods.weclip_plus.model import ClipFeatures

CLASSES = ["background", "boat", "train", "horse"]


def _tiny(tmp_path, **options: object):
    preset, over = get_method_class("weclip_plus").tiny_overrides()
    over = {**over, "run.device": "cpu", "data.root": str(tmp_path), **{f"options.{k}": v for k, v in options.items()}}
    cfg = load_config(REPO / preset, [f"{k}={v}" for k, v in over.items()])
    torch.manual_seed(0)
    return build_method(cfg, CLASSES)


def _batch(b: int = 2, size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    labels = torch.zeros(b, len(CLASSES) - 1)
    labels[0, 0] = labels[-1, 2] = 1
    return {
        "image": torch.randn(b, 3, size, size, generator=g),
        "labels": labels,
        "img_box": torch.tensor([[0, size, 0, size]] * b),
    }


def test_dice_q2_counts_the_ignored_pixels_in_the_union_and_leaves_the_label_alone():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    label = torch.randint(0, 4, (2, 8, 8))
    label[:, :3] = 255
    kept = label.clone()
    official = dice_loss(logits, label, counts_ignored=True)
    intended = dice_loss(logits, label, counts_ignored=False)
    assert torch.equal(label, kept)  # the official code writes 255 -> C into the caller's tensor; wsss does not
    assert not torch.isclose(official, intended)
    # intended: the ignored rows do not count at all, as if they were cut off
    cut = dice_loss(logits[:, :, 3:], label[:, 3:], counts_ignored=False)
    torch.testing.assert_close(intended, cut)
    # without ignored pixels both are the same loss
    clean = torch.randint(0, 4, (2, 8, 8))
    torch.testing.assert_close(dice_loss(logits, clean, counts_ignored=True), dice_loss(logits, clean))


def test_q7_the_cam_path_skips_a_block_only_with_the_quirk():
    blocks = [torch.full((1, 5, 4), float(i)) for i in range(3)]
    cf = ClipFeatures(blocks, [], (2, 2))
    assert torch.equal(cf.cam_tokens(True), blocks[-2]) and torch.equal(cf.cam_tokens(False), blocks[-1])


def test_q5_the_box_mask_only_counts_without_the_quirk(tmp_path):
    method = _tiny(tmp_path)
    x = _batch()["image"][:1]
    cf, head = method.network(x)
    text = method.text()
    args = (
        method.clip,
        cf.cam_tokens(False)[:1],
        torch.cat([text[:1], text[3:]]),
        1,
        cf.grid,
        torch.stack(cf.attn)[:, 0],
        head.attn_pred[0],
        head.seg_prob()[0],
        torch.tensor([0]),
    )
    official = refined_cams(*args, box_masked=False, box_threshold=0.9, out_proj_fp16=False)
    boxed = refined_cams(*args, box_masked=True, box_threshold=0.9, out_proj_fp16=False)
    assert not torch.allclose(official.refined, boxed.refined)
    assert torch.equal(official.trans, boxed.trans)  # the box only masks the transition matrix's columns


def _assert_labels_update_after(method, step: int) -> None:
    """A head sure of class 2 everywhere: the seg loss is large at ``step`` and small from the step after it, when
    the sure pixels take the prediction as their label."""
    with torch.no_grad():
        method.decoder.decoder.linear_pred.bias.zero_()
        method.decoder.decoder.linear_pred.bias[2] = 30.0
    method.train()
    method.decoder.decoder_fts_fuse.dropout.p = method.decoder.dino_decoder_fts_fuse.dropout.p = 0.0
    batch = _batch()
    at = method.training_step(batch, step, {"seg", "aff", "cross", "dice"})["seg"]
    after = method.training_step(batch, step + 1, {"seg", "aff", "cross", "dice"})["seg"]
    assert after.item() < 1e-3 < at.item()


def test_the_label_update_replaces_labels_where_the_prediction_is_sure(tmp_path):
    """From the iteration after ``options.label_update_after`` the pixels where the fused prediction is over the
    threshold take its argmax (dist_clip_voc.py: ``n_iter > 18000``): a head sure of class 2 everywhere makes the
    seg loss small only then."""
    _assert_labels_update_after(_tiny(tmp_path, label_update_after=5), 5)


def test_the_label_update_fraction_follows_the_resolved_length(tmp_path):
    """``options.label_update_fraction`` (configs/weclip_plus/route_gpu.yaml: a schedule in epochs) puts the update
    at that share of ``train.max_iters`` as resolved from ``train.epochs`` for the photos, whatever
    ``label_update_after`` says; the loss changes at that step, as with ``label_update_after``."""
    from wsss.core.config import resolve_epochs

    preset, over = get_method_class("weclip_plus").tiny_overrides()
    over = {
        **over,
        "run.device": "cpu",
        "data.root": str(tmp_path),
        "train.epochs": 5,
        "train.batch_size": 2,
        "options.label_update_after": 1,
        "options.label_update_fraction": 0.6,
    }
    cfg = resolve_epochs(load_config(REPO / preset, [f"{k}={v}" for k, v in over.items()]), 4)  # 2 iters an epoch
    assert cfg.train.max_iters == 10
    torch.manual_seed(0)
    method = build_method(cfg, CLASSES)
    assert method.label_update_after() == 6
    _assert_labels_update_after(method, 6)


def test_q3_padding_is_ignored_without_the_quirk(tmp_path):
    """Without Q3 the pseudo labels outside ``img_box`` are 255: a batch padded on its right half gets the seg loss of
    its left half only."""
    batch = _batch()
    batch["img_box"] = torch.tensor([[0, 64, 0, 32]] * 2)
    losses = {}
    for quirk in (True, False):
        method = _tiny(tmp_path, quirk_padding_supervised=quirk)
        method.eval()  # no dropout: the same heads in both runs
        fixed = torch.zeros(2, 64, 64, dtype=torch.long)
        fixed[:, :, 32:] = 1  # the padded half says class 1, the image half background
        method.online_labels = lambda *a, fixed=fixed: fixed.clone()
        losses[quirk] = method.training_step(batch, 0, {"seg", "aff", "cross", "dice"})["seg"].item()
    assert losses[True] != pytest.approx(losses[False])


def test_training_reads_the_clip_and_dinov2_files(tmp_path):
    """``model.pretrained`` (a CLIP state dict in OpenAI's layout, read as for CLIP-ES / ExCEL) and
    ``options.dino_weights`` (the hub checkpoint) fill the architectures and the weights."""
    source = _tiny(tmp_path)
    clip_file, dino_file = tmp_path / "clip.pt", tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(source.clip.state_dict(), clip_file)
    torch.save(source.dino.state_dict(), dino_file)
    over = {
        "options.arch": "{}",
        "options.dino_arch": "{}",
        "options.quick_gelu": "true",
        "options.dino_heads": 2,
        "options.embedding_dim": 16,
        "options.decoder_heads": 2,
        "options.text_heads": 1,
        "model.pretrained": str(clip_file),
        "options.dino_weights": str(dino_file),
        "data.root": str(tmp_path),
    }
    cfg = load_config(REPO / "configs/weclip_plus/synthetic_cpu.yaml", [f"{k}={v}" for k, v in over.items()])
    model = build_method(cfg, CLASSES)
    assert model.options.arch["vision_layers"] == 3 and model.options.dino_arch["embed_dim"] == 32
    for part, ref in ((model.clip, source.clip), (model.dino, source.dino)):
        for k, v in ref.state_dict().items():
            assert torch.equal(part.state_dict()[k], v), k


def test_import_takes_an_official_checkpoint(tmp_path):
    """``wsss import weclip_plus``: an official ``torch.save(model.state_dict())`` (``module.encoder.*`` the CLIP in
    float16 as the official model holds it, ``module.dino_encoder.*``, the heads) becomes the run: architectures from
    the tensors, every weight from the file; a file without them is refused in one line."""
    from wsss.core.errors import WeightLoadError
    from wsss.methods.weclip_plus import build_from_checkpoint

    source = _tiny(tmp_path)
    official = {f"module.encoder.{k}": v.half() for k, v in source.clip.state_dict().items() if k != "attn_mask"}
    official.update({f"module.dino_encoder.{k}": v for k, v in source.dino.state_dict().items()})
    torch.manual_seed(5)
    heads = {k: torch.randn_like(v) for k, v in source.decoder.state_dict().items()}
    official.update({f"module.{k}": v for k, v in heads.items()})
    ckpt = tmp_path / "wetr_iter_30000.pth"
    torch.save(official, ckpt)
    over = {
        "options.arch": "{}",
        "options.dino_arch": "{}",
        "options.dino_heads": 2,
        "options.embedding_dim": 16,
        "options.decoder_heads": 2,
        "options.text_heads": 1,
        "data.root": str(tmp_path),
    }
    cfg = load_config(REPO / "configs/weclip_plus/synthetic_cpu.yaml", [f"{k}={v}" for k, v in over.items()])
    model, _ = build_from_checkpoint(ckpt, cfg, CLASSES)
    assert model.options.quick_gelu is True and model.options.arch["vision_width"] == 64
    for k, v in heads.items():
        assert torch.equal(model.decoder.state_dict()[k], v)
    for k, v in source.dino.state_dict().items():
        assert torch.equal(model.dino.state_dict()[k], v)
    assert torch.equal(model.clip.state_dict()["visual.proj"], source.clip.state_dict()["visual.proj"].half().float())
    assert model.has_seg_head
    bad = tmp_path / "other.pth"
    torch.save({"encoder.visual.proj": torch.zeros(2, 2)}, bad)
    with pytest.raises(WeightLoadError, match="other.pth: not an official WeCLIP\\+ checkpoint"):
        build_from_checkpoint(bad, cfg, CLASSES)


def test_the_synthetic_preset_takes_a_training_step_on_the_cpu(tmp_path):
    """The CPU preset's step on its crop size: finite terms of the four names the preset weighs. (Its time is a
    benchmark's, docs/methods/weclip_plus.md, never a unit test's.)"""
    method = _tiny(tmp_path)
    method.train()
    terms = method.training_step(_batch(8, 96), 0, {"seg", "aff", "cross", "dice"})
    assert set(terms) == set(method.cfg.loss.weights) and all(np.isfinite(v.item()) for v in terms.values())
