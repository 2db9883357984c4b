"""Registration in the scene: volume nodes in, a transform node out, with what a reviewer needs to trust it.

- :func:`registerVolumes`: the current CT (fixed) and a prior CT or an MRI (moving) -> a transform node placed like
  every registration of this extension (transform *from parent* = fixed RAS -> moving RAS; put the moving volume
  and its dose under it to see them on today's anatomy). Rigid (Mattes mutual information; an MRI starts from the
  centres of mass), or rigid then deformable (diffeomorphic demons inside the body outline, guided by the organs
  delineated on both CTs, with the recurrence exerting no force): the core's
  :func:`~ReirradiationDoseLib.core.pipeline.registerCourse`, the same as the ``dose`` command runs.
- :func:`reviewVolumes`: the moving volume warped onto the fixed grid, a checkerboard, the difference and (for a
  deformable transform) the Jacobian determinant, as volume nodes for visual review.
- :func:`propagateSegmentation`: the moving CT's structures carried onto the fixed CT (nearest neighbour pull-back).

Every function computes first and adds nodes last; on failure it removes what it created, and a re-run replaces
its earlier outputs (found by attribute) only once the new ones exist, so nothing is lost or half-made.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..core import contourcheck
from ..core import pipeline as corePipeline
from ..core import regquality
from ..core.dosemapping import mapMasks
from ..core.errors import InputError
from ..core.geometry import ImageGeometry, imageFromArray
from ..core.progress import finishProgress, noProgress, subProgress
from ..core.registration import (
    FIELD_EXPORT_SPACING_MM,
    affineDecomposition,
    affineWarnings,
    displacementFieldFromTransform,
    linearMotion,
    resampleMoving,
    rotationWarning,
)
from .nodes import (
    JACOBIAN_COLOR_TABLE_NAME,
    JACOBIAN_DESCRIPTION,
    arrayAndGeometryFromVolumeNode,
    geometryFromVolumeNode,
    jacobianColorTableNode,
    masksFromSegmentationNode,
    nodesWithAttribute,
    presentNames,
    removeNamedSince,
    removeNodes,
    segmentationNodeFromMasks,
    segmentationReferenceGeometry,
    volumeNodeFromArray,
)
from .transforms import (
    DICOM_REGISTRATION_ATTRIBUTE,
    sitkTransformFromNode,
    transformNodeFromSitk,
    updateTransformNodeFromSitk,
)

logger = logging.getLogger(__name__)

__all__ = ["registerVolumes", "reviewVolumes", "propagateSegmentation", "REGISTRATION_ATTRIBUTE",
           "REVIEW_ATTRIBUTE", "earlierRegistration", "placeUnderRegistration"]

REGISTRATION_ATTRIBUTE = "Reirradiation.Registration"  # on transform nodes made here: rigid / affine / deformable
PROPAGATED_ATTRIBUTE = "Reirradiation.Propagated"  # on carried segmentations: source | transform | fixed volume IDs
# the segmentation a carried one came from; kept when the carry is renamed "(earlier registration)" (a verification
# review: the guard against registering with it as the fixed structures worked once, then Dice 1.000 again)
CARRIED_FROM_ATTRIBUTE = "Reirradiation.CarriedFrom"
REVIEW_ATTRIBUTE = "Reirradiation.RegistrationReview"  # on review volumes: "<transform node ID>:<kind>"
REVIEW_KINDS = ("warped", "checkerboard", "difference", "jacobian")


def earlierRegistration(fixedVolume, movingVolume, method: str):
    """The transform node an earlier :func:`registerVolumes` made for this fixed and moving volume and method
    (the one the moving volume sits under first), or None. The module registers into it again (as
    ``outputTransform``), so that re-registering a pair refills its node instead of adding one per run."""
    scene = fixedVolume.GetScene()
    wanted = "vtkMRMLGridTransformNode" if method == "deformable" else "vtkMRMLLinearTransformNode"
    found = [scene.GetNthNodeByClass(i, wanted) for i in range(scene.GetNumberOfNodesByClass(wanted))]
    found = [n for n in found if n.GetAttribute(REGISTRATION_ATTRIBUTE) == method
             and n.GetAttribute(REGISTRATION_ATTRIBUTE + "Fixed") == fixedVolume.GetID()
             and n.GetAttribute(REGISTRATION_ATTRIBUTE + "Moving") == movingVolume.GetID()]
    parent = movingVolume.GetParentTransformNode()
    found.sort(key=lambda n: parent is None or n.GetID() != parent.GetID())
    return found[0] if found else None


def _isRegistration(transformNode) -> bool:
    """A transform node made by this extension's registration or DICOM REG reader."""
    return transformNode is not None and bool(transformNode.GetAttribute(REGISTRATION_ATTRIBUTE)
                                              or transformNode.GetAttribute(DICOM_REGISTRATION_ATTRIBUTE))


