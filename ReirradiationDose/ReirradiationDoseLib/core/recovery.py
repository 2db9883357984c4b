"""Recovery models: the fraction ``r`` of a prior course's effect assumed recovered by normal tissue.

Used as ``EQD2_total = Σ_k (1 − r_k) EQD2_k`` (REFERENCE §1, discount-the-prior wording). ``r`` applies to prior
courses on organ-at-risk voxels only; targets and the current course always have ``r = 0``.

Every model is a frozen dataclass with ``fractionFor(intervalDays)`` and ``toDict()`` (model name + parameters,
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

Months are converted with 365.25 / 12 = 30.4375 days per month.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError

__all__ = [
    "DAYS_PER_MONTH",
    "RecoveryModel",
    "NoRecovery",
    "ConstantRecovery",
    "StepRecovery",
    "niederDoiRecovery",
    "priceRecovery",
    "recoveryModelFromDict",
]

DAYS_PER_MONTH = 365.25 / 12.0


def _checkFraction(value, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or value > 1:
        raise InputError(f"{what} must be a recovered fraction between 0 and 1 (e.g. 0.25 for 25 %), got {value!r}")
    return value


def _checkInterval(intervalDays, modelName: str) -> float:
    if intervalDays is None:
        raise InputError(f"the '{modelName}' recovery model needs the dates of both courses (the interval between "
                         "them is unknown)")
    value = float(intervalDays)
    if not math.isfinite(value) or value < 0:
        raise InputError(f"the interval between courses must be ≥ 0 days, got {intervalDays!r}")
    return value


class RecoveryModel:
    """Base class (documentation of the contract): ``fractionFor(intervalDays) -> float in [0, 1]``, ``toDict()``."""

    name = "abstract"
    needsInterval = False

    def fractionFor(self, intervalDays: float | None) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def toDict(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class NoRecovery(RecoveryModel):
    """r = 0: the prior course counts in full (conservative default)."""

    name = "none"

    def fractionFor(self, intervalDays: float | None = None) -> float:
        if intervalDays is not None:
            _checkInterval(intervalDays, self.name)
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

    def fractionFor(self, intervalDays: float | None = None) -> float:
        if intervalDays is not None:
            _checkInterval(intervalDays, self.name)
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

    def fractionFor(self, intervalDays: float | None) -> float:
        months = _checkInterval(intervalDays, self.modelName) / DAYS_PER_MONTH
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
