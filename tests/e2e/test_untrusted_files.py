"""Files from strangers run no code and write nowhere else, command by command: crafted
cls_labels.npy, CAM files and checkpoints whose unpickling would create a marker file are refused by
check-data, train, cam, predict and report; split lists with ``../`` ids are refused; report pages
escape every string. The readers themselves: tests/utils/test_safe_load.py, tests/utils/test_io.py."""

from __future__ import annotations

import html
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_overrides
from crafted import Marker, crafted_checkpoint, crafted_cls_labels, numpy1_npy
from wsss.cli import main
from wsss.core.checkpoint import save_checkpoint
from wsss.core.config import load_config, save_config
from wsss.methods import build_method
from wsss.utils.io import per_id_path, read_label_png, save_label_png

CONFIG = REPO / "configs/cam/synthetic_cpu.yaml"


# ---- the commands -----------------------------------------------------------------------------------


@pytest.fixture
def data(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


@pytest.fixture
def run_dir(data, tmp_path):
    """A run folder with config.yaml and an honest (untrained) checkpoint holding RNG states."""
    run = tmp_path / "run"
    cfg = load_config(CONFIG, tiny_overrides(data, run))
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    names = (data / "classes.txt").read_text().split()
    method = build_method(cfg, names)  # the dataset's classes: a checkpoint of another count is refused
    state = {
        "step": 0,
        "model": method.state_dict(),
        "num_classes": len(names),
        "class_names": names,
        "rng": [{"numpy": np.random.get_state(), "torch": torch.get_rng_state()}],
    }
    save_checkpoint(state, run / "checkpoints" / "last.pt")
    return run


def _copy_mask_as_prediction(data: Path, run: Path, id: str) -> None:
    save_label_png(
        per_id_path(run / "predictions/val", id, ".png"), read_label_png(data / f"SegmentationClass/{id}.png")
    )


def _cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_check_data_and_train_refuse_a_crafted_cls_labels(data, tmp_path, capsys):
    marker = tmp_path / "marker"
    npy = crafted_cls_labels(data / "cls_labels.npy", marker)
    rc, out = _cli(capsys, "check-data", data)
    assert rc == 1 and f"{npy}: refused to read this label file" in out
    run = tmp_path / "run"
    rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run), "--quiet")
    assert rc == 1 and f"{npy}: refused" in out
    rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run), "--quiet", "--skip-check")
    assert rc == 1 and f"{npy}: refused" in out
    assert not marker.exists() and not (run / "checkpoints").exists()


def test_train_refuses_a_crafted_pretrained_file_and_resume_checkpoint(data, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = crafted_checkpoint(tmp_path / "weights.pt", marker)
    run = tmp_path / "run"
    rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run, **{"model.pretrained": evil}), "--quiet")
    assert rc == 1 and f"{evil}: refused to load this pretrained weight file" in out
    crafted_checkpoint(run / "checkpoints" / "last.pt", marker, {"step": 1})
    rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run), "--quiet")
    assert rc == 1 and f"{run / 'checkpoints' / 'last.pt'}: refused" in out
    assert not marker.exists()


@pytest.mark.parametrize("command", ["cam", "predict"])
def test_cam_and_predict_refuse_a_crafted_checkpoint(run_dir, tmp_path, capsys, command):
    marker = tmp_path / "marker"
    ckpt = crafted_checkpoint(run_dir / "checkpoints" / "best.pt", marker, {"step": 1})
    rc, out = _cli(capsys, command, run_dir, "--split", "val", "--quiet")
    assert rc == 1 and f"{ckpt}: refused to load this checkpoint: it needs " in out
    assert "\n" not in out.strip()  # one line
    assert not marker.exists() and not (run_dir / "cams").exists() and not (run_dir / "predictions").exists()


def test_cam_refuses_a_crafted_cls_labels(run_dir, data, tmp_path, capsys):
    marker = tmp_path / "marker"
    npy = crafted_cls_labels(data / "cls_labels.npy", marker)
    rc, out = _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")
    assert rc == 1 and f"{npy}: refused" in out and not marker.exists()