def _read(read, node, what: str, moving: bool, transformNode, alsoUnder=None):
    """``read(node, ignoreParentTransform)`` with the parent-transform rule: a moving volume may sit under
    ``transformNode``, under ``alsoUnder`` (the initial transform it was aligned by hand with) or under any
    registration of this extension (placed there to be seen aligned), since its own grid is what the registration
    maps into; under any other transform it is refused, without the usual advice to harden it: a hardened moving
    image leaves the frame of its dose and structures. A fixed image under a transform is refused (harden it first)."""
    parent = node.GetParentTransformNode() if node is not None else None
    ignore = moving and parent is not None and (parent is transformNode or (alsoUnder is not None and parent is
                                                                            alsoUnder) or _isRegistration(parent))
    if moving and parent is not None and not ignore:
        raise InputError(f"{what}: '{node.GetName()}' is under the transform '{parent.GetName()}', which is not the "
                         "registration: place it under the registration or under no transform (its own grid is the "
                         "frame the registration maps into; hardening the transform would move it out of that frame)")
    try:
        return read(node, ignore)
    except InputError as error:
        raise InputError(f"{what}: {error}") from error


def _structures(node, movingGeometry: ImageGeometry, transformNode, alsoUnder=None) -> dict:
    """The moving image's segmentation as masks on its grid (parent transform: :func:`_read`, as for the moving
    volume: under the registration, placed there to be seen aligned, its own coordinates are the moving image's)."""
    return _read(lambda n, ignore: masksFromSegmentationNode(n, movingGeometry, ignoreParentTransform=ignore), node,
                 f"segmentation '{node.GetName()}'", True, transformNode, alsoUnder)


def _image(node, what: str, moving: bool = False, transformNode=None,
           alsoUnder=None) -> tuple[sitk.Image, ImageGeometry]:
    """The volume's voxels as a float32 image on its own grid (parent transform: :func:`_read`)."""
    array, geometry = _read(arrayAndGeometryFromVolumeNode, node, what, moving, transformNode, alsoUnder)
    return imageFromArray(array.astype(np.float32, copy=False), geometry), geometry


def _geometry(node, what: str, moving: bool = False, transformNode=None) -> ImageGeometry:
    """The volume's grid, voxels not copied (parent transform: :func:`_read`)."""
    return _read(geometryFromVolumeNode, node, what, moving, transformNode)


def _rigidSummary(transform: sitk.Transform, fixedGeometry: ImageGeometry) -> str:
    angle, shift = linearMotion(transform, fixedGeometry)  # the rotation part, should the map also scale
    return f"rotation {angle:.1f}°, shift of the fixed image's centre {shift:.1f} mm"


