"""``wsss viz RUN --ids a,b | --image PATH``: the report's image grids as PNG files, for chosen images.

- ``--ids``: images of a split. What the run saved for that split (``cams/``, ``cam_labels/``,
  ``pseudo/``, ``predictions/``) is shown as the report shows it; whatever is missing is computed with
  the model: the CAM of each labelled class (``Run.cam``, multi-scale + flip as ``wsss cam``), the CAM
  seeds (``cam_to_label`` with ``cam.bkg_thre``), the pseudo label (PAR refinement as
  ``wsss pseudo --refine par``, docs/methods/seco.md#pseudo-label) and the prediction (``Run.predict``, when the model
  has a segmentation head). The ids are shared among the command's processes (``--workers N`` or
  torchrun's ranks, runs/shard.py), each drawing its share.
- ``--image``: any image file, no ground truth. The classes whose CAMs are drawn are ``--classes``,
  or else those the model finds (:func:`guess_classes`: the predicted classes covering 1 % of the
  image, or the classes whose pooled raw CAM is positive); everything is computed with the model.

The drawing is :func:`wsss.report.figures.draw_grid`, the one the report uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from wsss.cam import PAR, cam_to_label, refine_cams_with_bkg
from wsss.core.errors import USER_ERRORS, DataError, UsageError
from wsss.core.files import check_output_folder
from wsss.data import VOCDataset
from wsss.data.classes import ClassLookup
from wsss.data.transforms import fit_side
from wsss.data.voc import run_dataset
from wsss.report.figures import OUTPUTS, ImagePanels, save_grid, saved_panels
from wsss.runs.run import Run, load_run
from wsss.runs.shard import run_ids
from wsss.utils.io import per_id_path, read_image

__all__ = ["fit_panels", "guess_classes", "model_panels", "write_viz"]

_TITLES = dict(OUTPUTS)


@torch.no_grad()
def guess_classes(run: Run, image: np.ndarray, max_classes: int = 4, min_area: float = 0.01) -> np.ndarray:
    """(C-1,) multi-hot of the foreground classes found in an unlabelled image.

    With a segmentation head: the classes the prediction gives at least ``min_area`` of the pixels.
    Otherwise (or if it predicts only background): the classes the classifier finds (``Run.class_probs`` above
    0.5, the tags of ``wsss predict --tags-from``), the most probable first. At most ``max_classes``, at least
    the best one (for a run without a classifier, a segmentation network, its prediction's largest class).
    """
    num_fg = run.num_classes - 1
    if not (run.method.has_seg_head or run.method.has_classifier):  # CLIP-ES: its maps need the classes first
        raise UsageError(f"{run.dir}: a {run.cfg.method} run cannot find an image's classes; name them with --classes")
    scores, floor = np.zeros(num_fg), 0.0  # a class is kept above the floor
    if run.method.has_seg_head:
        area = np.bincount(run.predict(image).reshape(-1), minlength=run.num_classes)[1:] / image[..., 0].size
        scores = np.where(area >= min_area, area, 0.0)
    if not scores.any() and run.method.has_classifier:
        scores, floor = run.class_probs(image), 0.5
    order = np.argsort(-scores, kind="stable")
    keep = [c for c in order[:max_classes] if scores[c] > floor] or [int(order[0])]
    labels = np.zeros(num_fg, dtype=np.float32)
    labels[keep] = 1.0
    return labels


def _par_pseudo(run: Run, image: np.ndarray, cam: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The pseudo label of ``wsss pseudo --refine par`` for one image (docs/methods/seco.md#pseudo-label)."""
    c = run.cfg.cam
    par = PAR(dilations=c.par.dilations, num_iter=c.par.num_iter)
    image01 = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    label = refine_cams_with_bkg(
        par,
        image01,
        torch.from_numpy(cam)[None],
        torch.from_numpy(labels)[None],
        high_thre=c.high_thre,
        low_thre=c.low_thre,
        down_scale=c.par_down_scale,
    )
    return label[0].cpu().numpy().astype(np.uint8)


def model_panels(
    run: Run,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    title: str,
    gt: np.ndarray | None = None,
    base: ImagePanels | None = None,
) -> ImagePanels:
    """Complete ``base`` (saved outputs, or nothing) with what the model computes: CAMs of the classes in
    ``labels`` ((C-1,) multi-hot), CAM seeds, PAR pseudo label (for a method with CAMs), prediction (with a
    segmentation head: a DeepLab run draws the image, its ground truth and its prediction).

    Everything is drawn and computed at most ``infer.max_side`` wide (:func:`fit_panels`): the grid shows each
    panel 280 px wide, and a 13000-px photo's CAMs, PAR and prediction at its own size were 4-15 GB and minutes;
    the network sees no more than that in `wsss cam` and `wsss predict` either."""
    p = fit_panels(
        base or ImagePanels(title=title, image=image, class_names=list(run.class_names), gt=gt), run.cfg.infer.max_side
    )
    image = p.image
    have = {t for t, _ in p.labels}
    need_cam = run.method.has_cams and (
        not p.cams or _TITLES["cam_labels"] not in have or _TITLES["pseudo"] not in have
    )
    if need_cam:
        cam = run.cam(image, labels)
        classes = np.flatnonzero(labels > 0.5)
        if not p.cams:
            p.cams = [(run.class_names[k + 1], cam[k]) for k in classes]
        computed = {}
        if _TITLES["cam_labels"] not in have:
            _, seed = cam_to_label(
                torch.from_numpy(cam)[None], torch.from_numpy(labels)[None], bkg_thre=run.cfg.cam.bkg_thre
            )
            computed[_TITLES["cam_labels"]] = seed[0].numpy()
        if _TITLES["pseudo"] not in have:
            computed[_TITLES["pseudo"]] = _par_pseudo(run, image, cam, labels.astype(np.float32))
        p.labels += list(computed.items())
    if run.method.has_seg_head and _TITLES["predictions"] not in have:
        p.labels.append((_TITLES["predictions"], run.predict(image)))
    order = [t for _, t in OUTPUTS]
    p.labels.sort(key=lambda tl: order.index(tl[0]) if tl[0] in order else len(order))
    return p


def fit_panels(p: ImagePanels, max_side: int | None) -> ImagePanels:
    """``p`` with every panel shrunk to a longest side of ``max_side`` (``fit_side``: bilinear for the image and
    the CAMs, nearest for the ground truth and the label maps); ``p`` itself when it fits."""
    if max_side is None or max(p.image.shape[:2]) <= max_side:
        return p
    return replace(
        p,
        image=fit_side(p.image, max_side),
        gt=None if p.gt is None else fit_side(p.gt, max_side, interpolation="nearest"),
        cams=[(name, fit_side(np.asarray(cam, dtype=np.float32), max_side)) for name, cam in p.cams],
        labels=[
            (t, fit_side(np.asarray(lab, dtype=np.uint8), max_side, interpolation="nearest")) for t, lab in p.labels
        ],
    )


def run_classes(class_names: Sequence[str], given: Sequence[str]) -> list[str]:
    """The run's names of the classes ``given`` (``--classes``), matched as a labels file's are (``ClassLookup``:
    exactly, or but for case when one class matches: ``Cat`` is ``cat``); an unknown name is a UsageError naming it,
    with a close class."""
    lookup = ClassLookup(list(class_names))
    found = [lookup.lookup(name, 0) for name in given]
    if lookup.unknown:
        name = next(iter(lookup.unknown))
        hint = lookup.hint(name)
        raise UsageError(
            f"--classes: unknown class {name!r}{f' ({hint})' if hint else ''}; the run's classes: "
            f"{', '.join(class_names[1:])}"
        )
    return [class_names[k] for k in found if k is not None]


def write_viz(
    run_dir: str | Path,
    *,
    ids: Sequence[str] = (),
    image: str | Path | None = None,
    split: str | None = None,
    out: str | Path | None = None,
    classes: Sequence[str] = (),
    data_root: str | None = None,
    checkpoint: str = "auto",
    device: str | None = None,
    progress: bool = False,
    overrides: Sequence[str] = (),
) -> list[tuple[Path, ImagePanels]]:
    """Write one grid PNG per id (``<out>/<id>.png``) or for ``image`` (``<out>/<stem>.png``); ``out``
    defaults to ``<run>/viz/``. Returns (path, panels) per image this process wrote: ``ids`` are shared
    among the processes of the command (torchrun's ranks or ``--workers``), each writing its share;
    ``progress`` shows one bar and the summary line (rank 0). ``overrides``: ``KEY=VALUE`` words over the run's
    saved config (``load_run``; ``device``: shorthand for ``run.device=DEVICE``)."""
    if bool(ids) == (image is not None):
        raise UsageError("give either ids or an image")
    if out is not None:
        check_output_folder(out, "a folder for the grids (one PNG per image)")
    run = load_run(run_dir, checkpoint=checkpoint, device=device, overrides=overrides)
    out = Path(out) if out is not None else run.dir / "viz"
    classes = run_classes(run.class_names, classes)
    if image is not None:
        return [_image_grid(run, Path(image), classes, out)]
    written = []
    split = split or run.cfg.data.val_split
    ds = run_dataset(data_root, run.cfg.data.root, split, run.dir)
    if ds.num_classes != run.num_classes:
        raise DataError(f"{ds.root}: {ds.num_classes} classes, the run was trained with {run.num_classes}")
    known = set(ds.ids)
    missing = [i for i in ids if i not in known]
    if missing:
        raise DataError(f"{ds.root}: id {missing[0]!r} is not in split {split!r}")

    def grids(mine: list[str]) -> Iterator[tuple[str, str | None]]:
        for i in mine:
            try:
                written.append(_id_grid(run, ds, i, split, classes, out))
            except USER_ERRORS as e:  # e.g. an unreadable image: the other ids go on
                yield i, str(e)
                continue
            yield i, None

    # the ids are shared among the command's processes (torchrun or --workers, runs/shard.py); each
    # process returns the grids it wrote
    run_ids(list(dict.fromkeys(ids)), grids, desc=f"viz {split}", progress=progress, threads=run.cfg.run.threads)
    return written


def _image_grid(run: Run, image: Path, classes: Sequence[str], out: Path) -> tuple[Path, ImagePanels]:
    """The grid of an image file (``<out>/<stem>.png``): the CAMs of ``classes``, else of the classes the
    model finds in it (:func:`guess_classes`)."""
    fg = run.class_names[1:]
    img = read_image(image, max_side=run.cfg.infer.max_side)  # no more is drawn (model_panels)
    if classes:
        labels = np.array([1.0 if c in classes else 0.0 for c in fg], dtype=np.float32)
    else:
        labels = guess_classes(run, img)
    names = ", ".join(fg[k] for k in np.flatnonzero(labels))
    # say whose classes these are: the user's (--classes) or the model's guess, never ground truth
    title = f"{image.name} (CAMs of: {names})" if classes else f"{image.name} (predicted: {names})"
    p = model_panels(run, img, labels, title=title)
    return save_grid(p, per_id_path(out, image.stem, ".png")), p


def _id_grid(
    run: Run, ds: VOCDataset, i: str, split: str, classes: Sequence[str], out: Path
) -> tuple[Path, ImagePanels]:
    """The grid of id ``i``: what the run saved for it, the rest computed with the model."""
    fg = run.class_names[1:]
    labels = ds.labels(i)
    if classes:
        labels = np.array([1.0 if c in classes else 0.0 for c in fg], dtype=np.float32)
    base = saved_panels(ds, i, run.dir, split, title=f"{i} ({split})")
    if classes:  # other classes than the saved CAMs hold: recompute them
        base.cams, base.labels = [], [(t, lab) for t, lab in base.labels if t.startswith(_TITLES["predictions"])]
    p = model_panels(run, base.image, labels, title=base.title, gt=base.gt, base=base)
    return save_grid(p, per_id_path(out, i, ".png")), p
