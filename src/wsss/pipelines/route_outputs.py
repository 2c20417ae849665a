"""What the route's steps write beyond their runs (:mod:`wsss.pipelines.route`): the photos' tags
(:func:`tag_the_photos`), every photo's mask in ``OUT/masks``, scored (:func:`make_masks`), the runs' reports with
the masks' overlays (:func:`write_reports`) and the masks of new photos (:func:`predict_new_photos`). ``route``: the
``wsss.pipelines.route.Route`` whose steps they are (which imports this module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsss.core.files import atomic_write
from wsss.pipelines import clip_steps, route_calls
from wsss.pipelines.route_values import AFTER_TAGS, AFTER_TAGS_CLIP, MASKS_DIR, MASKS_PAGE, TAGS_DIGEST
from wsss.pipelines.steps import Command, remove_made


def tag_the_photos(route: Any, root: Path, clip_dir: Path) -> None:
    """``wsss tag``: CLIP's labels of the photos (``tags.csv`` read back once there: the user's edits); when the
    labels differ from those the later steps were made from, those steps are made again."""
    summary, edited = clip_steps.tag_photos(
        clip_dir, "train", device=route.choices["device"].value or "cpu", progress=route.opts.progress
    )
    route.say(
        ("  the labels column of tags.csv (edit it and rerun to change them)\n" if edited else "") + summary.format()
    )
    if summary.with_mask:
        route.scores["tags"] = {
            "precision": summary.precision,
            "recall": summary.recall,
            "photos": summary.with_mask,
        }
    splits = ["train", *(["val"] if route._facts().val else [])]
    masked = clip_steps.labels_from_masks(root, splits)
    if masked:
        route.say(f"  the {masked} photos with a mask take its classes as their labels (tags.csv keeps CLIP's)")
    digest, record = clip_steps.labels_digest(root, route._facts().train), route.out / TAGS_DIGEST
    if record.is_file() and record.read_text().strip() != digest:
        route.say("route: the labels changed since the steps after the tags ran (tags.csv edited): they run again")
        kept = [k for n in (*AFTER_TAGS, *route._round_dirs()) for k in remove_made(route.out / n)]
        kept += [k for n in AFTER_TAGS_CLIP for k in remove_made(clip_dir / n)]
        if kept:
            route.say(f"  kept {len(kept)} files wsss did not make: {', '.join(map(str, kept[:3]))}")
    with atomic_write(record, "w") as f:
        f.write(digest + "\n")


def make_masks(route: Any, seg_dir: Path, crf: bool = True) -> None:
    """Every train and val photo's mask with the dense CRF (``wsss predict --labelled-only --crf`` of each split;
    WeCLIP+'s by its test, ``crf`` False), all of them in ``OUT/masks``, a drawn mask in its prediction's place
    (``pipelines.route_labels``); each split scored on its photos with a mask, and each such photo on its own
    (``scores["photos"]``: its mIoU and pixel accuracy against your mask, in %), the masks against the labels."""
    from wsss.pipelines import route_labels

    facts = route._facts()
    folder = route.out.resolve() / MASKS_DIR
    # every route photo has labels: its mask names only the background and them (wsss predict --labelled-only)
    preds = {split: route._predict_split(seg_dir, split, crf=crf, labelled_only=True) for split in route._splits()}
    for pred in preds.values():  # the route's own masks, beside the drawn ones that take their place
        route_calls.gather_masks(pred, folder / route_labels.PREDICTED_DIR)
    route.masks_written = sum(route_calls.gather_masks(pred, folder) for pred in preds.values())
    route.masks = folder
    photos: dict[str, dict[str, Any]] = {}
    for split, masked in (("val", facts.masked_val), ("train", facts.masked_train)):
        if masked and split in preds:
            route.scores[f"{split}_miou"] = 100 * route_calls.miou(preds[split], facts.root, split)
            route.scores[f"{split}_scored_photos"] = len(masked)
            photos |= route_calls.photo_scores(preds[split], facts.root, split, masked)
    route.scores["photos"] = photos
    teach = route.mode.mode.masks_teach
    route_labels.masks_against_labels(route.scores, preds, facts, route.out.resolve(), seg_dir, teach)


def write_reports(route: Any, *run_dirs: Path) -> None:
    """The runs' reports, the DeepLab stage's with the folds' advice; a report newer than every output of its run (a
    finished route run again) is kept as it is."""
    from wsss.report import write_report
    from wsss.report.html import report_is_current

    route.reports = []
    links = mask_sheet(route, run_dirs[-1])
    for run_dir in run_dirs:
        folds = (route.scores.get("folds") or {}) if run_dir.name == "seg" else {}
        if report_is_current(run_dir):
            route.reports.append(run_dir / "report" / "index.html")
            route.say(f"  {route.reports[-1]}: newer than every output of its run, kept")
        else:
            last = run_dir == run_dirs[-1]  # the run of the masks: their overlays, their check against the labels
            route.reports.append(
                write_report(
                    run_dir,
                    folds=folds,
                    links=links if last else (),
                    labels=route.scores.get("labels", {}) if last else {},
                )
            )


def mask_sheet(route: Any, run_dir: Path) -> list[tuple[str, str]]:
    """The overlays of ``OUT/masks`` and their page in the report of ``run_dir`` (the run that made the masks):
    the link that report shows."""
    from wsss.data import VOCDataset
    from wsss.report.overlays import write_mask_overlays

    masks = route.out.resolve() / MASKS_DIR
    if not masks.is_dir():
        return []
    facts = route._facts()
    images = {i: ds.image_path(i) for ds in (VOCDataset(facts.root, s) for s in route._splits()) for i in ds.ids}
    write_mask_overlays(masks, images, facts.class_names, run_dir / "report" / MASKS_PAGE, say=route.say)
    return [(MASKS_PAGE, f"every photo's mask over the photo, with the colours' legend ({MASKS_PAGE})")]


def predict_new_photos(route: Any, command: Command) -> None:
    """``wsss predict RUN --images ... --out OUT [--crf] --overlay`` in this process."""
    from wsss.runs.photos import predict_photos
    from wsss.runs.stamps import STAMP_FILE

    run_dir, out, crf = Path(command.args[0]), Path(command.option("--out")), bool(command.option("--crf"))
    # the route's own folder without a stamp holds only files of the user's that --overwrite kept: written among
    mine = out.is_dir() and not (out / STAMP_FILE).exists()
    run = route_calls.load_step_run(run_dir, **route._where())
    route.new_masks = predict_photos(
        run,
        list(command.option("--images")),
        out,
        crf=crf,
        overlay=True,
        progress=route.opts.progress,
        overwrite=mine,
    )
