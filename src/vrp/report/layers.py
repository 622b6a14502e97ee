"""The per-layer section: probe AUROC, truth margin, spatial entropy, Delta H_s, MLP share."""

from __future__ import annotations

import numpy as np

from vrp.report import figures as F
from vrp.report.curves import Split, curve_split, margin_split, mlp_share_split
from vrp.report.data import RunData
from vrp.report.html import Section, esc, howto, img, missing
from vrp.report.lens import TUNED_AUROC_LABEL, tuned_lens_figures
from vrp.signals.catalog import CURVE_BY_NAME

AXIS_LABEL = {"residual": "residual layer (0 = embeddings)", "block": "decoder block"}


def _curve_label(curve: str) -> str:
    """The curve's name, with what it reads besides the model (``needs`` in vrp.signals.catalog)."""
    needs = CURVE_BY_NAME[curve].needs
    return f"{curve} [{needs}]" if needs else curve


def _split_figure(s: Split, title: str, ylabel: str, hline: float | None = None) -> bytes:
    bands = [
        F.Band(f"correct (n={s.n_correct})", *s.correct, color=F.CORRECT),
        F.Band(f"wrong (n={s.n_wrong})", *s.wrong, color=F.WRONG),
    ]
    return F.band_plot(s.x, bands, title, AXIS_LABEL[s.axis], ylabel, hline=hline)


