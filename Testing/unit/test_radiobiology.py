"""EQD2 / BED / composite: every worked case of REFERENCE §2 to 0.01 Gy, input validation, dtypes, properties."""

import datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.radiobiology import (
    Course,
    Fractionation,
    bedGy,
    compositeEqd2,
    courseEqd2Gy,
    eqd2FromBedGy,
    eqd2Gy,
    intervalDays,
)

TOL = 0.01


# ---- REFERENCE §2 worked cases ------------------------------------------------------------------------------
@pytest.mark.parametrize("alphaBeta", [0.5, 1, 2, 3, 4, 10, 25])
def test_case1_50Gy_in_25_is_50_eqd2_for_any_alpha_beta(alphaBeta):
    assert eqd2Gy(50.0, 25, alphaBeta) == pytest.approx(50.0, abs=TOL)


def test_case1_bed_100_at_alpha_beta_2():
    assert bedGy(50.0, 25, 2.0) == pytest.approx(100.0, abs=TOL)


@pytest.mark.parametrize("alphaBeta, expected", [(2, 56.25), (3, 55.0), (4, 54.17)])
def test_case2_50Gy_in_2_5Gy_fractions(alphaBeta, expected):
    assert eqd2Gy(50.0, 20, alphaBeta) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("dose, n, alphaBeta, expected",
                         [(25, 5, 3, 40.0), (25, 5, 10, 31.25), (8, 1, 3, 17.6), (8, 1, 2, 20.0)])
def test_case3_hypofractionation(dose, n, alphaBeta, expected):
    assert eqd2Gy(dose, n, alphaBeta) == pytest.approx(expected, abs=TOL)


def test_case4_voxel_uses_its_own_dose_per_fraction():
    # 20 Gy voxel in a 50 Gy / 25 fx plan: d = 0.8 Gy, not 2 Gy
    assert eqd2Gy(20.0, 25, 3.0) == pytest.approx(15.2, abs=TOL)
    plan = np.array([50.0, 20.0], dtype=np.float32)
    assert np.allclose(eqd2Gy(plan, 25, 3.0), [50.0, 15.2], atol=TOL)


def test_case5_spinal_cord_two_courses():
    total = eqd2Gy(50.0, 25, 2.0) + eqd2Gy(8.0, 1, 2.0)
    assert total == pytest.approx(70.0, abs=TOL)
    assert bedGy(50.0, 25, 2.0) + bedGy(8.0, 1, 2.0) == pytest.approx(140.0, abs=TOL)
    assert total > 67.75  # Nieder's limit: fail


@pytest.mark.parametrize("recovery, expected", [(0.0, 79.38), (0.25, 66.88), (0.5, 54.38)])
def test_case6_rectal_reirradiation_with_recovery(recovery, expected):
    prior = np.array([50.0])
    current = np.array([30.6])
    composite = compositeEqd2([eqd2Gy(prior, 25, 3.0), eqd2Gy(current, 17, 3.0)], [np.array([recovery]), None])
    assert composite[0] == pytest.approx(expected, abs=TOL)


def test_case6_tumour_no_recovery():
    assert eqd2Gy(50.0, 25, 10.0) + eqd2Gy(30.6, 17, 10.0) == pytest.approx(80.09, abs=TOL)


def test_case7_hyperfractionated_reirradiation():
    assert eqd2Gy(40.8, 34, 3.0) == pytest.approx(34.27, abs=TOL)


def test_convert_each_course_first_then_sum():
    # REFERENCE §1: 25 Gy/5 fx + 50 Gy/25 fx at α/β 3 = 90 Gy, not EQD2(75 Gy/30 fx) = 82.5 Gy
    assert eqd2Gy(25, 5, 3) + eqd2Gy(50, 25, 3) == pytest.approx(90.0, abs=TOL)
    assert eqd2Gy(75, 30, 3) == pytest.approx(82.5, abs=TOL)


def test_eqd2_from_bed():
    assert eqd2FromBedGy(140.0, 2.0) == pytest.approx(70.0, abs=TOL)
    assert eqd2FromBedGy(bedGy(25, 5, 3), 3) == pytest.approx(40.0, abs=TOL)


# ---- arrays, α/β maps, dtypes -------------------------------------------------------------------------------
def test_alpha_beta_map_per_voxel():
    dose = np.full((2, 2, 2), 25.0, dtype=np.float32)
    ab = np.array([3.0, 10.0] * 4, dtype=np.float32).reshape(2, 2, 2)
    result = eqd2Gy(dose, 5, ab)
    assert result.dtype == np.float32
    assert np.allclose(result[ab == 3], 40.0, atol=TOL)
    assert np.allclose(result[ab == 10], 31.25, atol=TOL)


def test_float32_is_kept_despite_numpy_float64_scalars():
    dose = np.linspace(0, 60, 11, dtype=np.float32)
    assert eqd2Gy(dose, np.float64(25), np.float64(3)).dtype == np.float32
    assert bedGy(dose, np.int64(25), np.float64(3)).dtype == np.float32
    assert eqd2Gy(dose, 25, 3, dtype=np.float64).dtype == np.float64
    assert eqd2Gy(np.array([50, 20]), 25, 3).dtype == np.float64  # integer dose → float64


def test_scalar_in_scalar_out():
    assert isinstance(eqd2Gy(50, 25, 3), float)
    assert isinstance(bedGy(np.float64(50), 25.0, 3), float)


