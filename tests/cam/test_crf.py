"""Dense CRF (docs/methods/seco.md#inference, docs/datasets.md#evaluation) against golden dense_crf.npz, plus
hand-made checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from golden import load_golden
from wsss.cam import CRFParams, CRFPool, crf_label, crf_label_psa, crf_label_two_levels, dense_crf
from wsss.core.config import load_config
from wsss.core.errors import ConfigError


@pytest.fixture(scope="module")
def g() -> dict[str, np.ndarray]:
    return load_golden("dense_crf")


def test_dense_crf_golden(g):
    q = dense_crf(
        g["image"],
        g["prob"],
        iters=int(g["iter_max"]),
        pos_xy_std=float(g["pos_xy_std"]),
        pos_w=float(g["pos_w"]),
        bi_xy_std=float(g["bi_xy_std"]),
        bi_rgb_std=float(g["bi_rgb_std"]),
        bi_w=float(g["bi_w"]),
    )
    assert q.dtype == np.float32 and q.shape == (4, 40, 48)
    # pydensecrf2 1.1 (no torch kernel involved): measured identical; 1e-6 (tests/golden/README.md#dense_crf) for
    # another build of it.
    # The label is exact: the smallest top-2 gap of Q is 2.1e-4, 200x the tolerance.
    np.testing.assert_allclose(q, g["Q"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(q.argmax(0), g["pred"])
    assert (g["pred"] != g["pred_no_crf"]).sum() > 0  # the CRF does change the labels here


def test_crf_label_all_channels_is_golden_pred(g):
    label = crf_label(g["image"], g["prob"], params=CRFParams.SEG)
    assert label.dtype == np.int64
    np.testing.assert_array_equal(label, g["pred"])


def test_presets():
    assert dataclasses.astuple(CRFParams.SEG) == (10, 1, 1, 121, 5, 4)
    assert dataclasses.astuple(CRFParams.TOCO_LABEL) == (10, 3, 3, 36, 3, 4)
    assert dataclasses.astuple(CRFParams.PSA) == (10, 3, 3, 80, 13, 10)
    assert CRFParams() == CRFParams.SEG
    assert CRFParams.SEG.as_kwargs() == dict(iters=10, pos_xy_std=1, pos_w=1, bi_xy_std=121, bi_rgb_std=5, bi_w=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        CRFParams.SEG.iters = 3  # type: ignore[misc]


def test_config_section_is_the_crf_params():
    """``infer.crf`` is the CRFParams the CRF takes (one concept, no field-by-field copy in between)."""
    cfg = load_config(None, ["infer.crf.bi_w=7", "infer.crf.iters=3"])
    assert type(cfg.infer.crf) is CRFParams
    assert cfg.infer.crf == dataclasses.replace(CRFParams.SEG, bi_w=7.0, iters=3)
    assert load_config(None).infer.crf == CRFParams.SEG
    with pytest.raises(ConfigError, match="infer.crf.bi_ww"):
        load_config(None, ["infer.crf.bi_ww=1"])


def _toy(seed: int, c: int = 5, h: int = 20, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    logits = rng.normal(size=(c, h, w)).astype(np.float32)
    logits[3, :, : w // 2] += 4.0  # an absent class dominating half of the image
    prob = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    return image, prob.astype(np.float32)


def test_crf_label_never_outputs_absent_class():
    image, prob = _toy(0)
    full = crf_label(image, prob)
    assert (full == 3).any()
    label = crf_label(image, prob, present=[0, 4, 1])
    assert set(np.unique(label).tolist()) <= {0, 1, 4}
    # overrides reach dense_crf; unknown names are rejected
    crf_label(image, prob, present=[0, 1], params=CRFParams.PSA, iters=2)
    with pytest.raises(TypeError):
        crf_label(image, prob, present=[0, 1], foo=1)


def test_crf_label_single_channel_and_bad_ids():
    image, prob = _toy(1)
    assert (crf_label(image, prob, present=[2]) == 2).all()
    with pytest.raises(ValueError):
        crf_label(image, prob, present=[0, 7])


def test_crf_pool_two_workers_matches_in_process():
    items = []
    for i in range(6):
        image, prob = _toy(10 + i)
        items.append((f"img{i}", image, prob, [0, 1, 2] if i % 2 else None))
    with CRFPool(0, params=CRFParams.TOCO_LABEL) as pool:
        ref = list(pool.imap(iter(items)))
    with CRFPool(2, params=CRFParams.TOCO_LABEL, max_pending=2) as pool:
        consumed = []

        def stream():
            for it in items:
                consumed.append(it[0])
                yield it

        got = []
        for key, label in pool.imap(stream()):
            if not got:  # bounded: not more than max_pending + 1 items pulled before the first result
                assert len(consumed) <= 3
            got.append((key, label))
    assert [k for k, _ in got] == [k for k, _ in ref] == [it[0] for it in items]
    for (_, a), (_, b) in zip(got, ref):
        np.testing.assert_array_equal(a, b)


def ring_toy(channel: int, ring: float) -> tuple[np.ndarray, np.ndarray]:
    """A 40x40 image of three nested colour regions and a (3, 40, 40) CAM: ``channel`` confident (1) in the
    centre square, ``ring`` in the ring around it, 0 outside; channel 0 (absent) scores 0.9 everywhere."""
    image = np.full((40, 40, 3), 20, dtype=np.uint8)
    image[4:36, 4:36] = 120
    image[12:28, 12:28] = 230
    cam = np.zeros((3, 40, 40), dtype=np.float32)
    cam[channel, 4:36, 4:36] = ring
    cam[channel, 12:28, 12:28] = 1.0
    cam[0] = 0.9
    return image, cam


def test_crf_label_two_levels_toy():
    # class 2 (channel 1): confident square (cam 1), uncertain ring (0.5), bg (0) elsewhere, each
    # region with its own colour; channel 0 is absent but has high scores and must never appear.
    h = w = 40
    image, cam = ring_toy(channel=1, ring=0.5)
    label = crf_label_two_levels(image, cam, np.array([0.0, 1.0, 0.0]), 0.7, 0.25)
    assert label.dtype == np.int64 and label.shape == (h, w)
    assert set(np.unique(label).tolist()) <= {0, 2, 255}
    assert (label[14:26, 14:26] == 2).all()
    assert (label[:2] == 0).all()
    assert (label[6:9, 6:34] == 255).all()
    no_fg = crf_label_two_levels(image, cam, np.zeros(3), 0.7, 0.25)
    assert (no_fg == 0).all()


def test_crf_label_psa_toy():
    # PSA's la/ha seeds (docs/methods/affinitynet.md#psa-seeds): class 3 (channel 2) confident in the centre
    # (cam 1), weak in a ring (0.2), absent outside. la (alpha 4): bg 0.8^4 = 0.41 beats 0.2 -> the ring is
    # not confident foreground; ha (alpha 32): bg 0.8^32 < 0.2 -> nor confident background: 255. ToCo's
    # two-level rule (constant bg 0.25) calls the same ring background.
    h = w = 40
    image, cam = ring_toy(channel=2, ring=0.2)  # channel 0: absent, never output
    present = np.array([0.0, 0.0, 1.0])
    label = crf_label_psa(image, cam, present)
    assert label.dtype == np.int64 and label.shape == (h, w)
    assert set(np.unique(label).tolist()) <= {0, 3, 255}
    assert (label[14:26, 14:26] == 3).all()
    assert (label[6:9, 6:34] == 255).all()
    assert (label[:2] == 0).all()
    assert (crf_label_two_levels(image, cam, present, 0.7, 0.25)[6:9, 6:34] == 0).all()

    # the rule itself, against the two CRFs computed here (unnormalised [bg; present] stacks, PSA params)
    def crf_argmax(alpha):
        stack = np.concatenate([(1 - cam[2:3]) ** alpha, cam[2:3]])
        return np.array([0, 3])[dense_crf(image, stack, **CRFParams.PSA.as_kwargs()).argmax(0)]

    la, ha = crf_argmax(4.0), crf_argmax(32.0)
    np.testing.assert_array_equal(label, np.where(ha == 0, 0, np.where(la == 0, 255, la)))
    # other exponents move the confident-background border
    assert (crf_label_psa(image, cam, present, alphas=(4.0, 4.0))[6:9, 6:34] == 0).all()
    assert (crf_label_psa(image, cam, np.zeros(3)) == 0).all()
    with pytest.raises(ValueError, match="does not match"):
        crf_label_psa(image, cam[:2], present)


@pytest.mark.parametrize(
    ("cores", "local", "expected"),
    [(16, None, 16), (16, "4", 4), (2, None, 2), (1, None, 0), (3, "2", 0), (8, "junk", 8)],
)
def test_crf_workers_default_is_every_core(monkeypatch, cores, local, expected):
    """infer.crf_workers = -1 (the default): one CRF worker per core this process may use, shared out among
    a job's local processes (torchrun's or --workers' LOCAL_WORLD_SIZE); a lone core keeps the CRF in-process."""
    from wsss.cam.crf import crf_workers
    from wsss.core.config import Config

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    if local is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert Config().infer.crf_workers == -1
    assert crf_workers(-1) == expected
    assert crf_workers(0) == 0 and crf_workers(5) == 5


def test_crf_pool_of_every_core_matches_in_process(monkeypatch):
    """The default pool's labels are those of the CRF in the main process, photo for photo (the same call on the same
    arrays: equal, not close)."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    items = [(f"img{i}", *_toy(20 + i), [0, 1, 2] if i % 2 else None) for i in range(4)]
    with CRFPool(0, params=CRFParams.SEG) as pool:
        ref = list(pool.imap(iter(items)))
    with CRFPool(-1, params=CRFParams.SEG) as pool:
        assert pool.workers == 2
        got = list(pool.imap(iter(items)))
    assert [k for k, _ in got] == [k for k, _ in ref]
    for (_, a), (_, b) in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_crf_workers_below_minus_one_is_a_config_error():
    assert load_config(None, ["infer.crf_workers=-1"]).infer.crf_workers == -1
    with pytest.raises(ConfigError, match=r"infer.crf_workers must be -1 \(every core\) or 0 or more, got -2"):
        load_config(None, ["infer.crf_workers=-2"])
