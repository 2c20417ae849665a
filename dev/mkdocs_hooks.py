"""MkDocs hooks of the documentation site (``mkdocs.yml: hooks``): the pages that are generated, so that
they cannot drift from their source.

- ``cli.md``: every command's ``--help``, from ``wsss.cli.build_parser()`` (the parser the console
  script runs).
- ``benchmarks/<topic>.md``: one page per topic of ``BENCHMARKS.md`` (where every figure is recorded with its
  command): its ``## `` sections are the topics (their current figures; their dated history is a page of the
  docs, ``docs/benchmarks/history/<topic>.md``), each named to its page by :data:`TOPICS`;
  ``benchmarks/index.md`` is its preamble and the list of topics. A section that no topic names goes to
  ``benchmarks/other.md``, so it is never left out of the site (the nav of ``mkdocs.yml`` must then name that
  page, or the strict build fails).
- ``<!-- presets: DIR -->`` in a page: a table of the presets of ``configs/DIR/``, each resolved through its
  ``_base_`` chain by the same loader as ``wsss train`` (``wsss.core.config.load_config``).
- ``<!-- results: synthetic [METHOD ...] -->`` in a page: the synthetic set's results of those methods (every
  method when none is named), from ``experiments/results/compare.json``, the file the comparison wrote
  (``experiments/compare.py``): the one source of those figures, which BENCHMARKS.md's block also shows.
- The images that those sections link to (``experiments/results/compare.png``) are copied beside them.

The page list is also what ``make docs`` checks in strict mode: a broken link to a page fails the build.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (page, heading pattern): the ``## `` section of BENCHMARKS.md whose heading matches is the topic of the page
# ``benchmarks/<page>.md``, in the file's order; mkdocs.yml's Benchmarks nav names the same pages.
TOPICS: list[tuple[str, str]] = [
    ("real-photos", r"^Real photos on a CPU"),
    ("setup", r"^The two commands"),
    ("inference", r"^Inference speed"),
    ("gpu", r"^On a GPU"),
    ("seco", r"^SeCo"),
    ("clip", r"^CLIP"),
    ("synthetic", r"^The synthetic"),
]
OTHER = ("other", "Other measurements")
HEADING = re.compile(r"^## ", re.M)
FENCE = re.compile(r"^(```|~~~)")


def benchmark_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """BENCHMARKS.md split at its ``## `` headings: the preamble, and (heading, body) per topic; the ``###``
    and deeper headings (the current figures) stay with their topic."""
    parts = HEADING.split(text)
    sections = []
    for part in parts[1:]:
        heading, _, body = part.partition("\n")
        sections.append((heading.strip(), body))
    return parts[0], sections


def topic_of(heading: str) -> str:
    for page, pattern in TOPICS:
        if re.search(pattern, heading):
            return page
    return OTHER[0]


def promote_headings(body: str) -> str:
    """A topic's body as its own page, whose title is the topic: ``###`` becomes ``##``, ``####`` ``###`` and so
    on (not inside code blocks)."""
    out, fenced = [], False
    for line in body.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and re.match(r"^#{3,6} ", line):
            line = line[1:]
        out.append(line)
    return "\n".join(out)


def benchmark_pages(text: str) -> dict[str, str]:
    """Markdown of each topic page and of the index, by file name under ``benchmarks/``."""
    preamble, sections = benchmark_sections(text)
    pages: dict[str, str] = {}
    index = [preamble.rstrip(), "", "One page per topic (its current figures), and one of its history:", ""]
    others = []
    for heading, body in sections:
        body = body.replace("](experiments/results/", "](")  # the images are copied beside the pages
        body = body.replace("](docs/benchmarks/", "](")  # the history pages, docs/benchmarks/history/<topic>.md
        page = topic_of(heading)
        if page == OTHER[0]:
            others.append(f"## {heading}\n{body}")
            continue
        if f"{page}.md" in pages:
            raise ValueError(f"BENCHMARKS.md: two topics for benchmarks/{page}.md: {heading!r}")
        pages[f"{page}.md"] = f"# {heading}\n{promote_headings(body)}"
        index.append(f"- [{heading}]({page}.md), and its dated entries: [history](history/{page}.md)")
    if others:
        pages[f"{OTHER[0]}.md"] = f"# {OTHER[1]}\n\n" + "\n".join(others)
        index.append(f"- [{OTHER[1]}]({OTHER[0]}.md): {len(others)} sections under no topic")
    pages["index.md"] = "\n".join(index) + "\n"
    return pages


def cli_reference() -> str:
    """Every command's help text, as ``wsss COMMAND --help`` prints it, in the parser's order."""
    os.environ.setdefault("COLUMNS", "100")  # argparse wraps at the terminal's width: one width for the site
    from wsss.cli import build_parser

    out = [
        "# Command-line reference",
        "",
        "Generated from the parser of the `wsss` console script when the site is built (`wsss COMMAND --help`"
        " prints the same text).",
        "",
    ]

    def walk(parser: argparse.ArgumentParser, name: str, depth: int) -> None:
        out.extend([f"{'#' * depth} `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""])
        for action in parser._actions:  # argparse keeps its subparsers only here
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}", min(depth + 1, 4))

    walk(build_parser(), "wsss", 2)
    return "\n".join(out)


PRESET_MARKER = re.compile(r"<!-- presets: ([\w/]+)( training-free)? -->")


def _preset_summary(path: Path) -> str:
    """The first sentence of the preset's leading comment: what the preset is for."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    end = re.search(r"[.:;](\s|$)", text)
    return (text[: end.start()] if end else text).replace("|", "\\|")


