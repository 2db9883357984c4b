"""Issue 7 on the demo case: composite EQD2 at the generator's truth points, isodose lines where the dose is,
every output written and readable."""

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.cli import main
from ReirradiationDoseLib.core.casefile import parseCaseFile
from ReirradiationDoseLib.core.geometry import lpsToRas
from ReirradiationDoseLib.core.pipeline import runDoseWorkflow


def sampleAt(image, lps):
    resampled = sitk.Resample(image, [1, 1, 1], sitk.Transform(), sitk.sitkLinear, lps, [1, 1, 1])
    return resampled.GetPixel(0, 0, 0)


def caseWithRegistration(demoCase, tmp_path, registration, mri="truth/mri_registration.tfm", **extra):
    data = json.loads(demoCase.paths["case"].read_text())
    data["courses"][0]["registration"] = registration
    data["mri"]["registration"] = mri
    data.update(extra)
    path = demoCase.paths["case"].parent / f"case_{abs(hash((registration, mri, str(extra))))}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def truthRun(demoCase, tmp_path_factory):
    """`reirradiation dose` with the known deformation as the registration (what a perfect DIR gives)."""
    out = tmp_path_factory.mktemp("dose") / "out"
    case = caseWithRegistration(demoCase, out.parent, "truth/prior_registration.nrrd")
    assert main(["dose", str(case), "--output", str(out)]) == 0
    return out


def test_composite_matches_truth_points_within_2_percent(demoCase, truthRun):
    composite = sitk.ReadImage(str(truthRun / "composite_eqd2.nrrd"))
    truth = demoCase.truth["points"]
    assert len(truth) >= 8
    for point in truth:
        got = sampleAt(composite, point["lpsMm"])
        expected = point["expectedCompositeEqd2Gy"]
        assert got == pytest.approx(expected, rel=0.02, abs=0.1), point["name"]


def test_outputs_are_complete_and_consistent(truthRun):
    names = {p.name for p in truthRun.iterdir()}
    for required in ("composite_eqd2.nrrd", "course_prior_eqd2.nrrd", "course_current_eqd2.nrrd", "alpha_beta.nrrd",
                     "dvh.csv", "constraints.csv", "summary.json", "composite_eqd2.dcm", "scene.mrb", "report.html",
                     "isodose_axial.png", "isodose_coronal.png", "isodose_sagittal.png"):
        assert required in names, required
    summary = json.loads((truthRun / "summary.json").read_text())
    prior = next(c for c in summary["courses"] if c["name"] == "prior")
    assert prior["numberOfFractions"] == 25 and prior["fractionsSource"].startswith("RTPLAN")
    current = next(c for c in summary["courses"] if c["name"] == "current")
    assert current["numberOfFractions"] == 17 and current["current"]
    assert summary["composite"]["sanityBound"]["ok"]
    report = (truthRun / "report.html").read_text()
    assert "REIRRADIATION" not in report  # identity omitted by default
    # how the MRI was brought onto the CT (here the generator's true transform, 5.5° about its centre)
    assert re.search(r"<p>MRI MR: registration read from mri_registration\.tfm \(rotation 5\.5°, shift of the "
                     r"CT&#x27;s centre \d+\.\d mm\)\.</p>", report)
    from ReirradiationDoseLib.core.rtdose import readRtDose
    rtdose = readRtDose(truthRun / "composite_eqd2.dcm")
    nrrd = sitk.GetArrayFromImage(sitk.ReadImage(str(truthRun / "composite_eqd2.nrrd")))
    known = np.isfinite(nrrd)
    assert rtdose.doseType == "EFFECTIVE"
    # the maps say what they hold in their headers
    for name, words in (("composite_eqd2.nrrd", "composite EQD2"), ("course_prior_eqd2.nrrd", "course prior alone (25"),
                        ("course_current_physical.nrrd", "physical dose of course current"),
                        ("alpha_beta.nrrd", "alpha/beta")):
        header = sitk.ReadImage(str(truthRun / name))
        assert words in header.GetMetaData("quantity") and header.GetMetaData("unit") == "Gy", name
    assert np.max(np.abs(rtdose.doseGy[known] - nrrd[known])) < 1e-3


