"""Offscreen slice views rendered by Slicer's slice logic and displayable managers: check the pixels."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry, lpsToRas
from ReirradiationDoseLib.mrml import nodes as N
from ReirradiationDoseLib.mrml.isodose import createIsodoseModels, defaultIsodoseColors, isodoseLegend
from ReirradiationDoseLib.mrml.render import (
    rasToPixel,
    readPng,
    renderDemoPreview,
    renderSliceView,
    renderSliceViewImage,
)

pytestmark = pytest.mark.mrml

GEOMETRY = ImageGeometry((64, 64, 24), (2.0, 2.0, 2.5), (-63.0, -63.0, -28.75))
CENTRE_LPS = np.array([-15.0, 10.0, 5.0])  # -> RAS (15, -10, 5): patient right, posterior, superior
RADIUS_MM = 16.0


def isPure(rgb: np.ndarray, color) -> np.ndarray:
    """Pixels close to a saturated colour and unlike any grey (the CT below is grey)."""
    target = np.array(color, float) * 255
    return np.all(np.abs(rgb.astype(float) - target) < 60, axis=-1)


@pytest.fixture
def ctVolume(scene):
    centres = GEOMETRY.voxelCentresLps()
    ct = (np.sin(centres[..., 0] / 7.0) * 80).astype(np.int16)  # grey stripes
    node = N.volumeNodeFromArray(scene, ct, GEOMETRY, "CT")
    node.GetDisplayNode().AutoWindowLevelOff()
    node.GetDisplayNode().SetWindowLevel(400, 0)
    return node


@pytest.fixture
def redSphere(scene):
    distance = np.linalg.norm(GEOMETRY.voxelCentresLps() - CENTRE_LPS, axis=-1)
    return N.segmentationNodeFromMasks(scene, {"GTV": distance <= RADIUS_MM}, GEOMETRY, colors=[(1, 0, 0)])


@pytest.mark.parametrize("orientation", ["Axial", "Coronal", "Sagittal"])
def test_segment_outline_is_drawn_where_the_segment_is(scene, ctVolume, redSphere, orientation):
    centreRas = lpsToRas(CENTRE_LPS)
    rgb, xyToRas = renderSliceViewImage(scene, orientation, centreRas, background=ctVolume,
                                        segmentations=[redSphere], sizePx=(256, 256), annotation=False)
    assert rgb.shape == (256, 256, 3)
    red = isPure(rgb, (1, 0, 0))
    assert red.sum() > 100, "no outline pixels"
    rows, cols = np.nonzero(red)
    centrePx = rasToPixel(xyToRas, centreRas, 256)[0]
    pixelMm = np.linalg.norm(xyToRas[:3, 0])
    distanceMm = np.hypot(cols - centrePx[0], rows - centrePx[1]) * pixelMm
    # the outline follows the voxel boundary of the rasterised sphere: within a voxel diagonal of the radius
    assert distanceMm.min() > RADIUS_MM - 3.0
    assert distanceMm.max() < RADIUS_MM + 3.2
    assert abs(np.median(distanceMm) - RADIUS_MM) < 1.5
    # nothing red far from the segment: outline only (no fill), no other structure
    assert not red[np.hypot(*np.indices(red.shape)[::-1] - centrePx[:, None, None]) * pixelMm > RADIUS_MM + 4].any()
    inside = np.hypot(*np.indices(red.shape)[::-1] - centrePx[:, None, None]) * pixelMm < RADIUS_MM - 4
    assert not red[inside].any()


def test_axial_view_is_radiological(scene, ctVolume, redSphere):
    """Patient right (RAS x > 0) on the image left, anterior at the top, as in Slicer's Red view."""
    rgb, xyToRas = renderSliceViewImage(scene, "Axial", lpsToRas(CENTRE_LPS), background=ctVolume,
                                        segmentations=[redSphere], sizePx=(256, 256), annotation=False)
    rows, cols = np.nonzero(isPure(rgb, (1, 0, 0)))
    # the view is fitted to the volume (no fieldOfViewMm): centred on the volume centre (RAS ~ (0, 0))
    assert cols.mean() < 128 - 10  # RAS x = +15 mm: left half
    assert rows.mean() > 128 + 5  # RAS y = -10 mm (posterior): lower half
    expected = rasToPixel(xyToRas, lpsToRas(CENTRE_LPS), 256)[0]
    assert cols.mean() == pytest.approx(expected[0], abs=2.0)
    assert rows.mean() == pytest.approx(expected[1], abs=2.0)


