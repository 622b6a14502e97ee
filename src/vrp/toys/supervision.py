"""Training-only supervision of the toy VLMs: per-patch targets, the patch probe and the
attention supervisor. None of it is saved with the model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from vrp.capture.attention import AttentionRecorder
from vrp.world.scene import COLOURS, SHAPES, Scene, draw_shape


def object_patch_counts(scene: Scene, grid: int) -> np.ndarray:
    """``[n_objects, grid * grid]``: visible pixels of each object in each patch of a
    ``grid x grid`` tiling (row-major; later objects are drawn over earlier ones)."""
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
    The hook stays on the model until :meth:`remove` is called.
    """

    def __init__(self, model, projector_path: str, hidden: int, grid: int, position: bool = True):
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

    def remove(self) -> None:
        """Remove the forward hook from the model and drop the last features."""
        self.handle.remove()
        self.feats = None

    def to(self, device) -> PatchProbe:
        """Move the heads to ``device``; returns self."""
        for head in (self.colour, self.shape, self.row, self.col):
            if head is not None:
                head.to(device)
        return self

    def parameters(self) -> list[torch.nn.Parameter]:
        """The heads' parameters (for the optimizer)."""
        heads = (self.colour, self.shape, self.row, self.col)
        return [p for head in heads if head is not None for p in head.parameters()]

    def loss(self, colour_t: torch.Tensor, shape_t: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of the heads on the features of the last forward pass.

        Args:
            colour_t: ``[batch * grid * grid]`` colour class per image token (from :func:`patch_labels`).
            shape_t: ``[batch * grid * grid]`` shape class per image token.
        """
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
        """Keep the supervised layer's post-RoPE query and key of the current forward pass."""
        self.qk = (query, key, scaling, softcap)

    def targets(self, batch, counts, labels, grids) -> tuple | None:
        """Index tensors (rows, heads, decision positions, image-token positions) and the
        target mass per image token, one entry per supervised (example, head)."""
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
        query, key, scaling, softcap = self.qk
        kv = heads // (query.shape[1] // key.shape[1])  # GQA: the key head of each query head
        q = query[rows, heads, dpos].float()  # [n, d]
        k = key[rows[:, None], kv[:, None], toks].float()  # [n, t, d]
        logits = torch.einsum("nd,ntd->nt", q, k) * scaling
        return torch.tanh(logits / softcap) * softcap if softcap else logits

    def loss(self, batch, counts, labels, grids):
        """Mean cross-entropy of the supervised heads' image attention against the targets,
        or None when the batch has no supervised question."""
        tgt = self.targets(batch, counts, labels, grids)
        if tgt is None:
            return None
        *index, mass = (t.to(self.qk[0].device) for t in tgt)
        return -(mass * torch.log_softmax(self.attention_logits(*index), -1)).sum(-1).mean()
