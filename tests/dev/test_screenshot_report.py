"""dev/screenshot_report.py: the screenshot check (blank, wrong size, text only), the Debian package names
of missing libraries, and a headless-browser screenshot of a report (when chromium is installed)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dev import screenshot_report


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def test_screenshot_check_rejects_blank_wrong_size_and_text_only(tmp_path):
    blank = _png(tmp_path / "blank.png", np.full((60, 80, 3), 255))
    res = screenshot_report.check_screenshot(blank, 80, 60)
    assert not res["ok"] and any("single colour" in p for p in res["problems"])
    rng = np.random.default_rng(0)
    busy = _png(tmp_path / "busy.png", rng.integers(0, 256, (60, 80, 3)))
    assert screenshot_report.check_screenshot(busy, 80, 60)["ok"]
    res = screenshot_report.check_screenshot(busy, 100, 60)
    assert not res["ok"] and "expected 100x60" in res["problems"][0]
    text_only = np.full((60, 80, 3), 255)
    text_only[10:20, 5:60] = rng.integers(0, 2, (10, 55, 1)) * 255  # black-and-white "text"
    res = screenshot_report.check_screenshot(_png(tmp_path / "text.png", text_only), 80, 60)
    assert not res["ok"] and "colours" in res["problems"][0]


def test_debian_package_names_for_missing_libraries():
    cands = screenshot_report._package_candidates
    assert cands("libopus.so.0")[0] == "libopus0"
    assert cands("libopenjp2.so.7")[0] == "libopenjp2-7"  # a name ending in a digit takes a hyphen
    assert cands("libFLAC.so.12")[0] == "libflac12"
    assert "libvorbis0a" in cands("libvorbis.so.0")
    assert cands("libpulsecommon-16.1.so") == ["libpulse0"]


CHROMIUM = screenshot_report.find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (dev/screenshot_report.py --install)")
def test_headless_screenshot_of_the_report(reported, tmp_path):
    run, _ = reported
    out = tmp_path / "shot.png"
    argv = ["--report", str(run / "report/index.html"), "--out", str(out), "--width", "1000", "--height", "1400"]
    assert screenshot_report.main(argv) == 0
    res = screenshot_report.check_screenshot(out, 1000, 1400)
    assert res["ok"] and res["colors"] > 500, res
