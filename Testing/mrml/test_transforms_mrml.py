"""SimpleITK <-> Slicer transform nodes: LPS/RAS and from-parent direction, round trips in a real MRML scene."""

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from ReirradiationDoseLib.core.geometry import ImageGeometry  # noqa: E402
from ReirradiationDoseLib.core.regquality import analyticDeformationField  # noqa: E402
from ReirradiationDoseLib.core.registration import displacementFieldTransform  # noqa: E402
from ReirradiationDoseLib.mrml.transforms import sitkTransformFromNode, transformNodeFromSitk  # noqa: E402

F = np.array([-1.0, -1.0, 1.0])
POINTS_LPS = np.array([[0.0, 0.0, 0.0], [12.5, -30.0, 7.0], [-40.0, 22.0, -15.0], [5.0, 5.0, 30.0]])


def rigidLps():
    t = sitk.Euler3DTransform()
    t.SetCenter((10.0, -5.0, 3.0))
    t.SetRotation(0.05, -0.03, 0.08)
    t.SetTranslation((5.0, -3.0, 2.0))
    return t


def test_linear_node_maps_ras_points_like_sitk_maps_lps_points():
    scene = slicer.vtkMRMLScene()
    t = rigidLps()
    node = transformNodeFromSitk(scene, t, "rigid")
    assert node.IsA("vtkMRMLLinearTransformNode")
    fromParent = node.GetTransformFromParent()
    for p in POINTS_LPS:
        expectedRas = np.array(t.TransformPoint(p.tolist())) * F
        assert np.allclose(fromParent.TransformPoint((p * F).tolist()), expectedRas, atol=1e-6)
    # the "to parent" direction is the inverse: moves moving (prior) points back onto fixed points
    toParent = node.GetTransformToParent()
    q = np.array(t.TransformPoint(POINTS_LPS[1].tolist())) * F
    assert np.allclose(toParent.TransformPoint(q.tolist()), POINTS_LPS[1] * F, atol=1e-6)


def test_linear_round_trip():
    scene = slicer.vtkMRMLScene()
    t = rigidLps()
    back = sitkTransformFromNode(transformNodeFromSitk(scene, t))
    for p in POINTS_LPS:
        assert np.allclose(back.TransformPoint(p.tolist()), t.TransformPoint(p.tolist()), atol=1e-9)


def fieldReference():
    ref = sitk.Image([24, 20, 12], sitk.sitkFloat32)
    ref.SetSpacing((4.0, 4.5, 5.0))
    ref.SetOrigin((-40.0, -30.0, -25.0))
    # a rotated grid: direction must survive the LPS <-> RAS conversion too
    ref.SetDirection(sitk.VersorTransform((0, 0, 1), 0.3).GetMatrix())
    return ref


def test_grid_node_maps_points_like_sitk_and_round_trips():
    scene = slicer.vtkMRMLScene()
    ref = fieldReference()
    field = analyticDeformationField(ref, amplitudeMm=(6.0, 4.0, 2.0), wavelengthMm=80.0)
    t = displacementFieldTransform(field)
    node = transformNodeFromSitk(scene, t, "deformable")
    assert node.IsA("vtkMRMLGridTransformNode")
    fromParent = node.GetTransformFromParent()
    geometry = ImageGeometry.fromImage(ref)
    inside = geometry.indexToLps(np.array([[5.3, 7.1, 4.4], [10.0, 3.0, 8.0], [17.5, 12.2, 2.6]]))
    for p in inside:
        expectedRas = np.array(t.TransformPoint(p.tolist())) * F
        assert np.allclose(fromParent.TransformPoint((p * F).tolist()), expectedRas, atol=1e-4)
    back = sitkTransformFromNode(node)
    assert np.allclose(sitk.GetArrayFromImage(back.GetDisplacementField()), sitk.GetArrayFromImage(field),
                       atol=1e-9)
    assert np.allclose(back.GetDisplacementField().GetDirection(), ref.GetDirection(), atol=1e-9)
    assert np.allclose(back.GetDisplacementField().GetOrigin(), ref.GetOrigin(), atol=1e-9)


