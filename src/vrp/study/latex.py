"""LaTeX tables in the ``booktabs`` style (``\\toprule``, ``\\midrule``, ``\\bottomrule``; no
vertical rules), ready to ``\\input`` into a paper that loads ``booktabs``.

Our own small writer rather than ``DataFrame.to_latex`` (which needs jinja2 and escapes by
heuristics): every cell is escaped, numbers are formatted by the caller, and a horizontal rule
can separate row groups (e.g. one dataset from the next).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def escape(text: object) -> str:
    """``text`` as LaTeX text: every character that LaTeX treats specially is escaped."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals; an em dash for a missing or undefined one."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "--"
    return f"{x:.{digits}f}"


def interval(x: float | None, lo: float | None, hi: float | None, digits: int = 3) -> str:
    """``x [lo, hi]``, or ``x`` alone without a CI."""
    if x is None or not math.isfinite(x):
        return "--"
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return num(x, digits)
    return f"{x:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def pvalue(p: float | None) -> str:
    """A p-value: 3 significant digits, ``< 0.001`` below a thousandth."""
    if p is None or not math.isfinite(p):
        return "--"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def booktabs(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str,
    label: str,
    align: str | None = None,
    groups: Sequence[int] = (),
    note: str = "",
) -> str:
    """A complete ``table`` environment.

    Args:
        header: column titles (plain text; escaped here).
        rows: cells as plain text (escaped here); every row as long as ``header``.
        caption: the table's caption (plain text).
        label: its ``\\label`` key.
        align: the tabular column spec (default: ``l`` for the first column, ``r`` for the rest).
        groups: row indices before which a ``\\midrule`` separates groups.
        note: a line of small text under the table (plain text).
    """
    ncol = len(header)
    for i, r in enumerate(rows):
        if len(r) != ncol:
            raise ValueError(f"row {i} has {len(r)} cells; the header has {ncol}")
    align = align or ("l" + "r" * (ncol - 1))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for i, r in enumerate(rows):
        if i in groups and i > 0:
            lines.append(r"\midrule")
        lines.append(" & ".join(escape(c) for c in r) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if note:
        lines.append(rf"\par\smallskip{{\footnotesize {escape(note)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# ---- the study's tables ---------------------------------------------------------------------------


def _get(r, key):
    v = r.get(key) if hasattr(r, "get") else None
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _ci(r, x, lo="ci_low", hi="ci_high", digits=3) -> str:
    return interval(_get(r, x), _get(r, lo), _get(r, hi), digits)


def _int(r, key) -> str:
    v = _get(r, key)
    return "--" if v is None else str(int(v))


def _group_starts(keys: list) -> list[int]:
    return [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]


def _structural(df):
    d = df[df["auroc"].notna()] if "auroc" in df else df.iloc[:0]
    rows = [[r["data"], r["model"], r["name"], _ci(r, "auroc"), _ci(r, "r", "r_ci_low", "r_ci_high"), pvalue(r["p"]),
             pvalue(r.get("p_bonferroni")), pvalue(r.get("p_bh")), str(int(r["n"]))] for _, r in d.iterrows()]  # fmt: skip
    return dict(
        header=["Dataset", "Model", "Signal", "AUROC [95% CI]", "r_pb [95% CI]", "p (perm.)", "p (Bonf.)", "p (BH)", "n"],
        rows=rows, groups=_group_starts([(r[0], r[1]) for r in rows]), align="lllrrrrrr",
        caption="Structural attention vs correctness, per family and pooled across families (AUROC oriented by "
        "each signal's documented direction; p-values adjusted across the whole table).",
        label="tab:vrp-structural",
    )  # fmt: skip


def _formation(df):
    layer = _int

    def rng(r, k):
        lo, hi = _get(r, f"{k}_ci_low"), _get(r, f"{k}_ci_high")
        return "--" if lo is None or hi is None else f"[{int(lo)}, {int(hi)}]"

    def model(r):  # the tuned lens's rows (`vrp lens train`) follow their run's logit-lens row
        return r["model"] + (" (tuned lens)" if r.get("lens") == "tuned" else "")

    rows = [[r["data"], model(r), layer(r, "L"), layer(r, "silent"), f"{layer(r, 'emergence')} {rng(r, 'emergence')}",
             num(_get(r, "emergence_depth"), 2), f"{layer(r, 'peak')} {rng(r, 'peak')}", num(_get(r, "peak_depth"), 2),
             _ci(r, "peak_gap", "peak_gap_ci_low", "peak_gap_ci_high", 2),
             _ci(r, "mlp_share_at_peak", "mlp_share_ci_low", "mlp_share_ci_high", 2)] for _, r in df.iterrows()]  # fmt: skip
    return dict(
        header=["Dataset", "Model", "L", "Silent", "Emergence [CI]", "depth", "Peak [CI]", "depth", "Peak gap",
                "MLP share at peak"],
        rows=rows, groups=_group_starts([r[0] for r in rows]), align="llrrrrrrrr",
        caption="Margin formation: layers before the correct-wrong margin gap separates for good (silent), the "
        "emergence and peak layers (residual index; depth = layer / L) and the MLP share of the peak block's write.",
        label="tab:vrp-margin-formation",
    )  # fmt: skip


_H2H = ("token_confidence", "first_step_entropy", "geo_mean_prob", "self_consistency", "answer_entropy",
        "margin_peak", "probe_dense", "probe_stacked", "probe_mlp", "attn_ensemble_gbt")  # fmt: skip


def _head_to_head(df):
    d = df[df["name"].isin(_H2H) | (df["chosen"] != "")] if "name" in df else df
    rows = [[r["data"], r["model"], r["name"] + (f" ({r['chosen']})" if r["chosen"] else ""), _ci(r, "auroc"),
             num(_get(r, "aurc")), num(_get(r, "ece")), str(int(r["n"]))] for _, r in d.iterrows()]  # fmt: skip
    return dict(
        header=["Dataset", "Model", "Predictor", "AUROC [95% CI]", "AURC", "ECE", "n"],
        rows=rows, groups=_group_starts([(r[0], r[1]) for r in rows]), align="lllrrrr",
        caption="Predictors of correctness head to head on each run's probe test split.",
        label="tab:vrp-head-to-head",
    )  # fmt: skip


def _tests(df):
    d = df[df["diff"].notna()] if "diff" in df else df.iloc[:0]
    rows = [[r["data"], r["model"], r["comparison"], f"{r['a']} vs {r['b']}", _ci(r, "diff"), pvalue(r["p_delong"]),
             pvalue(_get(r, "p_delong_bh")), pvalue(r["p_bootstrap"]), str(int(r["n"]))] for _, r in d.iterrows()]  # fmt: skip
    return dict(
        header=["Dataset", "Model", "Comparison", "Signals", "Delta AUROC [95% CI]", "p (DeLong)", "p (BH)",
                "p (boot.)", "n"],
        rows=rows, groups=_group_starts([(r[0], r[1]) for r in rows]), align="llllrrrrr",
        caption="Paired tests on the same test items: AUROC differences with paired bootstrap CIs, DeLong's test "
        "(BH-adjusted across the table) and the bootstrap p-value.",
        label="tab:vrp-paired-tests",
    )  # fmt: skip


def _probe_vs_conf(df):
    rows = [[r["data"], r["model"], r["probe"], num(_get(r, "probe_auroc")), num(_get(r, "confidence_auroc")),
             _ci(r, "diff"), pvalue(_get(r, "p_delong")), "win" if r["win"] else "loss" if r["loss"] else "tie"]
            for _, r in df.iterrows()]  # fmt: skip
    wins = int(df["win"].sum()) if "win" in df else 0
    return dict(
        header=["Dataset", "Model", "Probe", "Probe AUROC", "Confidence AUROC", "Delta [95% CI]", "p (DeLong)", ""],
        rows=rows, groups=_group_starts([r[0] for r in rows]), align="lllrrrrl",
        caption=f"Best probe vs output confidence: the probe wins {wins} of {len(rows)} comparisons (paired bootstrap "
        "CI of the difference above 0).",
        label="tab:vrp-probe-vs-confidence",
    )  # fmt: skip


def _transfer(df):
    rows = [[r["model"], r["train_data"], r["eval_data"], _ci(r, "auroc"), _int(r, "n")]
            for _, r in df.iterrows()]  # fmt: skip
    return dict(
        header=["Model", "Probe trained on", "Evaluated on", "AUROC [95% CI]", "n"],
        rows=rows, groups=_group_starts([r[0] for r in rows]), align="lllrr",
        caption="Probe transfer: the dense probe of one dataset on another dataset's test split (diagonal: its own "
        "test split).",
        label="tab:vrp-transfer",
    )  # fmt: skip


def _accounting(df):
    n = _int
    rows = [[r["data"], r["model"], n(r, "items"), n(r, "answered"), n(r, "failed"),
             _ci(r, "accuracy", "acc_ci_low", "acc_ci_high"), n(r, "n_train"), n(r, "n_val"), n(r, "n_test")]
            for _, r in df.iterrows()]  # fmt: skip
    return dict(
        header=["Dataset", "Model", "Items", "Answered", "Failed", "Accuracy [95% CI]", "Train", "Val", "Test"],
        rows=rows, groups=_group_starts([r[0] for r in rows]), align="llrrrrrrr",
        caption="Sample accounting per run (accuracy with a Wilson interval; probe splits grouped by image).",
        label="tab:vrp-accounting",
    )  # fmt: skip


def _interventions(df):
    rows = [[r["data"], r["model"], r["experiment"], r["condition"], str(int(r["n"])),
             _ci(r, "delta_pp", "delta_ci_low", "delta_ci_high", 1),
             _ci(r, "margin_delta", "margin_ci_low", "margin_ci_high", 2)] for _, r in df.iterrows()]  # fmt: skip
    return dict(
        header=["Dataset", "Model", "Experiment", "Condition", "n", "Delta accuracy, pp [95% CI]", "Delta margin"],
        rows=rows, groups=_group_starts([(r[0], r[1]) for r in rows]), align="llllrrr",
        caption="Interventions: accuracy and last-layer truth-margin change against the clean answers on the same "
        "items (paired bootstrap CIs).",
        label="tab:vrp-interventions",
    )  # fmt: skip


def _concentration(df):
    d = df[df["frac_nonzero"].notna()] if "frac_nonzero" in df else df.iloc[:0]
    rows = [[r["data"], r["model"], _int(r, "residual_layer"), num(_get(r, "depth"), 2),
             f"{_int(r, 'n_nonzero')} / {_int(r, 'n_units')}", num(_get(r, "frac_nonzero"), 3),
             *(num(_get(r, f"top{k}_share"), 2) for k in (1, 5, 10)), num(_get(r, "test_auroc"))]
            for _, r in d.iterrows()]  # fmt: skip
    return dict(
        header=["Dataset", "Model", "Layer", "depth", "Non-zero units", "Fraction", "Top-1 share", "Top-5 share",
                "Top-10 share", "Test AUROC"],
        rows=rows, groups=_group_starts([r[0] for r in rows]), align="llrrrrrrrr",
        caption="Concentration of reliability: at the sparse (L1) probe's layer (chosen on validation), the units "
        "with a non-zero weight and the share of the total |coefficient| held by the top 1, 5 and 10 units.",
        label="tab:vrp-concentration",
    )  # fmt: skip


_LAYOUTS = {"structural": _structural, "margin_formation": _formation, "head_to_head": _head_to_head,
            "paired_tests": _tests, "probe_vs_confidence": _probe_vs_conf, "transfer": _transfer,
            "accounting": _accounting, "interventions": _interventions, "concentration": _concentration}  # fmt: skip


def latex_table(name: str, df) -> str:
    """The ``booktabs`` table of one study table ("" for a table without a LaTeX layout, such as
    the per-layer margin curves, or an empty one)."""
    if name not in _LAYOUTS or df is None or df.empty:
        return ""
    layout = _LAYOUTS[name](df)
    if not layout["rows"]:
        return ""
    return booktabs(**layout)
