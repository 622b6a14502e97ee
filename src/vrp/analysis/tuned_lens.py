"""The tuned lens (Belrose et al. 2023) for a VLM's decoder: one affine translator per residual layer.

Residual layer ``l`` (0 = embeddings, ``l`` = block ``l - 1``'s output) is read as

    lens_l(h) = unembed(norm(A_l h + b_l))

through the model's own final norm and unembedding (and its final-logit soft-capping, as the
logit lens: ``ModelAdapter.logit_lens``). ``A_l = I`` and ``b_l = 0`` is the logit lens exactly.
Each translator is trained, independently of the others, to minimize
``KL(p_final || softmax(lens_l(h_l)))`` at the decision position, ``p_final`` being the model's
own next-token distribution there. The conventions are the tuned-lens project's: the translator
is parametrized as ``h + W h + b`` with ``W`` and ``b`` starting at 0 (identity initialization),
and the optimizer's decoupled weight decay pulls ``W`` and ``b`` back to 0, i.e. the translator
toward the identity. The last residual layer's translator is the identity and is not trained: the
model's output is read there, so its KL is 0 by construction, as in tuned-lens.

Choices here (the tuned-lens project trains on a text corpus's every position with SGD; a run has
a few hundred to a few thousand decision positions): AdamW on minibatches, the epoch with the
lowest validation KL kept (early stopping with ``patience``), starting from the identity, so a
translator that never beats the logit lens on validation stays the identity.

This module is the lens itself (no run directory): :class:`TunedLens`, the differentiable
readout, the KL, and :func:`fit_translator`. :mod:`vrp.analysis.lens_run` trains and applies it
on a run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vrp.analysis.lens_config import FORMAT, LensConfig


@dataclass(frozen=True, eq=False)
class TunedLens:
    """Affine translators per residual layer: ``weight[l]`` = A_l [d, d], ``bias[l]`` = b_l [d] (float32)."""

    layers: tuple[int, ...]  # residual indices, ascending (0 = embeddings)
    weight: dict[int, np.ndarray]
    bias: dict[int, np.ndarray]

    @classmethod
    def identity(cls, layers: list[int] | tuple[int, ...], d: int) -> TunedLens:
        """Every translator the identity: the logit lens."""
        eye = np.eye(d, dtype=np.float32)
        return cls(tuple(layers), {l: eye.copy() for l in layers}, {l: np.zeros(d, np.float32) for l in layers})

    @property
    def d_model(self) -> int:
        return int(self.bias[self.layers[0]].shape[0])

    def translate(self, layer: int, h: Any) -> Any:
        """``A_l h + b_l`` for torch residuals ``h`` [..., d] (float32, on the translator's device)."""
        import torch

        a = torch.as_tensor(self.weight[layer], device=h.device)
        b = torch.as_tensor(self.bias[layer], device=h.device)
        return h @ a.T + b

    def save(self, path: str | Path) -> Path:
        """Write ``translators.safetensors`` (``weight.{l}``, ``bias.{l}``; no pickle); returns the path."""
        from safetensors.numpy import save

        from vrp.fileio import atomic_write_bytes

        arrays = {f"{k}.{l}": np.ascontiguousarray(getattr(self, k)[l], dtype=np.float32)
                  for l in self.layers for k in ("weight", "bias")}  # fmt: skip
        meta = {"format": FORMAT, "residual_layers": json.dumps(list(self.layers))}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save(arrays, metadata=meta), fsync=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TunedLens:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file (``vrp lens train`` writes it).
            ValueError: not a tuned-lens file, or a translator missing or misshapen.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tuned lens at {path}; train one with `vrp lens train --run RUN_DIR`")
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not a tuned lens written by vrp (format {meta.get('format')!r})")
            layers = tuple(int(v) for v in json.loads(meta["residual_layers"]))
            keys = set(f.keys())
            want = {f"{k}.{l}" for l in layers for k in ("weight", "bias")}
            if keys != want:
                raise ValueError(f"{path}: expected the arrays {sorted(want)}, found {sorted(keys)}")
            weight = {l: f.get_tensor(f"weight.{l}") for l in layers}
            bias = {l: f.get_tensor(f"bias.{l}") for l in layers}
        d = bias[layers[0]].shape[0]
        for l in layers:
            if weight[l].shape != (d, d) or bias[l].shape != (d,):
                raise ValueError(f"{path}: layer {l} has shapes {weight[l].shape}, {bias[l].shape}; expected d = {d}")
        return cls(layers, weight, bias)


def readout(adapter) -> Callable[[Any], Any]:
    """The logit lens as a differentiable function of residuals ``h`` [..., d] -> float32 logits
    [..., V]: the model's final norm and unembedding, then final-logit soft-capping where the
    model has it, in the model's dtype, exactly as :meth:`ModelAdapter.logit_lens` (which runs
    under ``no_grad``)."""
    import torch

    norm, unembed, cap = adapter.final_norm(), adapter.unembed(), adapter.logit_softcap
    dtype = unembed.weight.dtype

    def f(h):
        logits = unembed(norm(h.to(dtype)))
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits.float()

    return f


def kl_per_item(logp_final: Any, logits: Any) -> Any:
    """``KL(p_final || softmax(logits))`` per row, in nats (torch; ``logp_final`` are log-probabilities)."""
    import torch

    logq = torch.log_softmax(logits, dim=-1)
    return (logp_final.exp() * (logp_final - logq)).sum(-1)


def final_logprobs(read: Callable, h_last: Any, batch: int = 256) -> Any:
    """The model's next-token log-probabilities read from last-layer residuals ``h_last`` [n, d] -> [n, V]."""
    import torch

    with torch.no_grad():
        parts = [torch.log_softmax(read(h_last[s : s + batch]), dim=-1) for s in range(0, len(h_last), batch)]
    return torch.cat(parts) if parts else torch.zeros(0)


def mean_kl(read: Callable, h: Any, target: Any, weight: Any = None, bias: Any = None, batch: int = 256) -> float:
    """Mean over items of ``KL(target || lens)``, the lens reading ``h W^T + b`` (the identity when
    ``weight`` is None); ``h`` [n, d] float32, ``target`` [n, V] log-probabilities; NaN for no items."""
    import torch

    if len(h) == 0:
        return float("nan")
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(h), batch):
            x = h[s : s + batch]
            if weight is not None:
                x = x @ weight.T + bias
            total += float(kl_per_item(target[s : s + batch], read(x)).double().sum())
    return total / len(h)


