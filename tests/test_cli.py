"""The command line end to end on a tiny synthetic set, and its error paths."""

import json

import numpy as np
import pytest

from conftest import REPO, VOC_REAL_MINI, tiny_overrides
from wsss.cli import main
from wsss.utils.io import read_label_png


def test_every_command_has_help(capsys):
    for cmd in ("synth", "check-data", "train", "cam", "sweep-bkg", "pseudo", "predict", "eval", "report"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: wsss" in capsys.readouterr().out


def test_pipeline_end_to_end(synth_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(REPO / "configs/cam/synthetic_cpu.yaml"),
                *tiny_overrides(synth_root, run),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["cam", str(run), "--split", "val", "--quiet"]) == 0
    check_bkg_sweep(run, synth_root)
    for refine in ("par", "crf", "none"):
        assert main(["pseudo", str(run), "--split", "val", "--refine", refine, "--overwrite", "--quiet"]) == 0
    assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
    assert main(["predict", str(run), "--split", "val", "--crf", "--quiet"]) == 0
    ids = (synth_root / "ImageSets/Segmentation/val.txt").read_text().split()
    for folder in ("cam_labels", "pseudo", "predictions", "predictions_crf"):
        for i in ids:
            label = read_label_png(run / folder / "val" / f"{i}.png")
            assert label.shape == (64, 64)
            assert set(np.unique(label)) <= set(range(7)) | {255}
    with np.load(run / "cams/val" / f"{ids[0]}.npz", allow_pickle=False) as cam:  # pickle-free
        assert cam["cam"].dtype == np.float16 and cam["cam"].shape[1:] == (64, 64)
        assert cam["keys"].dtype == np.int64 and len(cam["keys"]) == len(cam["cam"])

    capsys.readouterr()
    out_json = tmp_path / "seg.json"
    assert (
        main(
            [
                "eval",
                str(run / "predictions/val"),
                "--data-root",
                str(synth_root),
                "--split",
                "val",
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "mIoU" in table and "boat" in table
    metrics = json.loads(out_json.read_text())
    assert 0.0 <= metrics["miou"] <= 1.0

    assert main(["report", str(run)]) == 0
    html = (run / "report/index.html").read_text()
    assert "segmentation" in html and "CAM seeds" in html
    assert f"{100 * metrics['miou']:.2f}" in html  # the report shows the same number as `wsss eval`


def test_predict_resumes_and_skips_done_ids(synth_root, tmp_path):
    run = tmp_path / "run"
    overrides = tiny_overrides(synth_root, run, **{"train.max_iters": 2, "train.eval_iters": 100})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *overrides, "--quiet"]) == 0
    assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
    ids = (synth_root / "ImageSets/Segmentation/val.txt").read_text().split()
    target = run / "predictions/val" / f"{ids[0]}.png"
    target.unlink()
    keep = run / "predictions/val" / f"{ids[1]}.png"
    before = keep.stat().st_mtime_ns
    assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
    assert target.is_file()
    assert keep.stat().st_mtime_ns == before  # done ids are not recomputed
    assert not (run / "probs").exists()  # no float maps on disk unless asked

    assert main(["predict", str(run), "--split", "val", "--overwrite", "--save-probs", "--quiet"]) == 0
    prob = np.load(run / "probs/val" / f"{ids[0]}.npy")
    assert prob.dtype == np.float16 and prob.shape == (7, 64, 64)
    np.testing.assert_allclose(prob.astype(np.float32).sum(0), 1.0, atol=1e-2)
    top2 = np.sort(prob.astype(np.float32), axis=0)[-2:]
    clear = top2[1] - top2[0] > 2e-3  # float16 rounding may swap near-ties of this 2-step model
    assert clear.mean() > 0.5 and np.array_equal(prob.argmax(0)[clear], read_label_png(target)[clear])


def test_errors_name_the_problem(tmp_path, capsys, synth_root):
    assert main(["eval", str(tmp_path / "nope"), "--data-root", str(synth_root), "--split", "val"]) == 1
    assert "nope" in capsys.readouterr().err
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), "train.max_iter=3"]) == 2
    assert "did you mean 'train.max_iters'" in capsys.readouterr().err
    assert main(["cam", str(tmp_path), "--split", "val"]) == 1
    assert "config.yaml" in capsys.readouterr().err
    assert main(["check-data", str(tmp_path)]) == 1


@pytest.mark.parametrize("threshold, ok", [("1.5", False), ("-0.1", False), ("0", True), ("1", True)])
def test_tag_threshold_is_a_score(threshold, ok, tmp_path, capsys):
    """`wsss tag --threshold` is on a softmax score: outside [0, 1] argparse refuses it (exit 2, the value named)
    before any run is read; both ends are legal (every class; only the best one)."""
    if ok:  # parsed, then the missing run is the error
        assert main(["tag", str(tmp_path / "nope"), "--split", "train", "--threshold", threshold]) == 1
        assert "nope" in capsys.readouterr().err
        return
    with pytest.raises(SystemExit) as stop:
        main(["tag", str(tmp_path / "nope"), "--split", "train", "--threshold", threshold])
    assert stop.value.code == 2
    assert f"got '{threshold}'" in capsys.readouterr().err


