"""Inference over a trained run: CAMs, pseudo labels, segmentation masks.

Every command streams over the ids of a split, writes each output atomically, and skips ids whose
output already exists, so a killed job continues where it stopped. Nothing per-image is written in
float unless asked (``cams/`` holds float16 CAMs of the labelled classes only).

Every job runs over several processes as it runs in one (``runs/shard.py``: torchrun's ranks or
``--workers N``, each with its share of the ids), and through one pipeline (:func:`_pipeline`): images
decoded and resized by loader workers (``data.num_workers``, a ``DataLoader``) while the network runs,
CPU-bound label computations (dense CRFs, RCA's proxy labels) in the worker pool of
``infer.crf_workers`` (``CRFPool``), outputs encoded and written by a writer thread.

Layout (docs/run-directory.md#contents): ``cams/<split>/<id>.npz`` (arrays ``keys`` = 1-based class ids, ``cam`` =
(K, H, W) float16 in [0, 1]; utils/io.py; in memory the 0-based foreground ``classes`` and their maps),
``cam_labels/<split>/<id>.png`` (the CAM seed: argmax with ``bkg_thre``), ``pseudo/<split>/<id>.png`` (255 =
ignore), ``predictions/<split>/<id>.png``. The refiners of ``wsss pseudo`` are ``runs/refiners.py``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.cam import CRFPool, cam_to_label, crf_label, labelled_cam_to_label
from wsss.cam.crf import crf_workers
from wsss.core.config import Config, results_config
from wsss.core.distributed import rank
from wsss.core.errors import ConfigError, DataError, ResultWarning, UsageError
from wsss.core.files import remove_stale_temps
from wsss.data import VOCDataset
from wsss.methods import REFINERS, JobStop, PoolCall, refiner_options
from wsss.runs import refiners  # noqa: F401 (registers the generic refiners)
from wsss.runs.per_id import Writes, per_id_pipeline
from wsss.runs.run import Run, allowed_classes, class_weights_of, load_run, present_classes, soft_tag_weights
from wsss.runs.shard import run_ids, shared_todo
from wsss.runs.stamps import (
    check_stamp,
    claim_folder,
    normal,
    photo_record,
    read_stamp,
    refresh_sources,
    with_implied,
)
from wsss.runs.tag import tag_labels
from wsss.utils.io import (
    CAM_SUFFIX,
    as_saved_cam,
    find_cam_file,
    load_cam_of,
    load_labelled_cam,
    missing_cam_ids,
    per_id_path,
    read_label_png,
    save_cam,
    save_label_png,
    save_labelled_cam,
    save_npy,
)
from wsss.utils.runlock import job_folder_lock


def _todo(
    ds: VOCDataset, out_dir: Path, suffix: str, overwrite: bool, *also: tuple[Path, str], rewrite_all: bool = False
) -> list[str]:
    """The ids of ``ds`` still to write into ``out_dir``; a killed earlier run's temporary files there are removed.
    ``also``: (folder, suffix) of the id's further outputs: an id is done only when each of its outputs is there
    (``predict --save-probs`` over masks of an earlier ``predict`` wrote no probabilities). The outputs of
    an id whose photo is not the one they were made of are removed first (``stamps.refresh_sources``: a photo
    replaced under its name); ``rewrite_all`` (or ``overwrite``): every id."""
    remove_stale_temps(out_dir)
    outputs = [(out_dir, suffix), *also]
    records = _photo_records(ds)
    for folder, x in outputs:
        refresh_sources(folder, [x], records)
    if overwrite or rewrite_all:
        return list(ds.ids)
    return [i for i in ds.ids if not all(per_id_path(d, i, x).is_file() for d, x in outputs)]


def _photo_records(ds: VOCDataset) -> dict[str, list[int] | None]:
    return {i: photo_record(ds.image_path(i)) for i in ds.ids}


class _Outputs:
    """The output folders of one job and the settings that determine each one's files (``runs/stamps.py``): every
    process checks them (:meth:`check`, before the ids are shared), rank 0 claims them (:meth:`claim`, inside
    ``shared_todo``, before any process writes). ``inputs``: the job's inputs, never cleared by ``--overwrite``."""

    def __init__(self, overwrite: bool, inputs: Sequence[str | Path | None] = ()) -> None:
        self.overwrite, self.inputs = overwrite, list(inputs)
        self.folders: list[tuple[Path, dict[str, Any], bool | Callable[[], bool]]] = []
        self.suffixes: dict[Path, str] = {}

    def add(
        self, folder: Path, settings: dict[str, Any], suffix: str, *, rewrite_all: bool | Callable[[], bool] = False
    ) -> _Outputs:
        """``folder`` with ``settings``, its outputs ``<id><suffix>`` (what ``--overwrite`` removes there);
        ``rewrite_all``: the job writes each of its ids again (restamped), or a function that decides it from the
        folder (called by :meth:`check`: under the folders' lock in :meth:`held`, so that no other job changes the
        folder between the decision and the writes)."""
        self.folders.append((folder, settings, rewrite_all))
        self.suffixes[folder] = suffix
        return self

    def _decide(self) -> None:
        """Each folder's ``rewrite_all`` decided, once."""
        self.folders = [(f, s, r() if callable(r) else r) for f, s, r in self.folders]

    def check(self) -> _Outputs:
        self._decide()
        for folder, settings, rewrite_all in self.folders:
            check_stamp(folder, settings, overwrite=self.overwrite or bool(rewrite_all))
        return self

    def rewrites_all(self, folder: Path) -> bool:
        """Whether the job writes every id of ``folder`` again (after :meth:`check` has decided it)."""
        return next(bool(r) for f, _, r in self.folders if f == folder)

    @contextlib.contextmanager
    def held(self, command: str) -> Iterator[_Outputs]:
        """The folders held for the job's whole block (rank 0, ``utils.runlock.job_folder_lock``: another job on one
        of them is refused, naming it) and checked (:meth:`check`) under that lock, so that no other job stamps a
        folder between this job's check and its writes."""
        with contextlib.ExitStack() as locks:
            if rank() == 0:
                for folder, _, _ in self.folders:
                    locks.enter_context(job_folder_lock(folder, command))
            yield self.check()

    def claim(self) -> None:
        self._decide()
        for folder, settings, rewrite_all in self.folders:
            claim_folder(
                folder,
                settings,
                overwrite=self.overwrite,
                rewrite_all=bool(rewrite_all),
                inputs=self.inputs,
                suffix=self.suffixes[folder],
            )


