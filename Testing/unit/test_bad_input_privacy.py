"""Issue 10, privacy: `reirradiation dose` on the demo case puts the patient's name and ID in the report, summary and
logs only with --include-identity; --anonymize writes an RTDOSE without them and with new study and
frame-of-reference UIDs.

The demo case's registrations are replaced by its ground-truth transforms (deformable registration is slow and
not what is tested here).
"""

from __future__ import annotations

import json
import logging
import re

import pydicom
import pytest

from ReirradiationDoseLib.cli import main as cliMain
from ReirradiationDoseLib.core.democase.generate import PATIENT_ID, PATIENT_NAME

IDENTITY = (PATIENT_NAME, PATIENT_ID, PATIENT_NAME.replace("^", " "))
TEXT_OUTPUTS = ("report.html", "summary.json", "dvh.csv", "constraints.csv")


@pytest.fixture(scope="module")
def fastCase(demoCase, tmp_path_factory):
    """The demo case with file registrations (absolute paths, so the case file can live anywhere)."""
    base = demoCase.outputDir
    data = json.loads((base / "case.json").read_text())

    def absolute(value):
        return str((base / value).resolve())

    data["referenceImage"] = absolute(data["referenceImage"])
    data["structures"] = absolute(data["structures"])
    data["mri"] = {"image": absolute(data["mri"]["image"]), "registration": absolute("truth/mri_registration.tfm")}
    for course in data["courses"]:
        for key in ("dose", "plan", "image", "structures"):
            if course.get(key):
                course[key] = absolute(course[key])
    data["courses"][0]["registration"] = absolute("truth/prior_registration.nrrd")
    path = tmp_path_factory.mktemp("privacy") / "case_fast.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def runDose(case, output, caplog, capsys, *flags) -> str:
    """Run the command with DEBUG logging; returns everything it logged or printed."""
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        assert cliMain(["-v", "dose", str(case), "--output", str(output), "--no-pictures", *flags]) == 0
    captured = capsys.readouterr()
    return caplog.text + captured.out + captured.err


def leaks(text: str) -> list[str]:
    return [token for token in IDENTITY if token in text]


def test_no_identity_in_report_summary_or_logs_unless_asked(fastCase, tmp_path, caplog, capsys):
    log = runDose(fastCase, tmp_path / "default", caplog, capsys)
    assert "read RTDOSE" in log and "read RTPLAN" in log and "Composite EQD2 max" in log  # the log was captured
    assert leaks(log) == [], "the log prints the patient's identity"
    for name in TEXT_OUTPUTS:
        assert leaks((tmp_path / "default" / name).read_text(encoding="utf-8")) == [], name
    assert "Patient identity omitted" in (tmp_path / "default" / "report.html").read_text(encoding="utf-8")
    # asked for: the report and the summary name the patient; the log still does not
    log = runDose(fastCase, tmp_path / "identity", caplog, capsys, "--include-identity")
    assert leaks(log) == []
    report = (tmp_path / "identity" / "report.html").read_text(encoding="utf-8")
    summary = (tmp_path / "identity" / "summary.json").read_text(encoding="utf-8")
    assert PATIENT_NAME in report and PATIENT_ID in report
    assert PATIENT_NAME in summary and PATIENT_ID in summary


def test_anonymize_writes_a_deidentified_rtdose_with_new_uids(demoCase, fastCase, tmp_path, caplog, capsys):
    ct = pydicom.dcmread(next(iter(sorted((demoCase.outputDir / "current" / "CT").iterdir()))),
                         stop_before_pixels=True)
    # --include-identity is overridden by --anonymize
    log = runDose(fastCase, tmp_path / "anon", caplog, capsys, "--anonymize", "--include-identity")
    assert leaks(log) == []
    for name in TEXT_OUTPUTS:
        assert leaks((tmp_path / "anon" / name).read_text(encoding="utf-8")) == [], name
    rtdose = pydicom.dcmread(tmp_path / "anon" / "composite_eqd2.dcm")
    raw = (tmp_path / "anon" / "composite_eqd2.dcm").read_bytes()
    assert all(token.encode() not in raw for token in IDENTITY)
    assert str(rtdose.PatientName) not in IDENTITY and str(rtdose.PatientID) not in IDENTITY
    assert rtdose.StudyInstanceUID != ct.StudyInstanceUID
    assert rtdose.FrameOfReferenceUID != ct.FrameOfReferenceUID
    assert rtdose.SeriesInstanceUID != ct.SeriesInstanceUID and rtdose.SOPInstanceUID != ct.SOPInstanceUID
    assert pydicom.uid.UID(rtdose.StudyInstanceUID).is_valid and pydicom.uid.UID(rtdose.FrameOfReferenceUID).is_valid
    # not anonymised: the RTDOSE belongs to the planning CT's study, patient and frame of reference
    runDose(fastCase, tmp_path / "plain", caplog, capsys)
    plain = pydicom.dcmread(tmp_path / "plain" / "composite_eqd2.dcm")
    assert (str(plain.PatientName), plain.PatientID) == (PATIENT_NAME, PATIENT_ID)
    assert (plain.StudyInstanceUID, plain.FrameOfReferenceUID) == (ct.StudyInstanceUID, ct.FrameOfReferenceUID)
    # a MULTI_PLAN sum references the plans it sums (each course's RTDOSE names its RTPLAN); anonymised, none
    plans = {pydicom.dcmread(demoCase.outputDir / c / "RTDOSE.dcm").ReferencedRTPlanSequence[0]
             .ReferencedSOPInstanceUID for c in ("prior", "current")}
    assert plain.DoseSummationType == "MULTI_PLAN" and len(plans) == 2
    assert {r.ReferencedSOPInstanceUID for r in plain.ReferencedRTPlanSequence} == plans
    assert "ReferencedRTPlanSequence" not in rtdose
    assert re.fullmatch(r"EQD2 Gy, recovery in organs\. Lower bound in \d+\.\d % of grid\.", plain.DoseComment)
    assert "Recovery credited to some organs (their prior EQD2 discounted" in plain.ImageComments
    # each anonymised run draws new UIDs (not derivable from the originals without the run's random salt)
    runDose(fastCase, tmp_path / "anon2", caplog, capsys, "--anonymize")
    again = pydicom.dcmread(tmp_path / "anon2" / "composite_eqd2.dcm")
    assert again.StudyInstanceUID != rtdose.StudyInstanceUID


