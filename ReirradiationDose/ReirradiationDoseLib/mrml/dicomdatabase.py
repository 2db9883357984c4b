"""A dose volume loaded from DICOM: its course's fractions and DoseSummationType, read from the original files.

SlicerRT's DICOM-RT import makes a dose volume node but keeps neither the number of fractions (RTPLAN
FractionGroupSequence) nor the DoseSummationType. This module finds the node's original RTDOSE file through the
subject hierarchy and a DICOM database, follows ReferencedRTPlanSequence to the RTPLAN, and reads both with the core
readers (:mod:`..core.rtdose`, :mod:`..core.rtplan`); there is no second DICOM parser here.

Where the UIDs are, as SlicerRT and Slicer store them (checked against the sources):

- SlicerRT ``DicomRtImportExport/Logic/vtkSlicerDicomRtImportExportModuleLogic.cxx``, ``LoadRtDose``: the volume
  node gets the attribute ``DicomRtImport.DoseVolume = "1"``; ``shNode->CreateItem(sceneItem, volumeNode)`` makes the
  series item, ``SetItemUID(seriesItem, GetDICOMUIDName(), SeriesInstanceUID)``, and the attribute
  ``GetDICOMReferencedInstanceUIDsAttributeName()`` holds the referenced RTPLAN's SOPInstanceUID;
  ``InsertSeriesInSubjectHierarchy`` then calls ``vtkSlicerSubjectHierarchyModuleLogic::InsertDicomSeriesInHierarchy
  (shNode, PatientID, StudyInstanceUID, SeriesInstanceUID)`` (patient item UID "DICOM" = PatientID, study item UID
  "DICOM" = StudyInstanceUID, series item moved under the study) and sets
  ``SetItemUID(seriesItem, GetDICOMInstanceUIDName(), SOPInstanceUID)`` (one instance: an RT object is one file).
- Slicer ``Modules/Scripted/DICOMLib/DICOMPlugin.py`` ``addSeriesInSubjectHierarchy`` (image series): the same
  "DICOM" series UID, and ``GetDICOMInstanceUIDName()`` holding the SOP instance UIDs separated by spaces.
- ``vtkMRMLSubjectHierarchyConstants`` in slicer-core 5.13 (this project's venv): ``GetDICOMUIDName() == "DICOM"``,
  ``GetDICOMInstanceUIDName() == "DICOMInstanceUID"``, ``GetDICOMReferencedInstanceUIDsAttributeName() ==
  "DICOM.ReferencedInstanceUIDs"``, ``GetDICOMSeriesModalityAttributeName() == "DICOM.Modality"``. The names are
  always taken from the constants class, never spelled here.

The database: in Slicer, ``slicer.dicomDatabase`` (CTK ``ctkDICOMDatabase``, ``Libs/DICOM/Core/ctkDICOMDatabase.h``:
``filesForSeries(seriesUID, hits=-1) -> QStringList``, ``studyForSeries(seriesUID) -> QString``,
``seriesForStudy(studyUID) -> QStringList``, ``fileForInstance(sopInstanceUID) -> QString`` (empty when absent),
``instanceForFile(fileName)``, ``fileValue(fileName, "gggg,eeee") -> QString`` ("empty string if element is missing";
multiple values separated by backslashes)). Headless, :class:`FolderDicomIndex` offers the same methods over a
folder of files. Only that subset (:class:`DicomDatabaseLike`) is used.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pydicom
from pydicom.errors import InvalidDicomError

from ..core.errors import InputError
from ..core.rtdose import COURSE_SUMMATION_TYPES, readRtDose, refuseEqd2Dose, requirePlanDose
from ..core.rtplan import readRtPlan

logger = logging.getLogger(__name__)

__all__ = ["CourseDicomInfo", "DicomDatabaseLike", "DoseNotAPlanDose", "FolderDicomIndex", "checkFractions",
           "courseInfoFromDatabase", "doseSeriesUids", "referenceInfoFromDatabase", "TAG_MODALITY",
           "TAG_SOP_INSTANCE_UID"]

TAG_MODALITY = "0008,0060"
TAG_SOP_INSTANCE_UID = "0008,0018"
TAG_SERIES_INSTANCE_UID = "0020,000E"
TAG_STUDY_INSTANCE_UID = "0020,000D"
TAG_PATIENT_ID = "0010,0020"
TAG_PATIENT_NAME = "0010,0010"
TAG_STUDY_DATE = "0008,0020"
TAG_FRAME_OF_REFERENCE_UID = "0020,0052"


class DicomDatabaseLike(Protocol):
    """The subset of CTK's ``ctkDICOMDatabase`` (``slicer.dicomDatabase``) that this module calls."""

    def filesForSeries(self, seriesUID: str, hits: int = -1) -> list: ...

    def studyForSeries(self, seriesUID: str) -> str: ...

    def seriesForStudy(self, studyUID: str) -> list: ...

    def fileForInstance(self, sopInstanceUID: str) -> str: ...

    def seriesForFile(self, fileName: str) -> str: ...

    def fileValue(self, fileName: str, tag: str) -> str: ...


