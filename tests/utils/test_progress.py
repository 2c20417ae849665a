"""Progress bars written to a file or a pipe (wsss.utils.progress): plain lines now and then, no redraws."""

import io
import time

from wsss.runs.shard import run_ids
from wsss.utils import progress
from wsss.utils.progress import progress_bar


def test_a_job_logged_to_a_file_writes_lines_not_redraws(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.05)

    def slow(ids):
        for i in ids:
            time.sleep(0.004)
            yield i, None

    run_ids([str(i) for i in range(60)], slow, desc="predict val", progress=True)
    err = capsys.readouterr().err  # pytest's capture is no terminal, as a redirected log is not
    assert "\r" not in err
    bars = [line for line in err.splitlines() if line.startswith("predict val:") and "%|" in line]
    assert 2 <= len(bars) < 20 and "60/60" in bars[-1]


def test_a_terminal_keeps_its_live_bar():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    for _ in progress_bar(range(3), file=out, desc="t", mininterval=0):
        pass
    assert "\r" in out.getvalue()


def test_a_training_logged_to_a_file_writes_a_few_bar_lines_not_one_a_log_step(synth_root, tmp_path, capsys):
    from conftest import REPO, tiny_overrides
    from wsss.cli import main

    over = tiny_overrides(synth_root, tmp_path / "run", **{"train.log_iters": 1, "train.eval_iters": 100})
    assert main(["train", str(REPO / "configs/cam/synthetic_cpu.yaml"), *over, "--skip-check"]) == 0
    err = capsys.readouterr().err
    bars = [line for line in err.splitlines() if line.startswith("train:") and "%|" in line]
    assert "\r" not in err and 1 <= len(bars) <= 3 and "6/6" in bars[-1]
