"""Our .seg.nrrd against Slicer's own segmentation storage (slicer-core, no application): Slicer loads what we
write (names, colors, voxels, geometry in RAS) and we read what Slicer writes (4D layered, cropped to the extent)."""

import numpy as np
import pytest

from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.segio import readSegmentation, readSegmentationWithGeometry, writeSegNrrd

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e .[test])")

GEOMETRY = ImageGeometry((30, 26, 12), (0.8, 1.1, 2.0), (-60.3, 20.1, -100.0))


def masks():
    k, j, i = np.mgrid[:12, :26, :30]
    return {"PTV": (i - 15) ** 2 + (j - 13) ** 2 + (2 * (k - 6)) ** 2 < 80,
            "Bladder": (i > 18) & (j > 15) & (k > 3)}  # overlaps the PTV: two layers


@pytest.fixture
def scene():
    from ReirradiationDoseLib.mrml.scene import closeScene, createScene

    newScene = createScene()
    yield newScene
    closeScene(newScene)


def test_slicer_loads_our_seg_nrrd_and_we_read_slicers(tmp_path, scene):
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    m = masks()
    writeSegNrrd(tmp_path / "ours.seg.nrrd", m, GEOMETRY, colors={"PTV": (1.0, 0.0, 0.0)})
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "ours.seg.nrrd"))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    for n in range(2):
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(n))
        labelmap = segment.GetRepresentation("Binary labelmap")
        extent = labelmap.GetExtent()
        dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
        values = vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1])
        assert (values == segment.GetLabelValue()).sum() == m[segment.GetName()].sum()
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(matrix)
        ijkToRas = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        assert np.allclose(ijkToRas, GEOMETRY.ijkToRasMatrix(), atol=1e-6)  # LPS file -> RAS in Slicer
        if segment.GetName() == "PTV":
            assert segment.GetColor() == pytest.approx((1.0, 0.0, 0.0))
    # Slicer writes it back (cropped to the segments' extent, 4D layered); we read it and place it on our grid
    segmentation.GetSegment("PTV").SetName("PTV renamed")
    storage.SetFileName(str(tmp_path / "slicer.seg.nrrd"))
    assert storage.WriteData(node) == 1
    back, geometry, colors = readSegmentationWithGeometry(tmp_path / "slicer.seg.nrrd")
    assert not geometry.sameGridAs(GEOMETRY)  # cropped
    assert colors["PTV renamed"] == pytest.approx((1.0, 0.0, 0.0))
    placed = readSegmentation(tmp_path / "slicer.seg.nrrd", GEOMETRY)
    assert np.array_equal(placed["PTV renamed"], m["PTV"])
    assert np.array_equal(placed["Bladder"], m["Bladder"])
