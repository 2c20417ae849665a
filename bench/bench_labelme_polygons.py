"""How closely ``wsss export masks --format labelme``'s polygons draw the masks again.

Masks of random regions (normal noise per class, blurred by ``sigma`` pixels, argmax; sigma 0: pure noise, the most
ragged) are traced into polygons (``wsss.runs.export_masks.mask_polygons``) and filled again in their order as LabelMe
fills them (``--masks``' LabelMe reader, whose fill tests/interop/ checks equals labelme's ``shapes_to_label``).
Prints, per sigma, the share of the masks' edge pixels (a 4-neighbour of another class) that came back different, the
worst mask's and the mean. Usage::

    .venv/bin/python bench/bench_labelme_polygons.py [--masks 20] [--size 64 80]

No assertions: the figures are for docs/export.md (tests/interop/test_tools.py holds the bound).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from wsss.cli_common import script_parser
from wsss.data.prepare.annotations import open_masks
from wsss.runs.export_masks import mask_polygons

CLASSES = ["background", "a", "b", "c", "d"]


def edge_share(got: np.ndarray, want: np.ndarray) -> float:
    edge = np.zeros(want.shape, bool)
    for axis in (0, 1):
        step = np.diff(want.astype(np.int16), axis=axis) != 0
        lo = [slice(None), slice(None)]
        hi = [slice(None), slice(None)]
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= step
        edge[tuple(hi)] |= step
    return float((got != want)[edge].sum() / max(edge.sum(), 1))


def redrawn(mask: np.ndarray, folder: Path) -> np.ndarray:
    """The mask as LabelMe draws the polygons of it (through a LabelMe file and --masks' reader)."""
    shapes = [
        {"label": CLASSES[c] if c else "_background_", "points": xy.tolist(), "shape_type": "polygon"}
        for c, xy in mask_polygons(mask)
    ]
    data = {"shapes": shapes, "imagePath": "x.jpg", "imageHeight": mask.shape[0], "imageWidth": mask.shape[1]}
    (folder / "x.json").write_text(json.dumps(data))
    return open_masks(folder, CLASSES).read("x.jpg")


def main() -> None:
    p = script_parser(__doc__)
    p.add_argument("--masks", type=int, default=20, help="masks per sigma")
    p.add_argument("--size", type=int, nargs=2, default=[64, 80], metavar=("H", "W"))
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for sigma in (0, 0.7, 1, 2, 4):
            shares = []
            for _ in range(args.masks):
                scores = rng.normal(size=(len(CLASSES), *args.size))
                if sigma:
                    scores = gaussian_filter(scores, sigma=(0, sigma, sigma))
                mask = scores.argmax(axis=0).astype(np.uint8)
                shares.append(edge_share(redrawn(mask, Path(tmp)), mask))
            exact = sum(s == 0 for s in shares)
            print(
                f"sigma {sigma}: edge pixels that differ: worst {100 * max(shares):.2f} %, "
                f"mean {100 * float(np.mean(shares)):.3f} %, masks exact {exact}/{len(shares)}"
            )


if __name__ == "__main__":
    main()
