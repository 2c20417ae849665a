"""utils/io.py: image ids are file names; per-id output paths stay inside their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsss.core.errors import DataError
from wsss.data.voc import parse_split
from wsss.utils.io import per_id_path


def test_split_ids_are_file_names(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("a..b\n/JPEGImages/x.jpg /SegmentationClassAug/x.png\n\n../../evil\nc/d\n/etc/passwd\n..\n")
    ids, problems = parse_split(path)
    assert ids == ["a..b", "x"]
    assert [p.split(": ")[0] for p in problems] == [f"{path}:{n}" for n in (4, 5, 6, 7)]
    assert parse_split(_write(tmp_path / "t.txt", "../../x.jpg y\n"))[1]  # no '..' in a PSA-style path either
    for bad in ("../x", "a/b", "a\\b", "..", ".", ""):
        with pytest.raises(DataError, match="refused path"):
            per_id_path(tmp_path, bad, ".png")
    assert per_id_path(tmp_path, "a..b", ".png") == tmp_path / "a..b.png"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_plural_of_a_noun_ending_in_s():
    """A count's plural is spelled right (the report once said "73 classs")."""
    from wsss.utils.io import plural

    assert [plural(1, "class"), plural(73, "class"), plural(2, "image"), plural(3, "box")] == [
        "1 class", "73 classes", "2 images", "3 boxes"
    ]  # fmt: skip


@pytest.mark.parametrize("ahead", [0, 1, 3, 10])
def test_read_in_order_yields_in_order_and_raises_at_the_item_s_turn(ahead):
    import threading
    import time

    from wsss.utils.io import read_in_order

    done = []

    def read(i: int) -> int:
        time.sleep(0.002 * (5 - i % 5))  # later items finish first when read ahead
        if i == 6:
            raise DataError(f"item {i}")
        done.append(i)
        return i * i

    got = []
    with pytest.raises(DataError, match="item 6"):
        for value in read_in_order(read, range(9), ahead):
            got.append(value)
    assert got == [i * i for i in range(6)]  # every item before the bad one, in order
    assert not [t for t in threading.enumerate() if t.name.startswith("wsss-read")]  # the pool's threads ended
    assert list(read_in_order(lambda i: -i, [], ahead)) == []


def test_labelled_cam_of_checks_its_classes(tmp_path):
    import numpy as np

    from wsss.utils.io import load_cam_of, load_labelled_cam_of, save_cam

    cam = np.random.default_rng(0).random((4, 3, 5)).astype(np.float16).astype(np.float32)
    save_cam(tmp_path, "a", cam, np.array([0, 1, 0, 1]))
    classes, maps = load_labelled_cam_of(tmp_path, "a", 4)
    assert classes.tolist() == [1, 3]
    np.testing.assert_array_equal(maps, cam[[1, 3]])
    np.testing.assert_array_equal(load_cam_of(tmp_path, "a", 4)[[1, 3]], maps)
    with pytest.raises(DataError, match=r"a\.npz: class ids \[2, 4\] outside 1\.\.3"):
        load_labelled_cam_of(tmp_path, "a", 3)
    with pytest.raises(DataError, match="no CAM file for id 'b'"):
        load_labelled_cam_of(tmp_path, "b", 4)
