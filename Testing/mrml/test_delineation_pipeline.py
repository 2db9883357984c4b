"""Delineation Review on a real MRML scene (slicer-core): the module's workflow on the demo case's observers.

The numbers in the tables must be the core's (``analyzeObservers`` on the same masks), the consensus and agreement
map must be the core's arrays, inputs must stay untouched, re-running must not add nodes and a failure must leave
the scene as it was.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402

from DelineationReviewLib.core.iov import analyzeObservers  # noqa: E402
from DelineationReviewLib.core.marks import evaluateMarks, mapMarks, readMarks  # noqa: E402
from DelineationReviewLib.mrml import pipeline  # noqa: E402
from DelineationReviewLib.mrml.marks import markupsNodesFromMarkSet  # noqa: E402
from DelineationReviewLib.mrml.pipeline import (  # noqa: E402
    MAJORITY_SEGMENT_ID,
    OUTPUT_ATTRIBUTE,
    STAPLE_SEGMENT_ID,
    exportTables,
    largestDisagreementSlice,
    renderLargestDisagreementPanel,
    runDelineationReview,
)
from ReirradiationDoseLib.core.dicomimage import readImageSeries  # noqa: E402
from ReirradiationDoseLib.core.errors import InputError, ProcessingCancelled  # noqa: E402
from ReirradiationDoseLib.core.geometry import ImageGeometry, arrayFromImage  # noqa: E402
from ReirradiationDoseLib.core.segio import readSegmentationWithGeometry  # noqa: E402
from ReirradiationDoseLib.mrml.nodes import (  # noqa: E402
    arrayAndGeometryFromVolumeNode,
    masksFromSegmentationNode,
    segmentationNodeFromMasks,
    volumeNodeFromArray,
)
from ReirradiationDoseLib.mrml.render import readPng  # noqa: E402

pytestmark = pytest.mark.mrml

PAIR_METRICS = ("dice", "jaccard", "hausdorffMm", "hdPercentileMm", "msdMm", "surfaceDice", "centroidShiftMm")
# Segment names as observers write them: the tolerant matching must find "GTV" in each.
SEGMENT_NAMES = {"obs1": "GTV", "obs2": "gtv", "obs3": "GTV_obs3", "obs4": "GTVp", "obs5": "GTV 1"}


@pytest.fixture(scope="module")
def demoObservers(demoCase):
    """The demo CT (array, geometry), the round-1 observers' GTV masks on it and the fibrosis observer's name."""
    image, _ = readImageSeries(demoCase.paths["currentCt"])
    ct, geometry = arrayFromImage(image)
    masks = {}
    for path in sorted((demoCase.paths["observers"] / "round1").glob("*.dcm")):
        structures, _, _ = readSegmentationWithGeometry(path, geometry)
        masks[path.stem] = structures["GTV"]
    info = json.loads(demoCase.paths["observersJson"].read_text())
    return ct, geometry, masks, info["fibrosisObserver"], info["missedExtensionObserver"]


def addObservers(scene, ct, geometry, masks, referenceNode=None):
    nodes = []
    for name, mask in masks.items():
        other = np.zeros_like(mask)
        other[5:8, 5:8, 5:8] = True  # a second structure the review must ignore
        nodes.append(segmentationNodeFromMasks(scene, {SEGMENT_NAMES.get(name, "GTV"): mask, "Rectum": other},
                                               geometry, name=name, referenceVolumeNode=referenceNode))
    return nodes


def column(tableNode, name) -> list:
    array = tableNode.GetTable().GetColumnByName(name)
    assert array is not None, f"no column {name} in {tableNode.GetName()}"
    return [array.GetValue(i) for i in range(array.GetNumberOfTuples())]


def same(a, b, tol=1e-9) -> bool:
    a = math.nan if a is None else float(a)
    b = math.nan if b is None else float(b)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def inputState(nodes, geometry):
    state = []
    for node in nodes:
        segmentation = node.GetSegmentation()
        segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
        state.append((node.GetName(), segmentation.GetSourceRepresentationName(),
                      [(s.GetName(), tuple(s.GetColor())) for s in segments],
                      {k: v.copy() for k, v in masksFromSegmentationNode(node, geometry).items()}))
    return state


def assertSameState(before, after):
    assert len(before) == len(after)
    for (name, source, segments, masks), (name2, source2, segments2, masks2) in zip(before, after, strict=True):
        assert (name, source, segments) == (name2, source2, segments2)
        assert masks.keys() == masks2.keys()
        for key in masks:
            np.testing.assert_array_equal(masks[key], masks2[key])


@pytest.fixture
def demoScene(scene, demoObservers):
    ct, geometry, masks, _, _ = demoObservers
    ctNode = volumeNodeFromArray(scene, ct, geometry, "CT")
    return scene, ctNode, addObservers(scene, ct, geometry, masks, ctNode)


def test_demo_tables_are_the_core_numbers_and_the_fibrosis_observer_agrees_least(demoScene, demoObservers):
    scene, ctNode, nodes = demoScene
    _, geometry, masks, fibrosisObserver, _ = demoObservers
    before = inputState(nodes, geometry)
    fractions = []
    result = runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode, toleranceMm=2.0,
                                  hausdorffPercentile=95.0, progress=lambda f, m="": fractions.append(f))
    core = analyzeObservers(masks, geometry, reference="staple", toleranceMm=2.0, hdPercentile=95.0)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)

    # pairwise table: every pair, every metric, as numeric columns equal to the core
    table = result["metricsTable"]
    for name in PAIR_METRICS:
        assert table.GetTable().GetColumnByName(name).IsA("vtkDoubleArray"), name
    pairs = list(zip(column(table, "a"), column(table, "b"), strict=True))
    assert pairs == [(p.a, p.b) for p in core.pairs] and len(pairs) == 10
    for row, pair in enumerate(core.pairs):
        for name in PAIR_METRICS:
            assert same(column(table, name)[row], pair.values[name]), (pair.a, pair.b, name)

    # each observer vs STAPLE: the core's numbers; the fibrosis observer has the lowest Dice
    observers = result["observerTable"]
    assert column(observers, "observer") == list(masks)
    assert column(observers, "segment") == [SEGMENT_NAMES[n] for n in masks]
    dice = column(observers, "dice")
    for row, entry in enumerate(core.consensus["observers"]):
        for name in ("dice", "hdPercentileMm", "surfaceDice", "sensitivity", "specificity"):
            assert same(column(observers, name)[row], entry[name]), (entry["name"], name)
        assert same(column(observers, "volumeCc")[row], core.observers[row]["volumeCc"])
    assert column(observers, "observer")[int(np.argmin(dice))] == fibrosisObserver
    assert max(dice) < 1.0 and min(dice) > 0.3

    # study numbers
    study = dict(zip(column(result["studyTable"], "quantity"), column(result["studyTable"], "value"), strict=True))
    assert same(study["CIgen"], core.cigen) and same(study["volumeCV"], core.volumeCv)
    assert same(study["uncertaintyBandCc"], core.agreement["uncertaintyBandCc"])
    assert study["numberOfObservers"] == 5

    # consensus segments = the core's STAPLE and majority vote; agreement map = the core's counts
    consensus = masksFromSegmentationNode(result["consensusSegmentation"], geometry)
    segmentation = result["consensusSegmentation"].GetSegmentation()
    assert segmentation.GetSegment(STAPLE_SEGMENT_ID) and segmentation.GetSegment(MAJORITY_SEGMENT_ID)
    np.testing.assert_array_equal(consensus["STAPLE consensus"], core.consensusMaskFull())
    counts = core.agreementMapFull()
    np.testing.assert_array_equal(consensus["Majority consensus"], 2 * counts.astype(int) > 5)
    agreement = result["agreementMap"]
    assert agreement.IsA("vtkMRMLLabelMapVolumeNode")
    voxels, agreementGeometry = arrayAndGeometryFromVolumeNode(agreement)
    assert agreementGeometry.sameGridAs(geometry)
    np.testing.assert_array_equal(voxels, counts)
    colors = agreement.GetDisplayNode().GetColorNode()
    assert colors is result["agreementColorTable"] and colors.GetNumberOfColors() == 6
    assert colors.GetColorName(5) == "5 of 5 observers"

    # plot: Dice and surface Dice per observer, from the observer table
    chart = result["diceChart"]
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetTableNode() is observers and series.GetYColumnName() == "dice"

    # outlines: one segment per observer, distinct colours; the inputs keep theirs (and everything else)
    outlines = result["observerOutlines"].GetSegmentation()
    outlineColors = {tuple(outlines.GetNthSegment(i).GetColor()) for i in range(outlines.GetNumberOfSegments())}
    assert outlines.GetNumberOfSegments() == 5 and len(outlineColors) == 5
    assertSameState(before, inputState(nodes, geometry))
    assert result["borderMarksTable"] is None
    assert fibrosisObserver in result["summary"]
    shNode = scene.GetSubjectHierarchyNode()
    folder = shNode.GetItemParent(shNode.GetItemByDataNode(result["metricsTable"]))
    assert shNode.GetItemName(folder) == "Delineation review: GTV"
    assert shNode.GetItemParent(shNode.GetItemByDataNode(result["agreementMap"])) == folder

    # re-running updates the same nodes
    count = scene.GetNumberOfNodes()
    again = runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode)
    assert scene.GetNumberOfNodes() == count
    for key in ("metricsTable", "observerTable", "studyTable", "consensusSegmentation", "agreementMap",
                "agreementColorTable", "diceChart", "diceSeries", "observerOutlines"):
        assert again[key].GetID() == result[key].GetID(), key
        assert again[key].GetAttribute(OUTPUT_ATTRIBUTE) == key
    folders = vtk.vtkIdList()
    shNode.GetItemChildren(shNode.GetSceneItemID(), folders)
    assert [shNode.GetItemName(folders.GetId(i)) for i in range(folders.GetNumberOfIds())].count(
        "Delineation review: GTV") == 1
    assert result["consensusSegmentation"].GetSegmentation().GetNumberOfSegments() == 2


def test_majority_and_observer_references_keep_both_consensus_segments(demoScene, demoObservers):
    scene, ctNode, nodes = demoScene
    _, geometry, masks, _, _ = demoObservers
    staple = analyzeObservers(masks, geometry, reference="staple").consensusMaskFull()
    for method, referenceObserver in (("majority", None), ("observer", nodes[1])):
        result = runDelineationReview(scene, nodes, "GTV", referenceMethod=method,
                                      referenceObserver=referenceObserver, referenceVolume=ctNode)
        reference = "majority" if method == "majority" else "obs2"
        core = analyzeObservers(masks, geometry, reference=reference)
        dice = column(result["observerTable"], "dice")
        assert all(same(d, e["dice"]) for d, e in zip(dice, core.consensus["observers"], strict=True))
        consensus = masksFromSegmentationNode(result["consensusSegmentation"], geometry)
        np.testing.assert_array_equal(consensus["STAPLE consensus"], staple)  # same crop rule as the core
        np.testing.assert_array_equal(consensus["Majority consensus"], 2 * core.agreementMapFull().astype(int) > 5)
        if method == "observer":
            assert dice[1] == 1.0
            assert "observer obs2" in result["observerTable"].GetName()


def test_module_self_test_two_cubes_dice_0_9_on_the_first_observers_grid(scene):
    """What DelineationReview.py's self-test checks: cubes offset by one voxel, Dice 0.9, HD 1 mm."""
    geometry = ImageGeometry((30, 30, 30), (1.0, 1.0, 1.0), (-15.0, -15.0, -15.0))
    a = np.zeros(geometry.shape, bool)
    a[10:20, 10:20, 10:20] = True
    b = np.roll(a, 1, axis=2)
    observers = [segmentationNodeFromMasks(scene, {"GTV": mask}, geometry, name=f"Observer {n}")
                 for n, mask in ((1, a), (2, b))]
    mine = segmentationNodeFromMasks(scene, {"Notes": a}, geometry, name="My consensus")  # chosen outputs
    myTable = scene.AddNewNodeByClass("vtkMRMLTableNode", "My metrics")
    result = runDelineationReview(scene, observers, "GTV", referenceMethod="observer",
                                  referenceObserver=observers[0], consensusSegmentation=mine, metricsTable=myTable)
    assert result["metricsTable"] is myTable and myTable.GetName() == "My metrics"
    assert result["consensusSegmentation"] is mine
    assert sorted(masksFromSegmentationNode(mine, geometry)) == ["Majority consensus", "Notes", "STAPLE consensus"]
    assert column(result["metricsTable"], "dice") == [pytest.approx(0.9, abs=1e-12)]
    assert column(result["metricsTable"], "hausdorffMm") == [pytest.approx(1.0, abs=1e-12)]
    assert column(result["observerTable"], "dice") == [1.0, pytest.approx(0.9, abs=1e-12)]
    assert result["geometry"].sameGridAs(geometry)
    agreement = masksFromSegmentationNode(result["observerOutlines"], geometry)
    np.testing.assert_array_equal(agreement["Observer 2"], b)


