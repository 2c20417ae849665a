"""What a trained classifier's class maps hold on its training photos (why RCA's real-photo CAMs came out empty): are
they empty, uniform, one class everywhere, and does the classifier believe the image labels?

For every image of the split and every labelled class: the scale-1.0, un-flipped class map that ``wsss cam``
starts from (``method.cam_maps``: the CAM before the ReLU of ``CamPasses``), its share of positive
pixels and whether it is empty (no pixel above 0: the ReLU'd, normalised CAM of that class is then zero
everywhere and the seed never names it, unless ``infer.cam_empty_fallback`` fills it); the seeds at every
level from ``wsss cam``'s own CAM at scale 1 with its flip (``Run.labelled_cam``); and
the class probability of the method's own classifier (sigmoid of the GAP of its map: the logit of the CAM
baseline and RCA; SC-CAM's parent head by its ``logits``). Also the mean probability of the *unlabelled*
classes (a classifier that switched every class off has both low), the loss at the first and the last
logged step (``metrics.jsonl``), and per method what it keeps: RCA's memory writes at the end (the
labelled classes with a probability above ``options.memory_threshold`` are the ones its memory bank ever
receives), SC-CAM's sub-category sizes (images per sub-category, from ``subcategory_labels.npz``). If ``wsss cam`` has
written the split (``RUN/cams/SPLIT``, ``RUN/cam_labels/SPLIT``), what it wrote: the labelled maps that are zero
everywhere, and the labelled classes its seed does not name at any pixel.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/seed_diagnosis.py runs/e4_rca --json runs/logs/diag_rca.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.cli_common import script_parser
from wsss.data import VOCDataset
from wsss.data.transforms import prepare_image
from wsss.evaluation.bkg_sweep import DEFAULT_THRESHOLDS, sweep_bkg_threshold
from wsss.runs.run import load_run


def _loss_ends(run_dir: Path) -> dict[str, Any]:
    """{term: [first logged value, last logged value]} of every ``metrics.jsonl`` under the run (rounds too)."""
    out: dict[str, Any] = {}
    for path in sorted(run_dir.glob("**/metrics.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if any(k.startswith("loss/") for k in r)]
        if rows:
            keys = [k for k in rows[0] if k.startswith("loss/")]
            out[str(path.parent.relative_to(run_dir)) or "."] = {
                k[5:]: [round(rows[0][k], 4), round(rows[-1][k], 4)] for k in keys
            }
    return out


@torch.no_grad()
def class_maps_and_probs(method: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((C-1, h, w) class maps as ``wsss cam`` reads them, (C-1,) class probabilities) of one image."""
    maps = method.cam_maps(x)[0]
    if method.name == "sccam":
        logits = method.logits(x)[0]
    else:
        logits = maps.mean(dim=(2, 3))  # GAP of the map: the classifier's own logit (CAM baseline, RCA)
    return maps[0], torch.sigmoid(logits[0])


