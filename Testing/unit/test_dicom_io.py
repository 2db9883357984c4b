"""DICOM writers and readers (core/dicomwrite, dicomimage, rtdose, rtplan, rtstruct, course): round trips, SimpleITK
as an independent reader of the written CT, LPS<->RAS, and refusal of bad input with clear messages."""

import logging
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.core.course import checkCourseConsistency
from ReirradiationDoseLib.core.dicomimage import readImageSeries
from ReirradiationDoseLib.core.dicomwrite import (
    PatientStudy,
    eqd2SeriesDescription,
    writeImageSeries,
    writeRtDose,
    writeRtPlan,
    writeRtStruct,
)
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry, lpsToRas
from ReirradiationDoseLib.core.rtdose import readRtDose, requirePlanDose
from ReirradiationDoseLib.core.rtplan import readRtPlan
from ReirradiationDoseLib.core.rtstruct import rasterizeAll, rasterizeRoi, readRtStruct

# a non-trivial grid: anisotropic spacing, off-centre origin, rows along -y and columns along +x (90 degree in-plane
# rotation), slices stacked along +z
ROTATED = tuple(np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).ravel())
GEOMETRY = ImageGeometry((24, 20, 9), (0.9, 1.3, 2.5), (-101.7, 35.2, -412.5))
GEOMETRY_ROTATED = ImageGeometry((24, 20, 9), (0.9, 1.3, 2.5), (-101.7, 35.2, -412.5), ROTATED)


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture
def study():
    return PatientStudy.new("Test^Patient", "RRT-001", "20240315", "re-irradiation test")


def ctArray(geometry, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3000, geometry.shape).astype(np.int16)


@pytest.mark.parametrize("geometry", [GEOMETRY, GEOMETRY_ROTATED], ids=["axial", "rotated"])
def test_ct_series_round_trip_and_simpleitk_geometry(tmp_path, study, geometry):
    ct = ctArray(geometry)
    ref = writeImageSeries(ct, geometry, tmp_path / "ct", study, seriesDescription="planning CT")
    assert len(ref.sopInstanceUids) == geometry.sizeXyz[2] == len(set(ref.sopInstanceUids))
    # our reader
    image, info = readImageSeries(tmp_path / "ct", modality="CT")
    assert np.array_equal(sitk.GetArrayFromImage(image), ct.astype(np.float32))
    assert ImageGeometry.fromImage(image).sameGridAs(geometry)
    assert info.patientId == "RRT-001" and info.frameOfReferenceUid == study.frameOfReferenceUid
    assert info.studyInstanceUid == study.studyInstanceUid and info.seriesInstanceUid == ref.seriesInstanceUid
    assert list(info.sopInstanceUids) == ref.sopInstanceUids
    # SimpleITK/GDCM as an independent reader
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct"), ref.seriesInstanceUid))
    gdcm = reader.Execute()
    assert np.allclose(gdcm.GetOrigin(), geometry.originMm, atol=1e-4)
    assert np.allclose(gdcm.GetSpacing(), geometry.spacingMm, atol=1e-4)
    assert np.allclose(gdcm.GetDirection(), geometry.direction, atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(gdcm), ct)
    # a voxel's position: LPS from the file, RAS by negating x and y (what Slicer shows)
    ds = pydicom.dcmread(sorted((tmp_path / "ct").iterdir())[3])
    lps = np.array([float(v) for v in ds.ImagePositionPatient]) + 5 * np.array(
        [float(v) for v in ds.ImageOrientationPatient[:3]]) * geometry.spacingMm[0]
    assert np.allclose(lps, geometry.indexToLps((5, 0, 3)), atol=1e-4)
    assert np.allclose(lpsToRas(lps), (geometry.ijkToRasMatrix() @ [5, 0, 3, 1])[:3], atol=1e-4)
    assert np.allclose(gdcm.TransformIndexToPhysicalPoint((5, 0, 3)), lps, atol=1e-4)
    normal = np.cross(geometry.directionMatrix[:, 0], geometry.directionMatrix[:, 1])
    assert float(ds.SliceLocation) == pytest.approx(float(lps @ normal), abs=1e-3)


