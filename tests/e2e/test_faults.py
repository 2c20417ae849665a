"""Faults and odd inputs as a new user meets them, one case per defect of the trial: each
command either works or stops with one ``error:`` line naming the file, and loses nothing it finished.
Tiny data (the session's synthetic set, copied), seconds per case."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, tiny_overrides
from faults_helpers import CONFIG
from faults_helpers import classes_of as _classes
from faults_helpers import cli as _cli
from faults_helpers import one_error_line as _one_error_line
from faults_helpers import write_checkpoint as _checkpoint
from wsss.cli import main
from wsss.core.config import load_config
from wsss.core.errors import ConfigError, ConfigWarning, DataError, UsageError
from wsss.data import VOCDataset, check_dataset
from wsss.data.voc import read_split
from wsss.engine.validate import validate
from wsss.methods import build_method
from wsss.utils.io import read_image, read_label_png, save_label_png

# ---- 1, 5: how images are decoded --------------------------------------------------------------------


def test_16bit_gray_png_is_scaled_not_clipped_to_white(tmp_path):
    gray = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")  # Pillow's 16-bit gray
    rgb = read_image(tmp_path / "g16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.rint(gray / 257.0).astype(np.uint8))  # exact integer scaling
    assert rgb.min() == 0 and rgb.max() == 255 and (rgb[..., 0] == rgb[..., 2]).all()


def _rotated_jpeg(path: Path, stored_hw: tuple[int, int]) -> np.ndarray:
    """A JPEG stored ``stored_hw`` with EXIF orientation 6 (shown turned 90 degrees clockwise)."""
    img = np.zeros((*stored_hw, 3), np.uint8)
    img[: stored_hw[0] // 4] = 255  # a white band at the stored top
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(path, exif=exif.tobytes(), quality=95)
    return img


def test_exif_orientation_is_applied_and_check_data_names_it(data):
    img_path = data / "JPEGImages" / "val_00000.jpg"
    mask = read_label_png(data / "SegmentationClass" / "val_00000.png")  # 64x64: make the photo 64 high, 96 wide
    _rotated_jpeg(img_path, (64, 96))
    upright = read_image(img_path)
    assert upright.shape == (96, 64, 3)  # shown turned: the stored top band is now the right-hand band
    assert upright[:, -8:].mean() > 200 and upright[:, :8].mean() < 50
    save_label_png(data / "SegmentationClass" / "val_00000.png", np.zeros((64, 96), np.uint8) + (mask.max() > 0))
    report = check_dataset(data, "val", progress=False)
    msg = next(p for p in report.problems if "val_00000.png" in p)
    assert "mask size 96x64 differs from the image (64x96)" in msg and "EXIF orientation 6" in msg


# ---- 2, 11: a checkpoint of another run ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["predict", "cam"])
def test_cam_and_predict_refuse_a_checkpoint_of_another_class_count(run_dir, capsys, command):
    cfg = load_config(run_dir / "config.yaml")
    last = run_dir / "checkpoints" / "last.pt"
    _checkpoint(cfg, last, [f"c{i}" for i in range(21)])  # e.g. copied from a VOC run
    rc, out = _cli(capsys, command, run_dir, "--split", "val", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and f"{last}: checkpoint trained with 21 classes" in line and "has 7" in line
    assert not (run_dir / "predictions").exists() and not (run_dir / "cams").exists()


def test_an_empty_checkpoint_is_named_as_empty(run_dir, capsys):
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    rc, out = _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")
    assert rc == 1 and "last.pt: checkpoint file is empty (0 bytes" in _one_error_line(out)


def test_train_resume_from_a_checkpoint_of_another_size_is_one_line(run_dir, data, capsys):
    cfg = load_config(run_dir / "config.yaml")
    cfg.model.backbone_kwargs = {**cfg.model.backbone_kwargs, "embed_dim": 16}
    _checkpoint(cfg, run_dir / "checkpoints" / "last.pt", _classes(data))
    rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run_dir), "--quiet")
    assert rc == 1 and "last.pt: checkpoint does not fit the model" in _one_error_line(out)


# ---- 6: --allow-config-change -------------------------------------------------------------------------


def test_allow_config_change_records_nothing_when_the_checkpoint_cannot_resume(run_dir, data, capsys):
    other = tiny_overrides(
        data,
        run_dir,
        **{"model.backbone_kwargs": "{patch_size: 8, depth: 2, embed_dim: 16, num_heads: 2, img_size: 64}"},
    )
    rc, out = _cli(capsys, "train", CONFIG, *other, "--quiet", "--allow-config-change")
    assert rc == 1 and "checkpoint does not fit the model" in _one_error_line(out)
    assert not (run_dir / "config_changes.jsonl").exists()


# ---- 3, 4: sizes the network cannot take as they are -------------------------------------------------


def test_images_of_odd_sizes_train_validate_and_infer(data, tmp_path, capsys, one_thread):
    """A 100x75 and a 1x1 val image (patch 8): validation at full size, cam and predict all work."""
    for id, (h, w) in {"val_00000": (75, 100), "val_00001": (1, 1)}.items():
        img = Image.open(data / "JPEGImages" / f"{id}.jpg").convert("RGB").resize((w, h))
        img.save(data / "JPEGImages" / f"{id}.jpg")
        mask = Image.fromarray(read_label_png(data / "SegmentationClass" / f"{id}.png")).resize((w, h), Image.NEAREST)
        save_label_png(data / "SegmentationClass" / f"{id}.png", np.asarray(mask))
    run = tmp_path / "run"
    over = tiny_overrides(data, run, **{"train.max_iters": 2, "train.eval_iters": 2, "data.val_max_images": 3})
    rc, out = _cli(capsys, "train", CONFIG, *over, "--quiet")
    assert rc == 0, out
    assert (run / "checkpoints" / "last.pt").is_file()
    val = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in ln]
    assert val and val[-1]["val"]["n_images"] == 3
    for command in ("cam", "predict"):
        rc, out = _cli(capsys, command, run, "--split", "val", "--quiet")
        assert rc == 0, out
    assert read_label_png(run / "predictions/val/val_00000.png").shape == (75, 100)
    assert read_label_png(run / "cam_labels/val/val_00001.png").shape == (1, 1)


def test_validation_is_bounded_in_size_and_stops_on_request(data, one_thread):
    big = np.random.default_rng(0).integers(0, 255, (1200, 1800, 3), dtype=np.uint8)
    Image.fromarray(big).save(data / "JPEGImages" / "val_00000.jpg")
    save_label_png(data / "SegmentationClass" / "val_00000.png", np.zeros((1200, 1800), np.uint8))
    cfg = load_config(CONFIG, tiny_overrides(data, data / "run", **{"data.val_max_images": 1, "data.val_max_side": 96}))
    ds = VOCDataset(data, "val")
    method = build_method(cfg, ds.class_names)
    seen = []
    cam_maps = method.cam_maps
    method.cam_maps = lambda x: (seen.append(tuple(x.shape[-2:])), cam_maps(x))[1]
    res = validate(method, ds, cfg, torch.device("cpu"), progress=False)
    assert res is not None and res["n_images"] == 1
    assert seen and max(max(s) for s in seen) <= 96  # never the 1800-px side
    seen.clear()
    assert validate(method, ds, cfg, torch.device("cpu"), progress=False, should_stop=lambda: True) is None
    assert not seen  # stopped before the first image


# ---- 7: one writer per run directory ------------------------------------------------------------------


def test_a_second_train_on_a_locked_run_gets_one_line_naming_the_holder(data, tmp_path, capsys):
    from wsss.utils.runlock import run_dir_lock

    run = tmp_path / "run"
    with run_dir_lock(run):  # another process holding the run (flock is per open file: this conflicts)
        rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run), "--quiet")
        line = _one_error_line(out)
        assert rc == 1 and f"the run is in use by wsss train (pid {os.getpid()} on" in line
    assert not (run / "metrics.jsonl").exists() and not (run / "config.yaml").exists()


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path):
    from wsss.utils.runlock import run_dir_lock

    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("pid=999999999\nhost=gone\nsince=yesterday\n")  # left by a SIGKILLed run
    taken = r"taken over the lock of another process \(pid 999999999 on gone"
    with pytest.warns(ConfigWarning, match=taken), run_dir_lock(run) as path:
        assert f"pid={os.getpid()}" in path.read_text()
    with run_dir_lock(run):  # released on exit
        pass


# ---- 8, 12: ids and class lists -----------------------------------------------------------------------


def test_a_photo_named_with_spaces_gets_an_id_without_and_split_lists_do_not_cut_ids(tmp_path, capsys):
    """A photo named ``my photo.jpg`` is legal (phones and screenshots name them so): its id is ``my_photo``, said in
    a warning, its label and mask found by its own name, and the dataset passes check-data. Two names of one id, or
    whitespace where the photos keep their names (``--image-mode none``), are refused naming the files."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for name in ("my photo.jpg", "b.jpg", "c \td.png"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(images / name)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 1
    save_label_png(masks / "my photo.png", mask)
    (tmp_path / "labels.csv").write_text("image,labels\nmy photo.jpg,cat\nb.jpg,cat\nc \td,cat\n")
    (tmp_path / "classes.txt").write_text("background\ncat\n")
    args = [
        "prepare",
        "folder",
        "--images",
        images,
        "--labels",
        tmp_path / "labels.csv",
        "--classes",
        tmp_path / "classes.txt",
        "--masks",
        masks,
        "--out",
        tmp_path / "out",
        "--quiet",
    ]
    rc, out = _cli(capsys, *args)
    data = tmp_path / "out"
    assert rc == 0 and "'my photo.jpg' -> my_photo" in out and "'c \\td.png' -> c_d" in out, out
    assert sorted(p.name for p in (data / "JPEGImages").iterdir()) == ["b.jpg", "c_d.png", "my_photo.jpg"]
    assert read_label_png(data / "SegmentationClass/my_photo.png").tolist() == mask.tolist()
    assert read_split(data, "train") == ["b", "c_d", "my_photo"]  # one mask: no val split
    assert check_dataset(data).ok
    # one id of two names; whitespace where the photos keep their names: refused, nothing written
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(images / "my_photo.png")
    rc, out = _cli(capsys, *args[:-3], "--out", tmp_path / "two", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and f"{images}:" in line and "'my_photo'" in line
    assert "my photo.jpg" in line and "my_photo.png" in line
    (images / "my_photo.png").unlink()
    rc, out = _cli(capsys, *args[:-3], "--out", tmp_path / "none", "--image-mode", "none", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and f"{images}:" in line and "whitespace" in line and "my photo.jpg" in line
    assert not (tmp_path / "two").exists() and not (tmp_path / "none").exists()
    split = tmp_path / "ImageSets" / "Segmentation" / "train.txt"
    split.parent.mkdir(parents=True)
    split.write_text("a\nmy photo\n")
    with pytest.raises(DataError, match=r"train\.txt:2: 'my photo' is not one id"):
        read_split(tmp_path, "train")


def test_a_blank_line_inside_classes_txt_is_refused_with_its_line(data, capsys):
    names = _classes(data)
    (data / "classes.txt").write_text("\n".join([*names[:3], "", *names[3:]]) + "\n")
    rc, out = _cli(capsys, "check-data", data)
    assert rc == 1 and f"{data / 'classes.txt'}:4: blank line in the class list" in out


# ---- 9, 10: settings and unwritable outputs -----------------------------------------------------------


@pytest.mark.parametrize(
    "override", ["train.max_iters=0", "train.max_iters=-5", "train.batch_size=0", "train.batch_size=-4"]
)
def test_non_positive_lengths_and_batches_are_refused_before_anything_is_written(data, tmp_path, capsys, override):
    run = tmp_path / "run"
    rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run), override, "--quiet")
    key, value = override.split("=")
    assert rc == 2 and f"{key} must be a positive integer, got {value}" in _one_error_line(out)
    assert not run.exists()


