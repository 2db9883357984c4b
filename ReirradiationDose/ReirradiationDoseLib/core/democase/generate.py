"""Write the demo case: DICOM (CT, MR, RTSTRUCT, RTPLAN, RTDOSE), case.json, truth.json, observers, marks.

Layout of ``outputDir`` (paths in case.json are relative to it)::

    case.json  truth.json
    truth/prior_registration.nrrd   displacement field u (LPS mm, vector float32): current-CT point x <-> prior x + u(x)
    truth/mri_registration.tfm      rigid transform mapping current-CT LPS points to MRI LPS points
    current/CT/*.dcm  current/RTSTRUCT.dcm  current/RTPLAN.dcm  current/RTDOSE.dcm
    prior/CT/*.dcm    prior/RTSTRUCT.dcm    prior/RTPLAN.dcm    prior/RTDOSE.dcm
    MR/*.dcm
    observers/round1/<obs>.dcm  observers/round2/<obs>.dcm  observers/observers.json
    marks/radiologist_marks.mrk.json  marks/radiologist_marks.csv

The ground truth at named points is computed from the analytic models (never from the written grids) with
REFERENCE §1: each course to EQD2 first, ``EQD2 = D (D/n + a/b) / (2 + a/b)``, then ``sum_k (1 - r_k) EQD2_k``
with ``r = 0`` for targets and for the current course.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.uid import generate_uid

from ..geometry import ImageGeometry, lpsToRas
from ..progress import noProgress, subProgress
from . import dose as dosemodels
from .anatomy import CURRENT_STRUCTURES, PRIOR_STRUCTURES, SACRAL_LEVELS_Z_MM, PelvisPhantom, rectumCentre
from .observers import FIBROSIS_OBSERVER, MISSED_EXTENSION_OBSERVER, OBSERVER_NAMES, observerMask, observerSpecs

__all__ = ["generateDemoCase", "ensureDemoCase", "DemoCase", "CaseGrids", "caseGrids", "GENERATOR_VERSION",
           "CASE_TISSUES", "recoveryFraction", "eqd2", "truthPoints", "radiologistMarks"]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.4"  # 1.1: textures move with the anatomy (bowel pattern and gas); 1.2: fat and muscle texture
# 1.4: the prior course's plan and planning CT dated 39 days before its date (its last fraction)
PATIENT_NAME = "REIRRADIATION^DEMO"
PATIENT_ID = "REIRR-DEMO-0001"
PRIOR_INTERVAL_DAYS = 913  # about 2.5 years from the prior course's last fraction to the current course
PRIOR_PLAN_TO_LAST_FRACTION_DAYS = 7 + 24 + 2 * 4  # plan a week before; 25 fractions Mon-Fri span 32 days
_DAYS_PER_MONTH = 365.25 / 12.0

# tissue rules written to case.json and used for the truth (targets first, then the lowest alpha/beta)
CASE_TISSUES = {
    "GTV": {"alphaBeta": 10},
    "CTV": {"alphaBeta": 10},
    "SacralPlexus": {"alphaBeta": 2, "recovery": {"model": "nieder"}},
    "Rectum": {"alphaBeta": 3, "recovery": {"model": "constant", "fraction": 0.25}},
    "Bowel": {"alphaBeta": 3, "recovery": {"model": "constant", "fraction": 0.25}},
    "Bladder": {"alphaBeta": 3, "recovery": {"model": "price"}},
    "FemoralHead_L": {"alphaBeta": 3},
    "FemoralHead_R": {"alphaBeta": 3},
}
CASE_TARGETS = ("GTV", "CTV")
DEFAULT_ALPHA_BETA = 3.0


def eqd2(doseGy: float, fractions: int, alphaBetaGy: float) -> float:
    """EQD2 = D (D/n + a/b) / (2 + a/b) (REFERENCE §1)."""
    d = doseGy / fractions
    return doseGy * (d + alphaBetaGy) / (2.0 + alphaBetaGy)


def recoveryFraction(recovery: dict | None, intervalDays: float) -> float:
    """Recovery fraction of the prior course: constant, Nieder/Doi step (0 / 25 % from 6 / 50 % from 12 months),
    Price (0 below 6 months, linear to 50 % at 12 months)."""
    if not recovery or recovery.get("model") == "none":
        return 0.0
    model = recovery["model"]
    months = intervalDays / _DAYS_PER_MONTH
    if model == "constant":
        return float(recovery["fraction"])
    if model in ("nieder", "nieder-doi", "doi"):
        return 0.0 if months < 6 else (0.25 if months < 12 else 0.5)
    if model == "price":
        return 0.0 if months < 6 else (0.5 * (months - 6) / 6 if months < 12 else 0.5)
    raise ValueError(f"unknown recovery model {model!r}")


# ---- grids -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseGrids:
    currentCt: ImageGeometry
    priorCt: ImageGeometry
    mri: ImageGeometry
    priorDose: ImageGeometry
    currentDose: ImageGeometry
    displacement: ImageGeometry


def _centred(size, spacing, centre) -> ImageGeometry:
    origin = [c - 0.5 * (n - 1) * s for n, s, c in zip(size, spacing, centre, strict=True)]
    return ImageGeometry(size, spacing, origin)


def caseGrids(size: str, phantom: PelvisPhantom | None = None) -> CaseGrids:
    """The sampling grids of the ``"small"`` or ``"clinical"`` case (identity directions, LPS mm)."""
    phantom = phantom or PelvisPhantom()
    mriCentre = phantom.currentToMri(np.array([0.0, 40.0, -10.0]))
    if size == "small":
        ct = _centred((128, 128, 48), (3.5, 3.5, 5.0), (0.0, 15.0, 0.0))
        prior = _centred((128, 128, 48), (3.5, 3.5, 5.0), (1.75, 12.0, 5.0))
        mri = _centred((96, 96, 36), (2.5, 2.5, 5.0), mriCentre)
        priorDose = ImageGeometry((91, 71, 45), (4.0, 4.0, 5.0), (-180.0, -130.0, -127.5))
        currentDose = ImageGeometry((90, 70, 40), (4.0, 4.0, 5.0), (-178.0, -126.0, -100.0))
        displacement = ct
    elif size == "clinical":
        ct = _centred((512, 512, 150), (0.9765625, 0.9765625, 2.0), (0.0, 15.0, 0.0))
        prior = _centred((512, 512, 150), (0.9765625, 0.9765625, 2.0), (1.5, 12.0, 4.0))
        mri = _centred((384, 384, 72), (0.7, 0.7, 3.0), mriCentre)
        priorDose = ImageGeometry((145, 113, 93), (2.5, 2.5, 2.5), (-180.0, -130.0, -130.0))
        currentDose = ImageGeometry((144, 112, 80), (2.5, 2.5, 2.5), (-178.75, -128.75, -105.0))
        # a coarser field spanning exactly the CT's voxel centres (the field is smooth; linear interpolation of a
        # 4 mm grid is exact to ~0.02 mm)
        lo, hi = ct.boundsLps()
        n = [int(np.ceil((b - a) / 4.0)) + 1 for a, b in zip(lo, hi, strict=True)]
        displacement = ImageGeometry(n, [(b - a) / (k - 1) for a, b, k in zip(lo, hi, n, strict=True)], lo)
    else:
        raise ValueError(f"size must be 'small' or 'clinical', got {size!r}")
    return CaseGrids(ct, prior, mri, priorDose, currentDose, displacement)


def _axes(geometry: ImageGeometry, k0: int = 0, k1: int | None = None):
    """Broadcast coordinate arrays (float32, [k, j, i]) of slices k0..k1 of an identity-direction grid."""
    if not np.allclose(geometry.directionMatrix, np.eye(3)):
        raise ValueError("demo grids have identity directions")
    k1 = geometry.sizeXyz[2] if k1 is None else k1
    o, s = geometry.originMm, geometry.spacingMm
    xs = (o[0] + s[0] * np.arange(geometry.sizeXyz[0])).astype(np.float32)
    ys = (o[1] + s[1] * np.arange(geometry.sizeXyz[1])).astype(np.float32)
    zs = (o[2] + s[2] * np.arange(k0, k1)).astype(np.float32)
    shape = (k1 - k0, geometry.sizeXyz[1], geometry.sizeXyz[0])
    x = np.ascontiguousarray(np.broadcast_to(xs[None, None, :], shape))
    y = np.ascontiguousarray(np.broadcast_to(ys[None, :, None], shape))
    z = np.ascontiguousarray(np.broadcast_to(zs[:, None, None], shape))
    return x, y, z


def _chunks(geometry: ImageGeometry, voxelsPerChunk: int = 2_000_000):
    n = geometry.sizeXyz[2]
    step = max(1, voxelsPerChunk // (geometry.sizeXyz[0] * geometry.sizeXyz[1]))
    return [(k, min(n, k + step)) for k in range(0, n, step)]


# ---- the case object ---------------------------------------------------------------------------------------------

@dataclass
class DemoCase:
    """What :func:`generateDemoCase` wrote, and the analytic truth behind it."""

    outputDir: Path
    size: str
    seed: int
    phantom: PelvisPhantom
    grids: CaseGrids
    truth: dict
    paths: dict = field(default_factory=dict)
    timingsS: dict = field(default_factory=dict)

    @property
    def caseFile(self) -> Path:
        return self.paths["case"]

    @property
    def truthFile(self) -> Path:
        return self.paths["truth"]

    def trueGtvMask(self, geometry: ImageGeometry | None = None) -> tuple[np.ndarray, ImageGeometry]:
        """The true GTV (voxel centres inside) on the current CT grid (or on ``geometry``, current frame)."""
        geometry = geometry or self.grids.currentCt
        x, y, z = _axes(geometry)
        return self.phantom.gtvSd(x, y, z) < 0, geometry

    def structureMasks(self, frame: str = "current") -> tuple[dict, ImageGeometry]:
        """The RTSTRUCT structures of ``frame`` ("current" or "prior") on that CT grid."""
        geometry = self.grids.currentCt if frame == "current" else self.grids.priorCt
        x, y, z = _axes(geometry)
        sd = self.phantom.currentSd(x, y, z) if frame == "current" else self.phantom.priorSd(x, y, z)
        return self.phantom.masks(sd, frame), geometry

    def doseGrids(self) -> dict:
        """The analytic doses on the written RTDOSE grids: {"prior": (Gy, geometry), "current": (Gy, geometry)}."""
        return {"prior": (_priorDoseGrid(self.phantom, self.grids.priorDose), self.grids.priorDose),
                "current": (_currentDoseGrid(self.phantom, self.grids.currentDose), self.grids.currentDose)}

    def observerMasks(self, roundNumber: int) -> tuple[dict, ImageGeometry]:
        """The observers' GTVs of a round on the current CT grid."""
        masks, geometry = self.structureMasks("current")
        return _observerMasks(self.phantom, self.seed, roundNumber, geometry, masks["Fibrosis"], masks["Body"]), \
            geometry


