"""A prior course registered through a DICOM REG file: the case file accepts it, the pipeline picks the item by the
frames of reference of the current CT and the prior dose, and the composite equals the one through the same field
given as a displacement-field NRRD (the demo case's known deformation)."""

import json

import numpy as np
import pydicom
import pytest

from ReirradiationDoseLib.core import casefile, dicomreg, pipeline
from ReirradiationDoseLib.core.dicomwrite import PatientStudy
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.registration import displacementFieldTransform
from ReirradiationDoseLib.core.transformio import readDisplacementField


def _frames(caseDir):
    ct = pydicom.dcmread(next(iter(sorted((caseDir / "current" / "CT").iterdir()))), stop_before_pixels=True)
    priorDose = pydicom.dcmread(caseDir / "prior" / "RTDOSE.dcm", stop_before_pixels=True)
    return ct, str(ct.FrameOfReferenceUID), str(priorDose.FrameOfReferenceUID)


def _writeReg(caseDir, path, fixedUid, movingUid):
    ct, _, _ = _frames(caseDir)
    field = readDisplacementField(caseDir / "truth" / "prior_registration.nrrd")
    ps = PatientStudy(patientName=str(ct.PatientName), patientId=str(ct.PatientID),
                      studyInstanceUid=str(ct.StudyInstanceUID), studyDate=str(ct.StudyDate),
                      frameOfReferenceUid=fixedUid)
    dicomreg.writeDicomRegistration(path, displacementFieldTransform(field), fixedUid, movingUid, ps,
                                    referenceGrid=field, seriesDescription="known deformation")


def _composite(caseDir, registration):
    raw = json.loads((caseDir / "case.json").read_text())
    raw.pop("mri", None)
    raw["courses"][0]["registration"] = str(registration)
    inputs = pipeline.loadCaseInputs(casefile.parseCase(raw, caseDir / "case.json"))
    return inputs, pipeline.computeDose(inputs)


@pytest.fixture(scope="module")
def nrrdRun(demoCase):
    return _composite(demoCase.outputDir, demoCase.outputDir / "truth" / "prior_registration.nrrd")


def test_deformable_reg_gives_the_same_composite_as_the_field(demoCase, nrrdRun, tmp_path):
    caseDir = demoCase.outputDir
    _, fixedUid, movingUid = _frames(caseDir)
    assert fixedUid != movingUid
    path = tmp_path / "prior_to_current_reg.dcm"
    _writeReg(caseDir, path, fixedUid, movingUid)
    inputs, result = _composite(caseDir, path)
    _, expected = nrrdRun
    difference = np.abs(np.nan_to_num(result.compositeEqd2Gy) - np.nan_to_num(expected.compositeEqd2Gy))
    assert np.array_equal(np.isnan(result.compositeEqd2Gy), np.isnan(expected.compositeEqd2Gy))
    assert float(difference.max()) < 0.01  # Gy; the REG stores the field as float32
    assert float(np.nanmax(expected.compositeEqd2Gy)) > 70.0  # a real composite, not an empty one
    recorded = inputs.courses[0].registration["dicomRegistration"]
    assert recorded["kind"] == "deformable" and not recorded["reversed"]
    assert recorded["fixedFrameOfReferenceUid"] == fixedUid and recorded["movingFrameOfReferenceUid"] == movingUid
    assert recorded["seriesDescription"] == "known deformation"
    # the demo case names tissue without counterpart for its deformable registration: with a file it is unused
    for key in ("withoutCounterpart", "courseWithoutCounterpart"):
        assert any(f"'{key}' is used by deformable registration only" in w for w in inputs.warnings), key


def test_reg_between_other_frames_is_refused_naming_the_file(demoCase, tmp_path):
    caseDir = demoCase.outputDir
    _, fixedUid, _ = _frames(caseDir)
    path = tmp_path / "other_frames_reg.dcm"
    _writeReg(caseDir, path, fixedUid, pydicom.uid.generate_uid())
    with pytest.raises(InputError) as raised:
        _composite(caseDir, path)
    assert "other_frames_reg.dcm" in str(raised.value)


def test_a_reg_named_without_dcm_and_a_field_in_nhdr_are_accepted(demoCase, nrrdRun, tmp_path):
    """PACS exports name files without a suffix: a DICOM REG file without .dcm is read as one (it was refused as
    "not a transform file"); a displacement field in .nhdr (which the reader reads) is accepted by the case file."""
    import SimpleITK as sitk

    caseDir = demoCase.outputDir
    _, fixedUid, movingUid = _frames(caseDir)
    path = tmp_path / "REG00001"
    _writeReg(caseDir, path, fixedUid, movingUid)
    _, result = _composite(caseDir, path)
    _, expected = nrrdRun
    assert float(np.nanmax(np.abs(result.compositeEqd2Gy - expected.compositeEqd2Gy))) < 0.01
    header = tmp_path / "field.nhdr"
    sitk.WriteImage(sitk.ReadImage(str(caseDir / "truth" / "prior_registration.nrrd")), str(header))
    raw = json.loads((caseDir / "case.json").read_text())
    raw["courses"][0]["registration"] = str(header)
    course = casefile.parseCase(raw, caseDir / "case.json").courses[0]
    assert course.registration == "file" and course.transformFile == header
    raw["courses"][0]["registration"] = str(caseDir / "case.json")  # a file, but no transform: still refused
    with pytest.raises(InputError, match="is not none, rigid, affine, deformable or a transform file"):
        casefile.parseCase(raw, caseDir / "case.json")


def test_the_mri_reg_must_relate_todays_ct_to_the_mri(demoCase, tmp_path):
    """A REG relating the MRI to another CT of the patient (another frame of reference than today's planning CT)
    was accepted for the MRI, as it is refused for a course: now refused naming the file; the REG from today's CT
    to the MRI gives the generator's MRI transform."""
    import SimpleITK as sitk

    caseDir = demoCase.outputDir
    ct, fixedUid, _ = _frames(caseDir)
    mri = pydicom.dcmread(next(iter(sorted((caseDir / "MR").iterdir()))), stop_before_pixels=True)
    ps = PatientStudy(patientName=str(ct.PatientName), patientId=str(ct.PatientID),
                      studyInstanceUid=str(ct.StudyInstanceUID), studyDate=str(ct.StudyDate),
                      frameOfReferenceUid=fixedUid)
    truth = sitk.ReadTransform(str(demoCase.paths["mriRegistration"]))
    raw = json.loads((caseDir / "case.json").read_text())
    raw["courses"][0]["registration"] = str(caseDir / "truth" / "prior_registration.nrrd")
    for name, fixed in (("other_ct_to_mri.dcm", pydicom.uid.generate_uid()), ("ct_to_mri.dcm", fixedUid)):
        dicomreg.writeDicomRegistration(tmp_path / name, truth, fixed, str(mri.FrameOfReferenceUID), ps)
    raw["mri"] = {"image": "MR", "registration": str(tmp_path / "other_ct_to_mri.dcm")}
    with pytest.raises(InputError) as raised:
        pipeline.loadCaseInputs(casefile.parseCase(raw, caseDir / "case.json"))
    assert "other_ct_to_mri.dcm" in str(raised.value)
    raw["mri"]["registration"] = str(tmp_path / "ct_to_mri.dcm")
    inputs = pipeline.loadCaseInputs(casefile.parseCase(raw, caseDir / "case.json"))
    point = (10.0, 40.0, 5.0)
    assert np.allclose(inputs.mri["transform"].TransformPoint(point), truth.TransformPoint(point), atol=1e-4)
