"""Segmentation I/O (core/segio.py): .seg.nrrd (3D labelmap, 4D layered, legacy 4D), plain masks, RTSTRUCT, and the
VTK XML planar-contour files written by VTK itself in every encoding (ascii, binary, appended raw/base64, zlib)."""

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.core.dicomwrite import PatientStudy, writeImageSeries, writeRtStruct
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.segio import (
    geometryFromSlicerGeometryString,
    readNrrd,
    readSegmentation,
    readSegmentationWithGeometry,
    readVtkPlanarContours,
    writeSegNrrd,
)

GEOMETRY = ImageGeometry((30, 26, 12), (0.8, 1.1, 2.0), (-60.3, 20.1, -100.0),
                         tuple(np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]).ravel()))


def masks():
    k, j, i = np.mgrid[: GEOMETRY.shape[0], : GEOMETRY.shape[1], : GEOMETRY.shape[2]]
    a = (i - 15) ** 2 + (j - 13) ** 2 + (2 * (k - 6)) ** 2 < 80
    b = (i > 18) & (j > 15) & (k > 3)  # overlaps a
    c = (i < 5) & (k < 3)  # disjoint from a
    return {"PTV": a, "Bladder": b, "Rectum": c}


def test_seg_nrrd_round_trip_layered_and_3d(tmp_path):
    m = masks()
    writeSegNrrd(tmp_path / "all.seg.nrrd", m, GEOMETRY, colors={"PTV": (255, 0, 0), "Rectum": (0.5, 0.25, 0.25)})
    back, geometry, colors = readSegmentationWithGeometry(tmp_path / "all.seg.nrrd")
    assert geometry.sameGridAs(GEOMETRY)
    assert set(back) == set(m) and all(np.array_equal(back[n], m[n]) for n in m)
    assert colors["PTV"] == pytest.approx((1.0, 0.0, 0.0)) and colors["Rectum"] == pytest.approx((0.5, 0.25, 0.25))
    nrrd = readNrrd(tmp_path / "all.seg.nrrd")
    assert nrrd.sizes[0] == 2 and nrrd.kinds[0] == "list"  # overlapping -> two layers
    # non-overlapping -> one 3D labelmap, also readable by SimpleITK with the same geometry
    writeSegNrrd(tmp_path / "two.seg.nrrd", {"PTV": m["PTV"], "Rectum": m["Rectum"]}, GEOMETRY)
    image = sitk.ReadImage(str(tmp_path / "two.seg.nrrd"))
    assert image.GetDimension() == 3 and ImageGeometry.fromImage(image).sameGridAs(GEOMETRY)
    labels = sitk.GetArrayFromImage(image)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert image.GetMetaData("Segment1_Name") == "Rectum"
    back2 = readSegmentation(tmp_path / "two.seg.nrrd", GEOMETRY)
    assert np.array_equal(back2["Rectum"], m["Rectum"])


def test_plain_masks_nrrd_and_nifti(tmp_path):
    m = masks()["PTV"]
    image = sitk.GetImageFromArray(m.astype(np.uint8))
    GEOMETRY.applyTo(image)
    sitk.WriteImage(image, str(tmp_path / "ptv.nrrd"))
    sitk.WriteImage(image, str(tmp_path / "ptv.nii.gz"))
    for name in ("ptv.nrrd", "ptv.nii.gz"):
        back, geometry, _ = readSegmentationWithGeometry(tmp_path / name)
        assert list(back) == ["ptv"] and np.array_equal(back["ptv"], m)
        assert geometry.sameGridAs(GEOMETRY)
    other = ImageGeometry(GEOMETRY.sizeXyz, GEOMETRY.spacingMm, (0.0, 0.0, 0.0), GEOMETRY.direction)
    with pytest.raises(InputError, match="resample it explicitly"):
        readSegmentation(tmp_path / "ptv.nrrd", other)


def test_nrrd_ras_space_is_converted_to_lps(tmp_path):
    data = np.zeros((3, 4, 5), np.uint8)
    data[1, 2, 3] = 1
    header = ("NRRD0004\ntype: unsigned char\ndimension: 3\nspace: right-anterior-superior\nsizes: 5 4 3\n"
              "space directions: (-1,0,0) (0,-2,0) (0,0,3)\nkinds: domain domain domain\nencoding: gzip\n"
              "space origin: (10,20,30)\n\n")
    (tmp_path / "ras.nrrd").write_bytes(header.encode() + gzip.compress(data.tobytes()))
    back, geometry, _ = readSegmentationWithGeometry(tmp_path / "ras.nrrd")
    # RAS (10, 20, 30) is LPS (-10, -20, 30); RAS direction -x is LPS +x
    assert geometry.originMm == (-10.0, -20.0, 30.0)
    assert np.allclose(geometry.directionMatrix, np.eye(3))
    assert geometry.spacingMm == (1.0, 2.0, 3.0)
    # and SimpleITK agrees
    assert ImageGeometry.fromImage(sitk.ReadImage(str(tmp_path / "ras.nrrd"))).sameGridAs(geometry)