def registerVolumes(scene, fixedVolume, movingVolume, method: str = "deformable", *, multimodal: bool = False,
                    fixedStructures=None, movingStructures=None, withoutCounterpart=None,
                    movingWithoutCounterpart=None, targets=(),
                    outputTransform=None, name: str | None = None, progress=None, initialTransform=None,
                    validationStructures=()) -> dict:
    """Register ``movingVolume`` (prior CT, or MRI with ``multimodal=True``) onto ``fixedVolume`` (current CT).

    Parameters
    ----------
    method : ``"rigid"``, ``"affine"`` (rigid, then the 12-parameter refinement of
        :func:`~ReirradiationDoseLib.core.registration.registerAffine`, for images that differ in scale; its
        principal scales are in the summary; warned when one is more than 5 % from 1, or when the refinement matched
        the images worse than its rigid start, whose result is then used) or ``"deformable"``
        (rigid, then demons; CT to CT only).
    fixedStructures : segmentation of the fixed CT. Its body outline (Body / External / Skin / Outline) bounds the
        deformable registration; its GTV* structures (or ``withoutCounterpart``) exert no force.
    movingStructures : segmentation of the moving CT; organs named alike on both sides guide the demons; its GTV*
        structures (or ``movingWithoutCounterpart``) exert no force (the prior tumour, since responded).
    withoutCounterpart : fixed structures whose tissue the moving CT does not hold (None: every GTV*; ``[]``: none),
        grown by 5 mm (:func:`~ReirradiationDoseLib.core.pipeline.withoutCounterpartMask`).
    movingWithoutCounterpart : moving structures whose tissue the fixed CT no longer holds (None: every GTV*;
        ``[]``: none), grown by 5 mm.
    targets : further fixed structure names never used as guides (GTV/CTV/ITV/PTV names never are).
    validationStructures : organs on both images kept out of the guidance, so that their contour check (AAPM TG-132,
        made for every registration with structures on both sides) is independent.
    outputTransform : an existing transform node to fill (linear for rigid and affine, grid for deformable);
        default a new one.
    initialTransform : a linear transform node where the registration starts instead of the automatic
        initialisation: a manual pre-alignment, the moving volume placed under it and moved in the Transforms module
        until it lies roughly on the fixed one (as Slicer stores it: fixed points to the moving volume's own
        coordinates "from parent"). The moving volume may sit under it while registering. None, with the moving
        volume under a linear transform node that is not a registration of this extension: that node is the start
        (the views show the volume through it), and the summary says so; under a non-linear one it is refused.
    progress : ``progress(fraction, message)``; raising ``ProcessingCancelled`` stops it with the scene untouched.

    Returns ``{"transform", "description", "quality", "warnings", "summary"}``; the node carries attributes
    ``Reirradiation.Registration`` (method), ``...Fixed`` / ``...Moving`` (node IDs) and ``...Description`` (JSON
    of the settings and quality numbers). A deformable field is stored on the fixed CT's box no finer than
    ``FIELD_EXPORT_SPACING_MM``.
    """
    progress = progress or noProgress
    if method not in ("rigid", "affine", "deformable"):
        raise InputError(f"unknown registration method '{method}' (use 'rigid', 'affine' or 'deformable')")
    if multimodal and method == "deformable":
        raise InputError("deformable registration is for a prior CT onto the current CT; register an MRI rigidly "
                         "(or affine)")
    if fixedVolume is None or movingVolume is None:
        raise InputError("a fixed (current CT) and a moving volume (prior CT or MRI) are required")
    if fixedVolume is movingVolume:
        raise InputError(f"the fixed and moving volumes are the same node '{fixedVolume.GetName()}'")
    wanted = "vtkMRMLGridTransformNode" if method == "deformable" else "vtkMRMLLinearTransformNode"
    if outputTransform is not None and not outputTransform.IsA(wanted):
        raise InputError(f"the output transform '{outputTransform.GetName()}' is a {outputTransform.GetClassName()}; "
                         f"{method} registration needs a {wanted}")
    parent = movingVolume.GetParentTransformNode()
    impliedStart = (initialTransform is None and parent is not None and parent is not outputTransform
                    and not _isRegistration(parent))
    if impliedStart:
        # the moving volume is shown through a transform the user placed it under (a hand alignment): the
        # registration starts where the views show it, and its result includes that transform, so that it maps into
        # the moving image's own frame, where its dose and structures are (hardening the transform into the volume
        # instead would cut that link)
        if not parent.IsA("vtkMRMLLinearTransformNode"):
            raise InputError(f"moving volume '{movingVolume.GetName()}' is under the {parent.GetClassName()} "
                             f"'{parent.GetName()}': a registration starts from a linear transform; take the volume "
                             "out from under it, or place it under a linear transform node aligned by hand")
        initialTransform = parent
    if initialTransform is not None and not initialTransform.IsA("vtkMRMLLinearTransformNode"):
        raise InputError(f"the initial transform '{initialTransform.GetName()}' is a "
                         f"{initialTransform.GetClassName()}; a registration starts from a linear transform node")
    fixed, fixedGeometry = _image(fixedVolume, f"fixed volume '{fixedVolume.GetName()}'")
    moving, movingGeometry = _image(movingVolume, f"moving volume '{movingVolume.GetName()}'", True,
                                    outputTransform, initialTransform)
    initial = None if initialTransform is None else sitkTransformFromNode(initialTransform, fixedGeometry)
    warnings: list[str] = []
    masks = masksFromSegmentationNode(fixedStructures, fixedGeometry) if fixedStructures is not None else {}
    bodyName = corePipeline.findBody(masks)
    body = None
    if bodyName is not None and masks[bodyName].any():
        body = imageFromArray(masks[bodyName].astype(np.uint8), fixedGeometry)
    elif method == "deformable":
        warnings.append("no body outline (Body / External / Skin / Outline) among the fixed structures: the "
                        "deformable registration covers the whole fixed image, air included")
    pairs, newTissue, newTissueNames, goneTissue, goneTissueNames = None, None, [], None, []
    movingMasks = {} if movingStructures is None else _structures(movingStructures, movingGeometry,
                                                                     outputTransform, initialTransform)
    carriedFrom = fixedStructures.GetAttribute(CARRIED_FROM_ATTRIBUTE) if masks else None
    if movingStructures is not None and carriedFrom == movingStructures.GetID():
        # the fixed structures are the moving ones carried through an earlier registration (a verification review):
        # as guides they would pull this registration towards that one, and its contour check would compare the two
        # registrations, not the registration with today's anatomy; only the body outline is used
        warnings.append(f"the fixed structures '{fixedStructures.GetName()}' were carried from the moving structures "
                        f"'{movingStructures.GetName()}' through an earlier registration: they do not show the "
                        f"anatomy of '{fixedVolume.GetName()}', so they neither guide nor check this registration "
                        "(only their body outline is used); choose structures delineated on the fixed CT")
        masks = {}
    if method == "deformable":
        if movingStructures is not None:
            if masks:
                pairs = corePipeline.pairStructureMasks(masks, fixedGeometry, movingMasks, movingGeometry,
                                                        tuple(targets) + tuple(validationStructures))
            goneNames = None if movingWithoutCounterpart is None else list(movingWithoutCounterpart)
            goneTissue, goneTissueNames = corePipeline.withoutCounterpartMask(
                movingMasks, movingGeometry, goneNames, warnings, "the registration", "movingWithoutCounterpart",
                f"the structures of '{movingStructures.GetName()}'")
        if masks:
            newTissue, newTissueNames = corePipeline.withoutCounterpartMask(
                masks, fixedGeometry, None if withoutCounterpart is None else list(withoutCounterpart), warnings)

    try:
        transform, description = corePipeline.registerCourse(
            fixed, moving, method, body, subProgress(progress, 0.0, 0.95), structureMasks=pairs,
            withoutCounterpart=newTissue, initialization="moments" if multimodal else "geometry",
            courseWithoutCounterpart=goneTissue, initialTransform=initial)
    except InputError as error:
        raise InputError(f"{method} registration of '{movingVolume.GetName()}' (moving) onto "
                         f"'{fixedVolume.GetName()}' (fixed): {error}") from error
    description["structureGuided"] = sorted(pairs or {})
    if initialTransform is not None:
        description["initialTransform"] = initialTransform.GetName()
        if impliedStart:
            description["initialTransformFrom"] = "the transform the moving volume sits under"
    if method == "deformable":
        description["withoutCounterpart"] = {"structures": newTissueNames,
                                             "marginMm": corePipeline.WITHOUT_COUNTERPART_MARGIN_MM}
        description["movingWithoutCounterpart"] = {"structures": goneTissueNames,
                                                   "marginMm": corePipeline.WITHOUT_COUNTERPART_MARGIN_MM}

    if masks and movingMasks:
        # AAPM TG-132's contour check: the organs delineated on both images, carried through the result
        progress(0.95, "Contour check")
        description["contourCheck"] = contourcheck.checkRegistration(
            masks, fixedGeometry, movingMasks, movingGeometry, transform, guided=description["structureGuided"],
            leftOut=tuple(targets) + tuple(newTissueNames) + tuple(goneTissueNames))
    progress(0.96, "Storing the transform")
    label = name or f"{movingVolume.GetName()} to {fixedVolume.GetName()} ({method})"
    grid = fixedGeometry.coarsened(FIELD_EXPORT_SPACING_MM) if method == "deformable" else None
    if outputTransform is not None:
        updateTransformNodeFromSitk(outputTransform, transform, grid)
        node = outputTransform
        # what was made from the transform this one replaces shows the earlier registration (a review: a
        # re-registration into the same node left its checkerboard and carried structures as they were): the review
        # volumes are removed; carried structures, which a user may have edited since (a verification review: an
        # edited PTV was deleted), are kept, renamed and no longer replaced by the next carry; both said
        reviews = [n for n in nodesWithAttribute(scene, REVIEW_ATTRIBUTE)
                   if (n.GetAttribute(REVIEW_ATTRIBUTE) or "").startswith(f"{node.GetID()}:")]
        carried = [n for n in nodesWithAttribute(scene, PROPAGATED_ATTRIBUTE)
                   if (n.GetAttribute(PROPAGATED_ATTRIBUTE) or "").split("|")[1:2] == [node.GetID()]]
        if reviews:
            warnings.append(f"{', '.join(sorted(n.GetName() for n in reviews))}: made from the earlier registration "
                            f"in '{node.GetName()}', removed; review this one again")
            removeNodes(scene, reviews)
        for structures in carried:
            structures.RemoveAttribute(PROPAGATED_ATTRIBUTE)
            structures.SetName(scene.GenerateUniqueName(f"{structures.GetName()} (earlier registration)"))
            warnings.append(f"'{structures.GetName()}' was carried through the earlier registration in "
                            f"'{node.GetName()}': kept, renamed; carry the structures again through this one")
    else:
        node = transformNodeFromSitk(scene, transform, label, grid)
    node.SetAttribute(REGISTRATION_ATTRIBUTE, method)
    node.SetAttribute(REGISTRATION_ATTRIBUTE + "Fixed", fixedVolume.GetID())
    node.SetAttribute(REGISTRATION_ATTRIBUTE + "Moving", movingVolume.GetID())
    node.SetAttribute(REGISTRATION_ATTRIBUTE + "Description", json.dumps(description, default=str))
    quality = description.get("quality") or {}
    if method == "rigid":
        summary = (f"Rigid registration of '{movingVolume.GetName()}' onto '{fixedVolume.GetName()}': "
                   f"{_rigidSummary(transform, fixedGeometry)}.")
    elif method == "affine":
        parts = affineDecomposition(transform)
        scales = ", ".join(f"{v:.3f}" for v in parts["scales"])
        kept = description["affine"]["parameters"]["affineKept"]
        summary = (f"Affine registration of '{movingVolume.GetName()}' onto '{fixedVolume.GetName()}': "
                   + (f"principal scales {scales} (volume ratio {parts['volumeRatio']:.3f}), " if kept else
                      "the refinement matched worse than the rigid start, whose result is used: ")
                   + f"{_rigidSummary(transform, fixedGeometry)}.")
        warnings.extend(affineWarnings(transform, description["affine"]["parameters"], f"'{movingVolume.GetName()}'"))
    elif "error" in quality:
        summary = f"Deformable registration done; its quality could not be computed ({quality['error']})."
    else:
        summary = (f"Deformable registration of '{movingVolume.GetName()}' onto '{fixedVolume.GetName()}': "
                   f"{regquality.qualityText(quality)}.")
        if newTissueNames or goneTissueNames:
            summary += (" Without counterpart (no force): "
                        + "; ".join(f"{', '.join(names)} ({side})" for names, side in
                                    ((newTissueNames, "fixed"), (goneTissueNames, "moving")) if names) + ".")
        folded = regquality.foldingWarning(quality, f"'{movingVolume.GetName()}'",
                                           regquality.MODULE_CONSERVATIVE_REMEDY)
        if folded:
            warnings.append(folded)
    rotated = rotationWarning(description.get("rotationDeg"), f"'{movingVolume.GetName()}'")
    if rotated:
        warnings.append(rotated)
    check = description.get("contourCheck")
    if check is not None:
        summary += " " + contourcheck.checkText(check)
        warnings.extend(contourcheck.agreementWarnings(check["structures"], check["toleranceMm"],
                                                       f"'{movingVolume.GetName()}'"))
    if impliedStart:
        summary += (f" Started from '{initialTransform.GetName()}', the transform '{movingVolume.GetName()}' was "
                    "under; the result includes it.")
    finishProgress(progress, "Registration done")
    logger.info("%s", summary)
    return {"transform": node, "description": description, "quality": quality, "warnings": warnings,
            "summary": summary}


