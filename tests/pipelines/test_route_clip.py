"""``wsss route`` with CLIP files (docs/own-photos.md#with-clip-files), end to end on synthetic photos with tiny random
CLIP and DINOv2 folders written by open_clip and transformers (tests/tiny_weights.py) and tiny schedules: each mode
(CLIP + DINOv2: WeCLIP+; CLIP only: CLIP-ES then the DeepLab stage; class names only: the photos tagged first;
none: one line saying what is needed), its choice printed with its reason, ``--plan`` equal to what runs, the GPU
presets on a CUDA device, several processes (gloo on the CPU), a rerun after tags.csv is edited, a SIGTERM."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, VOC_REAL_MINI
from tiny_weights import write_dinov2_folder, write_open_clip_folder
from wsss.cli import main
from wsss.core.config import load_config
from wsss.data.classes import read_classes
from wsss.data.voc import load_cls_labels
from wsss.utils.io import read_label_png

# every run shrunk to seconds on the CPU; the WeCLIP+ decoder narrowed, its test resized to the photos' side
TINY = [
    "run.device=cpu",
    "train.epochs=null",
    "train.max_iters=2",
    "train.ckpt_iters=2",
    "train.log_iters=1",
    "data.crop_size=64",
    "data.num_workers=0",
    "train.batch_size=4",
]
WECLIP_TINY = [
    "clip.options.test_resize_long=64",
    "clip.infer.resize_long=64",
    "clip.options.embedding_dim=32",
    "clip.options.decoder_heads=2",
]
FAST = ["--folds", "0", "--crf-workers", "0", "--quiet"]
PAPER = "not a measurement on real photos here"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of 10 synthetic photos, their labels file, the class list, masks of 4 of them, and the two weight
    folders."""
    from wsss.data import generate_synthetic

    work = tmp_path_factory.mktemp("clip_route")
    root = work / "synth"
    generate_synthetic(root, n_train=8, n_val=2, size=64, seed=5, verbose=False)
    names = read_classes(root)
    rows = [
        f"{i}.jpg,{';'.join(names[1 + c] for c in np.flatnonzero(v))}"
        for i, v in sorted((load_cls_labels(root, len(names)) or {}).items())
    ]
    (work / "labels.csv").write_text("\n".join(["image,labels", *rows]) + "\n")
    (work / "classes.txt").write_text("\n".join(names) + "\n")
    masks = work / "masks"
    masks.mkdir()
    for png in sorted((root / "SegmentationClass").glob("*.png"))[:4]:
        (masks / png.name).write_bytes(png.read_bytes())
    return {
        "images": root / "JPEGImages",
        "labels": work / "labels.csv",
        "classes": work / "classes.txt",
        "masks": masks,
        "clip": write_open_clip_folder(work / "clip"),
        "dinov2": write_dinov2_folder(work / "dinov2"),
    }


def _route(p: dict[str, Path], out: Path, *, labels: bool = True, dinov2: bool = False, clip: bool = True) -> list[str]:
    argv = ["route", str(p["images"]), "--classes", str(p["classes"]), "--masks", str(p["masks"]), "--out", str(out)]
    argv += ["--labels", str(p["labels"])] if labels else []
    argv += ["--clip", str(p["clip"])] if clip else []
    argv += ["--dinov2", str(p["dinov2"]), *WECLIP_TINY] if dinov2 else []
    return [*argv, *FAST, *TINY]


def _ran(said: str) -> list[str]:
    """The steps a route ran after preparing its data, as ``title: command``."""
    return [m.group(1) for m in re.finditer(r"^\[\d+/\d+\] (\w[\w ]*: .+)$", said, re.M) if "prepare" not in m.group(1)]


def _planned(said: str) -> list[str]:
    return _ran(said)  # `--plan` numbers its steps as the run does


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_label_png(p) for p in sorted(folder.glob("*.png"))}


