"""CLIP-ES weights, switches and run creation (the golden parity is tests/methods/clip_es/test_clip_es_golden.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import REPO, VOC_REAL_MINI
from golden import GOLDEN_DIR, load_golden
from wsss.cam.clip_es import crf_image, scoremap_boxes
from wsss.cli import main
from wsss.models.clip import read_clip_state_dict, vision_tokens


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, np.ndarray]:
    return load_golden("clip_es_state_dict")


def _openai_archive(state: dict[str, np.ndarray], path) -> None:
    """A TorchScript archive as OpenAI ships ``ViT-B-16.pt``: the traced model, conv / linear / attention
    weights in float16 (``convert_weights``), the rest float32."""
    from open_clip.model import convert_weights_to_lp

    from wsss.models.clip import arch_of_state_dict, build_clip

    sd = {k: torch.from_numpy(v) for k, v in state.items()}
    model = build_clip(arch_of_state_dict(sd, text_heads=2))
    model.load_state_dict(sd, strict=False)
    convert_weights_to_lp(model)  # the golden weights are fp16-rounded already: lossless
    inputs = (torch.zeros(1, 3, 224, 224, dtype=torch.float16), torch.zeros(1, 77, dtype=torch.long))
    with warnings.catch_warnings():  # the tracer's notes on shape checks of the attention
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.trace(model, inputs, check_trace=False, strict=False).save(str(path))


def test_openai_torchscript_archive_reads_without_running_code(tiny_state, tmp_path, one_thread):
    path = tmp_path / "ViT-tiny.pt"
    _openai_archive(tiny_state, path)
    state = read_clip_state_dict(path)
    assert state["visual.conv1.weight"].dtype == torch.float16  # the archive's own dtypes
    for key, value in tiny_state.items():
        assert torch.equal(state[key].float(), torch.from_numpy(value)), key


def test_import_refuses_another_architecture_in_one_line(tiny_state, tmp_path, capsys):
    other = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(2, 4)}, other)
    code = main(
        [
            "import",
            "clip_es",
            str(other),
            "--config",
            str(REPO / "configs/clip_es/voc.yaml"),
            "--out",
            str(tmp_path / "run"),
            f"data.root={VOC_REAL_MINI}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert err.startswith("error:") and str(other) in err and "CLIP" in err
    assert not (tmp_path / "run").exists()


def test_import_from_the_openai_archive_makes_a_run(tiny_state, tmp_path, capsys, one_thread):
    path = tmp_path / "ViT-tiny.pt"
    _openai_archive(tiny_state, path)
    run = tmp_path / "run"
    code = main(
        [
            "import",
            "clip_es",
            str(path),
            "--config",
            str(REPO / "configs/clip_es/voc_corrected.yaml"),
            "--out",
            str(run),
            f"data.root={VOC_REAL_MINI}",
            "options.text_heads=2",
            "options.quick_gelu=true",
        ]
    )
    assert code == 0, capsys.readouterr().err
    from wsss.runs.run import load_run

    r = load_run(run, device="cpu")
    assert torch.equal(r.method.clip.visual.proj, torch.from_numpy(tiny_state["visual.proj"]))
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    keys, cam = r.labelled_cam(image, np.eye(20, dtype=np.float32)[[4, 11]].max(0))
    assert keys.tolist() == [4, 11] and cam.shape == (2, 40, 56)
    # quirk_unlabelled_stops_worker off (corrected preset): no labels, no maps, no stop
    keys, cam = r.labelled_cam(image, np.zeros(20, dtype=np.float32))
    assert keys.size == 0 and cam.shape == (0, 40, 56)


def test_box_clip_switch():
    cam = np.zeros((6, 8), dtype=np.float32)
    cam[2:, 5:] = 1.0  # touches the right and bottom edges
    assert scoremap_boxes(cam, clip_minus_one=True).tolist() == [[5, 2, 7, 5]]  # the official W-1 / H-1
    assert scoremap_boxes(cam, clip_minus_one=False).tolist() == [[5, 2, 8, 6]]


def test_crf_image_wrap_switch():
    image = np.array([[[0, 120, 255]]], dtype=np.uint8)  # RGB
    # BGR (255, 120, 0) - (104.008, 116.669, 122.675) = (150.99, 3.33, -122.68) -> trunc -> wrap
    assert crf_image(image, wrap=True).tolist() == [[[150, 3, 134]]]
    assert crf_image(image, wrap=False).tolist() == image.tolist()


@pytest.mark.parametrize("quirk, blocks", [(True, 3), (False, 2)])
def test_77_token_switch(tiny_state, quirk, blocks):
    """An image of 76 patches (4 x 19) has 77 tokens: the official transformer then runs every block."""
    from wsss.models.clip import load_clip

    path = GOLDEN_DIR / "clip_es_state_dict.npz"
    model, _ = load_clip(path, text_heads=2, quick_gelu=True)
    _, maps = vision_tokens(model.visual, torch.zeros(1, 3, 64, 304), layers_by_77_tokens=quirk)
    assert len(maps) == blocks
    _, maps = vision_tokens(model.visual, torch.zeros(1, 3, 64, 320), layers_by_77_tokens=quirk)
    assert len(maps) == 2  # 81 tokens: always all blocks but the last
