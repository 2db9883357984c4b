"""Organ constraint library (JSON) and its evaluation on DVHs: pass / fail / margin / not evaluated.

Shipped sets (``Resources/ReirradiationDose``): ``"pelvic-reirradiation"`` (Constraints_PelvicReirradiation.json)
and ``"general"`` (Constraints_General.json), seeded from REFERENCE §3 with the source next to every number.

A constraint names an organ (TG-263 name + aliases), a metric (``Dmax``, ``Dmean``, ``D0.03cc``, ``D2cc``,
``D95%``, ``V40Gy[%]``, ``V19Gy[cc]``, ``CV15Gy[cc]`` = volume below 15 Gy), a comparison (``<``, ``<=``, ``>``,
``>=``), a limit with its unit (Gy, %, cc), the α/β (Gy) the EQD2 must be computed with (None: dose as in the source)
and a kind: ``cumulative`` (EQD2 summed over all courses) or ``first-course``.

Recovery and a cumulative limit: by default a cumulative limit is compared with the composite in which the prior
courses are discounted by the organ's recovery (``Σ (1 − r) EQD2``, the case's recovery model). A limit whose source
already allows for recovery — Nieder's cord criterion, BED ≤ 135.5 Gy₂ summed over the courses as given, safe only
because the courses were ≥ 6 months apart — says ``"recoveryInLimit": true`` and is read on the courses' plain sum
whatever the recovery model (discounting the prior course again counts the recovery twice: 50/25 + 8 × 1 at 13 months
with the Nieder/Doi step read 45 Gy, a pass, instead of 70 Gy, a fail). ``conditions`` state where such a criterion
holds: ``minIntervalMonths`` (calendar months between consecutive courses) and ``maxCourseBedGy`` (each course's own
value of the metric as BED at the constraint's α/β); an organ outside them is "not evaluated" unless it fails anyway.

Margin: positive means inside the limit (``limit − value`` for upper limits, ``value − limit`` for lower limits), in
the constraint's unit. A missing organ or an undefined metric (D2cc of a 1 cc organ) gives ``not evaluated`` with a
reason, never a silent pass.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .dvh import DvhResult, parseDvhMetric
from .errors import InputError
from .resources import resourcePath, uniqueKeysObject
from .tissues import normalizeStructureName, sidedName, sidelessName

__all__ = [
    "SHIPPED_CONSTRAINT_SETS",
    "OrganConstraint",
    "ConstraintSet",
    "ConstraintResult",
    "loadConstraintSet",
    "evaluateConstraints",
]

SHIPPED_CONSTRAINT_SETS = {
    "pelvic-reirradiation": "Constraints_PelvicReirradiation.json",
    "general": "Constraints_General.json",
}
_COMPARISONS = ("<", "<=", ">", ">=")
_KINDS = ("cumulative", "first-course")
_KEYS = {"structure", "aliases", "metric", "comparison", "limit", "unit", "alphaBetaGy", "kind", "level", "source",
         "note", "recoveryInLimit", "priorRecovery", "conditions", "eachSide"}
_CONDITIONS = ("minIntervalMonths", "maxCourseBedGy")


@dataclass(frozen=True)
class OrganConstraint:
    """One organ limit, e.g. bowel D2cc < 90 Gy EQD2 (α/β 3), cumulative, with its source."""

    structure: str
    aliases: tuple[str, ...]
    metric: str
    limit: float
    unit: str
    alphaBetaGy: float | None
    kind: str
    source: str
    comparison: str = "<"
    level: str = "limit"
    note: str = ""
    recoveryInLimit: bool = False  # the limit already allows for recovery: read on the courses' plain sum
    conditions: tuple[tuple[str, float], ...] = ()  # (name, value) pairs of _CONDITIONS where the criterion holds
    # the recovered fraction the limit's source credits every prior course, in place of the organ's own (Owen 2020's
    # liver mean: prior dose discounted 50 %); None: the organ's own recovery
    priorRecovery: float | None = None
    eachSide: bool = False  # the limit holds for each side's structure of a paired organ ("SacralPlex_L", "_R")

    def __post_init__(self):
        object.__setattr__(self, "aliases", tuple(str(a) for a in self.aliases))
        try:
            parsed = parseDvhMetric(self.metric)
        except InputError as error:
            raise InputError(f"constraint {self.structure} {self.metric}: {error}") from None
        limit = float(self.limit)
        if not math.isfinite(limit):
            raise InputError(f"constraint {self.structure} {self.metric}: the limit must be a number")
        if limit < 0 or (str(self.unit) == "%" and limit > 100):
            rule = "a percentage lies between 0 and 100" if self.unit == "%" else "a dose or volume is not negative"
            raise InputError(f"constraint {self.structure} {self.metric}: the limit {limit:g} {self.unit} is "
                             f"impossible ({rule})")
        object.__setattr__(self, "limit", limit)
        if self.comparison not in _COMPARISONS:
            raise InputError(f"constraint {self.structure} {self.metric}: comparison must be one of {_COMPARISONS}")
        if self.kind not in _KINDS:
            raise InputError(f"constraint {self.structure} {self.metric}: kind must be one of {_KINDS}")
        unit = str(self.unit)
        if unit != parsed.resultUnit:
            raise InputError(f"constraint {self.structure} {self.metric}: unit {unit!r} does not match the metric "
                             f"(expected {parsed.resultUnit!r})")
        if self.alphaBetaGy is not None:
            ab = float(self.alphaBetaGy)
            if not math.isfinite(ab) or ab <= 0:
                raise InputError(f"constraint {self.structure} {self.metric}: α/β must be > 0 Gy")
            object.__setattr__(self, "alphaBetaGy", ab)
        what = f"constraint {self.structure} {self.metric}"
        if not isinstance(self.eachSide, bool):
            raise InputError(f"{what}: 'eachSide' must be true or false, got {self.eachSide!r}")
        if not isinstance(self.recoveryInLimit, bool):
            raise InputError(f"{what}: 'recoveryInLimit' must be true or false, got {self.recoveryInLimit!r}")
        conditions = dict(self.conditions)
        unknown = sorted(set(conditions) - set(_CONDITIONS))
        if unknown:
            raise InputError(f"{what}: unknown condition(s) {', '.join(map(repr, unknown))} (known: "
                             f"{', '.join(_CONDITIONS)})")
        for name, value in conditions.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"{what}: condition {name!r} must be a number ≥ 0, got {value!r}")
        if conditions and self.kind != "cumulative":
            raise InputError(f"{what}: conditions apply to a cumulative criterion, not to a {self.kind} limit")
        if "maxCourseBedGy" in conditions and (self.alphaBetaGy is None or unit != "Gy"):
            raise InputError(f"{what}: 'maxCourseBedGy' needs a dose metric (Gy) and the constraint's α/β")
        if self.recoveryInLimit and self.kind != "cumulative":
            raise InputError(f"{what}: 'recoveryInLimit' applies to a cumulative limit, not to a {self.kind} limit")
        if self.priorRecovery is not None:
            value = self.priorRecovery
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
                raise InputError(f"{what}: 'priorRecovery' is the fraction of the prior courses' dose the source "
                                 f"credits as recovered, from 0 to below 1, got {value!r}")
            if self.kind != "cumulative" or self.recoveryInLimit:
                raise InputError(f"{what}: 'priorRecovery' applies to a cumulative limit read with recovery (not with "
                                 "'recoveryInLimit', not to a first-course limit)")
            object.__setattr__(self, "priorRecovery", float(value))
        object.__setattr__(self, "conditions", tuple((k, float(conditions[k])) for k in _CONDITIONS
                                                     if k in conditions))

    def condition(self, name: str) -> float | None:
        """The value of one of the criterion's conditions (``minIntervalMonths``, ``maxCourseBedGy``), or None."""
        return dict(self.conditions).get(name)

    @property
    def limitGy(self) -> float | None:
        return self.limit if self.unit == "Gy" else None

    @property
    def recoveryRule(self) -> bool | float:
        """How the composite is read: True, each organ's own recovery; False, the courses' plain sum
        (``recoveryInLimit``); a number, that fraction of every prior course recovered (``priorRecovery``)."""
        if self.recoveryInLimit:
            return False
        return True if self.priorRecovery is None else self.priorRecovery

    @property
    def recoveryNote(self) -> str:
        """How the composite is read, when not with each organ's own recovery ("courses summed without recovery",
        "prior courses discounted 50 %"), else ""."""
        rule = self.recoveryRule
        return "" if rule is True else "courses summed without recovery" if rule is False else (
            f"prior courses discounted {100 * rule:g} %")

    @property
    def isUpperLimit(self) -> bool:
        return self.comparison in ("<", "<=")

    def matches(self, structureName: str) -> bool:
        """The structure is this constraint's organ by its name or an alias; with ``eachSide`` also with a side
        ("SacralPlex_L": a plexus limit holds for each side's structure; a lung V20 does not hold for one lung)."""
        names = {normalizeStructureName(n) for n in (self.structure, *self.aliases)}
        # the side as the set writes it ("Lt Femoral Head", "Femur_Left" → "…_L": a review on real data found a left
        # femoral head named so left out of its limit, without a "not evaluated" row)
        return bool({normalizeStructureName(structureName), normalizeStructureName(sidedName(structureName))}
                    & names) or (self.eachSide and normalizeStructureName(sidelessName(structureName)) in names)

    def describe(self) -> str:
        ab = f" (EQD2, α/β {self.alphaBetaGy:g} Gy)" if self.alphaBetaGy is not None else ""
        plain = f", {self.recoveryNote}" if self.recoveryNote else ""
        return f"{self.structure} {self.metric} {self.comparison} {self.limit:g} {self.unit}{ab}, {self.kind}{plain}"

    def toDict(self) -> dict:
        return {"structure": self.structure, "aliases": list(self.aliases), "metric": self.metric,
                "comparison": self.comparison, "limit": self.limit, "unit": self.unit,
                "alphaBetaGy": self.alphaBetaGy, "kind": self.kind, "level": self.level, "source": self.source,
                "note": self.note, "recoveryInLimit": self.recoveryInLimit, "priorRecovery": self.priorRecovery,
                "conditions": dict(self.conditions), "eachSide": self.eachSide}

    @classmethod
    def fromDict(cls, data: dict) -> OrganConstraint:
        """One constraint from its JSON object; a misspelt key, a limit or α/β that is not a number, aliases that are
        not a list of names are refused (a misspelt ``alphaBeta`` was ignored and the constraint read in physical
        dose)."""
        if not isinstance(data, dict):
            raise InputError(f"each constraint must be an object with structure, metric, limit, unit..., got {data!r}")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise InputError(f"constraint {data.get('structure', '?')} {data.get('metric', '')}: unknown key(s) "
                             f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(_KEYS))})")
        what = f"constraint {data.get('structure', '?')} {data.get('metric', '')}"
        for key in ("limit", "alphaBetaGy"):
            value = data.get(key)
            if (value is None and key == "limit") or (value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float)))):
                raise InputError(f"{what}: '{key}' must be a number{' or null' if key == 'alphaBetaGy' else ''}, "
                                 f"got {value!r}")
        conditions = data.get("conditions", {})
        if not isinstance(conditions, dict):
            raise InputError(f"{what}: 'conditions' must be an object such as {{\"minIntervalMonths\": 6}}, got "
                             f"{conditions!r}")
        aliases = data.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InputError(f"{what}: 'aliases' must be a list of structure names, got {aliases!r}")
        try:
            return cls(structure=str(data["structure"]), aliases=tuple(aliases),
                       metric=str(data["metric"]), limit=data["limit"], unit=str(data["unit"]),
                       alphaBetaGy=data.get("alphaBetaGy"), kind=str(data.get("kind", "cumulative")),
                       source=str(data.get("source", "")), comparison=str(data.get("comparison", "<")),
                       level=str(data.get("level", "limit")), note=str(data.get("note", "")),
                       recoveryInLimit=data.get("recoveryInLimit", False), conditions=tuple(conditions.items()),
                       priorRecovery=data.get("priorRecovery"), eachSide=data.get("eachSide", False))
        except KeyError as error:
            raise InputError(f"a constraint lacks {error.args[0]!r}: {data!r}") from None


