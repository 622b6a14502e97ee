"""Train a toy VLM from random init on ShapesWorld, seeded (on CPU by default).

The recipe (what made all three families learn; see README "Toy models"):

- an auxiliary *describe* task (write every object, left to right) with loss on every
  caption token, mixed with the question families; without it the image pathway
  collapses and answers stay at chance;
- an auxiliary single-object *position* task ("Where is the red circle in the image?");
- attention supervision onto the objects a question names (:class:`AttentionSupervisor`),
  without which tiny decoders do not learn to bind the named object (spatial relations
  stayed at chance);
- AdamW (betas 0.9/0.98), linear warmup then cosine decay to 0.1x, weight decay on
  weight matrices only, gradient clipping at 1.0; the schedule and the object-count
  curriculum span ``steps``, or ``schedule_steps`` when a run is to stop before the end of
  its schedule;
- held-out evaluation every ``eval_every`` steps, and the checkpoint kept is the one
  whose per-task accuracies sit best inside the target band (imperfect on purpose).

Evaluation here is teacher-forced: every ShapesWorld answer is one token, so the greedy
answer is correct iff the argmax at the decision position is the gold token.
"""

from __future__ import annotations

import copy
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vrp.capture.attention import AttentionRecorder
from vrp.world.dataset import generate
from vrp.world.questions import (
    POPE_STRATEGIES,
    DatasetStats,
    Question,
    _region,
    attribute_question,
    counting_question,
    describe,
    existence_questions,
    referring_name,
    spatial_question,
)
from vrp.world.scene import Scene, WorldConfig, WorldStats, render, sample_scene

EVAL_TASKS = ("existence", "counting", "spatial", "attribute")


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "llava"
    seed: int = 0
    steps: int = 6000
    # > 0: the learning-rate schedule and the curriculum are laid out over this many steps and
    # training stops after ``steps`` (a truncated schedule: the first ``steps`` of a longer run)
    schedule_steps: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.05
    eval_every: int = 250
    eval_images: int = 250
    band: tuple[float, float] = (0.72, 0.90)
    threads: int = 0  # 0 = torch default
    patch_weight: float = 1.0  # weight of the auxiliary per-patch colour/shape loss
    patch: int = 12  # pixels per image token side
    position_heads: bool = False  # also predict each token's patch row/column in the auxiliary heads
    pos_embed_std: float = 0.0  # > 0: re-initialise the vision tower's learned position embeddings with this s.d.
    describe_positions: bool = False  # describe captions also name each object's image quadrant
    attn_sup_weight: float = 0.0  # > 0: supervise decoder attention onto the named object(s); see AttentionSupervisor
    attn_sup_layer: int = 2  # the decoder layer whose heads 0 and 1 are supervised
    attn_sup_tasks: tuple[str, ...] = ("position", "spatial", "attribute")
    # the head a task's union target goes to (default 0; spatial questions always use heads 0 and 1)
    attn_sup_heads: dict = field(default_factory=dict)
    curriculum: float = 0.4  # fraction of the schedule over which max objects rises from 2 to the world's
    task_weights: dict = field(
        default_factory=lambda: {
            "describe": 1.0,
            "single": 1.0,
            "position": 1.0,
            "existence": 3.0,
            "counting": 1.0,
            "spatial": 3.0,
            "attribute": 1.5,
        }
    )

    def __post_init__(self):
        if self.schedule_steps and self.schedule_steps < self.steps:
            raise ValueError(f"schedule_steps ({self.schedule_steps}) must be 0 or at least steps ({self.steps})")

    @property
    def horizon(self) -> int:
        """The number of steps the learning-rate schedule and the curriculum are laid out over."""
        return self.schedule_steps or self.steps


def position_question(scene: Scene, rng: np.random.Generator) -> Question | None:
    """Auxiliary: the side of the image an object is on (training only)."""
    c = scene.size / 2
    cands = []
    for o in scene.objects:
        name = referring_name(scene, o, True)
        dx, dy = o.cx - c, o.cy - c
        if name is None or max(abs(dx), abs(dy)) < 6:
            continue
        ans = ("left" if dx < 0 else "right") if abs(dx) >= abs(dy) else ("top" if dy < 0 else "bottom")
        cands.append((name, ans, o))
    if not cands:
        return None
    name, ans, o = cands[int(rng.integers(len(cands)))]
    return Question("position", f"Where is the {name} in the image?", ans, (_region(name, o),), {})


