"""The per-id pipeline of the jobs over a split or a folder of photos (:mod:`wsss.runs.jobs`,
:mod:`wsss.runs.photos`): loader processes decode each id's inputs ahead of use, the job computes in this process
(a CRF in a pool), and a writer thread encodes and writes its outputs, off the network's path."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wsss.cam import CRFPool
from wsss.core.errors import USER_ERRORS, DataError, OutputError
from wsss.data import VOCDataset
from wsss.data.photos import PhotoFolder
from wsss.data.transforms import prepare_image
from wsss.methods import PoolCall
from wsss.runs import refiners  # noqa: F401 (registers the generic refiners)
from wsss.runs.run import Run
from wsss.utils.procs import leave_stops_to_parent, stops_held_for_children


def _as_is(sample: Any) -> Any:
    return sample  # the loader's collate: keep the numpy arrays as they are


class _Inputs(Dataset):
    """An id's image (uint8 HWC), labels and, with ``size`` (False: none), the network's input
    ``prepare_image(image, size)`` on the CPU; a user error (an unreadable image) is returned, not
    raised, so that the id is reported as failed and the others go on."""

    def __init__(
        self, ds: VOCDataset | PhotoFolder, ids: Sequence[str], size: int | None | bool, max_side: int | None
    ) -> None:
        self.ds, self.ids, self.size, self.max_side = ds, list(ids), size, max_side  # max_side: infer.max_side

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[str, Any, Any, Any, str | None]:
        id = self.ids[i]
        try:
            image = self.ds.load_image(id)
            x = (
                None
                if self.size is False
                else prepare_image(image, self.size, torch.device("cpu"), max_side=self.max_side)
            )
            return id, image, self.ds.labels(id), x, None
        except USER_ERRORS as e:
            return id, None, None, None, str(e)


def _loaded(run: Run, ds: VOCDataset | PhotoFolder, ids: Sequence[str], size: int | None | bool) -> Iterable[tuple]:
    """The inputs of ``ids`` in order, decoded by ``data.num_workers`` loader processes ahead of use;
    pinned on CUDA, so that the copy to the device does not block (``Run._on_device``)."""
    inputs = _Inputs(ds, ids, size, run.cfg.infer.max_side)
    workers = min(int(run.cfg.data.num_workers), len(ids))
    if workers == 0:
        return (inputs[i] for i in range(len(inputs)))
    loader = DataLoader(
        inputs,
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=run.device.type == "cuda",
        prefetch_factor=2,
        worker_init_fn=leave_stops_to_parent,
    )
    with stops_held_for_children():  # the workers start here
        return iter(loader)


Writes = list[tuple[Callable[..., Any], tuple]]


class _Writer:
    """Encodes and writes outputs in a thread, off the network's path (PNG and zlib encoders release
    the GIL). :meth:`submit` and :meth:`drain` yield ``(id, None)`` as an id's writes finish; at most
    ``depth`` ids are in flight. An error in a write is raised (a full disk is not one id's fault)."""

    def __init__(self, depth: int = 8) -> None:
        self.depth = depth
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wsss-writer")
        self.pending: deque[tuple[str, Future]] = deque()

    @staticmethod
    def _write(writes: Writes) -> None:
        for fn, args in writes:
            fn(*args)

    def submit(self, id: str, writes: Writes) -> Iterator[tuple[str, None]]:
        self.pending.append((id, self.pool.submit(self._write, writes)))
        while self.pending and (len(self.pending) > self.depth or self.pending[0][1].done()):
            yield self._finish()

    def drain(self) -> Iterator[tuple[str, None]]:
        while self.pending:
            yield self._finish()

    def _finish(self) -> tuple[str, None]:
        id, fut = self.pending.popleft()
        fut.result()
        return id, None

    def close(self) -> None:
        for _, fut in self.pending:
            fut.cancel()
        self.pool.shutdown(wait=True)


def per_id_pipeline(
    run: Run,
    ds: VOCDataset | PhotoFolder,
    ids: Sequence[str],
    compute: Callable[[str, np.ndarray, np.ndarray, Any], Any],
    *,
    size: int | None | bool = False,
    pool: CRFPool | None = None,
    finish: Callable[[str, Any], Writes] | None = None,
) -> Iterator[tuple[str, str | None]]:
    """One job's per-id work over ``ids``, each id computed the same way whatever the other ids are.

    load (loader workers: image, labels, and the network input of ``size``) -> ``compute(id, image,
    labels, input)`` in this process: the writes, or with ``finish`` a result (an array, or a
    :class:`PoolCall` that ``pool`` runs) -> ``finish(id, result)``: the writes -> the writer thread.
    Yields ``(id, None)`` when an id is written, ``(id, message)`` when a user error stopped it.
    """
    writer = _Writer()
    own_pool = pool is None
    pool = pool if pool is not None else CRFPool(0)

    def staged() -> Iterator[tuple[str, Callable[..., Any] | None, Any]]:
        for id, image, labels, x, error in _loaded(run, ds, ids, size):
            try:
                if error is not None:
                    raise DataError(error)
                result = compute(id, image, labels, x)
            except OutputError:
                raise  # a full disk or a read-only folder is no one id's fault: the job stops
            except USER_ERRORS as e:
                result = e
            if isinstance(result, PoolCall):
                yield id, result.fn, result.args
            else:
                yield id, None, result

    try:
        for key, result in pool.imap_calls(staged(), errors=USER_ERRORS):
            id = str(key)  # the ids staged() gave
            if isinstance(result, BaseException):
                yield id, str(result)
                continue
            yield from writer.submit(id, finish(id, result) if finish is not None else result)
        yield from writer.drain()
    finally:
        writer.close()
        if own_pool:
            pool.close()
