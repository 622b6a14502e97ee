"""The interventions section: paired accuracy deltas per condition and task, patching recovery.

Reads ``interventions/effects.parquet`` and ``patching.parquet`` (columns as in
``vrp.interventions.schema``; that module is not imported here, because importing the
``vrp.interventions`` package loads the model-side hooks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vrp.report import figures as F
from vrp.report.data import RunData
from vrp.report.html import Section, code, esc, howto, img, missing, num, table, with_ci

GUIDE = (
    "Interventions test whether a signal is causal, not just correlated: the model answers the same items again "
    "with part of its computation changed (probe-selected units zeroed or clamped, MLPs bypassed, attended image "
    "patches masked) and each change is a <em>paired</em> accuracy delta in percentage points against its own "
    "clean answers, with a 95% paired-bootstrap CI. A CI that excludes 0 is an effect beyond resampling noise; "
    "compare each condition with its random control of the same size (hollow markers), since breaking any "
    "k units costs something. Activation patching restores one layer's site from the clean run into a corrupted "
    "one: recovery 1 means that site alone carries what the corruption destroyed, 0 that it carries none of it."
)


def _effects_block(name: str, g: pd.DataFrame, info: dict) -> str:
    g = g.assign(_all=g["task"] != "all").sort_values(["_all", "control", "layer", "condition", "task"])
    head = f"<h3>{esc(name)} <span class='small'>({esc(', '.join(sorted(set(g['kind']))))})</span></h3>"
    if info:
        head += f"<p class='small'>{info.get('n_items', '?')} items; config {code(str(info.get('config', {})))}</p>"
    rows = [
        [esc(r["condition"]), esc(r["layer"]) if r["layer"] >= 0 else "—", "yes" if r["control"] else "",
         esc(r["task"]), str(int(r["n"])), num(r["acc_clean"]), num(r["acc_intervened"]),
         with_ci(r["delta_pp"], r["delta_ci_low"], r["delta_ci_high"], "+.1f"),
         with_ci(r["margin_delta"], r["margin_ci_low"], r["margin_ci_high"], "+.2f")]
        for _, r in g.iterrows()
    ]  # fmt: skip
    tab = table(["condition", "layer", "control", "task", "n", "acc. clean", "acc. intervened",
                 "Δ accuracy, pp [95% CI]", "Δ margin, logits [95% CI]"], rows, num_cols=(4, 5, 6, 7, 8))  # fmt: skip
    overall = g[g["task"] == "all"]
    fig = ""
    if not overall.empty:
        ivs = [F.Interval(f"{r['condition']}" + (f" (L{r['layer']})" if r["layer"] >= 0 and f"L{r['layer']}" not in
                          r["condition"] else ""), r["delta_pp"], r["delta_ci_low"], r["delta_ci_high"],
                          "#888888" if r["control"] else "#c0392b", hollow=bool(r["control"]))
               for _, r in overall.iterrows() if np.isfinite(r["delta_pp"])]  # fmt: skip
        if ivs:
            fig = img(F.interval_plot(ivs, 0.0, "Δ accuracy (pp) with 95% paired-bootstrap CI",
                                      f"{name}: all tasks"), f"accuracy deltas of {name}")  # fmt: skip
    return head + fig + tab


def _patching_block(p: pd.DataFrame) -> str:
    out = []
    for (exp, corruption), g in p.groupby(["experiment", "corruption"], sort=True):
        series = [
            F.Recovery(site, s["layer"].to_numpy(), s["recovered"].to_numpy(np.float64),
                       s["ci_low"].to_numpy(np.float64), s["ci_high"].to_numpy(np.float64))
            for site, s in ((site, s.sort_values("layer")) for site, s in g.groupby("site", sort=True))
        ]  # fmt: skip
        n = int(g["n"].max())
        png = F.recovery_plot(series, f"{exp}: one site restored at a time (n = {n})")  # corruption: in the caption
        rows = [[esc(r["site"]), str(int(r["layer"])), str(int(r["n"])), with_ci(r["recovered"], r["ci_low"],
                 r["ci_high"])] for _, r in g.sort_values(["site", "layer"]).iterrows()]  # fmt: skip
        out.append(
            f"<h3>Activation patching: {esc(exp)}</h3><p class='small'>corruption: {esc(corruption)}</p>"
            + img(png, f"patching recovery by layer, {exp}")
            + "<details><summary>Table</summary>"
            + table(["site", "layer", "n", "recovered [95% CI]"], rows, num_cols=(1, 2, 3))
            + "</details>"
        )
    return "".join(out)


def interventions_section(run: RunData) -> Section:
    """Render the run's intervention results, or say there are none and how to make them."""
    parts = [howto(GUIDE)]
    if run.effects is None and run.patching is None:
        parts.append(missing("This run has no intervention results (interventions/effects.parquet, "
                             "patching.parquet). Kinds: neurons, mass, mlp, heads, patches, patching.",
                             run.command("interventions")))  # fmt: skip
        return Section("interventions", "Interventions", "".join(parts))
    experiments = (run.interventions or {}).get("experiments", {})
    if run.effects is not None and len(run.effects):
        for name, g in run.effects.groupby("experiment", sort=True):
            parts.append(_effects_block(str(name), g, experiments.get(name, {})))
    if run.patching is not None and len(run.patching):
        parts.append(_patching_block(run.patching))
    elif run.effects is not None:
        parts.append("<p class='small'>No activation patching in this run "
                     f"({code(run.command('interventions').replace('KIND', 'patching'))}).</p>")  # fmt: skip
    return Section("interventions", "Interventions", "".join(parts))
