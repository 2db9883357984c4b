"""Interobserver core: surfaces and areas, crop exactness, conventions, empty masks, observers, registry,
consensus and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from DelineationReviewLib.core import registry
from DelineationReviewLib.core.consensus import agreementMap, majorityVote, staple
from DelineationReviewLib.core.iov import analyzeObservers
from DelineationReviewLib.core.metrics import combinePercentiles
from DelineationReviewLib.core.observers import makeObserverSet
from DelineationReviewLib.core.surface import boundingBox, distanceMapMm, prepareSurface, surfaceAndAreas
from ReirradiationDoseLib.cli import main as cliMain
from ReirradiationDoseLib.core.errors import InputError, ProcessingCancelled
from ReirradiationDoseLib.core.geometry import ImageGeometry
from scipy import ndimage
from scipy.spatial import cKDTree
from reirradiation_testing import csvRows

SPACING = (0.9, 1.1, 2.5)


def grid(shape=(20, 30, 30), spacing=SPACING):
    return ImageGeometry(shape[::-1], spacing, (-10.0, 5.0, 3.0))


def box(shape, start, stop):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = True
    return mask


def blob(shape, seed, centre, radiusVoxels):
    """A smoothed random blob (irregular, non-convex surface)."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    r = np.sqrt(((k - centre[0]) / radiusVoxels[0]) ** 2 + ((j - centre[1]) / radiusVoxels[1]) ** 2
                + ((i - centre[2]) / radiusVoxels[2]) ** 2)
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) * 4.0
    return r + noise < 1.0


# ---- surface ------------------------------------------------------------------------------------------------

def test_cube_surface_and_exposed_face_areas():
    """A 3x3x3 cube: 26 surface voxels (all but the centre); exposed areas sum to the box area 2(ab+ac+bc)."""
    mask = box((5, 5, 5), (1, 1, 1), (4, 4, 4))
    dx, dy, dz = 1.0, 2.0, 3.0
    surface, area = surfaceAndAreas(mask, (dx, dy, dz))
    assert np.count_nonzero(surface) == 26
    assert not surface[2, 2, 2]
    a, b, c = 3 * dx, 3 * dy, 3 * dz
    assert area.sum() == pytest.approx(2 * (a * b + a * c + b * c))
    # a corner voxel exposes one face along each axis
    assert area[1, 1, 1] == pytest.approx(dx * dy + dx * dz + dy * dz)
    # centre of the top face (k = 1): only the face normal to k
    assert area[1, 2, 2] == pytest.approx(dx * dy)


def test_surface_is_six_connected_and_border_is_background():
    mask = np.ones((3, 3, 3), dtype=bool)  # fills the array: every voxel touches the outside except the centre
    surface, _ = surfaceAndAreas(mask, (1, 1, 1))
    assert np.count_nonzero(surface) == 26
    # equals scipy's erosion with the 6-connected cross and a background border
    rng = np.random.default_rng(1)
    mask = ndimage.binary_opening(rng.random((12, 14, 16)) > 0.4)
    surface, _ = surfaceAndAreas(mask, (1, 1, 1))
    eroded = ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1), border_value=0)
    assert np.array_equal(surface, mask & ~eroded)


def test_distance_backends_agree():
    """SimpleITK's Maurer transform on the surface voxels equals scipy's exact EDT (to float32 rounding)."""
    shape = (20, 30, 34)
    mask = blob(shape, 9, (10, 15, 17), (6, 10, 12))
    surface, _ = surfaceAndAreas(mask, SPACING)
    maurer = distanceMapMm(surface, SPACING, "maurer")
    reference = distanceMapMm(surface, SPACING, "scipy")
    assert maurer.dtype == np.float32
    assert np.abs(maurer - reference).max() < 1e-4
    assert np.all(maurer[surface] == 0.0)
    with pytest.raises(ValueError, match="backend"):
        distanceMapMm(surface, SPACING, "chamfer")
    a = np.pad(mask, 3)
    b = np.pad(blob(shape, 10, (11, 14, 18), (6, 9, 12)), 3)
    g = grid(a.shape)
    fast = analyzeObservers({"a": a, "b": b}, g, reference=None).pairs[0]
    slow = analyzeObservers({"a": a, "b": b}, g, reference=None, distanceBackend="scipy").pairs[0]
    for key in ("hausdorffMm", "hdPercentileMm", "msdMm", "surfaceDice"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-4)


