"""Faults of a trial of the data paths: inputs deleted by an output, a best model
replaced by a worse one, a folder that is not a run written into, outputs of one setting passing for
another's, non-finite CAMs, duplicated split ids. One case per defect; tiny data, seconds per case."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_overrides
from faults_helpers import CONFIG
from faults_helpers import cli as _cli
from faults_helpers import one_error_line as _one_error_line
from wsss.core.checkpoint import save_checkpoint
from wsss.core.config import load_config
from wsss.core.errors import UsageError
from wsss.utils.io import per_id_path, save_label_png, save_npz
from wsss.utils.runlock import JOB_LOCK_FILE

# ---- 7: a non-finite CAM ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_cam_is_refused_naming_the_file(run_dir, capsys, value):
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")[0] == 0
    path = per_id_path(run_dir / "cams" / "val", "val_00003", ".npz")
    with np.load(path) as d:
        keys, cam = d["keys"], d["cam"].copy()
    cam[...] = value  # all-NaN once became all class 1 in `pseudo`
    save_npz(path, keys=keys, cam=cam)
    rc, out = _cli(capsys, "pseudo", run_dir, "--split", "val", "--refine", "none", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and str(path) in line and "non-finite" in line, out
    assert not (run_dir / "pseudo" / "val" / "val_00003.png").exists()
    rc, out = _cli(capsys, "sweep-bkg", run_dir, "--split", "val", "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and str(path) in line and "non-finite" in line, out


# ---- 8: a split listing an id twice ----------------------------------------------------------------------


def test_eval_scores_a_repeated_split_id_once_with_a_warning_naming_the_file_and_ids(data, tmp_path, capsys):
    split = data / "ImageSets" / "Segmentation" / "val.txt"
    ids = split.read_text().split()
    assert len(ids) == 8
    split.write_text("\n".join([*ids, ids[1], ids[1], ids[4]]) + "\n")  # 11 lines, 8 images
    preds = tmp_path / "preds"
    preds.mkdir()
    for i in ids:
        shutil.copy(data / "SegmentationClass" / f"{i}.png", preds / f"{i}.png")
    rc, out = _cli(capsys, "eval", preds, "--data-root", data, "--split", "val", "--json", tmp_path / "m.json")
    assert rc == 0, out
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["n_images"] == 8 and result["meta"]["repeated_ids"] == [ids[1], ids[4]]
    warning = next(ln for ln in out.splitlines() if ln.startswith("warning: "))
    assert str(split) in warning and ids[1] in warning and ids[4] in warning and "once" in warning, out


# ---- 1: prepare folder never deletes an input ---------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overwrite", [True, False])
def test_prepare_folder_refuses_masks_inside_out_and_deletes_nothing(tmp_path, capsys, overwrite):
    """The reporter's case: the masks in OUT/SegmentationClass, then ``--overwrite``: OUT was removed, masks
    included, and the command failed on the masks it had just deleted."""
    images, out = tmp_path / "imgs", tmp_path / "ds"
    masks = out / "SegmentationClass"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(images / f"im{i}.jpg")
        save_label_png(masks / f"im{i}.png", np.ones((16, 16), np.uint8))
    (tmp_path / "l.csv").write_text("image,labels\n" + "".join(f"im{i}.jpg,cat\n" for i in range(4)))
    (tmp_path / "classes.txt").write_text("background\ncat\n")
    before = _tree(tmp_path)
    rc, out_text = _cli(
        capsys,
        "prepare",
        "folder",
        "--images",
        images,
        "--labels",
        tmp_path / "l.csv",
        "--classes",
        tmp_path / "classes.txt",
        "--masks",
        masks,
        "--out",
        out,
        "--quiet",
        *(["--overwrite"] if overwrite else []),
    )
    line = _one_error_line(out_text)
    assert rc == 1 and f"{masks}: the input of --masks is {masks}, an output" in line, out_text
    assert _tree(tmp_path) == before  # every input is where it was


def test_prepare_folder_refuses_a_classes_file_an_overwrite_would_delete(tmp_path, capsys):
    images, out = tmp_path / "imgs", tmp_path / "ds"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(images / f"im{i}.jpg")
    (tmp_path / "l.csv").write_text("image,labels\n" + "".join(f"im{i}.jpg,cat\n" for i in range(4)))
    (tmp_path / "classes.txt").write_text("background\ncat\n")
    argv = ["prepare", "folder", "--images", images, "--labels", tmp_path / "l.csv", "--out", out, "--quiet"]
    assert _cli(capsys, *argv, "--classes", tmp_path / "classes.txt")[0] == 0
    before = _tree(tmp_path)
    rc, text = _cli(capsys, *argv, "--classes", out / "classes.txt", "--overwrite")  # the dataset's own list
    line = _one_error_line(text)
    assert rc == 1 and f"{out / 'classes.txt'}: the input of --classes is {out / 'classes.txt'}" in line, text
    assert _tree(tmp_path) == before


# ---- 2: best.pt and the best score of a resume --------------------------------------------------------


@pytest.fixture
def scripted_validation(monkeypatch):
    """Validation scores in the order given (``scores.extend``), instead of a real validation: the order of
    last.pt, validation and best.pt is what is tested, not a model."""
    scores: list[float] = []
    monkeypatch.setattr("wsss.engine.trainer.validate", lambda *a, **k: {"cam_miou": scores.pop(0) if scores else 0.0})
    return scores


def _train(capsys, data, run, *over: str, allow: bool = False) -> tuple[int, str]:
    args = tiny_overrides(data, run, **{"train.ckpt_iters": 2, "train.eval_iters": 2, "train.log_iters": 1})
    return _cli(
        capsys, "train", CONFIG, *args, *over, "--quiet", "--skip-check", *(["--allow-config-change"] if allow else [])
    )


def _step_of(path: Path) -> int:
    return int(torch.load(path, weights_only=False)["step"])


def test_a_resume_keeps_best_pt_when_the_new_score_is_below_it(data, tmp_path, capsys, scripted_validation):
    """last.pt of step 4 is written before step 4's validation: it stored the best of step 2 (0.5), not
    step 4's 0.9, and a resume's 0.7 at step 5 replaced best.pt (the 0.9 model) with a worse one."""
    run = tmp_path / "run"
    scripted_validation.extend([0.5, 0.9])  # steps 2 and 4
    rc, out = _train(capsys, data, run, "train.max_iters=4")
    assert rc == 0 and "best val mIoU 0.90" in out, out
    assert _step_of(run / "checkpoints" / "best.pt") == 4
    rc, out = _train(capsys, data, run, "train.max_iters=4")  # the finished run again: its best is best.pt's
    assert rc == 0 and "best val mIoU 0.90" in out, out
    scripted_validation.extend([0.7])  # step 5
    rc, out = _train(capsys, data, run, "train.max_iters=5", allow=True)
    assert rc == 0 and "step 5, best val mIoU 0.90" in out, out
    assert _step_of(run / "checkpoints" / "best.pt") == 4


def test_a_resume_after_a_failed_best_pt_write_scores_against_the_best_pt_on_disk(
    data, tmp_path, capsys, scripted_validation, monkeypatch
):
    """best.pt of step 4 (0.9) fails on a full disk: the model on disk is step 2's (0.5), so a resume's
    0.7 is the best there is and replaces it."""
    import errno

    import wsss.core.checkpoint as checkpoint

    run = tmp_path / "run"
    scripted_validation.extend([0.5, 0.9])
    real_save = checkpoint.save_checkpoint

    def full_disk_at_step_4(state, path):
        if Path(path).name == "best.pt" and state["step"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(state, path)

    monkeypatch.setattr("wsss.engine.trainer.save_checkpoint", full_disk_at_step_4)
    rc, out = _train(capsys, data, run, "train.max_iters=4")
    assert rc == 1 and "No space left on device" in _one_error_line(out), out
    monkeypatch.setattr("wsss.engine.trainer.save_checkpoint", real_save)
    assert _step_of(run / "checkpoints" / "best.pt") == 2
    scripted_validation.extend([0.7])
    rc, out = _train(capsys, data, run, "train.max_iters=5", allow=True)
    assert rc == 0 and "step 5, best val mIoU 0.70" in out, out
    assert _step_of(run / "checkpoints" / "best.pt") == 5


def test_a_fresh_training_keeps_an_earlier_best_pt_aside(data, tmp_path, capsys, scripted_validation):
    """No last.pt: the training starts at step 0, and the best.pt of the earlier one in the folder would pass
    for this one's model until this one validates better (or at all)."""
    run = tmp_path / "run"
    scripted_validation.extend([0.5, 0.9])
    assert _train(capsys, data, run, "train.max_iters=4")[0] == 0
    (run / "checkpoints" / "last.pt").unlink()
    scripted_validation.extend([0.2, 0.3])
    rc, out = _train(capsys, data, run, "train.max_iters=4")
    assert rc == 0 and "best val mIoU 0.30" in out and "kept as" in out, out
    assert _step_of(run / "checkpoints" / "best.pt.1") == 4  # the earlier training's, kept
    assert _step_of(run / "checkpoints" / "best.pt") == 4 and not (run / "checkpoints" / "best.pt.2").exists()


