"""Delineation studies: defects found by an independent review of the study runner, each reproduced here.

- a space around an observer's file name split the reader in two and the rounds' comparison dropped their pairs;
- names differing only in upper and lower case between rounds were two readers (no intra-observer comparison);
- an observer named "NA" vanishes from the tables in R and pandas;
- every non-zero voxel was taken as inside: a labelmap's second label, an interpolated mask's residue, a CT;
- a round one reader delineated alone failed the study, and that reader lost their intra-observer comparison;
- surface points exactly at the tolerance were dropped (float32 distances a hair above 0.7 mm);
- "case a" and "case_a" wrote one picture file;
- a grid mismatch between observers did not name their files.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from DelineationReviewLib.core.iov import analyzeObservers
from DelineationReviewLib.core.study import analyzeStudy, readObserverMask, writeStudyOutputs
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from test_study import GEOMETRY, sphere, writeMask

OBSERVERS = {"obsA": (0.0, 0.0, 0.0), "obsB": (2.0, 0.0, 0.0), "obsC": (0.0, 2.0, 0.0)}


def pairMedian(result, case, roundName, metric="dice"):
    unit = next(r for r in result.results if r["case"] == case and r["round"] == roundName)
    return float(np.median([p[metric] for p in unit["iov"]["pairs"]])), len(unit["iov"]["pairs"])


def test_a_space_around_a_file_name_is_the_same_reader_in_every_table(tmp_path):
    """obsB's file is "obsB .nrrd" in both rounds: before, the rounds' comparison used one pair of three (change 0.0,
    no note) and meanDiceToOthers of "obsB " was NA."""
    root = tmp_path / "study"
    for roundName, spread in (("round1", 1.5), ("round2", 0.5)):
        for observer, offset in OBSERVERS.items():
            name = "obsB .nrrd" if observer == "obsB" else f"{observer}.nrrd"
            writeMask(root / "case1" / roundName / name, sphere(tuple(spread * v for v in offset)))
    result = analyzeStudy(root)
    assert {r["observerA"] for r in result.rows if r["observerA"]} == set(OBSERVERS)
    first, pairs = pairMedian(result, "case1", "round1")
    second, _ = pairMedian(result, "case1", "round2")
    assert pairs == 3 and second > first + 0.05
    (case,) = result.roundsComparison["comparisons"][0]["cases"]
    assert case["dice"]["roundA"] == pytest.approx(first) and case["dice"]["roundB"] == pytest.approx(second)
    means = [r["value"] for r in result.rows if r["metric"] == "meanDiceToOthers" and r["observerA"] == "obsB"]
    assert len(means) == 2 and all(v is not None for v in means)
    assert sorted(e["observer"] for e in result.intraObserver) == sorted(OBSERVERS)


def test_names_differing_in_case_between_rounds_are_one_reader(tmp_path):
    root = tmp_path / "study"
    for roundName, spelling in (("round1", str), ("round2", str.lower)):
        for observer, offset in OBSERVERS.items():
            writeMask(root / "case1" / roundName / f"{spelling(observer)}.nrrd", sphere(offset))
    result = analyzeStudy(root)
    assert sorted(e["observer"] for e in result.intraObserver) == sorted(OBSERVERS)
    assert {e["metrics"]["dice"] for e in result.intraObserver} == {1.0}  # the same spheres in both rounds
    assert result.roundsComparison["comparisons"][0]["cases"][0]["dice"]["change"] == pytest.approx(0.0)
    assert any("obsa.nrrd in round 'round2' is observer 'obsA'" in note for note in result.results[1]["notes"])


def test_an_observer_named_like_a_missing_value_is_refused_naming_the_file(tmp_path):
    root = tmp_path / "study"
    writeMask(root / "case1" / "NA.nrrd", sphere())
    writeMask(root / "case1" / "obsB.nrrd", sphere())
    result = analyzeStudy(root)
    (failure,) = result.failures
    assert "NA.nrrd" in failure["error"] and "missing value" in failure["error"]


@pytest.mark.parametrize("values, message", [
    ({1: 1, 2: 2}, "several labels"),  # GTV 1 and a CTV ring 2
    ({1: 1.0, 0: 0.02}, "fractional values"),  # an interpolated mask's residue
    (None, "different values"),  # a CT
])
def test_a_mask_volume_holds_one_structure(tmp_path, values, message):
    gtv = sphere(radiusMm=4.0)
    if values is None:
        array = np.random.default_rng(0).integers(-1000, 1500, GEOMETRY.shape).astype(np.int16)
    else:
        array = np.where(gtv, values[1], 0).astype(type(values[1]))
        array[~gtv & sphere(radiusMm=7.0)] = values.get(2, values.get(0))
    image = sitk.GetImageFromArray(array)
    GEOMETRY.applyTo(image)
    sitk.WriteImage(image, str(tmp_path / "obsB.nrrd"))
    with pytest.raises(InputError, match=message) as excinfo:
        readObserverMask(tmp_path / "obsB.nrrd")
    assert "obsB.nrrd" in str(excinfo.value)
    writeMask(tmp_path / "obsA.nrrd", gtv.astype(np.uint8) * 255)  # one value inside, whatever it is: a mask
    mask, _, _ = readObserverMask(tmp_path / "obsA.nrrd")
    assert np.array_equal(mask, gtv)


def test_rounds_of_one_reader_are_compared_with_the_readers_other_rounds(tmp_path):
    """An intra-observer study (3 cases, one reader, 2 rounds) failed every round and exited 2; now each case gives
    the reader's intra-observer comparison and nothing fails."""
    root = tmp_path / "study"
    for n in range(3):
        writeMask(root / f"case{n + 1}" / "round1" / "reader.nrrd", sphere(radiusMm=6.0))
        writeMask(root / f"case{n + 1}" / "round2" / "reader.nrrd", sphere((1.0 * n, 0.0, 0.0), 6.0))
    result = analyzeStudy(root)
    assert result.failures == [] and result.results == []
    assert len(result.singleObserverRounds) == 6
    assert [e["metrics"]["centroidShiftMm"] for e in result.intraObserver] == pytest.approx([0.0, 1.0, 2.0])
    assert writeStudyOutputs(result, tmp_path / "out").is_dir()