def test_check_data_and_eval_on_real_voc_photos(tmp_path, capsys):
    assert main(["check-data", str(VOC_REAL_MINI)]) == 0
    # the ground truth scored against itself is perfect, through the whole CLI path
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in (VOC_REAL_MINI / "SegmentationClass").glob("*.png"):
        (pred / f.name).write_bytes(f.read_bytes())
    capsys.readouterr()
    assert (
        main(
            ["eval", str(pred), "--data-root", str(VOC_REAL_MINI), "--split", "val", "--json", str(tmp_path / "m.json")]
        )
        == 0
    )
    assert json.loads((tmp_path / "m.json").read_text())["miou"] == pytest.approx(1.0)
    assert "sheep" in capsys.readouterr().out


def test_eval_scores_the_masked_photos_of_a_partly_masked_split(tmp_path, capsys):
    """The guide's `wsss eval PSEUDO --data-root DATA --split train --pseudo` on photos of which only some have a
    drawn mask (`prepare folder --masks`): those are scored, and the count is said as the report says it; a split
    with no mask at all is still an error."""
    from PIL import Image

    from wsss.utils.io import save_label_png

    photos, masks, pseudo = tmp_path / "photos", tmp_path / "masks", tmp_path / "pseudo"
    for d in (photos, masks, pseudo):
        d.mkdir()
    gt = np.zeros((4, 6), np.uint8)
    gt[:, 3:] = 1
    for k in range(5):
        Image.fromarray(np.full((4, 6, 3), 40 * k, np.uint8)).save(photos / f"p{k}.jpg")
        save_label_png(pseudo / f"p{k}.png", gt if k < 2 else np.zeros_like(gt))  # p0, p1 exact; the rest: bkg
    for k in (0, 1):
        save_label_png(masks / f"p{k}.png", gt)
    (tmp_path / "classes.txt").write_text("background\ncat\n")
    (tmp_path / "labels.csv").write_text("image,labels\n" + "".join(f"p{k}.jpg,cat\n" for k in range(5)))
    data = tmp_path / "data"
    assert (
        main(
            [
                "prepare",
                "folder",
                "--images",
                str(photos),
                "--labels",
                str(tmp_path / "labels.csv"),
                "--classes",
                str(tmp_path / "classes.txt"),
                "--masks",
                str(masks),
                "--val-fraction",
                "0",
                "--out",
                str(data),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    argv = ["eval", str(pseudo), "--data-root", str(data), "--split", "train", "--pseudo"]
    assert main([*argv, "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "scored on the 2 photos of the 5 with a ground-truth mask" in out
    scores = json.loads((tmp_path / "m.json").read_text())
    assert scores["n_images"] == 2 and scores["meta"]["listed"] == 5 and scores["miou"] == pytest.approx(1.0)
    for m in masks.iterdir():
        (data / "SegmentationClass" / m.name).unlink()
    assert main(argv) == 1
    assert "no photo has a ground-truth mask" in capsys.readouterr().err


def check_bkg_sweep(run, synth_root):
    """`wsss sweep-bkg` scores the saved CAM seeds at each level as `wsss eval` scores them once written
    by `wsss cam --bkg-thre`, and the rewritten seeds are `cam_to_label` of the saved CAMs."""
    import torch

    from wsss.cam import cam_to_label
    from wsss.data import VOCDataset
    from wsss.utils.io import load_cam

    sweep = run / "sweep.json"
    assert (
        main(["sweep-bkg", str(run), "--split", "val", "--thresholds", "0.1,0.3,0.6", "--json", str(sweep), "--quiet"])
        == 0
    )
    res = json.loads(sweep.read_text())
    assert res["thresholds"] == [0.1, 0.3, 0.6] and res["best_miou"] == max(res["miou"])
    assert res["device"] == "cpu"  # the run's run.device (the sweep counts there)
    ds = VOCDataset(synth_root, "val")
    for t, miou in zip(res["thresholds"], res["miou"]):
        assert main(["cam", str(run), "--split", "val", "--bkg-thre", str(t), "--quiet"]) == 0
        i = ds.ids[0]
        cam = load_cam(run / "cams/val" / f"{i}.npz", ds.num_classes - 1)
        _, want = cam_to_label(torch.from_numpy(cam)[None], torch.from_numpy(ds.labels(i))[None], bkg_thre=t)
        np.testing.assert_array_equal(read_label_png(run / "cam_labels/val" / f"{i}.png"), want[0].numpy())
        out = run / f"eval_{t}.json"
        assert (
            main(
                [
                    "eval",
                    str(run / "cam_labels/val"),
                    "--data-root",
                    str(synth_root),
                    "--split",
                    "val",
                    "--json",
                    str(out),
                ]
            )
            == 0
        )
        assert json.loads(out.read_text())["miou"] == pytest.approx(miou, abs=1e-9)
    assert main(["sweep-bkg", str(run), "--split", "train", "--quiet"]) == 1  # no train CAMs yet: a clear error


# -- a run read with a bad --checkpoint or --device is one error line, not a traceback -----------------
@pytest.fixture(scope="module")
def one_step_run(synth_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("one_step") / "run"
    overrides = tiny_overrides(synth_root, run, **{"train.max_iters": 1, "train.eval_iters": 100})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *overrides, "--quiet"]) == 0
    return run


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda state: state["model"], "not a wsss run checkpoint (no 'model' or 'class_names' entry"),
        (lambda state: {k: v for k, v in state.items() if k != "model"}, "(no 'model' entry; a weights-only file?)"),
        (
            lambda state: {**state, "class_names": ",".join(state["class_names"])},
            "class_names is not a list of class names (a str)",
        ),
    ],
    ids=["weights_only", "no_model", "names_as_a_string"],
)
def test_a_checkpoint_that_is_not_a_runs_is_one_error_naming_it(one_step_run, tmp_path, capsys, change, words):
    import torch

    from wsss.core.checkpoint import load_checkpoint

    state = load_checkpoint(one_step_run / "checkpoints/last.pt")
    bad = tmp_path / "bad.pt"
    torch.save(change(state), bad)
    assert main(["predict", str(one_step_run), "--split", "val", "--checkpoint", str(bad), "--quiet"]) == 1
    line = _error_line(capsys)
    assert line.startswith(f"error: {bad}: ") and words in line


def test_a_device_that_is_not_one_or_not_here_is_one_error(one_step_run, synth_root, capsys, monkeypatch):
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(one_step_run), "--split", "val", "--device", "banana", "--quiet"])
    assert stop.value.code == 2
    assert "argument --device: run.device must be auto, cpu, cuda or cuda:N, got 'banana'" in capsys.readouterr().err
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # this machine's GPU, if any, is not seen
    assert main(["predict", str(one_step_run), "--split", "val", "--device", "cuda", "--quiet"]) == 1
    assert "device 'cuda': no CUDA GPU is visible to this process" in _error_line(capsys)
    # the sweep counts on the run's device
    assert main(["sweep-bkg", str(one_step_run), "--split", "val", "--device", "cuda", "--quiet"]) == 1
    assert "device 'cuda': no CUDA GPU is visible to this process" in _error_line(capsys)
    config = one_step_run / "config.yaml"
    text = config.read_text()
    try:  # a run's config.yaml naming a GPU that is not here: the same line
        config.write_text(text.replace("device: cpu", "device: cuda:0"))
        assert main(["cam", str(one_step_run), "--split", "val", "--quiet"]) == 1
        assert "device 'cuda:0': no CUDA GPU is visible" in _error_line(capsys)
    finally:
        config.write_text(text)
    assert not (one_step_run / "predictions").exists() and not (one_step_run / "cams").exists()
    run = one_step_run.parent / "on_cuda"  # a training on a GPU that is not here: the same line
    overrides = tiny_overrides(synth_root, run, **{"run.device": "cuda"})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *overrides, "--quiet"]) == 1
    assert "device 'cuda': no CUDA GPU is visible" in _error_line(capsys)
    assert not (run / "checkpoints").exists()


