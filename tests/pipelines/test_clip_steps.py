"""The CLIP modes' pieces of ``wsss route`` (pipelines/clip_steps.py) with tiny random CLIP and DINOv2 files written by
open_clip and transformers (tests/tiny_weights.py): the mode each set of files chooses, the CLIP-ES run made from a
file, the photos tagged and an edited tags.csv read back, and WeCLIP+'s GPU preset training on the CPU from the
two folders."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from conftest import REPO
from tiny_weights import write_dinov2_folder, write_open_clip_folder
from wsss.core.config import load_config
from wsss.data.classes import read_classes
from wsss.data.voc import load_cls_labels
from wsss.pipelines import clip_steps


def test_the_words_of_clip_es_leave_out_weclip_plus_options_only():
    """Beside WeCLIP+, the CLIP-ES run that tags the photos takes the CLIP words its method knows: its own options
    (those its preset leaves at their defaults too) and every other section; WeCLIP+'s options are left out."""
    words = [
        "options.quick_gelu=true",
        "options.dino_heads=2",
        "options.embedding_dim=32",
        "train.lr=1",
        "options.synonyms={cat: kitty}",
    ]
    assert clip_steps.words_of(clip_steps.CLIP_ES_PRESET, words) == [
        "options.quick_gelu=true",
        "train.lr=1",
        "options.synonyms={cat: kitty}",
    ]


def _photos(tmp_path):
    from wsss.data import generate_synthetic

    root = tmp_path / "photos"
    generate_synthetic(root, n_train=6, n_val=2, size=64, seed=5)
    return root


def test_clip_es_run_from_an_open_clip_folder_tags_the_photos_and_reads_an_edited_tags_csv(tmp_path, one_thread):
    root, clip = _photos(tmp_path), write_open_clip_folder(tmp_path / "clip")
    run = clip_steps.import_clip_run(clip, root, tmp_path / "clip_es", ["data.crop_size=64"], device="cpu")
    assert load_config(run / "config.yaml").options["weights"] == str(clip)
    assert clip_steps.import_clip_run(clip, root, run) == run  # kept: a route continued
    summary, from_csv = clip_steps.tag_photos(run, "train", device="cpu", progress=False)
    assert not from_csv and summary.tagged == 6 and summary.with_mask == 6  # the synthetic photos have masks
    assert 0 <= summary.precision <= 1 and 0 <= summary.recall <= 1
    ids = sorted(load_cls_labels(root, len(read_classes(root))))
    tagged = clip_steps.labels_digest(root, ids)
    with open(root / "tags.csv", newline="") as f:
        rows = list(csv.reader(f))
    classes = rows[0][3:]
    first = rows[1][0]
    rows[1][1] = f"{classes[0]};{classes[1]}"  # a person's correction of the first photo
    with open(root / "tags.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    summary, from_csv = clip_steps.tag_photos(run, "train", device="cpu", progress=False)
    labels = load_cls_labels(root, len(classes) + 1)
    assert from_csv and np.flatnonzero(labels[first]).tolist() == [0, 1]
    assert clip_steps.labels_digest(root, ids) != tagged


@pytest.mark.slow
def test_weclip_plus_gpu_preset_trains_on_the_cpu_from_open_clip_and_transformers_folders(
    tmp_path, wsss_cli, one_thread
):
    """configs/weclip_plus/route_gpu.yaml with ``run.device=cpu`` and a tiny schedule in epochs: the label update
    lands at 0.6 of the resolved length; predict runs the preset's official test fusion."""
    root, clip, dino = _photos(tmp_path), write_open_clip_folder(tmp_path / "clip"), write_dinov2_folder(tmp_path / "d")
    run = tmp_path / "weclip"
    wsss_cli(
        "train",
        str(REPO / "configs/weclip_plus/route_gpu.yaml"),
        f"data.root={root}",
        f"run.dir={run}",
        f"model.pretrained={clip}",
        f"options.dino_weights={dino}",
        "run.device=cpu",
        "data.crop_size=64",
        "data.num_workers=0",
        "train.batch_size=2",
        "train.epochs=1",
        "options.test_resize_long=64",
        "infer.resize_long=64",
        "options.embedding_dim=32",
        "options.decoder_heads=2",
        "--quiet",
    )
    cfg = load_config(run / "config.yaml")
    assert cfg.train.max_iters == 3 and cfg.options["label_update_fraction"] == 0.6  # 6 photos, batch 2
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert int(state["model"]["decoder_steps"]) == 3
    wsss_cli("predict", str(run), "--split", "val", "--quiet")
    assert len(list((run / "predictions" / "val").glob("*.png"))) == 2
