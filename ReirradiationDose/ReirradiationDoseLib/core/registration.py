"""Rigid and deformable image registration on SimpleITK.

Convention (the whole project uses it): a registration result is a SimpleITK transform ``T`` that maps **fixed**
(current planning CT) physical LPS points to **moving** (prior CT, or MRI) points, so that
``sitk.Resample(moving, fixed, T)`` shows the moving image on the fixed grid (the "pull-back" or resampling
transform; in Slicer terms the transform *from parent*).

Deformable results are ``T(x) = R(x + u(x))``: the displacement field ``u`` (on the fixed grid) is applied first,
then the rigid transform ``R``; ``RegistrationResult.displacementField`` holds the *total* displacement
``T(x) - x`` on the fixed grid (what the Jacobian and the quality report are computed on).

Methods (chosen by measurement, see ``Testing/benchmarks/registration_vs_elastix.py``; 2 cores, same run: on a
256x256x100 pelvis phantom with a known 12/10/5 mm deformation, demons 39.0 s, p95 error 1.27 mm in the body, no
folding; elastix's default B-spline map 103.9 s (2.7x), p95 5.7 mm, 165 folding voxels; real CT (spleen crop):
demons 17.7 s, p95 0.79 mm, elastix 13.7 s, 2.73 mm; 512x512x150: demons 41.0 s, p95 1.41 mm, no folding):

- ``"demons"`` (default, CT to CT): multi-resolution diffeomorphic demons (Vercauteren et al., NeuroImage 2009;
  45:S61-S72) with the symmetric (ESM) force, the first-order exponential at the finest level (guarded against
  folding), Gaussian regularisation of the field (2.5 mm) at every level; the finest level is coarsened
  automatically to at most 2 M voxels (field upsampled linearly); the field is computed in the body's bounding box
  (+ margin) and re-extrapolated from inside the body into air between chunks of iterations, so air and the couch
  neither drive nor hold back the deformation; voxels without a counterpart (beyond the end of the prior scan,
  tissue named as new such as the recurrence) exert no force.
- ``"bspline"`` (any modality, Mattes mutual information): multi-level B-spline free-form deformation
  (Rueckert et al., IEEE TMI 1999;18:712-721) optimised with L-BFGS (``LBFGS2``: SimpleITK's multi-level B-spline
  with LBFGSB fails at level 2, REFERENCE §7).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError, ProcessingCancelled
from .geometry import ImageGeometry
from .progress import INTERRUPT, deferInterrupts, noProgress, subProgress

__all__ = [
    "RegistrationResult",
    "registerRigid",
    "registerAffine",
    "affineDecomposition",
    "affineScaleWarning",
    "affineWarnings",
    "compareLinear",
    "AFFINE_SCALE_WARNING",
    "ROTATION_WARNING_DEG",
    "linearMotion",
    "rotationWarning",
    "registerDeformable",
    "resampleMoving",
    "displacementFieldFromTransform",
    "displacementFieldTransform",
    "DEFORMABLE_METHODS",
    "homogeneousMatrix",
]

logger = logging.getLogger(__name__)

DEFORMABLE_METHODS = ("demons", "bspline")
# Rigid registration runs on images no finer than this (anti-aliased, then resampled): six parameters need no 1 mm
# voxels, and ITK otherwise smooths and shrinks the full-resolution images at every level. Clinical-size demo case
# (512x512x150, 1x1x2 mm), same run of Testing/benchmarks/registration_demo.py: 103.8 s -> 17.4 s (metric on one
# thread, _reproducible; on two: 60.7 s -> 10.2 s), the transform
# within 0.47 mm of the full-resolution one everywhere in the body (the small demo case's 3.5 mm CT is unchanged).
RIGID_WORKING_SPACING_MM = 2.0
_AIR_HU = -1000.0
# Demons field regularisation: Gaussian sigma never below 1.5 voxels of the current level. On coarse grids (the demo
# case's 3.5 x 3.5 x 5 mm CT) smoothingSigmaMm = 2.5 mm is only 0.5-0.7 voxel, which barely regularises: where the
# current CT holds tissue without a counterpart in the prior (a recurrence growing into the sacrum) the field
# compressed the prior bone to a Jacobian of 0.0005 and the displacement error p95 in the body was 6.7 mm. With
# 1.5 voxels: Jacobian min 0.12, p95 3.8 mm (intensity only, demo case with its bowel texture moving with the
# anatomy; Testing/benchmarks/registration_demo.py, Testing/unit/test_registration_demo.py). Fine grids
# (<= 1.7 mm, e.g. the spleen test's 0.8 mm) are unchanged at their finest level.
_MIN_SIGMA_VOXELS = 1.5
# Demons ignores voxels whose intensity difference is below this (ITK's IntensityDifferenceThreshold, default 0.001).
# Our CT is scaled to [0, 1] over a 2500 HU window, so ITK's default stops the forces at 2.5 HU: soft-tissue texture
# (tens of HU over several mm) then stops driving the field about 0.5 mm short of alignment. On the 256x256x100
# pelvis phantom this threshold halved the median error (0.85 -> 0.40 mm; p95 1.87 -> 1.44 mm; same time). 1e-6 is
# 0.0025 HU: only exactly equal intensities (air against air) exert no force.
_INTENSITY_THRESHOLD = 1e-6
# A demons level run with the first-order exponential (half the cost of scaling and squaring) is checked after every
# chunk of iterations; when the Jacobian determinant of the field falls below this, the chunk is redone, and the rest
# of the level run, with the exact exponential (the real spleen CT folded to -0.14 with first order at 0.8 mm).
_FOLDING_GUARD = 0.05


# A deformable registration leaving this module (DICOM REG, a Slicer grid transform node) is sampled no finer than
# this: the demons field is computed at 2-3 mm on clinical CTs (maxVoxels) and smoothed over >= 2.5 mm, so linear
# interpolation between 2.5 mm nodes moves it by hundredths of a mm, while 512x512x150 at 1x1x2 mm would make a
# 470 MB vector grid (57 MB at 2.5 mm).
FIELD_EXPORT_SPACING_MM = 2.5


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of a registration.

    transform : maps fixed LPS points to moving LPS points (use it directly in ``sitk.Resample(moving, fixed, T)``).
    metricValue : final value of the similarity metric (method dependent: negative Mattes MI, mean squares...).
    iterations : total optimiser iterations over all resolution levels.
    method : e.g. ``"rigid (mattes)"``, ``"demons"``, ``"bspline (mattes)"``.
    parameters : every setting used, for the record.
    elapsedS : wall-clock time in seconds.
    displacementField : deformable only: total displacement ``T(x) - x`` (sitkVectorFloat64, LPS mm) on the fixed
        grid.
    """

    transform: sitk.Transform
    metricValue: float
    iterations: int
    method: str
    parameters: dict = field(default_factory=dict)
    elapsedS: float = 0.0
    displacementField: sitk.Image | None = None


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def _check3d(image: sitk.Image, what: str) -> None:
    """Refuse an image registration cannot use: not 3D, thinner than 4 voxels, holding values that are not numbers,
    or the same value everywhere (a blank series: every metric is flat, and demons would return no deformation
    without a word)."""
    if not isinstance(image, sitk.Image) or image.GetDimension() != 3:
        raise InputError(f"the {what} image must be a 3D image")
    if min(image.GetSize()) < 4:
        raise InputError(f"the {what} image is too small to register ({image.GetSize()} voxels)")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"the {what} image has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "registration needs a scalar image")
    values = sitk.GetArrayViewFromImage(image)
    if values.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise InputError(f"the {what} image holds {bad} voxels that are not numbers (NaN or infinite)")
    low, high = values.min(), values.max()
    if low == high:
        raise InputError(f"the {what} image has the same value ({float(low):g}) in every voxel: there is nothing to "
                         "register (a blank or wrongly exported series?)")


