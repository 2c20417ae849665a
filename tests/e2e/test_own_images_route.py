"""The own-images route of the manual (docs/own-photos.md), run as written (the block between the own-images
markers) from a directory laid out like a fresh clone, with a tiny training schedule appended to `wsss train`."""

from __future__ import annotations

import re
import shlex
import subprocess

from conftest import ASSETS, REPO
from wsss.cli import main

TINY = ["train.epochs=null", "train.max_iters=2", "train.eval_iters=2", "train.ckpt_iters=2", "train.log_iters=1",
        "data.crop_size=128", "infer.cam_scales=[1.0]"]  # fmt: skip


def route_block() -> str:
    text = (REPO / "docs/own-photos.md").read_text()
    m = re.search(r"<!-- own-images:begin -->\s*```bash\n(.*?)```\s*<!-- own-images:end -->", text, re.S)
    assert m, "docs/own-photos.md lost its own-images route block"
    return m.group(1)


def route_commands() -> list[str]:
    """The block's commands: continuation lines joined, comments dropped."""
    joined = route_block().replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_readme_own_images_route_reaches_a_report(tmp_path, monkeypatch, capsys, one_thread):
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "configs").symlink_to(REPO / "configs")  # what a fresh clone has: its presets and its test photos
    (clone / "tests").mkdir()
    (clone / "tests" / "assets").symlink_to(ASSETS)
    monkeypatch.chdir(clone)
    for command in route_commands():
        if command.startswith("wsss "):  # in-process: the same entry point as the console script
            argv = shlex.split(command)[1:]
            if argv[0] == "train":
                argv += [*TINY, "--quiet"]
            assert main(argv) == 0, f"{command}\n{capsys.readouterr().err[-3000:]}"
        else:
            res = subprocess.run(["bash", "-euc", command], capture_output=True, text=True)
            assert res.returncode == 0, f"{command}\n{res.stderr}"
    captured = capsys.readouterr()
    assert "mobilenet_v2-b0353104.pth = /" in captured.err  # train said which weights file it loaded
    page = (clone / "runs/myphotos/report/index.html").read_text()  # the classifier: train's seeds, pseudo labels
    assert 'data-split="train" data-output="pseudo" data-metric="miou"' in page
    assert len(list((clone / "runs/myphotos/pseudo/train").glob("*.png"))) == 5
    page = (clone / "runs/myphotos_seg/report/index.html").read_text()  # the DeepLab stage: val's masks + CRF
    assert 'data-split="val" data-output="predictions_crf" data-metric="miou"' in page
    assert len(list((clone / "runs/myphotos_seg/predictions_crf/val").glob("*.png"))) == 1


#: What makes a block the advised route: the presets trained, the refiner and its levels, the prediction's CRF.
ROUTE_CHOICES = re.compile(r"configs/\w+/real_cpu\.yaml|--refine \w+|--levels \S+|data\.true_masks=\w+|--crf")


def route_of(block: str) -> list[str]:
    """The route's choices in a block's ``wsss`` commands, in order (not those of new photos, ``--images``)."""
    words = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in line.split("#", 1)[0].split("&&"):
            if part.strip().startswith("wsss ") and "--images" not in part:
                words += ROUTE_CHOICES.findall(part)
    return words


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_every_block_that_shows_the_advised_route_shows_the_same_route():
    """Issue 79: the README trained the CAM baseline with RCA's level, the tested block used a CRF band that the
    next paragraph said lost; one route is advised, and every block that shows it is that route."""
    page = (REPO / "docs/own-photos.md").read_text()
    which = page.split("## Which route", 1)[1]
    blocks = {
        "README.md": bash_blocks((REPO / "README.md").read_text())[1],
        "own-photos.md, Which route": bash_blocks(which)[0],
        "own-photos.md, the cross-validated advice": bash_blocks(which.split("**So, on photos like", 1)[1])[0],
        "own-photos.md, Step by step (tested)": route_block(),
    }
    routes = {name: route_of(b) for name, b in blocks.items()}
    expected = ["configs/rca/real_cpu.yaml", "--refine par", "--levels 0.5/0.5", "configs/deeplab/real_cpu.yaml",
                "data.true_masks=auto", "--crf"]  # fmt: skip
    assert routes == {name: expected for name in blocks}
