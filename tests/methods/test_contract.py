"""One contract test over every registered method (as timm's tests/test_models.py over every model name).

Each method, from the tiny settings it provides (``Method.tiny_overrides``): it builds; every loss term it
returns has a weight in ``loss.weights``; every parameter group has options; its CAMs (through the one hook the
shared code calls, ``Method.image_cams``) and segmentation logits have the right shapes; two steps train, and a
run stopped after one step resumes to the second. Over every registered name too: a run accepts its method's own
refiners and the generic ones, and is refused any other up front; each refiner takes the options it declares.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tiny_methods import NAMES, OURS, tiny_config
from wsss.cam import resize_maps
from wsss.core.errors import UsageError
from wsss.engine.defaults import build_trainer
from wsss.engine.trainer import build_optimizer
from wsss.methods import (
    REFINERS,
    available_methods,
    build_method,
    get_method_class,
    placeholder_classes,
    refiner_options,
    refiners_of,
)
from wsss.methods.contract import Method
from wsss.runs import refiners  # noqa: F401 - the generic refiners register on import, as `wsss pseudo`'s do


def test_every_builtin_and_plugin_method_provides_tiny_settings():
    """A method of the package or of an installed plugin is in the contract test (not left out silently)."""
    ours = OURS
    assert {"cam", "seco", "rca", "sccam", "deeplab", "affinitynet", "toy"} <= ours
    trained = {n for n in ours if get_method_class(n).trainable}  # clip_es: a run from weights, its own tests
    assert trained <= set(NAMES), f"no tiny_overrides(): {trained - set(NAMES)}"
    assert "clip_es" in ours - trained


def test_every_refiner_a_method_offers_is_registered():
    for n in available_methods():
        missing = set(get_method_class(n).refiners) - set(REFINERS)
        assert not missing, f"method {n} offers unregistered refiners {missing}"


def check_image_cams(method: Method, C: int) -> None:
    """``Method.image_cams`` of an (H, W, 3) photo: (1, k, h, w) maps in [0, 1] of the asked classes (every
    class when none is named), which ``resize_maps`` brings to the photo; none for a photo without labels."""
    image = torch.randint(0, 256, (48, 80, 3), dtype=torch.uint8).numpy()
    for classes, k in ((torch.tensor([0, C - 2]), 2), (None, C - 1), (torch.zeros(0, dtype=torch.long), 0)):
        cam, aux = method.image_cams(image, classes=classes, aux=True)
        assert cam.ndim == 4 and tuple(cam.shape[:2]) == (1, k)
        assert aux is None or aux.shape == cam.shape
        maps = resize_maps(cam, image.shape[:2])
        assert tuple(maps.shape[-2:]) == (48, 80) and (k == 0 or (maps.min() >= 0 and maps.max() <= 1 + 1e-6))


@pytest.mark.parametrize("name", sorted(OURS))
def test_a_method_makes_per_image_cams_through_the_one_default_hook(name):
    """No method overrides ``image_cams`` (the CLIP methods carried the same one): a method whose CAMs
    come per decoded image (``cams.source == "per_image"``) implements ``labelled_cam_of_image``, which the
    default ``image_cams`` calls; a batch method keeps the shared multi-scale step."""
    cls = get_method_class(name)
    assert cls.image_cams is Method.image_cams, f"{name} overrides image_cams"
    per_image = cls.labelled_cam_of_image is not Method.labelled_cam_of_image
    assert per_image == (cls.cams.source == "per_image"), f"{name}: cams.source {cls.cams.source!r}"


@pytest.mark.parametrize("name", sorted(OURS))
def test_only_a_method_with_batch_cams_overrides_cam_maps(name):
    """A method declares where its CAMs come from (``cams.source``) and overrides ``cam_maps`` exactly when they
    come from batches; any other keeps the default, the one refusal of every such method."""
    cls = get_method_class(name)
    assert (cls.cam_maps is not Method.cam_maps) == (cls.cams.source == "batch"), f"{name}: {cls.cams.source!r}"


@pytest.mark.parametrize("name", NAMES)
def test_cam_maps_does_what_the_declaration_says(name, tmp_path):
    """Built, a method with batch CAMs gives (B, C-1, h, w) maps; any other refuses with one UsageError naming it."""
    torch.manual_seed(0)
    method = build_method(tiny_config(name, tmp_path, tmp_path / "run"), placeholder_classes(4)).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        if method.cams.source == "batch":
            assert tuple(method.cam_maps(images)[0].shape[:2]) == (2, 3)
        else:
            with pytest.raises(UsageError, match=rf"^method {name} (has no CAM stage|makes its CAMs per image)"):
                method.cam_maps(images)


def generic_refiners() -> set[str]:
    return set(REFINERS) - {r for n in available_methods() for r in get_method_class(n).refiners}


@pytest.mark.parametrize("name", sorted(OURS))
def test_a_run_accepts_its_own_refiners_and_the_generic_ones_and_refuses_the_rest(name):
    """``refiners_of``: a method's declared refiners, and (if it makes CAMs) every refiner no method claims;
    ``refiner_options`` refuses any other with one line naming what the run accepts (``wsss pseudo``)."""
    cls = get_method_class(name)
    accepted = set(refiners_of(cls))
    assert set(cls.refiners) <= accepted
    assert {"none", "par", "crf", "psa", "affinity", "rca"} <= generic_refiners()
    assert (generic_refiners() <= accepted) == (cls.cams.source != "none")
    assert accepted <= generic_refiners() | set(cls.refiners)  # never another method's own refiner
    for refine in sorted(accepted):
        assert refiner_options(cls, refine, {}) == {}
    for refine in sorted(set(REFINERS) - accepted):
        with pytest.raises(UsageError, match=rf"^{name} runs accept (--refine [\w|]+|no --refine .*); got {refine}$"):
            refiner_options(cls, refine, {})


def test_a_seco_run_refuses_refine_excel_before_any_work(synth_root, tmp_path):
    from wsss.methods import build_method, placeholder_classes
    from wsss.runs.jobs import run_pseudo

    method = build_method(tiny_config("seco", synth_root, tmp_path / "run"), placeholder_classes(4))
    run = SimpleNamespace(method=method)  # nothing else of a run is read before the refusal
    accepted = "|".join(sorted(generic_refiners()))
    with pytest.raises(UsageError, match=rf"^seco runs accept --refine {accepted}; got excel$"):
        run_pseudo(run, "train", refine="excel")
    assert "excel" in refiners_of(get_method_class("excel"))


@pytest.mark.parametrize("refine", sorted(REFINERS))
def test_each_refiner_takes_the_options_it_declares_and_gets_those_alone(refine):
    """A refiner's factory takes its declared options as keyword arguments and nothing else; a job passes it
    those that were given (None: not given) and refuses one it does not declare."""
    entry = REFINERS[refine]
    params = inspect.signature(entry.make).parameters.values()
    assert tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY) == entry.options
    assert not any(p.kind is p.VAR_KEYWORD for p in params), f"{refine}: takes options it does not declare"
    cls = next(get_method_class(n) for n in sorted(OURS) if refine in refiners_of(get_method_class(n)))
    every = {"affinity_run": "AFF", "saliency": "SAL"}  # the options `wsss pseudo` has flags for
    declared = {k: v for k, v in every.items() if k in entry.options}
    assert refiner_options(cls, refine, {**{k: None for k in every}, **declared}) == declared
    for option in sorted(set(every) - set(entry.options)):
        flag = "--" + option.replace("_", "-")
        with pytest.raises(UsageError, match=rf"^--refine {refine} takes .*; got {flag}$"):
            refiner_options(cls, refine, {option: "x"})


@pytest.mark.parametrize("name", NAMES)
def test_method_contract(name, synth_root, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(name, synth_root, tmp_path / "run")
    trainer = build_trainer(cfg, progress=False)
    method = trainer.method
    assert type(method) is get_method_class(name) and method.num_classes == trainer.train_set.num_classes
    C = method.num_classes

    # every parameter group has options (lr multiplier...), and the optimiser builds from them
    groups, options = method.param_groups(), method.param_group_options()
    assert groups and set(groups) <= set(options), f"groups without options: {set(groups) - set(options)}"
    assert all("lr_mult" in options[g] for g in groups)
    assert build_optimizer(method, cfg).param_groups

    # loss terms: all weighted in loss.weights, finite scalars (every term active: a late step)
    method.train()
    method.on_train_start(trainer.context())
    batch = next(trainer.stream)[0]
    terms = method.training_step(batch, 10**6, set(cfg.loss.weights))
    assert terms and set(terms) <= set(cfg.loss.weights), f"unweighted terms: {set(terms) - set(cfg.loss.weights)}"
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())

    # inference shapes: CAMs (B, C-1, h, w) with the aux map alike; seg logits (B, C, h, w)
    method.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        if method.cams.source == "batch":
            cam, aux = method.cam_maps(images)
            assert cam.ndim == 4 and tuple(cam.shape[:2]) == (2, C - 1)
            assert aux is None or tuple(aux.shape[:2]) == (2, C - 1)
        if method.has_cams:  # the hook the shared code calls: the maps of the given labels, of every class, of none
            check_image_cams(method, C)
        if method.has_seg_head:
            logits = method.seg_logits(images)
            assert logits.ndim == 4 and tuple(logits.shape[:2]) == (2, C)
        if method.has_classifier:  # the image classifier's logits (`wsss predict --tags-from`, `wsss viz`)
            assert tuple(method.class_logits(images).shape) == (2, C - 1)
    registers = {r.name for r in REFINERS.values() if r.module == type(method).__module__}
    assert method.has_cams or method.has_seg_head or method.refiners or registers  # it produces something

    # what a build reads off its start files is options, recorded whole: built again from them alone (the files
    # gone), the method has the same networks
    fields = {f.name for f in dataclasses.fields(method.Options)} if dataclasses.is_dataclass(method.Options) else set()
    built = method.built_options()
    assert set(method.start_files) <= fields and set(built) <= fields
    if built:
        again = dataclasses.replace(cfg, options={**cfg.options, **built})
        shapes = {k: v.shape for k, v in build_method(again, method.class_names).state_dict().items()}
        assert shapes == {k: v.shape for k, v in method.state_dict().items()}

    # two steps, stopped after one and resumed
    first = build_trainer(cfg, progress=False).train(until=1)
    assert first["step"] == 1 and not first["resumed"]
    second = build_trainer(cfg, progress=False).train()
    assert second["step"] == 2 and second["resumed"]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize(
    ("name", "pooling", "expected"),
    [("cam", "gmp", "gmp"), ("cam", "gap", "gap"), ("rca", "gmp", "gap"), ("sccam", "gmp", "gap")],
)
def test_classifier_pooling_is_the_one_the_logits_use(name, pooling, expected, synth_root, tmp_path):
    """``Method.classifier_pooling`` (what ``Method.class_logits`` pools the CAM by, by default): the CAM
    baseline's follows ``model.pooling``; RCA's and SC-CAM's classifiers pool by GAP whatever it says (an
    SC-CAM round 0 trained with model.pooling=gap was the same run to the last bit)."""
    from wsss.methods import build_method, placeholder_classes

    cfg = tiny_config(name, synth_root, tmp_path / "run")
    cfg.model.pooling = pooling
    method = build_method(cfg, placeholder_classes(8))
    assert method.classifier_pooling == expected


# The view a method's classification loss reads, per method with a classifier
CLASSIFIER_INPUT = {"cam": "image", "seco": "image", "sccam": "image", "rca": "rca_image"}


@pytest.mark.parametrize(
    ("name", "pooling"), [("cam", "gmp"), ("cam", "gap"), ("seco", "gmp"), ("sccam", "gap"), ("rca", "gap")]
)
def test_class_logits_are_the_logits_the_classification_loss_reads(name, pooling, synth_root, tmp_path):
    """``Method.class_logits`` (the tags of `wsss predict --tags-from`): the loss of a batch's labels on them is
    the method's own ``cls`` term (eval mode: no dropout, batch statistics frozen). The default (the CAM pooled by
    ``classifier_pooling``) holds for RCA's and SC-CAM's GAP classifiers; the CAM baseline and SeCo pool the
    features by max before their 1x1 conv, so they override it, which the gmp cases check."""
    torch.manual_seed(0)
    cfg = tiny_config(name, synth_root, tmp_path / "run")
    cfg.model.pooling = pooling
    trainer = build_trainer(cfg, progress=False)
    method = trainer.method
    method.on_train_start(trainer.context())
    batch = next(trainer.stream)[0]
    method.eval()
    with torch.no_grad():
        cls = method.training_step(batch, 10**6, set(cfg.loss.weights))["cls"]
        logits = method.class_logits(batch[CLASSIFIER_INPUT[name]])
    assert method.has_classifier and tuple(logits.shape) == (len(batch["labels"]), method.num_classes - 1)
    # float32 sums in another order (pooling before or after a bias-free 1x1 conv; SeCo's batch of two views):
    # measured |difference| 0 on these cases and 6e-8 for the CAM baseline's GAP pooled after its conv; the max
    # of the CAM where the classifier pools the features by max moves the loss by 0.29
    torch.testing.assert_close(F.multilabel_soft_margin_loss(logits, batch["labels"]), cls, rtol=0, atol=1e-5)


def test_a_method_without_a_classifier_says_so(synth_root, tmp_path):
    from wsss.methods import build_method, placeholder_classes

    cfg = tiny_config("deeplab", synth_root, tmp_path / "run")
    method = build_method(cfg, placeholder_classes(8))
    assert not method.has_classifier
    with pytest.raises(NotImplementedError, match="no image classifier"):
        method.class_logits(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_method_declares_its_cams_in_one_declaration(name):
    """What a method declares about its CAMs is its ``cams`` (a CamDeclaration) and nothing else: the shared
    code reads ``has_cams`` from it, and the CAM passes a batch method gets follow its ReLU order."""
    from wsss.methods.contract import CamDeclaration, Method

    cls = get_method_class(name)
    assert isinstance(cls.cams, CamDeclaration)
    assert not {"cams_per_image", "own_crf", "cam_relu_per_pass"} & set(dir(cls))
    assert isinstance(vars(Method)["has_cams"], property)  # derived from cams.source, never set by a method


def test_a_method_that_still_sets_an_old_cam_flag_is_refused():
    from wsss.methods.contract import Method

    with pytest.raises(TypeError, match=r"own_crf \(now a crf_refiner override\)"):
        type("OldStyle", (Method,), {"name": "old_style", "own_crf": True})
    with pytest.raises(ValueError, match="source"):
        from wsss.methods.contract import CamDeclaration

        CamDeclaration(source="pixels")


def test_cam_passes_follow_the_run_settings_and_the_method_order(synth_root, tmp_path):
    from wsss.methods import build_method, placeholder_classes

    cfg = tiny_config("sccam", synth_root, tmp_path / "run")
    cfg.infer.cam_empty_fallback, cfg.infer.cam_flip_fuse = "peak_odds", "sum"
    method = build_method(cfg, placeholder_classes(8))
    passes = method.cam_passes([1.0, 0.5])
    assert (passes.scales, passes.relu, passes.flip_fuse, passes.empty_fallback) == (
        (1.0, 0.5),
        "per_pass",
        "sum",
        "peak_odds",
    )
    assert method.cam_passes(labelled=False).empty_fallback == "none"  # no label: nothing to fill
    assert method.cam_passes().scales == tuple(cfg.infer.cam_scales)


@pytest.mark.parametrize("name", [n for n in NAMES if get_method_class(n).cams.source == "batch"])
def test_every_classifier_learns_masks_pixels_through_its_cams(name, tmp_path):
    """``data.true_masks`` on any method whose CAMs come from ``cam_maps`` (``Method.mask_term``): a finite term of
    the masked photo alone that reaches the network's parameters."""
    torch.manual_seed(0)
    method = build_method(tiny_config(name, tmp_path, tmp_path / "run"), placeholder_classes(4)).train()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    batch = {
        "image": torch.randn(2, 3, 64, 64),
        "target": torch.randint(0, 4, (2, 64, 64)),
        "labels": labels,
        "target_weight": torch.tensor([1.0, 0.0]),
    }
    term = method.mask_term(batch)
    assert torch.isfinite(term) and term.item() > 0
    term.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
