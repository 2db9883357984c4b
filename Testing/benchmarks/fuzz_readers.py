"""Fuzz the DICOM RT readers and the case-file parser with mutated real files (issue 10).

Seeds: the RTDOSE, RTPLAN and RTSTRUCT files of ../shared/data (pydicom-rt, dicompyler-breast-boost) and of the
built-in demo case (``generateDemoCase``), and the demo case file. Each input is one seed mutated by a seeded
random choice of

- byte-level mutations (bit flips, byte overwrites with boundary values, truncation, insertion, deletion or
  duplication of a chunk), biased towards the header where the attributes live;
- structure-aware mutations of the DICOM dataset (an attribute, possibly inside a sequence, deleted, emptied or
  replaced by an odd value: negative, zero, NaN, huge, text, wrong multiplicity) or of the case-file JSON (a key
  deleted, renamed or given a value of another type).

Every input goes through the reader a user reaches: ``readRtDose`` (+ ``requirePlanDose``), ``readRtPlan`` (+ its
fractions and prescription), ``readRtStruct`` + ``rasterizeAll`` on a small grid, ``parseCaseFile``. Outcomes:

- ``ok``: read; then invariants are checked (dose finite and ≥ 0, positive spacing, positive fractions, boolean masks
  of the grid's shape) — a broken invariant is a bug (a wrong value that looks right);
- ``refused``: :class:`InputError` (the documented error type) whose message names the file;
- ``BUG``: any other exception, an InputError not naming the file, or an input taking longer than
  ``--timeout-seconds``; the input and its traceback are saved to ``--bugs-dir``.

Usage::

    .venv/bin/python Testing/benchmarks/fuzz_readers.py --max-inputs 10000 --max-seconds 1800 --seed 1

Exit status 1 when a bug was found. ``fuzzReaders(...)`` is also called by the unit smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import random
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Testing"))
from reirradiation_testing import SHARED_DATA  # noqa: E402

from ReirradiationDoseLib.core.casefile import parseCaseFile  # noqa: E402
from ReirradiationDoseLib.core.errors import InputError  # noqa: E402
from ReirradiationDoseLib.core.geometry import ImageGeometry  # noqa: E402
from ReirradiationDoseLib.core.rtdose import readRtDose, requirePlanDose  # noqa: E402
from ReirradiationDoseLib.core.rtplan import readRtPlan  # noqa: E402
from ReirradiationDoseLib.core.rtstruct import rasterizeAll, readRtStruct  # noqa: E402

KINDS = ("RTDOSE", "RTPLAN", "RTSTRUCT", "CASE")

SHARED_SEEDS = {
    "RTDOSE": [("dicompyler-breast-boost", "rtdose.dcm"), ("pydicom-rt", "rtdose.dcm"),
               ("pydicom-rt", "rtdose_1frame.dcm"), ("pydicom-rt", "rtdose_rle.dcm"),
               ("pydicom-rt", "rtdose_expb.dcm")],
    "RTPLAN": [("dicompyler-breast-boost", "rtplan.dcm"), ("pydicom-rt", "rtplan.dcm")],
    "RTSTRUCT": [("dicompyler-breast-boost", "rtss.dcm"), ("pydicom-rt", "rtstruct.dcm")],
}

_ODD_NUMBERS = ["0", "-1", "-0.5", "NaN", "inf", "-inf", "1e308", "1e-308", "65535", "4294967295", "-2147483648",
                "3.5", ""]
_ODD_TEXT = ["", " ", "x" * 300, "\\", "\\\\\\", "GY", "CGY", "RELATIVE", "FRACTION", "BEAM", "PLAN", "ERROR",
             "RTDOSE", "RTSTRUCT", "CT", "1.2.3", "Ä\x00\xff", "19000101", "CLOSED_PLANAR", "POINT", "OPEN_PLANAR"]


class FuzzTimeout(BaseException):
    """An input took longer than the per-input time limit (a BaseException: no reader's ``except Exception``
    swallows it)."""


@dataclass
class Seed:
    kind: str
    path: Path
    data: bytes
    dataset: Dataset | None = None
    json: object = None
    grid: ImageGeometry | None = None
    heavy: bool = False  # a large file (slow to mutate and read): used for a small share of the inputs
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or f"{self.path.parent.name}/{self.path.name}"


# sequences cut to their first few items in the "trimmed" copies of large seeds (kept in their real structure)
_TRIM = {"ContourSequence": 3, "ControlPointSequence": 2, "ContourImageSequence": 3, "ROIContourSequence": 6,
         "StructureSetROISequence": 6, "RTROIObservationsSequence": 6, "BeamSequence": 3}
_HEAVY_BYTES = 100_000
_HEAVY_SHARE = 0.03


@dataclass
class FuzzReport:
    counts: dict = field(default_factory=lambda: {k: {"ok": 0, "refused": 0, "bug": 0} for k in KINDS})
    bugs: list = field(default_factory=list)
    seconds: float = 0.0
    refusalMessages: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def numberOfBugs(self) -> int:
        return sum(c["bug"] for c in self.counts.values())


# ---- seeds ------------------------------------------------------------------------------------------------------

def _trimmed(ds: Dataset) -> Dataset:
    """A copy with long sequences cut to their first items (:data:`_TRIM`): the same real structure, read fast."""
    small = copy.deepcopy(ds)
    for element in list(small.iterall()):
        if element.VR == "SQ" and element.keyword in _TRIM and len(element.value) > _TRIM[element.keyword]:
            element.value = Sequence(list(element.value)[:_TRIM[element.keyword]])
    return small


def _toBytes(ds: Dataset) -> bytes:
    with tempfile.SpooledTemporaryFile() as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(handle, enforce_file_format=False)
        handle.seek(0)
        return handle.read()


def _structureGrid(ds: Dataset | None) -> ImageGeometry:
    """A small grid (≤ 24 x 24 x 12 voxels) over the contours of an RTSTRUCT: rasterising stays fast."""
    points = []
    ds = ds if ds is not None else Dataset()
    for rc in ds.get("ROIContourSequence", []):
        for c in rc.get("ContourSequence", []):
            data = c.get("ContourData")
            if data is not None and len(data) >= 3:
                points.append(np.asarray([float(v) for v in data]).reshape(-1, 3))
    if not points:
        return ImageGeometry((16, 16, 8), (4.0, 4.0, 4.0), (-32.0, -32.0, -16.0))
    allPoints = np.concatenate(points)
    low, high = allPoints.min(axis=0), allPoints.max(axis=0)
    zs = np.unique(np.round(allPoints[:, 2], 2))
    dz = float(np.median(np.diff(zs))) if len(zs) > 1 else 3.0
    nk = int(min(12, max(1, len(zs))))
    step = max(1, len(zs) // nk)
    spacingXy = max((high[:2] - low[:2]).max() / 23.0, 0.5)
    return ImageGeometry((24, 24, nk), (spacingXy, spacingXy, dz * step), (low[0], low[1], zs[0]))


def _absolutePaths(case: dict, base: Path) -> dict:
    """The case with every relative path made absolute, so that mutated copies can live in any folder."""
    def fix(value):
        if isinstance(value, str) and value and (base / value).exists():
            return str((base / value).resolve())
        return value

    out = copy.deepcopy(case)
    for key in ("referenceImage", "structures", "constraints"):
        if key in out:
            out[key] = fix(out[key])
    if isinstance(out.get("mri"), dict):
        out["mri"] = {k: fix(v) for k, v in out["mri"].items()}
    out["courses"] = [{k: fix(v) for k, v in c.items()} for c in out.get("courses", [])]
    return out


def loadSeeds(workDir: Path, useDemo: bool = True, demoDir: Path | None = None) -> dict[str, list[Seed]]:
    seeds: dict[str, list[Seed]] = {k: [] for k in KINDS}
    for kind, files in SHARED_SEEDS.items():
        for folder, name in files:
            path = SHARED_DATA / folder / name
            if path.is_file():
                seeds[kind].append(Seed(kind, path, path.read_bytes()))
    if useDemo:
        from ReirradiationDoseLib.core.democase.generate import generateDemoCase

        demo = Path(demoDir) if demoDir is not None else workDir / "demo"
        if not (demo / "case.json").is_file():
            generateDemoCase(demo, size="small")
        for kind, name in (("RTDOSE", "RTDOSE.dcm"), ("RTPLAN", "RTPLAN.dcm"), ("RTSTRUCT", "RTSTRUCT.dcm")):
            for course in ("current", "prior"):
                path = demo / course / name
                seeds[kind].append(Seed(kind, path, path.read_bytes()))
        casePath = demo / "case.json"
        original = _absolutePaths(json.loads(casePath.read_text()), demo)
        seeds["CASE"].append(Seed("CASE", casePath, json.dumps(original, indent=1).encode(), json=original))
        variant = copy.deepcopy(original)
        variant["courses"][0]["registration"] = str(demo / "truth" / "prior_registration.nrrd")
        variant["mri"]["registration"] = str(demo / "truth" / "mri_registration.tfm")
        variant["plannedCourse"] = {"fractions": 10}
        variant["conservativeRadiusMm"] = 3
        text = json.dumps(variant, indent=1)
        seeds["CASE"].append(Seed("CASE", casePath, text.encode(), json=variant, label="demo/case.json (variant)"))
    for kind in ("RTDOSE", "RTPLAN", "RTSTRUCT"):
        trimmed = []
        for seed in seeds[kind]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    seed.dataset = pydicom.dcmread(seed.path, force=True)
                except Exception:  # a broken seed is only mutated at byte level
                    seed.dataset = None
                if kind == "RTSTRUCT":
                    seed.grid = _structureGrid(seed.dataset)
                if len(seed.data) > _HEAVY_BYTES and seed.dataset is not None and kind != "RTDOSE":
                    seed.heavy = True
                    small = _trimmed(seed.dataset)
                    data = _toBytes(small)
                    trimmed.append(Seed(kind, seed.path, data, pydicom.dcmread(io.BytesIO(data), force=True),
                                        grid=_structureGrid(small) if kind == "RTSTRUCT" else None,
                                        label=f"{seed.name} (trimmed)"))
        seeds[kind] += trimmed
    if not any(seeds.values()):
        raise SystemExit("no seed files (is ../shared/data present? was --no-demo given?)")
    return seeds


# ---- mutations ----------------------------------------------------------------------------------------------------

def mutateBytes(data: bytes, rng: random.Random, headerBytes: int = 4096) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        if not buf:
            break
        limit = min(len(buf), headerBytes) if rng.random() < 0.75 else len(buf)
        pos = rng.randrange(limit)
        op = rng.choices(range(7), weights=(3, 3, 0.4, 1, 1, 1, 2))[0]
        if op == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x20, 0x5C, 0x2D))
        elif op == 2:
            del buf[rng.randrange(len(buf)):]  # truncate
        elif op == 3:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 4:
            del buf[pos:pos + rng.randrange(1, 65)]
        elif op == 5:
            chunk = buf[pos:pos + rng.randrange(1, 65)]
            buf[pos:pos] = chunk
        else:  # a 4-byte length or value overwritten with a boundary integer
            value = rng.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, len(buf), len(buf) * 2))
            buf[pos:pos + 4] = int(value).to_bytes(4, "little")
    return bytes(buf)


def _elements(ds: Dataset, depth: int = 0):
    """Every data element, recursively into sequences (pixel data excluded), with its parent dataset."""
    for element in ds:
        if element.tag == 0x7FE00010:
            continue
        yield ds, element
        if element.VR == "SQ" and depth < 4:
            for item in element.value:
                yield from _elements(item, depth + 1)


def _oddValue(element, rng: random.Random):
    vr = element.VR
    if vr in ("DS", "IS", "FL", "FD", "US", "UL", "SS", "SL"):
        if vr in ("DS", "IS"):
            choice = rng.choice(_ODD_NUMBERS)
            if rng.random() < 0.3:
                return [choice] * rng.choice((0, 1, 2, 5))
            return choice
        return rng.choice((0, 1, 65535, 2**31 - 1)) if vr in ("US", "UL") else rng.choice((-1, 0, 2**15 - 1))
    if vr == "SQ":
        return Sequence([]) if rng.random() < 0.5 else Sequence([Dataset()])
    if vr in ("OB", "OW", "OF", "UN"):
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 16)))
    return rng.choice(_ODD_TEXT)


def mutateDataset(seed: Seed, rng: random.Random) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _mutateDataset(seed, rng)


def _mutateDataset(seed: Seed, rng: random.Random) -> bytes:
    ds = copy.deepcopy(seed.dataset)
    for _ in range(rng.choice((1, 1, 2, 4))):
        elements = list(_elements(ds))
        if not elements:
            break
        parent, element = rng.choice(elements)
        op = rng.randrange(10)
        try:
            if op < 3:
                del parent[element.tag]
            elif op < 4 and element.VR == "SQ" and len(element.value):
                if rng.random() < 0.5:
                    element.value.append(copy.deepcopy(rng.choice(list(element.value))))
                else:
                    del element.value[rng.randrange(len(element.value))]
            else:
                parent[element.tag].value = _oddValue(element, rng)
        except Exception:  # pydicom refuses some values outright; then delete the element instead
            with contextlib.suppress(Exception):
                del parent[element.tag]
    try:
        return _toBytes(ds)
    except Exception:  # a value pydicom cannot write: fall back to a byte-level mutation
        return mutateBytes(seed.data, rng)


_JSON_VALUES = [None, True, False, 0, -1, 1.5, -3.0, 1e308, float("nan"), "", "none", "rigid", "deformable",
                "../../etc/passwd", "x.tfm", "2026-02-30", "2024-05-24", [], {}, [1, "a"], {"model": "bogus"},
                {"model": "constant", "fraction": 2}, "general", "nonexistent-set", "\u0000"]


def _jsonPaths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _jsonPaths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _jsonPaths(item, (*prefix, index))


def mutateJson(seed: Seed, rng: random.Random) -> bytes:
    if rng.random() < 0.25:
        return mutateBytes(seed.data, rng, headerBytes=len(seed.data))
    data = copy.deepcopy(seed.json)
    for _ in range(rng.choice((1, 1, 2, 3))):
        paths = [p for p in _jsonPaths(data) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        op = rng.randrange(6)
        if op == 0:
            del parent[last]
        elif op == 1 and isinstance(parent, dict):
            parent[str(last) + rng.choice(("_", "s", "X"))] = parent.pop(last)
        elif op == 2 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        else:
            parent[last] = copy.deepcopy(rng.choice(_JSON_VALUES))
    return json.dumps(data, allow_nan=True).encode("utf-8")


# ---- running one input -------------------------------------------------------------------------------------------

def _checkDose(dose) -> None:
    values = np.asarray(dose.doseGy)
    assert values.shape == dose.geometry.shape, f"dose array {values.shape} vs grid {dose.geometry.shape}"
    assert np.all(np.isfinite(values)), "a dose read without error holds NaN/inf"
    if dose.units != "RELATIVE" and dose.doseType != "ERROR":
        assert values.size == 0 or float(values.min()) >= 0, "a dose read without error holds negative values"
    assert min(dose.geometry.spacingMm) > 0 and np.all(np.isfinite(dose.geometry.originMm))


def runRtDose(path: Path, seed: Seed) -> None:
    dose = readRtDose(path, allowRelative=True)
    _checkDose(dose)
    if dose.units != "RELATIVE":
        requirePlanDose(dose)


def runRtPlan(path: Path, seed: Seed) -> None:
    plan = readRtPlan(path)
    try:
        fractions = plan.numberOfFractions
    except InputError as error:
        if str(path) not in str(error):
            raise AssertionError(f"RTPLAN fractions refusal does not name the file: {error}") from None
        fractions = None
    assert fractions is None or (isinstance(fractions, int) and fractions > 0), f"fractions {fractions!r}"
    prescription = plan.prescriptionGy
    assert prescription is None or np.isfinite(prescription), f"prescription {prescription!r}"
    _ = plan.dosePerFractionGy


def runRtStruct(path: Path, seed: Seed) -> None:
    structure = readRtStruct(path)
    masks = rasterizeAll(structure, seed.grid)
    for name, mask in masks.items():
        assert mask.dtype == bool and mask.shape == seed.grid.shape, f"mask {name} {mask.dtype} {mask.shape}"


def runCase(path: Path, seed: Seed) -> None:
    case = parseCaseFile(path)
    numbers = [case.defaultAlphaBetaGy, case.conservativeRadiusMm, *case.isodoseLevelsGy,
               *(t.alphaBetaGy for t in case.tissues.values() if t.alphaBetaGy is not None)]
    assert all(np.isfinite(numbers)), f"a case file read without error holds a non-finite number: {numbers}"
    assert all(c.fractions is None or (isinstance(c.fractions, int) and c.fractions > 0) for c in case.courses)
    assert sum(c.isCurrent for c in case.courses) == 1


RUNNERS = {"RTDOSE": runRtDose, "RTPLAN": runRtPlan, "RTSTRUCT": runRtStruct, "CASE": runCase}


def _alarm(signum, frame):
    raise FuzzTimeout("input took longer than the time limit")


def fuzzReaders(maxInputs: int = 10000, maxSeconds: float = 1800.0, seed: int = 1, workDir: Path | None = None,
                bugsDir: Path | None = None, timeoutSeconds: float = 20.0, useDemo: bool = True,
                progressEvery: int = 0, demoDir: Path | None = None) -> FuzzReport:
    """Run the fuzzer; returns the counts per kind and the bugs found (inputs saved in ``bugsDir``)."""
    rng = random.Random(seed)
    report = FuzzReport()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if workDir is None:
            workDir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fuzz-readers-")))
        workDir = Path(workDir)
        workDir.mkdir(parents=True, exist_ok=True)
        seeds = loadSeeds(workDir, useDemo=useDemo, demoDir=demoDir)
        kinds = [k for k in KINDS if seeds[k]]
        inputsDir = workDir / "inputs"
        inputsDir.mkdir(exist_ok=True)
        previous = signal.signal(signal.SIGALRM, _alarm) if hasattr(signal, "SIGALRM") else None
        quiet = logging.getLogger("ReirradiationDoseLib")
        level, quiet.level = quiet.level, logging.CRITICAL
        try:
            n = 0
            while n < maxInputs and time.perf_counter() - started < maxSeconds:
                kind = kinds[n % len(kinds)]
                heavy = [s for s in seeds[kind] if s.heavy]
                light = [s for s in seeds[kind] if not s.heavy]
                base = rng.choice(heavy if heavy and (not light or rng.random() < _HEAVY_SHARE) else light)
                if kind == "CASE":
                    data = mutateJson(base, rng)
                    path = inputsDir / f"case_{n % 2}.json"
                elif base.dataset is not None and not base.heavy and rng.random() < 0.6:
                    data = mutateDataset(base, rng)
                    path = inputsDir / f"input_{n % 2}.dcm"
                else:
                    data = mutateBytes(base.data, rng)
                    path = inputsDir / f"input_{n % 2}.dcm"
                path.write_bytes(data)
                outcome, detail = _runOne(RUNNERS[kind], path, base, timeoutSeconds)
                report.counts[kind][outcome] += 1
                if outcome == "refused":
                    key = (kind, detail)
                    report.refusalMessages[key] = report.refusalMessages.get(key, 0) + 1
                elif outcome == "bug":
                    entry = {"index": n, "kind": kind, "seed": base.name, "error": detail.splitlines()[-1]}
                    if bugsDir is not None:
                        bugsDir.mkdir(parents=True, exist_ok=True)
                        saved = bugsDir / f"bug_{n:06d}_{kind}{'.json' if kind == 'CASE' else '.dcm'}"
                        saved.write_bytes(data)
                        saved.with_suffix(".txt").write_text(f"seed: {base.name} ({base.path})\n\n{detail}")
                        entry["input"] = str(saved)
                    report.bugs.append(entry)
                n += 1
                if progressEvery and n % progressEvery == 0:
                    print(f"  {n} inputs, {report.numberOfBugs} bug(s), {time.perf_counter() - started:.0f} s",
                          flush=True)
        finally:
            quiet.level = level
            if previous is not None:
                signal.signal(signal.SIGALRM, previous)
    report.seconds = time.perf_counter() - started
    return report


def _runOne(runner, path: Path, seed: Seed, timeoutSeconds: float) -> tuple[str, str]:
    useAlarm = hasattr(signal, "setitimer")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if useAlarm:
                signal.setitimer(signal.ITIMER_REAL, timeoutSeconds)
            try:
                runner(path, seed)
            finally:
                if useAlarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
    except InputError as error:
        message = str(error)
        if path.name not in message:
            return "bug", f"InputError without the file name: {message}"
        problem = message.split(": ", 1)[-1]
        return "refused", problem.split("(")[0].strip()[:90]
    except (Exception, FuzzTimeout):
        return "bug", traceback.format_exc()
    return "ok", ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-inputs", type=int, default=10000)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout-seconds", type=float, default=20.0, help="per-input limit (a hang is a bug)")
    parser.add_argument("--bugs-dir", default="fuzz-bugs", help="where failing inputs and tracebacks are saved")
    parser.add_argument("--work-dir", default=None, help="keep the demo case and inputs here (default: a temp dir)")
    parser.add_argument("--no-demo", action="store_true", help="only the ../shared/data seeds (no demo case)")
    args = parser.parse_args(argv)
    report = fuzzReaders(args.max_inputs, args.max_seconds, args.seed,
                         Path(args.work_dir) if args.work_dir else None, Path(args.bugs_dir), args.timeout_seconds,
                         useDemo=not args.no_demo, progressEvery=1000)
    print(f"fuzz_readers: {report.total} mutated inputs in {report.seconds:.0f} s (seed {args.seed})")
    print(f"{'kind':<10}{'ok':>8}{'refused':>10}{'bug':>6}")
    for kind, c in report.counts.items():
        print(f"{kind:<10}{c['ok']:>8}{c['refused']:>10}{c['bug']:>6}")
    print("most frequent refusals (InputError, documented):")
    for (kind, message), count in sorted(report.refusalMessages.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {count:6d}  {kind:<9} {message}")
    if report.bugs:
        print(f"{report.numberOfBugs} BUG(S) (undocumented exception, unnamed file or broken invariant); "
              f"inputs and tracebacks in {args.bugs_dir}:")
        for bug in report.bugs[:30]:
            print(f"  #{bug['index']} {bug['kind']} from {bug['seed']}: {bug['error']}")
        return 1
    print("no undocumented exception")
    return 0


if __name__ == "__main__":
    sys.exit(main())