def test_distance_map_uses_anisotropic_spacing():
    surface = np.zeros((8, 6, 6), dtype=bool)
    surface[1, 2, 2] = True
    dist = distanceMapMm(surface, (0.7, 0.8, 2.5))  # spacing x, y, z
    assert dist.dtype == np.float32
    assert dist[4, 2, 2] == pytest.approx(3 * 2.5)
    assert dist[1, 2, 5] == pytest.approx(3 * 0.7)
    assert dist[1, 5, 2] == pytest.approx(3 * 0.8)
    assert dist[2, 3, 4] == pytest.approx(math.sqrt(2.5**2 + 0.8**2 + (2 * 0.7) ** 2), rel=1e-6)


def test_bounding_box_fast_path_and_general_path():
    mask = box((16, 24, 32), (3, 5, 7), (9, 11, 30))
    assert boundingBox(mask) == ((3, 5, 7), (9, 11, 30))
    assert boundingBox(mask.astype(np.int32)) == ((3, 5, 7), (9, 11, 30))  # not 1-byte: general path
    assert boundingBox(np.zeros((4, 4, 4), bool)) is None


def bruteForce(a, b, spacing, percentile, tolerance):
    """Independent reference: KD-tree nearest neighbours between surface voxel centres of the full grid."""
    cross = ndimage.generate_binary_structure(3, 1)

    def surf(m):
        edge = m & ~ndimage.binary_erosion(m, cross, border_value=0)
        pts = np.argwhere(edge) * np.array(spacing[::-1])
        faces = 0
        for axis in range(3):
            area = np.prod([spacing[::-1][x] for x in range(3) if x != axis])
            padded = np.pad(m, 1)
            for shift in (-1, 1):
                faces = faces + (m & ~np.roll(padded, shift, axis)[1:-1, 1:-1, 1:-1]) * area
        return pts, faces[edge]

    pa, wa = surf(a)
    pb, wb = surf(b)
    dAB = cKDTree(pb).query(pa)[0]
    dBA = cKDTree(pa).query(pb)[0]
    return {
        "hausdorffMm": max(dAB.max(), dBA.max()),
        "hdPercentileMm": max(np.percentile(dAB, percentile), np.percentile(dBA, percentile)),
        "msdMm": np.concatenate([dAB, dBA]).mean(),
        "surfaceDice": (wa[dAB <= tolerance].sum() + wb[dBA <= tolerance].sum()) / (wa.sum() + wb.sum()),
        "dice": 2 * np.count_nonzero(a & b) / (a.sum() + b.sum()),
    }


def test_crop_gives_the_full_grid_answer_on_irregular_blobs():
    shape = (24, 40, 44)
    a = np.pad(blob(shape, 1, (12, 18, 20), (6, 12, 14)), 6)
    b = np.pad(blob(shape, 2, (13, 21, 22), (5, 13, 12)), 6)
    shape = a.shape
    geometry = grid(shape)
    result = analyzeObservers({"a": a, "b": b}, geometry, reference=None, hdPercentile=90.0, toleranceMm=1.5,
                              cropMarginMm=0.5)
    pair = result.pairs[0]
    expected = bruteForce(a, b, SPACING, 90.0, 1.5)
    for key, value in expected.items():
        assert pair[key] == pytest.approx(value, abs=1e-4), key
    # the crop really is smaller than the grid
    assert np.prod(result.crop.shape) < np.prod(shape)