@contextlib.contextmanager
def _reproducible():
    """Run ITK's metric on one thread, so that the same images give the same transform every run.

    ITK's Mattes mutual information (v4) has each thread buffer its share of the joint-histogram derivatives and add
    it into one shared array under a lock, in whatever order the threads arrive: with two threads the metric value
    differs in its 10th-12th digit from run to run, and an optimiser carries that on (measured here, small demo,
    the prior CT's rigid registration three times: -0.90722003482, -0.90722003547, -0.90722003587; an affine MRI
    refinement's scales differed in the 5th decimal, and in one case it went astray in two of three benchmark runs).
    On one thread the transform is identical bit for bit. Cost, 2 cores, clinical-size demo: rigid prior CT 10 -> 17 s,
    affine MRI 19-34 -> 40 s (the demons stage is unaffected: it was already reproducible). The process-wide default
    is restored afterwards, also on an error."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


# ITK's words when the images do not overlap (or stop overlapping while the optimiser moves), and what they mean
_ITK_NO_OVERLAP = ("samples map outside moving image buffer", "Joint PDF summed to zero")


def _executeRegistration(run: Callable, fixed: sitk.Image, moving: sitk.Image):
    """``run(fixed, moving)`` (an ImageRegistrationMethod's Execute or MetricEvaluate) on one thread
    (:func:`_reproducible`), with ITK's "the images do not overlap" errors turned into an InputError a user can act
    on."""
    try:
        with _reproducible(), deferInterrupts():
            return run(fixed, moving)
    except RuntimeError as error:
        if not any(words in str(error) for words in _ITK_NO_OVERLAP):
            raise
        raise InputError("the moving image does not overlap the fixed image enough to register (ITK: "
                         f"{_itkReason(error)}): it may cover another part of the body, or the optimiser moved it "
                         "away; check the two images' positions, or give an initial transform") from error


def _itkReason(error: RuntimeError) -> str:
    """The first sentence after 'ITK ERROR: ...:' in a SimpleITK exception, without the source file and object
    address."""
    text = str(error)
    marker = text.rfind("ITK ERROR:")
    reason = " ".join((text[marker:].split("):", 1)[-1] if marker >= 0 else text).split())
    return reason.split(". ", 1)[0].rstrip(".")


def _asFloat(image: sitk.Image) -> sitk.Image:
    return sitk.Cast(image, sitk.sitkFloat32) if image.GetPixelID() != sitk.sitkFloat32 else image


def displacementFieldTransform(field: sitk.Image) -> sitk.DisplacementFieldTransform:
    """A DisplacementFieldTransform on a *copy* of ``field`` (the constructor empties its argument, REFERENCE §7)."""
    copy = sitk.Cast(field, sitk.sitkVectorFloat64)  # Cast always returns a new image
    if copy is field or copy.GetSize() == (0, 0, 0):
        copy = sitk.Image(field)
    return sitk.DisplacementFieldTransform(copy)


def displacementFieldFromTransform(transform: sitk.Transform, reference: sitk.Image) -> sitk.Image:
    """The displacement ``T(x) - x`` (sitkVectorFloat64, LPS mm) sampled at the voxel centres of ``reference``."""
    converter = sitk.TransformToDisplacementFieldFilter()
    converter.SetReferenceImage(reference)
    converter.SetOutputPixelType(sitk.sitkVectorFloat64)
    return converter.Execute(transform)


def resampleMoving(moving: sitk.Image, fixed: sitk.Image, transform: sitk.Transform | None,
                   defaultValue: float = _AIR_HU, interpolator=sitk.sitkLinear) -> sitk.Image:
    """``moving`` resampled onto the grid of ``fixed`` through ``transform`` (fixed -> moving points)."""
    return sitk.Resample(_asFloat(moving), fixed, transform or sitk.Transform(3, sitk.sitkIdentity), interpolator,
                         float(defaultValue), sitk.sitkFloat32)


def _observe(process, progress, label: str, fractionOf: Callable[[], float]):
    """Attach an iteration observer forwarding progress; a ProcessingCancelled from the callback stops ``process``.

    Exceptions do not cross SimpleITK's command boundary reliably, so the observer records the cancellation,
    asks the process to stop, and the caller re-raises after Execute returns.
    """
    state = {"cancelled": False, "interrupted": False, "iterations": 0}

    def onIteration():
        state["iterations"] += 1
        if INTERRUPT["signal"] is not None:
            state["interrupted"] = True
        if state["cancelled"] or state["interrupted"]:
            # StopRegistration ends the current pyramid level only: asked again at every iteration of the next
            # levels (a cancelled affine run went on for 5.9 s, the whole run takes 5.0 s)
            process.StopRegistration()
            return
        try:
            progress(fractionOf(), label)
        except ProcessingCancelled:
            state["cancelled"] = True
            process.StopRegistration()
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM arrives in whatever Python runs, here the callback: SimpleITK turned it into a
            # RuntimeError ("error executing the Python Callable"), reported as an internal error; re-raised by the
            # caller after Execute returns (_raiseIfStopped)
            state["interrupted"] = True
            process.StopRegistration()

    process.AddCommand(sitk.sitkIterationEvent, onIteration)
    return state


def _raiseIfStopped(state: dict, message: str) -> None:
    """After Execute: the interruption or cancellation an :func:`_observe` callback recorded, raised."""
    if state.get("interrupted") or INTERRUPT["signal"] is not None:
        raise KeyboardInterrupt
    if state["cancelled"]:
        raise ProcessingCancelled(message)


# ---------------------------------------------------------------------------------------------------------------
# rigid
# ---------------------------------------------------------------------------------------------------------------
METRIC_DOMAIN_RATIO = 0.8
"""``metricDomain="auto"`` computes the metric over the moving image's voxels when the moving image's box holds less
than this fraction of the fixed image's volume. ITK samples the metric on its fixed image; when that is the larger
image (a planning CT of the whole pelvis against an MRI slab of 9 cm), most samples have no counterpart and the
metric rewards sliding the small image to wherever it overlaps least badly. Measured with the demo MRI cut to slabs
along its slices (``Testing/benchmarks/mri_field_of_view.py``, p95 distance to the true map in the body the slab
covers): small demo (6-9 cm slabs) over the CT's voxels 5.7-69 mm from the centres of mass, over the MRI's voxels
0.4-1.3 mm; clinical size (7-11 cm) 0.3-82 mm against 0.2-0.8 mm. The whole MRI (a fifth to a quarter of the CT's
box): 0.70 against 0.64 mm small, 0.21 against 0.08 mm clinical."""


def _boxVolumeMm3(image: sitk.Image) -> float:
    return float(np.prod(np.array(image.GetSize(), dtype=float) * np.array(image.GetSpacing())))


def _metricDomain(fixed: sitk.Image, moving: sitk.Image, requested: str, fixedMask: sitk.Image | None,
                  initialTransform: sitk.Transform | None) -> str:
    """``"fixed"`` or ``"moving"``: over whose voxels the metric is computed (see :data:`METRIC_DOMAIN_RATIO`)."""
    if requested not in ("auto", "fixed", "moving"):
        raise InputError(f"unknown metric domain '{requested}' (use 'auto', 'fixed' or 'moving')")
    swappable = fixedMask is None and (initialTransform is None or initialTransform.IsLinear())
    if requested == "moving" and not swappable:
        raise InputError("the metric can be computed over the moving image's voxels only without a fixed mask and "
                         "from a linear initial transform")
    if requested != "auto":
        return requested
    smaller = _boxVolumeMm3(moving) < METRIC_DOMAIN_RATIO * _boxVolumeMm3(fixed)
    return "moving" if swappable and smaller else "fixed"


def _inverse(transform: sitk.Transform, centre=None) -> sitk.Transform:
    """The inverse of a linear (or composite of linear) transform, as its own kind; an Euler or affine inverse is
    given its centre of rotation at ``centre`` (the same map: only its parameters change)."""
    inverse = transform.GetInverse()
    inverse = inverse.Downcast() if hasattr(inverse, "Downcast") else inverse
    if centre is None or not isinstance(inverse, (sitk.Euler3DTransform, sitk.AffineTransform)):
        return inverse
    centre = np.asarray(centre, dtype=float)
    recentred = sitk.Euler3DTransform() if isinstance(inverse, sitk.Euler3DTransform) else sitk.AffineTransform(3)
    recentred.SetCenter(centre.tolist())
    recentred.SetMatrix(inverse.GetMatrix())
    recentred.SetTranslation((np.array(inverse.TransformPoint(centre.tolist())) - centre).tolist())
    return recentred


def _centre(image: sitk.Image) -> tuple:
    return image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()])


def requireSameGrid(mask: sitk.Image | None, image: sitk.Image, what: str, imageName: str = "the fixed image"
                    ) -> None:
    """Refuse a mask (None: nothing to check) that is not on ``image``'s grid: masks are used voxel by voxel, and one of
    the same size with another origin, spacing or direction was taken as if it lay on the image."""
    if mask is not None and not ImageGeometry.fromImage(mask).sameGridAs(ImageGeometry.fromImage(image)):
        raise InputError(f"{what} must be on the grid of {imageName} ({ImageGeometry.fromImage(image).describe()}"
                         f"; it is on {ImageGeometry.fromImage(mask).describe()})")


# why a transform that is not linear cannot be a registration's start (initialTransform)
NOT_A_LINEAR_START = ("a displacement field or B-spline: a registration starts from a rigid or affine map; give a "
                      "deformable registration as the 'registration' itself")


def _linearAbout(transform: sitk.Transform, centre) -> sitk.Transform:
    """The same linear map as ``transform`` (any linear kind, composites included) with its centre at ``centre``: an
    ``Euler3DTransform`` when it is rigid (orthonormal, no reflection), else an ``AffineTransform``. A transform that is
    not linear (a displacement field, a B-spline) cannot be a registration's start: refused."""
    try:
        matrix = homogeneousMatrix(transform)
    except ValueError:
        raise InputError(f"the initial transform is not linear ({NOT_A_LINEAR_START})") from None
    linear, translation = matrix[:3, :3], matrix[:3, 3]
    centre = np.asarray(centre, dtype=float)
    rigid = np.allclose(linear.T @ linear, np.eye(3), atol=1e-6) and np.linalg.det(linear) > 0
    if rigid:  # a rotation written with 6-8 decimals or in float32 is orthonormal only to 1e-7: ITK's Euler refuses it
        u, _, vt = np.linalg.svd(linear)
        linear = u @ vt
    about = sitk.Euler3DTransform() if rigid else sitk.AffineTransform(3)
    about.SetCenter(centre.tolist())
    about.SetMatrix(linear.ravel().tolist())
    about.SetTranslation((linear @ centre + translation - centre).tolist())  # A (x - c) + c + t' = A x + t
    return about


def _foreground(image: sitk.Image) -> sitk.Image:
    """Where the image shows the patient, 1.0, else 0.0: what the centre of mass is taken of (the "moments" start).
    On raw CT numbers air at -1000 HU outweighs the body: a body 80 mm off the centre of a 480 mm field of view put
    the CT's centre of mass 91 mm from the body's and sent an MRI 213 mm astray. The largest connected region above
    the Otsu threshold of the image clamped at -1024 (a CT's padding outside its reconstruction circle, -3024 or
    -2048, is then air, not a class of its own that made the whole circle the foreground; the table, a separate
    region, drops out)."""
    clamped = sitk.Maximum(sitk.Cast(image, sitk.sitkFloat32), -1024.0)
    above = sitk.OtsuThreshold(clamped, 0, 1)
    regions = sitk.RelabelComponent(sitk.ConnectedComponent(above), sortByObjectSize=True)
    largest = regions == 1
    return sitk.Cast(largest if sitk.GetArrayViewFromImage(largest).any() else above, sitk.sitkFloat32)


def registerRigid(fixed: sitk.Image, moving: sitk.Image, metric: str = "mattes",
                  initialTransform: sitk.Transform | None = None, initialization: str = "geometry",
                  fixedMask: sitk.Image | None = None, progress=None, *, shrinkFactors=(4, 2, 1),
                  smoothingSigmasMm=(2.0, 1.0, 0.0), samplingPercentage: float = 0.25,
                  numberOfIterations: int = 200, seed: int = 20240611,
                  maxSamples: float = 2.0e5,
                  workingSpacingMm: float | None = RIGID_WORKING_SPACING_MM,
                  metricDomain: str = "auto") -> RegistrationResult:
    """Rigid (rotation + translation, Euler angles about the fixed image's centre) registration.

    Multi-resolution (``shrinkFactors`` / ``smoothingSigmasMm``), regular-step gradient descent with optimiser
    scales estimated from a 1 mm physical shift, random sampling of ``samplingPercentage`` of the fixed voxels
    with a fixed ``seed`` (reproducible), at most ``maxSamples`` per level (clinical-size demo case, 512x512x150:
    498 s with 25 % of the full-resolution level on a shared machine). Use ``metric="mattes"`` (Mattes mutual
    information, 50 bins; Mattes et al., IEEE TMI 2003;22:120-128) for MRI to CT, ``"meansquares"`` for CT to CT
    of the same scanner.

    Parameters
    ----------
    fixed, moving : 3D images (the moving is pulled onto the fixed).
    initialTransform : start here instead of the automatic initialisation.
    initialization : ``"geometry"`` (align image centres) or ``"moments"`` (align centres of mass).
    fixedMask : restrict the metric to this region of the fixed image (e.g. the body).
    workingSpacingMm : axes finer than this are Gaussian-smoothed and resampled to it (both images, the mask by
        nearest neighbour) before the pyramid, whose shrink factors then apply to that grid; None: full resolution.
    metricDomain : over whose voxels the metric is computed: ``"fixed"``, ``"moving"`` (the images are registered
        the other way round and the map inverted; not with ``fixedMask`` or a non-linear initial transform) or
        ``"auto"``: the moving image's when its box is much smaller (:data:`METRIC_DOMAIN_RATIO`: an MRI slab
        against a planning CT), else the fixed image's. ``parameters["metricDomain"]`` records the choice.
    progress : ``progress(fraction, message)``; may raise ProcessingCancelled, which stops the registration.

    Returns
    -------
    RegistrationResult whose transform is a ``sitk.Euler3DTransform`` mapping fixed to moving points.
    """
    progress = progress or noProgress
    metric = _checkLinear(fixed, moving, metric, initialization)
    options = dict(shrinkFactors=shrinkFactors, smoothingSigmasMm=smoothingSigmasMm,
                   samplingPercentage=samplingPercentage, numberOfIterations=numberOfIterations, seed=seed,
                   maxSamples=maxSamples, workingSpacingMm=workingSpacingMm)
    if _metricDomain(fixed, moving, metricDomain, fixedMask, initialTransform) == "moving":
        swapped = _rigidFixedDomain(moving, fixed, metric, None if initialTransform is None
                                    else _inverse(initialTransform), initialization, None, progress, **options)
        return replace(swapped, transform=_inverse(swapped.transform, _centre(fixed)),
                       parameters={**swapped.parameters, "metricDomain": "moving"})
    return _rigidFixedDomain(fixed, moving, metric, initialTransform, initialization, fixedMask, progress, **options)


def _rigidFixedDomain(fixed: sitk.Image, moving: sitk.Image, metric: str, initialTransform, initialization: str,
                      fixedMask, progress, *, workingSpacingMm, **options) -> RegistrationResult:
    """:func:`registerRigid` (arguments checked) with the metric over the fixed image's voxels."""
    start = time.perf_counter()
    progress(0.0, "rigid registration: initialising")
    return _rigidOn(fixed, _linearInputs(fixed, moving, fixedMask, workingSpacingMm), metric, initialTransform,
                    initialization, progress, start, workingSpacingMm=workingSpacingMm, **options)


def _checkLinear(fixed: sitk.Image, moving: sitk.Image, metric: str, initialization: str) -> str:
    """Refuse what :func:`registerRigid` / :func:`registerAffine` cannot do; the metric's name in lower case."""
    _check3d(fixed, "fixed")
    _check3d(moving, "moving")
    metric = metric.lower()
    if metric not in ("mattes", "meansquares"):
        raise InputError(f"unknown registration metric '{metric}' (use 'mattes' or 'meansquares')")
    if initialization not in ("geometry", "moments"):
        raise InputError(f"unknown initialisation '{initialization}' (use 'geometry' or 'moments')")
    return metric


def _rigidOn(fixed: sitk.Image, prepared: tuple, metric: str, initialTransform: sitk.Transform | None,
             initialization: str, progress, start: float, *, shrinkFactors, smoothingSigmasMm,
             samplingPercentage: float, numberOfIterations: int, seed: int, maxSamples: float,
             workingSpacingMm: float | None) -> RegistrationResult:
    """:func:`registerRigid` on its working copies ``prepared`` = :func:`_linearInputs` (``start``: its clock)."""
    fixedF, movingF, fixedMask = prepared

    # a given start is re-expressed about the fixed image's centre (the same map): a rigid one is refined in place;
    # any other linear map is kept as a fixed prefix (moving initial transform) and a rigid correction is optimised
    # before it: T = initial o correction. About the start's own centre (0, 0, 0 for a matrix from a file or a Slicer
    # node, ITK giving the correction the prefix's centre) a 6-degree error 670 mm from the origin kept 4 degrees
    # (p95 6.75 mm instead of 0.31 mm)
    prefix = None
    if initialTransform is None:
        if initialization == "geometry":
            transform = sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
                fixedF, movingF, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY))
        else:
            transform = sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
                _foreground(fixedF), _foreground(movingF), sitk.Euler3DTransform(),
                sitk.CenteredTransformInitializerFilter.MOMENTS))
    else:
        given = _linearAbout(initialTransform, _centre(fixed))
        if isinstance(given, sitk.Euler3DTransform):
            transform = given
        else:
            prefix = given
            transform = sitk.Euler3DTransform()
            transform.SetCenter(_centre(fixed))

    method, state = _optimiseLinear(fixedF, movingF, fixedMask, transform, prefix, metric, shrinkFactors,
                                    smoothingSigmasMm, _samplingPercentages(fixed, shrinkFactors, samplingPercentage,
                                                                            maxSamples),
                                    numberOfIterations, seed, progress, "rigid registration")
    final: sitk.Transform = sitk.Euler3DTransform(transform)
    if prefix is not None:
        final = sitk.CompositeTransform([prefix, final])
    elapsed = time.perf_counter() - start
    progress(1.0, "rigid registration done")
    logger.info("rigid registration (%s): metric %.4g after %d iterations in %.1f s (%s)", metric,
                method.GetMetricValue(), state["iterations"], elapsed,
                method.GetOptimizerStopConditionDescription())
    return RegistrationResult(
        transform=final, metricValue=float(method.GetMetricValue()), iterations=int(state["iterations"]),
        method=f"rigid ({metric})",
        parameters={"metric": metric, "initialization": initialization if initialTransform is None else "given",
                    "shrinkFactors": list(shrinkFactors), "smoothingSigmasMm": list(smoothingSigmasMm),
                    "samplingPercentage": samplingPercentage, "maxSamples": maxSamples,
                    "workingSpacingMm": workingSpacingMm, "metricDomain": "fixed",
                    "numberOfIterations": numberOfIterations,
                    "seed": seed, "fixedMask": fixedMask is not None,
                    "stopCondition": method.GetOptimizerStopConditionDescription()},
        elapsedS=elapsed)