def test_truncated_nrrd_refused(tmp_path):
    writeSegNrrd(tmp_path / "a.seg.nrrd", masks(), GEOMETRY)
    data = (tmp_path / "a.seg.nrrd").read_bytes()
    (tmp_path / "cut.seg.nrrd").write_bytes(data[: len(data) - 200])
    with pytest.raises(InputError, match="cut.seg.nrrd"):
        readSegmentation(tmp_path / "cut.seg.nrrd")


def test_rtstruct_via_segio(tmp_path):
    axial = ImageGeometry((30, 26, 12), (0.8, 1.1, 2.0), (-60.3, 20.1, -100.0))
    study = PatientStudy.new("Seg^Test", "S1", "20240101")
    ref = writeImageSeries(np.zeros(axial.shape, np.int16), axial, tmp_path / "ct", study)
    m = masks()
    writeRtStruct(tmp_path / "rs.dcm", m, axial, study, ref, colors={"PTV": (255, 0, 0)})
    with pytest.raises(InputError, match="no voxel grid"):
        readSegmentation(tmp_path / "rs.dcm")
    back, _, colors = readSegmentationWithGeometry(tmp_path / "rs.dcm", axial)
    assert all(np.array_equal(back[n], m[n]) for n in m)
    assert colors["PTV"] == (1.0, 0.0, 0.0)


def test_slicer_geometry_string():
    g = geometryFromSlicerGeometryString("-0.976562;0;0;250;0;-0.976562;0;250;0;0;2.5;-122.5;0;0;0;1;0;511;0;511;0;91;")
    assert g.sizeXyz == (512, 512, 92)
    assert g.originMm == (-250.0, -250.0, -122.5)
    assert np.allclose(g.directionMatrix, np.eye(3))


# ---- VTK XML written by VTK itself ---------------------------------------------------------------------------------

def _writeVtp(path, contoursRas, mode, compress, name="Rectum"):
    vtk = pytest.importorskip("vtk")
    points = vtk.vtkPoints()
    points.SetDataTypeToDouble()
    lines = vtk.vtkCellArray()
    for contour in contoursRas:
        ids = [points.InsertNextPoint(*p) for p in contour]
        lines.InsertNextCell(len(ids) + 1)
        for n in ids + [ids[0]]:
            lines.InsertCellPoint(n)
    poly = vtk.vtkPolyData()
    poly.SetPoints(points)
    poly.SetLines(lines)
    for key, value in (("Segment_Name", name), ("Segment_ID", name),
                       ("Segmentation_MasterRepresentation", "Planar contour")):
        array = vtk.vtkStringArray()
        array.SetName(key)
        array.InsertNextValue(value)
        poly.GetFieldData().AddArray(array)
    color = vtk.vtkDoubleArray()
    color.SetName("Segment_Color")
    color.SetNumberOfComponents(3)
    color.InsertNextTuple3(0.5, 0.25, 0.75)
    poly.GetFieldData().AddArray(color)
    writer = vtk.vtkXMLPolyDataWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(poly)
    {"ascii": writer.SetDataModeToAscii, "binary": writer.SetDataModeToBinary,
     "appended": writer.SetDataModeToAppended}[mode]()
    if mode == "appended":
        writer.SetEncodeAppendedData(compress == "base64")
    if compress == "none":
        writer.SetCompressorTypeToNone()
    else:
        writer.SetCompressorTypeToZLib()
    writer.SetHeaderTypeToUInt64() if compress == "uint64" else writer.SetHeaderTypeToUInt32()
    assert writer.Write() == 1


def _square(x0, y0, x1, y1, z):
    return [(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)]


@pytest.mark.parametrize("mode,compress", [("ascii", "none"), ("binary", "none"), ("binary", "zlib"),
                                           ("binary", "uint64"), ("appended", "none"), ("appended", "zlib"),
                                           ("appended", "base64")])
