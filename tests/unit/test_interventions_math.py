"""Pure pieces of the interventions: paired effects, patch choice, pixel masking, config."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import stats as sps

from vrp.interventions import masking
from vrp.interventions.config import InterveneConfig, InterveneConfigError
from vrp.stats.effects import paired_mean_diff, recovered_fraction


def test_paired_mean_diff_matches_scipy_paired_bootstrap():
    rng = np.random.default_rng(0)
    before = rng.random(300) < 0.7
    after = before & (rng.random(300) < 0.85)  # an ablation that only breaks answers
    r = paired_mean_diff(before.astype(float), after.astype(float), n_boot=20_000, seed=1)
    assert r.estimate == pytest.approx(after.mean() - before.mean())
    ref = sps.bootstrap((before.astype(float), after.astype(float)), lambda a, b, axis: (b - a).mean(axis),
                        paired=True, n_resamples=20_000, method="percentile", rng=2)  # fmt: skip
    assert r.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert r.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.01)
    assert r.ci_high < 0 and r.p < 0.01


def test_paired_mean_diff_no_change_and_nan():
    x = np.array([1.0, 0.0, 1.0, 1.0])
    r = paired_mean_diff(x, x, n_boot=500)
    assert (r.estimate, r.ci_low, r.ci_high, r.p) == (0.0, 0.0, 0.0, 1.0)
    r = paired_mean_diff([1.0, np.nan, 0.0], [0.0, 1.0, 0.0], n_boot=100)
    assert r.n == 2 and r.n_dropped == 1 and r.estimate == -0.5
    assert paired_mean_diff([], [], n_boot=10).undefined
    with pytest.raises(ValueError):
        paired_mean_diff([1.0], [1.0, 2.0])


def test_recovered_fraction_known_values():
    clean = np.array([3.0, 2.0, 4.0, 1.0])
    corrupt = np.array([1.0, 0.0, 0.0, 1.0])
    assert recovered_fraction(clean, corrupt, clean, n_boot=200).estimate == pytest.approx(1.0)
    assert recovered_fraction(clean, corrupt, corrupt, n_boot=200).estimate == pytest.approx(0.0)
    half = corrupt + (clean - corrupt) / 2
    r = recovered_fraction(clean, corrupt, half, n_boot=2000)
    assert r.estimate == pytest.approx(0.5) and r.ci_low == pytest.approx(0.5) and r.ci_high == pytest.approx(0.5)
    assert recovered_fraction(clean, clean, clean, n_boot=10).undefined


def test_top_cells_and_counts():
    m = np.array([[0.1, 0.4], [0.3, 0.2]])
    assert masking.top_cells(m, 0.5).tolist() == [1, 2]
    assert masking.n_masked(16, 0.3) == 5 and masking.n_masked(16, 0.0) == 0 and masking.n_masked(16, 1.0) == 16
    assert masking.top_cells(np.ones((2, 2)), 0.5).tolist() == [0, 1]  # ties by position
    a = masking.random_cells(16, 5, np.random.default_rng(3))
    b = masking.random_cells(16, 5, np.random.default_rng(3))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 5
    with pytest.raises(ValueError):
        masking.n_masked(4, 1.5)


def test_mask_pixels_fills_exactly_the_cells():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    same = masking.mask_pixels(im, [], 4, 4, lambda v: (v[0] * 48, v[1] * 48, v[2] * 48, v[3] * 48))
    assert np.array_equal(np.asarray(same), arr)
    out = np.asarray(masking.mask_pixels(im, [5], 4, 4, lambda v: (v[0] * 48, v[1] * 48, v[2] * 48, v[3] * 48)))
    cell = (slice(12, 24), slice(12, 24))  # row 1, col 1
    assert np.all(out[cell] == np.round(arr[cell].reshape(-1, 3).mean(0)).astype(np.uint8))
    outside = np.ones((48, 48), bool)
    outside[cell] = False
    assert np.array_equal(out[outside], arr[outside])
    flat = np.asarray(masking.mask_pixels(im, range(16), 4, 4, lambda v: (v[0] * 48, v[1] * 48, v[2] * 48, v[3] * 48),
                                          fill="image-mean"))  # fmt: skip
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) == 1


def test_config_validation_and_roundtrip():
    cfg = InterveneConfig(kind="neurons", layers=(1, 3), sizes=(0.25,))
    assert InterveneConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"kind": "nope"}, {"kind": "patches", "frac": 1.2}, {"kind": "mass", "mode": "invert"},
                {"kind": "patching", "patch_sites": ("q",)}):  # fmt: skip
        with pytest.raises(InterveneConfigError):
            InterveneConfig(**bad)
    with pytest.raises(InterveneConfigError, match="unknown"):
        InterveneConfig.from_dict({"kind": "mlp", "bogus": 1})