def test_fill_option_fills_the_segment(scene, ctVolume, redSphere):
    centreRas = lpsToRas(CENTRE_LPS)
    rgb, xyToRas = renderSliceViewImage(scene, "Axial", centreRas, background=ctVolume, segmentations=[redSphere],
                                        sizePx=(128, 128), fieldOfViewMm=80, fillSegmentations=True,
                                        annotation=False)
    centre = rgb[64, 64].astype(int)
    assert centre[0] > centre[1] + 40 and centre[0] > centre[2] + 40  # red-tinted inside


def test_png_matches_the_rendered_pixels(scene, ctVolume, redSphere, tmp_path, artifactsDir):
    kwargs = dict(orientation="Axial", positionRas=lpsToRas(CENTRE_LPS), background=ctVolume,
                  segmentations=[redSphere], sizePx=(200, 160), legend=[("GTV", (1, 0, 0))])
    path = renderSliceView(scene, tmp_path / "sub" / "axial.png", **kwargs)
    rgb, _ = renderSliceViewImage(scene, **kwargs)
    picture = readPng(path)
    assert picture.shape == (160, 200, 3)
    np.testing.assert_array_equal(picture, rgb)
    shutil.copy(path, artifactsDir / "mrml_render_segment_axial.png")


def test_render_leaves_the_scene_and_displays_as_they_were(scene, ctVolume, redSphere):
    other = N.segmentationNodeFromMasks(scene, {"B": np.ones(GEOMETRY.shape, bool)}, GEOMETRY, colors=[(0, 1, 0)])
    nodeIds = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    rgb, _ = renderSliceViewImage(scene, "Axial", None, background=ctVolume, segmentations=[redSphere],
                                  sizePx=(128, 128), annotation=False)
    assert not isPure(rgb, (0, 1, 0)).any(), "a segmentation not asked for was shown"
    assert {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())} == nodeIds
    assert other.GetDisplayNode().GetVisibility() and redSphere.GetDisplayNode().GetVisibility2DFill()


def test_legend_is_drawn_in_the_top_right_corner(scene, ctVolume):
    rgb, _ = renderSliceViewImage(scene, "Axial", None, background=ctVolume, legend=[("Level", (0, 1, 0))],
                                  sizePx=(256, 256), annotation=False)
    green = isPure(rgb, (0, 1, 0))
    rows, cols = np.nonzero(green)
    assert green.sum() >= 25
    assert rows.max() < 64 and cols.min() > 128


def test_foreground_dose_is_blended(scene, ctVolume):
    dose = np.full(GEOMETRY.shape, 50.0, np.float32)
    doseNode = N.volumeNodeFromArray(scene, dose, GEOMETRY, "Dose", isDose=True)
    alone, _ = renderSliceViewImage(scene, "Axial", None, background=ctVolume, sizePx=(64, 64), annotation=False)
    blended, _ = renderSliceViewImage(scene, "Axial", None, background=ctVolume, foreground=doseNode,
                                      foregroundOpacity=0.5, sizePx=(64, 64), annotation=False)
    # 50 Gy of a 50 Gy maximum is the top of the dose colour table: red
    centre = (slice(24, 40), slice(24, 40))
    assert np.all(alone[centre][..., 0] == alone[centre][..., 2])  # grey
    assert np.all(blended[centre][..., 0].astype(int) > blended[centre][..., 2].astype(int) + 60)


def test_bad_requests_are_refused(scene, ctVolume):
    with pytest.raises(InputError, match="orientation"):
        renderSliceViewImage(scene, "Oblique", background=ctVolume)
    with pytest.raises(InputError, match="background"):
        renderSliceViewImage(scene, "Axial")


# ---- isodose lines ----------------------------------------------------------------------------------------------
DOSE_GEOMETRY = ImageGeometry((48, 48, 40), (1.5, 1.5, 1.5), (-35.25, -35.25, -29.25))
DOSE_CENTRE_LPS = np.array([0.0, 0.0, 0.0])


