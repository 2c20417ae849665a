"""The step runner that ``wsss route`` and experiments/real_route.py share (pipelines/steps.py): each step timed
and logged (a stopped one too), its output transcribed with its exit status, the settings record checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsss.core.errors import DataError, UsageError
from wsss.pipelines.steps import StepRunner, changed_settings, computed_words


def test_a_step_is_timed_logged_and_transcribed_a_failed_one_too(tmp_path):
    runner = StepRunner(tmp_path, command="test", transcript=tmp_path / "route.log")
    result, seconds = runner.run("cam", "wsss cam RUN", lambda: print("said") or 7)
    assert result == 7 and seconds == runner.times["cam"] >= 0

    def fails() -> None:
        raise UsageError("bad word")

    with pytest.raises(UsageError):
        runner.run("cam", "wsss cam RUN --again", fails)
    lines = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [(e["step"], e["finished"]) for e in lines] == [("cam", True), ("cam", False)]
    assert runner.seconds_over_runs()["cam"] == pytest.approx(sum(e["seconds"] for e in lines))
    log = (tmp_path / "route.log").read_text()
    assert log.startswith("$ wsss cam RUN\nsaid\n# ended ") and ", exit 0\n" in log
    assert "$ wsss cam RUN --again\nerror: bad word\n" in log and log.rstrip().endswith(f"exit {UsageError.exit_code}")


def test_the_settings_record_is_checked_and_overwrite_clears_only_the_folders_own_outputs(tmp_path):
    runner = StepRunner(tmp_path / "out", command="test")
    runner.out.mkdir()
    assert runner.recorded() is None
    runner.record({"folds": 3, "overrides": ["train.lr=0.1"]})
    runner.settle({"folds": 3, "overrides": ["train.lr=0.1"]}, overwrite=False, own=["cls"], inputs=[])
    (runner.out / "cls").mkdir()
    with pytest.raises(UsageError, match=r"other settings \(folds: 3 -> 2\)"):
        runner.settle({"folds": 2, "overrides": ["train.lr=0.1"]}, overwrite=False, own=["cls"], inputs=[])
    with pytest.raises(UsageError, match="an input of this command inside"):
        runner.settle({"folds": 2}, overwrite=True, own=["cls"], inputs=[runner.out / "cls" / "photos"])
    runner.settle({"folds": 2}, overwrite=True, own=["cls"], inputs=[tmp_path / "photos"])
    assert not (runner.out / "cls").exists() and (runner.out / "route.json").is_file()
    (runner.out / "route.json").write_text("[]")
    with pytest.raises(DataError, match="not a route's record"):
        runner.recorded()


@pytest.mark.parametrize(
    "record", ['{"settings": []}', '{"settings": "abc"}', '{"settings": null}', "[]", "{", '{"other": 1}']
)
def test_a_record_whose_settings_are_no_mapping_is_one_line(tmp_path, record):
    runner = StepRunner(tmp_path, command="test")
    (tmp_path / "route.json").write_text(record)
    with pytest.raises(DataError) as e:
        runner.settle({"folds": 2}, overwrite=False, own=[], inputs=[])
    assert str(e.value) == (
        f"{tmp_path / 'route.json'}: not a route's record (no mapping of its settings: unreadable, "
        "or written by something else); use another --out"
    )


def _route_folder(out: Path) -> dict[str, list[str]]:
    """A route's folder as its steps leave it (a run with a per-id job's outputs, a dataset, the new photos' masks),
    with a file of the user's in each: (what wsss made, what the user put there)."""
    made = [
        "cls/config.yaml",
        "cls/metrics.jsonl",
        "cls/checkpoints/last.pt",
        "cls/checkpoints/best.pt",
        "cls/tensorboard/events.out.tfevents.1.host.1.0",
        "cls/cams/train/a.npz",
        "cls/cams/train/b.npz",
        "cls/cams/train/.settings.json",
        "cls/cams/train/.sources.json",
        "cls/cams/train/.job.lock",
        "cls/report/index.html",
        "cls/report/loss.png",
        "cls/report/images/train/grid_a.png",
        "cls/report/.inputs",
        "data/ImageSets/Segmentation/train.txt",
        "data/JPEGImages/a.jpg",
        "data/JPEGImages/b.jpg",
        "data/SegmentationClass/a.png",
        "data/classes.txt",
        "data/cls_labels.npy",
        "data/.route_prepared",
        "new_masks/n1.png",
        "new_masks/.settings.json",
        "new_masks/.sources.json",
        "new_masks/overlay/n1.jpg",
        "new_masks/overlay/.sources.json",
        "new_masks/.n1.png.x1y2.wsss.tmp",
        "masks/a.png",
        "masks/.sources.json",
        "summary.json",
    ]
    mine = [
        "cls/notes.txt",
        "cls/cams/train/notes.txt",
        "new_masks/hand.png",
        "data/JPEGImages/mine.jpg",
        "new_masks/overlay/.hidden.jpg",
        "masks/hand.png",
    ]
    for name in [*made, *mine, "cls/.lock"]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    (out / "cls/cams/train/.sources.json").write_text(json.dumps({"a": [1, 2], "b": [1, 2]}))
    (out / "new_masks/.sources.json").write_text(json.dumps({"n1": [1, 2]}))
    (out / "new_masks/overlay/.sources.json").write_text(json.dumps({"n1": [1, 2]}))
    (out / "masks/.sources.json").write_text(json.dumps({"a": [1, 2]}))  # the route's gathered masks
    (out / "data/ImageSets/Segmentation/train.txt").write_text("a\nb\n")
    return {"made": made, "mine": mine}