def test_float_image_is_rescaled(tmp_path, study):
    values = np.linspace(-3.2, 1870.5, int(np.prod(GEOMETRY.shape))).reshape(GEOMETRY.shape)
    writeImageSeries(values, GEOMETRY, tmp_path / "mr", study, modality="MR")
    image, info = readImageSeries(tmp_path / "mr")
    assert info.modality == "MR"
    step = (values.max() - values.min()) / 65000
    assert np.abs(sitk.GetArrayFromImage(image) - values).max() <= step


@pytest.mark.parametrize("geometry", [
    GEOMETRY,
    GEOMETRY_ROTATED,
    # k axis against the row x column normal: GridFrameOffsetVector decreasing
    ImageGeometry((10, 8, 6), (2.5, 2.5, 3.0), (12.0, -40.0, 80.0),
                  tuple(np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]]).ravel())),
], ids=["axial", "rotated", "reversed"])
def test_rtdose_round_trip(tmp_path, study, geometry):
    rng = np.random.default_rng(3)
    dose = rng.random(geometry.shape) * 63.7
    uid = writeRtDose(tmp_path / "rd.dcm", dose, geometry, study, referencedPlanUid="1.2.3.4", comment="test")
    rd = readRtDose(tmp_path / "rd.dcm")
    assert rd.sopInstanceUid == uid
    assert rd.geometry.sameGridAs(geometry)
    assert np.abs(rd.doseGy - dose).max() < 1e-4
    assert rd.doseGy.dtype == np.float32
    assert (rd.doseType, rd.summationType, rd.units) == ("PHYSICAL", "PLAN", "GY")
    assert rd.referencedPlanUid == "1.2.3.4" and rd.patientId == "RRT-001"
    assert rd.frameOfReferenceUid == study.frameOfReferenceUid
    ds = pydicom.dcmread(tmp_path / "rd.dcm")
    assert float(ds.GridFrameOffsetVector[0]) == 0.0
    # SimpleITK/GDCM as an independent reader of the grid (it does not apply DoseGridScaling)
    gdcm = sitk.ReadImage(str(tmp_path / "rd.dcm"))
    if geometry is GEOMETRY:
        assert ImageGeometry.fromImage(gdcm).sameGridAs(geometry)
        assert np.abs(sitk.GetArrayFromImage(gdcm) * float(ds.DoseGridScaling) - dose).max() < 1e-4
    assert ds.BitsAllocated == 32 and ds.DoseUnits == "GY" and int(ds.NumberOfFrames) == geometry.sizeXyz[2]


def test_rtdose_eqd2_labelling(tmp_path, study):
    dose = np.full(GEOMETRY.shape, 2.0)
    longComment = "Composite EQD2 (Gy) = sum over courses of (1 - recovery) x EQD2, voxel-wise alpha/beta. " * 2
    writeRtDose(tmp_path / "eqd2.dcm", dose, GEOMETRY, study, doseType="EFFECTIVE",
                seriesDescription=eqd2SeriesDescription(3.0), comment=longComment)
    rd = readRtDose(tmp_path / "eqd2.dcm")
    assert rd.comment == longComment.strip()  # trailing padding spaces are not significant in DICOM text
    # cut at a word, not inside one: "Composite EQD2 (Gy) = sum over courses of (1 - recovery) x..."
    assert pydicom.dcmread(tmp_path / "eqd2.dcm").DoseComment == "Composite EQD2 (Gy) = sum over courses of (1 - " \
        "recovery) x..."
    writeRtDose(tmp_path / "two.dcm", dose, GEOMETRY, study, doseType="EFFECTIVE", summationType="MULTI_PLAN",
                comment="First sentence. Second sentence that goes past sixty-four characters.",
                referencedPlanUid=["1.2.3.4", "", "1.2.3.5", "1.2.3.4"])
    two = pydicom.dcmread(tmp_path / "two.dcm")
    assert two.DoseComment == "First sentence."
    assert [r.ReferencedSOPInstanceUID for r in two.ReferencedRTPlanSequence] == ["1.2.3.4", "1.2.3.5"]
    assert rd.doseType == "EFFECTIVE"
    assert "EQD2" in rd.seriesDescription and "3 Gy" in rd.seriesDescription
    assert rd.studyInstanceUid == study.studyInstanceUid