def test_isodose_lines_lie_where_the_dose_is(demoCase, truthRun, tmp_path):
    """Render the 50 Gy EQD2 line alone and check its pixels sit on the 50 Gy level of the composite."""
    from ReirradiationDoseLib.mrml.isodose import createIsodoseModels
    from ReirradiationDoseLib.mrml.nodes import volumeNodeFromArray
    from ReirradiationDoseLib.mrml.render import renderSliceViewImage
    from ReirradiationDoseLib.mrml.scene import createScene
    from ReirradiationDoseLib.core.geometry import ImageGeometry, rasToLps

    image = sitk.ReadImage(str(truthRun / "composite_eqd2.nrrd"))
    dose = np.nan_to_num(sitk.GetArrayFromImage(image), nan=0.0)
    geometry = ImageGeometry.fromImage(image)
    scene = createScene()
    background = volumeNodeFromArray(scene, np.zeros_like(dose), geometry, "black")
    colour = (1.0, 0.0, 1.0)
    models = createIsodoseModels(scene, (dose, geometry), [50.0], colors=[colour])
    gtv = np.array(demoCase.truth["points"][0]["lpsMm"])
    rgb, xyToRas = renderSliceViewImage(scene, "Axial", positionRas=lpsToRas(gtv), background=background,
                                        models=models, sizePx=(400, 400), annotation=False)
    line = (rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] > 200)
    rows, cols = np.nonzero(line)
    assert rows.size > 50
    height = rgb.shape[0]
    # inverse of render.rasToPixel: column = x, row = (height - 1) - y
    xy = np.stack([cols, (height - 1) - rows, np.zeros_like(rows), np.ones_like(rows)], axis=0).astype(float)
    lps = rasToLps((xyToRas @ xy)[:3].T)[:: max(1, rows.size // 400)]
    gradient = np.gradient(dose, *geometry.spacingMm[::-1])
    gradientImage = sitk.GetImageFromArray(np.sqrt(sum(g * g for g in gradient)).astype(np.float32))
    geometry.applyTo(gradientImage)
    values = np.array([sampleAt(image, p.tolist()) for p in lps])
    slopes = np.array([sampleAt(gradientImage, p.tolist()) for p in lps])
    keep = np.isfinite(values) & (slopes > 0.5)  # the level is well defined where the dose changes
    distanceMm = np.abs(values[keep] - 50.0) / slopes[keep]
    assert keep.sum() > 30
    # a line pixel lies within a fraction of a dose voxel (3.5 x 3.5 x 5 mm) of the 50 Gy level
    assert np.median(distanceMm) < 1.0
    assert np.percentile(distanceMm, 95) < 3.5


def test_registration_none_needs_explicit_override(demoCase, tmp_path):
    from ReirradiationDoseLib.core.errors import InputError

    case = caseWithRegistration(demoCase, tmp_path, "none")
    with pytest.raises(InputError, match="frame of reference"):
        runDoseWorkflow(parseCaseFile(case))


def test_registration_none_with_override_gives_the_no_registration_truth(demoCase, tmp_path):
    """With registration 'none' the composite at a point is EQD2 of the two RTDOSEs sampled at that same point.

    The expectation samples each written RTDOSE directly at the point (one trilinear interpolation); the pipeline
    resamples both onto the CT grid first. The analytic truth is not used here: at the bowel point (prior field
    penumbra) linear interpolation of the 4 mm TPS grid itself differs from the analytic dose by 0.36 Gy EQD2.
    """
    from ReirradiationDoseLib.core.geometry import imageFromArray
    from ReirradiationDoseLib.core.rtdose import readRtDose

    case = caseWithRegistration(demoCase, tmp_path, "none", mri="none", allowFrameOfReferenceMismatch=True)
    result = runDoseWorkflow(parseCaseFile(case))
    assert any("allowFrameOfReferenceMismatch" in w for w in result.warnings)
    composite = imageFromArray(np.nan_to_num(result.compositeEqd2Gy, nan=-1.0), result.referenceGeometry)
    doses = {name: readRtDose(demoCase.paths[f"{name}Dose"]) for name in ("prior", "current")}
    doseImages = {name: imageFromArray(d.doseGy, d.geometry) for name, d in doses.items()}
    for point in demoCase.truth["points"]:
        ab, recovered = point["alphaBeta"], point["recoveryFraction"]
        prior = sampleAt(doseImages["prior"], point["lpsMm"])
        current = sampleAt(doseImages["current"], point["lpsMm"])
        expected = ((1 - recovered) * prior * (prior / 25 + ab) / (2 + ab)
                    + current * (current / 17 + ab) / (2 + ab))
        assert sampleAt(composite, point["lpsMm"]) == pytest.approx(expected, rel=0.01, abs=0.05), point["name"]
        # and it is the analytic no-registration truth within 2 % wherever the dose is smooth on the TPS grid
        if point["priorGradientGyPerMm"] < 0.05:
            assert expected == pytest.approx(point["expectedCompositeEqd2NoRegistrationGy"], rel=0.02)


@pytest.mark.slow
def test_deformable_registration_meets_truth_within_2_percent(demoCase, tmp_path):
    """Issue 7: the demo case as shipped (rigid + structure-guided deformable registration of the prior CT) gives
    the composite EQD2 at every named truth point within 2 %, without folding, and the same maps when run again.
    Measured: all within 1.07 % (the bowel point near the prior field's edge; through the true field that point is
    1.48 % off, the TPS grid's interpolation in the penumbra, the others within 0.3 %), Jacobian minimum 0.47."""
    out = tmp_path / "out"
    assert main(["dose", str(demoCase.paths["case"]), "--output", str(out), "--no-pictures"]) == 0
    composite = sitk.ReadImage(str(out / "composite_eqd2.nrrd"))
    for point in demoCase.truth["points"]:
        assert sampleAt(composite, point["lpsMm"]) == pytest.approx(point["expectedCompositeEqd2Gy"], rel=0.015), \
            point["name"]
    summary = json.loads((out / "summary.json").read_text())
    registration = summary["courses"][0]["registration"]
    quality = registration["quality"]
    assert quality["foldingVoxelCount"] == 0 and quality["jacobianMin"] > 0.4
    # the demo's numbers the README quotes (measured, deterministic), so that a change cannot leave it stale (a review)
    assert summary["composite"]["maxGy"] == pytest.approx(81.76, abs=0.01)
    limiting = summary["currentCourseScaling"]["rows"][0]
    assert limiting["constraint"].startswith("Bowel D2cc < 90 Gy") and limiting["scaling"] == pytest.approx(1.343,
                                                                                                             abs=5e-4)
    assert limiting["unknownPercent"] == pytest.approx(21.8, abs=0.05)
    rectum = next(r for r in summary["dvh"] if r["structure"] == "Rectum" and r["dose"] == "composite EQD2")
    assert rectum["d2ccGy"] == pytest.approx(78.46, abs=0.01)
    plexusDvh = next(r for r in summary["dvh"] if r["structure"] == "SacralPlexus" and r["dose"] == "composite EQD2")
    assert plexusDvh["d0_03ccGy"] == pytest.approx(80.67, abs=0.01) and plexusDvh["alphaBetaGy"] == 2.0
    # the recovery each composite DVH credits is in its row (a review: only the report's caption said so)
    assert plexusDvh["recoveryCredited"] == "'prior' 50 % (nieder-doi); none where a target owns a voxel"
    bladder = {r["dose"]: r for r in summary["dvh"] if r["structure"] == "Bladder"}
    assert bladder["composite EQD2"]["recoveryCredited"].startswith("'prior' 50 % (price)")
    assert bladder["prior EQD2"]["recoveryCredited"] == "none (the course alone)"
    assert next(r for r in summary["dvh"] if r["structure"] == "GTV")["recoveryCredited"] == "none"
    plexus = {(r["metric"], r["course"]): r for r in summary["constraints"]
              if r["structure"] == "SacralPlexus" and r["metric"] == "V50Gy[%]"}
    assert plexus[("V50Gy[%]", "prior")]["value"] == pytest.approx(90.4, abs=0.05)
    assert plexus[("V50Gy[%]", "prior")]["status"] == "fail" and plexus[("V50Gy[%]", "current")]["value"] == 0.0
    # the structures that exerted no force are recorded and stated in the report
    assert registration["withoutCounterpart"] == {"structures": ["GTV", "Fibrosis"], "marginMm": 5.0}
    assert registration["courseWithoutCounterpart"] == {"structures": ["GTV_primary"], "marginMm": 5.0}
    # every organ of the shipped case guides the registration: its contour check is not independent, and says so
    assert registration["contourCheck"]["independent"] == []
    warnings = json.loads((out / "summary.json").read_text())["warnings"]
    assert any(w.startswith("course 'prior': every structure of the contour check (Rectum, Bladder") and
               "nothing here checks the registration independently" in w for w in warnings), warnings
    report = (out / "report.html").read_text()
    assert "Course &#x27;prior&#x27;: every structure measured here guided its registration" in report
    assert ("deformable (without counterpart, + 5 mm: GTV, Fibrosis; in the course&#x27;s CT only: GTV_primary)"
            in report)
    assert re.search(r"<p>MRI MR: rigid registration, Mattes mutual information over the MRI&#x27;s voxels; "
                     r"rotation 5\.[3-7]°, shift of the CT&#x27;s centre \d+\.\d mm\.</p>", report)
    # the same case gives the same doses again, to the bit: ITK's registration metric runs on one thread
    # (registration._reproducible), and the demons stage does not depend on the thread count
    again = tmp_path / "again"
    assert main(["dose", str(demoCase.paths["case"]), "--output", str(again), "--no-pictures"]) == 0
    for name in ("composite_eqd2.nrrd", "course_prior_eqd2.nrrd", "course_prior_physical.nrrd"):
        first, second = (sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name))) for folder in (out, again))
        assert np.nanmax(first) > 40.0 and np.array_equal(first, second, equal_nan=True), name
    repeated = json.loads((again / "summary.json").read_text())["courses"][0]["registration"]

    def withoutClock(summary):
        return {key: withoutClock(value) if isinstance(value, dict) else value
                for key, value in summary.items() if key != "elapsedS"}

    assert withoutClock(repeated) == withoutClock(registration)


