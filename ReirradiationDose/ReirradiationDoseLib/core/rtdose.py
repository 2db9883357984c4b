"""Reading RTDOSE (DICOM) and dose volumes (NRRD/NIfTI/MHA) into ``(doseGy [k, j, i], ImageGeometry)``.

DICOM RT Dose Module (PS3.3 C.8.8.3):

- dose (Gy) = stored value * DoseGridScaling; DoseUnits must be ``GY`` (``RELATIVE`` doses are refused: they are not
  absolute doses and cannot be accumulated);
- frames are planes along the normal n = row x column of ImageOrientationPatient; the first frame always lies at
  ImagePositionPatient. GridFrameOffsetVector gives each frame's offset, either relative to the first frame (first
  value 0, the usual form; within 0.05 mm, a rounding residue) or absolute (PS3.3 C.8.8.3.2: the first value is the
  first frame's position: its z for the axial grids the standard describes, which planning systems also write for
  feet-first and prone grids, whose normal is -z; or its position along n). Both are converted to distances from
  the first frame along n; a first value that is neither 0 nor the first frame's position is refused;
- frames must be equally spaced (else refused: the dose would need resampling, which must be explicit);
- big-endian, RLE and other transfer syntaxes are decoded by pydicom.

DoseSummationType (PLAN, MULTI_PLAN, FRACTION, BEAM, BRACHY, CONTROL_POINT, ...) is reported; a BEAM or one-session
dose is not a course's dose: :func:`requirePlanDose` refuses it where a whole-course dose is expected (a FRACTION
dose, one fraction group's whole delivery, is a course of that group's fractions).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from .dicomimage import damagedAttributes, isDicomFile, readDicomObject, storedPixels
from .errors import InputError, libraryReason
from .geometry import ImageGeometry

__all__ = ["RtDose", "readRtDose", "requirePlanDose", "PLAN_SUMMATION_TYPES", "COURSE_SUMMATION_TYPES"]

logger = logging.getLogger(__name__)

PLAN_SUMMATION_TYPES = ("PLAN", "MULTI_PLAN", "PLAN_OVERVIEW", "RECORD")
# what a course can be the dose of: a plan, or one whole fraction group of it (FRACTION is "dose calculated for a
# single Fraction Group within RT Plan", DICOM PS3.3 C.8.8.3: a phase's whole delivery, the dose a sequential
# boost is given as, with that group's fractions; one session is FRACTION_SESSION)
COURSE_SUMMATION_TYPES = PLAN_SUMMATION_TYPES + ("FRACTION",)
_SPACING_TOLERANCE = 0.01
# GridFrameOffsetVector's first value: 0 (relative form) or the first frame's position, which planning systems may
# write with fewer decimals than ImagePositionPatient (-122.4 for z -122.4407)
_OFFSET_TOLERANCE_MM = 0.05


@dataclass(frozen=True)
class RtDose:
    """A dose grid read from a file.

    ``doseType`` (PHYSICAL/EFFECTIVE/ERROR) and ``summationType`` are ``"UNKNOWN"`` for non-DICOM files
    (``fromDicom`` False): the caller must then state what the dose is.
    """

    doseGy: np.ndarray
    geometry: ImageGeometry
    doseType: str
    summationType: str
    units: str
    frameOfReferenceUid: str
    referencedPlanUid: str
    patientId: str
    sopInstanceUid: str
    path: str = ""
    fromDicom: bool = True
    studyInstanceUid: str = ""
    seriesInstanceUid: str = ""
    seriesDescription: str = ""
    patientName: str = ""
    comment: str = ""
    doseGridScaling: float = 1.0
    referencedFractionGroupNumber: int | None = None
    referencedPlanCount: int = 0  # items of ReferencedRTPlanSequence: more than one for a sum of plans
    quantity: str = ""  # a non-DICOM file's header: what it holds, as this tool writes it (``QUANTITY_KEY``)

    @property
    def maxGy(self) -> float:
        return float(np.max(self.doseGy)) if self.doseGy.size else 0.0


# The header field (NRRD, MHA) in which this tool names what a map holds; ``quantity`` is its older, descriptive key
QUANTITY_KEY = "ReirradiationDose.Quantity"
PHYSICAL_QUANTITY = "physical dose"


# what this tool wrote in the generic ``quantity`` key before ``QUANTITY_KEY`` (only these are read from it: another
# program's "quantity:=dose" is its own business)
_LEGACY_QUANTITIES = ("composite EQD2", "EQD2 of course", "alpha/beta", "largest physical dose a planned course",
                      PHYSICAL_QUANTITY)


def headerQuantity(image) -> str:
    """What an image file's header says it holds as this tool writes it (``QUANTITY_KEY``, else the older
    ``quantity`` when it holds one of this tool's descriptions), or "". ``image``: a ``sitk.Image`` or a
    ``sitk.ImageFileReader`` after ``ReadImageInformation``."""
    if image.HasMetaDataKey(QUANTITY_KEY):
        return image.GetMetaData(QUANTITY_KEY).strip()
    if image.HasMetaDataKey("quantity"):
        legacy = image.GetMetaData("quantity").strip()
        if legacy.startswith(_LEGACY_QUANTITIES):
            return legacy
    return ""


def headerQuantityOfFile(path) -> str:
    """:func:`headerQuantity` of an image file read without its pixels; "" for a file SimpleITK cannot read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return headerQuantity(reader)


