"""The sparse-circuit view (the paper's §5.3, Table 10): which units the L1 probe selects, and how they shift.

Reads the sparse probe of ``vrp probe`` (``probes/probe_sparse``: a :class:`~vrp.probes.linear.LayerwiseLogistic`
with ``coef_`` [L, d] in standardized units, one probe per stored residual layer, each with the C chosen on
validation for that layer), the split (``probes/split.json``) and the stored decision-position residuals, and
writes ``RUN_DIR/analysis/``:

    units.parquet   one row per (residual layer, top unit) at the sparse probe's chosen layer and at every layer
                    asked (``AnalyzeConfig.units_layers``): the unit's rank by |coefficient|, its coefficient
                    (standardized units: the weight of one training standard deviation), its share of the layer's
                    total |coefficient|, its mean activation on the correct and on the wrong test items (raw
                    residual, the model's own units), their difference with a 95% bootstrap CI, and the same
                    difference in training standard deviations; each row also carries its layer's summary
                    (``layer_C``, ``layer_n_nonzero``, ``layer_frac_nonzero``, ``layer_top{1,5,10}_share``)
    units.json      per residual layer: the number and fraction of units with a non-zero weight and the
                    concentration of the decision boundary (the share of total |coefficient| held by the top 1,
                    5 and 10 units); the chosen layer, the settings, the units of each column

Without a sparse probe (no ``vrp probe``, or residuals not stored) ``units.json`` says why and no table is
written. Nothing here loads a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from vrp.analysis.config import AnalyzeConfig
from vrp.runs.rundir import atomic_write_json, write_table

UNITS_FILE = "units.parquet"
UNITS_JSON = "units.json"
TOP_SHARES = (1, 5, 10)  # the concentration: share of total |coefficient| held by the top k units
LAYER_KEYS = ("C", "n_nonzero", "frac_nonzero", *(f"top{k}_share" for k in TOP_SHARES))  # repeated per unit row
COEF_UNITS = "standardized: the logit change per training standard deviation of the unit"
ACTIVATION_UNITS = "raw residual stream (the stored decision-position residual, the model's own units)"


def nonzero_fraction(coef: np.ndarray) -> np.ndarray:
    """Per layer, the fraction of units with a non-zero weight: ``coef`` [L, d] -> [L]."""
    coef = np.atleast_2d(np.asarray(coef))
    return (coef != 0).mean(axis=1)


def top_share(coef: np.ndarray, k: int) -> np.ndarray:
    """Per layer, the share of the total |coefficient| held by the ``k`` largest: [L, d] -> [L] (NaN where all are 0)."""
    a = np.sort(np.abs(np.atleast_2d(np.asarray(coef, dtype=np.float64))), axis=1)[:, ::-1]
    total = a.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, a[:, :k].sum(axis=1) / total, np.nan)


def top_units(coef_row: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` units of largest |coefficient| among the non-zero ones, largest first (ties: lower index first)."""
    w = np.abs(np.asarray(coef_row, dtype=np.float64))
    order = np.argsort(-w, kind="stable")
    return order[w[order] > 0][:k]


