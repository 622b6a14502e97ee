"""ShapesWorld generator: determinism, ground truth re-derived from the scenes, rendering,
and POPE negative sampling, on every named world (default, fine, fine-aspect).

Every expected value here is computed by the test's own code from scenes.jsonl (and the
rendered PNGs); the module's answer helpers (exists, count_objects, relation,
referring_name, DatasetStats, ...) are deliberately not used.
"""

from __future__ import annotations

import colorsys
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vrp.world import questions as Q
from vrp.world.dataset import generate, strategy_for, write_dataset
from vrp.world.scene import COLOURS, PRESETS, SHAPES, SIZES, Scene, WorldConfig, WorldStats, categories

N_POPE = 300  # images for the statistical POPE checks
SEED = 11


# --------------------------------------------------------------------------- helpers


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_scenes(root: Path) -> dict[str, Scene]:
    """image name -> Scene, read back from scenes.jsonl."""
    out = {}
    for rec in read_jsonl(root / "scenes.jsonl"):
        image = rec.pop("image")
        out[image] = Scene.from_dict(rec)
    return out


def world_of(root: Path) -> WorldConfig:
    """The world a dataset was generated from (its world.json)."""
    return WorldConfig.from_dict(json.loads((root / "world.json").read_text())["world"])


def cat_of(o) -> str:
    return f"{o.colour} {o.shape}"


def centre(box) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2


