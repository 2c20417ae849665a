"""What naming a route's inputs by content costs (``wsss.pipelines.route_data.data_files``: each file's SHA-1, read by a
few threads; ``wsss.runs.stamps.photo_record`` a photo's size and digest): files/s and MB/s on this machine, against
the names, sizes and times an older wsss read (``legacy_data_files``), and that rate carried to COCO's train set.

The bench writes ``--photos`` files of ``--kb`` random bytes each (a JPEG does not compress further: the digest reads
every byte either way) into ``--work``, reads them once to warm the page cache, then times ``--rounds`` passes of
each way and keeps the fastest. A rerun of a route reads its inputs from the cache as here; a first read from a disk
runs at the disk's speed, which this machine's page cache hides. COCO at the end is an extrapolation at the measured
MB/s and files/s, not a measurement.

    .venv/bin/python bench/bench_content_stamps.py --work /tmp/b_stamps --photos 400 --kb 160
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from wsss.cli_common import script_parser

COCO_PHOTOS, COCO_BYTES = 118_287, 19.3e9  # COCO 2017 train: its photos and their bytes (train2017.zip's content)


def write_photos(folder: Path, n: int, kb: int) -> int:
    """``n`` files of ``kb`` KiB of random bytes in ``folder`` (kept when there already); their bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        if not path.is_file() or path.stat().st_size != kb * 1024:
            path.write_bytes(os.urandom(kb * 1024))
    return sum(p.stat().st_size for p in folder.iterdir())


def fastest(rounds: int, work) -> float:  # noqa: ANN001 - any callable
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--kb", type=int, default=160, help="KiB a photo (COCO's mean: about 160)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from wsss.pipelines import route_data as route
    from wsss.runs.stamps import content_digest

    folder = args.work / "photos"
    size = write_photos(folder, args.photos, args.kb)
    route.data_files([folder], flat=[folder])  # the page cache warmed
    ways = {
        f"by content, {route.DIGEST_THREADS} threads (data_files)": lambda: route.data_files([folder], flat=[folder]),
        "by content, 1 thread": lambda: [content_digest(p) for p in sorted(folder.iterdir())],
        "by name, size and time (an older wsss)": lambda: route.legacy_data_files([folder]),
    }
    print(
        f"{args.photos} files of {args.kb} KiB ({size / 1e6:.1f} MB), warm page cache, fastest of {args.rounds}; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    for name, work in ways.items():
        seconds = fastest(args.rounds, work)
        per_file, rate = seconds / args.photos, size / seconds / 1e6
        coco = max(COCO_PHOTOS * per_file, COCO_BYTES / 1e6 / rate)
        print(
            f"{name}: {seconds:.3f} s, {args.photos / seconds:,.0f} files/s, {rate:,.0f} MB/s; COCO train "
            f"({COCO_PHOTOS:,} photos, {COCO_BYTES / 1e9:.1f} GB) extrapolated: {coco:.0f} s"
        )


if __name__ == "__main__":
    main()
