"""Issue 10: the catalogue of refused or warned inputs, one test per row, through the real entry points.

Every refusal is an :class:`InputError` whose message names the file (or the case file) and the problem; every
warning names the file and says how much is affected. Bad inputs are built from real files in ../shared/data and
from small files written by ``core/dicomwrite.py`` (a FRACTION dose, a tilted CT, a missing slice, another
patient's dose...). Rows already tested elsewhere are referenced in the README table; the tests here exercise the
row again through the entry point a user reaches (reader, pipeline, CLI).
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from DelineationReviewLib.core.iov import analyzeObservers
from DelineationReviewLib.core.observers import makeObserverSet
from ReirradiationDoseLib.cli import main as cliMain
from ReirradiationDoseLib.core.casefile import parseCaseFile
from ReirradiationDoseLib.core.course import checkCourseConsistency
from ReirradiationDoseLib.core.dicomimage import readImageSeries
from ReirradiationDoseLib.core.dicomwrite import PatientStudy, writeImageSeries, writeRtDose, writeRtPlan, writeRtStruct
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.pipeline import (
    CourseInput,
    DoseInputs,
    computeDose,
    loadCaseInputs,
    runDoseWorkflow,
)
from ReirradiationDoseLib.core.radiobiology import eqd2Gy, intervalDays
from ReirradiationDoseLib.core.rtdose import readRtDose, requirePlanDose
from ReirradiationDoseLib.core.rtplan import readRtPlan
from ReirradiationDoseLib.core.rtstruct import rasterizeAllWithReport, readRtStruct

from reirradiation_testing import csvRows, sharedDataPath

# a small CT: 16 x 14 x 10 voxels of 3 x 3 x 4 mm
CT = ImageGeometry((16, 14, 10), (3.0, 3.0, 4.0), (-22.5, -19.5, -18.0))


def box(geometry, k, j, i):
    mask = np.zeros(geometry.shape, bool)
    mask[k[0]:k[1], j[0]:j[1], i[0]:i[1]] = True
    return mask


GTV = box(CT, (3, 7), (4, 9), (5, 11))
RECTUM = box(CT, (2, 8), (10, 13), (6, 10))
BODY = box(CT, (0, 10), (1, 13), (1, 15))


def writeCourse(folder, study, doseGy=None, doseGeometry=CT, fractions=5, summationType="PLAN", withPlan=True,
                masks=None):
    """CT + RTSTRUCT + RTPLAN + RTDOSE of one course in ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    ct = np.full(CT.shape, -1000, np.int16)
    ct[BODY] = 40
    ref = writeImageSeries(ct, CT, folder / "CT", study)
    masks = masks if masks is not None else {"GTV": GTV, "Rectum": RECTUM, "Body": BODY}
    rsUid = writeRtStruct(folder / "RS.dcm", masks, CT, study, ref, roiTypes={"GTV": "GTV", "Body": "EXTERNAL"})
    planUid = None
    if withPlan:
        planUid = writeRtPlan(folder / "RP.dcm", study, fractions, 2.0 * fractions, "TEST", study.studyDate,
                              referencedStructureSetUid=rsUid)
    dose = np.full(doseGeometry.shape, 2.0 * fractions) if doseGy is None else doseGy
    writeRtDose(folder / "RD.dcm", dose, doseGeometry, study, summationType=summationType,
                referencedPlanUid=planUid)
    return {"ct": folder / "CT", "rs": folder / "RS.dcm", "rp": folder / "RP.dcm" if withPlan else None,
            "rd": folder / "RD.dcm"}


def writeCase(folder, current, prior=None, **extra):
    """A case file (registration 'none') over course folders written by :func:`writeCourse`."""
    courses = []
    if prior is not None:
        courses.append({"name": "prior", "dose": str(prior["rd"]), "date": "2023-03-01",
                        **({"plan": str(prior["rp"])} if prior.get("rp") else {})})
    courses.append({"name": "current", "dose": str(current["rd"]), "date": "2026-10-01",
                    **({"plan": str(current["rp"])} if current.get("rp") else {})})
    data = {"referenceImage": str(current["ct"]), "structures": str(current["rs"]), "courses": courses,
            "targets": ["GTV"], **extra}
    path = folder / "case.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def study():
    return PatientStudy.new("Catalogue^Patient", "CAT-001", "20261001", "bad-input catalogue")


@pytest.fixture(scope="module")
def goodCourse(tmp_path_factory, study):
    return writeCourse(tmp_path_factory.mktemp("good"), study)


def refusal(call, *fragments):
    """Run ``call``; it must raise InputError whose message holds every fragment. Returns the message."""
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in {message!r}"
    return message


def cliRefusal(capsys, argv, *fragments):
    """The CLI exits 2 and prints the message (with every fragment) on stderr."""
    capsys.readouterr()
    assert cliMain(argv) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert str(fragment) in err, f"{fragment!r} not in {err!r}"
    return err


# ---- RTDOSE -------------------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_relative_dose_units_refused(tmp_path, goodCourse, capsys):
    relative = sharedDataPath("pydicom-rt", "rtdose.dcm")
    refusal(lambda: readRtDose(relative), relative, "RTDOSE units are RELATIVE; an absolute dose in Gy is required")
    # through the dose command: the case names the RELATIVE dose as the current course's dose
    case = writeCase(tmp_path, {**goodCourse, "rd": relative, "rp": None}, None)
    data = json.loads(case.read_text())
    data["courses"][0]["fractions"] = 5
    case.write_text(json.dumps(data))
    cliRefusal(capsys, ["dose", str(case), "--output", str(tmp_path / "out"), "--no-pictures"],
               "rtdose.dcm", "RELATIVE")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("summation", ["BEAM", "FRACTION_SESSION"])
def test_beam_or_session_dose_refused_where_a_plan_dose_is_expected(tmp_path, study, summation):
    course = writeCourse(tmp_path / "c", study, summationType=summation)
    dose = readRtDose(course["rd"])
    assert dose.summationType == summation  # readable for inspection...
    refusal(lambda: requirePlanDose(dose), course["rd"], f"{summation} dose", "not the dose of the whole plan")
    # ...but never accumulated: the pipeline refuses it while loading the case
    refusal(lambda: loadCaseInputs(parseCaseFile(writeCase(tmp_path, course))), course["rd"], f"{summation} dose")


def test_a_sum_of_plans_is_refused_as_a_course_dose(tmp_path, study, capsys):
    """A review on real data: two 14 Gy / 7 fx plans summed into one RTDOSE (MULTI_PLAN, naming both plans) were
    read with the first plan's 7 fractions (max EQD2 42.2 instead of 29.9 Gy) by `dose` and `eqd2`, without a word.
    A sum of plans has no single number of fractions: refused, as is a PLAN dose naming two RTPLANs."""
    course = writeCourse(tmp_path / "c", study, summationType="MULTI_PLAN")
    dose = readRtDose(course["rd"])
    refusal(lambda: requirePlanDose(dose), course["rd"], "the sum of several plans (DoseSummationType MULTI_PLAN)",
            "no single number of fractions", "give each plan's own RTDOSE as a course")
    refusal(lambda: loadCaseInputs(parseCaseFile(writeCase(tmp_path, course))), course["rd"], "sum of several plans")
    cliRefusal(capsys, ["eqd2", "--dose", str(course["rd"]), "--plan", str(course["rp"]), "--alpha-beta", "3", "-o",
                        str(tmp_path / "eqd2.nrrd")], "RD.dcm", "sum of several plans")
    assert not (tmp_path / "eqd2.nrrd").exists()
    ds = pydicom.dcmread(course["rd"])
    ds.DoseSummationType = "PLAN"
    second = pydicom.Dataset()
    second.ReferencedSOPClassUID = ds.ReferencedRTPlanSequence[0].ReferencedSOPClassUID
    second.ReferencedSOPInstanceUID = "1.2.3.4.5.6"
    ds.ReferencedRTPlanSequence.append(second)
    ds.save_as(course["rd"])
    refusal(lambda: requirePlanDose(readRtDose(course["rd"])), course["rd"],
            "(DoseSummationType PLAN and names 2 RTPLANs)")
    assert readRtDose(course["rd"]).referencedPlanCount == 2
    # plans given together, in the same sessions (two isocentres; a verification review: given as courses of their
    # own, their overlap reads too low): one course of the sessions the case states, without a plan, warned
    data = json.loads(writeCase(tmp_path, course).read_text())
    data["courses"][0].pop("plan")
    data["courses"][0]["fractions"] = 5
    case = tmp_path / "together.json"
    case.write_text(json.dumps(data))
    inputs = loadCaseInputs(parseCaseFile(case))
    assert inputs.courses[-1].numberOfFractions == 5
    assert any("its RTDOSE sums 2 plans (DoseSummationType PLAN); it is read as one course of the 5 fractions given, "
               "right only if every plan was delivered in each of those sessions" in w for w in inputs.warnings)
    assert cliMain(["eqd2", "--dose", str(course["rd"]), "--fractions", "5", "--alpha-beta", "3", "-o",
                    str(tmp_path / "together.nrrd")]) == 0
    # one plan named twice is one plan
    ds = pydicom.dcmread(course["rd"])
    ds.ReferencedRTPlanSequence[1].ReferencedSOPInstanceUID = ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID
    ds.save_as(course["rd"])
    assert requirePlanDose(readRtDose(course["rd"])).referencedPlanCount == 1


