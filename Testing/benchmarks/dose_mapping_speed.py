"""Benchmark: mapping a 200x200x120 prior dose through a deformable transform (target < 2 s).

The transform is what the pipeline produces: CompositeTransform([rigid, displacement field on the current CT grid
256x256x100]). Reported: median of 5 runs of ``mapDose``, of 3 of ``conservativeMaxFilter`` (3 mm), and the peer
``sitk.Resample`` with the default 0 fill (what a naive mapping would do; it loses the coverage information) measured
in the same run. Run: ``.venv/bin/python Testing/benchmarks/dose_mapping_speed.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "ReirradiationDose"))

from ReirradiationDoseLib.core import regquality  # noqa: E402
from ReirradiationDoseLib.core.dosemapping import conservativeMaxFilter, mapDose  # noqa: E402
from ReirradiationDoseLib.core.geometry import ImageGeometry, imageFromArray  # noqa: E402
from ReirradiationDoseLib.core.registration import displacementFieldTransform  # noqa: E402


def median(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    print(f"load average before: {os.getloadavg()}  (2 cores shared)")
    ct = ImageGeometry((256, 256, 100), (1.5, 1.5, 3.0), (-191.25, -191.25, -148.5))
    dose = ImageGeometry((200, 200, 120), (2.0, 2.0, 2.5), (-199.0, -199.0, -148.75))
    p = dose.voxelCentresLps()
    doseGy = (60.0 * np.exp(-np.sum((p / np.array([60.0, 50.0, 50.0])) ** 2, axis=-1))).astype(np.float32)
    field = regquality.analyticDeformationField(ct.emptyImage(), (12.0, 10.0, 5.0), 200.0)
    rigid = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.02, -0.01, 0.03, (3.0, -2.0, 1.0))
    transform = sitk.CompositeTransform([rigid, displacementFieldTransform(field)])

    result = mapDose(doseGy, dose, transform, dose)
    tMap = median(lambda: mapDose(doseGy, dose, transform, dose))
    print(f"mapDose 200x200x120 through rigid + displacement field: median {tMap:.2f} s "
          f"(target < 2 s; coverage {100 * result.coverageFraction:.1f} %)")
    doseImage = imageFromArray(doseGy, dose)
    tPeer = median(lambda: sitk.GetArrayFromImage(sitk.Resample(doseImage, doseImage, transform, sitk.sitkLinear, 0.0)))
    print(f"peer sitk.Resample (0 fill, no coverage): median {tPeer:.2f} s; ratio ours/peer {tMap / tPeer:.2f}")
    tMax = median(lambda: conservativeMaxFilter(result.doseGy, dose, 3.0), runs=3)
    print(f"conservativeMaxFilter 3 mm on 200x200x120: median {tMax:.2f} s")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
