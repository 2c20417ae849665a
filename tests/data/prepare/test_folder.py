"""`wsss prepare folder`: a custom dataset from images + a CSV / txt of image labels (+ masks)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.core.errors import DataError
from wsss.data import VOCDataset, check_dataset
from wsss.data.prepare.folder import plan_folder, prepare_folder
from wsss.data.voc import load_cls_labels, read_split
from wsss.utils.io import read_label_png, save_label_png

CLASSES = ["background", "cat", "dog", "potted plant"]


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(["a.jpg", "b.png", "c.jpg", "d.jpg", "e.jpg"]):
        Image.fromarray(np.full((4, 6, 3), 40 * i, np.uint8)).save(images / name)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return tmp_path


def _vec(*classes: int) -> np.ndarray:
    v = np.zeros(3, dtype=np.float32)
    v[[c - 1 for c in classes]] = 1
    return v


EXPECTED = {"a": _vec(1), "b": _vec(2, 3), "c": _vec(), "d": _vec(1, 2)}


def _check_labels(root) -> None:
    labels = load_cls_labels(root, 4)
    assert sorted(labels) == sorted(EXPECTED)
    for k, v in EXPECTED.items():
        np.testing.assert_array_equal(labels[k], v, err_msg=k)


def test_long_csv(folder):
    (folder / "labels.csv").write_text("image,labels\na.jpg,cat\nb.png,dog;potted plant\nc,\nd.jpg, dog ;cat\n")
    s = prepare_folder(folder / "images", folder / "labels.csv", folder / "classes.txt", folder / "out")
    out = folder / "out"
    _check_labels(out)
    assert (out / "classes.txt").read_text().splitlines() == CLASSES
    assert read_split(out, "train") == ["a", "b", "c", "d"]
    assert not (out / "ImageSets/Segmentation/val.txt").exists()
    assert (out / "JPEGImages" / "b.png").is_file() and not (out / "JPEGImages" / "e.jpg").exists()
    assert any("1 images in" in w and "e" in w for w in s.warnings)  # e has no label
    assert any("no foreground class: c" in w for w in s.warnings)
    assert check_dataset(out, "train", progress=False).ok


def test_label_rows_naming_their_image_by_a_path_are_matched_by_its_file_name(folder):
    """Labelling tools export paths (``photos/a.jpg``; on Windows with backslashes): legal, matched by the file name
    and said in a warning; two paths of one photo are refused naming both rows."""
    rows = ["image,labels", "photos/a.jpg,cat", r"C:\shoot\b.png,dog;potted plant", "./c,", "d.jpg, dog ;cat"]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    s = prepare_folder(folder / "images", folder / "labels.csv", folder / "classes.txt", folder / "out")
    _check_labels(folder / "out")
    (said,) = [w for w in s.warnings if "by a path" in w]
    assert said.startswith("3 label row(s)") and "photos/a.jpg (" in said and "labels.csv:2" in said
    (folder / "labels.txt").write_text("day1/a.jpg cat\nday2/a.jpg dog\n")
    with pytest.raises(DataError, match=r"labels.txt:2: image 'day2/a.jpg' is labelled twice \(first at .*txt:1\)"):
        prepare_folder(folder / "images", folder / "labels.txt", folder / "classes.txt", folder / "o")


def test_wide_csv_and_txt(folder):
    (folder / "wide.csv").write_text("image,cat,dog,potted plant\na,1,0,0\nb,0,1,1\nc,0,0,0\nd,1,1,0\n")
    prepare_folder(folder / "images", folder / "wide.csv", folder / "classes.txt", folder / "w")
    _check_labels(folder / "w")
    (folder / "labels.txt").write_text("a.jpg cat\nb 2 3\n# comment\nc\nd dog cat\n")
    prepare_folder(folder / "images", folder / "labels.txt", folder / "classes.txt", folder / "t")
    _check_labels(folder / "t")


def test_every_unknown_class_of_a_labels_file_is_listed_in_one_error(folder, capsys):
    """A labels file with several unknown classes named only the first; each is listed, with its lines
    and a close class name, in one error, for the long and wide CSV and the text form."""
    args = [folder / "images", folder / "labels.csv", folder / "classes.txt", folder / "out"]
    (folder / "labels.csv").write_text("image,labels\na.jpg,cta\nb.png,dgo;zebra\nc,\nd.jpg,dgo;cat\n")
    with pytest.raises(DataError) as e:
        prepare_folder(*args)
    assert str(e.value) == (
        f"{folder / 'labels.csv'}: 3 unknown classes: 'cta' (line 2; did you mean 'cat'?), 'dgo' (lines 3, 5; did "
        "you mean 'dog'?), 'zebra' (line 3); classes: cat, dog, potted plant"
    )
    (folder / "wide.csv").write_text("image,cta,dog,zebra\na,1,0,0\n")
    with pytest.raises(DataError, match=r"wide.csv: 2 unknown classes: 'cta' \(line 1; did you mean 'cat'\?\), 'zeb"):
        prepare_folder(folder / "images", folder / "wide.csv", folder / "classes.txt", folder / "out")
    (folder / "labels.txt").write_text("a cta\nb 9 dog\nc zebra\n")
    with pytest.raises(DataError, match=r"labels.txt: 3 unknown classes: 'cta' \(line 1; .*'9' \(line 2\), 'zebra'"):
        prepare_folder(folder / "images", folder / "labels.txt", folder / "classes.txt", folder / "out")
    (folder / "labels.csv").write_text("image,labels\na.jpg,dgo\nb.png,dgo\n")  # one name: where it is
    with pytest.raises(DataError, match=r"labels.csv:2 \(and line 3\): unknown class 'dgo' \(did you mean 'dog'"):
        prepare_folder(*args)
    argv = ["prepare", "folder", "--images", str(folder / "images"), "--labels", str(folder / "labels.txt")]
    assert main([*argv, "--classes", str(folder / "classes.txt"), "--out", str(folder / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 unknown classes" in err  # one line
    assert not (folder / "out").exists() and not (folder / "o").exists()


@pytest.mark.parametrize(
    "b, d, said", [("dog|potted plant", "dog|cat", "'|'"), ('"dog, potted plant"', '"dog,cat"', "','")]
)
def test_labels_joined_by_another_common_separator_are_read_when_it_alone_makes_every_name_a_class(folder, b, d, said):
    """Another tool's separator (`|`, `,` in quotes, spaces) between a row's classes: read, with a warning,
    when splitting by it (and not by `;`) makes every name of every row a class."""
    (folder / "labels.csv").write_text(f"image,labels\na.jpg,cat\nb.png,{b}\nc,\nd.jpg,{d}\n")
    s = prepare_folder(folder / "images", folder / "labels.csv", folder / "classes.txt", folder / "out")
    _check_labels(folder / "out")
    (warned,) = [w for w in s.warnings if "separated by" in w]
    assert f"separated by {said}, not ';'" in warned
    (folder / "spaces.csv").write_text("image,labels\na.jpg,cat\nb.png,dog\nd.jpg, dog  cat\n")
    s = prepare_folder(folder / "images", folder / "spaces.csv", folder / "classes.txt", folder / "s")
    assert load_cls_labels(folder / "s", 4)["d"].tolist() == [1, 1, 0]
    assert any("separated by spaces, not ';'" in w for w in s.warnings)


def test_labels_whose_separator_is_not_plain_are_an_error_naming_the_separator_expected(folder):
    """Spaces that would split a class name (`potted plant`), or two separators in one file: not guessed; the
    error says that a row's classes are separated by `;` and which separators the names hold."""
    rows = ["image,labels", "a.jpg,cat", "b.png,dog;potted plant", "c,", "d.jpg,dog cat"]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as e:
        prepare_folder(folder / "images", folder / "labels.csv", folder / "classes.txt", folder / "out")
    assert str(e.value).startswith(f"{folder / 'labels.csv'}:5: unknown class 'dog cat'")
    assert str(e.value).endswith("a cell's classes are separated by ';' ('cat;dog'), and these names hold spaces")
    rows = ["image,labels", "a.jpg,cat dog", "d.jpg,dog|cat"]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"2 unknown classes: .*separated by ';' .*these names hold spaces and '\|'$"):
        prepare_folder(folder / "images", folder / "labels.csv", folder / "classes.txt", folder / "out")
    (folder / "labels.csv").write_text("image,labels\na.jpg,zebra lion\n")  # no class either way: no word on it
    with pytest.raises(DataError, match=r"unknown class 'zebra lion'; classes: cat, dog, potted plant$"):
        prepare_folder(folder / "images", folder / "labels.csv", folder / "classes.txt", folder / "out")
    assert not (folder / "out").exists()