# ---- 3: a folder that is not a run, and a run started again from step 0 -----------------------------------


def test_train_refuses_a_folder_that_holds_files_but_no_run_unless_overwrite(
    data, tmp_path, capsys, scripted_validation
):
    folder = tmp_path / "U"
    folder.mkdir()
    (folder / "config.yaml").write_text("notes\n")
    (folder / "metrics.jsonl").write_text("mine\n")
    rc, out = _train(capsys, data, folder, "train.max_iters=2")
    line = _one_error_line(out)
    assert rc == 1 and f"{folder}: run.dir is a folder that holds files (config.yaml, metrics.jsonl)" in line, out
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "metrics.jsonl"]
    assert (folder / "config.yaml").read_text() == "notes\n" and (folder / "metrics.jsonl").read_text() == "mine\n"
    scripted_validation.extend([0.5])
    rc, out = _train(capsys, data, folder, "train.max_iters=2", "--overwrite")
    assert rc == 0, out
    assert (folder / "metrics.jsonl.1").read_text() == "mine\n"  # kept aside, not appended to
    assert load_config(folder / "config.yaml").train.max_iters == 2
    for empty_or_new in (tmp_path / "new", tmp_path / "empty"):  # a new or empty folder needs nothing
        if empty_or_new.name == "empty":
            empty_or_new.mkdir()
        scripted_validation.extend([0.5])
        assert _train(capsys, data, empty_or_new, "train.max_iters=2")[0] == 0