def test_results_do_not_depend_on_how_much_background_surrounds_the_masks():
    shape = (24, 40, 44)
    a, b, c = (np.pad(blob(shape, seed, centre, radius), 8) for seed, centre, radius in
               ((3, (12, 18, 20), (6, 12, 14)), (4, (11, 20, 22), (6, 11, 13)), (5, (12, 19, 21), (7, 12, 12))))
    shape = a.shape
    small = analyzeObservers({"a": a, "b": b, "c": c}, grid(shape))
    pad = ((5, 9), (20, 3), (0, 30))
    big = analyzeObservers({n: np.pad(m, pad) for n, m in zip("abc", (a, b, c), strict=True)},
                           grid(tuple(s + p[0] + p[1] for s, p in zip(shape, pad, strict=True))))
    for ps, pb in zip(small.pairs, big.pairs, strict=True):
        for key in ("dice", "hausdorffMm", "hdPercentileMm", "msdMm", "surfaceDice", "centroidShiftMm"):
            assert ps[key] == pytest.approx(pb[key], abs=1e-9), key
    # STAPLE sees the same crop (fixed rule) and so gives the same consensus
    assert small.consensus["volumeCc"] == pytest.approx(big.consensus["volumeCc"], rel=1e-12)
    assert "+ 5 mm margin" in small.consensus["cropRule"]
    assert small.consensus["crop"]["marginVoxelsKji"] == [2, 5, 6]  # ceil(5 / (2.5, 1.1, 0.9))
    assert small.consensus["consensusVoxelsOutsideObservers"] == 0
    assert small.crop.shape == big.crop.shape


def test_pair_metrics_are_symmetric_and_translation_invariant():
    shape = (24, 40, 44)
    a = np.pad(blob(shape, 11, (12, 18, 20), (6, 12, 14)), 4)
    b = np.pad(blob(shape, 12, (12, 21, 22), (6, 10, 15)), 4)
    g = grid(a.shape)
    ab = analyzeObservers({"a": a, "b": b}, g, reference=None).pairs[0]
    ba = analyzeObservers({"b": b, "a": a}, g, reference=None).pairs[0]
    for key in ("dice", "jaccard", "hausdorffMm", "hdPercentileMm", "msdMm", "surfaceDice", "centroidShiftMm"):
        assert ab[key] == pytest.approx(ba[key], abs=1e-9), key
    assert ab["hdPercentileDirectedMm"] == pytest.approx(ba["hdPercentileDirectedMm"][::-1])
    shifted = analyzeObservers({"a": np.roll(a, (2, -3, 3), (0, 1, 2)), "b": np.roll(b, (2, -3, 3), (0, 1, 2))}, g,
                               reference=None).pairs[0]
    for key in ("dice", "hausdorffMm", "hdPercentileMm", "msdMm", "surfaceDice", "centroidShiftMm"):
        assert ab[key] == pytest.approx(shifted[key], abs=1e-9), key


# ---- conventions -----------------------------------------------------------------------------------------------

def test_hd_percentile_conventions():
    dAB = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    dBA = np.array([10.0, 10.0, 10.0])
    assert combinePercentiles(dAB, dBA, 50, "maxDirected") == 10.0
    assert combinePercentiles(dAB, dBA, 50, "meanDirected") == 6.0
    assert combinePercentiles(dAB, dBA, 50, "pooled") == 3.5  # median of 0,1,2,3,4,10,10,10
    with pytest.raises(ValueError, match="unknown Hausdorff"):
        combinePercentiles(dAB, dBA, 50, "average")


def test_hd_conventions_selectable_by_name_in_the_analysis():
    shape = (24, 40, 44)
    a = blob(shape, 6, (12, 18, 20), (6, 12, 14))
    b = blob(shape, 7, (12, 22, 22), (6, 10, 16))
    values = {conv: analyzeObservers({"a": a, "b": b}, grid(shape), reference=None, hdConvention=conv).pairs[0]
              for conv in ("maxDirected", "meanDirected", "pooled")}
    directed = values["maxDirected"]["hdPercentileDirectedMm"]
    assert values["maxDirected"]["hdPercentileMm"] == pytest.approx(max(directed))
    assert values["meanDirected"]["hdPercentileMm"] == pytest.approx(sum(directed) / 2)
    assert min(directed) <= values["pooled"]["hdPercentileMm"] <= max(directed)
    with pytest.raises(InputError, match="convention"):
        analyzeObservers({"a": a, "b": b}, grid(shape), hdConvention="mean")
    hd100 = analyzeObservers({"a": a, "b": b}, grid(shape), reference=None, hdPercentile=100).pairs[0]
    assert hd100["hdPercentileMm"] == pytest.approx(hd100["hausdorffMm"])


