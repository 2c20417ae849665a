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
    """Issue 79: the report said "73 classs"."""
    from wsss.utils.io import plural

    assert [plural(1, "class"), plural(73, "class"), plural(2, "image"), plural(3, "box")] == [
        "1 class", "73 classes", "2 images", "3 boxes"
    ]  # fmt: skip