@dataclass(frozen=True)
class FitResult:
    """One trained translator and how it was chosen."""

    weight: np.ndarray  # [d, d] A_l float32
    bias: np.ndarray  # [d] b_l float32
    best_epoch: int  # 0 = the identity was never beaten on validation
    epochs_run: int
    val_kl: float  # of the kept translator
    val_kl_identity: float  # the logit lens's


def fit_translator(read: Callable, h_tr: Any, target_tr: Any, h_va: Any, target_va: Any, cfg: LensConfig,
                   seed: int = 0) -> FitResult:  # fmt: skip
    """Train one translator from the identity, keeping the epoch with the lowest validation KL.

    Args:
        read: :func:`readout` of the model (its parameters are not trained).
        h_tr, h_va: ``[n, d]`` float32 torch residuals of one layer (train, validation items).
        target_tr, target_va: ``[n, V]`` the same items' final log-probabilities (:func:`final_logprobs`).
        cfg: epochs, batch size, learning rate, weight decay, patience.
        seed: seeds the minibatch order.
    """
    import torch

    d = h_tr.shape[1]
    w = torch.zeros(d, d, device=h_tr.device, requires_grad=True)  # A = I + W
    b = torch.zeros(d, device=h_tr.device, requires_grad=True)
    eye = torch.eye(d, device=h_tr.device)
    identity = mean_kl(read, h_va, target_va)
    best = (identity, 0, w.detach().clone(), b.detach().clone())
    if cfg.epochs == 0 or len(h_tr) == 0:
        return FitResult((eye + best[2]).cpu().numpy(), best[3].cpu().numpy(), 0, 0, identity, identity)
    opt = torch.optim.AdamW([w, b], lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    since, epoch = 0, 0
    for epoch in range(1, cfg.epochs + 1):
        for idx in torch.randperm(len(h_tr), generator=gen).split(cfg.batch_size):
            idx = idx.to(h_tr.device)
            x = h_tr[idx]
            loss = kl_per_item(target_tr[idx], read(x + x @ w.T + b)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val = mean_kl(read, h_va, target_va, eye + w.detach(), b.detach())
        if val < best[0]:
            best, since = (val, epoch, w.detach().clone(), b.detach().clone()), 0
        else:
            since += 1
            if since >= cfg.patience:
                break
    return FitResult((eye + best[2]).cpu().numpy(), best[3].cpu().numpy(), best[1], epoch, best[0], identity)
