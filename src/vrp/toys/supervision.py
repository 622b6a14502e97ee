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


def _tiling(scene: Scene, grid: int | tuple[int, int]) -> tuple[int, int, int, int]:
    """``(rows, cols, patch height, patch width)`` in pixels of ``grid`` over the scene's image
    (``grid``: tokens per side of a square tiling, or ``(rows, cols)``)."""
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    width, height = scene.dims
    return rows, cols, height // rows, width // cols


def object_patch_counts(scene: Scene, grid: int | tuple[int, int]) -> np.ndarray:
    """``[n_objects, rows * cols]``: visible pixels of each object in each patch of a
    ``grid x grid`` (or ``(rows, cols)``) tiling (row-major; later objects are drawn over earlier ones)."""
    idmap = Image.new("L", scene.dims, 0)  # pixel value = object index + 1
    draw = ImageDraw.Draw(idmap)
    for k, o in enumerate(scene.objects, start=1):
        draw_shape(draw, o, k)
    rows, cols, ph, pw = _tiling(scene, grid)
    n = rows * cols
    ids = np.asarray(idmap)[: rows * ph, : cols * pw].reshape(rows, ph, cols, pw).transpose(0, 2, 1, 3)
    patch = np.repeat(np.arange(n), ph * pw)
    n_cells = (len(scene.objects) + 1) * n
    counts = np.bincount(ids.reshape(-1).astype(np.int64) * n + patch, minlength=n_cells)
    return counts.reshape(-1, n)[1:]


def patch_labels(
    scene: Scene, grid: int | tuple[int, int], counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch (colour, shape) class of a ``grid x grid`` (or ``(rows, cols)``) tiling;
    background = last class.

    A patch takes the object covering most of its pixels, if that covers >= 25% of it.
    ``counts`` (from :func:`object_patch_counts`) is computed when not given.
    """
    counts = object_patch_counts(scene, grid) if counts is None else counts
    rows, cols, ph, pw = _tiling(scene, grid)
    n = rows * cols
    colour = np.full(n, len(COLOURS), dtype=np.int64)
    shape = np.full(n, len(SHAPES), dtype=np.int64)
    if len(scene.objects):
        top = counts.argmax(0)
        for p in np.flatnonzero(counts[top, np.arange(n)] >= 0.25 * ph * pw):
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
    The hook stays on the model until :meth:`remove` is called. ``grid`` is the most tokens
    per side of any image (the row and column heads' classes).
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

    def loss(
        self, colour_t: torch.Tensor, shape_t: torch.Tensor, grids: list[tuple[int, int]] | None = None
    ) -> torch.Tensor:
        """Summed cross-entropy of the heads on the features of the last forward pass.

        Args:
            colour_t: ``[image tokens of the batch]`` colour class per image token (from :func:`patch_labels`).
            shape_t: ``[image tokens of the batch]`` shape class per image token.
            grids: ``(rows, cols)`` of each image, in batch order; None: every image is
                ``grid x grid``.
        """
        f = self.feats.reshape(-1, self.feats.shape[-1])
        loss = F.cross_entropy(self.colour(f), colour_t) + F.cross_entropy(self.shape(f), shape_t)
        if self.row is not None:
            if grids is None:  # token index within its image, row-major
                k = torch.arange(f.shape[0], device=f.device) % (self.grid * self.grid)
                row, col = k // self.grid, k % self.grid
            else:
                k = [np.arange(r * c) for r, c in grids]
                row = torch.as_tensor(
                    np.concatenate([i // c for i, (_, c) in zip(k, grids, strict=True)]), device=f.device
                )
                col = torch.as_tensor(
                    np.concatenate([i % c for i, (_, c) in zip(k, grids, strict=True)]), device=f.device
                )
            loss = loss + F.cross_entropy(self.row(f), row) + F.cross_entropy(self.col(f), col)
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
        target mass per image token, one entry per supervised (example, head). Images of
        different token counts (a world of several sizes) pad their token positions with -1
        and their mass with 0."""
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
            if len(grids[i][0].token_index) != c.shape[1]:
                raise ValueError(
                    f"the model sees {len(grids[i][0].token_index)} image tokens but the scene's tiling has "
                    f"{c.shape[1]} patches: the image was resized or cropped (a square-only processor given "
                    "a non-square world?)"
                )
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
        width = max(len(t) for t in toks)
        if any(len(t) != width for t in toks):
            toks = [np.pad(t, (0, width - len(t)), constant_values=-1) for t in toks]
            mass = [np.pad(m, (0, width - len(m))) for m in mass]
        return (
            torch.tensor(rows),
            torch.tensor(heads),
            torch.tensor(dpos),
            torch.as_tensor(np.stack(toks)),
            torch.as_tensor(np.stack(mass), dtype=torch.float32),
        )

    def attention_logits(self, rows, heads, dpos, toks):
        """``[n, image tokens]`` attention logits of (row, head) at ``dpos`` over ``toks``
        (-inf at padding, ``toks`` -1)."""
        query, key, scaling, softcap = self.qk
        kv = heads // (query.shape[1] // key.shape[1])  # GQA: the key head of each query head
        pad = toks < 0
        q = query[rows, heads, dpos].float()  # [n, d]
        k = key[rows[:, None], kv[:, None], toks.clamp(min=0)].float()  # [n, t, d]
        logits = torch.einsum("nd,ntd->nt", q, k) * scaling
        logits = torch.tanh(logits / softcap) * softcap if softcap else logits
        return logits.masked_fill(pad, float("-inf")) if pad.any() else logits

    def loss(self, batch, counts, labels, grids):
        """Mean cross-entropy of the supervised heads' image attention against the targets,
        or None when the batch has no supervised question."""
        tgt = self.targets(batch, counts, labels, grids)
        if tgt is None:
            return None
        *index, mass = (t.to(self.qk[0].device) for t in tgt)
        logp = torch.log_softmax(self.attention_logits(*index), -1)
        if (index[-1] < 0).any():  # padding: mass 0 at log p = -inf
            logp = logp.masked_fill(index[-1] < 0, 0.0)
        return -(mass * logp).sum(-1).mean()
