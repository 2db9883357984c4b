"""What a widget selection can get wrong, through the Logic's entry points on a real MRML scene (found by a review
that tried about 60 such mistakes on slicer-core): refused naming the node, the scene left as it was."""

import numpy as np
import pytest

from ReirradiationDoseLib.core.errors import InputError, ProcessingCancelled
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.mrml.nodes import (arrayAndGeometryFromVolumeNode, segmentationNodeFromMasks,
                                             volumeNodeFromArray)
from ReirradiationDoseLib.mrml.pipeline import runDoseWorkflow
from test_dose_pipeline_nodes import makeDoseInputs


@pytest.fixture
def inputs(scene):
    return makeDoseInputs(scene)


def nodeIds(scene):
    return sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))


def refused(scene, call, *fragments):
    before = nodeIds(scene)
    with pytest.raises(InputError) as raised:
        call()
    for fragment in fragments:
        assert fragment in str(raised.value), str(raised.value)
    assert nodeIds(scene) == before  # nothing left behind


def run(scene, nodes, **kwargs):
    arguments = dict(structures=nodes["structures"], priorCourses=nodes["priors"])
    arguments.update(kwargs)
    return runDoseWorkflow(scene, nodes["ct"], arguments.pop("currentDose", nodes["current"]), 17, **arguments)


def test_structures_off_the_ct_refused_and_partly_empty_ones_warned(scene, inputs):
    """A segmentation 2 m away gave empty masks, no warning and "0 constraint results failed"."""
    far = ImageGeometry((24, 24, 12), (4.0, 4.0, 5.0), (2000.0, -46.0, -27.5))
    away = segmentationNodeFromMasks(scene, {"GTV": inputs["gtv"]}, far, name="Far structures")
    refused(scene, lambda: run(scene, inputs, structures=away), "no structure of 'Far structures' lies on the "
            "planning CT 'CT'")
    empty = np.zeros_like(inputs["gtv"])
    partly = segmentationNodeFromMasks(scene, {"GTV": inputs["gtv"], "Bladder": empty}, ImageGeometry(
        (24, 24, 12), (4.0, 4.0, 5.0), (-46.0, -46.0, -27.5)), name="Partly", referenceVolumeNode=inputs["ct"])
    out = run(scene, inputs, structures=partly)
    assert any("structure(s) Bladder of 'Partly' are empty on the planning CT 'CT'" in w for w in out["warnings"])


def test_a_structure_reaching_beyond_the_ct_is_warned_with_the_share_outside(scene, inputs):
    """A review of the module: a rectum continuing below the CT's first slice was cut to the CT without a word (the
    case file's reader warns), its DVH and unknown-dose share read on the rest. Drawn on a grid 4 slices longer
    below: 4 of its 8 slices lie outside."""
    longer = ImageGeometry((24, 24, 16), (4.0, 4.0, 5.0), (-46.0, -46.0, -47.5))
    rectum = np.zeros(longer.shape, bool)
    rectum[0:8, 17:22, 8:16] = True  # slices -4..3 of the CT
    gtv = np.zeros(longer.shape, bool)
    gtv[8:12, 8:16, 8:16] = True  # inside
    structures = segmentationNodeFromMasks(scene, {"GTV": gtv, "Rectum": rectum}, longer, name="Longer")
    out = run(scene, inputs, structures=structures)
    assert [w for w in out["warnings"] if "outside the planning CT" in w] == [
        "50.0 % of structure 'Rectum' of 'Longer' lies outside the planning CT 'CT': its volume, DVH and constraints "
        "describe the part inside"]


def test_one_dose_in_two_courses_the_ct_as_dose_and_wrong_node_kinds_refused(scene, inputs):
    priors = [dict(inputs["priors"][0], doseNode=inputs["current"])]
    refused(scene, lambda: run(scene, inputs, priorCourses=priors), "the current course and course 'Prior' use the "
            "same dose 'Current dose': it would be counted twice")
    refused(scene, lambda: run(scene, inputs, currentDose=inputs["ct"]), "the current course: the dose 'CT' is the "
            "planning CT")
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "Labels")
    refused(scene, lambda: run(scene, inputs, structures=labels), "the structures 'Labels' is a "
            "vtkMRMLLabelMapVolumeNode, not a segmentation")
    priors = [dict(inputs["priors"][0], transformNode=inputs["ct"])]
    refused(scene, lambda: run(scene, inputs, priorCourses=priors), "course 'Prior': the registration 'CT' is a "
            "vtkMRMLScalarVolumeNode, not a transform")
    priors = [dict(inputs["priors"][0], numberOfFractions=None)]
    refused(scene, lambda: run(scene, inputs, priorCourses=priors), "course 'Prior' needs its number of fractions")