def _priorDoseGrid(phantom, geometry):
    return dosemodels.priorDoseGy(phantom, *_axes(geometry))


def _currentDoseGrid(phantom, geometry):
    return dosemodels.currentDoseGy(phantom, *_axes(geometry))


def _observerMasks(phantom, seed, roundNumber, geometry, fibrosis, body) -> dict:
    """Observer masks, evaluated only in a box around the GTV (every observer stays within ~20 mm of it)."""
    c = np.array(phantom.gtvMainCentreMm)
    half = np.array(phantom.gtvMainSemiAxesMm) + 45.0
    lo = np.floor(geometry.lpsToIndex(c - half)).astype(int)
    hi = np.ceil(geometry.lpsToIndex(c + half)).astype(int) + 1
    lo = np.clip(lo, 0, np.array(geometry.sizeXyz))
    hi = np.clip(hi, 0, np.array(geometry.sizeXyz))
    x, y, z = _axes(geometry, lo[2], hi[2])
    sl = (slice(None), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    x, y, z = x[sl], y[sl], z[sl]
    crop = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    out = {}
    for spec in observerSpecs(seed, roundNumber):
        full = np.zeros(geometry.shape, dtype=bool)
        full[crop] = observerMask(phantom, spec, x, y, z, fibrosis[crop], body[crop])
        out[spec.name] = full
    return out


# ---- truth at points ---------------------------------------------------------------------------------------------

def _pointMasks(phantom: PelvisPhantom, points) -> list[set]:
    """The structures containing each current-frame point (points: (n, 3))."""
    p = np.atleast_2d(np.asarray(points, dtype=float))
    masks = phantom.masks(phantom.currentSd(p[:, 0], p[:, 1], p[:, 2]), "current")
    return [{name for name, m in masks.items() if bool(m[i])} for i in range(len(p))]


def _resolveTissue(structures: set, intervalDays: float) -> dict:
    """The tissue rule of case.json: targets first, then the listed tissue with the lowest α/β, else the default."""
    for target in CASE_TARGETS:
        if target in structures:
            return {"tissue": target, "alphaBeta": float(CASE_TISSUES[target]["alphaBeta"]), "isTarget": True,
                    "recovery": None, "recoveryFraction": 0.0}
    listed = [(CASE_TISSUES[n]["alphaBeta"], n) for n in structures if n in CASE_TISSUES]
    if listed:
        ab, name = min(listed)
        recovery = CASE_TISSUES[name].get("recovery")
        return {"tissue": name, "alphaBeta": float(ab), "isTarget": False, "recovery": recovery,
                "recoveryFraction": recoveryFraction(recovery, intervalDays)}
    return {"tissue": None, "alphaBeta": DEFAULT_ALPHA_BETA, "isTarget": False, "recovery": None,
            "recoveryFraction": 0.0}


def _gradient(f, p, h=0.5) -> float:
    p = np.asarray(p, dtype=float)
    g = []
    for axis in range(3):
        e = np.zeros(3)
        e[axis] = h
        g.append((float(f(*(p + e))) - float(f(*(p - e)))) / (2 * h))
    return float(np.linalg.norm(g))


def _borderPoint(sdFunction, inside, direction, maxMm=80.0) -> np.ndarray:
    """The point where ``sdFunction`` changes sign along the ray from ``inside`` (bisection, 0.001 mm)."""
    inside = np.asarray(inside, dtype=float)
    d = np.asarray(direction, dtype=float)
    d = d / np.linalg.norm(d)
    lo, hi = 0.0, maxMm
    if float(sdFunction(*(inside))) >= 0:
        raise ValueError("the ray does not start inside")
    while hi - lo > 1e-3:
        mid = 0.5 * (lo + hi)
        if float(sdFunction(*(inside + mid * d))) < 0:
            lo = mid
        else:
            hi = mid
    return inside + 0.5 * (lo + hi) * d


def _levelPoint(sdFunction, inside, direction, levelMm) -> np.ndarray:
    return _borderPoint(lambda x, y, z: sdFunction(x, y, z) - levelMm, inside, direction, 150.0)


def _pointDefinitions(phantom: PelvisPhantom) -> list[tuple[str, np.ndarray, str]]:
    """(name, current-frame LPS point, how it was chosen)."""
    s = lambda *v: np.float64(v[0]) if len(v) == 1 else v  # noqa: E731
    gtv = lambda x, y, z: phantom.gtvSd(s(x), s(y), s(z))  # noqa: E731
    main = np.array(phantom.gtvMainCentreMm)
    rx, ry = rectumCentre(-75.0)
    points = [
        ("GTV centre", main, "centre of the recurrence's main body"),
        ("GTV extension (S3)", np.array(phantom.gtvLobeCentreMm), "centre of the extension lobe into S3"),
        ("CTV margin (GTV + 5 mm, right)", _levelPoint(gtv, main, (-1.0, 0.0, 0.0), 5.0),
         "5 mm outside the GTV to the patient's right, inside the 10 mm CTV"),
        ("sacral plexus L", phantom.toCurrent((61.8, 59.5, -13.2)),
         "left sacral plexus on its centre line, lateral to the re-irradiation field (low current dose)"),
        ("rectum", phantom.toCurrent((float(rx), float(ry), -75.0)),
         "rectal (neorectal) centre line, caudal to the re-irradiation field"),
        ("bladder", phantom.toCurrent((0.0, -50.0, -35.0)), "bladder centre"),
        ("bowel near the prior field edge", phantom.toCurrent((-20.0, -30.0, 50.0)),
         "small bowel 10 mm inside the prior box's cranial edge: without registration the prior dose is ~5 Gy off"),
        ("femoral head L", phantom.toCurrent((88.0, -5.0, -55.0)), "centre of the left femoral head"),
        ("femoral head R", phantom.toCurrent((-88.0, -5.0, -55.0)), "centre of the right femoral head"),
        ("soft tissue bath (no structure)", phantom.toCurrent((125.0, 40.0, 20.0)),
         "left pelvic side wall outside every structure: lateral fields only"),
    ]
    return points


def truthPoints(phantom: PelvisPhantom, priorDate: datetime.date, currentDate: datetime.date) -> list[dict]:
    interval = float((currentDate - priorDate).days)
    f = np.float64
    out = []

    def priorInCurrent(x, y, z):
        return dosemodels.priorDoseInCurrentFrameGy(phantom, f(x), f(y), f(z))

    def priorSameLps(x, y, z):
        return dosemodels.priorDoseGy(phantom, f(x), f(y), f(z))

    def current(x, y, z):
        return dosemodels.currentDoseGy(phantom, f(x), f(y), f(z))

    for name, p, how in _pointDefinitions(phantom):
        p = np.asarray(p, dtype=float)
        offsets = np.array(np.meshgrid(*[[-2.0, 0.0, 2.0]] * 3, indexing="ij")).reshape(3, -1).T
        around = _pointMasks(phantom, p + offsets)
        structures = _pointMasks(phantom, p)[0]
        tissues = {(t["alphaBeta"], t["recoveryFraction"]) for t in (_resolveTissue(a, interval) for a in around)}
        tissue = _resolveTissue(structures, interval)
        ab, r = tissue["alphaBeta"], tissue["recoveryFraction"]
        priorPoint = np.array(phantom.toPrior(*(f(v) for v in p)), dtype=float)
        priorGy = float(priorInCurrent(*p))
        priorNoRegGy = float(priorSameLps(*p))
        currentGy = float(current(*p))
        priorEqd2 = eqd2(priorGy, dosemodels.PRIOR_FRACTIONS, ab)
        currentEqd2 = eqd2(currentGy, dosemodels.CURRENT_FRACTIONS, ab)
        priorNoRegEqd2 = eqd2(priorNoRegGy, dosemodels.PRIOR_FRACTIONS, ab)
        out.append({
            "name": name, "description": how,
            "lpsMm": [round(float(v), 4) for v in p], "rasMm": [round(float(v), 4) for v in lpsToRas(p)],
            "priorAnatomyLpsMm": [round(float(v), 4) for v in priorPoint],
            "structures": sorted(structures), "tissue": tissue["tissue"], "isTarget": tissue["isTarget"],
            "structuresStableWithin2Mm": all(a == structures for a in around),
            "tissueStableWithin2Mm": len(tissues) == 1,
            "alphaBeta": ab, "recovery": tissue["recovery"], "recoveryFraction": r,
            "priorPhysicalGy": round(priorGy, 4), "currentPhysicalGy": round(currentGy, 4),
            "priorEqd2Gy": round(priorEqd2, 4), "currentEqd2Gy": round(currentEqd2, 4),
            "expectedCompositeEqd2Gy": round((1.0 - r) * priorEqd2 + currentEqd2, 4),
            "priorPhysicalNoRegistrationGy": round(priorNoRegGy, 4),
            "expectedCompositeEqd2NoRegistrationGy": round((1.0 - r) * priorNoRegEqd2 + currentEqd2, 4),
            "priorGradientGyPerMm": round(_gradient(priorInCurrent, p), 4),
            "currentGradientGyPerMm": round(_gradient(current, p), 4),
        })
    return out


# ---- radiologist marks -------------------------------------------------------------------------------------------

def radiologistMarks(phantom: PelvisPhantom) -> tuple[list[dict], list[dict]]:
    """Border points of the true GTV (current frame, then MRI frame). Returns (points, arrows)."""
    gtv = lambda x, y, z: phantom.gtvSd(np.float64(x), np.float64(y), np.float64(z))  # noqa: E731
    main = np.array(phantom.gtvMainCentreMm)
    lobe = np.array(phantom.gtvLobeCentreMm)
    defs = [
        ("sacrum S3 involved", lobe, (0.0, 1.0, 0.15), 0.9, True),
        ("extension toward S3 (cranial tip)", lobe, (0.0, 0.35, 1.0), 0.8, False),
        ("extends into fibrosis", main, (-1.0, 0.0, 0.0), 0.6, True),
        ("anterior border at neorectum", main, (0.0, -1.0, 0.0), 0.85, False),
        ("caudal border", main, (0.0, 0.0, -1.0), 0.7, False),
    ]
    points, arrows = [], []
    for label, start, direction, confidence, arrow in defs:
        border = _borderPoint(gtv, start, direction)
        d = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
        mri = phantom.currentToMri(border)
        entry = {"label": label, "confidence": confidence, "currentLpsMm": border.tolist(),
                 "mriLpsMm": mri.tolist(), "mriRasMm": lpsToRas(mri).tolist(),
                 "onExtension": start is lobe, "directionLps": d.tolist()}
        points.append(entry)
        if arrow:
            tail = phantom.currentToMri(border - 10.0 * d)
            arrows.append({"label": label, "tipRasMm": lpsToRas(mri).tolist(), "tailRasMm": lpsToRas(tail).tolist()})
    return points, arrows


def _markupsJson(points: list[dict], arrows: list[dict]) -> dict:
    schema = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
              "markups-schema-v1.0.3.json#")

    def controlPoint(index, label, position, description=""):
        return {"id": str(index), "label": label, "description": description, "associatedNodeID": "",
                "position": [round(float(v), 4) for v in position],
                "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
                "selected": True, "locked": False, "visibility": True, "positionStatus": "defined"}

    display = {"visibility": True, "opacity": 1.0, "color": [0.4, 1.0, 1.0], "selectedColor": [1.0, 0.5, 0.5],
               "propertiesLabelVisibility": True, "pointLabelsVisibility": True, "textScale": 3.0,
               "glyphType": "Sphere3D", "glyphScale": 2.0, "glyphSize": 5.0, "useGlyphScale": True}
    markups = [{
        "type": "Fiducial", "name": "RadiologistMarks", "coordinateSystem": "RAS", "coordinateUnits": "mm",
        "locked": False, "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": len(points),
        # the frame in every description, which Slicer keeps when it loads the file (a review: loaded into the
        # module, the marks stated no frame and were read as planning-CT points, 29-31 mm off)
        "controlPoints": [controlPoint(i + 1, p["label"], p["mriRasMm"], f"confidence {p['confidence']:g}; frame=MRI")
                          for i, p in enumerate(points)],
        "measurements": [], "display": display}]
    for _i, a in enumerate(arrows):
        markups.append({
            "type": "Line", "name": f"Arrow: {a['label']}", "coordinateSystem": "RAS", "coordinateUnits": "mm",
            "locked": False, "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": 2,
            "controlPoints": [controlPoint(1, "tip", a["tipRasMm"], f"{a['label']}; frame=MRI"),
                              controlPoint(2, "tail", a["tailRasMm"], f"{a['label']}; frame=MRI")],
            "measurements": [], "display": dict(display, color=[1.0, 1.0, 0.0])})
    return {"@schema": schema, "markups": markups}