def _linearInputs(fixed: sitk.Image, moving: sitk.Image, fixedMask: sitk.Image | None,
                  workingSpacingMm: float | None):
    """Float copies of both images (and the fixed mask) no finer than ``workingSpacingMm`` (None: as they are)."""
    fixedF, movingF = _asFloat(fixed), _asFloat(moving)
    if workingSpacingMm:
        fullFixed = fixedF
        fixedF, movingF = (_atWorkingSpacing(image, float(workingSpacingMm)) for image in (fixedF, movingF))
        if fixedMask is not None and fixedF is not fullFixed:  # the fixed grid changed: the mask follows it
            fixedMask = sitk.Resample(fixedMask, fixedF, sitk.Transform(3, sitk.sitkIdentity),
                                      sitk.sitkNearestNeighbor, 0)
    return fixedF, movingF, fixedMask


def _samplingPercentages(fixed: sitk.Image, shrinkFactors, samplingPercentage: float, maxSamples: float) -> list:
    """The same fraction of every pyramid level, but never more than ``maxSamples`` per level (counted on the
    fixed image's own grid): a 512x512x150 CT at full resolution otherwise draws 10 M samples per iteration."""
    voxels = [float(np.prod([max(1, n // f) for n in fixed.GetSize()])) for f in shrinkFactors]
    return [min(float(samplingPercentage), float(maxSamples) / v) for v in voxels]


def _metricMethod(metric: str, fixedMask: sitk.Image | None) -> sitk.ImageRegistrationMethod:
    """A registration method with the metric of :func:`registerRigid` / :func:`registerAffine` (Mattes mutual
    information with 50 bins, or mean squares), restricted to ``fixedMask``, linear interpolation."""
    method = sitk.ImageRegistrationMethod()
    if metric == "mattes":
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    else:
        method.SetMetricAsMeanSquares()
    if fixedMask is not None:
        method.SetMetricFixedMask(sitk.Cast(fixedMask > 0, sitk.sitkUInt8))
    method.SetInterpolator(sitk.sitkLinear)
    return method


def _optimiseLinear(fixedF: sitk.Image, movingF: sitk.Image, fixedMask: sitk.Image | None, transform: sitk.Transform,
                    prefix: sitk.Transform | None, metric: str, shrinkFactors, smoothingSigmasMm,
                    samplingPercentages, numberOfIterations: int, seed: int, progress, label: str,
                    learningRate: float = 2.0, minStep: float = 1e-3):
    """Optimise ``transform`` (in place) pulling ``movingF`` onto ``fixedF``: regular-step gradient descent with
    scales from a 1 mm physical shift (``learningRate``: the first step, in mm), random sampling of
    ``samplingPercentages`` per level (all voxels where 1) with ``seed``. Returns (method, observer state)."""
    method = _metricMethod(metric, fixedMask)
    if all(p >= 1.0 for p in samplingPercentages):
        method.SetMetricSamplingStrategy(method.NONE)
    else:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentagePerLevel(list(samplingPercentages), int(seed))
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=float(learningRate), minStep=float(minStep),
                                                    numberOfIterations=int(numberOfIterations),
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrinkFactors))
    method.SetSmoothingSigmasPerLevel(list(smoothingSigmasMm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if prefix is not None:
        method.SetMovingInitialTransform(prefix)
    method.SetInitialTransform(transform, inPlace=True)

    levels = len(shrinkFactors)
    state = _observe(method, progress, label,
                     lambda: min(0.99, (method.GetCurrentLevel() + min(method.GetOptimizerIteration(),
                                                                        numberOfIterations) / numberOfIterations)
                                 / levels))
    _executeRegistration(method.Execute, fixedF, movingF)
    _raiseIfStopped(state, f"{label} cancelled")
    return method, state


AFFINE_SCALE_WARNING = 0.05
"""An affine registration whose principal scales differ from 1 by more than this is flagged: a patient does not change
size between scans, and a miscalibrated pixel spacing or MRI gradient scaling is a few per cent at most; a larger
scale more likely means the registration matched the wrong anatomy (a different bladder filling, a field edge)."""


def registerAffine(fixed: sitk.Image, moving: sitk.Image, metric: str = "mattes",
                   initialTransform: sitk.Transform | None = None, initialization: str = "geometry",
                   fixedMask: sitk.Image | None = None, progress=None, *, shrinkFactors=(2, 1),
                   smoothingSigmasMm=(1.0, 0.0), learningRateMm: float = 0.5, numberOfIterations: int = 200,
                   samplingPercentage: float = 1.0, maxSamples: float = 2.0e5, seed: int = 20240611,
                   workingSpacingMm: float | None = RIGID_WORKING_SPACING_MM,
                   metricDomain: str = "auto") -> RegistrationResult:
    """Affine registration (12 parameters): :func:`registerRigid` (its defaults), then the full linear map refined
    from the rigid result, for an image whose scale differs from the fixed image's (a wrong pixel spacing in the
    header, MRI gradient calibration).

    The refinement runs on the last two pyramid levels only (``shrinkFactors``, ``smoothingSigmasMm``) with first
    steps of ``learningRateMm`` (0.5 mm), on every voxel of the working copies (:func:`registerRigid`'s
    ``workingSpacingMm``) up to ``maxSamples`` per level (beyond, a ``seed``-fixed random subset). Measured with the
    demo MRI given known pixel-spacing errors (``Testing/benchmarks/affine_mri.py``, p95 distance to the true map in
    the body; the metric over the MRI's voxels, ``metricDomain="auto"``): clinical size (0.7 x 0.7 x 3 mm MRI),
    +3 / -3 / 0 % rigid 4.92 mm, affine 0.50 mm; -2 / +1 / +3 % 5.28 -> 0.48 mm; without a spacing error the refined
    map matched worse than its rigid start and the rigid result (0.25 mm) was kept. Small demo (2.5 x 2.5 x 5 mm):
    6.10 -> 1.13 mm; 4.67 -> 1.16 mm; no spacing error: the refined map kept (1.13 mm, scales within 0.7 % of one;
    rigid 0.84 mm). Over the CT's voxels, before the metric ran on one thread (:func:`_reproducible`), the small
    -2 / +1 / +3 % refinement went astray in two of three benchmark runs (Mattes -0.38 against the rigid -0.95) and
    the rigid result was kept: the optimiser is sensitive there to differences in the
    metric's 10th digit; it now gives the same map every run. Use it when the images are known or
    seen to differ in scale, and check ``parameters["affine"]`` (:func:`affineDecomposition`),
    ``parameters["affineKept"]`` and :func:`affineWarnings`.

    Returns a RegistrationResult whose transform is a ``sitk.AffineTransform`` mapping fixed to moving points
    (after the initial transform's non-Euler prefix, if one was given, as in :func:`registerRigid`);
    ``parameters["rigid"]`` holds the rigid step's parameters, metric value and iterations. The refined map is kept
    only if it matches the images better than the rigid one by the same metric on the same voxels
    (:func:`compareLinear`, ``parameters["metricComparison"]``); otherwise the rigid result is returned and
    ``parameters["affineKept"]`` is False (callers warn; ``parameters["affine"]`` describes the refined map either
    way). ``metricDomain`` as in :func:`registerRigid` (with ``"moving"`` the metric values are those of the
    images registered the other way round; ``parameters["affine"]`` still describes the fixed -> moving map).
    """
    progress = progress or noProgress
    metric = _checkLinear(fixed, moving, metric, initialization)
    options = dict(shrinkFactors=shrinkFactors, smoothingSigmasMm=smoothingSigmasMm, learningRateMm=learningRateMm,
                   numberOfIterations=numberOfIterations, samplingPercentage=samplingPercentage,
                   maxSamples=maxSamples, seed=seed, workingSpacingMm=workingSpacingMm)
    if _metricDomain(fixed, moving, metricDomain, fixedMask, initialTransform) == "moving":
        result, refined = _affineFixedDomain(moving, fixed, metric, None if initialTransform is None
                                             else _inverse(initialTransform), initialization, None, progress,
                                             **options)
        return replace(result, transform=_inverse(result.transform, _centre(fixed)),
                       parameters={**result.parameters, "affine": affineDecomposition(_inverse(refined)),
                                   "metricDomain": "moving"})
    result, _ = _affineFixedDomain(fixed, moving, metric, initialTransform, initialization, fixedMask, progress,
                                   **options)
    return result


def _affineFixedDomain(fixed: sitk.Image, moving: sitk.Image, metric: str, initialTransform, initialization: str,
                       fixedMask, progress, *, shrinkFactors, smoothingSigmasMm, learningRateMm: float,
                       numberOfIterations: int, samplingPercentage: float, maxSamples: float, seed: int,
                       workingSpacingMm) -> tuple[RegistrationResult, sitk.AffineTransform]:
    """:func:`registerAffine` with the metric over the fixed image's voxels; also returns the refined map (kept or
    not)."""
    start = time.perf_counter()
    progress(0.0, "rigid registration: initialising")
    fixedF, movingF, maskF = prepared = _linearInputs(fixed, moving, fixedMask, workingSpacingMm)
    # the rigid step as registerRigid would run it (its own defaults), on the working copies made once above
    rigidDefaults = {name: p.default for name, p in inspect.signature(registerRigid).parameters.items()
                     if name in ("shrinkFactors", "smoothingSigmasMm", "samplingPercentage", "numberOfIterations",
                                 "seed", "maxSamples")}
    rigid = _rigidOn(fixed, prepared, metric, initialTransform, initialization, subProgress(progress, 0.0, 0.5),
                     start, workingSpacingMm=workingSpacingMm, **rigidDefaults)
    members = _members(rigid.transform)
    euler, prefix = members[-1], (sitk.CompositeTransform(members[:-1]) if len(members) > 1 else None)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(euler.GetCenter())
    affine.SetMatrix(euler.GetMatrix())
    affine.SetTranslation(euler.GetTranslation())
    progress(0.5, "affine registration")
    method, state = _optimiseLinear(fixedF, movingF, maskF, affine, prefix, metric, shrinkFactors, smoothingSigmasMm,
                                    _samplingPercentages(fixedF, shrinkFactors, samplingPercentage, maxSamples),
                                    numberOfIterations, seed,
                                    subProgress(progress, 0.5, 1.0), "affine registration",
                                    learningRate=learningRateMm, minStep=1e-4)
    # the refinement must match the images better than the rigid result it started from, by the same metric on the
    # same samples of the finest working level; otherwise (an optimisation gone astray) the rigid result is kept
    comparison = compareLinear(fixedF, movingF, maskF, metric, {"rigid": euler, "affine": affine}, prefix, maxSamples,
                               seed)
    kept = comparison["affine"] < comparison["rigid"]
    chosen: sitk.Transform = sitk.AffineTransform(affine) if kept else sitk.Euler3DTransform(euler)
    final = chosen if prefix is None else sitk.CompositeTransform([prefix, chosen])
    elapsed = time.perf_counter() - start
    decomposition = affineDecomposition(affine)
    progress(1.0, "affine registration done")
    logger.info("affine registration (%s): metric %.4g against rigid %.4g on the same samples (%s) after %d + %d "
                "iterations in %.1f s; scales %s", metric, comparison["affine"], comparison["rigid"],
                "affine kept" if kept else "rigid kept", rigid.iterations, state["iterations"], elapsed,
                decomposition["scales"])
    return RegistrationResult(
        transform=final, metricValue=float(comparison["affine" if kept else "rigid"]),
        iterations=int(rigid.iterations + state["iterations"]), method=f"affine ({metric})",
        parameters={"metric": metric, "shrinkFactors": list(shrinkFactors),
                    "smoothingSigmasMm": list(smoothingSigmasMm), "learningRateMm": learningRateMm,
                    "numberOfIterations": numberOfIterations, "samplingPercentage": samplingPercentage,
                    "maxSamples": maxSamples, "seed": seed,
                    "workingSpacingMm": workingSpacingMm, "fixedMask": fixedMask is not None,
                    "metricDomain": "fixed",
                    "stopCondition": method.GetOptimizerStopConditionDescription(), "affine": decomposition,
                    "affineKept": bool(kept), "metricComparison": comparison,
                    "rigid": {**rigid.parameters, "metricValue": rigid.metricValue, "iterations": rigid.iterations}},
        elapsedS=elapsed), affine


def compareLinear(fixed: sitk.Image, moving: sitk.Image, fixedMask: sitk.Image | None, metric: str,
                  transforms: dict, prefix: sitk.Transform | None = None, maxSamples: float = 2.0e5,
                  seed: int = 20240611) -> dict:
    """The registration metric (``"mattes"``: Mattes mutual information, 50 bins, negated as ITK reports it;
    ``"meansquares"``) of each ``{name: fixed -> moving transform}`` (applied after ``prefix``'s moving-side
    transform, as in :func:`registerRigid`) on the same voxels of ``fixed`` (every voxel up to ``maxSamples``,
    beyond a ``seed``-fixed random subset; only inside ``fixedMask``). Lower is better for both metrics."""
    values = {}
    fraction = min(1.0, float(maxSamples) / float(np.prod(fixed.GetSize())))
    for name, transform in transforms.items():
        method = _metricMethod(metric, fixedMask)
        if fraction < 1.0:
            method.SetMetricSamplingStrategy(method.RANDOM)
            method.SetMetricSamplingPercentage(fraction, int(seed))
        if prefix is not None:
            method.SetMovingInitialTransform(prefix)
        method.SetInitialTransform(transform, inPlace=False)
        values[name] = float(_executeRegistration(method.MetricEvaluate, fixed, moving))
    return values


def affineDecomposition(transform: sitk.Transform) -> dict:
    """What a linear fixed -> moving map does, from the polar decomposition of its 3x3 part ``A = R S``: the
    principal ``scales`` (singular values of A, largest first: the moving image's anatomy is that many times the
    fixed image's along the principal axes), the ``volumeRatio`` (det A), the ``rotationDeg`` of R, the largest
    ``scaleDeviation`` |s - 1| and the ``anisotropy`` (largest / smallest scale - 1)."""
    matrix = homogeneousMatrix(transform)[:3, :3]
    u, singular, vt = np.linalg.svd(matrix)
    rotation = u @ vt
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))
    return {"scales": [round(float(v), 5) for v in singular], "volumeRatio": round(float(np.linalg.det(matrix)), 5),
            "rotationDeg": round(angle, 3), "scaleDeviation": round(float(np.max(np.abs(singular - 1.0))), 5),
            "anisotropy": round(float(singular[0] / singular[-1] - 1.0), 5)}


def linearMotion(transform: sitk.Transform, geometry: ImageGeometry) -> tuple[float, float]:
    """What a linear fixed -> moving map does to a patient: the angle (degrees) of its rotation part
    (:func:`affineDecomposition`) and the distance (mm) it moves the centre of ``geometry``'s box (the fixed
    image's). ValueError if the map is not linear."""
    matrix = homogeneousMatrix(transform)
    low, high = geometry.boundsLps()
    centre = (np.asarray(low) + np.asarray(high)) / 2.0
    shift = float(np.linalg.norm(matrix[:3, :3] @ centre + matrix[:3, 3] - centre))
    return affineDecomposition(transform)["rotationDeg"], shift


ROTATION_WARNING_DEG = 10.0
"""A rigid or affine registration between images in treatment position (the MRI, a prior planning CT, onto today's
CT) that rotates by more than this is flagged: the patient lies on the same flat couch in the same immobilisation,
a few degrees apart at most (the demo MRI: 5.5°). More suggests the registration matched the wrong anatomy, or an
image not taken in treatment position."""


def rotationWarning(rotationDeg: float | None, what: str) -> str | None:
    """The warning for a registration of ``what`` whose linear part rotates by ``rotationDeg`` (from
    :func:`affineDecomposition`), or None within :data:`ROTATION_WARNING_DEG`."""
    if rotationDeg is None or rotationDeg <= ROTATION_WARNING_DEG:
        return None
    return (f"{what}: the registration rotates it by {rotationDeg:.1f}° (more than {ROTATION_WARNING_DEG:g}°); images "
            "in treatment position differ by a few degrees: check that it was taken in treatment position and look "
            "at the overlay before trusting it")


def affineWarnings(transform: sitk.Transform, parameters: dict, what: str) -> list[str]:
    """What the user must be told about a :func:`registerAffine` result (its ``transform`` and ``parameters``) for
    ``what`` (the MRI or course): that the rigid result was kept because the refinement did not match better, or
    that the kept map scales by more than :data:`AFFINE_SCALE_WARNING`."""
    if not parameters.get("affineKept", True):
        values = parameters["metricComparison"]
        return [f"{what}: the affine refinement did not match the images better than the rigid registration it "
                f"started from ({parameters['metric']} {values['affine']:.4g} against {values['rigid']:.4g} on the "
                "same voxels, lower is better): the rigid result is used"]
    warning = affineScaleWarning(transform, what)
    return [warning] if warning else []


def affineScaleWarning(transform: sitk.Transform, what: str) -> str | None:
    """A warning naming ``what`` when a linear map scales by more than :data:`AFFINE_SCALE_WARNING`; else None."""
    decomposition = affineDecomposition(transform)
    if decomposition["scaleDeviation"] <= AFFINE_SCALE_WARNING:
        return None
    scales = ", ".join(f"{v:.3f}" for v in decomposition["scales"])
    return (f"{what}: the affine registration scales the anatomy by {scales} along its principal axes (more than "
            f"{100 * AFFINE_SCALE_WARNING:.0f} % from 1); a patient does not change size between scans: check the "
            "image's pixel spacing and the alignment before using it, or register rigidly")


def _atWorkingSpacing(image: sitk.Image, spacingMm: float) -> sitk.Image:
    """``image`` on the same box no finer than ``spacingMm`` (:meth:`.ImageGeometry.coarsened`): first smoothed by a
    Gaussian of half the new spacing (less what the old spacing already holds), then sampled linearly; values just
    beyond the last voxel centre are the nearest voxel's. Unchanged when already that coarse."""
    geometry = ImageGeometry.fromImage(image)
    coarse = geometry.coarsened(spacingMm)
    if coarse.sameGridAs(geometry):
        return image
    old, new = np.array(geometry.spacingMm), np.array(coarse.spacingMm)
    variance = np.maximum(new ** 2 - old ** 2, 0.0) / 4.0  # sigma = half the spacing
    smoothed = sitk.DiscreteGaussian(image, variance.tolist(), 32, 0.01, True)
    return sitk.Resample(smoothed, coarse.emptyImage(), sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32, True)


# ---------------------------------------------------------------------------------------------------------------
# deformable
# ---------------------------------------------------------------------------------------------------------------
def _cropRegion(fixed: sitk.Image, fixedMask: sitk.Image | None, marginMm: float):
    """Index box (start, size) of the body bounding box + margin, clipped to the image; whole image if no mask."""
    size = np.array(fixed.GetSize())
    if fixedMask is None:
        return np.zeros(3, int), size
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(fixedMask > 0, sitk.sitkUInt8))
    if 1 not in stats.GetLabels():
        raise InputError("the body mask given for deformable registration is empty")
    box = np.array(stats.GetBoundingBox(1))
    margin = np.ceil(marginMm / np.array(fixed.GetSpacing())).astype(int)
    lo = np.maximum(box[:3] - margin, 0)
    hi = np.minimum(box[:3] + box[3:] + margin, size)
    return lo, hi - lo


def _levelGrid(reference: sitk.Image, spacingMm: np.ndarray) -> sitk.Image:
    """An empty image covering ``reference``'s extent with the given (coarser) spacing."""
    spacing0 = np.array(reference.GetSpacing())
    size0 = np.array(reference.GetSize())
    extent = spacing0 * size0
    size = np.maximum(np.round(extent / spacingMm).astype(int), 4)
    spacing = extent / size
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    # keep the physical extent of voxel boxes: first voxel centre at corner + spacing / 2
    corner = np.array(reference.GetOrigin()) - direction @ (spacing0 / 2.0)
    origin = corner + direction @ (spacing / 2.0)
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetOrigin([float(o) for o in origin])
    grid.SetDirection(reference.GetDirection())
    return grid


def _downsample(image: sitk.Image, grid: sitk.Image) -> sitk.Image:
    factor = np.array(grid.GetSpacing()) / np.array(image.GetSpacing())
    sigmas = [float(0.5 * s * f) if f > 1.01 else 0.0 for s, f in zip(image.GetSpacing(), factor, strict=True)]
    smoothed = image
    if max(sigmas) > 0:
        smoothed = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigmas])
    return sitk.Resample(smoothed, grid, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, _AIR_HU,
                         sitk.sitkFloat32)


