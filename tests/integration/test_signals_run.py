"""Signals in `vrp run` on the shipped toy LLaVA: lens oracles, margin properties, storage
schema and options, and the error handling of a batch (out-of-memory halving, one bad item)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers import cli_run
from vrp.capture.engine import CaptureConfig, capture_generate
from vrp.capture.lens import lens_readout, reference_ids
from vrp.data.images import open_image
from vrp.data.items import load_generic_jsonl
from vrp.models import load_adapter
from vrp.runs import storage
from vrp.runs.rundir import items_schema
from vrp.runs.worker import BatchWorker
from vrp.signals import catalog, mechanistic
from vrp.world.dataset import write_dataset

ARGS = ["--data", "shapesworld:8", "--batch-size", "8", "--samples", "4", "--max-new-tokens", "4"]


@pytest.fixture(scope="module")
def llava():
    return load_adapter("toy-llava")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    write_dataset(d, n_images=6, seed=11)
    return load_generic_jsonl(d / "items.jsonl").items


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sig") / "run"
    cli_run(out, *ARGS)
    return out


def _yes_no(items):
    return [it for it in items if it.task == "existence"]


def test_lens_margin_matches_the_models_own_first_step(llava, world):
    items = _yes_no(world)[:6]
    caps = capture_generate(llava, [open_image(it.image) for it in items], [llava.prompt(it.question) for it in items],
                            CaptureConfig(dtype="float32"))  # fmt: skip
    for it, cap in zip(items, caps, strict=True):
        refs = reference_ids(llava.tokenizer, it.answers)
        lens = lens_readout(llava, cap.residual[0], refs)
        lp = cap.logprobs[0]  # the model's real first-step log-probabilities
        others = np.delete(lp, refs)
        oracle = lp[refs].max() - others.max()  # log-softmax shifts cancel in a difference
        assert mechanistic.truth_margin(lens.ref_logits, lens.rival_logits)[-1] == pytest.approx(oracle, abs=1e-4)
        assert lens.top_ids[-1] == int(np.argmax(lp))


def test_margin_changes_sign_when_the_gold_is_swapped(llava, world):
    items = _yes_no(world)
    caps = capture_generate(llava, [open_image(it.image) for it in items], [llava.prompt(it.question) for it in items],
                            CaptureConfig(dtype="float32", attention=False, writes=False))  # fmt: skip
    for cap in caps:
        m = {
            g: mechanistic.truth_margin(*_ref_rival(lens_readout(llava, cap.residual[0], reference_ids(llava.tokenizer, [g]))))
            for g in ("yes", "no")
        }  # fmt: skip
        assert np.sign(m["yes"][-1]) == -np.sign(m["no"][-1]) != 0


def _ref_rival(lens):
    return lens.ref_logits, lens.rival_logits


def test_readout_direction_is_the_gradient_of_the_logit_difference(llava, world):
    it = _yes_no(world)[0]
    cap = capture_generate(llava, [open_image(it.image)], [llava.prompt(it.question)], CaptureConfig(dtype="float32"))[
        0
    ]
    refs = reference_ids(llava.tokenizer, it.answers)
    lens = lens_readout(llava, cap.residual[0], refs)
    h = cap.residual[0][-1].astype(np.float64)
    target, rival = int(lens.ref_ids[np.argmax(lens.ref_logits[-1])]), int(lens.rival_ids[-1])

    def diff(x):
        logits = llava.logit_lens(torch.as_tensor(x, dtype=torch.float32)).double()
        return float(logits[target] - logits[rival])

    rng = np.random.default_rng(0)
    for _ in range(3):
        v = rng.normal(size=h.shape)
        eps = 1e-3 * np.linalg.norm(h) / np.linalg.norm(v)
        fd = (diff(h + eps * v) - diff(h - eps * v)) / (2 * eps)  # central finite difference
        assert float(lens.direction @ v) == pytest.approx(fd, rel=2e-2, abs=1e-3)


def test_last_layer_margin_sign_agrees_with_correctness_on_yes_no(toy_run):
    df = pq.read_table(toy_run / "items.parquet").to_pandas()
    yn = df[df.task == "existence"]
    assert len(yn) >= 16 and yn["correct"].nunique() == 2
    assert ((yn["margin_last"] > 0) == yn["correct"]).all()


def test_items_schema_and_shard_arrays(toy_run):
    table = pq.read_table(toy_run / "items.parquet")
    assert table.schema.equals(items_schema())
    df = table.to_pandas()
    for name in catalog.NAMES:  # every signal is computed for some item
        assert df[name].notna().any(), name
    assert df["self_consistency"].between(0.25, 1.0).all()  # K = 4: at least 1/4
    assert all(len(s) == 4 for s in df["samples"])
    # readable without vrp
    import duckdb
    import polars as pl

    assert pl.read_parquet(toy_run / "items.parquet").height == len(df)
    con = duckdb.connect()
    n_dd, acc_dd = con.execute(f"select count(*), avg(correct::int) from '{toy_run / 'items.parquet'}'").fetchone()
    assert n_dd == len(df) and acc_dd == pytest.approx(df["correct"].mean())
    # shard arrays: decision-position residuals, per-layer curves, one attention map per item
    ids, res = storage.load_stacked(toy_run, "residual")
    assert ids == list(df["id"])
    n_layers = 4
    assert res.dtype == np.float16 and res.shape[:2] == (len(df), n_layers + 1)
    _, margin = storage.load_stacked(toy_run, "curve.margin")
    np.testing.assert_allclose(margin[:, -1], df["margin_last"], rtol=1e-5, atol=1e-5)
    _, ent = storage.load_stacked(toy_run, "curve.attn_entropy")
    assert ent.shape == (len(df), n_layers)
    np.testing.assert_allclose(ent[:, -1], df["attn_entropy"], rtol=1e-5)
    _, arrays0 = next(storage.iter_shards(toy_run))
    assert arrays0["attention.0"].shape == (n_layers, 4, 4)
    np.testing.assert_allclose(arrays0["attention.0"].sum(axis=(1, 2)), 1.0, rtol=1e-5)
    m = json.loads((toy_run / "manifest.json").read_text())
    assert m["disk"]["bytes_per_item"] == pytest.approx(m["disk"]["shard_bytes"] / len(df), abs=0.1)


def test_store_options_shrink_the_shards(toy_run, tmp_path):
    out = tmp_path / "slim"
    extra = ["--store-layers", "0,-1", "--store-attention", "heads", "--no-residuals"]
    cli_run(out, *ARGS, *extra)
    _, arrays = next(storage.iter_shards(out))
    assert "residual" not in arrays
    assert arrays["attention.0"].shape == (2, 4, 4, 4)  # layers 0 and 3, 4 heads, 4x4 grid
    _, full = next(storage.iter_shards(toy_run))
    heads = arrays["attention.0"].mean(axis=1)  # raw per-head maps -> the head-averaged map p_l
    np.testing.assert_allclose(heads / heads.sum(axis=(1, 2), keepdims=True), full["attention.0"][[0, 3]], rtol=1e-4)
    cli_run(tmp_path / "none", *ARGS, "--store-attention", "none", "--no-residuals")
    sizes = [
        json.loads((d / "manifest.json").read_text())["disk"]["bytes_per_item"] for d in (toy_run, tmp_path / "none")
    ]
    assert sizes[1] < sizes[0]


def test_out_of_memory_halves_the_batch_and_one_bad_item_is_isolated(llava, world, monkeypatch, caplog):
    from vrp.config import RunConfig

    items = world[:6]
    worker = BatchWorker(llava, RunConfig(samples=2, max_new_tokens=3))
    ref = worker.run_batch(items).table.to_pandas()
    real = BatchWorker._compute
    sizes = []

    def fake(self, its, ims):
        sizes.append(len(its))
        if len(its) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        if any(it.id == items[4].id for it in its):
            raise ValueError("simulated failure of one item")
        return real(self, its, ims)

    monkeypatch.setattr(BatchWorker, "_compute", fake)
    with caplog.at_level("WARNING", logger="vrp"):
        out = worker.run_batch(items)
    assert sizes[:3] == [6, 3, 1]  # 6 -> 3 + 3 -> ... halves while out of memory
    assert "out of memory on a batch of 6" in caplog.text
    assert [f["id"] for f in out.failures] == [items[4].id] and out.failures[0]["stage"] == "capture"
    got = out.table.to_pandas()
    assert list(got["id"]) == [it.id for i, it in enumerate(items) if i != 4]
    same = ref.set_index("id").loc[got["id"]]
    assert list(got["answer"]) == list(same["answer"])
