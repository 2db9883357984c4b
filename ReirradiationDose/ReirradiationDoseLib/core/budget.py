"""Remaining dose budget: per voxel (LQ inverse) and per organ (largest prescription scaling within a limit).

Per voxel (REFERENCE §1): a new course of ``n`` fractions may add EQD2 ``E = limit − prior composite`` (prior already
discounted for recovery, ``Σ (1 − r) EQD2_prior``). The largest physical dose ``D ≥ 0`` with
``EQD2(D, n) = D (D/n + α/β) / (2 + α/β) ≤ E`` solves ``D² / n + (α/β) D − E (2 + α/β) = 0``:

    D = n/2 · (−α/β + sqrt((α/β)² + 4 E (2 + α/β) / n))  =  2 E (2 + α/β) / (α/β + sqrt((α/β)² + 4 E (2 + α/β) / n))

(the second form is used: no cancellation for small E). ``D = 0`` when ``E ≤ 0`` (no budget left). A course given
more than once a day has the incomplete-repair factor ``g`` on its quadratic term (radiobiology.incompleteRepairFactor):
``g D² / n + (α/β) D − E (2 + α/β) = 0``, the same forms with ``n / g`` for ``n``.

Per organ: the largest factor ``s`` by which a planned physical dose distribution may be scaled so that the organ's
constrained DVH metric of ``prior + EQD2(s · planned)`` stays within the limit, found by bisection (every supported
metric is non-decreasing in ``s`` for upper limits, non-increasing for "volume below" lower limits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .constraints import OrganConstraint
from .dvh import DvhResult
from .errors import InputError
from .radiobiology import _validateAlphaBeta, _validateRepairFactor, eqd2Gy, validateNumberOfFractions

__all__ = [
    "remainingPhysicalDoseGy",
    "remainingBudgetMap",
    "ScalingResult",
    "maxPrescriptionScaling",
    "scaledCourseMetric",
    "organScalingFactors",
]


def remainingPhysicalDoseGy(allowedExtraEqd2Gy, numberOfFractions, alphaBetaGy, repairFactor=1.0):
    """Largest physical dose (Gy) in ``numberOfFractions`` whose EQD2 at ``alphaBetaGy`` is ≤ ``allowedExtraEqd2Gy``.

    Arrays or scalars; NaN allowances stay NaN (no limit there); ``E ≤ 0`` gives 0. Example: E = 50 Gy, n = 25, any
    α/β → 50 Gy; E = 40 Gy, n = 5, α/β 3 → 25 Gy. ``repairFactor``: the planned course's incomplete-repair factor
    ``g`` (≥ 1, scalar or per voxel; 1 for one fraction a day).
    """
    n = float(validateNumberOfFractions(numberOfFractions))
    ab = _validateAlphaBeta(alphaBetaGy)
    g = _validateRepairFactor(repairFactor, None)
    scalar = np.ndim(allowedExtraEqd2Gy) == 0 and np.ndim(ab) == 0 and np.ndim(g) == 0
    extra = np.asarray(allowedExtraEqd2Gy, dtype=np.float64)
    abArray = np.asarray(ab, dtype=np.float64)
    positive = np.where(extra > 0, extra, 0.0)
    with np.errstate(invalid="ignore"):
        root = np.sqrt(abArray * abArray + 4.0 * positive * (2.0 + abArray) * np.asarray(g, dtype=np.float64) / n)
        dose = 2.0 * positive * (2.0 + abArray) / (abArray + root)
    dose = np.where(np.isnan(extra), np.nan, dose)
    return float(dose) if scalar else dose


def remainingBudgetMap(priorCompositeEqd2, limitEqd2Map, numberOfFractions, alphaBetaMap) -> np.ndarray:
    """Per-voxel physical dose (Gy, float32) a new course of ``numberOfFractions`` may still give.

    Parameters
    ----------
    priorCompositeEqd2 : recovery-discounted EQD2 of all prior courses (Gy), per voxel.
    limitEqd2Map : cumulative EQD2 limit per voxel (Gy), NaN where no limit applies (result NaN there).
    numberOfFractions : of the new course.
    alphaBetaMap : α/β per voxel (or scalar) — the same α/β the prior EQD2 and the limit are expressed in.
    """
    prior = np.asarray(priorCompositeEqd2, dtype=np.float64)
    limit = np.asarray(limitEqd2Map, dtype=np.float64)
    if prior.shape != limit.shape:
        raise InputError(f"prior EQD2 {prior.shape} and limit map {limit.shape} are on different grids")
    if np.ndim(alphaBetaMap) and np.shape(alphaBetaMap) != prior.shape:
        raise InputError(f"the α/β map {np.shape(alphaBetaMap)} and prior EQD2 {prior.shape} differ in shape")
    if np.any(prior[~np.isnan(prior)] < 0):
        raise InputError("the prior EQD2 contains negative values")
    return np.asarray(remainingPhysicalDoseGy(limit - prior, numberOfFractions, alphaBetaMap), dtype=np.float32)


@dataclass(frozen=True)
class ScalingResult:
    """Largest allowed prescription scaling for one constraint: ``scaling`` (inf when never limiting, 0 when the
    prior alone already breaks it), the metric value at that scaling and a reason."""

    constraint: OrganConstraint
    structureName: str | None
    scaling: float | None
    metricValueAtScaling: float | None
    reason: str = ""

    def toDict(self) -> dict:
        return {"constraint": self.constraint.toDict(), "structureName": self.structureName,
                "scaling": None if self.scaling is None or math.isinf(self.scaling) else self.scaling,
                "unlimited": self.scaling is not None and math.isinf(self.scaling),
                "metricValueAtScaling": self.metricValueAtScaling, "reason": self.reason}


def _within(value: float, constraint: OrganConstraint) -> bool:
    limit = constraint.limit
    return {"<": value < limit, "<=": value <= limit, ">": value > limit, ">=": value >= limit}[constraint.comparison]


def scaledCourseMetric(priorEqd2Gy, plannedPhysicalDoseGy, numberOfFractions: int, alphaBetaGy, volumesCc,
                       constraint: OrganConstraint, scaling: float = 1.0, repairFactor=1.0, name: str = ""):
    """The constraint's metric of ``prior + EQD2(scaling × planned)`` over voxels of the given volumes (1-D arrays of
    an organ's voxels), or None when undefined."""
    eqd2 = eqd2Gy(scaling * plannedPhysicalDoseGy, numberOfFractions, alphaBetaGy, dtype=np.float64,
                  repairFactor=repairFactor)
    return DvhResult(name, priorEqd2Gy + eqd2, volumesCc).metric(constraint.metric).value


