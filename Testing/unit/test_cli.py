import subprocess
import sys

from ReirradiationDoseLib.cli import main
from ReirradiationDoseLib.core import __version__


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert __version__ in capsys.readouterr().out


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
