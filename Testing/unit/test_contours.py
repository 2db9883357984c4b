"""Planar contours <-> masks (core/contours.py): analytic areas, even-odd holes, plane assignment, exact round trip."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ReirradiationDoseLib.core.contours import (
    maskToContours,
    polygonAreaMm2,
    rasterizeContours,
    rasterizeSlicePolygons,
    sliceToContours,
)
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry


def circle(cx, cy, r, z, n=720):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)])


def square(x0, y0, x1, y1, z):
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=float)


def test_polygon_area_shoelace():
    assert polygonAreaMm2(np.array([[0, 0], [4, 0], [4, 3], [0, 3]])) == pytest.approx(12.0)
    assert polygonAreaMm2(circle(0, 0, 10, 0)[:, :2]) == pytest.approx(np.pi * 100, rel=1e-4)


def test_square_pixel_centres_inside_exactly():
    # square from 1.5 to 4.5 in index space encloses centres 2, 3, 4 in both directions -> 9 pixels
    mask = rasterizeSlicePolygons([np.array([[1.5, 1.5], [4.5, 1.5], [4.5, 4.5], [1.5, 4.5]])], (8, 8))
    expected = np.zeros((8, 8), bool)
    expected[2:5, 2:5] = True
    assert np.array_equal(mask, expected)


def test_shared_edge_counted_once():
    # two squares sharing the edge x = 3 (through pixel centres): every centre belongs to exactly one of them
    a = rasterizeSlicePolygons([np.array([[0, 0], [3, 0], [3, 5], [0, 5]], float)], (8, 8))
    b = rasterizeSlicePolygons([np.array([[3, 0], [6, 0], [6, 5], [3, 5]], float)], (8, 8))
    both = rasterizeSlicePolygons([np.array([[0, 0], [6, 0], [6, 5], [0, 5]], float)], (8, 8))
    assert not np.any(a & b)
    assert np.array_equal(a | b, both)


def test_circle_area_and_ring_with_hole_even_odd():
    g = ImageGeometry((200, 200, 3), (0.25, 0.25, 2.0), (-25.0, -25.0, -2.0))
    outer, inner = circle(0, 0, 20, 0.0), circle(0, 0, 10, 0.0)
    mask, report = rasterizeContours([outer, inner], g, planeThicknessMm=2.0)
    area = mask[1].sum() * 0.25 * 0.25
    assert area == pytest.approx(np.pi * (400 - 100), rel=5e-3)
    assert not mask[1, 100, 100]  # the centre (0, 0) is in the hole
    assert report.numberOfPlanes == 1 and report.numberOfContours == 2
    # the single plane of thickness 2 mm serves only the slice at z = 0
    assert mask[0].sum() == 0 and mask[2].sum() == 0


def test_two_separate_contours_and_island_in_hole():
    g = ImageGeometry((100, 100, 1), (0.5, 0.5, 1.0), (0.0, 0.0, 0.0))
    contours = [square(2, 2, 12, 12, 0), square(20, 20, 30, 30, 0), circle(25, 25, 4, 0), circle(25, 25, 2, 0)]
    mask, _ = rasterizeContours(contours, g, planeThicknessMm=1.0)
    ij = lambda x, y: (0, int(round(y / 0.5)), int(round(x / 0.5)))  # noqa: E731
    assert mask[ij(7, 7)] and mask[ij(22, 22)]
    assert not mask[ij(25, 28)]  # in the hole (between r 2 and r 4)
    assert mask[ij(25, 25)]  # island inside the hole (third level of nesting)
    expected = 100 + 100 - np.pi * 16 + np.pi * 4
    assert mask.sum() * 0.25 == pytest.approx(expected, rel=0.02)


def test_planes_coarser_than_slices_fill_their_slab():
    # contours every 3 mm on a 1 mm grid: each plane covers +-1.5 mm -> a 6-plane cylinder covers 18 slices
    g = ImageGeometry((60, 60, 30), (1.0, 1.0, 1.0), (-30.0, -30.0, 0.0))
    contours = [circle(0, 0, 10, z) for z in np.arange(6.0, 22.0, 3.0)]
    mask, report = rasterizeContours(contours, g)
    assert report.planeSpacingMm == pytest.approx(3.0)
    filled = np.nonzero(mask.any(axis=(1, 2)))[0]
    # planes 6..21: slab 4.5..22.5 -> slice centres 5..22 (4.5 and 22.5 are exactly on the boundary: included)
    assert filled.min() in (4, 5) and filled.max() in (22, 23)
    assert len(filled) in (18, 19)
    volumeCc = mask.sum() * g.voxelVolumeCc
    assert volumeCc == pytest.approx(np.pi * 100 * 18 / 1000, rel=0.06)


def test_contours_off_plane_go_to_nearest_slice():
    g = ImageGeometry((40, 40, 10), (1.0, 1.0, 2.5), (-20.0, -20.0, 0.0))
    mask, _ = rasterizeContours([circle(0, 0, 5, 10.6)], g, planeThicknessMm=2.5)  # 0.6 mm off slice 4 (z = 10)
    assert np.nonzero(mask.any(axis=(1, 2)))[0].tolist() == [4]


def test_tilted_contour_refused_and_outside_reported():
    g = ImageGeometry((20, 20, 5), (1.0, 1.0, 1.0))
    tilted = np.array([[1, 1, 0], [10, 1, 5], [10, 10, 5], [1, 10, 0]], float)
    with pytest.raises(InputError, match="not parallel"):
        rasterizeContours([tilted], g)
    _, report = rasterizeContours([square(-10, -10, 30, 30, 2), square(2, 2, 5, 5, 50)], g, planeThicknessMm=1.0)
    assert report.planesOutside == 1
    assert report.pointsOutsideInPlane == 4
    assert report.partlyOutside


def test_slice_to_contours_holes_and_diagonal_touch():
    m = np.zeros((12, 12), bool)
    m[2:9, 2:9] = True
    m[4:7, 4:7] = False  # hole
    m[9, 9] = True  # touches the square at a corner only
    polys = sliceToContours(m)
    assert len(polys) == 3
    assert np.array_equal(rasterizeSlicePolygons(polys, m.shape), m)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.2, 0.8))
def test_mask_contour_round_trip_is_exact(seed, density):
    rng = np.random.default_rng(seed)
    g = ImageGeometry((17, 13, 4), (0.8, 1.3, 2.0), (-5.2, 11.0, -40.0),
                      tuple(np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float).ravel()))
    mask = rng.random(g.shape) < density
    contours = maskToContours(mask, g)
    flat = [c for cs in contours.values() for c in cs]
    back, _ = rasterizeContours(flat, g, planeThicknessMm=2.0)
    assert np.array_equal(back, mask)
