"""Every picture of the toolkit, in one place: image grids (``wsss report``, ``wsss viz``), training
curves, co-occurrence charts, and the method-comparison chart of ``experiments/compare.py``.

An image grid is one row of panels for one image: the image, the ground truth, the CAM of each
labelled class as a heat map over the image, then label maps (CAM seeds, pseudo label, prediction)
in the VOC palette, with a legend of the classes they show. Matplotlib (Agg) only; PNGs are
written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from wsss.core.files import atomic_write
from wsss.utils.io import IGNORE, find_cam_file, per_id_path, read_cam, read_label_png, voc_palette  # noqa: E402

# Run-directory folders holding label maps, in pipeline order, with their display names.
OUTPUTS = (
    ("cam_labels", "CAM seeds"),
    ("pseudo", "pseudo label"),
    ("predictions", "segmentation"),
    ("predictions_crf", "segmentation + CRF"),
    ("predictions_labelled", "segmentation, labelled classes"),
    ("predictions_crf_labelled", "segmentation + CRF, labelled classes"),
)
_PALETTE = voc_palette()


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) class ids (255 = ignore) -> (H, W, 3) uint8 in the VOC palette."""
    return _PALETTE[np.asarray(label).astype(np.int64)]


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG (atomically) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# Image grids


@dataclass
class ImagePanels:
    """What one grid shows. ``cams``: (class name, (H, W) map in [0, 1]); ``labels``: (title, (H, W)
    class-id map, 255 = undecided / ignore)."""

    title: str
    image: np.ndarray
    class_names: list[str]
    gt: np.ndarray | None = None
    cams: list[tuple[str, np.ndarray]] = field(default_factory=list)
    labels: list[tuple[str, np.ndarray]] = field(default_factory=list)


def draw_grid(p: ImagePanels, panel_inches: float = 2.8) -> plt.Figure:
    """One row: image | ground truth | CAM per class (jet over the image) | label maps; a legend of
    the classes the label maps hold below."""
    panels: list[tuple[str, np.ndarray, bool]] = [("image", p.image, False)]
    if p.gt is not None:
        panels.append(("ground truth", colorize(p.gt), False))
    panels += [(f"CAM {name}", cam, True) for name, cam in p.cams]
    panels += [(title, colorize(label), False) for title, label in p.labels]
    # 2.8 in at 100 dpi: panels of about 280 px, readable beside their 11 pt titles
    fig, axes = plt.subplots(1, len(panels), figsize=(panel_inches * len(panels), panel_inches + 0.8), squeeze=False)
    for ax, (title, arr, heat) in zip(axes[0], panels):
        if heat:
            ax.imshow(p.image)
            ax.imshow(np.asarray(arr, dtype=np.float32), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        else:
            ax.imshow(arr)
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    shown = set()
    for label in [p.gt] + [lab for _, lab in p.labels]:
        if label is not None:
            shown |= {int(v) for v in np.unique(label)}
    handles = [
        Patch(facecolor=_PALETTE[c] / 255.0, edgecolor="#888", label=p.class_names[c] if c < len(p.class_names) else c)
        for c in sorted(shown - {IGNORE})
    ]
    if IGNORE in shown:
        handles.append(Patch(facecolor=_PALETTE[IGNORE] / 255.0, edgecolor="#888", label="ignore / undecided"))
    if handles:
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=min(len(handles), 8),
            fontsize=10,
            frameon=False,
            bbox_to_anchor=(0.5, -0.02),
        )
    if p.title:
        fig.suptitle(p.title, fontsize=12, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 0.95 if p.title else 1))
    return fig


def save_grid(p: ImagePanels, path: str | Path) -> Path:
    return save_figure(draw_grid(p), path)