# ---- defined answers in the corner cases ------------------------------------------------------------------------

def test_identical_masks():
    shape = (20, 30, 30)
    a = blob(shape, 8, (10, 15, 15), (5, 10, 10))
    result = analyzeObservers({"a": a, "b": a.copy(), "c": a.copy()}, grid(shape), reference="staple")
    for pair in result.pairs:
        assert pair["dice"] == 1.0 and pair["jaccard"] == 1.0
        assert pair["hausdorffMm"] == 0.0 and pair["msdMm"] == 0.0 and pair["surfaceDice"] == 1.0
        assert pair["centroidShiftMm"] == pytest.approx(0.0, abs=1e-12)
    assert result.cigen == 1.0 and result.volumeCv == 0.0
    assert result.agreement["uncertaintyBandCc"] == 0.0
    assert np.array_equal(result.consensusMaskFull(), a)
    for entry in result.consensus["observers"]:
        assert entry["dice"] == 1.0 and entry["sensitivity"] == 1.0 and entry["specificity"] == 1.0


def test_non_overlapping_masks():
    shape = (10, 20, 30)
    a = box(shape, (2, 2, 2), (6, 8, 8))
    b = box(shape, (2, 2, 18), (6, 8, 25))
    pair = analyzeObservers({"a": a, "b": b}, grid(shape), reference=None).pairs[0]
    assert pair["dice"] == 0.0 and pair["jaccard"] == 0.0
    gap = (18 - 7) * SPACING[0]  # facing surfaces at i = 7 and i = 18
    assert min(pair["msdDirectedMm"]) > gap - 1e-6
    assert pair["surfaceDice"] == 0.0
    # far surface of b (i = 24) to the nearest surface voxel of a (i = 7): same j, k on the face
    assert pair["hausdorffMm"] == pytest.approx((24 - 7) * SPACING[0], rel=1e-6)


def test_empty_masks_are_undefined_with_reasons_never_zero_or_crash():
    shape = (10, 20, 30)
    a = box(shape, (2, 2, 2), (6, 8, 8))
    empty = np.zeros(shape, bool)
    result = analyzeObservers({"a": a, "e1": empty, "e2": empty.copy()}, grid(shape), reference="a")
    one = result.pair("a", "e1")
    assert one["dice"] == 0.0 and one["jaccard"] == 0.0 and one["surfaceDice"] == 0.0
    assert math.isnan(one["hausdorffMm"]) and math.isnan(one["msdMm"]) and math.isnan(one["centroidShiftMm"])
    assert "empty" in one.reasons["hausdorffMm"] and "'e1'" in one.reasons["hausdorffMm"]
    both = result.pair("e1", "e2")
    assert both["dice"] is None and both["jaccard"] is None and both["surfaceDice"] is None
    assert "both masks are empty" in both.reasons["dice"]
    report = json.loads(json.dumps(result.toDict(), allow_nan=False))  # no NaN leaks into the JSON
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    assert pairs[("a", "e1")]["hausdorffMm"] is None and "hausdorffMm" in pairs[("a", "e1")]["undefined"]
    assert pairs[("e1", "e2")]["dice"] is None
    observers = {e["name"]: e for e in report["consensus"]["observers"]}
    assert observers["e1"]["sensitivity"] == 0.0


def test_all_masks_empty():
    shape = (6, 6, 6)
    result = analyzeObservers({"a": np.zeros(shape, bool), "b": np.zeros(shape, bool)}, grid(shape),
                              reference="majority")
    assert result.pairs[0]["dice"] is None and result.cigen is None and result.volumeCv is None
    assert "empty" in result.reasons["cigen"]
    json.dumps(result.toDict(), allow_nan=False)


