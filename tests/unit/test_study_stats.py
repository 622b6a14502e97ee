"""The study's statistics against their definitions: margin formation (vrp.study.formation),
AUROC vs chance, and the LaTeX writer."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from vrp.signals.mechanistic import mlp_share
from vrp.stats.auroc import auroc_ci
from vrp.stats.paired import auroc_vs_chance
from vrp.study import latex
from vrp.study.formation import emergence_layer, margin_formation


@pytest.mark.parametrize(
    ("above", "expected"),
    [([1, 1, 1], 0), ([0, 0, 0], 3), ([1, 0, 1, 1], 2), ([0, 1, 1, 0], 4), ([0, 0, 1], 2), ([], 0)],
)
def test_emergence_layer_is_the_start_of_the_trailing_run(above, expected):
    assert int(emergence_layer(np.array(above, dtype=bool))) == expected
    brute = len(above)
    while brute > 0 and above[brute - 1]:
        brute -= 1
    assert brute == expected


def test_emergence_layer_rowwise():
    a = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 0]], dtype=bool)
    assert emergence_layer(a).tolist() == [2, 1, 3]


def _world(n_correct=400, n_wrong=300, L=8, start=5, seed=0):
    """Margins whose correct-wrong gap is 0 before layer ``start`` and grows after it; an
    embedding-layer offset in the wrong items (a gap that does not last)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_correct + n_wrong, L + 1))
    y = np.r_[np.ones(n_correct, bool), np.zeros(n_wrong, bool)]
    ramp = np.clip(np.arange(L + 1) - start + 1, 0, None) * 1.5  # 0 ... 0, 1.5, 3, ...
    base[y] += ramp
    base[~y, 0] -= 2.0  # a transient gap at the embeddings
    return base, y


def test_margin_formation_matches_its_definition():
    m, y = _world()
    f = margin_formation(m, y, n_boot=2000, seed=1)
    gap = m[y].mean(0) - m[~y].mean(0)
    np.testing.assert_allclose(f["gap"], gap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f["mean_correct"], m[y].mean(0), atol=1e-12)
    # the emergence layer is where the CI's lower bound stays above 0 to the end (layer 5 here,
    # although the embedding layer's gap is far from 0 too), computed independently
    lo = np.asarray(f["gap_ci_low"])
    last_bad = max((i for i in range(len(lo)) if lo[i] <= 0), default=-1)
    assert f["emergence"] == last_bad + 1 == 5
    assert f["silent"] == 5 and f["emergence_depth"] == pytest.approx(5 / 8)
    assert f["peak"] == int(np.argmax(gap)) == 8 and f["peak_depth"] == 1.0
    assert f["peak_ci_low"] <= f["peak"] <= f["peak_ci_high"]
    assert f["emergence_ci_low"] <= 5 <= f["emergence_ci_high"]
    assert lo[0] > 0  # the literal "first layer whose CI excludes 0" would say 0


def test_gap_ci_agrees_with_a_brute_force_bootstrap():
    m, y = _world(n_correct=60, n_wrong=50, L=3, start=2, seed=3)
    f = margin_formation(m, y, n_boot=4000, seed=0)
    rng = np.random.default_rng(7)
    mc, mw = m[y], m[~y]
    boots = np.array([mc[rng.integers(0, len(mc), len(mc))].mean(0) - mw[rng.integers(0, len(mw), len(mw))].mean(0)
                      for _ in range(4000)])  # fmt: skip
    lo, hi = np.quantile(boots, [0.025, 0.975], axis=0)
    np.testing.assert_allclose(f["gap_ci_low"], lo, atol=0.06)
    np.testing.assert_allclose(f["gap_ci_high"], hi, atol=0.06)


def test_mlp_share_at_peak_is_the_item_mean_of_the_peak_block():
    m, y = _world(L=4, start=2)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(len(y), 4)), rng.normal(size=(len(y), 4))
    f = margin_formation(m, y, a, b, n_boot=500)
    assert f["peak"] == 4
    expected = np.nanmean(mlp_share(a[:, 3], b[:, 3]))
    assert f["mlp_share_at_peak"] == pytest.approx(expected, abs=1e-12)
    assert f["mlp_share_ci_low"] <= expected <= f["mlp_share_ci_high"]