def test_composite_is_sampled_on_the_reference_grid():
    scene = slicer.vtkMRMLScene()
    ref = fieldReference()
    field = analyticDeformationField(ref, amplitudeMm=(3.0, 3.0, 1.0), wavelengthMm=80.0)
    composite = sitk.CompositeTransform([rigidLps(), displacementFieldTransform(field)])
    geometry = ImageGeometry.fromImage(ref)
    node = transformNodeFromSitk(scene, composite, "composite", referenceGeometry=geometry)
    back = sitkTransformFromNode(node)
    for ijk in ([3, 4, 5], [12, 10, 6]):
        p = geometry.indexToLps(np.array(ijk, float))
        assert np.allclose(back.TransformPoint(p.tolist()), composite.TransformPoint(p.tolist()), atol=1e-6)


def test_grid_stored_to_parent_is_sampled_through_its_inverse():
    scene = slicer.vtkMRMLScene()
    ref = fieldReference()
    t = sitk.TranslationTransform(3, (4.0, -2.0, 1.0))
    geometry = ImageGeometry.fromImage(ref)
    node = transformNodeFromSitk(scene, displacementFieldTransform(
        sitk.TransformToDisplacementField(t, sitk.sitkVectorFloat64, ref.GetSize(), ref.GetOrigin(),
                                          ref.GetSpacing(), ref.GetDirection())), "g")
    # store the same grid as "to parent" instead: from parent becomes its inverse (shift by -t)
    grid = node.GetTransformFromParent()
    node2 = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "toParent")
    node2.SetAndObserveTransformToParent(grid)
    with pytest.raises(ValueError):
        sitkTransformFromNode(node2)
    back = sitkTransformFromNode(node2, referenceGeometry=geometry)
    p = geometry.indexToLps(np.array([12.0, 10.0, 6.0]))
    assert np.allclose(back.TransformPoint(p.tolist()), p - np.array([4.0, -2.0, 1.0]), atol=1e-3)


def test_deformable_without_reference_is_refused_and_leaves_nothing():
    scene = slicer.vtkMRMLScene()
    ref = fieldReference()
    composite = sitk.CompositeTransform([rigidLps(), displacementFieldTransform(analyticDeformationField(ref))])
    before = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="reference grid"):
        transformNodeFromSitk(scene, composite)
    assert scene.GetNumberOfNodes() == before


def _ps():
    from pydicom.uid import generate_uid

    from ReirradiationDoseLib.core.dicomwrite import PatientStudy

    return PatientStudy(patientName="Test^Patient", patientId="P1", studyInstanceUid=generate_uid(),
                        studyDate="20260101", frameOfReferenceUid="1.2.3.4.100")


def test_dicom_registration_files_become_transform_nodes(tmp_path):
    """A spatial and a deformable REG (written by the core's writer, read by its reader) as transform nodes whose
    from-parent transform maps fixed RAS points where the REG maps fixed LPS points."""
    from ReirradiationDoseLib.core import dicomreg
    from ReirradiationDoseLib.core.errors import InputError
    from ReirradiationDoseLib.mrml.transforms import transformNodeFromDicomRegistration

    fixedUid, movingUid = "1.2.3.4.100", "1.2.3.4.200"
    scene = slicer.vtkMRMLScene()
    rigid = rigidLps()
    rigidPath = tmp_path / "rigid_reg.dcm"
    dicomreg.writeDicomRegistration(rigidPath, rigid, fixedUid, movingUid, _ps(), seriesDescription="rigid REG")
    node, warnings = transformNodeFromDicomRegistration(scene, rigidPath)
    assert node.IsA("vtkMRMLLinearTransformNode") and node.GetName() == "rigid REG" and warnings == []
    assert node.GetAttribute("Reirradiation.DicomRegistrationFrames") == f"{fixedUid} -> {movingUid}"
    for p in POINTS_LPS:
        expectedRas = np.array(rigid.TransformPoint(p.tolist())) * F
        assert np.allclose(node.GetTransformFromParent().TransformPoint((p * F).tolist()), expectedRas, atol=1e-4)

    geometry = ImageGeometry((30, 30, 20), (4.0, 4.0, 4.0), (-60.0, -60.0, -40.0))
    field = analyticDeformationField(geometry.emptyImage(), (6.0, -4.0, 3.0), 120.0)
    deformable = sitk.CompositeTransform([rigid, displacementFieldTransform(field)])
    fieldPath = tmp_path / "deformable_reg.dcm"
    dicomreg.writeDicomRegistration(fieldPath, deformable, fixedUid, movingUid, _ps(), referenceGrid=field)
    with pytest.raises(InputError, match="deformable_reg.dcm"):  # no grid given: refused, nothing added
        transformNodeFromDicomRegistration(scene, fieldPath)
    count = scene.GetNumberOfNodes()
    node, _ = transformNodeFromDicomRegistration(scene, fieldPath, geometry, fixedUid, movingUid, name="DIR")
    assert scene.GetNumberOfNodes() == count + 1 and node.IsA("vtkMRMLGridTransformNode")
    inside = geometry.indexToLps(np.array([[10.0, 12.0, 8.0], [20.0, 5.0, 14.0], [15.0, 15.0, 10.0]]))
    for p in np.atleast_2d(inside):
        expectedRas = np.array(deformable.TransformPoint([float(v) for v in p])) * F
        assert np.allclose(node.GetTransformFromParent().TransformPoint((p * F).tolist()), expectedRas, atol=0.05)


