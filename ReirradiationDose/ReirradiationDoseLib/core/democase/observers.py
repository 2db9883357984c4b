"""Simulated GTV delineations of the demo recurrence: several observers, two rounds.

Observer ``o`` in a round draws ``{ sd_GTV(x) + jitter_o(x) - bias_o < 0 }``, where ``sd_GTV`` is the true GTV's
signed distance (mm), ``bias_o`` a systematic margin (mm, positive = generous) and ``jitter_o`` a smooth random
surface perturbation: a sum of ``K`` plane waves with random directions, wavelengths 30-70 mm and phases, scaled to
a root-mean-square of ``jitterMm`` (amplitude ``jitterMm * sqrt(2 / K)`` each). Two systematic errors are built in
(round 1):

- the *fibrosis observer* also includes the presacral fibrosis within ``fibrosisReachMm`` of the tumour;
- the *missed-extension observer* draws only the main body and misses the extension lobe toward S3.

Round 2 ("with radiologist input"): the jitter and the biases are smaller, nobody includes the fibrosis, and the
extension is included by everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import PelvisPhantom

__all__ = ["ObserverSpec", "observerSpecs", "observerMask", "OBSERVER_NAMES", "FIBROSIS_OBSERVER",
           "MISSED_EXTENSION_OBSERVER"]

OBSERVER_NAMES = ("obs1", "obs2", "obs3", "obs4", "obs5")
FIBROSIS_OBSERVER = "obs3"
MISSED_EXTENSION_OBSERVER = "obs4"
_BIAS_MM = {"obs1": 0.0, "obs2": 1.5, "obs3": -0.5, "obs4": 0.5, "obs5": -1.2}
_ROUNDS = {1: {"jitterMm": 2.5, "biasScale": 1.0}, 2: {"jitterMm": 1.0, "biasScale": 0.4}}
_WAVES = 8


@dataclass(frozen=True)
class ObserverSpec:
    name: str
    round: int
    jitterMm: float
    biasMm: float
    includesFibrosis: bool
    missesExtension: bool
    fibrosisReachMm: float
    waveVectorsPerMm: tuple[tuple[float, float, float], ...]
    phasesRad: tuple[float, ...]

    def toDict(self) -> dict:
        return {"name": self.name, "round": self.round, "jitterRmsMm": self.jitterMm, "biasMm": self.biasMm,
                "includesFibrosis": self.includesFibrosis, "missesExtension": self.missesExtension,
                "fibrosisReachMm": self.fibrosisReachMm}


def observerSpecs(seed: int, roundNumber: int) -> list[ObserverSpec]:
    """The observers of one round (deterministic in ``seed``)."""
    params = _ROUNDS[roundNumber]
    specs = []
    for index, name in enumerate(OBSERVER_NAMES):
        rng = np.random.default_rng([int(seed), 7919, roundNumber, index])
        directions = rng.normal(size=(_WAVES, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(30.0, 70.0, size=_WAVES)
        vectors = directions * (2.0 * np.pi / wavelengths)[:, None]
        phases = rng.uniform(0.0, 2.0 * np.pi, size=_WAVES)
        specs.append(ObserverSpec(
            name=name, round=roundNumber, jitterMm=params["jitterMm"], biasMm=_BIAS_MM[name] * params["biasScale"],
            includesFibrosis=(roundNumber == 1 and name == FIBROSIS_OBSERVER),
            missesExtension=(roundNumber == 1 and name == MISSED_EXTENSION_OBSERVER),
            fibrosisReachMm=12.0,
            waveVectorsPerMm=tuple(tuple(float(v) for v in row) for row in vectors),
            phasesRad=tuple(float(p) for p in phases)))
    return specs


def jitterMm(spec: ObserverSpec, x, y, z):
    """The observer's smooth boundary perturbation (mm) at current-frame points."""
    amplitude = spec.jitterMm * np.sqrt(2.0 / len(spec.phasesRad))
    out = np.zeros_like(x)
    for (kx, ky, kz), phase in zip(spec.waveVectorsPerMm, spec.phasesRad, strict=True):
        out = out + amplitude * np.sin(kx * x + ky * y + kz * z + phase)
    return out


def observerMask(phantom: PelvisPhantom, spec: ObserverSpec, x, y, z, fibrosisMask=None, bodyMask=None):
    """The observer's GTV (boolean) at current-frame points ``x, y, z``.

    ``fibrosisMask`` (the Fibrosis structure at the same points) is needed for the fibrosis observer.
    """
    base = phantom.gtvMainSd(x, y, z) if spec.missesExtension else phantom.gtvSd(x, y, z)
    mask = (base + jitterMm(spec, x, y, z) - spec.biasMm) < 0
    if spec.includesFibrosis:
        if fibrosisMask is None:
            raise ValueError("the fibrosis observer needs the fibrosis mask")
        mask |= fibrosisMask & (phantom.gtvSd(x, y, z) < spec.fibrosisReachMm)
    if bodyMask is not None:
        mask &= bodyMask
    return mask