def test_report_refuses_crafted_files_and_never_unpickles_a_checkpoint(run_dir, data, tmp_path, capsys):
    marker = tmp_path / "marker"
    ids = (data / "ImageSets/Segmentation/val.txt").read_text().split()
    for i in ids:  # a complete output folder: the report scores it (and reads the image labels)
        _copy_mask_as_prediction(data, run_dir, i)
    crafted_checkpoint(run_dir / "checkpoints" / "best.pt", marker)
    rc, out = _cli(capsys, "report", run_dir, "--split", "val")
    assert rc == 0, out  # a report reads no checkpoint
    # a CAM file from elsewhere holding a pickled object array
    cam = run_dir / "cams/val" / f"{ids[0]}.npz"
    cam.parent.mkdir(parents=True)
    np.savez(cam, keys=np.array([1]), cam=np.array([Marker(marker)], dtype=object))
    rc, out = _cli(capsys, "report", run_dir, "--split", "val")
    assert rc == 1 and f"{cam}: cannot read CAM file" in out
    cam.unlink()
    npy = crafted_cls_labels(data / "cls_labels.npy", marker)
    rc, out = _cli(capsys, "report", run_dir, "--split", "val")
    assert rc == 1 and f"{npy}: refused" in out
    assert not marker.exists()


def test_a_cam_file_is_an_npz_only(tmp_path):
    """A pickled ``<id>.npy`` (the unreleased pre-.npz format) is not taken for a CAM file."""
    from wsss.utils.io import find_cam_file, save_cam

    numpy1_npy(tmp_path / "a.npy", {"keys": np.array([2]), "cam": np.ones((1, 8, 8), np.float16)})
    assert find_cam_file(tmp_path, "a") is None
    save_cam(tmp_path, "a", np.ones((3, 8, 8)), np.array([0, 1, 0]))
    assert find_cam_file(tmp_path, "a") == tmp_path / "a.npz"


def test_unsafe_split_ids_are_refused_and_nothing_is_written_outside_the_run(data, tmp_path, capsys):
    split = data / "ImageSets/Segmentation/train.txt"
    lines = split.read_text().splitlines()
    split.write_text("\n".join([*lines[:3], "../../../escaped", *lines[3:]]) + "\n")
    before = sorted(p for p in tmp_path.rglob("*"))
    rc, out = _cli(capsys, "check-data", data)
    assert rc == 1 and f"{split}:4: unsafe image id '../../../escaped'" in out
    run = tmp_path / "runs" / "run"
    for extra in ((), ("--skip-check",)):
        rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run), "--quiet", *extra)
        assert rc == 1 and f"{split}:4: unsafe image id" in out
    assert sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(run)) == before
    assert not (run / "checkpoints").exists()


# ---- report HTML ------------------------------------------------------------------------------------

TEMPLATE_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "h1",
    "h2",
    "h3",
    "p",
    "code",
    "b",
    "nav",
    "a",
    "table",
    "tr",
    "th",
    "td",
    "figure",
    "figcaption",
    "img",
    "pre",
    "ul",
    "li",
}
SCRIPT = "<script>alert(1)</script>"


class Tags(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_report_escapes_every_string_from_data_and_config(run_dir, data, capsys):
    """A class, an id, a config value and a metric name carrying markup show as text, never as tags."""
    names = (data / "classes.txt").read_text().split()
    names[1] = SCRIPT
    (data / "classes.txt").write_text("\n".join(names) + "\n")
    evil_id = 'x"><i>id<i>'  # a legal file name: no separator, no whitespace (ids end at whitespace)
    val = data / "ImageSets/Segmentation/val.txt"
    first = val.read_text().split()[0]
    for folder in ("JPEGImages", "SegmentationClass"):
        src = next((data / folder).glob(f"{first}.*"))
        shutil.copy(src, data / folder / f"{evil_id}{src.suffix}")
    val.write_text(val.read_text() + evil_id + "\n")
    for i in val.read_text().split():
        _copy_mask_as_prediction(data, run_dir, i)
    cfg = (run_dir / "config.yaml").read_text().replace("method: ", f"notes: '{SCRIPT}'\nmethod: ", 1)
    (run_dir / "config.yaml").write_text(cfg)
    (run_dir / "metrics.jsonl").write_text(
        '{"step": 2, "loss/loss": 1.0, "loss/<b>x</b>": 0.5, "lr": 0.1}\n'
        '{"step": 3, "val": {"<script>alert(3)</script>miou": 50.0, "miou": 40.0}}\n'
    )
    rc, out = _cli(capsys, "report", run_dir, "--split", "val")
    assert rc == 0, out
    page = (run_dir / "report/index.html").read_text()
    parsed = Tags(page)
    tags = {t for t, _ in parsed.tags}
    assert "script" not in tags and tags <= TEMPLATE_TAGS, tags - TEMPLATE_TAGS
    assert not any(k.startswith("on") for _, a in parsed.tags for k in a)
    text = "".join(parsed.text)
    assert SCRIPT in text and "<script>alert(3)</script>miou" in text and "loss/<b>x</b>" in text
    assert evil_id in text  # the caption, shown as text
    config = page[page.index('<h2 id="config">') :]
    assert "notes: " in config and SCRIPT not in config and html.escape(SCRIPT) in config


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
