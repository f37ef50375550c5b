#!/usr/bin/env bash
# Installs schemathesis, pinned in requirements.txt, into a virtualenv for the REST contract
# test (tests/contract.rs). Idempotent: an up-to-date venv is left alone.
# Usage: tests/contract/setup.sh <venv dir>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:?usage: setup.sh <venv dir>}"
requirements="$here/requirements.txt"
stamp="$venv/.reeve-requirements"
if [ -x "$venv/bin/schemathesis" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$requirements"; then
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
"$venv/bin/schemathesis" --version
cp "$requirements" "$stamp"
