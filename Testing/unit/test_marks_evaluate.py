"""Border marks (issue 11): signed distance to the GTV surface, honoured / missed, arrows, reports.

Analytic references:
- a half-space mask (inside voxel centres up to index n along one axis) has its surface half-way to the next centre:
  the signed distance of a point is exactly its coordinate minus that plane's (any spacing, any grid rotation);
- a sphere of radius 20 mm: a mark at r mm from the centre is at r - 20 mm from the surface. The voxelised surface
  (cell faces) lies within half a voxel diagonal of the sphere, so the measured distance must be within
  0.5 * |spacing| of r - 20 (1-Lipschitz property of the distance function).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from DelineationReviewLib.core.marks import (
    BorderMark,
    MarkSet,
    evaluateMarks,
    signedDistancesMm,
)
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry

RADIUS_MM = 20.0


def sphereCase(spacing, centreOffset, direction=None):
    """A grid of ``spacing`` around a 20 mm sphere whose centre is ``centreOffset`` mm off a voxel centre."""
    spacing = np.asarray(spacing, float)
    half = RADIUS_MM + 8.0
    size = tuple(int(v) for v in np.ceil(2 * half / spacing) + 1)
    geometry = ImageGeometry(size, tuple(spacing), (0.0, 0.0, 0.0),
                             direction if direction is not None else (1, 0, 0, 0, 1, 0, 0, 0, 1))
    centreIjk = (np.array(size) - 1) // 2
    centre = geometry.indexToLps(centreIjk) + geometry.directionMatrix @ np.asarray(centreOffset, float)
    mask = np.linalg.norm(geometry.voxelCentresLps() - centre, axis=-1) <= RADIUS_MM
    return geometry, centre, mask


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


# ---- exactness of the half-voxel convention ----------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_half_space_distance_is_exact_with_anisotropic_spacing(axis):
    spacing = (0.8, 0.7, 2.5)
    geometry = ImageGeometry((40, 40, 40), spacing, (-5.0, 3.0, 10.0))
    mask = np.zeros(geometry.shape, bool)
    sl = [slice(None)] * 3
    sl[2 - axis] = slice(0, 20)  # inside: index 0..19 along `axis` (the grid edge is > 6.3 mm away)
    mask[tuple(sl)] = True
    planeMm = geometry.originMm[axis] + 19.5 * spacing[axis]
    centre = np.array(geometry.indexToLps(np.array(geometry.sizeXyz) / 2.0))
    offsets = np.array([-6.3, -2.0, -0.4, 0.0, 0.3, 1.25, 4.9])
    points = np.repeat(centre[None, :], len(offsets), axis=0)
    points[:, axis] = planeMm + offsets
    d = signedDistancesMm(points, mask, geometry)
    np.testing.assert_allclose(d, offsets, atol=1e-9)


def test_half_space_on_a_rotated_grid():
    angle = math.radians(30.0)
    c, s = math.cos(angle), math.sin(angle)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)  # i axis = (c, s, 0) in LPS
    geometry = ImageGeometry((24, 24, 10), (0.9, 0.9, 2.0), (12.0, -7.0, 3.0), direction)
    mask = np.zeros(geometry.shape, bool)
    mask[:, :, :10] = True  # i <= 9
    iAxis = geometry.directionMatrix[:, 0]
    onPlane = geometry.indexToLps([9.5, 12.0, 5.0])
    offsets = np.array([-3.0, -0.2, 0.0, 0.6, 5.0])
    d = signedDistancesMm(onPlane + offsets[:, None] * iAxis, mask, geometry)
    np.testing.assert_allclose(d, offsets, atol=1e-9)


def test_distance_to_a_single_voxel_cell_is_point_to_box():
    geometry = ImageGeometry((9, 9, 9), (1.0, 2.0, 3.0))
    mask = np.zeros(geometry.shape, bool)
    mask[4, 4, 4] = True  # cell [3.5, 4.5] x [7, 9] x [10.5, 13.5] mm
    points = np.array([[4.0, 8.0, 12.0], [6.5, 8.0, 12.0], [6.5, 11.0, 12.0], [6.5, 11.0, 17.5]])
    expected = [-0.5, 2.0, math.hypot(2.0, 2.0), math.sqrt(4 + 4 + 16)]
    np.testing.assert_allclose(signedDistancesMm(points, mask, geometry), expected, atol=1e-9)


def test_empty_mask_gives_nan():
    geometry = ImageGeometry((5, 5, 5), (1.0, 1.0, 1.0))
    assert np.isnan(signedDistancesMm([[1.0, 1.0, 1.0]], np.zeros(geometry.shape, bool), geometry)).all()


# ---- issue 11 analytic acceptance: 18 / 20 / 23 mm from a 20 mm sphere ------------------------------------------
DIRECTIONS = {
    "+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0), "+z": (0, 0, 1), "-z": (0, 0, -1),
    "xy": (1, 1, 0), "xyz": (1, 1, 1), "oblique": (1, -2, 0.5), "steep": (0.3, 0.2, -1.0),
}


@pytest.mark.parametrize("spacing,offset", [
    ((0.5, 0.5, 0.5), (0.11, -0.17, 0.23)),
    ((0.8, 0.8, 2.5), (0.3, -0.2, 1.0)),
])
def test_sphere_marks_at_18_20_23_mm(spacing, offset):
    geometry, centre, mask = sphereCase(spacing, offset)
    halfVoxelMm = 0.5 * float(np.linalg.norm(spacing))
    marks = []
    for name, direction in DIRECTIONS.items():
        for r in (18.0, 20.0, 23.0):
            marks.append(BorderMark(f"{name}@{r:g}", tuple(centre + r * unit(direction)), frame="CT",
                                    id=f"{name}@{r:g}"))
    evaluation = evaluateMarks(MarkSet(tuple(marks), "CT"), {"sphere": mask}, geometry, toleranceMm=2.0)
    worst = 0.0
    for mark in marks:
        r = float(mark.id.split("@")[1])
        result = evaluation.result(mark.id, "sphere")
        error = result.signedDistanceMm - (r - RADIUS_MM)
        worst = max(worst, abs(error))
        assert abs(error) <= halfVoxelMm, (mark.id, result.signedDistanceMm)
        assert result.honoured is (r != 23.0), (mark.id, result.signedDistanceMm)
        assert result.reachesBorder is result.honoured
        if r != 18.0:  # |-2| <= 2 sits on the tolerance itself
            assert result.withinTolerance is (r == 20.0)
    summary = evaluation.summary("sphere")
    assert summary.nMarks == 30 and summary.nHonoured == 20
    assert summary.honouredFraction == pytest.approx(2 / 3)
    assert summary.worstMissLabel.endswith("@23")
    assert summary.worstMissMm == pytest.approx(3.0, abs=halfVoxelMm)
    print(f"spacing {spacing}: worst |error| {worst:.3f} mm (bound {halfVoxelMm:.3f})")


def test_sphere_error_bound_holds_for_random_centres_and_directions():
    """The proven bound |d - d_true| <= half the voxel diagonal, on random sub-voxel centres and directions."""
    rng = np.random.default_rng(11)
    spacing = (0.8, 0.8, 2.5)
    bound = 0.5 * float(np.linalg.norm(spacing))
    errors = []
    for _ in range(6):
        geometry, centre, mask = sphereCase(spacing, rng.uniform(-0.5, 0.5, 3) * np.array(spacing))
        directions = rng.normal(size=(15, 3))
        directions /= np.linalg.norm(directions, axis=1)[:, None]
        for r in (14.0, 18.0, 20.0, 23.0, 30.0):
            d = signedDistancesMm(centre + r * directions, mask, geometry)
            errors.append(d - (r - RADIUS_MM))
    errors = np.array(errors)  # rows: radius 14, 18, 20, 23, 30 (x 6 centres)
    # Proven: <= bound far from the surface (staircase), <= 2 x bound near it (plane fit accepted within the
    # staircase's interval). Measured: well inside the single bound everywhere.
    assert np.max(np.abs(errors)) <= bound
    near = errors.reshape(6, 5, -1)[:, 1:4]  # 18, 20, 23 mm: where the plane fit is used
    assert abs(np.mean(near)) < 0.25  # nearly unbiased (the bare staircase pulls |d| toward 0 by ~0.5 mm)


def test_marks_beyond_the_rim_of_a_flat_ended_gtv():
    """An independent review: a GTV contoured on planes ends flat; marks 2 mm beyond the rim of its end (45 degrees
    out) read 3.24 mm on a 0.98 x 0.98 x 3 mm grid with the plane fit, every one missed at 3 mm. With the quadric
    over the plane: all honoured, nearly unbiased (measured mean 2.21 mm); straight above the flat end exact."""
    spacing = (0.98, 0.98, 3.0)
    geometry = ImageGeometry(tuple(int(90 / s) for s in spacing), spacing)
    k, j, i = np.indices(geometry.shape)
    x, y = i * spacing[0], j * spacing[1]
    cx, cy, radius = 45.3, 44.8, 15.0
    first, last = int(25 / spacing[2]), int(65 / spacing[2])
    top = (last + 0.5) * spacing[2]  # the flat end on the voxel faces
    mask = ((x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2) & (k >= first) & (k <= last)
    angles = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    outward = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    rims = np.array([cx, cy, top]) + radius * outward
    marks = rims + 2.0 * (outward + np.array([0.0, 0.0, 1.0])) / np.sqrt(2.0)
    distances = signedDistancesMm(marks, mask, geometry)
    assert np.all(distances <= 3.0) and abs(distances.mean() - 2.0) < 0.35, distances
    above = signedDistancesMm([[cx + 3.0, cy, top + 2.0]], mask, geometry)
    assert above[0] == pytest.approx(2.0, abs=1e-9)


def _ellipsoidDistance(point, centre, semiAxes) -> float:
    """Exact signed distance to an ellipsoid (closest point by bisection on the Lagrange multiplier)."""
    q = np.abs(np.asarray(point, float) - centre)
    inside = np.sum((q / semiAxes) ** 2) <= 1.0
    lo, hi = -np.min(semiAxes ** 2) + 1e-12, 1e4
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.sum((semiAxes * q / (semiAxes ** 2 + mid)) ** 2) > 1.0:
            lo = mid
        else:
            hi = mid
    distance = float(np.linalg.norm(q - semiAxes ** 2 * q / (semiAxes ** 2 + lo)))
    return -distance if inside else distance


def test_marks_on_a_narrow_gtv_on_the_small_demo_grid():
    """An ellipsoid GTV of 24 x 10 x 22 mm semi-axes (the demo's) on its 3.5 x 3.5 x 5 mm grid; marks on the
    surface and 3 mm in and out along the normals at the six tips and 60 random points. Against the exact distance
    the error is RMS 0.77 mm, mean +0.47, at most 2.13 (the staircase alone: RMS 0.90, mean +0.34); the earlier
    unweighted fit over 10.5 mm let the walls of the tips tilt the plane: RMS 1.37, mean +1.01, a mark on a tip
    read 3.6 mm out (missed at 3 mm). Every error stays within the proven bound (twice the half voxel diagonal
    near the surface)."""
    spacing = np.array([3.5, 3.5, 5.0])
    geometry = ImageGeometry((27, 27, 19), tuple(spacing), (-45.5, -45.5, -45.0))
    semiAxes, centre = np.array([24.0, 10.0, 22.0]), np.array([0.31, -0.47, 0.77])
    mask = np.sum(((geometry.voxelCentresLps() - centre) / semiAxes) ** 2, axis=-1) <= 1.0
    rng = np.random.default_rng(3)
    directions = [np.array(v, float) for v in np.vstack([np.eye(3), -np.eye(3)])] + list(rng.normal(size=(60, 3)))
    points, truth, tips = [], [], []
    for n, u in enumerate(directions):
        surface = u / np.sqrt(np.sum((u / semiAxes) ** 2))
        normal = unit(surface / semiAxes ** 2)
        for offset in (-3.0, 0.0, 3.0):
            points.append(centre + surface + offset * normal)
            truth.append(_ellipsoidDistance(points[-1], centre, semiAxes))
            tips.append(n < 6 and offset == 0.0)
    error = signedDistancesMm(np.array(points), mask, geometry) - np.array(truth)
    assert np.sqrt(np.mean(error ** 2)) < 0.8 and abs(np.mean(error)) < 0.5
    assert np.max(np.abs(error)) <= float(np.linalg.norm(spacing))  # 2 x half the voxel diagonal
    assert np.max(np.abs(error[np.array(tips)])) < 2.0


# ---- arrows ------------------------------------------------------------------------------------------------------
def test_arrow_coverage_on_a_half_space():
    geometry = ImageGeometry((40, 10, 10), (0.5, 1.0, 1.0))
    mask = np.zeros(geometry.shape, bool)
    mask[:, :, :21] = True  # x <= 10 mm, surface at x = 10.25 mm
    y, z = 5.0, 5.0
    arrows = (
        BorderMark("covered", (10.25, y, z), (2.25, y, z), frame="CT", id="a1"),  # 8 mm, all inside
        BorderMark("short", (16.25, y, z), (2.25, y, z), frame="CT", id="a2"),  # 14 mm, 6 mm outside
        BorderMark("gap", (10.25, y, z), (2.25, y, z), frame="CT", id="a3"),
    )
    holed = mask.copy()
    holed[:, :, 8:13] = False  # x in [4, 6] mm is a 2.5 mm gap in the GTV along the arrow (cells 3.75..6.25)
    evaluation = evaluateMarks(MarkSet(arrows, "CT"), {"full": mask, "holed": holed}, geometry, toleranceMm=2.0)
    covered = evaluation.result("a1", "full")
    assert covered.arrowCoverage == pytest.approx(1.0)
    assert covered.signedDistanceMm == pytest.approx(0.0, abs=1e-9)
    assert covered.honoured
    short = evaluation.result("a2", "full")
    assert short.signedDistanceMm == pytest.approx(6.0, abs=1e-9)
    assert short.arrowUncoveredMm == pytest.approx(6.0, abs=0.5)  # samples every <= 0.5 mm
    assert not short.arrowCovered and not short.honoured
    assert short.clearMiss  # 6 mm > 2 mm tolerance + 0.75 mm (half the 0.5 x 1 x 1 mm voxel diagonal)
    gap = evaluation.result("a3", "holed")
    assert gap.arrowUncoveredMm == pytest.approx(2.5, abs=0.5)
    assert gap.reachesBorder and not gap.arrowCovered and not gap.honoured
    # an arrow is missed by the larger of its tip's distance and its uncovered length: on the holed GTV "short"
    # by 6 mm beyond its tip plus the 2.5 mm gap (8.7 mm sampled), "gap" by 2.5 mm, not by its tip's 0 mm
    shortHoled = evaluation.result("a2", "holed")
    assert shortHoled.arrowUncoveredMm > shortHoled.signedDistanceMm + 2.0
    assert evaluation.summary("holed").worstMissMm == pytest.approx(shortHoled.arrowUncoveredMm)
    alone = evaluateMarks(MarkSet((arrows[2],), "CT"), {"holed": holed}, geometry, toleranceMm=2.0)
    assert alone.summary("holed").worstMissLabel == "gap"
    assert alone.summary("holed").worstMissMm == pytest.approx(gap.arrowUncoveredMm)
    assert not [n for n in evaluation.notes if "tail lies outside" in n]  # every tail inside a GTV
    # drawn the usual way, from outside pointing at the border: uncovered for every observer, and said (a review:
    # every observer flagged without a word)
    inward = BorderMark("pointing in", (10.25, y, z), (18.25, y, z), frame="CT", id="a4")
    pointing = evaluateMarks(MarkSet((inward,), "CT"), {"full": mask, "holed": holed}, geometry, toleranceMm=2.0)
    assert pointing.result("a4", "full").arrowUncoveredMm == pytest.approx(8.0, abs=0.5)
    assert pointing.notes == ("arrow(s) 'pointing in': the tail lies outside every observer's GTV. An arrow mark "
                              "runs from inside the tumour (tail) to its border (tip); drawn from outside, pointing "
                              "at the border, it reads as uncovered for every observer: redraw it from inside, or "
                              "mark its tip as a point",)


# ---- summaries, over-contouring, JSON, rows, errors -------------------------------------------------------------
def test_observer_summary_flags_the_missing_observer_and_over_contouring():
    geometry, centre, big = sphereCase((1.0, 1.0, 1.0), (0.2, 0.3, 0.1))
    small = np.linalg.norm(geometry.voxelCentresLps() - centre, axis=-1) <= 14.0
    marks = MarkSet((
        BorderMark("anterior", tuple(centre + (0, -20, 0)), frame="CT", confidence=0.9),
        BorderMark("left", tuple(centre + (20, 0, 0)), frame="CT"),
        BorderMark("inner", tuple(centre + (0, 0, 12)), frame="CT"),
    ), "CT", source="test")
    evaluation = evaluateMarks(marks, {"A": big, "B": small}, geometry, toleranceMm=3.0)
    assert evaluation.flaggedObservers == ("B",)
    summaryB = evaluation.summary("B")
    assert summaryB.nHonoured == 1 and summaryB.worstMissMm == pytest.approx(6.0, abs=0.5)
    assert summaryB.worstMissLabel in ("anterior", "left")
    summaryA = evaluation.summary("A")
    assert summaryA.flagged is False and summaryA.worstMissMm is None
    assert summaryA.overContouredLabels == ("inner",)  # the GTV extends ~8 mm beyond the "inner" mark
    # counted and measured in the summary, not only in the per-mark rows (a review: a GTV 10 mm beyond every mark
    # was summarised as the exact one): the sphere of 20 mm reaches 8 mm beyond the mark 12 mm from its centre
    assert summaryA.nOverContoured == 1 and summaryA.worstOverContourMm == pytest.approx(8.0, abs=0.5)
    assert summaryB.nOverContoured == 0 and summaryB.worstOverContourMm is None
    report = evaluation.toDict()
    text = json.dumps(report, allow_nan=False)  # strict JSON: no NaN
    assert json.loads(text)["summary"]["B"]["worstMissLabel"] == summaryB.worstMissLabel
    first = report["marks"][0]
    assert first["positionRas"] == [-first["positionLps"][0], -first["positionLps"][1], first["positionLps"][2]]
    assert first["observers"]["A"]["honoured"] is True and first["confidence"] == 0.9
    rows = evaluation.toRows()
    assert set(rows[0]) == {"mark", "observer", "metric", "value"}
    value = next(r["value"] for r in rows if r["mark"] == "(all marks)" and r["observer"] == "B"
                 and r["metric"] == "honouredFraction")
    assert value == pytest.approx(1 / 3, abs=1e-4)
    summaryRows = {(r["observer"], r["metric"]): r["value"] for r in rows if r["mark"] == "(all marks)"}
    assert summaryRows[("A", "nOverContoured")] == 1 and summaryRows[("A", "worstOverContourMm")] == pytest.approx(
        summaryA.worstOverContourMm, abs=1e-3)
    assert ("B", "worstOverContourMm") not in summaryRows


def test_empty_observer_is_undefined_not_zero():
    geometry, centre, mask = sphereCase((1.0, 1.0, 1.0), (0, 0, 0))
    marks = MarkSet((BorderMark("m", tuple(centre + (20, 0, 0)), frame="CT"),), "CT")
    evaluation = evaluateMarks(marks, {"empty": np.zeros_like(mask)}, geometry)
    result = evaluation.result("M1", "empty")
    assert math.isnan(result.signedDistanceMm) and not result.honoured and "empty" in result.reason
    assert evaluation.toDict()["marks"][0]["observers"]["empty"]["signedDistanceMm"] is None
    assert evaluation.summary("empty").worstMissLabel == "m"
    # its worst miss is undefined, and the CSV row says why (not "no mark missed")
    from DelineationReviewLib.core.marks import iovCsvRows

    row = next(r for r in iovCsvRows(evaluation.toDict()) if r["metric"] == "worstMissMm")
    assert row["value"] == "" and row["undefinedReason"] == ("the GTV is empty: every mark is missed, by an "
                                                             "undefined distance")


def test_refuses_mri_marks_and_mismatched_masks():
    geometry = ImageGeometry((5, 5, 5), (1.0, 1.0, 1.0))
    mri = MarkSet((BorderMark("m", (1, 1, 1), frame="MRI"),), "MRI")
    with pytest.raises(InputError, match="map them to the planning CT"):
        evaluateMarks(mri, {"A": np.ones(geometry.shape, bool)}, geometry)
    ct = MarkSet((BorderMark("m", (1, 1, 1), frame="CT"),), "CT")
    with pytest.raises(InputError, match="does not match the grid"):
        evaluateMarks(ct, {"A": np.ones((4, 5, 5), bool)}, geometry)


def test_markset_validation():
    with pytest.raises(ValueError, match="unique"):
        MarkSet((BorderMark("a", (0, 0, 0), id="x"), BorderMark("b", (1, 0, 0), id="x")), "MRI")
    with pytest.raises(ValueError, match="frame"):
        MarkSet((BorderMark("a", (0, 0, 0), frame="CT"),), "MRI")
    with pytest.raises(ValueError, match="confidence"):
        BorderMark("a", (0, 0, 0), confidence=1.5)
    assert BorderMark("a", (0, 0, 0), (1, 0, 0)).kind == "arrow"


def test_sphere_on_a_rotated_anisotropic_grid():
    a = math.radians(25.0)
    direction = (math.cos(a), 0.0, math.sin(a), 0.0, 1.0, 0.0, -math.sin(a), 0.0, math.cos(a))
    geometry, centre, mask = sphereCase((0.8, 0.8, 2.5), (0.3, -0.2, 1.0), direction)
    bound = 0.5 * float(np.linalg.norm((0.8, 0.8, 2.5)))
    for u in ((1, 0, 0), (0, 0, 1), (1, -1, 1)):
        d = signedDistancesMm(centre + np.outer([18.0, 20.0, 23.0], unit(u)), mask, geometry)
        np.testing.assert_allclose(d, [-2.0, 0.0, 3.0], atol=bound)


def test_observers_on_their_own_grids_need_no_resampling():
    """A mark is a point in LPS: each observer may be measured on its own grid and the answer is the same."""
    shared = ImageGeometry((60, 60, 24), (1.0, 1.0, 2.5), (-30.0, -30.0, -30.0))
    own = ImageGeometry((50, 44, 20), (1.0, 1.0, 2.5), (-25.0, -22.0, -22.5))  # same lattice, other extent
    centre = np.array([0.3, 0.2, 1.1])

    def ball(g):
        return np.linalg.norm(g.voxelCentresLps() - centre, axis=-1) <= 15.0

    marks = MarkSet((BorderMark("a", tuple(centre + (0, 17.0, 0)), frame="CT"),
                     BorderMark("b", tuple(centre + (0, 0, -14.0)), frame="CT")), "CT")
    evaluation = evaluateMarks(marks, {"onShared": ball(shared), "onOwn": (ball(own), own)}, shared)
    for mark in marks:
        assert evaluation.result(mark.id, "onOwn").signedDistanceMm == pytest.approx(
            evaluation.result(mark.id, "onShared").signedDistanceMm, abs=1e-9)
    assert evaluation.result("M1", "onOwn").signedDistanceMm == pytest.approx(2.0, abs=0.5)
