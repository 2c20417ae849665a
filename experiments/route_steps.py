"""The steps of experiments/real_route.py: each a call of the package's route step (``wsss.pipelines.route``, as
``wsss route`` runs it) in this process, run by the shared step runner (``wsss.pipelines.steps``) and logged in
``OUT/route.log`` after the ``wsss`` command it stands for; a step whose outputs exist is not redone."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from wsss.core.config import SCOPE
from wsss.core.files import atomic_write
from wsss.data.voc import VOCDataset
from wsss.pipelines import route_calls as steps  # the route's steps: looked up at each call, the one implementation
from wsss.pipelines.steps import StepRunner
from wsss.runs.jobs import predictions_folder

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


def step(runner: StepRunner, command: str, work: Callable[[], T]) -> tuple[T, float]:
    """``work`` run as the step ``command`` (the ``wsss`` command a user would type for it); its result and seconds."""
    return runner.run(command.split()[1], command, work)


def preset_path(path: str) -> str:
    """A preset from the working folder, else from the repository (``configs/...``, as the ``wsss`` commands ran)."""
    if Path(path).is_absolute() or path.startswith(SCOPE) or Path(path).exists():
        return path
    return str(REPO / path) if (REPO / path).exists() else path


def miou(path: Path) -> float:
    return float(json.loads(path.read_text())["miou"])


def write_json(path: str | Path, res: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(path), "w") as f:
        f.write(json.dumps(res, indent=1) + "\n")


def score(pred: Path, root: str, split: str, scores: Path, runner: StepRunner, *, pseudo: bool = False) -> float:
    """The masks in ``pred`` scored on the split's masks into ``scores`` (as ``wsss eval --json``); the mIoU in %."""

    def scored() -> Any:
        result = steps.score(pred, root, split, pseudo=pseudo)
        print(result.format_table())
        return result

    flag = " --pseudo" if pseudo else ""
    result, _ = step(runner, f"wsss eval {pred} --data-root {root} --split {split}{flag} --json {scores}", scored)
    with atomic_write(scores, "w") as f:
        json.dump(result.to_json(), f, indent=2)
    return 100 * miou(scores)


def predict(
    seg: Path,
    split: str,
    runner: StepRunner,
    *,
    crf: bool = False,
    tags_from: Path | None = None,
    tag_gate: str = "hard",
    labelled_only: bool = False,
    ensemble: list[Path] | None = None,
) -> Path:
    """The masks of the split by the run ``seg``; their folder."""
    flags = [
        *(["--ensemble", *map(str, ensemble)] if ensemble else []),
        *(["--labelled-only"] if labelled_only else []),
        *(["--crf"] if crf else []),
        *(["--tags-from", str(tags_from), "--tag-gate", tag_gate] if tags_from is not None else []),
    ]
    pred, _ = step(
        runner,
        " ".join(["wsss predict", str(seg), "--split", split, *flags, "--quiet"]),
        lambda: steps.predict_split(
            seg,
            split,
            crf=crf,
            tags_from=tags_from,
            tag_gate=tag_gate,
            labelled_only=labelled_only,
            ensemble=ensemble or (),
            progress=False,
        ),
    )
    return pred


def cams(cls: Path, words: list[str], shown: str, runner: StepRunner) -> None:
    """The CAMs and seeds of the train split with ``words`` (``shown``: as ``wsss cam``'s flags)."""
    step(
        runner,
        f"wsss cam {cls} --split train{shown} --quiet",
        lambda: steps.cams(cls, "train", words=words, progress=False),
    )


