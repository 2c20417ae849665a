"""Screenshot an HTML report with headless Chromium and check that the picture is a rendered page.

    .venv/bin/python dev/screenshot_report.py                         # runs/demo/report/index.html
    .venv/bin/python dev/screenshot_report.py --report RUN/report/index.html --out shot.png
    .venv/bin/python dev/screenshot_report.py --install               # fetch Chromium first (no root)

The check: the PNG has the window's size, is not one flat colour, and has enough distinct colours that
the report's charts and image grids were drawn (a page of text alone has a few dozen). Exit 0 when it
passes, 1 otherwise, printing the size and the colour counts.

Chromium is looked up in this order: ``--chromium``, ``$WSSS_CHROMIUM``, ``chromium`` /
``chromium-browser`` / ``google-chrome`` / ``headless_shell`` on PATH, then the unpacked Debian
package under ``~/.cache/wsss-chromium`` (``--install`` puts it there). ``--install`` needs only
``apt-get`` and ``dpkg`` (no root): ``apt-get download chromium chromium-common``, ``dpkg -x`` into the
cache, then, until ``ldd`` finds every shared library, the Debian package of each missing library
(``libfoo.so.N`` -> ``libfooN`` / ``libfoo-N``...). Where the system's apt lists are not readable it
runs ``apt-get update`` with its lists and cache in the same folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.cli_common import script_parser

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("WSSS_CHROMIUM_CACHE", Path.home() / ".cache" / "wsss-chromium"))
NAMES = ("chromium", "chromium-browser", "google-chrome", "headless_shell")


def _lib_dirs(root: Path) -> list[Path]:
    return [
        root / "usr/lib/chromium",
        root / "usr/lib/x86_64-linux-gnu",
        root / "usr/lib/x86_64-linux-gnu/pulseaudio",
        root / "usr/lib/aarch64-linux-gnu",
        root / "usr/lib/aarch64-linux-gnu/pulseaudio",
    ]


def cached_binary(cache: Path = CACHE) -> Path | None:
    exe = cache / "root/usr/lib/chromium/chromium"
    return exe if exe.is_file() else None


def find_chromium(explicit: str | None = None) -> Path | None:
    """The Chromium executable to use, or None."""
    for cand in (explicit, os.environ.get("WSSS_CHROMIUM")):
        if cand:
            return Path(cand)
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return Path(path)
    return cached_binary()


def chromium_env(exe: Path) -> dict[str, str]:
    """The environment to start ``exe``: for the unpacked package, its library folders on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    root = exe.parents[3] if exe.parent.name == "chromium" and exe.parents[2].name == "usr" else None
    if root is not None and (root / "usr/lib/chromium").is_dir():
        dirs = [str(d) for d in _lib_dirs(root) if d.is_dir()]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(dirs + [env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    return env


# ---------------------------------------------------------------------------------------------
# Installation without root


def _apt_options(cache: Path) -> list[str]:
    if os.access("/var/lib/apt/lists", os.R_OK) and any(Path("/var/lib/apt/lists").glob("*Packages*")):
        return []
    lists, archives = cache / "apt/lists", cache / "apt/cache"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (archives / "archives/partial").mkdir(parents=True, exist_ok=True)
    opts = [f"-o=Dir::State::Lists={lists}", f"-o=Dir::Cache={archives}", "-o=Debug::NoLocking=1"]
    if not any(lists.glob("*Packages*")):
        subprocess.run(["apt-get", *opts, "update"], check=True)
    return opts


def _download(packages: list[str], cache: Path, opts: list[str]) -> None:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", *opts, "download", *packages], check=True, cwd=debs)
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg", "-x", str(deb), str(cache / "root")], check=True)


def _missing_libs(root: Path) -> set[str]:
    env = chromium_env(root / "usr/lib/chromium/chromium")
    files = [root / "usr/lib/chromium/chromium"]
    for d in _lib_dirs(root)[1:]:
        files += [f for f in d.glob("*.so*") if f.is_file()] if d.is_dir() else []
    missing: set[str] = set()
    for f in files:
        out = subprocess.run(["ldd", str(f)], capture_output=True, text=True, env=env).stdout
        missing |= set(re.findall(r"^\s*(\S+) => not found", out, flags=re.M))
    return missing


def _package_candidates(soname: str) -> list[str]:
    """Debian names for the package of ``libfoo.so.N``: libfooN, libfoo-N, with the usual suffixes."""
    m = re.match(r"(lib[^.]+?)(?:-[\d.]+)?\.so(?:\.(\d+))?", soname)
    if not m:
        return []
    base, ver = m.group(1).lower(), m.group(2) or ""
    if not ver:  # e.g. libpulsecommon-16.1.so ships with libpulse0
        return [re.sub(r"common$", "", base) + "0"]
    stems = [f"{base}-{ver}" if base[-1].isdigit() else f"{base}{ver}"]
    return [s + suffix for s in stems for suffix in ("", "a", "t64", "-0")]


def install(cache: Path = CACHE) -> Path:
    """Unpack Debian's chromium and the shared libraries it lacks under ``cache``; returns the executable."""
    opts = _apt_options(cache)
    if cached_binary(cache) is None:
        _download(["chromium", "chromium-common"], cache, opts)
    for _ in range(6):  # libraries of libraries: a few rounds
        missing = _missing_libs(cache / "root")
        if not missing:
            break
        packages = []
        for soname in sorted(missing):
            for cand in _package_candidates(soname):
                known = subprocess.run(["apt-cache", *opts, "show", cand], capture_output=True).returncode == 0
                if known:
                    packages.append(cand)
                    break
            else:
                print(f"no Debian package found for {soname}", file=sys.stderr)
        if not packages:
            break
        _download(sorted(set(packages)), cache, opts)
    missing = _missing_libs(cache / "root")
    if missing:
        raise SystemExit(f"chromium unpacked in {cache} but still lacks {sorted(missing)}")
    exe = cached_binary(cache)
    assert exe is not None
    print(f"chromium ready: {exe}")
    return exe


# ---------------------------------------------------------------------------------------------
# Screenshot and check


def screenshot(
    report: Path,
    out: Path,
    *,
    width: int = 1280,
    height: int = 2400,
    chromium: Path | None = None,
    timeout: float = 120.0,
) -> Path:
    """Render ``report`` in a ``width`` x ``height`` window and write the PNG to ``out``."""
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium found: install it (dev/screenshot_report.py --install) or pass --chromium")
    if not report.is_file():
        raise FileNotFoundError(f"{report}: report not found (run `wsss report RUN` first)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            str(exe),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=10000",
            f"--screenshot={out.resolve()}",
            report.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=chromium_env(exe))
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return out


def check_screenshot(path: Path, width: int, height: int, min_colors: int = 500) -> dict[str, object]:
    """Size, flatness and colour count of a screenshot; ``ok`` when it looks like a rendered report."""
    with Image.open(path) as im:
        size = im.size
        rgb = np.asarray(im.convert("RGB"))
    flat = rgb.reshape(-1, 3)
    colors = len(np.unique(flat[:, 0].astype(np.int64) << 16 | flat[:, 1].astype(np.int64) << 8 | flat[:, 2]))
    background = np.all(flat == np.median(flat, axis=0), axis=1).mean()
    problems = []
    if size != (width, height):
        problems.append(f"size {size[0]}x{size[1]}, expected {width}x{height}")
    if colors < 2:
        problems.append("a single colour (blank page)")
    elif colors < min_colors:
        problems.append(f"only {colors} colours: the charts and image grids were not drawn")
    if background > 0.995:
        problems.append(f"{100 * background:.1f} % of the pixels are the background colour")
    return {
        "ok": not problems,
        "size": size,
        "colors": colors,
        "background_share": float(background),
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    p = script_parser(__doc__)
    p.add_argument("--report", default=str(REPO / "runs/demo/report/index.html"))
    p.add_out(default=str(REPO / "runs/report_screenshot.png"))
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2400)
    p.add_argument("--min-colors", type=int, default=500)
    p.add_chromium()
    p.add_argument("--install", action="store_true", help=f"unpack Debian's chromium into {CACHE} first")
    a = p.parse_args(argv)
    exe = install() if a.install else (Path(a.chromium) if a.chromium else find_chromium())
    out = screenshot(Path(a.report), Path(a.out), width=a.width, height=a.height, chromium=exe)
    res = check_screenshot(out, a.width, a.height, a.min_colors)
    print(
        f"{out}: {res['size'][0]}x{res['size'][1]}, {res['colors']} colours, "
        f"{100 * res['background_share']:.1f} % background"
    )
    for problem in res["problems"]:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
