"""Adapters, registry and toy builders against real HF classes (random weights, offline)."""

from __future__ import annotations

import json

import pytest
import torch

from vrp.models import (
    NotAModelError,
    UnsupportedModelError,
    adapter_for,
    load_adapter,
    read_model_type,
    supported_model_types,
)
from vrp.world.dataset import generate
from vrp.world.scene import WorldConfig, render

EXPECTED_CLASSES = {
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor"),
    "paligemma": ("PaliGemmaForConditionalGeneration", "PaliGemmaProcessor"),
    "qwen2vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
}


def test_registry_lists_every_family():
    assert supported_model_types() == sorted([
        "gemma3", "idefics3", "internvl", "llava", "llava_next", "llava_onevision", "mistral3", "paligemma",
        "qwen2_5_vl", "qwen2_vl", "qwen3_5", "qwen3_vl", "smolvlm",
    ])  # fmt: skip


def test_mllama_is_refused_with_the_reason_before_loading(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mllama"}))
    (tmp_path / "model.safetensors").write_bytes(b"not even weights")  # never read
    with pytest.raises(UnsupportedModelError, match="cross-attention") as e:
        load_adapter(str(tmp_path))
    assert "supported model types: gemma3" in str(e.value)


def test_unknown_model_type_error_names_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    with pytest.raises(UnsupportedModelError) as e:
        load_adapter(str(tmp_path))
    for mt in ("llava", "paligemma", "qwen2_vl", "blip-2"):
        assert mt in str(e.value)


@pytest.mark.parametrize(
    "setup, needle",
    [
        (lambda p: None, "is not a model directory"),
        (lambda p: (p / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "config.json").write_text("{}"), "no 'model_type'"),
    ],
)
def test_not_a_model_is_a_clear_error(tmp_path, setup, needle):
    setup(tmp_path)
    with pytest.raises(NotAModelError, match=needle):
        read_model_type(tmp_path)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(NotAModelError, match="does not exist"):
        load_adapter(str(tmp_path / "nope"))


def test_adapter_checks_module_map(random_toy_dirs):
    ad = load_adapter(random_toy_dirs["llava"])
    cls = type(ad)
    broken = cls(model=ad.model, processor=ad.processor, path="x")
    broken.module_paths = {**cls.module_paths, "final_norm": "model.language_model.no_such_norm"}
    with pytest.raises(UnsupportedModelError, match="no_such_norm"):
        broken.check_modules()


@pytest.mark.parametrize("arch", ["llava", "paligemma", "qwen2vl"])
def test_toy_loads_with_auto_classes_and_generates(random_toy_dirs, arch):
    ad = load_adapter(random_toy_dirs[arch])
    model_cls, proc_cls = EXPECTED_CLASSES[arch]
    assert type(ad.model).__name__ == model_cls
    assert type(ad.processor).__name__ == proc_cls
    assert adapter_for(ad.model.config.model_type) is type(ad)
    data, _ = generate(2, seed=3)
    images = [render(d.scene, WorldConfig()) for d in data]
    enc = ad.encode(images, [ad.prompt("How many objects are in the image?")] * 2)
    # every family puts one placeholder token per image token into the prompt
    n_img = int((enc["input_ids"] == ad.model.config.image_token_id).sum())
    assert n_img == 2 * 16  # 48 px images, one token per 12x12 pixels
    out = ad.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=ad.tokenizer.pad_token_id)
    assert out.shape[0] == 2 and out.shape[1] == enc["input_ids"].shape[1] + 3


def test_tokenizer_round_trips_world_words(random_toy_dirs):
    ad = load_adapter(random_toy_dirs["llava"])
    ids = ad.tokenizer("Is there a red circle?", add_special_tokens=False)["input_ids"]
    assert ad.tokenizer.unk_token_id not in ids
    assert ad.tokenizer.decode(ids) == "is there a red circle?"


def test_seeded_build_is_deterministic():
    from vrp.toys.build import build_toy

    m1, _ = build_toy("qwen2vl", seed=5)
    m2, _ = build_toy("qwen2vl", seed=5)
    for (n1, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(p1, p2), n1
