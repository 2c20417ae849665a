"""The ``wsss`` command line: a thin layer over the public API (docs/cli.md).

Every command is one library call. A user error (bad data, bad config, a missing file) fails with a message
naming the file and the problem and a non-zero exit code; an unexpected exception shows its traceback.
``python -m wsss``, ``python -m wsss.cli`` and ``torchrun -m wsss train ...`` all run ``main``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from wsss.cli_common import Parser, add_overrides, add_quiet, take_overrides
from wsss.core.choices import IMAGE_MODES, MASK_FORMATS  # imports nothing: building the parser imports no data code

EPILOG = "Docs: README.md and the manual in docs/ (make docs builds it). Each command has --help."


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected numbers like '1.0,1.25,1.5', got {text!r}") from e


def _setting(key: str, parse: Callable[[str], Any], each: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` for a flag that sets the config key ``key``: ``parse``, then the schema's one
    check of that key (``wsss.core.config.check_value``; ``each``: of every value of a list), so a flag and
    a config refuse the same values."""

    def convert(text: str) -> Any:
        from wsss.core.config import check_value
        from wsss.core.errors import ConfigError

        value = parse(text)
        try:
            for v in value if each else [value]:
                check_value(key, v)
            return value
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    convert.__name__ = key  # argparse names the type in "invalid <name> value"
    return convert


def add_setting(
    s: argparse.ArgumentParser, flag: str, key: str | tuple[str, ...], parse: Callable[[str], Any], **kw: Any
) -> None:
    """A typed flag that is shorthand for the ``KEY=VALUE`` word of the config key ``key`` (``--bkg-thre 0.3`` is
    ``cam.bkg_thre=0.3``; a tuple of keys: one word per element of the value, ``--levels 0.35/0.1`` is
    ``cam.high_thre=0.35 cam.low_thre=0.1``): checked as the config checks it (:func:`_setting`), and turned into
    its words by :func:`override_words`, which go the one way every override goes (the flag's dest and key are
    kept in ``args.settings``)."""
    action = s.add_argument(flag, type=_setting(key, parse) if isinstance(key, str) else parse, default=None, **kw)
    s.set_defaults(settings={**(s.get_default("settings") or {}), action.dest: key})


def override_words(args: argparse.Namespace) -> list[str]:
    """The ``KEY=VALUE`` words of a command: its positional words, then those its typed flags stand for
    (:func:`add_setting`), so a flag given wins over a word of the same key. A command that reads a run merges
    them over the run's saved config (``load_run(..., overrides=...)``), one that reads a config over the config."""
    words = list(getattr(args, "overrides", []))
    for dest, key in getattr(args, "settings", {}).items():
        value = getattr(args, dest)
        if value is None:
            continue
        for k, v in zip((key,) if isinstance(key, str) else key, (value,) if isinstance(key, str) else value):
            words.append(f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}")  # JSON is YAML
    return words


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from e