def test_report_shows_the_registration_check(truthRun):
    """REFERENCE §6, quality shown: the prior course's registration (here the true field, read from a file) is
    measured in the report (Jacobian and displacement in the body) and shown as checkerboards of the current CT and
    the prior CT through it, axial and coronal, rendered by Slicer's slice view under their own heading."""
    from ReirradiationDoseLib.mrml.render import readPng

    report = (truthRun / "report.html").read_text()
    assert re.search(r"<p>Course &#x27;prior&#x27; \(file registration\): Jacobian in the body 0\.\d\d to 1\.\d\d, "
                     r"no folding; displacement in the body mean \d+\.\d / p95 \d+\.\d / max \d+\.\d mm\.</p>",
                     report)
    assert "<h2>Registration check</h2>" in report
    section = report[report.index("<h2>Registration check</h2>"):]
    assert section.count("alt='Registration check, course &#x27;prior&#x27;") == 2
    assert "alt='Registration check" not in report[:report.index("<h2>Registration check</h2>")]
    for view in ("axial", "coronal"):
        picture = readPng(truthRun / f"registration_prior_{view}.png")[..., :3].astype(float).mean(axis=-1)
        assert picture.shape == (640, 640) and picture.std() > 20, view  # anatomy, not a blank view


def test_report_states_the_recovery_applied(truthRun):
    """The report's course table names every structure whose prior EQD2 was discounted (ESTRO-EORTC: state the
    recovery assumption beside cumulative doses): the demo discounts rectum and bowel 25 %, the sacral plexus
    (Nieder–Doi) and bladder (Price) 50 % after 913 days."""
    report = (truthRun / "report.html").read_text()
    for text in ("Rectum: constant 25 %", "Bowel: constant 25 %", "SacralPlexus: nieder-doi 50 %",
                 "Bladder: price 50 %", "(interval 913 days = 29.9 calendar months from the date of the prior course)"):
        assert text in report, text


