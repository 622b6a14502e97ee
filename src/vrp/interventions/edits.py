"""Interventions as context managers over named sites (:mod:`vrp.models.sites`).

Each one reads or writes sites through :func:`vrp.models.sites.hooks` and restores the model
on exit, so any code that runs the model inside the ``with`` block -- ``generate``, a plain
forward, :func:`vrp.trace`, the capture engine -- sees the intervened model. Nothing here
reimplements a model.

Sites are named as everywhere in vrp: ``embed``, ``blocks.{l}.resid_post`` (block ``l``'s
output), ``blocks.{l}.attn_out`` / ``blocks.{l}.mlp_out`` (the attention / MLP sub-block's
write, before it is added to the residual stream), ``blocks.{l}.attn_z`` (the heads' outputs
entering the output projection).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from vrp.models.sites import block_site, hooks, parse


def _writes(adapter, site: str) -> str:
    """``site`` checked to be a block's resid_post, attn_out or mlp_out (canonical name)."""
    s = parse(site, adapter.n_blocks)
    if s.kind not in ("resid_post", "attn_out", "mlp_out"):
        raise ValueError(f"{site!r}: expected blocks.{{l}}.resid_post, attn_out or mlp_out")
    return s.name


@contextmanager
def ablate_units(adapter, site: str, units: Sequence[int], values: float | Sequence[float] = 0.0) -> Iterator[None]:
    """Set hidden units of a site to fixed values at every position (zero ablation by default).

    Args:
        adapter: a loaded model (:func:`vrp.load`).
        site: ``blocks.{l}.resid_post`` (block output), ``blocks.{l}.mlp_out`` or
            ``blocks.{l}.attn_out`` (sub-block write).
        units: indices into the hidden dimension.
        values: one value for all units, or one per unit (clamping, e.g. ``c * std``).
    """
    site = _writes(adapter, site)
    idx = torch.as_tensor(list(units), dtype=torch.long)
    vals = torch.as_tensor(values, dtype=torch.float32)
    if vals.ndim and vals.shape[0] != idx.shape[0]:
        raise ValueError(f"{vals.shape[0]} clamp values for {idx.shape[0]} units")

    def set_units(h: torch.Tensor) -> torch.Tensor:
        if idx.numel() and (int(idx.max()) >= h.shape[-1] or int(idx.min()) < 0):
            raise ValueError(f"unit indices must be in [0, {h.shape[-1]}), got max {int(idx.max())}")
        h = h.clone()
        h[..., idx.to(h.device)] = vals.to(h.device, h.dtype).expand(idx.shape[0])
        return h

    with hooks(adapter, {site: set_units}):
        yield


@contextmanager
def bypass(adapter, site: str) -> Iterator[None]:
    """Remove a sub-block's write: ``blocks.{l}.mlp_out`` or ``blocks.{l}.attn_out`` becomes zero,
    so block ``l``'s residual stream skips its MLP (or attention). The sub-block still runs (for
    attention, the cache is filled) and its write is replaced by zeros at the site."""
    s = parse(site, adapter.n_blocks)
    if s.kind not in ("mlp_out", "attn_out"):
        raise ValueError(f"bypass applies to blocks.{{l}}.mlp_out or blocks.{{l}}.attn_out, got {site!r}")
    with hooks(adapter, {s.name: torch.zeros_like}):
        yield


def head_dim(adapter) -> int:
    """Width of one attention head at the output projection's input (``attn_z``)."""
    o_proj = adapter.layer_module(adapter.attention_blocks()[0], "o_proj")
    return o_proj.in_features // int(adapter.text_config.num_attention_heads)


@contextmanager
def ablate_heads(adapter, layer: int, heads: Sequence[int]) -> Iterator[None]:
    """Zero attention heads ``heads`` of block ``layer`` in ``blocks.{layer}.attn_z``, before the
    output projection mixes them (so the heads write nothing to the residual stream)."""
    site = parse(block_site(layer, "attn_z"), adapter.n_blocks).name
    if parse(site, adapter.n_blocks).layer not in adapter.attention_blocks():
        raise ValueError(
            f"block {layer} has no softmax attention heads (blocks with heads: {list(adapter.attention_blocks())})"
        )
    n_heads = int(adapter.text_config.num_attention_heads)
    bad = [h for h in heads if not 0 <= h < n_heads]
    if bad:
        raise ValueError(f"heads {bad} out of range: block {layer} has {n_heads} heads")
    hd = head_dim(adapter)

    def zero_heads(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        for h in heads:
            z[..., h * hd : (h + 1) * hd] = 0
        return z

    with hooks(adapter, {site: zero_heads}):
        yield


@contextmanager
def mask_image_tokens(adapter, positions: Sequence[Sequence[int]], pools: Sequence[Sequence[int]]) -> Iterator[None]:
    """Replace image-token embeddings (site ``embed``) by the mean image-token embedding of the
    same item (prefill only): masking at the embeddings instead of in pixels.

    Args:
        positions: per batch row, the sequence positions to overwrite (padded coordinates).
        pools: per batch row, the positions whose mean is written there (all the item's image tokens).
    """

    def mask(x: torch.Tensor) -> torch.Tensor | None:
        if x.shape[1] == 1:  # a decode step: the image is in the cache already
            return None
        x = x.clone()
        for b, (pos, pool) in enumerate(zip(positions, pools, strict=True)):
            if len(pos):
                mean = x[b, torch.as_tensor(list(pool), device=x.device)].mean(0)
                x[b, torch.as_tensor(list(pos), device=x.device)] = mean
        return x

    with hooks(adapter, {"embed": mask}):
        yield


class Recorder:
    """Keeps the full-sequence values of sites during the prefill forward: ``acts[site]`` is
    ``[B, T, d]`` (detached), keyed by the canonical site name."""

    def __init__(self):
        self.acts: dict[str, torch.Tensor] = {}


@contextmanager
def record(adapter, sites: Sequence[str]) -> Iterator[Recorder]:
    """Record sites over all positions of a forward pass (the first call with more than one
    position: the prefill of a ``generate``)."""
    rec = Recorder()
    names = [parse(s, adapter.n_blocks).name for s in sites]

    def keep(name: str):
        def fn(h: torch.Tensor) -> None:
            if h.shape[1] > 1 and name not in rec.acts:
                rec.acts[name] = h.detach().clone()

        return fn

    with hooks(adapter, [(name, keep(name)) for name in names]):
        yield rec


@contextmanager
def patch(adapter, acts: dict[str, torch.Tensor], last_only: bool = False) -> Iterator[None]:
    """Replace sites in the prefill forward by recorded values (activation patching).

    ``acts`` maps site names to ``[B, T, d]`` from :func:`record` on a run with the same
    batch layout (same sequence length and padding). ``last_only``: replace the last position
    only (the decision position), leaving what the other positions computed.
    """

    def replace(name: str, value: torch.Tensor):
        def fn(h: torch.Tensor) -> torch.Tensor | None:
            if h.shape[1] == 1:
                return None
            if h.shape != value.shape:
                raise ValueError(
                    f"cannot patch {name}: recorded {tuple(value.shape)}, this run has {tuple(h.shape)} "
                    "(the corrupted input must keep the token layout)"
                )
            if last_only:
                new = h.clone()
                new[:, -1] = value[:, -1].to(h.device, h.dtype)
                return new
            return value.to(h.device, h.dtype)

        return fn

    with hooks(adapter, [(name, replace(name, value)) for name, value in acts.items()]):
        yield