def _pair(text: str) -> tuple[float, float]:
    """'0.35/0.1' -> (0.35, 0.1): a (high, low) pair of levels."""
    try:
        high, low = (float(v) for v in text.split("/"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a high/low pair like '0.35/0.1', got {text!r}") from e
    if not 0.0 <= low <= high <= 1.0:
        raise argparse.ArgumentTypeError(f"a pair needs 0 <= low <= high <= 1, got {text!r}")
    return high, low


def _probability(text: str) -> float:
    """'0.5' -> 0.5, a threshold on a probability: 0 < p < 1 (at 0 or 1 every class or none would pass)."""
    try:
        p = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a probability like 0.5, got {text!r}") from e
    if not 0.0 < p < 1.0:
        raise argparse.ArgumentTypeError(f"a threshold needs 0 < p < 1, got {text!r}")
    return p


def _score(text: str) -> float:
    """'0.1' -> 0.1, a threshold on a score in [0, 1] (a softmax): both ends are legal (0 tags every class,
    1 only the best one, which ``wsss tag`` keeps unless --allow-empty)."""
    try:
        p = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a score like 0.1, got {text!r}") from e
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"a score threshold needs 0 <= t <= 1, got {text!r}")
    return p


def cmd_synth(args: argparse.Namespace) -> int:
    from wsss.data import generate_synthetic

    given = {"context_with": args.context_with, "context_without": args.context_without}
    context = {k: v for k, v in given.items() if v is not None}  # unset: the design's defaults
    counts = generate_synthetic(args.out, n_train=args.train, n_val=args.val, size=args.size, seed=args.seed,
                                n_workers=args.workers, overwrite=args.overwrite, **context)  # fmt: skip
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from wsss.data import check_dataset

    report = check_dataset(args.root, args.split)
    print(report.format())
    return 0 if report.ok else 1


def cmd_train(args: argparse.Namespace) -> int:
    from wsss.core.config import resolve_paths
    from wsss.engine.launch import train
    from wsss.runs.train_checks import check_training_data

    cfg = _load_checked(args.config, args.overrides)  # a wrong option refused before the data checks, naming its file
    _refuse_a_moved_run(args.config, args.overrides, cfg.run.dir)
    typed = cfg.data.root
    resolve_paths(cfg)  # the run stores absolute input paths: `wsss cam RUN` works from anywhere
    if typed != cfg.data.root:
        print(f"data.root {typed} -> {cfg.data.root}", file=sys.stderr)
    if not args.skip_check:  # a failed check: its report, then one error line naming data.root (exit 1)
        check_training_data(cfg, progress=not args.quiet)
    if cfg.run.threads > 0:  # the whole command runs with run.threads (the trainer restores what it found)
        import torch

        torch.set_num_threads(cfg.run.threads)
    out = train(cfg, progress=not args.quiet, allow_config_change=args.allow_config_change, overwrite=args.overwrite)
    print(f"run {cfg.run.dir}: step {out['step']}" + (f", best val mIoU {out['best']:.2f}" if out.get("best") else ""))
    return 0


def _refuse_a_moved_run(config: str, overrides: Sequence[str], run_dir: str) -> None:
    """UsageError for ``wsss train RUN/config.yaml`` (a run's own config, beside its checkpoints) whose ``run.dir``
    is another folder: the run was moved or copied (to another machine, where its absolute run.dir is no run), and
    training would start a new run there, or resume the original, instead of the one named. A ``run.dir=``
    override says which is meant."""
    from pathlib import Path

    from wsss.core.errors import UsageError

    folder = Path(config).parent
    if Path(config).name != "config.yaml" or not (folder / "checkpoints").is_dir():
        return
    if any(o.split("=", 1)[0] == "run.dir" for o in overrides) or Path(run_dir).resolve() == folder.resolve():
        return
    raise UsageError(
        f"{config}: the config of the run {folder}, but its run.dir is {run_dir} (a run moved or copied?); pass "
        f"run.dir={folder} to resume this run, or another run.dir to start a new one from its settings"
    )


def _load(args: argparse.Namespace):
    """The run of a command that reads one: its saved config, the command's words over it (:func:`override_words`)."""
    from wsss.runs.run import load_run

    return load_run(args.run, checkpoint=args.checkpoint, overrides=override_words(args))


def _processes(args: argparse.Namespace):
    """The processes of a per-id command: torchrun's, or ``--workers N`` local ones (runs/shard.py)."""
    from wsss.runs.shard import job_processes

    return job_processes(args.workers, args.argv)


def cmd_cam(args: argparse.Namespace) -> int:
    _check_source(args)
    with _processes(args) as procs, _photos_hint(args):
        from wsss.runs.jobs import run_cam

        run = _load(args)
        if args.images:
            from wsss.runs.photos import cam_photos

            out = cam_photos(run, args.images, args.out, overwrite=args.overwrite, progress=not args.quiet,
                             overlay=args.overlay)  # fmt: skip
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
            raise UsageError(f"{given[0]} goes with --images (photos that are not a dataset); a split's outputs "
                             "are written into the run directory")  # fmt: skip
        return
    given = [flag for flag, value in (("--split", args.split), ("--data-root", args.data_root),
                                      ("--labelled-only", getattr(args, "labelled_only", False))) if value]  # fmt: skip
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
        raise DataError(f"{e}; to read a folder of photos that is not a dataset, use `wsss {args.command} {args.run} "
                        "--images DIR --out DIR`") from e  # fmt: skip


def _overlays_note(args: argparse.Namespace, out: Any) -> str:
    return f", overlays in {out / 'overlay'}" if args.images and args.overlay else ""


def cmd_sweep_bkg(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from wsss.evaluation.bkg_sweep import sweep_run_bkg

    res, written = sweep_run_bkg(
        args.run, args.split, data_root=args.data_root, thresholds=args.thresholds, pairs=args.pairs,
        json_path=args.json, progress=None if args.quiet else lambda ids: tqdm(ids, desc=f"sweep {args.split}"),
        overrides=override_words(args),
    )  # fmt: skip
    own = tuple(res["config_pair"])
    config_thre = res["config_bkg_thre"]
    for t, m in zip(res["thresholds"], res["miou"]):
        mark = "  <- best" if t == res["best_thre"] else ("  (config)" if t == config_thre else "")
        print(f"  bkg {t:5.2f}  mIoU {100 * m:5.1f}{mark}")
    print("two-level labels (cam.high_thre / cam.low_thre: class above high, background at or below low):")
    for r in res["pairs"]:
        mark = "  (config)" if (r["high"], r["low"]) == own else ""
        print(f"  high {r['high']:4.2f} low {r['low']:4.2f}  mIoU where decided {100 * r['miou_decided']:5.1f}"
              f"  decided {100 * r['decided']:5.1f} %{mark}")  # fmt: skip
    print(f"best background {res['best_thre']:g} (mIoU {100 * res['best_miou']:.1f}); written {written}")
    return 0


def cmd_pseudo(args: argparse.Namespace) -> int:
    with _processes(args) as procs:
        from wsss.runs.jobs import run_pseudo

        out = run_pseudo(
            _load(args), args.split, refine=args.refine, root=args.data_root, overwrite=args.overwrite,
            progress=not args.quiet, affinity_run=args.affinity_run, saliency=args.saliency,
        )  # fmt: skip
    if procs.is_main:
        print(f"pseudo labels in {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    _check_source(args)
    with _processes(args) as procs, _photos_hint(args):
        from wsss.runs.jobs import run_predict

        run = _with_ensemble(args, _load(args))
        if args.images:
            from wsss.runs.photos import predict_photos

            out = predict_photos(
                run, args.images, args.out, crf=args.crf, overwrite=args.overwrite, progress=not args.quiet,
                overlay=args.overlay, save_probs=args.save_probs, tags_from=_tagger(args, run),
                tag_threshold=args.tag_threshold, tag_gate=args.tag_gate,
            )  # fmt: skip
        else:
            out = run_predict(
                run, args.split, root=args.data_root, crf=args.crf, overwrite=args.overwrite,
                progress=not args.quiet, save_probs=args.save_probs, labelled_only=args.labelled_only,
                tags_from=_tagger(args, run), tag_threshold=args.tag_threshold, tag_gate=args.tag_gate,
            )  # fmt: skip
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


def cmd_route(args: argparse.Namespace) -> int:
    from wsss.pipelines.route import RouteOptions, run_route

    defaults = {k: v for k, v in (("seg", args.seg), ("folds", args.folds)) if v is not None}  # else RouteOptions'
    run_route(RouteOptions(
        data=args.data, out=args.out, labels=args.labels, classes=args.classes, masks=args.masks,
        classifier=args.classifier, stage=args.stage, overrides=args.overrides, crf_workers=args.crf_workers,
        images=args.images, overwrite=args.overwrite, progress=not args.quiet, plan_only=args.plan, clip=args.clip,
        dinov2=args.dinov2, rounds=args.rounds, abstain=args.abstain, **defaults,
    ))  # fmt: skip
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from wsss.runs.official_import import import_run

    out, layout = import_run(args.method, args.checkpoint, args.config, args.out, args.overrides,
                             overwrite=args.overwrite)  # fmt: skip
    print(f"run {out}: {args.method} from {args.checkpoint}: {layout.next_step.format(out=out)}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from wsss.runs.tag import tag_split

    summary = tag_split(
        _load(args), args.split, root=args.data_root, threshold=args.threshold, at_least_one=not args.allow_empty,
        labels_from=args.labels_from, overwrite=args.overwrite, progress=not args.quiet,
    )  # fmt: skip
    print(summary.format())
    return 0


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

    path = write_report(args.run, split=args.split, data_root=args.data_root, max_images=args.max_images,
                        overrides=override_words(args))  # fmt: skip
    print(f"report: {path}")
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    ids = [i for i in args.ids.replace(",", " ").split()] if args.ids else []
    classes = [c for c in args.classes.replace(",", " ").split()] if args.classes else []
    if args.image is not None:  # one image: one process (a rank of torchrun other than 0 has nothing to do)
        from wsss.report.viz import write_viz

        if int(os.environ.get("RANK", "0")) == 0:
            for path, _ in write_viz(args.run, image=args.image, out=args.out, classes=classes,
                                     checkpoint=args.checkpoint, overrides=override_words(args)):  # fmt: skip
                print(path)
        return 0
    with _processes(args):  # the workers start before this process imports the model code
        from wsss.report.viz import write_viz

        written = write_viz(args.run, ids=ids, split=args.split, out=args.out, classes=classes,
                            data_root=args.data_root, checkpoint=args.checkpoint, overrides=override_words(args),
                            progress=not args.quiet)  # fmt: skip
    for path, _ in written:
        print(path)
    return 0


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

    res = fetch(args.dataset, args.raw, args.out, archives=args.archive or (), sha256=args.sha256,
                verify=not args.no_verify, overwrite=args.overwrite, prepare=not args.no_prepare,
                image_mode=args.image_mode, workers=args.workers, progress=not args.quiet)  # fmt: skip
    if res.summary is not None:
        print(res.summary.format())
    for note in res.notes:
        print(f"note: {note}")
    return 0


def cmd_export_voc_test(args: argparse.Namespace) -> int:
    from wsss.runs.export import export_voc_test

    res = export_voc_test(args.run, split=args.split, out=args.out, data_root=args.data_root, source=args.source,
                          overrides=override_words(args))  # fmt: skip
    if res.not_voc_test:
        print(f"warning: this is not VOC 2012's test set ({res.not_voc_test}), so the evaluation server would "
              "reject it", file=sys.stderr)  # fmt: skip
        print(f"wrote {res.path} (in the VOC server's layout; not VOC 2012's test set)")
    else:
        print(f"wrote {res.path}: VOC 2012's {res.n_ids:,} test ids; upload it to the PASCAL VOC evaluation server")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from wsss.runs.export_onnx import export_onnx

    res = export_onnx(args.run, args.out, overwrite=args.overwrite, checkpoint=args.checkpoint,
                      overrides=override_words(args))  # fmt: skip
    print(f"wrote {res.path}: the segmentation network of a {res.method} run ({len(res.class_names)} classes); "
          "its metadata_props state the input's normalisation and the class names (docs/export.md)")  # fmt: skip
    return 0


def cmd_export_masks(args: argparse.Namespace) -> int:
    from wsss.runs.export_masks import export_masks

    res = export_masks(args.src, args.mask_format, args.out, overwrite=args.overwrite, progress=not args.quiet,
                       image_url=args.image_url)  # fmt: skip
    for warning in res.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    back = res.masks_path or "Label Studio's JSON export of the project"
    print(f"wrote the masks of {res.photos} photo(s) for {res.format} in {res.out}: import them in the tool, correct "
          f"them, and give its export to --masks (as it is, this export reads back as --masks {back})")  # fmt: skip
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from wsss.core.config import config_file, dump_config, dump_yaml, flat_preset
    from wsss.core.errors import UsageError
    from wsss.core.files import atomic_write, check_output_file

    if args.out is not None:  # refused before anything is read: a user's own preset is never replaced unasked
        out = check_output_file(args.out)
        if out.exists() and out.resolve() == config_file(args.config).resolve():
            raise UsageError(f"{out}: --out is the preset itself; write the result to another file")
        if out.exists() and not args.overwrite:
            raise UsageError(f"{out}: exists; pass --overwrite to replace it, or choose another --out")
    cfg = _load_checked(args.config, args.overrides)  # the method's options too
    if args.flat:
        what = " ".join([args.config, *args.overrides])
        text = f"# {what}: its _base_ merged in (wsss config show --flat)\n" + dump_yaml(
            flat_preset(args.config, args.overrides)
        )
    else:
        text = dump_config(cfg)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    with atomic_write(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}")
    return 0


def _load_checked(config: str, overrides: Sequence[str]) -> Any:
    """``load_config(config, overrides)`` with the method and its options checked (``check_method``): an error
    names the file, or the overrides when they brought it."""
    from wsss.core.config import load_config
    from wsss.methods import check_method

    check_method(load_config(config), config)
    cfg = load_config(config, overrides)
    if overrides:
        check_method(cfg, "command-line overrides")
    return cfg


def add_config(sub: argparse._SubParsersAction) -> None:
    """``wsss config show CONFIG [--flat] [--out FILE] [overrides]``: the full config a preset resolves to, or
    with ``--flat`` the preset in one file, its bases merged in (docs/configs.md)."""
    s = sub.add_parser("config", help="print the full config a preset resolves to (`wsss config show CONFIG`)")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser(
        "show", help="print CONFIG as YAML with its _base_ presets, the defaults and the overrides merged in",
    )  # fmt: skip
    q.add_argument("config", help="configs/<method>/<preset>.yaml, a shipped preset's scoped name "
                   "(wsss::cam/synthetic_cpu.yaml) or a run's config.yaml")  # fmt: skip
    q.add_argument("--flat", action="store_true",
                   help="the preset's own settings with its _base_ presets merged in, without the schema's "
                   "defaults: one file that needs none of the bases, to copy and edit")  # fmt: skip
    q.add_argument("--out", default=None, metavar="FILE", help="write the YAML to FILE (atomically) instead of stdout")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out FILE")
    add_overrides(q, "train.max_iters=100")
    q.set_defaults(fn=cmd_config_show)


def add_run_args(s: argparse.ArgumentParser, photos: bool = False) -> None:
    """The arguments of the commands that read a trained run (cam, pseudo, predict); ``photos``: also
    ``--images``, ``--out`` and ``--overlay`` for photos that are not a dataset, instead of ``--split``."""
    s.add_argument("run", help="run directory (holds config.yaml and checkpoints/)")
    s.add_argument("--split", required=not photos, help="split of the dataset to run on (e.g. train, val, test)")
    if photos:
        s.add_argument(
            "--images", nargs="+", default=None, metavar="DIR_OR_FILE",
            help="instead of --split: photos that are not a dataset, a folder of them and/or files (JPEG, PNG, "
            "WebP; EXIF orientation applied); each mask is --out/<file stem>.png, at the photo's size",
        )  # fmt: skip
        s.add_argument("--out", default=None, metavar="DIR",
                       help="with --images: the folder for the masks (not one of the photos' own folders); "
                       "refused if it holds masks of these photos, unless --overwrite")  # fmt: skip
        s.add_argument("--overlay", action="store_true",
                       help="with --images: also each photo with its mask's colours blended in, "
                       "--out/overlay/<stem>.jpg")  # fmt: skip
    add_data_root(s)
    add_checkpoint(s)
    add_device(s)
    s.add_argument("--overwrite", action="store_true",
                   help="redo ids whose output exists; also to replace outputs made with other settings (refused "
                   "without it: each output folder's .settings.json), the folder being cleared first")  # fmt: skip
    add_quiet(s)
    add_processes(s)
    add_run_overrides(s)


def add_data_root(s: argparse.ArgumentParser) -> None:
    """``--data-root`` of a command that reads a run (its dataset by default)."""
    s.add_argument("--data-root", default=None, help="dataset root (default: the run's data.root)")


def add_checkpoint(s: argparse.ArgumentParser, hidden: bool = False) -> None:
    """``--checkpoint`` of a command that loads a run's network (``hidden``: a run without one, CLIP-ES's)."""
    s.add_argument("--checkpoint", default="auto",
                   help=argparse.SUPPRESS if hidden else "best, last or a .pt path (default: best if any)")  # fmt: skip


def add_device(s: argparse.ArgumentParser) -> None:
    """``--device`` of a command that loads a run: shorthand for ``run.device=DEVICE``."""
    add_setting(s, "--device", "run.device", str, help="cpu, cuda, cuda:1 ...: run.device=DEVICE (default: the "
                "run's run.device)")  # fmt: skip


RUN_OVERRIDES = "cam.bkg_thre=0.3 infer.crf_workers=2"  # the example of the words of a command that reads a run


def add_run_overrides(s: argparse.ArgumentParser) -> None:
    """The ``KEY=VALUE`` words of a command that reads a run: merged over its saved config for this command."""
    add_overrides(s, RUN_OVERRIDES, what="run's saved config, for this command (the run's config.yaml is kept)")


def add_processes(s: argparse.ArgumentParser) -> None:
    """``--workers N`` of a per-id command: N processes sharing the ids (``_processes``, runs/shard.py)."""
    s.add_argument(
        "--workers", type=int, default=0, metavar="N",
        help="N local processes sharing the ids (CPUs; default: this one). On GPUs or nodes use "
        "`torchrun --nproc_per_node N -m wsss ...`: each rank takes its share",
    )  # fmt: skip


def add_pool_workers(s: argparse.ArgumentParser) -> None:
    """``--workers`` of a dataset converter (``wsss prepare``, ``wsss data fetch``): its pool of processes."""
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count; 0 = in-process)")


def add_image_mode(s: argparse.ArgumentParser) -> None:
    """``--image-mode`` of ``wsss prepare`` and ``wsss data fetch``: how the dataset holds the photos."""
    s.add_argument("--image-mode", dest="image_mode", choices=IMAGE_MODES, default="link",
                   help="how to place the images in JPEGImages: link (hard link, a copy across devices; default), "
                   "symlink, copy, none")  # fmt: skip


def add_synth(sub: Any) -> None:
    """`wsss synth`."""
    s = sub.add_parser("synth", help="write a synthetic co-occurrence dataset (VOC layout)")
    s.add_argument("out", help="output dataset root")
    s.add_argument("--train", type=int, default=800, help="training images (default 800)")
    s.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    s.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the generator (default 0)")
    s.add_argument("--workers", type=int, default=0, help="worker processes (0 = in-process)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the dataset OUT holds (its images, masks, split lists and labels)")  # fmt: skip
    s.add_argument(
        "--context-with", type=float, default=None,
        help="probability of the water (rails) band in an image with a boat (train) (default: the design's, 0.85)",
    )  # fmt: skip
    s.add_argument(
        "--context-without", type=float, default=None,
        help="probability of the water (rails) band in an image without a boat (train) (default: the design's, 0.10)",
    )  # fmt: skip
    s.set_defaults(fn=cmd_synth)


def add_check_data(sub: Any) -> None:
    """`wsss check-data`."""
    s = sub.add_parser("check-data", help="validate a dataset; exit 1 on problems")
    s.add_argument("root", help="dataset root (VOC layout)")
    s.add_argument("--split", default=None, help="check one split (default: every split file)")
    s.set_defaults(fn=cmd_check_data)


def add_train(sub: Any) -> None:
    """`wsss train`."""
    s = sub.add_parser("train", help="train (or resume) a run from a YAML config")
    s.add_argument("config", help="configs/<method>/<preset>.yaml")
    add_overrides(s)
    s.add_argument("--skip-check", action="store_true", help="do not run check-data before training")
    s.add_argument(
        "--allow-config-change", action="store_true",
        help="resume a run whose saved config.yaml differs from this command's settings (the change is "
        "recorded in RUN/config_changes.jsonl); without it such a resume is refused, naming the keys",
    )  # fmt: skip
    s.add_argument(
        "--overwrite", action="store_true",
        help="train into run.dir even when it is a folder holding files but no run (else refused): its config.yaml "
        "is replaced, a metrics.jsonl there is kept as metrics.jsonl.1",
    )  # fmt: skip
    add_quiet(s)
    s.set_defaults(fn=cmd_train)


def add_cam(sub: Any) -> None:
    """`wsss cam`."""
    s = sub.add_parser("cam", help="multi-scale + flip CAMs and CAM seeds of a trained run")
    add_run_args(s, photos=True)
    add_setting(s, "--scales", "infer.cam_scales", _floats,
                help="e.g. 1.0,0.5,1.5: infer.cam_scales=[...] (default: the run's infer.cam_scales)")  # fmt: skip
    add_setting(
        s, "--bkg-thre", "cam.bkg_thre", _number,
        help="background level of the seeds: cam.bkg_thre=T (default: the run's cam.bkg_thre); a level other than "
        "the seeds' folder holds rewrites every seed, from the saved CAMs",
    )  # fmt: skip
    s.set_defaults(fn=cmd_cam)


def add_sweep_bkg(sub: Any) -> None:
    """`wsss sweep-bkg`."""
    s = sub.add_parser("sweep-bkg", help="mIoU of a run's saved CAM seeds at many background levels (needs GT)")
    s.add_argument("run", help="run directory with cams/<split>/ (`wsss cam` first)")
    s.add_argument("--split", default="train", help="split whose CAMs are scored (default train)")
    add_data_root(s)
    s.add_argument("--thresholds", type=_setting("cam.bkg_thre", _floats, each=True), default=None,
                   help="e.g. 0.1,0.2,0.3 (default: 0.05 to 0.70)")  # fmt: skip
    s.add_argument(
        "--pairs", type=_pair, nargs="+", default=None,
        help="two-level (high/low) pairs to score, e.g. 0.7/0.25 0.35/0.1 (default: a grid from 0.7/0.25 down)",
    )  # fmt: skip
    s.add_argument("--json", default=None, help="output file (default: RUN/bkg_sweep/<split>.json)")
    add_device(s)
    add_quiet(s)
    add_run_overrides(s)
    s.set_defaults(fn=cmd_sweep_bkg)


class LazyChoices:
    """An argparse ``choices`` read from a registry when first needed (an argument to check, a help or
    error text to write), so that building the parser imports no model code: every command starts
    in a fraction of a second, and ``--workers N`` starts its workers before this process imports
    torch (runs/shard.py)."""

    def __init__(self, load: Callable[[], Sequence[str]]):
        self._load, self._names = load, None

    def _get(self) -> list[str]:
        if self._names is None:
            self._names = list(self._load())
        return self._names

    def __contains__(self, name: object) -> bool:
        return name in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _refiners() -> Sequence[str]:
    from wsss.methods import load_entry_points
    from wsss.runs.jobs import REFINERS  # the generic refiners; the methods register theirs

    load_entry_points()  # plugins of the entry-point group register their refiners too
    return sorted(REFINERS)


def _tag_gates() -> Sequence[str]:
    from wsss.runs.jobs import TAG_GATES

    return tuple(TAG_GATES)


def _import_choices() -> Sequence[str]:
    import wsss.methods  # noqa: F401 (the built-in methods register their import layouts)
    from wsss.runs.official_import import available_imports

    return available_imports()


def add_pseudo(sub: Any) -> None:
    """`wsss pseudo`."""
    s = sub.add_parser("pseudo", help="pseudo labels from the saved CAMs")
    add_run_args(s)
    s.add_argument(
        "--refine", choices=LazyChoices(_refiners), default="par", metavar="REFINER",
        help="how the CAMs become labels: %(choices)s (default par; see docs/getting-started.md, The commands)",
    )  # fmt: skip
    s.add_argument("--affinity-run", default=None, help="with --refine affinity: a run trained with method affinitynet")
    s.add_argument("--saliency", default=None, help="with --refine rca: directory of <id>.png saliency maps")
    add_setting(s, "--crf-workers", "infer.crf_workers", int, help="processes for the CPU refiners crf, psa, rca: "
                "infer.crf_workers=N (default: the run's infer.crf_workers)")  # fmt: skip
    add_setting(
        s, "--levels", ("cam.high_thre", "cam.low_thre"), _pair, metavar="HIGH/LOW",
        help="CAM levels of the pseudo labels, e.g. 0.35/0.1 (a pair scored by `wsss sweep-bkg`): class above HIGH, "
        "background at or below LOW, 255 between: cam.high_thre=HIGH cam.low_thre=LOW (default: the run's); "
        "--refine psa: the la / ha alphas whose background (1 - cam)^alpha crosses the CAM there, --refine "
        "affinity: the walk's alpha at HIGH; with --overwrite to redo existing labels",
    )  # fmt: skip
    s.set_defaults(fn=cmd_pseudo)


def add_predict(sub: Any) -> None:
    """`wsss predict`."""
    s = sub.add_parser("predict", help="segmentation masks (multi-scale + flip, optional DenseCRF)")
    add_run_args(s, photos=True)
    add_setting(s, "--scales", "infer.scales", _floats,
                help="e.g. 1.0,1.25,1.5: infer.scales=[...] (default: the run's infer.scales)")  # fmt: skip
    s.add_argument("--crf", action="store_true", help="DenseCRF over the classes that can appear")
    add_setting(s, "--crf-workers", "infer.crf_workers", int,
                help="CRF processes: infer.crf_workers=N (default: the run's infer.crf_workers)")  # fmt: skip
    s.add_argument(
        "--ensemble", nargs="+", default=[], metavar="RUN",
        help="more runs of the same classes (e.g. the stage trained again with other seeds) whose softmax "
        "probabilities are averaged with RUN's at each scale and flip (predictions_ensN/, N networks in all; its "
        ".settings.json names the members: another ensemble of N there is refused without --overwrite)",
    )  # fmt: skip
    s.add_argument("--save-probs", action="store_true",
                   help="also write probs/<split>/<id>.npy (float16 softmax); an id is done when its mask and its "
                   "probabilities are both there")  # fmt: skip
    s.add_argument("--labelled-only", action="store_true",
                   help="name only the background and each photo's image labels (training photos: the labels of a "
                   "second round; predictions_labelled/)")  # fmt: skip
    s.add_argument(
        "--tags-from", default=None, metavar="RUN",
        help="a classifier run (cam, seco, rca, sccam: e.g. the route's cls/) that tags each photo: its prediction "
        "names only the background and the classes the classifier finds (predictions_tagged/); for photos whose "
        "labels are not known (val, test, your own)",
    )  # fmt: skip
    s.add_argument("--tag-threshold", type=_probability, default=None, metavar="P",
                   help="a class is a tag where the classifier's sigmoid reaches P (default 0.5)")  # fmt: skip
    s.add_argument(
        "--tag-gate", choices=LazyChoices(_tag_gates), default="hard", metavar="GATE",  # a metavar: no import here
        help="hard (default): the prediction names only the tags at --tag-threshold; soft: no threshold, each "
        "class's probability is multiplied by the classifier's probability of it (predictions_tagged_soft/)",
    )  # fmt: skip
    s.set_defaults(fn=cmd_predict)


def add_route(sub: Any) -> None:
    """`wsss route` (pipelines/route.py)."""
    s = sub.add_parser(
        "route", help="photos to masks in one command: the advised route, its choices made from the data",
        description="Run (or continue) the advised route on a dataset, or on a folder of photos with --labels and "
        "--classes: the classifier, its CAMs, PAR pseudo labels, the DeepLab stage, every photo's mask with the dense "
        "CRF (OUT/masks), the reports; with --clip (and --dinov2) CLIP-ES or WeCLIP+ instead of the classifier; each "
        "choice printed with its reason (docs/own-photos.md).",
    )  # fmt: skip
    s.add_argument("data", help="a dataset made by `wsss prepare`, or a folder of photos (with --classes, and "
                   "--labels or --clip)")  # fmt: skip
    add_overrides(s, "cls.train.epochs=24 seg.train.lr=0.001 run.seed=1",
                  what="runs (cls.KEY=VALUE: the classifier's, seg.KEY=VALUE: the DeepLab stage's, clip.KEY=VALUE: "
                  "the CLIP method's, a bare KEY=VALUE: all)")  # fmt: skip
    s.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="the route's folder (its runs, record and summary); the same command again continues it",
    )
    s.add_argument("--labels", default=None, metavar="FILE", help="with a folder of photos: its image labels")
    s.add_argument("--classes", default=None, metavar="FILE", help="with a folder of photos: the class list")
    s.add_argument("--masks", default=None, metavar="PATH",
                   help="with a folder of photos: masks of some of them, in a format `wsss prepare folder --masks` "
                   "reads (class-index PNGs, COCO .json, CVAT or LabelMe export)")  # fmt: skip
    s.add_argument("--clip", default=None, metavar="FILE",
                   help="a CLIP ViT-B/16 file or folder (clip.model.pretrained=FILE): CLIP-ES, or WeCLIP+ with "
                   "--dinov2; tags photos given without --labels (docs/own-photos.md#with-clip-files)")  # fmt: skip
    s.add_argument("--dinov2", default=None, metavar="FILE",
                   help="a DINOv2 ViT-S/14 file or folder (clip.options.dino_weights=FILE): with --clip, WeCLIP+ "
                   "trained on the photos")  # fmt: skip
    s.add_argument("--classifier", default="auto", metavar="NAME",
                   help="auto (default: by classes and photos per class), rca, cam, or a preset")  # fmt: skip
    s.add_argument("--seg", default=None, metavar="PRESET",
                   help="the DeepLab stage's preset (default wsss::deeplab/real_cpu.yaml)")  # fmt: skip
    s.add_argument("--stage", default="auto", choices=("auto", "mixed", "masks"),
                   help="the DeepLab stage on the weak labels with the masks in their place (mixed) or on the "
                   "masks alone (masks); auto (default): the better over --folds folds of masked photos")  # fmt: skip
    s.add_argument("--folds", type=int, default=None, metavar="N",
                   help="folds of the masked train photos that choose the stage (default 3; each costs two "
                   "trainings of the stage; 0: no choice, the mixed stage)")  # fmt: skip
    s.add_argument("--crf-workers", type=_setting("infer.crf_workers", int), default=None, metavar="N",
                   help="processes of the dense CRF (infer.crf_workers; default: each run's own)")  # fmt: skip
    s.add_argument("--rounds", type=int, default=0, metavar="N",
                   help="self-training: N more DeepLab stages, each on its predecessor's masks of the train photos "
                   "(with the CRF, only each photo's labelled classes); default 0 "
                   "(docs/own-photos.md#which-route)")  # fmt: skip
    s.add_argument("--abstain", action="store_true",
                   help="labels that abstain: the stage learns only the pixels where PAR, the CAM's thresholds and "
                   "the CRF agree (wsss pseudo --refine agree)")  # fmt: skip
    s.add_argument("--images", nargs="+", default=None, metavar="DIR_OR_FILE",
                   help="new photos (not a dataset): their masks into OUT/new_masks at the end")  # fmt: skip
    s.add_argument("--plan", action="store_true", help="check every input, print the choices and the steps as "
                   "commands with an estimate of each one's time; run nothing")  # fmt: skip
    s.add_argument("--overwrite", action="store_true",
                   help="make the route again with settings other than OUT/route.json's (the files wsss made in OUT "
                   "are replaced; nothing you gave, nor a file of yours there, is touched)")  # fmt: skip
    add_quiet(s)
    s.set_defaults(fn=cmd_route)


def add_import(sub: Any) -> None:
    """`wsss import`."""
    s = sub.add_parser("import", help="an official checkpoint as a run directory (for cam / predict / eval)")
    s.add_argument(
        "method", choices=LazyChoices(_import_choices), metavar="METHOD",
        help="%(choices)s: the import layouts the methods register (wsss.methods.imports): seco, toco (our cam "
        "method, model.decoder=largefov), rca or sccam (a round's classifier; PSA's res38_cls.pth as round 0) "
        "official checkpoints; clip_es: a CLIP weight file (ViT-B-16.pt), no training; a plugin's own",
    )  # fmt: skip
    s.add_argument("checkpoint", help="the official .pth (state dict, with or without 'module.'); clip_es: CLIP")
    s.add_argument("--config", required=True, help="the preset it was trained with (configs/seco/voc.yaml)")
    s.add_argument("--out", required=True, help="run directory to write (a new or empty folder)")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out that holds files (a run's checkpoints/ is kept, moved aside)",
    )
    add_overrides(s, "data.root=/d (the dataset gives the class names)")
    s.set_defaults(fn=cmd_import)


def add_tag(sub: Any) -> None:
    """`wsss tag`."""
    s = sub.add_parser(
        "tag", help="image labels of a split from CLIP zero-shot scores and the class names (a CLIP-ES run)",
        description="Writes the dataset's cls_labels.npy for the split's photos, and tags.csv (each photo's "
        "labels and scores, to read and edit) beside it; prints precision/recall against the masks where "
        "photos have them. Route: prepare folder (no --labels) -> import clip_es -> tag -> cam -> pseudo.",
    )  # fmt: skip
    s.add_argument("run", help="CLIP-ES run directory (wsss import clip_es WEIGHTS ...)")
    s.add_argument("--split", required=True, help="split of the dataset to tag (e.g. train)")
    add_data_root(s)
    add_checkpoint(s, hidden=True)
    add_device(s)
    s.add_argument(
        "--threshold", type=_score, default=0.1,
        help="a class is a label when its score (softmax over the class and background prompts) is at least "
        "this (default 0.1)",
    )  # fmt: skip
    s.add_argument("--allow-empty", action="store_true", help="no label where no class reaches the threshold "
                   "(default: the best class is always a label)")  # fmt: skip
    s.add_argument("--labels-from", default=None, help="write the labels column of an edited tags.csv instead")
    s.add_argument("--overwrite", action="store_true", help="replace labels the split's photos already have")
    add_quiet(s)
    add_run_overrides(s)
    s.set_defaults(fn=cmd_tag)


def add_eval(sub: Any) -> None:
    """`wsss eval`."""
    s = sub.add_parser("eval", help="mIoU table and co-occurrence diagnostics of a folder of label PNGs")
    s.add_argument("pred_dir", help="folder of <id>.png label maps (e.g. RUN/predictions/val)")
    s.add_argument("--data-root", default=None, help="dataset root with the ground-truth masks")
    s.add_argument("--split", default=None, help="split whose ids are scored (an id listed twice: once, a warning)")
    s.add_argument("--masks", default=None, help="instead of a dataset: masks as `wsss prepare folder --masks` "
                   "takes them (PNG folder, COCO .json, CVAT, LabelMe), matched to predictions by name")  # fmt: skip
    s.add_argument("--classes", default=None, help="with --masks: the class list, one name a line, background first")
    s.add_argument("--pseudo", action="store_true", help="score pseudo labels (255 = left undecided)")
    s.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    s.set_defaults(fn=cmd_eval)


def add_report(sub: Any) -> None:
    """`wsss report`."""
    s = sub.add_parser("report", help="HTML report of a run: metrics, curves, image grids")
    s.add_argument("run", help="run directory")
    s.add_argument("--split", default=None, help="the one split to show (default: each split the run has CAMs, "
                   "seeds, pseudo labels or predictions of, the val split first; none: the val split)")  # fmt: skip
    add_data_root(s)
    s.add_argument("--max-images", type=int, default=12, help="images in the grid of each split, worst first "
                   "(default 12)")  # fmt: skip
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
    s.add_argument("--classes", default=None, help="draw the CAMs of these classes (default: the image's "
                   "labels; for --image the classes the classifier finds)")  # fmt: skip
    add_data_root(s)
    add_checkpoint(s)
    add_device(s)
    add_quiet(s)
    add_processes(s)
    add_run_overrides(s)
    s.set_defaults(fn=cmd_viz)


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
    q.add_argument("--label-source", dest="label_source", choices=("mask", "xml", "auto"), default="mask",
                   help=labels_help)  # fmt: skip
    q.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds of another dataset (else refused); a dataset this release prepared "
                   "there is continued, its finished masks kept")  # fmt: skip
    add_pool_workers(q)
    add_quiet(q)
    q.set_defaults(fn=cmd_prepare)
    q = prep.add_parser("coco", help="COCO instances json -> VOC-style masks (81 classes), splits, cls_labels.npy")
    q.add_argument("--coco", required=True, help="folder with annotations/ and train2014/, val2014/")
    q.add_argument("--out", required=True, help="output dataset root")
    q.add_argument("--year", default="2014", help="COCO release year of the folder names (default 2014)")
    q.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to convert (default: train val)")
    q.add_argument("--val-part", type=int, default=5000, help="size of the val_part subset (0 = none)")
    add_image_mode(q)
    q.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds of another dataset (else refused); a dataset this release prepared "
                   "there is continued, its finished masks kept")  # fmt: skip
    add_pool_workers(q)
    add_quiet(q)
    q.set_defaults(fn=cmd_prepare)
    q = prep.add_parser(
        "folder", help="a folder of images + a CSV/txt of image labels (+ optional masks)",
        description="A VOC-layout dataset from your own photos. Labels file: a CSV with the header "
        "'image,labels' and one row per photo: its file name (or stem), then its classes separated by ';' "
        "(e.g. 'a.jpg,cat;dog'; empty: no foreground class); or a CSV 'image,<class>,<class>,...' of 0/1 "
        "columns; or a .txt of lines '<image> <class> <class> ...' (names or indices 1..C-1). Classes file: "
        "one name a line, background first; a mask pixel k is the class on line k (0 = background, "
        "255 = ignore). Every input is checked before anything is written.",
    )  # fmt: skip
    q.add_argument("--images", required=True, help="folder of images (id = file stem)")
    q.add_argument(
        "--labels", default=None,
        help="labels file: .csv 'image,labels' with classes separated by ';' (a.jpg,cat;dog), .csv "
        "'image,<class>,...' of 0/1, or .txt '<image> <class> ...'; or a COCO .json file or a folder of LabelMe "
        ".json files, each photo labelled with the classes drawn in it; without it every image is taken unlabelled, "
        "for `wsss tag` to label from CLIP scores",
    )  # fmt: skip
    q.add_argument("--classes", required=True, help="class names, one a line, background first")
    q.add_argument("--out", required=True, help="output dataset root")
    q.add_argument("--masks", default=None, metavar="PATH",
                   help="optional masks of some or all images: a folder of <photo stem>.png class-index masks, a COCO "
                   ".json file (polygons, RLE), a CVAT 'Segmentation mask 1.1' export folder (labelmap.txt, "
                   "SegmentationClass/) or a folder of LabelMe .json files; the format is told from what is given "
                   "(docs/datasets.md#masks-from-labelling-tools)")  # fmt: skip
    q.add_argument(
        "--val-fraction", type=float, default=None,
        help="share of the masked images in val.txt (default 0.2 with --masks; at most half of them: the rest stay "
        "in train); without --masks a share of all the images (default 0: training then runs without validation)",
    )  # fmt: skip
    q.add_argument("--overwrite", action="store_true",
                   help="replace the dataset --out holds (else refused): the result is a fresh run's; an input inside "
                   "what it replaces (e.g. --masks OUT/SegmentationClass) is refused, never deleted")  # fmt: skip
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
        "fetch", help="download VOC 2012, SBD or COCO 2014 (or take --archive), check its checksum, unpack, prepare",
        description="Download an official release from its host (resuming an interrupted download), check it against "
        "its published checksum, unpack it into --raw (atomically; an archive member that would land outside is "
        "refused) and run `wsss prepare voc` or `wsss prepare coco` into --out. VOC 2012 is prepared with SBD "
        "whenever both are unpacked in the same --raw, whichever was fetched last (then train_aug has its 10,582 "
        "ids). A release unpacked earlier is kept; --overwrite unpacks it again.",
    )  # fmt: skip
    q.add_argument("dataset", choices=FETCH_DATASETS,
                   help="voc2012 (VOCtrainval_11-May-2012.tar), sbd (benchmark.tgz) or coco2014 (train2014.zip, "
                   "val2014.zip, annotations_trainval2014.zip)")  # fmt: skip
    q.add_argument("--raw", default="data/raw",
                   help="folder of the downloads (RAW/downloads) and unpacked releases (default data/raw)")  # fmt: skip
    q.add_argument("--out", default=None,
                   help="the prepared dataset (default: the presets' data.root: data/VOC2012, data/COCO)")  # fmt: skip
    q.add_argument("--archive", action="append", default=None, metavar="PATH",
                   help="an archive you already have, instead of the download (coco2014: one per file, matched by "
                   "name: train2014.zip, val2014.zip, annotations_trainval2014.zip); checked against the published "
                   "checksum")  # fmt: skip
    q.add_argument("--sha256", default=None, metavar="HEX",
                   help="check the one --archive against this SHA-256 instead of the published checksum")  # fmt: skip
    q.add_argument("--no-verify", action="store_true", help="use --archive files unchecked")
    q.add_argument("--overwrite", action="store_true", help="unpack again over a release unpacked earlier in --raw")
    q.add_argument("--no-prepare", action="store_true", help="download and unpack only")
    add_image_mode(q)
    add_pool_workers(q)
    add_quiet(q)
    q.set_defaults(fn=cmd_data_fetch)


