"""DVH vs a real TPS: our DVHs of the Eclipse prostate plan against Eclipse's exported DVH, CERR's and SlicerRT's.

Run: ``.venv/bin/python Testing/benchmarks/dvh_vs_tps.py [--supersample 1 2]``

Per structure it prints the volume (ours / Eclipse / SlicerRT), Dmean and D2cc (ours / SlicerRT, relative
difference), Dmax (ours / Eclipse curve end / SlicerRT) and the fraction of reference DVH points within 1 % volume /
1 Gy (1D gamma as SlicerRT's DVH comparison) against the Eclipse, CERR and SlicerRT curves, for each supersampling
factor; then the median over structures and the median computation time (the peers are stored tables of the same
plan: Eclipse 8.1, CERR, SlicerRT, see ../shared/data/slicerrt-testing/PROVENANCE.txt).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "Testing" / "data"), str(ROOT / "ReirradiationDose")]

from test_dvh_eclipse import (  # noqa: E402
    ECLIPSE_NAMES,
    computeProstateDvhs,
    gammaPassRate,
    readDvhTable,
    readMetricsTable,
)

DATA = ROOT.parent / "shared" / "data" / "slicerrt-testing"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supersample", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="timing repetitions")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"shared data not found at {DATA}")
        return 1
    eclipse = readDvhTable(DATA / "EclipseProstate_DvhTable_Eclipse.csv")
    cerr = readDvhTable(DATA / "EclipseProstate_DvhTable_CERR.csv")
    slicerCurves = readDvhTable(DATA / "EclipseProstate_DvhTable_SlicerRT.csv")
    slicerMetrics = readMetricsTable(DATA / "EclipseProstate_DvhMetrics_SlicerRT.csv")
    for factor in args.supersample:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            dvhs = computeProstateDvhs(DATA, (factor,) * 3)
            times.append(time.perf_counter() - start)
        print(f"\n=== supersampling {factor}x{factor}x{factor}: rasterise + DVH of 6 structures, median "
              f"{statistics.median(times):.1f} s over {len(times)} run(s)")
        print(f"{'structure':16s} {'vol cc ours/Ecl/SRT':>26s} {'Dmean ours/SRT (diff)':>26s} "
              f"{'D2cc ours/SRT (diff)':>26s} {'Dmax ours/Ecl/SRT':>20s} {'pass Ecl':>9s} {'pass CERR':>9s} "
              f"{'pass SRT':>9s}")
        rates = {"eclipse": [], "cerr": [], "slicerrt": []}
        dmeanDiffs, d2ccDiffs = [], []
        for key, name in ECLIPSE_NAMES.items():
            dvh = dvhs[name]
            eDose, eVolume, eCc = eclipse[key]
            cDose, cVolume, _ = cerr[key]
            sDose, sVolume, _ = slicerCurves[name]
            m = slicerMetrics[name]
            rE, nE = gammaPassRate(eDose, eVolume, dvh)
            rC, _ = gammaPassRate(cDose, cVolume, dvh)
            rS, _ = gammaPassRate(sDose, sVolume, dvh)
            rates["eclipse"].append(rE)
            rates["cerr"].append(rC)
            rates["slicerrt"].append(rS)
            d2 = dvh.doseAtVolumeGy(cc=2.0)
            dmeanDiff = 100 * (dvh.dmeanGy / m["Mean dose (GY)"] - 1)
            d2ccDiff = 100 * (d2 / m["D2cc (GY)"] - 1)
            dmeanDiffs.append(abs(dmeanDiff))
            d2ccDiffs.append(abs(d2ccDiff))
            eclipseMax = float(eDose[eVolume > 0].max())
            print(f"{name:16s} {dvh.volumeCc:9.2f}/{eCc:7.1f}/{m['Volume (cc)']:8.2f} "
                  f"{dvh.dmeanGy:8.3f}/{m['Mean dose (GY)']:7.3f} ({dmeanDiff:+5.2f}%) "
                  f"{d2:8.3f}/{m['D2cc (GY)']:7.3f} ({d2ccDiff:+5.2f}%) "
                  f"{dvh.dmaxGy:6.2f}/{eclipseMax:6.2f}/{m['Max dose (GY)']:6.2f} "
                  f"{100 * rE:8.1f}% {100 * rC:8.1f}% {100 * rS:8.1f}%   ({nE} Eclipse points)")
        print(f"{'median':16s} {'':26s} {'|diff| ' + format(statistics.median(dmeanDiffs), '.2f') + '%':>26s} "
              f"{'|diff| ' + format(statistics.median(d2ccDiffs), '.2f') + '%':>26s} {'':20s} "
              f"{100 * statistics.median(rates['eclipse']):8.1f}% {100 * statistics.median(rates['cerr']):8.1f}% "
              f"{100 * statistics.median(rates['slicerrt']):8.1f}%")
        below = "BELOW the acceptance; " if min(rates['eclipse']) < 0.98 else ""
        print(f"minimum pass rate vs Eclipse: {100 * min(rates['eclipse']):.1f} % ({below}acceptance ≥ 98 %; "
              "SlicerRT's own test accepts ≥ 97.5 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
