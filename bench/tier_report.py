#!/usr/bin/env python3
"""Markdown tables from bench/tier.py's result files (docs/BENCHMARKS.md, issue 23).

Run: python3 bench/tier_report.py bench/results/tier.json bench/results/tier-single*.json
"""
import json
import statistics
import sys


def ms(x):
    return "-" if x is None else f"{x:,.0f}"


def main(paths):
    stacks = {}
    for p in paths:
        for s in json.load(open(p))["stacks"]:
            cur = stacks.setdefault(s["stack"], {"tier": [], "stress": [], "ramp": None, "spikes": [],
                                                 "fanout": [], "direct": []})
            cur["tier"] += s.get("tier", [])
            cur["fanout"] += s.get("fanout", [])
            cur["direct"] += s.get("direct", [])
            cur["stress"] += s.get("stress", [])
            cur["spikes"] += s.get("spikes", [])
            cur["ramp"] = s.get("ramp") or cur["ramp"]
    print("| stack | run | verdict | acknowledged/min | delivery p50 / p95 / p99 / max ms | send p99 ms | errors | lost |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in stacks.items():
        for tag, runs in (("tier", s["tier"]), ("stress (exponent 1)", s["stress"]),
                          ("fan-out floor", s["fanout"]), ("direct rooms only", s["direct"])):
            for k, r in enumerate(runs):
                d = r["delivery_latency_ms"]
                print(f"| {name} | {tag} {k + 1} | {r['verdict']} | {r['goodput']['messages_per_min']} | "
                      f"{ms(d['p50'])} / {ms(d['p95'])} / {ms(d['p99'])} / {ms(d['max'])} | "
                      f"{ms(r['send_latency_ms']['p99'])} | {r['error_rate'] * 100:.2f}% | "
                      f"{r['acknowledged_but_never_delivered']} |")
    print()
    rates = {r["inputs"]["rates"]["messages_per_min"] for s in stacks.values() for r in s["tier"]}
    at = f"{rates.pop():g} messages/min" if len(rates) == 1 else "the tier runs' rates"
    print(f"| stack | median p99 at {at} (ms) | runs |")
    print("|---|---|---|")
    med = {}
    for name, s in stacks.items():
        p99 = [r["delivery_latency_ms"]["p99"] for r in s["tier"] if r["delivery_latency_ms"]["p99"] is not None]
        if p99:
            med[name] = statistics.median(p99)
            print(f"| {name} | {med[name]:,.0f} | {len(p99)} |")
    if "workers" in med and "workers-bare" in med:
        print(f"\nfeature overhead on the median p99: {(med['workers'] / med['workers-bare'] - 1) * 100:+.1f}%")
    cpu_table(stacks)
    for name, s in stacks.items():
        r = s["ramp"]
        if r:
            steps = ", ".join(f"{st['target_per_min']:.0f}/min: {st['verdict']} (p99 {ms(st['delivery_latency_ms']['p99'])})"
                              for st in r["steps"])
            print(f"\nramp {name}: highest sustained {r['highest_sustained_per_min']}; {steps}")
    for name, s in stacks.items():
        if s["spikes"]:
            print("\n| spike run | verdict | before p99 ms | spike goodput/min | refused | refused within 1 s | "
                  "refusal p99 ms | after p99 ms | recovery s | lost |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for k, r in enumerate(s["spikes"]):
                sp = r["spike"]
                share = "-" if sp["refused_under_1s"] is None else f"{sp['refused_under_1s'] * 100:.1f}%"
                print(f"| {name} {k + 1} | {r['verdict']} | {ms(r['steps'][0]['delivery_latency_ms']['p99'])} | "
                      f"{sp['goodput_per_min']} | {sp['refused']} | {share} | {ms(sp['refused_send_latency_ms']['p99'])} | "
                      f"{ms(r['steps'][2]['delivery_latency_ms']['p99'])} | {sp['recovery_s']} | "
                      f"{sp['acknowledged_but_never_delivered']} |")


# Where a run's CPU goes: stack processes grouped by what they are part of.
GROUPS = [("Synapse", ("synapse-main", "synapse-synchrotron", "synapse-generic", "synapse-media",
                       "synapse-event-persister", "synapse-pusher", "synapse-background", "synapse-stream-writer")),
          ("PostgreSQL (main)", ("postgres",)),
          ("LI: replica, li-sync, LI Synapse, console, vault, main's walsender for it",
           ("postgres-li", "li-sync", "synapse-li", "li-console", "key-vault", "postgres:walsender")),
          ("antivirus: clamd, content scanner", ("clamd", "content-scanner")),
          ("monitoring: Prometheus, exporters, Alertmanager", ("prometheus", "alertmanager", "postgres-exporter",
                                                             "postgres-li-exporter", "valkey-exporter")),
          ("router, Valkey, SeaweedFS, calls", ("router", "valkey", "sentinel", "seaweedfs", "coturn", "rtc-auth")),
          ("outside the stack (the load generator, the kernel)", ("other",))]


def group_of(process):
    """The group of the longest matching name (postgres-li is LI's, not main PostgreSQL's)."""
    best = max(((len(p), label) for label, prefixes in GROUPS for p in prefixes
                if process == p or process.startswith((p + "-", p + ":"))), default=(0, "other stack processes"))
    return best[1]


def cpu_table(stacks):
    """Median CPU seconds per group over each stack's tier runs (whole runs: setup, load, cleanup)."""
    cols = {n: [r["cpu_s_by_process"] for r in s["tier"] if r.get("cpu_s_by_process")] for n, s in stacks.items()}
    cols = {n: runs for n, runs in cols.items() if runs}
    if not cols:
        return
    def med(runs, label):
        return statistics.median(sum(v for k, v in r.items() if k != "machine" and group_of(k) == label) for r in runs)
    labels = [g[0] for g in GROUPS] + ["other stack processes"]
    print("\nCPU seconds per tier run (median; the whole run: setup, 60 s of load, cleanup)\n")
    print("| | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for label in labels:
        vals = [med(runs, label) for runs in cols.values()]
        if any(v >= 0.05 for v in vals):
            print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    print("| **machine** | " + " | ".join(f"{statistics.median(r['machine'] for r in runs):.1f}" for runs in cols.values()) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