def coneDose() -> np.ndarray:
    """D(r) = 60 Gy - 1 Gy/mm * r: the 40 Gy isodose is the sphere of radius 20 mm."""
    r = np.linalg.norm(DOSE_GEOMETRY.voxelCentresLps() - DOSE_CENTRE_LPS, axis=-1)
    return np.clip(60.0 - r, 0, None).astype(np.float32)


def test_isodose_surface_lies_at_the_analytic_radius(scene):
    doseNode = N.volumeNodeFromArray(scene, coneDose(), DOSE_GEOMETRY, "Dose", isDose=True)
    models = createIsodoseModels(scene, doseNode, [40.0, 50.0], colors=[(1, 0, 0), (0, 0, 1)])
    assert [m.GetName() for m in models] == ["Isodose 40 Gy", "Isodose 50 Gy"]
    import vtk
    from vtkmodules.util import numpy_support

    for model, radius in zip(models, (20.0, 10.0), strict=True):
        points = numpy_support.vtk_to_numpy(model.GetPolyData().GetPoints().GetData())
        distance = np.linalg.norm(points - lpsToRas(DOSE_CENTRE_LPS), axis=1)
        assert np.abs(distance - radius).max() < 0.1, model.GetName()  # measured 0.014 mm (linear interpolation)
        assert model.GetDisplayNode().GetVisibility2D()
        assert model.GetAttribute("Reirradiation.IsodoseLevelGy") == f"{radius and 60 - radius:g}"
    assert isinstance(models[0].GetPolyData(), vtk.vtkPolyData)


def test_isodose_stops_where_the_dose_is_unknown(scene):
    """The cone dose (40 Gy = sphere of 20 mm) unknown (NaN) for L > 5 mm: the 40 Gy surface is the sphere's part
    where the dose is known, and no 30 or 40 Gy line runs along the edge of the unknown region (with NaN as 0 Gy,
    the 30 Gy surface held the whole plane L = 5 mm inside the body: every level below the dose there traced it)."""
    from vtkmodules.util import numpy_support

    dose = coneDose()
    lps = DOSE_GEOMETRY.voxelCentresLps()
    dose[lps[..., 0] > 5.0] = np.nan
    models = createIsodoseModels(scene, (dose, DOSE_GEOMETRY), [30.0, 40.0])
    assert [m.GetName() for m in models] == ["Isodose 30 Gy", "Isodose 40 Gy"]
    for model, radius in zip(models, (30.0, 20.0), strict=True):
        ras = numpy_support.vtk_to_numpy(model.GetPolyData().GetPoints().GetData())
        assert len(ras) > 100
        error = np.abs(np.linalg.norm(ras - lpsToRas(DOSE_CENTRE_LPS), axis=1) - radius)
        assert error[-ras[:, 0] < 3.0].max() < 0.11  # the sphere only (0.10 mm: linear interpolation, 30 mm)
        assert error.max() < 0.3  # the clip's new points lie on chords of the sphere's triangles
        assert (-ras[:, 0]).max() < 5.0 + 1.5  # L = -R: within the known voxels (+ the clip's half voxel)
        assert (-ras[:, 0]).max() > 4.0  # and up to their edge


def test_isodose_from_array_and_oblique_grid_matches_node(scene):
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", [12, -8, 25], degrees=True).as_matrix()
    geometry = ImageGeometry(DOSE_GEOMETRY.sizeXyz, DOSE_GEOMETRY.spacingMm, (-30.0, -36.0, -25.0),
                             tuple(rotation.ravel()))
    centre = geometry.indexToLps(np.array(geometry.sizeXyz) / 2.0 - 0.5)
    r = np.linalg.norm(geometry.voxelCentresLps() - centre, axis=-1)
    dose = np.clip(60.0 - r, 0, None)
    (model,) = createIsodoseModels(scene, (dose, geometry), [40.0])
    from vtkmodules.util import numpy_support

    points = numpy_support.vtk_to_numpy(model.GetPolyData().GetPoints().GetData())
    distance = np.linalg.norm(points - lpsToRas(centre), axis=1)
    assert np.abs(distance - 20.0).max() < 0.1


