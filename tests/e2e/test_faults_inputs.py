"""Faults and odd inputs of the third fault trial (those not of the data paths) and of its helper's own trial:
each command either works or stops with one ``error:`` line naming the file, never a traceback, and loses nothing
it finished. Tiny data (the session's synthetic set, copied), seconds per case."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, tiny_overrides
from faults_helpers import CONFIG
from faults_helpers import classes_of as _classes
from faults_helpers import cli as _cli
from faults_helpers import one_error_line as _one_error_line
from wsss.cli import main
from wsss.core.config import load_config, save_config
from wsss.data import VOCDataset
from wsss.utils.io import read_label_png, save_labelled_cam
from wsss.utils.runlock import JOB_LOCK_FILE


def _cams_from_masks(run: Path, data: Path, split: str) -> list[str]:
    """CAM files of ``split`` made from its masks (no network pass): one map per labelled class."""
    ds = VOCDataset(data, split)
    for id in ds.ids:
        keys = np.flatnonzero(ds.labels(id) > 0.5)
        mask = read_label_png(data / "SegmentationClass" / f"{id}.png")
        save_labelled_cam(run / "cams" / split, id, keys, np.stack([mask == k + 1 for k in keys]).astype(np.float32))
    return ds.ids


# ---- 13: a broken CAM file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["empty", "half"])
def test_a_truncated_cam_file_in_pseudo_is_named(run_dir, data, capsys, cut):
    ids = _cams_from_masks(run_dir, data, "val")
    bad = run_dir / "cams" / "val" / f"{ids[2]}.npz"
    blob = bad.read_bytes()
    bad.write_bytes(b"" if cut == "empty" else blob[: len(blob) // 2])  # a copy cut off, a full disk
    rc, out = _cli(capsys, "pseudo", run_dir, "--split", "val", "--refine", "none", "--quiet")
    assert "Traceback" not in out and "BadZipFile" not in out.split(str(bad))[0], out
    assert f"{bad}: cannot read CAM file" in out
    written = {p.stem for p in (run_dir / "pseudo" / "val").glob("*.png")}
    assert written == set(ids) - {ids[2]}  # the other ids are labelled
    assert rc != 0


# ---- 11: a decompression bomb ------------------------------------------------------------------------------


@pytest.fixture
def bomb_limit(monkeypatch):
    """Pillow's bomb limit lowered to the 64x64 images of the tiny set: a 100x100 file is then a "bomb" (more than
    twice the limit) without a 30000x30000 file in the test. Returns a writer of such a file."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64)

    def bomb(path: Path, mode: str = "RGB") -> Path:
        Image.new(mode, (100, 100)).save(path)
        return path

    return bomb


