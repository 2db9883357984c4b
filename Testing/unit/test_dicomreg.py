"""DICOM REG (Spatial Registration and Deformable Spatial Registration) read and written as project transforms.

Hand-built REG objects follow the standard's definitions directly (PS3.3 C.20.2.1.1: the matrix maps the item's
Source RCS into the REG's Registered RCS, Matrix Sequence items compose as M_n ... M_1; C.20.3.1.1: the deformable
registration maps Registered RCS points to Source RCS points as Post(Pre(x) + D(x))), so these tests pin the
directions independently of our writer. Project convention: the transform maps fixed (current) LPS points to moving
(prior) LPS points.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from reirradiation_testing import SHARED_DATA

from ReirradiationDoseLib.core import dicomreg, transformio
from ReirradiationDoseLib.core.dicomwrite import PatientStudy
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.registration import displacementFieldTransform

FIXED = "1.2.826.0.1.3680043.8.498.1001"  # current CT frame (the REG's own frame in most files)
MOVING = "1.2.826.0.1.3680043.8.498.1002"  # prior CT frame
OTHER = "1.2.826.0.1.3680043.8.498.1003"  # e.g. an MRI frame


# ---------------------------------------------------------------------------------------------------------------
# hand-built REG objects, straight from the standard's attribute definitions (not from our writer)
# ---------------------------------------------------------------------------------------------------------------
def rotationZ(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    m = np.eye(4)
    m[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    return m


def translation(t) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m


def baseDataset(sopClass: str, frameUid: str, modality: str = "REG") -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sopClass
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sopClass
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Test^Reg"
    ds.PatientID = "REG1"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesDescription = "hand-built"
    ds.Manufacturer = "TestTPS"
    ds.FrameOfReferenceUID = frameUid
    ds.ContentDate = "20240102"
    ds.ContentTime = "101010"
    ds.ContentLabel = "REG"
    ds.ContentDescription = "hand-built registration"
    return ds


def matrixItem(matrix, matrixType: str = "RIGID", values=None) -> Dataset:
    item = Dataset()
    item.FrameOfReferenceTransformationMatrixType = matrixType
    item.FrameOfReferenceTransformationMatrix = values if values is not None else \
        [f"{v:.10g}" for v in np.asarray(matrix).ravel()]
    return item


def spatialItem(frameUid: str, matrices, matrixType: str = "RIGID") -> Dataset:
    registration = Dataset()
    registration.RegistrationTypeCodeSequence = Sequence()
    registration.MatrixSequence = Sequence([matrixItem(m, matrixType) for m in matrices])
    item = Dataset()
    item.FrameOfReferenceUID = frameUid
    item.MatrixRegistrationSequence = Sequence([registration])
    return item


def writeSpatial(path, items, registeredUid: str = FIXED) -> str:
    ds = baseDataset(dicomreg.SPATIAL_REGISTRATION_STORAGE, registeredUid)
    ds.RegistrationSequence = Sequence(items)
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def writeDeformable(path, vectors: np.ndarray, origin, spacing, pre=None, orientation=(1, 0, 0, 0, 1, 0),
                    dims=None) -> str:
    """vectors: [k, j, i, 3] float offsets (mm); the grid item of a Deformable Spatial Registration (C.20.3)."""
    ds = baseDataset(dicomreg.DEFORMABLE_SPATIAL_REGISTRATION_STORAGE, FIXED)
    own = Dataset()
    own.SourceFrameOfReferenceUID = FIXED
    item = Dataset()
    item.SourceFrameOfReferenceUID = MOVING
    if pre is not None:
        item.PreDeformationMatrixRegistrationSequence = Sequence([matrixItem(pre, "RIGID")])
    grid = Dataset()
    grid.ImagePositionPatient = [f"{v:g}" for v in origin]
    grid.ImageOrientationPatient = [f"{v:g}" for v in orientation]
    grid.GridDimensions = list(dims) if dims is not None else [vectors.shape[2], vectors.shape[1], vectors.shape[0]]
    grid.GridResolution = [float(v) for v in spacing]
    grid.VectorGridData = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
    item.DeformableRegistrationGridSequence = Sequence([grid])
    ds.DeformableRegistrationSequence = Sequence([own, item])
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def apply(matrix, point) -> np.ndarray:
    return (np.asarray(matrix) @ np.append(np.asarray(point, dtype=float), 1.0))[:3]


# rigid registration of the prior CT onto the current CT: M maps moving (source) points to fixed (registered) points
M_RIGID = translation((5.0, -3.0, 12.0)) @ rotationZ(10.0)


# ---------------------------------------------------------------------------------------------------------------
# spatial registration: directions
# ---------------------------------------------------------------------------------------------------------------
def test_handBuiltRigidMapsFixedPointToItsMovingCounterpart(tmp_path):
    path = writeSpatial(tmp_path / "rigid.dcm", [spatialItem(FIXED, [np.eye(4)]), spatialItem(MOVING, [M_RIGID])])
    reg = dicomreg.readDicomRegistration(path)
    movingPoint = np.array([10.0, 20.0, 30.0])
    fixedPoint = apply(M_RIGID, movingPoint)  # C.20.2.1.1: x_registered = M x_source
    np.testing.assert_allclose(reg.transform.TransformPoint(fixedPoint), movingPoint, atol=1e-6)
    # 10 degrees about z + (5, -3, 12): the fixed counterpart of (10, 20, 30) is (11.375, 18.432, 42)
    np.testing.assert_allclose(fixedPoint, [15.0 + 10 * (math.cos(math.radians(10)) - 1) - 20 * math.sin(
        math.radians(10)), 17.0 + 10 * math.sin(math.radians(10)) + 20 * (math.cos(math.radians(10)) - 1), 42.0],
        atol=1e-9)
    assert reg.kind == "rigid" and reg.matrixType == "RIGID" and not reg.reversed
    assert (reg.registeredFrameOfReferenceUid, reg.sourceFrameOfReferenceUid) == (FIXED, MOVING)
    assert (reg.fixedFrameOfReferenceUid, reg.movingFrameOfReferenceUid) == (FIXED, MOVING)
    assert reg.creator == "TestTPS" and reg.contentDate == "20240102"
    assert reg.description == "hand-built registration" and reg.seriesDescription == "hand-built"
    assert reg.warnings == ()


def test_resamplingThroughReadTransformLandsTheObjectWhereTheRegSays(tmp_path):
    """A cube centred at c in the prior CT must appear at M c on the current CT grid."""
    path = writeSpatial(tmp_path / "rigid.dcm", [spatialItem(MOVING, [M_RIGID]), spatialItem(FIXED, [np.eye(4)])])
    size, spacing, origin = 48, 2.0, -48.0
    centreMoving = np.array([-6.0, 8.0, -10.0])
    grid = origin + spacing * np.arange(size)
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")
    cube = ((np.abs(x - centreMoving[0]) <= 8) & (np.abs(y - centreMoving[1]) <= 8)
            & (np.abs(z - centreMoving[2]) <= 8)).astype(np.float32)
    moving = sitk.GetImageFromArray(cube)
    moving.SetSpacing((spacing,) * 3)
    moving.SetOrigin((origin,) * 3)
    transform = transformio.readTransform(path)
    warped = sitk.GetArrayFromImage(sitk.Resample(moving, moving, transform, sitk.sitkLinear, 0.0))
    weights = warped / warped.sum()
    centroid = np.array([(weights * x).sum(), (weights * y).sum(), (weights * z).sum()])
    expected = apply(M_RIGID, centreMoving)  # (-0.48, 3.84, 2.0)
    np.testing.assert_allclose(centroid, expected, atol=0.15)
    assert np.linalg.norm(centroid - centreMoving) > 10  # the object really moved


def test_matrixSequenceComposesFirstItemFirst(tmp_path):
    """Equation C.20.2-2: a Matrix Sequence (M1, M2) registers with M2 M1 (SlicerRT multiplies M1 M2)."""
    first, second = translation((20.0, 0.0, 0.0)), rotationZ(90.0)
    path = writeSpatial(tmp_path / "two.dcm", [spatialItem(MOVING, [first, second])])
    reg = dicomreg.readDicomRegistration(path)
    movingPoint = np.array([1.0, 2.0, 3.0])
    fixedPoint = apply(second @ first, movingPoint)  # (-2, 21, 3); M1 M2 would give (19, 1, 3)
    np.testing.assert_allclose(fixedPoint, [-2.0, 21.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(reg.transform.TransformPoint(fixedPoint), movingPoint, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# deformable: hand-built grid with a known smooth displacement and a pre-deformation matrix
# ---------------------------------------------------------------------------------------------------------------
def smoothDisplacement(points: np.ndarray) -> np.ndarray:
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([2.0 * np.sin(np.pi * x / 60.0), 1.5 * np.cos(np.pi * y / 50.0), 0.5 + z / 40.0], axis=-1)


def test_handBuiltDeformableFollowsPostPrePlusOffsets(tmp_path):
    """C.20.3.1.1: source = Post(Pre(x) + D(x)), D on the grid placed in the registered (fixed) frame.
    Tolerances: 1e-4 mm at grid nodes (float32 offsets), 0.05 mm between nodes (linear interpolation of a field
    with 120 mm wavelength on a 5 mm grid: <= 0.02 mm)."""
    pre = translation((10.0, -4.0, 2.0)) @ rotationZ(20.0)
    origin, spacing = np.array([-30.0, -25.0, -20.0]), np.array([5.0, 5.0, 5.0])
    nx, ny, nz = 13, 11, 9
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    nodes = origin + np.stack([i, j, k], axis=-1) * spacing
    vectors = smoothDisplacement(nodes)
    path = writeDeformable(tmp_path / "dir.dcm", vectors, origin, spacing, pre=pre)
    reg = dicomreg.readDicomRegistration(path)
    assert reg.kind == "deformable" and reg.matrixType == "RIGID" and not reg.reversed
    assert (reg.fixedFrameOfReferenceUid, reg.movingFrameOfReferenceUid) == (FIXED, MOVING)
    sample = nodes.reshape(-1, 3)[::7]
    got = np.array([reg.transform.TransformPoint(p) for p in sample])
    expected = np.array([apply(pre, p) for p in sample]) + smoothDisplacement(sample)
    assert np.max(np.abs(got - expected)) < 1e-4
    # Pre(x + D) instead of Pre(x) + D would be off by |(R - I) D| ~ 0.3-0.8 mm here: the test tells them apart
    wrong = np.array([apply(pre, p + d) for p, d in zip(sample, smoothDisplacement(sample), strict=True)])
    assert np.max(np.abs(wrong - expected)) > 0.3
    rng = np.random.default_rng(1)
    inside = origin + rng.uniform(0.0, 1.0, (200, 3)) * spacing * [nx - 1, ny - 1, nz - 1]
    got = np.array([reg.transform.TransformPoint(p) for p in inside])
    expected = np.array([apply(pre, p) for p in inside]) + smoothDisplacement(inside)
    assert np.max(np.linalg.norm(got - expected, axis=1)) < 0.05


def test_deformableGridOrientationIsHonoured(tmp_path):
    """A grid whose rows run along -x and columns along +z (Image Orientation (Patient) -1 0 0 0 0 1): a uniform
    offset field still maps every point inside by exactly that offset, and only inside the grid."""
    offset = np.array([1.0, -2.0, 3.0])
    vectors = np.broadcast_to(offset, (4, 5, 6, 3)).copy()
    origin = np.array([20.0, -10.0, 0.0])  # normal = row x column = +y: grid spans x [-5, 20], z [0, 16], y [-10, 2]
    path = writeDeformable(tmp_path / "oblique.dcm", vectors, origin, (5.0, 4.0, 4.0),
                           orientation=(-1, 0, 0, 0, 0, 1))
    transform = dicomreg.readDicomRegistration(path).transform
    np.testing.assert_allclose(transform.TransformPoint((10.0, -4.0, 8.0)), np.array([10, -4, 8]) + offset,
                               atol=1e-5)
    np.testing.assert_allclose(transform.TransformPoint((10.0, -15.0, 8.0)), (10.0, -15.0, 8.0), atol=1e-9)
    np.testing.assert_allclose(transform.TransformPoint((30.0, -4.0, 8.0)), (30.0, -4.0, 8.0), atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# writer -> reader round trips
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def ps():
    return PatientStudy(patientName="Test^Patient", patientId="P1", studyInstanceUid=generate_uid(),
                        studyDate="20240301", frameOfReferenceUid=FIXED)


def randomPoints(n: int = 200, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-150.0, 150.0, (n, 3))


def maxError(a: sitk.Transform, b: sitk.Transform, points) -> float:
    return max(float(np.linalg.norm(np.subtract(a.TransformPoint(p), b.TransformPoint(p)))) for p in points)


def test_roundTripRigid(tmp_path, ps):
    rigid = sitk.Euler3DTransform((12.0, -30.0, 5.0), 0.05, -0.08, 0.12, (4.5, -7.25, 11.0))
    path = tmp_path / "rigid_reg.dcm"
    dicomreg.writeDicomRegistration(path, rigid, FIXED, MOVING, ps, seriesDescription="rigid test")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "REG" and ds.SOPClassUID == dicomreg.SPATIAL_REGISTRATION_STORAGE
    assert ds.FrameOfReferenceUID == FIXED
    assert ds.RegistrationSequence[0].FrameOfReferenceUID == MOVING
    matrix = np.array([float(v) for v in ds.RegistrationSequence[0].MatrixRegistrationSequence[0].MatrixSequence[0]
                       .FrameOfReferenceTransformationMatrix]).reshape(4, 4)
    point = np.array([40.0, 50.0, 60.0])  # the stored matrix maps the moving point T(x) back to x (C.20.2.1.1)
    np.testing.assert_allclose(apply(matrix, rigid.TransformPoint(point)), point, atol=1e-6)
    reg = dicomreg.readDicomRegistration(path)
    assert reg.kind == "rigid" and reg.matrixType == "RIGID" and reg.seriesDescription == "rigid test"
    assert maxError(rigid, reg.transform, randomPoints()) < 0.01
    assert [p.name for p in tmp_path.iterdir()] == ["rigid_reg.dcm"]  # atomic write leaves no partial file


def test_roundTripAffine(tmp_path, ps):
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([1.04, 0.03, -0.02, -0.01, 0.97, 0.05, 0.02, -0.04, 1.1])
    affine.SetTranslation((-8.0, 3.5, 21.0))
    affine.SetCenter((10.0, 20.0, -30.0))
    path = tmp_path / "affine.dcm"
    dicomreg.writeDicomRegistration(path, affine, FIXED, MOVING, ps)
    reg = dicomreg.readDicomRegistration(path)
    assert reg.kind == "affine" and reg.matrixType == "AFFINE"
    assert maxError(affine, reg.transform, randomPoints()) < 0.01
    # a composite of linear transforms is linear too
    composite = sitk.CompositeTransform([sitk.TranslationTransform(3, (1.0, 2.0, 3.0)), affine])
    dicomreg.writeDicomRegistration(path, composite, FIXED, MOVING, ps)
    assert maxError(composite, dicomreg.readDicomRegistration(path).transform, randomPoints()) < 0.01


def demonsLikeField(seed: int = 5) -> sitk.Image:
    """A smooth random displacement field (Gaussian-smoothed noise, ~4 mm peak) on a 24x20x14 grid of 4 mm."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    noise = rng.normal(0.0, 1.0, (14, 20, 24, 3))
    smooth = np.stack([ndimage.gaussian_filter(noise[..., c], 3.0) for c in range(3)], axis=-1)
    smooth *= 4.0 / np.abs(smooth).max()
    image = sitk.GetImageFromArray(smooth, isVector=True)
    image.SetSpacing((4.0, 4.0, 4.0))
    image.SetOrigin((-46.0, -38.0, -26.0))
    return image


