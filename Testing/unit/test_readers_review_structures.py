"""RTSTRUCT readers (readers review): the slab of every contour plane taken from the whole structure set, an ROI
smaller than the grid's voxels not called "outside the image grid", and the frame of reference of an RTSTRUCT read
through segio compared with the dose's or image's."""

import logging

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.rtstruct import rasterizeAll, rasterizeAllWithReport, rasterizeRoi, readRtStruct
from ReirradiationDoseLib.core.segio import readSegmentation, readSegmentationWithGeometry
from reirradiation_testing import newDicomFile

FRAME_A = "1.2.826.0.1.3680043.8.498.1"
FRAME_B = "1.2.826.0.1.3680043.8.498.2"


def writeStructureSet(path, rois, frameOfReferenceUid=FRAME_A):
    """An RTSTRUCT with ``rois``: ``{name: [(n, 3) LPS points of a CLOSED_PLANAR contour, ...]}``."""
    ds = newDicomFile("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", frameOfReferenceUid)
    frame = Dataset()
    frame.FrameOfReferenceUID = frameOfReferenceUid
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    listed, contoured = [], []
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frameOfReferenceUid
        listed.append(roi)
        items = []
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.6g}" for v in np.asarray(points, float).ravel()]
            items.append(contour)
        roiContour = Dataset()
        roiContour.ReferencedROINumber, roiContour.ROIDisplayColor = number, [255, 0, 0]
        roiContour.ContourSequence = Sequence(items)
        contoured.append(roiContour)
    ds.StructureSetROISequence = Sequence(listed)
    ds.ROIContourSequence = Sequence(contoured)
    ds.save_as(path, enforce_file_format=True)
    return path


def circle(cx, cy, r, z, n=32):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)])


def square(cx, cy, half, z):
    return np.array([[cx - half, cy - half, z], [cx + half, cy - half, z], [cx + half, cy + half, z],
                     [cx - half, cy + half, z]], float)


def slicesUsed(mask):
    return int(mask.any(axis=(1, 2)).sum())


def test_sparse_rois_take_their_slab_from_the_whole_structure_set(tmp_path):
    rois = {"BODY": [circle(0, 0, 60, z) for z in np.arange(-50, 50.1, 2.5)],
            "Fiducials": [circle(x, 0, 1.5, z) for x, z in ((-10, -20.0), (5, 0.0), (12, 25.0))],
            "Nodes": [circle(-30, 10, 6, z) for z in (-30.0, -27.5)] + [circle(30, 10, 6, z) for z in (10.0, 12.5)]}
    structures = readRtStruct(writeStructureSet(tmp_path / "rs.dcm", rois))
    geometry = ImageGeometry((61, 13, 41), (2.5, 2.5, 2.5), (-75.0, -15.0, -50.0))
    masks = rasterizeAll(structures, geometry)
    assert slicesUsed(masks["Fiducials"]) == 3  # was 26
    assert slicesUsed(masks["Nodes"]) == 4
    assert slicesUsed(rasterizeRoi(structures, "Fiducials", geometry)) == 3
    masks, _, _ = readSegmentationWithGeometry(tmp_path / "rs.dcm", geometry)
    assert slicesUsed(masks["Fiducials"]) == 3


def test_roi_smaller_than_the_voxels_is_not_called_outside_the_grid(tmp_path, caplog):
    rois = {"small": [square(1.25, 1.25, 1.2, z) for z in (0.0, 2.5)],
            "far": [square(500.0, 0.0, 5.0, z) for z in (0.0, 2.5)]}
    structures = readRtStruct(writeStructureSet(tmp_path / "rs.dcm", rois))
    geometry = ImageGeometry((41, 41, 21), (2.5, 2.5, 2.5), (-50.0, -50.0, -25.0))
    with caplog.at_level(logging.WARNING):
        masks, report = rasterizeAllWithReport(structures, geometry, includeEmpty=True)
    assert not masks["small"].any() and not masks["far"].any()
    assert report.smallerThanVoxels == ("small",)
    assert report.emptyOnGrid == ("small", "far")
    assert "smaller than the grid's voxels: small" in caplog.text
    assert "outside the image grid: far" in caplog.text


def test_the_case_warnings_say_why_an_roi_is_empty_on_the_reference_grid(tmp_path):
    from ReirradiationDoseLib.core import segio
    from ReirradiationDoseLib.core.pipeline import _readStructures

    rois = {"small": [square(1.25, 1.25, 1.2, z) for z in (0.0, 2.5)],
            "far": [square(500.0, 0.0, 5.0, z) for z in (0.0, 2.5)],
            "PTV": [square(0.0, 0.0, 10.0, z) for z in (0.0, 2.5)]}
    path = writeStructureSet(tmp_path / "rs.dcm", rois)
    warnings = []
    masks, _ = _readStructures(path, ImageGeometry((41, 41, 21), (2.5, 2.5, 2.5), (-50.0, -50.0, -25.0)), segio,
                               warnings, FRAME_A)
    assert masks["PTV"].any()
    assert "structure 'small' in rs.dcm is empty on the reference grid (smaller than its voxels" in "\n".join(warnings)
    assert ("structure 'far' in rs.dcm is empty on the reference grid (its contours lie outside the reference image)"
            in warnings)
    assert not any("'PTV'" in w for w in warnings)


