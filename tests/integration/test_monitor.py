"""The reliability monitor end to end: export from a probed toy-llava run, attach, ask, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.helpers import cli_run
from vrp.cli import app
from vrp.monitor import Monitor, MonitorError

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # a 130-item toy run

# The run stores residuals as float16 and the monitor rounds the live residual the same way.
# In the run's own batches the live residual equals the stored one bit for bit; what is left is
# float32 summation order (the offline probe evaluates all layers in one einsum): ~2e-6 relative.
RTOL_SAME_BATCH = 1e-5
# Other batch compositions change the float32 residual at the 1e-7 level (padding); after float16
# rounding it is the same unless a unit sits on a rounding boundary, where one unit moves by one
# float16 ulp: on this probe at most 1.5e-3 in the logit, so at most 4e-4 in p.
ATOL_OTHER_BATCH = 1e-3


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    from vrp.analysis.config import ProbeConfig
    from vrp.analysis.probing import train_probes

    out = tmp_path_factory.mktemp("mon") / "run"
    cli_run(out, "--data", "shapesworld:30", "--samples", "0", "--max-new-tokens", "4", "--seed", "5")
    train_probes(out, ProbeConfig(stacked_k=2, mlp_hidden=8, trees=5, max_iter=300))
    return out


@pytest.fixture(scope="module")
def exported(probed, tmp_path_factory):
    mdir = tmp_path_factory.mktemp("monitor") / "m"
    res = CliRunner().invoke(app, ["monitor", "export", "--run", str(probed), "--out", str(mdir)])
    assert res.exit_code == 0, res.output
    assert "chosen on validation" in res.output
    return mdir


@pytest.fixture(scope="module")
def adapter():
    from vrp.models import load_adapter

    return load_adapter("toy-llava")


@pytest.fixture(scope="module")
def items(probed):
    return pq.read_table(probed / "items.parquet").to_pandas()


@pytest.fixture(scope="module")
def offline(probed, exported):
    """The dense probe's predict_proba on the stored activations, per item id."""
    from vrp.analysis.probing import load_probe_data
    from vrp.probes.io import load_probe

    info = json.loads((exported / "monitor.json").read_text())
    data = load_probe_data(probed)
    p = load_probe(probed / "probes" / "probe_dense").predict_proba_layers(data["X"])[:, info["probe"]["layer_index"]]
    return dict(zip(data["ids"], p, strict=True))


def test_export_document(probed, exported):
    info = json.loads((exported / "monitor.json").read_text())
    manifest = json.loads((probed / "manifest.json").read_text())
    entry = json.loads((probed / "probes" / "summary.json").read_text())["probes"]["probe_dense"]
    assert info["model"]["sha256"] == manifest["model"]["sha256"] and info["model"]["content_sha256"]
    assert (info["model"]["d_model"], info["model"]["n_layers"], info["model"]["dtype"]) == (128, 4, "float32")
    assert info["probe"]["residual_layer"] == entry["residual_layer"] and info["probe"]["position"] == "decision"
    assert info["metrics"]["val"]["auroc"] == pytest.approx(entry["val_auroc"])
    assert info["metrics"]["test"]["auroc"] == pytest.approx(entry["test_auroc"])
    lo, hi = info["metrics"]["test"]["ci95"]
    assert lo <= info["metrics"]["test"]["auroc"] <= hi
    t = info["threshold"]
    assert (t["rule"], t["target"], t["chosen_on"]) == ("target_risk", 0.1, "val")
    assert t["val"]["risk"] <= 0.1 and 0 < t["val"]["coverage"] <= 1
    # the threshold reproduces from the validation predictions
    preds = pq.read_table(probed / "probes" / "predictions.parquet").to_pandas()
    val = preds[preds["split"] == "val"]
    kept = val["probe_dense"] >= t["value"]
    assert kept.mean() == pytest.approx(t["val"]["coverage"])
    assert info["generation"] == {**info["generation"], "max_new_tokens": 4, "batch_size": 16, "do_sample": False}


