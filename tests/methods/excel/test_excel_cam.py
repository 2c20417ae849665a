"""ExCEL's attention refinement (``wsss.methods.excel.cam``) on cases small enough to work by hand: the switches and the
trained route reach the result, and an image with no labelled class still gets its (background) label.

With a uniform attention every step of the transition matrix keeps it uniform (1/N), so the refined map is
``sum of the map over the boxed columns / N`` at every patch: the boxes decide the result alone."""

from __future__ import annotations

import pytest
import torch

from wsss.cam.par import PAR
from wsss.methods.excel.cam import attention_affinity, labels_from_maps, labels_from_refined, refine_with_attention


def _uniform_attention(layers: int, n: int) -> torch.Tensor:
    return torch.ones(layers, 1 + n, 1 + n, dtype=torch.float64)


@pytest.mark.parametrize(("box_edge_loss", "boxed"), [(True, 2), (False, 6)])
def test_box_edge_loss_reaches_the_refined_map(box_edge_loss, boxed):
    """Q16: the map is 1 on rows 1-3, columns 2-3 of a 4x4 grid (touching the right and bottom edges). The
    official box loses its last row and column (rows 1-2, column 2: 2 patches); the intended one keeps all 6."""
    cam = torch.zeros(4, 4, dtype=torch.float64)
    cam[1:, 2:] = 1.0
    refined = refine_with_attention(cam.reshape(16, 1), _uniform_attention(12, 16), (4, 4), box_edge_loss=box_edge_loss)
    assert refined.shape == (1, 4, 4) and refined.dtype == torch.float32
    # float32 matmul of 16 terms of 1/16 (exact binary fractions): the sum is exact
    torch.testing.assert_close(refined, torch.full((1, 4, 4), boxed / 16), rtol=0, atol=0)


def test_trained_route_keeps_the_layers_nearest_the_decoder_and_weights_by_it():
    """docs/methods/excel.md#layer-selection: of the last ``layers`` maps, those whose summed difference to the
    decoder's attention is at most the mean are averaged (+1e-5 in the count), then multiplied by it. Layers 0.1 and 0.5
    against a decoder attention of 0.3: differences +3.2 and -3.2, mean 0, only the 0.5 layer is kept; the first layer
    (100) is outside the last two and never counts."""
    n = 4
    attn = _uniform_attention(3, n)
    attn[0] *= 100.0
    attn[1] *= 0.1
    attn[2] *= 0.5
    seg_attn = torch.full((n, n), 0.3, dtype=torch.float64)
    torch.testing.assert_close(attention_affinity(attn, layers=2), torch.full((n, n), 0.3, dtype=torch.float64))
    expected = torch.full((n, n), 0.5 / (1 + 1e-5) * 0.3, dtype=torch.float64)
    torch.testing.assert_close(attention_affinity(attn, layers=2, seg_attn=seg_attn), expected, rtol=1e-15, atol=0)


def test_an_image_without_labelled_classes_is_all_background():
    """Valid data: no foreground class gives no refined map and a label of background only, not an error."""
    refined = refine_with_attention(torch.rand(16, 0), _uniform_attention(12, 16), (4, 4))
    assert refined.shape == (0, 4, 4)
    label = labels_from_refined(
        refined, torch.zeros(0, dtype=torch.long), torch.rand(3, 32, 32), (32, 40), PAR((1, 2), 3)
    )
    assert label.shape == (32, 40) and label.dtype == torch.int64 and int(label.abs().sum()) == 0


def test_refinement_under_autocast_returns_float32():
    """ExCEL's online labels under ``run.amp`` (bf16 autocast on a GPU): the refinement's matrix products come out in
    bfloat16, which NumPy cannot hold (`TypeError: Got unsupported ScalarType BFloat16`, seen on an H200). The CPU's
    autocast does the same to them. The uniform case above: 2 boxed patches of 1/16, exact in bfloat16."""
    cam = torch.zeros(4, 4, dtype=torch.float64)
    cam[1:, 2:] = 1.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        refined = refine_with_attention(cam.reshape(16, 1), _uniform_attention(12, 16), (4, 4), box_edge_loss=True)
    assert refined.dtype == torch.float32
    torch.testing.assert_close(refined, torch.full((1, 4, 4), 2 / 16), rtol=0, atol=0)


@pytest.mark.parametrize("classes", [[3, 7], []])
def test_the_labels_are_refined_on_the_device_of_the_image(classes):
    """In training the image is on the GPU, and PAR runs there, as in the official code: on the CPU it took 0.7 s
    of each image (an H100's ExCEL iteration was 3.7-4x the official one). The maps come from the CPU (boxes and
    resizing by OpenCV); the "meta" device stands in for the GPU: a step that copied the image back to the CPU
    (the earlier code) raises, and the labels come out on the image's device."""
    maps = torch.rand(len(classes), 16, 16)
    guide = torch.empty(3, 16, 16, device="meta")
    label = labels_from_maps(maps, torch.tensor(classes, dtype=torch.long), guide, PAR((1, 2), 3))
    assert label.device.type == "meta" and label.shape == (16, 16) and label.dtype == torch.int64


@pytest.mark.parametrize("par_on_normalized", [True, False])
def test_training_free_labels_are_refined_on_the_methods_device(tmp_path, monkeypatch, par_on_normalized):
    """``wsss pseudo --refine excel`` (``Excel.pseudo_label``): PAR runs where the method runs, as the official
    training-free labels do on the GPU (tools/infer_lam.py:168); on an H100 machine it ran on the CPU, 6.1 s of CPU
    an image (BENCHMARKS.md, "On a GPU"). The "meta" device stands in for the GPU: the image PAR reads (the
    normalised input, Q4, or the photo in [0, 1]) must reach it there; the earlier code gave it on the CPU."""
    import numpy as np

    import wsss.methods.excel as excel
    from excel_golden import voc_method

    method = voc_method(tmp_path, quirk_par_on_normalized=str(par_on_normalized).lower())
    method.decoder.to("meta")
    seen = []

    def refine(maps, classes, guide, par):  # labels_from_maps, recording where PAR would run
        seen.append(guide.device.type)
        return torch.zeros(guide.shape[-2:], dtype=torch.long)

    monkeypatch.setattr(excel, "labels_from_maps", refine)
    image = np.zeros((20, 24, 3), dtype=np.uint8)
    label = method.pseudo_label(image, np.array([2]), np.zeros((1, 20, 24), dtype=np.float32))
    assert seen == ["meta"] and isinstance(label, np.ndarray)
