"""ExCEL's frozen-CLIP side (docs/methods/excel.md#spec) against the official code's recordings
(tests/golden/README.md#excel_text, #excel_training_free, #excel_train_step): the text and its
enrichment (TSE), the surgery forward (SVC) with every block, the patch-text maps, the decoder, LVC.

Float64 runs against the ``__f64run`` companions; float32 with tolerances from the recorded spreads
(``excel_golden.f32_tol``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from excel_golden import FixedDropout2d, decoder_state, f32_tol, normalized_batch, npz, tiny_clip, voc_method
from wsss.cam.clip_es import text_features
from wsss.methods.excel.model import (
    ExcelDecoder,
    ExcelModelQuirks,
    descriptor_embeddings,
    enrich_text,
    feature_surgery,
    kmeans_bank,
    surgery_forward,
)
from wsss.models.clip import tokenize

TEXT, TF, STEP = "excel_text.npz", "excel_training_free.npz", "excel_train_step.npz"
OFFICIAL = ExcelModelQuirks()
F64_TOL = 1e-12  # float64 against the official float64 run: measured at most 1e-14 (sums of ~512 terms)


def _check(actual: torch.Tensor, file: str, key: str, dtype: torch.dtype) -> None:
    data = npz(file)
    if dtype == torch.float64 and f"{key}__f64run" in data:
        np.testing.assert_allclose(actual.detach().double().numpy(), data[f"{key}__f64run"], rtol=0, atol=F64_TOL)
    else:
        np.testing.assert_allclose(actual.detach().float().numpy(), data[key], rtol=0, atol=f32_tol(file, key))


def _descriptions() -> dict[str, list[str]]:
    t = npz(TEXT)
    sentences, owner = [str(s) for s in t["desc_sentences_lower"]], t["desc_class_idx"]
    return {str(k): [s for s, o in zip(sentences, owner) if o == j] for j, k in enumerate(t["desc_class_keys"])}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_golden_excel_text_side(dtype):
    """Prompt tokens and features, descriptor embeddings, the k-means bank, and every TSE step's result."""
    t, clip = npz(TEXT), tiny_clip(dtype)
    names, template = [str(n) for n in t["prompt_class_names"]], [str(x) for x in t["prompt_template"]]
    assert (tokenize([template[0].format(n) for n in names]).numpy() == t["prompt_tokens"]).all()
    _check(text_features(clip, names, template), TEXT, "integral_text_features", dtype)
    emb = descriptor_embeddings(clip, _descriptions())
    _check(emb, TEXT, "desc_embeddings_normed", dtype)
    suffix = "__f64run" if dtype == torch.float64 else ""
    text = torch.from_numpy(t["integral_text_features" + suffix]).to(dtype)
    bank = torch.from_numpy(t["attr_bank" + suffix]).to(dtype)
    _check(enrich_text(text, bank, 20, keep_ratio=0.9).t(), TEXT, "text_attr", dtype)


def test_golden_excel_kmeans_bank_with_this_scikit_learn():
    """The bank of the recorded descriptor embeddings: with scikit-learn 1.9.1 (the recording's) the recorded
    centres. Another version may draw other centres (docs/methods/excel.md#q12: why a run keeps the bank it
    computed); what holds for any is a converged k-means: each centre is the mean of the embeddings nearest to it."""
    import sklearn

    t = npz(TEXT)
    emb = torch.from_numpy(t["desc_embeddings_normed"]).double()
    bank = kmeans_bank(emb, 112, seed=0)
    assert bank.shape == (32, 112)
    if sklearn.__version__ == "1.9.1":
        np.testing.assert_allclose(bank.numpy(), t["attr_bank"], rtol=0, atol=f32_tol(TEXT, "attr_bank"))
    nearest = torch.cdist(emb, bank.t()).argmin(dim=1)
    means = torch.stack([emb[nearest == j].mean(0) for j in range(112)], dim=1)
    np.testing.assert_allclose(bank.numpy(), means.numpy(), rtol=0, atol=1e-6)  # sklearn's tol 1e-4 on shifts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("i", [0, 1])
def test_golden_excel_surgery_forward_and_maps(i, dtype):
    """SVC with all 12 blocks: the attention of every block, every block's tokens as the decoder reads them
    (the in-place aliasing of Q8), the token-normalised features, the surgery maps."""
    f, clip = npz(TF), tiny_clip(dtype)
    x = torch.from_numpy(f[f"img{i}_model_input"]).to(dtype)
    feats, attn, layers = surgery_forward(clip, x, OFFICIAL)
    _check(feats, TF, f"img{i}_image_features_tokennormed", dtype)
    _check(attn, TF, f"img{i}_attn_weights", dtype)
    _check(layers, TF, f"img{i}_all_feats", dtype)
    suffix = "__f64run" if dtype == torch.float64 else ""
    text = torch.from_numpy(npz(TEXT)["text_attr" + suffix]).to(dtype).t()
    maps = feature_surgery(feats, text, OFFICIAL)
    _check(maps, TF, f"img{i}_surg_attr_maps_all", dtype)
    _check(maps[:, 1:, :20], TF, f"img{i}_attr_maps_raw", dtype)


