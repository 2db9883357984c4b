"""`reirradiation eqd2` and `reirradiation dvh` on small synthetic files (values known analytically)."""

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk

from ReirradiationDoseLib.cli import main
from ReirradiationDoseLib.core.geometry import ImageGeometry, arrayFromImage, imageFromArray
from ReirradiationDoseLib.core.segio import writeSegNrrd

GEOMETRY = ImageGeometry((10, 8, 6), (2.5, 2.5, 2.5), (-10.0, -5.0, 3.0))


@pytest.fixture
def doseFile(tmp_path):
    dose = np.zeros(GEOMETRY.shape, np.float32)
    dose[:3] = 50.0  # slices 0-2: 50 Gy
    dose[3:] = 20.0  # slices 3-5: 20 Gy
    path = tmp_path / "dose.nrrd"
    sitk.WriteImage(imageFromArray(dose, GEOMETRY), str(path))
    return path


def test_eqd2_command_single_alpha_beta(tmp_path, doseFile):
    out, bed = tmp_path / "eqd2.nrrd", tmp_path / "bed.nrrd"
    assert main(["eqd2", "--dose", str(doseFile), "--fractions", "25", "--alpha-beta", "3", "-o", str(out),
                 "--bed-output", str(bed)]) == 0
    image = sitk.ReadImage(str(out))
    eqd2, geometry = arrayFromImage(image)
    assert geometry.sameGridAs(GEOMETRY) and eqd2.dtype == np.float32
    assert np.allclose(eqd2[:3], 50.0, atol=0.01) and np.allclose(eqd2[3:], 15.2, atol=0.01)  # REFERENCE §2 case 4
    assert image.GetMetaData("ReirradiationDose.AlphaBetaGy") == "3"
    assert np.allclose(arrayFromImage(sitk.ReadImage(str(bed)))[0][:3], 50.0 * (1 + 2.0 / 3.0), atol=0.01)


def test_eqd2_command_alpha_beta_map_from_structures(tmp_path, doseFile):
    ptv = np.zeros(GEOMETRY.shape, bool)
    ptv[:3, 2:6, 2:6] = True
    cord = np.zeros(GEOMETRY.shape, bool)
    cord[:, 0:2, 0:2] = True
    seg = tmp_path / "s.seg.nrrd"
    writeSegNrrd(seg, {"PTV": ptv, "Spinal Cord": cord}, GEOMETRY)
    out, ab = tmp_path / "eqd2.nrrd", tmp_path / "ab.nrrd"
    assert main(["eqd2", "--dose", str(doseFile), "--fractions", "5", "--segmentation", str(seg), "-o", str(out),
                 "--alpha-beta-output", str(ab)]) == 0
    eqd2 = arrayFromImage(sitk.ReadImage(str(out)))[0]
    abMap = arrayFromImage(sitk.ReadImage(str(ab)))[0]
    assert set(np.unique(abMap)) == {2.0, 3.0, 10.0}
    # 50 Gy / 5 fx (d = 10 Gy): α/β 10 → 83.33 Gy; α/β 2 → 150 Gy; α/β 3 → 130 Gy
    assert eqd2[ptv][0] == pytest.approx(83.33, abs=0.01)
    assert eqd2[0, 0, 0] == pytest.approx(150.0, abs=0.01)
    assert eqd2[0, 7, 9] == pytest.approx(130.0, abs=0.01)


