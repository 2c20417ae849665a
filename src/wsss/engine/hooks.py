"""Hooks of the training loop (as detectron2's ``engine/hooks.py``): everything around the steps.

The events and ``HookBase`` are ``engine/train_loop.py``. Each hook gets its period and collaborators in
its constructor and owns its state. The default hooks (``Trainer.build_hooks``), in the order they run
after a step (the checkpoint before validation: a crash in validation loses no finished step):

- ``EpochLRRule``: a method's per-epoch rule on top of the optimiser's poly schedule
  (``Method.lr_factor``: RCA's decay, methods.md 4.7); the poly schedule itself is inside the optimiser.
- ``MetricsLogger``: the progress bar, the loss averages over ``train.log_iters`` steps, and
  ``metrics.jsonl`` (a resume drops the lines written after its checkpoint: they are written again).
- ``PeriodicCheckpointer``: ``checkpoints/last.pt`` every ``train.ckpt_iters`` and at the end, and on
  Ctrl-C after the current step.
- ``PeriodicValidation``: validation every ``train.eval_iters`` and at the end.
- ``BestCheckpointer``: ``checkpoints/best.pt`` when a validation beats the best so far.
- ``TensorBoardWriter``: the same records in TensorBoard (``run.tensorboard``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from wsss.core.distributed import all_gather_objects, all_reduce_sum, is_main_process, world_size
from wsss.core.files import atomic_write, output_error, write_os_error
from wsss.engine.train_loop import HookBase

__all__ = [
    "BestCheckpointer",
    "EpochLRRule",
    "HookBase",
    "MetricsLogger",
    "PeriodicCheckpointer",
    "PeriodicValidation",
    "TensorBoardWriter",
]


def _every(step: int, period: int, last: int) -> bool:
    return step % period == 0 or step == last


class EpochLRRule(HookBase):
    """A method's learning-rate rule per epoch, on top of the optimiser's own poly schedule.

    ``Method.lr_factor(epoch)`` (None: no rule) scales every group's base lr to
    ``train.lr x lr_mult(group) x factor`` when an epoch starts; the current lr follows at once.
    """

    def __init__(self, method: Any, optimizer: Any, base_lr: float) -> None:
        self.method, self.optimizer, self.base_lr = method, optimizer, base_lr

    def before_epoch(self, epoch: int) -> None:
        factor = self.method.lr_factor(epoch)
        if factor is None:
            return
        options = self.method.param_group_options()
        for group in self.optimizer.param_groups:
            group["base_lr"] = self.base_lr * options[group["name"]]["lr_mult"] * factor
            group["lr"] = group["base_lr"] * self.optimizer.lr_mult()


class MetricsLogger(HookBase):
    """The progress bar, the loss averages of every ``train.log_iters`` steps, and ``metrics.jsonl``.

    The averages are over the steps since the last record (the window) and over processes; a record
    carries the backbone group's lr and the seconds per iteration (of the steps this process timed).
    The checkpoint stores the window, so a resumed run logs the same averages as an uninterrupted one.
    """

    def __init__(self, path: Path, *, period: int, max_iter: int, optimizer: Any, progress: bool) -> None:
        self.path, self.period, self.max_iter = Path(path), period, max_iter
        self.optimizer, self.progress = optimizer, progress
        self.bar: tqdm | None = None
        self.sums: dict[str, float] = defaultdict(float)
        self.n_logged = 0  # steps in the window (restored by a resume)
        self.n_timed = 0  # steps timed since t0 (this process's own)
        self.t0 = 0.0

    def state_dict(self) -> dict[str, Any]:
        # collective (``Trainer._state`` is called by every process): one window per process, rank order
        return {"windows": all_gather_objects({"sums": dict(self.sums), "n": self.n_logged})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the loss window; drop log lines written after the checkpoint (they are written again)."""
        windows = state.get("windows")
        if windows:
            # the logged average is sum over processes / world size / n: each process takes the mean
            # window over the saved processes, which keeps that figure whatever the process count
            keys = {k for w in windows for k in w["sums"]}
            self.sums = defaultdict(float, {k: sum(w["sums"].get(k, 0.0) for w in windows) / len(windows)
                                            for k in keys})  # fmt: skip
            self.n_logged = windows[0]["n"]
        if not is_main_process() or not self.path.is_file():
            return
        step = self.trainer.step
        keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
        with atomic_write(self.path, "w") as f:
            f.write("".join(line + "\n" for line in keep))

    def before_train(self) -> None:
        self.n_timed, self.t0 = 0, time.time()
        self.bar = tqdm(
            total=self.max_iter, initial=self.trainer.step, desc="train", disable=not self.progress, dynamic_ncols=True
        )

    def after_step(self) -> None:
        t = self.trainer
        assert self.bar is not None
        self.bar.update(1)
        total, values = t.step_losses
        for k, v in values.items():
            self.sums[k] += v
        self.sums["loss"] += total
        self.n_logged += 1
        self.n_timed += 1
        if _every(t.step, self.period, self.max_iter):
            keys = sorted(self.sums)
            avg = all_reduce_sum(torch.tensor([self.sums[k] for k in keys], dtype=torch.float64)) / world_size()
            record = {
                "step": t.step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "sec_per_iter": (time.time() - self.t0) / self.n_timed,
                **{f"loss/{k}": float(v) / self.n_logged for k, v in zip(keys, avg)},
            }
            t.log(record)
            self.bar.set_postfix(loss=f"{record['loss/loss']:.3f}")
            self.sums.clear()
            self.n_logged, self.n_timed, self.t0 = 0, 0, time.time()

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write(self, record: dict[str, Any]) -> None:
        if is_main_process():
            append_line(self.path, json.dumps(record))


