"""Interobserver metrics as plugins (SegmentStatistics-style registry, STYLE §11).

Contract of a metric plugin (:class:`IovMetricPlugin`):

- ``name`` (str): unique plugin name, e.g. ``"overlap"``.
- ``keys`` (tuple of str): the result keys it produces, e.g. ``("dice", "jaccard")``. Keys must be unique
  across registered plugins (a second plugin cannot silently overwrite another's numbers).
- ``units`` (dict key -> unit string, optional) for reports.
- ``compute(context: PairContext) -> dict``: returns a value for every key in ``keys``. An undefined value is
  ``None`` (for ratios) or ``float("nan")`` (for distances) and its reason goes into the reserved key
  ``"_reasons"`` as ``{key: sentence}``. Plugins must not modify ``context.a`` / ``context.b``; they may store
  intermediate arrays in ``context.cache`` for other plugins of the same pair.

A study adds its own metric without editing the core::

    class VolumeRatio(IovMetricPlugin):
        name = "volumeRatio"
        keys = ("volumeRatio",)
        def compute(self, context):
            return {"volumeRatio": context.b.voxelCount / context.a.voxelCount}

    registerMetric(VolumeRatio())
    ...
    unregisterMetric("volumeRatio")
"""

from __future__ import annotations

import math

from .metrics import (
    PairContext,
    centroidShiftMm,
    combineDirected,
    combinePercentiles,
    diceJaccard,
    directedPercentile,
    meanSurfaceDistance,
    surfaceDice,
)

__all__ = [
    "IovMetricPlugin",
    "OverlapMetrics",
    "SurfaceDistanceMetrics",
    "SurfaceDiceMetric",
    "CentroidShiftMetric",
    "registerMetric",
    "unregisterMetric",
    "registeredMetrics",
    "computePairMetrics",
    "resetMetrics",
]


class IovMetricPlugin:
    """Base class of a pairwise metric. Subclasses set ``name``, ``keys`` (and ``units``) and implement
    :meth:`compute`."""

    name: str = ""
    keys: tuple[str, ...] = ()
    units: dict[str, str] = {}

    def compute(self, context: PairContext) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


class OverlapMetrics(IovMetricPlugin):
    """Dice and Jaccard (REFERENCE §4)."""

    name = "overlap"
    keys = ("dice", "jaccard")
    units = {"dice": "1", "jaccard": "1"}

    def compute(self, context: PairContext) -> dict:
        dice, jaccard = diceJaccard(context.a, context.b)
        out = {"dice": dice, "jaccard": jaccard}
        if dice is None:
            out["_reasons"] = {"dice": "both masks are empty: Dice is undefined",
                               "jaccard": "both masks are empty: Jaccard is undefined"}
        return out


class SurfaceDistanceMetrics(IovMetricPlugin):
    """HD (max), HD at a percentile (named convention), MSD, and the directed values behind them."""

    name = "surfaceDistance"
    keys = ("hausdorffMm", "hdPercentileMm", "msdMm", "hausdorffDirectedMm", "hdPercentileDirectedMm",
            "msdDirectedMm")
    units = {key: "mm" for key in keys}

    def compute(self, context: PairContext) -> dict:
        reason = context.emptyReason
        if reason is not None:
            nan = float("nan")
            return {"hausdorffMm": nan, "hdPercentileMm": nan, "msdMm": nan, "hausdorffDirectedMm": [nan, nan],
                    "hdPercentileDirectedMm": [nan, nan], "msdDirectedMm": [nan, nan],
                    "_reasons": {key: reason for key in self.keys}}
        dAB, dBA = context.directedDistances()
        wAB, wBA = context.a.distanceWeights, context.b.distanceWeights
        p = context.hdPercentile
        directed = [directedPercentile(dAB, p, wAB), directedPercentile(dBA, p, wBA)]
        if context.hdConvention == "pooled":
            hdPercentile = combinePercentiles(dAB, dBA, p, "pooled", wAB, wBA)
        else:
            hdPercentile = combineDirected(directed, context.hdConvention)
        maxima = [float(dAB.max()), float(dBA.max())]
        msd, msdDirected = meanSurfaceDistance(dAB, dBA, context.msdConvention, wAB, wBA)
        return {
            "hausdorffMm": max(maxima),
            "hdPercentileMm": hdPercentile,
            "msdMm": msd,
            "hausdorffDirectedMm": maxima,
            "hdPercentileDirectedMm": directed,
            "msdDirectedMm": msdDirected,
        }


