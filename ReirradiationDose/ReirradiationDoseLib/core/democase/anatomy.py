"""Analytic pelvic phantom of the demo case: prior anatomy, deformation, recurrence, CT and T2-MR contrast.

Coordinates are DICOM LPS millimetres (x to the patient's left, y posterior, z superior). Every structure is an
approximate signed distance function ``sd(x, y, z)`` in mm (negative inside); the structure is exactly the set
``sd < 0`` and the magnitude is accurate near the surface (first-order ``f / |grad f|`` for ellipsoids), which is
what the observers' boundary jitter and the margins need.

Three frames:

- **prior** (prior planning CT): the pelvis with the primary rectal tumour;
- **current** (current planning CT): a current-CT point ``x`` shows the prior anatomy at ``x + u(x)``, where
  ``u(x) = s + sum_b a_b exp(-|x - c_b|^2 / (2 sigma_b^2))`` (rigid setup shift ``s`` plus smooth Gaussian bumps);
  the primary tumour is gone (resected), and a presacral recurrence (GTV with an extension lobe into S3) and
  post-operative presacral fibrosis are added, defined directly in the current frame;
- **MRI**: an MRI point is ``m = T(x) = M (x - c) + c + t`` (rigid, :meth:`PelvisPhantom.mriTransform`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "PelvisPhantom",
    "PRIOR_STRUCTURES",
    "CURRENT_STRUCTURES",
    "ellipsoidSd",
    "segmentSd",
    "smoothMin",
]

# structure names written to the RTSTRUCTs (order = ROI number order)
PRIOR_STRUCTURES = ("Body", "GTV_primary", "CTV_primary", "PTV_primary", "Rectum", "Bladder", "Bowel",
                    "SacralPlexus", "FemoralHead_L", "FemoralHead_R", "Sacrum", "PelvicBones")
CURRENT_STRUCTURES = ("Body", "GTV", "CTV", "PTV", "Fibrosis", "Rectum", "Bladder", "Bowel", "SacralPlexus",
                      "FemoralHead_L", "FemoralHead_R", "Sacrum", "PelvicBones")


# ---- shape primitives (vectorised, dtype-preserving for float32 inputs) -------------------------------------------

def ellipsoidSd(x, y, z, centre, semiAxes, rotation=None):
    """Approximate signed distance (mm) to an ellipsoid; exact sign, first-order magnitude ``(r - 1) / |grad r|``.

    ``rotation``: optional 3x3 matrix whose rows are the ellipsoid's local axes expressed in LPS.
    """
    dx, dy, dz = x - float(centre[0]), y - float(centre[1]), z - float(centre[2])
    if rotation is not None:
        r0, r1, r2 = ([float(v) for v in row] for row in rotation)
        dx, dy, dz = (r0[0] * dx + r0[1] * dy + r0[2] * dz, r1[0] * dx + r1[1] * dy + r1[2] * dz,
                      r2[0] * dx + r2[1] * dy + r2[2] * dz)
    a0, a1, a2 = (float(a) for a in semiAxes)
    qx, qy, qz = dx / a0, dy / a1, dz / a2
    r = np.sqrt(qx * qx + qy * qy + qz * qz)
    g = np.sqrt((qx / a0) ** 2 + (qy / a1) ** 2 + (qz / a2) ** 2)
    ratio = np.where(g > 1e-9, r / np.maximum(g, 1e-9), min(a0, a1, a2))
    return (r - 1.0) * ratio


def ellipseCylinderSd(x, y, centreXy, semiAxesXy):
    """Signed distance to an infinite elliptic cylinder along z (same first-order form as :func:`ellipsoidSd`)."""
    dx, dy = x - centreXy[0], y - centreXy[1]
    a0, a1 = (float(a) for a in semiAxesXy)
    qx, qy = dx / a0, dy / a1
    r = np.sqrt(qx * qx + qy * qy)
    g = np.sqrt((qx / a0) ** 2 + (qy / a1) ** 2)
    ratio = np.where(g > 1e-9, r / np.maximum(g, 1e-9), min(a0, a1))
    return (r - 1.0) * ratio


def segmentSd(x, y, z, a, b, radiusMm):
    """Exact signed distance to a capsule (segment a-b of radius ``radiusMm``)."""
    a = [float(v) for v in a]  # plain floats: a NumPy float64 scalar would promote float32 grids (REFERENCE §7)
    ab = [float(v) - w for v, w in zip(b, a, strict=True)]
    length2 = ab[0] ** 2 + ab[1] ** 2 + ab[2] ** 2
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) * (1.0 / length2), 0.0, 1.0)
    ex, ey, ez = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
    return np.sqrt(ex * ex + ey * ey + ez * ez) - radiusMm


def smoothMin(a, b, kMm: float):
    """Polynomial smooth minimum (smooth union of two signed distances, blending over ``kMm``)."""
    h = np.clip(0.5 + 0.5 * (b - a) / kMm, 0.0, 1.0)
    return b * (1.0 - h) + a * h - kMm * h * (1.0 - h)


def _bowelPattern(x, y, z):
    """A smooth texture in [-1, 1] suggesting bowel loops."""
    return np.sin(x / 9.0) * np.sin(y / 11.0 + 1.0) * np.sin(z / 10.0)


def _softTissuePattern(x, y, z, phase: float = 0.0):
    """A smooth texture in [-1, 1] for fat and muscle (septa, vessels, fascia): two oblique, slightly bent waves of
    16-25 mm period. Evaluated at prior-anatomy coordinates, it moves with the anatomy, so that deformation in fat
    and muscle is visible to intensity-based registration, as it is in real CT."""
    first = np.sin(x / 2.6 + 1.3 * np.sin(z / 7.0) + phase) * np.sin(y / 3.1 + 0.7)
    second = np.sin((x - y) / 3.9 + z / 3.6 + 0.5 * np.sin(y / 11.0) + 2.0 * phase)
    return 0.5 * (first + second)


def _rotZ(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


# ---- sacrum and rectum centre lines (prior frame) ------------------------------------------------------------------

SACRUM_Z_RANGE_MM = (-75.0, 72.0)
# vertebral levels along the sacrum (prior frame z, mm), used for labels
SACRAL_LEVELS_Z_MM = {"S1": 58.0, "S2": 36.0, "S3": 14.0, "S4": -8.0, "S5": -30.0, "Co": -55.0}


def sacrumCentreY(z):
    """Antero-posterior position of the sacral mid-plane (concave anteriorly)."""
    return 80.0 - 0.005 * z * z


def sacrumHalfWidth(z):
    return 15.0 + 0.5 * (z + 75.0)


def sacrumHalfThickness(z):
    return 8.0 + 0.08 * (z + 75.0)


def rectumCentre(z):
    """(x, y) of the rectal centre line: 50 mm anterior to the sacral mid-plane, gently winding."""
    return 6.0 * np.sin(z / 35.0), sacrumCentreY(z) - 50.0


RECTUM_Z_RANGE_MM = (-100.0, 48.0)
RECTUM_RADIUS_MM = 15.0
RECTUM_LUMEN_RADIUS_MM = 10.0


class _Sampler:
    """Evaluates a primitive only inside the index block of a [k, j, i] coordinate block that can reach its box.

    The block is found from per-axis coordinate bounds (min/max of x over each column i, of y over each row j, of z
    over each slice k), so it is conservative for any smooth mapping (warped or rotated coordinates). Outside the
    block the primitive's value is ``FAR_MM`` (outside, farther than every threshold used). Small or non-3D inputs
    (points, planes) are evaluated everywhere.
    """

    MARGIN_MM = 30.0
    FAR_MM = 1000.0

    def __init__(self, x, y, z):
        self.x, self.y, self.z = x, y, z
        self.bounds = None
        if np.ndim(x) == 3 and np.size(x) > 20000:
            self.bounds = ((np.min(x, axis=(0, 1)), np.max(x, axis=(0, 1))),
                           (np.min(y, axis=(0, 2)), np.max(y, axis=(0, 2))),
                           (np.min(z, axis=(1, 2)), np.max(z, axis=(1, 2))))

    def evaluate(self, function, lo, hi):
        if self.bounds is None:
            return function(self.x, self.y, self.z)
        ranges = []
        for (mn, mx), a, b in zip(self.bounds, lo, hi, strict=True):
            inside = np.nonzero((mx >= a - self.MARGIN_MM) & (mn <= b + self.MARGIN_MM))[0]
            if inside.size == 0:
                return np.full(self.x.shape, self.FAR_MM, dtype=self.x.dtype)
            ranges.append(slice(int(inside[0]), int(inside[-1]) + 1))
        block = (ranges[2], ranges[1], ranges[0])
        out = np.full(self.x.shape, self.FAR_MM, dtype=self.x.dtype)
        out[block] = function(self.x[block], self.y[block], self.z[block])
        return out

    def ellipsoid(self, centre, semiAxes, rotation=None):
        extent = [max(semiAxes)] * 3 if rotation is not None else list(semiAxes)
        return self.evaluate(lambda x, y, z: ellipsoidSd(x, y, z, centre, semiAxes, rotation),
                             [c - e for c, e in zip(centre, extent, strict=True)],
                             [c + e for c, e in zip(centre, extent, strict=True)])

    def segment(self, a, b, radiusMm):
        return self.evaluate(lambda x, y, z: segmentSd(x, y, z, a, b, radiusMm),
                             [min(p, q) - radiusMm for p, q in zip(a, b, strict=True)],
                             [max(p, q) + radiusMm for p, q in zip(a, b, strict=True)])


@dataclass(frozen=True)
class GaussianBump:
    centreMm: tuple[float, float, float]
    amplitudeMm: tuple[float, float, float]
    sigmaMm: float


@dataclass(frozen=True)
class PelvisPhantom:
    """The demo patient. All parameters are fixed (the seed only drives noise and the observers)."""

    rigidShiftMm: tuple[float, float, float] = (2.5, -3.5, 4.0)
    bumps: tuple[GaussianBump, ...] = (
        GaussianBump((0.0, -50.0, -30.0), (2.0, 8.0, 9.0), 45.0),      # bladder filling
        GaussianBump((0.0, 35.0, -20.0), (-3.0, -5.0, 4.0), 40.0),     # neorectum / presacral
        GaussianBump((-20.0, -30.0, 50.0), (6.0, -7.0, -5.0), 50.0),   # small bowel
        GaussianBump((60.0, 20.0, -40.0), (-5.0, 0.0, 3.0), 45.0),     # left pelvic side wall
    )
    # MRI rigid transform (current CT LPS -> MRI LPS), ITK Euler3D parameters
    mriCentreMm: tuple[float, float, float] = (0.0, 30.0, 0.0)
    mriAnglesDeg: tuple[float, float, float] = (4.0, -3.0, 2.5)
    mriTranslationMm: tuple[float, float, float] = (8.0, -15.0, 22.0)
    # recurrence, defined by where it sits in the prior anatomy (mapped to the current frame once)
    gtvMainPriorCentreMm: tuple[float, float, float] = (6.0, 56.0, 2.0)
    gtvMainSemiAxesMm: tuple[float, float, float] = (24.0, 10.0, 22.0)
    gtvLobePriorCentreMm: tuple[float, float, float] = (2.0, 75.0, 16.0)
    gtvLobeSemiAxesMm: tuple[float, float, float] = (9.0, 9.0, 11.0)
    gtvBlendMm: float = 4.0
    fibrosisPriorCentreMm: tuple[float, float, float] = (0.0, 55.0, -8.0)
    fibrosisSemiAxesMm: tuple[float, float, float] = (48.0, 13.0, 50.0)
    ctvMarginMm: float = 10.0
    ptvMarginMm: float = 15.0
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    # ---- deformation ----------------------------------------------------------------------------------------
    def displacementMm(self, x, y, z):
        """``u(x)`` (3 arrays, mm): the prior-anatomy point of current-CT point x is ``x + u(x)``."""
        ux = np.zeros_like(x) + self.rigidShiftMm[0]
        uy = np.zeros_like(x) + self.rigidShiftMm[1]
        uz = np.zeros_like(x) + self.rigidShiftMm[2]
        for b in self.bumps:
            g = self._gauss(x, y, z, b)
            ux = ux + b.amplitudeMm[0] * g
            uy = uy + b.amplitudeMm[1] * g
            uz = uz + b.amplitudeMm[2] * g
        return ux, uy, uz

    @staticmethod
    def _gauss(x, y, z, b: GaussianBump):
        c = b.centreMm
        r2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
        return np.exp(-r2 / (2.0 * b.sigmaMm ** 2))

    def toPrior(self, x, y, z):
        """Current-frame coordinates -> prior-anatomy coordinates (``x + u(x)``)."""
        ux, uy, uz = self.displacementMm(x, y, z)
        return x + ux, y + uy, z + uz

    def jacobianDeterminant(self, x, y, z):
        """det(I + grad u) of the map x -> x + u(x) (analytic); > 0 everywhere means no folding."""
        j = [[np.ones_like(x) if r == c else np.zeros_like(x) for c in range(3)] for r in range(3)]
        coords = (x, y, z)
        for b in self.bumps:
            g = self._gauss(x, y, z, b)
            s2 = b.sigmaMm ** 2
            for r in range(3):
                for c in range(3):
                    j[r][c] = j[r][c] - b.amplitudeMm[r] * g * (coords[c] - b.centreMm[c]) / s2
        return (j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1]) - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
                + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]))

    def toCurrent(self, priorPointMm, iterations: int = 100) -> np.ndarray:
        """Inverse map: the current-frame point ``x`` with ``x + u(x) = p`` (fixed-point iteration; |grad u| < 1)."""
        p = np.asarray(priorPointMm, dtype=float)
        x = p.copy()
        for _ in range(iterations):
            u = np.array([float(v) for v in self.displacementMm(*(np.float64(c) for c in x))])
            x = p - u
        return x

    # ---- MRI ---------------------------------------------------------------------------------------------------
    def mriTransform(self):
        """``sitk.Euler3DTransform`` mapping current-CT LPS points to MRI LPS points."""
        import SimpleITK as sitk

        transform = sitk.Euler3DTransform()
        transform.SetCenter(self.mriCentreMm)
        transform.SetRotation(*(float(np.radians(a)) for a in self.mriAnglesDeg))
        transform.SetTranslation(self.mriTranslationMm)
        return transform

    def mriMatrix(self) -> np.ndarray:
        return np.array(self.mriTransform().GetMatrix()).reshape(3, 3)

    def currentToMri(self, pointsLps) -> np.ndarray:
        p = np.asarray(pointsLps, dtype=float)
        c = np.array(self.mriCentreMm)
        return (p - c) @ self.mriMatrix().T + c + np.array(self.mriTranslationMm)

    def mriToCurrent(self, x, y, z):
        """MRI coordinates (arrays) -> current-frame coordinates (inverse rigid transform)."""
        m = self.mriMatrix().tolist()
        c = self.mriCentreMm
        t = self.mriTranslationMm
        dx, dy, dz = x - (c[0] + t[0]), y - (c[1] + t[1]), z - (c[2] + t[2])
        # x = M^T (m - c - t) + c
        return (m[0][0] * dx + m[1][0] * dy + m[2][0] * dz + c[0],
                m[0][1] * dx + m[1][1] * dy + m[2][1] * dz + c[1],
                m[0][2] * dx + m[1][2] * dy + m[2][2] * dz + c[2])

    # ---- the recurrence (current frame) ------------------------------------------------------------------------
    def _currentCentre(self, key: str, priorCentre) -> tuple[float, float, float]:
        if key not in self._cache:
            self._cache[key] = tuple(float(v) for v in self.toCurrent(priorCentre))
        return self._cache[key]

    @property
    def gtvMainCentreMm(self) -> tuple[float, float, float]:
        """Centre of the recurrence's main body in the current frame (LPS mm)."""
        return self._currentCentre("gtvMain", self.gtvMainPriorCentreMm)

    @property
    def gtvLobeCentreMm(self) -> tuple[float, float, float]:
        """Centre of the extension lobe toward S3 in the current frame (LPS mm)."""
        return self._currentCentre("gtvLobe", self.gtvLobePriorCentreMm)

    @property
    def fibrosisCentreMm(self) -> tuple[float, float, float]:
        return self._currentCentre("fibrosis", self.fibrosisPriorCentreMm)

    def gtvMainSd(self, x, y, z):
        return ellipsoidSd(x, y, z, self.gtvMainCentreMm, self.gtvMainSemiAxesMm)

    def gtvLobeSd(self, x, y, z):
        return ellipsoidSd(x, y, z, self.gtvLobeCentreMm, self.gtvLobeSemiAxesMm)

    def gtvSd(self, x, y, z):
        """The true GTV (current frame): smooth union of the main body and the extension lobe toward S3."""
        return smoothMin(self.gtvMainSd(x, y, z), self.gtvLobeSd(x, y, z), self.gtvBlendMm)

    def fibrosisEllipsoidSd(self, x, y, z):
        return ellipsoidSd(x, y, z, self.fibrosisCentreMm, self.fibrosisSemiAxesMm)

    # ---- prior anatomy ---------------------------------------------------------------------------------------
    @staticmethod
    def bodySd(x, y, z, sampler: _Sampler | None = None):
        """The external contour (prior frame): an elliptic trunk with the buttocks blended in."""
        s = sampler or _Sampler(x, y, z)
        body = ellipseCylinderSd(x, y, (0.0, 5.0), (165.0, 115.0))
        for side in (-1.0, 1.0):
            body = smoothMin(body, s.ellipsoid((60.0 * side, 78.0, -45.0), (85.0, 62.0, 120.0)), 20.0)
        return body

    def priorSd(self, x, y, z, withPrimaryTumour: bool = True) -> dict:
        """Signed distances (mm) of every prior-anatomy structure at prior-frame points.

        On large 3D blocks each primitive is evaluated only in the index box that can come within
        ``_Sampler.MARGIN_MM`` of it; elsewhere its value is a large positive number (exact signs, faster).
        """
        s = _Sampler(x, y, z)
        sd = {}
        body = self.bodySd(x, y, z, s)
        sd["Body"] = body
        # sacrum: a curved plate, narrowing and thinning toward the coccyx
        z0, z1 = SACRUM_Z_RANGE_MM
        sd["Sacrum"] = s.evaluate(
            lambda x, y, z: np.maximum(np.maximum(np.abs(x) - sacrumHalfWidth(z), np.abs(y - sacrumCentreY(z))
                                                  - sacrumHalfThickness(z)), np.maximum(z0 - z, z - z1)),
            (-90.0, 40.0, z0), (90.0, 110.0, z1))
        sd["L5"] = s.evaluate(lambda x, y, z: np.maximum(ellipseCylinderSd(x, y, (0.0, 52.0), (26.0, 19.0)), 76.0 - z),
                              (-26.0, 33.0, 76.0), (26.0, 71.0, 1e4))
        # pelvic bones (ilium, acetabulum, pubic and ischial rami) and femora, per side
        pelvis = None
        for side, suffix in ((1.0, "L"), (-1.0, "R")):
            head = (88.0 * side, -5.0, -55.0)
            rot = [[0.8 * side, 0.6, 0.0], [0.6 * side, -0.8, 0.0], [0.0, 0.0, 1.0]]
            ilium = s.ellipsoid((92.0 * side, 32.0, 42.0), (7.0, 55.0, 48.0), rot)
            acetabulum = s.evaluate(
                lambda x, y, z, head=head, side=side: np.maximum(
                    ellipsoidSd(x, y, z, (84.0 * side, -2.0, -56.0), (36.0, 40.0, 36.0)),
                    np.maximum(-ellipsoidSd(x, y, z, head, (27.0, 27.0, 27.0)), side * (x - 96.0 * side))),
                (84.0 * side - 36.0, -42.0, -92.0), (84.0 * side + 36.0, 38.0, -20.0))
            pubic = s.segment((78.0 * side, -22.0, -62.0), (5.0 * side, -74.0, -74.0), 9.0)
            ischium = s.segment((78.0 * side, 12.0, -72.0), (56.0 * side, 28.0, -102.0), 11.0)
            ramus = s.segment((56.0 * side, 28.0, -102.0), (14.0 * side, -62.0, -86.0), 7.0)
            bones = np.minimum(np.minimum(ilium, acetabulum), np.minimum(np.minimum(pubic, ischium), ramus))
            pelvis = bones if pelvis is None else np.minimum(pelvis, bones)
            sd[f"FemoralHead_{suffix}"] = np.minimum(s.ellipsoid(head, (24.0, 24.0, 24.0)),
                                                     s.segment(head, (118.0 * side, 0.0, -86.0), 14.0))
            sd[f"FemurShaft_{suffix}"] = s.segment((118.0 * side, 0.0, -86.0), (126.0 * side, 10.0, -190.0), 16.0)
        sd["PelvicBones"] = pelvis
        # soft tissues
        sd["Bladder"] = s.ellipsoid((0.0, -50.0, -35.0), (42.0, 32.0, 34.0))
        zr0, zr1 = RECTUM_Z_RANGE_MM

        def rectum(x, y, z, radius, capMm):
            rx, ry = rectumCentre(z)
            return np.maximum(np.sqrt((x - rx) ** 2 + (y - ry) ** 2) - radius,
                              np.maximum(zr0 - z, z - zr1) + capMm)

        rectumBox = ((-21.0, -36.0, zr0), (21.0, 46.0, zr1))
        sd["Rectum"] = s.evaluate(lambda x, y, z: rectum(x, y, z, RECTUM_RADIUS_MM, 0.0), *rectumBox)
        sd["RectumLumen"] = s.evaluate(lambda x, y, z: rectum(x, y, z, RECTUM_LUMEN_RADIUS_MM, 5.0), *rectumBox)
        muscle = None
        for side in (-1.0, 1.0):
            parts = (s.ellipsoid((72.0 * side, 88.0, -35.0), (52.0, 32.0, 75.0)),    # gluteus
                     s.ellipsoid((52.0 * side, 8.0, 35.0), (22.0, 22.0, 85.0)),      # iliopsoas
                     s.ellipsoid((64.0 * side, 24.0, -62.0), (10.0, 30.0, 30.0)),    # obturator internus
                     s.ellipsoid((35.0 * side, 105.0, 110.0), (24.0, 18.0, 60.0)))   # erector spinae
            for p in parts:
                muscle = p if muscle is None else np.minimum(muscle, p)
        sd["Muscle"] = muscle
        sd["BowelRegion"] = np.maximum(body + 15.0, s.evaluate(
            lambda x, y, z: np.maximum(np.maximum(-5.0 - z, y - 40.0),
                                       ellipseCylinderSd(x, y, (0.0, -20.0), (110.0, 75.0))),
            (-110.0, -95.0, -5.0), (110.0, 40.0, 1e4)))
        plexus = None
        for side in (-1.0, 1.0):
            part = np.minimum(s.segment((24.0 * side, 55.0, 30.0), (66.0 * side, 60.0, -18.0), 6.0),
                              s.segment((20.0 * side, 62.0, 4.0), (60.0 * side, 61.0, -12.0), 5.0))
            plexus = part if plexus is None else np.minimum(plexus, part)
        sd["SacralPlexus"] = plexus
        if withPrimaryTumour:
            prx, pry = rectumCentre(-25.0)
            gtvp = s.ellipsoid((float(prx) + 6.0, float(pry) + 10.0, -25.0), (16.0, 12.0, 20.0))
            sd["GTV_primary"] = gtvp

            def meso(x, y, z):
                rx, ry = rectumCentre(z)
                return np.maximum(np.sqrt((x - rx) ** 2 + (y - ry - 10.0) ** 2) - 34.0,
                                  np.maximum(-95.0 - z, z - 45.0))

            ctv = np.minimum(s.evaluate(meso, (-40.0, -55.0, -95.0), (40.0, 75.0, 45.0)), gtvp - 15.0)
            sd["CTV_primary"] = ctv
            sd["PTV_primary"] = ctv - 7.0
        return sd

    def currentSd(self, x, y, z) -> dict:
        """Signed distances of every current-anatomy structure at current-frame points."""
        px, py, pz = self.toPrior(x, y, z)
        sd = self.priorSd(px, py, pz, withPrimaryTumour=False)
        s = _Sampler(x, y, z)
        main = s.ellipsoid(self.gtvMainCentreMm, self.gtvMainSemiAxesMm)
        gtv = smoothMin(main, s.ellipsoid(self.gtvLobeCentreMm, self.gtvLobeSemiAxesMm), self.gtvBlendMm)
        sd["GTV"] = gtv
        sd["GTV_main"] = main
        sd["CTV"] = gtv - self.ctvMarginMm
        sd["PTV"] = gtv - self.ptvMarginMm
        sd["FibrosisEllipsoid"] = s.ellipsoid(self.fibrosisCentreMm, self.fibrosisSemiAxesMm)
        return sd

    # ---- masks -----------------------------------------------------------------------------------------------
    @staticmethod
    def _bones(sd) -> np.ndarray:
        bone = (sd["Sacrum"] < 0) | (sd["PelvicBones"] < 0) | (sd["L5"] < 0)
        for s in ("L", "R"):
            bone |= (sd[f"FemoralHead_{s}"] < 0) | (sd[f"FemurShaft_{s}"] < 0)
        return bone

    def masks(self, sd: dict, frame: str) -> dict:
        """The RTSTRUCT structures (booleans) from :meth:`priorSd` / :meth:`currentSd` output."""
        body = sd["Body"] < 0
        bone = self._bones(sd)
        out = {"Body": body}
        rectum = (sd["Rectum"] < 0) & body
        bladder = (sd["Bladder"] < 0) & body
        if frame == "prior":
            out["GTV_primary"] = (sd["GTV_primary"] < 0) & body
            out["CTV_primary"] = (sd["CTV_primary"] < 0) & body
            out["PTV_primary"] = (sd["PTV_primary"] < 0) & body
        else:
            gtv = (sd["GTV"] < 0) & body
            out["GTV"] = gtv
            out["CTV"] = (sd["CTV"] < 0) & body
            out["PTV"] = (sd["PTV"] < 0) & body
            out["Fibrosis"] = (sd["FibrosisEllipsoid"] < 0) & body & ~gtv & ~rectum & ~bone
        out["Rectum"] = rectum
        out["Bladder"] = bladder
        out["Bowel"] = ((sd["BowelRegion"] < 0) & body & ~bladder & ~rectum & ~bone & ~(sd["Muscle"] < 0))
        out["SacralPlexus"] = (sd["SacralPlexus"] < 0) & body
        out["FemoralHead_L"] = sd["FemoralHead_L"] < 0
        out["FemoralHead_R"] = sd["FemoralHead_R"] < 0
        out["Sacrum"] = sd["Sacrum"] < 0
        out["PelvicBones"] = sd["PelvicBones"] < 0
        names = PRIOR_STRUCTURES if frame == "prior" else CURRENT_STRUCTURES
        return {name: out[name] for name in names}

    # ---- image contrast --------------------------------------------------------------------------------------
    def ctHu(self, sd: dict, masks: dict, x, y, z):
        """Noise-free CT numbers (HU, float32)."""
        hu = np.full(np.shape(sd["Body"]), -1000.0, dtype=np.float32)
        body = masks["Body"]
        hu[body] = -95.0 + 20.0 * _softTissuePattern(x[body], y[body], z[body])
        muscle = (sd["Muscle"] < 0) & body
        hu[muscle] = 50.0 + 12.0 * _softTissuePattern(x[muscle], y[muscle], z[muscle], phase=1.1)
        bowel = masks["Bowel"]
        texture = 25.0 + 35.0 * _bowelPattern(x[bowel], y[bowel], z[bowel])
        hu[bowel] = np.where(texture > 52.0, -550.0, texture)  # a few gas pockets
        hu[masks["Bladder"]] = 35.0
        hu[sd["Bladder"] < -3.0] = 8.0
        hu[masks["Rectum"]] = 40.0
        hu[(sd["RectumLumen"] < 0) & masks["Rectum"]] = -300.0
        hu[masks["SacralPlexus"]] = 40.0
        bone = self._bones(sd)
        boneSd = np.minimum(np.minimum(sd["Sacrum"], sd["PelvicBones"]), sd["L5"])
        for s in ("L", "R"):
            boneSd = np.minimum(boneSd, np.minimum(sd[f"FemoralHead_{s}"], sd[f"FemurShaft_{s}"]))
        hu[bone] = np.where(boneSd > -2.5, 750.0, 220.0)[bone]
        if "GTV_primary" in masks:
            hu[masks["GTV_primary"]] = 48.0
        if "Fibrosis" in masks:
            hu[masks["Fibrosis"]] = 58.0
        if "GTV" in masks:
            hu[masks["GTV"]] = 45.0
        return hu

    def mrT2(self, sd: dict, masks: dict, x, y, z):
        """Noise-free T2-weighted signal (arbitrary units, float32): fat and urine bright, fibrosis dark,
        tumour intermediate-high (brighter than muscle and fibrosis)."""
        t2 = np.full(np.shape(sd["Body"]), 4.0, dtype=np.float32)
        t2[masks["Body"]] = 650.0
        t2[(sd["Muscle"] < 0) & masks["Body"]] = 140.0
        bowel = masks["Bowel"]
        t2[bowel] = 380.0 + 140.0 * _bowelPattern(x[bowel], y[bowel], z[bowel])
        t2[masks["Bladder"]] = 160.0
        t2[sd["Bladder"] < -3.0] = 980.0
        t2[masks["Rectum"]] = 220.0
        t2[(sd["RectumLumen"] < 0) & masks["Rectum"]] = 50.0
        t2[masks["SacralPlexus"]] = 420.0
        bone = self._bones(sd)
        boneSd = np.minimum(np.minimum(sd["Sacrum"], sd["PelvicBones"]), sd["L5"])
        for s in ("L", "R"):
            boneSd = np.minimum(boneSd, np.minimum(sd[f"FemoralHead_{s}"], sd[f"FemurShaft_{s}"]))
        t2[bone] = np.where(boneSd > -2.5, 40.0, 330.0)[bone]
        if "Fibrosis" in masks:
            t2[masks["Fibrosis"]] = 90.0
        if "GTV" in masks:
            t2[masks["GTV"]] = 520.0
        # a smooth receive-coil sensitivity (brighter posteriorly)
        t2 *= (1.0 + 0.12 * np.tanh(y / 150.0)).astype(np.float32)
        return t2
