"""`wsss export onnx`: the file run in onnxruntime gives `wsss predict`'s single-scale logits on real photos; its
metadata states the normalisation; the five lines of docs/export.md segment a photo; what cannot export is refused
in one line and nothing is written."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from conftest import REPO
from faults_helpers import cli, one_error_line, write_checkpoint
from wsss.core.config import load_config, save_config
from wsss.data.classes import VOC_CLASSES
from wsss.runs.run import load_run

PHOTOS = sorted((REPO / "tests/assets/voc-real-mini/JPEGImages").glob("*.jpg"))
TINY_CNN = "{channels: [8, 16, 16, 32], stem_width: 8}"
TINY_VIT = "{patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}"
# Measured on the six photos with an untrained DeepLab-v2 on the narrow ResNet-18 (logits up to 2.5), four
# initialisations: the largest |onnxruntime - torch| logit difference was 2.6e-6 to 5.1e-6, and 0 to 3 pixels of
# 1.33 million changed their argmax (near ties). The two runtimes sum float32 convolutions and resizes in other
# orders; 1e-4, 20x the spread, leaves room for another CPU's kernels, while a wrong graph (the tiny ViT traced at
# one size) was off by 0.2 to 1.8. Pixels whose top two logits are within the tolerance may change argmax.
LOGIT_ATOL = 1e-4


def make_run(path: Path, config: str, *overrides: str) -> Path:
    """A run folder with an untrained checkpoint over the VOC classes (no training: the export reads the network)."""
    cfg = load_config(
        REPO / config,
        [f"data.root={REPO / 'tests/assets/voc-real-mini'}", f"run.dir={path}", "data.num_workers=0", *overrides],
    )
    path.mkdir(parents=True)
    save_config(cfg, path / "config.yaml")
    with torch.random.fork_rng():  # the same weights in every session; the caller's RNG untouched
        torch.manual_seed(0)
        write_checkpoint(cfg, path / "checkpoints" / "last.pt", list(VOC_CLASSES))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(a DeepLab run, its ONNX file written by `wsss export onnx`)."""
    from wsss.cli import main

    tmp = tmp_path_factory.mktemp("onnx")
    run = make_run(tmp / "seg", "configs/deeplab/synthetic_cpu.yaml", f"model.backbone_kwargs={TINY_CNN}")
    for name in (f".model.onnx.{gone_pid()}.q8x1z.wsss.tmp", USERS_TMP):  # a killed earlier export's, a user's
        (tmp / name).write_bytes(b"partial")
    assert main(["export", "onnx", str(run), "--out", str(tmp / "model.onnx")]) == 0
    return run, tmp / "model.onnx"


def gone_pid() -> int:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


USERS_TMP = ".model.onnx.notes.tmp"  # not wsss's: kept


def normalised(photo: Path, meta: dict[str, str]) -> np.ndarray:
    """(1, 3, H, W) float32: the photo as the file's metadata says to feed it."""
    assert (meta["color_order"], meta["input_scale"]) == ("RGB", "0-1")
    rgb = np.asarray(Image.open(photo).convert("RGB"), np.float32) / 255
    x = (rgb - np.asarray(json.loads(meta["mean"]))) / np.asarray(json.loads(meta["std"]))
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def near_tie(logits: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose top two logits are closer than the two runtimes' tolerance."""
    top2 = np.sort(logits, axis=0)[-2:]
    return top2[1] - top2[0] <= 2 * LOGIT_ATOL


def test_the_file_gives_predicts_single_scale_logits_on_real_photos(exported):
    run_dir, model = exported
    run = load_run(run_dir, device="cpu")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == list(VOC_CLASSES)
    assert (json.loads(meta["mean"]), json.loads(meta["std"])) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert meta["method"] == "deeplab" and meta["flip_fuse"] == "sum"
    assert len(PHOTOS) == 6
    for photo in PHOTOS:
        image = np.asarray(Image.open(photo).convert("RGB"))
        got = session.run(None, {"image": normalised(photo, meta)})[0][0]
        want = run.seg_logits(image, [1.0])  # wsss predict at one scale, before its argmax
        assert got.shape == want.shape == (21, *image.shape[:2])
        np.testing.assert_allclose(got, want, rtol=0, atol=LOGIT_ATOL, err_msg=photo.name)
        differ = got.argmax(0) != want.argmax(0)
        assert not (differ & ~near_tie(want)).any(), photo.name


def test_the_five_lines_of_the_docs_segment_a_photo(exported, tmp_path, monkeypatch):
    text = (REPO / "docs/export.md").read_text()
    section = text.split("## Segment a photo with onnxruntime alone", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) == 5
    assert not re.search(r"^\s*(import|from)\s+(wsss|torch)\b", code, re.M)  # onnxruntime, numpy and PIL alone
    run_dir, model = exported
    shutil.copy(model, tmp_path / "model.onnx")
    shutil.copy(PHOTOS[0], tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "docs/export.md", "exec"), scope)
    want = load_run(run_dir, device="cpu").seg_logits(np.asarray(Image.open(PHOTOS[0]).convert("RGB")), [1.0])
    assert scope["mask"].shape == want.shape[1:]
    assert not ((scope["mask"] != want.argmax(0)) & ~near_tie(want)).any()


