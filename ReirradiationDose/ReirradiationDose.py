"""Reirradiation Dose: cumulative EQD2 of a re-irradiation course and all prior courses, in 3D Slicer.

Thin Slicer module (Module, parameter node, Widget, Logic facade, self-test). The work is done in
``ReirradiationDoseLib``: ``core`` (numpy/SimpleITK only) and ``mrml`` (nodes in, nodes out).
"""

import importlib
import logging
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLLinearTransformNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
    vtkMRMLTransformNode,
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

from ReirradiationDoseLib.core.errors import ProcessingCancelled

logger = logging.getLogger(__name__)

PRIOR_COURSE_SLOTS = 3  # prior courses editable in the GUI; scripts may pass any number to Logic.process
RECOVERY_MODELS = ["none", "constant", "nieder-doi", "price"]
REGISTRATION_METHODS = ["deformable", "rigid", "rigid (MRI)", "affine (MRI)"]
REGISTRATION_SLOTS = ["Prior course 1", "Prior course 2", "Prior course 3", "none"]  # PRIOR_COURSE_SLOTS + none
CONSTRAINT_SETS = ["pelvic-reirradiation", "general"]  # core.constraints.SHIPPED_CONSTRAINT_SETS (a test checks)


#
# ReirradiationDose
#
class ReirradiationDose(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Reirradiation Dose")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
        self.parent.dependencies = []
        self.parent.contributors = ["The Reirradiation contributors"]
        self.parent.helpText = _("""
Cumulative dose for re-irradiation. Each course (the current plan and every prior course, mapped onto the current
planning CT through its registration) is converted to EQD2 voxel by voxel with the voxel's own dose per fraction
and the α/β of the tissue it lies in; prior courses may be discounted by a recovery model on organs at risk. The
composite EQD2, the α/β map, DVHs and cumulative organ constraints are produced as nodes.
Convert each course first, then sum: EQD2 = D (d + α/β) / (2 + α/β), d = D / n per voxel.
""")
        self.parent.acknowledgementText = _("""
Built on 3D Slicer and SlicerRT (dose volumes are tagged as SlicerRT dose volumes). Default α/β and recovery
models: Nieder et al. IJROBP 2006;66:1446; Doi et al. Strahlenther Onkol 2021; Price et al. Adv Radiat Oncol 2021.
Reporting follows the ESTRO-EORTC re-irradiation consensus (Andratschke et al., Lancet Oncol 2022).
""")


#
# Parameter node
#
@parameterNodeWrapper
class ReirradiationDoseParameterNode:
    """Everything the module needs; the single source of truth of the GUI.

    ``registration*``: the Registration section (moving volume and its structures, method, and the prior-course
    slot that receives the transform).

    Prior course n (1..PRIOR_COURSE_SLOTS) is ``priorDose<n>`` (physical dose), ``priorTransform<n>`` (maps the
    prior course onto the current CT; none = same frame), ``priorFractions<n>`` and ``priorMonthsBefore<n>`` (time
    between the end of that course and the start of the current one, for the recovery model) and ``priorLandmarks<n>``
    (point list on that course's CT, under its registration; with ``currentLandmarks`` on the current CT the
    registration is checked at the points of the same labels).
    """

    currentCt: vtkMRMLScalarVolumeNode
    currentMri: vtkMRMLScalarVolumeNode
    currentStructures: vtkMRMLSegmentationNode
    currentDose: vtkMRMLScalarVolumeNode
    currentFractions: Annotated[int, WithinRange(1, 100)] = 25
    currentFractionsPerDay: Annotated[int, WithinRange(1, 4)] = 1
    currentHoursBetweenFractions: Annotated[float, WithinRange(0.5, 12.0)] = 6.0
    currentLandmarks: vtkMRMLMarkupsFiducialNode

    registrationMoving: vtkMRMLScalarVolumeNode
    registrationMovingStructures: vtkMRMLSegmentationNode
    registrationInitialTransform: vtkMRMLLinearTransformNode
    registrationMethod: Annotated[str, Choice(REGISTRATION_METHODS)] = "deformable"
    registrationSlot: Annotated[str, Choice(REGISTRATION_SLOTS)] = "Prior course 1"

    priorDose1: vtkMRMLScalarVolumeNode
    priorTransform1: vtkMRMLTransformNode
    priorFractions1: Annotated[int, WithinRange(1, 100)] = 25
    priorLandmarks1: vtkMRMLMarkupsFiducialNode
    priorMonthsBefore1: Annotated[float, WithinRange(0.0, 600.0)] = 12.0
    priorDose2: vtkMRMLScalarVolumeNode
    priorTransform2: vtkMRMLTransformNode
    priorFractions2: Annotated[int, WithinRange(1, 100)] = 25
    priorLandmarks2: vtkMRMLMarkupsFiducialNode
    priorMonthsBefore2: Annotated[float, WithinRange(0.0, 600.0)] = 24.0
    priorDose3: vtkMRMLScalarVolumeNode
    priorTransform3: vtkMRMLTransformNode
    priorFractions3: Annotated[int, WithinRange(1, 100)] = 25
    priorLandmarks3: vtkMRMLMarkupsFiducialNode
    priorMonthsBefore3: Annotated[float, WithinRange(0.0, 600.0)] = 36.0

    tissueTable: vtkMRMLTableNode
    defaultAlphaBetaGy: Annotated[float, WithinRange(0.5, 20.0)] = 3.0
    recoveryModel: Annotated[str, Choice(RECOVERY_MODELS)] = "none"
    constantRecoveryPercent: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    # a QComboBox binds only a Choice-annotated str (Slicer's guiConnectors: without it connectGui raises and
    # binds no widget at all)
    constraintSetName: Annotated[str, Choice(CONSTRAINT_SETS)] = "pelvic-reirradiation"
    isodoseLevelsGy: str = "20, 40, 54"
    repairHalfTimeHours: Annotated[float, WithinRange(0.0, 24.0)] = 0.0  # 0: not given

    compositeEqd2: vtkMRMLScalarVolumeNode
    alphaBetaMap: vtkMRMLScalarVolumeNode
    dvhTable: vtkMRMLTableNode
    constraintTable: vtkMRMLTableNode
    showOverMri: bool = False
    colourWash: bool = False
    includeIdentity: bool = False
    keepPreviousResults: bool = False


def isodoseLevelsFromText(text: str) -> list[float]:
    """``"20, 40; 54"`` -> ``[20.0, 40.0, 54.0]``; raises ValueError with a readable message."""
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        levels = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"isodose levels must be numbers in Gy separated by commas, got '{text}'") from None
    if any(level <= 0 for level in levels):
        raise ValueError("isodose levels must be positive doses in Gy")
    return sorted(set(levels))