def test_golden_excel_true_block_outputs_without_the_aliasing():
    """``inplace_alias=False``: blocks 6..10 are their outputs at the moment they were made (recorded)."""
    f = npz(TF)
    _, _, layers = surgery_forward(
        tiny_clip(), torch.from_numpy(f["img0_model_input"]), ExcelModelQuirks(inplace_alias=False)
    )
    np.testing.assert_allclose(
        layers[6:11].numpy(), f["img0_block_out_at_append_L6to10"], rtol=0, atol=f32_tol(TF, "img0_all_feats")
    )
    assert not np.allclose(layers[6:11].numpy(), f["img0_all_feats"][6:11], atol=1e-3)  # the aliasing is real


def _decoder(prefix: str, keep: np.ndarray | None = None) -> ExcelDecoder:
    dec = ExcelDecoder(in_channels=128, embedding_dim=32, num_layers=12, num_classes=21)
    dec.load_state_dict(decoder_state(prefix))
    if keep is not None:
        dec.fuse.dropout = FixedDropout2d(keep)
    return dec


@pytest.mark.parametrize("i", [0, 1])
def test_golden_excel_decoder_in_eval_mode(i):
    """The training-free recording's decoder outputs: the decoder at its recorded init, eval mode."""
    f = npz(TF)
    _, _, layers = surgery_forward(tiny_clip(), torch.from_numpy(f[f"img{i}_model_input"]), OFFICIAL)
    seg, fts, attn_pred = _decoder("init__").eval()(layers, (10, 10))
    _check(fts, TF, f"img{i}_decoder_fts", torch.float32)
    _check(seg, TF, f"img{i}_seg", torch.float32)
    _check(attn_pred, TF, f"img{i}_attn_pred", torch.float32)


@pytest.mark.parametrize("k", [0, 1])
def test_golden_excel_training_forward_and_lvc(k):
    """A training batch (320-px crops, a 20x20 grid): the decoder in training mode with the recorded Dropout2d
    channels, its attention (every 20th row recorded), the model's maps and, at n_iter 14000, the LVC maps."""
    s = npz(STEP)
    method = voc_method_cached()
    x = normalized_batch(s[f"it{k}_inputs_uint8_nhwc"])
    enc = method.encode(x)
    _check(enc["maps"], STEP, f"it{k}_attr_maps_raw_model", torch.float32)
    seg, fts, attn_pred = _decoder("init__" if k == 0 else "it1_before__", s[f"it{k}_dropout2d_keep"]).train()(
        enc["all_feats"], (20, 20)
    )
    _check(seg, STEP, f"it{k}_segs_raw", torch.float32)
    _check(fts, STEP, f"it{k}_fts_diver", torch.float32)
    _check(attn_pred[:, ::20], STEP, f"it{k}_attn_pred_rows_every20", torch.float32)
    if k == 1:
        _check(method.encode(x, ex_feats=fts)["maps"], STEP, "it1_attr_maps_raw_cure_lvc", torch.float32)


_METHOD: list = []


def voc_method_cached():
    """The voc.yaml method on the tiny CLIP (built once per session: its text features are cached inside)."""
    import tempfile
    from pathlib import Path

    if not _METHOD:
        _METHOD.append(voc_method(Path(tempfile.mkdtemp())))
    return _METHOD[0]


def test_quirk_switches_change_the_model_side_as_specified():
    """Q7: the returned surgery attention sums the heads (rows sum to 2 heads) or averages them (rows sum to 1);
    Q5: the features are unit vectors over the channels only when corrected; Q6: without the CLS row in the
    min-max, the patch maps reach 0 and 1 exactly."""
    f, clip = npz(TF), tiny_clip()
    x = torch.from_numpy(f["img0_model_input"])
    fixed = ExcelModelQuirks(inplace_alias=False, heads_summed=False, token_axis_norm=False, cls_in_minmax=False)
    feats_o, attn_o, _ = surgery_forward(clip, x, OFFICIAL)
    feats_c, attn_c, _ = surgery_forward(clip, x, fixed)
    assert torch.allclose(attn_o[-1].sum(-1), torch.full((1, 101), 2.0), atol=1e-5)
    assert torch.allclose(attn_c[-1].sum(-1), torch.ones(1, 101), atol=1e-5)
    assert torch.allclose(feats_c.norm(dim=-1), torch.ones(1, 101), atol=1e-5)
    assert not torch.allclose(feats_o.norm(dim=-1), torch.ones(1, 101), atol=1e-2)
    text = torch.from_numpy(npz(TEXT)["text_attr"]).t()
    patch = feature_surgery(feats_c, text, fixed)[:, 1:]
    assert torch.allclose(patch.amin(1), torch.zeros(1, 45)) and torch.allclose(patch.amax(1), torch.ones(1, 45))
    official = feature_surgery(feats_o, text, OFFICIAL)[:, 1:]
    assert (official.amin(1) > 1e-6).any() or (official.amax(1) < 1 - 1e-6).any()
