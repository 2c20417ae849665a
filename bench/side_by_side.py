"""Timing a command of wsss beside the official code's, shared by ``bench_clip_es_official.py`` and
``bench_excel_official.py`` (run as ``python bench/<script>.py``, so this file is importable beside them).

On the CPU the figure compared is CPU time (user + system of the process and its children, ``os.wait4``): the
2-core machine is shared, and wall time swings with the other jobs. On a GPU the figure is wall time (the GPU's
time is not the process's CPU time), and the peak GPU memory while the command runs is read by polling
``nvidia-smi`` (both codes alike; it counts each process's CUDA context, about 0.5 GiB, with its tensors).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple


class Timing(NamedTuple):
    wall: float  # seconds
    cpu: float  # seconds of CPU (user + system) of the process and its children
    gpu_gib: float | None  # peak GPU memory of the GPU's processes while it ran (None: not measured)


class GpuMemoryPeak:
    """The peak of the GPU's used memory (``nvidia-smi --query-gpu=memory.used``) above what was used when the
    object was made, sampled every ``interval`` seconds in a thread while the ``with`` block runs. The whole
    GPU's, not per process (a virtual machine's driver may not report per-process memory): the lent machine
    runs nothing else."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.base_mib = self._sample()
        self.peak_mib = self.base_mib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def _sample() -> float:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return float(out.split()[0]) if out.split() and out.split()[0].replace(".", "", 1).isdigit() else 0.0

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuMemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gib(self) -> float:
        return (self.peak_mib - self.base_mib) / 1024


def timed(cmd: list[str], cwd: Path, env: dict[str, str], gpu: bool = False) -> Timing:
    """Run ``cmd`` (its output discarded; on failure the script stops with the end of its stderr)."""
    t0 = time.perf_counter()
    with (
        GpuMemoryPeak() if gpu else contextlib.nullcontext() as poll,  # its baseline read before the command starts
        open(os.devnull, "w") as null,
        subprocess.Popen(cmd, cwd=cwd, env=env, stdout=null, stderr=subprocess.PIPE, text=True) as proc,
    ):
        err = proc.stderr.read() if proc.stderr else ""  # read before the wait: a full pipe would block it
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    t = Timing(elapsed, usage.ru_utime + usage.ru_stime, poll.gib if poll else None)
    # each command's figures as it ends, so that a run stopped part-way (a device call's limit) still tells them
    memory = f", {t.gpu_gib:.2f} GiB of GPU" if t.gpu_gib is not None else ""
    print(
        f"  {t.wall:.1f} s wall, {t.cpu:.1f} s CPU{memory}: {' '.join(Path(c).name for c in cmd[:4])} ... "
        f"{' '.join(cmd[4:])[-90:]}",
        file=sys.stderr,
        flush=True,
    )
    return t


def fastest(new: Timing, best: Timing | None, gpu: bool) -> Timing:
    """The better of two rounds: the least wall time on a GPU, the least CPU time on the CPU."""
    if best is None:
        return new
    return min(new, best, key=lambda t: t.wall if gpu else t.cpu)


def photo_copies(photos: list[str], copies: int) -> list[tuple[str, str]]:
    """(id, photo) pairs: the photos, then ``copies - 1`` more times under the ids ``<photo>_c<k>``. On a GPU a
    few photos take less time than the start of a process, so a timed run needs more images than there are."""
    return [(photo if k == 0 else f"{photo}_c{k}", photo) for k in range(copies) for photo in photos]


class PhotoCopy(NamedTuple):
    id: str
    mask: Any  # (H, W) uint8 class ids of the photo's VOC mask
    labels: Any  # (C,) float32 image-level labels, from the mask


def write_voc_copies(data: Path, root: Path, copies: int) -> list[PhotoCopy]:
    """The photos of the VOC-layout ``data`` as a wsss dataset in ``root``: JPEGImages and SegmentationClass
    (links), cls_labels.npy, the splits ``two`` (2 photos; not one: the official CLIP-ES script's ``np.loadtxt`` of
    a one-line list is a 0-d array it cannot iterate) and ``all`` (every photo ``copies`` times,
    :func:`photo_copies`). Each copy's id, mask and labels are returned for the official layout's own files."""
    import numpy as np
    from PIL import Image

    from wsss.data.classes import VOC_CLASSES
    from wsss.data.voc import labels_from_mask, write_cls_labels

    made = []
    for id, photo in photo_copies(sorted(p.stem for p in (data / "JPEGImages").glob("*.jpg")), copies):
        for sub, ext in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
            link = root / sub / f"{id}{ext}"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(data / sub / f"{photo}{ext}")
        mask = np.asarray(Image.open(data / "SegmentationClass" / f"{photo}.png"))
        made.append(PhotoCopy(id, mask, labels_from_mask(mask, len(VOC_CLASSES))))
    write_cls_labels(root, {c.id: c.labels for c in made})
    ids = [c.id for c in made]
    (root / "ImageSets/Segmentation").mkdir(parents=True, exist_ok=True)
    for split, names in (("two", ids[:2]), ("all", ids)):
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return made