class DoseNotAPlanDose(InputError):
    """The dose is refused as a course dose: RELATIVE units, or a BEAM/FRACTION_SESSION/... (not a whole plan's or
    fraction group's) summation, or an ERROR dose. The widget clears the selection on this error (other
    :class:`InputError`\\ s only mean the fractions must be entered by hand)."""


class FractionsNotInPlan(InputError):
    """The dose's RTPLAN was read but gives it no single number of fractions (a whole plan of several fraction
    groups, a FRACTION dose naming no group or one the plan lacks, a group stating none): entered by hand, and
    :func:`checkFractions` says why in the run's warnings, not only in the log."""


@dataclass(frozen=True)
class CourseDicomInfo:
    """What the original DICOM files say about one course's dose.

    ``fractions`` is NumberOfFractionsPlanned of the RTPLAN's fraction group (the one the RTDOSE references when
    it names one); ``fractionsSource`` says where it came from (plan label and file).
    """

    fractions: int
    fractionsSource: str
    doseSummationType: str
    doseType: str
    doseUnits: str
    planLabel: str
    prescriptionGy: float | None
    dosePath: str
    planPath: str
    seriesInstanceUid: str
    planSopInstanceUid: str
    fractionGroupNumber: int | None = None
    warnings: tuple = ()

    @property
    def summary(self) -> str:
        """E.g. ``"23 fx from RTPLAN PROS (46 Gy)"``: for a label or tooltip next to the fractions field."""
        rx = f" ({self.prescriptionGy:g} Gy)" if self.prescriptionGy is not None else ""
        return f"{self.fractions} fx from RTPLAN {self.planLabel or Path(self.planPath).name}{rx}"


# ---- headless database over a folder ------------------------------------------------------------------------------

def _formatValue(element) -> str:
    """A DICOM element value as ctkDICOMDatabase.fileValue returns it: text, multiple values joined by a backslash,
    empty for missing values and sequences."""
    if element is None or element.VR == "SQ" or element.value is None:
        return ""
    value = element.value
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return ""
    return str(value).strip()


