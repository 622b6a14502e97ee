"""The three toy architectures at the finer grain (``vrp world train --world fine``): the grid
each sees is the scene's tiling (8 x 8; Qwen2-VL its own per aspect ratio), and one training
step with attention supervision and per-patch heads runs on images of different sizes."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from vrp.capture.attention import IMPL_NAME
from vrp.capture.engine import language_attention
from vrp.models.base import adapter_for
from vrp.toys import train as T
from vrp.toys.build import build_toy
from vrp.toys.recipes import recipe_for
from vrp.world.scene import render


def _adapter(arch: str, cfg, wcfg):
    model, processor = build_toy(arch, seed=0, image_size=wcfg.image_size, patch=cfg.patch)
    return adapter_for(model.config.model_type)(model=model, processor=processor, path="unsaved")


@pytest.mark.parametrize("arch", ["llava", "paligemma", "qwen2vl"])
def test_the_model_sees_the_scenes_tiling(arch):
    from vrp.toys.forcing import encode_batch
    from vrp.world.dataset import generate

    cfg, wcfg = recipe_for(arch, world="fine")
    ad = _adapter(arch, cfg, wcfg)
    data, _ = generate(30, 0, wcfg)
    scenes = {sq.scene.dims: sq.scene for sq in data}  # one scene per size
    images = [render(sc, wcfg) for sc in scenes.values()]
    enc, _ = encode_batch(ad, images, ["How many objects are in the image?"] * len(images), ["1"] * len(images))
    grids = ad.image_grids(enc, [im.size for im in images])
    for (w, h), g in zip(scenes, grids, strict=True):
        assert (g[0].view.rows, g[0].view.cols) == (h // cfg.patch, w // cfg.patch)
        assert min(g[0].view.rows, g[0].view.cols) >= 8
    if arch == "qwen2vl":
        assert len(scenes) == 5
    else:
        assert list(scenes) == [(64, 64)]


def test_a_fine_training_step_runs_on_mixed_sizes():
    cfg, wcfg = recipe_for("qwen2vl", world="fine", threads=1)
    torch.manual_seed(0)
    ad = _adapter("qwen2vl", cfg, wcfg)
    data = T.prepare_data(replace(cfg, eval_images=2), wcfg)
    opt = T.make_optimizer(ad.model, cfg)
    batch = T.sample_batch(data, cfg, wcfg)
    assert len({sc.dims for sc, _ in batch}) >= 2
    with T.auxiliaries(ad, cfg, wcfg, opt) as aux, language_attention(ad.model, IMPL_NAME):
        assert aux.grid == 16
        losses = T.train_step(ad, opt, batch, 1e-3, cfg, wcfg, aux)
    assert math.isfinite(losses.total) and losses.attn_sup is not None and math.isfinite(losses.attn_sup)
    # supervision over ~64-128 tokens starts near the uniform cross-entropy, log(tokens)
    assert np.log(64) - 1 < losses.attn_sup < np.log(128) + 1
