"""Deformable registration on a crop of the demo patient (core/democase) around the recurrence and the sacrum.

The current CT holds tissue without a counterpart in the prior CT (the recurrence and its lobe growing into S3,
replacing bone): demons then compresses the prior anatomy there. With the field regularised by less than a voxel
(2.5 mm on a 3.5 x 3.5 x 5 mm grid) the field nearly folded (Jacobian 0.0005 on the full demo case); the Gaussian
regularisation is now never below ``registration._MIN_SIGMA_VOXELS`` voxels. The truth is the phantom's analytic
field ``u(x)`` (current point x <-> prior-anatomy point x + u(x)), the same field as truth/prior_registration.nrrd.

The images are built here from the phantom's public methods (not by the case generator), with the bowel texture
evaluated at anatomical (prior-frame) coordinates so that every intensity feature moves with ``u``. The full demo
case is measured by ``Testing/benchmarks/registration_demo.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.core import regquality, registration
from ReirradiationDoseLib.core.democase.anatomy import PelvisPhantom
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.registration import registerDeformable

SPACING_MM = (3.5, 3.5, 5.0)  # the small demo case's CT spacing
CROP_LO_MM = np.array([-80.0, 10.0, -45.0])  # LPS box around the GTV (6, 63, -5), its S3 lobe and the sacrum
CROP_SIZE = (46, 36, 20)


def _grid(originMm) -> ImageGeometry:
    return ImageGeometry(sizeXyz=CROP_SIZE, spacingMm=SPACING_MM, originMm=tuple(float(v) for v in originMm),
                         direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _coordinates(geometry: ImageGeometry):
    p = geometry.voxelCentresLps().astype(np.float32)
    return p[..., 0], p[..., 1], p[..., 2]


def _ct(phantom: PelvisPhantom, geometry: ImageGeometry, frame: str, seed: int):
    x, y, z = _coordinates(geometry)
    sd = phantom.priorSd(x, y, z) if frame == "prior" else phantom.currentSd(x, y, z)
    masks = phantom.masks(sd, frame)
    material = (x, y, z) if frame == "prior" else phantom.toPrior(x, y, z)
    hu = phantom.ctHu(sd, masks, *(np.broadcast_to(v, x.shape) for v in material))
    hu = hu + np.random.default_rng(seed).standard_normal(hu.shape).astype(np.float32) * 12.0
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    geometry.applyTo(image)
    return image, masks


def buildDemoCrop():
    """(fixed, moving, body image, body array, truth u [k, j, i, 3], current masks, initial translation)."""
    phantom = PelvisPhantom()
    fixedGeometry = _grid(CROP_LO_MM)
    fixed, currentMasks = _ct(phantom, fixedGeometry, "current", 1)
    # the prior CT is sampled on the same lattice moved by the setup shift (as the generator does)
    shift = np.asarray(phantom.rigidShiftMm, dtype=float)
    moving, _ = _ct(phantom, _grid(CROP_LO_MM + shift), "prior", 2)
    x, y, z = _coordinates(fixedGeometry)
    truth = np.stack(phantom.displacementMm(x, y, z), axis=-1).astype(np.float64)
    body = currentMasks["Body"]
    bodyImage = sitk.GetImageFromArray(body.astype(np.uint8))
    fixedGeometry.applyTo(bodyImage)
    initial = sitk.TranslationTransform(3, [float(v) for v in shift])  # the rigid stage's job, given here
    return fixed, moving, bodyImage, body, truth, currentMasks, initial


@pytest.fixture(scope="module")
def demoCrop():
    return buildDemoCrop()


def _run(demoCrop):
    fixed, moving, bodyImage, body, truth, masks, initial = demoCrop
    result = registerDeformable(fixed, moving, initialTransform=initial, fixedMask=bodyImage)
    error = np.linalg.norm(sitk.GetArrayFromImage(result.displacementField) - truth, axis=-1)
    jacobian, _ = regquality.jacobianDeterminant(result.displacementField)
    return result, error, jacobian


def test_demo_crop_deformation_is_recovered_without_near_folding(demoCrop):
    fixed, moving, bodyImage, body, truth, masks, initial = demoCrop
    nonRigid = np.linalg.norm(truth - np.asarray(initial.GetOffset()), axis=-1)
    assert np.percentile(nonRigid[body], 95) > 4.0  # a real non-rigid part to recover
    assert masks["GTV"].any() and masks["Sacrum"].any()
    result, error, jacobian = _run(demoCrop)
    # measured (SimpleITK 2.5.3): Jacobian min 0.20, error p95 5.9 mm / median 1.9 mm in the body (the crop's
    # faces are unconstrained: the full case does better, see the benchmark); with the former sub-voxel
    # regularisation (0.5 voxel floor): Jacobian min 0.005, p95 12.5 mm / median 3.6 mm
    assert jacobian[body].min() > 0.1
    assert np.percentile(error[body], 95) < 8.0
    assert np.median(error[body]) < 2.5
    assert result.parameters["minimumSmoothingSigmaVoxels"] == registration._MIN_SIGMA_VOXELS


def test_pipeline_pairs_organs_delineated_on_both_cts_but_not_the_body_or_targets(tmp_path):
    """``pipeline._pairedStructureMasks``: names matched case-insensitively; body, targets and empty masks left out."""
    from types import SimpleNamespace

    from ReirradiationDoseLib.core import pipeline, segio
    from ReirradiationDoseLib.core.casefile import CourseSpec

    reference = ImageGeometry(sizeXyz=(12, 10, 6), spacingMm=(3.0, 3.0, 4.0), originMm=(-18.0, -15.0, -12.0))
    course = ImageGeometry(sizeXyz=(14, 12, 8), spacingMm=(2.5, 2.5, 3.0), originMm=(-16.0, -14.0, -10.0))

    def box(geometry: ImageGeometry, lo, hi):
        p = geometry.voxelCentresLps()
        return np.all((p >= np.asarray(lo)) & (p <= np.asarray(hi)), axis=-1)

    masks = {"Body": box(reference, (-15, -12, -9), (15, 12, 9)), "GTV": box(reference, (-3, -3, -3), (3, 3, 3)),
             "Rectum": box(reference, (-6, 0, -6), (0, 6, 6)), "bladder": box(reference, (0, -9, -6), (6, -3, 6)),
             "SacralPlexus": np.zeros(reference.shape, bool)}
    courseMasks = {"BODY": box(course, (-15, -12, -9), (15, 12, 9)), "GTV": box(course, (-2, -2, -2), (2, 2, 2)),
                   "RECTUM": box(course, (-5, 0, -6), (1, 6, 6)), "Bladder": box(course, (0, -8, -6), (6, -2, 6)),
                   "SacralPlexus": box(course, (5, 5, 0), (9, 9, 3)), "Bowel": box(course, (-9, -9, 0), (-3, -3, 6))}
    segio.writeSegNrrd(tmp_path / "prior.seg.nrrd", courseMasks, course)
    referenceImage = sitk.GetImageFromArray(np.zeros(reference.shape, np.float32))
    reference.applyTo(referenceImage)
    courseImage = sitk.GetImageFromArray(np.zeros(course.shape, np.float32))
    course.applyTo(courseImage)
    spec = CourseSpec(name="prior", dose=tmp_path / "unused.dcm", structures=tmp_path / "prior.seg.nrrd",
                      registration="deformable")
    pairs = pipeline._pairedStructureMasks(SimpleNamespace(targets=("GTV", "CTV")), spec, masks, referenceImage,
                                           courseImage)
    assert sorted(pairs) == ["Rectum", "bladder"]
    fixedMask, movingMask = pairs["Rectum"]
    assert fixedMask.GetSize() == reference.sizeXyz and movingMask.GetSize() == course.sizeXyz
    assert np.array_equal(sitk.GetArrayFromImage(movingMask) > 0, courseMasks["RECTUM"])
    assert pipeline._pairedStructureMasks(SimpleNamespace(targets=()), CourseSpec(name="p", dose=spec.dose), masks,
                                          referenceImage, courseImage) is None  # no course structures
