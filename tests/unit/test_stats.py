"""AUROC, its bootstrap CI and permutation p, DeLong and the paired comparison (vrp.stats)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy.stats import binom, mannwhitneyu, norm
from sklearn.metrics import roc_auc_score

from vrp.stats.auroc import AurocResult, _Kernel, auroc, auroc_ci
from vrp.stats.paired import DelongResult, PairedResult, delong, delong_se, paired_auroc_diff


def _normal_data(rng, n_pos, n_neg, delta):
    """Positives ~ N(delta, 1), negatives ~ N(0, 1): AUROC = Phi(delta / sqrt(2))."""
    s = np.concatenate([rng.normal(delta, 1, n_pos), rng.normal(0, 1, n_neg)])
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    return s, y


# --------------------------------------------------------------------------- point estimate


@pytest.mark.parametrize("seed", range(6))
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    s = rng.integers(0, 1 + seed * 3, n).astype(float) if seed else rng.normal(size=n)  # heavy ties for small seeds
    y = rng.random(n) < rng.uniform(0.1, 0.9)
    if y.all() or not y.any():
        y[0] = not y[0]
    if s.min() == s.max():
        s[0] += 1
    expected = roc_auc_score(y, s)
    assert auroc(s, y) == pytest.approx(expected, abs=1e-12)
    assert auroc(s, y.astype(int)) == pytest.approx(expected, abs=1e-12)
    assert auroc(s, y.astype(float)) == pytest.approx(expected, abs=1e-12)
    assert auroc_ci(s, y, n_boot=10, n_perm=0).auroc == pytest.approx(expected, abs=1e-12)
    assert auroc(-s, y) == pytest.approx(1 - expected, abs=1e-12)


def test_auroc_drops_nonfinite_scores_and_missing_labels():
    rng = np.random.default_rng(3)
    s, y = _normal_data(rng, 30, 40, 0.8)
    s_bad = s.copy()
    s_bad[[0, 5, 50]] = [np.nan, np.inf, -np.inf]
    yf = y.astype(float)
    yf[7] = np.nan
    keep = np.ones(s.size, bool)
    keep[[0, 5, 50, 7]] = False
    expected = roc_auc_score(y[keep], s[keep])
    assert auroc(s_bad, yf) == pytest.approx(expected)
    r = auroc_ci(s_bad, yf, n_boot=100, n_perm=100)
    assert r.auroc == pytest.approx(expected) and r.n_dropped == 4 and r.n == 66 and r.undefined is None
    assert r.n_pos == int(y[keep].sum())


@pytest.mark.parametrize("ties", ["none", "few", "many"])
def test_resample_kernel_matches_weighted_sklearn(ties):
    """2U of a resample from multiplicities == sklearn's AUROC with the multiplicities as weights."""
    rng = np.random.default_rng(11)
    n_pos, n_neg, b = 23, 31, 40
    if ties == "many":
        pos, neg = rng.integers(0, 6, n_pos).astype(float), rng.integers(0, 6, n_neg).astype(float)
    else:
        pos, neg = rng.normal(size=n_pos), rng.normal(size=n_neg)
        if ties == "few":
            pos[[3, 7]] = neg[[0, 5]]
    cp = rng.multinomial(n_pos, np.full(n_pos, 1 / n_pos), size=b)  # [b, P]
    cn = rng.multinomial(n_neg, np.full(n_neg, 1 / n_neg), size=b)  # [b, N]
    k = _Kernel(pos, neg)
    assert k.tied == (ties != "none") and (k.few is not None) == (ties == "few")
    got = k.twice_u(cp, cn) / (2.0 * cp.sum(1) * cn.sum(1))
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    s = np.r_[pos, neg]
    want = [roc_auc_score(y, s, sample_weight=np.r_[cp[i], cn[i]]) for i in range(b)]
    np.testing.assert_allclose(got, want, atol=1e-12)


# --------------------------------------------------------------------------- bootstrap CI


@pytest.mark.parametrize("stratified", [True, False])
def test_bootstrap_ci_coverage_on_known_auroc(stratified):
    """95% percentile CIs cover the true AUROC Phi(delta / sqrt 2) in ~95% of 300 synthetic datasets."""
    delta = 1.0
    truth = float(norm.cdf(delta / math.sqrt(2)))
    rng = np.random.default_rng(2024)
    covered = 0
    reps = 300
    for i in range(reps):
        s, y = _normal_data(rng, 100, 100, delta)
        r = auroc_ci(s, y, n_boot=1000, n_perm=0, seed=i, stratified=stratified)
        assert r.ci_low <= r.auroc <= r.ci_high
        covered += r.ci_low <= truth <= r.ci_high
    assert 0.91 <= covered / reps <= 0.98, covered / reps


