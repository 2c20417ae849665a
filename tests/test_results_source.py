"""Each results table is written once, as data beside the measurement that made it, and every page shows that data:

- the synthetic set's comparison of methods: ``experiments/results/compare.json`` (``experiments/compare.py``).
  BENCHMARKS.md's block is what ``compare.py --render-only`` writes from it; the docs pages show it through
  ``<!-- results: synthetic [METHOD ...] -->``, which the site build renders (dev/mkdocs_hooks.py);
- the real-photo route's cross-validated choices: the folds' JSONs ``experiments/results/cv_*.json``;
  BENCHMARKS.md's block is what ``experiments/cv_table.py`` prints from them;
- the real-photo route with some masks: the seeds' JSONs ``experiments/results/masks_ccp_s*.json``; BENCHMARKS.md's
  block is what ``experiments/masks_table.py`` prints from them.

A hand copy of a row on a page (outside the dated history) fails here: it would drift when the data is measured
again."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from conftest import REPO
from dev.mkdocs_hooks import on_page_markdown, synthetic_results
from experiments import compare, cv_table, masks_table

RESULTS = REPO / "experiments" / "results"
HISTORY = REPO / "docs" / "benchmarks" / "history"
#: The pages that show the synthetic results, and the methods each shows.
SYNTHETIC_PAGES = {
    "docs/results.md": (),
    "docs/methods/cam.md": ("cam",),
    "docs/methods/seco.md": ("cam", "seco"),
    "docs/methods/rca.md": ("cam", "rca"),
    "docs/methods/sccam.md": ("cam", "sccam"),
}
#: The JSONs the cross-validation table is printed from, as BENCHMARKS.md's command names them.
CV_DECIDE = ("experiments/results/cv_ccp-dev_e12.json", "experiments/results/cv_ccp-dev_e24.json")
CV_VETO = ("experiments/results/cv_coco128-dev_e12.json", "experiments/results/cv_coco128-dev_e24.json")
MASKS = tuple(f"experiments/results/masks_ccp_s{seed}.json" for seed in range(3))


def _block(text: str, begin: str, end: str) -> str:
    """The block from the line ``begin`` to the line ``end`` (the preamble names the markers in backticks)."""
    found = re.findall(rf"^{re.escape(begin)}$.*?^{re.escape(end)}$", text, re.M | re.S)
    assert len(found) == 1, f"one {begin} ... {end} pair"
    return found[0]


def test_benchmarks_synthetic_block_is_compare_json() -> None:
    meta, results = compare.load_results(RESULTS)
    block = compare.markdown_block(meta, results, "experiments/results/compare.png")
    bench = (REPO / "BENCHMARKS.md").read_text()
    assert _block(bench, compare.BEGIN, compare.END) == block  # `compare.py --render-only` writes it again


def _command(bench: str, script: str) -> str:
    """The command line of ``script`` in BENCHMARKS.md's code block, its continuation lines joined."""
    return " ".join(bench[bench.index(f".venv/bin/python {script}") :].split("```")[0].replace("\\\n", " ").split())


def test_benchmarks_route_block_is_what_cv_table_prints() -> None:
    bench = (REPO / "BENCHMARKS.md").read_text()
    assert _command(bench, "experiments/cv_table.py") == " ".join(
        [".venv/bin/python experiments/cv_table.py", "--decide", *CV_DECIDE, "--veto", *CV_VETO]
    )  # the command beside the table names these JSONs
    with contextlib.redirect_stdout(io.StringIO()):
        printed = cv_table.main(
            ["--decide", *(str(REPO / p) for p in CV_DECIDE), "--veto", *(str(REPO / p) for p in CV_VETO)]
        )
    assert _block(bench, "<!-- cv:begin -->", "<!-- cv:end -->") == f"<!-- cv:begin -->\n{printed}\n<!-- cv:end -->"


def test_benchmarks_masks_block_is_what_masks_table_prints() -> None:
    bench = (REPO / "BENCHMARKS.md").read_text()
    assert _command(bench, "experiments/masks_table.py") == " ".join(
        [".venv/bin/python experiments/masks_table.py", *MASKS]
    )
    with contextlib.redirect_stdout(io.StringIO()):
        printed = masks_table.main([str(REPO / p) for p in MASKS])
    assert _block(bench, "<!-- masks:begin -->", "<!-- masks:end -->") == (
        f"<!-- masks:begin -->\n{printed}\n<!-- masks:end -->"
    )


@pytest.mark.parametrize("page", sorted(SYNTHETIC_PAGES))
def test_a_synthetic_results_page_shows_compare_json(page: str) -> None:
    methods = SYNTHETIC_PAGES[page]
    text = (REPO / page).read_text()
    marker = "<!-- results: synthetic" + "".join(f" {m}" for m in methods) + " -->"
    assert marker in text
    _, results = compare.load_results(RESULTS)
    shown = on_page_markdown(text, None, None, None)
    rows = [r for r in results if not methods or r["method"] in methods]
    assert len(rows) == len(methods or results)
    for r in rows:  # each row as the data holds it, rounded as the table rounds
        assert re.search(
            rf"^\| {re.escape(compare.LABELS[r['method']])} \| {r['cam']['miou']:.1f} \| "
            rf"{r['mask']['miou']:.1f} \| {r['seg']['miou']:.1f} \|",
            shown,
            re.M,
        )
    assert marker not in shown


def test_no_page_holds_a_hand_copy_of_a_synthetic_row() -> None:
    _, results = compare.load_results(RESULTS)
    cells = [f"| {r['cam']['miou']:.1f} | {r['mask']['miou']:.1f} | {r['seg']['miou']:.1f} |" for r in results]
    pages = [p for p in sorted((REPO / "docs").rglob("*.md")) if HISTORY not in p.parents]
    pages += [REPO / "README.md"]
    copies = [f"{p.relative_to(REPO)}: {c}" for p in pages for c in cells if c in p.read_text()]
    assert not copies, "show compare.json through <!-- results: synthetic -->, not a copy:\n" + "\n".join(copies)


def test_a_page_naming_a_method_without_a_row_fails_the_build() -> None:
    with pytest.raises(ValueError, match="no row of"):
        synthetic_results(["nosuchmethod"])


def test_the_summary_table_takes_its_rows_from_the_results(tmp_path: Path) -> None:
    row = {
        "method": "cam",
        "status": "ok",
        "cam": {"miou": 1.04},
        "mask": {"miou": 2.06},
        "seg": {"miou": 3.0, "mean_far": 4.0, "far_rails": 5.0},
        "levels": {"bkg_thre": 0.3, "high_thre": 0.6, "low_thre": 0.1},
    }
    other = dict(row, method="seco")
    table = compare.summary_table([row, other], ("cam",))
    assert table.splitlines()[2:] == ["| CAM baseline | 1.0 | 2.1 | 3.0 | 4.0 % / 5.0 % | 0.3 / 0.6 / 0.1 |"]
    assert len(compare.summary_table([row, other]).splitlines()) == 4  # no method named: every row
