"""``wsss export``: voc-test, onnx, masks."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from wsss.cli.options import add_checkpoint, add_data_root, add_overwrite, add_run_overrides, override_words
from wsss.cli_common import add_quiet
from wsss.core.choices import MASK_FORMATS  # imports nothing: building the parser imports no data code


def cmd_export_voc_test(args: argparse.Namespace) -> int:
    from wsss.runs.export import export_voc_test

    res = export_voc_test(
        args.run,
        split=args.split,
        out=args.out,
        data_root=args.data_root,
        source=args.source,
        overrides=override_words(args),
    )
    if res.not_voc_test:
        print(
            f"warning: this is not VOC 2012's test set ({res.not_voc_test}), so the evaluation server would reject it",
            file=sys.stderr,
        )
        print(f"wrote {res.path} (in the VOC server's layout; not VOC 2012's test set)")
    else:
        print(f"wrote {res.path}: VOC 2012's {res.n_ids:,} test ids; upload it to the PASCAL VOC evaluation server")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from wsss.runs.export_onnx import export_onnx

    res = export_onnx(
        args.run, args.out, overwrite=args.overwrite, checkpoint=args.checkpoint, overrides=tuple(override_words(args))
    )
    print(
        f"wrote {res.path}: the segmentation network of a {res.method} run ({len(res.class_names)} classes); "
        "its metadata_props state the input's normalisation and the class names (docs/export.md)"
    )
    return 0


def cmd_export_masks(args: argparse.Namespace) -> int:
    from wsss.runs.export_masks import export_masks

    res = export_masks(
        args.src,
        args.mask_format,
        args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
        image_url=args.image_url,
    )
    for warning in res.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    back = res.masks_path or "Label Studio's JSON export of the project"
    print(
        f"wrote the masks of {res.photos} photo(s) for {res.format} in {res.out}: import them in the tool, correct "
        f"them, and give its export to --masks (as it is, this export reads back as --masks {back})"
    )
    return 0


def add_export(sub: Any) -> None:
    """`wsss export`."""
    s = sub.add_parser(
        "export", help="export predictions for an evaluation server or a labelling tool, or the network as ONNX"
    )
    exp = s.add_subparsers(dest="format", required=True, metavar="FORMAT")
    q = exp.add_parser("voc-test", help="zip for the PASCAL VOC server (results/VOC2012/Segmentation/comp6_test_cls)")
    q.add_argument("run", help="run directory holding predictions/<split>/")
    q.add_argument("--split", default="test", help="split to export (default test: VOC 2012's 1,456 test ids)")
    q.add_argument("--out", default=None, help="zip file (default: RUN/export/voc2012_<split>.zip)")
    add_data_root(q)
    q.add_argument("--source", default="predictions", help="folder of RUN with the PNGs (e.g. predictions_crf)")
    add_run_overrides(q)
    q.set_defaults(fn=cmd_export_voc_test)
    q = exp.add_parser("onnx", help="the run's segmentation network as an ONNX file (docs/export.md)")
    q.add_argument("run", help="run directory of a method with a segmentation network (e.g. deeplab)")
    q.add_argument("--out", required=True, help="the .onnx file to write")
    add_overwrite(q, "replace an existing --out")
    add_checkpoint(q)
    add_run_overrides(q)
    q.set_defaults(fn=cmd_export_onnx)
    add_export_masks(exp)


def add_export_masks(exp: Any) -> None:
    """`wsss export masks`."""
    q = exp.add_parser(
        "masks", help="masks as a labelling tool's pre-annotations: COCO, CVAT, LabelMe, Label Studio (docs/export.md)"
    )
    q.add_argument(
        "src",
        metavar="SRC",
        help="a route's folder (OUT of wsss route) or a run's predictions folder (RUN/predictions/<split>)",
    )
    q.add_argument(
        "--format", required=True, choices=MASK_FORMATS, dest="mask_format", help="the tool to import them in"
    )
    q.add_argument("--out", required=True, help="the folder to write the export in (outside SRC)")
    add_overwrite(q, "replace the files of an earlier export in --out")
    q.add_argument(
        "--image-url",
        default=None,
        help="labelstudio: what comes before the photo's file name in a "
        "task's data.image (default: /data/local-files/?d=, Label Studio's local files)",
    )
    add_quiet(q)
    q.set_defaults(fn=cmd_export_masks)
