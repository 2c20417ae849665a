"""The training loop shared by every method.

The engine owns: data loading (a deterministic, resumable sampler), the PolyWarmupAdamW optimiser
with the four parameter groups of methods.md 2.10, loss weighting and staging (``LossConfig``),
the NaN guard, logging to ``metrics.jsonl``, periodic validation, and checkpoints with resume.
A method only says what one step computes (``wsss.methods.base``).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from wsss.data import ClsTrainDataset, VOCDataset
from wsss.data.transforms import TrainAugment
from wsss.engine.checkpoint import load_checkpoint, save_checkpoint
from wsss.engine.config import Config, save_config
from wsss.engine.optim import PolyWarmupAdamW
from wsss.engine.validate import validate
from wsss.methods.base import Method, build_method
from wsss.utils.io import atomic_write


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the message names the iteration and the loss terms."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, started at ``offset``: the data position is (epoch, offset),
    which a checkpoint stores so that a resumed run sees exactly the batches it would have seen."""

    def __init__(self, n: int, seed: int, epoch: int, offset: int = 0):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        self.order = torch.randperm(n, generator=g)[offset:].tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class BatchStream:
    """Infinite batches over a dataset, epoch after epoch (drop_last, as the official loaders)."""

    def __init__(self, dataset: ClsTrainDataset, batch_size: int, seed: int, num_workers: int, epoch=0, offset=0):
        if len(dataset) < batch_size:
            raise ValueError(f"the training split has {len(dataset)} images, fewer than the batch size {batch_size}")
        self.dataset, self.batch_size, self.seed, self.num_workers = dataset, batch_size, seed, num_workers
        self.epoch, self.offset = epoch, offset
        self._it = None

    def _start_epoch(self) -> None:
        self.dataset.set_epoch(self.epoch)
        sampler = EpochSampler(len(self.dataset), self.seed, self.epoch, self.offset)
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
            num_workers=self.num_workers, persistent_workers=False,
        )  # fmt: skip
        self._it = iter(loader)

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._it is None:
                self._start_epoch()
            try:
                batch = next(self._it)
                self.offset += self.batch_size
                return batch
            except StopIteration:
                self._it = None
                self.epoch += 1
                self.offset = 0

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}


def build_optimizer(method: Method, cfg: Config) -> PolyWarmupAdamW:
    t = cfg.train
    mults = {"backbone": 1.0, "backbone_norm": 1.0, "head": t.head_lr_mult, "decoder": t.head_lr_mult}
    groups = []
    for name, params in method.param_groups().items():
        if name not in mults:
            raise KeyError(f"unknown parameter group {name!r} from method {method.name}")
        params = [p for p in params if p.requires_grad]
        if params:
            groups.append({"name": name, "params": params, "lr": t.lr * mults[name]})
    return PolyWarmupAdamW(
        groups, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, warmup_iter=t.warmup_iters,
        max_iter=t.max_iters, warmup_ratio=t.warmup_ratio, power=t.power, hold_lr_after_max=t.hold_lr_after_max,
    )  # fmt: skip


def active_terms(cfg: Config, step: int) -> set[str]:
    """Loss terms switched on at ``step``: weight non-zero and ``step > start_iters[term]``."""
    w, start = cfg.loss.weights, cfg.loss.start_iters
    return {k for k, v in w.items() if v != 0 and step > start.get(k, -1)}


