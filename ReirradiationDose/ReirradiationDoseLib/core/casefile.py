"""The case file of ``reirradiation dose``: a JSON description of one re-irradiation patient.

Schema (paths are relative to the case file; unknown keys and missing files are refused with a message naming
them)::

    {
      "referenceImage": "current/CT",            # DICOM folder or NRRD/NIfTI: the grid of every output
      "structures": "current/RTSTRUCT.dcm",       # RTSTRUCT or .seg.nrrd on the reference image
      "mri": {"image": "MR", "registration": "rigid"},   # optional; registration: rigid | affine | none | FILE;
                                                 # "initialTransform": a file where rigid / affine starts
      "courses": [                                 # oldest first; the last (or "current": true) is current;
                                                   # "date": a prior course's LAST fraction, the current course's
                                                   # first (their interval sets time-based recovery)
        {"name": "prior", "dose": "prior/RTDOSE.dcm", "plan": "prior/RTPLAN.dcm", "date": "2024-05-02",
         "startDate": "2024-03-25",                # optional, prior courses: the first fraction (else estimated)
         "image": "prior/CT", "structures": "prior/RTSTRUCT.dcm",
         "registration": "deformable",             # none | rigid | affine | deformable | a transform file
         "withoutCounterpart": ["GTV", "Fibrosis"],   # optional, deformable only: reference structures whose
                                                   # tissue this course's CT does not hold (default: every GTV*)
         "courseWithoutCounterpart": ["GTV_primary"],  # optional, deformable only: this course's structures whose
                                                   # tissue the reference CT no longer holds (default: every GTV*)
         "landmarks": {"current": "landmarks_current.mrk.json", "course": "prior/landmarks.mrk.json"},
                                                   # optional: the same points on both CTs (paired by label; markups
                                                   # JSON or CSV label,L,P,S): TRE of the registration at each
         "validationStructures": ["SacralPlexus"],  # optional, deformable only: structures on both CTs that do
                                                   # not guide the registration, so that their contour check
                                                   # (every structure on both CTs is checked) is independent
         "initialTransform": "prior/prealigned.tfm"},  # optional, rigid / affine / deformable: where the
                                                   # registration starts instead of the image centres
        {"name": "current", "dose": "current/RTDOSE.dcm", "fractions": 17, "date": "2026-11-02",
         "fractionsPerDay": 1, "hoursBetweenFractions": null}   # optional: e.g. 2 and 6 for twice a day,
                                                   # 6 h apart (incomplete repair, needs repairHalfTimeHours)
      ],
      "tissues": {"GTV": {"alphaBeta": 10}, "Rectum": {"alphaBeta": 3,
                  "recovery": {"model": "constant", "fraction": 0.25}, "priority": 5,
                  "repairHalfTimeHours": 1.5}},    # optional; overrides the case's repairHalfTimeHours
      "defaultAlphaBeta": 3,
      "repairHalfTimeHours": 1.5,                  # needed when a course gives more than one fraction a day
      "targets": ["GTV", "CTV"],
      "constraints": "pelvic-reirradiation",     # a shipped set name or a JSON file
      "isodoseLevelsGy": [30, 50, 70, 90],
      "plannedCourse": {"fractions": 17},          # optional: remaining budget for a new course of n fractions
                                                   # (also "fractionsPerDay", "hoursBetweenFractions")
      "conservativeRadiusMm": 0,                   # optional: max of the mapped prior dose within this radius
      "allowFrameOfReferenceMismatch": false,      # optional override (accepted with a warning)
      "allowPatientMismatch": false                # optional override: files of different PatientIDs
    }
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import safeName
from .errors import InputError
from .radiobiology import FractionSchedule, checkAlphaBeta
from .resources import DuplicateKeyError, uniqueKeysObject

__all__ = ["CaseSpec", "CourseSpec", "MriSpec", "TissueSpec", "parseCaseFile", "parseCase", "REGISTRATION_METHODS"]

REGISTRATION_METHODS = ("none", "rigid", "affine", "deformable")

_TOP_KEYS = {
    "referenceImage", "structures", "mri", "courses", "tissues", "defaultAlphaBeta", "targets", "constraints",
    "isodoseLevelsGy", "plannedCourse", "conservativeRadiusMm", "allowFrameOfReferenceMismatch", "allowPatientMismatch",
    "description", "repairHalfTimeHours",
}
_COURSE_KEYS = {"name", "dose", "plan", "fractions", "date", "startDate", "image", "structures", "registration",
                "current", "withoutCounterpart", "courseWithoutCounterpart", "landmarks", "validationStructures",
                "initialTransform", "fractionsPerDay", "hoursBetweenFractions"}
_MRI_KEYS = {"image", "registration", "initialTransform"}
_TISSUE_KEYS = {"alphaBeta", "recovery", "priority", "isTarget", "aliases", "repairHalfTimeHours"}
# "dose" (a planned distribution for per-organ prescription scaling) is not read from a case file: refused with a
# clear message rather than silently ignored (core.budget.organScalingFactors does it from Python).
_PLANNED_KEYS = {"fractions", "name", "fractionsPerDay", "hoursBetweenFractions"}


@dataclass(frozen=True)
class CourseSpec:
    name: str
    dose: Path
    plan: Path | None = None
    fractions: int | None = None
    date: _dt.date | None = None
    # a prior course's first fraction when known (its ``date`` is the last): else estimated where needed
    startDate: _dt.date | None = None
    image: Path | None = None
    structures: Path | None = None
    registration: str = "none"  # none | rigid | affine | deformable | "file"
    transformFile: Path | None = None
    isCurrent: bool = False
    withoutCounterpart: tuple[str, ...] | None = None  # None: every reference structure named GTV*
    courseWithoutCounterpart: tuple[str, ...] | None = None  # None: every structure of the course named GTV*
    landmarks: tuple[Path, Path] | None = None  # (points on the reference CT, the same points on the course's CT)
    # structures on both CTs kept out of the deformable registration's guidance, for an independent contour check
    validationStructures: tuple[str, ...] = ()
    initialTransform: Path | None = None  # where the registration starts instead of the image centres (a file)
    schedule: FractionSchedule = FractionSchedule()  # fractions a day and hours between them


@dataclass(frozen=True)
class MriSpec:
    image: Path
    registration: str = "rigid"
    transformFile: Path | None = None
    initialTransform: Path | None = None  # where the rigid / affine registration starts (a transform file)


@dataclass(frozen=True)
class TissueSpec:
    alphaBetaGy: float | None = None
    recovery: dict | None = None
    priority: int | None = None
    isTarget: bool | None = None
    aliases: tuple[str, ...] = ()
    repairHalfTimeHours: float | None = None


@dataclass(frozen=True)
class PlannedCourseSpec:
    fractions: int
    name: str = "planned"
    schedule: FractionSchedule = FractionSchedule()


@dataclass(frozen=True)
class CaseSpec:
    path: Path
    referenceImage: Path
    structures: Path | None
    courses: tuple[CourseSpec, ...]
    mri: MriSpec | None = None
    tissues: dict[str, TissueSpec] = field(default_factory=dict)
    defaultAlphaBetaGy: float = 3.0
    targets: tuple[str, ...] = ("GTV", "CTV")
    targetsByDefault: bool = False  # the case file names no 'targets': GTV and CTV
    constraints: str | Path | None = None
    isodoseLevelsGy: tuple[float, ...] = ()
    plannedCourse: PlannedCourseSpec | None = None
    conservativeRadiusMm: float = 0.0
    allowFrameOfReferenceMismatch: bool = False
    allowPatientMismatch: bool = False
    description: str = ""
    repairHalfTimeHours: float | None = None  # tissues without their own, for courses given more than once a day

    @property
    def currentCourse(self) -> CourseSpec:
        return next(c for c in self.courses if c.isCurrent)

    @property
    def priorCourses(self) -> tuple[CourseSpec, ...]:
        return tuple(c for c in self.courses if not c.isCurrent)


def parseCaseFile(path) -> CaseSpec:
    """Read and validate a case file (see the module docstring for the schema)."""
    path = Path(path)
    if path.is_dir():
        raise InputError("this is a folder: give the case file (JSON) itself", path)
    if not path.is_file():
        # an adversarial review: /dev/null and a link that leads back to itself were "not found"
        if path.is_symlink():
            raise InputError("the case file is a symbolic link to nothing that exists (or one that leads back to "
                             "itself)", path)
        raise InputError("not a regular file: give the case file (JSON)" if path.exists() else "case file not found",
                         path)
    try:
        # utf-8-sig: a byte-order mark (Windows Notepad writes one) is not an error
        data = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=uniqueKeysObject)
    except (UnicodeDecodeError, json.JSONDecodeError, DuplicateKeyError) as error:
        raise InputError(f"not a valid JSON case file ({error})", path) from None
    except RecursionError:
        raise InputError("not a case file: its JSON is nested thousands of levels deep", path) from None
    return parseCase(data, path)


def parseCase(data, path) -> CaseSpec:
    """Validate an already-loaded case dictionary; ``path`` is the case file (paths are relative to it)."""
    path = Path(path)
    base = path.parent
    if not isinstance(data, dict):
        raise InputError("the case file must hold a JSON object", path)
    _refuseUnknown(data, _TOP_KEYS, "case file", path)

    def existing(value, what: str, mustBeDir: bool | None = None) -> Path:
        if not isinstance(value, str) or not value:
            raise InputError(f"{what} must be a file or folder path (got {value!r})", path)
        if "\x00" in value:
            raise InputError(f"{what} {value!r} is not a valid path (it holds a NUL character)", path)
        resolved = (base / value).resolve()
        if not resolved.exists():
            raise InputError(f"{what} '{value}' does not exist (looked for {resolved})", path)
        return resolved

    if "referenceImage" not in data:
        raise InputError("'referenceImage' is required (the current planning CT: a DICOM folder or NRRD)", path)
    reference = existing(data["referenceImage"], "referenceImage")
    structures = existing(data["structures"], "structures") if data.get("structures") else None

    rawCourses = data.get("courses")
    if not isinstance(rawCourses, list) or not rawCourses:
        raise InputError("'courses' must be a non-empty list (each with at least 'name' and 'dose')", path)
    courses = []
    names = set()
    for index, raw in enumerate(rawCourses):
        where = f"courses[{index}]"
        if not isinstance(raw, dict):
            raise InputError(f"{where} must be an object", path)
        _refuseUnknown(raw, _COURSE_KEYS, where, path)
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{where} needs a 'name'", path)
        if name in names:
            raise InputError(f"two courses are named '{name}'; course names must be unique", path)
        # the output files are named after the course (course_<name>_eqd2.nrrd): names that give the same file
        # name would overwrite each other's maps
        fileName = safeName(name)
        clash = next((other for other in names if safeName(other) == fileName), None)
        if clash is not None:
            raise InputError(f"the courses '{clash}' and '{name}' would write the same output files "
                             f"(course_{fileName}_...): name them more distinctly", path)
        names.add(name)
        if "dose" not in raw:
            raise InputError(f"course '{name}' needs a 'dose' (RTDOSE or NRRD)", path)
        fractions = raw.get("fractions")
        if fractions is not None:
            fractions = _positiveInt(fractions, f"course '{name}' fractions", path)
        registration, transformFile = _registration(raw.get("registration", "none"), f"course '{name}'",
                                                    existing, path)
        image = existing(raw["image"], f"course '{name}' image") if raw.get("image") else None
        if registration in ("rigid", "affine", "deformable") and image is None:
            raise InputError(f"course '{name}' asks for {registration} registration but names no 'image' "
                             "(its planning CT)", path)
        withoutCounterpart, courseWithoutCounterpart = (_structureNames(raw.get(key), f"course '{name}' '{key}'",
                                                                        path)
                                                        for key in ("withoutCounterpart", "courseWithoutCounterpart"))
        if courseWithoutCounterpart and not raw.get("structures"):
            raise InputError(f"course '{name}' names structures in 'courseWithoutCounterpart' but has no "
                             "'structures' (the RTSTRUCT of its planning CT)", path)
        validation = _structureNames(raw.get("validationStructures"), f"course '{name}' 'validationStructures'",
                                     path) or ()
        if validation and (registration != "deformable" or not raw.get("structures")):
            raise InputError(f"course '{name}' names 'validationStructures' (structures kept out of the guidance of a "
                             "deformable registration, to check it): they need \"registration\": \"deformable\" "
                             "and the course's 'structures'", path)
        initial = _initialTransform(raw.get("initialTransform"), registration, f"course '{name}'", existing, path)
        current = raw.get("current")
        if current is not None and not isinstance(current, bool):
            raise InputError(f"course '{name}' 'current' must be true or false", path)
        landmarks = raw.get("landmarks")
        if landmarks is not None:
            if not isinstance(landmarks, dict) or set(landmarks) != {"current", "course"}:
                raise InputError(f"course '{name}' 'landmarks' must be an object with 'current' (points on the "
                                 "reference CT) and 'course' (the same points on this course's CT)", path)
            landmarks = (existing(landmarks["current"], f"course '{name}' landmarks 'current'"),
                         existing(landmarks["course"], f"course '{name}' landmarks 'course'"))
        courses.append(dict(
            name=name, dose=existing(raw["dose"], f"course '{name}' dose"),
            plan=existing(raw["plan"], f"course '{name}' plan") if raw.get("plan") else None,
            fractions=fractions, date=_date(raw.get("date"), f"course '{name}' date", path),
            startDate=_date(raw.get("startDate"), f"course '{name}' startDate", path), image=image,
            structures=existing(raw["structures"], f"course '{name}' structures") if raw.get("structures") else None,
            registration=registration, transformFile=transformFile, isCurrent=bool(current),
            withoutCounterpart=withoutCounterpart, courseWithoutCounterpart=courseWithoutCounterpart,
            landmarks=landmarks, validationStructures=tuple(validation), initialTransform=initial,
            schedule=_schedule(raw, f"course '{name}'", path)))
    notCurrent = [c["name"] for c, raw in zip(courses, rawCourses, strict=True) if raw.get("current") is False]
    _chooseCurrent(courses, path, notCurrent)
    doses: dict = {}
    for course in courses:
        key = Path(course["dose"]).resolve()
        if key in doses:
            raise InputError(f"the courses '{doses[key]}' and '{course['name']}' give the same dose file "
                             f"({Path(course['dose']).name}): each course needs its own dose", path)
        doses[key] = course["name"]

    mri = None
    if data.get("mri") is not None:
        raw = data["mri"]
        if not isinstance(raw, dict):
            raise InputError("'mri' must be an object with 'image' and 'registration'", path)
        _refuseUnknown(raw, _MRI_KEYS, "mri", path)
        if "image" not in raw:
            raise InputError("'mri' needs an 'image'", path)
        registration, transformFile = _registration(raw.get("registration", "rigid"), "mri", existing, path)
        if registration == "deformable":
            raise InputError("MRI to CT registration is rigid or affine (or 'none' / a transform file), not "
                             "deformable", path)
        mri = MriSpec(existing(raw["image"], "mri image"), registration, transformFile,
                      _initialTransform(raw.get("initialTransform"), registration, "mri", existing, path))

    tissues = {}
    rawTissues = data.get("tissues", {})
    if not isinstance(rawTissues, dict):
        raise InputError("'tissues' must map structure names to {alphaBeta, recovery, priority}", path)
    for name, raw in rawTissues.items():
        if not isinstance(raw, dict):
            raise InputError(f"tissues['{name}'] must be an object", path)
        _refuseUnknown(raw, _TISSUE_KEYS, f"tissues['{name}']", path)
        alphaBeta = raw.get("alphaBeta")
        if alphaBeta is not None:
            alphaBeta = _alphaBeta(alphaBeta, f"tissues['{name}'] alphaBeta", path)
        recovery = raw.get("recovery")
        if recovery is not None and not isinstance(recovery, dict):
            raise InputError(f"tissues['{name}'].recovery must be an object like "
                             "{\"model\": \"constant\", \"fraction\": 0.25}", path)
        if recovery is not None:  # checked now, naming the case file, not when the maps are built
            from .recovery import recoveryModelFromDict
            try:
                recoveryModelFromDict(recovery)
            except (InputError, TypeError, ValueError) as error:
                raise InputError(f"tissues['{name}'].recovery: {error}", path) from None
        priority = raw.get("priority")
        if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
            raise InputError(f"tissues['{name}'].priority must be an integer", path)
        aliases = raw.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InputError(f"tissues['{name}'].aliases must be a list of names", path)
        isTarget = raw.get("isTarget")
        if isTarget is not None and not isinstance(isTarget, bool):
            raise InputError(f"tissues['{name}'].isTarget must be true or false", path)
        halfTime = raw.get("repairHalfTimeHours")
        if halfTime is not None:
            halfTime = _repairHalfTime(halfTime, f"tissues['{name}']", path)
        tissues[name] = TissueSpec(alphaBeta, recovery, priority, isTarget, tuple(aliases), halfTime)

    targets = data.get("targets", ["GTV", "CTV"])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise InputError("'targets' must be a list of structure names", path)

    constraints = data.get("constraints")
    if isinstance(constraints, str) and (constraints.endswith(".json") or "/" in constraints):
        constraints = existing(constraints, "constraints file")
    elif constraints is not None and not isinstance(constraints, str):
        raise InputError("'constraints' must be a shipped set name or a JSON file path", path)
    if constraints is not None:  # read now: a bad constraint file stops the run before its registrations
        from .constraints import loadConstraintSet
        try:
            loadConstraintSet(constraints)
        except InputError as error:
            raise InputError(f"'constraints': {error}", path) from None

    levels = data.get("isodoseLevelsGy", [])
    if not isinstance(levels, list):
        raise InputError("'isodoseLevelsGy' must be a list of doses in Gy", path)
    levels = tuple(sorted(_positiveFloat(v, "isodose level", path) for v in levels))

    planned = None
    if data.get("plannedCourse") is not None:
        raw = data["plannedCourse"]
        if not isinstance(raw, dict):
            raise InputError("'plannedCourse' must be an object like {\"fractions\": 17}", path)
        if "dose" in raw:
            raise InputError("plannedCourse 'dose' is not supported in a case file yet: the case gives the per-voxel "
                             "remaining budget for 'fractions'; per-organ prescription scaling of a planned dose is "
                             "available from Python (ReirradiationDoseLib.core.budget.organScalingFactors)", path)
        _refuseUnknown(raw, _PLANNED_KEYS, "plannedCourse", path)
        if "fractions" not in raw:
            raise InputError("'plannedCourse' needs 'fractions'", path)
        planned = PlannedCourseSpec(_positiveInt(raw["fractions"], "plannedCourse fractions", path),
                                    name=str(raw.get("name", "planned")),
                                    schedule=_schedule(raw, "plannedCourse", path))

    halfTime = data.get("repairHalfTimeHours")
    if halfTime is not None:
        halfTime = _repairHalfTime(halfTime, "the case's", path)
    hyperfractionated = [f"course '{c['name']}'" for c in courses if c["schedule"].isHyperfractionated]
    if planned is not None and planned.schedule.isHyperfractionated:
        hyperfractionated.append("plannedCourse")
    if hyperfractionated and halfTime is None and not any(t.repairHalfTimeHours for t in tissues.values()):
        raise InputError(f"{' and '.join(hyperfractionated)} "
                         f"{'give' if len(hyperfractionated) > 1 else 'gives'} more than one fraction a day: the "
                         "incomplete-repair correction needs the tissues' repair half-time. Give "
                         "\"repairHalfTimeHours\" (hours, for every tissue) and, where a tissue differs, the "
                         "same key in its 'tissues' entry. Published half-times lie between about 0.5 and 5 h and "
                         "are uncertain; a longer one gives a higher EQD2 (the cautious side for organs at risk)",
                         path)

    radius = data.get("conservativeRadiusMm", 0.0)
    if not isinstance(radius, (int, float)) or isinstance(radius, bool) or not (0 <= radius <= 20):
        raise InputError("'conservativeRadiusMm' must be a number of mm between 0 and 20", path)
    allowMismatch = data.get("allowFrameOfReferenceMismatch", False)
    if not isinstance(allowMismatch, bool):
        raise InputError("'allowFrameOfReferenceMismatch' must be true or false", path)
    allowPatientMismatch = data.get("allowPatientMismatch", False)
    if not isinstance(allowPatientMismatch, bool):
        raise InputError("'allowPatientMismatch' must be true or false", path)

    return CaseSpec(
        path=path.resolve(), referenceImage=reference, structures=structures,
        courses=tuple(CourseSpec(**c) for c in courses), mri=mri, tissues=tissues,
        defaultAlphaBetaGy=_alphaBeta(data.get("defaultAlphaBeta", 3.0), "defaultAlphaBeta", path),
        targets=tuple(targets), targetsByDefault="targets" not in data, constraints=constraints,
        isodoseLevelsGy=levels, plannedCourse=planned,
        conservativeRadiusMm=float(radius), allowFrameOfReferenceMismatch=allowMismatch,
        allowPatientMismatch=allowPatientMismatch,
        description=str(data.get("description", "")), repairHalfTimeHours=halfTime)


def _refuseUnknown(raw: dict, allowed: set, where: str, path: Path) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InputError(f"unknown key(s) in {where}: {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})",
                         path)


def _alphaBeta(value, what: str, path: Path) -> float:
    try:
        return checkAlphaBeta(_positiveFloat(value, what, path), what)
    except InputError as error:
        raise InputError(str(error), path) from None


def _positiveInt(value, what: str, path: Path) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value != int(value) or value <= 0):
        raise InputError(f"{what} must be a positive whole number (got {value!r})", path)
    from .radiobiology import MAX_FRACTIONS

    if value > MAX_FRACTIONS:  # 10 million fractions stopped the run with a date overflow (an adversarial review)
        raise InputError(f"{what} must be at most {MAX_FRACTIONS} (got {value!r})", path)
    return int(value)


def _schedule(raw: dict, what: str, path: Path) -> FractionSchedule:
    """``fractionsPerDay`` and ``hoursBetweenFractions`` of a course (or the planned course), checked."""
    perDay = raw.get("fractionsPerDay", 1)
    hours = raw.get("hoursBetweenFractions")
    perDay = _positiveInt(perDay, f"{what} fractionsPerDay", path)
    if hours is not None:
        hours = _positiveFloat(hours, f"{what} hoursBetweenFractions", path)
    try:
        return FractionSchedule(perDay, hours)
    except InputError as error:
        raise InputError(f"{what}: {error}", path) from None


def _repairHalfTime(value, what: str, path: Path) -> float:
    from .radiobiology import checkRepairHalfTime

    try:
        return checkRepairHalfTime(value, what)
    except InputError as error:
        raise InputError(str(error), path) from None


def _positiveFloat(value, what: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0) or value == float("inf"):
        raise InputError(f"{what} must be a positive number (got {value!r})", path)
    return float(value)


def _date(value, what: str, path: Path) -> _dt.date | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{what} must be a date written YYYY-MM-DD (got {value!r})", path)
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return _dt.datetime.strptime(value, fmt).date()
        except ValueError:
            pass
    raise InputError(f"{what} must be a date written YYYY-MM-DD (got {value!r})", path)


def _registration(value, what: str, existing, path: Path) -> tuple[str, Path | None]:
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} registration must be none, rigid, affine, deformable or a transform file", path)
    if value in REGISTRATION_METHODS:
        return value, None
    from .transformio import DICOM_SUFFIX, FIELD_SUFFIXES, TRANSFORM_SUFFIXES, isDicomRegistration

    if value.lower().endswith(TRANSFORM_SUFFIXES + FIELD_SUFFIXES + (DICOM_SUFFIX,)):
        return "file", existing(value, f"{what} transform file")
    candidate = path.parent / value
    if "\x00" not in value and candidate.is_file() and isDicomRegistration(candidate):  # a REG without .dcm
        return "file", existing(value, f"{what} transform file")
    raise InputError(f"{what} registration '{value}' is not none, rigid, affine, deformable or a transform file",
                     path)


def _initialTransform(value, registration: str, what: str, existing, path: Path) -> Path | None:
    """The optional ``initialTransform`` of a course or the MRI: a transform file (reference-CT points to the image's,
    as a registration file) where a rigid / affine / deformable registration starts instead of the automatic
    initialisation (a manual pre-alignment, when the images start far apart)."""
    if value is None:
        return None
    if registration not in ("rigid", "affine", "deformable"):
        raise InputError(f"{what} 'initialTransform' is where a registration starts: it needs registration rigid, "
                         f"affine or deformable (not '{registration}')", path)
    if not isinstance(value, str) or not value.lower().endswith((".h5", ".hdf5", ".tfm", ".txt")):
        raise InputError(f"{what} 'initialTransform' must be a transform file (.h5, .hdf5, .tfm or .txt; got "
                         f"{value!r})", path)
    return existing(value, f"{what} initialTransform")


def _structureNames(value, what: str, path) -> tuple[str, ...] | None:
    """A list of structure names (stripped) as a tuple; None when absent."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(f"{what} must be a list of structure names (use [] for none)", path)
    return tuple(v.strip() for v in value)


