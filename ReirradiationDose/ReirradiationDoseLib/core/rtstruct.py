"""Reading RTSTRUCT structure sets and rasterising their planar contours onto an image grid.

DICOM Structure Set / ROI Contour / RT ROI Observations modules (PS3.3 C.8.8.5, C.8.8.6, C.8.8.8): ROIs are listed
in StructureSetROISequence, their contours (ContourData, LPS mm, CLOSED_PLANAR polygons) in ROIContourSequence,
their type (EXTERNAL, PTV, ORGAN, ...) in RTROIObservationsSequence. Contours of one ROI in one plane combine with
the even-odd rule (an inner contour is a hole; C.8.8.6.3), see :mod:`.contours`.

ROIs without contours are *empty* (listed, never rasterised to a silent all-zero mask without a warning); ROIs made
only of POINT contours (isocentres, markers) are *point* ROIs and are skipped by :func:`rasterizeAll`. Each contour
plane of an ROI stands for a slab reaching half-way to the ROI's own neighbouring contour planes; an ROI of one plane
or of markers far apart takes the slice spacing the structure set was drawn on, see
:func:`.contours.rasterizeContours`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.multival import MultiValue

from .contours import RasterizationReport, rasterizeContours, structureSetPlaneSpacing
from .dicomimage import damagedAttributes, readDicomObject
from .errors import InputError
from .geometry import ImageGeometry

__all__ = ["RoiInfo", "RtStruct", "readRtStruct", "rasterizeRoi", "rasterizeAll", "rasterizeAllWithReport",
           "StructureSetReport"]

logger = logging.getLogger(__name__)
# files whose ROI renaming was logged in this process: one run reads an RTSTRUCT several times (patient check,
# structures, registration guides), the log says it once; callers report ``RtStruct.renamed`` in their own results
_loggedRenaming: set[tuple] = set()

_FILLED_TYPES = ("CLOSED_PLANAR", "CLOSED_PLANAR_XOR")


def _fileStamp(path) -> tuple:
    """Size and modification time of a file (a file written again is logged again); () when it cannot be read."""
    try:
        status = os.stat(path)
    except (OSError, TypeError, ValueError):
        return ()
    return (status.st_size, status.st_mtime_ns)


@dataclass(frozen=True)
class RoiInfo:
    number: int
    name: str
    color: tuple | None
    type: str
    isEmpty: bool
    isPoint: bool
    numberOfContours: int = 0
    frameOfReferenceUid: str = ""


@dataclass(frozen=True)
class RtStruct:
    """A structure set: ROI list plus each ROI's contours ``{roiNumber: [(geometricType, points (n, 3) LPS)]}``."""

    path: str
    rois: list
    contours: dict
    frameOfReferenceUid: str
    referencedSeriesUid: str
    patientId: str
    sopInstanceUid: str
    label: str = ""
    patientName: str = ""
    studyInstanceUid: str = ""
    referencedImageUids: tuple = ()
    referencedStudyUid: str = ""
    renamed: tuple = ()  # (name, ROI number, name read) of every ROI whose name an earlier ROI already had

    @property
    def roiNames(self) -> list[str]:
        return [r.name for r in self.rois]

    def roi(self, name: str) -> RoiInfo:
        for r in self.rois:
            if r.name == name:
                return r
        matches = [r for r in self.rois if r.name.strip().lower() == name.strip().lower()]
        if len(matches) == 1:
            return matches[0]
        raise InputError(f"the structure set has no ROI named '{name}' (ROIs: {', '.join(self.roiNames)})",
                         self.path)


@dataclass(frozen=True)
class StructureSetReport:
    """What :func:`rasterizeAllWithReport` did: empty and point ROIs skipped, per-ROI rasterisation reports."""

    emptyRois: tuple = ()
    pointRois: tuple = ()
    emptyOnGrid: tuple = ()
    reports: dict = field(default_factory=dict)
    smallerThanVoxels: tuple = ()  # of emptyOnGrid: contours inside the grid's extent, missing every voxel centre

    @property
    def partlyOutside(self) -> tuple:
        return tuple(name for name, r in self.reports.items() if r.partlyOutside)