def test_p_correct_equals_the_offline_prediction_and_the_text_the_runs(exported, adapter, items, offline):
    m = Monitor.load(exported).attach(adapter)
    first = items.iloc[:64]  # the run's first four batches of 16, recomposed exactly
    answers = m.ask_many(list(first["image"]), list(first["question"]))  # batch size: the run's
    p = np.array([a.p_correct for a in answers])
    np.testing.assert_allclose(p, [offline[i] for i in first["id"]], rtol=RTOL_SAME_BATCH)
    assert [a.text for a in answers] == list(first["answer"])
    assert all(a.token_ids and a.threshold == m.threshold for a in answers)


def test_batched_equals_one_at_a_time(exported, adapter, items, offline):
    m = Monitor.load(exported).attach(adapter)
    pick = items.iloc[[0, 3, 7, 12, 21, 40]]  # questions of different lengths: left padding in the batch
    lengths = {len(adapter.tokenizer(adapter.prompt(q))["input_ids"]) for q in pick["question"]}
    assert len(lengths) > 1
    batched = m.ask_many(list(pick["image"]), list(pick["question"]))
    single = [m.ask(im, q) for im, q in zip(pick["image"], pick["question"], strict=True)]
    assert [a.text for a in single] == [a.text for a in batched] == list(pick["answer"])
    assert [a.token_ids for a in single] == [a.token_ids for a in batched]
    np.testing.assert_allclose([a.p_correct for a in single], [a.p_correct for a in batched], atol=ATOL_OTHER_BATCH)
    np.testing.assert_allclose([a.p_correct for a in single], [offline[i] for i in pick["id"]], atol=ATOL_OTHER_BATCH)


def test_abstention_follows_the_threshold(exported, adapter, items):
    m = Monitor.load(exported).attach(adapter)
    sub = items.iloc[:24]
    p = np.array([a.p_correct for a in m.ask_many(list(sub["image"]), list(sub["question"]))])
    t = float(np.median(p))
    m2 = Monitor.load(exported, threshold=t).attach(adapter)
    answers = m2.ask_many(list(sub["image"]), list(sub["question"]))
    assert [a.abstain for a in answers] == [a.p_correct < t for a in answers]
    assert 0 < sum(a.abstain for a in answers) < len(answers)
    assert m.threshold == json.loads((exported / "monitor.json").read_text())["threshold"]["value"]


def test_identity_mismatch_is_refused_unless_forced(exported, tmp_path, items):
    from vrp.models import load_adapter
    from vrp.models.loading import resolve_model_path
    from vrp.toys.build import build_toy

    m = Monitor.load(exported)
    changed = tmp_path / "changed"
    shutil.copytree(resolve_model_path("toy-llava"), changed)
    (changed / "config.json").write_text((changed / "config.json").read_text() + "\n")
    ad = load_adapter(str(changed))
    with pytest.raises(MonitorError) as e:
        m.attach(ad.model, ad.processor)
    msg = str(e.value)
    assert "model identity mismatch" in msg and m.info["model"]["sha256"] in msg and "force=True" in msg
    assert m.attach(ad.model, ad.processor, force=True).ask(items["image"][0], items["question"][0]).text
    # same config, names and sizes, other weights: the run's hash agrees, the content hash does not
    rand = tmp_path / "random"
    model, processor = build_toy("llava", seed=1)
    model.save_pretrained(rand)
    processor.save_pretrained(rand)
    ad = load_adapter(str(rand))
    with pytest.raises(MonitorError, match="model weights mismatch"):
        Monitor.load(exported).attach(ad)