def _chooseCurrent(courses: list[dict], path: Path, notCurrent=()) -> None:
    """Mark the current course: the one flagged ``current``, else the last one listed (list courses oldest first).

    A prior course dated after the current one is refused; with several courses every one needs a date. The course
    that would be taken as current but is marked ``"current": false`` (``notCurrent``) is refused: a case of prior
    courses only made the last of them current, its recovery never applied and its delivered dose offered for
    scaling (a physicist's review).
    """
    flagged = [c for c in courses if c["isCurrent"]]
    if len(flagged) > 1:
        raise InputError("more than one course is marked current", path)
    if not flagged and courses[-1]["name"] in notCurrent:
        raise InputError(f"no course is the current one: course '{courses[-1]['name']}', the last listed, is marked "
                         "\"current\": false. A case needs the course being planned (the current one, \"current\": "
                         "true); list it, with its dose, beside the prior courses", path)
    if len(courses) > 1 and any(c["date"] is None for c in courses):
        missing = ", ".join(c["name"] for c in courses if c["date"] is None)
        raise InputError(f"course date missing for: {missing} (needed to order the courses and for "
                         "time-based recovery)", path)
    if not flagged:
        courses[-1]["isCurrent"] = True
    current = next(c for c in courses if c["isCurrent"])
    today = _dt.date.today()
    for course in courses:
        # a prior course has been given, and today's course starts within a year: a date beyond is a typing slip
        # (2062 for 2026) that sets the interval of every time-based recovery model
        latest = today if course is not current else today + _dt.timedelta(days=366)
        if course["date"] is not None and course["date"] > latest:
            raise InputError(f"course '{course['name']}' is dated {course['date']}, "
                             f"{'in the future' if course is not current else 'more than a year ahead'} (today is "
                             f"{today}): check the date (it sets the interval for recovery)", path)
        if course is current or course["date"] is None or current["date"] is None:
            continue
        if course["date"] > current["date"]:
            raise InputError(f"prior course '{course['name']}' is dated {course['date']} — after the current course "
                             f"'{current['name']}' ({current['date']})", path)
        if course["date"] == current["date"]:
            raise InputError(f"courses '{course['name']}' and '{current['name']}' have the same date; mark the "
                             "current one with \"current\": true", path)
    for course in courses:
        if course["startDate"] is None:
            continue
        if course is current:
            raise InputError(f"the current course '{course['name']}' has a 'startDate': its 'date' is already its "
                             "first fraction ('startDate' is a prior course's first fraction, its 'date' the last)",
                             path)
        if course["startDate"] > course["date"]:
            raise InputError(f"course '{course['name']}' begins ({course['startDate']}, 'startDate') after it ends "
                             f"({course['date']}, 'date': a prior course's last fraction)", path)
    if current.get("landmarks") is not None:
        raise InputError(f"the current course '{current['name']}' is on the reference image: 'landmarks' check a prior "
                         "course's registration, not the current one", path)
    if current["registration"] not in ("none",) and current["transformFile"] is None:
        raise InputError(f"the current course '{current['name']}' is on the reference image: its registration must "
                         "be 'none'", path)
