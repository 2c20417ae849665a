"""Every document the repository cites is in the repository, and every cited anchor is a heading there.

The reasons behind a threshold or a quirk are cited in comments as ``docs/<page>.md#<anchor>`` (or
``tests/golden/README.md#<anchor>`` for what a recording holds): a citation of a page that is gone, of a heading
that was renamed, or of a document that never was part of the repository (the spec the project started from)
leaves a reader with nothing to follow. Pages made at build time (the CLI reference, the benchmark topics) are
made here by the same hook functions the site build calls, so their headings count too."""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = [
    "src",
    "tests",
    "bench",
    "experiments",
    "dev",
    "docs",
    "configs",
    "Makefile",
    "README.md",
    "BENCHMARKS.md",
    "mkdocs.yml",
    ".ci",
    "pyproject.toml",
]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".txt", ".json", ".toml", ""}
#: Documents outside the repository that the code once cited (the spec it started from, the folder beside a
#: checkout): a stranger's clone has none of them. (This file is left out of the scan.)
OUTSIDE = re.compile(r"\.\./shared|parent / \"shared\"|\b(methods|interface|performance|CLIP_ES|EXCEL|WECLIP)\.md\b")
#: A repository-relative citation: ``docs/methods/seco.md#par``, ``tests/golden/README.md#ptc``.
CITATION = re.compile(r"(?<![\w./-])((?:docs|tests/golden)/[\w./-]+?\.md)(#[\w-]+)?")
#: A relative Markdown link inside a docs page: ``[PAR](seco.md#par)``, ``(../datasets.md#coco)``.
MD_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([\w./-]+?\.md)(#[\w-]+)?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$", re.M)
EXPLICIT_ID = re.compile(r"\{\s*#([\w-]+)[^}]*\}\s*$")
#: Anchors made by the attr_list extension on any element, and HTML ids.
OTHER_IDS = re.compile(r"\{\s*#([\w-]+)[^}]*\}|\bid=\"([\w-]+)\"")


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = REPO / name
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        files += [p for p in found if p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return sorted(files)


def slugify(text: str) -> str:
    """Python-Markdown's ``toc`` slug of a heading's text, after its inline markup is rendered away."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors_of(markdown: str) -> set[str]:
    """The ids a page's headings get (explicit ``{#id}`` first; repeated slugs get ``_1``, ``_2``, ...), plus
    ids set on other elements."""
    seen: dict[str, int] = {}
    ids = set()
    body = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)  # no headings inside code blocks
    for _, text in HEADING.findall(body):
        explicit = EXPLICIT_ID.search(text)
        if explicit:
            ids.add(explicit.group(1))
            continue
        slug = slugify(text)
        ids.add(slug if slug not in seen else f"{slug}_{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    ids.update(a or b for a, b in OTHER_IDS.findall(body))
    return ids


@cache
def generated_pages() -> dict[str, str]:
    """The pages ``dev/mkdocs_hooks.py`` adds at build time, as the build makes them."""
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", REPO / "dev" / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    pages = {"docs/cli.md": hooks.cli_reference()}
    for name, text in hooks.benchmark_pages((REPO / "BENCHMARKS.md").read_text()).items():
        pages[f"docs/benchmarks/{name}"] = text
    return pages


@cache
def page_text(relative: str) -> str | None:
    path = REPO / relative
    if path.is_file():
        return path.read_text()
    return generated_pages().get(relative)


def citations() -> list[tuple[str, int, str, str]]:
    """(file, line, cited page relative to the repository, anchor or '') for every citation."""
    found = []
    for path in scanned_files():
        rel = path.relative_to(REPO).as_posix()
        if path == Path(__file__):
            continue  # its examples
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for page, anchor in CITATION.findall(line):
                found.append((rel, number, page.rstrip("."), anchor[1:]))
            if rel.startswith("docs/"):
                for page, anchor in MD_LINK.findall(line):
                    target = (path.parent / page).resolve()
                    if target.is_relative_to(REPO):
                        found.append((rel, number, target.relative_to(REPO).as_posix(), anchor[1:]))
    return found


def outside_citations(path: Path) -> list[str]:
    """The lines of ``path`` that cite a document outside the repository. BENCHMARKS.md and its history pages
    (docs/benchmarks/history/) keep the commands as they were run (some read the dev sets from the folder beside the
    checkout, where they were); their citations of the spec count all the same."""
    hits = []
    measured = path.name == "BENCHMARKS.md" or path.parent == REPO / "docs" / "benchmarks" / "history"
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if measured:
            line = line.replace("../" + "shared/data/", "")
        if OUTSIDE.search(line):
            hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    return hits


def test_no_file_cites_a_document_outside_the_repository():
    hits = [hit for p in scanned_files() if p != Path(__file__) for hit in outside_citations(p)]
    assert not hits, "documents outside the repository cited:\n" + "\n".join(hits)


def test_every_cited_page_and_anchor_exists():
    found = citations()
    assert len(found) > 50, "the citation scan found almost nothing: its pattern is broken"
    missing = []
    for where, line, page, anchor in found:
        text = page_text(page)
        if text is None:
            missing.append(f"{where}:{line}: {page} is not in the repository")
        elif anchor and anchor not in anchors_of(text):
            missing.append(f"{where}:{line}: {page} has no heading with the anchor #{anchor}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    ("markdown", "ids"),
    [
        ("## PAR: pixel-adaptive refinement {#par}\n", {"par"}),
        ("### The `cam2mask` step\n", {"the-cam2mask-step"}),
        ("## Notes\n## Notes\n", {"notes", "notes_1"}),
        ("```\n## not a heading\n```\n## Real\n", {"real"}),
    ],
)
def test_anchors_follow_the_site_builds_rules(markdown: str, ids: set[str]):
    assert anchors_of(markdown) == ids
