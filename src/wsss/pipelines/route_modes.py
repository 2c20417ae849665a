"""The route's built-in modes (:mod:`wsss.pipelines.modes`: each asked whether it applies to the files given),
registered when :mod:`wsss.pipelines.route` is imported: the classifier on ImageNet weights
(:class:`ClassifierMode`, its preset chosen by :func:`choose_classifier`), CLIP-ES (:class:`ClipESMode`) and
WeCLIP+ (:class:`WeCLIPMode`). Each plans its steps on the ``route`` given (``wsss.pipelines.route.Route``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsss.pipelines import clip_steps, route_outputs
from wsss.pipelines.modes import CLIP_KEY, DINOV2_KEY, RouteMode, register_mode
from wsss.pipelines.route_calls import cam_command, pseudo_command
from wsss.pipelines.route_values import (
    CLASSIFIERS,
    GPU_PRESETS,
    NOT_ADOPTED,
    SEG_PRESET,
    Choice,
    DataFacts,
    predict_choice,
    word_key,
)
from wsss.pipelines.steps import Command, Setting, Step

# RCA from this median of train photos per class up, the CAM baseline below it: a round number between the two sets
# measured (docs/own-photos.md#which-route), not a measured edge.
MIN_PHOTOS_PER_CLASS = 10


def choose_classifier(facts: DataFacts) -> Choice:
    """RCA's preset with a handful of classes of tens of photos each, the CAM baseline's with many classes of few
    photos (:data:`MIN_PHOTOS_PER_CLASS`): the rule as measured, with its reason."""
    seen = f"{facts.classes} classes, a median of {facts.photos_per_class:g} train photos per class"
    if facts.photos_per_class >= MIN_PHOTOS_PER_CLASS:
        return Choice(
            "rca",
            f"{seen} (>= {MIN_PHOTOS_PER_CLASS}): RCA, the better of the two on ccp-dev, a handful "
            "of classes of many photos (docs/own-photos.md#which-route)",
        )
    return Choice(
        "cam",
        f"{seen} (< {MIN_PHOTOS_PER_CLASS}): the CAM baseline, the better of the two on "
        "coco128-dev, many classes of few photos (docs/own-photos.md#which-route)",
    )


CLIP_PAPER = (
    "a paper's figure and our parity with its code (docs/own-photos.md#with-clip-files, docs/parity.md), "
    "not a measurement on real photos here"
)
CLIP_CPU_NOTE = (
    "on the CPU: the CLIP method's GPU preset on the CPU (no CPU preset of it was measured on real "
    "photos; slow at full size), the CPU presets for the rest"
)


@register_mode
class ClassifierMode(RouteMode):
    """No weight file: a classifier (RCA or the CAM baseline) on ImageNet weights, its CAMs and PAR labels, then the
    DeepLab stage (the route as measured on real photos)."""

    name, title = "none", "the classifier"
    reason = "no CLIP file: a classifier on ImageNet weights, as measured on real photos here"
    cpu_presets = {**CLASSIFIERS, "seg": SEG_PRESET}
    gpu_presets = GPU_PRESETS
    measured = True

    def steps(self, route: Any, root: Path, out: Path, facts: DataFacts) -> list[Step]:
        """The classifier, its CAMs and PAR labels, then the DeepLab stage (the route without CLIP)."""
        name = route.opts.classifier
        route.choices["classifier"] = choose_classifier(facts) if name == "auto" else Choice(name, "given")
        chosen = route.choices["classifier"].value
        preset = self.presets(route._gpu()).get(chosen, chosen)
        cls_dir = out / "cls"
        train = Command(
            ("train",), (preset,), words=(Setting("data.root", root), Setting("run.dir", cls_dir), *route.words["cls"])
        )
        train, cls_cfg = route._fitted(train, "cls")
        level = float(cls_cfg.cam.bkg_thre)  # the one place the route reads the classifier's background level
        route.choices["levels"] = Choice(
            (level, level),
            f"the classifier's own background level cam.bkg_thre {level:g}, as one level (no pixel "
            "left undecided; cross-validated on ccp-dev: the level sweep-bkg picks lost)",
        )
        route.configs["cls"] = cls_cfg
        refine = "agree" if route.opts.abstain else "par"
        route.choices["labels"] = (
            Choice(
                "agree",
                "given (--abstain): PAR's label where the CAM's thresholds and the CRF label agree with "
                "it, 255 (unlearned) elsewhere",
            )
            if route.opts.abstain
            else Choice(
                "par",
                "PAR's refinement of the CAMs, every pixel labelled (--abstain: 255 where the refiners "
                f"disagree; {NOT_ADOPTED})",
            )
        )
        pseudo = pseudo_command(cls_dir, refine, (level, level))
        steps = [
            Step("classifier", (train,), lambda: route._train(cls_cfg), outputs=(cls_dir,)),
            route._job_step("cam", cam_command(cls_dir)),
            route._job_step("pseudo", pseudo),
        ]
        return steps + route._seg_steps(root, out, facts, cls_dir)


class ClipMode(RouteMode):
    """What the CLIP modes share: they tag photos without labels, make their own labels (no ``--abstain``) and record
    the CLIP method's words."""

    tags = method_words = True
    cpu_note = CLIP_CPU_NOTE

    @classmethod
    def refuse(cls, abstain: bool, rounds: int) -> str | None:
        if abstain:
            return "--abstain: labels of the classifier's CAMs; a CLIP mode makes its own (drop --clip)"
        return None

    def tagger_steps(self, route: Any, root: Path, out: Path, words: list[str], *, always: bool) -> list[Step]:
        """The CLIP-ES run of the CLIP file (``always``, or where it tags the photos) and the photos' tags where
        there are no labels (docs/own-photos.md#with-clip-files)."""
        clip_dir, steps = out / "clip", []
        device = route.choices["device"].value or "cpu"  # the CLIP presets name cuda
        clip_file, es = route.files[CLIP_KEY], self.presets(route._gpu())["clip_es"]
        if route._tags() or always:
            command = Command(
                ("import", "clip_es"),
                (clip_file,),
                (("--config", es), ("--out", clip_dir)),
                (Setting("data.root", root), *words),
            )

            def made() -> Path:
                return clip_steps.import_clip_run(
                    command.args[0], root, clip_dir, command.word_list(("data.root",)), preset=es, device=device
                )

            steps.append(Step("clip", (command,), made, outputs=(clip_dir,)))
        if route._tags():
            edited = route.edited_tags  # tags.csv there: its labels column, as the user left it
            options = (("--split", "train"), ("--labels-from", "tags.csv" if edited else None), ("--overwrite", edited))
            tag = Command(("tag",), (clip_dir,), options)
            steps.append(
                Step(
                    "tag",
                    (tag,),
                    lambda: route_outputs.tag_the_photos(route, root, clip_dir),
                    outputs=(root / "tags.csv",),
                )
            )
        return steps


