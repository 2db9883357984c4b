"""Rigid MRI -> CT registration when the MRI covers only a slab of what the planning CT covers.

Usage::

    PYTHONPATH=ReirradiationDose .venv/bin/python Testing/benchmarks/mri_field_of_view.py [--case DIR]

Without ``--case`` the small demo case is generated into a temporary folder. The demo MRI is cut to slabs along its
slice axis (all of it, each half, the middle half, the first and the last third), and resampled as a sagittal
acquisition (:func:`sagittal`); each is registered rigidly onto the current CT. Reported for each: p95 and maximum
distance (mm) between the registration's and the true (generator's) mapping of the current CT's body voxels that
the image covers (every 20th), and the time.

Ours: ``registerRigid`` as the pipeline calls it for an MRI (centres of mass, ``metricDomain="auto"``: the metric over
the MRI's voxels when its box is much smaller than the CT's). Peers in the same run: the metric over the CT's voxels
(``metricDomain="fixed"``, what ITK does by default and what this project did before) from the centres of mass and
from the image centres.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import SimpleITK as sitk

from affine_mri import demoMriCase

from ReirradiationDoseLib.core import registration as reg


def slabs(count: int) -> dict:
    """Named slice ranges of an image with ``count`` slices."""
    return {"whole MRI": (0, count), "first half": (0, count // 2), "second half": (count // 2, count),
            "middle half": (count // 4, 3 * count // 4), "first third": (0, count // 3),
            "last third": (2 * count // 3, count)}


def sagittal(mri: sitk.Image, size=(200, 160, 50), spacing=(1.2, 1.2, 4.0)) -> sitk.Image:
    """The MRI resampled as a sagittal acquisition about its centre (rows along LPS +y, columns along -z, slices
    along -x: 24 x 19 x 20 cm at 1.2 x 1.2 x 4 mm), as a sagittal T2 series is stored."""
    direction = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: i, j, k directions
    centre = np.array(mri.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in mri.GetSize()]))
    reference = sitk.Image(list(size), sitk.sitkFloat32)
    reference.SetSpacing(list(spacing))
    reference.SetDirection(direction.ravel().tolist())
    reference.SetOrigin((centre - direction @ (np.array(spacing) * (np.array(size) - 1) / 2.0)).tolist())
    return sitk.Resample(mri, reference, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, 0.0)


def main(argv=None) -> int:
    caseDir, fixed, mri, masks, truth = demoMriCase(argv, __doc__.splitlines()[0], "mri-fov-bench-")
    print(f"case: {caseDir}  CT {fixed.GetSize()} @ {tuple(round(s, 3) for s in fixed.GetSpacing())} mm, MRI "
          f"{mri.GetSize()} @ {tuple(round(s, 3) for s in mri.GetSpacing())} mm")
    methods = {
        "ours (metric over the MRI)": lambda moving: reg.registerRigid(fixed, moving, initialization="moments"),
        "metric over the CT, centres of mass": lambda moving: reg.registerRigid(
            fixed, moving, initialization="moments", metricDomain="fixed"),
        "metric over the CT, image centres": lambda moving: reg.registerRigid(
            fixed, moving, initialization="geometry", metricDomain="fixed"),
    }
    worst = {name: 0.0 for name in methods}
    cases = {label: (mri[:, :, lo:hi], f"slices {lo:3d}-{hi:3d} ({(hi - lo) * mri.GetSpacing()[2]:5.0f} mm)")
             for label, (lo, hi) in slabs(mri.GetSize()[2]).items()}
    cases["sagittal"] = (sagittal(mri), "200 x 160 x 50 @ 1.2 x 1.2 x 4 mm")
    for label, (slab, description) in cases.items():
        covered = sitk.Resample(sitk.Image(slab.GetSize(), sitk.sitkUInt8) + 1, fixed, truth,
                                sitk.sitkNearestNeighbor, 0)
        inside = (sitk.GetArrayFromImage(covered) > 0) & masks["Body"]
        points = [fixed.TransformIndexToPhysicalPoint([int(i) for i in p[::-1]]) for p in np.argwhere(inside)[::20]]
        for name, run in methods.items():
            t0 = time.perf_counter()
            result = run(slab)
            elapsed = time.perf_counter() - t0
            d = np.array([np.linalg.norm(np.subtract(result.transform.TransformPoint(p), truth.TransformPoint(p)))
                          for p in points])
            p95 = float(np.percentile(d, 95))
            worst[name] = max(worst[name], p95)
            print(f"{label:12s} {description:34s} {name:38s} "
                  f"[{result.parameters['metricDomain']:6s}] p95 {p95:7.2f} mm  max {d.max():7.2f} mm  "
                  f"{elapsed:5.1f} s", flush=True)
    print("worst p95: " + ", ".join(f"{name} {value:.2f} mm" for name, value in worst.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
