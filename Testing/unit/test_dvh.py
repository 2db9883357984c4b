"""DVH: analytic checks of every metric definition (REFERENCE §5), sub-voxel sampling, metric parsing."""

import math

import numpy as np
import pytest

from ReirradiationDoseLib.core.dvh import (
    DvhResult,
    computeDvh,
    fractionalMaskFromFine,
    parseDvhMetric,
    resampleDoseLinear,
    supersampledGeometry,
)
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry


def ramp(n=100):
    """1 x 1 x n voxels of 1 cc each (10 mm cubes), dose 0.5, 1.5, ..., n - 0.5 Gy along i."""
    geometry = ImageGeometry((n, 1, 1), (10.0, 10.0, 10.0))
    dose = (np.arange(n, dtype=np.float32) + 0.5).reshape(1, 1, n)
    return dose, np.ones_like(dose, dtype=bool), geometry


def test_uniform_dose_all_metrics_equal():
    geometry = ImageGeometry((4, 5, 6), (2.0, 2.0, 2.5))
    dose = np.full(geometry.shape, 42.0, np.float32)
    mask = np.zeros(geometry.shape, bool)
    mask[1:5, 1:4, 1:3] = True
    dvh = computeDvh(dose, mask, geometry, "box")
    assert dvh.volumeCc == pytest.approx(mask.sum() * 0.01)
    for value in (dvh.dminGy, dvh.dmaxGy, dvh.dmeanGy, dvh.doseAtVolumeGy(percent=95), dvh.doseAtVolumeGy(cc=0.03)):
        assert value == pytest.approx(42.0)
    assert dvh.volumeAtDose(42.0) == pytest.approx((dvh.volumeCc, 100.0))
    assert dvh.volumeAtDose(42.0001) == (0.0, 0.0)


def test_ramp_order_statistics():
    dose, mask, geometry = ramp()
    dvh = computeDvh(dose, mask, geometry, "ramp")
    assert dvh.volumeCc == pytest.approx(100.0)
    assert dvh.dmaxGy == pytest.approx(99.5) and dvh.dminGy == pytest.approx(0.5)
    assert dvh.dmeanGy == pytest.approx(50.0)
    # continuous ramp 0..100 Gy over 100 cc: the hottest v cc receive ≥ 100 − v Gy
    for cc in (2.0, 10.0, 37.5, 50.0, 95.0):
        assert dvh.doseAtVolumeGy(cc=cc) == pytest.approx(100.0 - cc, abs=1e-9)
    assert dvh.doseAtVolumeGy(percent=95) == pytest.approx(5.0)
    assert dvh.doseAtVolumeGy(cc=0.03) == pytest.approx(99.5)  # within the hottest voxel: Dmax
    assert dvh.doseAtVolumeGy(cc=100.0) == pytest.approx(0.5)  # whole structure: Dmin
    assert dvh.volumeAtDose(40.0) == pytest.approx((60.0, 60.0))  # voxels 40.5 .. 99.5
    assert dvh.volumeAtDose(40.5) == pytest.approx((60.0, 60.0))  # ≥ is inclusive
    assert dvh.volumeBelowDose(40.0) == pytest.approx((40.0, 40.0))


def test_dose_at_volume_matches_brute_force_kth_hottest():
    rng = np.random.default_rng(1)
    geometry = ImageGeometry((7, 6, 5), (2.5, 2.5, 2.5))
    dose = rng.uniform(0, 60, geometry.shape)
    mask = rng.random(geometry.shape) > 0.3
    dvh = computeDvh(dose, mask, geometry)
    hottest = np.sort(dose[mask])[::-1]
    vv = geometry.voxelVolumeCc
    for k in (1, 2, 10, 50, len(hottest)):
        assert dvh.doseAtVolumeGy(cc=(k - 0.5) * vv) == pytest.approx(hottest[k - 1])
        # ≥ k voxels receive at least the k-th hottest dose: V(dose_k) covers k voxels
        assert dvh.volumeAtDose(hottest[k - 1])[0] >= k * vv - 1e-12


def test_volume_larger_than_structure_is_undefined_with_reason():
    geometry = ImageGeometry((4, 4, 4), (2.5, 2.5, 2.5))  # 1 cc structure (64 voxels of 0.015625 cc)
    dvh = computeDvh(np.full(geometry.shape, 10.0), np.ones(geometry.shape, bool), geometry, "Lens")
    assert dvh.volumeCc == pytest.approx(1.0)
    result = dvh.doseAtVolume(cc=2.0)
    assert result.value is None and "Lens" in result.reason and "1.000 cc" in result.reason
    summary = dvh.toDict()
    assert summary["d2ccGy"] is None and "d2ccGy" in summary["undefined"]
    assert summary["d0_1ccGy"] == pytest.approx(10.0)