def saved_panels(ds: Any, id: str, run_dir: Path, split: str, title: str | None = None) -> ImagePanels:
    """The grid of a dataset image from what a run saved: ``cams/``, ``cam_labels/``, ``pseudo/``,
    ``predictions/`` of ``split`` (those present). ``title`` defaults to the id; "" draws none."""
    gt = ds.load_mask(id) if ds.has_mask(id) else None
    p = ImagePanels(
        title=id if title is None else title, image=ds.load_image(id), class_names=list(ds.class_names), gt=gt
    )
    cam_file = find_cam_file(run_dir / "cams" / split, id)
    if cam_file is not None:
        class_ids, cams = read_cam(cam_file)
        p.cams = [(ds.class_names[k], cam) for k, cam in zip(class_ids, cams)]
    for folder, name in OUTPUTS:
        f = per_id_path(run_dir / folder / split, id, ".png")
        if f.is_file():
            p.labels.append((name, read_label_png(f)))
    return p


# ----------------------------------------------------------------------------------------------
# Training curves (metrics.jsonl)


def training_curves(metrics: Sequence[dict[str, Any]], out_dir: Path) -> list[str]:
    """loss.png (every loss term), lr.png, val.png (validation mIoUs) from metrics.jsonl records; returns the
    file names written."""
    files = []
    train = [m for m in metrics if any(k.startswith("loss/") for k in m)]
    if train:
        keys = sorted({k for m in train for k in m if k.startswith("loss/")})
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k in keys:
            ax.plot([m["step"] for m in train], [m.get(k, np.nan) for m in train], label=k[5:])
        ax.set_xlabel("iteration"), ax.set_ylabel("loss (unweighted terms; 'loss' = weighted sum)")
        if all(m.get(k, 1) > 0 for m in train for k in keys):
            ax.set_yscale("log")
        ax.legend(fontsize=9), ax.grid(alpha=0.3), ax.set_title("training losses", fontsize=11)
        files.append(save_figure(fig, out_dir / "loss.png").name)
        if any("lr" in m for m in train):
            fig, ax = plt.subplots(figsize=(6, 2.5))
            ax.plot([m["step"] for m in train if "lr" in m], [m["lr"] for m in train if "lr" in m])
            ax.set_xlabel("iteration"), ax.set_ylabel("lr (backbone group)"), ax.grid(alpha=0.3)
            ax.set_title("learning rate", fontsize=11)
            files.append(save_figure(fig, out_dir / "lr.png").name)
    val = [m for m in metrics if "val" in m]
    if val:
        keys = sorted({k for m in val for k in m["val"] if k.endswith("miou")})
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k in keys:
            ax.plot([m["step"] for m in val], [m["val"].get(k, np.nan) for m in val], marker="o", label=k)
        ax.set_xlabel("iteration"), ax.set_ylabel("val mIoU (%)"), ax.legend(fontsize=9), ax.grid(alpha=0.3)
        ax.set_ylim(0, 100)  # the mIoU scale: one point (a short run) is not drawn on a 19-21 axis
        if len(val) == 1:  # a single validation: its value written beside it
            for k in keys:
                v = val[0]["val"].get(k)
                if v is not None:
                    ax.annotate(f"{v:.1f}", (val[0]["step"], v), textcoords="offset points", xytext=(6, 4), fontsize=9)
        ax.set_title("training-time validation", fontsize=11)
        files.append(save_figure(fig, out_dir / "val.png").name)
    return files


# ----------------------------------------------------------------------------------------------
# Co-occurrence diagnostics (wsss.evaluation.cooccurrence)


