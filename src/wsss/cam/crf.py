"""Dense CRF post-processing with pydensecrf (docs/methods/seco.md#inference, docs/datasets.md#evaluation;
golden ``dense_crf.npz``).

- :func:`dense_crf`: the official ``DenseCRF`` call (unary ``-log(clip(prob, 1e-5))`` from
  ``unary_from_softmax``, a Gaussian and a bilateral pairwise term, ``iters`` mean-field steps);
  returns the marginals Q.
- :func:`crf_label_two_levels`: ToCo's CRF pseudo labels (bg at the high and the low threshold).
- :func:`crf_label`: CRF restricted to a subset of channels (background + the classes that may
  appear), mapped back to class ids.
- :class:`CRFParams` (defined in ``core/config.py``, the config section ``infer.crf``): the
  named parameter sets of the anchors (docs/datasets.md#evaluation).
- :class:`CRFPool`: runs :func:`crf_label` over a stream of images in worker processes, in order,
  with a bounded number of images in flight.

This module does not import torch: the worker processes only need numpy and pydensecrf.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from wsss.core.config import CRFParams
from wsss.utils.procs import die_with_parent


def dense_crf(
    image: np.ndarray,
    prob: np.ndarray,
    *,
    iters: int = 10,
    pos_xy_std: float = 1,
    pos_w: float = 1,
    bi_xy_std: float = 121,
    bi_rgb_std: float = 5,
    bi_w: float = 4,
    unary_in_prob_dtype: bool = False,
) -> np.ndarray:
    """Dense CRF marginals (docs/methods/seco.md#inference; golden ``dense_crf.npz``).

    Args:
        image: (H, W, 3) uint8 RGB (HWC, the order image readers return).
        prob: (K, H, W) class probabilities (a softmax); cast to float32.
        iters, pos_xy_std, pos_w, bi_xy_std, bi_rgb_std, bi_w: mean-field steps, Gaussian
            (sxy, compat) and bilateral (sxy, srgb, compat) terms. Defaults: ``CRFParams.SEG``.
        unary_in_prob_dtype: take the unary's clip and log in ``prob``'s own float dtype (CLIP-ES feeds
            its saved float16 CAMs to ``unary_from_softmax``, which logs in float16: golden
            ``clip_es_crf.npz``) instead of float32.

    Returns:
        Q (K, H, W) float32, the CRF marginals; ``Q.argmax(0)`` is the label.
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    prob = np.asarray(prob)
    if not (unary_in_prob_dtype and np.issubdtype(prob.dtype, np.floating)):
        prob = prob.astype(np.float32, copy=False)
    image = np.asarray(image)
    if prob.ndim != 3 or image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != prob.shape[1:]:
        raise ValueError(
            f"dense_crf expects image (H,W,3) and prob (K,H,W) with the same H,W, got {image.shape} and {prob.shape}"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"dense_crf expects a uint8 image, got {image.dtype}")
    k, h, w = prob.shape
    unary = np.ascontiguousarray(unary_from_softmax(prob))
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)
    crf.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=np.ascontiguousarray(image), compat=bi_w)
    q = crf.inference(int(iters))
    return np.asarray(q, dtype=np.float32).reshape(k, h, w)


