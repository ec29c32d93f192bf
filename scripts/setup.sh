#!/usr/bin/env bash
# Installs everything mxstack's build, local stack and tests need on a fresh Debian 12 machine (as root).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MXSTACK_VENV:-$here/.venv}"

log() { printf '\n== setup: %s\n' "$*"; }

# Every package, runtime and development alike, from the one list (scripts/deps.txt).
deps="$here/scripts/deps.txt"
need_apt=()
for pkg in $(awk '$1 == "apt" { print $2 }' "$deps"); do
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
mapfile -t want_pip < <(awk '$1 == "pip" { print $2 }' "$deps")
# Installed, and at the pinned version where the list pins one.
if ! "$VENV/bin/python" - "$deps" <<'PYEOF' >/dev/null 2>&1
import importlib.metadata as m, re, sys
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 3 or f[0] != "pip":
        continue
    name, _, pin = f[1].partition("==")
    if m.version(re.sub(r"\[.*\]", "", name)) != (pin or m.version(re.sub(r"\[.*\]", "", name))):
        sys.exit(1)
PYEOF
then
  log "pip: ${want_pip[*]}"
  "$VENV/bin/pip" install -q --upgrade pip wheel
  "$VENV/bin/pip" install -q "${want_pip[@]}"
fi
log "done (venv: $VENV)"