def refuseNonPhysicalMap(quantity: str, where) -> None:
    """Refuse a map whose header (:func:`headerQuantity`) names anything but a physical dose: this tool's own maps
    (the eqd2 command's output, a dose run's course EQD2, composite, alpha/beta or budget map) say what they hold,
    and read as a physical dose they would be converted a second time (a physicist's review: an EQD2 map given as a
    prior course took the composite's maximum from 176.0 to 250.9 Gy; a hyperfractionated course's EQD2 read again
    understates it by 20 %). A map without such a header passes (the user states it is a physical dose)."""
    if quantity and not quantity.lower().startswith(PHYSICAL_QUANTITY):
        raise InputError(f"this file holds {quantity[:90]!r} (its header, as Reirradiation writes it), not a physical "
                         "dose: give the course's physical plan dose (converting an EQD2 again would count the "
                         "fractionation twice)", where)


def readScalarDoseImage(path: Path) -> sitk.Image:
    """A NRRD/NIfTI/MHA dose volume as stored (its pixel type), refused unless 3D and scalar. The header is checked
    before the pixels are read: read as float32, a 2-component image was taken as one dose (a review: refused as
    "963.9 Gy, cGy?"). The one reader of such files for the dose pipeline, ``eqd2`` and ``dvh``."""
    try:
        header = sitk.ImageFileReader()
        header.SetFileName(str(path))
        header.ReadImageInformation()
        if header.GetDimension() != 3 or header.GetNumberOfComponents() != 1:
            raise InputError(f"a dose must be a 3D scalar image; this one has {header.GetDimension()} dimensions "
                             f"and {header.GetNumberOfComponents()} components per voxel", path)
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read the dose file ({libraryReason(exc)})", path) from None
    return image


def _firstVoxel(bad: np.ndarray) -> str:
    """"(i, j, k) = (…)" of the first True voxel, found by a flat search (``np.nonzero`` lists every voxel: 1.4 GB
    for an all-NaN clinical dose, a review)."""
    k, j, i = (int(v) for v in np.unravel_index(int(np.argmax(bad)), bad.shape))
    return f"(i, j, k) = ({i}, {j}, {k})"


