"""Compressed pixel data: JPEG Lossless (Process 14, SV1), the syntax PACS most often exports CT and MR in, which
pydicom alone (no plugins; Slicer bundles none) cannot decode. Single-frame series, Enhanced (multi-frame) images and
RTDOSE are decoded by GDCM instead, and read exactly as their uncompressed originals: rescale, per-frame rescale and
DoseGridScaling applied once, frames sorted by their own positions."""

import logging

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.core.dicomimage import readImageSeries
from ReirradiationDoseLib.core.dicomwrite import PatientStudy, writeImageSeries, writeRtDose
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.rtdose import readRtDose
from reirradiation_testing import compressJpegLossless
from test_readers_review_images import writeEnhancedCt

GEOMETRY = ImageGeometry((16, 12, 5), (0.8, 0.9, 2.5), (-10.0, -20.0, 30.0))


def ctSeries(folder):
    hu = (np.arange(int(np.prod(GEOMETRY.shape))).reshape(GEOMETRY.shape) * 37 % 3000 - 1000).astype(np.int16)
    writeImageSeries(hu, GEOMETRY, folder, PatientStudy.new("Jpeg^Lossless", "J1", "20240101"))
    return folder


def assertSameImage(image, reference):
    assert image.GetOrigin() == pytest.approx(reference.GetOrigin())
    assert image.GetSpacing() == pytest.approx(reference.GetSpacing())
    assert image.GetDirection() == pytest.approx(reference.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))


def test_a_jpeg_lossless_ct_series_reads_as_its_uncompressed_original(tmp_path, caplog):
    folder = ctSeries(tmp_path / "ct")
    reference, _ = readImageSeries(folder)
    assert float(sitk.GetArrayFromImage(reference).min()) == -1000.0  # negative HU: rescale and sign both matter
    for path in folder.glob("*.dcm"):
        compressJpegLossless(path)
    with caplog.at_level(logging.INFO, logger="ReirradiationDoseLib.core.dicomimage"):
        image, info = readImageSeries(folder)
    assert caplog.text.count("decoded by GDCM") == GEOMETRY.shape[0]  # pydicom alone could not
    assertSameImage(image, reference)
    assert not info.skippedFiles


@pytest.mark.parametrize("heights, slopes", [
    ([0.0, 5.0, 10.0, 15.0, 2.5, 7.5, 12.5, 17.5], None),  # frames in acquisition order
    (list(np.arange(6) * 2.5), [1 + 0.5 * n for n in range(6)]),  # a rescale slope per frame
])
def test_a_jpeg_lossless_enhanced_ct_reads_as_its_uncompressed_original(tmp_path, heights, slopes):
    folder = writeEnhancedCt(tmp_path / "enhanced", heights, slopes=slopes)
    reference, _ = readImageSeries(folder)
    compressJpegLossless(folder / "enhanced.dcm")
    image, _ = readImageSeries(folder)
    assertSameImage(image, reference)


def test_a_jpeg_lossless_rtdose_reads_its_dose_once_scaled(tmp_path):
    dose = np.linspace(0.0, 62.0, int(np.prod(GEOMETRY.shape))).reshape(GEOMETRY.shape)
    path = tmp_path / "RTDOSE.dcm"
    writeRtDose(path, dose, GEOMETRY, PatientStudy.new("Jpeg^Lossless", "J1", "20240101"))
    ds = pydicom.dcmread(path)  # 16-bit stored values, as some planning systems write them
    scaling = 62.0 / 60000
    ds.PixelData = np.round(dose / scaling).astype("<u2").tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.DoseGridScaling = 16, 16, 15, f"{scaling:.10g}"
    ds.save_as(path)
    reference = readRtDose(path)
    compressJpegLossless(path)
    compressed = readRtDose(path)
    assert float(compressed.doseGy.max()) == pytest.approx(62.0, abs=1e-6)
    assert np.array_equal(compressed.doseGy, reference.doseGy)
    assert compressed.geometry.sameGridAs(reference.geometry)


def test_pixel_data_neither_decoder_can_read_is_refused_naming_the_file(tmp_path):
    folder = ctSeries(tmp_path / "ct")
    for path in folder.glob("*.dcm"):
        compressJpegLossless(path)
        ds = pydicom.dcmread(path)
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"])
        ds.save_as(path)
    with pytest.raises(InputError, match="could be decoded") as excinfo:
        readImageSeries(folder)
    assert "GDCM" in str(excinfo.value) and "CT_" in str(excinfo.value) and str(folder) in str(excinfo.value)


def test_damaged_uncompressed_pixel_data_is_not_handed_to_gdcm(tmp_path):
    """Native pixel data pydicom cannot read is damaged: refused with pydicom's reason at once. GDCM was asked too,
    and a header declaring gigabytes made it allocate them (a fuzzed RTDOSE took over 10 s)."""
    path = tmp_path / "RTDOSE.dcm"
    writeRtDose(path, np.ones(GEOMETRY.shape), GEOMETRY, PatientStudy.new("Jpeg^Lossless", "J1", "20240101"))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 12000, 12000
    ds.save_as(path)
    with pytest.raises(InputError, match="cannot be decoded") as excinfo:
        readRtDose(path)
    assert "GDCM" not in str(excinfo.value) and "RTDOSE.dcm" in str(excinfo.value)


def test_a_monochrome1_jpeg_lossless_series_is_not_inverted(tmp_path):
    """GDCM inverts MONOCHROME1 pixels into MONOCHROME2: a CT of -1000..1997 HU read -1998..999 HU (verification
    review). The stored values are read, as pydicom reads them uncompressed."""
    folder = ctSeries(tmp_path / "ct")
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(path)
    reference, _ = readImageSeries(folder)
    for path in folder.glob("*.dcm"):
        compressJpegLossless(path)
    image, _ = readImageSeries(folder)
    assertSameImage(image, reference)
    assert float(sitk.GetArrayFromImage(image).min()) == -1000.0
