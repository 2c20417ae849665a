"""Access to the golden fixtures recorded from the official SeCo code.

The fixtures live outside the repository, in ``<repo>/../shared/spec/golden`` (CI clones the repo
with ``shared/`` beside it). A missing folder or file makes the calling test **fail** with a clear
message: parity tests must never be skipped silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "shared" / "spec" / "golden"


def load_golden(name: str) -> dict[str, np.ndarray]:
    """Load ``<GOLDEN_DIR>/<name>.npz`` (the ``.npz`` suffix is optional) as a dict of arrays."""
    fname = name if name.endswith(".npz") else f"{name}.npz"
    path = GOLDEN_DIR / fname
    if not GOLDEN_DIR.is_dir():
        pytest.fail(
            f"golden fixtures folder not found: {GOLDEN_DIR} (expected shared/spec/golden beside the "
            "repository checkout)",
            pytrace=False,
        )
    if not path.is_file():
        pytest.fail(f"golden fixture not found: {path}", pytrace=False)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
