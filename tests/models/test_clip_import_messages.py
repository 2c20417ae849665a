"""What `wsss import clip_es` says of a CLIP file, and the CLIP files it used to refuse or misread:
the one line of what was found, a Hugging Face folder without config.json, a class name too long for CLIP's
context, a CLIP whose MLP is not 4x its width."""

from __future__ import annotations

import pytest
import torch

from conftest import REPO
from wsss.cli import main
from wsss.core.errors import ConfigError, WeightLoadError
from wsss.models.clip import check_prompts_fit, load_clip_described, load_clip_file
from wsss.models.clip_files import read_clip_file

transformers = pytest.importorskip("transformers")  # the dev extra (make setup) installs it


def _hf_clip(folder, intermediate: int = 256, hidden_act: str = "quick_gelu", config: bool = True):
    """A tiny random Hugging Face CLIPModel saved by ``save_pretrained`` (MLP ``intermediate`` wide at width 64)."""
    torch.manual_seed(0)
    text = dict(
        hidden_size=64,
        intermediate_size=intermediate,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_act=hidden_act,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=intermediate,
        num_attention_heads=1,
        num_hidden_layers=2,
        image_size=32,
        patch_size=8,
        hidden_act=hidden_act,
    )
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
    model.eval().save_pretrained(folder)
    if not config:
        (folder / "config.json").unlink()
    return model


def _import_args(tmp_path) -> list[str]:
    preset = str(REPO / "configs/clip_es/voc.yaml")
    return [
        "import",
        "clip_es",
        str(tmp_path / "hf"),
        "--config",
        preset,
        "--out",
        str(tmp_path / "run"),
        f"data.root={tmp_path / 'data'}",
        "run.device=cpu",
    ]


def test_the_import_line_names_layout_architecture_and_where_the_activation_was_read(tmp_path):
    _hf_clip(tmp_path / "hf")
    _, arch, gelu, line = load_clip_described(tmp_path / "hf")
    assert gelu is True and arch.vision_mlp_ratio == 4.0
    assert line.startswith("Hugging Face CLIPModel; ")
    assert "patch 8, 32 px" in line and "QuickGELU (hidden_act in " in line and "config.json" in line
    with pytest.warns(UserWarning, match="overrides hidden_act"):
        _, _, _, given = load_clip_described(tmp_path / "hf", quick_gelu=False)
    assert given.endswith("GELU (options.quick_gelu)")


def test_import_prints_what_it_found(tmp_path, capsys):
    _hf_clip(tmp_path / "hf")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "classes.txt").write_text("background\ncat\n")
    code = main(_import_args(tmp_path))
    out = capsys.readouterr().out
    assert code == 0
    found = [line for line in out.splitlines() if "Hugging Face CLIPModel;" in line]
    assert len(found) == 1 and str(tmp_path / "hf") in found[0] and "QuickGELU" in found[0], out


def test_a_hugging_face_folder_without_config_json_is_told_so(tmp_path):
    _hf_clip(tmp_path / "hf", config=False)
    with pytest.raises(WeightLoadError, match=r"no config\.json beside it, which says hidden_act") as e:
        load_clip_file(tmp_path / "hf", text_heads=2)
    assert "options.quick_gelu" in str(e.value) and "\n" not in str(e.value)
    assert load_clip_file(tmp_path / "hf", text_heads=2, quick_gelu=True)[2] is True  # the option settles it


@pytest.mark.parametrize("intermediate", [128, 192])
def test_a_clip_whose_mlp_is_not_four_times_its_width_loads_with_its_own_ratio(tmp_path, intermediate):
    lib = _hf_clip(tmp_path / "hf", intermediate=intermediate)
    model, arch, _ = load_clip_file(tmp_path / "hf")
    assert arch.vision_mlp_ratio == arch.text_mlp_ratio == intermediate / 64
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the library's own forward: the MLP was built at the file's width, not 4x
        theirs = lib.visual_projection(lib.vision_model(pixel_values=images).pooler_output)
        ours = model.encode_image(images)
    # float32 forwards of the same weights through two libraries: measured max |difference| 4e-7 at this size
    assert (ours - theirs).abs().max() < 1e-5


def test_a_run_written_before_the_mlp_ratio_keeps_loading(tmp_path):
    from wsss.models.clip import ClipArch

    _hf_clip(tmp_path / "hf")
    _, arch, _ = load_clip_file(tmp_path / "hf")
    old = {k: v for k, v in arch.as_dict().items() if "mlp" not in k}  # options.arch of an older run
    assert ClipArch(**old) == arch


def test_a_prompt_longer_than_clips_context_is_refused_naming_the_class():
    long = "very " * 90 + "long garment"
    check_prompts_fit(["cat", "person with clothes,people,human"], ["a clean origami {}."])
    with pytest.raises(
        ConfigError, match=r"class 'very very .*long garment'.* is 1?\d\d tokens; CLIP's context holds 77"
    ):
        check_prompts_fit(["cat", long], ["a clean origami {}."])


def test_import_refuses_a_class_name_too_long_before_writing_the_run(tmp_path, capsys):
    _hf_clip(tmp_path / "hf")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "classes.txt").write_text("background\n" + "very " * 90 + "long garment\n")
    code = main(_import_args(tmp_path))
    err = capsys.readouterr().err
    assert code != 0 and "CLIP's context holds 77" in err and "long garment" in err
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert read_clip_file(tmp_path / "hf").layout == "Hugging Face CLIPModel"
