"""``wsss route``: from a dataset (or a folder of photos with a labels file and a class list) to masks and a report,
in one command: the route docs/own-photos.md advises, each choice made from the data as the measurements say and
printed with its reason (docs/own-photos.md#what-it-does; the evidence: docs/benchmarks/real-photos.md).

The steps, each the library call of the ``wsss`` command named (in this process, as that command runs it), by the
functions of :mod:`wsss.pipelines.route_calls` that ``experiments/real_route.py`` runs too (``run_config``,
``train_run``, ``stage_config``, ``cams``, ``pseudo_labels``, ``predict_split``, ``score``: one implementation of each
step, docs/api.md#the-routes-steps):

1. ``wsss prepare folder`` into ``OUT/data`` when the input is a folder of photos (``labels`` and ``classes``), or
   ``wsss check-data`` of a dataset given (each training checks what it reads again, as ``wsss train`` does);
2. the classifier, ``wsss train``: RCA's ``configs/rca/real_cpu.yaml``, or the CAM baseline's
   ``configs/cam/real_cpu.yaml`` for many classes of few photos (``route_modes.choose_classifier``), into ``OUT/cls``;
3. ``wsss cam`` of the train split;
4. ``wsss pseudo --refine par --levels B/B``, B the classifier's ``cam.bkg_thre`` (one level: no pixel left at 255);
5. with masked train photos: the DeepLab stage on the weak labels with the masks in their place, or on the masks
   alone, each trained on all but one fold of the masked photos and scored on that fold (``folds``;
   :func:`wsss.pipelines.route_stage.choose_stage`), the better one kept;
6. the DeepLab stage ``configs/deeplab/real_cpu.yaml`` (``wsss train``, ``data.true_masks=auto``) into ``OUT/seg``;
7. ``wsss predict --crf`` of the train and the val split, every photo's mask also in ``OUT/masks``
   (``route_calls.gather_masks``), each split scored where it has masks and each masked photo alone
   (``route_calls.photo_scores``);
8. ``wsss report`` of both runs (a report made of the run's outputs as they are is kept); with ``images``,
   ``wsss predict --images`` of new photos into ``OUT/new_masks``.

The plan is made before any step (:func:`plan_route`: a frozen :class:`Plan` of the choices with their reasons and
the typed steps, ``wsss.pipelines.steps.Step``, made from the data facts, the options and the CUDA devices alone;
saved as ``OUT/plan.json`` before the first step): for a folder of photos from what ``wsss prepare folder`` would
write of them (``plan_folder``), every input read, the weight packages the trainings start from and the photos of
``images`` checked (with ``plan_only`` the photos and masks decoded too, as the run's prepare does), so that
``--plan`` prints every step, with an estimate of its time (:mod:`wsss.pipelines.estimates`), and the run numbers
them alike. Where the data prepare wrote differs from what the plan read of the photos, the route plans once more
and ``plan.json`` records both. A choice that needs a measurement is a step: ``stage`` by folds is the step
``choice``, whose ``OUT/choice/stage.json`` the stage's training reads.

A rerun of the same command continues where it stopped: a training resumes from its ``last.pt``, the per-photo
steps skip the photos they finished, the folds keep their scores. ``OUT/route.json`` records the route's settings
(its data's files among them: ``route_data.data_files``); another setting is refused, naming it, unless
``overwrite`` (the files wsss made in OUT are then removed and made again; nothing outside OUT, nor the photos, labels
or masks given, nor a file of the user's in OUT, is touched). ``OUT/data_facts.json``: the facts of the
data the choices were made from; ``OUT/summary.json``: the choices, each step's wall time and the scores (the
:class:`RouteResult` :func:`run_route` returns); ``OUT/steps.jsonl``: each run's time of each step, a stopped one's
too (the step runner of :mod:`wsss.pipelines.steps`).

The modes are registered classes (``wsss.pipelines.modes``; ``wsss.pipelines.route_modes``'s ClassifierMode,
:class:`ClipESMode`, :class:`WeCLIPMode`): the weight files given choose one. With CLIP files (``clip`` / ``dinov2``:
docs/own-photos.md#with-clip-files; ``wsss.pipelines.clip_steps``) the classifier gives way: with both, WeCLIP+
trained on the photos into ``OUT/weclip`` and its masks by the official test fusion; with CLIP alone, CLIP-ES's CAMs
and CRF labels (``OUT/clip``), then steps 5-8; photos with classes and no labels are tagged by the CLIP-ES run first
(``tags.csv``, read back on a rerun). On a CUDA device the trainings use the GPU presets
(``configs/*/route_gpu.yaml``); with several, one torchrun process each, the per-photo steps shared.

Overrides: ``KEY=VALUE`` words of the config (docs/configs.md); ``cls.KEY=VALUE`` sets the classifier's only,
``seg.KEY=VALUE`` the DeepLab stage's (its folds' too), ``clip.KEY=VALUE`` the CLIP method's, a word without a
prefix all (``run.seed=1``) but the CLIP method for a start file (``model.pretrained=``:
``route_values.split_overrides``). A start file is a setting by its content; OUT moved or copied, or a start file
moved, is re-based into the route's runs (``route_record.RouteRecord.rebase``). Where a command runs
(``core.config.EXECUTION_KEYS``: ``run.device``, ``run.threads``, ``data.num_workers``, ``infer.crf_workers``) is no
setting of the route: a route stopped on one machine continues on another.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from wsss.core.config import Config, resolve_epochs
from wsss.core.errors import UsageError
from wsss.core.files import check_output_folder
from wsss.pipelines import (
    clip_steps,
    gpus,
    route_calls,
    route_modes,  # noqa: F401 - the built-in modes register on import
    route_outputs,
    route_stage,
    route_summary,
)
from wsss.pipelines.modes import choose_mode, weight_words
from wsss.pipelines.route_calls import (
    JOB_CALLS,
    ROUTE_CHECK_ADVICE,
    fitted_batch,
    predict_command,
    stage_command,
)
from wsss.pipelines.route_data import data_facts, planned_facts
from wsss.pipelines.route_record import RouteRecord
from wsss.pipelines.route_values import (
    GPU_LOADERS,
    MASKS_DIR,
    NOT_ADOPTED,
    PREFIXES,
    PREPARED,
    ROUTE_FILE,
    SEG_PRESET,
    STAGE_FILE,
    STAGES,
    Choice,
    DataFacts,
    Plan,
    RouteOptions,
    RouteResult,
    file_words,
    predict_choice,
    split_overrides,
    word_key,
)
from wsss.pipelines.steps import Command, Setting, Step, StepRunner

# the names docs/api.md lists for this module (the typed values among them are route_values's)
__all__ = ["Choice", "DataFacts", "Plan", "Route", "RouteOptions", "RouteResult", "plan_route", "run_route"]


def plan_route(opts: RouteOptions, facts: DataFacts, cuda_devices: int = 0, *, edited_tags: bool = False) -> Plan:
    """The plan of ``wsss route`` with ``opts`` for the data ``facts`` (a dataset's, or what `wsss prepare folder`
    will write of a folder of photos) on ``cuda_devices``: every choice and step, made from these alone (the presets
    read, no other file, nothing run). ``edited_tags``: a tags.csv of the user's is in the data."""
    return Route(opts, say=lambda _: None)._make_plan(facts, cuda_devices, edited_tags)


