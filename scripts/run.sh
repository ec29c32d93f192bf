#!/usr/bin/env bash
# The main job: set up a fresh Debian 12 machine, build mxstack, take a demo deployment from nothing
# to checked Kubernetes manifests (init -> plan -> check -> render), then run the same topology on
# this machine (up), create an admin user and print how to log in.
#   DOMAIN (default demo.mxstack.test), SCALE (default 1k), DIR (default ./demo),
#   STATE (default /var/lib/mxstack/demo: PostgreSQL runs as `postgres` and must reach it),
#   BASE_PORT (default 8000: the router listens there), ADMIN (default admin)
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

STATE="${STATE:-/var/lib/mxstack/demo}"; BASE_PORT="${BASE_PORT:-8000}"; ADMIN="${ADMIN:-admin}"
mkdir -p "$(dirname "$STATE")"
# Harmless when the stack is already up: it reports the running stack.
"$mx" up --config "$DIR/mxstack.yaml" --state "$STATE" --base-port "$BASE_PORT"
if [ ! -s "$DIR/admin-login.json" ]; then
  # The login (password and token) goes to a 0600 file, never to the terminal log.
  ( umask 077; "$mx" user add --config "$DIR/mxstack.yaml" --state "$STATE" "$ADMIN" --admin --json > "$DIR/admin-login.json.tmp" )
  mv "$DIR/admin-login.json.tmp" "$DIR/admin-login.json"
fi
# End to end, as a user would: a throwaway user, a room, media, EICAR, TURN, LI lag, metrics.
"$mx" verify --config "$DIR/mxstack.yaml" --state "$STATE"
url="$("$mx" status --config "$DIR/mxstack.yaml" --state "$STATE" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_url"])')"
echo
echo "The stack is running. Log in with any Matrix client (e.g. Element, or curl):"
echo "  homeserver: $url"
echo "  user:       @$ADMIN:$DOMAIN"
echo "  password:   in $DIR/admin-login.json (mode 0600)"
echo "  curl -s -XPOST $url/_matrix/client/v3/login -d '{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"$ADMIN\"},\"password\":\"...\"}'"
echo "Status: $mx status --config $DIR/mxstack.yaml --state $STATE"
echo "Stop:   $mx down --config $DIR/mxstack.yaml --state $STATE   (--purge deletes the data)"