class FolderDicomIndex:
    """The part of ``ctkDICOMDatabase`` this module uses, over the DICOM files of a folder (recursively).

    Scans every file once with pydicom (header only, ``stop_before_pixels``): series -> files, study -> series,
    SOP instance -> file. Files that are not DICOM are skipped (listed in :attr:`skippedFiles`). Paths are returned
    as absolute strings, like the database's. The scanned tags are cached (as the real database caches its
    ``tagsToPrecache``); ``fileValue`` of any other tag reads the header again (a small cache keeps the last ones),
    as the real database reads uncached tags from the file.
    """

    _SCAN_TAGS = {TAG_SOP_INSTANCE_UID: "SOPInstanceUID", TAG_SERIES_INSTANCE_UID: "SeriesInstanceUID",
                  TAG_STUDY_INSTANCE_UID: "StudyInstanceUID", TAG_MODALITY: "Modality", TAG_PATIENT_ID: "PatientID"}

    def __init__(self, folder: str | os.PathLike, cacheSize: int = 64):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError("the DICOM folder does not exist", self.folder)
        self._filesBySeries: dict[str, list[str]] = {}
        self._seriesByStudy: dict[str, list[str]] = {}
        self._studyBySeries: dict[str, str] = {}
        self._fileByInstance: dict[str, str] = {}
        self._instanceByFile: dict[str, str] = {}
        self._seriesByFile: dict[str, str] = {}
        self._patientsByStudy: dict[str, str] = {}
        self._tagCache: dict[str, dict[str, str]] = {}
        self._headers: OrderedDict[str, pydicom.Dataset] = OrderedDict()
        self._cacheSize = max(1, int(cacheSize))
        self.skippedFiles: list[str] = []
        self._scan()

    def _scan(self) -> None:
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(self._SCAN_TAGS.values()))
            except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
                self.skippedFiles.append(str(path))
                continue
            series = str(ds.get("SeriesInstanceUID", "") or "")
            study = str(ds.get("StudyInstanceUID", "") or "")
            instance = str(ds.get("SOPInstanceUID", "") or "")
            if not series or not instance:
                self.skippedFiles.append(str(path))
                continue
            name = str(path.resolve())
            self._tagCache[name] = {tag: str(ds.get(keyword, "") or "").strip()
                                    for tag, keyword in self._SCAN_TAGS.items()}
            self._filesBySeries.setdefault(series, []).append(name)
            if series not in self._studyBySeries:
                self._studyBySeries[series] = study
                self._seriesByStudy.setdefault(study, []).append(series)
            if instance in self._fileByInstance:
                logger.warning("%s: SOPInstanceUID %s also in %s; the first file is kept", name, instance,
                               self._fileByInstance[instance])
            else:
                self._fileByInstance[instance] = name
            self._instanceByFile[name] = instance
            self._seriesByFile[name] = series
            self._patientsByStudy.setdefault(study, str(ds.get("PatientID", "") or ""))
        if self.skippedFiles:
            logger.info("%s: %d file(s) skipped (not DICOM or without UIDs)", self.folder, len(self.skippedFiles))
        logger.info("indexed %s: %d series, %d files", self.folder, len(self._filesBySeries),
                    len(self._instanceByFile))

    # -- the ctkDICOMDatabase subset (same names and return conventions) --
    def patients(self) -> list[str]:
        return sorted({p for p in self._patientsByStudy.values()})

    def filesForSeries(self, seriesUID: str, hits: int = -1) -> list[str]:
        files = list(self._filesBySeries.get(str(seriesUID), []))
        return files if hits is None or hits < 0 else files[:hits]

    def instancesForSeries(self, seriesUID: str, hits: int = -1) -> list[str]:
        return [self._instanceByFile[f] for f in self.filesForSeries(seriesUID, hits)]

    def studyForSeries(self, seriesUID: str) -> str:
        return self._studyBySeries.get(str(seriesUID), "")

    def seriesForStudy(self, studyUID: str) -> list[str]:
        return list(self._seriesByStudy.get(str(studyUID), []))

    def fileForInstance(self, sopInstanceUID: str) -> str:
        return self._fileByInstance.get(str(sopInstanceUID), "")

    def instanceForFile(self, fileName: str) -> str:
        return self._instanceByFile.get(self._key(fileName), "")

    def seriesForFile(self, fileName: str) -> str:
        return self._seriesByFile.get(self._key(fileName), "")

    def fileValue(self, fileName: str, tag: str) -> str:
        """Value of ``tag`` ("gggg,eeee", hexadecimal) in ``fileName``; empty string when missing."""
        try:
            group, element = (int(part, 16) for part in str(tag).split(","))
        except ValueError:
            raise ValueError(f"a DICOM tag is written 'gggg,eeee' in hexadecimal, got {tag!r}") from None
        cached = self._tagCache.get(self._key(fileName), {}).get(f"{group:04X},{element:04X}")
        if cached is not None:
            return cached
        ds = self._header(fileName)
        if ds is None:
            return ""
        return _formatValue(ds.get((group, element)))

    # -- helpers --
    @staticmethod
    def _key(fileName: str) -> str:
        return str(Path(fileName).resolve())

    def _header(self, fileName: str):
        key = self._key(fileName)
        if key in self._headers:
            self._headers.move_to_end(key)
            return self._headers[key]
        try:
            ds = pydicom.dcmread(key, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
            return None
        self._headers[key] = ds
        while len(self._headers) > self._cacheSize:
            self._headers.popitem(last=False)
        return ds


# ---- from a node to its DICOM UIDs ----------------------------------------------------------------------------

def doseSeriesUids(doseNode) -> tuple[str, tuple[str, ...], str, str]:
    """``(seriesInstanceUid, sopInstanceUids, studyInstanceUid, referencedInstanceUids)`` of a volume node, read
    from its subject-hierarchy item the way SlicerRT's DICOM-RT import and Slicer's DICOM plugins write them.

    The study UID is the "DICOM" UID of the series item's parent (the study item); empty strings when absent.
    :class:`InputError` when the node has no series UID (it was not loaded from the DICOM database).
    """
    if doseNode is None:
        raise InputError("no dose volume is selected")
    seriesUid, instances, studyUid, referenced = _seriesUids(doseNode)
    if not seriesUid:
        raise InputError(f"the dose volume '{doseNode.GetName()}' was not loaded from the DICOM database (its subject "
                         "hierarchy item has no DICOM series UID), so its RTPLAN cannot be found; enter the number of "
                         "fractions by hand")
    return seriesUid, instances, studyUid, referenced


def _seriesUids(node) -> tuple[str, tuple[str, ...], str, str]:
    """:func:`doseSeriesUids` of any data node, with an empty series UID when it has none."""
    import slicer

    scene = node.GetScene()
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene) if scene is not None else None
    item = shNode.GetItemByDataNode(node) if shNode is not None else 0
    if not item:
        return "", (), "", ""
    constants = slicer.vtkMRMLSubjectHierarchyConstants
    seriesUid = shNode.GetItemUID(item, constants.GetDICOMUIDName()) or ""
    instances = tuple((shNode.GetItemUID(item, constants.GetDICOMInstanceUIDName()) or "").split())
    parent = shNode.GetItemParent(item)
    studyUid = shNode.GetItemUID(parent, constants.GetDICOMUIDName()) if parent else ""
    referenced = shNode.GetItemAttribute(item, constants.GetDICOMReferencedInstanceUIDsAttributeName()) or ""
    return seriesUid, instances, studyUid or "", referenced