def maxPrescriptionScaling(priorEqd2Gy: np.ndarray, plannedPhysicalDoseGy: np.ndarray, numberOfFractions: int,
                           alphaBetaGy, mask: np.ndarray, voxelVolumeCc: float, constraint: OrganConstraint,
                           name: str = "", toleranceScaling: float = 1e-4, maxScaling: float = 1000.0,
                           repairFactor=1.0) -> ScalingResult:
    """Largest ``s`` with ``metric(prior + EQD2(s · planned, n, α/β))`` within ``constraint``, by bisection.

    Parameters
    ----------
    priorEqd2Gy : recovery-discounted prior EQD2 (Gy), at the constraint's α/β.
    plannedPhysicalDoseGy : physical dose of the planned course at scaling 1 (Gy), same grid.
    numberOfFractions : of the planned course (fixed while scaling: the dose per fraction scales with s).
    alphaBetaGy : scalar or voxel map; the constraint's α/β should be used when it has one.
    mask : boolean mask (or fractional weights) of the organ on the same grid.
    voxelVolumeCc : volume of one voxel of that grid.
    constraint : the organ limit (any DVH metric supported by :meth:`DvhResult.metric`).
    toleranceScaling : bisection stops when the bracket is narrower than this.
    maxScaling : beyond this the constraint is reported as not limiting (``inf``).
    repairFactor : the planned course's incomplete-repair factor (scalar or voxel map on the same grid; 1 for one
        fraction a day), kept while scaling.
    """
    weights = np.asarray(mask)
    selected = weights > 0
    if weights.shape != np.shape(priorEqd2Gy) or weights.shape != np.shape(plannedPhysicalDoseGy):
        raise InputError("prior EQD2, planned dose and mask must be on one grid")
    if not selected.any():
        return ScalingResult(constraint, name or None, None, None, f"structure {name!r} is empty")
    prior = np.asarray(priorEqd2Gy, dtype=np.float64)[selected]
    planned = np.asarray(plannedPhysicalDoseGy, dtype=np.float64)[selected]
    ab = alphaBetaGy if np.ndim(alphaBetaGy) == 0 else np.asarray(alphaBetaGy, dtype=np.float64)[selected]
    g = repairFactor if np.ndim(repairFactor) == 0 else np.asarray(repairFactor, dtype=np.float64)[selected]
    volumes = (np.ones(prior.shape) if weights.dtype == bool else weights[selected].astype(np.float64)) * voxelVolumeCc
    n = validateNumberOfFractions(numberOfFractions)

    def metricAt(s: float) -> float | None:
        return scaledCourseMetric(prior, planned, n, ab, volumes, constraint, s, g, name)

    value0 = metricAt(0.0)
    if value0 is None:
        return ScalingResult(constraint, name or None, None, None,
                             DvhResult(name, prior, volumes).metric(constraint.metric).reason)
    if not _within(value0, constraint):
        return ScalingResult(constraint, name or None, 0.0, value0, "the prior dose alone already reaches the limit")
    low, high = 0.0, 1.0
    while _within(metricAt(high), constraint):
        low = high
        high *= 2.0
        if high > maxScaling:
            if _within(metricAt(maxScaling), constraint):
                return ScalingResult(constraint, name or None, math.inf, None,
                                     f"not limiting up to {maxScaling:g}× the planned dose")
            high = maxScaling
    while high - low > toleranceScaling:
        middle = 0.5 * (low + high)
        if _within(metricAt(middle), constraint):
            low = middle
        else:
            high = middle
    return ScalingResult(constraint, name or None, low, metricAt(low))


