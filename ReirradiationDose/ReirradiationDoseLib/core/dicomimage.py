"""Reading a CT or MR image series (or a single NRRD/NIfTI/MHA volume) into a SimpleITK image in LPS.

The series is chosen explicitly by SeriesInstanceUID and/or modality, never "the first series found": an RTDOSE,
RTSTRUCT or a second series in the same folder is never mistaken for the planning CT. Non-DICOM and unreadable files
are skipped with a warning naming them. The slices are sorted along the image-plane normal; gantry tilt (a slice
normal not parallel to the stacking direction), missing slices, unequal slice spacing and slices of different
orientation or pixel spacing are refused with a message naming the folder (resampling such a series silently would
misplace dose). An Enhanced (multi-frame) CT/MR is checked the same way, frame by frame: each frame's position,
orientation, pixel spacing and rescale are read from its functional groups (PS3.3 C.7.6.16), since its frames may be
stored in any order.

References: DICOM PS3.3 C.7.6.2 Image Plane Module (ImagePositionPatient, ImageOrientationPatient, PixelSpacing),
C.11.1 Modality LUT (RescaleSlope/RescaleIntercept).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import BytesLengthException, InvalidDicomError
from struct import error as struct_error

from .dicomwrite import saveFile
from .errors import InputError, libraryReason
from .geometry import ImageGeometry

__all__ = ["ImageSeriesInfo", "SeriesSummary", "listSeries", "readImageSeries", "readDicomObject",
           "damagedAttributes", "isDicomFile"]

logger = logging.getLogger(__name__)

_IMAGE_MODALITIES = ("CT", "MR", "PT", "CBCT")
_SPACING_TOLERANCE = 0.01  # relative tolerance on slice spacing
_TILT_TOLERANCE_MM = 0.01
_PIXEL_SPACING_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class ImageSeriesInfo:
    """Identity of an image read by :func:`readImageSeries` (DICOM fields empty for NRRD/NIfTI inputs)."""

    path: str
    modality: str
    seriesInstanceUid: str = ""
    studyInstanceUid: str = ""
    frameOfReferenceUid: str = ""
    patientId: str = ""
    patientName: str = ""
    seriesDescription: str = ""
    sopInstanceUids: tuple = ()
    sopClassUid: str = ""
    files: tuple = ()
    geometry: ImageGeometry | None = None
    studyDate: str = ""
    skippedFiles: tuple = ()


@dataclass
class SeriesSummary:
    """One series found in a folder (any modality)."""

    seriesInstanceUid: str
    modality: str
    seriesDescription: str
    files: list = field(default_factory=list)


def _truncation(ds: pydicom.Dataset) -> str | None:
    """Describe a truncated element (declared length longer than the bytes present), or ``None``."""
    from pydicom.dataelem import RawDataElement

    for tag, element in ds._dict.items():
        if (isinstance(element, RawDataElement) and element.value is not None and element.length != 0xFFFFFFFF
                and len(element.value) < element.length):
            return f"element {tag} declares {element.length} bytes, {len(element.value)} present"
    return None


@contextlib.contextmanager
def damagedAttributes(path: str | os.PathLike, what: str):
    """Turn a reader's failure on a missing, malformed or wrongly typed attribute into an :class:`InputError`
    naming the file (a single value where several are required, text where a number is, an unknown VR...)."""
    try:
        yield
    except InputError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, NotImplementedError, OverflowError,
            struct_error) as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise InputError(f"the {what} has a missing or invalid attribute ({detail}); the file is damaged or not "
                         "conformant", path) from None


def _parseAll(ds: pydicom.Dataset) -> None:
    """Convert every raw element now (pydicom parses lazily), so a damaged element fails here, not later."""
    for element in ds.iterall():
        _ = element.value


# Attributes GDCM applies to the pixels it decodes (rescale, RT Dose's grid scaling, Enhanced images' per-frame
# transformations): removed from the copy GDCM decodes, so that it returns the stored values as pydicom does.
_GDCM_APPLIES = ("RescaleSlope", "RescaleIntercept", "RescaleType", "DoseGridScaling")
_GDCM_APPLIES_PER_FRAME = ("PixelValueTransformationSequence", "RealWorldValueMappingSequence")
_MAX_DECODED_BYTES = 4e9  # a 1024 x 1024 x 2000 frames CT at 16 bits is 4.2 GB: more is a damaged header


def storedPixels(ds: pydicom.Dataset, path: str | os.PathLike) -> np.ndarray:
    """The stored pixel values of ``ds`` (read from ``path``), before any rescale: (rows, cols) for one frame,
    (frames, rows, cols) for several, decoded by pydicom, else by GDCM through SimpleITK. pydicom alone (no
    plugins: Slicer bundles none) cannot decode JPEG Lossless, the syntax PACS most often exports CT and MR in; GDCM
    can. GDCM applies rescale and dose scaling itself, so it decodes a copy without them. Raises ``ValueError``
    (with both decoders' reasons) when neither can decode the pixels."""
    pydicomLogger = logging.getLogger("pydicom")
    level = pydicomLogger.level
    pydicomLogger.setLevel(logging.CRITICAL)  # its decoders log an error with a traceback before GDCM is tried
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises many types for undecodable or damaged pixel data
        pydicomReason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    finally:
        pydicomLogger.setLevel(level)
    # GDCM only for compressed (encapsulated) pixel data pydicom has no decoder for: native pixel data pydicom cannot
    # read is damaged (a wrong size), and a damaged header can declare gigabytes GDCM would try to allocate
    try:
        syntax = pydicom.uid.UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
        if "PixelData" not in ds or not syntax.is_encapsulated or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise ValueError(pydicomReason)
        declared = (int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
                    * max(1, int(ds.BitsAllocated) // 8))
    except (AttributeError, TypeError, ValueError):
        raise ValueError(pydicomReason) from None
    if not 0 < declared <= _MAX_DECODED_BYTES:
        raise ValueError(f"{pydicomReason}; the header declares {declared / 1e9:.3g} GB of pixels")
    import copy
    import tempfile

    plain = copy.deepcopy(ds)
    if str(plain.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        # GDCM inverts MONOCHROME1 into MONOCHROME2 (a CT of -1000..1997 HU read -1998..999); pydicom returns the
        # stored values, which the rescale expects
        plain.PhotometricInterpretation = "MONOCHROME2"
    for keyword in _GDCM_APPLIES:
        if keyword in plain:
            delattr(plain, keyword)
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in plain.get(groups, []):
            for keyword in _GDCM_APPLIES_PER_FRAME:
                if keyword in group:
                    delattr(group, keyword)
    with tempfile.TemporaryDirectory(prefix="reirradiation-decode-") as folder:
        copyPath = Path(folder) / "pixels.dcm"
        try:
            saveFile(plain, copyPath)
            image = sitk.ReadImage(str(copyPath))
        except Exception as exc:  # pydicom (writing) and GDCM (RuntimeError) both fail in several ways
            raise ValueError(f"{pydicomReason}; GDCM: {str(exc).strip().splitlines()[-1][:200]}") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    pixels = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() != 1 or pixels.size != frames * rows * cols:
        raise ValueError(f"{pydicomReason}; GDCM decoded {pixels.shape} values for {frames} frame(s) of "
                         f"{rows} x {cols} pixels")
    if not np.issubdtype(pixels.dtype, np.integer) and int(ds.get("BitsAllocated", 16) or 16) <= 32:
        raise ValueError(f"{pydicomReason}; GDCM returned {pixels.dtype} values, not the stored integers")
    logger.info("%s: pixel data (%s) decoded by GDCM", Path(path).name, ds.file_meta.get("TransferSyntaxUID", "?"))
    return pixels.reshape((rows, cols) if frames == 1 else (frames, rows, cols))


def isDicomFile(path: str | os.PathLike) -> bool:
    """Whether a file is DICOM: with the 128-byte preamble, or without it (older exports write the dataset alone) when
    it parses as a dataset holding a SOP Class UID or a Modality, as :func:`readDicomObject` accepts it. Only the
    element headers are read (the values of other elements are skipped)."""
    try:
        if pydicom.misc.is_dicom(str(path)):
            return True
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # forced on a file that is not DICOM, pydicom fails in many ways: it is not DICOM
        return False
    return "SOPClassUID" in ds or "Modality" in ds


_NOT_DICOM_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", ".vtm", ".vtp", ".vtk", ".json", ".csv",
                       ".tfm", ".h5", ".hdf5", ".txt")


def isDicomPath(path: str | os.PathLike) -> bool:
    """Whether a file is DICOM by its name (``.dcm``) or, for a name without a known suffix, by its content: PACS
    exports and planning systems write "RS.1.2.840..." or "RTSTRUCT0001" with no ``.dcm`` (a review: such an
    RTSTRUCT skipped the frame-of-reference check and lost its empty ROIs, being read as another format)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".dcm"):
        return True
    if name.endswith(_NOT_DICOM_SUFFIXES) or not p.is_file():
        return False
    return isDicomFile(p)


def readDicomObject(path: str | os.PathLike, modality: str, what: str | None = None) -> pydicom.Dataset:
    """Read one DICOM file, check it is complete and of the expected Modality; :class:`InputError` otherwise.

    pydicom returns a truncated file's last element with whatever bytes were present; a defined-length element whose
    value is shorter than declared is detected here and the file is refused as truncated.
    """
    path = Path(path)
    what = what or modality
    if path.is_dir():  # a newcomer's review: a folder was said not to exist
        raise InputError(f"this is a folder, not a file: give the {what} file itself", path)
    if not path.is_file():
        raise InputError(f"the {what} file does not exist", path)
    errors = (InvalidDicomError, BytesLengthException, OSError, EOFError, ValueError, KeyError, TypeError,
              IndexError, NotImplementedError, OverflowError, struct_error)
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            # files without the 128-byte preamble (older exports): accept them if they parse as a DICOM dataset
            ds = pydicom.dcmread(path, force=True)
            if "SOPClassUID" not in ds and "Modality" not in ds:
                raise InvalidDicomError("no DICOM header and no SOP Class") from None
            if "TransferSyntaxUID" not in ds.file_meta:  # no file meta: the encoding the dataset was parsed in
                implicit, little = ds.original_encoding
                ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                                                  pydicom.uid.ExplicitVRLittleEndian if little else
                                                  pydicom.uid.ExplicitVRBigEndian)
    except errors as exc:
        raise InputError(f"the file cannot be read as DICOM ({exc}); it is not a {what} or it is damaged", path
                         ) from None
    problem = _truncation(ds)
    if problem:
        raise InputError(f"the {what} file is truncated ({problem}); export it again", path)
    try:
        _parseAll(ds)
    except Exception as exc:  # pydicom raises many types (BytesLengthException, NotImplementedError...) here
        raise InputError(f"the {what} file holds a damaged element ({str(exc).strip().splitlines()[0][:160]})",
                         path) from None
    found = str(ds.get("Modality", ""))
    if found != modality:
        raise InputError(f"this DICOM file's modality is {found or 'not given'}, not {modality}", path)
    return ds


def _scanFolder(folder: Path) -> tuple[dict[str, SeriesSummary], list[tuple[Path, pydicom.Dataset]], list[str]]:
    series: dict[str, SeriesSummary] = {}
    datasets = []
    skipped = []
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError) as exc:
            if not p.name.startswith(".") and p.suffix.lower() not in (".txt", ".json", ".md", ".csv"):
                skipped.append(f"{p.name} ({type(exc).__name__})")
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:
            skipped.append(f"{p.name} (no SeriesInstanceUID)")
            continue
        summary = series.setdefault(uid, SeriesSummary(uid, str(ds.get("Modality", "")),
                                                       str(ds.get("SeriesDescription", ""))))
        summary.files.append(str(p))
        datasets.append((p, ds))
    return series, datasets, skipped


def listSeries(folder: str | os.PathLike) -> list[SeriesSummary]:
    """All DICOM series in a folder (recursively), any modality."""
    series, _, _ = _scanFolder(Path(folder))
    return list(series.values())


def _readSingleFile(path: Path) -> tuple[sitk.Image, ImageSeriesInfo]:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read the image ({libraryReason(exc)})", path) from None
    if image.GetDimension() != 3:
        raise InputError(f"a 3D image is required, this file holds a {image.GetDimension()}D image", path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("a scalar image is required, this file holds a vector image", path)
    info = ImageSeriesInfo(path=str(path), modality="", geometry=ImageGeometry.fromImage(image), files=(str(path),))
    return image, info


def readImageSeries(path: str | os.PathLike, seriesInstanceUid: str | None = None, modality: str | None = None,
                    ) -> tuple[sitk.Image, ImageSeriesInfo]:
    """Read one image series from a folder (or a single NRRD/NIfTI/MHA file) as a float32 SimpleITK image.

    Parameters
    ----------
    path : a folder of DICOM files (searched recursively) or a single image file.
    seriesInstanceUid : the series to read; required when the folder holds several image series of the modality.
    modality : ``"CT"``, ``"MR"``, ... to restrict the choice; by default any image modality (never RTDOSE etc.).

    Returns
    -------
    (image, info) : the image in LPS with real-world values (RescaleSlope/Intercept applied: HU for CT), and its
    identity (UIDs, patient, frame of reference, per-slice SOPInstanceUIDs in slice order).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("the image file or folder does not exist", path)
    if path.is_file():
        try:
            is_dicom = pydicom.misc.is_dicom(str(path))
        except OSError:
            is_dicom = False
        if not is_dicom:
            return _readSingleFile(path)
        folder = path.parent
        if seriesInstanceUid is None:
            seriesInstanceUid = str(pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID", ""))
    else:
        folder = path
    series, datasets, skipped = _scanFolder(folder)
    for s in skipped:
        logger.warning("%s: skipped %s: not a readable DICOM file", folder, s)
    wanted = modality.upper() if modality else None
    if seriesInstanceUid:
        if seriesInstanceUid not in series:
            raise InputError(f"no DICOM series with SeriesInstanceUID {seriesInstanceUid} in this folder", folder)
        chosen = series[seriesInstanceUid]
        if wanted and chosen.modality != wanted:
            raise InputError(f"series {seriesInstanceUid} is {chosen.modality}, not {wanted}", folder)
    else:
        candidates = [s for s in series.values()
                      if (s.modality == wanted if wanted else s.modality in _IMAGE_MODALITIES)]
        if not candidates:
            found = ", ".join(sorted({s.modality for s in series.values()})) or "none"
            raise InputError(f"no {wanted or 'CT/MR'} image series in this folder (modalities found: {found})",
                             folder)
        if len(candidates) > 1:
            listing = "; ".join(f"{s.modality} '{s.seriesDescription}' ({len(s.files)} files) {s.seriesInstanceUid}"
                                for s in candidates)
            raise InputError(f"the folder holds {len(candidates)} image series: point at one file of the series "
                             f"you want (its whole series is read), or keep one series per folder: {listing}",
                             folder)
        chosen = candidates[0]
    slices = [(p, ds) for p, ds in datasets if str(ds.get("SeriesInstanceUID", "")) == chosen.seriesInstanceUid]
    return _assemble(folder, chosen, slices, skipped)


def _assemble(folder: Path, chosen: SeriesSummary, slices, skipped) -> tuple[sitk.Image, ImageSeriesInfo]:
    if chosen.modality in ("RTDOSE", "RTSTRUCT", "RTPLAN", "RTIMAGE", "SEG", "REG"):
        raise InputError(f"series {chosen.seriesInstanceUid} is of modality {chosen.modality}, not an image series",
                         folder)
    first = slices[0][1]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        if len(slices) > 1:
            raise InputError("multi-frame images split over several files are not supported", folder)
        return _assembleMultiFrame(folder, chosen, slices[0], skipped)
    # decode every slice first: truncated or undecodable files are skipped with a warning naming them (a skipped
    # slice inside the stack is then refused as a gap by the spacing check below)
    decoded = []
    undecoded = []
    for p, _ in slices:
        try:
            ds = pydicom.dcmread(p)
            problem = _truncation(ds)
            if problem:
                raise ValueError(f"truncated file: {problem}")
            pixels = storedPixels(ds, p).astype(np.float32)
        except Exception as exc:  # pydicom raises many types for broken pixel data
            message = f"{p.name} ({exc})"
            logger.warning("%s: skipped %s: the image cannot be decoded", folder, message)
            undecoded.append(message)
            continue
        decoded.append((p, ds, pixels))
    if not decoded:
        raise InputError(f"no slice of series {chosen.seriesInstanceUid} could be decoded "
                         f"(skipped: {'; '.join(undecoded)})", folder)
    skipped = [*skipped, *undecoded]
    slices = [(p, ds) for p, ds, _ in decoded]
    pixelsByPath = {p: pixels for p, _, pixels in decoded}
    first = slices[0][1]
    note = f" (skipped files: {'; '.join(undecoded)})" if undecoded else ""
    try:
        orientations = [[float(v) for v in ds.ImageOrientationPatient] for _, ds in slices]
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in slices])
        pixelSpacings = [[float(v) for v in ds.PixelSpacing] for _, ds in slices]
        rows, cols = int(first.Rows), int(first.Columns)
    except AttributeError as exc:
        raise InputError(f"the image series lacks a required geometry attribute ({exc})", folder) from None
    order, positions, spacing, direction = _stack(folder, orientations, positions, pixelSpacings, note)
    slices = [slices[n] for n in order]
    if len(slices) == 1:
        spacing = float(first.get("SliceThickness", 1.0) or 1.0)
    pixelSpacing = pixelSpacings[0]
    arrays = []
    sopUids = []
    files = []
    for p, ds in slices:
        pixels = pixelsByPath[p]
        if pixels.shape != (rows, cols):
            raise InputError(f"slice {p.name} has {pixels.shape} pixels, the series {rows}x{cols}", folder)
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        arrays.append(pixels * np.float32(slope) + np.float32(intercept))
        sopUids.append(str(ds.SOPInstanceUID))
        files.append(str(p))
    array = np.stack(arrays, axis=0)
    geometry = ImageGeometry((cols, rows, len(slices)), (pixelSpacing[1], pixelSpacing[0], spacing),
                             tuple(positions[0]), tuple(direction.ravel()))
    image = sitk.GetImageFromArray(array)
    geometry.applyTo(image)
    info = _info(folder, chosen, first, geometry, sopUids, files, skipped)
    logger.info("read %s series %s: %s", chosen.modality, chosen.seriesInstanceUid, geometry.describe())
    return image, info


def _stack(folder: Path, orientations, positions: np.ndarray, pixelSpacings, note: str = "", what: str = "slices"
           ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Sort image planes along their normal and check that they form one regular grid: the same orientation and
    pixel spacing on every plane, no two at one position, stacked along the normal (no gantry tilt), equally spaced.

    Returns ``(order, sorted positions, slice spacing (mm; 0 for one plane), direction matrix [row, column, normal])``;
    :class:`InputError` naming ``folder`` otherwise. ``what`` names the planes in messages (slices, frames).
    """
    iop = np.array(orientations[0], dtype=float)
    for orientation in orientations:
        if not np.allclose(orientation, iop, atol=1e-4):
            raise InputError(f"the {what} of the series have different orientations", folder)
    if any(len(values) != 2 for values in pixelSpacings):
        raise InputError(f"the PixelSpacing of the {what} must hold two numbers", folder)
    spacings = np.array(pixelSpacings, dtype=float)
    if np.abs(spacings - spacings[0]).max() > _PIXEL_SPACING_TOLERANCE_MM:
        found = sorted({f"{r:g} x {c:g}" for r, c in spacings})
        raise InputError(f"the {what} of the series have different pixel spacings ({', '.join(found)} mm); such "
                         "series are not supported — resample it to one pixel spacing first", folder)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    heights = positions @ normal
    order = np.argsort(heights, kind="stable")
    heights = heights[order]
    positions = positions[order]
    if len(np.unique(np.round(heights, 3))) != len(heights):
        raise InputError(f"the series contains several {what} at the same position (duplicate or mixed series)",
                         folder)
    spacing = 0.0
    if len(heights) > 1:
        steps = np.diff(positions, axis=0)
        stepAlongNormal = np.diff(heights)
        inPlaneShift = steps - stepAlongNormal[:, None] * normal[None, :]
        if np.abs(inPlaneShift).max() > _TILT_TOLERANCE_MM + 1e-3 * np.abs(stepAlongNormal).max():
            raise InputError(f"the {what} are not stacked along the slice normal (gantry tilt or sheared "
                             "acquisition); such series are not supported — resample it to a non-tilted grid first",
                             folder)
        spacing = float(np.median(stepAlongNormal))
        if np.abs(stepAlongNormal - spacing).max() > _SPACING_TOLERANCE * spacing:
            gaps = int(np.count_nonzero(stepAlongNormal > spacing * (1 + _SPACING_TOLERANCE)))
            raise InputError(f"the {what} are not equally spaced (spacing {stepAlongNormal.min():.3g} to "
                             f"{stepAlongNormal.max():.3g} mm; {gaps} gap(s), a {what[:-1]} may be missing){note}",
                             folder)
    return order, positions, spacing, np.column_stack([row, col, normal])


def _info(folder, chosen, ds, geometry, sopUids, files, skipped) -> ImageSeriesInfo:
    return ImageSeriesInfo(
        path=str(folder), modality=chosen.modality, seriesInstanceUid=chosen.seriesInstanceUid,
        studyInstanceUid=str(ds.get("StudyInstanceUID", "")),
        frameOfReferenceUid=str(ds.get("FrameOfReferenceUID", "")),
        patientId=str(ds.get("PatientID", "")), patientName=str(ds.get("PatientName", "")),
        seriesDescription=chosen.seriesDescription, sopInstanceUids=tuple(sopUids),
        sopClassUid=str(ds.get("SOPClassUID", "")), files=tuple(files), geometry=geometry,
        studyDate=str(ds.get("StudyDate", "")), skippedFiles=tuple(skipped))


def _frameAttribute(ds, frame, sequence: str, keyword: str):
    """An attribute of one frame of an Enhanced image: from the frame's own functional group ``sequence``, else the
    shared one, else the top level (PS3.3 C.7.6.16), or None."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    for group in (frame, shared[0] if shared else None):
        items = group.get(sequence) if group is not None else None
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return ds.get(keyword)


def _assembleMultiFrame(folder, chosen, item, skipped):
    """An Enhanced (multi-frame) CT/MR: frames sorted by their own positions and checked like the slices of a
    single-frame series (:func:`_stack`), each with its own rescale. A multi-frame image without per-frame
    positions (no PerFrameFunctionalGroupsSequence) is read by SimpleITK/GDCM as before."""
    p, _ = item
    try:
        ds = pydicom.dcmread(p)
    except Exception as exc:  # pydicom raises many types for damaged files
        raise InputError(f"cannot read the multi-frame image {p.name} ({exc})", folder) from None
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if not frames:
        try:
            image = sitk.ReadImage(str(p), sitk.sitkFloat32)
        except RuntimeError as exc:
            raise InputError(f"cannot read the multi-frame image {p.name} ({exc})", folder) from None
        info = _info(folder, chosen, ds, ImageGeometry.fromImage(image), [str(ds.SOPInstanceUID)], [str(p)], skipped)
        return image, info
    problem = _truncation(ds)
    if problem:
        raise InputError(f"the multi-frame image {p.name} is truncated ({problem})", folder)
    rows, cols = int(ds.Rows), int(ds.Columns)
    nFrames = int(ds.NumberOfFrames)
    try:
        pixels = storedPixels(ds, p)
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        raise InputError(f"the pixel data of the multi-frame image {p.name} cannot be decoded ({exc})", folder
                         ) from None
    if len(frames) != nFrames or pixels.shape != (nFrames, rows, cols):
        raise InputError(f"the multi-frame image {p.name} holds {len(frames)} frame descriptions and pixel data of "
                         f"shape {pixels.shape} for {nFrames} frames of {rows} x {cols} scalar pixels", folder)
    with damagedAttributes(folder, f"multi-frame image {p.name}"):
        orientations, positions, pixelSpacings, slopes, intercepts = [], [], [], [], []
        for frame in frames:
            values = {keyword: _frameAttribute(ds, frame, sequence, keyword) for sequence, keyword in (
                ("PlaneOrientationSequence", "ImageOrientationPatient"),
                ("PlanePositionSequence", "ImagePositionPatient"), ("PixelMeasuresSequence", "PixelSpacing"),
                ("PixelValueTransformationSequence", "RescaleSlope"),
                ("PixelValueTransformationSequence", "RescaleIntercept"))}
            missing = [k for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
                       if values[k] is None]
            if missing:
                raise InputError(f"a frame of the multi-frame image {p.name} has no {', '.join(missing)}", folder)
            orientations.append([float(v) for v in values["ImageOrientationPatient"]])
            positions.append([float(v) for v in values["ImagePositionPatient"]])
            pixelSpacings.append([float(v) for v in values["PixelSpacing"]])
            slopes.append(float(values["RescaleSlope"] or 1.0))  # as for single-frame slices
            intercepts.append(float(values["RescaleIntercept"] or 0.0))
    order, positions, spacing, direction = _stack(folder, orientations, np.array(positions), pixelSpacings,
                                                  what="frames")
    array = np.stack([pixels[n].astype(np.float32) * np.float32(slopes[n]) + np.float32(intercepts[n])
                      for n in order])
    pixelSpacing = pixelSpacings[0]
    geometry = ImageGeometry((cols, rows, nFrames), (pixelSpacing[1], pixelSpacing[0], spacing),
                             tuple(positions[0]), tuple(direction.ravel()))
    image = sitk.GetImageFromArray(array)
    geometry.applyTo(image)
    info = _info(folder, chosen, ds, geometry, [str(ds.SOPInstanceUID)], [str(p)], skipped)
    logger.info("read multi-frame %s %s: %s", chosen.modality, p.name, geometry.describe())
    return image, info
