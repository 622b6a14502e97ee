"""Symbolic detachment (vrp.analysis.detachment): the selection follows its documented thresholds on a crafted
items table; the rates are Wilson intervals of the right counts; runs without gold regions say so."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from vrp.analysis.detachment import DetachmentConfig, detachment, rates, select, thresholds, write_detachment
from vrp.config import ConfigError
from vrp.stats.intervals import wilson_ci

NAN = float("nan")


def crafted() -> pd.DataFrame:
    """20 items with a region (ratios 1..20) and 2 without; the focused candidates are the top ratios."""
    ratio = [float(r) for r in range(1, 21)] + [NAN, NAN]
    hit = [0.0] * 5 + [1.0] * 15 + [NAN, NAN]
    secondary = [0.0] * 22
    secondary[18] = 2.0  # ratio 19: two extra blobs, not focused
    entropy = [1.0] * 22
    entropy[19] = 3.0  # ratio 20: diffuse, not focused
    entropy[0] = 3.0  # raises the median a little, nothing else
    correct = [True, False, True, True, True] + [True] * 12 + [False, False, False] + [False, True]
    return pd.DataFrame({"id": [f"i{k}" for k in range(22)], "task": ["a", "b"] * 11, "correct": correct,
                         "attn_region_ratio": ratio, "attn_pointing_hit": hit, "attn_secondary": secondary,
                         "attn_entropy": entropy})  # fmt: skip


def test_thresholds_are_the_runs_quantiles_over_region_items():
    df = crafted()
    t = thresholds(df, DetachmentConfig())
    ratios = np.arange(1.0, 21.0)
    assert t["focus_ratio"] == pytest.approx(np.quantile(ratios, 0.9))
    assert t["miss_ratio"] == pytest.approx(np.quantile(ratios, 0.1))
    assert t["max_entropy"] == pytest.approx(np.median(df["attn_entropy"][:20]))  # items without region ignored


def test_selection_follows_the_documented_rules():
    df = crafted()
    focused, missed, t = select(df, DetachmentConfig())
    # focus_ratio = 18.1: ratios 19 and 20 qualify by ratio, 19 has secondary blobs, 20 is diffuse
    assert t["focus_ratio"] == pytest.approx(18.1)
    assert np.flatnonzero(focused).tolist() == []
    focused, _, _ = select(df, DetachmentConfig(focus_quantile=0.8))  # 16.2: ratios 17, 18 (19, 20 excluded)
    assert np.flatnonzero(focused).tolist() == [16, 17]
    focused, _, _ = select(df, DetachmentConfig(focus_quantile=0.8, max_secondary=2))  # ratio 19 joins
    assert np.flatnonzero(focused).tolist() == [16, 17, 18]
    focused, _, _ = select(df, DetachmentConfig(focus_quantile=0.8, entropy_quantile=1.0))  # ratio 20 joins
    assert np.flatnonzero(focused).tolist() == [16, 17, 19]
    # missing: default both = argmax outside (ratios 1-5) and ratio <= 10% quantile (2.9: ratios 1, 2)
    assert np.flatnonzero(missed).tolist() == [0, 1]
    for rule, want in (("argmax", [0, 1, 2, 3, 4]), ("ratio", [0, 1]), ("either", [0, 1, 2, 3, 4])):
        assert np.flatnonzero(select(df, DetachmentConfig(miss_rule=rule))[1]).tolist() == want
    # the hit requirement: an item off-target by argmax is focused only without it
    df2 = df.copy()
    df2.loc[17, "attn_pointing_hit"] = 0.0
    assert np.flatnonzero(select(df2, DetachmentConfig(focus_quantile=0.8))[0]).tolist() == [16]
    assert np.flatnonzero(select(df2, DetachmentConfig(focus_quantile=0.8, require_hit=False))[0]).tolist() == [16, 17]
    assert not (focused[20:] | missed[20:]).any()  # no region: neither


def test_rates_are_wilson_intervals_of_the_counts():
    df = crafted()
    focused, missed, _ = select(df, DetachmentConfig(focus_quantile=0.8))
    rows = {r["task"]: r for r in rates(df, focused, missed)}
    assert list(rows) == ["all", "a", "b"]
    a = rows["all"]
    # region items: 20; wrong among them: items 1, 17, 18, 19 -> 4; focused 16 (right), 17 (wrong); missed 0, 1
    assert (a["n_region"], a["n_wrong"], a["n_right"], a["n_focused"], a["n_missed"]) == (20, 4, 16, 2, 2)
    assert (a["focused_wrong"]["k"], a["focused_wrong"]["n"]) == (1, 4)
    assert (a["missed_right"]["k"], a["missed_right"]["n"]) == (1, 16)
    assert (a["accuracy_focused"]["k"], a["accuracy_focused"]["n"]) == (1, 2)
    assert (a["accuracy_region"]["k"], a["accuracy_region"]["n"]) == (16, 20)
    lo, hi = wilson_ci(1, 4)
    assert (a["focused_wrong"]["ci_low"], a["focused_wrong"]["ci_high"]) == (lo, hi)
    assert a["focused_wrong"]["rate"] == 0.25
    # per task: item 16 is task "a", 17 task "b"
    assert rows["a"]["n_focused"] == 1 and rows["b"]["focused_wrong"]["k"] == 1
    assert rows["a"]["n_region"] + rows["b"]["n_region"] == 20


def test_config_is_validated():
    with pytest.raises(ConfigError):
        DetachmentConfig(focus_quantile=1.5)
    with pytest.raises(ConfigError):
        DetachmentConfig(miss_rule="sometimes")
    with pytest.raises(ConfigError):
        DetachmentConfig(max_secondary=-1)
    assert DetachmentConfig.from_dict({"block": -1}).block == -1


def _run_dir(tmp_path, df: pd.DataFrame, curves: dict | None = None):
    import pyarrow as pa

    from vrp.runs import storage
    from vrp.runs.rundir import write_table

    run = tmp_path / "run"
    run.mkdir(parents=True)
    write_table(run / "items.parquet", pa.Table.from_pandas(df, preserve_index=False))
    if curves is not None:
        storage.write_shard(run, 0, len(df), pa.Table.from_pandas(df[["id"]], preserve_index=False), curves, [],
                            {"stored_layers": [0, 1], "n_layers": 2})  # fmt: skip
    return run


def test_written_view_orders_the_groups_and_degrades_without_regions(tmp_path):
    df = crafted()
    run = _run_dir(tmp_path, df)
    entry = write_detachment(run, DetachmentConfig(focus_quantile=0.8))
    view = json.loads((run / "analysis" / "detachment.json").read_text())
    assert entry["available"] and view["ids"] == {"focused_wrong": ["i17"], "missed_right": ["i0"]}
    assert view["config"]["focus_quantile"] == 0.8 and view["block"] == "last"
    none = df.assign(attn_region_ratio=NAN)
    out = detachment(_run_dir(tmp_path / "b", none))
    assert not out["available"] and "gold region" in out["reason"]
    out = detachment(_run_dir(tmp_path / "c", df.drop(columns=["attn_secondary"])))
    assert not out["available"] and "attn_secondary" in out["reason"]


def test_a_block_reads_the_stored_curves(tmp_path):
    df = crafted()
    n = len(df)
    cols = ("attn_region_ratio", "attn_pointing_hit", "attn_secondary", "attn_entropy")
    # block 0 holds the items' values reversed in ratio order; block 1 (the last) the table's own
    curves = {f"curve.{c}": np.stack([df[c].to_numpy()[::-1] if c == "attn_region_ratio" else df[c].to_numpy(),
                                      df[c].to_numpy()], 1).astype(np.float32) for c in cols}  # fmt: skip
    run = _run_dir(tmp_path, df, curves)
    last = detachment(run, DetachmentConfig(focus_quantile=0.8, block=-1))
    assert last["ids"] == detachment(run, DetachmentConfig(focus_quantile=0.8))["ids"]
    first = detachment(run, DetachmentConfig(focus_quantile=0.8, block=0))
    assert first["block"] == 0 and first["ids"] != last["ids"]
    with pytest.raises(ValueError, match="outside"):
        detachment(run, DetachmentConfig(block=5))
    assert n == 22


# ---- the galleries' gold-region outlines -----------------------------------------------------------


def test_gold_regions_are_read_back_from_the_runs_data_file(tmp_path):
    from types import SimpleNamespace

    from vrp.report.cases import gold_regions

    run_dir = tmp_path / "moved"
    (run_dir / "data").mkdir(parents=True)
    recs = [{"id": "a", "regions": [{"label": "x", "box": [1, 2, 5, 6]}, {"label": "y", "box": [0, 0, 3, 3]}]},
            {"id": "b", "regions": []}, {"id": "c", "regions": [{"label": "z", "box": [7, 7, 9, 9]}]}]  # fmt: skip
    (run_dir / "data" / "items.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\nnot json\n")
    # the manifest names where the run was made; the run has moved since: the suffix under the run is used
    run = SimpleNamespace(run_dir=run_dir, manifest={"data": {"format": "shapesworld",
                                                              "path": "/elsewhere/data/items.jsonl"}})  # fmt: skip
    got, note = gold_regions(run, ["a", "b", "missing"])
    assert got == {"a": [[1.0, 2.0, 5.0, 6.0], [0.0, 0.0, 3.0, 3.0]], "b": []} and note == ""
    run.manifest = {"data": {"format": "vqav2", "path": "/x/questions.json"}}
    got, note = gold_regions(run, ["a"])
    assert got == {} and "vqav2" in note and "not a JSONL file" in note
    run.manifest = {"data": {"format": "generic", "path": "/nowhere/other.jsonl"}}
    assert "data file not found" in gold_regions(run, ["a"])[1]
    run.manifest = {}
    assert "names no data file" in gold_regions(run, ["a"])[1]


def test_case_figure_outlines_the_gold_regions():
    from io import BytesIO

    from PIL import Image

    from vrp.report.figures import case_figure

    image = np.zeros((40, 40, 3), dtype=np.uint8)
    args = (image, None, np.zeros(3), ["a", "b", "c"], "attention", "lens")

    def cyan(png: bytes) -> int:
        px = np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)
        return int(((px[..., 0] < 80) & (px[..., 1] > 180) & (px[..., 2] > 200)).sum())

    assert cyan(case_figure(*args)) == 0
    assert cyan(case_figure(*args, regions=[(5, 5, 30, 20)])) > 50  # drawn on both image panels
