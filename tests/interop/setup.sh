#!/usr/bin/env bash
# Installs the official Python MCP SDK (pinned in requirements.txt) into a virtualenv for the
# interoperability test (tests/mcp_interop.rs). Idempotent: an up-to-date venv is left alone.
# Usage: tests/interop/setup.sh <venv dir>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:?usage: setup.sh <venv dir>}"
stamp="$venv/.reeve-requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$here/requirements.txt"; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --requirement "$here/requirements.txt"
"$venv/bin/python" -c "import mcp, jsonschema, httpx"
cp "$here/requirements.txt" "$stamp"
