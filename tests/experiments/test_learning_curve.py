"""experiments/learning_curve.py: the runs of ``real_route.py --train-photos K --ceiling`` grouped by K, the route's
val mIoU with the CRF, the ceiling's and the share over the seeds."""

from __future__ import annotations

import json

import pytest

from experiments import learning_curve


def _run(k: int, seed: int, route: float, ceiling: float | None, **extra: object) -> dict:
    """A ``--fold 0/5 --train-photos K --ceiling`` run's JSON, as real_route.py writes it (the figures the table
    reads)."""
    res = {
        "data_root": "/data/ccp-dev",
        "fold": {"fold": 0, "folds": 5, "val_ids": ["a", "f"]},
        "subset": {"train_photos": k, "seed": seed, "of": 200, "train_ids": [], "view": "v"},
        "seg_rounds": [{"round": 1, "val": route - 1, "val_crf": route}],
        **extra,
    }
    if ceiling is not None:
        res["ceiling"] = {"val": ceiling - 1, "val_crf": ceiling}
    return res


def _write(tmp_path, runs: dict[str, dict]) -> list[str]:
    for name, res in runs.items():
        (tmp_path / name).write_text(json.dumps(res))
    return [str(tmp_path / name) for name in runs]


def test_the_curve_groups_the_runs_by_k_and_averages_over_the_seeds(tmp_path, capsys):
    runs = {
        "k100_s0.json": _run(100, 0, 18.0, 24.0, abstain={"val_crf": 19.0}),
        "k100_s1.json": _run(100, 1, 20.0, 25.0),  # no --abstain: that line over the one run that has it
        "k50_s0.json": _run(50, 0, 15.0, 20.0),
        "k50_s1.json": _run(50, 1, 16.0, 20.0),
        "k50_s2.json": _run(50, 2, 17.0, 20.0),
    }
    paths = _write(tmp_path, runs)
    text = learning_curve.main([str(tmp_path / "k*_s*.json")])  # a glob in quotes, as the shell leaves it
    assert text == capsys.readouterr().out.rstrip("\n") and learning_curve.main(paths) == text
    lines = text.splitlines()[2:]
    # K ascending, the route first; the share run by run: 75 / 80 -> 77.5, sd 3.54
    assert lines == [
        "| 50 | the route | 0, 1, 2 | 16.00 (sd 1.00, n 3) | 20.00 (sd 0.00, n 3) | 80.00 % (sd 5.00, n 3) |",
        "| 100 | the route | 0, 1 | 19.00 (sd 1.41, n 2) | 24.50 (sd 0.71, n 2) | 77.50 % (sd 3.54, n 2) |",
        "| 100 | labels that abstain (`--abstain`) | 0, 1 | 19.00 (sd -, n 1) | 24.50 (sd 0.71, n 2) | "
        "79.17 % (sd -, n 1) |",
    ]
    # a second round (--seg-rounds 2) is a line of its own; a run without the ceiling has no share
    two = _run(50, 3, 14.0, None)
    two["seg_rounds"].append({"round": 2, "val": 15.0, "val_crf": 16.0})
    rows = learning_curve.rows([*runs.values(), two])
    first, second = (r for r in rows if r["k"] == 50)
    assert second["name"] == "round 2 (`--seg-rounds`)" and second["route"]["values"] == [None, None, None, 16.0]
    assert second["share"] is None and first["route"]["n"] == 4 and first["share"]["n"] == 3
    assert first["route"]["mean"] == 15.5 and first["seeds"] == [0, 1, 2, 3]


def test_runs_that_do_not_make_one_curve_are_refused_naming_the_file(tmp_path):
    good = _run(50, 0, 15.0, 20.0)
    other_val = {**_run(100, 0, 15.0, 20.0), "fold": {"fold": 1, "folds": 5, "val_ids": ["b", "g"]}}
    no_subset = {k: v for k, v in _run(50, 1, 15.0, 20.0).items() if k != "subset"}
    for name, res, said in [
        ("val.json", other_val, "scored on other val photos than"),
        ("again.json", good, "50 train photos of seed 0 are in"),
        ("whole.json", no_subset, "not the JSON of one experiments/real_route.py"),
    ]:
        paths = _write(tmp_path, {"good.json": good, name: res})
        with pytest.raises(SystemExit) as refused:
            learning_curve.main(paths)
        assert str(refused.value).startswith(f"{tmp_path / name}: {said}") and "\n" not in str(refused.value)
    # a --folds run's JSON: its folds' val photos differ, refused as not one run
    folds = {"folds": [_run(50, 0, 15.0, 20.0)], "summary": {}}
    with pytest.raises(SystemExit, match="f.json: not the JSON of one experiments/real_route.py --train-photos K run"):
        learning_curve.main(_write(tmp_path, {"f.json": folds}))
