"""Structural attention metrics against known values and independent oracles."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from vrp.signals import structural as st


def _blobs(shape: tuple[int, int], blobs: list[tuple[slice, slice]], low: float = 1e-4) -> np.ndarray:
    """A normalized map with equal high mass on each blob and a small floor elsewhere."""
    p = np.full(shape, low)
    for b in blobs:
        p[b] = 1.0
    return p / p.sum()


def _bfs_components(mask: np.ndarray) -> int:
    """Independent 4-neighbour flood fill."""
    seen = np.zeros_like(mask, dtype=bool)
    rows, cols = mask.shape
    n = 0
    for r in range(rows):
        for c in range(cols):
            if mask[r, c] and not seen[r, c]:
                n += 1
                q = deque([(r, c)])
                seen[r, c] = True
                while q:
                    y, x = q.popleft()
                    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < rows and 0 <= xx < cols and mask[yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            q.append((yy, xx))
    return n


# ---------------------------------------------------------------- entropy


@pytest.mark.parametrize("shape", [(1, 2), (3, 3), (4, 7), (16, 16)])
def test_uniform_map_has_entropy_log_n_and_normalized_one(shape):
    p = np.full(shape, 1.0 / (shape[0] * shape[1]))
    assert st.spatial_entropy(p) == pytest.approx(math.log(p.size))
    assert st.normalized_entropy(p) == pytest.approx(1.0)


def test_one_hot_map_has_zero_entropy():
    p = np.zeros((5, 6))
    p[2, 3] = 1.0
    assert st.spatial_entropy(p) == 0.0
    assert st.normalized_entropy(p) == 0.0


def test_one_patch_grid_normalized_entropy_is_zero():
    assert st.normalized_entropy(np.ones((1, 1))) == 0.0


def test_spatial_entropy_matches_scipy_on_random_maps_with_zeros():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(35, 0.3), size=(4, 3)).reshape(4, 3, 5, 7)
    p[0, 0, 0, :3] = 0.0
    p[0, 0] /= p[0, 0].sum()
    h = st.spatial_entropy(p)
    assert h.shape == (4, 3)
    expected = np.array([[scipy_entropy(p[i, j].ravel()) for j in range(3)] for i in range(4)])
    np.testing.assert_allclose(h, expected, rtol=1e-12)
    np.testing.assert_allclose(st.normalized_entropy(p), expected / math.log(35), rtol=1e-12)


def test_entropy_delta_first_is_nan_then_differences():
    d = st.entropy_delta(np.array([3.0, 2.5, 2.75]))
    assert np.isnan(d[0])
    np.testing.assert_allclose(d[1:], [-0.5, 0.25])


# ---------------------------------------------------------------- layer / head maps


def test_layer_maps_hand_computed_head_and_step_average():
    a = np.zeros((2, 2, 2, 1, 2), dtype=np.float32)  # [L, H, T, rows, cols]
    a[0, 0, 0] = [[0.1, 0.3]]
    a[0, 1, 0] = [[0.3, 0.1]]
    a[0, 0, 1] = [[0.2, 0.0]]
    a[0, 1, 1] = [[0.2, 0.0]]
    a[1] = [[0.05, 0.15]]  # every head/step alike
    m = st.layer_maps(a)
    # layer 0: mean = [(0.1+0.3+0.2+0.2)/4, (0.3+0.1)/4] = [0.2, 0.1] -> [2/3, 1/3]
    np.testing.assert_allclose(m[0], [[2 / 3, 1 / 3]], rtol=1e-6)
    np.testing.assert_allclose(m[1], [[0.25, 0.75]], rtol=1e-6)
    # only step 0: mean = [0.2, 0.2] -> [0.5, 0.5]
    np.testing.assert_allclose(st.layer_maps(a, steps=1)[0], [[0.5, 0.5]], rtol=1e-6)
    h = st.head_maps(a)
    assert h.shape == (2, 2, 1, 2)
    # head 0 layer 0: mean over steps = [0.15, 0.15]; head 1: [0.25, 0.05]
    np.testing.assert_allclose(h[0, 0], [[0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(h[0, 1], [[5 / 6, 1 / 6]], rtol=1e-6)


def test_layer_maps_renormalize_each_layer_to_one():
    rng = np.random.default_rng(1)
    a = rng.random((3, 4, 5, 6, 7)).astype(np.float32) * 0.01  # mass mostly went to text
    m = st.layer_maps(a, steps=2)
    assert m.shape == (3, 6, 7)
    np.testing.assert_allclose(m.sum(axis=(1, 2)), 1.0)
    np.testing.assert_allclose(m[1], a[1, :, :2].mean(axis=(0, 1)) / a[1, :, :2].mean(axis=(0, 1)).sum(), rtol=1e-5)
    np.testing.assert_allclose(st.head_maps(a).sum(axis=(2, 3)), 1.0)


def test_zero_mass_layer_or_head_raises():
    a = np.ones((3, 2, 2, 2, 2), dtype=np.float32)
    a[1] = 0.0
    with pytest.raises(ValueError, match="zero attention mass"):
        st.layer_maps(a)
    b = np.ones((1, 2, 2, 2, 2), dtype=np.float32)
    b[0, 1] = 0.0
    with pytest.raises(ValueError, match="zero attention mass"):
        st.head_maps(b)


@pytest.mark.parametrize("steps", [0, 3])
def test_layer_maps_rejects_bad_steps(steps):
    with pytest.raises(ValueError, match="steps"):
        st.layer_maps(np.ones((1, 1, 2, 2, 2)), steps=steps)


# ---------------------------------------------------------------- top-mass masks and components


def test_mass_rule_is_minimal_set_reaching_rho_on_random_maps():
    rng = np.random.default_rng(2)
    for _ in range(50):
        p = rng.dirichlet(np.full(48, 0.5)).reshape(6, 8)
        rho = float(rng.uniform(0.05, 1.0))
        m = st.top_mass_mask(p, rho, "mass")
        srt = np.sort(p.ravel())[::-1]
        k = int(np.argmax(np.cumsum(srt) >= rho - 1e-12)) + 1  # brute-force oracle
        assert m.sum() == k
        assert p[m].sum() >= rho - 1e-12
        assert p[m].min() >= p[~m].max() if (~m).any() else True


def test_top_mass_ties_break_by_flat_index():
    p = np.full((2, 5), 0.1)
    m = st.top_mass_mask(p, 0.2, "mass")
    assert np.flatnonzero(m).tolist() == [0, 1]
    m = st.top_mass_mask(p, 0.3, "patches")
    assert np.flatnonzero(m).tolist() == [0, 1, 2]


def test_mass_and_patches_rules_differ():
    p = np.full((4, 5), 0.5 / 19)
    p[1, 2] = 0.5  # one patch alone holds half of the mass
    assert st.top_mass_mask(p, 0.1, "mass").sum() == 1
    pm = st.top_mass_mask(p, 0.1, "patches")
    assert pm.sum() == 2  # ceil(0.1 * 20)
    assert pm[1, 2]


def test_patches_rule_ceil_is_robust_to_float_error():
    p = np.random.default_rng(3).random((10, 10))
    assert st.top_mass_mask(p, 0.07, "patches").sum() == 7  # 0.07 * 100 = 7.000000000000001
    assert st.top_mass_mask(p, 0.071, "patches").sum() == 8


@pytest.mark.parametrize("rho", [0.0, -0.1, 1.5, float("nan")])
def test_rho_validation(rho):
    with pytest.raises(ValueError, match="rho"):
        st.top_mass_mask(np.ones((2, 2)) / 4, rho)


def test_rule_validation_and_rho_one_keeps_everything():
    with pytest.raises(ValueError, match="rule"):
        st.top_mass_mask(np.ones((2, 2)) / 4, 0.1, "area")  # type: ignore[arg-type]
    p = np.random.default_rng(4).dirichlet(np.ones(12)).reshape(3, 4)
    assert st.top_mass_mask(p, 1.0, "mass").all()
    assert st.top_mass_mask(p, 1.0, "patches").all()


def test_one_contiguous_blob_has_zero_secondary_components():
    p = _blobs((10, 10), [(slice(3, 6), slice(4, 7))])
    assert st.top_mass_mask(p, 0.9).sum() == 9
    assert st.secondary_components(p, 0.9) == 0


def test_three_separated_blobs_have_two_secondary_components():
    blobs = [(slice(0, 2), slice(0, 2)), (slice(5, 7), slice(5, 8)), (slice(8, 10), slice(0, 3))]
    p = _blobs((10, 10), blobs)
    assert st.secondary_components(p, 0.9, "mass") == 2
    assert st.secondary_components(p, 0.16, "patches") == 2  # 16 patches = exactly the blobs


def test_diagonal_patches_are_separate_under_four_neighbour():
    m = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)
    assert st.component_count(m) == 3
    assert st.component_count(np.array([[1, 1], [0, 1]], dtype=bool)) == 1
    assert st.component_count(np.zeros((3, 3), dtype=bool)) == 0
    # DBSCAN with eps=1.5 links diagonal neighbours (documented difference)
    assert st.dbscan_components(m, eps=1.5, min_samples=1) == 1


def test_component_count_matches_flood_fill_on_random_masks():
    rng = np.random.default_rng(5)
    for _ in range(40):
        m = rng.random((9, 11)) < rng.uniform(0.2, 0.6)
        assert st.component_count(m) == _bfs_components(m)


def test_dbscan_agrees_with_components_on_clean_separated_blobs():
    blobs = [(slice(0, 2), slice(0, 2)), (slice(0, 3), slice(6, 7)), (slice(6, 8), slice(3, 6)), (slice(9, 12), 11)]
    m = np.zeros((12, 12), dtype=bool)
    for b in blobs:
        m[b] = True
    assert st.component_count(m) == 4
    assert st.dbscan_components(m) == 4


def test_dbscan_small_or_all_noise():
    m = np.zeros((6, 6), dtype=bool)
    m[0, 0] = m[5, 5] = True
    assert st.dbscan_components(m) == 0  # fewer points than min_samples
    m[0, 5] = True
    assert st.dbscan_components(m) == 0  # three isolated points: all noise
    assert st.component_count(m) == 3


def test_peakiness_and_top_mass_area():
    p = np.full((10, 10), 0.01)
    assert st.peakiness(p) == pytest.approx(0.01)
    assert st.top_mass_area_fraction(p, 0.1) == pytest.approx(0.1)
    q = _blobs((10, 10), [(slice(0, 2), slice(0, 2))], low=0.0)
    assert st.peakiness(q) == pytest.approx(0.25)
    assert st.top_mass_area_fraction(q, 0.5) == pytest.approx(0.02)


# ---------------------------------------------------------------- relevance-aware


def _fine_cover(boxes: np.ndarray, rows: int, cols: int, s: int = 64) -> np.ndarray:
    """Independent oracle: covered fraction per patch by supersampling s x s points per patch."""
    ys = (np.arange(rows * s) + 0.5) / (rows * s)
    xs = (np.arange(cols * s) + 0.5) / (cols * s)
    cov = np.zeros((rows * s, cols * s), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        cov |= ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]
    return cov.reshape(rows, s, cols, s).mean(axis=(1, 3))


def test_region_mask_hand_cases():
    m = st.region_mask([[0.0, 0.0, 0.5, 0.5]], (4, 4))
    expected = np.zeros((4, 4), dtype=bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(m, expected)
    # covers patch (0,1) exactly half -> inside; (0,2) not at all
    assert st.region_mask([[0.0, 0.0, 0.375, 0.25]], (4, 4))[0].tolist() == [True, True, False, False]
    # covers 20% of patch (0,1) -> outside
    assert st.region_mask([[0.0, 0.0, 0.3, 0.25]], (4, 4))[0].tolist() == [True, False, False, False]
    # tiny box -> exactly its centre patch
    tiny = st.region_mask([[0.60, 0.10, 0.61, 0.11]], (4, 4))
    assert np.flatnonzero(tiny).tolist() == [2]
    # x is the column axis on a non-square grid
    assert np.flatnonzero(st.region_mask([[0.9, 0.0, 0.95, 0.1]], (2, 5))).tolist() == [4]


def test_region_mask_uses_union_not_sum():
    a = [0.0, 0.0, 0.375, 0.125]  # 1/4 of patch (0,1)
    b = [0.3125, 0.125, 1.0, 0.25]  # 3/8 of patch (0,1), centre in column 2
    assert not st.region_mask([a], (4, 4))[0, 1]
    assert not st.region_mask([b], (4, 4))[0, 1]
    assert st.region_mask([a, b], (4, 4))[0, 1]  # union 5/8
    c = [0.0, 0.0, 0.34375, 0.25]  # 3/8 of patch (0,1), centre in column 0
    assert not st.region_mask([c, c], (4, 4))[0, 1]  # overlapping copies do not add up


def test_region_mask_matches_supersampling_oracle():
    rng = np.random.default_rng(6)
    for _ in range(30):
        rows, cols = int(rng.integers(2, 9)), int(rng.integers(2, 9))
        k = int(rng.integers(1, 4))
        lo = rng.uniform(0, 0.8, size=(k, 2))
        boxes = np.concatenate([lo, lo + rng.uniform(0.01, 0.5, size=(k, 2))], axis=1).clip(0, 1)
        m = st.region_mask(boxes, (rows, cols))
        frac = _fine_cover(boxes, rows, cols)
        centre = np.zeros((rows, cols), dtype=bool)
        for x0, y0, x1, y1 in boxes:
            centre[min(int((y0 + y1) / 2 * rows), rows - 1), min(int((x0 + x1) / 2 * cols), cols - 1)] = True
        assert m[centre].all()
        assert m[frac > 0.55].all()
        assert not m[(frac < 0.45) & ~centre].any()


@pytest.mark.parametrize("boxes", [[], [[0.5, 0.0, 0.4, 1.0]], [[0.0, 0.0, 1.2, 1.0]]])
def test_region_mask_rejects_bad_boxes(boxes):
    with pytest.raises(ValueError, match="region_mask"):
        st.region_mask(boxes, (3, 3))


def test_region_mass_and_ratio():
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 1:4] = True  # 6 of 20 patches
    u = np.full((4, 5), 1 / 20)
    assert st.region_mass(u, mask) == pytest.approx(0.3)
    assert st.region_mass_ratio(u, mask) == pytest.approx(1.0)
    p = np.zeros((4, 5))
    p[1, 1] = 0.6
    p[0, 0] = 0.4
    assert st.region_mass(p, mask) == pytest.approx(0.6)
    assert st.region_mass_ratio(p, mask) == pytest.approx(0.6 / 0.3)
    with pytest.raises(ValueError, match="empty"):
        st.region_mass(u, np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        st.region_mass(u, np.ones((5, 4), dtype=bool))


def test_pointing_hit():
    mask = np.zeros((3, 3), dtype=bool)
    mask[2, 2] = True
    p = np.full((3, 3), 0.1)
    p[2, 2] = 0.2
    assert st.pointing_hit(p, mask) is True
    p[0, 1] = 0.3
    assert st.pointing_hit(p, mask) is False
    q = np.full((3, 3), 1 / 9)  # ties: flat index 0 wins
    assert st.pointing_hit(q, mask) is False
    mask[0, 0] = True
    assert st.pointing_hit(q, mask) is True


@pytest.mark.parametrize("rule", ["mass", "patches"])
@pytest.mark.parametrize("rho", [0.1, 0.5, 0.9, 1.0])
def test_many_maps_at_once_equal_one_at_a_time(rule, rho):
    """top_mass_masks / secondary_components_many (vectorized, for every head of every block)
    equal the one-map functions, ties included (lowest flat index first)."""
    rng = np.random.default_rng(3)
    maps = rng.random((3, 5, 6, 7)) ** 4
    maps[0, 0] = 0
    maps[0, 0, 2, 3] = 1  # one-hot
    maps[0, 1] = 1.0  # all tied
    maps[1, 2] = np.round(maps[1, 2] * 5) + 1  # many ties
    maps /= maps.sum(axis=(-2, -1), keepdims=True)
    one = np.array([[st.top_mass_mask(m, rho, rule) for m in row] for row in maps])
    np.testing.assert_array_equal(st.top_mass_masks(maps, rho, rule), one)
    comps = np.array([[st.secondary_components(m, rho, rule) for m in row] for row in maps])
    np.testing.assert_array_equal(st.secondary_components_many(maps, rho, rule), comps)
