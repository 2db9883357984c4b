"""Issue 7: a 3-course case on one grid gives the hand-computed composite voxel for voxel (1e-3 Gy)."""

import datetime as dt

import numpy as np
import pytest

from ReirradiationDoseLib.core.casefile import TissueSpec
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.pipeline import CourseInput, DoseInputs, DoseSettings, computeDose


def handEqd2(dose, n, ab):
    return dose * (dose / n + ab) / (2.0 + ab)


def cumulativeConstraints(tmp_path, *rows) -> str:
    """A constraint file of cumulative limits ``(structure, metric, limit, unit, α/β)``; its path."""
    import json

    path = tmp_path / "set.json"
    path.write_text(json.dumps({"name": "test", "constraints": [
        {"structure": structure, "metric": metric, "limit": limit, "unit": unit, "alphaBetaGy": ab,
         "kind": "cumulative", "source": "test"} for structure, metric, limit, unit, ab in rows]}))
    return str(path)


def cropFirstCourse(inputs, slices: int = 6) -> None:
    """Cut the first course's dose grid to its first ``slices`` slices: the rest of the grid has unknown dose."""
    import dataclasses

    first = inputs.courses[0]
    geometry = first.doseGeometry
    cropped = ImageGeometry((geometry.sizeXyz[0], geometry.sizeXyz[1], slices), geometry.spacingMm,
                            geometry.originMm)
    inputs.courses[0] = dataclasses.replace(first, doseGy=np.ascontiguousarray(first.doseGy[:slices]),
                                            doseGeometry=cropped)


@pytest.fixture
def threeCourses():
    geometry = ImageGeometry((12, 10, 8), (2.0, 2.0, 3.0), (-11.0, -9.0, -10.5))
    rng = np.random.default_rng(7)
    shape = geometry.shape
    doses = [rng.uniform(0, 60, shape).astype(np.float32), rng.uniform(0, 20, shape).astype(np.float32),
             rng.uniform(0, 35, shape).astype(np.float32)]
    gtv = np.zeros(shape, bool)
    gtv[2:5, 3:7, 4:8] = True
    rectum = np.zeros(shape, bool)
    rectum[4:7, 2:6, 2:9] = True  # overlaps the GTV: the target wins
    cord = np.zeros(shape, bool)
    cord[:, 8:, :] = True
    import SimpleITK as sitk
    reference = geometry.emptyImage(sitk.sitkInt16)
    courses = [
        CourseInput("first", doses[0], geometry, 25, date=dt.date(2020, 1, 1)),
        CourseInput("second", doses[1], geometry, 5, date=dt.date(2023, 6, 1)),
        CourseInput("current", doses[2], geometry, 17, isCurrent=True, date=dt.date(2026, 10, 1)),
    ]
    settings = DoseSettings(
        tissues={"GTV": TissueSpec(alphaBetaGy=10.0),
                 "Rectum": TissueSpec(3.0, {"model": "constant", "fraction": 0.25}),
                 "SpinalCord": TissueSpec(2.0)},
        defaultAlphaBetaGy=3.0, targets=("GTV",))
    inputs = DoseInputs(reference, {"GTV": gtv, "Rectum": rectum, "SpinalCord": cord}, courses, settings)
    return inputs, doses, gtv, rectum, cord


def test_three_course_composite_matches_hand_computation(threeCourses):
    inputs, doses, gtv, rectum, cord = threeCourses
    result = computeDose(inputs)
    ab = np.full(gtv.shape, 3.0)
    ab[cord] = 2.0
    ab[rectum] = 3.0
    ab[gtv] = 10.0
    recovery = np.where(rectum & ~gtv, 0.25, 0.0)
    expected = ((1 - recovery) * handEqd2(doses[0].astype(float), 25, ab)
                + (1 - recovery) * handEqd2(doses[1].astype(float), 5, ab)
                + handEqd2(doses[2].astype(float), 17, ab))
    assert np.allclose(result.alphaBetaGy, ab)
    assert np.max(np.abs(result.compositeEqd2Gy - expected)) < 1e-3
    for course, dose, n in zip(result.courses, doses, (25, 5, 17), strict=True):
        assert np.max(np.abs(course.eqd2Gy - handEqd2(dose.astype(float), n, ab))) < 1e-3
        assert course.coverageFraction == pytest.approx(1.0)
    # DVH of the composite on the GTV: Dmax is the hottest voxel.
    assert result.dvh["GTV"]["composite"].dmaxGy == pytest.approx(expected[gtv].max(), abs=1e-3)


