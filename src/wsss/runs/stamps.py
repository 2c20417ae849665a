"""Settings stamps of output folders: what made the files of ``cams/<split>``, ``pseudo/<split>``,
``predictions.../<split>``, ``probs.../<split>``.

A per-id job skips the ids whose output exists (a killed job continues where it stopped), so a folder is
reused by every later run of its command. Without a record of how its files were made, the outputs of one
setting passed for another's (``pseudo --refine none`` then ``pseudo`` (PAR) kept every label;
``predict A --ensemble B`` then ``--ensemble A`` kept the first ensemble's masks). Each such folder holds
``.settings.json`` (:data:`STAMP_FILE`), written atomically before the job writes into it: the settings
that determine its files (the model's checkpoint and step, the scales, the refiner, the ensemble's and the
tagger's runs, ...). A later job with other settings is refused with one line naming the folder and the
differing settings, unless ``overwrite``; that clears this folder only (never an input of the job) and
stamps it anew. A folder with outputs but no stamp (written before stamps existed) is taken as made with
the settings of the job that finds it, with a warning.

:func:`check_stamp` only reads (every process of a sharded job calls it, so each refuses alike);
:func:`claim_folder` clears and writes (one process: rank 0, before any rank writes). Rank 0 holds each folder
for the whole job (``utils.runlock.job_folder_lock``, its file :data:`~wsss.utils.runlock.JOB_LOCK_FILE`, which
is not an output and which ``overwrite`` leaves in place), so no other job stamps it between the check and the
writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from wsss.core.errors import ConfigWarning, UsageError
from wsss.core.files import atomic_write, is_temp_file, remove_stale_temps
from wsss.utils.io import per_id_path
from wsss.utils.runlock import JOB_LOCK_FILE

STAMP_FILE = ".settings.json"
SOURCES_FILE = ".sources.json"  # each id's photo as its outputs were made of it (:func:`refresh_sources`)
_UNREADABLE = {"stamp": "unreadable"}  # a stamp that is not JSON: settings unknown, so never those of a job


def normal(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as it reads back from JSON (tuples as lists, paths as strings), for comparison."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def read_stamp(folder: str | Path) -> dict[str, Any] | None:
    """The settings stamped on ``folder``; None when it has no stamp."""
    path = Path(folder) / STAMP_FILE
    if not path.is_file():
        return None
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return dict(_UNREADABLE)
    return stamp if isinstance(stamp, dict) else dict(_UNREADABLE)


# Settings that a stamp of an older wsss lacks because they had one value then: the segmentation inference's
# resizing and fusion (infer.resize_long, ...: runs/jobs.py FUSION_KEYS) were ToCo's, the schema's defaults. Such a
# stamp is compared as if it named these values.
IMPLIED = {"resize_long": None, "scale_resize": "size", "flip_fuse": "sum", "scale_fuse": "max", "fuse_at": "image"}


def with_implied(old: Any, new: Any) -> Any:
    """``old`` (a stamp read back) with each setting of :data:`IMPLIED` that it lacks and ``new`` has (at its top
    level) given its implied value, and each network in it as this wsss names one (:func:`as_built`)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping) and old != _UNREADABLE:
        return as_built({**old, **{k: v for k, v in IMPLIED.items() if k in new and k not in old}}, new)
    return old


# The options an older wsss named in a stamp's network that this one leaves out (``runs.run.network_settings``):
# where a CLIP method's files were, which the checkpoint's digest in the same stamp makes needless; and those it
# stamped empty that this one names as built (``Method.built_options``: the architectures read off those files)
FILE_OPTIONS = ("weights", "dino_weights")
BUILT_OPTIONS = ("arch", "dino_arch")


def as_built(old: Any, new: Any) -> Any:
    """``old`` with each ``network`` in it (a model's, at any depth) as ``new`` names it where an older wsss named it
    otherwise (its options name a file, :data:`FILE_OPTIONS`): without those files' options that ``new`` lacks, and
    an architecture it stamped empty (:data:`BUILT_OPTIONS`) as ``new`` has it. The model's weights are named by the
    checkpoint's digest beside it, which the comparison still checks."""
    if isinstance(old, list) and isinstance(new, list):
        return [as_built(o, n) for o, n in zip(old, new, strict=False)] + old[len(new) :]
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return old
    out = {k: as_built(v, new[k]) if k in new else v for k, v in old.items()}
    mine, theirs = (
        d.get("network", {}).get("options") if isinstance(d.get("network"), Mapping) else None for d in (new, old)
    )
    if isinstance(mine, Mapping) and isinstance(theirs, Mapping) and any(k in theirs for k in FILE_OPTIONS):
        options = {k: v for k, v in theirs.items() if k in mine or k not in FILE_OPTIONS}
        options |= {k: mine[k] for k in BUILT_OPTIONS if theirs.get(k) == {} and k in mine}
        out["network"] = {**out["network"], "options": options}
    return out


