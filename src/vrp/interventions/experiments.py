"""The conditions of each experiment kind (what is ablated or masked, and its seeded control)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from vrp.interventions import edits, masking
from vrp.interventions.clean import CleanPass
from vrp.interventions.config import InterveneConfig
from vrp.interventions.runner import Batch, Condition
from vrp.models.sites import block_site, residual_block, residual_index


def control_rng(seed: int, *parts: object) -> np.random.Generator:
    """A random stream fixed by the experiment seed and what the control stands for."""
    digest = hashlib.sha256(json.dumps([seed, *parts], default=str).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def resolve_layers(layers: tuple[int, ...] | None, n_layers: int, default: list[int]) -> list[int]:
    if layers is None:
        return default
    out = []
    for i in layers:
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise ValueError(f"layer {i} is outside the model's {n_layers} decoder blocks")
        out.append(j)
    return sorted(set(out))


def _probe_summary(run_dir: Path) -> dict:
    path = run_dir / "probes" / "summary.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no trained probes ({path} missing): run `vrp probe --run {run_dir}` first")
    return json.loads(path.read_text())


def probe_units(run_dir: Path, n_layers: int) -> dict[int, np.ndarray]:
    """Per decoder block, the sparse probe's units ordered by |weight| (standardized units), non-zero only."""
    from vrp.probes.io import load_probe

    summary = _probe_summary(run_dir)
    probe = load_probe(run_dir / "probes" / "probe_sparse")
    out = {}
    for j, res_layer in enumerate(summary["residual_layers"]):
        block = residual_block(res_layer)
        if block is not None and block < n_layers:
            w = np.abs(probe.coef_[j])
            order = np.argsort(-w, kind="stable")
            out[block] = order[w[order] > 0]
    return out


def peak_layer(run_dir: Path, n_layers: int) -> int:
    """The decoder block whose residual the dense probe chose on validation (the embeddings -> block 0)."""
    block = residual_block(int(_probe_summary(run_dir)["probes"]["probe_dense"]["residual_layer"]))
    return min(0 if block is None else block, n_layers - 1)


def _values(cfg: InterveneConfig, clean: CleanPass, n_blocks: int, layer: int, units: np.ndarray) -> np.ndarray | float:
    if cfg.mode == "zero":
        return 0.0
    std = clean.std_residual[residual_index(layer, n_blocks)] if cfg.site == "residual" else clean.std_mlp[layer]
    return cfg.clamp_scale * std[units]


def _ablation(cfg, clean, adapter, label, layer, units, control, kind) -> Condition:
    vals = _values(cfg, clean, adapter.n_blocks, layer, units)
    units_list = [int(u) for u in units]
    return Condition(
        label=label, kind=kind, layer=layer, control=control,
        context=lambda b: edits.ablate_units(adapter, cfg.site_name(cfg.site, layer), units_list, vals),
        spec={"units": units_list, "site": cfg.site, "mode": cfg.mode, "scale": cfg.clamp_scale},
    )  # fmt: skip


def neuron_conditions(cfg: InterveneConfig, clean: CleanPass, adapter, run_dir: Path) -> list[Condition]:
    """Top-k sparse-probe units vs k random units (drawn among the others) per layer."""
    n_layers, d = adapter.n_blocks, int(adapter.text_config.hidden_size)
    ranked = probe_units(run_dir, n_layers)
    layers = resolve_layers(cfg.layers, n_layers, [b for b, u in ranked.items() if len(u)])
    out = []
    for layer in layers:
        top = ranked.get(layer, np.zeros(0, dtype=np.int64))[: cfg.k]
        if not len(top):
            raise ValueError(
                f"the sparse probe has no non-zero unit at block {layer}'s residual; choose other --layers"
            )
        k = len(top)
        rest = np.setdiff1d(np.arange(d), top)
        rand = np.sort(control_rng(cfg.seed, "neurons", layer, k).choice(rest, size=k, replace=False))
        tag = f"L{layer} {cfg.site} {cfg.mode}"
        out.append(_ablation(cfg, clean, adapter, f"probe top-{k} {tag}", layer, top, False, "neurons"))
        out.append(_ablation(cfg, clean, adapter, f"random {k} {tag}", layer, rand, True, "neurons"))
    return out


