"""Whole delineation studies: many cases, several observers, optionally several rounds, analysed in one go.

Folder layout
-------------
``STUDY_DIR`` holds one folder per case (hidden folders, names starting with ``.`` or ``_``, and earlier outputs of
this command are ignored)::

    STUDY_DIR/<case>/<observer>.<ext>                 one round (named "single")
    STUDY_DIR/<case>/<round>/<observer>.<ext>         several rounds, e.g. round1/ (without) and round2/ (with
                                                      radiologist input); rounds are compared in natural order
    STUDY_DIR/<case>/observers/<round>/<observer>.*   the demo-case layout (``observers/observers.json`` may
                                                      describe the observers; it is copied into study.json,
                                                      and its "referenceImage" is the case image)
    STUDY_DIR/<case>/image.<ext> or image/            optional image (file or DICOM series folder): the grid
                                                      RTSTRUCT observers are rasterised on, and the pictures
                                                      (without it, RTSTRUCTs go on a grid derived from the
                                                      contours, see :func:`contourGrid`)
    STUDY_DIR/<case>/marks.mrk.json                   optional radiologist marks (Slicer markups; or the one
    (or STUDY_DIR/<case>/marks/<name>.mrk.json)       .mrk.json in marks/, else the one .csv; several: none
                                                      is checked, the notes say so), checked against every observer
    STUDY_DIR/<case>/marks/registration.tfm           the MRI registration for MRI marks (SimpleITK transform,
                                                      CT LPS -> MRI LPS, beside the marks file); without it MRI
                                                      marks are not checked and the notes say why

An observer file is ``.nrrd`` / ``.nii`` / ``.nii.gz`` / ``.mha`` (a binary mask: 0 outside, one value inside;
several values — a labelmap, a fractional residue, an image — are refused naming the file), ``.seg.nrrd`` (a
Slicer segmentation; the segment is chosen by ``structure``) or an RTSTRUCT ``.dcm`` (the ROI is chosen by
``structure``, see :func:`matchStructureName`). The observer's name is the file name without its extension, spaces
around it dropped; names differing only in upper and lower case or spaces are one observer, within a round and
between rounds (the first round's spelling is used). If ``STUDY_DIR`` itself looks like one case (it contains
observer files or an ``observers/`` folder) it is analysed as a one-case study. The LIDC layout
(``<nodule>/readerK.nrrd``) is the one-round layout. A case folder in which no observer file is found is reported
as a failure, never silently dropped.

Analysis
--------
Each (case, round) with at least two observers goes through
``DelineationReviewLib.core.iov.analyzeObservers`` (REFERENCE §4); a round one reader delineated alone is only
compared with the reader's other rounds (intra-observer; listed in ``singleObserverRounds``). Observers of one
round must share a grid; masks on different grids with the same spacing and direction are brought onto the union grid by
:func:`toCommonGrid` (exact padding when the grids are aligned, nearest-neighbour otherwise — reported in the
unit's notes, never silent). A case that fails is recorded in ``failures`` (with the reason) and skipped; the
study continues.

Outputs (:func:`writeStudyOutputs`, written atomically: a temporary folder beside the output is renamed on
success)::

    long.csv               case, round, kind ("pair" | "observer" | "case" | "intra"), observerA, observerB,
                           metric, value, reason (why a value is NA; "intra": an observer against themself,
                           round "<A>-><B>"), setting (the option the value depends on: the Hausdorff percentile
                           and convention, the surface-Dice tolerance, the marks tolerance; also in the summaries)
    summary_by_case.csv    median, quartiles, IQR per (case, round, kind, metric)
    summary_by_round.csv   median, quartiles, IQR per (round, kind, metric) over all cases
    rounds_comparison.csv  per case: median pairwise Dice / HD<p> / surface Dice per round and the change,
    rounds_comparison.json with the Wilcoxon signed-rank test (scipy.stats.wilcoxon, two-sided) when at least
                           6 cases are paired (otherwise "not computed: fewer than 6 paired cases")
    volume_agreement.csv   per round: the intraclass correlation of the observers' volumes over the cases,
                           ICC(A,1) absolute agreement, ICC(C,1) consistency and one-way ICC(1,1) (readers who
                           differ from case to case) with 95 % limits (McGraw & Wong 1996), the cases and
                           observers left out to make the table complete
    study.json             all of the above + inputs + options + notes + failures
    report.html            self-contained report (SVG plots, tables, pictures)
    pictures/<case>_<round>.png   when a picture callback is given

Derived metrics added here (documented in the long table): per observer ``meanDiceToOthers`` (mean Dice with
every other observer of the round); per (case, round) ``medianPairDice``, ``medianPairHdPercentileMm`` and
``medianPairSurfaceDice`` (medians over the observer pairs; NaN/undefined pairs left out).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import sys
import time
import traceback
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ReirradiationDoseLib.core import __version__
from ReirradiationDoseLib.core.errors import InputError, ProcessingCancelled, libraryReason
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.progress import noProgress

from .marks import DEFAULT_TOLERANCE_MM as DEFAULT_MARKS_TOLERANCE_MM
from .marks import markRowLabels, summaryUndefinedReason
from .observers import requireBinaryMask
from .metrics import DEFAULT_SURFACE_DICE_TOLERANCE_MM, HD_CONVENTIONS, MSD_CONVENTIONS, requireConvention
from .surface import SURFACE_CONVENTIONS

logger = logging.getLogger(__name__)

__all__ = [
    "StudyOptions",
    "StudyCase",
    "StudyResult",
    "LONG_COLUMNS",
    "SUMMARY_STATISTICS",
    "MIN_CASES_FOR_WILCOXON",
    "SINGLE_ROUND",
    "matchStructureName",
    "rankStructureMatches",
    "discoverStudy",
    "readObserverMask",
    "readCaseImage",
    "toCommonGrid",
    "contourGrid",
    "longRowsForUnit",
    "summarize",
    "compareRounds",
    "intraclassCorrelation",
    "volumeAgreement",
    "metricSetting",
    "analyzeStudy",
    "buildReport",
    "writeStudyOutputs",
    "naturalKey",
    "printFailures",
]

SINGLE_ROUND = "single"
MIN_CASES_FOR_WILCOXON = 6
# "reason": why a value is undefined (NA), from the IOV core's reasons; empty for defined values
# "setting": the option a metric's value depends on (the Hausdorff percentile and convention, the surface-Dice
# tolerance τ, the marks' tolerance), so that a table read without study.json says what "hdPercentileMm" measured
LONG_COLUMNS = ("case", "round", "kind", "observerA", "observerB", "metric", "value", "reason", "setting")
# the marks metrics that depend on the marks tolerance (core/marks: reachesBorder = d <= tol, ...)
_MARKS_TOLERANCE_METRICS = {"reachesBorder", "withinTolerance", "overContoured", "arrowCovered", "honoured",
                            "clearMiss", "honouredFraction", "nHonoured", "nClearMisses", "flagged", "worstMissMm",
                            "nOverContoured", "worstOverContourMm"}
SUMMARY_STATISTICS = ("n", "nUndefined", "median", "q1", "q3", "iqr", "min", "max", "mean", "sd")
COMPARISON_COLUMNS = ("comparison", "roundA", "roundB", "case", "metric", "roundAValue", "roundBValue", "change",
                      "wilcoxonP", "note", "setting")
# (long-table metric of a pair, case-level median name, higher is more concordant)
COMPARED_METRICS = (("dice", "medianPairDice", True), ("hdPercentileMm", "medianPairHdPercentileMm", False),
                    ("surfaceDice", "medianPairSurfaceDice", True))

_MASK_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".mhd", ".dcm")
_IMAGE_STEM = "image"
_IGNORED_FILES = {"marks.mrk.json", "observers.json"}

PictureCallback = Callable[..., bytes | None]
Analyzer = Callable[..., object]


# ---- options ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyOptions:
    """Options of a study analysis.

    structure : the ROI / segment name to take from RTSTRUCT and .seg.nrrd observer files (tolerant match).
    reference : consensus used for per-observer sensitivity/specificity: "staple", "majority" or an observer.
    toleranceMm : surface-Dice tolerance τ (mm). hdPercentile : the p of HDp (95 → HD95, 98 → HD98).
    hdConvention : "maxDirected" (default), "meanDirected" or "pooled" (see ``metrics.py``).
    msdConvention : "pooled" (default) or "meanDirected" (see ``metrics.py``).
    surface : "voxel" (default) or "surfel" (Nikolov et al.'s area-weighted surfels, see ``surface.py``).
    marksToleranceMm : distance within which a radiologist mark counts as covered by an observer.
    """

    structure: str = "GTV"
    reference: str | None = "staple"
    toleranceMm: float = DEFAULT_SURFACE_DICE_TOLERANCE_MM
    hdPercentile: float = 95.0
    hdConvention: str = "maxDirected"
    marksToleranceMm: float = DEFAULT_MARKS_TOLERANCE_MM
    msdConvention: str = "pooled"
    surface: str = "voxel"

    def __post_init__(self):
        if self.reference is not None and str(self.reference).casefold() in ("staple", "majority"):
            object.__setattr__(self, "reference", str(self.reference).casefold())  # "STAPLE" as "none" is taken
        if not (self.toleranceMm >= 0 and math.isfinite(self.toleranceMm)):
            raise InputError(f"the surface-Dice tolerance must be a non-negative number of mm, got {self.toleranceMm}")
        if not (self.marksToleranceMm >= 0 and math.isfinite(self.marksToleranceMm)):
            # an adversarial review: -3 mm skipped every case's marks, exit code 0 (iov refuses it)
            raise InputError(f"the marks tolerance must be a non-negative number of mm, got {self.marksToleranceMm}")
        if not 0 < self.hdPercentile <= 100:
            raise InputError(f"the Hausdorff percentile must lie in (0, 100], got {self.hdPercentile}")
        requireConvention(self.hdConvention, HD_CONVENTIONS, "Hausdorff percentile convention")
        requireConvention(self.msdConvention, MSD_CONVENTIONS, "mean-surface-distance convention")
        requireConvention(self.surface, SURFACE_CONVENTIONS, "surface convention")

    @property
    def hdLabel(self) -> str:
        p = self.hdPercentile
        return "HD" if p == 100 else f"HD{p:g}"


# ---- structure names -----------------------------------------------------------------------------------------
# Small alias table (TG-263 names and common variants), keys and values normalised (lower case, alphanumeric).
_ALIASES = {
    "gtv": {"gtv", "gtvp", "gtvprimary", "gtvt", "gtvtumor", "gtvtumour", "grosstumorvolume", "grosstumourvolume"},
    "ctv": {"ctv", "ctvp", "ctvprimary", "clinicaltargetvolume"},
    "itv": {"itv", "internaltargetvolume"},
    "ptv": {"ptv", "ptvp", "planningtargetvolume"},
    "rectum": {"rectum", "rect"},
    "bladder": {"bladder", "urinarybladder"},
    "spinalcord": {"spinalcord", "cord", "spinal", "spinalcanal"},
    "brainstem": {"brainstem", "brainstm"},
    "bowelsmall": {"bowelsmall", "smallbowel", "smallintestine"},
    "bowellarge": {"bowellarge", "largebowel", "colon"},
    "sacralplexus": {"sacralplexus", "plexussacral", "sacralplex"},
    "femurheadl": {"femurheadl", "femoralheadl", "lfemoralhead", "leftfemoralhead", "femurheadleft"},
    "femurheadr": {"femurheadr", "femoralheadr", "rfemoralhead", "rightfemoralhead", "femurheadright"},
}
_TARGET_TYPES = {"gtv", "ctv", "itv", "ptv", "igtv"}
_DERIVED_TOKENS = {"ring", "expanded", "exp", "opt", "avoid", "minus", "plus", "margin", "mm", "dose", "hlp", "help",
                   "z", "x", "eval", "prv", "wall"}


def _normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _tokens(name: str) -> list[str]:
    """Lower-case tokens split at non-alphanumerics and letter/digit boundaries ("GTV_obs3" → gtv, obs, 3)."""
    return [t for t in re.split(r"[^0-9a-z]+|(?<=[a-z])(?=[0-9])|(?<=[0-9])(?=[a-z])", name.casefold()) if t]


def _aliasesOf(wanted: str) -> set[str]:
    key = _normalise(wanted)
    for canonical, aliases in _ALIASES.items():
        if key == canonical or key in aliases:
            return aliases | {canonical}
    return {key}


def rankStructureMatches(candidates: Sequence[str], wanted: str) -> list[tuple[int, str]]:
    """All candidates that match ``wanted``, as ``(tier, name)`` sorted best first.

    Tiers: 0 exact; 1 equal ignoring case, spaces and punctuation; 2 a TG-263 alias or common variant
    ("GTVp", "Gross Tumor Volume" for "GTV"); 3 the name (or an alias) as a leading or trailing word of the
    candidate ("GTV_obs3", "obs3 GTV", "GTV-1"), unless the candidate is another target type ("PTV_GTV") or a
    derived helper structure ("GTV_ring", "z_GTV", "GTV+5mm").
    """
    wantedKey = _normalise(wanted)
    aliases = _aliasesOf(wanted)
    ranked = []
    for candidate in candidates:
        key = _normalise(candidate)
        if candidate == wanted:
            ranked.append((0, candidate))
        elif key == wantedKey:
            ranked.append((1, candidate))
        elif key in aliases:
            ranked.append((2, candidate))
        else:
            tokens = _tokens(candidate)
            if not tokens or "+" in candidate or any(t in _DERIVED_TOKENS for t in tokens):
                continue
            leading, trailing = tokens[0], tokens[-1]
            if leading in aliases and not (trailing in _TARGET_TYPES and trailing not in aliases):
                ranked.append((3, candidate))
            elif trailing in aliases and not (leading in _TARGET_TYPES and leading not in aliases):
                ranked.append((3, candidate))
            elif len(tokens) > 1 and tokens[-1].isdigit() and tokens[-2] in aliases and len(tokens) == 2:
                ranked.append((3, candidate))
    return sorted(ranked)


def matchStructureName(candidates: Sequence[str], wanted: str) -> str | None:
    """The one candidate that best matches ``wanted`` (see :func:`rankStructureMatches`), or None when there is
    no match or the best tier is ambiguous (e.g. "GTV1" and "GTV2" when "GTV" is wanted)."""
    ranked = rankStructureMatches(list(candidates), wanted)
    if not ranked:
        return None
    best = [name for tier, name in ranked if tier == ranked[0][0]]
    return best[0] if len(best) == 1 else None


def _chooseStructure(names: Sequence[str], wanted: str, path) -> str:
    chosen = matchStructureName(names, wanted)
    if chosen is not None:
        return chosen
    ranked = rankStructureMatches(names, wanted)
    if ranked:
        raise InputError(f"several structures match {wanted!r} equally well ({', '.join(n for _, n in ranked)}); "
                         "rename them or choose one with --structure", path)
    raise InputError(f"no structure matching {wanted!r} was found; the file holds: {', '.join(names) or 'none'}",
                     path)


# ---- discovery ----------------------------------------------------------------------------------------------
def naturalKey(text: str):
    """Sort key putting "case2" before "case10"."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", str(text))]