def unknown(old: Any, new: Mapping[str, Any]) -> str | None:
    """Why the stamp ``old`` (read back, :func:`with_implied`) cannot tell whether its folder's outputs are those of
    the settings ``new``: it is unreadable, or lacks a setting that ``new`` names (a stamp of an older wsss, e.g.
    without the checkpoint's content or the network's options: what made the outputs is unknown). None when it can
    (no stamp: None too, a folder of an older wsss without a stamp is :func:`claim_folder`'s to warn of)."""
    if old is None:
        return None
    if old == _UNREADABLE:
        return f"its settings stamp ({STAMP_FILE}) is unreadable (not a JSON object)"
    key = _lacking(old, new, "")
    return None if key is None else f"its settings stamp ({STAMP_FILE}, written by an older wsss) does not name {key}"


def _lacking(old: Any, new: Any, key: str) -> str | None:
    """The first dotted key that ``new`` has and ``old`` lacks, at any depth (an ensemble's members, the tagger). An
    empty mapping lacks nothing: it is a value (``options.arch: {}``, a CLIP's architecture before its file was read),
    which :func:`differences` names, not a stamp of an older wsss."""
    old, new = _section(old), _section(new)
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)) or not old:
        return None
    for k in sorted(new):
        dotted = f"{key}.{k}" if key else str(k)
        found = dotted if k not in old else _lacking(old[k], new[k], dotted)
        if found is not None:
            return found
    return None


_NOT_OUTPUTS = (STAMP_FILE, SOURCES_FILE, JOB_LOCK_FILE)  # the files of a folder that are not its job's outputs

_ABSENT = "(none)"  # a setting one side does not have


def _section(v: Any) -> Any:
    """A list of settings (an ensemble's members) as a mapping by index, compared member by member:
    ``ensemble.0.dir``."""
    if isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
        return {str(i): x for i, x in enumerate(v)}
    return v