def readRtStruct(path: str | os.PathLike) -> RtStruct:
    """Read an RTSTRUCT (:class:`InputError` naming the file if it is not one, or is truncated)."""
    path = Path(path)
    ds = readDicomObject(path, "RTSTRUCT")
    with damagedAttributes(path, "RTSTRUCT"):
        return _readRtStructDataset(ds, path)


def _readRtStructDataset(ds, path: Path) -> RtStruct:
    forUid = ""
    seriesUid = ""
    studyUid = ""
    imageUids: list[str] = []
    for forItem in ds.get("ReferencedFrameOfReferenceSequence", []):
        forUid = forUid or str(forItem.get("FrameOfReferenceUID", ""))
        for study in forItem.get("RTReferencedStudySequence", []):
            studyUid = studyUid or str(study.get("ReferencedSOPInstanceUID", ""))
            for series in study.get("RTReferencedSeriesSequence", []):
                seriesUid = seriesUid or str(series.get("SeriesInstanceUID", ""))
                imageUids += [str(i.get("ReferencedSOPInstanceUID", "")) for i in series.get("ContourImageSequence",
                                                                                             [])]
    observations = {}
    for obs in ds.get("RTROIObservationsSequence", []):
        number = obs.get("ReferencedROINumber")
        if number is not None:
            observations[int(number)] = str(obs.get("RTROIInterpretedType", "") or "")
    roiContours = {}
    for rc in ds.get("ROIContourSequence", []):
        number = rc.get("ReferencedROINumber")
        if number is not None:
            roiContours[int(number)] = rc
    rois: list[RoiInfo] = []
    contours: dict[int, list] = {}
    names: set[str] = set()
    renamed: list[tuple[str, int, str]] = []
    for roi in ds.get("StructureSetROISequence", []):
        try:
            number = int(roi.ROINumber)
        except (AttributeError, ValueError, TypeError):
            raise InputError("an ROI of the structure set has no valid ROINumber", path) from None
        rc = roiContours.get(number)
        items = []
        color = None
        if rc is not None:
            if "ROIDisplayColor" in rc and rc.ROIDisplayColor is not None and len(rc.ROIDisplayColor) == 3:
                color = tuple(int(c) for c in rc.ROIDisplayColor)
            for c in rc.get("ContourSequence", []):
                geometricType = str(c.get("ContourGeometricType", "")).upper()
                data = c.get("ContourData")
                if data is not None and not isinstance(data, (list, tuple, MultiValue)):
                    data = [data]  # a single value: not a point, refused below as not x,y,z triplets
                if data is None or len(data) == 0:
                    continue
                try:
                    points = np.asarray([float(v) for v in data], dtype=float)
                except (TypeError, ValueError):
                    raise InputError(f"ROI {roi.get('ROIName', number)} has non-numeric contour data", path
                                     ) from None
                if points.size % 3:
                    raise InputError(f"ROI {roi.get('ROIName', number)} has contour data that are not x,y,z "
                                     "triplets (damaged file?)", path)
                if not np.all(np.isfinite(points)):
                    raise InputError(f"ROI {roi.get('ROIName', number)} has contour points that are not finite "
                                     "numbers (damaged file?)", path)
                items.append((geometricType, points.reshape(-1, 3)))
        name = str(roi.get("ROIName", f"ROI {number}")).strip() or f"ROI {number}"
        if name in names:
            # two ROIs of one name: the second kept under its number, said (an adversarial review: silent), since a
            # constraint or tissue that names the structure reads the first only
            key = (str(Path(path).resolve()), _fileStamp(path), name, number)
            if key not in _loggedRenaming:
                _loggedRenaming.add(key)
                logger.warning("%s: two ROIs are named %r; ROI number %s is read as %r", path, name, number,
                               f"{name} ({number})")
            renamed.append((name, number, f"{name} ({number})"))
            name = f"{name} ({number})"
        names.add(name)
        types = {t for t, _ in items}
        isPoint = bool(items) and types == {"POINT"}
        filled = [it for it in items if it[0] in _FILLED_TYPES]
        rois.append(RoiInfo(number=number, name=name, color=color, type=observations.get(number, ""),
                            isEmpty=not filled and not isPoint, isPoint=isPoint, numberOfContours=len(items),
                            frameOfReferenceUid=str(roi.get("ReferencedFrameOfReferenceUID", "") or forUid)))
        contours[number] = items
    structure = RtStruct(path=str(path), rois=rois, contours=contours, frameOfReferenceUid=forUid,
                         referencedSeriesUid=seriesUid, patientId=str(ds.get("PatientID", "")),
                         sopInstanceUid=str(ds.get("SOPInstanceUID", "")),
                         label=str(ds.get("StructureSetLabel", "")), patientName=str(ds.get("PatientName", "")),
                         studyInstanceUid=str(ds.get("StudyInstanceUID", "")), referencedImageUids=tuple(imageUids),
                         referencedStudyUid=studyUid, renamed=tuple(renamed))
    logger.info("read RTSTRUCT %s: %d ROIs (%d empty, %d point)", path.name, len(rois),
                sum(r.isEmpty for r in rois), sum(r.isPoint for r in rois))
    return structure


