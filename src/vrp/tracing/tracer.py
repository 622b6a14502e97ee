"""``vrp.trace``: answer a question about an image and keep what happened inside the model.

One instrumented greedy ``generate`` per batch records, for every item, the attention of each
answer step over the image's patch grid, the residual stream, the sub-block writes and the
log-probabilities (:mod:`vrp.capture.engine`); with ``samples > 0`` the K sampled answers
continue from the same cached prompt (:mod:`vrp.capture.sampling`). A :class:`Trace` holds
one item's record and reads it in the vocabulary of :mod:`vrp.models.sites`: decoder blocks
0-based (negative from the end), ``"embed"`` for the decoder's input, step 0 for the decision
position (the last prompt token, which predicts the first answer token).

``vrp run`` answers every item through :func:`trace_batch`, so ``Trace.signals()`` are the
numbers a run stores in ``items.parquet``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vrp.capture.engine import CaptureConfig, capture_generate, capture_with_prefix
from vrp.capture.lens import LensReadout, lens_readout, reference_ids
from vrp.capture.records import ItemCapture, answer_end, decode_answer
from vrp.capture.sampling import SampledAnswers, item_seed, sample_answers
from vrp.config import ConfigError, TraceConfig
from vrp.data.images import as_image
from vrp.data.items import Item, validate_regions
from vrp.data.scoring import is_correct, score_generic
from vrp.models.sites import as_index, residual_index
from vrp.signals import SignalInputs, SignalResult, compute
from vrp.signals.catalog import Context
from vrp.signals.structural import answer_steps, layer_maps


@dataclass(eq=False)
class Trace:
    """One item answered by the model, with everything recorded on the way.

    Attributes:
        model: the loaded model (:class:`vrp.models.ModelAdapter`) the trace reads through
            (logit lens, tokenizer, image geometry).
        item: the item: id, question, gold answers, task and gold regions.
        image: the image as the model saw it (RGB).
        capture: the raw record (:class:`vrp.capture.records.ItemCapture`): arrays with
            documented shapes, for power users.
        sampled: the K sampled answers (None when ``samples=0``).
        config: the options it was traced with.
        answer: the greedy answer, decoded as ``vrp run`` decodes it.
        score: the task scorer's soft score in [0, 1] (None without gold answers).
        correct: ``score >= 0.5`` (None without gold answers).
    """

    model: Any
    item: Item
    image: Any
    capture: ItemCapture
    sampled: SampledAnswers | None
    config: TraceConfig
    answer: str
    score: float | None
    correct: bool | None
    _cache: dict = field(default_factory=dict, repr=False)

    # ---- the item --------------------------------------------------------------------------

    @property
    def question(self) -> str:
        return self.item.question

    @property
    def samples(self) -> tuple[str, ...]:
        """The K sampled answers (empty without sampling)."""
        return self.sampled.texts if self.sampled is not None else ()

    @property
    def answer_tokens(self) -> tuple[int, ...]:
        """The answer's token ids before its stop token (EOS)."""
        ids = self.capture.answer_ids.tolist()
        return tuple(ids[: answer_end(ids, self.model.stop_token_ids)])

    @property
    def steps(self) -> int:
        """Answer steps the attention signals average over: the answer's tokens before EOS
        (at least 1, at most the steps recorded)."""
        return answer_steps(len(self.answer_tokens), self.capture.n_steps)

    # ---- reading the record ------------------------------------------------------------------

    def _block(self, block: int) -> int:
        """``block`` (negative from the end) as a block index of the model."""
        n = self.model.n_blocks
        b = as_index(block, "block")
        if not -n <= b < n:
            raise ValueError(f"block must be in [-{n}, {n - 1}] (the model's decoder blocks), got {block!r}")
        return b % n

    def _block_position(self, block: int) -> int:
        """The position of ``block`` on the recorded residual / writes axis."""
        b = self._block(block)
        if b not in self.capture.layers:
            raise ValueError(f"block {b} was not recorded (traced with layers={self.config.layers})")
        return self.capture.layers.index(b)

    def _attention_position(self, block: int) -> int:
        """The position of ``block`` on the recorded attention axis."""
        b = self._block(block)
        if b not in self.capture.attention_layers:
            if b in self.capture.layers and b not in self.model.attention_blocks():
                raise ValueError(
                    f"block {b} has no attention map: its token mixing is not softmax attention "
                    f"(blocks with maps: {list(self.model.attention_blocks())})"
                )
            raise ValueError(f"block {b}'s attention was not recorded (traced with layers={self.config.layers})")
        return self.capture.attention_layers.index(b)

    def _stream_position(self, layer: int | str) -> int:
        index = residual_index(layer, self.model.n_blocks)
        return 0 if index == 0 else 1 + self._block_position(index - 1)

    def _check_step(self, step: int) -> int:
        t = as_index(step, "step")
        if not 0 <= t < self.capture.n_steps:
            raise ValueError(f"step must be in [0, {self.capture.n_steps - 1}] (answer steps), got {step!r}")
        return t

    def attention(
        self,
        block: int = -1,
        head: int | str | None = None,
        step: int | None = 0,
        image: int = 0,
        view: int | str | None = None,
        normalize: bool = False,
    ) -> np.ndarray:
        """Attention of an answer step's query over one image's patch grid.

        Args:
            block: decoder block (0-based, negative from the end).
            head: None for the mean over heads (``[rows, cols]``), a head index (``[rows, cols]``),
                or ``"all"`` (``[heads, rows, cols]``).
            step: answer step (0 = the decision position), or None for the mean over the
                answer's tokens (EOS excluded), as the signals average.
            image: which image of the prompt.
            view: which of the image's views (index or name, e.g. ``"global"``; None: the
                canonical one, whose grid the signals read; ``trace.capture.grids[image].views``).
            normalize: divide by the map's total, so it sums to 1 over the patches (the raw
                values are attention probabilities over every key, image and text).

        Returns:
            The map, row-major on the view's patch grid.
        """
        cap = self.capture
        if not cap.view_attention:
            raise ValueError("attention was not recorded for this trace")
        if not 0 <= image < len(cap.view_attention):
            raise ValueError(f"image must be in [0, {len(cap.view_attention) - 1}], got {image}")
        k = cap.grids[image].find(view)
        a = cap.view_attention[image][k][self._attention_position(block)]  # [H, T, rows, cols]
        a = a[:, : self.steps].mean(axis=1) if step is None else a[:, self._check_step(step)]  # [H, rows, cols]
        if head is None:
            a = a.mean(axis=0)
        elif head != "all":
            h = as_index(head, "head (None, 'all' or an index)")
            if not -a.shape[0] <= h < a.shape[0]:
                raise ValueError(f"head must be in [0, {a.shape[0] - 1}], got {head!r}")
            a = a[h]
        if normalize:
            a = a / a.sum(axis=(-2, -1), keepdims=True)
        return np.asarray(a, dtype=np.float32)

    def attention_maps(self) -> np.ndarray:
        """``[L, rows, cols]``: the maps ``p_l`` the structural signals read (mean over heads and
        the answer's tokens, renormalized to sum to 1 over the first image's patches), over the
        recorded blocks with attention (``capture.attention_layers``)."""
        if self._complete():
            return self._context().maps  # computed once, shared with the signals
        return layer_maps(self.capture.image_attention[0], steps=self.steps)

    def residual(self, layer: int | str, step: int = 0) -> np.ndarray:
        """The residual stream ``[d]`` at an answer step's query position.

        Args:
            layer: ``"embed"`` (the decoder's input), a decoder block (its output; 0-based,
                negative from the end) or a site name ``"blocks.{l}.resid_post"``.
            step: answer step (0 = the decision position).
        """
        if self.capture.residual is None:
            raise ValueError("the residual stream was not recorded for this trace")
        return self.capture.residual[self._check_step(step), self._stream_position(layer)]

    def logit_lens(self, layer: int | str, step: int = 0) -> np.ndarray:
        """``[V]`` logits of the residual at ``layer`` (as in :meth:`residual`) read through the
        model's final norm and unembedding (soft-capping included): the logit lens. At the
        last block this is the model's own next-token logits."""
        logits = self.model.logit_lens(self.residual(layer, step)[None])[0]
        return logits.float().cpu().numpy()

    def top_tokens(self, layer: int | str, k: int = 5, step: int = 0) -> list[tuple[str, float]]:
        """The ``k`` most likely tokens of the logit lens at ``layer``, with their probabilities."""
        logits = self.logit_lens(layer, step).astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.argsort(-p, kind="stable")[:k]
        tok = self.model.tokenizer
        return [(tok.decode([int(i)]), float(p[i])) for i in top]

    # ---- signals ---------------------------------------------------------------------------

    def lens(self) -> LensReadout | None:
        """The logit-lens readout at the decision position against the gold answers (None
        without gold answers): what the truth margins read."""
        if "lens" not in self._cache:
            refs = reference_ids(self.model.tokenizer, self.item.answers) if self.item.answers else None
            self._cache["lens"] = None if refs is None else lens_readout(self.model, self.capture.residual[0], refs)
        return self._cache["lens"]

    def _complete(self) -> bool:
        """Whether everything the signals read was recorded: every block, attention, the
        residual stream and the sub-block writes."""
        cap = self.capture
        return (
            cap.layers == tuple(range(self.model.n_blocks))
            and cap.attention_layers == tuple(self.model.attention_blocks())
            and bool(cap.image_attention)
            and cap.residual is not None
            and cap.attn_write is not None
        )

    def _context(self) -> Context:
        """The signal catalog's context over this trace (its intermediates computed once)."""
        if "context" not in self._cache:
            self._cache["context"] = Context(self.signal_inputs())
        return self._cache["context"]

    def signal_inputs(self) -> SignalInputs:
        """The arrays the signal catalog reads (:class:`vrp.signals.SignalInputs`)."""
        if "inputs" in self._cache:
            return self._cache["inputs"]
        cap, model = self.capture, self.model
        if not self._complete():
            raise ValueError(
                f"the signals need every decoder block, attention, residuals and sub-block writes recorded; "
                f"this trace recorded layers={cap.layers}"
            )
        lens = self.lens()
        tok = model.tokenizer
        ids = cap.answer_ids.tolist()
        stops = model.stop_token_ids
        stop = next((i for i, t in enumerate(ids) if t in stops or "\n" in tok.decode([t])), len(ids))
        view = cap.grids[0].view  # the canonical view of the item's (first) image
        boxes = tuple(b for r in self.item.regions if (b := view.to_grid(r["box"])) is not None)
        top_ids = lens.top_ids if lens is not None else model.logit_lens(cap.residual[0]).argmax(-1).cpu().numpy()
        head_contrib = None
        if lens is not None and lens.direction is not None and cap.attn_z is not None:
            att = set(model.attention_blocks())
            blocks = [b for b in cap.layers if b in att]
            head_contrib = model.head_contributions(cap.attn_z, lens.direction, blocks)
        self._cache["inputs"] = SignalInputs(
            task=self.item.task, answer_ids=cap.answer_ids, logprobs=cap.logprobs, n_content=len(self.answer_tokens),
            stop=stop, image_attention=cap.image_attention[0], image_mass=cap.image_mass, regions=boxes,
            ref_logits=None if lens is None else lens.ref_logits,
            rival_logits=None if lens is None else lens.rival_logits,
            lens_top_ids=top_ids, readout_direction=None if lens is None else lens.direction,
            attn_write=cap.attn_write[0], mlp_write=cap.mlp_write[0], head_contrib=head_contrib,
            samples=None if self.sampled is None else self.sampled.texts,
            rho=self.config.rho, rho_rule=self.config.rho_rule,
            attention_blocks=None if cap.attention_layers == cap.layers else cap.attention_layers,
        )  # fmt: skip
        return self._cache["inputs"]

    def signal_result(self) -> SignalResult:
        """Every signal and curve of the catalog for this item (computed once)."""
        if "signals" not in self._cache:
            self._cache["signals"] = compute(self._context())
        return self._cache["signals"]

    def signals(self) -> dict[str, float]:
        """Every per-item signal of the catalog: the numbers ``vrp run`` stores in
        ``items.parquet`` (NaN where undefined, e.g. margins without gold answers)."""
        return dict(self.signal_result().values)

    def curves(self) -> dict[str, np.ndarray]:
        """The per-layer curves ``vrp run`` stores (``curve.<name>`` shard arrays)."""
        return dict(self.signal_result().curves)

    def __repr__(self) -> str:
        g = self.capture.grids[0] if self.capture.grids else None
        verdict = "" if self.correct is None else f", correct={self.correct}"
        grid = f", grid {g.rows}x{g.cols}" if g else ""
        return f"Trace({self.item.question!r} -> {self.answer!r}{verdict}{grid}, {self.capture.n_steps} steps)"