def test_an_unknown_empty_map_fallback_is_refused_before_anything_is_written(data, tmp_path, capsys):
    run = tmp_path / "run"
    rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run), "infer.cam_empty_fallback=zeros", "--quiet")
    line = _one_error_line(out)
    assert rc == 2 and "infer.cam_empty_fallback must be one of none, minmax, peak_odds, got 'zeros'" in line
    assert not run.exists()


def test_a_full_disk_during_a_checkpoint_save_is_one_line(data, tmp_path, capsys, monkeypatch):
    def full_disk(state, f):  # what torch.save does on a full disk: its error raised while handling ENOSPC
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "fresh"
    rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run), "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and str(run / "checkpoints") in line and "cannot write (No space left on device)" in line
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()  # finished outputs stay
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_a_read_only_run_dir_for_cam_is_one_line(run_dir, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    from wsss.core.errors import OutputError

    monkeypatch.setattr("wsss.core.files.tempfile.mkstemp", read_only)
    rc, out = _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and str(run_dir / "cams" / "val") in line and "cannot write (Read-only file system)" in line
    with pytest.raises(OutputError):
        save_label_png(run_dir / "x.png", np.zeros((2, 2), np.uint8))
    assert issubclass(OutputError, OSError) and not issubclass(UsageError, OSError)


# ---- 13, 14: what a kill leaves behind ----------------------------------------------------------------


def _prepare_inputs(tmp_path: Path) -> list[str]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(images / f"im{i}.png")
        save_label_png(masks / f"im{i}.png", np.ones((16, 16), np.uint8))
    (tmp_path / "labels.csv").write_text("image,labels\n" + "".join(f"im{i}.png,cat\n" for i in range(4)))
    (tmp_path / "classes.txt").write_text("background\ncat\n")
    files = ["--labels", str(tmp_path / "labels.csv"), "--classes", str(tmp_path / "classes.txt")]
    return [
        "prepare",
        "folder",
        "--images",
        str(images),
        *files,
        "--masks",
        str(masks),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]


def test_prepare_writes_its_split_lists_last(tmp_path, monkeypatch):
    argv = _prepare_inputs(tmp_path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill between the masks and the label table

    monkeypatch.setattr("wsss.data.prepare.folder.write_cls_labels", killed)
    assert main(argv) == 130
    out = tmp_path / "out"
    assert not (out / "ImageSets").exists()  # no split lists: check-data cannot call it a VOC dataset
    assert not check_dataset(out, progress=False).ok


def test_leftover_tmp_files_are_removed_by_prepare_and_report(tmp_path, run_dir, data, capsys):
    argv = _prepare_inputs(tmp_path)
    stale = tmp_path / "out" / "SegmentationClass" / ".im0.png.abc123.wsss.tmp"  # atomic_write's name
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a png")
    assert main(argv) == 0
    assert not stale.exists()
    for id in VOCDataset(data, "val").ids:  # a report needs predictions: the masks themselves will do
        save_label_png(
            run_dir / "predictions" / "val" / f"{id}.png", read_label_png(data / "SegmentationClass" / f"{id}.png")
        )
    stale = run_dir / "report" / "images" / ".grid_val_00000.png.abc123.wsss.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a png")
    rc, out = _cli(capsys, "report", run_dir, "--max-images", "1")
    assert rc == 0, out
    assert not stale.exists()


# ==== the second trial =====================================================================
# Signals (2: SIGTERM in train; 7: children end with their parent) are in test_faults_signals.py.


# ---- 1: wsss synth on an existing dataset ------------------------------------------------------------


def test_synth_refuses_a_folder_holding_a_dataset_unless_overwrite(data, capsys):
    before = {p: p.read_bytes() for p in (data / "ImageSets/Segmentation").iterdir()}
    n_images = len(list((data / "JPEGImages").iterdir()))
    rc, out = _cli(capsys, "synth", data, "--train", "4", "--val", "2", "--size", "48")
    line = _one_error_line(out)
    assert rc == 1 and f"{data}: already holds a dataset" in line and "--overwrite" in line
    assert {p: p.read_bytes() for p in (data / "ImageSets/Segmentation").iterdir()} == before  # nothing touched
    assert len(list((data / "JPEGImages").iterdir())) == n_images
    rc, out = _cli(capsys, "synth", data, "--train", "4", "--val", "2", "--size", "48", "--overwrite")
    assert rc == 0, out
    assert len(list((data / "JPEGImages").iterdir())) == 6  # no image of the old dataset left beside the new
    assert check_dataset(data, progress=False).ok


# ---- 3, 4, 8: settings checked once, for config files, overrides and flags alike ------------------------


@pytest.mark.parametrize("value", ["2", "-1", "nan"])
def test_cam_bkg_thre_flag_outside_0_1_is_refused(run_dir, capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["cam", str(run_dir), "--split", "val", "--bkg-thre", value, "--quiet"])
    assert e.value.code == 2
    assert "argument --bkg-thre: cam.bkg_thre must be a level between 0 and 1" in capsys.readouterr().err
    assert not (run_dir / "cam_labels").exists()


@pytest.mark.parametrize(
    "override",
    [
        "cam.bkg_thre=2",
        "cam.high_thre=1.5",
        "cam.low_thre=-0.1",
        "cam.bkg_thre=.nan",
        "train.lr=.nan",
        "train.lr=-1",
        "train.lr=0",
    ],
)
def test_levels_and_learning_rates_out_of_range_are_one_line_before_anything_is_written(
    data, tmp_path, capsys, override
):
    run = tmp_path / "run"
    rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run), override, "--quiet")
    key = override.split("=")[0]
    line = _one_error_line(out)
    assert rc == 2 and f"command-line override '{override}': {key} must be a" in line
    assert not run.exists()
    preset = tmp_path / "preset.yaml"  # the same value in a config file: the same check
    section, name = key.split(".")
    preset.write_text(f"_base_: {CONFIG}\n{section}:\n  {name}: {override.split('=')[1]}\n")
    with pytest.raises(ConfigError, match=rf"preset\.yaml: {key} must be a"):
        load_config(preset)