def _checkFrameOfReference(rtStruct: RtStruct, roi: RoiInfo, frameOfReferenceUid: str | None,
                           referencePath: str | os.PathLike | None = None) -> None:
    """Refuse an ROI drawn in another frame of reference than the image's (``referencePath``, the image or dose file,
    is named when given)."""
    if not frameOfReferenceUid:
        return
    mine = roi.frameOfReferenceUid or rtStruct.frameOfReferenceUid
    if mine and mine != frameOfReferenceUid:
        image = f"the image ({os.fspath(referencePath)})" if referencePath is not None else "the image"
        raise InputError(f"ROI '{roi.name}' is in frame of reference {mine}, {image} in {frameOfReferenceUid}: "
                         "the structures were not drawn on this image (register them first)", rtStruct.path)


def _contoursByRoi(rtStruct: RtStruct) -> list[list[np.ndarray]]:
    """The closed contours of each ROI of the structure set: their planes are the slices the set was drawn on."""
    return [[points for t, points in items if t in _FILLED_TYPES] for items in rtStruct.contours.values()]


def _rasterize(rtStruct: RtStruct, roi: RoiInfo, geometry: ImageGeometry, setSpacing: float | None = None
               ) -> tuple[np.ndarray, RasterizationReport]:
    """One ROI on ``geometry``; ``setSpacing``: the plane spacing of the whole set (computed here when None)."""
    items = rtStruct.contours.get(roi.number, [])
    skipped = [t for t, _ in items if t not in _FILLED_TYPES and t != "POINT"]
    if skipped:
        logger.warning("%s: ROI '%s': %d open contour(s) (%s) ignored: only closed contours enclose a volume",
                       rtStruct.path, roi.name, len(skipped), ", ".join(sorted(set(skipped))))
    polygons = [points for t, points in items if t in _FILLED_TYPES]
    try:
        if setSpacing is None:
            setSpacing = structureSetPlaneSpacing(_contoursByRoi(rtStruct), geometry)
        return rasterizeContours(polygons, geometry, name=roi.name, setPlaneSpacingMm=setSpacing)
    except InputError as error:
        if error.path:
            raise
        raise InputError(str(error), rtStruct.path) from None


