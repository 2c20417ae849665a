"""``wsss predict RUN --images DIR_OR_FILES --out DIR`` and ``wsss cam RUN --images ...`` (runs/photos.py): masks of
photos that are not a dataset, in JPEG, PNG and WebP, EXIF orientation applied, equal to the masks the same photos
get as a dataset's split; a killed job continued by its command; the refusals (outputs of other settings already
there, the photos' own folder, two photos of one stem, a
run whose CAMs need labels) and the split-not-found hint."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from wsss.cli import main
from wsss.data import VOCDataset, write_cls_labels
from wsss.data.voc import CLS_LABELS_FILE, IMAGE_DIR, SPLIT_DIR
from wsss.utils.io import read_image, read_label_png
from wsss.utils.runlock import JOB_LOCK_FILE


@pytest.fixture(scope="module")
def photos(synth_root, tmp_path_factory):
    """A folder of four photos that is not a dataset, from the first four val photos of the synthetic set: a JPEG
    (the file as it is), a PNG and a lossless WebP of the decoded pixels (the same pixels), and a JPEG whose EXIF
    orientation (6: turn 90 degrees clockwise to show) makes the 64 x 40 stored image a 40 x 64 photo."""
    folder = tmp_path_factory.mktemp("photos") / "new_photos"
    folder.mkdir()
    ds = VOCDataset(synth_root, "val")
    a, b, c, d = ds.ids[:4]
    shutil.copy(ds.image_path(a), folder / f"{a}.jpg")
    Image.fromarray(ds.load_image(b)).save(folder / f"{b}.png")
    Image.fromarray(ds.load_image(c)).save(folder / f"{c}.webp", lossless=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(ds.load_image(d)[:40]).save(folder / f"{d}.JPG", exif=exif, quality=95)
    (folder / "notes.txt").write_text("not a photo: skipped\n")
    return folder, (a, b, c, d)


def _run_copy(reported, tmp_path):
    """The reported run's config and checkpoints in a folder of this test's own, so that the dataset-mode
    predictions it writes do not land in the shared run."""
    run, _ = reported
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(run / "config.yaml", copy / "config.yaml")
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    return copy


def test_masks_of_photos_that_are_not_a_dataset(reported, photos, tmp_path, capsys):
    run, _ = reported
    folder, (a, b, c, d) = photos
    out = tmp_path / "masks"
    assert main(["predict", str(run), "--images", str(folder), "--out", str(out), "--overlay", "--quiet"]) == 0
    assert f"predictions in {out}, overlays in {out / 'overlay'}" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{i}.png" for i in (a, b, c, d))
    for i in (a, b, c):  # the same pixels as the dataset's photo: the dataset-mode mask, pixel for pixel
        mask = Image.open(out / f"{i}.png")
        assert mask.mode == "P" and mask.size == (64, 64)  # a palette PNG at the photo's size
        assert np.array_equal(read_label_png(out / f"{i}.png"), read_label_png(run / "predictions/val" / f"{i}.png"))
    upright = read_image(folder / f"{d}.JPG")
    assert upright.shape[:2] == (64, 40)  # EXIF orientation 6: the stored 64 wide x 40 high, turned
    assert read_label_png(out / f"{d}.png").shape == (64, 40)
    for i in (a, b, c, d):
        with Image.open(out / "overlay" / f"{i}.jpg") as overlay:
            assert overlay.format == "JPEG" and overlay.size == Image.open(out / f"{i}.png").size
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{a}.jpg", f"{b}.png", f"{c}.webp", f"{d}.JPG", "notes.txt"]
    )  # nothing written among the photos


def test_the_exif_photo_as_a_dataset_gets_the_same_mask_and_the_options_work_the_same(
    reported, photos, synth_root, tmp_path
):
    """The EXIF-turned JPEG (and the others) as a dataset's split, predicted with --crf and --tags-from: the masks
    of --images with the same options are the same files' masks."""
    folder, ids = photos
    run = _run_copy(reported, tmp_path)
    root = tmp_path / "dataset"
    (root / IMAGE_DIR).mkdir(parents=True)
    (root / SPLIT_DIR).mkdir(parents=True)
    shutil.copy(synth_root / "classes.txt", root / "classes.txt")
    names = {}
    for path in folder.iterdir():
        if path.suffix == ".webp":  # no WebP in a dataset: its pixels as a PNG
            Image.open(path).save(root / IMAGE_DIR / f"{path.stem}.png")
        elif path.suffix != ".txt":
            shutil.copy(path, root / IMAGE_DIR / path.name.replace(".JPG", ".jpg"))
        names[path.stem] = path
    (root / SPLIT_DIR / "mine.txt").write_text("\n".join(ids) + "\n")
    num_fg = len(VOCDataset(synth_root, "val").class_names) - 1
    write_cls_labels(root, {i: np.zeros(num_fg, dtype=np.float32) for i in ids})  # labels: the loader reads them
    assert (root / CLS_LABELS_FILE).is_file()
    options = ["--crf", "--tags-from", str(run), "--quiet"]
    assert main(["predict", str(run), "--split", "mine", "--data-root", str(root), *options]) == 0
    out = tmp_path / "masks"
    assert main(["predict", str(run), "--images", str(folder), "--out", str(out), *options]) == 0
    for i in ids:
        assert np.array_equal(
            read_label_png(out / f"{i}.png"), read_label_png(run / "predictions_crf_tagged/mine" / f"{i}.png")
        ), i


