"""Registration quality: shown, not assumed (REFERENCE §6).

- Jacobian determinant of the deformation ``x -> x + u(x)``: ``det(I + grad u)``; <= 0 means folding.
- Displacement magnitude statistics inside the body.
- Target registration error (TRE) on landmark pairs: ``|T(p_fixed) - p_moving|``.
- Visual checks: checkerboard of fixed and warped moving, and their difference.
- A known smooth analytic deformation to test any registration against (known-deformation recovery).
"""

from __future__ import annotations


import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .geometry import ImageGeometry
from .registration import RegistrationResult, displacementFieldFromTransform, requireSameGrid

__all__ = [
    "jacobianDeterminant",
    "registrationQuality",
    "foldingWarning",
    "qualityText",
    "checkerboard",
    "checkerboardMask",
    "differenceImage",
    "analyticDeformationField",
    "targetRegistrationErrors",
]


def jacobianDeterminant(displacementField: sitk.Image) -> tuple[np.ndarray, ImageGeometry]:
    """``det(I + grad u)`` at every voxel of the field (central differences in physical units, ITK's
    DisplacementFieldJacobianDeterminantFilter); returns a float32 array [k, j, i] and the field's geometry.

    ITK's filter differentiates along the grid's index axes and ignores its direction cosines, which is right only
    for an identity direction: on a head-first-prone grid (direction diag(-1, -1, 1)) ``u = (0.3 x, 0, 0)`` read
    0.7 instead of 1.3, and a field folding to -0.49 read +0.34 with no folding voxel. On any other direction ``D``
    the vectors are expressed along the index axes first (``D^-1 u``, on a copy of the grid with identity
    direction): ``I + D^-1 grad(u) D`` is similar to ``I + grad(u)`` and has its determinant."""
    if displacementField.GetNumberOfComponentsPerPixel() != 3:
        raise InputError("a 3D displacement field (three components per voxel) is required")
    field = displacementField  # no copy of a 0.9 GB clinical-size field when it already is float64
    if field.GetPixelID() != sitk.sitkVectorFloat64:
        field = sitk.Cast(displacementField, sitk.sitkVectorFloat64)
    direction = np.array(field.GetDirection(), dtype=float).reshape(3, 3)
    if not np.allclose(direction, np.eye(3), atol=1e-9):
        alongAxes = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(field) @ np.linalg.inv(direction).T,
                                           isVector=True)
        alongAxes.SetSpacing(field.GetSpacing())
        alongAxes.SetOrigin(field.GetOrigin())
        field = alongAxes
    jac = sitk.DisplacementFieldJacobianDeterminant(field, True)
    return sitk.GetArrayFromImage(jac).astype(np.float32, copy=False), ImageGeometry.fromImage(displacementField)


def targetRegistrationErrors(transform: sitk.Transform, landmarkPairs) -> np.ndarray:
    """TRE (mm) per pair ``(fixedPointLps, movingPointLps)``: ``|T(p_fixed) - p_moving|``."""
    errors = []
    for fixedPoint, movingPoint in landmarkPairs:
        mapped = np.array(transform.TransformPoint([float(v) for v in fixedPoint]))
        errors.append(float(np.linalg.norm(mapped - np.asarray(movingPoint, dtype=float))))
    return np.array(errors)