def test_incompatible_models_are_refused_even_forced(exported, random_toy_dirs):
    import torch

    from vrp.models import load_adapter

    with pytest.raises(MonitorError, match="trained on a llava model, this one is paligemma"):
        Monitor.load(exported).attach(load_adapter(random_toy_dirs["paligemma"]), force=True)
    ad = load_adapter("toy-llava")
    ad.model.model.language_model.layers = ad.model.model.language_model.layers[:3]
    with pytest.raises(MonitorError, match="4 decoder layers; this model has d_model 128 and 3 layers"):
        Monitor.load(exported).attach(ad, force=True)
    with pytest.raises(MonitorError, match="trained on a float32 model, this one runs in bfloat16"):
        Monitor.load(exported).attach(load_adapter("toy-llava", dtype=torch.bfloat16))
    with pytest.raises(MonitorError, match="not attached"):
        Monitor.load(exported).ask("x.png", "q")


@pytest.mark.parametrize("arch", ["llava", "paligemma", "qwen2vl"])
def test_every_family_reads_the_capture_residual(random_toy_dirs, tmp_path, arch):
    """On each family the monitor's prefill tap reads what the capture engine records as the
    decision-position residual (the probe's training input), at the embedding and the last layer."""
    from vrp.capture.engine import CaptureConfig, capture_generate
    from vrp.models import load_adapter
    from vrp.monitor.files import write_monitor
    from vrp.monitor.identity import content_sha256, model_sha256
    from vrp.world.dataset import generate
    from vrp.world.scene import WorldConfig, render

    ad = load_adapter(random_toy_dirs[arch])
    d, n = ad.text_config.hidden_size, len(ad.decoder_layers())
    data, _ = generate(3, seed=2)
    images = [render(x.scene, WorldConfig()) for x in data]
    questions = [x.questions[i].question for i, x in enumerate(data)]
    caps = capture_generate(ad, images, [ad.prompt(q) for q in questions], CaptureConfig(max_new_tokens=4))
    rng = np.random.default_rng(0)
    arrays = {"coef": rng.normal(size=d) * 0.3, "mean": rng.normal(size=d) * 0.1, "scale": np.ones(d),
              "intercept": np.zeros(1)}  # fmt: skip
    tok = ad.tokenizer
    for layer in (0, n):
        doc = {
            "model": {"model_type": ad.model.config.model_type, "sha256": model_sha256(ad.path), "d_model": d,
                      "n_layers": n, "dtype": "float32", "name": arch, "content_sha256": content_sha256(ad.path)},
            "generation": {"max_new_tokens": 4, "batch_size": 3},
            "probe": {"residual_layer": layer, "input_dtype": "float16"},
            "threshold": {"value": 0.5},
        }  # fmt: skip
        m = Monitor.load(write_monitor(tmp_path / f"m{layer}", arrays, doc)).attach(ad)
        answers = m.ask_many(images, questions)
        want = m.p_correct(np.stack([c.residual[0, layer] for c in caps]))
        np.testing.assert_allclose([a.p_correct for a in answers], want, rtol=1e-6)
        texts = [tok.decode([i for i in c.answer_ids if i != tok.eos_token_id], skip_special_tokens=True).strip()
                 for c in caps]  # fmt: skip
        assert [a.text for a in answers] == texts
        if layer == 0:  # the embedding of the same last prompt token: one value for every item
            assert len({a.p_correct for a in answers}) == 1


# ---- CLI ----------------------------------------------------------------------------------


def test_cli_ask_single(exported, items, adapter, offline):
    res = CliRunner().invoke(
        app, ["ask", "--monitor", str(exported), "--image", items["image"][0], items["question"][0]]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))
    assert out["answer"] == items["answer"][0]
    assert out["p_correct"] == pytest.approx(offline[items["id"][0]], abs=ATOL_OTHER_BATCH)
    assert out["abstain"] == (out["p_correct"] < Monitor.load(exported).threshold)
    res = CliRunner().invoke(app, ["ask", "--monitor", str(exported), "--image", "/nonexistent.png", "q"])
    assert res.exit_code == 2 and "image file not found" in res.output
    res = CliRunner().invoke(app, ["ask", "--monitor", str(exported), "q"])
    assert res.exit_code == 2 and "single mode needs --image" in res.output