# ---- writing -----------------------------------------------------------------------------------------------------

def _uid(seed: int, *parts) -> str:
    return generate_uid(entropy_srcs=["reirradiation-demo", GENERATOR_VERSION, str(seed), *map(str, parts)])


def _study(seed, key, date: datetime.date, description: str):
    from ..dicomwrite import PatientStudy

    return PatientStudy(patientName=PATIENT_NAME, patientId=PATIENT_ID, studyInstanceUid=_uid(seed, key, "study"),
                        studyDate=date.strftime("%Y%m%d"), frameOfReferenceUid=_uid(seed, key, "frame"),
                        patientBirthDate="19580312", patientSex="M", studyDescription=description,
                        studyId=key[:16])


def _roiTypes(names) -> dict:
    types = {"Body": "EXTERNAL"}
    for n in names:
        for prefix in ("GTV", "CTV", "PTV"):
            if n.startswith(prefix):
                types[n] = prefix
    return types


def _imageAndMasks(phantom, geometry, frame, rng, noiseSd, progress, fromMri=False):
    """Image (float32) and structure masks of one series, evaluated chunk by chunk."""
    image = np.empty(geometry.shape, dtype=np.float32)
    names = PRIOR_STRUCTURES if frame == "prior" else CURRENT_STRUCTURES
    masks = None if fromMri else {n: np.zeros(geometry.shape, dtype=bool) for n in names}
    chunks = _chunks(geometry)
    for index, (k0, k1) in enumerate(chunks):
        x, y, z = _axes(geometry, k0, k1)
        if fromMri:
            x, y, z = (np.asarray(v, dtype=np.float32) for v in phantom.mriToCurrent(x, y, z))
        sd = phantom.priorSd(x, y, z) if frame == "prior" else phantom.currentSd(x, y, z)
        m = phantom.masks(sd, frame)
        # textures (the bowel pattern and its gas) move with the anatomy: evaluate them at prior-anatomy coordinates
        x, y, z = (x, y, z) if frame == "prior" else phantom.toPrior(x, y, z)
        if fromMri:
            clean = phantom.mrT2(sd, m, x, y, z)
            n1 = rng.standard_normal(clean.shape, dtype=np.float32) * noiseSd
            n2 = rng.standard_normal(clean.shape, dtype=np.float32) * noiseSd
            image[k0:k1] = np.sqrt((clean + n1) ** 2 + n2 ** 2)  # Rician magnitude noise
        else:
            image[k0:k1] = phantom.ctHu(sd, m, x, y, z) + rng.standard_normal(x.shape, dtype=np.float32) * noiseSd
            for n in names:
                masks[n][k0:k1] = m[n]
        progress((index + 1) / len(chunks), f"{frame} {'MR' if fromMri else 'CT'} slices {k0}-{k1}")
    return image, masks


