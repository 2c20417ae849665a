"""runs/jobs.py: a pseudo-label job without the CAMs it reads is one error line naming the folder."""

import pytest

from wsss.cli import main
from wsss.core.errors import ConfigWarning, UsageError


def test_pseudo_labels_without_saved_cams_name_the_folder_and_the_command(reported, capsys):
    run, _ = reported  # CAMs were saved for val only
    capsys.readouterr()
    assert main(["pseudo", str(run), "--split", "train", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run / 'cams/train'}: no CAM for ") and f"wsss cam {run} --split train" in err
    assert "\n" not in err


def test_predictions_named_by_the_photos_labels_only(reported_copy, synth_root):
    # `wsss predict --labelled-only` (the labels of a second round on the training photos): each photo's
    # prediction names only the background and its image labels; where the plain argmax names one of those, the
    # two agree (the others' logits are only set to -inf before the argmax)
    import numpy as np

    from wsss.data import VOCDataset
    from wsss.runs.run import allowed_classes, load_run
    from wsss.utils.io import read_label_png

    run = reported_copy  # it writes predictions into the run
    ds = VOCDataset(synth_root, "val")
    assert main(["predict", str(run), "--split", "val", "--labelled-only", "--quiet"]) == 0
    assert main(["predict", str(run), "--split", "val", "--labelled-only", "--crf", "--quiet"]) == 0
    moved = 0
    for id in ds.ids:
        allowed = allowed_classes(ds.labels(id))
        plain = read_label_png(run / "predictions/val" / f"{id}.png")
        only = read_label_png(run / "predictions_labelled/val" / f"{id}.png")
        crf = read_label_png(run / "predictions_crf_labelled/val" / f"{id}.png")
        assert set(np.unique(only)) <= set(allowed) and set(np.unique(crf)) <= set(allowed)
        ok = np.isin(plain, allowed)
        assert np.array_equal(only[ok], plain[ok])
        moved += int((~ok).sum())
    assert moved > 0  # the tiny run names unlabelled classes somewhere, so the restriction is exercised
    r = load_run(run)
    image, allowed = ds.load_image(ds.ids[0]), allowed_classes(ds.labels(ds.ids[0]))
    prob = r.seg_prob(image, classes=allowed)
    others = np.setdiff1d(np.arange(prob.shape[0]), allowed)
    assert np.all(prob[others] == 0) and np.allclose(prob.sum(0), 1.0, atol=1e-5)  # float32 softmax sums


def test_predictions_named_by_a_classifiers_tags(reported_copy, synth_root, capsys):
    # `wsss predict --tags-from CLS_RUN`: each photo's prediction names only the background and
    # the classes the classifier run scores at the threshold or more; where the plain argmax names one of those,
    # the two agree. The reported run is a CAM baseline with a seg head, so it tags its own predictions here.
    import dataclasses
    from types import SimpleNamespace

    import numpy as np

    from wsss.data import VOCDataset
    from wsss.runs.jobs import run_predict
    from wsss.runs.run import allowed_classes, load_run
    from wsss.utils.io import read_label_png

    run = reported_copy  # it writes predictions into the run
    ds, tagger = VOCDataset(synth_root, "val"), load_run(run)
    assert (
        main(["predict", str(run), "--split", "val", "--tags-from", str(run), "--tag-threshold", "0.9", "--quiet"]) == 0
    )
    moved = 0
    for id in ds.ids:
        probs = tagger.class_probs(ds.load_image(id))
        assert probs.shape == (ds.num_classes - 1,) and np.all((probs >= 0) & (probs <= 1))
        # the photo and its flip averaged: the same tags for the mirrored photo (the batch's two float32 forwards in
        # the other order; measured |difference| 0 on 50 ccp-dev photos with an RCA classifier, AVX and default
        # kernels; without the flip 0.12 here)
        np.testing.assert_allclose(tagger.class_probs(ds.load_image(id)[:, ::-1].copy()), probs, rtol=0, atol=1e-5)
        allowed = allowed_classes((probs >= 0.9).astype(np.float32))
        plain = read_label_png(run / "predictions/val" / f"{id}.png")
        tagged = read_label_png(run / "predictions_tagged/val" / f"{id}.png")
        assert set(np.unique(tagged)) <= set(allowed)
        ok = np.isin(plain, allowed)
        assert np.array_equal(tagged[ok], plain[ok])
        moved += int((~ok).sum())
    assert moved > 0  # at 0.9 the tiny classifier leaves out classes its seg head names: the gate is exercised

    capsys.readouterr()
    both = ["predict", str(run), "--split", "val", "--tags-from", str(run), "--labelled-only", "--quiet"]
    assert main(both) == 1
    assert "--labelled-only and --tags-from" in capsys.readouterr().err
    seg = load_run(run)
    other = dataclasses.replace(tagger, dir=run.parent / "other", class_names=[*tagger.class_names[:-1], "zebra"])
    with pytest.raises(UsageError, match=r"other: its classes .* are not those of"):
        run_predict(seg, "val", root=str(synth_root), tags_from=other, progress=False)
    no_classifier = dataclasses.replace(
        tagger, method=SimpleNamespace(has_classifier=False), cfg=SimpleNamespace(method="deeplab")
    )
    with pytest.raises(UsageError, match="method deeplab.* has no image classifier"):
        run_predict(seg, "val", root=str(synth_root), tags_from=no_classifier, progress=False)
    with pytest.raises(SystemExit) as stop:  # argparse: a threshold of 1 would tag nothing
        main(["predict", str(run), "--split", "val", "--tags-from", str(run), "--tag-threshold", "1"])
    assert stop.value.code == 2


def test_predictions_weighted_by_a_classifiers_probabilities(reported_copy, synth_root, capsys):
    # `wsss predict --tags-from CLS_RUN --tag-gate soft`: no threshold; each class's probability
    # is multiplied by the classifier's probability of the class and renormalised (the background's weight is 1)
    import numpy as np

    from wsss.data import VOCDataset
    from wsss.runs.run import load_run, soft_tag_weights
    from wsss.utils.io import read_label_png

    run = reported_copy  # it writes predictions into the run
    ds, r = VOCDataset(synth_root, "val"), load_run(run)
    assert main(["predict", str(run), "--split", "val", "--tags-from", str(run), "--tag-gate", "soft", "--quiet"]) == 0
    moved = 0
    for id in ds.ids:
        image = ds.load_image(id)
        weights = soft_tag_weights(r.class_probs(image))
        assert weights[0] == 1.0 and weights.shape == (ds.num_classes,)
        plain = r.seg_prob(image)
        gated = r.seg_prob(image, class_weights=weights)
        # softmax(x + log w) against w * softmax(x) renormalised: two float32 roundings of the same product;
        # measured max |difference| 2.4e-7 over these 8 photos (AVX2 and ATEN_CPU_CAPABILITY=default), so 2e-6
        product = plain * weights[:, None, None].astype(np.float32)
        np.testing.assert_allclose(gated, product / product.sum(0), rtol=0, atol=2e-6)
        soft = read_label_png(run / "predictions_tagged_soft/val" / f"{id}.png")
        decided = np.sort(gated, axis=0)[-1] - np.sort(gated, axis=0)[-2] > 1e-5  # no near-tie to round either way
        assert np.array_equal(soft[decided], gated.argmax(0)[decided])
        moved += int((soft != plain.argmax(0)).sum())
    assert moved > 0  # the tiny classifier's doubts move pixels: the gate is exercised
    # weights of 1 add log 1 = 0 to the logits: the plain label map
    image = ds.load_image(ds.ids[0])
    assert np.array_equal(r.seg_label(image, class_weights=np.ones(ds.num_classes)), r.seg_label(image))
    with pytest.raises(UsageError, match=f"class weights must be {ds.num_classes} numbers in"):
        r.seg_prob(image, class_weights=np.full(ds.num_classes + 1, 0.5))
    with pytest.raises(UsageError, match="not all 0"):  # no class could win a pixel: a softmax of NaN
        r.seg_prob(image, class_weights=np.zeros(ds.num_classes))

    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                str(run),
                "--split",
                "val",
                "--tags-from",
                str(run),
                "--tag-gate",
                "soft",
                "--tag-threshold",
                "0.5",
            ]
        )
        == 1
    )
    assert "--tag-gate soft has no threshold" in capsys.readouterr().err
    assert main(["predict", str(run), "--split", "val", "--tag-gate", "soft"]) == 1
    assert "apply to the tags of --tags-from RUN" in capsys.readouterr().err