def test_nan_dose_only_when_allowed():
    dose = np.array([50.0, np.nan])
    with pytest.raises(InputError, match="not finite"):
        eqd2Gy(dose, 25, 3)
    result = eqd2Gy(dose, 25, 3, allowNan=True)
    assert result[0] == pytest.approx(50.0) and np.isnan(result[1])


# ---- validation ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fractions", [0, -1, 2.5, float("nan"), float("inf"), True, "five", None])
def test_bad_fractions_refused(fractions):
    with pytest.raises(InputError, match="fractions"):
        eqd2Gy(50.0, fractions, 3.0)


def test_integer_like_fractions_accepted():
    assert eqd2Gy(50.0, 25.0, 3.0) == pytest.approx(50.0)
    assert eqd2Gy(50.0, np.int32(25), 3.0) == pytest.approx(50.0)


@pytest.mark.parametrize("alphaBeta", [0, -3, float("nan"), float("inf")])
def test_bad_alpha_beta_refused(alphaBeta):
    with pytest.raises(InputError, match="α/β"):
        eqd2Gy(50.0, 25, alphaBeta)


def test_bad_alpha_beta_map_refused():
    with pytest.raises(InputError, match="α/β map"):
        eqd2Gy(np.ones(3), 25, np.array([3.0, 0.0, 3.0]))


@pytest.mark.parametrize("dose", [-1.0, float("nan"), float("inf")])
def test_bad_dose_refused(dose):
    with pytest.raises(InputError, match="dose"):
        bedGy(dose, 25, 3.0)
    with pytest.raises(InputError, match="dose"):
        eqd2Gy(np.array([10.0, dose]), 25, 3.0)


def test_fractionation_and_course():
    fx = Fractionation(25, 50)
    assert fx.prescriptionDosePerFractionGy == pytest.approx(2.0)
    assert fx.describe() == "50 Gy / 25 fx"
    with pytest.raises(InputError):
        Fractionation(0)
    with pytest.raises(InputError):
        Fractionation(5, -1)
    course = Course("prior", Fractionation(5, 25), datetime.date(2020, 1, 1))
    assert courseEqd2Gy(25.0, course, 3) == pytest.approx(40.0, abs=TOL)
    assert course.toDict()["date"] == "2020-01-01"
    with pytest.raises(AttributeError):
        course.name = "x"  # frozen


def test_interval_days():
    assert intervalDays(datetime.date(2020, 1, 1), datetime.date(2021, 1, 1)) == 366
    assert intervalDays(None, datetime.date(2021, 1, 1)) is None
    with pytest.raises(InputError, match="after"):
        intervalDays(datetime.date(2022, 1, 1), datetime.date(2021, 1, 1))


def test_composite_validation():
    with pytest.raises(InputError):
        compositeEqd2([])
    with pytest.raises(InputError, match="shape"):
        compositeEqd2([np.ones(3), np.ones(4)])
    with pytest.raises(InputError, match="between 0 and 1"):
        compositeEqd2([np.ones(3)], [np.full(3, 1.5)])
    with pytest.raises(InputError, match="recovery maps"):
        compositeEqd2([np.ones(3)], [None, None])
    assert compositeEqd2([np.ones(3, np.float32)] * 2).dtype == np.float64


# ---- properties (hypothesis) --------------------------------------------------------------------------------
alphaBetas = st.floats(min_value=0.3, max_value=30.0, allow_nan=False)
fractionCounts = st.integers(min_value=1, max_value=60)
doses = st.floats(min_value=0.0, max_value=150.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(n=fractionCounts, alphaBeta=alphaBetas)
def test_property_2Gy_fractions_are_their_own_eqd2(n, alphaBeta):
    dose = 2.0 * n
    assert eqd2Gy(dose, n, alphaBeta) == pytest.approx(dose, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(d1=doses, d2=doses, n=fractionCounts, alphaBeta=alphaBetas)
def test_property_monotonic_in_dose(d1, d2, n, alphaBeta):
    low, high = sorted((d1, d2))
    assert eqd2Gy(low, n, alphaBeta) <= eqd2Gy(high, n, alphaBeta)
    assert bedGy(low, n, alphaBeta) <= bedGy(high, n, alphaBeta)


@settings(max_examples=200, deadline=None)
@given(dose=doses, n=fractionCounts, alphaBeta=alphaBetas)
def test_property_bed_eqd2_consistent(dose, n, alphaBeta):
    assert eqd2FromBedGy(bedGy(dose, n, alphaBeta), alphaBeta) == pytest.approx(eqd2Gy(dose, n, alphaBeta),
                                                                               rel=1e-9, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(courses=st.lists(st.tuples(doses, fractionCounts), min_size=1, max_size=5), alphaBeta=alphaBetas)
def test_property_composite_never_below_largest_course_without_recovery(courses, alphaBeta):
    eqd2s = [np.array([eqd2Gy(d, n, alphaBeta)]) for d, n in courses]
    composite = compositeEqd2(eqd2s, [None] * len(eqd2s))
    assert composite[0] >= max(e[0] for e in eqd2s) - 1e-9
    # and recovery can only lower it
    discounted = compositeEqd2(eqd2s, [np.array([0.3])] * len(eqd2s))
    assert discounted[0] <= composite[0] + 1e-9
