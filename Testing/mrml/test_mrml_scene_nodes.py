"""The MRML scene set-up and node conversions (volumes, segmentations, subject hierarchy) on a real scene."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry, lpsToRas
from ReirradiationDoseLib.mrml import nodes as N
from ReirradiationDoseLib.mrml.scene import applicationLogic, createScene, moduleLogic

pytestmark = pytest.mark.mrml

OBLIQUE = Rotation.from_euler("zyx", [20.0, 10.0, -15.0], degrees=True).as_matrix()


def obliqueGeometry() -> ImageGeometry:
    return ImageGeometry((20, 16, 12), (1.5, 2.0, 3.0), (10.0, -20.0, 5.0), tuple(OBLIQUE.ravel()))


def nodeCount(scene) -> int:
    return scene.GetNumberOfNodes()


# ---- scene -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("className", [
    "vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLModelNode",
    "vtkMRMLTableNode", "vtkMRMLPlotChartNode", "vtkMRMLPlotSeriesNode", "vtkMRMLMarkupsFiducialNode",
    "vtkMRMLMarkupsLineNode", "vtkMRMLColorTableNode", "vtkMRMLColorLegendDisplayNode", "vtkMRMLTextNode",
    "vtkMRMLLinearTransformNode", "vtkMRMLSequenceNode", "vtkMRMLVolumeArchetypeStorageNode",
    "vtkMRMLSegmentationStorageNode", "vtkMRMLModelStorageNode", "vtkMRMLTableStorageNode",
])
def test_scene_creates_every_node_class_we_use(scene, className):
    node = scene.AddNewNodeByClass(className)
    assert node is not None and node.GetClassName() == className
    assert scene.GetNodeByID(node.GetID()) is node


def test_scene_has_default_colors_subject_hierarchy_and_logics(scene):
    for colorId in ("vtkMRMLColorTableNodeGrey", "vtkMRMLColorTableNodeLabels", "vtkMRMLColorTableNodeRainbow"):
        assert scene.GetNodeByID(colorId) is not None, colorId
    assert scene.GetSubjectHierarchyNode() is not None
    assert moduleLogic(scene, "Segmentations").GetClassName() == "vtkSlicerSegmentationsModuleLogic"
    assert applicationLogic(scene).GetColorLogic().GetClassName() == "vtkSlicerColorLogic"
    assert scene.GetNumberOfNodesByClass("vtkMRMLUnitNode") > 0


def test_foreign_scene_has_no_application_logic():
    import slicer

    with pytest.raises(ValueError):
        applicationLogic(slicer.vtkMRMLScene())


def test_two_scenes_are_independent(scene):
    other = createScene()
    try:
        other.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "only in other")
        assert scene.GetFirstNodeByName("only in other") is None
        assert applicationLogic(other) is not applicationLogic(scene)
    finally:
        from ReirradiationDoseLib.mrml.scene import closeScene
        closeScene(other)


# ---- volumes ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64, np.uint8])
def test_volume_round_trip_with_oblique_direction(scene, dtype):
    geometry = obliqueGeometry()
    rng = np.random.default_rng(1)
    array = (rng.normal(size=geometry.shape) * 50).astype(dtype)
    node = N.volumeNodeFromArray(scene, array, geometry, "CT")
    back, backGeometry = N.arrayAndGeometryFromVolumeNode(node)
    assert N.geometryFromVolumeNode(node) == backGeometry  # the grid alone, without copying voxels
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    assert backGeometry.sizeXyz == geometry.sizeXyz
    np.testing.assert_allclose(backGeometry.spacingMm, geometry.spacingMm, atol=1e-9)
    np.testing.assert_allclose(backGeometry.originMm, geometry.originMm, atol=1e-9)
    np.testing.assert_allclose(backGeometry.direction, geometry.direction, atol=1e-12)


def test_volume_voxel_positions_are_lps_converted_to_ras(scene):
    geometry = obliqueGeometry()
    node = N.volumeNodeFromArray(scene, np.zeros(geometry.shape, np.float32), geometry, "CT")
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk = np.array([[0, 0, 0], [19, 0, 0], [3, 7, 11], [19, 15, 11]], dtype=float)
    ras = np.array([matrix.MultiplyPoint([*p, 1.0])[:3] for p in ijk])
    np.testing.assert_allclose(ras, lpsToRas(geometry.indexToLps(ijk)), atol=1e-9)
    # voxel (0,0,0) is at LPS (10, -20, 5) -> RAS (-10, 20, 5)
    np.testing.assert_allclose(ras[0], [-10.0, 20.0, 5.0], atol=1e-12)


def test_label_volume(scene):
    geometry = ImageGeometry((8, 6, 4), (1, 1, 1))
    labels = np.arange(np.prod(geometry.shape)).reshape(geometry.shape) % 5
    node = N.volumeNodeFromArray(scene, labels.astype(np.int64), geometry, "labels", isLabel=True)
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    back, _ = N.arrayAndGeometryFromVolumeNode(node)
    np.testing.assert_array_equal(back, labels)
    with pytest.raises(InputError, match="integer"):
        N.volumeNodeFromArray(scene, labels.astype(float), geometry, "bad", isLabel=True)


def test_dose_volume_is_tagged_like_slicerrt(scene):
    geometry = ImageGeometry((8, 6, 4), (2, 2, 2))
    dose = np.linspace(0, 64.0, int(np.prod(geometry.shape)), dtype=np.float32).reshape(geometry.shape)
    node = N.volumeNodeFromArray(scene, dose, geometry, "Dose", isDose=True)
    assert node.GetAttribute(N.DOSE_VOLUME_ATTRIBUTE) == "1"
    display = node.GetDisplayNode()
    assert display.GetColorNode().GetName() == N.DOSE_COLOR_TABLE_NAME
    assert display.GetWindowLevelMin() == pytest.approx(0.0)
    assert display.GetWindowLevelMax() == pytest.approx(64.0)
    # the dose colour table is made once per scene
    N.volumeNodeFromArray(scene, dose, geometry, "Dose 2", isDose=True)
    assert len([scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode").GetName()
                for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode"))
                if scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode").GetName() == N.DOSE_COLOR_TABLE_NAME]) == 1
    plain = N.volumeNodeFromArray(scene, dose, geometry, "CT")
    assert plain.GetAttribute(N.DOSE_VOLUME_ATTRIBUTE) is None


def test_volume_shape_mismatch_is_refused_and_leaves_nothing(scene):
    geometry = ImageGeometry((8, 6, 4), (1, 1, 1))
    before = nodeCount(scene)
    with pytest.raises(InputError, match="does not match"):
        N.volumeNodeFromArray(scene, np.zeros((4, 6, 9)), geometry, "bad")
    assert nodeCount(scene) == before


def test_transformed_volume_is_refused(scene):
    geometry = ImageGeometry((4, 4, 4), (1, 1, 1))
    node = N.volumeNodeFromArray(scene, np.zeros(geometry.shape), geometry, "moved")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="harden"):
        N.arrayAndGeometryFromVolumeNode(node)


# ---- segmentations -------------------------------------------------------------------------------------------
def sphereMasks(geometry: ImageGeometry):
    k, j, i = np.indices(geometry.shape)
    gtv = (i - 10) ** 2 + (j - 8) ** 2 + (k - 6) ** 2 < 20
    cord = i < 5
    overlap = (i - 10) ** 2 + (j - 8) ** 2 < 9  # overlaps the GTV: must stay independent
    return {"GTV": gtv, "Spinal cord": cord, "Overlap": overlap, "Empty": np.zeros(geometry.shape, bool)}


def test_segmentation_round_trip_with_oblique_direction(scene):
    geometry = obliqueGeometry()
    masks = sphereMasks(geometry)
    colors = {"GTV": (1, 0, 0), "Spinal cord": (0, 1, 0)}
    node = N.segmentationNodeFromMasks(scene, masks, geometry, colors=colors)
    segmentation = node.GetSegmentation()
    assert node.GetName() == "Structures"
    assert segmentation.GetSourceRepresentationName() == "Binary labelmap"
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == \
        list(masks)
    assert segmentation.GetSegment("GTV").GetColor() == pytest.approx((1, 0, 0))
    assert segmentation.GetSegment("Spinal cord").GetColor() == pytest.approx((0, 1, 0))
    defaultColor = N.defaultStructureColors(list(masks))["Overlap"]
    assert segmentation.GetSegment("Overlap").GetColor() == pytest.approx(defaultColor)
    back = N.masksFromSegmentationNode(node, geometry)
    assert list(back) == list(masks)
    for name in masks:
        assert back[name].dtype == bool
        np.testing.assert_array_equal(back[name], masks[name], err_msg=name)


def test_masks_are_resampled_nearest_neighbour_onto_another_grid(scene):
    source = ImageGeometry((30, 30, 20), (2.0, 2.0, 2.5), (-30.0, -30.0, -25.0))
    target = ImageGeometry((50, 44, 30), (1.1, 1.3, 1.7), (-27.31, -28.13, -22.93))  # no ties
    centres = source.voxelCentresLps()
    sphere = np.linalg.norm(centres - np.array([3.0, -2.0, 1.0]), axis=-1) <= 14.0
    node = N.segmentationNodeFromMasks(scene, {"GTV": sphere}, source)
    resampled = N.masksFromSegmentationNode(node, target)["GTV"]
    # expected: each target voxel centre takes the value of the source voxel it falls in (outside: False)
    index = np.rint(source.lpsToIndex(target.voxelCentresLps())).astype(int)
    inside = np.all((index >= 0) & (index < np.array(source.sizeXyz)), axis=-1)
    expected = np.zeros(target.shape, bool)
    expected[inside] = sphere[index[inside][:, 2], index[inside][:, 1], index[inside][:, 0]]
    assert expected.sum() > 1000
    np.testing.assert_array_equal(resampled, expected)


def test_closed_surface_source_is_rasterised_on_the_requested_grid(scene):
    geometry = ImageGeometry((40, 40, 30), (1.5, 1.5, 2.0), (-30.0, -30.0, -30.0))
    centres = geometry.voxelCentresLps()
    sphere = np.linalg.norm(centres, axis=-1) <= 15.0
    node = N.segmentationNodeFromMasks(scene, {"GTV": sphere}, geometry)
    N.ensureClosedSurface(node)
    assert node.GetSegmentation().ContainsRepresentation("Closed surface")
    node.SetSourceRepresentationToClosedSurface()
    mask = N.masksFromSegmentationNode(node, geometry)["GTV"]
    dice = 2 * np.sum(mask & sphere) / (mask.sum() + sphere.sum())
    assert dice > 0.9
    volumeCc = mask.sum() * geometry.voxelVolumeCc
    assert volumeCc == pytest.approx(4 / 3 * np.pi * 1.5 ** 3, rel=0.15)  # 14.1 cc sphere
    # the node itself is not converted
    assert node.GetSegmentation().GetSourceRepresentationName() == "Closed surface"


def test_segmentation_with_reference_volume(scene):
    geometry = obliqueGeometry()
    volume = N.volumeNodeFromArray(scene, np.zeros(geometry.shape, np.int16), geometry, "CT")
    node = N.segmentationNodeFromMasks(scene, sphereMasks(geometry), geometry, referenceVolumeNode=volume)
    back = N.masksFromSegmentationNode(node, geometry)
    np.testing.assert_array_equal(back["GTV"], sphereMasks(geometry)["GTV"])


def test_bad_mask_is_refused_and_leaves_nothing(scene):
    geometry = obliqueGeometry()
    before = nodeCount(scene)
    with pytest.raises(InputError, match="structure 'bad'"):
        N.segmentationNodeFromMasks(scene, {"ok": np.zeros(geometry.shape, bool), "bad": np.zeros((2, 2, 2))},
                                    geometry)
    assert nodeCount(scene) == before


# ---- subject hierarchy, clean-up --------------------------------------------------------------------------------
def test_place_in_study_builds_and_reuses_patient_and_study(scene):
    geometry = ImageGeometry((4, 4, 4), (1, 1, 1))
    ct = N.volumeNodeFromArray(scene, np.zeros(geometry.shape), geometry, "CT")
    dose = N.volumeNodeFromArray(scene, np.zeros(geometry.shape), geometry, "Dose", isDose=True)
    seg = N.segmentationNodeFromMasks(scene, {"A": np.ones(geometry.shape, bool)}, geometry)
    study = N.placeInStudy(scene, [ct, seg], "Doe^Jane", "Re-irradiation 2026")
    shNode = scene.GetSubjectHierarchyNode()
    for node in (ct, seg):
        assert shNode.GetItemParent(shNode.GetItemByDataNode(node)) == study
    patient = shNode.GetItemParent(study)
    assert shNode.GetItemName(patient) == "Doe^Jane"
    assert shNode.GetItemLevel(patient) == "Patient" and shNode.GetItemLevel(study) == "Study"
    again = N.placeInStudy(scene, [dose, None], "Doe^Jane", "Re-irradiation 2026")
    assert again == study
    other = N.placeInStudy(scene, [], "Doe^Jane", "Course 1")
    assert other != study and shNode.GetItemParent(other) == patient


def test_remove_nodes_removes_display_nodes_too(scene):
    geometry = ImageGeometry((4, 4, 4), (1, 1, 1))
    before = nodeCount(scene)
    ct = N.volumeNodeFromArray(scene, np.zeros(geometry.shape), geometry, "CT")
    seg = N.segmentationNodeFromMasks(scene, {"A": np.ones(geometry.shape, bool)}, geometry)
    assert nodeCount(scene) >= before + 4
    N.removeNodes(scene, [ct, None, seg])
    assert nodeCount(scene) == before
    assert ct.GetScene() is None and seg.GetScene() is None


def test_close_scene_releases_its_logics():
    from ReirradiationDoseLib.mrml.scene import closeScene

    scene = createScene()
    scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    closeScene(scene)
    assert scene.GetFirstNodeByName("CT") is None
    with pytest.raises(ValueError):
        applicationLogic(scene)
