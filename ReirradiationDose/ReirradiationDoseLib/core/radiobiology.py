"""Linear-quadratic radiobiology per voxel: BED, EQD2, courses and the recovery-discounted composite.

Formulas (REFERENCE §1; Fowler, Br J Radiol 1989;62:679; Withers et al. 1983), per voxel with physical dose
``D`` (Gy) delivered in ``n`` fractions and the tissue's ``α/β`` (Gy):

- dose per fraction **of that voxel**: ``d = D / n`` (never the prescription dose per fraction);
- ``BED = D (1 + d / (α/β))``;
- ``EQD2 = D (d + α/β) / (2 + α/β)`` = ``BED / (1 + 2 / (α/β))``;
- courses are converted **first** and summed afterwards; with recovery of prior courses
  ``EQD2_total = Σ_k (1 − r_k) EQD2_k`` ("discount-the-prior" wording, REFERENCE §1), where ``r_k`` is 0 for the
  current course and for target voxels.

Incomplete repair (hyperfractionation: more than one fraction a day, hours apart): the quadratic term of each
fraction interacts with the unrepaired damage of the earlier fractions of the same day (Thames HD, Int J Radiat Biol
1985;47:319-339; mono-exponential repair, half-time ``T½``, complete repair between days). With ``φ = 2^(−Δt / T½)``
for fractions ``Δt`` hours apart, a day of ``m`` fractions contributes ``m + 2 Σ_{i<j} φ^(j−i)`` instead of ``m``
quadratic terms, so ``BED = D (1 + g d / (α/β))`` with the factor ``g`` = (those terms summed over the days) / ``n``
≥ 1 (:func:`incompleteRepairFactor`; for ``m`` fractions on every day ``g = 1 + h_m(φ)``, Thames' ``h_m``; ``h_2 = φ``).
``g = 1`` for one fraction a day.

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
    "FractionSchedule",
    "incompleteRepairFactor",
    "checkRepairHalfTime",
    "checkAlphaBeta",
    "ALPHA_BETA_RANGE_GY",
    "overnightRepairFactor",
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


MAX_FRACTIONS = 1000  # more is not a course: a typing slip or a dose in the wrong field


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
    if value > MAX_FRACTIONS:
        # an adversarial review: 10 million fractions stopped the dose command with an internal error (a date
        # overflow) and eqd2 took 1e30
        raise InputError(f"the {what} must be at most {MAX_FRACTIONS} (pulsed-dose-rate brachytherapy gives about "
                         f"100 pulses), got {numberOfFractions!r}")
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


def _validateRepairFactor(repairFactor, work):
    """The incomplete-repair factor ``g`` (≥ 1; 1 = full repair between fractions) as a float or an array."""
    value, isScalar = _asScalarOrArray(repairFactor, "incomplete-repair factor")
    if isScalar:
        if not math.isfinite(value) or value < 1.0:
            raise InputError(f"the incomplete-repair factor must be a finite number ≥ 1, got {value!r}")
        return value
    if value.size and not (np.all(np.isfinite(value)) and value.min() >= 1.0):
        raise InputError("the incomplete-repair factor map must be finite and ≥ 1 in every voxel")
    return np.asarray(value, dtype=work if work is not None else np.float64)


def bedGy(physicalDoseGy, numberOfFractions, alphaBetaGy, *, allowNan: bool = False, dtype=None,
          repairFactor=1.0):
    """Biologically effective dose per voxel, ``BED = D (1 + g (D / n) / (α/β))`` (Gy_α/β).

    Parameters
    ----------
    physicalDoseGy : scalar or array of total physical dose of the course (Gy), finite and ≥ 0.
    numberOfFractions : positive whole number ``n`` of the course.
    alphaBetaGy : scalar or array (voxel map, broadcastable to the dose) of α/β in Gy, > 0.
    allowNan : let NaN voxels (e.g. outside a mapped dose's coverage) pass through as NaN.
    dtype : result dtype for arrays (default: the dose's float dtype, float64 for integer doses).
    repairFactor : incomplete-repair factor ``g`` of the quadratic term (scalar or voxel map, ≥ 1; see
        :func:`incompleteRepairFactor`); 1 = full repair between fractions.

    Source: Fowler JF, Br J Radiol 1989;62:679-694; REFERENCE §1; Thames 1985 for ``g``.
    """
    dose, n, ab, work = _prepare(physicalDoseGy, numberOfFractions, alphaBetaGy, allowNan, dtype)
    g = _validateRepairFactor(repairFactor, work)
    result = dose * (1.0 + g * dose / (n * ab))
    if work is None and isinstance(g, float):
        return result
    return np.asarray(result, dtype=work if work is not None else np.float64)


def eqd2Gy(physicalDoseGy, numberOfFractions, alphaBetaGy, *, allowNan: bool = False, dtype=None,
           repairFactor=1.0):
    """Equivalent dose in 2 Gy fractions per voxel, ``EQD2 = D (g d + α/β) / (2 + α/β)`` with ``d = D / n``.

    ``d`` is the dose per fraction **of each voxel** (REFERENCE §1). Examples (REFERENCE §2): 50 Gy/25 fx →
    50 Gy for any α/β; 25 Gy/5 fx → 40.0 Gy at α/β 3; a voxel at 20 Gy of a 50 Gy/25 fx plan → 15.2 Gy at α/β 3.

    ``g`` is the incomplete-repair factor (``repairFactor``, 1 for one fraction a day; :func:`incompleteRepairFactor`).
    Example (REFERENCE §2 case 7): 40.8 Gy in 34 fractions of 1.2 Gy → 34.27 Gy EQD2₃ with full repair; given
    twice a day 6 h apart with a repair half-time of 1.5 h (``g = 1 + 2⁻⁴``) → 34.88 Gy.

    Parameters are those of :func:`bedGy`. Returns a Python float for scalar input, else an array.

    Source: Withers HR et al., Int J Radiat Oncol Biol Phys 1983;9:1385; Bentzen et al., Radiother Oncol 2012
    (QUANTEC/ICRU nomenclature "EQD2_α/β"); REFERENCE §1; Thames 1985 for ``g``.
    """
    dose, n, ab, work = _prepare(physicalDoseGy, numberOfFractions, alphaBetaGy, allowNan, dtype)
    g = _validateRepairFactor(repairFactor, work)
    result = dose * (g * dose / n + ab) / (2.0 + ab)
    if work is None and isinstance(g, float):
        return result
    return np.asarray(result, dtype=work if work is not None else np.float64)


def eqd2FromBedGy(bed, alphaBetaGy):
    """``EQD2 = BED / (1 + 2 / (α/β))`` (REFERENCE §1)."""
    ab = _validateAlphaBeta(alphaBetaGy)
    if isinstance(ab, float):
        if isinstance(bed, numbers.Real):
            return float(bed) / (1.0 + 2.0 / ab)
        return np.asarray(bed) / (1.0 + 2.0 / ab)
    return np.asarray(bed) / (1.0 + 2.0 / ab)


# more fractions a day than this is not an external-beam schedule (CHART gave three)
MAX_FRACTIONS_PER_DAY = 4
# a repair half-time beyond this (hours) is not a published value for any tissue (they lie between ~0.3 and ~5 h)
MAX_REPAIR_HALF_TIME_H = 12.0


@dataclass(frozen=True)
class FractionSchedule:
    """How a course's fractions fall on its days: ``fractionsPerDay`` (1 = once a day) given ``hoursBetweenFractions``
    apart on each day (needed when more than one a day). The last day takes what is left (34 fractions twice a day:
    17 days of two; 35: 17 days of two and one of one)."""

    fractionsPerDay: int = 1
    hoursBetweenFractions: float | None = None

    def __post_init__(self):
        perDay = validateNumberOfFractions(self.fractionsPerDay, "number of fractions per day")
        if perDay > MAX_FRACTIONS_PER_DAY:
            raise InputError(f"{perDay} fractions a day is not a radiotherapy schedule (at most "
                             f"{MAX_FRACTIONS_PER_DAY})")
        object.__setattr__(self, "fractionsPerDay", perDay)
        hours = self.hoursBetweenFractions
        if perDay == 1:
            if hours is not None:
                raise InputError("hours between fractions are for more than one fraction a day (fractions per day is "
                                 "1): give the number of fractions per day, or leave the hours out")
            return
        if hours is None:
            raise InputError(f"{perDay} fractions a day need the hours between them (the incomplete-repair "
                             "correction depends on it)")
        if isinstance(hours, bool) or not isinstance(hours, numbers.Real) or not math.isfinite(hours) or hours <= 0:
            raise InputError(f"the hours between fractions must be a positive number, got {hours!r}")
        if (perDay - 1) * float(hours) >= 24.0:
            raise InputError(f"{perDay} fractions a day {float(hours):g} h apart do not fit in a day")
        night = 24.0 - (perDay - 1) * float(hours)
        if night < float(hours):
            raise InputError(f"{perDay} fractions a day {float(hours):g} h apart leave {night:g} h from a day's last "
                             "fraction to the next day's first, less than between the fractions of a day: that is "
                             "not a schedule of separate treatment days")
        object.__setattr__(self, "hoursBetweenFractions", float(hours))

    @property
    def hoursOvernight(self) -> float | None:
        """Hours from a day's last fraction to the next day's first (None for one fraction a day)."""
        if not self.isHyperfractionated:
            return None
        return 24.0 - (self.fractionsPerDay - 1) * self.hoursBetweenFractions

    @property
    def isHyperfractionated(self) -> bool:
        """More than one fraction a day: incomplete repair between them is modelled."""
        return self.fractionsPerDay > 1

    def describe(self) -> str:
        if not self.isHyperfractionated:
            return "one fraction a day"
        return f"{self.fractionsPerDay} fractions a day, {self.hoursBetweenFractions:g} h apart"

    def toDict(self) -> dict:
        return {"fractionsPerDay": self.fractionsPerDay, "hoursBetweenFractions": self.hoursBetweenFractions}


def checkRepairHalfTime(value, what: str) -> float:
    """A repair half-time in hours: positive, finite, at most ``MAX_REPAIR_HALF_TIME_H`` (12 h; published values lie
    between ~0.3 and ~5 h). ``what`` starts the message (a tissue, a table row)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not np.isfinite(value) or not 0 < value <= MAX_REPAIR_HALF_TIME_H:
        raise InputError(f"{what} repair half-time must be a positive number of hours, at most "
                         f"{MAX_REPAIR_HALF_TIME_H:g} (got {value!r})")
    return float(value)


# an α/β outside this range (Gy) is a typing slip: published values span about 0.5 to 25 Gy (an adversarial review:
# 1e39 overflowed float32 and 1e-320 passed, each refused later naming neither the case file nor the tissue)
ALPHA_BETA_RANGE_GY = (0.1, 100.0)


def checkAlphaBeta(value, what: str) -> float:
    """An α/β in Gy within ``ALPHA_BETA_RANGE_GY``; ``what`` starts the message (a tissue, a key, an option). One check
    for the case file, the tissue table and the ``eqd2`` command (``--alpha-beta 1e6`` gave the physical dose, 0.001
    a 1000-fold weight on the quadratic term, both without a word)."""
    low, high = ALPHA_BETA_RANGE_GY
    number = value
    if isinstance(value, str):  # a tissue table's "3" (JSON) was read as 3 before the range check: still is
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float, np.floating, np.integer)):
        raise InputError(f"{what} must be a number of Gy, got {value!r}")
    if not np.isfinite(number) or not low <= number <= high:
        raise InputError(f"{what} must lie between {low:g} and {high:g} Gy (published values span about 0.5 to 25 "
                         f"Gy), got {value!r}")
    return float(number)


