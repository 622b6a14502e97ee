"""The report's sections about the run, the predictors and the selective-prediction curves."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from vrp.report import figures as F
from vrp.report.data import RunData, finite
from vrp.report.html import (
    Section,
    code,
    esc,
    howto,
    img,
    kv_table,
    missing,
    num,
    table,
    undefined,
    with_ci,
)
from vrp.stats.intervals import wilson_ci


def accuracy(run: RunData) -> dict:
    """Accuracy overall and per task with 95% Wilson CIs: the manifest's, else from items.parquet."""
    acc = run.manifest.get("accuracy")
    if acc:
        return acc

    def one(correct) -> dict:
        k, n = int(np.sum(correct)), len(correct)
        return {"n": n, "correct": k, "accuracy": k / n if n else float("nan"), "ci95": list(wilson_ci(k, n))}

    df = run.items
    return {"overall": one(df["correct"]), "by_task": {t: one(g["correct"]) for t, g in df.groupby("task")}}


def run_section(run: RunData) -> Section:
    """Model, data, counts, failures, accuracy with CIs, config."""
    m, counts = run.manifest, run.manifest.get("counts", {})
    model = m.get("model", {})
    parts = []
    status = m.get("status", "unknown")
    if status != "complete":
        parts.append(f"<p class='warn'>This run's status is <strong>{esc(status)}</strong>: the numbers below "
                     f"cover the {len(run.items)} items answered so far. Resume it with the same "
                     f"{code('vrp run')} command.</p>")  # fmt: skip
    parts.append(howto(
        "Accuracy is the fraction of answered items the benchmark's own scorer marks correct, with a 95% Wilson "
        "interval. Every later section asks which internal signal separates these correct answers from the wrong "
        "ones. Failed items (unreadable images, bad records) are left out of everything and listed here."
    ))  # fmt: skip
    parts.append("<div class='grid2'><div><h3>Model and data</h3>")
    parts.append(kv_table([
        ("model", model.get("name", "?")), ("model type", model.get("model_type", "?")),
        ("model path", model.get("path", "?")), ("model sha256", model.get("sha256", "?")),
        *[(f"data: {k}", v if not isinstance(v, dict | list) else json.dumps(v)) for k, v in m.get("data", {}).items()],
        ("items", counts.get("items", len(run.items))), ("answered", counts.get("answered", len(run.items))),
        ("failed", counts.get("failed", len(run.failures))), ("started", m.get("started", "?")),
        ("finished", m.get("finished", "?")),
        ("semantic clusters", m.get("semantic_clustering", "canonical")),  # --nli-model: nli:PATH
    ]))  # fmt: skip
    acc = accuracy(run)
    rows = [(t, a) for t, a in acc["by_task"].items()] + [("all", acc["overall"])]
    parts.append("</div><div><h3>Accuracy</h3>")
    parts.append(table(
        ["task", "n", "correct", "accuracy [95% CI]"],
        [[f"<strong>{esc(t)}</strong>" if t == "all" else esc(t), str(a["n"]), str(a["correct"]),
          with_ci(a["accuracy"], *a["ci95"])] for t, a in rows],
        num_cols=(1, 2, 3),
    ))  # fmt: skip
    parts.append("<h3>Failures</h3>")
    if not run.failures:
        parts.append("<p>No item failed.</p>")
    else:
        by_stage = Counter(f.get("stage", "?") for f in run.failures)
        parts.append("<p>" + ", ".join(f"{esc(s)}: {k}" for s, k in sorted(by_stage.items())) + "</p>")
        shown = run.failures[:10]
        parts.append(table(["id", "stage", "error"],
                           [[esc(f.get("id")), esc(f.get("stage")), esc(f.get("error"))] for f in shown]))  # fmt: skip
        if len(run.failures) > len(shown):
            parts.append(f"<p class='small'>{len(run.failures) - len(shown)} more in {code('failures.jsonl')}.</p>")
    parts.append("</div></div>")
    cfg = m.get("config", {})
    parts.append("<details><summary>Run configuration</summary>"
                 + kv_table([(k, json.dumps(v)) for k, v in sorted(cfg.items())]) + "</details>")  # fmt: skip
    vers = m.get("versions", {})
    parts.append("<details><summary>Package versions of the run</summary>"
                 + kv_table(sorted(vers.items())) + "</details>")  # fmt: skip
    return Section("run", "Run", "".join(parts))


def _family_color(family: str) -> str:
    return F.FAMILY_COLORS.get(family, "#555555")