def test_eqd2_command_errors(tmp_path, doseFile, capsys):
    assert main(["eqd2", "--dose", str(doseFile), "--fractions", "2.5", "--alpha-beta", "3", "-o",
                 str(tmp_path / "x.nrrd")]) == 2
    assert "fractions" in capsys.readouterr().err
    assert main(["eqd2", "--dose", str(tmp_path / "missing.nrrd"), "--fractions", "5", "--alpha-beta", "3", "-o",
                 str(tmp_path / "x.nrrd")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eqd2", "--dose", str(doseFile), "--fractions", "5", "-o", str(tmp_path / "x.nrrd")]) == 2
    assert "--alpha-beta" in capsys.readouterr().err


def test_dvh_command_json_and_csv(tmp_path, doseFile, capsys):
    box = np.zeros(GEOMETRY.shape, bool)
    box[2:4, 1:5, 1:5] = True  # 16 voxels at 50 Gy (slice 2) and 16 at 20 Gy (slice 3)
    seg = tmp_path / "s.seg.nrrd"
    writeSegNrrd(seg, {"Box": box}, GEOMETRY)
    jsonPath, csvPath = tmp_path / "dvh.json", tmp_path / "dvh.csv"
    assert main(["dvh", "--dose", str(doseFile), "--segmentation", str(seg), "--json", str(jsonPath),
                 "--csv", str(csvPath)]) == 0
    result = json.loads(jsonPath.read_text())["structures"][0]
    assert result["name"] == "Box"
    assert result["volumeCc"] == pytest.approx(32 * GEOMETRY.voxelVolumeCc)
    assert result["dmeanGy"] == pytest.approx(35.0) and result["dmaxGy"] == 50.0 and result["dminGy"] == 20.0
    assert result["d2ccGy"] is None and "d2ccGy" in result["undefined"]  # 0.5 cc structure
    assert result["d95PercentGy"] == pytest.approx(20.0)
    assert "Box" in csvPath.read_text() and "Box" in capsys.readouterr().out


def test_eqd2_and_dvh_commands_read_an_rtdose(tmp_path, demoCase, capsys):
    """Both commands crashed on every RTDOSE (the reader's result was unpacked as a tuple). The demo's current
    course (30.6 Gy / 17 fx) read from its RTDOSE: EQD2 at α/β 3 voxel for voxel; an EFFECTIVE RTDOSE (an EQD2
    already, named so) is refused by eqd2, not converted twice."""
    from ReirradiationDoseLib.core.dicomwrite import PatientStudy, eqd2SeriesDescription, writeRtDose
    from ReirradiationDoseLib.core.rtdose import readRtDose

    path = demoCase.outputDir / "current" / "RTDOSE.dcm"
    physical = readRtDose(path).doseGy
    out = tmp_path / "eqd2.nrrd"
    assert main(["eqd2", "--dose", str(path), "--fractions", "17", "--alpha-beta", "3", "-o", str(out)]) == 0
    eqd2 = arrayFromImage(sitk.ReadImage(str(out)))[0]
    assert np.max(np.abs(eqd2 - physical * (physical / 17 + 3) / 5)) < 1e-3 and eqd2.max() > 25
    effective = tmp_path / "eqd2.dcm"
    # in the planning CT's frame of reference, as an EQD2 of it is: the dvh command below reads its structures
    sameFrame = dataclasses.replace(PatientStudy.new("X^Y", "1", "20260101"),
                                    frameOfReferenceUid=readRtDose(path).frameOfReferenceUid)
    writeRtDose(effective, eqd2, readRtDose(path).geometry, sameFrame,
                doseType="EFFECTIVE", seriesDescription=eqd2SeriesDescription(3.0))
    # an EFFECTIVE dose that does not say it is an EQD2 (a proton plan's RBE-weighted dose) is converted
    proton = tmp_path / "proton.dcm"
    writeRtDose(proton, physical, readRtDose(path).geometry, PatientStudy.new("X^Y", "1", "20260101"),
                doseType="EFFECTIVE", seriesDescription="Proton plan dose (RBE 1.1)")
    assert main(["eqd2", "--dose", str(proton), "--fractions", "17", "--alpha-beta", "3",
                 "-o", str(tmp_path / "proton.nrrd")]) == 0
    assert main(["eqd2", "--dose", str(effective), "--fractions", "17", "--alpha-beta", "3",
                 "-o", str(tmp_path / "twice.nrrd")]) == 2
    assert "already an EQD2 or BED" in capsys.readouterr().err and not (tmp_path / "twice.nrrd").exists()
    table = tmp_path / "dvh.json"
    structures = demoCase.outputDir / "current" / "RTSTRUCT.dcm"
    assert main(["dvh", "--dose", str(effective), "--segmentation", str(structures), "--json", str(table)]) == 0
    assert table.exists()


def test_output_files_are_checked_before_anything_is_written(tmp_path, demoCase, doseFile, capsys):
    """An output named like an input overwrote it; -o x.txt, a folder, or a --csv that could not be written came
    as a traceback after the work (the iov --json already written); --supersample 50 asked for 91.6 GiB."""
    rounds = demoCase.outputDir / "observers" / "round1"
    before = doseFile.read_bytes()
    cases = [
        (["eqd2", "--dose", str(doseFile), "--fractions", "5", "--alpha-beta", "3", "-o", str(doseFile)],
         "--output: this is one of the inputs; it would be overwritten"),
        (["eqd2", "--dose", str(doseFile), "--fractions", "5", "--alpha-beta", "3", "-o", str(tmp_path / "x.txt")],
         "--output: the file must end with .nrrd"),
        (["eqd2", "--dose", str(doseFile), "--fractions", "5", "--alpha-beta", "3", "-o", str(tmp_path)],
         "must end with"),
        (["dvh", "--dose", str(doseFile), "--segmentation", str(rounds / "obs1.dcm"), "--supersample", "50"],
         "--supersample must be at most 8"),
        (["iov", "--observer", f"a={rounds / 'obs1.dcm'}", "--observer", f"b={rounds / 'obs2.dcm'}",
          "--json", str(tmp_path / "ok.json"), "--csv", str(doseFile / "r.csv")],
         "--csv: the file cannot be written"),
        (["iov", "--observer", f"a={rounds / 'obs1.dcm'}", "--observer", f"b={rounds / 'obs2.dcm'}",
          "--csv", str(rounds / "obs1.dcm")], "--csv: the file must end with .csv"),
        (["iov", "--observer", f"a={rounds / 'obs1.dcm'}", "--observer", f"b={rounds / 'obs2.dcm'}",
          "--json", str(tmp_path / "same.json"), "--csv", str(tmp_path / "same.json")], "must end with .csv"),
    ]
    for argv, fragment in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert fragment in capsys.readouterr().err, argv
    assert doseFile.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dose.nrrd"]
    out = tmp_path / "new" / "iov.csv"
    assert main(["iov", "--observer", f"a={rounds / 'obs1.dcm'}", "--observer", f"b={rounds / 'obs2.dcm'}",
                 "--image", str(demoCase.outputDir / "current" / "CT"), "--csv", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "scope,a,b,metric,value,unit,undefinedReason,setting"


def test_eqd2_command_takes_the_fractions_from_the_rtplan(tmp_path, demoCase, capsys, caplog):
    """A physicist's review: `eqd2` on an RTDOSE could not check --fractions against the RTPLAN (the dose command
    warns). --plan gives the plan's fractions; --fractions that differ are used and warned; another course's plan
    (the RTDOSE names a different one) is refused."""
    dose = demoCase.outputDir / "current" / "RTDOSE.dcm"
    plan = demoCase.outputDir / "current" / "RTPLAN.dcm"
    fromPlan, given = tmp_path / "plan.nrrd", tmp_path / "given.nrrd"
    assert main(["eqd2", "--dose", str(dose), "--plan", str(plan), "--alpha-beta", "3", "-o", str(fromPlan)]) == 0
    assert main(["eqd2", "--dose", str(dose), "--fractions", "17", "--alpha-beta", "3", "-o", str(given)]) == 0
    first, second = (sitk.ReadImage(str(p)) for p in (fromPlan, given))
    assert first.GetMetaData("ReirradiationDose.NumberOfFractions") == "17"
    assert first.GetMetaData("ReirradiationDose.FractionsSource") == "RTPLAN RTPLAN.dcm"
    assert np.array_equal(sitk.GetArrayFromImage(first), sitk.GetArrayFromImage(second))
    capsys.readouterr()
    caplog.clear()
    assert main(["eqd2", "--dose", str(dose), "--plan", str(plan), "--fractions", "5", "--alpha-beta", "3",
                 "-o", str(tmp_path / "five.nrrd")]) == 0
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "5 fractions (--fractions) replace the 17 of the RTPLAN (RTPLAN.dcm)"]
    assert sitk.ReadImage(str(tmp_path / "five.nrrd")).GetMetaData("ReirradiationDose.FractionsSource") == \
        "--fractions (overrides RTPLAN's 17)"
    other = demoCase.outputDir / "prior" / "RTPLAN.dcm"
    assert main(["eqd2", "--dose", str(dose), "--plan", str(other), "--alpha-beta", "3",
                 "-o", str(tmp_path / "other.nrrd")]) == 2
    assert "belongs to another RTPLAN than the one given" in capsys.readouterr().err
    assert not (tmp_path / "other.nrrd").exists()
    assert main(["eqd2", "--dose", str(dose), "--alpha-beta", "3", "-o", str(tmp_path / "none.nrrd")]) == 2
    assert "give the number of fractions (--fractions) or the course's RTPLAN (--plan)" in capsys.readouterr().err


def test_eqd2_warns_a_nrrd_dose_far_from_its_plans_prescription(tmp_path, demoCase, caplog):
    """A newcomer's review: a NRRD dose cannot name its RTPLAN, so any plan's fractions were taken silently (a
    breast boost's 7 for a prostate dose). A 50 Gy dose over 373 cc with the demo's prior RTPLAN (50 Gy in 25):
    nothing said; with the current course's (30.6 Gy in 17) the maximum is 1.63 times its prescription, a plan's hot
    spot: nothing said; read as one fraction: warned."""
    geometry = ImageGeometry((60, 60, 20), (2.0, 2.0, 2.0))
    dose = np.zeros(geometry.shape, np.float32)
    dose[2:18, 3:57, 3:57] = 50.0  # 46 656 voxels: 373 cc
    doseFile = tmp_path / "dose.nrrd"
    sitk.WriteImage(imageFromArray(dose, geometry), str(doseFile))
    for plan in (demoCase.outputDir / "prior" / "RTPLAN.dcm", demoCase.outputDir / "current" / "RTPLAN.dcm"):
        caplog.clear()
        assert main(["eqd2", "--dose", str(doseFile), "--plan", str(plan), "--alpha-beta", "3",
                     "-o", str(tmp_path / f"{plan.parent.name}.nrrd")]) == 0
        assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []
    caplog.clear()
    assert main(["eqd2", "--dose", str(doseFile), "--fractions", "1", "--alpha-beta", "3",
                 "-o", str(tmp_path / "b.nrrd")]) == 0
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "the dose (dose.nrrd): 373 cc receive more than 25 Gy a fraction in 1 fraction(s), beyond any course given "
        "(radiosurgery reaches it in a small target only): check the number of fractions"]


def test_dvh_checks_the_dose_as_eqd2_does_and_explains_its_notes(tmp_path, doseFile, capsys, caplog):
    """A newcomer's review: `dvh` gave a dose in cGy as a PTV Dmean of 4588 "Gy", a PTV of another patient's dose
    0 Gy and an empty D2cc cell without a word, needed the exact case of --structure, and said a folder did not
    exist. A dose above 200 Gy is warned, not refused (brachytherapy near its sources, another tool's EQD2 map)."""
    box = np.zeros(GEOMETRY.shape, bool)
    box[2:4, 1:5, 1:5] = True  # 16 voxels at 50 Gy (slice 2) and 16 at 20 Gy (slice 3)
    cold = np.zeros(GEOMETRY.shape, bool)
    cold[5:6, 1:5, 1:5] = True  # 1 Gy only: almost no dose (the dose's maximum 50 Gy)
    dose = sitk.GetArrayFromImage(sitk.ReadImage(str(doseFile)))
    dose[5] = 1.0
    doseFile = tmp_path / "dose_cold.nrrd"
    sitk.WriteImage(imageFromArray(dose, GEOMETRY), str(doseFile))
    seg = tmp_path / "s.seg.nrrd"
    writeSegNrrd(seg, {"Box": box, "PTV": cold}, GEOMETRY)
    cgy = tmp_path / "cgy.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(doseFile)) * 100.0, str(cgy))
    caplog.clear()
    assert main(["dvh", "--dose", str(cgy), "--segmentation", str(seg)]) == 0  # a DVH describes: warned
    assert "the dose (cgy.nrrd) reaches 5000.0 Gy, more than an external-beam course gives (200 Gy): if it is in " \
           "cGy, divide it by 100 (the DVH reads its values as Gy)" in \
           [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    csvPath = tmp_path / "dvh.csv"
    assert main(["dvh", "--dose", str(doseFile), "--segmentation", str(seg), "--csv", str(csvPath),
                 "--structure", "box", "--structure", "ptv"]) == 0
    import csv

    with open(csvPath, newline="", encoding="utf-8") as stream:
        notes = {row["name"]: row["note"] for row in csv.DictReader(stream)}
    assert notes == {"Box": "d2ccGy: D2cc is undefined: structure 'Box' is only 0.500 cc",
                     "PTV": "a target that receives almost no dose (its maximum 1.00 Gy, the dose's 50.00 Gy): is the "
                            "dose of this plan and patient?; d2ccGy: D2cc is undefined: structure 'PTV' is only "
                            "0.250 cc"}
    assert main(["dvh", "--dose", str(tmp_path), "--segmentation", str(seg)]) == 2
    assert "this is a folder, not a dose file" in capsys.readouterr().err
