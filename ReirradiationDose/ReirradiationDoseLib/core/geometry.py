"""Image geometry that travels with every array.

Conventions (used throughout the core):

- Physical coordinates are DICOM/ITK **LPS** millimetres. Slicer's RAS is obtained with :func:`lpsToRas`
  (negate x and y); the conversion is explicit, never implied.
- Arrays are indexed ``[k, j, i]`` (slice, row, column), exactly as ``SimpleITK.GetArrayFromImage`` returns them.
  ``sizeXyz`` is ``(ni, nj, nk)``, so ``array.shape == sizeXyz[::-1]``.
- A voxel's physical position is ``origin + direction @ (spacing * [i, j, k])``; the origin is the centre of
  voxel (0, 0, 0).

Core functions take ``(array, ImageGeometry)`` and refuse mismatched grids (:func:`requireSameGrid`); resampling
is always an explicit, named step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .errors import InputError

__all__ = [
    "ImageGeometry",
    "lpsToRas",
    "rasToLps",
    "requireSameGrid",
    "imageFromArray",
    "arrayFromImage",
]

_TOLERANCE_MM = 1e-3


def _tuple3(values, name: str) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"{name} must have 3 components, got {len(out)}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class ImageGeometry:
    """The sampling grid of a 3D image in LPS millimetres.

    Parameters
    ----------
    sizeXyz : number of voxels along i, j, k.
    spacingMm : voxel spacing along i, j, k (mm), all > 0.
    originMm : LPS position of the centre of voxel (0, 0, 0).
    direction : 3x3 direction cosines, columns are the i, j, k axes in LPS, row-major as a 9-tuple
        (SimpleITK's ``GetDirection()`` order).
    """

    sizeXyz: tuple[int, int, int]
    spacingMm: tuple[float, float, float]
    originMm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    def __post_init__(self):
        size = tuple(int(s) for s in self.sizeXyz)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"image size must be 3 positive integers, got {self.sizeXyz}")
        object.__setattr__(self, "sizeXyz", size)
        spacing = _tuple3(self.spacingMm, "spacing")
        if min(spacing) <= 0 or not np.all(np.isfinite(spacing)):
            raise ValueError(f"voxel spacing must be positive, got {spacing} mm")
        object.__setattr__(self, "spacingMm", spacing)
        object.__setattr__(self, "originMm", _tuple3(self.originMm, "origin"))
        direction = tuple(float(v) for v in np.asarray(self.direction, dtype=float).ravel())
        if len(direction) != 9:
            raise ValueError("direction must be a 3x3 matrix")
        matrix = np.array(direction).reshape(3, 3)
        if not np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-4):
            raise ValueError("direction cosines must be orthonormal")
        object.__setattr__(self, "direction", direction)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def fromImage(cls, image: sitk.Image) -> ImageGeometry:
        if image.GetDimension() != 3:
            raise ValueError(f"a 3D image is required, got {image.GetDimension()}D")
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    # ---- derived quantities -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """The numpy array shape ``(nk, nj, ni)``."""
        return self.sizeXyz[::-1]

    @property
    def directionMatrix(self) -> np.ndarray:
        return np.array(self.direction).reshape(3, 3)

    @property
    def voxelVolumeCc(self) -> float:
        return float(np.prod(self.spacingMm)) / 1000.0

    def ijkToLpsMatrix(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping (i, j, k, 1) to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.directionMatrix * np.array(self.spacingMm)[None, :]
        m[:3, 3] = self.originMm
        return m

    def ijkToRasMatrix(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping (i, j, k, 1) to RAS mm (what Slicer's volume nodes use)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.ijkToLpsMatrix()

    def indexToLps(self, ijk) -> np.ndarray:
        """LPS mm of continuous indices ``ijk`` (shape (..., 3), order i, j, k)."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.directionMatrix * np.array(self.spacingMm)[None, :]).T + np.array(self.originMm)

    def lpsToIndex(self, lps) -> np.ndarray:
        """Continuous (i, j, k) indices of LPS points (shape (..., 3))."""
        lps = np.asarray(lps, dtype=float) - np.array(self.originMm)
        return (lps @ self.directionMatrix) / np.array(self.spacingMm)

    def voxelCentresLps(self) -> np.ndarray:
        """LPS coordinates of every voxel centre, shape ``shape + (3,)`` (memory: 24 bytes per voxel)."""
        k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in self.shape), indexing="ij")
        return self.indexToLps(np.stack([i, j, k], axis=-1))

    def boundsLps(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned LPS bounding box of the voxel centres (min corner, max corner)."""
        corners = np.array([[i, j, k] for i in (0, self.sizeXyz[0] - 1) for j in (0, self.sizeXyz[1] - 1)
                            for k in (0, self.sizeXyz[2] - 1)], dtype=float)
        pts = self.indexToLps(corners)
        return pts.min(axis=0), pts.max(axis=0)

    def sameGridAs(self, other: ImageGeometry, toleranceMm: float = _TOLERANCE_MM) -> bool:
        return (
            self.sizeXyz == other.sizeXyz
            and np.allclose(self.spacingMm, other.spacingMm, atol=toleranceMm)
            and np.allclose(self.originMm, other.originMm, atol=toleranceMm)
            and np.allclose(self.direction, other.direction, atol=1e-5)
        )

    def coarsened(self, minimumSpacingMm: float) -> ImageGeometry:
        """The same box (origin, direction, first to last voxel centre, or just beyond) sampled no finer than
        ``minimumSpacingMm`` along each axis; axes already that coarse keep their spacing."""
        spacing = np.maximum(np.array(self.spacingMm), float(minimumSpacingMm))
        extent = np.array(self.spacingMm) * (np.array(self.sizeXyz) - 1)
        size = np.ceil(extent / spacing - 1e-6).astype(int) + 1
        return ImageGeometry(tuple(int(v) for v in size), tuple(float(v) for v in spacing), self.originMm,
                             self.direction)

    def crop(self, startKji, shapeKji) -> ImageGeometry:
        """The sub-grid of ``shapeKji`` voxels starting at index ``startKji`` (array order k, j, i)."""
        start = np.asarray(startKji, dtype=int)[::-1]
        size = np.asarray(shapeKji, dtype=int)[::-1]
        if np.any(start < 0) or np.any(start + size > np.array(self.sizeXyz)) or np.any(size < 1):
            raise ValueError(f"the box at {tuple(start)} of {tuple(size)} voxels is not inside {self.sizeXyz}")
        return ImageGeometry(tuple(int(v) for v in size), self.spacingMm, tuple(self.indexToLps(start)),
                             self.direction)

    def emptyImage(self, pixelId=sitk.sitkFloat32) -> sitk.Image:
        image = sitk.Image(list(self.sizeXyz), pixelId)
        self.applyTo(image)
        return image

    def applyTo(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacingMm)
        image.SetOrigin(self.originMm)
        image.SetDirection(self.direction)
        return image

    def describe(self) -> str:
        return (f"{self.sizeXyz[0]}x{self.sizeXyz[1]}x{self.sizeXyz[2]} voxels of "
                f"{self.spacingMm[0]:g}x{self.spacingMm[1]:g}x{self.spacingMm[2]:g} mm at origin "
                f"({self.originMm[0]:.2f}, {self.originMm[1]:.2f}, {self.originMm[2]:.2f}) LPS")

    def toDict(self) -> dict:
        return {"sizeXyz": list(self.sizeXyz), "spacingMm": list(self.spacingMm),
                "originLpsMm": list(self.originMm), "direction": list(self.direction)}


def lpsToRas(points) -> np.ndarray:
    """Convert LPS points (..., 3) to RAS: negate x and y."""
    out = np.array(points, dtype=float, copy=True)
    out[..., 0] *= -1.0
    out[..., 1] *= -1.0
    return out


def rasToLps(points) -> np.ndarray:
    """Convert RAS points (..., 3) to LPS: negate x and y (the conversion is its own inverse)."""
    return lpsToRas(points)


def requireSameGrid(a: ImageGeometry, b: ImageGeometry, whatA: str = "first image",
                    whatB: str = "second image") -> None:
    """Raise :class:`InputError` unless both geometries describe the same grid (resampling must be explicit)."""
    if not a.sameGridAs(b):
        raise InputError(
            f"{whatA} and {whatB} are on different grids ({a.describe()} vs {b.describe()}); "
            "resample one onto the other explicitly first"
        )


def imageFromArray(array: np.ndarray, geometry: ImageGeometry) -> sitk.Image:
    """A SimpleITK image holding a copy of ``array`` (indexed [k, j, i]) with ``geometry``."""
    array = np.asarray(array)
    if array.shape != geometry.shape:
        raise InputError(f"array shape {array.shape} does not match the geometry {geometry.describe()}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    return geometry.applyTo(image)


def arrayFromImage(image: sitk.Image) -> tuple[np.ndarray, ImageGeometry]:
    """A copy of the image's voxels (indexed [k, j, i]) and its geometry.

    Uses ``GetArrayFromImage`` (a copy), never a view: a view of a temporary image is freed memory
    (REFERENCE §7).
    """
    return sitk.GetArrayFromImage(image), ImageGeometry.fromImage(image)