def trace_batch(model: Any, items: Sequence[Item], images: Sequence[Any], config: TraceConfig) -> list[Trace]:
    """Trace one batch: one instrumented greedy ``generate`` (and one sampling ``generate``
    when ``config.samples > 0``). ``images`` are the items' opened RGB images."""
    items, images = list(items), list(images)
    if not items:
        return []
    prompts = [model.prompt(it.question) for it in items]
    cap_cfg = CaptureConfig(layers=config.layers, dtype=config.record_dtype, max_new_tokens=config.max_new_tokens)
    sampled: list[SampledAnswers | None] = [None] * len(items)
    prefix = None
    if config.samples and model.continues_from_cache:
        # the K samples continue from the greedy pass's cached prompt (no second prefill)
        caps, prefix = capture_with_prefix(model, images, prompts, cap_cfg)
    else:
        caps = capture_generate(model, images, prompts, cap_cfg)
    if config.samples:
        # without a prefix (a recurrent state or a sliding window that cannot be cut back to the
        # prompt) the samples re-run the prompt; the draws are the same either way
        sampled = sample_answers(
            model, images, prompts, [item_seed(config.seed, it.id) for it in items], k=config.samples,
            temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens, prefix=prefix,
        )  # fmt: skip
        del prefix
    out = []
    for it, im, cap, s in zip(items, images, caps, sampled, strict=True):
        text = decode_answer(model.tokenizer, cap.answer_ids, model.stop_token_ids)
        score = score_generic(it.task, text, it.answers) if it.answers else None
        correct = None if score is None else is_correct(score)
        out.append(Trace(model, it, im, cap, s, config, text, score, correct))
    return out


