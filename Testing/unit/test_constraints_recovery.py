"""How recovery, course dates and the overlap rule enter the constraint table and the remaining budget (defects found
by an independent review of the DVH and constraint evaluation, each reproduced here on small synthetic cases whose
values follow from REFERENCE §1 by hand):

- Nieder's cord criterion (BED ≤ 135.5 Gy₂ summed over the courses as given, valid with ≥ 6 months between them and
  each course ≤ 98 Gy₂) is read on the plain sum: discounting the prior course by a recovery model counted recovery
  twice (REFERENCE §2 case 5 read 45 Gy, a pass, instead of 70 Gy, a fail); outside its conditions it is not judged;
- an organ's cumulative limit reads the organ's own recovery, not that of an organ owning the overlap;
- time-based recovery counts calendar months (one year from 15 January is 12 months, not 11.99);
- the budget reads a limit without α/β at the voxel α/β map, like the constraint table, and says how much of the organ
  has unknown dose;
- the body outline yields its voxels to any organ inside it.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from ReirradiationDoseLib.core.casefile import TissueSpec
from ReirradiationDoseLib.core.dvh import DvhResult
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.pipeline import CourseInput, DoseInputs, DoseSettings, computeDose, tissueTableFor
from ReirradiationDoseLib.core.recovery import calendarMonthsBetween, dateMonthsBefore, monthsText, niederDoiRecovery
from ReirradiationDoseLib.core.tissues import alphaBetaMap, recoveryMap

SHAPE = (6, 6, 6)  # 2 mm voxels: 0.008 cc


def handEqd2(dose, fractions, alphaBeta):
    perFraction = dose / fractions
    return dose * (perFraction + alphaBeta) / (2.0 + alphaBeta)


def run(masks, courses, constraints, tissues=None, plannedFractions=None, shape=SHAPE, startDates=None):
    """computeDose on a 2 mm grid; ``courses``: (name, dose array or value, fractions, date, isCurrent) on the grid, or
    with a sixth item, the dose's own grid (z origin in mm, number of slices: a dose grid covering part of it).
    ``startDates``: {course name: its first fraction} of prior courses."""
    geometry = ImageGeometry(shape[::-1], (2.0, 2.0, 2.0))
    inputs = []
    for name, dose, fractions, date, isCurrent, *own in courses:
        doseGeometry, doseShape = geometry, shape
        if own:
            zOrigin, slices = own[0]
            doseShape = (slices,) + tuple(shape[1:])
            doseGeometry = ImageGeometry(doseShape[::-1], (2.0, 2.0, 2.0), (0.0, 0.0, zOrigin))
        inputs.append(CourseInput(name=name, doseGy=np.broadcast_to(np.float32(dose), doseShape).copy(),
                                  doseGeometry=doseGeometry, numberOfFractions=fractions, isCurrent=isCurrent,
                                  date=date, startDate=(startDates or {}).get(name)))
    settings = DoseSettings(tissues={k: TissueSpec(**v) for k, v in (tissues or {}).items()},
                            targets=("GTV",), constraints=constraints, plannedFractions=plannedFractions)
    return computeDose(DoseInputs(referenceImage=geometry.emptyImage(), masks=masks, courses=inputs,
                                  settings=settings))


def cordMask():
    cord = np.zeros(SHAPE, bool)
    cord[1:5, 2:4, 2:4] = True
    return cord


def row(result, structure, limit):
    return next(r for r in result.constraintResults if r.structureName == structure and r.constraint.limit == limit)


@pytest.mark.parametrize("recovery", [None, {"model": "nieder-doi"}, {"model": "constant", "fraction": 0.5}])
def test_nieders_criterion_is_read_on_the_plain_sum_whatever_the_recovery_model(recovery):
    """REFERENCE §2 case 5: cord 50 Gy / 25 fx + 8 Gy x 1, 13 months apart: 50 + 20 = 70 Gy EQD2₂ > 67.75, a fail,
    also when the cord is given a recovery model (before: 45 Gy with the Nieder/Doi step, a pass by 22.75 Gy)."""
    result = run({"SpinalCord": cordMask()},
                 [("prior", 50.0, 25, dt.date(2023, 1, 1), False), ("current", 8.0, 1, dt.date(2024, 2, 1), True)],
                 "general", tissues={"SpinalCord": {"alphaBetaGy": 2.0, "recovery": recovery}})
    nieder = row(result, "SpinalCord", 67.75)
    assert nieder.value == pytest.approx(70.0, abs=1e-3)
    assert nieder.status == "fail" and nieder.margin == pytest.approx(-2.25, abs=1e-3)
    assert "summed without recovery" in nieder.dose
    # the other cord limit (Simone's Dmax < 57 Gy) reads the recovery the user gave the cord
    simone = row(result, "SpinalCord", 57.0)
    recovered = {None: 0.0, "nieder-doi": 0.5, "constant": 0.5}[None if recovery is None else recovery["model"]]
    assert simone.value == pytest.approx((1 - recovered) * 50.0 + 20.0, abs=1e-3)


@pytest.mark.parametrize("constraints", ["general", "pelvic-reirradiation"])
def test_the_great_vessels_120_gy_is_read_on_the_plain_sum(constraints):
    """Evans 2013 saw fatal aortic events above a composite of 120 Gy summed without recovery (90 Gy after his own
    recovery correction): an aorta with 50 % recovery given, 70 Gy / 35 fx + 54 Gy / 27 fx, reads 124 Gy, a fail
    (before: 89 Gy, a pass by 31 Gy)."""
    result = run({"Aorta": cordMask()},
                 [("prior", 70.0, 35, dt.date(2022, 1, 1), False), ("current", 54.0, 27, dt.date(2024, 2, 1), True)],
                 constraints, tissues={"Aorta": {"alphaBetaGy": 3.0, "recovery": {"model": "constant",
                                                                                  "fraction": 0.5}}})
    evans = row(result, "Aorta", 120.0)
    assert evans.value == pytest.approx(124.0, abs=1e-3)
    assert evans.status == "fail" and "summed without recovery" in evans.dose


def test_nieders_criterion_outside_its_conditions_is_not_judged_and_warned():
    """54 Gy / 27 fx (108 Gy₂ > 98) and 3 Gy x 2 three months later: the plain sum 59.25 Gy EQD2₂ is below 67.75, but
    the criterion does not vouch for it (before: a pass by 6.25 Gy, no word of the conditions)."""
    result = run({"CaudaEquina": cordMask()},
                 [("prior", 54.0, 27, dt.date(2024, 1, 1), False), ("current", 6.0, 2, dt.date(2024, 4, 1), True)],
                 "pelvic-reirradiation")
    nieder = row(result, "CaudaEquina", 67.75)
    assert nieder.value == pytest.approx(54.0 + handEqd2(6.0, 2, 2.0), abs=1e-3)
    assert nieder.status == "not evaluated" and nieder.passed is None and nieder.margin is None
    assert "3.0 months before" in nieder.reason and "BED 108.0 Gy" in nieder.reason
    assert any("CaudaEquina" in w and "outside the criterion's conditions" in w for w in result.warnings)
    # within the conditions (7 months, 40 Gy / 20 fx = 80 Gy₂) the same criterion is judged: a pass
    result = run({"CaudaEquina": cordMask()},
                 [("prior", 40.0, 20, dt.date(2024, 1, 1), False), ("current", 6.0, 2, dt.date(2024, 8, 1), True)],
                 "pelvic-reirradiation")
    assert row(result, "CaudaEquina", 67.75).status == "pass"
    # above the limit it fails whatever the conditions: the known excess stands
    result = run({"CaudaEquina": cordMask()},
                 [("prior", 60.0, 30, dt.date(2024, 1, 1), False), ("current", 8.0, 1, dt.date(2024, 4, 1), True)],
                 "pelvic-reirradiation")
    assert row(result, "CaudaEquina", 67.75).status == "fail"


def test_criterion_conditions_in_a_constraint_file_are_checked(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "constraints": [
        {"structure": "Cord", "metric": "D0.03cc", "limit": 60, "unit": "Gy", "alphaBetaGy": 2, "kind": "cumulative",
         "conditions": {"minIntervalMonth": 6}}]}))
    from ReirradiationDoseLib.core.constraints import loadConstraintSet

    with pytest.raises(InputError, match="unknown condition.*minIntervalMonth"):
        loadConstraintSet(bad)
    bad.write_text(json.dumps({"name": "x", "constraints": [
        {"structure": "Cord", "metric": "V20Gy[%]", "limit": 60, "unit": "%", "alphaBetaGy": None,
         "kind": "first-course", "recoveryInLimit": True}]}))
    with pytest.raises(InputError, match="recoveryInLimit"):
        loadConstraintSet(bad)


def test_an_organ_limit_reads_the_organs_own_recovery_where_another_organ_owns_the_voxel():
    """Rectum (no recovery) half inside the bowel (priority 80 over 70, 50 % recovery): prior 70 Gy / 35 fx, current
    45 Gy / 15 fx where they overlap. The rectum's D2cc is 70 + 54 = 124 Gy EQD2₃, a fail (before: 89.0, a pass: the
    bowel's 50 % discounted the rectum's hottest voxels)."""
    shape = (20, 10, 10)
    rectum = np.zeros(shape, bool)
    rectum[:, 2:8, 2:8] = True
    bowel = np.zeros(shape, bool)
    bowel[0:10, 2:8, 2:8] = True
    current = np.zeros(shape, np.float32)
    current[0:10] = 45.0
    result = run({"Rectum": rectum, "Bowel": bowel},
                 [("prior", 70.0, 35, dt.date(2022, 1, 1), False), ("current", current, 15, dt.date(2024, 1, 1), True)],
                 "pelvic-reirradiation", shape=shape,
                 tissues={"Bowel": {"recovery": {"model": "constant", "fraction": 0.5}},
                          "Rectum": {"recovery": {"model": "none"}}})
    rectumD2cc = row(result, "Rectum", 104.0)
    assert rectumD2cc.value == pytest.approx(70.0 + handEqd2(45.0, 15, 3.0), abs=1e-3)
    assert rectumD2cc.status == "fail"
    # the bowel's own limit reads the bowel's 50 %: 35 + 54 Gy where the current course reaches it
    assert row(result, "Bowel", 90.0).value == pytest.approx(35.0 + handEqd2(45.0, 15, 3.0), abs=1e-3)
    # and the DVH table reads each organ as its constraints do (it gave the rectum the bowel's 50 % in the overlap)
    assert result.dvh["Rectum"]["composite"].dmaxGy == pytest.approx(70.0 + handEqd2(45.0, 15, 3.0), abs=1e-3)
    assert result.dvh["Bowel"]["composite"].dmaxGy == pytest.approx(35.0 + handEqd2(45.0, 15, 3.0), abs=1e-3)


def test_a_target_owned_voxel_keeps_no_recovery_when_an_organ_is_read():
    """The rectum (25 %) partly inside the GTV: its limit reads 25 % where an organ or nothing else owns the voxel and
    none where the GTV does (REFERENCE §1: recovery is a normal-tissue concept)."""
    rectum = np.zeros(SHAPE, bool)
    rectum[:, 1:5, 1:5] = True
    gtv = np.zeros(SHAPE, bool)
    gtv[0:2, 1:5, 1:5] = True
    result = run({"Rectum": rectum, "GTV": gtv},
                 [("prior", 50.0, 25, dt.date(2022, 1, 1), False), ("current", 0.0, 10, dt.date(2024, 1, 1), True)],
                 "pelvic-reirradiation", tissues={"Rectum": {"recovery": {"model": "constant", "fraction": 0.25}}},
                 plannedFractions=10)
    budgetRow = next(r for r in result.budgetByOrgan if r["structure"] == "Rectum")
    # 50 Gy EQD2₃ in the GTV's voxels (no recovery), 0.75 x 50 = 37.5 Gy in the rest of the rectum
    assert budgetRow["allCoursesMaxEqd2Gy"] == pytest.approx(50.0, abs=1e-3)


def test_time_based_recovery_counts_calendar_months():
    assert calendarMonthsBetween(dt.date(2023, 1, 15), dt.date(2024, 1, 15)) == 12.0
    assert calendarMonthsBetween(dt.date(2023, 1, 15), dt.date(2023, 7, 15)) == 6.0
    assert calendarMonthsBetween(dt.date(2023, 1, 31), dt.date(2023, 2, 28)) == 1.0
    assert calendarMonthsBetween(dt.date(2023, 1, 15), dt.date(2024, 1, 14)) == pytest.approx(11 + 30 / 31)
    with pytest.raises(InputError, match="after the current course date"):
        calendarMonthsBetween(dt.date(2024, 1, 2), dt.date(2024, 1, 1))
    # the module's "months before": whole months land on the calendar date
    assert dateMonthsBefore(dt.date(2026, 12, 7), 12) == dt.date(2025, 12, 7)
    assert dateMonthsBefore(dt.date(2028, 3, 1), 12) == dt.date(2027, 3, 1)  # across 29 February
    assert dateMonthsBefore(dt.date(2026, 8, 31), 6) == dt.date(2026, 2, 28)
    for end in (dt.date(2024, 2, 29), dt.date(2026, 12, 31), dt.date(2025, 7, 15)):
        for months in (1, 6, 12, 18.5):
            assert months <= calendarMonthsBetween(dateMonthsBefore(end, months), end) < months + 0.11
    # the step model on the courses' dates: exactly 12 months earns the 50 % step (30.44-day months: 11.99, 25 %)
    rectum = np.ones((2, 2, 2), bool)
    table = tissueTableFor(DoseSettings(tissues={"Rectum": TissueSpec(recovery={"model": "nieder-doi"})}))
    assert np.all(recoveryMap({"Rectum": rectum}, table, dt.date(2023, 1, 15), dt.date(2024, 1, 15)) == 0.5)
    assert np.all(recoveryMap({"Rectum": rectum}, table, dt.date(2023, 1, 15), dt.date(2023, 7, 15)) == 0.25)
    assert np.all(recoveryMap({"Rectum": rectum}, table, dt.date(2023, 1, 15), dt.date(2023, 7, 14)) == 0.0)
    assert niederDoiRecovery().fractionForMonths(12.0) == 0.5


def test_the_budget_reads_a_limit_without_alpha_beta_at_the_voxel_map_and_says_what_is_unknown(tmp_path):
    """Cord Dmax < 50 Gy with no α/β in the file: the constraint table reads the cord at its α/β 2; so does the budget
    now (prior 30 Gy / 10 fx = 37.5 Gy EQD2₂, 12.5 Gy left: 11.58 Gy in 5 fractions; at the default 3 it offered
    12.66 Gy). Half the cord outside the prior dose grid: the row's minimum is over the known half, said so."""
    constraints = tmp_path / "cord.json"
    constraints.write_text(json.dumps({"name": "x", "constraints": [
        {"structure": "SpinalCord", "metric": "Dmax", "limit": 50, "unit": "Gy", "alphaBetaGy": None,
         "kind": "cumulative", "source": "test"}]}))
    result = run({"SpinalCord": cordMask()},
                 [("prior", 30.0, 10, dt.date(2023, 1, 1), False), ("current", 0.0, 5, dt.date(2024, 1, 1), True)],
                 str(constraints), tissues={"SpinalCord": {"alphaBetaGy": 2.0}}, plannedFractions=5)
    assert row(result, "SpinalCord", 50.0).value == pytest.approx(37.5, abs=1e-3)
    budgetRow = result.budgetByOrgan[0]
    allowed = budgetRow["minRemainingPhysicalGy"]
    assert handEqd2(allowed, 5, 2.0) == pytest.approx(12.5, abs=1e-4) and allowed == pytest.approx(11.583, abs=1e-3)
    assert budgetRow["unknownPercent"] == 0.0 and budgetRow["note"] == ""
    # the prior dose grid covers slices 3-5 only (from z = 6 mm): half of the cord (slices 1-4) has unknown dose
    result = run({"SpinalCord": cordMask()},
                 [("prior", 30.0, 10, dt.date(2023, 1, 1), False, (6.0, 3)),
                  ("current", 0.0, 5, dt.date(2024, 1, 1), True)],
                 str(constraints), tissues={"SpinalCord": {"alphaBetaGy": 2.0}}, plannedFractions=5)
    budgetRow = result.budgetByOrgan[0]
    assert budgetRow["unknownPercent"] == pytest.approx(50.0)
    assert "upper bound" in budgetRow["note"]
    assert np.all(np.isnan(result.remainingBudgetGy[:3][cordMask()[:3]]))


