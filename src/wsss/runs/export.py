"""Export predictions in the layout of an evaluation server.

``export_voc_test``: the PASCAL VOC 2012 segmentation server takes a tar/zip holding
``results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` for every id of the test list: one
palette PNG per image, pixel value = class index (0 = background, 1..20), at the image's size.
``comp6`` is the competition "trained on any data" (WSSS papers train on SBD too; ``comp5`` is VOC
data only). The predictions come from ``wsss predict RUN --split test`` (``RUN/predictions/test``).
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.core.errors import DataError
from wsss.core.files import atomic_write, check_output_apart, check_output_file, remove_dead_temps
from wsss.data.classes import read_classes
from wsss.data.prepare import first
from wsss.data.voc import IMAGE_DIR, MASK_DIRS, SPLIT_DIR, VOCDataset
from wsss.utils.io import open_image, read_label_png, voc_palette
from wsss.utils.runlock import run_own_files

VOC_RESULTS_DIR = "results/VOC2012/Segmentation/{comp}_{split}_cls"
VOC_TEST_SIZE = 1456  # VOC 2012 segmentation test list (ImageSets/Segmentation/test.txt of the test tar)
_VOC_ID = re.compile(r"^20(0[89]|1[01])_\d{6}$")  # VOC 2012 image ids: 2008_000001 ... 2011_003276
_PALETTE = voc_palette().flatten().tolist()


def _png_bytes(label: np.ndarray) -> bytes:
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette(_PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def voc_test_mismatch(ids: list[str], class_names: list[str]) -> str | None:
    """Why a split is not VOC 2012's segmentation test set (None if it looks like it): the server
    scores only a zip of its 1,456 test ids over the 21 VOC classes."""
    from wsss.data.classes import VOC_CLASSES

    if len(class_names) != len(VOC_CLASSES):
        return f"the dataset has {len(class_names)} classes, VOC has {len(VOC_CLASSES)}"
    if len(ids) != VOC_TEST_SIZE:
        return f"the split has {len(ids):,} ids, VOC 2012's test set has {VOC_TEST_SIZE:,}"
    odd = [i for i in ids if not _VOC_ID.match(i)]
    if odd:
        return f"{len(odd)} ids are not VOC 2012 ids (e.g. {odd[0]})"
    return None


@dataclass(frozen=True)
class VOCTestExport:
    """What ``export_voc_test`` wrote: the zip, its number of ids, and why the split is not VOC 2012's test
    set (``voc_test_mismatch``; None when it looks like it and the zip can be uploaded)."""

    path: Path
    n_ids: int
    not_voc_test: str | None


def export_voc_test(
    run: str | os.PathLike,
    *,
    split: str = "test",
    out: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    source: str = "predictions",
    comp: str = "comp6",
    overrides: Sequence[str] = (),
) -> VOCTestExport:
    """Zip ``RUN/<source>/<split>/<id>.png`` for every id of ``split`` in the VOC server's layout.

    The ids come from the split list of ``data_root`` (default: the run's ``data.root``, with the ``KEY=VALUE``
    words ``overrides`` merged over its saved config). Raises
    DataError naming the missing ids, a PNG whose values are not classes, or a PNG whose size is not
    its image's. The zip (default ``RUN/export/voc2012_<split>.zip``) is written atomically.
    """
    run = Path(run)
    if data_root is None:
        from wsss.core.config import load_run_config, require_data_root

        data_root = require_data_root(load_run_config(run, "; pass --data-root", overrides))
    ds = VOCDataset(data_root, split)
    class_names = read_classes(data_root)
    num_classes = len(class_names)
    pred_dir = run / source / split
    missing = [i for i in ds.ids if not (pred_dir / f"{i}.png").is_file()]
    if missing:
        raise DataError(
            f"{pred_dir}: {len(missing)} of {len(ds.ids)} ids of {split} have no prediction: {first(missing, 10)}; "
            f"run `wsss predict {run} --split {split}` first"
        )
    out = Path(out) if out is not None else run / "export" / f"voc2012_{split}.zip"
    root = Path(data_root)
    check_output_apart(
        check_output_file(out),
        [*run_own_files(run), pred_dir, root / IMAGE_DIR, root / SPLIT_DIR, *(root / d for d in MASK_DIRS)],
    )
    folder = VOC_RESULTS_DIR.format(comp=comp, split=split)
    remove_dead_temps(out)  # an earlier export of this zip that was killed while writing
    with atomic_write(out) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for id in ds.ids:
            path = pred_dir / f"{id}.png"
            label = read_label_png(path)
            bad = np.unique(label[label >= num_classes])
            if bad.size:
                raise DataError(f"{path}: values {bad.tolist()} are not class indices 0..{num_classes - 1}")
            image = ds.image_path(id)
            if image.is_file():
                with open_image(image) as im:
                    size = (im.height, im.width)
                if label.shape != size:
                    raise DataError(
                        f"{path}: prediction is {label.shape[1]}x{label.shape[0]}, image {image} is {size[1]}x{size[0]}"
                    )
            zf.writestr(f"{folder}/{id}.png", _png_bytes(label))
    return VOCTestExport(out, len(ds.ids), voc_test_mismatch(ds.ids, class_names))
