"""Contour check of a registration: organs delineated on both CTs, the course's carried onto today's through the
registration, compared with today's.

AAPM TG-132 (Brock et al., Med Phys 2017;44:e43) lists contour comparison among the quantitative checks of a
deformable registration, with landmarks and the Jacobian: where an organ is delineated on both image sets, the
course's contour propagated by the registration should lie on today's, with a mean distance to agreement (MDA)
within the image's voxel size (2-3 mm) and a Dice similarity coefficient of about 0.8-0.9 (lower for small
structures, whose Dice is dominated by their boundary). Structures that guided the registration
(structure-guided demons) agree by construction more than structures that did not: only the latter are an
independent check, and the table says which is which.

Definitions (REFERENCE §4, the defaults of the DelineationReview module, so the numbers compare):

- Dice = 2|A∩B| / (|A| + |B|) on the reference grid;
- surface = voxels of the mask with at least one face neighbour (6-connected) outside it; distances between voxel
  centres in mm with the grid's spacing;
- MDA = mean of both directions' surface distances pooled (the mean surface distance); HD95 = the larger of the two
  directed 95th percentiles; HD = the larger directed maximum.

The propagated contour is the course's mask pulled back through the registration with nearest neighbour (as the
dose mapping's labels). Where the course's CT does not cover today's structure (a shorter prior scan) today's mask
is compared only where it does, and the row says how much that was.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .errors import InputError
from .landmarks import registrationToleranceMm

logger = logging.getLogger(__name__)

__all__ = ["ContourAgreement", "contourAgreement", "checkRegistration", "checkText", "agreementTolerance",
           "agreementWarnings", "pairedNames", "DICE_GUIDE"]

# TG-132's Dice range for a propagated contour: 0.8-0.9, the lower end for small structures. Shown beside the
# numbers, not warned against: Dice depends on the structure's size, MDA (warned) does not.
DICE_GUIDE = (0.8, 0.9)

_NOT_COMPARED = {"body", "external", "skin", "outline", "body outline"}


@dataclass(frozen=True)
class ContourAgreement:
    """One structure delineated on both CTs: today's mask against the course's carried through the registration.

    ``dice`` None when either mask is empty (with ``note``); distances (mm) None likewise. ``guided``: the structure
    guided the registration. ``comparedPercent``: share of today's structure inside the course CT's coverage (the
    rest is left out of the comparison). ``withinTolerance``: MDA <= the tolerance (None when not measured).
    """

    structure: str
    courseStructure: str
    guided: bool
    dice: float | None
    mdaMm: float | None
    hd95Mm: float | None
    hdMaxMm: float | None
    referenceCc: float
    propagatedCc: float
    comparedPercent: float
    withinTolerance: bool | None
    note: str = ""

    def toDict(self) -> dict:
        return asdict(self)


def agreementTolerance(spacingMmXyz) -> float:
    """The MDA tolerance: the landmarks' (:func:`.landmarks.registrationToleranceMm`), the reference grid's largest
    voxel dimension, at least 2 mm (TG-132)."""
    return registrationToleranceMm(spacingMmXyz)


def pairedNames(referenceNames, courseNames, leftOut=()) -> list[tuple[str, str]]:
    """Structures delineated on both CTs as ``(reference name, course name)``, paired by name (case and surrounding
    spaces ignored), in the reference's order. Left out: body outlines (the registration's mask, and scans end at
    different levels), targets (any GTV/CTV/ITV/PTV name: today's target is not the prior target moved) and the
    names in ``leftOut`` (declared targets, tissue without counterpart)."""
    skip = _NOT_COMPARED | {str(name).strip().lower() for name in leftOut}
    byName = {str(name).strip().lower(): name for name in courseNames}
    pairs = []
    for name in referenceNames:
        key = str(name).strip().lower()
        if key in skip or key[:3] in ("gtv", "ctv", "itv", "ptv") or key not in byName:
            continue
        pairs.append((name, byName[key]))
    return pairs


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the array's border counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def _directed(fromSurface: np.ndarray, toSurface: np.ndarray, spacingKji) -> np.ndarray:
    """Distance (mm) from every voxel of ``fromSurface`` to the nearest voxel of ``toSurface``."""
    distance = ndimage.distance_transform_edt(~toSurface, sampling=spacingKji)
    return distance[fromSurface]


def _box(*masks: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the masks' union grown by one voxel, clipped to the grid."""
    union = np.logical_or.reduce(masks)
    slices = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(union.any(axis=others))
        slices.append(slice(max(int(present[0]) - 1, 0), min(int(present[-1]) + 2, union.shape[axis])))
    return tuple(slices)


def contourAgreement(name: str, referenceMask: np.ndarray, propagatedMask: np.ndarray, spacingMmXyz,
                     covered: np.ndarray | None = None, guided: bool = False, courseName: str | None = None,
                     toleranceMm: float | None = None) -> ContourAgreement:
    """Dice, MDA, HD95 and HD of today's ``referenceMask`` against the course's ``propagatedMask`` (both [k, j, i]
    on the reference grid of spacing ``spacingMmXyz``); ``covered``: where the course's CT has data (today's mask
    is compared there only). ``toleranceMm`` defaults to :func:`agreementTolerance`."""
    reference = np.asarray(referenceMask, dtype=bool)
    propagated = np.asarray(propagatedMask, dtype=bool)
    if reference.shape != propagated.shape or (covered is not None and np.shape(covered) != reference.shape):
        raise InputError(f"structure '{name}': the masks compared are not on the same grid")
    voxelCc = float(np.prod([float(s) for s in spacingMmXyz])) / 1000.0
    referenceVoxels = int(np.count_nonzero(reference))
    comparedPercent = 100.0
    note = ""
    if covered is not None and referenceVoxels:
        compared = reference & np.asarray(covered, dtype=bool)
        comparedPercent = 100.0 * np.count_nonzero(compared) / referenceVoxels
        if comparedPercent < 100.0:
            note = f"compared where the course's CT covers it ({comparedPercent:.1f} % of today's structure)"
        reference = compared
    tolerance = agreementTolerance(spacingMmXyz) if toleranceMm is None else float(toleranceMm)
    common = dict(structure=name, courseStructure=courseName or name, guided=bool(guided),
                  referenceCc=referenceVoxels * voxelCc, propagatedCc=float(np.count_nonzero(propagated)) * voxelCc,
                  comparedPercent=comparedPercent)
    if not reference.any() or not propagated.any():
        why = ("today's structure lies outside the course's CT" if referenceVoxels and not reference.any()
               else "the course's structure maps outside today's grid" if not propagated.any()
               else "today's structure is empty")
        return ContourAgreement(dice=None, mdaMm=None, hd95Mm=None, hdMaxMm=None, withinTolerance=None,
                                note=why, **common)
    box = _box(reference, propagated)
    a, b = reference[box], propagated[box]
    dice = 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
    spacingKji = tuple(float(s) for s in reversed(list(spacingMmXyz)))
    surfaceA, surfaceB = _surface(a), _surface(b)
    dAB, dBA = _directed(surfaceA, surfaceB, spacingKji), _directed(surfaceB, surfaceA, spacingKji)
    mda = float(np.concatenate([dAB, dBA]).mean())
    hd95 = float(max(np.percentile(dAB, 95), np.percentile(dBA, 95)))
    hdMax = float(max(dAB.max(), dBA.max()))
    return ContourAgreement(dice=float(dice), mdaMm=mda, hd95Mm=hd95, hdMaxMm=hdMax,
                            withinTolerance=bool(mda <= tolerance), note=note, **common)


def agreementWarnings(rows, toleranceMm: float, what: str) -> list[str]:
    """One warning per structure whose MDA exceeds the tolerance, naming ``what`` (the course and its image)."""
    warnings = []
    for row in rows:
        row = row if isinstance(row, dict) else row.toDict()
        if row["withinTolerance"] is False:
            role = " (it guided the registration)" if row["guided"] else ""
            warnings.append(f"{what}: structure '{row['structure']}'{role} carried from the course's CT lies "
                            f"{row['mdaMm']:.1f} mm from today's on average (Dice {row['dice']:.2f}; tolerance "
                            f"{toleranceMm:.1f} mm, AAPM TG-132): check the registration there")
    return warnings


def checkRegistration(referenceMasks: dict, referenceGeometry, courseMasks: dict, courseGeometry, transform,
                      guided=(), leftOut=(), carried: dict | None = None) -> dict:
    """The contour check of a registration: every structure in both ``referenceMasks`` (today's, on
    ``referenceGeometry``) and ``courseMasks`` (on the course CT's ``courseGeometry``; :func:`pairedNames`, without
    ``leftOut``), the course's carried onto the reference grid through ``transform`` (reference LPS -> course LPS;
    None: the identity) with nearest neighbour, and compared (:func:`contourAgreement`).

    Returns ``{"toleranceMm", "diceGuide", "structures": [row dicts]}``; ``guided``: names that guided the
    registration (their rows say so). ``carried`` (a dict): filled with the course's structures as carried,
    ``{name: (start index (k, j, i), bool mask cropped to its bounding box)}`` (for showing them; empty ones left out).
    """
    from .dosemapping import mapMasks

    tolerance = agreementTolerance(referenceGeometry.spacingMm)
    check = {"toleranceMm": tolerance, "diceGuide": list(DICE_GUIDE), "structures": []}
    names = pairedNames(referenceMasks, courseMasks, leftOut)
    if not names:
        return check
    mapped, covered = mapMasks({c: courseMasks[c] for _, c in names}, courseGeometry, transform, referenceGeometry)
    guidedKeys = {str(n).strip().lower() for n in guided}
    for name, courseName in names:
        mask = mapped.pop(courseName)
        if carried is not None and mask.any():
            box = _box(mask)
            carried[courseName] = (tuple(int(b.start) for b in box), mask[box].copy())
        row = contourAgreement(name, referenceMasks[name], mask, referenceGeometry.spacingMm,
                               covered, guided=name.strip().lower() in guidedKeys, courseName=courseName,
                               toleranceMm=tolerance)
        check["structures"].append(row.toDict())
    measured = [r for r in check["structures"] if r["dice"] is not None]
    logger.info("Contour check: %s", "; ".join(f"{r['structure']} Dice {r['dice']:.2f} MDA {r['mdaMm']:.1f} mm"
                                               for r in measured) or "no structure measured")
    return check


def checkText(check: dict) -> str:
    """One line for a status label: each structure's Dice and MDA, the guiding ones marked."""
    rows = [r for r in check["structures"] if r["dice"] is not None]
    if not rows:
        return "Contour check: no structure is delineated on both CTs (besides body and targets)."
    parts = [f"{r['structure']}{' (guided)' if r['guided'] else ''} Dice {r['dice']:.2f} / MDA {r['mdaMm']:.1f} mm"
             for r in rows]
    return (f"Contour check (AAPM TG-132: MDA within {check['toleranceMm']:g} mm, Dice about "
            f"{check['diceGuide'][0]:g}-{check['diceGuide'][1]:g}): " + "; ".join(parts) + ".")
