"""Tissue table: structure → α/β, recovery model, overlap priority, target flag; α/β and recovery maps from masks.

The shipped defaults (``Resources/ReirradiationDose/Tissues_Default.json``) follow REFERENCE §1: tumour 10 Gy,
late normal tissue 3 Gy, cervical/thoracic cord, cauda equina and sacral plexus 2 Gy, lumbar cord 4 Gy (Nieder et
al., IJROBP 2006;66:1446); each entry carries its source. The table is editable per case (``TissueTable.fromDict``
/ ``withEntry``).

Overlap rule (REFERENCE §1): a voxel takes the α/β of the structure that *owns* it: targets first, then the
higher ``priority`` (the more dose-limiting organ), then the lower α/β, then the name. Outside every structure the
default α/β (3 Gy) applies.

Names are matched tolerant of case, spaces, "_" and "-" ("Femoral Head Lt" = "femoral_head_lt"), through aliases
(TG-263 names are the entries' names, common variants are aliases) and, for targets, name prefixes (GTV*, CTV*,
PTV*, ITV*).
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import InputError
from .radiobiology import checkAlphaBeta, checkRepairHalfTime
from .radiobiology import intervalDays as _intervalDays
from .recovery import NoRecovery, RecoveryModel, calendarMonthsBetween, recoveryModelFromDict
from .resources import resourcePath

__all__ = [
    "normalizeStructureName",
    "TissueEntry",
    "TissueTable",
    "alphaBetaMap",
    "intervalMonths",
    "ownerMap",
    "recoveryMap",
    "recoverySummary",
    "repairHalfTimes",
]

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalizeStructureName(name: str) -> str:
    """Lower case without spaces, underscores, hyphens or other punctuation ("Femoral Head_Lt" → "femoralheadlt")."""
    return _NON_ALNUM.sub("", str(name).lower())


_SIDE_SUFFIX = re.compile(r"[\s_.-]+(l|r|lt|rt|left|right)$", re.IGNORECASE)
_MARGIN_SUFFIX = re.compile(r"[\s_.-]*prv[\s_.-]*(\d+(\.\d+)?\s*(mm|cm)?)?$", re.IGNORECASE)


# a side written first, as planning systems and TG-263's predecessors often do ("Lt Femoral Head", "L_Kidney")
_SIDE_PREFIX = re.compile(r"^(l|r|lt|rt|left|right)[\s_.-]+(?=\S)", re.IGNORECASE)


def sideOf(name: str) -> tuple[str, str | None]:
    """``(base, "L" | "R")`` of a name with a side, written after it ("Femur_Head_Lt", "SacralPlex_L") or before it
    ("Lt Femoral Head", "Left Lung": a review on real data found these matched no tissue and no limit); ``(name,
    None)`` without one."""
    name = str(name).strip()
    found = _SIDE_SUFFIX.search(name)
    if found and name[:found.start()].strip():
        return name[:found.start()], found.group(1)[0].upper()
    found = _SIDE_PREFIX.match(name)
    if found and name[found.end():].strip():
        return name[found.end():], found.group(1)[0].upper()
    return name, None


def sidedName(name: str) -> str:
    """The name with its side written as the tables do ("Lt Femoral Head" → "Femoral Head_L"); unchanged without."""
    base, side = sideOf(name)
    return name if side is None else f"{base}_{side}"


def _sideVariants(name: str) -> list[str]:
    """A name with a side ("Femur_Head_Lt", "SacralPlex_L", "Lt Femoral Head") as the table may hold it: with the
    side written "_L"/"_R" after it, then without it; [] for a name without one."""
    base, side = sideOf(name)
    return [] if side is None else [f"{base}_{side}", base]


def structureNameVariants(name: str) -> list[tuple[str, bool]]:
    """``(variant, isMargin)`` of a name not in the table as written: with its side written as the table does or
    without it ("Femur_Head_Lt" → "Femur_Head_L"; "SacralPlex_L" → "SacralPlex"), then without a planning-margin
    suffix ("_PRV", "PRV05", "_PRV3mm"), alone or with the side's variants; only variants that differ from the
    name."""
    name = str(name).strip()
    variants = [(v, False) for v in _sideVariants(name)]
    marginless = _MARGIN_SUFFIX.sub("", name)
    if marginless != name:
        variants += [(v, True) for v in (marginless, *_sideVariants(marginless))]
    for sided, _ in list(variants):
        if _MARGIN_SUFFIX.sub("", sided) != sided:  # "Cord_PRV_L": the side, then the margin
            variants.append((_MARGIN_SUFFIX.sub("", sided), True))
    seen, out = set(), []
    for variant, isMargin in variants:
        if variant and variant != name and variant not in seen:
            seen.add(variant)
            out.append((variant, isMargin))
    return out


def sidelessName(name: str) -> str:
    """The name without its side ("SacralPlex_L", "Lt SacralPlex" → "SacralPlex")."""
    return sideOf(name)[0]


@dataclass(frozen=True)
class TissueEntry:
    """One tissue: α/β (Gy), recovery model, overlap priority (higher wins among organs), target flag, aliases."""

    name: str
    alphaBetaGy: float
    recovery: RecoveryModel = field(default_factory=NoRecovery)
    priority: int = 0
    isTarget: bool = False
    aliases: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    source: str = ""
    repairHalfTimeHours: float | None = None  # for courses given more than once a day (incomplete repair)

    def __post_init__(self):
        object.__setattr__(self, "alphaBetaGy", checkAlphaBeta(self.alphaBetaGy, f"tissue {self.name!r}: α/β"))
        if self.repairHalfTimeHours is not None:
            object.__setattr__(self, "repairHalfTimeHours",
                               checkRepairHalfTime(self.repairHalfTimeHours, f"tissue {self.name!r}"))
        object.__setattr__(self, "priority", int(self.priority))
        object.__setattr__(self, "isTarget", bool(self.isTarget))
        object.__setattr__(self, "aliases", tuple(str(a) for a in self.aliases))
        object.__setattr__(self, "prefixes", tuple(str(p) for p in self.prefixes))
        if isinstance(self.recovery, (dict, str)) or self.recovery is None:
            object.__setattr__(self, "recovery", recoveryModelFromDict(self.recovery))

    @property
    def precedence(self) -> tuple:
        """Sort key of the overlap rule: smaller wins (targets, higher priority, lower α/β, name)."""
        return (0 if self.isTarget else 1, -self.priority, self.alphaBetaGy, self.name)

    def toDict(self) -> dict:
        return {"name": self.name, "alphaBetaGy": self.alphaBetaGy, "isTarget": self.isTarget,
                "priority": self.priority, "recovery": self.recovery.toDict(), "aliases": list(self.aliases),
                "prefixes": list(self.prefixes), "source": self.source,
                "repairHalfTimeHours": self.repairHalfTimeHours}

    @classmethod
    def fromDict(cls, data: dict) -> TissueEntry:
        try:
            return cls(name=str(data["name"]), alphaBetaGy=data["alphaBetaGy"],
                       recovery=recoveryModelFromDict(data.get("recovery")), priority=int(data.get("priority", 0)),
                       isTarget=bool(data.get("isTarget", False)), aliases=tuple(data.get("aliases", ())),
                       prefixes=tuple(data.get("prefixes", ())), source=str(data.get("source", "")),
                       repairHalfTimeHours=data.get("repairHalfTimeHours"))
        except KeyError as error:
            raise InputError(f"a tissue entry lacks {error.args[0]!r}: {data!r}") from None


@dataclass(frozen=True)
class TissueTable:
    """Structure → tissue parameters, with a default α/β for voxels outside every listed structure."""

    entries: tuple[TissueEntry, ...]
    defaultAlphaBetaGy: float = 3.0
    name: str = "custom"
    defaultSource: str = ""
    # for tissues without their own, when a course is given more than once a day (None: none assumed, asked for)
    defaultRepairHalfTimeHours: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "entries", tuple(self.entries))
        if self.defaultRepairHalfTimeHours is not None:
            object.__setattr__(self, "defaultRepairHalfTimeHours",
                               checkRepairHalfTime(self.defaultRepairHalfTimeHours, "the default"))
        object.__setattr__(self, "defaultAlphaBetaGy", checkAlphaBeta(self.defaultAlphaBetaGy, "the default α/β"))
        index: dict[str, TissueEntry] = {}
        for entry in self.entries:
            for key in (entry.name, *entry.aliases):
                normalized = normalizeStructureName(key)
                if normalized in index and index[normalized] is not entry:
                    raise InputError(f"tissue table: the name {key!r} is used by both {index[normalized].name!r} "
                                     f"and {entry.name!r}")
                index[normalized] = entry
        object.__setattr__(self, "_index", index)

    # ---- loading --------------------------------------------------------------------------------------------
    @classmethod
    def default(cls) -> TissueTable:
        """The shipped defaults (Tissues_Default.json, REFERENCE §1)."""
        return cls.fromJson(resourcePath("Tissues_Default.json"))

    @classmethod
    def fromJson(cls, path) -> TissueTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read the tissue table: {error}", path) from None
        try:
            return cls.fromDict(data)
        except InputError as error:
            raise InputError(f"tissue table: {error}", path) from None

    @classmethod
    def fromDict(cls, data: dict) -> TissueTable:
        if "tissues" not in data:
            raise InputError("a tissue table needs a 'tissues' list")
        return cls(tuple(TissueEntry.fromDict(e) for e in data["tissues"]),
                   data.get("defaultAlphaBetaGy", 3.0), str(data.get("name", "custom")),
                   str(data.get("defaultSource", "")), data.get("defaultRepairHalfTimeHours"))

    def toDict(self) -> dict:
        return {"name": self.name, "defaultAlphaBetaGy": self.defaultAlphaBetaGy, "defaultSource": self.defaultSource,
                "defaultRepairHalfTimeHours": self.defaultRepairHalfTimeHours,
                "tissues": [e.toDict() for e in self.entries]}

    def withEntry(self, entry: TissueEntry) -> TissueTable:
        """A copy with ``entry`` added, or replacing the entry it matches by name (per-case edits)."""
        existing = self.lookup(entry.name)
        kept = tuple(e for e in self.entries if e is not existing)
        return replace(self, entries=kept + (entry,))

    # ---- lookup ---------------------------------------------------------------------------------------------
    def lookup(self, structureName: str) -> TissueEntry | None:
        """The entry for a structure name (case/space/alias tolerant; GTV*/CTV*/PTV* by prefix), or None; a name
        found neither way is looked up again with its side as the table writes it or without it ("SacralPlex_L":
        the plexus) and then without a planning margin: a PRV ("SpinalCord_PRV05") takes its organ's α/β only, as
        an entry of its own without priority or recovery (a margin is not the organ's tissue: given the cord's
        priority it took the esophagus voxels it overlaps in the composite map) (an independent review: both read
        the default α/β 3 instead of 2, without a word)."""
        entry = self._lookupExact(structureName)
        if entry is not None:
            return entry
        for variant, isMargin in structureNameVariants(structureName):
            entry = self._lookupExact(variant)
            if entry is not None and isMargin:
                return TissueEntry(str(structureName).strip(), entry.alphaBetaGy, NoRecovery(), priority=-1,
                                   isTarget=False, repairHalfTimeHours=entry.repairHalfTimeHours,
                                   source=f"planning margin of '{entry.name}': its α/β only")
            if entry is not None:
                return entry
        return None

    def _lookupExact(self, structureName: str) -> TissueEntry | None:
        normalized = normalizeStructureName(structureName)
        entry = self._index.get(normalized)  # type: ignore[attr-defined]
        if entry is not None:
            return entry
        for candidate in self.entries:
            for prefix in candidate.prefixes:
                if normalized.startswith(normalizeStructureName(prefix)):
                    return candidate
        return None

    def entryFor(self, structureName: str) -> TissueEntry:
        """Like :meth:`lookup` but an unknown structure becomes a non-target entry with the default α/β."""
        entry = self.lookup(structureName)
        if entry is not None:
            return entry
        return TissueEntry(structureName, self.defaultAlphaBetaGy, NoRecovery(), priority=-1, isTarget=False,
                           source=f"not in tissue table '{self.name}': default α/β")


def repairHalfTimes(names: list[str], table: TissueTable) -> tuple[list[float | None], list[str]]:
    """The repair half-time (h) of each owner label of :func:`ownerMap` (index 0: outside every structure, then
    ``names`` in order): the tissue's own, else the table's default. Returns ``(values, missing)``; ``missing``
    names the structures (and "outside every structure") left without one (their value is None)."""
    default = table.defaultRepairHalfTimeHours
    values: list[float | None] = [default]
    for name in names:
        entry = table.lookup(name)
        own = entry.repairHalfTimeHours if entry is not None else None
        values.append(own if own is not None else default)
    missing = [("outside every structure" if index == 0 else names[index - 1])
               for index, value in enumerate(values) if value is None]
    return values, missing


def _checkMasks(masks: dict[str, np.ndarray]) -> tuple[int, ...] | None:
    shape = None
    for name, mask in masks.items():
        mask = np.asarray(mask)
        if shape is None:
            shape = mask.shape
        elif mask.shape != shape:
            raise InputError(f"structure {name!r} has shape {mask.shape}, others {shape}: "
                             "all masks must share one grid")
    return shape


def ownerMap(masks: dict[str, np.ndarray], table: TissueTable,
             shape: tuple | None = None) -> tuple[np.ndarray, list[str]]:
    """Which structure owns each voxel under the overlap rule.

    Returns ``(owner, names)``: ``owner`` int16, 0 outside every structure, ``k`` for ``names[k - 1]``; ``names``
    are the mask names in precedence order (first wins). ``shape``: the grid's, needed when there are no masks (every
    voxel is then outside every structure).
    """
    masksShape = _checkMasks(masks)
    if masksShape is None:
        if shape is None:
            raise InputError("no structures given")
        return np.zeros(tuple(shape), dtype=np.int16), []
    if shape is not None and tuple(shape) != tuple(masksShape):
        raise InputError(f"the structures' grid {masksShape} is not the dose grid {tuple(shape)}")
    shape = masksShape
    ranked = sorted(masks, key=lambda name: table.entryFor(name).precedence + (name,))
    owner = np.zeros(shape, dtype=np.int16)
    # Paint lowest precedence first so that higher precedence overwrites.
    for label in range(len(ranked), 0, -1):
        mask = np.asarray(masks[ranked[label - 1]])
        owner[mask > 0] = label
    return owner, ranked


def alphaBetaMap(masks: dict[str, np.ndarray], table: TissueTable | None = None,
                 defaultAlphaBetaGy: float | None = None,
                 shape: tuple | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Voxel α/β map (Gy) from structure masks with the overlap rule (REFERENCE §1).

    Parameters
    ----------
    masks : structure name → mask (bool, or fractional weights: any weight > 0 counts as inside) on one grid.
    table : tissue table (default: :meth:`TissueTable.default`).
    defaultAlphaBetaGy : α/β outside every structure and for structures not in the table (default: the table's, 3).
    shape : the grid's shape, needed when ``masks`` is empty (then every voxel takes the default).

    Returns
    -------
    (alphaBetaGy float32 array, owner int16 array (0 = outside, k = names[k - 1]), names in precedence order)
    """
    table = table or TissueTable.default()
    default = table.defaultAlphaBetaGy if defaultAlphaBetaGy is None else checkAlphaBeta(defaultAlphaBetaGy,
                                                                                            "the default α/β")
    owner, names = ownerMap(masks, table, shape)
    lut = np.array([default] + [table.lookup(n).alphaBetaGy if table.lookup(n) else default for n in names],
                   dtype=np.float32)
    return lut[owner], owner, names


