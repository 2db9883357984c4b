"""Reading and writing registration transforms.

All files hold the project's convention: the transform maps fixed (current) LPS points to moving (prior) points,
which is ITK's resampling transform and what Slicer stores as "transform from parent" in ``.h5``/``.tfm`` files.

- ``.h5`` / ``.hdf5`` (ITK HDF5, any transform incl. composite and displacement fields) and ``.tfm`` / ``.txt``
  (ITK text, linear transforms) through ``sitk.ReadTransform`` / ``sitk.WriteTransform``.
- ``.nrrd`` / ``.nhdr`` / ``.nii`` / ``.nii.gz`` / ``.mha`` / ``.mhd``: a displacement field image (vector, LPS mm,
  ``T(x) = x + u(x)``), as written by the demo-case generator (``truth/prior_registration.nrrd``) and by Slicer's
  grid transform storage.
- DICOM registration objects (REG: Spatial Registration and Deformable Spatial Registration), any ``.dcm`` file or
  any file with a DICOM preamble whose SOP class is a registration or Modality REG, through
  :func:`.dicomreg.readDicomRegistration` (which turns DICOM's directions into the convention above and picks the
  item relating the given frames of reference).
"""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from . import dicomreg
from .errors import InputError, libraryReason
from .geometry import ImageGeometry
from .registration import displacementFieldFromTransform, displacementFieldTransform

__all__ = ["readTransform", "isDicomRegistration", "writeTransform", "readDisplacementField", "writeDisplacementField",
           "TRANSFORM_SUFFIXES", "FIELD_SUFFIXES"]

TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt")
FIELD_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
DICOM_SUFFIX = ".dcm"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def readDisplacementField(path: str | os.PathLike) -> sitk.Image:
    """Read a displacement field image (3 components, LPS mm) as sitkVectorFloat64."""
    path = Path(path)
    if not path.exists():
        raise InputError("the displacement field file does not exist", path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"the displacement field could not be read ({libraryReason(error)})", path) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 3:
        raise InputError("this is not a 3D displacement field (a vector image with 3 components per voxel is "
                         f"needed, found {image.GetNumberOfComponentsPerPixel()})", path)
    return sitk.Cast(image, sitk.sitkVectorFloat64)


def isDicomRegistration(path: str | os.PathLike) -> bool:
    """Whether ``readTransform`` reads ``path`` as a DICOM registration (``.dcm``, or a DICOM REG file without one
    of the other suffixes)."""
    path = Path(path)
    suffix = _suffix(path)
    return suffix == DICOM_SUFFIX or (suffix not in TRANSFORM_SUFFIXES + FIELD_SUFFIXES and path.exists()
                                      and dicomreg.isDicomRegistrationFile(path))


def readTransform(path: str | os.PathLike, fixedFrameOfReferenceUid: str | None = None,
                  movingFrameOfReferenceUid: str | None = None) -> sitk.Transform:
    """Read a transform file (``.h5``/``.tfm``/``.txt``), a displacement field image (``.nrrd``...) or a DICOM
    registration (``.dcm`` or any DICOM REG file). The frame-of-reference UIDs (current CT = fixed, prior CT or
    MRI = moving) are used only for DICOM registrations, to pick the right item."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.exists():
        raise InputError("the transform file does not exist", path)
    if isDicomRegistration(path):
        return dicomreg.readDicomRegistration(path, fixedFrameOfReferenceUid, movingFrameOfReferenceUid).transform
    if suffix in FIELD_SUFFIXES:
        return displacementFieldTransform(readDisplacementField(path))
    if suffix not in TRANSFORM_SUFFIXES:
        known = ", ".join(TRANSFORM_SUFFIXES + FIELD_SUFFIXES + (DICOM_SUFFIX,))
        raise InputError(f"unknown transform file type '{suffix}' (use {known})", path)
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as error:
        raise InputError(f"the transform could not be read ({libraryReason(error)})", path) from None
    return _flatten(transform)


def _flatten(transform: sitk.Transform) -> sitk.Transform:
    """Downcast a generic transform; a composite with a single member becomes that member."""
    try:
        transform = transform.Downcast()
    except AttributeError:  # pragma: no cover - older SimpleITK
        return transform
    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        return transform.GetNthTransform(0).Downcast()
    return transform


def writeDisplacementField(field: sitk.Image, path: str | os.PathLike) -> Path:
    """Write a displacement field image (float32 vectors keep files half the size; ~0.1 um rounding)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.Cast(field, sitk.sitkVectorFloat32), str(path), useCompression=True)
    return path


def writeTransform(transform: sitk.Transform, path: str | os.PathLike,
                   referenceGeometry: ImageGeometry | None = None) -> Path:
    """Write ``transform``; to a field image (``.nrrd``...) it is sampled at the voxel centres of
    ``referenceGeometry`` (required unless the transform is itself a displacement field transform)."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix in FIELD_SUFFIXES:
        if referenceGeometry is None:
            if isinstance(transform, sitk.DisplacementFieldTransform):
                field = transform.GetDisplacementField()
                return writeDisplacementField(field, path)
            raise InputError("writing a transform as a displacement field needs the reference grid", path)
        field = displacementFieldFromTransform(transform, referenceGeometry.emptyImage())
        return writeDisplacementField(field, path)
    if suffix not in TRANSFORM_SUFFIXES:
        raise InputError(f"unknown transform file type '{suffix}'", path)
    if suffix in (".tfm", ".txt") and _hasField(transform):
        raise InputError("a deformable transform cannot be stored as text: use .h5 or a .nrrd displacement field",
                         path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteTransform(transform, str(path))
    return path


def _hasField(transform: sitk.Transform) -> bool:
    transform = transform.Downcast() if hasattr(transform, "Downcast") else transform
    if isinstance(transform, sitk.CompositeTransform):
        return any(_hasField(transform.GetNthTransform(i)) for i in range(transform.GetNumberOfTransforms()))
    return isinstance(transform, (sitk.DisplacementFieldTransform, sitk.BSplineTransform))
