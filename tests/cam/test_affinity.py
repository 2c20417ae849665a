"""cam/affinity.py (PSA's affinity, docs/methods/affinitynet.md#train-aff): search offsets and pairs against
their definition, affinity labels by hand, the pairwise affinity and loss against loops, the dense affinity
and random walk against a dense reference, and a walk that stays inside its region."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsss.cam.affinity import (
    affinity_labels,
    affinity_loss,
    alpha_for_level,
    background_cam,
    dense_affinity,
    pair_indices,
    pairwise_affinity,
    random_walk,
    random_walk_scores,
    search_offsets,
    transition_matrix,
)
from wsss.core.errors import UsageError


def brute_pairs(h: int, w: int, radius: int, interior: bool) -> set[tuple[int, int]]:
    """Every (source, target) pair by definition: target within the radius in the half-plane
    (dy > 0, or dy == 0 and dx > 0); PSA's sources are the interior pixels only."""
    rf = radius - 1
    pairs = set()
    for y in range(h):
        for x in range(w):
            if interior and not (y < h - rf and rf <= x < w - rf):
                continue
            for dy in range(0, radius):
                for dx in range(-rf, radius):
                    if (dy == 0 and dx <= 0) or dx * dx + dy * dy >= radius * radius:
                        continue
                    ty, tx = y + dy, x + dx
                    if 0 <= ty < h and 0 <= tx < w:
                        pairs.add((y * w + x, ty * w + tx))
    return pairs


def test_search_offsets_psa():
    offs = search_offsets(5)
    assert len(offs) == 34  # 4 on the row + 9 + 9 + 7 + 5 below
    assert offs[:4] == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert offs[4] == (1, -4) and offs[-1] == (4, 2)
    assert search_offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]


@pytest.mark.parametrize("h,w", [(9, 12), (16, 16)])
def test_pair_indices_match_definition(h, w):
    src, dst = pair_indices(h, w, 5)
    got = {(int(s), int(d)) for k in range(dst.shape[0]) for s, d in zip(src, dst[k])}
    assert len(got) == dst.numel()  # no duplicates
    assert got == brute_pairs(h, w, 5, interior=True)
    # all-sources variant: the valid pairs on the padded grid are every pair within the radius, once
    lab = torch.zeros(h, w, dtype=torch.long)
    bg, fg, neg = affinity_labels(lab, 5, interior_sources=False)
    assert int(bg.sum()) == len(brute_pairs(h, w, 5, interior=False))
    assert int(bg.sum()) > dst.numel() and not fg.any() and not neg.any()


def test_affinity_labels_hand_made():
    # radius 2: offsets (0,1), (1,-1), (1,0), (1,1); sources are (0,1) [label 0] and (0,2) [label 1]
    label = torch.tensor([[0, 0, 1, 255], [0, 1, 1, 2]])
    src, dst = pair_indices(2, 4, 2)
    assert src.tolist() == [1, 2]
    assert dst.tolist() == [[2, 3], [4, 5], [5, 6], [6, 7]]
    bg, fg, neg = affinity_labels(label, 2)
    # (0,1)->(0,2): 0|1 neg; ->(1,0): 0|0 bg; ->(1,1): 0|1 neg; ->(1,2): 0|1 neg
    # (0,2)->(0,3): 1|255 invalid; ->(1,1): 1|1 fg; ->(1,2): 1|1 fg; ->(1,3): 1|2 neg
    assert bg.int().tolist() == [[0, 0], [1, 0], [0, 0], [0, 0]]
    assert fg.int().tolist() == [[0, 0], [0, 1], [0, 1], [0, 0]]
    assert neg.int().tolist() == [[1, 0], [0, 0], [1, 0], [1, 1]]
    # batched input gives the same per image
    bg2, _, neg2 = affinity_labels(torch.stack([label, label]), 2)
    assert torch.equal(bg2[1], bg) and torch.equal(neg2[0], neg)