def test_a_class_name_that_differs_only_in_case_is_taken_with_a_warning(folder, capsys):
    """``Cat`` for the class ``cat`` is that class (the intent is plain; refusing it would refuse valid
    labels), said in a warning naming each such name; in every form of labels file, and in ``wsss tag``'s edited
    tags.csv. A name that differs only in case from two classes is an error that says so."""
    rows = "image,labels\na.jpg,Cat\nb.png,DOG;Potted Plant\nc,\nd.jpg,dog;CAT\n"
    (folder / "labels.csv").write_text(rows)
    s = prepare_folder(folder / "images", folder / "labels.csv", folder / "classes.txt", folder / "out")
    _check_labels(folder / "out")
    (said,) = [w for w in s.warnings if "only in case" in w]
    assert said == (
        f"{folder / 'labels.csv'}: class names that differ from a class only in case, each taken as that class: 'Cat' "
        "as 'cat' (line 2), 'DOG' as 'dog' (line 3), 'Potted Plant' as 'potted plant' (line 3), 'CAT' as 'cat' (line 5)"
    )
    (folder / "wide.csv").write_text("image,CAT,Dog,potted plant\na,1,0,0\nb,0,1,1\nc,0,0,0\nd,1,1,0\n")
    s = prepare_folder(folder / "images", folder / "wide.csv", folder / "classes.txt", folder / "w")
    _check_labels(folder / "w")
    assert any("'CAT' as 'cat' (line 1), 'Dog' as 'dog' (line 1)" in w for w in s.warnings)
    (folder / "labels.txt").write_text("a.jpg CAT\nb 2 3\nc\nd Dog cat\n")
    argv = ["prepare", "folder", "--images", str(folder / "images"), "--labels", str(folder / "labels.txt"), "--quiet"]
    assert main([*argv, "--classes", str(folder / "classes.txt"), "--out", str(folder / "t")]) == 0
    _check_labels(folder / "t")
    assert "warning: " in capsys.readouterr().out
    (folder / "two.txt").write_text("background\nCat\ncat\n")
    (folder / "labels.txt").write_text("a CAT\n")
    with pytest.raises(DataError, match=r"unknown class 'CAT' \(differs only in case from 'Cat' and 'cat': name one"):
        prepare_folder(folder / "images", folder / "labels.txt", folder / "two.txt", folder / "x")

    from wsss.runs.tag import read_tags_csv

    (folder / "tags.csv").write_text("image,labels,background\na,Cat,0.1\nb,dog;Potted plant,0.2\nc,,0.3\n")
    tags, warnings = read_tags_csv(folder / "tags.csv", CLASSES)
    assert {k: v.tolist() for k, v in tags.items()} == {"a": [1, 0, 0], "b": [0, 1, 1], "c": [0, 0, 0]}
    assert warnings == [
        f"{folder / 'tags.csv'}: class names that differ from a class only in case, each taken as "
        "that class: 'Cat' as 'cat' (line 2), 'Potted plant' as 'potted plant' (line 3)"
    ]
    (folder / "tags.csv").write_text("image,labels\na,cta\nb,zebra;dog\n")
    with pytest.raises(DataError, match=r"tags.csv: 2 unknown classes: 'cta' \(line 2; did you mean 'cat'\?\), 'zeb"):
        read_tags_csv(folder / "tags.csv", CLASSES)


