"""Issue 10: a short run of the reader fuzzer (Testing/benchmarks/fuzz_readers.py): mutated real RTDOSE, RTPLAN,
RTSTRUCT and case files give either a result that passes the invariants or a documented InputError naming the
file, never another exception. The full run (≥ 10 000 inputs) is the benchmark script itself."""

import importlib.util
import sys
import time

from reirradiation_testing import PROJECT_ROOT, sharedDataPath


def loadFuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_readers", PROJECT_ROOT / "Testing" / "benchmarks" /
                                                  "fuzz_readers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_fuzz_smoke_finds_no_undocumented_exception(tmp_path, demoCase):
    sharedDataPath("pydicom-rt", "rtdose.dcm")  # skips with a clear message when ../shared/data is absent
    fuzz = loadFuzzer()
    started = time.perf_counter()
    report = fuzz.fuzzReaders(maxInputs=200, maxSeconds=60, seed=20261123, workDir=tmp_path, bugsDir=tmp_path / "bugs",
                              timeoutSeconds=10, demoDir=demoCase.outputDir)
    elapsed = time.perf_counter() - started
    assert report.total == 200
    for kind in fuzz.KINDS:  # every reader was exercised, with both outcomes
        counts = report.counts[kind]
        assert sum(counts.values()) == 50, kind
        assert counts["refused"] > 0, kind
    assert sum(c["ok"] for c in report.counts.values()) > 0
    assert report.bugs == [], "\n".join(f"{b['kind']} from {b['seed']}: {b['error']}" for b in report.bugs)
    assert elapsed < 60
