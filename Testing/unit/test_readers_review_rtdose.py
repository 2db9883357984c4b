"""RTDOSE reader defects found by the readers review: where GridFrameOffsetVector puts the frames (frame 0 always at
ImagePositionPatient, the absolute form recognised only when its first value is the first frame's position), and
RTDOSE files written without the 128-byte preamble (read as DICOM, not as a unit-less image)."""

import numpy as np
import pydicom
import pytest

from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.rtdose import readRtDose, requirePlanDose
from reirradiation_testing import newDicomFile

HFS = (1, 0, 0, 0, 1, 0)
FFS = (-1, 0, 0, 0, 1, 0)  # slice normal -z
FFP = (1, 0, 0, 0, -1, 0)  # slice normal -z


def writeDose(path, pixels, ipp, iop, offsets, pixelSpacing=(2.0, 3.0), scaling=1e-3):
    """A minimal RTDOSE (PLAN, GY) with the given grid, as a planning system writes it."""
    ds = newDicomFile("1.2.840.10008.5.1.4.1.1.481.2", "RTDOSE")
    pixels = np.asarray(pixels)
    ds.NumberOfFrames, ds.Rows, ds.Columns = pixels.shape
    ds.ImagePositionPatient = [f"{v:.6g}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:.6g}" for v in iop]
    ds.PixelSpacing = [f"{v:.6g}" for v in pixelSpacing]
    ds.GridFrameOffsetVector = [f"{v:.6g}" for v in offsets]
    ds.FrameIncrementPointer = 0x3004000C
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = f"{scaling:.10g}"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def hotVoxel(frame, row=3, column=2, shape=(6, 5, 7)):
    pixels = np.zeros(shape)
    pixels[frame, row, column] = 1000
    return pixels


def hotVoxelLps(dose):
    k, j, i = np.unravel_index(np.argmax(dose.doseGy), dose.doseGy.shape)
    return np.asarray(dose.geometry.indexToLps([i, j, k]))


IPP = (50.0, -30.0, -100.0)
STEPS = np.arange(6) * 2.5


@pytest.mark.parametrize("iop, offsets, frameZ", [
    # relative form, also with a rounding residue as first value (read as absolute before: moved by 100 mm)
    (HFS, STEPS, -90.0),
    (HFS, np.concatenate([[0.001], STEPS[1:]]), -90.0),
    (FFS, STEPS, -110.0),
    # absolute form, first value = patient z of ImagePositionPatient (what planning systems write): feet-first grids
    # were moved by 200 mm (to z = +100)
    (HFS, IPP[2] + STEPS, -90.0),
    (HFS, IPP[2] - STEPS, -110.0),
    (FFS, IPP[2] + STEPS, -90.0),
    (FFS, IPP[2] - STEPS, -110.0),
    (FFP, IPP[2] + STEPS, -90.0),
    # absolute form along the slice normal (first value = IPP . n = +100 for a feet-first grid)
    (FFS, 100.0 + STEPS, -110.0),
], ids=["HFS-relative", "HFS-relative-residue", "FFS-relative", "HFS-absolute", "HFS-absolute-descending",
        "FFS-absolute-z", "FFS-absolute-z-descending", "FFP-absolute-z", "FFS-absolute-along-normal"])
def test_frame_zero_stays_at_image_position_and_frames_follow_the_offsets(tmp_path, iop, offsets, frameZ):
    first = readRtDose(writeDose(tmp_path / "first.dcm", hotVoxel(0, 0, 0), IPP, iop, offsets))
    assert hotVoxelLps(first) == pytest.approx(IPP, abs=1e-6)
    assert first.geometry.indexToLps([0, 0, 0]) == pytest.approx(IPP, abs=1e-6)
    fourth = readRtDose(writeDose(tmp_path / "fourth.dcm", hotVoxel(4, 0, 0), IPP, iop, offsets))
    assert hotVoxelLps(fourth) == pytest.approx((IPP[0], IPP[1], frameZ), abs=0.01)


def test_offsets_neither_relative_nor_absolute_refused_naming_the_file_and_both_numbers(tmp_path):
    path = writeDose(tmp_path / "odd.dcm", hotVoxel(0), IPP, FFS, 37.5 + STEPS)
    with pytest.raises(InputError, match="GridFrameOffsetVector") as excinfo:
        readRtDose(path)
    message = str(excinfo.value)
    assert "odd.dcm" in message and "37.5" in message and "100" in message


def test_rtdose_without_preamble_is_read_as_dicom(tmp_path):
    # 50 Gy = 20000 x 2.5e-3 at frame 3: the SimpleITK fallback read 20000 "Gy" with no units and no summation type
    source = writeDose(tmp_path / "source.dcm", hotVoxel(3, 2, 1, shape=(5, 4, 6)) * 20, (-50.0, -30.0, -100.0), HFS,
                       STEPS[:5], scaling=2.5e-3)
    ds = pydicom.dcmread(source)
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(tmp_path / "nopreamble.dcm", ds, enforce_file_format=False, implicit_vr=True,
                     little_endian=True)
    assert not pydicom.misc.is_dicom(tmp_path / "nopreamble.dcm")
    dose = requirePlanDose(readRtDose(tmp_path / "nopreamble.dcm"))
    assert dose.fromDicom and (dose.units, dose.summationType, dose.doseType) == ("GY", "PLAN", "PHYSICAL")
    assert dose.maxGy == pytest.approx(50.0)
    assert hotVoxelLps(dose) == pytest.approx((-47.0, -26.0, -92.5))


def test_files_that_are_not_dicom_still_go_to_the_image_reader(tmp_path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.full((3, 4, 5), 2.0, np.float32))
    sitk.WriteImage(image, str(tmp_path / "dose.nrrd"))
    dose = readRtDose(tmp_path / "dose.nrrd")
    assert not dose.fromDicom and dose.maxGy == pytest.approx(2.0)
    (tmp_path / "junk.dcm").write_bytes(b"\x08\x00" + bytes(range(256)) * 4)
    with pytest.raises(InputError, match="junk.dcm"):
        readRtDose(tmp_path / "junk.dcm")