def saved_outputs(run_dir: Path, split: str, ids: list[str], labels: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """What `wsss cam` wrote for ``ids`` (None if it has not): labelled maps that are zero at every pixel, and
    labelled classes that no pixel of the seed names (None without the seeds)."""
    from wsss.utils.io import find_cam_file, load_labelled_cam, per_id_path, read_label_png

    cams, seeds = run_dir / "cams" / split, run_dir / "cam_labels" / split
    files = [find_cam_file(cams, id) for id in ids]
    if not ids or any(f is None for f in files):
        return None
    seed_files = [per_id_path(seeds, id, ".png") for id in ids]
    have_seeds = all(f.is_file() for f in seed_files)
    pairs = empty = unnamed = 0
    for id, cam_file, seed_file in zip(ids, files, seed_files):
        keys, maps = load_labelled_cam(cam_file)
        saved = dict(zip(keys.tolist(), maps))
        lab = np.flatnonzero(labels[id]).tolist()
        pairs += len(lab)
        empty += sum(1 for c in lab if c not in saved or float(saved[c].max()) <= 0)
        if have_seeds:
            named = set(np.unique(read_label_png(seed_file)).tolist())
            unnamed += sum(1 for c in lab if c + 1 not in named)
    return {"labelled_pairs": pairs, "empty_maps": empty, "classes_not_in_seed": unnamed if have_seeds else None}


def diagnose(run_dir: str | Path, split: str = "train", limit: int | None = None) -> dict[str, Any]:
    run = load_run(run_dir)
    method, cfg = run.method, run.cfg
    method.eval()
    ds = VOCDataset(cfg.data.root, split)
    ids = ds.ids[:limit] if limit else ds.ids
    names = ds.class_names[1:]
    k = len(names)
    n_lab = np.zeros(k, int)
    n_empty = np.zeros(k, int)
    pos_share = np.zeros(k)
    prob_lab = np.zeros(k)
    prob_unlab, n_unlab = np.zeros(k), np.zeros(k, int)
    top_share = []  # per image: the share of pixels the strongest labelled class wins among the labelled
    seeds_cam: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # id -> (labelled classes, their maps, float16)
    for id in ids:
        labels = ds.labels(id) > 0.5
        image = ds.load_image(id)
        x = prepare_image(image, cfg.infer.cam_input_size, run.device)
        maps, probs = class_maps_and_probs(method, x)
        keys, cam = run.labelled_cam(image, labels.astype(np.float32), scales=[1.0])  # what `wsss cam` computes
        seeds_cam[id] = (keys, cam.astype(np.float16))
        maps, probs = maps.float().cpu().numpy(), probs.float().cpu().numpy()
        for c in range(k):
            if labels[c]:
                n_lab[c] += 1
                n_empty[c] += int(maps[c].max() <= 0)
                pos_share[c] += float((maps[c] > 0).mean())
                prob_lab[c] += probs[c]
            else:
                n_unlab[c] += 1
                prob_unlab[c] += probs[c]
        lab = np.flatnonzero(labels)
        if lab.size > 1:
            win = maps[lab].argmax(axis=0)
            top_share.append(float(np.bincount(win.ravel(), minlength=lab.size).max() / win.size))
    per_class = {
        names[c]: {
            "images": int(n_lab[c]),
            "empty_maps": int(n_empty[c]),
            "positive_share": round(pos_share[c] / max(n_lab[c], 1), 3),
            "prob_labelled": round(prob_lab[c] / max(n_lab[c], 1), 3),
            "prob_unlabelled": round(prob_unlab[c] / max(n_unlab[c], 1), 3),
        }
        for c in range(k)
    }

    def full_cam(id: str) -> np.ndarray:
        keys, maps = seeds_cam[id]
        full = np.zeros((k, *maps.shape[1:]), dtype=np.float32)
        full[keys] = maps
        return full

    sweep = sweep_bkg_threshold(full_cam, ds, ids, DEFAULT_THRESHOLDS)
    out: dict[str, Any] = {
        "run": str(run_dir),
        "seed_miou_scale1": {f"{t:.2f}": round(100 * m, 2) for t, m in zip(sweep["thresholds"], sweep["miou"])},
        "seed_best": [sweep["best_thre"], round(100 * sweep["best_miou"], 2)],
        "split": f"{split} ({len(ids)} images)",
        "empty_maps": f"{int(n_empty.sum())} of {int(n_lab.sum())} labelled (image, class) pairs",
        "empty_share": round(float(n_empty.sum() / max(n_lab.sum(), 1)), 3),
        "mean_prob_labelled": round(float(prob_lab.sum() / max(n_lab.sum(), 1)), 3),
        "mean_prob_unlabelled": round(float(prob_unlab.sum() / max(n_unlab.sum(), 1)), 3),
        "strongest_labelled_class_pixel_share": round(float(np.mean(top_share)), 3) if top_share else None,
        "loss_first_last": _loss_ends(Path(run_dir)),
        "per_class": per_class,
        "wsss_cam_outputs": saved_outputs(Path(run_dir), split, list(ids), {i: ds.labels(i) > 0.5 for i in ids}),
    }
    if method.name == "rca":
        thr = method.options.memory_threshold
        written = {names[c]: v["images"] for c, v in enumerate(per_class.values())}
        out["rca_memory"] = {
            "threshold": thr,
            "note": "labelled classes whose mean probability at the end is above the memory threshold",
            "classes_above": [n for n, v in per_class.items() if v["prob_labelled"] > thr],
            "labelled_images": written,
            "queue_entry_norm_mean": [round(float(v), 2) for v in method.queue.norm(dim=-1).mean(dim=1)],
        }
    if method.name == "sccam":
        from wsss.methods.sccam import labels_file
        from wsss.methods.sccam.subcategory import SubcategoryLabels

        sizes = {}
        for rdir in sorted(Path(run_dir).glob("round_*")):
            path = labels_file(rdir)
            if path is None:
                continue
            sub = SubcategoryLabels.load(path)
            sizes[rdir.name] = {
                names[c]: np.bincount(sub.assign[sub.assign[:, c] >= 0, c], minlength=sub.k).tolist() for c in range(k)
            }
        out["sccam_subcategory_sizes"] = sizes
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = script_parser(__doc__)
    p.add_argument("run", help="a trained classifier run")
    p.add_split("train")
    p.add_argument("--limit", type=int, default=None, help="the first N images only")
    p.add_threads(1)
    p.add_json()
    args = p.parse_args(argv)
    old = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        res = diagnose(args.run, args.split, args.limit)
    finally:
        torch.set_num_threads(old)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