def referenceInfoFromDatabase(volumeNode, database: DicomDatabaseLike | None) -> dict:
    """The planning CT's DICOM identity, for the outputs: the exported RTDOSE must name the CT's patient, study and
    frame of reference, or a planning system will not place it on the CT.

    Read from the first file of the node's series in ``database`` (the node's subject-hierarchy item holds the
    series UID when Slicer's DICOM module loaded it): ``{"node", "path", "seriesInstanceUid", "modality",
    "patientName", "patientId", "studyInstanceUid", "studyDate", "frameOfReferenceUid"}``. Only ``{"node": name}``
    when the node was not loaded from DICOM or its files are not in the database (the RTDOSE then gets new UIDs,
    and says so in the warnings).
    """
    info: dict = {"node": volumeNode.GetName()}
    if database is None:
        return info
    seriesUid, instances, studyUid, _ = _seriesUids(volumeNode)
    files = [str(f) for f in database.filesForSeries(seriesUid)] if seriesUid else []
    if not files:
        if seriesUid:
            logger.warning("the series of '%s' (SeriesInstanceUID %s) is not in the DICOM database",
                           volumeNode.GetName(), seriesUid)
        return info
    if instances:
        files = [f for f in files if database.fileValue(f, TAG_SOP_INSTANCE_UID) in instances] or files
    path = files[0]
    info.update(path=path, seriesInstanceUid=seriesUid, modality=database.fileValue(path, TAG_MODALITY),
                patientName=database.fileValue(path, TAG_PATIENT_NAME),
                patientId=database.fileValue(path, TAG_PATIENT_ID),
                studyInstanceUid=database.fileValue(path, TAG_STUDY_INSTANCE_UID) or studyUid,
                studyDate=database.fileValue(path, TAG_STUDY_DATE),
                frameOfReferenceUid=database.fileValue(path, TAG_FRAME_OF_REFERENCE_UID))
    return info