def test_rtdose_absolute_grid_frame_offsets(tmp_path, study):
    dose = np.arange(np.prod(GEOMETRY.shape), dtype=float).reshape(GEOMETRY.shape) / 100
    writeRtDose(tmp_path / "rd.dcm", dose, GEOMETRY, study)
    ds = pydicom.dcmread(tmp_path / "rd.dcm")
    z0 = float(ds.ImagePositionPatient[2])
    ds.GridFrameOffsetVector = [f"{z0 + 2.5 * k:.4f}" for k in range(GEOMETRY.sizeXyz[2])]  # absolute form
    ds.save_as(tmp_path / "abs.dcm")
    rd = readRtDose(tmp_path / "abs.dcm")
    assert rd.geometry.sameGridAs(GEOMETRY)
    assert np.abs(rd.doseGy - dose).max() < 1e-4


def test_rtdose_refusals(tmp_path, study):
    dose = np.ones(GEOMETRY.shape)
    # a FRACTION dose is one fraction group's whole delivery (DICOM PS3.3 C.8.8.3): a course of that group
    writeRtDose(tmp_path / "rd.dcm", dose, GEOMETRY, study, summationType="FRACTION")
    assert requirePlanDose(readRtDose(tmp_path / "rd.dcm")).summationType == "FRACTION"
    writeRtDose(tmp_path / "rd.dcm", dose, GEOMETRY, study, summationType="FRACTION_SESSION")  # one session
    rd = readRtDose(tmp_path / "rd.dcm")
    with pytest.raises(InputError, match="FRACTION_SESSION dose .* not the dose of the whole plan"):
        requirePlanDose(rd)
    ds = pydicom.dcmread(tmp_path / "rd.dcm")
    ds.DoseUnits = "RELATIVE"
    ds.save_as(tmp_path / "rel.dcm")
    with pytest.raises(InputError, match="RTDOSE units are RELATIVE; an absolute dose in Gy is required"):
        readRtDose(tmp_path / "rel.dcm")
    ds = pydicom.dcmread(tmp_path / "rd.dcm")
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    offsets[4] += 1.0
    ds.GridFrameOffsetVector = [f"{v:g}" for v in offsets]
    ds.save_as(tmp_path / "uneven.dcm")
    with pytest.raises(InputError, match="not equally spaced"):
        readRtDose(tmp_path / "uneven.dcm")
    with pytest.raises(InputError, match="NaN"):
        writeRtDose(tmp_path / "nan.dcm", np.full(GEOMETRY.shape, np.nan), GEOMETRY, study)


def test_nrrd_dose_is_flagged_unknown(tmp_path):
    dose = np.random.default_rng(0).random(GEOMETRY.shape).astype(np.float32) * 10
    image = sitk.GetImageFromArray(dose)
    GEOMETRY.applyTo(image)
    sitk.WriteImage(image, str(tmp_path / "dose.nrrd"))
    rd = readRtDose(tmp_path / "dose.nrrd")
    assert not rd.fromDicom and rd.doseType == "UNKNOWN" and rd.summationType == "UNKNOWN"
    assert rd.geometry.sameGridAs(GEOMETRY) and np.array_equal(rd.doseGy, dose)
    assert requirePlanDose(rd) is rd