def _resolved(path: str | Path) -> str:
    return str(Path(path).resolve())


def _model_and_source(run: Run, source: dict[str, Any]) -> dict[str, Any]:
    """What every job's outputs depend on: the model (its checkpoint and step) and where its photos come from."""
    return {"model": run.model_settings(), **source}


def _dataset_source(ds: VOCDataset) -> dict[str, Any]:
    """Where a job's photos come from, in its settings stamp: a dataset's root and its classes (photos that are not a
    dataset: the sources given to ``--images``, ``runs/photos.py``). Each photo's own file is recorded per id
    (``stamps.refresh_sources``)."""
    return {"data_root": _resolved(ds.root), "classes": list(ds.class_names)}


def cam_settings(run: Run, source: dict[str, Any]) -> dict[str, Any]:
    """What a job's CAMs depend on: the model, the photos' ``source`` and the inference settings of the CAMs."""
    infer = results_config(run.cfg)["infer"]
    return {**_model_and_source(run, source), "infer": {k: infer[k] for k in _CAM_KEYS}}


# The infer.* keys that make a CAM (``Run.labelled_cam``); infer.cam_scales is the `wsss cam --scales` of the job
_CAM_KEYS = ("cam_scales", "cam_input_size", "cam_flip_fuse", "cam_normalize", "cam_empty_fallback", "max_side")


def _label_writes(out: Path) -> Callable[[str, np.ndarray], Writes]:
    return lambda id, label: [(save_label_png, (per_id_path(out, id, ".png"), label))]


