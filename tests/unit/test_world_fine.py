"""The finer-grained worlds of issue 24 (opt-in presets): token grids of at least 8 x 8, 1-8
objects, several aspect ratios, determinism by seed; and the default world left exactly as it
was (the shipped toys and the suite depend on it). Ground truth on every preset is re-derived
in test_world.py (its fixture runs over every preset)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from vrp.toys.recipes import FINE_PATCH, FINE_WORLD, recipe_for
from vrp.world.dataset import generate, write_dataset
from vrp.world.scene import PRESETS, Obj, Scene, WorldConfig, png_bytes, render, world_preset

# sha256 of the default world's first 40 scenes, images and questions at seed 3, as generated
# before the presets existed: the default world must not change
DEFAULT_DIGEST = "abaf1729124ec1d29c4fc49d4e2697cebe8ea36ea7e688f7d850922c6c9a77bf"


def _digest(cfg: WorldConfig, n: int, seed: int) -> str:
    data, _ = generate(n, seed, cfg)
    h = hashlib.sha256()
    for sq in data:
        h.update(json.dumps(sq.scene.to_dict()).encode())
        h.update(png_bytes(render(sq.scene, cfg)))
        for q in sq.questions:
            h.update(json.dumps([q.task, q.question, q.answer, list(q.regions), q.meta]).encode())
    return h.hexdigest()


def test_the_default_world_is_unchanged():
    assert PRESETS["default"] == WorldConfig()
    assert _digest(WorldConfig(), 40, 3) == DEFAULT_DIGEST


@pytest.mark.parametrize("name", ["fine", "fine-aspect"])
def test_fine_worlds_give_at_least_an_8x8_token_grid(name):
    cfg = world_preset(name)
    sizes = cfg.sizes or ((cfg.image_size, cfg.image_size),)
    for w, h in sizes:
        assert w % FINE_PATCH == 0 and h % FINE_PATCH == 0
        assert min(w, h) // FINE_PATCH >= 8
    assert cfg.max_objects >= 8 and cfg.min_objects == 1
    # small objects about one token across, large ones two or more
    assert cfg.small_px[1] < 2 * FINE_PATCH <= cfg.large_px[1] and cfg.small_px[0] < FINE_PATCH


def test_fine_aspect_has_several_aspect_ratios_and_draws_them_all():
    cfg = world_preset("fine-aspect")
    ratios = {w / h for w, h in cfg.sizes}
    assert len(ratios) >= 3 and any(r > 1 for r in ratios) and any(r < 1 for r in ratios)
    data, _ = generate(200, 1, cfg)
    assert {sq.scene.dims for sq in data} == set(cfg.sizes)
    sc = next(sq.scene for sq in data if sq.scene.dims == (128, 64))
    assert render(sc, cfg).size == (128, 64)
    assert Scene.from_dict(json.loads(json.dumps(sc.to_dict()))) == sc


@pytest.mark.parametrize("name", ["fine", "fine-aspect"])
def test_fine_worlds_are_deterministic_by_seed(tmp_path, name):
    cfg = world_preset(name)
    a, b, c = (write_dataset(tmp_path / d, 12, s, cfg) for d, s in (("a", 5), ("b", 5), ("c", 6)))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert WorldConfig.from_dict(json.loads((tmp_path / "a" / "world.json").read_text())["world"]) == cfg


def test_unknown_world_and_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="unknown world"):
        world_preset("huge")
    with pytest.raises(ValueError, match="sizes"):
        WorldConfig(sizes=((64, 16),))
    with pytest.raises(ValueError, match="shortest image side"):
        WorldConfig(sizes=((64, 24),), large_px=(14, 18))


def test_recipes_train_the_fine_grain_on_request():
    for arch in ("llava", "paligemma", "qwen2vl"):
        cfg, wcfg = recipe_for(arch, world="fine")
        assert cfg.patch == FINE_PATCH and wcfg == world_preset(FINE_WORLD[arch])
        base, default = recipe_for(arch)
        assert default == WorldConfig() and base.patch == 12
    assert recipe_for("qwen2vl", world="fine")[1].sizes  # only Qwen2-VL sees non-square images
    with pytest.raises(ValueError, match="unknown training world"):
        recipe_for("llava", world="fine-aspect")


def test_patch_counts_tile_non_square_images():
    from vrp.toys.supervision import object_patch_counts, patch_labels

    sq = Obj("square", "red", "large", (80, 8, 96, 24), 0.0)  # columns 10-11, rows 1-2 of an 8 x 12 grid
    sc = Scene([sq], size=96, height=64)
    c = object_patch_counts(sc, (8, 12)).reshape(8, 12)
    want = np.zeros((8, 12), dtype=np.int64)
    want[1:3, 10:12] = 64
    np.testing.assert_array_equal(c, want)
    colour, _ = patch_labels(sc, (8, 12), c.reshape(1, -1))
    assert set(np.flatnonzero(colour.reshape(8, 12)[:, 10] == 0)) == {1, 2}


def test_cli_generates_the_named_world(tmp_path):
    from typer.testing import CliRunner

    from vrp.cli import app

    res = CliRunner().invoke(app, ["world", "generate", "--out", str(tmp_path), "--n", "6", "--world", "fine-aspect"])
    assert res.exit_code == 0, res.output
    sizes = {Image.open(p).size for p in (tmp_path / "images").glob("*.png")}
    assert sizes <= set(PRESETS["fine-aspect"].sizes) and len(sizes) >= 2
    res = CliRunner().invoke(app, ["world", "generate", "--out", str(tmp_path / "x"), "--n", "2", "--world", "nope"])
    assert res.exit_code != 0 and "unknown world" in res.output
