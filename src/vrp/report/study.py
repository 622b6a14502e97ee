"""``build_study_report``: a study directory in, ``STUDY_DIR/report/index.html`` out.

One offline, self-contained page (figures are embedded PNGs) that sets the families of a
study side by side: the paper's claims checked, structural attention per family and pooled,
margin formation on one normalized depth axis, predictors head to head with the paired tests,
probe vs confidence as a family x dataset heat map, probe transfer, interventions and the
sample accounting, each with its "how to read this", and links to every run's own report.
Reads ``study.json``, ``tables/`` and ``summary.json`` (written by ``vrp study``; computed
here when missing); no model is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from vrp.fileio import atomic_write_bytes
from vrp.report import figures as F
from vrp.report.html import Section, code, esc, howto, img, kv_table, num, page, table, undefined, with_ci
from vrp.report.units import concentration_section

VERDICT_COLORS = {"reproduces": "#1a6b2e", "does not reproduce": "#a12", "mixed": "#8a6d00",
                  "undetermined": "#5b6475", "not measured": "#5b6475"}  # fmt: skip


def _tables(study_dir: Path) -> dict[str, pd.DataFrame]:
    from vrp.study.tables import TABLES

    out = {}
    for name in TABLES:
        path = study_dir / "tables" / f"{name}.parquet"
        out[name] = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    return out


def _run_label(r) -> str:
    return f"{r['model']} · {r['data']}"


def _study_section(spec: dict, acc: pd.DataFrame, links: dict[str, str]) -> Section:
    s = spec["study"]
    pairs = [("models", ", ".join(s["models"])), ("datasets", ", ".join(s["datasets"])),
             ("samples (K)", s["samples"]), ("seed", s["seed"]), ("limit", s["limit"] or "all"),
             ("stored layers", s["store_layers"]), ("bootstrap / permutations", f"{s['n_boot']} / {s['n_perm']}"),
             ("interventions", ", ".join(s["intervene"]) or "none"), ("engine", s["engine"])]  # fmt: skip
    rows = []
    for _, r in acc.iterrows():
        link = links.get(r.get("run", ""), "")
        name = f"<a href='{esc(link)}'>{esc(r['run'])}</a>" if link else esc(r.get("run", ""))
        if r.get("status") == "not run" or str(r.get("status", "")).startswith("failed"):
            rows.append([esc(r["model"]), esc(r["data"]), name, undefined(r["status"]), "", "", "", "", "", ""])
            continue
        rows.append([esc(r["model"]), esc(r["data"]), name, str(int(r["items"])), str(int(r["answered"])),
                     str(int(r["failed"])), with_ci(r["accuracy"], r["acc_ci_low"], r["acc_ci_high"]),
                     str(int(r["n_train"])), str(int(r["n_val"])), str(int(r["n_test"]))])  # fmt: skip
    body = (
        howto("A study runs every model on every dataset; each pair is an ordinary run directory (its own report is "
              "linked). Accuracy carries a 95% Wilson interval. Train / val / test are the probes' splits (every "
              "image's questions on one side): what is chosen (a probe's layer, the best probe, the best attention "
              "summary) is chosen on val; every head-to-head number is measured on test.")
        + kv_table(pairs)
        + "<h3>Sample accounting (Table 8)</h3>"
        + table(["model", "dataset", "run (its report)", "items", "answered", "failed", "accuracy [95% CI]", "train",
                 "val", "test"], rows, num_cols=(3, 4, 5, 6, 7, 8, 9))
    )  # fmt: skip
    return Section("study", "The study", body)


def _claims_section(summary: dict) -> Section:
    rows = []
    for c in summary.get("claims", []):
        color = VERDICT_COLORS.get(c["verdict"], "#333")
        rows.append([esc(c["claim"]), f"<strong style='color:{color}'>{esc(c['verdict'])}</strong>",
                     f"<span class='small'>{esc(c['evidence'])}</span>"])  # fmt: skip
    body = howto(
        "The source paper's claims, checked against this study's numbers (summary.json holds the same). A paired "
        "claim ('A beats B') holds on a run when the paired bootstrap 95% CI of AUROC(A) − AUROC(B) lies above 0; "
        "it <em>reproduces</em> when it holds on every run, <em>does not reproduce</em> when it holds on none and is "
        "reversed on some, is <em>undetermined</em> when every run is a tie, and is <em>mixed</em> otherwise. "
        "'Near chance' means a 95% CI inside AUROC [0.4, 0.6], tested on the most informative signal. Small test "
        "splits give wide CIs: 'undetermined' is then the honest answer, not a failure."
    ) + table(["claim", "verdict", "evidence (95% CIs)"], rows)
    return Section("claims", "The paper's claims", body)


def _structural_section(t: pd.DataFrame) -> Section:
    guide = howto(
        "Table 2 of the paper: does the structure of attention over the image (entropy, fragmentation, peakiness, "
        "top-mass area, image mass) rank correct answers above wrong ones? One forest plot per family and one for "
        "the families pooled (items of every family of the dataset together). AUROC is oriented by each signal's "
        "documented direction (0.5 = chance); hollow markers have no documented direction. p-values are permutation "
        "p-values, Bonferroni and BH adjusted across the whole table. The pooled attention ensemble is a "
        "gradient-boosted model on the gold-free summaries, trained on a pooled split that keeps each image's items "
        "on one side and is stratified by family and label; it is measured on the pooled test split (and, row by "
        "row, on each family's share of it)."
    )
    if t.empty:
        return Section("structural", "Structural attention vs correctness", guide + "<p>No runs yet.</p>")
    parts = [guide]
    for data, part in t.groupby("data", sort=False):
        parts.append(f"<h3>{esc(data)}</h3><div class='grid2'>")
        for model, rows in part.groupby("model", sort=False):
            ok = rows[rows["auroc"].notna()] if "auroc" in rows else rows.iloc[:0]
            if ok.empty:
                continue
            title = "pooled across families" if model == "pooled" else str(model)
            forest = F.interval_plot(
                [F.Interval(r["name"] + (" [gold]" if r.get("needs") else "") + ("" if r["scope"] in ("family", "pooled")
                            else " (pooled split)"), r["auroc"], r["ci_low"], r["ci_high"],
                            "#8e5fb8" if r["family"] == "probe" else "#3b75af", hollow=r["direction"] == "none")
                 for _, r in ok.iterrows()],
                ref=0.5, xlabel="AUROC (oriented) with 95% CI", title=title, xlim=(0, 1),
            )  # fmt: skip
            parts.append(f"<figure>{img(forest, f'structural signals, {title}')}</figure>")
        parts.append("</div>")
        rows = []
        for _, r in part.iterrows():
            if r.get("undefined"):
                rows.append([esc(r["model"]), code(r["name"]), esc(r.get("scope", "")), undefined(r["undefined"]),
                             "", "", "", "", str(int(r["n"])) if pd.notna(r.get("n")) else ""])  # fmt: skip
                continue
            rows.append([esc(r["model"]), code(r["name"]), esc(r["scope"]), with_ci(r["auroc"], r["ci_low"], r["ci_high"]),
                         with_ci(r["r"], r["r_ci_low"], r["r_ci_high"], "+.2f"), num(r["p"], ".4f"),
                         num(r["p_bonferroni"], ".4f"), num(r["p_bh"], ".4f"), str(int(r["n"]))])  # fmt: skip
        parts.append("<details><summary>The table</summary>" + table(
            ["model", "signal", "scope", "AUROC [95% CI]", "r [95% CI]", "p", "p Bonf.", "p BH", "n"], rows,
            cls="pred", num_cols=(3, 4, 5, 6, 7, 8)) + "</details>")  # fmt: skip
    return Section("structural", "Structural attention vs correctness", "".join(parts))


def _lens_label(model: str, lens: str | None = "logit") -> str:
    """A margin-formation row's model, marked when it is read through the run's tuned lens."""
    return f"{model} (tuned lens)" if lens == "tuned" else str(model)


def _margin_section(form: pd.DataFrame, curves: pd.DataFrame) -> Section:
    guide = howto(
        "Table 3 of the paper. The logit lens reads every residual layer through the model's own final norm and "
        "unembedding; the truth margin is the gold token's logit minus the best other one. The curve is the "
        "<em>gap</em> between the mean margin of correct and of wrong items, with its 95% bootstrap band, on a "
        "depth axis normalized to the decoder (0 = embeddings, 1 = last block) so families of different depth "
        "compare. The <em>emergence layer</em> is the first layer from which the gap's CI stays above 0 to the end; "
        "the layers before it are the <em>silent phase</em>; the <em>peak layer</em> maximizes the gap (its CI: "
        "resampled argmax). The MLP share is |MLP write| / (|attention write| + |MLP write|) of the block that "
        "writes the peak residual, projected on the readout direction, averaged over items. A run with a tuned lens "
        "(<code>vrp lens train</code>) has a second row and curve, <em>(tuned lens)</em>: the same margin read "
        "through per-layer translators trained to match the model's output. All of these read the "
        "gold answer: they locate where reliability forms, they are not a deployable monitor."
    )
    if form.empty:
        return Section("margin", "Margin formation", guide + "<p>No runs yet.</p>")
    parts = [guide]
    if not curves.empty:
        figs = []
        for data, part in curves.groupby("data", sort=False):
            by = ["model", "lens"] if "lens" in part else ["model"]  # tuned-lens curves: `vrp lens train`
            series = [F.DepthCurve(_lens_label(*m), g["depth"].to_numpy(float), g["gap"].to_numpy(float),
                                   g["gap_ci_low"].to_numpy(float), g["gap_ci_high"].to_numpy(float))
                      for m, g in part.groupby(by, sort=False)]  # fmt: skip
            png = F.depth_plot(series, f"truth-margin gap, correct − wrong ({data})",
                               "depth (residual layer / decoder blocks)", "gap (logits)")  # fmt: skip
            figs.append(f"<figure>{img(png, f'margin gap curves on {data}')}</figure>")
        parts.append("<div class='grid2'>" + "".join(figs) + "</div>")

    def layer(r, k):
        v = r.get(k)
        if v is None or pd.isna(v):
            return "never" if k == "emergence" else "—"
        lo, hi = r.get(f"{k}_ci_low"), r.get(f"{k}_ci_high")
        ci = f" <span class='ci'>[{int(lo)}, {int(hi)}]</span>" if pd.notna(lo) and pd.notna(hi) else ""
        return f"{int(v)}{ci}"

    rows = []
    for _, r in form.iterrows():
        name = esc(_lens_label(r["model"], r.get("lens")))
        if r.get("undefined") and pd.isna(r.get("peak")):
            rows.append([name, esc(r["data"]), undefined(r["undefined"])] + [""] * 6)
            continue
        rows.append([name, esc(r["data"]), str(int(r["L"])), str(int(r["silent"])) if pd.notna(r["silent"])
                     else "—", layer(r, "emergence"), num(r["emergence_depth"], ".2f"), layer(r, "peak"),
                     num(r["peak_depth"], ".2f"), with_ci(r["peak_gap"], r["peak_gap_ci_low"], r["peak_gap_ci_high"], ".2f"),
                     with_ci(r["mlp_share_at_peak"], r["mlp_share_ci_low"], r["mlp_share_ci_high"], ".2f")])  # fmt: skip
    parts.append(table(["model", "dataset", "L", "silent layers", "emergence [CI]", "depth", "peak [CI]", "depth",
                        "peak gap [CI]", "MLP share at peak [CI]"], rows, num_cols=(2, 3, 4, 5, 6, 7, 8, 9)))  # fmt: skip
    return Section("margin", "Margin formation", "".join(parts))


def _h2h_section(h2h: pd.DataFrame, tests: pd.DataFrame) -> Section:
    guide = howto(
        "Table 6 of the paper: every signal and probe of each run, measured on the same held-out test items (the "
        "probes' test split), so rows compare fairly. The best probe (residual probes only) and the best attention "
        "summary (gold-free structural signals and the attention-feature ensembles, oriented the way validation "
        "favours when a signal has no documented direction) are chosen on the validation split. The paired tests "
        "compare two signals on the same items: the difference of AUROCs with a paired bootstrap 95% CI (both "
        "signals scored on each resample), DeLong's test (BH-adjusted across the table) and the bootstrap p-value. "
        "'vs chance' tests AUROC − 0.5. A best attention summary marked <em>reversed</em> has no documented "
        "direction and ranked lower values as more reliable on validation: its row shows the raw AUROC, the "
        "paired tests use it reversed."
    )
    if h2h.empty:
        return Section("head-to-head", "Predictors head to head", guide + "<p>No run has probes yet.</p>")
    parts = [guide, "<div class='grid2'>"]
    keep = ("token_confidence", "first_step_entropy", "geo_mean_prob", "self_consistency", "answer_entropy",
            "margin_peak", "probe_dense", "probe_sparse", "probe_stacked", "probe_mlp", "attn_ensemble_gbt")  # fmt: skip
    colors = {"structural": "#3b75af", "mechanistic": "#e1812c", "behavioral": "#3a923a", "probe": "#8e5fb8"}
    for (data, model), part in h2h.groupby(["data", "model"], sort=False):
        part = part[(part["name"].isin(keep) | (part["chosen"] != "")) & part["auroc"].notna()]
        forest = F.interval_plot(
            [F.Interval(r["name"] + (f" ({r['chosen']})" if r["chosen"] else "") + (" [gold]" if r["needs"] else ""),
                        r["auroc"], r["ci_low"], r["ci_high"], colors.get(r["family"], "#555"),
                        hollow=r["direction"] == "none") for _, r in part.iterrows()],
            ref=0.5, xlabel="AUROC on the test split, 95% CI", title=f"{model} · {data}", xlim=(0, 1),
        )  # fmt: skip
        parts.append(f"<figure>{img(forest, f'predictors of {model} on {data}')}</figure>")
    parts.append("</div><h3>Paired tests</h3>")
    rows = []
    for _, r in tests.iterrows():
        if r.get("undefined") and pd.isna(r.get("diff")):
            rows.append([esc(r["model"]), esc(r["data"]), esc(r["comparison"]), "", undefined(r["undefined"]), "", "",
                         "", ""])  # fmt: skip
            continue
        rows.append([esc(r["model"]), esc(r["data"]), esc(r["comparison"]), f"{code(r['a'])} vs {code(r['b'])}",
                     with_ci(r["diff"], r["ci_low"], r["ci_high"], "+.3f"), num(r["p_delong"], ".4f"),
                     num(r.get("p_delong_bh"), ".4f"), num(r["p_bootstrap"], ".4f"), str(int(r["n"]))])  # fmt: skip
    parts.append(table(["model", "dataset", "comparison", "signals", "ΔAUROC [95% CI]", "p DeLong", "p BH",
                        "p bootstrap", "n"], rows, num_cols=(4, 5, 6, 7, 8)))  # fmt: skip
    return Section("head-to-head", "Predictors head to head", "".join(parts))


def _probe_conf_section(p7: pd.DataFrame, h2h: pd.DataFrame, summary: dict) -> Section:
    guide = howto(
        "Table 7 of the paper: the best probe's test AUROC beside output confidence (the first answer token's "
        "probability) for every dataset and family, with the paired difference. The probe <em>wins</em> a "
        "comparison when the paired bootstrap 95% CI of the difference lies above 0 (loses when below, tie "
        "otherwise). The heat map shows the best probe's AUROC per family and dataset."
    )
    if p7.empty:
        return Section("probe-vs-confidence", "Probe vs confidence", guide + "<p>No run has probes yet.</p>")
    w = summary.get("probe_wins", {})
    parts = [guide, f"<p>The probe wins <strong>{w.get('wins', 0)}</strong> of {w.get('comparisons', 0)} "
                    f"comparisons, loses {w.get('losses', 0)}, ties {w.get('ties', 0)}.</p>"]  # fmt: skip
    models, datas = list(dict.fromkeys(p7["model"])), list(dict.fromkeys(p7["data"]))
    grid = np.full((len(models), len(datas)), np.nan)
    labels = [["n/a"] * len(datas) for _ in models]
    for _, r in p7.iterrows():
        i, j = models.index(r["model"]), datas.index(r["data"])
        grid[i, j] = r["probe_auroc"]
        labels[i][j] = f"{r['probe_auroc']:.2f}\n(conf. {r['confidence_auroc']:.2f})" if pd.notna(r["probe_auroc"]) \
            else "n/a"  # fmt: skip
    parts.append(img(F.heatmap(grid, models, datas, "best probe AUROC (test)", labels), "probe AUROC heat map"))
    rows = [[esc(r["model"]), esc(r["data"]), code(r["probe"]), num(r["probe_auroc"]), num(r["confidence_auroc"]),
             with_ci(r["diff"], r["ci_low"], r["ci_high"], "+.3f"), num(r["p_delong"], ".4f"),
             "win" if r["win"] else "loss" if r["loss"] else "tie"] for _, r in p7.iterrows()]  # fmt: skip
    parts.append(table(["model", "dataset", "probe", "probe AUROC", "confidence AUROC", "Δ [95% CI]", "p DeLong",
                        "outcome"], rows, num_cols=(3, 4, 5, 6)))  # fmt: skip
    return Section("probe-vs-confidence", "Probe vs confidence", "".join(parts))


def _transfer_section(t: pd.DataFrame) -> Section:
    guide = howto(
        "A monitor is trained on one distribution and meets another. Each cell is the dense probe trained on one "
        "dataset (its layer and C chosen on that dataset's validation split) scored on another dataset's test "
        "split, for the same model; the diagonal is the probe's own test AUROC. It needs the runs of a family to "
        "store the same layers. With one dataset in the study only the diagonal exists."
    )
    if t.empty:
        return Section("transfer", "Probe transfer", guide + "<p>No run has probes yet.</p>")
    parts = [guide, "<div class='grid2'>"]
    for model, part in t.groupby("model", sort=False):
        trains, evals = list(dict.fromkeys(part["train_data"])), list(dict.fromkeys(part["eval_data"]))
        grid = np.full((len(trains), len(evals)), np.nan)
        for _, r in part.iterrows():
            if pd.notna(r.get("auroc")):
                grid[trains.index(r["train_data"]), evals.index(r["eval_data"])] = r["auroc"]
        png = F.heatmap(grid, [f"trained on {d}" for d in trains], [f"on {d}" for d in evals], str(model))
        parts.append(f"<figure>{img(png, f'transfer matrix of {model}')}</figure>")
    parts.append("</div>")
    rows = [[esc(r["model"]), esc(r["train_data"]), esc(r["eval_data"]),
             with_ci(r.get("auroc"), r.get("ci_low"), r.get("ci_high")) if not r.get("undefined") else
             undefined(r["undefined"]), str(int(r["n"])) if pd.notna(r.get("n")) else ""]
            for _, r in t.iterrows()]  # fmt: skip
    parts.append(table(["model", "trained on", "evaluated on", "AUROC [95% CI]", "n"], rows, num_cols=(3, 4)))
    return Section("transfer", "Probe transfer", "".join(parts))


def _interventions_section(e: pd.DataFrame) -> Section:
    guide = howto(
        "Headlines of <code>vrp intervene</code> on each run (all tasks pooled): accuracy and last-layer truth margin "
        "under the intervention minus the clean answers on the same items, with paired bootstrap 95% CIs. Random "
        "controls (same size, seeded) say what any change of that size does. Run them with "
        "<code>vrp study --intervene KIND</code> (neurons, mass, mlp, heads, patches, patching)."
    )
    if e.empty:
        return Section("interventions", "Interventions", guide + "<p class='missing'>No interventions in this "
                       "study.</p>")  # fmt: skip
    rows = [[esc(r["model"]), esc(r["data"]), esc(r["experiment"]), esc(r["condition"]) + (" (control)" if r["control"]
             else ""), str(int(r["n"])), with_ci(r["delta_pp"], r["delta_ci_low"], r["delta_ci_high"], "+.1f"),
             with_ci(r["margin_delta"], r["margin_ci_low"], r["margin_ci_high"], "+.2f")] for _, r in e.iterrows()]  # fmt: skip
    return Section("interventions", "Interventions", guide + table(
        ["model", "dataset", "experiment", "condition", "n", "Δ accuracy, pp [95% CI]", "Δ margin [95% CI]"], rows,
        num_cols=(4, 5, 6)))  # fmt: skip


def _files_section(study_dir: Path) -> Section:
    tables = sorted(p.name for p in (study_dir / "tables").glob("*") if p.is_file())
    body = (
        howto(
            "Every table of this page is in <code>tables/</code> as Parquet and CSV (every column) and as a "
            "<code>booktabs</code> LaTeX table (the columns a paper shows; <code>\\usepackage{booktabs}</code>, then "
            "<code>\\input</code>). <code>tables/pooled_split.json</code> lists the pooled split's items; "
            "<code>summary.json</code> the headline numbers and claims; <code>study.json</code> the resolved spec."
        )
        + "<p>"
        + ", ".join(code(t) for t in tables)
        + "</p>"
    )
    return Section("files", "Files", body)


def build_study_report(study_dir: str | Path, *, run_reports: bool = True) -> Path:
    """Write ``STUDY_DIR/report/index.html`` (and each run's own report when ``run_reports``).

    Args:
        study_dir: a directory written by ``vrp study``.
        run_reports: build (or rebuild, when older than the run's analysis) the report of
            every run, so the links work.

    Returns:
        The path of ``index.html``.

    Raises:
        FileNotFoundError: ``study_dir`` holds no ``study.json``.
    """
    from vrp.study.tables import write_tables

    study_dir = Path(study_dir)
    spec_path = study_dir / "study.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{study_dir} is not a study directory (no study.json): run `vrp study` first")
    spec = json.loads(spec_path.read_text())
    if not (study_dir / "summary.json").is_file() or not (study_dir / "tables").is_dir():
        write_tables(study_dir)
    summary = json.loads((study_dir / "summary.json").read_text())
    t = _tables(study_dir)
    out = study_dir / "report"
    out.mkdir(exist_ok=True)
    links = {}
    for entry in spec["runs"]:
        run_dir = study_dir / entry["run_dir"]
        index = run_dir / "report" / "index.html"
        if run_reports and (run_dir / "items.parquet").is_file():
            analysis = run_dir / "analysis" / "summary.json"
            stale = not index.is_file() or (analysis.is_file() and analysis.stat().st_mtime > index.stat().st_mtime)
            if stale:
                from vrp.report.build import build_report

                build_report(run_dir)
        if index.is_file():
            links[run_dir.name] = os.path.relpath(index, out)
    sections = [
        _study_section(spec, t["accounting"], links),
        _claims_section(summary),
        _structural_section(t["structural"]),
        _margin_section(t["margin_formation"], t["margin_curves"]),
        _h2h_section(t["head_to_head"], t["paired_tests"]),
        _probe_conf_section(t["probe_vs_confidence"], t["head_to_head"], summary),
        _transfer_section(t["transfer"]),
        _interventions_section(t["interventions"]),
        concentration_section(t.get("concentration", pd.DataFrame())),  # vrp.report.units
        _files_section(study_dir),
    ]
    s = spec["study"]
    subtitle = (f"{study_dir} · {len(s['models'])} model(s) x {len(s['datasets'])} dataset(s) · "
                f"{sum(1 for _ in spec['runs'])} runs")  # fmt: skip
    path = out / "index.html"
    atomic_write_bytes(path, page("vrp study: where reliability lives, family by family", subtitle, sections)
                       .encode("utf-8"))  # fmt: skip
    return path
