"""`vrp run --data FORMAT:SPEC` end to end for every benchmark format (tiny fixtures, random-weight model)."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import bomb_png
from vrp.cli import app
from vrp.data.benchmarks.summary import official_metrics_of_run
from vrp.data.scoring import CORRECT_THRESHOLD, score_generic

runner = CliRunner()


def img(path: Path, color=(10, 200, 30), fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path, format=fmt)
    return path


def dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def jsonl(path: Path, recs: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))
    return path


# Each builder writes a tiny benchmark under d and returns
# (spec, ids expected answered, task, ids expected to fail at load, ids expected to fail at image decode).
Built = tuple[str, list[str], str, set[str], set[str]]


def build_pope(d: Path) -> Built:
    coco = d / "coco"
    img(coco / "COCO_val2014_000000000001.jpg", fmt="JPEG")
    img(coco / "COCO_val2014_000000000002.jpg", (200, 0, 0), fmt="JPEG")
    bomb_png(coco / "bomb.png", 14_000)  # 196 M pixels declared in a tiny file: refused when opened
    good = img(coco / "trunc.png").read_bytes()
    (coco / "trunc.png").write_bytes(good[: len(good) // 2])
    recs = [
        {"question_id": 1, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a dog?", "label": "yes"},
        {"question_id": 2, "image": "COCO_val2014_000000000002.jpg", "text": "Is there a cat?", "label": "no"},
        {"question_id": 3, "image": "missing.jpg", "text": "Is there a cow?", "label": "no"},
        {"question_id": 4, "image": "bomb.png", "text": "Is there a car?", "label": "no"},
        {"question_id": 5, "image": "trunc.png", "text": "Is there a bus?", "label": "yes"},
    ]
    path = jsonl(d / "coco_pope_random.json", recs)
    return f"pope:{path}@{coco}", ["1", "2"], "pope", {"3"}, {"4", "5"}


def build_pope_parquet(d: Path) -> Built:
    d.mkdir(parents=True)
    buf = BytesIO()
    Image.new("RGB", (16, 16), (0, 0, 250)).save(buf, format="PNG")
    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "question_id": ["1", "2", "1"],
            "question": ["Is there a dog?", "Is there a cat?", "Is there a dog?"],
            "answer": ["yes", "no", "no"],
            "image": pa.array([{"bytes": buf.getvalue(), "path": "a.png"}] * 3, type=image_t),
            "category": ["adversarial", "adversarial", "popular"],
        }
    )
    pq.write_table(table, d / "pope_test.parquet")
    return f"pope:{d / 'pope_test.parquet'}#adversarial", ["adversarial-1", "adversarial-2"], "pope", set(), set()


def build_vqav2(d: Path) -> Built:
    img(d / "val2014" / "COCO_val2014_000000000007.jpg", fmt="JPEG")
    human = [{"answer": a, "answer_id": i} for i, a in enumerate(["2"] * 5 + ["two"] * 2 + ["3"] * 3)]
    qs = [
        {"image_id": 7, "question": "How many dogs?", "question_id": 70},
        {"image_id": 7, "question": "Is it red?", "question_id": 71},
        {"image_id": 8, "question": "What?", "question_id": 80},
    ]
    anns = [
        {"question_id": 70, "image_id": 7, "answers": human, "answer_type": "number"},
        {"question_id": 71, "image_id": 7, "answers": [{"answer": "yes"}] * 10, "answer_type": "yes/no"},
        {"question_id": 80, "image_id": 8, "answers": human, "answer_type": "other"},
    ]
    q = dump(d / "q.json", {"data_subtype": "val2014", "questions": qs})
    a = dump(d / "a.json", {"annotations": anns})
    return f"vqav2:{q}+{a}@{d / 'val2014'}", ["70", "71"], "vqav2", {"80"}, set()


def build_textvqa(d: Path) -> Built:
    img(d / "train_images" / "f00d.jpg", fmt="JPEG")
    data = [
        {"question": "what brand?", "image_id": "f00d", "question_id": 5, "answers": ["nokia"] * 10},
        {"question": "what number?", "image_id": "f00d", "question_id": 6, "answers": ["7"] * 8 + ["seven"] * 2},
    ]
    path = dump(d / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": data})
    return f"textvqa:{path}@{d / 'train_images'}", ["5", "6"], "textvqa", set(), set()


def build_counting(d: Path) -> Built:
    img(d / "imgs" / "s1.png")
    recs = [
        {"image_id": "s1", "question": "How many circles are there?", "answer": 2},
        {"image_id": "s1", "question": "How many squares are there?", "answer": "zero"},
        {"image_id": "s9", "question": "How many?", "answer": 1},
    ]
    return f"counting:{dump(d / 'count.json', recs)}@{d / 'imgs'}", ["0", "1"], "counting", {"2"}, set()


def build_spatial(d: Path) -> Built:
    img(d / "s1.png")
    recs = [
        {"image_id": "s1.png", "question": "Is the circle left or right of the square?", "answer": "left", "id": "a"},
        {"image_id": "s1.png", "question": "Is the circle above or below the square?", "answer": "above", "id": "b"},
    ]
    return f"spatial:{jsonl(d / 'spatial.jsonl', recs)}", ["a", "b"], "spatial", set(), set()


def build_amber(d: Path) -> Built:
    img(d / "image" / "AMBER_1.jpg", fmt="JPEG")
    anns = [
        {"id": 1, "type": "generative", "truth": ["sky"], "hallu": ["dog"]},
        {"id": 1005, "type": "discriminative-hallucination", "truth": "yes"},
        {"id": 1006, "type": "discriminative-attribute-state", "truth": "no"},
    ]
    qs = [
        {"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."},
        {"id": 1005, "image": "AMBER_1.jpg", "query": "Is there a forest in this image?"},
        {"id": 1006, "image": "AMBER_1.jpg", "query": "Is the sky gloomy in this image?"},
    ]
    q, a = dump(d / "query_all.json", qs), dump(d / "annotations.json", anns)
    return f"amber:{q}+{a}@{d / 'image'}", ["1005", "1006"], "amber", set(), set()


def build_hallusionbench(d: Path) -> Built:
    img(d / "hallusion_bench" / "VD" / "illusion" / "0_0.png")
    base = {"category": "VD", "subcategory": "illusion", "visual_input": "1", "set_id": "0", "figure_id": "0"}
    recs = [
        {**base, "question_id": "0", "question": "Is the right circle larger?", "gt_answer": "0",
         "filename": "./hallusion_bench/VD/illusion/0_0.png"},
        {**base, "question_id": "1", "question": "Are the circles the same size?", "gt_answer": "1",
         "filename": "./hallusion_bench/VD/illusion/0_0.png"},
        {**base, "question_id": "2", "question": "Is it?", "gt_answer": "1", "filename": "../../../etc/passwd"},
    ]  # fmt: skip
    path = dump(d / "HallusionBench.json", recs)
    return f"hallusionbench:{path}", ["VD_illusion_0_0_0", "VD_illusion_0_0_1"], "hallusionbench", {None}, set()


def build_llava_bench(d: Path) -> Built:
    img(d / "images" / "001.jpg", fmt="JPEG")
    jsonl(
        d / "questions.jsonl",
        [
            {"image": "001.jpg", "text": "What is in the image?", "category": "conv", "question_id": 0},
            {"image": "001.jpg", "text": "Describe the image.", "category": "detail", "question_id": 1},
        ],
    )
    jsonl(d / "context.jsonl", [{"image": "001.jpg", "caption": "A green square."}])
    jsonl(d / "answers_gpt4.jsonl", [{"question_id": 0, "text": "A square."}, {"question_id": 1, "text": "Green."}])
    return f"llava_bench:{d}", ["0", "1"], "llava_bench", set(), set()


BUILDERS: dict[str, Callable[[Path], Built]] = {
    "pope": build_pope,
    "pope_parquet": build_pope_parquet,
    "vqav2": build_vqav2,
    "textvqa": build_textvqa,
    "counting": build_counting,
    "spatial": build_spatial,
    "amber": build_amber,
    "hallusionbench": build_hallusionbench,
    "llava_bench": build_llava_bench,
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_run_on_benchmark_format(random_toy_dirs, tmp_path, name):
    spec, ids, task, load_fail_ids, image_fail_ids = BUILDERS[name](tmp_path / "data")
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "run",
            "--answer-only",
            "--model",
            random_toy_dirs["llava"],
            "--data",
            spec,
            "--out",
            str(out),
            "--max-new-tokens",
            "3",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    rows = pq.read_table(out / "items.parquet").to_pylist()
    assert [r["id"] for r in rows] == ids
    for r in rows:
        assert r["task"] == task
        # The stored score is the task's official score of the stored answer.
        assert r["score"] == pytest.approx(score_generic(task, r["answer"], r["gold"]))
        assert r["correct"] == (r["score"] >= CORRECT_THRESHOLD)
    fails = (
        [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
        if load_fail_ids or image_fail_ids
        else []
    )
    assert {f["id"] for f in fails if f["stage"] == "load"} == load_fail_ids
    assert {f["id"] for f in fails if f["stage"] == "image"} == image_fail_ids
    assert all(":" in f["source"] for f in fails if f["stage"] == "load")
    if name == "pope":  # each bad input reported with its reason; the load failure with file:line
        why = {f["id"]: f for f in fails}
        assert "decompression bomb" in why["4"]["error"] or "over the" in why["4"]["error"]
        assert "cannot read image" in why["5"]["error"]
        assert why["3"]["source"].endswith("coco_pope_random.json:3") and "not found" in why["3"]["error"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["data"]["format"] == spec.split(":", 1)[0]
    counts = {k: m["counts"][k] for k in ("items_loaded", "answered", "failed")}
    assert counts == {"items_loaded": len(ids) + len(image_fail_ids), "answered": len(ids), "failed": len(fails)}
    assert set(m["accuracy"]["by_task"]) == {task}
    official = official_metrics_of_run(out)
    assert (task in official) == (task not in ("counting", "spatial"))
