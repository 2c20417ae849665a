"""Speed of CLIP-ES's CAM stage (``wsss cam`` of a ``clip_es`` run) on this CPU.

Times :func:`wsss.cam.clip_es.clip_es_cams` on the VOC mini photos (their own labels) for the golden
tiny CLIP (``--arch tiny``) and for a ViT-B/16 of random weights (``--arch vitb16``: the paper's
architecture, built by open_clip without any download; the numbers of a random network cost what the
pretrained one costs). Also times the labelled classes' Grad-CAM done one class at a time (the official
loop: a forward and a backward per class) against wsss's (one forward, a backward per class). Usage::

    .venv/bin/python bench/bench_clip_es.py [--arch tiny|vitb16] [--threads 1] [--repeat 2]

No assertions: the figures are for BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from wsss.cam.clip_es import clip_es_cams, clip_input, gradcam_of_labels, text_features
from wsss.cli_common import script_parser
from wsss.data import VOCDataset
from wsss.methods.clip_runs import VOC_BACKGROUND
from wsss.models.clip import ClipArch, build_clip, load_clip, vision_tokens

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "clip_es_state_dict.npz"  # tests/golden/README.md#clip_es_state_dict
DATA = REPO / "tests" / "assets" / "voc-real-mini"  # the tests' six VOC photos
VIT_B16 = ClipArch(512, 224, 16, 768, 12, 77, 49408, 512, 8, 12)


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--arch", choices=("tiny", "vitb16"), default="tiny")
    ap.add_threads(1)
    ap.add_argument("--repeat", type=int, default=2, help="passes over the photos (the first one is a warm-up)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = load_clip(GOLDEN, text_heads=2, quick_gelu=True)[0] if a.arch == "tiny" else build_clip(VIT_B16)
    for p in model.parameters():
        p.requires_grad_(False)
    ds = VOCDataset(DATA, "val")
    names = ds.class_names[1:]
    fg = text_features(model, names, ["a clean origami {}."])
    bg = text_features(model, VOC_BACKGROUND, ["a clean origami {}."])
    per_image, batched, looped, labels = [], [], [], 0
    for rep in range(a.repeat):
        for id in ds.ids:
            image, keys = ds.load_image(id), np.flatnonzero(ds.labels(id) > 0.5)
            t0 = time.perf_counter()
            clip_es_cams(model, image, keys, fg, bg)
            t1 = time.perf_counter()
            x = clip_input(image)
            grid = (x.shape[-2] // 16, x.shape[-1] // 16)
            tokens, _ = vision_tokens(model.visual, x)
            feats = torch.cat([fg[keys], bg])
            t2 = time.perf_counter()
            gradcam_of_labels(model, tokens, feats, len(keys), grid)
            t3 = time.perf_counter()
            for k in range(len(keys)):  # the official loop: one forward + backward per class
                order = [k, *[j for j in range(len(keys)) if j != k]]
                gradcam_of_labels(model, tokens, torch.cat([feats[order], feats[len(keys) :]]), 1, grid)
            t4 = time.perf_counter()
            if rep > 0 or a.repeat == 1:
                per_image.append(t1 - t0)
                batched.append(t3 - t2)
                looped.append(t4 - t3)
                labels += len(keys)
    n = len(per_image)
    total = sum(per_image)
    print(f"arch {a.arch}, {a.threads} thread(s), {n} images ({labels} labelled classes), torch {torch.__version__}")
    print(f"CAM stage: {n / total:.2f} images/s ({1000 * statistics.mean(per_image):.0f} ms/image mean)")
    print(
        f"Grad-CAM of the labelled classes: shared forward {1000 * sum(batched) / n:.0f} ms/image, "
        f"one class at a time {1000 * sum(looped) / n:.0f} ms/image"
    )


if __name__ == "__main__":
    main()
