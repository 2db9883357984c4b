"""Remaining budget: LQ inverse per voxel and largest prescription scaling per organ."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ReirradiationDoseLib.core.budget import (
    maxPrescriptionScaling,
    organScalingFactors,
    remainingBudgetMap,
    remainingPhysicalDoseGy,
)
from ReirradiationDoseLib.core.constraints import OrganConstraint, loadConstraintSet
from ReirradiationDoseLib.core.radiobiology import eqd2Gy


@pytest.mark.parametrize("extra, n, alphaBeta, expected", [
    (50.0, 25, 2.0, 50.0), (50.0, 25, 10.0, 50.0), (40.0, 5, 3.0, 25.0), (31.25, 5, 10.0, 25.0),
    (17.6, 1, 3.0, 8.0), (20.0, 1, 2.0, 8.0), (15.2, 25, 3.0, 20.0), (34.27, 34, 3.0, 40.8),
])
def test_inverse_of_reference_cases(extra, n, alphaBeta, expected):
    assert remainingPhysicalDoseGy(extra, n, alphaBeta) == pytest.approx(expected, abs=0.01)


def test_case6_budget_for_reirradiation():
    # rectum limit 79.38 Gy EQD2_3, prior 50 Gy/25 fx with 25 % recovery → room for 30.6 Gy in 17 fx
    limit = 66.88
    prior = 0.75 * eqd2Gy(50.0, 25, 3.0)
    assert remainingPhysicalDoseGy(limit - prior, 17, 3.0) == pytest.approx(30.6, abs=0.01)


def test_no_budget_left_is_zero():
    assert remainingPhysicalDoseGy(0.0, 5, 3.0) == 0.0
    assert remainingPhysicalDoseGy(-12.0, 5, 3.0) == 0.0


def test_budget_map_nan_where_no_limit():
    prior = np.array([50.0, 50.0, 80.0, 10.0])
    limit = np.array([90.0, np.nan, 70.0, 50.0])
    ab = np.array([3.0, 3.0, 3.0, 10.0], dtype=np.float32)
    budget = remainingBudgetMap(prior, limit, 5, ab)
    assert budget.dtype == np.float32
    assert budget[0] == pytest.approx(25.0, abs=1e-4)  # 40 Gy EQD2_3 in 5 fx
    assert np.isnan(budget[1]) and budget[2] == 0.0
    assert budget[3] == pytest.approx(remainingPhysicalDoseGy(40.0, 5, 10.0), abs=1e-4)


@settings(max_examples=200, deadline=None)
@given(extra=st.floats(0.0, 200.0), n=st.integers(1, 40), alphaBeta=st.floats(0.5, 20.0))
def test_property_inverse_round_trip(extra, n, alphaBeta):
    dose = remainingPhysicalDoseGy(extra, n, alphaBeta)
    assert dose >= 0
    assert eqd2Gy(dose, n, alphaBeta) == pytest.approx(extra, rel=1e-9, abs=1e-9)


def test_organ_scaling_uniform_organ_analytic():
    # uniform prior 50 Gy EQD2_3 with 25 % recovery (37.5), plan 30.6 Gy/17 fx: limit 66.88 reached at s = 1
    constraint = OrganConstraint("Rectum", (), "Dmax", 66.88, "Gy", 3.0, "cumulative", "test", "<=")
    shape = (3, 4, 5)
    prior = np.full(shape, 37.5)
    planned = np.full(shape, 30.6)
    mask = np.ones(shape, bool)
    result = maxPrescriptionScaling(prior, planned, 17, 3.0, mask, 0.1, constraint, "Rectum")
    assert result.scaling == pytest.approx(1.0, abs=2e-4)
    assert result.metricValueAtScaling <= 66.88


def test_organ_scaling_volume_metric_and_edge_cases():
    shape = (1, 1, 10)
    mask = np.ones(shape, bool)
    planned = np.linspace(1, 10, 10).reshape(shape)  # 1..10 Gy in 1 fraction per voxel
    prior = np.zeros(shape)
    v50 = OrganConstraint("Organ", (), "V20Gy[%]", 30.0, "%", 3.0, "cumulative", "test")
    result = maxPrescriptionScaling(prior, planned, 1, 3.0, mask, 1.0, v50, "Organ")
    # V20 < 30 %: the 3rd-hottest voxel (8 Gy × s) must stay below EQD2 20 Gy → 8 s = D(20 Gy EQD2 in 1 fx)
    limitDose = 8.0 * result.scaling
    assert eqd2Gy(limitDose, 1, 3.0) == pytest.approx(20.0, abs=0.01)
    already = maxPrescriptionScaling(np.full(shape, 70.0), planned, 1, 3.0, mask, 1.0,
                                     OrganConstraint("Organ", (), "Dmax", 60.0, "Gy", 3.0, "cumulative", "t"))
    assert already.scaling == 0.0 and "prior" in already.reason
    never = maxPrescriptionScaling(prior, np.zeros(shape), 1, 3.0, mask, 1.0,
                                   OrganConstraint("Organ", (), "Dmax", 60.0, "Gy", 3.0, "cumulative", "t"))
    assert math.isinf(never.scaling)
    assert never.toDict()["unlimited"] is True


def test_organ_scaling_over_constraint_set():
    shape = (2, 2, 2)
    masks = {"Bowel_Small": np.ones(shape, bool)}
    results = organScalingFactors(loadConstraintSet("pelvic-reirradiation"), masks, np.full(shape, 50.0),
                                  np.full(shape, 30.0), 10, 1.0)
    bowel = [r for r in results if r.structureName == "Bowel_Small" and r.constraint.limit == 90.0]
    assert len(bowel) == 1
    s = bowel[0].scaling
    assert 50.0 + eqd2Gy(30.0 * s, 10, 3.0) == pytest.approx(90.0, abs=0.01)
    assert any(r.structureName is None and "GreatVes" in r.reason for r in results)
    assert all(r.constraint.kind == "cumulative" for r in results)
    # a 0.8 cc bowel has no D2cc: the scaling is undefined, with the reason
    small = organScalingFactors(loadConstraintSet("pelvic-reirradiation"), masks, np.full(shape, 50.0),
                                np.full(shape, 30.0), 10, 0.1)
    undefined = [r for r in small if r.structureName == "Bowel_Small"]
    assert undefined and all(r.scaling is None and "undefined" in r.reason for r in undefined)
