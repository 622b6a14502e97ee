"""Attention heads: direct logit attribution (against the block's attention contribution and a
zeroed head), per-head features (against their definitions), the train-only ranking, the top-k
head signals and the per-head probe of ``vrp probe``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.stats import entropy

import vrp
from tests.helpers import cli_run
from vrp.analysis.heads import HEAD_PROBES, SOURCE, TOP_K, head_features, rank_heads, top_k_signals
from vrp.config import TOY_MODELS
from vrp.probes.io import load_probe
from vrp.signals.catalog import DERIVED


def _trace(model, **kw):
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    return vrp.trace(model, img, "Is there a red square?", answers=["yes"], task="existence", samples=0,
                     record_dtype="float32", **kw)  # fmt: skip


@pytest.mark.parametrize("name", TOY_MODELS)
def test_heads_sum_to_the_blocks_attention_contribution(name):
    t = _trace(vrp.load(name))
    c = t.curves()
    assert c["head_contrib"].shape == (4, t.capture.image_attention[0].shape[1])
    np.testing.assert_allclose(c["head_contrib"].sum(1), c["attn_contrib"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["gemma3", "qwen3_5"])
def test_heads_sum_through_a_post_norm_and_in_a_hybrid(model_type, tmp_path):
    """Gemma 3's attention write is post_attention_layernorm of the projection; Qwen3.5's
    linear-attention blocks have no heads (NaN rows)."""
    from vrp.toys.tiny import save_tiny

    model = vrp.load(str(save_tiny(model_type, tmp_path / model_type)))
    c = _trace(model).curves()
    blocks = list(model.attention_blocks())
    hc = c["head_contrib"]
    np.testing.assert_allclose(hc[blocks].sum(1), c["attn_contrib"][blocks], atol=1e-4, rtol=1e-4)
    other = [b for b in range(model.n_blocks) if b not in blocks]
    assert np.isnan(hc[other]).all() and np.isfinite(hc[blocks]).all()


def test_a_zeroed_head_contributes_nothing_and_is_not_ranked():
    model = vrp.load("toy-llava")
    o_proj = model.layer_module(1, "o_proj")
    n_heads = int(model.text_config.num_attention_heads)
    hd = o_proj.in_features // n_heads
    with torch.no_grad():
        o_proj.weight[:, 2 * hd : 3 * hd] = 0
    hc = _trace(model).curves()["head_contrib"]
    assert hc[1, 2] == 0 and np.count_nonzero(hc) == hc.size - 1
    ranking = rank_heads(hc[None], np.array([0]))
    assert (1, 2) not in {(b, h) for b, h, _ in ranking} and len(ranking) == hc.size - 1
    assert [s for *_, s in ranking] == sorted((s for *_, s in ranking), reverse=True)


def test_per_head_features_match_their_definitions():
    t = _trace(vrp.load("toy-qwen2vl"))
    c = t.curves()
    att = t.capture.image_attention[0]  # [L, H, T, rows, cols]
    steps = max(1, len(t.answer_tokens))
    maps = att[:, :, :steps].mean(axis=2)
    maps = maps / maps.sum(axis=(-2, -1), keepdims=True)
    flat = maps.reshape(*maps.shape[:2], -1)
    np.testing.assert_allclose(c["head_attn_entropy"], entropy(flat, axis=-1), rtol=2e-3, atol=2e-3)  # float16
    np.testing.assert_allclose(c["head_attn_peakiness"], flat.max(-1), rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(c["head_attn_image_mass"], t.capture.image_mass[:, :, :steps].mean(-1), rtol=2e-3)
    assert np.isnan(c["head_attn_region_mass"]).all()  # no gold region


def test_ranking_reads_the_train_split_only_and_top_k_is_a_mean():
    rng = np.random.default_rng(0)
    contrib = rng.normal(size=(30, 3, 4))
    train = np.arange(20)
    r1 = rank_heads(contrib, train)
    contrib[20:] *= 100  # test items change: the ranking does not
    assert rank_heads(contrib, train) == r1
    scores = np.abs(contrib[train]).mean(0)
    assert r1[0][:2] == tuple(int(i) for i in np.unravel_index(scores.argmax(), scores.shape))
    feats = {"entropy": rng.normal(size=(30, 3, 4))}
    sig = top_k_signals(feats, r1)
    top4 = r1[:4]
    expected = np.mean([feats["entropy"][:, b, h] for b, h, _ in top4], axis=0)
    np.testing.assert_allclose(sig["attn_entropy_dla4"], expected)
    assert set(sig) == {f"attn_entropy_dla{k}" for k in TOP_K}


def _proba(model, X: np.ndarray) -> np.ndarray:
    """p(correct) of a saved per-head probe: a one-layer logistic probe reads [n, 1, F], trees [n, F]."""
    from vrp.probes.trees import TreeEnsembleProbe

    return model.predict_proba(X if isinstance(model, TreeEnsembleProbe) else X[:, None, :])[:, 1]


def test_vrp_probe_ranks_heads_and_trains_the_head_probe(tmp_path):
    run = tmp_path / "run"
    cli_run(run, "--data", "shapesworld:30", "--samples", "0", "--max-new-tokens", "3", "--seed", "2")
    from vrp.analysis.predictors import analyze
    from vrp.analysis.probing import train_probes

    summary = train_probes(run)
    for name, n_features in (("attn_heads_probe", 4), ("attn_heads_probe_gold", 5)):
        entry = summary["probes"][name]  # gold-free, and with each head's gold-region mass
        assert entry["kind"] in ("logistic", "gbt") and entry["n_features"] == 4 * 4 * n_features
        assert ("region_mass" in entry["features"]) == (name == "attn_heads_probe_gold")
        assert entry["val_auroc"] == max(v for v in (entry["val_auroc_logistic"], entry["val_auroc_gbt"]) if v == v)
    heads = json.loads((run / "probes" / "heads.json").read_text())
    assert heads["ranked_on"] == "train" and len(heads["heads"]) == 16
    signals = pd.read_parquet(run / SOURCE)
    names = {d.name for d in DERIVED if d.source == SOURCE}
    assert set(signals.columns) == {"id", *names} and len(signals) == summary["n"]
    preds = pd.read_parquet(run / "probes" / "predictions.parquet")
    assert preds["attn_heads_probe"].between(0, 1).all() and preds["attn_heads_probe_gold"].between(0, 1).all()
    gold_free = load_probe(run / "probes" / "attn_heads")  # the saved probe answers from 4 features per head
    feats = head_features(run, list(preds["id"]))
    X = np.stack([np.nan_to_num(feats[f], nan=0.0) for f in HEAD_PROBES["attn_heads_probe"][1]], axis=3)
    np.testing.assert_allclose(_proba(gold_free, X.reshape(len(X), -1)), preds["attn_heads_probe"], atol=1e-6)
    table = pd.DataFrame(analyze(run, __import__("vrp.analysis.config", fromlist=["x"]).AnalyzeConfig(
        n_boot=200, n_perm=200))["predictors"])  # fmt: skip
    assert names <= set(table["name"]) and {"attn_heads_probe", "attn_heads_probe_gold"} <= set(table["name"])
    from vrp.study.tables import ATTN_ENSEMBLES  # the study's best attention summary stays gold-free

    assert "attn_heads_probe" in ATTN_ENSEMBLES and "attn_heads_probe_gold" not in ATTN_ENSEMBLES
