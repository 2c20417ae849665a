"""Hooks of the training loop (as detectron2's ``engine/hooks.py``): everything around the steps.

The events and ``HookBase`` are ``engine/train_loop.py``. Each hook gets its period and collaborators in
its constructor and owns its state. The default hooks (``Trainer.build_hooks``), in the order they run
after a step (the checkpoint before validation: a crash in validation loses no finished step):

- ``EpochLRRule``: a method's per-epoch rule on top of the optimiser's poly schedule
  (``Method.lr_factor``: RCA's decay, docs/methods/rca.md#training); the poly schedule itself is inside the optimiser.
- ``MetricsLogger``: the progress bar, the loss averages over ``train.log_iters`` steps, and
  ``metrics.jsonl`` (a resume drops the lines written after its checkpoint: they are written again; a training
  from step 0 moves an earlier training's file aside to ``metrics.jsonl.1``).
- ``DivergenceWarning``: one warning when a logged loss grows past ``GROWTH`` times the first (a diverging training
  can stay finite to its end, and the error for a non-finite loss never comes).
- ``PeriodicCheckpointer``: ``checkpoints/last.pt`` every ``train.ckpt_iters`` and at the end, and on
  Ctrl-C after the current step.
- ``PeriodicValidation``: validation every ``train.eval_iters`` and at the end.
- ``BestCheckpointer``: ``checkpoints/best.pt`` when a validation beats the best so far.
- ``TensorBoardWriter``: the same records in TensorBoard (``run.tensorboard``).
"""

from __future__ import annotations

import contextlib
import json
import math
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

from wsss.core.checkpoint import load_checkpoint
from wsss.core.distributed import all_gather_objects, all_reduce_sum, barrier, is_main_process, world_size
from wsss.core.errors import WSSSError
from wsss.core.files import move_aside, output_error, write_os_error, write_text_if_changed
from wsss.engine.train_loop import HookBase
from wsss.utils.progress import progress_bar

