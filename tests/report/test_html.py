"""``wsss report``: the page of a tiny run references only files that exist, its numbers are those of
``wsss eval`` and metrics.jsonl, images come worst first. (The run and its report: the ``reported``
fixture of conftest.py; the screenshot tool's tests: tests/dev/test_screenshot_report.py.)"""

import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.data import VOCDataset
from wsss.report.figures import colorize
from wsss.utils.io import read_label_png, voc_palette


class Page(HTMLParser):
    """Every src= / href=, every number cell (data-output, data-metric[, data-step]) and figure caption."""

    def __init__(self, text: str):
        super().__init__()
        self.refs: list[str] = []
        self.cells: dict[tuple[str, ...], str] = {}
        self.captions: list[str] = []
        self._cell: tuple[str, ...] | None = None
        self._caption = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [a[k] for k in ("src", "href") if a.get(k)]
        if "data-metric" in a:
            self._cell = tuple(a[k] for k in ("data-output", "data-metric", "data-step") if k in a)
            self.cells[self._cell] = ""
        self._caption = tag == "figcaption"

    def handle_data(self, data):
        if self._cell is not None:
            self.cells[self._cell] += data
        if self._caption:
            self.captions.append(data)

    def handle_endtag(self, tag):
        self._cell = None
        self._caption = False


def test_every_referenced_file_exists_and_is_local(reported):
    run, _ = reported
    page = Page((run / "report/index.html").read_text())
    files = [r for r in page.refs if not r.startswith("#")]
    assert len([f for f in files if f.startswith("images/val/grid_")]) == 5
    assert {"loss.png", "lr.png", "val.png", "cooccurrence_val.png"} <= set(files)
    for ref in files:
        assert "://" not in ref and not ref.startswith("/"), ref  # the folder is self-contained
        path = run / "report" / ref
        assert path.is_file(), ref
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) > 50
    anchors = {r[1:] for r in page.refs if r.startswith("#")}
    text = (run / "report/index.html").read_text()
    assert all(f'id="{a}"' in text for a in anchors)


def test_numbers_match_wsss_eval_and_metrics_jsonl(reported, synth_root):
    run, evals = reported
    cells = Page((run / "report/index.html").read_text()).cells
    for folder, ev in evals.items():
        assert cells[(folder, "miou")] == f"{100 * ev['miou']:.2f}"
        assert cells[(folder, "pAcc")] == f"{100 * ev['pAcc']:.2f}"
        assert cells[(folder, "mean_far")] == f"{100 * ev['mean_far']:.2f}"
        for row in ev["per_class"]:
            assert cells[(folder, f"iou/{row['name']}")] == ("" if row["iou"] is None else f"{100 * row['iou']:.2f}")
    assert cells[("pseudo", "pseudo_miou")] == f"{100 * evals['pseudo']['pseudo_miou']:.2f}"
    floors = {ev["miou_background_only"] for ev in evals.values()}  # one ground truth: one floor
    assert len(floors) == 1 and cells[("miou_background_only",)] == f"{100 * floors.pop():.2f}"

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in records if "val" in r]
    assert len(vals) == 2
    for r in vals:
        for k in ("cam_miou", "aux_cam_miou", "seg_miou"):
            assert cells[("val", k, str(r["step"]))] == f"{r['val'][k]:.2f}"
    last = [r for r in records if "loss/loss" in r][-1]
    for k in ("loss/loss", "loss/cls", "lr"):
        assert float(cells[("train", k, str(last["step"]))]) == pytest.approx(last[k], rel=1e-3)