@pytest.mark.slow
def test_clip_and_dinov2_train_weclip_plus_on_the_photos_as_planned(photos, tmp_path, capsys, one_thread):
    out = tmp_path / "route"
    assert main([*_route(photos, out, dinov2=True), "--plan"]) == 0  # before anything is written
    planned = capsys.readouterr().out
    assert "estimate: none measured of the CLIP modes" in planned and not out.exists()
    assert main(_route(photos, out, dinov2=True)) == 0
    said = capsys.readouterr().out
    assert "route: mode: weclip_plus (a CLIP and a DINOv2 file" in said and PAPER in said
    assert "route: presets: cpu" in said and "by WeCLIP+'s official test fusion" in said
    cfg = load_config(out / "weclip/config.yaml")
    assert cfg.model.pretrained == str(photos["clip"]) and cfg.options["dino_weights"] == str(photos["dinov2"])
    assert list(cfg.infer.scales) == [1.0, 1.5] and cfg.infer.fuse_at == "grid"  # the official test fusion, no CRF
    summary = json.loads((out / "summary.json").read_text())
    val = sorted((out / "data/ImageSets/Segmentation/val.txt").read_text().split())
    train = sorted((out / "data/ImageSets/Segmentation/train.txt").read_text().split())
    assert sorted(_masks(out / "weclip/predictions_labelled/val")) == val  # no CRF: WeCLIP+'s test
    assert summary["masks"] == str(out.resolve() / "masks") and sorted(_masks(out / "masks")) == sorted(train + val)
    assert 0 <= summary["scores"]["val_miou"] <= 100 and summary["choices"]["mode"]["value"] == "weclip_plus"
    assert "masks of all 10 train and val photos, by WeCLIP+'s test fusion" in said
    # --plan, before the route ran, printed the very steps that ran
    assert _planned(planned) == _ran(said) and [s.split(":")[0] for s in _ran(said)] == ["weclip", "masks", "report"]


@pytest.mark.slow
def test_clip_only_runs_clip_es_then_the_deeplab_stage(photos, tmp_path, capsys, one_thread):
    out = tmp_path / "route"
    assert main([*_route(photos, out), "--plan"]) == 0
    planned = capsys.readouterr().out
    assert main(_route(photos, out)) == 0
    said = capsys.readouterr().out
    assert "route: mode: clip_es (a CLIP file, no DINOv2" in said and "ExCEL" in said and PAPER in said
    assert [s.split(":")[0] for s in _ran(said)] == ["clip", "cam", "pseudo", "seg", "masks", "report"]
    assert "wsss pseudo" in said and "--refine crf" in said
    train = (out / "data/ImageSets/Segmentation/train.txt").read_text().split()
    assert sorted(_masks(out / "clip/pseudo/train")) == sorted(train)
    seg = load_config(out / "seg/config.yaml")
    assert seg.data.pseudo_dir == str(out.resolve() / "clip/pseudo/train") and seg.run.device == "cpu"
    assert (out / "seg/predictions_crf_labelled/val").is_dir() and (out / "clip/report/index.html").is_file()
    assert len(_masks(out / "masks")) == 10 and _planned(planned) == _ran(said)


