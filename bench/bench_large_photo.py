"""Peak memory and time of `wsss predict` on one large photo (a phone's 6000x4000), through the run's own
``Run.predict`` (the label, as `wsss predict` writes it) and ``Run.seg_prob`` (the probabilities that
``--crf`` and ``--save-probs`` need), each in a fresh process so that its peak is its own.

    .venv/bin/python bench/bench_large_photo.py --run RUN [--image PHOTO] [--size 6000x4000]

Without ``--image``, the first image of the run's val split is upscaled to ``--size``. Prints, per call, the
seconds and the process's peak resident memory (``ru_maxrss``). One thread.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from wsss.cli_common import script_parser

CHILD = """
import resource, sys, time
import torch
torch.set_num_threads(1)
from wsss.runs.run import load_run
from wsss.utils.io import read_image
run = load_run(sys.argv[1], device="cpu")
image = read_image(sys.argv[2])
start = time.perf_counter()
out = run.predict(image) if sys.argv[3] == "predict" else run.seg_prob(image)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
print(f"{sys.argv[3]:9s} {'x'.join(map(str, out.shape)):>14s}  {seconds:6.1f} s  peak {peak:5.2f} GB")
"""


def large_photo(run: Path, size: tuple[int, int], out: Path) -> Path:
    from PIL import Image

    from wsss.core.config import load_run_config
    from wsss.data import VOCDataset

    cfg = load_run_config(run)
    ds = VOCDataset(cfg.data.root, cfg.data.val_split)
    Image.fromarray(ds.load_image(ds.ids[0])).resize(size, Image.BILINEAR).save(out, quality=90)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = script_parser(__doc__)
    ap.add_argument("--run", type=Path, required=True, help="a run with a segmentation head")
    ap.add_argument("--image", type=Path, default=None, help="the photo (default: a val image upscaled)")
    ap.add_argument("--size", default="6000x4000", help="WxH of the upscaled photo")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        w, h = (int(v) for v in args.size.split("x"))
        image = args.image or large_photo(args.run, (w, h), Path(tmp) / "large.jpg")
        print(f"{image}: {args.size if args.image is None else 'as given'}; run {args.run}")
        for call in ("predict", "seg_prob"):
            subprocess.run([sys.executable, "-c", CHILD, str(args.run), str(image), call], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