def _maskStem(path: Path) -> str | None:
    """Observer name of a mask file (the name without its extension), or None if it is not a mask file."""
    name = path.name
    if name in _IGNORED_FILES or name.startswith((".", "_")):
        return None
    for suffix in _MASK_SUFFIXES:
        if name.casefold().endswith(suffix):
            stem = name[: -len(suffix)]
            if not stem or stem.casefold() == _IMAGE_STEM:
                return None
            return stem
    return None


def _isRtStruct(path: Path) -> bool:
    """True for an RTSTRUCT, False for another DICOM object (a CT slice exported beside it); a ``.dcm`` that is not
    readable DICOM (empty, text, damaged) is refused naming it: it was dropped silently, and the round analysed
    with one observer fewer."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception as error:  # noqa: BLE001 - pydicom raises many kinds for damaged files
        raise InputError(f"{path.name} is not a readable DICOM file ({type(error).__name__}): an observer file that "
                         "cannot be read would silently leave its observer out; fix or remove it", path) from None
    if "Modality" not in dataset:
        raise InputError(f"{path.name} is not a readable DICOM file (no Modality): fix or remove it", path)
    return str(dataset.Modality).upper() == "RTSTRUCT"


# Observer names that statistics software reads as a missing value (R's and pandas' defaults): an observer of
# that name would vanish from long.csv in the analysis.
_MISSING_VALUE_NAMES = {"na", "n/a", "nan", "null", "none", "-nan", "#n/a"}


def observerKey(name: str) -> str:
    """The identity of an observer name: upper and lower case, spaces (leading, trailing, repeated) and the Unicode
    form do not tell readers apart, within a round or between rounds ("réader3" typed with a precomposed é in one round
    and with e and a combining accent in the next, as file systems and keyboards write it, is one reader: a review
    found them taken for two, their intra-observer comparison gone; NFKC, so that compatibility forms such as
    full-width letters are one reader too)."""
    text = unicodedata.normalize("NFKC", " ".join(str(name).split()))
    return unicodedata.normalize("NFKC", text.casefold())


def _observerFiles(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir(), key=lambda p: naturalKey(p.name)):
        if path.is_symlink() and not path.exists() and _maskStem(path) is not None:
            # an adversarial review: an observer's file linked from elsewhere and moved was left out, without a word
            raise InputError(f"{path.name} is a link to a file that does not exist ({os.readlink(path)}): an "
                             "observer's delineation is missing", folder)
        if not path.is_file():
            continue
        stem = _maskStem(path)
        if stem is None:
            continue
        if path.name.casefold().endswith(".dcm") and not _isRtStruct(path):
            continue
        stem = " ".join(stem.split())  # "obsB .nrrd" is observer "obsB", as the IOV core names it
        if not stem:
            raise InputError(f"{path.name!r} gives an observer without a name; rename the file", folder)
        if observerKey(stem) in _MISSING_VALUE_NAMES:
            raise InputError(f"{path.name} gives observer {stem!r}, which R and pandas read as a missing value in "
                             "the tables; rename the file (e.g. with the reader's initials and a prefix)", folder)
        same = next((other for other in files if observerKey(other) == observerKey(stem)), None)
        if same is not None:
            raise InputError(f"two files give observer {stem!r} ({files[same].name} and {path.name}): observer "
                             "names that differ only in upper and lower case, spaces or their Unicode form are one "
                             "observer", folder)
        files[stem] = path
    return files


def _oneSpellingPerObserver(rounds: dict[str, dict[str, str]], notes: list[str]) -> dict[str, dict[str, str]]:
    """Every round's observers under the spelling of the round (natural order) that names them first: "ObsA" in
    round 1 and "obsa" in round 2 are one reader, whose rounds are compared (before: two readers, no intra-observer
    comparison, the case out of the rounds' test)."""
    spelling: dict[str, str] = {}
    out = {}
    for roundName in sorted(rounds, key=naturalKey):
        out[roundName] = {}
        for observer, path in rounds[roundName].items():
            canonical = spelling.setdefault(observerKey(observer), observer)
            if canonical != observer:
                notes.append(f"{Path(path).name} in round {roundName!r} is observer {canonical!r} (names differing "
                             "only in upper and lower case, spaces or their Unicode form are one observer)")
            out[roundName][canonical] = path
    return {roundName: out[roundName] for roundName in rounds}


def _dicomIdentity(path) -> tuple[str, str]:
    """(PatientID, frame of reference UID) of an RTSTRUCT (its referenced frame) or of a DICOM image folder (its
    first readable file); empty strings where unknown (NRRD, unreadable)."""
    import pydicom

    path = Path(path)
    candidates = [path] if path.is_file() else sorted(path.glob("*"))[:50] if path.is_dir() else []
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            ds = pydicom.dcmread(candidate, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM: look at the next file
            continue
        frame = str(ds.get("FrameOfReferenceUID", "") or "")
        if not frame and ds.get("ReferencedFrameOfReferenceSequence"):
            frame = str(ds.ReferencedFrameOfReferenceSequence[0].get("FrameOfReferenceUID", "") or "")
        return str(ds.get("PatientID", "") or ""), frame
    return "", ""


def emptyMaskNotes(masks: dict, consequence: str) -> list[str]:
    """A note for each observer whose mask is empty, ending with ``consequence`` (what it means where it is read)."""
    return [f"observer {observer!r}: the mask is empty: its pairs' Dice, Jaccard and surface Dice are 0 and their "
            f"distances undefined{consequence}" for observer, mask in masks.items() if not np.any(mask)]


def identicalMaskNotes(masks: dict) -> list[str]:
    """A note for each observer whose (non-empty) delineation is voxel for voxel another's: a file copied for a
    second reader, or the same file given twice (an adversarial review: Dice 1.000 without a word), rarely two readers
    agreeing to the voxel."""
    notes, seen = [], {}
    for observer, mask in masks.items():
        if not np.any(mask):
            continue
        key = (np.shape(mask), hashlib.sha1(np.packbits(np.asarray(mask, bool)).tobytes()).hexdigest())
        if key in seen and np.array_equal(masks[seen[key]], mask):
            notes.append(f"observers {seen[key]!r} and {observer!r} delineated the same voxels exactly: check that "
                         "one file is not a copy of the other")
        else:
            seen.setdefault(key, observer)
    return notes


def _identityNotes(files: dict, imagePath: str | None) -> list[str]:
    """Notes for RTSTRUCT observers whose patient or frame of reference differs from the case image's (or, without
    a DICOM image, from the first observer's): contours from another patient, or drawn on another scan, would be
    compared as if on this one. Notes, not refusals: de-identification may renew the UIDs of each file."""
    reference = _dicomIdentity(imagePath) if imagePath else ("", "")
    what = "the case image"
    if not any(reference):
        first = next(((k, p) for k, p in files.items() if str(p).casefold().endswith(".dcm")), None)
        reference = _dicomIdentity(first[1]) if first else ("", "")
        what = f"observer {first[0]!r}" if first else ""
    notes = []
    for observer, path in files.items():
        if not str(path).casefold().endswith(".dcm"):
            continue
        patient, frame = _dicomIdentity(path)
        if patient and reference[0] and patient != reference[0]:
            notes.append(f"observer {observer!r} ({Path(path).name}) belongs to patient ID {patient}, {what} to "
                         f"{reference[0]}: check that it is this case's file")
        if frame and reference[1] and frame != reference[1]:
            notes.append(f"observer {observer!r} ({Path(path).name}) was drawn on another frame of reference than "
                         f"{what} ({frame} against {reference[1]}): check that it was drawn on this scan")
    return notes


@dataclass(frozen=True)
class StudyCase:
    """One case folder: its rounds (round name → observer name → file), optional image and marks."""

    name: str
    path: str
    rounds: dict = field(default_factory=dict)
    imagePath: str | None = None
    marksPath: str | None = None
    observersInfoPath: str | None = None
    problem: str | None = None
    notes: tuple[str, ...] = ()  # what discovery left out and why (carried into every round's notes)

    def toDict(self) -> dict:
        return {"name": self.name, "path": self.path,
                "rounds": {r: dict(files.items()) for r, files in self.rounds.items()},
                "image": self.imagePath, "marks": self.marksPath, "observersInfo": self.observersInfoPath,
                "problem": self.problem, "notes": list(self.notes)}


def _findImage(folder: Path) -> Path | None:
    for path in sorted(folder.iterdir()):
        lower = path.name.casefold()
        if path.is_dir() and lower == _IMAGE_STEM:
            return path
        if path.is_file() and lower.startswith(_IMAGE_STEM + ".") and any(
                lower.endswith(s) for s in (".nrrd", ".nii", ".nii.gz", ".mha", ".mhd")):
            return path
    return None


def _discoverCase(folder: Path) -> StudyCase:
    name = folder.name
    image = _findImage(folder)
    observersDir = folder / "observers"
    info = observersDir / "observers.json"
    if image is None and info.is_file():  # the demo case names its reference image in observers.json
        try:
            reference = json.loads(info.read_text(encoding="utf-8")).get("referenceImage")
        except (OSError, ValueError, AttributeError):
            reference = None
        if reference and (observersDir / reference).exists():
            image = (observersDir / reference).resolve()
    marks = folder / "marks.mrk.json"
    caseNotes = []
    if not marks.is_file() and (folder / "marks").is_dir():
        files = sorted(p for p in (folder / "marks").iterdir() if p.is_file())
        # the markups file, else a CSV (the demo writes both forms of the same marks: the markups file is read)
        candidates = ([p for p in files if p.name.casefold().endswith(".mrk.json")]
                      or [p for p in files if p.name.casefold().endswith(".csv")])
        if len(candidates) == 1:
            marks = candidates[0]
        elif candidates:  # which one is the radiologist's? Not guessed: said
            caseNotes.append(f"radiologist marks not evaluated: marks/ holds {len(candidates)} marks files "
                             f"({', '.join(p.name for p in candidates)}); keep one there, or name the one to check "
                             "marks.mrk.json in the case folder")
    rounds: dict[str, dict[str, str]] = {}
    try:
        roundParent = observersDir if observersDir.is_dir() else folder
        direct = _observerFiles(roundParent)
        if direct:
            rounds[SINGLE_ROUND] = {k: str(v) for k, v in direct.items()}
        for sub in sorted(roundParent.iterdir(), key=lambda p: naturalKey(p.name)):
            if not sub.is_dir() or sub.name.startswith((".", "_")) or sub.name.casefold() == _IMAGE_STEM \
                    or sub == observersDir:
                continue
            files = _observerFiles(sub)
            if files and observerKey(sub.name) in _MISSING_VALUE_NAMES:
                raise InputError(f"round folder {sub.name!r} has a name R and pandas read as a missing value in the "
                                 "tables; rename it (e.g. round1)", sub)
            if files:
                if direct:
                    raise InputError(f"observer files lie both directly in the case folder and in round folder "
                                     f"{sub.name!r}; put every round in its own folder", folder)
                rounds[sub.name] = {k: str(v) for k, v in files.items()}
        rounds = _oneSpellingPerObserver(rounds, caseNotes)
        if rounds and observerKey(name) in _MISSING_VALUE_NAMES:
            # a review: a case named "NA" was analysed, and R and pandas then read its rows as of no case
            raise InputError(f"the case folder's name {name!r} is read as a missing value by R and pandas in the "
                             "tables; rename it (e.g. case_NA)", folder)
        problem = None if rounds else ("no observer file (.nrrd, .nii.gz, .seg.nrrd or RTSTRUCT .dcm) was found "
                                       "in the case folder or its round folders")
    except (InputError, OSError) as error:
        problem = str(error)
    return StudyCase(name=name, path=str(folder), rounds=rounds, imagePath=str(image) if image else None,
                     marksPath=str(marks) if marks.is_file() else None,
                     observersInfoPath=str(info) if info.is_file() else None, problem=problem,
                     notes=tuple(caseNotes))


def _marksRegistration(marksPath: str) -> str | None:
    """The MRI -> CT registration stored beside the marks (``registration.tfm``/``.h5`` in the marks folder)."""
    folder = Path(marksPath).parent
    for name in ("registration.tfm", "registration.h5", "registration_mri.tfm", "registration_mri.h5"):
        if (folder / name).is_file():
            return str(folder / name)
    return None


def _isStudyOutput(folder: Path) -> bool:
    """A previous output of this command (e.g. ``--output STUDY_DIR/results``) is not a case."""
    if (folder / "study.json").is_file() and (folder / "long.csv").is_file():
        logger.info("study: %s is a study output, not a case: skipped", folder)
        return True
    return False


def discoverStudy(studyDir) -> list[StudyCase]:
    """The cases of a study folder (see the module docstring for the layout), in natural order.

    Cases without observer files are returned with ``problem`` set (they become failures of the study).
    """
    studyDir = Path(studyDir)
    if not studyDir.is_dir():
        raise InputError("the study folder does not exist or is not a folder", studyDir)
    if (studyDir / "observers").is_dir() or _observerFiles(studyDir):
        return [_discoverCase(studyDir)]
    cases = [_discoverCase(sub) for sub in sorted(studyDir.iterdir(), key=lambda p: naturalKey(p.name))
             if sub.is_dir() and not sub.name.startswith((".", "_")) and not _isStudyOutput(sub)]
    if not cases:
        raise InputError("the study folder holds no case folder (expected STUDY_DIR/<case>/<observer>.nrrd, "
                         "…/<case>/<round>/<observer>.* or …/<case>/observers/<round>/<observer>.dcm)", studyDir)
    return cases


# ---- reading ------------------------------------------------------------------------------------------------
def readCaseImage(path) -> tuple[sitk.Image, ImageGeometry]:
    """The case image: a volume file, or a folder holding one DICOM image series (read by the dose module's DICOM
    image reader, which names the folder and the problem when it holds none or several)."""
    path = Path(path)
    if path.is_dir():
        from ReirradiationDoseLib.core.dicomimage import readImageSeries

        image = readImageSeries(path)[0]
        return image, ImageGeometry.fromImage(image)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"the image could not be read ({libraryReason(error)})", path) from error
    return image, ImageGeometry.fromImage(image)


def _segio():
    try:
        from ReirradiationDoseLib.core import segio
    except ImportError as error:  # pragma: no cover - segio is part of the product
        raise InputError("reading segmentation and RTSTRUCT files needs ReirradiationDoseLib.core.segio, "
                         "which is not available in this installation") from error
    return segio


def _unpackSegmentation(value):
    """segio readers return a dict of masks, or a tuple whose first item is that dict (and maybe a geometry)."""
    if isinstance(value, tuple):
        masks = value[0]
        geometry = next((v for v in value[1:] if isinstance(v, ImageGeometry)), None)
        return masks, geometry
    return value, None


def readObserverMask(path, structure: str = "GTV", referenceGeometry: ImageGeometry | None = None
                     ) -> tuple[np.ndarray, ImageGeometry, str]:
    """One observer's binary mask: ``(mask (bool, [k, j, i]), geometry, structure name used or "")``.

    Plain mask volumes: every non-zero voxel is inside. ``.seg.nrrd`` and RTSTRUCT: the segment / ROI matching
    ``structure`` (:func:`matchStructureName`). An RTSTRUCT has no grid of its own and is rasterised on
    ``referenceGeometry`` (required for it: the case image's grid, or :func:`contourGrid` of all observers).
    """
    path = Path(path)
    lower = path.name.casefold()
    if lower.endswith(".dcm") or lower.endswith(".seg.nrrd"):
        return _readNamedStructure(path, structure, referenceGeometry)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        if any(key.startswith("Segment0_") for key in reader.GetMetaDataKeys()):
            return _readNamedStructure(path, structure, referenceGeometry)
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"the mask could not be read ({libraryReason(error)})", path) from error
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("a 3D single-component mask volume is required", path)
    geometry = ImageGeometry.fromImage(image)
    array = sitk.GetArrayViewFromImage(image)
    requireBinaryMask(array, path)
    return array != 0, geometry, ""