def test_the_body_outline_yields_to_any_organ_inside_it():
    """An organ given in the case file only (priority 0) or in no table at all (-1) inside BODY: before, it tied with
    BODY (0) or lost to it, and took BODY's α/β 3 and recovery (30 %) instead of its own α/β 5 and none."""
    body = np.ones((4, 4, 4), bool)
    organ = np.zeros((4, 4, 4), bool)
    organ[1:3, 1:3, 1:3] = True
    table = tissueTableFor(DoseSettings(tissues={
        "Vagina": TissueSpec(alphaBetaGy=5.0, recovery={"model": "none"}),
        "BODY": TissueSpec(recovery={"model": "constant", "fraction": 0.3})}))
    masks = {"BODY": body, "Vagina": organ}
    ab, _, names = alphaBetaMap(masks, table)
    assert names == ["Vagina", "BODY"] and np.all(ab[organ] == 5.0) and np.all(ab[~organ] == 3.0)
    recovered = recoveryMap(masks, table, dt.date(2020, 1, 1), dt.date(2024, 1, 1))
    assert np.all(recovered[organ] == 0.0) and np.all(recovered[~organ] == pytest.approx(0.3))


def test_a_dvh_of_unknown_dose_is_refused_not_misread():
    """[5, NaN, 10, 2] read Dmax 5 Gy (NaN stopped the sort): refused; the pipeline leaves unknown voxels out."""
    with pytest.raises(InputError, match="finite"):
        DvhResult("x", np.array([5.0, np.nan, 10.0, 2.0]), np.ones(4))


