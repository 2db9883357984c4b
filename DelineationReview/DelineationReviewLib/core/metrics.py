"""Pairwise interobserver metrics (REFERENCE §4), computed from :class:`~.surface.ObserverSurface` objects.

Every function here is pure and works on the per-observer data prepared once by ``surface.prepareSurface``;
the metric plugins of ``registry.py`` call them through a :class:`PairContext`.

Definitions
-----------
- Dice = 2|A∩B| / (|A| + |B|); Jaccard = |A∩B| / |A∪B|. Two empty masks: undefined (None + reason).
  One empty mask: 0 (the formulas are defined and give 0).
- Directed surface distances d(A→B): for every surface voxel of A, the distance (mm, voxel centres) to the
  nearest surface voxel of B. Distances to or from an empty mask are undefined (NaN + reason).
- Surface convention ``surfel`` (by name, REFERENCE §4; Nikolov et al. 2021): the surface elements are the voxel
  corners a marching-cubes mesh of the mask passes, each weighted by its mesh area (``surface.py``); distances are
  between corners, and every percentile, mean and fraction below weighs each element by its area: the area-weighted
  percentile is the smallest distance within which p % of the surface area lies (no interpolation).
- HD (max) = max(max d(A→B), max d(B→A)).
- HD percentile p (HD95 for p = 95, HD98 for the LRRC study) — three conventions, selectable by name:

  * ``maxDirected`` (default; DeepMind surface-distance and MONAI): max(P_p d(A→B), P_p d(B→A));
  * ``meanDirected`` (Plastimatch / SlicerRT): (P_p d(A→B) + P_p d(B→A)) / 2;
  * ``pooled`` (medpy, seg-metrics): P_p of the pooled distances of both directions.

  P_p is ``numpy.percentile`` with linear interpolation over the surface voxels (each voxel counts once).
- MSD (mean surface distance, ASSD), two conventions selectable by name:

  * ``pooled`` (default; medpy's assd): mean of the pooled distances of both directions
    = (Σ d(A→B) + Σ d(B→A)) / (n_A + n_B), each surface voxel counting once;
  * ``meanDirected`` (DeepMind, SlicerRT's "mean Hausdorff"): (mean d(A→B) + mean d(B→A)) / 2.
- Surface Dice at tolerance τ (Nikolov et al. 2021, arXiv:1809.04430):
  (Σ_{a ∈ ∂A, d(a,∂B) ≤ τ} w_a + Σ_{b ∈ ∂B, d(b,∂A) ≤ τ} w_b) / (Σ w_a + Σ w_b), with w the exposed-face area of
  each surface voxel (the voxel convention) or the surfel's mesh area (the surfel convention; see ``surface.py``).
  One empty mask: 0; two empty masks: undefined.
- Centroid shift = distance (mm) between the two centres of mass (voxel centres, LPS). Undefined if one is empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from ReirradiationDoseLib.core.errors import InputError

from .surface import ObserverSurface

__all__ = [
    "DEFAULT_SURFACE_DICE_TOLERANCE_MM",
    "HD_CONVENTIONS",
    "MSD_CONVENTIONS",
    "requireConvention",
    "meanSurfaceDistance",
    "PairContext",
    "diceJaccard",
    "directedPercentile",
    "combinePercentiles",
    "combineDirected",
    "surfaceDice",
    "centroidShiftMm",
    "UNDEFINED_BOTH_EMPTY",
]

HD_CONVENTIONS = ("maxDirected", "meanDirected", "pooled")
MSD_CONVENTIONS = ("pooled", "meanDirected")


def requireConvention(value: str, conventions, what: str) -> None:
    """Refuse a convention not among ``conventions`` (``what`` names the kind: "surface convention"), listing them:
    the one check of ``analyzeObservers`` and a study's options."""
    if value not in conventions:
        raise InputError(f"unknown {what} {value!r}; use one of {', '.join(conventions)}")
