#!/usr/bin/env python3
"""Lawful-intercept replication-lag benchmark (issue 5): logical mode against dump mode.

What it does, in one invocation:

1. Starts a real local stack with `mxstack init --scale 100 --features li` and `mxstack up`: main
   PostgreSQL with Synapse's real schema, prepared for logical replication by li-prepare-main, the
   LI PostgreSQL cluster and the li-sync daemon (logical mode, the default). Synapse keeps running.
2. Writes Synapse-shaped message events straight into main's PostgreSQL (Synapse cannot sustain
   the rate on two cores), open-loop at a fixed rate (default 67/s): per message one transaction
   as the `synapse` role inserting into `events` (stream_ordering from Synapse's own
   `events_stream_seq`), `event_json` (~1 KB event JSON), `event_edges`, `event_auth` (3 rows),
   `event_search` (to_tsvector) and `stream_ordering_to_exterm`, and moving the room's forward
   extremity (DELETE + INSERT in `event_forward_extremities`, which li-sync's history trigger
   records on the replica as Synapse's own writes would). Rooms are bench-only (`!lilag...`);
   Synapse never sees them. Four writer connections, each owning its rooms.
3. Measures the lag "committed on main until readable on the replica" with one clock (same
   machine): the commit time is the client's time when COMMIT returned on main; the apply time
   is recorded on the replica by a bench-only deferred constraint trigger on `public.event_json`
   (ENABLE ALWAYS, so the apply worker fires it; deferred, so it fires at the apply
   transaction's commit) writing clock_timestamp() into `li_lag_bench.applied`. A separate
   poller process reads that table every 10 ms as an independent reader: its "seen" time is an
   upper bound of when the row became readable (cross-check of the trigger figure).
4. Per run: a steady phase (default 60 s), then an outage of the LI PostgreSQL (the postmaster
   and every child process SIGSTOPped: the apply worker, li-sync's sessions, everything) while
   the load goes on (default 60 s), then SIGCONT with the load still going (default 30 s).
   Catch-up: time from SIGCONT until the last event committed during the outage is applied,
   events applied per second in that window, the WAL main wrote during the outage per second of
   catch-up, and the time until newly committed events are again under 1 s of lag.
5. Dump mode side by side, same stack, same main database, same load still running: a second
   replica database `li_lag_dump` on the LI cluster and a copy of li-sync's config pointing at
   it, then `mxstack li dump --li-sync-config ...` timed: a full dump into the empty database and
   a repeat dump into the populated one (what the schedule runs), three times each.

Everything is removed afterwards (the bench trigger and schema, the dump database, the stack with
`mxstack down --purge`, the temporary directory), also on Ctrl-C or failure.

Run (about 11 minutes; nothing else should run):

    export CARGO_TARGET_DIR=/var/cache/mxstack/target
    cargo build -p mxstack
    .venv/bin/python bench/li_lag.py --mxstack $CARGO_TARGET_DIR/debug/mxstack --out bench/results/li_lag.json

Development against a stack that is already up (left running): --stack DIR (the directory of its
mxstack.yaml), e.g. with --runs 1 --steady 10 --outage 10 --recovery 10 --dumps 1.
Results: printed, and written as JSON (--out). See docs/BENCHMARKS.md.
"""
import argparse
import base64
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH_SCHEMA = "li_lag_bench"
DUMP_DB = "li_lag_dump"
ROOM_PREFIX = "!lilag"
WRITERS = 4
ROOMS_PER_WRITER = 2
WORDS = ("the quick brown fox jumps over lazy dog meeting tomorrow agenda budget report release "
         "server backup deploy review urgent coffee lunch weekend project deadline customer "
         "invoice contract network outage ticket update please thanks call later room matrix "
         "message encrypted device verify session key rotate schedule minutes notes draft").split()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def dist_ms(xs):
    """p50/p95/p99/max in milliseconds of a list of seconds."""
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "min": round(min(xs) * 1000, 1),
            **{k: round(percentile(xs, p) * 1000, 1) for k, p in (("p50", 50), ("p95", 95), ("p99", 99))},
            "max": round(max(xs) * 1000, 1)}


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --- the stack ---------------------------------------------------------------------------------

