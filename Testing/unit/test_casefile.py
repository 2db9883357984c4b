import json
import re

import pytest

from ReirradiationDoseLib.core.casefile import parseCaseFile
from ReirradiationDoseLib.core.errors import InputError


@pytest.fixture
def caseDir(tmp_path):
    for name in ("ct.nrrd", "prior.nrrd", "current.nrrd", "prior_ct.nrrd", "rs.dcm", "reg.tfm"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def write(caseDir, data):
    path = caseDir / "case.json"
    path.write_text(json.dumps(data))
    return path


def baseCase():
    return {
        "referenceImage": "ct.nrrd", "structures": "rs.dcm",
        "courses": [
            {"name": "prior", "dose": "prior.nrrd", "fractions": 25, "date": "2024-01-10", "image": "prior_ct.nrrd",
             "registration": "deformable"},
            {"name": "current", "dose": "current.nrrd", "fractions": 17, "date": "2026-10-01"},
        ],
        "tissues": {"GTV": {"alphaBeta": 10}, "Rectum": {"alphaBeta": 3, "recovery": {"model": "constant",
                                                                                    "fraction": 0.25}}},
        "isodoseLevelsGy": [90, 30, 50],
    }


def test_valid_case_is_parsed(caseDir):
    case = parseCaseFile(write(caseDir, baseCase()))
    assert case.currentCourse.name == "current"
    assert [c.name for c in case.priorCourses] == ["prior"]
    assert case.courses[0].registration == "deformable"
    assert case.courses[0].dose == (caseDir / "prior.nrrd").resolve()
    assert case.tissues["GTV"].alphaBetaGy == 10.0
    assert case.isodoseLevelsGy == (30.0, 50.0, 90.0)
    assert case.defaultAlphaBetaGy == 3.0


def test_without_counterpart_names_are_kept_and_default_to_none(caseDir):
    data = baseCase()
    assert parseCaseFile(write(caseDir, data)).courses[0].withoutCounterpart is None  # the pipeline's GTV* default
    data["courses"][0]["withoutCounterpart"] = [" GTV ", "Fibrosis"]
    assert parseCaseFile(write(caseDir, data)).courses[0].withoutCounterpart == ("GTV", "Fibrosis")
    data["courses"][0]["withoutCounterpart"] = []
    assert parseCaseFile(write(caseDir, data)).courses[0].withoutCounterpart == ()
    assert parseCaseFile(write(caseDir, data)).courses[0].courseWithoutCounterpart is None
    data["courses"][0]["courseWithoutCounterpart"] = ["GTV_primary "]
    data["courses"][0]["structures"] = "rs.dcm"  # the course's own structures (any existing file will do here)
    assert parseCaseFile(write(caseDir, data)).courses[0].courseWithoutCounterpart == ("GTV_primary",)


def test_validation_structures_are_kept(caseDir):
    data = baseCase()
    assert parseCaseFile(write(caseDir, data)).courses[0].validationStructures == ()
    data["courses"][0].update(validationStructures=[" Rectum", "SacralPlexus"], structures="rs.dcm")
    assert parseCaseFile(write(caseDir, data)).courses[0].validationStructures == ("Rectum", "SacralPlexus")


def test_initial_transforms_are_kept(caseDir):
    data = baseCase()
    data["courses"][0]["initialTransform"] = "reg.tfm"
    data["mri"] = {"image": "ct.nrrd", "registration": "affine", "initialTransform": "reg.tfm"}
    case = parseCaseFile(write(caseDir, data))
    assert case.courses[0].initialTransform == (caseDir / "reg.tfm").resolve()
    assert case.mri.initialTransform == (caseDir / "reg.tfm").resolve() and case.courses[1].initialTransform is None


def test_transform_file_registration(caseDir):
    data = baseCase()
    data["courses"][0]["registration"] = "reg.tfm"
    case = parseCaseFile(write(caseDir, data))
    assert case.courses[0].registration == "file"
    assert case.courses[0].transformFile.name == "reg.tfm"


def test_affine_registration_for_a_course_and_the_mri(caseDir):
    data = baseCase()
    data["courses"][0]["registration"] = "affine"
    data["mri"] = {"image": "ct.nrrd", "registration": "affine"}
    case = parseCaseFile(write(caseDir, data))
    assert case.courses[0].registration == "affine" and case.mri.registration == "affine"
    data["courses"][0].pop("image")
    with pytest.raises(InputError, match="course 'prior' asks for affine registration but names no 'image'"):
        parseCaseFile(write(caseDir, data))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(colour="red"), "unknown key.*colour"),
    (lambda d: d["courses"][0].update(fractionz=3), "unknown key.*courses\\[0\\].*fractionz"),
    (lambda d: d["courses"][1].update(dose="missing.dcm"), "missing.dcm' does not exist"),
    (lambda d: d["courses"][0].update(date="2026-11-01"), "prior course 'prior' is dated 2026-11-01 — after"),
    (lambda d: d["courses"][0].update(fractions=0), "fractions must be a positive whole number"),
    (lambda d: d["courses"][0].update(fractions=2.5), "fractions must be a positive whole number"),
    (lambda d: d["tissues"]["GTV"].update(alphaBeta=-1), r"tissues\['GTV'\] alphaBeta must be a positive number"),
    (lambda d: d.update(defaultAlphaBeta=0), "defaultAlphaBeta must be a positive number"),
    (lambda d: d["courses"][0].pop("image"), "deformable registration but names no 'image'"),
    (lambda d: d["courses"][1].update(name="prior"), "two courses are named 'prior'"),
    (lambda d: d["courses"][0].update(date="10/01/2024"), "date written YYYY-MM-DD"),
    (lambda d: d.pop("referenceImage"), "'referenceImage' is required"),
    (lambda d: d["courses"][0].update(registration="magic"),
     "registration 'magic' is not none, rigid, affine, deformable or a transform file"),
    (lambda d: d.update(mri={"image": "ct.nrrd", "registration": "deformable"}),
     "MRI to CT registration is rigid or affine"),
    (lambda d: d["courses"][1].pop("date"), "course date missing for: current"),
    # prior courses only: the last was taken as current, its recovery never applied (a physicist's review)
    (lambda d: d["courses"][1].update(current=False),
     "no course is the current one: course 'current', the last listed, is marked \"current\": false"),
    (lambda d: d.update(plannedCourse={"fractions": 17, "dose": "current.nrrd"}),
     "plannedCourse 'dose' is not supported in a case file yet"),
    (lambda d: d["courses"][0].update(withoutCounterpart="GTV"), "'withoutCounterpart' must be a list of structure"),
    (lambda d: d["courses"][0].update(withoutCounterpart=["GTV", ""]), "'withoutCounterpart' must be a list"),
    (lambda d: d["courses"][0].update(courseWithoutCounterpart="GTV_primary"),
     "'courseWithoutCounterpart' must be a list of structure"),
    (lambda d: d["courses"][0].update(courseWithoutCounterpart=["GTV_primary"]),
     "names structures in 'courseWithoutCounterpart' but has no 'structures'"),
    (lambda d: d["courses"][0].update(validationStructures="Rectum", structures="rs.dcm"),
     "'validationStructures' must be a list of structure"),
    (lambda d: d["courses"][0].update(validationStructures=["Rectum"]),
     "course 'prior' names 'validationStructures'.*need \"registration\": \"deformable\" and the course's "
     "'structures'"),
    (lambda d: d["courses"][0].update(validationStructures=["Rectum"], structures="rs.dcm", registration="rigid"),
     "course 'prior' names 'validationStructures'"),
    (lambda d: d["courses"][0].update(initialTransform="reg.tfm", registration="none"),
     "course 'prior' 'initialTransform' is where a registration starts: it needs registration rigid, affine or "
     "deformable \\(not 'none'\\)"),
    (lambda d: d["courses"][0].update(initialTransform="prior.nrrd"),
     "course 'prior' 'initialTransform' must be a transform file \\(.h5, .hdf5, .tfm or .txt; got 'prior.nrrd'\\)"),
    (lambda d: d["courses"][0].update(initialTransform="missing.tfm"),
     "course 'prior' initialTransform 'missing.tfm' does not exist"),
    (lambda d: d.update(mri={"image": "ct.nrrd", "registration": "reg.tfm", "initialTransform": "reg.tfm"}),
     "mri 'initialTransform' is where a registration starts.*\\(not 'file'\\)"),
])
def test_bad_case_files_are_refused_with_a_clear_message(caseDir, mutate, message):
    data = baseCase()
    mutate(data)
    path = write(caseDir, data)
    with pytest.raises(InputError, match=message) as info:
        parseCaseFile(path)
    assert str(path) in str(info.value)