ONE_CLASS_SAMPLE = 256  # masks read, evenly spread: a model that names one class everywhere does so on any of them
ONE_CLASS_FEWEST = 5  # fewer masks of one class alone can be right (a few photos of one thing)


def spread(items: Sequence[str], most: int) -> list[str]:
    """At most ``most`` of ``items``, evenly spread over them, the first and the last included."""
    if most < 2:  # no "first and last" to take: the first alone, or none
        return list(items[: max(most, 0)])
    if len(items) <= most:
        return list(items)
    return [items[round(k * (len(items) - 1) / (most - 1))] for k in range(most)]


def one_class_everywhere(folder: Path, ids: Sequence[str], sample: int = ONE_CLASS_SAMPLE) -> int | None:
    """The class that each of ``ids``' masks in ``folder`` (``<id>.png``) names at every pixel, the same in all;
    None when two masks or two pixels differ, or when fewer than ``ONE_CLASS_FEWEST`` masks are read. The masks
    read are those of at most ``sample`` ids (:func:`spread`) that have one: a split of any size costs as much."""
    read = [i for i in spread(ids, sample) if per_id_path(folder, i, ".png").is_file()]
    if len(read) < ONE_CLASS_FEWEST:
        return None
    seen: int | None = None
    for i in read:
        mask = read_label_png(per_id_path(folder, i, ".png"))
        first = int(mask.flat[0])
        if (seen is not None and first != seen) or not (mask == first).all():
            return None
        seen = first
    return seen


def warn_if_one_class(folder: Path, ids: Sequence[str], class_names: Sequence[str]) -> None:
    """A ``ResultWarning`` (one ``warning:`` line) when every mask of ``ids`` in ``folder`` that is read is one class
    at every pixel (:func:`one_class_everywhere`): the model has collapsed, which its training loss need not show.
    Rank 0 only (every process's masks are written by then)."""
    if rank() != 0:
        return
    cls = one_class_everywhere(folder, ids)
    if cls is not None:
        name = class_names[cls] if cls < len(class_names) else str(cls)
        read = f"all {len(ids)}" if len(ids) <= ONE_CLASS_SAMPLE else f"{ONE_CLASS_SAMPLE} spread over the {len(ids)}"
        warnings.warn(
            ResultWarning(
                f"{folder}: every mask names {name!r} alone, at every pixel (masks read: {read}): the model has "
                "collapsed to one class (its labels too few or too noisy to learn from); see "
                "docs/own-photos.md#when-masks-are-bad"
            ),
            stacklevel=2,
        )


def crf_processes(cfg: Config, crf: bool = True) -> int:
    """The CRF worker processes of a job of ``cfg``, decided here alone: none without a CRF (``crf`` False), else
    ``infer.crf_workers``, its -1 by the rule of ``cam.crf.crf_workers`` (this process's share of the cores). Every
    job's ``CRFPool`` and the route's account of it read this; ``-1`` goes no further."""
    return crf_workers(cfg.infer.crf_workers) if crf else 0


def _dataset(run: Run, root: str | None, split: str) -> VOCDataset:
    return run.dataset(root, split)