def train(preset: str, words: list[str], run: Path, runner: StepRunner) -> dict[str, Any]:
    """Train ``preset`` with ``words`` into ``run`` unless it has its final checkpoint; the training's timing."""
    if not (run / "checkpoints/last.pt").is_file() or not (run / "train_time.json").is_file():

        def trained() -> None:  # train_run checks the data first and says what the masks teach, as `wsss train`
            steps.train_run(steps.run_config(preset_path(preset), words, run), progress=False)

        _, wall = step(runner, f"wsss train {preset} {' '.join(words)} run.dir={run} --quiet", trained)
        (run / "train_time.json").write_text(json.dumps({"wall": wall}))
    wall = json.loads((run / "train_time.json").read_text())["wall"]
    # the trainer's logs (one per round of SC-CAM): the last step of each is its iterations; the median period is
    # not moved by one in which the job was paused or the machine busy
    logs = [
        [json.loads(line) for line in m.read_text().splitlines() if line.strip()]
        for m in sorted(run.glob("**/metrics.jsonl"))
    ]
    iterations = sum(max((r.get("step", 0) for r in rows), default=0) for rows in logs)
    timed = sorted(r["sec_per_iter"] for rows in logs for r in rows if r.get("sec_per_iter") is not None)
    return {
        "wall": wall,
        "iterations": iterations,
        "s_per_iter": wall / max(1, iterations),
        "s_per_iter_median": timed[len(timed) // 2] if timed else None,
    }


def pseudo_labels(
    cls: Path,
    root: str,
    refine: str,
    levels: tuple[float, float],
    name: str,
    *,
    affinity_run: Path | None = None,
    runner: StepRunner,
) -> Path:
    """The pseudo labels of the train split at ``levels`` (high, low) by ``refine`` into ``CLS/NAME/train`` (kept
    apart: the next call writes ``pseudo/train`` afresh), scored on the train masks into ``CLS/NAME/eval.json``."""
    pseudo = cls / name / "train"
    if not (pseudo / ".done").is_file():
        # pseudo/train holds a stopped try of this step (continued) or of another (refused by its settings stamp:
        # removed, as this step's own output)
        stamp = cls / "pseudo/train"
        if stamp.exists() and (cls / "pseudo/.step").is_file() and (cls / "pseudo/.step").read_text() != name:
            shutil.rmtree(stamp)
        (cls / "pseudo").mkdir(exist_ok=True)
        (cls / "pseudo/.step").write_text(name)
        high, low = levels
        given = {"affinity_run": str(affinity_run)} if affinity_run is not None else {}
        extra = f" --affinity-run {affinity_run}" if affinity_run is not None else ""
        step(
            runner,
            f"wsss pseudo {cls} --split train --refine {refine} --levels {high:g}/{low:g}{extra} --quiet",
            lambda: steps.pseudo_labels(cls, "train", levels, refine=refine, progress=False, **given),
        )
        if pseudo.exists():  # a try stopped between the rename and the mark: replaced by this complete one
            shutil.rmtree(pseudo)
        pseudo.parent.mkdir(parents=True, exist_ok=True)
        (cls / "pseudo/train").rename(pseudo)
        (pseudo / ".done").touch()
    if not (pseudo.parent / "eval.json").is_file():
        score(pseudo, root, "train", pseudo.parent / "eval.json", runner, pseudo=True)
    return pseudo


def scored_predictions(
    seg: Path, *, crf: bool = False, tags_from: Path | None = None, root: str, split: str, runner: StepRunner
) -> float:
    """The mIoU in % of the split's masks by ``seg`` (with the CRF, named by the tags of ``tags_from``), reused."""
    scores = seg / f"eval_{predictions_folder(crf=crf, tag_gate='hard' if tags_from is not None else None)}.json"
    if not scores.is_file():
        score(predict(seg, split, runner, crf=crf, tags_from=tags_from), root, split, scores, runner)
    return 100 * miou(scores)


def sweep(cls: Path, view: str | None, out: Path, runner: StepRunner) -> None:
    """``wsss sweep-bkg``: the seeds scored at each background level on the train masks (of ``view``: a few)."""
    from wsss.evaluation.bkg_sweep import sweep_run_bkg

    root = f" --data-root {view}" if view is not None else ""
    step(
        runner,
        f"wsss sweep-bkg {cls} --split train{root} --json {out} --quiet",
        lambda: sweep_run_bkg(cls, "train", data_root=view, json_path=out),
    )


def background_only_floor(root: str, split: str) -> float:
    """The mIoU in % that masks of background alone score on the split (``wsss eval``'s ``miou_background_only``)."""
    import numpy as np

    from wsss.evaluation.metrics import confusion_matrix, scores_from_hist

    ds = VOCDataset(root, split)
    hist = sum(confusion_matrix(m, np.zeros_like(m), ds.num_classes) for m in map(ds.load_mask, ds.ids))
    return 100 * scores_from_hist(hist)["miou_background_only"]