def _rtStructRoi(path, structure: str):
    """(RtStruct, chosen ROI name) of an observer's RTSTRUCT file."""
    from ReirradiationDoseLib.core.rtstruct import readRtStruct

    rtStruct = readRtStruct(path)
    names = [roi.name for roi in rtStruct.rois if not roi.isPoint]
    return rtStruct, _chooseStructure(names, structure, path)


def contourGrid(contours: Sequence[np.ndarray], inPlaneSpacingMm: float = 1.0, marginMm: float = 5.0
                ) -> ImageGeometry:
    """An axial LPS grid covering planar contours (e.g. all observers' GTVs of one round) when no image is given.

    In-plane spacing ``inPlaneSpacingMm``; slice spacing = the median distance between consecutive contour
    planes (the CT slice spacing the contours were drawn on), with slices placed on the planes; a margin of
    ``marginMm`` (at least one slice) on every side.
    """
    polygons = [np.asarray(c, dtype=float).reshape(-1, 3) for c in contours if len(c)]
    if not polygons:
        raise InputError("no contour points to build a grid from")
    for polygon in polygons:
        if np.ptp(polygon[:, 2]) > 0.01:
            raise InputError("the contours are not axial (their points do not share one z): give the case image "
                             "(image.* or image/) to rasterise them on")
    planes = np.unique(np.round([polygon[0, 2] for polygon in polygons], 3))
    sliceMm = float(np.median(np.diff(planes))) if len(planes) > 1 else inPlaneSpacingMm
    points = np.vstack(polygons)
    low = np.floor((points[:, :2].min(axis=0) - marginMm) / inPlaneSpacingMm) * inPlaneSpacingMm
    high = np.ceil((points[:, :2].max(axis=0) + marginMm) / inPlaneSpacingMm) * inPlaneSpacingMm
    sizeXy = np.round((high - low) / inPlaneSpacingMm).astype(int) + 1
    marginSlices = max(1, int(math.ceil(marginMm / sliceMm)))
    sizeZ = int(round((planes[-1] - planes[0]) / sliceMm)) + 1 + 2 * marginSlices
    origin = (float(low[0]), float(low[1]), float(planes[0] - marginSlices * sliceMm))
    return ImageGeometry((int(sizeXy[0]), int(sizeXy[1]), sizeZ), (inPlaneSpacingMm, inPlaneSpacingMm, sliceMm),
                         origin)


def _readNamedStructure(path: Path, structure: str, referenceGeometry: ImageGeometry | None):
    if path.name.casefold().endswith(".dcm"):
        from ReirradiationDoseLib.core.rtstruct import rasterizeRoi

        if referenceGeometry is None:
            raise InputError("an RTSTRUCT has no voxel grid of its own: give the case image (image.* or image/) "
                             "or let the study derive a grid from the contours", path)
        rtStruct, chosen = _rtStructRoi(path, structure)
        return rasterizeRoi(rtStruct, chosen, referenceGeometry), referenceGeometry, chosen
    segio = _segio()
    masks, geometry = _unpackSegmentation(segio.readSegmentationWithGeometry(str(path)))
    if geometry is None:
        raise InputError("the reader returned no grid for this file", path)
    names = list(masks)
    if len(names) == 1 and matchStructureName(names, structure) is None and _genericSegmentName(names[0], path):
        chosen = names[0]  # a segmentation of one unnamed segment ("Segment_1", the file's name): the delineation
    else:
        # a named segment must match (a review: an observer's only segment "Rectum" was taken as the GTV and the
        # observer flagged 90 mm off by the border marks, where `iov` refused the same file)
        chosen = _chooseStructure(names, structure, path)
    return np.asarray(masks[chosen], dtype=bool), geometry, chosen


def _genericSegmentName(name: str, path: Path) -> bool:
    """A segment name that names no structure: Slicer's default ("Segment_1", "Segment 1"), a label value, "label",
    or the file's own name."""
    stem = (_maskStem(path) or path.name.split(".")[0]).casefold()
    text = name.strip().casefold()
    return bool(re.fullmatch(r"(segment|label)?[ _-]*\d*_*", text)) or text == stem