def test_surface_points_exactly_at_the_tolerance_count_as_within_it():
    """A box and the same box one 0.7 mm pixel over: every surface point is within 0.7 mm, surface Dice 1 at
    0.7 mm (before: 0.862; 0.957 at 1.1 mm on 1.1 mm pixels)."""
    box = np.zeros((12, 20, 20), bool)
    box[3:9, 5:14, 5:14] = True
    for spacing in (0.7, 1.1, 0.9):
        geometry = ImageGeometry((20, 20, 12), (spacing, spacing, 3.0))
        result = analyzeObservers({"a": box, "b": np.roll(box, 1, axis=2)}, geometry, reference=None,
                                  toleranceMm=spacing)
        assert result.pairs[0]["surfaceDice"] == 1.0
        below = analyzeObservers({"a": box, "b": np.roll(box, 1, axis=2)}, geometry, reference=None,
                                 toleranceMm=spacing - 0.01)
        assert below.pairs[0]["surfaceDice"] < 0.9
        # a tolerance 5e-5 mm below the spacing is below it (an independent check: the 1e-4 mm slack counted it as
        # at it, surface Dice 1.0, while the note said only exactly shared surface counts)
        hair = analyzeObservers({"a": box, "b": np.roll(box, 1, axis=2)}, geometry, reference=None,
                                toleranceMm=spacing - 5e-5)
        assert hair.pairs[0]["surfaceDice"] == below.pairs[0]["surfaceDice"]
        for surface in ("voxel", "surfel"):  # and at exactly the spacing in both conventions
            exact = analyzeObservers({"a": box, "b": np.roll(box, 1, axis=2)}, geometry, reference=None,
                                     toleranceMm=spacing, surface=surface)
            assert exact.pairs[0]["surfaceDice"] == 1.0