def test_rtstruct_round_trip(tmp_path, study):
    geometry = GEOMETRY_ROTATED
    ref = writeImageSeries(ctArray(geometry), geometry, tmp_path / "ct", study)
    k, j, i = np.mgrid[:9, :20, :24]
    x = (i - 11.5) * 0.9
    y = (j - 9.5) * 1.3
    ring = (x**2 + y**2 < 64) & (x**2 + y**2 >= 9) & (k >= 2) & (k <= 6)
    blob = ((x - 6) ** 2 + (y + 6) ** 2 < 10) & (k == 4)
    masks = {"PTV": ring, "Rectum": blob, "Empty": np.zeros(geometry.shape, bool)}
    uid = writeRtStruct(tmp_path / "rs.dcm", masks, geometry, study, ref, colors={"PTV": (255, 0, 0)},
                        roiTypes={"PTV": "PTV"}, label="TEST")
    rs = readRtStruct(tmp_path / "rs.dcm")
    assert rs.sopInstanceUid == uid and rs.referencedSeriesUid == ref.seriesInstanceUid
    assert rs.frameOfReferenceUid == study.frameOfReferenceUid
    info = {r.name: r for r in rs.rois}
    assert info["PTV"].color == (255, 0, 0) and info["PTV"].type == "PTV"
    assert info["Empty"].isEmpty and not info["PTV"].isEmpty
    back = rasterizeAll(rs, geometry, study.frameOfReferenceUid)
    assert set(back) == {"PTV", "Rectum"}
    assert dice(back["PTV"], ring) > 0.98 and np.array_equal(back["PTV"], ring)
    assert np.array_equal(back["Rectum"], blob)
    # contours reference the slice they lie on
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    for c in ds.ROIContourSequence[0].ContourSequence:
        kIndex = ref.sopInstanceUids.index(c.ContourImageSequence[0].ReferencedSOPInstanceUID)
        z = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
        assert np.allclose(geometry.lpsToIndex(z)[:, 2], kIndex, atol=1e-4)
    with pytest.raises(InputError, match="frame of reference"):
        rasterizeRoi(rs, "PTV", geometry, frameOfReferenceUid="1.2.3")
    # on a finer grid, the volume is preserved (voxel-edge contours)
    fine = ImageGeometry((48, 40, 9), (0.45, 0.65, 2.5), geometry.indexToLps((-0.25, -0.25, 0)), geometry.direction)
    fineMask = rasterizeRoi(rs, "PTV", fine)
    assert fineMask.sum() * fine.voxelVolumeCc == pytest.approx(ring.sum() * geometry.voxelVolumeCc, rel=1e-9)


def test_rtplan_round_trip(tmp_path, study):
    uid = writeRtPlan(tmp_path / "rp.dcm", study, 17, 30.6, "REIRR", "20240320", referencedStructureSetUid="1.2.3",
                      targetRoiNumber=1, planName="Re-irradiation")
    plan = readRtPlan(tmp_path / "rp.dcm")
    assert plan.sopInstanceUid == uid
    assert plan.numberOfFractions == 17
    assert plan.prescriptionGy == pytest.approx(30.6)
    assert plan.dosePerFractionGy == pytest.approx(1.8)
    assert (plan.label, plan.name, plan.date) == ("REIRR", "Re-irradiation", "20240320")
    assert plan.referencedStructureSetUid == "1.2.3" and plan.patientId == "RRT-001"
    with pytest.raises(InputError):
        writeRtPlan(tmp_path / "bad.dcm", study, 0, 30.0, "X", "20240320")


def test_plan_with_two_fraction_groups_is_ambiguous(tmp_path, study):
    writeRtPlan(tmp_path / "rp.dcm", study, 25, 50.0, "P", "20240320")
    ds = pydicom.dcmread(tmp_path / "rp.dcm")
    second = pydicom.Dataset()
    second.FractionGroupNumber = 2
    second.NumberOfFractionsPlanned = 5
    second.NumberOfBeams = 0
    ds.FractionGroupSequence.append(second)
    ds.save_as(tmp_path / "two.dcm")
    plan = readRtPlan(tmp_path / "two.dcm")
    with pytest.raises(InputError, match="2 fraction groups"):
        _ = plan.numberOfFractions
    assert plan.fractionGroup(2).numberOfFractionsPlanned == 5