def checkedDoseArray(image: sitk.Image, path: Path, allowUnknown: bool = False,
                     allowNegative: bool = False) -> np.ndarray:
    """The dose of :func:`readScalarDoseImage` as float32 [k, j, i] Gy, refused, naming the file, the number of voxels
    and the first: infinite values; values beyond float32 (a float64 1e39 is finite there); NaN unless
    ``allowUnknown`` (the dose command writes NaN where a course's dose is unknown; a DVH says which structures
    touch it); negative values unless ``allowNegative``."""
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        for bad, what, why in ((np.isinf(array), "infinite", "a damaged or wrongly converted image"),
                               (None if allowUnknown else np.isnan(array), "NaN (not a number)",
                                "a dose of unknown value cannot be used here (the dose command writes NaN where a "
                                "course's dose is unknown: beyond its dose grid, or beyond a mapped prior dose's; "
                                "give the course's own RTDOSE or physical dose)")):
            if bad is not None and bad.any():
                count = int(np.count_nonzero(bad))
                raise InputError(f"{count} voxel{'s' if count > 1 else ''} of the dose {'are' if count > 1 else 'is'} "
                                 f"{what}, the first at voxel {_firstVoxel(bad)}: {why}", path)
    dose = array.astype(np.float32, copy=False)
    if dose is not array and np.isinf(dose).any():
        count = int(np.count_nonzero(np.isinf(dose)))
        raise InputError(f"{count} voxel{'s' if count > 1 else ''} of the dose exceed{'' if count > 1 else 's'} the "
                         "largest single-precision number (3.4e38): not a dose in Gy", path)
    if not allowNegative and dose.size:
        negative = dose < 0
        if negative.any():
            count = int(np.count_nonzero(negative))
            raise InputError(f"the dose contains negative values (minimum {float(np.nanmin(dose)):.4g} Gy, {count} "
                             f"voxel{'s' if count > 1 else ''}, the first at voxel {_firstVoxel(negative)})", path)
    return dose


def _readNonDicom(path: Path) -> RtDose:
    image = readScalarDoseImage(path)
    dose = checkedDoseArray(image, path)
    logger.warning("%s: dose read from a non-DICOM file: units assumed Gy, dose type and summation type unknown",
                   path)
    return RtDose(doseGy=dose, geometry=ImageGeometry.fromImage(image), doseType="UNKNOWN",
                  summationType="UNKNOWN", units="GY (assumed)", frameOfReferenceUid="", referencedPlanUid="",
                  patientId="", sopInstanceUid="", path=str(path), fromDicom=False, quantity=headerQuantity(image))


def readRtDose(path: str | os.PathLike, allowRelative: bool = False) -> RtDose:
    """Read an RTDOSE (or a NRRD/NIfTI/MHA dose volume, assumed in Gy) as float32 Gy on its LPS grid.

    ``allowRelative=True`` reads a RELATIVE-unit RTDOSE for inspection only (``units == "RELATIVE"``, values are
    not Gy); every dose-accumulation path keeps the default, which refuses it.
    """
    path = Path(path)
    if path.is_dir():  # a newcomer's review: a folder was said not to exist
        raise InputError("this is a folder, not a dose file: give the RTDOSE file itself (e.g. RD*.dcm) or a dose "
                         "image (NRRD, NIfTI, MHA)", path)
    if not path.is_file():
        raise InputError("the dose file does not exist", path)
    if not isDicomFile(path):  # a file without the 128-byte preamble is still DICOM: its scaling and units count
        return _readNonDicom(path)
    # truncation, damaged elements and the Modality are checked by readDicomObject (InputError naming the file)
    ds = readDicomObject(path, "RTDOSE")
    with damagedAttributes(path, "RTDOSE"):
        return _readRtDoseDataset(ds, path, allowRelative)


def _multiplicity(ds, keyword: str, count: int, path: Path) -> list[float]:
    value = ds.get(keyword)
    values = [] if value is None else (list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue))
                                       else [value])
    numbers = [float(v) for v in values if v is not None and str(v).strip() != ""]
    if len(numbers) != count or not np.all(np.isfinite(numbers)):
        raise InputError(f"the RTDOSE {keyword} must hold {count} finite numbers (found {value!r})", path)
    return numbers