def test_the_first_observers_grid_is_extended_to_hold_every_delineation(scene):
    """An independent review: the common grid taken from the first observer cut the delineations silently, (a) its
    first segment's labelmap (a small rectum) when it had no reference geometry, (b) its reference geometry when its
    own GTV reached beyond it (Dice 0.57 for 0.44, its volume 2.15 for 3.07 cc, no note: the crop check compared the
    observer's grid with itself). Now the grid holds every observer's compared segment, and a reference volume that
    crops the first observer's GTV says so."""
    geometry = ImageGeometry((30, 30, 30), (1.0, 1.0, 2.0), (-15.0, -15.0, -30.0))
    k, j, i = np.indices(geometry.shape)
    first = (i - 15) ** 2 + (j - 15) ** 2 + (2 * (k - 15)) ** 2 <= 81  # a sphere of 9 mm
    second = (i - 15) ** 2 + (j - 15) ** 2 + (2 * (k - 17)) ** 2 <= 36  # 6 mm, 4 mm up: k from 14 on
    assert not second[:14].any()
    trueDice = 2 * np.count_nonzero(first & second) / (np.count_nonzero(first) + np.count_nonzero(second))
    rectum = np.zeros((3, 4, 4), bool)
    rectum[1:, 1:3, 1:3] = True
    upper = ImageGeometry((30, 30, 16), geometry.spacingMm, geometry.indexToLps([0.0, 0.0, 14.0]))
    upperVolume = volumeNodeFromArray(scene, np.zeros(upper.shape, np.float32), upper, "Upper half")
    cases = {
        "first segment a small rectum, no reference geometry": segmentationNodeFromMasks(
            scene, {"Rectum": rectum, "GTV": first}, geometry, name="Reader A", startsKji={"Rectum": (20, 3, 3)}),
        "reference geometry holding half of the GTV": segmentationNodeFromMasks(
            scene, {"GTV": first}, geometry, name="Reader C", referenceVolumeNode=upperVolume)}
    cases["first segment a small rectum, no reference geometry"].GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), "")
    other = segmentationNodeFromMasks(scene, {"GTV": second}, geometry, name="Reader B",
                                      referenceVolumeNode=upperVolume)
    firstCc, secondCc = (np.count_nonzero(m) * geometry.voxelVolumeCc for m in (first, second))
    for what, node in cases.items():
        result = runDelineationReview(scene, [node, other], "GTV")
        assert column(result["metricsTable"], "dice") == [pytest.approx(trueDice, abs=1e-12)], what
        assert column(result["observerTable"], "volumeCc")[:2] == [pytest.approx(firstCc), pytest.approx(secondCc)]
        assert "outside the common grid" not in result["summary"], what
    cropped = runDelineationReview(scene, [cases["reference geometry holding half of the GTV"], other], "GTV",
                                   referenceVolume=upperVolume)
    outside = 100.0 * np.count_nonzero(first[:14]) / np.count_nonzero(first)
    assert cropped["iovResult"].notes[0].startswith(f"{outside:.1f} % of the GTV of observer 'Reader C' lies outside "
                                                    "the common grid"), cropped["iovResult"].notes