# surface-Dice tolerance tau (mm) of the iov and study commands and the module unless the user sets another
DEFAULT_SURFACE_DICE_TOLERANCE_MM = 2.0
UNDEFINED_BOTH_EMPTY = "both masks are empty"


def emptyReason(a: ObserverSurface, b: ObserverSurface) -> str | None:
    """Why distances between ``a`` and ``b`` are undefined (None when both masks have voxels)."""
    if a.isEmpty and b.isEmpty:
        return UNDEFINED_BOTH_EMPTY
    if a.isEmpty or b.isEmpty:
        empty = a.name if a.isEmpty else b.name
        return f"the mask of observer {empty!r} is empty: distances to an empty mask are undefined"
    return None


def diceJaccard(a: ObserverSurface, b: ObserverSurface) -> tuple[float | None, float | None]:
    """(Dice, Jaccard) of two observers on the same crop; (None, None) if both are empty."""
    if a.isEmpty and b.isEmpty:
        return None, None
    if a.isEmpty or b.isEmpty:
        return 0.0, 0.0
    intersection = int(np.count_nonzero(a.mask & b.mask))
    union = a.voxelCount + b.voxelCount - intersection
    return 2.0 * intersection / (a.voxelCount + b.voxelCount), intersection / union


def directedPercentile(distances: np.ndarray, percentile: float, weights: np.ndarray | None = None) -> float:
    """``numpy.percentile`` (linear interpolation) of one direction's surface distances; with ``weights`` (surfel
    areas) the smallest distance within which ``percentile`` % of the total weight lies."""
    if weights is None:
        return float(np.percentile(distances, percentile))
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(weights[order], dtype=np.float64)
    # a hair below the target: the cumulative sum of areas rounds (p = 100 must reach the last element)
    index = int(np.searchsorted(cumulative, cumulative[-1] * (percentile / 100.0) * (1.0 - 1e-12), side="left"))
    return float(distances[order[min(index, order.size - 1)]])


def combineDirected(directed, convention: str) -> float:
    """Combine the two directed percentiles under ``maxDirected`` or ``meanDirected``."""
    if convention == "maxDirected":
        return max(directed)
    if convention == "meanDirected":
        return 0.5 * (directed[0] + directed[1])
    raise ValueError(f"convention {convention!r} does not combine the directed percentiles")


def combinePercentiles(dAB: np.ndarray, dBA: np.ndarray, percentile: float, convention: str,
                       wAB: np.ndarray | None = None, wBA: np.ndarray | None = None) -> float:
    """HD at ``percentile`` under a named convention (see the module docstring); ``wAB`` / ``wBA`` the surfel
    areas in the surfel convention."""
    if convention in ("maxDirected", "meanDirected"):
        return combineDirected([directedPercentile(dAB, percentile, wAB), directedPercentile(dBA, percentile, wBA)],
                               convention)
    if convention == "pooled":
        weights = None if wAB is None else np.concatenate([wAB, wBA])
        return directedPercentile(np.concatenate([dAB, dBA]), percentile, weights)
    raise ValueError(f"unknown Hausdorff percentile convention {convention!r}; use one of {', '.join(HD_CONVENTIONS)}")


def _mean(distances: np.ndarray, weights: np.ndarray | None) -> tuple[float, float]:
    """(sum, count) of one direction: plain, or weighted by the surfel areas."""
    if weights is None:
        return float(distances.sum(dtype=np.float64)), float(distances.size)
    return float(np.dot(distances.astype(np.float64), weights)), float(weights.sum())


def meanSurfaceDistance(dAB: np.ndarray, dBA: np.ndarray, convention: str = "pooled",
                        wAB: np.ndarray | None = None, wBA: np.ndarray | None = None) -> tuple[float, list[float]]:
    """(MSD under ``convention``, [mean d(A→B), mean d(B→A)]), area-weighted when the weights are given."""
    (sumAB, nAB), (sumBA, nBA) = _mean(dAB, wAB), _mean(dBA, wBA)
    directed = [sumAB / nAB, sumBA / nBA]
    if convention == "pooled":
        return (sumAB + sumBA) / (nAB + nBA), directed
    if convention == "meanDirected":
        return 0.5 * (directed[0] + directed[1]), directed
    raise ValueError(f"unknown mean-surface-distance convention {convention!r}; use one of "
                     f"{', '.join(MSD_CONVENTIONS)}")


