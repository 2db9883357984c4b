"""Defects an independent review of the export layer found (RTDOSE, REG, output folder, anonymisation), each on a
small synthetic case: the unknown composite written as 0 Gy in the RTDOSE, a prior dose whose frame of reference no
registered image is in, a symlinked output folder replaced by a local one, a picture failure that lost every numeric
output, real dates in anonymised outputs, descriptions cut mid-word, and warnings repeated by writing twice."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.core.atomic import OUTPUT_MARKER, atomicOutputDir, checkOutputDir
from ReirradiationDoseLib.core.casefile import TissueSpec, parseCase
from ReirradiationDoseLib.core.dicomwrite import PatientStudy, writeImageSeries, writeRtDose
from ReirradiationDoseLib.core.doseoutputs import writeDoseOutputs
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.pipeline import CourseInput, DoseInputs, DoseSettings, computeDose, loadCaseInputs


def handEqd2(dose, n, ab):
    return dose * (dose / n + ab) / (2.0 + ab)


@pytest.fixture
def partlyUnknown():
    """Two courses on a 12 × 10 × 8 grid; the prior course's dose grid holds the first 5 slices only, the current
    course's the last 6: slices 0-1 know only the prior, 5-7 only the current, 2-4 both. A 'Bowel' spans all."""
    geometry = ImageGeometry((12, 10, 8), (2.0, 2.0, 3.0), (-11.0, -9.0, -10.5))
    prior = np.full((5, 10, 12), 40.0, np.float32)  # 40 Gy / 20 fx at α/β 3: 40 (2 + 3) / 5 = 40 Gy EQD2
    current = np.full((6, 10, 12), 20.0, np.float32)  # 20 Gy / 10 fx: 20 Gy EQD2
    priorGeometry = ImageGeometry((12, 10, 5), geometry.spacingMm, geometry.originMm)
    currentGeometry = ImageGeometry((12, 10, 6), geometry.spacingMm, geometry.indexToLps((0, 0, 2)))
    bowel = np.zeros(geometry.shape, bool)
    bowel[:, 2:6, 3:9] = True
    courses = [CourseInput("prior", prior, priorGeometry, 20, date=dt.date(2020, 3, 14)),
               CourseInput("current", current, currentGeometry, 10, isCurrent=True, date=dt.date(2023, 9, 1))]
    settings = DoseSettings(tissues={"Bowel": TissueSpec(3.0, {"model": "constant", "fraction": 0.25})},
                            defaultAlphaBetaGy=3.0)
    info = {"frameOfReferenceUid": "1.2.826.0.1.3680043.8.498.1", "studyInstanceUid": "1.2.826.0.1.3680043.8.498.2",
            "studyDate": "20230901", "patientName": "Test^Patient", "patientId": "T1"}
    inputs = DoseInputs(geometry.emptyImage(sitk.sitkInt16), {"Bowel": bowel}, courses, settings,
                        referenceInfo=info)
    return computeDose(inputs), bowel


def readGy(path):
    ds = pydicom.dcmread(path)
    return ds, ds.pixel_array.astype(float) * float(ds.DoseGridScaling)