def mass_sizes(sizes: tuple[float, ...] | None, d: int) -> list[int]:
    if sizes is None:
        sizes = (500, 1000, 2000) if d > 2000 else (0.125, 0.25, 0.5)
    out = [round(s * d) if s < 1 else int(s) for s in sizes]
    bad = [s for s in out if not 1 <= s <= d]
    if bad:
        raise ValueError(f"mass ablation sizes {bad} do not fit a width of {d}")
    return out


def mass_conditions(cfg: InterveneConfig, clean: CleanPass, adapter, run_dir: Path) -> list[Condition]:
    n_layers, d = adapter.n_blocks, int(adapter.text_config.hidden_size)
    layers = resolve_layers(cfg.layers, n_layers, [peak_layer(run_dir, n_layers)])
    out = []
    for layer in layers:
        for size in mass_sizes(cfg.sizes, d):
            units = np.sort(control_rng(cfg.seed, "mass", layer, size).choice(d, size=size, replace=False))
            label = f"random {size} L{layer} {cfg.site} {cfg.mode}"
            out.append(_ablation(cfg, clean, adapter, label, layer, units, False, "mass"))
    return out


def mlp_conditions(cfg: InterveneConfig, adapter) -> list[Condition]:
    n_layers = adapter.n_blocks
    return [
        Condition(
            f"MLP bypass L{i}",
            "mlp",
            i,
            context=lambda b, i=i: edits.bypass(adapter, block_site(i, "mlp_out")),
            spec={"i": i},
        )
        for i in resolve_layers(cfg.layers, n_layers, list(range(n_layers)))
    ]


def head_conditions(cfg: InterveneConfig, adapter) -> list[Condition]:
    n_layers, n_heads = adapter.n_blocks, int(adapter.text_config.num_attention_heads)
    heads = list(cfg.heads) if cfg.heads is not None else list(range(n_heads))
    return [
        Condition(
            f"head {h} L{i}",
            "heads",
            i,
            context=lambda b, i=i, h=h: edits.ablate_heads(adapter, i, [h]),
            spec={"head": h},
        )
        for i in resolve_layers(cfg.layers, n_layers, list(range(n_layers)))
        for h in heads
    ]


def item_cells(cfg: InterveneConfig, clean: CleanPass, ids: list[str], which: str) -> list[np.ndarray]:
    """Per item, the flat grid cells to mask: its own top-``frac`` cells, or as many random ones."""
    out = []
    for i, view in enumerate(clean.views):
        rows, cols = view.rows, view.cols
        k = masking.n_masked(rows * cols, cfg.frac)
        if which == "all":
            out.append(np.arange(rows * cols))
        elif which == "top":
            out.append(masking.top_cells(clean.maps[i], cfg.frac))
        else:
            out.append(masking.random_cells(rows * cols, k, control_rng(cfg.seed, "patches", ids[i])))
    return out


def masked_images(cfg: InterveneConfig, clean: CleanPass, cells: list[np.ndarray], batch: Batch) -> list:
    return [
        masking.mask_pixels(im, cells[j], clean.views[j].rows, clean.views[j].cols, clean.views[j].to_image, cfg.fill)
        for j, im in zip(batch.index, batch.images, strict=True)
    ]


def _embedding_mask(adapter, cells: list[np.ndarray], batch: Batch):
    grids = batch.padded_grids()
    pos = [g[0].token_index[cells[j]] for g, j in zip(grids, batch.index, strict=True)]
    pools = [g[0].token_index for g in grids]
    return edits.mask_image_tokens(adapter, pos, pools)


def patch_conditions(cfg: InterveneConfig, clean: CleanPass, adapter, ids: list[str]) -> list[Condition]:
    pct = f"{cfg.frac:.0%}"
    out = []
    for which, control in (("top", False), ("random", True)):
        cells = item_cells(cfg, clean, ids, which)
        label = f"{'top' if which == 'top' else 'random'} {pct} patches ({cfg.space})"
        spec = {"cells": [c.tolist() for c in cells], "space": cfg.space, "fill": cfg.fill}
        if cfg.space == "pixel":
            cond = Condition(label, "patches", -1, control,
                             images=lambda b, cells=cells: masked_images(cfg, clean, cells, b), spec=spec)  # fmt: skip
        else:
            cond = Condition(label, "patches", -1, control,
                             context=lambda b, cells=cells: _embedding_mask(adapter, cells, b), spec=spec)  # fmt: skip
        out.append(cond)
    return out
