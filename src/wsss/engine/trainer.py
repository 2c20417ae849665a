"""The training loop shared by every method.

The engine owns: data loading (a deterministic, resumable sampler), the poly-schedule optimiser
with the four parameter groups of methods.md 2.10, loss weighting and staging (``LossConfig``),
the NaN guard, logging to ``metrics.jsonl``, periodic validation, and checkpoints with resume.
A method only says what one step computes (the contract: ``wsss.core.registry``).
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from wsss.core.checkpoint import load_checkpoint, save_checkpoint
from wsss.core.config import Config, load_config, resolve_epochs, resolve_paths, save_config
from wsss.core.device import resolve_device  # noqa: F401  (re-exported for scripts)
from wsss.core.distributed import (
    all_gather_objects,
    all_reduce_sum,
    barrier,
    init_from_env,
    is_main_process,
    rank,
    world_size,
)
from wsss.core.errors import ConfigError, TrainingDiverged, UsageError
from wsss.core.registry import Method, TrainContext
from wsss.data import ClsTrainDataset, VOCDataset
from wsss.data.transforms import TrainAugment
from wsss.data.voc import SPLIT_DIR
from wsss.engine.optim import PolyWarmupAdamW, PolyWarmupSGD
from wsss.engine.validate import validate
from wsss.methods import build_method
from wsss.utils.io import atomic_write


def validation_split(cfg: Config) -> str | None:
    """``data.val_split``, or None (with a note) when the dataset has no such split file: a custom
    dataset without masks has nothing to validate on, and trains without validation."""
    split = cfg.data.val_split
    if split and not (Path(cfg.data.root) / SPLIT_DIR / f"{split}.txt").is_file():
        if is_main_process():
            print(f"note: {cfg.data.root} has no split {split!r} (data.val_split): training without validation; "
                  "the run's last checkpoint is used", file=sys.stderr)  # fmt: skip
        return None
    return split or None


def _describe_weights(pretrained: str | None) -> str:
    """The pretrained weights for the start-of-training line: the file actually read."""
    if not pretrained:
        return "none (random initialisation)"
    from wsss.models.weights import resolve_weight_path

    try:
        path = resolve_weight_path(pretrained)
    except Exception:  # noqa: BLE001 - the build already loaded it; this is only for the message
        return pretrained
    return pretrained if str(path) == pretrained else f"{pretrained} = {path}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EpochSampler(Sampler[int]):
    """This process's share of a seeded permutation per epoch, started at global ``offset``.

    The permutation is the same on every process; each global batch of ``global_batch`` samples is
    split in rank order, so a step trains on the same images whatever the number of processes. The
    data position is (epoch, offset in global samples), which a checkpoint stores: a resumed run
    sees exactly the batches it would have seen, even on another number of processes.
    """

    def __init__(self, n: int, seed: int, epoch: int, offset: int = 0, *, global_batch: int = 1, rank: int = 0,
                 world: int = 1):  # fmt: skip
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)[offset:]
        order = order[: len(order) // global_batch * global_batch].view(-1, world, global_batch // world)
        self.order = order[:, rank].reshape(-1).tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class BatchStream:
    """Infinite training steps over a dataset, epoch after epoch (drop_last, as the official loaders).

    ``next(stream)`` returns one step: a list of ``accum`` micro-batches of ``micro`` images, this
    process's share of the ``global_batch``.
    """

    def __init__(self, dataset: ClsTrainDataset, global_batch: int, micro: int, seed: int, num_workers: int):
        w = world_size()
        if global_batch % w or (global_batch // w) % micro:
            raise UsageError(
                f"train.batch_size {global_batch} must split into {w} processes x micro-batches of {micro}"
            )
        if len(dataset) < global_batch:
            raise UsageError(f"the training split has {len(dataset)} images, fewer than the batch size {global_batch}")
        self.dataset, self.global_batch, self.micro = dataset, global_batch, micro
        self.accum = global_batch // w // micro
        self.seed, self.num_workers = seed, num_workers
        self.epoch, self.offset = 0, 0
        self._it = None

    def _start_epoch(self) -> None:
        self.dataset.set_epoch(self.epoch)
        sampler = EpochSampler(
            len(self.dataset), self.seed, self.epoch, self.offset, global_batch=self.global_batch, rank=rank(),
            world=world_size(),
        )  # fmt: skip
        loader = DataLoader(
            self.dataset, batch_size=self.micro, sampler=sampler, drop_last=True,
            num_workers=self.num_workers, persistent_workers=False,
        )  # fmt: skip
        self._it = iter(loader)

    def __next__(self) -> list[dict[str, Any]]:
        while True:
            if self._it is None:
                if len(self.dataset) - self.offset < self.global_batch:
                    self.epoch, self.offset = self.epoch + 1, 0
                self._start_epoch()
            try:
                step = [next(self._it) for _ in range(self.accum)]
                self.offset += self.global_batch
                return step
            except StopIteration:
                self._it = None
                self.epoch, self.offset = self.epoch + 1, 0

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}


def build_optimizer(method: Method, cfg: Config) -> PolyWarmupAdamW | PolyWarmupSGD:
    """The optimiser of ``train.optimizer`` over the method's named groups (``param_group_options``)."""
    t = cfg.train
    options = method.param_group_options()
    groups = []
    for name, params in method.param_groups().items():
        if name not in options:
            raise KeyError(f"parameter group {name!r} of method {method.name} has no entry in param_group_options()")
        params = [p for p in params if p.requires_grad]
        if params:
            group = {"name": name, "params": params, "lr": t.lr * options[name]["lr_mult"]}
            if "weight_decay" in options[name]:
                group["weight_decay"] = options[name]["weight_decay"]
            groups.append(group)
    schedule = dict(
        warmup_iter=t.warmup_iters, max_iter=t.max_iters, warmup_ratio=t.warmup_ratio, power=t.power,
        hold_lr_after_max=t.hold_lr_after_max,
    )  # fmt: skip
    if t.optimizer == "adamw":
        return PolyWarmupAdamW(groups, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, **schedule)
    if t.optimizer == "sgd":
        return PolyWarmupSGD(
            groups, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum, nesterov=t.nesterov, **schedule
        )
    raise UsageError(f"train.optimizer must be 'adamw' or 'sgd', got {t.optimizer!r}")