def test_roundTripDeformableWithRigidPart(tmp_path, ps):
    field = demonsLikeField()
    rigid = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, 0.1, (6.0, -4.0, 3.0))
    transform = sitk.CompositeTransform([rigid, displacementFieldTransform(field)])  # R(x + u(x)), registration.py
    reference = sitk.Image(field.GetSize(), sitk.sitkFloat32)
    reference.CopyInformation(field)
    path = tmp_path / "dir_reg.dcm"
    dicomreg.writeDicomRegistration(path, transform, FIXED, MOVING, ps, referenceGrid=reference)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == dicomreg.DEFORMABLE_SPATIAL_REGISTRATION_STORAGE and ds.Modality == "REG"
    item = ds.DeformableRegistrationSequence[0]
    assert item.SourceFrameOfReferenceUID == MOVING and "PreDeformationMatrixRegistrationSequence" in item
    assert list(item.DeformableRegistrationGridSequence[0].GridDimensions) == [24, 20, 14]
    reg = dicomreg.readDicomRegistration(path)
    assert reg.kind == "deformable" and not reg.reversed
    nodes = [field.TransformIndexToPhysicalPoint((i, j, k)) for k in range(0, 14, 3) for j in range(0, 20, 3)
             for i in range(0, 24, 3)]
    assert maxError(transform, reg.transform, nodes) < 0.1
    # a single displacement field needs no reference grid (its own is used)
    dicomreg.writeDicomRegistration(path, displacementFieldTransform(field), FIXED, MOVING, ps)
    assert maxError(displacementFieldTransform(field), dicomreg.readDicomRegistration(path).transform, nodes) < 0.1


