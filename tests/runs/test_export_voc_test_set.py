"""`wsss export voc-test` says "upload it" only for VOC 2012's test set (1,456 VOC ids, 21 classes)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from wsss.cli import main
from wsss.core.config import load_config, save_config
from wsss.runs.export import voc_test_mismatch
from wsss.utils.io import save_label_png


def _run(tmp_path, ids):
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "JPEGImages").mkdir()
    run = tmp_path / "run"
    for i in ids:
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
        save_label_png(run / "predictions" / "test" / f"{i}.png", np.zeros((2, 3), np.uint8))
    save_config(load_config(None, [f"data.root={root}"]), run / "config.yaml")
    return run


def test_a_small_split_is_exported_with_a_warning_not_upload(tmp_path, capsys):
    run = _run(tmp_path, ["2008_000001", "2010_000003"])
    assert main(["export", "voc-test", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "upload" not in out and "2 ids, VOC 2012's test set has 1,456" in err
    assert (run / "export" / "voc2012_test.zip").is_file()


def test_the_full_test_set_says_upload(tmp_path, capsys):
    ids = [f"2008_{k:06d}" for k in range(1, 1457)]
    assert voc_test_mismatch(ids, ["c"] * 21) is None
    assert "ids are not VOC" in voc_test_mismatch([*ids[:-1], "my_photo"], ["c"] * 21)
    assert "3 classes" in voc_test_mismatch(ids, ["c"] * 3)
    run = _run(tmp_path, ids)
    assert main(["export", "voc-test", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "upload it" in out and "1,456 test ids" in out and err == ""