def test_a_run_whose_start_weights_are_gone_still_loads(reported, tmp_path):
    """A trained run's checkpoint holds every weight (strictly loaded), so ``model.pretrained`` gone since (a
    DeepLab stage started from a classifier run that was moved) is a warning, not an error, and the run loads
    the same weights."""
    import shutil

    import torch

    from wsss.core.errors import ConfigWarning
    from wsss.runs.run import load_run

    run, _ = reported
    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "checkpoints/last.pt", copy / "checkpoints/last.pt")
    text = (run / "config.yaml").read_text()
    assert "pretrained: null" in text
    (copy / "config.yaml").write_text(text.replace("pretrained: null", f"pretrained: {tmp_path / 'moved_cls'}"))
    with pytest.warns(ConfigWarning, match=r"model.pretrained .*moved_cls is gone; .*last.pt holds every weight"):
        moved = load_run(copy, checkpoint="last")
    theirs = load_run(run, checkpoint="last").method.state_dict()
    for k, v in moved.method.state_dict().items():
        if torch.is_tensor(v) and v.is_floating_point():
            torch.testing.assert_close(v, theirs[k], rtol=0, atol=0)  # loaded, not computed


def test_predictions_of_an_ensemble_average_the_networks_probabilities(reported_copy, synth_root, tmp_path, capsys):
    # `wsss predict RUN --ensemble RUN2 ...`: the segmentation networks' softmax probabilities
    # averaged at each scale and flip; the run with itself is the run alone, and another seed's run moves pixels
    import dataclasses
    from types import SimpleNamespace

    import numpy as np
    import torch

    from conftest import REPO, tiny_overrides
    from wsss.data import VOCDataset
    from wsss.data.transforms import prepare_image
    from wsss.runs.run import load_run
    from wsss.utils.io import read_label_png

    run = reported_copy  # it writes predictions into the run
    other = tmp_path / "seed1"
    assert (
        main(
            [
                "train",
                str(REPO / "configs/cam/synthetic_cpu.yaml"),
                *tiny_overrides(synth_root, other),
                "run.seed=1",
                "--quiet",
            ]
        )
        == 0
    )
    ds, a, b = VOCDataset(synth_root, "val"), load_run(run), load_run(other)
    both = a.with_ensemble([b])
    image = ds.load_image(ds.ids[0])
    x = prepare_image(image, None, a.device)
    with torch.no_grad():
        mean = (torch.softmax(a.method.seg_logits(x), 1) + torch.softmax(b.method.seg_logits(x), 1)) / 2
        torch.testing.assert_close(torch.softmax(both._seg_logits(x), 1), mean, rtol=1e-5, atol=1e-7)
        # a member of another output stride: its logits resized to the run's before the average
        coarse = SimpleNamespace(seg_logits=lambda v: torch.nn.functional.avg_pool2d(b.method.seg_logits(v), 2))
        mixed = dataclasses.replace(a, ensemble=(coarse,))
        low = a.method.seg_logits(x)
        up = torch.nn.functional.interpolate(
            coarse.seg_logits(x), size=low.shape[-2:], mode="bilinear", align_corners=False
        )
        expected = (torch.softmax(low, 1) + torch.softmax(up, 1)) / 2
        torch.testing.assert_close(torch.softmax(mixed._seg_logits(x), 1), expected, rtol=1e-5, atol=1e-7)
    # the run with itself is the run alone, at one scale and at several (the max over scales reads the ensemble's
    # logits at its members' level): the same probabilities up to float32 rounding (measured max |difference| 2.1e-7
    # over these 8 photos at either scales, AVX2 and ATEN_CPU_CAPABILITY=default), so 2e-6
    with pytest.warns(ConfigWarning, match="the run itself counts twice"):
        itself = a.with_ensemble([a])
    for id in ds.ids:
        image = ds.load_image(id)
        for scales in (None, (1.0, 0.5, 1.5)):
            np.testing.assert_allclose(itself.seg_prob(image, scales), a.seg_prob(image, scales), rtol=0, atol=2e-6)

    assert main(["predict", str(run), "--ensemble", str(other), "--split", "val", "--quiet"]) == 0
    moved = 0
    for id in ds.ids:
        image = ds.load_image(id)
        prob = both.seg_prob(image)
        written = read_label_png(run / "predictions_ens2/val" / f"{id}.png")
        decided = np.sort(prob, axis=0)[-1] - np.sort(prob, axis=0)[-2] > 1e-5  # no near-tie to round either way
        assert np.array_equal(written[decided], prob.argmax(0)[decided])
        moved += int((written != a.seg_label(image)).sum()) * int((written != b.seg_label(image)).sum())
    assert moved > 0  # the ensemble is neither member alone

    zebra = dataclasses.replace(b, dir=tmp_path / "zebra", class_names=[*b.class_names[:-1], "zebra"])
    with pytest.raises(UsageError, match=r"zebra: its classes .* are not those of"):
        a.with_ensemble([zebra])
    no_head = dataclasses.replace(b, method=SimpleNamespace(has_seg_head=False), cfg=SimpleNamespace(method="cam"))
    with pytest.raises(UsageError, match="method cam.* has no segmentation head"):
        a.with_ensemble([no_head])
    capsys.readouterr()
    assert main(["predict", str(run), "--ensemble", str(tmp_path / "gone"), "--split", "val", "--quiet"]) == 1
    assert "gone" in capsys.readouterr().err
    pt = str(run / "checkpoints/last.pt")
    assert main(["predict", str(run), "--checkpoint", pt, "--ensemble", str(other), "--split", "val"]) == 1
    assert "with --ensemble give best, last or auto" in capsys.readouterr().err