def test_masks_and_val_split(folder):
    (folder / "labels.csv").write_text("image,labels\na.jpg,cat\nb.png,dog;potted plant\nc,\nd.jpg,dog;cat\n")
    masks = folder / "masks"
    ma = np.array([[0, 1, 1, 0, 0, 0]] * 3 + [[255] * 6], dtype=np.uint8)
    mb = np.array([[2, 2, 3, 3, 0, 0]] * 4, dtype=np.uint8)
    save_label_png(masks / "a.png", ma)
    Image.fromarray(mb, mode="L").save(masks / "b.png")  # a grayscale mask is accepted too
    out = folder / "out"
    s = prepare_folder(
        folder / "images", folder / "labels.csv", folder / "classes.txt", out, masks=masks, val_fraction=0.5, seed=3
    )
    np.testing.assert_array_equal(read_label_png(out / "SegmentationClass" / "a.png"), ma)
    np.testing.assert_array_equal(read_label_png(out / "SegmentationClass" / "b.png"), mb)
    assert Image.open(out / "SegmentationClass" / "b.png").mode == "P"
    val = read_split(out, "val")  # half of the masked images (0.5 of 2), drawn from them; the other stays in train
    assert len(val) == 1 and val[0] in ("a", "b")
    assert read_split(out, "train") == sorted({"a", "b", "c", "d"} - set(val))
    assert s.counts == {"masks": 2, "images": 4, "train": 3, "val": 1, "images_placed": 4}
    ds = VOCDataset(out, "val", require_masks=True)
    assert ds.class_names == CLASSES
    # the plan of the same inputs is the dataset written, and writes nothing (`wsss route --plan` reads it)
    plan = plan_folder(
        folder / "images",
        folder / "labels.csv",
        folder / "classes.txt",
        masks=masks,
        val_fraction=0.5,
        seed=3,
        out=folder / "planned",
    )
    assert (plan.train, plan.val, plan.masked) == (read_split(out, "train"), val, {"a", "b"})
    assert plan.class_names == CLASSES and plan.labels["b"] == [2, 3] and not (folder / "planned").exists()
    save_label_png(masks / "a.png", np.full((4, 6), 9, np.uint8))
    with pytest.raises(DataError, match=r"(?s)problem.*nothing was written to .*planned:.*a.png: illegal mask"):
        plan_folder(
            folder / "images", folder / "labels.csv", folder / "classes.txt", masks=masks, out=folder / "planned"
        )


