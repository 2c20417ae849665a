"""Write the repository's copy of the official recordings (``tests/golden/``) with only the keys the tests read.

    .venv/bin/python dev/shrink_golden.py /path/to/recordings              # measure, then write tests/golden/
    .venv/bin/python dev/shrink_golden.py /path/to/recordings --keys k.json  # reuse a measured key list

The recordings of the official codes hold every intermediate their harness could catch; the tests compare a
part of them. A file is rewritten with the keys the tests read, each array byte-identical to the source (same
dtype, shape and bytes; checked after writing), as an ``np.savez_compressed`` archive: a faithful subset of the
official recording. What is read is measured, not listed by hand: the tests that read recordings are run with
``tests/golden.py``'s ``load_golden`` pointed at the source folder and wrapped in a mapping that records every key
asked for (``g[k]``, ``g.get(k)``, ``k in g``). A re-recording is shrunk the same way, after its tests pass.

Files read whole outside ``load_golden`` (weight files that ``load_clip`` or a bench / dev script opens by path)
keep every key (``WHOLE``). The ``.txt`` spread reports are copied as they are (``TEXT``). Prints each file's size
before and after; ``--report`` writes the kept and dropped keys per file as JSON (for tests/golden/README.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from wsss.cli_common import script_parser

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "golden"
#: read as whole weight files by path (``load_clip`` in tests/methods/clip_es/test_clip_es.py, bench/bench_clip_es.py,
#: dev/method_pictures.py): every key is a weight the model needs
WHOLE = ("clip_es_state_dict.npz", "excel_weights.npz")
#: read by a script, not by a test (dev/method_pictures.py: the ExCEL bank)
EXTRA = {"excel_text.npz": ("attr_bank",)}
#: the float32-vs-float64 spread reports: excel's is parsed by tests/excel_golden.py (its tolerances), CLIP-ES's
#: is the source the tolerances of tests/methods/clip_es/test_clip_es_golden.py cite
TEXT = ("excel_f32_vs_f64.txt", "clip_es_f32_vs_f64.txt")
ENV_SOURCE, ENV_KEYS = "WSSS_GOLDEN_SOURCE", "WSSS_GOLDEN_KEYS"


# -- the pytest plugin of the measuring run (``-p dev.shrink_golden``) ----------------------------------------------

_READ: dict[str, set[str]] = {}


class _Recording(Mapping):
    """A recording's arrays, noting each key the test asks for (a value read or a presence test: both decide
    what the test does)."""

    def __init__(self, name: str, arrays: dict[str, np.ndarray]):
        self._name, self._arrays = name, arrays
        _READ.setdefault(name, set())

    def __getitem__(self, key: str) -> np.ndarray:
        _READ[self._name].add(key)
        return self._arrays[key]

    def __contains__(self, key: object) -> bool:
        _READ[self._name].add(str(key))
        return key in self._arrays

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


def pytest_configure(config: object) -> None:
    """Point ``golden`` at the source folder and record the keys its loader hands out (runs before collection,
    so the test modules' ``from golden import ...`` get the patched names)."""
    if ENV_SOURCE not in os.environ:
        return
    import golden

    golden.GOLDEN_DIR = Path(os.environ[ENV_SOURCE])
    load = golden.load_golden

    def recording_load(name: str) -> Mapping:
        return _Recording(name if name.endswith(".npz") else f"{name}.npz", load(name))

    golden.load_golden = recording_load


def pytest_unconfigure(config: object) -> None:
    if ENV_KEYS in os.environ:
        Path(os.environ[ENV_KEYS]).write_text(json.dumps({k: sorted(v) for k, v in sorted(_READ.items())}, indent=1))


# -- measuring and writing ------------------------------------------------------------------------------------------


def reading_tests() -> list[str]:
    """The test files that read recordings (through ``load_golden``, ``excel_golden`` or ``GOLDEN_DIR``)."""
    pattern = re.compile(r"\bload_golden\b|\bexcel_golden\b|\bGOLDEN_DIR\b")
    files = (REPO / "tests").rglob("test_*.py")
    return sorted(str(p.relative_to(REPO)) for p in files if pattern.search(p.read_text()))


def measure(source: Path) -> dict[str, list[str]]:
    """Run the tests that read recordings on ``source``; returns the keys read per file. Fails if a test fails:
    a recording the tests do not pass is not shrunk."""
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.json"
        env = {**os.environ, ENV_SOURCE: str(source.resolve()), ENV_KEYS: str(keys), "OMP_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "pytest", *reading_tests(), "-p", "dev.shrink_golden", "-p", "no:randomly", "-q"]
        code = subprocess.call(cmd, cwd=REPO, env=env)  # python -m puts the cwd (the repo) on sys.path: dev imports
        if code != 0:
            sys.exit(f"the tests failed on {source} (exit {code}): nothing written")
        return json.loads(keys.read_text())


def shrink(source: Path, out: Path, read: dict[str, list[str]]) -> dict[str, dict[str, list[str]]]:
    """Write each read ``.npz`` of ``source`` to ``out`` with its read keys (byte-identical arrays), copy the
    ``TEXT`` reports; prints the sizes. Returns the kept and dropped keys per file."""
    out.mkdir(parents=True, exist_ok=True)
    report, before, after = {}, 0, 0
    names = sorted(set(read) | set(WHOLE) | set(EXTRA))
    print(f"{'file':32s} {'keys kept':>10s} {'before':>10s} {'after':>10s}")
    for name in names:
        src, dst = source / name, out / name
        with np.load(src) as z:
            wanted = set(z.files) if name in WHOLE else set(read.get(name, ())) | set(EXTRA.get(name, ()))
            kept = [k for k in z.files if k in wanted]  # the recording's order
            arrays = {k: z[k] for k in kept}
            report[name] = {"kept": kept, "dropped": [k for k in z.files if k not in wanted]}
        np.savez_compressed(dst, **arrays)
        with np.load(dst) as z:  # values byte-identical: a subset, not a re-encoding
            assert z.files == kept, name
            for k in kept:
                a, b = z[k], arrays[k]
                assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), f"{name}:{k}"
        size0, size1 = src.stat().st_size, dst.stat().st_size
        before, after = before + size0, after + size1
        print(
            f"{name:32s} {len(kept):>4d}/{len(report[name]['kept']) + len(report[name]['dropped']):<5d} "
            f"{size0 / 1e6:>9.2f}M {size1 / 1e6:>9.2f}M"
        )
    for name in TEXT:
        shutil.copyfile(source / name, out / name)
        size = (out / name).stat().st_size
        before, after = before + size, after + size
        print(f"{name:32s} {'(copied)':>10s} {size / 1e6:>9.2f}M {size / 1e6:>9.2f}M")
    unread = sorted(p.name for p in source.glob("*.npz") if p.name not in report)
    print(f"{'total':32s} {'':>10s} {before / 1e6:>9.2f}M {after / 1e6:>9.2f}M")
    if unread:
        print("not read by any test, not copied:", ", ".join(unread))
    return report


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("source", type=Path, help="the folder of the recordings (.npz, .txt)")
    ap.add_out(default=OUT, type=Path)
    ap.add_argument("--keys", type=Path, help="a key list of an earlier measuring run (JSON), instead of measuring")
    ap.add_argument("--report", type=Path, help="write the kept and dropped keys per file here (JSON)")
    a = ap.parse_args()
    if a.source.resolve() == a.out.resolve():
        sys.exit("the source must not be the output folder (the tests would measure the shrunk files)")
    read = json.loads(a.keys.read_text()) if a.keys else measure(a.source)
    report = shrink(a.source, a.out, read)
    if a.report:
        a.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