def boxes_intersect(a, b) -> bool:
    """Half-open boxes [x0, x1) x [y0, y1) share at least one pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def expected_relation(box_a, box_b) -> str | None:
    """Own derivation of the unambiguous relation of a to b, or None."""
    (ax, ay), (bx, by) = centre(box_a), centre(box_b)
    dx, dy = ax - bx, ay - by
    if abs(dx) >= Q.SPATIAL_MIN_PX and abs(dx) >= Q.SPATIAL_DOMINANCE * abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) >= Q.SPATIAL_MIN_PX and abs(dy) >= Q.SPATIAL_DOMINANCE * abs(dx):
        return "above" if dy < 0 else "below"
    return None


def matching(scene: Scene, words: list[str]) -> list:
    """Objects matching a referring name of 1..3 words: [size] [colour] shape."""
    out = []
    for o in scene.objects:
        attrs = {"shape": o.shape, "colour": o.colour, "size": o.size}
        ok = True
        for w in words:
            kind = "shape" if w in SHAPES else "colour" if w in COLOURS else "size" if w in SIZES else None
            assert kind is not None, f"unknown word {w!r} in referring name {words}"
            ok &= attrs[kind] == w
        if ok:
            out.append(o)
    return out


def hue_of(rgb) -> float:
    r, g, b = (v / 255 for v in rgb)
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360.0


def hue_dist(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def all_category_names() -> list[str]:
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


def own_stats(scenes: list[Scene]) -> tuple[Counter, Counter]:
    """Per-image category frequency and unordered pair co-occurrence counts (POPE style:
    an image counts once per category / per pair, however many instances it has)."""
    freq: Counter = Counter()
    pairs: Counter = Counter()
    for sc in scenes:
        present = {cat_of(o) for o in sc.objects}
        freq.update(present)
        pairs.update(frozenset(p) for p in itertools.combinations(sorted(present), 2))
    return freq, pairs


def adversarial_score(cand: str, present: set[str], pairs: Counter) -> int:
    return sum(pairs[frozenset((p, cand))] for p in present)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=list(PRESETS))
def mixed(tmp_path_factory, request) -> Path:
    root = tmp_path_factory.mktemp(f"mixed-{request.param}")
    write_dataset(root, N_POPE, SEED, PRESETS[request.param])
    return root


@pytest.fixture(scope="module")
def by_strategy(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for strat in Q.POPE_STRATEGIES:
        root = tmp_path_factory.mktemp(strat)
        write_dataset(root, N_POPE, SEED, strategy=strat, tasks=("existence",))
        out[strat] = root
    return out


# --------------------------------------------------------------------------- determinism


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a, 15, 5)
    write_dataset(b, 15, 5)
    sa, sb = _snapshot(a), _snapshot(b)
    pngs = [k for k in sa if k.endswith(".png")]
    assert len(pngs) == 15
    assert sorted(sa) == sorted(sb)  # same file names (and no stray .tmp files)
    assert not any(k.endswith(".tmp") for k in sa)
    for name in sa:  # every PNG, items.jsonl, scenes.jsonl, world.json
        assert sa[name] == sb[name], name
    # The PNG really decodes to the scene size.
    with Image.open(a / pngs[0]) as im:
        assert im.size == (48, 48) and im.mode == "RGB"


def test_different_seed_gives_different_data(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a, 15, 5)
    write_dataset(b, 15, 6)
    assert (a / "scenes.jsonl").read_bytes() != (b / "scenes.jsonl").read_bytes()
    same_png = sum((a / "images" / p.name).read_bytes() == p.read_bytes() for p in (b / "images").iterdir())
    assert same_png < 15
    # The questions themselves differ, not just the seed embedded in the ids.
    qa = [(r["image"], r["question"], r["answers"]) for r in read_jsonl(a / "items.jsonl")]
    qb = [(r["image"], r["question"], r["answers"]) for r in read_jsonl(b / "items.jsonl")]
    assert qa != qb


def test_world_json_metadata(tmp_path):
    path = write_dataset(tmp_path, 4, 9, WorldConfig(image_size=64), strategy="popular")
    assert path == tmp_path / "items.jsonl"
    meta = json.loads((tmp_path / "world.json").read_text())
    assert meta["seed"] == 9 and meta["n_images"] == 4 and meta["strategy"] == "popular"
    assert meta["tasks"] == list(Q.TASKS)
    assert WorldConfig.from_dict(meta["world"]) == WorldConfig(image_size=64)
    for sc in load_scenes(tmp_path).values():
        assert sc.size == 64


def test_unknown_strategy_and_task_rejected(tmp_path):
    with pytest.raises(ValueError, match="strategy"):
        strategy_for(0, "nope")
    with pytest.raises(ValueError, match="strategy"):
        write_dataset(tmp_path, 2, 0, strategy="nope")
    with pytest.raises(ValueError, match="task"):
        generate(2, 0, tasks=("existence", "colourfulness"))


def test_scene_dict_round_trip(mixed):
    for rec in read_jsonl(mixed / "scenes.jsonl")[:20]:
        rec.pop("image")
        sc = Scene.from_dict(rec)
        assert all(isinstance(o.box, tuple) for o in sc.objects)
        assert json.loads(json.dumps(sc.to_dict())) == rec


# --------------------------------------------------------------------------- scenes and images


def test_scenes_are_valid(mixed):
    cfg = world_of(mixed)
    scenes = load_scenes(mixed)
    assert len(scenes) == N_POPE
    assert sorted(scenes) == [f"images/{i:06d}.png" for i in range(N_POPE)]
    n_objects, dims, sizes = Counter(), Counter(), Counter()
    for sc in scenes.values():
        if cfg.sizes:
            assert sc.dims in cfg.sizes and sc.height is not None
        else:
            assert sc.dims == (cfg.image_size, cfg.image_size) and sc.height is None
        dims[sc.dims] += 1
        assert cfg.min_objects <= len(sc.objects) <= cfg.max_objects
        n_objects[len(sc.objects)] += 1
        for o in sc.objects:
            assert o.shape in SHAPES and o.colour in COLOURS and o.size in SIZES
            sizes[o.size] += 1
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= sc.dims[0] and 0 <= y0 < y1 <= sc.dims[1], o.box
            assert x1 - x0 == y1 - y0  # square boxes
            lo, hi = cfg.small_px if o.size == "small" else cfg.large_px
            assert lo <= x1 - x0 <= hi
            assert 0.0 <= o.hue < 360.0
        for a, b in itertools.combinations(sc.objects, 2):
            assert not boxes_intersect(a.box, b.box), (a.box, b.box)
    # Every object count in the configured range actually occurs, and both object sizes.
    assert set(n_objects) == set(range(cfg.min_objects, cfg.max_objects + 1))
    assert set(sizes) == set(SIZES)
    assert set(dims) == (set(cfg.sizes) if cfg.sizes else {(cfg.image_size, cfg.image_size)})


def test_rendered_images_match_scenes(mixed):
    bg = np.array(WorldConfig().background, dtype=np.uint8)
    for name, sc in list(load_scenes(mixed).items())[:120]:
        with Image.open(mixed / name) as im:
            px = np.asarray(im.convert("RGB"))
        assert px.shape == (sc.dims[1], sc.dims[0], 3)
        inside = np.zeros(px.shape[:2], dtype=bool)
        for o in sc.objects:
            x0, y0, x1, y1 = o.box
            inside[y0:y1, x0:x1] = True
            cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
            p = px[cy, cx]
            assert not np.array_equal(p, bg), f"{name}: centre of {o.shape} at {o.box} is background"
            # The centre pixel carries the object's own (jittered) hue.
            assert hue_dist(hue_of(p), o.hue) < 2.0, (name, o, p)
            # Objects are solid-filled: the square fills its box, the circle's centre row is filled.
            if o.shape == "square":
                assert (px[y0:y1, x0:x1] == p).all()
        # Nothing is painted outside the objects' boxes.
        assert (px[~inside] == bg).all(), name


# --------------------------------------------------------------------------- ground truth


EXIST_RE = re.compile(r"^Is there a (\w+) (\w+) in the image\?$")
SPATIAL_RE = re.compile(r"^Where is the (.+) relative to the (.+)\?$")
ATTR_RE = re.compile(r"^What colour is the (.+)\?$")


def _resolve_unique(scene: Scene, name: str, with_colour: bool, box: list) -> object:
    """The single object a referring name denotes; check the name is the shortest one."""
    words = name.split()
    assert len(words) == (2 if with_colour else 1) or len(words) == (3 if with_colour else 2), name
    objs = matching(scene, words)
    assert len(objs) == 1, f"{name!r} does not pick out one object: {objs}"
    o = objs[0]
    assert list(o.box) == list(box)
    if words[0] in SIZES:  # the size was needed: the name without it is ambiguous
        assert len(matching(scene, words[1:])) > 1, name
    return o


def _qualifying_pairs(scene: Scene) -> list:
    """(a, b) pairs with an unambiguous relation where both have a unique colour+shape name
    (possibly with size) and whose centres straddle the image's centre line on that axis."""

    def nameable(o):
        return len(matching(scene, [o.colour, o.shape])) == 1 or len(matching(scene, [o.size, o.colour, o.shape])) == 1

    def straddle(a, b, rel):
        (ax, ay), (bx, by) = centre(a.box), centre(b.box)
        hx, hy = scene.dims[0] / 2, scene.dims[1] / 2
        return ((ax - hx) * (bx - hx) if rel in ("left", "right") else (ay - hy) * (by - hy)) < 0

    return [
        (a, b)
        for a, b in itertools.permutations(scene.objects, 2)
        if nameable(a) and nameable(b) and (rel := expected_relation(a.box, b.box)) is not None and straddle(a, b, rel)
    ]


