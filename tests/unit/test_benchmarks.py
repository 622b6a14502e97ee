"""Benchmark loaders (vrp.data.benchmarks) on tiny fixture files written here, and the judge pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.helpers import bomb_png
from vrp.data.benchmarks import REGISTRY, load_benchmark, sniff
from vrp.data.benchmarks._common import parse_spec
from vrp.data.benchmarks.llava_bench import JUDGE_RULE, Review, aggregate, judge_prompt, parse_scores, review
from vrp.data.benchmarks.summary import official_metrics
from vrp.data.images import MAX_IMAGE_PIXELS, open_image
from vrp.data.sources import FORMATS, DataSpecError, load_data, split_spec

# --------------------------------------------------------------------------- fixture builders


def img(path: Path, color=(200, 30, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, format=fmt)
    return path


def png_bytes(color=(0, 0, 255)) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def jsonl(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def load(spec: str, run_dir: Path):
    fmt, rest = split_spec(spec)
    return load_benchmark(fmt, rest, run_dir, FORMATS)


def by_line(res) -> dict[str, object]:
    """failure source suffix (after the file path) -> failure."""
    return {f.source.rsplit(":", 1)[1]: f for f in res.failures}


# --------------------------------------------------------------------------- spec parsing


def test_formats_and_split_spec():
    assert set(FORMATS) == {"shapesworld", "generic", *REGISTRY}
    assert set(REGISTRY) == {
        "pope", "vqav2", "textvqa", "counting", "spatial", "amber", "hallusionbench", "llava_bench",
    }  # fmt: skip
    assert split_spec("pope:/a/b.json@/c") == ("pope", "/a/b.json@/c")
    assert split_spec("vqa:/a.json") == ("generic", "vqa:/a.json")  # not a format name


def test_parse_spec(tmp_path):
    s = parse_spec("q.json+a.json@/imgs#val")
    assert s.files == (Path("q.json"), Path("a.json")) and s.image_dir == Path("/imgs") and s.split == "val"
    s = parse_spec("f.json")
    assert s.files == (Path("f.json"),) and s.image_dir is None and s.split is None
    weird = tmp_path / "a@b#c+d.json"
    weird.write_text("[]")
    assert parse_spec(str(weird)).files == (weird,)  # an existing path is taken whole
    s = parse_spec(f"{weird}@{tmp_path}")
    assert s.files == (weird,) and s.image_dir == tmp_path
    with pytest.raises(DataSpecError):
        parse_spec("")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("vqav2:{d}/q.json", "needs 2 file"),
        ("pope:{d}/missing.json", "does not exist"),
        ("pope:{d}/p.json@{d}/nodir", "is not a folder"),
        ("pope:{d}/p.json#train", "no split 'train'"),
        ("textvqa:{d}/p.json#val", "no split"),
    ],
)
def test_bad_specs(tmp_path, spec, needle):
    jsonl(tmp_path / "p.json", [{"question_id": 1, "image": "a.jpg", "text": "q", "label": "yes"}])
    dump(tmp_path / "q.json", {})
    with pytest.raises(DataSpecError, match=needle):
        load(spec.format(d=tmp_path), tmp_path / "run")


# --------------------------------------------------------------------------- POPE


def pope_file(d: Path) -> Path:
    img(d / "coco" / "COCO_val2014_000000000001.jpg", fmt="JPEG")
    img(d / "coco" / "COCO_val2014_000000000002.jpg", fmt="JPEG")
    good = {"question_id": 1, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a dog in the image?"}
    return jsonl(
        d / "coco_pope_adversarial.json",
        [
            {**good, "label": "yes"},  # 1
            {**good, "question_id": 2, "image": "COCO_val2014_000000000002.jpg", "label": "no"},  # 2
            "",  # 3: blank, skipped
            {**good, "question_id": 3, "image": "COCO_val2014_000000000404.jpg", "label": "no"},  # 4: missing image
            {**good, "question_id": 4, "label": "maybe"},  # 5
            {"question_id": 5, "image": good["image"], "label": "yes"},  # 6: no text
            {**good, "label": "no"},  # 7: duplicate id 1
            '{"question_id": 8, "image": ',  # 8: broken JSON
            {**good, "question_id": 9, "image": "../coco_pope_adversarial.json", "label": "yes"},  # 9: escapes
            {**good, "question_id": [10], "label": "yes"},  # 10: wrong type
            {**good, "question_id": 11, "text": 42, "label": "yes"},  # 11: wrong type
        ],
    )


def test_pope_jsonl(tmp_path):
    path = pope_file(tmp_path)
    res, prov = load(f"pope:{path}@{tmp_path / 'coco'}", tmp_path / "run")
    assert [it.id for it in res.items] == ["1", "2"]
    it = res.items[0]
    assert it.task == "pope" and it.answers == ("yes",) and it.question == "Is there a dog in the image?"
    assert it.image == str((tmp_path / "coco" / "COCO_val2014_000000000001.jpg").resolve())
    assert it.meta["split"] == "adversarial" and it.meta["source"] == f"{path}:1"
    fails = by_line(res)
    assert sorted(fails, key=int) == ["4", "5", "6", "7", "8", "9", "10", "11"]
    assert all(f.source.startswith(str(path)) for f in res.failures)
    assert "not found" in fails["4"].error and fails["4"].id == "3"
    assert "'yes' or 'no'" in fails["5"].error
    assert "missing field 'text'" in fails["6"].error
    assert "duplicate id '1'" in fails["7"].error and fails["7"].id == "1"
    assert "not valid JSON" in fails["8"].error and fails["8"].id is None
    assert "escapes" in fails["9"].error
    assert "'question_id' must be int or str" in fails["10"].error
    assert "'text' must be str" in fails["11"].error
    assert prov["format"] == "pope" and prov["image_dir"] == str((tmp_path / "coco").resolve())


def test_pope_split_from_name_and_filter(tmp_path):
    path = pope_file(tmp_path)
    res, _ = load(f"pope:{path}@{tmp_path / 'coco'}#adversarial", tmp_path / "run")
    assert len(res.items) == 2
    with pytest.raises(DataSpecError, match="no item of split 'random'"):
        load(f"pope:{path}@{tmp_path / 'coco'}#random", tmp_path / "run")


def pope_parquet(path: Path) -> Path:
    a, b = png_bytes((255, 0, 0)), png_bytes((0, 255, 0))
    rows = [
        ("adversarial", "1", "yes", {"bytes": a, "path": "x.png"}),  # row 0
        ("adversarial", "2", "no", {"bytes": a, "path": "x.png"}),  # row 1: same image bytes
        ("random", "1", "no", {"bytes": b, "path": None}),  # row 2: same qid, other category
        ("random", "2", "no", None),  # row 3: no image
        ("random", "3", "Yes", {"bytes": b, "path": None}),  # row 4: bad answer
        ("adversarial", "1", "no", {"bytes": b, "path": None}),  # row 5: duplicate id
    ]
    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "id": pa.array([str(i) for i in range(len(rows))]),
            "question_id": pa.array([r[1] for r in rows]),
            "question": pa.array([f"Is there a thing {r[1]}?" for r in rows]),
            "answer": pa.array([r[2] for r in rows]),
            "image_source": pa.array(["COCO_val2014_x"] * len(rows)),
            "image": pa.array([r[3] for r in rows], type=image_t),
            "category": pa.array([r[0] for r in rows]),
        }
    )
    pq.write_table(table, path)
    return path


def test_pope_parquet_writes_images_once(tmp_path):
    path = pope_parquet(tmp_path / "pope.parquet")
    run = tmp_path / "run"
    res, _ = load(f"pope:{path}", run)
    assert [it.id for it in res.items] == ["adversarial-1", "adversarial-2", "random-1"]
    written = sorted((run / "data" / "images" / "pope").iterdir())
    assert len(written) == 2  # two distinct images, each written once
    assert res.items[0].image == res.items[1].image != res.items[2].image
    assert res.items[0].image.endswith(".png") and res.items[2].image.endswith(".img")
    assert open_image(res.items[2].image).getpixel((0, 0)) == (0, 255, 0)
    assert res.items[2].meta["split"] == "random" and res.items[2].answers == ("no",)
    fails = by_line(res)
    assert sorted(fails) == ["row[3]", "row[4]", "row[5]"]
    assert "no image bytes" in fails["row[3]"].error or "missing field 'image'" in fails["row[3]"].error
    assert "'yes' or 'no'" in fails["row[4]"].error and "duplicate" in fails["row[5]"].error
    res, _ = load(f"pope:{path}#random", tmp_path / "run2")
    assert [it.id for it in res.items] == ["random-1"]


def test_pope_parquet_missing_columns(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"question": ["q"]}), path)
    with pytest.raises(DataSpecError, match="missing columns"):
        load(f"pope:{path}", tmp_path / "run")
    (tmp_path / "y.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataSpecError, match="not a parquet file"):
        load(f"pope:{tmp_path / 'y.parquet'}", tmp_path / "run")


# --------------------------------------------------------------------------- VQAv2 / TextVQA


def vqa_files(d: Path) -> tuple[Path, Path]:
    for i in (1, 2, 3):
        img(d / "val2014" / f"COCO_val2014_{i:012d}.jpg", fmt="JPEG")
    human = [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(["2"] * 6 + ["3"] * 4)]
    qs = [
        {"image_id": 1, "question": "How many dogs?", "question_id": 10},  # [0]
        {"image_id": 2, "question": "What color?", "question_id": 20},  # [1]: no annotation
        {"image_id": 9, "question": "Is it?", "question_id": 30},  # [2]: image missing
        {"image_id": 3, "question": "Why?", "question_id": 40},  # [3]: annotation rejected
        {"image_id": 2, "question": "Where?", "question_id": 50},  # [4]: image id mismatch
        {"image_id": 1, "question": "Who?", "question_id": "60"},  # [5]: wrong type
    ]
    anns = [
        {"question_id": 10, "image_id": 1, "answers": human, "answer_type": "number", "question_type": "how many"},
        {"question_id": 30, "image_id": 9, "answers": human, "answer_type": "yes/no"},
        {"question_id": 40, "image_id": 3, "answers": "2", "answer_type": "other"},  # [2]: bad answers
        {"question_id": 50, "image_id": 1, "answers": human, "answer_type": "other"},
    ]
    q = dump(d / "v2_OpenEnded_mscoco_val2014_questions.json", {"data_subtype": "val2014", "questions": qs})
    a = dump(d / "v2_mscoco_val2014_annotations.json", {"annotations": anns})
    return q, a


def test_vqav2(tmp_path):
    q, a = vqa_files(tmp_path)
    res, prov = load(f"vqav2:{q}+{a}@{tmp_path / 'val2014'}", tmp_path / "run")
    assert [it.id for it in res.items] == ["10"]
    it = res.items[0]
    assert it.task == "vqav2" and it.answers == ("2",) * 6 + ("3",) * 4
    assert it.meta["answer_type"] == "number" and it.meta["question_type"] == "how many"
    assert it.image.endswith("val2014/COCO_val2014_000000000001.jpg")
    fails = {f.source: f for f in res.failures}
    assert set(fails) == {
        f"{a}:annotations[2]", f"{q}:questions[1]", f"{q}:questions[2]", f"{q}:questions[3]",
        f"{q}:questions[4]", f"{q}:questions[5]",
    }  # fmt: skip
    assert "'answers' must be list" in fails[f"{a}:annotations[2]"].error
    assert "no valid annotation for question_id 20" in fails[f"{q}:questions[1]"].error
    assert "not found" in fails[f"{q}:questions[2]"].error
    assert "differs" in fails[f"{q}:questions[4]"].error
    assert "'question_id' must be int" in fails[f"{q}:questions[5]"].error
    assert prov["files"] == [str(q.resolve()), str(a.resolve())]


def test_vqav2_file_level_errors(tmp_path):
    q, a = vqa_files(tmp_path)
    dump(q, {"questions": []})
    with pytest.raises(DataSpecError, match="data_subtype"):
        load(f"vqav2:{q}+{a}", tmp_path / "run")
    q.write_text("not json")
    with pytest.raises(DataSpecError, match="not a JSON document"):
        load(f"vqav2:{q}+{a}", tmp_path / "run")
    with pytest.raises(DataSpecError, match="'questions' list"):
        load(f"vqav2:{a}+{q}", tmp_path / "run")  # swapped files


def test_textvqa(tmp_path):
    img(tmp_path / "train_images" / "abc.jpg", fmt="JPEG")
    data = [
        {"question": "what brand?", "image_id": "abc", "question_id": 1, "answers": ["nokia"] * 10, "set_name": "val"},
        {"question": "what?", "image_id": "abc", "question_id": 2, "answers": []},
        {"question": "what?", "image_id": "../../etc/x", "question_id": 3, "answers": ["a"]},
        {"question": "what?", "image_id": "zzz", "question_id": 4, "answers": ["a"]},
    ]
    path = dump(tmp_path / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": data})
    res, _ = load(f"textvqa:{path}@{tmp_path / 'train_images'}", tmp_path / "run")
    assert [it.id for it in res.items] == ["1"] and res.items[0].task == "textvqa"
    assert res.items[0].meta["set_name"] == "val"
    fails = by_line(res)
    assert sorted(fails) == ["data[1]", "data[2]", "data[3]"]
    assert "escapes" in fails["data[2]"].error and "not found" in fails["data[3]"].error
    dump(path, [1, 2])
    with pytest.raises(DataSpecError, match="'data' list"):
        load(f"textvqa:{path}", tmp_path / "run")


# --------------------------------------------------------------------------- counting / spatial


def test_counting_json_list(tmp_path):
    img(tmp_path / "imgs" / "a.png")
    img(tmp_path / "imgs" / "b.jpg", fmt="JPEG")
    recs = [
        {"image_id": "a", "question": "How many circles?", "answer": 3},
        {"image_id": "b.jpg", "question": "How many squares?", "answer": "two", "question_id": "q-b"},
        {"image_id": "a", "question": "How many?", "answer": "many"},
        {"image_id": "a", "answer": 1},
        {"image_id": "a", "question": "How many?", "answer": True},
    ]
    path = dump(tmp_path / "count.json", recs)
    res, _ = load(f"counting:{path}@{tmp_path / 'imgs'}", tmp_path / "run")
    assert [it.id for it in res.items] == ["0", "q-b"]
    assert res.items[0].answers == ("3",) and res.items[0].image.endswith("a.png") and res.items[0].task == "counting"
    fails = by_line(res)
    assert sorted(fails) == ["[2]", "[3]", "[4]"]
    assert "no integer" in fails["[2]"].error and "question" in fails["[3]"].error
    assert "must be str or int" in fails["[4]"].error


def test_spatial_jsonl(tmp_path):
    img(tmp_path / "1.jpg", fmt="JPEG")
    path = jsonl(
        tmp_path / "spatial.jsonl",
        [
            {"image_id": 1, "question": "Is the red circle left or right of the square?", "answer": "left"},
            {"image_id": 1, "question": "q", "answer": 3},  # spatial answers are text
            "{oops",
            {"image_id": 2, "question": "q", "answer": "left"},
        ],
    )
    res, _ = load(f"spatial:{path}", tmp_path / "run")
    assert [it.id for it in res.items] == ["0"] and res.items[0].task == "spatial"
    assert sorted(by_line(res)) == ["2", "3", "4"]


# --------------------------------------------------------------------------- AMBER / HallusionBench


def amber_files(d: Path) -> tuple[Path, Path]:
    img(d / "images" / "AMBER_1.jpg", fmt="JPEG")
    anns = [
        {"id": 1, "type": "generative", "truth": ["sky"], "hallu": ["dog"]},
        {"id": 2, "type": "discriminative-hallucination", "truth": "yes"},
        {"id": 3, "type": "discriminative-attribute-state", "truth": "no"},
        {"id": 4, "type": "discriminative-relation", "truth": "yes"},
        {"id": 5, "type": "discriminative-attribute-number", "truth": "maybe"},  # [4]: bad truth
    ]
    queries = [
        {"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."},
        {"id": 2, "image": "AMBER_1.jpg", "query": "Is there a forest in this image?"},
        {"id": 3, "image": "AMBER_1.jpg", "query": "Is the sky gloomy in this image?"},
        {"id": 4, "image": "AMBER_1.jpg", "query": "Are the man and the dog touching?"},
        {"id": 5, "image": "AMBER_1.jpg", "query": "Are there two ships?"},  # [4]: annotation rejected
        {"id": 6, "image": "AMBER_1.jpg", "query": "Is it?"},  # [5]: no annotation
    ]
    return dump(d / "query_all.json", queries), dump(d / "annotations.json", anns)


def test_amber(tmp_path):
    q, a = amber_files(tmp_path)
    res, prov = load(f"amber:{q}+{a}@{tmp_path / 'images'}", tmp_path / "run")
    assert [(it.id, it.meta["split"], it.answers) for it in res.items] == [
        ("2", "existence", ("yes",)), ("3", "attribute", ("no",)), ("4", "relation", ("yes",)),
    ]  # fmt: skip
    assert all(it.task == "amber" for it in res.items)
    assert prov["skipped"] == {"generative (captioning) query": 1}
    assert {f.source for f in res.failures} == {f"{a}:[4]", f"{q}:[4]", f"{q}:[5]"}
    res, _ = load(f"amber:{q}+{a}@{tmp_path / 'images'}#attribute", tmp_path / "run")
    assert [it.id for it in res.items] == ["3"]


def test_hallusionbench(tmp_path):
    img(tmp_path / "hallusion_bench" / "VD" / "illusion" / "0_0.png")
    img(tmp_path / "hallusion_bench" / "VS" / "chart" / "1_1.png")
    base = {"subcategory": "illusion", "set_id": "0", "figure_id": "0", "sample_note": "circle"}
    recs = [
        {**base, "category": "VD", "visual_input": "1", "question_id": "0", "question": "Same size?",
         "gt_answer_details": "Same.", "gt_answer": "1", "filename": "./hallusion_bench/VD/illusion/0_0.png"},
        {**base, "category": "VS", "subcategory": "chart", "set_id": "1", "visual_input": "0", "question_id": "0",
         "question": "Is 2020 GDP higher?", "gt_answer": "1", "filename": None},
        {**base, "category": "VS", "subcategory": "chart", "set_id": "1", "figure_id": "1", "visual_input": "2",
         "question_id": "0", "question": "Is 2020 GDP higher?", "gt_answer": "0",
         "filename": "./hallusion_bench/VS/chart/1_1.png"},
        {**base, "category": "VD", "visual_input": "1", "question_id": "1", "question": "q", "gt_answer": "2",
         "filename": "./hallusion_bench/VD/illusion/0_0.png"},
        {**base, "category": "VD", "visual_input": "1", "question_id": "2", "question": "q", "gt_answer": "1",
         "filename": "../../secret.png"},
        {**base, "category": "VD", "visual_input": "1", "question_id": "3", "question": "q", "gt_answer": "1"},
    ]  # fmt: skip
    path = dump(tmp_path / "HallusionBench.json", recs)
    res, prov = load(f"hallusionbench:{path}", tmp_path / "run")
    assert [it.id for it in res.items] == ["VD_illusion_0_0_0", "VS_chart_1_1_0"]
    assert [it.answers for it in res.items] == [("yes",), ("no",)]
    assert res.items[1].meta["split"] == "VS" and res.items[1].meta["visual_input"] == "2"
    assert prov["skipped"] == {"text-only question (visual_input 0)": 1}
    fails = by_line(res)
    assert sorted(fails) == ["[3]", "[4]", "[5]"]
    assert "gt_answer" in fails["[3]"].error and "escapes" in fails["[4]"].error
    assert "filename" in fails["[5]"].error
    res, _ = load(f"hallusionbench:{path}#VS", tmp_path / "run")
    assert [it.id for it in res.items] == ["VS_chart_1_1_0"]


# --------------------------------------------------------------------------- LLaVA-Bench


def llava_dir(d: Path) -> Path:
    img(d / "images" / "001.jpg", fmt="JPEG")
    jsonl(
        d / "questions.jsonl",
        [
            {"image": "001.jpg", "text": "What is unusual here?", "category": "complex", "question_id": 0},
            {"image": "001.jpg", "text": "Describe it.", "category": "detail", "question_id": 1},
            {"image": "001.jpg", "text": "Hi?", "category": "chat", "question_id": 2},
            {"image": "002.jpg", "text": "Where?", "category": "conv", "question_id": 3},
            {"image": "001.jpg", "text": "Who?", "category": "conv", "question_id": 4},
        ],
    )
    jsonl(d / "context.jsonl", [{"id": "001", "image": "001.jpg", "caption": ["A man irons.", "On a taxi."]}, "{x"])
    jsonl(
        d / "answers_gpt4.jsonl",
        [{"question_id": q, "text": f"reference {q}"} for q in (0, 1, 2, 3)],
    )
    return d


def test_llava_bench(tmp_path):
    d = llava_dir(tmp_path / "llava-bench-in-the-wild")
    res, _ = load(f"llava_bench:{d}", tmp_path / "run")
    assert [it.id for it in res.items] == ["0", "1"]
    it = res.items[0]
    assert it.task == "llava_bench" and it.answers == ("reference 0",)
    assert it.meta["caption"] == "A man irons.\nOn a taxi." and it.meta["split"] == "complex"
    fails = {f.source: f.error for f in res.failures}
    assert set(fails) == {
        f"{d}/context.jsonl:2", f"{d}/questions.jsonl:3", f"{d}/questions.jsonl:4", f"{d}/questions.jsonl:5",
    }  # fmt: skip
    assert "category 'chat'" in fails[f"{d}/questions.jsonl:3"]
    assert "no valid context" in fails[f"{d}/questions.jsonl:4"]
    assert "no valid reference" in fails[f"{d}/questions.jsonl:5"]
    res, _ = load(f"llava_bench:{d}#detail", tmp_path / "run")
    assert [it.id for it in res.items] == ["1"]
    with pytest.raises(DataSpecError, match="missing"):
        load(f"llava_bench:{tmp_path}", tmp_path / "run")


def test_judge_prompt_and_parse():
    p = judge_prompt("Q?", "cap line", "REF", "ANS")
    assert p.user.startswith("[Context]\ncap line\n\n[Question]\nQ?\n\n[Assistant 1]\nREF\n\n[End of Assistant 1]")
    assert "[Assistant 2]\nANS\n\n[End of Assistant 2]\n\n[System]\n" + JUDGE_RULE in p.user
    assert p.messages()[0]["role"] == "system" and p.messages()[1]["content"] == p.user
    assert parse_scores("8 9\nBecause.") == (8.0, 9.0)
    assert parse_scores("7.5,6") == (7.5, 6.0)
    assert parse_scores("8, 9") == (-1.0, -1.0)  # the comma becomes a space: three fields
    assert parse_scores("Scores: 8 9") == (-1.0, -1.0)
    assert parse_scores("") == (-1.0, -1.0)
    assert parse_scores("a b") == (-1.0, -1.0)


def test_review_and_aggregate():
    rows = [
        {"id": "0", "task": "llava_bench", "question": "Q0", "answer": "A0", "gold": ["R0"],
         "meta": json.dumps({"caption": "C", "split": "conv"})},
        {"id": "1", "task": "llava_bench", "question": "Q1", "answer": "A1", "gold": ["R1"],
         "meta": {"caption": "C", "split": "conv"}},
        {"id": "2", "task": "llava_bench", "question": "Q2", "answer": "A2", "gold": ["R2"],
         "meta": {"caption": "C", "split": "detail"}},
        {"id": "3", "task": "pope", "question": "Q", "answer": "yes", "gold": ["yes"], "meta": {}},
    ]  # fmt: skip
    seen = []
    canned = {"A0": "8 6\nok", "A1": "10 9\nok", "A2": "I cannot rate this."}

    def judge(prompt):
        seen.append(prompt)
        return next(v for k, v in canned.items() if f"[Assistant 2]\n{k}\n" in prompt.user)

    reviews = review(rows, judge)
    assert len(seen) == 3 and [r.id for r in reviews] == ["0", "1", "2"]
    assert reviews[2] == Review("2", "detail", -1.0, -1.0, "I cannot rate this.")
    agg = aggregate(reviews)
    assert agg["conv"] == {"n": 2, "parse_errors": 0, "reference": 9.0, "model": 7.5, "relative": 83.3}
    assert agg["detail"]["relative"] == 100.0 and agg["detail"]["parse_errors"] == 1  # (-1)/(-1), as official
    assert agg["all"]["reference"] == 5.667 and agg["all"]["model"] == 4.667
    assert agg["all"]["relative"] == round(4.667 / 5.667 * 100, 1)


# --------------------------------------------------------------------------- official summaries


def test_official_metrics_from_rows():
    def row(task, answer, gold, score, correct, **meta):
        return {"task": task, "answer": answer, "gold": gold, "score": score, "correct": correct, "meta": meta}

    rows = [
        row("pope", "Yes", ["yes"], 1.0, True, split="random"),
        row("pope", "No.", ["yes"], 0.0, False, split="random"),
        row("vqav2", "2", ["2"] * 10, 1.0, True, answer_type="number"),
        row("vqav2", "red", ["red"] + ["x"] * 9, 0.3, False, answer_type="other"),
        row("amber", "No", ["no"], 1.0, True, split="existence"),
        row("amber", "Yes", ["no"], 0.0, False, split="attribute"),
    ]
    m = official_metrics(rows)
    assert m["pope"]["random"]["accuracy"] == 0.5 and m["pope"]["all"]["yes_ratio"] == 0.5
    assert m["vqav2"] == {"n": 2, "overall": 65.0, "per_answer_type": {"number": 100.0, "other": 30.0}}
    assert m["amber"]["all"]["accuracy"] == 50.0 and m["amber"]["all"]["precision"] == 100.0
    assert m["amber"]["all"]["recall"] == 50.0


# --------------------------------------------------------------------------- sources, sniffing, images


def test_load_data_dispatches_to_benchmarks(tmp_path):
    path = pope_file(tmp_path)
    res, prov = load_data(f"pope:{path}@{tmp_path / 'coco'}", tmp_path / "run", seed=0, world_images=5)
    assert len(res.items) == 2 and prov["format"] == "pope"


def test_generic_error_names_formats_and_guesses(tmp_path):
    path = pope_file(tmp_path)
    assert sniff(path) == "pope"
    with pytest.raises(DataSpecError) as ei:
        load_data(str(path), tmp_path / "run", seed=0, world_images=5)
    msg = str(ei.value)
    assert all(f in msg for f in FORMATS) and "looks like the pope format" in msg


def test_file_in_no_format_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}\n')
    assert sniff(bad) is None
    for spec in (f"pope:{bad}", f"counting:{bad}", f"spatial:{bad}"):
        with pytest.raises(DataSpecError) as ei:
            load(spec, tmp_path / "run")
        assert all(f in str(ei.value) for f in FORMATS) and f"{bad}:1" in str(ei.value)
    for spec in (f"textvqa:{bad}", f"hallusionbench:{bad}", f"vqav2:{bad}+{bad}", f"amber:{bad}+{bad}"):
        with pytest.raises(DataSpecError, match="is not a"):
            load(spec, tmp_path / "run")


def test_open_image_refuses_bombs_and_broken_files(tmp_path):
    # Over vrp's own limit (under Pillow's warning threshold): refused by the pixel count.
    side = int(MAX_IMAGE_PIXELS**0.5) + 100
    with pytest.raises(ValueError, match="over the"):
        open_image(str(bomb_png(tmp_path / "big.png", side, side)))
    # Far over Pillow's limit: refused by Pillow's decompression bomb check.
    with pytest.raises(ValueError, match="decompression bomb"):
        open_image(str(bomb_png(tmp_path / "huge.png", 30_000, 30_000)))
    good = img(tmp_path / "ok.png")
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read image"):
        open_image(str(tmp_path / "trunc.png"))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        open_image(str(tmp_path / "text.png"))
    assert open_image(str(good)).size == (8, 8)