def test_a_fraction_groups_dose_is_a_course_with_that_groups_fractions(tmp_path, study):
    """DoseSummationType FRACTION ("dose calculated for a single Fraction Group within RT Plan", DICOM PS3.3
    C.8.8.3) is a whole phase's dose: it was refused as 'not the dose of the whole plan', so the phases of a
    sequential boost could not be given as courses of their own. The `eqd2` command takes it too."""
    course = writeCourse(tmp_path / "c", study, doseGy=np.full(CT.shape, 20.0), summationType="FRACTION", fractions=5)
    inputs = loadCaseInputs(parseCaseFile(writeCase(tmp_path, course)))
    current = inputs.courses[-1]
    assert (current.numberOfFractions, current.doseInfo["summationType"]) == (5, "FRACTION")
    assert cliMain(["eqd2", "--dose", str(course["rd"]), "--plan", str(course["rp"]), "--alpha-beta", "3", "-o",
                    str(tmp_path / "eqd2.nrrd")]) == 0
    # 20 Gy in the group's 5 fractions: EQD2 at α/β 3 = 20 (4 + 3) / (2 + 3) = 28 Gy
    assert float(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "eqd2.nrrd"))).max()) == pytest.approx(28.0)


# ---- fractions and α/β ----------------------------------------------------------------------------------------------

def test_fractions_missing_refused(tmp_path, study, capsys):
    course = writeCourse(tmp_path / "c", study, withPlan=False)
    case = writeCase(tmp_path, course)  # no RTPLAN and no "fractions"
    refusal(lambda: runDoseWorkflow(parseCaseFile(case)), course["rd"], "no number of fractions",
            "give an RTPLAN ('plan') or 'fractions'")
    cliRefusal(capsys, ["dose", str(case), "--output", str(tmp_path / "out"), "--no-pictures"], "RD.dcm",
               "no number of fractions")
    # an RTPLAN without NumberOfFractionsPlanned
    writeRtPlan(tmp_path / "rp.dcm", study, 5, 10.0, "P", "20261001")
    ds = pydicom.dcmread(tmp_path / "rp.dcm")
    del ds.FractionGroupSequence[0].NumberOfFractionsPlanned
    ds.save_as(tmp_path / "rp_nofx.dcm")
    plan = readRtPlan(tmp_path / "rp_nofx.dcm")
    refusal(lambda: plan.numberOfFractions, "rp_nofx.dcm", "states no number of planned fractions")


@pytest.mark.parametrize("fractions", [0, -5])
def test_fractions_not_positive_refused(tmp_path, study, goodCourse, fractions):
    # in the case file
    case = writeCase(tmp_path, goodCourse)
    data = json.loads(case.read_text())
    data["courses"][0]["fractions"] = fractions
    case.write_text(json.dumps(data))
    refusal(lambda: parseCaseFile(case), case, "fractions must be a positive whole number", repr(fractions))
    # in an RTPLAN (NumberOfFractionsPlanned 0 or negative)
    writeRtPlan(tmp_path / "rp.dcm", study, 5, 10.0, "P", "20261001")
    ds = pydicom.dcmread(tmp_path / "rp.dcm")
    ds.FractionGroupSequence[0].NumberOfFractionsPlanned = fractions
    ds.save_as(tmp_path / "rp_bad.dcm")
    plan = readRtPlan(tmp_path / "rp_bad.dcm")
    refusal(lambda: plan.numberOfFractions, "rp_bad.dcm", "fractions")
    # in memory (the Slicer module feeds computeDose directly)
    inputs = DoseInputs(CT.emptyImage(), {"GTV": GTV},
                        [CourseInput("current", np.ones(CT.shape, np.float32), CT, fractions, isCurrent=True,
                                     doseFile="/data/RD.dcm")])
    refusal(lambda: computeDose(inputs), "RD.dcm", "needs a positive number of fractions")


@pytest.mark.parametrize("alphaBeta", [0.0, -3.0, float("nan")])
def test_alpha_beta_not_positive_refused(tmp_path, goodCourse, alphaBeta):
    refusal(lambda: eqd2Gy(50.0, 25, alphaBeta), "α/β must be a positive number of Gy")
    refusal(lambda: eqd2Gy(np.full((2, 2, 2), 50.0), 25, np.full((2, 2, 2), alphaBeta)), "α/β map must be positive")
    case = writeCase(tmp_path, goodCourse, tissues={"Rectum": {"alphaBeta": alphaBeta}})
    refusal(lambda: parseCaseFile(case), case, "tissues['Rectum'] alphaBeta must be a positive number")
    case = writeCase(tmp_path, goodCourse, defaultAlphaBeta=alphaBeta)
    refusal(lambda: parseCaseFile(case), case, "defaultAlphaBeta must be a positive number")
    constraints = tmp_path / "constraints.json"
    constraints.write_text(json.dumps({"constraints": [
        {"structure": "Rectum", "metric": "Dmax", "limit": 60, "unit": "Gy", "alphaBetaGy": alphaBeta}]}))
    from ReirradiationDoseLib.core.constraints import loadConstraintSet
    refusal(lambda: loadConstraintSet(constraints), constraints, "α/β must be > 0 Gy")


@pytest.mark.parametrize("alphaBeta", [1e39, 1e-320, 0.05, 150.0])
def test_alpha_beta_beyond_any_tissue_refused_naming_the_case(tmp_path, goodCourse, alphaBeta):
    """An adversarial review: 1e39 (a float32 overflow) and 1e-320 passed the case check and failed later naming
    neither the case file nor the tissue, with a numpy warning."""
    case = writeCase(tmp_path, goodCourse, tissues={"Rectum": {"alphaBeta": alphaBeta}})
    refusal(lambda: parseCaseFile(case), case, "tissues['Rectum'] alphaBeta must lie between 0.1 and 100 Gy",
            repr(alphaBeta))
    case = writeCase(tmp_path, goodCourse, defaultAlphaBeta=alphaBeta)
    refusal(lambda: parseCaseFile(case), case, "defaultAlphaBeta must lie between 0.1 and 100 Gy")


# ---- dose values --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scaling", ["-0.001", "NaN"])
def test_negative_or_nan_rtdose_refused(tmp_path, study, scaling):
    course = writeCourse(tmp_path / "c", study)
    ds = pydicom.dcmread(course["rd"])
    ds.DoseGridScaling = scaling
    ds.save_as(tmp_path / "bad.dcm")
    refusal(lambda: readRtDose(tmp_path / "bad.dcm"), "bad.dcm", "DoseGridScaling")


def test_rtdose_without_dose_grid_scaling_refused(tmp_path, study):
    """An adversarial review: DoseGridScaling missing was read as 1, the stored integers as Gy (eqd2 wrote EQD2 of
    1.9e17 Gy, exit code 0; dose and dvh stopped with internal errors)."""
    course = writeCourse(tmp_path / "c", study)
    ds = pydicom.dcmread(course["rd"])
    del ds.DoseGridScaling
    ds.save_as(tmp_path / "noscaling.dcm")
    refusal(lambda: readRtDose(tmp_path / "noscaling.dcm"), "noscaling.dcm", "the RTDOSE has no DoseGridScaling "
            "(3004,000E): its stored values cannot be converted to Gy")


def test_a_course_with_no_dose_is_refused_and_an_implausible_rtdose_warned(tmp_path, study, goodCourse, capsys,
                                                                           caplog):
    """An adversarial review: a prior RTDOSE of 0 Gy everywhere (an empty export, a plan never computed) was summed
    as a course (the demo: composite 30.56 instead of 81.77 Gy, the new course offered ×2.286 instead of ×1.343),
    and an RTDOSE 100 times too high went through every command (composite 140 523 Gy, exit code 0). The dose
    command refuses the first naming the course and file; the second is warned (an RTDOSE states its units); eqd2
    warns of both and refuses an image beyond any course, as the dose command does."""
    empty = writeCourse(tmp_path / "empty", study, doseGy=np.zeros(CT.shape))
    refusal(lambda: loadCaseInputs(parseCaseFile(writeCase(tmp_path, goodCourse, empty))), empty["rd"],
            "course 'prior': the dose is 0 Gy at most, no dose at all: an empty export or a plan whose dose was never "
            "computed")
    high = writeCourse(tmp_path / "high", study, doseGy=np.full(CT.shape, 1000.0))
    warnings = loadCaseInputs(parseCaseFile(writeCase(tmp_path, goodCourse, high))).warnings
    assert "course 'prior': the dose reaches 1000.0 Gy, more than an external-beam course gives (200 Gy): check that " \
           "it is in Gy (RD.dcm: DoseUnits and DoseGridScaling)" in warnings
    for course, fragment in ((empty, "is 0 Gy at most, no dose at all"), (high, "reaches 1000.0 Gy")):
        caplog.clear()
        assert cliMain(["eqd2", "--dose", str(course["rd"]), "--fractions", "5", "--alpha-beta", "3", "-o",
                        str(tmp_path / f"eqd2_{course['rd'].parent.name}.nrrd")]) == 0
        assert any(fragment in r.getMessage() for r in caplog.records if r.levelname == "WARNING"), caplog.records
    cgy = tmp_path / "cgy.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 4, 4), 5000.0, np.float32)), str(cgy))
    cliRefusal(capsys, ["eqd2", "--dose", str(cgy), "--fractions", "5", "--alpha-beta", "3", "-o",
                        str(tmp_path / "e.nrrd")], "cgy.nrrd", "reaches 5000.0 Gy, not a plausible course",
               "is this one in cGy?")
    assert not (tmp_path / "e.nrrd").exists()


