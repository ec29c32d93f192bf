#!/bin/bash
# Decline: does a restart (down/up, data kept) bring p99 back? workers stack, default features.
# Every run has the same load (--seed, default 1; SEED=... to change it).
# Each run is bracketed by bench/probe.py snapshots of the stack's Prometheus (GC, caches, CPU
# per sync), reported at the end. Usage: tier_decline.sh [extra `up` args...]
set -u
B=${MXSTACK:-target/debug/mxstack}
HERE=$(dirname "$0")
D=$(mktemp -d /var/tmp/mxstack-decline-XXXX); chmod 755 $D
PROBE=$D/probe.jsonl
$B init --domain tier.mxstack.test --scale 100 --dir $D >/dev/null
up() { $B up --config $D/mxstack.yaml --base-port 28400 --replicas 1 "$@" --json > /dev/null; }
up "$@" || exit 1
URL=$($B status --config $D/mxstack.yaml --json | python3 -c "import json,sys;print(json.load(sys.stdin)['client_url'])")
PROM=http://127.0.0.1:$($B status --config $D/mxstack.yaml --json | python3 -c "import json,sys;print(next(p['port'] for p in json.load(sys.stdin)['processes'] if p['name']=='prometheus'))")
lt() {
  python3 $HERE/probe.py snap $PROM "$1-before" $PROBE
  $B loadtest --url $URL --config $D/mxstack.yaml --ccu 100 --duration 60s --seed ${SEED:-1} --json 2>/dev/null | python3 -c "import json,sys;r=json.load(sys.stdin);d=r['delivery_latency_ms'];print('$1', r['goodput']['messages_per_min'], d['p50'], d['p99'], r['cleanup'])"
  python3 $HERE/probe.py snap $PROM "$1" $PROBE
}
sleep 20
lt r1; lt r2; lt r3
$B down --config $D/mxstack.yaml > /dev/null
up "$@" || exit 1
sleep 20
lt after-restart-r4; lt r5
python3 $HERE/probe.py report $PROBE
$B down --config $D/mxstack.yaml --purge > /dev/null; rm -rf $D
echo done
