"""A real MRML scene outside the Slicer application (slicer-core), set up the way Slicer sets up its own.

Inside Slicer, ``qSlicerCoreApplication`` creates the scene and the application logic, and every loadable module's
``setup()`` creates its logic, gives it the scene and registers it with the application logic; that is what
registers the module's node classes (``RegisterNodes``) so ``scene.AddNewNodeByClass`` works. slicer-core ships the
same logic classes without Qt, so :func:`createScene` repeats those steps for the modules this extension needs.

Inside Slicer, use ``slicer.mrmlScene``; this module is for the command line and the tests.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import slicer
import vtk

logger = logging.getLogger(__name__)

__all__ = ["createScene", "applicationLogic", "moduleLogic", "closeScene", "quietVtk"]

# Module logics a real Slicer registers (name in the application logic -> class in slicer-core), in the order
# Slicer's module dependencies load them. Terminologies is left out: slicer-core ships no terminology JSON files,
# so its logic would only log errors and stay empty.
_MODULE_LOGICS = (
    ("Colors", "vtkSlicerColorLogic"),
    ("Units", "vtkSlicerUnitsLogic"),
    ("SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
    ("Transforms", "vtkSlicerTransformLogic"),
    ("Volumes", "vtkSlicerVolumesLogic"),
    ("Models", "vtkSlicerModelsLogic"),
    ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("Tables", "vtkSlicerTablesLogic"),
    ("Plots", "vtkSlicerPlotsLogic"),
    ("Markups", "vtkSlicerMarkupsLogic"),
    ("Texts", "vtkSlicerTextsLogic"),
    ("Sequences", "vtkSlicerSequencesLogic"),
)

# The application logic and module logics of each scene made here. Neither the scene nor the application logic
# owns them (the application logic keeps weak pointers), so they are kept alive here until closeScene().
_APPLICATION_LOGICS: dict[str, vtk.vtkObject] = {}
_MODULE_LOGIC_OBJECTS: dict[str, dict[str, vtk.vtkObject]] = {}


@contextmanager
def quietVtk():
    """Silence VTK warnings/errors for a block (e.g. logics looking for share folders slicer-core lacks)."""
    previous = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()
    try:
        yield
    finally:
        vtk.vtkObject.SetGlobalWarningDisplay(previous)


def _key(scene) -> str:
    return scene.GetAddressAsString("vtkMRMLScene")


def createScene() -> slicer.vtkMRMLScene:
    """A new MRML scene with the application logic and the module logics this extension uses.

    What it sets up (as ``qSlicerCoreApplication::setMRMLScene`` and the modules' ``setup()`` do):

    - a ``vtkSlicerApplicationLogic`` observing the scene, with empty slice/view logic collections;
    - a default crosshair node and the default slice orientation presets (Axial, Sagittal, Coronal);
    - the module logics of :data:`_MODULE_LOGICS`: default colour tables (Grey, Labels, Rainbow, PET ...), the
      subject hierarchy node, segmentation, model, table, plot, markups, text, sequence and unit nodes.

    The slice-view displayable-manager factory (a process-wide singleton: inside Slicer the application's) is not
    touched here: :func:`.render.renderSliceViewImage` lends it this scene's logic for one picture and gives it back.

    Release it with :func:`closeScene`.
    """
    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)

    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(scene)
    appLogic.SetSliceLogics(vtk.vtkCollection())
    appLogic.SetViewLogics(vtk.vtkCollection())

    logics: dict[str, vtk.vtkObject] = {}
    with quietVtk():  # the Colors logic looks for Slicer's ColorFiles folder, absent from slicer-core
        for name, className in _MODULE_LOGICS:
            logicClass = getattr(slicer, className, None)
            if logicClass is None:  # pragma: no cover - depends on the slicer-core build
                logger.debug("slicer-core has no %s; module logic %s not registered", className, name)
                continue
            logic = logicClass()
            logic.SetMRMLApplicationLogic(appLogic)
            logic.SetMRMLScene(scene)
            appLogic.SetModuleLogic(name, logic)
            logics[name] = logic
    appLogic.SetColorLogic(logics["Colors"])

    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
    _APPLICATION_LOGICS[_key(scene)] = appLogic
    _MODULE_LOGIC_OBJECTS[_key(scene)] = logics
    return scene


def applicationLogic(scene) -> slicer.vtkSlicerApplicationLogic:
    """The application logic :func:`createScene` made for ``scene``."""
    try:
        return _APPLICATION_LOGICS[_key(scene)]
    except KeyError:
        raise ValueError("this scene was not made by createScene(); it has no application logic") from None


def moduleLogic(scene, name: str):
    """A module logic registered by :func:`createScene` (e.g. ``"Segmentations"``), or None."""
    applicationLogic(scene)  # raises for a foreign scene
    return _MODULE_LOGIC_OBJECTS[_key(scene)].get(name)


def closeScene(scene) -> None:
    """Clear the scene and release its application and module logics."""
    appLogic = _APPLICATION_LOGICS.pop(_key(scene), None)
    logics = _MODULE_LOGIC_OBJECTS.pop(_key(scene), {})
    scene.Clear(True)
    with quietVtk():  # the subject hierarchy logic warns when its scene goes away
        for logic in reversed(list(logics.values())):
            logic.SetMRMLScene(None)
        if appLogic is not None:
            appLogic.SetMRMLScene(None)
