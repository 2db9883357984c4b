"""Dose-volume histograms on any dose (physical or EQD2) for a structure mask on a grid.

Conventions (REFERENCE §5):

- cumulative DVH: ``V(D)`` = volume receiving a dose ≥ D, in cc and in % of the structure (0–100);
- the mask may be boolean or hold fractional inside weights in [0, 1] (boundary voxels weighted by the fraction of
  the voxel inside the structure); a voxel then contributes ``weight × voxel volume``;
- D at a volume (``D2cc``, ``D95%``) uses exact order statistics: voxel doses are sorted from hottest to coldest and
  each voxel's dose is placed at the middle of the volume interval it occupies in that order; between those points
  the dose is interpolated linearly (so for a smooth dose field, ``D(v)`` is the dose that the hottest ``v`` cc
  receive at least, without binning). Hottest-voxel and coldest-voxel halves are clamped to Dmax / Dmin;
- D at a volume larger than the structure is undefined: ``None`` with a reason (D2cc of a 1 cc lens);
- sub-voxel sampling: pass a mask on a finer grid (``maskGeometry``, e.g. :func:`supersampledGeometry`) and the dose
  is interpolated (trilinear) at the fine voxel centres, or pass fractional weights from
  :func:`fractionalMaskFromFine` on the dose grid. Both are explicit: no resampling happens silently.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .geometry import ImageGeometry

__all__ = [
    "DvhResult",
    "MetricValue",
    "computeDvh",
    "supersampledGeometry",
    "fractionalMaskFromFine",
    "sampleDoseAtPoints",
    "resampleDoseLinear",
    "parseDvhMetric",
    "DvhMetric",
    "registerDvhMetric",
    "DVH_METRIC_PLUGINS",
]

DEFAULT_BIN_WIDTH_GY = 0.1
MAX_DVH_BINS = 10_000_000  # a DVH curve's samples (0.01 Gy bins reach 100 000 Gy)

# Metrics a study adds without editing the core (SegmentStatistics-style registry, STYLE §11):
# name (case-insensitive) -> function(DvhResult) -> MetricValue. Consulted by DvhResult.metric before the built-ins.
DVH_METRIC_PLUGINS: dict = {}


def registerDvhMetric(name: str, function) -> None:
    """Register ``function(dvh) -> MetricValue`` (or a float / None) under ``name`` for :meth:`DvhResult.metric`."""
    if not callable(function):
        raise InputError(f"DVH metric plugin {name!r} must be callable")
    DVH_METRIC_PLUGINS[str(name).strip().lower()] = function
_RELATIVE_VOLUME_TOLERANCE = 1e-9


@dataclass(frozen=True)
class MetricValue:
    """A DVH metric: ``value`` (None when undefined) with the ``reason`` it is undefined."""

    value: float | None
    reason: str = ""

    @property
    def isDefined(self) -> bool:
        return self.value is not None


@dataclass(frozen=True, eq=False)
class DvhResult:
    """Sorted voxel doses of one structure with their volumes; every metric is computed from these exactly.

    Attributes
    ----------
    name : structure name.
    dosesGy : voxel doses sorted from hottest to coldest (float64).
    voxelVolumesCc : the volume each of those voxels contributes (weight × voxel volume), same order.
    """

    name: str
    dosesGy: np.ndarray
    voxelVolumesCc: np.ndarray
    doseLabel: str = "dose"
    _cumulativeCc: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        doses = np.asarray(self.dosesGy, dtype=np.float64)
        volumes = np.asarray(self.voxelVolumesCc, dtype=np.float64)
        if doses.shape != volumes.shape or doses.ndim != 1:
            raise InputError("DVH: doses and voxel volumes must be 1D arrays of one length")
        if not np.all(np.isfinite(doses)) or not np.all(np.isfinite(volumes)):
            # NaN compares false: the sort below would be skipped and Dmax read 5 Gy of [5, NaN, 10, 2]
            raise InputError("DVH: doses and voxel volumes must be finite numbers (leave voxels of unknown dose out, "
                             "as pipeline.knownDvh does, and say how much of the structure they are)")
        if doses.size > 1 and np.any(np.diff(doses) > 0):
            order = np.argsort(-doses, kind="stable")
            doses, volumes = doses[order], volumes[order]
        object.__setattr__(self, "dosesGy", doses)
        object.__setattr__(self, "voxelVolumesCc", volumes)
        object.__setattr__(self, "_cumulativeCc", np.cumsum(volumes))

    # ---- basic statistics -----------------------------------------------------------------------------------
    @property
    def isEmpty(self) -> bool:
        return self.dosesGy.size == 0

    @property
    def volumeCc(self) -> float:
        return float(self._cumulativeCc[-1]) if self.dosesGy.size else 0.0

    @property
    def dminGy(self) -> float | None:
        return float(self.dosesGy[-1]) if self.dosesGy.size else None

    @property
    def dmaxGy(self) -> float | None:
        return float(self.dosesGy[0]) if self.dosesGy.size else None

    @property
    def dmeanGy(self) -> float | None:
        if not self.dosesGy.size:
            return None
        return float(np.dot(self.dosesGy, self.voxelVolumesCc) / self.volumeCc)

    # ---- D at volume ----------------------------------------------------------------------------------------
    def doseAtVolume(self, cc: float | None = None, percent: float | None = None) -> MetricValue:
        """Dose (Gy) such that the hottest ``cc`` (or ``percent`` %) of the structure receives at least it."""
        if (cc is None) == (percent is None):
            raise InputError("give exactly one of a volume in cc or a volume in percent")
        if self.isEmpty:
            return MetricValue(None, f"structure {self.name!r} is empty")
        total = self.volumeCc
        if percent is not None:
            percent = float(percent)
            if not 0 <= percent <= 100:
                raise InputError(f"a volume percentage must lie between 0 and 100, got {percent}")
            volume = total * percent / 100.0
        else:
            volume = float(cc)
            if not math.isfinite(volume) or volume < 0:
                raise InputError(f"a volume must be ≥ 0 cc, got {cc!r}")
            if volume > total * (1 + _RELATIVE_VOLUME_TOLERANCE):
                return MetricValue(None, f"D{volume:g}cc is undefined: structure {self.name!r} is only "
                                         f"{total:.3f} cc")
        midpoints = self._cumulativeCc - 0.5 * self.voxelVolumesCc
        return MetricValue(float(np.interp(volume, midpoints, self.dosesGy)))

    def doseAtVolumeGy(self, cc: float | None = None, percent: float | None = None) -> float | None:
        """:meth:`doseAtVolume` as a number (None when undefined)."""
        return self.doseAtVolume(cc=cc, percent=percent).value

    # ---- V at dose ------------------------------------------------------------------------------------------
    def volumeAtDose(self, doseGy: float) -> tuple[float, float]:
        """Volume receiving ≥ ``doseGy``: (cc, % of the structure). Empty structure: (0, nan)."""
        doseGy = float(doseGy)
        count = int(np.searchsorted(-self.dosesGy, -doseGy, side="right"))
        cc = float(self._cumulativeCc[count - 1]) if count else 0.0
        total = self.volumeCc
        return cc, (100.0 * cc / total if total > 0 else float("nan"))

    def volumeBelowDose(self, doseGy: float) -> tuple[float, float]:
        """Volume receiving < ``doseGy`` (the "critical volume" spared): (cc, %)."""
        cc, percent = self.volumeAtDose(doseGy)
        total = self.volumeCc
        return total - cc, (100.0 - percent if total > 0 else float("nan"))

    # ---- curve ----------------------------------------------------------------------------------------------
    def curve(self, binWidthGy: float = DEFAULT_BIN_WIDTH_GY, maxDoseGy: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative DVH sampled every ``binWidthGy`` from 0: (doseGy, volumePercent of the structure ≥ dose)."""
        binWidthGy = float(binWidthGy)
        if not binWidthGy > 0:
            raise InputError(f"the DVH bin width must be > 0 Gy, got {binWidthGy}")
        top = maxDoseGy if maxDoseGy is not None else (self.dmaxGy or 0.0)
        if not math.isfinite(top / binWidthGy) or top / binWidthGy > MAX_DVH_BINS:
            # an adversarial review: a bin width of 1e-9 Gy, or a dose of 1e30 Gy, asked for hundreds of GiB
            raise InputError(f"the DVH of {self.name!r} would need {top / binWidthGy:.3g} bins of {binWidthGy:g} Gy up "
                             f"to {top:.4g} Gy (at most {MAX_DVH_BINS:,}): give a wider bin, or check the dose")
        count = int(math.floor(top / binWidthGy)) + 2
        doses = np.arange(count, dtype=np.float64) * binWidthGy
        if self.isEmpty:
            return doses, np.full(count, np.nan)
        ascending = self.dosesGy[::-1]
        # volume with dose ≥ D = total − volume of voxels with dose < D
        below = np.searchsorted(ascending, doses, side="left")
        volumeBelow = np.concatenate([[0.0], np.cumsum(self.voxelVolumesCc[::-1])])[below]
        return doses, 100.0 * (self.volumeCc - volumeBelow) / self.volumeCc

    def metric(self, metric: str | DvhMetric) -> MetricValue:
        """Evaluate a metric string ("D2cc", "D0.03cc", "D95%", "Dmax", "Dmean", "Dmin", "V40Gy[%]", "V19Gy[cc]",
        "CV15Gy[cc]" = volume below 15 Gy); the value is in Gy, %, or cc accordingly."""
        if isinstance(metric, str) and metric.strip().lower() in DVH_METRIC_PLUGINS:
            if self.isEmpty:
                return MetricValue(None, f"structure {self.name!r} is empty")
            value = DVH_METRIC_PLUGINS[metric.strip().lower()](self)
            return value if isinstance(value, MetricValue) else MetricValue(None if value is None else float(value))
        parsed = parseDvhMetric(metric) if isinstance(metric, str) else metric
        if self.isEmpty:
            return MetricValue(None, f"structure {self.name!r} is empty")
        if parsed.kind == "dmax":
            return MetricValue(self.dmaxGy)
        if parsed.kind == "dmin":
            return MetricValue(self.dminGy)
        if parsed.kind == "dmean":
            return MetricValue(self.dmeanGy)
        if parsed.kind == "dose-at-volume":
            if parsed.volumeUnit == "cc":
                return self.doseAtVolume(cc=parsed.parameter)
            return self.doseAtVolume(percent=parsed.parameter)
        if parsed.kind == "volume-at-dose":
            cc, percent = self.volumeAtDose(parsed.parameter)
            return MetricValue(cc if parsed.volumeUnit == "cc" else percent)
        cc, percent = self.volumeBelowDose(parsed.parameter)
        return MetricValue(cc if parsed.volumeUnit == "cc" else percent)

    def toDict(self, binWidthGy: float = DEFAULT_BIN_WIDTH_GY) -> dict:
        """Summary + curve, JSON-ready. Undefined metrics are None, with their reason in ``undefined``."""
        undefined = {}

        def value(key, metricValue: MetricValue):
            if metricValue.value is None:
                undefined[key] = metricValue.reason
            return metricValue.value

        doses, volumes = self.curve(binWidthGy)
        result = {
            "name": self.name,
            "doseLabel": self.doseLabel,
            "volumeCc": self.volumeCc,
            "dminGy": self.dminGy,
            "dmaxGy": self.dmaxGy,
            "dmeanGy": self.dmeanGy,
            "d0_03ccGy": value("d0_03ccGy", self.doseAtVolume(cc=0.03) if not self.isEmpty else
                               MetricValue(None, "empty structure")),
            "d0_1ccGy": value("d0_1ccGy", self.doseAtVolume(cc=0.1) if not self.isEmpty else
                              MetricValue(None, "empty structure")),
            "d2ccGy": value("d2ccGy", self.doseAtVolume(cc=2.0) if not self.isEmpty else
                            MetricValue(None, "empty structure")),
            "d95PercentGy": value("d95PercentGy", self.doseAtVolume(percent=95.0) if not self.isEmpty else
                                  MetricValue(None, "empty structure")),
            "dvh": {"binWidthGy": float(binWidthGy), "doseGy": [round(float(d), 6) for d in doses],
                    "volumePercent": [None if not np.isfinite(v) else round(float(v), 6) for v in volumes]},
        }
        if undefined:
            result["undefined"] = undefined
        return result


