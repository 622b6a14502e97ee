"""The tuned lens in the report's layer section: its truth margin (correct vs wrong) beside the
logit lens's, and its KL to the model's output per layer against the logit lens's. Read from
``RUN_DIR/lens/tuned/`` (written by ``vrp lens train``) and ``analysis/layers.parquet``; no model."""

from __future__ import annotations

import json

import numpy as np

from vrp.analysis.lens_config import LENS_JSON, TUNED_DIR
from vrp.analysis.lens_run import read_margins
from vrp.report import figures as F
from vrp.report.curves import Split, layers_split, split_band
from vrp.report.data import RunData
from vrp.report.html import esc, img

TUNED_AUROC_LABEL = "margin, tuned lens [gold answer]"


def tuned_margin_split(run: RunData, n_boot: int = 2000) -> Split | None:
    """Tuned-lens truth margin per residual layer for correct vs wrong items (None without a tuned lens)."""
    stored = layers_split(run, "tuned_margin")
    if stored is not None:
        return stored
    got = read_margins(run.run_dir)
    if got is None:
        return None
    ids, layers, margin = got
    label = dict(zip(run.items["id"], run.items["correct"].astype(bool), strict=True))
    keep = np.array([i in label for i in ids], dtype=bool)
    correct = np.array([label[i] for i in np.asarray(ids)[keep]], dtype=bool)
    s = split_band(margin[keep], correct, "residual", f"{TUNED_DIR}/margin.parquet", n_boot)
    return Split(np.asarray(layers), s.axis, s.correct, s.wrong, s.n_correct, s.n_wrong, s.source)


def lens_doc(run: RunData) -> dict | None:
    """``lens/tuned/lens.json`` of the run, or None."""
    path = run.run_dir / TUNED_DIR / LENS_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def _figure(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{img(png, alt)}<figcaption>{caption}</figcaption></figure>"


def tuned_lens_figures(run: RunData, split_figure, n_boot: int = 2000) -> list[str]:
    """The tuned lens's margin figure (drawn by ``split_figure(split, title, ylabel, hline)``) and its
    KL figure; none without a tuned lens."""
    out = []
    ms = tuned_margin_split(run, n_boot)
    if ms is not None:
        png = split_figure(ms, "Truth margin under the tuned lens, correct vs wrong", "margin (logits)", 0.0)
        cap = (
            "The same margin read through each layer's tuned-lens translator (mean and 95% CI from "
            f"{esc(ms.source)}); its last layer is the logit lens's. The translators were fitted on the train "
            "split's items, toward the model's own output (not the label). Reads the gold answer: a diagnostic."
        )
        out.append(_figure(png, "tuned-lens truth margin per layer", cap))
    doc = lens_doc(run)
    if doc is not None:
        x = np.asarray(doc["residual_layers"])
        bands = [
            F.Band(f"{name}, {'validation' if split == 'val' else 'test'}",
                   np.asarray(doc["kl"][lens][split], dtype=np.float64), color=color, style=style)
            for lens, name, color in (("logit", "logit lens", "#777777"), ("tuned", "tuned lens", "#3b75af"))
            for split, style in (("val", "--"), ("test", "-"))
        ]  # fmt: skip
        png = F.band_plot(x, bands, "KL(model output || lens) per layer", "residual layer (0 = embeddings)",
                          "KL (nats)")  # fmt: skip
        sizes = doc["split"]["sizes"]
        cap = (
            "Mean KL divergence from the model's next-token distribution at the decision position to each lens's "
            f"reading of each layer, on the validation ({sizes['val']}) and held-out test ({sizes['test']}) "
            f"items; translators fitted on {sizes['train']} train items ({esc(doc['split']['source'])}). Lower: "
            "the layer's reading is closer to what the model finally says. At the last layer both are 0."
        )
        out.append(_figure(png, "tuned vs logit lens KL per layer", cap))
    return out
