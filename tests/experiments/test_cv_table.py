"""experiments/cv_table.py: the route's figures over the folds and the protocol's rule for each choice."""

from __future__ import annotations

import json

from experiments import cv_table
from experiments.route_folds import summarise


def _route(crf: list[float], ensemble: list[float], folds: int = 3, of: int = 3) -> dict:
    """A ``--folds`` JSON of ``folds`` runs out of ``of``: the CRF's and the ensemble's gains per fold as given."""
    runs = [
        {
            "fold": {"fold": f, "folds": of},
            "pseudo": {"par": 20.0 + f},
            "seg_val": {"miou": 18.0 + f},
            "steps": {"crf": crf[f], "ensemble_crf_tagged": ensemble[f]},
        }
        for f in range(folds)
    ]
    return {"folds": runs, "summary": summarise(runs)}


def test_a_choice_enters_the_advice_only_beyond_its_spread_and_not_losing_on_the_other_set(tmp_path, capsys):
    ccp = _route(crf=[1.0, 1.2, 0.8], ensemble=[0.5, -0.4, 0.2])  # the CRF: 1.0 +- 0.2; the ensemble within its sd
    coco = _route(crf=[0.1, 0.0, 0.2], ensemble=[0.3, 0.3, 0.3])
    paths = []
    for name, res in (("ccp.json", ccp), ("coco.json", coco)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(res))
    text = cv_table.main(["--decide", str(paths[0]), "--veto", str(paths[1])])
    assert text == capsys.readouterr().out.rstrip("\n")
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| 1 |")}
    crf, ens = rows[cv_table.STEPS["steps.crf"]], rows[cv_table.STEPS["steps.ensemble_crf_tagged"]]
    assert "+1.00 (sd 0.20; +1.00 / +1.20 / +0.80)" in crf and crf.endswith("**enters the advice** |")
    assert ens.endswith("leaves the advice (gain within its spread) |")
    assert "| one stage, val, plain | 19.00 (sd 1.00; 18.00 / 19.00 / 20.00) |" in text
    # a loss on the other set keeps a clear gain out; a set with folds still to run decides nothing
    coco_loses = _route(crf=[-0.5, -0.1, 0.0], ensemble=[0.3, 0.3, 0.3])
    assert cv_table.tables([ccp], [coco_loses], ("a", "b")).count("leaves the advice (loses on the other set)") == 1
    undefined = _route(crf=[float("nan"), 1.2, 0.8], ensemble=[0.5, -0.4, 0.2])  # a fold without that figure
    text = cv_table.tables([undefined], [coco], ("a", "b"))
    row = next(line for line in text.splitlines() if line.startswith(f"| 1 | {cv_table.STEPS['steps.crf']}"))
    assert "+1.00 (sd 0.28; - / +1.20 / +0.80)" in row and row.endswith("| undecided |")
    partial = _route(crf=[1.0, 1.2, 0.8], ensemble=[0.5, -0.4, 0.2], folds=2)
    text = cv_table.tables([ccp], [partial], ("a", "b"))
    assert "b, route 1 (2 of 3 folds run)" in text and "enters" not in text and text.count("| undecided |") == 2


