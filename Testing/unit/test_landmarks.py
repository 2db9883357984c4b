"""Landmark check of a course's registration (AAPM TG-132: target registration error at points both CTs show):
readers for Slicer markups JSON and CSV, refusals naming the file, and the TRE through the dose command's pipeline
on the demo case against its known deformation."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.core import casefile, pipeline
from ReirradiationDoseLib.core.dosereport import _qualityLines
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.landmarks import landmarkCheck, readLandmarks


def writeMarkups(path, points: dict, system: str = "LPS"):
    """A Slicer markups JSON point list as Slicer 5 writes it."""
    flip = np.array([-1.0, -1.0, 1.0]) if system == "RAS" else np.ones(3)
    path.write_text(json.dumps({
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
                   "markups-schema-v1.0.3.json#",
        "markups": [{"type": "Fiducial", "coordinateSystem": system, "coordinateUnits": "mm",
                     "controlPoints": [{"id": str(i + 1), "label": label, "position": list(np.asarray(p) * flip)}
                                       for i, (label, p) in enumerate(points.items())]}]}))
    return path


POINTS = {"S1 tip": (1.5, 40.0, -12.0), "clip": (-20.0, 10.5, 3.25), "L femoral head": (60.0, 0.0, -40.0)}


def test_markups_json_and_csv_in_lps_or_ras_read_the_same_points(tmp_path):
    lps = readLandmarks(writeMarkups(tmp_path / "a.mrk.json", POINTS))
    ras = readLandmarks(writeMarkups(tmp_path / "b.mrk.json", POINTS, "RAS"))
    (tmp_path / "c.csv").write_text("label,L,P,S\n" + "".join(f"{k},{x},{y},{z}\n" for k, (x, y, z) in POINTS.items()))
    (tmp_path / "d.csv").write_text("label,R,A,S\n" + "".join(f"{k},{-x},{-y},{z}\n"
                                                              for k, (x, y, z) in POINTS.items()))
    for read in (lps, ras, readLandmarks(tmp_path / "c.csv"), readLandmarks(tmp_path / "d.csv")):
        assert list(read) == list(POINTS)
        for label, point in POINTS.items():
            assert read[label] == pytest.approx(point, abs=1e-9)


@pytest.mark.parametrize("name, text, message", [
    ("x.csv", "label,X,Y,Z\na,1,2,3\n", "header"),
    ("x.csv", "label,L,P,S\na,1,2\n", "line 2 has 3 values"),
    ("x.csv", "label,L,P,S\na,1,2,3\na,4,5,6\n", "'a' appears twice"),
    ("x.csv", "label,L,P,S\n,1,2,3\n", "has no label"),
    ("x.csv", "label,L,P,S\na,1,two,3\n", "are not numbers"),
    ("x.csv", "label,L,P,S\na,1,nan,3\n", "three finite numbers"),
    ("x.csv", "label,L,P,S\n", "no points"),
    ("x.mrk.json", "{not json", "not a readable markups JSON"),
    ("x.mrk.json", '{"markups": []}', "no 'markups' list"),
    ("x.mrk.json", '{"markups": [{"coordinateSystem": "XYZ", "controlPoints": []}]}', "unknown coordinate system"),
    ("x.txt", "a 1 2 3", r"markups file \(\.mrk\.json\) or a CSV"),
])
def test_bad_landmark_files_are_refused_naming_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=message) as caught:
        readLandmarks(path)
    assert name in str(caught.value)


def test_tre_pairs_points_by_label_and_warns_beyond_the_tolerance(tmp_path):
    """A 3 mm shift along x: TRE 3 mm at every pair, beyond the 2 mm floor of the tolerance with 1 mm voxels and
    within it with 3.5 mm voxels; a label in one file only is named and left out."""
    current = writeMarkups(tmp_path / "current.mrk.json", {**POINTS, "only here": (0.0, 0.0, 0.0)})
    course = writeMarkups(tmp_path / "course.mrk.json",
                          {k: (x + 3.0, y, z) for k, (x, y, z) in POINTS.items()})
    shift = sitk.TranslationTransform(3, (3.0, 0.0, 0.0))
    summary, warnings = landmarkCheck(shift, current, course, (3.5, 3.5, 3.5))
    assert summary["pairs"] == 3 and summary["maxMm"] == pytest.approx(0.0, abs=1e-9)
    summary, warnings = landmarkCheck(None, current, course, (1.0, 1.0, 2.0))
    assert summary["perPairMm"] == pytest.approx({k: 3.0 for k in POINTS})
    assert summary["toleranceMm"] == 2.0 and sorted(summary["aboveTolerance"]) == sorted(POINTS)
    assert summary["unpaired"] == ["only here"]
    assert any("'only here'" in w and "current.mrk.json" in w for w in warnings)
    assert any("misses 3 of 3 landmarks by more than 2 mm" in w for w in warnings)
    summary, warnings = landmarkCheck(None, current, course, (1.0, 1.0, 3.5))
    assert summary["toleranceMm"] == 3.5 and summary["aboveTolerance"] == []
    assert not any("misses" in w for w in warnings)
    other = writeMarkups(tmp_path / "other.mrk.json", {"elsewhere": (1.0, 2.0, 3.0)})
    with pytest.raises(InputError, match="no landmark label in common with other.mrk.json"):
        landmarkCheck(None, current, other, (1.0, 1.0, 1.0))


def _demoLandmarks(demoCase, tmp_path):
    """The demo's truth points as landmarks on the current CT, and where the generator's field puts them on the
    prior CT (x + u(x))."""
    truthField = sitk.ReadImage(str(demoCase.paths["case"].parent / "truth" / "prior_registration.nrrd"),
                                sitk.sitkVectorFloat64)
    truth = sitk.DisplacementFieldTransform(truthField)
    current = {p["name"]: tuple(p["lpsMm"]) for p in demoCase.truth["points"]}
    course = {name: truth.TransformPoint(point) for name, point in current.items()}
    return (writeMarkups(tmp_path / "landmarks_current.mrk.json", current),
            writeMarkups(tmp_path / "landmarks_prior.mrk.json", course), current, course)


def _case(demoCase, tmp_path, registration, landmarks, name):
    data = json.loads(demoCase.paths["case"].read_text())
    data["courses"][0]["registration"] = registration
    if registration == "none":  # the prior CT's frame differs from today's: "none" is an explicit override
        data["allowFrameOfReferenceMismatch"] = True
    data["courses"][0]["landmarks"] = landmarks
    data["mri"]["registration"] = "none"
    path = demoCase.paths["case"].parent / f"case_landmarks_{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_the_dose_pipeline_checks_a_course_registration_at_its_landmarks(demoCase, tmp_path):
    """Through the true field the 10 landmarks are met (TRE < 0.05 mm, the field's interpolation); without a
    registration they are missed by |u(x)| (6.0-13.3 mm) and warned, beyond the 5 mm tolerance (the small demo's
    slice thickness); the report states both."""
    currentFile, courseFile, current, course = _demoLandmarks(demoCase, tmp_path)
    landmarks = {"current": str(currentFile), "course": str(courseFile)}
    inputs = pipeline.loadCaseInputs(casefile.parseCaseFile(
        _case(demoCase, tmp_path, "truth/prior_registration.nrrd", landmarks, "truth")))
    check = inputs.courses[0].registration["landmarks"]
    assert check["pairs"] == 10 and check["maxMm"] < 0.05 and check["toleranceMm"] == 5.0
    assert not any("landmarks" in w for w in inputs.warnings)

    inputs = pipeline.loadCaseInputs(casefile.parseCaseFile(_case(demoCase, tmp_path, "none", landmarks, "none")))
    check = inputs.courses[0].registration["landmarks"]
    expected = {name: float(np.linalg.norm(np.subtract(course[name], current[name]))) for name in current}
    assert check["perPairMm"] == pytest.approx(expected, abs=1e-6)
    assert min(expected.values()) > 5.0  # every point moved more than the tolerance
    assert sorted(check["aboveTolerance"]) == sorted(current)
    warned = [w for w in inputs.warnings if "misses" in w]
    assert len(warned) == 1 and warned[0].startswith("course 'prior': the registration misses 10 of 10 landmarks")
    line = _qualityLines([{"name": "prior", "registration": inputs.courses[0].registration}])[0]
    assert line.startswith("Course 'prior' (none registration): landmark check at 10 point pairs, target "
                           "registration error mean ")
    assert "10 beyond the tolerance of 5 mm" in line


def test_landmarks_in_the_case_file_are_checked(demoCase, tmp_path):
    currentFile, courseFile, *_ = _demoLandmarks(demoCase, tmp_path)
    with pytest.raises(InputError, match="'landmarks' must be an object with 'current'"):
        casefile.parseCaseFile(_case(demoCase, tmp_path, "none", [str(currentFile)], "list"))
    with pytest.raises(InputError, match="landmarks 'course' 'missing.mrk.json' does not exist"):
        casefile.parseCaseFile(_case(demoCase, tmp_path, "none", {"current": str(currentFile),
                                                                  "course": "missing.mrk.json"}, "missing"))
    data = json.loads(demoCase.paths["case"].read_text())
    data["courses"][1]["landmarks"] = {"current": str(currentFile), "course": str(courseFile)}
    path = demoCase.paths["case"].parent / "case_landmarks_current.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="'landmarks' check a prior course's registration"):
        casefile.parseCaseFile(path)
