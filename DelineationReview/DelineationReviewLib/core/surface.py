"""Surfaces, surface-element areas and distance maps of binary masks, in millimetres (REFERENCE §4).

Definitions used by every interobserver metric of this package in its default, "voxel" convention (the "surfel"
convention, by name, is described where it is built: :func:`surfelIndicesAndAreas`):

- **Surface** (as MONAI, REFERENCE §4): the object voxels that have at least one face-neighbour (6-connected)
  background voxel. Voxels outside the image count as background, so an object touching the image border has a
  surface there too.
- **Distances** are between voxel centres, in mm, with the (anisotropic) spacing of the grid. The distance map of
  an observer holds, for every voxel of the crop, the Euclidean distance in mm to the nearest centre of that
  observer's surface voxels (an exact Euclidean distance transform with the spacing: SimpleITK's Maurer transform by
  default, ``scipy.ndimage.distance_transform_edt`` with ``sampling=`` as the reference; see :func:`distanceMapMm`).
- **Surface-element area** (for the surface Dice, Nikolov et al. 2021): each surface voxel is weighted by the
  total area of its *exposed faces*, i.e. the faces it shares with a 6-neighbour background voxel. A face normal
  to the i axis has area ``dy * dz``, normal to j ``dx * dz``, normal to k ``dx * dy``; with anisotropic spacing
  the face areas differ per axis, so a voxel on the top of an organ (exposed along k) weighs ``dx * dy`` and one on
  its side ``dy * dz`` (2.5 times more at 1 x 1 x 2.5 mm). The sum of all weights is the area of the voxelised
  (staircase) boundary. It over-estimates the area of a smooth surface (by about 1.5x for a sphere) but it does so
  equally for both observers, and the surface Dice is a ratio of areas.

Why a crop is exact
-------------------
All metric work happens on a crop of the image: the bounding box of the union of all observers' masks plus a margin
of one voxel per side (clipped to the image). The one-voxel margin makes every face of every object voxel
visible, so the surfaces are the same as on the full grid. Both distance backends are exact Euclidean distance
transforms: at each voxel they return the distance to the nearest feature voxel *of the array they are given*.
Because every observer's surface voxels lie inside the crop, the nearest surface voxel of observer B to any voxel of
the crop (in particular to any surface voxel of observer A) is inside the crop too, so the surface-to-surface
distances computed on the crop equal those on the full grid, whatever their size. No margin "as large as the
largest distance" is needed; a larger margin only matters for STAPLE, whose result depends on the grid extent
(see ``consensus.py``).

Float32 is used for the distance maps (relative rounding 6e-8: 0.06 µm at 1 m, far below the voxel size); counts
are exact integers, areas float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = [
    "CropBox",
    "boundingBox",
    "unionCropBox",
    "growCropBox",
    "marginVoxelsFor",
    "surfaceAndAreas",
    "surfaceIndicesAndAreas",
    "SURFACE_CONVENTIONS",
    "surfelAreaTable",
    "surfelIndicesAndAreas",
    "distanceMapMm",
    "ObserverSurface",
    "prepareSurface",
]


@dataclass(frozen=True)
class CropBox:
    """A box of the full grid, ``start`` inclusive and ``stop`` exclusive, indexed (k, j, i) like the arrays."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    marginVoxels: tuple[int, int, int] = (1, 1, 1)
    rule: str = "union bounding box of all observers + margin, clipped to the image"

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    def toDict(self) -> dict:
        return {"rule": self.rule, "startKji": list(self.start), "stopKji": list(self.stop),
                "marginVoxelsKji": list(self.marginVoxels), "shapeKji": list(self.shape)}


def _anyAlong(mask: np.ndarray) -> np.ndarray:
    """Per slice k, whether it holds an object voxel, reading the memory 8 bytes at a time when possible."""
    flat = mask.reshape(mask.shape[0], -1)
    n = flat.shape[1]
    if mask.dtype.itemsize == 1 and flat.flags.c_contiguous and n % 8 == 0:
        return flat.view(np.uint64).any(axis=1)
    return flat.any(axis=1)


