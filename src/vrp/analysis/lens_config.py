"""Options of ``vrp lens train`` and the files of a run's tuned lens (light: the CLI, the
predictor tables and the report read them without loading torch).

``RUN_DIR/lens/tuned/`` holds

    translators.safetensors  per residual layer l: ``weight.{l}`` [d, d] (A_l) and ``bias.{l}`` [d]
                             (b_l), float32; the lens reads layer l as unembed(norm(A_l h + b_l))
    lens.json                the config, the residual layers, the split used, the model, the
                             versions, and per layer the train / val / test KL of the tuned lens
                             and of the logit lens
    margin.parquet           id, split, and the tuned-lens truth margin ``margin@{l}`` per residual layer
    signals.parquet          id and the derived signals ``tuned_margin_*`` (catalog.TUNED_LENS_SIGNALS)
"""

from __future__ import annotations

from dataclasses import dataclass

from vrp.config import DEVICE, Config

TUNED_DIR = "lens/tuned"  # relative to the run directory
TRANSLATORS_FILE = "translators.safetensors"
LENS_JSON = "lens.json"
MARGIN_FILE = "margin.parquet"
SIGNALS_FILE = "signals.parquet"
FORMAT = "vrp-tuned-lens-1"


def margin_column(layer: int) -> str:
    """The column of ``margin.parquet`` holding residual layer ``layer``'s tuned-lens margin."""
    return f"margin@{layer}"


@dataclass(frozen=True)
class LensConfig(Config):
    """Options of ``vrp lens train``.

    Attributes:
        epochs: most passes over the training items per translator (0 = no training: every
            translator stays the identity, which is the logit lens).
        batch_size: training items per optimizer step.
        lr: AdamW learning rate.
        weight_decay: AdamW's decoupled weight decay, which pulls each translator back toward the
            identity (it decays A_l - I and b_l).
        patience: epochs without a lower validation KL before a translator stops; the translator
            of the epoch with the lowest validation KL is kept (the identity if none beats it).
        seed: seed of the minibatch order.
        device: torch device of the model's final norm and unembedding and of the translators.
        model: the run's model when it has moved (default: the one its manifest names); its
            identity must be the run's.
    """

    epochs: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 30
    seed: int = 0
    device: str = DEVICE
    model: str | None = None

    def check(self) -> None:
        self.require(
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
        )