def test_an_organ_wholly_of_unknown_dose_is_said_so_not_called_empty():
    result = run({"SpinalCord": cordMask()},  # the prior dose grid lies 100 mm away
                 [("prior", 50.0, 25, dt.date(2023, 1, 1), False, (100.0, 3)),
                  ("current", 8.0, 1, dt.date(2024, 2, 1), True)],
                 "general")
    nieder = row(result, "SpinalCord", 67.75)
    assert nieder.status == "not evaluated" and "dose of all of SpinalCord is unknown" in nieder.reason


# Tissue-table names a shipped limit deliberately does not read: a different organ or quantity than its source's.
_NOT_READ_BY_THE_LIMIT = {
    "IVC": "Evans's great-vessel limit is arterial (aorta)", "VenaCava": "as IVC",
    "Duodenum": "neither bowel source names it; duodenal tolerance is its own",
    "Lung_L": "V20 of both lungs, not of one", "Lung_R": "as Lung_L",
    "Anal_Canal": "the anal canal is not the rectum of the D2cc sources", "Anus": "as Anal_Canal",
}


def test_every_name_the_tissue_table_gives_an_organ_is_read_by_that_organs_limits():
    """A physicist's review: SpinalCanal (TG-263), SpinalCord_Thoracic, Medulla, Cauda took the cord's α/β 2 from the
    tissue table but no cord or cauda limit read them: the organ that matters most had no cumulative limit, and the
    scaling did not stop for it. Every alias of a tissue whose organ a shipped limit reads is now read by that
    limit, except the few named above with their reason."""
    from ReirradiationDoseLib.core.constraints import loadConstraintSet
    from ReirradiationDoseLib.core.tissues import TissueTable

    table = TissueTable.default()
    checked = 0
    for setName in ("general", "pelvic-reirradiation"):
        for constraint in loadConstraintSet(setName).constraints:
            for entry in table.entries:
                names = (entry.name,) + tuple(entry.aliases)
                if not any(constraint.matches(n) for n in names):
                    continue
                missing = [n for n in names if not constraint.matches(n) and n not in _NOT_READ_BY_THE_LIMIT]
                assert not missing, f"{setName} {constraint.structure} {constraint.metric} misses {missing}"
                checked += 1
    assert checked >= 20
    general = loadConstraintSet("general").constraints
    assert sum(c.matches("SpinalCanal") for c in general) == 2  # Simone's 57 Gy and Nieder's criterion
    pelvic = loadConstraintSet("pelvic-reirradiation").constraints
    assert any(c.matches("Cauda") and c.structure == "CaudaEquina" for c in pelvic)


