"""DICOM-RT and SlicerRT segmentation readers on real, externally produced data (../shared/data).

External references used:
- the Eclipse RTPLAN itself (23 fx, 46 Gy) and the structure volumes in the Eclipse and CERR DVH tables;
- dicompyler-core 0.5.6 (structure volumes on the dose grid, dose maximum), computed in its own environment by
  Testing/benchmarks/dicompyler_reference.py and stored in Testing/data/dicompyler_reference.json;
- SlicerRT's segment-comparison baseline: Rectum vs Rectum expanded 5 mm, Dice 0.542084;
- pydicom's own RT test files (relative dose, big endian, RLE, truncated plan).
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from reirradiation_testing import sharedDataPath

from ReirradiationDoseLib.core.dicomimage import readImageSeries
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.rtdose import readRtDose, requirePlanDose
from ReirradiationDoseLib.core.rtplan import readRtPlan
from ReirradiationDoseLib.core.rtstruct import rasterizeAll, rasterizeAllWithReport, rasterizeRoi, readRtStruct
from ReirradiationDoseLib.core.segio import readSegmentation, readSegmentationWithGeometry

pytestmark = pytest.mark.data

REFERENCE_JSON = Path(__file__).with_name("dicompyler_reference.json")
ECLIPSE = "eclipse-prostate-rtdicom"
ECLIPSE_PLAN = "RP.1.2.246.352.71.5.2088656855.377401.20110920153647.dcm"
ECLIPSE_STRUCT = "RS.1.2.246.352.71.4.2088656855.2404649.20110920153449.dcm"


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def tableVolumes(path: Path) -> dict[str, float]:
    """Structure volumes (cc) from the header of a SlicerRT-format DVH table ("X_DvhArray Value (% of V cc)")."""
    header = path.read_text().splitlines()[0]
    return {name: float(v) for name, v in re.findall(r"(\w+)_DvhArray Value \(% of ([\d.]+) cc\)", header)}


# ---- Eclipse prostate ---------------------------------------------------------------------------------------------

def test_eclipse_rtplan_fractions_and_prescription():
    plan = readRtPlan(sharedDataPath(ECLIPSE, ECLIPSE_PLAN))
    assert plan.label == "PROS"
    assert plan.numberOfFractions == 23
    assert plan.prescriptionGy == pytest.approx(46.0)
    assert plan.dosePerFractionGy == pytest.approx(2.0)
    assert plan.fractionGroups[0].numberOfBeams == 5
    assert plan.referencedStructureSetUid == "1.2.246.352.71.4.2088656855.2404649.20110920153449"


def test_eclipse_rtstruct_rois_and_volumes_against_eclipse_and_cerr():
    rs = readRtStruct(sharedDataPath(ECLIPSE, ECLIPSE_STRUCT))
    assert len(rs.rois) == 16
    counts = {r.name: r.numberOfContours for r in rs.rois if not r.isEmpty}
    assert counts == {"BODY": 92, "Bladder": 21, "Femoral Head Lt": 19, "Femoral Head RT": 18, "PTV": 20,
                      "Rectum": 40}
    assert {r.name for r in rs.rois if r.isEmpty} == {"CTV", "PROS", "Vessels - left", "Vessels - right", "X1", "X2",
                                                    "X3", "XApprox", "optBladder", "optRectum"}
    assert {r.name: r.type for r in rs.rois}["BODY"] == "EXTERNAL"
    # on the CT grid SlicerRT stored with the segmentation (512 x 512 x 92, 0.98 mm)
    _, ctGrid, _ = readSegmentationWithGeometry(sharedDataPath("slicerrt-testing", "EclipseProstate_Rectum.seg.vtm"))
    masks, report = rasterizeAllWithReport(rs, ctGrid)
    assert set(report.emptyRois) == {r.name for r in rs.rois if r.isEmpty}
    ours = {name.replace(" ", ""): m.sum() * ctGrid.voxelVolumeCc for name, m in masks.items()}
    eclipse = tableVolumes(sharedDataPath("slicerrt-testing", "EclipseProstate_DvhTable_Eclipse.csv"))
    cerr = tableVolumes(sharedDataPath("slicerrt-testing", "EclipseProstate_DvhTable_CERR.csv"))
    for name, volume in eclipse.items():
        if volume > 10:
            assert ours[name] == pytest.approx(volume, rel=0.02), name
    for name, volume in cerr.items():
        assert ours[name] == pytest.approx(volume, rel=0.005), name


def test_eclipse_rtstruct_matches_slicerrt_planar_contours():
    """The RTSTRUCT and SlicerRT's .seg.vtm hold the same contours (RAS in the .vtp): same masks on the dose grid."""
    dose = readRtDose(sharedDataPath("slicerrt-testing", "EclipseProstate_Dose.nrrd"))
    fromDicom = rasterizeAll(readRtStruct(sharedDataPath(ECLIPSE, ECLIPSE_STRUCT)), dose.geometry)
    fromVtm = readSegmentation(sharedDataPath("slicerrt-testing", "EclipseProstate_Structures.seg.vtm"),
                               dose.geometry)
    assert set(fromVtm) == set(fromDicom)
    for name in fromDicom:
        assert dice(fromDicom[name], fromVtm[name]) > 0.99, name


