"""``wsss report RUN``: one self-contained folder (``report/index.html`` + PNGs beside it).

It shows the resolved config, the metrics of every output the run has on the chosen split (each
scored with the same evaluator as ``wsss eval``), the co-occurrence diagnostics, training curves
from ``metrics.jsonl``, and image grids (image, ground truth, CAM per labelled class, pseudo label,
prediction), the worst images by IoU first.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from wsss.data import VOCDataset  # noqa: E402
from wsss.evaluation import confusion_matrix, evaluate, scores_from_hist  # noqa: E402
from wsss.utils.io import atomic_write, read_label_png, voc_palette  # noqa: E402

OUTPUTS = (("cam_labels", "CAM seeds"), ("pseudo", "pseudo labels"), ("predictions", "segmentation"),
           ("predictions_crf", "segmentation + CRF"))  # fmt: skip
_PALETTE = voc_palette()


def colorize(label: np.ndarray) -> np.ndarray:
    return _PALETTE[label.astype(np.int64)]


def _save_png(fig: plt.Figure, path: Path) -> None:
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)


def _curves(metrics: list[dict[str, Any]], out: Path) -> list[str]:
    files = []
    train = [m for m in metrics if "loss/loss" in m]
    if train:
        keys = sorted(k for k in train[0] if k.startswith("loss/"))
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k in keys:
            ax.plot([m["step"] for m in train], [m.get(k, np.nan) for m in train], label=k[5:])
        ax.set_xlabel("iteration"), ax.set_ylabel("loss"), ax.legend(fontsize=7), ax.grid(alpha=0.3)
        _save_png(fig, out / "loss.png")
        files.append("loss.png")
    val = [m for m in metrics if "val" in m]
    if val:
        keys = sorted(k for k in val[0]["val"] if k.endswith("miou"))
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k in keys:
            ax.plot([m["step"] for m in val], [m["val"][k] for m in val], marker="o", label=k)
        ax.set_xlabel("iteration"), ax.set_ylabel("val mIoU (%)"), ax.legend(fontsize=7), ax.grid(alpha=0.3)
        _save_png(fig, out / "val.png")
        files.append("val.png")
    return files


def _far_chart(result: Any, out: Path, name: str) -> str | None:
    far = {r["name"]: r.get("far") for r in result.per_class}
    names = [k for k, v in far.items() if v is not None and np.isfinite(v)]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(names, [100 * far[k] for k in names], color="#c44")
    ax.set_ylabel("false activation (%)"), ax.tick_params(axis="x", rotation=45)
    _save_png(fig, out / name)
    return name


def _grid(ds: VOCDataset, id: str, run: Path, split: str, out: Path) -> str:
    image, gt = ds.load_image(id), ds.load_mask(id)
    panels: list[tuple[str, np.ndarray, str | None]] = [
        ("image", image, None),
        ("ground truth", colorize(gt), None),
    ]
    cam_file = run / "cams" / split / f"{id}.npy"
    if cam_file.is_file():
        d = np.load(cam_file, allow_pickle=True).item()
        for key, cam in zip(d["keys"], d["cam"]):
            panels.append((f"CAM {ds.class_names[int(key)]}", cam.astype(np.float32), "jet"))
    for folder, title in OUTPUTS:
        f = run / folder / split / f"{id}.png"
        if f.is_file():
            panels.append((title, colorize(read_label_png(f)), None))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.4))
    for ax, (title, arr, cmap) in zip(np.atleast_1d(axes), panels):
        if cmap:
            ax.imshow(image)
            ax.imshow(arr, cmap=cmap, alpha=0.5, vmin=0, vmax=1)
        else:
            ax.imshow(arr)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    name = f"grid_{id}.png"
    _save_png(fig, out / "images" / name)
    return f"images/{name}"


def _table(result: Any) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(r['name']))}</td>"
        + "".join(
            f"<td>{'' if r.get(k) is None else f'{100 * r[k]:.1f}'}</td>" for k in ("iou", "precision", "recall", "far")
        )
        + "</tr>"
        for r in result.per_class
    )
    return ("<table><tr><th>class</th><th>IoU</th><th>precision</th><th>recall</th><th>false act.</th></tr>"
            f"{rows}</table>")  # fmt: skip


def write_report(
    run: str | Path, *, split: str | None = None, data_root: str | None = None, max_images: int = 12
) -> Path:
    """Write ``<run>/report/index.html`` and return its path."""
    run = Path(run)
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: not a run directory")
    cfg = yaml.safe_load(cfg_file.read_text())
    split = split or cfg["data"]["val_split"]
    ds = VOCDataset(data_root or cfg["data"]["root"], split)
    out = run / "report"
    (out / "images").mkdir(parents=True, exist_ok=True)
    metrics_file = run / "metrics.jsonl"
    metrics = (
        [json.loads(line) for line in metrics_file.read_text().splitlines() if line] if metrics_file.is_file() else []
    )

    sections, summary = [], {}
    worst_source = None
    for folder, title in OUTPUTS:
        pred_dir = run / folder / split
        if not pred_dir.is_dir() or not all((pred_dir / f"{i}.png").is_file() for i in ds.ids):
            continue
        result = evaluate(pred_dir, ds.root, split, dataset=ds, pseudo=folder == "pseudo")
        summary[title] = result
        far = _far_chart(result, out, f"far_{folder}.png")
        sections.append(
            f"<h3>{title} ({folder}/{split}): mIoU {100 * result.miou:.2f}</h3>{_table(result)}"
            + (f'<img src="{far}" alt="false activation per class">' if far else "")
            + f"<pre>{html.escape(result.format_table())}</pre>"
        )
        if folder.startswith("predictions") or worst_source is None:
            worst_source = pred_dir

    ids = list(ds.ids)
    if worst_source is not None:  # worst images by IoU first

        def image_miou(i: str) -> float:
            h = confusion_matrix(ds.load_mask(i), read_label_png(worst_source / f"{i}.png"), ds.num_classes)
            return float(scores_from_hist(h)["miou"])

        ids.sort(key=image_miou)
    grids = [(_grid(ds, i, run, split, out), i) for i in ids[:max_images]]
    curves = _curves(metrics, out)

    figures = "".join(f'<p>{html.escape(i)}</p><img src="{g}" alt="{html.escape(i)}">' for g, i in grids)
    headline = "".join(f"<tr><td>{t}</td><td>{100 * r.miou:.2f}</td></tr>" for t, r in summary.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>wsss report: {html.escape(run.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} img{{max-width:100%}}</style></head><body>
<h1>Run {html.escape(str(run))}</h1>
<p>method <b>{html.escape(str(cfg.get("method")))}</b>, backbone {html.escape(str(cfg["model"]["backbone"]))},
split <b>{html.escape(split)}</b> ({len(ds)} images)</p>
<h2>Summary (mIoU %)</h2><table><tr><th>output</th><th>mIoU</th></tr>{headline}</table>
<h2>Training curves</h2>{"".join(f'<img src="{c}" alt="{c}">' for c in curves) or "<p>no metrics.jsonl</p>"}
<h2>Metrics</h2>{"".join(sections) or "<p>no outputs on this split yet (wsss cam / pseudo / predict)</p>"}
<h2>Images (worst first)</h2>{figures}
<h2>Config</h2><pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False))}</pre>
</body></html>"""
    with atomic_write(out / "index.html", "w") as f:
        f.write(page)
    with atomic_write(out / "summary.json", "w") as f:
        json.dump({t: r.to_json() for t, r in summary.items()}, f, indent=1)
    return out / "index.html"