@pytest.mark.parametrize("value", ["-1", "0", "1,0"])
def test_predict_scales_flag_is_checked_as_the_config_key(run_dir, capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["predict", str(run_dir), "--split", "val", "--scales", value, "--quiet"])
    assert e.value.code == 2
    msg = "infer.scales must be a non-empty list of positive scales"
    assert f"argument --scales: {msg}" in capsys.readouterr().err
    assert not (run_dir / "predictions").exists()
    with pytest.raises(ConfigError, match=msg):  # the config path says the same
        load_config(run_dir / "config.yaml", [f"infer.scales=[{value}]"])


# ---- 5, 10: wsss eval ----------------------------------------------------------------------------------


def _predictions_from_masks(data: Path, folder: Path) -> list[str]:
    ids = VOCDataset(data, "val").ids
    for id in ids:
        save_label_png(folder / f"{id}.png", read_label_png(data / "SegmentationClass" / f"{id}.png"))
    return ids


def test_eval_refuses_ground_truth_values_above_the_class_count_naming_the_mask(data, tmp_path, capsys):
    ids = _predictions_from_masks(data, tmp_path / "pred")
    gt_path = data / "SegmentationClass" / f"{ids[1]}.png"
    gt = read_label_png(gt_path)
    gt[:3, :3] = 12  # 7 classes
    save_label_png(gt_path, gt)
    rc, out = _cli(capsys, "eval", tmp_path / "pred", "--data-root", data, "--split", "val")
    line = _one_error_line(out)
    assert rc == 1 and f"{gt_path}: ground-truth values" in line and "12" in line and "0..6" in line


