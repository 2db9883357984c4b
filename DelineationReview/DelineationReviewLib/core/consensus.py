"""Consensus of several observers: STAPLE, majority vote and the agreement (frequency) map (REFERENCE §4).

All functions work on masks already cropped to one fixed box. The crop matters for STAPLE: its estimate of the
prior foreground fraction and of each observer's specificity depend on how much background the grid holds
(REFERENCE §7: 178.0 cc on a crop vs 183.1 cc on the full grid in one test). The analysis therefore always runs
STAPLE on the same rule -- the union bounding box of all observers plus a fixed margin in mm, clipped to the
image -- and records the rule and the box with the result (``CropBox.toDict()``).

- Agreement map: per voxel, the number of observers that included it (0..n).
- Majority vote: voxels included by **more than half** of the observers (a tie with an even number of observers
  is excluded).
- STAPLE (Warfield, Zou & Wells, IEEE TMI 2004;23:903-921) via ``SimpleITK.STAPLEImageFilter``; the consensus is
  the voxels whose posterior probability is >= 0.5. STAPLE's own sensitivity/specificity estimates are reported.
- Uncertainty band: voxels included by at least one observer but not by all (union minus intersection), in cc.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

__all__ = ["agreementMap", "majorityVote", "StapleResult", "staple", "agreementSummary"]


def agreementMap(masks) -> np.ndarray:
    """Per voxel, how many of ``masks`` include it (uint8, or uint16 beyond 255 observers)."""
    masks = list(masks)
    dtype = np.uint8 if len(masks) < 256 else np.uint16
    counts = np.zeros(masks[0].shape, dtype=dtype)
    for mask in masks:
        counts += mask.astype(dtype, copy=False)
    return counts


def majorityVote(counts: np.ndarray, numberOfObservers: int) -> np.ndarray:
    """Voxels included by more than half of the observers (ties excluded)."""
    return 2 * counts.astype(np.int32) > numberOfObservers


@dataclass(frozen=True)
class StapleResult:
    """STAPLE consensus on the crop: mask (probability >= threshold), probability map, per-observer estimates."""

    mask: np.ndarray
    probability: np.ndarray
    sensitivity: tuple[float, ...]
    specificity: tuple[float, ...]
    iterations: int
    threshold: float = 0.5


STAPLE_MAX_ITERATIONS = 200


def staple(masks, spacingMmXyz=(1.0, 1.0, 1.0), threshold: float = 0.5,
           maximumIterations: int = STAPLE_MAX_ITERATIONS) -> StapleResult:
    """STAPLE of binary ``masks`` (all the same shape, already cropped) with SimpleITK."""
    images = []
    for mask in masks:
        image = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
        image.SetSpacing(tuple(float(s) for s in spacingMmXyz))
        images.append(image)
    staplefilter = sitk.STAPLEImageFilter()
    staplefilter.SetForegroundValue(1.0)
    staplefilter.SetMaximumIterations(int(maximumIterations))
    result = staplefilter.Execute(images)
    probability = sitk.GetArrayFromImage(result)  # a copy (REFERENCE §7: never a view of a temporary)
    return StapleResult(
        mask=probability >= threshold,
        probability=probability.astype(np.float32),
        sensitivity=tuple(float(v) for v in staplefilter.GetSensitivity()),
        specificity=tuple(float(v) for v in staplefilter.GetSpecificity()),
        iterations=int(staplefilter.GetElapsedIterations()),
        threshold=float(threshold),
    )


def agreementSummary(counts: np.ndarray, numberOfObservers: int, voxelVolumeCc: float) -> dict:
    """Volumes (cc) of the union, the intersection, the uncertainty band and of each agreement level."""
    histogram = np.bincount(counts.ravel(), minlength=numberOfObservers + 1)
    union = int(histogram[1:].sum())
    intersection = int(histogram[numberOfObservers]) if numberOfObservers > 0 else 0
    return {
        "uncertaintyBandCc": (union - intersection) * voxelVolumeCc,
        "unionCc": union * voxelVolumeCc,
        "intersectionCc": intersection * voxelVolumeCc,
        "volumeCcByAgreement": {str(k): float(histogram[k]) * voxelVolumeCc for k in range(1, numberOfObservers + 1)},
        "definition": "uncertainty band = voxels included by at least one observer but not by all "
                      "(union minus intersection)",
    }
