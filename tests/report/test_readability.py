"""Report readability: thumbnails of a readable size, fonts of at least 9 pt, co-occurrence charts
over the classes present only, a one-point validation plot on the 0-100 scale, "(1 image)", and
`viz --image` titles saying the classes are predicted."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

import wsss.report.figures as figures
from conftest import REPO, tiny_overrides
from wsss.cli import main
from wsss.report.figures import ImagePanels, cooccurrence_chart, save_grid, training_curves
from wsss.report.html import _pairs_text

NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat"]


def _capture(monkeypatch) -> list:
    figs = []
    real = figures.save_figure

    def keep(fig, path, dpi=100):
        figs.append(fig)
        return real(fig, path, dpi)

    monkeypatch.setattr(figures, "save_figure", keep)
    return figs


def _font_sizes(fig) -> list[float]:
    texts = [t for t in fig.findobj(lambda o: hasattr(o, "get_fontsize") and hasattr(o, "get_text"))]
    return [t.get_fontsize() for t in texts if t.get_text().strip()]


def test_grid_thumbnails_and_fonts(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    img = np.zeros((100, 150, 3), np.uint8)
    lab = np.zeros((100, 150), np.uint8)
    lab[20:60, 30:90] = 3
    p = ImagePanels(
        title="x", image=img, class_names=NAMES, gt=lab, cams=[("bird", np.zeros((100, 150)))], labels=[("seeds", lab)]
    )
    path = save_grid(p, tmp_path / "g.png")
    width = Image.open(path).width
    assert width / 4 >= 240, width  # four panels of at least 240 px (were ~145)
    assert min(_font_sizes(figs[0])) >= 10


def test_validation_plot_with_one_point_uses_the_miou_scale(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    metrics = [{"step": 2, "loss/loss": 1.0, "lr": 0.1}, {"step": 2, "val": {"cam_miou": 20.3, "seg_miou": 19.8}}]
    files = training_curves(metrics, tmp_path)
    assert "val.png" in files
    ax = figs[-1].axes[0]
    assert ax.get_ylim() == (0.0, 100.0)
    assert any("20.3" in t.get_text() for t in ax.texts)


def test_cooccurrence_chart_shows_only_present_classes(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    far = [None] * len(NAMES)
    far[3], far[4] = 0.1, 0.05
    pairs = [{"gt": "bird", "pred": "boat", "gt_id": 3, "pred_id": 4, "share": 0.2, "images": 1}]
    r = SimpleNamespace(class_names=NAMES, cooccurrence={"far": far, "pairs": pairs})
    cooccurrence_chart({"seg": r}, tmp_path / "c.png")
    matrix_ax = figs[-1].axes[1]
    assert [t.get_text() for t in matrix_ax.get_xticklabels()] == ["bird", "boat"]
    assert "(1 image)" in _pairs_text({"seg": ("seg", r)})


def test_viz_image_title_says_predicted(synth_root, tmp_path, capsys):
    run = tmp_path / "run"
    over = tiny_overrides(synth_root, run, **{"train.max_iters": 1, "train.eval_iters": 100})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *over, "--quiet", "--skip-check"]) == 0
    image = next((Path(synth_root) / "JPEGImages").glob("val_*"))
    from wsss.report.viz import write_viz

    ((_, panels),) = write_viz(run, image=str(image), out=str(tmp_path / "viz"))
    assert "(predicted: " in panels.title
    ((_, panels),) = write_viz(run, image=str(image), out=str(tmp_path / "viz"), classes=["boat"])
    assert panels.title.endswith("(CAMs of: boat)")
