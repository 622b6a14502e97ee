"""K nucleus samples per item in one batched ``generate`` call, seeded per item and sample.

Design:

* **One call.** The B items are encoded once and ``generate``'s own
  ``num_return_sequences=k`` expands them to B x K rows (row ``b * k + j`` is sample ``j``
  of item ``b``). In transformers 5.x the vision tower runs once per item *before* that
  expansion for LLaVA and Qwen2-VL (their ``mm_encoder_outputs`` are repeated per text, so
  Qwen2-VL's flattened ``pixel_values`` / ``image_grid_thw`` need no hand re-interleaving);
  PaliGemma's ``pixel_values`` ``[B, 3, H, W]`` are repeated row-wise. The language model
  then prefills and decodes all B x K rows together.
* **Per-row seeds.** HF's sampler draws every row from one global RNG
  (``torch.multinomial`` over the whole batch), so an item's samples would depend on
  which other items share its batch. Instead one extra :class:`_RowSampler` logits
  processor applies HF's own ``TemperatureLogitsWarper`` and ``TopPLogitsWarper`` (the
  objects ``generate`` itself uses when sampling, in the same order, after the model's
  other processors such as a repetition penalty), draws one token per row from that row's
  own stream, and returns scores that are 0 at the drawn token and ``-inf`` elsewhere.
* **Why ``do_sample=True`` still.** transformers 5.x refuses ``num_return_sequences > 1``
  for greedy decoding, and runs custom processors *before* its own sampling warpers. A
  one-hot row survives every one of those warpers (temperature scales 0 / -inf; top-k,
  top-p, min-p, typical, epsilon, eta keep at least the one finite token), and HF's
  ``multinomial`` over it returns the drawn token with probability 1. So
  ``generate(do_sample=True)`` is called *without* ``temperature`` / ``top_p`` (ours are
  applied inside the processor), its global-RNG draw is made inside
  ``torch.random.fork_rng`` (the caller's RNG state is left untouched), and every emitted
  token is checked against the processor's own draws afterwards (a mismatch raises).
* **The draw.** Each row owns a ``numpy.random.Generator`` seeded with
  ``SeedSequence([item_seed, sample_index])`` (a stable hash: nearby seeds give unrelated
  streams) and takes exactly one uniform ``u`` per decoding step. The token is the inverse
  CDF of the warped distribution at ``u``, vectorized over rows on the model's device:
  exact sampling from the distribution ``torch.multinomial`` samples from, with random
  numbers that depend neither on the device, nor on the batch, nor on how many steps other
  rows take, and one uniform per row and step instead of B x K per-row ``multinomial``
  calls with per-row ``torch.Generator`` objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from vrp.capture.records import answer_end
from vrp.config import TraceConfig


@dataclass(frozen=True)
class SampledAnswers:
    """The K sampled answers of one item.

    Attributes:
        texts: K decoded answers (cut at EOS, pads removed, special tokens skipped, stripped),
            decoded exactly like the run's greedy answers.
        token_ids: K answer token-id sequences matching ``texts`` (no EOS, no pads).
    """

    texts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]


def item_seed(seed: int, item_id: str) -> int:
    """The sampling seed of one item: a stable hash of (the run's or trace's seed, item id), so
    an item's samples do not depend on its batch or position."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:8], "little")


def row_generators(seeds: Sequence[int], k: int) -> list[np.random.Generator]:
    """One independent random stream per (item seed, sample index), item-major order."""
    return [np.random.default_rng(np.random.SeedSequence([int(s), j])) for s in seeds for j in range(k)]


class _RowSampler(LogitsProcessor):
    """Warp with HF's temperature and top-p warpers, then draw one token per row from that
    row's own stream; returns 0 at the drawn token and -inf elsewhere (a one-hot row that
    generate's own sampling step can only reproduce)."""

    def __init__(self, rngs: list[np.random.Generator], temperature: float, top_p: float):
        self.rngs = rngs
        self.draws: list[torch.Tensor] = []  # per step: [rows] drawn token ids
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.rngs):
            raise RuntimeError(f"sampler has {len(self.rngs)} row streams but generate passed {scores.shape[0]} rows")
        dtype = torch.float32 if scores.device.type == "mps" else torch.float64  # MPS has no float64
        probs = torch.softmax(self.warpers(input_ids, scores).to(dtype), dim=-1)  # [rows, V]
        u = torch.tensor([g.random() for g in self.rngs], dtype=dtype, device=scores.device)
        cdf = probs.cumsum(dim=-1)
        idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)  # first cdf > u
        # u * total can round up to the total: never step past the last token with mass.
        pos = torch.arange(probs.shape[1], device=probs.device)
        last = torch.where(probs > 0, pos, -1).amax(dim=-1)
        idx = torch.minimum(idx, last)
        self.draws.append(idx)
        out = torch.full_like(scores, -float("inf"))
        out.scatter_(1, idx.unsqueeze(1), 0.0)
        return out