# Surface points exactly at the tolerance count as within it (Nikolov's "<= tau"). The distance maps are float32 and a
# distance of k voxels of 0.7 or 1.1 mm (not exact in binary) comes out a hair above tau = k x spacing: exact ties,
# the setting the tolerance note recommends, were dropped (0.211 instead of 0.256 at 0.7 mm on 0.7 mm pixels). The
# slack covers the rounding of the Maurer transform (measured up to 1.7e-5 relative at 1 mm and 2.8e-5 mm at 5 mm on
# 256x256x60 grids, two reviews): 2e-5 relative plus 2e-5 mm. It was 1e-4 mm, and a tolerance of 0.69995 mm counted
# 0.7 mm distances (surface Dice 1.0 where 0.57 is exact) while its note said only shared surface counts; 1e-6 was too
# tight (13 349 exact ties dropped on one grid).
_TIE_RELATIVE = 2e-5
_TIE_MM = 2e-5


def surfaceDice(dAB: np.ndarray, dBA: np.ndarray, areasA: np.ndarray, areasB: np.ndarray,
                toleranceMm: float) -> float:
    """Area-weighted surface Dice at ``toleranceMm`` (Nikolov et al. 2021), distances within the distance maps'
    rounding of the tolerance (2e-5 of it plus 2e-5 mm) counted as at it."""
    total = float(areasA.sum() + areasB.sum())
    limit = toleranceMm * (1.0 + _TIE_RELATIVE) + _TIE_MM
    within = float(areasA[dAB <= limit].sum() + areasB[dBA <= limit].sum())
    return within / total


def centroidShiftMm(a: ObserverSurface, b: ObserverSurface, spacingMmXyz, direction=None) -> float:
    """Distance (mm) between the centres of mass of two non-empty masks."""
    deltaKji = np.asarray(b.centroidKji) - np.asarray(a.centroidKji)
    deltaMm = deltaKji[::-1] * np.asarray(spacingMmXyz, dtype=float)  # (i, j, k) in mm; rotation keeps length
    return float(np.linalg.norm(deltaMm))


@dataclass
class PairContext:
    """What a metric plugin receives for one pair of observers (or an observer and a consensus).

    Attributes
    ----------
    a, b : the two observers' prepared surfaces (same crop).
    spacingMmXyz : voxel spacing (x, y, z) of the common grid.
    toleranceMm, hdPercentile, hdConvention, msdConvention : analysis options (the surface convention is the
        surfaces': ``a.convention``).
    cache : scratch space shared by the plugins of one pair (e.g. the directed distances).
    """

    a: ObserverSurface
    b: ObserverSurface
    spacingMmXyz: tuple[float, float, float]
    toleranceMm: float = DEFAULT_SURFACE_DICE_TOLERANCE_MM
    hdPercentile: float = 95.0
    hdConvention: str = "maxDirected"
    msdConvention: str = "pooled"
    cache: dict = field(default_factory=dict)

    @property
    def emptyReason(self) -> str | None:
        return emptyReason(self.a, self.b)

    def directedDistances(self) -> tuple[np.ndarray, np.ndarray]:
        """(d(A→B), d(B→A)) in mm, computed once per pair. Only call when :attr:`emptyReason` is None."""
        if "directed" not in self.cache:
            self.cache["directed"] = (self.a.distancesTo(self.b), self.b.distancesTo(self.a))
        return self.cache["directed"]


def nanToNone(value):
    """JSON has no NaN: undefined numbers are written as null (the reason is reported beside them)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
