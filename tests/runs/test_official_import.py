"""`wsss import sccam`: an official SC-CAM (or PSA round-0) classifier as a run directory.

The SeCo, ToCo and RCA imports are tested beside their golden fixtures (tests/methods/<name>/test_*_golden.py);
SC-CAM's recorded heads are in test_sccam_golden.py, and this checks the whole file: the ResNet-38 trunk
under PSA's names, ``module.`` keys, with or without the BatchNorm counters.
"""

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from golden import assert_close_to_max
from wsss.cli import main
from wsss.core.config import load_config
from wsss.methods import build_method, placeholder_classes
from wsss.runs.run import load_run

NARROW = ["model.pretrained=null", "model.backbone_kwargs={width: 0.0625}"]


def _official(state: dict[str, torch.Tensor], counters: bool) -> dict[str, torch.Tensor]:
    """Our SC-CAM state under the official names (``network/resnet38_cls.py``), as DataParallel saves it."""
    heads = {"classifier.conv.weight": "fc8_20.weight", "sub_classifier.conv.weight": "fc8_200.weight"}
    out = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked") and not counters:
            continue
        out["module." + heads.get(k, k.removeprefix("backbone.net."))] = v
    return out


@pytest.mark.parametrize("counters", [True, False])
def test_wsss_import_sccam_round_trip(synth_root, tmp_path, counters):
    over = [*NARROW, "options.round=1", f"data.root={synth_root}"]
    cfg = load_config(REPO / "configs/sccam/voc.yaml", over)
    torch.manual_seed(0)
    m = build_method(cfg, placeholder_classes(7)).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    ckpt = tmp_path / "sccam_official.pth"
    torch.save(_official(m.state_dict(), counters), ckpt)
    run = tmp_path / "run"
    argv = ["import", "sccam", str(ckpt), "--config", str(REPO / "configs/sccam/voc.yaml"), "--out", str(run)]
    assert main([*argv, *over]) == 0
    imported = load_run(run, device="cpu").method
    assert imported.round == 1
    x = torch.rand(1, 3, 48, 40)
    # the import copies the weights (exact); the two forwards of the same weights agree to float32 rounding:
    # identical here, but a BLAS may split a sum differently for another memory alignment: 1e-6 of the max
    own, got = dict(m.named_parameters()), dict(imported.named_parameters())
    assert own.keys() == got.keys() and all(torch.equal(got[k], p) for k, p in own.items())
    with torch.no_grad():
        for ours, ref in zip(imported.cam_maps(x), m.cam_maps(x)):
            assert_close_to_max(ours, ref, 1e-6)


