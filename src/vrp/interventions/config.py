"""Options of ``vrp intervene`` as a frozen, validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from vrp.config import Config, ConfigError
from vrp.interventions.masking import FILLS

KINDS = ("neurons", "mass", "mlp", "heads", "patches", "patching")
# The per-block site kinds of the CLI and the output tables -> the named site they stand for.
SITE_KINDS = {"residual": "resid_post", "attn": "attn_out", "mlp": "mlp_out"}
AGGREGATIONS = ("mean", "max", "first")


class InterveneConfigError(ConfigError):
    """An invalid intervention option."""


@dataclass(frozen=True)
class InterveneConfig(Config):
    """One intervention experiment on a run's items.

    Attributes:
        kind: neurons (top-k sparse-probe units vs k random units), mass (random units of the
            peak layer), mlp (MLP bypass), heads (attention-head ablation), patches (top
            attended patches vs random patches), patching (activation patching).
        name: experiment name in the output tables (default: the kind).
        layers: decoder blocks (0-based; negative counts from the end); None = the kind's default.
        k: neurons: number of probe units (and of random control units).
        site: neurons / mass: ``residual`` (block output) or ``mlp`` (MLP write).
        mode: neurons / mass: ``zero`` or ``clamp`` (to ``clamp_scale`` x the unit's std).
        clamp_scale: multiple of each unit's standard deviation (over the items' decision
            positions in the clean pass) that ``clamp`` sets the unit to.
        sizes: mass: numbers of units (>= 1) or fractions of the width (< 1); None = 500, 1000,
            2000 when the width allows, else 1/8, 1/4, 1/2 of it.
        heads: heads: which heads to ablate (each one separately); None = every head.
        frac: patches / patching: fraction of the grid's patches masked.
        map_layer: patches: decoder block whose attention map ranks the patches (-1 = last).
        aggregation: patches: the map over heads and answer tokens: mean (the run's p_l),
            max (max over heads), first (mean over heads, first answer token only).
        space: patches: ``pixel`` (region filled with a flat colour) or ``embedding``
            (image-token embeddings replaced by the item's mean image-token embedding).
        fill: pixel fill: patch-mean or image-mean.
        corruption: patching: ``top`` or ``random`` patches masked in pixels, or ``all``
            (every patch: a flat image).
        patch_sites: patching: which sites to restore (residual, attn, mlp).
        patch_positions: patching: restore the ``last`` position only (the decision position:
            shows at which layer the image's evidence has reached it) or ``all`` positions.
        seed: seed of every random control.
        n_boot: paired-bootstrap resamples of each CI.
        batch_size: items per generate call.
        limit: only the first N answered items of the run (None = all).
    """

    kind: str
    name: str | None = None
    layers: tuple[int, ...] | None = None
    k: int = 16
    site: str = "residual"
    mode: str = "zero"
    clamp_scale: float = 5.0
    sizes: tuple[float, ...] | None = None
    heads: tuple[int, ...] | None = None
    frac: float = 0.3
    map_layer: int = -1
    aggregation: str = "mean"
    space: str = "pixel"
    fill: str = "patch-mean"
    corruption: str = "top"
    patch_sites: tuple[str, ...] = ("residual", "attn", "mlp")
    patch_positions: str = "last"
    seed: int = 0
    n_boot: int = 10_000
    batch_size: int = 8
    limit: int | None = None

    error = InterveneConfigError

    def check(self) -> None:
        self.require(
            (self.kind in KINDS, f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}"),
            (self.k >= 1, f"k must be >= 1, got {self.k}"),
            (self.site in ("residual", "mlp"), f"site must be residual or mlp, got {self.site!r}"),
            (self.mode in ("zero", "clamp"), f"mode must be zero or clamp, got {self.mode!r}"),
            (0.0 <= self.frac <= 1.0, f"frac must be in [0, 1], got {self.frac}"),
            (self.aggregation in AGGREGATIONS, f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}"),
            (self.space in ("pixel", "embedding"), f"space must be pixel or embedding, got {self.space!r}"),
            (self.fill in FILLS, f"fill must be one of {FILLS}, got {self.fill!r}"),
            (self.corruption in ("top", "random", "all"), f"corruption must be top, random or all, got {self.corruption!r}"),
            (bool(self.patch_sites) and set(self.patch_sites) <= set(SITE_KINDS),
             f"patch sites must be among residual, attn, mlp, got {self.patch_sites}"),
            (self.patch_positions in ("last", "all"), f"patch positions must be last or all, got {self.patch_positions!r}"),
            (self.n_boot >= 0, f"n_boot must be >= 0, got {self.n_boot}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}"),
            (self.sizes is None or all(s > 0 for s in self.sizes), f"sizes must be > 0, got {self.sizes}"),
        )  # fmt: skip

    @staticmethod
    def site_name(kind: str, layer: int) -> str:
        """The named site of a per-block site kind (residual, attn, mlp) of block ``layer``."""
        from vrp.models.sites import block_site

        return block_site(layer, SITE_KINDS[kind])

    @property
    def experiment(self) -> str:
        return self.name or self.kind
