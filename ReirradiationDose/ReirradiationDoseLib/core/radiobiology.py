"""Linear-quadratic radiobiology per voxel: BED, EQD2, courses and the recovery-discounted composite.

Formulas (REFERENCE §1; Fowler, Br J Radiol 1989;62:679; Withers et al. 1983), per voxel with physical dose
``D`` (Gy) delivered in ``n`` fractions and the tissue's ``α/β`` (Gy):

- dose per fraction **of that voxel**: ``d = D / n`` (never the prescription dose per fraction);
- ``BED = D (1 + d / (α/β))``;
- ``EQD2 = D (d + α/β) / (2 + α/β)`` = ``BED / (1 + 2 / (α/β))``;
- courses are converted **first** and summed afterwards; with recovery of prior courses
  ``EQD2_total = Σ_k (1 − r_k) EQD2_k`` ("discount-the-prior" wording, REFERENCE §1), where ``r_k`` is 0 for the
  current course and for target voxels.

Limitation: no incomplete-repair correction (hyperfractionation with < 6 h between fractions is not modelled).

dtypes: a float32 dose stays float32 (scalars are used as Python floats so that NumPy 2 does not promote to
float64, REFERENCE §7); pass ``dtype=np.float64`` to ask for more. Scalars in, Python float out.
"""

from __future__ import annotations

import datetime
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = [
    "eqd2Gy",
    "bedGy",
    "eqd2FromBedGy",
    "Fractionation",
    "Course",
    "courseEqd2Gy",
    "compositeEqd2",
    "intervalDays",
    "validateNumberOfFractions",
]


def validateNumberOfFractions(numberOfFractions, what: str = "number of fractions") -> int:
    """Return ``numberOfFractions`` as an ``int``; refuse anything that is not a positive whole number."""
    if isinstance(numberOfFractions, (bool, np.bool_)):
        raise InputError(f"the {what} must be a positive whole number, got {numberOfFractions!r}")
    if not isinstance(numberOfFractions, numbers.Real):
        try:
            numberOfFractions = float(np.asarray(numberOfFractions).item())
        except (TypeError, ValueError):
            raise InputError(f"the {what} must be a positive whole number, got {numberOfFractions!r}") from None
    value = float(numberOfFractions)
    if not math.isfinite(value) or value < 1 or abs(value - round(value)) > 1e-9:
        raise InputError(f"the {what} must be a positive whole number, got {numberOfFractions!r}")
    return int(round(value))


def _asScalarOrArray(value, what: str):
    """A Python float for scalars, an ndarray otherwise."""
    if isinstance(value, bool):
        raise InputError(f"the {what} must be a number, got {value!r}")
    if isinstance(value, numbers.Real):
        return float(value), True
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise InputError(f"the {what} must be numeric, got {array.dtype}")
    if array.ndim == 0:
        return float(array), True
    return array, False


def _validateAlphaBeta(alphaBetaGy):
    value, isScalar = _asScalarOrArray(alphaBetaGy, "α/β")
    if isScalar:
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"α/β must be a positive number of Gy, got {value!r}")
        return value
    if value.size and not (np.all(np.isfinite(value)) and value.min() > 0):
        raise InputError("the α/β map must be positive and finite in every voxel (got a zero, negative or NaN value)")
    return value


def _validateDose(physicalDoseGy, allowNan: bool, what: str = "physical dose"):
    value, isScalar = _asScalarOrArray(physicalDoseGy, what)
    if isScalar:
        if math.isnan(value) and allowNan:
            return value, True
        if not math.isfinite(value) or value < 0:
            raise InputError(f"the {what} must be a finite dose ≥ 0 Gy, got {value!r}")
        return value, True
    if value.size:
        finite = np.isfinite(value)
        if allowNan:
            bad = np.isinf(value)
        else:
            bad = ~finite
        if np.any(bad):
            raise InputError(f"the {what} contains {int(np.count_nonzero(bad))} voxels that are not finite numbers "
                             "(NaN or infinite)")
        if np.nanmin(np.where(finite, value, 0)) < 0:
            raise InputError(f"the {what} contains negative values (minimum {float(np.nanmin(value)):.4g} Gy); "
                             "doses must be ≥ 0 Gy")
    return value, False


def _workingDtype(dose: np.ndarray, dtype):
    if dtype is not None:
        return np.dtype(dtype)
    if dose.dtype.kind == "f":
        return dose.dtype
    return np.dtype(np.float64)