def test_negative_or_nan_dose_volume_refused(tmp_path):
    for name, value in (("nan.nrrd", np.nan), ("negative.nrrd", -1.0)):
        dose = np.full(CT.shape, 10.0, np.float32)
        dose[2, 3, 4] = value
        image = sitk.GetImageFromArray(dose)
        CT.applyTo(image)
        sitk.WriteImage(image, str(tmp_path / name))
        refusal(lambda name=name: readRtDose(tmp_path / name), name, "negative" if value < 0 else "NaN")
    # in memory: the pipeline refuses negative or non-finite doses, naming the course and its file
    for value in (-0.5, np.nan):
        dose = np.ones(CT.shape, np.float32)
        dose[1, 1, 1] = value
        inputs = DoseInputs(CT.emptyImage(), {"GTV": GTV},
                            [CourseInput("current", dose, CT, 5, isCurrent=True, doseFile="/data/RD.dcm")])
        refusal(lambda inputs=inputs: computeDose(inputs), "RD.dcm", "negative or non-finite")


def test_dose_grid_not_covering_target_or_constrained_organ_is_reported(tmp_path, study):
    # the dose grid covers slices 0..4 of the CT (z < 2 mm): the GTV (k 3..6) and rectum (k 2..7) stick out
    doseGeometry = ImageGeometry((16, 14, 5), CT.spacingMm, CT.originMm)
    course = writeCourse(tmp_path / "c", study, doseGeometry=doseGeometry)
    constraints = tmp_path / "constraints.json"
    constraints.write_text(json.dumps({"name": "test", "constraints": [
        {"structure": "Rectum", "metric": "Dmax", "limit": 200, "unit": "Gy", "alphaBetaGy": 3,
         "source": "test"}]}))
    case = writeCase(tmp_path, course, constraints=str(constraints))
    result = runDoseWorkflow(parseCaseFile(case))
    # how much is outside, per structure, naming the dose file: GTV k 3..6 -> 2 of 4 slices (50 %), rectum k 2..7
    # -> 3 of 6 slices (50 %) -- the dose grid's last slice centre is k=4, linear interpolation reaches k=4 only
    gtvOut = 100.0 * np.count_nonzero(GTV[5:]) / GTV.sum()
    rectumOut = 100.0 * np.count_nonzero(RECTUM[5:]) / RECTUM.sum()
    warnings = "\n".join(result.warnings)
    assert f"{gtvOut:.1f} % of 'GTV' lies outside the dose grid of course 'current' (RD.dcm)" in warnings
    assert f"{rectumOut:.1f} % of 'Rectum' lies outside the dose grid" in warnings
    # never counted as 0 Gy: unknown voxels are NaN and the constraint that would pass is "not evaluated"
    assert np.isnan(result.compositeEqd2Gy[GTV][-1])
    (rectum,) = [c for c in result.constraintResults if c.structureName == "Rectum"]
    assert rectum.status == "not evaluated" and "unknown dose" in rectum.reason


# ---- identity and frames of reference ---------------------------------------------------------------------------

def test_frame_of_reference_mismatch_refused(tmp_path, study, goodCourse):
    other = PatientStudy.new("Catalogue^Patient", "CAT-001", "20230301")  # same patient, another CT session
    prior = writeCourse(tmp_path / "prior", other)
    case = writeCase(tmp_path, goodCourse, prior)  # prior with registration 'none' on another frame of reference
    message = refusal(lambda: loadCaseInputs(parseCaseFile(case)), prior["rd"], "frame of reference",
                      other.frameOfReferenceUid, study.frameOfReferenceUid, "register it")
    assert str(goodCourse["ct"]) in message
    # within a course (an RTDOSE on another frame of reference than its CT)
    rd = readRtDose(prior["rd"])
    image = readImageSeries(goodCourse["ct"])[1]
    refusal(lambda: checkCourseConsistency(image=image, rtDose=rd), prior["rd"], "frame of reference")
    # the explicit override is accepted and recorded as a warning
    case = writeCase(tmp_path, goodCourse, prior, allowFrameOfReferenceMismatch=True)
    inputs = loadCaseInputs(parseCaseFile(case))
    assert any("allowFrameOfReferenceMismatch" in w for w in inputs.warnings)


def test_patient_mismatch_within_a_course_refused(tmp_path, study, goodCourse):
    intruder = PatientStudy(patientName="Other^Patient", patientId="OTHER-999", studyInstanceUid=study.studyInstanceUid,
                            studyDate=study.studyDate, frameOfReferenceUid=study.frameOfReferenceUid)
    writeRtDose(tmp_path / "rd_other.dcm", np.full(CT.shape, 10.0), CT, intruder)
    plan = readRtPlan(goodCourse["rp"])
    refusal(lambda: checkCourseConsistency(rtPlan=plan, rtDose=readRtDose(tmp_path / "rd_other.dcm")),
            "rd_other.dcm", goodCourse["rp"], "OTHER-999", "CAT-001")


def test_patient_mismatch_in_a_case_refused_by_the_pipeline(tmp_path, study, goodCourse):
    intruder = PatientStudy(patientName="Other^Patient", patientId="OTHER-999", studyInstanceUid=study.studyInstanceUid,
                            studyDate=study.studyDate, frameOfReferenceUid=study.frameOfReferenceUid)
    writeRtDose(tmp_path / "rd_other.dcm", np.full(CT.shape, 10.0), CT, intruder)
    # across courses: a 'prior' course of another patient (same frame of reference UID: a copied plan template)
    case = writeCase(tmp_path, goodCourse, {"rd": tmp_path / "rd_other.dcm", "rp": None})
    data = json.loads(case.read_text())
    data["courses"][0]["fractions"] = 5
    case.write_text(json.dumps(data))
    refusal(lambda: loadCaseInputs(parseCaseFile(case)), "rd_other.dcm", "OTHER-999")


def test_prior_course_dated_after_current_refused(tmp_path, goodCourse, capsys):
    case = writeCase(tmp_path, goodCourse, goodCourse)
    data = json.loads(case.read_text())
    data["courses"][0]["date"] = "2026-11-01"
    case.write_text(json.dumps(data))
    refusal(lambda: parseCaseFile(case), case, "prior course 'prior' is dated 2026-11-01", "after the current")
    cliRefusal(capsys, ["dose", str(case), "--output", str(tmp_path / "out")], "case.json", "2026-11-01")
    refusal(lambda: intervalDays(dt.date(2027, 1, 1), dt.date(2026, 10, 1)), "after the current course date")


def test_course_dated_in_the_future_refused(tmp_path, study, goodCourse):
    """2062 typed for 2026 was accepted and set the interval of every time-based recovery model."""
    case = writeCase(tmp_path, goodCourse, writeCourse(tmp_path / "prior", study))
    data = json.loads(case.read_text())
    ahead = dt.date.today() + dt.timedelta(days=400)
    data["courses"][1]["date"] = "2062-11-23"
    data["courses"][0]["date"] = "2031-01-01"
    case.write_text(json.dumps(data))
    refusal(lambda: parseCaseFile(case), case, "course 'prior' is dated 2031-01-01, in the future (today is")
    data["courses"][0]["date"] = "2023-03-01"
    data["courses"][1]["date"] = ahead.isoformat()
    case.write_text(json.dumps(data))
    refusal(lambda: parseCaseFile(case), f"course 'current' is dated {ahead}, more than a year ahead")
    data["courses"][1]["date"] = (dt.date.today() + dt.timedelta(days=30)).isoformat()  # planned: accepted
    case.write_text(json.dumps(data))
    assert parseCaseFile(case).courses[1].date > dt.date.today()


# ---- images -------------------------------------------------------------------------------------------------------

def test_blank_images_to_register_refused_naming_the_file(tmp_path, study, goodCourse, capsys):
    """A blank series (every voxel the same: a wrongly exported MRI, a scout) gives a flat metric, and demons would
    return no deformation without a word: refused before registering, naming the image, what it was to be
    registered onto, and why; no output folder is left behind."""
    blank = writeImageSeries(np.zeros(CT.shape, np.int16), CT, tmp_path / "MR_blank", study, modality="MR")
    assert blank
    case = writeCase(tmp_path, goodCourse, mri={"image": str(tmp_path / "MR_blank"), "registration": "rigid"})
    cliRefusal(capsys, ["dose", str(case), "--output", str(tmp_path / "out"), "--no-pictures"],
               tmp_path / "MR_blank", "MRI: rigid registration of this image (moving) onto the reference CT",
               goodCourse["ct"], "the moving image has the same value (0) in every voxel")
    assert not (tmp_path / "out").exists()
    # a prior course whose planning CT is blank, registered deformably
    prior = writeCourse(tmp_path / "prior", study)
    writeImageSeries(np.zeros(CT.shape, np.int16), CT, tmp_path / "prior" / "CT_blank", study)
    case = writeCase(tmp_path, goodCourse, prior)
    data = json.loads(case.read_text())
    data["courses"][0].update(image=str(tmp_path / "prior" / "CT_blank"), registration="deformable")
    case.write_text(json.dumps(data))
    refusal(lambda: loadCaseInputs(parseCaseFile(case)), tmp_path / "prior" / "CT_blank",
            "course 'prior': deformable registration of this image (moving)", "same value (0) in every voxel")


def test_gantry_tilted_ct_refused(tmp_path, study):
    ref = writeImageSeries(np.zeros(CT.shape, np.int16), CT, tmp_path / "tilt", study)
    # a 15 degree gantry tilt: the column direction leaves the axial plane, slice positions still step along z
    tilt = np.radians(15.0)
    for path in sorted((tmp_path / "tilt").iterdir()):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [1, 0, 0, 0, f"{np.cos(tilt):.6f}", f"{-np.sin(tilt):.6f}"]
        ds.save_as(path)
    refusal(lambda: readImageSeries(tmp_path / "tilt"), tmp_path / "tilt", "gantry tilt", "not supported")
    assert len(ref.sopInstanceUids) == CT.sizeXyz[2]


