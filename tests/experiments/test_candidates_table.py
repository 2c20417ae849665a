"""experiments/candidates_table.py: each candidate's per-fold gain over the route, and the rule (adopted only when
every set has all five folds and, on each, the mean gain exceeds twice the standard deviation of the gains; a fold
whose gain is 0 or less decides it before the others run)."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from experiments import candidates_table as ct


def _fold(f: int, route: float, rounds: float | None = None, abstain: float | None = None) -> dict:
    res = {
        "fold": {"fold": f, "folds": 5},
        "pseudo": {"par": 20.0},
        "seg_rounds": [{"val": route - 1, "val_crf": route}],
    }
    if rounds is not None:
        res["seg_rounds"].append({"val": rounds - 1, "val_crf": rounds})
    if abstain is not None:
        res["abstain"] = {"val": abstain - 1, "val_crf": abstain, "pseudo": {"miou": 15.0, "ignored_share": 30.0}}
    return res


def test_a_candidate_is_adopted_only_past_twice_its_spread_on_every_set(tmp_path):
    # round 2 gains 1.0 +- 0.1 on both sets: adopted; abstain gains on one set only within its spread: not
    ccp = [_fold(f, 20.0, 21.0 + 0.1 * (f % 2), 20.0 + (1.5 if f % 2 else -1.0)) for f in range(5)]
    coco = [_fold(f, 5.0, 6.0 - 0.1 * (f % 2), 6.0) for f in range(5)]
    paths = []
    for name, folds in (("ccp", ccp), ("coco", coco)):
        for r in folds:
            path = tmp_path / f"{name}_{r['fold']['fold']}.json"
            path.write_text(json.dumps(r))
            paths.append(str(path))
    text = ct.main(["--set", "ccp", *paths[:5], "--set", "coco", *paths[5:]])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    assert rows["self-training: one more round (`--rounds 1`)"].endswith("| **adopted** |")
    ab = rows["labels that abstain (`--abstain`)"]
    gains = [1.5 if f % 2 else -1.0 for f in range(5)]
    assert f"{statistics.fmean(gains):+.2f} (sd {statistics.stdev(gains):.2f}; n 5" in ab
    assert "not adopted (ccp: " in ab and "coco" not in ab.split("not adopted")[1]  # coco's gain is 1.0 (sd 0)
    gce = rows["a loss that tolerates noisy labels (`seg.options.seg_loss=gce`)"]
    assert gce.count("not run") == 2 and "undecided (folds run: ccp 0 of 5, coco 0 of 5)" in gce
    assert "| 20.00 (sd 0.00; n 5) | 5.00 (sd 0.00; n 5) |" in rows["the route: one stage, val, `--crf`"]


def test_fewer_than_five_folds_leave_it_undecided_and_a_fold_given_twice_is_refused(tmp_path):
    folds = [_fold(f, 20.0, 25.0) for f in range(3)]
    assert ct.gains(folds, "seg_rounds.1.val_crf", ct.ROUTE) == {0: 5.0, 1: 5.0, 2: 5.0}
    assert ct.verdict({"ccp": ct.gains(folds, "seg_rounds.1.val_crf", ct.ROUTE)}) == "undecided (folds run: ccp 3 of 5)"
    one = tmp_path / "a.json"
    one.write_text(json.dumps(folds[0]))
    both = tmp_path / "b.json"
    both.write_text(json.dumps({"folds": folds[:2], "summary": {}}))
    with pytest.raises(SystemExit, match="fold 0 is in .*a.json too"):
        ct.read_folds([str(one), str(both)])
    assert [r["fold"]["fold"] for r in ct.read_folds([str(both)])] == [0, 1]
    assert ct.gains(folds[:1], "seg_rounds.1.val_crf", "seg_rounds.2.val") == {}  # a fold without the figure: no gain


def test_a_fold_that_loses_decides_before_the_others_run_and_no_five_folds_with_one_could_pass():
    # the early verdict is only sound if no completion of the folds passes: an adversarial one (four equal gains as
    # high as wanted beside the losing one) and random ones
    assert ct.EARLY
    for top in (0.5, 10.0, 1e6):
        gs = [0.0, top, top, top, top]
        assert not statistics.fmean(gs) > 2 * statistics.stdev(gs)
    rng = random.Random(0)
    for _ in range(20000):
        gs = [rng.uniform(-0.5, 0.0), *(rng.uniform(0.0, 5.0) ** rng.choice((1, 3)) for _ in range(4))]
        assert not statistics.fmean(gs) > 2 * statistics.stdev(gs)
    early = ct.verdict({"ccp": {0: -0.71}, "coco": {0: 2.72, 1: 1.75, 2: 1.12}})
    assert early == "not adopted, whatever the other folds give (a gain <= 0: ccp fold 0: -0.71)"
    assert ct.verdict({"ccp": {0: 0.3}, "coco": {0: 2.72, 1: 1.75, 2: 1.12}}).startswith("undecided")


def test_an_arm_of_another_classifier_is_measured_against_the_route_of_its_own_fold(tmp_path):
    def write(name, res):
        path = tmp_path / name
        path.write_text(json.dumps(res))
        return str(path)

    route = [write(f"r{f}.json", _fold(f, 20.0)) for f in range(2)]
    arm = []
    for f, (cls_stage, both) in enumerate(((21.0, 22.5), (19.0, 20.5))):
        res = _fold(f, cls_stage)
        res["variants"] = {"effseg": {"val": both - 1, "val_crf": both}}
        arm.append(write(f"e{f}.json", res))
    text = ct.main(["--set", "ccp", *route, "--arm", "ccp", "effnet", *arm])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    assert "| +0.00 (sd 1.41; n 2: +1.00 / -1.00) |" in rows["EfficientNet-Lite0 as the classifier (arm effnet)"]
    assert "+1.50 (sd 1.41; n 2: +2.50 / +0.50)" in rows["EfficientNet-Lite0 as both (arm effnet, its effseg variant)"]
    assert "ccp fold 1: -1.00" in rows["EfficientNet-Lite0 as the classifier (arm effnet)"]
    with pytest.raises(SystemExit, match=r"--arm effnet: folds \[1\] have no fold"):
        ct.main(["--set", "ccp", route[0], "--arm", "ccp", "effnet", *arm])
