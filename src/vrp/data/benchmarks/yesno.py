"""AMBER (discriminative part) and HallusionBench: yes/no hallucination benchmarks.

``amber:QUERY.json+ANNOTATIONS.json[@IMAGE_DIR][#existence|attribute|relation]`` reads
AMBER's published files: a query list ``[{id, image, query}]`` (e.g.
``data/query/query_discriminative.json``) and ``data/annotations.json`` (``[{id, type,
truth}]``; discriminative types are ``discriminative-hallucination`` = existence,
``discriminative-attribute-{state,number,action}`` = attribute, anything else = relation,
with ``truth`` "yes"/"no"). Queries whose annotation is ``generative`` (captioning, ids
1-1004) are not loaded: they are counted under ``skipped`` in the run's data provenance.
The official script looks annotations up by position (``annotations[id - 1]``); vrp looks
them up by their ``id`` field, which is the same on the published file. Task ``amber``,
scored by the official exact "Yes"/"No" rule.

``hallusionbench:HallusionBench.json[@IMAGE_ROOT][#VD|VS]`` reads the published list of
``{category, subcategory, visual_input, set_id, figure_id, sample_note, question_id,
question, gt_answer_details, gt_answer, filename}``; ``gt_answer`` "1" = yes, "0" = no,
``filename`` (``./hallusion_bench/VD/illusion/0_0.png``) is relative to IMAGE_ROOT (default:
the JSON file's folder). Questions without an image (``visual_input`` "0") are not loaded
(counted under ``skipped``). Item ids are ``category_subcategory_setid_figureid_questionid``,
the key the official evaluation uses. Task ``hallusionbench``.
"""

from __future__ import annotations

from pathlib import Path

from vrp.data.benchmarks._common import (
    BenchSpec,
    Collector,
    field_of,
    id_of,
    peek_id,
    read_json,
    text_of,
    top_list,
)
from vrp.data.items import Item

AMBER_SPLITS = ("existence", "attribute", "relation")
HALLUSION_SPLITS = ("VD", "VS")


def amber_dimension(kind: str) -> str:
    """AMBER's dimension of a discriminative annotation type, as its inference.py groups them."""
    if kind == "discriminative-hallucination":
        return "existence"
    if kind.startswith("discriminative-attribute"):
        return "attribute"
    return "relation"


def load_amber(spec: BenchSpec, run_dir: Path) -> Collector:
    """Load AMBER's discriminative queries with their yes/no truth (see the module docstring)."""
    qpath, apath = spec.files
    queries = top_list(read_json(qpath, "amber"), qpath, "amber query")
    annotations = top_list(read_json(apath, "amber"), apath, "amber annotations")
    c = Collector()
    by_id: dict[int, dict] = {}
    for i, a in enumerate(annotations):
        try:
            aid = field_of(a, "id", int)
            kind = text_of(a, "type")
            if kind != "generative" and field_of(a, "truth", str) not in ("yes", "no"):
                raise ValueError(f"'truth' of a {kind} annotation must be 'yes' or 'no', got {a['truth']!r}")
            if aid in by_id:
                raise ValueError(f"duplicate annotation id {aid}")
        except ValueError as e:
            c.fail(f"{apath}:[{i}]", str(e), peek_id(a, "id"))
            continue
        by_id[aid] = a  # type: ignore[index]
    images = spec.images(qpath.parent)
    for i, q in enumerate(queries):
        src = f"{qpath}:[{i}]"

        def build(q: object = q, src: str = src) -> Item | None:
            qid = field_of(q, "id", int)
            image, query = text_of(q, "image"), text_of(q, "query")
            a = by_id.get(qid)  # type: ignore[arg-type]
            if a is None:
                raise ValueError(f"no valid annotation with id {qid} in {apath}")
            if a["type"] == "generative":
                c.skipped["generative (captioning) query"] += 1
                return None
            dim = amber_dimension(a["type"])
            if not spec.wants(dim):
                return None
            return Item(
                id=str(qid),
                image=images.resolve(image),
                question=query,
                answers=(a["truth"],),
                task="amber",
                meta={"split": dim, "type": a["type"], "amber_id": qid, "source": src},
            )

        c.consume(src, build, peek_id(q, "id"))
    return c


def load_hallusionbench(spec: BenchSpec, run_dir: Path) -> Collector:
    """Load HallusionBench's image questions (see the module docstring)."""
    path = spec.files[0]
    records = top_list(read_json(path, "hallusionbench"), path, "hallusionbench")
    images = spec.images(path.parent)
    c = Collector()
    for i, r in enumerate(records):
        src = f"{path}:[{i}]"

        def build(r: object = r, src: str = src) -> Item | None:
            keys = ("category", "subcategory", "set_id", "figure_id", "question_id")
            parts = [id_of(r, k) for k in keys]
            visual = id_of(r, "visual_input")
            question = text_of(r, "question")
            gt = id_of(r, "gt_answer")
            if gt not in ("0", "1"):
                raise ValueError(f"'gt_answer' must be '0' (no) or '1' (yes), got {gt!r}")
            if visual == "0":
                c.skipped["text-only question (visual_input 0)"] += 1
                return None
            if not spec.wants(parts[0]):
                return None
            meta = {k: r[k] for k in (*keys, "visual_input", "sample_note", "gt_answer_details") if k in r}  # type: ignore[index]
            return Item(
                id="_".join(parts),
                image=images.resolve(text_of(r, "filename")),
                question=question,
                answers=("yes" if gt == "1" else "no",),
                task="hallusionbench",
                meta={**meta, "split": parts[0], "source": src},
            )

        c.consume(src, build, None)
    return c