def test_series_choice_never_takes_rtdose_and_skips_junk(tmp_path, study, caplog):
    folder = tmp_path / "mixed"
    ref = writeImageSeries(ctArray(GEOMETRY), GEOMETRY, folder, study)
    writeRtDose(folder / "RD.dcm", np.ones(GEOMETRY.shape), GEOMETRY, study)
    (folder / "notes.bin").write_bytes(b"not a dicom file at all")
    with caplog.at_level(logging.WARNING):
        image, info = readImageSeries(folder)
    assert info.seriesInstanceUid == ref.seriesInstanceUid and info.modality == "CT"
    assert "notes.bin" in caplog.text
    # a second CT series: the choice must be explicit
    other = writeImageSeries(ctArray(GEOMETRY, 2), GEOMETRY, folder / "second", study, seriesDescription="other")
    with pytest.raises(InputError, match="2 image series"):
        readImageSeries(folder)
    _, info2 = readImageSeries(folder, seriesInstanceUid=other.seriesInstanceUid)
    assert info2.seriesDescription == "other"
    with pytest.raises(InputError, match="no MR image series"):
        readImageSeries(folder, modality="MR")


def test_missing_slice_and_gantry_tilt_refused(tmp_path, study):
    ref = writeImageSeries(ctArray(GEOMETRY), GEOMETRY, tmp_path / "gap", study)
    (tmp_path / "gap" / "CT_0004.dcm").unlink()
    with pytest.raises(InputError, match="not equally spaced") as excinfo:
        readImageSeries(tmp_path / "gap")
    assert "gap" in str(excinfo.value)
    # gantry tilt: shift each slice along y in proportion to z
    writeImageSeries(ctArray(GEOMETRY), GEOMETRY, tmp_path / "tilt", study)
    for n, path in enumerate(sorted((tmp_path / "tilt").iterdir())):
        ds = pydicom.dcmread(path)
        ipp = [float(v) for v in ds.ImagePositionPatient]
        ipp[1] += 0.5 * n
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.save_as(path)
    with pytest.raises(InputError, match="gantry tilt"):
        readImageSeries(tmp_path / "tilt")
    assert ref.folder.endswith("gap")


def test_truncated_slice_is_named(tmp_path, study, caplog):
    writeImageSeries(ctArray(GEOMETRY), GEOMETRY, tmp_path / "ct", study)
    path = tmp_path / "ct" / "CT_0002.dcm"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])
    # inside the stack: skipped, then refused as a gap, naming the file
    with pytest.raises(InputError, match="CT_0002.dcm"):
        readImageSeries(tmp_path / "ct")
    # at the end of the stack: skipped with a warning naming it, the rest is read
    path.write_bytes(data)
    last = tmp_path / "ct" / f"CT_{GEOMETRY.sizeXyz[2] - 1:04d}.dcm"
    last.write_bytes(last.read_bytes()[:-300])
    with caplog.at_level(logging.WARNING):
        image, info = readImageSeries(tmp_path / "ct")
    assert last.name in caplog.text and any(last.name in s for s in info.skippedFiles)
    assert image.GetSize()[2] == GEOMETRY.sizeXyz[2] - 1


