"""``wsss data fetch``: an official release downloaded (or taken from ``--archive``), checked against its
published checksum, unpacked and prepared in the toolkit's layout (docs/datasets.md, "Downloading").

Releases (:data:`RELEASES`), at the hosts and with the MD5 checksums the datasets publish (the ones
torchvision and most WSSS codes check):

- ``voc2012``: ``VOCtrainval_11-May-2012.tar`` -> ``RAW/VOCdevkit``;
- ``sbd``: ``benchmark.tgz`` -> ``RAW/benchmark_RELEASE``;
- ``coco2014``: ``train2014.zip``, ``val2014.zip``, ``annotations_trainval2014.zip`` -> ``RAW/coco2014/{train2014,
  val2014,annotations}``.

A download goes into ``RAW/downloads`` (the checksum is checked before the file takes its name), resuming an
interrupted transfer from its ``.part`` file (HTTP Range), one download at a time per folder. An archive the user
already has (``archives``) is checked against the same checksum, or against a SHA-256 given with it.

Unpacking refuses any member that would land outside the folder (an absolute name, ``..``, a link out of the
tree, a device file), writes into a temporary folder beside the destination and renames the release's top folder
into place: a destination exists only complete. A release unpacked earlier is kept (no download, no unpacking)
unless ``overwrite``. Then ``wsss prepare voc`` (VOC 2012, with SBD when it is unpacked too) or ``wsss prepare
coco`` runs as it does on its own, into ``out``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from wsss.core.errors import DataError, MissingFileError, UsageError
from wsss.data.prepare import PrepareSummary
from wsss.utils.runlock import UNPACK_LOCK_FILE, check_unpacking, unpack_lock


@dataclass(frozen=True)
class Archive:
    """One published file of a release: its address, its checksum there and the folder at its top."""

    file: str
    url: str
    known_hash: str  # "<algorithm>:<hex>", the checksum the hosts publish (md5)
    top: str  # the archive's top folder, moved to RAW/<release folder>/<top>
    size: str  # for the messages


@dataclass(frozen=True)
class Release:
    title: str
    archives: tuple[Archive, ...]
    folder: str  # where its archives' top folders go under RAW ("": RAW itself)
    default_out: str  # the data.root of the presets that train on it


# MD5 is what the hosts publish (VOC's and SBD's as torchvision checks them; COCO's as its S3 objects' ETags):
# it catches a damaged or truncated download, not a forged one; the unpacking's own checks hold either way.
VOC_HOST = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"
SBD_HOST = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
COCO_HOST = "http://images.cocodataset.org/"
RELEASES: dict[str, Release] = {
    "voc2012": Release(
        title="PASCAL VOC 2012 trainval",
        archives=(
            Archive(
                file="VOCtrainval_11-May-2012.tar",
                url=VOC_HOST + "VOCtrainval_11-May-2012.tar",
                known_hash="md5:6cd6e144f989b92b3379bac3b3de84fd",
                top="VOCdevkit",
                size="2.0 GB",
            ),
        ),
        folder="",
        default_out="data/VOC2012",
    ),
    "sbd": Release(
        title="SBD (the Semantic Boundaries Dataset)",
        archives=(
            Archive(
                file="benchmark.tgz",
                url=SBD_HOST + "benchmark.tgz",
                known_hash="md5:82b4d87ceb2ed10f6038a1cba92111cb",
                top="benchmark_RELEASE",
                size="1.4 GB",
            ),
        ),
        folder="",
        default_out="data/VOC2012",
    ),
    "coco2014": Release(
        title="MS COCO 2014",
        archives=(
            Archive(
                file="train2014.zip",
                url=COCO_HOST + "zips/train2014.zip",
                known_hash="md5:0da8c0bd3d6becc4dcb32757491aca88",
                top="train2014",
                size="13.5 GB",
            ),
            Archive(
                file="val2014.zip",
                url=COCO_HOST + "zips/val2014.zip",
                known_hash="md5:a3d79f5ed8d289b7a7554ce06a5782b3",
                top="val2014",
                size="6.6 GB",
            ),
            Archive(
                file="annotations_trainval2014.zip",
                url=COCO_HOST + "annotations/annotations_trainval2014.zip",
                known_hash="md5:0a379cfc70b0e71301e0f377548639bd",
                top="annotations",
                size="253 MB",
            ),
        ),
        folder="coco2014",
        default_out="data/COCO",
    ),
}

UNPACKING = ".unpacking"  # the suffix of an unpacking's temporary folder (a killed one's is removed next time)
VOC_DIR, SBD_DIR = "VOCdevkit", "benchmark_RELEASE"
AUG_DIR = "SegmentationClassAug"  # the masks' folder of a prepared VOC (data/prepare/voc.py)


@dataclass
class FetchResult:
    """What a fetch did: the unpacked folders, the preparation's summary (None: not prepared) and notes."""

    unpacked: dict[str, Path] = field(default_factory=dict)
    summary: PrepareSummary | None = None
    notes: list[str] = field(default_factory=list)


