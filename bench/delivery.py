#!/usr/bin/env python3
"""Delivery-latency benchmark for the local stack (issue 3), workers against a single process.

For each mode it starts a fresh stack with `mxstack up` (workers: the tier's worker types, one
process each; single: `--replicas 0`, one Synapse process, same PostgreSQL/Valkey/S3/router),
creates 100 users in 10 rooms of 10, keeps a /sync long-poll open for every user, and sends
messages at a fixed aggregate rate from random users. Latency is measured from the moment a
send returns 200 to the moment each other member's /sync delivers the event.

Between runs the harness waits until every message is delivered (at most 60 s) and 5 s more, so
no run inherits the previous one's backlog. Order: the 400/min runs, then the ramp (stopping at the
first rate that is not sustained), then the 4000/min overload runs last.

Run: .venv/bin/python bench/delivery.py --mxstack /var/cache/mxstack/target/debug/mxstack
Results: printed as a table and written as JSON (--out). See docs/BENCHMARKS.md.
"""
import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

USERS, ROOM_SIZE = 100, 10
SYNC_FILTER = json.dumps({
    "room": {"timeline": {"limit": 100}, "state": {"lazy_load_members": True},
             "ephemeral": {"types": []}, "account_data": {"types": []}},
    "presence": {"types": []}, "account_data": {"types": []},
})


def mx(binary, *args, timeout=900):
    r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"mxstack {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


