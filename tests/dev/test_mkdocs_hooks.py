"""The generated pages of the documentation site (dev/mkdocs_hooks.py): they cannot drift from their sources
because they are made from them; these tests check that nothing of the sources is left out."""

from __future__ import annotations

import re

from conftest import REPO
from dev.mkdocs_hooks import TOPICS, benchmark_pages, benchmark_sections, cli_reference, preset_table, topic_of

HISTORY = REPO / "docs" / "benchmarks" / "history"
MAX_LINES = 400  # BENCHMARKS.md holds the current figures, its history is in dated pages


def test_every_benchmarks_topic_is_a_page_and_all_of_it_lands_on_it():
    text = (REPO / "BENCHMARKS.md").read_text()
    _, sections = benchmark_sections(text)
    pages = benchmark_pages(text)
    assert sections and "index.md" in pages and "other.md" not in pages  # every topic has its page
    assert [topic_of(heading) for heading, _ in sections] == [page for page, _ in TOPICS]  # in the file's order
    for heading, body in sections:
        name = f"{topic_of(heading)}.md"
        page = pages[name]
        assert page.startswith(f"# {heading}\n") and f"]({name})" in pages["index.md"]
        assert f"](history/{name})" in pages["index.md"] and f"](history/{name})" in page  # its history, linked
        lines = [
            line.replace("](experiments/results/", "](").replace("](docs/benchmarks/", "](")
            for line in body.splitlines()
        ]
        assert all(line in page for line in lines if not re.match(r"#{3,6} ", line)), heading  # nothing left out
    unknown = benchmark_pages("# Benchmarks\n\n## A section no topic names\nfigures\n")
    assert "other.md" in unknown and "A section no topic names" in unknown["other.md"]  # never dropped


def test_benchmarks_holds_the_current_figures_and_each_topic_has_a_dated_history_page():
    text = (REPO / "BENCHMARKS.md").read_text()
    assert len(text.splitlines()) <= MAX_LINES
    _, sections = benchmark_sections(text)
    for heading, body in sections:
        subheadings = re.findall(r"^#{3,6} (.+)$", re.sub(r"^```.*?^```", "", body, flags=re.M | re.S), re.M)
        assert subheadings == ["Current figures"], heading  # no dated entry here: they are in the history
        history = (HISTORY / f"{topic_of(heading)}.md").read_text()
        assert history.startswith(f"# {heading}: history\n"), heading
        entries = re.findall(r"^## (.+)$", re.sub(r"^```.*?^```", "", history, flags=re.M | re.S), re.M)
        assert entries, heading
        for entry in entries:
            assert re.search(r"\b20\d\d-\d\d-\d\d\b", entry), f"{heading}: an entry without its date: {entry}"
    assert sorted(p.stem for p in HISTORY.glob("*.md")) == sorted(page for page, _ in TOPICS)


def test_the_site_nav_names_the_benchmark_pages_in_the_files_order():
    text = (REPO / "mkdocs.yml").read_text()
    nav = re.findall(r"^\s+- (?:[^:\n]+: )?benchmarks/([\w-]+\.md)$", text, re.M)
    pages = benchmark_pages((REPO / "BENCHMARKS.md").read_text())
    assert nav == ["index.md"] + [f"{page}.md" for page, _ in TOPICS] and set(nav) == set(pages)
    history = re.findall(r"^\s+- (?:[^:\n]+: )?benchmarks/history/([\w-]+\.md)$", text, re.M)
    assert history == [f"{page}.md" for page, _ in TOPICS]


def test_a_topics_headings_move_up_one_level_on_its_page_but_not_inside_code():
    pages = benchmark_pages(
        "# B\n\n## SeCo on the CPU\n\n### Current figures\n\n```bash\n### a comment\n```\n\n"
        "#### A part\n\n[its history](docs/benchmarks/history/seco.md)\n"
    )
    assert pages["seco.md"].split("\n")[0] == "# SeCo on the CPU"
    assert "\n## Current figures\n" in pages["seco.md"] and "\n### a comment\n" in pages["seco.md"]
    assert "\n### A part\n" in pages["seco.md"] and "[its history](history/seco.md)" in pages["seco.md"]
    assert "[SeCo on the CPU](seco.md), and its dated entries: [history](history/seco.md)" in pages["index.md"]


def test_the_cli_reference_holds_every_command_of_the_parser():
    from wsss.cli import build_parser

    page = cli_reference()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert f"`wsss {name}`" in page, name
        assert parser.format_usage().split()[2] in page  # its usage line, as --help prints it


def test_the_preset_table_lists_every_preset_of_the_folder():
    for folder in ("seco", "clip_es", "deeplab"):
        table = preset_table(folder, training_free=folder == "clip_es")
        files = sorted(p.name for p in (REPO / "configs" / folder).glob("*.yaml"))
        assert re.findall(r"^\| `([\w.]+\.yaml)`", table, re.M) == files