def predictors_section(run: RunData) -> Section:
    """The predictor table (AUROC [CI], r, adjusted p, AURC, ECE) and its forest plot."""
    t = run.predictors
    guide = howto(
        "Each row asks: does this signal rank correct answers above wrong ones? AUROC 0.5 is chance, 1.0 a perfect "
        "separation; it is oriented by the signal's documented direction (a 'lower is more reliable' signal is "
        "negated), so below 0.5 means the opposite of the hypothesis holds. Signals with no documented direction "
        "(direction 'none') keep their raw orientation. Brackets are 95% bootstrap CIs; a CI that does not cross "
        "0.5 is a separation beyond chance. p is a permutation p-value, adjusted over all rows (Bonferroni, "
        "Benjamini-Hochberg). r is the point-biserial correlation with its CI. AURC is the area under the "
        "risk-coverage curve (lower is better); ECE the calibration error of probability-valued signals. Probe "
        "rows are measured on the probes' held-out test split only (their n says so). A signal that is constant "
        "or has one class is <em>undefined</em>, with the reason, never a fake 0.5. Rows marked <em>needs gold "
        "answer</em> or <em>needs gold region</em> read the annotation besides the model: diagnostics, not something "
        "a deployed monitor can compute. The last-layer truth margin is the model's own first-token decision, so "
        "with one-token answers and exact-match scoring margin_last and margin_positive_from have AUROC 1 by "
        "construction; the earlier layers (next section) are the informative part, and they too need the gold "
        "answer."
    )
    if t is None:
        return Section("predictors", "Predictors of correctness",
                       guide + missing("This run has no predictor table (analysis/predictors.parquet).",
                                       run.command("analysis")))  # fmt: skip
    t = t.copy()
    t["_defined"] = [not u for u in t["undefined"]]
    t = t.sort_values(["_defined", "auroc"], ascending=[False, False])
    arrow = {"higher": "higher", "lower": "lower", "none": "none"}
    rows = []
    for _, r in t.iterrows():
        dot = f"<span style='color:{_family_color(r['family'])}' title='{esc(r['family'])}'>&#9679;</span>"
        what = str(r.get("what", "")).replace("`", "")
        needs = f" (needs {esc(r['needs'])})" if r["needs"] else ""
        name = f"{dot} {code(r['name'])}<span class='what'>{esc(r['family'])}: {esc(what)}{needs}</span>"
        if r["undefined"]:
            rows.append([name + f"<span class='reason'>{esc(r['undefined'])}</span>", esc(arrow.get(r["direction"], r["direction"])),
                         undefined(r["undefined"]), undefined(r["undefined"]), "", "", "", "", "",
                         str(int(r["n"]))])  # fmt: skip
            continue
        rows.append([
            name, esc(arrow.get(r["direction"], r["direction"])), with_ci(r["auroc"], r["ci_low"], r["ci_high"]),
            with_ci(r["r"], r["r_ci_low"], r["r_ci_high"], "+.2f"), num(r["p"], ".4f"),
            num(r["p_bonferroni"], ".4f"), num(r["p_bh"], ".4f"), num(r["aurc"]), num(r["ece"]), str(int(r["n"])),
        ])  # fmt: skip
    n_boot = (run.analysis or {}).get("config", {}).get("n_boot")
    note = f"<p class='small'>CIs from {n_boot} bootstrap resamples. '—': not applicable (ECE is only " \
        "computed for probability-valued signals).</p>" if n_boot else ""  # fmt: skip
    defined = t[t["_defined"]]
    forest = F.interval_plot(
        [F.Interval(r["name"] + (" [gold]" if r["needs"] else ""), r["auroc"], r["ci_low"], r["ci_high"],
                    _family_color(r["family"]),
                    hollow=r["direction"] == "none") for _, r in defined.iterrows()],
        ref=0.5, xlabel="AUROC (oriented; 0.5 = chance) with 95% CI", title="Predictors of correctness",
    )  # fmt: skip
    legend = ", ".join(f"<span style='color:{c}'>&#9679;</span> {esc(f)}" for f, c in F.FAMILY_COLORS.items())
    n_undef = int((~t["_defined"]).sum())
    body = (
        guide
        + table(["signal", "reliable when", "AUROC [95% CI]", "r [95% CI]", "p", "p Bonf.", "p BH", "AURC", "ECE",
                 "n"], rows, cls="pred", num_cols=(2, 3, 4, 5, 6, 7, 8, 9))
        + note
        + "<h3>Forest plot</h3>"
        + f"<p class='small'>{legend}; hollow markers: no documented direction; [gold]: the signal reads the gold "
        "answer or gold region (a diagnostic, not available to a deployed monitor). "
        + (f"{n_undef} undefined signal(s) are not drawn (see the table).</p>" if n_undef else "</p>")
        + img(forest, "forest plot of AUROC with 95% CI per signal")
    )  # fmt: skip
    return Section("predictors", "Predictors of correctness", body)