def test_unknown_composite_is_written_as_the_known_courses_lower_bound_and_said_so(partlyUnknown, tmp_path):
    """Where a course's dose is unknown the RTDOSE holds the known courses' sum (0 where none is known), and
    DoseComment says so with the grid's share; the NRRD keeps NaN and the report's numbers do not move. Before, all
    unknown voxels were 0 Gy: the 30 Gy EQD2 (40 x 0.75 recovery) the prior course is known to give in slices 0-1 was
    lost, and only ImageComments said anything."""
    result, bowel = partlyUnknown
    composite = result.compositeEqd2Gy
    unknown = ~np.isfinite(composite)
    assert unknown[:2].all() and unknown[5:].all() and not unknown[2:5].any()
    writeDoseOutputs(result, tmp_path / "out", pictures=False)
    ds, dose = readGy(tmp_path / "out" / "composite_eqd2.dcm")
    priorKnown = 0.75 * handEqd2(40.0, 20, 3.0)  # the prior course's recovered EQD2 in the bowel
    assert priorKnown == pytest.approx(30.0)
    assert dose[:2][bowel[:2]] == pytest.approx(priorKnown, abs=1e-6)  # was 0
    assert dose[5:][bowel[5:]] == pytest.approx(handEqd2(20.0, 10, 3.0), abs=1e-6)  # the current course alone
    assert np.allclose(dose[~unknown], composite[~unknown], atol=1e-6)  # known voxels unchanged
    share = 100.0 * unknown.sum() / unknown.size
    assert ds.DoseComment == f"EQD2 Gy, recovery in organs. Lower bound in {share:.1f} % of grid."
    assert len(ds.DoseComment) <= 64 and "lower bound" in ds.ImageComments and "x EQD2 of courses" in ds.ImageComments
    # which prior dose the file discounts, per course and structure (a physicist's review: it did not say)
    assert "Recovery credited to some organs (their prior EQD2 discounted; none where a target owns a voxel): " \
        "'prior' (41.5 months before): Bowel 25 % (constant)." \
        in ds.ImageComments
    # the maps and the report keep the unknown as unknown
    nrrd = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "composite_eqd2.nrrd")))
    assert np.array_equal(np.isnan(nrrd), unknown)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["composite"]["unknownVoxels"] == int(unknown.sum())
    row = next(r for r in summary["dvh"] if r["structure"] == "Bowel" and r["dose"] == "composite EQD2")
    assert row["dmeanGy"] == pytest.approx(float(composite[bowel & ~unknown].mean()), abs=1e-4)
    message = next(w for w in summary["warnings"] if w.startswith("RTDOSE:"))
    assert "written as a lower bound (the known courses' sum)" in message and "0 Gy" not in message


def test_voxels_no_course_knows_are_zero_and_counted(partlyUnknown, tmp_path):
    """A voxel outside every course's dose grid has no lower bound but 0: written 0 and counted in the warning."""
    import dataclasses

    result, _ = partlyUnknown
    courses = [dataclasses.replace(c, eqd2Gy=np.where(np.arange(8)[:, None, None] == 0, np.nan, c.eqd2Gy)
                                   .astype(np.float32)) for c in result.courses]
    composite = result.compositeEqd2Gy.copy()
    composite[0] = np.nan
    result = dataclasses.replace(result, courses=courses, compositeEqd2Gy=composite)
    writeDoseOutputs(result, tmp_path / "out", pictures=False)
    _, dose = readGy(tmp_path / "out" / "composite_eqd2.dcm")
    assert np.all(dose[0] == 0) and np.all(dose[1] > 29)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    message = next(w for w in summary["warnings"] if w.startswith("RTDOSE:"))
    assert message.endswith(f"; {12 * 10} of them, where no course's dose is known, as 0 Gy")


def test_writing_twice_neither_repeats_nor_adds_warnings_to_the_result(partlyUnknown, tmp_path):
    """Saving the same result again (the module's Save) listed the RTDOSE warning twice in the second summary."""
    result, _ = partlyUnknown
    before = list(result.warnings)
    writeDoseOutputs(result, tmp_path / "one", pictures=False)
    writeDoseOutputs(result, tmp_path / "two", pictures=False)
    assert result.warnings == before
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert sum(w.startswith("RTDOSE:") for w in summary["warnings"]) == 1


def test_a_failing_picture_step_keeps_every_numeric_output(partlyUnknown, tmp_path):
    """A rendering failure in the optional pictures threw the whole output folder away."""
    result, _ = partlyUnknown

    def brokenPictures(result, folder):
        (folder / "half.png").write_bytes(b"x")
        raise RuntimeError("no off-screen context")

    written = writeDoseOutputs(result, tmp_path / "out", pictures=brokenPictures)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"composite_eqd2.nrrd", "composite_eqd2.dcm", "dvh.csv", "constraints.csv", "summary.json",
            "report.html"} <= names
    assert "half.png" not in names and all(p.exists() for p in written)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert ("pictures and scene.mrb skipped: the picture step (brokenPictures) failed: RuntimeError: no off-screen "
            "context") in summary["warnings"]


