"""SC-CAM, sub-category exploration (Chang et al., CVPR 2020; docs/methods/sccam.md#specification).

A multi-round method (sccam.md#rounds). Round 0 is the plain classifier (PSA's ResNet-38 classifier: Dropout2d,
GAP, a bias-free 1x1 ``fc8``; sccam.md#heads). Round r >= 1:

1. features: the GAP of the final map of the round r-1 model, scale 1.0, un-flipped, full
   resolution, on every image of the training split (sccam.md#subcategory-labels);
2. per parent class, k-means of the features of the images labelled with it into K sub-categories
   -> the (N, (C-1)*K) sub-category labels (sccam.md#subcategory-labels; ``subcategory.py``), written
   atomically to ``RUN/round_r/subcategory_labels.npz``;
3. a **fresh** classifier (re-initialised from ``model.pretrained``, never the previous round's
   weights; sccam.md#rounds) with two GAP heads, ``fc8_20`` (parents) and ``fc8_200`` (sub-categories), trained
   with ``L = MLSM(x_parent, y_parent) + lambda * MLSM(x_sub, y_sub)`` (sccam.md#training); lambda = 5 is
   ``loss.weights.sub``, the parent term is ``loss.weights.cls``.

Run directory (``wsss train`` calls the method's ``train_driver``, ``train_rounds`` below)::

    RUN/config.yaml                the config as given (``options.round`` unset = the last round)
    RUN/round_0/                   a normal Trainer run: config.yaml, checkpoints/, metrics.jsonl
    RUN/round_r/subcategory_labels.npz, RUN/round_r/...   for r = 1..options.rounds
    RUN/rounds.json                per finished round: iterations, training-time validation,
                                   CAM mIoU on ``options.round_eval_split``, seconds
    RUN/checkpoints/last.pt        the last round's final checkpoint (a hard link or copy), so
                                   ``wsss cam RUN`` / ``load_run(RUN)`` use the final model

Every step is resumable: a finished round (in rounds.json) is skipped, labels already written are
reused, and an interrupted round resumes from its own ``last.pt``.

``cam_maps`` returns the parent-head CAM ``relu(conv(f, fc8_20.weight))`` (the headline CAM of
sccam.md#cam-inference) and, as the auxiliary map, the sub-category CAMs merged to their parents by the max
over the K sub-categories (the "cls200" CAM of sccam.md#cam-inference; merged per pass here, before the
multi-scale sum).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.cam.affinity import PSASeedOptions
from wsss.core.config import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_NUMBER,
    Config,
    from_dict,
    iterations_per_epoch,
    resolve_epochs,
    save_config,
    set_dotted,
    setting,
)
from wsss.core.device import resolve_device
from wsss.core.errors import ConfigError, DataError, UsageError
from wsss.core.files import atomic_write, link_or_copy
from wsss.data import VOCDataset
from wsss.methods.base import backbone_from_config
from wsss.methods.contract import CamDeclaration, EngineAPI, Method, TrainContext, build_method, register_method
from wsss.methods.imports import ImportLayout, key_mapped, register_import
from wsss.methods.psa import psa_group_options, psa_param_groups
from wsss.methods.sccam.official_keys import sccam_state_from_official
from wsss.methods.sccam.subcategory import SubcategoryLabels, build_subcategory_labels, extract_features
from wsss.models.heads import CAMClassifier
from wsss.models.official_keys import OfficialKeyError
from wsss.models.weights import check_state_dict, read_state_dict

LABELS_FILE = "subcategory_labels.npz"


def labels_file(round_dir: str | Path) -> Path | None:
    """The sub-category label file of a round directory, or None if there is none."""
    path = Path(round_dir) / LABELS_FILE
    return path if path.is_file() else None


@dataclass
class SCCAMOptions(PSASeedOptions):
    # K, sub-categories per parent class (sccam.md#subcategory-labels: k_cluster 10)
    num_subcategories: int = setting(10, **POSITIVE)
    rounds: int = setting(3, **NON_NEGATIVE)  # sub-category rounds after round 0 (sccam.md#rounds: R1..R3)
    # the round this model belongs to; set per round by the driver; None = the last
    round: int | None = setting(None, **NON_NEGATIVE)
    dropout: float = setting(0.5, **FRACTION)  # Dropout2d on the final map before GAP (sccam.md#heads: dropout7)
    # Poly schedule of a sub-category round in epochs of the training split (sccam.md#training: max_epoches 61);
    # None: ``train.max_iters`` iterations and no snapshots.
    schedule_epochs: float | None = setting(61.0, **POSITIVE_NUMBER)
    # Round r stops after snapshot_epochs[r-1] epochs: script.sh uses the ep30/40/50 checkpoints,
    # saved at the end of epoch index 30/40/50, i.e. after 31/41/51 epochs (sccam.md#rounds). [] = full
    # schedule.
    snapshot_epochs: list[float] = setting(factory=lambda: [31.0, 41.0, 51.0], **POSITIVE_NUMBER)
    # Quirk (docs/methods/sccam.md#quirk-switches): true (official) = the lr follows the 61-epoch poly schedule
    # and round r is cut at its snapshot, mid-schedule; false = each round's poly schedule ends at its snapshot.
    quirk_mid_schedule_snapshot: bool = True
    # Quirk (sccam.md#training, inherited from PSA's PolyOptimizer): true (official) = SGD momentum equals the weight
    # decay (5e-4: ``super().__init__(params, lr, weight_decay)`` fills SGD's momentum slot), i.e.
    # effectively no momentum; false = ``train.momentum``.
    quirk_psa_momentum: bool = True
    # round 0 = PSA's classifier (PSA README: 15 epochs); None = max_iters
    round0_epochs: float | None = setting(15.0, **POSITIVE_NUMBER)
    # Dotted config keys changed for round 0 only (PSA's recipe differs: lr 0.1, crop 448), e.g.
    # {"train.lr": 0.1, "data.crop_size": 448}.
    round0_overrides: dict[str, Any] = field(default_factory=dict)
    # A trained round-0 classifier used instead of training round 0 (script.sh: PSA's res38_cls.pth;
    # keys conv1a..bn7 + fc8.weight, or a checkpoint of this toolkit's round 0).
    round0_checkpoint: str | None = None
    kmeans_n_init: int = setting(10, **POSITIVE)  # k-means restarts (the sklearn default the official code ran with)
    # Quirk (infer_cls.py, golden sccam_infer_cls_*.npz): the heatmap helper thresholds the normalised CAM in
    # place, so the CAM that the la/ha CRF (`wsss pseudo --refine psa`) reads is {0, 255} at cam.bkg_thre
    # (0.15); false = the normalised CAM.
    quirk_binarised_crf_cam: bool = True
    round_eval_split: str | None = None  # per-round CAM mIoU on this split in rounds.json (VOC: train)
    round_eval_images: int | None = setting(None, **POSITIVE)  # cap on the images of that evaluation (None = all)


def binarise_cam(cam: np.ndarray, threshold: float) -> np.ndarray:
    """SC-CAM's in-place heatmap quirk: CAM values > ``threshold`` become 255, the others 0."""
    return np.where(np.asarray(cam) > threshold, 255.0, 0.0).astype(np.float32)