# ---- from the UIDs to the files, and what they say ----------------------------------------------------------------

def _doseFile(database: DicomDatabaseLike, seriesUid: str, instanceUids: tuple, name: str) -> str:
    files = [str(f) for f in database.filesForSeries(seriesUid)]
    if not files:
        raise InputError(f"the DICOM series of the dose volume '{name}' (SeriesInstanceUID {seriesUid}) is not in the "
                         "DICOM database; import the original files into the DICOM database, or enter the number of "
                         "fractions by hand")
    doses = [f for f in files if database.fileValue(f, TAG_MODALITY) == "RTDOSE"]
    if not doses:
        raise InputError(f"the DICOM series of the dose volume '{name}' (SeriesInstanceUID {seriesUid}) holds no "
                         "RTDOSE file", files[0])
    if instanceUids:
        matching = [f for f in doses if database.fileValue(f, TAG_SOP_INSTANCE_UID) in instanceUids]
        if matching:
            doses = matching
    if len(doses) > 1:
        listing = ", ".join(Path(f).name for f in doses)
        raise InputError(f"the DICOM series of the dose volume '{name}' holds {len(doses)} RTDOSE files ({listing}) "
                         "and the subject hierarchy does not say which one this volume is; enter the number of "
                         "fractions by hand")
    return doses[0]


def _planFile(database: DicomDatabaseLike, planUid: str, studyUid: str, dosePath: str) -> tuple[str, list[str]]:
    """The RTPLAN file with SOPInstanceUID ``planUid`` (``fileForInstance``), expected in the dose's study (a plan
    found in another study is used with a warning); when the instance lookup finds nothing, the RTPLAN series of the
    dose's study are searched by their SOPInstanceUID."""
    warnings = []
    path = str(database.fileForInstance(planUid) or "")
    if path:
        if database.fileValue(path, TAG_MODALITY) != "RTPLAN":
            raise InputError(f"the object this dose references as its RTPLAN (SOPInstanceUID {planUid}) is a "
                             f"{database.fileValue(path, TAG_MODALITY) or 'file without Modality'}", path)
        planStudy = database.studyForSeries(database.seriesForFile(path))
        if studyUid and planStudy and planStudy != studyUid:
            warnings.append(f"the RTPLAN {Path(path).name} referenced by the dose is in another study "
                            f"({planStudy}) than the dose ({studyUid})")
        return path, warnings
    for series in database.seriesForStudy(studyUid) if studyUid else []:
        files = database.filesForSeries(series)
        if not files or database.fileValue(files[0], TAG_MODALITY) != "RTPLAN":
            continue
        for candidate in files:
            if database.fileValue(candidate, TAG_SOP_INSTANCE_UID) == planUid:
                return str(candidate), warnings
    raise InputError(f"the RTPLAN this dose references (SOPInstanceUID {planUid}) is not in the DICOM database; "
                     "import the plan with the dose, or enter the number of fractions by hand", dosePath)