def test_the_surfel_and_msd_conventions_reach_the_tables_with_their_names(scene):
    geometry = ImageGeometry((30, 30, 12), (1.0, 1.0, 3.0), (-15.0, -15.0, -18.0))
    a = np.zeros(geometry.shape, bool)
    a[3:9, 8:22, 8:20] = True
    b = np.roll(a, 2, axis=2) & np.roll(a, 1, axis=0)
    observers = [segmentationNodeFromMasks(scene, {"GTV": mask}, geometry, name=f"Observer {n}")
                 for n, mask in ((1, a), (2, b))]
    result = runDelineationReview(scene, observers, "GTV", referenceMethod="majority", surfaceConvention="surfel",
                                  msdConvention="meanDirected")
    core = analyzeObservers({"Observer 1": a, "Observer 2": b}, geometry, reference=None, surface="surfel",
                            msdConvention="meanDirected")
    voxel = analyzeObservers({"Observer 1": a, "Observer 2": b}, geometry, reference=None)
    table = result["metricsTable"]
    for key in ("msdMm", "surfaceDice", "hdPercentileMm"):
        assert column(table, key) == [pytest.approx(core.pairs[0][key], rel=1e-9)]
    assert column(table, "surfaceDice")[0] > voxel.pairs[0]["surfaceDice"] + 0.01
    assert "meanDirected" in table.GetColumnDescription("msdMm") and "surfels" in table.GetColumnDescription("msdMm")
    assert "surfels" in table.GetColumnDescription("surfaceDice")
    assert "surfels" not in table.GetColumnDescription("dice")
    study = dict(zip(column(result["studyTable"], "quantity"), column(result["studyTable"], "value"), strict=True))
    assert study["surfelConvention"] == 1.0
    assert scene.GetFirstNodeByName("Surface Dice (2 mm, surfels)") is not None  # the chart's series says it too
    plain = runDelineationReview(scene, observers, "GTV", referenceMethod="majority")
    study = dict(zip(column(plain["studyTable"], "quantity"), column(plain["studyTable"], "value"), strict=True))
    assert study["surfelConvention"] == 0.0
    assert column(plain["metricsTable"], "msdMm") == [pytest.approx(voxel.pairs[0]["msdMm"], rel=1e-9)]
    assert "pooled" in plain["metricsTable"].GetColumnDescription("msdMm")


