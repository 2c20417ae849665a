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
