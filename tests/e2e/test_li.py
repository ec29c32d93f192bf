"""Lawful intercept data path (issue 5) on the running local stack: main -> logical replica with
history (li-sync), media -> LI bucket. Messages go through the router with a real client
(matrix-nio); deletions through Synapse's admin API; censoring by Synapse's own censor loop; the
replica is read with psql.
"""
import asyncio
import hashlib
import json
import math
import os
import signal
import subprocess
import time
import urllib.parse

import pytest
import yaml
from nio import RoomCreateResponse, RoomRedactResponse, RoomSendResponse

from conftest import run
from test_antivirus import http, media_id, object_key, upload
from test_local_stack import login


def li_config(stack):
    return yaml.safe_load((stack.state / "li-sync" / "li-sync.yaml").read_text())


def sql(stack, which, query, check=True):
    """Run `query` with psql as the postgres superuser on main or the replica ("replica")."""
    c = li_config(stack)
    db = c["main"] if which == "main" else c["replica"]
    r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                        "-h", str(stack.state / "run"), "-p", str(db["port"]), "-d", db["dbname"], "-c", query],
                       capture_output=True, text=True, timeout=60)
    if not check and r.returncode != 0:
        return None
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def li_status(stack):
    r = run("li", "status", "--config", stack.config, "--json", check=False)
    return json.loads(r.stdout)


def wait_replica(stack, query, expected, timeout=60):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        # Until it arrives, what is queried may not exist on the replica yet.
        got = sql(stack, "replica", query, check=False)
        if got == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"replica: {query!r} gave {got!r}, expected {expected!r}")


def history_count(stack, table, op, where="true"):
    return int(sql(stack, "replica",
                   f"SELECT count(*) FROM mxstack_li.row_history WHERE table_name = '{table}' AND operation = '{op}' AND {where}"))


def quote_list(ids):
    return ",".join("'" + i.replace("'", "''") + "'" for i in ids)


async def room_with_messages(stack, tmp_path, user, n, prefix):
    c = await login(stack, user, tmp_path, password=False)
    r = await c.room_create(name=prefix)
    assert isinstance(r, RoomCreateResponse), r
    ids = []
    for i in range(n):
        s = await c.room_send(r.room_id, "m.room.message", {"msgtype": "m.text", "body": f"{prefix} {i}"})
        assert isinstance(s, RoomSendResponse), s
        ids.append(s.event_id)
    return c, r.room_id, ids


@pytest.fixture(scope="module")
def li_ready(stack):
    deadline = time.monotonic() + 120
    while True:
        s = li_status(stack)
        if s.get("healthy"):
            return s
        assert time.monotonic() < deadline, f"LI replica not healthy: {s.get('problems')}"
        time.sleep(1)


def test_status_reports_a_healthy_subscription_and_equal_counts(stack, li_ready):
    s = li_status(stack)
    assert s["subscribed"] and s["apply_worker_running"], s
    assert s["tables_without_identity"] == [], s
    assert s["mode"] == "logical"
    counts = {c["table"]: c for c in s["counts"]}
    assert "events" in counts and "event_json" in counts
    text = run("li", "status", "--config", stack.config).stdout
    assert "subscription: enabled, apply worker running" in text


# --- Synapse's own censor loop (issue 5: after main censors them, the replica still has every
# original). Synapse 1.163.2, synapse/storage/databases/main/censor_events.py: the process named
# by `run_background_tasks_on` (synapse-background-0 here) runs `_censor_redactions` every 5
# minutes, the first time 5 minutes after it starts (Clock.looping_call waits before the first
# call). A run takes up to 100 redactions not yet `have_censored` whose `received_ts` is at least
# `redaction_retention_period` old; for each, it replaces the redacted event's `event_json.json`
# with the pruned event (`content` emptied) and sets `redactions.have_censored = true`. The stack
# runs with a 30s period (conftest.py); the events are made before the first test and checked
# after the last, so the wait overlaps the suite.

CENSOR_LOOP_SECS = 300