def test_no_matching_segment_names_the_segmentation_and_its_segments(scene):
    geometry = ImageGeometry((12, 12, 12), (2.0, 2.0, 2.0))
    mask = np.zeros(geometry.shape, bool)
    mask[3:8, 3:8, 3:8] = True
    nodes = [segmentationNodeFromMasks(scene, {"GTV": mask, "CTV": mask}, geometry, name="Dr A"),
             segmentationNodeFromMasks(scene, {"CTV": mask, "Bladder": mask}, geometry, name="Dr B")]
    count = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=r"'Dr B' has no segment matching 'GTV'.*CTV, Bladder"):
        runDelineationReview(scene, nodes, "GTV")
    with pytest.raises(InputError, match="more than once"):
        runDelineationReview(scene, [nodes[0], nodes[0]], "GTV")
    with pytest.raises(InputError, match="not modified"):
        runDelineationReview(scene, nodes, "CTV", consensusSegmentation=nodes[1])
    assert scene.GetNumberOfNodes() == count


def test_duplicate_node_names_are_made_unique_and_logged(scene, caplog):
    geometry = ImageGeometry((16, 16, 16), (1.5, 1.5, 2.0))
    a = np.zeros(geometry.shape, bool)
    a[4:10, 4:10, 4:10] = True
    nodes = [segmentationNodeFromMasks(scene, {"GTV": m}, geometry, name="RTSTRUCT") for m in (a, np.roll(a, 1, 0))]
    with caplog.at_level("WARNING"):
        result = runDelineationReview(scene, nodes, "GTV")
    assert result["observerNames"] == ["RTSTRUCT", "RTSTRUCT (2)"]
    assert column(result["observerTable"], "nodeId") == [n.GetID() for n in nodes]
    assert any("RTSTRUCT (2)" in r.getMessage() for r in caplog.records)