def test_scaling_and_budget_keep_to_the_criterions_conditions():
    """A physicist's review: the current-course scaling and the remaining budget ignored the conditions of Nieder's
    criterion. Cord 10 Gy / 25 fx (2018), 5 Gy / 5 fx (mid 2023), current 20 Gy / 10 fx (2024-12-01): the plain sum
    reaches 67.75 Gy EQD2₂ at ×1.960, but there the current course alone gives the cord 116 Gy₂ > 98 Gy₂: the factor
    is capped at ×1.769 (hand: s(1 + s) = 4.9). With the second course 3 months before: no factor, no budget."""
    cord = {"SpinalCord": cordMask()}
    tissues = {"SpinalCord": {"alphaBetaGy": 2.0}}

    def courses(second):
        return [("c1", 10.0, 25, dt.date(2018, 1, 10), False), ("c2", 5.0, 5, second, False),
                ("c3", 20.0, 10, dt.date(2024, 12, 1), True)]

    result = run(cord, courses(dt.date(2023, 6, 1)), "general", tissues=tissues, plannedFractions=5)
    nieder = next(r for r in result.currentScaling if r["constraint"].startswith("SpinalCord D0.03cc <= 67.75"))
    capped = (-1.0 + np.sqrt(1.0 + 4 * 4.9)) / 2.0
    assert capped == pytest.approx(1.7694, abs=1e-4)
    assert nieder["scaling"] == pytest.approx(capped, abs=2e-4) and "capped by the criterion's condition" in \
        nieder["reason"]
    budget = next(r for r in result.budgetByOrgan if r["constraint"].startswith("D0.03cc <= 67.75"))
    allowed = 67.75 - (handEqd2(10.0, 25, 2.0) + handEqd2(5.0, 5, 2.0) + handEqd2(20.0, 10, 2.0))
    expected = (-2.0 + np.sqrt(4.0 + 4 * allowed * 4.0 / 5)) / (2 / 5)  # D (D/5 + 2) / 4 = allowed
    assert budget["minRemainingPhysicalGy"] == pytest.approx(expected, abs=1e-3)
    assert "must begin ≥ 6 months after the last course ended" in budget["note"]
    result = run(cord, courses(dt.date(2024, 9, 1)), "general", tissues=tissues, plannedFractions=5)
    nieder = next(r for r in result.currentScaling if r["constraint"].startswith("SpinalCord D0.03cc <= 67.75"))
    assert nieder["scaling"] is None and nieder["reason"].startswith("not evaluated: outside the criterion's "
                                                                     "conditions: course 'c2' ended 3.0 months")
    assert nieder["metricNow"] == pytest.approx(6.0 + 3.75 + 20.0, abs=1e-3)  # the plain sum now, still shown
    budget = next(r for r in result.budgetByOrgan if r["constraint"].startswith("D0.03cc <= 67.75"))
    assert budget["minRemainingPhysicalGy"] is None
    assert budget["note"].startswith("no budget (NaN in the map): outside the criterion's")


def test_the_interval_between_two_prior_courses_runs_to_the_later_ones_first_fraction():
    """A prior course's date is its last fraction: c1 ended 2023-01-10, c2 (25 fractions) ended 2023-07-20 and so
    began 2023-06-16 at the latest, 5.2 months after c1: Nieder's ≥ 6 months is not met (before: 6.3 months read to
    its last fraction, a pass)."""
    result = run({"SpinalCord": cordMask()},
                 [("c1", 20.0, 10, dt.date(2023, 1, 10), False), ("c2", 20.0, 25, dt.date(2023, 7, 20), False),
                  ("c3", 10.0, 5, dt.date(2024, 12, 1), True)], "general", tissues={"SpinalCord": {"alphaBetaGy": 2.0}})
    nieder = row(result, "SpinalCord", 67.75)
    assert nieder.status == "not evaluated"
    start = dt.date(2023, 6, 16)  # Thursday 2023-07-20 back over 24 weekdays: Friday 2023-06-16
    months = calendarMonthsBetween(dt.date(2023, 1, 10), start)
    assert f"course 'c1' ended {monthsText(months)} months before course 'c2' began (its first fraction estimated" in \
        nieder.reason and "2023-06-16 at the latest" in nieder.reason