def test_a_training_from_step_0_in_a_run_folder_starts_metrics_jsonl_anew(data, tmp_path, capsys, scripted_validation):
    run = tmp_path / "run"
    scripted_validation.extend([0.5, 0.9])
    assert _train(capsys, data, run, "train.max_iters=4")[0] == 0
    first = (run / "metrics.jsonl").read_text()
    shutil.rmtree(run / "checkpoints")  # the run is a run still (its lock file); the training starts at step 0
    scripted_validation.extend([0.2, 0.3])
    rc, out = _train(capsys, data, run, "train.max_iters=4")
    assert rc == 0 and "from step 0" in out, out
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(4) == 2  # one training: a loss line and a val line at step 4
    assert (run / "metrics.jsonl.1").read_text() == first


# ---- 6: an output folder holds the outputs of one setting ------------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    """The folder's files and their bytes, but for the lock a job takes, whose pid and time every job rewrites."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != JOB_LOCK_FILE}


def _refused(capsys, folder: Path, setting: str, *argv: object) -> None:
    """``argv`` is refused in one line naming ``folder`` and the differing ``setting``; ``folder`` unchanged."""
    before = _files(folder)
    rc, out = _cli(capsys, *argv, "--quiet")
    line = _one_error_line(out)
    assert rc == 1 and f"{folder}: holds outputs made with other settings" in line and setting in line, out
    assert "--overwrite" in line and _files(folder) == before


def test_pseudo_with_another_refiner_is_refused_and_overwrite_redoes_only_its_folder(run_dir, capsys):
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")[0] == 0
    pseudo, cams = run_dir / "pseudo" / "val", run_dir / "cams" / "val"
    assert _cli(capsys, "pseudo", run_dir, "--split", "val", "--refine", "none", "--quiet")[0] == 0
    _refused(capsys, pseudo, "refine: 'none' -> 'par'", "pseudo", run_dir, "--split", "val")
    _refused(
        capsys,
        pseudo,
        "cam.high_thre: 0.35 -> 0.5",
        "pseudo",
        run_dir,
        "--split",
        "val",
        "--refine",
        "none",
        "--levels",
        "0.5/0.25",
    )
    assert _cli(capsys, "pseudo", run_dir, "--split", "val", "--refine", "none", "--quiet")[0] == 0  # the same: goes on
    cams_before = _files(cams)
    rc, out = _cli(capsys, "pseudo", run_dir, "--split", "val", "--overwrite", "--quiet")
    assert rc == 0, out
    assert _files(cams) == cams_before  # the input is never cleared
    fresh = run_dir / "fresh"
    shutil.copytree(run_dir / "checkpoints", fresh / "checkpoints")
    shutil.copy(run_dir / "config.yaml", fresh / "config.yaml")
    shutil.copytree(cams, fresh / "cams" / "val")
    assert _cli(capsys, "pseudo", fresh, "--split", "val", "--quiet")[0] == 0
    assert _files(pseudo) == _files(fresh / "pseudo" / "val")  # PAR's labels, as a fresh run writes them