# ---------------------------------------------------------------------------------------------------------------
# frame matching and inversion
# ---------------------------------------------------------------------------------------------------------------
M_OTHER = translation((-20.0, 7.0, 1.0)) @ rotationZ(-30.0)


def threeFrameReg(tmp_path) -> str:
    return writeSpatial(tmp_path / "three.dcm", [spatialItem(FIXED, [np.eye(4)]), spatialItem(MOVING, [M_RIGID]),
                                                 spatialItem(OTHER, [M_OTHER])])


def test_framesChooseTheItem(tmp_path):
    path = threeFrameReg(tmp_path)
    with pytest.raises(InputError) as info:
        dicomreg.readDicomRegistration(path)
    message = str(info.value)
    assert str(path) in message and MOVING in message and OTHER in message and "movingFrameOfReferenceUid" in message
    point = np.array([3.0, -4.0, 5.0])
    reg = dicomreg.readDicomRegistration(path, FIXED, OTHER)
    np.testing.assert_allclose(reg.transform.TransformPoint(apply(M_OTHER, point)), point, atol=1e-9)
    reg = dicomreg.readDicomRegistration(path, movingFrameOfReferenceUid=MOVING)  # fixed omitted: the REG's own
    np.testing.assert_allclose(reg.transform.TransformPoint(apply(M_RIGID, point)), point, atol=1e-9)
    assert reg.fixedFrameOfReferenceUid == FIXED and not reg.reversed


