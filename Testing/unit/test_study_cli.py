"""`reirradiation study` on the command line: exit codes, warnings, atomic output, progress bar."""

import io
import json

import numpy as np
import pytest
from ReirradiationDoseLib.cli import main
from ReirradiationDoseLib.commands.study import TextProgressBar
from test_study import makeTwoRoundStudy, sphere, writeMask
from reirradiation_testing import csvRows


def test_study_command_two_rounds(tmp_path, capsys):
    root = makeTwoRoundStudy(tmp_path / "study")
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.txt").write_text("from an earlier run")
    (output / ".reirradiation-output").write_text("")  # an earlier output: replaced (any other folder is refused)
    code = main(["study", str(root), "--output", str(output), "--reference", "majority", "--hd-percentile", "98",
                 "--no-pictures"])
    assert code == 0
    err = capsys.readouterr().err
    assert "12 case round(s) analysed" in err and "WARNING" not in err
    assert "round1 vs round2: round2 is more concordant" in err and "p = 0.03125" in err
    assert "[100%]" in err  # the progress lines
    assert not (output / "stale.txt").exists()  # replaced as a whole
    study = json.loads((output / "study.json").read_text())
    assert study["options"]["hdPercentile"] == 98.0 and study["options"]["reference"] == "majority"
    assert "Pairwise HD98 (mm) per round" in (output / "report.html").read_text()
    # an output inside the study folder is not taken for a case on the next run
    assert main(["study", str(root), "--output", str(root / "results"), "--no-pictures"]) == 0
    assert main(["study", str(root), "--output", str(root / "results"), "--no-pictures"]) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_study_surfel_and_msd_conventions_reach_every_table(tmp_path, capsys):
    root = makeTwoRoundStudy(tmp_path / "study")
    output = tmp_path / "out"
    assert main(["study", str(root), "--output", str(output), "--surface", "surfel", "--msd-convention",
                 "meanDirected", "--no-pictures"]) == 0
    study = json.loads((output / "study.json").read_text())
    assert study["options"]["surface"] == "surfel" and study["options"]["msdConvention"] == "meanDirected"
    rows = csvRows(output / "long.csv")
    setting = {row["metric"]: row["setting"] for row in rows}
    assert setting["msdMm"] == "meanDirected, surfels" and setting["surfaceAreaMm2"] == "surfels"
    assert setting["hausdorffMm"] == "surfels" and setting["dice"] == "" and setting["volumeCc"] == ""
    # the consensus and median rows depend on the same options (an independent check: they named none)
    assert setting["consensus.msdMm"] == "meanDirected, surfels"
    assert setting["consensus.surfaceDice"] == "tolerance 2 mm, surfels"
    assert setting["consensus.hdPercentileMm"] == "percentile 95, maxDirected, surfels"
    assert setting["consensus.hausdorffDirectedMm.AtoB"] == "surfels" and setting["consensus.dice"] == ""
    assert setting["medianPairSurfaceDice"] == "tolerance 2 mm, surfels" and setting["medianPairDice"] == ""
    assert setting["medianPairHdPercentileMm"] == "percentile 95, maxDirected, surfels"
    summaries = {row["metric"]: row["setting"] for row in csvRows(output / "summary_by_round.csv")}
    assert summaries["medianPairSurfaceDice"] == "tolerance 2 mm, surfels"
    rounds = {row["metric"]: row["setting"] for row in csvRows(output / "rounds_comparison.csv")}
    assert rounds["median pair surfaceDice"] == "tolerance 2 mm, surfels" and rounds["median pair dice"] == ""
    comparison = json.loads((output / "rounds_comparison.json").read_text())
    assert comparison["options"]["surface"] == "surfel" and comparison["options"]["msdConvention"] == "meanDirected"
    msd = [row for row in rows if row["metric"] == "msdMm" and row["kind"] == "pair"]
    directed = {(row["case"], row["round"], row["observerA"], row["observerB"]): [] for row in msd}
    for row in rows:
        key = (row["case"], row["round"], row["observerA"], row["observerB"])
        if row["metric"].startswith("msdDirectedMm.") and key in directed:
            directed[key].append(float(row["value"]))
    for row in msd:
        pair = directed[(row["case"], row["round"], row["observerA"], row["observerB"])]
        assert float(row["value"]) == pytest.approx(sum(pair) / 2, rel=1e-9)
    assert "surface elements: surfels" in (output / "report.html").read_text()
    capsys.readouterr()


