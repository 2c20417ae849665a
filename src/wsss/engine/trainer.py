"""The training loop shared by every method (as detectron2's ``engine/train_loop.py``).

The engine owns: data loading (a deterministic, resumable sampler), the poly-schedule optimiser
with the four parameter groups of docs/methods/seco.md#optim, loss weighting and staging (``LossConfig``),
the NaN guard, and the run's state with resume. The loop (``Trainer.train``) only runs steps and
calls hooks (``wsss.engine.hooks``): logging to ``metrics.jsonl``, periodic validation, checkpoints,
TensorBoard and per-epoch LR rules are hooks. A method only says what one step computes (the
contract: ``wsss.methods.contract``).
"""

from __future__ import annotations

import contextlib
import random
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from wsss.core.checkpoint import check_checkpoint_classes, load_checkpoint, load_model_state, save_checkpoint
from wsss.core.config import Config, TrueMasks, iterations_per_epoch, resolve_epochs, save_config, true_masks_of
from wsss.core.device import check_device, cuda_available
from wsss.core.distributed import (
    all_gather_objects,
    all_reduce_sum,
    barrier,
    init_from_env,
    is_main_process,
    rank,
    world_size,
)
from wsss.core.errors import ConfigWarning, DataError, TrainingDiverged, UsageError
from wsss.data import ClsTrainDataset, VOCDataset
from wsss.data.transforms import TrainAugment
from wsss.data.voc import available_splits, read_split, true_mask_paths
from wsss.engine.hooks import (
    BestCheckpointer,
    DivergenceWarning,
    EpochLRRule,
    MetricsLogger,
    PeriodicCheckpointer,
    PeriodicValidation,
    TensorBoardWriter,
    lr_schedule_text,
)
from wsss.engine.optim import PolyWarmupAdamW, PolyWarmupSGD
from wsss.engine.train_loop import HookBase, TrainerBase, weak_method
from wsss.engine.validate import validate
from wsss.methods import MASK_TERM, Method, TrainContext, build_method, get_method_class
from wsss.models.weights import drop_missing_pretrained
from wsss.utils.procs import leave_stops_to_parent, stops_held_for_children


def validation_split(cfg: Config) -> str | None:
    """``data.val_split``, or None (with a note) when the dataset has no such split file: a custom
    dataset without masks has nothing to validate on, and trains without validation."""
    split = cfg.data.val_split
    if split and split not in available_splits(cfg.data.root):
        if is_main_process():
            print(
                f"note: {cfg.data.root} has no split {split!r} (data.val_split): training without validation; "
                "the run's last checkpoint is used",
                file=sys.stderr,
            )
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

    def __init__(
        self, n: int, seed: int, epoch: int, offset: int = 0, *, global_batch: int = 1, rank: int = 0, world: int = 1
    ):
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
            len(self.dataset),
            self.seed,
            self.epoch,
            self.offset,
            global_batch=self.global_batch,
            rank=rank(),
            world=world_size(),
        )
        loader = DataLoader(
            self.dataset,
            batch_size=self.micro,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=False,
            worker_init_fn=leave_stops_to_parent,
        )
        with stops_held_for_children():  # the workers start here, each epoch
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

    def close(self) -> None:
        """End the loader's workers now. Left to garbage collection, a stopped training's workers (signalled
        with the whole job) could outlive the iterator into interpreter exit, where the loader's
        SIGCHLD handler then raised "DataLoader worker exited unexpectedly" after the step was saved (seen
        once in CI under load)."""
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


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
        warmup_iter=t.warmup_iters,
        max_iter=t.max_iters,
        warmup_ratio=t.warmup_ratio,
        power=t.power,
        hold_lr_after_max=t.hold_lr_after_max,
    )
    if t.optimizer == "adamw":
        return PolyWarmupAdamW(groups, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, **schedule)
    if t.optimizer == "sgd":
        return PolyWarmupSGD(
            groups, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum, nesterov=t.nesterov, **schedule
        )
    raise UsageError(f"train.optimizer must be 'adamw' or 'sgd', got {t.optimizer!r}")


def teaches_cams_masks(cfg: Config, method: Method | type[Method]) -> bool:
    """Whether this training teaches a classifier's CAMs the user's own masks (``data.true_masks`` on a method whose
    CAMs come from its batches, ``Method.mask_term``; a stage that trains on masks, DeepLab's, reads them itself)."""
    return bool(true_masks_of(cfg.data)) and method.cams.source == "batch"


