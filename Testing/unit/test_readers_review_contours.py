"""Contour planes -> slabs (readers review): half-open slabs (a slice exactly half-way between planes goes to one of
them, not both, and none beyond the ends), each plane's slab reaching half-way to its neighbouring planes of the whole
structure set (non-uniform CT slices, sparse and one-plane ROIs), and one plane's contours grouped despite a z jitter
of a few hundredths of a millimetre."""

import numpy as np
import pytest

from ReirradiationDoseLib.core.contours import polygonAreaMm2, rasterizeContours, structureSetPlaneSpacing
from ReirradiationDoseLib.core.geometry import ImageGeometry


def square(halfMm, z, cx=0.0, cy=0.0):
    return np.array([[cx - halfMm, cy - halfMm, z], [cx + halfMm, cy - halfMm, z], [cx + halfMm, cy + halfMm, z],
                     [cx - halfMm, cy + halfMm, z]], float)


def circle(cx, cy, r, z, n=64):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)])


def volumeCc(mask, geometry):
    return mask.sum() * geometry.voxelVolumeCc


def slicesUsed(mask):
    return np.nonzero(mask.any(axis=(1, 2)))[0]


@pytest.mark.parametrize("planes", [1, 2, 5, 20])
@pytest.mark.parametrize("z0", [0.0, -122.44])
def test_planes_half_way_between_slices_fill_one_slice_each(planes, z0):
    # 3 mm planes, 3 mm slices offset by half a slice: every slab boundary is exactly on a slice centre
    contours = [square(10, z) for z in z0 + 3.0 * np.arange(planes)]
    geometry = ImageGeometry((41, 41, planes + 6), (1.0, 1.0, 3.0), (-20.0, -20.0, z0 - 1.5 - 9.0))
    mask, _ = rasterizeContours(contours, geometry, "square")
    assert len(slicesUsed(mask)) == planes  # was planes + 1
    assert volumeCc(mask, geometry) == pytest.approx(0.4 * 3.0 * planes)


def test_planes_on_slices_of_a_finer_grid_keep_their_volume():
    # 3 mm planes lying on slices of a 1.5 mm grid: each plane's slab holds two slice centres (one on its edge)
    contours = [square(10, z) for z in 3.0 * np.arange(6)]
    geometry = ImageGeometry((41, 41, 20), (1.0, 1.0, 1.5), (-20.0, -20.0, -6.0))
    mask, report = rasterizeContours(contours, geometry, "square")
    assert len(slicesUsed(mask)) == 12
    assert volumeCc(mask, geometry) == pytest.approx(0.4 * 3.0 * 6)
    assert report.planeSpacingMm == pytest.approx(3.0)


def test_non_uniform_planes_each_reach_half_way_to_their_neighbours():
    # planes 2 mm apart in the middle, 5 mm at the ends (a CT with two slice spacings); slab edges -1, 1, 3, 6.5,
    # 11.5, 16.5 (end planes: half their one gap) on a 0.5 mm grid whose slice centres never fall on an edge
    planes = [0.0, 2.0, 4.0, 9.0, 14.0]
    geometry = ImageGeometry((41, 41, 50), (1.0, 1.0, 0.5), (-20.0, -20.0, -4.75))
    mask, _ = rasterizeContours([square(10, z) for z in planes], geometry, "square")
    assert volumeCc(mask, geometry) == pytest.approx(0.4 * 17.5)  # median slab (2 mm): 0.4 x 10
    used = slicesUsed(mask)
    assert len(used) == used.max() - used.min() + 1  # no empty slice inside the structure


def test_sparse_and_one_plane_rois_take_their_slab_from_the_structure_set():
    # BODY on every 2.5 mm CT slice; fiducials drawn on one slice each, nodes on two pairs of slices
    body = [circle(0, 0, 60, z) for z in np.arange(-50, 50.1, 2.5)]
    fiducials = [circle(x, 0, 1.5, z) for x, z in ((-10, -20.0), (5, 0.0), (12, 25.0))]
    nodes = [circle(-30, 10, 6, z) for z in (-30.0, -27.5)] + [circle(30, 10, 6, z) for z in (10.0, 12.5)]
    for geometry in (ImageGeometry((301, 61, 41), (0.5, 0.5, 2.5), (-75.0, -15.0, -50.0)),
                     ImageGeometry((61, 13, 41), (2.5, 2.5, 2.5), (-75.0, -15.0, -50.0))):
        setSpacing = structureSetPlaneSpacing([body, fiducials, nodes], geometry)
        assert setSpacing == pytest.approx(2.5)
        mask, report = rasterizeContours(fiducials, geometry, "Fiducials", setPlaneSpacingMm=setSpacing)
        assert len(slicesUsed(mask)) == 3  # was 26: each fiducial filled the 22.5 mm to the next
        assert report.planeSpacingMm == pytest.approx(2.5)
        mask, _ = rasterizeContours(nodes, geometry, "Nodes", setPlaneSpacingMm=setSpacing)
        assert len(slicesUsed(mask)) == 4
    # a one-plane ROI drawn on a 3 mm CT, on a 1 mm grid: a 3 mm slab (was the grid's 1 mm: -67 %)
    ct = [square(40, z) for z in np.arange(-15, 15.1, 3.0) + 0.2]
    geometry = ImageGeometry((41, 41, 31), (1.0, 1.0, 1.0), (-20.0, -20.0, -15.0))
    mask, _ = rasterizeContours([square(10, 0.2)], geometry, "one plane",
                                setPlaneSpacingMm=structureSetPlaneSpacing([ct], geometry))
    assert volumeCc(mask, geometry) == pytest.approx(0.4 * 3.0)


