"""``vrp lens train``: fit the tuned lens (:mod:`vrp.analysis.tuned_lens`) on a run's stored
decision-position residuals, and read every item's truth margin through it.

Data: ``storage.load_stacked(run_dir, "residual")`` ([n, 1 + S, d] float16, residual index 0 =
embeddings, then the stored blocks' outputs). Translators are fitted on the probes' train split
(``probes/split.json``; without it, the same grouped, stratified split ``vrp probe`` makes with
``ProbeConfig``'s defaults), early-stopped on its validation split, and their KL is reported on
all three.

The target distribution is not stored by ``vrp run``: it is recomputed from the stored
last-layer residual through the model's own final norm and unembedding (soft-capping included:
the logit lens at the last layer, which equals the model's logits). The residuals are stored in
float16, so this target, and every lens reading, is that of the float16-rounded residual: within
float16 rounding of the model's own distribution, not bit-equal to it. The run must therefore
have stored the last block's residual (``store_layers`` all, or a list holding -1). Only the
model's final norm and unembedding are used, but the model is loaded whole from the run's
manifest (``vrp.models.load_adapter``), and its identity is checked against the manifest's.

Writes ``RUN_DIR/lens/tuned/`` (files in :mod:`vrp.analysis.lens_config`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vrp.analysis.lens_config import (
    FORMAT,
    LENS_JSON,
    MARGIN_FILE,
    SIGNALS_FILE,
    TRANSLATORS_FILE,
    TUNED_DIR,
    LensConfig,
    margin_column,
)
from vrp.runs import storage
from vrp.runs.rundir import atomic_write_json, write_table

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
TARGET = (
    "the model's next-token distribution at the decision position, recomputed from the stored (float16) "
    "last-layer residual through the model's final norm and unembedding (soft-capping included)"
)


def load_lens_data(run_dir: Path) -> dict:
    """The run's items (ids, labels, images, gold answers), residuals ``X`` [n, K, d] float16 aligned
    to ``items.parquet``, and their residual layers; clear errors for what the lens cannot use."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} does not exist")
    if not (run_dir / "items.parquet").is_file() or not (run_dir / "manifest.json").is_file():
        raise ValueError(f"{run_dir} holds no finished run (items.parquet / manifest.json missing); make one with "
                         f"`vrp run --out {run_dir}`")  # fmt: skip
    table = pq.read_table(run_dir / "items.parquet", columns=["id", "image", "correct", "gold"])
    ids = table.column("id").to_pylist()
    try:
        r_ids, resid = storage.load_stacked(run_dir, "residual")  # [n, 1 + S, d] float16
    except KeyError:
        raise ValueError(f"{run_dir} stored no residuals (run with --no-residuals or --store-layers none): the "
                         "tuned lens trains on the decision-position residuals; rerun `vrp run` with --residuals "
                         "--store-layers all") from None  # fmt: skip
    pos = {i: k for k, i in enumerate(ids)}
    if sorted(pos.get(i, -1) for i in r_ids) != list(range(len(ids))):
        raise ValueError(f"{run_dir}: the shards' residuals and items.parquet hold different items")
    resid = resid[np.argsort([pos[i] for i in r_ids])]
    meta = _shard_meta(run_dir)
    n_layers = int(meta["n_layers"])
    layers = [0] + [b + 1 for b in meta["stored_layers"]]
    if n_layers not in layers:
        raise ValueError(
            f"{run_dir} did not store the last decoder block's residual (stored residual layers {layers}; the model "
            f"has {n_layers} blocks): the tuned lens's target, the model's final distribution, is recomputed from "
            "it; rerun `vrp run` with --store-layers all (or a list ending in -1)"
        )
    return {
        "ids": ids, "y": np.asarray(table.column("correct").to_pylist(), dtype=np.int64),
        "groups": np.asarray(table.column("image").to_pylist()), "golds": table.column("gold").to_pylist(),
        "X": resid, "layers": layers, "n_layers": n_layers,
        "manifest": json.loads((run_dir / "manifest.json").read_text()),
    }  # fmt: skip