def registrationQuality(result: RegistrationResult, fixed: sitk.Image, movingResampled: sitk.Image | None = None,
                        bodyMask: sitk.Image | None = None, landmarkPairs=None) -> dict:
    """Quality figures of a registration result.

    Returns a dict with: ``foldingVoxelCount`` (Jacobian <= 0), ``jacobianMin``, ``jacobianMax`` (over the whole
    grid, air included) and ``foldingVoxelCountInBody``, ``jacobianMinInBody``, ``jacobianMaxInBody`` (inside the
    body; the whole grid without a mask),
    ``displacementMeanMm``, ``displacementP95Mm``, ``displacementMaxMm`` (magnitude of ``T(x) - x`` inside the
    body, or the whole grid without a mask), ``tre`` (``meanMm``, ``maxMm``, ``perPairMm``) when landmarks are
    given, and ``meanAbsoluteDifference`` between fixed and ``movingResampled`` inside the body when given.
    A rigid result has Jacobian 1 everywhere.
    """
    field = result.displacementField
    if field is None:
        field = displacementFieldFromTransform(result.transform, fixed)
    mask = None
    if bodyMask is not None:
        requireSameGrid(bodyMask, fixed, "the body mask")
        mask = sitk.GetArrayFromImage(bodyMask) > 0
        if not mask.any():
            raise InputError("the body mask is empty")
    jac, _ = jacobianDeterminant(field)
    vectors = sitk.GetArrayViewFromImage(field)  # a view: the field stays alive in this function
    magnitude = np.sqrt(np.einsum("...i,...i->...", vectors, vectors))  # no squared copy of the field
    del vectors
    jacIn = jac[mask] if mask is not None else jac.ravel()
    magIn = magnitude[mask] if mask is not None else magnitude.ravel()
    report = {
        "method": result.method,
        "foldingVoxelCount": int(np.count_nonzero(jac <= 0)),
        "foldingVoxelCountInBody": int(np.count_nonzero(jacIn <= 0)),
        "jacobianMin": float(jac.min()),
        "jacobianMax": float(jac.max()),
        "jacobianMinInBody": float(jacIn.min()),
        "jacobianMaxInBody": float(jacIn.max()),
        "displacementMeanMm": float(magIn.mean()),
        "displacementP95Mm": float(np.percentile(magIn, 95)),
        "displacementMaxMm": float(magIn.max()),
        "region": "body" if mask is not None else "whole grid",
        "elapsedS": result.elapsedS,
    }
    if landmarkPairs:
        tre = targetRegistrationErrors(result.transform, landmarkPairs)
        report["tre"] = {"meanMm": float(tre.mean()), "maxMm": float(tre.max()), "perPairMm": tre.tolist()}
    if movingResampled is not None:
        diff = sitk.GetArrayFromImage(differenceImage(fixed, movingResampled))
        sel = diff[mask] if mask is not None else diff.ravel()
        report["meanAbsoluteDifference"] = float(np.nanmean(np.abs(sel)))
    return report


def qualityText(quality: dict) -> str:
    """The quality figures in one sentence (module summary, report): Jacobian range and folding in the body (and the
    whole grid's when it differs), displacement statistics in the body."""
    region = quality.get("region", "body")
    folding = quality["foldingVoxelCountInBody"]
    text = (f"Jacobian in the {region} {quality['jacobianMinInBody']:.2f} to {quality['jacobianMaxInBody']:.2f}, "
            + ("no folding" if folding == 0 else f"{folding} folding voxels"))
    if region != "whole grid" and quality["foldingVoxelCount"] != folding:
        text += f" (whole grid, air included: {quality['foldingVoxelCount']} folding voxels)"
    return (text + f"; displacement in the {region} mean {quality['displacementMeanMm']:.1f} / p95 "
            f"{quality['displacementP95Mm']:.1f} / max {quality['displacementMaxMm']:.1f} mm")


CONSERVATIVE_REMEDY = ("or use the conservative composite (an upper bound of the mapped dose's maximum within a "
                       "radius: conservativeRadiusMm)")
# the module has no conservative option: the case file's (``reirradiation dose``) is named instead
MODULE_CONSERVATIVE_REMEDY = ("or compute the conservative composite from a case file with conservativeRadiusMm "
                              "(reirradiation dose; the module does not offer it)")


def foldingWarning(quality: dict | None, what: str, remedy: str = CONSERVATIVE_REMEDY) -> str | None:
    """The warning for a registration that folds inside the body (Jacobian <= 0 there: two points of today's
    anatomy taken from one point of the prior's, so the mapped dose there is not a mapping at all), naming ``what``;
    None when it does not fold there or its quality is unknown. Folding outside the body (in air, where the field is
    extrapolated) is reported in the numbers but not warned."""
    folding = (quality or {}).get("foldingVoxelCountInBody")
    if not folding:
        return None
    return (f"{what}: the deformable registration folds at {folding} voxels inside the body (Jacobian <= 0, minimum "
            f"{quality['jacobianMinInBody']:.2f}): the dose mapped there is not a physical mapping; review the "
            f"registration (Jacobian map, checkerboard) before using the composite, {remedy}")


