"""The training options of a toy VLM (light: the CLI reads their defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vrp.config import Config


@dataclass(frozen=True)
class TrainConfig(Config):
    """One toy VLM's training recipe (``vrp world train``; the shipped ones are in
    :mod:`vrp.toys.recipes`).

    Attributes:
        arch: llava, paligemma or qwen2vl.
        seed: seed of initialisation and data.
        steps: training steps.
        schedule_steps: > 0: the learning-rate schedule and the curriculum are laid out over
            this many steps and training stops after steps (the first steps of a longer run).
        batch_size: examples per step.
        lr: peak learning rate of AdamW.
        warmup: linear warmup steps.
        weight_decay: AdamW weight decay on weight matrices.
        eval_every: steps between held-out evaluations (checkpoint choice).
        eval_images: held-out images of each evaluation.
        band: target teacher-forced accuracy band the kept checkpoint should sit in.
        threads: torch CPU threads (0 = torch's default).
        patch_weight: weight of the auxiliary per-patch colour/shape loss.
        patch: pixels per image token side.
        position_heads: also predict each token's patch row/column in the auxiliary heads.
        pos_embed_std: > 0: re-initialise the vision tower's learned position embeddings with this s.d.
        describe_positions: describe captions also name each object's image quadrant.
        attn_sup_weight: > 0: supervise decoder attention onto the named object(s)
            (:class:`vrp.toys.supervision.AttentionSupervisor`).
        attn_sup_layer: the decoder layer whose heads are supervised.
        attn_sup_tasks: the tasks whose questions' attention is supervised.
        attn_sup_heads: the head a task's union target goes to (default 0; spatial questions
            always use heads 0 and 1).
        curriculum: fraction of the schedule over which the scenes' maximum object count
            rises from 2 to the world's.
        task_weights: sampling weight of each training task.
    """

    arch: str = "llava"
    seed: int = 0
    steps: int = 6000
    schedule_steps: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.05
    eval_every: int = 250
    eval_images: int = 250
    band: tuple[float, float] = (0.72, 0.90)
    threads: int = 0
    patch_weight: float = 1.0
    patch: int = 12
    position_heads: bool = False
    pos_embed_std: float = 0.0
    describe_positions: bool = False
    attn_sup_weight: float = 0.0
    attn_sup_layer: int = 2
    attn_sup_tasks: tuple[str, ...] = ("position", "spatial", "attribute")
    attn_sup_heads: dict[str, int] = field(default_factory=dict)
    curriculum: float = 0.4
    task_weights: dict[str, float] = field(
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

    def check(self) -> None:
        self.require(
            (not self.schedule_steps or self.schedule_steps >= self.steps,
             f"schedule_steps ({self.schedule_steps}) must be 0 or at least steps ({self.steps})"),
            (min(self.steps, self.batch_size, self.eval_every) >= 1,
             f"steps, batch_size and eval_every must be >= 1, got {self.steps}, {self.batch_size}, {self.eval_every}"),
        )  # fmt: skip

    def supervised_by_task(self) -> dict[str, tuple[tuple[int, int], ...]]:
        """Task -> the ``(decoder block, query head)`` pairs its questions' attention is pushed on
        (:class:`vrp.toys.supervision.AttentionSupervisor`: spatial questions heads 0 and 1, another
        task its ``attn_sup_heads`` entry or head 0); empty without attention supervision. Saved
        beside the checkpoint as ``attention_supervision.json`` (:mod:`vrp.models.supervision`)."""
        if self.attn_sup_weight <= 0:
            return {}
        layer = self.attn_sup_layer
        return {
            t: ((layer, 0), (layer, 1)) if t == "spatial" else ((layer, self.attn_sup_heads.get(t, 0)),)
            for t in self.attn_sup_tasks
        }

    @property
    def horizon(self) -> int:
        """The number of steps the learning-rate schedule and the curriculum are laid out over."""
        return self.schedule_steps or self.steps
