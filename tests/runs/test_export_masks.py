"""`wsss export masks`: a route's masks (or a run's predictions) as each labelling tool's pre-annotations, read back
through ``--masks`` (``open_masks``) to the same masks (docs/export.md#masks-for-a-labelling-tool). The tools' own
libraries read these files in tests/interop/ (make test-interop)."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from PIL import Image

from wsss.core.config import load_config, save_config
from wsss.core.errors import DataError, UsageError
from wsss.data.prepare.annotations import open_masks
from wsss.runs.export_masks import export_masks, mask_polygons
from wsss.utils.io import save_label_png

CLASSES = ["background", "cat", "dog", "potted plant"]
H, W = 24, 30


def nested_masks() -> dict[str, np.ndarray]:
    """Masks whose regions nest: a cat ring around a dog holding a background hole, a plant touching the border, a
    lone pixel, a region of two diagonal pixels."""
    a = np.zeros((H, W), np.uint8)
    a[2:20, 3:25] = 1
    a[5:16, 7:20] = 2
    a[8:12, 10:14] = 0
    a[9, 11] = 3
    a[18:, 26:] = 3
    a[0, 0] = 2
    a[21, 2] = a[22, 3] = 1
    b = np.zeros((H, W), np.uint8)
    b[:, 15:] = 2
    b[4:9, 20:26] = 1
    return {"a": a, "b": b}


def make_route(tmp_path, masks: dict[str, np.ndarray] | None = None):
    """A route's folder as `wsss route` leaves it: OUT/masks/<id>.png (and its overlays), OUT/data_facts.json naming
    the data root and the class names; the photos in ROOT/JPEGImages."""
    masks = nested_masks() if masks is None else masks
    root, out = tmp_path / "data", tmp_path / "route"
    (root / "JPEGImages").mkdir(parents=True)
    (out / "masks" / "overlay").mkdir(parents=True)
    for id, mask in masks.items():
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / "JPEGImages" / f"{id}.jpg")
        save_label_png(out / "masks" / f"{id}.png", mask)
    facts = {"root": str(root), "class_names": CLASSES, "train": sorted(masks), "val": []}
    (out / "data_facts.json").write_text(json.dumps(facts))
    return out


def _read_back(path, masks):
    source = open_masks(path, CLASSES)
    got = {}
    for id in masks:
        key = source.find(source.path / f"{id}.jpg")
        assert key is not None, id
        got[id] = source.read(key)
    return got


@pytest.mark.parametrize("fmt", ["coco", "cvat", "labelme", "labelstudio"])
def test_each_format_reads_back_through_masks_as_the_same_masks(tmp_path, fmt):
    """Every format gives back the route's masks exactly: raster formats by construction, LabelMe's polygons because
    each region's outer boundary is drawn over the regions around it, holes by the regions that fill them. Label
    Studio's tasks are read back as its export has them once the predictions are accepted as annotations."""
    route, masks = make_route(tmp_path), nested_masks()
    res = export_masks(route, fmt, tmp_path / "export", progress=False)
    path = res.masks_path
    if fmt == "labelstudio":
        tasks = json.loads((tmp_path / "export" / "tasks.json").read_text())
        for n, task in enumerate(tasks, start=1):
            task["id"], task["annotations"] = n, [{"id": n, "result": task.pop("predictions")[0]["result"]}]
            task["data"]["image"] = f"/data/upload/1/{n:08x}-{task['data']['image'].rsplit('=', 1)[-1]}"
        path = tmp_path / "ls_export.json"
        path.write_text(json.dumps(tasks))
        assert "<BrushLabels" in (tmp_path / "export" / "label_config.xml").read_text()
    got = _read_back(path, masks)
    for id, mask in masks.items():
        np.testing.assert_array_equal(got[id], mask, err_msg=f"{fmt} {id}")


def test_polygons_come_in_the_order_that_draws_the_mask(tmp_path):
    """The background hole inside the dog is a ``_background_`` polygon after the dog's; the cat ring's before it;
    background that reaches the border is drawn by nothing."""
    shapes = mask_polygons(nested_masks()["a"])
    classes = [c for c, _ in shapes]
    lone = next(i for i, (c, xy) in enumerate(shapes) if c == 3 and (xy == [11, 9]).all())
    assert classes.index(1) < classes.index(2) < classes.index(0) < lone
    assert classes.count(0) == 1 and all(len(xy) >= 3 for _, xy in shapes)


