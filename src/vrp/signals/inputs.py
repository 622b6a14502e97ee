"""What the signal catalog reads for one item: plain arrays, no model.

A :class:`SignalInputs` is assembled where the model is (``vrp.tracing``: the capture
record, the logit-lens readout, the gold regions mapped onto the patch grid, the K samples)
and handed to :func:`vrp.signals.compute`. Everything here is numpy or plain Python, so the
signals can be recomputed, tested and reasoned about without torch.

Axes: ``L`` decoder blocks, ``H`` heads, ``T`` answer steps (step 0 = the decision position,
the last prompt token, which predicts the first answer token), ``d`` hidden size, ``V``
vocabulary, ``R`` reference (gold) tokens. The residual index has ``L + 1`` entries (0 =
``embed``, ``l + 1`` = ``blocks.{l}.resid_post``; see :mod:`vrp.models.sites`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vrp.config import TraceConfig


@dataclass(frozen=True, eq=False)
class SignalInputs:
    """One item's evidence for the signals.

    Attributes:
        task: the item's scoring family (canonicalizes the sampled answers).
        answer_ids: ``[T]`` generated token ids (EOS included if emitted).
        logprobs: ``[T, V]`` log-softmax of the model's logits at each answer step.
        n_content: answer tokens before EOS (the steps the attention maps average over).
        stop: index of the first EOS or newline token of the answer (T if none): the end of
            the geometric-mean probability.
        image_attention: ``[L, H, T, rows, cols]`` attention of each step's query to the
            item's (first) image's tokens on its patch grid.
        image_mass: ``[L, H, T]`` total attention on all image tokens.
        regions: gold boxes ``(x0, y0, x1, y1)`` in the vision tower's view, normalized to
            [0, 1]; empty when the item has none (region signals are then NaN).
        ref_logits: ``[L + 1, R]`` logit-lens logits of the gold answers' first tokens at
            the decision position (None without gold answers: margin signals are NaN).
        rival_logits: ``[L + 1]`` the best non-gold token's lens logit per residual index.
        lens_top_ids: ``[L + 1]`` the lens's argmax token per residual index.
        readout_direction: ``[d]`` gradient of ``logit[y*] - logit[rival]`` w.r.t. the last
            residual (the final norm's local linear map), for the sub-block split.
        attn_write: ``[L, d]`` what each block's attention sub-block added at the decision position.
        mlp_write: ``[L, d]`` likewise for the MLP sub-blocks.
        head_contrib: ``[L_att, H]`` each attention head's write at the decision position projected
            on the readout direction (direct logit attribution; blocks as ``image_attention``'s
            first axis), or None.
        samples: the K sampled answers' texts (None when none were drawn).
        rho: attention mass (rule "mass") or patch fraction (rule "patches") of the top-rho
            set behind the component counts.
        rho_rule: "mass" or "patches" (see :func:`vrp.signals.structural.top_mass_mask`).
        attention_blocks: the decoder blocks the first axis of ``image_attention`` and
            ``image_mass`` holds, when not every block has attention (a hybrid model's
            linear-attention blocks have no map); None: every block. The structural curves are
            then NaN at the other blocks, and their last-layer signals read the last block with
            attention.
        semantic_clusters: one cluster label per sample for the semantic signals, from an
            outside judge (``vrp run --nli-model``: bidirectional entailment,
            :mod:`vrp.signals.semantic`); None: the samples' canonical answers are the clusters.
    """

    task: str
    answer_ids: np.ndarray
    logprobs: np.ndarray
    n_content: int
    stop: int
    image_attention: np.ndarray
    image_mass: np.ndarray
    regions: tuple[tuple[float, float, float, float], ...] = ()
    ref_logits: np.ndarray | None = None
    rival_logits: np.ndarray | None = None
    lens_top_ids: np.ndarray | None = None
    readout_direction: np.ndarray | None = None
    attn_write: np.ndarray | None = None
    mlp_write: np.ndarray | None = None
    head_contrib: np.ndarray | None = None
    samples: tuple[str, ...] | None = None
    rho: float = TraceConfig.rho
    rho_rule: str = TraceConfig.rho_rule
    attention_blocks: tuple[int, ...] | None = None
    semantic_clusters: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        a = np.asarray(self.image_attention)
        if a.ndim != 5:
            raise ValueError(f"image_attention must be [L, H, T, rows, cols], got shape {a.shape}")
        if np.asarray(self.image_mass).shape != a.shape[:3]:
            raise ValueError(f"image_mass must be [L, H, T] = {a.shape[:3]}, got {np.asarray(self.image_mass).shape}")
        if self.attention_blocks is not None and len(self.attention_blocks) != a.shape[0]:
            raise ValueError(
                f"attention_blocks names {len(self.attention_blocks)} blocks, image_attention holds {a.shape[0]}"
            )
        if (self.ref_logits is None) != (self.rival_logits is None):
            raise ValueError("ref_logits and rival_logits come together (both or neither)")
        if self.semantic_clusters is not None and len(self.semantic_clusters) != len(self.samples or ()):
            raise ValueError(
                f"semantic_clusters labels {len(self.semantic_clusters)} samples, there are {len(self.samples or ())}"
            )

    @property
    def n_blocks(self) -> int:
        """Decoder blocks of the model (L)."""
        if self.attn_write is not None:
            return int(np.asarray(self.attn_write).shape[0])
        return int(np.asarray(self.image_attention).shape[0])

    @property
    def last_attention_block(self) -> int:
        """The last block with an attention map (the "last layer" of structural signals)."""
        return -1 if self.attention_blocks is None else self.attention_blocks[-1]