def test_par_pseudo_labels_are_refined_on_the_runs_device(monkeypatch):
    # `wsss pseudo --refine par` hands PAR the image and the CAM on the run's device (`--device`): before, an
    # H100's cross-validated fold spent 275 s refining its 200 photos on the CPU (BENCHMARKS.md, "One fold of the
    # cross-validated route alone on an H100"). PyTorch's "meta" device stands for a GPU here: neither is the CPU.
    from types import SimpleNamespace

    import numpy as np
    import torch

    from wsss.runs import refiners

    seen = []

    def record(par, image, cams, labels, **levels):
        seen.append((image.device, cams.device))
        return torch.zeros((1, *cams.shape[2:]), dtype=torch.int64)

    monkeypatch.setattr(refiners, "refine_cams_with_bkg", record)
    cam = SimpleNamespace(
        par=SimpleNamespace(dilations=[1, 2], num_iter=2), high_thre=0.7, low_thre=0.25, par_down_scale=2
    )
    job = SimpleNamespace(
        run=SimpleNamespace(cfg=SimpleNamespace(cam=cam), device=torch.device("meta")),
        require_cams=lambda ids: None,
        cam=lambda id: np.zeros((2, 8, 6), np.float32),
    )
    label = refiners.refine_par(job, ["a"])("a", np.zeros((8, 6, 3), np.uint8), np.array([1.0, 0.0], np.float32))
    assert seen == [(torch.device("meta"), torch.device("meta"))]
    assert label.shape == (8, 6)


