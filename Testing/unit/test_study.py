"""Whole delineation studies (DelineationReviewLib.core.study): discovery, long table, statistics, outputs."""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from DelineationReviewLib.core import study as studyLib
from DelineationReviewLib.core.iov import analyzeObservers
from DelineationReviewLib.core.study import (
    LONG_COLUMNS,
    StudyOptions,
    analyzeStudy,
    compareRounds,
    discoverStudy,
    readObserverMask,
    toCommonGrid,
    writeStudyOutputs,
)
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry

GEOMETRY = ImageGeometry((28, 28, 14), (1.0, 1.0, 2.0), (-14.0, -14.0, -14.0))


def sphere(centreMm=(0.0, 0.0, 0.0), radiusMm=6.0, geometry=GEOMETRY) -> np.ndarray:
    points = geometry.voxelCentresLps()
    return np.linalg.norm(points - np.asarray(centreMm), axis=-1) <= radiusMm


def writeMask(path: Path, mask: np.ndarray, geometry=GEOMETRY) -> Path:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    geometry.applyTo(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def makeTwoRoundStudy(root: Path, numberOfCases: int = 6) -> Path:
    """Cases with 3 observers; round 1 spheres shifted 3 mm apart, round 2 only 1 mm (more concordant)."""
    for caseIndex in range(numberOfCases):
        radius = 5.0 + 0.5 * caseIndex
        for roundName, shiftMm in (("round1", 3.0), ("round2", 1.0)):
            for observer, direction in (("obs1", (0, 0, 0)), ("obs2", (1, 0, 0)), ("obs3", (0, 1, 0))):
                centre = tuple(shiftMm * d for d in direction)
                writeMask(root / f"case{caseIndex + 1}" / roundName / f"{observer}.nrrd", sphere(centre, radius))
    return root


def longValue(rows, **where):
    found = [r["value"] for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, found)
    return found[0]


# ---- discovery ------------------------------------------------------------------------------------------------
def test_discovery_of_the_layouts(tmp_path):
    # one round, observers directly in the case folder (the LIDC layout)
    writeMask(tmp_path / "study" / "nodule1" / "reader1.nrrd", sphere())
    writeMask(tmp_path / "study" / "nodule1" / "reader2.nii.gz", sphere())
    writeMask(tmp_path / "study" / "nodule1" / "image.nrrd", sphere())  # an image, not an observer
    # rounds in subfolders, natural order (round10 after round2)
    for roundName in ("round10", "round2"):
        for observer in ("a", "b"):
            writeMask(tmp_path / "study" / "case2" / roundName / f"{observer}.nrrd", sphere())
    # the demo layout: observers/<round>/
    writeMask(tmp_path / "study" / "demo" / "observers" / "round1" / "obs1.nrrd", sphere())
    writeMask(tmp_path / "study" / "demo" / "observers" / "round1" / "obs2.nrrd", sphere())
    (tmp_path / "study" / "demo" / "observers" / "observers.json").write_text("{}")
    (tmp_path / "study" / "demo" / "marks.mrk.json").write_text("{}")
    # no observer file at all
    (tmp_path / "study" / "empty").mkdir()
    (tmp_path / "study" / ".hidden").mkdir()

    cases = {case.name: case for case in discoverStudy(tmp_path / "study")}
    assert list(cases) == ["case2", "demo", "empty", "nodule1"]
    assert cases["nodule1"].rounds == {"single": {
        "reader1": str(tmp_path / "study" / "nodule1" / "reader1.nrrd"),
        "reader2": str(tmp_path / "study" / "nodule1" / "reader2.nii.gz")}}
    assert cases["nodule1"].imagePath.endswith("image.nrrd")
    assert list(cases["case2"].rounds) == ["round2", "round10"]
    assert list(cases["demo"].rounds) == ["round1"] and cases["demo"].marksPath.endswith("marks.mrk.json")
    assert cases["demo"].observersInfoPath.endswith("observers.json")
    assert cases["empty"].problem and "no observer file" in cases["empty"].problem
    assert all(case.problem is None for name, case in cases.items() if name != "empty")
    # a single case given as the study folder
    single = discoverStudy(tmp_path / "study" / "demo")
    assert [c.name for c in single] == ["demo"] and list(single[0].rounds) == ["round1"]


def test_discovery_refuses_a_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discoverStudy(tmp_path / "nowhere")


def test_common_grid_pads_aligned_masks_exactly():
    small = ImageGeometry((10, 10, 5), (1.0, 1.0, 2.0), (-4.0, -5.0, -6.0))
    a = sphere((0, 0, 0), 3.0, GEOMETRY)
    b = sphere((0, 0, 0), 3.0, small)
    masks, geometry, notes = toCommonGrid({"a": (a, GEOMETRY), "b": (b, small)})
    assert geometry.sameGridAs(GEOMETRY)  # the small grid lies inside the big one
    assert np.array_equal(masks["a"], a) and np.array_equal(masks["b"], a)
    assert len(notes) == 1 and "padded" in notes[0]
    shifted = ImageGeometry((10, 10, 5), (1.0, 1.0, 2.0), (-4.5, -5.0, -6.0))
    _, _, notes = toCommonGrid({"a": (a, GEOMETRY), "b": (sphere((0, 0, 0), 3.0, shifted), shifted)})
    assert "nearest neighbour" in notes[0]
    with pytest.raises(InputError, match="different voxel spacing"):
        toCommonGrid({"a": (a, GEOMETRY), "b": (b, ImageGeometry((10, 10, 5), (1.0, 1.0, 1.0)))})


def test_read_plain_mask(tmp_path):
    mask = sphere()
    labelled = mask.astype(np.uint8) * 3
    path = writeMask(tmp_path / "obs.nrrd", labelled)
    read, geometry, structure = readObserverMask(path)
    assert np.array_equal(read, mask) and geometry.sameGridAs(GEOMETRY) and structure == ""


# ---- one study end to end ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def twoRoundStudy(tmp_path_factory):
    root = makeTwoRoundStudy(tmp_path_factory.mktemp("study") / "study")
    messages = []
    result = analyzeStudy(root, StudyOptions(reference="majority"),
                          progress=lambda fraction, message="": messages.append((fraction, message)))
    return root, result, messages


def test_long_table_matches_analyze_observers(twoRoundStudy):
    root, result, messages = twoRoundStudy
    assert len(result.results) == 12 and result.failures == []
    assert messages[0][0] == 0.0 and messages[-1][0] == 1.0
    assert all(b[0] >= a[0] for a, b in zip(messages, messages[1:], strict=False))
    masks = {name: sitk.GetArrayFromImage(sitk.ReadImage(str(root / "case3" / "round1" / f"{name}.nrrd"))) > 0
             for name in ("obs1", "obs2", "obs3")}
    expected = analyzeObservers(masks, GEOMETRY, reference="majority").toDict()
    rows = [r for r in result.rows if r["case"] == "case3" and r["round"] == "round1"]
    for pair in expected["pairs"]:
        for metric in ("dice", "jaccard", "hausdorffMm", "hdPercentileMm", "msdMm", "surfaceDice",
                       "centroidShiftMm"):
            assert longValue(rows, kind="pair", observerA=pair["a"], observerB=pair["b"], metric=metric) == \
                pytest.approx(pair[metric], abs=1e-12)
    for observer in expected["observers"]:
        assert longValue(rows, kind="observer", observerA=observer["name"], metric="volumeCc") == \
            pytest.approx(observer["volumeCc"])
    for entry in expected["consensus"]["observers"]:
        assert longValue(rows, kind="observer", observerA=entry["name"], metric="consensus.sensitivity") == \
            pytest.approx(entry["sensitivity"])
    assert longValue(rows, kind="case", metric="cigen") == pytest.approx(expected["cigen"])
    assert longValue(rows, kind="case", metric="volumeCv") == pytest.approx(expected["volumeCv"])
    assert longValue(rows, kind="case", metric="agreement.uncertaintyBandCc") == \
        pytest.approx(expected["agreement"]["uncertaintyBandCc"])
    dice = {(p["a"], p["b"]): p["dice"] for p in expected["pairs"]}
    assert longValue(rows, kind="observer", observerA="obs1", metric="meanDiceToOthers") == \
        pytest.approx((dice["obs1", "obs2"] + dice["obs1", "obs3"]) / 2)
    assert longValue(rows, kind="case", metric="medianPairDice") == pytest.approx(float(np.median(list(dice.values()))))
    # obs2 and obs3 are 3 mm from obs1 along x and y: their centroids are 3 mm apart, obs2-obs3 3√2 mm
    assert longValue(rows, kind="pair", observerA="obs1", observerB="obs2", metric="centroidShiftMm") == \
        pytest.approx(3.0, abs=1e-9)
    assert longValue(rows, kind="pair", observerA="obs2", observerB="obs3", metric="centroidShiftMm") == \
        pytest.approx(3.0 * math.sqrt(2), abs=1e-9)


def test_round_two_is_more_concordant_with_wilcoxon(twoRoundStudy):
    _, result, _ = twoRoundStudy
    comparison = result.roundsComparison
    assert comparison["rounds"] == ["round1", "round2"]
    (only,) = comparison["comparisons"]
    dice = only["tests"]["dice"]
    assert dice["n"] == 6 and dice["casesImproved"] == 6
    assert dice["pValue"] == pytest.approx(0.03125)  # exact: 2 / 2^6, all six changes positive
    assert only["tests"]["hdPercentileMm"]["pValue"] == pytest.approx(0.03125)
    assert only["tests"]["hdPercentileMm"]["casesImproved"] == 6  # HD95 fell in every case
    assert only["moreConcordant"] == "round2" and only["significant"] is True
    assert "round2 is more concordant" in only["conclusion"] and "p = 0.03125" in only["conclusion"]
    for entry in only["cases"]:
        assert entry["dice"]["roundB"] > entry["dice"]["roundA"]


def test_rounds_are_paired_within_each_case_over_the_observers_of_both(tmp_path):
    """Six cases with round1 and round2; case7 with round1 only; case8 with round1 and round3; in case2 a fourth
    observer, far off, in round1 only. round1 -> round2 compares the six cases, case2 over the pairs of the three
    observers of both rounds (with obsD its round-1 median Dice falls and its change is inflated), and lists case7
    and case8 as holding round1 only; case8 is compared round1 -> round3 on its own, not dropped."""
    root = makeTwoRoundStudy(tmp_path / "study")
    writeMask(root / "case2" / "round1" / "obsD.nrrd", sphere((5.0, 5.0, 0.0), 5.5))
    for roundName in ("round1", "round3"):
        for observer in ("obs1", "obs2"):
            writeMask(root / "case8" / roundName / f"{observer}.nrrd", sphere((0.0, 0.0, 0.0), 6.0))
    for observer in ("obs1", "obs2"):
        writeMask(root / "case7" / "round1" / f"{observer}.nrrd", sphere((0.0, 0.0, 0.0), 6.0))
    result = analyzeStudy(root)
    comparison = result.roundsComparison
    assert [(c["roundA"], c["roundB"]) for c in comparison["comparisons"]] == [("round1", "round2"),
                                                                               ("round1", "round3")]
    first, second = comparison["comparisons"]
    assert [e["case"] for e in first["cases"]] == [f"case{n}" for n in range(1, 7)]
    assert first["unpaired"] == [{"case": "case7", "has": "round1"}, {"case": "case8", "has": "round1"}]
    assert "2 case(s) without both rounds left out (case7: round1 only, case8: round1 only)" in first["conclusion"]
    assert [e["case"] for e in second["cases"]] == ["case8"] and second["tests"]["dice"]["n"] == 1
    case2 = next(e for e in first["cases"] if e["case"] == "case2")
    assert case2["note"] == ("different observers: only in round1: obsD; only in round2: none; compared over the "
                             "pairs of the 3 observer(s) in both")
    unit = next(r for r in result.results if r["case"] == "case2" and r["round"] == "round1")
    common = [p["dice"] for p in unit["iov"]["pairs"] if "obsD" not in (p["a"], p["b"])]
    everyone = [p["dice"] for p in unit["iov"]["pairs"]]
    assert len(common) == 3 and len(everyone) == 6
    assert case2["dice"]["roundA"] == pytest.approx(float(np.median(common)))
    assert float(np.median(everyone)) < case2["dice"]["roundA"] - 0.05  # what the bias would have been


def test_each_observer_is_compared_with_themself_between_rounds(twoRoundStudy):
    """obs1 drew the same sphere in both rounds (Dice 1, no shift); obs2 and obs3 moved 2 mm between the rounds
    (3 mm off the origin in round 1, 1 mm in round 2): their intra-observer Dice and centroid shift are those of
    analyzeObservers on the two spheres, in study.json and as rows of kind 'intra', round 'round1->round2'."""
    _, result, _ = twoRoundStudy
    assert len(result.intraObserver) == 6 * 3 and all("error" not in e for e in result.intraObserver)
    for entry in result.intraObserver:
        radius = 5.0 + 0.5 * (int(entry["case"][4:]) - 1)
        direction = {"obs1": (0, 0, 0), "obs2": (1, 0, 0), "obs3": (0, 1, 0)}[entry["observer"]]
        expected = analyzeObservers({"a": sphere(tuple(3.0 * d for d in direction), radius),
                                     "b": sphere(tuple(1.0 * d for d in direction), radius)}, GEOMETRY,
                                    reference=None).pairs[0]
        assert entry["metrics"]["dice"] == pytest.approx(expected["dice"], abs=1e-12)
        assert entry["metrics"]["centroidShiftMm"] == pytest.approx(0.0 if entry["observer"] == "obs1" else 2.0,
                                                                    abs=1e-9)
        assert longValue(result.rows, case=entry["case"], round="round1->round2", kind="intra",
                         observerA=entry["observer"], metric="dice") == entry["metrics"]["dice"]
    assert {e["metrics"]["dice"] for e in result.intraObserver if e["observer"] == "obs1"} == {1.0}
    assert "intraObserver" in result.toDict()


def test_wilcoxon_not_computed_below_six_cases(twoRoundStudy):
    _, result, _ = twoRoundStudy
    fewer = [r for r in result.results if r["case"] in ("case1", "case2", "case3", "case4", "case5")]
    comparison = compareRounds(fewer)["comparisons"][0]
    assert comparison["tests"]["dice"]["pValue"] is None
    assert comparison["tests"]["dice"]["note"] == "not computed: fewer than 6 paired cases (n=5)"
    assert "not computed: fewer than 6 paired cases" in comparison["conclusion"]
    assert comparison["moreConcordant"] == "round2" and comparison["significant"] is None


def test_outputs(twoRoundStudy, tmp_path):
    _, result, _ = twoRoundStudy
    output = writeStudyOutputs(result, tmp_path / "out")
    names = sorted(p.name for p in output.iterdir())
    assert names == [".reirradiation-output", "long.csv", "report.html", "rounds_comparison.csv",
                     "rounds_comparison.json", "study.json", "summary_by_case.csv", "summary_by_round.csv",
                     "volume_agreement.csv"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    with open(output / "long.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == LONG_COLUMNS and len(rows) == len(result.rows)
    assert {r["kind"] for r in rows} == {"pair", "observer", "case", "intra"}
    first = next(r for r in rows if r["kind"] == "pair" and r["metric"] == "dice")
    assert float(first["value"]) == longValue(result.rows, case=first["case"], round=first["round"], kind="pair",
                                              observerA=first["observerA"], observerB=first["observerB"],
                                              metric="dice")
    with open(output / "summary_by_round.csv", newline="") as stream:
        summary = {(r["round"], r["kind"], r["metric"]): r for r in csv.DictReader(stream)}
    diceRound1 = [r["value"] for r in result.rows if r["round"] == "round1" and r["metric"] == "dice"]
    assert float(summary["round1", "pair", "dice"]["median"]) == pytest.approx(float(np.median(diceRound1)))
    q1, q3 = np.percentile(diceRound1, [25, 75])
    assert float(summary["round1", "pair", "dice"]["iqr"]) == pytest.approx(q3 - q1)
    assert int(summary["round1", "pair", "dice"]["n"]) == 18
    with open(output / "rounds_comparison.csv", newline="") as stream:
        comparison = list(csv.DictReader(stream))
    overall = next(r for r in comparison if r["case"].startswith("(all") and r["metric"] == "median pair dice")
    assert float(overall["wilcoxonP"]) == pytest.approx(0.03125)
    assert len([r for r in comparison if r["metric"] == "median pair dice"]) == 7
    # each row says what its HD and surface Dice were measured at (a code review: only long.csv did)
    assert {r["metric"]: r["setting"] for r in comparison} == {
        "median pair dice": "", "median pair hdPercentileMm": "percentile 95, maxDirected",
        "median pair surfaceDice": "tolerance 2 mm"}
    study = json.loads((output / "study.json").read_text())
    assert study["options"]["reference"] == "majority" and study["counts"] == {
        "cases": 6, "analysedUnits": 12, "failures": 0}
    assert study["roundsComparison"]["comparisons"][0]["tests"]["dice"]["pValue"] == pytest.approx(0.03125)
    html = (output / "report.html").read_text()
    root = ET.fromstring(html.replace("<!DOCTYPE html>", ""))
    svgs = root.findall(".//{http://www.w3.org/2000/svg}svg")
    # 3 per-round box plots, Dice per case, volumes, the paired round plot
    assert len(svgs) == 6
    titles = [svg.find("{http://www.w3.org/2000/svg}title").text for svg in svgs]
    assert titles[:3] == ["Pairwise Dice per round", "Pairwise HD95 (mm) per round", "Pairwise surface Dice per round"]
    assert "round2 is more concordant" in html
    boxes = svgs[0].findall(".//{http://www.w3.org/2000/svg}g[@class='box']")
    assert [(b.get("data-label"), b.get("data-n")) for b in boxes] == [("round1", "18"), ("round2", "18")]


def test_a_bad_case_is_reported_and_skipped(tmp_path):
    root = tmp_path / "study"
    writeMask(root / "good" / "a.nrrd", sphere())
    writeMask(root / "good" / "b.nrrd", sphere((1.0, 0, 0)))
    (root / "corrupt").mkdir()
    (root / "corrupt" / "a.nrrd").write_text("not a nrrd file")
    writeMask(root / "corrupt" / "b.nrrd", sphere())
    writeMask(root / "lonely" / "a.nrrd", sphere())
    (root / "nothing").mkdir()
    result = analyzeStudy(root)
    assert [r["case"] for r in result.results] == ["good"]
    failures = {f["case"]: f for f in result.failures}
    assert set(failures) == {"corrupt", "lonely", "nothing"}
    assert "could not be read" in failures["corrupt"]["error"] and "a.nrrd" in failures["corrupt"]["error"]
    assert "at least two are needed" in failures["lonely"]["error"]
    assert "no observer file" in failures["nothing"]["error"]
    output = writeStudyOutputs(result, tmp_path / "out")
    study = json.loads((output / "study.json").read_text())
    assert {f["case"] for f in study["failures"]} == {"corrupt", "lonely", "nothing"}
    html = (output / "report.html").read_text()
    assert "Failures (skipped)" in html and "corrupt" in html


def test_parallel_jobs_give_the_same_rows(twoRoundStudy):
    root, serial, _ = twoRoundStudy
    parallel = analyzeStudy(root, StudyOptions(reference="majority"), jobs=2)
    assert parallel.rows == serial.rows


def test_picture_callback_and_undefined_values(tmp_path):
    root = tmp_path / "study"
    writeMask(root / "case" / "a.nrrd", sphere())
    writeMask(root / "case" / "b.nrrd", np.zeros(GEOMETRY.shape, dtype=bool))
    calls = []
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 16

    def picture(caseName, roundName, masks, geometry, imagePath=None):
        calls.append((caseName, roundName, sorted(masks), geometry.sizeXyz, imagePath))
        return png

    result = analyzeStudy(root, pictureCallback=picture)
    assert calls == [("case", "single", ["a", "b"], GEOMETRY.sizeXyz, None)]
    assert result.pictures == {("case", "single"): png}
    assert any("empty" in note for note in result.results[0]["notes"])
    assert longValue(result.rows, kind="pair", metric="hausdorffMm") is None  # distance to an empty mask
    output = writeStudyOutputs(result, tmp_path / "out")
    assert (output / "pictures" / "case_single.png").read_bytes() == png
    with open(output / "long.csv", newline="") as stream:
        hd = next(r for r in csv.DictReader(stream) if r["metric"] == "hausdorffMm")
    assert hd["value"] == "NA"
    assert "data:image/png;base64," in (output / "report.html").read_text()


def test_marks_rows_are_flattened():
    marks = {"summary": {"obs1": {"honouredFraction": 0.5, "nHonoured": 1, "nMarks": 2, "flagged": True,
                                  "worstMissLabel": "M2", "overContouredLabels": []}},
             "marks": [{"id": "m1", "label": "M1", "positionLps": [1, 2, 3],
                        "observers": {"obs1": {"signedDistanceMm": 1.5, "honoured": True}}}]}
    rows = studyLib._marksRows("c", "r", marks)
    assert {(r["observerA"], r["metric"], r["value"]) for r in rows} == {
        ("obs1", "marks.honouredFraction", 0.5), ("obs1", "marks.nHonoured", 1.0), ("obs1", "marks.nMarks", 2.0),
        ("obs1", "marks.flagged", 1.0), ("obs1", "mark[M1].signedDistanceMm", 1.5),
        ("obs1", "mark[M1].honoured", 1.0)}
    # two marks with one label (ids m1, m2): their rows stay apart, 0.1 and 6.1 mm each under its own key
    marks["marks"] = [{"id": f"m{n}", "label": "caudal", "observers": {"obs1": {"signedDistanceMm": d}}}
                      for n, d in ((1, 0.1), (2, 6.1))]
    rows = studyLib._marksRows("c", "r", marks)
    assert {(r["metric"], r["value"]) for r in rows if r["metric"].startswith("mark[")} == {
        ("mark[caudal#m1].signedDistanceMm", 0.1), ("mark[caudal#m2].signedDistanceMm", 6.1)}


def test_a_marks_folder_with_several_files_is_said_not_guessed(tmp_path):
    for observer in ("obs1", "obs2"):
        writeMask(tmp_path / "study" / "c1" / f"{observer}.nrrd", sphere())
    (tmp_path / "study" / "c1" / "marks").mkdir()
    for name in ("reader1.mrk.json", "reader2.mrk.json", "reader1.csv"):
        (tmp_path / "study" / "c1" / "marks" / name).write_text("{}")
    case = discoverStudy(tmp_path / "study")[0]
    assert case.marksPath is None
    assert case.notes == ("radiologist marks not evaluated: marks/ holds 2 marks files (reader1.mrk.json, "
                          "reader2.mrk.json); keep one there, or name the one to check marks.mrk.json in the case "
                          "folder",)
    (tmp_path / "study" / "c1" / "marks" / "reader2.mrk.json").unlink()  # the markups file before the CSV
    assert discoverStudy(tmp_path / "study")[0].marksPath.endswith("reader1.mrk.json")
    (tmp_path / "study" / "c1" / "marks" / "reader1.mrk.json").unlink()
    assert discoverStudy(tmp_path / "study")[0].marksPath.endswith("reader1.csv")


# ---- RTSTRUCT observers --------------------------------------------------------------------------------------
def writeRtStructObservers(caseDir: Path, roiNames: dict[str, str], withImage: bool) -> dict[str, np.ndarray]:
    from ReirradiationDoseLib.core.dicomwrite import PatientStudy, writeImageSeries, writeRtStruct

    ps = PatientStudy.new("Study^Test", "STUDY1", "20260101")
    series = writeImageSeries(np.zeros(GEOMETRY.shape, dtype=np.int16), GEOMETRY,
                              (caseDir / "image") if withImage else (caseDir.parent.parent / "ct"), ps)
    masks = {}
    for index, (observer, roiName) in enumerate(roiNames.items()):
        mask = sphere((float(index), 0.0, 0.0), 6.0)
        masks[observer] = mask
        distractor = sphere((0.0, 0.0, 0.0), 9.0)
        (caseDir / "observers" / "round1").mkdir(parents=True, exist_ok=True)
        writeRtStruct(caseDir / "observers" / "round1" / f"{observer}.dcm", {"PTV": distractor, roiName: mask},
                      GEOMETRY, ps, series)
    return masks


@pytest.mark.parametrize("withImage", [True, False])
def test_rtstruct_observers(tmp_path, withImage):
    caseDir = tmp_path / "study" / "demo"
    masks = writeRtStructObservers(caseDir, {"obs1": "GTV", "obs2": "gtv", "obs3": "GTV_obs3"}, withImage)
    result = analyzeStudy(tmp_path / "study", StudyOptions(structure="GTV", reference="majority"))
    assert result.failures == [] and len(result.results) == 1
    unit = result.results[0]
    assert unit["structures"] == {"obs1": "GTV", "obs2": "gtv", "obs3": "GTV_obs3"}
    expected = analyzeObservers(masks, GEOMETRY, reference="majority").toDict()
    for pair in expected["pairs"]:
        assert longValue(result.rows, kind="pair", observerA=pair["a"], observerB=pair["b"], metric="dice") == \
            pytest.approx(pair["dice"], abs=1e-12)
    if withImage:
        assert unit["geometry"]["sizeXyz"] == list(GEOMETRY.sizeXyz)
    else:
        assert any("grid derived from their contours" in note for note in unit["notes"])
        assert unit["geometry"]["spacingMm"] == [1.0, 1.0, 2.0]
    # a structure name that matches nothing is a failure of that case, with the ROI names in the message
    failed = analyzeStudy(tmp_path / "study", StudyOptions(structure="CTV"))
    assert failed.results == [] and "no structure matching 'CTV'" in failed.failures[0]["error"]
    assert "PTV" in failed.failures[0]["error"]


def test_options_are_checked():
    with pytest.raises(InputError, match="convention"):
        StudyOptions(hdConvention="median")
    with pytest.raises(InputError, match="percentile"):
        StudyOptions(hdPercentile=0)
    with pytest.raises(InputError, match="tolerance"):
        StudyOptions(toleranceMm=-1)


def test_unpicklable_callback_falls_back_to_one_process(twoRoundStudy):
    root, serial, _ = twoRoundStudy
    calls = []
    result = analyzeStudy(root, StudyOptions(reference="majority"), jobs=2,
                          pictureCallback=lambda *args, **kwargs: calls.append(args[:2]))
    assert len(calls) == 12 and result.rows == serial.rows and result.failures == []


def test_read_slicer_segmentation_picks_the_structure(tmp_path):
    from ReirradiationDoseLib.core.segio import writeSegNrrd

    gtv, ptv = sphere(radiusMm=4.0), sphere(radiusMm=8.0)
    path = tmp_path / "obs1.seg.nrrd"
    writeSegNrrd(path, {"PTV": ptv, "GTV_obs1": gtv}, GEOMETRY)
    mask, geometry, structure = readObserverMask(path, "GTV")
    assert structure == "GTV_obs1" and np.array_equal(mask, gtv) and geometry.sameGridAs(GEOMETRY)
    with pytest.raises(InputError, match="no structure matching 'Rectum'"):
        readObserverMask(path, "Rectum")
    # one segment: taken when its name names no structure (Slicer's "Segment_1", the file's name), refused when it
    # names another one (a review: an observer's only segment "Rectum" was read as the GTV, the observer flagged
    # 90 mm off by the border marks; `iov` refused the same file)
    for name in ("Segment_1", "obs2", "1"):
        single = tmp_path / "obs2.seg.nrrd"
        writeSegNrrd(single, {name: gtv}, GEOMETRY)
        mask, _, structure = readObserverMask(single, "GTV")
        assert structure == name and np.array_equal(mask, gtv)
    dotted = tmp_path / "Dr. Smith.seg.nrrd"  # the observer's name as the study reads it, dots and all
    writeSegNrrd(dotted, {"Dr. Smith": gtv}, GEOMETRY)
    assert readObserverMask(dotted, "GTV")[2] == "Dr. Smith"
    writeSegNrrd(single, {"Rectum": gtv}, GEOMETRY)
    with pytest.raises(InputError, match=r"obs2.seg.nrrd.*no structure matching 'GTV' was found; the file holds: "
                                         "Rectum"):
        readObserverMask(single, "GTV")


def test_mri_marks_without_a_registration_are_not_evaluated_and_say_why(tmp_path):
    """Marks placed on the MRI with no registration beside them would be read as CT coordinates (the demo's MRI lies
    27 mm away: every observer flagged): the case's numbers stand, its marks are left out with the reason in the
    notes; with an identity registration.tfm beside them (an MRI already resampled onto the CT) they are checked."""
    from DelineationReviewLib.core.marks import BorderMark, MarkSet, writeMarks
    from DelineationReviewLib.core.study import analyzeStudy

    for observer in ("obs1", "obs2"):
        writeMask(tmp_path / "study" / "c1" / f"{observer}.nrrd", sphere())
    writeMarks(tmp_path / "study" / "c1" / "marks.mrk.json",
               MarkSet((BorderMark("top", (0.0, 0.0, 6.0)),), "MRI"))
    result = analyzeStudy(tmp_path / "study").results[0]
    assert result["marks"] is None and result["iov"]["pairs"]
    assert any(n.startswith("radiologist marks not evaluated: ") and "no MRI registration was given" in n
               for n in result["notes"])
    sitk.WriteTransform(sitk.Transform(3, sitk.sitkIdentity), str(tmp_path / "study" / "c1" / "registration.tfm"))
    result = analyzeStudy(tmp_path / "study").results[0]
    assert result["marks"]["summary"]["obs1"]["nHonoured"] == 1


def test_summaries_count_what_they_leave_out_and_give_mean_and_sd():
    """An independent check: the summaries dropped NA values with a smaller n and nothing saying how many; no mean
    or SD. n counts the defined values, nUndefined the NA ones; mean and the sample SD (n - 1) beside the median."""
    from DelineationReviewLib.core.study import SUMMARY_STATISTICS, summarize

    rows = [{"metric": "hd", "value": v} for v in (1.0, 2.0, None, float("nan"), 6.0)]
    rows += [{"metric": "one", "value": 3.0}, {"metric": "none", "value": None}]
    table = {row["metric"]: row for row in summarize(rows, ("metric",))}
    assert SUMMARY_STATISTICS == ("n", "nUndefined", "median", "q1", "q3", "iqr", "min", "max", "mean", "sd")
    hd = table["hd"]
    assert (hd["n"], hd["nUndefined"], hd["median"], hd["mean"]) == (3, 2, 2.0, 3.0)
    assert hd["sd"] == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))
    assert (table["one"]["n"], table["one"]["sd"], table["one"]["mean"]) == (1, None, 3.0)
    assert (table["none"]["n"], table["none"]["nUndefined"], table["none"]["mean"]) == (0, 1, None)


def test_a_dangling_link_as_an_observer_file_skips_the_case_naming_it(tmp_path):
    """An adversarial review: an observer file that is a link to a moved file was left out without a word (the
    case analysed with one reader fewer)."""
    root = tmp_path / "study"
    writeMask(root / "case1" / "a.nrrd", sphere())
    writeMask(root / "case1" / "b.nrrd", sphere((1.0, 0.0, 0.0)))
    (root / "case1" / "c.nrrd").symlink_to(tmp_path / "moved" / "c.nrrd")
    writeMask(root / "case2" / "a.nrrd", sphere())
    writeMask(root / "case2" / "b.nrrd", sphere((0.0, 1.0, 0.0)))
    result = studyLib.analyzeStudy(root, studyLib.StudyOptions())
    assert {r["case"] for r in result.results} == {"case2"}
    failure = next(f for f in result.failures if f["case"] == "case1")
    assert "c.nrrd is a link to a file that does not exist" in failure["error"]
    assert "an observer's delineation is missing" in failure["error"]


def test_observer_grids_that_do_not_overlap_are_refused_by_the_common_grid():
    """An adversarial review: an observer's grid 500 mm from the others made a 766 x 774 x 219 common grid (272 s
    instead of 0.4 s; at 5000 mm a bare MemoryError naming no file)."""
    from ReirradiationDoseLib.core.geometry import ImageGeometry

    near = GEOMETRY
    far = ImageGeometry(near.sizeXyz, near.spacingMm, tuple(np.array(near.originMm) + (500.0, 0.0, 0.0)),
                        near.direction)
    shifted = ImageGeometry(near.sizeXyz, near.spacingMm, tuple(np.array(near.originMm) + (3 * near.spacingMm[0],
                                                                                          0.0, 0.0)), near.direction)
    mask = sphere()
    with pytest.raises(InputError, match=r"the grid of observer 'b' .* does not overlap that of observer 'a'"):
        studyLib.toCommonGrid({"a": (mask, near), "b": (mask, far)})
    masks, common, notes = studyLib.toCommonGrid({"a": (mask, near), "b": (mask, shifted)})
    assert common.sizeXyz[0] == near.sizeXyz[0] + 3 and not any("8 times" in n for n in notes)
