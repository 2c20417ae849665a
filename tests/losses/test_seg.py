"""PMM's pretended under-fitting (``methods.deeplab.pus``) on losses small enough to work by hand."""

from __future__ import annotations

import pytest
import torch

from wsss.methods.deeplab.pus import pretended_underfitting

# four labelled pixels (mean 0.4) and two ignored ones (their loss 0, as cross entropy gives them)
LOSS = torch.tensor([0.1, 0.2, 0.3, 1.0, 0.0, 0.0], dtype=torch.float64)
LABELLED = torch.tensor([True, True, True, True, False, False])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("clamp", [0.1, 0.2, 0.3, 0.5, 0.0, 0.0]),
        ("ignore", [0.1, 0.2, 0.3, 0.0, 0.0, 0.0]),
        ("pow", [(v + 1e-9) ** 0.5 for v in [0.1, 0.2, 0.3, 1.0, 0.0, 0.0]]),
    ],
)
def test_below_beta_each_pixel_is_pretended_underfitted(mode, expected):
    out = pretended_underfitting(LOSS, LABELLED, mode, beta=0.5, k=0.5)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_at_or_above_beta_the_loss_is_unchanged():
    assert pretended_underfitting(LOSS, LABELLED, "clamp", beta=0.4, k=0.5) is LOSS  # mean 0.4: not below
    assert pretended_underfitting(LOSS, LABELLED, "clamp", beta=0.3, k=0.5) is LOSS


def test_the_trigger_averages_the_labelled_pixels_only():
    """Over all six pixels the mean is 0.267, below 0.3 (PMM's mmseg reduction would trigger); over the four
    labelled ones it is 0.4: unchanged here."""
    assert float(LOSS.mean()) < 0.3
    assert pretended_underfitting(LOSS, LABELLED, "clamp", beta=0.3, k=0.2) is LOSS
    none = torch.zeros(6, dtype=torch.bool)
    assert pretended_underfitting(LOSS, none, "clamp", beta=0.5, k=0.2) is LOSS  # nothing labelled: as it is


def test_a_clamped_pixel_stops_pulling_the_network():
    loss = LOSS.clone().requires_grad_()
    pretended_underfitting(loss, LABELLED, "clamp", beta=0.5, k=0.5).sum().backward()
    assert loss.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="clamp"):
        pretended_underfitting(LOSS, LABELLED, "cap", beta=0.5, k=0.5)


def test_generalized_cross_entropy_spans_the_cross_entropy_and_the_absolute_error():
    # (1 - p^q) / q: at q -> 0 the cross entropy (-ln p, off by about q (ln p)^2 / 2), at q = 1 the absolute error
    # 1 - p; its gradient is the cross entropy's times p^q (a pixel the network contradicts pulls less); 0 at 255
    import torch.nn.functional as F

    from wsss.losses.seg import generalized_ce_pixels

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 3, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, 5, (2, 4, 3), generator=g)
    target[0, 0, 0] = 255
    labelled = target != 255
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    p = torch.exp(-ce)
    q = 1e-7
    bound = q * (ce**2).max() / 2 + 1e-8  # the expansion's next term, and float64 cancellation in 1 - p^q
    assert torch.allclose(generalized_ce_pixels(logits, target, q), ce, atol=float(bound), rtol=0)
    one = generalized_ce_pixels(logits, target, 1.0)
    assert torch.allclose(one[labelled], (1 - p)[labelled]) and one[0, 0, 0] == 0
    x = logits.clone().requires_grad_(True)
    generalized_ce_pixels(x, target, 0.7).sum().backward()
    y = logits.clone().requires_grad_(True)
    (F.cross_entropy(y, target, ignore_index=255, reduction="none") * p.pow(0.7)).sum().backward()
    assert torch.allclose(x.grad, y.grad) and x.grad[0, :, 0, 0].abs().max() == 0
