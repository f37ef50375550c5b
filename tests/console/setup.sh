#!/usr/bin/env bash
# Installs Playwright's driver (playwright-core, pinned in package.json and package-lock.json)
# into a directory for the browser tests (tests/console.rs). It downloads no browser: the
# tests launch Debian's Chromium (/usr/bin/chromium, installed by scripts/test). Idempotent:
# an install made from the same lockfile is left alone.
# Usage: tests/console/setup.sh <install dir>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:?usage: setup.sh <install dir>}"
stamp="$dir/.reeve-lockfile"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "setup.sh: node (20 or later) and npm are needed for the browser tests" >&2
    exit 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    echo "setup.sh: playwright-core needs Node 20 or later, not $(node --version)" >&2
    exit 1
fi
if ! { [ -f "$dir/node_modules/playwright-core/package.json" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$here/package-lock.json"; }; then
    mkdir -p "$dir"
    cp "$here/package.json" "$here/package-lock.json" "$dir/"
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: nothing may be fetched but the package itself.
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    cp "$here/package-lock.json" "$stamp"
fi
