"""The toy-model training recipe: labels, losses, patch targets, determinism, gradient flow."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from vrp.models import adapter_for, load_adapter
from vrp.toys.build import build_toy
from vrp.toys.config import TrainConfig
from vrp.toys.forcing import encode_batch, per_example_loss
from vrp.toys.supervision import patch_labels
from vrp.toys.train import curriculum_world, train
from vrp.world.scene import COLOURS, SHAPES, Obj, Scene, WorldConfig, render


def _adapter(arch: str):
    model, processor = build_toy(arch, seed=0)
    return adapter_for(model.config.model_type)(model=model, processor=processor, path="")


def test_patch_labels_mark_covered_patches_only():
    sq = Obj("square", "blue", "large", (12, 12, 36, 36), hue=240.0)  # covers patches (1..2, 1..2) of 12 px
    colour, shape = patch_labels(Scene([sq], size=48), grid=4)
    grid_c, grid_s = colour.reshape(4, 4), shape.reshape(4, 4)
    inside = np.zeros((4, 4), bool)
    inside[1:3, 1:3] = True
    assert (grid_c[inside] == COLOURS.index("blue")).all() and (grid_s[inside] == SHAPES.index("square")).all()
    assert (grid_c[~inside] == len(COLOURS)).all() and (grid_s[~inside] == len(SHAPES)).all()


def test_per_example_loss_weights_examples_not_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.full((2, 6), -100)
    labels[0, 5] = 3  # one labelled token
    labels[1, 1:6] = torch.tensor([1, 2, 3, 4, 5])  # five labelled tokens
    ce = torch.nn.functional.cross_entropy
    ex0 = ce(logits[0, 4:5], labels[0, 5:6])
    ex1 = ce(logits[1, 0:5], labels[1, 1:6])
    assert torch.allclose(per_example_loss(logits, labels), (ex0 + ex1) / 2)


@pytest.mark.parametrize("arch", ["llava", "paligemma", "qwen2vl"])
def test_labels_cover_exactly_answer_and_eos(arch):
    ad = _adapter(arch)
    scene = Scene([Obj("circle", "red", "small", (2, 2, 12, 12), 0.0)], size=48)
    img = render(scene, WorldConfig())
    answers = ["yes", "small red circle large blue square"]
    _, labels = encode_batch(ad, [img, img], ["Is there a red circle in the image?", "Describe the image."], answers)
    tok = ad.tokenizer
    for i, a in enumerate(answers):
        got = labels[i][labels[i] != -100].tolist()
        assert got == tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_curriculum_caps_objects_then_releases():
    w = WorldConfig(max_objects=5)
    cfg = TrainConfig(steps=100, curriculum=0.5)
    assert curriculum_world(w, 0, cfg).max_objects == 2
    assert curriculum_world(w, 49, cfg).max_objects in (4, 5)
    assert curriculum_world(w, 50, cfg) is w


def test_truncated_schedule_replays_the_first_steps_of_the_full_run(tmp_path):
    """``schedule_steps`` lays the learning rate and the curriculum out over the longer run, so
    stopping after ``steps`` gives exactly that run's first ``steps`` (the shipped toy-qwen2vl)."""
    base = TrainConfig(arch="llava", batch_size=4, eval_every=2, eval_images=4, warmup=1, threads=1, curriculum=0.5)
    full = train(replace(base, steps=8), tmp_path / "full")["evals"]
    cut = train(replace(base, steps=4, schedule_steps=8), tmp_path / "cut")["evals"]
    own = train(replace(base, steps=4), tmp_path / "own")["evals"]
    assert [(e["step"], e["loss"], e["acc"]) for e in cut] == [(e["step"], e["loss"], e["acc"]) for e in full[:2]]
    assert [e["loss"] for e in own] != [e["loss"] for e in cut]  # its own schedule: other lr and curriculum
    w = WorldConfig(max_objects=5)
    assert curriculum_world(w, 3, replace(base, steps=4, schedule_steps=8)).max_objects == 4  # 2 + 3 * 3 / 4
    assert curriculum_world(w, 3, replace(base, steps=4)) is w
    with pytest.raises(ValueError, match="schedule_steps"):
        TrainConfig(steps=10, schedule_steps=5)


