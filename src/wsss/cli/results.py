"""The commands that read results: ``wsss eval``, ``report``, ``viz``."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from wsss.cli.options import (
    add_data_root,
    add_run_options,
    add_run_overrides,
    override_words,
    processes_of,
)


def cmd_eval(args: argparse.Namespace) -> int:
    from wsss.core.errors import UsageError
    from wsss.core.files import atomic_write, check_output_file
    from wsss.evaluation import evaluate

    if args.json:
        check_output_file(args.json)  # before the evaluation: a folder given as --json is refused at once
    if args.masks is not None:
        from wsss.evaluation.by_name import evaluate_by_name, scored_line

        if args.classes is None or args.data_root is not None or args.split is not None:
            raise UsageError("wsss eval: --masks takes --classes FILE (the class list), not --data-root / --split")
        result = evaluate_by_name(args.pred_dir, args.masks, args.classes, pseudo=args.pseudo)
        print(scored_line(result.meta, result.n_images))
    elif args.data_root is None or args.split is None or args.classes is not None:
        raise UsageError("wsss eval: give --data-root DIR --split NAME (a dataset), or --masks M --classes FILE")
    else:
        result = evaluate(args.pred_dir, args.data_root, args.split, pseudo=args.pseudo)
    print(result.format_table())
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(result.to_json(), f, indent=2)
        print(f"metrics written to {args.json}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from wsss.report import write_report

    path = write_report(
        args.run, split=args.split, data_root=args.data_root, max_images=args.max_images, overrides=override_words(args)
    )
    print(f"report: {path}")
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    ids = [i for i in args.ids.replace(",", " ").split()] if args.ids else []
    classes = [c for c in args.classes.replace(",", " ").split()] if args.classes else []
    if args.image is not None:  # one image: one process (a rank of torchrun other than 0 has nothing to do)
        from wsss.report.viz import write_viz

        if int(os.environ.get("RANK", "0")) == 0:
            for path, _ in write_viz(
                args.run,
                image=args.image,
                out=args.out,
                classes=classes,
                checkpoint=args.checkpoint,
                overrides=override_words(args),
            ):
                print(path)
        return 0
    with processes_of(args):  # the workers start before this process imports the model code
        from wsss.report.viz import write_viz

        written = write_viz(
            args.run,
            ids=ids,
            split=args.split,
            out=args.out,
            classes=classes,
            data_root=args.data_root,
            checkpoint=args.checkpoint,
            overrides=override_words(args),
            progress=not args.quiet,
        )
    for path, _ in written:
        print(path)
    return 0


def add_eval(sub: Any) -> None:
    """`wsss eval`."""
    s = sub.add_parser("eval", help="mIoU table and co-occurrence diagnostics of a folder of label PNGs")
    s.add_argument("pred_dir", help="folder of <id>.png label maps (e.g. RUN/predictions/val)")
    s.add_argument("--data-root", default=None, help="dataset root with the ground-truth masks")
    s.add_argument("--split", default=None, help="split whose ids are scored (an id listed twice: once, a warning)")
    s.add_argument(
        "--masks",
        default=None,
        help="instead of a dataset: masks as `wsss prepare folder --masks` "
        "takes them (PNG folder, COCO .json, CVAT, LabelMe), matched to predictions by name",
    )
    s.add_argument("--classes", default=None, help="with --masks: the class list, one name a line, background first")
    s.add_argument("--pseudo", action="store_true", help="score pseudo labels (255 = left undecided)")
    s.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    s.set_defaults(fn=cmd_eval)


def add_report(sub: Any) -> None:
    """`wsss report`."""
    s = sub.add_parser("report", help="HTML report of a run: metrics, curves, image grids")
    s.add_argument("run", help="run directory")
    s.add_argument(
        "--split",
        default=None,
        help="the one split to show (default: each split the run has CAMs, "
        "seeds, pseudo labels or predictions of, the val split first; none: the val split)",
    )
    add_data_root(s)
    s.add_argument(
        "--max-images", type=int, default=12, help="images in the grid of each split, worst first (default 12)"
    )
    add_run_overrides(s)
    s.set_defaults(fn=cmd_report)


def add_viz(sub: Any) -> None:
    """`wsss viz`."""
    s = sub.add_parser("viz", help="image grids (image, GT, CAMs, pseudo label, prediction) as PNGs")
    s.add_argument("run", help="run directory")
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--ids", help="ids of the split, e.g. val_00008,val_00022")
    what.add_argument("--image", help="any image file: the model is run on it")
    s.add_argument("--split", default=None, help="split of --ids (default: the run's val split)")
    s.add_argument("--out", default=None, help="output folder (default: RUN/viz)")
    s.add_argument(
        "--classes",
        default=None,
        help="draw the CAMs of these classes (default: the image's "
        "labels; for --image the classes the classifier finds)",
    )
    add_run_options(s)
    s.set_defaults(fn=cmd_viz)
