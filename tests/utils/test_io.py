"""utils/io.py: image ids are file names; per-id output paths stay inside their folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
        "1 class",
        "73 classes",
        "2 images",
        "3 boxes",
    ]


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


def test_an_overlay_names_the_colour_of_each_class_it_shows(tmp_path):
    """A legend in the top left corner: a swatch of each class in the mask, its name beside it, on a white box; the
    picture keeps its size; a photo too small for it, or a mask without a class, gets none."""
    from wsss.utils.io import save_overlay, voc_palette

    image = np.full((240, 320, 3), 90, np.uint8)
    label = np.zeros((240, 320), np.uint8)
    label[150:, 200:] = 2
    label[150:, :100] = 15
    names = [f"class{c}" for c in range(21)]
    save_overlay(tmp_path / "plain.png", image, label)
    save_overlay(tmp_path / "named.png", image, label, class_names=names)
    plain, named = (np.asarray(Image.open(tmp_path / f"{n}.png").convert("RGB")) for n in ("plain", "named"))
    assert named.shape == plain.shape == (240, 320, 3)
    assert (named[:2, :2] == 255).all() and (plain[:2, :2] == 90).all()  # the box, where the photo was
    size, pad = 10, 3  # the legend's text size and padding on a picture of 240 rows (utils/io.py: draw_legend)
    row = round(size * 1.4)
    for k, c in enumerate((2, 15)):  # the classes shown, in class order, each swatch in its palette colour
        assert tuple(named[pad + k * row + size // 2, pad + size // 2]) == tuple(voc_palette()[c])
    box = named[: pad + 2 * row + 1, : pad + size + 1]
    assert not any((box == voc_palette()[c]).all(axis=-1).any() for c in (1, 3))  # no swatch of a class not shown
    np.testing.assert_array_equal(named[120:], plain[120:])  # the rest of the overlay as it was
    small = np.full((12, 16, 3), 90, np.uint8)
    save_overlay(tmp_path / "small.png", small, np.ones((12, 16), np.uint8), class_names=names)
    save_overlay(tmp_path / "small_plain.png", small, np.ones((12, 16), np.uint8))
    assert (tmp_path / "small.png").read_bytes() == (tmp_path / "small_plain.png").read_bytes()
    save_overlay(tmp_path / "none.png", image, np.zeros_like(label), class_names=names)
    assert (np.asarray(Image.open(tmp_path / "none.png")) == 90).all()