def test_two_current_courses_refused(threeCourses):
    inputs = threeCourses[0]
    inputs.courses[0].isCurrent = True
    with pytest.raises(InputError, match="exactly one course must be the current one"):
        computeDose(inputs)


def test_negative_dose_refused(threeCourses):
    inputs = threeCourses[0]
    inputs.courses[1].doseGy[0, 0, 0] = -1.0
    with pytest.raises(InputError, match="course 'second': the dose holds negative"):
        computeDose(inputs)


def test_constraints_use_their_own_alpha_beta_and_dose(threeCourses, tmp_path):
    """A cumulative constraint at α/β 2 is compared with the composite at α/β 2, not the voxel map's 3; a
    first-course limit is read on every course alone — without α/β in its physical dose, with one in its own EQD2
    at that α/β, no recovery — one result per course, each naming the dose it was read from."""
    import json

    from ReirradiationDoseLib.core.pipeline import DoseSettings

    inputs, doses, gtv, rectum, cord = threeCourses
    constraints = tmp_path / "set.json"
    constraints.write_text(json.dumps({"name": "test", "constraints": [
        {"structure": "Rectum", "metric": "Dmax", "limit": 1000, "unit": "Gy", "alphaBetaGy": 2.0,
         "kind": "cumulative", "source": "test"},
        {"structure": "Rectum", "metric": "Dmax", "limit": 50, "unit": "Gy", "alphaBetaGy": None,
         "kind": "first-course", "source": "test"},
        {"structure": "Rectum", "metric": "Dmax", "limit": 1000, "unit": "Gy", "alphaBetaGy": 3.0,
         "kind": "first-course", "source": "test"},
        {"structure": "Plexus", "metric": "Dmax", "limit": 50, "unit": "Gy", "alphaBetaGy": None,
         "kind": "first-course", "source": "test"}]}))
    inputs.settings = DoseSettings(tissues=inputs.settings.tissues, targets=("GTV",), constraints=str(constraints))
    result = computeDose(inputs)
    cumulative, *rest = result.constraintResults
    onlyRectum = rectum & ~gtv
    expectedAt2 = (0.75 * handEqd2(doses[0].astype(float), 25, 2.0) + 0.75 * handEqd2(doses[1].astype(float), 5, 2.0)
                   + handEqd2(doses[2].astype(float), 17, 2.0))
    expectedAt2 = np.where(gtv, handEqd2(doses[0].astype(float), 25, 2.0) + handEqd2(doses[1].astype(float), 5, 2.0)
                           + handEqd2(doses[2].astype(float), 17, 2.0), expectedAt2)
    assert cumulative.value == pytest.approx(expectedAt2[rectum].max(), abs=1e-3)
    assert cumulative.course is None and cumulative.dose.startswith(
        "composite EQD2 at α/β 2 Gy (all courses, the organ's own recovery applied); recovery credited: 'first' 25 % "
        "(constant, ")
    assert "'second' 25 % (constant, " in cumulative.dose and "(none where a target owns a voxel)" in cumulative.dose
    assert onlyRectum.any()
    physical, atThree, missing = rest[:3], rest[3:6], rest[6:]
    names = ("first", "second", "current")
    assert [r.course for r in physical] == [r.course for r in atThree] == list(names)
    for item, dose, n, name in zip(physical, doses, (25, 5, 17), names, strict=True):
        # a limit from conventional fractionation: the physical dose, or its EQD2 at the rectum's α/β 3 where higher
        # (above 2 Gy a fraction: the first course's 60 Gy in 25 (64.8 Gy EQD2), the second's 20 Gy in 5 (28 Gy))
        value = float(np.fmax(dose, handEqd2(dose.astype(float), n, 3.0))[rectum].max())
        assert item.value == pytest.approx(value, abs=1e-3)
        assert item.status == ("pass" if value < 50 else "fail")
        assert item.dose == (f"course '{name}' alone: physical dose, or its EQD2 at the organ's α/β where higher "
                             "(more than 2 Gy a fraction, or incomplete repair)")
    assert physical[1].value > float(doses[1][rectum].max()) + 5.0  # 4 Gy a fraction: EQD2 28 Gy, not 20 Gy
    # the tables name each first-course row's course (a physicist's review: only the free-text dose column did)
    from ReirradiationDoseLib.core.dosereport import constraintRows

    tableRows = constraintRows(result)
    assert [r["course"] for r in tableRows[:4]] == ["", "first", "second", "current"]
    # 35 Gy in 17 (2.05 Gy a fraction at the hottest voxel): within 2 % of the physical dose
    assert physical[2].value == pytest.approx(float(doses[2][rectum].max()), rel=0.02)
    # the first course's 0-60 Gy fails its single-course 50 Gy; the second course's 0-20 Gy passes it
    assert [r.status for r in physical[:2]] == ["fail", "pass"]
    # a prior course's row says it is the delivered dose, not a verdict on the new plan; the current course's does not
    assert all("not a verdict on the new plan" in r.reason for r in physical[:2]) and physical[2].reason == ""
    for item, dose, n, name in zip(atThree, doses, (25, 5, 17), names, strict=True):
        assert item.value == pytest.approx(handEqd2(dose.astype(float), n, 3.0)[rectum].max(), abs=1e-3)
        assert item.dose == f"course '{name}' alone: EQD2 at α/β 3 Gy"
    # an organ that is not delineated is said once, not once per course
    assert len(missing) == 1 and missing[0].status == "not evaluated" and "Plexus" in missing[0].reason


