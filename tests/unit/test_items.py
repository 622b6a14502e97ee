"""Generic JSONL item loader (vrp.data.items) and --data spec resolution (vrp.data.sources)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vrp.data.items import Item, LoadFailure, item_to_record, load_generic_jsonl, parse_record, resolve_image
from vrp.data.sources import FORMATS, DataSpecError, load_data, split_spec
from vrp.world.dataset import write_dataset

N_IMAGES = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds")
    write_dataset(root, N_IMAGES, 3)
    return root


def good(id_: str, **over) -> dict:
    rec = {
        "id": id_,
        "image": "images/000000.png",
        "question": "Is there a red circle in the image?",
        "answers": ["yes"],
        "task": "existence",
        "regions": [{"label": "red circle", "box": [1, 2, 10, 11]}],
        "meta": {"strategy": "random"},
    }
    rec.update(over)
    return rec


def without(rec: dict, key: str) -> dict:
    return {k: v for k, v in rec.items() if k != key}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- round trip


def test_generated_items_round_trip(dataset):
    path = dataset / "items.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    res = load_generic_jsonl(path)
    assert res.failures == []
    assert len(res.items) == len(raw) >= 4 * N_IMAGES
    root = dataset.resolve()
    for item, rec in zip(res.items, raw, strict=True):
        assert isinstance(item, Item)
        assert item.id == rec["id"]
        assert item.question == rec["question"]
        assert item.answers == tuple(rec["answers"])
        assert item.task == rec["task"]
        assert item.meta == rec["meta"]
        # image is absolute, inside the dataset, and is the file the record names.
        img = Path(item.image)
        assert img.is_absolute() and img.is_file()
        assert img == root / rec["image"]
        assert [r["box"] for r in item.regions] == [r["box"] for r in rec["regions"]]
        assert all(isinstance(v, float) for r in item.regions for v in r["box"])
        assert [r["label"] for r in item.regions] == [r["label"] for r in rec["regions"]]
        # item_to_record is the inverse of parse_record (ints compare equal to floats).
        back = item_to_record(item, dataset)
        assert back == rec
        assert parse_record(json.loads(json.dumps(back)), dataset) == item


def test_optional_fields_default(tmp_path):
    rec = without(without(good("a"), "regions"), "meta")
    item = parse_record(rec, tmp_path)
    assert item.regions == () and item.meta == {}
    assert item.image == str((tmp_path / "images/000000.png").resolve())


def test_absolute_image_path_inside_folder_is_accepted(tmp_path):
    inside = tmp_path / "sub" / "x.png"
    item = parse_record(good("a", image=str(inside)), tmp_path)
    assert item.image == str(inside.resolve())


def test_resolve_image_refuses_escapes(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    assert resolve_image(root, "a/../b.png") == (root / "b.png").resolve()
    for rel in ("../x.png", "a/../../x.png", str(tmp_path / "x.png"), "/etc/passwd"):
        with pytest.raises(ValueError, match="escapes"):
            resolve_image(root, rel)


# --------------------------------------------------------------------------- malformed lines

BAD_LINES: dict[str, tuple[str, str | None, str]] = {
    # name: (line text, expected failure id, substring of the error)
    "bad_json": ('{"id": "j1", "image": ', None, ""),
    "not_an_object": ("[1, 2, 3]", None, "JSON object"),
    "missing_question": (json.dumps(without(good("m1"), "question")), "m1", "question"),
    "missing_id": (json.dumps(without(good("x"), "id")), None, "'id'"),
    "answers_not_list": (json.dumps(good("t1", answers="yes")), "t1", "answers"),
    "id_not_str": (json.dumps(good(7)), None, "'id'"),
    "task_not_str": (json.dumps(good("t2", task=["existence"])), "t2", "task"),
    "empty_answers": (json.dumps(good("e1", answers=[])), "e1", "answers"),
    "non_str_answer": (json.dumps(good("e2", answers=[3])), "e2", "answers"),
    "box_inverted": (json.dumps(good("b1", regions=[{"box": [10, 2, 5, 11]}])), "b1", "box"),
    "box_zero_height": (json.dumps(good("b2", regions=[{"box": [1, 5, 10, 5]}])), "b2", "box"),
    "box_three_numbers": (json.dumps(good("b3", regions=[{"box": [1, 2, 3]}])), "b3", "box"),
    "box_strings": (json.dumps(good("b4", regions=[{"box": ["1", "2", "3", "4"]}])), "b4", "box"),
    "region_without_box": (json.dumps(good("b5", regions=[{"label": "x"}])), "b5", "box"),
    "regions_not_list": (json.dumps(good("b6", regions={"box": [1, 2, 3, 4]})), "b6", "regions"),
    "meta_not_object": (json.dumps(good("mt", meta=[1])), "mt", "meta"),
    "image_dotdot": (json.dumps(good("p1", image="../x.png")), "p1", "escapes"),
    "image_abs_outside": (json.dumps(good("p2", image="/etc/passwd")), "p2", "escapes"),
}


def test_bad_lines_become_failures_with_line_numbers(tmp_path):
    lines, expected = [], {}
    lines.append(json.dumps(good("ok0")))  # line 1
    lines.append("")  # line 2: blank, skipped but still counted
    for i, (name, (text, fid, msg)) in enumerate(BAD_LINES.items()):
        lines.append(text)
        expected[len(lines)] = (name, fid, msg)
        lines.append(json.dumps(good(f"ok{i + 1}")))
    lines.append(json.dumps(good("ok3", question="same id again")))  # duplicate of a good id
    expected[len(lines)] = ("duplicate", "ok3", "duplicate")
    path = write_lines(tmp_path / "items.jsonl", lines)

    res = load_generic_jsonl(path)
    assert [it.id for it in res.items] == [f"ok{i}" for i in range(len(BAD_LINES) + 1)]
    # The first occurrence of the duplicated id is the one kept.
    assert next(it for it in res.items if it.id == "ok3").question == good("x")["question"]
    got = {int(f.source.rsplit(":", 1)[1]): f for f in res.failures}
    assert sorted(got) == sorted(expected)
    for lineno, (name, fid, msg) in expected.items():
        f = got[lineno]
        assert isinstance(f, LoadFailure)
        assert f.source == f"{path}:{lineno}", name
        assert f.id == fid, name
        assert msg in f.error, (name, f.error)


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_each_bad_line_alone(tmp_path, name):
    text, fid, _ = BAD_LINES[name]
    path = write_lines(tmp_path / "x.jsonl", [json.dumps(good("g1")), text, json.dumps(good("g2"))])
    res = load_generic_jsonl(path)
    assert [it.id for it in res.items] == ["g1", "g2"]
    assert len(res.failures) == 1
    assert res.failures[0].source == f"{path}:2"
    assert res.failures[0].id == fid


@pytest.mark.parametrize("image", ["", "."])
def test_image_path_must_name_a_file_not_the_folder(tmp_path, image):
    path = write_lines(tmp_path / "x.jsonl", [json.dumps(good("g1", image=image))])
    res = load_generic_jsonl(path)
    assert res.items == [] and len(res.failures) == 1


@pytest.mark.parametrize("box", ["[0, 0, NaN, 5]", "[0, 0, Infinity, 5]", "[-Infinity, 0, 4, 5]"])
def test_non_finite_region_box_rejected(tmp_path, box):
    rec = json.dumps(good("n1", regions=[])).replace('"regions": []', f'"regions": [{{"box": {box}}}]')
    path = write_lines(tmp_path / "x.jsonl", [rec])
    res = load_generic_jsonl(path)
    assert res.items == [] and len(res.failures) == 1


def test_invalid_utf8_line_is_a_failure_not_a_crash(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        json.dumps(good("g1")).encode() + b"\n\xff\xfe garbage\n" + json.dumps(good("g2")).encode() + b"\n"
    )
    res = load_generic_jsonl(path)
    assert [it.id for it in res.items] == ["g1", "g2"]
    assert [f.source for f in res.failures] == [f"{path}:2"]


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("shapesworld", ("shapesworld", "")),
        ("shapesworld:50", ("shapesworld", "50")),
        ("generic:/a/b.jsonl", ("generic", "/a/b.jsonl")),
        ("generic:C:/a.jsonl", ("generic", "C:/a.jsonl")),
        ("/a/b.jsonl", ("generic", "/a/b.jsonl")),
        ("C:/data/items.jsonl", ("generic", "C:/data/items.jsonl")),
        ("weird:thing", ("generic", "weird:thing")),
    ],
)
def test_split_spec(spec, expected):
    assert split_spec(spec) == expected


def test_load_data_generic_file_folder_and_prefix(dataset, tmp_path):
    n = len((dataset / "items.jsonl").read_text().splitlines())
    for spec in (str(dataset / "items.jsonl"), str(dataset), f"generic:{dataset / 'items.jsonl'}"):
        res, prov = load_data(spec, tmp_path, seed=0, world_images=5)
        assert len(res.items) == n and res.failures == []
        assert prov == {"format": "generic", "path": str((dataset / "items.jsonl").resolve())}


def test_load_data_shapesworld_generates_into_run_dir(tmp_path):
    res, prov = load_data("shapesworld:4", tmp_path, seed=2, world_images=99)
    assert prov["format"] == "shapesworld" and prov["n_images"] == 4 and prov["seed"] == 2
    assert Path(prov["path"]) == tmp_path / "data" / "items.jsonl"
    assert res.failures == []
    assert len({it.image for it in res.items}) == 4
    assert sum(it.task == "counting" for it in res.items) == 4
    res2, prov2 = load_data("shapesworld", tmp_path / "other", seed=2, world_images=3)
    assert prov2["n_images"] == 3 and sum(it.task == "counting" for it in res2.items) == 3


@pytest.mark.parametrize("spec", ["shapesworld:abc", "shapesworld:0", "shapesworld:-3"])
def test_load_data_bad_shapesworld_n(tmp_path, spec):
    with pytest.raises(DataSpecError, match="shapesworld:N"):
        load_data(spec, tmp_path, seed=0, world_images=5)


def test_load_data_no_valid_record_names_formats(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ["not json", "", json.dumps({"foo": 1})])
    with pytest.raises(DataSpecError) as ei:
        load_data(str(path), tmp_path, seed=0, world_images=5)
    msg = str(ei.value)
    for fmt in FORMATS:
        assert fmt in msg
    assert f"{path}:1" in msg  # points at the first failing line
    assert isinstance(ei.value, ValueError)


def test_load_data_partial_file_loads_good_records(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", ["not json", json.dumps(good("g"))])
    res, _ = load_data(str(path), tmp_path, seed=0, world_images=5)
    assert [it.id for it in res.items] == ["g"]
    assert [f.source for f in res.failures] == [f"{path}:1"]


@pytest.mark.parametrize("rel", ["missing.jsonl", "nodir/items.jsonl", "emptydir"])
def test_load_data_missing_file(tmp_path, rel):
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataSpecError, match="does not exist"):
        load_data(str(tmp_path / rel), tmp_path, seed=0, world_images=5)


def test_load_data_empty_file_rejected(tmp_path):
    path = write_lines(tmp_path / "empty.jsonl", ["", "   "])
    with pytest.raises(DataSpecError):
        load_data(str(path), tmp_path, seed=0, world_images=5)