class SurfaceDiceMetric(IovMetricPlugin):
    """Area-weighted surface Dice at the tolerance (Nikolov et al. 2021)."""

    name = "surfaceDice"
    keys = ("surfaceDice",)
    units = {"surfaceDice": "1"}

    def compute(self, context: PairContext) -> dict:
        a, b = context.a, context.b
        if a.isEmpty and b.isEmpty:
            return {"surfaceDice": None, "_reasons": {"surfaceDice": "both masks are empty: surface Dice is undefined"}}
        if a.isEmpty or b.isEmpty:
            return {"surfaceDice": 0.0}
        dAB, dBA = context.directedDistances()
        return {"surfaceDice": surfaceDice(dAB, dBA, a.surfaceAreasMm2, b.surfaceAreasMm2, context.toleranceMm)}


class CentroidShiftMetric(IovMetricPlugin):
    """Distance between the centres of mass (mm)."""

    name = "centroidShift"
    keys = ("centroidShiftMm",)
    units = {"centroidShiftMm": "mm"}

    def compute(self, context: PairContext) -> dict:
        reason = context.emptyReason
        if reason is not None:
            return {"centroidShiftMm": math.nan,
                    "_reasons": {"centroidShiftMm": reason.replace("distances to an empty mask are",
                                                                   "its centroid is")}}
        return {"centroidShiftMm": centroidShiftMm(context.a, context.b, context.spacingMmXyz)}


_DEFAULTS = (OverlapMetrics, SurfaceDistanceMetrics, SurfaceDiceMetric, CentroidShiftMetric)
_registry: dict[str, IovMetricPlugin] = {}


def resetMetrics() -> None:
    """Restore the built-in plugins only."""
    _registry.clear()
    for cls in _DEFAULTS:
        registerMetric(cls())


def registerMetric(plugin: IovMetricPlugin) -> None:
    """Add a plugin. Refuses a duplicate name or a key another plugin already produces."""
    if not plugin.name:
        raise ValueError("a metric plugin needs a name")
    if not plugin.keys:
        raise ValueError(f"metric plugin {plugin.name!r} declares no keys")
    if plugin.name in _registry:
        raise ValueError(f"a metric plugin named {plugin.name!r} is already registered")
    taken = {key: other.name for other in _registry.values() for key in other.keys}
    clash = [key for key in plugin.keys if key in taken]
    if clash:
        raise ValueError(f"metric plugin {plugin.name!r} would overwrite {clash} of plugin {taken[clash[0]]!r}")
    _registry[plugin.name] = plugin


def unregisterMetric(name: str) -> None:
    """Remove a plugin by name (KeyError-free: unknown names raise ValueError with the list of known ones)."""
    if name not in _registry:
        raise ValueError(f"no metric plugin named {name!r}; registered: {', '.join(_registry)}")
    del _registry[name]


def registeredMetrics() -> list[IovMetricPlugin]:
    """The registered plugins, in registration order."""
    return list(_registry.values())


def computePairMetrics(context: PairContext, plugins=None) -> tuple[dict, dict]:
    """Run every plugin on one pair. Returns ``(values, reasons)``; checks each plugin honours its contract."""
    values: dict = {}
    reasons: dict = {}
    for plugin in plugins if plugins is not None else registeredMetrics():
        out = dict(plugin.compute(context))
        reasons.update(out.pop("_reasons", {}) or {})
        missing = [key for key in plugin.keys if key not in out]
        if missing:
            raise ValueError(f"metric plugin {plugin.name!r} did not return {missing}")
        for key in plugin.keys:
            values[key] = out[key]
    return values, reasons


resetMetrics()