def test_remaining_budget_per_voxel_is_the_lq_inverse_of_what_is_left(threeCourses, tmp_path):
    """Planned course of 10 fractions, rectum D0.03cc < 110 Gy EQD2 at α/β 3: in the rectum the budget is the largest
    physical dose D with D (D/10 + 3)/5 = 110 − (composite of all courses at α/β 3); NaN outside constrained organs."""
    import json

    from ReirradiationDoseLib.core.pipeline import DoseSettings

    inputs, doses, gtv, rectum, cord = threeCourses
    constraints = tmp_path / "set.json"
    constraints.write_text(json.dumps({"name": "test", "constraints": [
        {"structure": "Rectum", "metric": "D0.03cc", "limit": 110, "unit": "Gy", "alphaBetaGy": 3.0,
         "kind": "cumulative", "source": "test"}]}))
    inputs.settings = DoseSettings(tissues=inputs.settings.tissues, targets=("GTV",), constraints=str(constraints),
                                   plannedFractions=10)
    result = computeDose(inputs)
    recovery = np.where(rectum & ~gtv, 0.25, 0.0)
    prior = sum((1 - (0 if n == 17 else 1) * recovery) * handEqd2(d.astype(float), n, 3.0)
                for d, n in zip(doses, (25, 5, 17), strict=True))
    allowed = 110.0 - prior
    expected = np.where(allowed > 0, (-3.0 + np.sqrt(9.0 + 4 * np.maximum(allowed, 0) * 5.0 / 10)) / (2 / 10), 0.0)
    assert np.allclose(result.remainingBudgetGy[rectum], expected[rectum], atol=1e-3)
    assert np.all(np.isnan(result.remainingBudgetGy[~rectum]))
    # the LQ inverse is exact: the allowed physical dose adds exactly the allowed EQD2
    D = result.remainingBudgetGy[rectum]
    assert np.allclose(handEqd2(D.astype(float), 10, 3.0), np.maximum(allowed[rectum], 0), atol=1e-3)
    assert result.budgetByOrgan[0]["structure"] == "Rectum"
    # the map is written with a planned course (a review: no test wrote it), its header naming the quantity, and it
    # is refused as a course's dose
    import SimpleITK as sitk

    from ReirradiationDoseLib.core.doseoutputs import writeDoseOutputs
    from ReirradiationDoseLib.core.errors import InputError
    from ReirradiationDoseLib.core.rtdose import headerQuantityOfFile, refuseNonPhysicalMap

    writeDoseOutputs(result, tmp_path / "out", pictures=False)
    written = tmp_path / "out" / "remaining_budget.nrrd"
    image = sitk.ReadImage(str(written))
    assert image.GetMetaData("ReirradiationDose.Quantity") == "remaining budget of a planned course"
    assert "planned course of 10 fractions" in image.GetMetaData("quantity")
    assert np.array_equal(sitk.GetArrayFromImage(image), result.remainingBudgetGy, equal_nan=True)
    with pytest.raises(InputError, match="holds 'remaining budget of a planned course'"):
        refuseNonPhysicalMap(headerQuantityOfFile(written), written)
    # the report says what the budget is, with readable headers (they were the summary's key names)
    from ReirradiationDoseLib.core.dosereport import reportHtml

    report = reportHtml(result)
    assert "on top of every course listed above (the prior ones and the current one)" in report
    assert "<th>Smallest physical dose the new course may add in the organ (Gy)</th>" in report
    assert "minRemainingPhysicalGy" not in report
    # a volume limit gives no per-voxel budget: said in the warnings and the report (before: no section, an empty
    # list and an all-NaN map, without a reason)
    constraints.write_text(json.dumps({"name": "test", "constraints": [
        {"structure": "Rectum", "metric": "V40Gy[%]", "limit": 50, "unit": "%", "alphaBetaGy": 3.0,
         "kind": "cumulative", "source": "test"}]}))
    result = computeDose(inputs)
    assert result.budgetByOrgan == [] and any(w.startswith("plannedCourse (10 fractions): no cumulative near-maximum "
                                                          "limit") for w in result.warnings)
    report = reportHtml(result)
    assert "no remaining budget is computed" in report and "Rectum: V40Gy[%] &lt; 50 %" in report


