"""How right are SeCo's patch tags? Tags from a run's saved train CAMs, checked against the ground truth.

SeCo tags its local patches from the CAM (docs/methods/seco.md#decompose). This script redoes that decomposition on
a run's saved CAMs (``wsss cam RUN --split train``: multi-scale + flip, whole images) at the run's CAM
levels, with the corrected tag rules, and compares each tag with the ground truth of its patch (a
synthetic set's context masks say which background pixels are water / rails):

- the share of patches tagged background, one class, or ignored;
- tag precision: of the patches tagged class c, the share holding at least ``--min-share`` of c;
- context patches: patches at least half context (water / rails) and under ``--min-share`` object,
  in images labelled with the class the context comes with (as the FAR of compare.py), and how they
  are tagged (as that class, as background, ignored, or as another class of the image).

    .venv/bin/python experiments/seco_tags.py runs/bench_thr/seco runs/bench_thr/cam --data data/synth_bench
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from wsss.cam import cam_to_roi_mask
from wsss.cli_common import script_parser
from wsss.core.config import load_config
from wsss.data.voc import VOCDataset
from wsss.methods.seco.decompose import assign_tags, sample_patch_positions
from wsss.utils.io import load_cam_of, read_label_png


def _kind(tag: int) -> str:
    return "bg" if tag == 0 else "ignored" if tag < 0 else "class"


def tag_stats(run: Path, data: Path, patches: int, size: int, min_share: float, seed: int) -> dict[str, float]:
    c = load_config(run / "config.yaml").cam
    ds = VOCDataset(data, "train")
    meta = json.loads((data / "synth_meta.json").read_text())
    # context id -> the class it comes with
    owner = {int(k): meta["classes"].index(v["accompanies"]) for k, v in meta["contexts"].items()}
    g = torch.Generator().manual_seed(seed)
    area = float(size * size)
    tags, context_tags = Counter(), Counter()  # patches by kind; context patches by how they are tagged
    for id in sorted({p.stem for p in (run / "cams" / "train").glob("*.np[yz]")}):
        labels = torch.from_numpy(np.asarray(ds.labels(id), dtype=np.float32))[None]
        cam = torch.from_numpy(load_cam_of(run / "cams" / "train", id, labels.shape[1]))[None]
        gt = ds.load_mask(id)
        ctx = read_label_png(data / "SegmentationContext" / f"{id}.png")
        roi = cam_to_roi_mask(
            cam, labels, ignore_mid=True, bkg_thre=c.bkg_thre, high_thre=c.high_thre, low_thre=c.low_thre
        )
        top_left, _, _ = sample_patch_positions(roi, patches, size, generator=g, official_seed=False)
        flags = assign_tags(roi, top_left, size, no_class_global_tag=-1.0, area_weighted_by_class_id=False)[0, 2:]
        for (h0, w0), tag in zip(top_left[0].tolist(), flags.long().tolist()):
            g_patch, c_patch = gt[h0 : h0 + size, w0 : w0 + size], ctx[h0 : h0 + size, w0 : w0 + size]
            tags[_kind(tag)] += 1
            if tag > 0:
                tags["class_right"] += int((g_patch == tag).sum() / area >= min_share)
            context_share = ((c_patch > 0) & (g_patch == 0)).sum() / area
            object_share = ((g_patch > 0) & (g_patch < 255)).sum() / area
            cid = int(np.bincount(c_patch[c_patch > 0]).argmax()) if context_share >= 0.5 else 0
            if cid and object_share < min_share and labels[0, owner[cid] - 1] > 0:
                context_tags["its class" if tag == owner[cid] else _kind(tag)] += 1
    n = tags["bg"] + tags["class"] + tags["ignored"]
    nx = sum(context_tags.values())

    def share(key: str, counter: Counter, total: int) -> float:
        return 100 * counter[key] / max(total, 1)

    return {
        "patches": n,
        "bg %": share("bg", tags, n),
        "class %": share("class", tags, n),
        "ignored %": share("ignored", tags, n),
        "class-tag precision %": share("class_right", tags, tags["class"]),
        "context patches": nx,
        "context as its class %": share("its class", context_tags, nx),
        "context as bg %": share("bg", context_tags, nx),
        "context ignored %": share("ignored", context_tags, nx),
        "context as another class %": share("class", context_tags, nx),
    }


def main() -> None:
    p = script_parser(__doc__)
    p.add_argument("runs", nargs="+", type=Path, help="run directories with cams/train (`wsss cam RUN --split train`)")
    p.add_argument("--data", type=Path, required=True, help="the synthetic set (synth_meta.json, SegmentationContext)")
    p.add_argument("--patches", type=int, default=4, help="patches per image (the CPU preset's 4)")
    p.add_argument("--patch-size", type=int, default=24, help="patch side in pixels (the CPU preset's 24)")
    p.add_argument("--min-share", type=float, default=0.1, help="object share that makes a patch hold a class")
    p.add_seed()
    a = p.parse_args()
    rows = {str(r): tag_stats(r, a.data, a.patches, a.patch_size, a.min_share, a.seed) for r in a.runs}
    keys = list(next(iter(rows.values())))
    print("| run | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r, s in rows.items():
        print(f"| {r} | " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in s.values()) + " |")


if __name__ == "__main__":
    main()
