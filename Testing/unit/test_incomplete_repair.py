"""Incomplete repair for courses given more than once a day (Thames 1985): the factor, EQD2, the budget inverse, the
case file, the dose pipeline, the report and the ``eqd2`` command.

The factor is checked against an independent sum over the fraction timeline (every pair of fractions of one day
interacts with φ = 2^(−Δt/T½) for the hours Δt between them; no interaction across days), against Thames' closed
forms (h_2 = φ, h_3 = (4φ + 2φ²)/3) and against its physical limits (long intervals: full repair; fractions close
together with a long half-time: one fraction of their summed dose).
"""

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.cli import main
from ReirradiationDoseLib.core.budget import remainingPhysicalDoseGy
from ReirradiationDoseLib.core.casefile import TissueSpec, parseCaseFile
from ReirradiationDoseLib.core.dosereport import reportHtml, summaryDict
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry, arrayFromImage, imageFromArray
from ReirradiationDoseLib.core.pipeline import CourseInput, DoseInputs, DoseSettings, computeDose
from ReirradiationDoseLib.core.radiobiology import (
    FractionSchedule,
    Fractionation,
    bedGy,
    courseEqd2Gy,
    eqd2Gy,
    incompleteRepairFactor,
)


def timelineFactor(n, perDay, hours, halfTime):
    """Independent: lay the fractions on a clock (day k at 24 k h, the day's fractions ``hours`` apart) and add the
    interaction of every pair on the same day; the quadratic terms relative to n independent fractions."""
    times = [(index // perDay, (index % perDay) * (hours or 0.0)) for index in range(n)]
    total = float(n)
    for i in range(n):
        for j in range(i + 1, n):
            if times[i][0] == times[j][0]:
                total += 2.0 * 0.5 ** (abs(times[j][1] - times[i][1]) / halfTime)
    return total / n


@pytest.mark.parametrize("n, perDay, hours, halfTime", [
    (34, 2, 6.0, 1.5), (35, 2, 6.0, 1.5), (17, 2, 6.0, 4.0), (36, 3, 6.0, 6.0), (37, 3, 5.0, 2.5), (1, 2, 6.0, 1.5),
    (10, 4, 4.0, 3.0), (5, 1, None, 1.5)])
def test_factor_equals_the_sum_over_the_fraction_timeline(n, perDay, hours, halfTime):
    assert incompleteRepairFactor(n, FractionSchedule(perDay, hours), halfTime) == pytest.approx(
        timelineFactor(n, perDay, hours, halfTime), rel=1e-12)


def test_factor_matches_thames_closed_forms_and_its_limits():
    phi = 2.0 ** (-6.0 / 1.5)
    assert incompleteRepairFactor(34, FractionSchedule(2, 6), 1.5) == pytest.approx(1 + phi)  # h_2 = φ = 1/16
    phi = 0.5
    assert incompleteRepairFactor(36, FractionSchedule(3, 6), 6.0) == pytest.approx(1 + (4 * phi + 2 * phi ** 2) / 3)
    # 35 fractions twice a day: 17 days of two and a last day of one
    assert incompleteRepairFactor(35, FractionSchedule(2, 6), 1.5) == pytest.approx((17 * (2 + 2 / 16) + 1) / 35)
    # once a day: no correction whatever the half-time
    assert incompleteRepairFactor(25, FractionSchedule(), 4.0) == 1.0
    # 12 h apart with a 0.5 h half-time: repair is complete (φ = 2^-24)
    assert incompleteRepairFactor(30, FractionSchedule(2, 12.0), 0.5) == pytest.approx(1.0, abs=1e-6)
    # two fractions a minute apart with a 12 h half-time act as one fraction of twice the dose
    g = incompleteRepairFactor(30, FractionSchedule(2, 1 / 60), 12.0)
    assert eqd2Gy(60.0, 30, 3.0, repairFactor=g) == pytest.approx(eqd2Gy(60.0, 15, 3.0), rel=1e-3)  # 84 Gy
    assert eqd2Gy(60.0, 30, 3.0) == pytest.approx(60.0)  # not 84 Gy when each fraction is repaired
    # per tissue: one factor per half-time
    assert np.allclose(incompleteRepairFactor(34, FractionSchedule(2, 6), np.array([1.5, 6.0])), [1.0625, 1.5])


def test_hyperfractionated_rectal_reirradiation_reference_values():
    """REFERENCE §2 case 7: 40.8 Gy in 34 fractions of 1.2 Gy → 34.27 Gy EQD2₃ with full repair. Given twice a day
    6 h apart: T½ 1.5 h → 40.8 (1.2 × 1.0625 + 3) / 5 = 34.88 Gy; T½ 4 h (φ = 2^-1.5 = 0.3536) → 37.73 Gy."""
    assert eqd2Gy(40.8, 34, 3.0) == pytest.approx(34.27, abs=0.01)
    bid = Fractionation(34, 40.8, FractionSchedule(2, 6.0))
    assert courseEqd2Gy(40.8, bid, 3.0, repairHalfTimeHours=1.5) == pytest.approx(34.88, abs=0.01)
    assert courseEqd2Gy(40.8, bid, 3.0, repairHalfTimeHours=4.0) == pytest.approx(37.73, abs=0.01)
    assert bedGy(40.8, 34, 3.0, repairFactor=1.0625) == pytest.approx(40.8 * (1 + 1.2 * 1.0625 / 3), abs=1e-9)
    assert bid.describe() == "40.8 Gy / 34 fx, 2 fractions a day, 6 h apart"
    with pytest.raises(InputError, match="repair half-time"):
        courseEqd2Gy(40.8, bid, 3.0)


def test_schedules_that_are_not_schedules_are_refused():
    for args, message in [((1, 6.0), "more than one fraction a day"), ((2, None), "hours between them"),
                          ((3, 12.0), "do not fit in a day"), ((5, 2.0), "not a radiotherapy schedule"),
                          ((2, 20.0), "leave 4 h from a day's last fraction to the next day's first"),
                          ((2, 0.0), "positive number"), ((0, None), "whole number")]:
        with pytest.raises(InputError, match=message):
            FractionSchedule(*args)
    with pytest.raises(InputError, match="repair half-time"):
        incompleteRepairFactor(34, FractionSchedule(2, 6.0), 0.0)
    with pytest.raises(InputError, match="≥ 1"):
        eqd2Gy(40.8, 34, 3.0, repairFactor=0.9)


def test_budget_inverse_includes_the_planned_courses_repair_factor():
    """The largest physical dose of a twice-daily course within an EQD2 allowance is the exact inverse: it adds the
    allowance back (and is less than a once-daily course may give)."""
    allowance = np.array([34.884, 10.0, 0.0, -3.0])
    g = np.array([1.0625, 1.3536, 1.0625, 1.0625])
    dose = remainingPhysicalDoseGy(allowance, 34, 3.0, repairFactor=g)
    assert dose[0] == pytest.approx(40.8, abs=1e-6)
    assert np.allclose(eqd2Gy(dose[:2], 34, 3.0, repairFactor=g[:2]), allowance[:2], atol=1e-9)
    assert dose[1] < remainingPhysicalDoseGy(10.0, 34, 3.0)
    assert list(dose[2:]) == [0.0, 0.0]


# ---- the dose pipeline -----------------------------------------------------------------------------------------
@pytest.fixture
def bidCase():
    geometry = ImageGeometry((10, 8, 6), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    rng = np.random.default_rng(3)
    prior = rng.uniform(0, 50, geometry.shape).astype(np.float32)
    current = rng.uniform(0, 45, geometry.shape).astype(np.float32)
    gtv = np.zeros(geometry.shape, bool)
    gtv[1:3, 2:5, 2:6] = True
    plexus = np.zeros(geometry.shape, bool)
    plexus[3:6, :, 0:3] = True
    courses = [CourseInput("prior", prior, geometry, 25, date=dt.date(2023, 1, 1)),
               CourseInput("reRT", current, geometry, 34, isCurrent=True, date=dt.date(2026, 10, 1),
                           schedule=FractionSchedule(2, 6.0))]
    settings = DoseSettings(tissues={"GTV": TissueSpec(10.0), "SacralPlexus": TissueSpec(2.0, repairHalfTimeHours=4.0)},
                            targets=("GTV",), repairHalfTimeHours=1.5)
    inputs = DoseInputs(geometry.emptyImage(sitk.sitkInt16), {"GTV": gtv, "SacralPlexus": plexus}, courses, settings)
    return inputs, prior, current, gtv, plexus


def test_pipeline_applies_each_tissues_half_time_to_the_twice_daily_course_only(bidCase, tmp_path):
    inputs, prior, current, gtv, plexus = bidCase
    result = computeDose(inputs)
    ab = np.where(gtv, 10.0, np.where(plexus, 2.0, 3.0))
    g = np.where(plexus & ~gtv, 1 + 2 ** -1.5, 1 + 2 ** -4)  # T½ 4 h in the plexus, 1.5 h elsewhere (6 h apart)
    c = current.astype(float)
    expectedCurrent = c * (g * c / 34 + ab) / (2 + ab)
    p = prior.astype(float)
    assert np.max(np.abs(result.courses[1].eqd2Gy - expectedCurrent)) < 1e-3
    assert np.max(np.abs(result.courses[0].eqd2Gy - p * (p / 25 + ab) / (2 + ab))) < 1e-3  # once a day: no factor
    assert np.max(np.abs(result.compositeEqd2Gy - (p * (p / 25 + ab) / (2 + ab) + expectedCurrent))) < 1e-3
    assert result.courses[0].incompleteRepair is None
    repair = result.courses[1].incompleteRepair
    assert repair["repairHalfTimeHours"] == {"outside every structure": 1.5, "GTV": 1.5, "SacralPlexus": 4.0}
    assert repair["quadraticFactor"]["SacralPlexus"] == pytest.approx(1 + 2 ** -1.5)
    # a constraint at its own α/β reads the course's EQD2 with the same factors
    assert np.allclose(result.courses[1].eqd2At(2.0), c * (g * c / 34 + 2.0) / 4.0, atol=1e-3)
    summary = summaryDict(result)
    assert summary["courses"][1]["schedule"] == {"fractionsPerDay": 2, "hoursBetweenFractions": 6.0}
    assert summary["limitations"][0].startswith("EQD2 uses the linear-quadratic model") and \
        "Thames 1985" in summary["limitations"][0]
    html = reportHtml(result)
    assert "2, 6 h apart; incomplete repair, T½ 1.5–4 h (quadratic term ×1.062–1.354)" in html
    assert "<td>SacralPlexus</td><td></td><td>4.00</td><td>1.3536</td>" in html


def test_pipeline_budget_for_a_twice_daily_planned_course(bidCase, tmp_path):
    inputs, prior, current, gtv, plexus = bidCase
    constraints = tmp_path / "set.json"
    constraints.write_text(json.dumps({"name": "test", "constraints": [
        {"structure": "SacralPlexus", "metric": "Dmax", "limit": 200, "unit": "Gy", "alphaBetaGy": 2.0,
         "kind": "cumulative", "source": "test"}]}))
    inputs.settings = dataclasses.replace(inputs.settings, constraints=str(constraints), plannedFractions=20,
                                          plannedSchedule=FractionSchedule(2, 6.0))
    result = computeDose(inputs)
    region = plexus & ~gtv
    allowed = 200.0 - result.courses[0].eqd2At(2.0)[region] - result.courses[1].eqd2At(2.0)[region]
    budget = result.remainingBudgetGy[region].astype(float)
    # the budget adds back exactly what is allowed, with the plexus's factor (T½ 4 h) on the planned course
    assert np.allclose(eqd2Gy(budget, 20, 2.0, repairFactor=1 + 2 ** -1.5), allowed, atol=1e-3)
    assert result.budgetByOrgan[0]["plannedFractionsPerDay"] == 2


def test_pipeline_refuses_a_twice_daily_course_with_a_tissue_without_half_time(bidCase):
    inputs, *_ = bidCase
    inputs.settings = dataclasses.replace(inputs.settings, repairHalfTimeHours=None)
    with pytest.raises(InputError, match="no repair half-time .*outside every structure, GTV"):
        computeDose(inputs)


def test_half_times_without_a_twice_daily_course_are_said_to_be_unused(bidCase):
    inputs, *_ = bidCase
    inputs.courses[1] = dataclasses.replace(inputs.courses[1], schedule=FractionSchedule())
    result = computeDose(inputs)
    assert any("repair half-times were given but every course is given once a day" in w for w in result.warnings)
    assert "every course here is given once a day" in summaryDict(result)["limitations"][0]


# ---- case file and command line -----------------------------------------------------------------------------------
def writeCase(tmp_path, **changes):
    for name in ("ct.nrrd", "dose.nrrd"):  # placeholders where a test has not written real images
        if not (tmp_path / name).exists():
            (tmp_path / name).write_bytes(b"x")
    case = {"referenceImage": "ct.nrrd", "courses": [{"name": "reRT", "dose": "dose.nrrd", "fractions": 34,
                                                      "fractionsPerDay": 2, "hoursBetweenFractions": 6}],
            "repairHalfTimeHours": 1.5}
    for key, value in changes.items():
        if key.startswith("course_"):
            case["courses"][0][key[7:]] = value
            if value is None:
                del case["courses"][0][key[7:]]
        elif value is None:
            case.pop(key, None)
        else:
            case[key] = value
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case))
    return path


def test_case_file_schedule_and_half_times(tmp_path):
    case = parseCaseFile(writeCase(tmp_path, tissues={"SacralPlexus": {"alphaBeta": 2, "repairHalfTimeHours": 4}},
                                   plannedCourse={"fractions": 20, "fractionsPerDay": 2, "hoursBetweenFractions": 6}))
    assert case.courses[0].schedule == FractionSchedule(2, 6.0)
    assert case.repairHalfTimeHours == 1.5 and case.tissues["SacralPlexus"].repairHalfTimeHours == 4.0
    assert case.plannedCourse.schedule == FractionSchedule(2, 6.0)
    settings = DoseSettings.fromCase(case)
    assert settings.repairHalfTimeHours == 1.5 and settings.plannedSchedule.fractionsPerDay == 2
    for changes, message in [
            ({"repairHalfTimeHours": None}, "course 'reRT' gives more than one fraction a day: the incomplete-repair "
                                            "correction needs the tissues' repair half-time"),
            ({"course_fractionsPerDay": None}, "course 'reRT': hours between fractions are for more than one"),
            ({"course_hoursBetweenFractions": None}, "course 'reRT': 2 fractions a day need the hours between them"),
            ({"course_hoursBetweenFractions": -6}, "hoursBetweenFractions must be a positive number"),
            ({"course_fractionsPerDay": 1.5}, "fractionsPerDay must be a positive whole number"),
            ({"repairHalfTimeHours": 24}, "repair half-time must be a positive number of hours, at most 12"),
            ({"tissues": {"Rectum": {"repairHalfTimeHours": "1.5"}}}, r"tissues\['Rectum'\] repair half-time")]:
        with pytest.raises(InputError, match=message) as caught:
            parseCaseFile(writeCase(tmp_path, **changes))
        assert caught.value.path is not None and Path(caught.value.path).name == "case.json"


def test_rtplan_fraction_pattern_gives_fractions_per_day(tmp_path):
    import pydicom

    from ReirradiationDoseLib.core.rtplan import _fractionsPerDay

    group = pydicom.Dataset()
    group.NumberOfFractionPatternDigitsPerDay = 2
    group.RepeatFractionCycleLength = 1
    group.FractionPattern = "11111111110000"  # Monday-Friday twice a day
    assert _fractionsPerDay(group) == 2
    group.FractionPattern = "10101010100000"  # Monday-Friday once (the first slot)
    assert _fractionsPerDay(group) == 1
    group.FractionPattern = "1x"
    assert _fractionsPerDay(group) is None
    assert _fractionsPerDay(pydicom.Dataset()) is None


def test_eqd2_command_twice_a_day(tmp_path, capsys):
    geometry = ImageGeometry((4, 4, 3), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    dose = tmp_path / "dose.nrrd"
    sitk.WriteImage(imageFromArray(np.full(geometry.shape, 40.8, np.float32), geometry), str(dose))
    out = tmp_path / "eqd2.nrrd"
    assert main(["eqd2", "--dose", str(dose), "--fractions", "34", "--alpha-beta", "3", "--fractions-per-day", "2",
                 "--hours-between-fractions", "6", "--repair-half-time", "4", "-o", str(out)]) == 0
    image = sitk.ReadImage(str(out))
    assert np.allclose(arrayFromImage(image)[0], 37.734, atol=1e-3)
    assert image.GetMetaData("ReirradiationDose.IncompleteRepairFactor") == f"{1 + 2 ** -1.5:.6g}"
    assert image.GetMetaData("ReirradiationDose.FractionsPerDay") == "2"
    assert main(["eqd2", "--dose", str(dose), "--fractions", "34", "--alpha-beta", "3", "--fractions-per-day", "2",
                 "--hours-between-fractions", "6", "-o", str(tmp_path / "x.nrrd")]) == 2
    assert "give --repair-half-time" in capsys.readouterr().err
    assert not (tmp_path / "x.nrrd").exists()
    assert main(["eqd2", "--dose", str(dose), "--fractions", "34", "--alpha-beta", "3", "--repair-half-time", "2",
                 "-o", str(tmp_path / "x.nrrd")]) == 2
    assert "more than once a day" in capsys.readouterr().err
    assert math.isclose(float(arrayFromImage(image)[0].max()), 37.734, abs_tol=1e-3)


def test_an_rtplan_pattern_of_two_a_day_is_warned_when_the_case_says_once(demoCase, tmp_path):
    """The demo's current RTPLAN given a Monday-Friday twice-a-day FractionPattern: a case without fractionsPerDay
    is computed once a day as it says, and warned naming the plan; with the case's 2 a day, nothing is said."""
    import pydicom

    from ReirradiationDoseLib.core import rtplan
    from ReirradiationDoseLib.core.casefile import CourseSpec
    from ReirradiationDoseLib.core.pipeline import _fractions

    dataset = pydicom.dcmread(demoCase.outputDir / "current" / "RTPLAN.dcm")
    dataset.FractionGroupSequence[0].NumberOfFractionPatternDigitsPerDay = 2
    dataset.FractionGroupSequence[0].RepeatFractionCycleLength = 1
    dataset.FractionGroupSequence[0].FractionPattern = "11111111110000"
    plan = tmp_path / "RTPLAN_bid.dcm"
    dataset.save_as(plan)
    assert rtplan.readRtPlan(plan).fractionsPerDay == 2
    warnings = []
    course = CourseSpec(name="current", dose=demoCase.outputDir / "current" / "RTDOSE.dcm", plan=plan)
    fractions, source, _, _ = _fractions(course, rtplan.readRtPlan(plan), None, warnings)
    assert fractions == 17 and source == "RTPLAN RTPLAN_bid.dcm"
    assert warnings == ["course 'current': its RTPLAN's fraction pattern (RTPLAN_bid.dcm) gives 2 fraction(s) a day, "
                        "the case file 1: the case's is used (give 'fractionsPerDay' and 'hoursBetweenFractions' for "
                        "the incomplete-repair correction of a course given more than once a day)"]
    warnings.clear()
    _fractions(dataclasses.replace(course, schedule=FractionSchedule(2, 6.0)), rtplan.readRtPlan(plan), None,
               warnings)
    assert warnings == []


def test_a_constraint_reads_its_organ_with_the_organs_own_half_time_where_a_target_owns_voxels(bidCase, tmp_path):
    """Found by review: sacral-plexus voxels owned by the GTV took the GTV's half-time (1.5 h) for the plexus's own
    constraint at α/β 2, understating it (the plexus is 4 h); its α/β was already the constraint's. Now the constraint
    reads every plexus voxel with 4 h; the voxel maps keep the owner's factor, and the budget the organ's."""
    inputs, prior, current, gtv, plexus = bidCase
    plexus[1:3, 2:5, 2:4] = True  # part of the plexus inside the GTV (the GTV owns it)
    constraints = tmp_path / "set.json"
    constraints.write_text(json.dumps({"name": "test", "constraints": [
        {"structure": "SacralPlexus", "metric": "Dmax", "limit": 500, "unit": "Gy", "alphaBetaGy": 2.0,
         "kind": "cumulative", "source": "test"},
        {"structure": "SacralPlexus", "metric": "Dmax", "limit": 500, "unit": "Gy", "alphaBetaGy": 2.0,
         "kind": "first-course", "source": "test"}]}))
    inputs.settings = dataclasses.replace(inputs.settings, constraints=str(constraints), plannedFractions=20,
                                          plannedSchedule=FractionSchedule(2, 6.0))
    result = computeDose(inputs)
    c, p = current.astype(float), prior.astype(float)
    own = 1 + 2 ** -1.5
    currentAt2 = c * (own * c / 34 + 2.0) / 4.0
    cumulative = p * (p / 25 + 2.0) / 4.0 + currentAt2
    rows = {(r.constraint.kind, r.course): r for r in result.constraintResults}
    assert rows[("cumulative", None)].value == pytest.approx(cumulative[plexus].max(), abs=1e-3)
    assert rows[("first-course", "reRT")].value == pytest.approx(currentAt2[plexus].max(), abs=1e-3)
    inGtv = plexus & gtv
    assert inGtv.any() and currentAt2[inGtv].max() > (c * ((1 + 2 ** -4) * c / 34 + 2.0) / 4.0)[inGtv].max()
    # the voxel map (DVH rows, composite) keeps the owner's factor: the GTV's 1.5 h in the GTV
    assert result.courses[1].eqd2Gy[inGtv] == pytest.approx((c * ((1 + 2 ** -4) * c / 34 + 10.0) / 12.0)[inGtv],
                                                            abs=1e-3)
    # the budget inverts with the plexus's own factor in all of it, and says which it used
    allowed = 500.0 - cumulative[plexus]
    assert np.allclose(eqd2Gy(result.remainingBudgetGy[plexus].astype(float), 20, 2.0, repairFactor=own), allowed,
                       atol=1e-3)
    row = result.budgetByOrgan[0]
    assert row["plannedRepairHalfTimeHours"] == 4.0 and row["plannedQuadraticFactor"] == pytest.approx(own)


def test_an_overnight_gap_too_short_for_the_half_time_is_warned(bidCase):
    """Complete repair overnight is the model's assumption: with T½ 4 h the 18 h night leaves 2^-4.5 = 4.4 % and the
    factor counting every pair of fractions (days back to back) is more than 1 % above; said with both factors."""
    from ReirradiationDoseLib.core.radiobiology import overnightRepairFactor

    inputs, *_ = bidCase
    result = computeDose(inputs)
    full = overnightRepairFactor(34, FractionSchedule(2, 6.0), 4.0)
    assert full == pytest.approx(timelineAllPairs(34, 2, 6.0, 4.0), rel=1e-12)
    assert full > (1 + 2 ** -1.5) * 1.01
    assert [w for w in result.warnings if "complete repair overnight" in w] == [
        f"course 'reRT': with a repair half-time of 4 h (SacralPlexus), the 18 h from a day's last fraction to the "
        f"next day's first leave 4.4 % of the damage unrepaired; the model assumes complete repair overnight. "
        f"Counting it too (days back to back), the quadratic term would be ×{full:.4f} instead of "
        f"×{1 + 2 ** -1.5:.4f}: the EQD2 is understated there"]
    # 1.5 h everywhere: 2^-12 left overnight, nothing to say
    inputs.settings = dataclasses.replace(inputs.settings, tissues={"GTV": TissueSpec(10.0),
                                                                    "SacralPlexus": TissueSpec(2.0)})
    assert not any("overnight" in w for w in computeDose(inputs).warnings)


def timelineAllPairs(n, perDay, hours, halfTime):
    """Independent: every pair of fractions interacts over the hours between them, days back to back."""
    times = [24.0 * (i // perDay) + hours * (i % perDay) for i in range(n)]
    return (n + 2.0 * sum(0.5 ** ((times[j] - times[i]) / halfTime) for i in range(n) for j in range(i + 1, n))) / n


def test_a_case_missing_half_times_is_refused_before_the_registrations(tmp_path):
    """Half-times given for one tissue only: refused while loading (it was refused after the registrations)."""
    from ReirradiationDoseLib.core.geometry import imageFromArray
    from ReirradiationDoseLib.core.pipeline import loadCaseInputs
    from ReirradiationDoseLib.core.segio import writeSegNrrd

    geometry = ImageGeometry((8, 8, 4), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    sitk.WriteImage(imageFromArray(np.zeros(geometry.shape, np.int16), geometry), str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(imageFromArray(np.full(geometry.shape, 30.0, np.float32), geometry), str(tmp_path / "dose.nrrd"))
    rectum = np.zeros(geometry.shape, bool)
    rectum[1:3, 2:5, 2:5] = True
    writeSegNrrd(tmp_path / "s.seg.nrrd", {"Rectum": rectum, "Bladder": np.roll(rectum, 3, 2)}, geometry)
    path = writeCase(tmp_path, repairHalfTimeHours=None, structures="s.seg.nrrd",
                     tissues={"Rectum": {"repairHalfTimeHours": 2.0}})
    with pytest.raises(InputError, match="no repair half-time for the incomplete-repair correction: outside every "
                                         "structure, Bladder") as raised:
        loadCaseInputs(parseCaseFile(path))
    assert Path(raised.value.path).name == "case.json"


def test_a_tissue_table_with_a_bad_half_time_is_named(tmp_path, capsys):
    from ReirradiationDoseLib.core.tissues import TissueTable

    table = tmp_path / "table.json"
    table.write_text(json.dumps({"tissues": [{"name": "Rectum", "alphaBetaGy": 3, "repairHalfTimeHours": -1}]}))
    with pytest.raises(InputError, match="tissue table: tissue 'Rectum' repair half-time") as raised:
        TissueTable.fromJson(table)
    assert Path(raised.value.path).name == "table.json"


def test_eqd2_command_twice_a_day_with_structures_uses_each_tissues_half_time(tmp_path, capsys):
    """``eqd2 --segmentation`` of a twice-a-day course: every voxel's quadratic term carries the incomplete-repair
    factor of its own tissue's half-time (Thames, two fractions 6 h apart: 1 + 2^(-6/T½)), the voxels outside every
    structure the default given by --repair-half-time; without it those voxels are refused by name."""
    from ReirradiationDoseLib.core.segio import writeSegNrrd

    geometry = ImageGeometry((6, 4, 3), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    dose = tmp_path / "dose.nrrd"
    sitk.WriteImage(imageFromArray(np.full(geometry.shape, 40.8, np.float32), geometry), str(dose))
    rectum = np.zeros(geometry.shape, bool)
    rectum[:, :, :2] = True
    cord = np.zeros(geometry.shape, bool)
    cord[:, :, 2:4] = True
    segmentation = tmp_path / "s.seg.nrrd"
    writeSegNrrd(segmentation, {"Rectum": rectum, "Cord": cord}, geometry)
    table = tmp_path / "tissues.json"
    table.write_text(json.dumps({"tissues": [
        {"name": "Rectum", "alphaBetaGy": 3.0, "repairHalfTimeHours": 1.5},
        {"name": "Cord", "alphaBetaGy": 2.0, "repairHalfTimeHours": 4.0}], "defaultAlphaBetaGy": 10.0}))
    out = tmp_path / "eqd2.nrrd"
    common = ["eqd2", "--dose", str(dose), "--fractions", "34", "--segmentation", str(segmentation), "--tissues",
              str(table), "--fractions-per-day", "2", "--hours-between-fractions", "6"]
    assert main([*common, "--repair-half-time", "2", "-o", str(out)]) == 0
    eqd2 = arrayFromImage(sitk.ReadImage(str(out)))[0]

    def expected(alphaBeta, halfTime):  # d = 1.2 Gy
        return 40.8 * (1 + (1 + 2 ** (-6 / halfTime)) * 1.2 / alphaBeta) / (1 + 2 / alphaBeta)

    assert eqd2[rectum] == pytest.approx(expected(3.0, 1.5), abs=1e-4)
    assert eqd2[cord] == pytest.approx(expected(2.0, 4.0), abs=1e-4)
    outside = ~(rectum | cord)
    assert eqd2[outside] == pytest.approx(expected(10.0, 2.0), abs=1e-4)
    assert len({round(float(v), 3) for v in eqd2.ravel()}) == 3
    capsys.readouterr()
    assert main([*common, "-o", str(tmp_path / "x.nrrd")]) == 2
    assert "no repair half-time for outside every structure" in capsys.readouterr().err
    assert not (tmp_path / "x.nrrd").exists()
