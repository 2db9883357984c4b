import numpy as np
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import (
    ImageGeometry, arrayFromImage, imageFromArray, lpsToRas, rasToLps, requireSameGrid)


def obliqueGeometry():
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    return ImageGeometry((5, 6, 7), (0.7, 0.8, 2.5), (-10.0, 20.0, 30.0), tuple(rot.ravel()))


def test_index_to_lps_matches_simpleitk():
    geom = obliqueGeometry()
    image = geom.emptyImage()
    for ijk in [(0, 0, 0), (4, 5, 6), (1, 2, 3)]:
        assert np.allclose(geom.indexToLps(ijk), image.TransformIndexToPhysicalPoint(ijk))
        assert np.allclose(geom.lpsToIndex(geom.indexToLps(ijk)), ijk)


def test_ras_matrix_negates_x_and_y():
    geom = obliqueGeometry()
    lps = geom.ijkToLpsMatrix() @ np.array([2, 3, 4, 1.0])
    ras = geom.ijkToRasMatrix() @ np.array([2, 3, 4, 1.0])
    assert np.allclose(ras[:3], lpsToRas(lps[:3]))
    assert np.allclose(rasToLps(lpsToRas(lps[:3])), lps[:3])


def test_array_round_trip_keeps_geometry_and_values():
    geom = obliqueGeometry()
    array = np.random.default_rng(0).random(geom.shape).astype(np.float32)
    back, backGeom = arrayFromImage(imageFromArray(array, geom))
    assert backGeom.sameGridAs(geom)
    assert np.array_equal(back, array)
    assert geom.voxelVolumeCc == pytest.approx(0.7 * 0.8 * 2.5 / 1000)


def test_mismatched_grids_are_refused():
    a = obliqueGeometry()
    b = ImageGeometry(a.sizeXyz, a.spacingMm, (0.0, 0.0, 0.0), a.direction)
    with pytest.raises(InputError, match="different grids"):
        requireSameGrid(a, b, "dose", "mask")
    with pytest.raises(InputError, match="does not match"):
        imageFromArray(np.zeros((2, 2, 2)), a)


def test_invalid_geometry_rejected():
    with pytest.raises(ValueError):
        ImageGeometry((2, 2, 2), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        ImageGeometry((2, 2, 2), (1, 1, 1), direction=(1, 0, 0, 0, 2, 0, 0, 0, 1))
    assert ImageGeometry.fromImage(sitk.Image(3, 4, 5, sitk.sitkUInt8)).shape == (5, 4, 3)


def test_coarsened_keeps_the_box_and_never_refines():
    rotated = tuple(sitk.VersorTransform((0, 0, 1), 0.2).GetMatrix())
    g = ImageGeometry((512, 512, 150), (0.98, 0.98, 2.0), (-250.0, -240.0, -150.0), rotated)
    c = g.coarsened(2.5)
    assert c.spacingMm == (2.5, 2.5, 2.5)
    assert c.originMm == g.originMm and c.direction == g.direction
    # first voxel centre kept; the last node reaches the last voxel centre or lies within one coarse step beyond
    extent = np.array(g.spacingMm) * (np.array(g.sizeXyz) - 1)
    reach = np.array(c.spacingMm) * (np.array(c.sizeXyz) - 1)
    assert np.all(reach >= extent - 1e-9) and np.all(reach < extent + 2.5)
    assert c.sizeXyz == (202, 202, 121)
    assert g.coarsened(0.5) == g  # already coarser: unchanged
    assert ImageGeometry((10, 10, 10), (3.5, 3.5, 5.0)).coarsened(2.5).spacingMm == (3.5, 3.5, 5.0)


def test_crop_is_the_sub_grid_at_an_index():
    geometry = ImageGeometry((10, 20, 30), (0.5, 1.0, 2.0), (5.0, -3.0, 7.0),
                             (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    box = geometry.crop((4, 2, 3), (5, 6, 7))  # k, j, i start and shape
    assert box.sizeXyz == (7, 6, 5) and box.spacingMm == geometry.spacingMm and box.direction == geometry.direction
    assert np.allclose(box.indexToLps((0, 0, 0)), geometry.indexToLps((3, 2, 4)))
    assert np.allclose(box.indexToLps((6, 5, 4)), geometry.indexToLps((9, 7, 8)))
    with pytest.raises(ValueError, match="not inside"):
        geometry.crop((0, 0, 8), (1, 1, 3))
