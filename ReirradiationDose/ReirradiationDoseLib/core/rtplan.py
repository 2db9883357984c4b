"""Reading what dose accumulation needs from an RTPLAN: fractions and prescription.

DICOM RT Fraction Scheme Module (PS3.3 C.8.8.13): FractionGroupSequence, each with NumberOfFractionsPlanned;
RT Prescription Module (C.8.8.10): DoseReferenceSequence with TargetPrescriptionDose (Gy, whole course) for
DoseReferenceType TARGET. A plan with several fraction groups (e.g. a sequential boost in one plan) has no single
number of fractions, even when the groups plan as many each (two phases of 25 fractions are 50 fractions for a dose
of the whole plan): :attr:`RtPlan.numberOfFractions` refuses to guess and the caller names a group
(:meth:`RtPlan.fractionsOfGroup`, e.g. the RTDOSE's ReferencedFractionGroupNumber).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .dicomimage import damagedAttributes, readDicomObject
from .errors import InputError

__all__ = ["FractionGroup", "DoseReference", "RtPlan", "readRtPlan"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FractionGroup:
    """One fraction group: its number, planned fractions, beams, and beam doses (Gy per fraction, when stated)."""

    number: int
    numberOfFractionsPlanned: int | None
    numberOfBeams: int
    numberOfBrachyApplicationSetups: int = 0
    beamDosesGy: tuple = ()
    referencedDoseReferenceNumbers: tuple = ()
    fractionsPerDay: int | None = None  # the most fractions on one day of the FractionPattern, when the plan has one

    @property
    def beamDoseSumGy(self) -> float | None:
        """Sum of BeamDose over the beams (dose per fraction at the beam dose point), if every beam states it."""
        if not self.beamDosesGy or any(d is None for d in self.beamDosesGy):
            return None
        return float(sum(self.beamDosesGy))


@dataclass(frozen=True)
class DoseReference:
    number: int
    structureType: str
    doseReferenceType: str
    description: str
    targetPrescriptionDoseGy: float | None
    referencedRoiNumber: int | None
    deliveryMaximumDoseGy: float | None = None


@dataclass(frozen=True)
class RtPlan:
    path: str
    label: str
    name: str
    date: str
    fractionGroups: tuple
    doseReferences: tuple
    referencedStructureSetUid: str
    sopInstanceUid: str
    patientId: str
    frameOfReferenceUid: str
    patientName: str = ""
    studyInstanceUid: str = ""
    planIntent: str = ""

    @property
    def numberOfFractions(self) -> int:
        """Planned fractions of the plan's single fraction group; :class:`InputError` when the plan has several
        groups (name one with :meth:`fractionsOfGroup`) or states no number."""
        return self.fractionsOfGroup(None)

    def fractionsOfGroup(self, number: int | None) -> int:
        """Planned fractions of fraction group ``number`` (e.g. the RTDOSE's ReferencedFractionGroupNumber), or of the
        plan's only group when ``number`` is None.

        :class:`InputError` naming the plan when ``number`` is None and the plan has several groups (whatever their
        counts: two phases of 25 fractions are 50 fractions for a dose of the whole plan, 25 for a dose of one), when
        the group does not exist, or when it states no positive number of planned fractions.
        """
        if number is None and len(self.fractionGroups) > 1:
            listing = ", ".join(f"group {g.number}: {g.numberOfFractionsPlanned} fx" if g.numberOfFractionsPlanned
                                else f"group {g.number}: not stated" for g in self.fractionGroups)
            raise InputError(f"the RTPLAN has {len(self.fractionGroups)} fraction groups ({listing}): a dose of the "
                             "whole plan has no single number of fractions; give it by hand, or give each group's dose "
                             "(DoseSummationType FRACTION, naming its group) as a course of its own", self.path)
        group = self.fractionGroup(number) if number is not None else next(iter(self.fractionGroups), None)
        planned = group.numberOfFractionsPlanned if group is not None else None
        if planned is not None and planned < 0:
            raise InputError(f"the RTPLAN states {planned} planned fractions (fraction group {group.number}); a "
                             "positive number is required", self.path)
        if not planned:
            where = "the RTPLAN" if number is None else f"fraction group {number} of the RTPLAN"
            raise InputError(f"{where} states no number of planned fractions; enter it by hand", self.path)
        return int(planned)

    @property
    def fractionsPerDay(self) -> int | None:
        """Fractions per day from the plan's FractionPattern (the most of any group), None when no group states it."""
        values = [g.fractionsPerDay for g in self.fractionGroups if g.fractionsPerDay]
        return max(values) if values else None

    def fractionGroup(self, number: int) -> FractionGroup:
        for g in self.fractionGroups:
            if g.number == number:
                return g
        raise InputError(f"the RTPLAN has no fraction group {number}", self.path)

    @property
    def prescriptionGy(self) -> float | None:
        """TargetPrescriptionDose of the TARGET dose references, or ``None``.

        Volume/site references (``DoseReferenceStructureType`` VOLUME or SITE) are preferred over calculation points
        (COORDINATES, POINT); several different values (e.g. a simultaneous boost) give the highest, with a warning.
        """
        return self._prescriptionOf(self.doseReferences)

    def prescriptionOfGroup(self, number: int) -> float | None:
        """The prescription of fraction group ``number``: of the dose references its ReferencedDoseReferenceSequence
        names (as :attr:`prescriptionGy` chooses among them), ``None`` when it names none (a review: a sequential
        boost's 5-fraction group was shown with the plan's 50 Gy instead of its own 10 Gy)."""
        wanted = set(self.fractionGroup(number).referencedDoseReferenceNumbers)
        return self._prescriptionOf([r for r in self.doseReferences if r.number in wanted]) if wanted else None

    def _prescriptionOf(self, references, warn: bool = True) -> float | None:
        refs = [r for r in references
                if r.targetPrescriptionDoseGy is not None and r.doseReferenceType in ("TARGET", "")]
        preferred = [r for r in refs if r.structureType in ("VOLUME", "SITE")] or refs
        values = [r.targetPrescriptionDoseGy for r in preferred]
        if not values:
            return None
        if len(set(values)) > 1 and warn:
            logger.warning("%s: several target prescriptions %s Gy; using the highest", self.path, values)
        return float(max(values))

    @property
    def dosePerFractionGy(self) -> float | None:
        rx = self.prescriptionGy
        try:
            n = self.numberOfFractions
        except InputError:
            return None
        return None if rx is None else rx / n


def _float(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _nonNegative(value: float | None, what: str) -> float | None:
    if value is not None and value < 0:
        raise ValueError(f"{what} is negative ({value:g} Gy)")
    return value


def _int(value) -> int | None:
    f = _float(value)
    return None if f is None else int(round(f))


def readRtPlan(path: str | os.PathLike) -> RtPlan:
    """Read an RTPLAN's label, date, fraction groups, prescription and references (:class:`InputError` naming
    the file when it is not an RTPLAN or is truncated)."""
    path = Path(path)
    ds = readDicomObject(path, "RTPLAN")
    with damagedAttributes(path, "RTPLAN"):
        return _readRtPlanDataset(ds, path)


def _fractionsPerDay(group) -> int | None:
    """The most fractions given on one day by a fraction group's FractionPattern (PS3.3 C.8.8.13: a string of 0/1,
    NumberOfFractionPatternDigitsPerDay digits per day, 1 = a fraction), or None when the plan has no usable pattern
    (most TPSs leave it out)."""
    digits = _int(group.get("NumberOfFractionPatternDigitsPerDay"))
    pattern = str(group.get("FractionPattern", "") or "").strip()
    if not digits or digits < 1 or not pattern or set(pattern) - {"0", "1"} or len(pattern) % digits:
        return None
    days = [pattern[start:start + digits].count("1") for start in range(0, len(pattern), digits)]
    return max(days) or None


def _readRtPlanDataset(ds, path: Path) -> RtPlan:
    groups = []
    try:
        for fg in ds.get("FractionGroupSequence", []):
            beamDoses = tuple(_float(b.get("BeamDose")) for b in fg.get("ReferencedBeamSequence", []))
            refs = tuple(_int(r.get("ReferencedDoseReferenceNumber"))
                         for r in fg.get("ReferencedDoseReferenceSequence", []))
            number = _int(fg.get("FractionGroupNumber"))  # 0 is a valid number (it was read as the group's index)
            groups.append(FractionGroup(
                number=number if number is not None else len(groups) + 1,
                numberOfFractionsPlanned=_int(fg.get("NumberOfFractionsPlanned")),
                numberOfBeams=_int(fg.get("NumberOfBeams")) or 0,
                numberOfBrachyApplicationSetups=_int(fg.get("NumberOfBrachyApplicationSetups")) or 0,
                beamDosesGy=beamDoses, referencedDoseReferenceNumbers=refs,
                fractionsPerDay=_fractionsPerDay(fg)))
        refsDose = []
        for dr in ds.get("DoseReferenceSequence", []):
            refsDose.append(DoseReference(
                number=_int(dr.get("DoseReferenceNumber")) or 0,
                structureType=str(dr.get("DoseReferenceStructureType", "")),
                doseReferenceType=str(dr.get("DoseReferenceType", "")),
                description=str(dr.get("DoseReferenceDescription", "")),
                targetPrescriptionDoseGy=_nonNegative(_float(dr.get("TargetPrescriptionDose")),
                                                      "TargetPrescriptionDose"),
                referencedRoiNumber=_int(dr.get("ReferencedROINumber")),
                deliveryMaximumDoseGy=_float(dr.get("DeliveryMaximumDose"))))
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"the RTPLAN's fraction or prescription data cannot be read ({exc})", path) from None
    numbers = [g.number for g in groups]
    twice = sorted({n for n in numbers if numbers.count(n) > 1})
    if twice:
        raise InputError(f"the RTPLAN has two fraction groups numbered {twice[0]}: which one an RTDOSE names is "
                         "ambiguous", path)
    rss = ds.get("ReferencedStructureSetSequence", [])
    plan = RtPlan(
        path=str(path), label=str(ds.get("RTPlanLabel", "")), name=str(ds.get("RTPlanName", "")),
        date=str(ds.get("RTPlanDate", "")), fractionGroups=tuple(groups), doseReferences=tuple(refsDose),
        referencedStructureSetUid=str(rss[0].get("ReferencedSOPInstanceUID", "")) if len(rss) else "",
        sopInstanceUid=str(ds.get("SOPInstanceUID", "")), patientId=str(ds.get("PatientID", "")),
        frameOfReferenceUid=str(ds.get("FrameOfReferenceUID", "")), patientName=str(ds.get("PatientName", "")),
        studyInstanceUid=str(ds.get("StudyInstanceUID", "")), planIntent=str(ds.get("PlanIntent", "")))
    if len(groups) > 1:  # each group's own (a verification review: the log gave the plan's highest, warned)
        logger.info("read RTPLAN %s: %d fraction groups, prescriptions %s", plan.label, len(groups), ", ".join(
            f"group {g.number}: {plan.prescriptionOfGroup(g.number)} Gy" for g in groups))
    else:
        logger.info("read RTPLAN %s: %d fraction group(s), prescription %s Gy", plan.label, len(groups),
                    plan._prescriptionOf(plan.doseReferences, warn=False))
    return plan