def append_line(path: Path, line: str) -> None:
    """Append ``line`` to the log ``path``; on a full disk the file is cut back to its last whole line (a
    half-written record would break the resume and the report that read it) and ``OutputError`` names it."""
    size = path.stat().st_size if path.is_file() else 0
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        cause = write_os_error(e)
        if cause is None:
            raise
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise output_error(path, cause) from e


class PeriodicValidation(HookBase):
    """``validate()`` every ``period`` steps and at ``max_iter`` (as detectron2's ``EvalHook(period, fn)``);
    ``validate`` publishes its scores (``Trainer.validate``), which ``BestCheckpointer`` reads."""

    def __init__(self, period: int, validate: Callable[[], Any], max_iter: int) -> None:
        self.period, self.validate, self.max_iter = period, validate, max_iter

    def after_step(self) -> None:
        if _every(self.trainer.step, self.period, self.max_iter):
            self.validate()


class BestCheckpointer(HookBase):
    """``checkpoints/best.pt`` whenever a published validation beats the best score so far (segmentation
    mIoU, else CAM mIoU); the best score rides in the checkpoint with this hook's state."""

    def __init__(self, save: Callable[[str], None]) -> None:
        self.save = save
        self.best: float | None = None

    def write(self, record: dict[str, Any]) -> None:
        scores = record.get("val")
        if not scores:
            return
        key = "seg_miou" if "seg_miou" in scores else "cam_miou"
        if self.best is None or scores[key] > self.best:
            self.best = scores[key]
            self.save("best.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best} if self.best is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")


