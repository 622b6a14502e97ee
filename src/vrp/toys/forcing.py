"""Teacher forcing for the toy VLMs: labelled batches, the per-example loss, and the held-out
first-token evaluation training keeps its checkpoint by.

Every ShapesWorld answer is one token, so the greedy answer is correct iff the argmax at the
decision position is the gold token: :func:`evaluate` needs one forward pass, no generation.
"""

from __future__ import annotations

import numpy as np
import torch

from vrp.world.dataset import generate
from vrp.world.scene import WorldConfig, render


def encode_batch(adapter, images, questions: list[str], answers: list[str]):
    """Teacher-forced batch: inputs plus labels that cover the answer tokens and EOS only."""
    tok = adapter.tokenizer
    prompts = [adapter.prompt(q) for q in questions]
    if adapter.family == "paligemma":
        tok.padding_side = "right"
        enc = dict(adapter.processor(images=images, text=prompts, suffix=answers, return_tensors="pt", padding=True))
        labels = enc.pop("labels")
        labels = torch.as_tensor(labels)
        labels[enc["attention_mask"] == 0] = -100
        return enc, labels
    full = [p + adapter.answer_suffix(a) for p, a in zip(prompts, answers, strict=True)]
    enc = adapter.encode(images, full, padding_side="right")
    ids = enc["input_ids"]
    labels = torch.full_like(ids, -100)
    lengths = enc["attention_mask"].sum(1)
    for i, a in enumerate(answers):
        n = len(tok(a, add_special_tokens=False)["input_ids"]) + 1  # + EOS
        L = int(lengths[i])
        labels[i, L - n : L] = ids[i, L - n : L]
    return enc, labels


def vision_grad_norm(model, adapter) -> float:
    """L2 norm of the gradient reaching the vision tower (collapses to ~0 when the image
    pathway dies; logged at every evaluation)."""
    tower = model.get_submodule(adapter.module_paths["vision_tower"])
    grads = [p.grad.detach().norm() for p in tower.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def per_example_loss(logits, labels):
    """Mean over examples of each example's mean next-token loss on its labelled tokens.

    A token-level mean would let a 15-token caption outweigh a 1-token answer 15:1.
    """
    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != -100
    tok_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.clamp(min=0).reshape(-1), reduction="none"
    ).view_as(target)
    per_ex = (tok_loss * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_ex.mean()


def evaluate(adapter, eval_set: list[tuple], batch_size: int = 64) -> dict[str, float]:
    """Teacher-forced first-token accuracy per task on (image, question, answer, task)."""
    tok = adapter.tokenizer
    hits: dict[str, list[int]] = {}
    adapter.model.eval()
    with torch.no_grad():
        for s in range(0, len(eval_set), batch_size):
            chunk = eval_set[s : s + batch_size]
            enc = adapter.model_inputs([c[0] for c in chunk], [adapter.prompt(c[1]) for c in chunk])
            # logits at the last position of each row (left padding): the decision position
            pred = adapter.model(**enc).logits[:, -1, :].argmax(-1).tolist()
            for (_, _, ans, task), p in zip(chunk, pred, strict=True):
                gold = tok(ans, add_special_tokens=False)["input_ids"][0]
                hits.setdefault(task, []).append(int(p == gold))
    return {t: float(np.mean(v)) for t, v in sorted(hits.items())}


def band_distance(acc: dict[str, float], band: tuple[float, float]) -> float:
    """Summed distance of each accuracy from ``band`` (0 when all are inside it)."""
    lo, hi = band
    return sum(max(0.0, lo - a) + max(0.0, a - hi) for a in acc.values())


def build_eval_set(n_images: int, seed: int, wcfg: WorldConfig) -> list[tuple]:
    """Held-out ``(image, question, answer, task)`` tuples of ``n_images`` ShapesWorld images."""
    data, _ = generate(n_images, seed, wcfg)
    out = []
    for sq in data:
        img = render(sq.scene, wcfg)
        out.extend((img, q.question, q.answer, q.task) for q in sq.questions)
    return out