#
# ReirradiationDoseWidget
#
class ReirradiationDoseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ReirradiationDose.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = ReirradiationDoseLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.showOverMriCheckBox.connect("toggled(bool)", self._updateSliceLayers)
        self.ui.colourWashCheckBox.connect("toggled(bool)", self._updateSliceLayers)
        self.ui.importDicomButton.connect("clicked(bool)", self.onImportDicomButton)
        self.ui.registerButton.connect("clicked(bool)", self.onRegisterButton)
        self.ui.reviewRegistrationButton.connect("clicked(bool)", self.onReviewRegistrationButton)
        self.ui.propagateStructuresButton.connect("clicked(bool)", self.onPropagateStructuresButton)
        self.ui.saveOutputsButton.connect("clicked(bool)", self.onSaveOutputsButton)
        self._lastRegistration = None  # (transform node, moving volume, moving structures) of the last Register
        self._lastDoseResult = None  # the core result of the last Apply, for "Save"
        # a course's dose selected -> its fractions from the RTPLAN when the dose came from the DICOM database
        self._doseCourses = [
            (self.ui.currentDoseSelector, "currentFractions", self.ui.currentFractionsSourceLabel),
            (self.ui.priorDose1Selector, "priorFractions1", self.ui.priorFractions1SourceLabel),
            (self.ui.priorDose2Selector, "priorFractions2", self.ui.priorFractions2SourceLabel),
            (self.ui.priorDose3Selector, "priorFractions3", self.ui.priorFractions3SourceLabel),
        ]
        for selector, field, label in self._doseCourses:
            selector.connect("currentNodeChanged(vtkMRMLNode*)",
                             lambda node, s=selector, f=field, lb=label: self._onCourseDoseSelected(node, s, f, lb))
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._forgetLastResults()

    def _forgetLastResults(self) -> None:
        """The last registration and dose result belong to the scene that made them (a static review: "Save"
        after a scene close or a failed run wrote the previous patient's results)."""
        self._lastRegistration = None
        self._lastDoseResult = None
        self.ui.saveOutputsButton.enabled = False

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.currentCt:
            # the first image: not a label map or a dose (both are scalar volume nodes too; an API review)
            images = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                      if n.GetClassName() == "vtkMRMLScalarVolumeNode"
                      and n.GetAttribute("DicomRtImport.DoseVolume") != "1"]
            if images:
                self._parameterNode.currentCt = images[0]

    def setParameterNode(self, inputParameterNode: ReirradiationDoseParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets carry a SlicerParameterName property in the .ui: connectGui binds them both ways.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _onCourseDoseSelected(self, node, selector, fractionsField: str, sourceLabel) -> None:
        """Fill the course's fractions from its RTPLAN (dose from the DICOM database); refuse a BEAM or
        RELATIVE dose; otherwise leave the typed-in value and say so."""
        from ReirradiationDoseLib.mrml.dicomdatabase import DoseNotAPlanDose

        sourceLabel.text = ""
        sourceLabel.toolTip = ""
        if node is None or self._parameterNode is None:
            return
        # this slot runs before the parameter node wrapper's (connected first): a pick by the user is not yet in the
        # parameter, a refresh from the parameter node (entering the module, a scene load) already is. The pick is
        # stored first, since setting the fractions refreshes every widget from the parameter node and put the old
        # dose back in the combo (an API review); a refresh keeps the fractions a user may have typed in
        parameter = str(selector.property("SlicerParameterName") or "")
        fromParameterNode = bool(parameter) and getattr(self._parameterNode, parameter, None) is node
        if parameter and not fromParameterNode:
            setattr(self._parameterNode, parameter, node)
        try:
            info = self.logic.courseInfoFromDicomDatabase(node)
        except DoseNotAPlanDose as error:
            selector.setCurrentNode(None)
            # while the parameter node refreshes the GUI (entering the module, a scene load) the wrapper ignores the
            # combo's change: clear the parameter too, or Apply is enabled for a dose the combo no longer shows
            if parameter and getattr(self._parameterNode, parameter, None) is node:
                setattr(self._parameterNode, parameter, None)
            sourceLabel.text = _("Dose refused: not a whole-plan dose in Gy")
            sourceLabel.toolTip = str(error)
            slicer.util.errorDisplay(_("This dose cannot be used as a course dose.") + "\n\n" + str(error))
            return
        except ValueError as error:  # not from DICOM, plan missing, fractions not stated: typed in by hand
            sourceLabel.text = _("Fractions typed in (not read from an RTPLAN)")
            sourceLabel.toolTip = str(error)
            return
        try:
            if not fromParameterNode:
                setattr(self._parameterNode, fractionsField, info.fractions)
        except ValueError as error:  # outside the field's range
            sourceLabel.text = _("RTPLAN states {n} fractions: enter the value by hand").format(n=info.fractions)
            sourceLabel.toolTip = str(error)
            return
        sourceLabel.text = info.summary
        sourceLabel.toolTip = "\n".join((_("Read from {source}").format(source=info.fractionsSource),
                                         _("DoseSummationType {s}, DoseType {t}").format(s=info.doseSummationType,
                                                                                       t=info.doseType),
                                         *info.warnings))

    def onImportDicomButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("DICOM-RT folder to import"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Importing the DICOM folder failed."), waitCursor=True):
            loaded = self.logic.importDicomFolder(folder)
            self.ui.statusLabel.text = _("Loaded {n} node(s) from {folder}: select each course's dose.").format(
                n=len(loaded), folder=folder)

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p and p.currentCt and p.currentDose)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = (_("Compute the cumulative EQD2") if ready else
                                       _("Select the current planning CT and the current dose"))
        canRegister = bool(p and p.currentCt and p.registrationMoving and p.registrationMoving != p.currentCt)
        self.ui.registerButton.enabled = canRegister
        last = self._lastRegistration
        haveLast = bool(last and last[0].GetScene() is not None and last[1].GetScene() is not None)
        self.ui.reviewRegistrationButton.enabled = haveLast
        self.ui.propagateStructuresButton.enabled = bool(haveLast and self._structuresToCarry() is not None)

    def _structuresToCarry(self):
        """The moving structures selected now (also when picked after Register), else those registered with."""
        p, last = self._parameterNode, self._lastRegistration
        for node in ((p.registrationMovingStructures if p else None), (last[2] if last else None)):
            if node is not None and node.GetScene() is not None:
                return node
        return None

    @staticmethod
    def _progressDialog(title: str):
        """A modal progress dialog and the ``progress(fraction, message)`` callback that feeds it and raises
        ProcessingCancelled when its Cancel button was pressed."""
        # application-modal: the progress callback processes events, and the rest of the window must not start a
        # second run, switch modules or close the scene meanwhile (a static review: the dialog was not modal)
        dialog = slicer.util.createProgressDialog(windowTitle=title, labelText=_("Starting"), maximum=100,
                                                  autoClose=False, windowModality=qt.Qt.ApplicationModal)
        dialog.setCancelButtonText(_("Cancel"))

        def progress(fraction: float, message: str = "") -> None:
            dialog.value = int(round(100 * min(max(fraction, 0.0), 1.0)))
            if message:
                dialog.labelText = message
            slicer.app.processEvents()
            if dialog.wasCanceled:
                raise ProcessingCancelled()

        return dialog, progress

    def onRegisterButton(self) -> None:
        p = self._parameterNode
        dialog, progress = self._progressDialog(_("Registration"))
        try:
            with slicer.util.tryWithErrorDisplay(_("Registration failed."), waitCursor=True):
                try:
                    result = self.logic.register(p.currentCt, p.registrationMoving, p.registrationMethod,
                                                 fixedStructures=p.currentStructures,
                                                 movingStructures=p.registrationMovingStructures,
                                                 progress=progress,
                                                 initialTransform=p.registrationInitialTransform)
                except ProcessingCancelled:
                    self.ui.registrationStatusLabel.text = _("Cancelled: nothing was added to the scene.")
                    return
                node = result["transform"]
                if p.registrationSlot != "none":
                    setattr(p, f"priorTransform{REGISTRATION_SLOTS.index(p.registrationSlot) + 1}", node)
                # the structures registered with it: "Carry" takes these, not a selection changed since
                self._lastRegistration = (node, p.registrationMoving, p.registrationMovingStructures)
                self.ui.registrationStatusLabel.text = "\n".join([result["summary"], *result["warnings"]])
                self._checkCanApply()
        finally:
            dialog.close()
            dialog.deleteLater()

    def onReviewRegistrationButton(self) -> None:
        node, moving, _structures = self._lastRegistration
        with slicer.util.tryWithErrorDisplay(_("The review volumes could not be made."), waitCursor=True):
            made = self.logic.reviewRegistration(self._parameterNode.currentCt, moving, node)
            slicer.util.setSliceViewerLayers(background=made.get("checkerboard"), foreground=None, fit=True)
            self.ui.registrationStatusLabel.text = _("Review volumes: {names}").format(
                names=", ".join(n.GetName() for n in made.values()))

    def onPropagateStructuresButton(self) -> None:
        node, moving, registered = self._lastRegistration
        p = self._parameterNode
        structures = self._structuresToCarry()
        with slicer.util.tryWithErrorDisplay(_("The structures could not be carried over."), waitCursor=True):
            segmentation, warnings = self.logic.propagateStructures(structures, node, p.currentCt, moving)
            if registered is not None and structures is not registered:
                warnings = [_("carried through the registration of {moving}, which was made with {registered}: "
                              "check that {structures} were drawn on {moving}").format(
                    moving=moving.GetName(), registered=registered.GetName(), structures=structures.GetName()),
                    *warnings]
            self.ui.registrationStatusLabel.text = "\n".join(
                [_("Structures carried onto the current CT: {name}").format(name=segmentation.GetName()), *warnings])

    def onApplyButton(self) -> None:
        p = self._parameterNode
        self._lastDoseResult = None  # a failed run leaves nothing to save, not the run before it
        self.ui.saveOutputsButton.enabled = False
        dialog, progress = self._progressDialog(_("Reirradiation dose"))
        try:
            with slicer.util.tryWithErrorDisplay(_("Cumulative dose failed."), waitCursor=True):
                try:
                    result = self.logic.process(
                        currentCt=p.currentCt, currentDose=p.currentDose, currentFractions=p.currentFractions,
                        currentFractionsPerDay=p.currentFractionsPerDay,
                        currentHoursBetweenFractions=p.currentHoursBetweenFractions,
                        repairHalfTimeHours=p.repairHalfTimeHours or None,
                        structures=p.currentStructures, mri=p.currentMri,
                        priorCourses=self.logic.priorCoursesFromParameterNode(p),
                        tissueTable=p.tissueTable, defaultAlphaBetaGy=p.defaultAlphaBetaGy,
                        recoveryModel=p.recoveryModel, constantRecoveryPercent=p.constantRecoveryPercent,
                        constraintSetName=p.constraintSetName,
                        isodoseLevelsGy=isodoseLevelsFromText(p.isodoseLevelsGy),
                        keepPrevious=p.keepPreviousResults, progress=progress)
                except ProcessingCancelled:
                    self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
                    return
                self._showResult(result)
        finally:
            dialog.close()
            dialog.deleteLater()

    def onSaveOutputsButton(self) -> None:
        if self._lastDoseResult is None:
            return
        parent = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(),
                                                     _("Folder in which to save the report, RTDOSE and tables"))
        if not parent:
            return
        with slicer.util.tryWithErrorDisplay(_("Saving the outputs failed."), waitCursor=True):
            folder = self.logic.saveOutputs(self._lastDoseResult, parent,
                                            includeIdentity=self._parameterNode.includeIdentity)
            self.ui.statusLabel.text = _("Saved in {folder}: open report.html.").format(folder=folder)

    def _showResult(self, result: dict) -> None:
        p = self._parameterNode
        self._lastDoseResult = result.get("result")
        self.ui.saveOutputsButton.enabled = self._lastDoseResult is not None
        self.ui.saveOutputsButton.toolTip = _("Write the report, the composite as an RTDOSE, the maps and tables "
                                              "of this run into a new folder")
        for key in ("compositeEqd2", "alphaBetaMap", "dvhTable", "constraintTable"):
            if result.get(key) is not None:
                setattr(p, key, result[key])
        # the composite isodose models are shown as lines in the slice views (Visibility2D) over the background
        self._updateSliceLayers(fit=True)
        chart = result.get("dvhChart")
        if chart is not None:
            try:
                slicer.modules.plots.logic().ShowChartInLayout(chart)
            except Exception:  # the plot view is a convenience: it must never break Apply
                logger.exception("Could not show the DVH chart")
        # the warnings (unknown dose, fractions differing from the RTPLAN, a folding registration...) are shown, not
        # only logged: the composite must not be read without them
        self.ui.statusLabel.text = "\n".join([result.get("summary", _("Done.")), *result.get("warnings", [])])

    def _updateSliceLayers(self, _checked: bool = False, fit: bool = False) -> None:
        """Background: the current CT, or the MRI input when "Show over MRI" is ticked (and there is one).
        Foreground: the composite EQD2 at opacity 0.4 when "Colour wash" is ticked, otherwise none; label: where the
        dose is unknown, over the wash."""
        p = self._parameterNode
        if not p or not p.currentCt:
            return
        useMri = bool(self.ui.showOverMriCheckBox.checked and p.currentMri)
        background = p.currentMri if useMri else p.currentCt
        wash = p.compositeEqd2 if self.ui.colourWashCheckBox.checked else None
        # over the wash, where a course's dose is unknown: there the wash shows only the known courses' sum
        dosescene = importlib.import_module("ReirradiationDoseLib.mrml.dosescene")
        unknown = dosescene.outputNode(slicer.mrmlScene, "unknown") if wash is not None else None
        label = {"label": unknown, "labelOpacity": dosescene.UNKNOWN_DOSE_LABEL_OPACITY} if unknown else {}
        slicer.util.setSliceViewerLayers(background=background, foreground=wash,  # a user's label layer kept
                                         foregroundOpacity=0.4 if wash is not None else 0.0, fit=fit, **label)

    def onReload(self) -> None:
        """Reload the Lib packages (core first, then mrml) before the module file itself."""
        packagePrefix = "ReirradiationDoseLib."
        names = sorted((n for n in list(sys.modules) if n.startswith(packagePrefix)),
                       key=lambda n: (0 if ".core" in n else 1 if ".mrml" in n else 2, n.count("."), n))
        for name in names:
            module = sys.modules.get(name)
            if module is not None:
                importlib.reload(module)
        ScriptedLoadableModuleWidget.onReload(self)


