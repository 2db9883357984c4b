"""The pipeline's choice of tissue without counterpart for a course's deformable registration
(``pipeline._withoutCounterpartMask``): the default (every GTV*), names from the case file, the 5 mm margin."""

import numpy as np
import SimpleITK as sitk

from ReirradiationDoseLib.core import pipeline
from ReirradiationDoseLib.core.casefile import CourseSpec
from ReirradiationDoseLib.core.geometry import ImageGeometry, imageFromArray


def _reference():
    geometry = ImageGeometry((40, 40, 20), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    return imageFromArray(np.zeros(geometry.shape, np.float32), geometry), geometry


def _masks(geometry):
    gtv = np.zeros(geometry.shape, bool)
    gtv[10, 20, 20] = True  # one voxel
    fibrosis = np.zeros(geometry.shape, bool)
    fibrosis[10, 5, 5] = True
    return {"GTV_recurrence": gtv, "Fibrosis": fibrosis, "Rectum": np.zeros(geometry.shape, bool)}


def test_default_is_every_gtv_grown_by_5_mm():
    reference, geometry = _reference()
    warnings = []
    course = CourseSpec(name="prior", dose="d", registration="deformable")
    mask, names = pipeline._withoutCounterpartMask(course, _masks(geometry), reference, warnings)
    assert names == ["GTV_recurrence"] and warnings == []
    array = sitk.GetArrayFromImage(mask).astype(bool)
    assert pipeline.WITHOUT_COUNTERPART_MARGIN_MM == 5.0
    # a ball of radius 5 mm on a 1 x 1 x 2 mm grid: 5 voxels each way in-plane, 2 slices each way
    assert array[10, 20, 15] and array[10, 20, 25] and not array[10, 20, 14] and not array[10, 20, 26]
    assert array[8, 20, 20] and not array[7, 20, 20]
    assert not array[10, 5, 5]  # fibrosis is not new tissue unless named


def test_named_structures_case_insensitive_and_unknown_names_warn():
    reference, geometry = _reference()
    warnings = []
    course = CourseSpec(name="prior", dose="d", registration="deformable",
                        withoutCounterpart=("gtv_RECURRENCE", "fibrosis", "Seroma"))
    mask, names = pipeline._withoutCounterpartMask(course, _masks(geometry), reference, warnings)
    assert names == ["GTV_recurrence", "Fibrosis"]
    array = sitk.GetArrayFromImage(mask).astype(bool)
    assert array[10, 20, 20] and array[10, 5, 5]
    assert warnings == ["course 'prior': structure 'Seroma' named in 'withoutCounterpart' is not among the reference "
                        "structures; ignored"]


def test_empty_list_or_empty_structures_give_no_mask():
    reference, geometry = _reference()
    course = CourseSpec(name="prior", dose="d", registration="deformable", withoutCounterpart=())
    assert pipeline._withoutCounterpartMask(course, _masks(geometry), reference, []) == (None, [])
    course = CourseSpec(name="prior", dose="d", registration="deformable", withoutCounterpart=("Rectum",))
    assert pipeline._withoutCounterpartMask(course, _masks(geometry), reference, []) == (None, ["Rectum"])


def test_course_side_defaults_to_the_course_gtvs_on_its_own_grid_and_warns_on_unknown_names(tmp_path):
    """``courseWithoutCounterpart``: the course's own structures (on its CT's grid) whose tissue the reference CT no
    longer holds; default every GTV* (the prior primary tumour), names case-insensitive, unknown names warned
    naming the course's structure file."""
    courseImage, geometry = _reference()
    courseMasks = _masks(geometry)
    warnings = []
    course = CourseSpec(name="prior", dose="d", registration="deformable", structures=tmp_path / "prior_rs.dcm")
    mask, names = pipeline._courseWithoutCounterpartMask(course, courseMasks, courseImage, warnings)
    assert names == ["GTV_recurrence"] and warnings == []
    array = sitk.GetArrayFromImage(mask).astype(bool)
    assert array[10, 20, 15] and not array[10, 20, 14] and not array[10, 5, 5]
    course = CourseSpec(name="prior", dose="d", registration="deformable", structures=tmp_path / "prior_rs.dcm",
                        courseWithoutCounterpart=("FIBROSIS", "GTV_primary"))
    mask, names = pipeline._courseWithoutCounterpartMask(course, courseMasks, courseImage, warnings)
    assert names == ["Fibrosis"]
    assert sitk.GetArrayFromImage(mask).astype(bool)[10, 5, 5]
    assert warnings == ["course 'prior': structure 'GTV_primary' named in 'courseWithoutCounterpart' is not among "
                        "the structures of prior_rs.dcm; ignored"]
    # a course without structures of its own has nothing to leave out
    assert pipeline._courseWithoutCounterpartMask(course, None, courseImage, []) == (None, [])


def test_course_labelmap_on_its_own_grid_is_brought_onto_the_course_ct(tmp_path):
    """A course's structures as a .seg.nrrd on a grid of their own (here 2 mm, the CT 1 x 1 x 2 mm) come onto the
    course CT's grid, so its tissue without counterpart is a mask on the grid registerDeformable requires."""
    from ReirradiationDoseLib.core import segio

    courseImage, geometry = _reference()
    own = ImageGeometry((20, 20, 20), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    gtv = np.zeros(own.shape, bool)
    gtv[10, 8:12, 8:12] = True  # 8 x 8 mm at z = 20 mm: voxel centres x and y 16-22 mm, extent 15-23 mm
    path = tmp_path / "prior.seg.nrrd"
    segio.writeSegNrrd(path, {"GTV_primary": gtv, "Rectum": np.zeros(own.shape, bool)}, own)
    course = CourseSpec(name="prior", dose="d", registration="deformable", structures=path)
    courseMasks = pipeline._courseMasks(course, courseImage)
    assert courseMasks["GTV_primary"].shape == geometry.shape
    # the 1 mm voxels whose centres lie in that extent (15-22 mm): 8 x 8 of them, on one 2 mm slice
    assert courseMasks["GTV_primary"][10, 15:23, 15:23].all() and courseMasks["GTV_primary"].sum() == 64
    mask, names = pipeline._courseWithoutCounterpartMask(course, courseMasks, courseImage, [])
    assert names == ["GTV_primary"] and mask.GetSize() == courseImage.GetSize()