def test_exit_codes_with_failures(tmp_path, capsys):
    root = tmp_path / "study"
    writeMask(root / "good" / "a.nrrd", sphere())
    writeMask(root / "good" / "b.nrrd", sphere((1.0, 0.0, 0.0)))
    (root / "bad").mkdir()
    (root / "bad" / "a.nrrd").write_text("garbage")
    (root / "bad" / "b.nrrd").write_text("garbage")
    assert main(["study", str(root), "-o", str(tmp_path / "out1"), "--no-pictures"]) == 4  # written, one failed
    err = capsys.readouterr().err
    assert "warning: bad / single skipped:" in err and "WARNING: 1 failure(s) skipped" in err

    for name in ("good",):
        for path in (root / name).iterdir():
            path.write_text("garbage")
    assert main(["study", str(root), "-o", str(tmp_path / "out2"), "--no-pictures"]) == 2
    err = capsys.readouterr().err
    assert (f"nothing could be analysed in {root} (2 failure(s), 0 intra-observer comparison(s) failed; 2 case "
            f"folder(s) found): nothing written, {tmp_path / 'out2'} not created") in err
    assert "warning: good / single skipped:" in err and not (tmp_path / "out2").exists()
    # an earlier run's outputs stay when a later run into the same folder analyses nothing (a review: they were
    # replaced by header-only tables)
    before = (tmp_path / "out1" / "long.csv").read_text()
    assert len(before.splitlines()) > 10
    assert main(["study", str(root), "-o", str(tmp_path / "out1"), "--no-pictures"]) == 2
    assert f"nothing written, {tmp_path / 'out1'} left as it was" in capsys.readouterr().err
    assert (tmp_path / "out1" / "long.csv").read_text() == before

    assert main(["study", str(tmp_path / "missing"), "-o", str(tmp_path / "out3")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out3").exists()


def test_text_progress_bar():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    bar = TextProgressBar(terminal, width=10)
    bar(0.5, "case1 / round1")
    bar(1.0, "done")
    bar.finish()
    assert terminal.getvalue().startswith("\r[#####.....]  50% case1 / round1")
    assert "\r[##########] 100% done" in terminal.getvalue() and terminal.getvalue().endswith("\n")
    plain = io.StringIO()
    bar = TextProgressBar(plain)
    bar(0.0, "a")
    bar(0.2, "a")
    bar(0.5, "b")
    assert plain.getvalue() == "[  0%] a\n[ 50%] b\n"


def test_pictures_are_rendered_when_slicer_core_is_present(tmp_path):
    import pytest

    pytest.importorskip("slicer")
    root = tmp_path / "study"
    writeMask(root / "case" / "a.nrrd", sphere())
    writeMask(root / "case" / "b.nrrd", sphere((2.0, 0.0, 0.0)))
    writeMask(root / "case" / "image.nrrd", sphere(radiusMm=10.0).astype(np.int16) * 100)
    assert main(["study", str(root), "-o", str(tmp_path / "out")]) == 0
    png = (tmp_path / "out" / "pictures" / "case_single.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    from ReirradiationDoseLib.mrml.render import readPng

    rgb = readPng(tmp_path / "out" / "pictures" / "case_single.png")
    assert rgb.shape[:2] == (420, 420) and rgb[..., :3].std() > 10  # not a blank picture


def test_an_interruption_while_the_output_is_put_in_place_waits_for_it(tmp_path, capsys, monkeypatch):
    """A verification review: Ctrl-C between the two renames that put an output folder in place left neither the
    earlier output nor the new one where it belongs (hidden .previous / .partial folders) while the command said
    "nothing was written". The swap now finishes first: the new output is in place, no hidden folder is left."""
    import os
    import pathlib
    import signal

    root = tmp_path / "study"
    writeMask(root / "case" / "a.nrrd", sphere())
    writeMask(root / "case" / "b.nrrd", sphere((1.0, 0.0, 0.0)))
    output = tmp_path / "out"
    assert main(["study", str(root), "--output", str(output), "--no-pictures"]) == 0
    rename = pathlib.Path.rename

    def renameThenInterrupt(self, target):
        result = rename(self, target)
        if ".previous-" in str(target):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right after the earlier output was moved aside
        return result

    monkeypatch.setattr(pathlib.Path, "rename", renameThenInterrupt)
    assert main(["study", str(root), "--output", str(output), "--no-pictures", "--hd-percentile", "90"]) == 0
    monkeypatch.setattr(pathlib.Path, "rename", rename)
    assert json.loads((output / "study.json").read_text())["options"]["hdPercentile"] == 90.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "study"]