def intervalMonths(priorDate: datetime.date | None, currentDate: datetime.date | None) -> float | None:
    """Calendar months between two course dates (:func:`.recovery.calendarMonthsBetween`), None when either is
    unknown; a prior course after the current is refused."""
    if _intervalDays(priorDate, currentDate) is None:
        return None
    return calendarMonthsBetween(priorDate, currentDate)


def recoveryMap(masks: dict[str, np.ndarray], table: TissueTable | None, priorDate: datetime.date | None,
                currentDate: datetime.date | None, defaultModel: RecoveryModel | None = None,
                shape: tuple | None = None) -> np.ndarray:
    """Recovered fraction r per voxel for a prior course (float32, 0..1).

    Each voxel takes the recovery model of its owner (same overlap rule as :func:`alphaBetaMap`), evaluated at the
    interval between ``priorDate`` and ``currentDate``. Targets have r = 0 (recovery is a normal-tissue concept,
    REFERENCE §1); voxels outside every structure and structures absent from the table have r = 0 unless
    ``defaultModel`` is given.
    """
    table = table or TissueTable.default()
    months = intervalMonths(priorDate, currentDate)
    owner, names = ownerMap(masks, table, shape)
    values = [defaultModel.fractionForMonths(months) if defaultModel is not None else 0.0]
    for name in names:
        entry = table.lookup(name)
        if entry is not None and entry.isTarget:
            values.append(0.0)
        elif entry is not None:
            values.append(entry.recovery.fractionForMonths(months))
        else:
            values.append(values[0])
    return np.array(values, dtype=np.float32)[owner]


