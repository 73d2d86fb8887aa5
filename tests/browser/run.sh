#!/usr/bin/env bash
# The console's browser test: Debian's chromium driven by npm playwright-core (never a
# downloaded browser). Installs both when missing, then runs tests/browser/console.mjs
# against target/debug/cedar (built by `cargo test`; built here if absent).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v chromium >/dev/null; then
    echo "== installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y --no-install-recommends chromium >/dev/null \
        || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends chromium >/dev/null; }
fi
command -v node >/dev/null || { echo "FATAL: node is required for the browser test" >&2; exit 1; }

echo "== npm ci (playwright-core, pinned in tests/browser/package-lock.json)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

export CEDAR_BIN="${CEDAR_BIN:-$(pwd)/target/debug/cedar}"
[ -x "$CEDAR_BIN" ] || cargo build --locked
export CHROMIUM="${CHROMIUM:-$(command -v chromium)}"
node tests/browser/console.mjs