@dataclass(frozen=True)
class TrainingTargets:
    """What a training's photos are taught with, resolved once here from ``data.true_masks`` (the CLI,
    the trainer and the methods' pseudo-label stages each resolved it before): ``masks``, the training split's
    photos that have a mask of the user's (id -> file), of ``n_photos``; ``text``, the one line that says so (the
    CLI prints it, and nothing else); ``source``, what the setting names (``core.config.true_masks_of``)."""

    masks: dict[str, Path]
    n_photos: int
    text: str
    source: TrueMasks = TrueMasks()


def training_targets(cfg: Config, method: Method | type[Method]) -> TrainingTargets:
    """The targets of a training of ``cfg`` with ``method`` (its class will do): ``data.true_masks`` resolved on the
    training split (``data.voc.true_mask_paths``), and how they teach: a classifier's CAMs learn their pixels
    (:func:`teaches_cams_masks`, the loss term ``mask``), a stage that trains on masks takes them in place of the
    pseudo labels (docs/own-photos.md#how-many-masks). No masks named: none, and no text."""
    d = cfg.data
    source = true_masks_of(d)
    if not source:
        return TrainingTargets({}, 0, "")
    masks = true_mask_paths(d.root, d.train_split, source)
    n = len(read_split(d.root, d.train_split))
    if teaches_cams_masks(cfg, method):
        weight = cfg.loss.weights.get(MASK_TERM, 1.0)  # resolve_mask_term's default, the config left as it is
        text = (
            f"targets: the CAMs learn the pixels of {len(masks)} of the {n} photos of split {d.train_split} "
            f"from their own masks (loss term {MASK_TERM!r}, weight {weight:g}; per photo "
            f"{d.true_mask_weight:g}); every photo trains the classifier on its image labels"
        )
    else:
        rest = f"the rest on the pseudo labels of {d.pseudo_dir}" if d.pseudo_dir else "no pseudo labels"
        text = (
            f"targets: {len(masks)} of the {n} photos of split {d.train_split} train on their own masks (weight "
            f"{d.true_mask_weight:g}), {rest}"
        )
    return TrainingTargets(masks, n, text, source)


def config_without_gone_starts(
    cfg: Config, checkpoint: Path, run_dir: Path, state: Callable[[], Mapping[str, Any]], warn: bool = True
) -> Config:
    """``cfg`` to build a trained run's model where a start file is gone since (``drop_missing_pretrained``, the
    method's ``start_files`` with it): the options the build read off those files come from the checkpoint
    (``state()``'s ``built_options``), where the command line gives none. ``state`` is read only then."""
    dropped = drop_missing_pretrained(
        cfg, checkpoint, run_dir, warn=warn, option_files=get_method_class(cfg.method).start_files
    )
    if dropped is cfg:
        return cfg
    built = state().get("built_options") or {}
    unset = {key: value for key, value in built.items() if dropped.options.get(key) in (None, "", {})}
    return replace(dropped, options={**dropped.options, **unset})


def resolve_mask_term(cfg: Config, method: Method | type[Method]) -> None:
    """The CAMs' pixel term gets weight 1 unless the config gives one (``loss.weights.mask``), before the config is
    compared with a resumed run's or saved: the run's config.yaml says what it trained with."""
    if teaches_cams_masks(cfg, method):
        cfg.loss.weights.setdefault(MASK_TERM, 1.0)


def active_terms(cfg: Config, step: int) -> set[str]:
    """Loss terms switched on at ``step``: weight non-zero and ``step > start_iters[term]``."""
    w, start = cfg.loss.weights, cfg.loss.start_iters
    return {k for k, v in w.items() if v != 0 and step > start.get(k, -1)}


def _differences(a: dict[str, Any], b: dict[str, Any]) -> str:
    """What differs between two ``VOCDataset.fingerprint``s, in words (``a`` the other one, ``b`` the reference)."""
    said = []
    if a["classes"] != b["classes"]:
        said.append(
            f"its classes ({len(a['classes'])}: {', '.join(a['classes'][1:4])}, ...) are not "
            f"({len(b['classes'])}: {', '.join(b['classes'][1:4])}, ...)"
        )
    if a["n_ids"] != b["n_ids"] or a["ids"] != b["ids"]:
        same = " (as many, others or in another order)" if a["n_ids"] == b["n_ids"] else ""
        said.append(f"split {a['split']!r} lists {a['n_ids']} ids, not {b['n_ids']}{same}")
    elif a["labels"] != b["labels"]:
        said.append(f"the image labels of split {a['split']!r} differ")
    return "; ".join(said)