def test_single_observer():
    shape = (10, 12, 14)
    a = box(shape, (2, 2, 2), (6, 8, 8))
    result = analyzeObservers({"only": a}, grid(shape), reference="staple")
    assert result.pairs == ()
    assert result.cigen is None and result.volumeCv is None
    assert "fewer than two observers" in result.reasons["cigen"]
    assert result.observers[0]["volumeCc"] == pytest.approx(a.sum() * grid(shape).voxelVolumeCc)
    assert result.consensus["observers"][0]["dice"] == 1.0
    json.dumps(result.toDict(), allow_nan=False)


# ---- observers -----------------------------------------------------------------------------------------------

def test_duplicate_observer_names_are_refused():
    shape = (4, 4, 4)
    mask = np.ones(shape, bool)
    with pytest.raises(InputError, match="more than once"):
        makeObserverSet([("r1", mask), ("r1", mask)], grid(shape))
    with pytest.raises(InputError, match="empty name"):
        makeObserverSet([(" ", mask)], grid(shape))
    with pytest.raises(InputError, match="shape"):
        makeObserverSet({"r1": np.ones((3, 4, 4), bool)}, grid(shape))
    with pytest.raises(InputError, match="no observers"):
        makeObserverSet({}, grid(shape))


def test_masks_on_different_grids_are_resampled_nearest_neighbour_and_reported():
    fine = ImageGeometry((40, 40, 20), (0.5, 0.5, 1.0), (0.0, 0.0, 0.0))
    coarse = ImageGeometry((20, 20, 10), (1.0, 1.0, 2.0), (0.25, 0.25, 0.5))  # same field of view
    a = box(fine.shape, (4, 8, 8), (16, 32, 32))
    b = box(coarse.shape, (2, 4, 4), (8, 16, 16))  # the same physical box
    observerSet = makeObserverSet({"fine": (a, fine), "coarse": (b, coarse)})
    assert observerSet.geometry is fine
    assert "nearest neighbour" in observerSet.gridReport["method"]
    entry = observerSet.gridReport["resampled"][0]
    assert entry["observer"] == "coarse"
    assert entry["volumeCcAfter"] == pytest.approx(entry["volumeCcBefore"])
    result = analyzeObservers({"fine": (a, fine), "coarse": (b, coarse)}, reference=None)
    assert result.pairs[0]["dice"] == 1.0
    assert "nearest neighbour" in result.toDict()["grid"]["method"]


def test_unknown_reference_and_bad_options_are_refused():
    shape = (4, 4, 4)
    mask = np.ones(shape, bool)
    with pytest.raises(InputError, match="reference"):
        analyzeObservers({"a": mask}, grid(shape), reference="consensus")
    with pytest.raises(InputError, match="percentile"):
        analyzeObservers({"a": mask}, grid(shape), hdPercentile=101)
    with pytest.raises(InputError, match="tolerance"):
        analyzeObservers({"a": mask}, grid(shape), toleranceMm=-1)


def test_progress_is_reported_and_cancel_stops():
    shape = (10, 12, 14)
    masks = {"a": box(shape, (2, 2, 2), (6, 8, 8)), "b": box(shape, (3, 2, 2), (7, 8, 9))}
    seen = []
    analyzeObservers(masks, grid(shape), progress=lambda f, m="": seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)

    def cancel(fraction, message=""):
        if fraction > 0.3:
            raise ProcessingCancelled()

    with pytest.raises(ProcessingCancelled):
        analyzeObservers(masks, grid(shape), progress=cancel)


# ---- registry --------------------------------------------------------------------------------------------------

class VolumeRatio(registry.IovMetricPlugin):
    name = "volumeRatio"
    keys = ("volumeRatio",)

    def compute(self, context):
        return {"volumeRatio": context.b.voxelCount / context.a.voxelCount}


def test_a_study_can_register_its_own_metric():
    shape = (10, 12, 14)
    masks = {"a": box(shape, (2, 2, 2), (6, 8, 8)), "b": box(shape, (2, 2, 2), (6, 8, 11))}
    registry.registerMetric(VolumeRatio())
    try:
        with pytest.raises(ValueError, match="already registered"):
            registry.registerMetric(VolumeRatio())
        pair = analyzeObservers(masks, grid(shape), reference=None).pairs[0]
        assert pair["volumeRatio"] == pytest.approx(9 / 6)
        assert pair["dice"] == pytest.approx(2 * 96 / (96 + 144))
    finally:
        registry.unregisterMetric("volumeRatio")
    assert "volumeRatio" not in analyzeObservers(masks, grid(shape), reference=None).pairs[0].values

    class Clash(registry.IovMetricPlugin):
        name = "myDice"
        keys = ("dice",)

    with pytest.raises(ValueError, match="overwrite"):
        registry.registerMetric(Clash())
    with pytest.raises(ValueError, match="no metric plugin"):
        registry.unregisterMetric("nonexistent")


