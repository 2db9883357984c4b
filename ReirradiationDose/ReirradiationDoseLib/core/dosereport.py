"""Tables, summary JSON and the self-contained HTML report of a dose workflow result.

The report states every assumption the ESTRO-EORTC re-irradiation consensus asks to report beside cumulative
doses (Andratschke et al., Lancet Oncol 2022): α/β per structure, recovery model and interval, fractionation and
where it came from, registration method and its quality, dose-grid coverage; and the model's limitations.
Patient name and ID appear only when ``includeIdentity`` is set.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import time
from pathlib import Path

import numpy as np

from . import __version__
from .recovery import monthsText

__all__ = ["dvhRows", "constraintRows", "summaryDict", "writeCsv", "reportHtml", "dvhSvg"]

# titles of the registration-check pictures start with this (mrml/dosescene.py makes them)
REGISTRATION_PICTURE_PREFIX = "Registration check"

FULL_REPAIR_LIMITATION = (
    "EQD2 uses the linear-quadratic model with each voxel's own dose per fraction (d = D/n); every course here is "
    "given once a day and full repair between fractions is assumed. A course given more than once a day needs its "
    "fractions per day and the hours between them (fractionsPerDay, hoursBetweenFractions) for the incomplete-repair "
    "correction; without them it is computed as if given once a day.")
INCOMPLETE_REPAIR_LIMITATION = (
    "EQD2 uses the linear-quadratic model with each voxel's own dose per fraction (d = D/n). Where a course (or the "
    "planned course of the remaining budget) is given more than once a day, its EQD2 includes incomplete repair "
    "between the fractions of a day (Thames 1985: mono-exponential repair with each tissue's half-time, complete "
    "repair overnight, the fractions of a day equally spaced); the half-times are uncertain (published values about "
    "0.5-5 h) and a longer one gives a higher EQD2.")
LIMITATIONS = (
    FULL_REPAIR_LIMITATION,
    "Prior doses are mapped point-wise through the registration (pull-back, linear interpolation); dose is not "
    "conserved under deformation. Where the deformable registration is doubtful, use the conservative option "
    "(maximum of the prior dose within a radius).",
    "Voxels that map outside a course's dose grid are unknown (not 0 Gy) and are excluded from DVH metrics; the "
    "coverage of every structure is listed.",
    "Recovery discounts the prior course's EQD2 on organ-at-risk voxels only: EQD2 = Σ (1 − r) EQD2_k "
    "(\"T − (1 − r) P\" wording). Targets and the current course are never discounted.",
    "Research software, not a certified medical device: a qualified medical physicist must verify every number.",
)


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.{digits}f}"
    return str(value)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "toDict"):
        return _jsonable(value.toDict())
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def dvhRows(result) -> list[dict]:
    """One row per structure and dose (composite and each course), the metrics of the DVH, every dose at the
    structure's own α/β (``alphaBetaGy``); ``targetOwnedPercent``: the share of a non-target structure's voxels a
    target owns, where the composite applies no recovery (REFERENCE §1: recovery is a normal-tissue concept)."""
    rows = []
    targetVoxels = next((c.targetVoxels for c in result.courses if getattr(c, "targetVoxels", None) is not None),
                        None)
    for structure, entry in result.dvh.items():
        unknown = entry.get("_unknownPercent", {})
        own, targetPercent = _ownerAlphaBeta(result, structure), None
        mask = result.masks.get(structure)
        if mask is not None and mask.any() and not _isTarget(result, structure):
            targetPercent = 0.0 if targetVoxels is None else 100.0 * float(np.mean(targetVoxels[mask]))
        for which, dvh in entry.items():
            if which.startswith("_"):
                continue
            d = dvh.toDict()
            rows.append({
                "structure": structure, "dose": "composite EQD2" if which == "composite" else f"{which} EQD2",
                "alphaBetaGy": own, "targetOwnedPercent": targetPercent, "volumeCc": d.get("volumeCc"),
                "dminGy": d.get("dminGy"), "dmeanGy": d.get("dmeanGy"), "dmaxGy": d.get("dmaxGy"),
                "d0_03ccGy": d.get("d0_03ccGy"), "d2ccGy": d.get("d2ccGy"), "d95PercentGy": d.get("d95PercentGy"),
                "unknownVolumePercent": unknown.get(which, 0.0),
                # last: columns read by position before it stay where they were
                "recoveryCredited": _recoveryCredited(result, structure) if which == "composite" else
                "none (the course alone)",
            })
    return rows


def _recoveryCredited(result, structure: str) -> str:
    """The recovery the composite DVH of ``structure`` credits, per prior course ("'prior' 50 % (price)"; "none"),
    in the DVH table's own column (a review: dvh.csv read the bladder's D2cc 12.79 Gy with Price's 50 % credited,
    constraints.csv 25.56 Gy as the plain sum its limit asks for, and only the report's caption said why)."""
    parts = []
    for course in result.courses:
        own = course.ownRecovery(structure) if hasattr(course, "ownRecovery") else None
        if own:
            model = (((course.recovery or {}).get("structures") or {}).get(structure) or {}).get("model") or {}
            name = model.get("model") if isinstance(model, dict) else model
            parts.append(f"'{course.name}' {100.0 * own:.3g} %" + (f" ({name})" if name else ""))
    text = ", ".join(parts) or "none"
    return text + ("; none where a target owns a voxel" if parts and not _isTarget(result, structure) else "")


def _tissueEntry(result, structure):
    """The tissue-table entry ``structure`` is read with, or None (a result without a table)."""
    try:
        return result.tissueTable.entryFor(structure)
    except Exception:
        return None


def _targetReason(result, settings, structure) -> str:
    """Whether ``structure`` is a target and why: the case named it, or the tissue table's entry it matches by name
    (a PTV the case did not list is a target too: said, not silent)."""
    if structure in settings.targets:
        return "yes (the default targets GTV, CTV)" if settings.targetsByDefault else "yes (case targets)"
    if _isTarget(result, structure):
        entry = _tissueEntry(result, structure)
        return f"yes (by name: tissue-table entry '{entry.name if entry else 'target'}')"
    return ""


def _tissueRecoveryText(result, structure) -> str:
    """The recovery model of ``structure``'s tissue as the report states it (none for targets)."""
    entry = _tissueEntry(result, structure)
    if entry is None:
        return ""
    return "none (target)" if entry.isTarget else entry.recovery.describe()


def _ownerAlphaBeta(result, structure):
    entry = _tissueEntry(result, structure)
    return None if entry is None else entry.alphaBetaGy


