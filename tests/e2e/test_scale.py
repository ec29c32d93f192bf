"""Issue 22 item 4: `mxstack scale` changes the worker layout of a running stack under load.

A stack of this module's own (base port 26000, no optional feature, one process per group) takes
a steady message load in four rooms from a real client (matrix-nio) while:
- synchrotrons and generic workers are added: live, no running Synapse process restarts, and the
  router (reloaded in place) sends requests to the new ones;
- a second event persister is added: a coordinated restart (every Synapse process stops before
  any starts with the new `stream_writers`), after which both persisters write events;
- it is removed again (coordinated).
Every message Synapse acknowledged is there afterwards. Refused: a writer change while a Synapse
process is not ready, and a group that does not exist.
"""
import asyncio
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from nio import AsyncClient

from conftest import Stack, run
from load import Load, missing

PORT = 26000
ROOMS = 4


@pytest.fixture(scope="module")
def scale_stack():
    base = Path(tempfile.mkdtemp(prefix="mxstack-scale-", dir="/var/tmp"))
    base.chmod(0o755)
    run("init", "--domain", "scale.mxstack.test", "--scale", "1k", "--features", "", "--dir", str(base))
    config = str(base / "mxstack.yaml")
    try:
        run("up", "--config", config, "--base-port", str(PORT), "--replicas", "1", "--json", timeout=900)
        yield Stack(base)
    finally:
        run("down", "--config", config, "--purge", check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def shard(room_id, writers):
    """The event persister Synapse picks for a room (ShardedWorkerHandlingConfig._get_instance)."""
    h = int.from_bytes(hashlib.sha256(room_id.encode()).digest(), byteorder="little")
    return writers[h % len(writers)]


async def make_rooms(stack, user, n):
    """`n` rooms, at least one for each of two event persisters (so both must write)."""
    c = AsyncClient(stack.url, user["user_id"])
    c.restore_login(user["user_id"], user["device_id"], user["access_token"])
    writers = ["synapse-event-persister-0", "synapse-event-persister-1"]
    rooms = []
    while len(rooms) < n or len({shard(r, writers) for r in rooms}) < 2:
        rooms.append((await c.room_create(name=f"scale {len(rooms)}")).room_id)
        assert len(rooms) < 30
    await c.close()
    return rooms


def synapse_pids(stack):
    return {p["name"]: p["pid"] for p in stack.refresh()["processes"]
            if p["name"].startswith("synapse-") and p["state"] == "ready"}


def scale(stack, *changes, check=True):
    r = run("scale", "--config", stack.config, *changes, "--json", check=check, timeout=900)
    return r if not check else json.loads(r.stdout)


def router_servers_up(server):
    """The router's own view (HAProxy's stats CSV, on the port after the router's): is `server`
    UP in some backend?"""
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT + 1}/stats;csv", timeout=10) as r:
        rows = r.read().decode().splitlines()
    return any(row.split(",")[1:2] == [server] and ",UP," in row for row in rows)


def test_scale_live_and_coordinated_under_load_loses_nothing(scale_stack):
    stack = scale_stack
    user = stack.user("load")
    rooms = asyncio.run(make_rooms(stack, user, ROOMS))
    load = Load(stack, user, rooms)
    load.thread.start()
    time.sleep(5)
    try:
        before = synapse_pids(stack)
        live = scale(stack, "synchrotron=2", "generic=2")
        assert live["mode"] == "live", live
        after = synapse_pids(stack)
        # Live: nothing that ran was restarted; two processes joined.
        assert all(after[n] == pid for n, pid in before.items()), (before, after)
        assert {"synapse-synchrotron-1", "synapse-generic-1"} <= set(after) - set(before), after
        deadline = time.time() + 30
        while not router_servers_up("synapse-synchrotron-1"):
            assert time.time() < deadline, "the router never sent to synapse-synchrotron-1"
            time.sleep(1)

        up = scale(stack, "event-persister=2")
        assert up["mode"] == "coordinated_restart", up
        after_up = synapse_pids(stack)
        assert "synapse-event-persister-1" in after_up, after_up
        assert all(after_up[n] != pid for n, pid in after.items()), "a process kept running through a coordinated restart"
        time.sleep(15)
        writers = stack.psql("synapse", "SELECT DISTINCT instance_name FROM events WHERE type = 'm.room.message' "
                              "AND stream_ordering > (SELECT max(stream_ordering) - 100 FROM events)")
        assert set(writers.split()) == {"synapse-event-persister-0", "synapse-event-persister-1"}, writers

        down = scale(stack, "event-persister=1")
        assert down["mode"] == "coordinated_restart", down
        assert "synapse-event-persister-1" not in synapse_pids(stack)
        time.sleep(5)
    finally:
        load.stop.set()
        load.thread.join(60)
    print(f"scale: live {live.get('took_seconds'):.1f} s, persisters 1→2 {up.get('took_seconds'):.1f} s, "
          f"2→1 {down.get('took_seconds'):.1f} s; {len(load.acked)} acknowledged, {load.failed} not acknowledged")
    assert len(load.acked) > 200, (len(load.acked), load.failed)
    lost = asyncio.run(missing(stack, user, load.acked))
    assert lost == [], f"{len(lost)} acknowledged messages lost: {lost[:5]}"
    # Still serving on the shape it ended with, and `up` keeps it across down/up (recorded).
    shape = json.loads((stack.state / "up-args.json").read_text())
    assert shape["groups"] == {"synchrotron": 2, "generic": 2, "event-persister": 1}, shape


def test_a_writer_change_while_a_process_is_not_ready_is_refused(scale_stack):
    stack = scale_stack
    pid, _, _ = stack.pid("synapse-pusher-0")
    subprocess.run(["kill", "-9", str(pid)], check=True)
    deadline = time.time() + 10
    while stack.pid("synapse-pusher-0")[2] == "ready":
        assert time.time() < deadline, "the supervisor never saw the pusher die"
        time.sleep(0.2)
    r = scale(stack, "event-persister=2", check=False)
    assert r.returncode != 0 and "not every Synapse process is ready" in r.stderr and "synapse-pusher-0" in r.stderr, r.stderr
    shape = json.loads((stack.state / "up-args.json").read_text())
    assert shape["groups"].get("event-persister", 1) == 1, shape
    # The watcher brings it back; the stack is whole again.
    deadline = time.time() + 120
    while stack.pid("synapse-pusher-0")[2] != "ready":
        assert time.time() < deadline, "the pusher did not come back"
        time.sleep(1)


def test_a_group_that_does_not_exist_is_refused_with_the_list(scale_stack):
    r = scale(scale_stack, "background=2", check=False)
    assert r.returncode != 0 and "not a scalable worker group" in r.stderr and "synchrotron" in r.stderr, r.stderr
    r = scale(scale_stack, "generic=9", check=False)
    assert r.returncode != 0 and "1 to 8" in r.stderr, r.stderr
