"""The study tables: the paper's cross-family comparisons, computed from the run directories
(no model is loaded). :func:`write_tables` writes each to ``STUDY_DIR/tables/<name>.parquet``,
``.csv`` (every column) and ``.tex`` (the columns a paper shows, ``booktabs``), and the
headline numbers with the paper's claims checked to ``STUDY_DIR/summary.json``.

    structural          Table 2: structural attention signals vs correctness, per run and pooled
                        across the families of each dataset (plus an attention-feature ensemble
                        trained on the pooled split), Bonferroni and BH across the whole table
    margin_formation    Table 3: silent phase, emergence and peak layer (and depth), peak gap and
                        the MLP share at the peak, per run (vrp.study.formation) and lens (column
                        ``lens``: "logit", and "tuned" for runs with a tuned lens, `vrp lens train`)
    margin_curves       the gap curves behind it, one row per run, lens and residual layer
    head_to_head        Table 6: every signal and probe of each run on its probes' test split
    paired_tests        the paired tests the paper's claims rest on (best probe vs token
                        confidence, best probe vs self-consistency, best probe vs best attention
                        summary, best attention summary vs chance, self-consistency vs token
                        confidence): DeLong and paired bootstrap
    probe_vs_confidence Table 7: best probe beside output confidence per dataset x family, and
                        whether the probe wins (paired bootstrap CI of the difference above 0)
    transfer            the probe of dataset A on dataset B's test split, per family
    accounting          Table 8: items, answered, failed, accuracy and the split sizes per run
    interventions       the "all"-task effects of every `vrp intervene` experiment, per run
    concentration       the sparse probe's chosen layer per run: fraction of non-zero units, share of
                        |coefficient| held by the top 1 / 5 / 10 units (vrp.study.concentration)

What is chosen is chosen on validation (the best probe, the best attention summary and its
orientation); what is reported is measured on test, on the same items for both sides of a
paired test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from vrp.analysis.config import AnalyzeConfig, ProbeConfig
from vrp.analysis.predictors import PROBE_ROWS, derived_signals, signal_row
from vrp.runs import storage
from vrp.runs.rundir import atomic_write_bytes, atomic_write_json, write_table
from vrp.signals.catalog import BY_NAME, DERIVED, DERIVED_BY_NAME, SIGNALS

log = logging.getLogger("vrp.study")
RESIDUAL_PROBES = ("probe_dense", "probe_sparse", "probe_stacked", "probe_mlp")
ATTN_ENSEMBLES = ("attn_ensemble_gbt", "attn_ensemble_rf", "attn_heads_probe")
STRUCTURAL = tuple(s.name for s in SIGNALS if s.family == "structural")
# gold-free attention summaries every family has: the pooled ensemble's features
POOLED_FEATURES = tuple(s.name for s in SIGNALS if s.family == "structural" and not s.needs
                        and s.direction != "none")  # fmt: skip
TABLES = ("structural", "margin_formation", "margin_curves", "head_to_head", "paired_tests",
          "probe_vs_confidence", "transfer", "accounting", "interventions", "concentration")  # fmt: skip
ALPHA = 0.05


@dataclass
class StudyRun:
    """One (model, dataset) run of a study, as far as it got."""

    model: str
    data: str
    run_dir: Path
    manifest: dict
    items: pd.DataFrame  # items.parquet, answered items
    probes: dict | None = None  # probes/summary.json
    predictions: pd.DataFrame | None = None  # probes/predictions.parquet
    probes_skipped: str = ""
    effects: pd.DataFrame | None = None
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run_dir.name

    def side(self, which: str) -> pd.DataFrame:
        """Items of one probe split side (train / val / test) with their probe predictions."""
        if self.predictions is None:
            return self.items.iloc[:0]
        ids = self.predictions.loc[self.predictions["split"] == which, "id"]
        preds = self.predictions.set_index("id").drop(columns="split")
        return self.items.set_index("id").loc[ids].join(preds, how="left").reset_index()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_study(study_dir: str | Path) -> tuple[dict, list[StudyRun]]:
    """The resolved spec (``study.json``) and every run of it that has items."""
    study_dir = Path(study_dir)
    spec = _read_json(study_dir / "study.json")
    if spec is None:
        raise FileNotFoundError(f"{study_dir} is not a study directory (no readable study.json): run `vrp study`")
    runs = []
    for entry in spec["runs"]:
        run_dir = study_dir / entry["run_dir"]
        manifest = _read_json(run_dir / "manifest.json")
        if manifest is None or not (run_dir / "items.parquet").is_file():
            log.warning("%s: no finished run yet; left out of the tables", run_dir)
            continue
        items = pd.read_parquet(run_dir / "items.parquet")
        derived = derived_signals(run_dir, items["id"])  # lens, head-ranking ... signals made after the run
        items = pd.concat([items, derived.reset_index(drop=True)], axis=1)
        run = StudyRun(entry["model"], entry["data"], run_dir, manifest, items)
        run.probes = _read_json(run_dir / "probes" / "summary.json")
        if (run_dir / "probes" / "predictions.parquet").is_file():
            run.predictions = pd.read_parquet(run_dir / "probes" / "predictions.parquet")
        skipped = _read_json(run_dir / "probes" / "skipped.json")
        if skipped is not None:
            run.probes, run.predictions, run.probes_skipped = None, None, skipped.get("reason", "skipped")
        if (run_dir / "interventions" / "effects.parquet").is_file():
            run.effects = pd.read_parquet(run_dir / "interventions" / "effects.parquet")
        runs.append(run)
    return spec, runs


def _cfg(spec: dict) -> AnalyzeConfig:
    return AnalyzeConfig.from_dict(spec["analyze_config"])


def _y(df: pd.DataFrame) -> np.ndarray:
    return df["correct"].to_numpy().astype(np.int64)


def _score(df: pd.DataFrame, name: str) -> np.ndarray:
    return df[name].to_numpy(dtype=np.float64) if name in df else np.full(len(df), np.nan)


def _meta(name: str) -> tuple[str, str, str, str]:
    """(family, direction, doc, needs) of a signal or probe row."""
    if name in BY_NAME or name in DERIVED_BY_NAME:
        s = BY_NAME.get(name) or DERIVED_BY_NAME[name]
        return s.family, s.direction, s.doc, s.needs
    return "probe", "higher", PROBE_ROWS.get(name, name), ""


def _row(name: str, df: pd.DataFrame, cfg: AnalyzeConfig, **keys) -> dict:
    family, direction, doc, needs = _meta(name)
    return {**keys, **signal_row(name, family, direction, doc, _score(df, name), _y(df), cfg, needs)}


def _adjust(rows: list[dict], col: str = "p") -> None:
    from vrp.stats.multitest import adjust_pvalues

    p = np.array([r[col] for r in rows], dtype=np.float64)
    for method, out in (("bonferroni", f"{col}_bonferroni"), ("bh", f"{col}_bh")):
        for r, q in zip(rows, adjust_pvalues(p, method) if len(p) else [], strict=True):
            r[out] = float(q)


# ---- Table 2: structural attention vs correctness ------------------------------------------


def image_key(run: StudyRun, path: str, cache: dict) -> str:
    """The identity of an item's image across the runs of a study: the SHA-256 of its bytes
    (the same picture under different paths is one image), else its path relative to the run
    directory (each ShapesWorld run writes its own copy of the same set), else the path."""
    if path not in cache:
        p = Path(path)
        try:
            cache[path] = "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:
            try:
                cache[path] = "rel:" + p.resolve().relative_to(run.run_dir.resolve()).as_posix()
            except ValueError:
                cache[path] = "path:" + str(p)
    return cache[path]


def pooled_items(runs: list[StudyRun]) -> pd.DataFrame:
    """The answered items of several runs stacked, with ``model``, ``run`` and ``image_key``."""
    cache: dict = {}
    parts = []
    for run in runs:
        df = run.items.copy()
        df["model"], df["run"] = run.model, run.name
        df["image_key"] = [image_key(run, p, cache) for p in df["image"]]
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def pooled_split(pool: pd.DataFrame, probe_cfg: ProbeConfig):
    """Train / val / test over a pooled item set: every image's items (across families) on one
    side, stratified by family x label."""
    from vrp.probes.split import grouped_stratified_split

    strata = (pool["model"].astype(str) + "|" + pool["correct"].astype(int).astype(str)).to_numpy()
    return grouped_stratified_split(strata, pool["image_key"].to_numpy(), probe_cfg.fractions, probe_cfg.seed)


def _pooled_ensemble(pool: pd.DataFrame, data: str, cfg: AnalyzeConfig, probe_cfg: ProbeConfig) -> list[dict]:
    from vrp.probes.trees import TreeEnsembleProbe

    keys = dict(data=data, model="pooled", scope="pooled split (test)")
    try:
        split = pooled_split(pool, probe_cfg)
    except ValueError as e:
        return [{**keys, "name": "attn_ensemble_pooled", "family": "probe", "undefined": f"no pooled split: {e}"}]
    X = np.nan_to_num(pool[list(POOLED_FEATURES)].to_numpy(dtype=np.float64))
    y = _y(pool)
    model = TreeEnsembleProbe(kind="gbt", n_estimators=probe_cfg.trees, seed=probe_cfg.seed,
                              feature_names=list(POOLED_FEATURES)).fit(X[split.train], y[split.train])  # fmt: skip
    p = model.predict_proba(X)[:, 1]
    test = pool.iloc[split.test].assign(attn_ensemble_pooled=p[split.test])
    doc = "gradient-boosted trees on the gold-free attention summaries, trained on the pooled split"
    rows = [{**keys, **signal_row("attn_ensemble_pooled", "probe", "higher", doc, test["attn_ensemble_pooled"]
                                  .to_numpy(), _y(test), cfg)}]  # fmt: skip
    for m, part in test.groupby("model", sort=False):
        rows.append({**keys, "model": m, "scope": "pooled model, this family's test items",
                     **signal_row("attn_ensemble_pooled", "probe", "higher", doc,
                                  part["attn_ensemble_pooled"].to_numpy(), _y(part), cfg)})  # fmt: skip
    return rows


def structural_table(runs: list[StudyRun], cfg: AnalyzeConfig, probe_cfg: ProbeConfig) -> tuple[pd.DataFrame, dict]:
    rows: list[dict] = []
    splits: dict = {}
    for data in dict.fromkeys(r.data for r in runs):
        group = [r for r in runs if r.data == data]
        for run in group:
            rows += [_row(s, run.items, cfg, data=data, model=run.model, scope="family") for s in STRUCTURAL]
        if len(group) > 1:
            pool = pooled_items(group)
            rows += [_row(s, pool, cfg, data=data, model="pooled", scope="pooled") for s in STRUCTURAL]
            rows += _pooled_ensemble(pool, data, cfg, probe_cfg)
            try:
                split = pooled_split(pool, probe_cfg)
                splits[data] = {side: (pool["run"].iloc[idx] + "/" + pool["id"].iloc[idx]).tolist()
                                for side, idx in zip(("train", "val", "test"), (split.train, split.val, split.test),
                                                     strict=True)}  # fmt: skip
            except ValueError:
                pass
    _adjust(rows)
    return pd.DataFrame(rows), splits


# ---- Table 3: margin formation --------------------------------------------------------------


def margin_tables(runs: list[StudyRun], cfg: AnalyzeConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    from vrp.analysis.lens_run import read_margins
    from vrp.study.formation import margin_formation

    rows, curves = [], []
    for run in runs:
        keys = dict(data=run.data, model=run.model, lens="logit")
        try:
            ids, margin = storage.load_stacked(run.run_dir, "curve.margin")
        except (KeyError, FileNotFoundError, StopIteration) as e:
            rows.append({**keys, "undefined": f"no margin curves stored ({e})"})
            continue
        by_id = run.items.set_index("id")["correct"]
        contrib = []
        for key in ("curve.attn_contrib", "curve.mlp_contrib"):
            try:
                c_ids, c = storage.load_stacked(run.run_dir, key)
                contrib.append(pd.DataFrame(c, index=c_ids))
            except (KeyError, FileNotFoundError):
                contrib.append(None)
        lenses = [(keys, ids, margin)]
        tuned = read_margins(run.run_dir)  # `vrp lens train`: the same table under the tuned lens
        if tuned is not None and tuned[1] != list(range(margin.shape[1])):
            rows.append({**keys, "lens": "tuned", "undefined": "the tuned lens reads only the stored residual "
                         f"layers {tuned[1]}, not every layer"})  # fmt: skip
        elif tuned is not None:
            lenses.append(({**keys, "lens": "tuned"}, tuned[0], tuned[2]))
        for k, l_ids, m in lenses:
            y = by_id.loc[l_ids].to_numpy().astype(bool)
            c = [None if x is None else x.loc[l_ids].to_numpy() for x in contrib]
            f = margin_formation(m, y, *c, n_boot=cfg.n_boot, level=cfg.level, seed=cfg.seed)
            rows.append({**k, **{key: v for key, v in f.items() if not isinstance(v, list)}})
            for layer in range(f["L"] + 1):
                curves.append({**k, "residual_layer": layer, "depth": layer / f["L"] if f["L"] else 0.0,
                               **{key: f[key][layer] for key in ("mean_correct", "mean_wrong", "gap", "gap_ci_low",
                                                                 "gap_ci_high")}})  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(curves)


# ---- Table 6 / 7: predictors head to head, paired tests --------------------------------------


def _val_auroc(run: StudyRun, name: str) -> float:
    from vrp.stats.auroc import auroc

    val = run.side("val")
    return float(auroc(_score(val, name), _y(val))) if len(val) else float("nan")


def best_probe(run: StudyRun) -> str | None:
    """The residual probe with the highest validation AUROC (probes/summary.json)."""
    if run.probes is None:
        return None
    vals = {n: run.probes["probes"][n].get("val_auroc") for n in RESIDUAL_PROBES if n in run.probes["probes"]}
    vals = {n: v for n, v in vals.items() if v is not None and math.isfinite(v)}
    return max(vals, key=vals.get) if vals else None


def best_attention(run: StudyRun) -> tuple[str, float] | None:
    """The gold-free attention summary (structural signal or attention-feature ensemble) with the
    highest validation AUROC, and its orientation (+1 / -1): documented directions are kept;
    a signal without one is turned the way validation favours. Never a toy's supervised heads'
    summary (``attn_<feature>_sup``)."""
    best = None
    # the per-head derived signals, but not the heads a toy's recipe trained (attn_<f>_sup): their
    # attention was supervised, so a study headline must not rest on them (docs/toys.md)
    heads = [d.name for d in DERIVED if d.family == "structural" and not d.needs and d.name in run.items
             and not d.name.endswith("_sup")]  # fmt: skip
    for name in [s for s in STRUCTURAL if not BY_NAME[s].needs] + heads + list(ATTN_ENSEMBLES):
        a = _val_auroc(run, name)
        if not math.isfinite(a):
            continue
        direction = _meta(name)[1]
        sign = -1.0 if direction == "lower" else 1.0
        oriented = 1 - a if direction == "lower" else a
        if direction == "none" and a < 0.5:
            sign, oriented = -1.0, 1 - a
        if best is None or oriented > best[2]:
            best = (name, sign, oriented)
    return None if best is None else (best[0], best[1])


def head_to_head_tables(runs: list[StudyRun], cfg: AnalyzeConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    from vrp.stats.paired import auroc_vs_chance, paired_auroc_diff

    rows, tests = [], []
    for run in runs:
        names = [s.name for s in SIGNALS] + [d.name for d in DERIVED if d.name in run.items] + list(PROBE_ROWS)
        test = run.side("test")
        keys = dict(data=run.data, model=run.model)
        if not len(test):
            why = run.probes_skipped or "no probes (run `vrp probe`)"
            tests.append({**keys, "comparison": "all", "undefined": f"no test split: {why}"})
            continue
        bp, ba = best_probe(run), best_attention(run)
        for name in names:
            r = _row(name, test, cfg, **keys, split="test")
            r["chosen"] = "best probe" if name == bp else "best attention" if ba and name == ba[0] else ""
            if r["chosen"] == "best attention" and ba[1] < 0 and r["direction"] == "none":
                r["chosen"] += ", reversed"  # lower = reliable on validation; this row's AUROC is the raw one
            rows.append(r)
        y = _y(test)
        att = None if ba is None else ba[1] * _score(test, ba[0])
        pairs = [
            ("best probe vs token confidence", bp, "token_confidence", None),
            ("best probe vs self-consistency", bp, "self_consistency", None),
            ("best probe vs best attention summary", bp, ba[0] if ba else None, att),
            ("best attention summary vs chance", ba[0] if ba else None, "chance", att),
            ("self-consistency vs token confidence", "self_consistency", "token_confidence", None),
        ]
        for label, a, b, b_scores in pairs:
            base = {**keys, "comparison": label, "a": a or "", "b": b or ""}
            if a is None or b is None:
                tests.append({**base, "undefined": "no probe" if "probe" in label and a is None else
                              "no attention summary defined on validation"})  # fmt: skip
                continue
            if b == "chance":
                res = auroc_vs_chance(b_scores, y, n_boot=cfg.n_boot, level=cfg.level, seed=cfg.seed)
            else:
                sb = b_scores if b_scores is not None else _score(test, b)
                res = paired_auroc_diff(_score(test, a), sb, y, n_boot=cfg.n_boot, level=cfg.level, seed=cfg.seed)
            tests.append({**base, "auroc_a": res.auroc_a, "auroc_b": res.auroc_b, "diff": res.diff,
                          "ci_low": res.ci_low, "ci_high": res.ci_high, "p_bootstrap": res.p_bootstrap,
                          "p_delong": res.p_delong, "n": res.n, "n_pos": res.n_pos,
                          "undefined": res.undefined or "", "delong_undefined": res.delong_undefined or ""})  # fmt: skip
    defined = [t for t in tests if "p_delong" in t]
    _adjust(defined, "p_delong")
    return pd.DataFrame(rows), pd.DataFrame(tests)


def probe_vs_confidence_table(tests: pd.DataFrame) -> pd.DataFrame:
    """Table 7 from the paired tests: a win is a paired bootstrap CI of AUROC(probe) -
    AUROC(confidence) above 0, a loss one below 0."""
    if tests.empty or "comparison" not in tests:
        return pd.DataFrame()
    t = tests[tests["comparison"] == "best probe vs token confidence"].copy()
    if t.empty:
        return pd.DataFrame()
    t = t.rename(columns={"a": "probe", "auroc_a": "probe_auroc", "auroc_b": "confidence_auroc"})
    t["win"] = t["ci_low"].fillna(-1) > 0
    t["loss"] = t["ci_high"].fillna(1) < 0
    cols = ["data", "model", "probe", "probe_auroc", "confidence_auroc", "diff", "ci_low", "ci_high",
            "p_delong", "p_bootstrap", "n", "win", "loss", "undefined"]  # fmt: skip
    return t[[c for c in cols if c in t]].reset_index(drop=True)


# ---- probe transfer ---------------------------------------------------------------------------


def transfer_table(runs: list[StudyRun], cfg: AnalyzeConfig) -> pd.DataFrame:
    """Per family: the dense probe trained on dataset A (its chosen layer) scored on dataset
    B's test split. The diagonal is each probe's own test AUROC."""
    from vrp.analysis.probing import load_probe_data
    from vrp.probes.io import load_probe
    from vrp.stats.auroc import auroc_ci

    rows = []
    cache: dict = {}
    for model in dict.fromkeys(r.model for r in runs):
        group = [r for r in runs if r.model == model and r.probes is not None]
        for a in group:
            probe = load_probe(a.run_dir / "probes" / "probe_dense")
            for b in group:
                keys = dict(model=model, train_data=a.data, eval_data=b.data)
                if a.probes["residual_layers"] != b.probes["residual_layers"]:
                    rows.append({**keys, "undefined": "the runs store different residual layers"})
                    continue
                if b.name not in cache:
                    cache[b.name] = load_probe_data(b.run_dir)
                d = cache[b.name]
                pos = {i: k for k, i in enumerate(d["ids"])}
                test_ids = b.predictions.loc[b.predictions["split"] == "test", "id"]
                idx = np.array([pos[i] for i in test_ids])
                p = probe.predict_proba(d["X"][idx])[:, 1]
                res = auroc_ci(p, d["y"][idx], n_boot=cfg.n_boot, level=cfg.level, n_perm=0, seed=cfg.seed)
                rows.append({**keys, "auroc": res.auroc, "ci_low": res.ci_low, "ci_high": res.ci_high,
                             "n": res.n, "n_pos": res.n_pos, "undefined": res.undefined or ""})  # fmt: skip
    return pd.DataFrame(rows)


# ---- Table 8: accounting; interventions --------------------------------------------------------


def accounting_table(runs: list[StudyRun], spec: dict, study_dir: Path) -> pd.DataFrame:
    from vrp.stats.intervals import wilson_ci

    rows = []
    present = {r.name for r in runs}
    failed = _read_json(study_dir / "failures.json") or {}
    for entry in spec["runs"]:
        name = Path(entry["run_dir"]).name
        if name not in present:
            status = f"failed: {failed[entry['run_dir']]}" if entry["run_dir"] in failed else "not run"
            rows.append({"data": entry["data"], "model": entry["model"], "run": name, "status": status})
    for run in runs:
        counts = run.manifest.get("counts", {})
        y = _y(run.items)
        lo, hi = wilson_ci(int(y.sum()), len(y)) if len(y) else (float("nan"), float("nan"))
        row = {"data": run.data, "model": run.model, "run": run.name, "status": run.manifest.get("status", ""),
               "items": counts.get("items_loaded", counts.get("items")), "answered": counts.get("answered"),
               "failed": counts.get("failed"), "accuracy": float(y.mean()) if len(y) else float("nan"),
               "acc_ci_low": lo, "acc_ci_high": hi, "probes": run.probes_skipped or ("yes" if run.probes else "no")}  # fmt: skip
        for side in ("train", "val", "test"):
            part = run.side(side)
            row[f"n_{side}"] = len(part)
            row[f"correct_{side}"] = int(_y(part).sum()) if len(part) else 0
        rows.append(row)
    return pd.DataFrame(rows)


def interventions_table(runs: list[StudyRun]) -> pd.DataFrame:
    parts = []
    for run in runs:
        if run.effects is not None:
            e = run.effects[run.effects["task"] == "all"].copy()
            e.insert(0, "model", run.model)
            e.insert(0, "data", run.data)
            parts.append(e)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# ---- writing ------------------------------------------------------------------------------------


def compute_tables(study_dir: str | Path) -> tuple[dict[str, pd.DataFrame], dict]:
    """Every table of the study (name -> DataFrame) and the pooled splits (data -> side -> ids)."""
    from vrp.study.concentration import concentration_table

    spec, runs = load_study(study_dir)
    cfg = _cfg(spec)
    probe_cfg = ProbeConfig.from_dict(spec["probe_config"])
    structural, splits = structural_table(runs, cfg, probe_cfg)
    formation, curves = margin_tables(runs, cfg)
    h2h, tests = head_to_head_tables(runs, cfg)
    tables = {
        "structural": structural,
        "margin_formation": formation,
        "margin_curves": curves,
        "head_to_head": h2h,
        "paired_tests": tests,
        "probe_vs_confidence": probe_vs_confidence_table(tests),
        "transfer": transfer_table(runs, cfg),
        "accounting": accounting_table(runs, spec, Path(study_dir)),
        "interventions": interventions_table(runs),
        "concentration": concentration_table(runs),
    }
    return tables, splits


def write_tables(study_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Compute the tables and write ``tables/`` (Parquet, CSV, LaTeX), ``tables/pooled_split.json``
    and ``summary.json``. Returns the tables."""
    from vrp.study.latex import latex_table
    from vrp.study.summary import build_summary

    study_dir = Path(study_dir)
    tables, splits = compute_tables(study_dir)
    out = study_dir / "tables"
    out.mkdir(exist_ok=True)
    for name, df in tables.items():
        write_table(out / f"{name}.parquet", pa.Table.from_pandas(df, preserve_index=False))
        atomic_write_bytes(out / f"{name}.csv", df.to_csv(index=False).encode())
        tex = latex_table(name, df)
        if tex:
            atomic_write_bytes(out / f"{name}.tex", tex.encode())
    atomic_write_json(out / "pooled_split.json", splits)
    atomic_write_json(study_dir / "summary.json", build_summary(study_dir, tables))
    return tables