def run_cam(
    run: Run,
    split: str,
    *,
    root: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    all_classes: bool = False,
) -> Path:
    """Write ``cams/<split>/<id>.npz`` and the CAM seeds ``cam_labels/<split>/<id>.png``.

    Only the labelled classes' maps are computed (:meth:`Run.labelled_cam`); ``all_classes`` computes
    every class's map first (the same files, the cost of every class: for benchmarks).

    The seeds' background level is the run's ``cam.bkg_thre`` (``wsss cam RUN cam.bkg_thre=T``, or its shorthand
    ``--bkg-thre T``, sets it for this job; ``wsss sweep-bkg`` finds the best on a split). When the seeds' folder
    holds another level, every seed is rewritten at this job's level, from the saved CAM where there is one (no
    network pass; the saved CAMs are float16) and from a new CAM otherwise. The level means the same wherever it
    comes from (the run's config.yaml, a word, the flag): at the level the folder holds, no seed is rewritten.
    """
    ds = _dataset(run, root, split)
    out, seeds = run.dir / "cams" / split, run.dir / "cam_labels" / split
    thre = run.cfg.cam.bkg_thre
    settings = cam_settings(run, _dataset_source(ds))
    outputs = _Outputs(overwrite, [ds.root]).add(out, settings, CAM_SUFFIX)
    # A seed is a cheap argmax of a saved CAM: a job at another level than the seeds' folder holds (cam.bkg_thre=T,
    # or the run's own level after an earlier cam.bkg_thre=T) rewrites every seed, and the folder takes the new level
    # without --overwrite; the seeds then always name the level of the last `wsss cam`. Decided from the
    # folder's stamp under the job's lock (``_Outputs.held``): another job may have restamped it until then.
    ours = normal({**settings, "bkg_thre": thre})

    def other_level() -> bool:
        stamp = with_implied(read_stamp(seeds), ours)
        return stamp is not None and stamp.get("bkg_thre") != thre and {**stamp, "bkg_thre": thre} == ours

    outputs.add(seeds, {**settings, "bkg_thre": thre}, ".png", rewrite_all=other_level)
    with outputs.held("wsss cam"):
        reseed = outputs.rewrites_all(seeds)

        def list_todo() -> list[str]:
            outputs.claim()  # also removes a killed job's temporary files from both folders
            # the CAMs of a photo replaced under its name go too (a reseed would reuse them)
            refresh_sources(out, [CAM_SUFFIX], _photo_records(ds))
            return _todo(ds, seeds, ".png", overwrite, rewrite_all=reseed)

        todo = shared_todo(list_todo)

        stopped: list[str] = []  # the id at which a method's JobStop ended the job (nothing after it is computed)

        def compute(id: str, image: np.ndarray, labels: np.ndarray, x: torch.Tensor) -> Writes:
            saved = find_cam_file(out, id) if reseed and not overwrite else None
            if all_classes and saved is None:
                return _every_class_writes(run, out, seeds, id, image, labels, thre)
            writes: Writes = []
            if saved is not None:
                classes, cam = load_labelled_cam(saved)
            elif stopped:
                return []  # an earlier image ended this process's share (below)
            else:
                try:
                    classes, cam = run.labelled_cam(image, labels, prepared=x)
                except JobStop as e:  # the method ends the job here (CLIP-ES quirk_unlabelled_stops_worker)
                    stopped.append(id)
                    warnings.warn(f"{id}: {e}; the ids after it in this process's share get no CAM", stacklevel=2)
                    return []
                writes.append((save_labelled_cam, (out, id, classes, cam)))
                cam = as_saved_cam(cam)  # the seed as a later job's from the saved CAM
            writes.append((save_label_png, (per_id_path(seeds, id, ".png"), labelled_seed(classes, cam, thre))))
            return writes

        run_ids(
            todo,
            lambda ids: per_id_pipeline(run, ds, ids, compute, size=run.cfg.infer.cam_input_size),
            desc=f"cam {split}",
            skipped=len(ds.ids) - len(todo),
            progress=progress,
            threads=run.cfg.run.threads,
        )
        return seeds


def _every_class_writes(
    run: Run, out: Path, seeds: Path, id: str, image: np.ndarray, labels: np.ndarray, thre: float
) -> Writes:
    """``wsss cam --all-classes``' writes of one photo: every class's map and its seed."""
    full = run.cam(image, labels, all_classes=True)
    _, seed = cam_to_label(torch.from_numpy(as_saved_cam(full))[None], torch.from_numpy(labels)[None], bkg_thre=thre)
    return [(save_cam, (out, id, full, labels)), (save_label_png, (per_id_path(seeds, id, ".png"), seed[0].numpy()))]


