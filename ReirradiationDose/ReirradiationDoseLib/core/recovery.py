"""Recovery models: the fraction ``r`` of a prior course's effect assumed recovered by normal tissue.

Used as ``EQD2_total = Σ_k (1 − r_k) EQD2_k`` (REFERENCE §1, discount-the-prior wording). ``r`` applies to prior
courses on organ-at-risk voxels only; targets and the current course always have ``r = 0``.

Every model is a frozen dataclass with ``fractionForMonths(intervalMonths)`` (``fractionFor(intervalDays)`` for an
interval in days) and ``toDict()`` (model name + parameters,
stored with every result); :func:`recoveryModelFromDict` rebuilds one.

| model | rule | source |
|---|---|---|
| none | r = 0 | conservative default |
| constant | r per organ, user-given | common practice (a 17-centre survey: median 23 %, wide spread) |
| nieder-doi | 0 % < 6 months, 25 % 6–12 months, 50 % ≥ 12 months | Doi et al., Strahlenther Onkol 2021, doi
  10.1007/s00066-021-01772-7; Nieder et al., IJROBP 2006;66:1446 (spinal cord) |
| price | 0 % < 6 months, rising linearly to 50 % at 12 months, 50 % beyond | Price et al., Adv Radiat Oncol 2021,
  doi 10.1016/j.adro.2020.09.027 ("0 % < 6 months rising to 50 % > 1 year"; the linear rise between 6 and 12
  months is this project's reading of "rising", editable through the breakpoints) |

Intervals are counted in calendar months between the courses' dates (:func:`calendarMonthsBetween`: a course on
15 January 2023 is 12 months before 15 January 2024 and 6 months before 15 July 2023); an interval known only in days
is converted with 365.25 / 12 = 30.4375 days per month.
"""

from __future__ import annotations

import calendar
import datetime
import math
from dataclasses import dataclass

from .errors import InputError

__all__ = [
    "DAYS_PER_MONTH",
    "calendarMonthsBetween",
    "dateMonthsBefore",
    "RecoveryModel",
    "NoRecovery",
    "ConstantRecovery",
    "StepRecovery",
    "niederDoiRecovery",
    "priceRecovery",
    "recoveryModelFromDict",
]

DAYS_PER_MONTH = 365.25 / 12.0


def _addMonths(day: datetime.date, months: int) -> datetime.date:
    """``day`` moved by whole calendar months, the day of the month clamped to the month's length (31 January
    + 1 month = 28 or 29 February)."""
    years, month0 = divmod(day.month - 1 + int(months), 12)
    year = day.year + years
    return datetime.date(year, month0 + 1, min(day.day, calendar.monthrange(year, month0 + 1)[1]))


def calendarMonthsBetween(start: datetime.date, end: datetime.date) -> float:
    """Months from ``start`` to ``end`` on the calendar: the whole months to the last monthly anniversary of
    ``start`` not after ``end``, plus the days beyond it as a fraction of that month (to the next anniversary).

    A course given on 15 January 2023 is 12 months before 15 January 2024 and 6 months before 15 July 2023, whatever
    the lengths of the months between (with 30.44-day months the first read 11.99 months and the second 5.95: a
    step model's "≥ 12 months" and "≥ 6 months" missed the anniversaries by a day or more).
    """
    if end < start:
        raise InputError(f"the prior course date {start.isoformat()} is after the current course date "
                         f"{end.isoformat()}")
    whole = (end.year - start.year) * 12 + end.month - start.month
    if _addMonths(start, whole) > end:
        whole -= 1
    anchor, following = _addMonths(start, whole), _addMonths(start, whole + 1)
    return whole + (end - anchor).days / (following - anchor).days


