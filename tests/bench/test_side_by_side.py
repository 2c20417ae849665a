"""bench/side_by_side.py: what the official-code benchmarks time and how they pick a round."""

import sys

import pytest

import bench.side_by_side as side


def test_photo_copies_keeps_the_photos_first_and_names_each_copy_once():
    pairs = side.photo_copies(["a", "b"], 3)
    assert pairs == [("a", "a"), ("b", "b"), ("a_c1", "a"), ("b_c1", "b"), ("a_c2", "a"), ("b_c2", "b")]
    assert len({id for id, _ in pairs}) == len(pairs)
    assert side.photo_copies(["a"], 1) == [("a", "a")]


def test_fastest_compares_cpu_time_on_the_cpu_and_wall_time_on_a_gpu():
    slow_wall, slow_cpu = side.Timing(9.0, 1.0, None), side.Timing(2.0, 5.0, None)
    assert side.fastest(slow_wall, slow_cpu, gpu=False) is slow_wall  # least CPU
    assert side.fastest(slow_wall, slow_cpu, gpu=True) is slow_cpu  # least wall
    assert side.fastest(slow_cpu, None, gpu=False) is slow_cpu  # the first round


def test_timed_counts_the_child_cpu_time_and_stops_on_a_failure(tmp_path):
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    t = side.timed([sys.executable, "-c", busy], tmp_path, {})
    assert t.cpu >= 0.3 and t.wall >= t.cpu * 0.5 and t.gpu_gib is None
    with pytest.raises(SystemExit, match="no such photo"):
        side.timed([sys.executable, "-c", "import sys; sys.exit('no such photo')"], tmp_path, {})
