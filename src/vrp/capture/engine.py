"""One instrumented greedy ``generate`` call that answers a batch and records, per item,
attention over image patches, residual stream, sub-block writes and log-probabilities.

Nothing is run twice: prefill gives the decision position, each decode step gives the next
answer token, and forward hooks plus the ``vrp_capture`` attention function read what is
needed at the query position of every forward call as it happens. Only the language
model's attention implementation is switched (the vision tower keeps its own), and it is
restored afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from vrp.capture.attention import IMPL_NAME, AttentionRecorder, recording, register
from vrp.capture.records import ItemCapture, answer_end
from vrp.config import DTYPES, Config, TraceConfig
from vrp.models.grids import ImageGrid
from vrp.models.sites import block_site, hooks

log = logging.getLogger(__name__)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# numpy has no bfloat16: bfloat16 captures are stored as float32 in the records
_NP_DTYPES = {"float16": np.float16, "bfloat16": np.float32, "float32": np.float32}


@dataclass(frozen=True)
class CaptureConfig(Config):
    """What to capture.

    Attributes:
        layers: decoder block indices for attention, writes and residuals (0-based, negative
            from the end; None = all). The residual always includes ``embed`` first.
        attention: record attention rows over image patches.
        residuals: record the residual stream.
        writes: record attention / MLP sub-block writes.
        dtype: storage dtype of residuals and writes (float16, bfloat16, float32);
            attention and log-probabilities are always float32.
        max_new_tokens: greedy answer length cap.
    """

    layers: tuple[int, ...] | None = None
    attention: bool = True
    residuals: bool = True
    writes: bool = True
    dtype: str = "float16"
    max_new_tokens: int = TraceConfig.max_new_tokens

    error = ValueError

    def check(self) -> None:
        self.require(
            (self.dtype in DTYPES, f"capture dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
        )


@contextmanager
def language_attention(model, impl: str) -> Iterator[None]:
    """Temporarily switch the language model's attention implementation only."""
    text_cfg = model.config.text_config
    previous = text_cfg._attn_implementation
    model.set_attn_implementation({"text_config": impl})
    try:
        yield
    finally:
        model.set_attn_implementation({"text_config": previous})


class _Taps:
    """Hook functions on named sites that keep the last position of every forward call (the
    step's query): the residual stream (``embed`` and each block's ``resid_post``) and the
    sub-block writes (``attn_out``, ``mlp_out``)."""

    def __init__(
        self, keep: list[int], want_res: bool, want_writes: bool, dtype: torch.dtype, heads: list[int] | None = None
    ):
        self.calls: dict[str, list[torch.Tensor]] = {}  # site -> per call [B, d]
        names = []
        if want_res:
            names += ["embed"] + [block_site(i, "resid_post") for i in keep]
        if want_writes:
            names += [block_site(i, kind) for kind in ("attn_out", "mlp_out") for i in keep]
        for name in names:
            self.calls[name] = []
        # the heads' outputs (attn_z) of the attention blocks, at the decision position only
        self.first: dict[str, list[torch.Tensor]] = {block_site(i, "attn_z"): [] for i in heads or []}
        self.dtype = dtype

    def fns(self) -> dict:
        def keep_last(calls: list[torch.Tensor]):
            return lambda h: calls.append(h[:, -1, :].detach().to(self.dtype))

        def keep_first(calls: list[torch.Tensor]):
            return lambda h: None if calls else calls.append(h[:, -1, :].detach().float())

        fns = {name: keep_last(calls) for name, calls in self.calls.items()}
        fns.update({name: keep_first(calls) for name, calls in self.first.items()})
        return fns


def image_sizes(images: list) -> list[tuple[int, int]]:
    """``(width, height)`` of every image, in the order the processor takes them (a nested
    list, one list of images per prompt, is flattened)."""
    flat = [im for x in images for im in (x if isinstance(x, list | tuple) else [x])]
    return [im.size for im in flat]


@dataclass
class PromptPrefix:
    """The greedy pass's processed prompt, kept so that sampling can continue from it
    instead of running the vision tower and the prompt through the model again.

    ``cache`` holds the key/value cache of the first ``input_ids.shape[1] - 1`` prompt
    positions (the last one is recomputed by whoever continues, which yields the first
    answer step's logits); ``state`` is the family's own generation state (see
    ``ModelAdapter.generation_state``).
    """

    input_ids: torch.Tensor  # [B, P] left-padded prompt ids
    attention_mask: torch.Tensor  # [B, P]
    cache: object
    state: dict