# ---- metric strings -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DvhMetric:
    """A parsed metric: kind in dmax/dmin/dmean/dose-at-volume/volume-at-dose/volume-below-dose."""

    text: str
    kind: str
    parameter: float | None = None
    volumeUnit: str | None = None  # "cc" or "%"

    @property
    def resultUnit(self) -> str:
        if self.kind in ("dmax", "dmin", "dmean", "dose-at-volume"):
            return "Gy"
        return self.volumeUnit or ""


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_D_AT_V = re.compile(rf"^D{_NUMBER}\s*(cc|cm3|%)$", re.IGNORECASE)
_V_AT_D = re.compile(rf"^(V|CV){_NUMBER}\s*(?:Gy)?\s*(?:\[\s*(cc|cm3|%)\s*\])?$", re.IGNORECASE)


def parseDvhMetric(text: str) -> DvhMetric:
    """Parse "Dmax", "Dmean", "Dmin", "D0.03cc", "D2cc", "D95%", "V40Gy[%]", "V19Gy[cc]", "CV15Gy[cc]"."""
    compact = str(text).strip().replace(" ", "")
    lower = compact.lower()
    if lower in ("dmax", "max"):
        return DvhMetric(compact, "dmax")
    if lower in ("dmin", "min"):
        return DvhMetric(compact, "dmin")
    if lower in ("dmean", "mean"):
        return DvhMetric(compact, "dmean")
    match = _D_AT_V.match(compact)
    if match:
        unit = "%" if match.group(2) == "%" else "cc"
        if unit == "%" and not 0 <= float(match.group(1)) <= 100:
            raise InputError(f"DVH metric {text!r}: the volume percentage must lie between 0 and 100")
        return DvhMetric(compact, "dose-at-volume", float(match.group(1)), unit)
    match = _V_AT_D.match(compact)
    if match:
        unit = (match.group(3) or "%").lower()
        unit = "cc" if unit in ("cc", "cm3") else "%"
        kind = "volume-at-dose" if match.group(1).upper() == "V" else "volume-below-dose"
        return DvhMetric(compact, kind, float(match.group(2)), unit)
    raise InputError(f"unknown DVH metric {text!r} (examples: Dmax, Dmean, D2cc, D0.03cc, D95%, V40Gy[%], "
                     "V19Gy[cc], CV15Gy[cc])")


