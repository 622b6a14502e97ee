"""The signal catalog: each entry's compute function against independent oracles, and the
metadata (``needs``, names) checked against what the functions actually read."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import label
from scipy.stats import entropy as scipy_entropy

from vrp.signals import BY_NAME, CURVE_BY_NAME, CURVES, NAMES, SIGNALS, SignalInputs, compute
from vrp.signals import structural as st


def _inputs(maps: np.ndarray, **kw) -> SignalInputs:
    """Inputs whose attention is ``maps`` ``[L, rows, cols]`` (one head, one step), with a
    3-token vocabulary answer 'token 0' and gold logits for layers 0..L."""
    L = maps.shape[0]
    base = dict(
        task="existence",
        answer_ids=np.array([0, 2]),
        logprobs=np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])),
        n_content=1,
        stop=1,
        image_attention=maps[:, None, None],
        image_mass=np.full((L, 1, 1), 0.4, dtype=np.float32),
        ref_logits=np.arange(L + 1, dtype=np.float32)[:, None] - 1.5,  # margins -1.5, -0.5, 0.5, ...
        rival_logits=np.zeros(L + 1, dtype=np.float32),
        lens_top_ids=np.arange(L + 1),
        readout_direction=np.array([1.0, 0.0]),
        attn_write=np.tile([[1.0, 5.0]], (L, 1)),
        mlp_write=np.tile([[3.0, -5.0]], (L, 1)),
        samples=("yes", "Yes.", "no", "yes"),
    )
    base.update(kw)
    return SignalInputs(**base)


@pytest.fixture
def maps() -> np.ndarray:
    return np.random.default_rng(7).dirichlet(np.full(30, 0.4), size=4).reshape(4, 5, 6)


def test_structural_curves_against_oracles(maps):
    res = compute(_inputs(maps, rho=0.3))
    c = res.curves
    expected_h = [scipy_entropy(m.ravel()) for m in maps]
    np.testing.assert_allclose(c["attn_entropy"], expected_h, rtol=1e-6)
    np.testing.assert_allclose(c["attn_entropy_norm"], np.array(expected_h) / math.log(30), rtol=1e-6)
    np.testing.assert_allclose(c["attn_entropy_delta"][1:], np.diff(expected_h), rtol=1e-5, atol=1e-6)
    assert np.isnan(c["attn_entropy_delta"][0])
    np.testing.assert_allclose(c["attn_peakiness"], maps.reshape(4, -1).max(axis=1), rtol=1e-6)
    for i, m in enumerate(maps):
        assert c["attn_secondary"][i] == label(st.top_mass_mask(m, 0.3))[1] - 1  # scipy's own labelling
    np.testing.assert_allclose(c["attn_image_mass"], 0.4)
    assert all(c[n].dtype == np.float32 for n in c if n != "lens_top_id" and not n.startswith("head_attn"))
    # the scalars: last layer and the NaN-ignoring mean over layers
    v = res.values
    assert v["attn_entropy"] == pytest.approx(expected_h[-1], rel=1e-9)
    assert v["attn_entropy_mean"] == pytest.approx(np.mean(expected_h), rel=1e-9)
    assert v["attn_entropy_delta"] == pytest.approx(expected_h[-1] - expected_h[-2], rel=1e-9)
    assert list(v) == list(NAMES)


def test_region_curves_from_a_gold_box(maps):
    # rows 0-1, cols 0-2 of the 5 x 6 grid: x in [0, 0.5], y in [0, 0.4]
    res = compute(_inputs(maps, regions=((0.0, 0.0, 0.5, 0.4),)))
    for i, m in enumerate(maps):
        inside = m[:2, :3].sum()
        assert res.curves["attn_region_mass"][i] == pytest.approx(inside, rel=1e-6)
        assert res.curves["attn_region_ratio"][i] == pytest.approx(inside / 0.2, rel=1e-6)
        r, col = np.unravel_index(np.argmax(m), m.shape)
        assert res.curves["attn_pointing_hit"][i] == float(r < 2 and col < 3)
    assert res.values["attn_pointing_hit_mean"] == pytest.approx(res.curves["attn_pointing_hit"].mean())


def test_mechanistic_and_behavioral_values(maps):
    v = compute(_inputs(maps)).values
    margins = np.arange(5) - 1.5  # layers 0..4
    assert v["margin_last"] == margins[-1] and v["margin_peak"] == margins.max()
    assert v["margin_peak_layer"] == 4.0 and v["margin_positive_from"] == 2.0
    # attention writes 1 on the direction, MLP writes 3: the MLP holds 3/4 of the growth
    assert v["mlp_share"] == pytest.approx(0.75)
    assert v["token_confidence"] == pytest.approx(0.7)
    assert v["geo_mean_prob"] == pytest.approx(0.7)  # stop = 1: the first token only
    assert v["first_step_entropy"] == pytest.approx(scipy_entropy([0.7, 0.2, 0.1]))
    # "yes", "Yes.", "yes" canonicalize to one cluster: 3 of 4 agree
    assert v["self_consistency"] == pytest.approx(0.75)
    assert v["answer_entropy"] == pytest.approx(scipy_entropy([3, 1]))


def test_needs_is_what_each_signal_reads(maps):
    """Removing the gold answer makes exactly the 'gold answer' signals NaN; removing the gold
    region exactly the 'gold region' ones; removing the samples exactly self-consistency's."""
    full = compute(_inputs(maps, regions=((0.0, 0.0, 0.5, 0.4),))).values
    assert not any(math.isnan(x) for x in full.values())
    no_gold = compute(_inputs(maps, regions=((0.0, 0.0, 0.5, 0.4),), ref_logits=None, rival_logits=None,
                              readout_direction=None)).values  # fmt: skip
    assert {n for n, x in no_gold.items() if math.isnan(x)} == {s.name for s in SIGNALS if s.needs == "gold answer"}
    no_region = compute(_inputs(maps)).values
    assert {n for n, x in no_region.items() if math.isnan(x)} == {s.name for s in SIGNALS if s.needs == "gold region"}
    no_samples = compute(_inputs(maps, regions=((0.0, 0.0, 0.5, 0.4),), samples=None)).values
    assert {n for n, x in no_samples.items() if math.isnan(x)} == {
        "self_consistency", "answer_entropy", "semantic_entropy", "semantic_consistency"
    }  # fmt: skip
    gold_curves = compute(_inputs(maps, ref_logits=None, rival_logits=None, readout_direction=None)).curves
    assert {n for n, c in gold_curves.items() if np.isnan(c.astype(float)).all()} >= {
        c.name for c in CURVES if c.needs == "gold answer"
    }