def placeUnderRegistration(movingVolume, transformNode, structures=None, fixedStructures=None) -> list:
    """Place the moving volume under its registration (so the views show it aligned) and, when given, its
    structures too when they are the moving volume's: under the same hand alignment (which the registration
    includes), or, both under none, drawn on its grid (the segmentation's reference geometry is the volume's) — a
    prior CT and its RTSTRUCT as loaded. Left behind they showed misaligned, and from under a hand alignment carrying
    them was refused (a review); today's structures (``fixedStructures``, or on another grid) never move (a
    verification review: picked as the moving ones, they moved under the prior CT's registration). Returns the
    nodes moved."""
    before = movingVolume.GetTransformNodeID()
    moved = [movingVolume]
    if structures is not None and structures is not fixedStructures \
            and structures.GetTransformNodeID() == before \
            and (before is not None or _drawnOn(structures, movingVolume)):
        moved.append(structures)
    for node in moved:
        node.SetAndObserveTransformNodeID(transformNode.GetID())
    return moved


def _drawnOn(segmentationNode, volumeNode) -> bool:
    """The segmentation's reference image geometry is the volume's grid."""
    geometry = segmentationReferenceGeometry(segmentationNode)
    return geometry is not None and geometry.sameGridAs(geometryFromVolumeNode(volumeNode, ignoreParentTransform=True))


