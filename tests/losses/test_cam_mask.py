"""The CAMs' pixel loss on a user's own masks (``wsss.losses.cam_mask_loss``, docs/own-photos.md#how-many-masks),
against a float64 reference written pixel by pixel."""

from __future__ import annotations

import math

import pytest
import torch

from wsss.losses import cam_mask_loss


def _reference(cam, target, labels, weight):
    """The loss by loops: per photo, the mean BCE over (labelled class, labelled pixel); photos averaged by weight."""
    up = torch.nn.functional.interpolate(cam, size=target.shape[-2:], mode="bilinear", align_corners=False)
    num = den = 0.0
    for b in range(cam.shape[0]):
        total, count = 0.0, 0
        for c in range(cam.shape[1]):
            if labels[b, c] < 0.5:
                continue
            for y in range(target.shape[1]):
                for x in range(target.shape[2]):
                    t = int(target[b, y, x])
                    if t == 255:
                        continue
                    z, truth = float(up[b, c, y, x]), 1.0 if t == c + 1 else 0.0
                    total += max(z, 0) - z * truth + math.log1p(math.exp(-abs(z)))  # BCE with logits, stable
                    count += 1
        if count:
            num += float(weight[b]) * total / count
            den += float(weight[b])
    return num / den


def test_cam_mask_loss_matches_the_pixel_by_pixel_reference():
    g = torch.Generator().manual_seed(0)
    cam = torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64)
    target = torch.randint(0, 5, (3, 6, 6), generator=g)
    target[0, :2] = 255
    target[2] = 255  # a photo without a mask: weight 0 below, and no labelled pixel either
    labels = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    weight = torch.tensor([1.0, 3.0, 0.0], dtype=torch.float64)
    # the loss upsamples in float32 (cam.float(), as under autocast): a float64 reference of float32 arithmetic on
    # values of order 1 agrees to ~1e-6; 1e-5 leaves room for another CPU's kernels
    got = cam_mask_loss(cam, target, labels, weight)
    assert got.item() == pytest.approx(_reference(cam.float().double(), target, labels, weight), abs=1e-5)
    # the weight counts: photo 1 alone, whatever its weight
    alone = cam_mask_loss(cam, target, labels, torch.tensor([0.0, 7.0, 0.0]))
    assert alone.item() == pytest.approx(
        _reference(cam[1:2].float().double(), target[1:2], labels[1:2], torch.ones(1)), abs=1e-5
    )


def test_cam_mask_loss_teaches_the_class_map_its_pixels_and_nothing_without_a_mask():
    cam = torch.zeros(1, 2, 4, 4, requires_grad=True)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :, :2] = 1  # class 1 (channel 0) on the left half
    cam_mask_loss(cam, target, torch.tensor([[1.0, 0.0]]), torch.ones(1)).backward()
    grad = cam.grad[0]
    assert bool((grad[0, :, :1] < 0).all()) and bool((grad[0, :, 3:] > 0).all())  # raised left, lowered right
    assert bool((grad[1] == 0).all())  # the class the photo is not labelled with: untouched
    # no masked photo in the batch: 0, still a tensor of the graph
    cam.grad = None
    zero = cam_mask_loss(cam, target, torch.tensor([[1.0, 0.0]]), torch.zeros(1))
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="cam_mask_loss expects"):
        cam_mask_loss(cam, target, torch.ones(1, 3), torch.ones(1))
