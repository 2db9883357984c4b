"""Analytic dose models of the demo case (physical dose, Gy).

Prior course, 50 Gy in 25 fractions (prior frame): a 4-field box (AP, PA, left and right lateral fields) around the
primary's mesorectal PTV. Each field's transverse profile is a difference of normal CDFs (penumbra sigma 3.5 mm)
plus a wide low-weight tail (sigma 25 mm, the low-dose bath), its depth dose ``exp(-mu * depth)`` from a fixed
entry plane; the sum is normalised to 50 Gy at the box centre. Opposed-field depth dose makes the box corners
about 104-105 % (the hot spots); where only one pair of fields passes the dose is about 50 %.

Current course, 30.6 Gy in 17 fractions (current frame): a conformal distribution around the recurrence, a
rounded box (super-ellipsoid, power 4) whose anterior half-axis is smaller and its penumbra steeper to spare bowel
and neorectum, with a 3 % lateral tilt (maximum about 103 %) and an 8 % wide tail; normalised to 30.6 Gy at the
centre of the GTV's main body.

Both doses are multiplied by a smooth body factor ``Phi(-sd_body / 1.5 mm)`` (no dose in air).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .anatomy import PelvisPhantom

__all__ = [
    "PRIOR_PRESCRIPTION_GY", "PRIOR_FRACTIONS", "CURRENT_PRESCRIPTION_GY", "CURRENT_FRACTIONS",
    "priorDoseGy", "currentDoseGy", "priorDoseInCurrentFrameGy", "PRIOR_BOX_MM",
]

PRIOR_PRESCRIPTION_GY = 50.0
PRIOR_FRACTIONS = 25
CURRENT_PRESCRIPTION_GY = 30.6
CURRENT_FRACTIONS = 17

# field edges of the 4-field box (prior frame, LPS mm): AP/PA apertures in x and z, lateral apertures in y and z
PRIOR_BOX_MM = {"x": (-72.0, 72.0), "y": (-18.0, 108.0), "z": (-110.0, 60.0)}
_PENUMBRA_MM = 3.5
_TAIL_MM = 25.0
_TAIL_WEIGHT = 0.06
_MU_PER_MM = 0.0035
_WEIGHTS = {"AP": 0.22, "PA": 0.30, "L": 0.24, "R": 0.24}
_ENTRY_MM = {"AP": -120.0, "PA": 125.0, "L": 170.0, "R": -170.0}
_BODY_EDGE_MM = 1.5

# current plan (relative to the GTV main centre, current frame)
_CUR_SEMI_MM = {"x": 44.0, "yAnterior": 30.0, "yPosterior": 42.0, "z": 46.0}
_CUR_OFFSET_MM = (-1.0, 5.0, 4.0)
_CUR_PENUMBRA_MM = (4.5, 3.0)  # lateral/posterior, anterior (bowel side)
_CUR_TAIL_MM = 30.0
_CUR_TAIL_WEIGHT = 0.08
_CUR_TILT = 0.03


def _aperture(t, lo: float, hi: float):
    core = ndtr((t - lo) / _PENUMBRA_MM) - ndtr((t - hi) / _PENUMBRA_MM)
    tail = ndtr((t - lo) / _TAIL_MM) - ndtr((t - hi) / _TAIL_MM)
    return (1.0 - _TAIL_WEIGHT) * core + _TAIL_WEIGHT * tail


def _priorRaw(x, y, z):
    pz = _aperture(z, *PRIOR_BOX_MM["z"])
    px = _aperture(x, *PRIOR_BOX_MM["x"])
    py = _aperture(y, *PRIOR_BOX_MM["y"])
    w, e, mu = _WEIGHTS, _ENTRY_MM, _MU_PER_MM
    apPa = w["AP"] * np.exp(-mu * (y - e["AP"])) + w["PA"] * np.exp(-mu * (e["PA"] - y))
    lat = w["L"] * np.exp(-mu * (e["L"] - x)) + w["R"] * np.exp(-mu * (x - e["R"]))
    return pz * (px * apPa + py * lat)


_PRIOR_REFERENCE = tuple(0.5 * (lo + hi) for lo, hi in (PRIOR_BOX_MM["x"], PRIOR_BOX_MM["y"], PRIOR_BOX_MM["z"]))
_PRIOR_NORM = float(_priorRaw(*(np.float64(v) for v in _PRIOR_REFERENCE)))


def _bodyFactor(bodySd):
    return ndtr(-bodySd / _BODY_EDGE_MM)


def priorDoseGy(phantom: PelvisPhantom, x, y, z):
    """Prior-course physical dose (Gy) at prior-frame points (50 Gy at the box centre)."""
    dose = (PRIOR_PRESCRIPTION_GY / _PRIOR_NORM) * _priorRaw(x, y, z) * _bodyFactor(phantom.bodySd(x, y, z))
    return dose.astype(np.result_type(x, np.float32), copy=False)


def priorDoseInCurrentFrameGy(phantom: PelvisPhantom, x, y, z):
    """The prior dose carried by the anatomy: prior dose at ``x + u(x)`` for current-frame points ``x``."""
    return priorDoseGy(phantom, *phantom.toPrior(x, y, z))


def _currentRaw(phantom: PelvisPhantom, x, y, z):
    c = phantom.gtvMainCentreMm
    dx = x - (c[0] + _CUR_OFFSET_MM[0])
    dy = y - (c[1] + _CUR_OFFSET_MM[1])
    dz = z - (c[2] + _CUR_OFFSET_MM[2])
    s = _CUR_SEMI_MM
    ay = np.where(dy < 0, s["yAnterior"], s["yPosterior"])
    qx, qy, qz = dx / s["x"], dy / ay, dz / s["z"]
    r4 = qx ** 4 + qy ** 4 + qz ** 4
    r = np.sqrt(np.sqrt(r4))
    grad = np.sqrt((qx ** 3 / s["x"]) ** 2 + (qy ** 3 / ay) ** 2 + (qz ** 3 / s["z"]) ** 2)
    sd = np.where(grad > 1e-12, (r - 1.0) * r ** 3 / np.maximum(grad, 1e-12), -min(s.values()))
    anterior = 0.5 * (1.0 + np.tanh(-dy / 10.0))
    sigma = _CUR_PENUMBRA_MM[0] + (_CUR_PENUMBRA_MM[1] - _CUR_PENUMBRA_MM[0]) * anterior
    profile = (1.0 - _CUR_TAIL_WEIGHT) * ndtr(-sd / sigma) + _CUR_TAIL_WEIGHT * ndtr(-sd / _CUR_TAIL_MM)
    return profile * (1.0 + _CUR_TILT * np.tanh(dx / s["x"]))


def currentDoseGy(phantom: PelvisPhantom, x, y, z):
    """Current-course physical dose (Gy) at current-frame points (30.6 Gy at the GTV main centre)."""
    norm = float(_currentRaw(phantom, *(np.float64(v) for v in phantom.gtvMainCentreMm)))
    body = phantom.bodySd(*phantom.toPrior(x, y, z))
    dose = (CURRENT_PRESCRIPTION_GY / norm) * _currentRaw(phantom, x, y, z) * _bodyFactor(body)
    return dose.astype(np.result_type(x, np.float32), copy=False)
