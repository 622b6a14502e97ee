"""The shipped toy checkpoints load offline and reach their documented accuracy on a fresh seed."""

from __future__ import annotations

import json
import math

import pytest

from vrp.models import load_adapter
from vrp.models.loading import TOY_MODELS, resolve_model_path
from vrp.toys.evaluate import EVAL_SEED, evaluate_checkpoint

FRESH_SEED = 4242  # differs from the seed eval.json was measured on, and from training's
FRESH_IMAGES = 150


@pytest.mark.parametrize("name", TOY_MODELS)
def test_shipped_checkpoint_loads_offline_with_real_classes(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ad = load_adapter(name)
    assert type(ad.model).__name__ in {
        "LlavaForConditionalGeneration",
        "PaliGemmaForConditionalGeneration",
        "Qwen2VLForConditionalGeneration",
    }
    size = (resolve_model_path(name) / "model.safetensors").stat().st_size
    assert size < 8_000_000  # a few MB each, so they ship in the package


@pytest.mark.parametrize("name", TOY_MODELS)
def test_shipped_checkpoint_reaches_documented_accuracy(name):
    doc = json.loads((resolve_model_path(name) / "eval.json").read_text())
    assert doc["seed"] == EVAL_SEED and FRESH_SEED != EVAL_SEED
    fresh = evaluate_checkpoint(name, n_images=FRESH_IMAGES, seed=FRESH_SEED)
    assert fresh["counts"]["failed"] == 0
    for task, documented in doc["accuracy"]["by_task"].items():
        got = fresh["accuracy"]["by_task"][task]
        p, n = documented["accuracy"], got["n"]
        # "within a few points": 3 standard errors of the fresh estimate, at least 5 points
        tol = max(0.05, 3 * math.sqrt(p * (1 - p) / n))
        assert abs(got["accuracy"] - p) <= tol, (task, got["accuracy"], p, tol)
    d_all, g_all = doc["accuracy"]["overall"]["accuracy"], fresh["accuracy"]["overall"]["accuracy"]
    assert abs(g_all - d_all) <= 0.04, (g_all, d_all)


@pytest.mark.parametrize("name", TOY_MODELS)
def test_shipped_checkpoint_was_trained_with_the_shipped_recipe(name):
    """`vrp world train --arch A` rebuilds what ships: the training log's configuration is
    the recipe of its architecture (the thread count aside, which is a machine setting)."""
    from dataclasses import asdict

    from vrp.toys.recipes import RECIPES, WORLD
    from vrp.world.scene import WorldConfig

    log = json.loads((resolve_model_path(name) / "training_log.json").read_text())
    arch = log["config"]["arch"]
    want = json.loads(json.dumps(asdict(RECIPES[arch])))
    got = dict(log["config"])
    got.pop("threads"), want.pop("threads")
    # logs written before these fields existed ran with their defaults: the schedule spans `steps`; head 0
    got.setdefault("schedule_steps", 0)
    got.setdefault("attn_sup_heads", {})
    assert got == want
    # a world field added after the log was written (sizes, place_attempts) takes its default
    assert WorldConfig.from_dict(log["world"]) == WORLD
    assert log["chosen"]["step"] <= RECIPES[arch].steps


@pytest.mark.parametrize("name", TOY_MODELS)
def test_shipped_checkpoint_is_in_the_target_band_on_every_task_family(name):
    from vrp.toys.evaluate import outside_band

    doc = json.loads((resolve_model_path(name) / "eval.json").read_text())
    assert set(doc["accuracy"]["by_task"]) == {"existence", "counting", "spatial", "attribute"}
    assert outside_band(doc["accuracy"]["by_task"]) == {}
