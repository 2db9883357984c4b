"""Offscreen slice views rendered by Slicer's own slice logic and displayable managers (no Qt, no display).

What a ``qMRMLSliceWidget`` does, without Qt (see Slicer's ``qMRMLSliceView.cxx``, ``qMRMLSliceWidget.cxx`` and
CTK's ``vtkLightBoxRendererManager``):

- a ``vtkMRMLSliceLogic`` on the scene with its slice node and slice composite node; its reslice/blend pipeline
  (``GetImageDataConnection()``) gives the RGBA image of the background, foreground and label layers, shown by a
  ``vtkImageMapper`` in a background ``vtkActor2D``;
- a ``vtkMRMLDisplayableManagerGroup`` from the slice-view displayable manager factory on the same renderer: the
  segmentation displayable manager (outlines and fill of segments) and the model-slice displayable manager
  (intersections of models with the slice, e.g. isodose surfaces).

The render window is an EGL offscreen window (``vtkEGLRenderWindow``) when VTK has one; nothing needs an X display.
Pixels are what a user sees in the slice view: patient right on the image left (radiological convention).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from ..core.errors import InputError
from .nodes import arrayFromVtkMatrix
from .scene import applicationLogic

logger = logging.getLogger(__name__)

__all__ = ["renderSliceView", "renderSliceViewImage", "renderArraysPreview", "renderDemoPreview", "writePng",
           "readPng", "rasToPixel", "ORIENTATIONS"]

ORIENTATIONS = ("Axial", "Coronal", "Sagittal")
_SLICE_DISPLAYABLE_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLModelSliceDisplayableManager")
_LAYOUT_NAME = "ReirradiationOffscreen"


def _newRenderWindow() -> vtk.vtkRenderWindow:
    try:
        from vtkmodules.vtkRenderingOpenGL2 import vtkEGLRenderWindow
        window = vtkEGLRenderWindow()
    except ImportError:  # pragma: no cover - VTK built without EGL: the default window (offscreen) instead
        window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)
    return window


@contextmanager
def _temporaryDisplay(scene, segmentations, models, fillSegmentations):
    """Show only the requested segmentations and models; restore every display property afterwards.
    ``fillSegmentations``: True / False for every segmentation shown, or the segmentation nodes to fill."""
    saved = []
    wanted = {node.GetID() for node in list(segmentations) + list(models) if node is not None}
    if isinstance(fillSegmentations, bool):
        filled = wanted if fillSegmentations else set()
    else:
        filled = {node.GetID() for node in fillSegmentations if node is not None}
    for className in ("vtkMRMLSegmentationNode", "vtkMRMLModelNode"):
        for index in range(scene.GetNumberOfNodesByClass(className)):
            node = scene.GetNthNodeByClass(index, className)
            display = node.GetDisplayNode()
            if display is None:
                continue
            state = {"Visibility": display.GetVisibility(), "Visibility2D": display.GetVisibility2D()}
            if className == "vtkMRMLSegmentationNode":
                state["Visibility2DFill"] = display.GetVisibility2DFill()
                state["Visibility2DOutline"] = display.GetVisibility2DOutline()
            saved.append((display, state))
            show = node.GetID() in wanted
            display.SetVisibility(show)
            if show:
                display.SetVisibility2D(True)
                if className == "vtkMRMLSegmentationNode":
                    display.SetVisibility2DOutline(True)
                    display.SetVisibility2DFill(node.GetID() in filled)
    try:
        yield
    finally:
        for display, state in saved:
            for key, value in state.items():
                getattr(display, f"Set{key}")(value)


def _legendActors(legend: Sequence[tuple[str, Sequence[float]]], sizePx: tuple[int, int]) -> list:
    """A colour legend box in the top-right corner: one coloured swatch and label per entry."""
    if not legend:
        return []
    width, height = sizePx
    fontSize = max(10, min(16, height // 32))
    rowPx = int(fontSize * 1.5)
    swatchPx = int(fontSize * 0.9)
    textWidth = max(len(str(label)) for label, _ in legend) * fontSize * 0.62
    boxWidth = int(swatchPx + 3 * 6 + textWidth)
    boxHeight = rowPx * len(legend) + 8
    x0, y1 = width - boxWidth - 8, height - 8
    y0 = y1 - boxHeight

    points, polys, colors = vtk.vtkPoints(), vtk.vtkCellArray(), vtk.vtkUnsignedCharArray()
    colors.SetNumberOfComponents(4)

    def addRect(xa, ya, xb, yb, rgba):
        start = points.GetNumberOfPoints()
        for x, y in ((xa, ya), (xb, ya), (xb, yb), (xa, yb)):
            points.InsertNextPoint(x, y, 0)
        polys.InsertNextCell(4, [start, start + 1, start + 2, start + 3])
        colors.InsertNextTuple4(*rgba)

    addRect(x0, y0, x0 + boxWidth, y1, (0, 0, 0, 170))
    actors = []
    for row, (label, rgb) in enumerate(legend):
        yTop = y1 - 4 - row * rowPx
        yc = yTop - rowPx / 2
        rgba = tuple(int(round(255 * float(c))) for c in rgb[:3]) + (255,)
        addRect(x0 + 6, yc - swatchPx / 2, x0 + 6 + swatchPx, yc + swatchPx / 2, rgba)
        text = vtk.vtkTextActor()
        text.SetInput(str(label))
        prop = text.GetTextProperty()
        prop.SetFontSize(fontSize)
        prop.SetColor(1, 1, 1)
        prop.SetVerticalJustificationToCentered()
        text.SetDisplayPosition(int(x0 + 12 + swatchPx), int(yc))
        actors.append(text)
    polyData = vtk.vtkPolyData()
    polyData.SetPoints(points)
    polyData.SetPolys(polys)
    polyData.GetCellData().SetScalars(colors)
    mapper = vtk.vtkPolyDataMapper2D()
    mapper.SetInputData(polyData)
    mapper.SetColorModeToDirectScalars()
    boxes = vtk.vtkActor2D()
    boxes.SetMapper(mapper)
    return [boxes] + actors


def _cornerText(text: str, fontSize: int) -> vtk.vtkTextActor:
    actor = vtk.vtkTextActor()
    actor.SetInput(text)
    actor.GetTextProperty().SetFontSize(fontSize)
    actor.GetTextProperty().SetColor(1.0, 1.0, 0.6)
    actor.SetDisplayPosition(6, 6)
    return actor


def _positionText(orientation: str, sliceNode) -> str:
    """E.g. "Axial  S 12.0 mm", "Sagittal  L 18.8 mm": where the slice plane crosses its own axis (RAS)."""
    directions = {"Axial": (2, "S", "I"), "Coronal": (1, "A", "P"), "Sagittal": (0, "R", "L")}
    axis, positive, negative = directions[orientation]
    value = sliceNode.GetSliceToRAS().GetElement(axis, 3)
    return f"{orientation}  {positive if value >= 0 else negative} {abs(value):.1f} mm"


def _volumeCentreRas(volumeNode) -> np.ndarray:
    bounds = [0.0] * 6
    volumeNode.GetRASBounds(bounds)
    return np.array([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2])


def renderSliceViewImage(scene, orientation: str = "Axial", positionRas=None, background=None, foreground=None,
                         foregroundOpacity: float = 0.5, labelmap=None, segmentations: Sequence = (),
                         models: Sequence = (), legend: Sequence[tuple[str, Sequence[float]]] = (),
                         sizePx: tuple[int, int] = (512, 512), fieldOfViewMm=None, fillSegmentations=False,
                         annotation: bool = True, labelOpacity: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Render one slice view offscreen; see :func:`renderSliceView` for the arguments.

    Returns ``(rgb, xyToRas)``: the picture as a uint8 array ``[row, column, 3]`` with row 0 at the top, and the
    slice node's 4x4 XY-to-RAS matrix (XY: pixel column and pixel row counted from the *bottom*, as Slicer defines
    them), so callers can map RAS points to pixels (:func:`rasToPixel`).
    """
    if orientation not in ORIENTATIONS:
        raise InputError(f"unknown slice orientation '{orientation}'; use one of {', '.join(ORIENTATIONS)}")
    if background is None:
        raise InputError("a background volume is required to render a slice view")
    width, height = (int(sizePx[0]), int(sizePx[1]))
    if width < 16 or height < 16:
        raise InputError(f"picture size {sizePx} is too small")
    appLogic = applicationLogic(scene)
    nodeIdsBefore = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}

    window = _newRenderWindow()
    window.SetSize(width, height)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0, 0, 0)
    renderer.GetActiveCamera().ParallelProjectionOn()
    window.AddRenderer(renderer)
    interactor = vtk.vtkGenericRenderWindowInteractor()  # displayable managers expect one; needs no display
    interactor.SetRenderWindow(window)

    imageMapper = vtk.vtkImageMapper()
    imageMapper.SetColorWindow(255)
    imageMapper.SetColorLevel(127.5)
    imageActor = vtk.vtkActor2D()
    imageActor.SetMapper(imageMapper)
    imageActor.GetProperty().SetDisplayLocationToBackground()
    renderer.AddViewProp(imageActor)

    sliceLogic = slicer.vtkMRMLSliceLogic()
    sliceLogic.SetMRMLApplicationLogic(appLogic)
    sliceLogic.SetMRMLScene(scene)
    appLogic.GetSliceLogics().AddItem(sliceLogic)
    group = None
    # the factory is a process-wide singleton: inside Slicer it holds the application's logic, which every slice
    # view made later takes its displayable managers from. Ours only for this picture, then the previous one back.
    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    previousLogic = factory.GetMRMLApplicationLogic()
    try:
        sliceNode = sliceLogic.AddSliceNode(_LAYOUT_NAME)
        sliceNode.SetOrientation(orientation)
        factory.SetMRMLApplicationLogic(appLogic)
        for name in _SLICE_DISPLAYABLE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        group = factory.InstantiateDisplayableManagers(renderer)
        # The factory returns a new reference that the caller owns (qMRMLSliceView deletes it): hand it to Python,
        # so the group and its displayable managers (scene observers) go away with this view.
        if group.GetReferenceCount() > 1:
            group.UnRegister(None)
        group.SetMRMLDisplayableNode(sliceNode)

        composite = sliceLogic.GetSliceCompositeNode()
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(foregroundOpacity))
        composite.SetLabelVolumeID(labelmap.GetID() if labelmap is not None else None)
        composite.SetLabelOpacity(float(labelOpacity))

        sliceLogic.ResizeSliceNode(width, height)
        point = _volumeCentreRas(background) if positionRas is None else np.asarray(positionRas, dtype=float)
        if fieldOfViewMm is None:
            sliceLogic.FitSliceToBackground(width, height)
            sliceNode.JumpSliceByOffsetting(*point)
        else:
            fovX = float(fieldOfViewMm if np.isscalar(fieldOfViewMm) else fieldOfViewMm[0])
            spacing = sliceNode.GetFieldOfView()[2]
            sliceNode.SetFieldOfView(fovX, fovX * height / width, spacing)
            sliceNode.JumpSliceByCentering(*point)
        sliceNode.UpdateMatrices()

        with _temporaryDisplay(scene, segmentations, models, fillSegmentations):
            sliceLogic.UpdatePipeline()
            connection = sliceLogic.GetImageDataConnection()
            imageMapper.SetInputConnection(connection)
            extras = _legendActors(legend, (width, height))
            if annotation:
                extras.append(_cornerText(_positionText(orientation, sliceNode), max(10, height // 40)))
            for actor in extras:
                renderer.AddViewProp(actor)
            group.RequestRender()
            window.Render()
            grabber = vtk.vtkWindowToImageFilter()
            grabber.SetInput(window)
            grabber.SetInputBufferTypeToRGB()
            grabber.ReadFrontBufferOff()
            grabber.Update()
            image = grabber.GetOutput()
            dims = image.GetDimensions()
            rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[1], dims[0], 3)
            rgb = rgb[::-1].copy()  # VTK's row 0 is the bottom; pictures start at the top
            xyToRas = arrayFromVtkMatrix(sliceNode.GetXYToRAS())
    finally:
        factory.SetMRMLApplicationLogic(previousLogic)
        imageMapper.SetInputConnection(None)
        if group is not None:
            group.SetMRMLDisplayableNode(None)
            del group
        appLogic.GetSliceLogics().RemoveItem(sliceLogic)
        sliceLogic.SetMRMLScene(None)
        sliceLogic.SetMRMLApplicationLogic(None)
        # Remove the slice, composite and slice-model nodes this view added: the scene is left as it was.
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node is not None and node.GetID() not in nodeIdsBefore:
                scene.RemoveNode(node)
        window.Finalize()
    return rgb, xyToRas


def renderSliceView(scene, outputPng, orientation: str = "Axial", positionRas=None, background=None, foreground=None,
                    foregroundOpacity: float = 0.5, labelmap=None, segmentations: Sequence = (),
                    models: Sequence = (), legend: Sequence[tuple[str, Sequence[float]]] = (),
                    sizePx: tuple[int, int] = (512, 512), fieldOfViewMm=None, fillSegmentations=False,
                    annotation: bool = True, labelOpacity: float = 1.0) -> Path:
    """Render a slice view offscreen, as Slicer's slice widget shows it, and write it as a PNG.

    Parameters
    ----------
    scene : a scene from :func:`~ReirradiationDoseLib.mrml.scene.createScene`.
    outputPng : file to write (folders are created).
    orientation : "Axial", "Coronal" or "Sagittal".
    positionRas : the slice passes through this RAS point (mm); default: the centre of the background volume.
        With ``fieldOfViewMm`` the view is also centred on it.
    background, foreground, labelmap : volume nodes of the three layers (foreground blended at
        ``foregroundOpacity``; e.g. a dose over the CT; the labelmap at ``labelOpacity``, the label layer's opacity of
        Slicer's slice view: give its colour table opaque entries, since an entry's own alpha below 1 lowers the
        blended picture's alpha and the view darkens it against its black background).
    segmentations : segmentation nodes to show (outlines; filled too with ``fillSegmentations`` True, or only those
        of them it lists, at each node's 2D fill opacity). Other
        segmentations and models in the scene are hidden in this view (their display is restored afterwards).
    models : model nodes shown as coloured intersection lines (e.g. isodose surfaces from
        :func:`~ReirradiationDoseLib.mrml.isodose.createIsodoseModels`).
    legend : ``[(label, (r, g, b)), ...]`` drawn as a colour legend box in the top-right corner.
    sizePx : picture (width, height) in pixels.
    fieldOfViewMm : width of the view in mm (height follows the aspect ratio); default: fit the background volume.
    annotation : write the orientation and slice position in the lower-left corner.
    """
    rgb, _ = renderSliceViewImage(scene, orientation, positionRas, background, foreground, foregroundOpacity,
                                  labelmap, segmentations, models, legend, sizePx, fieldOfViewMm,
                                  fillSegmentations, annotation, labelOpacity)
    return writePng(rgb, outputPng)


def writePng(rgb: np.ndarray, outputPng) -> Path:
    """Write a uint8 RGB(A) array ``[row, column, c]`` (row 0 at the top) as a PNG with ``vtkPNGWriter``."""
    path = Path(outputPng)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[::-1])
    image = vtk.vtkImageData()
    image.SetDimensions(rgb.shape[1], rgb.shape[0], 1)
    scalars = numpy_support.numpy_to_vtk(rgb.reshape(-1, rgb.shape[2]), deep=True)
    image.GetPointData().SetScalars(scalars)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()
    if writer.GetErrorCode():
        raise OSError(f"could not write the picture {path}")
    return path


def readPng(path) -> np.ndarray:
    """A PNG as a uint8 array ``[row, column, c]`` with row 0 at the top (read with ``vtkPNGReader``)."""
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    dims = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    return numpy_support.vtk_to_numpy(scalars).reshape(dims[1], dims[0], -1)[::-1].copy()


def rasToPixel(xyToRas: np.ndarray, pointsRas, heightPx: int) -> np.ndarray:
    """Pixel (column, row-from-top) of RAS points in a picture from :func:`renderSliceViewImage`."""
    points = np.atleast_2d(np.asarray(pointsRas, dtype=float))
    homogeneous = np.c_[points, np.ones(len(points))]
    xy = (np.linalg.inv(xyToRas) @ homogeneous.T).T[:, :2]
    return np.c_[xy[:, 0], (heightPx - 1) - xy[:, 1]]


def renderArraysPreview(outputDir, image: np.ndarray, geometry, doseGy: np.ndarray | None = None,
                        doseGeometry=None, masks: dict | None = None, structureColors: dict | None = None,
                        isodoseLevelsGy: Sequence[float] = (), positionLps=None,
                        orientations: Sequence[str] = ("Axial", "Coronal", "Sagittal"), prefix: str = "slice",
                        windowLevel: tuple[float, float] | None = (400.0, 40.0), doseThresholdGy: float | None = None,
                        sizePx: tuple[int, int] = (512, 512)) -> list[Path]:
    """Render slice views of arrays (no scene needed): CT, optional dose wash + isodose lines, structure outlines.

    Parameters
    ----------
    outputDir : folder for ``f"{prefix}_{orientation.lower()}.png"``.
    image, geometry : the background image (e.g. the planning CT, [k, j, i]) and its grid (LPS).
    doseGy, doseGeometry : a dose (e.g. the composite EQD2) blended over the image; ``doseGeometry`` defaults to
        ``geometry``. Voxels below ``doseThresholdGy`` (default: the lowest isodose level, else 1 % of the maximum)
        are transparent.
    masks, structureColors : structures on ``geometry`` drawn as outlines, with their colours.
    isodoseLevelsGy : isodose lines of ``doseGy`` (default colour scheme, with a legend).
    positionLps : the slices pass through this LPS point (default: the dose maximum, else the image centre).
    windowLevel : CT display window/level (None: automatic).

    Returns the PNG paths. The temporary scene is released afterwards.
    """
    from .isodose import createIsodoseModels, defaultIsodoseColors, isodoseLegend
    from .nodes import segmentationNodeFromMasks, volumeNodeFromArray
    from .scene import closeScene, createScene

    output = Path(outputDir)
    output.mkdir(parents=True, exist_ok=True)
    doseGeometry = doseGeometry or geometry
    scene = createScene()
    try:
        background = volumeNodeFromArray(scene, image, geometry, "Image")
        if windowLevel is not None:
            background.GetDisplayNode().AutoWindowLevelOff()
            background.GetDisplayNode().SetWindowLevel(*windowLevel)
        legend: list = []
        models: list = []
        foreground = None
        if doseGy is not None:
            foreground = volumeNodeFromArray(scene, np.nan_to_num(doseGy, nan=0.0).astype(np.float32), doseGeometry,
                                             "Dose", isDose=True)
            levels = [float(v) for v in isodoseLevelsGy]
            threshold = doseThresholdGy if doseThresholdGy is not None else (min(levels) if levels else None)
            if threshold is not None:
                foreground.GetDisplayNode().SetLowerThreshold(float(threshold))
            if levels:
                colors = defaultIsodoseColors(levels)
                models = createIsodoseModels(scene, (np.asarray(doseGy), doseGeometry), levels, colors)  # NaN kept
                legend += isodoseLegend(levels, colors)
        segmentations = []
        if masks:
            structures = segmentationNodeFromMasks(scene, masks, geometry, colors=structureColors or None,
                                                   referenceVolumeNode=background)
            segmentations.append(structures)
            segmentation = structures.GetSegmentation()
            legend += [(segmentation.GetNthSegment(i).GetName(), segmentation.GetNthSegment(i).GetColor())
                       for i in range(segmentation.GetNumberOfSegments())]
        if positionLps is None:
            if doseGy is not None and np.isfinite(doseGy).any():
                peak = np.unravel_index(int(np.nanargmax(doseGy)), np.shape(doseGy))
                positionLps = doseGeometry.indexToLps(np.array(peak[::-1], dtype=float))
            else:
                positionLps = geometry.indexToLps((np.array(geometry.sizeXyz) - 1) / 2.0)
        positionRas = np.asarray(positionLps, dtype=float) * np.array([-1.0, -1.0, 1.0])
        paths = []
        for orientation in orientations:
            paths.append(renderSliceView(
                scene, output / f"{prefix}_{orientation.lower()}.png", orientation, positionRas,
                background=background, foreground=foreground, foregroundOpacity=0.35, segmentations=segmentations,
                models=models, legend=legend, sizePx=sizePx))
        logger.info("slice views: %s", ", ".join(str(p) for p in paths))
        return paths
    finally:
        closeScene(scene)


def renderDemoPreview(outputDir, sizePx: tuple[int, int] = (512, 512)) -> list[Path]:
    """Render the slice views of a small generated case into ``outputDir``; returns the PNG paths.

    The case: a 96 x 96 x 48 body-like phantom (water ellipse with a bone-like "spine"), a Gaussian dose (peak 60 Gy)
    around a spherical target, and two structures; pictures ``demo_axial.png`` and ``demo_coronal.png``: slices
    through the target with the dose blended over the CT (from 10 Gy), structure outlines and 20/40/54 Gy isodose
    lines with a legend.
    """
    from ..core.geometry import ImageGeometry

    geometry = ImageGeometry((96, 96, 48), (2.5, 2.5, 3.0), (-118.75, -118.75, -70.5))
    centresLps = geometry.voxelCentresLps()
    x, y, z = centresLps[..., 0], centresLps[..., 1], centresLps[..., 2]
    body = (x / 105.0) ** 2 + (y / 80.0) ** 2 <= 1.0
    spine = (x / 12.0) ** 2 + ((y - 45.0) / 12.0) ** 2 <= 1.0
    ct = (np.where(body, 40.0, -1000.0) + np.where(spine, 660.0, 0.0)).astype(np.int16)
    target = np.array([20.0, -10.0, 0.0])
    radius = np.sqrt((x - target[0]) ** 2 + (y - target[1]) ** 2 + (z - target[2]) ** 2)
    dose = (60.0 * np.exp(-0.5 * (radius / 28.0) ** 2) * body).astype(np.float32)
    masks = {"PTV": radius <= 20.0, "Spinal cord": (x / 5.0) ** 2 + ((y - 45.0) / 5.0) ** 2 <= 1.0}
    return renderArraysPreview(outputDir, ct, geometry, dose, masks=masks, isodoseLevelsGy=[20.0, 40.0, 54.0],
                               positionLps=target, orientations=("Axial", "Coronal"), prefix="demo",
                               doseThresholdGy=10.0, sizePx=sizePx)