def test_course_registration_is_exported_as_a_dicom_reg(demoCase, truthRun):
    """``registration_prior.dcm``: a Deformable Spatial Registration from the current CT's frame to the prior's that
    reads back to the transform the run used (``registration_prior.h5``) within 0.1 mm inside the current CT."""
    import pydicom

    from ReirradiationDoseLib.core import dicomreg, transformio

    path = truthRun / "registration_prior.dcm"
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    assert dataset.Modality == "REG" and dataset.SOPClassUID == dicomreg.DEFORMABLE_SPATIAL_REGISTRATION_STORAGE
    ct = pydicom.dcmread(next(iter(sorted((demoCase.outputDir / "current" / "CT").iterdir()))),
                         stop_before_pixels=True)
    priorDose = pydicom.dcmread(demoCase.outputDir / "prior" / "RTDOSE.dcm", stop_before_pixels=True)
    assert dataset.FrameOfReferenceUID == ct.FrameOfReferenceUID and dataset.PatientID == ct.PatientID
    read = dicomreg.readDicomRegistration(path, ct.FrameOfReferenceUID, priorDose.FrameOfReferenceUID)
    used = transformio.readTransform(truthRun / "registration_prior.h5")
    reference = sitk.ReadImage(str(truthRun / "composite_eqd2.nrrd"))
    rng = np.random.default_rng(5)
    size = np.array(reference.GetSize())
    worst = 0.0
    for index in rng.uniform(0, size - 1, (300, 3)):
        point = reference.TransformContinuousIndexToPhysicalPoint([float(v) for v in index])
        worst = max(worst, float(np.linalg.norm(np.subtract(read.transform.TransformPoint(point),
                                                            used.TransformPoint(point)))))
    assert worst < 0.1, worst
    moved = np.linalg.norm(np.subtract(used.TransformPoint(point), point))
    assert moved > 1.0  # the registration is not the identity