def test_slicerrt_rectum_vs_expanded_dice_baseline():
    expanded, grid, _ = readSegmentationWithGeometry(
        sharedDataPath("slicerrt-testing", "EclipseProstate_Expanded_5_5_5_Rectum.seg.nrrd"))  # legacy 4D format
    expandedMask = next(iter(expanded.values()))
    rectum = readSegmentation(sharedDataPath("slicerrt-testing", "EclipseProstate_Rectum.seg.vtm"), grid)["Rectum"]
    assert not np.any(rectum & ~expandedMask)  # the expansion contains the structure
    assert dice(rectum, expandedMask) == pytest.approx(0.542084, abs=0.002)  # SlicerRT baseline


def test_eclipse_ent_contours_off_plane_fill_every_slice():
    dose = readRtDose(sharedDataPath("slicerrt-testing", "EclipseEnt_Dose.nrrd"))
    assert not dose.fromDicom and dose.summationType == "UNKNOWN"
    assert dose.maxGy == pytest.approx(62.6, abs=0.05)
    masks = readSegmentation(sharedDataPath("slicerrt-testing", "EclipseEnt_Structures.seg.vtm"), dose.geometry)
    assert len(masks) == 16
    for name in ("BODY", "BRAIN", "PTV1", "GTV"):
        slices = np.nonzero(masks[name].any(axis=(1, 2)))[0]
        assert len(slices) == slices.max() - slices.min() + 1, f"{name} has empty slices inside its extent"
    # the SlicerRT reference grid of the same contours (1.07 mm) gives the same volumes within 2 %
    fine = readSegmentationWithGeometry(sharedDataPath("slicerrt-testing", "EclipseEnt_Structures.seg.vtm"))
    for name in ("BODY", "BRAIN", "PTV1", "CTV"):
        coarse = masks[name].sum() * dose.geometry.voxelVolumeCc
        assert coarse == pytest.approx(fine[0][name].sum() * fine[1].voxelVolumeCc, rel=0.02), name


# ---- dicompyler breast boost --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dicompylerReference():
    if not REFERENCE_JSON.exists():
        pytest.skip("Testing/data/dicompyler_reference.json missing: run Testing/benchmarks/dicompyler_reference.py")
    return json.loads(REFERENCE_JSON.read_text())


def test_dicompyler_plan_and_dose(dicompylerReference):
    folder = sharedDataPath("dicompyler-breast-boost")
    plan = readRtPlan(folder / "rtplan.dcm")
    assert (plan.label, plan.numberOfFractions) == ("B1", 7)
    assert plan.prescriptionGy == pytest.approx(14.0) == dicompylerReference["plan"]["rxdose"] / 100
    dose = requirePlanDose(readRtDose(folder / "rtdose.dcm"))
    assert dose.geometry.sizeXyz == (194, 129, 98)
    assert dose.geometry.spacingMm == pytest.approx((2.5, 2.5, 3.0))
    assert (dose.units, dose.doseType, dose.summationType) == ("GY", "PHYSICAL", "PLAN")
    assert dose.maxGy == pytest.approx(14.68, abs=0.005)
    assert dose.maxGy == pytest.approx(dicompylerReference["doseMaxGy"], abs=1e-4)
    assert dose.referencedPlanUid == plan.sopInstanceUid


