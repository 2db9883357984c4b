"""`reirradiation eqd2` and `reirradiation dvh` on small synthetic files (values known analytically)."""

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