def contourCheckRows(result) -> list[dict]:
    """One row per course and structure of the courses' contour checks (core/contourcheck), with the tolerance."""
    rows = []
    for course in result.courses:
        check = (course.registration or {}).get("contourCheck")
        for row in (check or {}).get("structures", []):
            rows.append({"course": course.name, **row, "toleranceMm": check["toleranceMm"]})
    return rows


def organsWithoutCumulativeLimit(result) -> list[dict]:
    """The organs (not targets, not the body outline) no cumulative limit of the constraint set reads, with their
    composite D0.03cc at their own α/β: nothing judges them, and the current course's scaling does not stop for them
    (a physicist's review: the demo's sacral plexus at 80.8 Gy EQD2 at α/β 2 had first-course limits only)."""
    judged = {r.structureName for r in result.constraintResults
              if getattr(r, "structureName", None) and r.constraint.kind == "cumulative"}
    rows = []
    for structure, entry in result.dvh.items():
        if structure in judged or _isTarget(result, structure) or _isBodyOutline(result, structure):
            continue
        composite = entry.get("composite")
        d = composite.toDict() if composite is not None else {}
        rows.append({"structure": structure, "alphaBetaGy": _ownerAlphaBeta(result, structure),
                     "d0_03ccGy": d.get("d0_03ccGy"), "dmaxGy": d.get("dmaxGy"),
                     "unknownVolumePercent": entry.get("_unknownPercent", {}).get("composite", 0.0)})
    return rows


def _isBodyOutline(result, structure) -> bool:
    entry = _tissueEntry(result, structure)
    return entry is not None and entry.name == "External"


def constraintRows(result) -> list[dict]:
    """One flat row per constraint result: structure, metric, limit, α/β, the course (a first-course limit has one
    row per course; empty for a cumulative one), value, margin, status, the dose the value was read from, source."""
    rows = []
    for item in result.constraintResults:
        d = item.toDict() if hasattr(item, "toDict") else dict(item)
        constraint = d.get("constraint") or {}
        rows.append({
            "structure": d.get("structureName") or constraint.get("structure"),
            "constraintOrgan": constraint.get("structure"), "metric": constraint.get("metric"),
            "comparison": constraint.get("comparison"), "limit": constraint.get("limit"), "unit": d.get("unit"),
            "alphaBetaGy": constraint.get("alphaBetaGy"), "kind": constraint.get("kind"),
            "level": constraint.get("level"), "course": d.get("course") or "", "value": d.get("value"),
            "margin": d.get("margin"), "status": d.get("status"), "dose": d.get("dose", ""), "reason": d.get("reason"),
            "source": constraint.get("source")})
    return rows


def failureSentence(rows: list[dict], currentCourse: str | None) -> str:
    """The constraint failures in one clause, split as a physicist reads them (a physicist's review: "4 single-course
    constraint(s) failed" were all the prior courses' delivered doses): the cumulative limits failed (how many only
    observational), the current course's single-course fails, and the prior courses' delivered doses above a
    single-course tolerance. ``rows``: :func:`constraintRows`."""
    failed = [r for r in rows if r.get("status") == "fail"]
    cumulative = [r for r in failed if r.get("kind") == "cumulative"]
    observational = sum(r.get("level") == "observational" for r in cumulative)
    # a review: "0 cumulative limit(s) failed" where the only limit that applied could not be evaluated; counted are
    # the limits (not observational) of organs the case delineates (a verification: "4 not evaluated" counted two
    # organs the case has none of and an observational limit)
    unjudged = sum(r.get("kind") == "cumulative" and r.get("status") == "not evaluated"
                   and r.get("level") != "observational"
                   and not str(r.get("reason") or "").startswith("no structure named") for r in rows)
    single = [r for r in failed if r.get("kind") != "cumulative"]
    current = sum(r.get("course") == currentCourse for r in single)
    text = (f"{len(cumulative)} cumulative limit(s) failed"
            + (f" ({observational} of them observational)" if observational else "")
            + (f", {unjudged} not evaluated" if unjudged else "")
            + f"; the current course fails {current} single-course limit(s)")
    if len(single) > current:
        text += f"; prior courses' delivered doses exceed {len(single) - current} single-course tolerance(s)"
    return text


