"""Interventions as context managers over an adapter's module map.

Each one registers forward hooks on the HF modules that the family's adapter names (decoder
blocks, their attention and MLP sub-blocks, the attention output projection) and removes them
on exit, so any code that runs the model inside the ``with`` block -- ``generate``, a plain
forward, the capture engine -- sees the intervened model. Nothing here reimplements a model.

Sites: ``"residual"`` is the output of decoder block ``layer`` (the residual stream after it);
``"mlp"`` / ``"attn"`` are the writes of that block's MLP / attention sub-block (their
outputs, before they are added to the residual stream).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch

SITES = ("residual", "attn", "mlp")


def _site_module(adapter, layer: int, site: str):
    layers = adapter.decoder_layers()
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} is out of range: the model has {len(layers)} decoder blocks (0-based)")
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    return layers[layer] if site == "residual" else adapter.layer_module(layer, site)


def _main(out):
    """The hidden-states tensor of a module output (a tensor, or a tuple led by one)."""
    return out if torch.is_tensor(out) else out[0]


def _replace(out, new: torch.Tensor):
    if torch.is_tensor(out):
        return new
    return (new, *out[1:])


@contextmanager
def _hooked(module, hook) -> Iterator[None]:
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _input_edited(module, name: str, edit) -> Iterator[None]:
    """A forward pre-hook that replaces the module's first input (positional, or keyword
    ``name``) by ``edit(x)``; ``edit`` returning None leaves the call unchanged."""

    def pre(mod, args, kwargs):
        new = edit(args[0] if args else kwargs[name])
        if new is None:
            return None
        return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, name: new})

    handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def ablate_units(
    adapter, layer: int, units: Sequence[int], site: str = "residual", values: float | Sequence[float] = 0.0
) -> Iterator[None]:
    """Set hidden units of a site to fixed values at every position (zero ablation by default).

    Args:
        adapter: a loaded :class:`vrp.models.ModelAdapter`.
        layer: decoder block (0-based).
        units: indices into the hidden dimension.
        site: ``"residual"`` (block output), ``"mlp"`` or ``"attn"`` (sub-block write).
        values: one value for all units, or one per unit (clamping, e.g. ``c * std``).
    """
    module = _site_module(adapter, layer, site)
    idx = torch.as_tensor(list(units), dtype=torch.long)
    vals = torch.as_tensor(values, dtype=torch.float32)
    if vals.ndim and vals.shape[0] != idx.shape[0]:
        raise ValueError(f"{vals.shape[0]} clamp values for {idx.shape[0]} units")

    def hook(mod, args, out):
        h = _main(out)
        if idx.numel() and (int(idx.max()) >= h.shape[-1] or int(idx.min()) < 0):
            raise ValueError(f"unit indices must be in [0, {h.shape[-1]}), got max {int(idx.max())}")
        h = h.clone()
        h[..., idx.to(h.device)] = vals.to(h.device, h.dtype).expand(idx.shape[0])
        return _replace(out, h)

    with _hooked(module, hook):
        yield


@contextmanager
def bypass(adapter, layer: int, site: str = "mlp") -> Iterator[None]:
    """Remove a sub-block's write: the block's residual stream skips its MLP (or attention).

    Implemented by swapping the sub-block's ``forward`` for one that returns zeros of the
    right shape (not by a hook), so the MLP is not even run.
    """
    if site not in ("mlp", "attn"):
        raise ValueError(f"bypass applies to 'mlp' or 'attn', got {site!r}")
    module = _site_module(adapter, layer, site)
    original = module.forward

    def zero_mlp(x, *a, **kw):
        return torch.zeros_like(x)

    def zero_attn(*a, **kw):
        out = original(*a, **kw)  # attention also returns weights; keep the structure, zero the write
        return _replace(out, torch.zeros_like(_main(out)))

    module.forward = zero_mlp if site == "mlp" else zero_attn
    try:
        yield
    finally:
        del module.forward  # back to the class's forward


def head_dim(adapter) -> int:
    """Width of one attention head at the output projection's input."""
    o_proj = adapter.layer_module(0, "attn_out")
    return o_proj.in_features // int(adapter.text_config.num_attention_heads)