def recoverySummary(masks: dict[str, np.ndarray], table: TissueTable | None, priorDate: datetime.date | None,
                    currentDate: datetime.date | None, defaultModel: RecoveryModel | None = None) -> dict:
    """What :func:`recoveryMap` assumed, for storing with the result: interval, per-structure model and r."""
    table = table or TissueTable.default()
    days = _intervalDays(priorDate, currentDate)
    months = intervalMonths(priorDate, currentDate)
    structures = {}
    for name in masks:
        entry = table.lookup(name)
        if entry is not None and entry.isTarget:
            structures[name] = {"model": {"model": "none"}, "fraction": 0.0, "note": "target: no recovery"}
        elif entry is not None:
            structures[name] = {"model": entry.recovery.toDict(), "fraction": entry.recovery.fractionForMonths(months),
                                "tissue": entry.name}
        else:
            model = defaultModel or NoRecovery()
            structures[name] = {"model": model.toDict(), "fraction": model.fractionForMonths(months),
                                "note": "not in tissue table"}
    return {"intervalDays": days, "intervalMonths": months,
            "priorDate": None if priorDate is None else priorDate.isoformat(),
            "currentDate": None if currentDate is None else currentDate.isoformat(),
            "outsideStructures": (defaultModel or NoRecovery()).toDict(), "structures": structures,
            "wording": "EQD2_total = Σ (1 − r) EQD2_prior + EQD2_current (discount the prior)"}
