"""runs/stamps.py and its users: what names the outputs of a job. The model is named by its checkpoint's
content (another run of the same preset and step, or the run retrained to the same step, is another model), each
photo by its file (one replaced under its name is predicted again), and a dataset by its classes (one of other
classes, or of other class names, is refused: one check for every split job)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from wsss.cli import main
from wsss.core.checkpoint import load_checkpoint, save_checkpoint
from wsss.core.errors import UsageError
from wsss.data import VOCDataset
from wsss.data.voc import IMAGE_DIR, load_cls_labels, write_cls_labels
from wsss.utils.io import read_label_png


def _run_copy(reported, tmp_path: Path, name: str = "run") -> Path:
    """The reported run's config and checkpoints in a folder of this test's own (its outputs land there)."""
    run, _ = reported
    copy = tmp_path / name
    copy.mkdir()
    shutil.copy(run / "config.yaml", copy / "config.yaml")
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    return copy


def _retrain(run: Path, seed: int = 1) -> None:
    """The run's checkpoints as another training to the same step leaves them: other weights, the same step, name
    and config."""
    g = torch.Generator().manual_seed(seed)
    for path in (run / "checkpoints").glob("*.pt"):
        state = load_checkpoint(path)
        step = state.get("step")
        state["model"] = {
            k: v + 0.5 * torch.randn(v.shape, generator=g, dtype=v.dtype) if v.is_floating_point() else v
            for k, v in state["model"].items()
        }
        save_checkpoint(state, path)
        assert load_checkpoint(path).get("step") == step


def _err(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.fixture
def photo_folder(synth_root, tmp_path) -> tuple[Path, list[str]]:
    """Three val photos of the synthetic set in a folder that is not a dataset."""
    folder = tmp_path / "photos"
    folder.mkdir()
    ds = VOCDataset(synth_root, "val")
    ids = ds.ids[:3]
    for id in ids:
        shutil.copy(ds.image_path(id), folder / f"{id}.jpg")
    return folder, ids


def test_masks_of_another_run_at_the_same_step_are_not_kept(reported, photo_folder, tmp_path, capsys):
    """Silently wrong outputs, case 1: `predict B --images ph --out o` over run A's masks (same preset, same step, same
    checkpoint name) printed "0 written" and kept A's masks. The stamp names the checkpoint's content now."""
    folder, ids = photo_folder
    a, b = _run_copy(reported, tmp_path, "a"), _run_copy(reported, tmp_path, "b")
    _retrain(b)
    out, fresh = tmp_path / "o", tmp_path / "fresh"
    assert main(["predict", str(a), "--images", str(folder), "--out", str(out), "--quiet"]) == 0
    assert main(["predict", str(b), "--images", str(folder), "--out", str(fresh), "--quiet"]) == 0
    before = {i: (out / f"{i}.png").read_bytes() for i in ids}
    assert any(before[i] != (fresh / f"{i}.png").read_bytes() for i in ids)  # B's masks differ: the check can fail
    err = _err(capsys, ["predict", str(b), "--images", str(folder), "--out", str(out), "--quiet"])
    assert err.startswith(f"error: {out}: already holds outputs of these photos made with other settings (model.sha1:")
    assert {i: (out / f"{i}.png").read_bytes() for i in ids} == before  # refused before writing
    assert main(["predict", str(b), "--images", str(folder), "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert all((out / f"{i}.png").read_bytes() == (fresh / f"{i}.png").read_bytes() for i in ids)


def test_a_photo_replaced_under_its_name_is_predicted_again(reported, photo_folder, tmp_path, capsys):
    """Silently wrong outputs, case 2: a photo replaced under the same name was "skipped" and kept its old mask. Each
    photo's file (size, modification time) is recorded beside its outputs; the others are still skipped."""
    folder, (a, b, c) = photo_folder
    run, _ = reported
    out = tmp_path / "o"
    argv = ["predict", str(run), "--images", str(folder), "--out", str(out), "--overlay", "--quiet"]
    assert main(argv) == 0
    old_a, mask_b = read_label_png(out / f"{a}.png"), read_label_png(out / f"{b}.png")
    assert not np.array_equal(old_a, mask_b)  # the photos' masks differ: the check can fail
    untouched = (out / f"{c}.png").stat().st_mtime_ns
    shutil.copy(folder / f"{b}.jpg", folder / f"{a}.jpg")  # a's name now holds b's photo
    st = (folder / f"{a}.jpg").stat()
    os.utime(folder / f"{a}.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a second later, whatever the clock
    capsys.readouterr()
    assert main(argv) == 0
    assert np.array_equal(read_label_png(out / f"{a}.png"), mask_b)  # b's mask, under a's name
    assert (out / f"{c}.png").stat().st_mtime_ns == untouched  # an unchanged photo is not predicted again


def test_a_dataset_photo_replaced_under_its_name_gets_new_cams_and_masks(reported, synth_root, tmp_path):
    """The same for a dataset's split: `wsss cam` and `wsss predict --split` make the replaced photo's outputs again
    (the CAM too, which a reseed would otherwise reuse)."""
    run = _run_copy(reported, tmp_path)
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    ds = VOCDataset(root, "val")
    a, b = ds.ids[:2]
    common = ["--split", "val", "--data-root", str(root), "--quiet"]
    assert main(["predict", str(run), *common]) == 0 and main(["cam", str(run), *common]) == 0
    pred, cams = run / "predictions/val", run / "cams/val"
    old_pred, old_cam = (pred / f"{a}.png").read_bytes(), (cams / f"{a}.npz").read_bytes()
    assert old_pred != (pred / f"{b}.png").read_bytes()  # the check can fail
    photo = ds.image_path(a)
    assert photo.parent == root / IMAGE_DIR
    shutil.copy(ds.image_path(b), photo)
    st = photo.stat()
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert main(["predict", str(run), *common]) == 0 and main(["cam", str(run), *common]) == 0
    assert (pred / f"{a}.png").read_bytes() == (pred / f"{b}.png").read_bytes()
    assert (cams / f"{a}.npz").read_bytes() != old_cam


def test_a_run_retrained_to_the_same_step_is_refused_over_its_old_masks(reported, tmp_path, capsys):
    """Silently wrong outputs, case 3: a run retrained into the same folder to the same step: `predict --split val`
    skipped every photo and kept the old model's masks. It is refused now, naming the model's content; --overwrite
    makes them again, and removes nothing else of the folder."""
    run = _run_copy(reported, tmp_path)
    assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
    old = {p.name: p.read_bytes() for p in (run / "predictions/val").glob("*.png")}
    _retrain(run)
    err = _err(capsys, ["predict", str(run), "--split", "val", "--quiet"])
    assert err.startswith(f"error: {run / 'predictions/val'}: holds outputs made with other settings (model.sha1:")
    assert {p.name: p.read_bytes() for p in (run / "predictions/val").glob("*.png")} == old
    (run / "predictions/val/notes.txt").write_text("mine\n")  # --overwrite removes only what the command made
    assert main(["predict", str(run), "--split", "val", "--overwrite", "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in (run / "predictions/val").glob("*.png")} != old
    assert (run / "predictions/val/notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize("key", ["model.sha1", "classes", "model.network"])
def test_a_stamp_that_does_not_name_the_model_is_refused_and_overwrite_redoes(reported, tmp_path, capsys, key):
    """A folder stamped before the stamps named the model's content, the dataset's classes or the network's settings:
    what made its outputs is unknown (the run may have been retrained since), so the job is refused with one line
    saying which setting the stamp lacks (never restamped over the old model's masks); --overwrite makes them
    again."""
    import json

    run = _run_copy(reported, tmp_path)
    assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
    stamp_file = run / "predictions/val/.settings.json"
    stamp = json.loads(stamp_file.read_text())
    section, _, name = key.rpartition(".")
    (stamp[section] if section else stamp).pop(name)
    stamp_file.write_text(json.dumps(stamp))
    old = {p.name: p.read_bytes() for p in (run / "predictions/val").glob("*.png")}
    _retrain(run)
    err = _err(capsys, ["predict", str(run), "--split", "val", "--quiet"])
    assert err == (
        f"error: {run / 'predictions/val'}: holds outputs made with unknown settings (its settings stamp "
        f"(.settings.json, written by an older wsss) does not name {key}); pass --overwrite to make them "
        "again (its outputs are removed first)"
    )
    assert stamp_file.read_text() == json.dumps(stamp)  # not restamped
    assert main(["predict", str(run), "--split", "val", "--overwrite", "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in (run / "predictions/val").glob("*.png")} != old  # the new model's
    assert key.split(".")[-1] in json.loads(stamp_file.read_text()).get(section, json.loads(stamp_file.read_text()))


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_a_corrupt_stamp_is_refused_as_unreadable_not_with_invented_differences(reported, tmp_path, capsys, text):
    run = _run_copy(reported, tmp_path)
    assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
    (run / "predictions/val/.settings.json").write_text(text)
    err = _err(capsys, ["predict", str(run), "--split", "val", "--quiet"])
    assert err == (
        f"error: {run / 'predictions/val'}: holds outputs made with unknown settings (its settings stamp "
        "(.settings.json) is unreadable (not a JSON object)); pass --overwrite to make them again (its "
        "outputs are removed first)"
    )
    assert main(["predict", str(run), "--split", "val", "--overwrite", "--quiet"]) == 0


def test_a_checkpoint_replaced_after_it_was_loaded_names_the_loaded_model(reported, tmp_path, capsys):
    """A training into a run while `predict` reads it: the masks come from the model loaded, and so does the stamp's
    SHA-1 (the bytes loaded, not the file found when the folder is stamped), so a later job of the new model is
    refused instead of skipping every id."""
    from wsss.runs.jobs import run_predict
    from wsss.runs.run import load_run

    run = _run_copy(reported, tmp_path)
    loaded = load_run(run)
    _retrain(run)  # the checkpoint replaced after the job loaded it
    run_predict(loaded, "val", progress=False)
    err = _err(capsys, ["predict", str(run), "--split", "val", "--quiet"])
    assert err.startswith(f"error: {run / 'predictions/val'}: holds outputs made with other settings (model.sha1: ")


def _deeplab_run(data: Path, tmp_path: Path) -> Path:
    """A run folder of the DeepLab preset with an untrained checkpoint."""
    from conftest import REPO
    from faults_helpers import classes_of, write_checkpoint
    from wsss.core.config import load_config, save_config

    run = tmp_path / "seg"
    words = [f"data.root={data}", f"run.dir={run}", f"data.pseudo_dir={data}", "data.num_workers=0"]
    cfg = load_config(REPO / "configs/deeplab/synthetic_cpu.yaml", words)
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    write_checkpoint(cfg, run / "checkpoints" / "last.pt", classes_of(data))
    return run


def test_an_override_of_the_networks_options_is_in_the_stamp(synth_root, tmp_path, capsys):
    """`predict RUN 'options.rates=[1,1,1,1]'` (other dilations: another network on the same weights), then
    `predict RUN`: the masks of the first are not kept; the stamp names the method's options and the model's
    settings."""
    run = _deeplab_run(synth_root, tmp_path)
    changed = ["predict", str(run), "--split", "val", "options.rates=[1,1,1,1]", "--quiet"]
    assert main(changed) == 0
    masks = {p.name: p.read_bytes() for p in (run / "predictions/val").glob("*.png")}
    err = _err(capsys, ["predict", str(run), "--split", "val", "--quiet"])
    assert err.startswith(
        f"error: {run / 'predictions/val'}: holds outputs made with other settings "
        "(model.network.options.rates: [1, 1, 1, 1] -> [2, 4, 6, 8])"
    )
    assert main(["predict", str(run), "--split", "val", "--overwrite", "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in (run / "predictions/val").glob("*.png")} != masks  # the check can fail


def test_deleted_photo_records_make_every_output_again(reported, photo_folder, tmp_path, capsys):
    """`.sources.json` deleted, then a photo replaced under its name: which photo each mask was made of is unknown,
    so every mask is made again, with a warning (the old mask was kept)."""
    folder, (a, b, _) = photo_folder
    run, _ = reported
    out = tmp_path / "o"
    argv = ["predict", str(run), "--images", str(folder), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    mask_b = read_label_png(out / f"{b}.png")
    assert not np.array_equal(read_label_png(out / f"{a}.png"), mask_b)  # the check can fail
    (out / ".sources.json").unlink()
    shutil.copy(folder / f"{b}.jpg", folder / f"{a}.jpg")
    capsys.readouterr()
    assert main(argv) == 0
    assert f"warning: {out}: .sources.json is missing or unreadable" in capsys.readouterr().err
    assert np.array_equal(read_label_png(out / f"{a}.png"), mask_b)
    assert (out / ".sources.json").is_file()


def _renamed_classes(synth_root: Path, tmp_path: Path, classes: list[str]) -> Path:
    root = tmp_path / "renamed"
    shutil.copytree(synth_root, root)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_a_checkpoint_or_a_dataset_of_other_class_names_is_refused(reported, synth_root, tmp_path, capsys):
    """Silently wrong outputs, case 4: a checkpoint of other class names of the same count predicted without a word. Its
    names are checked against the run's dataset when it is loaded, and a --data-root of other names is refused by
    the same check as one of another count (Run.dataset)."""
    names = VOCDataset(synth_root, "val").class_names
    swapped = [names[0], names[2], names[1], *names[3:]]
    run = _run_copy(reported, tmp_path)
    # a dataset of the same count, other names (two classes swapped): its ids would name the other class
    root = _renamed_classes(synth_root, tmp_path, swapped)
    for command in ("predict", "cam"):
        err = _err(capsys, [command, str(run), "--split", "val", "--data-root", str(root), "--quiet"])
        assert err == (
            f"error: {root}: the dataset's classes are not the run's (class 1: {swapped[1]!r} here, "
            f"{names[1]!r} in {run})"
        )
    assert not (run / "predictions").exists() and not (run / "cams").exists()
    # a checkpoint whose class names are not those of the run's dataset
    for path in (run / "checkpoints").glob("*.pt"):
        state = load_checkpoint(path)
        state["class_names"] = swapped
        save_checkpoint(state, path)
    err = _err(capsys, ["predict", str(run), "--split", "val", "--quiet"])
    assert err.startswith("error: ") and "checkpoint trained with other classes than the run's dataset" in err
    assert f"class 1: {swapped[1]!r} there, {names[1]!r} here" in err
    assert not (run / "predictions").exists()


def test_predict_split_refuses_a_dataset_of_another_count_as_cam_does(reported, synth_root, tmp_path, capsys):
    """Silently wrong outputs, case 5: `predict --split val --data-root D`, D of 8 classes and the run of 7, wrote masks
    that `eval` scored; `wsss cam` refused. Both refuse now, with the same line."""
    names = VOCDataset(synth_root, "val").class_names
    run = _run_copy(reported, tmp_path)
    root = _renamed_classes(synth_root, tmp_path, [*names, "extra"])
    labels = load_cls_labels(root, len(names))  # a whole dataset of 8 classes: its labels one class longer
    write_cls_labels(root, {i: np.append(v, np.float32(0)) for i, v in labels.items()})
    assert len(VOCDataset(root, "val").labels(VOCDataset(root, "val").ids[0])) == len(names)
    errs = {
        c: _err(capsys, [c, str(run), "--split", "val", "--data-root", str(root), "--quiet"])
        for c in ("cam", "predict", "pseudo")
    }
    line = f"error: {root}: the dataset has {len(names) + 1} classes but the run {run} was trained with {len(names)}"
    assert errs == {"cam": line, "predict": line, "pseudo": line}
    assert not (run / "predictions").exists()


def test_the_predictions_name_their_fusion_and_an_older_stamp_is_the_default_one(reported, tmp_path, capsys):
    """The segmentation inference's fusion is a setting of `infer` (docs/configs.md#inference): masks of another
    fusion are not reused. A stamp written before these settings existed was made with the defaults (ToCo's fusion, the
    only one then): it is taken as theirs without a warning and stamped anew, and refused for another."""
    import json

    run = _run_copy(reported, tmp_path)
    assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
    stamp_file = run / "predictions/val/.settings.json"
    stamp = json.loads(stamp_file.read_text())
    fusion = {k: stamp.pop(k) for k in ("resize_long", "scale_resize", "flip_fuse", "scale_fuse", "fuse_at")}
    assert fusion == {
        "resize_long": None,
        "scale_resize": "size",
        "flip_fuse": "sum",
        "scale_fuse": "max",
        "fuse_at": "image",
    }
    stamp_file.write_text(json.dumps(stamp))
    old = {p.name: p.stat().st_mtime_ns for p in (run / "predictions/val").glob("*.png")}
    capsys.readouterr()
    assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (run / "predictions/val").glob("*.png")} == old  # all kept
    assert json.loads(stamp_file.read_text())["fuse_at"] == "image"
    err = _err(capsys, ["predict", str(run), "--split", "val", "infer.flip_fuse=mean", "--quiet"])
    assert err.startswith(f"error: {run / 'predictions/val'}: holds outputs made with other settings (flip_fuse: 'sum'")
    assert main(["predict", str(run), "--split", "val", "infer.flip_fuse=mean", "--overwrite", "--quiet"]) == 0
    assert json.loads(stamp_file.read_text())["flip_fuse"] == "mean"


def test_a_photo_rewritten_with_its_size_and_time_kept_loses_its_outputs_and_a_moved_one_keeps_them(tmp_path):
    """A photo's record was its size and time: bytes rewritten with both kept (`touch -r`) kept the old mask. It is
    its content now, which a photo copied or moved elsewhere keeps."""
    from wsss.runs.stamps import SOURCES_FILE, photo_record, read_sources, refresh_sources

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir(), out.mkdir()
    for id in "ab":
        (photos / f"{id}.jpg").write_bytes(f"photo {id}".encode() * 100)
    refresh_sources(out, [".png"], {i: photo_record(photos / f"{i}.jpg") for i in "ab"})  # the job's, then its masks
    for id in "ab":
        (out / f"{id}.png").write_bytes(b"mask")
    moved = tmp_path / "moved"
    shutil.copytree(photos, moved)  # a copy: new times, the same bytes
    assert refresh_sources(out, [".png"], {i: photo_record(moved / f"{i}.jpg") for i in "ab"}) == set()
    a = moved / "a.jpg"
    st = a.stat()
    a.write_bytes(b"PHOTO a" + a.read_bytes()[7:])
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert a.stat().st_size == st.st_size and a.stat().st_mtime_ns == st.st_mtime_ns
    assert refresh_sources(out, [".png"], {i: photo_record(moved / f"{i}.jpg") for i in "ab"}) == {"a"}
    assert not (out / "a.png").exists() and (out / "b.png").read_bytes() == b"mask"
    assert read_sources(out)["a"] == photo_record(a) and (out / SOURCES_FILE).is_file()
    # the records of an older wsss (size, time) still name their photos: nothing made again for the upgrade
    b = moved / "b.jpg"
    (out / SOURCES_FILE).write_text(json.dumps({"b": [b.stat().st_size, b.stat().st_mtime_ns]}))
    assert refresh_sources(out, [".png"], {"b": photo_record(b)}) == set() and (out / "b.png").is_file()


def test_a_stamp_of_this_wsss_with_an_empty_section_is_not_called_an_older_wsss(tmp_path):
    """A section stamped empty ({}) and named now lacks no setting: it is a value that changed, named as one (a
    WeCLIP+ run's masks after its CLIP files moved were refused as stamped 'by an older wsss')."""
    from wsss.runs.stamps import check_stamp, write_stamp

    write_stamp(tmp_path, {"model": {"sha1": "a"}, "infer": {"crf": {}}})
    (tmp_path / "a.png").write_bytes(b"mask")
    with pytest.raises(UsageError) as refused:
        check_stamp(tmp_path, {"model": {"sha1": "a"}, "infer": {"crf": {"w": 3}}})
    assert "older wsss" not in str(refused.value)
    assert "made with other settings (infer.crf: {} -> {w: 3}); pass --overwrite" in str(refused.value)


def test_a_clip_methods_stamp_of_an_older_wsss_is_read_as_this_one_names_the_network(tmp_path):
    """An older wsss stamped a CLIP method's network with its files' paths and its architecture empty: the same
    model (its checkpoint's digest) keeps its outputs; another checkpoint does not."""
    from wsss.runs.stamps import check_stamp, write_stamp

    options = {"arch": {}, "dino_arch": {}, "weights": "/a/clip.pt", "dino_weights": "/a/dino.pth", "heads": 2}
    write_stamp(tmp_path, {"model": {"sha1": "a", "network": {"options": options}}})
    (tmp_path / "a.png").write_bytes(b"mask")
    built = {"arch": {"width": 8}, "dino_arch": {"depth": 2}, "heads": 2}
    check_stamp(tmp_path, {"model": {"sha1": "a", "network": {"options": built}}})
    with pytest.raises(UsageError, match=r"other settings \(model.network.options.heads: 2 -> 3"):
        check_stamp(tmp_path, {"model": {"sha1": "a", "network": {"options": {**built, "heads": 3}}}})
    with pytest.raises(UsageError, match=r"other settings \(model.sha1: 'a' -> 'b'\)"):
        check_stamp(tmp_path, {"model": {"sha1": "b", "network": {"options": built}}})


def test_the_network_of_a_stamp_is_what_was_built_not_where_its_start_files_lie(tmp_path):
    """The stamp of a CLIP method's outputs named its weight files by their paths (options.dino_weights,
    options.weights): moved, the same run was another model. The checkpoint's digest names the weights; the
    stamp names what the build read off the files."""
    from wsss.core.config import load_config
    from wsss.runs.run import network_settings

    cfg = load_config(str(REPO / "configs/weclip_plus/synthetic_cpu.yaml"))
    built = {"arch": {"width": 8}, "quick_gelu": True}
    here = replace(cfg, options={**cfg.options, "dino_weights": "/a/dino.pth", "weights": "/a/clip.pt", "arch": {}})
    moved = replace(cfg, options={**cfg.options, "dino_weights": "", "weights": "/a/clip.pt", "arch": {"width": 8}})
    assert network_settings(here, built) == network_settings(moved, built)
    assert "dino_weights" not in network_settings(here, built)["options"]
    assert network_settings(here, built)["options"]["arch"] == {"width": 8}
    other = replace(cfg, options={**cfg.options, "decoder_heads": 99})
    assert network_settings(other, built) != network_settings(here, built)  # an option that builds: another model