def test_dicompyler_structure_volumes(dicompylerReference):
    folder = sharedDataPath("dicompyler-breast-boost")
    dose = readRtDose(folder / "rtdose.dcm")
    rs = readRtStruct(folder / "rtss.dcm")
    assert len(rs.rois) == 10
    masks, report = rasterizeAllWithReport(rs, dose.geometry, dose.frameOfReferenceUid)
    assert report.emptyRois == ("Areola",)
    checked = 0
    for name, ref in dicompylerReference["structures"].items():
        if ref.get("empty"):
            assert name not in masks
            continue
        volume = masks[name].sum() * dose.geometry.voxelVolumeCc
        # dicompyler-core's own volumes (its DVH, dicompyler_reference.py): equal to 0.01 cc, small ones too (a
        # review: within 2 % above 10 cc only was checked, where the README claims 0.01 cc)
        assert volume == pytest.approx(ref["dvhVolumeCc"], abs=0.01), name
        checked += 1
    assert checked == 9  # BODY, Borders, Breast, Heart, Lt Lung, Nodes, Scar, Tumor Bed, Tumor Bed Block
    with pytest.raises(InputError, match="frame of reference"):
        rasterizeRoi(rs, "Heart", dose.geometry, frameOfReferenceUid="1.2.3.4")


def test_dicompyler_single_ct_slice():
    image, info = readImageSeries(sharedDataPath("dicompyler-breast-boost", "ct.0.dcm"))
    assert image.GetSize() == (512, 512, 1)
    assert info.modality == "CT" and info.patientId == "123456"


# ---- pydicom RT test files ----------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom's test files have non-conformant UIDs
@pytest.mark.parametrize("name", ["rtdose.dcm", "rtdose_1frame.dcm", "rtdose_expb.dcm", "rtdose_expb_1frame.dcm",
                                  "rtdose_rle.dcm", "rtdose_rle_1frame.dcm"])
def test_pydicom_relative_doses_refused_and_decoded(name):
    path = sharedDataPath("pydicom-rt", name)
    with pytest.raises(InputError, match="RTDOSE units are RELATIVE; an absolute dose in Gy is required") as excinfo:
        readRtDose(path)
    assert name in str(excinfo.value)
    # decoding itself works (big endian, RLE): the values equal the plain little-endian file
    reference = readRtDose(sharedDataPath("pydicom-rt", "rtdose.dcm"), allowRelative=True)
    dose = readRtDose(path, allowRelative=True)
    assert dose.units == "RELATIVE"
    nFrames = dose.doseGy.shape[0]
    assert np.array_equal(dose.doseGy, reference.doseGy[:nFrames])
    assert reference.doseGy.shape == (15, 10, 10) and reference.maxGy == pytest.approx(1.254, abs=1e-3)
    assert dose.geometry.spacingMm[:2] == (10.0, 10.0)
    if nFrames > 1:
        assert dose.geometry.sameGridAs(reference.geometry)
    with pytest.raises(InputError, match="BEAM dose"):
        requirePlanDose(dose)


def test_pydicom_rtplan_and_truncated_plan():
    plan = readRtPlan(sharedDataPath("pydicom-rt", "rtplan.dcm"))
    assert plan.numberOfFractions == 30
    assert plan.prescriptionGy == pytest.approx(30.826203)
    with pytest.raises(InputError, match="truncated") as excinfo:
        readRtPlan(sharedDataPath("pydicom-rt", "rtplan_truncated.dcm"))
    assert "rtplan_truncated.dcm" in str(excinfo.value)


def test_pydicom_rtstruct_point_rois_and_ct():
    rs = readRtStruct(sharedDataPath("pydicom-rt", "rtstruct.dcm"))
    assert [(r.name, r.type, r.isPoint) for r in rs.rois] == [("patient", "EXTERNAL", False),
                                                              ("Isocenter 1", "ISOCENTER", True),
                                                              ("Isocenter 2", "ISOCENTER", True)]
    image, info = readImageSeries(sharedDataPath("pydicom-rt", "CT_small.dcm"))
    assert image.GetSize() == (128, 128, 1) and info.modality == "CT"
    # the structure set does not belong to CT_small (different frames of reference): refused by name
    with pytest.raises(InputError, match="frame of reference"):
        rasterizeAll(rs, ImageGeometry.fromImage(image), info.frameOfReferenceUid)
    with pytest.raises(InputError, match="point"):
        rasterizeRoi(rs, "Isocenter 1", ImageGeometry.fromImage(image))
    with pytest.raises(InputError, match="modality is RTSTRUCT, not RTPLAN"):
        readRtPlan(sharedDataPath("pydicom-rt", "rtstruct.dcm"))