def test_wsss_import_psa_round0_and_a_round_mismatch(synth_root, tmp_path, capsys):
    """PSA's res38_cls.pth (trunk + fc8) imports as round 0; a round-0 file with a round-1 config is one
    error line naming the file and the missing sub-category head."""
    over = [*NARROW, "options.round=0", f"data.root={synth_root}"]
    m = build_method(load_config(REPO / "configs/sccam/voc.yaml", over), placeholder_classes(7)).eval()
    state = {
        ("fc8.weight" if k == "classifier.conv.weight" else k.removeprefix("backbone.net.")): v
        for k, v in m.state_dict().items()
    }
    ckpt = tmp_path / "res38_cls.pth"
    torch.save(state, ckpt)
    argv = ["import", "sccam", str(ckpt), "--config", str(REPO / "configs/sccam/voc.yaml")]
    # a fresh interpreter, as a user runs it: nothing but the command imports the methods
    done = subprocess.run(
        [sys.executable, "-m", "wsss", *argv, "--out", str(tmp_path / "r0"), *over],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    imported = load_run(tmp_path / "r0", device="cpu").method
    assert imported.round == 0 and torch.equal(imported.classifier.conv.weight, m.classifier.conv.weight)
    capsys.readouterr()
    one = [*NARROW, "options.round=1", f"data.root={synth_root}"]
    assert main([*argv, "--out", str(tmp_path / "r1"), *one]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {ckpt}") and "sub_classifier" in err and "\n" not in err
    assert not (tmp_path / "r1").exists()


def test_wsss_import_sccam_refuses_another_architecture(synth_root, tmp_path, capsys):
    ckpt = tmp_path / "not_sccam.pth"
    torch.save({"encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 3), "fc8_20.weight": torch.zeros(6, 4, 1, 1)}, ckpt)
    argv = ["import", "sccam", str(ckpt), "--config", str(REPO / "configs/sccam/voc.yaml")]
    assert main([*argv, "--out", str(tmp_path / "r"), *NARROW, f"data.root={synth_root}"]) == 1
    assert "encoder.blocks.0.attn.qkv.weight" in capsys.readouterr().err


def test_wsss_import_refuses_a_folder_that_holds_files_without_overwrite(reported, synth_root, tmp_path, capsys):
    """`wsss import toco FILE --out A9`, A9 a trained run, replaced its last.pt and config.yaml. An --out
    that holds files is refused, naming them; --overwrite writes the import there and keeps the run's checkpoints,
    moved aside, so that its best.pt is not loaded in place of the imported weights."""
    import shutil

    over = [*NARROW, "options.round=0", f"data.root={synth_root}"]
    m = build_method(load_config(REPO / "configs/sccam/voc.yaml", over), placeholder_classes(7)).eval()
    ckpt = tmp_path / "res38_cls.pth"
    torch.save(
        {
            ("fc8.weight" if k == "classifier.conv.weight" else k.removeprefix("backbone.net.")): v
            for k, v in m.state_dict().items()
        },
        ckpt,
    )
    trained, _ = reported
    run = tmp_path / "A9"
    run.mkdir()
    shutil.copy(trained / "config.yaml", run / "config.yaml")
    shutil.copytree(trained / "checkpoints", run / "checkpoints")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    argv = ["import", "sccam", str(ckpt), "--config", str(REPO / "configs/sccam/voc.yaml"), "--out", str(run)]
    capsys.readouterr()
    assert main([*argv, *over]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(
            f"error: {run}: holds a run (checkpoints, config.yaml); import into a new folder, or pass --overwrite"
        )
        and "\n" not in err
    )
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine\n")
    assert (
        main(
            ["import", "sccam", str(ckpt), "--config", str(REPO / "configs/sccam/voc.yaml"), "--out", str(notes), *over]
        )
        == 1
    )
    assert f"{notes}: holds files (todo.txt)" in capsys.readouterr().err
    assert main([*argv, "--overwrite", *over]) == 0
    aside = {p.relative_to(run / "checkpoints.1"): p.read_bytes() for p in (run / "checkpoints.1").rglob("*")}
    assert aside == {p.relative_to("checkpoints"): b for p, b in before.items() if p.parts[0] == "checkpoints"}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]
    imported = load_run(run, device="cpu").method
    assert imported.round == 0 and torch.equal(imported.classifier.conv.weight, m.classifier.conv.weight)


def test_wsss_import_refuses_a_run_in_use(synth_root, tmp_path, capsys):
    """`wsss import --overwrite` into a run that a `wsss train` was writing took no lock: the training's next
    checkpoint and the import's landed in one folder. The import holds the run's lock as a training does; a run in
    use is refused, naming its holder, and nothing is written."""
    from wsss.utils.runlock import run_dir_lock

    over = [*NARROW, "options.round=0", f"data.root={synth_root}"]
    m = build_method(load_config(REPO / "configs/sccam/voc.yaml", over), placeholder_classes(7)).eval()
    ckpt = tmp_path / "res38_cls.pth"
    torch.save(
        {
            ("fc8.weight" if k == "classifier.conv.weight" else k.removeprefix("backbone.net.")): v
            for k, v in m.state_dict().items()
        },
        ckpt,
    )
    run = tmp_path / "busy"
    argv = ["import", "sccam", str(ckpt), "--config", str(REPO / "configs/sccam/voc.yaml"), "--out", str(run), *over]
    with run_dir_lock(run, command="wsss train"):
        assert main([*argv, "--overwrite"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {run}: the run is in use by wsss train") and "--out" in err and "\n" not in err
        assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()
    assert main(argv) == 0  # the lock's own file is no file of a run: the folder takes the import
    assert load_run(run, device="cpu").method.round == 0
