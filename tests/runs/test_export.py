"""`wsss export voc-test`: the PASCAL VOC evaluation server's zip layout."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.core.config import load_config, save_config
from wsss.core.errors import DataError
from wsss.runs.export import export_voc_test
from wsss.utils.io import save_label_png, voc_palette

IDS = ["2008_000001", "2008_000002", "2010_000003"]
PREDS = {
    "2008_000001": np.array([[0, 0, 15], [15, 15, 0]], np.uint8),
    "2008_000002": np.array([[20, 1, 0], [0, 0, 0]], np.uint8),
    "2010_000003": np.array([[0, 7, 7], [7, 7, 7]], np.uint8),
}


@pytest.fixture
def run(tmp_path):
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("".join(f"{i}\n" for i in IDS))
    (root / "JPEGImages").mkdir()
    for i in IDS:
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(None, [f"data.root={root}"]), run / "config.yaml")
    for i, p in PREDS.items():
        save_label_png(run / "predictions" / "test" / f"{i}.png", p)
    return run


def test_export_layout(run, tmp_path):
    out = export_voc_test(run, out=tmp_path / "sub.zip").path
    with zipfile.ZipFile(out) as zf:
        names = sorted(zf.namelist())
        assert names == [f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in IDS]
        for i in IDS:
            im = Image.open(io.BytesIO(zf.read(f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png")))
            assert im.mode == "P"
            assert np.asarray(im.getpalette()[:63], np.uint8).tolist() == voc_palette(21).flatten().tolist()
            np.testing.assert_array_equal(np.asarray(im), PREDS[i])


def test_export_errors_and_cli(run, tmp_path, capsys):
    (run / "predictions" / "test" / f"{IDS[1]}.png").unlink()
    (run / "predictions" / "test" / f"{IDS[2]}.png").unlink()
    with pytest.raises(DataError, match=rf"2 of 3 ids of test have no prediction: {IDS[1]}, {IDS[2]}"):
        export_voc_test(run)
    assert not (run / "export").exists()  # nothing half-written

    save_label_png(run / "predictions" / "test" / f"{IDS[1]}.png", np.full((2, 3), 21, np.uint8))
    save_label_png(run / "predictions" / "test" / f"{IDS[2]}.png", PREDS[IDS[2]])
    with pytest.raises(DataError, match=r"2008_000002.png: values \[21\] are not class indices 0..20"):
        export_voc_test(run)
    save_label_png(run / "predictions" / "test" / f"{IDS[1]}.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(DataError, match=r"2008_000002.png: prediction is 3x3, image .* is 3x2"):
        export_voc_test(run)
    assert list((run / "export").iterdir()) == []  # the failed zip left no file, temporary or final

    save_label_png(run / "predictions" / "test" / f"{IDS[1]}.png", PREDS[IDS[1]])
    assert main(["export", "voc-test", str(run)]) == 0
    assert "voc2012_test.zip" in capsys.readouterr().out
    assert zipfile.ZipFile(run / "export" / "voc2012_test.zip").testzip() is None
    assert main(["export", "voc-test", str(run), "--split", "val"]) == 1
    assert "val.txt: split file not found" in capsys.readouterr().err


def test_export_takes_the_words_of_a_run(run, tmp_path, capsys):
    """``wsss export voc-test RUN data.root=DIR``: the word merged over the run's saved config (the file
    kept), as every command that reads a run takes them."""
    moved = tmp_path / "moved"
    (run.parent / "VOC2012").rename(moved)
    saved = (run / "config.yaml").read_text()
    assert main(["export", "voc-test", str(run)]) == 1  # the saved data.root is gone
    capsys.readouterr()
    assert main(["export", "voc-test", str(run), f"data.root={moved}"]) == 0
    assert zipfile.ZipFile(run / "export" / "voc2012_test.zip").testzip() is None
    assert (run / "config.yaml").read_text() == saved


def test_the_zip_never_lands_on_an_input_or_the_runs_own_files(run, capsys):
    """--out in the predictions it zips, on the run's config, among the photos: refused in one line, nothing
    written."""
    before = {p: p.read_bytes() for p in run.parent.rglob("*") if p.is_file()}
    for out in (
        run / "predictions" / "test" / f"{IDS[0]}.png",
        run / "config.yaml",
        run.parent / "VOC2012" / "JPEGImages" / "test.zip",
    ):
        assert main(["export", "voc-test", str(run), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.count("error: ") == 1 and f"{out}: --out " in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in run.parent.rglob("*") if p.is_file()} == before