def test_an_ensemble_and_scales_as_a_split_takes_them(reported, photos, tmp_path):
    """--ensemble and --scales reach the photos' prediction: the run ensembled with itself at its own scale is the
    run alone (Run._seg_logits), so the masks are the dataset-mode ones; the folder says nothing of an ensemble."""
    run, _ = reported
    folder, (a, b, c, _) = photos
    out = tmp_path / "ens"
    assert (
        main(
            [
                "predict",
                str(run),
                "--images",
                str(folder),
                "--out",
                str(out),
                "--ensemble",
                str(run),
                "--scales",
                "1.0",
                "--quiet",
            ]
        )
        == 0
    )
    for i in (a, b, c):
        assert np.array_equal(read_label_png(out / f"{i}.png"), read_label_png(run / "predictions/val" / f"{i}.png"))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == []


def test_two_local_workers_write_the_masks_of_one(reported, photos, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each worker's threads, those of the reference
    run, _ = reported
    folder, _ = photos
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["predict", str(run), "--images", str(folder), "--out", str(one), "--overlay", "--quiet"]) == 0
    assert (
        main(
            ["predict", str(run), "--images", str(folder), "--out", str(two), "--overlay", "--workers", "2", "--quiet"]
        )
        == 0
    )
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    # 4 masks, 4 overlays, the settings stamp, the photos' records (of the masks' and the overlays' folders) and the
    # job's lock, the same in both
    assert len(files) == 12 and files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    # the same bytes but in the lock, which holds its job's pid and time
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files if f.name != JOB_LOCK_FILE)


