"""`reirradiation study` on the built-in demo case: 5 observers (RTSTRUCT, ROI "GTV"), two rounds, marks."""

import csv
import json

import pytest
from ReirradiationDoseLib.cli import main


@pytest.fixture(scope="module")
def demoStudy(demoCase, tmp_path_factory):
    output = tmp_path_factory.mktemp("demostudy") / "out"
    code = main(["study", str(demoCase.outputDir), "--output", str(output), "--structure", "GTV", "--no-pictures"])
    with open(output / "long.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    info = json.loads((demoCase.outputDir / "observers" / "observers.json").read_text())
    return code, output, rows, info


def observerValues(rows, roundName, metric):
    return {r["observerA"]: float(r["value"]) for r in rows
            if r["round"] == roundName and r["kind"] == "observer" and r["metric"] == metric}


def test_fibrosis_observer_is_the_outlier_in_round_one(demoStudy):
    code, _, rows, info = demoStudy
    assert code == 0
    fibrosis = info["fibrosisObserver"]
    meanDice = observerValues(rows, "round1", "meanDiceToOthers")
    volumes = observerValues(rows, "round1", "volumeCc")
    assert sorted(meanDice) == sorted(info["observers"]) and len(meanDice) == 5
    assert min(meanDice, key=meanDice.get) == fibrosis
    assert max(volumes, key=volumes.get) == fibrosis
    # the volumes are the generator's own (observers.json, rounded to 0.001 cc): same rasterisation of the GTV
    written = {o["name"]: o["volumeCc"] for o in info["rounds"]["1"]["observers"]}
    for name, volume in volumes.items():
        assert volume == pytest.approx(written[name], abs=2e-3)
    # with radiologist input (round 2) the fibrosis observer is no longer the clear outlier by volume
    assert max(observerValues(rows, "round2", "volumeCc").values()) < volumes[fibrosis]


def test_round_two_is_more_concordant(demoStudy):
    _, output, rows, _ = demoStudy
    medians = {r["round"]: float(r["value"]) for r in rows if r["kind"] == "case" and r["metric"] == "medianPairDice"}
    assert medians["round2"] > medians["round1"] + 0.1
    comparison = json.loads((output / "rounds_comparison.json").read_text())["comparisons"][0]
    assert (comparison["roundA"], comparison["roundB"], comparison["moreConcordant"]) == ("round1", "round2",
                                                                                          "round2")
    assert comparison["tests"]["dice"]["note"] == "not computed: fewer than 6 paired cases (n=1)"
    cigen = {r["round"]: float(r["value"]) for r in rows if r["kind"] == "case" and r["metric"] == "cigen"}
    assert cigen["round2"] > cigen["round1"]


def test_marks_and_reference_image_are_used(demoStudy):
    _, output, rows, _ = demoStudy
    study = json.loads((output / "study.json").read_text())
    case = study["inputs"]["cases"][0]
    assert case["image"].endswith("CT") and case["marks"].endswith(".mrk.json")
    assert study["inputs"]["observersInfo"][case["name"]]["fibrosisObserver"]
    unit = study["results"][0]
    assert unit["structures"] == {name: "GTV" for name in unit["observers"]}
    assert unit["marks"] is not None
    honoured = observerValues(rows, "round1", "marks.nMarks")
    assert len(honoured) == 5 and all(v >= 1 for v in honoured.values())
