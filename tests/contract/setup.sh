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
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --requirement "$requirements"
"$venv/bin/schemathesis" --version
cp "$requirements" "$stamp"