def test_overwrite_removes_the_files_wsss_made_and_keeps_the_users(tmp_path):
    """`route --overwrite` rmtree'd its folders whole: a notes.txt in R/cls/, a hand.png in R/new_masks/ went with
    them. It removes what wsss made there by the rule of a per-id job's --overwrite (an output is a known file);
    the user's stay, listed, and the folders left empty go."""
    runner = StepRunner(tmp_path / "out", command="test")
    files = _route_folder(runner.out)
    runner.record({"folds": 3})
    own = ["cls", "data", "masks", "new_masks", "seg", "summary.json"]
    runner.settle({"folds": 2}, overwrite=True, own=own, inputs=[])
    assert not [n for n in files["made"] if (runner.out / n).exists()]
    assert all((runner.out / n).read_text() == "x" for n in files["mine"])
    assert sorted(str(p.relative_to(runner.out)) for p in runner.kept) == sorted(files["mine"])
    assert not (runner.out / "cls/checkpoints").exists() and not (runner.out / "data/ImageSets").exists()
    assert (runner.out / "cls/.lock").is_file()  # beside the user's file, cls/ stays a run the route trains into
    assert not (runner.out / "seg").exists()


def test_settings_compare_what_is_computed_only():
    words = ["run.device=cuda", "infer.crf_workers=4", "data.num_workers=2", "run.threads=1", "train.lr=0.1"]
    assert computed_words(words) == ["train.lr=0.1"]
    assert changed_settings({"a": 1, "b": 2}, {"a": 1, "c": 3}) == ["b", "c"]


def test_the_routes_gathered_masks_are_named_and_removed_as_its_own(tmp_path):
    from wsss.pipelines.route_calls import gather_masks
    from wsss.pipelines.steps import remove_made

    pred, folder = tmp_path / "predictions_crf/val", tmp_path / "masks"
    pred.mkdir(parents=True)
    for id in ("a", "b"):
        (pred / f"{id}.png").write_bytes(id.encode())
    assert gather_masks(pred, folder) == 2
    assert set(json.loads((folder / ".sources.json").read_text())) == {"a", "b"}
    (folder / "hand.png").write_text("mine")
    assert remove_made(folder) == [folder / "hand.png"]
    assert sorted(p.name for p in folder.iterdir()) == ["hand.png"]