def monthsText(months: float) -> str:
    """An interval in months for the reader, to one decimal rounded down: 11.97 months reads "11.9", not "12.0",
    beside a recovery step at 12 months that it has not reached (a review: "12.0 calendar months" beside Nieder-Doi's
    25 %, correct for 11.97 months, read as a misapplied 50 % step); whole months stay whole (12 reads "12.0")."""
    return f"{math.floor(float(months) * 10 + 1e-6) / 10:.1f}"


def dateMonthsBefore(end: datetime.date, months: float) -> datetime.date:
    """The date ``months`` calendar months before ``end`` (whole months on the calendar, a fraction of a month as
    that share of the month before): ``dateMonthsBefore(today, 12)`` is today's date a year ago, and
    :func:`calendarMonthsBetween` of the two is whole ``months`` or a little more (31 August less 6 months is 28
    February, 6.06 months before it: the day is clamped to February's length)."""
    if not math.isfinite(months) or months < 0:
        raise InputError(f"months before the current course must be ≥ 0, got {months!r}")
    whole = math.floor(months)
    anchor = _addMonths(end, -whole)
    fraction = months - whole
    if fraction <= 0:
        return anchor
    previous = _addMonths(end, -whole - 1)
    return anchor - datetime.timedelta(days=round(fraction * (anchor - previous).days))


