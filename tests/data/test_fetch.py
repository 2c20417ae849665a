"""`wsss data fetch` (wsss.data.fetch) on tiny archives in the official releases' layouts: the hosts are not
reachable from the tests, so the archives come through --archive, or from a local HTTP server for the download
itself (resumed from a .part with a Range request)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from wsss.cli import FETCH_DATASETS, main
from wsss.core.errors import DataError
from wsss.data import check_dataset
from wsss.data import fetch as fetch_mod
from wsss.data.fetch import RELEASES, fetch, safe_member_name
from wsss.data.voc import load_cls_labels, read_split
from wsss.utils.io import save_label_png

A, B, C, D = "2007_000001", "2007_000002", "2008_000003", "2009_000004"  # D: an SBD-only id
MASKS = {A: 15, B: 12, C: 1}  # VOC masks: one class each (person, dog, aeroplane) on a background


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (4, 5, 3), dtype=np.uint8)).save(path)


def _voc_tree(root: Path, extra: tuple[str, ...] = ()) -> Path:
    """VOCdevkit/VOC2012 with JPEGImages, SegmentationClass and the train / val lists (A, B / C)."""
    voc = root / "VOCdevkit" / "VOC2012"
    for i, (id, cls) in enumerate(MASKS.items()):
        _jpeg(voc / "JPEGImages" / f"{id}.jpg", i)
        mask = np.zeros((4, 5), np.uint8)
        mask[1:3, 1:4] = cls
        save_label_png(voc / "SegmentationClass" / f"{id}.png", mask)
    for id in extra:
        _jpeg(voc / "JPEGImages" / f"{id}.jpg", 9)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text(f"{A}\n{B}\n")
    (sets / "val.txt").write_text(f"{C}\n")
    return root


def _tar(path: Path, root: Path, top: str, mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        tf.add(root / top, arcname=top)
    return path


@pytest.fixture
def voc_tar(tmp_path) -> Path:
    return _tar(tmp_path / "tiny.tar", _voc_tree(tmp_path / "src"), "VOCdevkit")


def _sbd_tgz(tmp_path: Path) -> Path:
    """benchmark_RELEASE/dataset with D's GTcls .mat and photo, D in train.txt, an empty val.txt."""
    ds = tmp_path / "sbd" / "benchmark_RELEASE" / "dataset"
    (ds / "cls").mkdir(parents=True)
    seg = np.zeros((4, 5), np.uint8)
    seg[:2] = 7  # car
    savemat(str(ds / "cls" / f"{D}.mat"), {"GTcls": {"Segmentation": seg, "CategoriesPresent": np.uint8([7])}})
    _jpeg(ds / "img" / f"{D}.jpg", 7)
    (ds / "train.txt").write_text(f"{D}\n")
    (ds / "val.txt").write_text("")
    return _tar(tmp_path / "benchmark.tgz", tmp_path / "sbd", "benchmark_RELEASE", "w:gz")


