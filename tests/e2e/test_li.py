"""Lawful intercept data path (issue 5) on the running local stack: main -> logical replica with
history (li-sync), media -> LI bucket. Messages go through the router with a real client
(matrix-nio); deletions through Synapse's admin API; the replica is read with psql.
"""
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.parse

import pytest
import yaml
from nio import RoomCreateResponse, RoomSendResponse

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


def test_edits_and_redactions_replicate_and_censored_originals_survive(stack, li_ready, tmp_path):
    async def go():
        u = stack.user("li-a")
        c, room, ids = await room_with_messages(stack, tmp_path, u, 5, "li-censor")
        edit = await c.room_send(room, "m.room.message", {
            "msgtype": "m.text", "body": "* edited", "m.new_content": {"msgtype": "m.text", "body": "edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": ids[1]}})
        red = await c.room_redact(room, ids[0], reason="oops")
        await c.close()
        return ids, edit.event_id, red.event_id
    ids, edit_id, red_id = asyncio.run(go())
    wait_replica(stack, f"SELECT count(*) FROM public.event_json WHERE event_id IN ({quote_list(ids + [edit_id, red_id])})",
                 str(len(ids) + 2))
    assert sql(stack, "replica", f"SELECT count(*) FROM public.redactions WHERE redacts = '{ids[0]}'") == "1"
    # Synapse censors a redacted event after redaction_retention_period (default 7 days, kept on
    # main) with this UPDATE; its censor job runs every 5 minutes, so the test runs the same
    # statement on main as the synapse role.
    sql(stack, "main", f"SET ROLE synapse; UPDATE event_json SET json = '{{\"censored\": true}}' WHERE event_id = '{ids[0]}'")
    wait_replica(stack, f"SELECT json FROM public.event_json WHERE event_id = '{ids[0]}'", '{"censored": true}')
    original = sql(stack, "replica",
                   "SELECT old_row->>'json' FROM mxstack_li.row_history WHERE table_name = 'event_json' "
                   f"AND operation = 'UPDATE' AND old_row->>'event_id' = '{ids[0]}'")
    assert json.loads(original)["content"]["body"] == "li-censor 0"


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


def test_replica_down_60s_under_load_catches_up_with_identical_rows(stack, li_ready, tmp_path):
    pid = next(p["pid"] for p in stack.refresh()["processes"] if p["name"] == "postgres-li")
    pgid = os.getpgid(pid)

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

    os.killpg(pgid, signal.SIGSTOP)
    try:
        ids = asyncio.run(load(60))
    finally:
        os.killpg(pgid, signal.SIGCONT)
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