def capture_generate(adapter, images: list, prompts: list[str], cfg: CaptureConfig | None = None) -> list[ItemCapture]:
    """Answer a batch greedily and capture what ``cfg`` asks for, in the same generate call.

    Args:
        adapter: a loaded :class:`vrp.models.ModelAdapter`.
        images: one PIL image per prompt (each prompt holds its image placeholders).
        prompts: prompt texts as built by ``adapter.prompt``.
        cfg: what to capture.

    Returns:
        One :class:`ItemCapture` per prompt, in order.
    """
    return _capture(adapter, images, prompts, cfg or CaptureConfig(), keep_prefix=False)[0]


def capture_with_prefix(
    adapter, images: list, prompts: list[str], cfg: CaptureConfig | None = None
) -> tuple[list[ItemCapture], PromptPrefix | None]:
    """:func:`capture_generate`, and the processed prompt (:class:`PromptPrefix`) so that
    sampling can continue from it without a second prefill (None where the cache cannot be cut
    back to the prompt: a sliding window that the prompt and answer outgrew)."""
    return _capture(adapter, images, prompts, cfg or CaptureConfig(), keep_prefix=True)


def _capture(adapter, images: list, prompts: list[str], cfg: CaptureConfig, keep_prefix: bool):
    register()
    model, tok = adapter.model, adapter.tokenizer
    n = adapter.n_blocks
    if cfg.layers is not None and not all(-n <= i < n for i in cfg.layers):
        raise ValueError(
            f"capture layers must be in [-{n}, {n - 1}] for a model of {n} decoder blocks, got {cfg.layers}"
        )
    keep = list(range(n)) if cfg.layers is None else sorted({i % n for i in cfg.layers})
    enc = adapter.model_inputs(images, prompts)
    grids = adapter.image_grids(enc, image_sizes(images))
    # attention maps exist only where a block's token mixing is softmax attention (a hybrid
    # model's linear-attention blocks have none: they are absent, never filled in)
    with_attention = set(adapter.attention_blocks())
    att_keep = [i for i in keep if i in with_attention]
    taps = _Taps(keep, cfg.residuals, cfg.writes, _DTYPES[cfg.dtype], heads=att_keep if cfg.writes else None)
    recorder = AttentionRecorder(set(att_keep))
    with (
        torch.no_grad(),
        hooks(adapter, taps.fns()),
        language_attention(model, IMPL_NAME),
        recording(recorder) if cfg.attention else nullcontext(),
    ):
        out = model.generate(
            **enc,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    if cfg.attention and att_keep and not recorder.rows:
        _eager_fallback(model, enc, cfg, att_keep, tuple(sorted(with_attention)), recorder, tok.pad_token_id)
    records = _assemble(enc, out, grids, taps, recorder, keep, att_keep, cfg, adapter.stop_token_ids)
    if not keep_prefix:
        return records, None
    cache = out.past_key_values
    try:
        cache.crop(-(cache.get_seq_length() - (enc["input_ids"].shape[1] - 1)))
    except (RuntimeError, ValueError, NotImplementedError) as e:
        # a sliding-window (or recurrent) layer has dropped the prompt's start: it cannot be cut back
        log.debug("the cache cannot be cut back to the prompt (%s): sampling will re-run the prompt", e)
        return records, None
    return records, PromptPrefix(enc["input_ids"], enc["attention_mask"], cache, adapter.generation_state())


def _eager_fallback(
    model,
    enc,
    cfg: CaptureConfig,
    keep: list[int],
    attention_blocks: tuple[int, ...],
    recorder: AttentionRecorder,
    pad_id: int,
) -> None:
    """The language model did not route attention through ``vrp_capture`` (a family with its
    own attention code): re-run greedy generation with eager attention and
    ``output_attentions`` and keep the last query row of every step. Logged, never silent."""
    log.warning(
        "%s: attention did not go through the vrp_capture function; falling back to eager "
        "output_attentions in a second generate pass (slower, same greedy answers)",
        type(model).__name__,
    )
    with torch.no_grad(), language_attention(model, "eager"):
        out = model.generate(
            **enc, max_new_tokens=cfg.max_new_tokens, do_sample=False, pad_token_id=pad_id,
            output_attentions=True, return_dict_in_generate=True,
        )  # fmt: skip
    for step in out.attentions:  # per step: per block [B, H, q, keys], or per block with attention
        index = {b: k for k, b in enumerate(attention_blocks)} if len(step) == len(attention_blocks) else None
        for i in keep:
            recorder.add(i, step[i if index is None else index[i]][:, :, -1, :].float())


def _assemble(
    enc, out, grids, taps: _Taps, recorder: AttentionRecorder, keep, att_keep, cfg: CaptureConfig, stops: frozenset[int]
) -> list[ItemCapture]:
    input_len = enc["input_ids"].shape[1]
    gen = out.sequences[:, input_len:].cpu().numpy()  # [B, steps]
    logprobs = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1).cpu().numpy()  # [B, steps, V]
    pads = (enc["attention_mask"] == 0).sum(1).tolist()  # left padding per row
    n_calls = gen.shape[1]

    def stack_calls(per_call: list[torch.Tensor]) -> np.ndarray:  # -> [B, calls, d]
        return torch.stack(per_call[:n_calls], dim=1).float().cpu().numpy()

    def stack_sites(names: list[str]) -> np.ndarray:  # -> [B, calls, len(names), d]
        return np.stack([stack_calls(taps.calls[name]) for name in names], axis=2)

    res = attn_w = mlp_w = None
    if cfg.residuals:
        res = stack_sites(["embed"] + [block_site(i, "resid_post") for i in keep])  # [B, calls, 1+L, d]
    z = None
    if cfg.writes:
        attn_w = stack_sites([block_site(i, "attn_out") for i in keep])  # [B, calls, L, d]
        mlp_w = stack_sites([block_site(i, "mlp_out") for i in keep])
        if taps.first and all(taps.first.values()):  # [B, L_att, H * hd] at the decision position
            z = torch.stack([c[0] for c in taps.first.values()], dim=1).cpu().numpy()
    np_dtype = _NP_DTYPES[cfg.dtype]

    rows = _prompt_rows(recorder, att_keep, n_calls, input_len) if cfg.attention and att_keep else None
    records = []
    for b in range(gen.shape[0]):
        ids = gen[b].tolist()
        T = min(answer_end(ids, stops) + 1, len(ids))  # up to and including the first stop token
        rec = ItemCapture(
            prompt_len=input_len - pads[b],
            answer_ids=np.asarray(ids[:T], dtype=np.int64),
            logprobs=logprobs[b, :T],
            grids=[g.shifted(-pads[b]) for g in grids[b]],
            layers=tuple(keep),
            attention_layers=tuple(att_keep) if rows is not None else (),
        )
        if res is not None:
            rec.residual = res[b, :T].astype(np_dtype)
        if attn_w is not None:
            rec.attn_write = attn_w[b, :T].astype(np_dtype)
            rec.mlp_write = mlp_w[b, :T].astype(np_dtype)
        if z is not None:
            rec.attn_z = z[b]  # float32: the head attribution sums to the block's write
        if rows is not None:
            _attach_attention(rec, rows, b, T, grids[b])
        records.append(rec)
    return records