@register_mode
class ClipESMode(ClipMode):
    name, title = "clip_es", "CLIP-ES"
    files = frozenset({CLIP_KEY})
    reason = (
        "a CLIP file, no DINOv2: CLIP-ES's CAMs of your class names with CRF labels, then the DeepLab stage; "
        "ExCEL scores higher but needs written descriptions of every class, which your classes lack: "
        f"{CLIP_PAPER}"
    )
    cpu_presets = {"clip_es": clip_steps.CLIP_ES_PRESET, "seg": SEG_PRESET}
    gpu_presets = {"clip_es": clip_steps.CLIP_ES_PRESET, "seg": GPU_PRESETS["seg"]}

    def steps(self, route: Any, root: Path, out: Path, facts: DataFacts) -> list[Step]:
        """CLIP-ES: its CAMs of the class names and CRF labels, then the DeepLab stage."""
        clip_dir = out / "clip"
        es_words = [w for w in route.words["clip"] if word_key(w) != CLIP_KEY]  # the CLIP method's words less its file
        steps = self.tagger_steps(route, root, out, es_words, always=True)
        steps += [
            route._job_step("cam", cam_command(clip_dir)),
            route._job_step("pseudo", pseudo_command(clip_dir, "crf", None)),
        ]
        return steps + route._seg_steps(root, out, facts, clip_dir)


@register_mode
class WeCLIPMode(ClipMode):
    name, title = "weclip_plus", "WeCLIP+"
    files = frozenset({CLIP_KEY, DINOV2_KEY})
    reason = (
        "a CLIP and a DINOv2 file: WeCLIP+ trained on your photos, its masks by the official test fusion; it "
        f"leads the CLIP methods: {CLIP_PAPER}"
    )
    cpu_presets = gpu_presets = {"weclip": clip_steps.WECLIP_PRESET, "clip_es": clip_steps.CLIP_ES_PRESET}
    final_run, crf, how = "weclip", False, "by WeCLIP+'s test fusion"  # its test has no CRF
    masks_teach = False  # it trains on no mask

    @classmethod
    def refuse(cls, abstain: bool, rounds: int) -> str | None:
        if not abstain and rounds:
            return "--rounds: rounds of the DeepLab stage; WeCLIP+ has none (drop --dinov2 for CLIP-ES)"
        return super().refuse(abstain, rounds)

    def steps(self, route: Any, root: Path, out: Path, facts: DataFacts) -> list[Step]:
        """WeCLIP+ trained on the photos (tagged first by a CLIP-ES run where there are no labels), its masks by its
        official test fusion."""
        words, presets = route.words["clip"], self.presets(route._gpu())
        # beside WeCLIP+, the CLIP-ES run (the tagger) takes the CLIP method's options its method has
        es_words = clip_steps.words_of(presets["clip_es"], [w for w in words if word_key(w) != CLIP_KEY])
        steps = self.tagger_steps(route, root, out, es_words, always=False)
        device = route.choices["device"].value or "cpu"  # the CLIP presets name cuda
        weclip_dir, preset = out / "weclip", presets["weclip"]
        train = Command(
            ("train",), (preset,), words=(Setting("data.root", root), *words, Setting("run.dir", weclip_dir))
        )
        train, cfg = route._fitted(train, "clip", device=device)
        route.configs["weclip"] = cfg
        route.choices["crf_workers"] = route._crf_workers()
        route.choices["predict"] = predict_choice(
            facts,
            "by WeCLIP+'s official test fusion (the preset's infer scales with flips; no CRF, as the paper's test)",
        )
        steps.append(Step("weclip", (train,), lambda: route._train(cfg), outputs=(weclip_dir,)))
        return [*steps, route._masks_step(weclip_dir, crf=False), route._report_step(weclip_dir)]
