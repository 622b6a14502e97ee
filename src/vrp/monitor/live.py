"""A trained probe attached to a live model: every answer comes with p(correct).

The probe reads the residual stream during the answer's own greedy ``generate`` call: a hook
on the named site of the probe's residual index (``embed`` for 0, ``blocks.{l}.resid_post``
for ``l + 1``; :mod:`vrp.models.sites`) keeps ``hidden[:, -1]`` of the first forward call, the
prefill, whose last position is the decision position (the last prompt token; prompts are
left-padded, so it is the last column for every row). Decode steps pass the hook untouched.
No second forward pass. Hooks exist only while :meth:`Monitor.ask_many` runs. A monitor with a
consistency head (exported from a run with samples) reads its layer's residual in the same
prefill (one hook per distinct layer) and returns the predicted self-consistency beside
p_correct: no sampling at ask time.

The residual is rounded to float16 before the probe, as the run stored it for training, so
the monitor's p_correct is the probe's ``predict_proba`` on the stored activation: in the
run's own batches the live residual rounds to the stored one bit for bit, and what differs is
float32 summation order (~1e-6 relative). A row's p_correct does not depend on the other rows
of its batch beyond the model's own batch effects on the residual.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from vrp.capture.records import answer_end, decode_answer
from vrp.data.images import as_image
from vrp.models.sites import hooks, residual_site
from vrp.monitor.files import MonitorError, read_monitor


@dataclass(frozen=True)
class Answer:
    """The model's greedy answer and the monitor's verdict on it.

    Attributes:
        text: the answer, decoded as ``vrp run`` decodes it (EOS dropped, stripped); given
            even when ``abstain`` is true.
        p_correct: the probe's probability that the answer is correct.
        abstain: ``p_correct < threshold``: do not trust this answer.
        threshold: the threshold it was compared with.
        token_ids: the generated token ids up to and including the first EOS.
        predicted_consistency: the consistency head's prediction of the answer's self-consistency
            S_SC (the share of K sampled answers that would agree), from the same greedy pass;
            None when the monitor has no consistency head.
    """

    text: str
    p_correct: float
    abstain: bool
    threshold: float
    token_ids: tuple[int, ...] = ()
    predicted_consistency: float | None = None


class Monitor:
    """A reliability monitor: load it, attach it to its model, ask questions.

    Attributes:
        directory: where it was loaded from.
        info: the content of ``monitor.json``.
        threshold: answers with ``p_correct`` below it are flagged ``abstain``.
        probe: the one-layer :class:`vrp.probes.linear.LayerwiseLogistic` it applies.
        consistency_head: the one-layer :class:`vrp.probes.consistency.ConsistencyHead` it applies
            for ``predicted_consistency``, or None (a monitor exported without one).
    """

    def __init__(self, arrays: dict[str, np.ndarray], info: dict, directory: Path | None = None):
        from vrp.probes.linear import LayerwiseLogistic

        self.directory = directory
        self.info = info
        self.threshold = float(info["threshold"]["value"])
        p = info["probe"]
        self.residual_layer = int(p["residual_layer"])
        self.probe = LayerwiseLogistic(penalty=p.get("penalty", "l2"), C=p.get("C") or 1.0, layer=0)
        self.probe.coef_ = arrays["coef"][None].astype(np.float32)  # [1, d]
        self.probe.intercept_ = arrays["intercept"].astype(np.float32)  # [1]
        self.probe.mean_ = arrays["mean"][None].astype(np.float32)
        self.probe.scale_ = arrays["scale"][None].astype(np.float32)
        self.probe.classes_ = np.array([0, 1])
        self._coef, self._mean, self._scale, self._intercept = (
            torch.from_numpy(np.ascontiguousarray(getattr(self.probe, k)[0], dtype=np.float32))
            for k in ("coef_", "mean_", "scale_", "intercept_")
        )
        self._round = {"float16": torch.float16, "float32": torch.float32}.get(p["input_dtype"])
        if self._round is None:
            raise MonitorError(f"monitor.json: unsupported probe.input_dtype {p['input_dtype']!r}")
        self.consistency_head, self.head_layer, self._head = None, None, None
        if "consistency_head" in info:
            self._load_head(arrays, info["consistency_head"])
        self.adapter: Any = None

    def _load_head(self, arrays: dict[str, np.ndarray], h: dict) -> None:
        from vrp.probes.consistency import ConsistencyHead

        self.head_layer = int(h["residual_layer"])
        head = ConsistencyHead(C=h.get("C") or 1.0, layer=0)
        head.coef_ = arrays["consistency.coef"][None].astype(np.float32)  # [1, d]
        head.intercept_ = arrays["consistency.intercept"].astype(np.float32)  # [1]
        head.mean_ = arrays["consistency.mean"][None].astype(np.float32)
        head.scale_ = arrays["consistency.scale"][None].astype(np.float32)
        self.consistency_head = head
        self._head = tuple(
            torch.from_numpy(np.ascontiguousarray(getattr(head, k)[0], dtype=np.float32))
            for k in ("coef_", "mean_", "scale_", "intercept_")
        )
        self._head_round = {"float16": torch.float16, "float32": torch.float32}.get(h["input_dtype"])
        if self._head_round is None:
            raise MonitorError(f"monitor.json: unsupported consistency_head.input_dtype {h['input_dtype']!r}")

    @classmethod
    def load(cls, directory: str | Path, threshold: float | None = None) -> Monitor:
        """Load a monitor directory written by ``vrp monitor export``.

        Args:
            directory: the monitor directory.
            threshold: override the exported abstention threshold.

        Raises:
            MonitorError: a missing, corrupted or incompatible file (the message names it).
        """
        arrays, info = read_monitor(directory)
        monitor = cls(arrays, info, Path(directory))
        if threshold is not None:
            monitor.threshold = float(threshold)
        return monitor

    # ---- attaching ----------------------------------------------------------------------

    def attach(self, model: Any, processor: Any = None, force: bool = False) -> Monitor:
        """Attach to a loaded model (HF model + processor, or a :class:`vrp.models.ModelAdapter`).

        Checks that the model is the one the probe was trained on: its identity hash, computed
        as ``vrp run`` computes it (config.json and weight files of the folder it was loaded
        from), the sampled content hash of its weight files (:mod:`vrp.monitor.identity`),
        its dtype, and its width and depth. ``force=True`` accepts a different hash or
        dtype; a different model type, width or depth is always refused (the probe cannot be
        applied). Returns ``self``.

        Raises:
            MonitorError: the model does not match (both values named).
        """
        from vrp.models.base import ModelAdapter, adapter_for

        if isinstance(model, ModelAdapter):
            adapter = model
        else:
            if processor is None:
                raise MonitorError("attach(model, processor): the processor is required with a bare HF model")
            mt = getattr(model.config, "model_type", None)
            adapter = adapter_for(mt)(model=model, processor=processor, path=str(getattr(model, "name_or_path", "")))
            adapter.check_modules()
        want = self.info["model"]
        mt = adapter.model.config.model_type
        if mt != want["model_type"]:
            raise MonitorError(f"the monitor was trained on a {want['model_type']} model, this one is {mt}")
        d, n = int(adapter.text_config.hidden_size), adapter.n_blocks
        if (d, n) != (want["d_model"], want["n_layers"]):
            raise MonitorError(
                f"the monitor needs d_model {want['d_model']} and {want['n_layers']} decoder layers; "
                f"this model has d_model {d} and {n} layers (force=True cannot override this)"
            )
        problems = [p for p in (self._identity_problem(adapter), self._dtype_problem(adapter)) if p]
        if problems and not force:
            raise MonitorError("; ".join(problems) + ". Pass force=True (CLI: --force) to attach anyway.")
        self.adapter = adapter
        return self

    def _identity_problem(self, adapter) -> str | None:
        from vrp.runs.rundir import model_identity

        want = self.info["model"]
        path = Path(adapter.path) if adapter.path else None
        if path is None or not (path / "config.json").is_file():
            return (
                f"cannot verify the model's identity: it was not loaded from a local model folder "
                f"(name_or_path {adapter.path!r}); the monitor expects model sha256 {want['sha256']}"
            )
        ident = model_identity(path)  # both hashes in one read of the folder
        got = ident["sha256"]
        if got != want["sha256"]:
            return (
                f"model identity mismatch: the monitor was trained on model sha256 {want['sha256']} "
                f"({want.get('name')}), the model in {path} has sha256 {got}"
            )
        if want.get("content_sha256") and (got := ident["content_sha256"]) != want["content_sha256"]:
            return (
                f"model weights mismatch: the model in {path} has the run's config and file sizes but other "
                f"weights (content sha256 {got}, the monitor expects {want['content_sha256']})"
            )
        return None

    def _dtype_problem(self, adapter) -> str | None:
        want = self.info["model"]["dtype"]
        got = str(adapter.model.dtype).removeprefix("torch.")
        if got != want:
            return f"the probe was trained on a {want} model, this one runs in {got} (p_correct would drift)"
        return None

    @property
    def attached(self) -> bool:
        return self.adapter is not None

    # ---- asking -------------------------------------------------------------------------

    def p_correct(self, residuals) -> np.ndarray:
        """p_correct [n] from decision-position residuals [n, d] of the probe's layer.

        The residuals are rounded as the run stored them (``probe.input_dtype``), then the
        arithmetic of :meth:`LayerwiseLogistic.predict_proba`: float32 standardization and dot
        product, float64 sigmoid. It agrees with ``self.probe.predict_proba(x)[:, 1]`` (x the
        rounded residuals [n, d]) up to float32 summation order (~1e-6 relative).
        """
        return _linear_sigmoid(residuals, self._round, self._coef, self._mean, self._scale, self._intercept)

    def predicted_consistency(self, residuals) -> np.ndarray:
        """Predicted self-consistency [n] from decision-position residuals [n, d] of the head's layer.

        The arithmetic of :meth:`p_correct` with the head's arrays: equal to
        ``self.consistency_head.predict(x)`` (x the rounded residuals) up to float32 summation order.

        Raises:
            MonitorError: the monitor has no consistency head.
        """
        if self._head is None:
            raise MonitorError("this monitor has no consistency head (export it from a run made with --samples K)")
        return _linear_sigmoid(residuals, self._head_round, *self._head)

    def ask(self, image, question: str) -> Answer:
        """Answer one question about one image (a PIL image or a path)."""
        return self.ask_many([image], [question])[0]

    def ask_many(self, images: list, questions: list[str], batch_size: int | None = None) -> list[Answer]:
        """Answer many (image, question) pairs, ``batch_size`` per generate call (left padding).

        Args:
            images: PIL images or paths, one per question.
            questions: the questions.
            batch_size: rows per generate call (default: the run's batch size).

        Returns:
            One :class:`Answer` per question, in order.

        The hooks live on the model for the duration of each generate call: do not ask through
        two monitors (or threads) on the same model object at the same time.
        """
        if self.adapter is None:
            raise MonitorError("the monitor is not attached: call monitor.attach(model, processor) first")
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        images = [as_image(im) for im in images]  # RGB, as `vrp run` opens every file
        bs = batch_size or int(self.info["generation"]["batch_size"])
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {bs}")
        out: list[Answer] = []
        for s in range(0, len(images), bs):
            out.extend(self._answer(images[s : s + bs], questions[s : s + bs]))
        return out

    def _answer(self, images: list, questions: list[str]) -> list[Answer]:
        ad = self.adapter
        model, tok = ad.model, ad.tokenizer
        enc = ad.model_inputs(images, [ad.prompt(q) for q in questions])
        layers = dict.fromkeys([self.residual_layer] + ([] if self.head_layer is None else [self.head_layer]))
        kept: dict[int, torch.Tensor] = {}  # per residual layer, the prefill's last position: the decision position

        def keep_prefill(layer: int):
            def keep(h: torch.Tensor) -> None:
                if layer not in kept:
                    kept[layer] = h[:, -1, :].detach()

            return keep

        taps = {residual_site(layer): keep_prefill(layer) for layer in layers}  # one hook per distinct layer
        with torch.no_grad(), hooks(ad, taps):
            seq = model.generate(
                **enc,
                max_new_tokens=int(self.info["generation"]["max_new_tokens"]),
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        for layer in layers:
            if layer not in kept or kept[layer].shape[0] != len(questions):
                raise RuntimeError(f"the monitor's residual layer {layer} was not reached during prefill")
        p = self.p_correct(kept[self.residual_layer]).tolist()
        sc = [None] * len(p) if self.head_layer is None else self.predicted_consistency(kept[self.head_layer]).tolist()
        gen = seq[:, enc["input_ids"].shape[1] :].tolist()
        answers = []
        for ids, pc, s in zip(gen, p, sc, strict=True):
            ids = ids[: min(answer_end(ids, ad.stop_token_ids) + 1, len(ids))]  # up to the first stop token
            text = decode_answer(tok, ids, ad.stop_token_ids)  # as vrp run decodes
            answers.append(Answer(text, pc, not pc >= self.threshold, self.threshold, tuple(ids), s))
        return answers

    def __repr__(self) -> str:
        m = self.info["model"]
        state = "attached" if self.attached else "not attached"
        return (
            f"Monitor({m.get('name')!r} {m['model_type']}, residual layer {self.residual_layer}, "
            + ("" if self.head_layer is None else f"consistency head at residual layer {self.head_layer}, ")
            + f"threshold {self.threshold:.4g}, {state})"
        )


def _linear_sigmoid(residuals, rounding, coef, mean, scale, intercept) -> np.ndarray:
    """``sigmoid(((round(h) - mean) / scale) . coef + intercept)`` [n] for residuals [n, d].

    Float32 standardization and dot product, float64 sigmoid: the arithmetic of the offline
    probes' predictions on the rounded residual.
    """
    h = torch.as_tensor(residuals).detach().to("cpu", torch.float32)  # [n, d]
    x = h.to(rounding).to(torch.float32)
    # an elementwise product summed per row (not a matmul, whose kernels may treat rows of a
    # batch differently): a row's value does not depend on the other rows of its batch
    logits = (((x - mean) / scale) * coef).sum(-1) + intercept  # [n] float32
    return expit(logits.numpy().astype(np.float64))  # scipy's elementwise loop, as the probe's
