"""The report's figures: pure functions from arrays to PNG bytes (matplotlib, Agg canvas).

No pyplot and no global backend switch: each figure is a standalone
``matplotlib.figure.Figure`` rendered by the Agg canvas, so importing this module changes
nothing in the caller's matplotlib state. Inputs are plain arrays; NaN points are not drawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DPI = 100
FAMILY_COLORS = {
    "structural": "#3b75af",
    "mechanistic": "#e1812c",
    "behavioral": "#3a923a",
    "probe": "#8e5fb8",
}
CORRECT, WRONG = "#2a7f3f", "#c0392b"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # one draw: constrained layout, no tight-bbox pass
    return buf.getvalue()


def _style(ax, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.tick_params(labelsize=9)
    ax.grid(alpha=0.3, linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _legend_below(ax, n: int) -> None:
    if not ax.get_legend_handles_labels()[0]:
        return
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2 if n > 3 else 1)


@dataclass(frozen=True)
class Interval:
    """One row of an interval plot: point estimate with its CI."""

    label: str
    value: float
    lo: float
    hi: float
    color: str = "#333333"
    hollow: bool = False


def interval_plot(rows: Sequence[Interval], ref: float, xlabel: str, title: str = "", xlim=None) -> bytes:
    """Forest plot: one row per estimate (top to bottom as given), CI whiskers, a reference line."""
    n = max(1, len(rows))
    fig = _figure(7.0, 0.9 + 0.21 * n)
    ax = fig.add_subplot()
    ys = np.arange(n)[::-1]
    for y, r in zip(ys, rows, strict=False):
        ax.plot([r.lo, r.hi], [y, y], color=r.color, linewidth=1.6)
        face = "white" if r.hollow else r.color
        ax.plot([r.value], [y], "o", color=r.color, markerfacecolor=face, markersize=5.5)
    ax.axvline(ref, color="#777777", linestyle="--", linewidth=1)
    ax.set_yticks(ys[: len(rows)], [r.label for r in rows], fontsize=9)
    ax.set_ylim(-0.7, n - 0.3)
    if xlim is not None:
        ax.set_xlim(*xlim)
    _style(ax, title, xlabel)
    ax.grid(axis="y", alpha=0)
    return _png(fig)


@dataclass(frozen=True)
class Band:
    """A curve with an optional CI band (NaN bounds: no band)."""

    label: str
    mean: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    color: str | None = None
    style: str = "-"


def band_plot(
    x: Sequence[float],
    bands: Sequence[Band],
    title: str,
    xlabel: str,
    ylabel: str,
    hline: float | Sequence[float] | None = None,
    ylim=None,
    mark_x: float | None = None,
) -> bytes:
    """Curves over layers, each with its shaded CI band; dashed reference lines at ``hline`` (one or several)."""
    fig = _figure(5.6, 3.3)
    ax = fig.add_subplot()
    x = np.asarray(x, dtype=float)
    for b in bands:
        (line,) = ax.plot(x, b.mean, b.style, color=b.color, label=b.label, marker="o", markersize=3.5, linewidth=1.6)
        if b.lo is not None and b.hi is not None:
            ax.fill_between(x, b.lo, b.hi, color=line.get_color(), alpha=0.18, linewidth=0)
    for y in () if hline is None else np.atleast_1d(hline):
        ax.axhline(y, color="#777777", linestyle="--", linewidth=1)
    if mark_x is not None:
        ax.axvline(mark_x, color="#999999", linestyle=":", linewidth=1.2)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xticks(x)
    _style(ax, title, xlabel, ylabel)
    if bands:
        ax.legend(fontsize=8.5, frameon=False)
    return _png(fig)


@dataclass(frozen=True)
class Curve:
    """A named x/y curve (risk-coverage or reliability points)."""

    label: str
    x: np.ndarray
    y: np.ndarray
    color: str | None = None


def risk_coverage_plot(curves: Sequence[Curve], error_rate: float, title: str) -> bytes:
    """Risk vs coverage per signal; the dashed line is the error rate (no selection)."""
    fig = _figure(5.6, 3.5)
    ax = fig.add_subplot()
    for c in curves:
        ax.plot(c.x, c.y, color=c.color, label=c.label, linewidth=1.5)
    if np.isfinite(error_rate):
        ax.axhline(error_rate, color="#777777", linestyle="--", linewidth=1, label=f"no selection ({error_rate:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    _style(ax, title, "coverage (fraction of items kept)", "risk (error rate among kept)")
    _legend_below(ax, len(curves) + 1)
    return _png(fig)


def reliability_plot(curves: Sequence[Curve], title: str) -> bytes:
    """Reliability diagram: accuracy vs mean stated probability per non-empty bin."""
    fig = _figure(5.6, 3.5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#777777", linestyle="--", linewidth=1, label="perfect calibration")
    for c in curves:
        ok = np.isfinite(c.x) & np.isfinite(c.y)
        ax.plot(c.x[ok], c.y[ok], marker="o", markersize=3.5, color=c.color, label=c.label, linewidth=1.3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    _style(ax, title, "mean stated p(correct) in bin", "fraction correct in bin")
    _legend_below(ax, len(curves) + 1)
    return _png(fig)


def case_figure(
    image: np.ndarray | None,
    attention: np.ndarray | None,
    margin: np.ndarray | None,
    top_tokens: Sequence[str],
    attn_title: str,
    lens_title: str,
    box: tuple[float, float, float, float] | None = None,
    regions: Sequence[Sequence[float]] = (),
) -> bytes:
    """One case: the image, its attention overlay and the logit-lens truth margin per residual
    layer annotated with the lens's top token.

    Args:
        image: ``[H, W, 3]`` uint8, or None when the file is missing.
        attention: ``[rows, cols]`` map on the model's patch grid, or None when not stored.
        margin: ``[L + 1]`` truth margin per residual layer, or None.
        top_tokens: the lens's top token per residual layer (same length as ``margin``).
        box: ``(x0, y0, x1, y1)`` the pixels of the image the grid spans (a centre crop, a padded
            area); None stretches the grid over the whole image.
        regions: the item's gold regions, ``(x0, y0, x1, y1)`` pixel boxes, outlined on both image panels.
    """
    from matplotlib.patches import Rectangle

    fig = _figure(8.4, 2.6)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.7]})
    for ax, overlay in ((axes[0], False), (axes[1], True)):
        ax.set_xticks([])
        ax.set_yticks([])
        if image is None:
            ax.text(0.5, 0.5, "image file\nnot found", ha="center", va="center", fontsize=9, color="#a33")
            ax.set_title("image" if not overlay else attn_title, fontsize=9.5)
            continue
        h, w = image.shape[:2]
        ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest")
        for x0, y0, x1, y1 in regions:
            ax.add_patch(
                Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#00e5ff", linewidth=1.3, zorder=3)
            )
        if overlay:
            if attention is None:
                ax.text(w / 2, h / 2, "attention\nnot stored", ha="center", va="center", fontsize=9, color="white")
            else:
                x0, y0, x1, y1 = box if box is not None else (0, 0, w, h)
                ax.imshow(attention, extent=(x0, x1, y1, y0), cmap="inferno", alpha=0.6, interpolation="nearest")
                ax.set_xlim(0, w)
                ax.set_ylim(h, 0)
        ax.set_title(attn_title if overlay else "image", fontsize=9.5)
    ax = axes[2]
    if margin is not None and len(margin):
        x = np.arange(len(margin))
        ax.plot(x, margin, marker="o", color="#2f5d9e", markersize=4, linewidth=1.6)
        ax.axhline(0, color="#777777", linestyle="--", linewidth=1)
        for xi, yi, tok in zip(x, margin, top_tokens, strict=False):
            if np.isfinite(yi):
                ax.annotate(tok[:10], (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7.5)
        ax.set_xticks(x)
        ax.margins(y=0.25)
    else:
        ax.text(0.5, 0.5, "no lens curve stored", ha="center", va="center", fontsize=9)
    _style(ax, lens_title, "residual layer (0 = embeddings)", "gold − best other (logits)")
    ax.title.set_fontsize(9.5)
    return _png(fig)


@dataclass(frozen=True)
class Recovery:
    """Patching recovery of one site over layers, with its CI."""

    site: str
    layer: np.ndarray
    recovered: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def recovery_plot(series: Sequence[Recovery], title: str) -> bytes:
    """Fraction of the truth margin recovered by restoring each layer's site (1 = fully restored)."""
    layers = np.unique(np.concatenate([np.zeros(0, int), *(np.asarray(s.layer, dtype=int) for s in series)]))

    def on_axis(s: Recovery, values: np.ndarray) -> np.ndarray:  # NaN where a site has no row
        out = np.full(len(layers), np.nan)
        out[np.searchsorted(layers, np.asarray(s.layer, dtype=int))] = values
        return out

    bands = [Band(s.site, on_axis(s, s.recovered), on_axis(s, s.lo), on_axis(s, s.hi)) for s in series]
    return band_plot(layers, bands, title, "layer", "fraction of margin recovered", hline=(0.0, 1.0))