class PeriodicCheckpointer(HookBase):
    """``checkpoints/last.pt`` every ``train.ckpt_iters`` steps and at the last (what a resume starts from).

    Ctrl-C (SIGINT) or SIGTERM (``kill``, ``docker stop``, SLURM's preemption, which sends it to every rank)
    during training: the current step finishes, ``last.pt`` is saved (atomically), then KeyboardInterrupt is
    raised (:class:`~wsss.core.errors.Terminated` for SIGTERM; the CLI exits 130 or 143). A second signal
    stops at once. Signals within ``REPEAT_WINDOW_S`` of the first count as the same one: under torchrun a
    worker gets the terminal's SIGINT and, a moment later, the one its agent forwards; that pair must not
    skip the save.
    """

    REPEAT_WINDOW_S = 2.0
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, save: Callable[[str], None], *, period: int, max_iter: int, path: Path,
                 progress: bool = True) -> None:  # fmt: skip
        self.save, self.period, self.max_iter, self.path, self.progress = save, period, max_iter, path, progress
        self.interrupted = False
        self._previous: dict[int, Any] = {}
        self._first_signal = 0.0
        self._signum = int(signal.SIGINT)

    def before_train(self) -> None:
        self.interrupted = False
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread
        self._previous = {int(s): signal.signal(s, self._on_signal) for s in self.SIGNALS}

    def _stop(self) -> KeyboardInterrupt:
        from wsss.core.errors import signal_interrupt

        return signal_interrupt(self._signum)  # marked as a signal's: see wsss.cli.main

    def _on_signal(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.interrupted:
            if now - self._first_signal < self.REPEAT_WINDOW_S:
                return  # the same Ctrl-C, delivered again (torchrun's agent forwards it)
            previous = self._previous.get(signum)
            self.after_train()
            if callable(previous):
                previous(signum, frame)
            raise self._stop()  # a second signal: stop at once
        self.interrupted, self._first_signal, self._signum = True, now, signum
        if self.progress:
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            tqdm.write(f"{name}: saving a checkpoint after this step (press Ctrl-C again to stop at once)")

    def after_train(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _interrupt_requested(self) -> bool:
        if world_size() == 1:
            return self.interrupted
        return float(all_reduce_sum(torch.tensor([float(self.interrupted)]))) > 0  # every process stops together

    def after_step(self) -> None:
        step = self.trainer.step
        saved = _every(step, self.period, self.max_iter)
        if saved:
            self.save("last.pt")
        if self._interrupt_requested():
            if not saved:
                self.save("last.pt")
            if is_main_process():
                tqdm.write(f"interrupted: saved {self.path} at step {step}", file=sys.stderr)
            raise self._stop()


def wait_past_event_files(log_dir: Path, max_wait_s: float = 1.0) -> None:
    """Sleep until the clock's second is past every event file's in ``log_dir`` (at most ``max_wait_s``).

    TensorBoard reads a folder's event files in name order, ``events.out.tfevents.<second>.<host>.<pid>.<n>``
    (``n`` counts a process's writers), so within one second a later file can sort first: pid 10000 before 9999,
    the 10th writer of a process before the 9th. A resume's file, whose purge of the steps after the checkpoint
    must be read after the steps it drops, then came first (seen in the TensorBoard test: steps 4, 6, 2, 4)."""
    seconds = [int(f) for f in (p.name.split(".")[3] for p in log_dir.glob("events.out.tfevents.*")) if f.isdigit()]
    wait = max(seconds, default=0) + 1 - time.time()
    if 0 < wait <= max_wait_s:  # more: a clock set back, which no wait short enough would mend
        time.sleep(wait)


class TensorBoardWriter(HookBase):
    """Every record in TensorBoard (RUN/tensorboard/, rank 0, when ``run.tensorboard`` and the package is
    installed): ``loss/*``, ``lr/<group>`` for every parameter group, ``val/*``, ``train/*``.

    A resumed run purges the events logged after its checkpoint (they are logged again). A failing
    writer is closed with a warning; it never fails the run (``metrics.jsonl`` has everything).
    """

    def __init__(self, log_dir: Path, optimizer: Any, *, enabled: bool = True) -> None:
        self.log_dir, self.optimizer, self.enabled = Path(log_dir), optimizer, enabled
        self.writer: Any = None
        self._excepthook: Any = None

    def before_train(self) -> None:
        self.open()

    def _quiet_writer_thread(self, args: Any) -> None:
        """``threading.excepthook`` during training: TensorBoard's own writer thread dies with its
        traceback on a full disk, and the main thread then gets the error (one warning, ``write``);
        any other thread's exception is shown as before."""
        if args.thread is not None and type(args.thread).__module__.startswith("tensorboard."):
            return
        self._excepthook(args)

    def open(self) -> None:
        if not (self.enabled and is_main_process()) or self.writer is not None:
            return
        if self._excepthook is None:
            self._excepthook, threading.excepthook = threading.excepthook, self._quiet_writer_thread
        try:
            from torch.utils.tensorboard import SummaryWriter

            step = self.trainer.step
            if step:
                wait_past_event_files(self.log_dir)
            self.writer = SummaryWriter(str(self.log_dir), purge_step=step + 1 if step else None)
        except Exception:  # noqa: BLE001  (not installed, or broken: metrics.jsonl still has everything)
            self.writer = None

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        try:
            step = record["step"]
            for k, v in record.items():
                if k == "val":
                    for name, value in v.items():
                        self.writer.add_scalar(f"val/{name}", value, step)
                elif k == "lr":  # every parameter group's rate, by group name
                    for i, g in enumerate(self.optimizer.param_groups):
                        self.writer.add_scalar(f"lr/{g.get('name', i)}", g["lr"], step)
                elif k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k if "/" in k else f"train/{k}", v, step)
            self.writer.flush()
        except Exception as e:  # noqa: BLE001  (TensorBoard never fails a run)
            tqdm.write(f"warning: TensorBoard logging stopped ({e})")
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None

    def after_train(self) -> None:
        self.close()
        if self._excepthook is not None:  # after the writer thread is gone
            threading.excepthook, self._excepthook = self._excepthook, None
