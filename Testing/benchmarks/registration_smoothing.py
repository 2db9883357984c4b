"""How strongly should the demons field be smoothed? The regularisation measured on a phantom and on real CT.

Usage::

    .venv/bin/python Testing/benchmarks/registration_smoothing.py [--case DIR] [--sigmas 2.5,4,6]

For each Gaussian field smoothing ``smoothingSigmaMm`` (``registerDeformable``; the shipped default is the first
value) the p95 displacement error in the body against a known deformation, on

1. the pelvis phantom 256x256x100 (1.5x1.5x3 mm) and
2. the real CT of ``../shared/data/spleen-ct`` (skipped with a message when absent),

each warped by ``regquality.analyticDeformationField`` at three wavelengths (the longest as in
``registration_vs_elastix.py``, then 80 and 50 mm with amplitudes scaled to keep ``2 pi A / L`` near 0.45: more
local deformations), and

3. the demo case's prior CT against the generator's field, registered as the pipeline does (rigid, then structure-
   guided demons with the tissue without counterpart exerting no force; ``registration_demo.demoRegistrationCase``).
   Without ``--case`` the small demo case is generated into a temporary folder; pass a clinical-size one to
   measure that.

The peer of each smoothing is the shipped default in the same run (ratio printed). What the numbers say is in the
README (Registration row): the demo phantom's uniform tissue rewards strong smoothing that real CT punishes.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "ReirradiationDose"))

from registration_demo import demoRegistrationCase  # noqa: E402
from registration_vs_elastix import ROOT, makeCase, pelvisPhantom, runOurs  # noqa: E402

from ReirradiationDoseLib.core import registration as reg  # noqa: E402

SPLEEN = ROOT.parent / "shared" / "data" / "spleen-ct" / "ct_scan" / "sub-spleen2" / "ct" / "sub-spleen2_ct.nii.gz"


def _knownDeformationRows(name, moving, body, cases, sigmas) -> None:
    for amplitude, wavelength in cases:
        fixed, fixedBody, truth, evaluate = makeCase(moving, body, amplitude, wavelength)
        p95 = {}
        for sigma in sigmas:
            # the real CT runs without a body outline, as in registration_vs_elastix.py (its -400 HU threshold
            # leaves the lungs outside the body, where the field extrapolated into them folds)
            stats = runOurs(fixed, moving, fixedBody if body is not None else None, truth, evaluate,
                            smoothingSigmaMm=sigma)
            p95[sigma] = stats["p95Mm"]
            print(f"{name}, wavelength {wavelength:.0f} mm, amplitude {amplitude} mm, sigma {sigma} mm: "
                  f"{stats['elapsedS']:.1f} s, median {stats['medianMm']:.2f} / p95 {stats['p95Mm']:.2f} / max "
                  f"{stats['maxMm']:.2f} mm, Jacobian min {stats['jacobianMin']:.2f}", flush=True)
        _ratios(p95)


def _ratios(p95: dict) -> None:
    default, *others = p95
    print("  p95 relative to sigma " + f"{default}: " + ", ".join(f"sigma {s}: {p95[s] / p95[default]:.2f}x"
                                                                  for s in others), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, help="an existing demo case folder (default: generate the small one)")
    parser.add_argument("--sigmas", default="2.5,4,6", help="field smoothings to compare, mm (first: the peer)")
    args = parser.parse_args(argv)
    sigmas = [float(v) for v in args.sigmas.split(",")]

    moving, body = pelvisPhantom((256, 256, 100), (1.5, 1.5, 3.0), scale=1.0)
    _knownDeformationRows("pelvis phantom", moving, body,
                          [((12.0, 10.0, 5.0), 200.0), ((5.5, 4.5, 2.5), 80.0), ((3.5, 3.0, 1.5), 50.0)], sigmas)
    if SPLEEN.exists():
        spleen = sitk.ReadImage(str(SPLEEN), sitk.sitkFloat32)
        _knownDeformationRows("real CT (spleen crop)", spleen, None,
                              [((12.0, 10.0, 3.0), 160.0), ((5.5, 4.5, 2.5), 80.0), ((3.5, 3.0, 1.5), 50.0)], sigmas)
    else:
        print(f"SKIP real CT: {SPLEEN} not found")

    caseDir = args.case
    if caseDir is None:
        from ReirradiationDoseLib.core.democase.generate import generateDemoCase
        scratch = Path(tempfile.mkdtemp(prefix="smoothing-bench-"))
        atexit.register(shutil.rmtree, scratch, True)  # the generated case is not left in the temporary folder
        caseDir = scratch / "case"
        generateDemoCase(caseDir)
    d = demoRegistrationCase(caseDir)
    rigid = reg.registerRigid(d.fixed, d.moving)
    p95 = {}
    for sigma in sigmas:
        result = reg.registerDeformable(d.fixed, d.moving, initialTransform=rigid.transform, fixedMask=d.bodyImage,
                                        structureMasks=d.pairs, withoutCounterpart=d.newTissue,
                                        movingWithoutCounterpart=d.goneTissue, smoothingSigmaMm=sigma)
        u = reg.displacementFieldFromTransform(result.transform, d.fixed)
        error = np.linalg.norm(sitk.GetArrayFromImage(u) - d.truthArray, axis=-1)
        inBody = error[d.body]
        p95[sigma] = float(np.percentile(inBody, 95))
        organs = ", ".join(f"{n} {np.percentile(error[d.masks[n]], 95):.2f}" for n in ("Bladder", "Sacrum", "Rectum")
                           if n in d.masks)
        print(f"demo case {d.fixed.GetSize()}, sigma {sigma} mm: {result.elapsedS:.1f} s, median "
              f"{np.median(inBody):.2f} / p95 {p95[sigma]:.2f} / max {inBody.max():.2f} mm in the body; p95 {organs} "
              "mm", flush=True)
    _ratios(p95)
    return 0


if __name__ == "__main__":
    sys.exit(main())