@dataclass(frozen=True)
class ConstraintSet:
    name: str
    constraints: tuple[OrganConstraint, ...]
    description: str = ""

    def toDict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "constraints": [c.toDict() for c in self.constraints]}

    @classmethod
    def fromDict(cls, data: dict) -> ConstraintSet:
        if not isinstance(data, dict) or "constraints" not in data:
            raise InputError("a constraint set needs a 'constraints' list")
        if not isinstance(data["constraints"], list):
            raise InputError(f"'constraints' must be a list of constraints, got {type(data['constraints']).__name__}")
        return cls(str(data.get("name", "custom")), tuple(OrganConstraint.fromDict(c) for c in data["constraints"]),
                   str(data.get("description", "")))


def loadConstraintSet(nameOrPath: str | Path) -> ConstraintSet:
    """A shipped set by name ("pelvic-reirradiation", "general") or a JSON file of the same form."""
    key = str(nameOrPath).strip().lower()
    if key in SHIPPED_CONSTRAINT_SETS:
        path = resourcePath(SHIPPED_CONSTRAINT_SETS[key])
    else:
        path = Path(nameOrPath)
        if not path.is_file():
            raise InputError(f"no constraint set named {str(nameOrPath)!r} (shipped: "
                             f"{', '.join(SHIPPED_CONSTRAINT_SETS)}) and no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=uniqueKeysObject)
    except (OSError, UnicodeDecodeError, ValueError) as error:  # JSONDecodeError and a key given twice included
        raise InputError(f"cannot read the constraint set: {error}", path) from None
    try:
        return ConstraintSet.fromDict(data)
    except InputError as error:
        raise InputError(str(error), path) from None


@dataclass(frozen=True)
class ConstraintResult:
    """Outcome of one constraint on one structure."""

    constraint: OrganConstraint
    value: float | None
    passed: bool | None
    margin: float | None
    status: str  # "pass" | "fail" | "not evaluated"
    reason: str = ""
    structureName: str | None = None
    dose: str = ""  # the dose the value was read from ("composite EQD2 at α/β 3 Gy ...", "course 'prior' alone ...")
    course: str | None = None  # the course a first-course limit was evaluated on (None: cumulative)

    @property
    def marginGy(self) -> float | None:
        return self.margin if self.constraint.unit == "Gy" else None

    def toDict(self) -> dict:
        return {"constraint": self.constraint.toDict(), "structureName": self.structureName, "value": self.value,
                "unit": self.constraint.unit, "passed": self.passed, "margin": self.margin, "status": self.status,
                "reason": self.reason, "dose": self.dose, "course": self.course}


def _compare(value: float, limit: float, comparison: str) -> bool:
    return {"<": value < limit, "<=": value <= limit, ">": value > limit, ">=": value >= limit}[comparison]


def evaluateConstraints(constraintSet: ConstraintSet, dvhByStructure: dict[str, DvhResult],
                        kinds: tuple[str, ...] | None = None) -> list[ConstraintResult]:
    """Evaluate every constraint on every structure it matches (name or alias, case/space-insensitive).

    Parameters
    ----------
    constraintSet : the constraints.
    dvhByStructure : structure name → DVH of the dose the constraints refer to (cumulative EQD2 at the constraint's
        α/β for ``cumulative`` constraints; first-course dose for ``first-course`` ones).
    kinds : evaluate only these kinds (default: all).

    Returns one result per (constraint, matching structure); a constraint without a matching structure gives one
    ``not evaluated`` result naming the structure looked for.
    """
    results = []
    for constraint in constraintSet.constraints:
        if kinds is not None and constraint.kind not in kinds:
            continue
        matched = [name for name in dvhByStructure if constraint.matches(name)]
        if not matched:
            results.append(ConstraintResult(constraint, None, None, None, "not evaluated",
                                            f"no structure named {constraint.structure!r} (or an alias) was given"))
            continue
        for name in matched:
            metricValue = dvhByStructure[name].metric(constraint.metric)
            if metricValue.value is None:
                results.append(ConstraintResult(constraint, None, None, None, "not evaluated", metricValue.reason,
                                                name))
                continue
            value = float(metricValue.value)
            passed = _compare(value, constraint.limit, constraint.comparison)
            margin = constraint.limit - value if constraint.isUpperLimit else value - constraint.limit
            reason = "" if passed else (f"{constraint.metric} = {value:.2f} {constraint.unit} is not "
                                        f"{constraint.comparison} {constraint.limit:g} {constraint.unit}")
            results.append(ConstraintResult(constraint, value, passed, margin, "pass" if passed else "fail", reason,
                                            name))
    return results