_PATH_KEYS = ("path", "file", "dosefile", "casefile", "movingimage", "image", "node", "initialtransform")
# in free text (warnings): absolute paths (POSIX or Windows; their folders may carry patient names) and DICOM UIDs
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:/|[A-Za-z]:\\)(?:[^\s'\"()/\\]+[/\\])+(?=[^\s'\"()/\\]*)")
_UID = re.compile(r"(?<![\w.])\d+(?:\.\d+){4,}(?![\w.])")
_ENCLOSED = re.compile(r"(?<=\()(?:/|[A-Za-z]:\\)[^()]*(?=\))|(?<=')(?:/|[A-Za-z]:\\)[^']*(?=')")
# calendar dates as the warnings write them (ISO, a course's or a plan's date)
_ISO_DATE = re.compile(r"(?<![\w.-])(?:1[89]|2\d)\d\d-[01]\d-[0-3]\d(?![\w.-])")


# times of day that go with a date (DICOM's); a key merely ending in "Time" may be a duration ("overallTreatmentTime")
_TIME_OF_DAY_KEYS = {"time", "studytime", "seriestime", "contenttime", "acquisitiontime", "instancecreationtime"}


def _isDateKey(key: str) -> bool:
    """A key holding a calendar date or a time of day ("date", "studyDate", "priorDate", "StudyTime"), not one that
    merely holds the letters ("repairHalfTimeHours", "intervalMonths") or a duration ("overallTreatmentTime")."""
    return key.lower() in ("date", *_TIME_OF_DAY_KEYS) or bool(re.search(r"[a-z](Date|DateTime)$", key))


def _lastComponent(match) -> str:
    return re.split(r"[/\\]", match.group(0).rstrip("/\\"))[-1]


def anonymizeText(text: str) -> str:
    """Free text (a warning) without identifying detail: absolute paths reduced to their last component (whole when
    in parentheses or quotes, as the warnings write them, spaces and all), DICOM UIDs and calendar dates replaced."""
    text = _UID.sub("(UID)", _ABSOLUTE_PATH.sub("", _ENCLOSED.sub(_lastComponent, text)))
    return _ISO_DATE.sub("(date)", text)


def anonymizeSummary(summary, newUids: dict | None = None):
    """De-identify a summary: drop every UID and file list, reduce paths to file names (folder names may carry
    patient names), empty every calendar date (the courses', the CT's study date, the recovery's prior and current
    dates; the intervals in days and months, which the recovery needs, stay), clean every free text
    (:func:`anonymizeText`: the warnings, and the constraint, scaling and budget reasons, which name course dates),
    and name the study / frame of reference by the de-identified RTDOSE's new UIDs."""
    def scrub(value, key=""):
        lowered = key.lower()
        if key and _isDateKey(key) and not isinstance(value, (dict, list)):
            return None
        if isinstance(value, dict):
            # a UID key: "...Uid", "...UID", "uid...", not a word that merely holds the letters ("guided")
            return {k: scrub(v, k) for k, v in value.items()
                    if not re.search(r"UID|Uid|^uid", k) and k.lower() not in ("files", "skippedfiles")
                    and not k.lower().startswith("patient")}
        if isinstance(value, list):
            return [scrub(v, key) for v in value]
        if isinstance(value, str) and lowered in _PATH_KEYS and ("/" in value or "\\" in value):
            return Path(value).name
        if isinstance(value, str):  # every free text (warnings, reasons, notes: a course's dates, a file's path)
            return anonymizeText(value)
        return value

    out = scrub(summary)
    if newUids and isinstance(out.get("referenceImage"), dict):
        out["referenceImage"].update({k: v for k, v in newUids.items() if v})
    out["anonymized"] = True
    return out


def summaryDict(result, includeIdentity: bool = False, anonymize: bool = False, newUids: dict | None = None) -> dict:
    """Everything needed to reproduce and audit the result (inputs with UIDs/paths, fractions, α/β, recovery,
    registration and its quality, per-structure metrics, constraint results, warnings)."""
    settings = result.settings
    reference = dict(result.referenceInfo)
    if not includeIdentity:
        for key in list(reference):
            if key.lower().startswith("patient"):
                reference.pop(key)
    courses = []
    for c in result.courses:
        doseInfo = {k: v for k, v in c.doseInfo.items() if includeIdentity or not k.lower().startswith("patient")}
        courses.append({
            "name": c.name, "current": c.isCurrent, "date": c.date, "startDate": c.startDate, "doseFile": c.doseFile,
            "dose": doseInfo,
            "numberOfFractions": c.numberOfFractions, "fractionsSource": c.fractionsSource,
            "prescriptionGy": c.prescriptionGy, "registration": c.registration,
            "doseGridCoveragePercent": 100.0 * c.coverageFraction, "recovery": c.recovery,
            "maxPhysicalDoseGy": float(np.nanmax(c.mappedDoseGy)) if np.isfinite(c.mappedDoseGy).any() else None,
            "maxEqd2Gy": float(np.nanmax(c.eqd2Gy)) if np.isfinite(c.eqd2Gy).any() else None,
            "schedule": c.schedule.toDict(), "incompleteRepair": c.incompleteRepair,
        })
    composite = result.compositeEqd2Gy
    finite = np.isfinite(composite)
    summary = _jsonable({
        "software": "Reirradiation", "caseFile": settings.sourcePath, "description": settings.description,
        "referenceImage": {**reference, "geometry": result.referenceGeometry.toDict()},
        "structures": {"names": sorted(result.masks)},
        "defaultAlphaBetaGy": settings.defaultAlphaBetaGy,
        "tissues": result.tissueTable.toDict() if hasattr(result.tissueTable, "toDict") else None,
        "targets": list(settings.targets),
        "courses": courses,
        "composite": {
            "unit": "Gy EQD2 (voxel-wise α/β, see tissues)",
            "maxGy": float(composite[finite].max()) if finite.any() else None,
            "unknownVoxels": int((~finite).sum()),
            "sanityBound": _sanityBound(result),
        },
        "mri": None if result.mri is None else {"path": result.mri.get("path"),
                                                "registration": result.mri.get("registration")},
        "dvh": dvhRows(result),
        "organsWithoutCumulativeLimit": organsWithoutCumulativeLimit(result),
        "constraints": constraintRows(result),
        "currentCourseScaling": scalingSummary(result),
        "constraintSet": settings.constraints,
        "isodoseLevelsGy": list(settings.isodoseLevelsGy),
        "plannedCourse": None if settings.plannedFractions is None else {
            "fractions": settings.plannedFractions, **settings.plannedSchedule.toDict(),
            "budgetByOrgan": result.budgetByOrgan},
        "conservativeRadiusMm": settings.conservativeRadiusMm,
        "warnings": result.warnings,
        "limitations": limitations(result),
        "timingsS": result.timingsS,
    })
    return anonymizeSummary(summary, newUids) if anonymize else summary


def scalingSummary(result) -> dict | None:
    """The current course's headroom (:func:`pipeline.currentCourseScaling`): every row; the limiting factor —
    0 when the prior courses alone already reach a limit (no scaling of the current course meets it; a review: the
    summary led with ×944.78, its 0-factor rows beside it), else the smallest factor above 0 —; the limit reached
    first among the others (``otherLimits…``: the smallest factor above 0, what the current course can still be
    scaled by within the limits it can meet); the limits the prior courses alone reach (factor 0), those with a bound
    only and those not evaluated — ``None`` without cumulative constraints."""
    rows = list(getattr(result, "currentScaling", None) or [])
    if not rows:
        return None
    current = next(c for c in result.courses if c.isCurrent)
    scaled = [r for r in rows if r["scaling"] is not None and r["scaling"] > 0]
    first = min(scaled, key=lambda r: r["scaling"]) if scaled else None
    # a limit before an observational one (a verification: an observational bowel limit named as the limiting one)
    reached = sorted((r for r in rows if r["scaling"] == 0.0), key=lambda r: r.get("level") == "observational")
    limiting = reached[0] if reached else first
    label = lambda r: f"{r['structure']}: {r['constraint']}" + (  # noqa: E731
        f" [{r['level']}]" if r.get("level") not in (None, "limit") else "")
    return {"course": current.name, "numberOfFractions": current.numberOfFractions, "rows": rows,
            "limitingScaling": None if limiting is None else limiting["scaling"],
            "limitingConstraint": None if limiting is None else label(limiting),
            "limitingStructure": None if limiting is None else limiting["structure"],
            "limitingBound": None if limiting is None else limiting.get("bound"),
            "otherLimitsScaling": None if first is None else first["scaling"],
            "otherLimitsConstraint": None if first is None else label(first),
            "otherLimitsStructure": None if first is None else first["structure"],
            "otherLimitsBound": None if first is None else first.get("bound"),
            "reachedByPriorCourses": [label(r) for r in reached],
            "upperBounds": sorted({r["structure"] for r in rows if r.get("bound") == "upper"}),
            "unlimited": [label(r) for r in rows if r["unlimited"]],
            "notEvaluated": [label(r) for r in rows if r["scaling"] is None and not r["unlimited"]]}


def scalingSentence(scaling: dict | None) -> str | None:
    """One sentence on how far the current course's dose may be scaled (for the report, the CLI and the module): the
    limits the prior courses alone already reach first, then how far the others allow."""
    if not scaling:
        return None
    parts = []
    reached = scaling["reachedByPriorCourses"]
    if reached:
        parts.append(f"the prior courses alone already reach {'; '.join(reached)}: no scaling of the current course "
                     f"meets {'it' if len(reached) == 1 else 'them'}")
    factor = scaling["otherLimitsScaling"]
    structure = scaling["otherLimitsStructure"]
    n = scaling["numberOfFractions"]
    if factor is not None:
        bound = {"upper": f"; at most: part of {structure} has unknown dose",
                 "lower": f"; at least: part of {structure} has unknown dose"}.get(scaling.get("otherLimitsBound"), "")
        within = "within the other limits, " if reached else ""
        first = "the first of them" if reached else "the first cumulative limit"
        if factor >= 1.0:
            parts.append(f"{within}the current course's dose may be scaled by up to ×{factor:.3f} (its {n} fractions "
                         f"kept) before {first} is reached ({scaling['otherLimitsConstraint']}{bound})")
        else:
            parts.append(f"{within}the current course's dose must be scaled down to ×{factor:.3f} (its {n} fractions "
                         f"kept) to meet {'them' if reached else 'the cumulative limits'} "
                         f"({scaling['otherLimitsConstraint']}{bound})")
    elif scaling["unlimited"] and not reached:
        parts.append("no evaluated cumulative limit restricts the current course's dose")
    upper = [name for name in scaling["upperBounds"] if name != structure or not factor]
    if upper:
        parts.append(f"{', '.join(upper)} {'has' if len(upper) == 1 else 'have'} unknown dose in part and may allow "
                     "less")
    if scaling["notEvaluated"]:
        parts.append(f"not evaluated: {'; '.join(scaling['notEvaluated'])}")
    return "; ".join(parts) or None


def limitations(result) -> list[str]:
    """The report's limitations; the first says whether incomplete repair was modelled for this case's courses."""
    corrected = any(getattr(c, "incompleteRepair", None) for c in result.courses) or (
        result.settings.plannedFractions is not None and result.settings.plannedSchedule.isHyperfractionated)
    return [INCOMPLETE_REPAIR_LIMITATION if corrected else FULL_REPAIR_LIMITATION, *LIMITATIONS[1:]]


def _scheduleText(course: dict) -> str:
    """"1", or "2, 6 h apart; incomplete repair T½ 1.5 h (×1.0625 on the quadratic term)" for the courses table."""
    schedule = course.get("schedule") or {}
    perDay = schedule.get("fractionsPerDay", 1)
    if perDay == 1:
        return "1"
    repair = course.get("incompleteRepair") or {}
    halfTimes = sorted({v for v in (repair.get("repairHalfTimeHours") or {}).values() if v is not None})
    factors = sorted({round(v, 4) for v in (repair.get("quadraticFactor") or {}).values()})
    text = f"{perDay}, {schedule.get('hoursBetweenFractions'):g} h apart"
    if halfTimes:
        text += ("; incomplete repair, T½ " + "–".join(f"{v:g}" for v in (halfTimes[0], halfTimes[-1])[
            :1 if len(halfTimes) == 1 else 2]) + " h (quadratic term ×" + "–".join(
            f"{v:.4g}" for v in (factors[0], factors[-1])[:1 if len(factors) == 1 else 2]) + ")")
    return text


def _sanityBound(result) -> dict:
    """The composite can never exceed the sum of the per-course EQD2 maxima (a check against summation bugs)."""
    bound = float(sum(np.nanmax(c.eqd2Gy) if np.isfinite(c.eqd2Gy).any() else 0.0 for c in result.courses))
    composite = result.compositeEqd2Gy
    maximum = float(np.nanmax(composite)) if np.isfinite(composite).any() else 0.0
    return {"sumOfCourseMaximaGy": bound, "compositeMaxGy": maximum, "ok": maximum <= bound * (1 + 1e-6) + 1e-6}


def writeCsv(path, rows: list[dict]) -> None:
    path = Path(path)
    fields: list[str] = []
    for row in rows:
        for key in row:
            if key not in fields:
                fields.append(key)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else (json.dumps(_jsonable(v)) if isinstance(v, (dict, list))
                                                       else v)) for k, v in row.items()})


