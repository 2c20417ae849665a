"""SC-CAM's sub-category labels (docs/methods/sccam.md#subcategory-labels): image features of the previous
round's classifier, per-class k-means into K sub-categories, and the (N, (C-1)*K) multi-hot label vectors.

Label layout (``create_pseudo_label.py``): the sub-category of foreground class c (0-based, no
background) in cluster j is column ``c*K + j``. An image labelled with classes {c1, c2} has one 1 in
block c1 and one in block c2 (its image-level feature is clustered once per parent class, the
feature being shared by all its parent classes). The parent labels are the image labels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wsss.core.errors import DataError
from wsss.core.safe_load import read_npz
from wsss.data import VOCDataset
from wsss.data.transforms import prepare_image
from wsss.utils.io import save_npz


@dataclass
class SubcategoryLabels:
    """The sub-category labels of a round, ``RUN/round_r/subcategory_labels.npz``."""

    ids: list[str]
    parents: np.ndarray  # (N, C-1) float32 multi-hot image labels
    assign: np.ndarray  # (N, C-1) int64: the cluster id in [0, K) of each labelled class, -1 elsewhere
    k: int

    @property
    def labels(self) -> np.ndarray:
        """(N, (C-1)*K) float32 multi-hot: column c*K + assign[n, c] for each labelled class c."""
        n, num_fg = self.assign.shape
        out = np.zeros((n, num_fg * self.k), dtype=np.float32)
        rows, cls = np.nonzero(self.assign >= 0)
        out[rows, cls * self.k + self.assign[rows, cls]] = 1.0
        return out

    def save(self, path: str | Path) -> None:
        """Atomically, as an .npz of plain arrays (ids, parents, assign, k): no pickle."""
        save_npz(
            path, ids=np.asarray(self.ids, dtype=str), parents=self.parents, assign=self.assign, k=np.asarray(self.k)
        )

    @classmethod
    def load(cls, path: str | Path) -> SubcategoryLabels:
        """An .npz written by :meth:`save` (read with ``allow_pickle=False``)."""
        path = Path(path)
        d = read_npz(path, ("ids", "parents", "assign", "k"), "sub-category label file")
        try:
            return cls(
                [str(i) for i in d["ids"]],
                np.asarray(d["parents"], np.float32),
                np.asarray(d["assign"], np.int64),
                int(d["k"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: cannot read sub-category labels ({type(e).__name__}: {e})") from e

    def as_lookup(self) -> dict[str, np.ndarray]:
        """id -> (C-1)*K label row."""
        labels = self.labels
        return {id: labels[i] for i, id in enumerate(self.ids)}


def kmeans_labels(x: np.ndarray, k: int, seed: int, *, n_init: int = 10, max_iter: int = 300) -> np.ndarray:
    """sklearn KMeans (k-means++, ``n_init`` restarts as the old sklearn default the official code ran
    with, ``max_iter`` 300, ``random_state`` = the run seed; docs/methods/sccam.md#subcategory-labels) -> (n,)
    cluster ids.

    With fewer samples than ``k`` every sample is its own cluster (the official code would fail).
    """
    from sklearn.cluster import KMeans

    n = len(x)
    if n <= k:
        return np.arange(n, dtype=np.int64)
    with warnings.catch_warnings():  # duplicate points: fewer distinct clusters than k is fine
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=k, random_state=seed, max_iter=max_iter, n_init=n_init).fit(x.astype(np.float64))
    return km.labels_.astype(np.int64)


def build_subcategory_labels(
    ids: list[str],
    features: np.ndarray,
    parents: np.ndarray,
    k: int,
    seed: int = 0,
    *,
    n_init: int = 10,
    progress: bool = False,
) -> SubcategoryLabels:
    """Per parent class c: k-means over the features of the images labelled c (in dataset order)
    -> each such image's sub-category of c (docs/methods/sccam.md#subcategory-labels)."""
    features = np.asarray(features)
    parents = np.asarray(parents, dtype=np.float32)
    if len(features) != len(parents) or len(ids) != len(parents):
        raise ValueError(f"{len(ids)} ids, {len(features)} features and {len(parents)} label rows differ")
    assign = np.full(parents.shape, -1, dtype=np.int64)
    for c in tqdm(range(parents.shape[1]), desc="k-means", disable=not progress):
        members = np.flatnonzero(parents[:, c] > 0.5)
        if members.size:
            assign[members, c] = kmeans_labels(features[members], k, seed, n_init=n_init)
    return SubcategoryLabels(list(ids), parents, assign, k)


@torch.no_grad()
def extract_features(
    feature_fn, dataset: VOCDataset, device: torch.device, *, progress: bool = True, max_side: int | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One feature per image: ``feature_fn`` on the scale-1.0, un-flipped, full-resolution image,
    batch 1 (docs/methods/sccam.md#subcategory-labels); a photo whose longer side exceeds ``max_side``
    (``infer.max_side``, as every other inference) is scaled down to it first (a 6000x4000 photo's features
    took GBs; VOC's 500-px images are untouched by the default 1024). Returns (ids, features (N, D) float32,
    parent labels (N, C-1))."""
    feats, parents = [], []
    for id in tqdm(dataset.ids, desc="features", disable=not progress):
        x = prepare_image(dataset.load_image(id), None, device, max_side=max_side)
        feats.append(feature_fn(x)[0].float().cpu().numpy())
        parents.append(dataset.labels(id))
    return list(dataset.ids), np.stack(feats), np.stack(parents).astype(np.float32)