def test_eval_json_to_a_folder_is_one_line_before_evaluating(data, tmp_path, capsys):
    _predictions_from_masks(data, tmp_path / "pred")
    folder = tmp_path / "metrics"
    folder.mkdir()
    rc, out = _cli(capsys, "eval", tmp_path / "pred", "--data-root", data, "--split", "val", "--json", folder)
    line = _one_error_line(out)
    assert rc == 1 and f"{folder}: is a folder" in line and "mIoU" not in out  # refused before the evaluation
    assert list(folder.iterdir()) == []


# ---- 6, 14: prepare folder: a re-run, and the val split of the masked photos ---------------------------


def _photos(tmp_path: Path, n: int, n_masks: int) -> list[str]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((16, 16, 3), 5 * i, np.uint8)).save(images / f"im{i:02d}.png")
    for i in range(n_masks):
        save_label_png(masks / f"im{i:02d}.png", np.ones((16, 16), np.uint8))
    (tmp_path / "labels.csv").write_text("image,labels\n" + "".join(f"im{i:02d}.png,cat\n" for i in range(n)))
    (tmp_path / "classes.txt").write_text("background\ncat\n")
    return [
        "prepare",
        "folder",
        "--images",
        str(images),
        "--labels",
        str(tmp_path / "labels.csv"),
        "--classes",
        str(tmp_path / "classes.txt"),
        "--quiet",
    ]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_folder_rerun_is_refused_or_equals_a_fresh_run(tmp_path, capsys):
    argv = _photos(tmp_path, 8, 4)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    rc, text = _cli(capsys, *argv, "--masks", tmp_path / "masks", "--out", out)
    assert rc == 0, text
    assert (out / "ImageSets/Segmentation/val.txt").is_file()
    before = _tree(out)
    rc, text = _cli(capsys, *argv, "--out", out)  # again, without the masks
    line = _one_error_line(text)
    assert rc == 1 and f"{out}: already holds a dataset" in line and "--overwrite" in line
    assert _tree(out) == before  # refused: nothing changed
    rc, text = _cli(capsys, *argv, "--out", out, "--overwrite")
    assert rc == 0, text
    assert _cli(capsys, *argv, "--out", fresh)[0] == 0
    assert _tree(out) == _tree(fresh)  # no val.txt, no old masks: what a fresh run writes
    assert check_dataset(out, progress=False).ok


