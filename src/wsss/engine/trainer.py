"""The training loop shared by every method (as detectron2's ``engine/train_loop.py``).

The engine owns: data loading (a deterministic, resumable sampler), the poly-schedule optimiser
with the four parameter groups of methods.md 2.10, loss weighting and staging (``LossConfig``),
the NaN guard, and the run's state with resume. The loop (``Trainer.train``) only runs steps and
calls hooks (``wsss.engine.hooks``): logging to ``metrics.jsonl``, periodic validation, checkpoints,
TensorBoard and per-epoch LR rules are hooks. A method only says what one step computes (the
contract: ``wsss.core.registry``).
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
import weakref
from collections import defaultdict
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from wsss.core.checkpoint import check_checkpoint_classes, load_checkpoint, load_model_state, save_checkpoint
from wsss.core.config import Config, load_config, resolve_epochs, resolve_paths, save_config
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
from wsss.data.voc import available_splits
from wsss.engine.hooks import (
    EpochLRRule,
    HookBase,
    MetricsLogger,
    PeriodicCheckpointer,
    PeriodicValidation,
    TensorBoardWriter,
)
from wsss.engine.optim import PolyWarmupAdamW, PolyWarmupSGD
from wsss.engine.validate import validate
from wsss.methods import build_method, get_method_class


def validation_split(cfg: Config) -> str | None:
    """``data.val_split``, or None (with a note) when the dataset has no such split file: a custom
    dataset without masks has nothing to validate on, and trains without validation."""
    split = cfg.data.val_split
    if split and split not in available_splits(cfg.data.root):
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
    """One run: ``Trainer(cfg).train()``. Under torchrun every process builds one; rank 0 writes.

    ``hooks``: more hooks to run after the default ones (``build_hooks``); ``register_hooks`` adds
    more later.
    """

    def __init__(self, cfg: Config, *, progress: bool = True, hooks: Sequence[HookBase] = ()):
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
        self.last_val: dict[str, Any] | None = None  # the last validation of this train() call
        self._epoch_seen: int | None = None  # the data stream's epoch that on_epoch_start last saw
        self.step_losses: tuple[float, dict[str, float]] = (0.0, {})  # the last step's (total, terms)
        self.hooks: list[HookBase] = []
        self.register_hooks([*self.build_hooks(), *hooks])

    # -- hooks ------------------------------------------------------------------------------------
    def build_hooks(self) -> list[HookBase]:
        """The default hooks, in the order they run (``wsss.engine.hooks``)."""
        return [EpochLRRule(), MetricsLogger(), PeriodicValidation(), PeriodicCheckpointer(), TensorBoardWriter()]

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        """Append ``hooks`` (None entries are skipped); they run after the ones already registered."""
        for h in hooks:
            if h is None:
                continue
            if not isinstance(h, HookBase):
                raise TypeError(f"a hook must subclass wsss.engine.hooks.HookBase, got {type(h).__name__}")
            h.trainer = weakref.proxy(self)  # no reference cycle (as detectron2)
            self.hooks.append(h)

    def _hook(self, kind: type[HookBase]) -> HookBase | None:
        return next((h for h in self.hooks if isinstance(h, kind)), None)

    def log(self, record: dict[str, Any]) -> None:
        """Publish ``record`` (``{"step": ..., ...}``) to every hook's ``write`` (metrics.jsonl, TensorBoard)."""
        for h in self.hooks:
            h.write(record)

    # -- the run's state ------------------------------------------------------------------------
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
        state = {
            "step": self.step,
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data": self.stream.position(),
            "best": self.best,
            "rng": all_gather_objects(self._rng_state()),  # one entry per process, rank order
            "config": self.cfg.to_dict(),
            "num_classes": self.train_set.num_classes,
            "class_names": self.train_set.class_names,
        }
        hooks = {type(h).__name__: s for h in self.hooks if (s := h.state_dict())}
        if hooks:
            state["hooks"] = hooks
        return state

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

    def resume_if_possible(self) -> bool:
        last = self.ckpt_dir / "last.pt"
        if not last.is_file():
            return False
        state = load_checkpoint(last)
        check_checkpoint_classes(state, last, self.train_set.class_names, f"the dataset {self.cfg.data.root}")
        load_model_state(self.method, state["model"], last)
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
        hook_states = state.get("hooks", {})
        for h in self.hooks:
            h.load_state_dict(hook_states.get(type(h).__name__, {}))
        return True

    # -- one step ---------------------------------------------------------------------------------
    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def run_step(self) -> None:
        """Draw the next batch (an epoch that starts calls ``before_epoch`` of the method and the hooks),
        train one step on it; its losses are ``step_losses``."""
        micro_batches = next(self.stream)
        if self.stream.epoch != self._epoch_seen:
            self._epoch_seen = self.stream.epoch
            self.method.on_epoch_start(self._epoch_seen)
            for h in self.hooks:
                h.before_epoch(self._epoch_seen)
        self.step_losses = self._train_step(micro_batches, self.step)

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

    # -- the loop -----------------------------------------------------------------------------------
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
        self.method.train()
        self.method.on_train_start(self.context())
        self._epoch_seen = None
        self.last_val = None
        for h in self.hooks:
            h.before_train()
        try:
            while self.step < stop:
                for h in self.hooks:
                    h.before_step()
                self.run_step()
                self.step += 1
                for h in self.hooks:
                    h.after_step()
        finally:
            for h in self.hooks:
                h.after_train()
        return {"step": self.step, "resumed": resumed, "best": self.best, "val": self.last_val}

    def validate(self) -> dict[str, Any]:
        """Validate now (every process calls it; ``PeriodicValidation`` calls it periodically), log the
        scores, keep the best (segmentation mIoU, else CAM mIoU) as ``best`` and ``checkpoints/best.pt``."""
        ckpt = self._hook(PeriodicCheckpointer)  # Ctrl-C stops validation between images (then saves, stops)
        stop = (lambda: ckpt.interrupted) if isinstance(ckpt, PeriodicCheckpointer) else None
        res = validate(self.method, self.val_set, self.cfg, self.device, progress=self.progress, should_stop=stop)
        self.method.train()
        if res is None:
            return {}
        key = "seg_miou" if "seg_miou" in res else "cam_miou"
        self.log({"step": self.step, "val": res})
        if self.best is None or res[key] > self.best:
            self.best = res[key]
            self.save_checkpoint("best.pt")
        if self.progress:
            scores = "  ".join(f"{k} {v:.2f}" for k, v in res.items() if k.endswith("miou"))
            tqdm.write(f"[val @ {self.step}] {scores}")
        self.last_val = res
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