def test_anonymized_outputs_carry_no_dates(partlyUnknown, tmp_path):
    """Anonymised: the RTDOSE's study, series and content dates and times are empty (Type 2 / 3 / 2C), the summary
    holds no calendar date (courses, study, recovery), the intervals stay. Before, the planning CT's date was in the
    RTDOSE and the course dates in summary.json."""
    result, _ = partlyUnknown
    writeDoseOutputs(result, tmp_path / "anon", pictures=False, anonymize=True)
    ds = pydicom.dcmread(tmp_path / "anon" / "composite_eqd2.dcm")
    for keyword in ("StudyDate", "SeriesDate", "ContentDate", "StudyTime", "ContentTime"):
        assert keyword in ds and str(ds[keyword].value) == "", keyword
    for name in ("summary.json", "report.html"):
        text = (tmp_path / "anon" / name).read_text(encoding="utf-8")
        for date in ("2020-03-14", "2023-09-01", "20230901"):
            assert date not in text, (name, date)
    summary = json.loads((tmp_path / "anon" / "summary.json").read_text())
    assert [c["date"] for c in summary["courses"]] == [None, None]
    assert summary["courses"][0]["recovery"]["intervalMonths"] == pytest.approx(41.6, abs=0.1)
    # not anonymised: the planning CT's date, the course dates
    writeDoseOutputs(result, tmp_path / "plain", pictures=False)
    assert pydicom.dcmread(tmp_path / "plain" / "composite_eqd2.dcm").StudyDate == "20230901"
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert [c["date"] for c in plain["courses"]] == ["2020-03-14", "2023-09-01"]


def test_anonymized_warning_text_loses_its_dates():
    from ReirradiationDoseLib.core.dosereport import anonymizeText

    assert anonymizeText("course 'prior' is dated 2024-05-24, but its RTPLAN is dated 2024-06-01; 25 fractions") \
        == "course 'prior' is dated (date), but its RTPLAN is dated (date); 25 fractions"


def test_descriptions_are_cut_at_a_word_and_identifiers_kept_whole(tmp_path):
    """LO values over 64 characters were written as given (a strict reader refuses the file), and the composite's
    SeriesDescription was cut mid-value ("... 8.5/10/12 Gy (voxel-wi")."""
    from types import SimpleNamespace

    from ReirradiationDoseLib.core.doseoutputs import _writeRtDose

    geometry = ImageGeometry((4, 4, 4), (2, 2, 2))
    ps = PatientStudy.new("T^T", "T1", "20240101", studyDescription="word " * 20)
    writeRtDose(tmp_path / "d.dcm", np.ones(geometry.shape), geometry, ps, seriesDescription="long " * 20)
    with pydicom.config.strict_reading():
        ds = pydicom.dcmread(tmp_path / "d.dcm")
        assert ds.SeriesDescription == "long " * 11 + "long..." and ds.StudyDescription == "word " * 11 + "word..."
    assert PatientStudy.new("T^T", "X" * 70, "20240101").overlongIdentity() == "patient ID (70 characters)"
    from ReirradiationDoseLib.core.dicomwrite import _fitLo

    # not after an abbreviation, and a name without spaces keeps its own characters (verification review)
    assert _fitLo("Reirradiation: Pelvis 2019 (Dr. Smith, Department of Radiation Oncology) to current CT") == (
        "Reirradiation: Pelvis 2019 (Dr. Smith, Department of...")
    assert _fitLo("Reirradiation: " + "X" * 70 + " to current CT") == "Reirradiation: " + "X" * 46 + "..."
    values = [0.5, 1.5, 2, 2.5, 3, 3.5, 4, 8.5, 10, 12]
    result = SimpleNamespace(compositeEqd2Gy=np.ones(geometry.shape, np.float32), courses=[], warnings=[],
                             alphaBetaGy=np.resize(np.array(values), geometry.shape), referenceGeometry=geometry,
                             referenceInfo={"frameOfReferenceUid": "1.2.3", "studyInstanceUid": "1.2.4",
                                            "studyDate": "20240101", "patientName": "A", "patientId": "B"})
    _writeRtDose(result, tmp_path / "c.dcm", False)
    assert pydicom.dcmread(tmp_path / "c.dcm").SeriesDescription == "EQD2 composite, a/b 0.5-12 Gy (10 values, " \
                                                                    "voxel-wise)"
    # an identity longer than DICOM allows is written as it is (a refusal lost every output of the run) and warned
    result.referenceInfo["patientId"] = "X" * 70
    warnings = []
    _writeRtDose(result, tmp_path / "e.dcm", False, warnings)
    assert pydicom.dcmread(tmp_path / "e.dcm").PatientID == "X" * 70
    assert any("patient ID (70 characters) is longer than DICOM's 64" in w for w in warnings)


