"""Results exactly at a limit, and rules no other test reached: found by an independent mutation review (74 hand
mutations of the core; these are the ones that survived every test). Expected values by hand, in the comments."""

import datetime
import math

import numpy as np
import pytest
import SimpleITK as sitk
from DelineationReviewLib.core.consensus import agreementSummary
from DelineationReviewLib.core.marks import BorderMark, MarkSet, evaluateMarks, signedDistancesMm
from ReirradiationDoseLib.core import regquality
from ReirradiationDoseLib.core.budget import organScalingFactors
from ReirradiationDoseLib.core.constraints import OrganConstraint
from ReirradiationDoseLib.core.contourcheck import contourAgreement
from ReirradiationDoseLib.core.dvh import sampleDoseAtPoints
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.landmarks import landmarkCheck
from ReirradiationDoseLib.core.recovery import ConstantRecovery, StepRecovery
from ReirradiationDoseLib.core.registration import RegistrationResult, displacementFieldTransform
from ReirradiationDoseLib.core.tissues import recoveryMap


def test_a_limit_is_scaled_with_its_own_alpha_beta_not_the_voxels():
    """Bowel Dmax < 90 Gy EQD2 at α/β 3, prior 50 Gy, planned 30 Gy / 10 fx, on a map of α/β 10: 50 + EQD2_3(D) = 90,
    D²/10 + 3 D - 200 = 0, D = 5 (√89 - 3) = 32.170 Gy, scaling 1.0723 (with the map's 10: 1.181)."""
    shape = (2, 2, 2)
    limit = OrganConstraint("Bowel_Small", (), "Dmax", 90.0, "Gy", 3.0, "cumulative", "test")
    [row] = organScalingFactors([limit], {"Bowel_Small": np.ones(shape, bool)}, np.full(shape, 50.0),
                                np.full(shape, 30.0), 10, 1.0, alphaBetaMap=np.full(shape, 10.0))
    assert row.scaling == pytest.approx(5 * (math.sqrt(89) - 3) / 30.0, abs=2e-4)


def test_dose_is_sampled_within_half_a_voxel_of_the_grid_and_unknown_beyond():
    """Centres x = 0, 2, 4 mm, the grid's boxes -1 .. 5 mm: inside them the edge value, beyond them NaN (never an
    invented dose for a structure reaching past the dose grid)."""
    geometry = ImageGeometry((3, 1, 1), (2.0, 2.0, 2.0))
    dose = np.array([[[10.0, 20.0, 30.0]]])
    values = sampleDoseAtPoints(dose, geometry, np.array([[-0.9, 0, 0], [-1.5, 0, 0], [4.9, 0, 0], [5.5, 0, 0],
                                                          [1.0, 0, 0]]))
    assert values[0] == 10.0 and values[2] == 30.0 and values[4] == pytest.approx(15.0)
    assert np.isnan(values[1]) and np.isnan(values[3])


def test_an_interpolated_custom_recovery_rises_from_its_first_step():
    model = StepRecovery("custom", (6.0, 12.0), (0.2, 0.6), interpolate=True)
    assert model.fractionForMonths(9.0) == pytest.approx(0.4)  # half-way between 0.2 and 0.6


def test_a_structure_outside_the_tissue_table_takes_the_default_recovery():
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    recovered = recoveryMap({"Zzq_unlisted": mask}, None, datetime.date(2023, 1, 15), datetime.date(2024, 1, 15),
                            defaultModel=ConstantRecovery(0.3))
    assert np.allclose(recovered, 0.3)  # inside the unlisted structure as outside every structure


