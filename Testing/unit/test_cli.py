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