def test_prepare_folder_val_split_is_a_share_of_the_masked_photos_and_leaves_half_in_train(tmp_path, capsys):
    argv = _photos(tmp_path, 40, 10)
    masked = {f"im{i:02d}" for i in range(10)}
    rc, text = _cli(capsys, *argv, "--masks", tmp_path / "masks", "--out", tmp_path / "a")
    assert rc == 0, text
    val, train = read_split(tmp_path / "a", "val"), read_split(tmp_path / "a", "train")
    assert len(val) == 2 and set(val) <= masked  # 20 % of the 10 masked photos
    assert len(masked & set(train)) == 8 and not set(val) & set(train)
    rc, text = _cli(capsys, *argv, "--masks", tmp_path / "masks", "--out", tmp_path / "b", "--val-fraction", "0.9")
    assert rc == 0, text
    assert len(read_split(tmp_path / "b", "val")) == 5  # at most half of the masked photos
    assert len(masked & set(read_split(tmp_path / "b", "train"))) == 5


def test_prepare_folder_with_masks_that_match_no_photo_makes_no_val_split_and_says_so(tmp_path, capsys):
    """`--masks` whose files match no photo made a val split of photos without masks; a route then failed with a
    false "mask missing for id ... (the other images of its split have masks)"."""
    argv = _photos(tmp_path, 8, 0)
    masks = tmp_path / "masks"
    for i in range(3):  # the masks of other names than the photos'
        save_label_png(masks / f"other{i}.png", np.ones((16, 16), np.uint8))
    rc, text = _cli(capsys, *argv, "--masks", masks, "--out", tmp_path / "out")
    assert rc == 0, text
    assert f"warning: no mask of {masks} matches a photo of {tmp_path / 'images'} (by its file name): no val" in text
    assert not (tmp_path / "out/ImageSets/Segmentation/val.txt").exists()
    assert len(read_split(tmp_path / "out", "train")) == 8
    assert check_dataset(tmp_path / "out", progress=False).ok