# ---- sampling -----------------------------------------------------------------------------------------------
def supersampledGeometry(geometry: ImageGeometry, factorXyz) -> ImageGeometry:
    """A finer grid splitting every voxel of ``geometry`` into ``fi × fj × fk`` sub-voxels (same extent)."""
    factors = np.broadcast_to(np.asarray(factorXyz, dtype=int), (3,))
    if np.any(factors < 1):
        raise InputError(f"supersampling factors must be ≥ 1, got {factorXyz!r}")
    spacing = np.array(geometry.spacingMm) / factors
    offset = (0.5 / factors - 0.5) * np.array(geometry.spacingMm)
    origin = np.array(geometry.originMm) + geometry.directionMatrix @ offset
    size = np.array(geometry.sizeXyz) * factors
    return ImageGeometry(tuple(int(s) for s in size), tuple(spacing), tuple(origin), geometry.direction)


def fractionalMaskFromFine(fineMask: np.ndarray, factorXyz) -> np.ndarray:
    """Inside fraction per coarse voxel (float32) of a mask on :func:`supersampledGeometry`'s grid."""
    fi, fj, fk = (int(f) for f in np.broadcast_to(np.asarray(factorXyz, dtype=int), (3,)))
    fine = np.asarray(fineMask)
    nk, nj, ni = fine.shape
    if nk % fk or nj % fj or ni % fi:
        raise InputError(f"fine mask shape {fine.shape} is not a multiple of the factors {(fi, fj, fk)}")
    blocks = fine.astype(np.float32).reshape(nk // fk, fk, nj // fj, fj, ni // fi, fi)
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def sampleDoseAtPoints(doseGy: np.ndarray, geometry: ImageGeometry, pointsLps: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of ``doseGy`` at LPS points (N, 3); points beyond the outer voxel centres take the
    nearest edge value (within half a voxel of the grid) and NaN further out."""
    from scipy import ndimage

    index = geometry.lpsToIndex(pointsLps)  # (N, 3) as i, j, k
    coordinates = index[:, ::-1].T  # k, j, i
    values = ndimage.map_coordinates(np.asarray(doseGy, dtype=np.float64), coordinates, order=1, mode="nearest")
    shape = np.array(geometry.shape)[:, None]
    outside = np.any((coordinates < -0.5 - 1e-6) | (coordinates > shape - 0.5 + 1e-6), axis=0)
    values[outside] = np.nan
    return values


def resampleDoseLinear(doseGy: np.ndarray, geometry: ImageGeometry, targetGeometry: ImageGeometry) -> np.ndarray:
    """The dose interpolated (trilinear) at every voxel centre of ``targetGeometry`` (float32; NaN outside)."""
    points = targetGeometry.voxelCentresLps().reshape(-1, 3)
    return sampleDoseAtPoints(doseGy, geometry, points).reshape(targetGeometry.shape).astype(np.float32)


def _maskWeights(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind not in "fiu":
        raise InputError(f"structure {name!r}: the mask must be boolean or fractional weights, got {mask.dtype}")
    if mask.size and (np.nanmin(mask) < 0 or np.nanmax(mask) > 1 + 1e-6 or np.any(np.isnan(mask))):
        raise InputError(f"structure {name!r}: fractional mask weights must lie between 0 and 1")
    return mask


def computeDvh(doseGy: np.ndarray, mask: np.ndarray, geometry: ImageGeometry, name: str = "",
               maskGeometry: ImageGeometry | None = None, doseLabel: str = "dose") -> DvhResult:
    """DVH of ``doseGy`` inside ``mask``.

    Parameters
    ----------
    doseGy : dose (physical or EQD2, Gy) on ``geometry``'s grid.
    mask : boolean mask or fractional inside weights in [0, 1]; on ``geometry`` unless ``maskGeometry`` is given.
    geometry : the dose grid.
    name : structure name (reported).
    maskGeometry : grid of the mask when it is sampled finer than the dose (sub-voxel sampling, REFERENCE §5): the
        dose is interpolated trilinearly at the mask's voxel centres.
    doseLabel : what the dose is ("dose", "EQD2_3", ...), carried into :meth:`DvhResult.toDict`.

    NaN dose inside the structure (e.g. outside a mapped dose's coverage) is refused: the DVH would be wrong.
    """
    doseGy = np.asarray(doseGy)
    if doseGy.shape != geometry.shape:
        raise InputError(f"the dose array shape {doseGy.shape} does not match its geometry {geometry.describe()}")
    weights = _maskWeights(mask, name)
    if maskGeometry is None or maskGeometry.sameGridAs(geometry):
        if weights.shape != geometry.shape:
            raise InputError(f"structure {name!r}: mask shape {weights.shape} differs from the dose grid "
                             f"{geometry.shape}; resample the structure onto the dose grid first")
        selected = weights > 0
        doses = doseGy[selected].astype(np.float64)
        volumes = (np.ones(doses.shape) if weights.dtype == bool else weights[selected].astype(np.float64))
        volumes = volumes * geometry.voxelVolumeCc
    else:
        if weights.shape != maskGeometry.shape:
            raise InputError(f"structure {name!r}: mask shape {weights.shape} does not match its geometry "
                             f"{maskGeometry.describe()}")
        selected = np.nonzero(weights > 0)
        ijk = np.stack([selected[2], selected[1], selected[0]], axis=-1).astype(np.float64)
        doses = sampleDoseAtPoints(doseGy, geometry, maskGeometry.indexToLps(ijk))
        volumes = (np.ones(doses.shape) if weights.dtype == bool else weights[selected].astype(np.float64))
        volumes = volumes * maskGeometry.voxelVolumeCc
    if doses.size and np.any(np.isnan(doses)):
        raise InputError(f"structure {name!r} has {int(np.count_nonzero(np.isnan(doses)))} voxels without dose "
                         "(outside the dose grid, or NaN in it: unknown dose); its DVH would be wrong")
    return DvhResult(name, doses, volumes, doseLabel)