def _prepare(physicalDoseGy, numberOfFractions, alphaBetaGy, allowNan, dtype):
    n = validateNumberOfFractions(numberOfFractions)
    ab = _validateAlphaBeta(alphaBetaGy)
    dose, doseScalar = _validateDose(physicalDoseGy, allowNan)
    abScalar = isinstance(ab, float)
    if doseScalar and abScalar:
        return dose, float(n), ab, None
    work = _workingDtype(np.asarray(dose), dtype) if not doseScalar else np.dtype(dtype or np.float64)
    doseArray = np.asarray(dose, dtype=work) if not doseScalar else dose
    abArray = ab if abScalar else np.asarray(ab, dtype=work)
    return doseArray, float(n), abArray, work


def bedGy(physicalDoseGy, numberOfFractions, alphaBetaGy, *, allowNan: bool = False, dtype=None):
    """Biologically effective dose per voxel, ``BED = D (1 + (D / n) / (α/β))`` (Gy_α/β).

    Parameters
    ----------
    physicalDoseGy : scalar or array of total physical dose of the course (Gy), finite and ≥ 0.
    numberOfFractions : positive whole number ``n`` of the course.
    alphaBetaGy : scalar or array (voxel map, broadcastable to the dose) of α/β in Gy, > 0.
    allowNan : let NaN voxels (e.g. outside a mapped dose's coverage) pass through as NaN.
    dtype : result dtype for arrays (default: the dose's float dtype, float64 for integer doses).

    Source: Fowler JF, Br J Radiol 1989;62:679-694; REFERENCE §1.
    """
    dose, n, ab, work = _prepare(physicalDoseGy, numberOfFractions, alphaBetaGy, allowNan, dtype)
    if work is None:
        return dose * (1.0 + dose / (n * ab))
    result = dose * (1.0 + dose / (n * ab))
    return np.asarray(result, dtype=work)


def eqd2Gy(physicalDoseGy, numberOfFractions, alphaBetaGy, *, allowNan: bool = False, dtype=None):
    """Equivalent dose in 2 Gy fractions per voxel, ``EQD2 = D (d + α/β) / (2 + α/β)`` with ``d = D / n``.

    ``d`` is the dose per fraction **of each voxel** (REFERENCE §1). Examples (REFERENCE §2): 50 Gy/25 fx →
    50 Gy for any α/β; 25 Gy/5 fx → 40.0 Gy at α/β 3; a voxel at 20 Gy of a 50 Gy/25 fx plan → 15.2 Gy at α/β 3.

    Parameters are those of :func:`bedGy`. Returns a Python float for scalar input, else an array.

    Source: Withers HR et al., Int J Radiat Oncol Biol Phys 1983;9:1385; Bentzen et al., Radiother Oncol 2012
    (QUANTEC/ICRU nomenclature "EQD2_α/β"); REFERENCE §1.
    """
    dose, n, ab, work = _prepare(physicalDoseGy, numberOfFractions, alphaBetaGy, allowNan, dtype)
    if work is None:
        return dose * (dose / n + ab) / (2.0 + ab)
    result = dose * (dose / n + ab) / (2.0 + ab)
    return np.asarray(result, dtype=work)


def eqd2FromBedGy(bed, alphaBetaGy):
    """``EQD2 = BED / (1 + 2 / (α/β))`` (REFERENCE §1)."""
    ab = _validateAlphaBeta(alphaBetaGy)
    if isinstance(ab, float):
        if isinstance(bed, numbers.Real):
            return float(bed) / (1.0 + 2.0 / ab)
        return np.asarray(bed) / (1.0 + 2.0 / ab)
    return np.asarray(bed) / (1.0 + 2.0 / ab)


@dataclass(frozen=True)
class Fractionation:
    """How a course was given: ``numberOfFractions`` (whole, ≥ 1) and optionally its prescription (Gy)."""

    numberOfFractions: int
    prescriptionGy: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "numberOfFractions", validateNumberOfFractions(self.numberOfFractions))
        if self.prescriptionGy is not None:
            value = float(self.prescriptionGy)
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"the prescription must be a positive dose in Gy, got {self.prescriptionGy!r}")
            object.__setattr__(self, "prescriptionGy", value)

    @property
    def prescriptionDosePerFractionGy(self) -> float | None:
        """Prescription dose per fraction (Gy); for labelling only, voxel EQD2 always uses the voxel's own d."""
        return None if self.prescriptionGy is None else self.prescriptionGy / self.numberOfFractions

    def describe(self) -> str:
        if self.prescriptionGy is None:
            return f"{self.numberOfFractions} fx"
        return f"{self.prescriptionGy:g} Gy / {self.numberOfFractions} fx"

    def toDict(self) -> dict:
        return {"numberOfFractions": self.numberOfFractions, "prescriptionGy": self.prescriptionGy}


