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
from dataclasses import asdict, dataclass

import numpy as np
import torch

from vrp.capture.attention import IMPL_NAME, AttentionRecorder, recording, register
from vrp.capture.records import ImageGrid, ItemCapture

log = logging.getLogger(__name__)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# numpy has no bfloat16: bfloat16 captures are stored as float32 in the records
_NP_DTYPES = {"float16": np.float16, "bfloat16": np.float32, "float32": np.float32}


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture.

    Attributes:
        layers: 0-based decoder block indices for attention, writes and residuals
            (None = all). The residual always includes the embedding output first.
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
    max_new_tokens: int = 10

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"capture dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


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
    """Forward hooks that keep the last position of the residual and sub-block writes."""

    def __init__(self, layers: list, keep: list[int], want_res: bool, want_writes: bool, dtype: torch.dtype):
        self.embed: list[torch.Tensor] = []  # per call: [B, d]
        self.res = {i: [] for i in keep}  # layer -> per call [B, d]
        self.attn = {i: [] for i in keep}
        self.mlp = {i: [] for i in keep}
        self.handles = []
        self.dtype = dtype

        def last(x: torch.Tensor) -> torch.Tensor:
            return x[:, -1, :].detach().to(self.dtype)

        if want_res:
            self.handles.append(
                layers[0].register_forward_pre_hook(
                    lambda m, a, kw: self.embed.append(last(a[0] if a else kw["hidden_states"])), with_kwargs=True
                )
            )
        for i in keep:
            if want_res:
                self.handles.append(
                    layers[i].register_forward_hook(
                        lambda m, a, o, i=i: self.res[i].append(last(o if torch.is_tensor(o) else o[0]))
                    )
                )
            if want_writes:
                self.handles.append(
                    layers[i].self_attn.register_forward_hook(lambda m, a, o, i=i: self.attn[i].append(last(o[0])))
                )
                self.handles.append(
                    layers[i].mlp.register_forward_hook(lambda m, a, o, i=i: self.mlp[i].append(last(o)))
                )

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _unpad(grid: ImageGrid, offset: int) -> ImageGrid:
    return ImageGrid(rows=grid.rows, cols=grid.cols, token_index=grid.token_index - offset)


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