def _fetch(*argv: str) -> int:
    return main(["data", "fetch", *argv, "--workers", "0", "--quiet"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(w in lines[0] for w in words), (words, lines[0])


# -- from an archive -----------------------------------------------------------------------------------
def test_voc2012_from_an_archive_is_unpacked_and_prepared(tmp_path, voc_tar, capsys):
    raw, out = tmp_path / "raw", tmp_path / "VOC2012"
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--out", str(out), "--no-verify") == 0
    printed = capsys.readouterr().out
    assert f"{voc_tar}: not checked (--no-verify)" in printed and f"prepared {out}" in printed
    assert "VOC 2012 alone" in printed  # no SBD in --raw: the note says how to add it
    assert sorted(p.stem for p in (raw / "VOCdevkit/VOC2012/JPEGImages").iterdir()) == [A, B, C]
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert read_split(out, "train_aug") == [A, B] and read_split(out, "val") == [C]
    assert sorted(p.stem for p in (out / "SegmentationClassAug").iterdir()) == [A, B, C]
    labels = load_cls_labels(out)
    assert [int(np.flatnonzero(labels[i])[0]) + 1 for i in (A, B, C)] == [15, 12, 1]
    assert check_dataset(out, "train_aug").ok


def test_the_published_checksum_is_checked_and_a_given_sha256_instead(tmp_path, voc_tar, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--out", str(out)) == 1
    _one_error_line(capsys.readouterr().err, str(voc_tar), "md5", "6cd6e144f989b92b3379bac3b3de84fd", "--no-verify")
    assert not (raw / "VOCdevkit").exists() and not out.exists()  # nothing unpacked, nothing prepared

    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--out", str(out), "--sha256", "0" * 64) == 1
    _one_error_line(capsys.readouterr().err, str(voc_tar), "the given --sha256")

    assert (
        _fetch(
            "voc2012",
            "--archive",
            str(voc_tar),
            "--raw",
            str(raw),
            "--out",
            str(out),
            "--sha256",
            _sha256(voc_tar).upper(),
        )
        == 0
    )
    assert f"{voc_tar}: sha256 checked, as given" in capsys.readouterr().out
    assert read_split(out, "train_aug") == [A, B]


def test_an_archive_given_with_the_official_hash_passes(tmp_path, voc_tar, monkeypatch, capsys):
    """The check itself: the tiny archive's own md5 as the release's published one."""
    md5 = hashlib.md5(voc_tar.read_bytes()).hexdigest()
    release = RELEASES["voc2012"]
    archive = dataclasses.replace(release.archives[0], known_hash=f"md5:{md5}")
    monkeypatch.setitem(RELEASES, "voc2012", dataclasses.replace(release, archives=(archive,)))
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(tmp_path / "raw"), "--no-prepare") == 0
    assert f"{voc_tar}: md5 checked, as published" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--sha256", "abc"], ["64 hexadecimal digits"]),
        (["--sha256", "0" * 64, "--no-verify"], ["--sha256"]),
        (["--archive", "missing.tar"], ["missing.tar", "archive not found"]),
    ],
)
def test_bad_options_are_one_error(tmp_path, voc_tar, capsys, argv, words):
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(tmp_path / "raw"), *argv) == 1
    _one_error_line(capsys.readouterr().err, *words)