def test_failure_or_cancel_mid_run_leaves_the_scene_as_it_was(demoScene, demoObservers, monkeypatch):
    scene, ctNode, nodes = demoScene
    geometry = demoObservers[1]
    before = inputState(nodes, geometry)
    count = scene.GetNumberOfNodes()

    def broken(*args, **kwargs):
        raise RuntimeError("forced failure")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "_fillColorTable", broken)  # after tables and segmentations were made
        with pytest.raises(RuntimeError, match="forced failure"):
            runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode)
    assert scene.GetNumberOfNodes() == count

    def cancelAt(stop):
        def progress(fraction, message=""):
            if fraction >= stop:
                raise ProcessingCancelled()
        return progress

    for stop in (0.5, 0.9):  # inside analyzeObservers; just before the output nodes are written
        with pytest.raises(ProcessingCancelled):
            runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode, progress=cancelAt(stop))
        assert scene.GetNumberOfNodes() == count
    assertSameState(before, inputState(nodes, geometry))

    # a cancel while the output nodes are written is too late: they are completed, not left half of this run and
    # half of the last (an independent review: tables of the new run beside the last run's agreement map and chart,
    # while the module said "nothing was added")
    runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode)
    late = runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode, referenceMethod="majority",
                                progress=cancelAt(0.92))
    assert late["diceChart"].GetName() == "GTV: agreement with majority vote"
    assert late["observerTable"].GetName() == "GTV observers vs majority vote"
    expected = analyzeObservers(demoObservers[2], geometry, reference="majority")
    np.testing.assert_array_equal(arrayAndGeometryFromVolumeNode(late["agreementMap"])[0], expected.agreementMapFull())

    # after a good run, a failing re-run removes nothing of the earlier outputs and adds nothing
    runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode)
    count = scene.GetNumberOfNodes()
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "_fillColorTable", broken)
        with pytest.raises(RuntimeError):
            runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode)
    assert scene.GetNumberOfNodes() == count
    assertSameState(before, inputState(nodes, geometry))


