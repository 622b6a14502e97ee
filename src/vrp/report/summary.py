"""``RUN_DIR/summary.json``: the run's headline numbers for scripts.

Keys (NaN is written as ``null``; a part the run lacks is ``null`` and named in ``missing``):

    format              "vrp-summary-1"
    run_dir             the run directory as given
    report              path of the HTML page, relative to run_dir ("report/index.html")
    status              the run's status (complete | interrupted | running)
    model               {name, model_type, path, sha256} from the manifest
    data                the manifest's data provenance (format, path, split, counts, ...)
    n_items             items in the run (after --limit); n_answered, n_failed likewise
    accuracy            {"overall": {n, correct, accuracy, ci95: [lo, hi]}, "by_task": {task: same}}
                        (95% Wilson intervals)
    top_predictors      up to 5 defined non-probe rows of analysis/predictors.parquet with the highest
                        oriented AUROC: [{name, family, direction, needs, auroc, ci_low, ci_high, p, p_bh, n}]
                        (needs: "gold answer" / "gold region" for diagnostics a deployed monitor
                        cannot compute, else "")
    undefined_predictors {name: reason} of the predictor rows that are undefined
    best_probe          the probe with the highest validation AUROC (probes/summary.json), with its test
                        AUROC and 95% CI: {name, val_auroc, test_auroc, ci_low, ci_high, n_test, source}
                        and what was chosen on validation where the probe has it (residual_layer, k, C); source says whether the CI is analysis/predictors.parquet's
                        or computed here from the test predictions (2,000 stratified resamples)
    interventions       the "all"-task rows of interventions/effects.parquet: [{experiment, kind, condition,
                        layer, control, n, acc_clean, acc_intervened, delta_pp, delta_ci_low, delta_ci_high}]
    cases               {"confident_wrong": [ids], "unconfident_right": [ids], "attended_wrong": [ids],
                        "missed_right": [ids]} shown in the case studies (the last two: symbolic detachment)
    sparse_circuit      the sparse probe's chosen layer: {available, residual_layer, n_nonzero, n_units,
                        frac_nonzero, top1_share, top5_share, top10_share} (analysis/units.json)
    detachment          all tasks: {available, thresholds, n_region, n_focused, n_missed, focused_wrong,
                        missed_right, accuracy_focused, accuracy_missed}, each rate {k, n, rate, ci_low, ci_high}
                        (95% Wilson; analysis/detachment.json)
    missing             {part: command that makes it} for probes / analysis / interventions not in the run
    versions            {"run": the manifest's package versions, "report": versions used to build the report}
"""

from __future__ import annotations

import math
import platform
from importlib import metadata

import numpy as np

from vrp.report.cases import case_ids
from vrp.report.data import RunData
from vrp.report.detachment import detachment_headline
from vrp.report.sections import accuracy
from vrp.report.units import units_headline
from vrp.runs.rundir import json_safe

FORMAT = "vrp-summary-1"
N_TOP = 5


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("vrp", "numpy", "pandas", "pyarrow", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def top_predictors(run: RunData, k: int = N_TOP) -> list[dict] | None:
    t = run.predictors
    if t is None:
        return None
    d = t[(t["undefined"] == "") & (t["family"] != "probe")].sort_values("auroc", ascending=False).head(k)
    keys = ("name", "family", "direction", "needs", "auroc", "ci_low", "ci_high", "p", "p_bh", "n")
    return [{key: r[key] for key in keys} for _, r in d.iterrows()]


def best_probe(run: RunData) -> dict | None:
    """The probe chosen on validation AUROC, with its test AUROC and CI."""
    if run.probes is None:
        return None
    entries = {n: e for n, e in run.probes["probes"].items() if e.get("val_auroc") is not None}
    finite_val = {n: e for n, e in entries.items() if math.isfinite(e["val_auroc"])}
    if not finite_val:
        return None
    name = max(finite_val, key=lambda n: finite_val[n]["val_auroc"])
    e = finite_val[name]
    out = {"name": name, "val_auroc": e["val_auroc"], **{k: e[k] for k in ("residual_layer", "k", "C") if k in e}}
    t = run.predictors
    if t is not None and name in set(t["name"]):
        r = t.set_index("name").loc[name]
        out.update(test_auroc=r["auroc"], ci_low=r["ci_low"], ci_high=r["ci_high"], n_test=int(r["n"]),
                   source="analysis/predictors.parquet")  # fmt: skip
    elif run.predictions is not None and name in run.predictions:
        from vrp.stats.auroc import auroc_ci

        test = run.predictions[run.predictions["split"] == "test"]
        y = run.items.set_index("id").loc[test["id"], "correct"].to_numpy().astype(bool)
        a = auroc_ci(test[name].to_numpy(np.float64), y, n_boot=2000, n_perm=0, seed=0)
        out.update(test_auroc=a.auroc, ci_low=a.ci_low, ci_high=a.ci_high, n_test=a.n,
                   source="probes/predictions.parquet (test split), bootstrap here")  # fmt: skip
    return out


def intervention_rows(run: RunData) -> list[dict] | None:
    if run.effects is None:
        return None
    keys = ("experiment", "kind", "condition", "layer", "control", "n", "acc_clean", "acc_intervened", "delta_pp",
            "delta_ci_low", "delta_ci_high")  # fmt: skip
    e = run.effects[run.effects["task"] == "all"]
    return [{k: r[k] for k in keys} for _, r in e.iterrows()]


def build_summary(run: RunData, n_cases: int) -> dict:
    """The summary.json object of a run (see the module docstring for its keys)."""
    m = run.manifest
    counts = m.get("counts", {})
    model = m.get("model", {})
    missing = {}
    if run.probes is None:
        missing["probes"] = run.command("probes")
    if run.predictors is None:
        missing["analysis"] = run.command("analysis")
    if run.effects is None and run.patching is None:
        missing["interventions"] = run.command("interventions")
    undefined = {}
    if run.predictors is not None:
        undefined = {r["name"]: r["undefined"] for _, r in run.predictors.iterrows() if r["undefined"]}
    return json_safe({
        "format": FORMAT,
        "run_dir": str(run.run_dir),
        "report": "report/index.html",
        "status": m.get("status"),
        "model": {k: model.get(k) for k in ("name", "model_type", "path", "sha256")},
        "data": m.get("data"),
        "n_items": counts.get("items", len(run.items) + len(run.failures)),
        "n_answered": len(run.items),
        "n_failed": counts.get("failed", len(run.failures)),
        "accuracy": accuracy(run),
        "top_predictors": top_predictors(run),
        "undefined_predictors": undefined,
        "best_probe": best_probe(run),
        "interventions": intervention_rows(run),
        "cases": case_ids(run, n_cases),
        "sparse_circuit": units_headline(run),
        "detachment": detachment_headline(run),
        "missing": missing,
        "versions": {"run": m.get("versions"), "report": _versions()},
    })  # fmt: skip