def test_non_uniform_ct_refused(tmp_path, study):
    writeImageSeries(np.zeros(CT.shape, np.int16), CT, tmp_path / "gap", study)
    (tmp_path / "gap" / "CT_0004.dcm").unlink()  # a missing slice
    refusal(lambda: readImageSeries(tmp_path / "gap"), tmp_path / "gap", "not equally spaced", "1 gap(s)",
            "a slice may be missing")
    writeImageSeries(np.zeros(CT.shape, np.int16), CT, tmp_path / "uneven", study)
    for n, path in enumerate(sorted((tmp_path / "uneven").iterdir())):  # 4 mm slices, then 5 mm from slice 6 on
        ds = pydicom.dcmread(path)
        ipp = [float(v) for v in ds.ImagePositionPatient]
        ipp[2] += max(0, n - 5) * 1.0
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.save_as(path)
    refusal(lambda: readImageSeries(tmp_path / "uneven"), tmp_path / "uneven", "not equally spaced")


def test_truncated_and_non_dicom_files_in_a_folder_are_skipped_and_named(tmp_path, study, caplog):
    folder = tmp_path / "ct"
    writeImageSeries(np.zeros(CT.shape, np.int16), CT, folder, study)
    (folder / "export.log").write_text("not DICOM")
    (folder / "junk.dcm").write_bytes(bytes(range(256)) * 3)
    last = folder / f"CT_{CT.sizeXyz[2] - 1:04d}.dcm"
    last.write_bytes(last.read_bytes()[:-500])  # truncated at the end of the stack
    with caplog.at_level(logging.WARNING):
        image, info = readImageSeries(folder)
    for name in ("export.log", "junk.dcm", last.name):
        assert name in caplog.text and any(name in s for s in info.skippedFiles), name
    assert image.GetSize()[2] == CT.sizeXyz[2] - 1
    # a truncated slice inside the stack leaves a gap: refused, naming the file
    middle = folder / "CT_0004.dcm"
    middle.write_bytes(middle.read_bytes()[:-500])
    refusal(lambda: readImageSeries(folder), folder, "CT_0004.dcm", "not equally spaced")


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_truncated_or_non_dicom_rt_files_refused(tmp_path, goodCourse):
    truncated = sharedDataPath("pydicom-rt", "rtplan_truncated.dcm")
    refusal(lambda: readRtPlan(truncated), truncated, "truncated")
    for name, reader, key in (("RD.dcm", readRtDose, "rd"), ("RS.dcm", readRtStruct, "rs"),
                              ("RP.dcm", readRtPlan, "rp")):
        data = goodCourse[key].read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) * 2 // 3])
        refusal(lambda reader=reader, name=name: reader(tmp_path / f"cut_{name}"), f"cut_{name}")
        (tmp_path / f"text_{name}").write_text("patient notes, not DICOM\n" * 20)
        refusal(lambda reader=reader, name=name: reader(tmp_path / f"text_{name}"), f"text_{name}")
    # a DICOM object of the wrong kind
    ct = sharedDataPath("pydicom-rt", "CT_small.dcm")
    refusal(lambda: readRtStruct(ct), ct, "modality is CT, not RTSTRUCT")
    refusal(lambda: readRtDose(ct), ct, "modality is CT, not RTDOSE")


def _edited(source, target, edit):
    ds = pydicom.dcmread(source)
    edit(ds)
    ds.save_as(target, enforce_file_format=False)
    return target


def _contourData(ds, value):
    ds.ROIContourSequence[0].ContourSequence[0].ContourData = value


@pytest.mark.parametrize("reader, key, edit, fragment", [
    # regressions found by Testing/benchmarks/fuzz_readers.py: each once escaped as TypeError/ValueError or passed
    (readRtDose, "rd", lambda ds: setattr(ds, "ImagePositionPatient", "-180"), "ImagePositionPatient must hold 3"),
    (readRtDose, "rd", lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1]),
     "ImageOrientationPatient must hold 6"),
    (readRtDose, "rd", lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]), "grid is invalid"),
    (readRtDose, "rd", lambda ds: setattr(ds, "PixelSpacing", [0, 3]), "PixelSpacing must be positive"),
    (readRtDose, "rd", lambda ds: setattr(ds, "Rows", 1), "do not match NumberOfFrames x Rows x Columns"),
    (readRtDose, "rd", lambda ds: setattr(ds, "DoseGridScaling", "1e308"), "not finite"),
    (readRtDose, "rd", lambda ds: setattr(ds, "GridFrameOffsetVector", "0"), "invalid attribute"),
    (readRtPlan, "rp", lambda ds: setattr(ds.DoseReferenceSequence[0], "TargetPrescriptionDose", "NaN"),
     "not a finite number"),
    (readRtPlan, "rp", lambda ds: setattr(ds.DoseReferenceSequence[0], "TargetPrescriptionDose", "-10"),
     "TargetPrescriptionDose is negative"),
    (readRtStruct, "rs", lambda ds: _contourData(ds, "12.5"), "not x,y,z triplets"),
    (readRtStruct, "rs", lambda ds: _contourData(ds, ["1", "2", "NaN"]), "not finite"),
], ids=["ipp-single", "iop-5", "iop-parallel", "spacing-0", "rows", "scaling-huge", "gfov-single",
        "rx-nan", "rx-negative", "contour-single", "contour-nan"])
def test_damaged_attributes_refused_naming_the_file(tmp_path, goodCourse, reader, key, edit, fragment):
    path = _edited(goodCourse[key], tmp_path / f"damaged_{key}.dcm", edit)
    refusal(lambda: reader(path), path, fragment)


# ---- structures -----------------------------------------------------------------------------------------------------

def test_rtstruct_contours_outside_the_image_are_reported(tmp_path, study, caplog):
    course = writeCourse(tmp_path / "c", study)
    rs = readRtStruct(course["rs"])
    # the same structures on a smaller image: 6 slices (k 0..5) and 10 columns of the 16
    small = ImageGeometry((10, 14, 6), CT.spacingMm, CT.originMm)
    with caplog.at_level(logging.WARNING):
        masks, report = rasterizeAllWithReport(rs, small)
    assert set(report.partlyOutside) == {"GTV", "Rectum", "Body"}
    assert report.reports["GTV"].planesOutside == 1  # GTV k 3..6: the plane k=6 is outside
    assert report.reports["Rectum"].planesOutside == 2  # k 6, 7
    assert "RS.dcm" in caplog.text and "GTV" in caplog.text and "outside the image" in caplog.text
    # a structure entirely outside the image grid is reported as such, naming the file
    far = ImageGeometry((16, 14, 10), CT.spacingMm, (500.0, 500.0, 500.0))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        masks, report = rasterizeAllWithReport(rs, far)
    assert set(report.emptyOnGrid) == {"GTV", "Rectum", "Body"}
    assert "ROI(s) outside the image grid" in caplog.text and "RS.dcm" in caplog.text


def test_empty_or_missing_structures_named_by_a_constraint_are_not_evaluated(tmp_path, study):
    course = writeCourse(tmp_path / "c", study, masks={"GTV": GTV, "Rectum": np.zeros(CT.shape, bool),
                                                       "Body": BODY})
    constraints = tmp_path / "constraints.json"
    constraints.write_text(json.dumps({"name": "test", "constraints": [
        {"structure": "Rectum", "metric": "D2cc", "limit": 75, "unit": "Gy", "alphaBetaGy": 3, "source": "test"},
        {"structure": "SpinalCord", "metric": "Dmax", "limit": 50, "unit": "Gy", "alphaBetaGy": 2,
         "source": "test"}]}))
    result = runDoseWorkflow(parseCaseFile(writeCase(tmp_path, course, constraints=str(constraints))))
    byName = {c.constraint.structure: c for c in result.constraintResults}
    assert byName["Rectum"].status == "not evaluated" and byName["Rectum"].passed is None
    assert byName["SpinalCord"].status == "not evaluated" and "'SpinalCord'" in byName["SpinalCord"].reason
    # an ROI without contours is kept as an empty mask: the constraint says the organ is empty, not missing,
    # and the warning names the RTSTRUCT
    assert not result.masks["Rectum"].any()
    assert "is empty" in byName["Rectum"].reason
    assert any("without contours: Rectum" in w for w in result.warnings)
    # said once (a review on real data: ten ROIs without contours were said again as "empty on the reference grid",
    # which reads as a geometry fault)
    assert not any("'Rectum'" in w and "empty on the reference grid" in w for w in result.warnings)


def test_a_structure_typed_as_a_target_but_read_as_an_organ_is_warned():
    """A review on real data: a tumour bed typed CTV in its RTSTRUCT, named neither GTV nor CTV, was read at α/β 3
    with the breast's recovery credited in its high-dose region, without a word. Warned (planning systems also type
    whole organs GTV, so it is not made a target); a target by name, an organ typed ORGAN and an empty ROI are not."""
    from ReirradiationDoseLib.core.casefile import TissueSpec
    from ReirradiationDoseLib.core.pipeline import DoseSettings, tissueTableFor, typedTargetWarnings

    table = tissueTableFor(DoseSettings(tissues={"Breast": TissueSpec(alphaBetaGy=3.0, recovery={
        "model": "constant", "fraction": 0.5})}, targets=("GTV", "CTV")))
    masks = {name: np.ones(3, bool) for name in ("Tumor Bed", "Breast", "GTV", "Heart")}
    masks["Empty"] = np.zeros(3, bool)
    types = {"Tumor Bed": "CTV", "Breast": "GTV", "GTV": "GTV", "Heart": "ORGAN", "Empty": "PTV"}
    warned = typedTargetWarnings(types, table, masks)
    assert warned == [
        "structure 'Tumor Bed' is typed CTV in its RTSTRUCT but is read as an organ here (α/β 3 Gy): if it is a "
        "target, name it in the case's 'targets' (targets take α/β 10 Gy, recover nothing and win overlaps)",
        "structure 'Breast' is typed GTV in its RTSTRUCT but is read as an organ here (α/β 3 Gy, with its recovery): "
        "if it is a target, name it in the case's 'targets' (targets take α/β 10 Gy, recover nothing and win "
        "overlaps)"]
    named = tissueTableFor(DoseSettings(targets=("GTV", "CTV", "Tumor Bed")))
    assert typedTargetWarnings({"Tumor Bed": "CTV"}, named, masks) == []