@dataclass(frozen=True)
class Course:
    """One course of radiotherapy. ``isCurrent`` marks the course being planned (never discounted)."""

    name: str
    fractionation: Fractionation
    date: datetime.date | None = None
    isCurrent: bool = False

    def __post_init__(self):
        if not isinstance(self.fractionation, Fractionation):
            raise InputError(f"course {self.name!r}: fractionation must be a Fractionation")
        if self.date is not None and not isinstance(self.date, datetime.date):
            raise InputError(f"course {self.name!r}: date must be a datetime.date, got {self.date!r}")
        if isinstance(self.date, datetime.datetime):
            object.__setattr__(self, "date", self.date.date())

    def toDict(self) -> dict:
        return {"name": self.name, "fractionation": self.fractionation.toDict(),
                "date": None if self.date is None else self.date.isoformat(), "isCurrent": bool(self.isCurrent)}


def courseEqd2Gy(physicalDoseGy, course: Course | Fractionation, alphaBetaGy, **kwargs):
    """EQD2 of one course's physical dose, with the voxel's own dose per fraction (see :func:`eqd2Gy`)."""
    fractionation = course.fractionation if isinstance(course, Course) else course
    return eqd2Gy(physicalDoseGy, fractionation.numberOfFractions, alphaBetaGy, **kwargs)


def intervalDays(priorDate: datetime.date | None, currentDate: datetime.date | None) -> int | None:
    """Days between two course dates (None when either is unknown); refuses a prior course after the current."""
    if priorDate is None or currentDate is None:
        return None
    days = (currentDate - priorDate).days
    if days < 0:
        raise InputError(f"the prior course date {priorDate.isoformat()} is after the current course date "
                         f"{currentDate.isoformat()}")
    return days


def compositeEqd2(courseEqd2s: list[np.ndarray], recoveryMaps: list[np.ndarray | None] | None = None) -> np.ndarray:
    """Recovery-discounted composite ``EQD2_total = Σ_k (1 − r_k) EQD2_k`` (float64 accumulation).

    Parameters
    ----------
    courseEqd2s : EQD2 of each course on one grid (same shape), each already at the voxel's α/β.
    recoveryMaps : per course the recovered fraction ``r_k`` in [0, 1] per voxel (array or scalar) or ``None``
        for no recovery; ``None`` for the whole list means no recovery anywhere. Use ``None`` (r = 0) for the current
        course and make ``r`` 0 on target voxels (:func:`tissues.recoveryMap` does).

    The discount-the-prior form of REFERENCE §1 is used: with tolerance T, prior P and recovery r the allowed new
    dose is ``T − (1 − r) P``, not ``T (1 + r) − P``.
    """
    if not courseEqd2s:
        raise InputError("at least one course is needed for a composite EQD2")
    if recoveryMaps is None:
        recoveryMaps = [None] * len(courseEqd2s)
    if len(recoveryMaps) != len(courseEqd2s):
        raise InputError(f"{len(courseEqd2s)} courses but {len(recoveryMaps)} recovery maps were given")
    shape = np.shape(courseEqd2s[0])
    total = np.zeros(shape, dtype=np.float64)
    for index, (eqd2, recovery) in enumerate(zip(courseEqd2s, recoveryMaps, strict=True)):
        eqd2 = np.asarray(eqd2)
        if eqd2.shape != shape:
            raise InputError(f"course {index + 1} EQD2 has shape {eqd2.shape}, course 1 has {shape}: "
                             "resample onto one grid first")
        if recovery is None:
            total += eqd2
            continue
        recovery = np.asarray(recovery)
        if recovery.ndim and recovery.shape != shape:
            raise InputError(f"recovery map of course {index + 1} has shape {recovery.shape}, expected {shape}")
        if recovery.size and (np.nanmin(recovery) < 0 or np.nanmax(recovery) > 1 or np.any(np.isnan(recovery))):
            raise InputError(f"recovery fractions of course {index + 1} must lie between 0 and 1")
        total += (1.0 - recovery.astype(np.float64)) * eqd2
    return total