def test_a_prior_courses_given_first_fraction_replaces_the_estimate():
    """c2 (25 fractions, last 2023-07-20) began 2023-07-12 by its 'startDate' (a course with a break is longer than
    its fractions): 6.1 months after c1 ended, Nieder's criterion is evaluated on its value, where the estimate
    (2023-06-16 at the latest) put it 5.2 months apart, "not evaluated". A start before 2023-07-10 (6 months) stays
    not evaluated, and the reason then gives no estimate."""
    courses = [("c1", 20.0, 10, dt.date(2023, 1, 10), False), ("c2", 20.0, 25, dt.date(2023, 7, 20), False),
               ("c3", 10.0, 5, dt.date(2024, 12, 1), True)]
    tissues = {"SpinalCord": {"alphaBetaGy": 2.0}}
    nieder = row(run({"SpinalCord": cordMask()}, courses, "general", tissues=tissues,
                     startDates={"c2": dt.date(2023, 7, 12)}), "SpinalCord", 67.75)
    assert calendarMonthsBetween(dt.date(2023, 1, 10), dt.date(2023, 7, 12)) == pytest.approx(6.06, abs=0.01)
    # EQD2 at α/β 2 Gy: 20 Gy in 2 Gy fractions, 20 Gy in 0.8 Gy (14 Gy₂), 10 Gy in 2 Gy: 44 < 67.75
    assert nieder.status == "pass"
    assert nieder.value == pytest.approx(20 * (2 + 2) / 4 + 20 * (0.8 + 2) / 4 + 10 * (2 + 2) / 4, abs=1e-3)
    early = row(run({"SpinalCord": cordMask()}, courses, "general", tissues=tissues,
                    startDates={"c2": dt.date(2023, 7, 3)}), "SpinalCord", 67.75)
    months = calendarMonthsBetween(dt.date(2023, 1, 10), dt.date(2023, 7, 3))
    assert early.status == "not evaluated"
    assert f"course 'c1' ended {monthsText(months)} months before course 'c2' began (the criterion" in early.reason
    assert "estimated" not in early.reason
    from ReirradiationDoseLib.core.dosereport import reportHtml, summaryDict
    result = run({"SpinalCord": cordMask()}, courses, "general", tissues=tissues,
                 startDates={"c2": dt.date(2023, 7, 12)})
    summary = summaryDict(result)
    assert [c["startDate"] for c in summary["courses"]] == [None, "2023-07-12", None]
    assert "<td>2023-07-12 – 2023-07-20</td>" in reportHtml(result)
    assert all(c["startDate"] is None for c in summaryDict(result, anonymize=True)["courses"])


def test_the_criterions_caps_bind_and_prior_courses_are_judged_by_their_own_bed():
    """A verification review: the budget cap and the prior courses' own BED check were not exercised by a test.
    Cord priors 2 Gy / 25 fx and 1 Gy / 5 fx, current 2 Gy / 10 fx: 64 Gy EQD2₂ remain, 31.1 Gy in 5 fractions, but
    the planned course alone may not pass 98 Gy₂: D (1 + D/5/2) = 98 gives 26.70 Gy. A current course of 40 Gy / 10 fx
    (120 Gy₂) is capped at s with 40 s (1 + 2 s) = 98: ×0.885. A prior course of 60 Gy / 20 fx (150 Gy₂) puts the
    criterion out of its conditions: no factor."""
    cord = {"SpinalCord": cordMask()}
    tissues = {"SpinalCord": {"alphaBetaGy": 2.0}}

    def courses(prior, current):
        return [("c1", prior, 25, dt.date(2018, 1, 10), False), ("c2", 1.0, 5, dt.date(2023, 6, 1), False),
                ("c3", current, 10, dt.date(2024, 12, 1), True)]

    result = run(cord, courses(2.0, 2.0), "general", tissues=tissues, plannedFractions=5)
    budget = next(r for r in result.budgetByOrgan if r["constraint"].startswith("D0.03cc <= 67.75"))
    cap = (-1.0 + np.sqrt(1.0 + 4 * 98 / 10)) / (2 / 10)  # D (1 + D / 10) = 98
    assert cap == pytest.approx(26.70, abs=0.01)
    assert budget["minRemainingPhysicalGy"] == pytest.approx(cap, abs=1e-3)
    assert np.nanmax(result.remainingBudgetGy) == pytest.approx(cap, abs=1e-3)
    result = run(cord, courses(2.0, 40.0), "general", tissues=tissues)
    nieder = next(r for r in result.currentScaling if r["constraint"].startswith("SpinalCord D0.03cc <= 67.75"))
    assert nieder["scaling"] == pytest.approx((-40 + np.sqrt(1600 + 4 * 80 * 98)) / 160, abs=2e-4)  # 0.8847
    result = run(cord, [("c1", 60.0, 20, dt.date(2018, 1, 10), False), ("c3", 2.0, 10, dt.date(2024, 12, 1), True)],
                 "general", tissues=tissues)
    nieder = next(r for r in result.currentScaling if r["constraint"].startswith("SpinalCord D0.03cc <= 67.75"))
    assert nieder["scaling"] is None and "course 'c1' alone gives SpinalCord D0.03cc BED 150.0 Gy" in nieder["reason"]


def test_overlapping_prior_courses_have_no_interval_and_twice_daily_courses_count_days():
    """A verification review: two prior courses ending the same day (or overlapping) stopped the whole run with a
    refusal about dates; they are 0 months apart, the criterion "not evaluated". The first fraction of a course given
    twice a day is counted back over its treatment days."""
    from ReirradiationDoseLib.core.pipeline import latestFirstFraction

    result = run({"SpinalCord": cordMask()},
                 [("c1", 20.0, 10, dt.date(2023, 1, 20), False), ("c2", 20.0, 10, dt.date(2023, 1, 20), False),
                  ("c3", 10.0, 5, dt.date(2024, 12, 1), True)], "general", tissues={"SpinalCord": {"alphaBetaGy": 2.0}})
    nieder = row(result, "SpinalCord", 67.75)
    assert nieder.status == "not evaluated" and "ended 0.0 months before course 'c2' began" in nieder.reason
    friday = dt.date(2023, 7, 21)
    assert latestFirstFraction(friday, 20, 2) == dt.date(2023, 7, 10)  # 10 treatment days: Monday two weeks before
    assert latestFirstFraction(friday, 20, 1) == dt.date(2023, 6, 26)  # 20 weekdays
    assert latestFirstFraction(dt.date(2023, 7, 24), 2, 1) == dt.date(2023, 7, 21)  # Monday back over the weekend
    assert latestFirstFraction(friday, 1, 1) == friday


