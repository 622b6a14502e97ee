"""Measure a toy checkpoint's accuracy with the real ``vrp run`` pipeline (greedy generate +
scoring) on a fresh ShapesWorld set, and record it next to the weights as ``eval.json``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

EVAL_SEED = 20_261_122  # held out: training draws its scenes from other seeds
EVAL_IMAGES = 400
TARGET_BAND = (0.70, 0.92)  # the toys' target greedy accuracy on every task family (imperfect on purpose)


def outside_band(by_task: dict, band: tuple[float, float] = TARGET_BAND) -> dict[str, float]:
    """The task families whose accuracy (``accuracy["by_task"]`` of a run) lies outside ``band``."""
    lo, hi = band
    return {t: r["accuracy"] for t, r in sorted(by_task.items()) if not lo <= r["accuracy"] <= hi}


def evaluate_checkpoint(
    model: str, n_images: int = EVAL_IMAGES, seed: int = EVAL_SEED, batch_size: int = 32, world=None
) -> dict:
    """Per-task accuracy (with 95% Wilson CIs) of ``model`` on ``shapesworld:n_images``, or on
    as many images of ``world`` (a :class:`~vrp.world.scene.WorldConfig`; None: the default)."""
    from vrp.config import RunConfig
    from vrp.runs.pipeline import run
    from vrp.world.dataset import write_dataset
    from vrp.world.scene import WorldConfig

    custom = world is not None and world != WorldConfig()
    with tempfile.TemporaryDirectory() as tmp:
        data = f"shapesworld:{n_images}"
        if custom:  # the same images and questions `vrp world generate` writes for this world and seed
            data = str(write_dataset(Path(tmp) / "data", n_images, seed, world))
        cfg = RunConfig(
            model=model, data=data, out=str(Path(tmp) / "run"), seed=seed,
            batch_size=batch_size, samples=0, store_attention="none", store_residuals=False,
        )  # fmt: skip
        manifest = run(cfg)
    out = {"seed": seed, "n_images": n_images, "accuracy": manifest["accuracy"], "counts": manifest["counts"]}
    if custom:
        out["world"] = world.to_dict()
    return out


def write_eval(model_dir: str | Path, n_images: int = EVAL_IMAGES, seed: int = EVAL_SEED, world=None) -> dict:
    """Evaluate the checkpoint in ``model_dir`` (on ``world``'s images, default the default
    world's) and write ``model_dir/eval.json``."""
    result = evaluate_checkpoint(str(model_dir), n_images, seed, world=world)
    (Path(model_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