# ---- consensus -------------------------------------------------------------------------------------------------

def test_majority_vote_excludes_ties_and_agreement_counts():
    masks = [np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool), np.array([1, 1, 0, 0], bool),
             np.array([1, 0, 0, 1], bool)]
    counts = agreementMap(masks)
    assert counts.tolist() == [4, 2, 1, 1]
    assert majorityVote(counts, 4).tolist() == [True, False, False, False]  # 2 of 4 is a tie: excluded
    assert majorityVote(agreementMap(masks[:3]), 3).tolist() == [True, True, False, False]


def test_staple_flags_the_outlier_observer():
    shape = (20, 30, 30)
    core = box(shape, (5, 8, 8), (15, 22, 22))
    outlier = box(shape, (3, 4, 4), (17, 27, 27))
    result = staple([core, core, core, outlier], (1.0, 1.0, 2.0))
    assert np.array_equal(result.mask, core)
    assert result.sensitivity[3] == pytest.approx(1.0, abs=1e-3)
    assert result.specificity[3] < result.specificity[0]


def test_consensus_against_an_observer_reference():
    shape = (20, 30, 30)
    core = box(shape, (5, 8, 8), (15, 22, 22))
    larger = box(shape, (5, 8, 8), (15, 22, 26))
    result = analyzeObservers({"ref": core, "other": larger}, grid(shape), reference="ref")
    entries = {e["name"]: e for e in result.consensus["observers"]}
    assert entries["ref"]["dice"] == 1.0
    assert entries["other"]["sensitivity"] == 1.0
    assert entries["other"]["dice"] == pytest.approx(2 * 10 * 14 * 14 / (10 * 14 * 14 + 10 * 14 * 18))
    assert result.consensus["method"] == "observer" and "crop" in result.consensus


# ---- CLI ---------------------------------------------------------------------------------------------------------

def writeMask(path, mask, geometry):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    geometry.applyTo(image)
    sitk.WriteImage(image, str(path))
    return str(path)


def _threeObserverCommand(tmp_path):
    """Three observers' blobs written as NRRD, and the start of an ``iov`` command line with JSON and CSV paths."""
    shape = (20, 30, 30)
    geometry = grid(shape)
    files = {name: writeMask(tmp_path / f"{name}.nrrd", blob(shape, seed, (10, 15, 15), (5, 10, 10)), geometry)
             for seed, name in enumerate(("r1", "r2", "r3"))}
    argv = ["iov"] + [f"--observer={n}={f}" for n, f in files.items()]
    return geometry, files, tmp_path / "iov.json", tmp_path / "iov.csv", argv


