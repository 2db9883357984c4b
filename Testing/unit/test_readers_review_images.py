"""Image-series reader defects found by the readers review: Enhanced (multi-frame) CT/MR checked like single-frame
series (frames sorted by their own positions, gaps and orientations refused, per-frame rescale applied), and a series
whose slices differ in PixelSpacing refused."""

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ReirradiationDoseLib.core.dicomimage import readImageSeries
from ReirradiationDoseLib.core.dicomwrite import PatientStudy, writeImageSeries
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from reirradiation_testing import newDicomFile

CORNER = np.array([-10.0, -20.0, 0.0])


def frameValue(n):
    """Stored value of the n-th frame written (before rescale): tells the frames apart after sorting."""
    return 1000 + 10 * n


def writeEnhancedCt(folder, heights, iop=(1, 0, 0, 0, 1, 0), slopes=None, orientations=None):
    """An Enhanced CT (one file, frames in the given order) whose frame n lies ``heights[n]`` mm along the slice
    normal from CORNER; rescale shared (slope 1, intercept -1024) unless ``slopes`` gives one per frame."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = newDicomFile("1.2.840.10008.5.1.4.1.1.2.1", "CT")  # Enhanced CT Image Storage
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(heights), 4, 6
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = ["0.8", "0.9"]
    measures.SliceThickness = "2.5"
    shared.PixelMeasuresSequence = Sequence([measures])
    if orientations is None:
        orientation = Dataset()
        orientation.ImageOrientationPatient = [f"{v:g}" for v in iop]
        shared.PlaneOrientationSequence = Sequence([orientation])
    if slopes is None:
        rescale = Dataset()
        rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = "1", "-1024", "HU"
        shared.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    normal = np.cross(np.array(iop[:3], float), np.array(iop[3:], float))
    frames = []
    for n, height in enumerate(heights):
        frame = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [f"{v:.4f}" for v in CORNER + height * normal]
        frame.PlanePositionSequence = Sequence([position])
        if orientations is not None:
            orientation = Dataset()
            orientation.ImageOrientationPatient = [f"{v:g}" for v in orientations[n]]
            frame.PlaneOrientationSequence = Sequence([orientation])
        if slopes is not None:
            rescale = Dataset()
            rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = f"{slopes[n]:g}", "-1024", "HU"
            frame.PixelValueTransformationSequence = Sequence([rescale])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack([np.full((4, 6), frameValue(n)) for n in range(len(heights))]).astype("<u2").tobytes()
    ds.save_as(folder / "enhanced.dcm", enforce_file_format=True)
    return folder


def frameAt(image, k):
    """(LPS position of the first voxel of slice k, its value)."""
    return np.array(image.TransformIndexToPhysicalPoint((0, 0, k))), float(sitk.GetArrayViewFromImage(image)[k, 0, 0])


def test_uniform_enhanced_ct_reads_as_gdcm_reads_it(tmp_path):
    folder = writeEnhancedCt(tmp_path / "uniform", list(np.arange(8) * 2.5))
    image, info = readImageSeries(folder)
    gdcm = sitk.ReadImage(str(folder / "enhanced.dcm"), sitk.sitkFloat32)
    assert ImageGeometry.fromImage(image).sameGridAs(ImageGeometry.fromImage(gdcm))
    assert image.GetSpacing() == pytest.approx((0.9, 0.8, 2.5))
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(gdcm))
    assert info.modality == "CT" and len(info.files) == 1


def test_enhanced_ct_frames_in_acquisition_order_are_sorted_by_position(tmp_path):
    heights = [0.0, 5.0, 10.0, 15.0, 2.5, 7.5, 12.5, 17.5]  # interleaved: GDCM placed them 12 mm off
    image, _ = readImageSeries(writeEnhancedCt(tmp_path / "interleaved", heights))
    assert image.GetSpacing()[2] == pytest.approx(2.5)
    for k in range(len(heights)):
        position, value = frameAt(image, k)
        n = heights.index(2.5 * k)
        assert position == pytest.approx(CORNER + (0, 0, 2.5 * k))
        assert value == frameValue(n) - 1024


def test_enhanced_ct_descending_and_feet_first_frames(tmp_path):
    heights = list(np.arange(8) * 2.5)[::-1]
    image, _ = readImageSeries(writeEnhancedCt(tmp_path / "descending", heights))
    for k in range(8):
        position, value = frameAt(image, k)
        assert value == frameValue(heights.index(round(position[2] - CORNER[2], 6))) - 1024
    image, _ = readImageSeries(writeEnhancedCt(tmp_path / "ffs", list(np.arange(8) * 2.5), iop=(-1, 0, 0, 0, 1, 0)))
    for k in range(8):
        position, value = frameAt(image, k)
        assert value == frameValue(int(round((CORNER[2] - position[2]) / 2.5))) - 1024  # normal -z


def test_enhanced_ct_with_a_missing_frame_refused(tmp_path):
    heights = [0.0, 2.5, 5.0, 10.0, 12.5, 15.0, 17.5]  # GDCM gave 1 x 1 x 1 mm voxels, 11.5 mm off
    with pytest.raises(InputError, match="not equally spaced") as excinfo:
        readImageSeries(writeEnhancedCt(tmp_path / "gap", heights))
    assert "gap" in str(excinfo.value)


def test_enhanced_ct_per_frame_rescale_is_applied(tmp_path):
    slopes = [1 + 0.5 * n for n in range(6)]
    image, _ = readImageSeries(writeEnhancedCt(tmp_path / "rescale", list(np.arange(6) * 2.5), slopes=slopes))
    values = sitk.GetArrayFromImage(image)[:, 0, 0]
    assert values == pytest.approx([frameValue(n) * slopes[n] - 1024 for n in range(6)])


def test_enhanced_ct_frames_with_different_orientations_refused(tmp_path):
    tilted = (1, 0, 0, 0, np.cos(0.2), np.sin(0.2))
    orientations = [(1, 0, 0, 0, 1, 0)] * 3 + [tilted] * 3
    with pytest.raises(InputError, match="different orientations"):
        readImageSeries(writeEnhancedCt(tmp_path / "mixed", list(np.arange(6) * 2.5), orientations=orientations))


def test_slices_with_different_pixel_spacing_refused(tmp_path):
    geometry = ImageGeometry((6, 4, 6), (0.8, 0.8, 2.5), (-10.0, -20.0, 0.0))
    study = PatientStudy.new("Spacing^Test", "S1", "20240101")
    writeImageSeries(np.zeros(geometry.shape, np.int16), geometry, tmp_path / "ct", study)
    files = sorted((tmp_path / "ct").glob("*.dcm"))
    for path in files[3:]:
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = ["1.0", "1.0"]  # the same matrix: a 25 % scale error on these slices
        ds.save_as(path)
    with pytest.raises(InputError, match="pixel spacing") as excinfo:
        readImageSeries(tmp_path / "ct")
    assert "ct" in str(excinfo.value)