def test_vtp_planar_contours_every_encoding(tmp_path, mode, compress):
    # squares in RAS on planes z = 0, 2, 4; a hole on z = 2
    contours = [_square(-10.0, -5.0, 6.0, 7.0, z) for z in (0.0, 2.0, 4.0)] + [_square(-4.0, -1.0, 0.0, 3.0, 2.0)]
    _writeVtp(tmp_path / "seg_0.vtp", contours, mode, compress)
    (tmp_path / "seg.vtm").write_text(
        '<?xml version="1.0"?>\n<VTKFile type="vtkMultiBlockDataSet" version="1.0" byte_order="LittleEndian">\n'
        '<vtkMultiBlockDataSet><DataSet index="0" file="seg_0.vtp"></DataSet></vtkMultiBlockDataSet></VTKFile>\n')
    segments = readVtkPlanarContours(tmp_path / "seg.vtm")
    assert len(segments) == 1
    seg = segments[0]
    assert seg.name == "Rectum" and seg.color == pytest.approx((0.5, 0.25, 0.75))
    assert len(seg.contoursLps) == 4
    assert np.allclose(seg.contoursLps[0][0], (10.0, 5.0, 0.0))  # RAS (-10, -5, 0) -> LPS (10, 5, 0)
    grid = ImageGeometry((40, 30, 3), (0.5, 0.5, 2.0), (-9.75, -7.25, 0.0))
    m = readSegmentation(tmp_path / "seg.vtm", grid)["Rectum"]
    # LPS x in [-6, 10], y in [-7, 5]: 16 x 12 mm = 32 x 24 voxels, minus the 4 x 4 mm hole on the middle plane
    assert m[0].sum() == 32 * 24 and m[2].sum() == 32 * 24
    assert m[1].sum() == 32 * 24 - 8 * 8


def test_vtp_truncated_refused(tmp_path):
    _writeVtp(tmp_path / "a.vtp", [_square(0, 0, 5, 5, 0)], "binary", "zlib")
    data = (tmp_path / "a.vtp").read_bytes()
    (tmp_path / "b.vtp").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="b.vtp"):
        readVtkPlanarContours(tmp_path / "b.vtp")


def test_cropped_segmentation_is_placed_exactly_or_refused(tmp_path):
    m = masks()["PTV"]
    crop = ImageGeometry((10, 8, 5), GEOMETRY.spacingMm, GEOMETRY.indexToLps((12, 9, 4)), GEOMETRY.direction)
    writeSegNrrd(tmp_path / "crop.seg.nrrd", {"PTV": m[4:9, 9:17, 12:22]}, crop)
    placed = readSegmentation(tmp_path / "crop.seg.nrrd", GEOMETRY)["PTV"]
    expected = np.zeros_like(m)
    expected[4:9, 9:17, 12:22] = m[4:9, 9:17, 12:22]
    assert np.array_equal(placed, expected)
    shifted = ImageGeometry(crop.sizeXyz, crop.spacingMm, np.add(crop.originMm, (0.3, 0, 0)), crop.direction)
    writeSegNrrd(tmp_path / "shifted.seg.nrrd", {"PTV": m[4:9, 9:17, 12:22]}, shifted)
    with pytest.raises(InputError, match="resample it explicitly"):
        readSegmentation(tmp_path / "shifted.seg.nrrd", GEOMETRY)


def _nrrdBytes(header: list[str], body: bytes, newline: bytes = b"\n") -> bytes:
    return newline.join(line.encode("latin-1") for line in header) + newline + newline + body


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("encoding", ["raw", "gzip", "bzip2", "ascii"])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_nrrd_encodings_endianness_and_line_endings(tmp_path, newline, encoding, endian):
    """Every encoding, both byte orders, LF and CRLF headers; the values 2570 = 0x0A0A put a "\\n\\n" byte pair in
    the raw data, which a CRLF file must not take for the end of its header. SimpleITK (ITK's NRRD reader) reads
    the same file to the same array where it supports the file."""
    import bz2

    values = np.arange(4 * 3 * 2, dtype="<i2").reshape(2, 3, 4) * 7
    values[0, 0, :2] = 2570
    stored = values.astype(">i2" if endian == "big" else "<i2").tobytes()
    body = {"raw": stored, "gzip": gzip.compress(stored), "bzip2": bz2.compress(stored),
            "ascii": " ".join(str(v) for v in values.ravel()).encode() + b"\n"}[encoding]
    header = ["NRRD0004", "# written by hand", "type: short", "dimension: 3", "space: left-posterior-superior",
              "sizes: 4 3 2", "space directions: (0.5,0,0) (0,0.75,0) (0,0,2.5)", "kinds: domain domain domain",
              f"endian: {endian}", f"encoding: {encoding}", "space origin: (-10,20,30.5)"]
    path = tmp_path / "v.nrrd"
    path.write_bytes(_nrrdBytes(header, body, newline))
    nrrd = readNrrd(path)
    np.testing.assert_array_equal(nrrd.data, values)
    assert nrrd.sizes == [4, 3, 2] and nrrd.fields["encoding"] == encoding
    np.testing.assert_allclose(nrrd.spaceOrigin, [-10, 20, 30.5])
    if newline == b"\n" and encoding != "bzip2":  # ITK's NRRD reader: no bzip2 support is compiled in here
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), values)


