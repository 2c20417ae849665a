"""cam, pseudo and predict stream: whatever the number of photos, each command leaves its outputs
(one file per photo and output folder, and the folder's settings stamp and lock) and nothing else in the run
folder, so that COCO's 122,218 photos need no more disk than their outputs (BENCHMARKS.md, "Streaming at COCO's
scale")."""

from __future__ import annotations

import shutil
from pathlib import Path

from wsss.cli import main

COMMANDS = (  # the command's arguments after RUN, and its output folders under the run
    (["cam"], ["cams", "cam_labels"]),
    (["pseudo", "--refine", "crf"], ["pseudo"]),
    (["predict", "--crf", "--save-probs"], ["predictions_crf", "probs"]),
)


def _files(run: Path) -> set[Path]:
    return {f for f in run.rglob("*") if f.is_file()}


def test_cam_pseudo_and_predict_leave_only_their_outputs(reported, synth_root, tmp_path):
    from wsss.data import VOCDataset

    src, _ = reported
    run = tmp_path / "run"  # the trained run's config and weights alone: the session's run keeps its outputs
    run.mkdir()
    shutil.copy(src / "config.yaml", run / "config.yaml")
    shutil.copytree(src / "checkpoints", run / "checkpoints")
    ids = VOCDataset(synth_root, "val").ids
    for args, outs in COMMANDS:
        before = _files(run)
        assert main([args[0], str(run), *args[1:], "--split", "val", "--quiet"]) == 0, args
        new = _files(run) - before
        folders = [run / o / "val" for o in outs]
        outside = sorted(str(f.relative_to(run)) for f in new if not any(d in f.parents for d in folders))
        assert outside == [], (args, outside)
        for d in folders:
            per_photo = [f for f in d.iterdir() if f.stem in ids]
            assert len(per_photo) == len(ids), (d, len(per_photo))
            others = [f.name for f in d.iterdir() if f.stem not in ids]
            # its stamp, its photos' records and its lock, one each
            assert set(others) <= {".settings.json", ".sources.json", ".job.lock"}, (d, others)