class Load:
    def __init__(self, url, users, rooms):
        self.url, self.users, self.rooms = url, users, rooms
        self.sent = {}       # body -> (room, sender index, time the send returned)
        self.received = {}   # body -> {user index: time its sync delivered it}
        self.errors = 0
        self.stop = False

    async def sync_loop(self, session, i):
        u = self.users[i]
        headers = {"Authorization": f"Bearer {u['access_token']}"}
        since = u.get("since")
        while not self.stop:
            params = {"timeout": "10000", "filter": SYNC_FILTER}
            if since:
                params["since"] = since
            try:
                async with session.get(f"{self.url}/_matrix/client/v3/sync", params=params, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=40)) as r:
                    if r.status != 200:
                        self.errors += 1
                        await asyncio.sleep(0.5)
                        continue
                    body = await r.json()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                self.errors += 1
                await asyncio.sleep(0.5)
                continue
            now = time.monotonic()
            since = body.get("next_batch", since)
            u["since"] = since
            for room in body.get("rooms", {}).get("join", {}).values():
                for ev in room.get("timeline", {}).get("events", []):
                    b = ev.get("content", {}).get("body")
                    if b and b.startswith("bench "):
                        self.received.setdefault(b, {}).setdefault(i, now)

    async def send(self, session, i, body):
        u = self.users[i]
        room = self.rooms[i // ROOM_SIZE]
        txn = f"{body.replace(' ', '-')}"
        try:
            async with session.put(f"{self.url}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}",
                                   json={"msgtype": "m.text", "body": body},
                                   headers={"Authorization": f"Bearer {u['access_token']}"},
                                   timeout=aiohttp.ClientTimeout(total=30)) as r:
                await r.read()
                if r.status == 200:
                    self.sent[body] = (i // ROOM_SIZE, i, time.monotonic())
                else:
                    self.errors += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            self.errors += 1

    async def run_rate(self, session, tag, per_minute, seconds):
        """Sends at `per_minute` for `seconds`, then waits for delivery; returns the figures."""
        interval = 60.0 / per_minute
        start = time.monotonic()
        tasks, n = [], 0
        while time.monotonic() - start < seconds:
            due = start + n * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = f"bench {tag} {n}"
            tasks.append(asyncio.ensure_future(self.send(session, random.randrange(len(self.users)), body)))
            n += 1
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
        # Let the last messages reach every member (bounded): the next run starts from an idle
        # system, not from this one's backlog.
        deadline = time.monotonic() + 60
        mine = [b for b in self.sent if b.startswith(f"bench {tag} ")]
        while time.monotonic() < deadline:
            if all(len(self.received.get(b, {})) >= ROOM_SIZE - 1 for b in mine):
                break
            await asyncio.sleep(0.2)
        lat, missing = [], 0
        for b in mine:
            room, sender, t_sent = self.sent[b]
            got = self.received.get(b, {})
            for member in range(room * ROOM_SIZE, room * ROOM_SIZE + ROOM_SIZE):
                if member == sender:
                    continue
                if member in got:
                    # A sync may deliver before the sender's response arrives: that is 0 delay.
                    lat.append(max(0.0, got[member] - t_sent))
                else:
                    missing += 1
        return {
            "target_per_min": per_minute,
            "achieved_per_min": round(len(mine) * 60 / elapsed, 1),
            "attempted": n,
            "sent_ok": len(mine),
            "deliveries": len(lat),
            "undelivered": missing,
            "p50_ms": round(percentile(lat, 50) * 1000, 1),
            "p99_ms": round(percentile(lat, 99) * 1000, 1),
        }


def sustained(r):
    """A rate is sustained when the stack keeps up with it (95% of the target sent), delivers
    everything, and its p99 stays under 1 s."""
    return (r["p99_ms"] < 1000 and r["undelivered"] == 0
            and r["achieved_per_min"] >= 0.95 * r["target_per_min"])


async def prepare(binary, cfg, url, run_id):
    def add(name, admin=False):
        return json.loads(mx(binary, "user", "add", "--config", cfg, name, *(["--admin"] if admin else []), "--json"))

    admin = add(f"bench-admin-{run_id}", admin=True)
    loop = asyncio.get_running_loop()
    users = []
    # Registration hashes a password (bcrypt) on main: a few in parallel.
    for chunk in range(0, USERS, 4):
        users += await asyncio.gather(*[loop.run_in_executor(None, add, f"bench-{run_id}-{k}")
                                        for k in range(chunk, min(chunk + 4, USERS))])
    async with aiohttp.ClientSession() as s:
        hdr = {"Authorization": f"Bearer {admin['access_token']}"}
        for u in users:
            async with s.post(f"{url}/_synapse/admin/v1/users/{u['user_id']}/override_ratelimit",
                              json={"messages_per_second": 0, "burst_count": 0}, headers=hdr) as r:
                assert r.status == 200, await r.text()
        rooms = []
        for g in range(USERS // ROOM_SIZE):
            members = users[g * ROOM_SIZE:(g + 1) * ROOM_SIZE]
            async with s.post(f"{url}/_matrix/client/v3/createRoom",
                              json={"preset": "private_chat", "invite": [m["user_id"] for m in members[1:]]},
                              headers={"Authorization": f"Bearer {members[0]['access_token']}"}) as r:
                rid = (await r.json())["room_id"]
            rooms.append(rid)
            for m in members[1:]:
                async with s.post(f"{url}/_matrix/client/v3/join/{rid}",
                                  headers={"Authorization": f"Bearer {m['access_token']}"}) as r:
                    assert r.status == 200, await r.text()
    return users, rooms


async def bench_mode(binary, mode, base_port, plan):
    base = Path(tempfile.mkdtemp(prefix=f"mxstack-bench-{mode}-", dir="/var/tmp"))
    base.chmod(0o755)
    cfg = str(base / "mxstack.yaml")
    mx(binary, "init", "--domain", "bench.mxstack.test", "--scale", "100", "--features", "", "--dir", str(base))
    replicas = "0" if mode == "single" else "1"
    t0 = time.monotonic()
    up = json.loads(mx(binary, "up", "--config", cfg, "--base-port", str(base_port), "--replicas", replicas, "--json"))
    startup = time.monotonic() - t0
    status = json.loads(mx(binary, "status", "--config", cfg, "--json"))
    url = status["client_url"]
    synapse_procs = [p["name"] for p in status["processes"] if p["name"].startswith("synapse-")]
    out = {"mode": mode, "startup_s": round(startup, 1), "synapse_processes": synapse_procs, "runs": []}
    try:
        users, rooms = await prepare(binary, cfg, url, os.urandom(2).hex())
        load = Load(url, users, rooms)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s:
            syncs = [asyncio.ensure_future(load.sync_loop(s, i)) for i in range(len(users))]
            await asyncio.sleep(5)  # every user has an open long-poll
            ramp_failed = False
            for tag, rate, seconds in plan:
                if tag.startswith("ramp-") and ramp_failed:
                    continue  # a higher rate cannot do better
                r = await load.run_rate(s, tag, rate, seconds)
                await asyncio.sleep(5)
                if tag.startswith("ramp-") and not sustained(r):
                    ramp_failed = True
                r["tag"] = tag
                out["runs"].append(r)
                print(f"  {mode:7} {tag:14} target {rate:6}/min achieved {r['achieved_per_min']:8}/min "
                      f"p50 {r['p50_ms']:8} ms p99 {r['p99_ms']:8} ms undelivered {r['undelivered']}",
                      flush=True)
            load.stop = True
            await asyncio.wait(syncs, timeout=15)
            for t in syncs:
                t.cancel()
        out["client_errors"] = load.errors
    finally:
        mx(binary, "down", "--config", cfg, "--purge")
        shutil.rmtree(base, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mxstack", required=True)
    ap.add_argument("--out", default="bench/results/delivery.json")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--ramp", default="500,600,800,1000,1500,2000,3000",
                    help="rates (messages/min) tried to find the highest with p99 under 1 s")
    ap.add_argument("--modes", default="workers,single")
    args = ap.parse_args()
    # Overload goes last: a run past saturation leaves caches and queues behind that would
    # otherwise colour the lighter runs after it.
    plan = [(f"peak-400-r{rep}", 400, args.seconds) for rep in range(args.repeats)]
    plan += [(f"ramp-{rate}", rate, args.seconds) for rate in [int(x) for x in args.ramp.split(",") if x]]
    plan += [(f"10x-4000-r{rep}", 4000, args.seconds) for rep in range(args.repeats)]
    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "users": USERS, "room_size": ROOM_SIZE, "seconds_per_run": args.seconds, "modes": []}
    for k, mode in enumerate(args.modes.split(",")):
        print(f"== {mode}", flush=True)
        results["modes"].append(asyncio.run(bench_mode(args.mxstack, mode, 21000 + 100 * k, plan)))
    # Summary: medians over the repeats, and the highest ramp rate with p99 under 1 s.
    print("\n| mode | load | achieved msg/min | p50 ms | p99 ms | undelivered |\n|---|---|---|---|---|---|")
    for m in results["modes"]:
        m["summary"] = {}
        for label, prefix in (("400/min (100-CCU peak)", "peak-400-"), ("4000/min (10x)", "10x-4000-")):
            rs = [r for r in m["runs"] if r["tag"].startswith(prefix)]
            s = {k: statistics.median(r[k] for r in rs) for k in ("achieved_per_min", "p50_ms", "p99_ms")}
            s["undelivered"] = sum(r["undelivered"] for r in rs)
            m["summary"][label] = s
            print(f"| {m['mode']} | {label} | {s['achieved_per_min']} | {s['p50_ms']} | {s['p99_ms']} | {s['undelivered']} |")
        # Every run counts (the 400/min runs are points on the curve too).
        ok = [r for r in m["runs"] if sustained(r)]
        m["summary"]["max_rate_p99_under_1s"] = max((r["achieved_per_min"] for r in ok), default=0)
        print(f"| {m['mode']} | highest sustained rate with p99 < 1 s | {m['summary']['max_rate_p99_under_1s']} | | | |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
