"""Named sites: one name for each place of the language model that vrp reads or writes.

- ``embed`` ``[B, T, d]``: the decoder's input, token embeddings with the image features merged
  in (embedding scaling applied); the input of block 0.
- ``blocks.{l}.resid_post`` ``[B, T, d]``: decoder block ``l``'s output, the residual stream
  after block ``l``.
- ``blocks.{l}.attn_out`` ``[B, T, d]``: what block ``l``'s attention sub-block adds to the
  residual stream (its output).
- ``blocks.{l}.mlp_out`` ``[B, T, d]``: what block ``l``'s MLP sub-block adds.
- ``blocks.{l}.attn_z`` ``[B, T, H * head_dim]``: the attention heads' outputs, concatenated:
  the input of the attention output projection.

Blocks are 0-based; a negative ``l`` counts from the end (``blocks.-1.resid_post`` is the last
block's output). Stored residual streams (capture records, run shards, probes, monitors) have
L + 1 entries on their **residual index** axis: index 0 is ``embed`` and index ``l + 1`` is
``blocks.{l}.resid_post``; :func:`residual_index` and :func:`residual_site` convert, and
nothing else should.

:func:`hooks` is the one hook layer of vrp: the capture engine, the reliability monitor and
every intervention read and write sites through it. A hook function receives the tensor that
flows through its site during any forward call of the model (prefill and every decode step)
and returns ``None`` (the call goes on unchanged) or a tensor of the same shape that replaces
it. Where the site is a module's input or output, and whether HF passes it positionally or
by keyword, as a tensor or the first element of a tuple, is resolved here once.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

KINDS = ("resid_post", "attn_out", "mlp_out", "attn_z")
SITE_PATTERN = re.compile(r"^blocks\.(-?\d+)\.(" + "|".join(KINDS) + r")$")
HookFn = Callable[[torch.Tensor], torch.Tensor | None]


class SiteError(ValueError):
    """A site name that is malformed or outside the model."""


@dataclass(frozen=True)
class Site:
    """A parsed site name: ``kind`` is ``embed`` or one of :data:`KINDS`; ``layer`` is the
    non-negative block index (None for ``embed``)."""

    kind: str
    layer: int | None

    @property
    def name(self) -> str:
        return "embed" if self.kind == "embed" else f"blocks.{self.layer}.{self.kind}"


def as_index(value: object, what: str) -> int:
    """``value`` as a Python int (numpy integers accepted, bools refused); ValueError naming ``what``."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def block_site(layer: int, kind: str) -> str:
    """The name of site ``kind`` of block ``layer``, e.g. ``block_site(3, "mlp_out")``."""
    if kind not in KINDS:
        raise SiteError(f"unknown site kind {kind!r}; known: {', '.join(KINDS)}")
    return f"blocks.{layer}.{kind}"


def parse(name: str, n_blocks: int) -> Site:
    """Parse and check a site name for a model with ``n_blocks`` decoder blocks (negative
    block indices resolved)."""
    if name == "embed":
        return Site("embed", None)
    m = SITE_PATTERN.match(name) if isinstance(name, str) else None
    if m is None:
        raise SiteError(f"unknown site {name!r}; sites are 'embed' and 'blocks.{{l}}.{{{'|'.join(KINDS)}}}'")
    layer = int(m.group(1))
    if not -n_blocks <= layer < n_blocks:
        raise SiteError(f"site {name!r}: the model has {n_blocks} decoder blocks (0 to {n_blocks - 1}, or negative)")
    return Site(m.group(2), layer % n_blocks)


def residual_site(index: int) -> str:
    """The site of residual index ``index``: 0 -> ``embed``, ``l + 1`` -> ``blocks.{l}.resid_post``."""
    block = residual_block(index)
    return "embed" if block is None else f"blocks.{block}.resid_post"


def residual_block(index: int) -> int | None:
    """The decoder block whose output residual index ``index`` holds (None for 0, ``embed``)."""
    if index < 0:
        raise SiteError(f"a residual index is >= 0 (0 = embed), got {index}")
    return None if index == 0 else index - 1


def residual_index(layer: int | str, n_blocks: int) -> int:
    """The residual index of ``layer``: ``"embed"`` -> 0; a block index ``l`` (negative from
    the end) or ``"blocks.{l}.resid_post"`` -> ``l + 1`` (the block's output)."""
    if not isinstance(layer, str):
        try:
            layer = f"blocks.{as_index(layer, 'layer')}.resid_post"
        except ValueError:
            raise SiteError(f"a layer is 'embed', a block index or a resid_post site name, got {layer!r}") from None
    site = parse(layer, n_blocks)
    if site.kind not in ("embed", "resid_post"):
        raise SiteError(f"{layer!r} is not on the residual stream (use 'embed' or 'blocks.{{l}}.resid_post')")
    return 0 if site.layer is None else site.layer + 1


def _module(adapter: Any, blocks: list, site: Site) -> tuple[torch.nn.Module, str | None]:
    """The HF module of ``site`` and, for sites that are a module's *input*, the keyword HF
    uses for it (None for sites that are a module's output)."""
    if site.kind == "embed":
        return blocks[0], "hidden_states"
    if site.kind == "resid_post":
        return blocks[site.layer], None
    if site.kind == "attn_out":
        return adapter.layer_module(site.layer, "attn"), None
    if site.kind == "mlp_out":
        return adapter.layer_module(site.layer, "mlp"), None
    return adapter.layer_module(site.layer, "o_proj"), "input"


def _register(module: torch.nn.Module, keyword: str | None, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
    if keyword is not None:

        def pre(mod, args, kwargs):
            new = fn(args[0] if args else kwargs[keyword])
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, keyword: new})

        return module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(mod, args, out):
        main = out if torch.is_tensor(out) else out[0]
        new = fn(main)
        if new is None:
            return None
        return new if torch.is_tensor(out) else (new, *out[1:])

    return module.register_forward_hook(post)


@contextmanager
def hooks(adapter: Any, fns: Mapping[str, HookFn] | Iterable[tuple[str, HookFn]]) -> Iterator[None]:
    """Run ``fns`` on their sites during every forward call inside the ``with`` block.

    Args:
        adapter: a loaded model (:class:`vrp.models.ModelAdapter`).
        fns: site name -> function, or (site name, function) pairs (a site may appear more
            than once; its functions run in the order given). A function gets the site's
            tensor and returns None (read only) or its replacement.

    Every site is checked and located before any hook is registered, and the hooks are
    removed on exit, also when the block raises.
    """
    pairs = list(fns.items()) if isinstance(fns, Mapping) else list(fns)
    blocks = adapter.decoder_layers()
    located = [(*_module(adapter, blocks, parse(name, len(blocks))), fn) for name, fn in pairs]
    handles = []
    try:
        for module, keyword, fn in located:
            handles.append(_register(module, keyword, fn))
        yield
    finally:
        for h in handles:
            h.remove()


def site_names(n_blocks: int) -> list[str]:
    """Every site of a model with ``n_blocks`` decoder blocks, in forward order."""
    return ["embed"] + [
        f"blocks.{l}.{k}" for l in range(n_blocks) for k in ("attn_z", "attn_out", "mlp_out", "resid_post")
    ]