def check_same_data(root: str | Path, datasets: Sequence[VOCDataset | None]) -> None:
    """Under torchrun: a DataError on every process unless each reads the same splits, classes and labels as rank 0
    (``VOCDataset.fingerprint``). A node whose copy of the dataset differs trained on without a word, each process
    drawing its share from a permutation of another length; another class list fails later in a
    collective. Collective: every process calls it."""
    if world_size() == 1:
        return
    mine = [ds.fingerprint() if ds is not None else None for ds in datasets]
    every = all_gather_objects(mine)
    for r, theirs in enumerate(every):  # every process finds the same first difference: all stop, none waits
        for a, b in zip(theirs, every[0]):
            if a != b:
                what = _differences(a, b) if a is not None and b is not None else "one of them has no val split"
                raise DataError(
                    f"{root}: process {r} of this job reads other data than process 0 ({what}); every process "
                    "must read the same dataset (a copy on each node must be identical)"
                )


def _warn_changed_split(saved: dict[str, Any] | None, train_set: VOCDataset, last: Path) -> None:
    """A warning when the training split differs from the one ``last`` was saved with (older checkpoints
    hold no fingerprint: nothing to compare). Legal (a broken image dropped, labels corrected), but the resumed
    run no longer draws the images an uninterrupted one would: said, since its result is not that run's."""
    now = train_set.fingerprint()
    if saved is None or saved == now or not is_main_process():
        return
    warnings.warn(
        ConfigWarning(
            f"{last}: the training data changed since this checkpoint ({_differences(now, saved)}); the run "
            "resumes on the data as it is now, in another order than an uninterrupted run's"
        ),
        stacklevel=2,
    )


