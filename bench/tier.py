#!/usr/bin/env python3
"""Issue 23's benchmarks with `mxstack loadtest`, side by side in one run on this machine.

Stacks, one at a time, each started fresh by `mxstack up` at the 100-CCU tier:
  workers       the tier's worker groups, one process each (--replicas 1), default features
                (li, antivirus, calls, monitoring)
  single        one Synapse process (--replicas 0), default features
  workers-bare  the worker topology with --features "" (no LI replication or triggers, no
                antivirus): the optional features' cost on the main path
  single-nopresence, workers-nopresence
                single and workers with `synapse.presence: false`: presence's cost

On each: `--repeats` runs at the tier's peak (100 CCU, seed profile: 400 messages/min, 20
uploads/hour, typing and receipts), then (workers and single) `--stress-repeats` runs with room
activity exponent 1 (the all-hands room as busy per member as a direct chat) and a ramp for the
highest sustained rate, then (workers) `--spikes` runs of 10x the peak for `--spike-minutes`.
`--tier-rate` runs the `--repeats` at another rate (one the stacks sustain, to compare p99 away
from saturation); `--spike-base` runs the minute before and after each spike at another rate
(one the stack sustains, so that recovery can be judged), the spike itself still at 10x the peak.
`--floor-repeats` adds runs that split the tier's p99 into its parts: the fan-out of one message
to a 100-member room on an idle server, and the tier's rate in direct rooms only.

Run: .venv/bin/python bench/tier.py --mxstack /var/cache/mxstack/target/debug/mxstack
Results: bench/results/tier.json (every loadtest result in full) and a summary table; see
docs/BENCHMARKS.md.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml  # the project's venv has it (scripts/setup.sh)

STACKS = {
    "workers": {"replicas": "1", "features": None},
    "single": {"replicas": "0", "features": None},
    "workers-bare": {"replicas": "1", "features": ""},
    # Presence's cost: the same stacks with `synapse.presence: false`.
    "single-nopresence": {"replicas": "0", "features": None, "synapse": {"presence": False}},
    "workers-nopresence": {"replicas": "1", "features": None, "synapse": {"presence": False}},
}


FLOOR_PROFILES = {
    "fanout": "messages_per_min_per_ccu: 0.06\nuploads_per_hour_per_ccu: 0\ntyping_per_min_per_ccu: 0\n"
              "receipts_per_min_per_ccu: 0\nrooms_per_ccu: 0.01\narrival: fixed\n"
              "room_mix: [{share: 1.0, min: 100, max: 100}]\n",
    "direct": "room_mix: [{share: 1.0, min: 2, max: 2}]\nrooms_per_ccu: 0.5\n",
}


def mx(binary, *args, timeout=900, check=True):
    r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit(f"mxstack {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def cpu_busy(seconds=5.0):
    """The machine's busy share of all cores over `seconds` (/proc/stat)."""
    def sample():
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(f), f[3] + f[4]  # total, idle + iowait
    t1, i1 = sample()
    time.sleep(seconds)
    t2, i2 = sample()
    return 1 - (i2 - i1) / max(1, t2 - t1)


def quiesce(limit=180, busy=0.25):
    """Waits until the machine is idle (under `busy` for 5 s), at most `limit` s: work a run
    leaves behind (the LI replica applying the previous run's purges, Synapse's background
    updates) otherwise lands in the next run. Returns the seconds waited."""
    t0 = time.monotonic()
    while cpu_busy() > busy and time.monotonic() - t0 < limit:
        pass
    return round(time.monotonic() - t0, 1)


# The seed profile's peak at 100 CCU (4 messages/min per user, `mxstack loadtest --help`).
TIER_PEAK_PER_MIN = 400
SEED = None  # --seed: every run the same load (members, arrivals, picks)
HZ = os.sysconf("SC_CLK_TCK")


def cpu_ticks():
    """{pid: (ppid, utime + stime)} of every process, and the machine's busy ticks."""
    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            procs[int(d.name)] = (int(f[1]), int(f[11]) + int(f[12]))
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return procs, sum(f) - f[3] - f[4]


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()[:80].decode(errors="replace")
    except OSError:
        return ""


def stack_names(binary, config):
    status = json.loads(mx(binary, "status", "--config", config, "--json").stdout)
    return {p["pid"]: p["name"] for p in status["processes"] if p.get("pid")}


