"""The sparse-circuit section: which units the sparse (L1) probe selects, how concentrated its decision boundary
is, how its top units shift between correct and wrong answers, and what ablating them did.

Reads ``analysis/units.json`` and ``units.parquet`` (``vrp.analysis.units``), the sparse probe itself for the
|coefficient| distribution, the test items' residuals for the histograms, and, where ``vrp intervene --kind
neurons`` has run, ``interventions/summary.json`` and ``effects.parquet``. No model is loaded.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from vrp.report import figures as F
from vrp.report.data import RunData, finite
from vrp.report.html import Section, code, esc, howto, img, missing, num, table, with_ci

N_HIST = 6  # units of the chosen layer shown as activation histograms

GUIDE = (
    "The sparse (L1) probe predicts correctness from one residual layer while keeping as few units as it can (its "
    "penalty C chosen on validation per layer): the units it keeps are the candidate <em>reliability units</em> of "
    "the paper's §5.3. Per layer, the fraction of units with a non-zero weight; at the probe's chosen layer (and any "
    "layer asked with <code>vrp analyze --units-layers</code>), the top units by |coefficient|. A coefficient is in "
    "standardized units (the logit change per training standard deviation of the unit): positive means a higher "
    "activation argues for a correct answer. The <em>concentration</em> is the share of the layer's total "
    "|coefficient| held by its top 1, 5 and 10 units: near 1, a handful of units carry the decision boundary (the "
    "paper's late-fusion bottleneck); small, it is spread over many. The activation shift is the mean raw residual "
    "(the model's own units) on the correct minus the wrong <em>test</em> items, with a 95% bootstrap CI (the two "
    "groups resampled separately), and the same shift in training standard deviations. Where "
    "<code>vrp intervene --kind neurons</code> has run, each unit's row shows the accuracy change of the condition "
    "that ablated it (together with the other units of that condition, unless it was ablated alone)."
)


def _read(run: RunData) -> tuple[dict | None, pd.DataFrame | None]:
    d = run.run_dir / "analysis"
    summary = json.loads((d / "units.json").read_text()) if (d / "units.json").is_file() else None
    table_ = pd.read_parquet(d / "units.parquet") if (d / "units.parquet").is_file() else None
    return summary, table_


def neuron_ablations(run: RunData) -> list[dict]:
    """Every condition of the run's ``neurons`` experiments: experiment, label, block, site, control flag (the
    random units), the ablated units (None where the summary predates their recording) and the all-task effect
    row (or None)."""
    out = []
    experiments = (run.interventions or {}).get("experiments", {})
    for name, exp in experiments.items():
        if exp.get("kind") != "neurons":
            continue
        site = (exp.get("config") or {}).get("site", "residual")
        for c in exp.get("conditions", []):
            row = None
            if run.effects is not None:
                e = run.effects
                hit = e[(e["experiment"] == name) & (e["condition"] == c["label"]) & (e["task"] == "all")]
                row = hit.iloc[0].to_dict() if len(hit) else None
            out.append({"experiment": name, "label": c["label"], "block": int(c.get("layer", -1)),
                        "site": c.get("site", site), "units": c.get("units"), "effect": row,
                        "control": bool(c.get("control"))})  # fmt: skip
    return out


def _effect_cell(unit: int, residual_layer: int, ablations: list[dict]) -> str:
    """What the neurons experiments did to ``unit`` of ``residual_layer`` (block residual_layer - 1's output)."""
    parts = []
    for a in ablations:
        if a["control"] or a["block"] != residual_layer - 1 or a["site"] != "residual":
            continue
        eff = a["effect"]
        delta = "no effect row" if eff is None else with_ci(eff["delta_pp"], eff["delta_ci_low"], eff["delta_ci_high"],
                                                            "+.1f") + " pp"  # fmt: skip
        if a["units"] is None:
            parts.append(f"<span class='small'>units not recorded; {esc(a['label'])}: {delta}</span>")
        elif unit in a["units"]:
            k = len(a["units"])
            alone = "alone" if k == 1 else f"with {k - 1} other unit{'s' if k > 2 else ''}"
            parts.append(f"{delta} <span class='small'>({alone}: {esc(a['label'])})</span>")
    return "<br>".join(parts) if parts else "—"


def _ablation_note(ablations: list[dict], shown: set[int]) -> str:
    if not ablations:
        return ("<p class='small'>No <code>vrp intervene --kind neurons</code> experiment in this run: the ablation "
                "column is empty.</p>")  # fmt: skip
    items = []
    for a in ablations:
        units = "units not recorded" if a["units"] is None else f"{len(a['units'])} units"
        if a["site"] == "residual":
            where = f"block {a['block']}'s output (residual layer {a['block'] + 1})"
        else:
            where = f"block {a['block']}'s {a['site']} write"
        note = "" if a["site"] == "residual" and a["block"] + 1 in shown else " (not a layer listed here)"
        eff = a["effect"]
        delta = "" if eff is None else ": " + with_ci(eff["delta_pp"], eff["delta_ci_low"], eff["delta_ci_high"],
                                                       "+.1f") + " pp"  # fmt: skip
        kind = " <em>(control: random units)</em>" if a["control"] else ""
        items.append(
            f"<li>{code(a['experiment'])} · {esc(a['label'])}{kind}: {units} of {esc(where)}{note}{delta}</li>"
        )
    return ("<p class='small'>What the neurons experiments ablated (compare each probe-unit condition with the random "
            "units of the same block):</p><ul class='small'>" + "".join(items) + "</ul>")  # fmt: skip


def _histograms(run: RunData, summary: dict, top: pd.DataFrame) -> str:
    from vrp.analysis.units import unit_activations

    probes = run.probes or {}
    layers = probes.get("residual_layers")
    split = run.run_dir / "probes" / "split.json"
    if top.empty or not layers or not split.is_file():
        return ""
    r = int(top["residual_layer"].iloc[0])
    label = run.items.set_index("id")["correct"]
    test = [i for i in json.loads(split.read_text())["test"] if i in label.index]
    y = label.loc[test].to_numpy().astype(bool)
    units = top["unit"].to_numpy()[:N_HIST]
    try:
        (x,) = unit_activations(run.run_dir, test, [layers.index(r)], [units])
    except (ValueError, KeyError) as e:
        return f"<p class='small'>No activation histograms: {esc(e)}</p>"
    hists = [F.UnitHist(f"unit {u} (coef {c:+.2f})", x[y, k], x[~y, k])
             for k, (u, c) in enumerate(zip(units, top["coef"], strict=False))]  # fmt: skip
    png = F.unit_histograms(hists, f"top units at residual layer {r}: test items", "raw activation")
    return img(png, f"activation histograms of the top units at residual layer {r}")


def _coef_figure(run: RunData, summary: dict) -> str:
    from vrp.probes.io import load_probe

    folder = run.run_dir / "probes" / "probe_sparse"
    layers = (run.probes or {}).get("residual_layers")
    if not (folder / "probe.json").is_file() or not layers:
        return ""
    r = summary["chosen_residual_layer"]
    coef = np.asarray(load_probe(folder).coef_)[layers.index(r)]
    c = summary["chosen"]
    png = F.coef_distribution_plot(coef, f"sparse probe, residual layer {r}: {c['n_nonzero']} of {c['n_units']} "
                                   "units non-zero", top_k=summary.get("top_k", 10))  # fmt: skip
    return img(png, f"sorted |coefficient| of the sparse probe at residual layer {r}")


def _share(x) -> str:
    return num(x, ".0%") if finite(x) else "—"


def units_section(run: RunData) -> Section:
    """The sparse-circuit view, or a notice saying what the run lacks and the command that makes it."""
    title = "Sparse circuits"
    parts = [howto(GUIDE)]
    summary, top = _read(run)
    if summary is None:
        why = ("This run has no analysis (analysis/units.json)." if run.analysis is None else
               "This run's analysis predates the sparse-circuit view (no analysis/units.json).")  # fmt: skip
        parts.append(missing(why, run.command("analysis")))
        return Section("units", title, "".join(parts))
    if not summary.get("available"):
        parts.append(f"<p class='missing'>No sparse-circuit view: {esc(summary.get('reason', 'not available'))}.</p>")
        return Section("units", title, "".join(parts))
    c, r = summary["chosen"], summary["chosen_residual_layer"]
    parts.append(
        f"<p>At residual layer <strong>{r}</strong> (the sparse probe's layer, chosen on validation) the probe keeps "
        f"<strong>{c['n_nonzero']}</strong> of {c['n_units']} units ({num(c['frac_nonzero'], '.1%')}); its top 1, 5 "
        f"and 10 units hold {_share(c['top1_share'])}, {_share(c['top5_share'])} and {_share(c['top10_share'])} of "
        f"the total |coefficient|. Activations: {summary['n_test']} test items ({summary['n_correct']} correct, "
        f"{summary['n_wrong']} wrong).</p>"
    )
    parts.append("<div class='grid2'><figure>" + _coef_figure(run, summary) + "</figure><figure>"
                 + _histograms(run, summary, top[top["chosen"]] if top is not None else pd.DataFrame())
                 + "</figure></div>")  # fmt: skip
    ablations = neuron_ablations(run)
    shown = set(summary.get("residual_layers_shown", []))
    for layer, g in top.groupby("residual_layer", sort=False) if top is not None else ():
        chosen = " (the probe's chosen layer)" if bool(g["chosen"].iloc[0]) else ""
        rows = [[str(int(u["rank"])), code(f"N{int(u['unit'])}"), num(u["coef"], "+.3f"), _share(u["share"]),
                 _share(u["cum_share"]), num(u["mean_correct"], ".3g"), num(u["mean_wrong"], ".3g"),
                 with_ci(u["shift"], u["shift_ci_low"], u["shift_ci_high"], "+.3g"), num(u["shift_sd"], "+.2f"),
                 _effect_cell(int(u["unit"]), int(layer), ablations)] for _, u in g.iterrows()]  # fmt: skip
        parts.append(f"<h3>Top units at residual layer {int(layer)}{chosen}</h3>")
        parts.append(table(["rank", "unit", "coef", "share", "cum. share", "mean, correct", "mean, wrong",
                            "shift [95% CI]", "shift (SD)", "ablation Δ accuracy [95% CI]"], rows,
                           num_cols=(0, 2, 3, 4, 5, 6, 7, 8)))  # fmt: skip
    parts.append(_ablation_note(ablations, shown))
    rows = [[str(x["residual_layer"]), num(x.get("C"), "g"), f"{x['n_nonzero']} / {x['n_units']}",
             num(x["frac_nonzero"], ".1%"), _share(x["top1_share"]), _share(x["top5_share"]), _share(x["top10_share"])]
            for x in summary["layers"]]  # fmt: skip
    parts.append("<details><summary>Every layer: non-zero units and concentration</summary>" + table(
        ["residual layer", "C", "non-zero units", "fraction", "top-1 share", "top-5 share", "top-10 share"], rows,
        num_cols=(0, 1, 2, 3, 4, 5, 6)) + "</details>")  # fmt: skip
    return Section("units", title, "".join(parts))


def units_headline(run: RunData) -> dict | None:
    """summary.json's ``sparse_circuit``: the chosen layer's non-zero units and concentration (None: no
    analysis/units.json; ``{"available": false, "reason"}`` when the run has no sparse probe)."""
    summary, _ = _read(run)
    if summary is None or not summary.get("available"):
        return None if summary is None else {"available": False, "reason": summary.get("reason")}
    c = summary["chosen"]
    keys = ("n_nonzero", "n_units", "frac_nonzero", "top1_share", "top5_share", "top10_share")
    return {"available": True, "residual_layer": summary["chosen_residual_layer"], **{k: c[k] for k in keys}}


def concentration_section(df: pd.DataFrame) -> Section:
    """The study report's concentration section: one row per family and dataset (study table ``concentration``)."""
    guide = howto(
        "How concentrated reliability is in each family's residual stream, at the layer its sparse (L1) probe chose "
        "on validation: the fraction of units with a non-zero weight and the share of the total |coefficient| held "
        "by the top 1, 5 and 10 units. High shares with few units are the paper's late-fusion bottleneck (a handful "
        "of units carry the decision boundary, and ablating them should hurt: compare the neurons interventions); "
        "low shares are a distributed code. Each run's report lists the units themselves (section Sparse circuits)."
    )
    if df.empty or "frac_nonzero" not in df:
        return Section("concentration", "Reliability concentration", guide + "<p>No run has a sparse probe yet.</p>")
    rows = []
    for _, r in df.iterrows():
        if not finite(r.get("frac_nonzero")):
            rows.append([esc(r["model"]), esc(r["data"]), f"<span class='undef'>{esc(r.get('undefined', ''))}</span>"]
                        + [""] * 6)  # fmt: skip
            continue
        rows.append([esc(r["model"]), esc(r["data"]), f"{int(r['residual_layer'])} <span class='ci'>(depth "
                     f"{num(r['depth'], '.2f')})</span>", f"{int(r['n_nonzero'])} / {int(r['n_units'])}",
                     num(r["frac_nonzero"], ".1%"), _share(r["top1_share"]), _share(r["top5_share"]),
                     _share(r["top10_share"]), num(r.get("test_auroc"))])  # fmt: skip
    ok = df[df["top5_share"].notna()] if "top5_share" in df else df.iloc[:0]
    line = ""
    if len(ok):
        top = ok.sort_values("top5_share", ascending=False).iloc[0]
        low = ok.sort_values("top5_share").iloc[0]
        line = (f"<p>Most concentrated: <strong>{esc(top['model'])}</strong> on {esc(top['data'])} (top 5 units hold "
                f"{_share(top['top5_share'])} of |coefficient|); least: <strong>{esc(low['model'])}</strong> on "
                f"{esc(low['data'])} ({_share(low['top5_share'])}).</p>")  # fmt: skip
    return Section("concentration", "Reliability concentration", guide + line + table(
        ["model", "dataset", "layer", "non-zero units", "fraction", "top-1 share", "top-5 share", "top-10 share",
         "sparse probe test AUROC"], rows, num_cols=(3, 4, 5, 6, 7, 8)))  # fmt: skip
