"""Benchmark: our deformable registration vs elastix's default B-spline parameter map, on known deformations.

Cases (truth known analytically, ``regquality.analyticDeformationField``; the fixed image is the moving image
pulled through the truth, continued beyond the moving scan by its edge voxels (see ``makeCase``), so the
registration must recover it):

1. synthetic pelvis 256x256x100 (1.5x1.5x3 mm), 12/10/5 mm deformation: ours and elastix side by side;
2. real CT (MSD spleen crop 164x166x26, 0.8x0.8x5 mm), 12/10/3 mm deformation: ours (and elastix);
3. clinical size 512x512x150 (1x1x2 mm) synthetic pelvis: ours only (time limit 3 min).

Reported: wall time, displacement error inside the body (median, p95, max), Jacobian minimum, folding voxels.
elastix (itk-elastix from PyPI) lives in ``.venv-bench`` (created here on first use; skipped with a message when
that fails). Both run with 2 threads. Run: ``.venv/bin/python Testing/benchmarks/registration_vs_elastix.py``
(``--quick`` skips the clinical size, ``--no-elastix`` skips the peer).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "ReirradiationDose"))
sys.path.insert(0, str(ROOT / "Testing" / "unit"))

from registration_phantoms import pelvisPhantom  # noqa: E402

from ReirradiationDoseLib.core import regquality  # noqa: E402
from ReirradiationDoseLib.core.registration import (  # noqa: E402
    displacementFieldTransform,
    registerDeformable,
    resampleMoving,
)

BENCH_VENV = ROOT / ".venv-bench"
ELASTIX_REQUIREMENT = "itk-elastix==0.25.4"
THREADS = "2"

ELASTIX_SCRIPT = r"""
import sys, time, json
import itk
fixed = itk.imread(sys.argv[1], itk.F)
moving = itk.imread(sys.argv[2], itk.F)
parameters = itk.ParameterObject.New()
bspline = parameters.GetDefaultParameterMap("bspline")
bspline["MaximumNumberOfThreads"] = ["2"]  # the number_of_threads keyword crashes itk-elastix 0.25.4 (SIGSEGV)
parameters.AddParameterMap(bspline)
start = time.perf_counter()
result, transformParameters = itk.elastix_registration_method(fixed, moving, parameter_object=parameters,
                                                              log_to_console=False)
