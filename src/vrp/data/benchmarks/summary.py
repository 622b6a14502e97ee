"""Official benchmark numbers from a finished run's rows (``items.parquet``).

The run manifest reports binary accuracy per task; the benchmarks publish other numbers.
:func:`official_metrics` recomputes them from the stored answers:

    pope            pope_metrics (accuracy, precision, recall, F1, yes ratio) per split and all
    vqav2           overall and per answer type: 100 * mean soft score, rounded to 2 decimals
                    (as the official VQA evaluation prints it)
    textvqa         100 * mean soft score
    amber           amber_metrics (percent, "no" = positive) per dimension and all
    hallusionbench  question accuracy (percent) per category and all (offline yes/no rule)
    llava_bench     mean fallback token F1 only; the official score needs a judge
                    (vrp.data.benchmarks.llava_bench.review / aggregate)

Items that failed (no answer) are absent from the rows and so from these numbers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from vrp.data.scoring import amber_metrics, pope_label, pope_metrics, yes_no


def _meta(row: dict) -> dict:
    m = row.get("meta") or {}
    return json.loads(m) if isinstance(m, str) else m


def _by_split(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups["all"].append(r)
        split = _meta(r).get("split")
        if split is not None:
            groups[str(split)].append(r)
    return dict(sorted(groups.items()))


def _pct(rows: list[dict], digits: int) -> float:
    return round(100 * sum(float(r["score"]) for r in rows) / len(rows), digits)


def official_metrics(rows: Iterable[dict]) -> dict[str, dict]:
    """Per benchmark task present in ``rows``, its official numbers (see the module docstring).

    Args:
        rows: run rows with ``task``, ``answer``, ``gold``, ``score``, ``correct`` and ``meta``
            (a dict or its JSON string), e.g. ``pandas.read_parquet(items.parquet).to_dict("records")``.
    """
    tasks: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        tasks[r["task"]].append(r)
    out: dict[str, dict] = {}
    if rs := tasks.get("pope"):
        out["pope"] = {
            k: pope_metrics([pope_label(r["answer"]) for r in g], [yes_no(next(iter(r["gold"]))) for r in g])
            for k, g in _by_split(rs).items()
        }
    if rs := tasks.get("vqav2"):
        types: dict[str, list[dict]] = defaultdict(list)
        for r in rs:
            types[str(_meta(r).get("answer_type"))].append(r)
        out["vqav2"] = {
            "n": len(rs),
            "overall": _pct(rs, 2),
            "per_answer_type": {t: _pct(g, 2) for t, g in sorted(types.items())},
        }
    if rs := tasks.get("textvqa"):
        out["textvqa"] = {"n": len(rs), "accuracy": _pct(rs, 2)}
    if rs := tasks.get("amber"):
        out["amber"] = {
            k: amber_metrics([r["answer"] for r in g], [next(iter(r["gold"])) for r in g])
            for k, g in _by_split(rs).items()
        }
    if rs := tasks.get("hallusionbench"):
        out["hallusionbench"] = {
            k: {"n": len(g), "question_accuracy": round(100 * sum(bool(r["correct"]) for r in g) / len(g), 2)}
            for k, g in _by_split(rs).items()
        }
    if rs := tasks.get("llava_bench"):
        out["llava_bench"] = {
            "n": len(rs),
            "fallback_token_f1": round(sum(float(r["score"]) for r in rs) / len(rs), 4),
            "note": "offline fallback, NOT comparable to the judge-based LLaVA-Bench score",
        }
    return out


def official_metrics_of_run(run_dir: str | Path) -> dict[str, dict]:
    """:func:`official_metrics` of ``RUN_DIR/items.parquet``."""
    import pyarrow.parquet as pq

    return official_metrics(pq.read_table(Path(run_dir) / "items.parquet").to_pylist())