def test_isodose_levels_outside_the_dose_are_skipped(scene):
    before = scene.GetNumberOfNodes()
    models = createIsodoseModels(scene, (coneDose(), DOSE_GEOMETRY), [70.0, 30.0, -1.0])
    assert [m.GetName() for m in models] == ["Isodose 30 Gy"]
    with pytest.raises(InputError, match="colours"):
        createIsodoseModels(scene, (coneDose(), DOSE_GEOMETRY), [10.0, 20.0], colors=[(1, 0, 0)])
    assert scene.GetNumberOfNodes() == before + 2  # one model and its display node


def test_isodose_line_pixels_lie_at_the_analytic_radius(scene, artifactsDir):
    ct = N.volumeNodeFromArray(scene, np.zeros(DOSE_GEOMETRY.shape, np.int16), DOSE_GEOMETRY, "CT")
    models = createIsodoseModels(scene, (coneDose(), DOSE_GEOMETRY), [40.0], colors=[(1, 0, 0)])
    centreRas = lpsToRas(DOSE_CENTRE_LPS)
    rgb, xyToRas = renderSliceViewImage(scene, "Axial", centreRas, background=ct, models=models,
                                        legend=isodoseLegend([40.0], [(1, 0, 0)]), sizePx=(400, 400),
                                        fieldOfViewMm=60.0, annotation=False)
    from ReirradiationDoseLib.mrml.render import writePng

    writePng(rgb, artifactsDir / "mrml_render_isodose_40Gy.png")
    red = isPure(rgb, (1, 0, 0))
    red[:40, 320:] = False  # ignore the legend box (top-right corner)
    rows, cols = np.nonzero(red)
    assert len(rows) > 300
    centrePx = rasToPixel(xyToRas, centreRas, 400)[0]
    pixelMm = 60.0 / 400
    distanceMm = np.hypot(cols - centrePx[0], rows - centrePx[1]) * pixelMm
    # measured: median 19.98 mm, all within 19.74 .. 20.21 mm (0.15 mm pixels, 2-pixel line)
    assert np.median(distanceMm) == pytest.approx(20.0, abs=0.15)
    assert distanceMm.min() > 19.5 and distanceMm.max() < 20.5
    # the whole circle is drawn: every 10-degree sector has line pixels
    angles = np.degrees(np.arctan2(rows - centrePx[1], cols - centrePx[0])) % 360
    assert len(np.unique((angles // 10).astype(int))) == 36


def test_default_isodose_colors_run_from_blue_to_red():
    colors = defaultIsodoseColors([50.0, 10.0, 30.0])
    assert colors[1] == pytest.approx((0.0, 0.2, 1.0))  # lowest level blue
    assert colors[0] == pytest.approx((1.0, 0.0, 0.0))  # highest red
    legend = isodoseLegend([10.0, 50.0], [(0, 0, 1), (1, 0, 0)])
    assert legend == [("50 Gy", (1.0, 0.0, 0.0)), ("10 Gy", (0.0, 0.0, 1.0))]


def test_demo_preview_pictures(tmp_path, artifactsDir):
    paths = renderDemoPreview(tmp_path, sizePx=(256, 256))
    assert [p.name for p in paths] == ["demo_axial.png", "demo_coronal.png"]
    for path in paths:
        picture = readPng(path)
        assert picture.shape == (256, 256, 3)
        assert (picture.sum(axis=-1) > 30).mean() > 0.4  # mostly not black: the body fills the view
        assert isPure(picture, (1, 0, 0)).sum() > 20  # the 54 Gy line
        shutil.copy(path, artifactsDir / f"mrml_{path.name}")


def test_label_layer_shows_the_label_colour(scene, ctVolume):
    labels = np.zeros(GEOMETRY.shape, np.uint8)
    labels[:, 24:40, 24:40] = 1  # a 32 x 32 mm square around the volume centre, every slice
    labelNode = N.volumeNodeFromArray(scene, labels, GEOMETRY, "labels", isLabel=True)
    rgba = [0.0] * 4
    labelNode.GetDisplayNode().GetColorNode().GetColor(1, rgba)
    rgb, _ = renderSliceViewImage(scene, "Axial", None, background=ctVolume, labelmap=labelNode,
                                  sizePx=(128, 128), fieldOfViewMm=128.0, annotation=False)
    centre = rgb[60:68, 60:68].reshape(-1, 3).astype(float)
    np.testing.assert_allclose(centre.mean(axis=0), np.array(rgba[:3]) * 255, atol=3)
    corner = rgb[5:12, 5:12].reshape(-1, 3)
    assert np.all(corner[:, 0] == corner[:, 1])  # grey CT outside the label


def test_the_agreement_map_is_drawn_at_its_label_opacity_over_the_ct(scene):
    """The agreement map's colours are opaque and shown at the label layer's opacity: "1 of 4" over grey is
    (1 - 0.6) grey + 0.6 pale pink. An independent review: with the colour table's own alpha (0.35) the slice view's
    blend lowered the picture's alpha and the view darkened it against its black background, (132, 122, 132) instead
    of (172, 158, 172) over grey 127, nearly invisible on soft tissue."""
    from DelineationReviewLib.mrml.pipeline import AGREEMENT_LABEL_OPACITY, agreementColors

    ct = N.volumeNodeFromArray(scene, np.zeros(GEOMETRY.shape, np.int16), GEOMETRY, "Flat CT")
    ct.GetDisplayNode().AutoWindowLevelOff()
    ct.GetDisplayNode().SetWindowLevel(400, 0)  # 0 HU: mid grey
    labels = np.zeros(GEOMETRY.shape, np.uint8)
    labels[:, 24:40, 8:24] = 1
    labels[:, 24:40, 40:56] = 4
    labelNode = N.volumeNodeFromArray(scene, labels, GEOMETRY, "agreement", isLabel=True)
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "agreement colours")
    colors.SetTypeToUser()
    entries = agreementColors(4)
    colors.SetNumberOfColors(len(entries))
    for index, (name, rgba) in enumerate(entries):
        assert index == 0 or rgba[3] == 1.0
        colors.SetColor(index, name, *rgba)
    labelNode.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
    rgb, xyToRas = renderSliceViewImage(scene, "Axial", None, background=ct, labelmap=labelNode, sizePx=(128, 128),
                                        fieldOfViewMm=128.0, annotation=False, labelOpacity=AGREEMENT_LABEL_OPACITY)
    grey = rgb[60:68, 60:68].reshape(-1, 3).astype(float).mean(axis=0)  # between the two squares
    assert np.allclose(grey, grey[0], atol=0.5) and 120 < grey[0] < 135
    for k in (1, 4):
        centreRas = lpsToRas(GEOMETRY.indexToLps([16.0 if k == 1 else 48.0, 32.0, 12.0]))
        column, row = np.round(rasToPixel(xyToRas, centreRas, rgb.shape[0])[0]).astype(int)
        shown = rgb[row - 3:row + 4, column - 3:column + 4].reshape(-1, 3).astype(float).mean(axis=0)
        expected = (1 - AGREEMENT_LABEL_OPACITY) * grey + AGREEMENT_LABEL_OPACITY * 255 * np.array(entries[k][1][:3])
        np.testing.assert_allclose(shown, expected, atol=2.5, err_msg=entries[k][0])


@pytest.mark.parametrize(("orientation", "expected"), [("Axial", "Axial  S 5.0 mm"),
                                                       ("Coronal", "Coronal  P 10.0 mm"),
                                                       ("Sagittal", "Sagittal  R 15.0 mm")])
def test_position_text_names_the_patient_direction(scene, orientation, expected):
    from ReirradiationDoseLib.mrml.render import _positionText

    node = scene.AddNewNodeByClass("vtkMRMLSliceNode")  # copies the scene's default node: has the presets
    node.SetOrientation(orientation)
    node.JumpSliceByCentering(*lpsToRas(CENTRE_LPS))  # RAS (15, -10, 5)
    node.UpdateMatrices()
    assert _positionText(orientation, node) == expected


def test_render_gives_the_displayable_manager_factory_back(scene, ctVolume, redSphere):
    """The slice-view displayable-manager factory is a process-wide singleton that Slicer points at its own
    application logic at start-up; a picture borrowed it and never gave it back (a review against Slicer's
    qSlicerCoreApplication), and making a scene took it over too. Both now leave it as they found it."""
    import slicer

    from ReirradiationDoseLib.mrml import scene as sceneModule

    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    found = factory.GetMRMLApplicationLogic()
    applications = slicer.vtkSlicerApplicationLogic()  # stands for the application's own logic
    factory.SetMRMLApplicationLogic(applications)
    try:
        other = sceneModule.createScene()
        sceneModule.closeScene(other)
        assert factory.GetMRMLApplicationLogic() is applications
        rgb, _ = renderSliceViewImage(scene, "Axial", None, background=ctVolume, segmentations=[redSphere],
                                      sizePx=(64, 64), annotation=False)
        assert rgb.shape == (64, 64, 3) and factory.GetMRMLApplicationLogic() is applications
    finally:
        factory.SetMRMLApplicationLogic(found)


def test_isodose_pictures_grey_out_where_the_composite_is_unknown():
    """A review: the isodose lines stopped at the prior dose grid's edge, where the prior course alone gave up to
    49.9 Gy EQD2, and nothing in the picture marked the region of unknown composite dose. It is shown darkened inside
    the body, with a legend entry; outside the body, and where the dose is known, the picture is unchanged."""
    import types

    from ReirradiationDoseLib.core.geometry import ImageGeometry, lpsToRas
    from ReirradiationDoseLib.mrml.dosescene import UNKNOWN_DOSE_COLOUR, _unknownDoseOverlay
    from ReirradiationDoseLib.mrml.nodes import volumeNodeFromArray
    from ReirradiationDoseLib.mrml.render import rasToPixel, renderSliceViewImage
    from ReirradiationDoseLib.mrml.scene import closeScene, createScene

    geometry = ImageGeometry((40, 40, 20), (2.0, 2.0, 2.0), (-40.0, -40.0, -20.0))
    composite = np.full((20, 40, 40), 30.0)
    composite[:, :, 28:] = np.nan  # the right third of the grid (i >= 28): no dose known
    body = np.zeros(composite.shape, bool)
    body[:, 5:35, 5:35] = True
    result = types.SimpleNamespace(compositeEqd2Gy=composite, masks={"Body": body}, referenceGeometry=geometry)
    scene = createScene()
    try:
        ct = np.where(body, 50.0, 0.0)
        ct[0, 0, 0] = 100.0  # the body mid-grey in the automatic window
        background = volumeNodeFromArray(scene, ct, geometry, "CT")
        nodes, legend = _unknownDoseOverlay(scene, result)
        assert legend == [("dose unknown (outside a dose grid)", UNKNOWN_DOSE_COLOUR)]
        centre = lpsToRas(geometry.indexToLps([20, 20, 10]))
        plain, _ = renderSliceViewImage(scene, "Axial", positionRas=centre, background=background, sizePx=(200, 200),
                                        annotation=False)
        shown, xyToRas = renderSliceViewImage(scene, "Axial", positionRas=centre, background=background,
                                              segmentations=nodes, fillSegmentations=nodes, sizePx=(200, 200),
                                              annotation=False)
        pixels = {where: rasToPixel(xyToRas, lpsToRas(geometry.indexToLps([i, j, 10])), 200)[0].round().astype(int)
                  for where, (i, j) in {"unknown in body": (31, 20), "known in body": (15, 20),
                                        "unknown outside body": (37, 2)}.items()}
        value = {where: (plain[r, c].astype(int), shown[r, c].astype(int)) for where, (c, r) in pixels.items()}
        before, after = value["unknown in body"]
        assert after.sum() < before.sum() - 60  # darkened
        assert np.array_equal(*value["known in body"]) and np.array_equal(*value["unknown outside body"])
        # all known inside the body: nothing to show
        known = types.SimpleNamespace(compositeEqd2Gy=np.where(body, 30.0, np.nan), masks={"Body": body},
                                      referenceGeometry=geometry)
        assert _unknownDoseOverlay(scene, known) == ([], [])
    finally:
        closeScene(scene)