def test_isodose_levels_that_are_not_doses_refused(scene, inputs):
    """NaN or negative levels given to the Logic were dropped silently (the widget's text box refuses them)."""
    refused(scene, lambda: run(scene, inputs, isodoseLevelsGy=[50.0, float("nan"), -20.0]),
            "isodose levels must be positive doses in Gy, got nan, -20.0")


def test_a_node_deleted_since_it_was_chosen_refused(scene, inputs):
    scene.RemoveNode(inputs["prior"])
    refused(scene, lambda: run(scene, inputs), "course 'Prior': the dose 'Prior dose' is no longer in the scene")


def test_a_dose_in_cgy_refused_or_warned(scene, inputs):
    """3060 "Gy" in 17 fractions gave a composite of 112 046 Gy without a word. A volume not tagged as a dose (no
    units) above 200 Gy is refused; a dose volume (from an RTDOSE: Gy) above it is warned."""
    array, geometry = arrayAndGeometryFromVolumeNode(inputs["current"])
    untagged = volumeNodeFromArray(scene, array * 100.0, geometry, "Dose export")
    refused(scene, lambda: run(scene, inputs, currentDose=untagged), "the dose 'Dose export' reaches 3060.0 Gy",
            "is this one in cGy?")
    tagged = volumeNodeFromArray(scene, array * 100.0, geometry, "Dose (cGy)", isDose=True)
    out = run(scene, inputs, currentDose=tagged)
    assert any("reaches 3060.0 Gy, more than an external-beam course gives" in w for w in out["warnings"])


def test_a_cancel_at_100_percent_keeps_the_finished_result(scene, inputs):
    """A cancel arriving with the last progress call came out as ProcessingCancelled with the outputs in the scene
    (the module then said "nothing was added"): once done, the result is kept and returned."""
    def cancelAtTheEnd(fraction, message=""):
        if fraction >= 1.0:
            raise ProcessingCancelled("Cancel pressed")

    out = run(scene, inputs, progress=cancelAtTheEnd)
    assert out["compositeEqd2"].GetScene() is scene
    before = nodeIds(scene)

    def cancelHalfway(fraction, message=""):
        if fraction >= 0.5:
            raise ProcessingCancelled("Cancel pressed")

    with pytest.raises(ProcessingCancelled):
        run(scene, inputs, progress=cancelHalfway)
    assert nodeIds(scene) == before


def test_a_failed_rerun_keeps_the_previous_result_and_a_rerun_leaves_no_stale_output(scene, inputs, monkeypatch):
    """The outputs were replaced one by one as the new ones were made: a re-run that failed late (here in the
    constraint table) had already removed the previous composite, course and α/β volumes. And a re-run without a
    course left that course's EQD2 volume in the scene."""
    from ReirradiationDoseLib.mrml import dosescene

    first = run(scene, inputs)
    before = nodeIds(scene)
    original = dosescene._table

    def failing(scene_, key, *args, **kwargs):
        if key == "constraintTable":
            raise RuntimeError("forced failure in the constraint table")
        return original(scene_, key, *args, **kwargs)

    monkeypatch.setattr(dosescene, "_table", failing)
    with pytest.raises(RuntimeError, match="forced failure"):
        run(scene, inputs)
    assert nodeIds(scene) == before and first["compositeEqd2"].GetScene() is scene
    monkeypatch.setattr(dosescene, "_table", original)
    names = lambda: sorted(scene.GetNthNode(i).GetName() for i in range(scene.GetNumberOfNodes()))  # noqa: E731
    assert "Prior EQD2 (Gy)" in names()
    again = run(scene, inputs, priorCourses=[])
    assert "Prior EQD2 (Gy)" not in names() and first["compositeEqd2"].GetScene() is None
    assert names().count("Composite EQD2 (Gy)") == 1 and again["compositeEqd2"].GetScene() is scene
    assert inputs["prior"].GetScene() is scene and inputs["structures"].GetScene() is scene  # inputs stay