def test_a_case_edit_of_a_structure_sharing_a_shipped_entry_applies_to_it_alone():
    """A review: a case tissue named by an alias or prefix of a shipped entry edited the shared entry, so "CTV" at
    α/β 5 moved the GTV and PTV too, and a recovery given to "Anal_Canal" was credited to the rectum. The structure
    now takes an entry of its own, from the shared one's values (a target stays a target); an edit naming the entry
    itself ("Rectum") still applies to every structure reading it."""
    def table(tissues):
        return tissueTableFor(DoseSettings(tissues={k: TissueSpec(**v) for k, v in tissues.items()}))

    edited = table({"CTV": {"alphaBetaGy": 5.0}, "Anal_Canal": {"recovery": {"model": "constant", "fraction": 0.5}},
                    "GTV_boost": {"alphaBetaGy": 15.0}})
    assert edited.lookup("CTV").alphaBetaGy == 5.0 and edited.lookup("CTV").isTarget
    assert edited.lookup("GTV").alphaBetaGy == 10.0 and edited.lookup("PTV").alphaBetaGy == 10.0
    assert edited.lookup("GTV_boost").alphaBetaGy == 15.0 and edited.lookup("GTV_boost2").alphaBetaGy == 10.0
    assert edited.lookup("Anal_Canal").recovery.fractionForMonths(12.0) == 0.5
    assert edited.lookup("Rectum").recovery.fractionForMonths(12.0) == 0.0
    assert edited.lookup("Anus").name == "Rectum" and edited.lookup("Anal_Canal").name == "Anal_Canal"
    whole = table({"Rectum": {"alphaBetaGy": 5.0}})
    assert whole.lookup("Anal_Canal").alphaBetaGy == 5.0 and whole.lookup("Rectum").alphaBetaGy == 5.0
    # whatever the order of the keys, the entry's edit first, the structure split off it from the edited values (a
    # verification review: "Anal_Canal" before "Rectum" kept the shipped α/β 3 and no recovery)
    rectum = {"alphaBetaGy": 5.0, "recovery": {"model": "constant", "fraction": 0.25}}
    for tissues in ({"Rectum": rectum, "Anal_Canal": {"repairHalfTimeHours": 1.5}},
                    {"Anal_Canal": {"repairHalfTimeHours": 1.5}, "Rectum": rectum}):
        anal = table(tissues).lookup("Anal_Canal")
        assert (anal.name, anal.alphaBetaGy, anal.recovery.fractionForMonths(12.0), anal.repairHalfTimeHours) == \
            ("Anal_Canal", 5.0, 0.25, 1.5)
        assert table(tissues).lookup("Anus").name == "Rectum"
    # aliases the case gives a split structure go with it (before: refused, naming no file)
    split = table({"Anal_Canal": {"alphaBetaGy": 4.0, "aliases": ("Anus",)}})
    assert split.lookup("Anus").name == "Anal_Canal" and split.lookup("Anus").alphaBetaGy == 4.0
    assert split.lookup("Rectum").alphaBetaGy == 3.0
    with pytest.raises(InputError, match=r"case.json: tissues\['Bladder'\] in the case: tissue table: the name "
                                         r"'Rectum' is used by both"):
        tissueTableFor(DoseSettings(tissues={"Bladder": TissueSpec(aliases=("Rectum",))}, sourcePath="case.json"))
    # through the dose pipeline: the voxel α/β map of CTV and GTV
    gtv, ctv = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    gtv[2:4, 2:4, 2:4] = True
    ctv[1:5, 1:5, 1:5] = True
    ctv &= ~gtv
    geometry = ImageGeometry(SHAPE[::-1], (2.0, 2.0, 2.0))
    course = CourseInput(name="current", doseGy=np.full(SHAPE, 30.0, np.float32), doseGeometry=geometry,
                         numberOfFractions=10, isCurrent=True, date=dt.date(2025, 1, 6))
    result = computeDose(DoseInputs(referenceImage=geometry.emptyImage(), masks={"GTV": gtv, "CTV": ctv},
                                    courses=[course], settings=DoseSettings(
                                        tissues={"CTV": TissueSpec(alphaBetaGy=5.0)}, targets=("GTV", "CTV"))))
    assert np.all(result.alphaBetaGy[gtv] == 10.0) and np.all(result.alphaBetaGy[ctv] == 5.0)


def test_recovery_credited_within_six_months_is_warned():
    """A newcomer's review: a constant 25 % credited to the rectum 53 days after the prior course (a constant model
    does not look at the interval) lowered its composite without a word. Warned, naming the course, the interval and
    what was credited; 6 months on, or with no recovery credited, nothing is said."""
    rectum = np.zeros(SHAPE, bool)
    rectum[1:5, 1:5, 1:5] = True
    tissues = {"Rectum": {"recovery": {"model": "constant", "fraction": 0.25}}}

    def early(priorDate, given=tissues):
        result = run({"Rectum": rectum}, [("prior", 50.0, 25, priorDate, False),
                                          ("current", 30.0, 15, dt.date(2024, 1, 1), True)],
                     "pelvic-reirradiation", tissues=given)
        return [w for w in result.warnings if "recovery is credited" in w], result

    warned, result = early(dt.date(2023, 11, 9))
    assert warned == ["course 'prior': recovery is credited 1.7 months after it (Rectum 25 % (constant)); the "
                      "published time-based models credit none before 6 months (Nieder 2006, Doi 2021): a constant "
                      "recovery does not look at the interval"]
    # the credit itself stands (the user's model): 0.75 x 50 Gy EQD2 + the current course
    assert result.dvh["Rectum"]["composite"].dmaxGy == pytest.approx(37.5 + handEqd2(30.0, 15, 3.0), abs=1e-3)
    assert early(dt.date(2023, 7, 1))[0] == []
    assert early(dt.date(2023, 11, 9), {"Rectum": {"recovery": {"model": "nieder-doi"}}})[0] == []