elapsed = time.perf_counter() - start
field = itk.transformix_deformation_field(moving, transformParameters)
itk.imwrite(field, sys.argv[3])
print(json.dumps({"elapsedS": elapsed}))
"""


def ensureElastix() -> Path | None:
    """Python of .venv-bench with itk-elastix, created on first use; None (with a message) if impossible."""
    python = BENCH_VENV / "bin" / "python"
    try:
        if not python.exists():
            print(f"creating {BENCH_VENV} for {ELASTIX_REQUIREMENT} ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        probe = subprocess.run([str(python), "-c", "import itk; itk.ParameterObject"], capture_output=True)
        if probe.returncode != 0:
            subprocess.run([str(python), "-m", "pip", "install", "-q", ELASTIX_REQUIREMENT], check=True)
        return python
    except (subprocess.CalledProcessError, OSError) as error:
        print(f"SKIP elastix: could not set up {BENCH_VENV} with {ELASTIX_REQUIREMENT} ({error})")
        return None


def errorStats(field: sitk.Image, truth: sitk.Image, evaluate: np.ndarray) -> dict:
    error = np.linalg.norm(sitk.GetArrayFromImage(field) - sitk.GetArrayFromImage(truth), axis=-1)[evaluate]
    jacobian, _ = regquality.jacobianDeterminant(field)
    return {"medianMm": float(np.median(error)), "p95Mm": float(np.percentile(error, 95)),
            "maxMm": float(error.max()), "jacobianMin": float(jacobian.min()),
            "foldingVoxels": int(np.count_nonzero(jacobian <= 0))}


def makeCase(moving: sitk.Image, body: sitk.Image | None, amplitudeMm, wavelengthMm=200.0):
    """Fixed image = moving pulled through the known field. Where the field reaches beyond the moving scan, the
    moving is continued by copies of its edge voxels: a real fixed scan holds tissue there, not the -1000 HU edge
    that resampling would fabricate (which alone cost 0.25 mm of p95 on the spleen crop, whose 26 slices end
    inside the body). Those voxels are not evaluated (``inside``): their truth has no data in the moving scan."""
    truth = regquality.analyticDeformationField(moving, amplitudeMm, wavelengthMm)
    transform = displacementFieldTransform(truth)
    pad = [int(np.ceil((max(amplitudeMm) + 5.0) / s)) for s in moving.GetSpacing()]
    fixed = resampleMoving(sitk.ZeroFluxNeumannPad(moving, pad, pad), moving, transform)
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    inside = sitk.GetArrayFromImage(sitk.Resample(ones, moving, transform, sitk.sitkNearestNeighbor, 0)) > 0
    if body is not None:
        fixedBody = sitk.Resample(sitk.ZeroFluxNeumannPad(body, pad, pad), moving, transform,
                                  sitk.sitkNearestNeighbor, 0)
    else:
        fixedBody = sitk.Cast(fixed > -400, sitk.sitkUInt8)
    evaluate = inside & (sitk.GetArrayFromImage(fixedBody) > 0)
    return fixed, fixedBody, truth, evaluate


def runOurs(fixed, moving, fixedBody, truth, evaluate, **options) -> dict:
    result = registerDeformable(fixed, moving, None, fixedBody, **options)
    stats = errorStats(result.displacementField, truth, evaluate)
    stats.update({"elapsedS": result.elapsedS, "method": result.method,
                  "levelSpacingsMm": result.parameters["levelSpacingsMm"]})
    print(f"    levels (mm): {stats['levelSpacingsMm']}", flush=True)
    return stats


def runElastix(python: Path, fixed, moving, truth, evaluate) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, name) for name in ("fixed.nrrd", "moving.nrrd", "field.nrrd", "run.py")]
        sitk.WriteImage(fixed, paths[0])
        sitk.WriteImage(moving, paths[1])
        Path(paths[3]).write_text(ELASTIX_SCRIPT)
        env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=THREADS, OMP_NUM_THREADS=THREADS)
        # transformix writes its deformationField.nii into the working directory: keep it in the temporary folder
        done = subprocess.run([str(python), paths[3], *paths[:3]], capture_output=True, text=True, env=env,
                              cwd=folder)
        if done.returncode != 0:
            return {"error": f"exit code {done.returncode}: {done.stderr[-500:]}"}
        elapsed = json.loads(done.stdout.strip().splitlines()[-1])["elapsedS"]
        field = sitk.Cast(sitk.ReadImage(paths[2]), sitk.sitkVectorFloat64)
        field.CopyInformation(fixed)
    stats = errorStats(field, truth, evaluate)
    stats.update({"elapsedS": elapsed, "method": "elastix default bspline"})
    return stats


def show(name: str, stats: dict) -> None:
    if "error" in stats:
        print(f"  {name:34s} FAILED: {stats['error']}", flush=True)
        return
    print(f"  {name:34s} {stats['elapsedS']:7.1f} s  error median {stats['medianMm']:.2f} / p95 {stats['p95Mm']:.2f} /"
          f" max {stats['maxMm']:.2f} mm  Jacobian min {stats['jacobianMin']:.3f} (folding {stats['foldingVoxels']})",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the 512x512x150 clinical-size case")
    parser.add_argument("--no-elastix", action="store_true", help="do not run elastix")
    args = parser.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(THREADS))
    print(f"load average before: {os.getloadavg()}  (2 cores shared; SimpleITK threads {THREADS})")
    python = None if args.no_elastix else ensureElastix()
    report = {}

    print("\n1. synthetic pelvis 256x256x100 (1.5x1.5x3 mm), deformation 12/10/5 mm")
    moving, body = pelvisPhantom((256, 256, 100), (1.5, 1.5, 3.0), scale=1.0)
    fixed, fixedBody, truth, evaluate = makeCase(moving, body, (12.0, 10.0, 5.0))
    report["pelvis256"] = {"ours": runOurs(fixed, moving, fixedBody, truth, evaluate)}
    show("ours (diffeomorphic demons)", report["pelvis256"]["ours"])
    if python:
        report["pelvis256"]["elastix"] = runElastix(python, fixed, moving, truth, evaluate)
        show("elastix default B-spline", report["pelvis256"]["elastix"])
        if "error" not in report["pelvis256"]["elastix"]:
            ratio = report["pelvis256"]["elastix"]["elapsedS"] / report["pelvis256"]["ours"]["elapsedS"]
            print(f"  speed ratio elastix/ours: {ratio:.2f}")

    print("\n2. real CT, MSD spleen crop 164x166x26 (0.8x0.8x5 mm), deformation 12/10/3 mm")
    spleen = ROOT.parent / "shared" / "data" / "spleen-ct" / "ct_scan" / "sub-spleen2" / "ct" / "sub-spleen2_ct.nii.gz"
    if spleen.exists():
        moving = sitk.ReadImage(str(spleen), sitk.sitkFloat32)
        fixed, fixedBody, truth, evaluate = makeCase(moving, None, (12.0, 10.0, 3.0), 160.0)
        report["spleen"] = {"ours": runOurs(fixed, moving, None, truth, evaluate)}
        show("ours (diffeomorphic demons)", report["spleen"]["ours"])
        if python:
            report["spleen"]["elastix"] = runElastix(python, fixed, moving, truth, evaluate)
            show("elastix default B-spline", report["spleen"]["elastix"])
    else:
        print(f"  SKIP: {spleen} not found")

    if not args.quick:
        print("\n3. clinical size 512x512x150 (1x1x2 mm), deformation 12/10/5 mm: ours, automatic finest level")
        moving, body = pelvisPhantom((512, 512, 150), (1.0, 1.0, 2.0), scale=1.0)
        fixed, fixedBody, truth, evaluate = makeCase(moving, body, (12.0, 10.0, 5.0))
        del moving  # keep memory down
        moving, _ = pelvisPhantom((512, 512, 150), (1.0, 1.0, 2.0), scale=1.0)
        report["clinical512"] = {"ours": runOurs(fixed, moving, fixedBody, truth, evaluate)}
        show("ours (demons, field upsampled)", report["clinical512"]["ours"])
    print(f"\nload average after: {os.getloadavg()}")
    out = ROOT / "Testing" / "_artifacts" / "registration_vs_elastix.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