def test_bootstrap_reproducible_and_seeded():
    rng = np.random.default_rng(5)
    s, y = _normal_data(rng, 60, 80, 0.7)
    a, b = auroc_ci(s, y, n_boot=500, n_perm=200, seed=1), auroc_ci(s, y, n_boot=500, n_perm=200, seed=1)
    assert a == b
    c = auroc_ci(s, y, n_boot=500, n_perm=200, seed=2)
    assert (c.ci_low, c.ci_high) != (a.ci_low, a.ci_high)
    # the bootstrap stream does not depend on how many permutations are drawn
    d = auroc_ci(s, y, n_boot=500, n_perm=0, seed=1)
    assert (d.ci_low, d.ci_high) == (a.ci_low, a.ci_high) and math.isnan(d.p_value)
    # threads do not change the result (fixed blocks with their own streams)
    assert auroc_ci(s, y, n_boot=1100, n_perm=700, seed=1, n_jobs=3) == auroc_ci(s, y, n_boot=1100, n_perm=700, seed=1)
    e = auroc_ci(s, y, n_boot=0, n_perm=10, seed=1)
    assert math.isnan(e.ci_low) and math.isnan(e.ci_high) and e.n_boot == 0 and 0 < e.p_value <= 1


def test_bootstrap_se_matches_delong_on_large_sample():
    rng = np.random.default_rng(8)
    s, y = _normal_data(rng, 1200, 800, 0.9)
    r = auroc_ci(s, y, n_boot=4000, n_perm=0)
    boot_se = (r.ci_high - r.ci_low) / (2 * norm.ppf(0.975))
    assert boot_se == pytest.approx(delong_se(s, y), rel=0.08)
    plain = auroc_ci(s, y, n_boot=4000, n_perm=0, stratified=False)
    assert (plain.ci_high - plain.ci_low) / (2 * norm.ppf(0.975)) == pytest.approx(delong_se(s, y), rel=0.08)


def test_plain_bootstrap_skips_single_class_resamples():
    s = np.array([0.1, 0.2, 0.3, 0.9])
    y = np.array([0, 0, 0, 1])  # P(resample has no positive) = (3/4)^4 ~ 0.32
    r = auroc_ci(s, y, n_boot=2000, n_perm=0, stratified=False)
    assert r.n_boot + r.n_boot_skipped == 2000
    assert binom(2000, 0.75**4).ppf(0.0005) <= r.n_boot_skipped <= binom(2000, 0.75**4).ppf(0.9995)
    assert r.ci_low == r.ci_high == 1.0  # the single positive is always on top
    strat = auroc_ci(s, y, n_boot=2000, n_perm=0)
    assert strat.n_boot == 2000 and strat.n_boot_skipped == 0


# --------------------------------------------------------------------------- permutation p


def test_permutation_p_uniform_under_null():
    rng = np.random.default_rng(17)
    ps = []
    for i in range(200):
        s, y = _normal_data(rng, 25, 35, 0.0)
        ps.append(auroc_ci(s, y, n_boot=0, n_perm=500, seed=i).p_value)
    ps = np.array(ps)
    lo, hi = binom(200, 0.05).ppf([0.0005, 0.9995])
    assert lo <= np.sum(ps < 0.05) <= hi
    lo, hi = binom(200, 0.5).ppf([0.0005, 0.9995])
    assert lo <= np.sum(ps < 0.5) <= hi


def test_permutation_p_small_for_strong_effect():
    rng = np.random.default_rng(4)
    s, y = _normal_data(rng, 200, 200, 2.0)
    assert auroc_ci(s, y, n_boot=0, n_perm=2000).p_value == pytest.approx(1 / 2001)


@pytest.mark.parametrize("delta", [0.0, 0.6, 1.0])
def test_permutation_p_matches_exact_mann_whitney(delta):
    rng = np.random.default_rng(int(delta * 10) + 1)
    s, y = _normal_data(rng, 9, 12, delta)
    exact = mannwhitneyu(s[y], s[~y], alternative="two-sided", method="exact").pvalue
    n_perm = 20_000
    got = auroc_ci(s, y, n_boot=0, n_perm=n_perm).p_value
    tol = 4 * math.sqrt(exact * (1 - exact) / n_perm) + 2 / n_perm
    assert got == pytest.approx(exact, abs=tol)


# --------------------------------------------------------------------------- DeLong