def test_anonymized_summary_carries_no_original_uids(demoCase, fastCase, tmp_path, caplog, capsys):
    ct = pydicom.dcmread(next(iter(sorted((demoCase.outputDir / "current" / "CT").iterdir()))),
                         stop_before_pixels=True)
    runDose(fastCase, tmp_path / "anon", caplog, capsys, "--anonymize")
    rtdose = pydicom.dcmread(tmp_path / "anon" / "composite_eqd2.dcm")
    summary = (tmp_path / "anon" / "summary.json").read_text(encoding="utf-8")
    report = (tmp_path / "anon" / "report.html").read_text(encoding="utf-8")
    for uid in (ct.StudyInstanceUID, ct.FrameOfReferenceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID):
        assert uid not in summary and uid not in report
    # where the summary names the study or frame of reference, it uses the RTDOSE's new UIDs (consistent run)
    reference = json.loads(summary)["referenceImage"]
    for key, value in (("studyInstanceUid", rtdose.StudyInstanceUID),
                       ("frameOfReferenceUid", rtdose.FrameOfReferenceUID)):
        assert reference.get(key) in (None, "", value)


def test_anonymizing_drops_uid_keys_only():
    """Keys naming a UID go ("...Uid", "...UID", "uids"); a key that merely holds the letters stays (the contour
    check's "guided" was dropped by a substring test, and the report then failed on the anonymised summary)."""
    from ReirradiationDoseLib.core.dosereport import anonymizeSummary

    out = anonymizeSummary({"sopInstanceUid": "1.2", "SOPInstanceUID": "1.3", "uids": ["1.4"], "fixedUid": "1.5",
                            "guided": True, "patientId": "X", "files": ["a"],
                            "registration": {"contourCheck": {"structures": [{"guided": False, "dice": 0.9}]}}})
    assert out == {"guided": True, "registration": {"contourCheck": {"structures": [{"guided": False, "dice": 0.9}]}},
                   "anonymized": True}


def test_anonymized_warnings_carry_no_folders_or_uids(demoCase, fastCase, tmp_path, caplog, capsys):
    """Warnings are free text naming files and frames of reference: anonymised, their absolute paths keep only the
    file or folder name (the folders above may carry the patient's name) and their UIDs are replaced, in the summary
    and the report alike. Here the prior course is taken unregistered, which warns naming both frames and files."""
    from ReirradiationDoseLib.core.dosereport import anonymizeText

    assert anonymizeText("course 'prior' (/data/DOE JANE/prior/CT): lies 5.5 mm (1.2.826.0.1.3680043.8.498.9)") \
        == "course 'prior' (CT): lies 5.5 mm ((UID))"
    assert anonymizeText(r"image 'C:\Users\Doe\ct.nrrd', 81.76 Gy in 17 fx, slicer 5.13.31053.0") \
        == "image 'ct.nrrd', 81.76 Gy in 17 fx, slicer 5.13.31053.0"
    data = json.loads(fastCase.read_text(encoding="utf-8"))
    data["courses"][0]["registration"] = "none"
    data["allowFrameOfReferenceMismatch"] = True
    case = tmp_path / "case_none.json"
    case.write_text(json.dumps(data), encoding="utf-8")
    runDose(case, tmp_path / "plain", caplog, capsys)
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text(encoding="utf-8"))
    frame = next(w for w in plain["warnings"] if "frame of reference" in w)
    folder = str(demoCase.outputDir.resolve())
    assert folder in frame  # not anonymised: the full paths, for the physicist
    runDose(case, tmp_path / "anon", caplog, capsys, "--anonymize")
    for name in ("summary.json", "report.html"):
        text = (tmp_path / "anon" / name).read_text(encoding="utf-8")
        assert folder not in text and str(tmp_path) not in text, name
        assert not re.search(r"\d+(\.\d+){4,}", json.dumps(json.loads(text)["warnings"]) if name.endswith("json")
                             else text.split("<h2>Warnings</h2>")[1]), name
    anon = json.loads((tmp_path / "anon" / "summary.json").read_text(encoding="utf-8"))
    assert any("frame of reference (UID)" in w and "(RTDOSE.dcm)" in w for w in anon["warnings"])