def test_reversedRegIsInvertedAndTwoItemsAreChained(tmp_path):
    path = threeFrameReg(tmp_path)
    point = np.array([3.0, -4.0, 5.0])
    # the prior CT (MOVING) is the fixed image here: the REG maps it onto FIXED, the moving one
    reg = dicomreg.readDicomRegistration(path, MOVING, FIXED)
    assert reg.reversed and any("inverted" in w for w in reg.warnings)
    np.testing.assert_allclose(reg.transform.TransformPoint(point), apply(M_RIGID, point), atol=1e-9)
    # OTHER -> MOVING through the REG's frame: inv(M_MOVING) M_OTHER (Equation C.20.2-3)
    reg = dicomreg.readDicomRegistration(path, OTHER, MOVING)
    np.testing.assert_allclose(reg.transform.TransformPoint(point), apply(np.linalg.inv(M_RIGID) @ M_OTHER, point),
                               atol=1e-9)
    with pytest.raises(InputError) as info:
        dicomreg.readDicomRegistration(path, FIXED, "1.2.3.4.999")
    message = str(info.value)
    assert str(path) in message and "1.2.3.4.999" in message and MOVING in message and OTHER in message


def test_reversedDeformableIsInvertedWithResidualWarning(tmp_path, ps):
    field = demonsLikeField(seed=8)
    transform = displacementFieldTransform(field)
    path = tmp_path / "dir.dcm"
    dicomreg.writeDicomRegistration(path, transform, FIXED, MOVING, ps)
    reg = dicomreg.readDicomRegistration(path, fixedFrameOfReferenceUid=MOVING, movingFrameOfReferenceUid=FIXED)
    assert reg.reversed and reg.kind == "deformable"
    note = next(w for w in reg.warnings if "inverted numerically (inversion residual max" in w)
    assert float(note.split("residual max ")[1].split(" mm")[0]) < 0.01  # measured 0.000 inside the grid
    # inverse o forward = identity, inside the grid away from its border (4 mm peak displacement, 4 mm grid)
    interior = [field.TransformIndexToPhysicalPoint((i, j, k)) for k in range(3, 11, 2) for j in range(3, 17, 2)
                for i in range(3, 21, 2)]
    errors = [np.linalg.norm(np.subtract(reg.transform.TransformPoint(transform.TransformPoint(p)), p))
              for p in interior]
    assert max(errors) < 0.1