def test_cam_with_other_scales_or_another_model_is_refused(run_dir, capsys):
    cams = run_dir / "cams" / "val"
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")[0] == 0
    _refused(
        capsys, cams, "infer.cam_scales: [1.0] -> [1.0, 0.5]", "cam", run_dir, "--split", "val", "--scales", "1.0,0.5"
    )
    last = run_dir / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    save_checkpoint({**state, "step": 2}, last)  # trained further
    _refused(capsys, cams, "model.step: 1 -> 2", "cam", run_dir, "--split", "val")
    seeds = run_dir / "cam_labels" / "val"
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--overwrite", "--quiet")[0] == 0
    # the seeds at the run's level from the saved (float16) CAMs, as every rewrite makes them: a level typed is the
    # same level as the run's, so the way there is through another level (seeds made with the CAMs, from float32
    # maps, may differ from them at a pixel on the threshold)
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--bkg-thre", "0.3", "--quiet")[0] == 0
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--bkg-thre", "0.15", "--quiet")[0] == 0
    at_config = {p.name: p.read_bytes() for p in seeds.glob("*.png")}
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--bkg-thre", "0.3", "--quiet")[0] == 0  # rewrites the seeds
    assert json.loads((seeds / ".settings.json").read_text())["bkg_thre"] == 0.3
    assert {p.name: p.read_bytes() for p in seeds.glob("*.png")} != at_config
    # the run's own level again (a rerun of a route, a killed job finished): every seed rewritten at it, from the
    # saved CAMs, and stamped so; never 0.3 seeds under a 0.15 stamp or a mix of the two
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")[0] == 0
    assert json.loads((seeds / ".settings.json").read_text())["bkg_thre"] == 0.15
    assert {p.name: p.read_bytes() for p in seeds.glob("*.png")} == at_config


def test_a_key_value_word_on_a_run_is_the_flag_it_stands_for(run_dir, capsys):
    """A command that reads a run takes KEY=VALUE words, merged over a copy of its saved config:
    ``cam.bkg_thre=0.3`` makes the seeds ``--bkg-thre 0.3`` makes, and the run's config.yaml stays as it was."""
    saved = (run_dir / "config.yaml").read_text()
    seeds = run_dir / "cam_labels" / "val"
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")[0] == 0  # the CAMs, saved (float16)
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--bkg-thre", "0.3", "--quiet")[0] == 0  # from them
    by_flag = {p.name: p.read_bytes() for p in seeds.glob("*.png")}
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")[0] == 0  # back at the run's own level
    assert {p.name: p.read_bytes() for p in seeds.glob("*.png")} != by_flag
    rc, out = _cli(capsys, "cam", run_dir, "--split", "val", "cam.bkg_thre=0.3")
    assert rc == 0 and "seeds (background 0.3)" in out
    assert json.loads((seeds / ".settings.json").read_text())["bkg_thre"] == 0.3
    assert {p.name: p.read_bytes() for p in seeds.glob("*.png")} == by_flag
    assert (run_dir / "config.yaml").read_text() == saved
    # a word that is no setting of the run is one line naming it
    rc, out = _cli(capsys, "cam", run_dir, "--split", "val", "cam.bkg_thres=0.3", "--quiet")
    assert rc != 0 and "cam.bkg_thres" in _one_error_line(out)