def test_a_gap_in_a_sparse_structure_set_is_not_filled():
    # a structure set holding only one ROI made of two runs of 2.5 mm planes 37.5 mm apart (two lesions): the
    # planes next to the gap reach 1.25 mm into it, not half-way across
    contours = [circle(0, 0, 6, z) for z in (-30.0, -27.5, 10.0, 12.5)]
    geometry = ImageGeometry((41, 41, 41), (0.5, 0.5, 2.5), (-10.0, -10.0, -50.0))
    mask, _ = rasterizeContours(contours, geometry, "two lesions")
    assert len(slicesUsed(mask)) == 4


def test_one_plane_with_z_jitter_stays_one_plane():
    outer, hole = square(15, 0.0)[:, :2], square(5, 0.0)[:, :2]
    exactCc = (polygonAreaMm2(outer) - polygonAreaMm2(hole)) * 3.0 * 11 / 1000
    for originZ in (-3.0, -2.4):  # slices on the planes, and 0.6 mm off them
        geometry = ImageGeometry((41, 41, 16), (1.0, 1.0, 3.0), (-20.0, -20.0, originZ))
        for jitter in (0.0, 0.06, 0.2):  # the hole written 0.06 mm above its outline: 22 planes, ring filled
            contours = []
            for z in np.arange(0, 30.1, 3.0):
                contours += [np.column_stack([outer, np.full(4, z)]), np.column_stack([hole, np.full(4, z + jitter)])]
            mask, report = rasterizeContours(contours, geometry, "ring")
            assert report.numberOfPlanes == 11
            assert volumeCc(mask, geometry) == pytest.approx(exactCc), (originZ, jitter)


@pytest.mark.parametrize("offsetMm, gridMm", [(1.5, 3.0), (0.4, 3.0), (0.4, 2.5), (0.4, 1.0)])
def test_rois_drawn_on_interleaved_planes_keep_their_own_slabs(offsetMm, gridMm):
    """Two ROIs of one set drawn on two series 3 mm apart, offset by ``offsetMm`` (a second series, an offset
    reconstruction): each keeps its 3 mm slabs (with the union of the set's planes as slabs, ROI B read 0 cc and the
    real dicompyler heart moved by 1.5 mm 0 instead of 440 cc)."""
    roiA = [square(20, z) for z in np.arange(0, 61, 3.0)]
    roiB = [square(20, z) for z in np.arange(offsetMm, 61, 3.0)]
    n = int(round(66.0 / gridMm))
    geometry = ImageGeometry((41, 41, n), (1.0, 1.0, gridMm), (-20.0, -20.0, -3.0))
    setSpacing = structureSetPlaneSpacing([roiA, roiB], geometry)
    assert setSpacing == pytest.approx(3.0)
    for roi in (roiA, roiB):
        mask, _ = rasterizeContours(roi, geometry, "roi", setPlaneSpacingMm=setSpacing)
        # 21 slabs of 3 mm of a 40 x 40 mm square (1.6 cc per mm), within one grid slice
        assert volumeCc(mask, geometry) == pytest.approx(1.6 * 63.0, abs=1.6 * gridMm + 1e-6)


def test_thin_slice_planes_are_not_merged_on_a_coarse_grid():
    """0.3 mm CBCT planes on a 3 mm grid: the grouping tolerance comes from the planes, not the grid (they merged into
    one plane and the ROI read 0 cc)."""
    planes = np.arange(0, 15.01, 0.3)
    geometry = ImageGeometry((41, 41, 7), (1.0, 1.0, 3.0), (-20.0, -20.0, -1.5))
    mask, report = rasterizeContours([square(10, z) for z in planes], geometry, "cbct")
    assert report.numberOfPlanes == len(planes)
    assert volumeCc(mask, geometry) == pytest.approx(0.4 * 15.0, abs=0.4 * 3.0)
