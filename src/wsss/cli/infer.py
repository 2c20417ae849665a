"""The commands over a trained run's photos: ``wsss cam``, ``sweep-bkg``, ``pseudo``, ``predict``, ``tag``."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from wsss.cli.options import (
    LazyChoices,
    add_checkpoint,
    add_crf_workers,
    add_data_root,
    add_device,
    add_overwrite,
    add_run_args,
    add_run_overrides,
    add_scales,
    add_setting,
    floats_arg,
    load_run_of,
    number_arg,
    override_words,
    pair_arg,
    probability_arg,
    processes_of,
    score_arg,
    setting_type,
)
from wsss.cli_common import add_quiet


def cmd_cam(args: argparse.Namespace) -> int:
    _check_source(args)
    with processes_of(args) as procs, _photos_hint(args):
        from wsss.runs.jobs import run_cam

        run = load_run_of(args)
        if args.images:
            from wsss.runs.photos import cam_photos

            out = cam_photos(
                run, args.images, args.out, overwrite=args.overwrite, progress=not args.quiet, overlay=args.overlay
            )
        else:
            out = run_cam(run, args.split, root=args.data_root, overwrite=args.overwrite, progress=not args.quiet)
    if procs.is_main:
        cams = out / "cams" if args.images else run.dir / "cams" / args.split
        print(f"CAMs in {cams}, seeds (background {run.cfg.cam.bkg_thre:g}) in {out}" + _overlays_note(args, out))
    return 0


def _check_source(args: argparse.Namespace) -> None:
    """``wsss cam | predict``: a dataset's ``--split``, or photos that are not a dataset (``--images`` with
    ``--out``), not both; the options of one that the other has no use for are refused, not ignored."""
    from wsss.core.errors import UsageError

    if args.images is None:
        if args.split is None:
            raise UsageError("give --split SPLIT (a dataset's split) or --images DIR_OR_FILES --out DIR (photos)")
        given = [flag for flag, value in (("--out", args.out), ("--overlay", args.overlay)) if value]
        if given:
            raise UsageError(
                f"{given[0]} goes with --images (photos that are not a dataset); a split's outputs "
                "are written into the run directory"
            )
        return
    given = [
        flag
        for flag, value in (
            ("--split", args.split),
            ("--data-root", args.data_root),
            ("--labelled-only", getattr(args, "labelled_only", False)),
        )
        if value
    ]
    if given:
        why = "the photos have no image labels" if given[0] == "--labelled-only" else "they are a dataset's"
        raise UsageError(f"--images reads photos that are not a dataset: drop {given[0]} ({why})")
    if args.out is None:
        raise UsageError("--images needs --out DIR, the folder for the masks (never the photos' own folder)")


@contextlib.contextmanager
def _photos_hint(args: argparse.Namespace) -> Iterator[None]:
    """A split file that is not there names ``--images`` too: ``--data-root FOLDER_OF_PHOTOS`` is a common first
    try at the masks of new photos."""
    from wsss.core.errors import DataError
    from wsss.data.voc import SplitNotFoundError

    try:
        yield
    except SplitNotFoundError as e:
        raise DataError(
            f"{e}; to read a folder of photos that is not a dataset, use `wsss {args.command} {args.run} "
            "--images DIR --out DIR`"
        ) from e


def _overlays_note(args: argparse.Namespace, out: Any) -> str:
    return f", overlays in {out / 'overlay'}" if args.images and args.overlay else ""


def cmd_sweep_bkg(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from wsss.evaluation.bkg_sweep import sweep_run_bkg

    res, written = sweep_run_bkg(
        args.run,
        args.split,
        data_root=args.data_root,
        thresholds=args.thresholds,
        pairs=args.pairs,
        json_path=args.json,
        progress=None if args.quiet else lambda ids: tqdm(ids, desc=f"sweep {args.split}"),
        overrides=override_words(args),
    )
    own = tuple(res["config_pair"])
    config_thre = res["config_bkg_thre"]
    for t, m in zip(res["thresholds"], res["miou"]):
        mark = "  <- best" if t == res["best_thre"] else ("  (config)" if t == config_thre else "")
        print(f"  bkg {t:5.2f}  mIoU {100 * m:5.1f}{mark}")
    print("two-level labels (cam.high_thre / cam.low_thre: class above high, background at or below low):")
    for r in res["pairs"]:
        mark = "  (config)" if (r["high"], r["low"]) == own else ""
        print(
            f"  high {r['high']:4.2f} low {r['low']:4.2f}  mIoU where decided {100 * r['miou_decided']:5.1f}"
            f"  decided {100 * r['decided']:5.1f} %{mark}"
        )
    print(f"best background {res['best_thre']:g} (mIoU {100 * res['best_miou']:.1f}); written {written}")
    return 0


def cmd_pseudo(args: argparse.Namespace) -> int:
    with processes_of(args) as procs:
        from wsss.runs.jobs import run_pseudo

        out = run_pseudo(
            load_run_of(args),
            args.split,
            refine=args.refine,
            root=args.data_root,
            overwrite=args.overwrite,
            progress=not args.quiet,
            affinity_run=args.affinity_run,
            saliency=args.saliency,
        )
    if procs.is_main:
        print(f"pseudo labels in {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    _check_source(args)
    with processes_of(args) as procs, _photos_hint(args):
        from wsss.runs.jobs import run_predict

        run = _with_ensemble(args, load_run_of(args))
        if args.images:
            from wsss.runs.photos import predict_photos

            out = predict_photos(
                run,
                args.images,
                args.out,
                crf=args.crf,
                overwrite=args.overwrite,
                progress=not args.quiet,
                overlay=args.overlay,
                save_probs=args.save_probs,
                tags_from=_tagger(args, run),
                tag_threshold=args.tag_threshold,
                tag_gate=args.tag_gate,
            )
        else:
            out = run_predict(
                run,
                args.split,
                root=args.data_root,
                crf=args.crf,
                overwrite=args.overwrite,
                progress=not args.quiet,
                save_probs=args.save_probs,
                labelled_only=args.labelled_only,
                tags_from=_tagger(args, run),
                tag_threshold=args.tag_threshold,
                tag_gate=args.tag_gate,
            )
    if procs.is_main:
        print(f"predictions in {out}" + _overlays_note(args, out))
    return 0


def _with_ensemble(args: argparse.Namespace, run: Any) -> Any:
    """``wsss predict RUN --ensemble RUN2 ...``: RUN with the other runs' segmentation networks averaged into its
    own, each loaded on RUN's device from the same ``--checkpoint`` choice."""
    if not args.ensemble:
        return run
    from wsss.core.errors import UsageError
    from wsss.runs.run import load_run

    if args.checkpoint not in ("auto", "best", "last"):
        raise UsageError(
            f"--checkpoint {args.checkpoint} is a file of {args.run} alone: with --ensemble give best, last or auto"
        )
    return run.with_ensemble([load_run(d, checkpoint=args.checkpoint, device=str(run.device)) for d in args.ensemble])


