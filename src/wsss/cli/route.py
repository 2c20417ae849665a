"""``wsss route`` (pipelines/route.py)."""

from __future__ import annotations

import argparse
from typing import Any

from wsss.cli.options import add_overwrite, setting_type
from wsss.cli_common import add_overrides, add_quiet


def cmd_route(args: argparse.Namespace) -> int:
    from wsss.pipelines.route import run_route
    from wsss.pipelines.route_values import RouteOptions

    defaults = {k: v for k, v in (("seg", args.seg), ("folds", args.folds)) if v is not None}  # else RouteOptions'
    run_route(
        RouteOptions(
            data=args.data,
            out=args.out,
            labels=args.labels,
            classes=args.classes,
            masks=args.masks,
            classifier=args.classifier,
            stage=args.stage,
            overrides=args.overrides,
            crf_workers=args.crf_workers,
            images=args.images,
            overwrite=args.overwrite,
            progress=not args.quiet,
            plan_only=args.plan,
            clip=args.clip,
            dinov2=args.dinov2,
            rounds=args.rounds,
            abstain=args.abstain,
            **defaults,
        )
    )
    return 0


def add_route(sub: Any) -> None:
    """`wsss route` (pipelines/route.py)."""
    s = sub.add_parser(
        "route",
        help="photos to masks in one command: the advised route, its choices made from the data",
        description="Run (or continue) the advised route on a dataset, or on a folder of photos with --labels and "
        "--classes: the classifier, its CAMs, PAR pseudo labels, the DeepLab stage, every photo's mask with the dense "
        "CRF (OUT/masks), the reports; with --clip (and --dinov2) CLIP-ES or WeCLIP+ instead of the classifier; each "
        "choice printed with its reason (docs/own-photos.md).",
    )
    s.add_argument(
        "data", help="a dataset made by `wsss prepare`, or a folder of photos (with --classes, and --labels or --clip)"
    )
    add_overrides(
        s,
        "cls.train.epochs=24 seg.train.lr=0.001 run.seed=1",
        what="runs (cls.KEY=VALUE: the classifier's, seg.KEY=VALUE: the DeepLab stage's, clip.KEY=VALUE: "
        "the CLIP method's, a bare KEY=VALUE: all)",
    )
    s.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="the route's folder (its runs, record and summary); the same command again continues it",
    )
    s.add_argument("--labels", default=None, metavar="FILE", help="with a folder of photos: its image labels")
    s.add_argument("--classes", default=None, metavar="FILE", help="with a folder of photos: the class list")
    s.add_argument(
        "--masks",
        default=None,
        metavar="PATH",
        help="with a folder of photos: masks of some of them, in a format `wsss prepare folder --masks` "
        "reads (class-index PNGs, COCO .json, CVAT or LabelMe export)",
    )
    s.add_argument(
        "--clip",
        default=None,
        metavar="FILE",
        help="a CLIP ViT-B/16 file or folder (clip.model.pretrained=FILE): CLIP-ES, or WeCLIP+ with "
        "--dinov2; tags photos given without --labels (docs/own-photos.md#with-clip-files)",
    )
    s.add_argument(
        "--dinov2",
        default=None,
        metavar="FILE",
        help="a DINOv2 ViT-S/14 file or folder (clip.options.dino_weights=FILE): with --clip, WeCLIP+ "
        "trained on the photos",
    )
    add_route_choices(s)
    s.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="DIR_OR_FILE",
        help="new photos (not a dataset): their masks into OUT/new_masks at the end",
    )
    s.add_argument(
        "--plan",
        action="store_true",
        help="check every input, print the choices and the steps as "
        "commands with an estimate of each one's time; run nothing",
    )
    add_overwrite(
        s,
        "make the route again with settings other than OUT/route.json's (the files wsss made in OUT "
        "are replaced; nothing you gave, nor a file of yours there, is touched)",
    )
    add_quiet(s)
    s.set_defaults(fn=cmd_route)


def add_route_choices(s: Any) -> None:
    """The route's choices a user may make instead of the route: the classifier, the stage, its folds, the CRF's
    processes, self-training and abstaining labels."""
    s.add_argument(
        "--classifier",
        default="auto",
        metavar="NAME",
        help="auto (default: by classes and photos per class), rca, cam, or a preset",
    )
    s.add_argument(
        "--seg", default=None, metavar="PRESET", help="the DeepLab stage's preset (default wsss::deeplab/real_cpu.yaml)"
    )
    s.add_argument(
        "--stage",
        default="auto",
        choices=("auto", "mixed", "masks"),
        help="the DeepLab stage on the weak labels with the masks in their place (mixed) or on the "
        "masks alone (masks); auto (default): the better over --folds folds of masked photos",
    )
    s.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="N",
        help="folds of the masked train photos that choose the stage (default 3; each costs two "
        "trainings of the stage; 0: no choice, the mixed stage)",
    )
    s.add_argument(
        "--crf-workers",
        type=setting_type("infer.crf_workers", int),
        default=None,
        metavar="N",
        help="processes of the dense CRF (infer.crf_workers; default: each run's own)",
    )
    s.add_argument(
        "--rounds",
        type=int,
        default=0,
        metavar="N",
        help="self-training: N more DeepLab stages, each on its predecessor's masks of the train photos "
        "(with the CRF, only each photo's labelled classes); default 0 "
        "(docs/own-photos.md#which-route)",
    )
    s.add_argument(
        "--abstain",
        action="store_true",
        help="labels that abstain: the stage learns only the pixels where PAR, the CAM's thresholds and "
        "the CRF agree (wsss pseudo --refine agree)",
    )