def test_border_marks_table_flags_the_observer_who_missed_the_extension(demoScene, demoObservers, demoCase):
    scene, ctNode, nodes = demoScene
    _, geometry, masks, _, missedObserver = demoObservers
    transform = sitk.ReadTransform(str(demoCase.paths["mriRegistration"]))
    marks = mapMarks(readMarks(demoCase.paths["marksJson"]), transform)
    pointList, lines = markupsNodesFromMarkSet(scene, marks, "Radiologist")
    # the surface-Dice tolerance (2 mm) is not the marks' (3 mm by default, as the iov command and studies use)
    result = runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode, borderMarks=[pointList, *lines],
                                  toleranceMm=2.0)
    table = result["borderMarksTable"]
    assert table is not None and table.GetTable().GetNumberOfRows() == len(marks) * len(masks)
    expected = evaluateMarks(marks, masks, geometry, 3.0)
    atTwo = evaluateMarks(marks, masks, geometry, 2.0)
    assert [m.honoured for m in expected.results] != [m.honoured for m in atTwo.results]  # the tolerance matters
    observers, distances = column(table, "observer"), column(table, "signedDistanceMm")
    for row, mark in enumerate(expected.results):
        assert observers[row] == mark.observer
        assert same(distances[row], mark.signedDistanceMm, 1e-6)
        assert column(table, "honoured")[row] == float(mark.honoured)
    flags = column(table, "flag")
    clear = {o for o, f in zip(observers, flags, strict=True) if f == "CLEAR MISS"}
    assert clear == {missedObserver}
    missed = column(table, "missed")
    honoured = column(table, "honoured")
    assert all(m == 1.0 - h for m, h in zip(missed, honoured, strict=True))
    assert f"{missedObserver} flagged" in result["summary"]
    # GTVs reaching beyond marks by more than the tolerance: said in the summary, not only in the table's rows (a
    # review); at 2 mm several observers' GTVs do
    strict = runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode, borderMarks=[pointList, *lines],
                                  marksToleranceMm=2.0)
    beyond = [s for s in evaluateMarks(marks, masks, geometry, 2.0).summaries if s.nOverContoured]
    assert len(beyond) >= 2
    assert pipeline._roundedUp(3.004) == "3.01" and pipeline._roundedUp(3.0) == "3.00"  # beyond 3 never reads 3.00
    assert ("GTV beyond the marked border by more than 2 mm: " + ", ".join(
        f"{s.observer} ({s.nOverContoured} mark(s), up to {pipeline._roundedUp(s.worstOverContourMm)} mm)"
        for s in beyond)
        ) in strict["summary"]
    # every row carries its mark tip in scene RAS: the markups control point the radiologist placed (the point
    # itself, or the tip = second point of an arrow line), so the module can centre the views on it
    tips = {}
    for i in range(pointList.GetNumberOfControlPoints()):
        tips[pointList.GetNthControlPointLabel(i)] = pointList.GetNthControlPointPositionWorld(i)
    for line in lines:
        tips[line.GetName()] = line.GetNthControlPointPositionWorld(1)
    labels = column(table, "mark")
    assert set(labels) == set(tips) and len(tips) == len(marks)
    positions = np.array([column(table, f"ras{axis}") for axis in "RAS"]).T
    for label, position in zip(labels, positions, strict=True):
        assert np.allclose(position, tips[label], atol=1e-6)
    assert table.GetColumnUnitLabel("rasR") == "mm"
    assert np.allclose(pipeline.borderMarkRas(table, 0), tips[labels[0]], atol=1e-6)
    assert pipeline.borderMarkRas(table, len(labels)) is None and pipeline.borderMarkRas(None, 0) is None
    assert pipeline.borderMarkRas(result["metricsTable"], 0) is None  # a table without positions
    # Slicer's table view shows the column names as its header, so its rows are the table's (a static review: with
    # the names shown as a first row, a click on a mark centred the views on the next one); a table made elsewhere,
    # names in its first row, is read one row up
    assert all(node.GetUseColumnTitleAsColumnHeader() for node in (table, result["metricsTable"]))
    assert pipeline.tableRowOfViewRow(table, 2) == 2
    table.SetUseColumnTitleAsColumnHeader(False)
    assert pipeline.tableRowOfViewRow(table, 2) == 1 and pipeline.tableRowOfViewRow(table, 0) is None
    table.SetUseColumnTitleAsColumnHeader(True)

    # a later run without marks does not leave these verdicts beside its tables (an independent review)
    again = runDelineationReview(scene, nodes[:3], "GTV", referenceVolume=ctNode)
    assert again["borderMarksTable"] is table and table.GetName() == "GTV border marks (none checked)"
    assert column(table, "note") == [pipeline._NO_MARKS_NOTE] and table.GetTable().GetNumberOfColumns() == 1


def _loadMarkupsFile(scene, path, folder):
    """The markups of a ``.mrk.json`` loaded by Slicer's own reader, one node per markup (what "Add data" gives)."""
    document = json.loads(path.read_text())
    nodes = []
    for number, markup in enumerate(document["markups"]):
        single = folder / f"markup_{number}.mrk.json"
        single.write_text(json.dumps({"@schema": document["@schema"], "markups": [markup]}))
        kind = "vtkMRMLMarkupsFiducialNode" if markup["type"] == "Fiducial" else "vtkMRMLMarkupsLineNode"
        node = scene.AddNewNodeByClass(kind, f"marks {number}")
        storage = scene.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
        storage.SetFileName(str(single))
        assert storage.ReadData(node) == 1
        nodes.append(node)
    return nodes