# ---- delineation review -----------------------------------------------------------------------------------------

def test_duplicate_observer_names_refused(capsys, tmp_path):
    grid = ImageGeometry((8, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    mask = box(grid, (2, 6), (2, 6), (2, 6))
    refusal(lambda: makeObserverSet([("reader 1", mask), ("reader 1", mask)], grid), "'reader 1'",
            "more than once")
    refusal(lambda: analyzeObservers([("r", mask), (" r ", mask)], grid), "'r'", "more than once")
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    grid.applyTo(image)
    sitk.WriteImage(image, str(tmp_path / "m.nrrd"))
    cliRefusal(capsys, ["iov", "--observer", f"a={tmp_path / 'm.nrrd'}", "--observer", f"a={tmp_path / 'm.nrrd'}"],
               "more than once")


def test_masks_on_incompatible_grids(tmp_path):
    grid = ImageGeometry((8, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    mask = box(grid, (2, 6), (2, 6), (2, 6))
    # a mask whose array does not fit its grid: refused
    refusal(lambda: makeObserverSet({"a": mask, "b": mask[:, :, :7]}, grid), "observer 'b'", "shape")
    # masks on different grids: resampled explicitly (nearest neighbour) and reported, never mixed silently
    coarse = ImageGeometry((4, 4, 4), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5))
    observers = makeObserverSet({"fine": (mask, grid), "coarse": (box(coarse, (1, 3), (1, 3), (1, 3)), coarse)})
    assert "nearest neighbour" in observers.gridReport["method"]
    assert observers.gridReport["resampled"][0]["observer"] == "coarse"
    # the dose pipeline refuses structures that are not on the reference grid
    inputs = DoseInputs(CT.emptyImage(), {"GTV": GTV[:, :, :8]},
                        [CourseInput("current", np.ones(CT.shape, np.float32), CT, 5, isCurrent=True)])
    refusal(lambda: computeDose(inputs), "structure 'GTV' is not on the reference grid")


# ---- case file ------------------------------------------------------------------------------------------------------

def test_case_file_unknown_keys_and_missing_paths_refused(tmp_path, goodCourse, capsys):
    case = writeCase(tmp_path, goodCourse, colour="red")
    refusal(lambda: parseCaseFile(case), case, "unknown key(s) in case file: colour")
    cliRefusal(capsys, ["dose", str(case), "--output", str(tmp_path / "out")], "case.json", "colour")
    case = writeCase(tmp_path, goodCourse)
    data = json.loads(case.read_text())
    data["courses"][0]["dose"] = "nowhere/RD.dcm"
    case.write_text(json.dumps(data))
    refusal(lambda: parseCaseFile(case), case, "course 'current' dose 'nowhere/RD.dcm' does not exist")
    cliRefusal(capsys, ["dose", str(case), "--output", str(tmp_path / "out")], "case.json", "nowhere/RD.dcm")
    refusal(lambda: parseCaseFile(tmp_path / "missing.json"), "missing.json", "case file not found")
    assert not (tmp_path / "out").exists()
    # /dev/null and a link that leads back to itself were "not found" (an adversarial review)
    refusal(lambda: parseCaseFile("/dev/null"), "/dev/null", "not a regular file: give the case file (JSON)")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    refusal(lambda: parseCaseFile(tmp_path / "loop1"), "loop1", "a symbolic link to nothing that exists")


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d.update(structures="rs\x00.dcm"), "holds a NUL character"),
    (lambda d: d["courses"][0].update(fractions=float("nan")), "fractions must be a positive whole number"),
    (lambda d: d.update(conservativeRadiusMm=float("nan")), "'conservativeRadiusMm' must be a number of mm"),
], ids=["nul-in-path", "nan-fractions", "nan-radius"])
def test_case_file_non_finite_numbers_and_nul_in_paths_refused(tmp_path, goodCourse, edit, fragment):
    case = writeCase(tmp_path, goodCourse)
    data = json.loads(case.read_text())
    edit(data)
    case.write_text(json.dumps(data))  # json writes NaN as the (accepted) NaN literal
    refusal(lambda: parseCaseFile(case), case, fragment)


# ---- found by a bad-input review (session 23): refused or warned at once, naming the file ----------------------

def test_case_file_key_given_twice_refused_a_byte_order_mark_accepted_a_folder_named(tmp_path, goodCourse):
    """``"fractions": 25, ..., "fractions": 5`` took the last silently; a case saved by Notepad (UTF-8 with a BOM)
    was refused with a decoder message; a folder given as the case said "not found"."""
    case = writeCase(tmp_path, goodCourse)
    text = case.read_text()
    case.write_text(text.replace('"targets"', '"defaultAlphaBeta": 3, "defaultAlphaBeta": 2, "targets"'))
    refusal(lambda: parseCaseFile(case), case, "the key 'defaultAlphaBeta' is given twice")
    case.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert parseCaseFile(case).courses[0].name == "current"
    refusal(lambda: parseCaseFile(tmp_path), tmp_path, "this is a folder: give the case file (JSON) itself")


@pytest.mark.parametrize("entry, fragment", [
    ({"alphaBeta": 3}, "unknown key(s) 'alphaBeta'"),
    ({"limit": "abc"}, "'limit' must be a number, got 'abc'"),
    ({"limit": None}, "'limit' must be a number, got None"),
    ({"alphaBetaGy": "three"}, "'alphaBetaGy' must be a number or null, got 'three'"),
    ({"aliases": "Rectal wall"}, "'aliases' must be a list of structure names"),
    ({"metric": "D105%", "unit": "Gy"}, "the volume percentage must lie between 0 and 100"),
    ({"metric": "V40Gy[%]", "unit": "%", "limit": 200}, "the limit 200 % is impossible"),
    ({"limit": -90}, "the limit -90 Gy is impossible"),
], ids=["misspelt-key", "limit-text", "limit-null", "alpha-beta-text", "aliases-text", "D105%", "V-200%",
        "negative-limit"])
def test_constraint_file_mistakes_refused_when_the_case_is_read(tmp_path, goodCourse, entry, fragment):
    """A misspelt ``alphaBeta`` was ignored (the constraint read in physical dose, and passed); a limit that is not
    a number, a constraint that is not an object, a list that is an object crashed with a traceback after the
    registrations. Now the case file refuses them at once, naming itself and the constraint file."""
    constraint = {"structure": "Rectum", "metric": "D2cc", "limit": 75, "unit": "Gy", "alphaBetaGy": 3, **entry}
    constraints = tmp_path / "constraints.json"
    constraints.write_text(json.dumps({"name": "mine", "constraints": [constraint]}))
    case = writeCase(tmp_path, goodCourse, constraints=str(constraints))
    refusal(lambda: parseCaseFile(case), "case.json", "constraints.json", "constraint Rectum", fragment)


def test_constraint_file_of_the_wrong_shape_refused(tmp_path, goodCourse):
    constraints = tmp_path / "constraints.json"
    for data, fragment in (({"constraints": ["Rectum D2cc < 75 Gy"]}, "each constraint must be an object"),
                           ({"constraints": {"Rectum": {"metric": "D2cc"}}}, "'constraints' must be a list")):
        constraints.write_text(json.dumps(data))
        case = writeCase(tmp_path, goodCourse, constraints=str(constraints))
        refusal(lambda: parseCaseFile(case), "case.json", "constraints.json", fragment)  # noqa: B023


@pytest.mark.parametrize("recovery, fragment", [
    ({"model": "constant", "fraction": "25%"}, "could not convert string to float: '25%'"),
    ({"model": "nieder2"}, "unknown recovery model 'nieder2'"),
], ids=["fraction-text", "unknown-model"])
def test_recovery_mistakes_refused_naming_the_case(tmp_path, goodCourse, recovery, fragment):
    case = writeCase(tmp_path, goodCourse, tissues={"Rectum": {"alphaBeta": 3, "recovery": recovery}})
    refusal(lambda: parseCaseFile(case), "case.json", "tissues['Rectum'].recovery", fragment)


def test_courses_writing_the_same_files_or_sharing_one_dose_refused(tmp_path, study, goodCourse):
    prior = writeCourse(tmp_path / "prior", study)
    case = writeCase(tmp_path, goodCourse, prior)
    data = json.loads(case.read_text())
    data["courses"][0]["name"], data["courses"][1]["name"] = "course 1", "course_1"
    case.write_text(json.dumps(data))
    refusal(lambda: parseCaseFile(case), "case.json", "'course 1' and 'course_1' would write the same output files")
    data["courses"][0]["name"], data["courses"][0]["dose"] = "prior", data["courses"][1]["dose"]
    case.write_text(json.dumps(data))
    refusal(lambda: parseCaseFile(case), "case.json", "'prior' and 'course_1' give the same dose file (RD.dcm)")