def _frameDistances(offsets: np.ndarray, ipp: np.ndarray, normal: np.ndarray, path: Path) -> np.ndarray:
    """Each frame's distance from the first frame along the slice normal, from GridFrameOffsetVector; the first frame
    stays at ImagePositionPatient.

    Relative form (first value 0 within 0.05 mm): ``offset - offset[0]``. Absolute form (PS3.3 C.8.8.3.2: the first
    value is the first frame's position), recognised only when the first value equals IPP·n (positions along n:
    ``offset - offset[0]``) or, for an axial grid (n = ±z), the patient z of IPP (positions along z, as planning
    systems write them for feet-first and prone grids too: ``(offset - offset[0]) * n_z``). Taking any other non-zero
    first value as the absolute form moved feet-first grids by 40 to 200 mm and a relative vector starting with a
    rounding residue by 100 mm: such a vector is refused.
    """
    first = float(offsets[0])
    if abs(first) <= _OFFSET_TOLERANCE_MM:
        return offsets - first
    alongNormal = float(ipp @ normal)
    if abs(first - alongNormal) <= _OFFSET_TOLERANCE_MM:
        logger.info("%s: GridFrameOffsetVector is in the absolute form (positions along the slice normal)", path)
        return offsets - first
    if abs(abs(normal[2]) - 1.0) <= 1e-4 and abs(first - float(ipp[2])) <= _OFFSET_TOLERANCE_MM:
        logger.info("%s: GridFrameOffsetVector is in the absolute form (patient z positions)", path)
        return (offsets - first) * float(np.sign(normal[2]))
    raise InputError(f"the RTDOSE GridFrameOffsetVector starts at {first:g} mm, which is neither 0 (offsets from the "
                     f"first frame) nor the first frame's position (ImagePositionPatient: {alongNormal:g} mm along "
                     f"the slice normal, z {float(ipp[2]):g} mm; the absolute form): where the frames lie is unknown",
                     path)


