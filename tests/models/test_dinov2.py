"""DINOv2 weight files as users have them (models/dinov2.py): the torch-hub checkpoint (a plain state dict,
``dinov2_vits14_pretrain.pth``) and a Hugging Face ``Dinov2Model`` folder written by ``save_pretrained``; the
architecture read off the tensors, the features equal to what the writing library computes."""

from __future__ import annotations

import pytest
import torch

from wsss.core.errors import WeightLoadError
from wsss.models.dinov2 import Dinov2, Dinov2Arch, arch_of_state_dict, load_dinov2_file

ARCH = Dinov2Arch(embed_dim=32, depth=2, num_heads=2, patch_size=14, pos_grid=4)


def _random_dino(seed: int = 0) -> Dinov2:
    torch.manual_seed(seed)
    model = Dinov2(ARCH)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def test_hub_checkpoint_round_trip(tmp_path):
    """A state dict saved as the hub's ``*_pretrain.pth`` (torch.save of the model's state dict) loads with the
    architecture read from it (heads given: 32 is not 64 x heads) and computes the same features."""
    model = _random_dino()
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(model.state_dict(), path)
    loaded, arch, line = load_dinov2_file(path, num_heads=2)
    assert arch == ARCH and "hub state dict" in line
    x = torch.randn(2, 3, 70, 42)
    with torch.no_grad():
        a, b = model.forward_features(x), loaded.forward_features(x)
    assert torch.equal(a["x_norm_patchtokens"], b["x_norm_patchtokens"])
    assert a["x_norm_patchtokens"].shape == (2, 15, 32)


def test_the_heads_default_to_width_over_64():
    state = _random_dino().state_dict()
    assert arch_of_state_dict(state).num_heads == 1  # width 32 // 64 -> at least one head
    state384 = {k: v for k, v in state.items()}
    state384["cls_token"] = torch.zeros(1, 1, 384)
    assert arch_of_state_dict(state384).num_heads == 6  # ViT-S/14: 6 heads


def test_a_file_that_is_not_dinov2_is_refused_in_one_line(tmp_path):
    path = tmp_path / "clip.pth"
    torch.save({"visual.conv1.weight": torch.zeros(4, 3, 16, 16)}, path)
    with pytest.raises(WeightLoadError, match=r"clip\.pth: not a DINOv2 ViT state dict in the hub's layout"):
        load_dinov2_file(path)
    with pytest.raises(WeightLoadError, match="not found"):
        load_dinov2_file(tmp_path / "missing.pth")


@pytest.mark.parametrize("safe", [True, False])
def test_a_hugging_face_dinov2_folder_computes_what_transformers_computes(tmp_path, safe):
    """``transformers.Dinov2Model`` written by ``save_pretrained`` (safetensors and .bin): wsss maps its keys to the
    hub's, and its normalised patch tokens equal ``last_hidden_state[:, 1:]`` of transformers on an image of the
    position table's own grid. (At another size transformers resizes the table to a size, the hub code by a scale
    factor with the 0.1 offset: different bicubic weights, 1.5e-2 apart here; wsss follows the hub, which WeCLIP+
    runs.) Bound 1e-5: float32 attention kernels differ (transformers' eager attention against SDPA)."""
    transformers = pytest.importorskip("transformers")  # the dev extra installs it
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, patch_size=14, image_size=56
    )
    torch.manual_seed(3)
    hf = transformers.Dinov2Model(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=safe)
    ours, arch, line = load_dinov2_file(tmp_path / "hf")
    assert arch.num_heads == 2 and arch.pos_grid == 4 and "Hugging Face" in line
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state[:, 1:]
        got = ours.forward_features(x)["x_norm_patchtokens"]
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) < 1e-5