def _xavier(head: CAMClassifier) -> CAMClassifier:
    nn.init.xavier_uniform_(head.conv.weight)  # sccam.md#heads: fc8 layers are xavier_uniform, bias-free
    return head


@dataclass
class RoundPlan:
    round: int
    cfg: Config  # the round's config (run.dir = RUN/round_r, options.round = r)
    stop: int  # the iteration the round ends at (< cfg.train.max_iters with a mid-schedule snapshot)


def _is_config_key(d: dict[str, Any], key: str) -> bool:
    """``key`` (dotted) names a value inside an existing section of the config dict ``d``."""
    node: Any = d
    for part in key.split(".")[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    return isinstance(node, dict)


def plan_round(cfg: Config, r: int, n_train: int) -> RoundPlan:
    """The config and the stop iteration of round ``r`` (sccam.md#rounds, sccam.md#training; the quirk
    switches above)."""
    opts: SCCAMOptions = from_dict(SCCAMOptions, cfg.options, "options")
    d = cfg.to_dict()
    d["run"]["dir"] = str(Path(cfg.run.dir) / f"round_{r}")
    d["options"] = {**cfg.options, "round": r}
    if r == 0:
        for key, value in opts.round0_overrides.items():
            if not _is_config_key(d, key):
                raise ConfigError(f"options.round0_overrides: {key!r} is not a config key")
            set_dotted(d, key.split("."), value)
    rcfg: Config = resolve_epochs(from_dict(Config, d), n_train)  # train.epochs: the length when sched is None
    rcfg.train.epochs = None  # the round's length is rcfg.train.max_iters from here on
    if opts.quirk_psa_momentum:
        rcfg.train.momentum = rcfg.train.weight_decay
    per_epoch = iterations_per_epoch(n_train, rcfg.train.batch_size)
    if r == 0:
        sched = snap = opts.round0_epochs
    else:
        sched = opts.schedule_epochs
        snap = opts.snapshot_epochs[r - 1] if opts.snapshot_epochs else sched
        if not opts.quirk_mid_schedule_snapshot:
            sched = snap
    if sched is None:
        stop = rcfg.train.max_iters
    else:
        rcfg.train.max_iters = max(1, round(sched * per_epoch))
        stop = max(1, round(snap * per_epoch))
    return RoundPlan(r, rcfg, min(stop, rcfg.train.max_iters))


def check_options(o: SCCAMOptions) -> None:
    if o.round is not None and not 0 <= o.round <= o.rounds:
        raise UsageError(f"options.round must be in [0, {o.rounds}], got {o.round}")
    if o.snapshot_epochs and len(o.snapshot_epochs) != o.rounds:
        raise UsageError(f"options.snapshot_epochs needs one entry per round ({o.rounds}), got {o.snapshot_epochs}")
    if o.snapshot_epochs and o.schedule_epochs is None:
        raise UsageError("options.snapshot_epochs needs options.schedule_epochs (set [] to train the whole schedule)")


# --------------------------------------------------------------------------------------------


@register_method
class SCCAM(Method):
    name = "sccam"
    Options = SCCAMOptions
    # forward_cam's relu(conv2d(conv6, fc8_20.weight)), before infer_cls's upsampling (sccam.md#heads,
    # sccam.md#cam-inference); the classifier is the GAP of the final map, then the bias-free 1x1 heads
    # (sccam.md#heads): ``model.pooling`` is not read
    cams = CamDeclaration(relu="per_pass", pooling="gap")

    @classmethod
    def tiny_overrides(cls) -> tuple[str, dict[str, object]]:
        """Two steps in seconds on the CPU (the contract test; ``{root}``: the synthetic dataset)."""
        return "configs/sccam/synthetic_cpu.yaml", {
            "model.backbone_kwargs": "{patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}",
            "options.rounds": 0,
            "options.snapshot_epochs": "[]",
        }

    @staticmethod
    def train_driver(cfg: Config, engine: EngineAPI, progress: bool = True) -> dict[str, Any]:
        """Every round (sccam.md#rounds): ``train_rounds``."""
        return train_rounds(cfg, engine, progress)

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        num_classes = self.num_classes
        o: SCCAMOptions = self.options
        check_options(o)
        self.round = o.rounds if o.round is None else o.round
        self.k = o.num_subcategories
        self.backbone = backbone_from_config(cfg.model)
        self.dropout = nn.Dropout2d(o.dropout)
        num_fg = num_classes - 1
        dim = self.backbone.out_dim
        self.classifier = _xavier(CAMClassifier(dim, num_fg, "gap"))  # fc8 / fc8_20 (sccam.md#heads)
        self.sub_classifier = _xavier(CAMClassifier(dim, num_fg * self.k, "gap")) if self.round >= 1 else None
        self._sub_lookup: dict[str, np.ndarray] | None = None

    # -- training -------------------------------------------------------------------------------
    def on_train_start(self, ctx: TrainContext) -> None:
        if self.sub_classifier is None:
            return
        path = labels_file(ctx.run_dir)
        if path is None:
            path = Path(ctx.run_dir) / LABELS_FILE
            raise DataError(f"{path}: round {self.round} needs its sub-category labels (written by the round driver)")
        labels = SubcategoryLabels.load(path)
        if labels.k != self.k or labels.assign.shape[1] != self.num_classes - 1:
            raise DataError(
                f"{path}: labels for K={labels.k}, {labels.assign.shape[1]} classes; the model has "
                f"K={self.k}, {self.num_classes - 1}"
            )
        missing = set(ctx.train_set.ids) - set(labels.ids)
        if missing:
            raise DataError(f"{path}: no sub-category label for {len(missing)} training ids (e.g. {min(missing)})")
        self._sub_lookup = labels.as_lookup()

    def sub_targets(self, ids: list[str], device: torch.device) -> torch.Tensor:
        if self._sub_lookup is None:
            raise RuntimeError("sub-category labels are not loaded (on_train_start)")
        return torch.from_numpy(np.stack([self._sub_lookup[i] for i in ids])).to(device)

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(parent logits (B, C-1), sub-category logits (B, (C-1)*K) or None): Dropout2d, GAP, heads
        (sccam.md#heads)."""
        return self.head_logits(self.backbone(images).final)

    def head_logits(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The heads on a given final feature map (B, D, h, w): Dropout2d, GAP, the bias-free 1x1 heads
        (the official ``Net.forward`` after the trunk; golden ``sccam_heads_loss.npz``)."""
        f = self.dropout(features)
        sub = self.sub_classifier(f) if self.sub_classifier is not None else None
        return self.classifier(f), sub

    def head_cams(self, features: torch.Tensor, *, relu: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(parent CAMs (B, C-1, h, w), sub-category CAMs (B, (C-1)*K, h, w) or None) of a final feature map:
        ``relu(conv(f, fc8_20.weight))`` and the same with ``fc8_200`` (``forward_two_cam``), no merging.
        ``relu=False``: the maps before that ReLU (``cam_maps``: the shared CAM step applies it per pass)."""
        act = F.relu if relu else (lambda t: t)
        cam = act(self.classifier.cam(features))
        sub = act(self.sub_classifier.cam(features)) if self.sub_classifier is not None else None
        return cam, sub

    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        x_parent, x_sub = self.logits(batch["image"])
        terms = {"cls": F.multilabel_soft_margin_loss(x_parent, batch["labels"])}  # sccam.md#training
        if x_sub is not None:
            terms["sub"] = F.multilabel_soft_margin_loss(x_sub, self.sub_targets(batch["id"], x_sub.device))
        return terms

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """PSA's four groups (sccam.md#training): backbone weights, backbone biases, head weights, head biases."""
        return psa_param_groups(self.backbone, [h for h in (self.classifier, self.sub_classifier) if h is not None])

    def param_group_options(self) -> dict[str, dict[str, float]]:
        return psa_group_options(self.cfg.train.head_lr_mult)

    # -- features, CAMs -------------------------------------------------------------------------
    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D): the GAP of the final map (after the dropout, a no-op in eval mode;
        sccam.md#subcategory-labels)."""
        return self.dropout(self.backbone(images).final).mean(dim=(2, 3))

    def cam_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # sccam.md#heads: relu(conv2d(conv6, fc8_20.weight)); the shared CAM step applies that ReLU to each pass,
        # where forward_cam does (cams.relu), and can fill an empty map from below it
        cam, sub = self.head_cams(self.backbone(images).final, relu=False)
        if sub is None:
            return cam, cam
        b, _, h, w = sub.shape
        return cam, sub.view(b, -1, self.k, h, w).amax(dim=2)

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            "SC-CAM has no segmentation head: use `wsss cam` / `wsss pseudo` (docs/methods/sccam.md#cam-inference)"
        )

    @property
    def has_seg_head(self) -> bool:
        return False

    def crf_cam(self, cam: np.ndarray) -> np.ndarray:
        """``quirk_binarised_crf_cam``: PSA's CRF reads the {0, 255} heatmap at ``cam.bkg_thre``
        (sccam.md#cam-inference)."""
        return binarise_cam(cam, self.cfg.cam.bkg_thre) if self.options.quirk_binarised_crf_cam else cam

    def load_round0_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """A trained round-0 classifier: PSA's ``res38_cls.pth`` (trunk keys + ``fc8.weight``, mapped by
        ``models/official_keys.py`` as ``wsss import sccam`` maps it) or the ``model`` state of this
        toolkit's round-0 checkpoint."""
        if any(k.startswith("classifier.") for k in state):
            self.load_state_dict(state)
            return
        try:
            mapped, _ = sccam_state_from_official(state)
        except OfficialKeyError as e:
            raise DataError(f"{source}: not a PSA ResNet-38 classifier nor a round-0 checkpoint ({e})") from e
        own = self.state_dict()  # BatchNorm counters: absent from PSA's files
        mapped |= {k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in mapped}
        check_state_dict(mapped, own, f"{source}: does not fit this round-0 model (PSA's fc8 = classifier.conv)")
        self.load_state_dict(mapped, strict=True)


# -- the round driver (sccam.md#rounds): composes trainers through the engine's public builders ----


def _last_val(run_dir: Path, step: int) -> dict[str, Any] | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    vals = [r for r in map(json.loads, filter(None, path.read_text().splitlines())) if "val" in r]
    vals = [r for r in vals if r["step"] == step]
    return vals[-1]["val"] if vals else None


def load_round_model(cfg: Config, engine: EngineAPI, r: int, device: str | None = None) -> Method:
    """The trained model of round ``r`` of the run ``cfg.run.dir`` (its last checkpoint;
    sccam.md#rounds), in eval mode."""
    opts: SCCAMOptions = from_dict(SCCAMOptions, cfg.options, "options")
    if r == 0 and opts.round0_checkpoint:
        class_names = VOCDataset(cfg.data.root, cfg.data.train_split).class_names
        rcfg = plan_round(cfg, 0, 1).cfg
        rcfg.model.pretrained = None  # every weight comes from the round-0 file
        method = build_method(rcfg, class_names)
        path = Path(opts.round0_checkpoint)
        # PSA's res38_cls.pth or this toolkit's round-0 checkpoint (its "model" entry), weights_only
        method.load_round0_state(read_state_dict(path), str(path))
        return method.to(resolve_device(device or cfg.run.device)).eval()
    return engine.load_trained_method(Path(cfg.run.dir) / f"round_{r}", checkpoint="last", device=device).method


def _write_subcategory_labels(
    cfg: Config, engine: EngineAPI, r: int, train_set: VOCDataset, rdir: Path, progress: bool
) -> None:
    """Round ``r``'s sub-category labels (docs/methods/sccam.md#subcategory-labels): k-means of round
    ``r - 1``'s image features."""
    opts: SCCAMOptions = from_dict(SCCAMOptions, cfg.options, "options")
    prev = load_round_model(cfg, engine, r - 1)
    ids, feats, parents = extract_features(
        prev.image_features, train_set, next(prev.parameters()).device, progress=progress, max_side=cfg.infer.max_side
    )
    del prev
    labels = build_subcategory_labels(
        ids, feats, parents, opts.num_subcategories, cfg.run.seed, n_init=opts.kmeans_n_init, progress=progress
    )
    labels.save(rdir / LABELS_FILE)


def _train_round(cfg: Config, engine: EngineAPI, r: int, plan: RoundPlan, progress: bool) -> dict[str, Any]:
    """Train round ``r`` to its stop (``plan_round``), then its record: step, schedule, best, val and the CAM
    scores on ``options.round_eval_split``."""
    opts: SCCAMOptions = from_dict(SCCAMOptions, cfg.options, "options")
    trainer = engine.build_trainer(plan.cfg, progress=progress)
    res = trainer.train(until=plan.stop)
    t = plan.cfg.train
    if plan.stop % t.ckpt_iters and plan.stop != t.max_iters:
        trainer.save_checkpoint("last.pt")  # a mid-schedule snapshot is not on the trainer's checkpoint grid
    record: dict[str, Any] = {"round": r, "step": trainer.step, "schedule_iters": t.max_iters, "best": res.get("best")}
    if trainer.val_set is not None:
        record["val"] = _last_val(Path(plan.cfg.run.dir), trainer.step) or trainer.validate()
    if opts.round_eval_split:
        ecfg = from_dict(Config, plan.cfg.to_dict())
        ecfg.data.val_max_images = opts.round_eval_images
        ds = VOCDataset(cfg.data.root, opts.round_eval_split)
        device = resolve_device(cfg.run.device)
        record[f"cam_{opts.round_eval_split}"] = engine.validate(trainer.method, ds, ecfg, device, progress=progress)
    return record


def train_rounds(cfg: Config, engine: EngineAPI, progress: bool = True) -> dict[str, Any]:
    """Every round of docs/methods/sccam.md#rounds in ``cfg.run.dir`` (``wsss.methods.sccam``'s docstring); resumable
    throughout."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError("SC-CAM's round driver runs in one process (the official code is single-GPU)")
    opts: SCCAMOptions = from_dict(SCCAMOptions, cfg.options, "options")
    check_options(opts)
    if opts.round is not None:
        raise UsageError("options.round is set by the round driver; leave it out of the config")
    root = Path(cfg.run.dir)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "config.yaml")
    rounds_path = root / "rounds.json"
    records: dict[str, Any] = json.loads(rounds_path.read_text()) if rounds_path.is_file() else {}
    train_set = VOCDataset(cfg.data.root, cfg.data.train_split)
    out: dict[str, Any] = {"step": 0, "best": None}
    for r in range(opts.rounds + 1):
        plan = plan_round(cfg, r, len(train_set))
        rdir = Path(plan.cfg.run.dir)
        if str(r) in records:
            out = {"step": records[str(r)]["step"], "best": records[str(r)].get("best")}
            continue
        if r == 0 and opts.round0_checkpoint:
            records["0"] = {"round": 0, "step": 0, "checkpoint": opts.round0_checkpoint}
            continue
        t0 = time.time()
        if r >= 1 and labels_file(rdir) is None:
            _write_subcategory_labels(cfg, engine, r, train_set, rdir, progress)
        record = _train_round(cfg, engine, r, plan, progress)
        record["seconds"] = round(time.time() - t0, 1)
        records[str(r)] = record
        with atomic_write(rounds_path, "w") as f:
            json.dump(records, f, indent=2)
        out = {"step": record["step"], "best": record["best"]}
    last = root / f"round_{opts.rounds}" / "checkpoints" / "last.pt"
    if last.is_file():
        link_or_copy(last, root / "checkpoints" / "last.pt")
    return {**out, "rounds": records}


# `wsss import sccam`: a round's classifier, or PSA's round-0 res38_cls.pth; BatchNorm counters are absent from
# converted / older files
register_import(
    ImportLayout(
        "sccam",
        "sccam",
        key_mapped(
            sccam_state_from_official, "classifier.conv.weight", (r".*\.num_batches_tracked",), official="SC-CAM"
        ),
        summary="sccam: SC-CAM's official classifier (a round's, or PSA's res38_cls.pth with options.round=0)",
    )
)