def mean_shift_ci(
    x_correct: np.ndarray, x_wrong: np.ndarray, n_boot: int, level: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per column, the mean over correct items, over wrong items, and their difference (correct - wrong)
    with a percentile bootstrap CI, the two groups resampled separately (stratified, as the AUROC CIs).

    Args:
        x_correct: ``[n_correct, K]`` values of the correct items.
        x_wrong: ``[n_wrong, K]`` values of the wrong items.

    Returns:
        ``mean_correct``, ``mean_wrong``, ``shift``, ``ci_low``, ``ci_high``, each ``[K]`` (CI NaN when a
        group has fewer than 2 items or ``n_boot`` is 0; means NaN for an empty group).
    """
    from vrp.stats.auroc import percentile_ci
    from vrp.stats.effects import resample_counts

    xc, xw = (np.asarray(x, dtype=np.float64) for x in (x_correct, x_wrong))
    k = xc.shape[1] if xc.ndim == 2 else xw.shape[1]
    nan = np.full(k, np.nan)
    mc = xc.mean(axis=0) if len(xc) else nan
    mw = xw.mean(axis=0) if len(xw) else nan
    lo, hi = nan.copy(), nan.copy()
    if n_boot > 0 and len(xc) >= 2 and len(xw) >= 2:
        boot_c = np.concatenate([c @ xc for c in resample_counts(len(xc), n_boot, rng)]) / len(xc)  # [n_boot, K]
        boot_w = np.concatenate([c @ xw for c in resample_counts(len(xw), n_boot, rng)]) / len(xw)
        diff = boot_c - boot_w
        for j in range(k):
            lo[j], hi[j] = percentile_ci(diff[:, j], level)
    return {"mean_correct": mc, "mean_wrong": mw, "shift": mc - mw, "ci_low": lo, "ci_high": hi}


def layer_rows(coef: np.ndarray, residual_layers: list[int]) -> list[dict]:
    """Per residual layer: units, non-zero units and their fraction, and the top-1/5/10 shares of |coefficient|."""
    frac = nonzero_fraction(coef)
    shares = {k: top_share(coef, k) for k in TOP_SHARES}
    return [
        {"residual_layer": int(r), "n_units": int(coef.shape[1]), "n_nonzero": int((coef[j] != 0).sum()),
         "frac_nonzero": float(frac[j]), **{f"top{k}_share": float(shares[k][j]) for k in TOP_SHARES}}
        for j, r in enumerate(residual_layers)
    ]  # fmt: skip


def unit_activations(run_dir: Path, ids: list[str], layer_idx: list[int], units: list[np.ndarray]) -> list[np.ndarray]:
    """Per layer of ``layer_idx`` (indices into the stored residual's layer axis, the probes' layer axis), the
    residual of ``ids`` (in that order) at its ``units``: ``[len(ids), len(units[j])]`` float64. Reads one shard
    at a time and keeps only those columns."""
    from vrp.runs import storage

    want = {i: k for k, i in enumerate(ids)}
    out = [np.full((len(ids), len(u)), np.nan) for u in units]
    found = 0
    for shard_ids, arrays in storage.iter_shards(run_dir):
        if "residual" not in arrays:
            continue
        rows = [(r, want[i]) for r, i in enumerate(shard_ids) if i in want]
        if not rows:
            continue
        src, dst = (np.array(x) for x in zip(*rows, strict=True))
        resid = arrays["residual"]  # [n, 1 + S, d] float16
        for j, (layer, u) in enumerate(zip(layer_idx, units, strict=True)):
            out[j][dst] = resid[src][:, layer][:, u].astype(np.float64)
        found += len(rows)
    if found != len(ids):
        raise ValueError(f"{run_dir}: {len(ids) - found} test items have no stored residual")
    return out


def _resolve(layers: tuple[int, ...] | None, residual_layers: list[int]) -> list[int]:
    """Asked residual indices (negative: from the end of the stored ones) -> indices into the probe's layer axis."""
    out = []
    for r in layers or ():
        r = residual_layers[r] if r < 0 and -len(residual_layers) <= r else r
        if r not in residual_layers:
            raise ValueError(f"residual layer {r} is not one the probes were trained on: {residual_layers}")
        out.append(residual_layers.index(r))
    return out


def _why_no_probe(run_dir: Path) -> str:
    """Why the run has no sparse probe, and what makes one."""
    manifest = run_dir / "manifest.json"
    config = json.loads(manifest.read_text()).get("config", {}) if manifest.is_file() else {}
    if config.get("store_residuals") is False:
        return "no sparse probe: the run stored no residuals (`vrp run --no-residuals`), and the probes read them"
    skipped = run_dir / "probes" / "skipped.json"
    if skipped.is_file():
        return f"no sparse probe: the probes were skipped ({json.loads(skipped.read_text()).get('reason', '?')})"
    return f"no sparse probe ({run_dir / 'probes' / 'probe_sparse'} missing): run `vrp probe --run {run_dir}`"


def unit_table(run_dir: Path, cfg: AnalyzeConfig | None = None) -> tuple[pa.Table | None, dict]:
    """The top units of the sparse probe (units.parquet) and the per-layer summary (units.json).

    Returns:
        (table, summary); the table is None and ``summary["available"]`` False (with the reason) when the run has
        no sparse probe or no stored residuals.
    """
    from vrp.probes.io import load_probe

    cfg = cfg or AnalyzeConfig()
    run_dir = Path(run_dir)
    probes = run_dir / "probes"
    folder = probes / "probe_sparse"
    if not (folder / "probe.json").is_file() or not (probes / "summary.json").is_file():
        return None, {"available": False, "reason": _why_no_probe(run_dir)}
    psum = json.loads((probes / "summary.json").read_text())
    split = json.loads((probes / "split.json").read_text())
    probe = load_probe(folder)
    coef = np.asarray(probe.coef_, dtype=np.float64)  # [L, d], standardized units
    scale = np.asarray(probe.scale_, dtype=np.float64)  # [L, d], the training standard deviations
    residual_layers = [int(r) for r in psum["residual_layers"]]
    chosen = int(psum["probes"]["probe_sparse"]["layer_index"])
    asked = list(dict.fromkeys([chosen, *_resolve(cfg.units_layers, residual_layers)]))
    per_layer = layer_rows(coef, residual_layers)
    c_by_layer = psum["probes"]["probe_sparse"].get("best_C_by_layer")
    for j, row in enumerate(per_layer):
        row["C"] = float(c_by_layer[j]) if c_by_layer else float("nan")

    import pyarrow.parquet as pq

    items = pq.read_table(run_dir / "items.parquet", columns=["id", "correct"]).to_pandas().set_index("id")
    test = [i for i in split["test"] if i in items.index]
    y = items.loc[test, "correct"].to_numpy().astype(bool)
    units = [top_units(coef[j], cfg.units_top) for j in asked]
    acts = unit_activations(run_dir, test, asked, units)
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for j, u, x in zip(asked, units, acts, strict=True):
        s = mean_shift_ci(x[y], x[~y], cfg.n_boot, cfg.level, rng)
        total = np.abs(coef[j]).sum()
        for rank, unit in enumerate(u):
            w = coef[j, unit]
            rows.append({
                "residual_layer": residual_layers[j], "chosen": j == chosen, "rank": rank + 1, "unit": int(unit),
                "coef": float(w), "abs_coef": abs(float(w)), "share": float(abs(w) / total),
                "cum_share": float(np.abs(coef[j, u[: rank + 1]]).sum() / total),
                "sign": "correct" if w > 0 else "wrong",
                "mean_correct": float(s["mean_correct"][rank]), "mean_wrong": float(s["mean_wrong"][rank]),
                "shift": float(s["shift"][rank]), "shift_ci_low": float(s["ci_low"][rank]),
                "shift_ci_high": float(s["ci_high"][rank]), "shift_sd": float(s["shift"][rank] / scale[j, unit]),
                "n_correct": int(y.sum()), "n_wrong": int((~y).sum()),
                **{f"layer_{k}": per_layer[j][k] for k in LAYER_KEYS},
            })  # fmt: skip
    summary = {
        "available": True, "probe": "probe_sparse", "split": "test", "n_test": len(test),
        "n_correct": int(y.sum()), "n_wrong": int((~y).sum()),
        "chosen_residual_layer": residual_layers[chosen], "residual_layers_shown": [residual_layers[j] for j in asked],
        "top_k": cfg.units_top, "level": cfg.level, "n_boot": cfg.n_boot,
        "coef_units": COEF_UNITS, "activation_units": ACTIVATION_UNITS,
        "chosen": per_layer[chosen], "layers": per_layer,
    }  # fmt: skip
    return pa.Table.from_pylist(rows, schema=SCHEMA), summary


SCHEMA = pa.schema(
    [
        ("residual_layer", pa.int64()),  # 0 = embed, l + 1 = block l's output
        ("chosen", pa.bool_()),  # the sparse probe's layer (chosen on validation)
        ("rank", pa.int64()),  # 1 = largest |coef| at this layer
        ("unit", pa.int64()),  # index into the residual stream's width
        ("coef", pa.float64()),  # standardized units; > 0: a higher activation reads as more likely correct
        ("abs_coef", pa.float64()),
        ("share", pa.float64()),  # |coef| / sum of |coef| at this layer
        ("cum_share", pa.float64()),  # share of the units of rank <= this one
        ("sign", pa.string()),  # "correct" (coef > 0) or "wrong" (coef < 0): which answers the unit argues for
        ("mean_correct", pa.float64()),  # mean raw activation on the correct test items
        ("mean_wrong", pa.float64()),
        ("shift", pa.float64()),  # mean_correct - mean_wrong (raw units)
        ("shift_ci_low", pa.float64()),  # 95% bootstrap CI, correct and wrong items resampled separately
        ("shift_ci_high", pa.float64()),
        ("shift_sd", pa.float64()),  # shift / the unit's training standard deviation
        ("n_correct", pa.int64()),
        ("n_wrong", pa.int64()),
        # the unit's layer as a whole (units.json's per-layer row): the sparse probe's penalty C chosen on validation,
        # its non-zero units and their fraction, and the share of |coef| held by the top 1, 5 and 10 units
        ("layer_C", pa.float64()),
        ("layer_n_nonzero", pa.int64()),
        ("layer_frac_nonzero", pa.float64()),
        *((f"layer_top{k}_share", pa.float64()) for k in TOP_SHARES),
    ]
)


def write_units(run_dir: Path, cfg: AnalyzeConfig | None = None) -> dict:
    """Write ``analysis/units.parquet`` and ``analysis/units.json``; returns the short entry for
    ``analysis/summary.json`` (available or why not, the chosen layer and its concentration)."""
    run_dir = Path(run_dir)
    out = run_dir / "analysis"
    out.mkdir(exist_ok=True)
    table, summary = unit_table(run_dir, cfg)
    if table is None:
        (out / UNITS_FILE).unlink(missing_ok=True)  # a stale table of an earlier probe would mislead
    else:
        write_table(out / UNITS_FILE, table)
    atomic_write_json(out / UNITS_JSON, summary)
    keep = ("available", "reason", "chosen_residual_layer", "chosen", "n_test")
    return {k: summary[k] for k in keep if k in summary}


def describe(entry: dict) -> str:
    """One line for the console: the chosen layer's non-zero fraction and concentration, or why there is none."""
    if not entry.get("available"):
        return f"sparse-circuit view: {entry.get('reason', 'not available')}"
    c = entry["chosen"]
    shares = ", ".join(f"top {k} {c[f'top{k}_share']:.0%}" for k in TOP_SHARES)
    return (f"sparse probe at residual layer {entry['chosen_residual_layer']}: {c['n_nonzero']} of {c['n_units']} "
            f"units non-zero ({c['frac_nonzero']:.1%}); share of |coefficient|: {shares} (analysis/units.parquet)")  # fmt: skip
