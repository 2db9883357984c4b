#!/usr/bin/env bash
# The core's unit tests under Slicer's own Python (3.12 in Slicer 5.12/5.13) with exactly the packages Slicer bundles
# (Testing/slicer-python-requirements.txt) and nothing else: inside Slicer nothing is pip-installed, so the core must
# run on those. Tests needing slicer-core, vtk or ruff skip themselves there. Without a python3.12 on the machine this
# check is skipped with a message (a fresh Debian 12 has 3.11 only); SLICER_PYTHON names another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-slicer
STAMP=$VENV/.installed-stamp
REQUIREMENTS=Testing/slicer-python-requirements.txt

is312() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; }
# SLICER_PYTHON, else python3.12 on the PATH (a pyenv shim answers only when 3.12 is selected), else pyenv's or a
# system's own 3.12
PYTHON=""
if [ -n "${SLICER_PYTHON:-}" ]; then
  # named by the user: it must be a 3.12 (not another interpreter found instead without a word)
  if ! is312 "$SLICER_PYTHON"; then
    echo "slicer-python: SLICER_PYTHON='$SLICER_PYTHON' is not a Python 3.12 interpreter" >&2; exit 1
  fi
  PYTHON=$SLICER_PYTHON
else
  for candidate in python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 \
                   /usr/local/bin/python3.12 /usr/bin/python3.12; do
    if is312 "$candidate"; then PYTHON=$candidate; break; fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "slicer-python: skipped: no Python 3.12 found (set SLICER_PYTHON); the core's tests under Slicer's Python and packages need it"
  exit 0
fi
# a venv left half-made (an interrupted run, a Python without its venv module's pip) is made again
if [ -x $VENV/bin/python ] && ! $VENV/bin/python -m pip --version >/dev/null 2>&1; then
  echo "slicer-python: $VENV has no pip (left half-made): making it again"
  rm -rf $VENV
fi
if [ ! -x $VENV/bin/python ]; then
  if ! "$PYTHON" -m venv $VENV; then
    rm -rf $VENV
    echo "slicer-python: '$PYTHON' could not make a venv (on Debian/Ubuntu install its -venv package)" >&2; exit 1
  fi
fi
if [ ! -f "$STAMP" ] || [ "$REQUIREMENTS" -nt "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "slicer-python: installing Slicer's bundled packages into $VENV"
  $VENV/bin/python -m pip install -q --upgrade pip
  $VENV/bin/python -m pip install -q -r "$REQUIREMENTS"
  $VENV/bin/python -m pip install -q --no-deps -e .
  touch "$STAMP"
fi
echo "slicer-python: the core's tests under $($VENV/bin/python --version) with Slicer's packages"
exec $VENV/bin/python -m pytest -q -p no:cacheprovider -m "not slow" Testing/unit
