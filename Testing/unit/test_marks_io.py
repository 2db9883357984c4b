"""Border marks (issue 11): markups JSON / CSV reading and writing, frames, errors, MRI -> CT mapping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from DelineationReviewLib.core.marks import (
    BorderMark,
    MarkSet,
    mapMarks,
    marksReportForObservers,
    readMarks,
    writeMarks,
)
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry


def markupsFile(tmp_path, markups, name="marks.mrk.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"@schema": "x", "markups": markups}))
    return path


# ---- markups JSON -----------------------------------------------------------------------------------------------
def test_reads_ras_point_list_and_lps_line(tmp_path):
    path = markupsFile(tmp_path, [
        {"type": "Fiducial", "name": "R", "coordinateSystem": "RAS", "controlPoints": [
            {"label": "cranial", "description": "confidence=0.8; frame=MRI; near sacrum", "position": [10, 20, 30]},
            {"label": "", "position": [1, 2, 3], "confidence": 0.5},
            {"label": "unplaced", "position": [0, 0, 0], "positionStatus": "undefined"},
        ]},
        {"type": "Line", "name": "posterior extension", "controlPoints": [  # LPS is the schema default
            {"label": "L-1", "position": [5, 6, 7]}, {"label": "L-2", "position": [5, 6, 17]}]},
        {"type": "Line", "name": "swapped", "coordinateSystem": "LPS", "controlPoints": [
            {"label": "tip", "position": [0, 0, 9]}, {"label": "tail", "position": [0, 0, 1]}]},
    ])
    marks = readMarks(path)
    assert marks.frame == "MRI" and len(marks) == 4
    cranial, second, arrow, swapped = marks.marks
    assert cranial.label == "cranial" and cranial.tipLps == (-10.0, -20.0, 30.0)  # RAS -> LPS
    assert cranial.confidence == 0.8 and cranial.description == "near sacrum" and cranial.kind == "point"
    assert second.label == "R-2" and second.confidence == 0.5 and second.tipLps == (-1.0, -2.0, 3.0)
    assert arrow.kind == "arrow" and arrow.label == "posterior extension"
    assert arrow.tailLps == (5.0, 6.0, 7.0) and arrow.tipLps == (5.0, 6.0, 17.0)  # first point = tail
    assert swapped.tailLps == (0.0, 0.0, 1.0) and swapped.tipLps == (0.0, 0.0, 9.0)  # labels decide
    assert arrow.lengthMm == pytest.approx(10.0)


def test_micrometre_units_and_frame_rules(tmp_path):
    path = markupsFile(tmp_path, [{"type": "Fiducial", "coordinateUnits": "um", "controlPoints": [
        {"label": "a", "position": [1000, 2000, 3000], "description": "frame=CT"}]}])
    marks = readMarks(path)
    assert marks.frame == "CT" and marks.marks[0].tipLps == (1.0, 2.0, 3.0)
    with pytest.raises(InputError, match="states its marks are on the CT but MRI was requested"):
        readMarks(path, frame="MRI")
    bare = markupsFile(tmp_path, [{"type": "Fiducial", "controlPoints": [{"label": "a", "position": [0, 0, 0]}]}],
                       "bare.mrk.json")
    assert readMarks(bare).frame == "MRI" and readMarks(bare, frame="CT").frame == "CT"


@pytest.mark.parametrize("markups,message", [
    ([{"type": "Fiducial", "coordinateSystem": "XYZ", "controlPoints": []}], "unknown coordinate system 'XYZ'"),
    ([{"type": "Fiducial", "coordinateUnits": "cm", "controlPoints": []}], "unknown coordinate units"),
    ([{"type": "Fiducial", "controlPoints": [{"label": "a", "position": [1, "x", 3]}]}], "is not 3 numbers"),
    ([{"type": "Fiducial", "controlPoints": [{"label": "a", "position": [1, 2, 3], "description": "confidence=high"}]}],
     "confidence 'high' is not a number"),
    ([{"type": "Line", "name": "l", "controlPoints": [{"position": [1, 2, 3]}]}], "needs exactly 2"),
    ([{"type": "ROI", "controlPoints": []}], "not a border mark"),
    ([], "contains no border marks"),
])
def test_markups_errors_name_file_and_problem(tmp_path, markups, message):
    path = markupsFile(tmp_path, markups)
    with pytest.raises(InputError, match=message) as info:
        readMarks(path)
    assert str(path) in str(info.value)


def test_not_json_and_unknown_extension(tmp_path):
    bad = tmp_path / "bad.mrk.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a valid JSON file"):
        readMarks(bad)
    other = tmp_path / "marks.xyz"
    other.write_text("")
    with pytest.raises(InputError, match="unknown border marks format"):
        readMarks(other)


# ---- CSV --------------------------------------------------------------------------------------------------------
def test_csv_ras_default_lps_column_arrows_and_confidence(tmp_path):
    ras = tmp_path / "ras.csv"
    ras.write_text("Label,R,A,S,confidence,frame\nanterior,10,20,30,0.9,MRI\nposterior,-1,-2,-3,,mri\n")
    marks = readMarks(ras)
    assert [m.tipLps for m in marks] == [(-10.0, -20.0, 30.0), (1.0, 2.0, -3.0)]
    assert [m.confidence for m in marks] == [0.9, None] and marks.frame == "MRI"
    xyz = tmp_path / "xyz.csv"
    xyz.write_text("label;x;y;z;coordinateSystem;tail_x;tail_y;tail_z\n"
                   "a;1;2;3;LPS;;;\nb;1;2;3;;0;0;0\nc;1;2;3;LPS;1;2;-7\n")
    a, b, c = readMarks(xyz).marks
    assert a.tipLps == (1.0, 2.0, 3.0) and a.kind == "point"
    assert b.tipLps == (-1.0, -2.0, 3.0) and b.tailLps == (0.0, 0.0, 0.0)  # RAS by default
    assert c.kind == "arrow" and c.tailLps == (1.0, 2.0, -7.0)
    # a units column is honoured (a review: "cm" was ignored, every mark 10 times too close to the origin)
    units = tmp_path / "units.csv"
    units.write_text("label,l,p,s,units\na,1000,2000,3000,um\nb,1,2,3,mm\nc,4,5,6,\n")
    assert [m.tipLps for m in readMarks(units)] == [(1.0, 2.0, 3.0), (1.0, 2.0, 3.0), (4.0, 5.0, 6.0)]


def test_csv_xyz_without_a_coordinate_system_is_warned_as_read_in_ras(tmp_path, caplog):
    """A review: x,y,z columns are RAS by default (documented); an LPS export would be mirrored without a word."""
    import logging

    path = tmp_path / "xyz.csv"
    path.write_text("label,x,y,z\na,1,2,3\n")
    with caplog.at_level(logging.WARNING):
        assert readMarks(path).marks[0].tipLps == (-1.0, -2.0, 3.0)
    assert [r for r in caplog.records if "x,y,z columns without a coordinateSystem column are read as RAS" in
            r.getMessage() and str(path) in r.getMessage()]
    caplog.clear()
    path.write_text("label,x,y,z,coordinateSystem\na,1,2,3,LPS\n")
    with caplog.at_level(logging.WARNING):
        assert readMarks(path).marks[0].tipLps == (1.0, 2.0, 3.0)
    assert not caplog.records


@pytest.mark.parametrize("text,message", [
    ("label,x,y\na,1,2\n", "missing coordinate columns"),
    ("label,r,a,s\na,1,two,3\n", "row 2: coordinates .* are not numbers"),
    ("label,x,y,z,coordinateSystem\na,1,2,3,IJK\n", "unknown coordinate system 'IJK'"),
    ("label,r,a,s,confidence\na,1,2,3,1.7\n", "confidence must be between 0 and 1"),
    ("label,r,a,s,frame\na,1,2,3,PET\n", "unknown frame 'PET'"),
    ("label,r,a,s,tail_r\na,1,2,3,4\n", "incomplete arrow tail columns"),
    ("label,r,a,s,units\na,1,2,3,cm\n", "row 2: unknown coordinate units 'cm' \\(mm or um expected\\)"),
])
def test_csv_errors(tmp_path, text, message):
    path = tmp_path / "marks.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        readMarks(path)
    assert str(path) in str(info.value)


# ---- round trips ------------------------------------------------------------------------------------------------
SAMPLE = MarkSet((
    BorderMark("cranial", (1.5, -2.25, 30.0), confidence=0.75, description="T2 signal"),
    BorderMark("lateral", (-11.0, 4.0, 12.5), id="L7"),
    BorderMark("posterior ext", (3.0, 40.0, 20.0), (3.0, 30.0, 20.0), confidence=1.0),
), "MRI", source="sample")


@pytest.mark.parametrize("name", ["out.mrk.json", "out.csv"])
def test_write_then_read_round_trip(tmp_path, name):
    path = writeMarks(tmp_path / name, SAMPLE)
    back = readMarks(path)
    assert back.frame == "MRI"
    for a, b in zip(SAMPLE.marks, back.marks, strict=True):
        assert (a.label, a.kind, a.confidence, a.id, a.description) == (b.label, b.kind, b.confidence, b.id,
                                                                         b.description)
        np.testing.assert_allclose(a.tipLps, b.tipLps, atol=1e-6)
        if a.tailLps:
            np.testing.assert_allclose(a.tailLps, b.tailLps, atol=1e-6)


# ---- MRI -> CT mapping ------------------------------------------------------------------------------------------
def rigidCtToMri():
    transform = sitk.Euler3DTransform()
    transform.SetCenter((5.0, -3.0, 10.0))
    transform.SetRotation(0.05, -0.08, 0.12)
    transform.SetTranslation((4.0, -6.0, 2.5))
    return transform


def test_rigid_mapping_uses_the_inverse_and_agrees_with_resample():
    """Convention check: a bright spot at MRI point y appears, after sitk.Resample(mri, ct, T), at mapMarks(y)."""
    transform = rigidCtToMri()
    spot = np.array([12.0, -8.0, 15.0])
    mriGeometry = ImageGeometry((64, 64, 48), (1.0, 1.0, 1.0), (-20.0, -40.0, -10.0))
    r = np.linalg.norm(mriGeometry.voxelCentresLps() - spot, axis=-1)
    mri = sitk.GetImageFromArray(np.exp(-(r / 3.0) ** 2).astype(np.float32))
    mriGeometry.applyTo(mri)
    ctGeometry = ImageGeometry((60, 60, 44), (1.0, 1.0, 1.0), (-25.0, -45.0, -15.0))
    resampled = sitk.Resample(mri, ctGeometry.emptyImage(), transform, sitk.sitkLinear, 0.0)
    weights = sitk.GetArrayFromImage(resampled).astype(float)
    centroid = (weights[..., None] * ctGeometry.voxelCentresLps()).sum(axis=(0, 1, 2)) / weights.sum()

    mapped = mapMarks(MarkSet((BorderMark("spot", tuple(spot), tuple(spot + (0, 0, -5.0))),), "MRI"), transform)
    mark = mapped.marks[0]
    assert mapped.frame == "CT" and mark.frame == "CT" and "exact inverse" in mapped.source
    np.testing.assert_allclose(mark.tipLps, centroid, atol=0.05)
    np.testing.assert_allclose(transform.TransformPoint(mark.tipLps), spot, atol=1e-9)
    np.testing.assert_allclose(transform.TransformPoint(mark.tailLps), spot + (0, 0, -5.0), atol=1e-9)
    assert not np.allclose(mark.tipLps, spot, atol=1.0)  # the mapping actually moved it


def test_displacement_field_mapping_uses_fixed_point_inverse():
    geometry = ImageGeometry((40, 40, 30), (2.0, 2.0, 2.0), (-40.0, -40.0, -30.0))
    p = geometry.voxelCentresLps()
    field = np.stack([3.0 * np.sin(p[..., 1] / 15.0), 2.0 * np.cos(p[..., 0] / 20.0), 1.5 * np.sin(p[..., 2] / 10.0)],
                     axis=-1)
    image = sitk.GetImageFromArray(field, isVector=True)
    geometry.applyTo(image)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(image, sitk.sitkVectorFloat64))
    targets = [(5.0, -7.0, 3.0), (-12.0, 10.0, -5.0), (20.0, 15.0, 8.0)]
    marks = MarkSet(tuple(BorderMark(f"m{i}", t) for i, t in enumerate(targets)), "MRI")
    mapped = mapMarks(marks, transform)
    assert "fixed-point" in mapped.source
    for mark, target in zip(mapped.marks, targets, strict=True):
        np.testing.assert_allclose(transform.TransformPoint(mark.tipLps), target, atol=1e-3)
        assert np.linalg.norm(np.subtract(mark.tipLps, target)) > 0.5  # really displaced


def test_a_turned_composite_is_inverted_member_by_member():
    """A rigid turn of 70 deg then a smooth field (a composite applies its last transform first): the fixed-point
    iteration on the whole composite does not converge (its displacement is no contraction) and the marks were
    refused as if the deformation folded; member by member, the rotation exactly, each mark returns to its CT
    point within 1e-3 mm."""
    geometry = ImageGeometry((30, 30, 30), (2.0, 2.0, 2.0), (-29.0, -29.0, -29.0))
    points = geometry.voxelCentresLps()
    u = np.stack([3.0 * np.exp(-np.sum(points ** 2, axis=-1) / 400.0), np.zeros(points.shape[:3]),
                  np.zeros(points.shape[:3])], axis=-1)
    field = sitk.GetImageFromArray(u, isVector=True)
    geometry.applyTo(field)
    rotation = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, math.radians(70.0))
    composite = sitk.CompositeTransform([sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64)),
                                         rotation])
    ctPoints = [(5.0, -3.0, 2.0), (-8.0, 6.0, -4.0), (0.5, 0.5, 0.5)]
    marks = MarkSet(tuple(BorderMark(f"m{n}", tuple(composite.TransformPoint(p))) for n, p in enumerate(ctPoints)),
                    "MRI")
    mapped = mapMarks(marks, composite)
    assert "member by member" in mapped.source
    for mark, expected in zip(mapped.marks, ctPoints, strict=True):
        assert np.allclose(mark.tipLps, expected, atol=1e-3)


def test_mapping_refuses_ct_marks():
    with pytest.raises(InputError, match="already in the CT frame"):
        mapMarks(MarkSet((BorderMark("a", (0, 0, 0), frame="CT"),), "CT"), sitk.Euler3DTransform())


# ---- the IOV report hook ----------------------------------------------------------------------------------------
def test_marks_report_for_observers_maps_and_reports(tmp_path):
    transform = sitk.TranslationTransform(3, (0.0, 0.0, 5.0))  # MRI = CT + 5 mm in S
    geometry = ImageGeometry((50, 50, 50), (1.0, 1.0, 1.0), (-25.0, -25.0, -25.0))
    ball = np.linalg.norm(geometry.voxelCentresLps() - (0.3, 0.2, 0.1), axis=-1) <= 15.0
    # On the MRI the mark is at S = 20 (=> CT S = 15, on the surface of the ball), another at CT S = 20.
    path = writeMarks(tmp_path / "m.mrk.json", MarkSet((
        BorderMark("top", (0.3, 0.2, 20.1)), BorderMark("beyond", (0.3, 0.2, 25.1))), "MRI"))
    transformPath = tmp_path / "t.tfm"
    sitk.WriteTransform(transform, str(transformPath))
    report = marksReportForObservers(path, {"obs": ball}, geometry, toleranceMm=2.0, transform=transformPath)
    json.dumps(report, allow_nan=False)
    top, beyond = report["marks"]
    assert top["positionLps"][2] == pytest.approx(15.1)
    assert top["observers"]["obs"]["honoured"] is True
    assert beyond["observers"]["obs"]["signedDistanceMm"] == pytest.approx(5.0, abs=0.5)
    assert report["summary"]["obs"]["worstMissLabel"] == "beyond" and "exact inverse" in report["mapping"]
    assert report["notes"] == []  # mapped, and nothing says otherwise (a verification review: "not applied")
    # without the registration the MRI coordinates would be read as CT coordinates (5 mm off here, 27 mm on the
    # demo): refused, naming the file
    with pytest.raises(InputError, match="placed on the MRI and no MRI registration was given") as refused:
        marksReportForObservers(path, {"obs": ball}, geometry, toleranceMm=2.0)
    assert "m.mrk.json" in str(refused.value)


def test_description_forms():
    from DelineationReviewLib.core.marks import parseDescription

    assert parseDescription("confidence=0.8; frame=MRI; near S3") == ({"confidence": "0.8", "frame": "MRI"},
                                                                        "near S3")
    assert parseDescription("Confidence: 0.7")[0] == {"confidence": "0.7"}
    assert parseDescription("confidence 0.9")[0] == {"confidence": "0.9"}  # the demo case's form
    assert parseDescription("confidence is low") == ({}, "confidence is low")
    assert parseDescription("labelled by AB") == ({}, "labelled by AB")


def test_iov_csv_rows(tmp_path):
    from DelineationReviewLib.core.marks import iovCsvRows

    geometry = ImageGeometry((40, 40, 40), (1.0, 1.0, 1.0), (-20.0, -20.0, -20.0))
    ball = np.linalg.norm(geometry.voxelCentresLps() - (0.5, 0.5, 0.5), axis=-1) <= 10.0
    path = writeMarks(tmp_path / "m.csv", MarkSet((BorderMark("far", (0.5, 0.5, 16.5), frame="CT"),
                                                    BorderMark("arrow", (0.5, 10.5, 0.5), (0.5, 0.5, 0.5),
                                                               frame="CT")), "CT"))
    report = marksReportForObservers(path, {"A": ball}, geometry, toleranceMm=3.0)
    rows = iovCsvRows(report)
    assert set(rows[0]) == {"scope", "a", "b", "metric", "value", "unit", "undefinedReason"}
    far = {r["metric"]: r for r in rows if r["a"] == "far"}
    assert float(far["signedDistanceMm"]["value"]) == pytest.approx(6.0, abs=0.5) and far["signedDistanceMm"][
        "unit"] == "mm"
    assert far["honoured"]["value"] == "0.0" and "arrowCoverage" not in far
    arrow = {r["metric"]: r for r in rows if r["a"] == "arrow"}
    assert float(arrow["arrowCoverage"]["value"]) == pytest.approx(1.0)
    summary = {r["metric"]: r for r in rows if r["scope"] == "marksSummary"}
    assert summary["honouredFraction"]["value"] == "0.5" and summary["flagged"]["value"] == "1.0"
    assert summary["nOverContoured"]["value"] == "0.0"
    assert summary["worstOverContourMm"]["value"] == "" and summary["worstOverContourMm"]["undefinedReason"] == (
        "no mark over-contoured")
    # two marks with one label: told apart by their ids (a review: 24 of 88 keys came twice)
    twice = writeMarks(tmp_path / "twice.csv", MarkSet((BorderMark("cranial", (0.5, 0.5, 16.5), frame="CT", id="M1"),
                                                        BorderMark("cranial", (0.5, 0.5, 4.5), frame="CT", id="M2")),
                                                       "CT"))
    rows = iovCsvRows(marksReportForObservers(twice, {"A": ball}, geometry, toleranceMm=3.0))
    distances = {r["a"]: float(r["value"]) for r in rows if r["metric"] == "signedDistanceMm"}
    assert distances == pytest.approx({"cranial#M1": 6.0, "cranial#M2": -6.0}, abs=0.5)
    keys = [(r["scope"], r["a"], r["b"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    # CT marks with an MRI registration: not applied, and said (a review: "mapping: none" only)
    import SimpleITK as sitk

    shifted = marksReportForObservers(twice, {"A": ball}, geometry, toleranceMm=3.0,
                                      transform=sitk.TranslationTransform(3, (0.0, 0.0, 30.0)))
    assert shifted["notes"] == ["the marks file says the marks were placed on the CT (frame=CT): the MRI registration "
                                "given was not applied to them"]
    assert shifted["marks"][0]["positionLps"] == [0.5, 0.5, 16.5]
