"""Case studies: the most confident wrong answers and the least confident right ones."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vrp.report import figures as F
from vrp.report.data import RunData, TokenNames, finite, item_arrays, resolve_image, shard_meta
from vrp.report.html import Section, code, esc, howto, img, num

CONFIDENCE = "token_confidence"


def pick_cases(items: pd.DataFrame, n_cases: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``ceil(n/2)`` most confident wrong items and the ``floor(n/2)`` least confident right ones.

    Confidence is the model's own probability of its first answer token; items where it is
    NaN are skipped. Ties keep item order.
    """
    df = items[np.isfinite(items[CONFIDENCE].to_numpy(np.float64))]
    wrong = df[~df["correct"].astype(bool)].sort_values(CONFIDENCE, ascending=False, kind="stable")
    right = df[df["correct"].astype(bool)].sort_values(CONFIDENCE, ascending=True, kind="stable")
    return wrong.head((n_cases + 1) // 2), right.head(n_cases // 2)


def resolve_layer(layer: int | None, meta: dict) -> tuple[int | None, int | None]:
    """(decoder block, its index among the stored maps) of the overlay; default the last stored block.

    Raises:
        ValueError: ``layer`` is not a stored decoder block.
    """
    # the stored blocks with maps (runs before hybrid models: every stored block)
    stored = list(meta.get("attention_layers", meta.get("stored_layers", [])))
    n_layers = meta.get("n_layers")
    if not stored:
        return None, None
    if layer is None:
        return stored[-1], len(stored) - 1
    block = layer + n_layers if layer < 0 and n_layers else layer
    if block not in stored:
        raise ValueError(f"layer {layer} has no stored attention map; stored decoder blocks: {stored}")
    return block, stored.index(block)


def _load_image(path) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError:
        return None


def gold_regions(run: RunData, ids: list[str]) -> tuple[dict[str, list[list[float]]], str]:
    """The gold regions (pixel boxes ``[x0, y0, x1, y1]``) of ``ids`` from the run's data file, and a note.

    The run directory does not store the boxes: they are read back from the manifest's data path when it is a
    JSONL file of items (ShapesWorld, the generic format), found as stored or under the run directory (a moved
    run). Other sources give ``{}`` and the note says why (the overlays then show no box).
    """
    import json

    data = run.manifest.get("data") or {}
    stored = str(data.get("path") or "")
    if not stored.endswith(".jsonl"):
        what = f"the data source ({esc(data.get('format', '?'))}) is not a JSONL file" if stored else \
            "the manifest names no data file"  # fmt: skip
        return {}, f"gold regions not drawn: {what}"
    path = resolve_image(run, stored)  # the same lookup as an image: as stored, else a suffix under the run
    if path is None:
        return {}, f"gold regions not drawn: data file not found: {code(stored)}"
    want, out = set(ids), {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not want:
                break
            if '"regions"' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("id") in want:
                want.discard(rec["id"])
                out[rec["id"]] = [[float(v) for v in r["box"]] for r in rec.get("regions") or [] if "box" in r]
    return out, ""


def _card(run: RunData, row, arrays: dict, block: int | None, idx: int | None, names: TokenNames, probe: dict,
          extra: list[tuple[str, str]] | tuple = (), regions: list | None = None) -> str:  # fmt: skip
    att = arrays.get("attention")
    att_map = None
    if att is not None and idx is not None:
        a = att[idx]  # [rows, cols] (mean) or [H, rows, cols] (heads: raw per head)
        if a.ndim == 3:
            a = a.mean(axis=0)
        att_map = a / a.sum() if a.sum() > 0 else a
    path = resolve_image(run, row["image"])
    image = _load_image(path) if path is not None else None
    margin = arrays.get("curve.margin")
    top = arrays.get("curve.lens_top_id")
    tokens = [names(int(t)) for t in top] if top is not None else []
    answer_tok = tokens[-1] if tokens else "?"
    lens_title = f"logit lens: gold vs best other (last: '{answer_tok[:12]}')"
    box = arrays.get("view_box")  # runs before views were recorded: the grid stretched over the image
    png = F.case_figure(image, att_map, margin, tokens, f"attention, block {block}", lens_title,
                        None if box is None else tuple(float(v) for v in box), regions or ())  # fmt: skip
    wrong = not bool(row["correct"])
    tag = "<span class='tag wrong'>wrong</span>" if wrong else "<span class='tag right'>right</span>"
    gold = ", ".join(str(g) for g in row["gold"])
    facts = [
        ("task", esc(row["task"])), ("question", esc(row["question"])), ("gold", esc(gold)),
        ("answer", esc(row["answer"])), ("p(answer token)", num(row[CONFIDENCE])),
    ]  # fmt: skip
    if "self_consistency" in row and finite(row["self_consistency"]):
        facts.append(("self-consistency", num(row["self_consistency"], ".2f")))
    if "margin_last" in row:
        facts.append(("margin, last layer", num(row["margin_last"], "+.2f")))
    if probe:
        split = probe["split"]
        note = "" if split == "test" else " <span class='small'>(in the probe's training data)</span>" \
            if split == "train" else " <span class='small'>(validation item)</span>"  # fmt: skip
        facts.append(("probe p(correct)", f"{num(probe['p'])} [{esc(split)}]{note}"))
    else:
        facts.append(("probe p(correct)", "<span class='small'>no probes in this run</span>"))
    notes = []
    if path is None:
        notes.append(f"image file not found: {code(row['image'])}")
    elif image is None:
        notes.append(f"image file unreadable: {code(str(path))}")
    if att_map is None:
        notes.append("no attention map stored for this item")
    if not names.available and tokens:
        notes.append("token names unavailable (tokenizer file not found): ids shown")
    facts += list(extra)  # trusted HTML: e.g. the detachment galleries' attention facts
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    note_html = "".join(f"<p class='small'>{n}</p>" for n in notes)
    alt = f"case {row['id']}: image, attention overlay and logit-lens trajectory"
    return (f"<div class='case'><div><h4>{tag} {code(row['id'])}</h4><dl>{dl}</dl>{note_html}</div>"
            f"<div>{img(png, alt)}</div></div>")  # fmt: skip


def cases_section(run: RunData, layer: int | None, n_cases: int) -> Section:
    """Case cards: item facts, image, attention overlay at the chosen block, lens trajectory, probe score."""
    meta = shard_meta(run)
    block, idx = resolve_layer(layer, meta)
    guide = (
        "These are the items where the model's own confidence misleads most: wrong answers given with a high "
        "probability of the first answer token, and right answers given with a low one. For each, the image, the "
        f"attention over image patches at decoder block {esc(block)} (mean over heads and answer tokens, "
        "renormalized; the model's patch grid stretched over the image, so a processor crop shifts it "
        "slightly; the gold regions, where the data file has them, outlined in cyan), and the logit-lens "
        "trajectory: per residual layer, the gold answer's first token minus the "
        "best other token (above 0: that layer prefers the gold), labelled with the lens's top token; at the last "
        "layer the top token is the model's own first answer token. The probe score is the dense probe's "
        "p(correct): compare it with the model's confidence to see whether the hidden state 'knew' better. "
        "Use <code>vrp report --layer N</code> to overlay another block."
    )
    if CONFIDENCE not in run.items:
        return Section("cases", "Case studies", howto(guide) + "<p class='missing'>No token confidence column.</p>")
    wrong, right = pick_cases(run.items, n_cases)
    from vrp.report.detachment import detachment_block, gallery_ids, read_view  # attended-yet-wrong, missed-yet-right

    ids = list(wrong["id"]) + list(right["id"])
    ids += [i for g in gallery_ids(read_view(run), n_cases).values() for i in g if i not in ids]
    arrays = item_arrays(run, ids, ("attention", "view_box", "curve.margin", "curve.lens_top_id"))
    regions, region_note = gold_regions(run, ids)
    names = TokenNames(run)
    probe: dict[str, dict] = {}
    if run.predictions is not None and "probe_dense" in run.predictions:
        p = run.predictions.set_index("id")
        for i in ids:
            if i in p.index:
                probe[i] = {"p": float(p.loc[i, "probe_dense"]), "split": str(p.loc[i, "split"])}
    parts = [howto(guide)]
    if block is None or run.manifest.get("config", {}).get("store_attention") == "none":
        parts.append("<p class='missing'>This run stored no attention maps (<code>--store-attention none</code> "
                     "or <code>--store-layers none</code>): the overlays are empty.</p>")  # fmt: skip
    if region_note:
        parts.append(f"<p class='small'>{region_note}.</p>")
    for title, group in (("Most confident wrong answers", wrong), ("Least confident right answers", right)):
        parts.append(f"<h3>{title}</h3>")
        if group.empty:
            parts.append("<p>None in this run.</p>")
        for _, row in group.iterrows():
            parts.append(_card(run, row, arrays.get(row["id"], {}), block, idx, names, probe.get(row["id"], {}),
                               regions=regions.get(row["id"])))  # fmt: skip
    parts.append(detachment_block(run, n_cases, lambda row, extra: _card(
        run, row, arrays.get(row["id"], {}), block, idx, names, probe.get(row["id"], {}), extra,
        regions.get(row["id"])), block, meta.get("n_layers")))  # fmt: skip
    return Section("cases", "Case studies", "".join(parts))


def case_ids(run: RunData, n_cases: int) -> dict[str, list[str]]:
    """The ids the case section shows (for summary.json)."""
    from vrp.report.detachment import gallery_ids, read_view

    g = gallery_ids(read_view(run), n_cases)  # the symbolic-detachment galleries
    if CONFIDENCE not in run.items:
        return {"confident_wrong": [], "unconfident_right": [], "attended_wrong": [], "missed_right": []}
    wrong, right = pick_cases(run.items, n_cases)
    return {"confident_wrong": list(wrong["id"]), "unconfident_right": list(right["id"]),
            "attended_wrong": g["focused_wrong"], "missed_right": g["missed_right"]}  # fmt: skip
