"""Image views: the mapping between the original image's pixels and a view's grid."""

from __future__ import annotations

import numpy as np
import pytest

from vrp.models.grids import ImageGrid, View, centre_crop_box, contiguous_runs, full_box, single_view


def _view(rows=2, cols=3, box=(0.0, 0.0, 60.0, 40.0), start=10, name="image"):
    return View(rows, cols, np.arange(start, start + rows * cols), box, name)


def test_to_grid_and_back_on_a_plain_resize():
    v = _view()
    assert v.to_grid((0, 0, 60, 40)) == (0.0, 0.0, 1.0, 1.0)
    assert v.to_grid((20, 20, 40, 40)) == pytest.approx((1 / 3, 0.5, 2 / 3, 1.0))
    assert v.to_image((1 / 3, 0.5, 2 / 3, 1.0)) == pytest.approx((20, 20, 40, 40))
    assert v.to_grid((70, 0, 80, 10)) is None  # outside the view


def test_centre_crop_box_matches_clip_geometry():
    # 64 x 48 image, shortest edge 48, crop 48 x 48: 8 px cut on each side
    box = centre_crop_box((64, 48), 48, (48, 48))
    assert box == pytest.approx((8.0, 0.0, 56.0, 48.0))
    # shortest edge 96 (scale 2), crop 96 x 96 of 128 x 96: the same region of the original
    assert centre_crop_box((64, 48), 96, (96, 96)) == pytest.approx(box)
    v = View(4, 4, np.arange(16), box)
    assert v.to_grid((0, 0, 8, 8)) is None  # cut off by the crop
    assert v.to_grid((8, 0, 20, 12)) == pytest.approx((0.0, 0.0, 0.25, 0.25))


def test_a_padded_view_spans_more_than_the_image():
    v = View(2, 2, np.arange(4), (-10.0, 0.0, 50.0, 60.0))  # padding left of the image
    assert v.to_grid((0, 0, 40, 60)) == pytest.approx((10 / 60, 0.0, 50 / 60, 1.0))
    assert v.to_image((0.0, 0.0, 0.5, 0.5)) == pytest.approx((-10.0, 0.0, 20.0, 30.0))


def test_image_grid_reads_like_its_canonical_view():
    g = ImageGrid(views=(_view(name="global"), _view(rows=4, cols=6, start=20, name="tiles")), canonical=1,
                  separators=np.array([16, 17]))  # fmt: skip
    assert (g.rows, g.cols) == (4, 6) and g.view.name == "tiles"
    assert list(g.token_index) == list(range(20, 44))
    assert len(g.patch_index) == 6 + 24
    assert g.find("global") == 0 and g.find(None) == 1 and g.find(-1) == 1
    moved = g.shifted(-10)
    assert moved.views[0].token_index[0] == 0 and list(moved.separators) == [6, 7]
    with pytest.raises(ValueError, match="no view named"):
        g.find("thumbnail")


def test_views_are_checked():
    with pytest.raises(ValueError, match="needs 6 tokens"):
        View(2, 3, np.arange(5), (0, 0, 1, 1))
    with pytest.raises(ValueError, match="empty box"):
        View(1, 1, np.arange(1), (0, 0, 0, 1))
    with pytest.raises(ValueError, match="must not share"):
        ImageGrid(views=(_view(), _view()))
    with pytest.raises(ValueError, match="canonical"):
        ImageGrid(views=(_view(),), canonical=1)
    g = single_view(1, 2, [3, 4], full_box((10, 5)), separators=[2])
    assert g.view.box == (0.0, 0.0, 10.0, 5.0) and list(g.separators) == [2]


def test_contiguous_runs():
    runs = contiguous_runs([3, 4, 5, 9, 10, 20])
    assert [r.tolist() for r in runs] == [[3, 4, 5], [9, 10], [20]]
    assert contiguous_runs([]) == []