class Stack:
    """A local stack started with `mxstack up` (or an existing one with --stack)."""

    def __init__(self, binary, directory, owned):
        self.bin, self.dir, self.owned = binary, Path(directory), owned
        self.config = str(self.dir / "mxstack.yaml")

    def mx(self, *args, timeout=900, check=True, env=None):
        r = subprocess.run([self.bin, *args], capture_output=True, text=True, timeout=timeout, env=env)
        if check and r.returncode != 0:
            raise RuntimeError(f"mxstack {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def load(self):
        self.status = json.loads(self.mx("status", "--config", self.config, "--json").stdout)
        self.state = Path(self.status["state_dir"]) if "state_dir" in self.status else self.dir / ".mxstack-state"
        self.li_sync_yaml = self.state / "li-sync" / "li-sync.yaml"
        self.li = yaml.safe_load(self.li_sync_yaml.read_text())
        self.secrets = yaml.safe_load((self.dir / "secrets.yaml").read_text())

    def pid(self, name):
        for p in json.loads(self.mx("status", "--config", self.config, "--json").stdout)["processes"]:
            if p["name"] == name:
                return p["pid"]
        raise KeyError(name)

    def li_status(self):
        r = self.mx("li", "status", "--config", self.config, "--json", check=False)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {"healthy": False, "problems": [r.stderr.strip()]}

    def main_conn(self):
        m = self.li["main"]
        c = psycopg2.connect(host=m["host"], port=m["port"], dbname=m["dbname"], user="synapse",
                             password=self.secrets["synapse_db_password"], application_name="li-lag-bench")
        c.autocommit = True
        return c

    def replica_conn(self, dbname=None):
        r = self.li["replica"]
        c = psycopg2.connect(host=r["host"], port=r["port"], dbname=dbname or r["dbname"], user=r["user"],
                             password=self.secrets["li_db_password"], application_name="li-lag-bench")
        c.autocommit = True
        return c

    def li_env(self):
        env = dict(os.environ)
        env.update({"MXSTACK_LI_MAIN_PASSWORD": self.secrets["li_replication_password"],
                    "MXSTACK_LI_DB_PASSWORD": self.secrets["li_db_password"],
                    "MXSTACK_LI_S3_ACCESS_KEY": self.secrets["li_s3_access_key"],
                    "MXSTACK_LI_S3_SECRET_KEY": self.secrets["li_s3_secret_key"]})
        return env


class Outage:
    """SIGSTOP/SIGCONT of the LI PostgreSQL: the postmaster and every child. PostgreSQL's children
    call setsid(), so signalling the postmaster's process group would stop the postmaster alone
    and leave the apply worker running."""

    def __init__(self, postmaster):
        self.postmaster = postmaster
        self.stopped = []

    def children(self):
        kids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    stat = Path(f"/proc/{d}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.postmaster:
                    kids.append(int(d))
        return kids

    def stop(self):
        os.kill(self.postmaster, signal.SIGSTOP)
        self.stopped.append(self.postmaster)
        for _ in range(2):  # again, for a child forked while we were listing
            for pid in self.children():
                if pid not in self.stopped:
                    try:
                        os.kill(pid, signal.SIGSTOP)
                        self.stopped.append(pid)
                    except ProcessLookupError:
                        pass
        return len(self.stopped)

    def resume(self):
        for pid in reversed(self.stopped):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.stopped = []


# --- the load ----------------------------------------------------------------------------------

def b64(n):
    return base64.urlsafe_b64encode(os.urandom(n)).decode().rstrip("=")


class Writer:
    """Open-loop writer: message i is due at t0 + i/rate; writer k sends messages i = k mod WRITERS
    into its own rooms (so two writers never contend on one room's forward extremity)."""

    SQL = """BEGIN;
INSERT INTO events (topological_ordering, event_id, type, room_id, content, unrecognized_keys, processed, outlier,
  depth, origin_server_ts, received_ts, sender, contains_url, instance_name, stream_ordering, state_key, rejection_reason)
VALUES (%(depth)s, %(eid)s, 'm.room.message', %(room)s, NULL, NULL, true, false, %(depth)s, %(ts)s, %(ts)s, %(sender)s,
  false, 'li-lag-bench', nextval('events_stream_seq'), NULL, NULL);
INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
VALUES (%(eid)s, %(room)s, %(meta)s, %(json)s, 3);
INSERT INTO event_edges (event_id, prev_event_id, room_id, is_state) VALUES (%(eid)s, %(prev)s, %(room)s, false);
INSERT INTO event_auth (event_id, auth_id, room_id) VALUES (%(eid)s, %(a0)s, %(room)s), (%(eid)s, %(a1)s, %(room)s),
  (%(eid)s, %(a2)s, %(room)s);
INSERT INTO event_search (event_id, room_id, sender, key, vector, origin_server_ts, stream_ordering)
VALUES (%(eid)s, %(room)s, %(sender)s, 'content.body', to_tsvector('english', %(body)s), %(ts)s, currval('events_stream_seq'));
DELETE FROM event_forward_extremities WHERE room_id = %(room)s AND event_id = %(prev)s;
INSERT INTO event_forward_extremities (event_id, room_id) VALUES (%(eid)s, %(room)s);
INSERT INTO stream_ordering_to_exterm (stream_ordering, room_id, event_id)
VALUES (currval('events_stream_seq'), %(room)s, %(eid)s);
COMMIT;"""

    def __init__(self, stack, rate, tag, domain):
        self.stack, self.rate, self.tag, self.domain = stack, rate, tag, domain
        self.phase = "steady"
        self.records = []  # (event_id, phase, due, started, committed, json bytes)
        self.errors = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = []

    def start(self):
        self.t0 = time.time() + 0.2
        for k in range(WRITERS):
            t = threading.Thread(target=self._run, args=(k,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def _event(self, room, state, k):
        ts = int(time.time() * 1000)
        state["depth"] += 1
        eid = "$" + b64(32)
        sender = f"@lilag-{k}-{random.randrange(10)}:{self.domain}"
        body = " ".join(random.choice(WORDS) for _ in range(random.randint(70, 110)))
        auth = state["auth"]
        ev = {"auth_events": auth, "prev_events": [state["prev"]], "type": "m.room.message", "room_id": room,
              "sender": sender, "content": {"msgtype": "m.text", "body": body}, "depth": state["depth"],
              "origin": self.domain, "origin_server_ts": ts, "hashes": {"sha256": b64(32)},
              "signatures": {self.domain: {"ed25519:a_lilag": b64(64)}}, "unsigned": {"age_ts": ts}}
        meta = {"token_id": 1, "txn_id": f"m{ts}.{state['depth']}", "device_id": "LILAGBENCH", "stream_ordering": None}
        return {"eid": eid, "room": room, "depth": state["depth"], "ts": ts, "sender": sender, "prev": state["prev"],
                "json": json.dumps(ev, separators=(",", ":")), "meta": json.dumps(meta, separators=(",", ":")),
                "body": body, "a0": auth[0], "a1": auth[1], "a2": auth[2]}

    def _run(self, k):
        conn = self.stack.main_conn()
        cur = conn.cursor()
        rooms = {}
        for j in range(ROOMS_PER_WRITER):
            room = f"{ROOM_PREFIX}{self.tag}w{k}r{j}{b64(6)}:{self.domain}"
            rooms[room] = {"depth": 3, "prev": "$" + b64(32), "auth": ["$" + b64(32) for _ in range(3)]}
        names = list(rooms)
        i = k
        try:
            while not self._stop.is_set():
                due = self.t0 + i / self.rate
                wait = due - time.time()
                if wait > 0 and self._stop.wait(wait):
                    break
                room = names[(i // WRITERS) % len(names)]
                e = self._event(room, rooms[room], k)
                phase = self.phase
                started = time.time()
                try:
                    cur.execute(self.SQL, e)
                except psycopg2.Error as err:
                    self.errors.append(str(err).strip())
                    try:
                        cur.execute("ROLLBACK")
                    except psycopg2.Error:
                        conn = self.stack.main_conn()
                        cur = conn.cursor()
                    i += WRITERS
                    continue
                committed = time.time()
                rooms[room]["prev"] = e["eid"]
                with self._lock:
                    self.records.append((e["eid"], phase, due, started, committed, len(e["json"])))
                i += WRITERS
        finally:
            conn.close()


def poller(replica_kwargs, conn_pipe, interval):
    """Independent reader on the replica: when each applied event first became visible."""
    conn = psycopg2.connect(**replica_kwargs)
    conn.autocommit = True
    cur = conn.cursor()
    seen, last = {}, 0
    while not conn_pipe.poll():
        t = time.time()
        cur.execute(f"SELECT id, event_id FROM {BENCH_SCHEMA}.applied WHERE id > %s ORDER BY id", (last,))
        for i, eid in cur.fetchall():
            seen[eid] = t
            last = i
        time.sleep(interval)
    conn_pipe.recv()
    conn_pipe.send(seen)
    conn.close()


# --- machine load --------------------------------------------------------------------------------

class Sampler:
    """Every `every` s: load average, CPU busy share, and CPU used by processes that are not ours
    (not descendants of the stack's supervisor or of this script)."""

    def __init__(self, roots, every=10):
        self.roots, self.every = set(roots), every
        self.samples = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def procs():
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                s = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            name = s[s.index("(") + 1:s.rindex(")")]
            f = s.rsplit(")", 1)[1].split()
            out[int(d)] = (int(f[1]), name, int(f[11]) + int(f[12]))
        return out

    @staticmethod
    def cpu():
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(f), f[3] + f[4]

    def _run(self):
        hz = os.sysconf("SC_CLK_TCK")
        prev, (tot0, idle0) = self.procs(), self.cpu()
        while not self._stop.wait(self.every):
            cur, (tot1, idle1) = self.procs(), self.cpu()
            ours = set()
            for pid in cur:
                p, seen = pid, set()
                while p and p not in seen:
                    seen.add(p)
                    if p in self.roots:
                        ours.add(pid)
                        break
                    p = cur.get(p, (0,))[0]
            foreign = {}
            for pid, (_, name, t) in cur.items():
                if pid not in ours and pid in prev:
                    d = t - prev[pid][2]
                    if d > 0:
                        foreign[name] = foreign.get(name, 0) + d / hz
            busy = 1 - (idle1 - idle0) / max(1, tot1 - tot0)
            top = sorted(foreign.items(), key=lambda kv: -kv[1])[:5]
            self.samples.append({"t": round(time.time(), 1), "loadavg1": float(Path("/proc/loadavg").read_text().split()[0]),
                                 "cpu_busy": round(busy, 3),
                                 "foreign_cpu_s": round(sum(foreign.values()), 2),
                                 "foreign_top": [[n, round(s, 2)] for n, s in top]})
            prev, tot0, idle0 = cur, tot1, idle1

    def start(self):
        self.thread.start()

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=30)


# --- the benchmark -------------------------------------------------------------------------------

TRIGGER_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {BENCH_SCHEMA};
CREATE TABLE IF NOT EXISTS {BENCH_SCHEMA}.applied (
  id bigserial PRIMARY KEY, event_id text NOT NULL, room_id text NOT NULL, applied_at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION {BENCH_SCHEMA}.record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {BENCH_SCHEMA}.applied (event_id, room_id, applied_at)
  VALUES (NEW.event_id, NEW.room_id, pg_catalog.clock_timestamp());
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS li_lag_bench ON public.event_json;
CREATE CONSTRAINT TRIGGER li_lag_bench AFTER INSERT ON public.event_json DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.room_id LIKE '{ROOM_PREFIX}%') EXECUTE FUNCTION {BENCH_SCHEMA}.record();
ALTER TABLE public.event_json ENABLE ALWAYS TRIGGER li_lag_bench;
"""
UNTRIGGER_SQL = f"DROP TRIGGER IF EXISTS li_lag_bench ON public.event_json; DROP SCHEMA IF EXISTS {BENCH_SCHEMA} CASCADE;"


def wal_state(main, slot):
    cur = main.cursor()
    cur.execute("SELECT pg_current_wal_lsn()::text, (SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                "WHERE slot_name = %s)", (slot,))
    return cur.fetchone()


def wal_diff(main, a, b):
    cur = main.cursor()
    cur.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint", (a, b))
    return int(cur.fetchone()[0])


def applied_rows(replica, tag):
    cur = replica.cursor()
    cur.execute(f"SELECT event_id, extract(epoch FROM applied_at)::float8 FROM {BENCH_SCHEMA}.applied "
                "WHERE room_id LIKE %s", (f"{ROOM_PREFIX}{tag}%",))
    return dict(cur.fetchall())


def wait_applied(replica, tag, n, timeout):
    cur = replica.cursor()
    deadline = time.time() + timeout
    got = 0
    while time.time() < deadline:
        cur.execute(f"SELECT count(*) FROM {BENCH_SCHEMA}.applied WHERE room_id LIKE %s", (f"{ROOM_PREFIX}{tag}%",))
        got = cur.fetchone()[0]
        if got >= n:
            return got
        time.sleep(0.5)
    return got


PG_LOGS = ("postgres-li.log", "postgres.log")
PG_LOG_WORDS = ("ERROR", "FATAL", "timeout", "terminating", "replication worker", "walsender")


def log_offsets(stack):
    return {f: (stack.state / "logs" / f).stat().st_size if (stack.state / "logs" / f).exists() else 0 for f in PG_LOGS}


def log_lines_since(stack, offsets, limit=20):
    """Replication-related lines the two PostgreSQL servers logged since `offsets`."""
    out = {}
    for f, off in offsets.items():
        path = stack.state / "logs" / f
        if not path.exists():
            continue
        with open(path, errors="replace") as fh:
            fh.seek(off)
            lines = [ln.rstrip() for ln in fh if any(w in ln for w in PG_LOG_WORDS)]
        if lines:
            out[f] = lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])
    return out


def one_run(stack, args, run_no, outage_pids_ref):
    tag = f"{os.getpid() % 10000}x{run_no}"
    offsets = log_offsets(stack)
    main, replica = stack.main_conn(), stack.replica_conn()
    slot = stack.li["subscription"]["name"]
    w = Writer(stack, args.rate, tag, args.domain)
    marks = {}
    log(f"run {run_no}: steady {args.steady} s at {args.rate}/s")
    lsn_start, _ = wal_state(main, slot)
    w.start()
    time.sleep(args.steady)
    st = stack.li_status()
    marks["li_status_steady"] = {k: st.get(k) for k in ("lag_seconds", "lag_bytes", "apply_errors", "healthy", "problems")}
    lsn_pause, flushed_pause = wal_state(main, slot)
    w.phase = "outage"
    outage = Outage(stack.pid("postgres-li"))
    outage_pids_ref.append(outage)
    marks["t_pause"] = time.time()
    n = outage.stop()
    log(f"run {run_no}: LI PostgreSQL stopped ({n} processes SIGSTOPped), load goes on for {args.outage} s")
    time.sleep(args.outage)
    lsn_resume, flushed_resume = wal_state(main, slot)
    w.phase = "recovery"
    marks["t_resume"] = time.time()
    outage.resume()
    outage_pids_ref.remove(outage)
    log(f"run {run_no}: LI PostgreSQL resumed; load goes on for {args.recovery} s")
    time.sleep(args.recovery)
    w.stop()
    lsn_end, _ = wal_state(main, slot)
    recs = list(w.records)
    got = wait_applied(replica, tag, len(recs), args.drain_timeout)
    applied = applied_rows(replica, tag)
    log(f"run {run_no}: {len(recs)} committed, {got} applied on the replica, {len(w.errors)} write errors")
    st = stack.li_status()
    res = analyse(run_no, args, recs, applied, marks, w.errors, main,
                  dict(start=lsn_start, pause=lsn_pause, resume=lsn_resume, end=lsn_end,
                       flushed_pause=flushed_pause, flushed_resume=flushed_resume))
    res["li_status_after"] = {k: st.get(k) for k in ("lag_seconds", "apply_errors", "healthy", "problems")}
    res["postgres_log"] = log_lines_since(stack, offsets)
    return res


def analyse(run_no, args, recs, applied, marks, errors, main, lsn):
    by_phase = {}
    for r in recs:
        by_phase.setdefault(r[1], []).append(r)
    steady = by_phase.get("steady", [])
    outage_recs = by_phase.get("outage", [])
    recovery = by_phase.get("recovery", [])
    lag = lambda rs: [applied[r[0]] - r[4] for r in rs if r[0] in applied]  # noqa: E731
    span = lambda rs: (max(r[2] for r in rs) - min(r[2] for r in rs)) if len(rs) > 1 else 0  # noqa: E731
    t_resume = marks["t_resume"]
    res = {
        "run": run_no,
        "committed": len(recs), "applied": sum(1 for r in recs if r[0] in applied), "write_errors": len(errors),
        "write_error_samples": errors[:3],
        "event_json_bytes_avg": round(statistics.mean(r[5] for r in recs)) if recs else None,
        "steady": {
            "messages": len(steady),
            "rate_per_s": round((len(steady) - 1) / span(steady), 2) if span(steady) else None,
            "lag_ms": dist_ms(lag(steady)),
            # Upper bound: from the moment the transaction was sent (COMMIT returns to a busy client
            # a little after the WAL is flushed and sent, so lag from "COMMIT returned" can be < 0).
            "lag_from_send_ms": dist_ms([applied[r[0]] - r[3] for r in steady if r[0] in applied]),
            "send_late_ms": dist_ms([r[3] - r[2] for r in steady]),
            "commit_ms": dist_ms([r[4] - r[3] for r in steady]),
            "wal_bytes": wal_diff(main, lsn["pause"], lsn["start"]),
            "li_status": marks["li_status_steady"],
        },
        "outage": {
            "seconds": round(t_resume - marks["t_pause"], 2),
            "messages": len(outage_recs),
            "rate_per_s": round((len(outage_recs) - 1) / span(outage_recs), 2) if span(outage_recs) else None,
            "commit_ms": dist_ms([r[4] - r[3] for r in outage_recs]),
            "wal_bytes": wal_diff(main, lsn["resume"], lsn["pause"]),
            "slot_backlog_bytes_at_resume": wal_diff(main, lsn["resume"], lsn["flushed_resume"]) if lsn["flushed_resume"] else None,
        },
        "recovery": {"messages": len(recovery), "lag_ms": dist_ms(lag(recovery))},
        "_steady_commits": {r[0]: r[4] for r in steady},
    }
    res["steady"]["wal_bytes_per_message"] = round(res["steady"]["wal_bytes"] / max(1, len(steady)))
    # Catch-up: from SIGCONT until the last event committed during the outage is applied.
    out_applied = [applied[r[0]] for r in outage_recs if r[0] in applied]
    if outage_recs and len(out_applied) == len(outage_recs):
        done = max(out_applied)
        drain = done - t_resume
        in_window = sum(1 for t in applied.values() if t_resume <= t <= done)
        res["catch_up"] = {
            "backlog_messages": len(outage_recs),
            "seconds": round(drain, 2),
            "first_apply_after_resume_s": round(min(t for t in applied.values() if t >= t_resume) - t_resume, 2),
            "applied_per_s": round(in_window / drain, 1) if drain > 0 else None,
            "wal_mb_per_s": round(res["outage"]["wal_bytes"] / drain / 1e6, 2) if drain > 0 else None,
            "outage_lag_max_s": round(max(applied[r[0]] - r[4] for r in outage_recs), 2),
        }
        # Until events committed after the resume are under 1 s again: the commit time of the last
        # recovery-phase event whose lag reached 1 s, counted from the resume.
        late = [r[4] for r in recovery if r[0] in applied and applied[r[0]] - r[4] >= 1.0]
        res["catch_up"]["lag_under_1s_after_s"] = round(max(late) - t_resume, 2) if late else 0.0
    else:
        res["catch_up"] = {"backlog_messages": len(outage_recs), "error": f"only {len(out_applied)} applied"}
    return res


def dump_mode(stack, args, results):
    """Dump mode on a second replica database of the LI cluster, same main, load still running."""
    work = Path(tempfile.mkdtemp(prefix="li-lag-dump-"))
    cfg = dict(stack.li)
    cfg["mode"] = "dump"
    cfg["replica"] = dict(cfg["replica"], dbname=DUMP_DB)
    cfg.pop("working_copy", None)
    cfg.pop("dump_interval_secs", None)
    path = work / "li-sync-dump.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    admin = stack.replica_conn()
    main = stack.main_conn()
    cur = main.cursor()
    out = []
    w = Writer(stack, args.rate, f"{os.getpid() % 10000}dump", args.domain)
    w.phase = "dump"
    w.start()
    try:
        for k in range(args.dumps):
            admin.cursor().execute(f"DROP DATABASE IF EXISTS {DUMP_DB}")
            admin.cursor().execute(f"CREATE DATABASE {DUMP_DB} OWNER {stack.li['replica']['user']}")
            for kind in ("full", "repeat"):
                cur.execute("SELECT pg_database_size(current_database()), (SELECT count(*) FROM events)")
                size, events = cur.fetchone()
                t = time.time()
                r = stack.mx("li", "dump", "--li-sync-config", str(path), "--json", env=stack.li_env(), timeout=1800)
                wall = time.time() - t
                rep = json.loads(r.stdout)
                rep.update(kind=kind, round=k + 1, wall_seconds=round(wall, 2), main_db_bytes=size, main_events=events)
                out.append(rep)
                log(f"dump {k + 1} ({kind}): {wall:.1f} s wall ({rep.get('seconds', 0):.1f} s reported), "
                    f"{rep.get('rows_copied')} rows, {rep.get('bytes_copied', 0) / 1e6:.1f} MB, "
                    f"{rep.get('tables_changed')} tables replaced, main {size / 1e6:.0f} MB")
    finally:
        w.stop()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {DUMP_DB}")
        shutil.rmtree(work, ignore_errors=True)
    results["dump"] = {"runs": out, "writer_messages": len(w.records), "writer_errors": len(w.errors),
                       "writer_rate_per_s": round(len(w.records) / max(1e-9, max(r[2] for r in w.records) - w.t0), 2)
                       if w.records else None}


def summarise(results):
    runs = results["runs"]
    pick = lambda f: median([f(r) for r in runs])  # noqa: E731
    s = {
        "steady_rate_per_s": pick(lambda r: r["steady"]["rate_per_s"]),
        "lag_from_send_p99_ms": pick(lambda r: r["steady"]["lag_from_send_ms"].get("p99")),
        "lag_p50_ms": pick(lambda r: r["steady"]["lag_ms"].get("p50")),
        "lag_p95_ms": pick(lambda r: r["steady"]["lag_ms"].get("p95")),
        "lag_p99_ms": pick(lambda r: r["steady"]["lag_ms"].get("p99")),
        "lag_max_ms": pick(lambda r: r["steady"]["lag_ms"].get("max")),
        "poll_lag_p50_ms": pick(lambda r: r["steady"].get("poll_lag_ms", {}).get("p50")),
        "poll_lag_p99_ms": pick(lambda r: r["steady"].get("poll_lag_ms", {}).get("p99")),
        "wal_bytes_per_message": pick(lambda r: r["steady"]["wal_bytes_per_message"]),
        "outage_messages": pick(lambda r: r["outage"]["messages"]),
        "outage_wal_mb": pick(lambda r: r["outage"]["wal_bytes"] / 1e6),
        "catch_up_s": pick(lambda r: r["catch_up"].get("seconds")),
        "catch_up_first_apply_s": pick(lambda r: r["catch_up"].get("first_apply_after_resume_s")),
        "catch_up_applied_per_s": pick(lambda r: r["catch_up"].get("applied_per_s")),
        "catch_up_wal_mb_per_s": pick(lambda r: r["catch_up"].get("wal_mb_per_s")),
        "lag_under_1s_after_s": pick(lambda r: r["catch_up"].get("lag_under_1s_after_s")),
        "all_applied": all(r["applied"] == r["committed"] for r in runs),
    }
    s["goal_p99_le_1s"] = s["lag_p99_ms"] is not None and s["lag_p99_ms"] <= 1000
    d = results.get("dump", {}).get("runs", [])
    for kind in ("full", "repeat"):
        ks = [x for x in d if x["kind"] == kind]
        if ks:
            s[f"dump_{kind}_s"] = median([x["wall_seconds"] for x in ks])
            s[f"dump_{kind}_reported_s"] = median([x.get("seconds") for x in ks])
            s[f"dump_{kind}_rows"] = median([x.get("rows_copied") for x in ks])
            s[f"dump_{kind}_mb"] = median([x.get("bytes_copied", 0) / 1e6 for x in ks])
    ls = results.get("load_samples") or []
    if ls:
        # Share of the machine's CPU time used by processes that were not ours (other work on the box).
        secs = ls[-1]["t"] - ls[0]["t"] + 10
        s["foreign_cpu_share"] = round(sum(x["foreign_cpu_s"] for x in ls) / (secs * (os.cpu_count() or 1)), 3)
        s["cpu_busy_median"] = median([x["cpu_busy"] for x in ls])
    if d:
        s["main_db_mb_at_dump"] = round(median([x["main_db_bytes"] for x in d]) / 1e6, 1)
    results["summary"] = s
    return s


def print_summary(results):
    s = results["summary"]
    print("\nper run (lag = commit on main -> applied on the replica, trigger clock):")
    print(f"{'run':>3} {'rate/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} {'poll p99':>8} "
          f"{'backlog':>7} {'catch-up s':>10} {'ev/s':>6} {'WAL MB/s':>8} {'<1s after':>9}")
    for r in results["runs"]:
        L, c = r["steady"]["lag_ms"], r["catch_up"]
        print(f"{r['run']:>3} {r['steady']['rate_per_s'] or 0:>7} {L.get('p50', 0):>7} {L.get('p95', 0):>7} "
              f"{L.get('p99', 0):>7} {L.get('max', 0):>7} {r['steady'].get('poll_lag_ms', {}).get('p99', 0):>8} "
              f"{c.get('backlog_messages', 0):>7} {c.get('seconds', 'n/a'):>10} {c.get('applied_per_s', 'n/a'):>6} "
              f"{c.get('wal_mb_per_s', 'n/a'):>8} {c.get('lag_under_1s_after_s', 'n/a'):>9}")
    for x in results.get("dump", {}).get("runs", []):
        print(f"dump {x['round']} {x['kind']:>6}: {x['wall_seconds']} s wall, {x.get('rows_copied')} rows, "
              f"{x.get('bytes_copied', 0) / 1e6:.1f} MB, main {x['main_db_bytes'] / 1e6:.0f} MB")
    print("\nmedians:", json.dumps(s, indent=1))


def machine():
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "?")
    mem = next((int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), 0)
    pg = subprocess.run(["/usr/lib/postgresql/15/bin/postgres", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem / 1048576, 1), "kernel": platform.release(),
            "postgres": pg, "python": platform.python_version(), "commit": commit}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mxstack", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "/var/cache/mxstack/target"),
                                                      "debug", "mxstack"))
    ap.add_argument("--stack", help="use the stack of this directory (already up; left running)")
    ap.add_argument("--base-port", default="21000")
    ap.add_argument("--domain", default="bench.test")
    ap.add_argument("--rate", type=float, default=67.0, help="messages per second (open loop)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steady", type=float, default=60.0)
    ap.add_argument("--outage", type=float, default=60.0)
    ap.add_argument("--recovery", type=float, default=30.0)
    ap.add_argument("--drain-timeout", type=float, default=180.0)
    ap.add_argument("--dumps", type=int, default=3, help="rounds of (full dump, repeat dump); 0: skip dump mode")
    ap.add_argument("--poll-interval", type=float, default=0.01)
    ap.add_argument("--out", default=str(ROOT / "bench/results/li_lag.json"))
    args = ap.parse_args()

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)
    os.environ.setdefault("MXSTACK_VENV", str(ROOT / ".venv"))  # Synapse's venv, whatever the cwd

    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
               "params": vars(args), "runs": []}
    owned = args.stack is None
    directory = Path(args.stack) if args.stack else Path(tempfile.mkdtemp(prefix="mxstack-li-lag-", dir="/var/tmp"))
    stack = Stack(args.mxstack, directory, owned)
    outages, sampler, poll_proc, replica_admin, ok = [], None, None, None, False
    try:
        if owned:
            directory.chmod(0o755)  # PostgreSQL runs as postgres and must reach the state directory
            # A private copy of the binary: the shared target directory may be rebuilt during the run.
            stack.bin = shutil.copy2(args.mxstack, directory / "mxstack")
            stack.mx("init", "--domain", args.domain, "--scale", "100", "--features", "li", "--dir", str(directory))
            log(f"mxstack up ({directory}, base port {args.base_port})")
            t = time.time()
            stack.mx("up", "--config", stack.config, "--base-port", args.base_port, "--json", timeout=900)
            results["stack_up_seconds"] = round(time.time() - t, 1)
        stack.load()
        deadline = time.time() + 180
        while not (st := stack.li_status()).get("healthy"):
            if time.time() > deadline:
                raise RuntimeError(f"LI replica not healthy: {st.get('problems')}")
            time.sleep(2)
        results["li_status_before"] = {k: st.get(k) for k in ("mode", "lag_seconds", "apply_errors", "healthy")}
        log("LI replica healthy; installing the bench trigger on the replica")
        replica_admin = stack.replica_conn()
        replica_admin.cursor().execute(TRIGGER_SQL)
        r = stack.li["replica"]
        parent, child = mp.Pipe()
        poll_proc = mp.Process(target=poller, daemon=True, args=(
            dict(host=r["host"], port=r["port"], dbname=r["dbname"], user=r["user"],
                 password=stack.secrets["li_db_password"], application_name="li-lag-poller"), child, args.poll_interval))
        poll_proc.start()
        sampler = Sampler([stack.status["supervisor_pid"], os.getpid()])
        sampler.start()
        for n in range(1, args.runs + 1):
            results["runs"].append(one_run(stack, args, n, outages))
            time.sleep(5)
        # The poller's view, fetched once at the end: steady-phase lag as an independent reader saw it.
        parent.send("stop")
        seen = parent.recv()
        poll_proc.join(timeout=30)
        poll_proc = None
        results["poll_events_seen"] = len(seen)
        for res in results["runs"]:
            commits = res.pop("_steady_commits")
            res["steady"]["poll_lag_ms"] = dist_ms([seen[e] - c for e, c in commits.items() if e in seen])
        if args.dumps:
            log(f"dump mode: {args.dumps} x (full dump into an empty database, repeat dump), load at {args.rate}/s")
            dump_mode(stack, args, results)
        st = stack.li_status()
        results["li_status_after"] = {k: st.get(k) for k in ("mode", "lag_seconds", "apply_errors", "healthy", "problems")}
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        sampler.stop()
        results["load_samples"], sampler = sampler.samples, None
        summarise(results)
        print_summary(results)
        ok = True
    finally:
        for o in outages:
            o.resume()
        if poll_proc is not None:
            poll_proc.terminate()
        if sampler is not None:
            sampler.stop()
            results["load_samples"] = sampler.samples
        if replica_admin is not None:
            try:
                replica_admin.cursor().execute(UNTRIGGER_SQL)
            except psycopg2.Error as e:
                log(f"could not remove the bench trigger: {e}")
        if owned:
            logs = directory / ".mxstack-state" / "logs"
            if not ok and logs.is_dir():
                keep = Path(tempfile.mkdtemp(prefix="li-lag-failed-logs-"))
                shutil.copytree(logs, keep / "logs")
                log(f"failed: the stack's logs are kept in {keep / 'logs'}")
            log("mxstack down --purge")
            stack.mx("down", "--config", stack.config, "--purge", check=False, timeout=300)
            shutil.rmtree(directory, ignore_errors=True)
        if results.get("summary"):
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
            log(f"results written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
