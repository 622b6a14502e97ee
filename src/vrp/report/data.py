"""Read everything the report shows from a run directory (never a model).

``RunData`` gathers what each command left behind: ``vrp run`` (manifest, items, failures,
shards), ``vrp probe`` (``probes/``), ``vrp analyze`` (``analysis/``) and ``vrp intervene``
(``interventions/``). A part that is absent is ``None``; the sections say which command
makes it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from vrp.runs import storage

# what makes each optional part of a run directory
COMMANDS = {
    "probes": "vrp probe --run {run}",
    "analysis": "vrp analyze --run {run}",
    "interventions": "vrp intervene --run {run} --kind KIND",
}


@dataclass
class RunData:
    """The parts of one run directory; optional parts are ``None`` when absent."""

    run_dir: Path
    manifest: dict
    items: pd.DataFrame  # one row per answered item (items.parquet), index = position
    failures: list[dict]
    probes: dict | None = None  # probes/summary.json
    predictions: pd.DataFrame | None = None  # probes/predictions.parquet
    predictors: pd.DataFrame | None = None  # analysis/predictors.parquet
    layers: pd.DataFrame | None = None  # analysis/layers.parquet
    analysis: dict | None = None  # analysis/summary.json
    effects: pd.DataFrame | None = None  # interventions/effects.parquet
    patching: pd.DataFrame | None = None  # interventions/patching.parquet
    interventions: dict | None = None  # interventions/summary.json

    def command(self, part: str) -> str:
        """The command that writes ``part`` (probes, analysis, interventions) for this run."""
        return COMMANDS[part].format(run=self.run_dir)


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _parquet(path: Path) -> pd.DataFrame | None:
    return pq.read_table(path).to_pandas() if path.is_file() else None


def _predictors(path: Path) -> pd.DataFrame | None:
    """analysis/predictors.parquet; a table written before the ``needs`` column existed gets it
    from the signal catalog (probe rows and unknown names: "")."""
    from vrp.signals.catalog import BY_NAME

    t = _parquet(path)
    if t is not None and "needs" not in t:
        t["needs"] = [BY_NAME[n].needs if n in BY_NAME else "" for n in t["name"]]
    return t


def load_run(run_dir: Path) -> RunData:
    """Read a run directory; raises FileNotFoundError when it holds no finished run."""
    run_dir = Path(run_dir)
    if not (run_dir / "items.parquet").is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no items.parquet); make one with `vrp run`")
    failures = []
    fpath = run_dir / "failures.jsonl"
    if fpath.is_file():
        failures = [json.loads(line) for line in fpath.read_text().splitlines() if line.strip()]
    inter = run_dir / "interventions"
    return RunData(
        run_dir=run_dir,
        manifest=_json(run_dir / "manifest.json") or {},
        items=pq.read_table(run_dir / "items.parquet").to_pandas(),
        failures=failures,
        probes=_json(run_dir / "probes" / "summary.json"),
        predictions=_parquet(run_dir / "probes" / "predictions.parquet"),
        predictors=_predictors(run_dir / "analysis" / "predictors.parquet"),
        layers=_parquet(run_dir / "analysis" / "layers.parquet"),
        analysis=_json(run_dir / "analysis" / "summary.json"),
        effects=_parquet(inter / "effects.parquet"),
        patching=_parquet(inter / "patching.parquet"),
        interventions=_json(inter / "summary.json"),
    )


def curve(run: RunData, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A per-item curve from the shards aligned to ``run.items``: (values [n, K] float64, correct [n] bool).

    Returns None when no shard holds ``key`` (e.g. a run stored without it).
    """
    try:
        ids, values = storage.load_stacked(run.run_dir, key)
    except KeyError:
        return None
    label = dict(zip(run.items["id"], run.items["correct"].astype(bool), strict=True))
    keep = np.array([i in label for i in ids], dtype=bool)  # shards newer than items.parquet: skip the extra
    correct = np.array([label[i] for i, k in zip(ids, keep, strict=True) if k], dtype=bool)
    return values[keep].astype(np.float64), correct


def shard_meta(run: RunData) -> dict:
    """``{"n_layers", "stored_layers", "attention_layers"}`` of the run's first shard ({} when there is none)."""
    from safetensors import safe_open

    done = storage.completed(run.run_dir)
    if not done:
        return {}
    first = next(iter(done.values()))
    with safe_open(str(first.with_suffix(".safetensors")), framework="np") as f:
        return json.loads(f.metadata().get("meta", "{}"))


def item_arrays(run: RunData, ids: list[str], keys: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    """Shard arrays of a few items: id -> {key: that item's row}; only shards holding them are read.

    ``"attention"`` stands for the item's own map ``attention.<row>`` (``row``: the item's position
    in its shard's ids, whatever batches the shard was merged from): ``[S, rows, cols]`` (mean)
    or ``[S, H, rows, cols]`` (heads). Keys a shard does not hold (``--store-attention none``)
    are left out of that item's dict.
    """
    from safetensors import safe_open

    wanted = set(ids)
    out: dict[str, dict[str, np.ndarray]] = {}
    for p in storage.completed(run.run_dir).values():
        with safe_open(str(p.with_suffix(".safetensors")), framework="np") as f:
            batch_ids = json.loads(f.metadata()["ids"])
            rows = [(r, i) for r, i in enumerate(batch_ids) if i in wanted]
            if not rows:
                continue
            names = set(f.keys())
            full = {k: f.get_tensor(k) for k in keys if k != "attention" and k in names}
            for row, item_id in rows:
                got = {k: v[row] for k, v in full.items()}
                if "attention" in keys and f"attention.{row}" in names:
                    got["attention"] = f.get_tensor(f"attention.{row}")
                out[item_id] = got
    return out


def resolve_image(run: RunData, path: str) -> Path | None:
    """The image file of an item: the stored path, else the longest suffix of it found under
    the run directory (a run directory moved with its generated data); None if missing."""
    p = Path(path)
    if not p.is_absolute():
        p = run.run_dir / p
    if p.is_file():
        return p
    parts = Path(path).parts
    for k in range(1, len(parts)):
        candidate = run.run_dir.joinpath(*parts[k:])
        if candidate.is_file():
            return candidate
    return None


class TokenNames:
    """Token id -> text through the run's tokenizer file, when it is readable (no model is loaded)."""

    def __init__(self, run: RunData):
        self._tok = None
        path = Path(run.manifest.get("model", {}).get("path", "")) / "tokenizer.json"
        if path.is_file():
            try:
                from tokenizers import Tokenizer

                self._tok = Tokenizer.from_file(str(path))
            except Exception:  # an unreadable tokenizer only costs the token names
                self._tok = None

    @property
    def available(self) -> bool:
        return self._tok is not None

    def __call__(self, token_id: int) -> str:
        if self._tok is None:
            return f"#{token_id}"
        text = self._tok.decode([int(token_id)]).strip()
        return text or (self._tok.id_to_token(int(token_id)) or f"#{token_id}")


def finite(x) -> bool:
    """True for a real, finite number."""
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
