"""Delineation Review: interobserver variation of one structure across observers, in 3D Slicer.

Thin Slicer module (Module, parameter node, Widget, Logic facade, self-test). The metrics (Dice, robust Hausdorff,
surface Dice, STAPLE/majority consensus, border-mark check) live in ``DelineationReviewLib.core``; node conversion
in ``DelineationReviewLib.mrml`` and ``ReirradiationDoseLib.mrml``.
"""

import importlib
import logging
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLMarkupsNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DelineationReviewLib.core.marks import DEFAULT_TOLERANCE_MM as DEFAULT_MARKS_TOLERANCE_MM
from DelineationReviewLib.core.metrics import DEFAULT_SURFACE_DICE_TOLERANCE_MM
from ReirradiationDoseLib.core.errors import ProcessingCancelled

logger = logging.getLogger(__name__)

REFERENCE_METHODS = ["staple", "majority", "observer"]
HAUSDORFF_CONVENTIONS = ["maxDirected", "meanDirected", "pooled"]
MSD_CONVENTIONS = ["pooled", "meanDirected"]
SURFACE_CONVENTIONS = ["voxel", "surfel"]


#
# DelineationReview
#
class DelineationReview(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Delineation Review")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
        self.parent.dependencies = []
        self.parent.contributors = ["The Reirradiation contributors"]
        self.parent.helpText = _("""
Interobserver variation of a target delineation: pick one segmentation per observer and the structure name; the
module compares every pair of observers and each observer with a consensus (STAPLE or majority vote, or a reference
observer): Dice, robust Hausdorff distance (percentile and convention stated), mean surface distance, surface Dice
at a tolerance, volumes. Surface distances are measured between the boundary voxels' centres, or, under "Surface
elements: surfel", on Nikolov et al.'s area-weighted surface elements (as DeepMind's surface-distance and most
published surface-Dice values). Optionally checks the delineations against the radiologist's border marks.
""")
        self.parent.acknowledgementText = _("""
Built on 3D Slicer. STAPLE: Warfield et al., IEEE TMI 2004. Surface Dice: Nikolov et al., JMIR 2021.
""")


#
# Parameter node
#
@parameterNodeWrapper
class DelineationReviewParameterNode:
    """The module's state. ``observerSegmentations`` and ``borderMarks`` are bound to their checkable combo boxes in
    code (the .ui has no SlicerParameterName for them); everything else through the ``SlicerParameterName`` property
    in the .ui. ``borderMarks``: point lists and lines (arrows), checked together (one node of either kind left the
    arrows out: an independent review)."""

    observerSegmentations: list[vtkMRMLSegmentationNode]
    structureName: str = "GTV"
    referenceMethod: Annotated[str, Choice(REFERENCE_METHODS)] = "staple"
    referenceObserver: vtkMRMLSegmentationNode
    referenceVolume: vtkMRMLScalarVolumeNode
    borderMarks: list[vtkMRMLMarkupsNode]
    toleranceMm: Annotated[float, WithinRange(0.0, 20.0)] = DEFAULT_SURFACE_DICE_TOLERANCE_MM
    marksToleranceMm: Annotated[float, WithinRange(0.0, 20.0)] = DEFAULT_MARKS_TOLERANCE_MM
    hausdorffPercentile: Annotated[float, WithinRange(50.0, 100.0)] = 95.0
    hausdorffConvention: Annotated[str, Choice(HAUSDORFF_CONVENTIONS)] = "maxDirected"
    msdConvention: Annotated[str, Choice(MSD_CONVENTIONS)] = "pooled"
    surfaceConvention: Annotated[str, Choice(SURFACE_CONVENTIONS)] = "voxel"
    metricsTable: vtkMRMLTableNode
    consensusSegmentation: vtkMRMLSegmentationNode
    borderMarksTable: vtkMRMLTableNode


#
# DelineationReviewWidget
#
class DelineationReviewWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingObservers = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DelineationReview.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = DelineationReviewLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.observerSegmentationsSelector.connect("checkedNodesChanged()", self.onObserversChecked)
        self.ui.borderMarksSelector.connect("checkedNodesChanged()", self.onMarksChecked)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.borderMarksTableView.connect("clicked(QModelIndex)", self.onBorderMarkClicked)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: DelineationReviewParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def onObserversChecked(self) -> None:
        if self._parameterNode and not self._updatingObservers:
            self._parameterNode.observerSegmentations = list(self.ui.observerSegmentationsSelector.checkedNodes())

    def onMarksChecked(self) -> None:
        if self._parameterNode and not self._updatingObservers:
            self._parameterNode.borderMarks = list(self.ui.borderMarksSelector.checkedNodes())

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if not p:
            return
        # parameter node -> checkable combo boxes (the widgets bound by hand)
        self._updatingObservers = True
        try:
            for selector, chosen in ((self.ui.observerSegmentationsSelector, p.observerSegmentations),
                                     (self.ui.borderMarksSelector, p.borderMarks)):
                wanted = {node.GetID() for node in chosen if node}
                for index in range(selector.nodeCount()):
                    node = selector.nodeFromIndex(index)
                    selector.setCheckState(node, 2 if node.GetID() in wanted else 0)  # Qt.Checked / Qt.Unchecked
        finally:
            self._updatingObservers = False
        shown, wanted = self.ui.borderMarksTableView.mrmlTableNode(), p.borderMarksTable
        if (shown.GetID() if shown else None) != (wanted.GetID() if wanted else None):
            self.ui.borderMarksTableView.setMRMLTableNode(wanted)
        self.ui.referenceObserverSelector.enabled = p.referenceMethod == "observer"
        count = len([n for n in p.observerSegmentations if n])
        ready = count >= 2 and bool(p.structureName.strip()) and \
            (p.referenceMethod != "observer" or p.referenceObserver is not None)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Compare the delineations") if ready else \
            _("Check at least two observers' segmentations and name the structure")

    def onApplyButton(self) -> None:
        p = self._parameterNode
        # application-modal: the progress callback processes events (a static review: not modal)
        dialog = slicer.util.createProgressDialog(windowTitle=_("Delineation review"), labelText=_("Starting"),
                                                  maximum=100, autoClose=False, windowModality=qt.Qt.ApplicationModal)
        dialog.setCancelButtonText(_("Cancel"))

        def progress(fraction: float, message: str = "") -> None:
            dialog.value = int(round(100 * min(max(fraction, 0.0), 1.0)))
            if message:
                dialog.labelText = message
            slicer.app.processEvents()
            if dialog.wasCanceled:
                raise ProcessingCancelled()

        try:
            with slicer.util.tryWithErrorDisplay(_("Delineation review failed."), waitCursor=True):
                try:
                    result = self.logic.process(
                        observerSegmentations=list(p.observerSegmentations), structureName=p.structureName,
                        referenceMethod=p.referenceMethod, referenceObserver=p.referenceObserver,
                        referenceVolume=p.referenceVolume, toleranceMm=p.toleranceMm,
                        borderMarks=[node for node in p.borderMarks if node] or None,
                        hausdorffPercentile=p.hausdorffPercentile, hausdorffConvention=p.hausdorffConvention,
                        metricsTable=p.metricsTable, consensusSegmentation=p.consensusSegmentation,
                        borderMarksTable=p.borderMarksTable, progress=progress, marksToleranceMm=p.marksToleranceMm,
                        msdConvention=p.msdConvention, surfaceConvention=p.surfaceConvention)
                except ProcessingCancelled:
                    self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
                    return
                for key in ("metricsTable", "consensusSegmentation", "borderMarksTable"):
                    if result.get(key) is not None:
                        setattr(p, key, result[key])
                if result.get("agreementMap") is not None:  # shown, not left to be found in the data tree
                    pipeline = importlib.import_module("DelineationReviewLib.mrml.pipeline")
                    slicer.util.setSliceViewerLayers(label=result["agreementMap"],
                                                     labelOpacity=pipeline.AGREEMENT_LABEL_OPACITY)
                self.ui.statusLabel.text = result.get("summary", _("Done."))
        finally:
            dialog.close()
            dialog.deleteLater()

    def onBorderMarkClicked(self, index) -> None:
        """Centre the slice views on the clicked border mark (columns rasR/rasA/rasS of the table)."""
        try:
            view = self.ui.borderMarksTableView
            # the source model's row, less the names row when the view shows one (qMRMLTableModel's
            # mrmlTableRowIndex is neither a slot nor Q_INVOKABLE, so Python cannot call it)
            pipeline = importlib.import_module("DelineationReviewLib.mrml.pipeline")
            row = pipeline.tableRowOfViewRow(view.mrmlTableNode(),
                                             view.sortFilterProxyModel().mapToSource(index).row())
            position = None if row is None else pipeline.borderMarkRas(view.mrmlTableNode(), row)
            if position is not None:
                slicer.modules.markups.logic().JumpSlicesToLocation(*position, True)
        except Exception as error:  # navigation is a convenience: never let it raise into the Qt event loop
            logger.exception("Could not centre the views on the border mark")
            self.ui.statusLabel.text = _("Could not centre the views on that mark: {error}").format(error=error)

    def onReload(self) -> None:
        """Reload the Lib packages (core first, then mrml) before the module file itself."""
        prefixes = ("ReirradiationDoseLib.", "DelineationReviewLib.")
        names = sorted((n for n in list(sys.modules) if n.startswith(prefixes)),
                       key=lambda n: (n.startswith("DelineationReviewLib"),
                                      0 if ".core" in n else 1 if ".mrml" in n else 2, n.count("."), n))
        for name in names:
            module = sys.modules.get(name)
            if module is not None:
                importlib.reload(module)
        ScriptedLoadableModuleWidget.onReload(self)


#
# DelineationReviewLogic
#
class DelineationReviewLogic(ScriptedLoadableModuleLogic):
    """Facade: explicit arguments in, nodes out; no GUI."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return DelineationReviewParameterNode(super().getParameterNode())

    def process(self, observerSegmentations: list, structureName: str, referenceMethod: str = "staple",
                referenceObserver=None, referenceVolume=None, borderMarks=None,
                toleranceMm: float = DEFAULT_SURFACE_DICE_TOLERANCE_MM,
                hausdorffPercentile: float = 95.0, hausdorffConvention: str = "maxDirected", metricsTable=None,
                consensusSegmentation=None, borderMarksTable=None, progress=None,
                marksToleranceMm: float = DEFAULT_MARKS_TOLERANCE_MM, msdConvention: str = "pooled",
                surfaceConvention: str = "voxel") -> dict:
        """Compare one structure across observers' segmentation nodes.

        Delegates to ``DelineationReviewLib.mrml.pipeline.runDelineationReview`` (same keyword arguments plus
        ``scene``), which extracts the structure from each node (resampled explicitly onto ``referenceVolume``'s
        grid, or the first observer's), runs ``DelineationReviewLib.core.iov.analyzeObservers`` and fills or creates
        the output nodes. Returns a dict of output nodes (``metricsTable``, ``consensusSegmentation``,
        ``borderMarksTable``) and a ``summary`` sentence. Raises ValueError for bad input, ProcessingCancelled when
        cancelled.
        """
        observers = [node for node in observerSegmentations if node is not None]
        if len(observers) < 2:
            raise ValueError(_("At least two observers' segmentations are needed."))
        if referenceMethod not in REFERENCE_METHODS:
            raise ValueError(f"unknown reference '{referenceMethod}' (use one of {', '.join(REFERENCE_METHODS)})")
        if referenceMethod == "observer" and referenceObserver is None:
            raise ValueError(_("Choose the reference observer, or use the STAPLE or majority consensus."))
        if hausdorffConvention not in HAUSDORFF_CONVENTIONS:
            raise ValueError(f"unknown Hausdorff convention '{hausdorffConvention}'")
        if msdConvention not in MSD_CONVENTIONS:
            raise ValueError(f"unknown mean-surface-distance convention '{msdConvention}'")
        if surfaceConvention not in SURFACE_CONVENTIONS:
            raise ValueError(f"unknown surface convention '{surfaceConvention}'")
        try:
            pipeline = importlib.import_module("DelineationReviewLib.mrml.pipeline")
        except ImportError as error:
            raise RuntimeError("The delineation review (DelineationReviewLib.mrml.pipeline) is not installed with "
                               "this extension.") from error
        logger.info("Delineation review of '%s': %d observers, reference %s, tolerance %.1f mm, HD%g",
                    structureName, len(observers), referenceMethod, toleranceMm, hausdorffPercentile)
        return pipeline.runDelineationReview(
            scene=observers[0].GetScene(), observerSegmentations=observers, structureName=structureName.strip(),
            referenceMethod=referenceMethod, referenceObserver=referenceObserver, referenceVolume=referenceVolume,
            borderMarks=borderMarks, toleranceMm=float(toleranceMm), hausdorffPercentile=float(hausdorffPercentile),
            hausdorffConvention=hausdorffConvention, metricsTable=metricsTable,
            consensusSegmentation=consensusSegmentation, borderMarksTable=borderMarksTable, progress=progress,
            marksToleranceMm=float(marksToleranceMm), msdConvention=msdConvention,
            surfaceConvention=surfaceConvention)


#
# DelineationReviewTest
#
class DelineationReviewTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: two observers' cubes offset by one voxel, Dice checked analytically."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_DelineationReview_twoCubes()

    def test_DelineationReview_twoCubes(self):
        import numpy as np

        from ReirradiationDoseLib.core.geometry import ImageGeometry
        from ReirradiationDoseLib.mrml.nodes import segmentationNodeFromMasks

        self.delayDisplay("Two 10-voxel cubes, one shifted by one voxel along x: Dice = 0.9")
        geometry = ImageGeometry((30, 30, 30), (1.0, 1.0, 1.0), (-15.0, -15.0, -15.0))
        a = np.zeros(geometry.shape, bool)
        a[10:20, 10:20, 10:20] = True
        b = np.roll(a, 1, axis=2)
        observers = [segmentationNodeFromMasks(slicer.mrmlScene, {"GTV": mask}, geometry, name=f"Observer {n}")
                     for n, mask in ((1, a), (2, b))]
        result = DelineationReviewLogic().process(observers, "GTV", referenceMethod="observer",
                                                  referenceObserver=observers[0])
        table = result["metricsTable"]
        self.assertIsNotNone(table)
        diceColumn = table.GetTable().GetColumnByName("dice")
        self.assertIsNotNone(diceColumn)
        values = [diceColumn.GetValue(i) for i in range(diceColumn.GetNumberOfTuples())]
        self.assertTrue(any(abs(float(v) - 0.9) < 1e-6 for v in values))
        self.delayDisplay("Dice 0.9: test passed")
