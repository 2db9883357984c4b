"""Consistency checks across the objects of one treatment course (image, structures, plan, dose).

Within one course every object must belong to the same patient (PatientID) and the same frame of reference
(FrameOfReferenceUID: the same patient coordinate system), and the references between them must resolve:
RTDOSE -> RTPLAN (ReferencedRTPlanSequence), RTPLAN -> RTSTRUCT (ReferencedStructureSetSequence),
RTSTRUCT -> image series (RTReferencedSeriesSequence). A mismatch usually means a file from another patient or
another plan was picked; it is refused (:class:`InputError` naming both files) unless ``allowMismatch=True``, which
downgrades every finding to a logged warning (e.g. for phantom data whose UIDs were rewritten).

Objects of *different* courses (prior vs current) normally have different frames of reference; they are related by
a registration, not checked here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import InputError

__all__ = ["CourseObject", "checkCourseConsistency"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CourseObject:
    """The identity of one object, extracted from any reader's result."""

    kind: str
    path: str
    patientId: str = ""
    frameOfReferenceUid: str = ""
    sopInstanceUid: str = ""
    seriesInstanceUid: str = ""

    @classmethod
    def of(cls, kind: str, obj) -> CourseObject:
        return cls(kind=kind, path=str(getattr(obj, "path", "") or ""),
                   patientId=str(getattr(obj, "patientId", "") or ""),
                   frameOfReferenceUid=str(getattr(obj, "frameOfReferenceUid", "") or ""),
                   sopInstanceUid=str(getattr(obj, "sopInstanceUid", "") or ""),
                   seriesInstanceUid=str(getattr(obj, "seriesInstanceUid", "") or ""))

    def label(self) -> str:
        return f"{self.kind} {self.path}" if self.path else self.kind


def checkCourseConsistency(image=None, rtStruct=None, rtPlan=None, rtDose=None, allowMismatch: bool = False,
                           courseName: str = "course") -> list[str]:
    """Check that the objects of one course belong together.

    Parameters
    ----------
    image : :class:`~.dicomimage.ImageSeriesInfo` or None.
    rtStruct : :class:`~.rtstruct.RtStruct` or None.
    rtPlan : :class:`~.rtplan.RtPlan` or None.
    rtDose : :class:`~.rtdose.RtDose` or None (a non-DICOM dose carries no identity and is not checked).
    allowMismatch : log mismatches as warnings instead of raising.

    Returns
    -------
    The list of findings (empty when everything is consistent). Raises :class:`InputError` on the first mismatch
    unless ``allowMismatch``.
    """
    objects = []
    if image is not None:
        objects.append(CourseObject.of("image series", image))
    if rtStruct is not None:
        objects.append(CourseObject.of("RTSTRUCT", rtStruct))
    if rtPlan is not None:
        objects.append(CourseObject.of("RTPLAN", rtPlan))
    if rtDose is not None and getattr(rtDose, "fromDicom", True):
        objects.append(CourseObject.of("RTDOSE", rtDose))
    findings: list[str] = []

    def report(message: str) -> None:
        findings.append(message)
        if not allowMismatch:
            raise InputError(f"{courseName}: {message}")
        logger.warning("%s: %s (accepted: mismatches allowed)", courseName, message)

    # same patient
    withPatient = [o for o in objects if o.patientId]
    for o in withPatient[1:]:
        if o.patientId != withPatient[0].patientId:
            report(f"{withPatient[0].label()} belongs to patient '{withPatient[0].patientId}' but {o.label()} to "
                   f"patient '{o.patientId}'")
    # same frame of reference
    withFor = [o for o in objects if o.frameOfReferenceUid]
    for o in withFor[1:]:
        if o.frameOfReferenceUid != withFor[0].frameOfReferenceUid:
            report(f"{withFor[0].label()} is in frame of reference {withFor[0].frameOfReferenceUid} but {o.label()} "
                   f"in {o.frameOfReferenceUid}: they are not in the same patient coordinate system")
    # references resolve
    if rtDose is not None and rtPlan is not None and getattr(rtDose, "referencedPlanUid", ""):
        if rtDose.referencedPlanUid != rtPlan.sopInstanceUid:
            report(f"RTDOSE {rtDose.path} references plan {rtDose.referencedPlanUid}, not RTPLAN {rtPlan.path} "
                   f"({rtPlan.sopInstanceUid})")
    if rtPlan is not None and rtStruct is not None and rtPlan.referencedStructureSetUid:
        if rtPlan.referencedStructureSetUid != rtStruct.sopInstanceUid:
            report(f"RTPLAN {rtPlan.path} references structure set {rtPlan.referencedStructureSetUid}, not RTSTRUCT "
                   f"{rtStruct.path} ({rtStruct.sopInstanceUid})")
    if rtStruct is not None and image is not None and rtStruct.referencedSeriesUid:
        if rtStruct.referencedSeriesUid != image.seriesInstanceUid:
            report(f"RTSTRUCT {rtStruct.path} was drawn on series {rtStruct.referencedSeriesUid}, not on the image "
                   f"series {image.path} ({image.seriesInstanceUid})")
    return findings