def toCommonGrid(masks: dict[str, tuple[np.ndarray, ImageGeometry]]) -> tuple[dict[str, np.ndarray],
                                                                                ImageGeometry, list[str]]:
    """Bring observer masks onto one grid: ``(masks, geometry, notes)``.

    Same grid everywhere: returned unchanged. Otherwise the masks must share spacing and direction; the
    common grid is the union of their extents on the first observer's lattice. Aligned grids (origins an
    integer number of voxels apart) are padded exactly; misaligned ones are resampled with nearest-neighbour
    interpolation, which can move a boundary by half a voxel — the notes say which happened.
    """
    names = list(masks)
    first = masks[names[0]][1]
    if all(geometry.sameGridAs(first) for _, geometry in masks.values()):
        return {name: mask for name, (mask, _) in masks.items()}, first, []
    for name in names[1:]:
        geometry = masks[name][1]
        if not (np.allclose(geometry.spacingMm, first.spacingMm, atol=1e-3)
                and np.allclose(geometry.direction, first.direction, atol=1e-5)):
            raise InputError(f"observers {names[0]!r} and {name!r} are on grids with different voxel spacing or "
                             f"orientation ({first.spacingMm} vs {geometry.spacingMm} mm); resample them onto one "
                             "grid first")
    lows, highs, notes = [], [], []
    for name in names:
        geometry = masks[name][1]
        corners = np.array([[i, j, k] for i in (0, geometry.sizeXyz[0] - 1) for j in (0, geometry.sizeXyz[1] - 1)
                            for k in (0, geometry.sizeXyz[2] - 1)], dtype=float)
        index = first.lpsToIndex(geometry.indexToLps(corners))
        lows.append(index.min(axis=0))
        highs.append(index.max(axis=0))
        if np.any(lows[-1] > np.array(first.sizeXyz) - 0.5) or np.any(highs[-1] < -0.5):
            # an adversarial review: an observer's grid 500 mm away made a 766 x 774 x 219 common grid (272 s instead
            # of 0.4 s), at 5000 mm a bare MemoryError; the grids of one image's delineations overlap
            raise InputError(f"the grid of observer {name!r} ({geometry.describe()}) does not overlap that of observer "
                             f"{names[0]!r} ({first.describe()}): the delineations were not drawn on one image, or a "
                             "file's header (origin) is wrong")
    low = np.floor(np.min(lows, axis=0) + 1e-6)
    high = np.ceil(np.max(highs, axis=0) - 1e-6)
    common = ImageGeometry(tuple(int(v) for v in high - low + 1), first.spacingMm,
                           tuple(first.indexToLps(low)), first.direction)
    largest = max(int(np.prod(g.sizeXyz)) for _, g in masks.values())
    if int(np.prod(common.sizeXyz)) > 8 * largest:
        notes.append(f"the observers' grids cover a common grid of {common.describe()}, more than 8 times the "
                     "largest of their own grids: check their origins (the analysis is slower, not wrong)")
    out = {}
    for name in names:
        mask, geometry = masks[name]
        offset = common.lpsToIndex(geometry.originMm)
        aligned = np.allclose(offset, np.round(offset), atol=1e-3)
        if aligned:
            start = np.round(offset).astype(int)[::-1]
            padded = np.zeros(common.shape, dtype=bool)
            padded[tuple(slice(s, s + n) for s, n in zip(start, mask.shape, strict=True))] = mask
            out[name] = padded
            if not geometry.sameGridAs(common):
                notes.append(f"observer {name!r}: mask padded onto the common grid (exact, grids aligned)")
        else:
            image = sitk.GetImageFromArray(mask.astype(np.uint8))
            geometry.applyTo(image)
            resampled = sitk.Resample(image, common.emptyImage(sitk.sitkUInt8), sitk.Transform(),
                                      sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            out[name] = sitk.GetArrayFromImage(resampled) != 0
            notes.append(f"observer {name!r}: mask resampled (nearest neighbour) onto the common grid, its voxels "
                         "were not aligned with the others' (boundaries may move by up to half a voxel)")
    return out, common, notes


# ---- one (case, round) unit -----------------------------------------------------------------------------------
def _surfaceOptions(options: StudyOptions) -> dict:
    """The surface and MSD conventions for the analyzer, only when not the defaults (an analyzer given by a caller
    need not know them)."""
    out = {}
    if options.surface != "voxel":
        out["surface"] = options.surface
    if options.msdConvention != "pooled":
        out["msdConvention"] = options.msdConvention
    return out


def _defaultAnalyzer():
    from .iov import analyzeObservers

    return analyzeObservers


def _marksReporter():
    try:
        from .marks import marksReportForObservers
    except ImportError:
        return None
    return marksReportForObservers


def _callPicture(callback, caseName, roundName, masks, geometry, imagePath):
    try:
        return callback(caseName, roundName, masks, geometry, imagePath=imagePath)
    except TypeError as error:
        if "imagePath" not in str(error):
            raise
        return callback(caseName, roundName, masks, geometry)


def _toJsonable(value):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _toJsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_toJsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _toJsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _readMasks(case: StudyCase, files: dict, options: StudyOptions, imageGeometry: ImageGeometry | None = None
               ) -> tuple[dict, ImageGeometry, list, dict]:
    """The observers' masks of ``files`` (name -> file) on one grid: ``(masks, geometry, notes, structure used per
    observer)``. RTSTRUCTs are rasterised on the case image's grid (``imageGeometry`` when the caller has read it),
    else on a grid derived from their contours."""
    referenceGeometry = None
    notes: list[str] = []
    rtStructFiles = [p for p in files.values() if str(p).casefold().endswith(".dcm")]
    if rtStructFiles and case.imagePath:
        referenceGeometry = imageGeometry or readCaseImage(case.imagePath)[1]
    elif rtStructFiles:
        contours = []
        for path in rtStructFiles:
            rtStruct, chosen = _rtStructRoi(path, options.structure)
            roi = rtStruct.roi(chosen)
            contours += [points for kind, points in rtStruct.contours.get(roi.number, [])
                         if kind in ("CLOSED_PLANAR", "CLOSED_PLANAR_XOR")]
        referenceGeometry = contourGrid(contours)
        notes.append(f"no case image: the RTSTRUCT observers were rasterised on a grid derived from their contours "
                     f"({referenceGeometry.spacingMm[0]:g} mm in-plane, {referenceGeometry.spacingMm[2]:g} mm "
                     "slices on the contour planes)")
    read = {}
    structures = {}
    for observer, path in files.items():
        mask, geometry, structureName = readObserverMask(path, options.structure, referenceGeometry)
        read[observer] = (mask, geometry)
        structures[observer] = structureName
    try:
        masks, geometry, gridNotes = toCommonGrid(read)
    except InputError as error:
        if error.path is not None:
            raise
        shown = "; ".join(f"{observer}: {Path(path).name}" for observer, path in files.items())
        raise InputError(f"{error} (files: {shown})", Path(next(iter(files.values()))).parent) from None
    return masks, geometry, notes + gridNotes, structures


def _analyzeUnit(case: StudyCase, roundName: str, options: StudyOptions, analyzer, pictureCallback) -> dict:
    """Read, analyse and picture one (case, round). Returns {"result": …, "picture": bytes|None} or raises."""
    started = time.perf_counter()
    files = case.rounds[roundName]
    if len(files) < 2:
        raise InputError(f"round {roundName!r} has {len(files)} observer file(s); at least two are needed",
                         case.path)
    notes: list[str] = _identityNotes(files, case.imagePath) + list(case.notes)
    masks, geometry, readNotes, structures = _readMasks(case, files, options)
    notes += readNotes
    notes += identicalMaskNotes(masks)
    notes += emptyMaskNotes(masks, " (NA), so the case's distance medians cover only the pairs of two non-empty masks")
    analyzer = analyzer or _defaultAnalyzer()
    reference = unitReference(options.reference, masks)
    if reference is None and options.reference is not None:
        # a review: the analyzer refused the unknown reference and the whole case round was lost, its pair metrics
        # with it (the rounds' test fell from 6 to 5 cases), exit code 0
        notes.append(f"the reference observer {options.reference!r} did not delineate in round {roundName!r}: no "
                     "consensus comparison here; the pair metrics stand")
    iovResult = analyzer(masks, geometry, reference=reference, toleranceMm=options.toleranceMm,
                         hdPercentile=options.hdPercentile, hdConvention=options.hdConvention,
                         **_surfaceOptions(options))
    iovDict = _toJsonable(iovResult.toDict() if hasattr(iovResult, "toDict") else iovResult)
    notes += list(iovDict.get("notes") or ()) if isinstance(iovDict, dict) else []
    marks = None
    if case.marksPath:
        reporter = _marksReporter()
        if reporter is None:
            notes.append("marks.mrk.json is present but the marks module (DelineationReviewLib.core.marks) is not "
                         "available: marks were not evaluated")
        else:
            registration = _marksRegistration(case.marksPath)
            try:
                marks = _toJsonable(reporter(case.marksPath, masks, geometry, toleranceMm=options.marksToleranceMm,
                                             transform=registration))
            except InputError as error:  # the observers' numbers stand; the marks say why they are missing
                notes.append(f"radiologist marks not evaluated: {error}")
                marks = None
            if isinstance(marks, dict) and marks.get("mapping"):
                notes.append(f"radiologist marks ({Path(case.marksPath).name}): mapping to the CT: {marks['mapping']}")
            if isinstance(marks, dict):  # an arrow drawn from outside, a registration not applied: in the report
                notes += [f"radiologist marks: {note}" for note in marks.get("notes") or ()]
    picture, pictureError = None, None
    if pictureCallback is not None:
        try:
            picture = _callPicture(pictureCallback, case.name, roundName, masks, geometry, case.imagePath)
        except ProcessingCancelled:
            raise
        except Exception as error:  # noqa: BLE001 - a picture is optional; the numbers stand without it
            pictureError = f"{type(error).__name__}: {error}"
            notes.append(f"the agreement picture could not be made ({pictureError})")
    result = {
        "case": case.name, "round": roundName, "observers": list(masks), "files": dict(files),
        "structures": structures,
        "geometry": {"sizeXyz": list(geometry.sizeXyz), "spacingMm": list(geometry.spacingMm),
                     "originMm": list(geometry.originMm), "direction": list(geometry.direction)},
        "notes": notes, "iov": iovDict, "marks": marks, "picture": None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return {"result": result, "picture": picture if isinstance(picture, (bytes, bytearray)) else None}


def unitReference(reference: str | None, masks: dict) -> str | None:
    """The consensus reference of one (case, round): "staple", "majority" or None as asked, an observer under the
    spelling of this round (names are matched as :func:`observerKey` matches readers), None when that observer did
    not delineate in it."""
    if reference is None or reference in ("staple", "majority"):
        return reference
    return next((observer for observer in masks if observerKey(observer) == observerKey(reference)), None)


def _workerIgnoresInterrupts() -> None:
    """A worker process leaves Ctrl-C to the parent, which cancels the work and says so in one line (a verification
    review: each worker printed its own KeyboardInterrupt traceback)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _unitWorker(args):
    """Process-pool entry point: never raises, returns the failure instead (with the reason)."""
    case, roundName, options, analyzer, pictureCallback = args
    try:
        return _analyzeUnit(case, roundName, options, analyzer, pictureCallback)
    except ProcessingCancelled:
        raise
    except Exception as error:  # noqa: BLE001 - one bad case must not abort the study
        return {"failure": _failure(case.name, roundName, error)}


def _failure(caseName: str, roundName: str | None, error: BaseException) -> dict:
    expected = isinstance(error, (InputError, ValueError, OSError))
    message = str(error) if expected else f"{type(error).__name__}: {error}"
    entry = {"case": caseName, "round": roundName, "error": message, "type": type(error).__name__}
    if not expected:
        entry["traceback"] = "".join(traceback.format_exception(type(error), error, error.__traceback__))[-4000:]
    return entry


# ---- long table ---------------------------------------------------------------------------------------------
def _number(value):
    if isinstance(value, bool) or value is None:
        return None if value is None else float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return "skip"


# Non-metric parts of the IOV / marks reports (reasons, definitions, crop boxes, options echoed back).
_SKIPPED_KEYS = {"undefined", "reasons", "reason", "units", "definitions", "definition", "grid", "crop", "cropRule",
                 "hdPercentile", "toleranceMm", "positionLps", "positionRas", "tailLps", "tailRas", "notes"}


def _flatten(prefix: str, value, out: list[tuple[str, float | None]]) -> None:
    """Numeric leaves of nested dicts/lists as (dotted name, value); strings and reasons are skipped."""
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).startswith("_") or str(key) in _SKIPPED_KEYS:
                continue
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list):
        directed = "Directed" in prefix.rsplit(".", 1)[-1] and len(value) == 2
        for index, item in enumerate(value):
            _flatten(f"{prefix}.{('AtoB', 'BtoA')[index] if directed else index}", item, out)
    else:
        number = _number(value)
        if number != "skip":
            out.append((prefix, number))


def _observerEntries(container) -> list[tuple[str, dict]]:
    """Per-observer dicts from a list of {name|observer: …} or a dict name → {…}."""
    if isinstance(container, dict):
        return [(str(name), entry) for name, entry in container.items() if isinstance(entry, dict)]
    entries = []
    if isinstance(container, list):
        for entry in container:
            if isinstance(entry, dict):
                name = entry.get("name", entry.get("observer"))
                if name is not None:
                    entries.append((str(name), {k: v for k, v in entry.items() if k not in ("name", "observer")}))
    return entries


def _row(case, roundName, kind, a, b, metric, value, reason: str = "") -> dict:
    return {"case": case, "round": roundName, "kind": kind, "observerA": a, "observerB": b, "metric": metric,
            "value": value, "reason": reason if value is None else ""}


def _why(entry, metric: str, prefix: str = "") -> str:
    """Why ``metric`` of ``entry`` (a pair, an observer, the IOV result) is undefined: its ``undefined`` reason for
    the metric (or for the metric its dotted name starts with), else ""."""
    undefined = entry.get("undefined") if isinstance(entry, dict) else None
    if not isinstance(undefined, dict):
        return ""
    name = metric[len(prefix) + 1:] if prefix and metric.startswith(prefix + ".") else metric
    return str(undefined.get(name) or undefined.get(name.split(".")[0]) or "")


def _nanMedian(values) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.median(finite)) if finite else None


def longRowsForUnit(result: dict) -> list[dict]:
    """The long-format rows of one (case, round) result (see the module docstring for the derived metrics).

    ``value`` is a float, or None when the metric is undefined (written as NA in the CSV; ``reason`` says why, as
    study.json does).
    """
    case, roundName, iov = result["case"], result["round"], result["iov"]
    rows = []
    for name, entry in _observerEntries(iov.get("observers", [])):
        leaves: list = []
        _flatten("", entry, leaves)
        rows += [_row(case, roundName, "observer", name, "", metric, value, _why(entry, metric))
                 for metric, value in leaves]
    diceByObserver: dict[str, list] = {name: [] for name in result["observers"]}
    pairValues: dict[str, list] = {}
    for pair in iov.get("pairs", []):
        a, b = _pairName(pair, "a"), _pairName(pair, "b")
        leaves = []
        _flatten("", {k: v for k, v in pair.items() if k not in ("a", "b", "observerA", "observerB")}, leaves)
        for metric, value in leaves:
            rows.append(_row(case, roundName, "pair", a, b, metric, value, _why(pair, metric)))
            pairValues.setdefault(metric, []).append(value)
        for name in (a, b):
            if name in diceByObserver:
                diceByObserver[name].append(pair.get("dice"))
    consensus = iov.get("consensus") or {}
    if isinstance(consensus, dict):
        for name, entry in _observerEntries(consensus.get("observers", [])):
            leaves = []
            _flatten("", entry, leaves)
            rows += [_row(case, roundName, "observer", name, "", f"consensus.{metric}", value, _why(entry, metric))
                     for metric, value in leaves]
        leaves = []
        _flatten("consensus", {k: v for k, v in consensus.items() if k != "observers"}, leaves)
        rows += [_row(case, roundName, "case", "", "", metric, value,
                      _why(consensus, metric, "consensus") or _why(iov, "consensus"))
                 for metric, value in leaves]
    for key, value in iov.items():
        if key in ("observers", "pairs", "consensus") or key in _SKIPPED_KEYS:
            continue
        leaves = []
        _flatten(key, value, leaves)
        rows += [_row(case, roundName, "case", "", "", metric, v, _why(iov, metric)) for metric, v in leaves]
    for name, values in diceByObserver.items():
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        rows.append(_row(case, roundName, "observer", name, "", "meanDiceToOthers",
                         float(np.mean(finite)) if finite else None, "no pair of this observer has a defined Dice"))
    for pairMetric, caseMetric, _ in COMPARED_METRICS:
        if pairMetric in pairValues:
            rows.append(_row(case, roundName, "case", "", "", caseMetric, _nanMedian(pairValues[pairMetric]),
                             f"no pair has a defined {pairMetric}"))
    rows += _marksRows(case, roundName, result.get("marks"))
    return rows


def _marksRows(case: str, roundName: str, marks) -> list[dict]:
    """Rows of the marks report (``core.marks.marksReportForObservers``): per observer the summary
    (``marks.honouredFraction``, ``marks.nHonoured``, ``marks.worstMissMm`` …) and per mark and observer
    ``mark[<label>].signedDistanceMm`` / ``.honoured`` … (booleans as 0/1; ``mark[<label>#<id>]`` when two marks
    share a label)."""
    rows = []
    if not isinstance(marks, dict):
        return rows
    for name, entry in _observerEntries(marks.get("summary") or {}):
        leaves: list = []
        # the worst miss's label and id are text (in study.json), not a number: no NA row for them
        _flatten("", {k: v for k, v in entry.items() if k not in ("worstMissLabel", "worstMissMarkId")}, leaves)
        rows += [_row(case, roundName, "observer", name, "", f"marks.{metric}", value,
                      summaryUndefinedReason(entry, metric)) for metric, value in leaves]
    allMarks = [m for m in marks.get("marks") or [] if isinstance(m, dict)]
    for mark, label in zip(allMarks, markRowLabels(allMarks), strict=True):
        for name, entry in _observerEntries(mark.get("observers") or {}):
            leaves = []
            _flatten("", entry, leaves)
            if mark.get("kind") != "arrow":  # a point has no arrow metrics (a review: 150 NA rows without a reason)
                leaves = [(metric, value) for metric, value in leaves if not metric.startswith("arrow")]
            reason = str(entry.get("reason") or "")  # why the mark's distance is undefined for this observer
            rows += [_row(case, roundName, "observer", name, "", f"mark[{label}].{metric}", value, reason)
                     for metric, value in leaves]
    return rows


# ---- statistics ---------------------------------------------------------------------------------------------
def _statistics(values) -> dict:
    values = list(values)
    finite = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))])
    undefined = len(values) - int(finite.size)
    if finite.size == 0:
        return {"n": 0, "nUndefined": undefined, "median": None, "q1": None, "q3": None, "iqr": None, "min": None,
                "max": None, "mean": None, "sd": None}
    q1, median, q3 = (float(v) for v in np.percentile(finite, [25, 50, 75]))
    return {"n": int(finite.size), "nUndefined": undefined, "median": median, "q1": q1, "q3": q3, "iqr": q3 - q1,
            "min": float(finite.min()), "max": float(finite.max()), "mean": float(finite.mean()),
            "sd": float(finite.std(ddof=1)) if finite.size > 1 else None}


def summarize(rows: Sequence[dict], groupBy: Sequence[str]) -> list[dict]:
    """Per group of ``groupBy`` columns (e.g. ("round", "kind", "metric")): n, the number of defined (finite)
    values summarised, and nUndefined, the NA values left out (their reasons in long.csv); median and quartiles
    (``numpy.percentile``, linear interpolation: Hyndman & Fan type 7, R's default), IQR = q3 − q1, min, max, mean
    and sample SD (n − 1; NA below two values). The rows of a group are summarised as they are: observer pairs of
    one case are not independent, so these are descriptive, not a test (an independent check)."""
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault(tuple(row[c] for c in groupBy), []).append(row["value"])
    order = sorted(groups, key=lambda key: [naturalKey(str(part)) for part in key])
    return [{**dict(zip(groupBy, key, strict=True)), **_statistics(groups[key])} for key in order]


def _unitMedian(result: dict, pairMetric: str, observers: set | None = None) -> float | None:
    """Median of a pair metric over the unit's observer pairs (only pairs of ``observers`` when given)."""
    return _nanMedian([pair.get(pairMetric) for pair in result["iov"].get("pairs", [])
                       if observers is None or {_pairName(pair, "a"), _pairName(pair, "b")} <= observers])


def _pairName(pair: dict, side: str) -> str:
    return str(pair.get(side, pair.get("observerA" if side == "a" else "observerB", "")))


def compareRounds(results: Sequence[dict], hdLabel: str = "HD95") -> dict:
    """Paired comparison of each case's consecutive rounds (natural order of the round names, so name them so that
    they sort in time: round1, round2 or 1_pre, 2_post).

    Within each case its rounds are taken in that order and each round is paired with the case's next one; the
    comparisons gather the cases by pair of rounds (a case with round1 and round3 only is compared round1 -> round3,
    not dropped). Per case: the median over observer pairs of Dice, HDp and surface Dice in each round and the
    change (round B − round A), over the pairs of the observers who delineated in both rounds (a pair set that
    changes with the readers is not the readers' change; the case's note names who was left out). Over cases: the
    median change and, with at least ``MIN_CASES_FOR_WILCOXON`` paired cases whose change is not zero (``nNonZero``),
    the two-sided Wilcoxon signed-rank test of the changes (``scipy.stats.wilcoxon``, zero differences dropped,
    exact distribution for small n without ties; for n = 6 with all changes of one sign p = 2/2^6 = 0.03125). Cases
    holding only one of the two rounds are listed in ``unpaired``. Concordance is judged by Dice (higher is better);
    HDp and surface Dice are reported beside it.
    """
    from scipy import stats

    byCase: dict[str, dict[str, dict]] = {}
    for result in results:
        byCase.setdefault(result["case"], {})[result["round"]] = result
    rounds = sorted({result["round"] for result in results}, key=naturalKey)
    grouped: dict[tuple[str, str], list[str]] = {}
    for case, pairs in consecutiveRounds(results).items():
        for pair in pairs:
            grouped.setdefault(pair, []).append(case)
    comparisons = []
    for roundA, roundB in sorted(grouped, key=lambda pair: (naturalKey(pair[0]), naturalKey(pair[1]))):
        perCase = []
        for case in grouped[(roundA, roundB)]:
            entry = {"case": case}
            unitA, unitB = byCase[case][roundA], byCase[case][roundB]
            observersA = set(unitA.get("observers") or ())
            observersB = set(unitB.get("observers") or ())
            common = observersA & observersB
            if observersA != observersB:
                onlyA = ", ".join(sorted(observersA - observersB)) or "none"
                onlyB = ", ".join(sorted(observersB - observersA)) or "none"
                entry["note"] = (f"different observers: only in {roundA}: {onlyA}; only in {roundB}: {onlyB}; "
                                 f"compared over the pairs of the {len(common)} observer(s) in both")
            for pairMetric, _, _ in COMPARED_METRICS:
                a = _unitMedian(unitA, pairMetric, common)
                b = _unitMedian(unitB, pairMetric, common)
                entry[pairMetric] = {"roundA": a, "roundB": b,
                                     "change": None if a is None or b is None else b - a}
            perCase.append(entry)
        unpaired = []
        for case in sorted(byCase, key=naturalKey):
            present = [r for r in (roundA, roundB) if r in byCase[case]]
            if len(present) == 1:
                unpaired.append({"case": case, "has": present[0]})
        tests = {}
        for pairMetric, _, higherIsBetter in COMPARED_METRICS:
            changes = [e[pairMetric]["change"] for e in perCase if e[pairMetric]["change"] is not None]
            test = {"n": len(changes), "medianChange": _nanMedian(changes),
                    "casesImproved": int(sum(1 for c in changes if (c > 0 if higherIsBetter else c < 0))),
                    "casesWorsened": int(sum(1 for c in changes if (c < 0 if higherIsBetter else c > 0))),
                    "higherIsMoreConcordant": higherIsBetter, "pValue": None, "statistic": None,
                    "method": "scipy.stats.wilcoxon (two-sided, zero_method='wilcox', method='auto')"}
            nonZero = [c for c in changes if c != 0]
            test["nNonZero"] = len(nonZero)
            if len(changes) < MIN_CASES_FOR_WILCOXON:
                test["note"] = f"not computed: fewer than {MIN_CASES_FOR_WILCOXON} paired cases (n={len(changes)})"
            elif not nonZero:
                test["note"] = "not computed: every paired change is zero"
            elif len(nonZero) < MIN_CASES_FOR_WILCOXON:
                # the test drops zero changes (zero_method='wilcox'): a review found it run on 5 cases reported as 6
                test["note"] = (f"not computed: fewer than {MIN_CASES_FOR_WILCOXON} paired cases with a change "
                                f"(n={len(changes)}, {len(changes) - len(nonZero)} without a change; the test "
                                "leaves those out)")
            else:
                outcome = stats.wilcoxon(changes, alternative="two-sided", zero_method="wilcox", method="auto")
                test["statistic"] = float(outcome.statistic)
                test["pValue"] = float(outcome.pvalue)
                test["note"] = "" if len(nonZero) == len(changes) else (
                    f"{len(changes) - len(nonZero)} case(s) without a change left out by the test (n={len(nonZero)})")
            tests[pairMetric] = test
        dice = tests["dice"]
        conclusion, moreConcordant = _conclusion(roundA, roundB, dice)
        differing = [e["case"] for e in perCase if e.get("note")]
        if differing:
            conclusion += (f"; {len(differing)} case(s) ({', '.join(differing)}) had different observers in the two "
                           "rounds: compared over the observers in both")
        if unpaired:
            conclusion += (f"; {len(unpaired)} case(s) without both rounds left out ("
                           + ", ".join(f"{u['case']}: {u['has']} only" for u in unpaired) + ")")
        comparisons.append({"roundA": roundA, "roundB": roundB, "cases": perCase, "unpaired": unpaired,
                            "tests": tests, "moreConcordant": moreConcordant,
                            "significant": None if dice["pValue"] is None else bool(dice["pValue"] < 0.05),
                            "conclusion": conclusion})
    note = "" if comparisons else ("only one round: nothing to compare" if len(rounds) <= 1
                                   else "no case has two rounds: nothing to compare")
    return {"rounds": rounds, "comparisons": comparisons, "note": note, "hdLabel": hdLabel,
            "minimumCasesForTest": MIN_CASES_FOR_WILCOXON}


def consecutiveRounds(results: Sequence[dict]) -> dict[str, list[tuple[str, str]]]:
    """Per case (natural order), its analysed rounds paired each with the next (natural order of the names): the
    pairs :func:`compareRounds` compares."""
    analysed: dict[str, set] = {}
    for result in results:
        analysed.setdefault(result["case"], set()).add(result["round"])
    out = {}
    for case in sorted(analysed, key=naturalKey):
        ordered = sorted(analysed[case], key=naturalKey)
        out[case] = list(zip(ordered, ordered[1:], strict=False))
    return out


def intraObserverComparisons(cases: Sequence[StudyCase], options: StudyOptions, analyzer=None) -> list[dict]:
    """Each observer against themself: per case, each round an observer delineated in against the next round
    (natural order) in which the same observer delineated again, the pair metrics of the two delineations (Dice,
    Jaccard, HDp, MSD, surface Dice, volumes: the definitions and options of the interobserver pairs). Rounds are
    those found, not only those analysed for interobserver variation: a round one reader delineated alone (a
    re-delineation, an intra-observer study) is compared too, and the other readers of a case whose round 2 one
    reader re-delineated alone are compared round 1 -> round 3. An observer whose two masks cannot be compared has
    an ``error`` instead."""
    analyzer = analyzer or _defaultAnalyzer()
    entries = []
    for case in cases:
        if case.problem:
            continue
        ordered = sorted(case.rounds, key=naturalKey)
        observers = sorted({o for files in case.rounds.values() for o in files}, key=naturalKey)
        pairs = []
        for observer in observers:
            present = [r for r in ordered if observer in case.rounds[r]]
            following = zip(present, present[1:], strict=False)
            pairs += [(ordered.index(a), ordered.index(b), observer) for a, b in following]
        imageGeometry = None  # the case image's grid, read once for all its observers' RTSTRUCTs
        for indexA, indexB, observer in sorted(pairs, key=lambda item: (item[0], item[1], naturalKey(item[2]))):
            roundA, roundB = ordered[indexA], ordered[indexB]
            entry = {"case": case.name, "observer": observer, "roundA": roundA, "roundB": roundB}
            try:
                # named by observer and round: the readers' and the metrics' messages name both (a review: "the mask
                # of observer 'round2' is empty")
                files = {f"{observer} ({roundA})": case.rounds[roundA][observer],
                         f"{observer} ({roundB})": case.rounds[roundB][observer]}
                if imageGeometry is None and case.imagePath and any(
                        str(p).casefold().endswith(".dcm") for p in files.values()):
                    imageGeometry = readCaseImage(case.imagePath)[1]
                masks, geometry, notes, _ = _readMasks(case, files, options, imageGeometry)
                outcome = analyzer(masks, geometry, reference=None, toleranceMm=options.toleranceMm,
                                   hdPercentile=options.hdPercentile, hdConvention=options.hdConvention,
                                   **_surfaceOptions(options))
                outcome = _toJsonable(outcome.toDict() if hasattr(outcome, "toDict") else outcome)
                (pair,) = outcome["pairs"]
                entry["metrics"] = {k: v for k, v in pair.items() if k not in ("a", "b")}
                entry["spacingMm"] = [float(v) for v in geometry.spacingMm]
                # a file copied into the next round reads Dice 1.000 (a review: noted between observers, not here)
                entry["notes"] = notes + identicalMaskNotes(masks)
            except (InputError, OSError, RuntimeError) as error:
                entry["error"] = str(error)
            entries.append(entry)
    return entries


def _intraRows(entry: dict) -> list[dict]:
    """Long-table rows of one intra-observer comparison: kind ``intra``, round ``<roundA>-><roundB>``, observerA the
    observer."""
    leaves: list = []
    _flatten("", entry.get("metrics") or {}, leaves)
    roundName = f"{entry['roundA']}->{entry['roundB']}"
    return [_row(entry["case"], roundName, "intra", entry["observer"], "", metric, value,
                 _why(entry.get("metrics"), metric)) for metric, value in leaves]


def _conclusion(roundA: str, roundB: str, dice: dict) -> tuple[str, str | None]:
    if dice["n"] == 0:
        return f"no case has a defined pairwise Dice in both {roundA} and {roundB}", None
    change = dice["medianChange"]
    if change == 0:
        direction, better = f"the median pairwise Dice did not change from {roundA} to {roundB}", None
    else:
        better = roundB if change > 0 else roundA
        direction = (f"{better} is more concordant: the median pairwise Dice "
                     f"{'rose' if change > 0 else 'fell'} from {roundA} to {roundB} in "
                     f"{dice['casesImproved'] if change > 0 else dice['casesWorsened']} of {dice['n']} cases "
                     f"(median change {change:+.3f})")
    if dice["pValue"] is None:
        return f"{direction}; Wilcoxon signed-rank test {dice['note']}", better
    significance = "significant" if dice["pValue"] < 0.05 else "not significant"
    left = f" ({dice['note']})" if dice.get("note") else ""  # cases without a change, which the test leaves out
    return (f"{direction}; Wilcoxon signed-rank p = {dice['pValue']:.4g} ({significance} at the 5 % level){left}",
            better)


def _comparisonRows(comparison: dict) -> list[dict]:
    rows = []
    label = f"{comparison['roundA']}->{comparison['roundB']}"
    for entry in comparison["cases"]:
        for pairMetric, _, _ in COMPARED_METRICS:
            values = entry[pairMetric]
            rows.append({"comparison": label, "roundA": comparison["roundA"], "roundB": comparison["roundB"],
                         "case": entry["case"], "metric": f"median pair {pairMetric}",
                         "roundAValue": values["roundA"], "roundBValue": values["roundB"],
                         "change": values["change"], "wilcoxonP": None, "note": entry.get("note", "")})
    for pairMetric, _, _ in COMPARED_METRICS:
        test = comparison["tests"][pairMetric]
        medianA = _nanMedian([e[pairMetric]["roundA"] for e in comparison["cases"]])
        medianB = _nanMedian([e[pairMetric]["roundB"] for e in comparison["cases"]])
        rows.append({"comparison": label, "roundA": comparison["roundA"], "roundB": comparison["roundB"],
                     "case": "(all cases: medians, Wilcoxon)", "metric": f"median pair {pairMetric}",
                     "roundAValue": medianA, "roundBValue": medianB, "change": test["medianChange"],
                     "wilcoxonP": test["pValue"], "note": test.get("note", "")})
    return rows


# ---- volume agreement (intraclass correlation) -----------------------------------------------------------------
ICC_MINIMUM_CASES = 3
VOLUME_AGREEMENT_COLUMNS = ("round", "cases", "observers", "iccAgreement", "iccAgreementLow", "iccAgreementHigh",
                            "iccConsistency", "iccConsistencyLow", "iccConsistencyHigh", "iccOneWay", "iccOneWayLow",
                            "iccOneWayHigh", "casesLeftOut", "observersLeftOut", "note")


def intraclassCorrelation(ratings, confidence: float = 0.95) -> dict:
    """Single-measure intraclass correlations of an n × k table (n cases, k observers, every cell known) from the
    two-way ANOVA (Shrout & Fleiss 1979; McGraw & Wong 1996): ``agreement`` ICC(A,1) = ICC(2,1), two-way random,
    absolute agreement (an observer who delineates everything larger lowers it); ``consistency`` ICC(C,1) =
    ICC(3,1) (a constant offset between observers does not). Both take the observers to be the same people in every
    case; ``oneWay`` ICC(1,1) does not (readers who differ from case to case, as LIDC's anonymous readers).
    Confidence limits: McGraw & Wong's F-based intervals (the agreement one with Satterthwaite's degrees of
    freedom). Shrout & Fleiss's 6 × 4 example: 0.17, 0.29 and 0.71.

    Returns ``{"n", "k", "agreement", "agreementCi", "consistency", "consistencyCi", "oneWay", "oneWayCi",
    "msCases", "msObservers", "msError"}``; the ICCs None (with ``note``) when the table has no variation to
    apportion."""
    from scipy import stats

    y = np.asarray(ratings, dtype=float)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2 or not np.all(np.isfinite(y)):
        raise InputError("an intraclass correlation needs a complete table of at least 2 cases × 2 observers")
    n, k = y.shape
    grand = y.mean()
    msr = k * float(((y.mean(axis=1) - grand) ** 2).sum()) / (n - 1)
    msc = n * float(((y.mean(axis=0) - grand) ** 2).sum()) / (k - 1)
    sse = float(((y - grand) ** 2).sum()) - (n - 1) * msr - (k - 1) * msc
    mse = max(sse, 0.0) / ((n - 1) * (k - 1))
    out = {"n": n, "k": k, "msCases": msr, "msObservers": msc, "msError": mse, "agreement": None,
           "agreementCi": [None, None], "consistency": None, "consistencyCi": [None, None], "oneWay": None,
           "oneWayCi": [None, None], "note": ""}
    if msr <= 0.0:
        out["note"] = "the cases do not differ: the ICC is undefined"
        return out
    alpha = 1.0 - confidence
    dfr, dfe = n - 1, (n - 1) * (k - 1)
    msw = ((k - 1) * msc + dfe * mse) / (n * (k - 1))  # within cases: observers and residual together
    out["consistency"] = (msr - mse) / (msr + (k - 1) * mse)
    out["oneWay"] = (msr - msw) / (msr + (k - 1) * msw)
    out["agreement"] = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    if mse <= 0.0:  # the observers agree exactly, or differ by the same amount in every case: no F-based limits
        out["note"] = ("no residual variation (the observers agree exactly, or differ by the same amount in every "
                       "case): ICC(C,1) is 1 and the 95 % limits are not defined")
    else:
        f0 = msr / mse
        fl, fu = f0 / stats.f.ppf(1 - alpha / 2, dfr, dfe), f0 * stats.f.ppf(1 - alpha / 2, dfe, dfr)
        out["consistencyCi"] = [(fl - 1) / (fl + k - 1), (fu - 1) / (fu + k - 1)]
        f1 = msr / msw
        fl, fu = f1 / stats.f.ppf(1 - alpha / 2, dfr, n * (k - 1)), f1 * stats.f.ppf(1 - alpha / 2, n * (k - 1), dfr)
        out["oneWayCi"] = [(fl - 1) / (fl + k - 1), (fu - 1) / (fu + k - 1)]
        agreement = out["agreement"]
        if agreement < 1.0:
            a = k * agreement / (n * (1 - agreement))
            b = 1 + k * agreement * (n - 1) / (n * (1 - agreement))
            v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / dfe)
            with np.errstate(all="ignore"):
                fs, fss = stats.f.ppf(1 - alpha / 2, n - 1, v), stats.f.ppf(1 - alpha / 2, v, n - 1)
                out["agreementCi"] = [n * (msr - fs * mse) / (fs * (k * msc + (k * n - k - n) * mse) + n * msr),
                                      n * (fss * msr - mse) / (k * msc + (k * n - k - n) * mse + n * fss * msr)]
    for key in ("agreement", "consistency", "oneWay"):  # plain floats (numpy's repr in a CSV reads "np.float64(…)");
        out[key] = None if out[key] is None else float(out[key])  # a limit the F quantiles cannot give: None
        out[key + "Ci"] = [None if v is None or not math.isfinite(float(v)) else float(v) for v in out[key + "Ci"]]
    return out


def volumeAgreement(rows: Sequence[dict], minimumCases: int = ICC_MINIMUM_CASES) -> list[dict]:
    """Per round, the intraclass correlation of the observers' volumes over the cases (:func:`intraclassCorrelation`)
    from the long table's ``volumeCc`` rows. The two-way model needs every observer in every case: cases where an
    observer has no volume are left out, and while fewer than ``minimumCases`` cases remain complete the observer
    with the fewest volumes is left out (both listed). Fewer than 2 observers or ``minimumCases`` cases: not
    computed, said in ``note``."""
    volumes: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        if row["kind"] == "observer" and row["metric"] == "volumeCc" and row["value"] is not None \
                and math.isfinite(float(row["value"])):
            volumes.setdefault(row["round"], {}).setdefault(row["case"], {})[row["observerA"]] = float(row["value"])
    out = []
    for roundName in sorted(volumes, key=naturalKey):
        byCase = volumes[roundName]
        observers = sorted({o for values in byCase.values() for o in values}, key=naturalKey)
        leftOutObservers: list[str] = []
        while True:
            complete = [c for c in sorted(byCase, key=naturalKey) if all(o in byCase[c] for o in observers)]
            # leaving observers out cannot make up for cases that do not exist (a newcomer's review: the demo's one
            # case listed three of its five observers as left out, "1 case(s) with every one of 2 observer(s)")
            if len(complete) >= minimumCases or len(observers) <= 2 or len(byCase) < minimumCases:
                break
            fewest = min(observers, key=lambda o: sum(o in byCase[c] for c in byCase))
            observers.remove(fewest)
            leftOutObservers.append(fewest)
        entry = {"round": roundName, "cases": len(complete), "observers": len(observers),
                 "observerNames": observers, "caseNames": complete,
                 "casesLeftOut": [c for c in sorted(byCase, key=naturalKey) if c not in complete],
                 "observersLeftOut": leftOutObservers, "note": ""}
        if len(byCase) < minimumCases:
            entry["note"] = (f"not computed: {len(byCase)} case(s) in the round (at least {minimumCases} cases are "
                             "needed)")
            out.append(entry)
            continue
        if len(observers) < 2 or len(complete) < minimumCases:
            entry["note"] = (f"not computed: {len(complete)} case(s) with every one of {len(observers)} observer(s) "
                             f"(at least {minimumCases} cases and 2 observers are needed)")
            out.append(entry)
            continue
        icc = intraclassCorrelation([[byCase[c][o] for o in observers] for c in complete])
        entry.update(iccAgreement=icc["agreement"], iccAgreementLow=icc["agreementCi"][0],
                     iccAgreementHigh=icc["agreementCi"][1], iccConsistency=icc["consistency"],
                     iccConsistencyLow=icc["consistencyCi"][0], iccConsistencyHigh=icc["consistencyCi"][1],
                     iccOneWay=icc["oneWay"], iccOneWayLow=icc["oneWayCi"][0], iccOneWayHigh=icc["oneWayCi"][1],
                     note=icc["note"])
        out.append(entry)
    return out


# ---- the study ------------------------------------------------------------------------------------------------
@dataclass
class StudyResult:
    """Everything a study produced. ``pictures`` maps (case, round) to PNG bytes (not in study.json)."""

    studyDir: str
    options: StudyOptions
    cases: list[StudyCase]
    results: list[dict]
    failures: list[dict]
    rows: list[dict]
    summaryByCase: list[dict]
    summaryByRound: list[dict]
    roundsComparison: dict
    observersInfo: dict = field(default_factory=dict)
    pictures: dict = field(default_factory=dict)
    seconds: float = 0.0
    intraObserver: list = field(default_factory=list)  # each observer against themself, round to next round
    singleObserverRounds: list = field(default_factory=list)  # rounds of one reader: intra-observer only
    volumeAgreement: list = field(default_factory=list)  # per round, the ICC of the observers' volumes

    @property
    def succeeded(self) -> int:
        return len(self.results)

    def toDict(self) -> dict:
        return _toJsonable({
            "format": "reirradiation-delineation-study", "formatVersion": 1, "software": f"reirradiation {__version__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "inputs": {"studyDir": self.studyDir, "cases": [case.toDict() for case in self.cases],
                       "observersInfo": self.observersInfo},
            "options": asdict(self.options),
            "counts": {"cases": len(self.cases), "analysedUnits": len(self.results), "failures": len(self.failures)},
            "results": self.results, "failures": self.failures,
            "summaryByCase": self.summaryByCase, "summaryByRound": self.summaryByRound,
            "roundsComparison": self.roundsComparison, "intraObserver": self.intraObserver,
            "singleObserverRounds": self.singleObserverRounds, "volumeAgreement": self.volumeAgreement,
            "longColumns": list(LONG_COLUMNS),
            "seconds": round(self.seconds, 3),
        })


def analyzeStudy(studyDir, options: StudyOptions | None = None, *, jobs: int = 1, progress=None,
                 pictureCallback: PictureCallback | None = None, analyzer: Analyzer | None = None) -> StudyResult:
    """Discover and analyse every (case, round) of a study; failures are recorded, never fatal.

    Parameters
    ----------
    studyDir : the study folder (layout in the module docstring).
    options : :class:`StudyOptions`.
    jobs : worker processes (1: in this process). Workers need a picklable ``analyzer``/``pictureCallback``.
    progress : ``progress(fraction, message)``; may raise ``ProcessingCancelled``.
    pictureCallback : optional ``callback(caseName, roundName, masks, geometry, imagePath=None) -> PNG bytes``
        (the CLI passes an offscreen renderer when slicer-core is available; the core never imports it).
    analyzer : the IOV function, default ``DelineationReviewLib.core.iov.analyzeObservers``.
    """
    options = options or StudyOptions()
    progress = progress or noProgress
    started = time.perf_counter()
    cases = discoverStudy(studyDir)
    if options.reference not in (None, "staple", "majority"):  # a reader: a name no case holds is a typing error
        observers = {observer for case in cases for files in case.rounds.values() for observer in files}
        if not any(observerKey(observer) == observerKey(options.reference) for observer in observers):
            raise InputError(f"the consensus reference {options.reference!r} is neither 'staple', 'majority' nor an "
                             "observer of the study (its observers: "
                             f"{', '.join(sorted(observers, key=naturalKey)) or 'none found'})", studyDir)
    failures = [{"case": case.name, "round": None, "error": case.problem, "type": "InputError"}
                for case in cases if case.problem]
    tasks = [(case, roundName, options, analyzer, pictureCallback)
             for case in cases if not case.problem for roundName, files in case.rounds.items() if len(files) >= 2]
    # a round one reader delineated alone (a re-delineation; an intra-observer study) has no interobserver part,
    # but its reader is compared with their other rounds: not a failure
    singleObserverRounds = []
    for case in cases:
        for roundName, files in ([] if case.problem else case.rounds.items()):
            if len(files) != 1:
                continue
            (observer,) = files
            if any(observer in other for name, other in case.rounds.items() if name != roundName):
                singleObserverRounds.append({"case": case.name, "round": roundName, "observer": observer})
            else:  # nothing to compute at all: said as before
                failures.append(_failure(case.name, roundName, InputError(
                    f"round {roundName!r} has 1 observer file; at least two are needed (or the same reader in "
                    "another round, for an intra-observer comparison)", case.path)))
    outcomes = []
    progress(0.0, f"{len(tasks)} case round(s) to analyse")
    if jobs > 1 and len(tasks) > 1 and not _picklable((analyzer, pictureCallback)):
        logger.warning("study: the analyzer or picture callback cannot be sent to worker processes; running in "
                       "one process")
        jobs = 1
    if jobs > 1 and len(tasks) > 1:
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context,
                                                    initializer=_workerIgnoresInterrupts) as pool:
            futures = {pool.submit(_unitWorker, task): task for task in tasks}
            try:
                for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
                    task = futures[future]
                    try:
                        outcomes.append((task, future.result()))
                    except Exception as error:  # noqa: BLE001 - e.g. a worker that died
                        outcomes.append((task, {"failure": _failure(task[0].name, task[1], error)}))
                    progress(done / len(tasks), f"{task[0].name} / {task[1]}")
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    else:
        for done, task in enumerate(tasks, start=1):
            progress((done - 1) / max(len(tasks), 1), f"{task[0].name} / {task[1]}")
            outcomes.append((task, _unitWorker(task)))
            progress(done / len(tasks), f"{task[0].name} / {task[1]}")
    progress(1.0, f"{len(tasks)} case round(s) done")
    order = {(task[0].name, task[1]): index for index, task in enumerate(tasks)}
    outcomes.sort(key=lambda item: order[(item[0][0].name, item[0][1])])
    results, pictures = [], {}
    for _task, outcome in outcomes:
        if "failure" in outcome:
            failures.append(outcome["failure"])
            continue
        result = outcome["result"]
        if outcome.get("picture"):
            pictures[(result["case"], result["round"])] = bytes(outcome["picture"])
            result["picture"] = _pictureName(result["case"], result["round"], {r["picture"] for r in results})
        results.append(result)
    for failure in failures:
        where = failure["case"] + (f" / {failure['round']}" if failure.get("round") else "")
        logger.warning("study: %s failed and was skipped: %s", where, failure["error"])
    rows = [row for result in results for row in longRowsForUnit(result)]
    intra = intraObserverComparisons(cases, options, analyzer)
    rows += [row for entry in intra for row in _intraRows(entry)]
    hdLabel = options.hdLabel
    observersInfo = {}
    for case in cases:
        if case.observersInfoPath:
            try:
                observersInfo[case.name] = json.loads(Path(case.observersInfoPath).read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                failures.append({"case": case.name, "round": None, "type": type(error).__name__,
                                 "error": f"observers.json could not be read: {error}"})
    return StudyResult(
        studyDir=str(Path(studyDir).absolute()), options=options, cases=cases, results=results, failures=failures,
        rows=rows, summaryByCase=summarize(rows, ("case", "round", "kind", "metric")),
        summaryByRound=summarize(rows, ("round", "kind", "metric")),
        roundsComparison=compareRounds(results, hdLabel), observersInfo=observersInfo, pictures=pictures,
        seconds=time.perf_counter() - started, intraObserver=intra, singleObserverRounds=singleObserverRounds,
        volumeAgreement=volumeAgreement(rows))


def _picklable(value) -> bool:
    import pickle

    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - e.g. a local function or a lambda
        return False
    return True


def _pictureName(case: str, roundName: str, taken=()) -> str:
    """A file name for a (case, round) picture, not one of ``taken`` ("case a" and "case_a" both read case_a)."""
    safe = re.sub(r"[^0-9A-Za-z._-]+", "_", f"{case}_{roundName}")
    name, n = f"pictures/{safe}.png", 1
    while name in taken:
        n += 1
        name = f"pictures/{safe}-{n}.png"
    return name


# ---- outputs -------------------------------------------------------------------------------------------------
def _csvText(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """CSV with undefined numbers written as NA (read as missing by R and pandas)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                cells.append("NA" if column in ("value", *SUMMARY_STATISTICS, "roundAValue", "roundBValue",
                                                "change", "wilcoxonP") or column.startswith("icc") else "")
            elif isinstance(value, float):
                cells.append(repr(float(value)))  # numpy 2's repr of its floats is "np.float64(...)"
            else:
                cells.append(str(value))
        writer.writerow(cells)
    return buffer.getvalue()


def _metricLabel(metric: str, hdLabel: str) -> str:
    return {"dice": "Dice", "hdPercentileMm": f"{hdLabel} (mm)", "surfaceDice": "surface Dice",
            "jaccard": "Jaccard", "hausdorffMm": "HD max (mm)", "msdMm": "MSD (mm)",
            "centroidShiftMm": "centroid shift (mm)", "volumeCc": "volume (cc)",
            "meanDiceToOthers": "mean Dice to the others", "consensus.sensitivity": "sensitivity vs consensus",
            "consensus.specificity": "specificity vs consensus", "consensus.stapleSensitivity": "STAPLE sensitivity",
            "consensus.stapleSpecificity": "STAPLE specificity", "consensus.dice": "Dice vs consensus",
            "consensus.hdPercentileMm": f"{hdLabel} vs consensus (mm)",
            "consensus.surfaceDice": "surface Dice vs consensus", "marks.honouredFraction": "marks honoured (fraction)",
            "marks.nHonoured": "marks honoured", "marks.nMarks": "marks", "marks.worstMissMm": "worst mark miss (mm)",
            "marks.nClearMisses": "marks clearly missed", "marks.flagged": "flagged (clear miss)",
            "marks.nOverContoured": "marks over-contoured",
            "marks.worstOverContourMm": "worst over-contour beyond a mark (mm)",
            }.get(metric, metric)


# Per-observer columns of the report's case tables (every metric is in long.csv).
_REPORT_OBSERVER_METRICS = ("volumeCc", "meanDiceToOthers", "consensus.sensitivity", "consensus.specificity",
                            "consensus.stapleSensitivity", "consensus.stapleSpecificity", "consensus.dice",
                            "consensus.hdPercentileMm", "consensus.surfaceDice", "marks.honouredFraction",
                            "marks.nHonoured", "marks.nMarks", "marks.worstMissMm", "marks.nClearMisses",
                            "marks.flagged", "marks.nOverContoured", "marks.worstOverContourMm")


def _limits(low, high) -> str:
    return "" if low is None or high is None else f"{low:.2f} – {high:.2f}"


def buildReport(study: StudyResult):
    """The HTML report of a study (an :class:`~.htmlreport.HtmlReport`)."""
    from .htmlreport import HtmlReport
    from .svgplots import boxPlotSvg, groupedBarPlotSvg, pairedPlotSvg

    options = study.options
    hdLabel = options.hdLabel
    report = HtmlReport("Delineation study report")
    rounds = study.roundsComparison["rounds"]
    observers = sorted({o for r in study.results for o in r["observers"]}, key=naturalKey)
    report.paragraph(f"Study folder: {study.studyDir}. {len(study.cases)} case(s), {len(study.results)} analysed "
                     f"case round(s), {len(study.failures)} failure(s). Rounds: {', '.join(rounds) or 'none'}. "
                     f"Observers: {', '.join(observers) or 'none'}.")
    report.paragraph(f"Options: structure {options.structure!r}; consensus reference {options.reference}; "
                     f"surface-Dice tolerance {options.toleranceMm:g} mm; {hdLabel} = {options.hdPercentile:g}th "
                     f"percentile Hausdorff distance, convention {options.hdConvention}; mean surface distance "
                     f"{options.msdConvention}; surface elements: {_SURFACE_WORDS[options.surface]}. "
                     f"Created by reirradiation "
                     f"{__version__}; metrics as defined in DelineationReviewLib.core.metrics.", "muted")
    if study.failures:
        report.heading("Failures (skipped)")
        report.bulletList([f"{f['case']}" + (f" / {f['round']}" if f.get("round") else "") + f": {f['error']}"
                           for f in study.failures], "warning")

    report.heading("Pairwise agreement per round")
    pairRows = [row for row in study.rows if row["kind"] == "pair"]
    for metric, yRange in (("dice", (0.0, 1.0)), ("hdPercentileMm", (None, None)), ("surfaceDice", (0.0, 1.0))):
        groups = [(r, [row["value"] for row in pairRows if row["round"] == r and row["metric"] == metric])
                  for r in rounds]
        report.svg(boxPlotSvg(groups, title=f"Pairwise {_metricLabel(metric, hdLabel)} per round",
                              yLabel=_metricLabel(metric, hdLabel), yMin=yRange[0], yMax=yRange[1]),
                   caption="Every observer pair of every case; box = quartiles, line = median, whiskers = 1.5 IQR.")
    units = [(r["case"], r["round"]) for r in study.results]
    if len(units) > 1:
        groups = [(f"{case}" if len(rounds) == 1 else f"{case} {roundName}",
                   [row["value"] for row in pairRows if row["case"] == case and row["round"] == roundName
                    and row["metric"] == "dice"]) for case, roundName in units]
        report.svg(boxPlotSvg(groups, title="Pairwise Dice per case", yLabel="Dice", yMin=0.0, yMax=1.0,
                              groupWidthPx=46, colourIndices=[rounds.index(r) for _, r in units]),
                   caption="Each point is one observer pair" + ("; one colour per round." if len(rounds) > 1 else "."))

    report.heading("Observer volumes")
    volumes = {(row["case"], row["round"], row["observerA"]): row["value"] for row in study.rows
               if row["kind"] == "observer" and row["metric"] == "volumeCc"}
    categories = [case if len(rounds) == 1 else f"{case} {roundName}" for case, roundName in units]
    series = [(observer, [volumes.get((case, roundName, observer)) for case, roundName in units])
              for observer in observers]
    report.svg(groupedBarPlotSvg(categories, series, title="Volume per observer", yLabel="volume (cc)"),
               caption="One bar per observer; a missing bar means the observer has no file in that case round.")
    if study.volumeAgreement:
        report.table(["round", "cases", "observers", "ICC(A,1) agreement", "95 % limits", "ICC(C,1) consistency",
                      "95 % limits", "ICC(1,1) one-way", "95 % limits", "left out", "note"],
                     [[e["round"], e["cases"], e["observers"], e.get("iccAgreement"),
                       _limits(e.get("iccAgreementLow"), e.get("iccAgreementHigh")), e.get("iccConsistency"),
                       _limits(e.get("iccConsistencyLow"), e.get("iccConsistencyHigh")), e.get("iccOneWay"),
                       _limits(e.get("iccOneWayLow"), e.get("iccOneWayHigh")),
                       "; ".join([f"case {c}" for c in e["casesLeftOut"]]
                                 + [f"observer {o}" for o in e["observersLeftOut"]]), e["note"]]
                      for e in study.volumeAgreement],
                     caption="Agreement of the observers' volumes over the cases: intraclass correlation, single "
                             "observer (McGraw & Wong 1996; ICC(A,1) = Shrout & Fleiss ICC(2,1), ICC(C,1) = "
                             "ICC(3,1): the two-way model, observers matched by name across cases, the same people "
                             "in every case; ICC(1,1): one-way, for readers who differ from case to case); "
                             "volume_agreement.csv")

    observerSummary = summarize([row for row in study.rows if row["kind"] == "observer"
                                 and row["metric"] in ("volumeCc", "meanDiceToOthers", "consensus.sensitivity")],
                                ("round", "observerA", "metric"))
    if observerSummary:
        byObserver: dict = {}
        for entry in observerSummary:
            byObserver.setdefault((entry["round"], entry["observerA"]), {})[entry["metric"]] = entry
        rows = [[roundName, observer, values.get("volumeCc", {}).get("n"),
                 values.get("volumeCc", {}).get("median"), values.get("meanDiceToOthers", {}).get("median"),
                 values.get("meanDiceToOthers", {}).get("min"), values.get("consensus.sensitivity", {}).get("median")]
                for (roundName, observer), values in byObserver.items()]
        report.table(["round", "observer", "cases", "median volume (cc)", "median of mean Dice to the others",
                      "lowest mean Dice to the others", "median sensitivity vs consensus"], rows,
                     caption="Observers across cases (an outlying observer has a low mean Dice to the others)")

    report.heading("Comparison of rounds")
    comparisonInfo = study.roundsComparison
    if not comparisonInfo["comparisons"]:
        report.paragraph(comparisonInfo["note"] or "no rounds to compare", "note")
    for comparison in comparisonInfo["comparisons"]:
        roundA, roundB = comparison["roundA"], comparison["roundB"]
        report.heading(f"{roundA} → {roundB}", 3)
        report.paragraph(comparison["conclusion"], "note")
        rows = []
        for entry in comparison["cases"]:
            rows.append([entry["case"]] + [entry[m][key] for m, _, _ in COMPARED_METRICS
                                           for key in ("roundA", "roundB", "change")])
        headers = ["case"] + [f"{_metricLabel(m, hdLabel)} {label}" for m, _, _ in COMPARED_METRICS
                              for label in (roundA, roundB, "change")]
        report.table(headers, rows, caption="Median over observer pairs, per case")
        testRows = [[_metricLabel(m, hdLabel), t["n"], t["medianChange"], t["casesImproved"], t["casesWorsened"],
                     "n/a" if t["pValue"] is None else f"{t['pValue']:.4g}", t.get("note", "")]
                    for m, t in ((m, comparison["tests"][m]) for m, _, _ in COMPARED_METRICS)]
        report.table(["metric", "paired cases", "median change", "cases more concordant", "cases less concordant",
                      "Wilcoxon p (two-sided)", "note"], testRows, caption="Paired test over cases")
        subjects = [(entry["case"], [entry["dice"]["roundA"], entry["dice"]["roundB"]])
                    for entry in comparison["cases"]]
        report.svg(pairedPlotSvg([roundA, roundB], subjects, title=f"Median pairwise Dice, {roundA} vs {roundB}",
                                 yLabel="median pairwise Dice", yMin=0.0, yMax=1.0),
                   caption="One line per case.")

    if study.intraObserver:
        report.heading("Intra-observer agreement")
        intraMetrics = ["dice", "jaccard", "hdPercentileMm", "msdMm", "surfaceDice", "centroidShiftMm"]
        report.table(["case", "observer", "rounds"] + [_metricLabel(m, hdLabel) for m in intraMetrics] + ["note"],
                     [[e["case"], e["observer"], f"{e['roundA']} → {e['roundB']}"]
                      + [(e.get("metrics") or {}).get(m) for m in intraMetrics] + [e.get("error", "")]
                      for e in study.intraObserver],
                     caption="Each observer's delineation against their own in the case's next round (the "
                             "interobserver pair definitions); rows of kind 'intra' in long.csv")

    report.heading("Summary per round")
    keyMetrics = {"dice", "jaccard", "hdPercentileMm", "hausdorffMm", "msdMm", "surfaceDice", "centroidShiftMm",
                  "volumeCc", "cigen", "volumeCv"}
    rows = [[s["round"], s["kind"], _metricLabel(s["metric"], hdLabel), s["n"], s["median"], s["q1"], s["q3"],
             s["iqr"]] for s in study.summaryByRound if s["metric"] in keyMetrics]
    report.table(["round", "kind", "metric", "n", "median", "q1", "q3", "IQR"], rows)

    report.heading("Cases")
    for result in study.results:
        case, roundName = result["case"], result["round"]
        report.heading(f"{case} — {roundName}", 3)
        caseRows = [row for row in study.rows if row["case"] == case and row["round"] == roundName]
        pairs = {}
        for row in caseRows:
            if row["kind"] == "pair":
                pairs.setdefault((row["observerA"], row["observerB"]), {})[row["metric"]] = row["value"]
        pairMetrics = ["dice", "jaccard", "hdPercentileMm", "hausdorffMm", "msdMm", "surfaceDice", "centroidShiftMm"]
        report.table(["observer A", "observer B"] + [_metricLabel(m, hdLabel) for m in pairMetrics],
                     [[a, b] + [values.get(m) for m in pairMetrics] for (a, b), values in pairs.items()],
                     caption="Observer pairs")
        perObserver = {}
        for row in caseRows:
            if row["kind"] == "observer":
                perObserver.setdefault(row["observerA"], {})[row["metric"]] = row["value"]
        present = {m for values in perObserver.values() for m in values}
        observerMetrics = [m for m in _REPORT_OBSERVER_METRICS if m in present]
        report.table(["observer"] + [_metricLabel(m, hdLabel) for m in observerMetrics],
                     [[name] + [values.get(m) for m in observerMetrics] for name, values in perObserver.items()],
                     caption="Observers")
        caseMetrics = [(row["metric"], row["value"]) for row in caseRows if row["kind"] == "case"]
        if caseMetrics:
            report.table(["metric", "value"], [[m, v] for m, v in caseMetrics], caption="Case")
        if result.get("notes"):
            report.bulletList(result["notes"], "note")
        picture = study.pictures.get((case, roundName))
        if picture:
            report.png(picture, alt=f"agreement map of {case} {roundName}",
                       caption="Axial slice where the observers' union is largest: each observer's outline, over "
                               "the agreement map (number of observers including each voxel; over the case image "
                               "in colour from blue = one observer to red = all, without an image in grey levels).")
    return report


_SURFACE_WORDS = {"voxel": "surface voxels, distances between voxel centres",
                  "surfel": "surfels (Nikolov et al., area-weighted, on the voxel corners)"}
# metrics whose value depends on the surface convention (the long table names them with these leaves)
_SURFACE_METRICS = ("hausdorffmm", "hausdorffdirectedmm", "hdpercentilemm", "hdpercentiledirectedmm", "msdmm",
                    "msddirectedmm", "surfacedice", "surfaceareamm2")


def _baseMetric(metric: str) -> str:
    """The pair metric a long-table name reports (lower case): ``consensus.msdMm`` -> msdmm, ``medianPairSurfaceDice``
    and ``median pair surfaceDice`` -> surfacedice, ``hdPercentileDirectedMm.AtoB`` -> hdpercentiledirectedmm (an
    independent check: consensus and median rows did not name the conventions their values depend on)."""
    name = metric.removeprefix("consensus.")
    for prefix in ("medianPair", "median pair "):  # the case table's and the rounds comparison's names
        name = name.removeprefix(prefix)
    return name.split(".")[0].casefold()


def metricSetting(metric: str, options: StudyOptions) -> str:
    """The option the value of ``metric`` (a long-table metric name) depends on, as text; "" for none."""
    marks = metric.startswith(("marks.", "mark[")) or ".marks." in metric
    if marks:
        leaf = metric.rsplit("].", 1)[-1] if metric.startswith("mark[") else metric.rsplit(".", 1)[-1]
        return f"marks tolerance {options.marksToleranceMm:g} mm" if leaf in _MARKS_TOLERANCE_METRICS else ""
    base = _baseMetric(metric)
    suffix = ", surfels" if options.surface == "surfel" and base in _SURFACE_METRICS else ""
    if base.startswith("hdpercentile"):
        directed = "directed" in base
        return (f"percentile {options.hdPercentile:g}"
                + ("" if directed else f", {options.hdConvention}" + (" (HD)" if options.hdPercentile == 100 else ""))
                + suffix)
    if base == "surfacedice":
        return f"tolerance {options.toleranceMm:g} mm" + suffix
    if base == "msdmm":
        return options.msdConvention + suffix
    return suffix.removeprefix(", ")


def coarseToleranceNotes(results: Sequence[dict], options: StudyOptions, intra: Sequence[dict] = ()
                         ) -> dict[str, str]:
    """Per case whose largest voxel spacing exceeds the surface-Dice tolerance, what that means, for the ``setting``
    of its surface-Dice rows: a review found it only in the notes, not in the row a statistician loads (the demo: 2 mm
    on 5 mm slices, 0.285 here where surfel libraries read 0.494; surfels lie on voxel corners, a slice apart too).
    The grids of the interobserver ``results`` and of the intra-observer comparisons (``intra``) are read."""
    largest: dict[str, float] = {}
    for case, spacingMm in [(r["case"], (r.get("geometry") or {}).get("spacingMm")) for r in results] + [
            (e["case"], e.get("spacingMm")) for e in intra]:
        spacing = max((float(v) for v in spacingMm or ()), default=0.0)
        largest[case] = max(largest.get(case, 0.0), spacing)
    return {case: f"below this case's {spacing:g} mm voxel spacing: a surface one voxel off misses"
            for case, spacing in largest.items() if options.toleranceMm < spacing}


def _withSettings(rows: Sequence[dict], options: StudyOptions, caseNotes: dict[str, str] | None = None) -> list[dict]:
    out = []
    for row in rows:
        setting = metricSetting(str(row["metric"]), options)
        note = (caseNotes or {}).get(str(row.get("case", "")))
        if note and _baseMetric(str(row["metric"])) == "surfacedice":
            setting += f" ({note})"
        out.append({**row, "setting": setting})
    return out


def writeStudyOutputs(study: StudyResult, outputDir) -> Path:
    """Write long.csv, summaries, rounds comparison, study.json, report.html (and pictures) atomically."""
    from ReirradiationDoseLib.core.atomic import atomicOutputDir

    outputDir = Path(outputDir)
    comparisonRows = [row for c in study.roundsComparison["comparisons"] for row in _comparisonRows(c)]
    with atomicOutputDir(outputDir) as folder:
        folder = Path(folder)
        options = study.options
        coarse = coarseToleranceNotes(study.results, options, study.intraObserver)
        (folder / "long.csv").write_text(_csvText(_withSettings(study.rows, options, coarse), LONG_COLUMNS),
                                         encoding="utf-8")
        (folder / "summary_by_case.csv").write_text(
            _csvText(_withSettings(study.summaryByCase, options, coarse),
                     ("case", "round", "kind", "metric", *SUMMARY_STATISTICS, "setting")), encoding="utf-8")
        (folder / "summary_by_round.csv").write_text(
            _csvText(_withSettings(study.summaryByRound, options),
                     ("round", "kind", "metric", *SUMMARY_STATISTICS, "setting")), encoding="utf-8")
        (folder / "rounds_comparison.csv").write_text(_csvText(_withSettings(comparisonRows, options, coarse),
                                                               COMPARISON_COLUMNS), encoding="utf-8")
        agreement = [{k: ("; ".join(v) if isinstance(v, list) else v) for k, v in row.items()}
                     for row in study.volumeAgreement]
        (folder / "volume_agreement.csv").write_text(_csvText(agreement, VOLUME_AGREEMENT_COLUMNS), encoding="utf-8")
        # with the options its distances depend on (an independent check: only the HD label was recorded)
        comparison = {**study.roundsComparison, "options": asdict(study.options)}
        (folder / "rounds_comparison.json").write_text(
            json.dumps(_toJsonable(comparison), indent=1, allow_nan=False), encoding="utf-8")
        if study.pictures:
            (folder / "pictures").mkdir()
            names = {(r["case"], r["round"]): r.get("picture") for r in study.results}
            for (case, roundName), png in study.pictures.items():
                (folder / (names.get((case, roundName)) or _pictureName(case, roundName))).write_bytes(png)
        (folder / "study.json").write_text(json.dumps(study.toDict(), indent=1, allow_nan=False), encoding="utf-8")
        buildReport(study).write(folder / "report.html")
    return outputDir


def printFailures(study: StudyResult, stream=None) -> None:
    """One line per failure on ``stream`` (stderr by default)."""
    stream = stream or sys.stderr
    for failure in study.failures:
        where = failure["case"] + (f" / {failure['round']}" if failure.get("round") else "")
        print(f"warning: {where} skipped: {failure['error']}", file=stream)

