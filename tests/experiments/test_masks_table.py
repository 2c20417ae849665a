"""experiments/masks_table.py: the masks experiment's table from its seeds' JSONs."""

from __future__ import annotations

import json

from experiments import masks_table


def _seed(ceiling: float, b: float, a: float, level: float) -> dict:
    row = {"val": b, "val_crf_tagged": b + 1}
    return {
        "masks": {
            "weights": [1.0, 5.0],
            "arms": {
                "ceiling": {"val": ceiling, "val_crf": ceiling + 0.5, "val_crf_tagged": ceiling + 1},
                "20": {
                    "level": level,
                    "b": row,
                    "c_w1": {"val": b + 2, "val_crf_tagged": b + 3},
                    "a": {"val": a, "val_crf": a + 0.5},
                },
            },
        }
    }


def test_means_ranges_and_shares_of_the_ceiling_inferred_alike(tmp_path):
    paths = []
    for s, res in enumerate([_seed(20.0, 10.0, 12.0, 0.3), _seed(30.0, 14.0, 15.0, 0.35)]):
        paths.append(tmp_path / f"s{s}.json")
        paths[-1].write_text(json.dumps(res))
    out = masks_table.main([str(p) for p in paths])
    rows = {line.split(" | ")[1]: line for line in out.splitlines()[2:]}
    assert "| all | the ceiling (every train mask) | 2 | 25.00 (20.00-30.00) | 100 %" in out
    # (b): plain 10 / 20 and 14 / 30 -> shares 50 % and 46.67 %; the user's: 11 / 21 and 15 / 31
    b = rows["(b) the route, K masks for the level (levels 0.3, 0.35)"]
    assert "| 12.00 (10.00-14.00) | 48.33 % (46.67-50.00) | 13.00 (11.00-15.00) `--crf --tags-from` |" in b
    assert f"{100 * (11 / 21 + 15 / 31) / 2:.2f} %" in b
    # (a): against the ceiling with the CRF alone; no weight-5 arm measured: no row
    a = rows["(a) the K masks alone"]
    assert f"{100 * (12.5 / 20.5 + 15.5 / 30.5) / 2:.2f} %" in a and "`--crf` |" in a
    assert not any("weight 5" in r for r in rows) and any("weight 1" in r for r in rows)
    assert not any(r.startswith("(d)") for r in rows)  # arm (d) not run: no row


def test_arm_d_has_its_own_classifiers_levels(tmp_path):
    res = _seed(20.0, 10.0, 12.0, 0.3)
    res["masks"]["arms"]["20"]["d"] = {"level": 0.45, "val": 16.0, "val_crf_tagged": 18.0}
    (tmp_path / "s.json").write_text(json.dumps(res))
    d = [line for line in masks_table.main([str(tmp_path / "s.json")]).splitlines() if "(d)" in line]
    assert len(d) == 1 and "(levels 0.45)" in d[0]
    assert "| 16.00 | 80.00 % | 18.00 `--crf --tags-from` | 85.71 % |" in d[0]  # 16 / 20, 18 / 21


def test_a_diverged_stage_is_named_and_left_out_of_the_means(tmp_path):
    """real_route records a stage that diverged (``diverged``) instead of stopping: the table counts it beside the
    arm's figures over the other seeds, and an arm that diverged in every seed still has its row."""
    seeds = [_seed(20.0, 10.0, 12.0, 0.3), _seed(30.0, 14.0, 15.0, 0.35)]
    seeds[0]["masks"]["arms"]["20"]["c_w5"] = {"val": 9.0, "val_crf_tagged": 10.0}
    seeds[1]["masks"]["arms"]["20"]["c_w5"] = {"diverged": "non-finite loss at iteration 57: seg=inf"}
    seeds[1]["masks"]["arms"]["20"]["c_w1"] = {"diverged": "non-finite loss at iteration 3: seg=nan"}
    seeds[0]["masks"]["arms"]["20"]["c_w1"] = {"diverged": "non-finite loss at iteration 9: seg=inf"}
    paths = []
    for s, res in enumerate(seeds):
        paths.append(tmp_path / f"s{s}.json")
        paths[-1].write_text(json.dumps(res))
    rows = {line.split(" | ")[1]: line for line in masks_table.main([str(p) for p in paths]).splitlines()[2:]}
    w5 = rows["(c) the route with the K masks, weight 5; diverged in 1 seed"]
    assert "| 1 | 9.00 | 45.00 % |" in w5  # seed 0 alone: 9 / 20
    assert rows["(c) the route with the K masks, weight 1; diverged in 2 seeds"].split(" | ")[2:4] == ["0", "-"]