def test_cli_writes_json_and_long_csv(tmp_path):
    geometry, files, out, table, argv = _threeObserverCommand(tmp_path)
    argv += ["--reference", "majority", "--hd-percentile", "98", "--json", str(out), "--csv", str(table)]
    assert cliMain(argv) == 0
    report = json.loads(out.read_text())
    assert [o["name"] for o in report["observers"]] == ["r1", "r2", "r3"]
    assert len(report["pairs"]) == 3 and report["hdPercentile"] == 98.0
    assert report["hdConvention"] == "maxDirected" and report["toleranceMm"] == 2.0
    assert report["consensus"]["method"] == "majority" and "bounding box" in report["consensus"]["cropRule"]
    assert "uncertaintyBandCc" in report["agreement"] and "method" in report["grid"]
    for key in ("dice", "jaccard", "hausdorffMm", "hdPercentileMm", "msdMm", "surfaceDice", "centroidShiftMm"):
        assert key in report["pairs"][0]
    rows = csvRows(table)
    dice = [r for r in rows if r["scope"] == "pair" and r["metric"] == "dice" and r["a"] == "r1" and r["b"] == "r2"]
    assert float(dice[0]["value"]) == pytest.approx(report["pairs"][0]["dice"], rel=1e-12)
    # each value says the option it depends on (an independent check: HD98 and HD95 files looked the same)
    setting = {(r["scope"], r["metric"]): r["setting"] for r in rows}
    assert setting[("pair", "hdPercentileMm")] == "percentile 98, maxDirected"
    assert setting[("pair", "hdPercentileDirectedMm.aToB")] == "percentile 98"
    assert setting[("pair", "surfaceDice")] == "tolerance 2 mm" and setting[("pair", "dice")] == ""
    # the same numbers as the core
    masks = {n: sitk.GetArrayFromImage(sitk.ReadImage(f)) != 0 for n, f in files.items()}
    core = analyzeObservers(masks, geometry, reference=None, hdPercentile=98)
    assert report["pairs"][0]["hdPercentileMm"] == pytest.approx(core.pairs[0]["hdPercentileMm"], rel=1e-9)


def test_cli_refuses_duplicate_names_and_missing_files(tmp_path, capsys):
    shape = (6, 6, 6)
    path = writeMask(tmp_path / "m.nrrd", np.ones(shape, bool), grid(shape))
    assert cliMain(["iov", "--observer", f"a={path}", "--observer", f"a={path}"]) == 2
    assert "more than once" in capsys.readouterr().err
    assert cliMain(["iov", "--observer", f"a={tmp_path / 'missing.nrrd'}", "--observer", f"b={path}"]) == 2
    assert "not found" in capsys.readouterr().err
    assert cliMain(["iov", "--observer", "noequals"]) == 2


def test_prepare_surface_centroid_is_on_the_full_grid():
    shape = (10, 12, 14)
    mask = box(shape, (2, 4, 6), (5, 9, 13))
    s = prepareSurface("a", mask[1:8, 2:11, 3:14], (1, 1, 1), (1, 2, 3))
    assert s.centroidKji == pytest.approx([3.0, 6.0, 9.0])


def test_an_observer_lost_or_cut_in_resampling_is_refused_or_noted():
    """An adversarial review: an observer on a grid 500 mm away became 0 cc (Dice 0, exit code 0) and one whose
    header doubled the spacing lost 80 % of its volume outside the common grid, said only in the JSON's resampled
    volumes. Entirely outside: refused naming the observer; a volume changed by more than 10 %: noted."""
    shape = (20, 30, 30)
    geometry = grid(shape)
    mask = box(shape, (5, 10, 10), (15, 20, 20))
    far = ImageGeometry(geometry.sizeXyz, geometry.spacingMm, (500.0, 0.0, 0.0))
    with pytest.raises(InputError, match=r"the delineation of observer 'b' \(2.48 cc\) lies entirely outside the grid "
                                         r"of observer 'a'"):
        analyzeObservers({"a": (mask, geometry), "b": (mask, far)}, reference=None)
    coarse = ImageGeometry(geometry.sizeXyz, tuple(2 * s for s in geometry.spacingMm), geometry.originMm)
    result = analyzeObservers({"a": (mask, geometry), "b": (mask, coarse)}, reference=None)
    before = np.count_nonzero(mask) * coarse.voxelVolumeCc
    after = result.observers[1]["volumeCc"]
    assert after < 0.9 * before
    assert any(n.startswith(f"observer 'b' was resampled onto the grid of observer 'a': its volume changed from "
                            f"{before:.3g} to {after:.3g} cc") for n in result.notes), result.notes
    same = analyzeObservers({"a": (mask, geometry), "b": (mask, geometry)}, reference=None)
    assert not any("resampled" in n for n in same.notes)


