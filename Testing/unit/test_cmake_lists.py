"""Each module's CMakeLists.txt lists every Python file of the module and every resource file.

Slicer installs only what ``slicerMacroBuildScriptedModule`` is given: a Lib file missing from the list works in the
source tree and fails in the installed extension. This test reads each CMakeLists and globs the folders.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("ReirradiationDose", "DelineationReview")


def cmakeList(module: str, variable: str) -> list[str]:
    text = (ROOT / module / "CMakeLists.txt").read_text()
    text = re.sub(r"#[^\n]*", "", text)  # comments
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"{module}/CMakeLists.txt has no set({variable} ...)"
    return [item.replace("${MODULE_NAME}", module) for item in match.group(1).split()]


def pythonFiles(module: str) -> set[str]:
    folder = ROOT / module
    files = {f"{module}.py"}
    files |= {p.relative_to(folder).as_posix() for p in (folder / f"{module}Lib").rglob("*.py")
              if "__pycache__" not in p.parts}
    return files


def resourceFiles(module: str) -> set[str]:
    folder = ROOT / module
    return {p.relative_to(folder).as_posix() for p in (folder / "Resources").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.parametrize("module", MODULES)
def test_every_python_file_is_listed(module):
    listed = cmakeList(module, "MODULE_PYTHON_SCRIPTS")
    assert len(listed) == len(set(listed)), "a script is listed twice"
    missing = sorted(pythonFiles(module) - set(listed))
    assert not missing, f"add to MODULE_PYTHON_SCRIPTS in {module}/CMakeLists.txt: {missing}"
    stale = sorted(set(listed) - pythonFiles(module))
    assert not stale, f"listed in {module}/CMakeLists.txt but absent: {stale}"


@pytest.mark.parametrize("module", MODULES)
def test_every_resource_is_listed(module):
    listed = set(cmakeList(module, "MODULE_PYTHON_RESOURCES"))
    assert f"Resources/Icons/{module}.png" in listed and f"Resources/UI/{module}.ui" in listed
    missing = sorted(resourceFiles(module) - listed)
    assert not missing, f"add to MODULE_PYTHON_RESOURCES in {module}/CMakeLists.txt: {missing}"
    stale = sorted(listed - resourceFiles(module))
    assert not stale, f"listed in {module}/CMakeLists.txt but absent: {stale}"


@pytest.mark.parametrize("module", MODULES)
def test_module_is_built_as_a_scripted_module(module):
    text = (ROOT / module / "CMakeLists.txt").read_text()
    assert f"set(MODULE_NAME {module})" in text
    assert "slicerMacroBuildScriptedModule(" in text
    assert "SCRIPTS ${MODULE_PYTHON_SCRIPTS}" in text and "RESOURCES ${MODULE_PYTHON_RESOURCES}" in text
    top = (ROOT / "CMakeLists.txt").read_text()
    assert f"add_subdirectory({module})" in top


def test_parser_sees_the_lists():
    """Guard the guard: the regex finds a known Lib file and the module file."""
    listed = cmakeList("ReirradiationDose", "MODULE_PYTHON_SCRIPTS")
    assert "ReirradiationDose.py" in listed
    assert "ReirradiationDoseLib/core/geometry.py" in listed