def test_labels_that_abstain_keep_par_where_the_cam_and_the_crf_agree(reported, synth_root, tmp_path):
    # `wsss pseudo --refine agree`: PAR's label where the CAM's own label and the CRF's say the same, 255 elsewhere,
    # from the same CAMs at the same levels (a copy of the shared run: its pseudo/val stays as it was)
    import shutil

    import numpy as np

    from wsss.utils.io import read_label_png

    run = tmp_path / "run"
    shutil.copytree(reported[0], run, ignore=shutil.ignore_patterns("pseudo", "report", "predictions*"))
    made = {}
    for refine in ("par", "none", "crf", "agree"):
        args = ["pseudo", str(run), "--split", "val", "--refine", refine, "--levels", "0.5/0.5", "--crf-workers", "0"]
        assert main([*args, "--overwrite", "--quiet"]) == 0
        made[refine] = {p.stem: read_label_png(p) for p in sorted((run / "pseudo/val").glob("*.png"))}
    assert made["agree"] and made["agree"].keys() == made["par"].keys()
    kept = abstained = 0
    for id, agree in made["agree"].items():
        par, cam, crf = made["par"][id], made["none"][id], made["crf"][id]
        same = (par == cam) & (par == crf)
        assert np.array_equal(agree[same], par[same]) and np.all(agree[~same] == 255)
        kept, abstained = kept + int(same.sum()), abstained + int((~same).sum())
    assert kept > 0 and abstained > 0  # both sides of the rule are exercised on the tiny run's photos