def test_segio_refuses_structures_of_another_frame_of_reference(tmp_path):
    path = writeStructureSet(tmp_path / "rs.dcm", {"PTV": [square(0, 0, 10, z) for z in np.arange(-6, 6.1, 3.0)]})
    geometry = ImageGeometry((20, 20, 7), (2.5, 2.5, 3.0), (-25.0, -25.0, -9.0))
    with pytest.raises(InputError, match="frame of reference") as excinfo:
        readSegmentationWithGeometry(path, geometry, frameOfReferenceUid=FRAME_B, referencePath=tmp_path / "rd.dcm")
    message = str(excinfo.value)
    assert "rs.dcm" in message and "rd.dcm" in message and FRAME_A in message and FRAME_B in message
    with pytest.raises(InputError, match="frame of reference"):
        readSegmentation(path, geometry, frameOfReferenceUid=FRAME_B)
    masks, _, _ = readSegmentationWithGeometry(path, geometry, frameOfReferenceUid=FRAME_A)
    assert masks["PTV"].sum() * geometry.voxelVolumeCc == pytest.approx(6.0)
    assert readSegmentation(path, geometry)["PTV"].any()  # not known: not compared, as before


def test_the_dvh_and_eqd2_commands_refuse_structures_of_another_frame_of_reference(tmp_path, capsys):
    """``reirradiation dvh`` / ``eqd2`` with an RTSTRUCT drawn in frame A on an RTDOSE in frame B exited 0 with a DVH
    of structures placed on the wrong anatomy; now exit 2 naming both files and UIDs (same frame: read as before)."""
    from ReirradiationDoseLib.cli import main
    from ReirradiationDoseLib.core.dicomwrite import PatientStudy, writeRtDose

    geometry = ImageGeometry((20, 20, 7), (2.5, 2.5, 3.0), (-25.0, -25.0, -9.0))
    dose = tmp_path / "rd.dcm"
    writeRtDose(dose, np.full((7, 20, 20), 20.0, np.float32), geometry,
                PatientStudy(patientName="REV", patientId="REV1", studyInstanceUid=generate_uid(),
                             studyDate="20260101", frameOfReferenceUid=FRAME_B))
    other = writeStructureSet(tmp_path / "rs.dcm", {"PTV": [square(0, 0, 10, z) for z in np.arange(-6, 6.1, 3.0)]})
    for argv in (["dvh", "--dose", str(dose), "--segmentation", str(other)],
                 ["eqd2", "--dose", str(dose), "--fractions", "5", "--segmentation", str(other), "--output",
                  str(tmp_path / "eqd2.nrrd")]):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert "frame of reference" in error and FRAME_A in error and FRAME_B in error and "rd.dcm" in error
    assert not (tmp_path / "eqd2.nrrd").exists()
    same = writeStructureSet(tmp_path / "rs_b.dcm", {"PTV": [square(0, 0, 10, z) for z in np.arange(-6, 6.1, 3.0)]},
                             frameOfReferenceUid=FRAME_B)
    assert main(["dvh", "--dose", str(dose), "--segmentation", str(same)]) == 0
    assert "PTV" in capsys.readouterr().out


def test_two_rois_of_one_name_are_both_read_and_said(tmp_path, caplog):
    """An adversarial review: the second of two ROIs named "GTV" became "GTV (2)" without a word; a constraint or
    tissue naming GTV reads the first only."""
    import pydicom

    path = writeStructureSet(tmp_path / "rs.dcm", {"GTV": [square(0, 0, 5, 0)], "other": [square(0, 0, 8, 0)]})
    ds = pydicom.dcmread(path)
    ds.StructureSetROISequence[1].ROIName = "GTV"
    ds.save_as(path)
    with caplog.at_level(logging.WARNING):
        rt = readRtStruct(path)
    assert [roi.name for roi in rt.rois] == ["GTV", "GTV (2)"]
    assert any("two ROIs are named 'GTV'; ROI number 2 is read as 'GTV (2)'" in r.getMessage()
               for r in caplog.records), caplog.records
    assert rt.renamed == (("GTV", 2, "GTV (2)"),)
    # a run reads the file several times (patient check, structures, guides): the log says it once (it said it twice
    # or three times), the result still names it; the file written again is logged again
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert readRtStruct(path).renamed == (("GTV", 2, "GTV (2)"),)
    assert not [r for r in caplog.records if "two ROIs" in r.getMessage()]
    ds.StructureSetROISequence[1].ROIName = "GTV"
    ds.StructureSetLabel = "again"
    ds.save_as(path)
    with caplog.at_level(logging.WARNING):
        readRtStruct(path)
    assert len([r for r in caplog.records if "two ROIs" in r.getMessage()]) == 1
    # the dose pipeline carries it into summary.json's warnings, not only the log (the last session's left item)
    from ReirradiationDoseLib.core import pipeline, segio

    warnings = []
    geometry = ImageGeometry((24, 24, 3), (1.0, 1.0, 1.0), (-12.0, -12.0, -1.0))
    masks, _ = pipeline._readStructures(path, geometry, segio, warnings, FRAME_A)
    assert sorted(masks) == ["GTV", "GTV (2)"] and masks["GTV (2)"].sum() > masks["GTV"].sum()
    assert any(w.startswith("rs.dcm: two ROIs are named 'GTV'; ROI number 2 is read as 'GTV (2)'") for w in warnings)
