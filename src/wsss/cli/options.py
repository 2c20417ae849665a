"""The pieces the commands' parsers share: typed flags that stand for config keys, the options of a command
that reads a run, the choices read from a registry when first needed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from wsss.cli_common import add_overrides, add_quiet
from wsss.core.choices import IMAGE_MODES  # imports nothing: building the parser imports no data code


def floats_arg(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected numbers like '1.0,1.25,1.5', got {text!r}") from e


def setting_type(key: str, parse: Callable[[str], Any], each: bool = False) -> Callable[[str], Any]:
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
    ``cam.high_thre=0.35 cam.low_thre=0.1``): checked as the config checks it (:func:`setting_type`), and turned into
    its words by :func:`override_words`, which go the one way every override goes (the flag's dest and key are
    kept in ``args.settings``)."""
    action = s.add_argument(flag, type=setting_type(key, parse) if isinstance(key, str) else parse, default=None, **kw)
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


def _float(text: str, what: str) -> float:
    """``text`` as a float, else the flag's error "expected ``what``"."""
    try:
        return float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from e


def number_arg(text: str) -> float:
    return _float(text, "a number")


def pair_arg(text: str) -> tuple[float, float]:
    """'0.35/0.1' -> (0.35, 0.1): a (high, low) pair of levels."""
    try:
        high, low = (float(v) for v in text.split("/"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a high/low pair like '0.35/0.1', got {text!r}") from e
    if not 0.0 <= low <= high <= 1.0:
        raise argparse.ArgumentTypeError(f"a pair needs 0 <= low <= high <= 1, got {text!r}")
    return high, low


def probability_arg(text: str) -> float:
    """'0.5' -> 0.5, a threshold on a probability: 0 < p < 1 (at 0 or 1 every class or none would pass)."""
    p = _float(text, "a probability like 0.5")
    if not 0.0 < p < 1.0:
        raise argparse.ArgumentTypeError(f"a threshold needs 0 < p < 1, got {text!r}")
    return p


def score_arg(text: str) -> float:
    """'0.1' -> 0.1, a threshold on a score in [0, 1] (a softmax): both ends are legal (0 tags every class,
    1 only the best one, which ``wsss tag`` keeps unless --allow-empty)."""
    p = _float(text, "a score like 0.1")
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"a score threshold needs 0 <= t <= 1, got {text!r}")
    return p


def load_run_of(args: argparse.Namespace):
    """The run of a command that reads one: its saved config, the command's words over it (:func:`override_words`)."""
    from wsss.runs.run import load_run

    return load_run(args.run, checkpoint=args.checkpoint, overrides=override_words(args))


def processes_of(args: argparse.Namespace):
    """The processes of a per-id command: torchrun's, or ``--workers N`` local ones (runs/shard.py)."""
    from wsss.runs.shard import job_processes

    return job_processes(args.workers, args.argv)


class LazyChoices:
    """An argparse ``choices`` read from a registry when first needed (an argument to check, a help or
    error text to write), so that building the parser imports no model code: every command starts
    in a fraction of a second, and ``--workers N`` starts its workers before this process imports
    torch (runs/shard.py)."""

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load = load
        self._names: list[str] | None = None

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


def add_run_args(s: argparse.ArgumentParser, photos: bool = False) -> None:
    """The arguments of the commands that read a trained run (cam, pseudo, predict); ``photos``: also
    ``--images``, ``--out`` and ``--overlay`` for photos that are not a dataset, instead of ``--split``."""
    s.add_argument("run", help="run directory (holds config.yaml and checkpoints/)")
    s.add_argument("--split", required=not photos, help="split of the dataset to run on (e.g. train, val, test)")
    if photos:
        s.add_argument(
            "--images",
            nargs="+",
            default=None,
            metavar="DIR_OR_FILE",
            help="instead of --split: photos that are not a dataset, a folder of them and/or files (JPEG, PNG, "
            "WebP; EXIF orientation applied); each mask is --out/<file stem>.png, at the photo's size",
        )
        s.add_argument(
            "--out",
            default=None,
            metavar="DIR",
            help="with --images: the folder for the masks (not one of the photos' own folders); "
            "refused if it holds masks of these photos, unless --overwrite",
        )
        s.add_argument(
            "--overlay",
            action="store_true",
            help="with --images: also each photo with its mask's colours blended in, --out/overlay/<stem>.jpg",
        )
    overwrite = (
        "redo ids whose output exists; also to replace outputs made with other settings (refused without it: each "
        "output folder's .settings.json), the folder being cleared first"
    )
    add_run_options(s, overwrite=overwrite)


def add_run_options(s: argparse.ArgumentParser, overwrite: str | None = None) -> None:
    """The options of a per-id command that loads a run's network, in this order: ``--data-root``,
    ``--checkpoint``, ``--device``, ``--overwrite`` (with ``overwrite``, its help), ``--quiet``, ``--workers N``
    and the run's ``KEY=VALUE`` words."""
    add_data_root(s)
    add_checkpoint(s)
    add_device(s)
    if overwrite is not None:
        add_overwrite(s, overwrite)
    add_quiet(s)
    add_processes(s)
    add_run_overrides(s)


def add_overwrite(s: argparse.ArgumentParser, help: str) -> None:
    """``--overwrite``, every command's flag for replacing what it would otherwise refuse to; ``help`` says what."""
    s.add_argument("--overwrite", action="store_true", help=help)


def add_scales(s: argparse.ArgumentParser, key: str, example: str) -> None:
    """``--scales``: shorthand for the list of scales ``key`` (``infer.scales``, ``infer.cam_scales``)."""
    add_setting(s, "--scales", key, floats_arg, help=f"e.g. {example}: {key}=[...] (default: the run's {key})")


def add_crf_workers(s: argparse.ArgumentParser, what: str) -> None:
    """``--crf-workers N`` of a command that reads a run: shorthand for ``infer.crf_workers=N``; ``what`` the
    processes are for."""
    add_setting(
        s,
        "--crf-workers",
        "infer.crf_workers",
        int,
        help=f"{what}: infer.crf_workers=N (default: the run's infer.crf_workers)",
    )


def add_data_root(s: argparse.ArgumentParser) -> None:
    """``--data-root`` of a command that reads a run (its dataset by default)."""
    s.add_argument("--data-root", default=None, help="dataset root (default: the run's data.root)")


def add_checkpoint(s: argparse.ArgumentParser, hidden: bool = False) -> None:
    """``--checkpoint`` of a command that loads a run's network (``hidden``: a run without one, CLIP-ES's)."""
    s.add_argument(
        "--checkpoint",
        default="auto",
        help=argparse.SUPPRESS if hidden else "best, last or a .pt path (default: best if any)",
    )


def add_device(s: argparse.ArgumentParser) -> None:
    """``--device`` of a command that loads a run: shorthand for ``run.device=DEVICE``."""
    add_setting(
        s,
        "--device",
        "run.device",
        str,
        help="cpu, cuda, cuda:1 ...: run.device=DEVICE (default: the run's run.device)",
    )


RUN_OVERRIDES = "cam.bkg_thre=0.3 infer.crf_workers=2"  # the example of the words of a command that reads a run


def add_run_overrides(s: argparse.ArgumentParser) -> None:
    """The ``KEY=VALUE`` words of a command that reads a run: merged over its saved config for this command."""
    add_overrides(s, RUN_OVERRIDES, what="run's saved config, for this command (the run's config.yaml is kept)")


def add_processes(s: argparse.ArgumentParser) -> None:
    """``--workers N`` of a per-id command: N processes sharing the ids (``processes_of``, runs/shard.py)."""
    s.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="N local processes sharing the ids (CPUs; default: this one). On GPUs or nodes use "
        "`torchrun --nproc_per_node N -m wsss ...`: each rank takes its share",
    )


def add_pool_workers(s: argparse.ArgumentParser) -> None:
    """``--workers`` of a dataset converter (``wsss prepare``, ``wsss data fetch``): its pool of processes."""
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count; 0 = in-process)")


def add_image_mode(s: argparse.ArgumentParser) -> None:
    """``--image-mode`` of ``wsss prepare`` and ``wsss data fetch``: how the dataset holds the photos."""
    s.add_argument(
        "--image-mode",
        dest="image_mode",
        choices=IMAGE_MODES,
        default="link",
        help="how to place the images in JPEGImages: link (hard link, a copy across devices; default), "
        "symlink, copy, none",
    )