def test_exact_ties_survive_the_maurer_transforms_rounding():
    """An ellipsoid and the same one shifted by exactly 3 pixels of 0.7 mm: every surface point is within 2.1 mm.
    The Maurer transform reads such distances up to ~2e-5 mm high; a 1e-6 slack dropped them (0.9887 voxel, 0.9950
    surfel; a verification found it), the old 1e-4 mm and the scipy backend give 1.0."""
    spacing = (0.7, 0.7, 2.5)
    shape = (40, 170, 170)
    k, j, i = np.indices(shape)
    x, y, z = ((i - 85) * spacing[0], (j - 85) * spacing[1], (k - 20) * spacing[2])
    masks = {name: ((x - dx) ** 2 + y**2) / 50.0**2 + z**2 / 40.0**2 <= 1 for name, dx in (("a", 0.0), ("b", 2.1))}
    geometry = ImageGeometry(shape[::-1], spacing)
    for surface in ("voxel", "surfel"):
        result = analyzeObservers(masks, geometry, reference=None, toleranceMm=2.1, surface=surface)
        assert result.pairs[0]["surfaceDice"] == 1.0


def test_two_cases_whose_names_read_alike_keep_their_own_pictures(tmp_path):
    root = tmp_path / "study"
    for case in ("case a", "case_a"):
        writeMask(root / case / "obsA.nrrd", sphere())
        writeMask(root / case / "obsB.nrrd", sphere((1.0, 0.0, 0.0)))

    def picture(caseName, roundName, masks, geometry, imagePath=None):
        return b"\x89PNG\r\n\x1a\n" + caseName.encode()

    result = analyzeStudy(root, pictureCallback=picture)
    names = [r["picture"] for r in result.results]
    assert len(set(names)) == 2
    output = writeStudyOutputs(result, tmp_path / "out")
    for unit in result.results:
        assert (output / unit["picture"]).read_bytes().endswith(unit["case"].encode())


def test_observers_on_grids_of_different_spacing_are_refused_naming_their_files(tmp_path):
    root = tmp_path / "study"
    writeMask(root / "case1" / "obsA.nrrd", sphere())
    other = ImageGeometry((28, 28, 11), (1.0, 1.0, 2.5), (-14.0, -14.0, -14.0))
    writeMask(root / "case1" / "obsB.nrrd", sphere(geometry=other), geometry=other)
    (failure,) = analyzeStudy(root).failures
    assert "obsA.nrrd" in failure["error"] and "obsB.nrrd" in failure["error"] and "case1" in failure["error"]


