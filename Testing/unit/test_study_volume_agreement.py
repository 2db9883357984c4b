"""Volume agreement of a delineation study: the intraclass correlation of the observers' volumes over the cases."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from DelineationReviewLib.core.study import (
    analyzeStudy,
    intraclassCorrelation,
    volumeAgreement,
    writeStudyOutputs,
)
from ReirradiationDoseLib.core.errors import InputError
from test_study import sphere, writeMask

# Shrout & Fleiss 1979, Table 2: 6 targets rated by 4 judges
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


def test_intraclass_correlation_of_the_published_example():
    """Shrout & Fleiss's Table 4: ICC(1,1) 0.17, ICC(2,1) 0.29, ICC(3,1) 0.71. The 95 % limits (McGraw & Wong
    1996) agree with an independent implementation (pingouin 0.7.0's intraclass_corr, run on the same table in a
    scratch environment: ICC(A,1) [0.02, 0.76], ICC(C,1) [0.34, 0.95], ICC(1,1) 0.165742 [-0.13, 0.72]) to the
    digits below."""
    icc = intraclassCorrelation(SHROUT_FLEISS)
    assert round(icc["agreement"], 2) == 0.29 and round(icc["consistency"], 2) == 0.71
    assert icc["agreement"] == pytest.approx(0.289764, abs=1e-6)
    assert icc["consistency"] == pytest.approx(0.714841, abs=1e-6)
    assert icc["agreementCi"] == pytest.approx([0.018787, 0.761084], abs=1e-5)
    assert icc["consistencyCi"] == pytest.approx([0.342465, 0.945858], abs=1e-5)
    assert round(icc["oneWay"], 2) == 0.17 and icc["oneWay"] == pytest.approx(0.165742, abs=1e-6)
    assert icc["oneWayCi"] == pytest.approx([-0.13, 0.72], abs=0.005)  # pingouin's rounded ICC(1,1) limits
    # the ANOVA mean squares behind them (between targets, between judges, residual)
    assert (icc["msCases"], icc["msObservers"], icc["msError"]) == pytest.approx((11.241667, 32.486111, 1.019444),
                                                                                  abs=1e-5)


def test_an_offset_observer_lowers_agreement_not_consistency_and_a_degenerate_table_is_said():
    volumes = np.array([[10.0, 11.0, 10.5], [20.0, 21.5, 20.0], [30.0, 29.0, 31.0], [40.0, 41.0, 40.0]])
    same = intraclassCorrelation(volumes)
    offset = volumes + np.array([0.0, 0.0, 8.0])  # the third observer delineates 8 cc more in every case
    shifted = intraclassCorrelation(offset)
    assert shifted["consistency"] == pytest.approx(same["consistency"])
    assert shifted["agreement"] < same["agreement"] - 0.05
    # no residual variation (a verification review: perfect agreement gave no ICC and a wrong note)
    identical = intraclassCorrelation(np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    assert identical["agreement"] == identical["consistency"] == identical["oneWay"] == 1.0
    assert identical["agreementCi"] == [None, None] and "agree exactly" in identical["note"]
    offsetOnly = intraclassCorrelation(np.array([[10.0, 12.0], [20.0, 22.0], [30.0, 32.0]]))
    # MS cases 200, MS observers 6, no residual: ICC(A,1) = 200 / (200 + 2 x 6 / 3)
    assert offsetOnly["consistency"] == 1.0 and offsetOnly["agreement"] == pytest.approx(200 / 204)
    # a strongly negative ICC(A,1) from three cases: a limit the F quantiles cannot give is None, not NaN
    negative = intraclassCorrelation(np.array([[10.2, -12.8], [2.1, -2.8], [-2.3, -1.1]]))
    assert negative["agreement"] == pytest.approx(-0.7342, abs=1e-4)
    assert negative["agreementCi"][0] is None and np.isfinite(negative["agreementCi"][1])  # was NaN: "nan – ..."
    with pytest.raises(InputError, match="complete table"):
        intraclassCorrelation([[1.0, np.nan], [2.0, 3.0]])


def longRows(table: dict) -> list[dict]:
    return [{"case": case, "round": "r1", "kind": "observer", "observerA": observer, "metric": "volumeCc",
             "value": value} for case, values in table.items() for observer, value in values.items()]


def test_incomplete_cases_and_a_sparse_observer_are_left_out_and_listed():
    table = {f"c{i}": {"A": 10.0 * i + 1, "B": 10.0 * i - 1, "C": 10.0 * i + 0.5} for i in range(1, 5)}
    table["c5"] = {"A": 55.0, "B": 52.0}  # C did not delineate case 5: the case is left out, C kept
    (entry,) = volumeAgreement(longRows(table))
    assert (entry["cases"], entry["observers"], entry["casesLeftOut"], entry["observersLeftOut"]) == \
        (4, 3, ["c5"], [])
    expected = intraclassCorrelation([[table[c][o] for o in "ABC"] for c in ("c1", "c2", "c3", "c4")])
    assert entry["iccAgreement"] == pytest.approx(expected["agreement"])
    # D delineated two cases only: without D four cases are complete, with D two
    for case in ("c1", "c2"):
        table[case]["D"] = 10.0
    (entry,) = volumeAgreement(longRows(table))
    assert entry["observersLeftOut"] == ["D"] and entry["cases"] == 4
    (entry,) = volumeAgreement(longRows({"c1": {"A": 1.0, "B": 2.0}, "c2": {"A": 3.0, "B": 3.5}}))
    assert "iccAgreement" not in entry and entry["cases"] == 2
    assert entry["note"] == "not computed: 2 case(s) in the round (at least 3 cases are needed)"
    # fewer cases than needed: nobody is left out (a newcomer's review: the demo's one case of five readers listed
    # three of them as left out and said "1 case(s) with every one of 2 observer(s)")
    five = {f"obs{k}": 10.0 + k for k in range(1, 6)}
    (entry,) = volumeAgreement(longRows({"case": five}))
    assert (entry["cases"], entry["observers"], entry["observersLeftOut"]) == (1, 5, [])
    assert entry["note"] == "not computed: 1 case(s) in the round (at least 3 cases are needed)"


def test_a_study_writes_the_volume_agreement_table(tmp_path):
    """Four cases × three readers (spheres of different radii per case, reader C 1 mm larger): the table holds the
    ICC of the volumes long.csv gives, and the report shows it."""
    root = tmp_path / "study"
    for index, radius in enumerate((4.0, 5.0, 6.0, 7.0), start=1):
        for observer, extra in (("obsA", 0.0), ("obsB", 0.3), ("obsC", 1.0)):
            writeMask(root / f"case{index}" / f"{observer}.nrrd", sphere(radiusMm=radius + extra))
    result = analyzeStudy(root)
    output = writeStudyOutputs(result, tmp_path / "out")
    with open(output / "volume_agreement.csv", newline="", encoding="utf-8") as stream:
        (row,) = list(csv.DictReader(stream))
    with open(output / "long.csv", newline="", encoding="utf-8") as stream:
        volumes = {(r["case"], r["observerA"]): float(r["value"]) for r in csv.DictReader(stream)
                   if r["kind"] == "observer" and r["metric"] == "volumeCc"}
    expected = intraclassCorrelation([[volumes[(f"case{i}", o)] for o in ("obsA", "obsB", "obsC")]
                                      for i in range(1, 5)])
    assert (row["cases"], row["observers"]) == ("4", "3")
    assert float(row["iccAgreement"]) == pytest.approx(expected["agreement"], rel=1e-6)
    assert float(row["iccConsistency"]) == pytest.approx(expected["consistency"], rel=1e-6)
    assert 0.8 < expected["consistency"] <= 1.0 and expected["agreement"] < expected["consistency"]
    assert "ICC(A,1) agreement" in (output / "report.html").read_text()
