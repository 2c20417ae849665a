"""The commands that read a preset: ``wsss train``, ``import`` (an official checkpoint as a run), ``config show``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from wsss.cli.options import LazyChoices, add_overwrite
from wsss.cli_common import add_overrides, add_quiet


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


def cmd_import(args: argparse.Namespace) -> int:
    from wsss.runs.official_import import import_run

    out, layout = import_run(
        args.method, args.checkpoint, args.config, args.out, args.overrides, overwrite=args.overwrite
    )
    print(f"run {out}: {args.method} from {args.checkpoint}: {layout.next_step.format(out=out)}")
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


def _import_choices() -> Sequence[str]:
    import wsss.methods  # noqa: F401 (the built-in methods register their import layouts)
    from wsss.runs.official_import import available_imports

    return available_imports()


def add_train(sub: Any) -> None:
    """`wsss train`."""
    s = sub.add_parser("train", help="train (or resume) a run from a YAML config")
    s.add_argument("config", help="configs/<method>/<preset>.yaml")
    add_overrides(s)
    s.add_argument("--skip-check", action="store_true", help="do not run check-data before training")
    s.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume a run whose saved config.yaml differs from this command's settings (the change is "
        "recorded in RUN/config_changes.jsonl); without it such a resume is refused, naming the keys",
    )
    add_overwrite(
        s,
        "train into run.dir even when it is a folder holding files but no run (else refused): its config.yaml "
        "is replaced, a metrics.jsonl there is kept as metrics.jsonl.1",
    )
    add_quiet(s)
    s.set_defaults(fn=cmd_train)


def add_import(sub: Any) -> None:
    """`wsss import`."""
    s = sub.add_parser("import", help="an official checkpoint as a run directory (for cam / predict / eval)")
    s.add_argument(
        "method",
        choices=LazyChoices(_import_choices),
        metavar="METHOD",
        help="%(choices)s: the import layouts the methods register (wsss.methods.imports): seco, toco (our cam "
        "method, model.decoder=largefov), rca or sccam (a round's classifier; PSA's res38_cls.pth as round 0) "
        "official checkpoints; clip_es: a CLIP weight file (ViT-B-16.pt), no training; a plugin's own",
    )
    s.add_argument("checkpoint", help="the official .pth (state dict, with or without 'module.'); clip_es: CLIP")
    s.add_argument("--config", required=True, help="the preset it was trained with (configs/seco/voc.yaml)")
    s.add_argument("--out", required=True, help="run directory to write (a new or empty folder)")
    add_overwrite(s, "write into an --out that holds files (a run's checkpoints/ is kept, moved aside)")
    add_overrides(s, "data.root=/d (the dataset gives the class names)")
    s.set_defaults(fn=cmd_import)


def add_config(sub: argparse._SubParsersAction) -> None:
    """``wsss config show CONFIG [--flat] [--out FILE] [overrides]``: the full config a preset resolves to, or
    with ``--flat`` the preset in one file, its bases merged in (docs/configs.md)."""
    s = sub.add_parser("config", help="print the full config a preset resolves to (`wsss config show CONFIG`)")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser(
        "show",
        help="print CONFIG as YAML with its _base_ presets, the defaults and the overrides merged in",
    )
    q.add_argument(
        "config",
        help="configs/<method>/<preset>.yaml, a shipped preset's scoped name "
        "(wsss::cam/synthetic_cpu.yaml) or a run's config.yaml",
    )
    q.add_argument(
        "--flat",
        action="store_true",
        help="the preset's own settings with its _base_ presets merged in, without the schema's "
        "defaults: one file that needs none of the bases, to copy and edit",
    )
    q.add_argument("--out", default=None, metavar="FILE", help="write the YAML to FILE (atomically) instead of stdout")
    add_overwrite(q, "replace an existing --out FILE")
    add_overrides(q, "train.max_iters=100")
    q.set_defaults(fn=cmd_config_show)
