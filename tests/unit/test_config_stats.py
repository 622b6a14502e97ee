"""RunConfig / WorldConfig construction and the Wilson interval."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from scipy.stats import binomtest

from vrp.config import ConfigError, RunConfig
from vrp.stats.intervals import wilson_ci
from vrp.world.scene import WorldConfig

# --------------------------------------------------------------------------- RunConfig


def test_runconfig_defaults_and_round_trip():
    cfg = RunConfig()
    assert cfg.model == "toy-llava" and cfg.data == "shapesworld" and cfg.limit is None
    d = cfg.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(RunConfig)}
    assert RunConfig.from_dict(json.loads(json.dumps(d))) == cfg
    custom = RunConfig.from_dict({"model": "/m", "limit": 5, "batch_size": 2, "dtype": "bfloat16", "seed": 3})
    assert (custom.model, custom.limit, custom.batch_size, custom.dtype, custom.seed) == ("/m", 5, 2, "bfloat16", 3)
    assert RunConfig.from_dict(custom.to_dict()) == custom


def test_runconfig_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().seed = 1  # type: ignore[misc]


@pytest.mark.parametrize("extra", [{"batchsize": 4}, {"model": "x", "temprature": 0.7}, {"": 1}])
def test_runconfig_unknown_keys_rejected(extra):
    with pytest.raises(ConfigError) as ei:
        RunConfig.from_dict(extra)
    bad = sorted(set(extra) - {f.name for f in dataclasses.fields(RunConfig)})
    assert repr(bad) in str(ei.value)
    assert isinstance(ei.value, ValueError)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("limit", 0),
        ("limit", -5),
        ("batch_size", 0),
        ("batch_size", -1),
        ("max_new_tokens", 0),
        ("dtype", "float64"),
        ("dtype", "fp16"),
        ("world_images", 0),
    ],
)
def test_runconfig_invalid_values_rejected(key, value):
    with pytest.raises(ConfigError, match=key):
        RunConfig.from_dict({key: value})
    with pytest.raises(ConfigError):
        RunConfig(**{key: value})


@pytest.mark.parametrize(
    ("key", "value"), [("limit", 1), ("batch_size", 1), ("max_new_tokens", 1), ("world_images", 1)]
)
def test_runconfig_boundary_values_accepted(key, value):
    assert getattr(RunConfig.from_dict({key: value}), key) == value


@pytest.mark.parametrize(("key", "value"), [("batch_size", "16"), ("limit", "5"), ("world_images", None)])
def test_runconfig_wrong_type_is_config_error(key, value):
    with pytest.raises(ConfigError):
        RunConfig.from_dict({key: value})


# --------------------------------------------------------------------------- WorldConfig


def test_worldconfig_json_round_trip():
    cfg = WorldConfig(image_size=64, small_px=(8, 10), large_px=(16, 20), background=(0, 0, 0), theme_prob=0.5)
    d = json.loads(json.dumps(cfg.to_dict()))  # tuples become lists in JSON
    back = WorldConfig.from_dict(d)
    assert back == cfg
    assert isinstance(back.small_px, tuple) and isinstance(back.background, tuple)
    assert WorldConfig.from_dict({}) == WorldConfig()


@pytest.mark.parametrize("extra", [{"imagesize": 32}, {"image_size": 32, "colours": 3}])
def test_worldconfig_unknown_keys_rejected(extra):
    with pytest.raises(ValueError, match="unknown WorldConfig keys") as ei:
        WorldConfig.from_dict(extra)
    bad = sorted(set(extra) - {f.name for f in dataclasses.fields(WorldConfig)})
    assert repr(bad) in str(ei.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"min_objects": 0},  # generate() then crashes: 'high <= 0' in existence_questions
        {"min_objects": 4, "max_objects": 2},  # 'low >= high'
        {"n_groups": 0},  # 'number sections must be larger than 0'
        {"n_groups": 30},  # more groups than the 18 categories: empty theme groups
        {"image_size": 10},  # smaller than a large object
        {"theme_prob": 1.5},
        {"small_px": [12, 9]},
        {"hue_jitter": -1.0},
    ],
)
def test_worldconfig_invalid_values_rejected(bad):
    with pytest.raises(ValueError):
        WorldConfig.from_dict(bad)


# --------------------------------------------------------------------------- Wilson interval

KN = [
    (0, 1),
    (1, 1),
    (0, 10),
    (10, 10),
    (3, 10),
    (5, 10),
    (1, 100),
    (50, 100),
    (99, 100),
    (0, 1000),
    (1000, 1000),
    (137, 1000),
    (7, 23),
]


@pytest.mark.parametrize(("k", "n"), KN)
def test_wilson_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_ci(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9)
    assert hi == pytest.approx(ref.high, abs=1e-9)
    assert 0.0 <= lo <= hi <= 1.0
    assert lo - 1e-12 <= k / n <= hi + 1e-12


@pytest.mark.parametrize("level", [0.8, 0.9, 0.99])
@pytest.mark.parametrize(("k", "n"), [(0, 20), (7, 20), (20, 20)])
def test_wilson_other_levels_match_scipy(k, n, level):
    ref = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    lo, hi = wilson_ci(k, n, level=level)
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-9)


@pytest.mark.parametrize("n", [3, 7, 10, 1000])
def test_wilson_exact_edges(n):
    assert wilson_ci(0, n)[0] == 0.0
    assert wilson_ci(n, n)[1] == 1.0


def test_wilson_edges_and_monotonicity():
    assert wilson_ci(0, 10)[0] == 0.0
    assert wilson_ci(1, 1)[1] == 1.0
    lo, hi = wilson_ci(0, 0)
    assert math.isnan(lo) and math.isnan(hi)
    # Symmetry: the interval for k failures mirrors the one for k successes.
    lo, hi = wilson_ci(3, 17)
    lo2, hi2 = wilson_ci(14, 17)
    assert (lo, hi) == pytest.approx((1 - hi2, 1 - lo2), abs=1e-12)
    # Wider at higher confidence, narrower with more data.
    w = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert w(wilson_ci(5, 20, 0.99)) > w(wilson_ci(5, 20, 0.95)) > w(wilson_ci(5, 20, 0.8))
    assert w(wilson_ci(50, 200)) < w(wilson_ci(5, 20))


@pytest.mark.parametrize(("k", "n"), [(-1, 10), (11, 10)])
def test_wilson_rejects_out_of_range(k, n):
    with pytest.raises(ValueError):
        wilson_ci(k, n)


@pytest.mark.parametrize(
    "bad",
    [
        {"samples": -1}, {"samples": True}, {"temperature": 0.0}, {"top_p": 1.5}, {"top_p": 0}, {"rho": 0.0},
        {"rho": 1.2}, {"rho_rule": "area"}, {"store_attention": "all"}, {"store_layers": "a,b"},
        {"store_layers": "1;2"}, {"store_residuals": "yes"}, {"engine": "dask"}, {"workers": 0},
    ],
)  # fmt: skip
def test_runconfig_signal_and_storage_options_validated(bad):
    with pytest.raises(ConfigError):
        RunConfig(**bad)


def test_stored_layers_resolution():
    assert RunConfig().stored_layers(4) == [0, 1, 2, 3]
    assert RunConfig(store_layers="none").stored_layers(4) == []
    assert RunConfig(store_layers="3, 0,-1").stored_layers(4) == [0, 3]
    assert RunConfig(temperature=1).temperature == 1  # an int is a fine float
    with pytest.raises(ConfigError, match="outside the model's 4 decoder blocks"):
        RunConfig(store_layers="0,4").stored_layers(4)
    with pytest.raises(ConfigError, match="outside"):
        RunConfig(store_layers="-5").stored_layers(4)
    assert set(RunConfig.OPERATIONAL) == {"engine", "workers", "out", "shard_mb", "shard_items"}