def object_patch_counts(scene: Scene, grid: int) -> np.ndarray:
    """``[n_objects, grid * grid]``: visible pixels of each object in each patch of a
    ``grid x grid`` tiling (row-major; later objects are drawn over earlier ones)."""
    from PIL import Image, ImageDraw

    from vrp.world.scene import draw_shape

    idmap = Image.new("L", (scene.size, scene.size), 0)  # pixel value = object index + 1
    draw = ImageDraw.Draw(idmap)
    for k, o in enumerate(scene.objects, start=1):
        draw_shape(draw, o, k)
    ps = scene.size // grid
    ids = np.asarray(idmap)[: grid * ps, : grid * ps].reshape(grid, ps, grid, ps).transpose(0, 2, 1, 3)
    patch = np.repeat(np.arange(grid * grid), ps * ps)
    n_cells = (len(scene.objects) + 1) * grid * grid
    counts = np.bincount(ids.reshape(-1).astype(np.int64) * grid * grid + patch, minlength=n_cells)
    return counts.reshape(-1, grid * grid)[1:]


def patch_labels(scene: Scene, grid: int, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch (colour, shape) class of a ``grid x grid`` tiling; background = last class.

    A patch takes the object covering most of its pixels, if that covers >= 25% of it.
    ``counts`` (from :func:`object_patch_counts`) is computed when not given.
    """
    from vrp.world.scene import COLOURS, SHAPES

    counts = object_patch_counts(scene, grid) if counts is None else counts
    ps = scene.size // grid
    colour = np.full(grid * grid, len(COLOURS), dtype=np.int64)
    shape = np.full(grid * grid, len(SHAPES), dtype=np.int64)
    if len(scene.objects):
        top = counts.argmax(0)
        for p in np.flatnonzero(counts[top, np.arange(grid * grid)] >= 0.25 * ps * ps):
            o = scene.objects[int(top[p])]
            colour[p] = COLOURS.index(o.colour)
            shape[p] = SHAPES.index(o.shape)
    return colour, shape


class PatchProbe:
    """Auxiliary per-patch colour / shape / row / column heads on the image-token features
    (training only).

    The features are read with a forward hook on the module that emits the image tokens
    the language model sees (the projector / merger); the heads are discarded after
    training. This stands in for the pretrained vision encoder a real VLM starts from.
    """

    def __init__(self, model, projector_path: str, hidden: int, grid: int, position: bool = True):
        import torch

        from vrp.world.scene import COLOURS, SHAPES

        self.feats = None
        self.handle = model.get_submodule(projector_path).register_forward_hook(self._hook)
        self.colour = torch.nn.Linear(hidden, len(COLOURS) + 1)
        self.shape = torch.nn.Linear(hidden, len(SHAPES) + 1)
        # Where each token sits (row, column of its patch): keeps position linearly readable
        # from the token, so an attention head that retrieves an object also retrieves where it is.
        self.row = torch.nn.Linear(hidden, grid) if position else None
        self.col = torch.nn.Linear(hidden, grid) if position else None
        self.grid = grid

    def _hook(self, module, args, output):
        self.feats = output

    def to(self, device) -> PatchProbe:
        for head in (self.colour, self.shape, self.row, self.col):
            if head is not None:
                head.to(device)
        return self

    def parameters(self):
        heads = (self.colour, self.shape, self.row, self.col)
        return [p for head in heads if head is not None for p in head.parameters()]

    def loss(self, colour_t, shape_t):
        import torch
        import torch.nn.functional as F

        f = self.feats.reshape(-1, self.feats.shape[-1])
        # token index within its image, row-major
        k = torch.arange(f.shape[0], device=f.device) % (self.grid * self.grid)
        loss = F.cross_entropy(self.colour(f), colour_t) + F.cross_entropy(self.shape(f), shape_t)
        if self.row is not None:
            loss = loss + F.cross_entropy(self.row(f), k // self.grid) + F.cross_entropy(self.col(f), k % self.grid)
        return loss


class AttentionSupervisor(AttentionRecorder):
    """Auxiliary attention supervision (training only).

    Tiny decoders trained on answers alone fail to *bind* the object a question names: they
    read where objects are but not which one was asked about (toy spatial relations
    stayed at chance; docs/experiments/2026-11-22-toy-spatial). This loss points two
    attention heads of one decoder layer at the decision position (the one that predicts
    the first answer token) onto the named objects: for a spatial question head 0 onto
    the first object and head 1 onto the second; for the other supervised tasks one head
    (0, or the task's entry in ``heads``) onto the union of the question's regions. Each
    head's attention logits over the image tokens are softmaxed (renormalised over the
    image) and pushed by cross-entropy towards the objects' visible pixel mass per
    patch.

    Query and key come from the ``vrp_capture`` attention function (post-RoPE, so the same
    code serves Llama, Gemma and Qwen2-VL's M-RoPE), while the layer's output is SDPA's.
    """

    def __init__(self, layer: int, tasks: tuple[str, ...], heads: dict[str, int] | None = None):
        super().__init__({layer})
        self.tasks = set(tasks)
        self.heads = dict(heads or {})
        self.qk: tuple | None = None

    def observe(self, layer_idx, query, key, attention_mask, scaling, softcap) -> None:
        self.qk = (query, key, scaling, softcap)

    def targets(self, batch, counts, labels, grids) -> tuple | None:
        """Index tensors (rows, heads, decision positions, image-token positions) and the
        target mass per image token, one entry per supervised (example, head)."""
        import torch

        rows, heads, dpos, toks, mass = [], [], [], [], []
        for i, ((scene, q), c) in enumerate(zip(batch, counts, strict=True)):
            if q.task not in self.tasks or not q.regions or len(grids[i]) != 1:
                continue
            idx = {tuple(o.box): k for k, o in enumerate(scene.objects)}
            objs = [idx[tuple(r["box"])] for r in q.regions]
            if q.task == "spatial":
                groups = list(enumerate([o] for o in objs[:2]))
            else:
                groups = [(self.heads.get(q.task, 0), objs)]
            d = int((labels[i] != -100).nonzero()[0]) - 1
            for head, g in groups:
                m = c[g].sum(0)
                if m.sum() > 0:
                    rows.append(i)
                    heads.append(head)
                    dpos.append(d)
                    toks.append(grids[i][0].token_index)
                    mass.append(m / m.sum())
        if not rows:
            return None
        return (
            torch.tensor(rows),
            torch.tensor(heads),
            torch.tensor(dpos),
            torch.as_tensor(np.stack(toks)),
            torch.as_tensor(np.stack(mass), dtype=torch.float32),
        )

    def attention_logits(self, rows, heads, dpos, toks):
        """``[n, image tokens]`` attention logits of (row, head) at ``dpos`` over ``toks``."""
        import torch

        query, key, scaling, softcap = self.qk
        kv = heads // (query.shape[1] // key.shape[1])  # GQA: the key head of each query head
        q = query[rows, heads, dpos].float()  # [n, d]
        k = key[rows[:, None], kv[:, None], toks].float()  # [n, t, d]
        logits = torch.einsum("nd,ntd->nt", q, k) * scaling
        return torch.tanh(logits / softcap) * softcap if softcap else logits

    def loss(self, batch, counts, labels, grids):
        """Mean cross-entropy of the supervised heads' image attention against the targets,
        or None when the batch has no supervised question."""
        import torch

        tgt = self.targets(batch, counts, labels, grids)
        if tgt is None:
            return None
        *index, mass = (t.to(self.qk[0].device) for t in tgt)
        return -(mass * torch.log_softmax(self.attention_logits(*index), -1)).sum(-1).mean()


def single_attribute_question(scene: Scene, rng: np.random.Generator) -> Question:
    """Auxiliary: existence of one attribute alone ("Is there a red object?", "Is there a circle?")."""
    from vrp.world.scene import COLOURS, SHAPES

    if rng.random() < 0.5:
        value = COLOURS[int(rng.integers(len(COLOURS)))]
        present = any(o.colour == value for o in scene.objects)
        text = f"Is there a {value} object in the image?"
    else:
        value = SHAPES[int(rng.integers(len(SHAPES)))]
        present = any(o.shape == value for o in scene.objects)
        text = f"Is there a {value} in the image?"
    return Question("single", text, "yes" if present else "no", (), {})


def sample_example(
    rng: np.random.Generator,
    task: str,
    wcfg: WorldConfig,
    wstats: WorldStats,
    dstats: DatasetStats,
    describe_positions: bool = False,
) -> tuple[Scene, Question] | None:
    scene = sample_scene(rng, wcfg, wstats)
    if task == "describe":
        q = Question("describe", "Describe the image.", describe(scene, describe_positions), (), {})
    elif task == "position":
        q = position_question(scene, rng)
    elif task == "single":
        q = single_attribute_question(scene, rng)
    elif task == "existence":
        strat = POPE_STRATEGIES[int(rng.integers(3))]
        q = existence_questions(scene, strat, dstats, rng)[int(rng.integers(2))]
    elif task == "counting":
        q = counting_question(scene)
    elif task == "spatial":
        q = spatial_question(scene, rng)
    elif task == "attribute":
        q = attribute_question(scene, rng)
    else:
        raise ValueError(task)
    return None if q is None else (scene, q)


def encode_batch(adapter, images, questions: list[str], answers: list[str]):
    """Teacher-forced batch: inputs plus labels that cover the answer tokens and EOS only."""
    import torch

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
    import torch

    tower = model.get_submodule(adapter.module_paths["vision_tower"])
    grads = [p.grad.detach().norm() for p in tower.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def per_example_loss(logits, labels):
    """Mean over examples of each example's mean next-token loss on its labelled tokens.

    A token-level mean would let a 15-token caption outweigh a 1-token answer 15:1.
    """
    import torch

    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != -100
    tok_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.clamp(min=0).reshape(-1), reduction="none"
    ).view_as(target)
    per_ex = (tok_loss * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_ex.mean()


def _decision_logits(model, enc):
    """Logits at the last non-pad position of each row (left padding)."""
    out = model(**enc)
    return out.logits[:, -1, :]


def evaluate(adapter, eval_set: list[tuple], batch_size: int = 64) -> dict[str, float]:
    """Teacher-forced first-token accuracy per task on (image, question, answer, task)."""
    import torch

    tok = adapter.tokenizer
    hits: dict[str, list[int]] = {}
    adapter.model.eval()
    with torch.no_grad():
        for s in range(0, len(eval_set), batch_size):
            chunk = eval_set[s : s + batch_size]
            enc = adapter.model_inputs([c[0] for c in chunk], [adapter.prompt(c[1]) for c in chunk])
            pred = _decision_logits(adapter.model, enc).argmax(-1).tolist()
            for (_, _, ans, task), p in zip(chunk, pred, strict=True):
                gold = tok(ans, add_special_tokens=False)["input_ids"][0]
                hits.setdefault(task, []).append(int(p == gold))
    return {t: float(np.mean(v)) for t, v in sorted(hits.items())}


def band_distance(acc: dict[str, float], band: tuple[float, float]) -> float:
    lo, hi = band
    return sum(max(0.0, lo - a) + max(0.0, a - hi) for a in acc.values())


def build_eval_set(n_images: int, seed: int, wcfg: WorldConfig) -> list[tuple]:
    data, _ = generate(n_images, seed, wcfg)
    out = []
    for sq in data:
        img = render(sq.scene, wcfg)
        out.extend((img, q.question, q.answer, q.task) for q in sq.questions)
    return out


def curriculum_world(wcfg: WorldConfig, step: int, cfg: TrainConfig) -> WorldConfig:
    """Scenes start with at most 2 objects; the cap rises to the world's over ``curriculum``."""
    from dataclasses import replace

    span = cfg.curriculum * cfg.horizon
    if span <= 0 or step >= span:
        return wcfg
    cap = 2 + (wcfg.max_objects - 2) * step / span
    return replace(wcfg, max_objects=max(wcfg.min_objects, min(wcfg.max_objects, int(cap))))


def train(
    cfg: TrainConfig,
    out: str | Path,
    wcfg: WorldConfig | None = None,
    progress=None,
    on_step=None,
    device: str = "cpu",
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
    """
    import torch

    from vrp.capture.attention import IMPL_NAME, recording, register
    from vrp.capture.engine import language_attention
    from vrp.models.base import adapter_for
    from vrp.world.toy import build_toy

    wcfg = wcfg or WorldConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, processor = build_toy(cfg.arch, seed=cfg.seed, image_size=wcfg.image_size, patch=cfg.patch)
    dev = torch.device(device)
    if cfg.pos_embed_std > 0:  # learned position embeddings of CLIP / SigLIP (Qwen2-VL's vision RoPE has none)
        for name, prm in model.named_parameters():
            if "vision" in name and "position_embedding" in name:
                torch.nn.init.normal_(prm, std=cfg.pos_embed_std)
    model.to(dev)
    cls = adapter_for(model.config.model_type)
    adapter = cls(model=model, processor=processor, path=str(out))
    rng = np.random.default_rng([cfg.seed, 42])
    wstats = WorldStats.from_config(wcfg)
    pool, _ = generate(2000, cfg.seed + 1000, wcfg)
    dstats = DatasetStats.from_scenes([p.scene for p in pool])
    eval_set = build_eval_set(cfg.eval_images, 900_000 + cfg.seed, wcfg)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.horizon - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    grid = wcfg.image_size // cfg.patch
    probe = None
    if cfg.patch_weight > 0:
        hidden = model.config.text_config.hidden_size
        probe = PatchProbe(model, adapter.module_paths["projector"], hidden, grid, cfg.position_heads)
        probe.to(dev)
        opt.add_param_group({"params": probe.parameters(), "weight_decay": 0.0})
    sup = (
        AttentionSupervisor(cfg.attn_sup_layer, cfg.attn_sup_tasks, cfg.attn_sup_heads)
        if cfg.attn_sup_weight > 0
        else None
    )
    sup_hist: list[float] = []
    names = list(cfg.task_weights)
    w = np.array([cfg.task_weights[n] for n in names], dtype=float)
    w /= w.sum()
    log: dict = {"config": {**asdict(cfg)}, "world": wcfg.to_dict(), "device": str(dev), "evals": []}
    best = (math.inf, None, None, -1)
    t0 = time.time()
    if sup is not None:
        register()
    # Supervised attention reads query/key through the vrp_capture function (SDPA output).
    with language_attention(model, IMPL_NAME) if sup is not None else nullcontext():
        for step in range(cfg.steps):
            model.train()
            batch = []
            step_wcfg = curriculum_world(wcfg, step, cfg)
            while len(batch) < cfg.batch_size:
                task = names[int(rng.choice(len(names), p=w))]
                ex = sample_example(rng, task, step_wcfg, wstats, dstats, cfg.describe_positions)
                if ex is not None:
                    batch.append(ex)
            images = [render(sc, wcfg) for sc, _ in batch]
            enc_host, labels_host = encode_batch(
                adapter, images, [q.question for _, q in batch], [q.answer for _, q in batch]
            )
            # the model's inputs on its device; grids and supervision targets from the host copies (no GPU syncs)
            enc = adapter.on_model_device(enc_host)
            labels = labels_host.to(dev)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            with recording(sup) if sup is not None else nullcontext():
                loss = per_example_loss(model(**enc).logits, labels)
            need_counts = probe is not None or sup is not None
            counts = [object_patch_counts(sc, grid) for sc, _ in batch] if need_counts else None
            if sup is not None:
                la = sup.loss(batch, counts, labels_host, adapter.image_grids(enc_host))
                sup.qk = None
                if la is not None:
                    loss = loss + cfg.attn_sup_weight * la
                    sup_hist.append(float(la.detach()))
            if probe is not None:
                pl = [patch_labels(sc, grid, c) for (sc, _), c in zip(batch, counts, strict=True)]
                colour_t = torch.as_tensor(np.concatenate([p[0] for p in pl]), device=dev)
                shape_t = torch.as_tensor(np.concatenate([p[1] for p in pl]), device=dev)
                loss = loss + cfg.patch_weight * probe.loss(colour_t, shape_t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            vision_grad = vision_grad_norm(model, adapter)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if on_step:
                on_step(step + 1)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                acc = evaluate(adapter, eval_set)
                dist = band_distance(acc, cfg.band)
                rec = {
                    "vision_grad_norm": vision_grad,
                    "step": step + 1,
                    "loss": float(loss.detach()),
                    "seconds": round(time.time() - t0, 1),
                    "acc": acc,
                    "band_distance": dist,
                }
                if sup is not None:  # mean supervision loss since the last evaluation (uniform attention: ~log 16)
                    rec["attn_sup_loss"] = float(np.mean(sup_hist)) if sup_hist else float("nan")
                    sup_hist.clear()
                log["evals"].append(rec)
                if progress:
                    progress(rec)
                if dist <= best[0]:
                    best = (dist, copy.deepcopy(model.state_dict()), acc, step + 1)
    if probe is not None:
        probe.handle.remove()
    model.load_state_dict(best[1])
    log["chosen"] = {"step": best[3], "acc": best[2], "band_distance": best[0]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "training_log.json").write_text(json.dumps(log, indent=2))
    return log
