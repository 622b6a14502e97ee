"""``STUDY_DIR/summary.json``: the study's headline numbers (each with its 95% CI) and the
source paper's claims checked against them.

Keys:
    format       "vrp-study-summary-1"
    runs         per run: data, model, n, accuracy [CI], best probe (chosen on validation) and
                 its test AUROC [CI], token confidence, self-consistency and the best gold-free
                 attention summary on the same test items [CIs], emergence and peak depth
    pooled       per dataset: the best gold-free structural signal pooled across families and
                 the pooled attention ensemble, AUROC [CI]
    probe_wins   {"wins", "losses", "ties", "comparisons"} of Table 7
    claims       [{id, claim, verdict, evidence}]: verdict "reproduces", "does not reproduce",
                 "mixed" (runs disagree), "undetermined" (the CIs cannot tell) or "not measured"

Verdict rules (thresholds are constants here and stated in each evidence line):

- *near chance* means an AUROC within ``[1 - USEFUL, USEFUL]`` = [0.4, 0.6] (a signal that works
  backwards is still informative): a CI inside that band reproduces the claim, a CI entirely
  outside it contradicts it, otherwise undetermined; the signal tested is the most informative
  one (largest ``|AUROC - 0.5|``), the hardest case for the claim;
- a paired comparison "A beats B" holds on a run when the paired bootstrap CI of
  AUROC(A) - AUROC(B) lies above 0, is reversed when it lies below 0 and is a tie otherwise;
  the claim reproduces when it holds on every run, does not when it holds on none and is
  reversed on some, is undetermined when every run is a tie, and is mixed otherwise;
- depth claims use the CI of the layer: "late" means the CI's lower end is at or past the
  decoder's middle (depth >= 0.5); the MLP-dominance claim needs the share's CI above 0.5.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from vrp.runs.rundir import json_safe
from vrp.study.tables import POOLED_FEATURES

FORMAT = "vrp-study-summary-1"
USEFUL = 0.6


def _f(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _est(row, x="auroc", lo="ci_low", hi="ci_high") -> dict:
    return {"value": _f(row.get(x)), "ci_low": _f(row.get(lo)), "ci_high": _f(row.get(hi))}


def _fmt(e: dict, digits: int = 2) -> str:
    if e["value"] is None:
        return "undefined"
    if e["ci_low"] is None or e["ci_high"] is None:
        return f"{e['value']:.{digits}f}"
    return f"{e['value']:.{digits}f} [{e['ci_low']:.{digits}f}, {e['ci_high']:.{digits}f}]"


def _near_chance(e: dict) -> str:
    lo, hi = e["ci_low"], e["ci_high"]
    if lo is None or hi is None:
        return "undetermined"
    if lo >= 1 - USEFUL and hi <= USEFUL:
        return "reproduces"
    if lo > USEFUL or hi < 1 - USEFUL:
        return "does not reproduce"
    return "undetermined"


def _outcome(row) -> str:
    lo, hi = _f(row.get("ci_low")), _f(row.get("ci_high"))
    if lo is None or hi is None:
        return "undefined"
    return "holds" if lo > 0 else "reversed" if hi < 0 else "tie"


def _across(outcomes: list[str]) -> str:
    seen = [o for o in outcomes if o != "undefined"]
    if not seen:
        return "not measured"
    if all(o == "holds" for o in seen):
        return "reproduces"
    if any(o == "holds" for o in seen):
        return "mixed"
    return "does not reproduce" if any(o == "reversed" for o in seen) else "undetermined"


def _run_rows(tables: dict[str, pd.DataFrame]) -> list[dict]:
    acc, h2h, tests, form = (tables[k] for k in ("accounting", "head_to_head", "paired_tests", "margin_formation"))
    out = []
    for _, a in acc.iterrows():
        if a.get("status") == "not run" or str(a.get("status", "")).startswith("failed"):
            continue
        key = (a["data"], a["model"])
        row = {"data": key[0], "model": key[1], "n": _f(a.get("answered")),
               "accuracy": _est(a, "accuracy", "acc_ci_low", "acc_ci_high")}  # fmt: skip
        h = h2h[(h2h["data"] == key[0]) & (h2h["model"] == key[1])] if not h2h.empty else h2h
        t = tests[(tests["data"] == key[0]) & (tests["model"] == key[1])] if not tests.empty else tests
        for label, name in (("token_confidence", "token_confidence"), ("self_consistency", "self_consistency")):
            r = h[h["name"] == name] if not h.empty else h
            row[label] = _est(r.iloc[0]) if len(r) else None
        r = h[h["chosen"] == "best probe"] if not h.empty else h
        row["best_probe"] = {"name": r.iloc[0]["name"], **_est(r.iloc[0])} if len(r) else None
        r = t[t["comparison"] == "best attention summary vs chance"] if not t.empty else t
        row["best_attention"] = None  # as oriented on validation: AUROC = 0.5 + the test's difference
        if len(r) and _f(r.iloc[0].get("diff")) is not None:
            c = r.iloc[0]
            row["best_attention"] = {"name": c["a"], "value": _f(c["auroc_a"]), "ci_low": _f(c["ci_low"] + 0.5),
                                     "ci_high": _f(c["ci_high"] + 0.5)}  # fmt: skip
        row["comparisons"] = {r["comparison"]: {"outcome": _outcome(r), **_est(r, "diff"),
                                                "p_delong": _f(r.get("p_delong"))}
                              for _, r in t.iterrows() if "diff" in r}  # fmt: skip
        f = form[(form["data"] == key[0]) & (form["model"] == key[1])] if not form.empty else form
        f = f[f["lens"] == "logit"] if "lens" in f else f  # the claims read the logit lens (SPEC §4)
        if len(f):
            fr = f.iloc[0]
            L = _f(fr.get("L")) or float("nan")
            row["margin"] = {
                "L": _f(fr.get("L")),
                "emergence_layer": _est(fr, "emergence", "emergence_ci_low", "emergence_ci_high"),
                "peak_layer": _est(fr, "peak", "peak_ci_low", "peak_ci_high"),
                "emergence_depth": _f(fr.get("emergence_depth")),
                "peak_depth": _f(fr.get("peak_depth")),
                "peak_depth_ci_low": _f(_f(fr.get("peak_ci_low")) / L if _f(fr.get("peak_ci_low")) is not None else None),
                "mlp_share_at_peak": _est(fr, "mlp_share_at_peak", "mlp_share_ci_low", "mlp_share_ci_high"),
            }  # fmt: skip
        out.append(row)
    return out


def _pooled(tables: dict[str, pd.DataFrame]) -> dict:
    s = tables["structural"]
    out = {}
    if s.empty or "scope" not in s:
        return out
    for data, part in s.groupby("data", sort=False):
        pooled = part[(part["scope"] == "pooled") & part["name"].isin(POOLED_FEATURES) & part["auroc"].notna()]
        ens = part[(part["model"] == "pooled") & (part["name"] == "attn_ensemble_pooled")]
        entry = {}
        if len(pooled):
            best = pooled.loc[(pooled["auroc"] - 0.5).abs().idxmax()]  # the most informative one
            entry["best_structural"] = {"name": best["name"], **_est(best), "n": _f(best["n"])}
        if len(ens) and "auroc" in ens and pd.notna(ens.iloc[0].get("auroc")):
            entry["attention_ensemble"] = {**_est(ens.iloc[0]), "n": _f(ens.iloc[0]["n"])}
        out[data] = entry
    return out


def _claims(runs: list[dict], pooled: dict, tables: dict[str, pd.DataFrame]) -> list[dict]:
    claims = []

    def add(cid, claim, verdict, evidence):
        claims.append({"id": cid, "claim": claim, "verdict": verdict, "evidence": evidence})

    # (i) attention structure near chance, pooled across families
    ests = [(d, e["best_structural"]) for d, e in pooled.items() if "best_structural" in e]
    verdicts = [_near_chance(e) for _, e in ests]
    add("attention_near_chance",
        "Attention structure is a near-zero predictor of correctness (pooled across families).",
        (verdicts[0] if len(set(verdicts)) == 1 else "mixed") if verdicts else "not measured",
        "; ".join(f"{d}: best gold-free structural signal {e['name']} AUROC {_fmt(e)} (near chance: CI within "
                  f"[{1 - USEFUL:.1f}, {USEFUL:.1f}])" for d, e in ests) or "needs two or more families on a dataset")  # fmt: skip
    ests = [(d, e["attention_ensemble"]) for d, e in pooled.items() if "attention_ensemble" in e]
    verdicts = [_near_chance(e) for _, e in ests]
    add("attention_ensemble_near_chance",
        "A supervised non-linear ensemble over attention features stays close to chance.",
        (verdicts[0] if len(set(verdicts)) == 1 else "mixed") if verdicts else "not measured",
        "; ".join(f"{d}: pooled attention ensemble AUROC {_fmt(e)} on the pooled test split" for d, e in ests)
        or "needs two or more families on a dataset")  # fmt: skip

    def paired(cid, claim, comparison):
        rows = [(r, r["comparisons"].get(comparison)) for r in runs]
        rows = [(r, c) for r, c in rows if c is not None]
        add(cid, claim, _across([c["outcome"] for _, c in rows]),
            "; ".join(f"{r['model']} on {r['data']}: delta AUROC {_fmt(c)} ({c['outcome']})" for r, c in rows)
            or "no probes")  # fmt: skip

    paired(
        "probe_beats_confidence",
        "A hidden-state probe predicts correctness better than output confidence.",
        "best probe vs token confidence",
    )
    paired(
        "probe_beats_self_consistency",
        "A hidden-state probe predicts correctness better than self-consistency.",
        "best probe vs self-consistency",
    )
    paired(
        "self_consistency_beats_confidence",
        "Self-consistency is a stronger behavioral predictor than token confidence.",
        "self-consistency vs token confidence",
    )
    paired(
        "probe_beats_attention",
        "Hidden states predict correctness better than attention structure.",
        "best probe vs best attention summary",
    )

    margins = [(r, r["margin"]) for r in runs if r.get("margin")]
    late = []
    for _, m in margins:
        lo = m.get("peak_depth_ci_low")
        late.append("undefined" if lo is None else "holds" if lo >= 0.5 else "tie" if (m["peak_depth"] or 0) >= 0.5
                    else "reversed")  # fmt: skip
    add("margin_peaks_late", "The truth margin between right and wrong answers peaks deep in the stack.",
        _across(late),
        "; ".join(f"{r['model']} on {r['data']}: peak layer {_fmt(m['peak_layer'], 0)} of {int(m['L'] or 0)} "
                  f"(depth {m['peak_depth'] if m['peak_depth'] is None else round(m['peak_depth'], 2)})"
                  for r, m in margins) or "no margin curves")  # fmt: skip
    mlp = [_outcome({"ci_low": (m["mlp_share_at_peak"]["ci_low"] or math.nan) - 0.5,
                     "ci_high": (m["mlp_share_at_peak"]["ci_high"] or math.nan) - 0.5}) for _, m in margins]  # fmt: skip
    add("mlp_dominates_margin", "MLP writes dominate the margin's growth at its peak.", _across(mlp),
        "; ".join(f"{r['model']} on {r['data']}: MLP share {_fmt(m['mlp_share_at_peak'])}" for r, m in margins)
        or "no margin curves")  # fmt: skip

    e = tables["interventions"]
    if not e.empty and "kind" in e:
        masks = e[(e["kind"] == "patches") & ~e["control"].astype(bool)]
        controls = e[(e["kind"] == "patches") & e["control"].astype(bool)].set_index(["data", "model", "experiment"])
        outs = [_outcome({"ci_low": -r["delta_ci_high"], "ci_high": -r["delta_ci_low"]}) for _, r in masks.iterrows()]

        def control(r) -> str:
            key = (r["data"], r["model"], r["experiment"])
            if key not in controls.index:
                return ""
            c = controls.loc[[key]].iloc[0]
            return f" (random control {c['delta_pp']:+.1f} pp [{c['delta_ci_low']:+.1f}, {c['delta_ci_high']:+.1f}])"

        add("patch_masking_hurts", "Masking the most-attended image patches lowers accuracy (attention is causally "
            "used).", _across(outs),
            "; ".join(f"{r['model']} on {r['data']}: {r['condition']} {r['delta_pp']:+.1f} pp "
                      f"[{r['delta_ci_low']:+.1f}, {r['delta_ci_high']:+.1f}]{control(r)}" for _, r in masks.iterrows())
            or "not run")  # fmt: skip
    else:
        add("patch_masking_hurts", "Masking the most-attended image patches lowers accuracy (attention is causally "
            "used).", "not measured", "run `vrp study --intervene patches`")  # fmt: skip
    return claims


def build_summary(study_dir: str | Path, tables: dict[str, pd.DataFrame]) -> dict:
    """The summary.json object (module docstring)."""
    runs = _run_rows(tables)
    pooled = _pooled(tables)
    p7 = tables["probe_vs_confidence"]
    wins = {"wins": int(p7["win"].sum()) if "win" in p7 else 0, "losses": int(p7["loss"].sum()) if "loss" in p7 else 0,
            "comparisons": len(p7)}  # fmt: skip
    wins["ties"] = wins["comparisons"] - wins["wins"] - wins["losses"]
    return json_safe({"format": FORMAT, "study_dir": str(study_dir), "runs": runs, "pooled": pooled,
                      "probe_wins": wins, "claims": _claims(runs, pooled, tables)})  # fmt: skip