class Route:
    """One route folder (module docstring): :meth:`plan` then :meth:`run`."""

    def __init__(self, opts: RouteOptions, say: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self.out = Path(opts.out)
        self.say = say or (lambda text: print(text, flush=True))
        if opts.folds < 0 or opts.folds == 1:
            raise UsageError(f"--folds {opts.folds}: 0 (no choice: the mixed stage) or 2 or more")
        if opts.rounds < 0:
            raise UsageError(
                f"--rounds {opts.rounds}: 0 (one stage) or more (its masks of the train photos teach the next)"
            )
        if opts.stage not in STAGES:
            raise UsageError(f"--stage {opts.stage!r}: one of {', '.join(STAGES)}")
        self.words = split_overrides([*opts.overrides, *file_words(opts.clip, opts.dinov2, opts.overrides)])
        self.files = weight_words(self.words["clip"])
        self.mode = choose_mode(self.files)  # the registered mode of the files given (wsss.pipelines.modes)
        refused = self.mode.mode.refuse(opts.abstain, opts.rounds)
        if refused:
            raise UsageError(refused)
        self.processes = 1  # a training's processes, a per-photo step's shares: the CUDA devices (set by the plan)
        self.runner = StepRunner(self.out, command="wsss route", record=ROUTE_FILE)
        self.record = RouteRecord(self)
        self.choices: dict[str, Choice] = {}
        self.times = self.runner.times
        self.scores: dict[str, Any] = {}
        # made by the plan (from the data) and by the steps (what they wrote)
        self.facts: DataFacts | None = None
        self.configs: dict[str, Config] = {}
        self.seg_iters: int | None = None
        self.stage_root: Path | None = None  # the data root the DeepLab stage trained on (a view for the masks alone)
        self.masks: Path | None = None
        self.masks_written = 0
        self.new_photos = 0  # the photos of --images
        self.edited_tags = False  # a tags.csv in the data (the plan's input)
        self.measured: dict[str, Choice] = {}  # the choices a step made by measuring (the plan's "folds")
        self.reports: list[Path] = []
        self.new_masks: Path | None = None

    # -- settings -----------------------------------------------------------------------------------------------
    def _tags(self) -> bool:
        """Whether CLIP tags the photos: a folder of photos with its classes and no labels file."""
        return bool(self.opts.classes) and not self.opts.labels

    def _prepares(self) -> bool:
        """Whether the input is a folder of photos to prepare (classes, with labels or a CLIP file to tag them) or a
        dataset."""
        given = [f for f, v in (("--labels", self.opts.labels), ("--classes", self.opts.classes)) if v]
        if self.opts.masks and not self.opts.classes:
            raise UsageError(
                "--masks goes with --classes (a folder of photos to prepare); a dataset's masks are in "
                "its SegmentationClass folder already"
            )
        if given == ["--labels"]:
            raise UsageError("--labels goes with --classes: a folder of photos needs its class list, or give a dataset")
        if self._tags() and not self.mode.mode.tags:
            raise UsageError(clip_steps.WEIGHTS_NEEDED)
        return bool(given)

    def _classes(self) -> str:
        """The class list of a folder of photos to prepare (:meth:`_prepares` refuses one without)."""
        if not self.opts.classes:
            raise RuntimeError("a folder of photos is prepared with its class list")
        return self.opts.classes

    # -- the plan -----------------------------------------------------------------------------------------------
    def _device(self, cuda_devices: int) -> Choice:
        given = self.opts.device or next(
            (w.partition("=")[2] for w in self.words["cls"] if word_key(w) == "run.device"), None
        )
        if given:
            return Choice(given, "given")
        if cuda_devices:
            return Choice(
                "cuda",
                f"a CUDA device is here (the presets' run.device: cpu is for their CPU timings); "
                f"{GPU_LOADERS} loader processes feed it",
            )
        return Choice(None, "no CUDA device: the presets' run.device, cpu")

    def _crf_workers(self) -> Choice:
        """``--crf-workers N`` for every CRF step, else each run's own ``infer.crf_workers`` (a ``cls.`` / ``seg.``
        word sets one training's; -1 resolved by the one rule of ``cam.crf.crf_workers``). A word that says
        otherwise than the flag is refused."""
        from wsss.core.config import check_value
        from wsss.runs.jobs import crf_processes

        given = self.opts.crf_workers
        words = {f"{p}.{w}" for p in PREFIXES for w in self.words[p] if word_key(w) == "infer.crf_workers"}
        if given is not None:
            check_value("infer.crf_workers", given)
            other = sorted(w for w in words if w.partition("=")[2].strip() != str(given))
            if other:
                raise UsageError(f"--crf-workers {given} and {other[0]}: give one of them")
            return Choice(given, "given")
        config = self.configs.get("seg") or self.configs["weclip"]
        cfg = config.infer.crf_workers
        shown = f"{cfg}, {crf_processes(config)} processes here" if cfg < 0 else str(cfg)
        source = "given" if words else "the presets'"
        return Choice(None, f"each run's infer.crf_workers ({source}; the DeepLab stage's: {shown})")

    def _config(self, preset: str, words: Sequence[str], run_dir: Path) -> Config:
        """The config of a training on the route's device (:func:`run_config`)."""
        return route_calls.run_config(preset, words, run_dir, device=self.choices["device"].value)

    def plan(self) -> Plan:
        """The plan (:func:`plan_route`), its choices printed with their reasons, for a folder of photos as for a
        dataset: the photos' choices are made from what `wsss prepare folder` would write (``plan_folder``), every
        input and the weights the trainings start from checked after (:meth:`_check_inputs`)."""
        prepares = self._prepares()
        root = self.out.resolve() / "data" if prepares else Path(self.opts.data).resolve()
        facts = self._read_facts(root, prepares)
        plan = self._make_plan(facts, gpus.cuda_devices(), edited_tags=(root / "tags.csv").is_file())
        self.new_photos = self._check_inputs()
        for line in plan.choice_lines():
            self.say(line)
        return plan

    def _make_plan(self, facts: DataFacts, cuda_devices: int, edited_tags: bool = False) -> Plan:
        """The plan of the route for the data ``facts`` on ``cuda_devices``: each choice with its reason, then the
        steps of the mode (nothing read but the presets, nothing run). ``edited_tags``: a tags.csv is in the data."""
        out, root, prepares = self.out.resolve(), facts.root, self._prepares()
        self.facts, self.choices, self.configs, self.edited_tags = facts, {}, {}, edited_tags
        self.lowered: dict[str, tuple[int, int]] = {}  # role -> (the preset's batch, the batch the photos fill)
        steps: list[Step] = []
        if prepares:
            prepare = self._prepare_command(root)
            steps.append(Step("prepare", (prepare,), partial(self._prepare, root), outputs=(root,)))
        else:  # `wsss prepare folder` checks its inputs; a dataset given is checked as `wsss train` does
            steps.append(Step("check", (Command(("check-data",), (root,)),), lambda: self._check_data(root)))
        self.choices["mode"] = Choice(self.mode.value, self.mode.reason)
        self.choices["device"] = self._device(cuda_devices)
        self.choices["presets"] = self._presets(cuda_devices)
        steps += self.mode.mode.steps(self, root, out, facts)
        if self.opts.images:
            final, crf = out / self.mode.mode.final_run, self.mode.mode.crf
            given = (
                ("--images", list(self.opts.images)),
                ("--out", out / "new_masks"),
                ("--crf", crf),
                ("--overlay", True),
            )
            predict = Command(("predict",), (final,), given)
            steps.append(
                Step(
                    "new photos",
                    (predict,),
                    partial(route_outputs.predict_new_photos, self, predict),
                    outputs=(out / "new_masks",),
                )
            )
        return Plan(
            choices=dict(self.choices),
            steps=tuple(steps),
            facts=facts,
            processes=self.processes,
            configs=dict(self.configs),
            seg_iters=self.seg_iters,
        )

    def _read_facts(self, root: Path, prepares: bool) -> DataFacts:
        """The facts of the dataset the route reads: a dataset's own, or those of the one `wsss prepare folder` will
        write from the photos given (their inputs read and, for ``--plan``, checked as it checks them)."""
        if not prepares or (root / PREPARED).is_file():
            return data_facts(root)
        from wsss.data.prepare.folder import plan_folder

        plan = plan_folder(
            self.opts.data,
            self.opts.labels,
            self._classes(),
            masks=self.opts.masks,
            out=root,
            progress=self.opts.progress,
            check=self.opts.plan_only,
        )
        if self.opts.plan_only:  # what the prepare step will print, before the choices made from it
            for kind, lines in (("note", plan.notes), ("warning", plan.warnings)):
                for line in lines:
                    self.say(f"prepare: {kind}: {line}")
        return planned_facts(root, plan)

    def _presets(self, cuda_devices: int) -> Choice:
        """The GPU presets on a CUDA device (``configs/*/route_gpu.yaml``), else the CPU ones; with several CUDA
        devices a training runs as one process each (``torchrun``) and a per-photo step is shared among them."""
        device = self.choices["device"].value
        if device is None or not str(device).startswith("cuda"):
            self.processes = 1
            return Choice("cpu", self.mode.mode.cpu_note)
        n = self.processes = max(1, cuda_devices)  # one a CUDA device
        many = f"; {n} CUDA devices: a training as {n} torchrun processes, the per-photo steps shared" if n > 1 else ""
        return Choice(
            "gpu",
            "a CUDA device: the presets made for a GPU (configs/*/route_gpu.yaml: the method's crop, "
            f"batch and precision, epochs of your photos){many}",
        )

    def _gpu(self) -> bool:
        return self.choices["presets"].value == "gpu"

    def _job_step(self, title: str, command: Command) -> Step:
        """A per-photo step of one command (``wsss cam | pseudo | predict``), its work rendered from it."""
        return Step(title, (command,), partial(self._job, command), outputs=(Path(command.args[0]),))

    def _seg_steps(self, root: Path, out: Path, facts: DataFacts, labels_run: Path) -> list[Step]:
        """The DeepLab stage on the pseudo labels of ``labels_run`` (chosen by folds where masks allow), its masks
        with the dense CRF, the reports."""
        seg_dir, seg = out / "seg", self._seg_preset()
        stages = [*(out / name for name in self._round_dirs(self.opts.rounds)), seg_dir]  # the last is OUT/seg
        train = stage_command(seg, root, labels_run / "pseudo" / "train", self.words["seg"], stages[0])
        train, seg_cfg = self._fitted(train, "seg", run_dir=seg_dir)
        self.configs["seg"] = seg_cfg
        self.choices["crf_workers"] = self._crf_workers()
        self.seg_iters = resolve_epochs(seg_cfg, len(facts.train)).train.max_iters
        self.choices["stage"] = self._stage_choice(facts)
        self.choices["predict"] = predict_choice(
            facts, "with the dense CRF (better on ccp-dev's folds: docs/own-photos.md#which-route)"
        )
        steps = []
        seg_words = train.word_list(leave_out=("run.dir",))
        if self.choices["stage"].value == "folds":
            steps.append(
                Step(
                    "choice",
                    (),
                    lambda: route_stage.choose_stage(self, root, seg_words, out / "choice"),
                    outputs=(out / "choice" / STAGE_FILE,),
                    note=f"{self.opts.folds} folds of the masked train photos, both stages each",
                )
            )
        steps.append(
            Step(
                "seg", (train,), lambda: route_stage.train_stage(self, root, seg_words, stages[0]), outputs=(stages[0],)
            )
        )
        steps += self._round_steps(root, seg, stages)
        return [*steps, self._masks_step(seg_dir, crf=True), self._report_step(labels_run, seg_dir)]

    def _masks_step(self, run_dir: Path, crf: bool) -> Step:
        """Every train and val photo's mask (``wsss predict --labelled-only`` of each split: each photo's labels) in
        ``OUT/masks``."""
        predict = tuple(predict_command(run_dir, split, crf=crf, labelled_only=True) for split in self._splits())
        return Step("masks", predict, lambda: self._masks(run_dir, crf=crf), outputs=(self.out.resolve() / MASKS_DIR,))

    def _report_step(self, *run_dirs: Path) -> Step:
        reports = tuple(Command(("report",), (d,)) for d in run_dirs)
        return Step(
            "report",
            reports,
            lambda: route_outputs.write_reports(self, *run_dirs),
            outputs=tuple(d / "report" for d in run_dirs),
        )

    def _round_dirs(self, rounds: int | None = None) -> list[str]:
        """The folders of the stages before the last of ``--rounds`` (``seg_r0``, ...): ``rounds`` of them, or those
        in OUT (None: what ``--overwrite`` and edited tags remove)."""
        if rounds is not None:
            return [f"seg_r{r}" for r in range(rounds)]
        return sorted(p.name for p in self.out.glob("seg_r*") if p.name[len("seg_r") :].isdigit())

    def _round_steps(self, root: Path, seg: str, stages: list[Path]) -> list[Step]:
        """``--rounds N``: N more DeepLab stages, each trained afresh on the masks its predecessor predicts for the
        train photos with the dense CRF, naming only each photo's labelled classes, the masks in their place."""
        from wsss.runs.jobs import predictions_folder

        self.choices["rounds"] = Choice(
            self.opts.rounds,
            "given"
            if self.opts.rounds
            else f"one stage (--rounds N: N more, each on its predecessor's masks of the train photos; {NOT_ADOPTED})",
        )
        steps = []
        for r, (before, run_dir) in enumerate(zip(stages, stages[1:]), 1):
            labels = before / predictions_folder(crf=True, labelled_only=True) / "train"
            train, _ = self._fitted(stage_command(seg, root, labels, self.words["seg"], run_dir), "seg")
            steps.append(self._job_step(f"round {r} labels", predict_command(before, "train", labelled_only=True)))
            steps.append(Step(f"round {r}", (train,), partial(self._train_command, train), outputs=(run_dir,)))
        return steps

    def _command_config(self, command: Command, device: str | None = None, run_dir: Path | None = None) -> Config:
        """The config of the training ``wsss train PRESET WORDS`` (:func:`run_config`) on ``device`` (None: the
        route's); ``run_dir`` in place of its ``run.dir``."""
        words = command.word_list(leave_out=("run.dir",))
        where = run_dir or command.setting("run.dir")
        return route_calls.run_config(str(command.args[0]), words, where, device=device or self.choices["device"].value)

    def _fitted(
        self, command: Command, role: str, run_dir: Path | None = None, device: str | None = None
    ) -> tuple[Command, Config]:
        """A training's command and config (:meth:`_command_config`), its batch lowered to the train photos where
        the preset's is larger (the trainer refuses a split smaller than its batch), said in the choice ``batch``;
        a ``train.batch_size`` typed is kept as typed."""
        cfg = self._command_config(command, device, run_dir)
        photos = len(self._facts().train)
        batch = fitted_batch(cfg.train.batch_size, cfg.train.micro_batch, photos, self.processes)
        if batch is None or any(word_key(w) == "train.batch_size" for w in self.words[role]):
            return command, cfg
        fitted = replace(command, words=(*command.words, Setting("train.batch_size", batch)))
        self.lowered[role] = (cfg.train.batch_size, batch)
        each = ", ".join(f"{r} {was} -> {now}" for r, (was, now) in self.lowered.items())
        self.choices["batch"] = Choice(
            {r: now for r, (_, now) in self.lowered.items()},
            f"{photos} train photos, fewer than the presets' batch: {each} (the trainer refuses fewer photos "
            "than its batch; train.batch_size=N sets it)",
        )
        return fitted, self._command_config(fitted, device, run_dir)

    def _train_command(self, command: Command, device: str | None = None) -> None:
        self._train(self._command_config(command, device))

    def _seg_preset(self) -> str:
        """The DeepLab stage's preset: ``--seg``, else the GPU's or the CPU's."""
        if self.opts.seg == SEG_PRESET:
            return self.mode.mode.presets(self._gpu()).get("seg", SEG_PRESET)
        return self.opts.seg

    def _check_inputs(self) -> int:
        """What the later steps read, checked before the first: the weights each training starts from (a weight
        package not installed is one error with the line that installs it) and the photos of ``--images``; how
        many of those there are."""
        from wsss.models.weights import resolve_weight_path

        for cfg in self.configs.values():
            if cfg.model.pretrained and str(cfg.model.pretrained).startswith("pkg:"):
                resolve_weight_path(cfg.model.pretrained)
        if not self.opts.images:
            return 0
        from wsss.data.photos import PhotoFolder

        return len(PhotoFolder(list(self.opts.images)).ids)

    def _splits(self) -> list[str]:
        """The splits whose photos get masks: train, and val where there is one."""
        return ["train", *(["val"] if self._facts().val else [])]

    def _stage_choice(self, facts: DataFacts) -> Choice:
        """How the DeepLab stage trains (``route_stage.stage_choice``)."""
        return route_stage.stage_choice(self.opts, facts, self.configs)

    # -- the steps ------------------------------------------------------------------------------------------------
    def _prepare_command(self, root: Path) -> Command:
        """``wsss prepare folder`` of the photos given into ``root``."""
        given = (
            ("--images", self.opts.data),
            ("--labels", self.opts.labels),
            ("--classes", self._classes()),
            ("--masks", self.opts.masks),
            ("--out", root),
        )
        return Command(("prepare", "folder"), options=given)

    def _prepare(self, root: Path) -> None:
        from wsss.data import prepare

        done = root / PREPARED
        if done.is_file():  # prepared by an earlier run of the route
            return
        command = self._prepare_command(root)
        # a folder there is a stopped try of this step (OUT/data is the route's own): made again
        summary = prepare.prepare_folder(
            command.option("--images"),
            command.option("--labels"),
            command.option("--classes"),
            command.option("--out"),
            masks=command.option("--masks"),
            progress=self.opts.progress,
            overwrite=root.exists(),
        )
        self.say(summary.format())
        done.touch()

    def _check_data(self, root: Path) -> None:
        """check-data on the splits the trainings read (val: every photo needs its mask, as a training's val), as
        each training checks them again (:func:`train_run`): the problems printed and a DataError when one fails,
        the warnings printed."""
        from functools import partial

        from wsss.data import check_dataset
        from wsss.runs.train_checks import run_checks

        checks = [
            (f"split {split}", partial(check_dataset, root, split, full_masks=split == "val"))
            for split in ["train", *(["val"] if self._facts().val else [])]
        ]
        run_checks(root, checks, progress=self.opts.progress, advice=ROUTE_CHECK_ADVICE)

    def _train(self, cfg: Config) -> None:
        """A training: in this process, or as one torchrun process per CUDA device (its config written beside its
        run, checked here first as ``wsss train`` checks it)."""
        if self.processes == 1:
            route_calls.train_run(cfg, progress=self.opts.progress, own=True)
            return
        from wsss.core.config import save_config
        from wsss.runs.train_checks import check_training_data

        check_training_data(cfg, progress=self.opts.progress, advice=ROUTE_CHECK_ADVICE)
        path = Path(f"{cfg.run.dir}.yaml")
        save_config(cfg, path)
        gpus.train_processes(self.processes, [str(path), "--skip-check", *([] if self.opts.progress else ["--quiet"])])

    def _shared(self, argv: list[str]) -> Any:
        """A per-photo step shared among the route's processes (``wsss ARGV`` in the others), where it runs given."""
        device = self.choices["device"].value
        where = [*(["--device", str(device)] if device else []), *(["--quiet"] if not self.opts.progress else [])]
        workers = self.choices["crf_workers"].value
        where += ["--crf-workers", str(workers)] if workers is not None and argv[0] != "cam" else []
        return gpus.sharded(self.processes, [*argv, *where])

    def _where(self) -> dict[str, Any]:
        """Where the per-photo steps run: the route's device and CRF workers (not what they compute)."""
        return {"device": self.choices["device"].value, "crf_workers": self.choices["crf_workers"].value}

    def _job(self, command: Command) -> Path:
        """A per-photo step: the command's library call in this process (:data:`JOB_CALLS`), shared with the route's
        other processes, which run the command (``wsss ARGV``)."""
        with self._shared(command.argv()):
            return JOB_CALLS[command.name[0]](command, progress=self.opts.progress, **self._where())

    def _stage_config(self, root: Path, seg_words: list[str], run_dir: Path, stage: str, view: Path | None) -> Config:
        """The DeepLab stage's config (:func:`stage_config`): ``mixed`` the weak labels with the masks in their
        place; ``masks`` the masked photos alone (the split ``train_masked`` of ``view``), for as many iterations as
        the mixed stage has on the whole train split."""
        return route_calls.stage_config(
            self._seg_preset(),
            seg_words,
            run_dir,
            stage,
            view=view or root,
            iterations=self.seg_iters,
            device=self.choices["device"].value,
        )

    def _stage(self) -> str:
        """The DeepLab stage's training: the plan's choice, or where it is ``folds`` the one the step ``choice``
        wrote (``OUT/choice/stage.json``)."""
        planned = str(self.choices["stage"].value)
        if planned != "folds":
            return planned
        return str(json.loads((self.out / "choice" / STAGE_FILE).read_text())["stage"])

    def _predict_split(
        self, run_dir: Path, split: str, root: Path | None = None, crf: bool = True, labelled_only: bool = False
    ) -> Path:
        return self._job(predict_command(run_dir, split, root=root, crf=crf, labelled_only=labelled_only))

    def _masks(self, seg_dir: Path, crf: bool = True) -> None:
        """Every photo's mask in ``OUT/masks``, scored (``route_outputs.make_masks``)."""
        route_outputs.make_masks(self, seg_dir, crf)

    # -- the whole route --------------------------------------------------------------------------------------------
    def _facts(self) -> DataFacts:
        if self.facts is None:
            raise RuntimeError("the route's steps run after its plan has read the data")
        return self.facts

    def run(self) -> RouteResult | None:
        """Run (or continue) the route; what it made (also ``OUT/summary.json``). None with ``plan_only``."""
        if self.opts.plan_only:
            route_summary.print_estimates(self, list(self.plan().steps))
            return None
        self._prepares()  # its refusals before anything is written
        check_output_folder(self.out, "the route's folder (its runs, record and summary)")
        self.record.refuse_a_foreign_out()
        t0 = time.monotonic()
        with self.runner.lock():
            settings = self.record.settle()
            self.record.rebase()
            plan = self.plan()
            route_summary.save_plan(self.out, plan)  # before the first step
            steps = list(plan.steps)
            self.record.write(settings)
            route_summary.save_facts(self.out, self.facts)
            done, earlier = route_summary.measured_before(self.out, self.opts.overwrite)
            for i, step in enumerate(steps, 1):
                self.say(f"[{i}/{len(steps)}] {step.title}: {step.command}")
                self.runner.run(step.title, step.command, step.work)
                self.say(f"[{i}/{len(steps)}] {step.title} done in {route_summary.duration(self.times[step.title])}")
                if not self.record.first_step_done:  # its inputs read and accepted: a change of them is now refused
                    self.record.first_step_done = True
                    self.record.write(settings)
                if step.title not in done:  # its work done in this run (and the stopped runs before it)
                    route_summary.learn(self, step.title, earlier.get(step.title, 0.0) + self.times[step.title])
                if step.title == "prepare" and data_facts(plan.facts.root) != plan.facts:
                    # planned once more, from the data prepare wrote where it differs from what the plan read
                    again = self.plan()
                    route_summary.save_plan(self.out, again, before=plan)
                    steps[i:] = again.steps[1:]
                    route_summary.save_facts(self.out, self.facts)
            return self._summary(time.monotonic() - t0)

    def _step_work(self) -> dict[str, Any]:
        """Each step's work for this route (``route_summary.step_work``)."""
        return route_summary.step_work(self)

    def result(self) -> RouteResult:
        """What the route made so far."""
        return RouteResult(
            choices={**self.choices, **self.measured},
            facts=self.facts,
            masks=self.masks,
            reports=list(self.reports),
            new_masks=self.new_masks,
            scores=dict(self.scores),
            seconds=dict(self.times),
            seconds_over_runs=self.runner.seconds_over_runs(),
            masks_written=self.masks_written,
        )

    def _how(self) -> str:
        return self.mode.mode.how

    def _summary(self, wall: float) -> RouteResult:
        """``OUT/summary.json`` and the closing lines (``route_summary.summary``)."""
        return route_summary.summary(self, wall)


def run_route(opts: RouteOptions, say: Callable[[str], None] | None = None) -> RouteResult | None:
    """``wsss route``: run or continue the route of ``opts`` (module docstring); what it made (None with
    ``plan_only``: the plan is printed, nothing runs)."""
    return Route(opts, say).run()