def test_marks_placed_on_the_mri_are_checked_where_the_views_show_them(demoScene, demoObservers, demoCase,
                                                                        tmp_path):
    """A review: the demo's marks file (placed on the MRI), loaded with Slicer's reader, was checked as planning-CT
    points, 29-31 mm from its place: every observer flagged, and nothing said. The file says frame=MRI: under no
    transform it is refused; under the MRI's registration (loaded by Slicer's transform reader) the marks are
    checked where the views show them, as the iov command maps them."""
    scene, ctNode, nodes = demoScene
    _, geometry, masks, _, missedObserver = demoObservers
    marksNodes = _loadMarkupsFile(scene, demoCase.paths["marksJson"], tmp_path)
    count = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=r"the border marks 'RadiologistMarks', 'Arrow: sacrum S3 involved', 'Arrow: "
                                         r"extends into fibrosis' say they were placed on the MRI \(frame=MRI\) and "
                                         r"are under no transform: their coordinates are taken as the MRI's.*If they "
                                         r"were hardened onto the CT already, their control point descriptions still "
                                         r"say frame=MRI: change it to frame=CT"):
        runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode, borderMarks=marksNodes)
    assert scene.GetNumberOfNodes() == count
    registration = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "MRI registration")
    storage = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    storage.SetFileName(str(demoCase.paths["mriRegistration"]))
    assert storage.ReadData(registration) == 1
    for node in marksNodes:
        node.SetAndObserveTransformNodeID(registration.GetID())
    result = runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode, borderMarks=marksNodes)
    expected = evaluateMarks(mapMarks(readMarks(demoCase.paths["marksJson"]),
                                      sitk.ReadTransform(str(demoCase.paths["mriRegistration"]))), masks, geometry, 3.0)
    got = result["marksEvaluation"]
    assert got.flaggedObservers == expected.flaggedObservers == (missedObserver,)
    assert got.markSet.frame == "CT" and "(through MRI registration)" in got.markSet.source
    tips = {m.label: m.tipLps for m in got.markSet.marks}
    assert len(tips) == len(expected.markSet) == 7
    assert all(np.allclose(tips[m.label], m.tipLps, atol=1e-6) for m in expected.markSet.marks)
    assert np.allclose([r.signedDistanceMm for r in got.results], [r.signedDistanceMm for r in expected.results],
                       atol=1e-6, equal_nan=True)
    # the marks' coordinates themselves are unchanged (not hardened): the node still shows them on the MRI
    assert marksNodes[0].GetParentTransformNode() is registration
    # marks that say they were placed on the CT, under a transform: checked where the views show them, and said (a
    # verification review: moved 31 mm without a word)
    onCt, lines = markupsNodesFromMarkSet(scene, expected.markSet, "CT marks")
    onCt.SetAndObserveTransformNodeID(registration.GetID())
    moved = runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode, borderMarks=[onCt])
    notes = [n for n in moved["marksEvaluation"].notes if "'CT marks' say they were placed on the CT (frame=CT) but "
             "are under the transform 'MRI registration': checked where the views show them, up to" in n]
    assert len(notes) == 1 and notes[0] in moved["summary"]
    assert not [n for n in result["marksEvaluation"].notes if "say they were placed on the CT" in n]
    for node in (onCt, *lines):
        scene.RemoveNode(node)


