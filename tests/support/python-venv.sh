#!/usr/bin/env bash
# Installs a pinned requirements file into a virtualenv for one of the test suites that drive
# reeve with a Python tool. Idempotent: a venv whose stamp matches the requirements is left
# alone. After installing, runs the given check (a command, run with the venv's bin/ first on
# PATH) so that a broken install fails here, not inside the test.
# Usage: tests/support/python-venv.sh <venv dir> <requirements file> <check command...>
set -euo pipefail
venv="${1:?usage: python-venv.sh <venv dir> <requirements file> <check command...>}"
requirements="${2:?usage: python-venv.sh <venv dir> <requirements file> <check command...>}"
shift 2
stamp="$venv/.reeve-requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$requirements"; then
    exit 0
fi
if python3 -m venv "$venv" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-deps --requirement "$requirements"
else
    # Debian's python3 may lack ensurepip (python3-venv): a venv without pip, filled by the
    # system's pip.
    python3 -m venv --clear --without-pip "$venv"
    python3 -m pip --python "$venv/bin/python" install --quiet --disable-pip-version-check \
        --no-deps --requirement "$requirements"
fi
PATH="$venv/bin:$PATH" "$@"
cp "$requirements" "$stamp"
