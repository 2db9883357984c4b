"""The conservative option (case file ``conservativeRadiusMm``) through the dose pipeline: each prior course's mapped
dose is replaced by an upper bound of its maximum within the radius, the current course is left as planned, and
unknown dose spreads with a warning per structure (a review: only the filter alone was tested)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ReirradiationDoseLib.core.dosemapping import reachFootprint
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.pipeline import CourseInput, DoseInputs, DoseSettings, computeDose

SPACING = (3.5, 3.5, 5.0)  # the small demo's grid
SHAPE = (7, 9, 9)  # k, j, i
HOT = (3, 4, 4)


def _run(radiusMm: float, priorSlices: int = SHAPE[0]):
    geometry = ImageGeometry(SHAPE[::-1], SPACING)
    prior = np.full((priorSlices,) + SHAPE[1:], 10.0, np.float32)
    prior[HOT] = 60.0
    current = np.full(SHAPE, 2.0, np.float32)
    current[HOT] = 30.0
    priorGeometry = ImageGeometry((SHAPE[2], SHAPE[1], priorSlices), SPACING)
    organ = np.zeros(SHAPE, bool)
    organ[4:6, 3:6, 3:6] = True  # two slices: the one beyond a five-slice prior grid, and the one below it
    courses = [CourseInput(name="prior", doseGy=prior, doseGeometry=priorGeometry, numberOfFractions=30,
                           date=dt.date(2023, 1, 10)),
               CourseInput(name="current", doseGy=current, doseGeometry=geometry, numberOfFractions=15,
                           isCurrent=True, date=dt.date(2025, 2, 3))]
    settings = DoseSettings(conservativeRadiusMm=radiusMm, constraints=None)
    return computeDose(DoseInputs(referenceImage=geometry.emptyImage(), masks={"Organ": organ}, courses=courses,
                                  settings=settings))


def test_the_prior_course_takes_its_maximum_within_the_radius_and_the_current_course_stays():
    """On 3.5 x 3.5 x 5 mm voxels 3 mm reaches the 26 neighbours (the trilinear interpolation between voxel centres
    depends on them), so the prior's hot voxel spreads to its 3 x 3 x 3 block and no further; the current course's
    hot voxel does not spread. Without the option nothing spreads."""
    footprint = reachFootprint(SPACING, 3.0)
    assert footprint.shape == (3, 3, 3) and footprint.sum() == 27
    result = _run(3.0)
    prior, current = (c for c in result.courses)
    block = np.zeros(SHAPE, bool)
    block[2:5, 3:6, 3:6] = True
    assert np.all(prior.mappedDoseGy[block] == 60.0)
    assert np.all(prior.mappedDoseGy[~block] == 10.0)
    assert current.mappedDoseGy[HOT] == 30.0 and np.count_nonzero(current.mappedDoseGy == 30.0) == 1
    assert prior.registration["conservativeRadiusMm"] == 3.0 and "conservativeRadiusMm" not in current.registration
    plain = _run(0.0)
    assert np.count_nonzero(plain.courses[0].mappedDoseGy == 60.0) == 1


def test_unknown_prior_dose_spreads_within_the_radius_and_is_warned_per_structure():
    """A prior grid of five of the seven slices: the organ's top slice is unknown (warned as outside the grid), and
    with a 3 mm radius the slice below it too, its maximum within the radius reaching the unknown slice: warned
    apart, naming the radius, the course and the structure's further share."""
    result = _run(3.0, priorSlices=5)
    prior = result.courses[0]
    assert np.isnan(prior.mappedDoseGy[4:]).all() and np.isfinite(prior.mappedDoseGy[:4]).all()
    warnings = result.warnings
    assert "50.0 % of 'Organ' lies outside the dose grid of course 'prior'" in " ".join(warnings)
    assert any(w.startswith("a further 50.0 % of 'Organ' lies within the conservative radius (3 mm) of where the dose "
                            "of course 'prior'") for w in warnings), warnings
    plain = _run(0.0, priorSlices=5)
    assert np.isnan(plain.courses[0].mappedDoseGy[5:]).all() and np.isfinite(plain.courses[0].mappedDoseGy[:5]).all()
    assert not any("conservative radius" in w for w in plain.warnings)
    assert prior.eqd2Gy[HOT] == pytest.approx(60.0 * (2.0 + 3.0) / 5.0, abs=1e-3)  # 2 Gy a fraction: EQD2 = dose