def _attribute_candidates(scene: Scene) -> list:
    return [
        o for o in scene.objects if len(matching(scene, [o.shape])) == 1 or len(matching(scene, [o.size, o.shape])) == 1
    ]


def test_every_item_answer_rederived_from_scene(mixed):
    scenes = load_scenes(mixed)
    items = read_jsonl(mixed / "items.jsonl")
    assert len({r["id"] for r in items}) == len(items)
    per_image: dict[str, Counter] = {k: Counter() for k in scenes}
    checked = Counter()
    for r in items:
        sc = scenes[r["image"]]
        assert r["task"] in Q.TASKS
        assert len(r["answers"]) == 1
        ans = r["answers"][0]
        boxes = [reg["box"] for reg in r["regions"]]
        per_image[r["image"]][r["task"]] += 1
        idx = int(Path(r["image"]).stem)
        assert r["id"].startswith(f"sw{SEED}-{idx:06d}-{r['task']}-")

        if r["task"] == "existence":
            m = EXIST_RE.match(r["question"])
            assert m, r["question"]
            colour, shape = m.groups()
            assert colour in COLOURS and shape in SHAPES
            present = [o for o in sc.objects if o.colour == colour and o.shape == shape]
            assert ans == ("yes" if present else "no")
            assert r["meta"]["category"] == f"{colour} {shape}"
            assert sorted(boxes) == sorted(list(o.box) for o in present)
        elif r["task"] == "counting":
            assert r["question"] == "How many objects are in the image?"
            assert ans == str(len(sc.objects))
            assert sorted(boxes) == sorted(list(o.box) for o in sc.objects)
        elif r["task"] == "spatial":
            m = SPATIAL_RE.match(r["question"])
            assert m, r["question"]
            assert len(boxes) == 2
            a = _resolve_unique(sc, m.group(1), True, boxes[0])
            b = _resolve_unique(sc, m.group(2), True, boxes[1])
            assert a is not b
            (ax, ay), (bx, by) = centre(boxes[0]), centre(boxes[1])
            dx, dy = ax - bx, ay - by
            if abs(dx) > abs(dy):
                dom, other, word = abs(dx), abs(dy), ("left" if dx < 0 else "right")
            else:
                dom, other, word = abs(dy), abs(dx), ("above" if dy < 0 else "below")
            assert ans == word
            assert r["meta"]["relation"] == word
            assert dom >= Q.SPATIAL_MIN_PX
            assert dom >= Q.SPATIAL_DOMINANCE * other
            # the two centres straddle the image's centre line on the relation's axis
            half = (sc.dims[0] if word in ("left", "right") else sc.dims[1]) / 2
            ca, cb = (ax, bx) if word in ("left", "right") else (ay, by)
            assert (ca - half) * (cb - half) < 0
        elif r["task"] == "attribute":
            m = ATTR_RE.match(r["question"])
            assert m, r["question"]
            assert len(boxes) == 1
            o = _resolve_unique(sc, m.group(1), False, boxes[0])
            assert ans == o.colour
            assert ans in COLOURS
        checked[r["task"]] += 1
    assert set(checked) == set(Q.TASKS)

    # Which questions each image gets: 2 existence, 1 counting, and a spatial / attribute
    # question exactly when one can be asked unambiguously.
    for image, sc in scenes.items():
        c = per_image[image]
        assert c["existence"] == 2
        assert c["counting"] == 1
        assert c["spatial"] == (1 if _qualifying_pairs(sc) else 0), image
        assert c["attribute"] == (1 if _attribute_candidates(sc) else 0), image


