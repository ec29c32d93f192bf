#!/usr/bin/env python3
"""Content scanner benchmark (issue 4): ours against matrix-content-scanner 1.4.1, side by side.

Both scanners use the same clamd (EICAR test signature only), the same nginx upstream and the same
files (1 KiB, 100 KiB, 10 MiB), at concurrency 1 and 8, through the same API
(GET /_matrix/media_proxy/unstable/download/bench/<id> with an Authorization header):
- uncached: every request a new media id (both miss their caches);
- cached: the same id again after a warm-up request.
Plus clamd's raw zINSTREAM throughput on the same files (the ceiling) and each scanner's peak RSS.

Reference install (its own venv; FACTS: patch the git-pinned vodozemac): see bench/scanner_setup.sh.
Run: .venv/bin/python bench/scanner.py --ours target/release/mxstack-content-scanner \
         --reference /var/cache/mxstack/mcs/venv/bin/python
"""
import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"1k": 1024, "100k": 100 * 1024, "10m": 10 * 1024 * 1024}
SIG = "Eicar-Body-Test:0:*:45494341522d5354414e444152442d414e544956495255532d544553542d46494c45\n"
CLAMD_PORT, NGINX_PORT, OURS_PORT, REF_PORT = 23510, 23511, 23512, 23513


def wait_port(port, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"port {port} never opened")


def hwm_kib(pid):
    total = 0
    for p in [pid] + children(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]))
        except FileNotFoundError:
            pass
    return total


def children(pid):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def load(url, concurrency, expect_len, n, prefix=None, same=None):
    """One run of the Rust load generator (bench/loadgen): n GETs, a new media ID per request
    (`prefix`) or the same one (`same`); each response must be 200 with `expect_len` bytes."""
    cmd = [LOADGEN, "http", "--url", f"{url}/_matrix/media_proxy/unstable/download/bench/{{id}}",
           "--requests", str(n), "--concurrency", str(concurrency), "--expect-len", str(expect_len),
           "--header", "Authorization: Bearer x"]
    cmd += ["--same", same] if same else ["--ids", prefix]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def raw_clamd(path, n, concurrency):
    """clamd alone: zINSTREAM of the same file over one persistent session per task (the ceiling)."""
    cmd = [LOADGEN, "clamd", "--addr", f"127.0.0.1:{CLAMD_PORT}", "--file", str(path),
           "--requests", str(n), "--concurrency", str(concurrency)]
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    assert r["errors"] == 0, r
    return r


def medians(runs):
    """Each figure's median over the repetitions, plus every run's requests/s."""
    out = {k: statistics.median(r[k] for r in runs) for k in ("rps", "mb_s", "p50_ms", "p99_ms")}
    out["errors"] = sum(r["errors"] for r in runs)
    out["requests"] = sum(r["requests"] for r in runs)
    out["rps_runs"] = [r["rps"] for r in runs]
    return out


