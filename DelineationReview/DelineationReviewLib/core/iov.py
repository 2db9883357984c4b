"""Interobserver variation (IOV) of several observers' delineations of one structure (REFERENCE §4).

Entry point: :func:`analyzeObservers`. It

1. checks the observers (unique names, one grid or an explicit nearest-neighbour resampling, ``observers.py``);
2. crops all masks to the union bounding box of all observers + one voxel, clipped to the image: surfaces and
   surface distances are exact on this crop (see ``surface.py``). STAPLE, whose result depends on the grid extent,
   runs on a second fixed box, the union bounding box + ``cropMarginMm`` (at least one voxel), recorded with the
   result;
3. prepares each observer ONCE (surface, exposed-face areas, centroid, distance map) and reuses it for all
   pairs;
4. runs every registered metric plugin (``registry.py``) on every pair i < j;
5. computes the group statistics: CIgen (Kouwenhoven et al. 2009) and the volume coefficient of variation;
6. builds the agreement map, the uncertainty band and the consensus (STAPLE, majority vote or one observer as
   reference), with each observer's sensitivity/specificity and metrics against it.

CIgen = Σ_{i<j} |Ai∩Aj| / Σ_{i<j} |Ai∪Aj| is computed from the agreement map c(x) (number of observers including
voxel x): Σ_{i<j} |Ai∩Aj| = Σ_x c(x)(c(x)-1)/2 and Σ_{i<j} |Ai∪Aj| = (n-1) Σ_i |Ai| - Σ_{i<j} |Ai∩Aj|.
Volume CV = sample standard deviation (n-1) / mean of the observers' volumes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.progress import noProgress

from . import consensus as consensusLib
from .metrics import (
    DEFAULT_SURFACE_DICE_TOLERANCE_MM,
    HD_CONVENTIONS,
    MSD_CONVENTIONS,
    PairContext,
    nanToNone,
    requireConvention,
)
from .observers import ObserverSet, makeObserverSet
from .registry import computePairMetrics, registeredMetrics
from .surface import (
    SURFACE_CONVENTIONS,
    CropBox,
    ObserverSurface,
    growCropBox,
    marginVoxelsFor,
    prepareSurface,
    unionCropBox,
)

__all__ = ["analyzeObservers", "IovResult", "PairResult", "DEFAULT_CROP_MARGIN_MM", "surfaceDiceToleranceNote",
           "definitions"]

logger = logging.getLogger(__name__)

DEFAULT_CROP_MARGIN_MM = 5.0


@dataclass(frozen=True)
class PairResult:
    """Metrics of one pair (a, b); ``reasons`` says why a value is undefined (None / NaN)."""

    a: str
    b: str
    values: dict
    reasons: dict = field(default_factory=dict)

    def __getitem__(self, key):
        return self.values[key]

    def toDict(self) -> dict:
        out = {"a": self.a, "b": self.b}
        for key, value in self.values.items():
            out[key] = [nanToNone(v) for v in value] if isinstance(value, list) else nanToNone(value)
        if self.reasons:
            out["undefined"] = dict(self.reasons)
        return out


@dataclass(frozen=True)
class IovResult:
    """Everything :func:`analyzeObservers` found. Arrays are on the crop (``crop``) of ``geometry``."""

    observers: tuple[dict, ...]
    pairs: tuple[PairResult, ...]
    cigen: float | None
    volumeCv: float | None
    reasons: dict
    toleranceMm: float
    hdPercentile: float
    hdConvention: str
    consensus: dict | None
    agreement: dict
    grid: dict
    geometry: ImageGeometry
    crop: CropBox
    agreementMap: np.ndarray = field(repr=False)
    consensusMask: np.ndarray | None = field(default=None, repr=False)
    notes: tuple[str, ...] = ()  # what a reader must know to read the numbers (see surfaceDiceToleranceNote)
    surfaceConvention: str = "voxel"
    msdConvention: str = "pooled"

    def pair(self, a: str, b: str) -> PairResult:
        for pair in self.pairs:
            if (pair.a, pair.b) in ((a, b), (b, a)):
                return pair
        raise KeyError(f"no pair ({a}, {b})")

    def _full(self, cropped: np.ndarray) -> np.ndarray:
        full = np.zeros(self.geometry.shape, dtype=cropped.dtype)
        full[self.crop.slices] = cropped
        return full

    def agreementMapFull(self) -> np.ndarray:
        """The agreement map on the full common grid (uint8: number of observers including each voxel)."""
        return self._full(self.agreementMap)

    def consensusMaskFull(self) -> np.ndarray | None:
        return None if self.consensusMask is None else self._full(self.consensusMask)

    def toDict(self) -> dict:
        """JSON-ready report (NaN written as null; every undefined value has its reason beside it)."""
        out = {
            "observers": [dict(o) for o in self.observers],
            "pairs": [p.toDict() for p in self.pairs],
            "cigen": nanToNone(self.cigen),
            "volumeCv": nanToNone(self.volumeCv),
            "hdConvention": self.hdConvention,
            "hdPercentile": self.hdPercentile,
            "msdConvention": self.msdConvention,
            "surfaceConvention": self.surfaceConvention,
            "toleranceMm": self.toleranceMm,
            "consensus": self.consensus,
            "agreement": dict(self.agreement),
            "grid": dict(self.grid),
            "definitions": definitions(self.surfaceConvention, self.msdConvention),
        }
        if self.reasons:
            out["undefined"] = dict(self.reasons)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def surfaceDiceToleranceNote(toleranceMm: float, spacingMm, surface: str = "voxel") -> str | None:
    """A note when the surface-Dice tolerance is below the largest voxel spacing (a one-slice difference always
    misses) or below the smallest: distances between voxel centres (corners, in the surfel convention) are then 0
    or at least that spacing, so surface Dice counts only the surface elements both observers share (the
    demo study's 2 mm on a 3.5 mm grid: medians 0.26 / 0.64, at 3.5 mm 0.56 / 0.96, found by an independent check)."""
    smallest, largest = float(min(spacingMm)), float(max(spacingMm))
    points = "voxel corners" if surface == "surfel" else "voxel centres"
    if toleranceMm >= largest:
        return None
    if toleranceMm >= smallest:
        # an independent check: at 2 mm on 2.5-3 mm slices a surface one slice off in z always missed, without a word
        return (f"the surface-Dice tolerance {toleranceMm:g} mm is below the largest voxel spacing {largest:g} mm (the "
                f"slice spacing, as a rule): a surface one voxel off along that axis is outside the tolerance, so "
                "disagreement across slices counts in full, within a slice only beyond the tolerance. "
                + ("Surface distances are measured between voxel centres; the surfel convention (--surface surfel, "
                   "as DeepMind's surface-distance), whose mesh runs through the voxel faces and whose elements lie on "
                   "the voxel corners, gives higher values on such grids" if surface != "surfel" else
                   "Surfels lie on the voxel corners: across slices they too are a whole slice apart"))
    return (f"the surface-Dice tolerance {toleranceMm:g} mm is below the smallest voxel spacing {smallest:g} mm: "
            f"distances between {points} are 0 or at least {smallest:g} mm, so surface Dice here counts only "
            f"the surface elements the observers share exactly (the same for any tolerance below {smallest:g} mm); "
            f"give a tolerance of at least {smallest:g} mm for a tolerance in Nikolov's sense")


_DEFINITIONS = {
    "surface": "object voxels with at least one 6-connected background neighbour (outside the image is background)",
    "distances": "between voxel centres, in mm with the grid spacing",
    "hausdorffMm": "max of the two directed maximum surface distances",
    "hdPercentileMm": "percentile of the directed surface distances combined by hdConvention (maxDirected: max of "
                      "the two directed percentiles; meanDirected: their mean; pooled: percentile of both "
                      "directions pooled); numpy linear interpolation",
    "msdMm": {"pooled": "mean of the surface distances of both directions pooled (each surface voxel counts once)",
              "meanDirected": "mean of the two directed mean surface distances"},
    "surfaceDice": "fraction of both surfaces within toleranceMm of the other, each surface voxel weighted by the "
                   "area of its exposed faces (Nikolov et al. 2021)",
    "surfaceAreaMm2": "area of the exposed voxel faces (the staircase surface)",
    "cigen": "sum over pairs of intersections / sum over pairs of unions (Kouwenhoven et al. 2009)",
    "volumeCv": "sample standard deviation / mean of the observers' volumes",
    "centroidShiftMm": "distance between the centres of mass",
}
_SURFEL_DEFINITIONS = {
    "surface": "surfels (surface elements): the voxel corners the marching-cubes mesh of the voxel centres passes, "
               "each with the mesh area in the cell around it (Nikolov et al. 2021, as DeepMind's surface-distance; "
               "outside the image is background)",
    "distances": "between surfels (voxel corners), in mm with the grid spacing; percentiles and means weighted by "
                 "the surfels' areas",
    "hdPercentileMm": "area-weighted percentile of the directed surface distances (the smallest distance within "
                      "which that share of the surface area lies) combined by hdConvention (maxDirected: max of the "
                      "two directed percentiles; meanDirected: their mean; pooled: both directions pooled)",
    "msdMm": {"pooled": "area-weighted mean of the surface distances of both directions pooled",
              "meanDirected": "mean of the two directed area-weighted mean surface distances (as DeepMind's "
                              "average surface distance)"},
    "surfaceDice": "fraction of both surfaces' mesh area within toleranceMm of the other (Nikolov et al. 2021)",
    "surfaceAreaMm2": "area of the marching-cubes mesh (about 7 % above a sphere's area at fine voxels, "
                      "where the exposed voxel faces overstate a sphere's by 50 %)",
}


def definitions(surface: str = "voxel", msdConvention: str = "pooled") -> dict:
    """The definitions a report states for its numbers, under the surface and MSD conventions it used."""
    out = dict(_DEFINITIONS)
    if surface == "surfel":
        out.update(_SURFEL_DEFINITIONS)
    out["msdMm"] = out["msdMm"][msdConvention]
    return out



def _number(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{what} must be a finite number, got {value!r}")
    return number


def _check(toleranceMm, hdPercentile, hdConvention, cropMarginMm, surface: str = "voxel",
           msdConvention: str = "pooled") -> tuple[float, float, float]:
    requireConvention(surface, SURFACE_CONVENTIONS, "surface convention")
    requireConvention(msdConvention, MSD_CONVENTIONS, "mean-surface-distance convention")
    toleranceMm = _number(toleranceMm, "the surface-Dice tolerance (mm)")
    if toleranceMm < 0:
        raise InputError(f"the surface-Dice tolerance must be a distance >= 0 mm, got {toleranceMm:g}")
    hdPercentile = _number(hdPercentile, "the Hausdorff percentile")
    if not 0.0 <= hdPercentile <= 100.0:
        raise InputError(f"the Hausdorff percentile must be between 0 and 100, got {hdPercentile:g}")
    requireConvention(hdConvention, HD_CONVENTIONS, "Hausdorff percentile convention")
    cropMarginMm = _number(cropMarginMm, "the crop margin (mm)")
    if cropMarginMm < 0:
        raise InputError(f"the crop margin must be >= 0 mm, got {cropMarginMm:g}")
    return toleranceMm, hdPercentile, cropMarginMm


def _groupStatistics(observerSet: ObserverSet, counts: np.ndarray, voxelCounts, voxelVolumeCc) -> tuple:
    n = len(observerSet)
    reasons = {}
    if n < 2:
        reasons["cigen"] = "fewer than two observers: CIgen needs at least one pair"
        reasons["volumeCv"] = "fewer than two observers: a sample standard deviation needs two volumes"
        return None, None, reasons
    c = counts.astype(np.int64)
    sumIntersections = int((c * (c - 1) // 2).sum())
    sumUnions = (n - 1) * int(sum(voxelCounts)) - sumIntersections
    cigen = None
    if sumUnions > 0:
        cigen = sumIntersections / sumUnions
    else:
        reasons["cigen"] = "all masks are empty: CIgen is undefined"
    volumes = np.asarray(voxelCounts, dtype=float) * voxelVolumeCc
    volumeCv = None
    if volumes.mean() > 0:
        volumeCv = float(volumes.std(ddof=1) / volumes.mean())
    else:
        reasons["volumeCv"] = "all masks are empty: the coefficient of variation is undefined"
    return cigen, volumeCv, reasons


def _pairMetrics(a: ObserverSurface, b: ObserverSurface, spacing, options, plugins) -> PairResult:
    context = PairContext(a, b, spacing, **options)
    values, reasons = computePairMetrics(context, plugins)
    return PairResult(a.name, b.name, values, reasons)


def analyzeObservers(masks, geometry: ImageGeometry | None = None, reference: str | None = "staple",
                     toleranceMm: float = DEFAULT_SURFACE_DICE_TOLERANCE_MM, hdPercentile: float = 95.0,
                     hdConvention: str = "maxDirected",
                     progress=None, cropMarginMm: float = DEFAULT_CROP_MARGIN_MM,
                     targetGeometry: ImageGeometry | None = None, metrics=None,
                     distanceBackend: str = "maurer", surface: str = "voxel",
                     msdConvention: str = "pooled") -> IovResult:
    """Interobserver variation of several observers' masks of one structure.

    Parameters
    ----------
    masks : ``dict[name, mask]`` on ``geometry``, or ``dict[name, (mask, geometry)]`` / list of
        ``(name, mask, geometry)`` on different grids (resampled with nearest neighbour, reported in ``grid``).
    geometry : grid of the masks (LPS mm; arrays indexed k, j, i).
    reference : ``"staple"`` (default), ``"majority"``, an observer name, or None (no consensus comparison).
    toleranceMm : surface-Dice tolerance τ (mm).
    hdPercentile : percentile of the robust Hausdorff distance (95 → HD95; the LRRC study used 98).
    hdConvention : ``"maxDirected"`` (default), ``"meanDirected"`` (Plastimatch/SlicerRT) or ``"pooled"`` (medpy).
    progress : ``progress(fraction, message)``, may raise ``ProcessingCancelled``.
    cropMarginMm : margin around the union bounding box for STAPLE (>= 1 voxel); fixes the grid extent it sees.
    targetGeometry : common grid when masks come on different grids (default: the first observer's grid).
    metrics : list of metric plugins (default: all registered, see ``registry.py``).
    distanceBackend : ``"maurer"`` (SimpleITK, default, faster) or ``"scipy"`` (reference); both exact.
    surface : ``"voxel"`` (default: surface voxels, distances between voxel centres) or ``"surfel"`` (Nikolov et
        al.'s area-weighted surface elements on the voxel corners, as DeepMind's surface-distance; ``surface.py``).
    msdConvention : ``"pooled"`` (default, medpy's assd) or ``"meanDirected"`` (DeepMind, SlicerRT).

    Returns
    -------
    IovResult, whose ``toDict()`` is the JSON report.
    """
    progress = progress or noProgress
    toleranceMm, hdPercentile, cropMarginMm = _check(toleranceMm, hdPercentile, hdConvention, cropMarginMm, surface,
                                                     msdConvention)
    progress(0.0, "checking observers")
    observerSet = makeObserverSet(masks, geometry, targetGeometry)
    names = observerSet.names
    if reference is not None and reference not in ("staple", "majority") and reference not in names:
        raise InputError(f"reference {reference!r} is neither 'staple', 'majority' nor one of the observers "
                         f"({', '.join(names)})")
    geom = observerSet.geometry
    spacing = geom.spacingMm
    unionBox = unionCropBox(observerSet.masks, geom.shape, (0, 0, 0))
    metricRule = "union bounding box of all observers + 1 voxel, clipped to the image (metrics)"
    crop = None if unionBox is None else growCropBox(unionBox, (1, 1, 1), geom.shape, metricRule)
    if crop is None:
        crop = CropBox((0, 0, 0), (1, 1, 1), (0, 0, 0), "all observers' masks are empty: a one-voxel placeholder")
    margin = marginVoxelsFor(spacing, cropMarginMm)
    stapleRule = (f"union bounding box of all observers + {cropMarginMm:g} mm margin "
                  f"({margin[2]}, {margin[1]}, {margin[0]} voxels along i, j, k), background beyond the observers' "
                  "grid")

    surfaces: list[ObserverSurface] = []
    n = len(names)
    for index, (name, mask) in enumerate(zip(names, observerSet.masks, strict=True)):
        progress(0.05 + 0.5 * index / n, f"surface and distance map of {name}")
        surfaces.append(prepareSurface(name, mask[crop.slices], spacing, crop.start,
                                       distanceBackend=distanceBackend, convention=surface))

    plugins = list(metrics) if metrics is not None else registeredMetrics()
    options = {"toleranceMm": toleranceMm, "hdPercentile": hdPercentile, "hdConvention": hdConvention,
               "msdConvention": msdConvention}
    pairs = []
    numberOfPairs = max(1, n * (n - 1) // 2)
    for i in range(n):
        for j in range(i + 1, n):
            progress(0.55 + 0.25 * len(pairs) / numberOfPairs, f"comparing {names[i]} and {names[j]}")
            pairs.append(_pairMetrics(surfaces[i], surfaces[j], spacing, options, plugins))

    progress(0.8, "agreement map")
    voxelVolumeCc = geom.voxelVolumeCc
    counts = consensusLib.agreementMap(s.mask for s in surfaces)
    cigen, volumeCv, reasons = _groupStatistics(observerSet, counts, [s.voxelCount for s in surfaces],
                                                voxelVolumeCc)
    agreement = consensusLib.agreementSummary(counts, n, voxelVolumeCc)

    consensusDict, consensusMask = None, None
    if reference is None:
        reasons["consensus"] = "no reference was requested"
    else:
        progress(0.85, f"consensus ({reference})")
        stapleCrop, staplePadding = None, None
        if reference == "staple" and unionBox is not None:
            stapleCrop = growCropBox(unionBox, margin, geom.shape, stapleRule)
            # where the margin reaches beyond the observers' grid, background (what lies outside the image): STAPLE
            # sees the same margin whether the files hold the whole image or were exported cropped close to the
            # target (a review: cropped files changed its consensus and the observers' estimates)
            staplePadding = tuple((int(m) - (a - b), int(m) - (c - d)) for a, b, c, d, m in zip(
                unionBox.start, stapleCrop.start, stapleCrop.stop, unionBox.stop, margin, strict=True))
        consensusDict, consensusMask = _consensus(reference, surfaces, counts, crop, stapleCrop, observerSet,
                                                  spacing, voxelVolumeCc, options, plugins, distanceBackend, surface,
                                                  staplePadding)

    observers = tuple({"name": s.name, "volumeCc": s.voxelCount * voxelVolumeCc, "voxelCount": s.voxelCount,
                       "surfaceAreaMm2": s.surfaceAreaMm2} for s in surfaces)
    grid = dict(observerSet.gridReport)
    grid["crop"] = crop.toDict()
    progress(1.0, "done")
    logger.info("interobserver analysis: %d observers, %d pairs, crop %s", n, len(pairs), crop.shape)
    note = surfaceDiceToleranceNote(toleranceMm, spacing, surface)
    notes = tuple(observerSet.gridReport.get("notes", ())) + ((note,) if note else ()) + tuple(
        _consensusNotes(consensusDict, observers))
    return IovResult(observers, tuple(pairs), cigen, volumeCv, reasons, toleranceMm, hdPercentile, hdConvention,
                     consensusDict, agreement, grid, geom, crop, counts, consensusMask, notes=notes,
                     surfaceConvention=surface, msdConvention=msdConvention)


def _consensusNotes(consensus: dict | None, observers) -> list[str]:
    """What a reader of the consensus must know (an independent check): STAPLE stopped by its iteration limit rather
    than converged, or an empty consensus of observers who did delineate (e.g. three that do not overlap)."""
    if not consensus:
        return []
    notes = []
    if consensus.get("method") == "staple" and consensus.get("iterations", 0) >= consensusLib.STAPLE_MAX_ITERATIONS:
        notes.append(f"STAPLE stopped at its limit of {consensusLib.STAPLE_MAX_ITERATIONS} iterations without "
                     "converging: its consensus and the observers' sensitivity and specificity are approximate")
    if consensus.get("volumeCc") == 0 and any(o["volumeCc"] > 0 for o in observers):
        notes.append(f"the {consensus.get('method')} consensus is empty although the observers delineated: no voxel "
                     "has the agreement it needs (observers that do not overlap); consensus metrics are undefined")
    return notes


def _consensus(reference, surfaces, counts, crop, stapleCrop, observerSet, spacing, voxelVolumeCc, options, plugins,
               distanceBackend, surfaceConvention="voxel", staplePadding=None):
    n = len(surfaces)
    extra: dict = {}
    stapleResult = None
    consensusCrop = crop
    if reference == "staple":
        consensusCrop = stapleCrop if stapleCrop is not None else crop
        padding = staplePadding if stapleCrop is not None and staplePadding is not None else ((0, 0),) * 3
        stapleResult = consensusLib.staple([np.pad(m[consensusCrop.slices], padding) for m in observerSet.masks],
                                           spacing)
        # back onto the metric crop (which holds every observer's voxels and lies inside the STAPLE crop, both
        # being the union box grown by >= 1 voxel); STAPLE voxels outside it are counted and reported
        inner = tuple(slice(a - b + p[0], c - b + p[0])
                      for a, c, b, p in zip(crop.start, crop.stop, consensusCrop.start, padding, strict=True))
        mask = np.ascontiguousarray(stapleResult.mask[inner])
        outside = int(np.count_nonzero(stapleResult.mask)) - int(np.count_nonzero(mask))
        method = "STAPLE (SimpleITK STAPLEImageFilter, Warfield 2004), consensus = posterior probability >= 0.5"
        extra = {"iterations": stapleResult.iterations, "threshold": stapleResult.threshold,
                 "consensusVoxelsOutsideObservers": outside}
    elif reference == "majority":
        mask = consensusLib.majorityVote(counts, n)
        method = "majority vote: voxels included by more than half of the observers (ties excluded)"
    else:
        mask = surfaces[[s.name for s in surfaces].index(reference)].mask
        method = f"observer {reference!r} as the reference"
    reference_ = prepareSurface(f"consensus ({reference})", mask, spacing, crop.start,
                                distanceBackend=distanceBackend, convention=surfaceConvention)
    negative = ~mask
    negativeCount = int(np.count_nonzero(negative))
    perObserver = []
    for index, surface in enumerate(surfaces):
        values, reasons = computePairMetrics(PairContext(surface, reference_, spacing, **options), plugins)
        tp = int(np.count_nonzero(surface.mask & mask))
        tn = int(np.count_nonzero(~surface.mask & negative))
        entry = {"name": surface.name}
        if reference_.voxelCount:
            entry["sensitivity"] = tp / reference_.voxelCount
        else:
            entry["sensitivity"] = None
            reasons["sensitivity"] = "the consensus is empty"
        if negativeCount:
            entry["specificity"] = tn / negativeCount
        else:
            entry["specificity"] = None
            reasons["specificity"] = "the consensus fills the whole crop: no true negatives to count"
        if stapleResult is not None:
            entry["stapleSensitivity"] = stapleResult.sensitivity[index]
            entry["stapleSpecificity"] = stapleResult.specificity[index]
        pair = PairResult(surface.name, reference_.name, values, reasons).toDict()
        pair.pop("a"), pair.pop("b")
        entry.update(pair)
        perObserver.append(entry)
    out = {
        "method": reference if reference in ("staple", "majority") else "observer",
        "reference": reference,
        "description": method,
        "cropRule": consensusCrop.rule,
        "crop": consensusCrop.toDict(),
        "volumeCc": reference_.voxelCount * voxelVolumeCc,
        "specificityNote": "specificity counts true negatives inside the metric crop (union bounding box + 1 voxel) "
                           "only, so it depends on the crop; STAPLE's own estimates refer to the STAPLE crop",
        "observers": perObserver,
        **extra,
    }
    return out, mask