def test_an_rtplan_the_dose_does_not_belong_to_refused_case_fractions_over_the_plan_warned(tmp_path, study,
                                                                                            goodCourse):
    """Each course given the other's RTPLAN: the prior was converted with the current plan's fractions (composite
    max 81.8 -> 87.9 Gy on the demo, exit 0). The RTDOSE names its plan: another plan is refused. Fractions in the
    case file that differ from the plan's were only logged; now they are in the run's warnings (report, summary)."""
    prior = writeCourse(tmp_path / "prior", study, fractions=25)
    case = writeCase(tmp_path, goodCourse, prior)
    data = json.loads(case.read_text())
    data["courses"][0]["plan"], data["courses"][1]["plan"] = data["courses"][1]["plan"], data["courses"][0]["plan"]
    case.write_text(json.dumps(data))
    refusal(lambda: loadCaseInputs(parseCaseFile(case)), "course 'prior': the RTDOSE", str(prior["rd"]),
            "belongs to another RTPLAN than the one given", str(goodCourse["rp"]))
    data["courses"][0]["plan"], data["courses"][1]["plan"] = data["courses"][1]["plan"], data["courses"][0]["plan"]
    data["courses"][0]["fractions"] = 5
    case.write_text(json.dumps(data))
    inputs = loadCaseInputs(parseCaseFile(case))
    assert inputs.courses[0].numberOfFractions == 5
    assert "course 'prior': 5 fractions from the case file replace the 25 of its RTPLAN (RP.dcm)" in inputs.warnings


def test_a_dose_image_in_cgy_or_an_eqd2_given_as_a_course_refused(tmp_path, study, goodCourse):
    """A dose NRRD in cGy (no units in the file) gave a composite of 140 000 Gy with exit 0; the tool's own EQD2
    composite given as a course would be converted a second time."""
    from ReirradiationDoseLib.core.dicomwrite import eqd2SeriesDescription
    from ReirradiationDoseLib.core.geometry import imageFromArray

    rd = readRtDose(goodCourse["rd"])
    cgy = tmp_path / "dose_cgy.nrrd"
    sitk.WriteImage(imageFromArray((rd.doseGy * 100).astype(np.float32), rd.geometry), str(cgy))
    case = writeCase(tmp_path, goodCourse)
    data = json.loads(case.read_text())
    data["courses"][0].update(dose=str(cgy), fractions=5)
    data["courses"][0].pop("plan")
    case.write_text(json.dumps(data))
    refusal(lambda: loadCaseInputs(parseCaseFile(case)), "dose_cgy.nrrd", "the dose reaches 1000.0 Gy",
            "is this one in cGy?")
    eqd2 = tmp_path / "eqd2.dcm"
    writeRtDose(eqd2, rd.doseGy, rd.geometry, study, doseType="EFFECTIVE", summationType="MULTI_PLAN",
                seriesDescription=eqd2SeriesDescription(3.0))
    data["courses"][0]["dose"] = str(eqd2)
    case.write_text(json.dumps(data))
    refusal(lambda: loadCaseInputs(parseCaseFile(case)), "eqd2.dcm", "already an EQD2 or BED")



def test_the_tools_own_maps_given_as_a_course_dose_are_refused(tmp_path, goodCourse, capsys):
    """A physicist's review: the eqd2 command's output and a dose run's course EQD2 map (NRRD, no NaN when the dose
    grid covers the CT) were taken as a course's physical dose and converted again (composite max 250.9 instead of
    176.0 Gy; a hyperfractionated course's prior dose understated by 20 %). Every map the tool writes now says what
    it holds (ReirradiationDose.Quantity) and only a physical dose is taken; a plain NRRD (no such header) still is."""
    from ReirradiationDoseLib.cli import main
    from ReirradiationDoseLib.core.doseoutputs import writeNrrd
    from ReirradiationDoseLib.core.rtdose import PHYSICAL_QUANTITY, refuseEqd2Dose

    rd = readRtDose(goodCourse["rd"])
    eqd2 = tmp_path / "prior_eqd2.nrrd"
    assert main(["eqd2", "--dose", str(goodCourse["rd"]), "--fractions", "5", "--alpha-beta", "3",
                 "-o", str(eqd2)]) == 0
    case = writeCase(tmp_path, goodCourse)
    data = json.loads(case.read_text())
    data["courses"][0].update(dose=str(eqd2), fractions=5)
    data["courses"][0].pop("plan")
    case.write_text(json.dumps(data))
    refusal(lambda: loadCaseInputs(parseCaseFile(case)), "prior_eqd2.nrrd", "holds 'EQD2'", "not a physical dose")
    # the eqd2 command refuses its own output as its input too
    cliRefusal(capsys, ["eqd2", "--dose", str(eqd2), "--fractions", "5", "--alpha-beta", "3",
                        "-o", str(tmp_path / "twice.nrrd")], "prior_eqd2.nrrd", "not a physical dose")
    assert not (tmp_path / "twice.nrrd").exists()
    # a dose run's maps: only its physical course maps are doses
    for kind, accepted in (("EQD2", False), ("EQD2 (composite)", False), ("alpha/beta", False),
                           ("remaining budget of a planned course", False), (PHYSICAL_QUANTITY, True)):
        path = writeNrrd(tmp_path / "map.nrrd", rd.doseGy, rd.geometry, "what it holds", kind=kind)
        if accepted:
            assert refuseEqd2Dose(readRtDose(path)).quantity == PHYSICAL_QUANTITY
        else:
            refusal(lambda path=path: refuseEqd2Dose(readRtDose(path)), "map.nrrd", repr(kind))
    # a map written before the tag, with the descriptive header only, and a plain NRRD
    older = writeNrrd(tmp_path / "older.nrrd", rd.doseGy, rd.geometry, "EQD2 of course prior alone (5 fractions)")
    refusal(lambda: refuseEqd2Dose(readRtDose(older)), "older.nrrd", "EQD2 of course prior alone")
    plain = tmp_path / "plain.nrrd"
    image = sitk.GetImageFromArray(rd.doseGy)
    image.SetSpacing(rd.geometry.spacingMm)
    sitk.WriteImage(image, str(plain))
    assert refuseEqd2Dose(readRtDose(plain)).quantity == ""

def test_tissue_or_target_names_matching_no_structure_warned(tmp_path, goodCourse):
    """A misspelt "Rectumm" left the rectum without the case's recovery, silently."""
    case = writeCase(tmp_path, goodCourse, tissues={"Rectumm": {"alphaBeta": 3}}, targets=["GTV", "GTV_boost"])
    result = runDoseWorkflow(parseCaseFile(case))
    assert any(w.startswith("tissues['Rectumm'] in the case matches no structure (structures: Body, GTV, Rectum)")
               for w in result.warnings), result.warnings
    assert "target 'GTV_boost' in the case matches no structure: check the name" in result.warnings
    case = writeCase(tmp_path, goodCourse, tissues={"Rectum": {"alphaBeta": 3}})
    assert not any("matches no structure" in w for w in runDoseWorkflow(parseCaseFile(case)).warnings)
    # a recovery given to a target was dropped without a word (a physicist's review; the module refuses it)
    case = writeCase(tmp_path, goodCourse, tissues={"GTV": {"alphaBeta": 10,
                                                            "recovery": {"model": "constant", "fraction": 0.5}}})
    warnings = runDoseWorkflow(parseCaseFile(case)).warnings
    assert ("tissues['GTV'] in the case gives a recovery (constant), but 'GTV' is a target: targets recover "
            "nothing, the recovery is not applied") in warnings


def test_structures_of_another_scan_refused_unless_allowed(tmp_path, goodCourse, capsys):
    """The prior CT's RTSTRUCT given as today's structures was rasterised on today's CT with only "contours partly
    outside" said: it is drawn in another frame of reference, and refused naming both frames."""
    other = PatientStudy.new("Catalogue^Patient", "CAT-001", "20230301", "another scan")
    prior = writeCourse(tmp_path / "prior", other)
    case = writeCase(tmp_path, goodCourse, structures=str(prior["rs"]))
    today = readImageSeries(goodCourse["ct"])[1].frameOfReferenceUid
    refusal(lambda: loadCaseInputs(parseCaseFile(case)), prior["rs"], "the structures were drawn in frame of "
            f"reference {other.frameOfReferenceUid}", f"the reference image is in {today}")
    case = writeCase(tmp_path, goodCourse, structures=str(prior["rs"]), allowFrameOfReferenceMismatch=True)
    inputs = loadCaseInputs(parseCaseFile(case))
    assert any("(accepted: allowFrameOfReferenceMismatch)" in w for w in inputs.warnings)
    # iov with observers' RTSTRUCTs and the --image they go on: the same refusal (an adversarial review: rasterised
    # on today's CT without a word)
    cliRefusal(capsys, ["iov", "--observer", f"a={prior['rs']}#GTV", "--observer", f"b={prior['rs']}#Rectum",
                        "--image", str(goodCourse["ct"])], "RS.dcm", f"frame of reference {other.frameOfReferenceUid}")
    assert cliMain(["iov", "--observer", f"a={goodCourse['rs']}#GTV", "--observer", f"b={goodCourse['rs']}#Rectum",
                    "--image", str(goodCourse["ct"])]) == 0