def fetch(
    name: str,
    raw: str | os.PathLike = "data/raw",
    out: str | os.PathLike | None = None,
    *,
    archives: Sequence[str | os.PathLike] = (),
    sha256: str | None = None,
    verify: bool = True,
    overwrite: bool = False,
    prepare: bool = True,
    image_mode: str = "link",
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> FetchResult:
    """Fetch release ``name`` into ``raw`` and prepare it into ``out`` (default: the presets' data.root).

    ``archives``: files the user has (one per archive of the release, matched by file name or by their top
    folder), used instead of downloads and checked against the published checksum (``verify``) or against
    ``sha256`` (one archive). ``overwrite``: unpack again over a release unpacked earlier (kept otherwise).
    Raises DataError naming the file for a checksum that differs, an unreadable archive or an unsafe member.
    """
    if name not in RELEASES:
        raise UsageError(f"unknown release {name!r}: one of {', '.join(RELEASES)}")
    release, raw = RELEASES[name], Path(raw)
    out = Path(out if out is not None else release.default_out)
    given = _match_archives(release, [Path(p) for p in archives], sha256, verify)
    if prepare and not overwrite:  # before hours of downloading
        _check_out(name, out)
    result = FetchResult()
    # the user's archives first: a bad one fails before hours of downloading the others
    for archive in sorted(release.archives, key=lambda a: a.file not in given):
        dest = raw / release.folder / archive.top
        if (dest.exists() or dest.is_symlink()) and not dest.is_dir():  # never replaced: it is not a release of ours
            what = (
                f"a symbolic link to {os.readlink(dest)}, which does not exist"
                if not dest.exists()
                else "a file, or a link to one"
            )
            raise UsageError(
                f"{dest}: is not a folder ({what}), so not an unpacked release; move it away (it is never "
                "deleted) or give another --raw"
            )
        if dest.is_dir() and not overwrite:
            unused = f"; {given[archive.file][0]} not used" if archive.file in given else ""
            log(f"{dest}: unpacked earlier, kept (--overwrite unpacks it again){unused}")
            continue
        if archive.file in given:
            path, expected = given[archive.file]
            if expected is None:
                log(f"{path}: not checked (--no-verify)")
            else:
                _verify(path, expected, release.title, progress)
                log(f"{path}: {expected.split(':')[0]} checked, as {'published' if sha256 is None else 'given'}")
        else:
            path = _download(archive, raw / "downloads", progress, log)
        count = unpack(path, archive.top, dest, release.title, progress)
        log(f"unpacked {path} -> {dest} ({count:,} members)")
        result.unpacked[archive.file] = dest
    if prepare:
        result.summary, note = _prepare(name, raw, out, image_mode, workers, progress, overwrite)
        result.notes += [note] if note else []
    return result


def _check_out(name: str, out: Path) -> None:
    """UsageError naming the files of ``out`` that preparing release ``name`` would replace, when ``out`` holds
    files and is not a dataset prepared from this release (``prepare.release_outputs``): checked before hours of
    downloading; ``--overwrite`` replaces them."""
    from wsss.data.prepare import release_outputs

    release_outputs(
        out,
        "coco" if name == "coco2014" else "voc",
        f"wsss data fetch {name}",
        images="link",
        overwrite=False,
        inputs={},
    )


def _match_archives(
    release: Release, paths: list[Path], sha256: str | None, verify: bool
) -> dict[str, tuple[Path, str | None]]:
    """archive file name -> (the user's file, the checksum to check it against or None)."""
    if sha256 is not None:
        if len(paths) != 1 or not verify:
            raise UsageError("--sha256 is the checksum of one --archive (and checks it: not with --no-verify)")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise UsageError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}")
    matched: dict[str, tuple[Path, str | None]] = {}
    for path in paths:
        if not path.is_file():
            raise MissingFileError(f"{path}: archive not found")
        archive = _which_archive(release, path)
        if archive.file in matched:
            raise UsageError(f"{path}: a second archive for {archive.file} (the first: {matched[archive.file][0]})")
        expected = f"sha256:{sha256.lower()}" if sha256 is not None else archive.known_hash if verify else None
        matched[archive.file] = (path, expected)
    return matched