def _resampleField(field: sitk.Image, grid: sitk.Image) -> sitk.Image:
    out = sitk.Resample(field, grid, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, 0.0,
                        sitk.sitkVectorFloat64)
    return out


class _AirExtension:
    """Continues the displacement field from the body into the air around it, on one pyramid level.

    Air carries no image forces, and the Gaussian regulariser of demons mixes the field in air with the field inside:
    whatever the air holds drags the field near the skin. Between chunks of iterations the field outside the body is
    replaced:

    - within ``nearMm`` of the skin by the value at the nearest body voxel (a normalised-convolution average of the
      inside, used alone, is biased wherever the field has a gradient across the skin);
    - beyond ``farMm`` by a normalised-convolution extrapolation ``G * (w u) / G * w`` (Knutsson and Westin, CVPR
      1993) with ``G`` a Gaussian of ``sigmaMm`` (blending into one 4x wider towards the box corners), which is
      smooth far out where nearest values would jump;
    - linearly blended in between.

    The body indicator ``w`` may be fractional (coarse levels); the nearest body voxel is taken from ``w >= 0.5``.
    (At the skin of the pelvis phantom the continuation matters little: nearest value 3.1 mm, odd reflection
    ``2 u(p) - u(2p - x)`` 3.1 mm, average alone 3.4 mm p95 error within 5 mm of the skin: what is left there is the
    aperture problem of a fat layer with little texture, where the images match as well with the field flat.)
    """

    def __init__(self, weight: sitk.Image, sigmaMm: float, nearMm: float = 5.0, farMm: float = 20.0):
        self.weight = weight
        self.sigmaMm = float(sigmaMm)
        w = sitk.GetArrayFromImage(weight).astype(np.float64)
        self.w = w
        inside = w >= 0.5
        spacing = np.array(weight.GetSpacing())[::-1]
        if inside.any():
            distance, nearest = ndimage.distance_transform_edt(~inside, sampling=spacing, return_indices=True)
        else:  # pragma: no cover - callers check the mask is not empty
            distance, nearest = np.zeros_like(w), np.indices(w.shape)
        self.nearest = tuple(nearest)
        self.blend = np.clip((distance - nearMm) / (farMm - nearMm), 0.0, 1.0)[..., None]
        # normalised convolution weights (computed once per level)
        self.nearW = self._smooth(w, self.sigmaMm)
        self.farW = np.maximum(self._smooth(w, 4.0 * self.sigmaMm), 1e-3)
        self.convBlend = np.clip(self.nearW / 0.05, 0.0, 1.0)
        self.nearW = np.maximum(self.nearW, 0.05)

    def _smooth(self, array: np.ndarray, sigmaMm: float) -> np.ndarray:
        image = sitk.GetImageFromArray(array)  # float64: no float32 round-off in the far tails
        image.CopyInformation(self.weight)
        return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigmaMm))

    def __call__(self, field: sitk.Image) -> sitk.Image:
        u = sitk.GetArrayFromImage(field)
        w = self.w
        convolved = np.empty_like(u)
        # the recursive Gaussian's far tails are ~0 and may be slightly negative: never divide by them
        for c in range(3):
            inside = u[..., c] * w
            convolved[..., c] = (self.convBlend * self._smooth(inside, self.sigmaMm) / self.nearW
                                 + (1.0 - self.convBlend) * self._smooth(inside, 4.0 * self.sigmaMm) / self.farW)
        outside = (1.0 - self.blend) * u[self.nearest] + self.blend * convolved
        result = sitk.GetImageFromArray(w[..., None] * u + (1.0 - w[..., None]) * outside, isVector=True)
        result.CopyInformation(field)
        return result