def test_an_rtstruct_without_the_dcm_suffix_is_checked_as_one(tmp_path, goodCourse):
    """A review: an RTSTRUCT named as PACS exports name them ("RS.1.2.840...", no ``.dcm``) went to the other formats'
    reader: drawn on another scan, it was accepted without a word, and its ROI without contours vanished."""
    other = PatientStudy.new("Catalogue^Patient", "CAT-001", "20230301", "another scan")
    prior = writeCourse(tmp_path / "prior", other)
    exported = tmp_path / "RS.1.2.840.113619"
    exported.write_bytes(prior["rs"].read_bytes())
    refusal(lambda: loadCaseInputs(parseCaseFile(writeCase(tmp_path, goodCourse, structures=str(exported)))),
            exported, f"the structures were drawn in frame of reference {other.frameOfReferenceUid}")
    empty = writeCourse(tmp_path / "today", PatientStudy.new("Catalogue^Patient", "CAT-001", "20261001", "today"),
                        masks={"GTV": GTV, "Rectum": RECTUM, "Body": BODY, "Bladder": np.zeros(CT.shape, bool)})
    (tmp_path / "RS_today").write_bytes(empty["rs"].read_bytes())
    inputs = loadCaseInputs(parseCaseFile(writeCase(tmp_path, empty, structures=str(tmp_path / "RS_today"))))
    assert "Bladder" in inputs.masks and not inputs.masks["Bladder"].any()
    assert "RS_today: ROI(s) without contours: Bladder" in inputs.warnings


def test_an_rtstruct_listing_another_frame_first_is_read_by_its_rois_frames(tmp_path, goodCourse):
    """A second verification review: a structure set listing an MR's frame of reference before the CT's (as sets
    registered with an MR do) was refused although every ROI lies in the CT's frame (each ROI's
    ReferencedFrameOfReferenceUID is the one that counts, DICOM PS3.3 C.8.8.5)."""
    import pydicom

    ds = pydicom.dcmread(goodCourse["rs"])
    mr = pydicom.Dataset()
    mr.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.ReferencedFrameOfReferenceSequence.insert(0, mr)
    listed = tmp_path / "RS_with_mr.dcm"
    ds.save_as(listed)
    inputs = loadCaseInputs(parseCaseFile(writeCase(tmp_path, goodCourse, structures=str(listed))))
    assert inputs.masks["GTV"].any() and not any("frame of reference" in w for w in inputs.warnings)


def test_dvh_reads_an_rtstruct_without_the_dcm_suffix_as_one(tmp_path, goodCourse):
    """A verification review: `dvh` of an RTSTRUCT named "RS.1.2.840..." rasterised it on the plain dose grid, without
    the sub-voxel sampling it reported (--supersample 3) and without the edge notes: volumes and Dmin differed."""
    exported = tmp_path / "RS.1.2.840.99"
    exported.write_bytes(goodCourse["rs"].read_bytes())
    tables = []
    for structures in (goodCourse["rs"], exported):
        out = tmp_path / f"{structures.name}.json"
        assert cliMain(["dvh", "--dose", str(goodCourse["rd"]), "--segmentation", str(structures), "--supersample",
                        "3", "--json", str(out)]) == 0
        tables.append(json.loads(out.read_text(encoding="utf-8"))["structures"])
    assert tables[0] == tables[1] and len(tables[0]) == 3


def test_a_prior_courses_structures_of_another_scan_are_refused_unless_allowed(tmp_path, goodCourse):
    """Today's RTSTRUCT given as the prior course's structures was rasterised on the prior CT and guided and
    checked its registration without a word; now refused naming the course and both frames."""
    other = PatientStudy.new("Catalogue^Patient", "CAT-001", "20230301", "another scan")
    prior = writeCourse(tmp_path / "prior", other)
    course = {"name": "prior", "dose": str(prior["rd"]), "plan": str(prior["rp"]), "date": "2023-03-01",
              "image": str(prior["ct"]), "structures": str(goodCourse["rs"]), "registration": "rigid"}
    current = {"name": "current", "dose": str(goodCourse["rd"]), "plan": str(goodCourse["rp"]), "date": "2026-10-01"}
    data = {"referenceImage": str(goodCourse["ct"]), "structures": str(goodCourse["rs"]),
            "courses": [course, current], "targets": ["GTV"]}
    path = tmp_path / "case.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    today = readImageSeries(goodCourse["ct"])[1].frameOfReferenceUid
    refusal(lambda: loadCaseInputs(parseCaseFile(path)), goodCourse["rs"],
            "course 'prior': its structures", f"were drawn in frame of reference {today}",
            f"is in {other.frameOfReferenceUid}", "allowFrameOfReferenceMismatch")
    path.write_text(json.dumps({**data, "allowFrameOfReferenceMismatch": True}), encoding="utf-8")
    inputs = loadCaseInputs(parseCaseFile(path))
    assert any(w.startswith("course 'prior': its structures") and "(accepted: allowFrameOfReferenceMismatch)" in w
               for w in inputs.warnings)


def test_iov_needs_two_observers(demoCase, capsys):
    rounds = demoCase.outputDir / "observers" / "round1"
    cliRefusal(capsys, ["iov", "--observer", f"a={rounds / 'obs1.dcm'}", "--image",
                        str(demoCase.outputDir / "current" / "CT")], "needs at least two observers", "got 1")


