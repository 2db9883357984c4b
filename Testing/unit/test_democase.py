"""The built-in demo case: real DICOM that reads back to the generator's own arrays, and a consistent ground truth.

One small case is generated per test module (about 5 s of CPU); the clinical size is not generated here.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import time

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.core.democase import anatomy, observers
from ReirradiationDoseLib.core.democase import dose as dosemodels
from ReirradiationDoseLib.core.democase.generate import (
    CASE_TISSUES,
    _axes,
    _imageAndMasks,
    caseGrids,
    ensureDemoCase,
    generateDemoCase,
)
from ReirradiationDoseLib.core.geometry import ImageGeometry, rasToLps
from ReirradiationDoseLib.core.progress import noProgress


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "case"
    cpu = time.process_time()
    case = generateDemoCase(folder, size="small", seed=0)
    case.cpuSeconds = time.process_time() - cpu
    return case


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _bedEqd2(doseGy, fractions, alphaBeta):
    """EQD2 via BED (an independent route to REFERENCE §1): BED = D (1 + d/(a/b)); EQD2 = BED / (1 + 2/(a/b))."""
    bed = doseGy * (1.0 + doseGy / fractions / alphaBeta)
    return bed / (1.0 + 2.0 / alphaBeta)


# ---- files and identities --------------------------------------------------------------------------------------

def test_small_case_generation_time_and_layout(demo):
    # < 10 s of work on one core (wall time on the shared 2-core machine is reported in the timings)
    assert demo.cpuSeconds < 10.0, demo.timingsS
    out = demo.outputDir
    for rel in ("case.json", "truth.json", "truth/prior_registration.nrrd", "truth/mri_registration.tfm",
                "current/RTSTRUCT.dcm", "current/RTPLAN.dcm", "current/RTDOSE.dcm", "prior/RTSTRUCT.dcm",
                "prior/RTPLAN.dcm", "prior/RTDOSE.dcm", "observers/observers.json",
                "marks/radiologist_marks.mrk.json", "marks/radiologist_marks.csv"):
        assert (out / rel).is_file(), rel
    assert len(list((out / "current" / "CT").glob("*.dcm"))) == 48
    assert len(list((out / "prior" / "CT").glob("*.dcm"))) == 48
    assert len(list((out / "MR").glob("*.dcm"))) == 36
    for r in (1, 2):
        assert sorted(p.stem for p in (out / "observers" / f"round{r}").glob("*.dcm")) == list(
            observers.OBSERVER_NAMES)


def test_every_file_reads_with_pydicom_same_patient_distinct_studies(demo):
    studies, frames = {}, {}
    files = sorted(demo.outputDir.rglob("*.dcm"))
    assert len(files) == 48 + 48 + 36 + 6 + 10
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.PatientID == "REIRR-DEMO-0001" and str(ds.PatientName) == "REIRRADIATION^DEMO"
        part = path.relative_to(demo.outputDir).parts[0]
        studies.setdefault(part if part != "observers" else "current", set()).add(ds.StudyInstanceUID)
        frames.setdefault(part if part != "observers" else "current", set()).add(getattr(
            ds, "FrameOfReferenceUID", None) or ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID)
    assert all(len(v) == 1 for v in studies.values()), studies
    assert len({next(iter(v)) for v in studies.values()}) == 3  # prior, current, MR
    assert len({next(iter(v)) for v in frames.values()}) == 3


def test_ct_and_mr_series_geometry_with_simpleitk(demo):
    for folder, geometry in (("current/CT", demo.grids.currentCt), ("prior/CT", demo.grids.priorCt),
                             ("MR", demo.grids.mri)):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(demo.outputDir / folder)))
        image = reader.Execute()
        assert ImageGeometry.fromImage(image).sameGridAs(geometry, toleranceMm=1e-3), folder
    # CT numbers: urine ~ 8 HU, air -1000, bone cortex bright (noise 12 HU)
    ct = sitk.GetArrayFromImage(sitk.ReadImage(sorted(str(p) for p in (demo.outputDir / "current/CT").glob("*.dcm"))))
    x, y, z = _axes(demo.grids.currentCt)
    sd = demo.phantom.currentSd(x, y, z)
    assert abs(ct[sd["Bladder"] < -6].mean() - 8.0) < 2.0
    assert abs(ct[sd["Body"] > 10].mean() + 1000.0) < 2.0


def test_mri_shows_tumour_bright_and_fibrosis_dark_through_the_truth_transform(demo):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(demo.outputDir / "MR")))
    mri = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    transform = sitk.ReadTransform(str(demo.outputDir / "truth" / "mri_registration.tfm"))
    ct = demo.grids.currentCt.emptyImage()
    onCt = sitk.GetArrayFromImage(sitk.Resample(mri, ct, transform, sitk.sitkLinear, -1.0))
    masks, _ = demo.structureMasks("current")
    from scipy.ndimage import binary_erosion

    gtv = binary_erosion(masks["GTV"]) & (onCt >= 0)
    fibrosis = binary_erosion(masks["Fibrosis"]) & (onCt >= 0)
    bladder = binary_erosion(masks["Bladder"], iterations=2) & (onCt >= 0)
    assert gtv.sum() > 50 and fibrosis.sum() > 50
    # T2 values of the phantom: tumour 520, fibrosis 90, urine 980 (x coil factor 0.9-1.1)
    assert 430 < np.median(onCt[gtv]) < 600
    assert np.median(onCt[fibrosis]) < 160
    assert np.median(onCt[bladder]) > 800
    # the file transform is the analytic one
    p = np.array(demo.phantom.gtvMainCentreMm)
    assert np.allclose(transform.TransformPoint(tuple(p)), demo.phantom.currentToMri(p), atol=1e-6)


# ---- RT objects read back with the team's readers ---------------------------------------------------------------

def test_rtdose_scaling_and_grid_match_the_analytic_dose(demo):
    from ReirradiationDoseLib.core.rtdose import readRtDose

    grids = demo.doseGrids()
    for course, expectedMax in (("prior", (51.0, 53.5)), ("current", (30.6, 32.0))):
        rt = readRtDose(demo.outputDir / course / "RTDOSE.dcm")
        expected, geometry = grids[course]
        assert rt.geometry.sameGridAs(geometry)
        assert not rt.geometry.sameGridAs(demo.grids.currentCt)
        assert rt.doseType == "PHYSICAL" and rt.summationType == "PLAN" and rt.units == "GY"
        assert np.max(np.abs(rt.doseGy - expected)) < 1e-6 * expected.max()
        assert expectedMax[0] < rt.maxGy < expectedMax[1]
    # the prior hot spot is ~103-105 % of 50 Gy
    assert 1.02 < grids["prior"][0].max() / 50.0 < 1.06


def test_rtplan_fractions_and_prescription(demo):
    from ReirradiationDoseLib.core.rtplan import readRtPlan

    for course, fractions, prescription in (("prior", 25, 50.0), ("current", 17, 30.6)):
        plan = readRtPlan(demo.outputDir / course / "RTPLAN.dcm")
        assert plan.fractionGroups[0].numberOfFractionsPlanned == fractions
        assert plan.doseReferences[0].targetPrescriptionDoseGy == pytest.approx(prescription)
        ds = pydicom.dcmread(demo.outputDir / course / "RTDOSE.dcm")
        assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.sopInstanceUid


def test_rtstruct_contours_rasterise_back_to_the_generator_masks(demo):
    from ReirradiationDoseLib.core.rtstruct import rasterizeAll, readRtStruct

    for frame, rel in (("current", "current/RTSTRUCT.dcm"), ("prior", "prior/RTSTRUCT.dcm")):
        expected, geometry = demo.structureMasks(frame)
        read = rasterizeAll(readRtStruct(demo.outputDir / rel), geometry)
        assert list(read) == list(expected)
        for name, mask in expected.items():
            assert np.array_equal(read[name], mask), f"{frame} {name}"
    gtv, geometry = demo.trueGtvMask()
    assert np.array_equal(gtv, demo.structureMasks("current")[0]["GTV"])
    volume = gtv.sum() * geometry.voxelVolumeCc
    assert 20.0 < volume < 35.0 and volume == pytest.approx(demo.truth["recurrence"]["gtvVolumeCcOnCt"], abs=1e-3)


# ---- case file and truth ----------------------------------------------------------------------------------------

def test_case_json_is_accepted_by_the_case_parser(demo):
    from ReirradiationDoseLib.core.casefile import parseCaseFile

    case = parseCaseFile(demo.caseFile)
    assert [c.name for c in case.courses] == ["prior", "current"]
    assert case.currentCourse.name == "current" and case.priorCourses[0].registration == "deformable"
    interval = (case.currentCourse.date - case.priorCourses[0].date).days
    assert 880 < interval < 940  # about 2.5 years
    assert case.mri.registration == "rigid" and case.targets == ("GTV", "CTV")
    assert case.tissues["SacralPlexus"].alphaBetaGy == 2.0


def test_deformation_is_smooth_invertible_and_of_the_requested_size(demo):
    d = demo.truth["deformation"]
    assert d["jacobianMin"] > 0.5 and d["jacobianMax"] < 1.5
    assert 10.0 <= d["maxNonRigidDisplacementMm"] <= 15.0
    assert 2.0 < np.linalg.norm(d["rigidShiftMm"]) < 8.0
    # the written field is the analytic one, and pulls prior-anatomy points exactly as truth.json says
    from ReirradiationDoseLib.core.transformio import readDisplacementField

    field = readDisplacementField(demo.outputDir / "truth" / "prior_registration.nrrd")
    transform = sitk.DisplacementFieldTransform(field)
    for point in demo.truth["points"]:
        mapped = transform.TransformPoint(tuple(point["lpsMm"]))
        assert np.allclose(mapped, point["priorAnatomyLpsMm"], atol=0.05), point["name"]
    # inverse map
    p = np.array([10.0, 20.0, -30.0])
    x = demo.phantom.toCurrent(p)
    assert np.allclose(np.array(demo.phantom.toPrior(*x)), p, atol=1e-6)


def test_truth_points_follow_reference_formulas_and_case_tissues(demo):
    truth = demo.truth
    interval = truth["dates"]["intervalDays"]
    assert interval / (365.25 / 12) > 12  # Nieder and Price give 50 % after a year
    byName = {p["name"]: p for p in truth["points"]}
    assert 8 <= len(byName) <= 12
    expectedTissue = {"GTV centre": ("GTV", 10.0, 0.0), "GTV extension (S3)": ("GTV", 10.0, 0.0),
                      "CTV margin (GTV + 5 mm, right)": ("CTV", 10.0, 0.0),
                      "sacral plexus L": ("SacralPlexus", 2.0, 0.5), "rectum": ("Rectum", 3.0, 0.25),
                      "bladder": ("Bladder", 3.0, 0.5), "bowel near the prior field edge": ("Bowel", 3.0, 0.25),
                      "femoral head L": ("FemoralHead_L", 3.0, 0.0), "femoral head R": ("FemoralHead_R", 3.0, 0.0),
                      "soft tissue bath (no structure)": (None, 3.0, 0.0)}
    assert set(byName) == set(expectedTissue)
    for name, (tissue, ab, r) in expectedTissue.items():
        p = byName[name]
        assert (p["tissue"], p["alphaBeta"], p["recoveryFraction"]) == (tissue, ab, r), name
        assert p["tissueStableWithin2Mm"], name
        if tissue in CASE_TISSUES:
            assert CASE_TISSUES[tissue]["alphaBeta"] == ab
        # smooth dose: a pipeline's interpolation error stays small there
        assert p["priorGradientGyPerMm"] < 0.2 and p["currentGradientGyPerMm"] < 0.2, name
        prior = _bedEqd2(p["priorPhysicalGy"], 25, ab)
        current = _bedEqd2(p["currentPhysicalGy"], 17, ab)
        assert p["priorEqd2Gy"] == pytest.approx(prior, abs=2e-4)
        assert p["currentEqd2Gy"] == pytest.approx(current, abs=2e-4)
        assert p["expectedCompositeEqd2Gy"] == pytest.approx((1 - r) * prior + current, abs=5e-4)
        noReg = _bedEqd2(p["priorPhysicalNoRegistrationGy"], 25, ab)
        assert p["expectedCompositeEqd2NoRegistrationGy"] == pytest.approx((1 - r) * noReg + current, abs=5e-4)
        # the point's prior dose is the analytic prior dose at its prior-anatomy position
        q = np.array(p["priorAnatomyLpsMm"])
        assert p["priorPhysicalGy"] == pytest.approx(float(dosemodels.priorDoseGy(demo.phantom, *q)), abs=1e-3)
        assert np.allclose(p["rasMm"], [-p["lpsMm"][0], -p["lpsMm"][1], p["lpsMm"][2]])
    # REFERENCE §2 case 6 anchor: at the GTV centre the current dose is exactly the prescription
    gtv = byName["GTV centre"]
    assert gtv["currentPhysicalGy"] == pytest.approx(30.6, abs=1e-3)
    assert gtv["currentEqd2Gy"] == pytest.approx(30.09, abs=0.01)
    # registration matters at the bowel point near the prior field edge
    bowel = byName["bowel near the prior field edge"]
    assert bowel["expectedCompositeEqd2NoRegistrationGy"] - bowel["expectedCompositeEqd2Gy"] > 2.0


def test_truth_doses_match_the_written_files_after_resampling(demo):
    """What a pipeline does (resample the RTDOSE through the truth field) reproduces the truth within 0.3 Gy."""
    from ReirradiationDoseLib.core.rtdose import readRtDose
    from ReirradiationDoseLib.core.transformio import readDisplacementField

    transform = sitk.DisplacementFieldTransform(
        readDisplacementField(demo.outputDir / "truth" / "prior_registration.nrrd"))
    prior = readRtDose(demo.outputDir / "prior" / "RTDOSE.dcm")
    current = readRtDose(demo.outputDir / "current" / "RTDOSE.dcm")

    def sample(rt, point):
        """Trilinear interpolation of the RTDOSE at an LPS point."""
        from scipy.ndimage import map_coordinates

        i, j, k = rt.geometry.lpsToIndex(point)
        return float(map_coordinates(rt.doseGy, [[k], [j], [i]], order=1)[0])

    for p in demo.truth["points"]:
        mapped = transform.TransformPoint(tuple(p["lpsMm"]))
        assert sample(prior, mapped) == pytest.approx(p["priorPhysicalGy"], abs=0.3), p["name"]
        assert sample(current, p["lpsMm"]) == pytest.approx(p["currentPhysicalGy"], abs=0.3), p["name"]


# ---- observers and marks ---------------------------------------------------------------------------------------

def test_observers_have_the_built_in_errors_and_round_two_agrees_better(demo):
    from ReirradiationDoseLib.core.rtstruct import rasterizeRoi, readRtStruct

    info = json.loads((demo.outputDir / "observers" / "observers.json").read_text())
    assert info["fibrosisObserver"] == "obs3" and info["missedExtensionObserver"] == "obs4"
    geometry = demo.grids.currentCt
    truth, _ = demo.trueGtvMask()
    x, y, z = _axes(geometry)
    lobeOnly = truth & (demo.phantom.gtvMainSd(x, y, z) > 2.0)
    assert lobeOnly.sum() > 20
    rounds = {}
    for r in (1, 2):
        rounds[r] = {name: rasterizeRoi(readRtStruct(demo.outputDir / "observers" / f"round{r}" / f"{name}.dcm"),
                                        "GTV", geometry) for name in observers.OBSERVER_NAMES}
        expected, _ = demo.observerMasks(r)
        for name in observers.OBSERVER_NAMES:
            assert np.array_equal(rounds[r][name], expected[name]), (r, name)
    r1 = rounds[1]
    # the missed-extension observer misses the lobe; the others cover most of it
    assert (r1["obs4"] & lobeOnly).sum() / lobeOnly.sum() < 0.2
    for name in ("obs1", "obs2", "obs5"):
        assert (r1[name] & lobeOnly).sum() / lobeOnly.sum() > 0.6, name
    # the fibrosis observer's volume is far larger than the true GTV's
    assert r1["obs3"].sum() > 1.8 * truth.sum()
    for name in ("obs1", "obs5"):
        assert 0.7 < _dice(r1[name], truth) < 0.97, name

    def meanPairwiseDice(masks):
        return np.mean([_dice(a, b) for a, b in itertools.combinations(masks.values(), 2)])

    assert meanPairwiseDice(rounds[2]) > meanPairwiseDice(r1) + 0.1
    assert all(_dice(m, truth) > 0.8 for m in rounds[2].values())


def test_radiologist_marks_lie_on_the_true_border_in_mri_ras(demo):
    out = demo.outputDir / "marks"
    with open(out / "radiologist_marks.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and {r["frame"] for r in rows} == {"MRI"}
    transform = demo.phantom.mriTransform().GetInverse()  # MRI -> current CT
    missed, _ = demo.observerMasks(1)
    geometry = demo.grids.currentCt
    for row in rows:
        ras = np.array([float(row["r"]), float(row["a"]), float(row["s"])])
        current = np.array(transform.TransformPoint(tuple(rasToLps(ras))))
        assert abs(float(demo.phantom.gtvSd(*current))) < 0.01, row["label"]
        assert 0.0 < float(row["confidence"]) <= 1.0
    s3 = next(r for r in rows if r["label"] == "sacrum S3 involved")
    current = np.array(transform.TransformPoint(tuple(rasToLps([float(s3["r"]), float(s3["a"]), float(s3["s"])]))))
    assert float(demo.phantom.gtvMainSd(*current)) > 5.0  # the missed-extension observer's GTV stops short
    ijk = np.rint(geometry.lpsToIndex(current - 1.5 * np.array([0, 1, 0]))).astype(int)
    assert not missed["obs4"][ijk[2], ijk[1], ijk[0]]
    mrk = json.loads((out / "radiologist_marks.mrk.json").read_text())
    types = [m["type"] for m in mrk["markups"]]
    assert types[0] == "Fiducial" and "Line" in types
    fiducials = mrk["markups"][0]
    assert fiducials["coordinateSystem"] == "RAS" and len(fiducials["controlPoints"]) == 5
    assert np.allclose(fiducials["controlPoints"][0]["position"],
                       [float(v) for v in (rows[0]["r"], rows[0]["a"], rows[0]["s"])], atol=1e-3)
    line = next(m for m in mrk["markups"] if m["type"] == "Line")
    tip, tail = (np.array(c["position"]) for c in line["controlPoints"])
    assert np.linalg.norm(tip - tail) == pytest.approx(10.0, abs=1e-3)
    tailCurrent = np.array(transform.TransformPoint(tuple(rasToLps(tail))))
    assert float(demo.phantom.gtvSd(*tailCurrent)) < 0  # the arrow's tail is inside the tumour


# ---- determinism, sizes, demo command ---------------------------------------------------------------------------

def test_generation_is_deterministic_in_the_seed():
    geometry = ImageGeometry((24, 20, 6), (8.0, 8.0, 10.0), (-90.0, -40.0, -20.0))
    phantom = anatomy.PelvisPhantom()
    a, ma = _imageAndMasks(phantom, geometry, "current", np.random.default_rng([3, 1]), 12.0, noProgress)
    b, mb = _imageAndMasks(phantom, geometry, "current", np.random.default_rng([3, 1]), 12.0, noProgress)
    c, _ = _imageAndMasks(phantom, geometry, "current", np.random.default_rng([4, 1]), 12.0, noProgress)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert observers.observerSpecs(0, 1) == observers.observerSpecs(0, 1) != observers.observerSpecs(1, 1)


def test_clinical_grids_are_clinical_and_dose_grids_coarser():
    grids = caseGrids("clinical")
    assert grids.currentCt.sizeXyz == (512, 512, 150) and grids.currentCt.spacingMm[2] == 2.0
    for dose in (grids.priorDose, grids.currentDose):
        assert min(dose.spacingMm) > max(grids.currentCt.spacingMm[:2])
        assert not dose.sameGridAs(grids.priorDose if dose is grids.currentDose else grids.currentDose)
    lo, hi = grids.currentCt.boundsLps()
    flo, fhi = grids.displacement.boundsLps()
    assert np.allclose(lo, flo) and np.allclose(hi, fhi) and max(grids.displacement.spacingMm) <= 4.0
    with pytest.raises(ValueError):
        caseGrids("huge")


def test_jacobian_positive_everywhere_on_a_wide_grid():
    phantom = anatomy.PelvisPhantom()
    axes = [np.linspace(-300.0, 300.0, 61)] * 3
    x, y, z = np.meshgrid(*axes, indexing="ij")
    jac = phantom.jacobianDeterminant(x, y, z)
    assert jac.min() > 0.5
    # the analytic Jacobian equals finite differences of the map
    p, h = np.array([20.0, -30.0, -20.0]), 1e-3
    numeric = np.column_stack([(np.array(phantom.toPrior(*(p + h * e))) - np.array(phantom.toPrior(*(p - h * e))))
                               / (2 * h) for e in np.eye(3)])
    assert float(phantom.jacobianDeterminant(*p)) == pytest.approx(np.linalg.det(numeric), abs=1e-6)


def test_demo_command_generates_once(demo, tmp_path):
    from ReirradiationDoseLib.cli import main

    output = demo.outputDir.parent  # the fixture wrote <output>/case
    stamp = os.path.getmtime(demo.caseFile)
    assert main(["demo", "--output", str(output)]) == 0
    assert os.path.getmtime(demo.caseFile) == stamp  # present: not regenerated
    assert ensureDemoCase(demo.outputDir) == demo.caseFile