def test_margin_formation_undefined_cases():
    m, y = _world(n_correct=5, n_wrong=1)
    f = margin_formation(m, y, n_boot=100)
    assert "2 wrong" in f["undefined"] and f["emergence"] is None and np.isnan(f["gap"]).all()
    never = margin_formation(np.zeros((20, 4)) + np.arange(20)[:, None] % 2 * 0, np.arange(20) % 2 == 0, n_boot=200)
    assert never["emergence"] is None and never["silent"] == 4
    with pytest.raises(ValueError, match="margin must be"):
        margin_formation(np.zeros(5), np.ones(5, bool))


def test_auroc_vs_chance_against_definitions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 150).astype(bool)
    s = y * 0.6 + rng.normal(size=150)
    r = auroc_vs_chance(s, y, n_boot=3000, seed=4)
    auc = roc_auc_score(y, s)
    assert r.diff == pytest.approx(auc - 0.5, abs=1e-12) and r.auroc_b == 0.5
    # DeLong's SE from its definition: placements by brute force
    pos, neg = s[y], s[~y]
    v10 = np.array([((neg < x).sum() + 0.5 * (neg == x).sum()) / len(neg) for x in pos])
    v01 = np.array([((pos > x).sum() + 0.5 * (pos == x).sum()) / len(pos) for x in neg])
    se = np.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    assert r.p_delong == pytest.approx(2 * norm.sf(abs(auc - 0.5) / se), rel=1e-9)
    # the bootstrap is auroc_ci's, shifted by 0.5
    a = auroc_ci(s, y, n_boot=3000, n_perm=0, seed=4)
    assert (r.ci_low + 0.5, r.ci_high + 0.5) == pytest.approx((a.ci_low, a.ci_high), abs=1e-12)
    # and it agrees with a brute-force stratified bootstrap of sklearn's AUROC
    boots = [roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))],
                           np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]) - 0.5 for _ in range(3000)]  # fmt: skip
    lo, hi = np.quantile(boots, [0.025, 0.975])
    assert r.ci_low == pytest.approx(lo, abs=0.02) and r.ci_high == pytest.approx(hi, abs=0.02)
    assert r.p_bootstrap < 0.01


def test_auroc_vs_chance_undefined():
    assert auroc_vs_chance(np.ones(10), np.arange(10) % 2).undefined
    assert auroc_vs_chance(np.arange(10.0), np.ones(10)).undefined
    perfect = auroc_vs_chance(np.arange(10.0), np.arange(10) >= 5, n_boot=100)
    assert perfect.diff == 0.5 and np.isnan(perfect.p_delong) and "standard error is 0" in perfect.delong_undefined


def test_booktabs_escapes_and_keeps_its_shape():
    tex = latex.booktabs(["a_b", "50%"], [["x&y", "1.0"], ["$z$", "#2"]], "cap_{}", "tab:x", groups=[1], note="n~")
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 1
    assert tex.count(r"\begin{tabular}{lr}") == 1 and tex.count(r"\end{tabular}") == 1
    assert r"a\_b & 50\% \\" in tex and r"x\&y & 1.0 \\" in tex and r"\$z\$ & \#2 \\" in tex
    assert r"\caption{cap\_\{\}}" in tex and r"\textasciitilde{}" in tex
    lines = tex.splitlines()
    assert lines.index(r"\toprule") < lines.index(r"\bottomrule")
    assert lines.count(r"\midrule") == 2  # after the header, and between the two groups
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        latex.booktabs(["a", "b"], [["x"]], "c", "l")


def test_number_cells():
    assert latex.interval(0.71234, 0.6, 0.8) == "0.712 [0.600, 0.800]"
    assert latex.interval(float("nan"), 0, 1) == "--" and latex.interval(0.5, float("nan"), 1) == "0.500"
    assert latex.pvalue(0.0004) == "< 0.001" and latex.pvalue(0.0312) == "0.031" and latex.num(None) == "--"
    assert not re.search(r"[^\\][_%&#]", latex.escape("a_b%c&d#e"))