def _canonical(cfg: Config) -> dict[str, Any]:
    """``cfg`` as a dict whose method options use their current names (``config_aliases`` of the method's
    Options: a run saved before a key was renamed compares equal to the same settings under the new name)."""
    d = cfg.to_dict()
    try:
        aliases: dict[str, str] = getattr(get_method_class(cfg.method).Options, "config_aliases", {})
    except UsageError:  # an unknown method: the build reports it
        return d
    d["options"] = {aliases.get(k, k): v for k, v in d.get("options", {}).items()}
    return d


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} for every setting that differs, execution keys excepted."""
    a, b = _flatten(_canonical(old)), _flatten(_canonical(new))
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
    # a checkpoint of the run, or of one of its rounds (SC-CAM); not a walk of the whole run folder
    ckpt = next(chain(run_dir.glob("checkpoints/*.pt"), run_dir.glob("round_*/checkpoints/*.pt")), None)
    if not saved.is_file() or ckpt is None:
        return {}
    old = resolve_paths(load_config(saved))  # an old run's relative paths were read from the current directory
    changes = config_changes(old, cfg)
    if cfg.train.epochs is not None:
        # max_iters follows from train.epochs (compared itself): a saved config holds it resolved (the
        # trainer's) or not (the SC-CAM driver's), and neither is a change of settings
        changes.pop("train.max_iters", None)
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
    step = None
    if last.is_file():
        # the change is recorded only once the checkpoint is known to resume under it (issue 33): a
        # checkpoint that cannot be read, or whose weights do not fit the new model, fails here first
        state = load_checkpoint(last)
        step = state.get("step")
        if "model" in state and "num_classes" in state:
            load_model_state(build_method(cfg, int(state["num_classes"])), state["model"], last)
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step,
              "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}}  # fmt: skip
    if is_main_process():
        with open(run_dir / CONFIG_CHANGES_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{run_dir}: resuming with changed settings ({listing}); recorded in {run_dir / CONFIG_CHANGES_FILE}")
    return changes