def preset_table(folder: str, training_free: bool = False) -> str:
    """Markdown table of ``configs/<folder>/*.yaml``: its base, the resolved backbone, crop, batch, length and
    optimiser (a training-free method's presets: the backbone only), and the first sentence of its comment."""
    from wsss.core.config import BASE_KEY, load_config, read_preset, yaml_load

    head = [f"`configs/{folder}/`", "`_base_`", "settings", "what it is"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in sorted((REPO / "configs" / folder).glob("*.yaml")):
        read_preset(path)  # the same reader as the contract test: a broken preset fails the build
        cfg = load_config(path)
        bases = yaml_load(path.read_text()).get(BASE_KEY, [])
        bases = [bases] if isinstance(bases, str) else bases
        settings = f"`{cfg.model.backbone}`"
        if not training_free:
            length = f"{cfg.train.epochs:g} epochs" if cfg.train.epochs else f"{cfg.train.max_iters} iterations"
            settings += (
                f", crop {cfg.data.crop_size}, batch {cfg.train.batch_size}, {length}, "
                f"{cfg.train.optimizer} lr {cfg.train.lr:g}"
            )
        base = ", ".join(f"`{b.removeprefix('../_base_/').removesuffix('.yaml')}`" for b in bases)  # datasets/voc
        cells = [f"`{path.name}`", base, settings, _preset_summary(path)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


RESULTS_MARKER = re.compile(r"<!-- results: synthetic((?: \w+)*) -->")


def synthetic_results(methods: list[str]) -> str:
    """The synthetic set's results table of ``methods`` (all when empty), from ``experiments/results/compare.json``."""
    if str(REPO) not in sys.path:  # `mkdocs` run as a console script: the repository's packages importable
        sys.path.insert(0, str(REPO))
    from experiments.compare import load_results, summary_table

    _, results = load_results(REPO / "experiments/results")
    unknown = [m for m in methods if m not in {r["method"] for r in results}]
    if unknown:  # a page naming a method the comparison has no row of: the strict build fails here
        raise ValueError(f"<!-- results: synthetic -->: no row of {unknown} in experiments/results/compare.json")
    return summary_table(results, methods)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (mkdocs' hook signature)
    markdown = RESULTS_MARKER.sub(lambda m: synthetic_results(m.group(1).split()), markdown)
    return PRESET_MARKER.sub(lambda m: preset_table(m.group(1), bool(m.group(2))), markdown)


def on_files(files, config):  # noqa: ANN001, ANN201 (mkdocs' hook signature; mkdocs only needed to build)
    from mkdocs.structure.files import File

    files.append(File.generated(config, "cli.md", content=cli_reference()))
    for name, content in benchmark_pages((REPO / "BENCHMARKS.md").read_text()).items():
        files.append(File.generated(config, f"benchmarks/{name}", content=content))
    for image in sorted((REPO / "experiments/results").glob("*.png")):
        files.append(File.generated(config, f"benchmarks/{image.name}", abs_src_path=str(image)))
    return files
