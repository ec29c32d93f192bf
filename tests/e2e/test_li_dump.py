"""Dump mode (`li.sync: dump`, issue 5) on a second local stack of its own: li-sync dumps main into
the replica (once at start, then every minute; `mxstack li dump` on demand), a room deleted with
purge on main stays in the replica's history, and Synapse LI runs on a working copy of the dump.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from conftest import Stack, run
from test_li_browsing import call


@pytest.fixture(scope="module")
def dump_stack():
    base = Path(tempfile.mkdtemp(prefix="mxstack-e2e-dump-", dir=os.environ.get("MXSTACK_E2E_DIR", "/var/tmp")))
    base.chmod(0o755)
    run("init", "--domain", "dump.mxstack.test", "--scale", "100", "--features", "li", "--dir", str(base))
    config = base / "mxstack.yaml"
    c = yaml.safe_load(config.read_text())
    c["li"]["sync"] = "dump"
    config.write_text(yaml.safe_dump(c, sort_keys=False))
    # Next to the main e2e stack's block of ports, below the kernel's ephemeral range.
    port = str(int(os.environ.get("MXSTACK_E2E_PORT", "19000")) + 500)
    up = run("up", "--config", str(config), "--base-port", port, "--replicas", "0", "--json", timeout=900)
    assert json.loads(up.stdout)["ready"] is True
    s = Stack(base)
    try:
        yield s
    finally:
        run("down", "--config", s.config, "--purge", check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def replica_sql(stack, query):
    c = yaml.safe_load((stack.state / "li-sync" / "li-sync.yaml").read_text())["replica"]
    r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                        "-h", str(stack.state / "run"), "-p", str(c["port"]), "-d", c["dbname"], "-c", query],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def dump_now(stack):
    """`mxstack li dump`; li-sync's own minutely run may hold the lock for a moment."""
    deadline = time.time() + 120
    while True:
        r = run("li", "dump", "--config", stack.config, "--json", check=False)
        if r.returncode == 0:
            return json.loads(r.stdout)
        assert "holds the lock" in r.stderr and time.time() < deadline, r.stderr
        time.sleep(2)


def test_dump_mode_keeps_a_purged_room_and_feeds_synapse_li(dump_stack):
    s = dump_stack
    status = json.loads(run("li", "status", "--config", s.config, "--json").stdout)
    assert status["mode"] == "dump" and status["healthy"], status
    assert status["last_dump"]["status"] == "success", "li-sync dumps once at start"

    u = s.user("dump-witness")
    code, room = call(s.url, "POST", "/_matrix/client/v3/createRoom", u["access_token"], {"name": "dumped"})
    assert code == 200, room
    body = f"dump evidence {os.urandom(4).hex()}"
    code, sent = call(s.url, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room['room_id'])}/send/m.room.message/t1",
                      u["access_token"], {"msgtype": "m.text", "body": body})
    assert code == 200, sent
    event_id = sent["event_id"].replace("'", "''")

    first = dump_now(s)
    assert first["rows_copied"] > 0 and first["tables"] > 100, first
    assert replica_sql(s, f"SELECT count(*) FROM event_json WHERE event_id = '{event_id}'") == "1"

    delete_id = s.admin_request("DELETE", f"/_synapse/admin/v2/rooms/{urllib.parse.quote(room['room_id'])}",
                                {"purge": True})["delete_id"]
    deadline = time.time() + 120
    while True:
        d = s.admin_request("GET", f"/_synapse/admin/v2/rooms/delete_status/{delete_id}")["status"]
        if d == "complete":
            break
        assert d != "failed" and time.time() < deadline, d
        time.sleep(1)

    second = dump_now(s)
    assert second["history_rows"] > 0, second
    # Gone from main and from the replica's tables; its original kept, with the operation.
    assert replica_sql(s, f"SELECT count(*) FROM event_json WHERE event_id = '{event_id}'") == "0"
    kept = replica_sql(s, "SELECT old_row->>'json' FROM mxstack_li.row_history "
                          f"WHERE table_name = 'event_json' AND operation = 'REMOVED' AND old_row->>'event_id' = '{event_id}'")
    assert body in kept, kept
    # Bookkeeping that changes on every run is compared but never kept.
    assert replica_sql(s, "SELECT count(*) FROM mxstack_li.row_history WHERE table_name = 'stream_positions'") == "0"

    # The browsing server came up on a working copy of the dump.
    li = next(p for p in s.refresh()["processes"] if p["name"] == "synapse-li")
    assert li["state"] == "ready", li
    code, _ = call(f"http://127.0.0.1:{li['port']}", "GET", "/_matrix/client/versions")
    assert code == 200
