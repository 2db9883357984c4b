"""Deformable registration on the demo re-irradiation case, measured against the generator's truth.

Usage::

    .venv/bin/python Testing/benchmarks/registration_demo.py [--case DIR] [--repeats N]

Without ``--case`` the small demo case is generated into a temporary folder (core/democase); for the clinical-size
case generate one first (``generateDemoCase(folder, size="clinical")``) and pass it. The script runs what
``core/pipeline.py`` runs for ``"registration": "deformable"`` ("pipeline": rigid Mattes, then demons inside the
current body outline, structure-guided by the organs delineated on both CTs, ``pipeline._pairedStructureMasks``,
with the course's ``withoutCounterpart`` structures (current CT) and ``courseWithoutCounterpart`` structures (prior
CT, the primary tumour) exerting no force, ``pipeline._withoutCounterpartMask`` / ``_courseWithoutCounterpartMask``),
the same without the prior-CT side ("current side only"), without either ("structure-guided") and without
structures at all ("intensity only"), and reports

- the displacement error inside the current body against ``truth/prior_registration.nrrd`` (median, p95, max,
  per structure p95), the Jacobian minimum and the wall-clock times (median of ``--repeats``);
- the RMS difference (HU) between the prior CT pulled through each field (and through the true field) and the current
  CT, in the body, the bladder and the sacrum: where the true field does not match the images better than the
  registration's, the remaining displacement error is beyond what the intensities show;
- the report's contour check (``core/contourcheck``: MDA of the organs carried from the prior CT) through the true
  field, the pipeline's, intensity only and rigid only, beside the displacement error p95 inside each organ: how much
  of the error a surface check sees;
- the composite EQD2 at every truth point of ``truth.json`` (trilinear sampling of the composite on the reference
  grid, as the issue's check does) with the registration, with the true field (the dose-mapping floor) and with
  rigid only, as % of ``expectedCompositeEqd2Gy``.

Peers: "current side only", "structure-guided", "intensity only", "rigid only" and "true field" measured in the same
run (ratios printed), the rigid registration at full resolution (``workingSpacingMm=None``: time and largest
difference in the body), and the p95 error within 10 mm of the GTV (where the prior dose matters most).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ReirradiationDoseLib.core import casefile, contourcheck, dicomimage, pipeline, regquality, segio
from ReirradiationDoseLib.core import registration as reg
from ReirradiationDoseLib.core.geometry import ImageGeometry, imageFromArray


def _trilinear(image: sitk.Image, pointLps) -> float:
    array = sitk.GetArrayViewFromImage(image)
    ci = np.array(image.TransformPhysicalPointToContinuousIndex([float(v) for v in pointLps]))
    i0 = np.floor(ci).astype(int)
    f = ci - i0
    value = 0.0
    for dk in (0, 1):
        for dj in (0, 1):
            for di in (0, 1):
                w = (f[0] if di else 1 - f[0]) * (f[1] if dj else 1 - f[1]) * (f[2] if dk else 1 - f[2])
                value += w * float(array[i0[2] + dk, i0[1] + dj, i0[0] + di])
    return value


def _doseInputs(caseDir: Path, scratch: Path) -> pipeline.DoseInputs:
    """The case's inputs with the prior course's registration replaced by a (placeholder) transform file."""
    raw = json.loads((caseDir / "case.json").read_text())
    raw.pop("mri", None)
    identity = scratch / "identity.tfm"
    sitk.WriteTransform(sitk.Transform(3, sitk.sitkIdentity), str(identity))
    for course in raw["courses"]:
        if course.get("registration") in ("rigid", "deformable"):
            course["registration"] = str(identity)
            course.pop("withoutCounterpart", None)
    return pipeline.loadCaseInputs(casefile.parseCase(raw, caseDir / "case.json"))


def _pointPercents(inputs: pipeline.DoseInputs, transform: sitk.Transform, points: list) -> dict:
    courses = [dataclasses.replace(c, transform=transform) if not c.isCurrent else c for c in inputs.courses]
    result = pipeline.computeDose(dataclasses.replace(inputs, courses=courses))
    composite = imageFromArray(np.nan_to_num(result.compositeEqd2Gy, nan=0.0).astype(np.float32),
                               ImageGeometry.fromImage(inputs.referenceImage))
    out = {}
    for p in points:
        got = _trilinear(composite, p["lpsMm"])
        out[p["name"]] = (got, 100.0 * (got - p["expectedCompositeEqd2Gy"]) / p["expectedCompositeEqd2Gy"])
    return out


def demoRegistrationCase(caseDir: Path) -> types.SimpleNamespace:
    """What the pipeline's deformable registration of the demo case's prior CT takes, and the truth to score it:
    ``fixed``/``moving`` (float32 CTs), ``masks`` (current structures), ``body``/``bodyImage``, ``truthField``
    (the generator's field) and ``truthArray`` (it sampled at the current CT's voxels, LPS mm), ``pairs``
    (structure guides), ``newTissue``/``goneTissue`` (masks without counterpart on the current / prior CT) and
    their names, ``priorMasks`` (the prior CT's structures on its grid)."""
    fixed, _ = dicomimage.readImageSeries(caseDir / "current" / "CT")
    moving, _ = dicomimage.readImageSeries(caseDir / "prior" / "CT")
    fixed, moving = sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32)
    geometry = ImageGeometry.fromImage(fixed)
    masks, _, _ = segio.readSegmentationWithGeometry(caseDir / "current" / "RTSTRUCT.dcm", geometry)
    body = masks["Body"]
    truthField = sitk.Cast(sitk.ReadImage(str(caseDir / "truth" / "prior_registration.nrrd")), sitk.sitkVectorFloat64)
    # the clinical-size case stores the (smooth) field on a coarser grid: sample it at the CT's voxels
    truthArray = sitk.GetArrayFromImage(reg.displacementFieldFromTransform(reg.displacementFieldTransform(truthField),
                                                                           fixed))
    case = casefile.parseCaseFile(caseDir / "case.json")
    prior = next(c for c in case.courses if c.registration == "deformable")
    priorMasks = pipeline._courseMasks(prior, moving)
    pairs = pipeline._pairedStructureMasks(case, prior, masks, fixed, moving, priorMasks)
    newTissue, newTissueNames = pipeline._withoutCounterpartMask(prior, masks, fixed, [])
    goneTissue, goneTissueNames = pipeline._courseWithoutCounterpartMask(prior, priorMasks, moving, [])
    return types.SimpleNamespace(fixed=fixed, moving=moving, masks=masks, body=body,
                                 bodyImage=imageFromArray(body.astype(np.uint8), geometry), truthField=truthField,
                                 truthArray=truthArray, pairs=pairs, newTissue=newTissue,
                                 newTissueNames=newTissueNames, goneTissue=goneTissue,
                                 goneTissueNames=goneTissueNames, priorMasks=priorMasks)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, help="an existing demo case folder (default: generate one)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="regdemo-bench-"))
    atexit.register(shutil.rmtree, scratch, True)  # the generated case is not left in the temporary folder
    caseDir = args.case
    if caseDir is None:
        from ReirradiationDoseLib.core.democase.generate import generateDemoCase
        caseDir = scratch / "case"
        generateDemoCase(caseDir)
    truth = json.loads((caseDir / "truth.json").read_text())
    d = demoRegistrationCase(caseDir)
    fixed, moving, masks, body, bodyImage = d.fixed, d.moving, d.masks, d.body, d.bodyImage
    truthField, truthArray, pairs, newTissue, goneTissue = (d.truthField, d.truthArray, d.pairs, d.newTissue,
                                                            d.goneTissue)
    print(f"structure pairs: {sorted(pairs or {})}; without counterpart: {d.newTissueNames} (current CT), "
          f"{d.goneTissueNames} (prior CT)")
    modes = (("pipeline", pairs, newTissue, goneTissue), ("current side only", pairs, newTissue, None),
             ("structure-guided", pairs, None, None), ("intensity only", None, None, None))
    times: dict[str, list] = {"rigid": [], "rigid at full resolution": [], **{mode: [] for mode, *_ in modes}}
    results = {}
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        rigid = reg.registerRigid(fixed, moving)
        times["rigid"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rigidFull = reg.registerRigid(fixed, moving, workingSpacingMm=None)  # peer: the pyramid on the CT's voxels
        times["rigid at full resolution"].append(time.perf_counter() - t0)
        for mode, structures, withoutCounterpart, movingWithoutCounterpart in modes:
            t0 = time.perf_counter()
            results[mode] = reg.registerDeformable(fixed, moving, initialTransform=rigid.transform,
                                                   fixedMask=bodyImage, structureMasks=structures,
                                                   withoutCounterpart=withoutCounterpart,
                                                   movingWithoutCounterpart=movingWithoutCounterpart)
            times[mode].append(time.perf_counter() - t0)
    deformable = results["pipeline"]

    def fieldError(transform):
        u = sitk.GetArrayFromImage(reg.displacementFieldFromTransform(transform, fixed))
        return np.linalg.norm(u - truthArray, axis=-1)

    print(f"case: {caseDir}  grid {fixed.GetSize()} @ {fixed.GetSpacing()} mm")
    print(f"time (median of {len(times['rigid'])}): "
          + ", ".join(f"{k} {statistics.median(v):.1f} s" for k, v in times.items()))
    print(f"demons parameters {deformable.parameters}")
    errors = {mode: fieldError(result.transform) for mode, result in results.items()}
    errors["rigid only"] = fieldError(rigid.transform)
    rigidDifference = np.linalg.norm(
        sitk.GetArrayFromImage(reg.displacementFieldFromTransform(rigid.transform, fixed))
        - sitk.GetArrayFromImage(reg.displacementFieldFromTransform(rigidFull.transform, fixed)), axis=-1)[body]
    print(f"rigid (working spacing {reg.RIGID_WORKING_SPACING_MM} mm) against rigid at full resolution: max "
          f"{rigidDifference.max():.2f} mm in the body, "
          f"{statistics.median(times['rigid at full resolution']) / statistics.median(times['rigid']):.1f}x the time")
    for name, error in errors.items():
        e = error[body]
        print(f"displacement error in body, {name:16s}: median {np.median(e):.2f} mm, p95 "
              f"{np.percentile(e, 95):.2f} mm, max {e.max():.2f} mm")
    p95 = {k: np.percentile(e[body], 95) for k, e in errors.items()}
    print(f"ratio p95 pipeline / current side only: {p95['pipeline'] / p95['current side only']:.2f}, "
          f"/ intensity only: {p95['pipeline'] / p95['intensity only']:.2f}, "
          f"/ structure-guided only: {p95['pipeline'] / p95['structure-guided']:.2f}, "
          f"/ rigid only: {p95['pipeline'] / p95['rigid only']:.2f}")
    # do the images tell the truth apart? the prior CT pulled onto the current CT through each field, RMS difference
    # (HU) in the body and in its least textured organs: a field that matches the images better than the true one
    # has reached what intensities can show, whatever its displacement error
    # (only where every field maps into the prior scan)
    currentHu = sitk.GetArrayFromImage(fixed)
    fields = {"true field": reg.displacementFieldTransform(truthField),
              **{mode: result.transform for mode, result in results.items()}, "rigid only": rigid.transform}
    # what the report's contour check (AAPM TG-132, core/contourcheck) sees of each field, beside the truth: MDA of the
    # organs carried from the prior CT, and the displacement error p95 inside each organ
    geometry = ImageGeometry.fromImage(fixed)
    for name in ("true field", "pipeline", "intensity only", "rigid only"):
        check = contourcheck.checkRegistration(masks, geometry, d.priorMasks, ImageGeometry.fromImage(moving),
                                               fields[name], guided=sorted(pairs or {}) if name == "pipeline" else (),
                                               leftOut=tuple(d.newTissueNames) + tuple(d.goneTissueNames))
        error = errors.get(name) if name != "true field" else np.zeros(body.shape)
        print(f"contour check, {name:14s} (MDA mm / true p95 error inside mm): " + ", ".join(
            f"{r['structure']} {r['mdaMm']:.1f}/{np.percentile(error[masks[r['structure']]], 95):.1f}"
            for r in check["structures"]) + f"; tolerance {check['toleranceMm']:g} mm")
    scanned = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    scanned.CopyInformation(moving)
    covered = body.copy()
    for transform in fields.values():
        covered &= sitk.GetArrayFromImage(sitk.Resample(scanned, fixed, transform, sitk.sitkNearestNeighbor, 0)) > 0
    print(f"RMS differences below over {100 * covered.sum() / body.sum():.1f} % of the body (mapped into the prior "
          "scan by every field)")
    for name, transform in fields.items():
        warpedHu = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, -1000.0))
        cells = ", ".join(f"{where} {np.sqrt(np.mean((warpedHu - currentHu)[mask & covered] ** 2)):.1f}"
                          for where, mask in (("body", body), ("Bladder", masks["Bladder"]),
                                              ("Sacrum", masks["Sacrum"])))
        print(f"RMS difference, prior CT through the field - current CT (HU), {name:16s}: {cells}")
    gtvDistance = ndimage.distance_transform_edt(~masks["GTV"], sampling=np.array(fixed.GetSpacing())[::-1])
    for name, error in errors.items():
        near = body & (gtvDistance <= 10.0)
        print(f"p95 error within 10 mm of the GTV, {name:16s}: {np.percentile(error[near], 95):.2f} mm")
    for mode, result in results.items():
        perStructure = {n: round(float(np.percentile(errors[mode][m & body], 95)), 1)
                        for n, m in masks.items() if n != "Body" and (m & body).any()}
        print(f"p95 error per structure (mm), {mode}: {perStructure}")
        jacobian, _ = regquality.jacobianDeterminant(result.displacementField)
        print(f"Jacobian min, {mode}: {jacobian.min():.3f} (in body {jacobian[body].min():.3f}), "
              f"folding voxels {int(np.count_nonzero(jacobian <= 0))}")

    inputs = _doseInputs(caseDir, scratch)
    rows = {mode: _pointPercents(inputs, result.transform, truth["points"]) for mode, result in results.items()}
    rows.update({
            "true field": _pointPercents(inputs, reg.displacementFieldTransform(truthField), truth["points"]),
            "rigid only": _pointPercents(inputs, rigid.transform, truth["points"])})
    print(f"{'truth point':34s} {'expected Gy':>11s} " + " ".join(f"{k:>17s}" for k in rows))
    worst = 0.0
    for p in truth["points"]:
        cells = " ".join(f"{rows[k][p['name']][1]:+16.2f}%" for k in rows)
        print(f"{p['name'][:34]:34s} {p['expectedCompositeEqd2Gy']:11.2f} {cells}")
        worst = max(worst, abs(rows["pipeline"][p["name"]][1]))
    print(f"worst |error| with the pipeline's registration: {worst:.2f} % "
          "(target: every point within 2 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
