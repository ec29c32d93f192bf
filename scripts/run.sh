#!/usr/bin/env bash
# The main job: set up a fresh Debian 12 machine, build mxstack, and take a demo deployment from
# nothing to checked Kubernetes manifests: init -> plan -> check -> render.
#   DOMAIN (default demo.mxstack.test), SCALE (default 1k), DIR (default ./demo)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/mxstack/target}"
cargo build --release -p mxstack
mx="$CARGO_TARGET_DIR/release/mxstack"
DOMAIN="${DOMAIN:-demo.mxstack.test}"; SCALE="${SCALE:-1k}"; DIR="${DIR:-$here/demo}"
"$mx" init --domain "$DOMAIN" --scale "$SCALE" --dir "$DIR"
"$mx" plan --config "$DIR/mxstack.yaml"
"$mx" check --config "$DIR/mxstack.yaml" || true   # warnings (e.g. empty li.allowed_cidrs) are expected in a demo
"$mx" render --config "$DIR/mxstack.yaml" --out "$DIR/manifests"
echo
echo "Manifests are in $DIR/manifests (apply with: kubectl apply -k $DIR/manifests)."
echo "The binary is $mx; see README.md for the tour."