def test_masks_that_match_no_photo_are_named(folder):
    """Predictions written into the folder of the masks passed for ground truth once their photos were
    added, and `prepare folder --masks` said nothing of masks that match no photo. It names them now (a warning: a
    folder of masks for more photos than given is legal)."""
    (folder / "labels.csv").write_text("image,labels\na.jpg,cat\nb.png,dog\n")
    masks = folder / "masks"
    save_label_png(masks / "a.png", np.array([[0, 1, 1, 0, 0, 0]] * 4, dtype=np.uint8))
    for stray in ("x1", "x2"):
        save_label_png(masks / f"{stray}.png", np.zeros((4, 6), dtype=np.uint8))
    s = prepare_folder(folder / "images", folder / "labels.csv", folder / "classes.txt", folder / "out", masks=masks)
    assert s.counts["masks"] == 1
    assert f"2 mask(s) in {masks} match no photo in {folder / 'images'} and were skipped: x1.png, x2.png" in s.warnings


def test_errors(folder, capsys):
    args = [folder / "images", folder / "labels.csv", folder / "classes.txt", folder / "out"]
    (folder / "labels.csv").write_text("image,labels\na.jpg,cat\nb.png,dgo\n")
    with pytest.raises(DataError, match=r"labels.csv:3: unknown class 'dgo' \(did you mean 'dog'\?\)"):
        prepare_folder(*args)
    (folder / "labels.csv").write_text("image,labels\na.jpg,cat\nzz.jpg,dog\nyy,cat\n")
    with pytest.raises(DataError, match=r"2 labelled images are not in .*images: zz.jpg \(.*labels.csv:3\), yy"):
        prepare_folder(*args)
    (folder / "labels.csv").write_text("name,classes\na.jpg,cat\n")
    with pytest.raises(DataError, match="header must be 'image,labels'"):
        prepare_folder(*args)
    (folder / "labels.csv").write_text("image,cat,dgo\na,1,0\n")
    with pytest.raises(DataError, match="labels.csv:1: unknown class 'dgo'"):
        prepare_folder(*args)
    (folder / "labels.txt").write_text("a cat\na dog\n")
    with pytest.raises(DataError, match=r"labels.txt:2: image 'a' is listed twice \(first at .*labels.txt:1\)"):
        prepare_folder(folder / "images", folder / "labels.txt", folder / "classes.txt", folder / "out")
    (folder / "labels.txt").write_text("a cat\nb 4\n")
    with pytest.raises(DataError, match="labels.txt:2: unknown class '4'"):
        prepare_folder(folder / "images", folder / "labels.txt", folder / "classes.txt", folder / "out")

    (folder / "labels.txt").write_text("a cat\n")
    save_label_png(folder / "masks" / "a.png", np.full((4, 6), 7, np.uint8))
    with pytest.raises(DataError, match=r"a.png: illegal mask values \[7\] \(classes are 0..3"):
        prepare_folder(
            folder / "images", folder / "labels.txt", folder / "classes.txt", folder / "o", masks=folder / "masks"
        )
    save_label_png(folder / "masks" / "a.png", np.zeros((5, 6), np.uint8))
    with pytest.raises(DataError, match=r"a.png: mask size 6x5 differs from the image \(6x4\)"):
        prepare_folder(
            folder / "images", folder / "labels.txt", folder / "classes.txt", folder / "o", masks=folder / "masks"
        )

    argv = ["prepare", "folder", "--images", str(folder / "images"), "--labels", str(folder / "nope.csv")]
    assert main(argv + ["--classes", str(folder / "classes.txt"), "--out", str(folder / "o")]) == 1
    assert "nope.csv: label file not found" in capsys.readouterr().err
    argv[-1] = str(folder / "labels.txt")
    assert main(argv + ["--classes", str(folder / "classes.txt"), "--out", str(folder / "o"), "--quiet"]) == 0
    assert read_split(folder / "o", "train") == ["a"]