def add_export(sub: Any) -> None:
    """`wsss export`."""
    s = sub.add_parser("export", help="export predictions for an evaluation server or a labelling tool, or the "
                       "network as ONNX")  # fmt: skip
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
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_checkpoint(q)
    add_run_overrides(q)
    q.set_defaults(fn=cmd_export_onnx)
    add_export_masks(exp)


def add_export_masks(exp: Any) -> None:
    """`wsss export masks`."""
    q = exp.add_parser("masks", help="masks as a labelling tool's pre-annotations: COCO, CVAT, LabelMe, Label Studio "
                       "(docs/export.md)")  # fmt: skip
    q.add_argument("src", metavar="SRC", help="a route's folder (OUT of wsss route) or a run's predictions folder "
                   "(RUN/predictions/<split>)")  # fmt: skip
    q.add_argument("--format", required=True, choices=MASK_FORMATS, dest="mask_format",
                   help="the tool to import them in")  # fmt: skip
    q.add_argument("--out", required=True, help="the folder to write the export in (outside SRC)")
    q.add_argument("--overwrite", action="store_true", help="replace the files of an earlier export in --out")
    q.add_argument("--image-url", default=None, help="labelstudio: what comes before the photo's file name in a "
                   "task's data.image (default: /data/local-files/?d=, Label Studio's local files)")  # fmt: skip
    add_quiet(q)
    q.set_defaults(fn=cmd_export_masks)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: one ``add_<command>`` each; the choices come from the registries,
    read when first needed (:class:`LazyChoices`)."""
    from wsss import __version__

    p = Parser(
        prog="wsss",
        description="Weakly supervised semantic segmentation from image-level labels.",
        epilog=EPILOG,
    )
    p.add_argument("--version", action="version", version=f"wsss {__version__}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        add_synth,
        add_check_data,
        add_train,
        add_cam,
        add_sweep_bkg,
        add_pseudo,
        add_predict,
        add_route,
        add_import,
        add_tag,
        add_eval,
        add_report,
        add_viz,
        add_prepare,
        add_data,
        add_export,
        add_config,
    ):
        add(sub)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; the ``key=value`` overrides of a command that takes them (``train``, ``import``,
    ``config show`` and every command that reads a run) may come before, between or after its flags
    (``cli_common.take_overrides``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    extra = take_overrides(args, extra, argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _show_warning_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``ConfigWarning``, ``ResultWarning``: one ``warning:`` line on stderr; other warnings keep Python's format."""
    from wsss.core.errors import ConfigWarning, ResultWarning

    if issubclass(category, (ConfigWarning, ResultWarning)):
        print(f"warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _error_text(e: BaseException) -> str:
    """A user error's message. One raised in a DataLoader worker (a bad pseudo label met mid-training) comes
    back re-raised with the worker's whole traceback as its message (torch's ExceptionWrapper): the last
    line of that is the error's own, e.g. ``wsss.core.errors.DataError: FILE: ...``."""
    text = str(e)
    first = text.split("\n", 1)[0]
    if first.startswith("Caught ") and "in DataLoader worker process" in first:
        last = text.rstrip().splitlines()[-1]
        return re.sub(r"^[\w.]+: ", "", last, count=1)
    return text


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`~wsss.core.errors.Terminated` (a KeyboardInterrupt) while a command runs, and
    SIGINT KeyboardInterrupt, as Python's own handler does: the command's cleanup runs (its worker processes and
    CRF pools are stopped, ``wsss train`` saves ``last.pt``: ``engine.hooks.PeriodicCheckpointer``). Both are
    marked as a signal's (``signal_interrupt``), for :func:`main` to tell them from an interrupt its caller
    raised. A SIGINT that is ignored (a background job) or handled by someone else stays so; the handlers
    found are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        from wsss.core.errors import signal_interrupt

        raise signal_interrupt(signum)

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_signal)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A user error (bad data, bad config, a missing file: ``wsss.core.errors``) is one
    ``error:`` line and a non-zero exit (``WSSSError.exit_code``: 2 for a config error, 3 for a training that
    diverged, else 1); anything else is a bug and shows its traceback.

    Ctrl-C (SIGINT) or SIGTERM: the command stops cleanly and returns 130 or 143, as the program (``argv``
    None: the ``wsss`` script, ``python -m wsss``, torchrun's ranks). Called with ``argv`` as a library, by a
    test for one, the interrupt is raised again after the same cleanup: a signal sent to a test session (Ctrl-C
    or a CI's SIGTERM to pytest) stops the session instead of failing one test and going on with the next. An
    interrupt the caller raised itself (no signal) still returns 130. As the program, it does not return: the
    process ends with the command's code (:func:`_leave_process`)."""
    program = argv is None
    code = _run_command(list(sys.argv[1:] if argv is None else argv), program)
    if program:
        _leave_process(code)
    return code


def _run_command(argv: list[str], program: bool) -> int:
    from wsss.core.errors import USER_ERRORS

    args = parse_args(argv)
    args.argv = argv  # what `--workers N` starts again in each worker
    finished = False
    try:
        with warnings.catch_warnings(), _signals_as_interrupts():
            warnings.showwarning = _show_warning_line
            code = args.fn(args)
            finished = True
            return code
    except USER_ERRORS as e:
        print(f"error: {_error_text(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 1)  # FileNotFoundError, the one user error outside WSSSError: 1
    except KeyboardInterrupt as e:
        from wsss.core.errors import Terminated

        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"{what}; finished outputs are kept, rerun the same command to continue", file=sys.stderr)
        if not program and getattr(e, "signum", None) is not None:
            raise  # a signal to the caller's process: the caller (pytest) stops too
        return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    except (OSError, RuntimeError) as e:
        from wsss.core.files import write_error_text, write_os_error

        cause = write_os_error(e)  # a full disk or an unwritable folder outside core.files.atomic_write
        if cause is None:
            raise
        print(f"error: {cause.filename or 'output'}: cannot write ({write_error_text(cause)}); finished outputs "
              "are kept", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        if "torch" in sys.modules:  # a command that never imported torch has no process group to leave
            from wsss.core.distributed import shutdown

            shutdown(finished)


def _leave_process(code: int) -> NoReturn:
    """End the ``wsss`` program once its command has returned: its outputs are written, its children ended, its
    last message printed. Python's own exit work that matters runs first, in the order the interpreter runs it
    (non-daemon threads joined, ``atexit`` handlers: logging's flush, multiprocessing's children, standard
    streams flushed); the interpreter's teardown and the C++ static destructors after it are skipped, as
    multiprocessing's own children skip them (``os._exit`` after its exit function). A finished command aborted
    in CI, past that teardown's start as far as the evidence goes (its C++ cause is not identified), with its
    step saved and its exit message printed ("terminate called without an active exception", SIGABRT, no
    Python frame in any thread: after a SIGTERM with loader workers, stop 65; after 2-process runs,
    ``core.distributed.shutdown``): the exit code was the abort's, not the command's."""
    import atexit

    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()  # what Py_FinalizeEx runs before tearing the interpreter down
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more can be said on it
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
