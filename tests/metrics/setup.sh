#!/usr/bin/env bash
# Installs the official Prometheus Python client, pinned in requirements.txt, into a
# virtualenv for tests/metrics.rs, which parses GET /metrics with its OpenMetrics parser.
# Usage: tests/metrics/setup.sh <venv dir>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../support/python-venv.sh" "${1:?usage: setup.sh <venv dir>}" "$here/requirements.txt" \
    python -c "import prometheus_client.openmetrics.parser"
