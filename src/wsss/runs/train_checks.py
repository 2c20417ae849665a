"""check-data of what a training reads, before it starts: ``wsss train`` (unless ``--skip-check``) and each training
of ``wsss route`` (``wsss.pipelines.route_calls.train_run``) run :func:`check_training_data`, so a broken pseudo
label or a bad true mask is named up front with the check-data report, not met by the trainer mid-way
(docs/datasets.md#checking-a-dataset)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from wsss.core.errors import DataError

# What `wsss train` advises: its flag. The route's trainings word their own (wsss.pipelines.route_calls.train_run).
SKIP_ADVICE = "fix it or pass --skip-check"

Check = tuple[str, Callable[..., Any]]  # what is checked (said in the error), the check (``progress=``: a report)


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def training_checks(cfg: Any) -> tuple[str, list[Check]]:
    """What a training of ``cfg`` reads, as checks: the train split and the val split (where the dataset has one;
    every val photo needs its mask), the user's folder of true masks (a folder ``data.true_masks`` names) on the
    photos it covers, the pseudo labels (``data.pseudo_dir``) of the other train photos; and the engine's sentence on
    what the masks teach (``training_targets``; empty where no mask trains)."""
    from wsss.data import check_dataset, check_pseudo_labels
    from wsss.data.voc import available_splits
    from wsss.engine.trainer import training_targets  # data.true_masks is the engine's to resolve: here it is said
    from wsss.methods import method_class

    have = available_splits(cfg.data.root)
    val = [cfg.data.val_split] if cfg.data.val_split in have else []  # no val split: trained without (a note)
    full = {s: s in val and s != cfg.data.train_split for s in [cfg.data.train_split, *val]}  # val: every mask
    checks: list[Check] = [
        (f"split {s}", partial(check_dataset, cfg.data.root, s, full_masks=full[s])) for s in full if s
    ]
    d, train_split = cfg.data.pseudo_dir, cfg.data.train_split
    targets = training_targets(cfg, method_class(cfg))
    masks, folder = targets.masks, targets.source.folder
    if folder is not None:  # a folder of the user's: its files checked
        checks.append(
            (
                f"true masks {folder} of split {train_split}",
                partial(check_pseudo_labels, cfg.data.root, train_split, folder, only=set(masks), what="true mask"),
            )
        )
    if d:
        checks.append(
            (
                f"pseudo labels {d} of split {train_split}",
                partial(check_pseudo_labels, cfg.data.root, train_split, d, skip=set(masks)),
            )
        )
    return targets.text, checks


def run_checks(
    root: str | Path,
    checks: Sequence[Check],
    *,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    advice: str = SKIP_ADVICE,
) -> None:
    """Each check in turn: a failed one's report said (``say``, default stderr) and a one-line DataError
    ``ROOT failed check-data (WHAT); ADVICE``; a passed one's warnings said."""
    say = say or _to_stderr
    for what, check in checks:
        report = check(progress=progress)
        if not report.ok:
            say(report.format())
            raise DataError(f"{root} failed check-data ({what}); {advice}")
        if report.warnings:
            say(
                "\n".join(
                    [f"check-data {root} ({what}): {len(report.warnings)} warning(s)"]
                    + [f"  - {w}" for w in report.warnings]
                )
            )


def check_training_data(
    cfg: Any, *, progress: bool = True, say: Callable[[str], None] | None = None, advice: str = SKIP_ADVICE
) -> None:
    """check-data on what the training of ``cfg`` reads (:func:`training_checks`), before it starts: the engine's
    sentence on its targets said, then :func:`run_checks` (a DataError naming ``data.root`` and what failed)."""
    text, checks = training_checks(cfg)
    if text:
        (say or _to_stderr)(text)
    run_checks(cfg.data.root, checks, progress=progress, say=say, advice=advice)