def test_registering_and_carrying_again_replaces_the_earlier_result(scene):
    """Each Register made a new transform node and each propagation a new "... on <CT>" segmentation. The module's
    Logic.register now registers into the node an earlier registration of the same pair and method made
    (earlierRegistration: the moving volume under it is registered afresh, not started from it); carrying the same
    structures again replaces them. Called without an output node, registerVolumes still makes a new one."""
    from ReirradiationDoseLib.mrml.registration import earlierRegistration, propagateSegmentation, registerVolumes

    geometry = ImageGeometry((20, 20, 10), (4.0, 4.0, 5.0), (-40.0, -40.0, -25.0))
    ramp = np.fromfunction(lambda k, j, i: 10.0 * i + 5.0 * j + 3.0 * k, geometry.shape).astype(np.float32)
    fixed = volumeNodeFromArray(scene, ramp, geometry, "Fixed")
    moving = volumeNodeFromArray(scene, np.roll(ramp, 1, 2), geometry, "Moving")
    mask = np.zeros(geometry.shape, bool)
    mask[3:7, 5:12, 5:12] = True
    structures = segmentationNodeFromMasks(scene, {"Rectum": mask}, geometry, name="Prior structures")
    made = []
    for _ in range(2):
        # as the module's Logic.register does
        out = registerVolumes(scene, fixed, moving, "rigid",
                              outputTransform=earlierRegistration(fixed, moving, "rigid"))
        moving.SetAndObserveTransformNodeID(out["transform"].GetID())
        made.append(out["transform"].GetID())
        assert "Started from" not in out["summary"]
        propagateSegmentation(scene, structures, out["transform"], fixed, moving)
    names = [scene.GetNthNode(i).GetName() for i in range(scene.GetNumberOfNodes())]
    assert made[0] == made[1] and [n for n in names if n.endswith("(rigid)")] == ["Moving to Fixed (rigid)"]
    assert [n for n in names if n.endswith(" on Fixed")] == ["Prior structures on Fixed"]
    assert earlierRegistration(fixed, moving, "affine") is None  # another method: its own node
    fresh = registerVolumes(scene, fixed, moving, "rigid")  # the API without an output node: a new one
    assert fresh["transform"].GetID() != made[0]


def test_degenerate_geometry_refused_or_noted(scene, inputs):
    """Found by the same review: (a) carrying structures that do not lie on the moving CT made an all-empty
    segmentation without a word; (b) a one-slice reference volume cropped every observer's GTV to that slice and the
    review reported Dice 0.86 for them as if whole; (c) a one-slice "planning CT" ran the dose workflow (no isodose
    lines, volumes of one slice)."""
    import SimpleITK as sitk

    from DelineationReviewLib.mrml.pipeline import runDelineationReview
    from ReirradiationDoseLib.mrml.registration import propagateSegmentation
    from ReirradiationDoseLib.mrml.transforms import transformNodeFromSitk

    geometry = ImageGeometry((20, 20, 10), (4.0, 4.0, 5.0), (-40.0, -40.0, -25.0))
    fixed = volumeNodeFromArray(scene, np.zeros(geometry.shape, np.float32), geometry, "Fixed")
    moving = volumeNodeFromArray(scene, np.zeros(geometry.shape, np.float32), geometry, "Moving")
    transform = transformNodeFromSitk(scene, sitk.Euler3DTransform(), "Reg")
    mask = np.zeros(geometry.shape, bool)
    mask[3:7, 5:12, 5:12] = True
    far = ImageGeometry(geometry.sizeXyz, geometry.spacingMm, (-40.0, -40.0, 1975.0))
    elsewhere = segmentationNodeFromMasks(scene, {"Rectum": mask}, far, name="Wrong structures")
    refused(scene, lambda: propagateSegmentation(scene, elsewhere, transform, fixed, moving),
            "no structure of 'Wrong structures' lies on the moving volume 'Moving'")
    partly = segmentationNodeFromMasks(scene, {"Rectum": mask, "Empty": np.zeros(geometry.shape, bool)}, geometry,
                                       name="Prior structures")
    _, warnings = propagateSegmentation(scene, partly, transform, fixed, moving)
    assert any("structure(s) Empty of 'Prior structures' are empty on the moving volume 'Moving'" in w
               for w in warnings)

    observers = [segmentationNodeFromMasks(scene, {"GTV": m}, geometry, name=n)
                 for n, m in (("obs1", mask), ("obs2", np.roll(mask, 1, 2)))]
    whole = runDelineationReview(scene, observers, "GTV")
    assert "outside the common grid" not in whole["summary"]
    oneSlice = volumeNodeFromArray(scene, np.zeros((1, 20, 20), np.float32),
                                   ImageGeometry((20, 20, 1), geometry.spacingMm, (-40.0, -40.0, 0.0)), "one slice")
    cropped = runDelineationReview(scene, observers, "GTV", referenceVolume=oneSlice)
    # each GTV is 4 slices thick (k 3-6); the volume holds slice k = 5: 3 of 4 slices lie outside it
    assert cropped["iovResult"].notes[0].startswith("75.0 % of the GTV of observer 'obs1' lies outside the common "
                                                    "grid (reference volume 'one slice'")
    assert "75.0 % of the GTV of observer 'obs2'" in cropped["summary"]

    ct = volumeNodeFromArray(scene, np.zeros((1, 24, 24), np.int16),
                             ImageGeometry((24, 24, 1), (4.0, 4.0, 5.0), (-46.0, -46.0, -2.5)), "CT one slice")
    refused(scene, lambda: runDoseWorkflow(scene, ct, inputs["current"], 17, priorCourses=inputs["priors"]),
            "the planning CT 'CT one slice' is 24 × 24 × 1 voxels: one voxel thick along z")
