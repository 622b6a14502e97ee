"""Logit-lens readout at the decision position, reduced at the capture boundary.

The full lens is ``[L + 1, V]`` logits per item (4 MB for a 7B model); what the truth
margin and its sub-block split need is much smaller, so this module keeps, per item and
residual layer: the logits of the reference tokens, the best non-reference token and its
logit, the lens's own argmax, and one readout direction for the MLP/attention split.

Reference tokens (``y*``): the first content token of each gold answer under the model's
tokenizer, for the gold as written and its lower-case and capitalized forms (a chat model
answers "Yes" where the gold says "yes"). The rival is the best token *outside* that set,
so two spellings of a gold answer never compete with each other; with one reference token
this is exactly SPEC §4's ``max_{y != y*}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LensReadout:
    """What the logit lens says at the decision position of one item.

    Layer axis ``L + 1``: index 0 is the embedding output, index ``i + 1`` the output of the
    ``i``-th captured decoder block (see ``ItemCapture.layers``).
    """

    ref_ids: np.ndarray  # [R] int64 reference token ids (deduplicated)
    ref_logits: np.ndarray  # [L + 1, R] float32 lens logits of the reference tokens
    rival_ids: np.ndarray  # [L + 1] int64 best non-reference token per layer
    rival_logits: np.ndarray  # [L + 1] float32 its logit
    top_ids: np.ndarray  # [L + 1] int64 the lens's argmax per layer
    # [d] float32: gradient of (logit[y*] - logit[rival]) at the last residual w.r.t. that
    # residual, i.e. the final norm's local linear map applied to W_U[y*] - W_U[rival], with
    # y* the best reference and rival the best non-reference token at the last layer.
    direction: np.ndarray | None


def reference_ids(tokenizer, golds: Sequence[str]) -> list[int]:
    """First content token id of each gold answer (and its case variants), deduplicated in order."""
    out: list[int] = []
    for gold in golds:
        text = str(gold).strip()
        for variant in dict.fromkeys((text, text.lower(), text[:1].upper() + text[1:])):
            if not variant:
                continue
            for tid in tokenizer(variant, add_special_tokens=False)["input_ids"]:
                if tokenizer.decode([tid]).strip():
                    if tid not in out:
                        out.append(int(tid))
                    break
    return out


def lens_readout(adapter, residual: np.ndarray, refs: list[int]) -> LensReadout:
    """Read the logit lens of one item's decision-position residuals ``[L + 1, d]``."""
    if not refs:
        raise ValueError("no reference token: every gold answer tokenized to whitespace only")
    logits = adapter.logit_lens(residual).float()  # [L + 1, V]
    ref_idx = torch.as_tensor(refs, device=logits.device)
    ref_logits = logits[:, ref_idx]
    masked = logits.clone()
    masked[:, ref_idx] = -torch.inf
    rival_logits, rival_ids = masked.max(dim=-1)
    best_ref = refs[int(ref_logits[-1].argmax())]
    direction = _readout_direction(adapter, residual[-1], best_ref, int(rival_ids[-1]))
    return LensReadout(
        ref_ids=np.asarray(refs, dtype=np.int64),
        ref_logits=ref_logits.cpu().numpy().astype(np.float32),
        rival_ids=rival_ids.cpu().numpy().astype(np.int64),
        rival_logits=rival_logits.cpu().numpy().astype(np.float32),
        top_ids=logits.argmax(dim=-1).cpu().numpy().astype(np.int64),
        direction=direction,
    )


def _readout_direction(adapter, h_last: np.ndarray, target: int, rival: int) -> np.ndarray:
    """d(logit[target] - logit[rival]) / d h at the last residual (before soft-capping)."""
    w_u = adapter.unembed().weight
    norm = adapter.final_norm()
    with torch.enable_grad():
        h = torch.as_tensor(np.asarray(h_last), dtype=w_u.dtype, device=w_u.device).clone().requires_grad_(True)
        diff = norm(h) @ (w_u[target] - w_u[rival]).detach()
        (grad,) = torch.autograd.grad(diff, h)
    return grad.float().cpu().numpy()
