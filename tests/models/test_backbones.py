import numpy as np
import pytest
import torch

from wsss.core.errors import WeightLoadError
from wsss.models.backbones import create_backbone
from wsss.models.decoders import ASPP, LargeFOV
from wsss.models.heads import CAMClassifier
from wsss.models.weights import load_pretrained


def tiny_vit(**kw):
    return create_backbone("vit_tiny_patch16_224", patch_size=8, depth=4, embed_dim=32, num_heads=2, img_size=64, **kw)


def test_vit_any_input_size_and_outputs():
    torch.manual_seed(0)
    b = tiny_vit().eval()
    for h, w in [(64, 64), (48, 80), (16, 16)]:
        out = b(torch.randn(2, 3, h, w))
        assert out.final.shape == (2, 32, h // 8, w // 8)
        assert out.aux.shape == (2, 32, h // 8, w // 8)
        assert out.cls.shape == (2, 32)


def test_vit_pos_embed_frozen_and_interpolated():
    b = tiny_vit()
    assert not b.vit.pos_embed.requires_grad
    assert tiny_vit(freeze_pos_embed=False).vit.pos_embed.requires_grad
    native = b.interpolate_pos_embed(8, 8)
    assert torch.equal(native, b.vit.pos_embed)  # identity at the native grid
    assert b.interpolate_pos_embed(3, 5).shape == (1, 1 + 15, 32)


def test_vit_aux_is_raw_block_output_and_final_is_normed():
    torch.manual_seed(0)
    b = tiny_vit(aux_layer=-3).eval()  # depth 4: block index 1
    x = torch.randn(1, 3, 32, 32)
    seen = {}
    b.vit.blocks[1].register_forward_hook(lambda m, i, o: seen.setdefault("aux", o))
    out = b(x)
    aux_tokens = seen["aux"][:, 1:].transpose(1, 2).reshape(1, 32, 4, 4)
    assert torch.allclose(out.aux, aux_tokens)
    # the final tokens went through LayerNorm: zero mean per token
    assert out.final.mean(dim=1).abs().max() < 1e-4


def test_cnn_backbone_stride_and_pooled_cls():
    b = create_backbone("resnet18", output_stride=16).eval()
    out = b(torch.randn(1, 3, 64, 64))
    assert out.final.shape == (1, 512, 4, 4) and out.aux.shape == (1, 256, 4, 4)
    assert torch.allclose(out.cls, out.final.mean(dim=(2, 3)))


@pytest.mark.parametrize("stride", [16, 8])
def test_efficientnet_lite0_at_the_mobilenetv2_strides(stride):
    """TensorFlow's EfficientNet-Lite0 (configs/_base_/models/efficientnet_lite0_imagenet.yaml) as the MobileNetV2 of
    the real_cpu presets: its last two stages at ``model.output_stride`` (the strided ones dilated), the final one
    320 channels as the MobileNetV2's."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        out = create_backbone("tf_efficientnet_lite0", output_stride=stride).eval()(x)
        mbv2 = create_backbone("mobilenetv2_100", output_stride=stride).eval()(x)
    side = 320 // stride
    assert out.final.shape == mbv2.final.shape == (1, 320, side, side)
    assert out.aux.shape == (1, 112, side, side) and out.cls.shape == (1, 320)
    assert create_backbone("tf_efficientnet_lite0", output_stride=stride).stride == stride


def test_a_backbone_trained_on_another_normalisation_gets_it():
    """The data pipeline normalises by ImageNet's mean / std; TensorFlow's EfficientNet-Lite was trained on
    (pixel - 127) / 128, and its backbone (CNNBackbone, DeepLab-v3+'s trunk) converts what it is given to that,
    exactly. Other backbones take the input as it is; the conversion adds nothing to a checkpoint."""
    from wsss.data.transforms import normalize
    from wsss.methods.deeplab.model import DeepLabV3Plus

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = normalize(pixels)[None]
    tf_input = torch.from_numpy((pixels.astype(np.float32) - 127) / 128).permute(2, 0, 1)[None]
    lite = create_backbone("tf_efficientnet_lite0").eval()
    v3plus = DeepLabV3Plus("tf_efficientnet_lite0", 3).eval()
    mbv2 = create_backbone("mobilenetv2_100").eval()
    for model, trunk, expected in [(lite, lite.net, tf_input), (v3plus, v3plus.net, tf_input), (mbv2, mbv2.net, x)]:
        seen = []
        hook = trunk.register_forward_pre_hook(lambda mod, args, seen=seen: seen.append(args[0]))
        with torch.no_grad():
            model(x)
        hook.remove()
        # float32 rounding: at most 2e-7 apart over every 0-255 value (measured), far below a misplaced mean or std
        torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-5)
        assert not any("renorm" in k for k in model.state_dict())


def test_load_pretrained_round_trip_and_key_errors(tmp_path):
    torch.manual_seed(0)
    src = tiny_vit()
    path = tmp_path / "w.pth"
    state = {f"module.{k}": v for k, v in src.vit.state_dict().items()}
    state["head.weight"] = torch.zeros(1000, 32)  # a classifier head in the file is dropped
    torch.save({"state_dict": state}, path)
    dst = tiny_vit(pretrained=str(path))
    for k, v in src.vit.state_dict().items():
        assert torch.equal(dst.vit.state_dict()[k], v)

    broken = dict(src.vit.state_dict())
    broken.pop("blocks.0.attn.qkv.weight")
    broken["extra.weight"] = torch.zeros(3)
    torch.save(broken, path)
    with pytest.raises(WeightLoadError) as e:
        load_pretrained(tiny_vit().vit, path)
    assert "missing keys (1): blocks.0.attn.qkv.weight" in str(e.value)
    assert "unexpected keys (1): extra.weight" in str(e.value)
    assert str(path) in str(e.value)
    with pytest.raises(WeightLoadError, match="not found"):
        load_pretrained(tiny_vit().vit, tmp_path / "missing.pth")


def test_cam_classifier_gap_logits_are_mean_cam_and_gmp_pools_max():
    torch.manual_seed(0)
    f = torch.randn(2, 8, 5, 6)
    gap = CAMClassifier(8, 3, "gap")
    assert torch.allclose(gap(f), gap.cam(f).mean(dim=(2, 3)), atol=1e-6)
    gmp = CAMClassifier(8, 3, "gmp")
    gmp.conv.weight.data = gap.conv.weight.data.clone()
    expected = (gmp.conv.weight.view(3, 8) @ f.amax(dim=(2, 3)).T).T
    assert torch.allclose(gmp(f), expected, atol=1e-6)
    with pytest.raises(ValueError):
        CAMClassifier(8, 3, "avg")


def test_decoders():
    x = torch.randn(1, 16, 7, 9)
    aspp = ASPP(16, 5)
    out = aspp(x)
    assert out.shape == (1, 5, 7, 9)
    assert torch.allclose(out, sum(c(x) for c in aspp.branches), atol=1e-6)
    assert all(torch.all(c.bias == 0) for c in aspp.branches)
    assert LargeFOV(16, 5, hidden=8)(x).shape == (1, 5, 7, 9)


def test_an_unknown_backbone_is_a_config_error_naming_the_key():
    """Timm's RuntimeError ("Unknown model") was a traceback; now one line naming model.backbone."""
    from wsss.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^model.backbone: no backbone 'nope': a timm model name .* resnet38d"):
        create_backbone("nope")
    with pytest.raises(ConfigError, match=r"did you mean vit_base_patch16_224"):
        create_backbone("vit_base_patch16_22")