# --------------------------------------------------------------------------- POPE sampling


def _existence_by_image(root: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in read_jsonl(root / "items.jsonl"):
        if r["task"] == "existence":
            out.setdefault(r["image"], []).append(r)
    return out


def test_pope_balanced_and_negatives_absent(mixed):
    scenes = load_scenes(mixed)
    ex = _existence_by_image(mixed)
    assert set(ex) == set(scenes)
    total = Counter()
    for image, recs in ex.items():
        answers = Counter(r["answers"][0] for r in recs)
        assert answers == Counter({"yes": 1, "no": 1}), image
        total.update(answers)
        present = {cat_of(o) for o in scenes[image].objects}
        idx = int(Path(image).stem)
        for r in recs:
            cat = r["meta"]["category"]
            assert (cat in present) == (r["answers"][0] == "yes")
            # "mixed" rotates the strategies by image index.
            assert r["meta"]["strategy"] == Q.POPE_STRATEGIES[idx % 3]
    assert total["yes"] == total["no"] == N_POPE


def test_pope_strategy_does_not_change_scenes(by_strategy):
    texts = {s: (root / "scenes.jsonl").read_bytes() for s, root in by_strategy.items()}
    assert len(set(texts.values())) == 1


@pytest.mark.parametrize("strategy", Q.POPE_STRATEGIES)
def test_pope_negatives_follow_strategy(by_strategy, strategy):
    root = by_strategy[strategy]
    scenes = load_scenes(root)
    freq, pairs = own_stats(list(scenes.values()))
    names = all_category_names()
    chosen_counter = Counter()
    for image, recs in _existence_by_image(root).items():
        (neg,) = [r for r in recs if r["answers"][0] == "no"]
        assert neg["meta"]["strategy"] == strategy
        cat = neg["meta"]["category"]
        present = {cat_of(o) for o in scenes[image].objects}
        absent = [n for n in names if n not in present]
        assert cat in absent
        chosen_counter[cat] += 1
        if strategy == "popular":
            better = [n for n in absent if freq[n] > freq[cat]]
            assert len(better) < 3, (image, cat, freq[cat], better)
        elif strategy == "adversarial":
            s = adversarial_score(cat, present, pairs)
            better = [n for n in absent if adversarial_score(n, present, pairs) > s]
            assert len(better) < 3, (image, cat, s, better)
    if strategy == "random":
        # Random negatives are spread over many categories, not a top-3 shortlist.
        assert len(chosen_counter) >= 12
    if strategy == "popular":
        # Popular negatives concentrate on the frequent categories.
        top = {n for n, _ in freq.most_common(6)}
        assert sum(chosen_counter[n] for n in top) / N_POPE > 0.9


def test_adversarial_negatives_cooccur_more_than_random(by_strategy):
    scenes = load_scenes(by_strategy["random"])  # identical for every strategy (tested above)
    _, pairs = own_stats(list(scenes.values()))
    mean_score = {}
    for strategy in ("random", "adversarial"):
        scores = []
        for image, recs in _existence_by_image(by_strategy[strategy]).items():
            (neg,) = [r for r in recs if r["answers"][0] == "no"]
            present = {cat_of(o) for o in scenes[image].objects}
            scores.append(adversarial_score(neg["meta"]["category"], present, pairs))
        mean_score[strategy] = float(np.mean(scores))
    assert mean_score["adversarial"] > mean_score["random"]
    assert mean_score["adversarial"] > 1.5 * mean_score["random"], mean_score


def test_world_has_cooccurrence_structure(mixed):
    scenes = list(load_scenes(mixed).values())
    n = len(scenes)
    freq, pairs = own_stats(scenes)
    lifts = {}
    for pair, k in pairs.items():
        a, b = tuple(pair)
        lifts[pair] = k / (freq[a] * freq[b] / n)  # observed / expected under independence
    strong = [p for p, lift in lifts.items() if pairs[p] >= 10 and lift >= 2.5]
    assert strong, max(lifts.values())
    # The structure comes from the world's theme groups: same-group pairs co-occur far
    # more than pairs across groups.
    names = [f"{c} {s}" for c, s in categories()]
    group = {names[i]: g for g, grp in enumerate(WorldStats.from_config(WorldConfig()).groups) for i in grp}
    within, across = [], []
    for a, b in itertools.combinations(names, 2):
        if freq[a] and freq[b]:
            lift = pairs[frozenset((a, b))] / (freq[a] * freq[b] / n)
            (within if group[a] == group[b] else across).append(lift)
    assert np.mean(within) > 2 * np.mean(across)


def test_no_cooccurrence_structure_without_themes(tmp_path):
    """Control: with theme_prob=0 categories are drawn independently, so the strong lift
    seen above must (mostly) vanish; this shows the lift test is not vacuous."""
    data, _ = generate(N_POPE, SEED, WorldConfig(theme_prob=0.0), tasks=("counting",))
    scenes = [sq.scene for sq in data]
    freq, pairs = own_stats(scenes)
    names = [f"{c} {s}" for c, s in categories()]
    group = {names[i]: g for g, grp in enumerate(WorldStats.from_config(WorldConfig()).groups) for i in grp}
    within, across = [], []
    for a, b in itertools.combinations(names, 2):
        if freq[a] and freq[b]:
            lift = pairs[frozenset((a, b))] / (freq[a] * freq[b] / len(scenes))
            (within if group[a] == group[b] else across).append(lift)
    assert np.mean(within) < 1.5 * np.mean(across)


def test_describe_with_quadrants_names_each_objects_quadrant_left_to_right():
    from vrp.world.questions import describe
    from vrp.world.scene import Obj, Scene

    sq = Obj("square", "blue", "large", (28, 30, 44, 46), hue=240.0)  # centre (36, 38): bottom right
    ci = Obj("circle", "red", "small", (2, 2, 12, 12), hue=0.0)  # centre (7, 7): top left
    scene = Scene([sq, ci], size=48)
    assert describe(scene) == "small red circle large blue square"
    assert describe(scene, quadrants=True) == "small red circle top left large blue square bottom right"


def test_outside_band_names_the_families_outside_the_target():
    from vrp.toys.evaluate import TARGET_BAND, outside_band

    by_task = {t: {"accuracy": a, "n": 100} for t, a in
               {"existence": 0.70, "counting": 0.699, "spatial": 0.92, "attribute": 0.93}.items()}  # fmt: skip
    assert TARGET_BAND == (0.70, 0.92)
    assert outside_band(by_task) == {"attribute": 0.93, "counting": 0.699}  # the bounds are inside
    assert outside_band(by_task, (0.0, 1.0)) == {}
