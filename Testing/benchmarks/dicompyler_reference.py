"""Reference structure volumes, dose maximum and plan data of the dicompyler breast-boost example, computed by
dicompyler-core 0.5.6 (BSD; an independent implementation) in its own environment.

dicompyler-core 0.5.6 needs pydicom < 3, so this script creates ``.venv-ref`` beside the project (once) with
``dicompyler-core==0.5.6 pydicom==2.4.4`` and re-runs itself there. It writes
``Testing/data/dicompyler_reference.json`` (with the command that produced it), which
``Testing/data/test_dicom_realdata.py`` compares our readers against.

Usage (from the project root)::

    .venv/bin/python Testing/benchmarks/dicompyler_reference.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("REIRRADIATION_SHARED_DATA", ROOT.parent / "shared" / "data")) / "dicompyler-breast-boost"
VENV = ROOT / ".venv-ref"
OUTPUT = ROOT / "Testing" / "data" / "dicompyler_reference.json"
PINS = ["dicompyler-core==0.5.6", "pydicom==2.4.4"]


def ensureVenv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
    return python


def compute() -> dict:
    import dicompylercore
    import pydicom
    from dicompylercore import dicomparser, dvhcalc

    rtss = dicomparser.DicomParser(str(DATA / "rtss.dcm"))
    rtplan = dicomparser.DicomParser(str(DATA / "rtplan.dcm"))
    structures = rtss.GetStructures()
    out = {"structures": {}}
    for number, s in structures.items():
        entry = {"number": int(number), "type": s.get("type", "")}
        coords = rtss.GetStructureCoordinates(number)
        if not coords:
            entry["empty"] = True
            out["structures"][s["name"]] = entry
            continue
        thickness = rtss.CalculatePlaneThickness(coords)
        t = time.perf_counter()
        dvh = dvhcalc.get_dvh(str(DATA / "rtss.dcm"), str(DATA / "rtdose.dcm"), number)
        entry["dvhSeconds"] = time.perf_counter() - t
        entry["dvhVolumeCc"] = float(dvh.volume)
        entry["dvhMaxGy"] = float(dvh.max)
        entry["dvhMeanGy"] = float(dvh.mean)
        entry["planeThicknessMm"] = float(thickness)
        out["structures"][s["name"]] = entry
    dose = pydicom.dcmread(str(DATA / "rtdose.dcm"))
    out["doseMaxGy"] = float(dose.pixel_array.max() * float(dose.DoseGridScaling))
    plan = rtplan.GetPlan()
    out["plan"] = {k: (v if isinstance(v, (int, float, str)) or v is None else str(v)) for k, v in plan.items()}
    out["versions"] = {"dicompyler-core": dicompylercore.__version__, "pydicom": pydicom.__version__}
    return out


def structureStats(rtssPath: str, rtdosePath: str) -> dict:
    """dicompyler-core's DVH volume (cc), mean and max dose (Gy) of every non-empty ROI of an RTSTRUCT/RTDOSE pair.

    Used by Testing/unit/test_dicom_writer_dicompyler.py to read files written by our writers with an independent
    DICOM-RT implementation (run as ``.venv-ref/bin/python dicompyler_reference.py --stats RTSTRUCT RTDOSE``).
    """
    from dicompylercore import dicomparser, dvhcalc

    rtss = dicomparser.DicomParser(rtssPath)
    out = {}
    for number, s in rtss.GetStructures().items():
        if not rtss.GetStructureCoordinates(number):
            continue
        dvh = dvhcalc.get_dvh(rtssPath, rtdosePath, number)
        out[s["name"]] = {"volumeCc": float(dvh.volume), "meanGy": float(dvh.mean), "maxGy": float(dvh.max),
                          "minGy": float(dvh.min)}
    dose = dicomparser.DicomParser(rtdosePath).GetDoseData()
    out["_dose"] = {"maxGy": float(dose["dosemax"]) * float(dose["dosegridscaling"]),
                    "lut": [list(map(float, dose["lut"][0][:3])), list(map(float, dose["lut"][1][:3]))],
                    "firstFrameZ": float(dose["position"][2]) if "position" in dose else None}
    return out


def main() -> int:
    if "--stats" in sys.argv:
        n = sys.argv.index("--stats")
        print(json.dumps(structureStats(sys.argv[n + 1], sys.argv[n + 2])))
        return 0
    if "--inside" in sys.argv:
        result = compute()
        print(json.dumps(result))
        return 0
    python = ensureVenv()
    proc = subprocess.run([str(python), __file__, "--inside"], check=True, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["command"] = ".venv/bin/python Testing/benchmarks/dicompyler_reference.py  (runs itself in .venv-ref with "
    result["command"] += " ".join(PINS) + ")"
    result["data"] = "../shared/data/dicompyler-breast-boost (dicompyler-core 0.5.6 example data)"
    OUTPUT.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    for name, s in result["structures"].items():
        print(f"{name:18s} dvh volume {s.get('dvhVolumeCc', float('nan')):10.3f} cc")
    print(f"dose max {result['doseMaxGy']:.3f} Gy; plan {result['plan']}")
    print("dvh seconds per structure:", {n: round(s.get("dvhSeconds", 0), 2) for n, s in result["structures"].items()})
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