_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22"]
_DASHES = ["", "7 4", "2 3", "9 3 2 3"]


def dvhSvg(curves: list[tuple[str, np.ndarray, np.ndarray]], title: str = "Composite EQD2 DVH",
           widthPx: int = 720, heightPx: int = 420) -> str:
    """A cumulative DVH plot as inline SVG: ``curves`` = [(label, doseGy, volumePercent)]."""
    left, right, top, bottom = 60, 170, 30, 45
    plotW, plotH = widthPx - left - right, heightPx - top - bottom
    maxDose = max([float(np.max(d)) for _, d, _ in curves if len(d)] + [1.0])
    step = _niceStep(maxDose / 6)
    maxDose = math.ceil(maxDose / step) * step

    def x(dose):
        return left + plotW * dose / maxDose

    def y(volume):
        return top + plotH * (1 - volume / 100.0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{widthPx}" height="{heightPx}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="{left}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plotW}" height="{plotH}" fill="none" stroke="#444"/>']
    tick = 0.0
    while tick <= maxDose + 1e-9:
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{top + plotH}" stroke="#ddd"/>')
        parts.append(f'<text x="{x(tick):.1f}" y="{top + plotH + 16}" text-anchor="middle">{tick:g}</text>')
        tick += step
    for v in range(0, 101, 20):
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plotW}" y2="{y(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    parts.append(f'<text x="{left + plotW / 2}" y="{heightPx - 8}" text-anchor="middle">Dose (Gy EQD2)</text>')
    parts.append(f'<text x="14" y="{top + plotH / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + plotH / 2})">Volume (%)</text>')
    for index, (label, dose, volume) in enumerate(curves):
        # past the palette's ten colours a colour comes back dashed, then dotted: no two curves look alike
        colour = _PALETTE[index % len(_PALETTE)]
        dash = _DASHES[(index // len(_PALETTE)) % len(_DASHES)]
        dash = f' stroke-dasharray="{dash}"' if dash else ""
        points = " ".join(f"{x(float(d)):.1f},{y(float(v)):.1f}" for d, v in zip(dose, volume, strict=True))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{points}"/>')
        ly = top + 14 + 18 * index
        parts.append(f'<line x1="{left + plotW + 12}" y1="{ly - 4}" x2="{left + plotW + 32}" y2="{ly - 4}" '
                     f'stroke="{colour}" stroke-width="3"{dash}/>')
        parts.append(f'<text x="{left + plotW + 38}" y="{ly}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def pictureIsodoseLevels(result) -> tuple[list[float], bool]:
    """The isodose levels the pictures draw: the case's, or, when it gives none, round levels a quarter of the
    composite maximum apart (a physicist's review: without ``isodoseLevelsGy`` the "isodose" pictures showed no
    dose and nothing said so). Returns (levels, given)."""
    if result.settings.isodoseLevelsGy:
        return list(result.settings.isodoseLevelsGy), True
    finite = np.asarray(result.compositeEqd2Gy)[np.isfinite(result.compositeEqd2Gy)]
    top = float(finite.max()) if finite.size else 0.0
    if top <= 0:
        return [], False
    raw = top / 4.0  # the largest round step (1, 2, 2.5 or 5 times a power of ten) not above a quarter: 4-7 levels
    exponent = math.floor(math.log10(raw))  # may round up a hair below a power of ten: the decade below too
    step = max(m * 10.0 ** e for e in (exponent - 1, exponent) for m in (1.0, 2.0, 2.5, 5.0) if m * 10.0 ** e <= raw)
    return [round(step * k, 6) for k in range(1, int(top // step) + 1)], False


def _niceStep(raw: float) -> float:
    if raw <= 0:
        return 1.0
    exponent = math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * 10 ** exponent >= raw:
            return m * 10 ** exponent
    return 10 ** (exponent + 1)


def _table(rows: list[dict], columns: list[tuple[str, str]], rowClass=None) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(t)}</th>" for _, t in columns) + "</tr></thead><tbody>"]
    for row in rows:
        cls = f' class="{rowClass(row)}"' if rowClass else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(_fmt(row.get(k)))}</td>" for k, _ in columns) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _startText(registration: dict) -> str:
    """"started from <file>" for a registration given an initial transform, else ""."""
    start = registration.get("initialTransform")
    return f"started from {Path(str(start)).name}" if start else ""


def _registrationText(registration: dict) -> str | None:
    """The course's registration method, with the structures that exerted no force in it (an assumption the reader
    must see: the field there follows the surrounding tissue)."""
    method = registration.get("method")
    parts = []
    for key, where in (("withoutCounterpart", ""), ("courseWithoutCounterpart", "in the course's CT only: ")):
        names = (registration.get(key) or {}).get("structures")
        if names:
            parts.append(f"{where}{', '.join(names)}")
    start = _startText(registration)
    affine = (registration.get("affine") or {}).get("parameters") or {}
    scales = affine.get("affine", {}).get("scales")
    if method == "affine" and affine.get("affineKept") is False:
        text, details = "rigid", ["the affine refinement matched the images worse and was not used"]
    elif method == "affine" and scales:
        text, details = "affine", [f"scales {', '.join(f'{v:.3f}' for v in scales)}"]
    else:
        text, details = method, []
        if parts:
            margin = next(registration[k]["marginMm"] for k in ("withoutCounterpart", "courseWithoutCounterpart")
                          if (registration.get(k) or {}).get("structures"))
            details.append(f"without counterpart, + {margin:g} mm: {'; '.join(parts)}")
    if start:
        details.append(start)
    return f"{text} ({'; '.join(details)})" if text and details else text


def reportHtml(result, pictures: dict[str, bytes] | None = None, includeIdentity: bool = False,
               anonymize: bool = False) -> str:
    """The self-contained HTML report (pictures embedded as base64 PNG)."""
    summary = summaryDict(result, includeIdentity=includeIdentity, anonymize=anonymize)
    settings = result.settings
    buf = io.StringIO()
    w = buf.write
    w("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Re-irradiation cumulative dose report</title><style>"
      "body{font-family:sans-serif;margin:24px;max-width:1100px}table{border-collapse:collapse;margin:8px 0 16px}"
      "td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px;text-align:right}th{background:#eee}"
      "td:first-child,th:first-child{text-align:left}.pass{background:#d9f2d9}.fail{background:#f8d0d0}"
      ".notevaluated{background:#eee;color:#666}.warn{color:#a35a00}h2{border-bottom:1px solid #ccc}"
      "img{max-width:32%;margin:4px;border:1px solid #999}</style></head><body>")
    w("<h1>Re-irradiation: cumulative EQD2 report</h1>")
    if includeIdentity:
        name = result.referenceInfo.get("patientName", "")
        pid = result.referenceInfo.get("patientId", "")
        w(f"<p>Patient: {html.escape(str(name))} ({html.escape(str(pid))})</p>")
    else:
        w("<p>Patient identity omitted (run with identity enabled to include it).</p>")
    w(f"<p>Case file: {html.escape(Path(settings.sourcePath).name or '(in memory)')}. Reference grid: "
      f"{html.escape(result.referenceGeometry.describe())}. Made by Reirradiation {html.escape(__version__)} on "
      f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (the run, not a patient date).</p>")

    w("<h2>Courses and assumptions</h2>")
    rows = []
    # oldest first, as the courses were given (the case file's order need not be: a review found the current course
    # above its own prior courses); undated (anonymised) courses keep their order
    for c in sorted(summary["courses"], key=lambda c: str(c.get("date") or "")) if all(
            c.get("date") for c in summary["courses"]) else summary["courses"]:
        reg = c["registration"] or {}
        quality = reg.get("quality") or {}
        rows.append({
            "name": c["name"] + (" (current)" if c["current"] else ""),
            "date": f"{c['startDate']} – {c['date']}" if c.get("startDate") and c.get("date") else c["date"],
            "fractions": c["numberOfFractions"], "source": c["fractionsSource"], "rx": c["prescriptionGy"],
            "schedule": _scheduleText(c),
            "reg": _registrationText(reg), "coverage": c["doseGridCoveragePercent"],
            "recovery": _recoveryText(c["recovery"]),
            "fold": quality.get("foldingVoxelCountInBody"), "maxPhys": c["maxPhysicalDoseGy"],
            "maxEqd2": c["maxEqd2Gy"],
        })
    w(_table(rows, [("name", "Course"), ("date", "Date"), ("fractions", "Fractions"), ("source", "Fractions from"),
                    ("schedule", "Fractions a day"), ("rx", "Prescription (Gy)"), ("reg", "Registration"),
                    ("fold", "Folding voxels (body)"), ("coverage", "Dose grid coverage (%)"), ("recovery", "Recovery"),
                    ("maxPhys", "Max physical (Gy)"), ("maxEqd2", "Max EQD2 (Gy, each voxel's α/β)")]))
    for line in _qualityLines(summary["courses"]):
        w(f"<p>{html.escape(line)}</p>")
    if result.mri is not None:
        w(f"<p>{html.escape(_mriText(result.mri, result.referenceGeometry))}</p>")
    _contourCheckSection(w, summary["courses"])
    w("<h3>α/β per structure</h3>")
    abRows = [{"structure": s, "ab": _ownerAlphaBeta(result, s), "target": _targetReason(result, settings, s),
               "recovery": _tissueRecoveryText(result, s)} for s in sorted(result.masks)]
    w(_table(abRows, [("structure", "Structure"), ("ab", "α/β (Gy)"), ("target", "Target"),
                      ("recovery", "Recovery of prior courses")]))
    w(f"<p>Voxels outside every structure: α/β = {settings.defaultAlphaBetaGy:g} Gy. Overlaps: a voxel takes the "
      "α/β of the structure that owns it: targets first, then the higher priority of the tissue table (the more "
      "dose-limiting organ), then the lower α/β. Targets are the case's <code>targets</code> and every structure "
      "the tissue table names a target (names starting GTV, CTV, PTV or ITV): no recovery is applied where a target "
      "owns a voxel. The DVH table reads every structure at its own α/β over all its voxels, with its own recovery "
      "except where a target owns the voxel, and gives that share.</p>")
    repaired = [c for c in summary["courses"] if c.get("incompleteRepair")]
    if repaired:
        w("<h3>Incomplete repair (courses given more than once a day)</h3>")
        names = list(repaired[0]["incompleteRepair"]["repairHalfTimeHours"])
        rows = [{"structure": name,
                 "target": "yes" if name in settings.targets or _isTarget(result, name) else "",
                 "halfTime": repaired[0]["incompleteRepair"]["repairHalfTimeHours"][name],
                 **{f"g{i}": f"{c['incompleteRepair']['quadraticFactor'][name]:.4f}" for i, c in enumerate(repaired)}}
                for name in names]
        w(_table(rows, [("structure", "Structure"), ("target", "Target"), ("halfTime", "Repair half-time (h)"),
                        *[(f"g{i}", f"Quadratic term × ({c['name']}: {c['schedule']['fractionsPerDay']} a day, "
                                    f"{c['schedule']['hoursBetweenFractions']:g} h apart)")
                          for i, c in enumerate(repaired)]]))
        w("<p>Each voxel's EQD2 takes the factor of the structure that owns it (the same rule as its α/β); a "
          "constraint at its own α/β reads its organ with the organ's own half-time, also where a target owns the "
          "voxel. Targets take their half-time too: a long one chosen to be cautious for organs raises the target's "
          "EQD2 as well.</p>")
    sanity = summary["composite"]["sanityBound"]
    w(f"<p>Composite EQD2 maximum {sanity['compositeMaxGy']:.2f} Gy; sum of course maxima "
      f"{sanity['sumOfCourseMaximaGy']:.2f} Gy (sanity bound {'respected' if sanity['ok'] else 'VIOLATED'}).</p>")

    w("<h2>Organ constraints</h2>")
    if summary["constraints"]:
        w("<p>Cumulative constraints are compared with the composite EQD2 at the constraint's α/β (all courses, "
          "recovery applied, unless the limit's source summed the courses without it); first-course limits "
          "(single-course tolerances from their source) with each course's own dose, one row per course (column "
          "<i>Course</i>): its EQD2 at the limit's α/β or, for a limit without one, its physical dose, or its EQD2 at "
          "the organ's α/β where that is higher (the tolerances come from conventional fractionation). A prior "
          "course's row says what the organ received in that course. The column <i>Dose</i> names the dose of every "
          "row.</p>")
        w(_table(summary["constraints"], _constraintColumns(summary["constraints"]),
                 rowClass=lambda r: str(r.get("status", "")).replace(" ", "")))
    else:
        w("<p>No constraint set was given.</p>")
    unjudged = summary.get("organsWithoutCumulativeLimit") or []
    if unjudged:
        w("<p><b>Organs no cumulative limit of the set reads</b> (nothing above judges their cumulative dose, and the "
          "scaling below does not stop for them): "
          + "; ".join(html.escape(f"{r['structure']}: composite D0.03cc {_fmt(r['d0_03ccGy'])} Gy EQD2 (α/β "
                                  f"{_fmt(r['alphaBetaGy'])} Gy)") for r in unjudged) + ".</p>")
    scaling = summary.get("currentCourseScaling")
    if scaling:
        w("<h3>How far the current course's dose may be scaled</h3>")
        sentence = scalingSentence(scaling)
        if sentence:
            w(f"<p><b>{html.escape(sentence[0].upper() + sentence[1:])}.</b></p>")
        w("<p>Per cumulative limit and organ: the largest factor by which the current course's physical dose may be "
          "multiplied, its number of fractions kept (so its dose per fraction scales too), the prior courses as "
          "mapped and summed as the limit's row in the constraint table says (with the organ's recovery, or without "
          "where the limit already allows for it), before the organ reaches the limit; below 1 the plan as it is "
          "breaks it. Organs no cumulative limit reads (listed above) do not stop it.</p>")
        w(_table([{**r, "scalingText": "unlimited (> ×1000)" if r["unlimited"] else
                   (None if r["scaling"] is None else f"×{r['scaling']:.3f}")}
                  for r in scaling["rows"]],
                 [("structure", "Structure"), ("constraint", "Limit"), ("metricNow", "Now"),
                  ("scalingText", "Largest scaling"), ("metricAtScaling", "At that scaling"), ("reason", "Note")]))

    pictures = pictures or {}
    isodose = {t: png for t, png in pictures.items() if not t.startswith(REGISTRATION_PICTURE_PREFIX)}
    if isodose:
        w("<h2>Composite EQD2 isodose lines over the structures</h2>")
        _pictures(w, isodose)
        levels, given = pictureIsodoseLevels(result)
        if levels:
            w(f"<p>Isodose levels (Gy EQD2): {', '.join(f'{v:g}' for v in levels)}"
              + ("." if given else " (the case gives none in 'isodoseLevelsGy': round levels a quarter of the "
                                   "composite maximum apart).") + "</p>")
    registrationPictures = {t: png for t, png in pictures.items() if t not in isodose}
    if registrationPictures:
        w("<h2>Registration check</h2><p>The current CT and each course's CT brought onto it, in alternating "
          "squares: where the registration is right, edges (skin, bone, bowel, bladder) run on across the squares' "
          "borders; where they break, the mapped dose there is displaced by as much.</p>")
        _pictures(w, registrationPictures)

    w("<h2>Dose-volume histograms (composite EQD2)</h2><p>Each structure at its own α/β (the table's), its prior "
      "courses discounted by its own recovery (the α/β table's) except where a target owns a voxel; voxels of "
      "unknown dose are left out (their share is in the table).</p>")
    curves = []
    for structure, entry in result.dvh.items():
        dose, volume = entry["composite"].curve(0.5)
        curves.append((structure, np.asarray(dose), np.asarray(volume)))
    if curves:
        w(dvhSvg(curves))
    w(_table([r for r in summary["dvh"]], [
        ("structure", "Structure"), ("dose", "Dose"), ("alphaBetaGy", "α/β (Gy)"),
        ("targetOwnedPercent", "Voxels a target owns: no recovery (%)"), ("volumeCc", "Volume with known dose (cc)"),
        ("dminGy", "Dmin (Gy)"), ("dmeanGy", "Dmean (Gy)"), ("dmaxGy", "Dmax (Gy)"), ("d0_03ccGy", "D0.03cc (Gy)"),
        ("d2ccGy", "D2cc (Gy)"), ("d95PercentGy", "D95% (Gy)"),
        ("unknownVolumePercent", "Unknown dose (% of volume, excluded)")]))

    if summary.get("plannedCourse"):
        _budgetSection(w, result, summary["plannedCourse"])

    if summary["warnings"]:  # anonymised there when asked
        w("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{html.escape(m)}</li>" for m in summary["warnings"])
          + "</ul>")
    w("<h2>Limitations</h2><ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in summary["limitations"])
      + "</ul>")
    w("</body></html>")
    return buf.getvalue()


def _pictures(w, pictures: dict[str, bytes]) -> None:
    w("<div>")
    for title, png in pictures.items():
        data = base64.b64encode(png).decode("ascii")
        w(f"<img alt='{html.escape(title)}' title='{html.escape(title)}' src='data:image/png;base64,{data}'/>")
    w("</div>")


def _qualityLines(courses: list[dict]) -> list[str]:
    """Per course: its registration's quality figures (deformable, or a supplied field) and its landmark check."""
    from .regquality import qualityText

    lines = []
    for c in courses:
        registration = c.get("registration") or {}
        what = f"Course '{c['name']}' ({registration.get('method')} registration)"
        quality = registration.get("quality")
        if quality and "error" in quality:
            lines.append(f"{what}: its quality could not be computed ({quality['error']}).")
        elif quality:
            lines.append(f"{what}: {qualityText(quality)}.")
        landmarks = registration.get("landmarks")
        if landmarks:
            above = landmarks["aboveTolerance"]
            lines.append(f"{what}: landmark check at {landmarks['pairs']} point pairs, target registration error "
                         f"mean {landmarks['meanMm']:.1f} / max {landmarks['maxMm']:.1f} mm "
                         f"(worst: '{landmarks['worst']}'); "
                         + (f"{len(above)} beyond" if above else "all within")
                         + f" the tolerance of {landmarks['toleranceMm']:g} mm (AAPM TG-132: the largest voxel "
                         "dimension).")
    return lines


_BUDGET_COLUMNS = [("structure", "Structure"), ("constraint", "Limit"), ("alphaBetaGy", "α/β"),
                   ("allCoursesMaxEqd2Gy", "Max EQD2 of all listed courses (Gy)"),
                   ("minRemainingPhysicalGy", "Smallest physical dose the new course may add in the organ (Gy)"),
                   ("plannedFractions", "Fractions"), ("plannedFractionsPerDay", "A day"),
                   ("plannedRepairHalfTimeHours", "Repair half-time (h)"),
                   ("plannedQuadraticFactor", "Incomplete-repair factor"),
                   ("unknownPercent", "Unknown dose (%)"), ("note", "Note"), ("source", "Source")]


def _budgetSection(w, result, planned: dict) -> None:
    """The remaining budget of the planned course: what it is, the organs' rows with readable headers, and the limits
    that give none (a physicist's review: the table had the summary's key names as headers and no sentence; a case
    whose only limit was a volume limit had no section, an empty list and an all-NaN map, without a reason)."""
    from .pipeline import givesVoxelBudget

    rows = planned.get("budgetByOrgan") or []
    w("<h2>Remaining budget for the planned course</h2>")
    if not result.settings.constraints:
        w("<p class='warn'>" + html.escape("No constraint set is given (case-file 'constraints'): no remaining budget "
                                           "is computed.") + "</p>")
        return
    w("<p>" + html.escape(
      f"The physical dose a new course of {planned['fractions']} fractions may add, voxel by voxel, on top of every "
      "course listed above (the prior ones and the current one), before the organ's tightest cumulative near-maximum "
      "limit is reached (LQ inverse at the limit's α/β, each prior course with the organ's recovery); each row gives "
      "the smallest such dose over the organ. A D2cc or D0.03cc limit is applied voxel by voxel "
      "as a maximum, which is conservative." + (" The map is remaining_budget.nrrd." if any(
          r.get("minRemainingPhysicalGy") is not None for r in rows) else "")) + "</p>")
    skipped = sorted({f"{r.structureName}: {r.constraint.metric} {r.constraint.comparison} {r.constraint.limit:g} "
                      f"{r.constraint.unit}" for r in result.constraintResults
                      if r.constraint.kind == "cumulative" and r.structureName and not givesVoxelBudget(r.constraint)})
    if skipped:
        w("<p class='warn'>" + html.escape(
          "Limits that give no per-voxel budget (volume, mean or lower limits), not in the table: "
          + "; ".join(skipped) + ".") + "</p>")
    if not rows:
        w("<p class='warn'>" + html.escape(
          "No cumulative near-maximum limit (Dmax, D0.03cc, D0.1cc, D1cc, D2cc in Gy) of the constraint set reads a "
          "structure of this case: no remaining budget is computed.") + "</p>")
        return
    present = {k for row in rows for k in row}
    w(_table(rows, [(k, label) for k, label in _BUDGET_COLUMNS if k in present]
             + [(k, k) for k in rows[0] if k not in dict(_BUDGET_COLUMNS)]))


def _contourCheckSection(w, courses: list[dict]) -> None:
    """The contour check of every course's registration (core/contourcheck): one row per structure on both CTs."""
    rows = []
    tolerances = set()
    low, high = None, None
    for c in courses:
        check = (c.get("registration") or {}).get("contourCheck")
        if not check:
            continue
        tolerances.add(check["toleranceMm"])
        low, high = check["diceGuide"]
        for r in check["structures"]:
            result = {True: "within", False: "beyond", None: "not measured"}[r["withinTolerance"]]
            rows.append({"course": c["name"], "structure": r["structure"], "guided": "yes" if r["guided"] else "no",
                         "dice": r["dice"], "mda": r["mdaMm"], "hd95": r["hd95Mm"], "today": r["referenceCc"],
                         "carried": r["propagatedCc"], "result": result, "note": r["note"],
                         "_class": {"within": "pass", "beyond": "fail"}.get(result, "notevaluated")})
    if not rows:
        return
    w("<h3>Contour check of the registration</h3>")
    w("<p>" + html.escape(
      f"Each structure delineated on both CTs, carried from the course's CT through its registration onto today's "
      f"CT and compared with today's contour. AAPM TG-132 asks for a mean distance to agreement (MDA) within the "
      f"image's voxel size (here {', '.join(f'{t:g}' for t in sorted(tolerances))} mm: the largest voxel dimension, "
      f"at least 2 mm; rows beyond it are warned) and a Dice coefficient of about {low:g}–{high:g}, lower for small "
      f"structures. Structures that guided the registration agree by construction; only the others are an "
      f"independent check (name them in the course's 'validationStructures' to keep them out of the guidance). "
      f"HD95: the larger of the two directed 95th-percentile surface distances. An organ whose surface lands says "
      f"little of the displacement inside it (a uniform bladder) or along it (an elongated bone): check those with "
      f"landmarks and the checkerboards below.") + "</p>")
    for c in courses:
        check = (c.get("registration") or {}).get("contourCheck") or {}
        measured = [r["structure"] for r in check.get("structures", []) if r["dice"] is not None]
        if measured and check.get("independent") == []:
            landmarks = (c.get("registration") or {}).get("landmarks") or {}
            validation = check.get("validationStructures") or []
            advice = (f"None of its validation structures ({', '.join(validation)}) is delineated on both CTs."
                      if validation else "Name structures in the course's 'validationStructures' or give landmark "
                                         "pairs.")
            w("<p class='warn'>" + html.escape(
              f"Course '{c['name']}': every structure measured here guided its registration: this table cannot "
              f"reveal a registration error"
              + (" (the landmark check above is independent of it)." if landmarks.get("pairs") else
                 ", and no landmarks were given: nothing in this report checks the registration independently. "
                 + advice)) + "</p>")
    w(_table(rows, [("course", "Course"), ("structure", "Structure"), ("guided", "Guided the registration"),
                    ("dice", "Dice"), ("mda", "MDA (mm)"), ("hd95", "HD95 (mm)"), ("today", "Volume today (cc)"),
                    ("carried", "Volume carried (cc)"), ("result", "MDA tolerance"), ("note", "Note")],
             rowClass=lambda r: r["_class"]))


def _mriText(mri: dict, referenceGeometry) -> str:
    """One line for the report on how the MRI was brought onto the reference CT: the method, for a registration
    its metric and over whose voxels it was computed, and what the map does (rotation, shift of the CT's centre;
    the scales of an affine map)."""
    from .registration import linearMotion

    registration = mri.get("registration") or {}
    method = str(registration.get("method") or "none")
    name = Path(str(mri.get("path") or "")).name or "(in memory)"
    if method == "none":
        return f"MRI {name}: not registered (its coordinates are taken as the reference CT's)."
    motion = ""
    transform = mri.get("transform")
    try:
        angle, shift = linearMotion(transform, referenceGeometry)
        motion = f"rotation {angle:.1f}°, shift of the CT's centre {shift:.1f} mm"
    except (ValueError, TypeError, AttributeError, RuntimeError):  # not a linear map (a displacement field)
        pass
    if method == "file":
        source = Path(str(registration.get("file") or "")).name
        return f"MRI {name}: registration read from {source}" + (f" ({motion})." if motion else ".")
    parameters = registration.get("parameters") or {}
    over = "the MRI's voxels" if parameters.get("metricDomain") == "moving" else "the CT's voxels"
    metric = {"mattes": "Mattes mutual information", "meansquares": "mean squares"}.get(
        str(parameters.get("metric")), str(parameters.get("metric")))
    kind = "rigid"
    if method.startswith("affine"):
        kind = _registrationText({"method": "affine", "affine": registration}) or "affine"
    start = _startText(registration)
    return (f"MRI {name}: {kind} registration, {metric} over {over}{', ' + start if start else ''}"
            + (f"; {motion}." if motion else "."))


def _isTarget(result, structure) -> bool:
    try:
        entry = result.tissueTable.lookup(structure)
        return bool(entry and entry.isTarget)
    except Exception:
        return False


def _recoveryText(recovery: dict) -> str:
    """One line for the report from :func:`~ReirradiationDoseLib.core.tissues.recoverySummary`: every structure
    whose prior-course EQD2 is discounted, with its model and recovered fraction, and the interval."""
    if not recovery:
        return "none"
    if "structures" not in recovery:
        return str(recovery.get("model", "none"))
    parts = []
    for name, desc in recovery["structures"].items():
        fraction = desc.get("fraction") or 0.0
        if fraction > 0:
            model = desc.get("model") or {}
            parts.append(f"{name}: {model.get('model', '?')} {100 * fraction:.3g} %")
    interval = recovery.get("intervalDays")
    text = "; ".join(parts) if parts else "none"
    if interval is None:
        return text
    return text + (f" (interval {interval} days = {monthsText(recovery['intervalMonths'])} calendar months from the "
                   "date of the prior course)")


def _constraintColumns(rows: list[dict]) -> list[tuple[str, str]]:
    preferred = [("structure", "Structure"), ("metric", "Metric"), ("comparison", ""), ("limit", "Limit"),
                 ("unit", "Unit"),
                 ("value", "Value"), ("margin", "Margin"), ("status", "Result"), ("kind", "Kind"), ("course", "Course"),
                 ("level", "Level"), ("alphaBetaGy", "α/β"), ("dose", "Dose"), ("source", "Source"),
                 ("reason", "Note")]
    keys = set().union(*(r.keys() for r in rows))
    return [(k, t) for k, t in preferred if k in keys]