def _readRtDoseDataset(ds, path: Path, allowRelative: bool) -> RtDose:
    units = str(ds.get("DoseUnits", "")).upper()
    if units == "RELATIVE" and not allowRelative:
        raise InputError("RTDOSE units are RELATIVE; an absolute dose in Gy is required", path)
    if units not in ("GY", "CGY", "RELATIVE"):
        raise InputError(f"RTDOSE units are '{units or 'missing'}'; an absolute dose in Gy is required", path)
    try:
        scaling = ds.get("DoseGridScaling")
        if scaling is None or scaling == "":
            # Type 1C, required with pixel data: without it the stored integers are not a dose (a review: read as
            # 1, an eqd2 run wrote 1.9e17 Gy)
            raise InputError("the RTDOSE has no DoseGridScaling (3004,000E): its stored values cannot be converted "
                             "to Gy", path)
        scaling = float(scaling)
    except (TypeError, ValueError) as exc:
        raise InputError(f"the RTDOSE DoseGridScaling is not a number ({exc})", path) from None
    if not np.isfinite(scaling) or scaling <= 0:
        raise InputError(f"the RTDOSE DoseGridScaling is {scaling!r}; a positive number is required", path)
    try:
        pixels = storedPixels(ds, path)
    except Exception as exc:  # pydicom raises many types for undecodable or truncated pixel data
        raise InputError(f"the RTDOSE pixel data cannot be decoded ({exc})", path) from None
    nFrames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    pixels = np.asarray(pixels)
    if min(nFrames, rows, cols) < 1 or pixels.size != nFrames * rows * cols or pixels.ndim > 3:
        raise InputError(f"the RTDOSE pixel data ({pixels.size} values) do not match NumberOfFrames x Rows x Columns "
                         f"({nFrames} x {rows} x {cols})", path)
    pixels = pixels.reshape(nFrames, rows, cols)
    dose = pixels.astype(np.float64) * scaling
    if units == "CGY":
        dose = dose / 100.0
    if not np.all(np.isfinite(dose.astype(np.float32))):
        raise InputError(f"the RTDOSE values are not finite numbers in float32 (DoseGridScaling {scaling:g})", path)
    if dose.size and float(dose.min()) < 0 and str(ds.get("DoseType", "")).upper() != "ERROR":
        raise InputError(f"the RTDOSE holds negative doses (minimum {float(dose.min()):.4g}); a delivered dose "
                         "cannot be negative", path)
    iop = np.array(_multiplicity(ds, "ImageOrientationPatient", 6, path))
    ipp = np.array(_multiplicity(ds, "ImagePositionPatient", 3, path))
    pixelSpacing = _multiplicity(ds, "PixelSpacing", 2, path)
    if min(pixelSpacing) <= 0:
        raise InputError(f"the RTDOSE PixelSpacing must be positive (found {pixelSpacing} mm)", path)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    if nFrames > 1:
        gfov = ds.get("GridFrameOffsetVector")
        if gfov is None or len(gfov) != nFrames:
            raise InputError(f"the RTDOSE has {nFrames} frames but GridFrameOffsetVector has "
                             f"{0 if gfov is None else len(gfov)} values", path)
        offsets = np.array([float(v) for v in gfov])
        if not np.all(np.isfinite(offsets)):
            raise InputError("the RTDOSE GridFrameOffsetVector holds values that are not numbers", path)
        relative = _frameDistances(offsets, ipp, normal, path)
        order = np.argsort(relative)
        if not np.all(order == np.arange(nFrames)):
            if np.all(order == np.arange(nFrames)[::-1]):
                pass  # decreasing offsets: the k axis points against the normal (handled by a negative step)
            else:
                raise InputError("the RTDOSE frames are not in monotonic order along the slice normal", path)
        steps = np.diff(relative)
        step = float(np.median(steps))
        if step == 0 or np.abs(steps - step).max() > _SPACING_TOLERANCE * abs(step):
            raise InputError(f"the RTDOSE frames are not equally spaced (GridFrameOffsetVector steps "
                             f"{steps.min():.3g} to {steps.max():.3g} mm); resample the dose explicitly first", path)
        sliceSpacing = abs(step)
        kAxis = normal if step > 0 else -normal
    else:
        sliceSpacing = float(ds.get("SliceThickness", 0) or 0) or max(pixelSpacing)
        kAxis = normal
    direction = np.column_stack([row, col, kAxis])
    try:
        geometry = ImageGeometry((cols, rows, nFrames), (pixelSpacing[1], pixelSpacing[0], sliceSpacing), tuple(ipp),
                                 tuple(direction.ravel()))
    except ValueError as exc:  # e.g. ImageOrientationPatient not orthonormal, zero slice spacing
        raise InputError(f"the RTDOSE grid is invalid ({exc})", path) from None
    refPlan = ""
    refFg = None
    planUids = {str(i.get("ReferencedSOPInstanceUID", "")) for i in ds.get("ReferencedRTPlanSequence", [])}
    planCount = len(planUids)  # distinct plans: one named twice is one plan
    if planCount:
        item = ds.ReferencedRTPlanSequence[0]
        refPlan = str(item.get("ReferencedSOPInstanceUID", ""))
        if "ReferencedFractionGroupSequence" in item and len(item.ReferencedFractionGroupSequence):
            value = item.ReferencedFractionGroupSequence[0].get("ReferencedFractionGroupNumber")
            refFg = int(value) if value is not None else None
    result = RtDose(
        doseGy=dose.astype(np.float32), geometry=geometry, doseType=str(ds.get("DoseType", "")).upper(),
        summationType=str(ds.get("DoseSummationType", "")).upper(), units="RELATIVE" if units == "RELATIVE" else "GY",
        frameOfReferenceUid=str(ds.get("FrameOfReferenceUID", "")), referencedPlanUid=refPlan,
        patientId=str(ds.get("PatientID", "")), sopInstanceUid=str(ds.get("SOPInstanceUID", "")), path=str(path),
        fromDicom=True, studyInstanceUid=str(ds.get("StudyInstanceUID", "")),
        seriesInstanceUid=str(ds.get("SeriesInstanceUID", "")),
        seriesDescription=str(ds.get("SeriesDescription", "")), patientName=str(ds.get("PatientName", "")),
        comment=str(ds.get("ImageComments", "") or ds.get("DoseComment", "")), doseGridScaling=scaling,
        referencedPlanCount=planCount,
        referencedFractionGroupNumber=refFg)
    logger.info("read RTDOSE %s: %s, max %.3f Gy, %s/%s", path.name, geometry.describe(), result.maxGy,
                result.doseType, result.summationType)
    return result