def courseInfoFromDatabase(doseNode, database: DicomDatabaseLike) -> CourseDicomInfo:
    """Fractions and dose summation of a dose volume node loaded from DICOM, read from its original files.

    Steps: the node's series (and SOP instance) UIDs from the subject hierarchy (:func:`doseSeriesUids`); its RTDOSE
    file via ``database.filesForSeries``; DoseUnits, DoseType, DoseSummationType and ReferencedRTPlanSequence via
    :func:`..core.rtdose.readRtDose`; the RTPLAN with that SOPInstanceUID in the same study
    (``studyForSeries`` -> ``seriesForStudy`` -> ``filesForSeries``); NumberOfFractionsPlanned, the prescription
    and the label via :func:`..core.rtplan.readRtPlan`.

    Raises
    ------
    DoseNotAPlanDose
        RELATIVE dose units; DoseSummationType BEAM, FRACTION_SESSION, CONTROL_POINT... (neither a whole plan's
        nor a whole fraction group's dose); ERROR dose.
    InputError
        The node did not come from DICOM; its files are not in the database; the RTDOSE references no RTPLAN or the
        RTPLAN is not in the database; the plan states no (or an ambiguous) number of fractions.
        The message says the fractions must then be entered by hand.
    """
    name = doseNode.GetName() if doseNode is not None else ""
    seriesUid, instanceUids, studyUidSh, referencedSh = doseSeriesUids(doseNode)
    dosePath = _doseFile(database, seriesUid, instanceUids, name)
    warnings: list[str] = []

    rtDose = readRtDose(dosePath, allowRelative=True)
    if rtDose.units == "RELATIVE":
        raise DoseNotAPlanDose("RTDOSE units are RELATIVE; an absolute dose in Gy is required", dosePath)
    try:
        # this tool's own composite EQD2 said as such (a verification review: refused as a sum of plans); a sum of
        # plans refused (the module's course takes one plan's dose)
        requirePlanDose(refuseEqd2Dose(rtDose, dosePath), dosePath)
    except InputError as error:
        raise DoseNotAPlanDose(str(error).removeprefix(f"{error.path}: "), dosePath) from None
    if rtDose.summationType not in COURSE_SUMMATION_TYPES:  # a DICOM file stating "UNKNOWN", which requirePlanDose
        # lets through as it does for non-DICOM doses
        raise DoseNotAPlanDose(f"DoseSummationType {rtDose.summationType} is not a plan dose", dosePath)
    if rtDose.seriesInstanceUid and rtDose.seriesInstanceUid != seriesUid:
        raise InputError(f"the database returned a file of another series ({rtDose.seriesInstanceUid}) for the dose "
                         f"volume '{name}'", dosePath)

    planUid = rtDose.referencedPlanUid
    if not planUid:
        if referencedSh:
            warnings.append("the RTDOSE has no ReferencedRTPlanSequence; the plan referenced in the subject hierarchy "
                            "is used")
            planUid = referencedSh.split()[0]
        else:
            raise InputError("the RTDOSE references no RTPLAN (ReferencedRTPlanSequence is empty), so its number of "
                             "fractions is unknown; enter it by hand", dosePath)
    studyUid = database.studyForSeries(seriesUid) or rtDose.studyInstanceUid or studyUidSh
    if studyUidSh and studyUid and studyUidSh != studyUid:
        warnings.append(f"the subject hierarchy puts the dose in study {studyUidSh}, the database in {studyUid}")
    planPath, planWarnings = _planFile(database, planUid, studyUid, dosePath)
    warnings.extend(planWarnings)

    plan = readRtPlan(planPath)
    from ..core.pipeline import doseFractionGroup

    try:  # the group a FRACTION dose names, or the plan's only group; a whole plan of several has no single number
        group = doseFractionGroup(plan, rtDose)
        fractions = plan.fractionsOfGroup(group)
    except InputError as error:
        raise FractionsNotInPlan(str(error).removeprefix(f"{error.path}: "), error.path or planPath) from None
    if plan.patientId and rtDose.patientId and plan.patientId != rtDose.patientId:
        warnings.append(f"the RTPLAN's PatientID ({plan.patientId}) differs from the RTDOSE's ({rtDose.patientId})")
    if plan.frameOfReferenceUid and rtDose.frameOfReferenceUid and \
            plan.frameOfReferenceUid != rtDose.frameOfReferenceUid:
        warnings.append("the RTPLAN and the RTDOSE have different FrameOfReferenceUIDs")
    from ..core.pipeline import planPrescriptionOfDose

    rx = planPrescriptionOfDose(plan, rtDose)  # of the group the dose is of, in a plan of several
    if rx is None:
        warnings.append("the RTPLAN states no target prescription dose" if len(plan.fractionGroups) <= 1 else
                        f"fraction group {group} of the RTPLAN names no target prescription dose")
    source = (f"RTPLAN '{plan.label}'" if plan.label else "RTPLAN") + \
        (f", fraction group {group}" if group is not None else "") + f" ({planPath})"
    for warning in warnings:
        logger.warning("%s: %s", dosePath, warning)
    info = CourseDicomInfo(
        fractions=int(fractions), fractionsSource=source, doseSummationType=rtDose.summationType,
        doseType=rtDose.doseType, doseUnits=rtDose.units, planLabel=plan.label, prescriptionGy=rx,
        dosePath=str(dosePath), planPath=str(planPath), seriesInstanceUid=seriesUid, planSopInstanceUid=planUid,
        fractionGroupNumber=group, warnings=tuple(warnings))
    logger.info("dose '%s': %s, DoseSummationType %s", name, info.summary, info.doseSummationType)
    return info