def test_long_csv_says_why_a_value_is_undefined(tmp_path):
    """Undefined values were NA in long.csv with their reasons only in study.json: a statistician reading the table
    could not tell an empty delineation from a failure. Now the reason column says it, and is empty for values."""
    import csv

    root = tmp_path / "study"
    writeMask(root / "case1" / "obsA.nrrd", sphere())
    writeMask(root / "case1" / "obsB.nrrd", sphere((1.0, 0.0, 0.0)))
    writeMask(root / "case1" / "obsC.nrrd", np.zeros(GEOMETRY.shape, bool))
    result = analyzeStudy(root)
    output = writeStudyOutputs(result, tmp_path / "out")
    with open(output / "long.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    undefined = [r for r in rows if r["value"] == "NA"]
    assert undefined and all(r["reason"] for r in undefined), [r for r in undefined if not r["reason"]][:3]
    hd = next(r for r in undefined if r["kind"] == "pair" and r["metric"] == "hausdorffMm")
    assert "empty" in hd["reason"] and "obsC" in (hd["observerA"], hd["observerB"])
    assert all(r["reason"] == "" for r in rows if r["value"] != "NA")


def test_readers_skip_a_round_they_did_not_delineate_in(tmp_path):
    """Round 1 {A, B, C}, round 2 {A alone}, round 3 {A, B, C}: A is compared 1 -> 2 and 2 -> 3, B and C 1 -> 3
    (the verification review: pairing the rounds as found lost B's and C's comparisons)."""
    root = tmp_path / "study"
    for roundName, observers in (("round1", "ABC"), ("round2", "A"), ("round3", "ABC")):
        for observer in observers:
            writeMask(root / "case1" / roundName / f"obs{observer}.nrrd", sphere())
    result = analyzeStudy(root)
    compared = sorted((e["observer"], e["roundA"], e["roundB"]) for e in result.intraObserver if "metrics" in e)
    assert compared == [("obsA", "round1", "round2"), ("obsA", "round2", "round3"), ("obsB", "round1", "round3"),
                        ("obsC", "round1", "round3")]
    assert result.singleObserverRounds == [{"case": "case1", "round": "round2", "observer": "obsA"}]


def test_the_iov_command_refuses_a_labelmap_as_a_study_does(tmp_path):
    """`reirradiation iov` read every non-zero voxel as inside: a GTV 1 + CTV ring 2 labelmap gave Dice 0.30 against
    the same GTV, exit 0 (verification review)."""
    from ReirradiationDoseLib.commands.iov import readObserverMask as readForIov

    gtv = sphere(radiusMm=4.0)
    labels = np.where(gtv, 1, np.where(sphere(radiusMm=7.0), 2, 0)).astype(np.uint8)
    image = sitk.GetImageFromArray(labels)
    GEOMETRY.applyTo(image)
    sitk.WriteImage(image, str(tmp_path / "obsB.nrrd"))
    with pytest.raises(InputError, match="several labels") as excinfo:
        readForIov(str(tmp_path / "obsB.nrrd"), None)
    assert "obsB.nrrd" in str(excinfo.value)
    mask, _ = readForIov(str(writeMask(tmp_path / "obsA.nrrd", gtv)), None)
    assert np.array_equal(mask, gtv)


def test_tables_say_which_percentile_and_tolerance_a_metric_was_measured_at(tmp_path):
    """"hdPercentileMm" and "surfaceDice" in long.csv and the summaries did not say the percentile, the convention or
    τ (only study.json did): two studies at HD95 and HD90 pooled by a statistician read as one metric. The setting
    column says it; metrics that depend on no option leave it empty."""
    import csv

    from DelineationReviewLib.core.study import StudyOptions

    root = tmp_path / "study"
    writeMask(root / "case1" / "obsA.nrrd", sphere())
    writeMask(root / "case1" / "obsB.nrrd", sphere((1.0, 0.0, 0.0)))
    options = StudyOptions(hdPercentile=90.0, hdConvention="pooled", toleranceMm=1.5)
    output = writeStudyOutputs(analyzeStudy(root, options), tmp_path / "out")

    def read(name):
        with open(output / name, newline="", encoding="utf-8") as stream:
            return {(r["kind"], r["metric"]): r["setting"] for r in csv.DictReader(stream)}

    for name in ("long.csv", "summary_by_case.csv", "summary_by_round.csv"):
        settings = read(name)  # (rounds_comparison.csv below: a one-round study has no comparison)
        assert settings[("pair", "hdPercentileMm")] == "percentile 90, pooled", name
        assert settings[("pair", "hdPercentileDirectedMm.AtoB")] == "percentile 90", name
        # the case's 2 mm slices: said where a case is named (a review), not in the summary over cases
        assert settings[("pair", "surfaceDice")] == "tolerance 1.5 mm" + (
            "" if name == "summary_by_round.csv" else
            " (below this case's 2 mm voxel spacing: a surface one voxel off misses)"), name
        assert settings[("case", "medianPairHdPercentileMm")] == "percentile 90, pooled", name
        assert settings[("pair", "dice")] == "" and settings[("pair", "hausdorffMm")] == "", name
    from DelineationReviewLib.core.study import metricSetting

    assert metricSetting("mark[caudal border].honoured", options) == "marks tolerance 3 mm"
    assert metricSetting("marks.honouredFraction", options) == "marks tolerance 3 mm"
    assert metricSetting("mark[caudal border].signedDistanceMm", options) == ""