def test_predict_with_other_scales_crf_or_tagger_is_refused(run_dir, capsys):
    other = run_dir.parent / "other"
    shutil.copytree(run_dir, other)
    crf = run_dir / "predictions_crf" / "val"
    assert _cli(capsys, "predict", run_dir, "--split", "val", "--crf", "--quiet")[0] == 0
    _refused(
        capsys, crf, "scales: [1.0] -> [1.0, 0.5]", "predict", run_dir, "--split", "val", "--crf", "--scales", "1.0,0.5"
    )
    tagged = run_dir / "predictions_tagged" / "val"
    assert _cli(capsys, "predict", run_dir, "--split", "val", "--tags-from", run_dir, "--quiet")[0] == 0
    _refused(
        capsys,
        tagged,
        f"tags.run.dir: {str(run_dir)!r} -> {str(other)!r}",
        "predict",
        run_dir,
        "--split",
        "val",
        "--tags-from",
        other,
    )
    _refused(
        capsys,
        tagged,
        "tags.threshold: 0.5 -> 0.3",
        "predict",
        run_dir,
        "--split",
        "val",
        "--tags-from",
        run_dir,
        "--tag-threshold",
        "0.3",
    )


def test_predict_ensemble_of_other_members_is_refused(run_dir, capsys):
    """``predictions_ens2`` named the count alone: ``--ensemble B`` then ``--ensemble A`` kept B's masks."""
    other = run_dir.parent / "other"
    shutil.copytree(run_dir, other)
    ens = run_dir / "predictions_ens2" / "val"
    assert _cli(capsys, "predict", run_dir, "--split", "val", "--ensemble", other, "--quiet")[0] == 0
    _refused(
        capsys,
        ens,
        f"ensemble.0.dir: {str(other)!r} -> {str(run_dir)!r}",
        "predict",
        run_dir,
        "--split",
        "val",
        "--ensemble",
        run_dir,
    )
    rc, out = _cli(capsys, "predict", run_dir, "--split", "val", "--ensemble", run_dir, "--overwrite", "--quiet")
    assert rc == 0, out


def test_a_stamp_without_outputs_asserts_nothing(tmp_path):
    """A job that stamped its folder, then stopped on a bad option before any output (``pseudo --refine affinity``
    without ``--affinity-run``), does not block the next job of other settings."""
    from wsss.runs.stamps import check_stamp, claim_folder, read_stamp

    folder = tmp_path / "pseudo" / "train"
    claim_folder(folder, {"refine": "affinity", "affinity_run": None})
    check_stamp(folder, {"refine": "affinity", "affinity_run": "/runs/aff"})
    claim_folder(folder, {"refine": "affinity", "affinity_run": "/runs/aff"})
    assert read_stamp(folder) == {"refine": "affinity", "affinity_run": "/runs/aff"}
    (folder / "a.png").write_bytes(b"label")
    with pytest.raises(UsageError, match="affinity_run: '/runs/aff' -> None"):
        check_stamp(folder, {"refine": "affinity", "affinity_run": None})


def test_a_job_into_a_folder_another_job_writes_is_refused_naming_it(run_dir, capsys):
    """Two jobs into one output folder: the second is refused while the first holds the folder (else one could
    stamp it between the other's check and its writes, and masks of one setting would pass for another's)."""
    from wsss.utils.runlock import job_folder_lock

    preds = run_dir / "predictions" / "val"
    with job_folder_lock(preds, "wsss predict"):  # the first job (flock is per open file: this process conflicts)
        rc, out = _cli(capsys, "predict", run_dir, "--split", "val", "--quiet")
        line = _one_error_line(out)
        assert rc == 1 and line.startswith(f"error: {preds}: wsss predict is writing into this folder (pid "), out
        assert f"pid {os.getpid()} on " in line and str(preds / JOB_LOCK_FILE) in line
        assert sorted(p.name for p in preds.iterdir()) == [JOB_LOCK_FILE]  # nothing written, no stamp
    assert not preds.exists()  # the lock that made the folder took it away again: it held no output
    assert _cli(capsys, "predict", run_dir, "--split", "val", "--quiet")[0] == 0  # released: the job runs
    assert (preds / JOB_LOCK_FILE).is_file() and any(n.endswith(".png") for n in _files(preds))


def test_cam_decides_whether_to_rewrite_every_seed_under_its_lock(run_dir, capsys, monkeypatch):
    """``wsss cam`` reads the seeds folder's stamp (at another level, every seed is rewritten) while it holds the
    folder: before, it read it first, and a job that restamped the folder in between left the decision stale."""
    import fcntl

    from wsss.runs import jobs

    seeds, held = run_dir / "cam_labels" / "val", []
    read_stamp = jobs.read_stamp

    def watched(folder):  # is the seeds folder's lock held (by this process's job) when its stamp is read?
        if Path(folder) == seeds:
            try:
                fd = os.open(seeds / JOB_LOCK_FILE, os.O_RDWR)  # another open file: a held flock conflicts
            except FileNotFoundError:
                held.append(False)
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held.append(False)
                except BlockingIOError:
                    held.append(True)
                finally:
                    os.close(fd)
        return read_stamp(folder)

    monkeypatch.setattr(jobs, "read_stamp", watched)
    assert _cli(capsys, "cam", run_dir, "--split", "val", "--quiet")[0] == 0
    assert held == [True]