def _tagger(args: argparse.Namespace, run: Any) -> Any:
    """``wsss predict --tags-from RUN``: that classifier run, on the segmentation run's device."""
    if args.tags_from is None:
        return None
    from wsss.runs.run import load_run

    return load_run(args.tags_from, device=str(run.device))


def cmd_tag(args: argparse.Namespace) -> int:
    from wsss.runs.tag import tag_split

    summary = tag_split(
        load_run_of(args),
        args.split,
        root=args.data_root,
        threshold=args.threshold,
        at_least_one=not args.allow_empty,
        labels_from=args.labels_from,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(summary.format())
    return 0


def _refiners() -> Sequence[str]:
    from wsss.methods import load_entry_points
    from wsss.runs.jobs import REFINERS  # the generic refiners; the methods register theirs

    load_entry_points()  # plugins of the entry-point group register their refiners too
    return sorted(REFINERS)


def _tag_gates() -> Sequence[str]:
    from wsss.runs.jobs import TAG_GATES

    return tuple(TAG_GATES)


def add_cam(sub: Any) -> None:
    """`wsss cam`."""
    s = sub.add_parser("cam", help="multi-scale + flip CAMs and CAM seeds of a trained run")
    add_run_args(s, photos=True)
    add_scales(s, "infer.cam_scales", "1.0,0.5,1.5")
    add_setting(
        s,
        "--bkg-thre",
        "cam.bkg_thre",
        number_arg,
        help="background level of the seeds: cam.bkg_thre=T (default: the run's cam.bkg_thre); a level other than "
        "the seeds' folder holds rewrites every seed, from the saved CAMs",
    )
    s.set_defaults(fn=cmd_cam)


def add_sweep_bkg(sub: Any) -> None:
    """`wsss sweep-bkg`."""
    s = sub.add_parser("sweep-bkg", help="mIoU of a run's saved CAM seeds at many background levels (needs GT)")
    s.add_argument("run", help="run directory with cams/<split>/ (`wsss cam` first)")
    s.add_argument("--split", default="train", help="split whose CAMs are scored (default train)")
    add_data_root(s)
    s.add_argument(
        "--thresholds",
        type=setting_type("cam.bkg_thre", floats_arg, each=True),
        default=None,
        help="e.g. 0.1,0.2,0.3 (default: 0.05 to 0.70)",
    )
    s.add_argument(
        "--pairs",
        type=pair_arg,
        nargs="+",
        default=None,
        help="two-level (high/low) pairs to score, e.g. 0.7/0.25 0.35/0.1 (default: a grid from 0.7/0.25 down)",
    )
    s.add_argument("--json", default=None, help="output file (default: RUN/bkg_sweep/<split>.json)")
    add_device(s)
    add_quiet(s)
    add_run_overrides(s)
    s.set_defaults(fn=cmd_sweep_bkg)


def add_pseudo(sub: Any) -> None:
    """`wsss pseudo`."""
    s = sub.add_parser("pseudo", help="pseudo labels from the saved CAMs")
    add_run_args(s)
    s.add_argument(
        "--refine",
        choices=LazyChoices(_refiners),
        default="par",
        metavar="REFINER",
        help="how the CAMs become labels: %(choices)s (default par; see docs/getting-started.md, The commands)",
    )
    s.add_argument("--affinity-run", default=None, help="with --refine affinity: a run trained with method affinitynet")
    s.add_argument("--saliency", default=None, help="with --refine rca: directory of <id>.png saliency maps")
    add_crf_workers(s, "processes for the CPU refiners crf, psa, rca")
    add_setting(
        s,
        "--levels",
        ("cam.high_thre", "cam.low_thre"),
        pair_arg,
        metavar="HIGH/LOW",
        help="CAM levels of the pseudo labels, e.g. 0.35/0.1 (a pair scored by `wsss sweep-bkg`): class above HIGH, "
        "background at or below LOW, 255 between: cam.high_thre=HIGH cam.low_thre=LOW (default: the run's); "
        "--refine psa: the la / ha alphas whose background (1 - cam)^alpha crosses the CAM there, --refine "
        "affinity: the walk's alpha at HIGH; with --overwrite to redo existing labels",
    )
    s.set_defaults(fn=cmd_pseudo)


def add_predict(sub: Any) -> None:
    """`wsss predict`."""
    s = sub.add_parser("predict", help="segmentation masks (multi-scale + flip, optional DenseCRF)")
    add_run_args(s, photos=True)
    add_scales(s, "infer.scales", "1.0,1.25,1.5")
    s.add_argument("--crf", action="store_true", help="DenseCRF over the classes that can appear")
    add_crf_workers(s, "CRF processes")
    s.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="RUN",
        help="more runs of the same classes (e.g. the stage trained again with other seeds) whose softmax "
        "probabilities are averaged with RUN's at each scale and flip (predictions_ensN/, N networks in all; its "
        ".settings.json names the members: another ensemble of N there is refused without --overwrite)",
    )
    s.add_argument(
        "--save-probs",
        action="store_true",
        help="also write probs/<split>/<id>.npy (float16 softmax); an id is done when its mask and its "
        "probabilities are both there",
    )
    s.add_argument(
        "--labelled-only",
        action="store_true",
        help="name only the background and each photo's image labels (training photos: the labels of a "
        "second round; predictions_labelled/)",
    )
    s.add_argument(
        "--tags-from",
        default=None,
        metavar="RUN",
        help="a classifier run (cam, seco, rca, sccam: e.g. the route's cls/) that tags each photo: its prediction "
        "names only the background and the classes the classifier finds (predictions_tagged/); for photos whose "
        "labels are not known (val, test, your own)",
    )
    s.add_argument(
        "--tag-threshold",
        type=probability_arg,
        default=None,
        metavar="P",
        help="a class is a tag where the classifier's sigmoid reaches P (default 0.5)",
    )
    s.add_argument(
        "--tag-gate",
        choices=LazyChoices(_tag_gates),
        default="hard",
        metavar="GATE",  # a metavar: no import here
        help="hard (default): the prediction names only the tags at --tag-threshold; soft: no threshold, each "
        "class's probability is multiplied by the classifier's probability of it (predictions_tagged_soft/)",
    )
    s.set_defaults(fn=cmd_predict)


