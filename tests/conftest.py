"""Shared fixtures: a tiny synthetic dataset and a tiny training config, so end-to-end tests run in
seconds on 2 CPU cores."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch


def _threads_per_worker() -> int:
    """At most two intra-op threads (the machines this suite is budgeted for have two cores), and no more than
    this worker's share of the cores when pytest-xdist runs the suite in several processes (``make test``), so
    that the workers do not oversubscribe the cores; fewer when the environment asks for fewer
    (OMP_NUM_THREADS=1): the suite passes with any."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, torch.get_num_threads(), cores // max(workers, 1)))


torch.set_num_threads(_threads_per_worker())

# tests/interop/ needs the labelling tools' libraries, which this environment does not have: `make test-interop` runs
# it in .venv-interop (pytest tests/interop); tests/label_studio/ a Label Studio server (make test-label-studio, a job
# of its own); a run of the whole suite leaves both out
collect_ignore = ["interop", "label_studio"]

REPO = Path(__file__).resolve().parents[1]
# The real photos the tests read live in the repository (tests/assets/<set>/SOURCE.md: origin, licence, how
# drawn), so that a bare clone passes its tests.
ASSETS = REPO / "tests" / "assets"
VOC_REAL_MINI = ASSETS / "voc-real-mini"
VOC_REAL_MINI_IDS = [  # its six photos (val.txt)
    "2011_000003",
    "2011_000006",
    "2011_000025",
    "voc2012val_sample_1",
    "voc2012val_sample_23",
    "voc2012val_sample_114",
]


def _order_seed(config: pytest.Config) -> int | None:
    """pytest-randomly's seed when it shuffles this session (the dev extras install it), else None."""
    seed = getattr(config.option, "randomly_seed", None)
    reorganize = getattr(config.option, "randomly_reorganize", False)
    return seed if isinstance(seed, int) and reorganize else None


def _say_order_seed(config: pytest.Config) -> None:
    seed, tr = _order_seed(config), config.pluginmanager.get_plugin("terminalreporter")
    if seed is not None and tr is not None:  # shown under -q too (pytest-randomly's own header line is not)
        tr.write_line(
            f"tests in a random order, seed {seed}: replay the order with "
            f"`make test PYTEST_ARGS=--randomly-seed={seed}`; `PYTEST_ARGS='-p no:randomly'` keeps file order"
        )


def pytest_sessionstart(session: pytest.Session) -> None:
    _say_order_seed(session.config)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    _say_order_seed(config)


def tiny_overrides(root: Path, run_dir: Path, **extra: object) -> list[str]:
    """Dotted overrides that shrink configs/cam/synthetic_cpu.yaml to a seconds-long run."""
    base = {
        "data.root": str(root),
        "run.dir": str(run_dir),
        "data.crop_size": 64,
        "data.num_workers": 0,
        "model.backbone_kwargs": "{patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2, img_size: 64}",
        "train.batch_size": 4,
        "train.max_iters": 6,
        "train.warmup_iters": 2,
        "train.log_iters": 2,
        "train.eval_iters": 3,
        "train.ckpt_iters": 3,
        "cam.scales": "[1.0, 0.5]",
        "loss.start_iters": "{seg: 2}",
        "infer.scales": "[1.0]",
        "infer.cam_scales": "[1.0]",
        "infer.crf_workers": 0,
    }
    base.update({k: v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wsss.data import generate_synthetic

    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, n_train=24, n_val=8, size=64, seed=3)
    return root


REPORT_OUTPUTS = {"cam_labels": False, "pseudo": True, "predictions": False}  # folder -> scored as pseudo labels


@pytest.fixture(scope="session")
def reported(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny run with CAM seeds, pseudo labels and predictions on val, `wsss eval` JSONs, and its report
    (tests/report/test_html.py reads it, tests/dev/test_screenshot_report.py photographs it)."""
    import json

    from wsss.cli import main

    run = tmp_path_factory.mktemp("report") / "run"
    assert (
        main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *tiny_overrides(synth_root, run), "--quiet"]) == 0
    )
    assert main(["cam", str(run), "--split", "val", "--quiet"]) == 0
    assert main(["pseudo", str(run), "--split", "val", "--quiet"]) == 0
    assert main(["predict", str(run), "--split", "val", "--quiet"]) == 0
    evals = {}
    for folder, pseudo in REPORT_OUTPUTS.items():
        out = run / f"eval_{folder}.json"
        args = ["eval", str(run / folder / "val"), "--data-root", str(synth_root), "--split", "val", "--json", str(out)]
        assert main(args + (["--pseudo"] if pseudo else [])) == 0
        evals[folder] = json.loads(out.read_text())
    assert main(["report", str(run), "--max-images", "5"]) == 0
    return run, evals


@pytest.fixture
def reported_copy(reported: tuple[Path, dict], tmp_path: Path) -> Path:
    """A copy of the ``reported`` run (without its report) in the test's own folder: a test that writes outputs into a
    run writes them there, and the shared run stays as its other readers expect it."""
    import shutil

    copy = tmp_path / "reported_run"
    shutil.copytree(reported[0], copy, ignore=shutil.ignore_patterns("report"))
    return copy


@pytest.fixture
def wsss_cli(capsys):
    """``wsss_cli("cam", RUN, ...)``: the command line in this process; its stdout and stderr, which name the command
    when its exit status is not ``code`` (0 unless given)."""
    from wsss.cli import main

    def run(*argv: str, code: int = 0) -> str:
        got = main(list(argv))
        out = capsys.readouterr()
        assert got == code, f"wsss {' '.join(argv)}\n{out.err[-3000:]}"
        return out.out + out.err

    return run


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, restored after: on a shared, oversubscribed CPU two spinning
    threads run small forwards 3-10x slower (BENCHMARKS.md, make demo budget)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own cache folder (``XDG_CACHE_HOME``): a route a test runs records its step rates there
    (``wsss.pipelines.estimates``), never in the user's ``~/.cache``, nor for the next test's plan."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Every test starts from the state the one before it found: torch's intra-op thread count, the
    default dtype, the torch / NumPy / Python RNG states, the working directory and the environment are
    put back after it. (A trainer used to leave ``run.threads`` set, and a different thread count splits
    float32 reductions differently: a test's result then depended on the tests before it.)"""
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    cwd, env = os.getcwd(), dict(os.environ)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.set_rng_state(rng[0])
    np.random.set_state(rng[1])
    random.setstate(rng[2])
    os.chdir(cwd)
    if dict(os.environ) != env:
        os.environ.clear()
        os.environ.update(env)
