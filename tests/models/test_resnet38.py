"""ResNet-38 (docs/methods/sccam.md#resnet38): key layout of the converted weights, shapes and strides, frozen layers,
loading a state dict saved in PSA's converted layout."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from wsss.core.errors import WeightLoadError
from wsss.models.backbones import create_backbone
from wsss.models.resnet38 import ResNet38d, checkpoint_filter_fn, resnet38d

SMALL = {"width": 1 / 16}  # a narrow variant of the same architecture, for speed


def test_full_model_key_layout_matches_the_converted_weights():
    """The names and shapes PSA's convert_mxnet_to_torch produces (e.g. res5b_branch2b1 -> b5_1.conv_branch2b1)."""
    sd = ResNet38d().state_dict()
    expected = {
        "conv1a.weight": (64, 3, 3, 3),
        "b2.bn_branch2a.weight": (64,),
        "b2.conv_branch2a.weight": (128, 64, 3, 3),
        "b2.conv_branch1.weight": (128, 64, 1, 1),
        "b3_2.conv_branch2b1.weight": (256, 256, 3, 3),
        "b4_5.bn_branch2b1.running_var": (512,),
        "b5.conv_branch2a.weight": (512, 512, 3, 3),
        "b5.conv_branch1.weight": (1024, 512, 1, 1),
        "b5_2.conv_branch2b1.weight": (1024, 512, 3, 3),
        "b6.conv_branch2a.weight": (512, 1024, 1, 1),
        "b6.conv_branch2b1.weight": (1024, 512, 3, 3),
        "b6.conv_branch2b2.weight": (2048, 1024, 1, 1),
        "b7.conv_branch2b1.weight": (2048, 1024, 3, 3),
        "b7.bn_branch2b2.running_mean": (2048,),
        "b7.conv_branch1.weight": (4096, 2048, 1, 1),
        "bn7.weight": (4096,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    # blocks with the same input and output shape have no projection shortcut (as the official port)
    assert "b2_1.conv_branch1.weight" not in sd and "b5_1.conv_branch1.weight" not in sd
    # no conv has a bias; 37 convolutions on the main path: conv1a, 15 basic blocks x 2, 2 bottlenecks x 3
    assert not any(k.endswith(".bias") and "conv" in k for k in sd)
    convs = [k for k in sd if "conv" in k and "branch1" not in k]
    assert len(convs) == 1 + 2 * 15 + 3 * 2


def test_shapes_and_strides():
    b = create_backbone("resnet38d", output_stride=8, **SMALL).eval()
    with torch.no_grad():
        out = b(torch.randn(2, 3, 72, 104))
    assert out.final.shape == (2, b.out_dim, 9, 13) and b.stride == 8
    assert out.aux.shape == (2, b.aux_dim, 9, 13)
    assert out.cls.shape == (2, b.out_dim)
    torch.testing.assert_close(out.cls, out.final.mean(dim=(2, 3)))
    assert (out.final >= 0).all()  # conv6 = relu(bn7(.))
    full = ResNet38d()
    assert full.num_features == 4096 and full.feature_channels == (512, 1024, 4096)
    with pytest.raises(ValueError, match="output stride 8"):
        create_backbone("resnet38d", output_stride=16, **SMALL)


def test_frozen_layers_and_batchnorm():
    net = ResNet38d(**SMALL)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    for n, _ in net.named_parameters():
        is_bn = isinstance(net.get_submodule(n.rsplit(".", 1)[0]), nn.BatchNorm2d)
        in_stem = n.startswith(("conv1a", "b2.", "b2_1.", "b2_2."))
        assert (n in frozen) == (is_bn or in_stem), n
    assert "b3.conv_branch2a.weight" not in frozen and "b2_2.conv_branch2b1.weight" in frozen
    net.train()
    assert all(not m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert net.b6.dropout_2b1.training  # dropout stays active in training
    before = net.bn7.running_mean.clone()
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    torch.testing.assert_close(net.bn7.running_mean, before)  # statistics frozen
    assert net.conv1a.weight.grad is None and net.b3.conv_branch2a.weight.grad is not None
    # from scratch (synthetic presets) everything trains
    free = ResNet38d(freeze_bn=False, freeze_stem=False, **SMALL).train()
    assert all(p.requires_grad for p in free.parameters()) and free.bn7.training


def test_loads_a_state_dict_in_the_converted_layout(tmp_path):
    src = ResNet38d(**SMALL)
    for p in src.parameters():
        nn.init.normal_(p)
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}  # as converted
    path = tmp_path / "res38_cls.pth"
    torch.save({"module." + k: v for k, v in sd.items()} | {"module.fc8.weight": torch.zeros(20, 256, 1, 1)}, path)
    b = create_backbone("resnet38d", pretrained=str(path), output_stride=8, **SMALL)
    for k, v in sd.items():
        torch.testing.assert_close(b.net.state_dict()[k], v)
    # the timm entry point loads the same file
    m = timm.create_model("resnet38d", pretrained_file=str(path), **SMALL)
    torch.testing.assert_close(m.b7.conv_branch1.weight, src.b7.conv_branch1.weight)
    # the filter keeps the trunk only
    assert set(checkpoint_filter_fn({"fc8_200.weight": torch.zeros(1)}, src)) == {
        k for k in src.state_dict() if k.endswith("num_batches_tracked")
    }
    bad = dict(sd)
    bad.pop("b4_3.conv_branch2a.weight")
    bad["b9.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightLoadError, match=r"bad\.pth.*b4_3\.conv_branch2a\.weight.*b9\.weight"):
        create_backbone("resnet38d", pretrained=str(tmp_path / "bad.pth"), output_stride=8, **SMALL)
    with pytest.raises(ValueError, match="pretrained_file"):
        resnet38d(pretrained=True)