def rasterizeRoi(rtStruct: RtStruct, roiName: str, geometry: ImageGeometry,
                 frameOfReferenceUid: str | None = None) -> np.ndarray:
    """Bool mask ``[k, j, i]`` of one ROI on ``geometry`` (voxel centres inside, even-odd rule).

    ``frameOfReferenceUid`` (the image's) is checked against the ROI's; a point ROI raises :class:`InputError`;
    an empty ROI gives an all-false mask with a warning.
    """
    roi = rtStruct.roi(roiName)
    _checkFrameOfReference(rtStruct, roi, frameOfReferenceUid)
    if roi.isPoint:
        raise InputError(f"ROI '{roi.name}' is a point (e.g. an isocentre), it has no volume", rtStruct.path)
    if roi.isEmpty:
        logger.warning("%s: ROI '%s' has no contours (empty structure)", rtStruct.path, roi.name)
        return np.zeros(geometry.shape, dtype=bool)
    mask, report = _rasterize(rtStruct, roi, geometry)
    if not mask.any():
        where = "is smaller than the voxels of" if not report.partlyOutside else "does not intersect"
        logger.warning("%s: ROI '%s' %s the image grid %s", rtStruct.path, roi.name, where, geometry.describe())
    return mask


def rasterizeAllWithReport(rtStruct: RtStruct, geometry: ImageGeometry, frameOfReferenceUid: str | None = None,
                           includeEmpty: bool = False, referencePath: str | os.PathLike | None = None
                           ) -> tuple[dict[str, np.ndarray], StructureSetReport]:
    """Masks of every ROI with contours, plus a report of empty/point ROIs and contours outside the image.

    ``frameOfReferenceUid`` (the image's or dose's, when known) is compared with every ROI's; a mismatch is refused
    naming the RTSTRUCT, ``referencePath`` (the image or dose file) and both UIDs. An ROI that covers no voxel centre
    is in ``emptyOnGrid``; when its contours lie within the grid's extent it is also in ``smallerThanVoxels``.
    """
    masks: dict[str, np.ndarray] = {}
    reports = {}
    empty, points, emptyOnGrid = [], [], []
    setSpacing = structureSetPlaneSpacing(_contoursByRoi(rtStruct), geometry)  # once per set, not per ROI
    for roi in rtStruct.rois:
        _checkFrameOfReference(rtStruct, roi, frameOfReferenceUid, referencePath)
        if roi.isPoint:
            points.append(roi.name)
            continue
        if roi.isEmpty:
            empty.append(roi.name)
            if includeEmpty:
                masks[roi.name] = np.zeros(geometry.shape, dtype=bool)
            continue
        mask, report = _rasterize(rtStruct, roi, geometry, setSpacing)
        reports[roi.name] = report
        if not mask.any():
            emptyOnGrid.append(roi.name)
        masks[roi.name] = mask
    if empty:
        logger.warning("%s: %d ROI(s) without contours skipped: %s", rtStruct.path, len(empty), ", ".join(empty))
    if points:
        logger.info("%s: point ROI(s) skipped: %s", rtStruct.path, ", ".join(points))
    small = [name for name in emptyOnGrid if not reports[name].partlyOutside]
    if small:
        logger.warning("%s: ROI(s) inside the image but smaller than the grid's voxels: %s (no voxel centre lies "
                       "inside their contours; use a finer grid)", rtStruct.path, ", ".join(small))
    outside = [name for name in emptyOnGrid if name not in small]
    if outside:
        logger.warning("%s: ROI(s) outside the image grid: %s", rtStruct.path, ", ".join(outside))
    partly = [name for name, r in reports.items() if r.partlyOutside and name not in emptyOnGrid]
    if partly:
        logger.warning("%s: ROI(s) partly outside the image (cut at its border): %s", rtStruct.path,
                       "; ".join(f"{name}: {', '.join(reports[name].warnings)}" for name in partly))
    return masks, StructureSetReport(emptyRois=tuple(empty), pointRois=tuple(points), emptyOnGrid=tuple(emptyOnGrid),
                                     reports=reports, smallerThanVoxels=tuple(small))


def rasterizeAll(rtStruct: RtStruct, geometry: ImageGeometry, frameOfReferenceUid: str | None = None,
                 referencePath: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """``{name: mask}`` of every ROI with contours (empty ROIs reported and skipped, point ROIs skipped); a frame of
    reference other than ``frameOfReferenceUid`` is refused (see :func:`rasterizeAllWithReport`)."""
    masks, _ = rasterizeAllWithReport(rtStruct, geometry, frameOfReferenceUid, referencePath=referencePath)
    return masks