def test_nrrd_byte_skip_prefix_is_skipped(tmp_path):
    """A raw NRRD with 'byte skip: -1' (the data are the file's last bytes) and a prefix before them."""
    values = np.array([[[1, 2], [3, 4]]], dtype=np.uint8)
    header = ["NRRD0004", "type: uchar", "dimension: 3", "sizes: 2 2 1", "encoding: raw", "byte skip: -1",
              "space: left-posterior-superior", "space directions: (1,0,0) (0,1,0) (0,0,1)", "space origin: (0,0,0)"]
    path = tmp_path / "skip.nrrd"
    path.write_bytes(_nrrdBytes(header, b"PREFIX" + values.tobytes()))
    np.testing.assert_array_equal(readNrrd(path).data, values)


def test_nrrd_without_blank_line_refused(tmp_path):
    path = tmp_path / "cut.nrrd"
    path.write_bytes(b"NRRD0004\r\ntype: uchar\r\ndimension: 3\r\n")
    with pytest.raises(InputError, match="not terminated by a blank line") as info:
        readNrrd(path)
    assert "cut.nrrd" in str(info.value)


def test_a_layered_nrrd_without_segment_fields_gives_every_layer(tmp_path):
    """A 4D mask NRRD written by a research pipeline (pynrrd: 'kinds: list domain domain domain', no Slicer segment
    fields): every layer is a structure of its own, a layer holding several labels one per label, an empty layer
    kept empty (a review: only the first layer was read, named after the file)."""
    k, j, i = np.mgrid[:4, :5, :6]
    layers = np.stack([(i < 2) & (k > 0), (i > 3) | (j == 0), np.zeros((4, 5, 6), bool)]).astype(np.uint8)
    layers[1][0, 4, 0] = 2  # a second label in the second layer
    body = np.moveaxis(layers, 0, -1).tobytes()  # the list axis is the fastest in the file
    header = ["NRRD0004", "type: uchar", "dimension: 4", "space: left-posterior-superior", "sizes: 3 6 5 4",
              "space directions: none (1,0,0) (0,1,0) (0,0,2)", "kinds: list domain domain domain",
              "encoding: gzip", "space origin: (0,0,0)"]
    path = tmp_path / "onehot.nrrd"
    path.write_bytes(_nrrdBytes(header, gzip.compress(body)))
    masks = readSegmentation(path)
    assert sorted(masks) == ["onehot_layer0", "onehot_layer1_1", "onehot_layer1_2", "onehot_layer2"]
    np.testing.assert_array_equal(masks["onehot_layer0"], layers[0] == 1)
    np.testing.assert_array_equal(masks["onehot_layer1_1"], layers[1] == 1)
    assert np.count_nonzero(masks["onehot_layer1_2"]) == 1 and masks["onehot_layer1_2"][0, 4, 0]
    assert not masks["onehot_layer2"].any()


@pytest.mark.parametrize("encoding", ["raw", "gzip", "bzip2", "ascii"])
def test_nrrd_line_and_byte_skips_apply_to_the_decoded_data(tmp_path, encoding):
    """'line skip' is applied to the file, then 'byte skip' to the data as decoded, after decompression (teem's
    reader, as ITK's reads the same files); a review found a gzip file with 'byte skip: 8' read 8 voxels off without
    a word, and an ascii file with 'line skip: 1' refused as truncated. A raw file with a byte after its data is
    read from the start."""
    import bz2

    values = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) + 1
    text = encoding == "ascii"
    data = (" ".join(str(v) for v in values.ravel()) + "\n").encode() if text else values.tobytes()
    decoded = (b"" if text else b"SKIPPED!") + data + b"\n"
    body = b"# a comment line\n" + {"raw": decoded, "gzip": gzip.compress(decoded), "bzip2": bz2.compress(decoded),
                                    "ascii": decoded}[encoding]
    header = ["NRRD0004", "type: uchar", "dimension: 3", "sizes: 4 3 2", f"encoding: {encoding}", "line skip: 1",
              f"byte skip: {0 if text else 8}", "space: left-posterior-superior",
              "space directions: (1,0,0) (0,1,0) (0,0,1)", "space origin: (0,0,0)"]
    path = tmp_path / "skips.nrrd"
    path.write_bytes(_nrrdBytes(header, body))
    np.testing.assert_array_equal(readNrrd(path).data, values)
    if encoding != "bzip2":  # ITK's NRRD reader reads the same values
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), values)
    header[5:7] = ["line skip: 0", "byte skip: -1"]
    if encoding == "raw":  # -1: the data are the last bytes of the file
        path.write_bytes(_nrrdBytes(header, b"prefix" + values.tobytes()))
        np.testing.assert_array_equal(readNrrd(path).data, values)
    else:
        path.write_bytes(_nrrdBytes(header, body))
        with pytest.raises(InputError, match="not valid for encoding"):
            readNrrd(path)
