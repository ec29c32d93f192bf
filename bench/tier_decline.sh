#!/bin/bash
# Decline: does a restart (down/up, data kept) bring p99 back? workers stack, default features.
set -u
B=${MXSTACK:-target/debug/mxstack}
D=$(mktemp -d /var/tmp/mxstack-decline-XXXX); chmod 755 $D
$B init --domain tier.mxstack.test --scale 100 --dir $D >/dev/null
$B up --config $D/mxstack.yaml --base-port 28400 --replicas 1 --json > /dev/null || exit 1
URL=$($B status --config $D/mxstack.yaml --json | python3 -c "import json,sys;print(json.load(sys.stdin)['client_url'])")
lt() { $B loadtest --url $URL --config $D/mxstack.yaml --ccu 100 --duration 60s --json 2>/dev/null | python3 -c "import json,sys;r=json.load(sys.stdin);d=r['delivery_latency_ms'];print('$1', r['goodput']['messages_per_min'], d['p50'], d['p99'], r['cleanup'])"; }
sleep 20
lt r1; lt r2; lt r3
$B down --config $D/mxstack.yaml > /dev/null
$B up --config $D/mxstack.yaml --base-port 28400 --replicas 1 --json > /dev/null || exit 1
sleep 20
lt after-restart-r4; lt r5
$B down --config $D/mxstack.yaml --purge > /dev/null; rm -rf $D
echo done