def _shard_meta(run_dir: Path) -> dict:
    from safetensors import safe_open

    first = next(iter(storage.completed(run_dir).values()))
    with safe_open(str(first.with_suffix(".safetensors")), framework="np") as f:
        return json.loads(f.metadata()["meta"])


def run_split(run_dir: Path, ids: list[str], y: np.ndarray, groups: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    """Item indices of train / val / test: the probes' ``probes/split.json``, else the split ``vrp
    probe`` would make (``ProbeConfig``'s fractions and seed); and where it came from."""
    path = Path(run_dir) / "probes" / "split.json"
    if path.is_file():
        d = json.loads(path.read_text())
        pos = {i: k for k, i in enumerate(ids)}
        out = {s: np.asarray(sorted(pos[i] for i in d.get(s, []) if i in pos), dtype=np.int64) for s in SPLITS}
        if sorted(np.concatenate(list(out.values())).tolist()) != list(range(len(ids))):
            raise ValueError(f"{path} does not split exactly the run's items; rerun `vrp probe --run {run_dir}`")
        return out, "probes/split.json"
    from vrp.analysis.config import ProbeConfig
    from vrp.probes.split import grouped_stratified_split

    pc = ProbeConfig()
    try:
        split = grouped_stratified_split(y, groups, fractions=pc.fractions, seed=pc.seed)
    except ValueError as e:
        raise ValueError(f"{run_dir} has no probes/split.json and the probes' split cannot be made: {e}") from e
    return {s: getattr(split, s) for s in SPLITS}, f"grouped_stratified_split (ProbeConfig seed {pc.seed})"


def load_run_model(manifest: dict, cfg: LensConfig):
    """The run's model (``cfg.model`` if given), loaded in the run's dtype; its identity must be the run's."""
    from vrp.models import load_adapter
    from vrp.runs.rundir import model_identity

    rcfg, mod = manifest.get("config", {}), manifest.get("model", {})
    name = cfg.model or rcfg.get("model") or mod.get("path")
    adapter = load_adapter(name, dtype=rcfg.get("dtype"), device=cfg.device)
    want, got = mod.get("sha256"), model_identity(adapter.path)["sha256"]
    if want and got != want:
        raise ValueError(f"the model at {adapter.path} is not the one the run used (identity {got[:12]} vs the "
                         f"manifest's {want[:12]}); pass the run's model with --model PATH")  # fmt: skip
    return adapter


def train_tuned_lens(run_dir: Path, cfg: LensConfig | None = None, adapter=None,
                     on_layer: Callable[[int, int], None] | None = None) -> dict:  # fmt: skip
    """Fit one translator per stored residual layer, save them with ``lens.json``, and write the
    items' tuned-lens margins and signals; returns the ``lens.json`` document.

    Args:
        run_dir: a run directory with stored residuals (the last layer's included).
        cfg: the training options.
        adapter: the run's model already loaded (default: loaded from the manifest).
        on_layer: called with (layers done, layers) as training proceeds.
    """
    import torch

    from vrp._version import __version__
    from vrp.analysis.tuned_lens import TunedLens, final_logprobs, fit_translator, mean_kl, readout
    from vrp.runs.rundir import versions

    cfg = cfg or LensConfig()
    run_dir = Path(run_dir)
    data = load_lens_data(run_dir)
    split, source = run_split(run_dir, data["ids"], data["y"], data["groups"])
    adapter = adapter or load_run_model(data["manifest"], cfg)
    adapter.model.requires_grad_(False)
    read = readout(adapter)
    X = torch.as_tensor(data["X"].astype(np.float32), device=adapter.model.device)  # [n, K, d]
    target = final_logprobs(read, X[:, -1])  # [n, V]
    layers, d = data["layers"], X.shape[2]
    lens = TunedLens.identity(layers, d)
    kl = {lens_: {s: [] for s in SPLITS} for lens_ in ("tuned", "logit")}
    fit_info: dict[str, list] = {"best_epoch": [], "epochs_run": []}
    tr, va = (torch.as_tensor(split[s], device=X.device) for s in ("train", "val"))
    for k, layer in enumerate(layers):
        if layer != data["n_layers"]:  # the last layer's translator stays the identity: it is the model's output
            fit = fit_translator(read, X[tr, k], target[tr], X[va, k], target[va], cfg, seed=cfg.seed + layer)
            lens.weight[layer], lens.bias[layer] = fit.weight, fit.bias
            fit_info["best_epoch"].append(fit.best_epoch)
            fit_info["epochs_run"].append(fit.epochs_run)
        else:
            fit_info["best_epoch"].append(None)
            fit_info["epochs_run"].append(0)
        a, b = (torch.as_tensor(v, device=X.device) for v in (lens.weight[layer], lens.bias[layer]))
        for s in SPLITS:
            idx = torch.as_tensor(split[s], device=X.device)
            kl["tuned"][s].append(mean_kl(read, X[idx, k], target[idx], a, b))
            kl["logit"][s].append(mean_kl(read, X[idx, k], target[idx]))
        if on_layer:
            on_layer(k + 1, len(layers))
    out = run_dir / TUNED_DIR
    lens.save(out / TRANSLATORS_FILE)
    man = data["manifest"]
    doc = {
        "format": FORMAT, "vrp_version": __version__, "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "model": {k: man.get("model", {}).get(k) for k in ("name", "path", "model_type", "sha256")},
        "n_layers": data["n_layers"], "d_model": d, "residual_layers": layers,
        "trained_layers": [l for l in layers if l != data["n_layers"]],
        "split": {"source": source, "sizes": {s: len(split[s]) for s in SPLITS}},
        "target": TARGET, "kl_unit": "nats, mean over the split's items",
        "kl": kl, "fit": fit_info,
    }  # fmt: skip
    atomic_write_json(out / LENS_JSON, doc)
    write_margins(run_dir, lens, adapter, data, split)
    return doc


def tuned_margins(adapter, lens, X, golds: list, batch: int = 64) -> np.ndarray:
    """``[n, K]`` truth margin of every item at each of ``lens.layers`` under the tuned lens: the
    best reference token's lens logit minus the best other token's (``vrp.capture.lens``'s
    reference tokens, the definition of ``curve.margin``); NaN for an item without a reference."""
    import torch

    from vrp.analysis.tuned_lens import readout
    from vrp.capture.lens import reference_ids

    read = readout(adapter)
    X = torch.as_tensor(X, dtype=torch.float32, device=adapter.model.device)
    refs = [reference_ids(adapter.tokenizer, g) if g else [] for g in golds]
    out = np.full((len(golds), len(lens.layers)), np.nan)
    with torch.no_grad():
        for s in range(0, len(golds), batch):
            rows = [r for r in range(s, min(s + batch, len(golds))) if refs[r]]
            if not rows:
                continue
            for k, layer in enumerate(lens.layers):
                logits = read(lens.translate(layer, X[rows, k]))  # [B, V]
                mask = torch.zeros_like(logits, dtype=torch.bool)
                for j, r in enumerate(rows):
                    mask[j, refs[r]] = True
                best_ref = logits.masked_fill(~mask, -torch.inf).max(-1).values
                rival = logits.masked_fill(mask, -torch.inf).max(-1).values
                out[rows, k] = (best_ref.double() - rival.double()).cpu().numpy()
    return out


def margin_signals(margin: np.ndarray, layers: list[int], n_layers: int) -> dict[str, np.ndarray]:
    """The derived signals of ``catalog.TUNED_LENS_SIGNALS`` from ``[n, K]`` margins at residual ``layers``:
    the peak, its residual layer (first on ties) and the first residual layer from which the
    margin stays positive (``n_layers + 1`` when the last is not positive); NaN for an all-NaN row."""
    from vrp.signals.mechanistic import peak_layer, positive_from

    out = {k: np.full(len(margin), np.nan) for k in ("tuned_margin_peak", "tuned_margin_peak_layer",
                                                     "tuned_margin_positive_from")}  # fmt: skip
    for i, m in enumerate(margin):
        if not np.isfinite(m).all():
            continue
        pf = positive_from(m)
        out["tuned_margin_peak"][i] = float(m.max())
        out["tuned_margin_peak_layer"][i] = layers[peak_layer(m)]
        out["tuned_margin_positive_from"][i] = layers[pf] if pf < len(layers) else n_layers + 1
    return out


def write_margins(run_dir: Path, lens, adapter, data: dict, split: dict[str, np.ndarray]) -> None:
    """``margin.parquet`` (id, split, ``margin@{l}``) and ``signals.parquet`` (id, the signals) of the lens."""
    margin = tuned_margins(adapter, lens, data["X"], data["golds"])
    which = np.full(len(data["ids"]), "", dtype=object)
    for s in SPLITS:
        which[split[s]] = s
    cols = {"id": pa.array(data["ids"]), "split": pa.array(which.tolist())}
    cols.update({margin_column(l): pa.array(margin[:, k]) for k, l in enumerate(lens.layers)})
    out = Path(run_dir) / TUNED_DIR
    write_table(out / MARGIN_FILE, pa.table(cols))
    sig = margin_signals(margin, list(lens.layers), data["n_layers"])
    write_table(out / SIGNALS_FILE, pa.table({"id": pa.array(data["ids"]), **{k: pa.array(v) for k, v in sig.items()}}))


def read_margins(run_dir: Path) -> tuple[list[str], list[int], np.ndarray] | None:
    """The tuned-lens margins of a run: (ids, residual layers, ``[n, K]`` float64), or None when the
    run has no tuned lens (no model is loaded)."""
    path = Path(run_dir) / TUNED_DIR / MARGIN_FILE
    if not path.is_file():
        return None
    t = pq.read_table(path)
    cols = [c for c in t.column_names if c.startswith("margin@")]
    layers = [int(c.partition("@")[2]) for c in cols]
    values = np.stack([t.column(c).to_numpy(zero_copy_only=False) for c in cols], axis=1).astype(np.float64)
    return t.column("id").to_pylist(), layers, values


def layer_columns(run_dir: Path, correct: dict, residual_layers: list[int], cfg) -> dict[str, list]:
    """The tuned-lens columns of ``analysis/layers.parquet`` ({} without a tuned lens): per residual
    layer, the mean tuned-lens margin of correct and of wrong items with its bootstrap CI
    (``tuned_margin_{correct,wrong}_{mean,ci_low,ci_high}``) and its AUROC (``tuned_margin_auroc``);
    NaN at a layer the lens does not read.

    Args:
        run_dir: the run directory.
        correct: item id -> correctness label.
        residual_layers: the table's rows.
        cfg: ``AnalyzeConfig`` (n_boot, level, seed).
    """
    from vrp.stats.auroc import auroc
    from vrp.stats.effects import mean_ci

    got = read_margins(run_dir)
    if got is None:
        return {}
    ids, layers, margin = got
    keep = [k for k, i in enumerate(ids) if i in correct]
    y = np.array([bool(correct[ids[k]]) for k in keep])
    margin = margin[keep]
    rng = np.random.default_rng(cfg.seed)
    at = {layer: k for k, layer in enumerate(layers)}
    out: dict[str, list] = {}

    def spread(values) -> list:  # lens layers -> the table's rows
        return [float(values[at[r]]) if r in at else float("nan") for r in residual_layers]

    for label, mask in (("correct", y), ("wrong", ~y)):
        for stat, v in zip(
            ("mean", "ci_low", "ci_high"), mean_ci(margin[mask], cfg.n_boot, cfg.level, rng), strict=True
        ):
            out[f"tuned_margin_{label}_{stat}"] = spread(v)
    out["tuned_margin_auroc"] = spread([float(auroc(margin[:, k], y)) for k in range(margin.shape[1])])
    return out