def stack_cpu(binary, config, before=None, names=None):
    """CPU seconds per stack process (its children, such as PostgreSQL's backends, counted
    with it) since `before` (a previous call's raw figures); "other" is the rest of the machine
    (the load generator, the kernel, anything else)."""
    names = names or stack_names(binary, config)
    procs, busy = cpu_ticks()
    raw = {}
    for pid, (ppid, ticks) in procs.items():
        owner, hops = pid, 0
        while owner not in names and owner in procs and hops < 8:
            owner, hops = procs[owner][0], hops + 1
        key = names.get(owner, "other")
        # PostgreSQL's own work apart from its clients': logical decoding for the LI
        # subscription (walsender), autovacuum and WAL archiving (barman-cloud-wal-archive).
        if key.startswith("postgres") and owner != pid:
            cmd = cmdline(pid)
            key = next((f"{key}:{role}" for role in ("walsender", "autovacuum", "barman") if role in cmd), key)
        raw[key] = raw.get(key, 0) + ticks
    raw["machine"] = busy
    if before is None:
        return raw
    out = {k: (v - before.get(k, 0)) / HZ for k, v in raw.items()}
    out["other"] = out["machine"] - sum(v for k, v in out.items() if k not in ("machine", "other"))
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


class Timeline(threading.Thread):
    """Once a second during a loadtest: the machine's busy cores and the stack processes using
    the most, so that a slow phase can be laid against what ran then (the totals above cannot
    say when). Rows: [seconds since the start, busy cores, {process: cores}]."""

    def __init__(self, binary, config, names):
        super().__init__(daemon=True)
        self.names = names
        self.rows, self.done = [], threading.Event()
        self.binary, self.config = binary, config

    def run(self):
        t0 = prev = time.monotonic()
        last = stack_cpu(self.binary, self.config, names=self.names)
        while not self.done.wait(1.0):
            now = time.monotonic()
            raw = stack_cpu(self.binary, self.config, names=self.names)
            dt = max(now - prev, 1e-3)
            cores = {k: (v - last.get(k, 0)) / HZ / dt for k, v in raw.items() if k != "machine"}
            top = {k: round(v, 2) for k, v in sorted(cores.items(), key=lambda kv: -kv[1])[:6] if v >= 0.05}
            self.rows.append([round(now - t0, 1), round((raw["machine"] - last["machine"]) / HZ / dt, 2), top])
            last, prev = raw, now