def _changed(old: Any, new: Any, key: str) -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) of each setting that differs; a section on both sides compared key by key, a section
    on one side only (e.g. ``crf: None`` against the CRF's parameters) named once."""
    old, new = _section(old), _section(new)
    if isinstance(old, Mapping) and isinstance(new, Mapping) and old and new:
        return [
            c
            for k in sorted(set(old) | set(new))
            for c in _changed(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{key}.{k}" if key else k)
        ]
    return [] if old == new else [(key, old, new)]


def _shown(v: Any) -> str:
    """A setting in a message: a section as ``{...}`` cut to its first keys."""
    if isinstance(v, Mapping):
        items = [f"{k}: {x!r}" for k, x in list(v.items())[:2]]
        return "{" + ", ".join(items) + (", ..." if len(v) > 2 else "") + "}"
    return repr(v)


def differences(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 3) -> str:
    """'key: old -> new; ...' of the settings that differ (nested keys dotted), the first ``limit`` of them."""
    keys = _changed(old, new, "")
    text = "; ".join(f"{k}: {_shown(a)} -> {_shown(b)}" for k, a, b in keys[:limit])
    return text + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """How outputs stamped ``old`` (read back, :func:`with_implied`) are not those of the settings ``new``, for a
    refusal: 'made with other settings (key: old -> new)', or why their stamp cannot say (:func:`unknown`)."""
    why = unknown(old, new)
    if why is not None:
        return f"made with unknown settings ({why})"
    return f"made with other settings ({differences(old, new)})"


def _refusal(folder: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> UsageError:
    if unknown(old, new) is not None:
        return UsageError(
            f"{folder}: holds outputs {mismatch(old, new)}; pass --overwrite to make them again (its "
            "outputs are removed first)"
        )
    return UsageError(
        f"{folder}: holds outputs {mismatch(old, new)}; pass --overwrite to replace them (this folder is cleared "
        "first), or keep it and run with its settings"
    )


def _has_outputs(folder: Path) -> bool:
    """Whether ``folder`` holds anything but its stamp, its job's lock and a killed write's temporary files: a stamp
    alone asserts nothing (e.g. a job that stopped on a bad option after stamping its folder)."""
    return folder.is_dir() and any(p.name not in _NOT_OUTPUTS and not is_temp_file(p.name) for p in folder.iterdir())


def check_stamp(folder: str | Path, settings: Mapping[str, Any], *, overwrite: bool = False) -> None:
    """UsageError naming ``folder`` and the differing settings when it holds outputs stamped with other
    ``settings`` (and not ``overwrite``). Only reads: every process of a job may call it."""
    folder = Path(folder)
    new = normal(settings)
    old = with_implied(read_stamp(folder), new)
    if old is not None and old != new and not overwrite and _has_outputs(folder):
        raise _refusal(folder, old, new)


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def claim_folder(
    folder: str | Path,
    settings: Mapping[str, Any],
    *,
    overwrite: bool = False,
    rewrite_all: bool = False,
    inputs: Iterable[str | Path | None] = (),
    suffix: str | None = None,
) -> bool:
    """Make ``folder`` the output folder of a job with ``settings``, before the job writes into it (one
    process); returns True when it was cleared.

    Same settings: nothing to do. No stamp, or a stamp and no outputs: the stamp is written (a folder with outputs
    and no stamp is taken as made with ``settings``, with a warning). Outputs of other settings: UsageError
    (:func:`check_stamp`), unless ``rewrite_all`` (the job writes every id of the folder again, e.g.
    ``wsss cam --bkg-thre``: stamped anew) or ``overwrite``: the folder's files are removed first, unless one of
    ``inputs`` (the job's inputs) lies in it, which is a UsageError naming it (an output is never cleared over an
    input). With ``suffix`` (the job's outputs are ``<id><suffix>``) only those, the stamp, the photos' records and
    wsss's temporary files are removed: a file of the user's in the folder stays (``--overwrite`` removes
    only what the command made).
    """
    folder = Path(folder)
    remove_stale_temps(folder)  # a killed job's temporary files (this process owns the folder now)
    new = normal(settings)
    read = read_stamp(folder)
    old = with_implied(read, new)
    if old == new:
        if read != new:  # a setting of IMPLIED, stamped now
            write_stamp(folder, new)
        return False
    cleared = False
    has_outputs = _has_outputs(folder)
    if old is None:
        if has_outputs and not overwrite:
            warnings.warn(
                ConfigWarning(
                    f"{folder}: its outputs have no settings stamp ({STAMP_FILE}: written by an older wsss); they are "
                    "taken as made with this command's settings (--overwrite redoes them)"
                ),
                stacklevel=2,
            )
    elif has_outputs and not rewrite_all:
        if not overwrite:
            raise _refusal(folder, old, new)
        inside = next((Path(p) for p in inputs if p is not None and _within(Path(p), folder)), None)
        if inside is not None:
            raise UsageError(f"{inside}: an input of this command is inside {folder}, which --overwrite would clear")
        for p in folder.iterdir():
            if p.name == JOB_LOCK_FILE:  # held by this job (runs/jobs.py): removing it would let another job lock
                continue
            if suffix is not None and not _made(p, suffix):
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        cleared = True
    write_stamp(folder, new)
    return cleared


def _made(path: Path, suffix: str) -> bool:
    """Whether ``path`` is a file a job of outputs ``<id><suffix>`` makes in its folder."""
    name = path.name
    if name in (STAMP_FILE, SOURCES_FILE) or is_temp_file(name):
        return True
    return name.endswith(suffix) and not name.startswith(".") and (path.is_file() or path.is_symlink())


def job_files(folder: str | Path) -> list[Path]:
    """The files of ``folder`` that a per-id job (``cam``, ``pseudo``, ``predict``, ``predict --images``) made there:
    its stamp, its photos' records, its lock, wsss's temporary files, and the outputs ``<id>.<suffix>`` of the ids its
    records name (:data:`SOURCES_FILE`). A file of the user's there (``notes.txt``, ``hand.png``) is none of them."""
    folder = Path(folder)
    ids = set(read_sources(folder) or {})

    def made(name: str) -> bool:
        return name in _NOT_OUTPUTS or is_temp_file(name) or (not name.startswith(".") and Path(name).stem in ids)

    return sorted(p for p in folder.iterdir() if (p.is_file() or p.is_symlink()) and made(p.name))


def write_stamp(folder: str | Path, settings: Mapping[str, Any]) -> None:
    """Stamp ``folder`` with ``settings`` (atomically; the folder is made if need be)."""
    with atomic_write(Path(folder) / STAMP_FILE, "w") as f:
        json.dump(normal(settings), f, indent=1, sort_keys=True)
        f.write("\n")


def content_digest(path: str | Path) -> str:
    """The SHA-1 of a file's bytes (its first 16 hex digits): what names a file's content in a stamp, whatever its
    name, place and times (a file rewritten with its size and time kept is another; a copy or a move is the same).
    Of a folder (a Hugging Face weight folder), the digest of its files' names and digests. Not a security check.
    SHA-1: the fastest of hashlib's digests here (BENCHMARKS.md, Inference speed and memory)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        listing = "".join(f"{p.relative_to(path).as_posix()}\0{content_digest(p)}\n" for p in files)
        return hashlib.sha1(listing.encode(), usedforsecurity=False).hexdigest()[:16]
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()[:16]


def photo_record(path: str | Path) -> list[Any] | None:
    """What names a photo's file in :data:`SOURCES_FILE`: [its size, its content digest (:func:`content_digest`), its
    modification time in ns]; None when it cannot be read (its id is then always done again, and the job reports
    the photo). The size and the digest name the photo (:func:`same_photo`); the time, a record of an older wsss."""
    try:
        st = os.stat(path)
        return [st.st_size, content_digest(path), st.st_mtime_ns]
    except OSError:
        return None


def same_photo(old: Any, new: list[Any]) -> bool:
    """Whether the record ``old`` (read back) names the photo of ``new`` (:func:`photo_record`): the same size and
    content (a copy or a move keeps them, a rewrite with its size and time kept does not). A record of an older wsss,
    [size, time], is compared as it was made."""
    if isinstance(old, list) and len(old) == 2 and all(isinstance(v, int) for v in old):
        return old == [new[0], new[2]]
    return isinstance(old, list) and old[:2] == new[:2]


def read_sources(folder: str | Path) -> dict[str, Any] | None:
    """id -> the photo record (:func:`photo_record`) its outputs in ``folder`` were made of; None when the folder has
    no records ({} when they cannot be read: every id is then made again)."""
    path = Path(folder) / SOURCES_FILE
    if not path.is_file():
        return None
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def refresh_sources(folder: str | Path, suffixes: Iterable[str], records: Mapping[str, list[Any] | None]) -> set[str]:
    """Before a job writes into ``folder`` (one process, the folder held): the outputs of each id whose photo is not
    the one they were made of are removed, and the photos' records are written into :data:`SOURCES_FILE`.
    ``suffixes``: those of an id's files in ``folder``; ``records``: id -> :func:`photo_record` of the job's ids.

    A stamp names the settings of a folder; a photo replaced under its name keeps them, and a job that skips the ids
    whose outputs exist kept its old mask. The ids whose record differs (or is missing, or None) lose their
    outputs, which are this job's own (the folder's stamp is this job's settings), so the job makes them again; a
    killed job's next run finds them missing. A folder without records (deleted, unreadable, or of an older wsss)
    does not say which photo each output was made of: every id's outputs there are made again, with a warning
    (kept, a photo replaced meanwhile kept its old mask). Returns the ids whose outputs went."""
    folder = Path(folder)
    old = read_sources(folder)
    stale = {i for i, r in records.items() if r is None or old is None or not same_photo(old.get(i), r)}
    gone = set()
    for id in sorted(stale):
        for suffix in suffixes:
            path = per_id_path(folder, id, suffix)
            if path.is_file() or path.is_symlink():
                path.unlink()
                gone.add(id)
    if not old and gone:
        warnings.warn(
            ConfigWarning(
                f"{folder}: {SOURCES_FILE} is missing or unreadable, so the photos its outputs were made of are "
                f"unknown; the outputs of {len(gone)} ids are made again"
            ),
            stacklevel=2,
        )
    with atomic_write(folder / SOURCES_FILE, "w") as f:
        json.dump({**(old or {}), **{i: r for i, r in records.items() if r is not None}}, f, sort_keys=True)
    return stale
