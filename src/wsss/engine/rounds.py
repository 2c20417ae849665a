"""Drivers of methods whose training is several runs of the loop: SC-CAM's rounds (methods.md 5.1).

A method names its driver in ``Method.train_driver`` (a key of ``DRIVERS``); ``wsss train`` then
calls it instead of one ``Trainer``. A driver composes trainers through the public engine API only
(``build_trainer``, ``Trainer.train``, ``Trainer.save_checkpoint``, ``load_trained_method``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsss.core.config import Config, from_dict, save_config
from wsss.core.device import resolve_device
from wsss.core.errors import UsageError
from wsss.core.registry import Method
from wsss.data import VOCDataset
from wsss.engine.defaults import build_trainer, load_trained_method
from wsss.engine.validate import validate
from wsss.methods import build_method
from wsss.methods.sccam import LABELS_FILE, SCCAMOptions, check_options, labels_file, plan_round
from wsss.methods.subcategory import build_subcategory_labels, extract_features
from wsss.models.weights import read_state_dict
from wsss.utils.io import atomic_write


def _link_or_copy(src: Path, dst: Path) -> None:
    """Publish ``src`` at ``dst`` atomically (hard link if possible, else a copy)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _last_val(run_dir: Path, step: int) -> dict[str, Any] | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    vals = [r for r in map(json.loads, filter(None, path.read_text().splitlines())) if "val" in r]
    vals = [r for r in vals if r["step"] == step]
    return vals[-1]["val"] if vals else None


def load_round_model(cfg: Config, r: int, device: str | None = None) -> Method:
    """The trained model of round ``r`` of the run ``cfg.run.dir`` (its last checkpoint; 5.1), in eval mode."""
    opts: SCCAMOptions = from_dict(SCCAMOptions, cfg.options, "options")
    if r == 0 and opts.round0_checkpoint:
        n_classes = VOCDataset(cfg.data.root, cfg.data.train_split).num_classes
        rcfg = plan_round(cfg, 0, 1).cfg
        rcfg.model.pretrained = None  # every weight comes from the round-0 file
        method = build_method(rcfg, n_classes)
        path = Path(opts.round0_checkpoint)
        # PSA's res38_cls.pth or this toolkit's round-0 checkpoint (its "model" entry), weights_only
        method.load_round0_state(read_state_dict(path), str(path))
        return method.to(resolve_device(device or cfg.run.device)).eval()
    return load_trained_method(Path(cfg.run.dir) / f"round_{r}", checkpoint="last", device=device).method


def train_sccam(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Every round of methods.md 5.1 in ``cfg.run.dir`` (``wsss.methods.sccam``'s docstring); resumable
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
            prev = load_round_model(cfg, r - 1)
            ids, feats, parents = extract_features(prev.image_features, train_set, next(prev.parameters()).device,
                                                   progress=progress)  # fmt: skip
            del prev
            labels = build_subcategory_labels(ids, feats, parents, opts.num_subcategories, cfg.run.seed,
                                              n_init=opts.kmeans_n_init, progress=progress)  # fmt: skip
            labels.save(rdir / LABELS_FILE)
        trainer = build_trainer(plan.cfg, progress=progress)
        res = trainer.train(until=plan.stop)
        t = plan.cfg.train
        if plan.stop % t.ckpt_iters and plan.stop != t.max_iters:
            trainer.save_checkpoint("last.pt")  # a mid-schedule snapshot is not on the trainer's checkpoint grid
        record: dict[str, Any] = {
            "round": r, "step": trainer.step, "schedule_iters": t.max_iters, "best": res.get("best"),
        }  # fmt: skip
        if trainer.val_set is not None:
            record["val"] = _last_val(rdir, trainer.step) or trainer.validate()
        if opts.round_eval_split:
            ecfg = from_dict(Config, plan.cfg.to_dict())
            ecfg.data.val_max_images = opts.round_eval_images
            ds = VOCDataset(cfg.data.root, opts.round_eval_split)
            record[f"cam_{opts.round_eval_split}"] = validate(trainer.method, ds, ecfg, resolve_device(cfg.run.device),
                                                              progress=progress)  # fmt: skip
        record["seconds"] = round(time.time() - t0, 1)
        records[str(r)] = record
        with atomic_write(rounds_path, "w") as f:
            json.dump(records, f, indent=2)
        out = {"step": trainer.step, "best": record["best"]}
        del trainer
    last = root / f"round_{opts.rounds}" / "checkpoints" / "last.pt"
    if last.is_file():
        _link_or_copy(last, root / "checkpoints" / "last.pt")
    return {**out, "rounds": records}


DRIVERS: dict[str, Callable[[Config, bool], dict[str, Any]]] = {"sccam_rounds": train_sccam}