def test_files_as_well_as_folders_and_the_refusals(reported, photos, tmp_path, capsys):
    run, _ = reported
    folder, (a, b, c, d) = photos
    out = tmp_path / "masks"

    def err_of(*argv: str, code: int = 1) -> str:
        capsys.readouterr()
        assert main(["predict", str(run), *argv, "--quiet"]) == code
        err = capsys.readouterr().err.strip()
        assert "\n" not in err, err
        return err

    assert (
        main(
            [
                "predict",
                str(run),
                "--images",
                str(folder / f"{a}.jpg"),
                str(folder / f"{c}.webp"),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.glob("*.png")) == sorted([f"{a}.png", f"{c}.png"])
    assert not (out / "overlay").exists()
    # a second run into the same folder: refused, then replaced with --overwrite
    before = (out / f"{a}.png").stat().st_mtime_ns
    err = err_of("--images", str(folder), "--out", str(out))
    given = [str(folder / f"{a}.jpg"), str(folder / f"{c}.webp")]
    assert err == (
        f"error: {out}: already holds outputs of these photos made with other settings (images: {given!r} "
        f"-> {[str(folder)]!r}) (e.g. {out / f'{a}.png'}); pass --overwrite to replace them, or give "
        "another --out"
    )
    assert (out / f"{a}.png").stat().st_mtime_ns == before and not (out / f"{b}.png").exists()
    assert main(["predict", str(run), "--images", str(folder), "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert len(list(out.glob("*.png"))) == 4
    # the photos' own folder, as --out or as the overlays' folder
    assert err_of("--images", str(folder), "--out", str(folder)).startswith(
        f"error: {folder}: holds the photos given to --images; give --out another folder"
    )
    sub = tmp_path / "nested"
    (sub / "overlay").mkdir(parents=True)
    shutil.copy(folder / f"{a}.jpg", sub / "overlay" / "x.jpg")
    err = err_of("--images", str(sub / "overlay"), "--out", str(sub), "--overlay")
    assert err.startswith(f"error: {sub / 'overlay'}: holds the photos given to --images")
    assert sorted(p.name for p in (sub / "overlay").iterdir()) == ["x.jpg"]  # the photo is untouched
    # two photos of one stem, a missing source, a file that is not a photo, a folder without photos
    other = tmp_path / "other"
    other.mkdir()
    Image.open(folder / f"{b}.png").save(other / f"{a}.png")
    err = err_of("--images", str(folder), str(other), "--out", str(tmp_path / "m2"))
    assert err == (
        f"error: {folder / f'{a}.jpg'} and {other / f'{a}.png'}: two photos of the stem '{a}', which "
        "names each photo's mask; rename one"
    )
    assert err_of("--images", str(tmp_path / "nope"), "--out", str(tmp_path / "m2")) == (
        f"error: {tmp_path / 'nope'}: no such photo or folder"
    )
    assert err_of("--images", str(folder / "notes.txt"), "--out", str(tmp_path / "m2")).startswith(
        f"error: {folder / 'notes.txt'}: not a JPEG, PNG or WebP photo"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert err_of("--images", str(empty), "--out", str(tmp_path / "m2")).startswith(
        f"error: {empty}: no JPEG, PNG or WebP photos in this folder"
    )
    assert not (tmp_path / "m2").exists()
    # the source options: one of --split / --images, --out with --images, no dataset options with --images
    assert "give --split SPLIT" in err_of(code=1)
    assert "--images needs --out DIR" in err_of("--images", str(folder))
    assert "drop --split" in err_of("--images", str(folder), "--split", "val", "--out", str(out))
    assert "drop --labelled-only" in err_of("--images", str(folder), "--labelled-only", "--out", str(out))
    assert "--out goes with --images" in err_of("--split", "val", "--out", str(out))


def test_a_photo_that_is_a_symbolic_link_loop_is_one_line(reported, photos, tmp_path, capsys):
    """`predict --images l.jpg`, l.jpg a link to itself: pathlib's RuntimeError came out as a traceback. In a folder
    it is no photo file and is passed over."""
    run, _ = reported
    folder, ids = photos
    loop = tmp_path / "l.jpg"
    loop.symlink_to(loop)
    assert main(["predict", str(run), "--images", str(loop), "--out", str(tmp_path / "m"), "--quiet"]) == 1
    assert capsys.readouterr().err == (
        f"error: {loop}: a symbolic link that leads back to itself (a loop), not a photo or folder\n"
    )
    mine = tmp_path / "photos"  # the module's photos folder is shared: the loop goes into a copy of it
    shutil.copytree(folder, mine)
    (mine / "l.jpg").symlink_to(mine / "l.jpg")
    assert main(["predict", str(run), "--images", str(mine), "--out", str(tmp_path / "m"), "--quiet"]) == 0
    assert sorted(p.stem for p in (tmp_path / "m").glob("*.png")) == sorted(ids)


def test_the_same_command_again_continues_and_other_settings_are_refused(reported, photos, tmp_path, capsys):
    """--out records what its masks were made with: the same command again writes only the photos whose outputs
    are missing (a killed job's), other options or an unstamped folder of masks are refused, and --overwrite
    writes every photo again and leaves the folder's other files alone."""
    run, _ = reported
    folder, (a, b, c, d) = photos
    out = tmp_path / "masks"
    command = ["predict", str(run), "--images", str(folder), "--out", str(out), "--overlay", "--quiet"]
    assert main(command) == 0
    files = [out / f"{i}.png" for i in (a, b, c, d)] + [out / "overlay" / f"{i}.jpg" for i in (a, b, c, d)]
    inodes = {p: p.stat().st_ino for p in files}  # a file written again is a new inode (atomic rename)

    def rewritten() -> set[str]:
        now = {p: p.stat().st_ino for p in files}
        changed = {str(p.relative_to(out)) for p in files if now[p] != inodes[p]}
        inodes.update(now)
        return changed

    (out / f"{b}.png").unlink()  # as a job killed before b's mask, and before c's overlay
    (out / "overlay" / f"{c}.jpg").unlink()
    (out / "notes.txt").write_text("the user's own file\n")
    assert main(command) == 0
    assert rewritten() == {f"{b}.png", f"overlay/{b}.jpg", f"{c}.png", f"overlay/{c}.jpg"}
    assert main(command) == 0 and rewritten() == set()  # all there: nothing to do

    capsys.readouterr()
    assert main([*command, "--crf"]) == 1  # another option that changes the masks
    err = capsys.readouterr().err.strip()
    # the CRF's parameters where there were none, named once
    assert err.startswith(
        f"error: {out}: already holds outputs of these photos made with other settings (crf: None -> {{"
    )
    assert "pass --overwrite to replace them" in err and "\n" not in err and rewritten() == set()
    (out / ".settings.json").unlink()  # masks of an older wsss, which stamped nothing: what made them is unknown
    assert main(command) == 1
    assert capsys.readouterr().err.strip().startswith(f"error: {out}: already holds outputs of these photos (e.g. ")
    assert main([*command, "--crf", "--overwrite"]) == 0
    assert rewritten() == {str(p.relative_to(out)) for p in files}
    assert (out / "notes.txt").read_text() == "the user's own file\n"
    assert main([*command, "--crf"]) == 0 and rewritten() == set()  # the stamp is --crf's now


def test_a_second_job_into_an_out_in_use_is_refused_naming_the_first(reported, photos, tmp_path, capsys):
    """Two jobs into one --out: the second is refused while the first holds it (the first job's check and its
    writes are not separated by another job's stamp), and nothing is written among the photos, not even the lock,
    when --out is refused for being their folder."""
    from wsss.utils.runlock import job_folder_lock

    run, _ = reported
    folder, (a, b, c, d) = photos
    out = tmp_path / "masks"
    command = ["predict", str(run), "--images", str(folder), "--out", str(out), "--quiet"]
    with job_folder_lock(out, "wsss cam --images"):  # the first job (flock is per open file: this process conflicts)
        capsys.readouterr()
        assert main([*command, "--crf"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {out}: wsss cam --images is writing into this folder (pid {os.getpid()} on ")
        assert "wait for it to finish or stop it, or write elsewhere" in err and "\n" not in err
        assert sorted(p.name for p in out.iterdir()) == [JOB_LOCK_FILE]
    assert main(command) == 0 and len(list(out.glob("*.png"))) == 4  # released: the job runs
    assert main(command) == 0  # its own lock file, left in the folder, is not an output of other settings
    assert main(["predict", str(run), "--images", str(folder), "--out", str(folder), "--quiet"]) == 1
    assert not (folder / JOB_LOCK_FILE).exists()


def test_a_folder_of_photos_given_as_a_dataset_names_images(reported, photos, capsys):
    run, _ = reported
    folder, _ = photos
    capsys.readouterr()
    assert main(["predict", str(run), "--split", "val", "--data-root", str(folder), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "split file not found; available splits: none" in err and "\n" not in err
    assert err.endswith(
        f"; to read a folder of photos that is not a dataset, use `wsss predict {run} --images DIR --out DIR`"
    )


def test_cam_of_photos_needs_a_run_that_finds_their_labels(reported, photos, tmp_path, capsys):
    """A CAM run of a classifier makes the maps of each photo's labels: photos have none, so it is refused."""
    run, _ = reported
    folder, _ = photos
    capsys.readouterr()
    assert main(["cam", str(run), "--images", str(folder), "--out", str(tmp_path / "cams"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"error: {run}: a cam run makes the CAMs of each photo's image labels, and photos given to --images have none"
    )
    assert "\n" not in err and not (tmp_path / "cams").exists()


@pytest.mark.slow
def test_cam_of_photos_with_clip_es_labels_them_from_the_class_names(photos, synth_root, tmp_path, capsys, one_thread):
    """CLIP-ES (the golden tiny CLIP) tags each photo zero-shot as `wsss tag` does, then makes its CAMs: the seeds
    and the CAM files of the photos, the same as a dataset's photo labelled with those tags gets."""
    from golden import load_golden
    from wsss.runs.run import load_run
    from wsss.runs.tag import DEFAULT_THRESHOLD, tag_labels
    from wsss.utils.io import load_labelled_cam

    folder, ids = photos
    weights = tmp_path / "tiny_clip.npz"
    np.savez(weights, **load_golden("clip_es_state_dict"))
    clip = tmp_path / "clip_es"
    assert (
        main(
            [
                "import",
                "clip_es",
                str(weights),
                "--config",
                str(REPO / "configs/clip_es/voc.yaml"),
                "--out",
                str(clip),
                f"data.root={synth_root}",
                "options.text_heads=2",
                "options.quick_gelu=true",
                "run.device=cpu",
            ]
        )
        == 0
    )
    out = tmp_path / "seeds"
    assert main(["cam", str(clip), "--images", str(folder), "--out", str(out), "--overlay", "--quiet"]) == 0
    loaded = load_run(clip)
    for i in ids:
        path = next(p for p in folder.iterdir() if p.stem == i)
        image = read_image(path)
        labels = tag_labels(loaded.method.image_scores(image)[0], DEFAULT_THRESHOLD, at_least_one=True)
        keys, cam = load_labelled_cam(out / "cams" / f"{i}.npz")
        assert np.array_equal(keys, np.flatnonzero(labels)) and cam.shape[1:] == image.shape[:2]
        assert read_label_png(out / f"{i}.png").shape == image.shape[:2]
        assert (out / "overlay" / f"{i}.jpg").is_file()


def test_an_out_of_files_wsss_did_not_make_is_refused_and_nothing_of_theirs_is_removed(
    reported, photos, tmp_path, capsys
):
    """The README's block predicted into the user's folder of ground-truth masks. An --out without a stamp
    that holds files wsss did not make is refused, naming them; with --overwrite the masks are written among them and
    nothing of theirs is removed. A user's `.notes.tmp` in --out was deleted as a killed write's."""
    run, _ = reported
    folder, ids = photos
    truth = tmp_path / "masks"
    truth.mkdir()
    (truth / "mine_001.png").write_bytes(b"a ground-truth mask")
    (truth / ".notes.tmp").write_text("the user's notes\n")
    command = ["predict", str(run), "--images", str(folder), "--out", str(truth), "--quiet"]
    capsys.readouterr()
    assert main(command) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {truth}: holds files that wsss did not make (.notes.tmp, mine_001.png); give --out")
    assert "\n" not in err and "--overwrite" in err
    assert sorted(p.name for p in truth.iterdir()) == [".notes.tmp", "mine_001.png"]  # nothing written, not a lock
    assert main([*command, "--overwrite"]) == 0
    assert (truth / ".notes.tmp").read_text() == "the user's notes\n"
    assert (truth / "mine_001.png").read_bytes() == b"a ground-truth mask"
    assert all((truth / f"{i}.png").is_file() for i in ids)
    # a folder of wsss's own (stamped): the same command again continues; the user's temporary-looking file stays
    out = tmp_path / "out"
    assert main(["predict", str(run), "--images", str(folder), "--out", str(out), "--quiet"]) == 0
    (out / ".notes.tmp").write_text("the user's notes\n")
    (out / f"{ids[0]}.png").unlink()
    assert main(["predict", str(run), "--images", str(folder), "--out", str(out), "--quiet"]) == 0
    assert (out / ".notes.tmp").read_text() == "the user's notes\n" and (out / f"{ids[0]}.png").is_file()
