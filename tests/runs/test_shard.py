"""runs/shard.py in one process: the shares, the workers' command line, a job's summary and failures."""

import pytest

from wsss.core.errors import DataError
from wsss.runs.shard import _without_workers, run_ids, share


@pytest.mark.parametrize("n, world", [(0, 2), (1, 2), (7, 2), (10, 3), (5, 8)])
def test_shares_cover_the_ids_once_round_robin(n, world):
    ids = [f"id{i}" for i in range(n)]
    shares = [share(ids, r, world) for r in range(world)]
    assert sorted(i for s in shares for i in s) == sorted(ids)  # each id exactly once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares[1 % world][:1] == ids[1 % world : 1 % world + 1]  # the official Subset(range(rank, N, world))
    with pytest.raises(ValueError):
        share(ids, world, world)


def test_a_worker_runs_the_command_without_its_workers_option():
    argv = ["cam", "runs/x", "--workers", "2", "--split", "val", "--workers=3", "--quiet"]
    assert _without_workers(argv) == ["cam", "runs/x", "--split", "val", "--quiet"]


def test_failed_ids_are_summarised_after_the_others_are_done(capsys):
    done = []

    def process(ids):
        for i in ids:
            done.append(i)
            yield i, ("unreadable image" if i == "b" else None)

    with pytest.raises(DataError, match=r"job: 1 ids failed \(first b: unreadable image\)"):
        run_ids(["a", "b", "c"], process, desc="job", skipped=2, progress=False)
    assert done == ["a", "b", "c"]
    assert "job: 2 written, 2 skipped, 1 failed in" in capsys.readouterr().err
    summary = run_ids(["a"], lambda ids: ((i, None) for i in ids), desc="job", progress=False)
    assert (summary.written, summary.failed, summary.processes) == (1, [], 1)


def test_a_job_runs_with_the_runs_threads_and_puts_them_back():
    """`wsss cam`, `pseudo` and `predict` ran on torch's default threads (every core) whatever the run's
    `run.threads` said; only `wsss train` applied it. The job's loop runs with them, and the count it found is put
    back after, on success and on failure alike."""
    import torch

    seen = []

    def process(ids):
        for i in ids:
            seen.append(torch.get_num_threads())
            yield i, None

    found = torch.get_num_threads()
    run_ids(["a", "b"], process, desc="job", progress=False, threads=1)
    assert seen == [1, 1] and torch.get_num_threads() == found
    run_ids(["a"], process, desc="job", progress=False)  # 0: as found
    assert seen[-1] == found

    def broken(ids):
        yield from process(ids)
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError):
        run_ids(["a"], broken, desc="job", progress=False, threads=1)
    assert torch.get_num_threads() == found


def test_the_per_photo_commands_pass_the_runs_threads(reported, monkeypatch, tmp_path):
    """cam and predict hand the run's run.threads to their job (a copy of the reported run: its outputs stay)."""
    import shutil

    import wsss.runs.jobs as jobs
    from wsss.runs.run import load_run

    given = []
    real = jobs.run_ids
    monkeypatch.setattr(jobs, "run_ids", lambda *a, **k: (given.append(k.get("threads")), real(*a, **k))[1])
    run_dir, _ = reported
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(run_dir / "config.yaml", copy / "config.yaml")
    shutil.copytree(run_dir / "checkpoints", copy / "checkpoints")
    run = load_run(copy, overrides=["run.threads=1"])
    jobs.run_predict(run, "val", progress=False)
    jobs.run_cam(run, "val", progress=False)
    assert given == [1, 1]
