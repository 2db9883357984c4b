"""Interobserver metrics on analytic phantoms (REFERENCE §4): voxelised spheres with known Dice, Jaccard,
distances, CIgen and volume CV. Tolerances: Dice/Jaccard 0.005, distances half a voxel (the voxelisation error)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from DelineationReviewLib.core.iov import analyzeObservers
from ReirradiationDoseLib.core.geometry import ImageGeometry

HALF_WIDTH_MM = 13.0


def sphereMask(radiusMm, centreMm=(0.0, 0.0, 0.0), spacingMm=(0.25, 0.25, 0.25), halfWidthMm=HALF_WIDTH_MM):
    """A voxelised ball (voxel centre inside) on a grid centred at the origin; returns (mask, geometry)."""
    axes = [np.arange(-halfWidthMm, halfWidthMm + 1e-9, s) for s in spacingMm]  # x, y, z
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    mask = (x - centreMm[0]) ** 2 + (y - centreMm[1]) ** 2 + (z - centreMm[2]) ** 2 <= radiusMm**2
    geometry = ImageGeometry((len(axes[0]), len(axes[1]), len(axes[2])), spacingMm,
                             (axes[0][0], axes[1][0], axes[2][0]))
    return mask, geometry


def analyticDice(r1, r2, offset=0.0):
    """Dice and Jaccard of two balls from the lens-volume formula."""
    v1, v2 = 4 / 3 * math.pi * r1**3, 4 / 3 * math.pi * r2**3
    d = offset
    if d <= abs(r1 - r2):
        inter = min(v1, v2)
    else:
        inter = math.pi * (r1 + r2 - d) ** 2 * (d**2 + 2 * d * (r1 + r2) - 3 * (r1 - r2) ** 2) / (12 * d)
    return 2 * inter / (v1 + v2), inter / (v1 + v2 - inter)


def test_analytic_reference_values_of_reference_section4():
    # the published numbers of REFERENCE §4 follow from the geometry
    assert analyticDice(10, 12) == pytest.approx((0.7331, 0.5787), abs=1e-4)
    assert analyticDice(10, 10, 2.0) == pytest.approx((0.8505, 0.7399), abs=1e-4)


@pytest.fixture(scope="module")
def concentric():
    a, geometry = sphereMask(10.0)
    b, _ = sphereMask(12.0)
    return analyzeObservers({"r10": a, "r12": b}, geometry, reference=None), geometry


def test_concentric_spheres_overlap(concentric):
    result, _ = concentric
    pair = result.pair("r10", "r12")
    assert pair["dice"] == pytest.approx(0.7331, abs=0.005)
    assert pair["jaccard"] == pytest.approx(0.5787, abs=0.005)


def test_concentric_spheres_distances_are_2mm(concentric):
    result, geometry = concentric
    pair = result.pair("r10", "r12")
    halfVoxel = 0.5 * max(geometry.spacingMm)
    for key in ("hausdorffMm", "hdPercentileMm", "msdMm"):
        assert pair[key] == pytest.approx(2.0, abs=halfVoxel), key
    assert pair["centroidShiftMm"] == pytest.approx(0.0, abs=1e-9)


def test_concentric_surface_dice(concentric):
    """At τ = 2 mm every surface point is exactly at the tolerance, so the voxelised value sits on a knife edge:
    test just beyond it (2 mm + half a voxel diagonal: all within) and clearly below it (1.5 mm: none within)."""
    result, geometry = concentric
    a, _ = sphereMask(10.0)
    b, _ = sphereMask(12.0)
    halfDiagonal = 0.5 * float(np.linalg.norm(geometry.spacingMm))
    just = analyzeObservers({"r10": a, "r12": b}, geometry, reference=None, toleranceMm=2.0 + halfDiagonal)
    assert just.pairs[0]["surfaceDice"] == pytest.approx(1.0, abs=1e-12)
    below = analyzeObservers({"r10": a, "r12": b}, geometry, reference=None, toleranceMm=1.5)
    assert below.pairs[0]["surfaceDice"] == pytest.approx(0.0, abs=1e-12)
    assert 0.0 < result.pairs[0]["surfaceDice"] < 1.0


def test_offset_spheres():
    a, geometry = sphereMask(10.0)
    b, _ = sphereMask(10.0, centreMm=(2.0, 0.0, 0.0))
    pair = analyzeObservers({"a": a, "b": b}, geometry, reference=None).pairs[0]
    assert pair["dice"] == pytest.approx(0.8505, abs=0.005)
    assert pair["jaccard"] == pytest.approx(0.7399, abs=0.005)
    assert pair["hausdorffMm"] == pytest.approx(2.0, abs=0.125)
    # a shift by exactly 8 voxels: the voxelised centroids move by exactly 2 mm
    assert pair["centroidShiftMm"] == pytest.approx(2.0, abs=1e-9)
    # a shift along an axis keeps the directed distances symmetric
    assert pair["hausdorffDirectedMm"][0] == pytest.approx(pair["hausdorffDirectedMm"][1], abs=1e-6)


def test_offset_spheres_anisotropic_spacing_and_oblique_shift():
    spacing = (0.25, 0.3, 0.5)
    centre = (2.0 / math.sqrt(3),) * 3  # |offset| = 2 mm along the diagonal
    a, geometry = sphereMask(10.0, spacingMm=spacing)
    b, _ = sphereMask(10.0, centreMm=centre, spacingMm=spacing)
    pair = analyzeObservers({"a": a, "b": b}, geometry, reference=None).pairs[0]
    assert pair["dice"] == pytest.approx(0.8505, abs=0.005)
    assert pair["jaccard"] == pytest.approx(0.7399, abs=0.005)
    assert pair["hausdorffMm"] == pytest.approx(2.0, abs=0.5 * max(spacing))
    assert pair["centroidShiftMm"] == pytest.approx(2.0, abs=0.5 * min(spacing))


def test_nested_spheres_cigen_and_volume_cv():
    masks = {}
    for radius in (10.0, 11.0, 12.0):
        masks[f"r{radius:g}"], geometry = sphereMask(radius)
    result = analyzeObservers(masks, geometry, reference="majority")
    assert result.cigen == pytest.approx(0.6958, abs=0.005)
    assert result.volumeCv == pytest.approx(0.269, abs=0.002)
    # CIgen from the agreement map equals the explicit pairwise sums
    names = list(masks)
    inter = sum(np.count_nonzero(masks[p] & masks[q]) for i, p in enumerate(names) for q in names[i + 1:])
    union = sum(np.count_nonzero(masks[p] | masks[q]) for i, p in enumerate(names) for q in names[i + 1:])
    assert result.cigen == pytest.approx(inter / union, rel=1e-12)
    # majority vote of nested balls is exactly the middle ball
    assert np.array_equal(result.consensusMaskFull(), masks["r11"])
    # uncertainty band = outer minus inner ball
    band = np.count_nonzero(masks["r12"] & ~masks["r10"]) * geometry.voxelVolumeCc
    assert result.agreement["uncertaintyBandCc"] == pytest.approx(band, rel=1e-12)
    vol = 4 / 3 * math.pi * (12**3 - 10**3) / 1000
    assert result.agreement["uncertaintyBandCc"] == pytest.approx(vol, rel=0.01)