def test_without_labels_every_image_is_taken_unlabelled_and_masks_are_checked_for_values_only(folder):
    """No labels file (the route to `wsss tag`): every image, no class yet; a mask showing any class is fine,
    an illegal value is still refused."""
    masks = folder / "masks"
    masks.mkdir()
    save_label_png(masks / "a.png", np.array([[0, 1, 2, 3, 255, 0]] * 4, np.uint8))
    argv = [
        "prepare",
        "folder",
        "--images",
        str(folder / "images"),
        "--classes",
        str(folder / "classes.txt"),
        "--masks",
        str(masks),
        "--val-fraction",
        "0",
        "--out",
        str(folder / "out"),
        "--quiet",
    ]
    assert main(argv) == 0
    labels = load_cls_labels(folder / "out", 4)
    assert sorted(labels) == ["a", "b", "c", "d", "e"] and not any(v.any() for v in labels.values())
    assert read_split(folder / "out", "train") == ["a", "b", "c", "d", "e"]
    assert VOCDataset(folder / "out", "train").has_mask("a")
    save_label_png(masks / "a.png", np.array([[0, 7, 0, 0, 0, 0]] * 4, np.uint8))
    with pytest.raises(DataError, match="illegal mask values"):
        prepare_folder(folder / "images", None, folder / "classes.txt", folder / "out2", masks=masks)


def test_photos_of_any_case_and_webp_are_read_and_what_is_not_a_photo_is_named(tmp_path):
    """``prepare folder`` reads the photos ``wsss predict --images`` reads (JPEG, PNG or WebP, by suffix in any
    case): a camera's ``.Jpg`` or a ``.webp`` is not skipped unsaid; a file that is not a photo and a subfolder are
    named in a warning; hidden files (macOS's ``._a.jpg``) are neither read nor named. The dataset finds each image;
    where the photos keep their names (``--image-mode none``) a suffix it would not find is refused."""
    images = tmp_path / "images"
    (images / "2023").mkdir(parents=True)
    for i, name in enumerate(["a.Jpg", "b.webp", "c.PNG", "2023/d.jpg"]):
        Image.fromarray(np.full((4, 6, 3), 40 * i, np.uint8)).save(images / name, lossless=True)
    (images / "notes.txt").write_text("shot in May\n")
    (images / "._a.jpg").write_bytes(b"\0\5\26\7")  # AppleDouble metadata, not a photo
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (tmp_path / "labels.csv").write_text("image,labels\na.Jpg,cat\nb,dog\nc.PNG,cat\n")
    out = tmp_path / "out"
    summary = prepare_folder(images, tmp_path / "labels.csv", tmp_path / "classes.txt", out, progress=False)
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == ["a.jpg", "b.webp", "c.PNG"]
    (left,) = [w for w in summary.warnings if "left out" in w]
    assert left.endswith(": 2023/, notes.txt") and "._a.jpg" not in left
    ds = VOCDataset(out, "train")
    for i, id in enumerate(["a", "b", "c"]):  # each found and decoded (a flat image: JPEG keeps it within 2)
        assert abs(float(ds.load_image(id).mean()) - 40 * i) <= 2
    assert check_dataset(out).ok
    with pytest.raises(DataError, match="--image-mode none keeps the photos' names") as refused:
        prepare_folder(
            images,
            tmp_path / "labels.csv",
            tmp_path / "classes.txt",
            tmp_path / "none",
            image_mode="none",
            progress=False,
        )
    assert str(refused.value).startswith(f"{images}:") and "a.Jpg" in str(refused.value)
    assert "b.webp" not in str(refused.value) and not (tmp_path / "none").exists()