def loadtest(binary, url, config, *extra, timeout=3600):
    """One loadtest; its JSON result (exit 0, 1 and 3 all carry one)."""
    waited = quiesce()
    t0 = time.monotonic()
    seed = ["--seed", str(SEED)] if SEED is not None else []
    names = stack_names(binary, config)
    cpu0 = stack_cpu(binary, config, names=names)
    timeline = Timeline(binary, config, names)
    timeline.start()
    try:
        r = mx(binary, "loadtest", "--url", url, "--config", config, "--ccu", "100", "--json", *seed, *extra,
               timeout=timeout, check=False)
    finally:
        timeline.done.set()
        timeline.join()
    if r.returncode not in (0, 1, 3):
        raise SystemExit(f"loadtest {' '.join(extra)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout)
    # The whole run's CPU (setup, load, cleanup), per stack process: where a feature's cost goes.
    res["cpu_s_by_process"] = stack_cpu(binary, config, cpu0)
    res["wall_s"] = round(time.monotonic() - t0, 1)
    res["quiesce_s"] = waited
    res["timeline"] = timeline.rows
    return res


def line(tag, res):
    d = res["delivery_latency_ms"]
    print(f"  {tag:16} {res['verdict']:17} acked {res['goodput']['messages_per_min']:7}/min "
          f"delivery p50 {d['p50']} p99 {d['p99']} max {d['max']} ms, errors {res['error_rate']:.4f}, "
          f"lost {res['acknowledged_but_never_delivered']}", flush=True)


def bench_stack(args, name, base_port, save):
    spec = STACKS[name]
    base = Path(tempfile.mkdtemp(prefix=f"mxstack-tier-{name}-", dir="/var/tmp"))
    base.chmod(0o755)
    cfg = str(base / "mxstack.yaml")
    init = ["init", "--domain", "tier.mxstack.test", "--scale", "100", "--dir", str(base)]
    if spec["features"] is not None:
        init += ["--features", spec["features"]]
    mx(args.mxstack, *init)
    if spec.get("synapse"):
        c = yaml.safe_load(Path(cfg).read_text())
        c.setdefault("synapse", {}).update(spec["synapse"])
        Path(cfg).write_text(yaml.safe_dump(c, sort_keys=False))
    mx(args.mxstack, "up", "--config", cfg, "--base-port", str(base_port), "--replicas", spec["replicas"], "--json")
    if args.synchrotrons > 1 and spec["replicas"] != "0":
        mx(args.mxstack, "scale", "--config", cfg, f"synchrotron={args.synchrotrons}")
    status = json.loads(mx(args.mxstack, "status", "--config", cfg, "--json").stdout)
    url = status["client_url"]
    out = {"stack": name, "synchrotrons": args.synchrotrons if spec["replicas"] != "0" else 0, "processes": [p["name"] for p in status["processes"]], "tier": [], "ramp": None,
           "spikes": []}
    save(out)
    print(f"== {name}: {len(out['processes'])} processes, {url}", flush=True)
    try:
        time.sleep(20)  # start-up work (background updates, first scans) out of the way
        for k in range(args.repeats):
            rate = ["--rate", f"{args.tier_rate:g}"] if args.tier_rate else []
            res = loadtest(args.mxstack, url, cfg, "--duration", f"{args.duration}s", *rate)
            out["tier"].append(res)
            save(out)
            line(f"tier r{k + 1}", res)
        for k in range(args.floor_repeats):
            # Where the tier's p99 comes from: one message every 10 s to a 100-member room and
            # nothing else (the fan-out alone: each member's sync is woken and answered), then
            # the tier's rate in direct rooms only (the load without the fan-out).
            for tag, text in FLOOR_PROFILES.items():
                prof = base / f"{tag}.yaml"
                prof.write_text(text)
                res = loadtest(args.mxstack, url, cfg, "--duration", f"{args.duration}s", "--profile", str(prof))
                out.setdefault(tag, []).append(res)
                save(out)
                line(f"{tag} r{k + 1}", res)
        if name != "workers-bare" and args.stress_repeats:
            # Stress profile: every member as active in the all-hands room as in a direct chat.
            prof = base / "stress-profile.yaml"
            prof.write_text("room_activity_exponent: 1\n")
            out["stress"] = []
            for k in range(args.stress_repeats):
                res = loadtest(args.mxstack, url, cfg, "--duration", f"{args.duration}s", "--profile", str(prof))
                out["stress"].append(res)
                save(out)
                line(f"stress r{k + 1}", res)
        if name != "workers-bare" and args.ramp_steps:
            # From below the tier's rate: a ramp stops at its first unsustained step.
            res = loadtest(args.mxstack, url, cfg, "--duration", f"{args.duration}s", "--ramp",
                           "--rate", str(args.ramp_start), "--ramp-factor", "1.25",
                           "--ramp-steps", str(args.ramp_steps))
            out["ramp"] = res
            save(out)
            print(f"  ramp: highest sustained {res['highest_sustained_per_min']}/min; steps "
                  + ", ".join(f"{s['target_per_min']}:{s['verdict']}(p99 {s['delivery_latency_ms']['p99']})"
                              for s in res["steps"]), flush=True)
        if name == "workers":
            for k in range(args.spikes):
                res = loadtest(args.mxstack, url, cfg, "--duration", f"{args.duration}s",
                               *spike_args(args, out["ramp"] and out["ramp"]["highest_sustained_per_min"]),
                               "--spike-duration", f"{args.spike_minutes}m")
                out["spikes"].append(res)
                save(out)
                print(f"  spike r{k + 1}: {res['verdict']} {json.dumps(res.get('spike'))} reasons {res['reasons']}",
                      flush=True)
    finally:
        mx(args.mxstack, "down", "--config", cfg, "--purge", check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)
    return out


def spike_args(args, sustained):
    """10x the tier's peak. With --spike-base, the phases before and after run at that rate
    instead of the peak (a rate the stack sustains, so that recovery can be judged where the
    peak itself is not sustained): the spike's rate stays 10x the peak. `auto`: 80% of the
    highest rate this stack's ramp sustained."""
    base = args.spike_base
    if base == "auto":
        if not sustained:
            raise SystemExit("--spike-base auto needs this stack's ramp (--ramp-steps) to sustain a rate")
        base = f"{0.8 * sustained:.1f}"
    if not base:
        return ["--spike", "10"]
    return ["--rate", base, "--spike", f"{10 * TIER_PEAK_PER_MIN / float(base):.4g}"]


def summary(results):
    med = lambda xs: round(statistics.median(xs), 1) if xs else None  # noqa: E731
    rows = {}
    for s in results["stacks"]:
        tier = s["tier"]
        rows[s["stack"]] = {
            "tier_p99_ms_median": med([r["delivery_latency_ms"]["p99"] for r in tier if r["delivery_latency_ms"]["p99"] is not None]),
            "tier_p50_ms_median": med([r["delivery_latency_ms"]["p50"] for r in tier if r["delivery_latency_ms"]["p50"] is not None]),
            "tier_p99_ms_runs": [r["delivery_latency_ms"]["p99"] for r in tier],
            "tier_verdicts": [r["verdict"] for r in tier],
            "lost": sum(r["acknowledged_but_never_delivered"] for r in tier),
            "stress_p99_ms_runs": [r["delivery_latency_ms"]["p99"] for r in s.get("stress", [])],
            "highest_sustained_per_min": s["ramp"]["highest_sustained_per_min"] if s["ramp"] else None,
            "spikes": [{"verdict": r["verdict"], **r["spike"]} for r in s["spikes"]],
        }
    w, b = rows.get("workers"), rows.get("workers-bare")
    if w and b and w["tier_p99_ms_median"] and b["tier_p99_ms_median"]:
        results["feature_overhead_p99"] = round(w["tier_p99_ms_median"] / b["tier_p99_ms_median"] - 1, 3)
    results["summary"] = rows
    print(json.dumps(rows, indent=2))
    if "feature_overhead_p99" in results:
        print(f"feature overhead on p99: {results['feature_overhead_p99'] * 100:.1f}%")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mxstack", required=True)
    ap.add_argument("--out", default="bench/results/tier.json")
    # The worker topology last: its spikes are the longest part, and the others are complete
    # if the run must be cut short.
    ap.add_argument("--stacks", default="single,workers-bare,workers")
    ap.add_argument("--seed", type=int, default=1,
                    help="loadtest --seed for every run, so that runs differ only by the server (-1: a random one each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tier-rate", type=float, default=None,
                    help="messages/min of the --repeats runs (default: the tier's peak); e.g. a rate "
                         "the stacks sustain, to compare p99 where it is not dominated by saturation")
    ap.add_argument("--duration", type=int, default=60, help="seconds per step")
    ap.add_argument("--ramp-steps", type=int, default=8)
    ap.add_argument("--ramp-start", type=int, default=150, help="messages/min of the ramp's first step")
    ap.add_argument("--stress-repeats", type=int, default=1,
                    help="runs with room_activity_exponent 1 (workers and single)")
    ap.add_argument("--floor-repeats", type=int, default=0,
                    help="runs of the fan-out floor (one 100-member room, a message every 10 s) "
                         "and of the tier's rate in direct rooms only")
    ap.add_argument("--spikes", type=int, default=3)
    ap.add_argument("--spike-minutes", type=int, default=5)
    ap.add_argument("--spike-base", default=None,
                    help="messages/min before and after each spike (default: the tier's peak); "
                         "`auto`: 80%% of the highest rate the stack's ramp sustained")
    ap.add_argument("--base-port", type=int, default=28000)
    ap.add_argument("--synchrotrons", type=int, default=1,
                    help="synchrotron processes of the worker stacks (mxstack scale after up)")
    args = ap.parse_args()
    global SEED
    SEED = None if args.seed < 0 else args.seed
    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip(),
               "args": vars(args), "stacks": []}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(args.stacks.split(",")):
        def save(stack_out, k=k):
            # Partial results survive an interrupted run: written after every loadtest.
            results["stacks"][k:] = [stack_out]
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        bench_stack(args, name, args.base_port + 100 * k, save)
    summary(results)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
