"""The own-images route of the manual (docs/own-photos.md), run as written (the block between the own-images
markers) from a directory laid out like a fresh clone, with a tiny training schedule appended to `wsss train`."""

from __future__ import annotations

import re
import shlex
import subprocess

from conftest import ASSETS, REPO
from wsss.cli import main

TINY = [
    "train.epochs=null",
    "train.max_iters=2",
    "train.eval_iters=2",
    "train.ckpt_iters=2",
    "train.log_iters=1",
    "data.crop_size=128",
    "infer.cam_scales=[1.0]",
]


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
    assert len(list((clone / "runs/myphotos_seg/predictions_crf/train").glob("*.png"))) == 5


#: What makes a block the advised route: the presets trained (a path or a shipped name), the refiner and its
#: levels, the masks in the stage, the prediction's CRF.
ROUTE_CHOICES = re.compile(
    r"(?:configs/|wsss::)\w+/real_cpu\.yaml|--refine \w+|--levels \S+|data\.true_masks=\w+|--crf"
)


def route_of(block: str) -> list[str]:
    """The route's choices in a block's ``wsss`` commands, in order (not those of new photos, ``--images``); a
    preset by its shipped name as by its path."""
    words = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in line.split("#", 1)[0].split("&&"):
            if part.strip().startswith("wsss ") and "--images" not in part:
                words += [w.replace("wsss::", "configs/") for w in ROUTE_CHOICES.findall(part)]
    return words


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_the_steps_by_hand_are_the_route_that_wsss_route_runs(tmp_path, capsys):
    """One route is advised, and every block that shows it is that route. The README and the
    guide show it as the one command, `wsss route`; the tested Step by step block is the route that command runs
    (its plan, as commands) on photos like ccp-dev's, a handful of classes of tens of photos each."""
    from wsss.data import generate_synthetic

    front = {
        "README.md": bash_blocks((REPO / "README.md").read_text())[1],
        "own-photos.md": bash_blocks((REPO / "docs/own-photos.md").read_text())[0],
    }
    assert all(block.lstrip().startswith("wsss route ") for block in front.values()), front
    # a guide, whose figures live in BENCHMARKS.md: 150 lines, then 160 with the masks' way out to labelling tools
    assert len((REPO / "docs/own-photos.md").read_text().splitlines()) <= 160
    data = tmp_path / "data"
    generate_synthetic(data, n_train=60, n_val=4, size=32, seed=1, verbose=False)  # 6 classes, 10+ photos each
    capsys.readouterr()
    assert main(["route", str(data), "--out", str(tmp_path / "route"), "--plan"]) == 0
    plan = "\n".join(line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("["))
    # the CRF'd masks of the train and the val photos: every photo gets its mask
    expected = [
        "configs/rca/real_cpu.yaml",
        "--refine par",
        "--levels 0.5/0.5",
        "configs/deeplab/real_cpu.yaml",
        "data.true_masks=auto",
        "--crf",
        "--crf",
    ]
    assert route_of(plan) == expected
    assert route_of(route_block()) == expected