def test_an_empty_consensus_and_an_empty_observer_are_noted(tmp_path, caplog):
    """An independent check: three observers that do not overlap gave an empty consensus without a note, and iov
    said nothing of an empty observer (the study command does)."""
    shape = (20, 30, 30)
    geometry = grid(shape)
    apart = {f"r{n}": box(shape, (5, 2 + 9 * n, 5), (10, 8 + 9 * n, 10)) for n in range(3)}
    for reference in ("majority", "staple"):
        result = analyzeObservers(apart, geometry, reference=reference)
        assert result.consensus["volumeCc"] == 0
        assert any(n.startswith(f"the {reference} consensus is empty although the observers delineated")
                   for n in result.notes), result.notes
    together = analyzeObservers({"a": apart["r0"], "b": apart["r0"]}, geometry, reference="staple")
    assert not any("consensus is empty" in n or "STAPLE stopped" in n for n in together.notes)
    from DelineationReviewLib.core.iov import _consensusNotes

    stopped = _consensusNotes({"method": "staple", "iterations": 200, "volumeCc": 1.0}, [{"volumeCc": 1.0}])
    assert stopped == ["STAPLE stopped at its limit of 200 iterations without converging: its consensus and the "
                       "observers' sensitivity and specificity are approximate"]
    assert together.consensus["iterations"] < 200
    files = {name: writeMask(tmp_path / f"{name}.nrrd", mask, geometry)
             for name, mask in (("a", apart["r0"]), ("b", np.zeros(shape, bool)))}
    out = tmp_path / "iov.json"
    assert cliMain(["iov"] + [f"--observer={n}={f}" for n, f in files.items()] + ["--json", str(out)]) == 0
    notes = json.loads(out.read_text())["notes"]
    assert "observer 'b': the mask is empty: its pairs' Dice, Jaccard and surface Dice are 0" in " ".join(notes)


def test_observers_with_the_same_voxels_are_noted(tmp_path):
    """An adversarial review: the same file given for two observers passed as Dice 1.000 without a word."""
    shape = (20, 30, 30)
    geometry = grid(shape)
    path = writeMask(tmp_path / "a.nrrd", box(shape, (5, 5, 5), (10, 12, 12)), geometry)
    other = writeMask(tmp_path / "c.nrrd", box(shape, (5, 5, 5), (10, 12, 13)), geometry)
    out = tmp_path / "iov.json"
    assert cliMain(["iov", f"--observer=a={path}", f"--observer=b={path}", f"--observer=c={other}",
                    "--json", str(out)]) == 0
    notes = json.loads(out.read_text())["notes"]
    assert "observers 'a' and 'b' delineated the same voxels exactly: check that one file is not a copy of the other" \
        in notes
    assert not any("'c'" in n for n in notes)


def test_cli_surfel_and_msd_conventions_are_written_and_named(tmp_path):
    geometry, files, out, table, argv = _threeObserverCommand(tmp_path)
    argv += ["--surface", "surfel", "--msd-convention", "meanDirected", "--json", str(out), "--csv", str(table)]
    assert cliMain(argv) == 0
    report = json.loads(out.read_text())
    assert report["surfaceConvention"] == "surfel" and report["msdConvention"] == "meanDirected"
    masks = {n: sitk.GetArrayFromImage(sitk.ReadImage(f)) != 0 for n, f in files.items()}
    core = analyzeObservers(masks, geometry, reference=None, surface="surfel", msdConvention="meanDirected")
    voxel = analyzeObservers(masks, geometry, reference=None)
    for key in ("hdPercentileMm", "msdMm", "surfaceDice"):
        assert report["pairs"][0][key] == pytest.approx(core.pairs[0][key], rel=1e-9)
        assert report["pairs"][0][key] != pytest.approx(voxel.pairs[0][key], rel=1e-3)
    assert report["observers"][0]["surfaceAreaMm2"] < voxel.observers[0]["surfaceAreaMm2"]
    setting = {(r["scope"], r["metric"]): r["setting"] for r in csvRows(table)}
    assert setting[("pair", "hdPercentileMm")] == "percentile 95, maxDirected, surfels"
    assert setting[("pair", "msdMm")] == "meanDirected, surfels"
    assert setting[("pair", "msdDirectedMm.aToB")] == "surfels"
    assert setting[("pair", "surfaceDice")] == "tolerance 2 mm, surfels"
    assert setting[("pair", "dice")] == "" and setting[("observer", "volumeCc")] == ""
