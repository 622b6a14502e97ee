"""The toy-model training recipe: labels, losses, patch targets, determinism, gradient flow."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from vrp.models import adapter_for, load_adapter
from vrp.world.scene import COLOURS, SHAPES, Obj, Scene, WorldConfig, render
from vrp.world.toy import build_toy
from vrp.world.train import (
    TrainConfig,
    curriculum_world,
    encode_batch,
    patch_labels,
    per_example_loss,
    train,
)


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
    fresh, _ = build_toy("llava", seed=0)
    assert any(not torch.equal(fresh.state_dict()[k], s0[k]) for k in s0)  # it actually trained


def test_other_seed_gives_other_weights(tmp_path):
    cfg = TrainConfig(
        arch="qwen2vl", steps=2, batch_size=2, eval_every=2, eval_images=2, warmup=1, threads=1, position_heads=True
    )
    train(cfg, tmp_path / "a")
    train(replace(cfg, seed=1), tmp_path / "b")
    sa = load_adapter(str(tmp_path / "a")).model.state_dict()
    sb = load_adapter(str(tmp_path / "b")).model.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)