@dataclass(frozen=True)
class DepthCurve:
    """A curve over normalized depth (x in [0, 1]) with its CI band; each curve has its own x."""

    label: str
    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def depth_plot(curves: Sequence[DepthCurve], title: str, xlabel: str, ylabel: str, hline: float = 0.0) -> bytes:
    """Several families' curves on one normalized depth axis, each with its shaded CI band."""
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    for c in curves:
        (line,) = ax.plot(c.x, c.mean, label=c.label, marker="o", markersize=3.5, linewidth=1.6)
        ok = np.isfinite(c.lo) & np.isfinite(c.hi)
        if ok.any():
            ax.fill_between(c.x[ok], c.lo[ok], c.hi[ok], color=line.get_color(), alpha=0.18, linewidth=0)
    ax.axhline(hline, color="#777777", linestyle="--", linewidth=1)
    ax.set_xlim(-0.02, 1.02)
    _style(ax, title, xlabel, ylabel)
    if curves:
        ax.legend(fontsize=8.5, frameon=False)
    return _png(fig)


def heatmap(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, labels=None,
            vmin: float = 0.5, vmax: float = 1.0) -> bytes:  # fmt: skip
    """A rows x cols heat map with each cell's text (``labels``, default the value; NaN cells grey)."""
    v = np.asarray(values, dtype=float)
    fig = _figure(1.8 + 1.9 * len(cols), 1.0 + 0.55 * len(rows))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(v), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_facecolor("#dddddd")
    ax.set_xticks(range(len(cols)), cols, fontsize=9)
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            text = labels[i][j] if labels is not None else ("n/a" if not np.isfinite(v[i, j]) else f"{v[i, j]:.2f}")
            dark = np.isfinite(v[i, j]) and v[i, j] < (vmin + vmax) / 2
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_title(title, fontsize=11)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)


