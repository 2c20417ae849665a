"""The route's estimates and closing (:mod:`wsss.pipelines.route`): ``OUT/plan.json`` and ``OUT/data_facts.json``,
each step's estimate under the plan (:func:`print_estimates`, from :mod:`wsss.pipelines.estimates`), a step's measured
seconds learnt (:func:`learn`), and ``OUT/summary.json`` with the closing lines (:func:`summary`). ``route``: the
``wsss.pipelines.route.Route`` that ran (which imports this module)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wsss.core.config import resolve_epochs
from wsss.core.files import atomic_write
from wsss.pipelines.route_values import CLASSIFIERS, FACTS_FILE, PLAN_FILE, SUMMARY_FILE, DataFacts, Plan, RouteResult
from wsss.pipelines.steps import STEPS_LOG, Step


def save_plan(out: Path, plan: Plan, before: Plan | None = None) -> None:
    """``OUT/plan.json``: the plan the steps run; planned again after prepare, the first plan too."""
    record = plan.to_json()
    if before is not None:
        record["planned_before_prepare"] = {
            "reason": "the data prepare wrote differs from what the first plan read of the photos",
            **before.to_json(),
        }
    with atomic_write(out / PLAN_FILE, "w") as f:
        f.write(json.dumps(record, indent=1) + "\n")


def save_facts(out: Path, facts: DataFacts | None) -> None:
    """``OUT/data_facts.json``: the facts the choices were made from, once the plan has read them."""
    if facts is not None:
        with atomic_write(out / FACTS_FILE, "w") as f:
            f.write(json.dumps(facts.to_json(), indent=1) + "\n")


def step_work(route: Any) -> dict[str, Any]:
    """Each step's work (``pipelines.estimates.step_work``) for this route's photos and trainings; none for a CLIP
    mode (not measured), nor before the plan has read the data."""
    from wsss.pipelines.estimates import step_work

    if not route.mode.mode.measured or route.facts is None:
        return {}
    facts, key = route._facts(), str(route.choices["classifier"].value)
    if key not in CLASSIFIERS:  # a preset of the user's: its rate is its own name's
        key = Path(key).stem
    n = len(facts.train)
    folds = route.opts.folds if route.choices["stage"].value == "folds" else 0
    counts = {
        "train": n,
        "val": len(facts.val),
        "new": route.new_photos,
        "folds": folds,
        "masked_train": len(facts.masked_train),
        "rounds": route.opts.rounds,
        "abstain": int(route.opts.abstain),
    }
    iterations = {k: resolve_epochs(route.configs[k], n).train.max_iters for k in ("cls", "seg")}
    return step_work(
        key,
        counts,
        {"classifier": iterations["cls"], "seg": iterations["seg"]},
        device=str(route.choices["presets"].value),
        megapixels=facts.megapixels,
    )


def print_estimates(route: Any, steps: list[Step]) -> None:
    """Under the plan: each step's estimate (0 for a step of this folder that a rerun skips), the total and the
    rates they came from."""
    from wsss.pipelines.estimates import rates, step_estimates
    from wsss.utils.cpuload import others_now

    work, known = step_work(route), rates(others=others_now())
    estimates = step_estimates(work, known)
    done, spent = measured_before(route.out, route.opts.overwrite)
    for i, step in enumerate(steps, 1):
        route.say(f"[{i}/{len(steps)}] {step.title}: {step.command}")
        seconds = estimates.get(step.title)
        if step.title in done:
            estimates[step.title] = 0.0
            route.say("      estimate: 0 s (done: a rerun of this folder skips it)")
        elif seconds is not None and step.title in spent:  # a stopped step goes on where it stopped
            estimates[step.title] = left = max(0.0, seconds - spent[step.title])
            route.say(f"      estimate: about {duration(left)} ({duration(spent[step.title])} of it spent)")
        else:
            route.say(f"      estimate: {'about ' + duration(seconds) if seconds is not None else 'none measured'}")
    if not route.mode.mode.measured:
        route.say(
            "estimate: none measured of the CLIP modes; on a GPU, estimates from single steps in "
            "docs/own-photos.md#with-clip-files"
        )
        return
    total = sum(estimates.get(step.title) or 0.0 for step in steps)
    keys = {k for step in steps for k, _ in work.get(step.title, [])}
    route.say(f"estimate: about {duration(total)} in all (rates: {known.source(keys)})")


def measured_before(out: Path, overwrite: bool) -> tuple[set[str], dict[str, float]]:
    """The steps of this folder that finished before (none with ``--overwrite``: each runs again) and the seconds
    of the stopped runs of the others (``OUT/steps.jsonl``)."""
    from wsss.pipelines.estimates import read_step_log

    return (set(), {}) if overwrite else read_step_log(out / STEPS_LOG)


def learn(route: Any, title: str, seconds: float) -> None:
    """A step's measured seconds into this machine's rates (``pipelines.estimates.record``), with how busy other
    processes kept the cores meanwhile (its last run's)."""
    from wsss.pipelines.estimates import record

    work = step_work(route).get(title)
    if work:
        record(work, seconds, route.out, others=route.runner.others.get(title))


def summary(route: Any, wall: float) -> RouteResult:
    from wsss.pipelines import route_labels

    result = route.result()
    with atomic_write(route.out / SUMMARY_FILE, "w") as f:
        f.write(json.dumps(result.to_json(), indent=1) + "\n")
    lines = [
        f"route finished in {duration(wall)} (this run's steps)",
        f"  masks of all {route.masks_written} train and val photos, {route._how()}: {route.masks}",
    ]
    against = [
        f"{s} mIoU {route.scores[f'{s}_miou']:.2f} on its {route.scores[f'{s}_scored_photos']} photos"
        for s in ("val", "train")
        if f"{s}_miou" in route.scores
    ]
    if against:
        lines.append(f"  against your masks: {', '.join(against)} (each photo's: summary.json, scores.photos)")
    taught = route.scores.get("taught")  # only where the train photos' masks taught the stage
    if taught:
        lines.append(
            f"  the {taught['photos']} masked train photos, apart (mIoU {taught['miou']:.2f}): {taught['note']}"
        )
    lines += route_labels.label_lines(route.scores)
    if route.new_masks is not None:
        lines.append(f"  masks of the new photos: {route.new_masks} (overlays in {route.new_masks / 'overlay'})")
    lines += [f"  report: {p}" for p in route.reports]
    lines.append(f"  summary: {route.out / SUMMARY_FILE}")
    route.say("\n".join(lines))
    return result


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"
