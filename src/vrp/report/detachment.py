"""The symbolic-detachment part of the case studies: attention on the gold region yet a wrong answer, attention
off the region yet a right one (``analysis/detachment.json``, written by ``vrp analyze``; definitions and
thresholds in ``vrp.analysis.detachment``), with per-task rates and two galleries of case cards."""

from __future__ import annotations

import json
from collections.abc import Callable

from vrp.report.data import RunData
from vrp.report.html import code, esc, missing, num, table

GUIDE = (
    "<p>The paper's §5.6 argues that attention can be <em>textbook-perfect</em> on the queried object while the late "
    "layers still mis-translate what it retrieved (<em>symbolic detachment</em>), and that right answers can come "
    "with attention that misses the object. Among the items with a gold region: an item is <em>focused</em> when its "
    "region ratio is in the run's top {focus} (at least {focus_ratio}), its top-mass set is one blob (at most "
    "{max_secondary} secondary components), its spatial entropy is at most the run's {entropy} ({max_entropy} nats)"
    "{hit}; it <em>misses</em> when {miss}. Rates carry 95% Wilson intervals: attended-yet-wrong is a share of the "
    "wrong answers, missed-yet-right a share of the right ones; if attention were a trust signal, accuracy among "
    "focused items would sit far above accuracy among missed ones. Block read: {block}. Thresholds are options of "
    "<code>vrp.analysis.detachment.DetachmentConfig</code>.</p>"
)


def _pct(q: float) -> str:
    return "median" if q == 0.5 else f"{q:.0%} quantile"


def _guide(view: dict) -> str:
    c, t = view["config"], view["thresholds"]
    miss_ratio = f"its region ratio is at most the run's {_pct(c['miss_quantile'])} ({num(t['miss_ratio'], '.3g')})"
    miss = {"argmax": "its most attended patch is outside the region", "ratio": miss_ratio,
            "either": f"its most attended patch is outside the region or {miss_ratio}",
            "both": f"its most attended patch is outside the region and {miss_ratio}"}[c["miss_rule"]]  # fmt: skip
    return GUIDE.format(
        focus=f"{1 - c['focus_quantile']:.0%}", focus_ratio=num(t["focus_ratio"], ".3g"),
        max_secondary=c["max_secondary"], entropy=_pct(c["entropy_quantile"]), max_entropy=num(t["max_entropy"], ".3g"),
        hit=" and its most attended patch is inside the region" if c["require_hit"] else "", miss=miss,
        block="the last decoder block (items.parquet)" if view["block"] == "last" else f"decoder block {view['block']}",
    )  # fmt: skip


def _rate(r: dict | None) -> str:
    if not r or not r.get("n"):
        return "—"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    ci = f" <span class='ci'>[{num(lo, '.1%')}, {num(hi, '.1%')}]</span>" if lo is not None and hi is not None else ""
    return f"{r['k']} / {r['n']} = {num(r['rate'], '.1%')}{ci}"


def read_view(run: RunData) -> dict | None:
    """``analysis/detachment.json`` of the run, or None."""
    path = run.run_dir / "analysis" / "detachment.json"
    return json.loads(path.read_text()) if path.is_file() else None


def gallery_ids(view: dict | None, n_cases: int) -> dict[str, list[str]]:
    """The ids the two detachment galleries show: ``ceil(n/2)`` attended-yet-wrong, ``floor(n/2)`` missed-yet-right."""
    if not view or not view.get("available"):
        return {"focused_wrong": [], "missed_right": []}
    ids = view["ids"]
    return {
        "focused_wrong": ids["focused_wrong"][: (n_cases + 1) // 2],
        "missed_right": ids["missed_right"][: n_cases // 2],
    }


def detachment_block(run: RunData, n_cases: int, card: Callable[[dict, list[tuple[str, str]]], str],
                     overlay_block: int | None = None, n_blocks: int | None = None) -> str:  # fmt: skip
    """The rates table and the two galleries; ``card(row, extra_facts)`` renders one item's case card.

    Args:
        overlay_block: the decoder block the cards' overlays show; when it is not the block the selection read
            (``n_blocks`` resolves "last"), a note says so.
    """
    parts = ["<h3>Symbolic detachment</h3>"]
    view = read_view(run)
    if view is None:
        why = ("This run has no analysis (analysis/detachment.json)." if run.analysis is None else
               "This run's analysis predates the detachment view (no analysis/detachment.json).")  # fmt: skip
        return "".join(parts) + missing(why, run.command("analysis"))
    if not view.get("available"):
        return "".join(parts) + f"<p class='missing'>No detachment view: {esc(view.get('reason', ''))}.</p>"
    parts.append(_guide(view))
    read = n_blocks - 1 if view["block"] == "last" and n_blocks else view["block"]
    read = read + n_blocks if isinstance(read, int) and read < 0 and n_blocks else read
    if overlay_block is not None and isinstance(read, int) and overlay_block != read:
        parts.append(f"<p class='small'>The overlays below show decoder block {overlay_block} (<code>vrp report "
                     f"--layer</code>); the selection read block {read}.</p>")  # fmt: skip
    rows = [[esc(r["task"]), str(r["n_region"]), str(r["n_focused"]), str(r["n_missed"]), _rate(r["focused_wrong"]),
             _rate(r["missed_right"]), _rate(r["accuracy_focused"]), _rate(r["accuracy_missed"]),
             _rate(r["accuracy_region"])] for r in view["rows"]]  # fmt: skip
    parts.append(table(["task", "items with a region", "focused", "missed", "attended yet wrong (of wrong)",
                        "missed yet right (of right)", "accuracy, focused", "accuracy, missed", "accuracy, all"],
                       rows, num_cols=(1, 2, 3, 4, 5, 6, 7, 8)))  # fmt: skip
    shown = gallery_ids(view, n_cases)
    by_id = run.items.set_index("id", drop=False)
    titles = {"focused_wrong": "Attended yet wrong (highest region ratio first)",
              "missed_right": "Missed yet right (lowest region ratio first)"}  # fmt: skip
    for key, title in titles.items():
        total = len(view["ids"][key])
        parts.append(f"<h3>{title} <span class='small'>({len(shown[key])} of {total})</span></h3>")
        if not shown[key]:
            parts.append("<p>None in this run.</p>")
        for i in shown[key]:
            if i not in by_id.index:
                parts.append(f"<p class='small'>item {code(i)} is no longer in items.parquet</p>")
                continue
            row = by_id.loc[i]
            extra = [("region ratio", num(row.get("attn_region_ratio"), ".3g")),
                     ("argmax in region", "yes" if row.get("attn_pointing_hit") == 1 else "no"),
                     ("secondary comp.", num(row.get("attn_secondary"), ".0f")),
                     ("spatial entropy", num(row.get("attn_entropy"), ".3f"))]  # fmt: skip
            parts.append(card(row, extra))
    return "".join(parts)


def detachment_headline(run: RunData) -> dict | None:
    """summary.json's ``detachment``: the all-task counts and rates with their Wilson CIs and the thresholds (None:
    no analysis/detachment.json; ``{"available": false, "reason"}`` when the run has no gold regions)."""
    view = read_view(run)
    if view is None or not view.get("available"):
        return None if view is None else {"available": False, "reason": view.get("reason")}
    r = view["rows"][0]
    keys = ("n_region", "n_focused", "n_missed", "focused_wrong", "missed_right", "accuracy_focused", "accuracy_missed")
    return {"available": True, "thresholds": view["thresholds"], **{k: r[k] for k in keys}}