def active_terms(cfg: Config, step: int) -> set[str]:
    """Loss terms switched on at ``step``: weight non-zero and ``step > start_iters[term]``."""
    w, start = cfg.loss.weights, cfg.loss.start_iters
    return {k for k, v in w.items() if v != 0 and step > start.get(k, -1)}


class Trainer:
    """One run: ``Trainer(cfg).train()``. Under torchrun every process builds one; rank 0 writes."""

    def __init__(self, cfg: Config, *, progress: bool = True):
        self.run_dir = Path(cfg.run.dir)
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.device = init_from_env(cfg.run.device)
        self.progress = progress and is_main_process()
        seed_everything(cfg.run.seed + rank())

        self.train_set = VOCDataset(cfg.data.root, cfg.data.train_split)
        cfg = self.cfg = resolve_epochs(cfg, len(self.train_set))  # train.epochs -> train.max_iters
        d, t = cfg.data, cfg.train
        self.val_set = VOCDataset(d.root, d.val_split) if validation_split(cfg) else None
        self.method = build_method(cfg, self.train_set.num_classes).to(self.device)
        self.model: torch.nn.Module = self.method
        if world_size() > 1:
            # find_unused_parameters: staged losses leave heads unused early on (as the official code);
            # no buffer broadcast: the queue and prototypes are updated identically from gathered data.
            self.model = DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True, broadcast_buffers=False,
            )  # fmt: skip
        augment = TrainAugment(d.crop_size, scale_range=d.scale_range, hflip=d.hflip, color_jitter=d.color_jitter)
        dataset = ClsTrainDataset(
            self.train_set, augment, extra_views=self.method.train_transform_views(), seed=cfg.run.seed
        )
        local = t.batch_size // world_size()
        self.stream = BatchStream(dataset, t.batch_size, t.micro_batch or local, cfg.run.seed, d.num_workers)
        self.optimizer = build_optimizer(self.method, cfg)
        amp = cfg.run.amp if self.device.type == "cuda" else "none"  # the CPU stays fp32
        if amp not in ("none", "bf16", "fp16"):
            raise UsageError(f"run.amp must be none, bf16 or fp16, got {cfg.run.amp!r}")
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.step = 0
        self.best: float | None = None
        self._tb: Any = None  # TensorBoard writer, opened by train()
        # the loss averaging window since the last log step; a checkpoint stores it, so a resumed run
        # logs the same averages as an uninterrupted one
        self._log_sums: dict[str, float] = defaultdict(float)
        self._log_n = 0
        self._interrupted = False

    # ------------------------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _rng_state(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data": self.stream.position(),
            "best": self.best,
            "rng": all_gather_objects(self._rng_state()),  # one entry per process, rank order
            "log_window": all_gather_objects({"sums": dict(self._log_sums), "n": self._log_n}),
            "config": self.cfg.to_dict(),
            "num_classes": self.train_set.num_classes,
            "class_names": self.train_set.class_names,
        }

    def save_checkpoint(self, name: str) -> None:
        """Write ``checkpoints/<name>`` at the current step (collective: every process calls it)."""
        state = self._state()  # collective (gathers the RNG states): every process calls it
        if is_main_process():
            save_checkpoint(state, self.ckpt_dir / name)
        barrier()

    def context(self) -> TrainContext:
        """The narrow view of this run that a method gets (``Method.on_train_start``)."""
        return TrainContext(
            run_dir=self.run_dir, step=self.step, device=self.device, train_set=self.train_set,
            train_data=self.stream.dataset, val_set=self.val_set, optimizer=self.optimizer, save=self.save_checkpoint,
        )  # fmt: skip

    def resume_or_load(self, resume: bool = True) -> bool:
        """Continue from ``checkpoints/last.pt`` if ``resume`` and it exists; True if it did."""
        return self.resume_if_possible() if resume else False

    def resume_if_possible(self) -> bool:
        last = self.ckpt_dir / "last.pt"
        if not last.is_file():
            return False
        state = load_checkpoint(last)
        self.method.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.best = state.get("best")
        self.stream.epoch, self.stream.offset = state["data"]["epoch"], state["data"]["offset"]
        rngs = state["rng"]
        if len(rngs) == world_size():  # same process count: each process continues its own streams
            rng = rngs[rank()]
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            if rng.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        else:  # another process count: the data order is kept, the in-model RNG is reseeded
            seed_everything(self.cfg.run.seed + rank() + 7919 * self.step)
        windows = state.get("log_window")  # absent in checkpoints of older versions: the window restarts
        if windows:
            # the logged average is sum over processes / world size / n: each process takes the mean
            # window over the saved processes, which keeps that figure whatever the process count
            keys = {k for w in windows for k in w["sums"]}
            self._log_sums = defaultdict(float, {k: sum(w["sums"].get(k, 0.0) for w in windows) / len(windows)
                                                 for k in keys})  # fmt: skip
            self._log_n = windows[0]["n"]
        if is_main_process():
            self._truncate_metrics(self.step)
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be written again)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        with atomic_write(path, "w") as f:
            f.write("".join(line + "\n" for line in keep))

    def _log(self, record: dict[str, Any]) -> None:
        if is_main_process():
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        if self._tb is not None:  # the same record in TensorBoard: loss/*, lr/<group>, val/*, train/*
            try:
                step = record["step"]
                for k, v in record.items():
                    if k == "val":
                        for name, value in v.items():
                            self._tb.add_scalar(f"val/{name}", value, step)
                    elif k == "lr":  # every parameter group's rate, by group name
                        for i, g in enumerate(self.optimizer.param_groups):
                            self._tb.add_scalar(f"lr/{g.get('name', i)}", g["lr"], step)
                    elif k != "step" and isinstance(v, (int, float)):
                        self._tb.add_scalar(k if "/" in k else f"train/{k}", v, step)
                self._tb.flush()
            except Exception as e:  # noqa: BLE001  (TensorBoard never fails a run)
                tqdm.write(f"warning: TensorBoard logging stopped ({e})")
                self._close_tensorboard()

    def _open_tensorboard(self) -> None:
        """A SummaryWriter on RUN/tensorboard/ when ``run.tensorboard``, on rank 0, if the package is
        installed. A resumed run purges the events logged after its checkpoint (they are logged again)."""
        if not (self.cfg.run.tensorboard and is_main_process()) or self._tb is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1 if self.step else None)
        except Exception:  # noqa: BLE001  (not installed, or broken: metrics.jsonl still has everything)
            self._tb = None

    def _close_tensorboard(self) -> None:
        if self._tb is not None:
            with contextlib.suppress(Exception):
                self._tb.close()
            self._tb = None

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _train_step(self, micro_batches: list[dict[str, Any]], step: int) -> tuple[float, dict[str, float]]:
        """Forward/backward over this process's micro-batches, then one optimiser step.

        Each micro-batch loss is a mean over its images, so it is divided by the number of
        micro-batches; DDP averages over processes: the gradient is that of the global batch mean.
        """
        cfg = self.cfg
        active = active_terms(cfg, step)
        n = len(micro_batches)
        sums: dict[str, float] = defaultdict(float)
        total = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for i, mb in enumerate(micro_batches):
            sync = i == n - 1 or not isinstance(self.model, DistributedDataParallel)
            ctx = contextlib.nullcontext() if sync else self.model.no_sync()
            with ctx:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    terms = self.model(self._to_device(mb), step, active)
                unknown = set(terms) - set(cfg.loss.weights)
                if unknown:
                    raise UsageError(f"loss terms {sorted(unknown)} have no weight in loss.weights")
                loss = sum(cfg.loss.weights[k] * v.float() for k, v in terms.items() if k in active)
                values = {k: float(v.detach()) for k, v in terms.items()}
                bad = torch.tensor([0.0 if torch.is_tensor(loss) and torch.isfinite(loss) else 1.0])
                if float(all_reduce_sum(bad)) > 0:  # every process stops together, no deadlock
                    raise TrainingDiverged(
                        f"non-finite loss at iteration {step}: "
                        + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                        + (
                            f"; the last good checkpoint is {self.ckpt_dir / 'last.pt'}"
                            if (self.ckpt_dir / "last.pt").is_file()
                            else "; no checkpoint was saved yet"
                        )
                    )
                self.scaler.scale(loss / n).backward()
            for k, v in values.items():
                sums[k] += v / n
            total += float(loss.detach()) / n
        if cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_step(step)
        return total, sums

    # ------------------------------------------------------------------------------------------
    def train(self, until: int | None = None) -> dict[str, Any]:
        """Train to ``train.max_iters`` (or stop after step ``until``, as a kill would, for tests)."""
        cfg, t = self.cfg, self.cfg.train
        stop = t.max_iters if until is None else min(until, t.max_iters)
        if is_main_process():
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        resumed = self.resume_if_possible()
        if is_main_process():
            save_config(cfg, self.run_dir / "config.yaml")
            weights = _describe_weights(cfg.model.pretrained)
            start = f"resumed from {self.ckpt_dir / 'last.pt'} at step {self.step}" if resumed else "from step 0"
            print(f"train {self.run_dir}: {cfg.method}, {cfg.model.backbone}, pretrained weights {weights}; {start}"
                  f" of {t.max_iters}", file=sys.stderr, flush=True)  # fmt: skip
        if self.step >= stop:
            return {"step": self.step, "resumed": resumed, "best": self.best}
        self._open_tensorboard()
        self.method.train()
        self.method.on_train_start(self.context())
        epoch_seen: int | None = None
        sums = self._log_sums
        t0 = time.time()
        n_timed = 0  # steps timed since t0 (this process's own, unlike the window restored by a resume)
        bar = tqdm(total=t.max_iters, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        last_val: dict[str, Any] | None = None
        with self._catch_interrupt():
            while self.step < stop:
                micro_batches = next(self.stream)
                if self.stream.epoch != epoch_seen:
                    epoch_seen = self.stream.epoch
                    self.method.on_epoch_start(epoch_seen)
                total, values = self._train_step(micro_batches, self.step)
                self.step += 1
                bar.update(1)
                for k, v in values.items():
                    sums[k] += v
                sums["loss"] += total
                self._log_n += 1
                n_timed += 1
                if self.step % t.log_iters == 0 or self.step == t.max_iters:
                    keys = sorted(sums)
                    avg = all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64)) / world_size()
                    record = {
                        "step": self.step,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "sec_per_iter": (time.time() - t0) / n_timed,
                        **{f"loss/{k}": float(v) / self._log_n for k, v in zip(keys, avg)},
                    }
                    self._log(record)
                    bar.set_postfix(loss=f"{record['loss/loss']:.3f}")
                    sums.clear()
                    self._log_n, n_timed, t0 = 0, 0, time.time()
                if self.val_set is not None and (self.step % t.eval_iters == 0 or self.step == t.max_iters):
                    last_val = self.validate()
                saved = self.step % t.ckpt_iters == 0 or self.step == t.max_iters
                if saved:
                    self.save_checkpoint("last.pt")
                if self._interrupt_requested():
                    if not saved:
                        self.save_checkpoint("last.pt")
                    bar.close()
                    if is_main_process():
                        print(f"interrupted: saved {self.ckpt_dir / 'last.pt'} at step {self.step}", file=sys.stderr)
                    raise KeyboardInterrupt
        bar.close()
        self._close_tensorboard()
        return {"step": self.step, "resumed": resumed, "best": self.best, "val": last_val}

    @contextlib.contextmanager
    def _catch_interrupt(self) -> Iterator[None]:
        """Ctrl-C (SIGINT) during training: finish the current step, save ``last.pt`` (atomically),
        then raise KeyboardInterrupt (the CLI exits 130). A second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum: int, frame: Any) -> None:
            self._interrupted = True
            signal.signal(signal.SIGINT, previous)
            if self.progress:
                tqdm.write("Ctrl-C: saving a checkpoint after this step (press again to stop at once)")

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _interrupt_requested(self) -> bool:
        if world_size() == 1:
            return self._interrupted
        return float(all_reduce_sum(torch.tensor([float(self._interrupted)]))) > 0  # every process stops together

    def validate(self) -> dict[str, Any]:
        res = validate(self.method, self.val_set, self.cfg, self.device, progress=self.progress)
        self.method.train()
        key = "seg_miou" if "seg_miou" in res else "cam_miou"
        self._log({"step": self.step, "val": res})
        if self.best is None or res[key] > self.best:
            self.best = res[key]
            self.save_checkpoint("best.pt")
        if self.progress:
            tqdm.write(
                f"[val @ {self.step}] " + "  ".join(f"{k} {v:.2f}" for k, v in res.items() if k.endswith("miou"))
            )
        return res


# Settings that change how a run is computed, not what it computes: a resume may change them freely.
EXECUTION_KEYS = frozenset({"run.dir", "run.device", "run.threads", "run.tensorboard", "data.num_workers"})
CONFIG_CHANGES_FILE = "config_changes.jsonl"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("weights", "start_iters", "backbone_kwargs"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} for every setting that differs, execution keys excepted."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    return {
        k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in EXECUTION_KEYS
    }


def check_config_change(cfg: Config, *, allow: bool = False) -> dict[str, tuple[Any, Any]]:
    """Before resuming: compare ``cfg`` with the run's saved ``config.yaml``.

    A run with a checkpoint was trained with its saved settings, so other settings are refused (a
    ConfigError naming every differing key) unless ``allow``; an allowed change is appended to
    ``RUN/config_changes.jsonl`` (time, checkpoint step, old and new values). Returns the changes.
    """
    run_dir = Path(cfg.run.dir)
    saved = run_dir / "config.yaml"
    ckpts = sorted(run_dir.glob("**/checkpoints/*.pt"))
    if not saved.is_file() or not ckpts:
        return {}
    old = resolve_paths(load_config(saved))  # an old run's relative paths were read from the current directory
    new = cfg
    if cfg.train.epochs is not None:  # the saved config holds max_iters resolved from train.epochs
        new = resolve_epochs(cfg, len(VOCDataset(cfg.data.root, cfg.data.train_split)))
    changes = config_changes(old, new)
    if not changes:
        return {}
    listing = "; ".join(f"{k}: {old_v!r} -> {new_v!r}" for k, (old_v, new_v) in changes.items())
    if not allow:
        raise ConfigError(
            f"{saved}: this run was trained with other settings ({listing}); resuming would mix them. Use "
            "another run.dir, or pass --allow-config-change to resume with the new settings (recorded in "
            f"{run_dir / CONFIG_CHANGES_FILE})"
        )
    last = run_dir / "checkpoints" / "last.pt"
    step = load_checkpoint(last).get("step") if last.is_file() else None
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step,
              "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}}  # fmt: skip
    if is_main_process():
        with open(run_dir / CONFIG_CHANGES_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
    print(f"{run_dir}: resuming with changed settings ({listing}); recorded in {run_dir / CONFIG_CHANGES_FILE}")
    return changes