def _check_emitted(gen: torch.Tensor, draws: list[torch.Tensor], eos_ids: list[int]) -> None:
    """Every token emitted up to a row's first EOS must be the token the row sampler drew."""
    if len(draws) < gen.shape[1]:
        raise RuntimeError(f"the row sampler ran {len(draws)} times for {gen.shape[1]} generated steps")
    drawn = torch.stack(draws[: gen.shape[1]], dim=1).to(gen.device)  # [rows, steps]
    live = torch.ones_like(gen, dtype=torch.bool)
    if eos_ids:  # steps after a row's EOS hold pads, not draws
        ended = torch.isin(gen[:, :-1], torch.tensor(eos_ids, device=gen.device))
        live[:, 1:] = ended.cumsum(dim=1) == 0
    if not torch.equal(gen[live], drawn[live]):
        raise RuntimeError(
            "generate emitted tokens other than the ones the per-row sampler drew: a logits processor "
            "after it (from the model's generation_config) changed the choice; vrp cannot sample this model"
        )


def _decode(tok, ids: list[int], stops: frozenset[int]) -> tuple[str, tuple[int, ...]]:
    # The run's rule for greedy answers: cut at the first stop token, drop pads, skip special tokens, strip.
    ids = [i for i in ids[: answer_end(ids, stops)] if i != tok.pad_token_id]
    return tok.decode(ids, skip_special_tokens=True).strip(), tuple(ids)


def sample_answers(
    adapter,
    images: list,
    prompts: list[str],
    seeds: Sequence[int],
    k: int = TraceConfig.samples,
    temperature: float = TraceConfig.temperature,
    top_p: float = TraceConfig.top_p,
    max_new_tokens: int = TraceConfig.max_new_tokens,
    prefix=None,
) -> list[SampledAnswers]:
    """Draw ``k`` nucleus-sampled answers for each item in one batched ``generate`` call.

    Args:
        adapter: a loaded :class:`vrp.models.ModelAdapter`.
        images: one PIL image per prompt.
        prompts: prompt texts as built by ``adapter.prompt``.
        seeds: one integer seed per item; an item's samples depend only on its seed, image
            and prompt (not on the other items in the batch), up to floating-point noise.
        k: samples per item (>= 1).
        temperature: softmax temperature (> 0).
        top_p: nucleus mass in (0, 1]; 1 disables the nucleus filter.
        max_new_tokens: answer length cap.
        prefix: the :class:`vrp.capture.engine.PromptPrefix` of a greedy pass over the same
            images and prompts: the K samples then continue from its cached prompt (repeated
            K times) instead of running the vision tower and the prompt again. Consumed.

    Returns:
        One :class:`SampledAnswers` per item, in order, each holding ``k`` samples.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    k = int(k)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    if any(not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers, got {list(seeds)[:5]!r}")
    if not len(images) == len(prompts) == len(seeds):
        raise ValueError(
            f"{len(images)} images, {len(prompts)} prompts and {len(seeds)} seeds: need one of each per item"
        )
    if not prompts:
        return []
    model, tok = adapter.model, adapter.tokenizer
    if prefix is None:
        enc = adapter.model_inputs(images, prompts)
        expand = {"num_return_sequences": k}
    else:
        if prefix.input_ids.shape[0] != len(prompts):
            raise ValueError(f"the prefix holds {prefix.input_ids.shape[0]} prompts, not {len(prompts)}")
        # Continue from the greedy pass's cached prompt: only its last position is run again.
        prefix.cache.batch_repeat_interleave(k)
        adapter.restore_generation_state(prefix.state, k)
        enc = {
            "input_ids": prefix.input_ids.repeat_interleave(k, dim=0),
            "attention_mask": prefix.attention_mask.repeat_interleave(k, dim=0),
        }
        expand = {"past_key_values": prefix.cache}
    sampler = _RowSampler(row_generators(seeds, k), float(temperature), float(top_p))
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        out = model.generate(
            **enc,
            **expand,
            max_new_tokens=max_new_tokens,
            do_sample=True,  # over one-hot rows: see the module docstring
            logits_processor=LogitsProcessorList([sampler]),
            pad_token_id=tok.pad_token_id,
        )
    gen = out[:, enc["input_ids"].shape[1] :]  # [B * k, steps], item-major
    stops = adapter.stop_token_ids
    _check_emitted(gen, sampler.draws, sorted(stops))
    new = gen.tolist()
    results = []
    for b in range(len(prompts)):
        decoded = [_decode(tok, new[b * k + j], stops) for j in range(k)]
        results.append(SampledAnswers(texts=tuple(t for t, _ in decoded), token_ids=tuple(i for _, i in decoded)))
    return results