# ---- 9: pseudo labels of a segmentation training ---------------------------------------------------------


def _seg_overrides(data: Path, run: Path, pseudo: Path) -> list[str]:
    return [
        f"data.root={data}",
        f"run.dir={run}",
        f"data.pseudo_dir={pseudo}",
        "data.crop_size=64",
        "model.backbone_kwargs={channels: [8, 16, 16, 32], stem_width: 8}",
        "train.batch_size=4",
        "train.max_iters=4",
        "train.eval_iters=100",
        "train.ckpt_iters=100",
        "train.log_iters=2",
        "infer.scales=[1.0]",
        "run.threads=1",
    ]


def _pseudo_from_masks(data: Path, folder: Path) -> list[str]:
    ids = VOCDataset(data, "train").ids
    for id in ids:
        save_label_png(folder / f"{id}.png", read_label_png(data / "SegmentationClass" / f"{id}.png"))
    return ids


def test_an_rgb_pseudo_label_is_found_at_start_and_named_in_one_line_mid_run(data, tmp_path, capsys):
    ids = _pseudo_from_masks(data, tmp_path / "pseudo")
    bad = tmp_path / "pseudo" / f"{ids[3]}.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(bad)  # an RGB PNG, e.g. a coloured visualisation
    over = _seg_overrides(data, tmp_path / "run", tmp_path / "pseudo")
    seg = REPO / "configs/deeplab/synthetic_cpu.yaml"
    rc, out = _cli(capsys, "train", seg, *over, "data.num_workers=0", "--quiet")
    assert rc == 1 and f"{bad}: mask has mode RGB" in out and "failed check-data (pseudo labels" in out
    assert "Traceback" not in out and not (tmp_path / "run" / "checkpoints").exists()
    # skipped check: met in a DataLoader worker, it is still one line naming the file
    rc, out = _cli(capsys, "train", seg, *over, "data.num_workers=1", "--skip-check", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and line.startswith(f"error: {bad}: mask has mode RGB")


def test_a_truncated_image_met_in_a_loader_worker_is_one_line(data, tmp_path, capsys):
    path = data / "JPEGImages" / "train_00004.jpg"
    path.write_bytes(path.read_bytes()[:200])  # cut off: decodes the header, not the pixels
    over = tiny_overrides(data, tmp_path / "run", **{"data.num_workers": 1, "run.threads": 1})
    rc, out = _cli(capsys, "train", CONFIG, *over, "--skip-check", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and line.startswith(f"error: {path}: cannot read image")


# ---- 11, 12: a byte-order mark at the start of a text file ---------------------------------------------


def test_a_bom_in_a_split_list_and_in_classes_txt_is_stripped(data, capsys):
    split = data / "ImageSets/Segmentation/train.txt"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())  # what Notepad writes as "UTF-8 with BOM"
    classes = data / "classes.txt"
    classes.write_bytes(b"\xef\xbb\xbf" + classes.read_bytes())
    assert read_split(data, "train")[0] == "train_00000"
    assert VOCDataset(data, "train").class_names[0] == "background"
    rc, out = _cli(capsys, "check-data", data)
    assert rc == 0 and "OK: no problems found" in out and "index 0 must be the background" not in out


# ---- 13: a file that is not weights ----------------------------------------------------------------------


def test_import_of_a_text_file_says_it_is_not_a_weight_file(data, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my training notes\nlr 6e-5\n")
    rc, out = _cli(
        capsys,
        "import",
        "seco",
        notes,
        "--config",
        REPO / "configs/seco/synthetic_cpu.yaml",
        "--out",
        tmp_path / "run",
        f"data.root={data}",
    )
    line = _one_error_line(out)
    assert rc == 1 and f"{notes}: not a pretrained weight file saved by PyTorch" in line
    assert "a text file (it starts 'my training notes')" in line and "pop from empty list" not in line
    assert not (tmp_path / "run").exists()


# ==== the issue-42 session's own trial: full disks, tiny images, partial masks ==========================


def _no_space(path: Path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def test_a_full_disk_stops_a_per_id_job_at_its_first_write(run_dir, capsys, monkeypatch):
    """predict --save-probs writes the probabilities in the per-id step: on a full disk every id used to be
    computed and "failed" one by one; the job now stops at the first, with one line naming the file."""
    from wsss.core.files import output_error

    cfg = load_config(run_dir / "config.yaml")
    calls = []

    def full(path, array, **kwargs):
        calls.append(path)
        raise output_error(path, _no_space(path))

    monkeypatch.setattr("wsss.runs.jobs.save_npy", full)
    assert cfg.infer.crf_workers == 0
    rc, out = _cli(capsys, "predict", run_dir, "--split", "val", "--save-probs", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and "cannot write (No space left on device)" in line and str(run_dir / "probs" / "val") in line
    assert len(calls) == 1 and "failed" not in out


def test_metrics_jsonl_on_a_full_disk_keeps_whole_lines_and_names_the_file(tmp_path, monkeypatch):
    from wsss.core.errors import OutputError
    from wsss.engine.hooks import append_line

    log = tmp_path / "metrics.jsonl"
    append_line(log, json.dumps({"step": 1}))

    class HalfWritten:  # what a full disk does to a buffered append: part of the line lands, then ENOSPC
        def __init__(self, path, mode):
            self.f = open(path, mode)  # noqa: SIM115 - closed in __exit__, as open()'s own context

        def __enter__(self):
            return self

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise _no_space(log)

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("wsss.engine.hooks.open", HalfWritten, raising=False)
    with pytest.raises(OutputError, match=rf"{log}: cannot write \(No space left on device\)"):
        append_line(log, json.dumps({"step": 2, "loss": 0.5}))
    assert [json.loads(ln) for ln in log.read_text().splitlines()] == [{"step": 1}]  # no half record


def test_tensorboards_writer_thread_dies_without_a_traceback_during_training(tmp_path, monkeypatch):
    import queue
    import threading
    import types

    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    from wsss.engine.hooks import TensorBoardWriter

    class FullDisk:
        def write(self, data):
            raise _no_space(tmp_path / "events")

        def flush(self):
            pass

    shown = []  # what threading.excepthook shows (pytest's own hook would turn it into a warning)
    monkeypatch.setattr(threading, "excepthook", lambda args: shown.append(args.exc_type))
    before = threading.excepthook
    hook = TensorBoardWriter(tmp_path / "tb", optimizer=None)
    hook.trainer = types.SimpleNamespace(step=0)
    hook.open()
    q: queue.Queue = queue.Queue()
    q.put(b"event")
    thread = _AsyncWriterThread(q, FullDisk(), flush_secs=120)
    thread.start()
    thread.join(timeout=10)
    other = threading.Thread(target=lambda: 1 / 0)  # any other thread's error is shown as before
    other.start()
    other.join()
    hook.after_train()
    assert shown == [ZeroDivisionError]  # the writer thread's OSError is not shown
    assert threading.excepthook is before  # restored


def test_a_split_with_some_masks_passes_check_data_and_sweep_bkg_scores_the_masked(tmp_path, capsys):
    """prepare folder --masks keeps masked photos in train beside unmasked ones: check-data used to call every
    unmasked train photo a problem (so `wsss train` refused the dataset) and sweep-bkg stopped at the first."""
    argv = _photos(tmp_path, 12, 6)
    out = tmp_path / "out"
    rc, text = _cli(capsys, *argv, "--masks", tmp_path / "masks", "--out", out)
    assert rc == 0, text
    report = check_dataset(out, "train", progress=False)
    assert report.ok and any("5 of its 11 images have a mask" in w for w in report.warnings), report.format()
    val = read_split(out, "val")
    assert len(val) == 1
    (out / "SegmentationClass" / f"{val[0]}.png").unlink()  # the val split of a training needs every mask
    assert not check_dataset(out, "val", progress=False, full_masks=True).ok


def test_sweep_bkg_scores_the_images_that_have_a_mask(run_dir, data, capsys):
    assert _cli(capsys, "cam", run_dir, "--split", "train", "--quiet")[0] == 0
    removed = VOCDataset(data, "train").ids[:10]
    for id in removed:
        (data / "SegmentationClass" / f"{id}.png").unlink()
    rc, out = _cli(capsys, "sweep-bkg", run_dir, "--split", "train", "--quiet")
    assert rc == 0, out
    res = json.loads((run_dir / "bkg_sweep" / "train.json").read_text())
    assert res["n_images"] == 14 and res["n_without_mask"] == 10


def test_pseudo_labels_of_one_pixel_images(run_dir, data, capsys):
    """Tiny photos (1 px high): PAR's half-resolution pass had a 0-px side and stopped `wsss pseudo`."""
    for id in VOCDataset(data, "val").ids[:2]:
        Image.fromarray(np.zeros((1, 2, 3), np.uint8)).save(data / "JPEGImages" / f"{id}.jpg")
        save_label_png(data / "SegmentationClass" / f"{id}.png", np.zeros((1, 2), np.uint8))
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")[0] == 0
    rc, out = _cli(capsys, "pseudo", run_dir, "--split", "val", "--quiet")
    assert rc == 0, out
    first = VOCDataset(data, "val").ids[0]
    assert read_label_png(run_dir / "pseudo" / "val" / f"{first}.png").shape == (1, 2)