def test_cli_ask_batch(exported, probed, items, offline, tmp_path):
    src = [json.loads(line) for line in (probed / "data" / "items.jsonl").read_text().splitlines()][:5]
    folder = probed / "data"
    lines = [json.dumps(r) for r in src[:3]]  # full generic items: answered and scored
    lines.append(json.dumps({"id": "bare", "image": src[3]["image"], "question": src[3]["question"]}))
    lines.append("{not json")
    lines.append(json.dumps({"id": "noimage", "image": "images/missing.png", "question": "q"}))
    lines.append(json.dumps({"id": src[0]["id"], "image": src[0]["image"], "question": "dup"}))
    lines.append(json.dumps({"id": "escape", "image": "../../etc/passwd", "question": "q"}))
    lines.append(json.dumps({"id": "noq", "image": src[4]["image"]}))
    batch = folder / "ask_batch.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    out = tmp_path / "answers.jsonl"
    res = CliRunner().invoke(app, ["ask", "--monitor", str(exported), "--batch", str(batch), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in src[:3]] + ["bare"]
    by_id = items.set_index("id")
    for r in rows[:3]:
        assert r["answer"] == by_id.loc[r["id"], "answer"] and r["correct"] == by_id.loc[r["id"], "correct"]
        assert r["p_correct"] == pytest.approx(offline[r["id"]], abs=ATOL_OTHER_BATCH)
        assert set(r) == {"id", "answer", "p_correct", "abstain", "predicted_consistency", "score", "correct"}
    assert set(rows[3]) == {"id", "answer", "p_correct", "abstain", "predicted_consistency"}
    assert all(r["predicted_consistency"] is None for r in rows)  # a run without samples: no consistency head
    text = " ".join(res.output.split())
    for reason in ("ask_batch.jsonl:5", "image file not found", "duplicate id", "escapes the dataset folder",
                   "'question'", "answered 4", "skipped 5"):  # fmt: skip
        assert reason in text, reason


def test_cli_errors_are_clear(exported, probed, tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    blob = bytearray((bad / "monitor.safetensors").read_bytes())
    blob[-1] ^= 1
    (bad / "monitor.safetensors").write_bytes(bytes(blob))
    res = runner.invoke(app, ["ask", "--monitor", str(bad), "--image", "x.png", "q"])
    assert res.exit_code == 2 and "is corrupted" in res.output and "monitor.safetensors" in res.output
    (bad / "monitor.json").unlink()
    res = runner.invoke(app, ["ask", "--monitor", str(bad), "--image", "x.png", "q"])
    assert res.exit_code == 2 and "monitor.json is missing" in " ".join(res.output.split())
    # a run whose probes are missing
    bare = tmp_path / "bare_run"
    bare.mkdir()
    for name in ("manifest.json", "items.parquet"):
        shutil.copy(probed / name, bare / name)
    res = runner.invoke(app, ["monitor", "export", "--run", str(bare), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and f"vrp probe --run {bare}" in " ".join(res.output.split())
    res = runner.invoke(app, ["monitor", "export", "--run", str(probed), "--out", str(tmp_path / "m"),
                              "--probe", "probe_mlp"])  # fmt: skip
    assert res.exit_code == 2 and "probe must be one of probe_dense, probe_sparse" in res.output
    res = runner.invoke(app, ["monitor", "export", "--run", str(probed), "--out", str(tmp_path / "m"),
                              "--target-coverage", "0.5", "--probe", "probe_sparse"])  # fmt: skip
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "m" / "monitor.json").read_text())
    assert info["threshold"]["rule"] == "target_coverage" and info["threshold"]["val"]["coverage"] >= 0.5
    assert info["source"]["probe"] == "probe_sparse"
