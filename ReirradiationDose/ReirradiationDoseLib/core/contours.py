"""Planar contours <-> voxel masks (the job of RTSTRUCT import/export and of SlicerRT's planar-contour segments).

Conventions
-----------
- A *contour* is a closed planar polygon given as an ``(n, 3)`` array of LPS points (mm); the last point is not
  repeated. Several contours in one plane are combined with the **even-odd rule** (DICOM RTSTRUCT, PS3.3
  C.8.8.6.3: an inner contour of the same ROI is a hole), so a voxel is inside when a ray from it crosses the
  plane's contours an odd number of times.
- A voxel is inside when its **centre** is inside (half-open crossing rule, so a voxel centre on an edge is counted
  exactly once between neighbouring polygons). Structure volumes therefore depend on the grid; sample finer than
  the dose grid where volumes matter (REFERENCE §5).
- Contour planes are assigned to image slices by their position along the slice normal: each plane represents a
  slab reaching half-way to the structure's neighbouring contour planes (on CT slices of unequal spacing each plane
  keeps its own slice's thickness, as a planning system gives it), and a slice whose centre lies in a plane's slab
  takes that plane. Slabs are half-open, ``[lower, upper)`` along the slice normal like the in-plane rule, so a slice
  centre exactly on the boundary between two slabs belongs to one of them and one on a structure's outer boundary is
  counted once. An end plane reaches half its one gap outwards; a gap more than three times the structure's median
  gap is taken as slices without contours (two lesions of one ROI), not as one thick slice (the planes beside it
  reach half the median gap into it); a structure of one plane takes the plane spacing of its structure set (the
  slices it was drawn on), else the grid's slice spacing. Contours less than ``max(0.05 mm, 0.1 x the plane
  spacing)`` apart along the normal are one plane (planning systems write one plane's contours with a jitter of a
  few hundredths of a millimetre). Planes tilted against the slices are refused.

:func:`maskToContours` is the inverse used by the RTSTRUCT writer: it traces the voxel-edge outlines of a mask (outer
boundaries and holes), so rasterising the written contours onto the same grid gives back exactly the same mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .geometry import ImageGeometry

__all__ = [
    "RasterizationReport",
    "rasterizeSlicePolygons",
    "rasterizeContours",
    "structureSetPlaneSpacing",
    "maskToContours",
    "sliceToContours",
    "polygonAreaMm2",
]

logger = logging.getLogger(__name__)

_PLANE_TOLERANCE_MM = 0.05
_DISTINCT_PLANES_MM = 0.5  # contours closer than this along the normal cannot be told apart as slices (tilt check)
_SKIPPED_GAP_RATIO = 3.0  # a gap between contour planes above this many median gaps holds slices without contours
_TIE_MM = 1e-6


@dataclass(frozen=True)
class RasterizationReport:
    """What happened while rasterising one structure.

    ``planesOutside`` counts contour planes that fall outside the image (beyond half a slice of the first/last
    slice); ``pointsOutsideInPlane`` counts contour points outside the in-plane extent of the image. ``planeSpacingMm``
    is the median slab thickness of the structure's contour planes.
    """

    numberOfContours: int
    numberOfPlanes: int
    planesOutside: int = 0
    pointsOutsideInPlane: int = 0
    planeSpacingMm: float = float("nan")
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def partlyOutside(self) -> bool:
        return self.planesOutside > 0 or self.pointsOutsideInPlane > 0


def polygonAreaMm2(points2d: np.ndarray) -> float:
    """Area of a simple planar polygon (shoelace formula), points ``(n, 2)`` in mm."""
    p = np.asarray(points2d, dtype=float)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def rasterizeSlicePolygons(polygons: list[np.ndarray], shapeJi: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of polygons given in continuous pixel indices ``(n, 2)`` as ``(i, j)``.

    A pixel ``(j, i)`` is inside when its centre ``(i, j)`` is inside. Edges use the half-open rule
    ``min(y) <= j < max(y)`` so shared vertices are counted once; horizontal edges are ignored. All polygons of the
    slice are processed together, which is the even-odd (XOR) combination of RTSTRUCT.
    """
    nj, ni = shapeJi
    toggles = np.zeros((nj, ni + 1), dtype=np.int32)
    any_edge = False
    for poly in polygons:
        p = np.asarray(poly, dtype=float)
        if p.shape[0] < 3:
            continue
        x0, y0 = p[:, 0], p[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        ylo = np.minimum(y0, y1)
        yhi = np.maximum(y0, y1)
        # rows j with ylo <= j < yhi
        jStart = np.clip(np.ceil(ylo), 0, nj).astype(np.int64)
        jStop = np.clip(np.ceil(yhi), 0, nj).astype(np.int64)
        counts = np.maximum(jStop - jStart, 0)
        keep = (counts > 0) & (y1 != y0)
        if not np.any(keep):
            continue
        any_edge = True
        counts = counts[keep]
        edgeIdx = np.repeat(np.nonzero(keep)[0], counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = np.repeat(jStart[keep], counts) + offsets
        t = (rows - y0[edgeIdx]) / (y1[edgeIdx] - y0[edgeIdx])
        xCross = x0[edgeIdx] + t * (x1[edgeIdx] - x0[edgeIdx])
        # pixel centres i > xCross are toggled (a ray cast towards -x crosses this edge)
        firstCol = np.clip(np.floor(xCross).astype(np.int64) + 1, 0, ni)
        np.add.at(toggles, (rows, firstCol), 1)
    if not any_edge:
        return np.zeros((nj, ni), dtype=bool)
    return (np.cumsum(toggles[:, :ni], axis=1) % 2).astype(bool)


def _sliceFrame(geometry: ImageGeometry):
    d = geometry.directionMatrix
    normal = d[:, 2]
    return d, normal


def _groupPlanes(heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group one structure's contour heights (mm along the slice normal) into planes: ``(plane heights ascending,
    plane index of each height)``. Heights less than ``max(0.05 mm, 0.1 x the plane spacing)`` apart are one plane, the
    plane spacing being the median gap above 0.5 mm (or, for planes all closer than that, a thin-slice scan, the
    median gap above 0.05 mm): a few hundredths of a millimetre of jitter keep one plane together, 0.3 mm CBCT planes
    stay apart (with the target grid's spacing as the measure they merged into one)."""
    order = np.argsort(heights, kind="stable")
    sortedHeights = heights[order]
    gaps = np.diff(sortedHeights)
    wide, positive = gaps[gaps > _DISTINCT_PLANES_MM], gaps[gaps > _PLANE_TOLERANCE_MM]
    spacing = float(np.median(wide)) if wide.size else (float(np.median(positive)) if positive.size else 0.0)
    tolerance = max(_PLANE_TOLERANCE_MM, 0.1 * spacing)
    sortedIndex = np.concatenate([[0], np.cumsum(gaps > tolerance)])
    index = np.empty(len(heights), dtype=int)
    index[order] = sortedIndex
    planeHeights = np.bincount(sortedIndex, weights=sortedHeights) / np.bincount(sortedIndex)
    return planeHeights, index


def _slabHalfWidths(planeHeights: np.ndarray, setSpacingMm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """How far each of a structure's planes (two or more) reaches below and above itself: half the gap to its
    neighbouring plane (CT slices of unequal spacing: each plane its own slice's thickness); an end plane half its one
    gap outwards. A gap more than three median gaps wide holds slices without contours (two lesions of one ROI): the
    planes beside it reach half a median gap into it. A structure whose median gap is more than three times its set's
    plane spacing ``setSpacingMm`` (markers, one per plane) takes that spacing as its median gap: three markers 25 mm
    apart filled 26 slices."""
    gaps = np.diff(planeHeights)
    typical = float(np.median(gaps))
    if setSpacingMm and typical > _SKIPPED_GAP_RATIO * setSpacingMm:
        typical = float(setSpacingMm)
    halfGaps = 0.5 * np.where(gaps <= _SKIPPED_GAP_RATIO * typical, gaps, typical)
    return np.concatenate([halfGaps[:1], halfGaps]), np.concatenate([halfGaps, halfGaps[-1:]])


def structureSetPlaneSpacing(roiContours, geometry: ImageGeometry) -> float | None:
    """The slice spacing (mm) a structure set was drawn on, along ``geometry``'s slice normal: the smallest of its ROIs'
    median gaps between their own contour planes (ROIs of two planes or more), None without such an ROI. Each ROI's
    own planes, not the union of all: ROIs drawn on two series (planes interleaved, 0.4 mm apart) would read a spacing
    of 0.4 mm. ``roiContours``: one list of closed contours per ROI. Compute it once per set and give it to
    :func:`rasterizeContours` for each ROI."""
    _, normal = _sliceFrame(geometry)
    origin, tiltLimit = np.array(geometry.originMm), _tiltLimit(geometry)
    spacings = [s for s in (_setPlaneSpacing(contours, origin, normal, tiltLimit) for contours in roiContours)
                if s is not None]
    return min(spacings) if spacings else None


def _tiltLimit(geometry: ImageGeometry) -> float:
    return max(_PLANE_TOLERANCE_MM, 0.01 * geometry.spacingMm[2]) * 10


def _setPlaneSpacing(contours, origin: np.ndarray, normal: np.ndarray, tiltLimit: float) -> float | None:
    """The median gap between the distinct planes of some contours (one ROI's), or None with fewer than two planes."""
    heights = []
    for c in contours or ():
        along = (np.asarray(c, dtype=float).reshape(-1, 3) - origin) @ normal
        if along.size and np.ptp(along) <= tiltLimit:
            heights.append(float(np.mean(along)))
    if len(heights) < 2:
        return None
    planes, _ = _groupPlanes(np.array(heights))
    return float(np.median(np.diff(planes))) if len(planes) > 1 else None


def rasterizeContours(contours: list[np.ndarray], geometry: ImageGeometry, name: str = "structure",
                      planeThicknessMm: float | None = None, setPlaneSpacingMm: float | None = None
                      ) -> tuple[np.ndarray, RasterizationReport]:
    """Rasterise closed planar LPS contours onto ``geometry`` (even-odd rule, voxel-centre sampling).

    Parameters
    ----------
    contours : list of ``(n, 3)`` LPS point arrays (each a closed polygon, last point not repeated).
    geometry : the target grid; its slices must be parallel to the contour planes.
    name : used in messages.
    planeThicknessMm : slab thickness every contour plane represents (centred on it); default: each plane reaches
        half-way to the structure's neighbouring planes (see the module notes).
    setPlaneSpacingMm : the slice spacing the structure set was drawn on (:func:`structureSetPlaneSpacing`, computed
        once per set): a structure drawn on one plane only, or on planes more than three set spacings apart (markers),
        takes it as its thickness (without it, a single plane takes the grid's slice spacing). Only the structure's
        own planes set its other slabs: with the union of the set's planes, a set whose ROIs lie on interleaved planes
        (a second series, an offset reconstruction) made every slab half as thick and whole ROIs vanish.

    Returns
    -------
    (mask bool [k, j, i], RasterizationReport)
    """
    mask = np.zeros(geometry.shape, dtype=bool)
    contours = [np.asarray(c, dtype=float).reshape(-1, 3) for c in contours if len(c) >= 3]
    if not contours:
        return mask, RasterizationReport(0, 0)
    _, normal = _sliceFrame(geometry)
    origin = np.array(geometry.originMm)
    sliceSpacing = geometry.spacingMm[2]
    tiltLimit = _tiltLimit(geometry)
    warnings: list[str] = []
    heights = []
    for c in contours:
        along = (c - origin) @ normal
        if np.ptp(along) > tiltLimit:
            raise InputError(f"the contours of '{name}' are not parallel to the image slices (a contour spans "
                             f"{np.ptp(along):.2f} mm along the slice normal); tilted contour planes are not "
                             "supported")
        heights.append(float(np.mean(along)))
    sortedHeights, planeIndex = _groupPlanes(np.array(heights))
    setSpacing = setPlaneSpacingMm
    if planeThicknessMm is not None:
        lower = upper = np.full(len(sortedHeights), 0.5 * max(float(planeThicknessMm), 1e-6))
    elif len(sortedHeights) > 1:
        lower, upper = _slabHalfWidths(sortedHeights, setSpacing)
    else:  # one plane: the slices the set was drawn on, else the grid's
        lower = upper = np.full(1, 0.5 * (setSpacing or float(sliceSpacing)))
    # which contour plane serves each slice: the one whose half-open slab [h - lower, h + upper) holds the slice
    # centre (the nearest one if slabs of a given thickness overlap)
    sliceHeights = np.arange(geometry.sizeXyz[2]) * sliceSpacing
    offset = sliceHeights[None, :] - sortedHeights[:, None]
    inside = (offset >= -lower[:, None] - _TIE_MM) & (offset < upper[:, None] - _TIE_MM)
    dist = np.where(inside, np.abs(offset), np.inf)
    pick = np.argmin(dist, axis=0)
    served = np.isfinite(dist[pick, np.arange(len(sliceHeights))])
    # contour planes that serve no slice because they lie outside the image
    halfSlice = 0.5 * sliceSpacing
    outside = (sortedHeights < -halfSlice - 1e-6) | (sortedHeights > sliceHeights[-1] + halfSlice + 1e-6)
    planesOutside = int(np.count_nonzero(outside))
    # in-plane continuous indices of every contour
    polygonsByPlane: dict[int, list[np.ndarray]] = {}
    pointsOutside = 0
    ni, nj = geometry.sizeXyz[0], geometry.sizeXyz[1]
    for c, p in zip(contours, planeIndex, strict=True):
        ijk = geometry.lpsToIndex(c)
        polygonsByPlane.setdefault(int(p), []).append(ijk[:, :2])
        pointsOutside += int(np.count_nonzero((ijk[:, 0] < -0.5) | (ijk[:, 0] > ni - 0.5)
                                              | (ijk[:, 1] < -0.5) | (ijk[:, 1] > nj - 0.5)))
    cache: dict[int, np.ndarray] = {}
    for k in np.nonzero(served)[0]:
        plane = int(pick[k])
        if plane not in cache:
            cache[plane] = rasterizeSlicePolygons(polygonsByPlane.get(plane, []), (nj, ni))
        mask[k] = cache[plane]
    if planesOutside:
        warnings.append(f"{planesOutside} of {len(sortedHeights)} contour planes of '{name}' lie outside the image")
    if pointsOutside:
        warnings.append(f"{pointsOutside} contour points of '{name}' lie outside the image in-plane extent")
    for w in warnings:
        logger.warning(w)
    report = RasterizationReport(numberOfContours=len(contours), numberOfPlanes=len(sortedHeights),
                                 planesOutside=planesOutside, pointsOutsideInPlane=pointsOutside,
                                 planeSpacingMm=float(np.median(lower + upper)), warnings=tuple(warnings))
    return mask, report


# ---- mask -> contours --------------------------------------------------------------------------------------------

def _traceLoops(edges: np.ndarray) -> list[np.ndarray]:
    """Link directed unit edges ``(m, 4)`` [x0, y0, x1, y1] (integer corner coordinates) into closed loops.

    Where two loops touch at a corner (diagonal pixels), the turn towards the interior is taken, which keeps every
    loop simple.
    """
    # outgoing edges per start vertex
    starts: dict[tuple[int, int], list[int]] = {}
    for n, (x0, y0, _, _) in enumerate(edges.tolist()):
        starts.setdefault((x0, y0), []).append(n)
    used = np.zeros(len(edges), dtype=bool)
    loops = []
    edgeList = edges.tolist()
    for first in range(len(edges)):
        if used[first]:
            continue
        loop = []
        e = first
        while True:
            used[e] = True
            x0, y0, x1, y1 = edgeList[e]
            loop.append((x0, y0))
            candidates = [c for c in starts.get((x1, y1), []) if not used[c]]
            if not candidates:
                break
            if len(candidates) == 1:
                e = candidates[0]
            else:
                dx, dy = x1 - x0, y1 - y0
                # turn towards the interior (which lies on the left in the y-down pixel frame, i.e. the
                # negative cross product) so that loops touching at a corner stay separate simple polygons
                def turn(c, dx=dx, dy=dy):
                    ex, ey = edgeList[c][2] - edgeList[c][0], edgeList[c][3] - edgeList[c][1]
                    return dx * ey - dy * ex
                e = min(candidates, key=turn)
        pts = np.array(loop, dtype=float)
        loops.append(_dropCollinear(pts))
    return loops


def _dropCollinear(pts: np.ndarray) -> np.ndarray:
    if len(pts) <= 3:
        return pts
    prev = np.roll(pts, 1, axis=0)
    nxt = np.roll(pts, -1, axis=0)
    cross = (pts[:, 0] - prev[:, 0]) * (nxt[:, 1] - pts[:, 1]) - (pts[:, 1] - prev[:, 1]) * (nxt[:, 0] - pts[:, 0])
    keep = np.abs(cross) > 1e-12
    return pts[keep] if keep.sum() >= 3 else pts


def sliceToContours(slice2d: np.ndarray) -> list[np.ndarray]:
    """Voxel-edge outlines of a 2D mask ``[j, i]`` as polygons in continuous pixel indices ``(n, 2)`` (i, j).

    Outer boundaries and holes run in opposite directions; combined with the even-odd rule they reproduce the mask
    exactly. Pixels touching only at a corner give separate polygons (no self-touching outlines).
    """
    m = np.pad(np.asarray(slice2d, dtype=bool), 1)
    edges = []
    # boundary between pixel (j, i) inside and (j-1, i) outside: edge along y = j - 0.5
    # Work in padded corner coordinates: corner (x, y) = (i_padded, j_padded) at the top-left of pixel (j, i).
    inside = m[1:-1, 1:-1]
    up = m[:-2, 1:-1]
    down = m[2:, 1:-1]
    left = m[1:-1, :-2]
    right = m[1:-1, 2:]
    jj, ii = np.nonzero(inside & ~up)      # top edge, running -x  (interior on the left, y grows downwards)
    edges.append(np.stack([ii + 1, jj, ii, jj], axis=1))
    jj, ii = np.nonzero(inside & ~down)    # bottom edge, running +x
    edges.append(np.stack([ii, jj + 1, ii + 1, jj + 1], axis=1))
    jj, ii = np.nonzero(inside & ~left)    # left edge, running +y
    edges.append(np.stack([ii, jj, ii, jj + 1], axis=1))
    jj, ii = np.nonzero(inside & ~right)   # right edge, running -y
    edges.append(np.stack([ii + 1, jj + 1, ii + 1, jj], axis=1))
    allEdges = np.concatenate(edges, axis=0).astype(np.int64)
    if len(allEdges) == 0:
        return []
    loops = _traceLoops(allEdges)
    # corner (x, y) sits at continuous index (x - 0.5, y - 0.5)
    return [loop - 0.5 for loop in loops]


def maskToContours(mask: np.ndarray, geometry: ImageGeometry) -> dict[int, list[np.ndarray]]:
    """Planar contours of a 3D mask, per slice: ``{k: [LPS points (n, 3), ...]}``.

    The contours follow voxel edges in the slice plane (outer boundaries and holes), so :func:`rasterizeContours`
    with the same geometry returns the same mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != geometry.shape:
        raise InputError(f"mask shape {mask.shape} does not match the geometry {geometry.describe()}")
    out: dict[int, list[np.ndarray]] = {}
    for k in np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]:
        polys = sliceToContours(mask[k])
        pts = []
        for p in polys:
            ijk = np.column_stack([p, np.full(len(p), float(k))])
            pts.append(geometry.indexToLps(ijk))
        out[int(k)] = pts
    return out
