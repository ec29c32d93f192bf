#!/usr/bin/env bash
# Runs every test of mxstack: formatting, lints, unit and integration tests, and the proofs against
# the real Synapse, HAProxy and Kubernetes schemas. Installs what it needs first (scripts/setup.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# A stable target dir on the machine keeps CI fast; nothing depends on it being warm.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/mxstack/target}"
export MXSTACK_VENV="${MXSTACK_VENV:-$here/.venv}"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace -- --test-threads=2
echo "== end-to-end: mxstack up, a real Matrix client (matrix-nio) through the router"
cargo build -p mxstack -p mxstack-kube-podman
# Screenshots of the console pages (headless Chromium) and the evidence package they exported.
export MXSTACK_E2E_ARTEFACTS="${MXSTACK_E2E_ARTEFACTS:-$here/target/e2e-artefacts}"
MXSTACK_BIN="$CARGO_TARGET_DIR/debug/mxstack" "$MXSTACK_VENV/bin/python" -m pytest -v -rP -p no:cacheprovider tests/e2e
echo "== test artefacts (screenshots): $MXSTACK_E2E_ARTEFACTS"
ls -l "$MXSTACK_E2E_ARTEFACTS" || true