def _evil_tar(path: Path, name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
    """A VOC-looking tar with one more member ``name`` (a file, or a link to ``link``)."""
    with tarfile.open(path, "w") as tf:
        for member, data in (("VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt", b"x\n"), (name, b"evil\n")):
            info = tarfile.TarInfo(member)
            info.type, info.linkname = (kind, link) if member == name else (tarfile.REGTYPE, "")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize(
    "name, kind, link",
    [
        ("../evil.txt", tarfile.REGTYPE, ""),
        ("VOCdevkit/../../evil.txt", tarfile.REGTYPE, ""),
        ("/tmp/wsss-test-evil.txt", tarfile.REGTYPE, ""),
        ("VOCdevkit/escape", tarfile.SYMTYPE, "../../evil-dir"),
        ("VOCdevkit/abs", tarfile.SYMTYPE, "/etc"),
        # a link to its parent: inside the temporary folder, but VOCdevkit is renamed to RAW/VOCdevkit, where ".."
        # is RAW
        ("VOCdevkit/up", tarfile.SYMTYPE, ".."),
        ("VOCdevkit/VOC2012/up2", tarfile.SYMTYPE, "../../other"),
        ("VOCdevkit/hard", tarfile.LNKTYPE, "../evil.txt"),
        ("VOCdevkit/fifo", tarfile.FIFOTYPE, ""),
    ],
)
def test_a_member_out_of_the_folder_is_refused(tmp_path, capsys, name, kind, link):
    tar = _evil_tar(tmp_path / "evil.tar", name, kind, link)
    raw = tmp_path / "deep" / "raw"
    assert _fetch("voc2012", "--archive", str(tar), "--raw", str(raw), "--no-verify") == 1
    _one_error_line(capsys.readouterr().err, str(tar), repr(name), "refused")
    assert list(raw.iterdir()) == []  # no release, no temporary folder
    assert [p.name for p in tmp_path.rglob("*evil*")] == ["evil.tar"] and not Path("/tmp/wsss-test-evil.txt").exists()


def test_a_zip_member_out_of_the_folder_is_refused(tmp_path, capsys):
    path = tmp_path / "annotations_trainval2014.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("annotations/instances_val2014.json", "{}")
        zf.writestr("../evil.json", "{}")
    raw = tmp_path / "raw"
    assert _fetch("coco2014", "--archive", str(path), "--raw", str(raw), "--no-verify", "--no-prepare") == 1
    _one_error_line(capsys.readouterr().err, str(path), "'../evil.json'", "refused")
    assert list((raw / "coco2014").iterdir()) == [] and not (tmp_path / "evil.json").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no VOCdevkit"])
def test_a_damaged_or_foreign_archive_is_one_error(tmp_path, voc_tar, capsys, damage):
    path = tmp_path / "bad.tar"
    if damage == "garbage":
        path.write_bytes(b"not an archive at all" * 50)
    elif damage == "truncated":
        path.write_bytes(voc_tar.read_bytes()[:3000])
    else:
        (tmp_path / "other" / "photos").mkdir(parents=True)
        _tar(path, tmp_path / "other", "photos")
    raw = tmp_path / "raw"
    assert _fetch("voc2012", "--archive", str(path), "--raw", str(raw), "--no-verify") == 1
    _one_error_line(capsys.readouterr().err, str(path))
    assert list(raw.iterdir()) == []


def test_an_unpacked_release_is_kept_unless_overwrite(tmp_path, voc_tar, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--out", str(out), "--no-verify") == 0
    bigger = _tar(tmp_path / "bigger.tar", _voc_tree(tmp_path / "src2", extra=("2012_000009",)), "VOCdevkit")
    photos = raw / "VOCdevkit/VOC2012/JPEGImages"
    capsys.readouterr()
    assert _fetch("voc2012", "--archive", str(bigger), "--raw", str(raw), "--out", str(out), "--no-verify") == 0
    printed = capsys.readouterr().out
    assert f"{raw / 'VOCdevkit'}: unpacked earlier, kept" in printed and f"{bigger} not used" in printed
    assert len(list(photos.iterdir())) == 3
    assert (
        _fetch("voc2012", "--archive", str(bigger), "--raw", str(raw), "--out", str(out), "--no-verify", "--overwrite")
        == 0
    )
    assert len(list(photos.iterdir())) == 4
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]


def test_a_dangling_link_where_the_release_goes_is_one_error(tmp_path, voc_tar, capsys):
    """RAW/VOCdevkit as a symbolic link to nothing was a NotADirectoryError traceback (the rename into
    place); now one line naming it, and the link is left as it was."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "VOCdevkit").symlink_to(tmp_path / "gone")
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--no-verify") == 1
    _one_error_line(
        capsys.readouterr().err, f"{raw / 'VOCdevkit'}: is not a folder (a symbolic link to {tmp_path / 'gone'}"
    )
    assert (raw / "VOCdevkit").is_symlink() and sorted(p.name for p in raw.iterdir()) == ["VOCdevkit"]


def test_sbd_then_voc2012_prepares_both(tmp_path, voc_tar, capsys):
    raw, out = tmp_path / "raw", tmp_path / "VOC2012"
    assert _fetch("sbd", "--archive", str(_sbd_tgz(tmp_path)), "--raw", str(raw), "--out", str(out), "--no-verify") == 0
    assert "note: not prepared: SBD is prepared with VOC 2012" in capsys.readouterr().out and not out.exists()
    assert (raw / "benchmark_RELEASE/dataset/cls" / f"{D}.mat").is_file()
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--out", str(out), "--no-verify") == 0
    assert "masks_from_sbd" in capsys.readouterr().out
    assert read_split(out, "train_aug") == [A, B, D]  # VOC train + SBD train - VOC val
    assert check_dataset(out, "train_aug").ok


def test_voc2012_then_sbd_prepares_both_too(tmp_path, voc_tar):
    raw, out = tmp_path / "raw", tmp_path / "VOC2012"
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--out", str(out), "--no-verify") == 0
    assert read_split(out, "train_aug") == [A, B]
    assert _fetch("sbd", "--archive", str(_sbd_tgz(tmp_path)), "--raw", str(raw), "--out", str(out), "--no-verify") == 0
    assert read_split(out, "train_aug") == [A, B, D] and sorted(load_cls_labels(out)) == [A, B, C, D]


def _coco_zips(tmp_path: Path) -> list[Path]:
    """train2014.zip, val2014.zip and an annotations zip under another name (matched by its top folder)."""
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
    zips = []
    for split, cat in (("train", 1), ("val", 18)):
        name = f"COCO_{split}2014_000000000001"
        ann = {
            "images": [{"id": 1, "file_name": f"{name}.jpg", "height": 4, "width": 4}],
            "categories": cats,
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": cat,
                    "iscrowd": 0,
                    "area": 9.0,
                    "bbox": [0, 0, 3, 3],
                    "segmentation": [[0, 0, 3, 0, 3, 3, 0, 3]],
                }
            ],
        }
        (tmp_path / f"instances_{split}2014.json").write_text(json.dumps(ann))
        buf = io.BytesIO()
        Image.fromarray(np.full((4, 4, 3), 90, np.uint8)).save(buf, format="JPEG")
        zips.append(tmp_path / f"{split}2014.zip")
        with zipfile.ZipFile(zips[-1], "w") as zf:
            zf.writestr(f"{split}2014/{name}.jpg", buf.getvalue())
    zips.append(tmp_path / "my-annotations.zip")
    with zipfile.ZipFile(zips[-1], "w") as zf:
        for split in ("train", "val"):
            zf.write(tmp_path / f"instances_{split}2014.json", f"annotations/instances_{split}2014.json")
    return zips


def test_coco2014_from_three_zips(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "COCO"
    archives = [arg for z in _coco_zips(tmp_path) for arg in ("--archive", str(z))]
    assert _fetch("coco2014", *archives, "--raw", str(raw), "--out", str(out), "--no-verify") == 0
    assert sorted(p.name for p in (raw / "coco2014").iterdir()) == ["annotations", "train2014", "val2014"]
    assert read_split(out, "train") == ["COCO_train2014_000000000001"]
    assert read_split(out, "val") == ["COCO_val2014_000000000001"]
    assert check_dataset(out, "train").ok and f"prepared {out}" in capsys.readouterr().out


def test_a_coco_archive_that_is_no_part_is_one_error(tmp_path, capsys):
    other = tmp_path / "photos.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("photos/a.jpg", b"x")
    assert _fetch("coco2014", "--archive", str(other), "--raw", str(tmp_path / "raw"), "--no-verify") == 1
    _one_error_line(capsys.readouterr().err, str(other), "train2014.zip")


# -- from a host ---------------------------------------------------------------------------------------
class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``body`` at any path, honouring ``Range: bytes=N-`` unless ``ranges`` is off; records requests."""

    body: bytes = b""
    ranges: bool = True
    seen: list[str | None] = []
    stall: threading.Event | None = None

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        want = self.headers.get("Range")
        type(self).seen.append(want)
        start = int(want.split("=")[1].rstrip("-")) if want and self.ranges else 0
        if start >= len(self.body) and want and self.ranges:
            self.send_response(416)
            self.end_headers()
            return
        part = self.body[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}")
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        if self.stall is not None:  # half the body, then the connection held open until the test sets it
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.stall.wait(120)
            return
        self.wfile.write(part)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def host(voc_tar, monkeypatch) -> Iterator[type[_RangeHandler]]:
    """A local host for voc2012's archive (the tiny tar, with its md5 as the published one)."""
    handler = type("Handler", (_RangeHandler,), {"body": voc_tar.read_bytes(), "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    release = RELEASES["voc2012"]
    archive = dataclasses.replace(
        release.archives[0],
        url=f"http://127.0.0.1:{server.server_port}/voc.tar",
        known_hash=f"md5:{hashlib.md5(handler.body).hexdigest()}",
    )
    monkeypatch.setitem(RELEASES, "voc2012", dataclasses.replace(release, archives=(archive,)))
    yield handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("ranges", [True, False])
def test_an_interrupted_download_is_resumed(tmp_path, host, ranges):
    host.ranges = ranges
    downloads = tmp_path / "raw" / "downloads"
    downloads.mkdir(parents=True)
    half = len(host.body) // 2
    (downloads / "VOCtrainval_11-May-2012.tar.part").write_bytes(host.body[:half])
    res = fetch("voc2012", tmp_path / "raw", tmp_path / "out", workers=0, progress=False, log=lambda s: None)
    assert host.seen == [f"bytes={half}-"]  # only the rest was asked for
    assert (downloads / "VOCtrainval_11-May-2012.tar").read_bytes() == host.body  # whole either way
    assert not (downloads / "VOCtrainval_11-May-2012.tar.part").exists()
    assert res.summary is not None and read_split(tmp_path / "out", "train_aug") == [A, B]


def test_a_download_is_kept_and_checked_again_not_downloaded_again(tmp_path, host):
    assert _fetch("voc2012", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--no-prepare") == 0
    assert host.seen == [None]
    assert _fetch("voc2012", "--raw", str(tmp_path / "raw"), "--no-prepare", "--overwrite") == 0
    assert host.seen == [None]  # the file in downloads/ matched its checksum


def test_a_download_that_does_not_match_its_checksum_is_one_error(tmp_path, host, capsys):
    host.body = host.body[:-512] + b"\1" * 512
    assert _fetch("voc2012", "--raw", str(tmp_path / "raw")) == 1
    _one_error_line(capsys.readouterr().err, "VOCtrainval_11-May-2012.tar", "checksum", "deleted")
    assert [p.name for p in (tmp_path / "raw" / "downloads").iterdir()] == []


def test_an_unreachable_host_is_one_error(tmp_path, monkeypatch, capsys):
    release = RELEASES["sbd"]
    archive = dataclasses.replace(release.archives[0], url="http://127.0.0.1:9/benchmark.tgz")  # discard port
    monkeypatch.setitem(RELEASES, "sbd", dataclasses.replace(release, archives=(archive,)))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert _fetch("sbd", "--raw", str(tmp_path / "raw")) == 1
    _one_error_line(capsys.readouterr().err, "http://127.0.0.1:9/benchmark.tgz", "download failed", "--archive")


def test_a_second_fetch_waits_for_the_download_under_way_then_checks_its_file(tmp_path, host):
    """Two fetches at once both wrote <file>.part and the second stopped with "[Errno 2] No such file or
    directory". The second waits while the first holds RAW/downloads (here: the test holds it, as the first), then
    finds the file the first left, checks it and downloads nothing."""
    import fcntl

    downloads = tmp_path / "raw" / "downloads"
    downloads.mkdir(parents=True)
    held = os.open(downloads, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # the first fetch, downloading
    waiting, lines, done = threading.Event(), [], []

    def log(line: str) -> None:
        lines.append(line)
        if "waiting for it to finish" in line:
            waiting.set()

    second = threading.Thread(
        target=lambda: done.append(fetch("voc2012", tmp_path / "raw", prepare=False, progress=False, log=log))
    )
    try:
        second.start()
        assert waiting.wait(60), lines
        assert host.seen == [] and not (downloads / "VOCtrainval_11-May-2012.tar.part").exists()  # it waits
        (downloads / "VOCtrainval_11-May-2012.tar").write_bytes(host.body)  # what the first one leaves
    finally:
        os.close(held)  # the first one ends
        second.join(60)
    assert done and host.seen == []  # checked, not downloaded again
    assert sorted(p.name for p in downloads.iterdir()) == ["VOCtrainval_11-May-2012.tar"]


_KILLED_FETCH = """
import dataclasses, sys
from wsss.data import fetch as f
release = f.RELEASES["voc2012"]
archive = dataclasses.replace(release.archives[0], url=sys.argv[1], known_hash=sys.argv[2])
f.RELEASES["voc2012"] = dataclasses.replace(release, archives=(archive,))
f.fetch("voc2012", sys.argv[3], prepare=False, progress=False)
"""


def test_a_killed_download_leaves_only_its_part_which_the_next_run_resumes(tmp_path, host):
    """Each killed download left a 0-byte downloads/tmpXXXX (pooch's temporary file) beside the .part.
    Killed (SIGKILL) mid-transfer, a download leaves its <file>.part alone; the next run resumes it."""
    import signal
    import time

    import wsss

    host.stall = threading.Event()  # the host sends half the file, then holds the connection open
    raw = tmp_path / "raw"
    part = raw / "downloads" / "VOCtrainval_11-May-2012.tar.part"
    archive = RELEASES["voc2012"].archives[0]
    env = {**os.environ, "PYTHONPATH": str(Path(wsss.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_FETCH, archive.url, archive.known_hash, str(raw)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not part.is_file() and time.monotonic() < deadline:  # the download under way (its bytes buffered)
            time.sleep(0.05)
        assert part.is_file()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        host.stall.set()
    assert [p.name for p in part.parent.iterdir()] == [part.name]
    have, host.stall = part.stat().st_size, None
    fetch("voc2012", raw, prepare=False, progress=False, log=lambda s: None)
    assert host.seen[-1] == (f"bytes={have}-" if have else None)  # resumed from the part
    assert [p.name for p in part.parent.iterdir()] == ["VOCtrainval_11-May-2012.tar"]
    assert (part.parent / "VOCtrainval_11-May-2012.tar").read_bytes() == host.body


# -- the parts -----------------------------------------------------------------------------------------
def test_member_names():
    assert str(safe_member_name(Path("a.tar"), "VOCdevkit/./VOC2012//x.jpg")) == "VOCdevkit/VOC2012/x.jpg"
    for bad in ("../x", "a/../../x", "/etc/passwd", "C:\\x", "a\\..\\..\\x", "\\x"):
        with pytest.raises(DataError, match="refused"):
            safe_member_name(Path("a.tar"), bad)
    assert not fetch_mod._escapes("a/b/../c") and fetch_mod._escapes("a/../../c")


def test_the_parser_knows_every_release_and_imports_no_data_code():
    assert tuple(RELEASES) == FETCH_DATASETS
    for release in RELEASES.values():
        assert all(a.known_hash.startswith("md5:") and len(a.known_hash) == 36 for a in release.archives)
    code = (
        "import sys; from wsss.cli import parse_args; parse_args(['data', 'fetch', 'voc2012', '--archive', 'x.tar']); "
        "print(sorted(m for m in ('torch', 'wsss.data', 'pooch', 'requests') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


# -- what a fetch never replaces ----------------------------------------------------------------------
def test_a_dataset_that_the_release_did_not_prepare_is_refused_without_overwrite(tmp_path, voc_tar, capsys):
    """`data fetch voc2012 --out mine` over a user's dataset replaced its classes.txt, cls_labels.npy and split lists
    and paired its photos with the release's masks. Refused now, naming them, before anything is unpacked; a dataset
    the release prepared (marked, or of an older wsss: VOC's classes and SegmentationClassAug) is prepared again."""
    raw, mine = tmp_path / "raw", tmp_path / "mine"
    (mine / "ImageSets/Segmentation").mkdir(parents=True)
    (mine / "classes.txt").write_text("background\ncat\n")
    (mine / "cls_labels.npy").write_bytes(b"mine")
    (mine / "ImageSets/Segmentation/train.txt").write_text("x\n")
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--out", str(mine), "--no-verify") == 1
    _one_error_line(
        capsys.readouterr().err,
        f"{mine}: holds files that `wsss data fetch voc2012` did not prepare",
        "classes.txt, cls_labels.npy, ImageSets/Segmentation/train.txt",
        "--overwrite",
    )
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before
    assert not (raw / "VOCdevkit").exists()  # refused before the unpacking
    assert (
        _fetch(
            "voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--out", str(mine), "--no-verify", "--overwrite"
        )
        == 0
    )
    assert read_split(mine, "train_aug") == [A, B]
    # the release's own dataset, marked or not (an older wsss's), is prepared again without --overwrite
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--out", str(mine), "--no-verify") == 0
    (mine / ".prepared").unlink()
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--out", str(mine), "--no-verify") == 0


@pytest.mark.parametrize("kind", ["file", "dangling link"])
def test_a_users_file_where_the_release_goes_is_never_deleted(tmp_path, voc_tar, capsys, kind):
    """`RAW/VOCdevkit` as a user's file was deleted by the unpacking (set aside as an earlier release)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    dest = raw / "VOCdevkit"
    if kind == "file":
        dest.write_text("my notes")
    else:
        dest.symlink_to(tmp_path / "nowhere")
    for extra in ([], ["--overwrite"]):
        args = ["--archive", str(voc_tar), "--raw", str(raw), "--out", str(tmp_path / "out"), "--no-verify", *extra]
        assert _fetch("voc2012", *args) == 1
        _one_error_line(capsys.readouterr().err, f"{dest}: is not a folder", "never deleted")
        assert dest.is_symlink() if kind != "file" else dest.read_text() == "my notes"
    assert sorted(p.name for p in raw.iterdir()) == ["VOCdevkit"]


def test_a_second_unpacking_of_a_release_is_refused_while_the_first_runs(tmp_path, voc_tar, capsys):
    """Two unpackings into one --raw: the second removed the first's temporary folder as a killed one's, and the first
    reported all its members while a part of them were in place. An unpacking holds a lock in its folder; a second
    one is refused while it is held, and removes the folder once its process is gone."""
    from wsss.utils.runlock import unpack_lock

    raw = tmp_path / "raw"
    first = raw / ".VOCdevkit.abc123.unpacking"
    (first / "VOCdevkit").mkdir(parents=True)
    (first / "VOCdevkit" / "half.jpg").write_bytes(b"written so far")
    with unpack_lock(first, "wsss data fetch (big.tar)"):  # the first job, still unpacking
        assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--no-prepare", "--no-verify") == 1
        _one_error_line(
            capsys.readouterr().err,
            f"{raw / 'VOCdevkit'}: wsss data fetch (big.tar) is unpacking into this folder",
            f"pid {os.getpid()}",
        )
        assert (first / "VOCdevkit" / "half.jpg").is_file() and not (raw / "VOCdevkit").exists()
    # the first job gone (killed): its folder is a killed unpacking's, removed by the next
    assert _fetch("voc2012", "--archive", str(voc_tar), "--raw", str(raw), "--no-prepare", "--no-verify") == 0
    assert not first.exists() and (raw / "VOCdevkit/VOC2012/JPEGImages").is_dir()