#
# ReirradiationDoseLogic
#
class ReirradiationDoseLogic(ScriptedLoadableModuleLogic):
    """Facade over ReirradiationDoseLib: explicit arguments in, nodes out; no GUI."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return ReirradiationDoseParameterNode(super().getParameterNode())

    @staticmethod
    def priorCoursesFromParameterNode(parameterNode) -> list[dict]:
        """The filled prior-course slots as ``[{"name", "doseNode", "transformNode", "numberOfFractions",
        "monthsBefore"}]``, with ``"landmarks"`` (current CT's point list, the course CT's) when both are chosen."""
        courses = []
        for n in range(1, PRIOR_COURSE_SLOTS + 1):
            dose = getattr(parameterNode, f"priorDose{n}")
            if dose is None:
                continue
            course = {"name": f"Prior course {n}", "doseNode": dose,
                      "transformNode": getattr(parameterNode, f"priorTransform{n}"),
                      "numberOfFractions": int(getattr(parameterNode, f"priorFractions{n}")),
                      "monthsBefore": float(getattr(parameterNode, f"priorMonthsBefore{n}"))}
            landmarks = getattr(parameterNode, f"priorLandmarks{n}")
            if landmarks is not None and parameterNode.currentLandmarks is not None:
                course["landmarks"] = (parameterNode.currentLandmarks, landmarks)
            courses.append(course)
        return courses

    @staticmethod
    def courseInfoFromDicomDatabase(doseNode, database=None):
        """Fractions, prescription and DoseSummationType of a dose volume loaded from the DICOM database.

        Reads the node's original RTDOSE and its RTPLAN through ``database`` (default ``slicer.dicomDatabase``) with
        ``ReirradiationDoseLib.mrml.dicomdatabase.courseInfoFromDatabase``; returns its ``CourseDicomInfo``. Raises
        ``DoseNotAPlanDose`` (an InputError) for a RELATIVE or BEAM dose, InputError when the fractions
        cannot be read (they are then entered by hand).
        """
        from ReirradiationDoseLib.core.errors import InputError
        from ReirradiationDoseLib.mrml.dicomdatabase import courseInfoFromDatabase

        database = ReirradiationDoseLogic._openDicomDatabase(database)
        if database is None:
            raise InputError("the DICOM database is not open, so the dose's RTPLAN cannot be read; open the DICOM "
                             "module once, or enter the number of fractions by hand")
        return courseInfoFromDatabase(doseNode, database)

    @staticmethod
    def loadDicomRegistration(path: str, referenceVolumeNode=None, scene=None):
        """A DICOM REG file (spatial or deformable) as a transform node, read by this extension's reader rather than
        SlicerRT's plugin (directions as DICOM PS3.3 C.20.2.1.1 / C.20.3.1.1 define them; SlicerRT composes a
        Matrix Sequence in the opposite order). A deformable REG is sampled on ``referenceVolumeNode`` (the current
        CT). Place the prior volume and dose under the returned node. Returns ``(node, warnings)``."""
        from ReirradiationDoseLib.mrml.nodes import geometryFromVolumeNode
        from ReirradiationDoseLib.mrml.transforms import transformNodeFromDicomRegistration

        geometry = None if referenceVolumeNode is None else geometryFromVolumeNode(referenceVolumeNode)
        return transformNodeFromDicomRegistration(scene or slicer.mrmlScene, path, geometry)

    @staticmethod
    def register(fixedVolume, movingVolume, method: str = "deformable", fixedStructures=None,
                 movingStructures=None, outputTransform=None, progress=None, initialTransform=None) -> dict:
        """Register ``movingVolume`` (prior CT, or MRI with ``method="rigid (MRI)"`` / ``"affine (MRI)"``) onto
        ``fixedVolume`` (the current planning CT) with ``ReirradiationDoseLib.mrml.registration.registerVolumes``
        and place the moving volume (and its structures, when they are its own: under its hand alignment or drawn on
        its grid) under the transform node (the one an earlier registration of the same pair and method made,
        refilled, else a new one), so it is shown aligned. ``method``: one of ``REGISTRATION_METHODS``. Returns the
        dict of ``registerVolumes`` (``transform``, ``summary``, ``warnings``, ``quality``...); on failure or cancel
        nothing is added and the moving volume keeps its place.
        ``initialTransform``: a linear transform node where the registration starts (a manual pre-alignment);
        ``movingStructures``: organs that guide a deformable registration, and with ``fixedStructures`` the contour
        check of any registration."""
        from ReirradiationDoseLib.mrml.registration import earlierRegistration, placeUnderRegistration, registerVolumes

        if method not in REGISTRATION_METHODS:
            raise ValueError(f"unknown registration method '{method}' (use one of {', '.join(REGISTRATION_METHODS)})")
        if outputTransform is None:  # registering a pair again refills its node: one per pair, not one per click
            outputTransform = earlierRegistration(fixedVolume, movingVolume, method.split(" ")[0])
        result = registerVolumes(fixedVolume.GetScene(), fixedVolume, movingVolume, method.split(" ")[0],
                                 multimodal=method.endswith("(MRI)"), fixedStructures=fixedStructures,
                                 movingStructures=movingStructures, outputTransform=outputTransform,
                                 progress=progress, initialTransform=initialTransform)
        placeUnderRegistration(movingVolume, result["transform"], movingStructures, fixedStructures)
        return result

    @staticmethod
    def reviewRegistration(fixedVolume, movingVolume, transformNode) -> dict:
        """Warped moving volume, checkerboard, difference and (deformable) Jacobian determinant volumes
        (``ReirradiationDoseLib.mrml.registration.reviewVolumes``)."""
        from ReirradiationDoseLib.mrml.registration import reviewVolumes

        return reviewVolumes(fixedVolume.GetScene(), fixedVolume, movingVolume, transformNode)

    @staticmethod
    def propagateStructures(segmentationNode, transformNode, fixedVolume, movingVolume):
        """The moving CT's structures on the current CT; ``(segmentation node, warnings)``
        (``ReirradiationDoseLib.mrml.registration.propagateSegmentation``)."""
        from ReirradiationDoseLib.mrml.registration import propagateSegmentation

        return propagateSegmentation(fixedVolume.GetScene(), segmentationNode, transformNode, fixedVolume,
                                     movingVolume)

    @staticmethod
    def importDicomFolder(folder: str) -> list[str]:
        """Import ``folder`` into Slicer's DICOM database and load its series with the DICOM plugins.

        ``DICOMLib.DICOMUtils.importDicom`` indexes the files (links, no copy); ``DICOMUtils.loadSeriesByUID`` loads
        every series with the plugin of highest confidence: SlicerRT's ``DicomRtImportExportPlugin`` for RTDOSE,
        RTSTRUCT and RTPLAN (dose volumes tagged ``DicomRtImport.DoseVolume``), the scalar-volume plugin for CT/MR.
        Returns the IDs of the loaded nodes.
        """
        from DICOMLib import DICOMUtils

        if "DicomRtImportExportPlugin" not in getattr(slicer.modules, "dicomPlugins", {}):
            raise ValueError(_("The SlicerRT extension is not installed: RTDOSE, RTSTRUCT and RTPLAN cannot be "
                               "loaded. Install SlicerRT from the Extensions Manager."))
        database = ReirradiationDoseLogic._openDicomDatabase()
        if database is None:
            raise ValueError(_("The DICOM database is not open: open the DICOM module once to create it."))
        if not DICOMUtils.importDicom(folder, database):
            raise ValueError(f"the folder {folder} could not be imported into the DICOM database")
        files = slicer.util.getFilesInDirectory(folder)
        seriesUids = sorted(DICOMUtils.seriesUIDsForFiles(files))
        if not seriesUids:
            raise ValueError(f"no DICOM series found in {folder}")
        loaded = DICOMUtils.loadSeriesByUID(seriesUids)
        logger.info("Imported %s: %d series, %d node(s) loaded", folder, len(seriesUids), len(loaded))
        return list(loaded)

    def process(self, currentCt, currentDose, currentFractions: int, structures=None, mri=None,
                priorCourses: list[dict] | None = None, tissueTable=None, defaultAlphaBetaGy: float = 3.0,
                recoveryModel: str = "none", constantRecoveryPercent: float = 0.0,
                constraintSetName: str = "pelvic-reirradiation", isodoseLevelsGy: list[float] | None = None,
                keepPrevious: bool = False, progress=None, currentFractionsPerDay: int = 1,
                currentHoursBetweenFractions: float | None = None, repairHalfTimeHours: float | None = None) -> dict:
        """Compute the composite EQD2 of the current and prior courses on the current CT's grid.

        A current course given more than once a day (``currentFractionsPerDay`` > 1, ``currentHoursBetweenFractions``
        apart; a prior course's dict may carry ``fractionsPerDay`` and ``hoursBetweenFractions`` too) includes
        incomplete repair between the fractions of a day, with ``repairHalfTimeHours`` for every tissue.

        Delegates to ``ReirradiationDoseLib.mrml.pipeline.runDoseWorkflow`` (same keyword arguments, plus
        ``scene``), which maps each prior dose through its transform, converts every course to EQD2 per voxel,
        sums with recovery, and creates the output nodes: they replace the previous run's, or with ``keepPrevious``
        stand beside them (the previous run's renamed "(earlier run N)"). Returns a dict with the output nodes
        (``compositeEqd2``, ``alphaBetaMap``, ``dvhTable``, ``constraintTable``, ``isodoseModels``, ``dvhChart``) and a
        ``summary`` sentence. With Slicer's DICOM database open, each dose loaded from DICOM has its fractions
        checked against its RTPLAN (a different number is a warning; a BEAM or RELATIVE dose is refused).
        Raises ValueError (InputError) for bad input, ProcessingCancelled when cancelled;
        on failure nothing is left half-made in the scene.
        """
        if currentCt is None or currentDose is None:
            raise ValueError(_("The current planning CT and the current dose are required."))
        if recoveryModel not in RECOVERY_MODELS:
            raise ValueError(f"unknown recovery model '{recoveryModel}' (use one of {', '.join(RECOVERY_MODELS)})")
        try:
            pipeline = importlib.import_module("ReirradiationDoseLib.mrml.pipeline")
        except ImportError as error:
            raise RuntimeError("The dose workflow (ReirradiationDoseLib.mrml.pipeline) is not installed with "
                               "this extension.") from error
        logger.info("Cumulative dose: current %d fractions, %d prior course(s), recovery %s, constraints %s",
                    currentFractions, len(priorCourses or []), recoveryModel, constraintSetName)
        return pipeline.runDoseWorkflow(
            scene=currentCt.GetScene(), currentCt=currentCt, currentDose=currentDose,
            currentFractions=int(currentFractions), structures=structures, mri=mri,
            priorCourses=list(priorCourses or []), tissueTable=tissueTable,
            defaultAlphaBetaGy=float(defaultAlphaBetaGy), recoveryModel=recoveryModel,
            constantRecoveryPercent=float(constantRecoveryPercent), constraintSetName=constraintSetName,
            isodoseLevelsGy=list(isodoseLevelsGy or []), keepPrevious=bool(keepPrevious), progress=progress,
            dicomDatabase=self._openDicomDatabase(), currentFractionsPerDay=int(currentFractionsPerDay),
            currentHoursBetweenFractions=currentHoursBetweenFractions if int(currentFractionsPerDay) > 1 else None,
            repairHalfTimeHours=repairHalfTimeHours)

    @staticmethod
    def saveOutputs(doseResult, parentFolder, includeIdentity: bool = False) -> str:
        """Write a run's outputs (what the ``dose`` command writes: report, RTDOSE carrying the planning CT's
        patient, study and frame of reference when it was loaded from DICOM, maps, tables, pictures) into a new
        folder ``Reirradiation <date> <time>`` inside ``parentFolder``; returns its path. ``doseResult``: the
        ``"result"`` of :meth:`process`."""
        import datetime
        from pathlib import Path

        from ReirradiationDoseLib.mrml.pipeline import saveDoseOutputs

        if doseResult is None:
            raise ValueError(_("Compute the cumulative EQD2 first."))
        parent = Path(parentFolder)
        if not parent.is_dir():
            raise ValueError(f"the folder {parent} does not exist")
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H%M%S")
        folder = parent / f"Reirradiation {stamp}"
        suffix = 2
        while folder.exists():
            folder = parent / f"Reirradiation {stamp} ({suffix})"
            suffix += 1
        saveDoseOutputs(doseResult, folder, includeIdentity=includeIdentity)
        return str(folder)

    @staticmethod
    def _openDicomDatabase(database=None):
        """``database`` (default ``slicer.dicomDatabase``) when it is open, else None. Given to the workflow, each
        DICOM dose's fractions are checked against its RTPLAN and a BEAM dose is refused."""
        if database is None:
            database = getattr(slicer, "dicomDatabase", None)
        # ctkDICOMDatabase.isOpen is a Qt property; FolderDicomIndex has none and is always open
        return database if database is not None and getattr(database, "isOpen", True) else None


#
# ReirradiationDoseTest
#
class ReirradiationDoseTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: a small uniform case through the Logic, checked against REFERENCE §2 case 6."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ReirradiationDose_compositeEqd2()
        self.setUp()
        self.test_ReirradiationDose_fractionsFromDicomDatabase()

    def test_ReirradiationDose_compositeEqd2(self):
        import numpy as np

        from ReirradiationDoseLib.core.geometry import ImageGeometry
        from ReirradiationDoseLib.mrml.nodes import arrayAndGeometryFromVolumeNode, volumeNodeFromArray

        self.delayDisplay("Prior 50 Gy/25 fx + current 30.6 Gy/17 fx, α/β 3, no recovery")
        scene = slicer.mrmlScene
        geometry = ImageGeometry((24, 24, 12), (4.0, 4.0, 5.0), (-46.0, -46.0, -27.5))
        ct = volumeNodeFromArray(scene, np.zeros(geometry.shape, np.int16), geometry, "CT")
        current = volumeNodeFromArray(scene, np.full(geometry.shape, 30.6, np.float32), geometry, "Current dose",
                                      isDose=True)
        prior = volumeNodeFromArray(scene, np.full(geometry.shape, 50.0, np.float32), geometry, "Prior dose",
                                    isDose=True)
        result = ReirradiationDoseLogic().process(
            currentCt=ct, currentDose=current, currentFractions=17,
            priorCourses=[{"name": "Prior", "doseNode": prior, "transformNode": None, "numberOfFractions": 25,
                           "monthsBefore": 24.0}],
            defaultAlphaBetaGy=3.0, recoveryModel="none", isodoseLevelsGy=[])
        composite, _ = arrayAndGeometryFromVolumeNode(result["compositeEqd2"])
        centre = composite[6, 12, 12]
        self.assertAlmostEqual(float(centre), 79.38, delta=0.01)  # 50 + 29.38 Gy EQD2(3)
        self.delayDisplay(f"Composite EQD2 {centre:.2f} Gy; saving the report")
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as parent:
            saved = ReirradiationDoseLogic.saveOutputs(result["result"], parent)
            for name in ("report.html", "composite_eqd2.dcm", "dvh.csv", "summary.json"):
                self.assertTrue(os.path.isfile(os.path.join(saved, name)), name)
        self.delayDisplay("Report, RTDOSE and tables saved: test passed")

    def test_ReirradiationDose_fractionsFromDicomDatabase(self):
        """The demo case through Slicer's DICOM database and SlicerRT: 25 fx (prior) and 17 fx (current)."""
        import tempfile

        from DICOMLib import DICOMUtils

        from ReirradiationDoseLib.core.democase.generate import generateDemoCase

        if "DicomRtImportExportPlugin" not in getattr(slicer.modules, "dicomPlugins", {}):
            self.delayDisplay("SlicerRT is not installed: DICOM-RT fractions test skipped")
            return
        self.delayDisplay("Demo case -> DICOM database -> SlicerRT -> fractions from each RTPLAN")
        with tempfile.TemporaryDirectory() as folder, DICOMUtils.TemporaryDICOMDatabase():
            generateDemoCase(folder, size="small")
            logic = ReirradiationDoseLogic()
            logic.importDicomFolder(folder)
            doses = [node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                     if node.GetAttribute("DicomRtImport.DoseVolume") == "1"]
            found = sorted(logic.courseInfoFromDicomDatabase(node).fractions for node in doses)
            self.assertEqual(found, [17, 25])
        self.delayDisplay("Fractions 25 and 17 read from the RTPLANs: test passed")
