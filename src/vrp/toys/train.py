"""Train a toy VLM from random init on ShapesWorld, seeded (on CPU by default).

The recipe (what made all three families learn; see docs/toys.md):

- an auxiliary *describe* task (write every object, left to right) with loss on every
  caption token, mixed with the question families; without it the image pathway
  collapses and answers stay at chance (:mod:`vrp.toys.tasks`);
- an auxiliary single-object *position* task ("Where is the red circle in the image?");
- attention supervision onto the objects a question names
  (:class:`~vrp.toys.supervision.AttentionSupervisor`), without which tiny decoders do not
  learn to bind the named object (spatial relations stayed at chance);
- AdamW (betas 0.9/0.98), linear warmup then cosine decay to 0.1x, weight decay on
  weight matrices only, gradient clipping at 1.0; the schedule and the object-count
  curriculum span ``steps``, or ``schedule_steps`` when a run is to stop before the end of
  its schedule;
- held-out evaluation every ``eval_every`` steps, and the checkpoint kept is the one
  whose per-task accuracies sit best inside the target band (imperfect on purpose).

Evaluation here is teacher-forced (:mod:`vrp.toys.forcing`): every ShapesWorld answer is
one token, so the greedy answer is correct iff the argmax at the decision position is the
gold token.

:func:`train` is the loop; its parts, in the order they run: :func:`build_model`,
:func:`prepare_data`, :func:`make_optimizer` (with :func:`learning_rate`),
:func:`auxiliaries`, then per step :func:`sample_batch` and :func:`train_step`,
:func:`evaluate_and_keep` and :func:`eval_record` every ``eval_every`` steps, and :func:`save_model` at the end
(with the supervised heads' record, ``attention_supervision.json``).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from vrp.capture.attention import IMPL_NAME, recording, register
from vrp.capture.engine import language_attention
from vrp.config import DEVICE
from vrp.models.base import ModelAdapter, adapter_for
from vrp.models.supervision import supervision_record, write_supervision
from vrp.toys.build import build_toy
from vrp.toys.config import TrainConfig
from vrp.toys.forcing import band_distance, build_eval_set, encode_batch, evaluate, per_example_loss, vision_grad_norm
from vrp.toys.supervision import AttentionSupervisor, PatchProbe, object_patch_counts, patch_labels
from vrp.toys.tasks import sample_example
from vrp.world.dataset import generate
from vrp.world.questions import DatasetStats, Question
from vrp.world.scene import Scene, WorldConfig, WorldStats, render


def curriculum_world(wcfg: WorldConfig, step: int, cfg: TrainConfig) -> WorldConfig:
    """Scenes start with at most 2 objects; the cap rises to the world's over ``curriculum``."""
    span = cfg.curriculum * cfg.horizon
    if span <= 0 or step >= span:
        return wcfg
    cap = 2 + (wcfg.max_objects - 2) * step / span
    return replace(wcfg, max_objects=max(wcfg.min_objects, min(wcfg.max_objects, int(cap))))


@dataclass
class Checkpoint:
    """The evaluation whose accuracies sat best inside the band so far, with its weights.

    Attributes:
        step: the training step (1-based) it was taken after.
        acc: teacher-forced accuracy per task on the held-out set.
        band_distance: :func:`band_distance` of ``acc`` (0 when every task is in the band).
        state_dict: a deep copy of the model's weights at ``step``.
    """

    step: int
    acc: dict[str, float]
    band_distance: float
    state_dict: dict = field(repr=False)

    def summary(self) -> dict:
        """The log's ``chosen`` record: step, accuracy per task and band distance."""
        return {"step": self.step, "acc": self.acc, "band_distance": self.band_distance}


@dataclass
class TrainingData:
    """What training draws its examples from, and the held-out set it is evaluated on.

    Attributes:
        rng: the generator every training scene, task and question is drawn from.
        wstats: statistics of the training world.
        dstats: dataset statistics for the existence questions' negatives.
        eval_set: held-out ``(image, question, answer, task)`` tuples (see :func:`build_eval_set`).
    """

    rng: np.random.Generator
    wstats: WorldStats
    dstats: DatasetStats
    eval_set: list[tuple]