def test_a_run_s_predictions_folder_is_a_source(tmp_path, wsss_cli):
    """``RUN/predictions/<split>``: the class names of the run's data root; end to end through the command line,
    with a progress bar off by --quiet."""
    route = make_route(tmp_path)
    root = tmp_path / "data"
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    run = tmp_path / "run"
    (run / "predictions" / "val").mkdir(parents=True)
    save_config(load_config(None, [f"data.root={root}"]), run / "config.yaml")
    for p in (route / "masks").glob("*.png"):
        (run / "predictions" / "val" / p.name).write_bytes(p.read_bytes())
    out = wsss_cli(
        "export",
        "masks",
        str(run / "predictions" / "val"),
        "--format",
        "cvat",
        "--out",
        str(tmp_path / "cvat"),
        "--quiet",
    )
    assert "wrote the masks of 2 photo(s) for cvat" in out
    assert (tmp_path / "cvat" / "labelmap.txt").read_text().splitlines()[1:] == [
        "background:0,0,0::",
        "cat:128,0,0::",
        "dog:0,128,0::",
        "potted plant:128,128,0::",
    ]
    got = _read_back(tmp_path / "cvat", nested_masks())
    np.testing.assert_array_equal(got["a"], nested_masks()["a"])


def test_no_overwrite_without_asking_and_never_inside_the_source(tmp_path, wsss_cli):
    """A second export into the same folder is refused without --overwrite (nothing changed) and replaces the files
    with it; --out inside SRC is refused; a file of the user's in --out is left."""
    route = make_route(tmp_path)
    out = tmp_path / "lm"
    export_masks(route, "labelme", out, progress=False)
    (out / "notes.txt").write_text("mine")
    before = (out / "a.json").read_text()
    (out / "a.json").write_text("{}")
    with pytest.raises(UsageError, match="--overwrite"):
        export_masks(route, "labelme", out, progress=False)
    assert (out / "a.json").read_text() == "{}"
    export_masks(route, "labelme", out, progress=False, overwrite=True)
    assert (out / "a.json").read_text() == before and (out / "notes.txt").read_text() == "mine"
    err = wsss_cli("export", "masks", str(route), "--format", "coco", "--out", str(route / "coco"), code=1)
    assert "inside" in err and not (route / "coco").exists()
    err = wsss_cli("export", "masks", str(tmp_path), "--format", "coco", "--out", str(tmp_path / "x"), code=1)
    assert "not a route's folder" in err


def test_bad_masks_are_named_and_ignore_is_said(tmp_path):
    """A value that is no class is a DataError naming the mask; a mask whose size is not its photo's too; ignore
    (255) is written as background, with a warning."""
    masks = nested_masks()
    masks["a"][0, 1] = 255
    res = export_masks(make_route(tmp_path / "one", masks), "coco", tmp_path / "one" / "x", progress=False)
    assert any("ignore pixels (255)" in w and "a.png" in w for w in res.warnings)
    masks["b"][0, 0] = 7
    route = make_route(tmp_path / "two", masks)
    with pytest.raises(DataError, match=r"b\.png: values \[7\] are not class indices 0..3"):
        export_masks(route, "coco", tmp_path / "two" / "x", progress=False)
    route = make_route(tmp_path / "three")
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "three" / "data" / "JPEGImages" / "a.jpg")
    with pytest.raises(DataError, match="a.png: mask is 30x24, its photo"):
        export_masks(route, "cvat", tmp_path / "three" / "x", progress=False)


def test_the_documented_export_commands_are_taken_by_the_parser_and_name_a_tested_format():
    """Each `wsss export masks` line of the docs is one the parser takes, with a format the tests above export."""
    from conftest import REPO
    from test_readme import bash_commands
    from wsss.cli import parse_args

    lines = [c for page in ("export.md", "own-photos.md") for c in bash_commands((REPO / "docs" / page).read_text())]
    lines = [c for c in lines if c.startswith("wsss export masks")]
    assert len(lines) >= 3
    for line in lines:
        args = parse_args(shlex.split(line)[1:])
        assert args.fn.__name__ == "cmd_export_masks" and args.mask_format in ("coco", "cvat", "labelstudio")
