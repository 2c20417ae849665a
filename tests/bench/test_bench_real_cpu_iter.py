"""bench/bench_real_cpu_iter.py: the trainer's iteration of the real-photo CAM preset and its floor run on the
six real VOC photos, each phase timed under its name."""

import bench.bench_real_cpu_iter as bench
from conftest import VOC_REAL_MINI


def test_iteration_and_floor_are_timed_by_phase(one_thread):
    over = ["data.train_split=val", "data.crop_size=64", "train.batch_size=2"]
    iteration, floor, facts = bench.make_steps("configs/cam/real_cpu.yaml", str(VOC_REAL_MINI), over)
    assert facts["batch"] == 2 and facts["crop"] == 64 and facts["terms"] == ["aux", "cls"]
    clock = bench.PhaseClock()
    for _ in range(2):
        with clock("iteration"):
            iteration(clock)
        floor(clock)
    phases = {"data (main thread)", "forward + losses", "backward", "optimiser", "iteration"}
    assert set(clock.parts) == phases | {"floor: backbone forward + backward"}
    assert all(len(v) == 2 and min(v) > 0 for v in clock.parts.values())
    parts = sum(clock.parts[k][0] for k in phases - {"iteration"})
    assert parts <= clock.parts["iteration"][0]  # the phases are inside the iteration
