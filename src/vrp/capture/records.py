"""Typed records of what one instrumented generate pass captured for one item.

Everything downstream of ``vrp.capture`` sees these records, never raw HF outputs.

Conventions:
    T  answer steps actually taken for this item (up to and including EOS if emitted).
       Step t is the forward pass that *produced* answer token t: step 0 is the prefill,
       whose last prompt position is the **decision position**; step t >= 1 is the decode
       pass whose query is answer token t-1.
    L  decoder blocks recorded (``ItemCapture.layers``). Residuals have L + 1 entries, the
       residual index of :mod:`vrp.models.sites`: index 0 is the site ``embed`` (the decoder's
       input, image features merged in, any embedding scaling applied) and index i + 1 is
       ``blocks.{layers[i]}.resid_post``, the output of the i-th recorded block.
    H  query heads.
    d  hidden size; V vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vrp.models.grids import ImageGrid


@dataclass
class ItemCapture:
    """Everything captured for one item during greedy answering."""

    prompt_len: int  # prompt tokens of this item (padding excluded)
    answer_ids: np.ndarray  # [T] int64, generated token ids (EOS included if emitted)
    logprobs: np.ndarray  # [T, V] float32, log-softmax of the model's logits at each step
    grids: list[ImageGrid]  # one per image in the prompt, in prompt order (views and prompt positions)
    residual: np.ndarray | None = None  # [T, L + 1, d] at the step's query position
    attn_write: np.ndarray | None = None  # [T, L, d] attention sub-block output added to the residual
    mlp_write: np.ndarray | None = None  # [T, L, d] MLP sub-block output added to the residual
    # [L_att, H * head_dim] float32: the heads' outputs (site attn_z) at the decision position, on the
    # blocks of ``attention_layers`` (for the heads' direct logit attribution)
    attn_z: np.ndarray | None = None
    # Per image: attention of each step's query to that image's tokens on its canonical view's grid.
    image_attention: list[np.ndarray] = field(default_factory=list)  # each [L, H, T, rows, cols]
    # Per image, per view (``grids[i].views``): the same on every view's grid (the canonical
    # view's array is the one in ``image_attention``).
    view_attention: list[list[np.ndarray]] = field(default_factory=list)  # each [L, H, T, rows_v, cols_v]
    image_mass: np.ndarray | None = None  # [L, H, T] total attention on every patch token of every image
    text_mass: np.ndarray | None = None  # [L, H, T] on everything else: text, image separators, answer tokens
    layers: tuple[int, ...] = ()  # which decoder blocks the L axis of residual / writes holds
    # which decoder blocks the L axis of image_attention / view_attention / image_mass holds: the
    # recorded blocks whose token mixing is softmax attention (all of ``layers`` but in a hybrid
    # model, whose linear-attention blocks have no map)
    attention_layers: tuple[int, ...] = ()

    @property
    def n_steps(self) -> int:
        return len(self.answer_ids)


def answer_end(ids, stop_ids) -> int:
    """The number of answer tokens before the first stop token (all of them if none)."""
    ids = [int(i) for i in ids]
    return next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))


def decode_answer(tokenizer, ids, stop_ids=None) -> str:
    """The answer text of generated token ids, as every part of vrp reports it: cut at the
    first stop token (``ModelAdapter.stop_token_ids``; default the tokenizer's EOS), special
    tokens skipped, whitespace stripped."""
    ids = [int(i) for i in ids]
    stops = {tokenizer.eos_token_id} if stop_ids is None else stop_ids
    return tokenizer.decode(ids[: answer_end(ids, stops)], skip_special_tokens=True).strip()
