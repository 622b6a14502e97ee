"""Activation patching: restore one site of one layer from the clean run into a corrupted run.

For each batch: a clean forward (recording every patched site over all positions), a
corrupted forward (masked image, same token layout), then one corrupted forward per
(site, layer) with that site's output replaced by the clean one. The truth margin at the
decision position (last prompt token, first answer step) is read from each; the recovered
fraction of a site is ``mean(m_patched - m_corrupt) / mean(m_clean - m_corrupt)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vrp.interventions import edits
from vrp.interventions.runner import Batch, iter_batches, margin_of


def _margins(adapter, enc: dict, refs: list[list[int]]) -> tuple[np.ndarray, torch.Tensor]:
    with torch.no_grad():
        logits = adapter.model(**enc, logits_to_keep=1).logits[:, -1].float()  # [B, V] decision position
    lp = torch.log_softmax(logits, dim=-1).cpu().numpy()
    return np.array([margin_of(lp[b], refs[b]) for b in range(lp.shape[0])]), logits


def patch_margins(
    adapter,
    items: list,
    corrupt: Callable[[Batch], list],
    sites: list[str],
    batch_size: int,
    last_only: bool = False,
    tick: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Margins of the clean run, the corrupted run and each patched run: ``([n], [n], {site: [n]})``.

    Args:
        corrupt: batch -> its corrupted images (same size as the clean ones, so the same tokens).
        sites: named sites (``blocks.{l}.resid_post``, ``.attn_out``, ``.mlp_out``) to restore one at a time.
        last_only: restore the decision position only (else every position).
    """
    from vrp.capture.lens import reference_ids

    clean_m, corrupt_m, patched = [], [], {s: [] for s in sites}
    for batch in iter_batches(adapter, items, batch_size):
        refs = [reference_ids(adapter.tokenizer, it.answers) for it in batch.items]
        enc_c = adapter.model_inputs(batch.images, batch.prompts)
        enc_x = adapter.model_inputs(corrupt(batch), batch.prompts)
        if not torch.equal(enc_c["input_ids"], enc_x["input_ids"]):
            raise ValueError(
                "the corrupted images change the prompt's tokens; activation patching needs the same layout"
            )
        with edits.record(adapter, sites) as rec:
            m, _ = _margins(adapter, enc_c, refs)
        clean_m.append(m)
        corrupt_m.append(_margins(adapter, enc_x, refs)[0])
        for key in sites:
            with edits.patch(adapter, {key: rec.acts[key]}, last_only=last_only):
                patched[key].append(_margins(adapter, enc_x, refs)[0])
        if tick:
            tick(len(batch.items))
    return np.concatenate(clean_m), np.concatenate(corrupt_m), {k: np.concatenate(v) for k, v in patched.items()}
