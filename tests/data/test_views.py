"""Views of a data set (data/views.py): splits and masks of the route's folds and stages, the photos linked."""

from __future__ import annotations

from wsss.data.views import make_view
from wsss.data.voc import read_split


def test_a_view_made_again_keeps_a_file_of_someone_elses_in_its_folder(synth_root, tmp_path):
    """A view of other splits used to rmtree its folder whole, a notes.txt there with it (the route's seg_data after a
    mask was added and --overwrite). Its own entries are made again; the file stays."""
    train = read_split(synth_root, "train")
    dest = tmp_path / "view"
    make_view(synth_root, dest, {"train": train}, train[:4])
    (dest / "notes.txt").write_text("mine\n")
    (dest / "ImageSets/Segmentation/mine.md").write_text("mine\n")
    make_view(synth_root, dest, {"train": train[:10], "val": train[10:]}, train[:6])
    assert (dest / "notes.txt").read_text() == (dest / "ImageSets/Segmentation/mine.md").read_text() == "mine\n"
    assert read_split(dest, "train") == train[:10] and read_split(dest, "val") == train[10:]
    assert sorted(p.stem for p in (dest / "SegmentationClass").iterdir()) == sorted(train[:6])
    assert (dest / "JPEGImages").is_symlink() and not (dest.parent / "view.tmp").exists()
    make_view(synth_root, tmp_path / "plain", {"train": train}, [])  # a new folder: made whole
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "ImageSets",
        "JPEGImages",
        "SegmentationClass",
        "classes.txt",
        "cls_labels.npy",
        "view.json",
    ]
