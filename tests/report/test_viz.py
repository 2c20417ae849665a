"""``wsss viz``: grids of chosen ids (saved outputs, or the model where they are missing) and of any image
file; the class guess for unlabelled images; the shared grid drawing."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, tiny_overrides
from wsss.cli import main
from wsss.core.errors import UsageError
from wsss.data import VOCDataset
from wsss.report.figures import ImagePanels, draw_grid
from wsss.report.viz import guess_classes, write_viz
from wsss.runs.run import load_run
from wsss.utils.io import read_cam, read_label_png


@pytest.fixture(scope="module")
def run_dir(synth_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("viz") / "run"
    overrides = tiny_overrides(synth_root, run, **{"train.eval_iters": 100, "data.val_max_images": 1})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *overrides, "--quiet"]) == 0
    assert main(["cam", str(run), "--split", "val", "--quiet"]) == 0
    assert main(["pseudo", str(run), "--split", "val", "--quiet"]) == 0
    return run


def test_ids_use_saved_outputs_and_the_model_computes_the_same_where_missing(run_dir, synth_root, tmp_path):
    ds = VOCDataset(synth_root, "val")
    a, b = ds.ids[0], ds.ids[1]
    saved_keys, saved_cam = read_cam(run_dir / "cams/val" / f"{b}.npz")
    saved_seed = read_label_png(run_dir / "cam_labels/val" / f"{b}.png")
    saved_pseudo = read_label_png(run_dir / "pseudo/val" / f"{b}.png")
    for folder, suffix in (("cams", ".npz"), ("cam_labels", ".png"), ("pseudo", ".png")):
        (run_dir / folder / "val" / f"{b}{suffix}").rename(tmp_path / f"{folder}{suffix}")  # b: nothing saved
    try:
        written = dict((p.name, panels) for p, panels in write_viz(run_dir, ids=[a, b], out=tmp_path / "viz"))
    finally:
        for folder, suffix in (("cams", ".npz"), ("cam_labels", ".png"), ("pseudo", ".png")):
            (tmp_path / f"{folder}{suffix}").rename(run_dir / folder / "val" / f"{b}{suffix}")
    assert set(written) == {f"{a}.png", f"{b}.png"} and all((tmp_path / "viz" / n).is_file() for n in written)

    pa = written[f"{a}.png"]  # shown from the saved files, as the report shows them
    keys, cam = read_cam(run_dir / "cams/val" / f"{a}.npz")
    assert [n for n, _ in pa.cams] == [ds.class_names[k] for k in keys]
    assert np.array_equal(pa.cams[0][1], cam[0])
    assert np.array_equal(dict(pa.labels)["pseudo label"], read_label_png(run_dir / "pseudo/val" / f"{a}.png"))
    assert (pa.gt == ds.load_mask(a)).all()

    pb = written[f"{b}.png"]  # computed by the model: the same as `wsss cam` / `wsss pseudo --refine par`
    assert [n for n, _ in pb.cams] == [ds.class_names[k] for k in saved_keys]
    for (_, live), saved in zip(pb.cams, saved_cam):
        assert np.abs(live - saved).max() < 2e-3  # the saved CAMs are float16
    labels = dict(pb.labels)
    assert [t for t, _ in pb.labels] == ["CAM seeds", "pseudo label", "segmentation"]  # pipeline order
    assert np.array_equal(labels["CAM seeds"], saved_seed)
    assert (labels["pseudo label"] == saved_pseudo).mean() > 0.98  # `wsss pseudo` refines the float16 CAM


def test_image_file_and_classes_through_the_cli(run_dir, synth_root, tmp_path, capsys):
    ds = VOCDataset(synth_root, "val")
    image = tmp_path / "photo.png"
    Image.fromarray(ds.load_image(ds.ids[2])).save(image)
    out = tmp_path / "out"
    assert main(["viz", str(run_dir), "--image", str(image), "--out", str(out), "--classes", "boat,bird"]) == 0
    assert str(out / "photo.png") in capsys.readouterr().out
    with Image.open(out / "photo.png") as im:
        assert im.size[0] > 4 * im.size[1]  # image, 2 CAMs, seeds, pseudo label, prediction; no GT
    ((path, panels),) = write_viz(run_dir, image=image, out=out, classes=["bird"])
    assert panels.gt is None and [n for n, _ in panels.cams] == ["bird"]
    assert set(np.unique(dict(panels.labels)["CAM seeds"])) <= {0, ds.class_names.index("bird")}

    assert main(["viz", str(run_dir), "--ids", "nope", "--out", str(out)]) == 1
    assert "'nope'" in capsys.readouterr().err
    assert main(["viz", str(run_dir), "--image", str(image), "--classes", "zebra"]) == 1
    assert "zebra" in capsys.readouterr().err
    assert main(["viz", str(run_dir), "--image", str(image), "--classes", "birds"]) == 1
    assert "--classes: unknown class 'birds' (did you mean 'bird'?)" in capsys.readouterr().err
    # a name but for its case is the class (as a labels file's is): `--classes Bird` was refused
    ((_, panels),) = write_viz(run_dir, image=image, out=out, classes=["Bird"])
    assert [n for n, _ in panels.cams] == ["bird"]
    assert main(["viz", str(run_dir), "--image", str(tmp_path / "missing.jpg")]) == 1
    assert "missing.jpg" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["viz", str(run_dir), "--ids", "a", "--image", str(image)])  # one or the other


def test_guess_classes_from_the_prediction_then_from_the_classifier(run_dir):
    run = load_run(run_dir)
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    pred = np.zeros((40, 50), dtype=np.int64)
    pred[:20] = 2  # 50 % of the pixels
    pred[20, :10] = 3  # 0.5 %: below the 1 % floor
    run.predict = lambda img, **kw: pred
    assert np.flatnonzero(guess_classes(run, image)).tolist() == [1]  # class id 2 -> channel 1

    run.predict = lambda img, **kw: np.zeros((40, 50), dtype=np.int64)  # background only: ask the classifier
    logits = torch.tensor([[3.0, -1.0, -1.0, -1.0, 0.5, -1.0]])  # positive: probability above 0.5, present
    run.method.class_logits = lambda x: logits.expand(len(x), -1)  # the photo and its flip (Run.class_probs)
    assert np.flatnonzero(guess_classes(run, image)).tolist() == [0, 4]
    logits[0, 0] = -0.2
    assert np.flatnonzero(guess_classes(run, image)).tolist() == [4]
    logits[0, 4] = -1.0
    logits[0, 2] = -0.1  # nothing positive: the most probable class alone
    assert np.flatnonzero(guess_classes(run, image)).tolist() == [2]
    # neither a seg head nor a classifier (CLIP-ES makes maps of given classes): an error, not class 0 guessed
    blind = dataclasses.replace(run, method=SimpleNamespace(has_seg_head=False, has_classifier=False))
    with pytest.raises(UsageError, match="name them with --classes"):
        guess_classes(blind, image)


def test_draw_grid_has_one_panel_per_item():
    img = np.zeros((16, 16, 3), dtype=np.uint8)
    lab = np.zeros((16, 16), dtype=np.uint8)
    lab[4:8] = 255
    p = ImagePanels(
        "t", img, ["background", "a", "b"], gt=lab, cams=[("a", np.ones((16, 16)))] * 2, labels=[("pseudo label", lab)]
    )
    fig = draw_grid(p)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["image", "ground truth", "CAM a", "CAM a", "pseudo label"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["background", "ignore / undecided"]