def test_what_cannot_export_is_refused_in_one_line(exported, tmp_path, capsys, monkeypatch):
    run_dir, model = exported
    before = model.read_bytes()
    rc, out = cli(capsys, "export", "onnx", run_dir, "--out", model)
    assert rc == 1 and "exists; pass --overwrite" in one_error_line(out)
    assert model.read_bytes() == before
    # a run without a segmentation network
    cams = make_run(
        tmp_path / "cams", "configs/cam/synthetic_cpu.yaml", f"model.backbone_kwargs={TINY_VIT}", "model.decoder=none"
    )
    rc, out = cli(capsys, "export", "onnx", cams, "--out", tmp_path / "cams.onnx")
    assert rc == 1 and "(method cam) has no segmentation network" in one_error_line(out)
    assert not (tmp_path / "cams.onnx").exists()
    # the packages missing: the install command for this interpreter
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    rc, out = cli(capsys, "export", "onnx", run_dir, "--out", tmp_path / "x.onnx")
    assert rc == 1 and f"{sys.executable} -m pip install 'wsss[export]'" in one_error_line(out)


def test_a_network_traced_for_one_size_only_is_refused(tmp_path, capsys):
    """The ViT resizes its input to the patch grid in Python: its trace holds the example's size only, and the file
    would be wrong on photos of other sizes. The check at another size refuses it; nothing is written."""
    vit = make_run(tmp_path / "vit", "configs/cam/synthetic_cpu.yaml", f"model.backbone_kwargs={TINY_VIT}")
    rc, out = cli(capsys, "export", "onnx", vit, "--out", tmp_path / "vit.onnx")
    line = one_error_line(out)
    assert rc == 1 and "does not export to ONNX for every height and width" in line and "DeepLab runs do" in line
    assert not (tmp_path / "vit.onnx").exists()


def test_a_killed_exports_temporary_goes_with_the_next_export(exported):
    folder = exported[1].parent
    assert [p.name for p in folder.glob(".model.onnx.*") if p.name.endswith(".wsss.tmp")] == []
    assert (folder / USERS_TMP).read_bytes() == b"partial"


def test_no_output_lands_on_the_runs_own_files(exported, tmp_path, capsys):
    """--out on the checkpoint it exports (with --overwrite), in the run's checkpoints/ (a best.pt that `wsss
    predict` would then read), on its config: refused in one line before the run is read; the run is untouched."""
    run_dir, _ = exported
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    for out in ("checkpoints/last.pt", "checkpoints/best.pt", "config.yaml", "metrics.jsonl"):
        rc, text = cli(capsys, "export", "onnx", run_dir, "--out", run_dir / out, "--overwrite")
        assert rc == 1 and f"{run_dir / out}: --out " in one_error_line(text)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    shutil.copy(PHOTOS[0], tmp_path / "photo.jpg")
    rc, text = cli(
        capsys,
        "predict",
        run_dir,
        "--images",
        tmp_path / "photo.jpg",
        "--out",
        run_dir / "checkpoints",
        "--overwrite",
        "--quiet",
    )
    assert rc == 1 and "--out names" in one_error_line(text)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.pt"]


def test_an_out_that_cannot_be_written_is_one_line_naming_it(exported, tmp_path, capsys):
    run_dir, _ = exported
    (tmp_path / "a.onnx").write_bytes(b"x")
    rc, text = cli(capsys, "export", "onnx", run_dir, "--out", tmp_path / "a.onnx" / "x.onnx")
    assert rc == 1 and f"{tmp_path / 'a.onnx'} is a file, not a folder" in one_error_line(text)


def test_a_checkpoint_not_found_is_named_as_given(exported, tmp_path, capsys):
    run_dir, _ = exported
    rc, text = cli(capsys, "export", "onnx", run_dir, "--checkpoint", "m.onnx", "--out", tmp_path / "m.onnx")
    line = one_error_line(text)
    assert rc == 1 and line.startswith("error: m.onnx: checkpoint not found (") and "ending in .pt" in line