def _figure(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{img(png, alt)}<figcaption>{caption}</figcaption></figure>"


def _probe_figure(run: RunData) -> str:
    probes = run.probes
    if probes is None:
        return (
            "<figure>"
            + missing("No probes in this run, so no probe AUROC per layer.", run.command("probes"))
            + "</figure>"
        )
    x = np.asarray(probes["residual_layers"])
    bands, chosen = [], None
    for name, label, color in (("probe_dense", "dense (L2)", "#8e5fb8"), ("probe_sparse", "sparse (L1)", "#3b75af")):
        e = probes["probes"].get(name)
        if not e or "val_auroc_by_layer" not in e:
            continue
        for split, style in (("val", "--"), ("test", "-")):
            y = np.asarray(e[f"{split}_auroc_by_layer"], dtype=np.float64)
            bands.append(F.Band(f"{label}, {'validation' if split == 'val' else 'test'}", y, color=color, style=style))
        if name == "probe_dense":
            chosen = e.get("residual_layer")
    png = F.band_plot(x, bands, "Probe AUROC per layer", AXIS_LABEL["residual"], "AUROC", hline=0.5,
                      mark_x=chosen)  # fmt: skip
    cap = (f"Logistic probes on the decision-position residual of each layer (n = {probes['n']}, split "
           f"{probes.get('split_sizes')}). Dotted line: the dense probe's layer, chosen on validation "
           f"(residual layer {esc(chosen)}). A constant layer (e.g. the embedding of the same decision token "
           "for every item) has no test AUROC.")  # fmt: skip
    return _figure(png, "probe AUROC per layer", cap)


def _layer_auroc_figure(run: RunData) -> str:
    lt = run.layers
    if lt is None:
        return ""
    x = lt["residual_layer"].to_numpy()
    names = [c for c in ("margin_auroc", "attn_entropy_auroc", "attn_peakiness_auroc", "attn_region_ratio_auroc",
                         "attn_image_mass_auroc") if c in lt]  # fmt: skip
    bands = [F.Band(_curve_label(c.removesuffix("_auroc")), lt[c].to_numpy(np.float64)) for c in names]
    if "tuned_margin_auroc" in lt:  # `vrp lens train`
        bands.insert(1, F.Band(TUNED_AUROC_LABEL, lt["tuned_margin_auroc"].to_numpy(np.float64)))
    png = F.band_plot(x, bands, "AUROC per layer of single signals", AXIS_LABEL["residual"], "AUROC (oriented)",
                      hline=0.5)  # fmt: skip
    cap = ("From analysis/layers.parquet: the truth margin read at each residual layer, and each structural curve "
           "of decoder block k plotted at residual layer k + 1 (the residual that block writes). Gaps: undefined "
           "(a constant curve at that layer). [gold answer] / [gold region]: the curve reads the annotation "
           "besides the model (a diagnostic, not available to a deployed monitor).")  # fmt: skip
    return _figure(png, "per-layer AUROC of single signals", cap)


def layers_section(run: RunData, n_boot: int = 2000) -> Section:
    """Per-layer curves of correct vs wrong items, each mean with its 95% bootstrap CI band."""
    parts = [howto(
        "Where in the depth of the model does the difference between right and wrong answers appear? Shaded bands "
        "are 95% bootstrap CIs of the mean over items: where the green (correct) and red (wrong) bands separate, "
        "the layer carries information about correctness. The truth margin is the logit-lens score of the gold "
        "answer's first token minus the best other token: positive means that layer already 'prefers' the gold "
        "answer. Spatial entropy H_s measures how spread out the attention over image patches is (lower = more "
        "focused); Delta H_s is its change from the previous block. The MLP share is the fraction of the margin "
        "written at a block that comes from its MLP rather than its attention sub-block. Residual layers count "
        "from 0 = embeddings; decoder blocks from 0 (block k writes residual layer k + 1). With a tuned lens "
        "(<code>vrp lens train</code>), the margin is also read through each layer's translator, trained to match "
        "the model's own output, and its KL to that output is drawn beside the logit lens's."
    )]  # fmt: skip
    figs = [_probe_figure(run)]
    ms = margin_split(run, n_boot)
    if ms is None:
        figs.append("<figure><p class='missing'>No truth-margin curve is stored in this run's shards.</p></figure>")
    else:
        figs.append(_figure(_split_figure(ms, "Truth margin, correct vs wrong", "margin (logits)", hline=0.0),
                            "truth margin per layer", f"Mean and 95% CI from {esc(ms.source)}. Reads the gold "
                            "answer: a diagnostic, not available to a deployed monitor."))  # fmt: skip
    figs.extend(tuned_lens_figures(run, _split_figure, n_boot))
    for key, title, ylabel, hline in (
        ("curve.attn_entropy", "Spatial entropy H_s, correct vs wrong", "H_s (nats)", None),
        ("curve.attn_entropy_delta", "Delta H_s (change from previous block)", "Delta H_s (nats)", 0.0),
    ):
        s = curve_split(run, key, n_boot)
        if s is None:
            figs.append(f"<figure><p class='missing'>No {esc(key)} in this run's shards.</p></figure>")
            continue
        figs.append(_figure(_split_figure(s, title, ylabel, hline), title, f"Mean and 95% CI from {esc(s.source)}."))
    s = mlp_share_split(run, n_boot)
    if s is None:
        figs.append("<figure><p class='missing'>No sub-block contributions in this run's shards.</p></figure>")
    else:
        figs.append(_figure(
            _split_figure(s, "MLP share of the margin written per block", "|MLP| / (|attn| + |MLP|)", hline=0.5),
            "MLP share per block",
            "Each block's attention and MLP writes projected on the readout direction (gold minus rival at the "
            f"last layer, so it reads the gold answer); mean over items with 95% CI from {esc(s.source)}. The "
            "per-item column "
            "<code>mlp_share</code> of the predictor table is the MLP share of all positive growth.",
        ))  # fmt: skip
    extra = _layer_auroc_figure(run)
    if extra:
        figs.append(extra)
    elif run.layers is None:
        figs.append("<figure>" + missing("No per-layer AUROC table (analysis/layers.parquet).",
                                         run.command("analysis")) + "</figure>")  # fmt: skip
    parts.append("<div class='grid2'>" + "".join(figs) + "</div>")
    return Section("layers", "Layer by layer", "".join(parts))