def _displacementImage(phantom, geometry) -> sitk.Image:
    x, y, z = _axes(geometry)
    ux, uy, uz = phantom.displacementMm(x, y, z)
    field_ = np.stack([ux, uy, uz], axis=-1).astype(np.float32)
    image = sitk.GetImageFromArray(field_, isVector=True)
    geometry.applyTo(image)
    return image


def ensureDemoCase(caseDir, size: str = "small", seed: int = 0, progress=None) -> Path:
    """The case file of the demo case in ``caseDir``, generating the case first unless a complete one of the same
    generator version, size and seed is already there. Returns ``caseDir/case.json``."""
    caseDir = Path(caseDir)
    caseFile, truthFile = caseDir / "case.json", caseDir / "truth.json"
    if caseFile.is_file() and truthFile.is_file():
        try:
            generator = json.loads(truthFile.read_text(encoding="utf-8")).get("generator", {})
        except (OSError, json.JSONDecodeError):
            generator = {}
        if generator == {"name": "ReirradiationDoseLib.core.democase", "version": GENERATOR_VERSION, "seed": seed,
                         "size": size}:
            logger.info("demo case already present in %s", caseDir)
            return caseFile
    logger.info("generating the %s demo case in %s", size, caseDir)
    generateDemoCase(caseDir, size=size, seed=seed, progress=progress)
    return caseFile


