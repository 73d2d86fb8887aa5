#!/usr/bin/env bash
# Supply-chain checks with cargo-deny: licences, bans and sources always (offline), and RustSec
# advisories when the advisory database can be fetched; where the network does not allow it,
# says so plainly and checks the rest. Installs cargo-deny from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
cargo fetch --locked --quiet  # every platform's crates, so the offline checks see the whole graph
cargo deny --offline check bans licenses sources
if cargo deny fetch db >/dev/null 2>&1; then
    cargo deny check advisories
else
    echo "SKIPPED: RustSec advisories — the advisory database (github.com/rustsec/advisory-db) cannot be fetched from here; the hosted workflow checks them."
fi