def _prompt_rows(recorder: AttentionRecorder, keep, n_calls: int, prompt_len: int) -> torch.Tensor:
    """Attention rows restricted to prompt keys, stacked: [L, B, H, calls, prompt_len].

    Image tokens sit in the prompt, so their key indices are the same at every call;
    keys past the prompt (earlier answer tokens) are text by construction.
    """
    per_layer = []
    for i in keep:
        calls = recorder.rows.get(i, [])
        if len(calls) < n_calls:
            raise RuntimeError(
                f"attention of layer {i} was not captured ({len(calls)} of {n_calls} steps): "
                "the model did not route its language attention through the vrp_capture function"
            )
        rows = [_prompt_keys(c, prompt_len + j, prompt_len) for j, c in enumerate(calls[:n_calls])]
        per_layer.append(torch.stack(rows, dim=2))
    return torch.stack(per_layer).float().cpu()


def _prompt_keys(row: torch.Tensor, n_keys: int, prompt_len: int) -> torch.Tensor:
    """The prompt's keys ``[B, H, prompt_len]`` of one call's rows ``[B, H, keys]``, where the call
    attended over ``n_keys`` positions. A sliding-window layer's cache keeps only the last
    ``window`` keys: the keys it dropped are the ones its mask hides, so they come back as exact
    zeros on the left."""
    missing = n_keys - row.shape[-1]
    if missing > 0:
        row = torch.nn.functional.pad(row, (missing, 0))
    return row[:, :, :prompt_len]


def _attach_attention(rec: ItemCapture, rows: torch.Tensor, b: int, T: int, grids: list[ImageGrid]) -> None:
    # rows: [L, B, H, calls, prompt_len] in padded prompt coordinates; grids likewise.
    item = rows[:, b, :, :T, :]  # [L, H, T, prompt_len]
    all_img = torch.as_tensor(np.concatenate([g.patch_index for g in grids]) if grids else np.zeros(0, dtype=np.int64))
    img_mass = item[..., all_img].sum(-1).numpy()  # [L, H, T]: on every patch of every view
    rec.image_mass = img_mass.astype(np.float32)
    rec.text_mass = (1.0 - img_mass).astype(np.float32)
    for g in grids:
        views = []
        for v in g.views:
            a = item[..., torch.as_tensor(v.token_index)]  # [L, H, T, rows * cols]
            views.append(a.reshape(*a.shape[:3], v.rows, v.cols).numpy().astype(np.float32))
        rec.view_attention.append(views)
        rec.image_attention.append(views[g.canonical])  # the same array, not a copy