@contextmanager
def ablate_heads(adapter, layer: int, heads: Sequence[int]) -> Iterator[None]:
    """Zero the outputs of attention heads ``heads`` of block ``layer`` before the output
    projection mixes them (so the heads write nothing to the residual stream)."""
    _site_module(adapter, layer, "attn")  # range check
    o_proj = adapter.layer_module(layer, "attn_out")
    n_heads = int(adapter.text_config.num_attention_heads)
    bad = [h for h in heads if not 0 <= h < n_heads]
    if bad:
        raise ValueError(f"heads {bad} out of range: block {layer} has {n_heads} heads")
    hd = head_dim(adapter)

    def zero_heads(x):
        x = x.clone()
        for h in heads:
            x[..., h * hd : (h + 1) * hd] = 0
        return x

    with _input_edited(o_proj, "input", zero_heads):
        yield


@contextmanager
def mask_image_tokens(adapter, positions: Sequence[Sequence[int]], pools: Sequence[Sequence[int]]) -> Iterator[None]:
    """Replace image-token embeddings entering the first decoder block by the mean image-token
    embedding of the same item (prefill only): masking at the embeddings instead of in pixels.

    Args:
        positions: per batch row, the sequence positions to overwrite (padded coordinates).
        pools: per batch row, the positions whose mean is written there (all the item's image tokens).
    """
    first = adapter.decoder_layers()[0]

    def mask(x):
        if x.shape[1] == 1:  # a decode step: the image is in the cache already
            return None
        x = x.clone()
        for b, (pos, pool) in enumerate(zip(positions, pools, strict=True)):
            if len(pos):
                mean = x[b, torch.as_tensor(list(pool), device=x.device)].mean(0)
                x[b, torch.as_tensor(list(pos), device=x.device)] = mean
        return x

    with _input_edited(first, "hidden_states", mask):
        yield


class Recorder:
    """Keeps the full-sequence outputs of sites during the prefill forward: ``acts[(site, layer)]``
    is ``[B, T, d]`` (detached)."""

    def __init__(self):
        self.acts: dict[tuple[str, int], torch.Tensor] = {}


@contextmanager
def record(adapter, sites: Sequence[tuple[str, int]]) -> Iterator[Recorder]:
    """Record site outputs of a forward pass (the first call with more than one position)."""
    rec = Recorder()
    with ExitStack() as stack:
        for site, layer in sites:

            def hook(mod, args, out, key=(site, layer)):
                h = _main(out)
                if h.shape[1] > 1 and key not in rec.acts:
                    rec.acts[key] = h.detach().clone()

            stack.enter_context(_hooked(_site_module(adapter, layer, site), hook))
        yield rec


@contextmanager
def patch(adapter, acts: dict[tuple[str, int], torch.Tensor], last_only: bool = False) -> Iterator[None]:
    """Replace site outputs in the prefill forward by recorded ones (activation patching).

    ``acts`` maps ``(site, layer)`` to ``[B, T, d]`` from :func:`record` on a run with the same
    batch layout (same sequence length and padding). ``last_only``: replace the last position
    only (the decision position), leaving what the other positions computed.
    """
    with ExitStack() as stack:
        for (site, layer), value in acts.items():

            def hook(mod, args, out, value=value, site=site, layer=layer):
                h = _main(out)
                if h.shape[1] == 1:
                    return None
                if h.shape != value.shape:
                    raise ValueError(
                        f"cannot patch {site} of block {layer}: recorded {tuple(value.shape)}, "
                        f"this run has {tuple(h.shape)} (the corrupted input must keep the token layout)"
                    )
                if last_only:
                    new = h.clone()
                    new[:, -1] = value[:, -1].to(h.device, h.dtype)
                    return _replace(out, new)
                return _replace(out, value.to(h.device, h.dtype))

            stack.enter_context(_hooked(_site_module(adapter, layer, site), hook))
        yield