def test_export_and_largest_disagreement_panel(demoScene, demoObservers, tmp_path, artifactsDir):
    scene, ctNode, nodes = demoScene
    _, geometry, masks, _, _ = demoObservers
    result = runDelineationReview(scene, nodes, "GTV", referenceVolume=ctNode)
    written = exportTables(result, tmp_path / "tables")
    assert {p.name for p in written} >= {"metricsTable.csv", "metricsTable.json", "observerTable.csv",
                                         "studyTable.json", "iovReport.json"}
    with (tmp_path / "tables" / "metricsTable.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [float(r["dice"]) for r in rows] == column(result["metricsTable"], "dice")
    document = json.loads((tmp_path / "tables" / "observerTable.json").read_text())
    assert [r["observer"] for r in document["rows"]] == list(masks)
    assert {c["name"]: c["unit"] for c in document["columns"]}["hdPercentileMm"] == "mm"

    # the chosen slice is the one with the most uncertainty-band voxels (brute force on the full grid)
    counts = result["iovResult"].agreementMapFull()
    band = ((counts > 0) & (counts < len(masks))).sum(axis=(1, 2))
    index, bandVoxels, _ = largestDisagreementSlice(result["iovResult"], "Axial")
    assert index == int(np.argmax(band)) and bandVoxels == int(band.max()) > 0

    png = renderLargestDisagreementPanel(scene, result, ctNode, artifactsDir / "delineation_disagreement.png",
                                         sizePx=(480, 480))
    rgb = readPng(png)[..., :3].astype(int)
    assert rgb.shape == (480, 480, 3)
    outlines = result["observerOutlines"].GetSegmentation()
    below = rgb[int(0.4 * 480):]  # under the legend box (top right, 7 entries: < 40 % of the height)
    for i in range(outlines.GetNumberOfSegments()):  # every observer's outline is drawn in its colour
        colour = np.round(255 * np.array(outlines.GetNthSegment(i).GetColor())).astype(int)
        assert (np.abs(below - colour).max(axis=2) <= 3).sum() > 20, outlines.GetNthSegment(i).GetName()
    magenta = (below[..., 0] > below[..., 1] + 60) & (below[..., 2] > below[..., 1] + 60)
    assert magenta.sum() > 100  # the agreement map shows


def test_closed_surface_observer_is_rasterised_on_a_copy(scene):
    """An observer loaded from an RTSTRUCT in Slicer has a closed-surface source: the review rasterises a copy of
    the chosen segment and leaves the node as it was (no labelmap added, source unchanged)."""
    geometry = ImageGeometry((40, 40, 30), (1.0, 1.0, 1.5), (-20.0, -20.0, -22.0))
    k, j, i = np.indices(geometry.shape)
    ball = ((i - 20) ** 2 + (j - 20) ** 2 + ((k - 15) * 1.5) ** 2) <= 10.0 ** 2
    reference = volumeNodeFromArray(scene, ball.astype(np.int16), geometry, "Reference")
    labelmapObserver = segmentationNodeFromMasks(scene, {"GTV": ball}, geometry, name="labelmap observer")
    surfaceObserver = segmentationNodeFromMasks(scene, {"GTV": ball, "Body": ball}, geometry,
                                                name="surface observer")
    surfaceObserver.CreateClosedSurfaceRepresentation()
    segmentation = surfaceObserver.GetSegmentation()
    closedSurface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    labelmap = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    segmentation.SetSourceRepresentationName(closedSurface)
    segmentation.RemoveRepresentation(labelmap)
    assert not segmentation.ContainsRepresentation(labelmap)
    result = runDelineationReview(scene, [labelmapObserver, surfaceObserver], "GTV", referenceVolume=reference)
    assert not segmentation.ContainsRepresentation(labelmap)
    assert segmentation.GetSourceRepresentationName() == closedSurface
    assert segmentation.GetNumberOfSegments() == 2
    # the rasterised surface is the ball again, up to voxels on its boundary
    assert column(result["metricsTable"], "dice")[0] > 0.95


def test_an_oblique_first_observer_grid_is_extended_to_a_padded_second_observer(scene):
    """A verification review: the grid extension read each segment's axis-aligned RAS bounds (and a labelmap's
    whole, possibly padded, extent), which always overshot an oblique grid: the extension went over its limit and
    the second observer's GTV was cut by 85 % (Dice 0.35 for 0.18). Now the box of the voxels holding the label,
    taken into the grid's index space: the GTV whole, its volume as delineated."""
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    oblique = ImageGeometry((60, 60, 22), (1.0, 1.0, 2.0), (-30 * c + 30 * s, -30 * s - 30 * c, -40.0),
                            (c, -s, 0, s, c, 0, 0, 0, 1))
    k, j, i = np.indices(oblique.shape)
    lps = oblique.indexToLps(np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float))
    first = ((lps ** 2).sum(1) <= 100).reshape(oblique.shape)  # a 10 mm sphere at the origin, z below 4 mm
    padded = ImageGeometry((60, 60, 40), (1.0, 1.0, 2.0), (-30.0, -30.0, -40.0))  # the whole image as extent
    k, j, i = np.indices(padded.shape)
    second = (i - 30) ** 2 + (j - 30) ** 2 + (2 * (k - 24)) ** 2 <= 100  # 8 mm higher: half above the first's grid
    nodes = [segmentationNodeFromMasks(scene, {"GTV": first}, oblique, name="A oblique"),
             segmentationNodeFromMasks(scene, {"GTV": second}, padded, name="B padded")]
    result = runDelineationReview(scene, nodes, "GTV")
    assert not result["iovResult"].notes or "outside the common grid" not in " ".join(result["iovResult"].notes)
    volumes = column(result["observerTable"], "volumeCc")
    # resampled by nearest neighbour onto the rotated grid: within 3 % of the volumes as delineated
    assert volumes[0] == pytest.approx(np.count_nonzero(first) * oblique.voxelVolumeCc, rel=1e-9)
    assert volumes[1] == pytest.approx(np.count_nonzero(second) * padded.voxelVolumeCc, rel=0.03)
    assert result["geometry"].sizeXyz[2] > oblique.sizeXyz[2]  # extended upwards
