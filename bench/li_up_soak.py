#!/usr/bin/env python3
"""Soak of `mxstack up` with lawful intercept (issue 15): N consecutive fresh stacks.

Each run, in a new temporary directory:

1. `mxstack init --domain probe-li.test --scale 100 --features li,antivirus` (the 100-CCU tier);
2. `mxstack up` on its own base port block, timed from the command's start until it returns
   ready (it waits for every process, li-working-copy included, which needs the replica's initial
   copy finished);
3. `mxstack li status --json`: must be healthy; if it is not at once, it is polled for up to 60 s
   and the time until healthy is recorded (a run that never gets healthy fails);
4. `mxstack down --purge`, and the directory removed.

A run fails on any error of `up` (its message and the tails of li-sync's and the LI PostgreSQL's
logs are kept in the record). The soak goes on after a failure, so the record counts them all.

Run (about 1 minute per stack; nothing else should run):

    export CARGO_TARGET_DIR=/var/cache/mxstack/target
    cargo build -p mxstack
    .venv/bin/python bench/li_up_soak.py --mxstack $CARGO_TARGET_DIR/debug/mxstack \
        --runs 20 --out bench/results/li_up_soak.json

Results: printed, and written as JSON (--out). See docs/BENCHMARKS.md.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-n:]
    except OSError:
        return []


def one(mx, i, base_port, keep_dir):
    d = tempfile.mkdtemp(prefix=f"mxstack-soak-{i}-", dir="/var/tmp")
    os.chmod(d, 0o755)  # PostgreSQL runs as postgres and must reach the state directory
    cfg = os.path.join(d, "mxstack.yaml")
    rec = {"run": i, "ok": False}
    try:
        r = run([mx, "init", "--domain", "probe-li.test", "--scale", "100",
                 "--features", "li,antivirus", "--dir", d, "--json"])
        if r.returncode != 0:
            rec["error"] = f"init: {r.stderr.strip()}"
            return rec
        t0 = time.monotonic()
        r = run([mx, "up", "--config", cfg, "--base-port", str(base_port), "--json"], timeout=900)
        rec["up_seconds"] = round(time.monotonic() - t0, 1)
        if r.returncode != 0:
            logs = os.path.join(d, ".mxstack-state", "logs")
            rec["error"] = r.stderr.strip()[-2000:]
            rec["li_sync_log"] = tail(os.path.join(logs, "li-sync.log"))
            rec["postgres_li_log"] = tail(os.path.join(logs, "postgres-li.log"))
            return rec
        t1 = time.monotonic()
        while True:
            s = run([mx, "li", "status", "--config", cfg, "--json"])
            try:
                st = json.loads(s.stdout)
            except ValueError:
                st = {"healthy": False, "problems": [s.stderr.strip()]}
            if "problems_at_ready" not in rec:
                rec["problems_at_ready"] = st.get("problems", [])
            if st.get("healthy"):
                rec["healthy_after_ready_seconds"] = round(time.monotonic() - t1, 1)
                rec["ok"] = True
                break
            if time.monotonic() - t1 > 60:
                rec["error"] = f"li status not healthy 60 s after ready: {st.get('problems')}"
                break
            time.sleep(1)
        rec["tables_syncing"] = len(st.get("tables_syncing", []))
        rec["schema_upgrades"] = st.get("schema_upgrades")
        return rec
    finally:
        run([mx, "down", "--config", cfg, "--purge"], timeout=300)
        if not keep_dir:
            shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mxstack", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--base-port", type=int, default=22000,
                    help="the stack's port block; keep it and its +10013..10015 below 32768 (the ephemeral range)")
    ap.add_argument("--out")
    ap.add_argument("--keep-failed", action="store_true", help="keep a failed run's directory")
    a = ap.parse_args()
    records = []
    for i in range(1, a.runs + 1):
        rec = one(a.mxstack, i, a.base_port, a.keep_failed)
        records.append(rec)
        print(json.dumps(rec), flush=True)
    ups = [r["up_seconds"] for r in records if r["ok"]]
    summary = {
        "runs": len(records),
        "ok": sum(r["ok"] for r in records),
        "failed": [r["run"] for r in records if not r["ok"]],
        "up_seconds_median": statistics.median(ups) if ups else None,
        "up_seconds_max": max(ups) if ups else None,
        "up_seconds_min": min(ups) if ups else None,
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = {"summary": summary, "runs": records}
    print(json.dumps(summary, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    sys.exit(0 if summary["ok"] == summary["runs"] else 1)


if __name__ == "__main__":
    main()
