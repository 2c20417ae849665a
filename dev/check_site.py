"""Load every page of the built documentation site in headless Chromium and check it rendered.

    make docs && .venv/bin/python dev/check_site.py              # site/ (mkdocs build's output)
    .venv/bin/python dev/check_site.py --site site --chromium /usr/bin/chromium

The site is served on a loopback port by a server that records every request. For each page, Chromium loads
it (``--dump-dom``, console messages on its stderr); the page fails when:

- the browser's console reports an error (a script exception, a failed resource);
- the page, or an ``<img>`` of its rendered DOM, was not served with status 200;
- an image served is not a decodable picture.

Prints one line per page and a summary; exit 0 when every page passes, 1 otherwise. Chromium is found as in
``dev/screenshot_report.py`` (``--install`` there unpacks one without root).
"""

from __future__ import annotations

import functools
import io
import re
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

from PIL import Image

from wsss.cli_common import script_parser

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshot_report import chromium_env, find_chromium  # noqa: E402 (dev/ is not a package)

REPO = Path(__file__).resolve().parents[1]
# Flags of a headless run on a machine without a network (dev/screenshot_report.py, the env notes).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
    "--dump-dom",
]
CONSOLE_ERROR = re.compile(r"CONSOLE.*(Uncaught|Error|error|Failed)|:ERROR:CONSOLE")
IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]+)\"")


class RecordingHandler(SimpleHTTPRequestHandler):
    """Serves the site and records (path, status) of every request."""

    log: list[tuple[str, int]]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log.append((unquote(urlparse(self.path).path), int(code) if str(code).isdigit() else 0))


def serve(site: Path) -> tuple[ThreadingHTTPServer, list[tuple[str, int]]]:
    log: list[tuple[str, int]] = []
    handler = functools.partial(type("H", (RecordingHandler,), {"log": log}), directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, log


def pages(site: Path) -> list[str]:
    """Every page's URL path: the folders holding an index.html (mkdocs' directory URLs), 404 left out."""
    return sorted(
        "/" if p.parent == site else f"/{p.parent.relative_to(site).as_posix()}/" for p in site.rglob("index.html")
    )


def check_page(exe: Path, base: str, path: str, site: Path, log: list[tuple[str, int]]) -> list[str]:
    """The problems of one page (empty when it passes)."""
    start = len(log)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [str(exe), *FLAGS, f"--user-data-dir={profile}", base + path],
            capture_output=True,
            text=True,
            timeout=120,
            env=chromium_env(exe),
        )
    problems = [f"console: {line.strip()[:200]}" for line in proc.stderr.splitlines() if CONSOLE_ERROR.search(line)]
    if proc.returncode != 0 or "<body" not in proc.stdout:
        problems.append(f"chromium exit {proc.returncode}, no page body")
    served = dict(log[start:])
    if served.get(path) != 200:
        problems.append(f"page served with status {served.get(path)}")
    for src in IMG_SRC.findall(proc.stdout):
        url = urlparse(urljoin(base + path, src))
        if url.scheme == "data":
            continue
        img = unquote(url.path)
        if served.get(img) != 200:
            problems.append(f"image {img}: status {served.get(img)}")
            continue
        try:
            with Image.open(io.BytesIO((site / img.lstrip("/")).read_bytes())) as im:
                im.load()
        except OSError as e:
            problems.append(f"image {img}: not a picture ({e})")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = script_parser(__doc__)
    ap.add_argument("--site", type=Path, default=REPO / "site", help="the built site (mkdocs build's site_dir)")
    ap.add_chromium()
    args = ap.parse_args(argv)
    exe = find_chromium(args.chromium)
    if exe is None:
        print("error: no chromium found: dev/screenshot_report.py --install, or --chromium PATH", file=sys.stderr)
        return 1
    if not (args.site / "index.html").is_file():
        print(f"error: {args.site}: no built site (make docs)", file=sys.stderr)
        return 1
    server, log = serve(args.site)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    failed = 0
    try:
        for path in pages(args.site):
            problems = check_page(exe, base, path, args.site, log)
            failed += bool(problems)
            print(f"{'FAIL' if problems else 'ok  '} {path}" + "".join(f"\n     {p}" for p in problems), flush=True)
    finally:
        server.shutdown()
    print(
        f"{len(pages(args.site)) - failed} of {len(pages(args.site))} pages rendered with no console error, "
        f"every image served and decodable"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