def add_tag(sub: Any) -> None:
    """`wsss tag`."""
    s = sub.add_parser(
        "tag",
        help="image labels of a split from CLIP zero-shot scores and the class names (a CLIP-ES run)",
        description="Writes the dataset's cls_labels.npy for the split's photos, and tags.csv (each photo's "
        "labels and scores, to read and edit) beside it; prints precision/recall against the masks where "
        "photos have them. Route: prepare folder (no --labels) -> import clip_es -> tag -> cam -> pseudo.",
    )
    s.add_argument("run", help="CLIP-ES run directory (wsss import clip_es WEIGHTS ...)")
    s.add_argument("--split", required=True, help="split of the dataset to tag (e.g. train)")
    add_data_root(s)
    add_checkpoint(s, hidden=True)
    add_device(s)
    s.add_argument(
        "--threshold",
        type=score_arg,
        default=0.1,
        help="a class is a label when its score (softmax over the class and background prompts) is at least "
        "this (default 0.1)",
    )
    s.add_argument(
        "--allow-empty",
        action="store_true",
        help="no label where no class reaches the threshold (default: the best class is always a label)",
    )
    s.add_argument("--labels-from", default=None, help="write the labels column of an edited tags.csv instead")
    add_overwrite(s, "replace labels the split's photos already have")
    add_quiet(s)
    add_run_overrides(s)
    s.set_defaults(fn=cmd_tag)