def test_a_jacobian_of_exactly_zero_counts_as_folding():
    """u_x = -x for x < 5 (slope -1): det(I + ∇u) = 0 at x = 1..3 (central differences), a collapse, not a fold of
    negative volume: counted, in the body too (the count the warning reads)."""
    reference = sitk.Image([20, 20, 20], sitk.sitkFloat32)
    points = ImageGeometry.fromImage(reference).voxelCentresLps()
    displacement = np.zeros(points.shape)
    displacement[..., 0] = -1.0 * points[..., 0] * (points[..., 0] < 5)
    field = sitk.GetImageFromArray(displacement, isVector=True)
    result = RegistrationResult(displacementFieldTransform(field), 0.0, 0, "test", {}, 0.0, field)
    quality = regquality.registrationQuality(result, reference)
    assert quality["jacobianMinInBody"] == 0.0
    assert quality["foldingVoxelCountInBody"] == quality["foldingVoxelCount"] == 20 * 20 * 3


def test_a_landmark_exactly_at_the_tolerance_is_within_it():
    summary, warnings = landmarkCheck(None, ("current", {"a": [0.0, 0.0, 0.0]}), ("course", {"a": [0.0, 0.0, 2.0]}),
                                      (1.0, 1.0, 2.0))
    assert summary["toleranceMm"] == 2.0 and summary["maxMm"] == 2.0
    assert summary["aboveTolerance"] == [] and warnings == []


def test_a_contour_check_exactly_at_the_tolerance_is_within_it():
    cube = np.zeros((10, 10, 10), bool)
    cube[3:7, 3:7, 3:7] = True
    shifted = np.roll(cube, 1, axis=2)
    row = contourAgreement("Rectum", cube, shifted, (1.0, 1.0, 1.0))
    assert row.mdaMm > 0
    assert contourAgreement("Rectum", cube, shifted, (1.0, 1.0, 1.0), toleranceMm=row.mdaMm).withinTolerance is True


def test_the_agreement_volumes_include_the_voxels_every_observer_drew():
    summary = agreementSummary(np.array([0, 1, 2, 2], dtype=np.uint8), 2, 0.5)
    assert summary["volumeCcByAgreement"] == {"1": 0.5, "2": 1.0}
    assert summary["unionCc"] == 1.5 and summary["intersectionCc"] == 1.0 and summary["uncertaintyBandCc"] == 0.5


def _halfSpace():
    geometry = ImageGeometry((40, 10, 10), (0.5, 1.0, 1.0))
    mask = np.zeros(geometry.shape, bool)
    mask[:, :, :21] = True  # surface at x = 10.25 mm
    return geometry, mask


def test_marks_exactly_at_the_tolerance_reach_the_border():
    geometry, mask = _halfSpace()
    outside, inside = (13.25, 5.0, 5.0), (7.25, 5.0, 5.0)  # d = +3 mm and -3 mm
    dOutside, dInside = signedDistancesMm([outside, inside], mask, geometry)
    assert dOutside == pytest.approx(3.0, abs=1e-9) and dInside == pytest.approx(-3.0, abs=1e-9)
    marks = MarkSet((BorderMark("out", outside, frame="CT", id="o"),), "CT")
    result = evaluateMarks(marks, {"g": mask}, geometry, toleranceMm=float(dOutside)).result("o", "g")
    assert result.reachesBorder and result.withinTolerance and result.honoured
    marks = MarkSet((BorderMark("in", inside, frame="CT", id="i"),), "CT")
    result = evaluateMarks(marks, {"g": mask}, geometry, toleranceMm=float(-dInside)).result("i", "g")
    assert result.withinTolerance and not result.overContoured


def test_an_arrow_uncovered_exactly_by_the_tolerance_is_covered():
    geometry, mask = _halfSpace()
    arrow = MarkSet((BorderMark("short", (16.25, 5.0, 5.0), (2.25, 5.0, 5.0), frame="CT", id="a"),), "CT")
    first = evaluateMarks(arrow, {"g": mask}, geometry, toleranceMm=2.0).result("a", "g")
    assert not first.arrowCovered
    again = evaluateMarks(arrow, {"g": mask}, geometry, toleranceMm=first.arrowUncoveredMm).result("a", "g")
    assert again.arrowCovered
