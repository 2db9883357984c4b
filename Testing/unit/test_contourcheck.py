"""Contour check of a registration (core/contourcheck): Dice, MDA, HD95 of today's structure against the course's
carried through the registration, on analytic shapes (REFERENCE §4's sphere values) and against the
DelineationReview module's own surface distances, so that the two modules' numbers compare."""

import numpy as np
import pytest

from ReirradiationDoseLib.core import contourcheck
from ReirradiationDoseLib.core.contourcheck import agreementTolerance, agreementWarnings, contourAgreement, pairedNames


def sphere(shape, spacingXyz, centreMm, radiusMm):
    k, j, i = np.indices(shape, dtype=float)
    sx, sy, sz = spacingXyz
    return ((i * sx - centreMm[0]) ** 2 + (j * sy - centreMm[1]) ** 2 + (k * sz - centreMm[2]) ** 2
            <= radiusMm ** 2)


SPACING = (0.4, 0.4, 0.4)
SHAPE = (80, 80, 80)
CENTRE = (16.0, 16.0, 16.0)


def test_concentric_spheres_give_the_analytic_values():
    """REFERENCE §4: spheres r 10 / 12 mm -> Dice 0.7331, MSD = HD95 = 2 mm (exact up to voxelisation)."""
    row = contourAgreement("Bladder", sphere(SHAPE, SPACING, CENTRE, 10.0), sphere(SHAPE, SPACING, CENTRE, 12.0),
                           SPACING)
    assert row.dice == pytest.approx(0.7331, abs=0.005)
    assert row.mdaMm == pytest.approx(2.0, abs=0.25)
    assert row.hd95Mm == pytest.approx(2.0, abs=0.4)
    assert row.referenceCc == pytest.approx(4 / 3 * np.pi * 1.0, rel=0.02)  # 10 mm radius: 4.19 cc
    assert row.propagatedCc == pytest.approx(4 / 3 * np.pi * 1.728, rel=0.02)
    assert row.withinTolerance is True and row.comparedPercent == 100.0 and row.note == ""
    # a 2 mm offset of a 10 mm sphere: Dice 0.8505, HD 2 mm
    shifted = contourAgreement("Rectum", sphere(SHAPE, SPACING, CENTRE, 10.0),
                               sphere(SHAPE, SPACING, (18.0, 16.0, 16.0), 10.0), SPACING)
    assert shifted.dice == pytest.approx(0.8505, abs=0.005)
    assert shifted.hdMaxMm == pytest.approx(2.0, abs=0.3)
    identical = contourAgreement("Sacrum", sphere(SHAPE, SPACING, CENTRE, 10.0), sphere(SHAPE, SPACING, CENTRE, 10.0),
                                 SPACING)
    assert (identical.dice, identical.mdaMm, identical.hd95Mm, identical.hdMaxMm) == (1.0, 0.0, 0.0, 0.0)


def test_distances_are_the_delineation_review_modules():
    """On anisotropic voxels and irregular shapes the MDA (pooled mean surface distance) and HD95 (larger directed
    95th percentile) are the DelineationReview module's MSD and HD95, to float32 rounding."""
    from DelineationReviewLib.core.metrics import combinePercentiles
    from DelineationReviewLib.core.surface import prepareSurface

    spacing = (0.9, 0.9, 2.5)
    rng = np.random.default_rng(3)
    shape = (30, 60, 60)
    a = sphere(shape, spacing, (27.0, 27.0, 37.0), 14.0) & (rng.random(shape) > 0.05)
    b = sphere(shape, spacing, (30.0, 25.0, 35.0), 12.0) | sphere(shape, spacing, (38.0, 38.0, 40.0), 6.0)
    row = contourAgreement("Bladder", a, b, spacing)
    surfaceA, surfaceB = prepareSurface("a", a, spacing), prepareSurface("b", b, spacing)
    dAB, dBA = surfaceA.distancesTo(surfaceB), surfaceB.distancesTo(surfaceA)
    assert row.mdaMm == pytest.approx(float(np.concatenate([dAB, dBA]).mean()), abs=1e-4)
    assert row.hd95Mm == pytest.approx(combinePercentiles(dAB, dBA, 95, "maxDirected"), abs=1e-4)
    assert row.hdMaxMm == pytest.approx(max(dAB.max(), dBA.max()), abs=1e-4)
    assert row.dice == pytest.approx(2 * np.count_nonzero(a & b) / (a.sum() + b.sum()))
    assert 1.0 < row.mdaMm < 5.0