def test_curve_shapes_follow_their_axis(maps):
    res = compute(_inputs(maps))
    heads = np.asarray(res.curves["head_contrib"]).shape[1]  # the fixture's heads
    for c in CURVES:
        shape = {"residual": (5,), "block": (4,), "block_head": (4, heads)}[c.axis]
        assert res.curves[c.name].shape == shape, c.name
        assert res.curves[c.name].dtype == np.dtype(c.dtype)


def test_attention_averages_over_the_answer_tokens_only():
    a = np.zeros((1, 1, 3, 2, 2))
    a[0, 0, 0, 0, 0] = a[0, 0, 1, 1, 1] = 1.0  # step 0 on one patch, step 1 on another, step 2 (EOS) elsewhere
    a[0, 0, 2, 0, 1] = 1.0
    x = _inputs(a[:, 0, 0], image_attention=a, image_mass=np.ones((1, 1, 3)), n_content=2,
                ref_logits=None, rival_logits=None, lens_top_ids=None)  # fmt: skip
    res = compute(x)
    assert res.values["attn_peakiness"] == pytest.approx(0.5)  # two patches share the mass, EOS excluded
    assert "lens_top_id" not in res.curves  # no lens readout: no curve (there is no NaN token id)


def test_catalog_metadata_is_complete():
    assert len(set(NAMES)) == len(NAMES) == len(SIGNALS)
    for s in SIGNALS:
        assert s.family in ("structural", "mechanistic", "behavioral") and s.unit and s.doc
        assert BY_NAME[s.name] is s
    for c in CURVES:
        assert CURVE_BY_NAME[c.name] is c and c.unit and c.doc
    # every structural curve over blocks is summarized by a signal of the same name (its last layer);
    # the per-head ones feed the head ranking's derived signals and the per-head probe instead
    assert {c.name for c in CURVES if c.family == "structural" and c.axis == "block"} <= set(NAMES)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="image_attention"):
        _inputs(np.ones((2, 3, 3)), image_attention=np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="both or neither"):
        _inputs(np.ones((2, 3, 3)) / 9, ref_logits=None)


def test_a_hybrid_models_structural_curves_are_absent_where_blocks_have_no_attention(maps):
    """Blocks 1 and 3 of 4 have softmax attention (maps); 0 and 2 are linear attention: their
    curve values are NaN (absent), the last-layer signals read block 3, the means blocks 1 and 3."""
    two = maps[:2]
    res = compute(_inputs(two, attention_blocks=(1, 3), attn_write=np.tile([[1.0, 5.0]], (4, 1)),
                          mlp_write=np.tile([[3.0, -5.0]], (4, 1)), image_mass=np.full((2, 1, 1), 0.4, np.float32),
                          ref_logits=np.arange(5, dtype=np.float32)[:, None] - 1.5,
                          rival_logits=np.zeros(5, dtype=np.float32), lens_top_ids=np.arange(5)))  # fmt: skip
    h = [scipy_entropy(m.ravel()) for m in two]
    ent = res.curves["attn_entropy"]
    assert ent.shape == (4,) and np.isnan(ent[[0, 2]]).all()
    np.testing.assert_allclose(ent[[1, 3]], h, rtol=1e-6)
    assert res.values["attn_entropy"] == pytest.approx(h[1], rel=1e-9)
    assert res.values["attn_entropy_mean"] == pytest.approx(np.mean(h), rel=1e-9)
    assert res.values["attn_entropy_delta"] == pytest.approx(h[1] - h[0], rel=1e-9)  # between blocks 1 and 3
    assert res.curves["attn_contrib"].shape == (4,) and not np.isnan(res.curves["attn_contrib"]).any()
    with pytest.raises(ValueError, match="attention_blocks names"):
        _inputs(two, attention_blocks=(3,))
