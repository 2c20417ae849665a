"""`wsss export masks --format labelstudio` through a real Label Studio server (dev/label_studio_roundtrip.py): the
tasks imported with their predictions, submitted, exported through its API and read back by ``--masks`` equal the
route's masks. Run by `make test-label-studio` (.ci/label-studio), which builds the server's venv; `make test` leaves
this folder out (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import REPO
from dev.label_studio_roundtrip import round_trip


def test_the_masks_come_back_equal_through_label_studio(tmp_path):
    venv = Path(os.environ.get("WSSS_LABEL_STUDIO_VENV", REPO / ".venv-label-studio")).resolve()
    assert (venv / "bin" / "label-studio").is_file(), f"{venv}: no label-studio there (make test-label-studio)"
    times = round_trip(venv, tmp_path)
    assert set(times) == {"start the server", "project, import, annotate, export", "all"}
    print("Label Studio round trip: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
