"""CLIP weight files as the libraries that write them save them (models/clip_files.py): a tiny random
open_clip model (QuickGELU and GELU) saved by ``open_clip.push_to_hf_hub.save_for_hf``, and a tiny
``transformers.CLIPModel`` saved by ``save_pretrained`` (safetensors and .bin), loaded by wsss; wsss's image
features (also through the CLIP-ES token path), text features and per-class scores equal the library's own
forward in float64. No download: the models are built from configs here."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from conftest import REPO, VOC_REAL_MINI
from tiny_weights import NoTokenizer, open_clip_model
from wsss.cli import main
from wsss.core.errors import WeightLoadError
from wsss.models.clip import (
    block_with_attention,
    encode_text,
    load_clip,
    load_clip_file,
    read_clip_state_dict,
    tokenize,
    vision_tokens,
)
from wsss.models.clip_files import _read_safetensors_own, read_clip_file

PROMPTS = ["a clean origami aeroplane.", "a clean origami person with clothes,people,human.", "a photo of a dog."]
# float64 forwards of the same weights: only the summation order of the two libraries' kernels differs;
# measured max |difference| 1.1e-15 (open_clip) to 4.2e-15 (transformers) over features and scores: the
# tolerance sits far above that and far below what a wrong activation (> 1e-4) or a swapped key gives
F64_TOL = 1e-10


def _wsss_features(model, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """wsss's image features (open_clip's pooling, and the CLIP-ES token path run to the CLS token),
    text features and per-class scores (logit_scale x cosine)."""
    visual = model.visual
    x, _ = vision_tokens(visual, images, pos_fp16=False, layers_by_77_tokens=False)
    x, _, _ = block_with_attention(visual.transformer.resblocks[-1], x)
    token_path = visual.ln_post(x[:, 0]) @ visual.proj
    image = model.encode_image(images)
    text = encode_text(model, tokens)
    scores = model.logit_scale.exp() * _unit(image) @ _unit(text).t()
    return {"image": image, "token_path": token_path, "text": text, "scores": scores}


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype == torch.float64
    err = (a - b).abs().max().item()
    assert err <= F64_TOL * max(1.0, b.abs().max().item()), err


@pytest.mark.parametrize("quick_gelu", [True, False])
@pytest.mark.parametrize("safe", [True, False])
def test_open_clip_files_compute_the_librarys_features(tmp_path, quick_gelu, safe):
    from open_clip.push_to_hf_hub import save_for_hf

    lib, cfg = open_clip_model(quick_gelu)
    save_for_hf(lib, NoTokenizer(), cfg, tmp_path, safe_serialization=safe)
    model, arch, gelu = load_clip_file(tmp_path)  # the folder: open_clip_config.json says the activation
    assert gelu is quick_gelu and arch.text_heads == 2 and arch.vision_layers == 2
    model, lib = model.double(), lib.double()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tokens = tokenize(PROMPTS)
    with torch.no_grad():
        ours = _wsss_features(model, images, tokens)
        image, text = lib.encode_image(images), lib.encode_text(tokens)
        scores = lib(images, tokens)[2] * _unit(image) @ _unit(text).t()
    for name, theirs in (("image", image), ("token_path", image), ("text", text), ("scores", scores)):
        _assert_close(ours[name], theirs)
    # the other activation gives other features: the check above can tell them apart
    wrong = load_clip(tmp_path, quick_gelu=not quick_gelu)[0].double()
    with torch.no_grad():
        assert (wrong.encode_image(images) - image).abs().max() > 1e-4


def test_open_clip_gelu_file_without_config_is_refused_not_guessed(tmp_path):
    lib, _ = open_clip_model(quick_gelu=False)
    path = tmp_path / "ViT-B-16-laion.pt"
    torch.save(lib.state_dict(), path)
    with pytest.raises(WeightLoadError, match=r"ViT-B-16-laion\.pt.*options\.quick_gelu: true\|false") as e:
        load_clip(path)
    assert "\n" not in str(e.value) and "GELU" in str(e.value)  # one line, with the reason
    model, _, gelu = load_clip_file(path, text_heads=2, quick_gelu=False)
    assert gelu is False
    # a model config beside the file (open_clip's ViT-B-16.json format, no quick_gelu key: GELU)
    (tmp_path / "ViT-B-16-laion.json").write_text(json.dumps({"embed_dim": 32, "vision_cfg": {}, "text_cfg": {}}))
    assert load_clip_file(path, text_heads=2)[2] is False
    (tmp_path / "ViT-B-16-laion.json").write_text(json.dumps({"quick_gelu": True}))
    assert load_clip_file(path, text_heads=2)[2] is True


def _hf_model(hidden_act: str):
    transformers = pytest.importorskip("transformers")  # the dev extra (make setup) installs it
    torch.manual_seed(0)
    text = dict(
        hidden_size=64,
        intermediate_size=256,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_act=hidden_act,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=256,
        num_attention_heads=1,
        num_hidden_layers=2,
        image_size=32,
        patch_size=8,
        hidden_act=hidden_act,
    )
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize(("hidden_act", "safe"), [("quick_gelu", True), ("gelu", False), ("gelu", True)])
def test_hugging_face_clip_folder_computes_the_librarys_features(tmp_path, hidden_act, safe):
    lib = _hf_model(hidden_act)
    if safe:
        lib.save_pretrained(tmp_path)
    else:  # transformers < 5 wrote pytorch_model.bin (torch.save of the state dict); 5 writes only safetensors
        lib.config.save_pretrained(tmp_path)
        torch.save(lib.state_dict(), tmp_path / "pytorch_model.bin")
    weights = tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")
    assert weights.is_file()
    model, arch, gelu = load_clip_file(tmp_path)
    assert gelu is (hidden_act == "quick_gelu") and arch.text_heads == 2 and arch.embed_dim == 32
    assert load_clip_file(weights)[2] is gelu  # the file alone, its config.json beside it
    model, lib = model.double(), lib.double()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tokens = tokenize(PROMPTS)  # padded with 0 after the end token: the causal mask hides it in both
    with torch.no_grad():
        ours = _wsss_features(model, images, tokens)
        out = lib(input_ids=tokens, pixel_values=images)
        image = lib.visual_projection(lib.vision_model(pixel_values=images).pooler_output)
        text = lib.text_projection(lib.text_model(input_ids=tokens).pooler_output)
    for name, theirs in (("image", image), ("token_path", image), ("text", text), ("scores", out.logits_per_image)):
        _assert_close(ours[name], theirs)


def test_hugging_face_folder_without_config_asks_for_the_activation(tmp_path):
    lib = _hf_model("gelu")
    lib.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(WeightLoadError, match=r"Hugging Face CLIPModel .*options\.quick_gelu"):
        load_clip(tmp_path, text_heads=2)
    (tmp_path / "vocab.json").write_text(json.dumps({"a</w>": 0, "<|endoftext|>": 1}))  # not CLIP's vocabulary
    with pytest.raises(WeightLoadError, match=r"vocab\.json: a vocabulary of 2 tokens"):
        load_clip(tmp_path, text_heads=2, quick_gelu=False)


def test_tokens_equal_hugging_faces_clip_tokenizer(tmp_path):
    """HF's vocab.json / merges.txt written from open_clip's BPE file (as OpenAI's SimpleTokenizer builds
    its vocabulary): CLIPTokenizer's ids of the prompts are wsss's up to the end token."""
    transformers = pytest.importorskip("transformers")
    import open_clip.tokenizer as oct

    with gzip.open(oct.default_bpe()) as f:
        merges = f.read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(oct.bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    hf = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    ours = tokenize(PROMPTS)
    for prompt, row in zip(PROMPTS, ours, strict=True):
        ids = hf(prompt)["input_ids"]
        assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) > 4
        assert row[: len(ids)].tolist() == ids and not row[len(ids) :].any()


def test_own_safetensors_reader_equals_the_package(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2, 2).half(), "d": torch.zeros(0)}
    safetensors.save_file(tensors, tmp_path / "x.safetensors")
    own = _read_safetensors_own(tmp_path / "x.safetensors")
    assert own.keys() == tensors.keys()
    for k, v in tensors.items():
        assert own[k].dtype == v.dtype and torch.equal(own[k], v)


@pytest.mark.parametrize(
    ("keys", "found"),
    [
        ({"conv1.weight": (8, 3), "fc.weight": (10, 8)}, r"not a CLIP ViT \(no visual\.conv1\.weight; found conv"),
        ({"visual.attnpool.positional_embedding": (50, 64), "visual.layer1.0.conv1.weight": (8, 1)}, "ResNet CLIP"),
        ({"visual.trunk.cls_token": (1, 1, 8), "logit_bias": (1,)}, "SigLIP"),
        ({"vision_model.head.probe": (1, 1, 8), "logit_bias": (1,)}, "SigLIP"),
    ],
)
def test_other_files_are_refused_in_one_line(tmp_path, keys, found):
    path = tmp_path / "weights.pth"
    torch.save({k: torch.zeros(s) for k, s in keys.items()}, path)
    with pytest.raises(WeightLoadError, match=f"weights.pth: .*{found}") as e:
        read_clip_file(path)
    assert "\n" not in str(e.value)
    with pytest.raises(WeightLoadError):
        read_clip_state_dict(path)


@pytest.mark.slow
def test_hugging_face_folder_runs_the_clip_es_route_and_a_silent_file_is_refused_by_the_cli(
    tmp_path, capsys, one_thread
):
    """`wsss import clip_es HF_FOLDER` then `wsss cam` on the real photos; `wsss import` of an open_clip state
    dict that does not say its activation exits non-zero with the one-line request for options.quick_gelu."""
    lib = _hf_model("gelu")
    lib.save_pretrained(tmp_path / "hf")
    run, preset = tmp_path / "run", str(REPO / "configs/clip_es/voc.yaml")
    assert (
        main(
            [
                "import",
                "clip_es",
                str(tmp_path / "hf"),
                "--config",
                preset,
                "--out",
                str(run),
                f"data.root={VOC_REAL_MINI}",
                "run.device=cpu",
            ]
        )
        == 0
    )
    assert "quick_gelu: false" in (run / "config.yaml").read_text()
    assert main(["cam", str(run), "--split", "val", "--quiet"]) == 0
    assert len(list((run / "cams" / "val").glob("*.npz"))) == 6
    capsys.readouterr()

    gelu, _ = open_clip_model(quick_gelu=False)
    torch.save(gelu.state_dict(), tmp_path / "laion.pt")
    code = main(
        [
            "import",
            "clip_es",
            str(tmp_path / "laion.pt"),
            "--config",
            preset,
            "--out",
            str(tmp_path / "r2"),
            f"data.root={VOC_REAL_MINI}",
            "options.text_heads=2",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and not (tmp_path / "r2" / "config.yaml").exists()
    assert any("laion.pt" in line and "options.quick_gelu: true|false" in line for line in err), err