def test_coverage_and_empty_masks_are_reported_not_hidden():
    reference = sphere(SHAPE, SPACING, CENTRE, 10.0)
    covered = np.ones(SHAPE, dtype=bool)
    covered[:40] = False  # the course's CT ends at the sphere's equator
    row = contourAgreement("Bladder", reference, reference & covered, SPACING, covered=covered)
    assert row.comparedPercent == pytest.approx(50.0, abs=2.0)
    assert "compared where the course's CT covers it" in row.note
    assert row.dice == 1.0  # the uncovered half is left out, not counted as a miss
    assert row.referenceCc == pytest.approx(4 / 3 * np.pi, rel=0.02)  # today's whole structure
    gone = contourAgreement("Bladder", reference, np.zeros(SHAPE, bool), SPACING)
    assert gone.dice is None and gone.mdaMm is None and gone.withinTolerance is None
    assert gone.note == "the course's structure maps outside today's grid"
    outside = contourAgreement("Bladder", reference, reference, SPACING, covered=np.zeros(SHAPE, bool))
    assert outside.dice is None and outside.note == "today's structure lies outside the course's CT"
    with pytest.raises(ValueError, match="'Bladder'.*not on the same grid"):
        contourAgreement("Bladder", reference, reference[:-1], SPACING)


def test_tolerance_pairing_and_warnings():
    assert agreementTolerance((0.98, 0.98, 3.0)) == 3.0
    assert agreementTolerance((0.98, 0.98, 1.0)) == 2.0  # at least 2 mm (TG-132)
    pairs = pairedNames(["Body", "GTV", "CTV_high", "PTV", "rectum ", "Bladder", "Fibrosis", "Sacrum", "Bowel"],
                        ["BODY", "gtv", "Rectum", "BLADDER", "Fibrosis", "Bowel", "GTV_primary"],
                        leftOut=["Fibrosis", "bowel"])
    assert pairs == [("rectum ", "Rectum"), ("Bladder", "BLADDER")]
    near = contourAgreement("Bladder", sphere(SHAPE, SPACING, CENTRE, 10.0), sphere(SHAPE, SPACING, CENTRE, 11.0),
                            SPACING, guided=True)
    far = contourAgreement("Rectum", sphere(SHAPE, SPACING, CENTRE, 8.0), sphere(SHAPE, SPACING, CENTRE, 11.0),
                           SPACING, toleranceMm=2.0)
    assert near.withinTolerance is True and far.withinTolerance is False
    warnings = agreementWarnings([near, far.toDict()], 2.0, "course 'prior' (prior/CT)")
    assert len(warnings) == 1
    assert far.mdaMm == pytest.approx(3.0, abs=0.2)
    assert warnings[0].startswith("course 'prior' (prior/CT): structure 'Rectum' carried from the course's CT lies "
                                  f"{far.mdaMm:.1f} mm from today's on average (Dice {far.dice:.2f};")
    assert "tolerance 2.0 mm, AAPM TG-132" in warnings[0]
    guidedFar = contourAgreement("Sacrum", sphere(SHAPE, SPACING, CENTRE, 8.0), sphere(SHAPE, SPACING, CENTRE, 11.0),
                                 SPACING, guided=True, toleranceMm=2.0)
    assert "'Sacrum' (it guided the registration)" in agreementWarnings([guidedFar], 2.0, "x")[0]
    assert contourcheck.DICE_GUIDE == (0.8, 0.9)