def _slow_delong(a, b, y):
    """DeLong et al. 1988 from the definition: psi kernel, placements by double loops."""

    def psi(x, z):
        return 1.0 if x > z else 0.5 if x == z else 0.0

    comps = []
    for s in (a, b):
        pos, neg = s[y], s[~y]
        v10 = np.array([np.mean([psi(x, z) for z in neg]) for x in pos])
        v01 = np.array([np.mean([psi(x, z) for x in pos]) for z in neg])
        comps.append((v10, v01))
    aucs = np.array([c[0].mean() for c in comps])
    s10 = np.cov(np.stack([c[0] for c in comps]))
    s01 = np.cov(np.stack([c[1] for c in comps]))
    cov = s10 / y.sum() + s01 / (~y).sum()
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = (aucs[0] - aucs[1]) / math.sqrt(var)
    return aucs, cov, z, 2 * norm.sf(abs(z))


@pytest.mark.parametrize("ties", [False, True])
def test_delong_matches_definition(ties):
    rng = np.random.default_rng(21 + ties)
    n = 70
    y = rng.random(n) < 0.45
    a = rng.normal(size=n) + 1.0 * y
    b = 0.5 * a + rng.normal(size=n) + 0.2 * y  # correlated with a
    if ties:
        a, b = np.round(a), np.round(b * 2) / 2
    aucs, cov, z, p = _slow_delong(a, b, y)
    r = delong(a, b, y)
    assert r.undefined is None and r.n == n and r.n_pos == int(y.sum())
    assert r.auroc_a == pytest.approx(roc_auc_score(y, a)) and r.auroc_a == pytest.approx(aucs[0])
    assert r.auroc_b == pytest.approx(aucs[1]) and r.diff == pytest.approx(aucs[0] - aucs[1])
    assert r.z == pytest.approx(z, rel=1e-9) and r.p_value == pytest.approx(p, rel=1e-9)
    assert r.se == pytest.approx(math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), rel=1e-9)
    assert delong_se(a, y) == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-9)
    assert delong_se(b, y) == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-9)


def test_delong_identical_signals_is_undefined_not_p1():
    rng = np.random.default_rng(2)
    s, y = _normal_data(rng, 20, 20, 1.0)
    r = delong(s, 3 * s + 1, y)  # same ranking
    assert r.undefined and "zero" in r.undefined
    assert all(math.isnan(v) for v in (r.auroc_a, r.auroc_b, r.diff, r.se, r.z, r.p_value))


# --------------------------------------------------------------------------- paired comparison


def test_paired_uses_the_same_resamples_for_both_signals():
    """AUROC(-s) = 1 - AUROC(s) in every resample, so diff(s, -s) = 2 AUROC(s) - 1 resample by resample."""
    rng = np.random.default_rng(9)
    s, y = _normal_data(rng, 70, 90, 0.8)
    single = auroc_ci(s, y, n_boot=800, n_perm=0, seed=4)
    paired = paired_auroc_diff(s, -s, y, n_boot=800, seed=4)
    assert paired.diff == pytest.approx(2 * single.auroc - 1)
    assert paired.ci_low == pytest.approx(2 * single.ci_low - 1)
    assert paired.ci_high == pytest.approx(2 * single.ci_high - 1)


def test_paired_diff_ci_and_p_values():
    rng = np.random.default_rng(12)
    n = 600
    y = rng.random(n) < 0.5
    a = rng.normal(size=n) + 1.2 * y
    b = 0.6 * a + rng.normal(size=n)  # weaker, correlated
    r = paired_auroc_diff(a, b, y, n_boot=3000)
    d = delong(a, b, y)
    assert r.undefined is None and r.delong_undefined is None
    assert r.diff == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert r.ci_low < r.diff < r.ci_high and r.ci_low > 0
    assert r.p_delong == pytest.approx(d.p_value) and r.p_delong < 0.01 and r.p_bootstrap < 0.01
    assert (r.ci_high - r.ci_low) / (2 * norm.ppf(0.975)) == pytest.approx(d.se, rel=0.12)
    # no difference: both p-values large-ish on the same signal with independent noise of equal size
    c = a + rng.normal(size=n) * 0.3
    e = a + rng.normal(size=n) * 0.3
    q = paired_auroc_diff(c, e, y, n_boot=2000)
    assert q.ci_low < 0 < q.ci_high and q.p_bootstrap > 0.05 and q.p_delong > 0.05


def test_paired_identical_signals():
    rng = np.random.default_rng(1)
    s, y = _normal_data(rng, 30, 30, 1.0)
    r = paired_auroc_diff(s, s, y, n_boot=300)
    assert r.undefined is None and r.diff == 0.0 and r.ci_low == r.ci_high == 0.0 and r.p_bootstrap == 1.0
    assert math.isnan(r.p_delong) and r.delong_undefined


# --------------------------------------------------------------------------- degenerate input