def test_without_structures_every_voxel_takes_the_default_alpha_beta_and_it_is_warned(threeCourses):
    """No structures (the module's Apply with none selected, a case file without ``structures``): the composite is
    computed with the default α/β everywhere, voxel for voxel as by hand, and the warnings say the target took it
    too (this used to stop with "no structures given"). No recovery applies (it is defined per organ)."""
    import dataclasses

    inputs, doses, *_ = threeCourses
    bare = dataclasses.replace(inputs, masks={}, settings=dataclasses.replace(inputs.settings, defaultAlphaBetaGy=2.5))
    result = computeDose(bare)
    expected = sum(handEqd2(d.astype(float), n, 2.5) for d, n in zip(doses, (25, 5, 17), strict=True))
    assert np.all(result.alphaBetaGy == 2.5)
    assert np.max(np.abs(result.compositeEqd2Gy - expected)) < 1e-3
    assert ("no structures were given: every voxel takes the default α/β of 2.5 Gy, the target included, and there "
            "are no DVHs or structure constraints") in result.warnings
    assert result.dvh == {} and all(r.status == "not evaluated" for r in result.constraintResults)


def test_dvh_rows_read_every_structure_at_its_own_alpha_beta(threeCourses):
    """The rectum overlaps the GTV, whose α/β 10 wins in the composite map: its DVH rows are computed at its own
    α/β 3 over the whole rectum (before, its GTV part was read at α/β 10 under an "α/β 3" label; a physicist's review
    of the demo: rectum D2cc 79.31 against 78.47 Gy at α/β 3), its recovery applied except where the GTV owns the
    voxel, and the rows give that share."""
    from ReirradiationDoseLib.core.dosereport import dvhRows

    inputs, doses, gtv, rectum, cord = threeCourses
    result = computeDose(inputs)
    rows = [r for r in dvhRows(result) if r["structure"] == "Rectum"]
    assert len(rows) == 4  # the composite and the three courses
    share = 100.0 * np.count_nonzero(rectum & gtv) / np.count_nonzero(rectum)
    assert 0 < share < 100
    recovery = np.where(gtv, 0.0, 0.25)
    atThree = [handEqd2(d.astype(float), n, 3.0) for d, n in zip(doses, (25, 5, 17), strict=True)]
    composite = (1 - recovery) * atThree[0] + (1 - recovery) * atThree[1] + atThree[2]
    byDose = {r["dose"]: r for r in rows}
    assert byDose["composite EQD2"]["dmaxGy"] == pytest.approx(float(composite[rectum].max()), abs=1e-3)
    assert byDose["first EQD2"]["dmaxGy"] == pytest.approx(float(atThree[0][rectum].max()), abs=1e-3)
    for row in rows:
        assert row["alphaBetaGy"] == 3.0 and row["targetOwnedPercent"] == pytest.approx(share)
    gtvRows = [r for r in dvhRows(result) if r["structure"] == "GTV"]
    assert all(r["targetOwnedPercent"] is None and r["alphaBetaGy"] == 10.0 for r in gtvRows)
    gtvAtTen = sum(handEqd2(d.astype(float), n, 10.0) for d, n in zip(doses, (25, 5, 17), strict=True))
    assert next(r for r in gtvRows if r["dose"] == "composite EQD2")["dmaxGy"] == pytest.approx(
        float(gtvAtTen[gtv].max()), abs=1e-3)


