#!/usr/bin/env bash
# Installs the official Python MCP SDK, pinned in a requirements file (requirements.txt for
# 1.x, requirements-v2.txt for 2.x), into a virtualenv for the interoperability test
# (tests/mcp_interop.rs).
# Usage: tests/interop/setup.sh <venv dir> [requirements file, default requirements.txt]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../support/python-venv.sh" "${1:?usage: setup.sh <venv dir> [requirements file]}" \
    "${2:-$here/requirements.txt}" python -c "import mcp, jsonschema"