def _wholeDisplacementField(transform: sitk.Transform) -> sitk.Image:
    """The displacement of the whole transform on the grid of its displacement field: a grid node alone reads back
    as a DisplacementFieldTransform on its own grid; under other transforms as a composite, sampled on the grid of
    the field inside it (a review: the Jacobian step assumed the former and crashed with an AttributeError)."""
    if isinstance(transform, sitk.DisplacementFieldTransform):
        return transform.GetDisplacementField()
    members = [transform.GetNthTransform(i).Downcast() for i in range(transform.GetNumberOfTransforms())] \
        if isinstance(transform, sitk.CompositeTransform) else []
    fields = [m for m in members if isinstance(m, sitk.DisplacementFieldTransform)]
    if not fields:
        raise InputError("the registration holds no displacement field to compute a Jacobian determinant on")
    grid = fields[0].GetDisplacementField()
    reference = sitk.Image(grid.GetSize(), sitk.sitkUInt8)
    reference.CopyInformation(grid)
    return displacementFieldFromTransform(transform, reference)


def reviewVolumes(scene, fixedVolume, movingVolume, transformNode, squaresMm: float = 20.0,
                  kinds=REVIEW_KINDS) -> dict:
    """Volumes for judging ``transformNode`` (fixed -> moving, as :func:`registerVolumes` makes it) by eye.

    ``kinds`` from ``"warped"`` (the moving volume on the fixed grid, pulled through the transform; outside the
    moving scan its lowest value), ``"checkerboard"`` (fixed and warped in alternating squares of about
    ``squaresMm``), ``"difference"`` (warped - fixed) and ``"jacobian"`` (det(I + grad u) of a deformable transform
    on its own grid; below 0 = folding; skipped for a linear transform). Returns ``{kind: node}``. A second call
    for the same transform node replaces the earlier volumes (once the new ones exist).
    """
    unknown = [k for k in kinds if k not in REVIEW_KINDS]
    if unknown:
        raise InputError(f"unknown review volume(s) {unknown} (use {', '.join(REVIEW_KINDS)})")
    if transformNode is None:
        raise InputError("a registration transform node is required")
    fixed, fixedGeometry = _image(fixedVolume, f"fixed volume '{fixedVolume.GetName()}'")
    moving, _ = _image(movingVolume, f"moving volume '{movingVolume.GetName()}'", True, transformNode)
    transform = sitkTransformFromNode(transformNode, fixedGeometry)
    lowest = float(sitk.GetArrayViewFromImage(moving).min())
    warped = resampleMoving(moving, fixed, transform, defaultValue=lowest)
    images: dict[str, tuple[np.ndarray, ImageGeometry]] = {}
    if "warped" in kinds:
        images["warped"] = (sitk.GetArrayFromImage(warped), fixedGeometry)
    if "checkerboard" in kinds:
        images["checkerboard"] = (sitk.GetArrayFromImage(regquality.checkerboard(fixed, warped, squaresMm)),
                                  fixedGeometry)
    if "difference" in kinds:
        images["difference"] = (sitk.GetArrayFromImage(regquality.differenceImage(fixed, warped)), fixedGeometry)
    if "jacobian" in kinds and not transformNode.IsA("vtkMRMLLinearTransformNode"):
        images["jacobian"] = regquality.jacobianDeterminant(_wholeDisplacementField(transform))

    names = {"warped": f"{movingVolume.GetName()} warped", "checkerboard": f"{transformNode.GetName()} checkerboard",
             "difference": f"{transformNode.GetName()} difference (moving - fixed)",
             "jacobian": f"{transformNode.GetName()} Jacobian determinant"}
    created, old = {}, []
    hadColors = presentNames(scene, (JACOBIAN_COLOR_TABLE_NAME,))
    try:
        for kind, (array, geometry) in images.items():
            key = f"{transformNode.GetID()}:{kind}"
            old += nodesWithAttribute(scene, REVIEW_ATTRIBUTE, key)
            node = volumeNodeFromArray(scene, array, geometry, names[kind])
            node.SetAttribute(REVIEW_ATTRIBUTE, key)
            created[kind] = node
            display = node.GetDisplayNode()
            display.AutoWindowLevelOff()
            if kind == "jacobian":
                display.SetWindowLevelMinMax(0.0, 2.0)
                display.SetAndObserveColorNodeID(jacobianColorTableNode(scene).GetID())
                node.SetDescription(JACOBIAN_DESCRIPTION)
            elif kind == "difference":
                display.SetWindowLevelMinMax(-200.0, 200.0)
            else:
                source = fixedVolume.GetDisplayNode()
                if source is not None:
                    display.SetWindowLevel(source.GetWindow(), source.GetLevel())
    except Exception:
        removeNodes(scene, created.values())
        removeNamedSince(scene, (JACOBIAN_COLOR_TABLE_NAME,), hadColors)
        raise
    removeNodes(scene, old)
    return created


