"""Phantoms shared by the registration tests and benchmarks (not a test module).

``pelvisPhantom``: an elliptical body (fat shell, textured soft tissue), two femoral heads, a bladder and a rectum
with gas, CT numbers in HU. The texture (smooth Gaussian noise, 40 HU) stands for the fat/muscle interleaving of
real CT: without it the deformation inside a uniform organ is unobservable.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ReirradiationDoseLib.core.geometry import ImageGeometry


def pelvisPhantom(sizeXyz=(64, 64, 32), spacingMm=(3.0, 3.0, 4.0), seed: int = 7, scale: float = 0.5):
    """(ct HU float32, body mask uint8), centred at the LPS origin.

    ``scale`` 1 is an adult pelvis (body semi-axes 150 x 105 mm); 0.5 fits the small 64x64x32 test grid. The
    texture's correlation length is 8 mm times ``scale`` (a few voxels: the registration can see it).
    """
    geometry = ImageGeometry(sizeXyz, spacingMm,
                             tuple(-(n - 1) * s / 2 for n, s in zip(sizeXyz, spacingMm, strict=True)))
    p = geometry.voxelCentresLps()
    x, y, z = p[..., 0] / scale, p[..., 1] / scale, p[..., 2] / scale
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(size=geometry.shape), [8.0 * scale / s for s in spacingMm[::-1]])
    texture /= texture.std()
    ct = np.full(geometry.shape, -1000.0)
    body = (x / 150) ** 2 + (y / 105) ** 2 < 1
    ct[body] = -90 + 60 * texture[body]
    muscle = (x / 135) ** 2 + (y / 90) ** 2 < 1
    ct[muscle] = 40 + 40 * texture[muscle]
    for side in (-75.0, 75.0):
        ct[(x - side) ** 2 + (y - 5) ** 2 + (0.8 * z) ** 2 < 25 ** 2] = 700 + 60 * texture[
            (x - side) ** 2 + (y - 5) ** 2 + (0.8 * z) ** 2 < 25 ** 2]
    bladder = (x / 40) ** 2 + ((y + 35) / 30) ** 2 + (z / 45) ** 2 < 1
    ct[bladder] = 10 + 8 * texture[bladder]
    ct[x ** 2 + (y - 50) ** 2 < 12 ** 2] = -700
    image = sitk.GetImageFromArray(ct.astype(np.float32))
    geometry.applyTo(image)
    mask = sitk.GetImageFromArray(body.astype(np.uint8))
    geometry.applyTo(mask)
    return image, mask