__all__ = [
    "BestCheckpointer",
    "EpochLRRule",
    "HookBase",
    "MetricsLogger",
    "PeriodicCheckpointer",
    "PeriodicValidation",
    "TensorBoardWriter",
    "lr_schedule_text",
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


def _epochs_text(epochs: float) -> str:
    """24 -> "24", 1.6667 -> "1.67": a training's length in epochs (not whole when set by iterations)."""
    return str(int(epochs)) if float(epochs).is_integer() else f"{epochs:.2f}".rstrip("0").rstrip(".")


def lr_schedule_text(
    method: Any, lr: float, epochs: float, *, warmup_iters: int = 0, power: float = 0.0, max_iters: int | None = None
) -> str:
    """The learning rate over a training of ``epochs`` epochs, for its start line: ``lr`` through the method's
    per-epoch steps (``Method.lr_factor``, after ``set_training_length``), then the optimiser's own warm-up and
    poly decay, e.g. "lr 0.01 until epoch 16, 0.001 until 22, 0.0001 to 24". Printed because a step schedule
    that does not follow a longer training left most of it at a tenth of its lr, unsaid."""
    changes: list[tuple[int, float]] = []  # (first epoch, factor) at each change of the factor
    for epoch in range(max(1, math.ceil(epochs))):
        factor = method.lr_factor(epoch)
        factor = 1.0 if factor is None else float(factor)
        if not changes or factor != changes[-1][1]:
            changes.append((epoch, factor))
    spans = [
        f"{lr * factor:g}" + (f" until {'epoch ' * (i == 0)}{changes[i + 1][0]}" if i + 1 < len(changes) else "")
        for i, (_, factor) in enumerate(changes)
    ]
    text = "lr " + ", ".join(spans) + (f" to {_epochs_text(epochs)}" if len(changes) > 1 else "")
    if warmup_iters > 0:
        text += f", warm-up {warmup_iters} iterations"
    if power > 0:
        text += f", poly decay (power {power:g})" + (f" to 0 at iteration {max_iters}" if max_iters else "")
    return text


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
            self.sums = defaultdict(
                float, {k: sum(w["sums"].get(k, 0.0) for w in windows) / len(windows) for k in keys}
            )
            self.n_logged = windows[0]["n"]
        if not is_main_process() or not self.path.is_file():
            return
        step = self.trainer.step
        keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
        write_text_if_changed(self.path, "".join(line + "\n" for line in keep))

    def before_train(self) -> None:
        if self.trainer.step == 0 and is_main_process() and self.path.is_file() and self.path.stat().st_size:
            # a training from step 0 (no last.pt: removed, or never written) starts its log anew; the lines
            # of the earlier one are kept beside it, not mixed with this one's nor deleted
            aside = move_aside(self.path)
            tqdm.write(f"note: {self.path} is of an earlier training of this folder; kept as {aside}", file=sys.stderr)
        self.n_timed, self.t0 = 0, time.time()
        self.bar = progress_bar(
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
            self.bar.set_postfix(loss=f"{record['loss/loss']:.3f}", refresh=False)  # shown at the next redraw
            self.sums.clear()
            self.n_logged, self.n_timed, self.t0 = 0, 0, time.time()

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write(self, record: dict[str, Any]) -> None:
        if is_main_process():
            append_line(self.path, json.dumps(record))


class DivergenceWarning(HookBase):
    """One warning on stderr when a logged loss (``loss/loss`` of a ``metrics.jsonl`` record) exceeds ``growth`` times
    the first logged one: the training is diverging. The first loss rides in the checkpoint, so a resumed run
    compares against the same start."""

    GROWTH = 100.0

    def __init__(self, growth: float = GROWTH) -> None:
        self.growth = growth
        self.first: float | None = None
        self.warned = False

    def write(self, record: dict[str, Any]) -> None:
        loss = record.get("loss/loss")
        if loss is None or not math.isfinite(loss):
            return
        if self.first is None:
            self.first = float(loss)
        elif not self.warned and self.first > 0 and loss > self.growth * self.first:
            self.warned = True
            if is_main_process():
                tqdm.write(
                    f"warning: the loss at iteration {record.get('step')} ({loss:.4g}) is over "
                    f"{self.growth:g} times the first logged ({self.first:.4g}): the training diverges; lower "
                    "train.lr or set train.grad_clip",
                    file=sys.stderr,
                )

    def state_dict(self) -> dict[str, Any]:
        return {"first": self.first, "warned": self.warned} if self.first is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first, self.warned = state.get("first"), bool(state.get("warned", False))


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
    mIoU, else CAM mIoU); the best score rides in the checkpoint with this hook's state.

    With ``path`` (best.pt's), a resume takes the best score from ``best.pt`` itself, not from ``last.pt``:
    ``last.pt`` is written before the validation of its step (``PeriodicCheckpointer`` runs first), so its
    score can miss that validation, and a later, worse model then replaced ``best.pt``. No
    ``best.pt`` (never written, or its write failed on a full disk): no best yet, the next validation writes
    one. A fresh training (step 0) finds ``best.pt`` of an earlier one in the folder: moved aside to
    ``best.pt.1`` (``core.files.move_aside``), so that the model of another training never passes for this one's.
    """

    def __init__(self, save: Callable[[str], None], path: Path | None = None) -> None:
        self.save, self.path = save, None if path is None else Path(path)
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
        self.best = state.get("best") if self.path is None else self._saved_best(state.get("best"))

    def _saved_best(self, stored: float | None) -> float | None:
        """The score ``best.pt`` was saved with (the one checkpoint that holds it for sure); ``stored`` (the
        resumed checkpoint's) for a ``best.pt`` of an older version, which has no score of its own."""
        assert self.path is not None
        if not self.path.is_file():
            return None
        try:
            saved = load_checkpoint(self.path)
        except WSSSError as e:  # unreadable: a next validation writes a new one
            tqdm.write(f"warning: {e}; the next validation writes a new one", file=sys.stderr)
            return None
        hooks = saved.get("hooks")
        own = hooks.get(type(self).__name__) if isinstance(hooks, dict) else None
        return own["best"] if isinstance(own, dict) and "best" in own else stored

    def before_train(self) -> None:
        if self.path is None or self.trainer.step != 0:
            return
        if is_main_process() and self.path.is_file():  # rank 0 moves it; the others wait (the same step on each)
            aside = move_aside(self.path)
            tqdm.write(
                f"note: {self.path} is of an earlier training of this folder (no last.pt to resume); kept as {aside}",
                file=sys.stderr,
            )
        barrier()


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

    def __init__(
        self, save: Callable[[str], None], *, period: int, max_iter: int, path: Path, progress: bool = True
    ) -> None:
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

    A resumed run purges the events logged after its checkpoint (they are logged again); a training from step 0
    moves an earlier training's folder aside (``tensorboard.1``). A failing
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
            elif any(self.log_dir.glob("events.out.tfevents.*")):  # an earlier training's curves: kept apart
                tqdm.write(
                    f"note: {self.log_dir} is of an earlier training of this folder; kept as "
                    f"{move_aside(self.log_dir)}",
                    file=sys.stderr,
                )
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