def labelled_seed(classes: np.ndarray, cam: np.ndarray, bkg_thre: float) -> np.ndarray:
    """The CAM seed (docs/methods/seco.md#cam2label) of the labelled classes' maps (``classes`` 0-based foreground
    indices, ascending; ``cam`` (k, H, W)): the label map of the full CAM, whose other channels are zero."""
    seed = labelled_cam_to_label(torch.from_numpy(cam)[None], torch.from_numpy(classes), bkg_thre=bkg_thre)
    return seed[0].numpy()


@dataclass
class PseudoJob:
    """The inputs of one ``wsss pseudo`` job: the run, the split's dataset and its saved CAMs."""

    run: Run
    ds: VOCDataset
    cams: Path  # RUN/cams/<split>

    @property
    def levels(self) -> tuple[float, float] | None:
        """The run's (``cam.high_thre``, ``cam.low_thre``) when this job's command line set one of them (the words
        ``cam.high_thre=H cam.low_thre=L``, or their shorthand ``--levels H/L``): the PSA refiners' alphas then
        follow them instead of their configured ones; None otherwise."""
        c = self.run.cfg.cam
        return (c.high_thre, c.low_thre) if self.run.names("cam.high_thre", "cam.low_thre") else None

    def cam(self, id: str) -> np.ndarray:
        """The saved CAM of ``id``, (C-1, H, W) with zeros for the classes it is not labelled with."""
        return load_cam_of(self.cams, id, self.ds.num_classes - 1)

    def labelled_cam(self, id: str) -> tuple[np.ndarray, np.ndarray]:
        """The saved CAM of ``id`` as it is: (0-based foreground classes (k,) ascending, (k, H, W) float32)."""
        path = find_cam_file(self.cams, id)
        if path is None:
            raise DataError(f"{self.cams}: no CAM of {id}; run `wsss cam` on its split first")
        return load_labelled_cam(path)

    def load_run(self, run_dir: str | Path) -> Run:
        """Another run (an affinity network's), on this run's device."""
        return load_run(run_dir, device=str(self.run.device))

    def require_cams(self, ids: Sequence[str], have: Callable[[str], bool] | None = None, also: str = "") -> None:
        """Every id has a saved CAM, or ``have(id)`` (another source of its maps, named by ``also``)."""
        missing = [i for i in missing_cam_ids(self.cams, ids) if have is None or not have(i)]
        if missing:
            raise DataError(
                f"{self.cams}: no CAM for {len(missing)} ids (e.g. {missing[0]}){also}; "
                f"run `wsss cam {self.run.dir} --split {self.ds.split}`"
            )


