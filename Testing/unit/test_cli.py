import subprocess
import sys

from ReirradiationDoseLib.cli import main
from ReirradiationDoseLib.core import __version__


def test_version(capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_:  # a review: the exit code was checked only if it exited
        main(["--version"])
    assert exit_.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_an_interrupted_run_says_so_and_leaves_the_earlier_output(demoCase, tmp_path):
    """An adversarial review: SIGTERM (a scheduler, a closed terminal) ended the process at once, leaving hidden
    .partial folders, and Ctrl-C printed a traceback. Both now end with exit code 130 and one line; the earlier
    output in the folder stays as it was."""
    import signal
    import time

    output = tmp_path / "out"
    output.mkdir()
    earlier = output / "summary.json"
    earlier.write_text("{}")
    (output / ".reirradiation-output").write_text("an earlier output")
    for signum in (signal.SIGTERM, signal.SIGINT):
        process = subprocess.Popen([sys.executable, "-m", "ReirradiationDoseLib.cli", "dose",
                                    str(demoCase.paths["case"]), "--output", str(output), "--no-pictures"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8.0)  # inside the registration (the run takes about 40 s)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 130, err
        assert "reirradiation dose: interrupted: nothing was written (an earlier output is left as it was)" in err
        assert "Traceback" not in err
        assert earlier.read_text() == "{}" and not list(tmp_path.glob(".out.*"))


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "ReirradiationDoseLib.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"reirradiation {__version__}"


def test_help_of_every_command_prints(capsys):
    """`reirradiation --help` crashed (ValueError: a bare % in the dvh command's help text)."""
    import pytest

    from ReirradiationDoseLib.cli import COMMANDS

    for argv in (["--help"], *([name, "--help"] for name in COMMANDS)):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0, argv
        out = capsys.readouterr().out
        assert "%%" not in out, argv  # the dvh command's own help printed "D95%%" (a review)
        if argv[0] in ("--help", "dvh"):
            assert "D95%)" in " ".join(out.split()), argv


def test_dose_refuses_an_input_folder_as_output_before_reading_the_case(tmp_path, capsys):
    """The output folder named the case's own folder: every input was deleted. Now refused at once (the case file
    is not even read: it is not valid JSON here), the folder untouched."""
    case = tmp_path / "case"
    case.mkdir()
    (case / "case.json").write_text("not json")
    (case / "RTDOSE.dcm").write_bytes(b"dose")
    assert main(["dose", str(case / "case.json"), "-o", str(case), "--no-pictures"]) == 2
    assert "holds files that are not an earlier output of Reirradiation" in capsys.readouterr().err
    assert sorted(p.name for p in case.iterdir()) == ["RTDOSE.dcm", "case.json"]


def test_an_unexpected_error_is_one_line_not_a_traceback(monkeypatch, capsys, tmp_path):
    """A bug says it is one (exit 3) with the error in one line; a file the system refuses is named (exit 2);
    --verbose shows the traceback."""
    import pytest

    from ReirradiationDoseLib.commands import eqd2

    def broken(args):
        raise TypeError("cannot unpack non-iterable RtDose object")

    monkeypatch.setattr(eqd2, "run", broken)
    argv = ["eqd2", "--dose", "x.nrrd", "--fractions", "5", "--alpha-beta", "3", "-o", "y.nrrd"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("reirradiation eqd2: internal error (TypeError: cannot unpack non-iterable RtDose object)")
    assert "Traceback" not in err and "--verbose" in err
    with pytest.raises(TypeError):
        main(["--verbose", *argv])

    def unreadable(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "dose.nrrd"))

    monkeypatch.setattr(eqd2, "run", unreadable)
    assert main(argv) == 2
    assert capsys.readouterr().err == f"reirradiation eqd2: error: {tmp_path / 'dose.nrrd'}: Permission denied\n"


def test_the_demo_refuses_a_folder_of_other_files(tmp_path, capsys):
    """An adversarial review: `demo -o` wrote its case, dose and study folders among a user's own files (a later run
    replaces dose/ and study/ as a whole). Refused naming the folder and the files, before anything is written."""
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "thesis.docx").write_text("mine")
    (folder / "Thumbs.db").write_text("a file browser's")  # not the user's work: not named, never a reason to refuse
    assert main(["demo", "--output", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: the folder holds other files (thesis.docx): give a new or empty folder" in err
    assert sorted(p.name for p in folder.iterdir()) == ["Thumbs.db", "thesis.docx"]
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--output", str(tmp_path / "file")]) == 2
    assert "the demo's output must be a folder; this is a file" in capsys.readouterr().err
