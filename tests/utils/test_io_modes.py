"""Files the toolkit writes get the mode a plain open() gives under the umask (not mkstemp's 0600)."""

import os
import stat

import numpy as np
import pytest

from wsss.core.files import atomic_write
from wsss.utils.io import save_label_png, save_npy


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        with atomic_write(tmp_path / "atomic.txt", "w") as f:
            f.write("x")
        save_label_png(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
        save_npy(tmp_path / "a.npy", np.zeros(3))
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~umask
    for name in ("atomic.txt", "m.png", "a.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