def selective_section(run: RunData) -> Section:
    """Risk-coverage curves and reliability diagrams of the probability-valued signals."""
    from vrp.analysis.predictors import PROBABILITIES
    from vrp.stats.selective import calibration, risk_coverage

    guide = howto(
        "Selective prediction: keep only the items a signal is most confident about. A risk-coverage curve shows "
        "the error rate among the kept items (risk) as more are kept (coverage); a useful signal stays well under "
        "the dashed 'no selection' line at low coverage, and its AURC (area, lower is better) is small; e-AURC is "
        "its excess over the best possible order (all correct items first). The "
        "reliability diagram asks whether stated probabilities are honest: a calibrated signal's points lie on "
        "the diagonal (items given p = 0.8 are right 80% of the time); ECE is the count-weighted mean gap. "
        "Signals use all answered items; probes use their held-out test split, shown with the same signals on "
        "those items for a like-for-like comparison."
    )
    df = run.items
    bins = int((run.analysis or {}).get("config", {}).get("ece_bins", 15))
    signals = [s for s in ("token_confidence", "geo_mean_prob", "self_consistency") if s in df and s in PROBABILITIES]
    groups = [("all answered items", {s: df[s].to_numpy(np.float64) for s in signals}, df["correct"].to_numpy())]
    if run.predictions is not None:
        test = run.predictions[run.predictions["split"] == "test"]
        yt = df.set_index("id").loc[test["id"], "correct"].to_numpy()
        cols = {
            c: test[c].to_numpy(np.float64)
            for c in test.columns
            if c in PROBABILITIES and c.startswith(("probe", "attn"))
        }
        ref = df.set_index("id").loc[test["id"]]
        cols.update({s: ref[s].to_numpy(np.float64) for s in signals[:1]})
        groups.append(("probes' test split", cols, yt))
    parts = [guide]
    for title, cols, y in groups:
        y = np.asarray(y, dtype=bool)
        rc_curves, cal_curves, rows, undef = [], [], [], []
        for i, (name, s) in enumerate(cols.items()):
            rc, cal = risk_coverage(s, y), calibration(s, y, n_bins=bins)
            color = f"C{i}"
            if rc.undefined:
                undef.append((name, rc.undefined))
            else:
                rc_curves.append(F.Curve(f"{name} (AURC {rc.aurc:.3f})", rc.coverage, rc.risk, color))
            if not cal.undefined:
                cal_curves.append(F.Curve(f"{name} (ECE {cal.ece:.3f})", cal.mean_confidence, cal.accuracy, color))
            rows.append([code(name), str(rc.n if not rc.undefined else cal.n),
                         undefined(rc.undefined) if rc.undefined else num(rc.aurc),
                         undefined(rc.undefined) if rc.undefined else num(rc.e_aurc),
                         undefined(cal.undefined) if cal.undefined else num(cal.ece),
                         undefined(cal.undefined) if cal.undefined else num(cal.mce)])  # fmt: skip
        err = 1 - y.mean() if y.size else float("nan")
        parts.append(f"<h3>On {esc(title)} (n = {y.size}, error rate {num(err)})</h3>")
        if not cols:
            parts.append("<p>No probability-valued signal in this run.</p>")
            continue
        parts.append("<div class='grid2'>"
                     + f"<figure>{img(F.risk_coverage_plot(rc_curves, err, f'Risk-coverage, {title}'), 'risk-coverage curves')}</figure>"
                     + f"<figure>{img(F.reliability_plot(cal_curves, f'Reliability, {title} ({bins} bins)'), 'reliability diagram')}</figure>"
                     + "</div>")  # fmt: skip
        parts.append(table(["signal", "n", "AURC", "e-AURC", "ECE", "MCE"], rows,
                           num_cols=(1, 2, 3, 4, 5)))  # fmt: skip
        for name, reason in undef:
            parts.append(f"<p class='small'>{code(name)}: undefined ({esc(reason)}).</p>")
    if run.predictions is None:
        parts.append(missing("This run has no probes, so there are no probe curves.", run.command("probes")))
    return Section("selective", "Selective prediction and calibration", "".join(parts))


def finite_or_none(x) -> float | None:
    """A float for JSON, or None for NaN / missing."""
    return float(x) if finite(x) else None
