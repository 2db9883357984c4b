"""Constraint library: shipped sets load and cite sources; evaluation gives pass / fail / margin / not evaluated."""

import json

import numpy as np
import pytest

from ReirradiationDoseLib.core.constraints import (
    ConstraintSet,
    OrganConstraint,
    evaluateConstraints,
    loadConstraintSet,
)
from ReirradiationDoseLib.core.dvh import DvhResult
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.radiobiology import eqd2Gy


def uniformDvh(name, doseGy, volumeCc=10.0, voxels=100):
    return DvhResult(name, np.full(voxels, float(doseGy)), np.full(voxels, volumeCc / voxels))


def cord(limit=67.75):
    return OrganConstraint("SpinalCord", ("Spinal Cord", "Cord"), "D0.03cc", limit, "Gy", 2.0, "cumulative",
                           "Nieder 2006", "<=")


@pytest.mark.parametrize("name", ["pelvic-reirradiation", "general", "GENERAL"])
def test_shipped_sets_load_with_sources(name):
    constraintSet = loadConstraintSet(name)
    assert constraintSet.constraints
    for constraint in constraintSet.constraints:
        assert constraint.source, constraint.describe()
        assert constraint.kind in ("cumulative", "first-course")
        assert constraint.unit in ("Gy", "%", "cc")


def test_shipped_pelvic_set_contents():
    pelvic = loadConstraintSet("pelvic-reirradiation")
    metrics = {(c.structure, c.metric, c.limit, c.kind) for c in pelvic.constraints}
    assert ("Bowel", "D2cc", 90.0, "cumulative") in metrics
    assert ("GreatVes", "D0.03cc", 120.0, "cumulative") in metrics
    assert ("SacralPlex", "V40Gy[%]", 55.0, "first-course") in metrics
    assert ("Femur_Head", "Dmax", 60.0, "first-course") in metrics


def test_general_set_contents():
    general = loadConstraintSet("general")
    by = {(c.structure, c.metric): c for c in general.constraints}
    assert by[("Lungs", "V20Gy[%]")].limit == 40.0
    assert by[("Heart", "V40Gy[%]")].limit == 50.0
    liver = by[("Liver", "CV15Gy[cc]")]
    assert liver.comparison == ">=" and liver.limit == 800.0


def test_worked_case5_cord_fails_with_margin():
    total = eqd2Gy(50.0, 25, 2.0) + eqd2Gy(8.0, 1, 2.0)  # 70 Gy EQD2_2
    [result] = evaluateConstraints(ConstraintSet("t", (cord(),)), {"spinal cord": uniformDvh("spinal cord", total)})
    assert result.status == "fail" and result.passed is False
    assert result.value == pytest.approx(70.0, abs=0.01)
    assert result.marginGy == pytest.approx(-2.25, abs=0.01)
    assert result.structureName == "spinal cord"
    assert "67.75" in result.reason


def test_pass_and_margin():
    [result] = evaluateConstraints(ConstraintSet("t", (cord(),)), {"CORD": uniformDvh("CORD", 60.0)})
    assert result.status == "pass" and result.passed and result.marginGy == pytest.approx(7.75)


def test_missing_organ_not_evaluated():
    [result] = evaluateConstraints(ConstraintSet("t", (cord(),)), {"Rectum": uniformDvh("Rectum", 60.0)})
    assert result.status == "not evaluated" and result.passed is None and "SpinalCord" in result.reason


def test_undefined_metric_not_evaluated():
    lensLimit = OrganConstraint("Lens", (), "D2cc", 10.0, "Gy", 3.0, "cumulative", "test")
    [result] = evaluateConstraints(ConstraintSet("t", (lensLimit,)), {"lens": uniformDvh("lens", 5.0, volumeCc=0.2)})
    assert result.status == "not evaluated" and "undefined" in result.reason


def test_volume_and_lower_limit_constraints():
    general = loadConstraintSet("general")
    # liver 1500 cc: 600 cc at 30 Gy, 900 cc at 5 Gy → V19 = 600 cc (< 700 pass), below 15 Gy = 900 cc (≥ 800 pass)
    liver = DvhResult("Liver", np.r_[np.full(600, 30.0), np.full(900, 5.0)], np.ones(1500))
    results = {r.constraint.metric: r for r in evaluateConstraints(general, {"Liver": liver})
               if r.structureName == "Liver"}
    assert results["V19Gy[cc]"].value == pytest.approx(600.0) and results["V19Gy[cc]"].status == "pass"
    assert results["V19Gy[cc]"].margin == pytest.approx(100.0)
    assert results["CV15Gy[cc]"].value == pytest.approx(900.0) and results["CV15Gy[cc]"].margin == pytest.approx(100.0)
    assert results["Dmean"].value == pytest.approx(15.0) and results["Dmean"].status == "fail"  # 15 is not < 15


def test_one_result_per_matching_structure_and_kind_filter():
    pelvic = loadConstraintSet("pelvic-reirradiation")
    dvhs = {"Femoral Head Lt": uniformDvh("Femoral Head Lt", 55.0), "Femoral Head RT": uniformDvh("x", 45.0)}
    results = [r for r in evaluateConstraints(pelvic, dvhs, kinds=("first-course",))
               if r.constraint.structure == "Femur_Head"]
    status = {(r.structureName, r.constraint.limit): r.status for r in results}
    assert status == {("Femoral Head Lt", 60.0): "pass", ("Femoral Head RT", 60.0): "pass",
                      ("Femoral Head Lt", 50.0): "fail", ("Femoral Head RT", 50.0): "pass"}
    assert all(r.constraint.kind == "first-course" for r in evaluateConstraints(pelvic, dvhs, ("first-course",)))


def test_custom_file_and_bad_input(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "constraints": [cord().toDict()]}))
    assert loadConstraintSet(path).constraints[0] == cord()
    with pytest.raises(InputError, match="no constraint set"):
        loadConstraintSet("nonexistent-set")
    with pytest.raises(InputError, match="unit"):
        OrganConstraint("Cord", (), "D2cc", 50, "%", 2.0, "cumulative", "x")
    with pytest.raises(InputError, match="kind"):
        OrganConstraint("Cord", (), "D2cc", 50, "Gy", 2.0, "sometimes", "x")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        loadConstraintSet(bad)
