"""Access to the golden fixtures recorded from the official codes (SeCo, ToCo, RCA, SC-CAM, PSA, CLIP-ES, ExCEL).

The fixtures live in the repository, in ``tests/golden/`` beside this file, so that a bare clone runs every
parity test; ``tests/golden/README.md`` says how each file was recorded. A missing folder or file makes the
calling test **fail** with a clear message: parity tests must never be skipped silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

#: the recordings, next to this module (a folder beside a module of the same name: ``import golden`` still
#: finds this file, as a folder without ``__init__.py`` only counts where no module of that name is found)
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def load_golden(name: str) -> dict[str, np.ndarray]:
    """Load ``<GOLDEN_DIR>/<name>.npz`` (the ``.npz`` suffix is optional) as a dict of arrays."""
    fname = name if name.endswith(".npz") else f"{name}.npz"
    path = GOLDEN_DIR / fname
    if not GOLDEN_DIR.is_dir():
        pytest.fail(
            f"golden fixtures folder not found: {GOLDEN_DIR} (tests/golden/ of the repository checkout)",
            pytrace=False,
        )
    if not path.is_file():
        pytest.fail(f"golden fixture not found: {path}", pytrace=False)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def assert_close_to_max(ours: object, ref: object, rel: float, what: str = "") -> None:
    """``max |ours - ref| <= rel * max |ref|``, compared in float64 (``ours`` may be a tensor of any dtype).

    The tolerance of a parity check on a whole tensor is relative to its largest entry: float rounding
    scales with the magnitudes that were summed, not with each entry, so a per-entry ``rtol`` is
    meaningless for the entries near 0 and hides nothing a max-relative bound would catch. Each caller
    states ``rel`` beside the measured spread it comes from."""
    a = ours.detach().cpu().double().numpy() if torch.is_tensor(ours) else np.asarray(ours, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    scale = float(np.abs(b).max()) if b.size else 0.0
    err = float(np.abs(a - b).max()) if b.size else 0.0
    assert err <= rel * scale, f"{what}: max |ours - ref| = {err:.3e} > {rel:.1e} * max |ref| ({scale:.3e})"


def separated(scores: np.ndarray, tol: float, axis: int = 0) -> np.ndarray:
    """Where an argmax over ``axis`` of ``scores`` cannot flip when every score moves by at most ``tol``:
    the gap between the largest and the second largest score is over ``2 * tol``. A label computed from
    scores known only to ``tol`` (a float32 run) is compared exactly there; a near-tie elsewhere may flip
    (tests/golden/README.md#refine_cams_with_bkg_v2: a float32 port may flip a near-tie pixel)."""
    top = np.sort(np.asarray(scores, dtype=np.float64), axis=axis)
    return (np.take(top, -1, axis=axis) - np.take(top, -2, axis=axis)) > 2 * tol