def checkFractions(doseNode, fractions: int, database: DicomDatabaseLike | None, courseName: str = "",
                   detail: dict | None = None) -> tuple[str, list[str]]:
    """Where a course's number of fractions comes from, checked against its RTPLAN when the dose came from DICOM.

    Returns ``(fractionsSource, warnings)``: the RTPLAN's label and file when the plan states the same number;
    a warning when it states another number (the dose is then used as given: a course stopped early needs its dose
    scaled before it is summed, which the user must do); ``"module input"`` with the reason when the plan cannot
    be read (dose not from DICOM, plan not in the database, no ``database``). Raises :class:`DoseNotAPlanDose`
    for a RELATIVE dose or a BEAM / single-session dose, which must never be summed as a course. ``detail``: a dict
    given receives ``referencedPlanUid``, the RTPLAN the dose was read with (for ``core.pipeline.samePlanWarnings``).
    """
    label = courseName or (doseNode.GetName() if doseNode is not None else "")
    if database is None:
        return "module input", []
    try:
        info = courseInfoFromDatabase(doseNode, database)
    except DoseNotAPlanDose:
        raise
    except FractionsNotInPlan as error:  # the plan was found: say why its fractions were not used
        return "module input (the RTPLAN gives no single number)", [
            f"course '{label}': its {int(fractions)} entered fractions are used: {error}"]
    except InputError as error:
        logger.info("course '%s': fractions not checked against an RTPLAN: %s", label, error)
        return "module input (no RTPLAN read: see the log)", []
    warnings = [f"course '{label}': {w}" for w in info.warnings]
    if detail is not None:
        detail["referencedPlanUid"] = info.planSopInstanceUid
    if int(fractions) != info.fractions:
        warnings.append(f"course '{label}': {int(fractions)} fractions were entered but the RTPLAN "
                        f"{info.planLabel or Path(info.planPath).name} plans {info.fractions}; the entered number "
                        "is used with the dose as given (scale the dose first if fewer fractions were delivered)")
        return f"module input ({int(fractions)}; RTPLAN states {info.fractions})", warnings
    return info.fractionsSource, warnings