@pytest.mark.slow
def test_class_names_alone_are_tagged_and_a_rerun_continues_from_the_edited_tags(photos, tmp_path, capsys, one_thread):
    out = tmp_path / "route"
    assert main(_route(photos, out, labels=False)) == 0
    said = capsys.readouterr().out
    tags = out / "data/tags.csv"
    assert "[3/8] tag: wsss tag" in said and tags.is_file()
    summary = json.loads((out / "summary.json").read_text())
    scored = summary["scores"]["tags"]
    assert f"precision {scored['precision']:.3f}, recall {scored['recall']:.3f}" in said  # where masks exist
    with open(tags, newline="") as f:
        rows = list(csv.reader(f))
    names, masked = rows[0][3:], {p.stem for p in photos["masks"].glob("*.png")}
    unmasked = next(i for i, r in enumerate(rows) if i and r[0] not in masked)
    rows[unmasked][1] = f"{names[0]};{names[2]}"  # a person's correction of a photo without a mask
    with open(tags, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    before = (out / "clip/pseudo/train" / f"{rows[unmasked][0]}.png").stat().st_mtime_ns
    assert main(_route(photos, out, labels=False)) == 0
    again = capsys.readouterr().out
    assert "tag: wsss tag" in again and "--labels-from tags.csv --overwrite" in again
    assert "the labels changed since the steps after the tags ran (tags.csv edited): they run again" in again
    labels = load_cls_labels(out / "data", len(names) + 1)
    assert np.flatnonzero(labels[rows[unmasked][0]]).tolist() == [0, 2]
    assert (out / "clip/pseudo/train" / f"{rows[unmasked][0]}.png").stat().st_mtime_ns != before  # made again
    # the same command once more: the labels as they were, nothing made again
    assert main(_route(photos, out, labels=False)) == 0
    assert "they run again" not in capsys.readouterr().out


def test_class_names_without_a_clip_file_say_what_is_needed(photos, tmp_path, capsys):
    assert main(_route(photos, tmp_path / "route", labels=False, clip=False)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tagged by CLIP: give a CLIP ViT-B/16 file (--clip" in err[0] and "--labels" in err[0]
    assert not (tmp_path / "route").exists()
    assert (
        main(
            [
                "route",
                str(photos["images"]),
                "--dinov2",
                str(photos["dinov2"]),
                "--labels",
                str(photos["labels"]),
                "--classes",
                str(photos["classes"]),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    assert "WeCLIP+ needs a CLIP file too" in capsys.readouterr().err


def test_a_cuda_device_gets_the_gpu_presets_and_run_device_cpu_keeps_the_cpu_ones(
    photos, tmp_path, monkeypatch, synth_root
):
    import torch

    from wsss.pipelines.route import Route
    from wsss.pipelines.route_values import RouteOptions

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def plan(*words: str, **opts: object) -> Route:
        route = Route(
            RouteOptions(data=str(synth_root), out=str(tmp_path / "r"), plan_only=True, overrides=words, **opts),
            say=lambda _: None,
        )
        route.run()
        return route

    gpu = plan()
    cls, seg = gpu.configs["cls"], gpu.configs["seg"]
    assert gpu.choices["presets"].value == "gpu" and gpu.processes == 1
    assert cls.run.device == seg.run.device == "cuda" and seg.run.amp == "bf16" and seg.model.output_stride == 8
    assert seg.train.batch_size == 10 and seg.train.epochs == 12  # DeepLab-v2's batch, the real photos' length
    cpu = plan("run.device=cpu")
    assert cpu.choices["presets"].value == "cpu" and cpu.configs["seg"].model.output_stride == 16
    assert cpu.configs["cls"].run.amp == "none" and cpu.configs["seg"].train.batch_size == 8
    weclip = plan(f"clip.options.dino_weights={photos['dinov2']}", clip=str(photos["clip"]))
    w = weclip.configs["weclip"]
    assert w.run.device == "cuda" and w.run.amp == "bf16" and w.train.epochs == 11.34 and w.data.crop_size == 320
    assert w.options["label_update_fraction"] == 0.6 and "seg" not in weclip.configs


@pytest.mark.slow
def test_two_processes_train_through_torchrun_and_share_the_per_photo_steps(
    photos, tmp_path, capsys, monkeypatch, one_thread
):
    """Several CUDA devices as 2 processes on the CPU (gloo): the route's trainings run as torchrun processes, its
    CAMs, pseudo labels and predictions shared among 2 processes; the same masks as one process."""
    from wsss.pipelines import route as module

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each process's threads those of the one-process route
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_route(photos, one)) == 0
    presets = module.Route._presets

    def two_processes(self, cuda_devices):  # the count of CUDA devices a GPU machine would give
        choice = presets(self, cuda_devices)
        self.processes = 2
        return choice

    monkeypatch.setattr(module.Route, "_presets", two_processes)
    started: list[list[str]] = []
    real = module.gpus.train_processes
    monkeypatch.setattr(module.gpus, "train_processes", lambda n, argv: started.append(argv) or real(n, argv))
    shared: list[tuple[int, str]] = []
    sharded = module.gpus.sharded
    monkeypatch.setattr(module.gpus, "sharded", lambda n, argv: shared.append((n, argv[0])) or sharded(n, argv))
    capsys.readouterr()
    assert main(_route(photos, two)) == 0
    assert len(started) == 1 and started[0][0] == str(two.resolve() / "seg") + ".yaml"
    assert shared == [(2, "cam"), (2, "pseudo"), (2, "predict"), (2, "predict")]  # predict: train, val
    a, b = _masks(one / "seg/predictions_crf_labelled/val"), _masks(two / "seg/predictions_crf_labelled/val")
    assert a.keys() == b.keys() and len(a) >= 1 and all(np.array_equal(a[k], b[k]) for k in a)
    pa, pb = _masks(one / "clip/pseudo/train"), _masks(two / "clip/pseudo/train")
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.mark.slow
def test_sigterm_in_weclip_plus_then_the_same_command_gives_the_uninterrupted_masks(photos, tmp_path, one_thread):
    # long enough to be stopped in, on a loaded machine too
    longer = [*TINY, "clip.train.max_iters=40", "clip.train.ckpt_iters=2"]

    def argv(out: Path) -> list[str]:
        return [*_route(photos, out, dinov2=True)[: -len(TINY)], *longer]

    assert main(argv(tmp_path / "straight")) == 0
    stopped = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsss", *argv(stopped)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics, t0 = stopped / "weclip/metrics.jsonl", time.time()
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):  # inside WeCLIP+'s training
        assert proc.poll() is None and time.time() - t0 < 600, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert not (stopped / "weclip/predictions_labelled").exists() and (stopped / "weclip/checkpoints/last.pt").is_file()
    again = subprocess.run(
        [sys.executable, "-m", "wsss", *argv(stopped)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr
    a, b = (
        _masks(tmp_path / "straight/weclip/predictions_labelled/val"),
        _masks(stopped / "weclip/predictions_labelled/val"),
    )
    assert a.keys() == b.keys() and len(a) >= 1 and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("dinov2", [False, True], ids=["clip_es", "weclip_plus"])
def test_the_six_voc_photos_from_class_names_and_clip_files(dinov2, photos, tmp_path, capsys, one_thread):
    """The six VOC photos with their class names only: tagged by the CLIP-ES run, then CLIP-ES and the DeepLab stage,
    or WeCLIP+ (the tagger then takes the CLIP words its method knows, WeCLIP+'s options left out)."""
    classes = tmp_path / "classes.txt"
    from wsss.data.classes import VOC_CLASSES

    classes.write_text("\n".join(VOC_CLASSES) + "\n")
    out = tmp_path / "route"
    files = ["--clip", str(photos["clip"]), *(["--dinov2", str(photos["dinov2"]), *WECLIP_TINY] if dinov2 else [])]
    assert (
        main(
            [
                "route",
                str(VOC_REAL_MINI / "JPEGImages"),
                "--classes",
                str(classes),
                "--masks",
                str(VOC_REAL_MINI / "SegmentationClass"),
                *files,
                "--out",
                str(out),
                *FAST,
                *TINY,
                "data.crop_size=128",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    mode = "weclip_plus" if dinov2 else "clip_es"
    assert f"route: mode: {mode}" in said and "tags against the classes of" in said
    with open(out / "data/tags.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len((out / "data/ImageSets/Segmentation/train.txt").read_text().split())
    final = out / ("weclip/predictions_labelled/val" if dinov2 else "seg/predictions_crf_labelled/val")
    assert sorted(_masks(final)) == sorted((out / "data/ImageSets/Segmentation/val.txt").read_text().split())
