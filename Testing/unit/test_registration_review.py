"""Registration quality shown, not assumed (REFERENCE §6), for every registration the dose command uses: a supplied
deformable field is checked like our own (Jacobian and displacement in the body), a field folding inside the body
is warned naming the course and the file, and each registered course's CT is kept on the reference grid for the
report's checkerboard."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.core import casefile, pipeline
from ReirradiationDoseLib.core.geometry import ImageGeometry


def _case(demoCase, registration: str, name: str):
    data = json.loads(demoCase.paths["case"].read_text())
    data["courses"][0]["registration"] = registration
    data["mri"]["registration"] = "none"
    path = demoCase.paths["case"].parent / f"case_review_{name}.json"
    path.write_text(json.dumps(data))
    return casefile.parseCaseFile(path)


def _fieldFile(demoCase, name: str, centreLps, amplitude: float, sigmaMm: float = 8.0):
    """A displacement field on the current CT's grid: ``u_x = -amplitude (x - c_x) exp(-|x - c|^2 / 2 sigma^2)``,
    whose Jacobian at ``c`` is ``1 - amplitude`` (folding for ``amplitude > 1``)."""
    from ReirradiationDoseLib.core import dicomimage

    reference, _ = dicomimage.readImageSeries(demoCase.paths["case"].parent / "current" / "CT")
    points = ImageGeometry.fromImage(reference).voxelCentresLps()
    offset = points - np.asarray(centreLps, dtype=float)
    bump = np.exp(-np.sum(offset ** 2, axis=-1) / (2 * sigmaMm ** 2))
    u = np.zeros(points.shape, dtype=np.float64)
    u[..., 0] = -amplitude * offset[..., 0] * bump
    field = sitk.GetImageFromArray(u, isVector=True)
    field.CopyInformation(reference)
    path = demoCase.paths["case"].parent / f"field_{name}.nrrd"
    sitk.WriteImage(field, str(path))
    return path


def _gtvPoint(demoCase):
    """An LPS point deep inside the body: the GTV's truth point."""
    return next(p["lpsMm"] for p in demoCase.truth["points"] if "GTV" in p["name"])


def test_a_supplied_field_has_its_quality_computed(demoCase):
    """The generator's true field, given as the course's registration file, is measured like our own: no folding,
    its Jacobian range in the body within the analytic one (truth.json, over the whole grid) and its displacement
    statistics in the body those of the field file itself (the small case's field is on the CT's grid)."""
    inputs = pipeline.loadCaseInputs(_case(demoCase, "truth/prior_registration.nrrd", "truth"))
    quality = inputs.courses[0].registration["quality"]
    truth = demoCase.truth["deformation"]
    assert quality["foldingVoxelCountInBody"] == 0 and quality["region"] == "body"
    assert truth["jacobianMin"] - 0.05 <= quality["jacobianMinInBody"] < 1.0 < quality["jacobianMaxInBody"] \
        <= truth["jacobianMax"] + 0.05
    field = sitk.GetArrayFromImage(sitk.ReadImage(str(demoCase.paths["case"].parent / "truth"
                                                     / "prior_registration.nrrd")))
    magnitude = np.linalg.norm(field.astype(np.float64), axis=-1)[inputs.masks["Body"]]
    assert field.shape[:3] == inputs.masks["Body"].shape
    assert quality["displacementMaxMm"] == pytest.approx(magnitude.max(), abs=1e-3)
    assert quality["displacementP95Mm"] == pytest.approx(np.percentile(magnitude, 95), abs=1e-3)
    assert quality["displacementMeanMm"] == pytest.approx(magnitude.mean(), abs=1e-3)
    assert not any("folds" in w for w in inputs.warnings)
    # the current course needs no registration and has no quality
    assert "quality" not in inputs.courses[1].registration


def test_the_prior_ct_is_kept_on_the_reference_grid_for_review(demoCase):
    """The review image is the prior CT pulled onto the current CT through the course's registration (int16 HU):
    through the true field it matches the current CT in the body far better than without it."""
    inputs = pipeline.loadCaseInputs(_case(demoCase, "truth/prior_registration.nrrd", "truth"))
    review = inputs.courses[0].reviewImage
    current = sitk.GetArrayFromImage(inputs.referenceImage).astype(np.float64)
    body = inputs.masks["Body"]
    assert review.dtype == np.int16 and review.shape == current.shape
    from ReirradiationDoseLib.core import dicomimage
    prior, _ = dicomimage.readImageSeries(demoCase.paths["case"].parent / "prior" / "CT")
    unregistered = sitk.GetArrayFromImage(sitk.Resample(prior, inputs.referenceImage, sitk.Transform(),
                                                        sitk.sitkLinear, -1000.0, sitk.sitkFloat32))
    through = np.mean(np.abs(review[body] - current[body]))
    without = np.mean(np.abs(unregistered[body] - current[body]))
    assert through < 0.5 * without, (through, without)
    assert inputs.courses[1].reviewImage is None  # the current course is on the reference CT


def test_a_supplied_field_folding_in_the_body_is_warned(demoCase):
    """A field folding at the recurrence (Jacobian 1 - 2.5 there) is warned naming the course and the file; the
    same fold in the air beside the body is counted but not warned."""
    centre = np.asarray(_gtvPoint(demoCase), dtype=float)
    folding = _fieldFile(demoCase, "folding", centre, 2.5)
    inputs = pipeline.loadCaseInputs(_case(demoCase, str(folding), "folding"))
    quality = inputs.courses[0].registration["quality"]
    assert quality["foldingVoxelCountInBody"] > 0 and quality["jacobianMinInBody"] < 0
    warned = [w for w in inputs.warnings if "folds" in w]
    assert len(warned) == 1 and "course 'prior'" in warned[0] and folding.name in warned[0], inputs.warnings
    assert f"folds at {quality['foldingVoxelCountInBody']} voxels inside the body" in warned[0]

    reference = inputs.referenceImage
    body = inputs.masks["Body"]
    # a point in the air beside the body, halfway between its side and the edge of the grid
    x = ImageGeometry.fromImage(reference).voxelCentresLps()[..., 0]
    edge = x.max()
    outside = np.array([0.5 * (x[body].max() + edge), centre[1], centre[2]])
    assert edge - x[body].max() > 40.0  # room for the bump (sigma 5 mm) in the air
    airFold = _fieldFile(demoCase, "air", outside, 2.5, sigmaMm=5.0)
    inputs = pipeline.loadCaseInputs(_case(demoCase, str(airFold), "air"))
    quality = inputs.courses[0].registration["quality"]
    assert quality["foldingVoxelCount"] > 0 and quality["foldingVoxelCountInBody"] == 0
    assert not any("folds" in w for w in inputs.warnings), inputs.warnings