def test_the_same_rtdose_in_two_courses_is_refused(tmp_path, goodCourse):
    """A physicist's review: a course's folder copied for a second course (same RTDOSE SOP Instance UID, another
    path) was summed twice without a word (the demo's rectum D2cc 78.46 → 128.27 Gy); only the same path was
    refused."""
    import shutil
    from pathlib import Path

    copy = tmp_path / "copy"
    shutil.copytree(Path(goodCourse["rd"]).parent, copy)
    prior = {"rd": copy / Path(goodCourse["rd"]).name, "rp": copy / Path(goodCourse["rp"]).name}
    case = writeCase(tmp_path, goodCourse, prior)
    uid = pydicom.dcmread(goodCourse["rd"], stop_before_pixels=True).SOPInstanceUID
    refusal(lambda: loadCaseInputs(parseCaseFile(case)), "course 'current' and course 'prior' give the same RTDOSE",
            f"SOP Instance UID {uid}", "it would be counted twice")
    # a copy without the 128-byte preamble (a verification review: the check read no UID from it and passed)
    ds = pydicom.dcmread(prior["rd"])
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(prior["rd"], ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert not pydicom.misc.is_dicom(prior["rd"])
    refusal(lambda: loadCaseInputs(parseCaseFile(case)), "give the same RTDOSE", f"SOP Instance UID {uid}")


def test_extreme_and_misplaced_inputs_refused_not_crashed(tmp_path, study, goodCourse, capsys):
    """An adversarial review found internal errors or silent nonsense where a refusal belongs: 10 million fractions
    (a date overflow), a case file nested thousands of levels deep (RecursionError), a DVH bin of 1e-9 Gy (231 GiB),
    a 2-component image as a course dose (refused as "cGy?"), a dose given as a labelmap (32 structures), a negative
    marks tolerance in a study (every case's marks skipped, exit code 0)."""
    case = writeCase(tmp_path, goodCourse)
    data = json.loads(case.read_text())
    data["courses"][0]["fractions"] = 10_000_000
    case.write_text(json.dumps(data))
    refusal(lambda: parseCaseFile(case), "case.json", "must be at most 1000", "10000000")
    case.write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    refusal(lambda: parseCaseFile(case), "case.json", "nested thousands of levels deep")
    many = writeCourse(tmp_path / "many", study, fractions=5000, doseGy=np.full(CT.shape, 20.0))
    refusal(lambda: loadCaseInputs(parseCaseFile(writeCase(tmp_path, goodCourse, many))), many["rp"],
            "the number of fractions of course 'prior' (its RTPLAN) must be at most 1000")
    cliRefusal(capsys, ["eqd2", "--dose", str(goodCourse["rd"]), "--fractions", "1e30", "--alpha-beta", "3", "-o",
                        str(tmp_path / "e.nrrd")], "at most 1000")
    cliRefusal(capsys, ["dvh", "--dose", str(goodCourse["rd"]), "--segmentation", str(goodCourse["rs"]),
                        "--bin-width", "1e-9"], "bins of 1e-09 Gy", "give a wider bin")
    twoComponents = tmp_path / "vector.nrrd"
    sitk.WriteImage(sitk.Compose([sitk.Image(4, 4, 4, sitk.sitkFloat32)] * 2), str(twoComponents))
    refusal(lambda: readRtDose(twoComponents), "vector.nrrd", "3 dimensions and 2 components per voxel")
    doseImage = tmp_path / "dose.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.linspace(0, 50, 64, dtype=np.float32).reshape(4, 4, 4)), str(doseImage))
    cliRefusal(capsys, ["dvh", "--dose", str(doseImage), "--segmentation", str(doseImage)], "dose.nrrd",
               "holds non-integer values (e.g. 0.7937): a dose or an image, not a labelmap or mask")
    cliRefusal(capsys, ["study", str(tmp_path), "-o", str(tmp_path / "s"), "--marks-tolerance-mm", "-3"],
               "the marks tolerance must be a non-negative number of mm, got -3")
    # an α/β outside 0.1-100 Gy, as the case file refuses it: on the command line (1e6 gave the physical dose, 0.001
    # weighed the quadratic term 1000-fold, both silently), as a default and in a tissue table
    for value in ("1e6", "0.001", "nan"):
        cliRefusal(capsys, ["eqd2", "--dose", str(goodCourse["rd"]), "--fractions", "25", "--alpha-beta", value,
                            "-o", str(tmp_path / "e.nrrd")], "--alpha-beta must lie between 0.1 and 100 Gy")
    cliRefusal(capsys, ["eqd2", "--dose", str(goodCourse["rd"]), "--fractions", "25", "--segmentation",
                        str(goodCourse["rs"]), "--default-alpha-beta", "500", "-o", str(tmp_path / "e.nrrd")],
               "--default-alpha-beta must lie between 0.1 and 100 Gy", "500")
    table = tmp_path / "tissues.json"
    table.write_text(json.dumps({"tissues": [{"name": "Rectum", "alphaBetaGy": 0.01}]}))
    cliRefusal(capsys, ["eqd2", "--dose", str(goodCourse["rd"]), "--fractions", "25", "--segmentation",
                        str(goodCourse["rs"]), "--tissues", str(table), "-o", str(tmp_path / "e.nrrd")],
               "tissues.json", "tissue 'Rectum': α/β must lie between 0.1 and 100 Gy")
    # a number written as text was read before the range check and still is; text that is no number is named
    table.write_text(json.dumps({"tissues": [{"name": "Rectum", "alphaBetaGy": "3"}], "defaultAlphaBetaGy": "abc"}))
    cliRefusal(capsys, ["eqd2", "--dose", str(goodCourse["rd"]), "--fractions", "25", "--segmentation",
                        str(goodCourse["rs"]), "--tissues", str(table), "-o", str(tmp_path / "e.nrrd")],
               "tissues.json", "the default α/β must be a number of Gy, got 'abc'")
    # --default-alpha-beta names the option, and is refused where it would be ignored
    cliRefusal(capsys, ["eqd2", "--dose", str(goodCourse["rd"]), "--fractions", "25", "--alpha-beta", "3",
                        "--default-alpha-beta", "1e6", "-o", str(tmp_path / "e.nrrd")],
               "--default-alpha-beta is the α/β outside every structure of --segmentation")
    assert not (tmp_path / "e.nrrd").exists()
    table.write_text(json.dumps({"tissues": [{"name": "Rectum", "alphaBetaGy": "3"}]}))
    assert cliMain(["eqd2", "--dose", str(goodCourse["rd"]), "--fractions", "25", "--segmentation",
                    str(goodCourse["rs"]), "--tissues", str(table), "-o", str(tmp_path / "e.nrrd")]) == 0


def test_two_rois_of_one_name_in_a_courses_structures_reach_the_warnings(tmp_path, study, goodCourse):
    """A verification: the warning reached summary.json for the case's own RTSTRUCT only; a prior course's structures
    guide and check its registration by name."""
    prior = writeCourse(tmp_path / "prior", study)
    ds = pydicom.dcmread(prior["rs"])
    ds.StructureSetROISequence[2].ROIName = "Rectum"  # GTV, Rectum, Body -> GTV, Rectum, Rectum
    ds.save_as(prior["rs"])
    case = writeCase(tmp_path, goodCourse, prior)
    data = json.loads(case.read_text())
    data["courses"][0]["structures"] = str(prior["rs"])
    case.write_text(json.dumps(data))
    inputs = loadCaseInputs(parseCaseFile(case))
    expected = "course 'prior' structures RS.dcm: two ROIs are named 'Rectum'; ROI number 3 is read as 'Rectum (3)'"
    assert [w for w in inputs.warnings if "two ROIs" in w] == [
        expected + " (a constraint, a tissue or a registration guide naming 'Rectum' uses the first only)"]


def test_a_dose_image_with_nan_or_infinite_voxels_is_named_with_the_first_voxel(tmp_path, capsys):
    """The last session's left item: eqd2 said "reaches inf Gy ... in cGy?" of an infinite voxel and "the physical
    dose contains 1 voxels that are not finite" without the file; dvh refused an infinite one as a DVH error."""
    array = np.full((4, 5, 6), 20.0, np.float32)
    mask = np.zeros(array.shape, np.uint8)
    mask[1:3, 1:4, 1:5] = 1
    sitk.WriteImage(sitk.GetImageFromArray(mask), str(tmp_path / "mask.nrrd"))
    for name, value in (("nan.nrrd", np.nan), ("inf.nrrd", np.inf)):
        bad = array.copy()
        bad[1, 2, 3] = value
        bad[2, 2, 3] = value
        sitk.WriteImage(sitk.GetImageFromArray(bad), str(tmp_path / name))
    what = {"nan.nrrd": "NaN (not a number)", "inf.nrrd": "infinite"}
    for name in ("nan.nrrd", "inf.nrrd"):
        cliRefusal(capsys, ["eqd2", "--dose", str(tmp_path / name), "--fractions", "25", "--alpha-beta", "3", "-o",
                            str(tmp_path / "e.nrrd")],
                   f"{name}: 2 voxels of the dose are {what[name]}, the first at voxel (i, j, k) = (3, 2, 1)")
    cliRefusal(capsys, ["dvh", "--dose", str(tmp_path / "inf.nrrd"), "--segmentation", str(tmp_path / "mask.nrrd")],
               "inf.nrrd: 2 voxels of the dose are infinite")
    # negative values: refused by eqd2 naming the file (before: without it), accepted by dvh (a difference map)
    negative = array.copy()
    negative[1, 2, 3] = -1.0
    sitk.WriteImage(sitk.GetImageFromArray(negative), str(tmp_path / "negative.nrrd"))
    cliRefusal(capsys, ["eqd2", "--dose", str(tmp_path / "negative.nrrd"), "--fractions", "25", "--alpha-beta", "3",
                        "-o", str(tmp_path / "e.nrrd")],
               "negative.nrrd: the dose contains negative values (minimum -1 Gy, 1 voxel, the first at voxel (i, j, k) "
               "= (3, 2, 1))")
    assert cliMain(["dvh", "--dose", str(tmp_path / "negative.nrrd"), "--segmentation",
                    str(tmp_path / "mask.nrrd")]) == 0
    # a float64 value beyond float32's range is not called infinite
    huge = array.astype(np.float64)
    huge[0, 0, 0] = 1e39
    sitk.WriteImage(sitk.GetImageFromArray(huge), str(tmp_path / "huge.nrrd"))
    cliRefusal(capsys, ["eqd2", "--dose", str(tmp_path / "huge.nrrd"), "--fractions", "25", "--alpha-beta", "3", "-o",
                        str(tmp_path / "e.nrrd")],
               "huge.nrrd: 1 voxel of the dose exceeds the largest single-precision")
    # NaN is the dose command's unknown dose: a DVH names the file and the structure touching it
    cliRefusal(capsys, ["dvh", "--dose", str(tmp_path / "nan.nrrd"), "--segmentation", str(tmp_path / "mask.nrrd")],
               "nan.nrrd: structure 'mask' has 2 voxels without dose (outside the dose grid, or NaN in it")
    assert not (tmp_path / "e.nrrd").exists()


def test_dvh_says_what_the_dose_grid_leaves_out_of_a_structure(tmp_path, study, goodCourse, capsys):
    """An adversarial review: dvh cut an RTSTRUCT structure at the dose grid's edge (a rectum 49.6 of its 111 cc) or
    left it out whole (0 cc) and said nothing in its CSV. A dose grid of the CT's last three slices: the rectum
    (slices 2-7) is noted as cut at its edge, the GTV (3-6) as outside it; on the whole grid the GTV has no note."""
    part = ImageGeometry((16, 14, 3), (3.0, 3.0, 4.0), (-22.5, -19.5, -18.0 + 7 * 4.0))  # slices 7-9 of the CT
    course = writeCourse(tmp_path / "c", study, doseGy=np.full(part.shape, 10.0), doseGeometry=part)
    table = tmp_path / "dvh.csv"
    assert cliMain(["dvh", "--dose", str(course["rd"]), "--segmentation", str(course["rs"]), "--csv",
                    str(table)]) == 0

    notes = {row["name"]: row["note"] for row in csvRows(table)}
    assert notes["Rectum"].startswith("cut at the edge of the dose grid: the part beyond it is not counted")
    assert notes["GTV"].startswith("no voxel on the grid: the structure lies outside the dose grid")
    whole = tmp_path / "whole.csv"
    assert cliMain(["dvh", "--dose", str(goodCourse["rd"]), "--segmentation", str(goodCourse["rs"]), "--csv",
                    str(whole)]) == 0
    # the body touches the grid's first and last slices, inside them: no note (a verification review: noted as cut)
    assert {row["name"]: row["note"] for row in csvRows(whole)} == {"GTV": "", "Rectum": "", "Body": ""}


def test_unreadable_files_are_named_with_the_library_reason_not_its_source_path(tmp_path, study, capsys):
    """An adversarial review: an unreadable file gave SimpleITK's first line, the C++ source file of the build and no
    reason ("Exception thrown in SimpleITK ImageFileReader_Execute: /work/src/Code/IO/src/sitkImageReaderBase.cxx:
    99:"); an RTDOSE without DoseSummationType was "a  dose"."""
    from ReirradiationDoseLib.core.errors import libraryReason

    bad = tmp_path / "bad.nrrd"
    bad.write_text("garbage")
    for argv in (["eqd2", "--dose", str(bad), "--fractions", "5", "--alpha-beta", "3", "-o", str(tmp_path / "e.nrrd")],
                 ["dvh", "--dose", str(bad), "--segmentation", str(bad)],
                 ["iov", "--observer", f"a={bad}", "--observer", f"b={bad}"]):
        err = cliRefusal(capsys, argv, f"{bad}: ", f'(Unable to determine ImageIO reader for "{bad}")')
        assert ".cxx" not in err and "Exception thrown" not in err
    itk = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /src/itkNrrdImageIO.cxx:230:\n"
                       "ITK ERROR: NrrdImageIO(0x5581): ReadImageInformation: Error reading file.nrrd: bad header")
    assert libraryReason(itk) == "ReadImageInformation: Error reading file.nrrd: bad header"
    assert libraryReason(RuntimeError("plain words")) == "plain words"
    course = writeCourse(tmp_path / "c", study)
    ds = pydicom.dcmread(course["rd"])
    del ds.DoseSummationType
    ds.save_as(tmp_path / "nosum.dcm")
    refusal(lambda: requirePlanDose(readRtDose(tmp_path / "nosum.dcm"), tmp_path / "nosum.dcm"), "nosum.dcm",
            "this RTDOSE has no DoseSummationType (3004,000A)")
