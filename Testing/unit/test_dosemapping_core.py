"""Dose mapping: pull-back through known transforms against analytic doses; NaN (never 0 Gy) outside the prior
grid with the coverage reported; nearest-neighbour labels; the conservative max filter against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.core.dosemapping import (
    conservativeMaxFilter,
    mapDose,
    mapLabels,
    mapMasks,
    outsideDisplacementFields,
    reachFootprint,
)
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.registration import displacementFieldTransform

PRIOR = ImageGeometry((40, 30, 20), (2.5, 2.5, 3.0), (-50.0, -37.5, -30.0))


def linearDose(geometry: ImageGeometry) -> np.ndarray:
    """D = 30 + 0.2 x - 0.1 y + 0.05 z (Gy): trilinear interpolation reproduces it exactly."""
    p = geometry.voxelCentresLps()
    return (30 + 0.2 * p[..., 0] - 0.1 * p[..., 1] + 0.05 * p[..., 2]).astype(np.float32)


def analytic(points):
    return 30 + 0.2 * points[..., 0] - 0.1 * points[..., 1] + 0.05 * points[..., 2]


def test_identity_on_the_same_grid_is_exact():
    dose = linearDose(PRIOR)
    mapped = mapDose(dose, PRIOR, None, PRIOR)
    assert np.array_equal(mapped.doseGy, dose)
    assert mapped.coverageFraction == 1.0 and mapped.method == "pull-back linear"


def test_translation_pulls_back_and_marks_outside_as_nan():
    dose = linearDose(PRIOR)
    shift = np.array([7.5, 0.0, 0.0])  # reference point x looks up the prior dose at x + 7.5 mm (3 voxels)
    reference = ImageGeometry((30, 20, 14), (2.0, 2.0, 2.0), (0.0, -20.0, -15.0))
    mapped = mapDose(dose, PRIOR, sitk.TranslationTransform(3, shift.tolist()), reference)
    points = reference.voxelCentresLps()
    target = points + shift
    lo, hi = PRIOR.boundsLps()
    half = np.array(PRIOR.spacingMm) / 2
    inside = np.all((target >= lo - half + 1e-6) & (target <= hi + half - 1e-6), axis=-1)
    assert not inside.all()  # part of the reference maps outside the prior grid
    assert np.array_equal(mapped.coveredMask, inside)
    assert np.all(np.isnan(mapped.doseGy[~inside]))  # never a silent 0 Gy
    core = np.all((target >= lo) & (target <= hi), axis=-1)  # within the voxel centres: exact
    assert np.allclose(mapped.doseGy[core], analytic(target[core]), atol=1e-4)
    assert mapped.coverageFraction == pytest.approx(inside.mean())
    assert mapped.doseGy.dtype == np.float32


def test_displacement_field_equals_the_analytic_pull_back():
    dose = linearDose(PRIOR)
    ref = PRIOR.emptyImage()
    points = PRIOR.voxelCentresLps()
    u = np.stack([3 * np.sin(points[..., 1] / 20), 2 * np.cos(points[..., 0] / 25), 0 * points[..., 2]], -1)
    field = sitk.GetImageFromArray(u, isVector=True)
    field.CopyInformation(ref)
    mapped = mapDose(dose, PRIOR, displacementFieldTransform(field), PRIOR)
    lo, hi = PRIOR.boundsLps()
    target = points + u
    core = np.all((target >= lo) & (target <= hi), axis=-1)
    assert core.mean() > 0.8
    assert np.allclose(mapped.doseGy[core], analytic(target[core]), atol=1e-3)


def test_labels_move_by_whole_voxels_with_nearest_neighbour():
    labels = np.zeros(PRIOR.shape, np.uint8)
    labels[5:10, 8:14, 10:20] = 3
    labels[12:15, 2:5, 2:6] = 7
    mapped = mapLabels(labels, PRIOR, sitk.TranslationTransform(3, (5.0, -2.5, 3.0)), PRIOR)
    expected = np.zeros_like(labels)
    expected[:-1, 1:, :-2] = labels[1:, :-1, 2:]  # +2 voxels in i, -1 in j, +1 in k
    assert np.array_equal(mapped.labels, expected)
    assert not mapped.coveredMask[-1].any() and mapped.coveredMask[0, 1, 0]
    mask = mapLabels(labels == 3, PRIOR, None, PRIOR)
    assert mask.labels.dtype == bool and mask.labels.sum() == (labels == 3).sum()
    with pytest.raises(InputError, match="integers"):
        mapLabels(labels.astype(float), PRIOR, None, PRIOR)


def test_footprint_holds_every_voxel_the_interpolation_reads_within_the_radius():
    """Brute force: voxel o weighs in the trilinear interpolation on the open box |p - o| < spacing; it belongs to
    the footprint when some point p within 3 mm of the centre lies in that box (sampled on a 0.05 mm lattice)."""
    spacing = (1.0, 1.0, 2.5)
    footprint = reachFootprint(spacing, 3.0)
    assert footprint.shape == (5, 7, 7)  # 3 voxels in-plane; two slices (5 mm: its box starts 2.5 mm away)
    axis = np.arange(-3.0, 3.0001, 0.05)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    ball = x ** 2 + y ** 2 + z ** 2 < 9.0
    expected = np.zeros_like(footprint)
    for k in range(-2, 3):
        for j in range(-3, 4):
            for i in range(-3, 4):
                box = (np.abs(x - i) < 1.0) & (np.abs(y - j) < 1.0) & (np.abs(z - 2.5 * k) < 2.5)
                expected[k + 2, j + 3, i + 3] = bool(np.any(box & ball))
    assert np.array_equal(footprint, expected)
    assert reachFootprint((3.5, 3.5, 5.0), 3.0).sum() == 27  # the 26 neighbours, where no other centre is in 3 mm
    assert reachFootprint((2.0, 2.0, 2.0), 0.0).sum() == 1


def test_conservative_max_spreads_a_hot_spot_and_keeps_the_unknown_unknown():
    """A 70 Gy voxel in 10 Gy spreads over the footprint (3 voxels in-plane, 2 slices); the unknown voxels stay
    unknown and so does every voxel whose search reaches one (their maximum is not known)."""
    geometry = ImageGeometry((21, 21, 11), (1.0, 1.0, 2.5))
    dose = np.full(geometry.shape, 10.0, np.float32)
    dose[5, 10, 10] = 70.0
    out = conservativeMaxFilter(dose, geometry, radiusMm=3.0)
    hot = out == 70.0
    assert hot.sum() == reachFootprint(geometry.spacingMm, 3.0).sum()
    assert hot[5, 10, 13] and not hot[5, 10, 14] and hot[7, 10, 10] and not hot[8, 10, 10]
    assert np.array_equal(conservativeMaxFilter(dose, geometry, radiusMm=0.0), dose)
    dose[:, :, 20] = np.nan
    out = conservativeMaxFilter(dose, geometry, radiusMm=3.0)
    assert np.isnan(out[:, :, 17:]).all() and not np.isnan(out[:, :, :17]).any()
    assert np.nanmin(out) == 10.0 and np.nanmax(out) == 70.0
    allNan = np.full(geometry.shape, np.nan, np.float32)
    assert np.isnan(conservativeMaxFilter(allNan, geometry)).all()


def test_mismatched_shapes_are_refused():
    with pytest.raises(InputError, match="does not match"):
        mapDose(np.zeros((3, 3, 3)), PRIOR, None, PRIOR)
    with pytest.raises(InputError, match="does not match"):
        conservativeMaxFilter(np.zeros((3, 3, 3)), PRIOR)


def test_many_overlapping_masks_map_as_each_would_alone():
    """mapMasks packs 31 masks per resample: 40 overlapping masks (two chunks) through a displacement field and a
    shift give exactly what mapLabels gives mask by mask, and the same coverage."""
    rng = np.random.default_rng(7)
    centres = rng.uniform(-30, 30, size=(40, 3))
    points = PRIOR.voxelCentresLps()
    masks = {f"S{n}": np.linalg.norm(points - c, axis=-1) < 12.0 for n, c in enumerate(centres)}
    assert sum(masks.values()).max() > 3  # they overlap
    reference = ImageGeometry((36, 28, 18), (2.0, 2.2, 3.5), (-45.0, -30.0, -28.0))
    field = sitk.Image([40, 30, 20], sitk.sitkVectorFloat64)
    field.SetSpacing(PRIOR.spacingMm)
    field.SetOrigin(PRIOR.originMm)
    array = sitk.GetArrayFromImage(field)
    array[..., 0] = 4.0 * np.sin(points[..., 1] / 15.0)
    array[..., 2] = 6.0
    moved = sitk.GetImageFromArray(array, isVector=True)
    moved.CopyInformation(field)
    transform = displacementFieldTransform(moved)
    mapped, covered = mapMasks(masks, PRIOR, transform, reference)
    for name, mask in masks.items():
        alone = mapLabels(mask, PRIOR, transform, reference)
        np.testing.assert_array_equal(mapped[name], alone.labels)
        np.testing.assert_array_equal(covered, alone.coveredMask)
    assert 0.3 < covered.mean() < 1.0 and sum(m.any() for m in mapped.values()) >= 30


def test_a_field_ending_inside_the_reference_grid_leaves_the_dose_beyond_it_unknown():
    """A 4 mm displacement field covering x < 0 of the reference grid only: ITK does not move the points beyond it
    (zero displacement), so the dose there would be mapped as if undeformed, with a 4 mm jump at the edge. Inside,
    D(x + 4 mm); beyond the field's voxel boxes, NaN, with the voxels in ``outsideFieldMask`` (and the labels not
    covered). Carried first by a 6 mm translation (a composite applies its last transform first), the field is
    evaluated at x + 6: the edge moves 6 mm."""
    reference = ImageGeometry((20, 12, 8), (2.0, 2.0, 3.0), (-19.0, -11.0, -10.5))  # x = -19 ... 19
    fieldGeometry = ImageGeometry((10, 12, 8), (2.0, 2.0, 3.0), (-19.0, -11.0, -10.5))  # x = -19 ... -1
    u = np.zeros(fieldGeometry.shape + (3,))
    u[..., 0] = 4.0
    field = sitk.GetImageFromArray(u, isVector=True)
    fieldGeometry.applyTo(field)
    transform = displacementFieldTransform(field)
    x = reference.voxelCentresLps()[..., 0]
    mapped = mapDose(linearDose(PRIOR), PRIOR, transform, reference)
    inside = x < 0  # the field's boxes end at x = 0
    assert np.array_equal(mapped.outsideFieldMask, ~inside)
    assert np.isnan(mapped.doseGy[~inside]).all()
    points = reference.voxelCentresLps()
    assert np.allclose(mapped.doseGy[inside], analytic(points[inside] + [4.0, 0.0, 0.0]), atol=1e-4)
    assert mapped.coverageFraction == pytest.approx(0.5)
    labels = mapLabels(np.ones(PRIOR.shape, bool), PRIOR, transform, reference)
    assert np.array_equal(labels.coveredMask, inside) and not labels.labels[~inside].any()

    shift = sitk.TranslationTransform(3, (6.0, 0.0, 0.0))
    carried = sitk.CompositeTransform([displacementFieldTransform(field), shift])  # the shift is applied first
    assert np.array_equal(outsideDisplacementFields(carried, reference), x + 6.0 > 0)
    assert outsideDisplacementFields(shift, reference) is None
    assert outsideDisplacementFields(None, reference) is None