def test_not_json(caseDir):
    path = caseDir / "case.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a valid JSON case file"):
        parseCaseFile(path)


def test_default_targets_are_known_as_such_and_said_so_in_the_report(caseDir):
    """A physicist's review: a case without 'targets' read "CTV ... yes (case targets)" in the report: the GTV/CTV
    default was not the case's choice, and the README did not say there was one."""
    from types import SimpleNamespace

    from ReirradiationDoseLib.core.dosereport import _targetReason
    from ReirradiationDoseLib.core.pipeline import DoseSettings

    data = baseCase()
    data.pop("targets", None)
    case = parseCaseFile(write(caseDir, data))
    assert case.targets == ("GTV", "CTV") and case.targetsByDefault
    settings = DoseSettings.fromCase(case)
    assert _targetReason(SimpleNamespace(), settings, "CTV") == \
        "yes (the default targets GTV, CTV)"
    data["targets"] = ["CTV"]
    case = parseCaseFile(write(caseDir, data))
    assert not case.targetsByDefault
    assert _targetReason(SimpleNamespace(), DoseSettings.fromCase(case), "CTV") == "yes (case targets)"


def test_a_prior_courses_start_date_is_read_and_checked(caseDir):
    """'startDate': a prior course's first fraction (its 'date' is the last). Read on a prior course; refused on the
    current course (its 'date' is its first fraction) and after the course's own date."""
    data = baseCase()
    data["courses"][0]["startDate"] = "2023-12-01"
    case = parseCaseFile(write(caseDir, data))
    assert str(case.courses[0].startDate) == "2023-12-01" and case.courses[1].startDate is None
    refusals = [
        (1, "2026-10-01", "the current course 'current' has a 'startDate': its 'date' is already its first fraction"),
        (0, "2024-01-11", "course 'prior' begins (2024-01-11, 'startDate') after it ends (2024-01-10"),
        (0, "2023-13-01", "course 'prior' startDate must be a date written YYYY-MM-DD (got '2023-13-01')"),
    ]
    for index, value, message in refusals:
        data = baseCase()
        data["courses"][index]["startDate"] = value
        with pytest.raises(InputError, match=re.escape(message)) as error:
            parseCaseFile(write(caseDir, data))
        assert "case.json" in str(error.value)