def _sameGrid(a: sitk.Image, b: sitk.Image) -> None:
    if not ImageGeometry.fromImage(a).sameGridAs(ImageGeometry.fromImage(b)):
        raise InputError("the fixed and warped images must be on the same grid (resample the moving image first)")


def checkerboardMask(sizeXyz, spacingMm, squaresMm: float = 20.0) -> np.ndarray:
    """A 3D checkerboard on a grid of ``sizeXyz`` voxels of ``spacingMm``, indexed [k, j, i]: True on every other
    ``squaresMm`` cube counted from the first voxel (built from per-axis uint8 parities: no float copy of a
    clinical-size grid)."""
    pi, pj, pk = ((np.arange(int(n)) * float(s) // squaresMm).astype(np.uint8)
                  for n, s in zip(sizeXyz, spacingMm, strict=True))
    return ((pk[:, None, None] + pj[None, :, None] + pi[None, None, :]) % 2).astype(bool)


def checkerboard(fixed: sitk.Image, warped: sitk.Image, squaresMm: float = 20.0) -> sitk.Image:
    """Checkerboard of the fixed and the warped moving image (:func:`checkerboardMask`: the fixed image in the first
    square), float32 on the fixed grid."""
    _sameGrid(fixed, warped)
    fixedF, warpedF = sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(warped, sitk.sitkFloat32)  # held: views below
    board = np.where(checkerboardMask(fixed.GetSize(), fixed.GetSpacing(), squaresMm),
                     sitk.GetArrayViewFromImage(warpedF), sitk.GetArrayViewFromImage(fixedF))
    image = sitk.GetImageFromArray(board)
    image.CopyInformation(fixed)
    return image


def differenceImage(fixed: sitk.Image, warped: sitk.Image) -> sitk.Image:
    """``warped - fixed`` (float32) on the fixed grid."""
    _sameGrid(fixed, warped)
    return sitk.Subtract(sitk.Cast(warped, sitk.sitkFloat32), sitk.Cast(fixed, sitk.sitkFloat32))


def analyticDeformationField(reference: sitk.Image, amplitudeMm=(12.0, 10.0, 3.0), wavelengthMm: float = 160.0,
                             centreLps=None) -> sitk.Image:
    """A smooth, invertible test deformation on the grid of ``reference`` (sitkVectorFloat64, LPS mm).

    With ``p = x - c`` (``c`` the grid centre unless given), ``A`` the amplitudes and ``L`` the wavelength::

        u_x = A_x sin(2 pi p_y / L) cos(pi p_z / L)
        u_y = A_y cos(2 pi p_x / L) cos(pi p_z / L)
        u_z = A_z sin(2 pi (p_x + p_y) / L)

    Its Jacobian stays positive while ``2 pi max(A) / L < 0.5`` or so (12 mm over 160 mm: |grad u| <= 0.47).
    Used as ground truth: ``fixed = Resample(moving, T)`` with ``T(x) = x + u(x)``, then a registration of
    (fixed, moving) must recover ``u``.
    """
    geometry = ImageGeometry.fromImage(reference)
    points = geometry.voxelCentresLps()
    centre = points.reshape(-1, 3).mean(axis=0) if centreLps is None else np.asarray(centreLps, dtype=float)
    p = points - centre
    ax, ay, az = (float(a) for a in amplitudeMm)
    w = 2 * np.pi / wavelengthMm
    u = np.stack([ax * np.sin(w * p[..., 1]) * np.cos(0.5 * w * p[..., 2]),
                  ay * np.cos(w * p[..., 0]) * np.cos(0.5 * w * p[..., 2]),
                  az * np.sin(w * (p[..., 0] + p[..., 1]))], axis=-1)
    field = sitk.GetImageFromArray(u, isVector=True)
    field.CopyInformation(reference)
    return field