def test_a_symlinked_output_folder_is_written_through(tmp_path):
    """The link was renamed away: it became a local folder, the share kept the old files and the old link stayed
    as a hidden ``.out.previous-<pid>``."""
    target = tmp_path / "share" / "out"
    target.mkdir(parents=True)
    (target / OUTPUT_MARKER).write_text("x")
    (target / "old.txt").write_text("old")
    link = tmp_path / "out"
    link.symlink_to(target, target_is_directory=True)
    with atomicOutputDir(link) as folder:
        (folder / "new.txt").write_text("new")
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "share"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["out"]
    # a link that leads back to itself is refused before the run (it failed after the whole computation)
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    with pytest.raises(InputError, match="symbolic link that cannot be followed"):
        checkOutputDir(tmp_path / "loop1")


# ---- frame of reference of a course's CT and its dose -------------------------------------------------------------

def _blobImage(geometry: ImageGeometry, shiftVoxels: float = 0.0) -> np.ndarray:
    """A soft-edged ellipsoid in HU with an off-centre bump, so that a rigid registration has something to find."""
    k, j, i = np.indices(geometry.shape, dtype=float)
    ck, cj, ci = (np.array(geometry.shape) - 1) / 2.0
    body = ((i - ci - shiftVoxels) / 7.0) ** 2 + ((j - cj) / 5.0) ** 2 + ((k - ck) / 4.0) ** 2
    bump = ((i - ci - 3 - shiftVoxels) / 2.0) ** 2 + ((j - cj + 2) / 2.0) ** 2 + ((k - ck) / 2.0) ** 2
    return (-1000 + 1000 / (1 + np.exp((body - 1) * 6)) + 600 / (1 + np.exp((bump - 1) * 6))).astype(np.int16)


@pytest.fixture
def mismatchedCase(tmp_path):
    """A prior course registered rigidly: its CT in frame A, its RTDOSE in frame B; the current CT and dose in C."""
    geometry = ImageGeometry((20, 16, 10), (4.0, 4.0, 5.0), (-38.0, -30.0, -22.5))
    current = PatientStudy.new("Test^Patient", "T1", "20230901")
    prior = PatientStudy.new("Test^Patient", "T1", "20200101")
    writeImageSeries(_blobImage(geometry), geometry, tmp_path / "current" / "CT", current)
    writeImageSeries(_blobImage(geometry, 1.0), geometry, tmp_path / "prior" / "CT", prior)
    writeRtDose(tmp_path / "current" / "RTDOSE.dcm", np.full(geometry.shape, 20.0), geometry, current)
    otherFrame = PatientStudy(**{**prior.__dict__, "frameOfReferenceUid": pydicom.uid.generate_uid()})
    writeRtDose(tmp_path / "prior" / "RTDOSE.dcm", np.full(geometry.shape, 40.0), geometry, otherFrame)
    raw = {"referenceImage": "current/CT", "courses": [
        {"name": "prior", "dose": "prior/RTDOSE.dcm", "fractions": 20, "date": "2020-03-14", "image": "prior/CT",
         "registration": "rigid"},
        {"name": "current", "dose": "current/RTDOSE.dcm", "fractions": 10, "date": "2023-09-01"}]}
    return tmp_path, raw, prior.frameOfReferenceUid, otherFrame.frameOfReferenceUid


def test_a_course_ct_and_dose_in_different_frames_are_refused(mismatchedCase):
    folder, raw, ctFrame, doseFrame = mismatchedCase
    with pytest.raises(InputError) as raised:
        loadCaseInputs(parseCase(raw, folder / "case.json"))
    message = str(raised.value)
    for part in ("case.json", "course 'prior'", str(folder / "prior" / "CT"), str(folder / "prior" / "RTDOSE.dcm"),
                 ctFrame, doseFrame, "allowFrameOfReferenceMismatch"):
        assert part in message, part


