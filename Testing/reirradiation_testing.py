"""Paths of the test suite: project root, the shared real data (../shared/data), artifacts for humans to look at.

Import as ``from reirradiation_testing import sharedDataPath`` (a unique name: each test folder has a conftest).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REIRRADIATION_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
ARTIFACTS = PROJECT_ROOT / "Testing" / "_artifacts"


def csvRows(path) -> list[dict]:
    """The rows of a CSV file as dicts (the file read and closed at once)."""
    import csv

    return list(csv.DictReader(Path(path).read_text(encoding="utf-8").splitlines()))


def sharedDataPath(*parts: str) -> Path:
    """Path inside ../shared/data; skips the calling test with a clear message when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (it lives beside the project in ../shared/data; "
                    "a fresh clone without it skips these tests)")
    return path


def newDicomFile(sopClassUid: str, modality: str, frameOfReferenceUid: str | None = None):
    """A new DICOM file dataset (explicit VR little endian, with preamble) of one SOP class: SOP Class and Instance
    UIDs, Modality, PatientID "REV1", new study and series UIDs and ``frameOfReferenceUid`` (new when None); the
    tests that build small RTDOSE / RTPLAN / RTSTRUCT / Enhanced CT files add the rest."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sopClassUid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = modality, "REV1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = frameOfReferenceUid or generate_uid()
    return ds


def compressJpegLossless(path) -> None:
    """Re-encode the pixel data of a DICOM file in place as JPEG Lossless (Process 14, SV1; the syntax PACS most often
    exports CT and MR in), one fragment per frame, through GDCM (SimpleITK); stored values must fit 16 bits."""
    import tempfile

    import numpy as np
    import pydicom
    import SimpleITK as sitk
    from pydicom.encaps import encapsulate, generate_fragmented_frames

    ds = pydicom.dcmread(path)
    stored = np.asarray(ds.pixel_array)
    frames = stored.reshape((-1, *stored.shape[-2:]))
    pixelType = np.int16 if int(ds.PixelRepresentation) else np.uint16
    assert frames.min() >= np.iinfo(pixelType).min and frames.max() <= np.iinfo(pixelType).max
    fragments = []
    with tempfile.TemporaryDirectory() as folder:
        for frame in frames:
            writer = sitk.ImageFileWriter()
            writer.SetFileName(str(Path(folder) / "frame.dcm"))
            writer.SetImageIO("GDCMImageIO")
            writer.UseCompressionOn()
            writer.SetCompressor("JPEG")
            writer.Execute(sitk.GetImageFromArray(frame[None].astype(pixelType)))
            encoded = pydicom.dcmread(Path(folder) / "frame.dcm")
            assert encoded.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
            (frame_fragments,) = generate_fragmented_frames(encoded.PixelData, number_of_frames=1)
            fragments.append(b"".join(frame_fragments))
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLosslessSV1
    ds.save_as(path)
