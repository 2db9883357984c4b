"""Border marks on a real MRML scene (slicer-core): node round trip, RAS/LPS, and Slicer's own .mrk.json I/O."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from DelineationReviewLib.core.marks import BorderMark, MarkSet, readMarks, writeMarks  # noqa: E402
from DelineationReviewLib.mrml.marks import (  # noqa: E402
    FRAME_ATTRIBUTE,
    markSetFromMarkupsNodes,
    markupsNodesFromMarkSet,
)

pytestmark = pytest.mark.mrml

SAMPLE = MarkSet((
    BorderMark("cranial", (1.5, -2.25, 30.0), confidence=0.75, description="T2 signal"),
    BorderMark("lateral", (-11.0, 4.0, 12.5), id="L7"),
    BorderMark("posterior ext", (3.0, 40.0, 20.0), (3.0, 30.0, 20.0), confidence=1.0),
), "MRI", source="sample")


def assertSameMarks(a: MarkSet, b: MarkSet):
    assert a.frame == b.frame and len(a) == len(b)
    for x, y in zip(a.marks, b.marks, strict=True):
        assert (x.label, x.kind, x.confidence, x.id, x.description) == (y.label, y.kind, y.confidence, y.id,
                                                                         y.description)
        np.testing.assert_allclose(x.tipLps, y.tipLps, atol=1e-9)
        if x.tailLps is not None:
            np.testing.assert_allclose(x.tailLps, y.tailLps, atol=1e-9)


def test_round_trip_through_nodes_converts_lps_to_ras(scene):
    pointList, lines = markupsNodesFromMarkSet(scene, SAMPLE)
    assert pointList.GetNumberOfControlPoints() == 2 and len(lines) == 1
    assert pointList.GetAttribute(FRAME_ATTRIBUTE) == "MRI"
    ras = [0.0, 0.0, 0.0]
    pointList.GetNthControlPointPosition(0, ras)
    assert ras == pytest.approx([-1.5, 2.25, 30.0])  # LPS (1.5, -2.25, 30) in RAS
    assert pointList.GetNthControlPointLabel(0) == "cranial"
    assert "confidence=0.75" in pointList.GetNthControlPointDescription(0)
    line = lines[0]
    assert line.GetName() == "posterior ext" and line.GetNthControlPointLabel(1) == "tip"
    line.GetNthControlPointPosition(1, ras)
    assert ras == pytest.approx([-3.0, -40.0, 20.0])
    back = markSetFromMarkupsNodes([pointList, *lines])
    # order: points first, then arrows (as created)
    assertSameMarks(MarkSet(SAMPLE.marks, "MRI"), back)


def test_nodes_edited_in_slicer_are_read_back(scene):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "radiologist")
    node.AddControlPoint([10.0, 20.0, 30.0], "apex")  # RAS, as a user clicks it
    node.SetNthControlPointDescription(0, "confidence=0.6")
    marks = markSetFromMarkupsNodes(node, frame="CT")
    assert marks.frame == "CT" and marks.marks[0].tipLps == (-10.0, -20.0, 30.0)
    assert marks.marks[0].confidence == 0.6 and marks.marks[0].label == "apex"
    node.SetAttribute(FRAME_ATTRIBUTE, "MRI")
    with pytest.raises(ValueError, match="MRI frame, not CT"):
        markSetFromMarkupsNodes(node, frame="CT")


def test_slicer_reads_our_files_and_we_read_slicers(scene, tmp_path):
    """Interoperability with Slicer's own markups JSON storage node (the real reader and writer)."""
    points = MarkSet(tuple(m for m in SAMPLE.marks if m.kind == "point"), "MRI")
    arrow = MarkSet(tuple(m for m in SAMPLE.marks if m.kind == "arrow"), "MRI")
    for markSet, className in ((points, "vtkMRMLMarkupsFiducialNode"), (arrow, "vtkMRMLMarkupsLineNode")):
        path = writeMarks(tmp_path / f"{className}.mrk.json", markSet)
        node = scene.AddNewNodeByClass(className)
        storage = scene.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
        storage.SetFileName(str(path))
        assert storage.ReadData(node) == 1
        assertSameMarks(markSet, markSetFromMarkupsNodes(node))  # Slicer kept positions, labels, descriptions

        # ... and Slicer's writer output is read by readMarks.
        out = tmp_path / f"slicer-{className}.mrk.json"
        writer = scene.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
        writer.SetFileName(str(out))
        assert writer.WriteData(node) == 1
        assertSameMarks(markSet, readMarks(out))
