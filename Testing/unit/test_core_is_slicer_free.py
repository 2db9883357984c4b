"""STYLE §1: every core module imports in a process where slicer, vtk and qt are unimportable."""

import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_PACKAGES = {
    "ReirradiationDoseLib.core": ROOT / "ReirradiationDose" / "ReirradiationDoseLib" / "core",
    "DelineationReviewLib.core": ROOT / "DelineationReview" / "DelineationReviewLib" / "core",
}


def coreModules():
    names = []
    for package, folder in CORE_PACKAGES.items():
        names.append(package)
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(folder)])]
    return names


def test_core_modules_exist():
    modules = coreModules()
    assert "ReirradiationDoseLib.core.geometry" in modules


@pytest.mark.parametrize("module", coreModules())
def test_core_module_imports_without_slicer_vtk_qt(module):
    script = textwrap.dedent(f"""
        import sys
        class Blocker:
            BLOCKED = ("slicer", "vtk", "qt", "ctk", "vtkmodules", "PythonQt", "slicer_core")
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.BLOCKED:
                    raise ImportError(f"{{name}} is blocked: the core must not import it")
                return None
        sys.meta_path.insert(0, Blocker())
        import importlib
        importlib.import_module({module!r})
        leaked = [m for m in sys.modules if m.split(".")[0] in Blocker.BLOCKED]
        assert not leaked, leaked
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