def test_an_unknown_backbone_is_one_error_line(synth_root, tmp_path, capsys):
    overrides = tiny_overrides(synth_root, tmp_path / "run", **{"model.backbone": "nope", "train.max_iters": 1})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *overrides, "--quiet"]) == 2
    assert "model.backbone: no backbone 'nope'" in _error_line(capsys)


def test_a_run_folder_names_no_code_to_run(one_step_run, tmp_path, capsys, monkeypatch):
    """Security: a run from elsewhere whose config.yaml lists ``custom_imports: [plugin_x]``, with a
    plugin_x.py beside it (on sys.path, as the current folder is for `python -m wsss`): reading the run imports
    nothing and says how to name the plugin; named in WSSS_PLUGINS, it is imported."""
    import shutil
    import sys

    run = tmp_path / "run"
    shutil.copytree(one_step_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("custom_imports: []", "custom_imports: [plugin_x]"))
    (tmp_path / "plugin_x.py").write_text("import pathlib\npathlib.Path(__file__).with_name('ran').touch()\n")
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delenv("WSSS_PLUGINS", raising=False)
    for argv in (["predict", str(run), "--split", "val"], ["cam", str(run), "--split", "val"]):
        assert main([*argv, "--quiet"]) == 1
        line = _error_line(capsys)
        assert (
            line.startswith(f"error: {config}: custom_imports names plugin_x, not imported") and "WSSS_PLUGINS" in line
        )
    assert not (tmp_path / "ran").exists() and "plugin_x" not in sys.modules
    monkeypatch.setenv("WSSS_PLUGINS", "plugin_x")
    try:
        assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
        assert (tmp_path / "ran").is_file()
    finally:
        sys.modules.pop("plugin_x", None)