def _reference_image_miou(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Slow per-class loop: IoU over the classes present in the GT, GT 255 ignored, pred 255 = background."""
    valid = gt != 255
    pred = np.where(pred == 255, 0, pred)
    ious = []
    for c in range(num_classes):
        g, p = (gt == c) & valid, (pred == c) & valid
        if g.any():
            ious.append((g & p).sum() / (g | p).sum())
    return float(np.mean(ious))


def test_images_come_worst_first_with_their_iou(reported, synth_root):
    run, _ = reported
    ds = VOCDataset(synth_root, "val")
    ref = {
        i: _reference_image_miou(ds.load_mask(i), read_label_png(run / "predictions/val" / f"{i}.png"), 7)
        for i in ds.ids
    }
    captions = Page((run / "report/index.html").read_text()).captions
    shown = [re.match(r"(\S+): segmentation mIoU ([\d.]+)", c).groups() for c in captions]
    assert [i for i, _ in shown] == sorted(ref, key=lambda i: (ref[i], i))[:5]
    for i, value in shown:
        assert float(value) == pytest.approx(100 * ref[i], abs=0.051)


def test_rerun_drops_stale_grids_and_grid_shows_every_panel(reported, tmp_path):
    run = tmp_path / "run"  # a copy: the session's report stays as the other tests read it (any order)
    shutil.copytree(reported[0], run)
    before = set((run / "report/images/val").glob("grid_*.png"))
    assert main(["report", str(run), "--max-images", "2"]) == 0
    after = set((run / "report/images/val").glob("grid_*.png"))
    assert len(after) == 2 and after < before
    # a grid: image, GT, one CAM per labelled class, CAM seeds, pseudo label, prediction, a legend row
    with Image.open(sorted(after)[0]) as im:
        w, h = im.size
    assert w > 5 * h  # at least 6 panels side by side


def _split_cells(text: str) -> dict[tuple[str, str, str], str]:
    """(split, output, metric) -> the cell's text, of every number cell that names its split."""
    cells = re.findall(r'<td data-split="([^"]+)" data-output="([^"]+)" data-metric="([^"]+)">([^<]*)</td>', text)
    return {(sp, out, metric): value for sp, out, metric, value in cells}


def test_a_run_without_outputs_on_a_dataset_without_a_val_split_gets_a_report(reported, synth_root, tmp_path):
    """Photos without masks get no val split (`wsss prepare folder`); the report of a run just trained on them shows
    its training split and curves, where it stopped on the missing val.txt."""
    run, root = tmp_path / "run", tmp_path / "data"
    shutil.copytree(reported[0], run)
    for folder in ("cams", "cam_labels", "pseudo", "predictions", "predictions_crf", "report"):
        shutil.rmtree(run / folder, ignore_errors=True)
    shutil.copytree(synth_root, root)
    (root / "ImageSets/Segmentation/val.txt").unlink()
    assert main(["report", str(run), "--data-root", str(root), "--max-images", "2"]) == 0
    text = (run / "report/index.html").read_text()
    assert "split <b>train</b> (24 images)" in text
    # the steps this run has not made, each with its split (its model has a segmentation head)
    assert (
        f"no scored output on split train yet: run `wsss cam {run} --split train`, then `wsss pseudo {run} "
        f"--split train`, then `wsss predict {run} --split train`"
    ) in text
    assert 'id="training"' in text and 'id="split-val"' not in text


def test_a_partly_masked_split_is_scored_on_its_masked_photos(reported, synth_root, tmp_path):
    """A classifier run on photos of which a few have masks (`wsss prepare folder --masks`) had its CAMs
    and pseudo labels, and the report scored nothing and advised to run `wsss cam`, `wsss pseudo` and `wsss
    predict` (refused: no segmentation head). Now the outputs are scored on the masked photos, saying so."""
    run, root = tmp_path / "run", tmp_path / "data"
    shutil.copytree(reported[0], run)
    shutil.copytree(synth_root, root)
    ids = VOCDataset(root, "val").ids
    for i in ids[3:]:
        (root / "SegmentationClass" / f"{i}.png").unlink()
    assert main(["report", str(run), "--data-root", str(root), "--split", "val", "--max-images", "2"]) == 0
    text = (run / "report/index.html").read_text()
    assert f"Scored on the 3 photos of the {len(ids)} with a ground-truth mask." in text
    assert ("val", "pseudo", "miou") in _split_cells(text)
    ev = tmp_path / "masked.txt"
    ev.write_text("\n".join(ids[:3]) + "\n")
    shutil.copy(ev, root / "ImageSets/Segmentation/masked.txt")
    js = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                str(run / "pseudo/val"),
                "--data-root",
                str(root),
                "--split",
                "masked",
                "--pseudo",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    assert _split_cells(text)[("val", "pseudo", "miou")] == f"{100 * json.loads(js.read_text())['miou']:.2f}"


def test_the_page_says_what_to_do_from_its_figures_and_the_route_folds_beside_it(reported, tmp_path):
    """Under each split's summary, the advice of report/advice.py on its last output, with the folds of the route
    summary beside the run when there is one."""
    text = (reported[0] / "report/index.html").read_text()
    assert '<h3 id="val-advice">What to do</h3><p class=note>From the segmentation' in text
    assert "More masks" not in text  # no route beside it
    run = tmp_path / "route" / "seg"
    shutil.copytree(reported[0], run)
    folds = {"mixed": {"mean": 20.0, "folds": [19.0, 21.0]}, "masks": {"mean": 22.0, "folds": [21.5, 22.5]}}
    (run.parent / "summary.json").write_text(json.dumps({"scores": {"folds": folds}}))
    assert main(["report", str(run), "--split", "val", "--max-images", "1"]) == 0
    assert "<li>More masks should help: your masks alone scored 22.00" in (run / "report/index.html").read_text()


def test_a_report_is_current_until_an_output_of_its_run_changes(reported, tmp_path):
    """A finished route need not make its reports again: a report is current while the outputs it was made of are
    as they were (the jobs' hidden bookkeeping files, and a config or log rewritten with the same content, aside)."""
    import os

    from wsss.report.html import report_is_current

    # the shared run's report made again in a copy: other tests add outputs to the shared run (predictions by other
    # flags), after which its own report is rightly no longer current
    made = tmp_path / "made"
    shutil.copytree(reported[0], made)
    assert main(["report", str(made), "--max-images", "1"]) == 0
    run = tmp_path / "run"
    shutil.copytree(made, run)  # times kept
    assert report_is_current(run)
    later = (run / "report/index.html").stat().st_mtime + 5
    stamp = next((run / "predictions/val").glob(".*"))
    os.utime(stamp, (later, later))
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text())  # as a resumed run writes it
    assert report_is_current(run)
    newer = next((run / "predictions/val").glob("*.png"))
    os.utime(newer, (later, later))
    assert not report_is_current(run)
    assert main(["report", str(run), "--max-images", "1"]) == 0 and report_is_current(run)
    assert not report_is_current(tmp_path / "nothing")