def test_a_step_count_stops_the_recipes_schedule_early_or_stretches_it():
    from vrp.toys.recipes import RECIPES, recipe_for

    assert recipe_for("qwen2vl")[0] == RECIPES["qwen2vl"]
    assert RECIPES["qwen2vl"].horizon > RECIPES["qwen2vl"].steps  # the shipped toy-qwen2vl stops early
    for arch, recipe in RECIPES.items():
        short, long = recipe_for(arch, steps=500)[0], recipe_for(arch, steps=recipe.horizon + 100)[0]
        assert (short.steps, short.horizon) == (500, recipe.horizon)
        assert (long.steps, long.horizon, long.schedule_steps) == (recipe.horizon + 100, recipe.horizon + 100, 0)
        assert replace(short, steps=recipe.steps, schedule_steps=recipe.schedule_steps) == recipe


def test_short_training_is_seeded_saves_loadable_model_and_reaches_vision_tower(tmp_path):
    cfg = TrainConfig(arch="llava", steps=6, batch_size=4, eval_every=3, eval_images=4, warmup=2, threads=1)
    logs = [train(cfg, tmp_path / f"m{k}") for k in range(2)]
    for a, b in zip(logs[0]["evals"], logs[1]["evals"], strict=True):
        assert a["loss"] == b["loss"] and a["acc"] == b["acc"]
    assert all(np.isfinite(e["vision_grad_norm"]) and e["vision_grad_norm"] > 0 for e in logs[0]["evals"])
    s0 = load_adapter(str(tmp_path / "m0")).model.state_dict()
    s1 = load_adapter(str(tmp_path / "m1")).model.state_dict()
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    saved = json.loads((tmp_path / "m0" / "training_log.json").read_text())
    assert saved["chosen"]["step"] in (3, 6)
    assert saved["device"] == "cpu"
    assert load_adapter(str(tmp_path / "m0")).supervised_heads == ()  # attn_sup_weight 0: the record says none
    assert json.loads((tmp_path / "m0" / "attention_supervision.json").read_text())["by_task"] == {}
    fresh, _ = build_toy("llava", seed=0)
    assert any(not torch.equal(fresh.state_dict()[k], s0[k]) for k in s0)  # it actually trained


def test_other_seed_gives_other_weights_with_the_recipes_options(tmp_path):
    from vrp.toys.recipes import RECIPE

    cfg = replace(
        RECIPE, arch="qwen2vl", steps=2, batch_size=8, eval_every=2, eval_images=2, warmup=1, threads=1, curriculum=0
    )
    assert cfg.attn_sup_weight > 0 and cfg.position_heads and cfg.describe_positions
    log = train(cfg, tmp_path / "a")
    train(replace(cfg, seed=1), tmp_path / "b")
    sa = load_adapter(str(tmp_path / "a")).model.state_dict()
    sb = load_adapter(str(tmp_path / "b")).model.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)
    assert 1.5 < log["evals"][-1]["attn_sup_loss"] < 4.0  # the supervision ran (about log 16 = 2.77 at init)


def _spatial_batch(rng_seed: int = 0, n: int = 3):
    """(scene, question) pairs with a spatial, an attribute and a position question."""
    from vrp.toys.tasks import position_question
    from vrp.world.questions import attribute_question, spatial_question
    from vrp.world.scene import WorldStats, sample_scene

    rng = np.random.default_rng(rng_seed)
    wcfg = WorldConfig(min_objects=3, max_objects=4)
    wstats = WorldStats.from_config(wcfg)
    makers = [
        lambda s: spatial_question(s, rng),
        lambda s: attribute_question(s, rng),
        lambda s: position_question(s, rng),
    ]
    out = []
    while len(out) < n:
        scene = sample_scene(rng, wcfg, wstats)
        q = makers[len(out) % 3](scene)
        if q is not None:
            out.append((scene, q))
    return out, wcfg


