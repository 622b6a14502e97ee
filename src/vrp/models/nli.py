"""A local natural-language-inference classifier: the judge of semantic entropy's clusters.

``vrp run --nli-model PATH`` takes a folder written by ``save_pretrained`` holding a
sequence-classification checkpoint trained on NLI (e.g. a DeBERTa fine-tuned on MNLI) and its
tokenizer. Its labels are read from the config's ``id2label``: one of them must be
"entailment" (any case; the others, usually "neutral" and "contradiction", only count as
"not entailment"). A pair ``(premise, hypothesis)`` is judged *entailment* when the
classifier's argmax is that label. Nothing is downloaded: the folder is loaded offline.

:func:`check_nli_model` reads the config and the tokenizer only (no weights), so a run can
refuse a bad path before it starts; :class:`NLIModel` loads the weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vrp.config import DEVICE
from vrp.models.base import NotAModelError

ENTAILMENT = "entailment"
BATCH_PAIRS = 64  # (premise, hypothesis) pairs per forward pass


class NotAnNLIModelError(NotAModelError):
    """The path given as the NLI model is not a local sequence-classification NLI checkpoint."""


@dataclass(frozen=True)
class NLILabels:
    """What :func:`check_nli_model` reads from an NLI checkpoint's config.

    Attributes:
        path: the checkpoint folder.
        architecture: the model class named in the config (``...ForSequenceClassification``).
        id2label: the classifier's labels, by output index.
        entailment_id: the output index of the "entailment" label.
    """

    path: Path
    architecture: str
    id2label: dict[int, str]
    entailment_id: int

    def describe(self) -> dict:
        """What a run's manifest records of the judge (JSON-ready)."""
        return {
            "path": str(self.path.resolve()),
            "architecture": self.architecture,
            "id2label": {str(k): v for k, v in self.id2label.items()},
            "entailment_id": self.entailment_id,
        }


def _fail(path: Path, what: str) -> NotAnNLIModelError:
    return NotAnNLIModelError(
        f"--nli-model {path}: {what}; it must be a local folder with a sequence-classification NLI "
        f"checkpoint and its tokenizer (save_pretrained), whose config's id2label has an '{ENTAILMENT}' label"
    )


def check_nli_model(path: str | Path) -> NLILabels:
    """Check that ``path`` is a usable NLI checkpoint without loading its weights.

    Raises:
        NotAnNLIModelError: no such folder, no readable config.json, a model that is not a
            sequence classifier, no "entailment" label, or no tokenizer; the message names the
            path and what is wrong.
    """
    p = Path(path)
    if not p.is_dir():
        raise _fail(p, "no such folder" if not p.exists() else "not a folder")
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise _fail(p, "no config.json (not a Hugging Face model folder)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(p, f"config.json is not readable JSON ({e})") from None
    archs = [a for a in cfg.get("architectures") or [] if isinstance(a, str)]
    arch = next((a for a in archs if a.endswith("ForSequenceClassification")), None)
    if arch is None:
        raise _fail(p, f"not a sequence-classification model (its config names architectures {archs or 'none'})")
    try:
        id2label = {int(k): str(v) for k, v in (cfg.get("id2label") or {}).items()}
    except (TypeError, ValueError, AttributeError):
        raise _fail(p, f"config id2label is not a mapping of class indices: {cfg.get('id2label')!r}") from None
    hits = [i for i, name in id2label.items() if name.strip().lower() == ENTAILMENT]
    if len(hits) != 1:
        what = "no" if not hits else "more than one"
        raise _fail(p, f"{what} '{ENTAILMENT}' label in its config's id2label {id2label}")
    try:
        _tokenizer(p)
    except Exception as e:  # a missing or broken tokenizer: transformers raises several kinds
        raise _fail(p, f"its tokenizer does not load ({type(e).__name__}: {e})") from None
    return NLILabels(path=p, architecture=arch, id2label=dict(sorted(id2label.items())), entailment_id=hits[0])


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


class NLIModel:
    """A loaded NLI classifier that judges batches of ``(premise, hypothesis)`` texts.

    Args:
        path: the checkpoint folder (checked with :func:`check_nli_model`).
        device: torch device string (a run's ``--device``).
        batch_pairs: pairs per forward pass.

    The weights are loaded in float32; each pair is tokenized as a text pair
    (``tokenizer(premise, hypothesis)``), truncated to the model's length limit.
    """

    def __init__(self, path: str | Path, device: str = DEVICE, batch_pairs: int = BATCH_PAIRS):
        import torch
        from transformers import AutoModelForSequenceClassification

        self.labels = check_nli_model(path)
        self.device = device
        self.batch_pairs = batch_pairs
        self.tokenizer = _tokenizer(self.labels.path)
        model = AutoModelForSequenceClassification.from_pretrained(
            self.labels.path, local_files_only=True, dtype=torch.float32
        )
        self.model = model.to(device).eval()
        limits = [getattr(model.config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        self.max_length = min(int(v) for v in limits if isinstance(v, int) and v > 0)

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """``[N]`` the argmax label index of each ``(premise, hypothesis)`` pair."""
        import torch

        out = []
        for s in range(0, len(pairs), self.batch_pairs):
            chunk = pairs[s : s + self.batch_pairs]
            enc = self.tokenizer(
                [p for p, _ in chunk], [h for _, h in chunk], padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )  # fmt: skip
            with torch.inference_mode():
                logits = self.model(**enc.to(self.device)).logits
            out.append(logits.argmax(-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def entails(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """``[N]`` whether each premise entails its hypothesis (argmax = the entailment label)."""
        return self.predict(pairs) == self.labels.entailment_id