def test_truncated_rtplan_refused(tmp_path, study):
    writeRtPlan(tmp_path / "rp.dcm", study, 5, 25.0, "P", "20240320", referencedStructureSetUid="1.2.3")
    data = (tmp_path / "rp.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-40])
    with pytest.raises(InputError, match="cut.dcm"):
        readRtPlan(tmp_path / "cut.dcm")
    with pytest.raises(InputError, match="modality is RTDOSE, not RTPLAN"):
        writeRtDose(tmp_path / "rd.dcm", np.ones(GEOMETRY.shape), GEOMETRY, study)
        readRtPlan(tmp_path / "rd.dcm")


def test_single_nifti_file(tmp_path):
    array = np.arange(np.prod(GEOMETRY.shape), dtype=np.float32).reshape(GEOMETRY.shape)
    image = sitk.GetImageFromArray(array)
    GEOMETRY_ROTATED.applyTo(image)
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    back, info = readImageSeries(tmp_path / "ct.nii.gz")
    assert ImageGeometry.fromImage(back).sameGridAs(GEOMETRY_ROTATED)
    assert np.array_equal(sitk.GetArrayFromImage(back), array)
    assert info.modality == ""


def test_course_consistency(tmp_path, study):
    ref = writeImageSeries(ctArray(GEOMETRY), GEOMETRY, tmp_path / "ct", study)
    rsUid = writeRtStruct(tmp_path / "rs.dcm", {"A": np.ones(GEOMETRY.shape, bool)}, GEOMETRY, study, ref)
    rpUid = writeRtPlan(tmp_path / "rp.dcm", study, 5, 25.0, "P", "20240320", referencedStructureSetUid=rsUid)
    writeRtDose(tmp_path / "rd.dcm", np.ones(GEOMETRY.shape), GEOMETRY, study, referencedPlanUid=rpUid)
    _, image = readImageSeries(tmp_path / "ct")
    rs, rp, rd = readRtStruct(tmp_path / "rs.dcm"), readRtPlan(tmp_path / "rp.dcm"), readRtDose(tmp_path / "rd.dcm")
    assert checkCourseConsistency(image=image, rtStruct=rs, rtPlan=rp, rtDose=rd) == []
    other = PatientStudy.new("Other^Patient", "RRT-999", "20240315")
    writeRtDose(tmp_path / "rd_other.dcm", np.ones(GEOMETRY.shape), GEOMETRY, other, referencedPlanUid=rpUid)
    wrong = readRtDose(tmp_path / "rd_other.dcm")
    with pytest.raises(InputError) as excinfo:
        checkCourseConsistency(image=image, rtPlan=rp, rtDose=wrong)
    message = str(excinfo.value)
    assert "RRT-999" in message and "rd_other.dcm" in message and str(tmp_path / "ct") in message
    findings = checkCourseConsistency(image=image, rtPlan=rp, rtDose=wrong, allowMismatch=True)
    assert len(findings) == 2  # patient and frame of reference
    shutil.copy(tmp_path / "rp.dcm", tmp_path / "rp2.dcm")
    writeRtPlan(tmp_path / "rp2.dcm", study, 5, 25.0, "P2", "20240320")
    with pytest.raises(InputError, match="references plan"):
        checkCourseConsistency(rtPlan=readRtPlan(tmp_path / "rp2.dcm"), rtDose=rd)


def test_files_are_written_as_part_10_with_pydicom_2_too(tmp_path, monkeypatch):
    """Slicer 5.10 bundled pydicom 2.4.4, whose save_as has no enforce_file_format (a TypeError: no RTDOSE, no REG
    written inside Slicer). saveFile takes the keyword of the version it runs with; pydicom 3 still accepts the
    2.x keyword, so the 2.x path is exercised here by the version string alone."""
    import warnings

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from ReirradiationDoseLib.core.dicomwrite import saveFile

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "P"
    monkeypatch.setattr(pydicom, "__version__", "2.4.4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        saveFile(ds, tmp_path / "two.dcm")
    monkeypatch.undo()
    saveFile(ds, tmp_path / "three.dcm")
    for name in ("two.dcm", "three.dcm"):
        raw = (tmp_path / name).read_bytes()
        assert raw[128:132] == b"DICM", name  # the Part 10 preamble and prefix
        assert pydicom.dcmread(tmp_path / name).PatientID == "P"
