"""`reirradiation study` on the LIDC-IDRI multi-reader nodules (real radiologists, one round)."""

import csv
import json
import xml.etree.ElementTree as ET

import pytest
import SimpleITK as sitk
from reirradiation_testing import sharedDataPath
from DelineationReviewLib.core.iov import analyzeObservers
from ReirradiationDoseLib.cli import main
from ReirradiationDoseLib.core.geometry import ImageGeometry

pytestmark = pytest.mark.data
PAIR_METRICS = ("dice", "jaccard", "hausdorffMm", "hdPercentileMm", "msdMm", "surfaceDice", "centroidShiftMm")


@pytest.fixture(scope="module")
def lidcStudy(tmp_path_factory):
    study = sharedDataPath("lidc-multireader")
    output = tmp_path_factory.mktemp("lidc") / "out"
    code = main(["study", str(study), "--output", str(output), "--jobs", "1"])
    return study, output, code


def test_long_csv_matches_analyze_observers_per_case(lidcStudy):
    study, output, code = lidcStudy
    assert code == 0
    with open(output / "long.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    cases = sorted(p.name for p in study.iterdir() if p.is_dir())
    assert sorted({r["case"] for r in rows}) == cases and len(cases) == 6
    assert {r["round"] for r in rows} == {"single"}
    checked = 0
    for case in cases:
        images = {p.name[:-5]: sitk.ReadImage(str(p)) for p in sorted((study / case).glob("reader*.nrrd"))}
        masks = {name: sitk.GetArrayFromImage(image) > 0 for name, image in images.items()}
        geometry = ImageGeometry.fromImage(next(iter(images.values())))
        expected = analyzeObservers(masks, geometry, reference="staple", toleranceMm=2.0, hdPercentile=95.0).toDict()
        caseRows = {(r["kind"], r["observerA"], r["observerB"], r["metric"]): r["value"] for r in rows
                    if r["case"] == case}
        for pair in expected["pairs"]:
            for metric in PAIR_METRICS:
                value = caseRows["pair", pair["a"], pair["b"], metric]
                assert float(value) == pytest.approx(pair[metric], rel=1e-12, abs=1e-12), (case, pair, metric)
                checked += 1
        for observer in expected["observers"]:
            assert float(caseRows["observer", observer["name"], "", "volumeCc"]) == pytest.approx(observer["volumeCc"])
        for entry in expected["consensus"]["observers"]:
            assert float(caseRows["observer", entry["name"], "", "consensus.stapleSensitivity"]) == \
                pytest.approx(entry["stapleSensitivity"])
        assert float(caseRows["case", "", "", "cigen"]) == pytest.approx(expected["cigen"])
    assert checked == 6 * 6 * len(PAIR_METRICS)  # 6 nodules x 6 reader pairs
    # the README's range for these nodules: pairwise Dice 0.46-0.90
    dice = [float(r["value"]) for r in rows if r["kind"] == "pair" and r["metric"] == "dice"]
    assert 0.45 < min(dice) < 0.47 and 0.89 < max(dice) < 0.91


def test_report_and_json(lidcStudy):
    _, output, _ = lidcStudy
    html = (output / "report.html").read_text(encoding="utf-8")
    root = ET.fromstring(html.replace("<!DOCTYPE html>", ""))
    svgs = root.findall(".//{http://www.w3.org/2000/svg}svg")
    titles = [svg.find("{http://www.w3.org/2000/svg}title").text for svg in svgs]
    assert titles == ["Pairwise Dice per round", "Pairwise HD95 (mm) per round", "Pairwise surface Dice per round",
                      "Pairwise Dice per case", "Volume per observer"]
    bars = svgs[4].findall(".//{http://www.w3.org/2000/svg}rect[@class='bar']")
    assert len(bars) == 24  # 6 nodules x 4 readers
    assert "only one round: nothing to compare" in html
    study = json.loads((output / "study.json").read_text())
    assert study["counts"] == {"cases": 6, "analysedUnits": 6, "failures": 0}
    comparison = json.loads((output / "rounds_comparison.json").read_text())
    assert comparison["comparisons"] == [] and comparison["rounds"] == ["single"]
    pictures = sorted(p.name for p in (output / "pictures").glob("*.png")) if (output / "pictures").exists() else []
    images = root.findall(".//{http://www.w3.org/1999/xhtml}img")
    assert len(images) == len(pictures)
    if pictures:  # slicer-core present: one agreement picture per nodule, embedded in the report
        assert len(pictures) == 6


def test_volume_agreement_over_the_nodules(lidcStudy):
    """The study's volume_agreement.csv on real readers: six nodules × four readers, the ICCs of the volumes long.csv
    gives. LIDC's readers are anonymous per nodule (reader1 of one nodule is not reader1 of the next), so the
    one-way ICC(1,1) is the one that applies; the report says which model takes the observers to be the same."""
    from DelineationReviewLib.core.study import intraclassCorrelation

    _, output, code = lidcStudy
    assert code == 0
    with open(output / "long.csv", newline="") as stream:
        volumes = {(r["case"], r["observerA"]): float(r["value"]) for r in csv.DictReader(stream)
                   if r["kind"] == "observer" and r["metric"] == "volumeCc"}
    cases = sorted({c for c, _ in volumes})
    readers = sorted({o for _, o in volumes})
    with open(output / "volume_agreement.csv", newline="") as stream:
        (row,) = list(csv.DictReader(stream))
    assert (int(row["cases"]), int(row["observers"]), row["casesLeftOut"]) == (6, 4, "")
    expected = intraclassCorrelation([[volumes[(c, o)] for o in readers] for c in cases])
    assert float(row["iccOneWay"]) == pytest.approx(expected["oneWay"], rel=1e-9)
    # nodules of 0.1 to 11 cc: ICC(1,1) 0.882 [0.67, 0.98]; pingouin 0.7.0 on the same volumes (rounded to 1 mm³,
    # in a scratch environment): 0.882027 [0.67, 0.98]
    assert float(row["iccOneWay"]) == pytest.approx(0.882, abs=1e-3)
    assert (float(row["iccOneWayLow"]), float(row["iccOneWayHigh"])) == pytest.approx((0.67, 0.98), abs=0.005)
    assert "readers who differ from case to case" in (output / "report.html").read_text()