def _golds(answers: Any) -> tuple[str, ...]:
    if answers is None:
        return ()
    if isinstance(answers, str):
        return (answers,)
    return tuple(str(a) for a in answers)


def _per_image(value: Any, n: int, what: str) -> list:
    """``value`` for each of ``n`` images: a str (or None) applies to every image; a list
    or tuple gives one entry per image."""
    if value is None or isinstance(value, str):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{what}: give one entry per image ({n}) or one str for all, got {len(value)}")
    return value


def content_id(image: Any, question: str) -> str:
    """The id of an image and a question given without an item: a hash of the image's pixels
    and the question, so its samples (seeded from the id) depend on nothing else."""
    h = hashlib.sha256(f"{image.size}\0{question}\0".encode())
    h.update(image.tobytes())
    return "img-" + h.hexdigest()[:16]


def trace(
    model: Any,
    image: Any,
    question: str | Sequence[str] | None = None,
    *,
    answers: Any = None,
    task: str = "",
    regions: Sequence[dict] = (),
    config: TraceConfig | None = None,
    **options: Any,
) -> Trace | list[Trace]:
    """Answer questions about images and record what happened inside the model.

    Args:
        model: a loaded model (:func:`vrp.load`).
        image: an :class:`vrp.Item` (its question, gold answers, task and regions come with
            it), an image (file path or PIL image), or a list of either (batched).
        question: the question about ``image``; for a list of images, one str asked of every
            image or a list of one per image. Not given with items.
        answers: gold answer(s) of a single image; for a list of images, a str for all or one
            entry (a str or a list of str) per image. The trace is then scored (``correct``) and
            the truth-margin signals are defined.
        task: the scoring family of ``answers`` (existence, counting, ...; docs/data.md).
        regions: gold boxes ``[{"label": ..., "box": [x0, y0, x1, y1]}]`` in the image's
            pixels (single image only): the region signals are then defined.
        config: a :class:`vrp.TraceConfig`; or give its fields as keyword ``options``
            (``samples``, ``temperature``, ``top_p``, ``seed``, ``max_new_tokens``, ``rho``,
            ``rho_rule``, ``layers``, ``batch_size``, ``record_dtype``).

    An image given with a question (not an :class:`vrp.Item`) gets the id
    :func:`content_id`: its K samples are seeded from the image's pixels and the question.

    Returns:
        A :class:`Trace`, or a list of them for a list input (in order).

    Raises:
        ValueError: an unreadable image, mismatched lists, or an invalid option.
    """
    if config is not None and options:
        raise ConfigError("give config=TraceConfig(...) or keyword options, not both")
    cfg = config if config is not None else TraceConfig.from_dict(options)
    many = isinstance(image, list | tuple)
    inputs = list(image) if many else [image]
    if any(isinstance(x, Item) for x in inputs):
        if not all(isinstance(x, Item) for x in inputs):
            raise ValueError("give a list of Items or a list of images, not a mix")
        if question is not None or answers is not None or task or regions:
            raise ValueError("an Item carries its own question, answers, task and regions: pass it alone")
        items = inputs
        images = [as_image(it.image) for it in items]
    else:
        questions = _per_image(question, len(inputs), "question")
        if any(not isinstance(q, str) for q in questions):
            raise ValueError(f"a question (a str) is needed for each image, got question={question!r}")
        golds = [_golds(a) for a in (_per_image(answers, len(inputs), "answers") if many else [answers])]
        if many and regions:
            raise ValueError("regions are for a single image; give a list of Items to trace several with regions")
        regs = validate_regions([dict(r) for r in regions])
        images = [as_image(x) for x in inputs]
        items = [
            Item(id=content_id(im, q), image=str(x) if isinstance(x, str | Path) else "", question=q, answers=g,
                 task=task, regions=regs)
            for x, im, q, g in zip(inputs, images, questions, golds, strict=True)
        ]  # fmt: skip
    traces: list[Trace] = []
    for s in range(0, len(items), cfg.batch_size):
        traces += trace_batch(model, items[s : s + cfg.batch_size], images[s : s + cfg.batch_size], cfg)
    return traces if many else traces[0]