def test_a_route_run_against_another_reports_its_own_gain_fold_by_fold():
    """The 24-epoch route's JSON holds its gains over the 12-epoch one (``--gain-over``): a choice of its own."""
    longer = _route(crf=[1.0, 1.0, 1.0], ensemble=[0.0, 0.0, 0.0])
    longer["gain_over"] = {
        "other": "runs/cv/ccp-dev_e12.json",
        "summary": summarise([{"seg_val": {"miou": g}} for g in (2.0, 2.5, 3.0)]),
    }
    other = {
        **longer,
        "gain_over": {
            "other": "runs/cv/coco_e12.json",
            "summary": summarise([{"seg_val": {"miou": g}} for g in (-0.1, 0.1, 0.3)]),
        },
    }
    text = cv_table.tables([longer], [other], ("a", "b"))
    assert "a, route 1 (3 of 3 folds run; its own figures here, its gains over ccp-dev_e12.json in the rule's" in text
    row = next(line for line in text.splitlines() if "over its `--gain-over` route: one stage, val, plain" in line)
    assert "+2.50 (sd 0.50; +2.00 / +2.50 / +3.00)" in row and row.endswith("**enters the advice** |")
    # the advised route's figures (the stage with `--crf`, the stage on labels at the preset's level) among them
    advised = summarise(
        [{"seg_rounds": [{"val_crf": g}], "own_level": {"val": -g, "val_crf": 2 * g}} for g in (1.0, 1.5, 2.0)]
    )
    both = [{**r, "gain_over": {**r["gain_over"], "summary": advised}} for r in (longer, other)]
    text = cv_table.tables([both[0]], [both[1]], ("a", "b"))
    assert "| 1 | this route over its `--gain-over` route: one stage, val, `--crf` | +1.50 (sd 0.50; " in text
    assert "route: one stage on labels at the preset's own level, val, plain | -1.50 (sd 0.50; " in text
    assert "route: one stage on labels at the preset's own level, val, `--crf` | +3.00 (sd 1.00; " in text
    # a --gain-over route stopped before its last fold: the gains over the folds both ran decide nothing
    short = {
        **longer,
        "gain_over": {
            **longer["gain_over"],
            "summary": summarise([{"seg_val": {"miou": g}} for g in (2.0, 2.5)]),
            "folds": 2,
        },
    }
    row = next(
        line
        for line in cv_table.tables([short], [other], ("a", "b")).splitlines()
        if "over its `--gain-over` route: one stage, val, plain" in line
    )
    assert "+2.25 (sd 0.35; +2.00 / +2.50)" in row and row.endswith("| undecided |")


def test_a_route_says_which_folds_ran_on_another_device():
    """Folds gathered from several machines (``real_route.py --reuse``): the heading names each fold whose options
    chose a device, so that a table mixing the CPU's folds with a GPU's says so."""
    ccp, coco = _route([1.0, 1.2, 0.8], [0.5, -0.4, 0.2]), _route([0.1, 0.0, 0.2], [0.3, 0.3, 0.3])
    ccp["folds"][2]["settings"] = {"overrides": ["run.threads=1", "run.device=cuda"], "seg_set": ["run.device=cuda"]}
    ccp["folds"][1]["settings"] = {"overrides": ["run.threads=1"], "seg_set": []}
    text = cv_table.tables([ccp], [coco], ("a", "b"))
    assert "a, route 1 (3 of 3 folds run; fold 2 ran with run.device=cuda): mean" in text
    assert "b, route 1 (3 of 3 folds run): mean" in text


def test_the_tables_say_where_a_sets_masks_stand_against_its_floor():
    """Beside the verdicts: the one stage's masks against the floor (masks of background alone) fold by fold, so that
    a veto by a set whose masks are at its floor is read as such (coco128-dev)."""
    ccp, coco = _route([1.0, 1.2, 0.8], [0.5, -0.4, 0.2]), _route([0.1, 0.0, 0.2], [0.3, 0.3, 0.3])
    for f, run in enumerate(coco["folds"]):  # plain 18 / 19 / 20 against floors 18.5 / 18.5 / 21
        run["floor"] = [18.5, 18.5, 21.0][f]
        run["seg_rounds"] = [{"val_crf_tagged": [18.0, 19.5, 21.5][f]}]
    coco["summary"] = summarise(coco["folds"])
    text = cv_table.tables([ccp], [coco], ("a", "b"))
    assert text.endswith(
        "- b, route 1: the one stage (plain) is below the floor in 2 of 3 folds; with `--crf "
        "--tags-from` it is -0.50 to +1.00 from it (the floor: what masks of background alone score "
        "on the same photos)"
    )
    assert "- a, route" not in text  # no floor in its JSON: nothing said