@dataclass
class Auxiliaries:
    """The training-only losses added to next-token prediction.

    Attributes:
        grid: image tokens per side (``image_size // patch``; with several image sizes, the
            most tokens along any side).
        probe: per-patch heads on the image tokens (None when ``patch_weight`` is 0).
        supervisor: attention supervision (None when ``attn_sup_weight`` is 0).
    """

    grid: int
    probe: PatchProbe | None = None
    supervisor: AttentionSupervisor | None = None


@dataclass
class StepLosses:
    """The loss parts of one training step (floats, for the log).

    Attributes:
        total: the loss that was back-propagated (answer loss plus weighted auxiliaries).
        attn_sup: the attention-supervision loss, None when the batch had no supervised question.
        vision_grad_norm: see :func:`vision_grad_norm`, before clipping.
    """

    total: float
    attn_sup: float | None
    vision_grad_norm: float


def build_model(cfg: TrainConfig, wcfg: WorldConfig, out: str | Path, device: str) -> ModelAdapter:
    """Seed torch, build the random-init toy of ``cfg.arch`` on ``device`` and wrap it in its adapter.

    With ``cfg.pos_embed_std > 0`` the vision tower's learned position embeddings (CLIP /
    SigLIP; Qwen2-VL's vision RoPE has none) are re-initialised with that s.d.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, processor = build_toy(cfg.arch, seed=cfg.seed, image_size=wcfg.image_size, patch=cfg.patch)
    if cfg.pos_embed_std > 0:
        for name, prm in model.named_parameters():
            if "vision" in name and "position_embedding" in name:
                torch.nn.init.normal_(prm, std=cfg.pos_embed_std)
    model.to(torch.device(device))
    return adapter_for(model.config.model_type)(model=model, processor=processor, path=str(out))


def prepare_data(cfg: TrainConfig, wcfg: WorldConfig) -> TrainingData:
    """The training generator, the world and dataset statistics, and the held-out set (all seeded by ``cfg.seed``)."""
    rng = np.random.default_rng([cfg.seed, 42])
    wstats = WorldStats.from_config(wcfg)
    pool, _ = generate(2000, cfg.seed + 1000, wcfg)
    dstats = DatasetStats.from_scenes([p.scene for p in pool])
    eval_set = build_eval_set(cfg.eval_images, 900_000 + cfg.seed, wcfg)
    return TrainingData(rng, wstats, dstats, eval_set)


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.98) with weight decay on the weight matrices only (not embeddings, norms, biases)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``cfg.warmup`` steps, then cosine decay to 0.1x at ``cfg.horizon``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.horizon - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


@contextmanager
def auxiliaries(adapter: ModelAdapter, cfg: TrainConfig, wcfg: WorldConfig, opt) -> Iterator[Auxiliaries]:
    """The auxiliary losses ``cfg`` asks for, attached to the model while the block runs.

    The patch heads join ``opt`` (no weight decay) and read the image tokens through a
    forward hook, removed on the way out, raising or not. Attention supervision needs the
    ``vrp_capture`` attention function, registered here.
    """
    sides = [wcfg.image_size] if not wcfg.sizes else [d for wh in wcfg.sizes for d in wh]
    if any(d % cfg.patch for d in sides):
        raise ValueError(
            f"every image side of the world ({sorted(set(sides))}) must be a multiple of patch {cfg.patch}"
        )
    aux = Auxiliaries(grid=max(sides) // cfg.patch)
    try:
        if cfg.patch_weight > 0:
            hidden = adapter.model.config.text_config.hidden_size
            paths = adapter.module_paths
            aux.probe = PatchProbe(adapter.model, paths["projector"], hidden, aux.grid, cfg.position_heads)
            aux.probe.to(adapter.model.device)
            opt.add_param_group({"params": aux.probe.parameters(), "weight_decay": 0.0})
        if cfg.attn_sup_weight > 0:
            aux.supervisor = AttentionSupervisor(cfg.attn_sup_layer, cfg.attn_sup_tasks, cfg.attn_sup_heads)
            register()
        yield aux
    finally:
        if aux.probe is not None:
            aux.probe.remove()


def sample_batch(data: TrainingData, cfg: TrainConfig, wcfg: WorldConfig) -> list[tuple[Scene, Question]]:
    """``cfg.batch_size`` fresh examples, each task drawn with probability proportional to its weight.

    Args:
        data: supplies the generator and the statistics.
        cfg: the batch size, task weights and caption style.
        wcfg: the world of this step (see :func:`curriculum_world`).
    """
    names = list(cfg.task_weights)
    w = np.array([cfg.task_weights[n] for n in names], dtype=float)
    w /= w.sum()
    batch: list[tuple[Scene, Question]] = []
    while len(batch) < cfg.batch_size:
        task = names[int(data.rng.choice(len(names), p=w))]
        ex = sample_example(data.rng, task, wcfg, data.wstats, data.dstats, cfg.describe_positions)
        if ex is not None:
            batch.append(ex)
    return batch


def train_step(
    adapter: ModelAdapter,
    opt,
    batch: list[tuple[Scene, Question]],
    lr: float,
    cfg: TrainConfig,
    wcfg: WorldConfig,
    aux: Auxiliaries,
) -> StepLosses:
    """One optimizer step on ``batch`` at learning rate ``lr``; returns the loss parts.

    The loss is :func:`per_example_loss` on the answers, plus ``cfg.attn_sup_weight`` x the
    attention supervision and ``cfg.patch_weight`` x the patch probe's loss; gradients are
    clipped to norm 1.0.
    """
    model, dev = adapter.model, adapter.model.device
    model.train()
    images = [render(sc, wcfg) for sc, _ in batch]
    enc_host, labels_host = encode_batch(adapter, images, [q.question for _, q in batch], [q.answer for _, q in batch])
    # the model's inputs on its device; grids and supervision targets from the host copies (no GPU syncs)
    enc = adapter.on_model_device(enc_host)
    labels = labels_host.to(dev)
    for g in opt.param_groups:
        g["lr"] = lr
    sup, probe = aux.supervisor, aux.probe
    with recording(sup) if sup is not None else nullcontext():
        loss = per_example_loss(model(**enc).logits, labels)
    need_counts = probe is not None or sup is not None
    # (rows, cols) of each image's token grid: the square grid, or its own for a world of several sizes
    grids = [(sc.dims[1] // cfg.patch, sc.dims[0] // cfg.patch) for sc, _ in batch] if wcfg.sizes else None
    tilings = grids or [aux.grid] * len(batch)
    counts = [object_patch_counts(sc, g) for (sc, _), g in zip(batch, tilings, strict=True)] if need_counts else None
    attn_sup = None
    if sup is not None:
        la = sup.loss(batch, counts, labels_host, adapter.image_grids(enc_host, [im.size for im in images]))
        sup.qk = None
        if la is not None:
            loss = loss + cfg.attn_sup_weight * la
            attn_sup = float(la.detach())
    if probe is not None:
        pl = [patch_labels(sc, g, c) for (sc, _), g, c in zip(batch, tilings, counts, strict=True)]
        colour_t = torch.as_tensor(np.concatenate([p[0] for p in pl]), device=dev)
        shape_t = torch.as_tensor(np.concatenate([p[1] for p in pl]), device=dev)
        loss = loss + cfg.patch_weight * probe.loss(colour_t, shape_t, grids)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    vision_grad = vision_grad_norm(model, adapter)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return StepLosses(float(loss.detach()), attn_sup, vision_grad)


def evaluate_and_keep(
    adapter: ModelAdapter, eval_set: list[tuple], band: tuple[float, float], step: int, best: Checkpoint | None
) -> tuple[dict[str, float], float, Checkpoint]:
    """Evaluate after ``step`` and keep the weights if they sit at least as close to ``band`` as ``best``.

    Returns:
        The accuracy per task, its band distance, and the best checkpoint so far (a new one
        holding a copy of the current weights, or ``best``; ties go to the later step).
    """
    acc = evaluate(adapter, eval_set)
    dist = band_distance(acc, band)
    if best is None or dist <= best.band_distance:
        best = Checkpoint(step, acc, dist, copy.deepcopy(adapter.model.state_dict()))
    return acc, dist, best


def eval_record(
    step: int, losses: StepLosses, acc: dict[str, float], dist: float, seconds: float, sup_hist: list[float] | None
) -> dict:
    """One entry of the log's ``evals``.

    Args:
        step: the training step just taken.
        losses: that step's loss parts.
        acc: the held-out accuracy per task, and ``dist`` its band distance.
        seconds: time since training started.
        sup_hist: the attention-supervision losses since the last evaluation (None without
            supervision); their mean is recorded (uniform attention: ~log 16).
    """
    rec = {
        "vision_grad_norm": losses.vision_grad_norm,
        "step": step,
        "loss": losses.total,
        "seconds": round(seconds, 1),
        "acc": acc,
        "band_distance": dist,
    }
    if sup_hist is not None:
        rec["attn_sup_loss"] = float(np.mean(sup_hist)) if sup_hist else float("nan")
    return rec


def save_model(adapter: ModelAdapter, out: str | Path, log: dict) -> None:
    """Save the model and processor with ``save_pretrained``, and ``log`` as ``training_log.json``, in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    adapter.model.save_pretrained(out)
    adapter.processor.save_pretrained(out)
    (out / "training_log.json").write_text(json.dumps(log, indent=2))