def test_empty_structure():
    geometry = ImageGeometry((3, 3, 3), (1.0, 1.0, 1.0))
    dvh = computeDvh(np.ones(geometry.shape), np.zeros(geometry.shape, bool), geometry, "none")
    assert dvh.volumeCc == 0.0 and dvh.dmaxGy is None
    assert dvh.doseAtVolume(percent=50).value is None
    assert dvh.toDict()["d95PercentGy"] is None


def test_fractional_weights_scale_volume_and_weight_the_mean():
    dose, _, geometry = ramp(4)  # doses 0.5, 1.5, 2.5, 3.5
    weights = np.array([1.0, 1.0, 0.5, 0.0], dtype=np.float32).reshape(1, 1, 4)
    dvh = computeDvh(dose, weights, geometry)
    assert dvh.volumeCc == pytest.approx(2.5)
    assert dvh.dmeanGy == pytest.approx((0.5 + 1.5 + 0.5 * 2.5) / 2.5)
    assert dvh.dmaxGy == pytest.approx(2.5)  # the zero-weight voxel is outside
    with pytest.raises(InputError, match="between 0 and 1"):
        computeDvh(dose, weights * 3, geometry)


def test_curve_is_cumulative_and_monotonic():
    dose, mask, geometry = ramp()
    doses, volumes = computeDvh(dose, mask, geometry).curve(binWidthGy=1.0)
    assert doses[0] == 0.0 and volumes[0] == pytest.approx(100.0)
    assert np.all(np.diff(volumes) <= 0)
    assert volumes[40] == pytest.approx(60.0)  # V(40 Gy)
    assert volumes[-1] == 0.0 and doses[-1] >= 99.5


def test_to_dict_keys():
    dose, mask, geometry = ramp()
    summary = computeDvh(dose, mask, geometry, "ramp").toDict()
    for key in ("name", "volumeCc", "dminGy", "dmaxGy", "dmeanGy", "d0_03ccGy", "d0_1ccGy", "d2ccGy",
                "d95PercentGy"):
        assert key in summary
    assert summary["d2ccGy"] == pytest.approx(98.0)
    assert len(summary["dvh"]["doseGy"]) == len(summary["dvh"]["volumePercent"])


def test_grid_mismatch_and_nan_refused():
    dose, mask, geometry = ramp(10)
    with pytest.raises(InputError, match="differs"):
        computeDvh(dose, mask[..., :5], geometry)
    bad = dose.copy()
    bad[0, 0, 3] = np.nan
    with pytest.raises(InputError, match="without dose"):
        computeDvh(bad, mask, geometry)


@pytest.mark.parametrize("text, kind, parameter, unit", [
    ("Dmax", "dmax", None, None), ("Dmean", "dmean", None, None), ("D0.03cc", "dose-at-volume", 0.03, "cc"),
    ("D2cc", "dose-at-volume", 2.0, "cc"), ("D95%", "dose-at-volume", 95.0, "%"),
    ("V40Gy[%]", "volume-at-dose", 40.0, "%"), ("V19Gy[cc]", "volume-at-dose", 19.0, "cc"),
    ("V20Gy", "volume-at-dose", 20.0, "%"), ("CV15Gy[cc]", "volume-below-dose", 15.0, "cc"),
])
def test_metric_parsing(text, kind, parameter, unit):
    metric = parseDvhMetric(text)
    assert (metric.kind, metric.parameter, metric.volumeUnit) == (kind, parameter, unit)


def test_metric_evaluation_and_bad_metric():
    dose, mask, geometry = ramp()
    dvh = computeDvh(dose, mask, geometry)
    assert dvh.metric("D2cc").value == pytest.approx(98.0)
    assert dvh.metric("V40Gy[%]").value == pytest.approx(60.0)
    assert dvh.metric("V40Gy[cc]").value == pytest.approx(60.0)
    assert dvh.metric("CV40Gy[cc]").value == pytest.approx(40.0)
    with pytest.raises(InputError, match="unknown DVH metric"):
        parseDvhMetric("D2")


# ---- sub-voxel sampling ------------------------------------------------------------------------------------
def sphereMask(geometry, centre, radius):
    points = geometry.voxelCentresLps()
    return np.sum((points - np.asarray(centre)) ** 2, axis=-1) <= radius**2


def test_supersampled_geometry_aligned():
    coarse = ImageGeometry((4, 3, 2), (2.0, 3.0, 4.0), (10.0, 20.0, 30.0))
    fine = supersampledGeometry(coarse, (2, 3, 4))
    assert fine.sizeXyz == (8, 9, 8) and fine.spacingMm == (1.0, 1.0, 1.0)
    # centre of the coarse voxel (0,0,0) is the mean of its sub-voxel centres
    centres = fine.indexToLps(np.array([[i, j, k] for i in range(2) for j in range(3) for k in range(4)]))
    assert np.allclose(centres.mean(axis=0), coarse.originMm)


