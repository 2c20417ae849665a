"""Views of a data set in the VOC layout for experiments (the masks experiment, the folds of every photo): the
package's views (``wsss.data.views``: ``fold_split``, ``make_view``, which ``wsss route`` uses for its folds too), and
the choices of photos that only the experiments make (every photo of train and val, the first K masked ones)."""

from __future__ import annotations

import os
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