def _contourRows(registration):
    return {row["structure"]: row for row in registration["contourCheck"]["structures"]}


def test_contour_check_with_the_true_field(demoCase, truthRun):
    """AAPM TG-132's contour check: every organ delineated on both of the demo's CTs (the prior's RTSTRUCT, drawn on
    the prior anatomy by the generator) carried through the generator's own field lands on today's, within the
    tolerance (the 5 mm slice: the largest voxel dimension); none guided it (a registration read from a file). The
    report shows the table under its heading."""
    summary = json.loads((truthRun / "summary.json").read_text())
    check = summary["courses"][0]["registration"]["contourCheck"]
    assert check["toleranceMm"] == 5.0 and check["diceGuide"] == [0.8, 0.9]
    rows = _contourRows(summary["courses"][0]["registration"])
    # the targets, the body and the tissue without counterpart are not compared
    assert set(rows) == {"Rectum", "Bladder", "Bowel", "SacralPlexus", "FemoralHead_L", "FemoralHead_R", "Sacrum",
                         "PelvicBones"}
    for name, row in rows.items():
        assert not row["guided"] and row["withinTolerance"] and row["comparedPercent"] == 100.0, name
        assert row["dice"] > (0.75 if name == "SacralPlexus" else 0.88) and row["mdaMm"] < 2.0, (name, row)
    assert rows["Bladder"]["dice"] > 0.95 and rows["Bladder"]["referenceCc"] == pytest.approx(195.0, abs=1.0)
    import csv
    with (truthRun / "contour_check.csv").open(encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [r["structure"] for r in table] == [r["structure"] for r in check["structures"]]
    bladder = next(r for r in table if r["structure"] == "Bladder")
    assert bladder["course"] == "prior" and float(bladder["dice"]) == pytest.approx(rows["Bladder"]["dice"])
    assert bladder["guided"] == "False" and bladder["toleranceMm"] == "5.0"
    report = (truthRun / "report.html").read_text()
    section = report[report.index("<h3>Contour check of the registration</h3>"):]
    assert "AAPM TG-132 asks for a mean distance to agreement (MDA) within the image&#x27;s voxel size (here 5 mm" \
        in section
    assert re.search(r"<tr class=\"pass\"><td>prior</td><td>Bladder</td><td>no</td><td>0\.9\d</td>", section)


def test_contour_check_shows_what_no_registration_leaves(demoCase, tmp_path):
    """Without registration (the prior CT taken as it lies) the organs miss: the bladder carried over lies 5.5 mm
    from today's on average (the demo moves it 6-13 mm), beyond the 5 mm tolerance, and is warned."""
    case = caseWithRegistration(demoCase, tmp_path, "none", mri="none", allowFrameOfReferenceMismatch=True)
    result = runDoseWorkflow(parseCaseFile(case))
    rows = _contourRows(result.courses[0].registration)
    assert rows["Bladder"]["mdaMm"] > 5.0 and rows["Bladder"]["withinTolerance"] is False
    assert rows["Bladder"]["dice"] < 0.85 and rows["SacralPlexus"]["dice"] < 0.5
    bladder = [w for w in result.warnings if "structure 'Bladder'" in w]
    assert len(bladder) == 1 and "lies 5." in bladder[0] and "AAPM TG-132" in bladder[0]
    # the carried organs go into the scene beside today's (kept cropped to their boxes in the result): the same
    # masks, so the same Dice as the check's
    from ReirradiationDoseLib.mrml.dosescene import addDoseResultToScene
    from ReirradiationDoseLib.mrml.nodes import masksFromSegmentationNode
    from ReirradiationDoseLib.mrml.scene import closeScene, createScene

    start, cropped = result.courses[0].carriedStructures["Bladder"]
    assert cropped.shape != result.masks["Bladder"].shape and cropped.any()
    scene = createScene()
    try:
        nodes = addDoseResultToScene(scene, result)
        carried = nodes["carried:prior"]
        assert carried.GetName() == "prior structures carried by its registration"
        assert carried.GetSegmentation().GetNumberOfSegments() == len(rows)
        masks = masksFromSegmentationNode(carried, result.referenceGeometry)
        today = result.masks["Bladder"]
        assert 2 * np.count_nonzero(masks["Bladder"] & today) / (masks["Bladder"].sum() + today.sum()) \
            == pytest.approx(rows["Bladder"]["dice"], abs=1e-9)
        assert masks["Bladder"].sum() == cropped.sum()
        assert tuple(carried.GetSegmentation().GetSegment("Bladder").GetColor()) == pytest.approx(
            result.structureColors["Bladder"][:3])
    finally:
        closeScene(scene)


@pytest.mark.slow
def test_validation_structures_stay_out_of_the_guidance_and_are_checked(demoCase, tmp_path):
    """'validationStructures': the rectum and the sacral plexus do not guide the deformable registration, so their
    contour check is independent; they still land within 1.5 mm of today's on average (measured 1.0 and 0.9 mm),
    while the other organs guided it."""
    data = json.loads(demoCase.paths["case"].read_text())
    data["courses"][0]["validationStructures"] = ["Rectum", "SacralPlexus", "Prostate"]
    path = demoCase.paths["case"].parent / "case_validation.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert main(["dose", str(path), "--output", str(out), "--no-pictures"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    registration = summary["courses"][0]["registration"]
    assert "Rectum" not in registration["deformable"]["parameters"]["structureGuided"]
    assert "Bladder" in registration["deformable"]["parameters"]["structureGuided"]
    rows = _contourRows(registration)
    assert {n for n, r in rows.items() if not r["guided"]} == {"Rectum", "SacralPlexus"}
    for name in ("Rectum", "SacralPlexus"):
        assert rows[name]["mdaMm"] < 1.5 and rows[name]["withinTolerance"], rows[name]
    assert rows["Rectum"]["dice"] > 0.88
    assert sorted(registration["contourCheck"]["independent"]) == ["Rectum", "SacralPlexus"]
    assert not any("every structure of the contour check" in w for w in summary["warnings"])
    assert any("validation structure 'Prostate' is not delineated on both CTs" in w for w in summary["warnings"])


def test_the_mri_registration_starts_from_a_given_transform(demoCase, tmp_path):
    """Case-file 'initialTransform' of the MRI: the rigid registration starts from it (recorded, stated in the report)
    and still refines it: started from the generator's own transform it stays within 1 mm of it. A file that is not
    a transform is refused naming the MRI's initialTransform and the file."""
    from ReirradiationDoseLib.core.errors import InputError

    truthMri = demoCase.paths["mriRegistration"]
    case = caseWithRegistration(demoCase, tmp_path, "rigid", mri="rigid")
    data = json.loads(case.read_text())
    data["mri"]["initialTransform"] = "truth/mri_registration.tfm"
    sitk.WriteTransform(sitk.TranslationTransform(3, (1.0, -1.0, 0.5)), str(case.parent / "start.tfm"))
    data["courses"][0]["initialTransform"] = "start.tfm"  # a course's registration starts there too
    case.write_text(json.dumps(data))
    result = runDoseWorkflow(parseCaseFile(case))
    from ReirradiationDoseLib.core.dosereport import _registrationText
    prior = result.courses[0].registration
    assert prior["initialTransform"] == str((case.parent / "start.tfm").resolve())
    assert prior["rigid"]["parameters"]["initialization"] == "given"
    assert _registrationText(prior) == "rigid (started from start.tfm)"
    registration = result.mri["registration"]
    assert registration["initialTransform"] == str(truthMri.resolve())
    assert registration["parameters"]["initialization"] == "given"
    truth = sitk.ReadTransform(str(truthMri))
    low, high = result.referenceGeometry.boundsLps()
    for f in (0.3, 0.5, 0.7):
        point = (low + f * (high - low)).tolist()
        assert np.linalg.norm(np.subtract(result.mri["transform"].TransformPoint(point),
                                          truth.TransformPoint(point))) < 1.0
    from ReirradiationDoseLib.core.dosereport import _mriText
    assert ", started from mri_registration.tfm; rotation 5." in _mriText(result.mri, result.referenceGeometry)
    data["mri"]["initialTransform"] = "truth/not_a_transform.txt"
    (case.parent / "truth" / "not_a_transform.txt").write_text("hello")
    case.write_text(json.dumps(data))
    with pytest.raises(InputError, match="not_a_transform.txt: MRI initialTransform: the transform could not be "
                                         "read"):
        runDoseWorkflow(parseCaseFile(case))