def capture_generate(
    adapter, images: list, prompts: list[str], cfg: CaptureConfig | None = None, keep_prefix: bool = False
) -> list[ItemCapture] | tuple[list[ItemCapture], PromptPrefix]:
    """Answer a batch greedily and capture what ``cfg`` asks for, in the same generate call.

    Args:
        adapter: a loaded :class:`vrp.models.ModelAdapter`.
        images: one PIL image per prompt (each prompt holds its image placeholders).
        prompts: prompt texts as built by ``adapter.prompt``.
        cfg: what to capture.
        keep_prefix: also return the processed prompt (:class:`PromptPrefix`) for sampling.

    Returns:
        One :class:`ItemCapture` per prompt, in order (and the prefix when ``keep_prefix``).
    """
    cfg = cfg or CaptureConfig()
    register()
    model, tok = adapter.model, adapter.tokenizer
    layers = adapter.decoder_layers()
    keep = list(range(len(layers))) if cfg.layers is None else sorted(cfg.layers)
    if keep and not 0 <= keep[0] <= keep[-1] < len(layers):
        raise ValueError(f"capture layers must be in [0, {len(layers) - 1}], got {cfg.layers}")
    enc = adapter.model_inputs(images, prompts)
    grids = adapter.image_grids(enc)
    taps = _Taps(layers, keep, cfg.residuals, cfg.writes, _DTYPES[cfg.dtype])
    recorder = AttentionRecorder(set(keep))
    try:
        with (
            torch.no_grad(),
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
    finally:
        taps.remove()
    if cfg.attention and not recorder.rows:
        _eager_fallback(model, enc, cfg, keep, recorder, tok.pad_token_id)
    records = _assemble(enc, out, grids, taps, recorder, keep, cfg, tok.eos_token_id)
    if not keep_prefix:
        return records
    cache = out.past_key_values
    cache.crop(-(cache.get_seq_length() - (enc["input_ids"].shape[1] - 1)))
    prefix = PromptPrefix(enc["input_ids"], enc["attention_mask"], cache, adapter.generation_state())
    return records, prefix


def _eager_fallback(model, enc, cfg: CaptureConfig, keep: list[int], recorder: AttentionRecorder, pad_id: int) -> None:
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
    for step in out.attentions:  # per step: per layer [B, H, q, keys]
        for i in keep:
            recorder.add(i, step[i][:, :, -1, :].float())


def _assemble(
    enc, out, grids, taps: _Taps, recorder: AttentionRecorder, keep, cfg: CaptureConfig, eos_id: int
) -> list[ItemCapture]:
    input_len = enc["input_ids"].shape[1]
    gen = out.sequences[:, input_len:].cpu().numpy()  # [B, steps]
    logprobs = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1).cpu().numpy()  # [B, steps, V]
    pads = (enc["attention_mask"] == 0).sum(1).tolist()  # left padding per row
    n_calls = gen.shape[1]

    def stack_calls(per_call: list[torch.Tensor]) -> np.ndarray:  # -> [B, calls, d]
        return torch.stack(per_call[:n_calls], dim=1).float().cpu().numpy()

    res = attn_w = mlp_w = None
    if cfg.residuals:
        res = np.stack(
            [stack_calls(taps.embed)] + [stack_calls(taps.res[i]) for i in keep], axis=2
        )  # [B, calls, 1+L, d]
    if cfg.writes:
        attn_w = np.stack([stack_calls(taps.attn[i]) for i in keep], axis=2)  # [B, calls, L, d]
        mlp_w = np.stack([stack_calls(taps.mlp[i]) for i in keep], axis=2)
    np_dtype = _NP_DTYPES[cfg.dtype]

    rows = _prompt_rows(recorder, keep, n_calls, input_len) if cfg.attention else None
    records = []
    for b in range(gen.shape[0]):
        ids = gen[b].tolist()
        T = ids.index(eos_id) + 1 if eos_id in ids else len(ids)
        rec = ItemCapture(
            prompt_len=input_len - pads[b],
            answer_ids=np.asarray(ids[:T], dtype=np.int64),
            logprobs=logprobs[b, :T],
            grids=[_unpad(g, pads[b]) for g in grids[b]],
            layers=tuple(keep),
        )
        if res is not None:
            rec.residual = res[b, :T].astype(np_dtype)
        if attn_w is not None:
            rec.attn_write = attn_w[b, :T].astype(np_dtype)
            rec.mlp_write = mlp_w[b, :T].astype(np_dtype)
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
        per_layer.append(torch.stack([c[:, :, :prompt_len] for c in calls[:n_calls]], dim=2))
    return torch.stack(per_layer).float().cpu()


def _attach_attention(rec: ItemCapture, rows: torch.Tensor, b: int, T: int, grids: list[ImageGrid]) -> None:
    # rows: [L, B, H, calls, prompt_len] in padded prompt coordinates; grids likewise.
    item = rows[:, b, :, :T, :]  # [L, H, T, prompt_len]
    all_img = torch.as_tensor(np.concatenate([g.token_index for g in grids]) if grids else np.zeros(0, dtype=np.int64))
    img_mass = item[..., all_img].sum(-1).numpy()  # [L, H, T]
    rec.image_mass = img_mass.astype(np.float32)
    rec.text_mass = (1.0 - img_mass).astype(np.float32)
    for g in grids:
        a = item[..., torch.as_tensor(g.token_index)]  # [L, H, T, rows * cols]
        rec.image_attention.append(a.reshape(*a.shape[:3], g.rows, g.cols).numpy().astype(np.float32))