class Trainer(TrainerBase):
    """One run: ``Trainer(cfg).train()``. Under torchrun every process builds one; rank 0 writes.

    ``hooks``: more hooks to run after the default ones (``build_hooks``); ``register_hooks`` adds
    more later. What it trains, on what and with what comes from overridable builders (``build_model``,
    ``build_train_loader``, ``build_optimizer``), as detectron2's DefaultTrainer.
    """

    def __init__(self, cfg: Config, *, progress: bool = True, hooks: Sequence[HookBase] = ()):
        super().__init__()
        self.run_dir = Path(cfg.run.dir)
        self._threads_before = torch.get_num_threads()  # restored when train() ends (a library leaves none changed)
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        check_device(cfg.run.device)  # "banana", or cuda without a GPU: one line, not torch's traceback later
        self.device = init_from_env(cfg.run.device)
        self.progress = progress and is_main_process()
        seed_everything(cfg.run.seed + rank())

        self.train_set = VOCDataset(cfg.data.root, cfg.data.train_split)
        cfg = self.cfg = resolve_epochs(cfg, len(self.train_set))  # train.epochs -> train.max_iters
        self.val_set = VOCDataset(cfg.data.root, cfg.data.val_split) if validation_split(cfg) else None
        check_same_data(cfg.data.root, [self.train_set, self.val_set])
        self.method = self.build_model(self._model_config(cfg), self.train_set.class_names).to(self.device)
        resolve_mask_term(cfg, self.method)  # (done by `wsss train` already; a trainer built directly needs it)
        # the length in epochs (not whole when set by iterations), before anything is written: a step rule in
        # fractions of the training resolves here, and one that does not fit it is refused here
        self.epochs = cfg.train.max_iters / iterations_per_epoch(len(self.train_set), cfg.train.batch_size)
        self.method.set_training_length(self.epochs)
        self.model: torch.nn.Module = self.method
        if world_size() > 1:
            # find_unused_parameters: staged losses leave heads unused early on (as the official code);
            # no buffer broadcast: the queue and prototypes are updated identically from gathered data.
            self.model = DistributedDataParallel(
                self.method,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
                broadcast_buffers=False,
            )
        self.targets = training_targets(cfg, self.method)  # data.true_masks for the methods (TrainContext)
        self.stream = self.build_train_loader(cfg, self.train_set, self.method)
        self.optimizer = self.build_optimizer(cfg, self.method)
        amp = cfg.run.amp if self.device.type == "cuda" else "none"  # the CPU stays fp32
        if amp not in ("none", "bf16", "fp16"):
            raise UsageError(f"run.amp must be none, bf16 or fp16, got {cfg.run.amp!r}")
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.last_val: dict[str, Any] | None = None  # the last validation of this train() call
        self._epoch_seen: int | None = None  # the data stream's epoch that on_epoch_start last saw
        self.register_hooks([*self.build_hooks(), *hooks])

    def _model_config(self, cfg: Config) -> Config:
        """``cfg`` for building the model: a run that resumes from its own ``last.pt`` does not need a start that is
        gone since (``drop_missing_pretrained``); a fresh one does, and names it. The run's config keeps the name."""
        last = self.ckpt_dir / "last.pt"
        if not last.is_file():
            return cfg
        return config_without_gone_starts(cfg, last, self.run_dir, lambda: load_checkpoint(last), is_main_process())

    # -- builders (detectron2's DefaultTrainer: a subclass overrides one and keeps the rest) -------------
    @classmethod
    def build_model(cls, cfg: Config, class_names: Sequence[str]) -> Method:
        """The method of ``cfg`` for the training split's class names (``wsss.methods.build_method``)."""
        return build_method(cfg, class_names)

    @classmethod
    def build_train_loader(cls, cfg: Config, train_set: VOCDataset, method: Method) -> BatchStream:
        """The stream of training batches: ``train_set`` augmented (``data.crop_size``, scale range, flips,
        colour jitter) with the views the method adds, drawn in global batches of ``train.batch_size`` shared
        by the processes, ``train.micro_batch`` images per forward; the masked photos' targets are
        :func:`training_targets`'s."""
        d, t = cfg.data, cfg.train
        augment = TrainAugment(d.crop_size, scale_range=d.scale_range, hflip=d.hflip, color_jitter=d.color_jitter)
        dataset = ClsTrainDataset(train_set, augment, extra_views=method.train_transform_views(), seed=cfg.run.seed)
        if teaches_cams_masks(cfg, method):  # the masked photos carry their mask, the others an ignored one
            masks = training_targets(cfg, method).masks
            dataset.set_target_dir(None, true_masks=masks, true_mask_weight=d.true_mask_weight, unmasked_ignored=True)
        local = t.batch_size // world_size()
        return BatchStream(dataset, t.batch_size, t.micro_batch or local, cfg.run.seed, d.num_workers)

    @classmethod
    def build_optimizer(cls, cfg: Config, method: Method) -> torch.optim.Optimizer:
        """PolyWarmupAdamW / PolyWarmupSGD over the method's parameter groups (:func:`build_optimizer`)."""
        return build_optimizer(method, cfg)

    # -- hooks ------------------------------------------------------------------------------------
    def build_hooks(self) -> list[HookBase]:
        """The default hooks, in the order they run (``wsss.engine.hooks``): the checkpoint is written
        before validation, so a crash in validation loses no finished step."""
        t = self.cfg.train
        save = weak_method(self.save_checkpoint)  # the hooks hold no strong reference back (train_loop.weak_method)
        hooks = [
            EpochLRRule(self.method, self.optimizer, t.lr),
            MetricsLogger(
                self.run_dir / "metrics.jsonl",
                period=t.log_iters,
                max_iter=t.max_iters,
                optimizer=self.optimizer,
                progress=self.progress,
            ),
            DivergenceWarning(),
            ckpt := PeriodicCheckpointer(
                save, period=t.ckpt_iters, max_iter=t.max_iters, path=self.ckpt_dir / "last.pt", progress=self.progress
            ),
            # Ctrl-C stops a validation between images; the checkpointer then saves and stops at the next step
            PeriodicValidation(
                t.eval_iters, partial(weak_method(self.validate), should_stop=lambda: ckpt.interrupted), t.max_iters
            )
            if self.val_set is not None
            else None,
            BestCheckpointer(save, path=self.ckpt_dir / "best.pt"),
            TensorBoardWriter(self.run_dir / "tensorboard", self.optimizer, enabled=self.cfg.run.tensorboard),
        ]
        return [h for h in hooks if h is not None]

    @property
    def best(self) -> float | None:
        """The best validation score so far (``BestCheckpointer``), or None."""
        return next((h.best for h in self.hooks if isinstance(h, BestCheckpointer)), None)

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
            "data": {**self.stream.position(), "dataset": self.train_set.fingerprint()},
            "rng": all_gather_objects(self._rng_state()),  # one entry per process, rank order
            "config": self.cfg.to_dict(),
            "num_classes": self.train_set.num_classes,
            "class_names": self.train_set.class_names,
        }
        built = self.method.built_options()
        if built:
            state["built_options"] = built
        hooks = self.hook_states()  # collective
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
            run_dir=self.run_dir,
            step=self.step,
            device=self.device,
            train_set=self.train_set,
            train_data=self.stream.dataset,
            val_set=self.val_set,
            optimizer=self.optimizer,
            save=self.save_checkpoint,
            true_masks=self.targets.masks,
        )

    def resume_if_possible(self) -> bool:
        last = self.ckpt_dir / "last.pt"
        if not last.is_file():
            return False
        state = load_checkpoint(last)
        check_checkpoint_classes(state, last, self.train_set.class_names, f"the dataset {self.cfg.data.root}")
        load_model_state(self.method, state["model"], last)
        missing = [k for k in ("optimizer", "scaler", "data", "rng") if k not in state]
        if missing:  # a KeyError traceback before: an imported run is no training to go on with
            raise UsageError(
                f"{last}: weights only (no optimizer state: a run of `wsss import`, or a file saved by other code), "
                f"not a training to resume; train from these weights in a new run: model.pretrained={last} "
                "run.dir=NEW_RUN"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.stream.epoch, self.stream.offset = state["data"]["epoch"], state["data"]["offset"]
        _warn_changed_split(state["data"].get("dataset"), self.train_set, last)
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
        self.load_hook_states(state.get("hooks", {}))
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
            self.enter_epoch(self._epoch_seen)
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
                            f"; the last checkpoint is {self.ckpt_dir / 'last.pt'}"
                            if (self.ckpt_dir / "last.pt").is_file()
                            else "; no checkpoint was saved yet"
                        )
                        # a finite loss can already be diverging: the last checkpoint may hold a model whose loss
                        # rose for many steps (ccp-dev's DeepLab stage on banded labels, BENCHMARKS.md)
                        + f" (a loss that rose before this in {self.run_dir / 'metrics.jsonl'} means the training"
                        " diverged: lower train.lr or set train.grad_clip)"
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

    def _describe_device(self) -> str:
        """Where the run trains, for its start line: the device, its autocast, and a GPU the config leaves idle
        (the ``real_cpu`` presets pin ``run.device: cpu``, so that their figures are the CPU's)."""
        dev = str(self.device)
        if self.amp_dtype is not None:
            return f"{dev}, {self.cfg.run.amp} autocast"
        if self.device.type == "cpu" and cuda_available():
            return f"{dev} (run.device={self.cfg.run.device}; a GPU is here: run.device=cuda trains on it)"
        return dev

    # -- the loop -----------------------------------------------------------------------------------
    def train(self, until: int | None = None) -> dict[str, Any]:
        """Train to ``train.max_iters`` (or stop after step ``until``, as a kill would, for tests).

        Runs with ``run.threads`` intra-op threads and gives the process its thread count back when it
        ends, so that a script or a test that trains goes on with its own (the CLI sets ``run.threads``
        for the whole command itself)."""
        try:
            if self.cfg.run.threads > 0:
                torch.set_num_threads(self.cfg.run.threads)
            return self._train(until)
        finally:
            torch.set_num_threads(self._threads_before)

    def _train(self, until: int | None) -> dict[str, Any]:
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
            schedule = lr_schedule_text(
                self.method, t.lr, self.epochs, warmup_iters=t.warmup_iters, power=t.power, max_iters=t.max_iters
            )
            print(
                f"train {self.run_dir}: {cfg.method}, {cfg.model.backbone}, pretrained weights {weights}; {start}"
                f" of {t.max_iters}; on {self._describe_device()}; {schedule}",
                file=sys.stderr,
                flush=True,
            )
        if self.step >= stop:
            return {"step": self.step, "resumed": resumed, "best": self.best}
        self.method.train()
        self.method.on_train_start(self.context())
        self._epoch_seen = None
        self.last_val = None
        try:
            self.run_loop(stop)
        finally:
            self.stream.close()
        return {"step": self.step, "resumed": resumed, "best": self.best, "val": self.last_val}

    def validate(self, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Validate now (every process calls it; ``PeriodicValidation`` calls it periodically) and publish
        the scores (``BestCheckpointer`` keeps ``checkpoints/best.pt``). ``should_stop``: polled between
        images (Ctrl-C); a stopped validation publishes nothing and returns {}."""
        res = validate(
            self.method, self.val_set, self.cfg, self.device, progress=self.progress, should_stop=should_stop
        )
        self.method.train()
        if res is None:
            return {}
        self.log({"step": self.step, "val": res})
        if self.progress:
            scores = "  ".join(f"{k} {v:.2f}" for k, v in res.items() if k.endswith("miou"))
            tqdm.write(f"[val @ {self.step}] {scores}")
        self.last_val = res
        return res