def _quadraticTermsOfOneDay(fractions: int, phi: float) -> float:
    """``k + 2 Σ_{i<j} φ^(j−i)`` for a day of ``k`` equally spaced fractions (the sum of their quadratic terms, in
    units of one fraction's, with the unrepaired interaction of each earlier fraction of the day)."""
    return fractions + 2.0 * sum((fractions - lag) * phi ** lag for lag in range(1, fractions))


def overnightRepairFactor(numberOfFractions, schedule: FractionSchedule, repairHalfTimeHours: float) -> float:
    """The factor of :func:`incompleteRepairFactor` without its complete-repair-overnight assumption: every pair of
    fractions interacts with ``φ^(Δt / T½)`` over the hours between them, the days back to back (no weekend break,
    so the interaction is the most it can be). Used to say when the overnight assumption matters (a long half-time,
    a short night); 1 for one fraction a day."""
    n = validateNumberOfFractions(numberOfFractions)
    if not schedule.isHyperfractionated:
        return 1.0
    m, hours = schedule.fractionsPerDay, schedule.hoursBetweenFractions
    times = np.array([24.0 * (index // m) + hours * (index % m) for index in range(n)])
    gaps = times[None, :] - times[:, None]
    pairs = 2.0 ** (-gaps[np.triu_indices(n, 1)] / float(repairHalfTimeHours))
    return float((n + 2.0 * pairs.sum()) / n)


def incompleteRepairFactor(numberOfFractions, schedule: FractionSchedule, repairHalfTimeHours):
    """The factor ``g ≥ 1`` on the quadratic term of a course given on ``schedule`` (Thames 1985, see the module).

    ``g = [full days × S(m) + S(rest)] / n`` with ``S(k) = k + 2 Σ_{lag=1}^{k−1} (k − lag) φ^lag`` and
    ``φ = 2^(−Δt / T½)``; complete repair between days (overnight). ``g = 1`` for one fraction a day, whatever the
    half-time. ``repairHalfTimeHours``: scalar, or an array (one ``g`` per element; compute per tissue, not per voxel).
    Examples: two a day 6 h apart, T½ 1.5 h → ``1 + 1/16``; three a day 6 h apart, T½ 6 h → ``1 + (4φ + 2φ²)/3``
    with φ = 0.5, i.e. 1.8333.
    """
    n = validateNumberOfFractions(numberOfFractions)
    if not isinstance(schedule, FractionSchedule):
        raise InputError(f"the schedule must be a FractionSchedule, got {schedule!r}")
    halfTimes = np.asarray(repairHalfTimeHours, dtype=np.float64)
    if not schedule.isHyperfractionated:
        return 1.0 if halfTimes.ndim == 0 else np.ones(halfTimes.shape)
    for halfTime in halfTimes.ravel():
        checkRepairHalfTime(float(halfTime), "a")
    m = schedule.fractionsPerDay
    fullDays, rest = divmod(n, m)

    def factor(halfTime: float) -> float:
        phi = 2.0 ** (-schedule.hoursBetweenFractions / halfTime)
        return (fullDays * _quadraticTermsOfOneDay(m, phi) + _quadraticTermsOfOneDay(rest, phi)) / n

    if halfTimes.ndim == 0:
        return factor(float(halfTimes))
    return np.array([factor(float(t)) for t in halfTimes.ravel()]).reshape(halfTimes.shape)


@dataclass(frozen=True)
class Fractionation:
    """How a course was given: ``numberOfFractions`` (whole, ≥ 1) and optionally its prescription (Gy)."""

    numberOfFractions: int
    prescriptionGy: float | None = None
    schedule: FractionSchedule = FractionSchedule()

    def __post_init__(self):
        object.__setattr__(self, "numberOfFractions", validateNumberOfFractions(self.numberOfFractions))
        if not isinstance(self.schedule, FractionSchedule):
            raise InputError(f"the schedule must be a FractionSchedule, got {self.schedule!r}")
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
        text = f"{self.numberOfFractions} fx" if self.prescriptionGy is None else \
            f"{self.prescriptionGy:g} Gy / {self.numberOfFractions} fx"
        return text if not self.schedule.isHyperfractionated else f"{text}, {self.schedule.describe()}"

    def toDict(self) -> dict:
        return {"numberOfFractions": self.numberOfFractions, "prescriptionGy": self.prescriptionGy,
                **self.schedule.toDict()}


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


def courseEqd2Gy(physicalDoseGy, course: Course | Fractionation, alphaBetaGy, repairHalfTimeHours=None, **kwargs):
    """EQD2 of one course's physical dose, with the voxel's own dose per fraction (see :func:`eqd2Gy`).

    A course given more than once a day needs ``repairHalfTimeHours`` (one value, in hours) for its incomplete-repair
    factor; for a voxel map of half-times compute the factor per tissue and pass ``repairFactor`` to :func:`eqd2Gy`.
    """
    fractionation = course.fractionation if isinstance(course, Course) else course
    schedule = fractionation.schedule
    if schedule.isHyperfractionated:
        if repairHalfTimeHours is None:
            raise InputError(f"{schedule.describe()}: the incomplete-repair correction needs the tissue's repair "
                             "half-time (hours)")
        kwargs["repairFactor"] = incompleteRepairFactor(fractionation.numberOfFractions, schedule,
                                                        float(repairHalfTimeHours))
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