def crf_label(
    image: np.ndarray,
    prob: np.ndarray,
    present: Sequence[int] | np.ndarray | None = None,
    params: CRFParams | None = None,
    **overrides: Any,
) -> np.ndarray:
    """CRF label map over a subset of channels (docs/methods/seco.md#inference, docs/datasets.md#evaluation).

    ``prob`` is (C, H, W) over all classes (channel = class id). Only the channels in ``present``
    (e.g. background + the image's classes; all channels if None) enter the CRF, after
    renormalising them to sum to 1 per pixel, so an absent class can never be output. The argmax is
    mapped back to class ids. Parameters: ``params`` (default ``CRFParams.SEG``), with keyword
    ``overrides`` of :func:`dense_crf` (e.g. ``iters=5``). Returns (H, W) int64.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if present is None:
        ids = np.arange(prob.shape[0], dtype=np.int64)
    else:
        ids = np.unique(np.asarray(present, dtype=np.int64))  # sorted, deduplicated
        if ids.size == 0:
            raise ValueError("crf_label: `present` is empty")
        if ids.min() < 0 or ids.max() >= prob.shape[0]:
            raise ValueError(f"crf_label: present ids {ids.tolist()} out of range for {prob.shape[0]} channels")
    h, w = prob.shape[1:]
    if ids.size == 1:
        return np.full((h, w), ids[0], dtype=np.int64)
    sub = prob[ids]
    if present is not None:
        sub = sub / np.maximum(sub.sum(axis=0, keepdims=True), np.float32(1e-12))
    kwargs = (params or CRFParams.SEG).as_kwargs()
    unknown = set(overrides) - set(kwargs)
    if unknown:
        raise TypeError(f"crf_label: unknown CRF parameters {sorted(unknown)}")
    kwargs.update(overrides)
    q = dense_crf(image, sub, **kwargs)
    return ids[q.argmax(axis=0)]


def crf_label_two_levels(
    image: np.ndarray,
    cam: np.ndarray,
    cls_label: Sequence[float] | np.ndarray,
    high_thre: float,
    low_thre: float,
    params: CRFParams | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """CRF pseudo label with two background levels (docs/methods/seco.md#cam-seeds, ToCo
    ``infer_cam_crf_label``).

    ``cam`` (C-1, H, W) holds foreground scores in [0, 1] and ``cls_label`` (C-1,) the multi-hot image
    label. For each background level (``high_thre``, then ``low_thre``) the stack [constant bg; present
    classes] goes through a softmax over channels and the CRF (default ``CRFParams.TOCO_LABEL``), and
    the argmax is mapped to class ids. Combined as in seco.md#pseudo-label: the high-level label; where it
    is background, ``ignore_index``; where both levels say background, 0. Returns (H, W) int64.
    """
    cam = np.asarray(cam, dtype=np.float32)
    fg = np.flatnonzero(np.asarray(cls_label).reshape(-1) != 0)
    if cam.ndim != 3 or (fg.size > 0 and fg.max() >= cam.shape[0]):
        raise ValueError(f"crf_label_two_levels: cam {cam.shape} does not match cls_label of {len(cls_label)}")
    ids = np.concatenate([[0], fg + 1]).astype(np.int64)
    h, w = cam.shape[1:]
    kwargs = (params or CRFParams.TOCO_LABEL).as_kwargs()
    labels = []
    for level in (high_thre, low_thre):
        if fg.size == 0:
            labels.append(np.zeros((h, w), dtype=np.int64))
            continue
        scores = np.concatenate([np.full((1, h, w), level, dtype=np.float32), cam[fg]], axis=0)
        scores = np.exp(scores - scores.max(axis=0, keepdims=True))
        prob = scores / scores.sum(axis=0, keepdims=True)
        labels.append(ids[dense_crf(image, prob, **kwargs).argmax(axis=0)])
    high, low = labels
    label = np.where(high == 0, ignore_index, high)
    return np.where((high == 0) & (low == 0), 0, label).astype(np.int64)


def psa_crf_scores(
    image: np.ndarray,
    cam: np.ndarray,
    cls_label: Sequence[float] | np.ndarray,
    alphas: tuple[float, ...] = (4.0, 32.0),
    params: CRFParams | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """PSA's la / ha CRF score maps (PSA ``infer_cls.py`` ``--out_la_crf/--out_ha_crf``; golden
    ``psa_infer_cls.npz``): for each ``alpha`` the CRF marginals of ``[(1 - max_c cam)^alpha; cam of the
    present classes]`` (unnormalised, as PSA). Returns (the 1-based ids of the stack's channels, with 0 =
    background first; one (1 + n, H, W) float32 Q per alpha). With a {0, 255} CAM (SC-CAM's
    ``quirk_binarised_crf_cam``) the background overflows to inf for alpha 32, as in the official float32
    run; the unary's clip makes it probability 1 either way.
    """
    cam = np.asarray(cam, dtype=np.float32)
    fg = np.flatnonzero(np.asarray(cls_label).reshape(-1) != 0)
    if cam.ndim != 3 or (fg.size > 0 and fg.max() >= cam.shape[0]):
        raise ValueError(f"psa_crf_scores: cam {cam.shape} does not match cls_label of {len(cls_label)}")
    ids = np.concatenate([[0], fg + 1]).astype(np.int64)
    kwargs = (params or CRFParams.PSA).as_kwargs()
    peak = 1.0 - cam[fg].max(axis=0, keepdims=True)
    with np.errstate(over="ignore"):
        return ids, [dense_crf(image, np.concatenate([peak**a, cam[fg]]), **kwargs) for a in alphas]


def crf_label_psa(
    image: np.ndarray,
    cam: np.ndarray,
    cls_label: Sequence[float] | np.ndarray,
    alphas: tuple[float, float] = (4.0, 32.0),
    params: CRFParams | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """PSA's seeds for AffinityNet: the "la" / "ha" CRF maps (docs/methods/affinitynet.md#psa-seeds, PSA
    ``infer_cls.py``).

    ``cam`` (C-1, H, W) holds max-normalised foreground scores in [0, 1], ``cls_label`` (C-1,) the
    multi-hot image label. For each exponent ``alpha`` of ``alphas`` (low, high) the background score is
    ``(1 - max_c cam)^alpha``; the stack [background; present classes] goes, unnormalised as in PSA,
    through the CRF (default ``CRFParams.PSA``; :func:`psa_crf_scores`). Label: the low-alpha argmax
    (confident foreground); where it is background, ``ignore_index``; where the high-alpha map (a weak
    background) still says background, 0. Returns (H, W) int64, at the image resolution (PSA's own data
    loader average-pools the two score maps by 8 first: ``wsss.cam.affinity.psa_seed_grid``).

    Unlike ``crf_label_two_levels`` (ToCo's constant background levels), the confident background is
    where the CAM is near 0 (about < 0.08 for alpha 32), not below a fixed 0.25: CAMs that cover only the
    discriminative parts of objects do not teach AffinityNet that the rest of the object is background.
    """
    cam = np.asarray(cam, dtype=np.float32)
    if not np.any(np.asarray(cls_label).reshape(-1) != 0):
        return np.zeros(cam.shape[1:], dtype=np.int64)
    ids, (q_low, q_high) = psa_crf_scores(image, cam, cls_label, alphas, params)
    low, high = ids[q_low.argmax(axis=0)], ids[q_high.argmax(axis=0)]
    label = np.where(low == 0, ignore_index, low)
    return np.where(high == 0, 0, label).astype(np.int64)


def crf_workers(given: int) -> int:
    """The worker processes of a :class:`CRFPool` for ``infer.crf_workers`` = ``given``: itself when 0 or more; -1
    (the default) one per core this process may run on (``os.sched_getaffinity``), shared out among the processes
    of one job on this machine (``LOCAL_WORLD_SIZE``: torchrun's, or ``--workers N``'s), and 0 (in the main
    process) where that leaves one core or none: a lone core gains nothing from a pool."""
    if given >= 0:
        return given
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    share = cores // (int(local) if local.isdigit() and int(local) > 0 else 1)
    return share if share > 1 else 0


def _call(args: tuple[Hashable, Callable[..., Any], tuple]) -> tuple[Hashable, Any]:
    key, fn, fn_args = args
    return key, fn(*fn_args)


class CRFPool:
    """Run :func:`crf_label` (or any CPU-bound picklable call) over many images in worker processes
    (docs/methods/seco.md#inference): ``wsss predict --crf`` and the CPU refiners of ``wsss pseudo``.

    ``CRFPool(workers, params)``; ``workers=0`` runs in-process (no pool), ``-1`` one worker per core
    (:func:`crf_workers`); the workers start at the first image that needs one, once per command.
    ``imap(items)`` takes an iterable of ``(key, image, prob, present)`` and yields ``(key, label)`` **in input order**;
    ``imap_calls(items)`` takes ``(key, fn, args)`` (``fn`` a module-level function; ``None``: ``args``
    is already the result) and yields ``(key, fn(*args))`` in input order. At most ``max_pending``
    items (default ``4 * workers``) are in flight, so a long stream never sits in memory at once. The
    pool uses the ``spawn`` start method (safe with threads and CUDA in the parent); scripts that use
    it must guard their entry point with ``if __name__ == "__main__"``. Use it as a context manager,
    or call :meth:`close`.
    """

    def __init__(self, workers: int = 0, params: CRFParams | None = None, max_pending: int | None = None) -> None:
        if workers < -1:
            raise ValueError(f"CRFPool: workers must be -1 (every core) or more, got {workers}")
        self.workers = crf_workers(int(workers))
        self.params = params or CRFParams.SEG
        self.max_pending = int(max_pending) if max_pending else max(1, 4 * self.workers)
        self._executor: ProcessPoolExecutor | None = None
        if self.workers > 0:
            self._executor = ProcessPoolExecutor(  # the workers end with this process, even SIGKILLed
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with_parent,
                initargs=(signal.SIGKILL, os.getpid()),
            )

    def imap(
        self, items: Iterable[tuple[Hashable, np.ndarray, np.ndarray, Sequence[int] | np.ndarray | None]]
    ) -> Iterator[tuple[Hashable, np.ndarray]]:
        """Yield ``(key, label)`` for each ``(key, image, prob, present)``, in order."""
        params = self.params
        calls = (
            (key, partial(crf_label, params=params), (image, prob, present)) for key, image, prob, present in items
        )
        return self.imap_calls(calls)

    def imap_calls(
        self,
        items: Iterable[tuple[Hashable, Callable[..., Any] | None, Any]],
        errors: tuple[type[BaseException], ...] = (),
    ) -> Iterator[tuple[Hashable, Any]]:
        """Yield ``(key, fn(*args))`` for each ``(key, fn, args)`` in order; with ``fn`` None, ``args``
        itself (a result computed by the caller, kept in the stream's order). An exception of a type in
        ``errors`` is yielded in place of its result; any other one is raised."""

        def result(fut: Future) -> tuple[Hashable, Any]:
            try:
                return fut.result()
            except errors as e:
                return fut.key, e  # type: ignore[attr-defined]

        pending: deque[Future] = deque()
        try:
            for key, fn, args in items:
                if len(pending) >= self.max_pending:
                    yield result(pending.popleft())
                if fn is None or self._executor is None:
                    fut: Future = Future()
                    try:
                        fut.set_result((key, args if fn is None else fn(*args)))
                    except errors as e:
                        fut.set_exception(e)
                else:
                    fut = self._executor.submit(_call, (key, fn, args))
                fut.key = key  # type: ignore[attr-defined]
                pending.append(fut)
            while pending:
                yield result(pending.popleft())
        finally:
            for fut in pending:  # consumer stopped early or an error occurred
                fut.cancel()

    def close(self) -> None:
        """Shut the worker processes down (waits for running tasks)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> CRFPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