def _checkFraction(value, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or value > 1:
        raise InputError(f"{what} must be a recovered fraction between 0 and 1 (e.g. 0.25 for 25 %), got {value!r}")
    return value


def _checkInterval(interval, modelName: str, unit: str = "days") -> float:
    if interval is None:
        raise InputError(f"the '{modelName}' recovery model needs the dates of both courses (the interval between "
                         "them is unknown)")
    value = float(interval)
    if not math.isfinite(value) or value < 0:
        raise InputError(f"the interval between courses must be ≥ 0 {unit}, got {interval!r}")
    return value


class RecoveryModel:
    """Base class (documentation of the contract): ``fractionForMonths(intervalMonths) -> float in [0, 1]`` (calendar
    months between the courses, :func:`calendarMonthsBetween`), ``fractionFor(intervalDays)`` for an interval known
    only in days, ``toDict()``."""

    name = "abstract"
    needsInterval = False

    def fractionForMonths(self, intervalMonths: float | None) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def fractionFor(self, intervalDays: float | None = None) -> float:
        """The recovered fraction after ``intervalDays`` (30.4375-day months; with the courses' dates prefer
        ``fractionForMonths(calendarMonthsBetween(...))``: a year from 15 January is 12 calendar months, 11.99 of
        these)."""
        months = None if intervalDays is None else _checkInterval(intervalDays, self.name) / DAYS_PER_MONTH
        return self.fractionForMonths(months)

    def toDict(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class NoRecovery(RecoveryModel):
    """r = 0: the prior course counts in full (conservative default)."""

    name = "none"

    def fractionForMonths(self, intervalMonths: float | None = None) -> float:
        if intervalMonths is not None:
            _checkInterval(intervalMonths, self.name, "months")
        return 0.0

    def toDict(self) -> dict:
        return {"model": "none"}

    def describe(self) -> str:
        return "no recovery"


@dataclass(frozen=True)
class ConstantRecovery(RecoveryModel):
    """A user-given recovered fraction, independent of the interval."""

    fraction: float
    name = "constant"

    def __post_init__(self):
        object.__setattr__(self, "fraction", _checkFraction(self.fraction, "the constant recovery"))

    def fractionForMonths(self, intervalMonths: float | None = None) -> float:
        if intervalMonths is not None:
            _checkInterval(intervalMonths, self.name, "months")
        return self.fraction

    def toDict(self) -> dict:
        return {"model": "constant", "fraction": self.fraction}

    def describe(self) -> str:
        return f"constant {100 * self.fraction:g} % recovery"


@dataclass(frozen=True)
class StepRecovery(RecoveryModel):
    """Time-based recovery: breakpoints (months) and the fraction reached at each.

    ``r(t) = 0`` before the first breakpoint; ``r = fractions[i]`` from ``breakpointsMonths[i]`` on (step) or, with
    ``interpolate``, linearly between consecutive breakpoints; the last fraction beyond the last breakpoint.
    """

    modelName: str
    breakpointsMonths: tuple[float, ...]
    fractions: tuple[float, ...]
    interpolate: bool = False
    source: str = ""
    needsInterval = True

    def __post_init__(self):
        months = tuple(float(m) for m in self.breakpointsMonths)
        fractions = tuple(_checkFraction(f, f"recovery of model {self.modelName!r}") for f in self.fractions)
        if not months or len(months) != len(fractions):
            raise InputError(f"recovery model {self.modelName!r}: one fraction per breakpoint is required")
        if any(b <= a for a, b in zip(months[:-1], months[1:], strict=True)) or months[0] < 0:
            raise InputError(f"recovery model {self.modelName!r}: breakpoints must increase and be ≥ 0 months")
        object.__setattr__(self, "breakpointsMonths", months)
        object.__setattr__(self, "fractions", fractions)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.modelName

    def fractionForMonths(self, intervalMonths: float | None) -> float:
        months = _checkInterval(intervalMonths, self.modelName, "months")
        points = self.breakpointsMonths
        if months < points[0]:
            return 0.0
        for index in range(len(points) - 1):
            if points[index] <= months < points[index + 1]:
                if not self.interpolate:
                    return self.fractions[index]
                t = (months - points[index]) / (points[index + 1] - points[index])
                return self.fractions[index] + t * (self.fractions[index + 1] - self.fractions[index])
        return self.fractions[-1]

    def toDict(self) -> dict:
        return {"model": self.modelName, "breakpointsMonths": list(self.breakpointsMonths),
                "fractions": list(self.fractions), "interpolate": self.interpolate, "source": self.source}

    def describe(self) -> str:
        return f"{self.modelName} time-based recovery"


def niederDoiRecovery() -> StepRecovery:
    """0 % < 6 months, 25 % at 6–12 months, 50 % ≥ 12 months (Doi 2021; Nieder 2006; spinal cord)."""
    return StepRecovery("nieder-doi", (6.0, 12.0), (0.25, 0.5), interpolate=False,
                        source="Doi et al., Strahlenther Onkol 2021, doi 10.1007/s00066-021-01772-7; "
                               "Nieder et al., IJROBP 2006;66:1446")


def priceRecovery() -> StepRecovery:
    """0 % < 6 months rising (linearly) to 50 % at 12 months and beyond (Price et al., Adv Radiat Oncol 2021)."""
    return StepRecovery("price", (6.0, 12.0), (0.0, 0.5), interpolate=True,
                        source="Price et al., Adv Radiat Oncol 2021, doi 10.1016/j.adro.2020.09.027")


def recoveryModelFromDict(data: dict | str | None) -> RecoveryModel:
    """Rebuild a model from ``toDict()`` output, or from a bare name ("none", "nieder-doi", "price")."""
    if data is None:
        return NoRecovery()
    if isinstance(data, str):
        data = {"model": data}
    if not isinstance(data, dict) or "model" not in data:
        raise InputError(f"a recovery model needs a 'model' name, got {data!r}")
    name = str(data["model"]).strip().lower()
    if name == "none":
        return NoRecovery()
    if name == "constant":
        if "fraction" not in data:
            raise InputError("the 'constant' recovery model needs a 'fraction' (0–1)")
        return ConstantRecovery(data["fraction"])
    if "breakpointsMonths" in data:
        return StepRecovery(name, tuple(data["breakpointsMonths"]), tuple(data["fractions"]),
                            bool(data.get("interpolate", False)), str(data.get("source", "")))
    if name in ("nieder-doi", "nieder", "doi"):
        return niederDoiRecovery()
    if name == "price":
        return priceRecovery()
    raise InputError(f"unknown recovery model {data['model']!r} (known: none, constant, nieder-doi, price)")