def boundingBox(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """(start, stop) of the non-zero voxels of ``mask`` (indexed k, j, i), or None for an empty mask.

    Fast on large, sparse masks: the slices are found first (reading 8 voxels per machine word), then rows and
    columns only within the occupied slab.
    """
    ks = np.flatnonzero(_anyAlong(mask))
    if ks.size == 0:
        return None
    slab = mask[ks[0]:ks[-1] + 1]
    plane = slab.any(axis=0)
    js = np.flatnonzero(plane.any(axis=1))
    is_ = np.flatnonzero(plane.any(axis=0))
    return (int(ks[0]), int(js[0]), int(is_[0])), (int(ks[-1]) + 1, int(js[-1]) + 1, int(is_[-1]) + 1)


def marginVoxelsFor(spacingMmXyz, marginMm: float) -> tuple[int, int, int]:
    """Margin (k, j, i) in voxels covering ``marginMm`` along each axis, never less than one voxel."""
    sx, sy, sz = spacingMmXyz
    return tuple(max(1, int(math.ceil(marginMm / s - 1e-9))) for s in (sz, sy, sx))  # type: ignore[return-value]


def unionCropBox(masks, shape, marginVoxels=(1, 1, 1), rule: str | None = None) -> CropBox | None:
    """Union bounding box of ``masks`` grown by ``marginVoxels`` (k, j, i) and clipped to ``shape``; None if all
    masks are empty."""
    start, stop = None, None
    for mask in masks:
        box = boundingBox(mask)
        if box is None:
            continue
        if start is None:
            start, stop = list(box[0]), list(box[1])
        else:
            start = [min(a, b) for a, b in zip(start, box[0], strict=True)]
            stop = [max(a, b) for a, b in zip(stop, box[1], strict=True)]
    if start is None:
        return None
    margin = tuple(int(m) for m in marginVoxels)
    start = tuple(max(0, a - m) for a, m in zip(start, margin, strict=True))
    stop = tuple(min(n, b + m) for b, m, n in zip(stop, margin, shape, strict=True))
    kwargs = {"rule": rule} if rule else {}
    return CropBox(start, stop, margin, **kwargs)  # type: ignore[arg-type]


def growCropBox(box: CropBox, marginVoxels, shape, rule: str | None = None) -> CropBox:
    """``box`` grown by ``marginVoxels`` (k, j, i) more on each side, clipped to ``shape``."""
    margin = tuple(int(m) for m in marginVoxels)
    start = tuple(max(0, a - m) for a, m in zip(box.start, margin, strict=True))
    stop = tuple(min(n, b + m) for b, m, n in zip(box.stop, margin, shape, strict=True))
    total = tuple(a + m for a, m in zip(box.marginVoxels, margin, strict=True))
    return CropBox(start, stop, total, rule or box.rule)  # type: ignore[arg-type]


def _faceAreasKji(spacingMmXyz) -> tuple[float, float, float]:
    sx, sy, sz = (float(s) for s in spacingMmXyz)
    # face normal to k: dx*dy; normal to j: dx*dz; normal to i: dy*dz
    return sx * sy, sx * sz, sy * sz


def _exposedFaces(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per axis (k, j, i): boolean arrays of the object voxels whose face towards -axis / +axis is exposed."""
    out = []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        minus = mask.copy()  # the neighbour at n-1 is background (or outside the array for n = 0)
        minus[hi] &= ~mask[lo]
        plus = mask.copy()
        plus[lo] &= ~mask[hi]
        out.append((minus, plus))
    return out


def surfaceIndicesAndAreas(mask: np.ndarray, spacingMmXyz) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the 6-connected surface voxels of a boolean ``mask`` and their exposed-face areas (mm²).

    Voxels outside the array count as background.
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    faceArea = _faceAreasKji(spacingMmXyz)
    faces = _exposedFaces(mask)
    surface = faces[0][0] | faces[0][1]
    for minus, plus in faces[1:]:
        surface |= minus
        surface |= plus
    indices = np.flatnonzero(surface)
    areas = np.zeros(indices.size, dtype=np.float64)
    for (minus, plus), area in zip(faces, faceArea, strict=True):
        count = minus.ravel()[indices].astype(np.uint8) + plus.ravel()[indices]
        areas += count * area
    return indices, areas


def surfaceAndAreas(mask: np.ndarray, spacingMmXyz) -> tuple[np.ndarray, np.ndarray]:
    """The 6-connected surface of a boolean ``mask`` and the exposed-face area of every voxel (mm², float64).

    Returns ``(surface, areaMm2)``: ``surface`` is a boolean array, ``areaMm2`` is zero off the surface.
    Voxels outside the array count as background.
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    indices, areas = surfaceIndicesAndAreas(mask, spacingMmXyz)
    surface = np.zeros(mask.shape, dtype=bool)
    surface.ravel()[indices] = True
    area = np.zeros(mask.shape, dtype=np.float64)
    area.ravel()[indices] = areas
    return surface, area


# ---- the surfel convention --------------------------------------------------------------------------------------
# "voxel" (default, REFERENCE §4): surface voxels and their exposed faces, distances between voxel centres.
# "surfel" (by name, as REFERENCE §4 allows): the surface a marching-cubes mesh of the voxel centres would have,
# divided into one element per voxel corner, each weighted by the mesh area inside the cell around that corner and
# measured from the corner -- the construction of Nikolov et al. 2021 (DeepMind's surface-distance), the convention
# most published surface-Dice values use. Written here from that definition (face rule and polygon areas below).
SURFACE_CONVENTIONS = ("voxel", "surfel")

# The cell around a voxel corner has the 8 voxel centres that share the corner as its corners; corner bit
# b = 4 dk + 2 dj + di. Its 6 faces, each as 4 corner bits in cyclic order:
_CELL_FACES = ((0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5))


def _cellPolygons(code: int) -> list[list[tuple[int, int]]]:
    """The closed polygons of the iso-surface (level 1/2) in one cell whose inside corners are the bits of
    ``code``, each as its vertices: cell edges (pairs of corner bits), the surface crossing each at its midpoint.

    On each face the crossed edges are joined in pairs; a face with all four edges crossed (inside corners on a
    diagonal) separates the two inside corners, as 6-connectivity does (the inside voxels share no face). The
    rule depends on the face alone, so two cells sharing a face cut it alike and the mesh is closed. Every crossed
    edge lies on two faces, so the segments close into loops."""
    inside = [(code >> bit) & 1 for bit in range(8)]
    neighbours: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def join(p, q):
        neighbours.setdefault(p, []).append(q)
        neighbours.setdefault(q, []).append(p)

    for face in _CELL_FACES:
        edges = [tuple(sorted((face[n], face[(n + 1) % 4]))) for n in range(4)]
        crossed = [e for e in edges if inside[e[0]] != inside[e[1]]]
        if len(crossed) == 2:
            join(*crossed)
        elif len(crossed) == 4:
            for n in range(4):
                if inside[face[n]]:  # cut this inside corner off: the edges before and after it
                    join(edges[(n - 1) % 4], edges[n])
    polygons, seen = [], set()
    for start in neighbours:
        if start in seen:
            continue
        loop, previous, current = [start], None, start
        seen.add(start)
        while True:
            following = [q for q in neighbours[current] if q != previous]
            nxt = following[0] if following else neighbours[current][0]
            if nxt == start:
                break
            loop.append(nxt)
            seen.add(nxt)
            previous, current = current, nxt
        polygons.append(loop)
    return polygons


_POLYGONS = tuple(_cellPolygons(code) for code in range(256))


def surfelAreaTable(spacingMmXyz) -> np.ndarray:
    """Mesh area (mm², float64) inside the cell around a voxel corner, for each of the 256 inside/outside patterns
    of its 8 voxels, on a grid of ``spacingMmXyz``. Each polygon of :func:`_cellPolygons` is measured as the fan of
    triangles from the mean of its vertices (exact for the planar ones)."""
    sx, sy, sz = (float(s) for s in spacingMmXyz)
    corner = np.array([((b & 1) * sx, ((b >> 1) & 1) * sy, ((b >> 2) & 1) * sz) for b in range(8)])
    table = np.zeros(256)
    for code, polygons in enumerate(_POLYGONS):
        for loop in polygons:
            points = np.array([0.5 * (corner[p] + corner[q]) for p, q in loop])
            centre = points.mean(axis=0)
            arms = points - centre
            table[code] += 0.5 * float(np.linalg.norm(np.cross(arms, np.roll(arms, -1, axis=0)), axis=1).sum())
    return table


def surfelIndicesAndAreas(mask: np.ndarray, spacingMmXyz) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices, on the corner grid (``mask.shape`` + 1 along each axis; corner (k, j, i) lies between voxels
    k-1 and k, j-1 and j, i-1 and i), of the corners whose cell the mesh crosses, and the mesh area (mm²) in each.

    Voxels outside the array count as background."""
    padded = np.pad(np.ascontiguousarray(mask, dtype=bool), 1).view(np.uint8)
    n0, n1, n2 = (s - 1 for s in padded.shape)
    code = np.zeros((n0, n1, n2), dtype=np.uint8)
    for bit in range(8):
        dk, dj, di = (bit >> 2) & 1, (bit >> 1) & 1, bit & 1
        code |= padded[dk:dk + n0, dj:dj + n1, di:di + n2] << np.uint8(bit)
    areas = surfelAreaTable(spacingMmXyz)[code.ravel()]
    indices = np.flatnonzero(areas > 0)
    return indices, areas[indices]


DISTANCE_BACKENDS = ("maurer", "scipy")


def distanceMapMm(surface: np.ndarray, spacingMmXyz, backend: str = "maurer") -> np.ndarray:
    """Exact Euclidean distance (mm, float32) from every voxel centre to the nearest ``True`` voxel centre.

    ``surface`` must hold at least one ``True`` voxel. Spacing is given (x, y, z) and applied as (k, j, i).

    Backends (both exact Euclidean transforms; they agree to float32 rounding, ~1e-5 mm, tested):

    - ``"maurer"`` (default): ``SimpleITK.SignedMaurerDistanceMap`` (Maurer, Qi & Raghavan, IEEE PAMI 2003) applied
      to the surface voxels themselves. Every surface voxel has a 6-connected background neighbour in its own mask,
      hence in the surface image, so every surface voxel is on the contour ITK measures to; values on the surface
      (0 up to rounding) are clamped to 0. Multi-threaded and releases the GIL: about 2x faster than scipy on two
      cores.
    - ``"scipy"``: ``scipy.ndimage.distance_transform_edt(~surface, sampling=spacing)``, the reference.
    """
    sx, sy, sz = (float(s) for s in spacingMmXyz)
    if backend == "scipy":
        distances = ndimage.distance_transform_edt(~surface, sampling=(sz, sy, sx))
        return distances.astype(np.float32, copy=False)
    if backend != "maurer":
        raise ValueError(f"unknown distance backend {backend!r}; use one of {', '.join(DISTANCE_BACKENDS)}")
    surface = np.ascontiguousarray(surface, dtype=bool)
    image = sitk.GetImageFromArray(surface.view(np.uint8))
    image.SetSpacing((sx, sy, sz))
    distanceImage = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                                 useImageSpacing=True, backgroundValue=0.0)
    distances = sitk.GetArrayFromImage(distanceImage)  # a copy, never a view of a temporary (REFERENCE §7)
    if distances.dtype != np.float32:
        distances = distances.astype(np.float32)
    np.maximum(distances, 0.0, out=distances)
    return distances


@dataclass
class ObserverSurface:
    """Everything about one observer's mask on the crop that pairwise metrics reuse (computed once).

    Attributes
    ----------
    name : observer name.
    mask : boolean mask on the crop.
    voxelCount : number of object voxels.
    surfaceIndices : flat indices (into the crop) of the surface voxels.
    surfaceAreasMm2 : exposed-face area of each surface voxel (same order as ``surfaceIndices``).
    centroidKji : mean (k, j, i) index on the *full* grid, or None when empty.
    distanceMap : distance (mm) from each crop voxel to this observer's surface, None when empty.
    convention : ``"voxel"`` (surface voxels, their exposed-face areas and the crop's voxel grid) or ``"surfel"``
        (``surfaceIndices`` / ``surfaceAreasMm2`` / ``distanceMap`` on the crop's corner grid, one more point
        along each axis, with mesh areas; see :func:`surfelIndicesAndAreas`).
    """

    name: str
    mask: np.ndarray
    voxelCount: int
    surfaceIndices: np.ndarray
    surfaceAreasMm2: np.ndarray
    centroidKji: np.ndarray | None
    distanceMap: np.ndarray | None = field(default=None, repr=False)
    convention: str = "voxel"

    @property
    def isEmpty(self) -> bool:
        return self.voxelCount == 0

    @property
    def surfaceAreaMm2(self) -> float:
        return float(self.surfaceAreasMm2.sum())

    @property
    def distanceWeights(self) -> np.ndarray | None:
        """What each surface distance weighs in percentiles and means: None (each surface voxel once) in the voxel
        convention, the surfel's mesh area in the surfel convention (as Nikolov et al. weigh them)."""
        return self.surfaceAreasMm2 if self.convention == "surfel" else None

    def distancesTo(self, other: ObserverSurface) -> np.ndarray:
        """Distances (mm) from each of this observer's surface elements to the other observer's surface."""
        if other.distanceMap is None:
            raise ValueError(f"observer {other.name!r} has an empty mask: distances to it are undefined")
        if other.convention != self.convention:
            raise ValueError(f"observers {self.name!r} ({self.convention}) and {other.name!r} ({other.convention}) "
                             "were prepared under different surface conventions")
        return other.distanceMap.ravel()[self.surfaceIndices]


def prepareSurface(name: str, croppedMask: np.ndarray, spacingMmXyz, cropStartKji=(0, 0, 0),
                   withDistanceMap: bool = True, distanceBackend: str = "maurer",
                   convention: str = "voxel") -> ObserverSurface:
    """Surface, areas, centroid and distance map of one observer's cropped mask (the once-per-observer work), in
    the ``"voxel"`` (default) or ``"surfel"`` convention (see :data:`SURFACE_CONVENTIONS`)."""
    if convention not in SURFACE_CONVENTIONS:
        raise ValueError(f"unknown surface convention {convention!r}; use one of {', '.join(SURFACE_CONVENTIONS)}")
    mask = np.ascontiguousarray(croppedMask, dtype=bool)
    count = int(np.count_nonzero(mask))
    if count == 0:
        empty = np.zeros(0, dtype=np.intp)
        return ObserverSurface(name, mask, 0, empty, np.zeros(0), None, None, convention)
    if convention == "surfel":
        indices, areas = surfelIndicesAndAreas(mask, spacingMmXyz)
        pointGrid = tuple(n + 1 for n in mask.shape)
    else:
        indices, areas = surfaceIndicesAndAreas(mask, spacingMmXyz)
        pointGrid = mask.shape
    # centroid from per-axis marginal sums (cheaper than listing every voxel)
    centroid = np.empty(3)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        profile = mask.sum(axis=others, dtype=np.int64)
        centroid[axis] = float(np.dot(profile, np.arange(mask.shape[axis]))) / count + cropStartKji[axis]
    distance = None
    if withDistanceMap:
        surface = np.zeros(pointGrid, dtype=bool)
        surface.ravel()[indices] = True
        distance = distanceMapMm(surface, spacingMmXyz, distanceBackend)
    return ObserverSurface(name, mask, count, indices, areas, centroid, distance, convention)
