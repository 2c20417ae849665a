"""Views of a data set in the VOC layout for experiments (the masks experiment, the folds of every photo): the
package's views (``wsss.data.views``: ``fold_split``, ``make_view``, which ``wsss route`` uses for its folds too), and
the choices of photos that only the experiments make (every photo of train and val, the first K masked ones, K
drawn for a learning curve)."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from wsss.data.views import VIEW_MASKS, fold_split, make_view  # noqa: F401 (the package's views, re-exported)
from wsss.data.voc import VOCDataset, read_split


def all_ids(root: str | os.PathLike) -> list[str]:
    """The ids of the data set's train and val splits, once each (coco128-dev lists its 70 photos in both)."""
    return list(dict.fromkeys([*read_split(root, "train"), *read_split(root, "val")]))


def first_masked(root: str | os.PathLike, ids: Sequence[str], k: int) -> list[str]:
    """The first ``k`` of ``ids`` (in their order) that have a mask in the data set; ValueError if fewer do."""
    ds = VOCDataset(root, "train")
    masked = [i for i in ids if ds.has_mask(i)]
    if len(masked) < k:
        raise ValueError(f"{root}: only {len(masked)} of the {len(ids)} train photos have a mask, fewer than {k}")
    return masked[:k]


def nested_subset(ids: Sequence[str], k: int, seed: int) -> list[str]:
    """``k`` of ``ids``, sorted: the first ``k`` of the sorted ids shuffled by ``seed`` (Python's ``random``, whose
    seeded shuffle is the same in every version), so that for one seed the draw of ``k`` holds every smaller draw:
    a learning curve's points differ only by the photos added. ValueError when ``ids`` has fewer than ``k``."""
    ordered = sorted(dict.fromkeys(ids))
    if not 0 < k <= len(ordered):
        raise ValueError(f"{k} of {len(ordered)} photos: need 0 < k <= {len(ordered)}")
    random.Random(seed).shuffle(ordered)
    return sorted(ordered[:k])
