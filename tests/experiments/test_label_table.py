"""experiments/label_table.py: the rank correlation it reports, the draw-next verdict fold by fold, and the tables
read from JSONs as label_folds.py and label_runs.py write them; experiments/label_runs.py's choice of photos."""

from __future__ import annotations

import json

import pytest

from experiments.label_runs import drawn_photos, stage_words
from experiments.label_table import main, ranks, spearman, verdicts


def test_ranks_give_ties_their_mean_and_spearman_reads_them():
    assert ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None and spearman([1, 2], [1, 2]) is None
    # one pair swapped of 4: 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def _run(
    val: float, found: float, lost: tuple[str, ...] = (), common: float | None = None, drawn_all: tuple[str, ...] = ()
) -> dict:
    """A run as label_runs.py scores it: ``common`` the agreement on the photos no run drew (``found`` unless given),
    ``drawn_all`` the classes whose every photo it drew."""
    on_common = {"photos": 3, "labelled_found": found if common is None else common, "lost": [], "uncounted": []}
    undrawn = {"photos": 4, "labelled_found": found, "lost": list(lost), "uncounted": list(drawn_all)}
    return {"val_miou": val, "labelled_found": found, "lost": list(lost), "common": on_common, "undrawn": undrawn}


def test_the_draw_next_verdict_counts_the_folds_it_beat_random_on():
    runs = {
        ("s", 0): {"runs": {"rule10": _run(12, 0.8), "random10": _run(10, 0.8)}},
        ("s", 1): {"runs": {"rule10": _run(9, 0.8), "random10": _run(11, 0.8), "rule20": _run(1, 1)}},
    }
    assert verdicts(runs) == [
        "K=10: the draw-next list beat random on 1 of 2 folds measured",
        "K=20: the draw-next list beat random on 0 of 0 folds measured",
    ]


def test_the_tables_read_the_experiments_jsons(tmp_path, capsys):
    labels = {"photos_missing_a_label": 5, "masks_naming_an_unlabelled_class": 3}
    fold = {
        "before": {"miou_all": 10.0, "labels": labels},
        "after": {"miou_all": 11.5, "labels": {**labels, "masks_naming_an_unlabelled_class": 0}},
        "after_recovered_par": {"miou_all": 11.0, "labels": labels},
    }
    # seed 1 finds z again and loses y; rule10 finds z again and drew every photo of x. On the photos no run drew
    # the agreement ranks the runs as val does; on every train photo, rule10 (its drawn photos in) agrees least.
    runs = {
        "runs": {
            "seed0": _run(10, 0.7, ("x", "z")),
            "seed1": _run(12, 0.9, ("x", "y")),
            "rule10": _run(13, 0.5, common=0.95, drawn_all=("x",)),
        }
    }
    (tmp_path / "s_fold0.json").write_text(json.dumps(fold))
    (tmp_path / "s_fold0_runs.json").write_text(json.dumps(runs))
    text = main([str(tmp_path / "s_fold0.json"), str(tmp_path / "s_fold0_runs.json")])
    assert "| s 0 | 10.00 | 11.50 | 5 | 5 | 3 | 0 | 11.00 | not run |" in text
    assert "| s 0 | 3 | 3 | +1.00 | -0.50 | 10.00 -> 12.00, 0.700 -> 0.900 | not run | not run |" in text
    assert "| s 0 | 2 | 1, 1, 0 | 1, 0, 1 | not run | not run | not run |" in text
    with pytest.raises(SystemExit, match="not a label_folds.py"):
        main([str(tmp_path / "other.json")])
    del runs["runs"]["seed1"]["common"]  # scored before there was "common"
    (tmp_path / "s_fold0_runs.json").write_text(json.dumps(runs))
    with pytest.raises(SystemExit, match="no 'common' scores"):
        main([str(tmp_path / "s_fold0_runs.json")])


def test_a_variant_draws_the_first_k_of_its_list_and_runs_the_routes_stage(tmp_path):
    rule, shuffled = [f"r{i}" for i in range(30)], [f"s{i}" for i in range(30)]
    assert (
        drawn_photos("rule10", rule, shuffled) == rule[:10]
        and drawn_photos("random20", rule, shuffled) == shuffled[:20]
    )
    assert drawn_photos("seed1", rule, shuffled) == []
    route = tmp_path / "route"
    route.mkdir()
    seg = "wsss train wsss::deeplab/real_cpu.yaml data.root=/d data.pseudo_dir=/p data.true_masks=auto run.seed=0"
    seg += " run.dir=/s"
    (route / "plan.json").write_text(json.dumps({"steps": [{"name": "seg", "command": seg}]}))
    words = stage_words(tmp_path / "view", route, tmp_path / "seg", 1)
    assert words[:4] == ["train", "wsss::deeplab/real_cpu.yaml", "data.pseudo_dir=/p", "data.true_masks=auto"]
    assert words[4:] == [f"data.root={tmp_path / 'view'}", "run.seed=1", f"run.dir={tmp_path / 'seg'}", "--quiet"]
