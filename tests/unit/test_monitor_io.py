"""Monitor directory files, threshold rules and the probe arithmetic (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vrp.monitor import Monitor, MonitorError, choose_threshold, read_monitor
from vrp.monitor.files import FORMAT, META, WEIGHTS, write_monitor
from vrp.monitor.identity import content_sha256, model_sha256
from vrp.monitor.thresholds import operating_point

D = 8


def _doc(d: int = D) -> dict:
    return {
        "model": {"model_type": "llava", "sha256": "0" * 64, "d_model": d, "n_layers": 4, "dtype": "float32",
                  "name": "toy-llava"},
        "generation": {"max_new_tokens": 4, "batch_size": 16},
        "probe": {"residual_layer": 2, "input_dtype": "float16"},
        "threshold": {"value": 0.5},
    }  # fmt: skip


def _arrays(seed: int = 0, d: int = D) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "coef": rng.normal(size=d), "mean": rng.normal(size=d) * 3, "scale": rng.uniform(20, 60, size=d),
        "intercept": np.array([0.3]),
    }  # fmt: skip


@pytest.fixture
def mdir(tmp_path):
    return write_monitor(tmp_path / "mon", _arrays(), _doc())


def test_round_trip(mdir):
    arrays, doc = read_monitor(mdir)
    assert doc["format"] == FORMAT and doc["model"]["d_model"] == D
    for k, v in _arrays().items():
        np.testing.assert_array_equal(arrays[k], v.astype(np.float32))
        assert arrays[k].dtype == np.float32


def test_predict_proba_is_the_layerwise_probe_on_float16_rounded_residuals(mdir):
    from vrp.probes.linear import LayerwiseLogistic

    m = Monitor.load(mdir)
    a = _arrays()
    h = np.random.default_rng(1).normal(size=(5, D)) * 40  # float16 rounding matters at this scale
    x = h.astype(np.float16).astype(np.float32)
    want = 1 / (1 + np.exp(-(((x - a["mean"]) / a["scale"]) @ a["coef"] + 0.3)))
    np.testing.assert_allclose(m.p_correct(h), want, rtol=1e-5)
    ref = LayerwiseLogistic()
    ref.coef_, ref.intercept_ = a["coef"][None].astype(np.float32), np.float32([0.3])
    ref.mean_, ref.scale_ = a["mean"][None].astype(np.float32), a["scale"][None].astype(np.float32)
    p = m.p_correct(h)
    assert p.min() > 0.05 and p.max() < 0.95  # not saturated: the comparison means something
    np.testing.assert_allclose(p, ref.predict_proba(x)[:, 1], rtol=1e-6)  # float32 summation order
    np.testing.assert_array_equal(p, m.p_correct(x))  # already-rounded input: unchanged
    raw = 1 / (1 + np.exp(-(((h - a["mean"]) / a["scale"]) @ a["coef"] + 0.3)))
    assert np.abs(p - raw).max() > 1e-5  # the rounding is applied (and matters at this scale)


def test_a_rows_p_correct_does_not_depend_on_its_batch(mdir):
    m = Monitor.load(mdir)
    h = np.random.default_rng(2).normal(size=(37, D)) * 40
    np.testing.assert_array_equal(m.p_correct(h), np.concatenate([m.p_correct(r[None]) for r in h]))


def test_missing_directory_and_files(tmp_path, mdir):
    with pytest.raises(MonitorError, match="does not exist"):
        read_monitor(tmp_path / "nope")
    (mdir / WEIGHTS).unlink()
    with pytest.raises(MonitorError, match=r"monitor\.safetensors is missing"):
        read_monitor(mdir)
    (mdir / META).unlink()
    with pytest.raises(MonitorError, match=r"monitor\.json is missing"):
        Monitor.load(mdir)


def test_corrupted_weights_are_refused(mdir):
    blob = bytearray((mdir / WEIGHTS).read_bytes())
    blob[-3] ^= 0xFF  # one flipped byte in the data
    (mdir / WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(MonitorError, match=r"monitor\.safetensors is corrupted: its sha256 is"):
        read_monitor(mdir)
    (mdir / WEIGHTS).write_bytes(bytes(blob[:20]))  # truncated
    with pytest.raises(MonitorError, match="corrupted"):
        read_monitor(mdir)


def test_unreadable_weights_with_a_matching_hash(mdir):
    import hashlib

    garbage = b"not a safetensors file"
    (mdir / WEIGHTS).write_bytes(garbage)
    doc = json.loads((mdir / META).read_text())
    doc["files"][WEIGHTS]["sha256"] = hashlib.sha256(garbage).hexdigest()
    (mdir / META).write_text(json.dumps(doc))
    with pytest.raises(MonitorError, match="not a readable safetensors file"):
        read_monitor(mdir)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t[:-10], r"monitor\.json is not valid JSON"),
        (lambda t: "[1, 2]", "must hold a JSON object"),
        (lambda t: t.replace(FORMAT, "vrp-monitor-0"), "unsupported format 'vrp-monitor-0'"),
        (lambda t: t.replace('"max_new_tokens"', '"max_tokens"'), r"missing field\(s\) generation\.max_new_tokens"),
    ],
)
def test_bad_json(mdir, edit, match):
    (mdir / META).write_text(edit((mdir / META).read_text()))
    with pytest.raises(MonitorError, match=match):
        read_monitor(mdir)


def test_wrong_shapes_are_refused(tmp_path):
    d = write_monitor(tmp_path / "m", _arrays(d=D + 1), _doc(d=D))
    with pytest.raises(MonitorError, match=r"coef has shape \(9,\), expected \(8,\)"):
        read_monitor(d)


def test_monitor_error_is_a_value_error():
    assert issubclass(MonitorError, ValueError)


# ---- thresholds ---------------------------------------------------------------------------


def test_threshold_for_target_risk_keeps_the_most_items():
    # ranked: 0.9 ok, 0.8 ok, 0.7 wrong, 0.6 ok, 0.5 ok, 0.4 wrong, 0.3 wrong
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    y = np.array([1, 1, 0, 1, 1, 0, 0])
    assert choose_threshold(p, y, target_risk=0.0) == 0.8
    assert choose_threshold(p, y, target_risk=0.2) == 0.5  # 1 error in 5
    assert choose_threshold(p, y, target_risk=0.34) == 0.4  # 2 errors in 6
    assert choose_threshold(p, y, target_risk=3 / 7) == 0.3  # everything
    op = operating_point(p, y, 0.5)
    assert op["kept"] == 5 and op["coverage"] == pytest.approx(5 / 7) and op["risk"] == pytest.approx(0.2)
    lo, hi = op["risk_ci95"]
    assert lo < 0.2 < hi


def test_threshold_never_cuts_a_tie_block():
    p = np.array([0.9, 0.7, 0.7, 0.7, 0.2])
    y = np.array([1, 1, 0, 1, 0])
    # inside the 0.7 block the risk passes 0 -> 1/3 only on average; the block is all or nothing
    assert choose_threshold(p, y, target_risk=0.0) == 0.9
    assert choose_threshold(p, y, target_risk=0.25) == 0.7
    assert choose_threshold(p, y, target_coverage=0.4) == 0.7  # 2 needed, the block brings 4
    assert choose_threshold(p, y, target_coverage=0.2) == 0.9
    assert choose_threshold(p, y, target_coverage=1.0) == 0.2


def test_unreachable_risk_is_a_clear_error():
    p = np.array([0.9, 0.8, 0.1])
    y = np.array([0, 1, 1])
    with pytest.raises(MonitorError, match=r"no threshold reaches validation risk <= 0\.1: the lowest is 0\.333"):
        choose_threshold(p, y, target_risk=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        choose_threshold(p, y)
    with pytest.raises(MonitorError, match="constant"):
        choose_threshold(np.full(3, 0.5), y, target_risk=0.1)


# ---- identity -----------------------------------------------------------------------------


def test_content_hash_sees_weights_that_the_run_identity_misses(tmp_path):
    from vrp.runs import rundir

    a, b = tmp_path / "a", tmp_path / "b"
    for d, fill in ((a, 1), (b, 2)):
        d.mkdir()
        (d / "config.json").write_text('{"model_type": "llava"}')
        big = bytearray(rundir._WHOLE + 5 * rundir._SLICE + 123)  # sampled, not hashed whole
        big[len(big) // 2 : len(big) // 2 + rundir._SLICE * 4] = bytes([fill]) * (rundir._SLICE * 4)
        (d / "model.safetensors").write_bytes(bytes(big))
    assert model_sha256(a) == model_sha256(b)  # same config, names and sizes
    assert content_sha256(a) != content_sha256(b)
    assert content_sha256(a) == content_sha256(a)