def test_accepted_frame_mismatch_is_warned_and_the_reg_names_the_registered_ct(mismatchedCase):
    """With allowFrameOfReferenceMismatch the run goes on, warned, and the DICOM REG names the frame of the CT that
    was registered (it named the dose's, a frame no registered image was in)."""
    folder, raw, ctFrame, doseFrame = mismatchedCase
    raw["allowFrameOfReferenceMismatch"] = True
    inputs = loadCaseInputs(parseCase(raw, folder / "case.json"))
    assert any(ctFrame in w and doseFrame in w and "accepted: allowFrameOfReferenceMismatch" in w
               for w in inputs.warnings)
    result = computeDose(inputs)
    writeDoseOutputs(result, folder / "out", pictures=False)
    reg = pydicom.dcmread(folder / "out" / "registration_prior.dcm")
    moving = [str(item.FrameOfReferenceUID) for item in reg.RegistrationSequence
              if str(item.FrameOfReferenceUID) != str(reg.FrameOfReferenceUID)]
    assert moving == [ctFrame]


def test_anonymising_empties_dates_and_times_of_day_not_durations():
    from ReirradiationDoseLib.core.dosereport import anonymizeSummary

    summary = anonymizeSummary({"courses": [{"date": "2024-01-15", "overallTreatmentTime": 35.0,
                                             "repairHalfTimeHours": 1.5}],
                                "recovery": {"priorDate": "2023-01-01", "intervalMonths": 12.5},
                                "referenceImage": {"studyDate": "20240101", "StudyTime": "101500", "halfTime": 2.0}})
    assert summary["courses"][0] == {"date": None, "overallTreatmentTime": 35.0, "repairHalfTimeHours": 1.5}
    assert summary["recovery"] == {"priorDate": None, "intervalMonths": 12.5}
    assert summary["referenceImage"]["studyDate"] is None and summary["referenceImage"]["StudyTime"] is None
    assert summary["referenceImage"]["halfTime"] == 2.0


def test_the_rtdose_names_every_prior_course_and_small_recoveries():
    """A verification review: a prior course credited nothing went unmentioned, and 0.4 % read "0 %"."""
    from types import SimpleNamespace

    from ReirradiationDoseLib.core.doseoutputs import _recoveryCredit

    def course(name, fractions, isCurrent=False, months=None):
        structures = {n: {"fraction": f, "model": {"model": "nieder-doi"}} for n, f in fractions.items()}
        return SimpleNamespace(name=name, isCurrent=isCurrent, recovery={
            "intervalMonths": months, "structures": structures,
            "maxRecoveredFraction": max(fractions.values(), default=0.0)})

    result = SimpleNamespace(courses=[course("first", {"SpinalCord": 0.5, "Rectum": 0.004}, months=81.0),
                                      course("second", {"SpinalCord": 0.0}, months=1.0),
                                      course("current", {}, isCurrent=True)])
    credited, text = _recoveryCredit(result)
    assert credited and text == ("Recovery credited to some organs (their prior EQD2 discounted; none where a target "
                                 "owns a voxel): 'first' (81.0 months before): SpinalCord 50 % (nieder-doi), Rectum "
                                 "0.4 % (nieder-doi); 'second' (1.0 months before): none.")
    result.courses = result.courses[1:]
    assert _recoveryCredit(result) == (False, "No recovery credited: prior courses count in full.")


def test_anonymised_summaries_clean_every_free_text():
    """A verification review: the new interval reasons name course dates, and they went into the anonymised
    constraint, scaling and budget tables (only the warnings were cleaned)."""
    from ReirradiationDoseLib.core.dosereport import anonymizeSummary

    reason = ("outside the conditions of the criterion: course 'c1' ended 5.2 months before course 'c2' began (its "
              "first fraction estimated from its last, 2023-07-20, and its 25 fractions on weekdays: 2023-06-16 at "
              "the latest); see /home/DOE_JOHN/plans/RP.dcm")
    out = anonymizeSummary({"constraints": [{"reason": reason}], "warnings": [reason],
                            "currentCourseScaling": {"rows": [{"reason": reason}]}})
    for text in (out["constraints"][0]["reason"], out["currentCourseScaling"]["rows"][0]["reason"],
                 out["warnings"][0]):
        assert "2023-" not in text and "DOE_JOHN" not in text and "(date)" in text and "RP.dcm" in text
