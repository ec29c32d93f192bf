#!/usr/bin/env bash
# Peak RSS of the content scanner while it scans and serves a 1 GiB file (issue 4 goal: < 64 MiB).
# Real clamd (EICAR test signature only), a Python upstream serving the file, the scanner binary.
# Usage: bash bench/scanner_rss.sh [path/to/mxstack-content-scanner]
set -euo pipefail
bin="${1:-${CARGO_TARGET_DIR:-/var/cache/mxstack/target}/debug/mxstack-content-scanner}"
d="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$d"' EXIT
mkdir "$d/db"
printf 'Eicar-Body-Test:0:*:45494341522d5354414e444152442d414e544956495255532d544553542d46494c45\n' > "$d/db/mxstack-test.ndb"
printf 'Foreground yes\nDatabaseDirectory %s/db\nTCPSocket 23310\nTCPAddr 127.0.0.1\nStreamMaxLength 2000M\nMaxFileSize 2000M\nMaxScanSize 4000M\nAlertExceedsMax yes\n' "$d" > "$d/clamd.conf"
head -c 1073741824 /dev/urandom > "$d/big.bin"
head -c 32 /dev/urandom | base64 > "$d/secret"
cat > "$d/up.py" <<PY
import http.server, os, shutil
F = "$d/big.bin"
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(os.path.getsize(F))); self.end_headers()
        with open(F, "rb") as f: shutil.copyfileobj(f, self.wfile, 1 << 20)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 23400), H).serve_forever()
PY
printf 'listen: 127.0.0.1:23401\nupstreams: [http://127.0.0.1:23400]\nclamd: 127.0.0.1:23310\nmax_file_bytes: 2147483648\nmemory_buffer_bytes: 4194304\nclamd_connections: 4\nscan_timeout_secs: 120\nverdict_cache_entries: 100\nrequest_secret_path: %s/secret\n' "$d" > "$d/scanner.yaml"
/usr/sbin/clamd --foreground --config-file="$d/clamd.conf" > "$d/clamd.log" 2>&1 &
python3 "$d/up.py" &
sleep 2
"$bin" --config "$d/scanner.yaml" > "$d/scanner.log" 2>&1 & sp=$!
sleep 1
start=$(date +%s.%N)
curl -s -o "$d/out.bin" -H "Authorization: Bearer x" http://127.0.0.1:23401/_matrix/client/v1/media/download/bench/big
end=$(date +%s.%N)
cmp "$d/big.bin" "$d/out.bin" && echo "byte-identical"
echo "seconds: $(echo "$end - $start" | bc)"
grep VmHWM "/proc/$sp/status"
