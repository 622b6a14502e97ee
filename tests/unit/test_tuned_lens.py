"""The tuned lens against its definitions, without a model: translators, KL, training on a
synthetic readout, the derived signals, the files and the layer-table columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vrp.analysis.config import AnalyzeConfig
from vrp.analysis.lens_config import MARGIN_FILE, SIGNALS_FILE, TUNED_DIR, LensConfig, margin_column
from vrp.analysis.lens_run import layer_columns, margin_signals, read_margins
from vrp.analysis.tuned_lens import TunedLens, final_logprobs, fit_translator, kl_per_item, mean_kl
from vrp.config import ConfigError
from vrp.signals.catalog import DERIVED, GOLD_ANSWER
from vrp.signals.mechanistic import peak_layer, positive_from


def test_config_validates_and_rejects_unknown_keys():
    assert LensConfig().epochs >= 1 and LensConfig(epochs=0).epochs == 0
    for bad in ({"epochs": -1}, {"lr": 0.0}, {"batch_size": 0}, {"patience": 0}, {"weight_decay": -1.0}):
        with pytest.raises(ConfigError):
            LensConfig(**bad)
    with pytest.raises(ConfigError, match="unknown LensConfig keys"):
        LensConfig.from_dict({"epochs": 3, "steps": 4})
    assert LensConfig.from_dict(LensConfig(lr=0.01).to_dict()) == LensConfig(lr=0.01)


def test_kl_matches_its_definition():
    rng = np.random.default_rng(0)
    p_logits, q_logits = torch.as_tensor(rng.normal(size=(4, 7))), torch.as_tensor(rng.normal(size=(4, 7)))
    logp = torch.log_softmax(p_logits, -1)
    p, q = torch.softmax(p_logits, -1).numpy(), torch.softmax(q_logits, -1).numpy()
    want = (p * (np.log(p) - np.log(q))).sum(-1)
    np.testing.assert_allclose(kl_per_item(logp, q_logits).numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(kl_per_item(logp, p_logits + 3.0).numpy(), 0.0, atol=1e-12)  # shift-invariant
    assert (kl_per_item(logp, q_logits) > 0).all()


def _synthetic(n: int = 400, d: int = 6, v: int = 9, seed: int = 0):
    """A readout (norm = identity, unembed = a fixed matrix) and residuals whose final distribution
    is the readout of a fixed affine map of them: the tuned lens can recover it, the logit lens cannot."""
    g = torch.Generator().manual_seed(seed)
    unembed = torch.randn(v, d, generator=g)

    def read(h):
        return h.float() @ unembed.T

    h = torch.randn(n, d, generator=g)
    a_true = torch.eye(d) + 0.8 * torch.randn(d, d, generator=g)
    b_true = torch.randn(d, generator=g)
    last = h @ a_true.T + b_true
    return read, h, last, a_true, b_true


def test_identity_translator_is_the_logit_lens_and_training_beats_it_on_held_out_items():
    read, h, last, _, _ = _synthetic()
    target = final_logprobs(read, last)
    tr, va, te = slice(0, 240), slice(240, 320), slice(320, 400)
    ident = TunedLens.identity([0, 1], h.shape[1])
    np.testing.assert_array_equal(ident.translate(0, h).numpy(), h.numpy())  # A = I, b = 0: exactly h
    assert mean_kl(read, h[te], target[te], torch.eye(h.shape[1]), torch.zeros(h.shape[1])) == pytest.approx(
        mean_kl(read, h[te], target[te]), rel=1e-12
    )
    assert mean_kl(read, last, target) == pytest.approx(0.0, abs=1e-9)  # the last layer reads the output
    untrained = fit_translator(read, h[tr], target[tr], h[va], target[va], LensConfig(epochs=0))
    np.testing.assert_array_equal(untrained.weight, np.eye(h.shape[1], dtype=np.float32))
    assert untrained.best_epoch == 0 and not untrained.bias.any()
    fit = fit_translator(
        read, h[tr], target[tr], h[va], target[va], LensConfig(lr=0.1, epochs=60, patience=10, batch_size=240)
    )
    w, b = torch.as_tensor(fit.weight), torch.as_tensor(fit.bias)
    assert fit.best_epoch >= 1 and fit.val_kl < fit.val_kl_identity
    assert fit.val_kl == pytest.approx(mean_kl(read, h[va], target[va], w, b), rel=1e-6)  # the kept one
    held_out, logit = mean_kl(read, h[te], target[te], w, b), mean_kl(read, h[te], target[te])
    assert held_out < 0.2 * logit, (held_out, logit)


def test_a_translator_that_cannot_beat_the_identity_stays_the_identity():
    read, h, _, _, _ = _synthetic()
    target = final_logprobs(read, h)  # the final distribution IS the logit lens of this layer
    fit = fit_translator(read, h[:200], target[:200], h[200:], target[200:], LensConfig(lr=0.05, epochs=5, patience=2))
    assert fit.best_epoch == 0 and fit.val_kl == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(fit.weight, np.eye(h.shape[1], dtype=np.float32))


def test_save_load_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(1)
    layers = (0, 2, 4)
    lens = TunedLens(layers, {l: rng.normal(size=(5, 5)).astype(np.float32) for l in layers},
                     {l: rng.normal(size=5).astype(np.float32) for l in layers})  # fmt: skip
    path = lens.save(tmp_path / "lens" / "translators.safetensors")
    back = TunedLens.load(path)
    assert back.layers == layers and back.d_model == 5
    for l in layers:
        np.testing.assert_array_equal(back.weight[l], lens.weight[l])
        np.testing.assert_array_equal(back.bias[l], lens.bias[l])
    h = torch.as_tensor(rng.normal(size=(3, 5)), dtype=torch.float32)
    np.testing.assert_allclose(back.translate(2, h).numpy(), h.numpy() @ lens.weight[2].T + lens.bias[2], rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="vrp lens train"):
        TunedLens.load(tmp_path / "nothing.safetensors")
    from safetensors.numpy import save_file

    save_file({"weight.0": np.eye(5, dtype=np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a tuned lens"):
        TunedLens.load(tmp_path / "other.safetensors")
    save_file({"weight.0": np.eye(5, dtype=np.float32)}, str(tmp_path / "partial.safetensors"),
              metadata={"format": "vrp-tuned-lens-1", "residual_layers": "[0]"})  # fmt: skip
    with pytest.raises(ValueError, match="expected the arrays"):
        TunedLens.load(tmp_path / "partial.safetensors")


def test_margin_signals_follow_the_logit_lens_definitions_on_residual_indices():
    m = np.array([[-1.0, 2.0, -0.5, 1.0, 3.0], [1.0, 2.0, 2.0, -1.0, -0.2], [0.5, 1.0, 1.0, 1.0, 1.0]])
    s = margin_signals(m, [0, 1, 2, 3, 4], n_layers=4)
    for i, row in enumerate(m):
        assert s["tuned_margin_peak"][i] == row.max()
        assert s["tuned_margin_peak_layer"][i] == peak_layer(row)
        assert s["tuned_margin_positive_from"][i] == positive_from(row)
    assert list(s["tuned_margin_positive_from"]) == [3, 5, 0]  # never positive at the end: L + 1 = 5
    assert list(s["tuned_margin_peak_layer"]) == [4, 1, 1]  # first on ties
    # only some residual layers stored: the signals are residual indices, "never" is still L + 1
    sub = margin_signals(np.array([[-1.0, 2.0, 1.0], [1.0, 3.0, -1.0], [np.nan, 1.0, 1.0]]), [0, 9, 33], n_layers=32)
    assert list(sub["tuned_margin_peak_layer"][:2]) == [9, 9] and list(sub["tuned_margin_positive_from"][:2]) == [9, 33]
    assert all(np.isnan(v[2]) for v in sub.values())  # an item without a reference token


def _write_margins(run_dir, ids, layers, margin):
    d = run_dir / TUNED_DIR
    d.mkdir(parents=True)
    cols = {"id": ids, "split": ["train"] * len(ids)}
    cols.update({margin_column(l): margin[:, k] for k, l in enumerate(layers)})
    pq.write_table(pa.table(cols), d / MARGIN_FILE)


def test_layer_columns_are_the_tuned_margins_statistics(tmp_path):
    assert layer_columns(tmp_path, {}, [0, 1], AnalyzeConfig(n_boot=10)) == {} and read_margins(tmp_path) is None
    rng = np.random.default_rng(3)
    n, layers = 60, [0, 2, 3]
    ids = [f"i{k}" for k in range(n)]
    y = rng.random(n) < 0.6
    margin = rng.normal(size=(n, 3)) + y[:, None] * np.array([0.0, 1.0, 2.0])
    _write_margins(tmp_path, ids, layers, margin)
    got_ids, got_layers, got = read_margins(tmp_path)
    assert got_ids == ids and got_layers == layers
    np.testing.assert_array_equal(got, margin)
    correct = dict(zip(ids, y.tolist(), strict=True))
    cols = layer_columns(tmp_path, correct, [0, 1, 2, 3], AnalyzeConfig(n_boot=200))
    assert np.isnan(cols["tuned_margin_auroc"][1]) and np.isnan(cols["tuned_margin_correct_mean"][1])  # not stored
    for k, layer in enumerate(layers):
        assert cols["tuned_margin_auroc"][layer] == pytest.approx(roc_auc_score(y, margin[:, k]))
        assert cols["tuned_margin_correct_mean"][layer] == pytest.approx(margin[y, k].mean())
        assert cols["tuned_margin_wrong_mean"][layer] == pytest.approx(margin[~y, k].mean())
        assert (
            cols["tuned_margin_wrong_ci_low"][layer] < margin[~y, k].mean() < cols["tuned_margin_wrong_ci_high"][layer]
        )


def test_catalog_entries_name_the_files_the_lens_writes():
    tuned = {d.name: d for d in DERIVED if d.made_by == "vrp lens train"}
    assert set(tuned) == {"tuned_margin_peak", "tuned_margin_peak_layer", "tuned_margin_positive_from"}
    for d in tuned.values():
        assert d.source == f"{TUNED_DIR}/{SIGNALS_FILE}" and d.family == "mechanistic" and d.needs == GOLD_ANSWER
    assert {d.name: d.direction for d in tuned.values()} == {
        "tuned_margin_peak": "higher", "tuned_margin_peak_layer": "none", "tuned_margin_positive_from": "lower"
    }  # fmt: skip


def test_lens_train_options_take_the_config_defaults():
    import typer

    from vrp.cli import app
    from vrp.config import field_default, field_help

    cmd = typer.main.get_command(app).commands["lens"].commands["train"]
    options = {p.name: p for p in cmd.params if p.param_type_name == "option"}
    assert set(LensConfig.__dataclass_fields__) <= set(options)
    for name in LensConfig.__dataclass_fields__:
        assert options[name].default == field_default(LensConfig, name), name
        assert options[name].help == field_help(LensConfig)[name], name
    assert options["run"].required
