"""models/vgg.py: RCA's dilated VGG-16 'D1' (docs/methods/rca.md#backbone) and its torchvision weight layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from wsss.core.errors import WeightLoadError
from wsss.models.backbones import create_backbone
from wsss.models.vgg import VGG16Dilated


def torchvision_features_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision ``vgg16`` state dict (features with random weights + a dummy classifier)."""
    torch.manual_seed(seed)
    feats = make_layers(cfgs["D"])
    state = {f"features.{k}": v for k, v in feats.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 3)  # dropped by the loader
    state["classifier.6.bias"] = torch.zeros(4)
    return state


def test_layout_matches_torchvision_indices_and_d1_changes():
    net = VGG16Dilated()
    tv = make_layers(cfgs["D"])
    convs = [i for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d)]
    assert convs == [i for i, m in enumerate(tv) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    # the fourth pool is 3x3 stride 1 ('N'), there is no fifth pool, the last three convs are dilated 2
    pool4 = net.features[23]
    assert isinstance(pool4, nn.MaxPool2d) and pool4.kernel_size == 3 and pool4.stride == 1 and pool4.padding == 1
    assert len(net.features) == 30
    assert [net.features[i].dilation for i in (24, 26, 28)] == [(2, 2)] * 3
    assert all(net.features[i].dilation == (1, 1) for i in convs[:10])


def test_output_stride_8_and_shapes():
    net = VGG16Dilated(width=0.125).eval()
    out = net(torch.randn(2, 3, 64, 48))
    assert out.final.shape == (2, 64, 8, 6) and out.aux.shape == (2, 64, 8, 6)
    assert torch.allclose(out.cls, out.final.mean(dim=(2, 3)))
    assert net.stride == 8 and net.out_dim == 64


def test_loads_torchvision_vgg16_file_key_for_key(tmp_path):
    state = torchvision_features_state()
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    net = create_backbone("vgg16_dilated", pretrained=str(path)).eval()
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    # up to conv4_3 the network is torchvision's VGG-16: the aux map equals its features[:23]
    tv = make_layers(cfgs["D"])
    tv.load_state_dict({k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")})
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x).aux, tv[:23].eval()(x), atol=1e-5)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = torchvision_features_state()
    del state["features.28.weight"]
    state["features.30.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(
        WeightLoadError, match=r"missing keys \(1\): features\.28\.weight.*unexpected keys \(1\): features\.30"
    ):
        create_backbone("vgg16_dilated", pretrained=str(path))


def test_unknown_argument_is_rejected():
    with pytest.raises(TypeError, match="unexpected arguments"):
        create_backbone("vgg16_dilated", depth=3)


def test_batch_norm_variant_loads_torchvision_vgg16_bn_layout(tmp_path):
    torch.manual_seed(1)
    tv = make_layers(cfgs["D"], batch_norm=True)
    state = {f"features.{k}": v for k, v in tv.state_dict().items()}
    torch.save(state, tmp_path / "vgg16_bn.pth")
    net = create_backbone("vgg16_dilated", pretrained=str(tmp_path / "vgg16_bn.pth"), batch_norm=True).eval()
    assert net.state_dict().keys() == state.keys()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # conv4_3 + BN + ReLU is the aux map, as in torchvision's features[:33]
        assert torch.allclose(net(x).aux, tv[:33].eval()(x), atol=1e-5)