def test_a_dose_and_fractions_or_plan_that_do_not_go_together_are_warned():
    """A newcomer's review: 47 Gy in one fraction converted to an EQD2 of 471 Gy without a word, and a NRRD dose (it
    cannot name its plan) took the 7 fractions of a 14 Gy breast boost's RTPLAN for a 47 Gy prostate dose. A
    verification review: radiosurgery and SBRT plans must not be warned (Gamma Knife 20 Gy at the 50 % line, lung
    1 x 34 Gy to a 6 cm PTV, 3 x 20 Gy at the 60 % line, Gamma Knife at the 45 % line, an integrated boost at 2.2
    times)."""
    from ReirradiationDoseLib.core.pipeline import dosePerFractionWarning, prescriptionWarning

    cc = 0.008  # 2 mm voxels
    prostate = np.zeros(80_000, np.float32)  # 640 cc
    prostate[:50_000] = 46.0  # 400 cc at 46 Gy, the maximum 47.08 Gy
    prostate[0] = 47.08
    assert dosePerFractionWarning(prostate, 23, cc, "the dose (prostate.nrrd)") is None
    assert dosePerFractionWarning(prostate, 1, cc, "the dose (prostate.nrrd)") == (
        "the dose (prostate.nrrd): 400 cc receive more than 25 Gy a fraction in 1 fraction(s), beyond any course "
        "given (radiosurgery reaches it in a small target only): check the number of fractions")
    for aboveCc, top in ((16.0, 40.0), (153.0, 42.5)):  # Gamma Knife 20 Gy at the 50 % line; lung 1 x 34 Gy, 6 cm
        single = np.zeros(80_000, np.float32)
        single[:int(aboveCc / cc)] = 30.0
        single[0] = top
        assert dosePerFractionWarning(single, 1, cc, "radiosurgery or SBRT") is None
    assert prescriptionWarning(prostate, 46.0, "the dose (prostate.nrrd)", "RP.dcm") is None
    assert prescriptionWarning(prostate, 14.0, "the dose (prostate.nrrd)", "breast.dcm") == (
        "the dose (prostate.nrrd): its maximum 47.1 Gy is 3.36 times the prescription of the RTPLAN breast.dcm "
        "(14 Gy), outside 0.9-3: is this the plan of this dose? Its number of fractions converts the dose")
    assert prescriptionWarning(prostate, 60.0, "d") is not None  # below 0.9 of the prescription
    for maximum, prescription in ((40.0, 20.0), (44.4, 20.0), (55.0, 25.0), (33.0 * 3, 60.0)):
        assert prescriptionWarning(np.array([maximum]), prescription, "radiosurgery or a boost") is None
    assert prescriptionWarning(np.array([np.nan, 0.0]), 20.0, "no dose") is None


def test_the_liver_mean_is_read_with_the_prior_dose_discounted_as_its_source_does():
    """Owen et al. 2020: liver mean < 15 Gy with the prior course's dose discounted 50 %. Prior 10 Gy in 5 (EQD2₃
    10 Gy), current 6 Gy in 3 (6 Gy), 13 months apart, the liver with no recovery of its own: 0.5 x 10 + 6 = 11 Gy,
    a pass (read with the liver's own recovery: 16 Gy, a fail); the bowel's limits still read the bowel's own."""
    liver = np.zeros(SHAPE, bool)
    liver[1:5, 1:5, 1:5] = True
    result = run({"Liver": liver}, [("prior", 10.0, 5, dt.date(2023, 1, 1), False),
                                    ("current", 6.0, 3, dt.date(2024, 2, 1), True)], "general")
    mean = next(r for r in result.constraintResults if r.structureName == "Liver" and r.constraint.metric == "Dmean")
    assert mean.value == pytest.approx(11.0, abs=1e-4) and mean.status == "pass"
    assert "every prior course discounted 50 %, as the limit's source does" in mean.dose
    v19 = next(r for r in result.constraintResults if r.structureName == "Liver" and r.constraint.metric == "V19Gy[cc]")
    assert "the organ's own recovery applied" in v19.dose
    assert result.dvh["Liver"]["composite"].dmeanGy == pytest.approx(16.0, abs=1e-4)  # the DVH: the liver's own


def test_two_tissue_entries_naming_one_structure_are_refused():
    """A newcomer's review: "rectum" (50 %) and "Rectum" (25 %) in one case's tissues were merged, one of them
    silently."""
    settings = DoseSettings(tissues={"rectum": TissueSpec(recovery={"model": "constant", "fraction": 0.5}),
                                     "Rectum": TissueSpec(recovery={"model": "constant", "fraction": 0.25})},
                            sourcePath="case.json")
    with pytest.raises(InputError, match="tissues 'rectum' and 'Rectum' in the case name the same structure"):
        tissueTableFor(settings)


def test_the_dose_per_fraction_is_checked_for_courses_given_in_memory_too():
    """A verification review: the check sat in the case file's reader only; the module's courses (fractions typed by
    hand) reach computeDose directly: 47 Gy in one fraction gave a composite of 520 Gy without a word."""
    shape = (40, 40, 40)  # 512 cc of 2 mm voxels
    result = run({}, [("prior", 47.0, 1, dt.date(2023, 1, 1), False),
                      ("current", 30.0, 15, dt.date(2024, 1, 1), True)], None, shape=shape)
    assert [w for w in result.warnings if "Gy a fraction" in w] == [
        "course 'prior' (in memory): 512 cc receive more than 25 Gy a fraction in 1 fraction(s), beyond any course "
        "given (radiosurgery reaches it in a small target only): check the number of fractions"]