def test_the_advice_of_a_run_without_a_segmentation_head_names_no_prediction(reported, synth_root, tmp_path):
    """The report's advice follows what the run can do: a run without a segmentation head is not sent to
    `wsss predict`, which refuses it."""
    run = tmp_path / "run"
    shutil.copytree(reported[0], run)
    for folder in ("cams", "cam_labels", "pseudo", "predictions", "predictions_crf", "report"):
        shutil.rmtree(run / folder, ignore_errors=True)
    cfg = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(re.sub(r"(?m)^  decoder: .*$", "  decoder: none", cfg))
    assert "decoder: none" in (run / "config.yaml").read_text()
    assert main(["report", str(run), "--split", "val", "--max-images", "1"]) == 0
    text = (run / "report/index.html").read_text()
    assert f"run `wsss cam {run} --split val`, then `wsss pseudo {run} --split val`; this run has no" in text
    assert "wsss predict" not in text


def test_a_report_shows_each_split_with_outputs(reported, synth_root, tmp_path, capsys):
    """The own-photos route made train CAMs and pseudo labels and a one-photo val split, and the report
    showed the val split alone. Now each split with outputs has its section (val first), its numbers those of
    `wsss eval`; a split of another dataset root is named in a note; --split shows one."""
    run = tmp_path / "run"
    shutil.copytree(reported[0], run)
    (run / "report/images/grid_old.png").write_bytes(b"a grid of the layout before images/<split>/")
    (run / "report/cooccurrence.png").write_bytes(b"the chart of the layout before")
    assert main(["cam", str(run), "--split", "train", "--quiet"]) == 0
    assert main(["pseudo", str(run), "--split", "train", "--quiet"]) == 0
    (run / "predictions/elsewhere").mkdir()
    (run / "predictions/elsewhere/x.png").write_bytes(b"")  # a split of another dataset root
    ev = tmp_path / "pseudo_train.json"
    assert (
        main(
            [
                "eval",
                str(run / "pseudo/train"),
                "--data-root",
                str(synth_root),
                "--split",
                "train",
                "--pseudo",
                "--json",
                str(ev),
            ]
        )
        == 0
    )
    assert main(["report", str(run), "--max-images", "3"]) == 0
    text = (run / "report/index.html").read_text()
    assert text.index('id="split-val"') < text.index('id="split-train"')
    assert "splits <b>val</b> (8 images), <b>train</b> (24 images) of" in text
    assert f"split elsewhere: outputs in {run} but no split file in {synth_root}" in text
    cells = _split_cells(text)
    assert cells[("train", "pseudo", "miou")] == f"{100 * json.loads(ev.read_text())['miou']:.2f}"
    assert ("train", "cam_labels", "miou") in cells and ("val", "predictions", "miou") in cells
    assert ("train", "predictions", "miou") not in cells  # no predictions of train
    summary = json.loads((run / "report/summary.json").read_text())
    assert sorted(summary) == ["train", "val"] and sorted(summary["train"]) == ["cam_labels", "pseudo"]
    files = sorted(p.relative_to(run / "report").as_posix() for p in (run / "report").rglob("*.png"))
    assert [f for f in files if "grid_" in f] == sorted(
        [f"images/train/{p.name}" for p in (run / "report/images/train").glob("*.png")]
        + [f"images/val/{p.name}" for p in (run / "report/images/val").glob("*.png")]
    )
    assert len([f for f in files if f.startswith("images/train/")]) == 3
    assert "cooccurrence.png" not in files and {"cooccurrence_val.png", "cooccurrence_train.png"} <= set(files)
    page = Page(text)
    assert all(f'id="{r[1:]}"' in text for r in page.refs if r.startswith("#"))

    assert main(["report", str(run), "--split", "val", "--max-images", "3"]) == 0
    text = (run / "report/index.html").read_text()
    assert 'id="split-train"' not in text and "split <b>val</b> (8 images)" in text
    assert not (run / "report/images/train").exists() and not (run / "report/cooccurrence_train.png").exists()