def coef_distribution_plot(abs_coef: np.ndarray, title: str, top_k: int = 10) -> bytes:
    """The sparse probe's |coefficient| per unit, sorted from largest (log scale): the heavy tail of a
    sparse circuit. Zero weights are not drawn (log scale); the top ``top_k`` units are marked."""
    w = np.sort(np.abs(np.asarray(abs_coef, dtype=float)))[::-1]
    w = w[w > 0]
    fig = _figure(5.6, 3.3)
    ax = fig.add_subplot()
    if w.size:
        rank = np.arange(1, w.size + 1)
        ax.plot(rank, w, color="#8e5fb8", linewidth=1.4, marker="o", markersize=2.5 if w.size < 200 else 0)
        k = min(top_k, w.size)
        ax.plot(rank[:k], w[:k], "o", color="#c0392b", markersize=4.5, label=f"top {k}")
        ax.set_yscale("log")
        ax.set_xscale("log" if w.size > 50 else "linear")
        ax.legend(fontsize=8.5, frameon=False)
    else:
        ax.text(0.5, 0.5, "every weight is zero", ha="center", va="center", fontsize=9, transform=ax.transAxes)
    _style(ax, title, "unit rank by |coefficient| (non-zero units only)", "|coefficient| (standardized)")
    return _png(fig)


@dataclass(frozen=True)
class UnitHist:
    """One unit's activations on the correct and on the wrong items."""

    label: str
    correct: np.ndarray
    wrong: np.ndarray


def unit_histograms(units: Sequence[UnitHist], title: str, xlabel: str) -> bytes:
    """Small multiples: per unit, the histograms of its activation on correct vs wrong items (densities,
    shared bins per unit, dashed lines at the two means)."""
    n = max(1, len(units))
    cols = min(3, n)
    rows = -(-n // cols)
    fig = _figure(2.6 * cols + 0.4, 2.1 * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, u in zip(axes, units, strict=False):
        c = np.asarray(u.correct, dtype=float)
        w = np.asarray(u.wrong, dtype=float)
        c, w = c[np.isfinite(c)], w[np.isfinite(w)]
        both = np.concatenate([c, w])
        if both.size and np.ptp(both) > 0:
            bins = np.linspace(both.min(), both.max(), 21)
            for vals, color, name in ((c, CORRECT, "correct"), (w, WRONG, "wrong")):
                if vals.size:
                    ax.hist(vals, bins=bins, density=True, alpha=0.45, color=color, label=f"{name} ({vals.size})")
                    ax.axvline(vals.mean(), color=color, linestyle="--", linewidth=1.2)
        else:
            ax.text(0.5, 0.5, "constant", ha="center", va="center", fontsize=9, transform=ax.transAxes)
        _style(ax, u.label, xlabel)
        ax.title.set_fontsize(9.5)
        ax.tick_params(labelsize=8)
        ax.set_yticks([])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(units) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return _png(fig)
