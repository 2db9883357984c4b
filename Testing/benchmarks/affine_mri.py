"""Rigid against affine MRI -> CT registration on the demo case, with and without a known pixel-spacing error.

Usage::

    PYTHONPATH=ReirradiationDose .venv/bin/python Testing/benchmarks/affine_mri.py [--case DIR]

Without ``--case`` the small demo case is generated into a temporary folder. The demo MRI is registered onto the
current CT as it is and with its header's pixel spacing scaled about its centre by +3 / -3 / 0 % and -2 / +1 / +3 %
(the anatomy then appears scaled by those factors: the true map is the scaling after the generator's rigid MRI
transform). For each: p95 and maximum distance (mm) between the registration's and the true mapping of the current
CT's body voxels (every 50th), the principal scales found (``core.registration.affineDecomposition``), the time, and
whether the affine refinement was kept (it must match the images better than its rigid start by the same metric on
the same voxels, ``core.registration.compareLinear``).

Each line says over whose voxels the metric was computed (``MRI``: the default ``metricDomain="auto"`` picks the
MRI, whose box is a fifth of the CT's; ``CT``: ``metricDomain="fixed"``). Ours: ``registerRigid`` (what the case
file's ``"rigid"`` does) and ``registerAffine`` (``"affine"``). Peers in the same run: both with the metric over the
CT's voxels, and ``registerAffine`` with the rigid step's own settings (three levels, 2 mm first steps, 25 % random
samples) and with two levels but 2 mm first steps and 25 % random samples, which the shipped defaults (two levels,
0.5 mm first steps, every voxel up to 200 000 per level) replace.
"""

from __future__ import annotations

import argparse
import atexit
import sys
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ReirradiationDoseLib.core import dicomimage, segio
from ReirradiationDoseLib.core import registration as reg
from ReirradiationDoseLib.core.geometry import ImageGeometry

SPACING_ERRORS = {"no spacing error": (1.0, 1.0, 1.0), "+3 / -3 / 0 %": (1.03, 0.97, 1.0),
                  "-2 / +1 / +3 %": (0.98, 1.01, 1.03)}


def withSpacingError(mri: sitk.Image, factors, truth: sitk.Transform):
    """The MRI with its pixel spacing scaled about its centre, and the true current-CT -> that-MRI map."""
    factors = np.asarray(factors, dtype=float)
    centre = np.array(mri.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in mri.GetSize()]))
    out = sitk.Image(mri)
    out.SetSpacing((np.array(mri.GetSpacing()) * factors).tolist())
    direction = np.array(mri.GetDirection()).reshape(3, 3)
    out.SetOrigin((centre + direction @ np.diag(factors) @ np.linalg.inv(direction)
                   @ (np.array(mri.GetOrigin()) - centre)).tolist())
    scaling = sitk.AffineTransform(3)
    scaling.SetCenter(centre.tolist())
    scaling.SetMatrix((direction @ np.diag(factors) @ np.linalg.inv(direction)).ravel().tolist())
    return out, sitk.CompositeTransform([scaling, truth])


def demoMriCase(argv, description: str, prefix: str):
    """The ``--case`` folder of the command line (default: the small demo case generated into a temporary folder),
    its current CT, MRI, current structures and true CT -> MRI transform."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--case", type=Path, help="an existing demo case folder (default: generate one)")
    caseDir = parser.parse_args(argv).case
    if caseDir is None:
        from ReirradiationDoseLib.core.democase.generate import generateDemoCase
        scratch = Path(tempfile.mkdtemp(prefix=prefix))
        atexit.register(shutil.rmtree, scratch, True)  # the generated case is not left in the temporary folder
        caseDir = scratch / "case"
        generateDemoCase(caseDir)
    fixed = sitk.Cast(dicomimage.readImageSeries(caseDir / "current" / "CT")[0], sitk.sitkFloat32)
    mri = sitk.Cast(dicomimage.readImageSeries(caseDir / "MR")[0], sitk.sitkFloat32)
    masks, _, _ = segio.readSegmentationWithGeometry(caseDir / "current" / "RTSTRUCT.dcm",
                                                     ImageGeometry.fromImage(fixed))
    truth = sitk.ReadTransform(str(caseDir / "truth" / "mri_registration.tfm"))
    return caseDir, fixed, mri, masks, truth


def main(argv=None) -> int:
    caseDir, fixed, mri, masks, truth = demoMriCase(argv, __doc__.splitlines()[0], "affine-bench-")
    points = [fixed.TransformIndexToPhysicalPoint([int(i) for i in p[::-1]])
              for p in np.argwhere(masks["Body"])[::50]]

    def distances(transform, true):
        return np.array([np.linalg.norm(np.subtract(transform.TransformPoint(p), true.TransformPoint(p)))
                         for p in points])

    methods = {
        "rigid": lambda moving: reg.registerRigid(fixed, moving, initialization="moments"),
        "rigid, metric over the CT": lambda moving: reg.registerRigid(fixed, moving, initialization="moments",
                                                                       metricDomain="fixed"),
        "affine": lambda moving: reg.registerAffine(fixed, moving, initialization="moments"),
        "affine, metric over the CT": lambda moving: reg.registerAffine(fixed, moving, initialization="moments",
                                                                         metricDomain="fixed"),
        "affine, rigid's settings": lambda moving: reg.registerAffine(
            fixed, moving, initialization="moments", shrinkFactors=(4, 2, 1), smoothingSigmasMm=(2.0, 1.0, 0.0),
            learningRateMm=2.0, samplingPercentage=0.25),
        "affine, 2 levels, 2 mm steps, 25 %": lambda moving: reg.registerAffine(
            fixed, moving, initialization="moments", learningRateMm=2.0, samplingPercentage=0.25),
    }
    print(f"case: {caseDir}  CT {fixed.GetSize()} @ {fixed.GetSpacing()} mm, MRI {mri.GetSize()} @ "
          f"{tuple(round(s, 3) for s in mri.GetSpacing())} mm; {len(points)} body points")
    for label, factors in SPACING_ERRORS.items():
        moving, true = withSpacingError(mri, factors, truth)
        for name, run in methods.items():
            t0 = time.perf_counter()
            result = run(moving)
            elapsed = time.perf_counter() - t0
            d = distances(result.transform, true)
            scales = reg.affineDecomposition(result.transform)["scales"]
            kept = result.parameters.get("affineKept")
            verdict = "" if kept is None else ("  affine kept" if kept else "  rigid kept (metric {affine:.4f} vs "
                                               "{rigid:.4f})".format(**result.parameters["metricComparison"]))
            domain = "MRI" if result.parameters.get("metricDomain") == "moving" else "CT "
            print(f"{label:17s} {name:35s} {domain} p95 {np.percentile(d, 95):7.2f} mm  max {d.max():7.2f} mm  scales "
                  f"{', '.join(f'{s:.4f}' for s in scales)}  {elapsed:5.1f} s{verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
