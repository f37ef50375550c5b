#!/usr/bin/env bash
# Installs schemathesis, pinned in requirements.txt, into a virtualenv for the REST contract
# test (tests/contract.rs).
# Usage: tests/contract/setup.sh <venv dir>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../support/python-venv.sh" "${1:?usage: setup.sh <venv dir>}" "$here/requirements.txt" \
    schemathesis --version
