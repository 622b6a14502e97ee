"""``vrp run --nli-model``: semantic entropy over clusters judged by an NLI classifier, end to
end with a tiny random-weight ``BertForSequenceClassification`` built here (nothing is
downloaded), its verdicts recomputed independently with transformers; and the clear errors of
a path that is not an NLI checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import cli_run
from vrp.cli import app
from vrp.signals.semantic import cluster_by_entailment, nli_text, semantic_consistency, semantic_entropy

LABELS = {0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"}
ARGS = ("--data", "shapesworld:4", "--samples", "3")


def tiny_nli(path: Path, id2label: dict[int, str] = LABELS, seed: int = 0) -> Path:
    """A 2-layer BERT sequence classifier with random weights and a word-level tokenizer over
    ShapesWorld's vocabulary, saved to ``path``. The weights are drawn wide
    (``initializer_range`` 1.0) so that the verdicts differ between pairs: with the default
    0.02 a random model gives every pair the same label."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from vrp.toys.build import world_vocab

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {t: i for i, t in enumerate(specials + [w for w in dict.fromkeys(world_vocab()) if w not in specials])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        model_max_length=128, model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )  # fmt: skip
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, initializer_range=1.0, pad_token_id=0,
        id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )  # fmt: skip
    torch.manual_seed(seed)
    BertForSequenceClassification(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def nli_run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("nli")
    model = tiny_nli(tmp / "nli")
    cli_run(tmp / "run", *ARGS, "--nli-model", str(model))
    return tmp / "run", model


def _judge(model_dir: Path):
    """The checkpoint's verdicts, recomputed here with transformers alone: the premise and the
    hypothesis are "question answer" texts, tokenized as a pair; entailment = argmax label."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    entail = {v.lower(): k for k, v in model.config.id2label.items()}["entailment"]
    verdicts: list[bool] = []

    def entails(premise: str, hypothesis: str) -> bool:
        with torch.no_grad():
            logits = model(**tok(premise, hypothesis, return_tensors="pt")).logits
        verdicts.append(int(logits.argmax(-1)) == entail)
        return verdicts[-1]

    return entails, verdicts


def test_the_samples_are_clustered_by_the_nli_model(nli_run):
    run, model_dir = nli_run
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["semantic_clustering"] == f"nli:{model_dir.resolve()}"
    assert manifest["nli_model"]["entailment_id"] == 0 and manifest["nli_model"]["weight_files"] == [
        "model.safetensors"
    ]
    assert "nli_model_content_sha256" in manifest["identity"]
    rows = pq.read_table(run / "items.parquet").to_pylist()
    assert len(rows) > 0
    entails, verdicts = _judge(model_dir)
    for r in rows:  # every item: the stored values are the pure functions over the recomputed verdicts
        assert math.isfinite(r["semantic_entropy"]) and math.isfinite(r["semantic_consistency"])
        labels = cluster_by_entailment(
            r["samples"], lambda a, b, q=r["question"]: entails(nli_text(q, a), nli_text(q, b))
        )
        assert r["semantic_entropy"] == pytest.approx(semantic_entropy(labels), abs=1e-12)
        assert r["semantic_consistency"] == pytest.approx(semantic_consistency(labels), abs=1e-12)
    # the judge was asked, and said both (a random model that says one thing would test little)
    assert True in verdicts and False in verdicts


def test_without_nli_the_canonical_answers_are_the_clusters(tmp_path):
    cli_run(tmp_path / "run", *ARGS)
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["semantic_clustering"] == "canonical"
    t = pq.read_table(tmp_path / "run" / "items.parquet")
    np.testing.assert_array_equal(t.column("semantic_entropy").to_numpy(), t.column("answer_entropy").to_numpy())
    np.testing.assert_array_equal(t.column("semantic_consistency").to_numpy(), t.column("self_consistency").to_numpy())


def _refused(tmp_path: Path, nli: Path, *extra: str) -> str:
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--answer-only", "--out", str(out), *ARGS, "--nli-model", str(nli), *extra])
    assert res.exit_code == 2, res.output
    assert not (out / "items.parquet").exists() and not (out / "manifest.json").exists()  # refused before the run
    return " ".join(res.output.split())  # rich wraps long lines


def test_a_missing_path_is_a_clear_error(tmp_path):
    msg = _refused(tmp_path, tmp_path / "no-such-nli")
    assert "no-such-nli" in msg and "no such folder" in msg


def test_a_model_that_is_not_a_sequence_classifier_is_a_clear_error(tmp_path):
    from vrp.models.loading import resolve_model_path

    toy = resolve_model_path("toy-llava")  # an image-text-to-text model
    msg = _refused(tmp_path, toy)
    assert toy.name in msg and "not a sequence-classification model" in msg and "ForConditionalGeneration" in msg


def test_a_classifier_without_an_entailment_label_is_a_clear_error(tmp_path):
    model = tiny_nli(tmp_path / "sentiment", id2label={0: "NEGATIVE", 1: "POSITIVE"})
    msg = _refused(tmp_path, model)
    assert "sentiment" in msg and "no 'entailment' label" in msg and "POSITIVE" in msg


def test_nli_needs_samples(tmp_path):
    msg = _refused(tmp_path, tmp_path, "--samples", "0")
    assert "nli_model" in msg and "samples >= 1" in msg


def test_the_judges_weights_are_part_of_the_runs_identity(tmp_path):
    model, out = tiny_nli(tmp_path / "nli"), tmp_path / "run"
    args = ("--limit", "2", "--nli-model", str(model))
    cli_run(out, *ARGS, *args)
    cli_run(out, *ARGS, *args)  # the same judge: resumes (nothing left to do)
    tiny_nli(model, seed=1)  # same path and config, other weights
    res = CliRunner().invoke(app, ["run", "--answer-only", "--model", "toy-llava", "--out", str(out), *ARGS, *args])
    assert res.exit_code == 2 and "the NLI model's weights differ" in " ".join(res.output.split()), res.output
