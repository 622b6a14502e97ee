"""Interventions on real HF models: the issue's identities on all three families, and
`vrp intervene` end to end on a shipped toy run."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import cli_run
from vrp.cli import app
from vrp.interventions import edits, masking
from vrp.interventions.schema import EFFECTS, PATCHING
from vrp.models import load_adapter
from vrp.world.scene import WorldConfig, WorldStats, render, sample_scene


def _inputs(adapter, n: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    wcfg = WorldConfig(image_size=48)
    stats = WorldStats.from_config(wcfg)
    images = [render(sample_scene(rng, wcfg, stats), wcfg) for _ in range(n)]
    prompts = [adapter.prompt(q) for q in ("Is there a red circle?", "How many shapes are there?")[:n]]
    enc = adapter.encode(images, prompts, padding_side="left")
    return images, prompts, enc


def _logits(adapter, enc) -> torch.Tensor:
    with torch.no_grad():
        return adapter.model(**enc).logits.float()


@pytest.fixture(scope="module", params=["llava", "paligemma", "qwen2vl"])
def adapter(request, random_toy_dirs):
    return load_adapter(random_toy_dirs[request.param])


def test_zeroing_every_mlp_unit_equals_mlp_bypass(adapter):
    _, _, enc = _inputs(adapter)
    d = int(adapter.text_config.hidden_size)
    clean = _logits(adapter, enc)
    with edits.ablate_units(adapter, "blocks.1.mlp_out", range(d)):
        zeroed = _logits(adapter, enc)
    with edits.bypass(adapter, "blocks.1.mlp_out"):
        bypassed = _logits(adapter, enc)
    assert torch.equal(zeroed, bypassed)
    assert not torch.allclose(zeroed, clean, atol=1e-4)
    assert torch.equal(_logits(adapter, enc), clean)  # hooks removed on exit


def test_ablating_every_head_equals_attention_bypass(adapter):
    _, _, enc = _inputs(adapter)
    n_heads = int(adapter.text_config.num_attention_heads)
    with edits.ablate_heads(adapter, 2, range(n_heads)):
        heads = _logits(adapter, enc)
    with edits.bypass(adapter, "blocks.2.attn_out"):
        bypassed = _logits(adapter, enc)
    assert torch.equal(heads, bypassed)
    with edits.ablate_heads(adapter, 2, [0]):
        one = _logits(adapter, enc)
    assert not torch.equal(one, heads) and not torch.equal(one, _logits(adapter, enc))


def test_unit_ablation_and_clamp_set_the_units(adapter):
    _, _, enc = _inputs(adapter)
    units = [3, 17, 40]
    for values in (0.0, [1.5, -2.0, 7.0]):
        with (
            edits.ablate_units(adapter, "blocks.1.resid_post", units, values=values),
            edits.record(adapter, ["blocks.1.resid_post"]) as rec,
        ):
            _logits(adapter, enc)
        got = rec.acts["blocks.1.resid_post"][..., units]
        want = torch.as_tensor(values, dtype=got.dtype).expand_as(got)
        assert torch.equal(got, want)


def test_patching_every_layer_from_clean_reproduces_clean_logits(adapter):
    images, prompts, enc = _inputs(adapter)
    grids = adapter.image_grids(enc, [im.size for im in images])
    corrupt = [masking.mask_pixels(im, range(g[0].rows * g[0].cols), g[0].rows, g[0].cols, g[0].view.to_image,
                                   "image-mean") for im, g in zip(images, grids, strict=True)]  # fmt: skip
    enc_x = adapter.encode(corrupt, prompts, padding_side="left")
    assert torch.equal(enc["input_ids"], enc_x["input_ids"])
    n = len(adapter.decoder_layers())
    sites = [f"blocks.{i}.{s}" for s in ("resid_post", "attn_out", "mlp_out") for i in range(n)]
    with edits.record(adapter, sites) as rec:
        clean = _logits(adapter, enc)
    corrupted = _logits(adapter, enc_x)
    assert not torch.allclose(clean, corrupted, atol=1e-3)
    with edits.patch(adapter, {f"blocks.{i}.resid_post": rec.acts[f"blocks.{i}.resid_post"] for i in range(n)}):
        assert torch.equal(_logits(adapter, enc_x), clean)
    # restoring block 0's output at every position makes everything after it clean, exactly
    with edits.patch(adapter, {"blocks.0.resid_post": rec.acts["blocks.0.resid_post"]}):
        assert torch.equal(_logits(adapter, enc_x), clean)
    # restoring only the image-independent writes of the last block does not
    with edits.patch(adapter, {"blocks.-1.mlp_out": rec.acts[f"blocks.{n - 1}.mlp_out"]}, last_only=True):
        assert not torch.equal(_logits(adapter, enc_x)[:, -1], clean[:, -1])


def test_embedding_masking_of_zero_patches_changes_nothing(adapter):
    images, _, enc = _inputs(adapter)
    grids = adapter.image_grids(enc, [im.size for im in images])
    clean = _logits(adapter, enc)
    with edits.mask_image_tokens(adapter, [[] for _ in grids], [g[0].token_index for g in grids]):
        assert torch.equal(_logits(adapter, enc), clean)
    with edits.mask_image_tokens(adapter, [g[0].token_index[:3] for g in grids], [g[0].token_index for g in grids]):
        assert not torch.equal(_logits(adapter, enc), clean)


def test_view_to_image_inverts_to_grid(adapter):
    size = (64, 48)
    enc = adapter.encode([Image.new("RGB", size)], [adapter.prompt("Describe the image.")])
    (grid,) = adapter.image_grids(enc, [size])[0]
    view = grid.view
    if adapter.family == "llava":  # CLIP: shortest edge to 48, centre crop 48 x 48 of the 64 x 48 image
        assert view.box == (8.0, 0.0, 56.0, 48.0)
    else:
        assert view.box == (0.0, 0.0, 64.0, 48.0)
    for box in [(10.0, 5.0, 30.0, 20.0), (20.0, 10.0, 44.0, 40.0)]:
        v = view.to_grid(box)
        assert np.allclose(view.to_image(v), box)
    if adapter.family == "llava":
        assert view.to_grid((0.0, 0.0, 4.0, 4.0)) is None  # left of the crop


# ---- vrp intervene on a shipped toy run ---------------------------------------------


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("iv") / "run"
    cli_run(out, "--data", "shapesworld:16", "--samples", "0", "--max-new-tokens", "4", "--seed", "3")
    return out


def _intervene(run, *args):
    res = CliRunner().invoke(app, ["intervene", "--run", str(run), "--n-boot", "400", *args])
    return res


def test_neurons_need_probes(toy_run):
    res = _intervene(toy_run, "--kind", "neurons")
    assert res.exit_code == 2 and "vrp probe" in res.output


def test_mask_zero_patches_changes_nothing_end_to_end(toy_run):
    res = _intervene(toy_run, "--kind", "patches", "--frac", "0", "--name", "zero-mask")
    assert res.exit_code == 0, res.output
    t = pq.read_table(toy_run / "interventions" / "effects.parquet").to_pandas()
    t = t[t.experiment == "zero-mask"]
    assert len(t) and (t.delta_pp == 0).all() and (t.margin_delta == 0).all()
    assert (t.delta_ci_low == 0).all() and (t.delta_ci_high == 0).all()


def test_intervene_tables_resume_and_seeded_controls(toy_run, monkeypatch):
    res = CliRunner().invoke(app, ["probe", "--run", str(toy_run), "--stacked-k", "2"])
    assert res.exit_code == 0, res.output
    res = _intervene(toy_run, "--kind", "neurons", "--k", "4", "--layers", "1,3")
    assert res.exit_code == 0, res.output
    out = toy_run / "interventions"
    t = pq.read_table(out / "effects.parquet")
    assert t.schema.equals(EFFECTS)
    df = t.to_pandas()
    df = df[df.experiment == "neurons"]
    from vrp.interventions.experiments import probe_units

    ranked = probe_units(toy_run, 4)  # fewer than k non-zero units: the probe's own, and as many random ones
    ks = {i: min(4, len(ranked[i])) for i in (1, 3)}
    assert set(df.condition) == {
        f"{w} L{i} residual zero" for i in (1, 3) for w in (f"probe top-{ks[i]}", f"random {ks[i]}")
    }
    assert set(df.task) == {"all", "existence", "counting", "spatial", "attribute"}
    items = pq.read_table(toy_run / "items.parquet").to_pandas()
    summary = json.loads((out / "summary.json").read_text())["experiments"]["neurons"]
    for cond in summary["conditions"]:
        got = pq.read_table(toy_run / cond["file"]).to_pandas()
        assert got.id.tolist() == items.id.tolist()
        row = df[(df.condition == cond["label"]) & (df.task == "all")].iloc[0]
        assert row.acc_intervened == pytest.approx(got.correct.mean())
        assert row.delta_pp == pytest.approx(100 * (got.correct.mean() - row.acc_clean))
        assert row.delta_ci_low <= row.delta_pp <= row.delta_ci_high
    assert summary["clean_agreement_with_run"] == 1.0
    assert df[df.task == "all"].acc_clean.iloc[0] == pytest.approx(items.correct.mean())

    # the same command again reuses every finished condition (nothing re-answered)
    import vrp.interventions.api as api

    def boom(*a, **k):
        raise AssertionError("a cached condition was recomputed")

    monkeypatch.setattr(api, "answer", boom)
    res = _intervene(toy_run, "--kind", "neurons", "--k", "4", "--layers", "1,3")
    assert res.exit_code == 0, res.output
    monkeypatch.undo()

    # random controls are fixed by the seed
    from vrp.interventions.experiments import control_rng

    a = control_rng(0, "neurons", 1, 4).choice(128, 4, replace=False)
    assert a.tolist() == control_rng(0, "neurons", 1, 4).choice(128, 4, replace=False).tolist()
    assert a.tolist() != control_rng(1, "neurons", 1, 4).choice(128, 4, replace=False).tolist()
    res = _intervene(toy_run, "--kind", "neurons", "--k", "4", "--layers", "1", "--seed", "1", "--name", "s1")
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())["experiments"]
    assert set(s) >= {"neurons", "s1", "zero-mask"}  # other experiments' rows are kept


def test_patching_tables(toy_run):
    res = _intervene(toy_run, "--kind", "patching", "--corruption", "all", "--sites", "residual,mlp")
    assert res.exit_code == 0, res.output
    t = pq.read_table(toy_run / "interventions" / "patching.parquet")
    assert t.schema.equals(PATCHING)
    df = t.to_pandas()
    last = df[(df.site == "residual") & (df.layer == df.layer.max())]
    assert last.recovered.iloc[0] == pytest.approx(1.0)  # the last block's output at the decision position
    assert set(df.site) == {"residual", "mlp"} and len(df) == 8


def test_bad_options_are_clear(toy_run):
    res = _intervene(toy_run, "--kind", "mlp", "--layers", "9")
    assert res.exit_code == 2 and "outside" in res.output
    res = _intervene(toy_run, "--kind", "shuffle")
    assert res.exit_code == 2 and "kind must be one of" in res.output


def test_masked_image_keeps_size_and_unmasked_pixels():
    im = Image.new("RGB", (48, 48), (10, 20, 30))
    out = masking.mask_pixels(im, [0], 4, 4, lambda v: (v[0] * 48, v[1] * 48, v[2] * 48, v[3] * 48))
    assert out.size == im.size and np.array_equal(np.asarray(out), np.asarray(im))
