"""Border marks on the built-in demo case (issue 11): the observer who misses the extension is the one flagged,
at an extension mark. Uses the written files only (MRI marks .mrk.json / .csv, round-1 RTSTRUCTs, the CT series,
the CT->MRI registration), read with the project's readers."""

from __future__ import annotations

import json

import pytest

from DelineationReviewLib.core.marks import marksReportForObservers
from ReirradiationDoseLib.core.geometry import ImageGeometry

generate = pytest.importorskip("ReirradiationDoseLib.core.democase.generate")
rtstruct = pytest.importorskip("ReirradiationDoseLib.core.rtstruct")
dicomimage = pytest.importorskip("ReirradiationDoseLib.core.dicomimage")
from ReirradiationDoseLib.core.democase.observers import MISSED_EXTENSION_OBSERVER  # noqa: E402


@pytest.fixture(scope="module")
def demoCase(tmp_path_factory):
    folder = tmp_path_factory.mktemp("marks-demo")
    generate.generateDemoCase(folder)
    image, _ = dicomimage.readImageSeries(folder / "current" / "CT")
    geometry = ImageGeometry.fromImage(image)
    masks = {path.stem: rtstruct.rasterizeRoi(rtstruct.readRtStruct(path), "GTV", geometry)
             for path in sorted((folder / "observers" / "round1").glob("*.dcm"))}
    truth = json.loads((folder / "truth.json").read_text())
    return folder, geometry, masks, truth


@pytest.mark.parametrize("marksFile", ["radiologist_marks.mrk.json", "radiologist_marks.csv"])
def test_missed_extension_observer_is_the_one_flagged_at_an_extension_mark(demoCase, marksFile):
    folder, geometry, masks, truth = demoCase
    assert MISSED_EXTENSION_OBSERVER in masks and len(masks) >= 3
    report = marksReportForObservers(folder / "marks" / marksFile, masks, geometry, toleranceMm=3.0,
                                     transform=folder / "truth" / "mri_registration.tfm")
    json.dumps(report, allow_nan=False)
    extension = {m["label"] for m in truth["radiologistMarks"] if m["onExtension"]}
    assert extension  # the demo has marks on the extension

    flagged = [name for name, s in report["summary"].items() if s["flagged"]]
    assert flagged == [MISSED_EXTENSION_OBSERVER], report["summary"]
    worst = report["summary"][MISSED_EXTENSION_OBSERVER]
    assert worst["worstMissLabel"].removeprefix("Arrow: ") in extension
    assert worst["worstMissMm"] > 3.0 + report["voxelUncertaintyMm"]

    # every extension point mark is missed by that observer and by nobody else
    for mark in report["marks"]:
        if mark["kind"] != "point":
            continue
        for name, result in mark["observers"].items():
            if mark["label"] in extension:
                assert result["honoured"] is (name != MISSED_EXTENSION_OBSERVER), (mark["label"], name, result)

    # the mapped marks land where the truth says (current-CT LPS), within a micrometre
    byLabel = {m["label"]: m for m in report["marks"] if m["kind"] == "point"}
    for mark in truth["radiologistMarks"]:
        assert byLabel[mark["label"]]["positionLps"] == pytest.approx(mark["currentLpsMm"], abs=2e-3)