def test_a_one_slice_reference_image_is_refused(tmp_path):
    """A one-slice "planning CT" ran the whole workflow and gave volumes of one slice and no isodose surfaces."""
    import json

    import SimpleITK as sitk

    from ReirradiationDoseLib.core.casefile import parseCaseFile
    from ReirradiationDoseLib.core.geometry import imageFromArray
    from ReirradiationDoseLib.core.pipeline import loadCaseInputs

    geometry = ImageGeometry((16, 16, 1), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    sitk.WriteImage(imageFromArray(np.zeros(geometry.shape, np.int16), geometry), str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(imageFromArray(np.full(geometry.shape, 30.0, np.float32), geometry), str(tmp_path / "dose.nrrd"))
    (tmp_path / "case.json").write_text(json.dumps({"referenceImage": "ct.nrrd", "courses": [
        {"name": "current", "dose": "dose.nrrd", "fractions": 17}]}))
    with pytest.raises(InputError, match="the reference image .* is 16 × 16 × 1 voxels: one voxel thick along z") \
            as raised:
        loadCaseInputs(parseCaseFile(tmp_path / "case.json"))
    assert str(raised.value.path).endswith("ct.nrrd")


def test_current_course_scaling_is_the_largest_factor_within_each_cumulative_limit(threeCourses, tmp_path):
    """How far the current course's dose may be scaled (its 17 fractions kept, the prior courses as they are with
    their recovery): for a Dmax limit the factor is, independently, the smallest over the organ's voxels of the LQ
    inverse of what the limit leaves divided by the voxel's current dose. A limit the prior courses alone break gives
    0, one far away "unlimited"; at factor 1 the metric equals the constraint table's value."""
    from ReirradiationDoseLib.core.budget import remainingPhysicalDoseGy
    from ReirradiationDoseLib.core.dosereport import scalingSentence, scalingSummary

    inputs, doses, gtv, rectum, cord = threeCourses
    constraints = cumulativeConstraints(tmp_path, ("Rectum", "Dmax", 110, "Gy", 3.0), ("Rectum", "Dmax", 60, "Gy", 3.0),
                                        ("SpinalCord", "Dmax", 5, "Gy", 2.0), ("SpinalCord", "Dmax", 1e9, "Gy", 2.0))
    inputs.settings = DoseSettings(tissues=inputs.settings.tissues, targets=("GTV",), constraints=constraints)
    result = computeDose(inputs)
    recovery = np.where(rectum & ~gtv, 0.25, 0.0)
    prior = sum((1 - recovery) * handEqd2(d.astype(float), n, 3.0) for d, n in zip(doses[:2], (25, 5), strict=True))
    current = doses[2].astype(float)
    rows = result.currentScaling
    assert [r["structure"] for r in rows] == ["Rectum", "Rectum", "SpinalCord", "SpinalCord"]
    for row, limit in zip(rows[:2], (110.0, 60.0), strict=True):
        perVoxel = remainingPhysicalDoseGy(limit - prior[rectum], 17, 3.0) / current[rectum]
        assert row["scaling"] == pytest.approx(perVoxel.min(), abs=2e-4)
        table = next(r for r in result.constraintResults if r.constraint.limit == limit and r.structureName == "Rectum")
        assert row["metricNow"] == pytest.approx(table.value, abs=1e-6)
        assert (row["scaling"] >= 1.0) == (table.status == "pass")
    assert rows[2]["scaling"] == 0.0 and "prior dose alone" in rows[2]["reason"]
    assert rows[3]["scaling"] is None and rows[3]["unlimited"]
    summary = scalingSummary(result)
    # the prior courses alone break the rectum's 60 Gy (GTV voxels, not recovered) and the cord's 5 Gy: said apart,
    # the limit reached first is the smallest factor above 0
    assert rows[1]["scaling"] == 0.0
    # (a review: the summary and the sentence led with the factor of the limits not yet reached, ×944.78 in a case
    # whose bowel the prior courses had taken over its limit; that comes first now, and the limiting factor is 0)
    assert summary["limitingScaling"] == 0.0 and summary["limitingConstraint"].startswith("Rectum: Rectum Dmax < 60")
    assert summary["otherLimitsScaling"] == rows[0]["scaling"] and summary["otherLimitsStructure"] == "Rectum"
    assert summary["otherLimitsConstraint"].startswith("Rectum: Rectum Dmax < 110")
    assert summary["reachedByPriorCourses"] == ["Rectum: Rectum Dmax < 60 Gy (EQD2, α/β 3 Gy), cumulative",
                                                "SpinalCord: SpinalCord Dmax < 5 Gy (EQD2, α/β 2 Gy), cumulative"]
    assert scalingSentence(summary) == (
        "the prior courses alone already reach Rectum: Rectum Dmax < 60 Gy (EQD2, α/β 3 Gy), cumulative; SpinalCord: "
        "SpinalCord Dmax < 5 Gy (EQD2, α/β 2 Gy), cumulative: no scaling of the current course meets them; within the "
        f"other limits, the current course's dose may be scaled by up to ×{rows[0]['scaling']:.3f} (its 17 fractions "
        "kept) before the first of them is reached (Rectum: Rectum Dmax < 110 Gy (EQD2, α/β 3 Gy), cumulative)")
    # without the limits the prior courses reach, the limiting factor is the smallest above 0, as before
    only = {**summary, "reachedByPriorCourses": []}
    assert scalingSentence(only).startswith(
        f"the current course's dose may be scaled by up to ×{rows[0]['scaling']:.3f} (its 17 fractions kept) before "
        "the first cumulative limit is reached")


def test_current_course_scaling_with_unknown_dose_in_part_is_an_upper_bound(threeCourses, tmp_path):
    """The first course's dose grid misses the rectum's last slices: the scaling is found on the known voxels and
    said to be an upper bound (the unknown part may allow less), in the row and in the sentence."""
    from ReirradiationDoseLib.core.budget import remainingPhysicalDoseGy
    from ReirradiationDoseLib.core.dosereport import scalingSentence, scalingSummary

    inputs, doses, gtv, rectum, cord = threeCourses
    cropFirstCourse(inputs)
    inputs.settings = DoseSettings(tissues=inputs.settings.tissues, targets=("GTV",),
                                   constraints=cumulativeConstraints(tmp_path, ("Rectum", "Dmax", 150, "Gy", 3.0)))
    result = computeDose(inputs)
    row, = result.currentScaling
    known = rectum.copy()
    known[6:] = False  # slices beyond the first course's grid
    recovery = np.where(rectum & ~gtv, 0.25, 0.0)
    prior = ((1 - recovery) * handEqd2(doses[0].astype(float), 25, 3.0)
             + (1 - recovery) * handEqd2(doses[1].astype(float), 5, 3.0))
    perVoxel = remainingPhysicalDoseGy(150 - prior[known], 17, 3.0) / doses[2].astype(float)[known]
    assert row["scaling"] == pytest.approx(perVoxel.min(), abs=2e-4)
    assert row["unknownPercent"] == pytest.approx(100 * (1 - known.sum() / rectum.sum()))
    assert row["reason"].startswith(f"an upper bound: {row['unknownPercent']:.1f} % of Rectum has unknown dose")
    assert scalingSentence(scalingSummary(result)).endswith("cumulative; at most: part of Rectum has unknown dose)")


def test_metrics_the_known_part_says_nothing_about_are_not_judged_on_it(threeCourses, tmp_path):
    """Found by review: with part of an organ of unknown dose, a Dmean or a volume percentage read on the known part
    may lie either side of the whole organ's (a hot known part reads V% 100 where the whole is 40 %): such rows are
    "not evaluated", pass or fail, and give no scaling; Dmax still fails on the known part (it can only rise)."""
    import json
    from pathlib import Path

    inputs, doses, gtv, rectum, cord = threeCourses
    cropFirstCourse(inputs)
    constraints = cumulativeConstraints(tmp_path, ("Rectum", "Dmean", 1000, "Gy", 3.0),
                                        ("Rectum", "V10Gy[%]", 1, "%", 3.0), ("Rectum", "Dmax", 1, "Gy", 3.0))
    lower = json.loads(Path(constraints).read_text())  # at least 1000 cc below 5 Gy: the known part cannot say
    lower["constraints"].append({**lower["constraints"][0], "metric": "CV5Gy[cc]", "comparison": ">=", "unit": "cc"})
    Path(constraints).write_text(json.dumps(lower))
    inputs.settings = DoseSettings(tissues=inputs.settings.tissues, targets=("GTV",), constraints=constraints)
    result = computeDose(inputs)
    dmean, vPercent, dmax, volumeBelow = result.constraintResults
    assert volumeBelow.status == "not evaluated"
    assert result.currentScaling[3]["scaling"] is None
    assert "the known part alone does not meet the limit" in result.currentScaling[3]["reason"]
    assert dmean.status == vPercent.status == "not evaluated"
    assert "which says nothing of the whole organ for V10Gy[%]" in vPercent.reason  # its known part fails
    assert dmax.status == "fail"
    rows = result.currentScaling
    assert [r["scaling"] for r in rows[:2]] == [None, None]
    assert all("says nothing of the whole organ" in r["reason"] for r in rows[:2])
    # ×0: the known part alone reaches the limit; no "may allow less" (a factor of 0 cannot be less: a review)
    assert rows[2]["scaling"] == 0.0 and rows[2]["bound"] is None
    assert "the known part alone already reaches the limit" in rows[2]["reason"]
    assert "may allow less" not in rows[2]["reason"]


def test_the_independent_check_warning_says_what_is_missing():
    """A course whose contour check holds guiding structures only is warned (they agree by construction); the advice
    says whether validation structures were named but none measured (a verification review: it told a user who had
    named one to name one), and landmark pairs or one measured unguided structure silence it."""
    from types import SimpleNamespace

    from ReirradiationDoseLib.core.pipeline import _independentCheckWarning

    def registration(rows, landmarks=None):
        return {"contourCheck": {"structures": rows}, "landmarks": landmarks}

    guided = [{"structure": "Bladder", "guided": True, "dice": 0.9}, {"structure": "Rectum", "guided": True,
                                                                      "dice": 0.8}]
    course = SimpleNamespace(name="prior", validationStructures=())
    warning = _independentCheckWarning(course, registration(guided))
    assert warning.startswith("course 'prior': every structure of the contour check (Bladder, Rectum) guided the "
                              "registration") and warning.endswith("name one or more in the course's "
                                                                   "'validationStructures' or give 'landmarks'")
    named = SimpleNamespace(name="prior", validationStructures=("SacralPlexus",))
    unmeasured = guided + [{"structure": "SacralPlexus", "guided": False, "dice": None}]
    assert _independentCheckWarning(named, registration(unmeasured)).endswith(
        "none of its validation structures (SacralPlexus) is delineated on both CTs: delineate one on both, or give "
        "'landmarks'")
    measured = guided + [{"structure": "SacralPlexus", "guided": False, "dice": 0.7}]
    assert _independentCheckWarning(named, registration(measured)) is None
    assert _independentCheckWarning(course, registration(guided, {"pairs": 4})) is None


def test_the_failure_sentence_separates_prior_courses_delivered_doses():
    """A physicist's review: "3 cumulative and 4 single-course constraint(s) failed" when the 4 were the prior
    courses' delivered doses (the current course passed every single-course limit) and 2 of the 3 observational."""
    from ReirradiationDoseLib.core.dosereport import failureSentence

    rows = ([{"status": "fail", "kind": "cumulative", "level": "observational", "course": ""}] * 2
            + [{"status": "fail", "kind": "cumulative", "level": "limit", "course": ""}]
            + [{"status": "fail", "kind": "first-course", "level": "limit", "course": c} for c in ("p1", "p1", "p2",
                                                                                                  "p2")]
            + [{"status": "pass", "kind": "first-course", "level": "limit", "course": "now"}])
    assert failureSentence(rows, "now") == ("3 cumulative limit(s) failed (2 of them observational); the current "
                                            "course fails 0 single-course limit(s); prior courses' delivered doses "
                                            "exceed 4 single-course tolerance(s)")
    assert failureSentence(rows[5:], "now") == ("0 cumulative limit(s) failed; the current course fails 0 "
                                                "single-course limit(s); prior courses' delivered doses exceed 2 "
                                                "single-course tolerance(s)")


def test_the_failure_sentence_counts_cumulative_limits_not_evaluated():
    """A review: the demo's summary line read "0 cumulative limit(s) failed" while its only applicable limit (Bowel
    D2cc, a fifth of the bowel outside the prior dose grid) was not evaluated."""
    from ReirradiationDoseLib.core.dosereport import failureSentence

    rows = [{"status": "not evaluated", "kind": "cumulative", "level": "limit", "course": "",
             "reason": "21.8 % of Bowel has unknown dose"},
            {"status": "pass", "kind": "cumulative", "level": "limit", "course": ""},
            {"status": "not evaluated", "kind": "first-course", "level": "limit", "course": "now"},
            # not counted: an organ the case does not delineate, an observational limit (a verification review)
            {"status": "not evaluated", "kind": "cumulative", "level": "limit", "course": "",
             "reason": "no structure named 'CaudaEquina' (or an alias) was given"},
            {"status": "not evaluated", "kind": "cumulative", "level": "observational", "course": ""}]
    assert failureSentence(rows, "now") == ("0 cumulative limit(s) failed, 1 not evaluated; the current course fails "
                                            "0 single-course limit(s)")
