"""Our RTSTRUCT/RTDOSE writers read by an independent DICOM-RT implementation: dicompyler-core 0.5.6.

dicompyler-core needs pydicom < 3, so it lives in ``.venv-ref`` (created by
``.venv/bin/python Testing/benchmarks/dicompyler_reference.py``); the test is skipped with that instruction when
the environment is absent. A phantom with known volumes and an analytic dose (a linear gradient, so the mean dose
of a structure is the dose at its centroid) is written with our writers and the volumes and doses dicompyler
computes from the files must equal the phantom's.
"""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ReirradiationDoseLib.core.dicomwrite import PatientStudy, writeImageSeries, writeRtDose, writeRtStruct
from ReirradiationDoseLib.core.geometry import ImageGeometry

ROOT = Path(__file__).resolve().parents[2]
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
SCRIPT = ROOT / "Testing" / "benchmarks" / "dicompyler_reference.py"

# dicompyler assumes axial, row/column-aligned grids; off-centre origin and anisotropic spacing
GEOMETRY = ImageGeometry((64, 56, 20), (2.0, 2.5, 3.0), (-71.0, 12.5, -330.0))


def phantom():
    centres = GEOMETRY.voxelCentresLps()
    x, y, z = centres[..., 0], centres[..., 1], centres[..., 2]
    cx, cy, cz = GEOMETRY.indexToLps((31.5, 27.5, 9.5))
    r2 = (x - cx) ** 2 + (y - cy) ** 2
    sphere = r2 + (z - cz) ** 2 < 22.0**2
    ring = (r2 < 30.0**2) & (r2 >= 15.0**2) & (np.abs(z - cz) < 10)  # a hole in every slice
    box = (np.abs(x - cx - 40) < 8) & (np.abs(y - cy) < 20) & (np.abs(z - cz) < 16)
    dose = 5.0 + 0.1 * (x - x.min()) + 0.05 * (y - y.min())  # Gy, linear: mean over a region = value at centroid
    return {"Sphere": sphere, "Ring": ring, "Box": box}, dose, centres


@pytest.mark.skipif(not REF_PYTHON.exists(), reason="dicompyler-core environment .venv-ref absent: create it with "
                    "'.venv/bin/python Testing/benchmarks/dicompyler_reference.py'")
def test_dicompyler_reads_our_rtstruct_and_rtdose(tmp_path):
    masks, dose, centres = phantom()
    study = PatientStudy.new("Writer^Check", "W1", "20240101")
    ref = writeImageSeries(np.zeros(GEOMETRY.shape, np.int16), GEOMETRY, tmp_path / "ct", study)
    writeRtStruct(tmp_path / "rs.dcm", masks, GEOMETRY, study, ref)
    writeRtDose(tmp_path / "rd.dcm", dose, GEOMETRY, study)
    proc = subprocess.run([str(REF_PYTHON), str(SCRIPT), "--stats", str(tmp_path / "rs.dcm"),
                           str(tmp_path / "rd.dcm")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["_dose"]["maxGy"] == pytest.approx(dose.max(), abs=1e-4)
    for name, mask in masks.items():
        volumeCc = mask.sum() * GEOMETRY.voxelVolumeCc
        meanGy = float(dose[mask].mean())
        # dicompyler bins doses at 0.01 Gy and rasterises at the dose-grid voxel centres: the same voxels as ours
        assert stats[name]["volumeCc"] == pytest.approx(volumeCc, rel=0.005), name
        assert stats[name]["meanGy"] == pytest.approx(meanGy, abs=0.02), name
        assert stats[name]["maxGy"] == pytest.approx(float(dose[mask].max()), abs=0.02), name
