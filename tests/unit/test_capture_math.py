"""The attention-row math of the capture function against a direct eager formula."""

from __future__ import annotations

import pytest
import torch

from vrp.capture.attention import _eager_output, last_row_probs


def _eager_probs(q, k, mask, scale, softcap):
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = (q @ k.transpose(-1, -2)) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if mask is not None:
        s = s + mask
    return torch.softmax(s, -1)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_last_row_matches_eager_formula_with_gqa_softcap_and_masks(kv_heads, softcap, mask_kind):
    g = torch.Generator().manual_seed(0)
    b, h, q_len, k_len, d = 2, 4, 5, 9, 8
    q = torch.randn(b, h, q_len, d, generator=g) * 2
    k = torch.randn(b, kv_heads, k_len, d, generator=g) * 2
    keep = torch.ones(b, 1, q_len, k_len, dtype=torch.bool).tril(diagonal=k_len - q_len)
    keep[1, :, :, :3] = False  # left padding on row 1
    keep[0, :, :, 1] = False  # a sliding-window / prefix style hole
    additive = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    mask = {"none": None, "bool": keep, "additive": additive}[mask_kind]
    ref_mask = None if mask is None else additive
    got = last_row_probs(q, k, mask, 0.3, softcap)
    want = _eager_probs(q, k, ref_mask, 0.3, softcap)[:, :, -1, :]
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(b, h))
    if mask is not None:
        assert (got[1, :, :3] == 0).all() and (got[0, :, 1] == 0).all()
    v = torch.randn(b, kv_heads, k_len, d, generator=g)
    out = _eager_output(None, q, k, v, mask, 0.3, softcap)  # [b, q, h, d]
    full = _eager_probs(q, k, ref_mask, 0.3, softcap) @ v.repeat_interleave(h // kv_heads, dim=1)
    assert torch.allclose(out, full.transpose(1, 2), atol=1e-5)