def propagateSegmentation(scene, segmentationNode, transformNode, fixedVolume, movingVolume,
                          name: str | None = None) -> tuple:
    """The moving CT's segmentation carried onto the fixed CT through ``transformNode`` (fixed -> moving).

    Each segment is rasterised on the moving volume's grid and pulled back with nearest neighbour
    (:func:`~ReirradiationDoseLib.core.dosemapping.mapMasks`). Returns ``(new segmentation node, warnings)``; a
    warning names every structure that reaches fixed voxels whose counterpart lies beyond the moving scan (it may
    be cut there) or that maps entirely outside the fixed volume.
    """
    if segmentationNode is None or transformNode is None:
        raise InputError("a segmentation and a registration transform node are required")
    fixedGeometry = _geometry(fixedVolume, f"fixed volume '{fixedVolume.GetName()}'")
    movingGeometry = _geometry(movingVolume, f"moving volume '{movingVolume.GetName()}'", True, transformNode)
    masks = _structures(segmentationNode, movingGeometry, transformNode)
    empty = sorted(name for name, mask in masks.items() if not mask.any())
    if masks and len(empty) == len(masks):
        raise InputError(f"no structure of '{segmentationNode.GetName()}' lies on the moving volume "
                         f"'{movingVolume.GetName()}' (every segment is empty on its grid): the segmentation belongs "
                         "to another image or position; choose the moving CT's own structures")
    transform = sitkTransformFromNode(transformNode, fixedGeometry)
    segmentation = segmentationNode.GetSegmentation()
    colors = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        colors[segment.GetName()] = segment.GetColor()
    mapped, covered = mapMasks(masks, movingGeometry, transform, fixedGeometry)
    nearEdge = ndimage.binary_dilation(~covered)  # fixed voxels next to those that map outside the moving scan
    warnings = []
    if empty:
        warnings.append(f"structure(s) {', '.join(empty)} of '{segmentationNode.GetName()}' are empty on the moving "
                        f"volume '{movingVolume.GetName()}' (outside it, or without contours): carried over empty")
    for structure, mask in masks.items():
        if mask.any() and not mapped[structure].any():
            warnings.append(f"structure '{structure}' of '{segmentationNode.GetName()}' maps entirely outside "
                            f"'{fixedVolume.GetName()}'")
        elif (mapped[structure] & nearEdge).any():
            warnings.append(f"structure '{structure}' of '{segmentationNode.GetName()}' reaches the end of the "
                            f"moving scan '{movingVolume.GetName()}' on '{fixedVolume.GetName()}': it may be cut "
                            "there")
    key = f"{segmentationNode.GetID()}|{transformNode.GetID() if transformNode is not None else ''}|" \
          f"{fixedVolume.GetID()}"
    earlier = nodesWithAttribute(scene, PROPAGATED_ATTRIBUTE, key)
    node = segmentationNodeFromMasks(scene, mapped, fixedGeometry, colors,
                                     name or f"{segmentationNode.GetName()} on {fixedVolume.GetName()}",
                                     referenceVolumeNode=fixedVolume)
    node.SetAttribute(PROPAGATED_ATTRIBUTE, key)
    node.SetAttribute(CARRIED_FROM_ATTRIBUTE, segmentationNode.GetID())
    # carrying the same structures through the same transform again replaces the earlier result (they piled up)
    removeNodes(scene, earlier)
    return node, warnings