def refuseEqd2Dose(rtDose: RtDose, path: str | os.PathLike | None = None) -> RtDose:
    """Refuse a dose that is already an EQD2 (or BED): DoseType EFFECTIVE and named so in its series description or
    comment, as this tool's composite is, or a non-DICOM map whose header names anything but a physical dose
    (:func:`refuseNonPhysicalMap`). Converting it again would count the fractionation twice. An EFFECTIVE dose that
    is not (a proton plan's RBE-weighted dose) passes."""
    where = path if path is not None else (rtDose.path or None)
    if not rtDose.fromDicom:
        refuseNonPhysicalMap(rtDose.quantity, where)
    text = f"{rtDose.seriesDescription} {rtDose.comment}".upper()
    if rtDose.doseType == "EFFECTIVE" and re.search(r"\b(EQD ?2|BED)\b", text):
        raise InputError("this RTDOSE is already an EQD2 or BED (DoseType EFFECTIVE, "
                         f"'{(rtDose.seriesDescription or rtDose.comment)[:60]}'): give the course's physical "
                         "(or RBE-weighted) plan dose", where)
    return rtDose


def requirePlanDose(rtDose: RtDose, path: str | os.PathLike | None = None, sessions: float | None = None) -> RtDose:
    """Refuse a dose that is neither a whole plan's nor a whole fraction group's (DoseSummationType BEAM,
    FRACTION_SESSION, CONTROL_POINT, ...). A FRACTION dose is one fraction group's whole delivery and is converted
    with that group's fractions (before, it was refused, so the phases of a sequential boost could not be given as
    courses of their own).

    A non-DICOM dose (summation type unknown) passes with a warning: the user states it is a plan dose.
    """
    where = path if path is not None else (rtDose.path or None)
    summation = rtDose.summationType
    if summation == "UNKNOWN":
        logger.warning("%s: dose summation type unknown (non-DICOM file); assumed to be the whole-plan dose", where)
        return rtDose
    if not summation:  # Type 1; an adversarial review: "this RTDOSE is a  dose"
        raise InputError("this RTDOSE has no DoseSummationType (3004,000A): it does not say whether it is the dose "
                         "of the whole plan; export the plan dose (DoseSummationType PLAN) from the planning system",
                         where)
    if summation not in COURSE_SUMMATION_TYPES:
        raise InputError(f"this RTDOSE is a {summation} dose (DoseSummationType), not the dose of the whole plan "
                         "(nor of a whole fraction group); export the plan dose (DoseSummationType PLAN) from the "
                         "planning system", where)
    if rtDose.doseType == "ERROR":
        raise InputError("this RTDOSE is an ERROR dose (a difference), not a delivered dose", where)
    if isPlanSum(rtDose) and sessions is None:
        # a review on real data: two 14 Gy / 7 fx plans summed were read with the first plan's 7 fractions, max EQD2
        # 42.2 instead of 29.9 Gy (had they been given one after the other), without a word. Plans given together in
        # the same sessions (two isocentres) are one course of those sessions: the caller states their number
        named = f" and names {rtDose.referencedPlanCount} RTPLANs" if rtDose.referencedPlanCount > 1 else ""
        raise InputError(f"this RTDOSE is the sum of several plans (DoseSummationType {summation}{named}): a sum of "
                         "plans has no single number of fractions. If the plans were given one after the other, give "
                         "each plan's own RTDOSE as a course; if they were given together, in the same sessions, give "
                         "the number of those sessions as the course's 'fractions' without a 'plan' (eqd2: "
                         "--fractions without --plan)", where)
    return rtDose


def isPlanSum(rtDose: RtDose) -> bool:
    """A dose summed over several plans: DoseSummationType MULTI_PLAN ("2 or more RT Plans", PS3.3 C.8.8.3), or a
    ReferencedRTPlanSequence naming more than one plan."""
    return rtDose.summationType == "MULTI_PLAN" or rtDose.referencedPlanCount > 1


def planSumWarning(rtDose: RtDose, fractions: float, what: str) -> str:
    """Said of a sum of plans read with the sessions a user stated (:func:`requirePlanDose`'s ``sessions``)."""
    plans = f"{rtDose.referencedPlanCount} plans" if rtDose.referencedPlanCount > 1 else "several plans"
    return (f"{what}: its RTDOSE sums {plans} (DoseSummationType {rtDose.summationType}); it is read as one course of "
            f"the {fractions:g} fractions given, right only if every plan was delivered in each of those sessions "
            "(plans given one after the other are courses of their own)")