def test_pairwise_affinity_and_loss_against_loops():
    g = torch.Generator().manual_seed(0)
    feat = torch.rand(2, 3, 6, 10, generator=g)
    aff = pairwise_affinity(feat, 3)
    src, dst = pair_indices(6, 10, 3)
    flat = feat.flatten(2)
    for b in range(2):
        for k in range(dst.shape[0]):
            for p in range(src.numel()):
                want = math.exp(-float((flat[b, :, src[p]] - flat[b, :, dst[k, p]]).abs().mean()))
                assert abs(float(aff[b, k, p]) - want) < 1e-6
    label = torch.randint(0, 3, (2, 6, 10), generator=g)
    label[:, 0, :3] = 255
    bg, fg, neg = affinity_labels(label, 3)
    terms = affinity_loss(aff, bg, fg, neg)
    a = aff.double().numpy()
    for name, mask, val in (
        ("aff_bg", bg, np.log(a + 1e-5)),
        ("aff_fg", fg, np.log(a + 1e-5)),
        ("aff_neg", neg, np.log(1 + 1e-5 - a)),
    ):
        m = mask.numpy()
        assert m.sum() > 0
        assert abs(float(terms[name]) - (-(val * m).sum() / (m.sum() + 1e-5))) < 1e-5


@pytest.mark.parametrize("interior", [True, False])
def test_dense_affinity_and_random_walk_against_dense_reference(interior):
    g = torch.Generator().manual_seed(1)
    h, w, r = 5, 7, 3
    feat = torch.rand(4, h, w, generator=g, dtype=torch.float64)
    a = dense_affinity(feat, r, interior_sources=interior)
    ref = torch.eye(h * w, dtype=torch.float64)
    flat = feat.reshape(4, -1)
    for s, d in brute_pairs(h, w, r, interior):
        ref[s, d] = ref[d, s] = torch.exp(-(flat[:, s] - flat[:, d]).abs().mean())
    assert torch.allclose(a, ref, atol=1e-12)
    beta, logt = 8.0, 3
    t = transition_matrix(a, beta)
    assert torch.allclose(t.sum(0), torch.ones(h * w, dtype=torch.float64))
    cam = torch.rand(3, h * w, generator=g, dtype=torch.float64)
    direct = ref.pow(beta) / ref.pow(beta).sum(0, keepdim=True)
    want = cam @ torch.linalg.matrix_power(direct, 2**logt)
    assert torch.allclose(random_walk(cam, t, logt), want, atol=1e-10)


def test_random_walk_stays_in_its_region():
    """Two regions of very different features: the walk spreads scores inside each, not across."""
    h, w = 8, 12
    feat = torch.zeros(2, h, w)
    feat[:, :, 6:] = 50.0  # affinity across the border ~ exp(-50)
    cam = torch.zeros(2, h, w)
    cam[0, 2, 2] = 1.0  # one confident pixel of class 1 on the left
    cam[1, 5, 9] = 1.0  # and of class 2 on the right
    scores = background_cam(cam, 16.0)
    out = random_walk_scores(scores, feat, beta=8, logt=6, radius=3, interior_sources=False)
    assert out.shape == (3, h, w)
    left, right = out[:, :, :5], out[:, :, 7:]
    assert float(left[2].max()) < 1e-6 and float(right[1].max()) < 1e-6
    assert float(left[1].min()) > 0 and float(right[2].min()) > 0


@pytest.mark.parametrize("level", [0.077, 0.2755, 0.5, 0.6, 0.9])
def test_alpha_for_level_puts_the_psa_background_at_that_cam(level):
    """``(1 - c)^alpha`` crosses ``c`` at the level: a one-class pixel just below it is background in
    ``background_cam``, just above it its class."""
    alpha = alpha_for_level(level)
    assert (1.0 - level) ** alpha == pytest.approx(level, rel=1e-12)
    cam = torch.tensor([level - 1e-3, level + 1e-3], dtype=torch.float64).view(1, 1, 2)
    assert background_cam(cam, alpha).argmax(0).view(-1).tolist() == [0, 1]


def test_alpha_for_level_recovers_psas_alphas():
    """PSA's la / ha alphas 4 / 32 are the CAM levels 0.2755 / 0.077 (to the digits given)."""
    assert alpha_for_level(0.2755) == pytest.approx(4.0, abs=2e-3)
    assert alpha_for_level(0.077) == pytest.approx(32.0, abs=0.1)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5])
def test_alpha_for_level_refuses_a_level_outside_the_open_unit_interval(level):
    with pytest.raises(UsageError, match="--levels"):  # a one-line CLI error, not a traceback
        alpha_for_level(level)