def _relaxAir(field: sitk.Image, body: sitk.Image, nearMm: float = 10.0, farMm: float = 20.0,
              sigmaMm: float = 40.0) -> sitk.Image:
    """Beyond ``nearMm`` outside the body, blend the field into its ``sigmaMm`` Gaussian smoothing (fully beyond
    ``farMm``): the field in air carries no information and its extrapolation can fold there; inside the body
    and within ``nearMm`` of the skin nothing changes."""
    distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(sitk.Cast(body > 0.5, sitk.sitkUInt8),
                                                                   insideIsPositive=False, squaredDistance=False,
                                                                   useImageSpacing=True))
    keep = np.clip((farMm - distance) / (farMm - nearMm), 0.0, 1.0)[..., None]
    smoothed = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(field, sigmaMm))
    out = keep * sitk.GetArrayFromImage(field) + (1.0 - keep) * smoothed
    result = sitk.GetImageFromArray(out, isVector=True)
    result.CopyInformation(field)
    return result


def _onGrid(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> tuple[sitk.Image, sitk.Image | None]:
    """``image`` resampled onto ``grid`` through ``transform``, and where the image has no data (outside its scan)
    the value of the nearest voxel that has; with 1 where it has data and 0 elsewhere (None: data everywhere)."""
    resampled = sitk.Resample(_asFloat(image), grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1  # uint8: a quarter of the memory of a float image
    ones.CopyInformation(image)
    known = sitk.Cast(sitk.Resample(ones, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8),
                      sitk.sitkFloat32)
    knownArray = sitk.GetArrayViewFromImage(known)
    if knownArray.min() >= 0.5:
        return resampled, None
    inside = knownArray >= 0.5
    if not inside.any():
        raise InputError("the moving image does not overlap the fixed image after the initial transform")
    values = sitk.GetArrayFromImage(resampled)
    nearest = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
    filled = sitk.GetImageFromArray(values[tuple(nearest)])
    filled.CopyInformation(grid)
    return filled, known


def _demonsPyramid(fixed: sitk.Image, moving: sitk.Image, levelSpacings, iterations, sigmaMm: float,
                   maxStepVoxels: float, progress, stateOut: dict, firstOrderExp: bool | str = False,
                   bodyWeight: sitk.Image | None = None, chunkIterations: int = 20,
                   extrapolationSigmaMm: float = 15.0, intensityThreshold: float = _INTENSITY_THRESHOLD,
                   movingKnown: sitk.Image | None = None, fixedKnown: sitk.Image | None = None) -> sitk.Image:
    """Multi-resolution diffeomorphic demons; returns the field on the finest level's grid (``fixed``'s when the
    finest level is as fine as ``fixed``; sitkVectorFloat64).

    Each level runs in chunks of ``chunkIterations``. With ``bodyWeight`` (body indicator on the fixed grid) the
    field outside the body is re-extrapolated from the inside between chunks (:class:`_AirExtension`).
    ``movingKnown`` (fraction of real moving data per voxel on the fixed grid, before the field: the moving scan may
    end inside the registered box): where the current field maps into moving voxels without data, the fixed image
    is replaced by the warped moving image at the start of each chunk, so that they exert no force (the moving
    image there holds the values of its nearest scanned voxels, not anatomy, and not an air edge).
    """
    field = None
    nLevels = len(levelSpacings)
    if firstOrderExp == "finest":
        firstOrderPerLevel = [False] * (nLevels - 1) + [True]
    elif isinstance(firstOrderExp, bool | int):
        firstOrderPerLevel = [bool(firstOrderExp)] * nLevels
    else:
        firstOrderPerLevel = [bool(v) for v in firstOrderExp]
    for level, (spacing, nIter) in enumerate(zip(levelSpacings, iterations, strict=True)):
        grid = _levelGrid(fixed, spacing) if np.any(spacing > np.array(fixed.GetSpacing()) * 1.01) else fixed
        f = _downsample(fixed, grid) if grid is not fixed else fixed
        m = _downsample(moving, grid) if grid is not fixed else moving
        w, mk, fk = (None if mask is None else _downsampleFraction(mask, grid)
                     for mask in (bodyWeight, movingKnown, fixedKnown))
        chunks = [chunkIterations] * (int(nIter) // chunkIterations) + ([int(nIter) % chunkIterations]
                                                                        if int(nIter) % chunkIterations else [])
        extendIntoAir = _AirExtension(w, extrapolationSigmaMm) if w is not None else None
        firstOrder = firstOrderPerLevel[level]
        done = 0
        index = 0
        while index < len(chunks):
            chunk = chunks[index]
            demons = sitk.DiffeomorphicDemonsRegistrationFilter()
            demons.SetNumberOfIterations(int(chunk))
            demons.SetSmoothDisplacementField(True)
            # ITK's field smoothing works in voxels: convert the physical regularisation to this level's voxels,
            # never below _MIN_SIGMA_VOXELS (see its comment: weaker smoothing lets the field nearly fold)
            demons.SetStandardDeviations([max(_MIN_SIGMA_VOXELS, float(sigmaMm / s)) for s in grid.GetSpacing()])
            demons.SetUseFirstOrderExp(firstOrder)
            demons.SetSmoothUpdateField(False)
            demons.SetMaximumUpdateStepLength(float(maxStepVoxels))
            demons.SetUseGradientType(demons.Symmetric)
            demons.SetMaximumRMSError(0.005)
            demons.SetIntensityDifferenceThreshold(float(intensityThreshold))
            levelProgress = subProgress(progress, (level + done / nIter) / nLevels,
                                        (level + (done + chunk) / nIter) / nLevels)
            state = _observe(demons, levelProgress, f"deformable registration (level {level + 1} of {nLevels})",
                             lambda d=demons, n=chunk: min(d.GetElapsedIterations() / n, 1.0))
            if field is not None and (field.GetSize() != grid.GetSize() or field.GetSpacing() != grid.GetSpacing()):
                field = _resampleField(field, grid)
            before = field
            fUse = f if mk is None and fk is None else _withoutUnknown(f, m, mk, field, fk)
            with deferInterrupts():  # an interruption stops the filter from its callback (core.progress.INTERRUPT)
                field = demons.Execute(fUse, m) if field is None else demons.Execute(fUse, m, field)
            stateOut["iterations"] += state["iterations"]
            stateOut["metric"] = demons.GetMetric()
            _raiseIfStopped(state, "deformable registration cancelled")
            if firstOrder and _jacobianMinimum(field) < _FOLDING_GUARD:
                # the first-order exponential let the field (nearly) fold: redo this chunk, and the rest of the
                # level, with scaling and squaring
                logger.info("demons level %d: first-order exponential folding (Jacobian < %.2f); exact "
                            "exponential from iteration %d", level + 1, _FOLDING_GUARD, done)
                stateOut["firstOrderFallbacks"] += 1
                firstOrder = False
                field = before
                continue
            if w is not None:
                field = extendIntoAir(field)
            done += chunk
            index += 1
    return field


def _coverImage(field: sitk.Image, image: sitk.Image) -> sitk.Image:
    """``field`` (on a grid with ``image``'s direction, covering part of it) continued by replicating its faces
    (zero-flux Neumann padding: continuous, no folding) until its nodes reach beyond every voxel centre of ``image``.
    ITK's displacement field transform moves a point only where its field is defined (within half a node of the
    outermost nodes): elsewhere it leaves the point where it is."""
    size = np.array(image.GetSize()) - 1
    corners = [image.TransformIndexToPhysicalPoint([int(c) for c in size * np.array(bits)])
               for bits in np.ndindex(2, 2, 2)]
    indices = np.array([field.TransformPhysicalPointToContinuousIndex(c) for c in corners])
    top = np.array(field.GetSize()) - 1
    below = np.maximum(np.ceil(-indices.min(axis=0) - 1e-6), 0).astype(int)
    above = np.maximum(np.ceil(indices.max(axis=0) - top - 1e-6), 0).astype(int)
    if not below.any() and not above.any():
        return field
    return sitk.ZeroFluxNeumannPad(field, [int(v) for v in below], [int(v) for v in above])


def _downsampleFraction(fraction: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """A [0, 1] mask on a pyramid level's grid (linear: fractional at coarse levels)."""
    if fraction.GetSize() == grid.GetSize() and fraction.GetSpacing() == grid.GetSpacing():
        return fraction
    return sitk.Resample(fraction, grid, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def _withoutUnknown(f: sitk.Image, m: sitk.Image, mk: sitk.Image | None, field: sitk.Image | None,
                    fk: sitk.Image | None = None) -> sitk.Image:
    """``f`` with its voxels set to the warped ``m`` where ``fk`` (the fixed voxels that have a counterpart) is
    below 0.5 or where their match under ``field`` has no moving data (``mk``)."""
    warpedKnown = mk
    if field is None:
        warped = m
    else:
        transform = displacementFieldTransform(field)
        warped = sitk.Resample(m, f, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        if mk is not None:
            warpedKnown = sitk.Resample(mk, f, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    trusted = np.ones(f.GetSize()[::-1], bool)
    if warpedKnown is not None:
        trusted &= sitk.GetArrayViewFromImage(warpedKnown) >= 0.5
    if fk is not None:
        trusted &= sitk.GetArrayViewFromImage(fk) >= 0.5
    out = sitk.GetImageFromArray(np.where(trusted, sitk.GetArrayViewFromImage(f), sitk.GetArrayViewFromImage(warped)))
    out.CopyInformation(f)
    return out


def _jacobianMinimum(field: sitk.Image) -> float:
    """Minimum of ``det(I + grad u)`` over the field (:func:`.regquality.jacobianDeterminant`)."""
    from .regquality import jacobianDeterminant  # regquality imports this module

    return float(jacobianDeterminant(field)[0].min())


def _normalisedCt(image: sitk.Image, lowHu: float, highHu: float) -> sitk.Image:
    """Clamp to [lowHu, highHu] and scale to [0, 1] (demons forces depend on the intensity scale)."""
    clamped = sitk.Clamp(_asFloat(image), sitk.sitkFloat32, lowHu, highHu)
    return sitk.ShiftScale(clamped, -lowHu, 1.0 / (highHu - lowHu))


def registerDeformable(fixed: sitk.Image, moving: sitk.Image, initialTransform: sitk.Transform | None = None,
                       fixedMask: sitk.Image | None = None, method: str = "demons",
                       structureMasks: dict | None = None, progress=None, *,
                       levelSpacingsMm=None, finestSpacingMm: float | str | None = "auto", maxVoxels: float = 2.0e6,
                       iterationsPerLevel=(100, 100, 60), smoothingSigmaMm: float = 2.5,
                       firstOrderExp: bool | str = "finest",
                       intensityWindowHu=(-1000.0, 1500.0), marginMm: float = 20.0,
                       extrapolationSigmaMm: float = 15.0,
                       metric: str = "mattes", gridSpacingMm: float = 40.0,
                       intensityThreshold: float = _INTENSITY_THRESHOLD,
                       withoutCounterpart: sitk.Image | None = None,
                       movingWithoutCounterpart: sitk.Image | None = None) -> RegistrationResult:
    """Deformable registration of ``moving`` onto ``fixed`` after ``initialTransform`` (usually the rigid result).

    Parameters
    ----------
    fixed, moving : 3D images; CT in HU for ``method="demons"``.
    initialTransform : fixed -> moving transform applied first (the rigid registration); identity if None.
    fixedMask : body outline on the fixed grid. The registration is restricted to its bounding box + ``marginMm``
        (the field is continued outside that box by replicating its faces), and during demons the field outside
        the body is re-extrapolated from the inside (normalised convolution) so that air does not hold it back.
    method : ``"demons"`` (CT to CT) or ``"bspline"`` (Mattes MI; MRI to CT).
    structureMasks : optional ``{name: (fixedMask, movingMask)}`` paired binary masks (fixed mask on the fixed
        grid, moving mask on the moving grid). Demons: each pair adds a smoothed indicator to both intensity images
        (weight 0.5 of the normalised range), which pulls the structures onto each other.
    levelSpacingsMm : voxel spacing of each resolution level (coarse to fine), as a list of scalars (isotropic
        target, never finer than the image); default: 4, 2, 1 times the finest level's spacing.
    finestSpacingMm : spacing of the finest level; the field is upsampled (linear) to the fixed grid. ``"auto"``
        (default): the image's finest spacing, coarsened so the finest level of the registered box holds at most
        ``maxVoxels`` voxels (clinical CTs are then registered at 2-3 mm: the field is smooth below that scale,
        which the report states through ``parameters["levelSpacingsMm"]``). None: full resolution.
    iterationsPerLevel : demons iterations at each level.
    smoothingSigmaMm : Gaussian regularisation of the displacement field (mm, converted to each level's voxels).
    firstOrderExp : demons: approximate the exponential of the update field to first order instead of scaling and
        squaring, at every level (True), none (False) or only the finest (``"finest"``, default), which holds most
        of the cost: 256x256x100 pelvis phantom 64 -> 47 s with the same error. A level run with it is checked for
        folding after every chunk of iterations and falls back to scaling and squaring (the real spleen CT folded
        to a Jacobian of -0.14 at 0.8 mm with first order; with the fallback it ends at +0.34 as with the exact
        exponential).
    intensityWindowHu : CT window mapped to [0, 1] before demons.
    intensityThreshold : demons: intensity differences (in that [0, 1] scale) below which a voxel exerts no force.
    extrapolationSigmaMm : demons with a body mask: Gaussian scale of the extrapolation of the field into air.
    metric, gridSpacingMm : B-spline only: similarity metric (``"mattes"`` or ``"meansquares"``) and control-point
        spacing at the finest level.
    withoutCounterpart : demons: mask on the fixed grid of tissue that has no counterpart in the moving image (a
        recurrence, new fibrosis). It exerts no force (between chunks of iterations the fixed image there is set to
        the warped moving image) and the field there follows the tissue around it, instead of dragging that tissue
        to match the tumour against whatever the prior CT held there.
    movingWithoutCounterpart : demons: mask on the moving grid of tissue that the fixed image no longer holds (the
        primary tumour of the prior course, since responded or resected). Where the field maps a fixed voxel into
        it, that voxel exerts no force (as beyond the end of a shorter moving scan), so the prior tumour's contrast
        does not pull the fixed tissue towards it. Demo case with its prior GTV_primary so (registration_demo.py,
        clinical size, same run): p95 displacement error in the rectum 3.8 -> 2.4 mm (small size 2.7 -> 2.2 mm),
        maximum in the body 9.1 -> 6.0 mm, Jacobian minimum in the body 0.08 -> 0.45; p95 in the body 1.33 -> 1.31
        mm, within 10 mm of the GTV 2.33 -> 2.52 mm.
    progress : ``progress(fraction, message)``; may raise ProcessingCancelled.

    Where the moving scan ends inside the registered box (a shorter prior CT), it continues with its nearest scanned
    values and those voxels exert no force either (an air edge there pulled the last scanned slices by 11 mm p95
    on a 128x128x60 phantom; 1.3 mm without it).

    Returns
    -------
    RegistrationResult with ``transform = CompositeTransform([initial, displacement field])`` (the field is applied
    first) and ``displacementField`` = total displacement on the fixed grid.
    """
    progress = progress or noProgress
    _check3d(fixed, "fixed")
    _check3d(moving, "moving")
    method = method.lower()
    if method not in DEFORMABLE_METHODS:
        raise InputError(f"unknown deformable registration method '{method}' (use one of {DEFORMABLE_METHODS})")
    requireSameGrid(fixedMask, fixed, "the body mask")
    start = time.perf_counter()
    initial = initialTransform or sitk.Transform(3, sitk.sitkIdentity)
    progress(0.0, "deformable registration: preparing images")

    lo, size = _cropRegion(fixed, fixedMask, marginMm)
    fullSize = np.array(fixed.GetSize())
    cropped = any(lo > 0) or any(lo + size < fullSize)

    def toBox(image: sitk.Image) -> sitk.Image:
        """An image on the fixed grid cut to the registered box."""
        return sitk.RegionOfInterest(image, [int(s) for s in size], [int(v) for v in lo]) if cropped else image

    fixedC = toBox(fixed)

    spacing0 = np.array(fixed.GetSpacing())
    if levelSpacingsMm is None:
        base = float(spacing0.min())
        if finestSpacingMm == "auto":
            # the finest level holds at most maxVoxels (demons' cost is voxels x iterations); the field is then
            # upsampled linearly to the fixed grid
            extentMm = spacing0 * size
            while np.prod(np.ceil(extentMm / np.maximum(spacing0, base))) > float(maxVoxels):
                base *= 1.05
        elif finestSpacingMm is not None:
            base = max(base, float(finestSpacingMm))
        levelSpacingsMm = [4 * base, 2 * base, base]
    levels = [np.maximum(spacing0, float(s)) for s in levelSpacingsMm]
    iterationsPerLevel = list(iterationsPerLevel)
    if len(iterationsPerLevel) != len(levels):
        raise InputError("iterationsPerLevel needs one value per resolution level")
    state = {"iterations": 0, "metric": float("nan"), "firstOrderFallbacks": 0}
    parameters: dict = {"method": method, "levelSpacingsMm": [lv.round(3).tolist() for lv in levels],
                        "finestSpacingMm": finestSpacingMm, "bodyMask": fixedMask is not None,
                        "cropIndex": lo.tolist(), "cropSize": size.tolist(), "marginMm": marginMm,
                        "structureGuided": sorted(structureMasks) if structureMasks else []}
    registerProgress = subProgress(progress, 0.05, 0.9)

    if method == "demons":
        # where the moving scan ends inside the box, it continues with its nearest scanned values (no force there,
        # _withoutUnknown) instead of an air edge that would pull tissue towards it
        movingFilled, movingKnown = _onGrid(moving, fixedC, initial)
        if movingWithoutCounterpart is not None:
            requireSameGrid(movingWithoutCounterpart, moving, "the mask of moving tissue without counterpart",
                            "the moving image")
            # tissue only the moving image holds counts as moving voxels without data: no force where it lands
            gone = sitk.Resample(sitk.Cast(movingWithoutCounterpart > 0, sitk.sitkFloat32), fixedC, initial,
                                 sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            movingKnown = (1.0 - gone) if movingKnown is None else movingKnown * (1.0 - gone)
        fixedKnown = None
        if withoutCounterpart is not None:
            requireSameGrid(withoutCounterpart, fixed, "the mask of tissue without counterpart")
            fixedKnown = toBox(sitk.Cast(withoutCounterpart == 0, sitk.sitkFloat32))
        f = _normalisedCt(fixedC, *intensityWindowHu)
        m = _normalisedCt(movingFilled, *intensityWindowHu)
        if structureMasks:
            for name, (fixedS, movingS) in structureMasks.items():
                requireSameGrid(fixedS, fixed, f"the fixed mask of structure '{name}'")
                fs = toBox(sitk.Cast(fixedS > 0, sitk.sitkFloat32))
                ms = sitk.Resample(sitk.Cast(movingS > 0, sitk.sitkFloat32), fixedC, initial, sitk.sitkLinear, 0.0)
                sigma = [2.0 * float(s) for s in fixed.GetSpacing()]
                f = f + 0.5 * sitk.SmoothingRecursiveGaussian(fs, sigma)
                m = m + 0.5 * sitk.SmoothingRecursiveGaussian(ms, sigma)
        bodyWeight = None if fixedMask is None else toBox(sitk.Cast(fixedMask > 0, sitk.sitkFloat32))
        localField = _demonsPyramid(f, m, levels, iterationsPerLevel, smoothingSigmaMm, 2.0,
                                    registerProgress, state, firstOrderExp, bodyWeight,
                                    extrapolationSigmaMm=extrapolationSigmaMm,
                                    intensityThreshold=intensityThreshold,
                                    movingKnown=movingKnown, fixedKnown=fixedKnown)
        if bodyWeight is not None:
            localField = _relaxAir(localField, _downsampleFraction(bodyWeight, localField))
        parameters.update({"firstOrderFallbacks": state["firstOrderFallbacks"],
                           "iterationsPerLevel": iterationsPerLevel, "smoothingSigmaMm": smoothingSigmaMm,
                           "firstOrderExp": firstOrderExp,
                           "intensityWindowHu": list(intensityWindowHu), "force": "symmetric (ESM)",
                           "maximumUpdateStepVoxels": 2.0, "intensityThreshold": intensityThreshold,
                           "minimumSmoothingSigmaVoxels": _MIN_SIGMA_VOXELS,
                           "fixedWithoutCounterpart": withoutCounterpart is not None,
                           "movingWithoutCounterpart": movingWithoutCounterpart is not None})
        methodName = "diffeomorphic demons"
    else:
        movingOnFixed = resampleMoving(moving, fixedC, initial, defaultValue=0.0)
        localField = _bsplineField(fixedC, movingOnFixed, metric, gridSpacingMm, levels, iterationsPerLevel,
                                   registerProgress, state,
                                   None if fixedMask is None else toBox(fixedMask))
        parameters.update({"metric": metric, "gridSpacingMm": gridSpacingMm, "optimizer": "LBFGS2",
                           "iterationsPerLevel": iterationsPerLevel})
        methodName = f"bspline ({metric})"

    progress(0.9, "deformable registration: assembling the transform")
    # The field stays on the grid it was computed on (demons: the finest level's, 2-3 mm on a clinical CT; the
    # transform interpolates it linearly, which at the fixed voxel centres is what upsampling it would store). Outside
    # the registered box (air, at least marginMm from the body) it is continued by replicating its faces. Clinical-size
    # demo case: the field 0.94 GB on the CT's 512x512x150 grid, 0.1 GB so, for the whole run and in its .h5 file.
    localField = _coverImage(localField, fixed)
    parameters["fieldSpacingMm"] = [round(float(v), 3) for v in localField.GetSpacing()]
    if localField.GetPixelID() != sitk.sitkVectorFloat64:
        localField = sitk.Cast(localField, sitk.sitkVectorFloat64)
    # the transform takes over the field's buffer (the image is left empty): no copy of a field that is 0.9 GB on a
    # 512x512x150 grid. With the padding done by ITK instead of numpy (no array copies) the clinical-size demo case's
    # peak memory through the registration went from 8.46 to 6.22 GB, the field identical to the bit (small demo)
    deformation = sitk.DisplacementFieldTransform(localField)
    del localField
    composite = sitk.CompositeTransform(_members(initial) + [deformation])
    totalField = displacementFieldFromTransform(composite, fixed)
    elapsed = time.perf_counter() - start
    progress(1.0, "deformable registration done")
    logger.info("deformable registration (%s): %d iterations in %.1f s", methodName, state["iterations"], elapsed)
    return RegistrationResult(transform=composite, metricValue=float(state["metric"]),
                              iterations=int(state["iterations"]), method=methodName, parameters=parameters,
                              elapsedS=elapsed, displacementField=totalField)


def _members(transform: sitk.Transform) -> list:
    """The transforms of a (nested) composite as one flat list in stack order (first = applied last), or
    ``[transform]``: keeps composites flat."""
    down = transform.Downcast() if hasattr(transform, "Downcast") else transform
    if isinstance(down, sitk.CompositeTransform):
        return [m for i in range(down.GetNumberOfTransforms()) for m in _members(down.GetNthTransform(i))]
    return [down]


def homogeneousMatrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 homogeneous matrix of a linear transform (any kind, composites included), from the images of the
    origin and of 100 mm along each axis; checked on three further points (ValueError if it is not linear). Its kind
    is asked first: a displacement field reads as the identity wherever its grid does not reach, and one not reaching
    the probe points passed as a linear map (the identity)."""
    if not transform.IsLinear():
        raise ValueError("not a linear transform")
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 100.0
        matrix[:3, axis] = (np.array(transform.TransformPoint(unit)) - origin) / 100.0
    matrix[:3, 3] = origin
    for point in ((250.0, -180.0, 90.0), (-300.0, 220.0, -410.0), (37.0, 410.0, 1200.0)):
        expected = matrix[:3, :3] @ np.array(point) + matrix[:3, 3]
        if np.max(np.abs(np.array(transform.TransformPoint(point)) - expected)) > 1e-6:
            raise ValueError("not a linear transform")
    return matrix


def _bsplineField(fixed: sitk.Image, movingOnFixed: sitk.Image, metric: str, gridSpacingMm: float, levels,
                  iterationsPerLevel, progress, stateOut: dict, mask: sitk.Image | None) -> sitk.Image:
    """Multi-level B-spline FFD between ``fixed`` and the (already rigidly resampled) moving; field on fixed grid."""
    nLevels = len(levels)
    spacing0 = np.array(fixed.GetSpacing())
    shrink = [int(max(1, round(float(np.min(lv / spacing0))))) for lv in levels]
    extent = spacing0 * np.array(fixed.GetSize())
    scaleFactors = [2 ** (nLevels - 1 - i) for i in range(nLevels)]
    coarseSpacing = gridSpacingMm * scaleFactors[0]
    meshSize = [max(1, int(math.ceil(e / coarseSpacing))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed, meshSize, order=3)
    if metric not in ("mattes", "meansquares"):
        raise InputError(f"unknown registration metric '{metric}' (use 'mattes' or 'meansquares')")
    method = _metricMethod(metric, mask)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.1, 20240611)
    method.SetOptimizerAsLBFGS2(solutionAccuracy=1e-5, numberOfIterations=int(max(iterationsPerLevel)),
                                deltaConvergenceTolerance=1e-4)
    method.SetInitialTransformAsBSpline(bspline, inPlace=True, scaleFactors=scaleFactors)
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel([0.5 * s * float(spacing0.min()) for s in shrink])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    state = _observe(method, progress, "deformable registration (B-spline)",
                     lambda: min(0.99, (method.GetCurrentLevel() + 0.5) / nLevels))
    _executeRegistration(method.Execute, _asFloat(fixed), movingOnFixed)
    stateOut["iterations"] += state["iterations"]
    stateOut["metric"] = method.GetMetricValue()
    _raiseIfStopped(state, "deformable registration cancelled")
    return displacementFieldFromTransform(bspline, fixed)
