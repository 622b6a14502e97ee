"""The report's section on the consistency head: S_SC predicted from the greedy pass, against the real one.

Reads ``probes/summary.json`` (the head's entry), ``probes/consistency.parquet`` (its predictions)
and ``analysis/consistency.json`` (the test-split numbers of ``vrp analyze``); never a model.
"""

from __future__ import annotations

import json

import numpy as np

from vrp.analysis.consistency import ANALYSIS, PLAIN_PROBE, SIGNAL, TARGET, consistency_arrays
from vrp.report import figures as F
from vrp.report.data import RunData, finite
from vrp.report.html import Section, code, esc, howto, img, kv_table, missing, num, table, undefined, with_ci

TITLE = "Consistency head"


def scatter_plot(predicted: np.ndarray, real: np.ndarray, correct: np.ndarray, title: str) -> bytes:
    """Predicted vs real S_SC per item, correct and wrong answers apart, with the diagonal."""
    fig = F._figure(5.2, 4.2)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.012, 0.012, size=real.shape)  # S_SC takes K + 1 values: spread the columns
    for mask, color, label in ((correct, F.CORRECT, "correct"), (~correct, F.WRONG, "wrong")):
        ax.scatter(real[mask] + jitter[mask], predicted[mask], s=14, alpha=0.7, color=color, label=label)
    ax.plot([0, 1], [0, 1], color="#888888", linewidth=0.8, linestyle="--")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    F._style(ax, title, "real S_SC (K samples)", "predicted S_SC (one greedy pass)")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return F._png(fig)


def _head_facts(entry: dict) -> str:
    return kv_table([
        ("target", f"self_consistency (S_SC over K = {entry.get('samples')} samples)"),
        ("model", entry.get("model", "")), ("chosen by", entry.get("chosen_by", "")),
        ("residual layer", entry.get("residual_layer")), ("C", entry.get("C")),
        ("train / val / test items", f"{entry.get('n_train')} / {entry.get('n_val')} / {entry.get('n_test')}"),
        ("validation MSE, R^2", f"{num(entry.get('val_mse'), '.4f')}, {num(entry.get('val_r2'))}"),
        ("test MSE, R^2", f"{num(entry.get('test_mse'), '.4f')}, {num(entry.get('test_r2'))}"),
    ])  # fmt: skip


def _stat(d: dict, key: str) -> str:
    return undefined(d["undefined"]) if d.get("undefined") else with_ci(d.get(key), d.get("ci_low"), d.get("ci_high"))


def consistency_section(run: RunData) -> Section:
    """The head's choice, its correlation with the real S_SC and its AUROC against S_SC and the dense probe."""
    guide = howto(
        "Self-consistency S_SC needs K sampled answers per item (K extra generations). The consistency head is a "
        "linear read-out of the decision-position residual, trained by vrp probe on the train split to predict "
        "S_SC (never the correctness label), its layer and C chosen on validation MSE; the monitor returns it "
        "beside p(correct) from the same greedy pass, without sampling. Here, on the held-out test items: how "
        "well it reproduces S_SC (Pearson and Spearman correlation with 95% Fisher-z CIs; R^2 below 0 means "
        "worse than predicting the mean), and how well it ranks correct above wrong answers (AUROC with 95% "
        "bootstrap CI) beside the real S_SC and the plain correctness probe (best-layer dense probe). The paired "
        "rows test the AUROC differences on the same items (paired bootstrap CI and DeLong's test); a CI that "
        "crosses 0 means this run cannot tell the two apart."
    )
    head = (run.probes or {}).get("consistency_head")
    if run.probes is None:
        return Section("consistency", TITLE, guide + missing("This run has no probes.", run.command("probes")))
    if not head:
        return Section("consistency", TITLE, guide + missing("This run's probes have no consistency head.",
                                                             run.command("probes")))  # fmt: skip
    if "skipped" in head:
        return Section(
            "consistency", TITLE, guide + f"<p class='missing'>No consistency head: {esc(head['skipped'])}</p>"
        )
    path = run.run_dir / ANALYSIS
    if not path.is_file():
        return Section("consistency", TITLE, guide + _head_facts(head)
                       + missing("This run has no consistency analysis.", run.command("analysis")))  # fmt: skip
    doc = json.loads(path.read_text())
    corr, auc, paired = doc["correlation"], doc["auroc"], doc["paired"]
    names = {SIGNAL: "consistency head (one greedy pass)", TARGET: f"real S_SC (K = {head.get('samples')} samples)",
             PLAIN_PROBE: "dense correctness probe (best layer)"}  # fmt: skip
    parts = [guide, "<div class='grid2'><div><h3>The head</h3>", _head_facts(head), "</div><div>"]
    arrays = consistency_arrays(run.run_dir)
    if arrays is not None and arrays["predicted"].size:
        png = scatter_plot(arrays["predicted"], arrays["real"], arrays["correct"].astype(bool),
                           f"Test items (n = {arrays['predicted'].size})")  # fmt: skip
        parts.append(f"<figure>{img(png, 'predicted vs real self-consistency')}</figure>")
    parts.append("</div></div>")
    parts.append(f"<h3>Agreement with the real S_SC (test split, n = {doc['n']})</h3>")
    parts.append(table(["statistic", "value [95% CI]", "p", "n"], [
        ["Pearson r", _stat(corr["pearson"], "r"), num(corr["pearson"].get("p"), ".4f"), str(corr["pearson"]["n"])],
        ["Spearman rho", _stat(corr["spearman"], "r"), num(corr["spearman"].get("p"), ".4f"),
         str(corr["spearman"]["n"])],
        ["MSE", num(doc.get("mse"), ".4f"), "", str(doc["n"])], ["R^2", num(doc.get("r2")), "", str(doc["n"])],
    ], num_cols=(1, 2, 3)))  # fmt: skip
    parts.append("<h3>AUROC for correctness (same test items)</h3>")
    parts.append(table(["signal", "AUROC [95% CI]", "p (permutation)", "n"],
                       [[f"{code(k)} <span class='what'>{esc(v)}</span>", _stat(auc[k], "auroc"),
                         num(auc[k].get("p"), ".4f"), str(auc[k]["n"])] for k, v in names.items()],
                       num_cols=(1, 2, 3)))  # fmt: skip
    rows = []
    for other in (TARGET, PLAIN_PROBE):
        r = paired[f"{SIGNAL} - {other}"]
        delong = undefined(r["delong_undefined"]) if r.get("delong_undefined") else num(r.get("p_delong"), ".4f")
        rows.append([f"head - {code(other)}", _stat(r, "diff"), num(r.get("p_bootstrap"), ".4f"), delong, str(r["n"])])
    parts.append("<h3>Paired tests</h3>")
    parts.append(table(["AUROC difference", "diff [95% CI]", "p (bootstrap)", "p (DeLong)", "n"], rows,
                       num_cols=(1, 2, 3, 4)))  # fmt: skip
    n_boot = doc.get("config", {}).get("n_boot")
    if finite(n_boot):
        parts.append(f"<p class='small'>CIs from {int(n_boot)} bootstrap resamples; the predictor table's row "
                     f"{code(SIGNAL)} is the head on these test items.</p>")  # fmt: skip
    return Section("consistency", TITLE, "".join(parts))
