#!/usr/bin/env bash
# Installs the official Prometheus Python client, pinned in requirements.txt, into a
# virtualenv for tests/metrics.rs, which parses GET /metrics with its OpenMetrics parser.
# Idempotent: an up-to-date venv is left alone.
# Usage: tests/metrics/setup.sh <venv dir>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:?usage: setup.sh <venv dir>}"
requirements="$here/requirements.txt"
stamp="$venv/.reeve-requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$requirements"; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --requirement "$requirements"
"$venv/bin/python" -c "import prometheus_client.openmetrics.parser"
cp "$requirements" "$stamp"