class Trainer:
    def __init__(self, cfg: Config, *, progress: bool = True):
        self.cfg = cfg
        self.run_dir = Path(cfg.run.dir)
        self.progress = progress
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.device = resolve_device(cfg.run.device)
        seed_everything(cfg.run.seed)

        d = cfg.data
        self.train_set = VOCDataset(d.root, d.train_split)
        self.val_set = VOCDataset(d.root, d.val_split) if d.val_split else None
        self.method = build_method(cfg, self.train_set.num_classes).to(self.device)
        augment = TrainAugment(d.crop_size, scale_range=d.scale_range, hflip=d.hflip, color_jitter=d.color_jitter)
        dataset = ClsTrainDataset(
            self.train_set, augment, extra_views=self.method.train_transform_views(), seed=cfg.run.seed
        )
        self.stream = BatchStream(dataset, cfg.train.batch_size, cfg.run.seed, d.num_workers)
        self.optimizer = build_optimizer(self.method, cfg)
        self.step = 0
        self.best: float | None = None

    # ------------------------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data": self.stream.position(),
            "best": self.best,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            "config": self.cfg.to_dict(),
            "num_classes": self.train_set.num_classes,
            "class_names": self.train_set.class_names,
        }

    def resume_if_possible(self) -> bool:
        last = self.ckpt_dir / "last.pt"
        if not last.is_file():
            return False
        state = load_checkpoint(last)
        self.method.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.best = state.get("best")
        self.stream.epoch, self.stream.offset = state["data"]["epoch"], state["data"]["offset"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
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
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    # ------------------------------------------------------------------------------------------
    def train(self, until: int | None = None) -> dict[str, Any]:
        """Train to ``train.max_iters`` (or stop after step ``until``, as a kill would, for tests)."""
        cfg, t = self.cfg, self.cfg.train
        stop = t.max_iters if until is None else min(until, t.max_iters)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume_if_possible()
        save_config(cfg, self.run_dir / "config.yaml")
        if self.step >= stop:
            return {"step": self.step, "resumed": resumed, "best": self.best}
        self.method.train()
        sums: dict[str, float] = defaultdict(float)
        n_logged, t0 = 0, time.time()
        bar = tqdm(total=t.max_iters, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        last_val: dict[str, Any] | None = None
        while self.step < stop:
            step = self.step
            batch = self._to_device(next(self.stream))
            active = active_terms(cfg, step)
            terms = self.method.training_step(batch, step, active)
            unknown = set(terms) - set(cfg.loss.weights)
            if unknown:
                raise KeyError(f"loss terms {sorted(unknown)} have no weight in loss.weights")
            loss = sum(cfg.loss.weights[k] * v for k, v in terms.items() if k in active)
            values = {k: float(v.detach()) for k, v in terms.items()}
            if not torch.is_tensor(loss) or not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"non-finite loss at iteration {step}: "
                    + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                    + f"; the last good checkpoint is {self.ckpt_dir / 'last.pt'}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.method.parameters(), t.grad_clip)
            self.optimizer.step()
            self.method.after_step(step)
            self.step += 1
            bar.update(1)

            for k, v in values.items():
                sums[k] += v
            sums["loss"] += float(loss.detach())
            n_logged += 1
            if self.step % t.log_iters == 0 or self.step == t.max_iters:
                elapsed = time.time() - t0
                record = {
                    "step": self.step,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "sec_per_iter": elapsed / n_logged,
                    **{f"loss/{k}": v / n_logged for k, v in sums.items()},
                }
                self._log(record)
                bar.set_postfix(loss=f"{record['loss/loss']:.3f}")
                sums.clear()
                n_logged, t0 = 0, time.time()
            if self.val_set is not None and (self.step % t.eval_iters == 0 or self.step == t.max_iters):
                last_val = self.validate()
            if self.step % t.ckpt_iters == 0 or self.step == t.max_iters:
                save_checkpoint(self._state(), self.ckpt_dir / "last.pt")
        bar.close()
        return {"step": self.step, "resumed": resumed, "best": self.best, "val": last_val}

    def validate(self) -> dict[str, Any]:
        res = validate(self.method, self.val_set, self.cfg, self.device, progress=self.progress)
        self.method.train()
        key = "seg_miou" if "seg_miou" in res else "cam_miou"
        record = {"step": self.step, "val": res}
        self._log(record)
        if self.best is None or res[key] > self.best:
            self.best = res[key]
            save_checkpoint(self._state(), self.ckpt_dir / "best.pt")
        tqdm.write(f"[val @ {self.step}] " + "  ".join(f"{k} {v:.2f}" for k, v in res.items() if k.endswith("miou")))
        return res


def train(cfg: Config, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; returns the final step and validation."""
    trainer = Trainer(cfg, progress=progress)
    out = trainer.train()
    if not math.isfinite(out.get("best") or 0.0):
        raise TrainingDiverged("validation produced a non-finite score")
    return out
