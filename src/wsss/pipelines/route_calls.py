"""The route's steps as library calls (:mod:`wsss.pipelines.route`): each the library call of the ``wsss`` command
named, in this process, as that command runs it (:func:`run_config`, :func:`train_run`, :func:`stage_config`,
:func:`cams`, :func:`pseudo_labels`, :func:`predict_split`, :func:`score`: one implementation of each step,
docs/api.md#the-routes-steps), the typed commands of the per-photo steps and the DeepLab stage's words."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wsss.core.config import Config, load_config, replace_setting, resolve_epochs
from wsss.core.files import atomic_write
from wsss.pipelines.route_values import GPU_LOADERS
from wsss.pipelines.steps import Command, Setting

MASKED_SPLIT = "train_masked"  # the split of a view that lists the masked train photos
# the DeepLab stage's masks: each train photo that has one trains on it (the route's one use of data.true_masks)
TRUE_MASKS = Setting("data.true_masks", "auto")


def mixed_stage_settings(pseudo_dir: str | os.PathLike) -> list[Setting]:
    """The DeepLab stage on the weak labels with the masks in their place: each train photo that has a mask trains
    on it, every other photo on its pseudo label (docs/own-photos.md#how-many-masks)."""
    return [Setting("data.pseudo_dir", pseudo_dir), TRUE_MASKS]


def mixed_stage_words(pseudo_dir: str | os.PathLike) -> list[str]:
    """:func:`mixed_stage_settings` as ``KEY=VALUE`` words."""
    return [s.word for s in mixed_stage_settings(pseudo_dir)]


def masks_alone_words(iterations: int) -> list[str]:
    """The DeepLab stage on the masked photos alone (the split :data:`MASKED_SPLIT` of a view,
    ``wsss.data.views.make_view``) for ``iterations``, the mixed stage's on every train photo: the arm the masks
    measurements compared at equal length (docs/benchmarks/history/real-photos.md#manual-how-many-masks)."""
    settings = (
        Setting("data.train_split", MASKED_SPLIT),
        TRUE_MASKS,
        Setting("train.epochs", None),
        Setting("train.max_iters", iterations),
    )
    return [s.word for s in settings]


def stage_command(preset: str, root: Path, pseudo_dir: Path, words: Sequence[str], run_dir: Path) -> Command:
    """``wsss train PRESET``: the DeepLab stage on the pseudo labels of ``pseudo_dir`` with the masks in their place."""
    settings: tuple[Setting | str, ...] = (
        Setting("data.root", root),
        *mixed_stage_settings(pseudo_dir),
        *words,
        Setting("run.dir", run_dir),
    )
    return Command(("train",), (preset,), words=settings)


def fitted_batch(batch: int, micro: int | None, photos: int, processes: int) -> int | None:
    """The largest batch of at most ``photos`` that splits into ``processes`` x micro-batches of ``micro`` (None:
    a process's whole share), for a preset's ``batch`` larger than the train photos (the trainer refuses a split
    smaller than its batch); None where ``batch`` fits, or no smaller one does."""
    if batch <= photos:
        return None
    step = processes * (micro or 1)
    fitted = photos - photos % step
    return fitted or None


def cam_command(run_dir: Path, split: str = "train") -> Command:
    return Command(("cam",), (run_dir,), (("--split", split),))


def pseudo_command(run_dir: Path, refine: str, levels: tuple[float, float] | None, split: str = "train") -> Command:
    """``wsss pseudo``; ``levels`` None: the run's own (CLIP-ES's CRF labels)."""
    return Command(("pseudo",), (run_dir,), (("--split", split), ("--refine", refine), ("--levels", levels)))


def predict_command(
    run_dir: Path, split: str, root: Path | None = None, crf: bool = True, labelled_only: bool = False
) -> Command:
    options = (("--split", split), ("--data-root", root), ("--labelled-only", labelled_only), ("--crf", crf))
    return Command(("predict",), (run_dir,), options)


# The library call of each per-photo command (Route._job), its arguments those of the command
def _call_cam(command: Command, **where: Any) -> Path:
    return cams(command.args[0], command.option("--split"), **where)


def _call_pseudo(command: Command, **where: Any) -> Path:
    return pseudo_labels(
        command.args[0],
        command.option("--split"),
        command.option("--levels"),
        refine=command.option("--refine"),
        **where,
    )


def _call_predict(command: Command, **where: Any) -> Path:
    return predict_split(
        command.args[0],
        command.option("--split"),
        root=command.option("--data-root"),
        crf=bool(command.option("--crf")),
        labelled_only=bool(command.option("--labelled-only")),
        **where,
    )


JOB_CALLS: dict[str, Callable[..., Path]] = {"cam": _call_cam, "pseudo": _call_pseudo, "predict": _call_predict}


def stage_iterations(preset: str, root: str | os.PathLike, words: Sequence[str] = ()) -> int:
    """The iterations of the stage ``preset`` with ``words`` on every train photo of ``root`` (its ``train.epochs``
    resolved)."""
    from wsss.data.voc import read_split

    cfg = load_config(preset, [Setting("data.root", root).word, *words])
    return resolve_epochs(cfg, len(read_split(root, cfg.data.train_split))).train.max_iters


# -- the route's steps, as library calls ----------------------------------------------------------------------------
# Each is the library call of the ``wsss`` command named, in this process, as that command runs it. :class:`Route`
# runs them, and experiments/real_route.py builds its research (folds of every photo, arms, seeds, extra scoring) on
# the same calls: one implementation of each step, so the product's route and the experiments' cannot drift apart.


def run_config(preset: str, words: Sequence[str], run_dir: str | os.PathLike, *, device: str | None = None) -> Config:
    """The config of a training (``wsss train PRESET WORDS run.dir=RUN_DIR``), checked before any step runs (a wrong
    override word is refused at once). ``device``: ``run.device`` of the training (None: the preset's); on a GPU the
    photos are decoded by :data:`GPU_LOADERS` loader processes, as fast as it trains (the presets' 0 is the CPU's:
    there the cores train), unless a ``data.num_workers`` word says otherwise."""
    from wsss.methods import check_method

    extra = [Setting("run.device", device).word] if device else []
    loaders = [Setting("data.num_workers", GPU_LOADERS).word] if device and str(device).startswith("cuda") else []
    cfg = load_config(preset, [*loaders, *words, *extra, Setting("run.dir", run_dir).word])
    check_method(cfg, f"{preset} with the route's overrides")
    return cfg


# A route's data that fails check-data: what its user can do (the route has no --skip-check of its own)
ROUTE_CHECK_ADVICE = "fix it and run again, or run the steps by hand (`wsss train --skip-check` trains without it)"
# A run of the route whose saved config is not what the route's record makes of it (edited, or of another wsss's
# presets): the options the route has
ROUTE_CHANGE_ADVICE = "Rerun the route as it was recorded, or use another --out"


def train_run(cfg: Config, *, progress: bool = True, check: bool = True, own: bool = False) -> dict[str, Any]:
    """``wsss train``: train the run of ``cfg`` (:func:`run_config`), or resume it from its ``last.pt``; the
    trainer's answer (its final step, its best val mIoU where it validates). First, as ``wsss train`` does, check-data
    on what it reads (``check``; ``wsss.runs.train_checks.check_training_data``: its splits, pseudo labels and true
    masks): a failed check says its report on stderr and is a DataError naming ``data.root`` and what failed, before
    any step trains. ``own``: ``run.dir`` is the pipeline's own folder, trained into though a file of the user's is
    there (what its ``--overwrite`` kept: ``wsss train --overwrite``)."""
    from wsss.engine.launch import train
    from wsss.runs.train_checks import check_training_data

    if check:
        check_training_data(cfg, progress=progress, advice=ROUTE_CHECK_ADVICE)
    return train(cfg, progress=progress, overwrite=own, change_advice=ROUTE_CHANGE_ADVICE if own else None)


def stage_words(
    words: Sequence[str], stage: str, *, view: str | os.PathLike | None = None, iterations: int | None = None
) -> list[str]:
    """The words of the DeepLab stage ``stage`` after ``words`` (the stage's own: its ``data.root``, its pseudo labels,
    the overrides): ``mixed`` as they are, on the data root ``view`` where one is given (the weak labels with the masks
    in their place: :func:`mixed_stage_words`); ``masks`` the masked photos alone (the split :data:`MASKED_SPLIT` of
    ``view``) for ``iterations`` (:func:`masks_alone_words`)."""
    if stage == "mixed":
        return [*words, *([Setting("data.root", view).word] if view is not None else [])]
    if stage != "masks" or view is None or iterations is None:
        raise ValueError(f"stage {stage!r}: mixed, or masks with a view and its iterations")
    return [*words, Setting("data.root", view).word, *masks_alone_words(iterations)]


def stage_config(
    preset: str,
    words: Sequence[str],
    run_dir: str | os.PathLike,
    stage: str,
    *,
    view: str | os.PathLike | None = None,
    iterations: int | None = None,
    device: str | None = None,
) -> Config:
    """The DeepLab stage's config (:func:`stage_words`, :func:`run_config`): ``mixed`` the weak labels with the masks
    in their place; ``masks`` the masked photos alone, for ``iterations`` (as many as the mixed stage has on the whole
    train split, as BENCHMARKS measured them)."""
    return run_config(preset, stage_words(words, stage, view=view, iterations=iterations), run_dir, device=device)


def load_step_run(
    run_dir: str | os.PathLike, *, words: Sequence[str] = (), device: str | None = None, crf_workers: int | None = None
) -> Any:
    """The run ``run_dir`` as every command that reads a run loads it: ``words`` merged over its saved config, with
    where it runs (``device``: ``run.device``; ``crf_workers``: ``infer.crf_workers``, -1 resolved by
    ``cam.crf.crf_workers``; None: the run's own)."""
    import dataclasses

    from wsss.runs.run import load_run

    run = load_run(Path(run_dir), device=device, overrides=words)
    if crf_workers is None:
        return run
    return dataclasses.replace(run, cfg=replace_setting(run.cfg, "infer.crf_workers", crf_workers))


def cams(
    run_dir: str | os.PathLike,
    split: str,
    *,
    words: Sequence[str] = (),
    device: str | None = None,
    crf_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """``wsss cam RUN --split SPLIT WORDS``: the CAMs and the seeds of the split (``words``: e.g.
    ``infer.cam_scales=[...]``, ``--scales``; ``cam.bkg_thre=L``, ``--bkg-thre``); the seeds' folder."""
    from wsss.runs.jobs import run_cam

    run = load_step_run(run_dir, words=words, device=device, crf_workers=crf_workers)
    return run_cam(run, split, progress=progress)


def levels_words(levels: tuple[float, float]) -> list[str]:
    """``--levels HIGH/LOW`` as its words: class above HIGH, background at or below LOW, 255 between (HIGH = LOW: one
    level, no pixel left undecided)."""
    high, low = levels
    return [Setting("cam.high_thre", high).word, Setting("cam.low_thre", low).word]


def pseudo_labels(
    run_dir: str | os.PathLike,
    split: str,
    levels: tuple[float, float] | None,
    *,
    refine: str = "par",
    words: Sequence[str] = (),
    device: str | None = None,
    crf_workers: int | None = None,
    progress: bool = True,
    **options: Any,
) -> Path:
    """``wsss pseudo RUN --split SPLIT --refine REFINE --levels HIGH/LOW``: the pseudo labels of the split from its
    saved CAMs, ``RUN/pseudo/SPLIT`` (returned). ``options``: the refiner's (``affinity_run=RUN`` of ``--refine
    affinity``); ``levels`` None: the run's own (CLIP-ES's CRF labels: ``--refine crf`` without ``--levels``)."""
    from wsss.runs.jobs import run_pseudo

    level = levels_words(levels) if levels is not None else []
    run = load_step_run(run_dir, words=[*level, *words], device=device, crf_workers=crf_workers)
    return run_pseudo(run, split, refine=refine, progress=progress, **options)


def predict_split(
    run_dir: str | os.PathLike,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    crf: bool = False,
    tags_from: str | os.PathLike | None = None,
    tag_gate: str = "hard",
    labelled_only: bool = False,
    ensemble: Sequence[str | os.PathLike] = (),
    device: str | None = None,
    crf_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """``wsss predict RUN --split SPLIT [--data-root ROOT] [--crf] [--tags-from RUN --tag-gate GATE]
    [--labelled-only] [--ensemble RUN ...]``: the masks of the split's photos; their folder (``run_predict``'s, named
    by ``predictions_folder``). The runs of ``tags_from`` and ``ensemble`` are loaded on ``run_dir``'s device."""
    from wsss.runs.jobs import run_predict
    from wsss.runs.run import load_run

    run = load_step_run(run_dir, device=device, crf_workers=crf_workers)
    if ensemble:
        run = run.with_ensemble([load_run(Path(d), device=str(run.device)) for d in ensemble])
    tagger = load_run(Path(tags_from), device=str(run.device)) if tags_from is not None else None
    return run_predict(
        run,
        split,
        root=None if root is None else str(root),
        crf=crf,
        labelled_only=labelled_only,
        tags_from=tagger,
        tag_gate=tag_gate,
        progress=progress,
    )


def score(pred: str | os.PathLike, root: str | os.PathLike, split: str, *, pseudo: bool = False) -> Any:
    """``wsss eval PRED --data-root ROOT --split SPLIT [--pseudo]`` on the split's photos that have a mask: its
    result (``.miou``: a fraction; ``.to_json()``: what ``--json`` writes)."""
    from wsss.evaluation import evaluate

    return evaluate(pred, root, split, pseudo=pseudo)


def gather_masks(pred: Path, folder: Path) -> int:
    """The masks of ``pred`` (a split's ``predictions_crf``) in ``folder`` too, each a hard link (a copy where the
    file system has none) put in place atomically; how many there are. Their ids are recorded in the folder's
    ``.sources.json`` (``runs.stamps.SOURCES_FILE``): what ``--overwrite`` removes there as the route's
    (``pipelines.steps.remove_made``), a file of the user's left."""
    from wsss.core.files import link_or_copy
    from wsss.runs.stamps import SOURCES_FILE, photo_record, read_sources

    folder.mkdir(parents=True, exist_ok=True)
    masks = sorted(p for p in pred.glob("*.png") if not p.name.startswith("."))
    records = {**(read_sources(folder) or {}), **{m.stem: photo_record(m) for m in masks}}
    with atomic_write(folder / SOURCES_FILE, "w") as f:  # before the masks: a killed step's are named too
        json.dump(records, f, sort_keys=True)
    for mask in masks:
        dst = folder / mask.name
        if dst.exists() and os.path.samefile(mask, dst):
            continue
        link_or_copy(mask, dst)
    return len(masks)


def photo_scores(pred: Path, root: Path, split: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each photo of ``ids`` scored on its own against its mask in the dataset ``root``: its split, mIoU (over the
    classes of its mask) and pixel accuracy, in %, by the evaluator of ``wsss eval``."""
    import math

    from wsss.data import VOCDataset
    from wsss.evaluation import evaluate_arrays
    from wsss.utils.io import read_label_png

    ds = VOCDataset(root, split)
    out: dict[str, dict[str, Any]] = {}
    for i in ids:
        r = evaluate_arrays([ds.load_mask(i)], [read_label_png(pred / f"{i}.png")], class_names=ds.class_names)
        miou, acc = (100 * float(v) for v in (r.miou, r.scores["pAcc"]))
        out[i] = {
            "split": split,
            "miou": round(miou, 2) if math.isfinite(miou) else None,
            "pixel_acc": round(acc, 2) if math.isfinite(acc) else None,
        }
    return out


def miou(pred: Path, root: Path | str, split: str) -> float:
    """The mIoU (a fraction) of the masks in ``pred`` on the split's photos that have a mask (:func:`score`)."""
    return score(pred, root, split).miou