@contextlib.contextmanager
def _fastDicomWriting():
    """Skip pydicom's per-value validation while writing our own, known-valid values (2-3x faster RTSTRUCTs)."""
    import pydicom.config

    settings = pydicom.config.settings
    previous = settings.writing_validation_mode
    settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.writing_validation_mode = previous


def generateDemoCase(outputDir, size: str = "small", seed: int = 0, today: datetime.date = datetime.date(2026, 11, 23),
                     progress=None) -> DemoCase:
    """Generate the demo case into ``outputDir`` (created; existing files are overwritten) and return it.

    Deterministic for a given (size, seed, today): anatomy, deformation and doses are fixed analytic functions; the
    seed drives the image noise and the observers' jitter; study, series and frame-of-reference UIDs derive from
    the seed (SOP instance UIDs are generated by the DICOM writer). Small: < 10 s; clinical: < 2 min.
    """
    with _fastDicomWriting():
        return _generate(Path(outputDir), size, int(seed), today, progress)


def _generate(outputDir, size, seed, today, progress) -> DemoCase:
    from ..dicomwrite import writeImageSeries, writeRtDose, writeRtPlan, writeRtStruct

    progress = progress or noProgress
    start = time.perf_counter()
    cpuStart = time.process_time()
    timings, cpuTimings = {}, {}
    out = Path(outputDir)
    out.mkdir(parents=True, exist_ok=True)
    phantom = PelvisPhantom()
    grids = caseGrids(size, phantom)
    priorDate = today - datetime.timedelta(days=PRIOR_INTERVAL_DAYS)  # the prior course's last fraction
    # its planning CT and plan: a week before the first of its 25 fractions, given on five days a week
    priorPlanDate = priorDate - datetime.timedelta(days=PRIOR_PLAN_TO_LAST_FRACTION_DAYS)
    mriDate = today - datetime.timedelta(days=14)
    psPrior = _study(seed, "prior", priorPlanDate, "Rectum 50Gy/25fx (demo)")
    psCurrent = _study(seed, "current", today, "Re-irradiation 30.6Gy/17fx (demo)")
    psMri = _study(seed, "mri", mriDate, "MRI pelvis T2 (demo)")
    paths = {"case": out / "case.json", "truth": out / "truth.json"}

    def lap(name):  # wall-clock and CPU seconds per step (the CPU figure is what a shared machine cannot distort)
        timings[name] = round(time.perf_counter() - start - sum(timings.values()), 3)
        cpuTimings[name] = round(time.process_time() - cpuStart - sum(cpuTimings.values()), 3)

    # current CT + structures
    rng = np.random.default_rng([seed, 1])
    ct, currentMasks = _imageAndMasks(phantom, grids.currentCt, "current", rng, 12.0, subProgress(progress, 0, 0.3))
    ctRef = writeImageSeries(np.rint(ct).astype(np.int16), grids.currentCt, out / "current" / "CT", psCurrent, "CT",
                             "Planning CT (re-irradiation)", seriesInstanceUid=_uid(seed, "current", "ct"))
    del ct
    lap("currentCt")
    currentStructUid = writeRtStruct(out / "current" / "RTSTRUCT.dcm", currentMasks, grids.currentCt, psCurrent, ctRef,
                                     roiTypes=_roiTypes(CURRENT_STRUCTURES), label="REIRR")
    lap("currentRtstruct")
    # prior CT + structures
    rng = np.random.default_rng([seed, 2])
    priorCt, priorMasks = _imageAndMasks(phantom, grids.priorCt, "prior", rng, 12.0, subProgress(progress, 0.3, 0.55))
    priorRef = writeImageSeries(np.rint(priorCt).astype(np.int16), grids.priorCt, out / "prior" / "CT", psPrior, "CT",
                                "Planning CT (primary)", seriesInstanceUid=_uid(seed, "prior", "ct"))
    del priorCt
    priorStructUid = writeRtStruct(out / "prior" / "RTSTRUCT.dcm", priorMasks, grids.priorCt, psPrior, priorRef,
                                   roiTypes=_roiTypes(PRIOR_STRUCTURES), label="PRIMARY")
    del priorMasks
    lap("priorCtAndRtstruct")
    # MRI (current anatomy seen through the rigid transform)
    rng = np.random.default_rng([seed, 3])
    mr, _ = _imageAndMasks(phantom, grids.mri, "current", rng, 15.0, subProgress(progress, 0.55, 0.75), fromMri=True)
    writeImageSeries(np.clip(np.rint(mr), 0, 32767).astype(np.int16), grids.mri, out / "MR", psMri, "MR",
                     "T2 TSE axial (demo)", seriesInstanceUid=_uid(seed, "mri", "t2"))
    del mr
    lap("mri")
    # plans and doses
    priorPlanUid = writeRtPlan(out / "prior" / "RTPLAN.dcm", psPrior, dosemodels.PRIOR_FRACTIONS,
                               dosemodels.PRIOR_PRESCRIPTION_GY, "PRIMARY 50/25", priorPlanDate.strftime("%Y%m%d"),
                               referencedStructureSetUid=priorStructUid,
                               targetRoiNumber=PRIOR_STRUCTURES.index("PTV_primary") + 1,
                               planName="Rectum 4-field box 50 Gy / 25 fx")
    currentPlanUid = writeRtPlan(out / "current" / "RTPLAN.dcm", psCurrent, dosemodels.CURRENT_FRACTIONS,
                                 dosemodels.CURRENT_PRESCRIPTION_GY, "REIRR 30.6/17", today.strftime("%Y%m%d"),
                                 referencedStructureSetUid=currentStructUid,
                                 targetRoiNumber=CURRENT_STRUCTURES.index("PTV") + 1,
                                 planName="Presacral recurrence 30.6 Gy / 17 fx")
    priorDose = _priorDoseGrid(phantom, grids.priorDose)
    currentDose = _currentDoseGrid(phantom, grids.currentDose)
    writeRtDose(out / "prior" / "RTDOSE.dcm", priorDose, grids.priorDose, psPrior, "PHYSICAL", "PLAN",
                "Dose primary 50Gy/25fx", referencedPlanUid=priorPlanUid)
    writeRtDose(out / "current" / "RTDOSE.dcm", currentDose, grids.currentDose, psCurrent, "PHYSICAL", "PLAN",
                "Dose re-irradiation 30.6Gy/17fx", referencedPlanUid=currentPlanUid)
    lap("plansAndDoses")
    progress(0.8, "observers")
    # observers
    observersJson = {"fibrosisObserver": FIBROSIS_OBSERVER, "missedExtensionObserver": MISSED_EXTENSION_OBSERVER,
                     "observers": list(OBSERVER_NAMES), "referenceImage": "../current/CT", "roi": "GTV", "rounds": {}}
    for roundNumber in (1, 2):
        masks = _observerMasks(phantom, seed, roundNumber, grids.currentCt, currentMasks["Fibrosis"],
                               currentMasks["Body"])
        folder = out / "observers" / f"round{roundNumber}"
        for name, mask in masks.items():
            writeRtStruct(folder / f"{name}.dcm", {"GTV": mask}, grids.currentCt, psCurrent, ctRef,
                          roiTypes={"GTV": "GTV"}, label=f"{name} R{roundNumber}",
                          seriesDescription=f"GTV {name} round {roundNumber}")
        observersJson["rounds"][str(roundNumber)] = {
            "description": "independent delineation" if roundNumber == 1 else "after radiologist input",
            "observers": [s.toDict() | {"volumeCc": round(float(masks[s.name].sum()) * grids.currentCt.voxelVolumeCc,
                                                          3)}
                          for s in observerSpecs(seed, roundNumber)]}
    trueGtvCc = float(currentMasks["GTV"].sum()) * grids.currentCt.voxelVolumeCc
    observersJson["trueGtvVolumeCc"] = round(trueGtvCc, 3)
    (out / "observers" / "observers.json").write_text(json.dumps(observersJson, indent=2))
    lap("observers")
    progress(0.9, "truth")
    # truth files
    (out / "truth").mkdir(exist_ok=True)
    sitk.WriteImage(_displacementImage(phantom, grids.displacement), str(out / "truth" / "prior_registration.nrrd"),
                    True)
    sitk.WriteTransform(phantom.mriTransform(), str(out / "truth" / "mri_registration.tfm"))
    marks, arrows = radiologistMarks(phantom)
    (out / "marks").mkdir(exist_ok=True)
    (out / "marks" / "radiologist_marks.mrk.json").write_text(json.dumps(_markupsJson(marks, arrows), indent=2))
    with open(out / "marks" / "radiologist_marks.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "r", "a", "s", "confidence", "frame"])
        for m in marks:
            writer.writerow([m["label"], *(f"{v:.3f}" for v in m["mriRasMm"]), m["confidence"], "MRI"])
    case = {
        "description": f"Built-in demo case (synthetic, generator {GENERATOR_VERSION}, size {size}, seed {seed})",
        "referenceImage": "current/CT", "structures": "current/RTSTRUCT.dcm",
        "mri": {"image": "MR", "registration": "rigid"},
        "courses": [
            {"name": "prior", "dose": "prior/RTDOSE.dcm", "plan": "prior/RTPLAN.dcm", "date": priorDate.isoformat(),
             "image": "prior/CT", "structures": "prior/RTSTRUCT.dcm", "registration": "deformable",
             # the recurrence and the fibrosis around it are tissue the prior CT did not hold
             "withoutCounterpart": ["GTV", "Fibrosis"],
             # the primary tumour of the prior CT has responded: tissue the current CT no longer holds
             "courseWithoutCounterpart": ["GTV_primary"]},
            {"name": "current", "dose": "current/RTDOSE.dcm", "plan": "current/RTPLAN.dcm",
             "date": today.isoformat(), "registration": "none"}],
        "tissues": CASE_TISSUES, "defaultAlphaBeta": DEFAULT_ALPHA_BETA, "targets": list(CASE_TARGETS),
        "constraints": "pelvic-reirradiation", "isodoseLevelsGy": [30, 50, 70, 90], "plannedCourse": None,
    }
    paths["case"].write_text(json.dumps(case, indent=2))
    truth = _truthDict(phantom, grids, size, seed, priorDate, today, mriDate, marks, currentMasks, priorDose,
                       currentDose)
    paths["truth"].write_text(json.dumps(truth, indent=2))
    lap("truth")
    timings["total"] = round(time.perf_counter() - start, 3)
    timings["totalCpu"] = round(time.process_time() - cpuStart, 3)
    timings["cpu"] = cpuTimings
    paths.update({"currentCt": out / "current" / "CT", "currentStructures": out / "current" / "RTSTRUCT.dcm",
                  "currentPlan": out / "current" / "RTPLAN.dcm", "currentDose": out / "current" / "RTDOSE.dcm",
                  "priorCt": out / "prior" / "CT", "priorStructures": out / "prior" / "RTSTRUCT.dcm",
                  "priorPlan": out / "prior" / "RTPLAN.dcm", "priorDose": out / "prior" / "RTDOSE.dcm",
                  "mri": out / "MR", "priorRegistration": out / "truth" / "prior_registration.nrrd",
                  "mriRegistration": out / "truth" / "mri_registration.tfm",
                  "observers": out / "observers", "observersJson": out / "observers" / "observers.json",
                  "marksJson": out / "marks" / "radiologist_marks.mrk.json",
                  "marksCsv": out / "marks" / "radiologist_marks.csv"})
    progress(1.0, "demo case written")
    logger.info("demo case (%s, seed %d) written to %s in %.1f s", size, seed, out, timings["total"])
    return DemoCase(outputDir=out, size=size, seed=seed, phantom=phantom, grids=grids, truth=truth, paths=paths,
                    timingsS=timings)


def _truthDict(phantom, grids, size, seed, priorDate, today, mriDate, marks, currentMasks, priorDose,
               currentDose) -> dict:
    # Jacobian of the deformation over the current CT extent (4 mm sampling is ample: sigma >= 40 mm)
    lo, hi = grids.currentCt.boundsLps()
    axes = [np.arange(a, b + 1e-6, 4.0) for a, b in zip(lo, hi, strict=True)]
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")
    jac = phantom.jacobianDeterminant(gx, gy, gz)
    ux, uy, uz = phantom.displacementMm(gx, gy, gz)
    dmag = np.sqrt((ux - phantom.rigidShiftMm[0]) ** 2 + (uy - phantom.rigidShiftMm[1]) ** 2
                   + (uz - phantom.rigidShiftMm[2]) ** 2)
    body = currentMasks["Body"]
    return {
        "generator": {"name": "ReirradiationDoseLib.core.democase", "version": GENERATOR_VERSION, "seed": seed,
                      "size": size},
        "patient": {"name": PATIENT_NAME, "id": PATIENT_ID},
        "dates": {"priorCourse": priorDate.isoformat(), "currentCourse": today.isoformat(),
                  "mri": mriDate.isoformat(), "intervalDays": (today - priorDate).days,
                  "intervalMonths": round((today - priorDate).days / _DAYS_PER_MONTH, 3)},
        "courses": {"prior": {"prescriptionGy": dosemodels.PRIOR_PRESCRIPTION_GY,
                              "fractions": dosemodels.PRIOR_FRACTIONS,
                              "maxGy": round(float(priorDose.max()), 4), "doseGrid": grids.priorDose.toDict()},
                    "current": {"prescriptionGy": dosemodels.CURRENT_PRESCRIPTION_GY,
                                "fractions": dosemodels.CURRENT_FRACTIONS,
                                "maxGy": round(float(currentDose.max()), 4),
                                "doseGrid": grids.currentDose.toDict()}},
        "grids": {"currentCt": grids.currentCt.toDict(), "priorCt": grids.priorCt.toDict(),
                  "mri": grids.mri.toDict(), "displacementField": grids.displacement.toDict()},
        "deformation": {
            "convention": "current-CT LPS point x corresponds to prior-anatomy point x + u(x); "
                          "u(x) = rigidShift + sum_b amplitude_b * exp(-|x - centre_b|^2 / (2 sigma_b^2)); "
                          "truth/prior_registration.nrrd samples u (vector float32, LPS mm) on the displacementField "
                          "grid (the current CT grid for 'small'; a 4 mm grid spanning the same voxel centres for "
                          "'clinical'); read it as sitkVectorFloat64 for sitk.DisplacementFieldTransform",
            "rigidShiftMm": list(phantom.rigidShiftMm),
            "bumps": [{"centreMm": list(b.centreMm), "amplitudeMm": list(b.amplitudeMm), "sigmaMm": b.sigmaMm}
                      for b in phantom.bumps],
            "maxNonRigidDisplacementMm": round(float(dmag.max()), 3),
            "maxDisplacementInBodyMm": None,
            "jacobianMin": round(float(jac.min()), 4), "jacobianMax": round(float(jac.max()), 4)},
        "mriRegistration": {
            "convention": "sitk Euler3DTransform mapping current-CT LPS points to MRI LPS points "
                          "(m = R (x - c) + c + t); usable as sitk.Resample(mri, currentCT, T)",
            "centreMm": list(phantom.mriCentreMm), "anglesDeg": list(phantom.mriAnglesDeg),
            "translationMm": list(phantom.mriTranslationMm),
            "matrix": [round(float(v), 8) for v in phantom.mriMatrix().ravel()]},
        "recurrence": {
            "gtvMainCentreLpsMm": list(phantom.gtvMainCentreMm), "gtvMainSemiAxesMm": list(phantom.gtvMainSemiAxesMm),
            "gtvLobeCentreLpsMm": list(phantom.gtvLobeCentreMm), "gtvLobeSemiAxesMm": list(phantom.gtvLobeSemiAxesMm),
            "lobeDescription": "extension lobe into the anterior cortex of S3 (missed by the missed-extension "
                               "observer in round 1)",
            "gtvVolumeCcOnCt": round(float(currentMasks["GTV"].sum()) * grids.currentCt.voxelVolumeCc, 3),
            "bodyVolumeCcOnCt": round(float(body.sum()) * grids.currentCt.voxelVolumeCc, 1),
            "sacralLevelsPriorZMm": SACRAL_LEVELS_Z_MM},
        "tissueRule": "targets (GTV, CTV) first with alpha/beta 10 and no recovery; otherwise the listed tissue "
                      "with the lowest alpha/beta (no truth point lies in two listed organs); outside every listed "
                      "structure alpha/beta 3 without recovery. Recovery is applied to the prior course only; "
                      "Nieder: 0/25/50 % at <6/6-12/>=12 months, Price: 0 % <6 months rising linearly to 50 % at "
                      "12 months. No truth point lies in the PTV outside the CTV.",
        "compositeFormula": "EQD2_k = D_k (D_k/n_k + a/b) / (2 + a/b) per course; composite = (1 - r) EQD2_prior + "
                            "EQD2_current (REFERENCE §1)",
        "noRegistrationNote": "expectedCompositeEqd2NoRegistrationGy takes the prior dose at the same LPS "
                              "coordinates x (registration 'none'); the prior and current CTs have different "
                              "frames of reference but overlapping LPS coordinates, so this is the answer of a "
                              "pipeline that ignores the setup shift and the deformation (the wrong answer, for "
                              "contrast)",
        "points": truthPoints(phantom, priorDate, today),
        "radiologistMarks": marks,
    }