def _collapse_to(run, cls: int) -> None:
    """The run's segmentation decoder made to name class ``cls`` at every pixel: its weights zero, one bias set (in
    ``best.pt``, the checkpoint a run loads)."""
    import torch

    path = run / "checkpoints/best.pt"
    ckpt = torch.load(path, weights_only=False)
    for key, value in ckpt["model"].items():
        if key.startswith("decoder."):
            value.zero_()
    ckpt["model"]["decoder.branches.0.bias"][cls] = 10.0
    torch.save(ckpt, path)


def test_masks_that_name_one_class_everywhere_are_warned_of_once_per_job(reported_copy, synth_root, tmp_path, wsss_cli):
    # a collapsed model's masks are legal files; its training loss need not show it, so predict says so
    from wsss.data import VOCDataset
    from wsss.runs.jobs import one_class_everywhere

    run = reported_copy
    names = VOCDataset(synth_root, "val").class_names
    assert one_class_everywhere(run / "predictions/val", VOCDataset(synth_root, "val").ids) is None  # the tiny run's
    _collapse_to(run, 3)
    out = wsss_cli("predict", str(run), "--split", "train", "--quiet")
    warned = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and f"every mask names {names[3]!r} alone" in warned[0], out
    assert str(run / "predictions/train") in warned[0] and "docs/own-photos.md#when-masks-are-bad" in warned[0]
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in VOCDataset(synth_root, "val").ids:
        (photos / f"{i}.jpg").symlink_to(synth_root / "JPEGImages" / f"{i}.jpg")
    out = wsss_cli("predict", str(run), "--images", str(photos), "--out", str(tmp_path / "masks"), "--quiet")
    assert sum(line.startswith("warning:") and "every mask names" in line for line in out.splitlines()) == 1, out


def test_one_class_everywhere_needs_every_pixel_of_every_read_mask_and_five_masks(tmp_path):
    import numpy as np

    from wsss.runs.jobs import ONE_CLASS_FEWEST, one_class_everywhere
    from wsss.utils.io import save_label_png

    ids = [f"p{i}" for i in range(ONE_CLASS_FEWEST)]
    for i in ids:
        save_label_png(tmp_path / f"{i}.png", np.full((4, 5), 2, np.uint8))
    assert one_class_everywhere(tmp_path, ids) == 2
    assert one_class_everywhere(tmp_path, ids[:-1]) is None  # four masks of one class: a few photos of one thing
    assert one_class_everywhere(tmp_path, [*ids, "missing"]) == 2  # a photo not yet predicted is not read
    odd = np.full((4, 5), 2, np.uint8)
    odd[3, 4] = 0
    save_label_png(tmp_path / "p0.png", odd)
    assert one_class_everywhere(tmp_path, ids) is None  # one pixel of another class
    save_label_png(tmp_path / "p0.png", np.full((4, 5), 1, np.uint8))
    assert one_class_everywhere(tmp_path, ids) is None  # two masks of two classes
    more = [*ids, "p5", "p6"]
    for i in more[ONE_CLASS_FEWEST:]:
        save_label_png(tmp_path / f"{i}.png", np.full((4, 5), 2, np.uint8))
    # five of seven read (spread: indices 0, 2, 3, 4, 6): the odd p0 at index 1 is not among them, at index 0 it is
    assert one_class_everywhere(tmp_path, ["p1", "p0", *more[2:]], sample=5) == 2
    assert one_class_everywhere(tmp_path, more, sample=5) is None