def test_the_per_class_table_lists_the_classes_with_a_number():
    from types import SimpleNamespace

    from wsss.report.html import _per_class_table

    def row(iou, far):
        return {"iou": iou, "far": far}

    names = ["background", "cat", "dog", "bird"]
    nan = float("nan")
    r = SimpleNamespace(class_names=names, per_class=[row(0.9, None), row(0.5, 0.1), row(nan, nan), row(None, 0.2)])
    table = _per_class_table({"pseudo": ("pseudo label", r)}, "train")
    assert [n for n in names if f"<td>{n}</td>" in table] == ["background", "cat", "bird"]
    assert "1 class of the 4 in neither the masks nor the outputs of this split: not listed" in table


def test_colorize_uses_the_voc_palette():
    label = np.array([[0, 1], [15, 255]], dtype=np.uint8)
    pal = voc_palette()
    assert (colorize(label)[1, 0] == pal[15]).all() and (colorize(label)[0, 1] == [128, 0, 0]).all()


def test_errors_name_the_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "config.yaml" in capsys.readouterr().err


def test_multi_run_metrics_are_chained_by_round(tmp_path):
    """SC-CAM keeps one metrics.jsonl per round: the report's curves read them in order, steps running on."""
    from wsss.report.html import run_metrics

    for k, steps in ((0, (50, 100)), (1, (50, 100)), (2, (50,))):
        d = tmp_path / f"round_{k}"
        d.mkdir()
        (d / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": s, "loss/cls": k + s / 1000}) + "\n" for s in steps)
        )
    recs = run_metrics(tmp_path)
    assert [(r["round"], r["step"]) for r in recs] == [(0, 50), (0, 100), (1, 150), (1, 200), (2, 250)]
    assert recs[2]["loss/cls"] == pytest.approx(1.05)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 7}) + "\n")  # a run's own file wins
    assert run_metrics(tmp_path) == [{"step": 7}]


def test_a_report_takes_the_words_of_a_run(reported, synth_root, tmp_path, capsys):
    """``wsss report RUN data.root=DIR`` reads the dataset the word names, not the run's saved one, and
    keeps the saved config.yaml; a word that is no setting is one error line naming it."""
    run, root = tmp_path / "run", tmp_path / "data"
    shutil.copytree(reported[0], run)
    shutil.rmtree(run / "report", ignore_errors=True)
    shutil.copytree(synth_root, root)
    (root / "ImageSets/Segmentation/val.txt").unlink()  # the word's dataset has no val split, the saved one has
    saved = (run / "config.yaml").read_text()
    assert main(["report", str(run), "--split", "val", "--max-images", "1"]) == 0
    capsys.readouterr()
    assert main(["report", str(run), "--split", "val", f"data.root={root}", "--max-images", "1"]) == 1
    assert f"{root}" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == saved
    assert main(["report", str(run), "--split", "val", "data.rooot=x"]) == 2
    assert "data.rooot" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("configs/cam/synthetic_cpu.yaml", True),
        ("configs/rca/synthetic_cpu.yaml", False),
        ("configs/clip_es/voc.yaml", None),
    ],  # the last cannot build without its CLIP file: unknown
)
def test_whether_a_run_predicts_is_read_from_its_config_alone(preset, expected):
    """The report's advice names `wsss predict` only for a run with a segmentation head, found without reading any
    weight (the method built on the meta device)."""
    from conftest import REPO
    from wsss.core.config import load_config
    from wsss.engine.defaults import run_has_seg_head

    names = ["background", *(f"c{i}" for i in range(20))]
    assert run_has_seg_head(load_config(REPO / preset), names) is expected