@pytest.mark.parametrize("arch", ["llava", "paligemma", "qwen2vl"])
def test_attention_supervision_reads_the_models_own_attention(arch):
    """The supervised logits, softmaxed over the image tokens, equal eager attention's
    weights at the decision row renormalised over the image (all three RoPE variants), and
    the loss equals the cross-entropy computed from those eager weights."""
    from vrp.capture.attention import IMPL_NAME, recording, register
    from vrp.capture.engine import language_attention
    from vrp.toys.supervision import AttentionSupervisor, object_patch_counts

    torch.manual_seed(0)
    ad = _adapter(arch)
    for prm in ad.model.parameters():  # break the tiny init's near-uniform attention
        prm.data.add_(torch.randn_like(prm) * 0.05)
    ad.model.eval()
    batch, wcfg = _spatial_batch()
    enc, labels = encode_batch(
        ad, [render(s, wcfg) for s, _ in batch], [q.question for _, q in batch], [q.answer for _, q in batch]
    )
    grids = ad.image_grids(enc, [(wcfg.image_size, wcfg.image_size)] * len(batch))
    counts = [object_patch_counts(s, 4) for s, _ in batch]
    layer = 2
    sup = AttentionSupervisor(layer, ("position", "spatial", "attribute"))
    register()
    with torch.no_grad(), language_attention(ad.model, IMPL_NAME), recording(sup):
        ad.model(**enc)
    rows, heads, dpos, toks, mass = sup.targets(batch, counts, labels, grids)
    assert rows.tolist() == [0, 0, 1, 2] and heads.tolist() == [0, 1, 0, 0]  # spatial: two heads
    routed = AttentionSupervisor(layer, sup.tasks, {"attribute": 2, "position": 3, "spatial": 3})
    r2, h2, d2, _, m2 = routed.targets(batch, counts, labels, grids)
    assert h2.tolist() == [0, 1, 2, 3] and torch.equal(r2, rows) and torch.equal(d2, dpos) and torch.equal(m2, mass)
    got = torch.softmax(sup.attention_logits(rows, heads, dpos, toks), -1)
    with torch.no_grad(), language_attention(ad.model, "eager"):
        att = ad.model(**enc, output_attentions=True).attentions[layer]
    want = att[rows[:, None], heads[:, None], dpos[:, None], toks].float()
    want = want / want.sum(-1, keepdim=True)
    assert torch.allclose(got, want, atol=1e-5)
    assert want.std(-1).min() > 1e-3  # attention is not uniform, so the check means something
    loss = sup.loss(batch, counts, labels, grids)
    assert torch.allclose(loss, -(mass * want.log()).sum(-1).mean(), atol=1e-5)
    # the targets are each named object's pixels: the spatial question's two heads differ
    assert not torch.equal(mass[0], mass[1]) and torch.allclose(mass.sum(-1), torch.ones(4))


def test_object_patch_counts_agree_with_pixels():
    from vrp.toys.supervision import object_patch_counts

    sq = Obj("square", "blue", "large", (12, 12, 36, 36), hue=240.0)
    ci = Obj("circle", "red", "small", (0, 0, 10, 10), hue=0.0)
    c = object_patch_counts(Scene([sq, ci], size=48), grid=4)
    assert c.shape == (2, 16)
    assert c[0].reshape(4, 4)[1:3, 1:3].min() > 100 and c[0].reshape(4, 4)[0].sum() == 0
    assert c[1].reshape(4, 4)[0, 0] > 0 and c[1].sum() == c[1].reshape(4, 4)[0, 0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ["llava", "paligemma", "qwen2vl"])
def test_training_on_cuda_follows_the_cpu_run(arch, tmp_path):
    """Same init and data on both devices: the losses logged after two updates agree up to
    floating-point differences (TF32 convolutions on the GPU), and the saved model loads."""
    from vrp.toys.recipes import RECIPE

    cfg = replace(RECIPE, arch=arch, steps=2, batch_size=8, eval_every=2, eval_images=2, warmup=1, threads=1)
    logs = {dev: train(cfg, tmp_path / dev, device=dev) for dev in ("cpu", "cuda")}
    assert logs["cuda"]["device"].startswith("cuda") and logs["cpu"]["device"] == "cpu"
    cpu, gpu = (logs[d]["evals"][-1] for d in ("cpu", "cuda"))
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-2)
    assert gpu["attn_sup_loss"] == pytest.approx(cpu["attn_sup_loss"], rel=1e-2)
    assert load_adapter(str(tmp_path / "cuda")).model.device.type == "cpu"
