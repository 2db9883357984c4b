"""Landmark pairs for checking a registration: the same anatomical points marked on the current CT and on a course's
CT, and the target registration error (TRE) of the registration at each.

A physicist checks a deformable registration at points the images show unambiguously (bony landmarks, calcifications,
surgical clips, fiducial markers). AAPM TG-132 (Brock et al., Med Phys 2017) asks for the TRE at such landmarks to
be within the largest voxel dimension of the images (ideally under 2 mm); :data:`TRE_TOLERANCE_MIN_MM` and the
reference CT's largest voxel dimension set the tolerance warned against here.

Files (each point list one file, paired by label):

- Slicer markups JSON (``*.mrk.json``): the first markup's ``controlPoints`` with ``label`` and ``position``, in its
  ``coordinateSystem`` (``LPS`` or ``RAS``; Slicer writes LPS);
- CSV with a header naming the system: ``label,L,P,S`` (LPS mm) or ``label,R,A,S`` (RAS mm).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

__all__ = ["readLandmarks", "landmarkCheck", "registrationToleranceMm", "TRE_TOLERANCE_MIN_MM"]

TRE_TOLERANCE_MIN_MM = 2.0


def registrationToleranceMm(referenceSpacingMm) -> float:
    """AAPM TG-132's tolerance of a registration check (landmark TRE, contour MDA): the reference CT's largest voxel
    dimension, at least :data:`TRE_TOLERANCE_MIN_MM`."""
    return max(TRE_TOLERANCE_MIN_MM, float(max(float(s) for s in referenceSpacingMm)))


def readLandmarks(path) -> dict[str, np.ndarray]:
    """``{label: LPS point (mm)}`` from a markups JSON or CSV file (see the module docstring); InputError naming the
    file for anything else: unreadable, no points, a point without a label, a label twice, a coordinate that is not
    a finite number, an unknown coordinate system."""
    path = Path(path)
    if not path.is_file():
        raise InputError("landmark file not found", path)
    name = path.name.lower()
    if name.endswith(".json"):
        rows, system = _fromMarkupsJson(path)
    elif name.endswith(".csv"):
        rows, system = _fromCsv(path)
    else:
        raise InputError("landmarks must be a Slicer markups file (.mrk.json) or a CSV (label,L,P,S or label,R,A,S)",
                         path)
    if not rows:
        raise InputError("the landmark file holds no points", path)
    points: dict[str, np.ndarray] = {}
    for label, values in rows:
        label = str(label).strip() if label is not None else ""
        if not label:
            raise InputError("a landmark has no label (points are paired between the two files by label)", path)
        if label in points:
            raise InputError(f"landmark '{label}' appears twice", path)
        try:
            point = np.array([float(v) for v in values], dtype=float)
        except (TypeError, ValueError):
            raise InputError(f"landmark '{label}': its coordinates {values!r} are not numbers", path) from None
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise InputError(f"landmark '{label}': its coordinates {values!r} are not three finite numbers", path)
        points[label] = point if system == "LPS" else point * np.array([-1.0, -1.0, 1.0])
    return points


def _fromMarkupsJson(path: Path) -> tuple[list, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"not a readable markups JSON file ({error})", path) from None
    markups = data.get("markups") if isinstance(data, dict) else None
    if not isinstance(markups, list) or not markups or not isinstance(markups[0], dict):
        raise InputError("not a Slicer markups file: no 'markups' list", path)
    markup = markups[0]
    system = str(markup.get("coordinateSystem", "LPS")).upper()
    if system not in ("LPS", "RAS"):
        raise InputError(f"unknown coordinate system '{system}' (LPS or RAS)", path)
    controlPoints = markup.get("controlPoints") or []
    if not isinstance(controlPoints, list):
        raise InputError("'controlPoints' is not a list", path)
    return [(p.get("label"), p.get("position")) if isinstance(p, dict) else (None, None) for p in controlPoints], system


def _fromCsv(path: Path) -> tuple[list, str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            table = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"not a readable CSV file ({error})", path) from None
    if not table:
        raise InputError("the landmark file is empty", path)
    header = [cell.strip().upper() for cell in table[0]]
    systems = {("LABEL", "L", "P", "S"): "LPS", ("LABEL", "R", "A", "S"): "RAS"}
    system = systems.get(tuple(header[:4]))
    if system is None or len(header) != 4:
        raise InputError(f"the header {table[0]} must be label,L,P,S (LPS mm) or label,R,A,S (RAS mm)", path)
    rows = []
    for number, row in enumerate(table[1:], start=2):
        if len(row) != 4:
            raise InputError(f"line {number} has {len(row)} values instead of 4 (label and three coordinates)", path)
        rows.append((row[0], row[1:]))
    return rows, system


def landmarkCheck(transform: sitk.Transform | None, currentPoints, coursePoints,
                  referenceSpacingMm) -> tuple[dict, list]:
    """TRE of ``transform`` (current-CT LPS -> course LPS; None: identity) at the landmarks ``currentPoints`` (on the
    current CT) and ``coursePoints`` (the same points on the course's CT), paired by label. Each is a file
    (:func:`readLandmarks`) or a ``(name, {label: LPS point})`` pair (e.g. a Slicer point list's).

    Returns ``(summary, warnings)``: the summary holds ``pairs``, ``meanMm``, ``maxMm``, ``worst`` (label),
    ``perPairMm`` ``{label: mm}``, ``toleranceMm`` (the largest voxel dimension of the reference CT, at least
    :data:`TRE_TOLERANCE_MIN_MM`), ``aboveTolerance`` (labels), ``unpaired`` (labels in one list only) and ``files``;
    warnings name the lists for unpaired labels and for landmarks beyond the tolerance. No label in common:
    InputError."""
    (currentName, current), (courseName, course) = (_named(points) for points in (currentPoints, coursePoints))
    common = [label for label in current if label in course]
    if not common:
        raise InputError(f"no landmark label in common with {Path(courseName).name} (points are paired by label)",
                         currentName)
    unpaired = sorted(set(current) ^ set(course))
    errors = {}
    for label in common:
        mapped = np.array(transform.TransformPoint([float(v) for v in current[label]])) if transform is not None \
            else current[label]
        errors[label] = float(np.linalg.norm(mapped - course[label]))
    tolerance = registrationToleranceMm(referenceSpacingMm)
    above = [label for label in common if errors[label] > tolerance]
    worst = max(common, key=lambda label: errors[label])
    summary = {"pairs": len(common), "meanMm": float(np.mean(list(errors.values()))), "maxMm": errors[worst],
               "worst": worst, "perPairMm": errors, "toleranceMm": tolerance, "aboveTolerance": above,
               "unpaired": unpaired, "files": [currentName, courseName]}
    warnings = []
    if unpaired:
        warnings.append(f"landmarks {', '.join(repr(v) for v in unpaired)} are in only one of "
                        f"{Path(currentName).name} and {Path(courseName).name}: not used")
    if above:
        warnings.append(f"the registration misses {len(above)} of {len(common)} landmarks by more than "
                        f"{tolerance:g} mm (the reference CT's largest voxel dimension, at least "
                        f"{TRE_TOLERANCE_MIN_MM:g} mm; AAPM TG-132): "
                        + ", ".join(f"'{label}' {errors[label]:.1f} mm" for label in above)
                        + "; the dose mapped near them is displaced by as much")
    return summary, warnings


def _named(points) -> tuple[str, dict]:
    if isinstance(points, tuple):
        name, table = points
        return str(name), {str(k): np.asarray(v, dtype=float) for k, v in table.items()}
    return str(points), readLandmarks(points)