def ordered(scanners, rep):
    """The scanners in turn, the order reversed every other repetition."""
    labels = list(scanners)
    return labels if rep % 2 == 0 else labels[::-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--reference", required=True, help="python of the venv with matrix-content-scanner")
    ap.add_argument("--out", default="bench/results/scanner.json")
    ap.add_argument("--loadgen", required=True, help="the mxstack-bench-load binary (cargo build --release -p mxstack-bench-load)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["ours", "reference"], help="measure one scanner (experiments; the record runs both)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per cell; medians are reported")
    args = ap.parse_args()
    global LOADGEN
    LOADGEN = args.loadgen
    d = Path(tempfile.mkdtemp(prefix="scanner-bench-"))
    (d / "db").mkdir()
    (d / "db" / "mxstack-test.ndb").write_text(SIG)
    (d / "files").mkdir()
    for name, n in SIZES.items():
        (d / "files" / name).write_bytes(os.urandom(n))
    (d / "clamd.conf").write_text(
        f"Foreground yes\nDatabaseDirectory {d}/db\nTCPSocket {CLAMD_PORT}\nTCPAddr 127.0.0.1\n"
        f"LocalSocket {d}/clamd.sock\nMaxThreads 16\nStreamMaxLength 100M\nMaxFileSize 100M\n"
        "MaxScanSize 400M\nAlertExceedsMax yes\n")
    (d / "nginx.conf").write_text(f"""
daemon off; pid {d}/nginx.pid; error_log {d}/nginx-error.log; worker_processes 1;
events {{ worker_connections 1024; }}
http {{ access_log off; default_type application/octet-stream; client_body_temp_path {d};
  proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{ listen 127.0.0.1:{NGINX_PORT}; root {d}/files;
    location ~ "/download/bench/(?<size>1k|100k|10m)-" {{ try_files /$size =404; }} }} }}
""")
    secret = base64.b64encode(os.urandom(32)).decode()
    (d / "secret").write_text(secret)
    (d / "ours.yaml").write_text(
        f"listen: 127.0.0.1:{OURS_PORT}\nupstreams: [http://127.0.0.1:{NGINX_PORT}]\n"
        f"clamd: 127.0.0.1:{CLAMD_PORT}\nmax_file_bytes: 104857600\nmemory_buffer_bytes: 4194304\n"
        f"memory_budget_bytes: 50331648\n"
        f"clamd_connections: 8\nscan_timeout_secs: 60\nverdict_cache_entries: 100000\n"
        f"request_secret_path: {d}/secret\n")
    (d / "scan.sh").write_text(f"#!/bin/sh\nexec clamdscan --config-file={d}/clamdscan.conf --fdpass --no-summary --quiet \"$1\"\n")
    (d / "scan.sh").chmod(0o755)
    (d / "clamdscan.conf").write_text(f"LocalSocket {d}/clamd.sock\n")
    (d / "tmp").mkdir()
    (d / "ref.yaml").write_text(
        f"web: {{host: 127.0.0.1, port: {REF_PORT}}}\n"
        f"scan: {{script: {d}/scan.sh, temp_directory: {d}/tmp, removal_command: rm}}\n"
        "result_cache: {max_size: 100000, ttl: 1d, max_file_size: 100MB}\n"
        f"download: {{base_homeserver_url: 'http://127.0.0.1:{NGINX_PORT}'}}\n"
        f"crypto: {{request_secret_path: {d}/secret}}\n")
    procs = []
    try:
        procs.append(subprocess.Popen(["/usr/sbin/clamd", "--foreground", f"--config-file={d}/clamd.conf"],
                                      stdout=open(d / "clamd.log", "w"), stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(["/usr/sbin/nginx", "-c", f"{d}/nginx.conf", "-p", str(d)],
                                      stdout=open(d / "nginx.log", "w"), stderr=subprocess.STDOUT))
        wait_port(CLAMD_PORT)
        wait_port(NGINX_PORT)
        n_for = {"1k": 1000, "100k": 1000, "10m": 40} if not args.quick else {"1k": 100, "100k": 100, "10m": 5}
        reps = 1 if args.quick else args.reps
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        results = {"machine": {"cpus": os.cpu_count()}, "commit": commit, "reps": reps, "cells": [], "raw_clamd": [], "rss_kib": {}}
        scanners = {}
        for label, cmd, port in (
            ("ours", [args.ours, "--config", str(d / "ours.yaml"), "--threads", "1"], OURS_PORT),
            ("reference", [args.reference, "-m", "matrix_content_scanner.mcs", "-c", str(d / "ref.yaml")], REF_PORT),
        ):
            if args.only and args.only != label:
                continue
            p = subprocess.Popen(cmd, stdout=open(d / f"{label}.log", "w"), stderr=subprocess.STDOUT, cwd=d)
            procs.append(p)
            wait_port(port)
            scanners[label] = (p, f"http://127.0.0.1:{port}")
        # Side by side: every repetition measures raw clamd and each scanner back to back (their
        # order alternating), so drift of the shared machine hits all of them alike.
        for name, n in SIZES.items():
            for conc in (1, 8):
                raw, unc, cached = [], {k: [] for k in scanners}, {k: [] for k in scanners}
                for rep in range(reps):
                    raw.append(raw_clamd(d / "files" / name, n_for[name], conc))
                    for label in ordered(scanners, rep):
                        unc[label].append(load(scanners[label][1], conc, n, n_for[name],
                                               prefix=f"{name}-{label}-{conc}-{rep}"))
                for label in scanners:
                    load(scanners[label][1], 1, n, 1, same=f"{name}-{label}-{conc}-warm")
                for rep in range(reps):
                    for label in ordered(scanners, rep):
                        cached[label].append(load(scanners[label][1], conc, n, n_for[name],
                                                  same=f"{name}-{label}-{conc}-warm"))
                results["raw_clamd"].append({"size": name, "concurrency": conc, **medians(raw)})
                for label in scanners:
                    cell = {"scanner": label, "size": name, "concurrency": conc,
                            "uncached": medians(unc[label]), "cached": medians(cached[label])}
                    results["cells"].append(cell)
                    print(json.dumps(cell), flush=True)
        for label, (p, _) in scanners.items():
            results["rss_kib"][label] = hwm_kib(p.pid)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        if args.only:
            return
        print("\n| size | conc | ours uncached rps | ref uncached rps | x | ours cached rps | ref cached rps | x "
              "| ours p99 ms | ref p99 ms | ref/ours p99 | raw clamd rps | ours/raw | ref/raw |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name in SIZES:
            for conc in (1, 8):
                o = next(c for c in results["cells"] if c["scanner"] == "ours" and c["size"] == name and c["concurrency"] == conc)
                r = next(c for c in results["cells"] if c["scanner"] == "reference" and c["size"] == name and c["concurrency"] == conc)
                raw = next(c for c in results["raw_clamd"] if c["size"] == name and c["concurrency"] == conc)
                x = lambda a, b: round(a / b, 1) if b else float("inf")  # noqa: E731
                print(f"| {name} | {conc} | {o['uncached']['rps']} | {r['uncached']['rps']} | {x(o['uncached']['rps'], r['uncached']['rps'])} "
                      f"| {o['cached']['rps']} | {r['cached']['rps']} | {x(o['cached']['rps'], r['cached']['rps'])} "
                      f"| {o['uncached']['p99_ms']} | {r['uncached']['p99_ms']} | {x(r['uncached']['p99_ms'], o['uncached']['p99_ms'])} "
                      f"| {raw['rps']} | {o['uncached']['rps'] / raw['rps']:.0%} | {r['uncached']['rps'] / raw['rps']:.0%} |")
        print(f"\npeak RSS KiB: {results['rss_kib']}")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
