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
    print("| stack | median p99 at the tier's peak (ms) | runs |")
    print("|---|---|---|")
    med = {}
    for name, s in stacks.items():
        p99 = [r["delivery_latency_ms"]["p99"] for r in s["tier"] if r["delivery_latency_ms"]["p99"] is not None]
        if p99:
            med[name] = statistics.median(p99)
            print(f"| {name} | {med[name]:,.0f} | {len(p99)} |")
    if "workers" in med and "workers-bare" in med:
        print(f"\nfeature overhead on the median p99: {(med['workers'] / med['workers-bare'] - 1) * 100:+.0f}%")
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


if __name__ == "__main__":
    main(sys.argv[1:])
