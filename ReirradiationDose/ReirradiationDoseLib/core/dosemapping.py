"""Mapping the prior dose (and structures) onto the current planning CT.

Pull-back mapping (REFERENCE §6): for every voxel centre ``x`` of the reference (current) grid the prior dose is
interpolated at ``T(x)``, where ``T`` is the registration result (fixed = current -> moving = prior points).
Linear interpolation for dose, nearest neighbour for labels.

Nothing is extrapolated and nothing silently becomes 0 Gy (REFERENCE §7): a voxel whose ``T(x)`` falls outside the
prior dose grid gets NaN, and the result carries the covered mask and the covered fraction. "Inside" is the
prior grid's voxel boxes (centres +- half a voxel, ITK's ``IsInsideBuffer``); within the outer half voxel the
edge value is used (as the TPS's own dose grid does).

The mapped dose is a point-wise mapping: dose is not conserved under deformation. Where the deformable
registration is doubtful, :func:`conservativeMaxFilter` gives the maximum prior dose within a radius of each
voxel (as MSKCC's RADAR tool does with a 3 mm search).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError
from .geometry import ImageGeometry, imageFromArray
from .progress import noProgress

__all__ = ["MappedDose", "MappedLabels", "mapDose", "mapLabels", "mapMasks", "conservativeMaxFilter",
           "ellipsoidFootprint"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MappedDose:
    """Prior dose on the reference grid.

    doseGy : float32 array on the reference geometry, NaN where the voxel maps outside the prior dose grid.
    coveredMask : bool array, True where the prior dose was available.
    coverageFraction : ``coveredMask.mean()``.
    method : ``"pull-back linear"``.
    geometry : the reference geometry.
    """

    doseGy: np.ndarray
    coveredMask: np.ndarray
    coverageFraction: float
    method: str
    geometry: ImageGeometry
    elapsedS: float = 0.0


@dataclass(frozen=True)
class MappedLabels:
    """Labels on the reference grid (nearest neighbour); ``coveredMask`` as for :class:`MappedDose`.

    Voxels that map outside the prior grid get label 0 and are False in ``coveredMask``.
    """

    labels: np.ndarray
    coveredMask: np.ndarray
    coverageFraction: float
    method: str
    geometry: ImageGeometry


def _referenceImage(geometry: ImageGeometry) -> sitk.Image:
    image = sitk.Image(list(geometry.sizeXyz), sitk.sitkUInt8)
    return geometry.applyTo(image)


def _identity() -> sitk.Transform:
    return sitk.Transform(3, sitk.sitkIdentity)


def mapDose(priorDoseGy: np.ndarray, priorGeometry: ImageGeometry, transform: sitk.Transform | None,
            referenceGeometry: ImageGeometry, progress=None) -> MappedDose:
    """Map the prior dose onto ``referenceGeometry`` through ``transform`` (reference -> prior points).

    ``D_mapped(x) = D_prior(T(x))`` with trilinear interpolation; NaN where ``T(x)`` is outside the prior grid.

    Parameters
    ----------
    priorDoseGy : prior dose in Gy, indexed [k, j, i] on ``priorGeometry``.
    transform : the registration transform (fixed/current -> moving/prior); None for identity (same patient
        coordinates, e.g. a resampling between grids).
    referenceGeometry : the grid of the result (usually the current CT or the current dose grid).
    """
    progress = progress or noProgress
    start = time.perf_counter()
    priorDoseGy = np.asarray(priorDoseGy)
    if priorDoseGy.shape != priorGeometry.shape:
        raise InputError(f"the prior dose array {priorDoseGy.shape} does not match its geometry "
                         f"({priorGeometry.describe()})")
    progress(0.0, "mapping the prior dose")
    dose = imageFromArray(priorDoseGy.astype(np.float32, copy=False), priorGeometry)
    mapped = sitk.Resample(dose, _referenceImage(referenceGeometry), transform or _identity(), sitk.sitkLinear,
                           float("nan"), sitk.sitkFloat32)
    doseGy = sitk.GetArrayFromImage(mapped)
    covered = np.isfinite(doseGy)
    fraction = float(covered.mean()) if covered.size else 0.0
    elapsed = time.perf_counter() - start
    progress(1.0, "prior dose mapped")
    if fraction < 1.0:
        logger.info("mapped dose covers %.1f %% of the reference grid (the rest is NaN, not 0 Gy)",
                    100 * fraction)
    return MappedDose(doseGy=doseGy, coveredMask=covered, coverageFraction=fraction, method="pull-back linear",
                      geometry=referenceGeometry, elapsedS=elapsed)


def mapLabels(priorLabels: np.ndarray, priorGeometry: ImageGeometry, transform: sitk.Transform | None,
              referenceGeometry: ImageGeometry, progress=None) -> MappedLabels:
    """Propagate a label map (or a binary mask) with nearest-neighbour pull-back: ``L(x) = L_prior(T(x))``."""
    progress = progress or noProgress
    priorLabels = np.asarray(priorLabels)
    if priorLabels.shape != priorGeometry.shape:
        raise InputError(f"the label array {priorLabels.shape} does not match its geometry "
                         f"({priorGeometry.describe()})")
    if not (np.issubdtype(priorLabels.dtype, np.integer) or priorLabels.dtype == bool):
        raise InputError("labels must be integers or a binary mask")
    progress(0.0, "propagating structures")
    isBool = priorLabels.dtype == bool
    labels = priorLabels.astype(np.uint8) if isBool else priorLabels
    reference = _referenceImage(referenceGeometry)
    tx = transform or _identity()
    image = imageFromArray(labels, priorGeometry)
    out = sitk.GetArrayFromImage(sitk.Resample(image, reference, tx, sitk.sitkNearestNeighbor, 0))
    ones = imageFromArray(np.ones(priorGeometry.shape, np.uint8), priorGeometry)
    covered = sitk.GetArrayFromImage(sitk.Resample(ones, reference, tx, sitk.sitkNearestNeighbor, 0)) > 0
    if isBool:
        out = out > 0
    progress(1.0, "structures propagated")
    return MappedLabels(labels=out, coveredMask=covered, coverageFraction=float(covered.mean()),
                        method="pull-back nearest neighbour", geometry=referenceGeometry)


def mapMasks(priorMasks: dict, priorGeometry: ImageGeometry, transform: sitk.Transform | None,
             referenceGeometry: ImageGeometry) -> tuple[dict, np.ndarray]:
    """Propagate several (possibly overlapping) binary masks as :func:`mapLabels` does each one, resampling once
    per 31 masks: each mask is one bit of a uint32 label map and bit 31 is set on every voxel of the prior grid,
    so nearest neighbour carries a source voxel's bits together and the same resampling says where the prior grid
    was (``coveredMask``, which a second resampling of ones gave before: the clinical-size demo's 12 organs through
    its deformable field, median of 3 runs 5.00 -> 3.71 s, identical masks). Returns
    ``({name: bool mask on the reference grid}, coveredMask)``."""
    names = list(priorMasks)
    inside = np.uint32(1 << 31)
    mapped, covered = {}, None
    for start in range(0, max(len(names), 1), 31):
        chunk = names[start:start + 31]
        packed = np.full(priorGeometry.shape, inside, dtype=np.uint32)
        for bit, name in enumerate(chunk):
            mask = np.asarray(priorMasks[name], dtype=bool)
            if mask.shape != priorGeometry.shape:
                raise InputError(f"mask '{name}' {mask.shape} does not match its geometry "
                                 f"({priorGeometry.describe()})")
            packed |= mask.astype(np.uint32) << np.uint32(bit)
        image = imageFromArray(packed, priorGeometry)
        labels = sitk.GetArrayFromImage(sitk.Resample(image, _referenceImage(referenceGeometry),
                                                      transform or _identity(), sitk.sitkNearestNeighbor, 0))
        if covered is None:
            covered = (labels & inside) != 0
        for bit, name in enumerate(chunk):
            mapped[name] = (labels & np.uint32(1 << bit)) != 0
    return mapped, covered


def ellipsoidFootprint(spacingMm, radiusMm: float) -> np.ndarray:
    """Boolean footprint ([k, j, i]) of the voxel offsets whose physical length is <= ``radiusMm``."""
    if radiusMm < 0:
        raise InputError("the search radius must not be negative")
    sx, sy, sz = (float(s) for s in spacingMm)
    half = [int(np.floor(radiusMm / s + 1e-9)) for s in (sz, sy, sx)]
    k, j, i = np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij")
    return (k * sz) ** 2 + (j * sy) ** 2 + (i * sx) ** 2 <= radiusMm ** 2 + 1e-9


def conservativeMaxFilter(doseGy: np.ndarray, geometry: ImageGeometry, radiusMm: float = 3.0) -> np.ndarray:
    """Maximum of the (mapped prior) dose within ``radiusMm`` of each voxel centre.

    ``D_cons(x) = max { D(y) : |y - x| <= r }`` over voxel centres ``y`` (ellipsoidal footprint in voxels from the
    spacing). NaN voxels are ignored; a voxel whose whole neighbourhood is NaN stays NaN. This is the
    conservative alternative to the point-wise mapping when the deformable registration is doubtful (MSKCC
    RADAR tool, 3 mm search; REFERENCE §6).
    """
    doseGy = np.asarray(doseGy, dtype=np.float32)
    if doseGy.shape != geometry.shape:
        raise InputError(f"the dose array {doseGy.shape} does not match its geometry ({geometry.describe()})")
    footprint = ellipsoidFootprint(geometry.spacingMm, radiusMm)
    nan = np.isnan(doseGy)
    work = np.where(nan, -np.inf, doseGy) if nan.any() else doseGy
    out = ndimage.maximum_filter(work, footprint=footprint, mode="constant", cval=-np.inf)
    out = out.astype(np.float32, copy=False)
    out[~np.isfinite(out)] = np.nan
    return out
