"""The CLIP-ES route end to end on the six real VOC photos with the golden tiny CLIP as the weight file:
import (no training), cam, sweep-bkg, pseudo --refine crf, the DeepLab stage on those labels, predict,
report. The weights are random, so only shapes, files and that every step ran are checked."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, VOC_REAL_MINI, VOC_REAL_MINI_IDS
from golden import load_golden
from wsss.cli import main
from wsss.core.config import load_config

SEG_TINY = [
    "train.epochs=null",
    "train.max_iters=2",
    "train.ckpt_iters=2",
    "train.log_iters=1",
    "data.crop_size=96",
    "train.batch_size=2",
]


@pytest.mark.slow
def test_clip_es_route_on_voc_real_mini(tmp_path, capsys, one_thread):
    weights = tmp_path / "tiny_clip.npz"
    np.savez(weights, **load_golden("clip_es_state_dict"))
    run, seg = tmp_path / "clip_es", tmp_path / "seg"
    data = ["--data-root", str(VOC_REAL_MINI)]

    def wsss(*argv: str) -> str:
        code = main(list(argv))
        out = capsys.readouterr()
        assert code == 0, f"wsss {' '.join(argv)}\n{out.err[-3000:]}"
        return out.out

    wsss(
        "import",
        "clip_es",
        str(weights),
        "--config",
        str(REPO / "configs/clip_es/voc.yaml"),
        "--out",
        str(run),
        f"data.root={VOC_REAL_MINI}",
        "options.text_heads=2",
        "options.quick_gelu=true",
        "run.device=cpu",
    )
    cfg = load_config(run / "config.yaml")
    assert cfg.options["prompts"][14] == "person with clothes,people,human"  # the preset's synonyms
    assert cfg.options["arch"]["vision_layers"] == 3 and not (run / "checkpoints" / "best.pt").exists()

    wsss("cam", str(run), "--split", "val", "--quiet", *data)
    for id in VOC_REAL_MINI_IDS:
        with np.load(run / "cams" / "val" / f"{id}.npz") as z:
            keys, cam = z["keys"], z["cam"]
        h, w = np.asarray(Image.open(VOC_REAL_MINI / "JPEGImages" / f"{id}.jpg")).shape[:2]
        assert cam.dtype == np.float16 and cam.shape == (len(keys), h, w) and len(keys) >= 1
        assert cam.min() >= 0.0 and cam.max() <= 1.0 and cam.max() > 0.9  # min-max normalised maps
    assert "best background" in wsss("sweep-bkg", str(run), "--split", "val", "--quiet", *data)

    wsss("pseudo", str(run), "--split", "val", "--refine", "crf", "--quiet", *data)
    for id in VOC_REAL_MINI_IDS:
        label = np.asarray(Image.open(run / "pseudo" / "val" / f"{id}.png"))
        with np.load(run / "cams" / "val" / f"{id}.npz") as z:
            allowed = {0, 255, *z["keys"].tolist()}  # background, ignore and the image's own classes
            assert label.shape == z["cam"].shape[1:]
        assert set(np.unique(label).tolist()) <= allowed

    wsss(
        "train",
        str(REPO / "configs/deeplab/real_cpu.yaml"),
        f"data.root={VOC_REAL_MINI}",
        "data.train_split=val",
        f"data.pseudo_dir={run / 'pseudo' / 'val'}",
        f"run.dir={seg}",
        *SEG_TINY,
        "--quiet",
    )
    wsss("predict", str(seg), "--split", "val", "--quiet", *data)
    assert sorted(p.stem for p in (seg / "predictions" / "val").glob("*.png")) == sorted(VOC_REAL_MINI_IDS)
    wsss("report", str(run))
    assert (run / "report" / "index.html").is_file()
