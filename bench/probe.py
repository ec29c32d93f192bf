#!/usr/bin/env python3
"""Snapshot a local stack's Synapse figures from its Prometheus, and compare two snapshots.

  probe.py snap PROM_URL LABEL FILE     append one snapshot (counters and gauges per pod) to FILE
  probe.py report FILE                  per pair of snapshots (before, after): what each pod spent

Used by bench/tier_decline.sh to see what grows from run to run (GC, caches, CPU per sync).
"""
import json
import sys
import time
import urllib.parse
import urllib.request

SYNC = 'servlet="SyncRestServlet"'
QUERIES = {
    "cpu_s": "process_cpu_seconds_total",
    "rss_mb": "process_resident_memory_bytes / 1e6",
    "gc_s": "sum by (pod, gen) (python_gc_time_sum)",
    "gc_n": "sum by (pod, gen) (python_gc_time_count)",
    "cache_entries": "sum by (pod) (synapse_util_caches_cache_size)",
    "synchrotron_caches": 'synapse_util_caches_cache_size{pod="synapse-synchrotron-0"} > 100',
    "notifier_users": "synapse_notifier_users",
    "sync_n": f"sum by (pod) (synapse_http_server_response_count_total{{{SYNC}}})",
    "sync_utime_s": f"sum by (pod) (synapse_http_server_response_ru_utime_seconds_total{{{SYNC}}})",
    "sync_db_s": f"sum by (pod) (synapse_http_server_response_db_txn_duration_seconds_total{{{SYNC}}})",
    "sync_sched_s": f"sum by (pod) (synapse_http_server_response_db_sched_duration_seconds_total{{{SYNC}}})",
    "sync_time_s": f"sum by (pod) (synapse_http_server_response_time_seconds_sum{{{SYNC}}})",
}


def query(prom, expr):
    url = f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        out = {}
        for s in json.load(r)["data"]["result"]:
            m = s["metric"]
            key = m.get("pod", m.get("job", "?"))
            if "gen" in m:
                key += f"/gen{m['gen']}"
            if "name" in m:
                key += f"/{m['name']}"
            out[key] = float(s["value"][1])
        return out


def snap(prom, label, path):
    time.sleep(6)  # one scrape after the change
    row = {"label": label, "t": time.time(), **{k: query(prom, q) for k, q in QUERIES.items()}}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def report(path):
    rows = [json.loads(line) for line in open(path)]
    for a, b in zip(rows[0::2], rows[1::2]):
        print(f"== {b['label']} ({b['t'] - a['t']:.0f} s)")
        d = lambda k, pod: b[k].get(pod, 0) - a[k].get(pod, 0)  # noqa: E731
        pods = sorted(p for p in b["cpu_s"] if p.startswith("synapse"))
        for pod in pods:
            n = d("sync_n", pod)
            per = (lambda k: f"{1000 * d(k, pod) / n:.1f}") if n else (lambda k: "-")
            gc = " ".join(f"g{g}:{d('gc_s', f'{pod}/gen{g}'):.2f}s/{d('gc_n', f'{pod}/gen{g}'):.0f}" for g in "012")
            print(
                f"  {pod:26} cpu {d('cpu_s', pod):6.1f}s rss {b['rss_mb'].get(pod, 0):5.0f}MB "
                f"caches {b['cache_entries'].get(pod, 0):7.0f} "
                f"gc[{gc}] syncs {n:5.0f} ms/sync cpu {per('sync_utime_s')} db {per('sync_db_s')} "
                f"sched {per('sync_sched_s')} wall {per('sync_time_s')} users {b['notifier_users'].get(pod, 0):.0f}"
            )
        big = sorted(b["synchrotron_caches"].items(), key=lambda kv: -kv[1])[:8]
        print("  synchrotron's largest caches:", ", ".join(f"{k.split('/', 1)[1]} {v:.0f}" for k, v in big))


if __name__ == "__main__":
    if sys.argv[1] == "snap":
        snap(*sys.argv[2:5])
    else:
        report(sys.argv[2])