def test_tiny_patient_segmentation_on_its_ct():
    ct = sitk.ReadImage(str(sharedDataPath("slicerrt-testing", "TinyPatientCT.nrrd")))
    geometry = ImageGeometry.fromImage(ct)
    masks = readSegmentation(sharedDataPath("slicerrt-testing", "TinyPatientStructureSet.seg.vtm"), geometry)
    assert set(masks) == {"Body_Contour", "Tumor_Contour"}
    assert masks["Body_Contour"].sum() > masks["Tumor_Contour"].sum() > 0
    assert not np.any(masks["Tumor_Contour"] & ~masks["Body_Contour"])


# ---- a real CT through our writers (spleen CT, NIfTI with a flipped direction) ----------------------------------

def test_real_ct_and_label_through_dicom_writers(tmp_path):
    from ReirradiationDoseLib.core.dicomwrite import PatientStudy, writeImageSeries, writeRtStruct

    folder = sharedDataPath("spleen-ct", "ct_scan")
    ct, _ = readImageSeries(folder / "sub-spleen2" / "ct" / "sub-spleen2_ct.nii.gz")
    label = sitk.ReadImage(str(folder / "derivatives" / "labels" / "sub-spleen2" / "ct" /
                               "sub-spleen2_ct_seg-manual.nii.gz"))
    geometry = ImageGeometry.fromImage(ct)
    assert np.allclose(geometry.directionMatrix, np.diag([-1.0, -1.0, 1.0]))  # rows run towards -x, columns -y
    hu = np.rint(sitk.GetArrayFromImage(ct)).astype(np.int16)
    spleen = sitk.GetArrayFromImage(label) > 0
    study = PatientStudy.new("Spleen^Ct", "MSD-spleen2", "20190101")
    ref = writeImageSeries(hu, geometry, tmp_path / "ct", study)
    writeRtStruct(tmp_path / "rs.dcm", {"Spleen": spleen}, geometry, study, ref, roiTypes={"Spleen": "ORGAN"})
    image, info = readImageSeries(tmp_path / "ct", modality="CT")
    assert ImageGeometry.fromImage(image).sameGridAs(geometry)
    assert np.array_equal(sitk.GetArrayFromImage(image), hu)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    assert ImageGeometry.fromImage(reader.Execute()).sameGridAs(geometry)
    back = rasterizeRoi(readRtStruct(tmp_path / "rs.dcm"), "Spleen", geometry, info.frameOfReferenceUid)
    assert dice(back, spleen) > 0.98
    assert np.array_equal(back, spleen)


def test_dvh_names_an_roi_without_contours_and_matches_names_as_the_dose_command(capsys):
    """A newcomer's review on the Eclipse prostate plan: `dvh --structure CTV` said "not found" for an ROI the
    RTSTRUCT lists without contours, and `--structure ptv` needed the file's case."""
    from ReirradiationDoseLib.cli import main

    dose = sharedDataPath("slicerrt-testing", "EclipseProstate_Dose.nrrd")
    (structures,) = sorted(sharedDataPath("eclipse-prostate-rtdicom").glob("RS*.dcm"))
    assert main(["dvh", "--dose", str(dose), "--segmentation", str(structures), "--structure", "ctv"]) == 2
    assert "structure ctv not found: the RTSTRUCT's ROI 'CTV' has no contours; present: BODY, Bladder" in \
        capsys.readouterr().err
    assert main(["dvh", "--dose", str(dose), "--segmentation", str(structures), "--structure", "ptv"]) == 0
    (row,) = capsys.readouterr().out.splitlines()[1:]
    assert row.startswith("PTV,49.0234,44.4877,45.8800,46.2920,")