def organScalingFactors(constraints, masks: dict[str, np.ndarray], priorEqd2Gy: np.ndarray,
                        plannedPhysicalDoseGy: np.ndarray, numberOfFractions: int, voxelVolumeCc: float,
                        alphaBetaMap=None) -> list[ScalingResult]:
    """:func:`maxPrescriptionScaling` for every cumulative constraint (a ``ConstraintSet`` or a list) on every
    matching structure; uses the constraint's α/β where it has one, else ``alphaBetaMap``.

    ``priorEqd2Gy`` must be expressed at that same α/β (a constraint-specific prior may be given as a dict
    ``{alphaBetaGy: array}``).
    """
    constraintList = getattr(constraints, "constraints", constraints)
    results = []
    for constraint in constraintList:
        if constraint.kind != "cumulative":
            continue
        ab = constraint.alphaBetaGy if constraint.alphaBetaGy is not None else alphaBetaMap
        if ab is None:
            raise InputError(f"constraint {constraint.describe()} has no α/β and no α/β map was given")
        prior = priorEqd2Gy.get(constraint.alphaBetaGy) if isinstance(priorEqd2Gy, dict) else priorEqd2Gy
        if prior is None:
            raise InputError(f"no prior EQD2 at α/β {constraint.alphaBetaGy} Gy for {constraint.describe()}")
        matched = [name for name in masks if constraint.matches(name)]
        if not matched:
            results.append(ScalingResult(constraint, None, None, None,
                                         f"no structure named {constraint.structure!r} (or an alias) was given"))
        for name in matched:
            results.append(maxPrescriptionScaling(prior, plannedPhysicalDoseGy, numberOfFractions, ab, masks[name],
                                                  voxelVolumeCc, constraint, name))
    return results
