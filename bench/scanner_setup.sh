#!/usr/bin/env bash
# Installs the reference matrix-content-scanner 1.4.1 into its own venv for bench/scanner.py.
# Its Rust extension pins vodozemac by git (unreachable here): the manifest is patched to the
# crates.io release, as ../shared/FACTS.md records. Idempotent.
set -euo pipefail
base="${MCS_DIR:-/var/cache/mxstack/mcs}"
mkdir -p "$base"
cd "$base"
command -v clamdscan >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q clamdscan  # the reference scans by script
[ -x venv/bin/python ] || python3 -m venv venv
if ! venv/bin/python -c "import matrix_content_scanner" 2>/dev/null; then
  venv/bin/pip download -q --no-binary :all: --no-deps matrix-content-scanner==1.4.1 -d sdist
  rm -rf src && mkdir src && tar xzf sdist/matrix_content_scanner-1.4.1.tar.gz -C src
  cd src/matrix_content_scanner-1.4.1
  sed -i 's|^vodozemac = { git = .*|vodozemac = { version = "0.11.1", features = ["insecure-pk-encryption"] }|' rust/Cargo.toml
  rm -f Cargo.lock
  CARGO_TARGET_DIR="$base/target" "$base/venv/bin/pip" install .
fi
echo "reference python: $base/venv/bin/python"