def test_a_limits_own_prior_discount_spares_targets_and_is_said_early():
    """A verification review: Owen's 50 % discounted the GTV's voxels inside the liver too (targets recover
    nothing), and was credited one month after the prior course without a word. The liver half inside the GTV:
    (0.5 x 10 + 6) outside it and (10 + 6) inside it: a mean of 13.5 Gy."""
    liver = np.zeros(SHAPE, bool)
    liver[1:5, 1:5, 1:5] = True
    gtv = np.zeros(SHAPE, bool)
    gtv[1:3, 1:5, 1:5] = True
    result = run({"Liver": liver, "GTV": gtv}, [("prior", 10.0, 5, dt.date(2023, 12, 1), False),
                                                ("current", 6.0, 3, dt.date(2024, 1, 1), True)], "general")
    mean = next(r for r in result.constraintResults if r.structureName == "Liver" and r.constraint.metric == "Dmean")
    assert mean.value == pytest.approx(0.5 * 11.0 + 0.5 * 16.0, abs=1e-4)
    assert [w for w in result.warnings if "as its source does" in w] == [
        "Liver Dmean < 15 Gy is read with the prior courses' dose discounted 50 % as its source does (Owen et al. "
        "2020), although course 'prior' ended 1.0 months before: time-based recovery models credit none before 6 "
        "months"]


def test_a_target_the_table_reads_through_an_organs_entry_leaves_the_organ_as_it_was():
    """A review: ``targets: ["GTV", "Anal_Canal"]`` ("Anal_Canal" is a name the shipped table gives the rectum) made
    the rectum itself a target and dropped the 25 % recovery the case gave it: its composite read 86.0 instead of
    0.75 × 50 + 30 × 6 / 5 = 73.5 Gy. The target becomes an entry of its own (the organ's α/β, no recovery); the
    rectum stays an organ."""
    def settings(targets):
        return DoseSettings(targets=targets, tissues={"Rectum": TissueSpec(recovery={"model": "constant",
                                                                                     "fraction": 0.25})})

    table = tissueTableFor(settings(("GTV", "Anal_Canal")))
    rectum, anal = table.lookup("Rectum"), table.lookup("Anal_Canal")
    assert (rectum.name, rectum.isTarget, rectum.recovery.fractionForMonths(12.0)) == ("Rectum", False, 0.25)
    assert (anal.name, anal.isTarget, anal.recovery.fractionForMonths(12.0), anal.alphaBetaGy) == \
        ("Anal_Canal", True, 0.0, 3.0)
    assert table.lookup("Anus").name == "Rectum"  # the rectum's other names stay with it
    shape = (12, 10, 10)
    geometry = ImageGeometry(shape[::-1], (2.0, 2.0, 2.0))
    k = np.arange(shape[0])[:, None, None] * np.ones(shape, bool)
    tube = np.zeros(shape, bool)
    tube[:, 4:7, 4:7] = True
    gtv = np.zeros(shape, bool)
    gtv[2:4, 0:2, 0:2] = True
    masks = {"Rectum": tube & (k >= 6), "Anal_Canal": tube & (k < 5), "GTV": gtv}
    courses = [CourseInput("prior", np.full(shape, 50.0, np.float32), geometry, 25, False, dt.date(2022, 1, 3)),
               CourseInput("current", np.full(shape, 30.0, np.float32), geometry, 10, True, dt.date(2025, 1, 6))]
    for targets, analExpected in ((("GTV",), 73.5), (("GTV", "Anal_Canal"), 86.0)):
        result = computeDose(DoseInputs(geometry.emptyImage(), masks, courses, settings(targets)))
        np.testing.assert_allclose(result.compositeEqd2Gy[masks["Rectum"]], 73.5, atol=1e-4)
        np.testing.assert_allclose(result.compositeEqd2Gy[masks["Anal_Canal"]], analExpected, atol=1e-4)


def test_a_dose_too_small_for_its_fractions_is_warned():
    """A verification review: a one-session dose (2 Gy) labelled FRACTION and given as a 25-fraction course read an
    EQD2 of 1.23 Gy instead of about 50 Gy without a word. A maximum below 0.5 Gy a fraction is warned; low-dose
    radiotherapy of benign disease (6 × 0.5 Gy) and a conventional course are not."""
    from ReirradiationDoseLib.core.pipeline import dosePerFractionWarning

    dose = np.zeros((10, 10, 10))
    dose[5, 5, 5] = 2.0
    warning = dosePerFractionWarning(dose, 25, 0.027, "course 'prior' (RD.dcm)")
    assert warning == ("course 'prior' (RD.dcm): its maximum 2 Gy in 25 fraction(s) is 0.08 Gy a fraction, below "
                       "the 0.5 Gy of any but a low-dose course (e.g. total-body irradiation): is it one session's "
                       "dose (DICOM's FRACTION is one fraction group's whole delivery, FRACTION_SESSION one session), "
                       "or are these not its fractions? Check the number of fractions")
    dose[5, 5, 5] = 3.0
    assert dosePerFractionWarning(dose, 6, 0.027, "x") is None
    dose[5, 5, 5] = 52.0
    assert dosePerFractionWarning(dose, 25, 0.027, "x") is None
    assert dosePerFractionWarning(np.zeros((3, 3, 3)), 25, 0.027, "x") is None  # no dose: said elsewhere


def test_a_target_split_off_an_organs_entry_keeps_none_of_its_recovery():
    """A verification review: 'Anal_Canal' edited in the case's tissues and listed as a target kept the rectum's
    25 % recovery in its table entry (never applied to a target, but written so)."""
    table = tissueTableFor(DoseSettings(targets=("GTV", "Anal_Canal"), tissues={
        "Rectum": TissueSpec(recovery={"model": "constant", "fraction": 0.25}), "Anal_Canal": TissueSpec()}))
    anal, rectum = table.lookup("Anal_Canal"), table.lookup("Rectum")
    assert anal.isTarget and anal.recovery.fractionForMonths(12.0) == 0.0
    assert not rectum.isTarget and rectum.recovery.fractionForMonths(12.0) == 0.25


def test_a_target_split_off_an_organ_does_not_keep_its_priority():
    """A second verification review: the split target kept the rectum's priority 70 among targets."""
    table = tissueTableFor(DoseSettings(targets=("GTV", "Anal_Canal"), tissues={"Anal_Canal": TissueSpec(
        alphaBetaGy=3.0)}))
    assert table.lookup("Anal_Canal").priority == 0 and table.lookup("Rectum").priority == 70