@pytest.mark.parametrize("command", ["cam", "predict"])
def test_a_decompression_bomb_in_cam_and_predict_is_one_line_naming_it(run_dir, data, capsys, bomb_limit, command):
    bomb = bomb_limit(data / "JPEGImages" / "val_00003.jpg")
    rc, out = _cli(capsys, command, run_dir, "--split", "val", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and str(bomb) in out and "DecompressionBombError" not in out, out
    assert "could be decompression bomb" in out and "val_00003" in line
    folder = run_dir / ("cam_labels" if command == "cam" else "predictions") / "val"
    assert len(list(folder.glob("*.png"))) == 7  # the other images are done


def test_a_decompression_bomb_given_to_viz_image_is_one_line(run_dir, tmp_path, capsys, bomb_limit):
    bomb = bomb_limit(tmp_path / "huge.png")
    rc, out = _cli(capsys, "viz", run_dir, "--image", bomb, "--classes", "boat")
    assert rc == 1 and _one_error_line(out).startswith(f"error: {bomb}: cannot read image (Image size")


@pytest.mark.parametrize("which", ["ground truth", "prediction"])
def test_a_decompression_bomb_in_eval_is_one_line(data, tmp_path, capsys, bomb_limit, which):
    from wsss.utils.io import save_label_png

    pred = tmp_path / "pred"
    for id in VOCDataset(data, "val").ids:
        save_label_png(pred / f"{id}.png", read_label_png(data / "SegmentationClass" / f"{id}.png"))
    bomb = bomb_limit((data / "SegmentationClass" if which == "ground truth" else pred) / "val_00001.png", "P")
    rc, out = _cli(capsys, "eval", pred, "--data-root", data, "--split", "val")
    assert rc == 1 and _one_error_line(out).startswith(f"error: {bomb}: cannot read mask (Image size"), out


# ---- 12: a full disk under numpy's writer ------------------------------------------------------------------


def test_a_short_write_of_save_probs_names_the_file(run_dir, capsys, monkeypatch):
    """numpy's ``tofile`` on a full disk raises "OSError: N requested and M written" (no errno, no path)."""
    real_save = np.save

    def short_save(f, array, **kwargs):  # part of the array lands, then numpy's own error
        buf = io.BytesIO()
        real_save(buf, array, **kwargs)
        f.write(buf.getvalue()[:1984])
        raise OSError(f"{len(buf.getvalue())} requested and 1984 written")

    monkeypatch.setattr(np, "save", short_save)
    rc, out = _cli(capsys, "predict", run_dir, "--split", "val", "--save-probs", "--quiet")
    line = _one_error_line(out)
    probs = run_dir / "probs" / "val"
    assert rc == 1 and f"error: {probs / 'val_00000.npy'}: cannot write (" in line and "written: a short write" in line
    # no half-written file, no temporary left (the folder's settings stamp and its photos' records are written before
    # any output, and the job's lock is taken before that)
    assert sorted(p.name for p in probs.iterdir()) == sorted([".settings.json", ".sources.json", JOB_LOCK_FILE])


def test_a_short_write_outside_the_atomic_writer_is_one_line(tmp_path, capsys, monkeypatch):
    def short(a):
        raise OSError("4096 requested and 0 written")

    monkeypatch.setattr("wsss.cli.data.cmd_check_data", short)
    rc, out = _cli(capsys, "check-data", tmp_path)
    assert rc == 1 and "cannot write (4096 requested and 0 written: a short write" in _one_error_line(out)


# ---- 14: a size no image has -------------------------------------------------------------------------------


SIDES = [
    "data.crop_size=100000000000",
    "data.val_max_side=70000",
    "infer.max_side=1000000",
    "infer.cam_input_size=65536",
]


@pytest.mark.parametrize("override", SIDES)
def test_an_absurd_size_is_refused_before_anything_is_written(data, tmp_path, capsys, override):
    run = tmp_path / "run"
    rc, out = _cli(capsys, "train", CONFIG, *tiny_overrides(data, run), override, "--quiet")
    key, value = override.split("=")
    line = _one_error_line(out)
    assert (
        rc == 2 and f"'{override}': {key} must be a side of 1 to 65535 pixels (a JPEG's largest), got {value}" in line
    )
    assert not run.exists()
    assert load_config(CONFIG, ["data.crop_size=65535", "infer.max_side=65535"]).data.crop_size == 65535  # legal


# ---- 10: what YAML's aliases expand to ---------------------------------------------------------------------


def _alias_bomb(levels: int = 6, width: int = 9) -> str:
    """``levels`` anchors of ``width`` aliases of the one before: width ** levels values in 1 kB of text."""
    rows = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    rows += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(rows)


def test_an_alias_bomb_inside_a_free_form_mapping_is_refused_at_once(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    rows = _alias_bomb().replace("\n", "\n    ")
    bomb.write_text(f"_base_: {CONFIG}\nmodel:\n  backbone_kwargs:\n    {rows}\n")
    rc, out = _cli(capsys, "config", "show", bomb)
    line = _one_error_line(out)
    assert rc == 2 and line.startswith(f"error: {bomb}: invalid YAML (its aliases expand to more than 100,000 values")
    inline = _alias_bomb().replace("\n", ", ")
    rc, out = _cli(capsys, "config", "show", CONFIG, f"model.backbone_kwargs={{{inline}}}")
    assert (
        rc == 2
        and "cannot parse the value of model.backbone_kwargs (its aliases expand to more than 100,000"
        in _one_error_line(out)
    )


@pytest.mark.parametrize("text", ["a: &a [1, *a]", "a: " + "[" * 2000 + "]" * 2000])
def test_a_recursive_alias_or_a_deep_nesting_is_one_line(tmp_path, capsys, text):
    cfg = tmp_path / "odd.yaml"
    cfg.write_text(text + "\n")
    rc, out = _cli(capsys, "config", "show", cfg)
    assert rc == 2 and _one_error_line(out).startswith(f"error: {cfg}: invalid YAML (")


def test_anchors_and_aliases_of_a_real_config_still_read(tmp_path, capsys):
    cfg = tmp_path / "anchors.yaml"
    cfg.write_text(f"_base_: {CONFIG}\ncam:\n  scales: &s [1.0, 0.5]\ninfer:\n  cam_scales: *s\n")
    assert load_config(cfg).infer.cam_scales == (1.0, 0.5)


def test_viz_out_an_existing_file_is_one_line_and_the_file_stays(run_dir, data, tmp_path, capsys):
    """`wsss viz RUN --split val --ids X --out existing_file`: FileExistsError from the mkdir of the grids' folder."""
    afile = tmp_path / "afile.txt"
    afile.write_text("mine\n")
    id = VOCDataset(data, "val").ids[0]
    rc, out = _cli(capsys, "viz", run_dir, "--split", "val", "--ids", id, "--out", afile)
    assert rc == 1 and _one_error_line(out) == (
        f"error: {afile}: is a file; --out names a folder for the grids (one PNG per image)"
    )
    assert afile.read_text() == "mine\n"


BIG = "9" * 5000  # more digits than Python converts to an int


def test_an_integer_of_thousands_of_digits_is_one_line_naming_its_key(tmp_path, run_dir, capsys):
    """A ValueError from Python's int conversion came out as a traceback (`config show`, `predict`)."""
    rc, out = _cli(capsys, "config", "show", CONFIG, f"train.max_iters={BIG}")
    line = _one_error_line(out)
    assert rc == 2 and line == (
        f"error: override 'train.max_iters={BIG[:20]}... (5000 characters)': "
        "cannot parse the value of train.max_iters (an integer of 5000 digits, more than "
        "4300 at line 1, column 1)"
    )
    rc, out = _cli(capsys, "predict", run_dir, "--split", "val", f"infer.max_side={BIG}")
    assert rc == 2 and "cannot parse the value of infer.max_side (an integer of 5000" in _one_error_line(out)
    cfg = tmp_path / "big.yaml"
    cfg.write_text(f"_base_: {CONFIG}\ntrain:\n  max_iters: {BIG}\n")
    rc, out = _cli(capsys, "config", "show", cfg)
    assert rc == 2 and _one_error_line(out) == (
        f"error: {cfg}: invalid YAML (an integer of 5000 digits, more than "
        "4300 at line 3, column 14, the value of train.max_iters)"
    )


@pytest.mark.parametrize("value", ["[1,", "!!python/object:os.system x", "{a: 1"])
def test_a_yaml_error_in_an_override_is_one_line_without_a_quoted_caret(capsys, value):
    rc, out = _cli(capsys, "config", "show", CONFIG, f"train.lr={value}")
    line = _one_error_line(out)
    assert rc == 2 and out.count("\n") == 0 and "^" not in out and "<unicode string>" not in out
    assert line.startswith(f"error: override 'train.lr={value}': cannot parse the value of train.lr (")


def test_a_base_chain_too_deep_is_named_as_such(tmp_path, capsys):
    """A chain of 1,100 `_base_` files was reported as a valid file's "invalid YAML (nested too deeply)"."""
    for i in range(200):
        (tmp_path / f"c{i}.yaml").write_text(f"_base_: c{i + 1}.yaml\n" if i < 199 else "train: {max_iters: 3}\n")
    rc, out = _cli(capsys, "config", "show", tmp_path / "c0.yaml")
    assert rc == 2 and _one_error_line(out) == (
        f"error: {tmp_path / 'c0.yaml'}: its _base_ chain is more than 64 "
        f"files deep (at {tmp_path / 'c64.yaml'}); a preset is composed of "
        "a few"
    )
    (tmp_path / "c10.yaml").write_text("train: {max_iters: 5}\n")  # a chain of 11: read
    assert load_config(tmp_path / "c0.yaml").train.max_iters == 5


# ---- 16: a class no training image has ---------------------------------------------------------------------


def _without_class(data: Path, split: str, name: str) -> None:
    """Remove class ``name`` from every image of ``split``: its label and its mask pixels (then background)."""
    from wsss.data.voc import read_cls_labels_file, write_cls_labels
    from wsss.utils.io import save_label_png

    k = _classes(data).index(name)
    table = read_cls_labels_file(data / "cls_labels.npy")
    for id in VOCDataset(data, split).ids:
        table[id][k - 1] = 0.0
        path = data / "SegmentationClass" / f"{id}.png"
        mask = read_label_png(path)
        save_label_png(path, np.where(mask == k, 0, mask))
    write_cls_labels(data, table)


def test_a_class_without_training_images_is_a_warning_of_check_data_and_train(data, tmp_path, capsys):
    _without_class(data, "train", "bottle")
    rc, out = _cli(capsys, "check-data", data)
    warning = "split 'train': no image of class 6 (bottle) among its 24 labelled images: a training on this split"
    assert rc == 0 and warning in out and "OK: no problems found" in out
    assert "split 'val': no image" not in out  # val has bottles
    over = tiny_overrides(data, tmp_path / "run", **{"train.max_iters": 2, "train.eval_iters": 100})
    rc, out = _cli(capsys, "train", CONFIG, *over, "--quiet")
    assert rc == 0 and warning in out, out  # said at the start of the training, which goes on


# ---- 15: a synth stopped part-way --------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_full_disk_during_synth_names_the_file_and_the_rerun_finishes_the_dataset(tmp_path, capsys, monkeypatch):
    import builtins

    from wsss.data import check_dataset

    out, fresh = tmp_path / "d", tmp_path / "fresh"
    argv = ["synth", "--train", "6", "--val", "2", "--size", "48", "--workers", "0"]
    real_open, opened = builtins.open, []

    def full_after_five(path, mode="r", *args, **kwargs):  # the sixth file written finds the disk full
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode and Path(path).name.startswith("."):
            opened.append(path)
            if len(opened) > 5:
                f.close()
                raise OSError(28, "No space left on device")  # what a write's OSError carries: no file name
        return f

    monkeypatch.setattr("wsss.data.synth_files.open", full_after_five, raising=False)
    rc, text = _cli(capsys, *argv[:1], out, *argv[1:])
    line = _one_error_line(text)
    assert rc == 1 and line.startswith(f"error: {out}/") and "/train_0000" in line
    assert line.endswith(": cannot write (No space left on device)")
    assert not list(out.rglob(".*.tmp"))
    monkeypatch.undo()
    rc, text = _cli(capsys, *argv[:1], out, *argv[1:])  # the same command again, without --overwrite
    assert rc == 0 and "replacing the partial dataset of a wsss synth that stopped part-way" in text, text
    assert _cli(capsys, *argv[:1], fresh, *argv[1:])[0] == 0
    assert _tree(out) == _tree(fresh) and check_dataset(out, progress=False).ok  # as if it had never stopped
    rc, text = _cli(capsys, *argv[:1], out, *argv[1:])  # a finished dataset is still refused
    assert rc == 1 and "already holds a dataset" in _one_error_line(text)


# ---- 9: a photo far larger than the network sees ----------------------------------------------------------


def _capped(run: Path, side: int) -> None:
    save_config(load_config(run / "config.yaml", [f"infer.max_side={side}"]), run / "config.yaml")


@pytest.mark.parametrize("how", ["image", "ids"])
def test_viz_computes_and_draws_at_most_infer_max_side(run_dir, data, tmp_path, capsys, monkeypatch, how):
    """viz computed the CAMs, PAR and the prediction of a 13000-px photo at its own size (3.9 GB, minutes): all
    of it is done at infer.max_side (here 48 px for a 300x180 photo), as the network's input already was."""
    from PIL import Image

    from wsss.report import viz
    from wsss.runs.run import Run
    from wsss.utils.io import save_label_png

    _capped(run_dir, 48)
    big = np.random.default_rng(0).integers(0, 255, (180, 300, 3), dtype=np.uint8)
    if how == "image":
        Image.fromarray(big).save(tmp_path / "big.png")
        argv = ["--image", tmp_path / "big.png", "--classes", "boat"]
    else:
        Image.fromarray(big).save(data / "JPEGImages" / "val_00000.jpg")
        save_label_png(data / "SegmentationClass" / "val_00000.png", np.zeros((180, 300), np.uint8))
        save_label_png(run_dir / "predictions" / "val" / "val_00000.png", np.ones((180, 300), np.uint8))  # saved
        argv = ["--ids", "val_00000"]
    seen = []
    for name in ("cam", "predict"):
        real = getattr(Run, name)
        monkeypatch.setattr(
            Run, name, lambda self, image, *a, _r=real, **k: (seen.append(image.shape), _r(self, image, *a, **k))[1]
        )
    real_par = viz._par_pseudo
    monkeypatch.setattr(
        viz, "_par_pseudo", lambda run, image, *a: (seen.append(image.shape), real_par(run, image, *a))[1]
    )
    drawn = []
    real_grid = viz.save_grid
    monkeypatch.setattr(viz, "save_grid", lambda p, path: (drawn.append(p), real_grid(p, path))[1])
    rc, out = _cli(capsys, "viz", run_dir, *argv)
    assert rc == 0, out
    assert seen and all(shape[:2] == (29, 48) for shape in seen), seen  # 180x300 at 48 px: 29x48
    (p,) = drawn
    shapes = [p.image.shape[:2], *(c.shape for _, c in p.cams), *(lab.shape for _, lab in p.labels)]
    assert set(shapes) == {(29, 48)} and (p.gt is None or p.gt.shape == (29, 48))


def test_an_image_read_at_a_capped_side_keeps_its_exif_turn_and_its_mode(tmp_path):
    from PIL import Image

    from wsss.utils.io import read_image

    img = np.zeros((640, 960, 3), np.uint8)
    img[:160] = 255  # a white band at the stored top: the right-hand band once turned (orientation 6)
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    small = read_image(tmp_path / "turned.jpg", max_side=96)
    assert small.shape == (96, 64, 3) and small[:, -8:].mean() > 200 and small[:, :8].mean() < 50
    gray16 = np.linspace(0, 65535, 300 * 500).reshape(300, 500).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")  # a mode Pillow does not reduce: shrunk after decoding
    assert read_image(tmp_path / "g16.png", max_side=50).shape == (30, 50, 3)
    assert read_image(tmp_path / "g16.png", max_side=500).shape == (300, 500, 3)  # fits: as it is


# ---- 17: a signal to a test session that runs commands in process ------------------------------------------

_INNER_TESTS = """
import os, pathlib, time

import wsss.cli.data
from wsss.cli import main


def test_a_command(monkeypatch, tmp_path):
    ready = pathlib.Path(os.environ["READY"])
    if os.environ["COMMAND"] == "train":
        run = pathlib.Path(os.environ["RUN"])
        monkeypatch.setattr("wsss.engine.hooks.PeriodicCheckpointer.after_step", lambda self, _a=__import__(
            "wsss.engine.hooks").engine.hooks.PeriodicCheckpointer.after_step: (ready.write_text("step"), _a(self))[1])
        argv = ["train", os.environ["CONFIG"], *os.environ["OVERRIDES"].split("|"), "--quiet", "--skip-check"]
    else:
        def slow(args):
            ready.write_text("sleeping")
            # short sleeps: a SIGTERM the kernel hands to another thread (torch's) does not cut a long sleep of the
            # main thread short, so Python's handler would run only when it ends (the test then timed out once)
            for _ in range(1200):
                time.sleep(0.1)
            return 0
        monkeypatch.setattr(wsss.cli.data, "cmd_check_data", slow)
        argv = ["check-data", str(tmp_path)]
    assert main(argv) == 0


def test_after_it():
    pathlib.Path(os.environ["AFTER"]).write_text("ran")
"""


@pytest.mark.parametrize("command,signum", [("sleep", "SIGINT"), ("sleep", "SIGTERM"), ("train", "SIGTERM")])
def test_a_signal_to_pytest_stops_the_session_not_one_test(synth_root, tmp_path, command, signum):
    """``main`` called in process by a test took the session's Ctrl-C (or a CI's SIGTERM) as its own: it returned
    130 / 143, the test failed and the suite went on. The signal now reaches pytest, which stops (exit 2)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "test_inner.py").write_text(_INNER_TESTS)
    over = tiny_overrides(
        synth_root, tmp_path / "run", **{"train.max_iters": 100000, "train.eval_iters": 100000, "run.threads": 1}
    )
    import wsss

    env = {
        **os.environ,
        "PYTHONPATH": str(Path(wsss.__file__).parents[1]),
        "OMP_NUM_THREADS": "1",
        "COMMAND": command,
        "READY": str(tmp_path / "ready"),
        "AFTER": str(tmp_path / "after"),
        "CONFIG": str(CONFIG),
        "OVERRIDES": "|".join(over),
        "RUN": str(tmp_path / "run"),
    }
    # the inner pytest as a user's foreground one: SIGINT at Python's own handler. A suite started in the background
    # of a shell without job control (`make test &`, nohup) inherits SIGINT ignored, which Python and wsss rightly
    # leave ignored (cli._signals_as_interrupts): the SIGINT case then waited out its timeout
    inner = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); sys.argv[0] = "
        "'pytest'; runpy.run_module('pytest', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", inner, "-q", "-s", "-p", "no:randomly", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    t0 = time.time()
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None and time.time() - t0 < 300, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    proc.send_signal(getattr(signal, signum))
    out, _ = proc.communicate(timeout=120)
    stopped = "KeyboardInterrupt" if signum == "SIGINT" else "wsss.core.errors.Terminated"  # (a KeyboardInterrupt)
    assert proc.returncode == 2 and f"!!! {stopped} !!!" in out, out[-3000:]  # pytest's "interrupted" banner
    assert not (tmp_path / "after").exists(), out[-3000:]  # the session stopped: no test after it ran
    what = "terminated (SIGTERM)" if signum == "SIGTERM" else "interrupted"
    assert f"{what}; finished outputs are kept" in out  # the command's own cleanup and message came first
    if command == "train":
        assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()  # the step was saved, as a user's Ctrl-C


def test_an_interrupt_the_caller_raises_still_returns_130(tmp_path, monkeypatch, capsys):
    def interrupted(a):
        raise KeyboardInterrupt  # raised by code (a test's stand-in for a kill), not by a signal

    monkeypatch.setattr("wsss.cli.data.cmd_check_data", interrupted)
    assert main(["check-data", str(tmp_path)]) == 130


# ==== the issue-58 helper's own trial: runs that move, data that changes, nodes that differ =================


# ---- data that changes between a stop and its resume ------------------------------------------------------


def test_a_resume_on_a_changed_training_split_says_so(data, tmp_path, capsys):
    run = tmp_path / "run"
    over = tiny_overrides(data, run, **{"train.max_iters": 2, "train.eval_iters": 100, "train.ckpt_iters": 2})
    assert _cli(capsys, "train", CONFIG, *over, "--quiet")[0] == 0
    rc, out = _cli(capsys, "train", CONFIG, *over, "--quiet")  # the same data: a resume says nothing of it
    assert rc == 0 and "changed since this checkpoint" not in out, out
    split = data / "ImageSets/Segmentation/train.txt"
    split.write_text("".join(split.read_text().splitlines(keepends=True)[:-1]))  # one image dropped meanwhile
    rc, out = _cli(capsys, "train", CONFIG, *over, "--quiet")
    last = run / "checkpoints" / "last.pt"
    assert (
        rc == 0
        and f"warning: {last}: the training data changed since this checkpoint (split 'train' lists 23 "
        "ids, not 24); the run resumes on the data as it is now"
        in out
    ), out


# ---- two processes of a torchrun job whose data differ -----------------------------------------------------

_RANK_SKEW = '''
"""custom_imports of the test: process 1 reads a train split one id shorter, as a node whose copy differs."""
import os

import wsss.data.voc as voc

if os.environ.get("RANK") == "1":
    real = voc.read_split
    voc.read_split = lambda root, split: real(root, split)[:-1] if split == "train" else real(root, split)
'''


def test_torchrun_processes_reading_different_data_stop_with_one_line(synth_root, tmp_path):
    import os
    import subprocess
    import sys

    import wsss

    (tmp_path / "rank_skew.py").write_text(_RANK_SKEW)
    run = tmp_path / "run"
    over = tiny_overrides(synth_root, run, **{"train.max_iters": 2, "custom_imports": "[rank_skew]", "run.threads": 1})
    env = {
        **os.environ,
        "PYTHONPATH": f"{Path(wsss.__file__).parents[1]}{os.pathsep}{tmp_path}",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "wsss.cli",
        "train",
        str(CONFIG),
        *over,
        "--quiet",
        "--skip-check",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    err = done.stderr
    assert done.returncode != 0, err[-3000:]
    line = (
        f"error: {synth_root.resolve()}: process 1 of this job reads other data than process 0 (split 'train' "
        "lists 23 ids, not 24); every process must read the same dataset"
    )
    # both processes, one line each; the only traceback is torchrun's agent's report of the failed workers
    assert err.count(line) == 2 and f'File "{Path(wsss.__file__).parent}' not in err, err[-3000:]
    assert not (run / "checkpoints").exists()


# ---- a run or a preset of an older wsss: an option renamed since ----------------------------------------------


def test_an_option_renamed_since_is_named_with_its_file(run_dir, tmp_path, capsys):
    old = tmp_path / "rca_old.yaml"  # RCA's proxy thresholds were *_thr before one name per concept (f1416c9)
    old.write_text(f"_base_: {REPO / 'configs/rca/synthetic_cpu.yaml'}\noptions:\n  proxy_att_thr: 0.5\n")
    rc, out = _cli(capsys, "config", "show", old)
    assert rc == 2 and _one_error_line(out) == (
        f"error: {old}: unknown config key 'options.proxy_att_thr' (did you mean 'options.proxy_att_thre'?)"
    )
    rc, out = _cli(capsys, "train", old, "run.dir=" + str(tmp_path / "never"), "--quiet")  # refused before anything
    assert rc == 2 and f"error: {old}: unknown config key 'options.proxy_att_thr'" in out
    assert not (tmp_path / "never").exists()
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("options: {}", "options: {pseudo_sorce: cam}"))  # a run's own
    rc, out = _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")
    assert rc == 2 and _one_error_line(out).startswith(
        f"error: {run_dir / 'config.yaml'}: unknown config key "
        "'options.pseudo_sorce' (did you mean 'options.pseudo_source'"
    )


# ---- a flaky filesystem: reads that fail once, then succeed -----------------------------------------------


@pytest.fixture
def flaky_reads(monkeypatch):
    """Every file opened by Pillow or numpy fails its first read with EIO (a network filesystem's hiccup); the
    paths of ``failing`` fail every time. Returns (failing, how many reads failed)."""
    import errno

    from PIL import Image

    seen: set[str] = set()
    failing: set[str] = set()
    failed = []

    def flaky(real):
        def open_(path, *args, **kwargs):
            key = str(path)
            if key in failing or key not in seen:
                seen.add(key)
                failed.append(key)
                raise OSError(errno.EIO, "Input/output error", key)
            return real(path, *args, **kwargs)

        return open_

    monkeypatch.setattr(Image, "open", flaky(Image.open))
    monkeypatch.setattr(np, "load", flaky(np.load))
    monkeypatch.setattr("wsss.core.files.READ_PAUSE_S", 0.0, raising=False)  # no waiting in the test
    return failing, failed


def test_reads_that_fail_once_are_tried_again_and_the_training_goes_on(data, tmp_path, capsys, flaky_reads):
    _, failed = flaky_reads
    over = tiny_overrides(data, tmp_path / "run", **{"train.max_iters": 2, "train.eval_iters": 2})
    rc, out = _cli(capsys, "train", CONFIG, *over, "--quiet", "--skip-check")
    assert rc == 0, out
    assert any(f.endswith(".jpg") for f in failed) and any(f.endswith(".png") for f in failed)  # images and masks


def test_a_read_that_keeps_failing_is_one_line_naming_the_file(run_dir, data, capsys, flaky_reads):
    failing, failed = flaky_reads
    ids = _cams_from_masks(run_dir, data, "val")
    bad_cam = run_dir / "cams" / "val" / f"{ids[1]}.npz"
    failing.add(str(bad_cam))
    rc, out = _cli(capsys, "pseudo", run_dir, "--split", "val", "--refine", "none", "--quiet")
    assert rc == 1 and f"{bad_cam}: cannot read CAM file (OSError: [Errno 5] Input/output error" in out, out
    assert failed.count(str(bad_cam)) == 3  # tried three times
    assert len(list((run_dir / "pseudo" / "val").glob("*.png"))) == 7  # the other CAMs were read at their 2nd try


# ---- a run folder moved or copied to another machine -------------------------------------------------------


def test_a_copied_run_names_its_gone_data_root_and_works_with_data_root(run_dir, data, tmp_path, capsys):
    moved = tmp_path / "elsewhere"
    data.rename(moved)  # the run's absolute data.root is not on this machine
    rc, out = _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and line.startswith(f"error: {data}: dataset root not found: the data.root of the run {run_dir}")
    assert "--data-root DIR" in line
    rc, out = _cli(capsys, "cam", run_dir, "--split", "val", "--data-root", moved, "--quiet")
    assert rc == 0, out


def test_training_a_moved_runs_config_is_refused_unless_run_dir_says_which(data, tmp_path, capsys):
    run, copy = tmp_path / "run", tmp_path / "copy"
    over = tiny_overrides(data, run, **{"train.max_iters": 2, "train.eval_iters": 100})
    assert _cli(capsys, "train", CONFIG, *over, "--quiet")[0] == 0
    shutil.copytree(run, copy)
    shutil.rmtree(run)  # on the new machine the run's absolute run.dir holds nothing
    rc, out = _cli(capsys, "train", copy / "config.yaml", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and line.startswith(
        f"error: {copy / 'config.yaml'}: the config of the run {copy}, but its "
        f"run.dir is {run} (a run moved or copied?); pass run.dir={copy}"
    )
    assert not run.exists()  # no new run started at the stale path
    rc, out = _cli(capsys, "train", copy / "config.yaml", f"run.dir={copy}", "--quiet")
    assert rc == 0 and f"run {copy}: step 2" in out, out  # the copy's own last.pt: nothing left to train


def test_train_on_a_run_of_weights_only_is_one_line(run_dir, capsys):
    """An imported run's last.pt (`wsss import`: step 0, weights, no optimizer) given to `wsss train`."""
    rc, out = _cli(capsys, "train", run_dir / "config.yaml", "--quiet", "--skip-check")
    line = _one_error_line(out)
    last = run_dir / "checkpoints" / "last.pt"
    assert rc == 1 and line.startswith(f"error: {last}: weights only (no optimizer state") and "pretrained" in line