def test_spread_takes_the_first_the_last_and_evenly_between():
    from wsss.runs.jobs import spread

    items = [str(i) for i in range(300)]
    got = spread(items, 4)
    assert got == ["0", "100", "199", "299"]
    assert spread(items, 256)[-1] == "299" and len(set(spread(items, 256))) == 256
    assert spread(items[:3], 4) == items[:3]
    assert spread(items, 1) == ["0"] and spread(items, 0) == []


def test_the_seeds_level_means_the_same_from_the_run_or_typed(reported_copy):
    """`wsss cam` at the level its seeds' folder holds rewrites no seed, whether that level is the run's own or
    typed (``--bkg-thre T``, the word ``cam.bkg_thre=T``); at another level every seed is written again."""
    from wsss.core.config import load_config

    run = reported_copy  # its seeds of val are at the run's own level
    seeds = run / "cam_labels" / "val"
    level = load_config(run / "config.yaml").cam.bkg_thre

    def files() -> dict[str, int]:  # each seed's inode: an atomic write gives the file a new one
        return {p.name: p.stat().st_ino for p in seeds.glob("*.png")}

    first = files()
    assert first
    assert main(["cam", str(run), "--split", "val", "--bkg-thre", str(level), "--quiet"]) == 0
    assert files() == first
    assert main(["cam", str(run), "--split", "val", "--bkg-thre", str(level / 2), "--quiet"]) == 0
    assert not set(files().items()) & set(first.items())


def test_a_seed_is_the_same_from_a_cam_just_made_or_its_saved_file(reported_copy, monkeypatch):
    """A seed made with its CAM is the one a later job makes from the saved (float16) CAM: values that float16
    rounds across the background level fall the same way on both paths."""
    import numpy as np

    from wsss.core.config import load_config
    from wsss.runs.run import Run

    run = reported_copy
    seeds = run / "cam_labels" / "val"
    level = float(load_config(run / "config.yaml").cam.bkg_thre)

    def near_the_level(self, image, labels, scales=None, *, prepared=None):  # noqa: ANN001, ANN202 (Run's)
        classes = np.flatnonzero(np.asarray(labels) > 0.5)
        h, w = image.shape[:2]
        # every pixel within float16's rounding of the level: some cross it when rounded
        band = np.linspace(level - 2e-3, level + 2e-3, h * w, dtype=np.float32).reshape(h, w)
        return classes, np.stack([band] * len(classes))

    monkeypatch.setattr(Run, "labelled_cam", near_the_level)
    crossing = np.linspace(level - 2e-3, level + 2e-3, 10_000, dtype=np.float32)
    assert ((crossing > level) != (crossing.astype(np.float16).astype(np.float32) > level)).any()
    assert main(["cam", str(run), "--split", "val", "--overwrite", "--quiet"]) == 0
    made = {p.name: p.read_bytes() for p in seeds.glob("*.png")}
    assert made
    for other in (level / 2, level):  # away and back: every seed rewritten from its saved CAM
        assert main(["cam", str(run), "--split", "val", "--bkg-thre", str(other), "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in seeds.glob("*.png")} == made


def test_a_jobs_crf_processes_are_decided_once_and_the_pool_gets_the_number(reported_copy, monkeypatch):
    """``infer.crf_workers=-1`` is decided in one place (``crf_processes``: the cores' rule of
    ``cam.crf.crf_workers``, none without a CRF); a job's pool gets that number, never the -1 to decide again."""
    from wsss.cam import CRFPool
    from wsss.cam.crf import crf_workers
    from wsss.runs import jobs

    given = []

    def spy(workers: int, *args, **kw):  # noqa: ANN002, ANN003 (CRFPool's)
        given.append(workers)
        return CRFPool(0, *args, **kw)  # in this process: the test starts no pool

    monkeypatch.setattr(jobs, "CRFPool", spy)
    run = str(reported_copy)
    assert main(["predict", run, "--split", "val", "--crf", "--crf-workers", "-1", "--quiet"]) == 0
    assert main(["predict", run, "--split", "val", "--crf-workers", "3", "--quiet"]) == 0  # no CRF: no process
    assert given == [crf_workers(-1), 0]