def test_supersampling_recovers_sphere_volume_on_coarse_grid():
    geometry = ImageGeometry((16, 16, 16), (2.5, 2.5, 2.5), (-20.0, -20.0, -20.0))
    centre, radius = (0.3, -0.4, 0.6), 6.0  # small organ: 0.905 cc
    exact = 4.0 / 3.0 * math.pi * radius**3 / 1000.0
    dose = np.zeros(geometry.shape, np.float32)
    coarse = computeDvh(dose, sphereMask(geometry, centre, radius), geometry).volumeCc
    fineGeometry = supersampledGeometry(geometry, 5)
    fineMask = sphereMask(fineGeometry, centre, radius)
    fine = computeDvh(dose, fineMask, geometry, maskGeometry=fineGeometry).volumeCc
    weighted = computeDvh(dose, fractionalMaskFromFine(fineMask, 5), geometry).volumeCc
    assert abs(fine - exact) / exact < 0.02
    assert weighted == pytest.approx(fine, rel=1e-5)
    assert abs(fine - exact) < abs(coarse - exact)


def test_supersampled_dose_is_interpolated_linearly():
    geometry = ImageGeometry((12, 12, 12), (2.5, 2.5, 2.5), (-15.0, -15.0, -15.0))
    points = geometry.voxelCentresLps()
    dose = (30.0 + 0.5 * points[..., 0] - 0.2 * points[..., 2]).astype(np.float32)  # linear field
    fineGeometry = supersampledGeometry(geometry, 4)
    fineMask = sphereMask(fineGeometry, (1.0, 0.0, -1.0), 7.0)
    dvh = computeDvh(dose, fineMask, geometry, maskGeometry=fineGeometry)
    # linear field over a sphere: mean = value at the centre, max = centre + |gradient| * r (up to sampling)
    assert dvh.dmeanGy == pytest.approx(30.0 + 0.5 * 1.0 - 0.2 * -1.0, abs=0.01)
    assert dvh.dmaxGy == pytest.approx(30.7 + math.hypot(0.5, 0.2) * 7.0, abs=0.1)
    resampled = resampleDoseLinear(dose, geometry, fineGeometry)
    finePoints = fineGeometry.voxelCentresLps()
    inside = np.all((finePoints >= -15.0) & (finePoints <= 12.5), axis=-1)  # between outer voxel centres
    expected = 30.0 + 0.5 * finePoints[..., 0] - 0.2 * finePoints[..., 2]
    assert np.allclose(resampled[inside], expected[inside], atol=1e-4)


def test_dvh_result_sorts_its_input():
    dvh = DvhResult("x", np.array([1.0, 3.0, 2.0]), np.array([1.0, 1.0, 2.0]))
    assert list(dvh.dosesGy) == [3.0, 2.0, 1.0]
    assert dvh.volumeAtDose(2.0) == pytest.approx((3.0, 75.0))


def test_metric_plugin_registry():
    from ReirradiationDoseLib.core.dvh import DVH_METRIC_PLUGINS, registerDvhMetric

    dose, mask, geometry = ramp()
    registerDvhMetric("HomogeneityIndex", lambda dvh: (dvh.doseAtVolumeGy(percent=2) - dvh.doseAtVolumeGy(percent=98))
                      / dvh.doseAtVolumeGy(percent=50))
    try:
        assert computeDvh(dose, mask, geometry).metric("homogeneityindex").value == pytest.approx(96.0 / 50.0)
    finally:
        DVH_METRIC_PLUGINS.pop("homogeneityindex")


# ---- properties (hypothesis) --------------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(doses=arrays(np.float64, st.integers(1, 60), elements=st.floats(0, 80)),
       data=st.data())
def test_property_dvh_monotonic_and_consistent(doses, data):
    weights = data.draw(arrays(np.float64, doses.shape, elements=st.floats(0.05, 1.0)))
    dvh = DvhResult("p", doses, weights)
    volumes = sorted(data.draw(st.lists(st.floats(0, 1), min_size=2, max_size=6)))
    values = [dvh.doseAtVolumeGy(percent=100 * v) for v in volumes]
    assert all(a >= b - 1e-12 for a, b in zip(values[:-1], values[1:], strict=True))  # D(v) non-increasing
    assert dvh.dminGy - 1e-12 <= min(values) and max(values) <= dvh.dmaxGy + 1e-12
    _, curve = dvh.curve(binWidthGy=1.0)
    assert np.all(np.diff(curve) <= 1e-9) and curve[0] == pytest.approx(100.0)
    assert dvh.dminGy - 1e-9 <= dvh.dmeanGy <= dvh.dmaxGy + 1e-9
    # the hottest V(D) cc all receive ≥ D: D at that volume less half a voxel (each voxel's dose sits at the middle of
    # its volume interval) is ≥ D
    threshold = data.draw(st.floats(0, 80))
    cc, _ = dvh.volumeAtDose(threshold)
    if cc > 0:
        assert dvh.doseAtVolumeGy(cc=max(cc - 0.5 * weights.max(), 0.0)) >= threshold - 1e-9
