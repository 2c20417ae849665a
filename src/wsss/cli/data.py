"""The data set commands: ``wsss synth``, ``check-data``, ``prepare``, ``data fetch``."""

from __future__ import annotations

import argparse
from typing import Any

from wsss.cli.options import add_image_mode, add_overwrite, add_pool_workers
from wsss.cli_common import add_quiet


def cmd_synth(args: argparse.Namespace) -> int:
    from wsss.data import generate_synthetic

    given = {"context_with": args.context_with, "context_without": args.context_without}
    context = {k: v for k, v in given.items() if v is not None}  # unset: the design's defaults
    counts = generate_synthetic(
        args.out,
        n_train=args.train,
        n_val=args.val,
        size=args.size,
        seed=args.seed,
        n_workers=args.workers,
        overwrite=args.overwrite,
        **context,
    )
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from wsss.data import check_dataset

    report = check_dataset(args.root, args.split)
    print(report.format())
    return 0 if report.ok else 1


def cmd_prepare(args: argparse.Namespace) -> int:
    from wsss.data import prepare

    if args.dataset == "voc":
        summary = prepare.prepare_voc(
            args.voc,
            args.sbd,
            args.out,
            images=args.image_mode,
            labels=args.label_source,
            workers=args.workers,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    elif args.dataset == "coco":
        summary = prepare.prepare_coco(
            args.coco,
            args.out,
            year=args.year,
            splits=tuple(args.splits),
            images=args.image_mode,
            val_part=args.val_part,
            workers=args.workers,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    else:
        summary = prepare.prepare_folder(
            args.images,
            args.labels,
            args.classes,
            args.out,
            masks=args.masks,
            val_fraction=args.val_fraction,
            seed=args.seed,
            image_mode=args.image_mode,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    print(summary.format())
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from wsss.data.fetch import fetch

    res = fetch(
        args.dataset,
        args.raw,
        args.out,
        archives=args.archive or (),
        sha256=args.sha256,
        verify=not args.no_verify,
        overwrite=args.overwrite,
        prepare=not args.no_prepare,
        image_mode=args.image_mode,
        workers=args.workers,
        progress=not args.quiet,
    )
    if res.summary is not None:
        print(res.summary.format())
    for note in res.notes:
        print(f"note: {note}")
    return 0


def add_synth(sub: Any) -> None:
    """`wsss synth`."""
    s = sub.add_parser("synth", help="write a synthetic co-occurrence dataset (VOC layout)")
    s.add_argument("out", help="output dataset root")
    s.add_argument("--train", type=int, default=800, help="training images (default 800)")
    s.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    s.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the generator (default 0)")
    s.add_argument("--workers", type=int, default=0, help="worker processes (0 = in-process)")
    add_overwrite(s, "replace the dataset OUT holds (its images, masks, split lists and labels)")
    s.add_argument(
        "--context-with",
        type=float,
        default=None,
        help="probability of the water (rails) band in an image with a boat (train) (default: the design's, 0.85)",
    )
    s.add_argument(
        "--context-without",
        type=float,
        default=None,
        help="probability of the water (rails) band in an image without a boat (train) (default: the design's, 0.10)",
    )
    s.set_defaults(fn=cmd_synth)


def add_check_data(sub: Any) -> None:
    """`wsss check-data`."""
    s = sub.add_parser("check-data", help="validate a dataset; exit 1 on problems")
    s.add_argument("root", help="dataset root (VOC layout)")
    s.add_argument("--split", default=None, help="check one split (default: every split file)")
    s.set_defaults(fn=cmd_check_data)


def _add_converter_options(q: argparse.ArgumentParser) -> None:
    """The last options of ``wsss prepare voc`` and ``prepare coco``: a dataset this release prepared is continued."""
    add_overwrite(
        q,
        "replace what --out holds of another dataset (else refused); a dataset this release prepared "
        "there is continued, its finished masks kept",
    )
    add_pool_workers(q)
    add_quiet(q)
    q.set_defaults(fn=cmd_prepare)


def add_prepare(sub: Any) -> None:
    """`wsss prepare`."""
    s = sub.add_parser("prepare", help="convert VOC+SBD, COCO or a custom folder to the dataset layout")
    prep = s.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    q = prep.add_parser("voc", help="VOC 2012 devkit + SBD -> SegmentationClassAug, train_aug, cls_labels.npy")
    q.add_argument("--voc", required=True, help="VOCdevkit (or VOCdevkit/VOC2012)")
    q.add_argument("--sbd", default=None, help="SBD benchmark_RELEASE (or its dataset/); omit for VOC alone")
    q.add_argument("--out", required=True, help="output dataset root")
    # --image-mode / --label-source: the names shared with `prepare folder`
    add_image_mode(q)
    labels_help = "cls_labels.npy from the masks (default) or the Annotations XML (PSA's file; auto: XML if present)"
    q.add_argument(
        "--label-source", dest="label_source", choices=("mask", "xml", "auto"), default="mask", help=labels_help
    )
    _add_converter_options(q)
    q = prep.add_parser("coco", help="COCO instances json -> VOC-style masks (81 classes), splits, cls_labels.npy")
    q.add_argument("--coco", required=True, help="folder with annotations/ and train2014/, val2014/")
    q.add_argument("--out", required=True, help="output dataset root")
    q.add_argument("--year", default="2014", help="COCO release year of the folder names (default 2014)")
    q.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to convert (default: train val)")
    q.add_argument("--val-part", type=int, default=5000, help="size of the val_part subset (0 = none)")
    add_image_mode(q)
    _add_converter_options(q)
    q = prep.add_parser(
        "folder",
        help="a folder of images + a CSV/txt of image labels (+ optional masks)",
        description="A VOC-layout dataset from your own photos. Labels file: a CSV with the header "
        "'image,labels' and one row per photo: its file name (or stem), then its classes separated by ';' "
        "(e.g. 'a.jpg,cat;dog'; empty: no foreground class); or a CSV 'image,<class>,<class>,...' of 0/1 "
        "columns; or a .txt of lines '<image> <class> <class> ...' (names or indices 1..C-1). Classes file: "
        "one name a line, background first; a mask pixel k is the class on line k (0 = background, "
        "255 = ignore). Every input is checked before anything is written.",
    )
    q.add_argument("--images", required=True, help="folder of images (id = file stem)")
    q.add_argument(
        "--labels",
        default=None,
        help="labels file: .csv 'image,labels' with classes separated by ';' (a.jpg,cat;dog), .csv "
        "'image,<class>,...' of 0/1, or .txt '<image> <class> ...'; or a COCO .json file or a folder of LabelMe "
        ".json files, each photo labelled with the classes drawn in it; without it every image is taken unlabelled, "
        "for `wsss tag` to label from CLIP scores",
    )
    q.add_argument("--classes", required=True, help="class names, one a line, background first")
    q.add_argument("--out", required=True, help="output dataset root")
    q.add_argument(
        "--masks",
        default=None,
        metavar="PATH",
        help="optional masks of some or all images: a folder of <photo stem>.png class-index masks, a COCO "
        ".json file (polygons, RLE), a CVAT 'Segmentation mask 1.1' export folder (labelmap.txt, "
        "SegmentationClass/) or a folder of LabelMe .json files; the format is told from what is given "
        "(docs/datasets.md#masks-from-labelling-tools)",
    )
    q.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share of the masked images in val.txt (default 0.2 with --masks; at most half of them: the rest stay "
        "in train); without --masks a share of all the images (default 0: training then runs without validation)",
    )
    add_overwrite(
        q,
        "replace the dataset --out holds (else refused): the result is a fresh run's; an input inside "
        "what it replaces (e.g. --masks OUT/SegmentationClass) is refused, never deleted",
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the val split's draw (default 0)")
    add_image_mode(q)
    add_quiet(q)
    q.set_defaults(fn=cmd_prepare)


# wsss.data.fetch.RELEASES' names, written out: the parser imports no data code (tests/data/test_fetch.py
# checks that the two agree)
FETCH_DATASETS = ("voc2012", "sbd", "coco2014")


def add_data(sub: Any) -> None:
    """`wsss data fetch`."""
    s = sub.add_parser("data", help="download an official dataset, check, unpack and prepare it (`wsss data fetch`)")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser(
        "fetch",
        help="download VOC 2012, SBD or COCO 2014 (or take --archive), check its checksum, unpack, prepare",
        description="Download an official release from its host (resuming an interrupted download), check it against "
        "its published checksum, unpack it into --raw (atomically; an archive member that would land outside is "
        "refused) and run `wsss prepare voc` or `wsss prepare coco` into --out. VOC 2012 is prepared with SBD "
        "whenever both are unpacked in the same --raw, whichever was fetched last (then train_aug has its 10,582 "
        "ids). A release unpacked earlier is kept; --overwrite unpacks it again.",
    )
    q.add_argument(
        "dataset",
        choices=FETCH_DATASETS,
        help="voc2012 (VOCtrainval_11-May-2012.tar), sbd (benchmark.tgz) or coco2014 (train2014.zip, "
        "val2014.zip, annotations_trainval2014.zip)",
    )
    q.add_argument(
        "--raw",
        default="data/raw",
        help="folder of the downloads (RAW/downloads) and unpacked releases (default data/raw)",
    )
    q.add_argument(
        "--out", default=None, help="the prepared dataset (default: the presets' data.root: data/VOC2012, data/COCO)"
    )
    q.add_argument(
        "--archive",
        action="append",
        default=None,
        metavar="PATH",
        help="an archive you already have, instead of the download (coco2014: one per file, matched by "
        "name: train2014.zip, val2014.zip, annotations_trainval2014.zip); checked against the published "
        "checksum",
    )
    q.add_argument(
        "--sha256",
        default=None,
        metavar="HEX",
        help="check the one --archive against this SHA-256 instead of the published checksum",
    )
    q.add_argument("--no-verify", action="store_true", help="use --archive files unchecked")
    add_overwrite(q, "unpack again over a release unpacked earlier in --raw")
    q.add_argument("--no-prepare", action="store_true", help="download and unpack only")
    add_image_mode(q)
    add_pool_workers(q)
    add_quiet(q)
    q.set_defaults(fn=cmd_data_fetch)
