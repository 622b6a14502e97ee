"""The attention-supervision record and the supervised / unsupervised head groups: the record
round-trips, the shipped toys carry what their recipes supervised, and the group means exclude
exactly the recorded heads (against an independent loop over the cells)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vrp.analysis.head_groups import SOURCE, group_means, supervised_mask
from vrp.analysis.heads import HEAD_FEATURES
from vrp.config import TOY_MODELS
from vrp.models.loading import resolve_model_path
from vrp.models.supervision import FILE, read_supervised_heads, supervision_record, write_supervision
from vrp.signals.catalog import DERIVED
from vrp.toys.config import TrainConfig
from vrp.toys.recipes import RECIPES


def test_the_record_round_trips(tmp_path):
    rec = supervision_record({"spatial": ((2, 0), (2, 1)), "existence": ((2, 2),), "attribute": ((2, 0),)}, 1.0)
    assert rec["supervised_heads"] == [[2, 0], [2, 1], [2, 2]]
    write_supervision(tmp_path, rec)
    assert read_supervised_heads(tmp_path) == ((2, 0), (2, 1), (2, 2))
    assert json.loads((tmp_path / FILE).read_text()) == rec


def test_no_record_means_no_supervision_and_a_bad_record_fails(tmp_path):
    assert read_supervised_heads(tmp_path) == ()  # a hub model: no file
    assert read_supervised_heads(tmp_path / "not-a-folder") == ()
    (tmp_path / FILE).write_text(json.dumps({"supervised_heads": [[2, 0]]}))  # no format
    with pytest.raises(ValueError, match="not an attention-supervision record"):
        read_supervised_heads(tmp_path)
    (tmp_path / FILE).write_text(json.dumps({"format": "vrp-attention-supervision/1", "supervised_heads": [[2]]}))
    with pytest.raises(ValueError, match="block, head"):
        read_supervised_heads(tmp_path)


def test_recipes_supervise_what_the_supervisor_pushes():
    assert TrainConfig().supervised_by_task() == {}  # attn_sup_weight 0: nothing supervised
    by_task = RECIPES["llava"].supervised_by_task()
    assert by_task["spatial"] == ((2, 0), (2, 1)) and by_task["existence"] == ((2, 2),)
    assert by_task["attribute"] == by_task["position"] == ((2, 0),)
    assert (
        "counting" in RECIPES["qwen2vl"].supervised_by_task()
        and "existence" not in RECIPES["qwen2vl"].supervised_by_task()
    )


@pytest.mark.parametrize("name", TOY_MODELS)
def test_shipped_toys_record_the_heads_their_training_supervised(name):
    d = resolve_model_path(name)
    cfg = TrainConfig.from_dict(json.loads((d / "training_log.json").read_text())["config"])
    expected = sorted({p for heads in cfg.supervised_by_task().values() for p in heads})
    assert list(read_supervised_heads(d)) == expected
    assert expected[:2] == [(2, 0), (2, 1)] and len(expected) == (3 if name == "toy-llava" else 2)


def _independent(f: np.ndarray, supervised: set, group: str) -> np.ndarray:
    out = []
    for item in f:
        vals = [item[b, h] for b in range(f.shape[1]) for h in range(f.shape[2])
                if ((b, h) in supervised) == (group == "sup") and not math.isnan(item[b, h])]  # fmt: skip
        out.append(sum(vals) / len(vals) if vals else math.nan)
    return np.array(out)


@pytest.mark.parametrize("supervised", [{(2, 0), (2, 1), (2, 2)}, {(0, 3)}, set()])
def test_groups_exclude_exactly_the_recorded_heads(supervised):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(25, 4, 4))
    f[:, 1] = np.nan  # a block without attention
    f[0, 2, :] = np.nan  # one item with its supervised block undefined
    out = group_means({"entropy": f}, sorted(supervised))
    np.testing.assert_allclose(out["attn_entropy_unsup"], _independent(f, supervised, "unsup"))
    np.testing.assert_array_equal(np.isnan(out["attn_entropy_sup"]), np.isnan(_independent(f, supervised, "sup")))
    np.testing.assert_allclose(out["attn_entropy_sup"], _independent(f, supervised, "sup"))
    if not supervised:  # a model without the record: every head unsupervised, the supervised group undefined
        assert np.isnan(out["attn_entropy_sup"]).all()
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(out["attn_entropy_unsup"], np.nanmean(f.reshape(25, -1), axis=1))
    # moving a supervised head's value moves only the supervised mean
    g = f.copy()
    for b, h in supervised:
        g[:, b, h] += 100.0
    moved = group_means({"entropy": g}, sorted(supervised))
    np.testing.assert_allclose(moved["attn_entropy_unsup"], out["attn_entropy_unsup"])


def test_a_head_outside_the_curves_fails():
    with pytest.raises(ValueError, match="outside"):
        supervised_mask((4, 4), [(4, 0)])


def test_catalog_has_both_groups_of_every_head_feature():
    names = {d.name for d in DERIVED if d.source == SOURCE}
    assert names == {f"attn_{f}_{g}" for f in HEAD_FEATURES for g in ("sup", "unsup")}
    assert all(d.made_by == "vrp analyze" and d.family == "structural" for d in DERIVED if d.source == SOURCE)
