"""A photo listed twice in ``tags.csv`` (``wsss tag``'s file, read back by ``--labels-from`` and the route) is refused
as a labels file refuses it, naming both rows; it took its last row without a word."""

from __future__ import annotations

import pytest

from wsss.core.errors import DataError
from wsss.data.prepare.folder import read_label_file
from wsss.runs.tag import read_tags_csv

CLASSES = ["background", "cat", "dog"]


def test_a_photo_listed_twice_is_refused_naming_both_rows(tmp_path):
    tags = tmp_path / "tags.csv"
    tags.write_text("image,labels,background\na,cat,0.1\nb,dog,0.2\n a ,dog,0.3\n")
    with pytest.raises(DataError) as e:
        read_tags_csv(tags, CLASSES)
    assert str(e.value) == f"{tags}:4: image 'a' is listed twice (first at {tags}:2)"
    labels = tmp_path / "labels.csv"  # the same words as a labels file's
    labels.write_text("image,labels\na,cat\nb,dog\na,dog\n")
    with pytest.raises(DataError, match=rf"^{labels}:4: image 'a' is listed twice \(first at {labels}:2\)$"):
        read_label_file(labels, CLASSES)
    tags.write_text("image,labels,background\na,cat,0.1\nb,dog,0.2\n")  # each once: read
    assert {k: v.tolist() for k, v in read_tags_csv(tags, CLASSES)[0].items()} == {"a": [1, 0], "b": [0, 1]}


def test_a_spreadsheets_semicolon_separated_csv_is_read_with_a_note(tmp_path):
    """Excel saves "CSV" with ';' between columns where ',' is the decimal mark; the classes of a row, joined by ';'
    too, are then quoted. Both readers took the header 'image;labels' for a wrong one."""
    tags = tmp_path / "tags.csv"
    tags.write_text('image;labels;background\na;"cat;dog";0,1\nb;dog;0,2\n')
    got, notes = read_tags_csv(tags, CLASSES)
    assert {k: v.tolist() for k, v in got.items()} == {"a": [1, 1], "b": [0, 1]}
    assert notes == [f"{tags}: columns separated by ';', not ','"]
    labels = tmp_path / "labels.csv"
    labels.write_text('image;labels\na;"cat;dog"\nb;dog\n')
    entries, warnings = read_label_file(labels, CLASSES)
    assert {k: v[0] for k, v in entries.items()} == {"a": [1, 2], "b": [2]}
    assert any("columns separated by ';'" in w for w in warnings)


def test_a_tags_file_that_is_not_utf8_is_one_error_naming_it(tmp_path):
    tags = tmp_path / "tags.csv"
    tags.write_bytes(b"image,labels\n\xff\xfea,cat\n")
    with pytest.raises(DataError, match=rf"^{tags}: cannot read the tags \("):
        read_tags_csv(tags, CLASSES)