def _degenerate_cases():
    rng = np.random.default_rng(0)
    s = rng.normal(size=37)
    yes = np.ones(37, bool)
    mixed = np.r_[np.ones(18, bool), np.zeros(19, bool)]
    return {
        "one class": (s, yes, "only one class among 37 items (all correct)"),
        "one class (incorrect)": (s, ~yes, "all incorrect"),
        "constant": (np.full(37, 0.3), mixed, "constant"),
        "all nan": (np.full(37, np.nan), mixed, "no finite values"),
        "empty": (np.array([]), np.array([], bool), "no items"),
        "one class after dropping": (np.r_[np.full(18, np.nan), s[18:]], mixed, "after dropping 18"),
        "labels missing": (s, np.full(37, np.nan), "no labels"),
    }


@pytest.mark.parametrize("case", list(_degenerate_cases()))
def test_degenerate_input_is_undefined_with_reason(case):
    s, y, fragment = _degenerate_cases()[case]
    assert math.isnan(auroc(s, y))
    results = [
        auroc_ci(s, y, n_boot=50, n_perm=50),
        delong(s, s[::-1].copy(), y),
        paired_auroc_diff(s, s[::-1].copy(), y, n_boot=50),
    ]
    for r in results:
        assert isinstance(r.undefined, str) and r.undefined
        d = r.to_dict()
        numbers = [v for k, v in d.items() if isinstance(v, float) and k != "level"]
        assert numbers and all(math.isnan(v) for v in numbers), (type(r).__name__, d)
        assert 0.5 not in numbers
    assert fragment in results[0].undefined
    assert delong_se(s, y) != delong_se(s, y)  # NaN


def test_delong_needs_two_per_class():
    s = np.array([0.1, 0.5, 0.7, 0.9])
    y = np.array([0, 0, 0, 1])
    assert "at least 2" in delong(s, s**2 + np.array([0, 0.3, 0, 0]), y).undefined
    assert auroc_ci(s, y, n_boot=20, n_perm=20).undefined is None  # AUROC itself is fine


def test_programming_errors_raise():
    with pytest.raises(ValueError, match="labels has"):
        auroc_ci([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        auroc([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match="level"):
        auroc_ci([0.1, 0.2], [0, 1], level=95)
    with pytest.raises(ValueError, match="has"):
        delong([0.1, 0.2], [0.1, 0.2, 0.3], [0, 1])


def test_results_are_frozen_and_serializable():
    rng = np.random.default_rng(0)
    s, y = _normal_data(rng, 20, 20, 1.0)
    results = [
        auroc_ci(s, y, n_boot=50, n_perm=50),
        delong(s, -s + rng.normal(size=40), y),
        paired_auroc_diff(s, s + rng.normal(size=40), y, n_boot=50),
    ]
    for r, cls in zip(results, [AurocResult, DelongResult, PairedResult], strict=True):
        assert isinstance(r, cls)
        d = r.to_dict()
        assert list(d) == [f.name for f in dataclasses.fields(cls)]
        assert json.loads(json.dumps(d)) == d
        with pytest.raises(dataclasses.FrozenInstanceError):
            r.undefined = "x"  # type: ignore[misc]


def test_auroc_is_invariant_to_item_order_and_monotone_transforms():
    rng = np.random.default_rng(6)
    s, y = _normal_data(rng, 40, 50, 0.5)
    s = np.round(s, 1)
    perm = rng.permutation(s.size)
    a = auroc(s, y)
    assert a == pytest.approx(roc_auc_score(y, s))
    assert auroc(s[perm], y[perm]) == a
    assert auroc(np.exp(s[perm]), y[perm]) == a


def test_mean_ci_matches_scipy_percentile_bootstrap_and_ignores_nan():
    from scipy.stats import bootstrap

    from vrp.stats.effects import mean_ci, resample_counts

    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, size=(150, 2))
    x[:40, 1] = np.nan  # column 1: only its 110 finite values count
    mean, lo, hi = mean_ci(x, n_boot=20_000, rng=np.random.default_rng(0))
    for k in range(2):
        col = x[:, k][np.isfinite(x[:, k])]
        ref = bootstrap((col,), np.mean, n_resamples=20_000, method="percentile", random_state=1)
        se = col.std() / math.sqrt(col.size)
        assert mean[k] == pytest.approx(col.mean())
        # k = 1: resampling all 150 rows gives a random number of finite values per resample,
        # a slightly wider interval than scipy's fixed 110
        tol = 0.05 * se if k == 0 else 0.15 * se
        assert abs(lo[k] - ref.confidence_interval.low) < tol and abs(hi[k] - ref.confidence_interval.high) < tol
    # the resampling stream does not depend on the blocking
    blocks = list(resample_counts(7, 10, np.random.default_rng(0)))
    direct = np.random.default_rng(0).multinomial(7, np.full(7, 1 / 7), size=10)
    np.testing.assert_array_equal(np.concatenate(blocks), direct)
    assert all(c.sum() == 7 for c in np.concatenate(blocks))
