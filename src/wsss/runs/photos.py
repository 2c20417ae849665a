"""Masks of photos that are not a dataset: ``wsss predict RUN --images DIR_OR_FILES --out DIR`` and
``wsss cam RUN --images ... --out DIR``.

The photos (:class:`~wsss.data.photos.PhotoFolder`: JPEG, PNG or WebP, EXIF orientation applied, ids = the files'
stems) go through the pipeline of a dataset's split (``runs/jobs.py``: loader workers, the same per-photo
computation, the CRF pool, the writer thread, ``--workers N`` / torchrun's ranks), so a photo's mask is the one
``wsss predict RUN --split S`` gives it in a dataset. Written into ``--out`` (never a folder of the photos), each
file atomically:

- ``<stem>.png``: the mask, class indices in the VOC palette, at the photo's (upright) size: the segmentation
  (``predict``) or the CAM seed (``cam``: argmax of the CAMs with ``cam.bkg_thre``);
- ``overlay/<stem>.jpg`` (``overlay=True``): the photo with the mask's colours blended in and a legend of its classes;
- ``cams/<stem>.npz`` (``cam``): the CAMs of the photo's classes, as ``wsss cam`` saves them;
- ``probs/<stem>.npy`` (``predict`` with ``save_probs``): the softmax, float16.

``--out`` records the settings its files were made with (``runs/stamps.py``: the model, the ``--images`` sources
as given, the options that change a mask) in ``.settings.json``. The same command again continues where a killed
one stopped: the photos whose outputs are all there are skipped. ``--out`` holding outputs of these photos made
otherwise (another run, other options or other ``--images``; or by an older wsss, unstamped) is refused unless
``overwrite``, which writes every photo's outputs again and removes nothing else: a mix of two jobs' masks in one
folder would pass for one job's.

Photos have no image labels. A prediction needs none (``tags_from``: a classifier names each photo's classes);
CAMs are made of a photo's labels, so ``cam`` takes them from a run that scores photos zero-shot (CLIP-ES,
``Method.image_scores``: the tags of ``wsss tag`` at its default threshold, the best class always), and refuses
a run whose CAMs need labels the photos do not have.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.cam import CRFPool
from wsss.core.config import results_config
from wsss.core.distributed import rank
from wsss.core.errors import UsageError
from wsss.core.files import check_output_apart, check_output_folder, is_temp_file, remove_stale_temps
from wsss.data.photos import PhotoFolder
from wsss.runs.jobs import (
    cam_settings,
    check_predict,
    crf_processes,
    labelled_seed,
    predict_compute,
    prediction_settings,
    warn_if_one_class,
)
from wsss.runs.per_id import Writes, per_id_pipeline
from wsss.runs.run import Run
from wsss.runs.shard import run_ids, shared_todo
from wsss.runs.stamps import (
    SOURCES_FILE,
    mismatch,
    normal,
    photo_record,
    read_stamp,
    refresh_sources,
    with_implied,
    write_stamp,
)
from wsss.runs.tag import DEFAULT_THRESHOLD, tag_labels
from wsss.utils.io import per_id_path, read_image, save_label_png, save_labelled_cam, save_overlay
from wsss.utils.runlock import JOB_LOCK_FILE, job_folder_lock, run_own_files

OVERLAY_DIR, OVERLAY_SUFFIX = "overlay", ".jpg"


def _outputs(out: Path, extra: dict[str, str], overlay: bool) -> dict[Path, str]:
    """The folders a job writes into (``out`` and its subfolders) -> the suffix of its files there."""
    folders = {out: ".png", **{out / name: suffix for name, suffix in extra.items()}}
    if overlay:
        folders[out / OVERLAY_DIR] = OVERLAY_SUFFIX
    return folders


def _check_place(photos: PhotoFolder, out: Path, folders: dict[Path, str]) -> None:
    """Refuse ``out`` before anything is written into it, its lock included: a file, or a folder of the photos
    (their masks would sit among them, and a photo ``a.png`` would be replaced by its mask)."""
    check_output_folder(out, "a folder for the masks")
    inputs = photos.folders()
    for folder in folders:
        if folder.resolve() in inputs:
            raise UsageError(
                f"{folder}: holds the photos given to --images; give --out another folder (the masks are named by "
                "the photos' stems and are never written among them)"
            )


def _check_outputs(
    photos: PhotoFolder, out: Path, folders: dict[Path, str], settings: dict[str, Any], overwrite: bool
) -> None:
    """Refuse ``out`` when it already holds an output of these photos made with other ``settings`` than this job's
    (or unstamped), or, with no stamp, any file wsss did not make (:func:`_not_ours`), unless ``overwrite``. Every
    process checks before the job's first collective (``shared_todo``), so none sees another's new outputs."""
    new = normal(settings)
    old = with_implied(read_stamp(out), new)
    if overwrite or old == new:  # the same job again continues: its finished photos are skipped
        return
    for folder, suffix in folders.items():
        for id in photos.ids:
            path = per_id_path(folder, id, suffix)
            if not path.exists():
                continue
            made = "" if old is None else f" {mismatch(old, new)}"
            raise UsageError(
                f"{out}: already holds outputs of these photos{made} (e.g. {path}); pass --overwrite to replace "
                "them, or give another --out"
            )
    if old is None:
        _check_foreign(photos, out, folders, overwrite)


def _check_foreign(photos: PhotoFolder, out: Path, folders: dict[Path, str], overwrite: bool) -> None:
    """Refuse an unstamped ``out`` that holds files wsss did not make (:func:`_not_ours`), unless ``overwrite``."""
    if overwrite or read_stamp(out) is not None:
        return
    theirs = _not_ours(out, photos, folders)
    if theirs:
        shown = ", ".join(theirs[:3]) + (f" (and {len(theirs) - 3} more)" if len(theirs) > 3 else "")
        raise UsageError(
            f"{out}: holds files that wsss did not make ({shown}); give --out a new or empty folder (the masks of "
            "a folder of your own, e.g. ground truth, would mix with them), or pass --overwrite to write among them"
        )


def _not_ours(out: Path, photos: PhotoFolder, folders: dict[Path, str]) -> list[str]:
    """The entries of an unstamped ``out`` that are not a job's own: all but its lock and wsss's temporary files, and
    the outputs of these photos (reported as such by :func:`_check_outputs`). A folder of the user's masks is not a
    place for predictions (the README's block predicted into the folder of the ground truth)."""
    if not out.is_dir():
        return []
    mine = {per_id_path(f, i, x).relative_to(out).parts[0] for f, x in folders.items() for i in photos.ids}
    mine |= {f.relative_to(out).parts[0] for f in folders if f != out}
    ours = (JOB_LOCK_FILE, SOURCES_FILE, *mine)
    return sorted(p.name for p in out.iterdir() if p.name not in ours and not is_temp_file(p.name))


def _photo_writes(
    out: Path, photos: PhotoFolder, overlay: bool, class_names: list[str]
) -> Callable[[str, np.ndarray], Writes]:
    """A photo's mask, and with ``overlay`` the photo with the mask blended in and a legend of its classes (the photo
    read again in the writer thread: the pipeline hands the writes the label only)."""

    def writes(id: str, label: np.ndarray) -> Writes:
        mask = [(save_label_png, (per_id_path(out, id, ".png"), label))]
        if not overlay:
            return mask
        path = per_id_path(out / OVERLAY_DIR, id, OVERLAY_SUFFIX)
        return [*mask, (_save_photo_overlay, (path, photos, id, label, class_names))]

    return writes


def _save_photo_overlay(path: Path, photos: PhotoFolder, id: str, label: np.ndarray, class_names: list[str]) -> None:
    save_overlay(path, read_image(photos.image_path(id)), label, class_names=class_names)


def _run_photos(
    photos: PhotoFolder,
    out: Path,
    folders: dict[Path, str],
    settings: dict[str, Any],
    overwrite: bool,
    process: Callable[[list[str]], Any],
    command: str,
    desc: str,
    progress: bool,
    threads: int = 0,
) -> None:
    """``command``'s job over ``photos`` into ``out``, which rank 0 holds for the whole job
    (``utils.runlock.job_folder_lock``: a second job into it is refused, naming the first); its outputs are checked
    under that lock (:func:`_check_outputs`), so that no other job stamps it between this job's check and its
    writes."""
    _check_place(photos, out, folders)
    _check_outputs(photos, out, folders, settings, overwrite)  # before the lock too: a refused folder gets none
    with job_folder_lock(out, command) if rank() == 0 else contextlib.nullcontext():
        _check_outputs(photos, out, folders, settings, overwrite)

        def list_todo() -> list[str]:  # rank 0, before any process writes
            for folder in folders:
                remove_stale_temps(folder)  # a killed earlier job's temporary files
            write_stamp(out, settings)
            records = {i: photo_record(photos.image_path(i)) for i in photos.ids}
            for folder, suffix in folders.items():  # a photo replaced under its name: its outputs are made again
                refresh_sources(folder, [suffix], records)
            if overwrite:
                return list(photos.ids)
            return [i for i in photos.ids if not all(per_id_path(f, i, x).is_file() for f, x in folders.items())]

        todo = shared_todo(list_todo)
        run_ids(todo, process, desc=desc, skipped=len(photos) - len(todo), progress=progress, threads=threads)


def predict_photos(
    run: Run,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    crf: bool = False,
    scales: Sequence[float] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    overlay: bool = False,
    save_probs: bool = False,
    tags_from: Run | None = None,
    tag_threshold: float | None = None,
    tag_gate: str = "hard",
) -> Path:
    """The masks of photos that are not a dataset (module docstring): ``out/<stem>.png``; the options are those of
    :func:`~wsss.runs.jobs.run_predict` (an ensemble: :meth:`Run.with_ensemble` first), which computes each mask
    the same way. Returns ``out``."""
    check_predict(run, tags_from, tag_gate, tag_threshold, labelled_only=False)
    photos, out = PhotoFolder(images), check_output_apart(out, run_own_files(run.dir))
    folders = _outputs(out, {"probs": ".npy"} if save_probs else {}, overlay)
    compute = predict_compute(
        run,
        crf=crf,
        scales=scales,
        probs_dir=out / "probs" if save_probs else None,
        tags_from=tags_from,
        tag_threshold=tag_threshold,
        tag_gate=tag_gate,
    )
    finish = _photo_writes(out, photos, overlay, run.class_names)
    settings = {
        "job": "predict --images",
        **prediction_settings(run, {"images": photos.sources}, scales, False, tags_from, tag_gate, tag_threshold),
        "crf": results_config(run.cfg)["infer"]["crf"] if crf else None,
    }
    with CRFPool(crf_processes(run.cfg, crf)) as pool:
        _run_photos(
            photos,
            out,
            folders,
            settings,
            overwrite,
            lambda ids: per_id_pipeline(run, photos, ids, compute, size=None, pool=pool, finish=finish),
            "wsss predict --images",
            f"predict {len(photos)} photos",
            progress,
            threads=run.cfg.run.threads,
        )
    warn_if_one_class(out, photos.ids, run.class_names)
    return out


def _zero_shot_labels(run: Run) -> Callable[[np.ndarray], np.ndarray]:
    """A photo's labels for its CAMs: the zero-shot tags of a run that scores photos (CLIP-ES, as ``wsss tag``);
    a UsageError for a run whose CAMs need labels the photos do not have."""
    scores = getattr(run.method, "image_scores", None)  # CLIP-ES's zero-shot scores (runs/tag.py reads the same)
    if scores is None:
        raise UsageError(
            f"{run.dir}: a {run.cfg.method} run makes the CAMs of each photo's image labels, and photos given to "
            "--images have none; make them a dataset with labels (`wsss prepare folder --labels`) and use --split, "
            "or use a CLIP-ES run, which labels photos from the class names"
        )
    return lambda image: tag_labels(scores(image)[0], DEFAULT_THRESHOLD, at_least_one=True)


def cam_photos(
    run: Run,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    overlay: bool = False,
) -> Path:
    """The CAMs and CAM seeds of photos that are not a dataset (module docstring): ``out/cams/<stem>.npz`` and the
    seed ``out/<stem>.png`` (background the run's ``cam.bkg_thre``: ``load_run(..., overrides=["cam.bkg_thre=T"])``,
    ``wsss cam RUN --images ... cam.bkg_thre=T`` or ``--bkg-thre T``), each photo's classes found by the
    run itself (:func:`_zero_shot_labels`), its maps made as ``wsss cam`` makes them. Returns ``out``."""
    labels_of = _zero_shot_labels(run)
    photos, out = PhotoFolder(images), check_output_apart(out, run_own_files(run.dir))
    thre = run.cfg.cam.bkg_thre
    cams = out / "cams"
    folders = _outputs(out, {"cams": ".npz"}, overlay)
    seed_writes = _photo_writes(out, photos, overlay, run.class_names)

    def compute(id: str, image: np.ndarray, labels: Any, x: torch.Tensor) -> Writes:
        keys, cam = run.labelled_cam(image, labels_of(image), prepared=x)
        return [(save_labelled_cam, (cams, id, keys, cam)), *seed_writes(id, labelled_seed(keys, cam, thre))]

    # the labels are the run's own zero-shot tags at wsss tag's threshold: the model and the level decide them
    settings = {
        "job": "cam --images",
        **cam_settings(run, {"images": photos.sources}),
        "bkg_thre": thre,
        "tag_threshold": DEFAULT_THRESHOLD,
    }
    _run_photos(
        photos,
        out,
        folders,
        settings,
        overwrite,
        lambda ids: per_id_pipeline(run, photos, ids, compute, size=run.cfg.infer.cam_input_size),
        "wsss cam --images",
        f"cam {len(photos)} photos",
        progress,
        threads=run.cfg.run.threads,
    )
    return out