# ---------------------------------------------------------------------------------------------------------------
# readTransform integration
# ---------------------------------------------------------------------------------------------------------------
def test_readTransformAcceptsDcmAndSuffixlessRegFiles(tmp_path):
    point = np.array([3.0, -4.0, 5.0])
    path = writeSpatial(tmp_path / "reg.dcm", [spatialItem(MOVING, [M_RIGID])])
    np.testing.assert_allclose(transformio.readTransform(path).TransformPoint(apply(M_RIGID, point)), point,
                               atol=1e-9)
    bare = tmp_path / "1.2.840.113619.2.55.3"  # files in a DICOM export often have no suffix
    os.replace(path, bare)
    np.testing.assert_allclose(transformio.readTransform(bare, FIXED, MOVING).TransformPoint(apply(M_RIGID, point)),
                               point, atol=1e-9)
    with pytest.raises(InputError, match="unknown transform file type"):
        (tmp_path / "notes").write_text("not a transform")
        transformio.readTransform(tmp_path / "notes")


# ---------------------------------------------------------------------------------------------------------------
# bad input: every message names the file and the problem
# ---------------------------------------------------------------------------------------------------------------
def expectError(path, *fragments, **kwargs):
    with pytest.raises(InputError) as info:
        dicomreg.readDicomRegistration(path, **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_badInputMessages(tmp_path):
    expectError(tmp_path / "missing.dcm", "does not exist")
    text = tmp_path / "text.dcm"
    text.write_text("this is a transform, honestly")
    expectError(text, "not a DICOM file")
    ct = tmp_path / "ct.dcm"
    baseDataset("1.2.840.10008.5.1.4.1.1.2", FIXED, modality="CT").save_as(ct, enforce_file_format=True)
    expectError(ct, "not a registration", "Modality is CT", "CT Image Storage")
    # missing matrix
    item = Dataset()
    item.FrameOfReferenceUID = MOVING
    expectError(writeSpatial(tmp_path / "nomatrix.dcm", [item]), "matrix is missing", MOVING)
    # 15 values
    registration = Dataset()
    fifteen = [f"{v:g}" for v in np.eye(4).ravel()[:15]]
    registration.MatrixSequence = Sequence([matrixItem(None, "RIGID", values=fifteen)])
    item = Dataset()
    item.FrameOfReferenceUID = MOVING
    item.MatrixRegistrationSequence = Sequence([registration])
    expectError(writeSpatial(tmp_path / "fifteen.dcm", [item]), "has 15 values; 16 are required")
    # non-invertible
    singular = np.eye(4)
    singular[2, 2] = 0.0
    expectError(writeSpatial(tmp_path / "singular.dcm", [spatialItem(MOVING, [singular], "AFFINE")]),
                "not invertible")
    # RIGID that is not orthonormal (2 % scale)
    scaled = np.diag([1.02, 1.0, 1.0, 1.0])
    message = expectError(writeSpatial(tmp_path / "notrigid.dcm", [spatialItem(MOVING, [scaled], "RIGID")]),
                          "declared RIGID", "deviates from orthonormal by 0.0404")
    assert "tolerance 0.001" in message
    # the same matrix declared AFFINE is fine
    affinePath = writeSpatial(tmp_path / "affine.dcm", [spatialItem(MOVING, [scaled], "AFFINE")])
    assert dicomreg.readDicomRegistration(affinePath).kind == "affine"
    # last row
    bad = np.eye(4)
    bad[3, 0] = 0.5
    expectError(writeSpatial(tmp_path / "lastrow.dcm", [spatialItem(MOVING, [bad], "AFFINE")]), "0 0 0 1")
    # only the REG's own (identity) item
    expectError(writeSpatial(tmp_path / "own.dcm", [spatialItem(FIXED, [np.eye(4)])]),
                "no registration to another frame of reference")
    # deformable grid data not matching GridDimensions
    vectors = np.zeros((4, 4, 4, 3))
    expectError(writeDeformable(tmp_path / "grid.dcm", vectors, (0, 0, 0), (2, 2, 2), dims=(4, 4, 5)),
                "GridDimensions 4x4x5 needs 80 vectors", "holds 768 bytes (64 vectors)")
    expectError(writeDeformable(tmp_path / "spacing.dcm", vectors, (0, 0, 0), (2, 0, 2)),
                "GridResolution", "must be positive")
    expectError(writeDeformable(tmp_path / "iop.dcm", vectors, (0, 0, 0), (2, 2, 2), orientation=(1, 0, 0, 1, 0, 0)),
                "ImageOrientationPatient", "not two orthogonal unit vectors")


def test_writerRefusesWhatItCannotWrite(tmp_path, ps):
    path = tmp_path / "out.dcm"
    with pytest.raises(InputError, match="same frame of reference"):
        dicomreg.writeDicomRegistration(path, sitk.Euler3DTransform(), FIXED, FIXED, ps)
    field = demonsLikeField()
    composite = sitk.CompositeTransform([sitk.Euler3DTransform(), displacementFieldTransform(field)])
    with pytest.raises(InputError, match="needs the reference grid") as info:
        dicomreg.writeDicomRegistration(path, composite, FIXED, MOVING, ps)
    assert str(path) in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing half-written


# ---------------------------------------------------------------------------------------------------------------
# real REG files from other systems
# ---------------------------------------------------------------------------------------------------------------
def test_realRegFilesFromOtherSystems():
    """Every real REG file under ../shared/data must read (no real one was available when this was written:
    pydicom's test files hold SEG (…66.4) objects only; SlicerRT's and TCIA's REG samples were not at hand)."""
    if not SHARED_DATA.exists():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    found = []
    for root, _dirs, files in os.walk(SHARED_DATA):
        for name in files:
            path = os.path.join(root, name)
            if dicomreg.isDicomRegistrationFile(path):
                found.append(path)
    if not found:
        pytest.skip(f"no real DICOM REG file under {SHARED_DATA} (searched every file with a DICOM preamble)")
    for path in found:
        try:
            reg = dicomreg.readDicomRegistration(path)
        except InputError as error:
            assert "give movingFrameOfReferenceUid" in str(error)  # several items: a choice, not a failure
            continue
        assert reg.kind in ("rigid", "affine", "deformable")