def _which_archive(release: Release, path: Path) -> Archive:
    """The archive of ``release`` that ``path`` is: the only one, the one of its file name, or the one whose
    top folder is the first member's."""
    if len(release.archives) == 1:
        return release.archives[0]
    by_name = [a for a in release.archives if a.file == path.name]
    if by_name:
        return by_name[0]
    top = _first_top(path)
    by_top = [a for a in release.archives if a.top == top]
    if not by_top:
        names = ", ".join(a.file for a in release.archives)
        raise UsageError(f"{path}: not one of {release.title}'s archives ({names}) by its name or its top folder")
    return by_top[0]


def _first_top(path: Path) -> str | None:
    """The top folder of an archive's first member (None: unreadable or empty)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                first = names[0] if names else None
        else:
            with tarfile.open(path, "r:*") as tf:
                member = tf.next()
                first = member.name if member else None
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError):
        return None
    return PurePosixPath(first).parts[0] if first else None


def file_hash(path: Path, alg: str, progress: bool = False) -> str:
    """The hex digest ``alg`` (md5, sha256) of the file at ``path``, read in 1 MiB blocks."""
    from tqdm import tqdm

    h = hashlib.new(alg)
    with (
        open(path, "rb") as f,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=f"{alg} {path.name}",
            disable=not progress,
            dynamic_ncols=True,
        ) as bar,
    ):
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def _verify(path: Path, expected: str, title: str, progress: bool) -> None:
    alg, want = expected.split(":", 1)
    got = file_hash(path, alg, progress)
    if got != want.lower():
        whose = "the given --sha256" if alg == "sha256" else f"{title}'s published {alg}"
        raise DataError(
            f"{path}: {alg} {got} is not {whose} {want}: a damaged or different file "
            "(download it again, or pass --no-verify to use it as it is)"
        )


# -- downloading -------------------------------------------------------------------------------------
class ResumableDownloader:
    """A download that continues an interrupted transfer: the bytes so far stay in ``part``
    (``RAW/downloads/<file>.part``) and an HTTP Range request asks for the rest (a plain download starts over each
    time, which on a flaky line may never finish COCO's 13.5 GB). The whole file's checksum is checked afterwards
    (:func:`_download`), so a part that does not fit the rest fails there (and is deleted)."""

    def __init__(self, part: Path, progress: bool = True):
        self.part, self.progress = part, progress

    def fetch(self, url: str) -> None:
        """The file at ``url`` complete in ``part``."""
        import requests

        for _ in range(2):  # a second request only when the host answered a range other than the one asked
            have = self.part.stat().st_size if self.part.is_file() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            with requests.get(url, headers=headers, stream=True, timeout=60) as r:
                if r.status_code == 416 and have:  # "range not satisfiable": the part holds the whole file
                    return
                r.raise_for_status()
                if r.status_code == 206 and _range_start(r.headers.get("Content-Range")) != have:
                    self.part.unlink()  # other bytes than asked for: start over, without a range
                    continue
                self._write(r, have if r.status_code == 206 else 0)  # 200: the host sent the whole file
                return

    def _write(self, response: Any, have: int) -> None:
        """The response's body appended to the part at ``have`` bytes (0: the part written afresh)."""
        from tqdm import tqdm

        size = int(response.headers.get("Content-Length", 0))
        self.part.parent.mkdir(parents=True, exist_ok=True)
        with (
            open(self.part, "r+b" if have else "wb") as f,
            tqdm(
                total=size + have or None,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=self.part.name[: -len(".part")],
                disable=not self.progress,
                dynamic_ncols=True,
            ) as bar,
        ):
            f.seek(have)
            f.truncate()
            for chunk in response.iter_content(chunk_size=1 << 20):
                f.write(chunk)
                bar.update(len(chunk))


def _range_start(content_range: str | None) -> int:
    """The first byte of a 206 answer (``bytes START-END/TOTAL``); -1 when absent or unreadable."""
    m = re.match(r"bytes (\d+)-", content_range or "")
    return int(m.group(1)) if m else -1


@contextlib.contextmanager
def _downloads_lock(folder: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Hold ``folder`` (``RAW/downloads``) for one download: an advisory ``flock`` on the folder itself (no lock
    file is left among the downloads; the kernel drops it when its process ends, however it ends). A second
    ``wsss data fetch`` into the same ``--raw`` waits, then finds the first one's file and checks it: two at once
    both wrote ``<file>.part`` and the second stopped with "[Errno 2] No such file or directory".
    Where ``fcntl`` is missing (Windows) nothing is held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{folder}: another wsss data fetch is downloading into this folder; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _download(archive: Archive, folder: Path, progress: bool, log: Callable[[str], None]) -> Path:
    """``archive`` from its host into ``folder``, checked against its published checksum before it takes its name;
    a file there already is checked and kept when it matches (downloaded again when not). The only other file a
    download makes is its ``<file>.part`` (left by an interrupted one, resumed by the next): a killed download
    of pooch's, used before, left a 0-byte ``tmpXXXX`` beside it each time."""
    import requests

    target, part = folder / archive.file, folder / f"{archive.file}.part"
    folder.mkdir(parents=True, exist_ok=True)
    with _downloads_lock(folder, log):
        if target.is_file():
            log(f"checking {target}")
            if _matches(target, archive.known_hash, progress):
                return target
            log(f"{target}: not the published {archive.known_hash}; downloading it again")
            target.unlink()
        log(f"downloading {archive.url} ({archive.size}) -> {target}")
        try:
            ResumableDownloader(part, progress).fetch(archive.url)
        except requests.RequestException as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(
                f"{archive.url}: download failed ({type(e).__name__}: {reason}); run the command again "
                "to resume it, or download the file yourself and pass --archive"
            ) from e
        if not _matches(part, archive.known_hash, progress):
            part.unlink()
            raise DataError(
                f"{target}: the download's checksum is not the published {archive.known_hash}; it was "
                "deleted: run the command again to download it afresh"
            )
        os.replace(part, target)  # the same folder: a rename
    return target


def _matches(path: Path, known_hash: str, progress: bool) -> bool:
    alg, want = known_hash.split(":", 1)
    return file_hash(path, alg, progress) == want.lower()


# -- unpacking -----------------------------------------------------------------------------------------
def unpack(archive: Path, top: str, dest: Path, title: str = "the release", progress: bool = True) -> int:
    """Unpack ``archive`` (tar of any compression, or zip) and put its top folder ``top`` at ``dest``; returns
    the number of members. Nothing lands outside a temporary folder beside ``dest`` until the whole archive is
    unpacked and checked; then one rename puts it in place (an existing ``dest`` is replaced: the caller asks
    for it). A member that would land outside that folder, a damaged archive or one without ``top`` is a
    DataError naming the file, and leaves ``dest`` as it was."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # One unpacking of ``dest`` at a time: a second one removed the first's temporary folder as a killed one's, and
    # the first put in place the members it wrote after that, while reporting them all. Each unpacking
    # holds a lock in its folder; a folder whose lock is held is another's, and this one is refused.
    stale = sorted(dest.parent.glob(f".{dest.name}.*{UNPACKING}"))
    for folder in stale:
        check_unpacking(folder, dest)
    for folder in stale:  # a killed earlier unpacking's
        shutil.rmtree(folder, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=UNPACKING, dir=dest.parent))
    try:
        with unpack_lock(tmp, f"wsss data fetch ({archive.name})"):
            count = _extract(archive, tmp, progress)
            if not (tmp / top).is_dir():
                held = sorted(p.name for p in tmp.iterdir() if p.name != UNPACK_LOCK_FILE)
                found = ", ".join(held[:5]) or "nothing"
                raise DataError(f"{archive}: not {title}: no {top}/ at its top (it holds {found})")
            if dest.is_dir():  # overwrite: the earlier release is set aside, removed with tmp (a link: the link alone)
                os.replace(dest, tmp / ".replaced")
            elif dest.exists() or dest.is_symlink():  # a user's file: never deleted (the caller refuses it first)
                raise UsageError(f"{dest}: is not a folder, so not an unpacked release; move it away")
            os.replace(tmp / top, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return count


def _extract(archive: Path, into: Path, progress: bool) -> int:
    from tqdm import tqdm

    bar = tqdm(desc=f"unpack {archive.name}", unit=" files", disable=not progress, dynamic_ncols=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                bar.total = len(infos)
                for info in infos:
                    safe_member_name(archive, info.filename)
                    zf.extract(info, into)
                    bar.update()
            return len(infos)
        count = 0
        with tarfile.open(archive, "r:*") as tf:
            for member in _safe_tar_members(archive, tf):
                # the "data" filter (Python >= 3.11.4 / 3.10.12) re-checks what _safe_tar_members did and drops
                # set-uid bits and foreign owners; older Pythons rely on the checks above alone
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extract(member, into, **kwargs)
                count += 1
                bar.update()
        return count
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # a full disk or an unwritable folder: the CLI reports the write, it is not the archive's fault
        reason = str(e).splitlines()[0].rstrip(":") if str(e) else "no details"  # tarfile lists every method tried
        raise DataError(f"{archive}: not a readable tar or zip archive ({type(e).__name__}: {reason})") from e
    finally:
        bar.close()


def safe_member_name(archive: Path, name: str) -> PurePosixPath:
    """An archive member's name as a relative path inside the folder it unpacks into; DataError naming the
    archive and the member for an absolute name (``/x``, ``C:\\x``) or a ``..`` part (path traversal)."""
    parts = re.split(r"[\\/]+", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise DataError(f"{archive}: member {name!r} would be written outside the folder it unpacks into; refused")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def _safe_tar_members(archive: Path, tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of ``tf`` as they are read, each checked first: a safe name, no device or FIFO, and a link
    whose target stays inside the tree (a hard link's, relative to the top) or inside its own top folder (a
    symbolic link's, relative to its folder): the top folder is renamed into RAW, where a link to its parent
    (``VOCdevkit/up -> ..``) would read RAW's other files from inside the release."""
    for member in tf:
        name = safe_member_name(archive, member.name)
        if member.ischr() or member.isblk() or member.isfifo():
            raise DataError(f"{archive}: member {member.name!r} is a device or FIFO; refused")
        if member.issym() or member.islnk():
            target = member.linkname if member.islnk() else (name.parent / member.linkname).as_posix()
            floor = 0 if member.islnk() else 1
            if member.linkname.startswith(("/", "\\")) or _escapes(target, floor):
                raise DataError(
                    f"{archive}: member {member.name!r} links to {member.linkname!r}, outside the "
                    "folder it unpacks into; refused"
                )
        yield member


def _escapes(relative: str, floor: int = 0) -> bool:
    """Whether the relative path ``relative`` climbs above its start once its ``..`` parts are applied (``floor``
    1: above the folder its first part names, or ends at its start)."""
    depth, seen = 0, False
    for part in re.split(r"[\\/]+", relative):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        seen = seen or depth > 0
        if depth < (floor if seen else 0):
            return True
    return depth < floor


# -- preparing -----------------------------------------------------------------------------------------
def _prepare(
    name: str, raw: Path, out: Path, image_mode: str, workers: int | None, progress: bool, overwrite: bool
) -> tuple[PrepareSummary | None, str | None]:
    """``wsss prepare voc`` or ``coco`` on the unpacked release(s): (its summary, a note)."""
    from wsss.data.prepare import prepare_coco, prepare_voc

    if name == "coco2014":
        summary = prepare_coco(
            raw / RELEASES[name].folder,
            out,
            year="2014",
            images=image_mode,
            workers=workers,
            progress=progress,
            overwrite=overwrite,
        )
        return summary, None
    voc, sbd = raw / VOC_DIR, raw / SBD_DIR
    if not voc.is_dir():  # SBD alone: its masks are VOC photos', prepared with VOC 2012's lists
        return None, (
            f"not prepared: SBD is prepared with VOC 2012 (`wsss data fetch voc2012` with the same "
            f"--raw {raw} prepares both into {out})"
        )
    summary = prepare_voc(
        voc,
        sbd if sbd.is_dir() else None,
        out,
        images=image_mode,
        workers=workers,
        progress=progress,
        overwrite=overwrite,
    )
    note = None if sbd.is_dir() else f"VOC 2012 alone: `wsss data fetch sbd --raw {raw}` adds SBD's masks to {out}"
    return summary, note
