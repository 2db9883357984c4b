"""DICOM registration objects ("REG"): Spatial Registration and Deformable Spatial Registration, read and written.

Registrations made in a treatment planning system, MIM or Velocity arrive as DICOM REG files. This module turns them
into a SimpleITK transform in the PROJECT CONVENTION (see :mod:`.registration`): ``T`` maps fixed (current CT) LPS
points to moving (prior CT) LPS points, i.e. the resampling transform of ``sitk.Resample(moving, fixed, T)``; and it
writes our transforms back as REG objects.

Direction conventions (DICOM PS3.3 2024/2025; PS3.17 Annex O)
-------------------------------------------------------------
Every REG instance has its own Frame of Reference, the *Registered RCS*; the items refer to a *Source RCS* (PS3.17
O.1: "The coordinate system of the referenced data is the Source RCS. The coordinate system established by the SOP
instance is the Registered RCS"). PS3.17 O.1 also warns that "the sense of the direction of transformation differs
between the Spatial Registration and Deformable Spatial Registration" objects:

- **Spatial Registration** (SOP class 1.2.840.10008.5.1.4.1.1.66.1, PS3.3 C.20.2): each Registration Sequence item
  (one per Frame of Reference) holds a Matrix Sequence that "registers the Source RCS/images to the Registered RCS".
  By C.20.2.1.1 (Equation C.20.2-1) the Frame of Reference Transformation Matrix ``A_M_B`` (16 values, row major)
  maps a point ``(Bx, By, Bz, 1)`` of RCS B (the item's FoR, the *source*) to ``(Ax, Ay, Az, 1)`` of RCS A (the
  REG's own FoR, *registered*): ``x_registered = M x_source``. Several items of one Matrix Sequence compose as
  ``M = M_n ... M_2 M_1`` (Equation C.20.2-2; the first item is applied first). Two items of one REG relate two
  source frames through the registered one: ``B_M_C = inv(A_M_B) A_M_C`` (Equation C.20.2-3). An item for the
  REG's own FoR with the identity matrix is normal (TPSs write one for the fixed image series). Matrix types
  (C.20.2.1.2): RIGID (orthonormal rotation + translation), RIGID_SCALE (orthogonal), AFFINE; last row 0 0 0 1.
  With the REG in the fixed (current) frame and the item in the moving (prior) frame, ``M`` maps *moving to
  fixed*: our resampling transform is its inverse, ``T = inv(M)``.
- **Deformable Spatial Registration** (1.2.840.10008.5.1.4.1.1.66.3, PS3.3 C.20.3, A.39.2): "The deformations and
  transformations describe to an application how to sample data from one or more Source RCS into the Registered
  RCS" (A.39.2.1). By C.20.3.1.1 the registrations "are applied to the Registered RCS coordinates": first the Pre
  Deformation matrix, then the deformation offsets, then the Post Deformation matrix; "the resulting coordinate
  addresses the sample point within the Source RCS". The grid (Image Position/Orientation (Patient), Grid
  Dimensions, Grid Resolution) is placed in the Registered RCS and the offsets (Vector Grid Data, float32 X, Y, Z
  triplets, x index fastest) are indexed by that grid position. So for a registered point ``x``:
  ``T(x) = Post(Pre(x) + D(x))``. This already maps *fixed to moving*: the resampling direction of our convention,
  **no inversion** is needed when the REG lives in the fixed frame. We build it exactly as the SimpleITK composite
  ``Post o Pre o (x + A_pre^-1 D(x))`` (``Pre(x) + D = Pre(x + A_pre^-1 D)``, exact at every point since linear
  interpolation commutes with the linear map ``A_pre^-1``). Outside the grid ``D = 0``.

When the REG is stored the other way round (the prior CT's frame is its Registered RCS), the rigid/affine case is
inverted exactly; a deformable one needs the inverse field (``sitk.InvertDisplacementField``), whose residual is
reported in ``warnings``.

Other readers (checked, not copied): SlicerRT's DicomSroImportExport sets the spatial registration matrix as the
moving image's "transform to parent" (moving -> fixed: same direction as here) but multiplies the Matrix Sequence
as ``M_1 M_2 ... M_n`` and multiplies all Registration Sequence items together (Slicer forum topic 41636, 2025);
vtk-dicom's ``vtkDICOMTransformReader`` composes ``M_n ... M_1`` like the standard.

Writing: a rigid/affine transform becomes a Spatial Registration (item 1: the moving FoR with ``inv(T)``; item 2:
the fixed FoR with the identity); a transform holding a displacement field becomes a Deformable Spatial Registration
with the outer linear part of ``T`` as the Pre Deformation matrix and ``D(x) = T(x) - Pre(x)`` sampled on the
reference (current CT) grid, so ``Pre(x) + D(x) = T(x)`` at every grid point.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import UID

from .atomic import atomicWriteFile
from .dicomwrite import ImageSeriesRef, PatientStudy, _ds, _fitLo, _newDataset, imageReferenceSequence, saveFile
from .errors import InputError
from .registration import _members, displacementFieldFromTransform, displacementFieldTransform, homogeneousMatrix

__all__ = [
    "DicomRegistration",
    "readDicomRegistration",
    "writeDicomRegistration",
    "isDicomRegistrationFile",
    "SPATIAL_REGISTRATION_STORAGE",
    "DEFORMABLE_SPATIAL_REGISTRATION_STORAGE",
]

logger = logging.getLogger(__name__)

SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"
DEFORMABLE_SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.3"
_REG_CLASSES = (SPATIAL_REGISTRATION_STORAGE, DEFORMABLE_SPATIAL_REGISTRATION_STORAGE)
_MATRIX_TYPES = ("RIGID", "RIGID_SCALE", "AFFINE")
_ORTHO_TOLERANCE = 1e-3  # DS strings of 8-10 digits and vendor rounding stay far below this
_IDENTITY_TOLERANCE = 1e-9
_MANUFACTURER_MODEL = "ReirradiationDose"
_SOFTWARE_VERSION = "1"


@dataclass(frozen=True)
class DicomRegistration:
    """A registration read from a DICOM REG file.

    transform : maps fixed (current) LPS points to moving (prior) LPS points, the project convention; use it in
        ``sitk.Resample(moving, fixed, transform)``.
    kind : ``"rigid"``, ``"affine"`` or ``"deformable"``.
    registeredFrameOfReferenceUid : the REG instance's own FrameOfReferenceUID (the Registered RCS).
    sourceFrameOfReferenceUid : the chosen item's frame (the Source RCS).
    fixedFrameOfReferenceUid, movingFrameOfReferenceUid : the frames ``transform`` maps from and to. Normally
        fixed = registered and moving = source; ``reversed`` is True when the REG was stored the other way round.
    matrixType : FrameOfReferenceTransformationMatrixType of the chosen matrix (the most general one when several
        are composed; pre/post matrices of a deformable registration joined by ``"/"``).
    description : ContentDescription (or the item's FrameOfReferenceTransformationComment).
    seriesDescription, contentLabel, contentDate, creator : as written in the file (creator = Manufacturer,
        ManufacturerModelName, SoftwareVersions and ContentCreatorName, when present).
    warnings : things the user should know (e.g. the residual of an inverted deformation field).
    """

    transform: sitk.Transform
    kind: str
    registeredFrameOfReferenceUid: str
    sourceFrameOfReferenceUid: str
    fixedFrameOfReferenceUid: str
    movingFrameOfReferenceUid: str
    matrixType: str = ""
    description: str = ""
    seriesDescription: str = ""
    contentLabel: str = ""
    contentDate: str = ""
    creator: str = ""
    sopInstanceUid: str = ""
    sopClassUid: str = ""
    reversed: bool = False
    path: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------------
def _firstLine(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _affine(matrix: np.ndarray) -> sitk.AffineTransform:
    """A SimpleITK affine transform applying the 4x4 homogeneous ``matrix`` to LPS points."""
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(v) for v in matrix[:3, :3].ravel()])
    transform.SetTranslation([float(v) for v in matrix[:3, 3]])
    return transform


def _isIdentity(matrix: np.ndarray) -> bool:
    return bool(np.max(np.abs(matrix - np.eye(4))) <= _IDENTITY_TOLERANCE)


def _classifyMatrix(matrix: np.ndarray) -> str:
    """The most specific matrix type that ``matrix`` satisfies (RIGID, RIGID_SCALE or AFFINE)."""
    linear = matrix[:3, :3]
    gram = linear.T @ linear
    if np.max(np.abs(gram - np.eye(3))) <= 1e-6 and np.linalg.det(linear) > 0:
        return "RIGID"
    if np.max(np.abs(gram - np.diag(np.diag(gram)))) <= 1e-6 * max(1.0, float(np.max(np.diag(gram)))) \
            and np.linalg.det(linear) > 0:
        return "RIGID_SCALE"
    return "AFFINE"


def _widest(types) -> str:
    order = {"RIGID": 0, "RIGID_SCALE": 1, "AFFINE": 2}
    known = [t for t in types if t in order]
    return max(known, key=order.get) if known else ""


def _kindOf(matrix: np.ndarray) -> str:
    linear = matrix[:3, :3]
    deviation = np.max(np.abs(linear.T @ linear - np.eye(3)))
    return "rigid" if deviation <= _ORTHO_TOLERANCE and np.linalg.det(linear) > 0 else "affine"


def _creator(ds: Dataset) -> str:
    parts = []
    for keyword in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions", "ContentCreatorName"):
        value = ds.get(keyword, "")
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            value = " ".join(str(v) for v in value)
        value = str(value or "").strip()
        if value and value not in parts:
            parts.append(value)
    return ", ".join(parts)


def _hasDicomPreamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def isDicomRegistrationFile(path: str | os.PathLike) -> bool:
    """True when ``path`` is a DICOM file (preamble ``DICM``) whose SOP class is a (deformable) spatial registration
    or whose Modality is REG. Never raises."""
    path = Path(path)
    if not path.is_file() or not _hasDicomPreamble(path):
        return False
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # noqa: BLE001 - a probe: any unreadable file is simply not a REG
        return False
    return str(ds.get("SOPClassUID", "")) in _REG_CLASSES or str(ds.get("Modality", "")).upper() == "REG"


def _readDataset(path: Path) -> Dataset:
    if not path.exists():
        raise InputError("the DICOM registration file does not exist", path)
    if path.is_dir():
        raise InputError("this is a folder; a DICOM registration (REG) file is needed", path)
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError:
        ds = None
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise InputError(f"the DICOM registration file could not be read ({_firstLine(error)})", path) from None
    if ds is None:  # no preamble: accept a bare data set only if it carries a SOP class
        try:
            ds = pydicom.dcmread(str(path), force=True)
            if "SOPClassUID" not in ds:
                ds = None
        except Exception:  # noqa: BLE001
            ds = None
    if ds is None:
        raise InputError("this is not a DICOM file, so it cannot be a DICOM registration (REG)", path)
    sopClass = str(ds.get("SOPClassUID", "") or "")
    if sopClass not in _REG_CLASSES:
        modality = str(ds.get("Modality", "") or "") or "missing"
        name = UID(sopClass).name if sopClass else "missing"
        raise InputError(f"this DICOM file is not a registration: its Modality is {modality} and its SOP class "
                         f"{name} ({sopClass or 'none'}); a Spatial Registration (1.2.840.10008.5.1.4.1.1.66.1) or "
                         "Deformable Spatial Registration (1.2.840.10008.5.1.4.1.1.66.3) object is needed", path)
    return ds


def _floats(value, count: int, what: str, path: Path) -> np.ndarray:
    """``count`` finite floats from a DICOM value, or an InputError naming ``what``."""
    if value is None:
        raise InputError(f"the {what} is missing", path)
    try:
        if isinstance(value, (str, bytes, int, float)) or not hasattr(value, "__len__"):
            values = [float(value)]
        else:
            values = [float(v) for v in value]
    except (TypeError, ValueError) as error:
        raise InputError(f"the {what} holds a value that is not a number ({_firstLine(error)})", path) from None
    if len(values) != count:
        raise InputError(f"the {what} has {len(values)} values; {count} are required", path)
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise InputError(f"the {what} contains values that are not finite numbers", path)
    return array


def _readMatrixItem(item: Dataset, what: str, path: Path, warnings: list) -> tuple[np.ndarray, str]:
    """One Frame of Reference Transformation Matrix (C.20.2.1.1) with its type, validated."""
    raw = item.get("FrameOfReferenceTransformationMatrix")
    if raw is None:
        raise InputError(f"the {what} has no FrameOfReferenceTransformationMatrix (3006,00C6)", path)
    matrix = _floats(raw, 16, f"FrameOfReferenceTransformationMatrix of the {what}", path).reshape(4, 4)
    matrixType = str(item.get("FrameOfReferenceTransformationMatrixType", "") or "").strip().upper()
    if not np.allclose(matrix[3], (0.0, 0.0, 0.0, 1.0), atol=1e-6):
        raise InputError(f"the FrameOfReferenceTransformationMatrix of the {what} has the last row "
                         f"{' '.join(f'{v:g}' for v in matrix[3])}; a homogeneous matrix must end in 0 0 0 1", path)
    linear = matrix[:3, :3]
    determinant = float(np.linalg.det(linear))
    if not np.isfinite(determinant) or abs(determinant) < 1e-6 or np.linalg.cond(linear) > 1e8:
        raise InputError(f"the FrameOfReferenceTransformationMatrix of the {what} is not invertible (determinant "
                         f"{determinant:.3g}): it collapses space and cannot be a registration", path)
    if matrixType == "RIGID":
        deviation = float(np.max(np.abs(linear.T @ linear - np.eye(3))))
        if deviation > _ORTHO_TOLERANCE or determinant < 0:
            reason = "it contains a reflection" if determinant < 0 else \
                f"its rotation part deviates from orthonormal by {deviation:.3g} (tolerance {_ORTHO_TOLERANCE:g})"
            raise InputError(f"the {what} is declared RIGID but {reason}", path)
    elif matrixType == "RIGID_SCALE":
        gram = linear.T @ linear
        scale = max(1.0, float(np.max(np.diag(gram))))
        deviation = float(np.max(np.abs(gram - np.diag(np.diag(gram))))) / scale
        if deviation > _ORTHO_TOLERANCE:
            raise InputError(f"the {what} is declared RIGID_SCALE but its axes are not orthogonal (deviation "
                             f"{deviation:.3g}, tolerance {_ORTHO_TOLERANCE:g})", path)
    elif matrixType not in _MATRIX_TYPES:
        warnings.append(f"the {what} has the matrix type '{matrixType or 'missing'}' (expected RIGID, RIGID_SCALE "
                        "or AFFINE); it was read as AFFINE")
        matrixType = "AFFINE"
    return matrix, matrixType


def _single(sequence, what: str, path: Path, warnings: list):
    """The one item a DICOM sequence must hold ("Only a single Item shall be included")."""
    if sequence is None or len(sequence) == 0:
        return None
    if len(sequence) > 1:
        warnings.append(f"the {what} holds {len(sequence)} items where the standard allows one; the first was used")
    return sequence[0]


# ---------------------------------------------------------------------------------------------------------------
# items: each knows the transform registered -> source (DICOM's sampling direction) and its inverse
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Item:
    sourceUid: str
    kind: str
    matrixType: str
    comment: str
    isIdentity: bool
    registeredToSource: Callable[[], sitk.Transform]
    sourceToRegistered: Callable[[], tuple[sitk.Transform, list]]
    matrix: np.ndarray | None = None  # spatial only: source -> registered (A_M_B)


def _spatialItems(ds: Dataset, path: Path, warnings: list) -> list[_Item]:
    sequence = ds.get("RegistrationSequence")
    if not sequence:
        raise InputError("the spatial registration has no RegistrationSequence (0070,0308) items, so it holds no "
                         "matrix", path)
    items = []
    for number, item in enumerate(sequence, start=1):
        what = f"registration item {number}"
        sourceUid = str(item.get("FrameOfReferenceUID", "") or "")
        matrixRegistration = _single(item.get("MatrixRegistrationSequence"), f"MatrixRegistrationSequence of {what}",
                                     path, warnings)
        if matrixRegistration is None:
            raise InputError(f"{what} ({sourceUid or 'no FrameOfReferenceUID'}) has no MatrixRegistrationSequence, "
                             "so its matrix is missing", path)
        matrices = matrixRegistration.get("MatrixSequence")
        if not matrices:
            raise InputError(f"{what} ({sourceUid or 'no FrameOfReferenceUID'}) has an empty MatrixSequence, so its "
                             "matrix is missing", path)
        total = np.eye(4)
        types = []
        for index, matrixItem in enumerate(matrices, start=1):
            label = what if len(matrices) == 1 else f"{what}, matrix {index}"
            matrix, matrixType = _readMatrixItem(matrixItem, label, path, warnings)
            total = matrix @ total  # Equation C.20.2-2: the first item is applied first
            types.append(matrixType)
        comment = str(matrixRegistration.get("FrameOfReferenceTransformationComment", "") or "")
        items.append(_Item(
            sourceUid=sourceUid, kind=_kindOf(total), matrixType=_widest(types), comment=comment,
            isIdentity=_isIdentity(total), matrix=total,
            registeredToSource=(lambda m=total: _affine(np.linalg.inv(m))),
            sourceToRegistered=(lambda m=total: (_affine(m), []))))
    return items


def _gridField(grid: Dataset, what: str, path: Path, littleEndian: bool) -> sitk.Image:
    """The Deformable Registration Grid (C.20.3) as a vector image in the Registered RCS (LPS mm)."""
    dims = _floats(grid.get("GridDimensions"), 3, f"GridDimensions of the {what}", path)
    if np.any(dims < 1) or np.any(dims != np.round(dims)):
        raise InputError(f"the GridDimensions of the {what} must be three positive integers, got "
                         f"{' '.join(f'{v:g}' for v in dims)}", path)
    nx, ny, nz = (int(v) for v in dims)
    spacing = _floats(grid.get("GridResolution"), 3, f"GridResolution of the {what}", path)
    if np.any(spacing <= 0):
        raise InputError(f"the GridResolution of the {what} must be positive, got "
                         f"{' '.join(f'{v:g}' for v in spacing)} mm", path)
    origin = _floats(grid.get("ImagePositionPatient"), 3, f"ImagePositionPatient of the {what}", path)
    orientation = _floats(grid.get("ImageOrientationPatient"), 6, f"ImageOrientationPatient of the {what}", path)
    row, column = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > _ORTHO_TOLERANCE or abs(np.linalg.norm(column) - 1) > _ORTHO_TOLERANCE \
            or abs(float(np.dot(row, column))) > _ORTHO_TOLERANCE:
        raise InputError(f"the ImageOrientationPatient of the {what} is not two orthogonal unit vectors", path)
    normal = np.cross(row, column)
    raw = grid.get("VectorGridData")
    if raw is None:
        raise InputError(f"the {what} has no VectorGridData (0064,0009)", path)
    raw = bytes(raw)
    needed = 12 * nx * ny * nz
    if len(raw) != needed:
        raise InputError(f"the VectorGridData of the {what} holds {len(raw)} bytes ({len(raw) / 12:g} vectors) but "
                         f"GridDimensions {nx}x{ny}x{nz} needs {nx * ny * nz} vectors ({needed} bytes of float32 "
                         "triplets)", path)
    vectors = np.frombuffer(raw, dtype="<f4" if littleEndian else ">f4").reshape(nz, ny, nx, 3).astype(np.float64)
    if not np.all(np.isfinite(vectors)):
        raise InputError(f"the VectorGridData of the {what} contains values that are not finite numbers", path)
    image = sitk.GetImageFromArray(vectors, isVector=True)
    image.SetOrigin([float(v) for v in origin])
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in np.column_stack([row, column, normal]).ravel()])
    return image


def _scaledField(image: sitk.Image, linear: np.ndarray) -> sitk.Image:
    """The field with every vector multiplied by the 3x3 ``linear`` (same grid)."""
    vectors = sitk.GetArrayFromImage(image) @ linear.T
    out = sitk.GetImageFromArray(vectors, isVector=True)
    out.CopyInformation(image)
    return out


def _invertedField(fieldImage: sitk.Image) -> tuple[sitk.Image, float, float]:
    """Inverse of the displacement field ``x + u(x)`` on the same grid, with the residual max and mean (mm).

    Residual at grid point ``x``: ``|y + u(y) - x|`` with ``y = x + v(x)`` (v the computed inverse), over the grid
    without its outermost layer of nodes (there ``y`` may fall outside the grid, where ``u`` is undefined)."""
    inverse = sitk.InvertDisplacementField(fieldImage, maximumNumberOfIterations=50, maxErrorToleranceThreshold=0.01,
                                           meanErrorToleranceThreshold=0.0001, enforceBoundaryCondition=False)
    inverse = sitk.Cast(inverse, sitk.sitkVectorFloat64)
    roundTrip = sitk.CompositeTransform([displacementFieldTransform(fieldImage), displacementFieldTransform(inverse)])
    residual = np.linalg.norm(sitk.GetArrayFromImage(displacementFieldFromTransform(roundTrip, fieldImage)), axis=-1)
    if min(residual.shape) > 2:
        residual = residual[1:-1, 1:-1, 1:-1]
    return inverse, float(residual.max()), float(residual.mean())


def _deformableItems(ds: Dataset, path: Path, warnings: list) -> list[_Item]:
    sequence = ds.get("DeformableRegistrationSequence")
    if not sequence:
        raise InputError("the deformable registration has no DeformableRegistrationSequence (0064,0002) items", path)
    encoding = getattr(ds, "original_encoding", None)
    littleEndian = True if not encoding or encoding[1] is None else bool(encoding[1])
    items = []
    for number, item in enumerate(sequence, start=1):
        what = f"deformable registration item {number}"
        sourceUid = str(item.get("SourceFrameOfReferenceUID", "") or "")
        if not sourceUid:
            raise InputError(f"{what} has no SourceFrameOfReferenceUID (0064,0003)", path)
        matrices, types = [], []
        for keyword, label in (("PreDeformationMatrixRegistrationSequence", "pre-deformation matrix"),
                               ("PostDeformationMatrixRegistrationSequence", "post-deformation matrix")):
            matrixItem = _single(item.get(keyword), f"{label} of {what}", path, warnings)
            if matrixItem is None:
                matrices.append(np.eye(4))
                types.append("")
            else:
                matrix, matrixType = _readMatrixItem(matrixItem, f"{label} of {what}", path, warnings)
                matrices.append(matrix)
                types.append(matrixType)
        pre, post = matrices
        gridItem = _single(item.get("DeformableRegistrationGridSequence"), f"DeformableRegistrationGridSequence of "
                           f"{what}", path, warnings)
        fieldImage = None
        if gridItem is not None:
            fieldImage = _gridField(gridItem, f"deformation grid of {what}", path, littleEndian)
            # Pre(x) + D(x) = Pre(x + A_pre^-1 D(x)): the field applied first, in registered coordinates
            fieldImage = _scaledField(fieldImage, np.linalg.inv(pre[:3, :3]))
        matrixType = "/".join(t for t in types if t)
        comment = str(item.get("FrameOfReferenceTransformationComment", "") or "")

        def forward(pre=pre, post=post, fieldImage=fieldImage):
            members = [] if _isIdentity(post) else [_affine(post)]
            if not _isIdentity(pre):
                members.append(_affine(pre))
            if fieldImage is not None:
                members.append(displacementFieldTransform(fieldImage))
            if not members:
                return _affine(np.eye(4))
            return members[0] if len(members) == 1 else sitk.CompositeTransform(members)

        def backward(pre=pre, post=post, fieldImage=fieldImage, what=what):
            notes = []
            members = []
            if fieldImage is not None:
                inverse, maxMm, meanMm = _invertedField(fieldImage)
                notes.append(f"the deformation field of {what} runs from the prior to the current CT; it was "
                             f"inverted numerically (inversion residual max {maxMm:.3f} mm, mean {meanMm:.4f} mm "
                             "inside the grid; check the result near the grid's border)")
                members.append(displacementFieldTransform(inverse))
            if not _isIdentity(pre):
                members.append(_affine(np.linalg.inv(pre)))
            if not _isIdentity(post):
                members.append(_affine(np.linalg.inv(post)))
            if not members:
                return _affine(np.eye(4)), notes
            return (members[0] if len(members) == 1 else sitk.CompositeTransform(members)), notes

        total = post @ pre
        deformable = fieldImage is not None
        items.append(_Item(sourceUid=sourceUid, kind="deformable" if deformable else _kindOf(total),
                           matrixType=matrixType, comment=comment,
                           isIdentity=(not deformable) and _isIdentity(total),
                           registeredToSource=forward, sourceToRegistered=backward,
                           matrix=None if deformable else np.linalg.inv(total)))
    return items


# ---------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------
def readDicomRegistration(path: str | os.PathLike, fixedFrameOfReferenceUid: str | None = None,
                          movingFrameOfReferenceUid: str | None = None) -> DicomRegistration:
    """Read a DICOM Spatial Registration or Deformable Spatial Registration file as a fixed -> moving transform.

    Parameters
    ----------
    path : the REG file.
    fixedFrameOfReferenceUid : FrameOfReferenceUID of the fixed image (the current planning CT), if known.
    movingFrameOfReferenceUid : FrameOfReferenceUID of the moving image (the prior CT or the MRI), if known.

    The item mapping moving to fixed is chosen (see the module docstring for the directions, PS3.3 C.20.2.1.1 and
    C.20.3.1.1). Normally the REG's own frame is the fixed one; if it is the moving one, the registration is
    inverted (exactly for matrices; numerically for a deformation field, with the residual in ``warnings``); a
    spatial registration relating two other frames is chained (Equation C.20.2-3). Without UIDs the file must hold
    exactly one item for a frame other than its own.

    Raises
    ------
    InputError naming the file and the problem: missing file, not DICOM, not a REG (the Modality and SOP class
    found), missing or malformed matrix, non-invertible matrix, RIGID matrix that is not orthonormal, deformation
    grid whose data does not match its dimensions, no or several matching items.
    """
    path = Path(path)
    ds = _readDataset(path)
    warnings: list[str] = []
    sopClass = str(ds.SOPClassUID)
    registeredUid = str(ds.get("FrameOfReferenceUID", "") or "")
    if not registeredUid:
        raise InputError("the registration has no FrameOfReferenceUID (0020,0052) of its own, so the frame it "
                         "registers onto is unknown", path)
    deformable = sopClass == DEFORMABLE_SPATIAL_REGISTRATION_STORAGE
    items = _deformableItems(ds, path, warnings) if deformable else _spatialItems(ds, path, warnings)
    for item in items:
        if item.sourceUid == registeredUid and not item.isIdentity:
            warnings.append("the item for the registration's own frame of reference is not the identity; it was "
                            "ignored")
    others = [item for item in items if item.sourceUid != registeredUid]
    found = ", ".join(sorted({item.sourceUid or "(no FrameOfReferenceUID)" for item in items})) or "none"
    fixed, moving = fixedFrameOfReferenceUid or None, movingFrameOfReferenceUid or None

    # candidates in order of preference: (fixed, moving, build, reversed, item)
    candidates = []
    for item in others:
        candidates.append((registeredUid, item.sourceUid, "direct", item))
    for item in others:
        candidates.append((item.sourceUid, registeredUid, "reversed", item))
    if not deformable:
        for a in others:
            for b in others:
                if a is not b and a.sourceUid != b.sourceUid:
                    candidates.append((a.sourceUid, b.sourceUid, "chained", (a, b)))

    if fixed is None and moving is None:
        if len(others) != 1:
            what = "no registration to another frame of reference" if not others else \
                f"{len(others)} registrations"
            raise InputError(f"the registration holds {what} (its own frame of reference is {registeredUid}; items: "
                             f"{found}); give movingFrameOfReferenceUid (the prior CT's FrameOfReferenceUID) and "
                             "fixedFrameOfReferenceUid (the current CT's) to choose one", path)
        chosen = candidates[0]
    else:
        matches = [c for c in candidates if (fixed is None or c[0] == fixed) and (moving is None or c[1] == moving)]
        if not matches:
            raise InputError(f"the registration does not relate the fixed frame of reference {fixed or '(any)'} to "
                             f"the moving frame {moving or '(any)'}: its own frame is {registeredUid} and its items "
                             f"are in {found}", path)
        best = [c for c in matches if c[2] == matches[0][2]]
        if len({(c[0], c[1]) for c in best}) > 1:
            pairs = ", ".join(f"{c[0]} -> {c[1]}" for c in best)
            raise InputError(f"the registration matches several frame pairs ({pairs}); give both "
                             "fixedFrameOfReferenceUid and movingFrameOfReferenceUid", path)
        chosen = best[0]
    fixedUid, movingUid, how, payload = chosen
    if how == "direct":
        item = payload
        transform = item.registeredToSource()
        kind, matrixType, sourceUid, comment = item.kind, item.matrixType, item.sourceUid, item.comment
    elif how == "reversed":
        item = payload
        transform, notes = item.sourceToRegistered()
        warnings.extend(notes)
        warnings.append(f"the registration was stored from the current frame ({fixedUid}) to the prior frame "
                        f"({movingUid}); it was inverted")
        kind, matrixType, sourceUid, comment = item.kind, item.matrixType, item.sourceUid, item.comment
    else:  # chained spatial: fixed = A, moving = B, T = inv(M_B) M_A (Equation C.20.2-3)
        a, b = payload
        matrix = np.linalg.inv(b.matrix) @ a.matrix
        transform = _affine(matrix)
        kind, matrixType, sourceUid, comment = _kindOf(matrix), _widest([a.matrixType, b.matrixType]), b.sourceUid, \
            b.comment
        warnings.append(f"neither frame is the registration's own ({registeredUid}); the two items were chained "
                        "through it")
    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        transform = transform.GetNthTransform(0).Downcast()
    result = DicomRegistration(
        transform=transform, kind=kind, registeredFrameOfReferenceUid=registeredUid,
        sourceFrameOfReferenceUid=sourceUid, fixedFrameOfReferenceUid=fixedUid, movingFrameOfReferenceUid=movingUid,
        matrixType=matrixType, description=str(ds.get("ContentDescription", "") or "") or comment,
        seriesDescription=str(ds.get("SeriesDescription", "") or ""),
        contentLabel=str(ds.get("ContentLabel", "") or ""), contentDate=str(ds.get("ContentDate", "") or ""),
        creator=_creator(ds), sopInstanceUid=str(ds.get("SOPInstanceUID", "") or ""), sopClassUid=sopClass,
        reversed=how == "reversed", path=str(path), warnings=tuple(warnings))
    logger.info("read DICOM %s registration %s (%s -> %s)%s", kind, path.name, fixedUid, movingUid,
                " inverted" if result.reversed else "")
    return result


# ---------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------
def _isField(transform: sitk.Transform) -> bool:
    return isinstance(transform, (sitk.DisplacementFieldTransform, sitk.BSplineTransform))


def _matrixSequenceItem(matrix: np.ndarray, matrixType: str | None = None) -> Dataset:
    item = Dataset()
    item.FrameOfReferenceTransformationMatrixType = matrixType or _classifyMatrix(matrix)
    item.FrameOfReferenceTransformationMatrix = [_ds(float(v)) for v in matrix.ravel()]
    return item


def _commonInstanceReference(ds: Dataset, studyUid: str, series: list[ImageSeriesRef]) -> None:
    """Common Instance Reference Module (PS3.3 C.12.2): series of this study, and of other studies."""
    sameStudy, otherStudies = Sequence(), {}
    for ref in series:
        if ref is None or not ref.sopInstanceUids:
            continue
        item = Dataset()
        item.SeriesInstanceUID = ref.seriesInstanceUid
        item.ReferencedInstanceSequence = imageReferenceSequence(ref)
        if not ref.studyInstanceUid or ref.studyInstanceUid == studyUid:
            sameStudy.append(item)
        else:
            otherStudies.setdefault(ref.studyInstanceUid, Sequence()).append(item)
    if len(sameStudy):
        ds.ReferencedSeriesSequence = sameStudy
    if otherStudies:
        studies = Sequence()
        for uid, seriesItems in otherStudies.items():
            study = Dataset()
            study.StudyInstanceUID = uid
            study.ReferencedSeriesSequence = seriesItems
            studies.append(study)
        ds.StudiesContainingOtherReferencedInstancesSequence = studies


def _gridItem(field: sitk.Image) -> Dataset:
    direction = np.array(field.GetDirection()).reshape(3, 3)
    grid = Dataset()
    grid.ImagePositionPatient = [_ds(v) for v in field.GetOrigin()]
    grid.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    grid.GridDimensions = [int(v) for v in field.GetSize()]
    grid.GridResolution = [float(v) for v in field.GetSpacing()]
    vectors = sitk.GetArrayFromImage(field).astype("<f4")  # [k, j, i, xyz]: x index fastest, as the standard stores
    grid.VectorGridData = np.ascontiguousarray(vectors).tobytes()
    return grid


def writeDicomRegistration(path: str | os.PathLike, transform: sitk.Transform, fixedFrameOfReferenceUid: str,
                           movingFrameOfReferenceUid: str, ps: PatientStudy, *,
                           referenceGrid: sitk.Image | None = None, seriesDescription: str = "Registration",
                           contentLabel: str = "REGISTRATION", contentDescription: str = "",
                           contentCreatorName: str = "", registrationComment: str = "",
                           fixedSeries: ImageSeriesRef | None = None, movingSeries: ImageSeriesRef | None = None,
                           seriesInstanceUid: str | None = None, sopInstanceUid: str | None = None,
                           seriesNumber: int = 400) -> str:
    """Write ``transform`` (fixed -> moving LPS, the project convention) as a DICOM REG file; returns its
    SOPInstanceUID.

    A linear transform (Euler3D, Affine, Similarity, Translation... or a composite of them) is written as a Spatial
    Registration; one holding a displacement field (or B-spline) as a Deformable Spatial Registration sampled on
    ``referenceGrid`` (the current CT grid; required unless the transform is a single displacement field, whose
    own grid is then used). The REG's Frame of Reference is ``fixedFrameOfReferenceUid`` (the Registered RCS);
    ``ps`` gives the patient and study (normally the current CT's). ``fixedSeries``/``movingSeries`` (optional)
    are referenced from the items and from the Common Instance Reference Module. The file is written atomically.
    """
    path = Path(path)
    if not fixedFrameOfReferenceUid or not movingFrameOfReferenceUid:
        raise InputError("writing a DICOM registration needs the fixed and the moving FrameOfReferenceUID", path)
    if fixedFrameOfReferenceUid == movingFrameOfReferenceUid:
        raise InputError("the fixed and moving images are in the same frame of reference "
                         f"({fixedFrameOfReferenceUid}); a DICOM registration between them would be ambiguous", path)
    members = _members(transform)
    deformable = any(_isField(m) for m in members)
    sopClass = DEFORMABLE_SPATIAL_REGISTRATION_STORAGE if deformable else SPATIAL_REGISTRATION_STORAGE
    ds = _newDataset(sopClass, sopInstanceUid, ps, "REG", seriesInstanceUid, seriesDescription, seriesNumber)
    del ds.OperatorsName  # RT Series attribute, not part of the REG IODs
    now = datetime.datetime.now()
    ds.SeriesTime = ps.studyTime
    ds.FrameOfReferenceUID = fixedFrameOfReferenceUid
    ds.PositionReferenceIndicator = ""
    # Enhanced General Equipment (C.7.5.2; mandatory for the deformable IOD)
    ds.ManufacturerModelName = _MANUFACTURER_MODEL
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = _SOFTWARE_VERSION
    # Spatial Registration / Deformable Spatial Registration Module with the Content Identification Macro
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.InstanceNumber = 1
    ds.ContentLabel = (contentLabel or "REGISTRATION").upper().replace(" ", "_")[:16]
    ds.ContentDescription = _fitLo(contentDescription)  # LO: cut at a word, not mid-word
    ds.ContentCreatorName = contentCreatorName
    if not deformable:
        try:
            matrix = homogeneousMatrix(transform)
        except ValueError:
            raise InputError("the transform is neither linear nor does it hold a displacement field; it cannot be "
                             "written as a DICOM registration", path) from None
        if abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
            raise InputError("the transform is not invertible and cannot be written as a DICOM registration", path)
        sourceToRegistered = np.linalg.inv(matrix)  # C.20.2.1.1: the matrix maps the moving (source) frame to fixed
        moving = Dataset()
        moving.FrameOfReferenceUID = movingFrameOfReferenceUid
        if movingSeries is not None and movingSeries.sopInstanceUids:
            moving.ReferencedImageSequence = imageReferenceSequence(movingSeries)
        registration = Dataset()
        if registrationComment:
            registration.FrameOfReferenceTransformationComment = registrationComment
        registration.RegistrationTypeCodeSequence = Sequence()
        registration.MatrixSequence = Sequence([_matrixSequenceItem(sourceToRegistered)])
        moving.MatrixRegistrationSequence = Sequence([registration])
        own = Dataset()
        own.FrameOfReferenceUID = fixedFrameOfReferenceUid
        if fixedSeries is not None and fixedSeries.sopInstanceUids:
            own.ReferencedImageSequence = imageReferenceSequence(fixedSeries)
        ownRegistration = Dataset()
        ownRegistration.RegistrationTypeCodeSequence = Sequence()
        ownRegistration.MatrixSequence = Sequence([_matrixSequenceItem(np.eye(4), "RIGID")])
        own.MatrixRegistrationSequence = Sequence([ownRegistration])
        ds.RegistrationSequence = Sequence([moving, own])
        kind = "rigid" if _classifyMatrix(matrix) == "RIGID" else "affine"
    else:
        if referenceGrid is None:
            if len(members) == 1 and isinstance(members[0], sitk.DisplacementFieldTransform):
                referenceGrid = members[0].GetDisplacementField()
            else:
                raise InputError("writing a deformable registration needs the reference grid (the current CT)", path)
        # the linear members applied after every field form the pre-deformation matrix; the rest is sampled
        outer = []
        for member in members:
            if _isField(member):
                break
            outer.append(member)
        pre = np.eye(4)
        for member in outer:
            pre = pre @ homogeneousMatrix(member)
        totalField = displacementFieldFromTransform(transform, referenceGrid)  # T(x) - x
        preField = displacementFieldFromTransform(_affine(pre), referenceGrid)  # Pre(x) - x
        offsets = sitk.Subtract(totalField, preField)  # D(x) = T(x) - Pre(x): Pre(x) + D(x) = T(x)
        moving = Dataset()
        moving.SourceFrameOfReferenceUID = movingFrameOfReferenceUid
        if movingSeries is not None and movingSeries.sopInstanceUids:
            moving.ReferencedImageSequence = imageReferenceSequence(movingSeries)
        if registrationComment:
            moving.FrameOfReferenceTransformationComment = registrationComment
        moving.RegistrationTypeCodeSequence = Sequence()
        if not _isIdentity(pre):
            moving.PreDeformationMatrixRegistrationSequence = Sequence([_matrixSequenceItem(pre)])
        moving.DeformableRegistrationGridSequence = Sequence([_gridItem(offsets)])
        own = Dataset()
        own.SourceFrameOfReferenceUID = fixedFrameOfReferenceUid
        if fixedSeries is not None and fixedSeries.sopInstanceUids:
            own.ReferencedImageSequence = imageReferenceSequence(fixedSeries)
        own.RegistrationTypeCodeSequence = Sequence()
        ds.DeformableRegistrationSequence = Sequence([moving, own])
        kind = "deformable"
    _commonInstanceReference(ds, ps.studyInstanceUid, [fixedSeries, movingSeries])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomicWriteFile(path, lambda temporary: saveFile(ds, temporary))
    # the name only: inside an output folder being written the folder is still a temporary one (core/atomic)
    logger.info("wrote DICOM %s registration %s (frame of reference %s -> %s)", kind, path.name,
                fixedFrameOfReferenceUid, movingFrameOfReferenceUid)
    return str(ds.SOPInstanceUID)