def cooccurrence_chart(results: dict[str, Any], path: Path) -> Path | None:
    """False-activation rate per class, one bar per output, and for each output the matrix of pair
    confusions (share of GT-a pixels predicted b, over images labelled a and b). ``results``: display
    name -> :class:`~wsss.evaluation.EvalResult`."""
    if not results:
        return None
    all_names = next(iter(results.values())).class_names
    # only the classes this split shows (a FAR or a pair somewhere): 20 empty rows hide the few that matter
    present = set()
    for r in results.values():
        present |= {c for c, v in enumerate(r.cooccurrence["far"]) if c > 0 and v is not None and np.isfinite(v)}
        present |= {p[k] for p in r.cooccurrence["pairs"] if p["share"] is not None for k in ("gt_id", "pred_id")}
    if not present:
        return None
    keep = sorted(present)
    names = [all_names[c] for c in keep]
    n = len(results)
    fig, axes = plt.subplots(1, 1 + n, figsize=(6 + 3.6 * n, 4.2), gridspec_kw={"width_ratios": [2] + [1] * n})
    ax = axes[0]
    width = 0.8 / n
    x = np.arange(len(names))
    for j, (title, r) in enumerate(results.items()):
        far = np.array(
            [np.nan if r.cooccurrence["far"][c] is None else r.cooccurrence["far"][c] for c in keep], dtype=np.float64
        )
        ax.bar(x + (j - (n - 1) / 2) * width, 100 * np.nan_to_num(far), width, label=title)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=10)
    ax.set_ylabel("false activation (%)", fontsize=10), ax.legend(fontsize=9), ax.grid(axis="y", alpha=0.3)
    ax.set_title("GT background predicted as the image's class", fontsize=11)
    pos = {c: i for i, c in enumerate(keep)}
    K = len(keep)
    for ax, (title, r) in zip(axes[1:], results.items()):
        mat = np.full((K, K), np.nan)
        for pair in r.cooccurrence["pairs"]:
            if pair["share"] is not None and np.isfinite(pair["share"]):
                mat[pos[pair["gt_id"]], pos[pair["pred_id"]]] = 100 * pair["share"]
        im = ax.imshow(mat, cmap="Reds", vmin=0, vmax=max(1.0, float(np.nan_to_num(mat).max())))
        ax.set_xticks(range(K), names, rotation=90, fontsize=9)
        ax.set_yticks(range(K), names, fontsize=9)
        ax.set_xlabel("predicted", fontsize=10), ax.set_ylabel("ground truth", fontsize=10)
        ax.set_title(f"{title}: pair confusion (%)", fontsize=11)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# experiments/compare.py


def comparison_chart(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Grouped bars of CAM / pseudo-label / seg mIoU per method, and the seg (or mask) false-activation rate.

    ``rows``: one dict per method with ``method`` and the numbers (%, None = n/a) ``cam``, ``mask``,
    ``seg``, ``far``.
    """
    methods = [r["method"] for r in rows]
    keys = (("cam", "CAM seeds"), ("mask", "pseudo labels"), ("seg", "segmentation"))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [3, 1.3]})
    x = np.arange(len(methods))
    width = 0.26
    for j, (k, label) in enumerate(keys):
        vals = [r.get(k) for r in rows]
        bars = ax.bar(x + (j - 1) * width, [np.nan if v is None else v for v in vals], width, label=label)
        for b, v in zip(bars, vals):
            ax.text(
                b.get_x() + b.get_width() / 2,
                (v or 0) + 0.5,
                "n/a" if v is None else f"{v:.1f}",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    top = max([r.get(k) or 0 for r in rows for k, _ in keys] + [1.0])
    ax.set_ylim(0, top * 1.3)
    ax.set_xticks(x, methods), ax.set_ylabel("mIoU (%)"), ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=3, frameon=False)
    ax.set_title("mIoU (same data, same budget)", fontsize=10)
    far = [r.get("far") for r in rows]
    bars = ax2.bar(x, [np.nan if v is None else v for v in far], 0.6, color="#c44")
    for b, v in zip(bars, far):
        ax2.text(
            b.get_x() + b.get_width() / 2,
            (v or 0),
            "n/a" if v is None else f"{v:.1f}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax2.set_xticks(x, methods), ax2.set_ylabel("false activation (%)"), ax2.grid(axis="y", alpha=0.3)
    if len(methods) > 3:  # the narrow panel: slanted names do not run into each other
        ax2.tick_params(axis="x", labelrotation=35)
        for label in ax2.get_xticklabels():
            label.set_horizontalalignment("right")
    ax2.set_ylim(0, max([v or 0 for v in far] + [0.1]) * 1.2)
    ax2.set_title("seg mean FAR (lower is better)", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
