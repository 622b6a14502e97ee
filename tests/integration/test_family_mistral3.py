"""Mistral 3 specifics on the tiny model (real classes, real Pixtral processor): the row-break
and end tokens are separators, never patches, and the grid is the processor's rows x columns,
for landscape, portrait and downscaled images, alone and batched with padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vrp.models import adapter_for
from vrp.toys.tiny.mistral3 import build_mistral3

# (width, height) -> (rows, cols) of 12 px cells after the processor's resize
EXPECTED = {(72, 48): (4, 6), (44, 80): (7, 4), (130, 60): (4, 8)}


@pytest.fixture(scope="module")
def ad():
    model, processor = build_mistral3(0)
    return adapter_for("mistral3")(model=model.eval(), processor=processor, path="tiny-mistral3")


def _encode(ad, sizes):
    images = [Image.new("RGB", s, (128, 128, 128)) for s in sizes]
    enc = ad.encode(images, [ad.prompt(f"Question {i}?") for i in range(len(images))])
    return enc, ad.image_grids(enc, sizes)


@pytest.mark.parametrize("size", list(EXPECTED))
def test_row_breaks_and_the_end_token_are_separators_and_the_grid_is_the_processors(ad, size):
    enc, grids = _encode(ad, [size])
    (grid,) = grids[0]
    ids = enc["input_ids"][0].numpy()
    proc = ad.processor
    brk, end = np.flatnonzero(ids == proc.image_break_token_id), np.flatnonzero(ids == proc.image_end_token_id)
    # the processor's own row / column count: its resized size over patch_size * spatial_merge_size
    h, w = enc["image_sizes"][0].tolist()
    cell = proc.patch_size * proc.spatial_merge_size
    assert (grid.rows, grid.cols) == (h // cell, w // cell) == EXPECTED[size]
    assert grid.rows == len(brk) + len(end) and len(end) == 1
    assert sorted(grid.separators.tolist()) == sorted([*brk.tolist(), *end.tolist()])
    assert not np.isin(grid.patch_index, grid.separators).any()
    assert sorted(grid.patch_index.tolist()) == np.flatnonzero(ids == ad.image_token_id).tolist()
    # row-major: each row's cells are consecutive and its break (or the end) follows its last cell
    cells = grid.token_index.reshape(grid.rows, grid.cols)
    assert (np.diff(cells, axis=1) == 1).all()
    assert np.array_equal(cells[:, -1] + 1, np.sort(grid.separators))
    assert grid.view.box == (0.0, 0.0, float(size[0]), float(size[1]))


def test_grids_of_a_padded_batch_of_both_orientations(ad):
    sizes = list(EXPECTED)
    enc, grids = _encode(ad, sizes)
    assert [len(g) for g in grids] == [1, 1, 1]
    for b, size in enumerate(sizes):
        (grid,) = grids[b]
        enc_alone, ((alone,),) = _encode(ad, [size])
        offset = int((enc["attention_mask"][b] == 0).sum())  # the batch's left padding of this row
        assert enc["input_ids"].shape[1] - enc_alone["input_ids"].shape[1] == offset
        assert (grid.rows, grid.cols) == EXPECTED[size]
        assert np.array_equal(grid.token_index, alone.token_index + offset)
        assert np.array_equal(grid.separators, alone.separators + offset)


def test_a_token_layout_that_does_not_match_the_grid_is_an_error(ad):
    enc, _ = _encode(ad, [(72, 48)])
    ids = enc["input_ids"]
    first_break = int(np.flatnonzero(ids[0].numpy() == ad.processor.image_break_token_id)[0])
    enc["input_ids"] = torch.cat([ids[:, :first_break], ids[:, first_break + 1 :]], dim=1)  # one row break fewer
    with pytest.raises(ValueError, match=r"mistral3: image 0 .* 4x6 grid .* expected 24 \[IMG\] tokens .* found 24"):
        ad.image_grids(enc, [(72, 48)])
    enc["input_ids"] = torch.cat([ids[:, :first_break], ids[:, first_break - 1 :]], dim=1)  # one [IMG] more
    with pytest.raises(ValueError, match=r"mistral3: .* expected 24 \[IMG\] tokens .* found 25"):
        ad.image_grids(enc, [(72, 48)])


def test_one_bos_although_the_chat_template_writes_it(ad):
    enc, _ = _encode(ad, [(72, 48), (44, 80)])
    bos = ad.tokenizer.bos_token_id
    for ids, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist(), strict=True):
        real = [i for i, m in zip(ids, mask, strict=True) if m]
        assert real[0] == bos and real.count(bos) == 1