def train(
    cfg: TrainConfig,
    out: str | Path,
    wcfg: WorldConfig | None = None,
    progress=None,
    on_step=None,
    device: str = DEVICE,
) -> dict:
    """Train one toy model; save the best-in-band checkpoint to ``out``; return the log.

    Args:
        cfg: the recipe.
        out: folder to save the model, processor and ``training_log.json``.
        wcfg: the world to train on.
        progress: called with each evaluation record.
        on_step: called with the step number after every step.
        device: torch device of the model (the recipe is tuned and shipped on CPU; a GPU
            runs the same recipe with different floating-point results). Recorded in the log.

    Returns:
        ``{"config", "world", "device", "evals": [one record per evaluation], "chosen": the
        kept evaluation's step, acc and band_distance}``, as written to ``training_log.json``.
    """
    wcfg = wcfg or WorldConfig()
    adapter = build_model(cfg, wcfg, out, device)
    data = prepare_data(cfg, wcfg)
    opt = make_optimizer(adapter.model, cfg)
    log: dict = {"config": {**cfg.to_dict()}, "world": wcfg.to_dict(), "device": str(torch.device(device)), "evals": []}
    best: Checkpoint | None = None
    with auxiliaries(adapter, cfg, wcfg, opt) as aux:
        sup = aux.supervisor
        sup_hist: list[float] = []  # supervision losses since the last evaluation
        t0 = time.time()
        # Supervised attention reads query/key through the vrp_capture function (SDPA output);
        # language_attention restores the model's own implementation on the way out, raising or not.
        with language_attention(adapter.model, IMPL_NAME) if sup is not None else nullcontext():
            for step in range(cfg.steps):
                batch = sample_batch(data, cfg, curriculum_world(wcfg, step, cfg))
                losses = train_step(adapter, opt, batch, learning_rate(step, cfg), cfg, wcfg, aux)
                if losses.attn_sup is not None:
                    sup_hist.append(losses.attn_sup)
                if on_step:
                    on_step(step + 1)
                if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                    acc, dist, best = evaluate_and_keep(adapter, data.eval_set, cfg.band, step + 1, best)
                    rec = eval_record(
                        step + 1, losses, acc, dist, time.time() - t0, sup_hist if sup is not None else None
                    )
                    sup_hist.clear()
                    log["evals"].append(rec)
                    if progress:
                        progress(rec)
    adapter.model.load_state_dict(best.state_dict)
    log["chosen"] = best.summary()
    save_model(adapter, out, log)
    write_supervision(out, supervision_record(cfg.supervised_by_task(), cfg.attn_sup_weight))
    return log