def _fromWorldLps(node, pointsLps):
    """Where Slicer's own transform from world (the node and every node above it) takes LPS points."""
    general = vtk.vtkGeneralTransform()
    node.GetTransformFromWorld(general)
    return np.array([np.array(general.TransformPoint((p * F).tolist())) * F for p in pointsLps])


def test_a_node_under_other_nodes_gives_its_whole_chain():
    """A node is read with the nodes it sits under, as Slicer shows a volume placed under it: two linear nodes as
    one matrix; a grid under a linear node as their composition; a grid stored "to parent" (not a plain grid) under a
    linear node sampled on the reference grid, exact at its voxel centres. Each equals Slicer's transform from world."""
    scene = slicer.vtkMRMLScene()
    ref = fieldReference()
    geometry = ImageGeometry.fromImage(ref)
    outer = transformNodeFromSitk(scene, sitk.TranslationTransform(3, (6.0, -4.0, 2.0)), "setup")
    inner = transformNodeFromSitk(scene, rigidLps(), "rigid")
    inner.SetAndObserveTransformNodeID(outer.GetID())
    linear = sitkTransformFromNode(inner)
    assert linear.GetName() == "AffineTransform"
    expected = _fromWorldLps(inner, POINTS_LPS)
    assert np.allclose([linear.TransformPoint(p.tolist()) for p in POINTS_LPS], expected, atol=1e-6)
    # the setup shift acts first: rigid(p + shift)
    assert np.allclose(expected[1], rigidLps().TransformPoint((POINTS_LPS[1] + [6.0, -4.0, 2.0]).tolist()), atol=1e-6)

    field = analyticDeformationField(ref, amplitudeMm=(3.0, 2.0, 1.0), wavelengthMm=80.0)
    grid = transformNodeFromSitk(scene, displacementFieldTransform(field), "DIR")
    grid.SetAndObserveTransformNodeID(outer.GetID())
    composed = sitkTransformFromNode(grid)
    inside = geometry.indexToLps(np.array([[5.3, 7.1, 4.4], [10.0, 3.0, 8.0], [17.5, 12.2, 2.6]]))
    assert np.allclose([composed.TransformPoint(p.tolist()) for p in inside], _fromWorldLps(grid, inside), atol=1e-4)

    toParent = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "edited")
    toParent.SetAndObserveTransformToParent(grid.GetTransformFromParent())
    toParent.SetAndObserveTransformNodeID(outer.GetID())
    with pytest.raises(ValueError, match="reference grid"):
        sitkTransformFromNode(toParent)
    sampled = sitkTransformFromNode(toParent, referenceGeometry=geometry)
    centres = geometry.indexToLps(np.array([[6.0, 8.0, 4.0], [12.0, 10.0, 6.0], [3.0, 15.0, 9.0]]))
    assert np.allclose([sampled.TransformPoint(p.tolist()) for p in centres], _fromWorldLps(toParent, centres),
                       atol=1e-6)
