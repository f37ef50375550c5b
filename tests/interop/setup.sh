#!/usr/bin/env bash
# Installs the official Python MCP SDK, pinned in a requirements file (requirements.txt for
# 1.x, requirements-v2.txt for 2.x), into a virtualenv for the interoperability test
# (tests/mcp_interop.rs). Idempotent: an up-to-date venv is left alone.
# Usage: tests/interop/setup.sh <venv dir> [requirements file, default requirements.txt]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:?usage: setup.sh <venv dir> [requirements file]}"
requirements="${2:-$here/requirements.txt}"
stamp="$venv/.reeve-requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$requirements"; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --requirement "$requirements"
"$venv/bin/python" -c "import mcp, jsonschema"
cp "$requirements" "$stamp"
