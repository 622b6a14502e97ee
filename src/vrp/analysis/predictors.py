"""``vrp analyze``: which signals predict correctness, every number with its uncertainty.

Reads a run directory (and the probes of ``vrp probe`` when present) and writes
``RUN_DIR/analysis/``:

    predictors.parquet   one row per signal (the shape of the paper's Table 6): name, family,
                         direction, needs (what it reads besides the model: "gold answer",
                         "gold region" or ""), auroc, ci_low, ci_high, p (permutation),
                         p_bonferroni, p_bh, r, r_ci_low, r_ci_high, aurc, ece, n, undefined
    layers.parquet       per layer: probe AUROC (dense / sparse, validation and test), truth
                         margin of correct vs wrong items (mean and 95% bootstrap CI), and
                         the AUROC of each structural curve at that layer; with a tuned lens
                         (`vrp lens train`), its margins too (tuned_margin_*)
    head_groups.parquet  the per-head features over the supervised / unsupervised heads
                         (vrp.analysis.head_groups; derived signals attn_<feature>_sup / _unsup)
    units.parquet/.json  the sparse-circuit view (vrp.analysis.units)
    detachment.json      the symbolic-detachment view (vrp.analysis.detachment)
    summary.json         the settings, n, accuracy and the rows above as JSON

AUROC is oriented by each signal's documented direction (a "lower is more reliable"
signal is negated first), so 0.5 is chance and > 0.5 means the hypothesis holds; signals
with no documented direction keep their raw orientation. Probe rows are measured on the
probes' test split only (their ``n`` says so); every other row on all answered items.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vrp.analysis.config import AnalyzeConfig
from vrp.runs import storage
from vrp.runs.rundir import atomic_write_json, write_table
from vrp.signals.catalog import CURVES, DERIVED, SIGNALS

if TYPE_CHECKING:
    import pandas as pd

PROBE_ROWS = {
    "probe_dense": "best-layer dense (L2) probe on residuals",
    "probe_sparse": "best-layer sparse (L1) probe on residuals",
    "probe_stacked": "logistic probe on the last k layers concatenated",
    "probe_mlp": "2-layer MLP probe at the best dense layer",
    "attn_ensemble_gbt": "gradient-boosted trees on per-layer attention features",
    "attn_ensemble_rf": "random forest on per-layer attention features",
    "attn_heads_probe": "probe on every (block, head)'s gold-free attention features (logistic or GBT, chosen on "
    "validation)",
    "attn_heads_probe_gold": "the per-head probe with each head's gold-region mass added (where the item has a region)",
}
PROBABILITIES = {"token_confidence", "geo_mean_prob", "self_consistency", "predicted_consistency",
                 "semantic_consistency", *PROBE_ROWS}  # fmt: skip


def signal_row(
    name: str, family: str, direction: str, doc: str, score: np.ndarray, y: np.ndarray, cfg, needs: str = ""
) -> dict:
    from vrp.stats.association import point_biserial
    from vrp.stats.auroc import auroc_ci
    from vrp.stats.selective import calibration, risk_coverage

    oriented = -score if direction == "lower" else score
    a = auroc_ci(score, y, n_boot=cfg.n_boot, level=cfg.level, n_perm=cfg.n_perm, seed=cfg.seed)
    auc, lo, hi = a.auroc, a.ci_low, a.ci_high
    if direction == "lower":  # AUROC(-s) = 1 - AUROC(s); the CI flips, the two-sided p stays
        auc, lo, hi = 1 - auc, 1 - hi, 1 - lo
    finite = np.isfinite(score)
    r = point_biserial(score[finite], y[finite], level=cfg.level)
    rc = risk_coverage(oriented[finite], y[finite])
    ece = float("nan")
    if name in PROBABILITIES:
        cal = calibration(score[finite], y[finite], n_bins=cfg.ece_bins)
        ece = cal.ece
    return {
        "name": name, "family": family, "direction": direction, "what": doc, "needs": needs,
        "auroc": auc, "ci_low": lo, "ci_high": hi, "p": a.p_value,
        "r": r.r, "r_ci_low": r.ci_low, "r_ci_high": r.ci_high, "aurc": rc.aurc, "ece": ece,
        "n": int(finite.sum()), "undefined": a.undefined or "",
    }  # fmt: skip


def derived_signals(run_dir: Path, ids) -> pd.DataFrame:
    """The derived signals (``catalog.DERIVED``) whose source files the run holds, one row per id
    of ``ids`` in that order (NaN for an item a source lacks); no column for an absent source."""
    import pandas as pd

    out = pd.DataFrame(index=pd.Index(list(ids), name="id"))
    for source in dict.fromkeys(d.source for d in DERIVED):
        path = run_dir / source
        if not path.is_file():
            continue
        t = pq.read_table(path).to_pandas().set_index("id")
        for d in DERIVED:
            if d.source == source and d.name in t:
                out[d.name] = t[d.name].reindex(out.index).to_numpy(dtype=np.float64)
    return out


def predictor_table(run_dir: Path, cfg: AnalyzeConfig | None = None) -> pa.Table:
    """One row per signal (and per probe, when ``vrp probe`` has run) with AUROC, CIs and p-values."""
    from vrp.stats.multitest import adjust_pvalues

    cfg = cfg or AnalyzeConfig()
    df = pq.read_table(run_dir / "items.parquet").to_pandas()
    y = df["correct"].to_numpy().astype(np.int64)
    rows = [
        signal_row(s.name, s.family, s.direction, s.doc, df[s.name].to_numpy(dtype=np.float64), y, cfg, s.needs)
        for s in SIGNALS
    ]
    derived = derived_signals(run_dir, df["id"])
    for d in DERIVED:
        if d.name in derived:
            score = derived[d.name].to_numpy(dtype=np.float64)
            rows.append(signal_row(d.name, d.family, d.direction, d.doc, score, y, cfg, d.needs))
    preds_path = run_dir / "probes" / "predictions.parquet"
    if preds_path.is_file():
        preds = pq.read_table(preds_path).to_pandas()
        test = preds[preds["split"] == "test"].set_index("id")
        y_test = df.set_index("id").loc[test.index, "correct"].to_numpy().astype(np.int64)
        for name, doc in PROBE_ROWS.items():
            if name in test:
                rows.append(
                    signal_row(name, "probe", "higher", doc, test[name].to_numpy(dtype=np.float64), y_test, cfg)
                )
    p = np.array([r["p"] for r in rows], dtype=np.float64)
    for method, col in (("bonferroni", "p_bonferroni"), ("bh", "p_bh")):
        for r, q in zip(rows, adjust_pvalues(p, method), strict=True):
            r[col] = float(q)
    return pa.Table.from_pylist(rows)


def layer_table(run_dir: Path, cfg: AnalyzeConfig | None = None) -> pa.Table:
    """Per-layer curves: truth margin of correct vs wrong items, structural AUROCs, probe AUROCs."""
    import json

    from vrp.stats.auroc import auroc

    cfg = cfg or AnalyzeConfig()
    items = pq.read_table(run_dir / "items.parquet", columns=["id", "correct"]).to_pandas().set_index("id")
    ids, margin = storage.load_stacked(run_dir, "curve.margin")  # [n, L + 1]
    y = items.loc[ids, "correct"].to_numpy().astype(bool)
    rng = np.random.default_rng(cfg.seed)
    cols: dict[str, list] = {"residual_layer": list(range(margin.shape[1]))}
    for label, mask in (("correct", y), ("wrong", ~y)):
        m = margin[mask].astype(np.float64)
        mean, lo, hi = _mean_ci(m, rng, cfg)
        cols[f"margin_{label}_mean"], cols[f"margin_{label}_ci_low"], cols[f"margin_{label}_ci_high"] = mean, lo, hi
    cols["margin_auroc"] = [float(auroc(margin[:, k], y)) for k in range(margin.shape[1])]
    for c in CURVES:  # structural curves are per block: residual layer k = block k - 1
        if c.family != "structural" or c.axis != "block" or c.name == "attn_entropy_delta":  # a change between blocks
            continue
        try:
            c_ids, curve = storage.load_stacked(run_dir, f"curve.{c.name}")
        except KeyError:
            continue
        yc = items.loc[c_ids, "correct"].to_numpy().astype(bool)
        sign = -1.0 if c.direction == "lower" else 1.0
        cols[f"{c.name}_auroc"] = [float("nan")] + [float(auroc(sign * curve[:, k], yc)) for k in range(curve.shape[1])]
    summary = run_dir / "probes" / "summary.json"
    if summary.is_file():
        probes = json.loads(summary.read_text())
        layers = probes["residual_layers"]
        for name in ("probe_dense", "probe_sparse"):
            for split in ("val", "test"):
                by_layer = dict(zip(layers, probes["probes"][name][f"{split}_auroc_by_layer"], strict=True))
                cols[f"{name}_{split}_auroc"] = [by_layer.get(k, float("nan")) for k in cols["residual_layer"]]
    from vrp.analysis.lens_run import layer_columns  # the tuned lens's margins, when `vrp lens train` has run

    cols.update(layer_columns(run_dir, items["correct"].to_dict(), cols["residual_layer"], cfg))
    return pa.table(cols)


def _mean_ci(m: np.ndarray, rng: np.random.Generator, cfg) -> tuple[list, list, list]:
    """Per-column mean of ``m`` [n, L] and its percentile bootstrap CI (NaN CI when n < 2)."""
    from vrp.stats.effects import mean_ci

    return tuple(x.tolist() for x in mean_ci(m, cfg.n_boot, cfg.level, rng))


def analyze(run_dir: Path, cfg: AnalyzeConfig | None = None) -> dict:
    """Write ``RUN_DIR/analysis/`` and return its summary."""
    cfg = cfg or AnalyzeConfig()
    run_dir = Path(run_dir)
    out = run_dir / "analysis"
    out.mkdir(exist_ok=True)
    from vrp.analysis.head_groups import write_head_groups  # analysis/head_groups.parquet: supervised vs not

    head_groups = write_head_groups(run_dir)
    table = predictor_table(run_dir, cfg)
    layers = layer_table(run_dir, cfg)
    write_table(out / "predictors.parquet", table)
    write_table(out / "layers.parquet", layers)
    summary = {"config": cfg.__dict__, "predictors": table.to_pylist(), "n_layers": layers.num_rows,
               "head_groups": head_groups}  # fmt: skip
    from vrp.analysis.consistency import analyze_consistency  # analysis/consistency.json (runs with the head)

    summary["consistency"] = analyze_consistency(run_dir, cfg)
    from vrp.analysis import detachment, units  # analysis/units.* (sparse probe), detachment.json (gold regions)

    summary["units"] = units.write_units(run_dir, cfg)
    summary["detachment"] = detachment.write_detachment(run_dir, cfg.detachment(), cfg.level)
    atomic_write_json(out / "summary.json", summary)
    return summary
