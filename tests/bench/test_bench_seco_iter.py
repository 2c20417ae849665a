"""bench/bench_seco_iter.py --pieces: every named piece of glue is found, timed and put back."""

import bench.bench_seco_iter as bench


def test_time_pieces_finds_every_piece_and_restores_them():
    import wsss.methods.seco as seco_module

    before = {n: getattr(seco_module, n) for n in bench.GLUE_FUNCTIONS}
    before |= {n: getattr(seco_module.SeCo, n) for n in bench.GLUE_METHODS}
    pieces = bench.time_pieces(crop=128, batch=1, iters=1, warmup=0, threads=1)
    assert set(pieces) == {"iteration", *bench.GLUE_FUNCTIONS, *bench.GLUE_METHODS}
    assert all(0 < v < pieces["iteration"] for n, v in pieces.items() if n != "iteration")
    after = {n: getattr(seco_module, n) for n in bench.GLUE_FUNCTIONS}
    after |= {n: getattr(seco_module.SeCo, n) for n in bench.GLUE_METHODS}
    assert after == before
