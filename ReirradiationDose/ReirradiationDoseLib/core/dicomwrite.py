"""Writing DICOM: CT/MR image series, RTSTRUCT, RTPLAN and RTDOSE (pydicom only).

Everything written here is in DICOM patient coordinates (LPS mm). Tested to read back with :mod:`.dicomimage`,
:mod:`.rtstruct`, :mod:`.rtplan` and :mod:`.rtdose`, with SimpleITK/GDCM (CT series and RTDOSE grid) and with
dicompyler-core 0.5.6 (RTSTRUCT + RTDOSE: structure volumes and doses); SlicerRT's import is not tested here.
UIDs are generated with :func:`pydicom.uid.generate_uid` unless given.

References: DICOM PS3.3 (2024) A.3 CT Image IOD, A.4 MR Image IOD, A.18 RT Dose IOD (C.8.8.3 RT Dose Module:
DoseGridScaling, GridFrameOffsetVector relative to the first frame), A.19 RT Structure Set IOD (C.8.8.5/6, contours
CLOSED_PLANAR), A.20 RT Plan IOD (C.8.8.13 Fraction Group Sequence, C.8.8.10 Dose Reference Sequence).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from .contours import maskToContours
from .errors import InputError
from .geometry import ImageGeometry

__all__ = [
    "PatientStudy",
    "ImageSeriesRef",
    "writeImageSeries",
    "writeRtStruct",
    "writeRtPlan",
    "writeRtDose",
    "eqd2SeriesDescription",
    "CT_IMAGE_STORAGE",
    "MR_IMAGE_STORAGE",
    "RT_DOSE_STORAGE",
    "RT_STRUCTURE_SET_STORAGE",
    "RT_PLAN_STORAGE",
]

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"

_MANUFACTURER = "Reirradiation (3D Slicer extension)"
_LO_MAX = 64  # characters of an LO (descriptions, IDs) and of a PN component group (PS3.5 6.2)

_DEFAULT_COLORS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0),
]


@dataclass(frozen=True, kw_only=True)
class PatientStudy:
    """Patient and study identity shared by every object of one course written to DICOM.

    Keyword-only. Use :meth:`new` to generate the study and frame-of-reference UIDs. Dates are ``"YYYYMMDD"``.
    """

    patientName: str
    patientId: str
    patientBirthDate: str = ""
    patientSex: str = "O"
    studyInstanceUid: str
    studyDate: str
    studyDescription: str = ""
    frameOfReferenceUid: str
    studyTime: str = "120000"
    studyId: str = "1"

    def __post_init__(self):
        # an empty study date is allowed: a de-identified output leaves the Type 2 dates empty (PS3.15 Basic Profile)
        if self.studyDate:
            _checkDate(self.studyDate, "study date")
        if self.patientBirthDate:
            _checkDate(self.patientBirthDate, "patient birth date")

    def overlongIdentity(self) -> str | None:
        """What of the patient's identity is longer than DICOM allows (LO, PN: 64 characters), or None. It is
        written as it is, never cut: a shortened patient ID names another patient."""
        longest = max((len(group) for group in self.patientName.split("=")), default=0)
        found = ([f"patient ID ({len(self.patientId)} characters)"] if len(self.patientId) > _LO_MAX else []) + (
            [f"patient name ({longest} characters)"] if longest > _LO_MAX else [])
        return " and ".join(found) or None

    @classmethod
    def new(cls, patientName: str, patientId: str, studyDate: str, studyDescription: str = "", **kwargs
            ) -> PatientStudy:
        """A new study with freshly generated StudyInstanceUID and FrameOfReferenceUID."""
        return cls(patientName=patientName, patientId=patientId, studyInstanceUid=generate_uid(),
                   studyDate=studyDate, frameOfReferenceUid=generate_uid(), studyDescription=studyDescription,
                   **kwargs)


@dataclass(frozen=True)
class ImageSeriesRef:
    """What :func:`writeImageSeries` wrote: enough to reference the series from an RTSTRUCT."""

    seriesInstanceUid: str
    sopInstanceUids: list = field(default_factory=list)
    sopClassUid: str = CT_IMAGE_STORAGE
    folder: str = ""
    modality: str = "CT"
    geometry: ImageGeometry | None = None
    frameOfReferenceUid: str = ""
    studyInstanceUid: str = ""
    files: list = field(default_factory=list)


def eqd2SeriesDescription(alphaBetaGy: float, what: str = "EQD2") -> str:
    """The SeriesDescription used for EQD2 outputs, e.g. ``"EQD2 (alpha/beta 3 Gy)"`` (DICOM SH/LO safe ASCII)."""
    return f"{what} (alpha/beta {alphaBetaGy:g} Gy)"


# ---- helpers -----------------------------------------------------------------------------------------------------

def _checkDate(value: str, what: str) -> None:
    try:
        datetime.datetime.strptime(value, "%Y%m%d")
    except (TypeError, ValueError):
        raise InputError(f"the {what} must be given as YYYYMMDD, got {value!r}") from None


def _ds(value: float) -> str:
    """A DICOM DS string (at most 16 characters)."""
    s = f"{value:.10g}"
    if len(s) > 16:
        s = f"{value:.8g}"
    if len(s) > 16:
        s = f"{value:.6e}"
    return s


def _newDataset(sopClassUid: str, sopInstanceUid: str | None, ps: PatientStudy, modality: str,
                seriesInstanceUid: str | None, seriesDescription: str, seriesNumber: int) -> Dataset:
    sopInstanceUid = sopInstanceUid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sopClassUid
    meta.MediaStorageSOPInstanceUID = sopInstanceUid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    now = datetime.datetime.now()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.SOPClassUID = sopClassUid
    ds.SOPInstanceUID = sopInstanceUid
    # patient
    ds.PatientName = ps.patientName
    ds.PatientID = ps.patientId
    ds.PatientBirthDate = ps.patientBirthDate
    ds.PatientSex = ps.patientSex
    # general study
    ds.StudyInstanceUID = ps.studyInstanceUid
    ds.StudyDate = ps.studyDate
    ds.StudyTime = ps.studyTime
    ds.ReferringPhysicianName = ""
    ds.StudyID = ps.studyId
    ds.AccessionNumber = ""
    ds.StudyDescription = _fitLo(ps.studyDescription)
    # general series
    ds.Modality = modality
    ds.SeriesInstanceUID = seriesInstanceUid or generate_uid()
    ds.SeriesNumber = seriesNumber
    ds.SeriesDescription = _fitLo(seriesDescription)  # LO: a longer one makes a strict reader refuse the file
    ds.SeriesDate = ps.studyDate
    ds.OperatorsName = ""  # RT Series module, type 2
    # equipment
    ds.Manufacturer = _MANUFACTURER
    return ds


def _fitLo(text: str, limit: int = _LO_MAX) -> str:
    """``text`` cut to an LO's 64 characters at the end of its last whole sentence that fits (else of its last whole
    word, marked "..."), not in the middle of a word: a value cut mid-word ("... (voxel-wi") reads as a typo or,
    inside a list of numbers, as another number."""
    text = " ".join(str(text or "").split())
    if len(text) <= limit:
        return text
    # the last sentence end that fits, not an abbreviation's period ("Pelvis 2019 (Dr. Smith, ..." is not cut
    # after "Dr."); else the last word that keeps half the text, and a course name without spaces keeps its own
    # characters rather than shrinking to "Reirradiation:..."
    for match in reversed(list(re.finditer(r"(\w+)\. ", text[:limit + 1]))):
        if len(match.group(1)) > 3 or match.group(1).isdigit():
            return text[:match.end() - 1]
    cut = text.rfind(" ", 0, limit - 3)
    return (text[:cut] if cut >= limit // 2 else text[:limit - 3]) + "..."


def saveFile(ds: Dataset, path: str | os.PathLike) -> None:
    """Write ``ds`` as a DICOM Part 10 file (preamble, file meta) with pydicom 3 or 2: pydicom 3's
    ``enforce_file_format`` is ``write_like_original=False`` in pydicom 2, which older Slicer releases bundle
    (2.4.4 in Slicer 5.10 by Slicer issue #8796); the keyword of the other version raises TypeError."""
    if int(str(pydicom.__version__).split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, write_like_original=False)


def _save(ds: Dataset, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    saveFile(ds, path)


def imageReferenceSequence(series: ImageSeriesRef) -> Sequence:
    """One item per image of ``series`` (ReferencedSOPClassUID, ReferencedSOPInstanceUID): an RTSTRUCT's Contour
    Image Sequence, a registration's Referenced Image Sequence."""
    out = Sequence()
    for uid in series.sopInstanceUids:
        item = Dataset()
        item.ReferencedSOPClassUID = series.sopClassUid
        item.ReferencedSOPInstanceUID = uid
        out.append(item)
    return out


def _orientation(geometry: ImageGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = geometry.directionMatrix
    row, col = d[:, 0], d[:, 1]
    normal = np.cross(row, col)
    return row, col, normal


def _setImagePlane(ds: Dataset, geometry: ImageGeometry) -> None:
    row, col, _ = _orientation(geometry)
    ds.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
    # PixelSpacing = [row spacing (between rows, along j), column spacing (between columns, along i)]
    ds.PixelSpacing = [_ds(geometry.spacingMm[1]), _ds(geometry.spacingMm[0])]
    ds.Rows = geometry.sizeXyz[1]
    ds.Columns = geometry.sizeXyz[0]


# ---- image series ------------------------------------------------------------------------------------------------

def writeImageSeries(array: np.ndarray, geometry: ImageGeometry, folder: str | os.PathLike, ps: PatientStudy,
                     modality: str = "CT", seriesDescription: str = "", seriesInstanceUid: str | None = None,
                     seriesNumber: int = 1) -> ImageSeriesRef:
    """Write a 3D image as a CT or MR series, one file per slice (``folder/<modality>_<k:04d>.dcm``).

    Integer arrays within int16 are stored as they are (RescaleSlope 1, RescaleIntercept 0; HU for CT). Other
    arrays are stored as int16 with a series-wide RescaleSlope/RescaleIntercept chosen to cover their range
    (values round to the nearest step). ImagePositionPatient of slice k is ``geometry.indexToLps((0, 0, k))``,
    ImageOrientationPatient the first two direction columns, SliceLocation the position along the slice normal.
    """
    modality = modality.upper()
    if modality not in ("CT", "MR"):
        raise InputError(f"image series modality must be CT or MR, got {modality!r}")
    array = np.asarray(array)
    if array.shape != geometry.shape:
        raise InputError(f"image array shape {array.shape} does not match the geometry {geometry.describe()}")
    sopClassUid = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    # pixel encoding
    if np.issubdtype(array.dtype, np.integer) and (array.size == 0 or (array.min() >= -32768
                                                                       and array.max() <= 32767)):
        stored = array.astype(np.int16)
        slope, intercept = 1.0, 0.0
    else:
        values = array.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise InputError("the image contains NaN or infinite values; they cannot be written to DICOM")
        vmin, vmax = float(values.min()), float(values.max())
        slope = (vmax - vmin) / 65000.0 if vmax > vmin else 1.0
        intercept = vmin + 32500.0 * slope if vmax > vmin else vmin
        stored = np.clip(np.rint((values - intercept) / slope), -32768, 32767).astype(np.int16)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seriesInstanceUid = seriesInstanceUid or generate_uid()
    _, _, normal = _orientation(geometry)
    sopUids, files = [], []
    for k in range(geometry.sizeXyz[2]):
        ds = _newDataset(sopClassUid, None, ps, modality, seriesInstanceUid, seriesDescription, seriesNumber)
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.SeriesTime = ps.studyTime
        ds.ContentDate = ps.studyDate
        ds.ContentTime = ps.studyTime
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.PatientOrientation = ""
        ds.FrameOfReferenceUID = ps.frameOfReferenceUid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        position = geometry.indexToLps((0.0, 0.0, float(k)))
        ds.ImagePositionPatient = [_ds(v) for v in position]
        _setImagePlane(ds, geometry)
        ds.SliceThickness = _ds(geometry.spacingMm[2])
        ds.SliceLocation = _ds(float(np.dot(position, normal)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = ""
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
        else:
            ds.ScanningSequence = "RM"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.EchoTime = ""
            ds.EchoTrainLength = ""
            ds.RepetitionTime = ""
        ds.PixelData = np.ascontiguousarray(stored[k]).astype("<i2").tobytes()
        path = folder / f"{modality}_{k:04d}.dcm"
        _save(ds, path)
        sopUids.append(ds.SOPInstanceUID)
        files.append(str(path))
    logger.info("wrote %s series of %d slices to %s", modality, len(sopUids), folder)
    return ImageSeriesRef(seriesInstanceUid=seriesInstanceUid, sopInstanceUids=sopUids, sopClassUid=sopClassUid,
                          folder=str(folder), modality=modality, geometry=geometry,
                          frameOfReferenceUid=ps.frameOfReferenceUid, studyInstanceUid=ps.studyInstanceUid,
                          files=files)


# ---- RTSTRUCT ----------------------------------------------------------------------------------------------------

def writeRtStruct(path: str | os.PathLike, masks: dict[str, np.ndarray], geometry: ImageGeometry, ps: PatientStudy,
                  referencedSeries: ImageSeriesRef, colors: dict[str, tuple[int, int, int]] | None = None,
                  roiTypes: dict[str, str] | None = None, label: str = "", seriesDescription: str = "") -> str:
    """Write masks as an RTSTRUCT of CLOSED_PLANAR contours (LPS) on the slices of ``referencedSeries``.

    Each mask slice becomes one contour per voxel-edge outline (outer boundaries and holes, combined with the even-odd
    rule), so rasterising the structure onto ``geometry`` gives back the mask exactly. An all-false mask gives an ROI
    without contours. ``roiTypes`` maps names to RTROIInterpretedType (default ``"ORGAN"``; e.g. ``"PTV"``,
    ``"GTV"``, ``"CTV"``, ``"EXTERNAL"``). Returns the SOPInstanceUID.
    """
    colors = colors or {}
    roiTypes = roiTypes or {}
    if len(referencedSeries.sopInstanceUids) != geometry.sizeXyz[2]:
        raise InputError(f"the referenced image series has {len(referencedSeries.sopInstanceUids)} slices but the "
                         f"mask geometry has {geometry.sizeXyz[2]}; the structures must be drawn on the series' grid")
    if referencedSeries.geometry is not None and not referencedSeries.geometry.sameGridAs(geometry):
        raise InputError("the masks' geometry differs from the referenced image series' geometry "
                         f"({geometry.describe()} vs {referencedSeries.geometry.describe()})")
    ds = _newDataset(RT_STRUCTURE_SET_STORAGE, None, ps, "RTSTRUCT", None, seriesDescription, 100)
    ds.StructureSetLabel = (label or "RTSTRUCT")[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDate = ps.studyDate
    ds.StructureSetTime = ps.studyTime
    # referenced frame of reference -> study -> series -> images
    series = Dataset()
    series.SeriesInstanceUID = referencedSeries.seriesInstanceUid
    series.ContourImageSequence = imageReferenceSequence(referencedSeries)
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired; as TPSs write)
    study.ReferencedSOPInstanceUID = ps.studyInstanceUid
    study.RTReferencedSeriesSequence = Sequence([series])
    forItem = Dataset()
    forItem.FrameOfReferenceUID = ps.frameOfReferenceUid
    forItem.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([forItem])
    roiSeq, contourSeq, obsSeq = Sequence(), Sequence(), Sequence()
    for number, (name, mask) in enumerate(masks.items(), start=1):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != geometry.shape:
            raise InputError(f"mask '{name}' has shape {mask.shape}, the geometry {geometry.describe()}")
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = ps.frameOfReferenceUid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roiSeq.append(roi)
        rc = Dataset()
        color = colors.get(name, _DEFAULT_COLORS[(number - 1) % len(_DEFAULT_COLORS)])
        rc.ROIDisplayColor = [int(c) for c in color]
        rc.ReferencedROINumber = number
        items = Sequence()
        for k, polygons in maskToContours(mask, geometry).items():
            for poly in polygons:
                c = Dataset()
                img = Dataset()
                img.ReferencedSOPClassUID = referencedSeries.sopClassUid
                img.ReferencedSOPInstanceUID = referencedSeries.sopInstanceUids[k]
                c.ContourImageSequence = Sequence([img])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(poly)
                c.ContourData = [_ds(v) for v in np.asarray(poly).ravel()]
                items.append(c)
        if len(items):
            rc.ContourSequence = items
        contourSeq.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = roiTypes.get(name, "ORGAN")
        obs.ROIInterpreter = ""
        obsSeq.append(obs)
    ds.StructureSetROISequence = roiSeq
    ds.ROIContourSequence = contourSeq
    ds.RTROIObservationsSequence = obsSeq
    ds.ApprovalStatus = "UNAPPROVED"
    _save(ds, path)
    logger.info("wrote RTSTRUCT with %d structures to %s", len(masks), path)
    return ds.SOPInstanceUID


# ---- RTPLAN ------------------------------------------------------------------------------------------------------

def writeRtPlan(path: str | os.PathLike, ps: PatientStudy, numberOfFractions: int, prescriptionGy: float, label: str,
                planDate: str, referencedStructureSetUid: str | None = None, targetRoiNumber: int | None = None,
                planName: str = "", seriesDescription: str = "") -> str:
    """Write a minimal RTPLAN carrying what dose accumulation needs: fractions and prescription.

    FractionGroupSequence[0].NumberOfFractionsPlanned = ``numberOfFractions`` (no beams);
    DoseReferenceSequence[0].TargetPrescriptionDose = ``prescriptionGy`` (whole course, Gy), referencing
    ``targetRoiNumber`` of the structure set when given. Returns the SOPInstanceUID.
    """
    _checkDate(planDate, "plan date")
    numberOfFractions = int(numberOfFractions)
    if numberOfFractions < 1:
        raise InputError(f"the number of fractions must be at least 1, got {numberOfFractions}")
    if not np.isfinite(prescriptionGy) or prescriptionGy <= 0:
        raise InputError(f"the prescription dose must be positive, got {prescriptionGy} Gy")
    ds = _newDataset(RT_PLAN_STORAGE, None, ps, "RTPLAN", None, seriesDescription, 200)
    ds.FrameOfReferenceUID = ps.frameOfReferenceUid
    ds.PositionReferenceIndicator = ""
    ds.RTPlanLabel = label[:16]
    ds.RTPlanName = (planName or label)[:64]
    ds.RTPlanDate = planDate
    ds.RTPlanTime = "120000"
    if referencedStructureSetUid:
        ds.RTPlanGeometry = "PATIENT"
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_STRUCTURE_SET_STORAGE
        ref.ReferencedSOPInstanceUID = referencedStructureSetUid
        ds.ReferencedStructureSetSequence = Sequence([ref])
    else:
        ds.RTPlanGeometry = "TREATMENT_DEVICE"
    dr = Dataset()
    dr.DoseReferenceNumber = 1
    dr.DoseReferenceUID = generate_uid()
    if targetRoiNumber is not None:
        dr.DoseReferenceStructureType = "VOLUME"
        dr.ReferencedROINumber = int(targetRoiNumber)
    else:
        dr.DoseReferenceStructureType = "SITE"
    dr.DoseReferenceDescription = "TARGET"
    dr.DoseReferenceType = "TARGET"
    dr.TargetPrescriptionDose = _ds(float(prescriptionGy))
    ds.DoseReferenceSequence = Sequence([dr])
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = numberOfFractions
    fg.NumberOfBeams = 0
    fg.NumberOfBrachyApplicationSetups = 0
    refDose = Dataset()
    refDose.ReferencedDoseReferenceNumber = 1
    refDose.TargetPrescriptionDose = _ds(float(prescriptionGy))
    fg.ReferencedDoseReferenceSequence = Sequence([refDose])
    ds.FractionGroupSequence = Sequence([fg])
    ds.ApprovalStatus = "UNAPPROVED"
    _save(ds, path)
    logger.info("wrote RTPLAN %s (%d fx, %g Gy) to %s", label, numberOfFractions, prescriptionGy, path)
    return ds.SOPInstanceUID


# ---- RTDOSE ------------------------------------------------------------------------------------------------------

def writeRtDose(path: str | os.PathLike, doseGy: np.ndarray, geometry: ImageGeometry, ps: PatientStudy,
                doseType: str = "PHYSICAL", summationType: str = "PLAN", seriesDescription: str = "",
                referencedPlanUid: str | list[str] | tuple[str, ...] | None = None, comment: str = "") -> str:
    """Write a dose grid as a multi-frame RTDOSE (uint32 with DoseGridScaling, DoseUnits GY).

    Stored value = round(dose / DoseGridScaling) with DoseGridScaling = max(dose) / 4e9 (quantisation step
    max/4e9 Gy). GridFrameOffsetVector is relative (first frame 0), measured along the
    image-plane normal (row x column), so it is negative when the k axis points against the normal. For EQD2 outputs
    use ``doseType="EFFECTIVE"`` and ``seriesDescription=eqd2SeriesDescription(alphaBeta)``, with ``ps`` being the
    planning CT's study (same StudyInstanceUID and FrameOfReferenceUID). ``comment`` goes to DoseComment (cut to
    64 characters, the LO limit, after its last whole sentence that fits) and in full to ImageComments (LT). The
    descriptions are cut at a word to the LO limit; StudyDate, SeriesDate and ContentDate (and their times) are
    ``ps.studyDate`` and ``ps.studyTime``, empty when those are (Type 2 / 3 / 2C: a de-identified output).
    ``referencedPlanUid``: the RTPLAN(s) the dose belongs to (ReferencedRTPlanSequence; several for a MULTI_PLAN
    sum). Returns the SOPInstanceUID.
    """
    dose = np.asarray(doseGy, dtype=np.float64)
    if dose.shape != geometry.shape:
        raise InputError(f"dose array shape {dose.shape} does not match the geometry {geometry.describe()}")
    if not np.all(np.isfinite(dose)):
        raise InputError("the dose contains NaN or infinite values (e.g. voxels outside a mapped prior dose); fill "
                         "or mask them before writing an RTDOSE")
    if dose.min() < 0:
        raise InputError(f"the dose contains negative values (minimum {dose.min():.4g} Gy); RTDOSE cannot store them")
    doseType = doseType.upper()
    if doseType not in ("PHYSICAL", "EFFECTIVE", "ERROR"):
        raise InputError(f"DoseType must be PHYSICAL, EFFECTIVE or ERROR, got {doseType!r}")
    summationType = summationType.upper()
    maxGy = float(dose.max())
    scaling = maxGy / 4.0e9 if maxGy > 0 else 1.0  # headroom below 2**32 - 1 for the rounded DS string
    stored = np.clip(np.rint(dose / scaling), 0, 4294967295).astype("<u4")
    ds = _newDataset(RT_DOSE_STORAGE, None, ps, "RTDOSE", None, seriesDescription, 300)
    ds.FrameOfReferenceUID = ps.frameOfReferenceUid
    ds.PositionReferenceIndicator = ""
    ds.ContentDate = ps.studyDate
    ds.ContentTime = ps.studyTime
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [_ds(v) for v in geometry.originMm]
    _setImagePlane(ds, geometry)
    _, _, normal = _orientation(geometry)
    origin = np.array(geometry.originMm)
    offsets = [float(np.dot(geometry.indexToLps((0.0, 0.0, float(k))) - origin, normal))
               for k in range(geometry.sizeXyz[2])]
    ds.SliceThickness = _ds(geometry.spacingMm[2])
    ds.NumberOfFrames = geometry.sizeXyz[2]
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x3004, 0x000C)
    ds.GridFrameOffsetVector = [_ds(v) for v in offsets]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = doseType
    ds.DoseSummationType = summationType
    ds.DoseGridScaling = _ds(scaling)
    if comment:
        ds.DoseComment = _fitLo(comment)  # LO: at most 64 characters
        ds.ImageComments = comment[:10240]  # LT: the full text
    planUids = [referencedPlanUid] if isinstance(referencedPlanUid, str) else list(referencedPlanUid or ())
    references = []
    for uid in dict.fromkeys(u for u in planUids if u):
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_PLAN_STORAGE
        ref.ReferencedSOPInstanceUID = uid
        references.append(ref)
    if references:
        ds.ReferencedRTPlanSequence = Sequence(references)
    # the written scaling is rounded to 16 characters: requantise with exactly what a reader will use
    scalingWritten = float(ds.DoseGridScaling)
    if scalingWritten != scaling:
        stored = np.clip(np.rint(dose / scalingWritten), 0, 4294967295).astype("<u4")
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    _save(ds, path)
    # the name only: inside an output folder being written it is still a temporary folder (core/atomic)
    logger.info("wrote RTDOSE %s (%s, %s, max %.3f Gy)", Path(path).name, doseType, summationType, maxGy)
    return ds.SOPInstanceUID