def synapse_duration_secs(value):
    """Synapse's Config.parse_duration, in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    v = str(value)
    return int(v[:-1]) * units[v[-1]] if v[-1] in units else int(v) / 1000


def events_json(stack, which, ids):
    """event_id -> event_json.json (the text as stored) on main or the replica."""
    schema = "public." if which == "replica" else ""
    got = sql(stack, which, f"SELECT json_object_agg(event_id, json) FROM {schema}event_json WHERE event_id IN ({quote_list(ids)})")
    return json.loads(got) if got else {}


def make_censor_material(stack, tmp_path):
    """Through the router: three messages, an edit of the second; then redactions of the first
    message, of the edit and of the edited message. The third message is never redacted."""
    prefix = f"li-censor {stack._run}"

    async def go():
        u = stack.user("li-censor")
        c, room, messages = await room_with_messages(stack, tmp_path, u, 3, prefix)
        edit = await c.room_send(room, "m.room.message", {
            "msgtype": "m.text", "body": f"* {prefix} edited",
            "m.new_content": {"msgtype": "m.text", "body": f"{prefix} edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": messages[1]}})
        assert isinstance(edit, RoomSendResponse), edit
        redactions = []
        for target in (messages[0], edit.event_id, messages[1]):
            r = await c.room_redact(room, target, reason="li-censor")
            assert isinstance(r, RoomRedactResponse), r
            redactions.append(r.event_id)
        await c.close()
        return room, messages, edit.event_id, redactions

    room, messages, edit, redactions = asyncio.run(go())
    censored = [messages[0], edit, messages[1]]
    originals = events_json(stack, "main", messages + [edit])
    bodies = {messages[0]: f"{prefix} 0", messages[1]: f"{prefix} 1", messages[2]: f"{prefix} 2", edit: f"* {prefix} edited"}
    for i, body in bodies.items():
        assert json.loads(originals[i])["content"]["body"] == body, originals[i]
    return {"room": room, "messages": messages, "edit": edit, "redactions": redactions,
            "censored": censored, "kept": [messages[2]], "originals": originals, "bodies": bodies}


def censor_deadline(stack, last_redaction_secs):
    """When Synapse's censor loop has certainly taken the redactions: the first run at or after
    the redaction's age reaches the period, counted from the background process's start (a
    restart starts the 5 minutes again), plus 120 s for Synapse's start-up before the loop
    exists (20-40 s on two busy cores) and the run itself. None if the period is too long."""
    hs = yaml.safe_load((stack.state / "synapse" / "config" / "homeserver.yaml").read_text())
    period = hs.get("redaction_retention_period", "7d")
    if period is None or synapse_duration_secs(period) > 600:
        return None, hs
    retention = synapse_duration_secs(period)
    pid, _, _ = stack.pid(hs.get("run_background_tasks_on", "synapse-main"))
    started = time.time() - int(subprocess.run(["ps", "-o", "etimes=", "-p", str(pid)], capture_output=True,
                                               text=True, check=True).stdout)
    runs = max(1, math.ceil((last_redaction_secs + retention - started) / CENSOR_LOOP_SECS))
    return started + runs * CENSOR_LOOP_SECS + 120, hs


def test_messages_edits_and_redactions_replicate(stack, li_ready, censor_material):
    m = censor_material
    ids = m["messages"] + [m["edit"]] + m["redactions"]
    wait_replica(stack, f"SELECT count(*) FROM public.event_json WHERE event_id IN ({quote_list(ids)})", str(len(ids)))
    wait_replica(stack, f"SELECT string_agg(redacts, ',' ORDER BY redacts COLLATE \"C\") FROM public.redactions "
                        f"WHERE event_id IN ({quote_list(m['redactions'])})", ",".join(sorted(m["censored"])))


@pytest.mark.last(start="censor_material")
def test_synapse_censors_redacted_events_and_the_replica_keeps_every_original(stack, li_ready, censor_material):
    m = censor_material
    reds = quote_list(m["redactions"])
    last = int(sql(stack, "main", f"SELECT max(received_ts) FROM redactions WHERE event_id IN ({reds})")) / 1000
    deadline, hs = censor_deadline(stack, last)
    if deadline is None:
        pytest.skip(f"redaction_retention_period is {hs['redaction_retention_period']}: the stack (MXSTACK_E2E_REUSE?) "
                    "was not started with the suite's short period")
    # 1. Synapse itself censors them on main (nothing in this test writes to main).
    while True:
        done = sql(stack, "main", f"SELECT count(*) FROM redactions WHERE event_id IN ({reds}) AND have_censored")
        if done == str(len(m["redactions"])):
            break
        background = hs.get("run_background_tasks_on", "synapse-main")
        assert time.time() < deadline, (
            f"Synapse's censor loop did not censor {len(m['redactions'])} redactions ({done} done) "
            f"{time.time() - last:.0f}s after them; {background}:\n{stack.log(background)[-3000:]}")
        time.sleep(2)
    main = events_json(stack, "main", m["censored"] + m["kept"])
    for i in m["censored"]:
        # The redaction algorithm keeps no content key of an m.room.message; the rest is as it was.
        pruned, original = json.loads(main[i]), json.loads(m["originals"][i])
        assert pruned.pop("content") == {} and original.pop("content")["body"] == m["bodies"][i], main[i]
        assert pruned == original, (pruned, original)
    assert main[m["kept"][0]] == m["originals"][m["kept"][0]]

    # 2. The replica mirrors main: the censored JSON, byte for byte, and have_censored.
    deadline = time.monotonic() + 60
    while (replica := events_json(stack, "replica", m["censored"] + m["kept"])) != main:
        assert time.monotonic() < deadline, (replica, main)
        time.sleep(0.5)
    wait_replica(stack, f"SELECT count(*) FROM public.redactions WHERE event_id IN ({reds}) AND have_censored",
                 str(len(m["redactions"])))

    # 3. ...and its history (li-sync's triggers) keeps every original, exactly as it was on main.
    got = sql(stack, "replica",
              "SELECT json_agg(json_build_array(old_row->>'event_id', old_row->>'json')) FROM mxstack_li.row_history "
              f"WHERE table_name = 'event_json' AND operation = 'UPDATE' AND old_row->>'event_id' IN ({quote_list(m['censored'])})")
    kept = {}
    for event_id, old in json.loads(got) if got else []:
        kept.setdefault(event_id, []).append(old)
    for i in m["censored"]:
        assert m["originals"][i] in kept.get(i, []), f"the replica lost the original of {i} ({m['bodies'][i]!r}): {kept.get(i)}"
        assert json.loads(m["originals"][i])["content"]["body"] == m["bodies"][i]
    assert history_count(stack, "redactions", "UPDATE",
                         f"old_row->>'event_id' IN ({reds}) AND NOT (old_row->>'have_censored')::boolean") == len(m["redactions"])
    assert history_count(stack, "event_json", "UPDATE", f"old_row->>'event_id' = '{m['kept'][0]}'") == 0


def test_purge_room_deletion_and_erasure_keep_every_original_row(stack, li_ready, tmp_path):
    async def go():
        u = stack.user("li-b")
        c, purge_room, purge_ids = await room_with_messages(stack, tmp_path, u, 8, "li-purge")
        await c.room_send(purge_room, "m.room.message", {"msgtype": "m.text", "body": "after purge point"})
        await c.set_displayname(f"Erase Me {stack._run}")
        _, del_room, del_ids = await room_with_messages(stack, tmp_path, u, 6, "li-delete")
        await c.close()
        return u, purge_room, purge_ids, del_room, del_ids
    u, purge_room, purge_ids, del_room, del_ids = asyncio.run(go())
    all_ids = purge_ids + del_ids
    wait_replica(stack, f"SELECT count(*) FROM public.events WHERE event_id IN ({quote_list(all_ids)})", str(len(all_ids)))

    # Purge history up to the last message, room deletion with purge, deactivation with erase.
    room_q = urllib.parse.quote(purge_room)
    r = stack.admin_request("POST", f"/_synapse/admin/v1/purge_history/{room_q}",
                            {"purge_up_to_event_id": purge_ids[-1], "delete_local_events": True})
    purge_id = r["purge_id"]
    r = stack.admin_request("DELETE", f"/_synapse/admin/v2/rooms/{urllib.parse.quote(del_room)}", {"purge": True})
    delete_id = r["delete_id"]
    stack.admin_request("POST", f"/_synapse/admin/v1/deactivate/{urllib.parse.quote(u['user_id'])}", {"erase": True})
    deadline = time.monotonic() + 60
    while True:
        p = stack.admin_request("GET", f"/_synapse/admin/v1/purge_history_status/{purge_id}")["status"]
        d = stack.admin_request("GET", f"/_synapse/admin/v2/rooms/delete_status/{delete_id}")["status"]
        if p == "complete" and d == "complete":
            break
        assert p != "failed" and d != "failed"
        assert time.monotonic() < deadline, (p, d)
        time.sleep(0.5)

    # Main no longer has the rows; the replica mirrors main...
    gone = sql(stack, "main", f"SELECT count(*) FROM events WHERE event_id IN ({quote_list(purge_ids[:-1] + del_ids)})")
    assert gone == "0"
    wait_replica(stack, f"SELECT count(*) FROM public.events WHERE event_id IN ({quote_list(purge_ids[:-1] + del_ids)})", "0")
    # ...and its history keeps every original row, with its content.
    for table in ("events", "event_json"):
        kept = history_count(stack, table, "DELETE", f"old_row->>'event_id' IN ({quote_list(purge_ids[:-1] + del_ids)})")
        assert kept >= len(purge_ids[:-1] + del_ids), (table, kept)
    bodies = sql(stack, "replica",
                 "SELECT string_agg((old_row->>'json')::jsonb->'content'->>'body', '|' ORDER BY old_row->>'json') "
                 "FROM mxstack_li.row_history WHERE table_name = 'event_json' AND operation = 'DELETE' "
                 f"AND old_row->>'event_id' IN ({quote_list(del_ids)})")
    assert sorted(bodies.split("|")) == sorted(f"li-delete {i}" for i in range(6))
    assert history_count(stack, "rooms", "DELETE", f"old_row->>'room_id' = '{del_room}'") == 1
    # Erasure rewrote the profile on main; the replica kept the name the user had.
    # (Each UPDATE of the profile row is kept, so the name appears in at least one old row.)
    wait_replica(stack, "SELECT count(*) > 0 FROM mxstack_li.row_history WHERE table_name = 'profiles' "
                        f"AND old_row->>'displayname' = 'Erase Me {stack._run}'", "t")
    assert sql(stack, "main", f"SELECT count(*) FROM profiles WHERE displayname = 'Erase Me {stack._run}'") == "0"


def test_media_reaches_the_li_bucket_verified(stack, li_ready):
    u = stack.user("li-media")
    data = os.urandom(50_000) + b"li media"
    s, body = upload(stack, u["access_token"], data)
    assert s == 200, body
    _, mid = media_id(body["content_uri"])
    key = object_key(mid)
    want = hashlib.sha256(data).hexdigest()
    deadline = time.monotonic() + 60
    while sql(stack, "replica", f"SELECT sha256 FROM mxstack_li.media_objects WHERE key = '{key}'") != want:
        assert time.monotonic() < deadline, li_status(stack).get("media")
        time.sleep(1)
    assert li_status(stack)["media"]["errors"] == 0


def test_a_schema_migration_on_main_is_absorbed(stack, li_ready):
    # A new table without a key and a new column, as a Synapse upgrade would add (unique names,
    # so a reused stack can run this again).
    table, column = f"e2e_migration_{stack._run}", f"e2e_note_{stack._run}"
    sql(stack, "main", f"SET ROLE synapse; CREATE TABLE {table} (room_id text, value text); "
                       f"ALTER TABLE room_aliases ADD COLUMN {column} text; "
                       f"INSERT INTO {table} VALUES ('!r', 'one'), ('!r', 'two'); "
                       f"UPDATE {table} SET value = 'three' WHERE value = 'one'")
    wait_replica(stack, f"SELECT string_agg(value, ',' ORDER BY value) FROM public.{table}", "three,two")
    wait_replica(stack, "SELECT count(*) FROM information_schema.columns "
                        f"WHERE table_name = 'room_aliases' AND column_name = '{column}'", "1")
    assert history_count(stack, table, "UPDATE") == 1
    s = li_status(stack)
    assert not s["schema_behind"] and s["subscribed"], s


def postgres_processes(postmaster):
    """The postmaster and its children. Each child calls setsid(), so a signal to the postmaster's
    process group would stop the postmaster alone and leave the apply worker running."""
    pids = [postmaster]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(d))
    return pids


def signal_all(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def slot_confirmed(stack):
    return sql(stack, "main", "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'mxstack_li'")


def test_replica_down_60s_under_load_catches_up_with_identical_rows(stack, li_ready, tmp_path):
    postmaster = next(p["pid"] for p in stack.refresh()["processes"] if p["name"] == "postgres-li")

    async def load(seconds):
        u = stack.user("li-load")
        c, room, ids = await room_with_messages(stack, tmp_path, u, 1, "li-load")
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            s = await c.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"load {i}"})
            assert isinstance(s, RoomSendResponse), s
            ids.append(s.event_id)
            i += 1
        await c.close()
        return ids

    stopped = postgres_processes(postmaster)
    signal_all(stopped, signal.SIGSTOP)
    # Again, for a child forked while the first list was taken.
    more = [p for p in postgres_processes(postmaster) if p not in stopped]
    signal_all(more, signal.SIGSTOP)
    stopped += more
    try:
        confirmed_before = slot_confirmed(stack)
        ids = asyncio.run(load(60))
        # The outage was real: the replica confirmed nothing while main wrote every message.
        assert slot_confirmed(stack) == confirmed_before, "the replica kept applying during the outage"
        behind = int(sql(stack, "main", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                                        "FROM pg_replication_slots WHERE slot_name = 'mxstack_li'"))
        assert behind > 0, behind
    finally:
        signal_all(reversed(stopped), signal.SIGCONT)
    assert len(ids) > 60
    wait_replica(stack, f"SELECT count(*) FROM public.events WHERE event_id IN ({quote_list(ids)})", str(len(ids)), timeout=120)
    for table, cols in (("events", "t.*"), ("event_json", "t.*")):
        q = (f"SELECT md5(string_agg(({cols})::text, '|' ORDER BY t.event_id)) FROM {{}} t "
             f"WHERE t.event_id IN ({quote_list(ids)})")
        main_digest = sql(stack, "main", q.format(table))
        wait_replica(stack, q.format("public." + table), main_digest)


def test_main_never_failed_an_update_for_want_of_replica_identity(stack, li_ready):
    logs = stack.state / "logs"
    text = "".join((logs / f).read_text(errors="replace") for f in os.listdir(logs)
                   if f.startswith("synapse") or f == "postgres.log")
    assert "does not have a replica identity" not in text
    assert "publishes updates" not in text
