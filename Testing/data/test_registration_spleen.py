"""Known-deformation recovery on a real CT (MSD spleen crop, 164x166x26, 0.8x0.8x5 mm).

The real CT is the moving image; the fixed image is the same CT pulled through a known smooth analytic deformation
(12 / 10 mm in-plane, 3 mm cranio-caudal: the 5 mm slices cannot resolve more), so the registration must recover
the analytic field. Errors are evaluated inside the body (> -400 HU) where the fixed voxel maps inside the CT.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from reirradiation_testing import sharedDataPath

from ReirradiationDoseLib.core import regquality
from ReirradiationDoseLib.core.dosemapping import mapDose
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.registration import displacementFieldTransform, registerDeformable, resampleMoving


@pytest.fixture(scope="module")
def spleenCase():
    path = sharedDataPath("spleen-ct", "ct_scan", "sub-spleen2", "ct", "sub-spleen2_ct.nii.gz")
    moving = sitk.ReadImage(str(path), sitk.sitkFloat32)
    truth = regquality.analyticDeformationField(moving, (12.0, 10.0, 3.0), 160.0)
    truthTransform = displacementFieldTransform(truth)
    fixed = resampleMoving(moving, moving, truthTransform)
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    inside = sitk.GetArrayFromImage(sitk.Resample(ones, moving, truthTransform, sitk.sitkNearestNeighbor, 0)) > 0
    evaluate = inside & (sitk.GetArrayFromImage(fixed) > -400)
    result = registerDeformable(fixed, moving)
    return moving, fixed, truth, evaluate, result


def test_real_ct_known_deformation_is_recovered(spleenCase):
    moving, fixed, truth, evaluate, result = spleenCase
    assert moving.GetSize() == (164, 166, 26)
    error = np.linalg.norm(sitk.GetArrayFromImage(result.displacementField) - sitk.GetArrayFromImage(truth), axis=-1)
    truthMagnitude = np.linalg.norm(sitk.GetArrayFromImage(truth), axis=-1)
    assert np.percentile(truthMagnitude[evaluate], 95) > 10.0
    # measured (SimpleITK 2.5.3, default settings, 2 threads): p95 0.91 and 1.18 mm in two runs (ITK's threaded
    # reductions make the demons stop at slightly different iterations), median 0.32-0.37 mm, Jacobian min >= 0.33
    assert np.percentile(error[evaluate], 95) < 1.5
    assert np.median(error[evaluate]) < 0.6
    jacobian, _ = regquality.jacobianDeterminant(result.displacementField)
    assert jacobian.min() > 0


def test_dose_mapped_through_the_recovered_field_matches_the_truth(spleenCase):
    """A smooth dose on the real CT grid mapped through the recovered vs the true transform: < 0.5 Gy apart."""
    moving, fixed, truth, evaluate, result = spleenCase
    geometry = ImageGeometry.fromImage(moving)
    p = geometry.voxelCentresLps()
    centre = p.reshape(-1, 3).mean(axis=0)
    dose = (60.0 * np.exp(-np.sum(((p - centre) / np.array([40.0, 40.0, 30.0])) ** 2, axis=-1))).astype(np.float32)
    recovered = mapDose(dose, geometry, result.transform, geometry)
    expected = mapDose(dose, geometry, displacementFieldTransform(truth), geometry)
    both = evaluate & recovered.coveredMask & expected.coveredMask
    difference = np.abs(recovered.doseGy - expected.doseGy)[both]
    assert np.percentile(difference, 95) < 0.5  # dose gradient <= 1.3 Gy/mm here
