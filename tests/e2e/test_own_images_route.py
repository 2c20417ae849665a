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
    assert "best background" in captured.out  # sweep-bkg ran on the masked photos
    assert "mobilenet_v2-b0353104.pth = /" in captured.err  # train said which weights file it loaded
    report = clone / "runs/myphotos/report/index.html"
    assert report.is_file()
    page = report.read_text()  # the train split's seeds and pseudo labels too, not the one val photo alone
    assert 'id="split-val"' in page and 'id="split-train"' in page
    assert 'data-split="train" data-output="pseudo" data-metric="miou"' in page
    assert len(list((clone / "runs/myphotos/pseudo/train").glob("*.png"))) == 5