def test_a_jobs_lock_is_not_an_output_and_overwrite_keeps_it(tmp_path):
    """The lock file left in a job's folder neither counts as an output of other settings nor is cleared by
    ``--overwrite``, which runs while this job holds it (removed, another job could lock a new file)."""
    from wsss.runs.stamps import check_stamp, claim_folder
    from wsss.utils.runlock import job_folder_lock

    folder = tmp_path / "pseudo" / "train"
    with job_folder_lock(folder, "wsss pseudo"):
        claim_folder(folder, {"refine": "none"})
    check_stamp(folder, {"refine": "par"})  # the stamp and the lock: nothing made with the first settings
    (folder / "a.png").write_bytes(b"label")
    with job_folder_lock(folder, "wsss pseudo"):
        assert claim_folder(folder, {"refine": "par"}, overwrite=True)
        assert sorted(p.name for p in folder.iterdir()) == sorted([".settings.json", JOB_LOCK_FILE])
    held = job_folder_lock(folder, "wsss pseudo")
    with pytest.raises(UsageError, match="wsss pseudo is writing into this folder"), held, job_folder_lock(folder, "x"):
        pass


def test_the_refusal_names_a_section_present_on_one_side_once():
    """``predict --images`` with --crf over masks made without: "crf: None -> {...}", not each parameter of the CRF
    as a setting of its own; sections on both sides (an ensemble's members) compared key by key."""
    from wsss.runs.stamps import differences

    crf = {"bi_rgb_std": 5.0, "bi_w": 4.0, "bi_xy_std": 121.0}
    assert differences({"crf": None, "scales": [1.0]}, {"crf": crf, "scales": [1.0]}) == (
        "crf: None -> {bi_rgb_std: 5.0, bi_w: 4.0, ...}"
    )
    old, new = {"ensemble": [{"dir": "a", "step": 1}]}, {"ensemble": [{"dir": "b", "step": 1}, {"dir": "c"}]}
    assert differences(old, new) == "ensemble.0.dir: 'a' -> 'b'; ensemble.1: '(none)' -> {dir: 'c'}"
    assert differences({"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 0, "b": 0, "c": 0, "d": 0}, limit=2) == (
        "a: 1 -> 0; b: 2 -> 0; and 2 more"
    )


# ---- 4: an id is done when all its outputs are there -------------------------------------------------------


def test_predict_save_probs_writes_the_probabilities_of_ids_whose_masks_exist(run_dir, capsys):
    assert _cli(capsys, "predict", run_dir, "--split", "val", "--quiet")[0] == 0
    masks = _files(run_dir / "predictions" / "val")
    rc, out = _cli(capsys, "predict", run_dir, "--split", "val", "--save-probs")
    assert rc == 0, out
    probs = run_dir / "probs" / "val"
    assert sorted(p.stem for p in probs.glob("*.npy")) == sorted(n[:-4] for n in masks if n.endswith(".png"))
    assert _files(run_dir / "predictions" / "val") == masks  # the same masks, written again
    (probs / "val_00002.npy").unlink()  # e.g. its write failed on a full disk
    rc, out = _cli(capsys, "predict", run_dir, "--split", "val", "--save-probs")
    assert rc == 0 and (probs / "val_00002.npy").is_file() and "1 written, 7 skipped" in out, out


def test_an_output_folder_without_a_stamp_is_taken_with_a_warning(run_dir, capsys):
    """A folder of an older wsss (no stamp): its outputs are kept and taken as this job's, with a warning."""
    assert _cli(capsys, "predict", run_dir, "--split", "val", "--quiet")[0] == 0
    folder = run_dir / "predictions" / "val"
    (folder / ".settings.json").unlink()
    rc, out = _cli(capsys, "predict", run_dir, "--split", "val", "--quiet")
    assert rc == 0 and f"warning: {folder}: its outputs have no settings stamp" in out, out
    assert (folder / ".settings.json").is_file()
