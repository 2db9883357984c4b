"""SlicerRT's Segment Comparison baseline (SlicerRT SegmentComparison/Testing/Cxx/CMakeLists.txt, via
slicerrt-testing/PROVENANCE.txt): rectum (planar contours) vs rectum expanded 5 mm → Dice 0.542084,
HD max 8.34375 mm, HD95 6.07853 mm, HD mean 5.17621 mm.

SlicerRT uses Plastimatch, whose HD95 is the mean of the two directed 95th percentiles: our ``meanDirected``
convention. The rectum's planar contours are rasterised on the expanded segment's grid by ``segio`` (voxel-centre
rule, the same grid SlicerRT compared on).
"""

from __future__ import annotations

import numpy as np
import pytest
from reirradiation_testing import sharedDataPath
from DelineationReviewLib.core.iov import analyzeObservers

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def rectum():
    segio = pytest.importorskip("ReirradiationDoseLib.core.segio")
    expandedPath = sharedDataPath("slicerrt-testing", "EclipseProstate_Expanded_5_5_5_Rectum.seg.nrrd")
    contourPath = sharedDataPath("slicerrt-testing", "EclipseProstate_Rectum.seg.vtm")
    expanded, geometry, _ = segio.readSegmentationWithGeometry(expandedPath)
    contours, _, _ = segio.readSegmentationWithGeometry(contourPath, referenceGeometry=geometry)
    return contours["Rectum"], expanded["Expanded_5_5_5_Rectum"], geometry


def test_slicerrt_segment_comparison_baseline(rectum):
    rect, expanded, geometry = rectum
    pair = analyzeObservers({"rectum": rect, "expanded": expanded}, geometry, reference=None,
                            hdConvention="meanDirected").pairs[0]
    # SlicerRT's baseline: Dice 0.542084, HD 8.34375, HD95 (mean of the directed) 6.07853, mean of the directed means
    # 5.17621; measured: Dice 0.54205, HD 8.34375, HD95 6.07853, 5.1724 (its planar contours rasterised here)
    assert pair["dice"] == pytest.approx(0.542084, abs=0.0005)
    assert np.mean(pair["msdDirectedMm"]) == pytest.approx(5.17621, abs=0.01)
    assert pair["hausdorffMm"] == pytest.approx(8.34375, abs=0.01)
    assert pair["hdPercentileMm"] == pytest.approx(6.07853, abs=0.01)
    # the expansion contains the rectum: sensitivity of the expanded mask w.r.t. the rectum is 1
    assert np.count_nonzero(rect & ~expanded) == 0


def test_rectum_against_itself(rectum):
    rect, _, geometry = rectum
    pair = analyzeObservers({"a": rect, "b": rect.copy()}, geometry, reference=None).pairs[0]
    assert pair["dice"] == 1.0 and pair["hausdorffMm"] == 0.0 and pair["hdPercentileMm"] == 0.0


def test_cli_on_slicer_segmentation_and_planar_contours(tmp_path):
    """The CLI reads a .seg.nrrd segment and a .seg.vtm planar-contour segment (rasterised on the first observer's
    grid) and reproduces the baseline."""
    import json

    from ReirradiationDoseLib.cli import main

    pytest.importorskip("ReirradiationDoseLib.core.segio")
    expanded = sharedDataPath("slicerrt-testing", "EclipseProstate_Expanded_5_5_5_Rectum.seg.nrrd")
    contours = sharedDataPath("slicerrt-testing", "EclipseProstate_Rectum.seg.vtm")
    out = tmp_path / "iov.json"
    assert main(["iov", "--observer", f"expanded={expanded}", "--observer", f"rectum={contours}#Rectum",
                 "--hd-convention", "meanDirected", "--reference", "majority", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    pair = report["pairs"][0]
    assert pair["dice"] == pytest.approx(0.542084, abs=0.005)
    assert pair["hausdorffMm"] == pytest.approx(8.34375, abs=0.01)
    assert pair["hdPercentileMm"] == pytest.approx(6.07853, abs=0.01)
    assert report["grid"]["method"].startswith("all observers were on the same grid")
    assert report["inputs"]["observers"]["rectum"].endswith("#Rectum")
