"""The study's ``concentration`` table: how concentrated reliability is in each family's residual stream.

One row per run: at the sparse (L1) probe's chosen layer (chosen on validation), the fraction of units with a
non-zero weight and the share of the total |coefficient| held by the top 1, 5 and 10 units
(``vrp.analysis.units``). A high top-k share with few non-zero units is the paper's late-fusion bottleneck (a
handful of units carry the decision boundary); a low one, a distributed code. Read from the saved probe, so
``vrp analyze`` need not have run.
"""

from __future__ import annotations

import pandas as pd

from vrp.analysis.units import TOP_SHARES, layer_rows


def _n_blocks(run_dir) -> int | None:
    """The decoder's block count from the run's first shard's metadata (None without shards)."""
    import json

    from safetensors import safe_open

    from vrp.runs import storage

    done = storage.completed(run_dir)
    if not done:
        return None
    with safe_open(str(next(iter(done.values())).with_suffix(".safetensors")), framework="np") as f:
        return json.loads(f.metadata().get("meta", "{}")).get("n_layers")


def concentration_row(run) -> dict:
    """The ``concentration`` row of one :class:`~vrp.study.tables.StudyRun`."""
    import numpy as np

    from vrp.probes.io import load_probe

    keys = {"data": run.data, "model": run.model}
    folder = run.run_dir / "probes" / "probe_sparse"
    if (
        run.probes is None
        or "probe_sparse" not in run.probes.get("probes", {})
        or not (folder / "probe.json").is_file()
    ):
        return {**keys, "undefined": run.probes_skipped or "no sparse probe (run `vrp probe`)"}
    entry = run.probes["probes"]["probe_sparse"]
    j = int(entry["layer_index"])
    layers = [int(r) for r in run.probes["residual_layers"]]
    coef = np.asarray(load_probe(folder).coef_)[j : j + 1]
    row = layer_rows(coef, [layers[j]])[0]
    n_blocks = _n_blocks(run.run_dir) or max(layers)  # residual layer L = the last block's output
    return {**keys, **row, "depth": layers[j] / n_blocks if n_blocks else float("nan"), "C": entry.get("C"),
            "test_auroc": entry.get("test_auroc"), "undefined": ""}  # fmt: skip


def concentration_table(runs: list) -> pd.DataFrame:
    """One :func:`concentration_row` per run (columns: data, model, residual_layer, depth, n_units, n_nonzero,
    frac_nonzero, top1_share, top5_share, top10_share, C, test_auroc, undefined)."""
    cols = ["data", "model", "residual_layer", "depth", "n_units", "n_nonzero", "frac_nonzero",
            *(f"top{k}_share" for k in TOP_SHARES), "C", "test_auroc", "undefined"]  # fmt: skip
    df = pd.DataFrame([concentration_row(r) for r in runs])
    return df.reindex(columns=cols) if len(df) else pd.DataFrame(columns=cols)