def run_pseudo(
    run: Run,
    split: str,
    *,
    refine: str = "par",
    root: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Pseudo labels from the saved CAMs (``wsss cam`` first): ``pseudo/<split>/<id>.png``.

    ``refine`` names a refiner of ``wsss.methods.REFINERS`` that runs of the run's method accept
    (``wsss.methods.refiners_of``; another is refused up front): the generic ones of ``runs/refiners.py`` ("none",
    "par", "crf", "psa") and those a method's package registers ("affinity": PSA's random walk with the affinity
    network of ``affinity_run``, docs/methods/affinitynet.md#random-walk; "rca": RCA's CRF proxy labels, with
    ``saliency``; "excel", of ExCEL runs only). ``options``: the refiner's named options (``affinity_run``,
    ``saliency``), None when not given; the refiner gets those it declares, and one it does not take is refused.
    The levels are the run's ``cam.high_thre`` / ``cam.low_thre``; set on the command line (``load_run(...,
    overrides=["cam.high_thre=H", "cam.low_thre=L"])``, ``--levels H/L``; e.g. a pair of `wsss sweep-bkg`), PSA's
    seeds ("psa") and walk ("affinity") take the alphas of those CAM values instead of their configured ones
    (:attr:`PseudoJob.levels`).
    """
    if refine not in REFINERS:
        raise ConfigError(f"refine must be one of {', '.join(REFINERS)}, got {refine!r}")
    given = refiner_options(run.method, refine, options)
    ds = _dataset(run, root, split)
    out, cams = run.dir / "pseudo" / split, run.dir / "cams" / split
    cfg = results_config(run.cfg)  # not where or how fast it ran (core.config.EXECUTION_KEYS)
    affinity_run, saliency = given.get("affinity_run"), given.get("saliency")
    settings = {
        **_model_and_source(run, _dataset_source(ds)),
        "refine": refine,
        "cam": cfg["cam"],
        "crf": cfg["infer"]["crf"],
        "options": cfg["options"],
        "cams": read_stamp(cams),  # the CAMs' own settings: CAMs made again differ
        "affinity_run": _run_settings(affinity_run),
        "saliency": None if saliency is None else _resolved(saliency),
    }
    outputs = _Outputs(overwrite, [ds.root, cams, saliency]).add(out, settings, ".png")
    with outputs.held("wsss pseudo"):

        def list_todo() -> list[str]:
            outputs.claim()
            return _todo(ds, out, ".png", overwrite)

        todo = shared_todo(list_todo)
        job = PseudoJob(run, ds, cams)
        label_of = REFINERS[refine].make(job, todo, **given)
        with CRFPool(crf_processes(run.cfg)) as pool:
            run_ids(
                todo,
                lambda ids: per_id_pipeline(
                    run,
                    ds,
                    ids,
                    lambda id, image, labels, _: label_of(id, image, labels),
                    pool=pool,
                    finish=_label_writes(out),
                ),
                desc=f"pseudo {refine} {split}",
                skipped=len(ds.ids) - len(todo),
                progress=progress,
                threads=run.cfg.run.threads,
            )
        return out


# How ``wsss predict --tags-from`` applies a classifier's tags, and the folder suffix of its predictions: "hard",
# only the classes at the threshold (TAG_THRESHOLD unless given) or more; "soft", every class weighted by the
# classifier's probability of it (``soft_tag_weights``), no threshold.
TAG_GATES = {"hard": "_tagged", "soft": "_tagged_soft"}
TAG_THRESHOLD = 0.5  # the sigmoid's own decision: the sign of the classifier's logit


def _run_settings(run: Run | str | Path | None) -> dict[str, Any] | None:
    """Another run an output depends on (``pseudo --affinity-run``), for its settings stamp."""
    if run is None:
        return None
    return run.model_settings(own=False) if isinstance(run, Run) else {"dir": _resolved(run)}


def _check_tag_options(tagger: Run | None, gate: str, threshold: float | None) -> None:
    """``tag_gate`` and ``tag_threshold`` of ``run_predict`` go with ``tags_from``; the soft gate has no threshold."""
    if gate not in TAG_GATES:
        raise UsageError(f"tag_gate must be one of {', '.join(TAG_GATES)}, got {gate!r}")
    if tagger is None and (gate != "hard" or threshold is not None):
        raise UsageError("--tag-gate and --tag-threshold apply to the tags of --tags-from RUN: give it too")
    if gate == "soft" and threshold is not None:
        raise UsageError(
            "--tag-gate soft has no threshold (each class is weighted by its probability): drop --tag-threshold"
        )


def _tag_weights(tagger: Run, image: np.ndarray, gate: str, threshold: float | None) -> np.ndarray:
    """(C,) class weights of a photo from the classifier run's probabilities: 0 / 1 at the threshold ("hard"), the
    probabilities themselves ("soft")."""
    probs = tagger.class_probs(image)
    if gate == "soft":
        return soft_tag_weights(probs)
    tags = tag_labels(probs, TAG_THRESHOLD if threshold is None else threshold, at_least_one=False)
    return class_weights_of(allowed_classes(tags), tagger.num_classes)


def _check_tagger(run: Run, tagger: Run, labelled_only: bool) -> None:
    """The classifier run of ``wsss predict --tags-from``: one with a classifier, over the same classes."""
    if labelled_only:
        raise UsageError("--labelled-only and --tags-from both choose each photo's classes: give one of them")
    tagger.require_classifier()  # before any photo, not as each photo's error
    run.require_classes_of(tagger)


def predictions_folder(
    *, crf: bool = False, labelled_only: bool = False, tag_gate: str | None = None, networks: int = 1
) -> str:
    """The folder of a run's masks from ``run_predict`` (its ``<split>/`` inside): ``predictions``, then ``_crf``,
    then ``_labelled`` or the tag gate's suffix (``tag_gate``: None without ``tags_from``), then ``_ensN`` for an
    ensemble of N networks in all."""
    tags = TAG_GATES[tag_gate] if tag_gate is not None else ""
    return (
        "predictions"
        + ("_crf" if crf else "")
        + ("_labelled" if labelled_only else tags)
        + (f"_ens{networks}" if networks > 1 else "")
    )


def check_predict(
    run: Run, tags_from: Run | None, tag_gate: str, tag_threshold: float | None, labelled_only: bool
) -> None:
    """The refusals of a prediction job before any photo: a run without a segmentation head, tag options without
    ``tags_from``, a tagger without a classifier or of other classes."""
    _check_tag_options(tags_from, tag_gate, tag_threshold)
    if not run.method.has_seg_head:
        raise UsageError(
            f"{run.dir}: this run (method {run.cfg.method}, model.decoder {run.cfg.model.decoder}) has no "
            "segmentation head to predict with; use `wsss cam` and `wsss pseudo`, or train a seg stage"
        )
    if tags_from is not None:
        _check_tagger(run, tags_from, labelled_only)


def predict_compute(
    run: Run,
    *,
    crf: bool = False,
    scales: Sequence[float] | None = None,
    probs_dir: Path | None = None,
    labelled_only: bool = False,
    tags_from: Run | None = None,
    tag_threshold: float | None = None,
    tag_gate: str = "hard",
) -> Callable[[str, np.ndarray, Any, Any], np.ndarray | PoolCall]:
    """One photo's prediction in a job's pipeline (:func:`_pipeline`'s ``compute``), the same for a dataset's split
    and for photos that are not a dataset (``runs/photos.py``): the label map, or with ``crf`` a :class:`PoolCall`
    CRF of the probabilities; with ``probs_dir`` the probabilities are also written there (float16)."""
    params = run.cfg.infer.crf

    def compute(id: str, image: np.ndarray, labels: Any, x: torch.Tensor) -> np.ndarray | PoolCall:
        classes = allowed_classes(labels) if labelled_only else None
        weights = _tag_weights(tags_from, image, tag_gate, tag_threshold) if tags_from is not None else None
        if not (crf or probs_dir is not None):  # the label alone, band by band: no (C, H, W) map of a large photo
            return run.seg_label(image, scales, prepared=x, classes=classes, class_weights=weights)
        prob = run.seg_prob(image, scales, prepared=x, classes=classes, class_weights=weights)
        if probs_dir is not None:
            save_npy(per_id_path(probs_dir, id, ".npy"), prob.astype(np.float16))
        return PoolCall(crf_label, (image, prob, present_classes(prob), params)) if crf else prob.argmax(0)

    return compute


# The infer.* keys of the segmentation inference's resizing and fusion (Run._fused_logits) besides the scales and
# infer.square_size; a stamp of an older wsss lacks them, made with their defaults (stamps.IMPLIED)
FUSION_KEYS = ("resize_long", "scale_resize", "flip_fuse", "scale_fuse", "fuse_at")


def prediction_settings(
    run: Run,
    source: dict[str, Any],
    scales: Sequence[float] | None,
    labelled_only: bool,
    tagger: Run | None,
    gate: str,
    threshold: float | None,
) -> dict[str, Any]:
    """What the probabilities of ``run_predict`` depend on (its masks: these and the CRF's parameters): the model
    and the ensemble's members (each by its run, checkpoint and step), the photos' ``source``, the scales, the
    classes allowed."""
    inf = run.cfg.infer
    members = [m.model_settings(own=False) for m in run.members]
    tags = None
    if tagger is not None:
        level = None if gate == "soft" else (TAG_THRESHOLD if threshold is None else threshold)
        tags = {"run": tagger.model_settings(own=False), "gate": gate, "threshold": level}
    return {
        **_model_and_source(run, source),
        "scales": list(scales or inf.scales),
        "square_size": inf.square_size,
        **{k: getattr(inf, k) for k in FUSION_KEYS},
        "max_side": inf.max_side,
        "networks": 1 + len(run.ensemble),
        "ensemble": members,
        "labelled_only": labelled_only,
        "tags": tags,
    }


def run_predict(
    run: Run,
    split: str,
    *,
    root: str | None = None,
    crf: bool = False,
    scales: Sequence[float] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    save_probs: bool = False,
    labelled_only: bool = False,
    tags_from: Run | None = None,
    tag_threshold: float | None = None,
    tag_gate: str = "hard",
) -> Path:
    """Segmentation masks ``predictions/<split>/<id>.png`` (``predictions_crf`` with ``crf``).

    Nothing but the PNGs is written unless ``save_probs``: then also ``probs/<split>/<id>.npy``, the
    fused softmax as float16 (C, H, W). Off by default: on COCO that is terabytes (docs/methods/seco.md#inference).
    ``labelled_only``: each photo's prediction names only the background and its image-level labels
    (``allowed_classes``; folder ``predictions_labelled``, ``predictions_crf_labelled``): the training
    photos' labels for a second round of the segmentation network (a photo without a label: a DataError).
    ``tags_from``: a classifier run (``Run.class_probs``); each photo's prediction names only the background
    and the classes it scores at ``tag_threshold`` (0.5) or more, for photos whose labels are not known (folder
    ``predictions_tagged``, ``predictions_crf_tagged``). ``tag_gate="soft"``: no threshold; each class's
    probability is multiplied by the classifier's probability of the class and renormalised
    (:func:`soft_tag_weights`; folder ``predictions_tagged_soft``, ``predictions_crf_tagged_soft``).
    A run with an ensemble (:meth:`Run.with_ensemble`) of N networks in all writes into ``predictions..._ensN``
    (and ``probs_ensN``).
    """
    check_predict(run, tags_from, tag_gate, tag_threshold, labelled_only)
    ds = _dataset(run, root, split)
    networks = 1 + len(run.ensemble)
    gate = tag_gate if tags_from is not None else None
    out = run.dir / predictions_folder(crf=crf, labelled_only=labelled_only, tag_gate=gate, networks=networks) / split
    probs_dir = run.dir / ("probs" + (f"_ens{networks}" if run.ensemble else "")) / split
    outputs = _Outputs(overwrite, [ds.root, *(m.dir for m in run.members), tags_from.dir if tags_from else None])
    probs_settings = prediction_settings(
        run, _dataset_source(ds), scales, labelled_only, tags_from, tag_gate, tag_threshold
    )
    outputs.add(out, {**probs_settings, "crf": results_config(run.cfg)["infer"]["crf"] if crf else None}, ".png")
    if save_probs:
        outputs.add(probs_dir, probs_settings, ".npy")
    with outputs.held("wsss predict"):

        def list_todo() -> list[str]:
            outputs.claim()
            return _todo(ds, out, ".png", overwrite, *([(probs_dir, ".npy")] if save_probs else []))

        todo = shared_todo(list_todo)

        compute = predict_compute(
            run,
            crf=crf,
            scales=scales,
            probs_dir=probs_dir if save_probs else None,
            labelled_only=labelled_only,
            tags_from=tags_from,
            tag_threshold=tag_threshold,
            tag_gate=tag_gate,
        )
        with CRFPool(crf_processes(run.cfg, crf)) as pool:
            run_ids(
                todo,
                lambda ids: per_id_pipeline(run, ds, ids, compute, size=None, pool=pool, finish=_label_writes(out)),
                desc=f"predict {split}",
                skipped=len(ds.ids) - len(todo),
                progress=progress,
                threads=run.cfg.run.threads,
            )
        warn_if_one_class(out, ds.ids, run.class_names)
        return out
