"""Issue 3 end-to-end: the local stack with a real Matrix client (matrix-nio) through the router.

1. the messaging flow a user goes through; 2. which worker served each request family, from the
router's log; 3. faults: killed workers and a Redis master failover, with no lost message.
"""
import asyncio
import os
import re
import signal
import socket
import time
import zlib
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from nio import (AsyncClient, AsyncClientConfig, JoinResponse,
                 KeysUploadResponse, LoginResponse, MessageDirection, RoomCreateResponse, RoomMessagesResponse,
                 RoomSendResponse, SyncResponse, UploadResponse)




async def login(stack, user, tmp_path, encryption=False, password=True):
    """A client for `user`: a real password login, or (to stay under Synapse's per-address login
    rate limit) the session `mxstack user add` returned."""
    store = tmp_path / f"store-{user['user_id'].split(':')[0][1:]}-{int(time.time() * 1000)}"
    store.mkdir(parents=True, exist_ok=True)
    c = AsyncClient(stack.url, user["user_id"], store_path=str(store),
                    config=AsyncClientConfig(encryption_enabled=encryption, store_sync_tokens=False))
    if password:
        r = await c.login(user["password"], device_name="e2e")
        assert isinstance(r, LoginResponse), r
    else:
        c.restore_login(user["user_id"], user["device_id"], user["access_token"])
    return c


# Timelines as long as the test's bursts, so an incremental sync is never "limited".
FULL = {"room": {"timeline": {"limit": 500}}}


def bodies(events):
    return [e.body for e in events if hasattr(e, "body")]


async def sync_until(client, predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.sync(timeout=1000, sync_filter=FULL)
        assert isinstance(r, SyncResponse), r
        if predicate(r):
            return r
    raise AssertionError("condition not met within %.0fs" % timeout)


def router_lines(stack):
    """(backend, server, status, user_hash, method, path) for each request the router logged."""
    out = []
    pat = re.compile(r" matrix (\S+)/(\S+) \S+ (\d{3}) .* user=(\S+) \"(\S+) (\S+)\"")
    for line in stack.log("router").splitlines():
        m = pat.search(line)
        if m:
            out.append(m.groups())
    return out


def token_hash(token):
    return str(zlib.crc32(token.encode()))


@pytest.fixture(scope="module")
def flow(stack, tmp_path_factory):
    """Runs the whole messaging flow once; tests below assert on its results and on the log."""
    tmp = tmp_path_factory.mktemp("nio")
    result = {}

    async def main():
        u1, u2 = stack.user("alice"), stack.user("bob")
        a = await login(stack, u1, tmp, encryption=True)
        b = await login(stack, u2, tmp, encryption=True)
        result["tokens"] = {"alice": a.access_token, "bob": b.access_token}
        await a.sync(timeout=0)
        await b.sync(timeout=0)
        # Device keys: both upload theirs (bob queries alice's once they share a room).
        for c in (a, b):
            r = await c.keys_upload()
            assert isinstance(r, KeysUploadResponse), r

        room = await a.room_create(name="e2e", invite=[u2["user_id"]])
        assert isinstance(room, RoomCreateResponse), room
        rid = room.room_id
        result["room"] = rid
        await sync_until(a, lambda r: rid in a.rooms)
        await sync_until(b, lambda r: rid in r.rooms.invite)
        assert isinstance(await b.join(rid), JoinResponse)
        # nio only queries keys for encrypted rooms; ask the endpoint directly as bob.
        import aiohttp
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{stack.url}/_matrix/client/v3/keys/query",
                              json={"device_keys": {u1["user_id"]: []}},
                              headers={"Authorization": f"Bearer {b.access_token}"}) as resp:
                q = await resp.json()
        devices = q.get("device_keys", {}).get(u1["user_id"], {})
        result["keys_query_ok"] = a.device_id in devices and "keys" in devices[a.device_id]
        result["alice_devices"] = list(devices)
        await a.set_displayname("Alice E2E")
        await b.sync(timeout=0, sync_filter=FULL)
        # Bob long-polls /sync while alice sends, as a client does: every message arrives incrementally.
        got = []

        async def receive():
            deadline = time.monotonic() + 60
            while len([x for x in got if x.startswith("message ")]) < 100 and time.monotonic() < deadline:
                r = await b.sync(timeout=1000, sync_filter=FULL)
                if isinstance(r, SyncResponse) and rid in r.rooms.join:
                    got.extend(bodies(r.rooms.join[rid].timeline.events))

        receiver = asyncio.ensure_future(receive())
        sent = []
        for i in range(100):
            r = await a.room_send(rid, "m.room.message", {"msgtype": "m.text", "body": f"message {i}"})
            assert isinstance(r, RoomSendResponse), r
            sent.append(r.event_id)
        result["sent"] = sent
        await receiver
        result["incremental"] = got
        # Initial sync from a fresh login sees the room and the latest message.
        b2 = await login(stack, u2, tmp, password=False)
        r = await b2.sync(timeout=0, full_state=True)
        result["initial_has_room"] = rid in r.rooms.join
        result["initial_last"] = bodies(r.rooms.join[rid].timeline.events)[-1:] if rid in r.rooms.join else []
        # Paginate the whole history backwards.
        # The initial sync's own timeline plus everything before it, page by page.
        token, history = r.rooms.join[rid].timeline.prev_batch, bodies(r.rooms.join[rid].timeline.events)
        for _ in range(30):
            m = await b2.room_messages(rid, start=token, limit=20, direction=MessageDirection.back)
            assert isinstance(m, RoomMessagesResponse), m
            history += bodies(m.chunk)
            if not m.end or not m.chunk:
                break
            token = m.end
        result["history"] = history
        # Edit and redact.
        edit = await a.room_send(rid, "m.room.message", {
            "msgtype": "m.text", "body": "* message 0 edited",
            "m.new_content": {"msgtype": "m.text", "body": "message 0 edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": sent[0]}})
        result["edit_ok"] = isinstance(edit, RoomSendResponse)
        red = await a.room_redact(rid, sent[1], reason="e2e")
        result["redact_ok"] = hasattr(red, "event_id")
        # Typing, receipts, presence as bob sees them.
        await a.room_typing(rid, typing_state=True, timeout=10000)
        await a.room_read_markers(rid, fully_read_event=sent[-1], read_event=sent[-1])
        await a.set_presence("online", "testing")
        seen = {"typing": False, "receipt": False}

        def ephemeral(r):
            if rid in r.rooms.join:
                for e in r.rooms.join[rid].ephemeral:
                    name = type(e).__name__
                    if name == "TypingNoticeEvent" and u1["user_id"] in e.users:
                        seen["typing"] = True
                    if name == "ReceiptEvent":
                        seen["receipt"] = True
            return all(seen.values())
        await sync_until(b, ephemeral)
        result["ephemeral"] = seen
        p = await b.get_presence(u1["user_id"])
        result["presence"] = getattr(p, "presence", None)
        dn = await b.get_displayname(u1["user_id"])
        result["displayname"] = getattr(dn, "displayname", None)
        # Media: upload, then download through the authenticated endpoint, byte for byte.
        payload = os.urandom(256 * 1024)
        import io
        up, _ = await a.upload(io.BytesIO(payload), content_type="application/octet-stream",
                               filename="blob.bin", filesize=len(payload))
        assert isinstance(up, UploadResponse), up
        result["mxc"] = up.content_uri
        server, media_id = up.content_uri[len("mxc://"):].split("/", 1)
        import aiohttp
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{stack.url}/_matrix/client/v1/media/download/{server}/{media_id}",
                             headers={"Authorization": f"Bearer {b.access_token}"}) as resp:
                result["download_status"] = resp.status
                result["download_equal"] = (await resp.read()) == payload
        result["media_id"] = media_id
        result["payload"] = payload
        for c in (a, b, b2):
            await c.close()

    asyncio.run(main())
    return result


def test_messages_are_delivered_and_paginated(flow):
    expected = [f"message {i}" for i in range(100)]
    assert [x for x in flow["incremental"] if x.startswith("message ")] == expected
    assert flow["initial_has_room"] and flow["initial_last"] == ["message 99"]
    assert sorted(x for x in flow["history"] if x.startswith("message ")) == sorted(expected)
    assert len(flow["sent"]) == 100


def test_edit_redact_typing_receipts_presence_profile(flow):
    assert flow["edit_ok"] and flow["redact_ok"]
    assert flow["ephemeral"] == {"typing": True, "receipt": True}
    assert flow["presence"] == "online"
    assert flow["displayname"] == "Alice E2E"


def test_device_keys_upload_and_query(flow):
    assert flow["keys_query_ok"]
    assert len(flow["alice_devices"]) >= 1


def test_media_roundtrip_and_object_in_s3(flow, stack):
    assert flow["download_status"] == 200 and flow["download_equal"]
    s3 = boto3.client("s3", endpoint_url=stack.status["s3_endpoint"], region_name="us-east-1",
                      aws_access_key_id=stack.secret("s3_access_key"),
                      aws_secret_access_key=stack.secret("s3_secret_key"),
                      config=BotoConfig(s3={"addressing_style": "path"}))
    bucket = stack.status["s3_bucket"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    # Synapse's file layout: local_content/ab/cd/rest-of-the-media-id.
    media_id = flow["media_id"]
    key = f"local_content/{media_id[:2]}/{media_id[2:4]}/{media_id[4:]}"
    assert key in keys, keys
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == flow["payload"]


# Request family -> the router backend the endpoint table intends (first match wins).
FAMILIES = [
    ("sync", r"/_matrix/client/v3/sync", "synchrotron-by-user"),
    ("messages", r"/_matrix/client/v3/rooms/[^/]+/messages", "generic-by-room"),
    ("send", r"/_matrix/client/v3/rooms/[^/]+/send/", "generic-by-room"),
    ("redact", r"/_matrix/client/v3/rooms/[^/]+/redact/", "generic-by-room"),
    ("typing", r"/_matrix/client/v3/rooms/[^/]+/typing/", "stream-writer"),
    ("receipts", r"/_matrix/client/v3/rooms/[^/]+/read_markers", "stream-writer"),
    ("presence-set", r"/_matrix/client/v3/presence/", "stream-writer"),
    ("keys-upload", r"/_matrix/client/v3/keys/upload", "stream-writer"),
    ("keys-query", r"/_matrix/client/v3/keys/query", "generic"),
    ("profile", r"/_matrix/client/v3/profile/", "generic"),
    ("create-room", r"/_matrix/client/v3/createRoom", "generic"),
    ("login", r"/_matrix/client/v3/login", "generic"),
    ("upload", r"/_matrix/media/v3/upload", "media"),
    # Downloads pass through the content scanner (feature antivirus), which fetches from media.
    ("download", r"/_matrix/client/v1/media/download/", "content-scanner"),
]


def test_router_sends_each_family_to_its_worker(flow, stack):
    lines = router_lines(stack)
    assert lines, "router logged nothing"
    for family, pattern, backend in FAMILIES:
        hits = [l for l in lines if re.match(pattern, l[5])]
        assert hits, f"no {family} request in the router log"
        wrong = [l for l in hits if l[0] != backend]
        assert not wrong, f"{family}: expected backend {backend}, got {set(l[0] for l in wrong)}"
        # Served by a worker of that backend's group, never the main fallback.
        group = backend.replace("-by-user", "").replace("-by-room", "")
        expected = "content-scanner" if backend == "content-scanner" else f"synapse-{group}-"
        assert all(l[1].startswith(expected) for l in hits), f"{family}: servers {set(l[1] for l in hits)}"


def test_sticky_routing_per_user_and_per_room(flow, stack):
    lines = router_lines(stack)
    for name, token in flow["tokens"].items():
        servers = {l[1] for l in lines if l[0] == "synchrotron-by-user" and l[3] == token_hash(token)}
        assert len(servers) == 1, f"{name}'s /sync went to {servers}"
    rid = flow["room"]
    from urllib.parse import quote
    room_servers = {l[1] for l in lines if "/messages" in l[5] and (rid in l[5] or quote(rid) in l[5])}
    assert len(room_servers) == 1, room_servers
    sends = {l[1] for l in lines if l[0] == "generic-by-room" and "/send/" in l[5] and (rid in l[5] or quote(rid) in l[5])}
    assert len(sends) == 1, sends


def redis(port, password, *cmd):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    payload = b""
    for c in [("AUTH", password), cmd]:
        payload += f"*{len(c)}\r\n".encode() + b"".join(f"${len(x)}\r\n{x}\r\n".encode() for x in c)
    s.sendall(payload)
    time.sleep(0.3)
    data = s.recv(65536).decode(errors="replace")
    s.close()
    return data


def test_faults_workers_killed_and_redis_failover(flow, stack, tmp_path):
    """kill -9 a generic worker and a synchrotron mid-loop, then stop the Redis master."""
    async def main():
        u1, u2 = stack.user("carol"), stack.user("dave")
        a = await login(stack, u1, tmp_path, password=False)
        b = await login(stack, u2, tmp_path, password=False)
        rid = (await a.room_create(name="faults", invite=[u2["user_id"]])).room_id
        await sync_until(a, lambda r: rid in a.rooms)
        await sync_until(b, lambda r: rid in r.rooms.invite)
        await b.join(rid)
        await b.sync(timeout=0)
        ok_bodies, failures = [], 0
        recovery = {}

        async def send(i):
            nonlocal failures
            r = await a.room_send(rid, "m.room.message", {"msgtype": "m.text", "body": f"f{i}"})
            if isinstance(r, RoomSendResponse):
                ok_bodies.append(f"f{i}")
                return True
            failures += 1
            return False

        i = 0
        for victim in ("synapse-generic-0", "synapse-synchrotron-0"):
            pid, restarts, _ = stack.pid(victim)
            for _ in range(10):
                await send(i); i += 1
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            # Clients recover: a send and a sync both succeed again within 10 s.
            while True:
                sent_ok = await send(i); i += 1
                s = await b.sync(timeout=0)
                if sent_ok and isinstance(s, SyncResponse):
                    break
                assert time.monotonic() - killed < 10, f"no recovery 10 s after killing {victim}"
                await asyncio.sleep(0.2)
            recovery[victim] = time.monotonic() - killed
            # The supervisor restarts the victim.
            deadline = time.monotonic() + 120
            while True:
                npid, nrestarts, state = stack.pid(victim)
                if nrestarts > restarts and state == "ready":
                    break
                assert time.monotonic() < deadline, f"{victim} was not restarted: {state}"
                await send(i); i += 1
                await asyncio.sleep(0.5)

        # Redis: freeze the master; Sentinel promotes a replica; the master endpoint follows.
        pw = stack.secret("redis_password")
        procs = {p["name"]: p for p in stack.refresh()["processes"]}
        sentinel_port = procs["sentinel-0"]["port"]
        master_port = procs["valkey-master"]["port"]
        before = redis(sentinel_port, pw, "SENTINEL", "get-master-addr-by-name", "mxstack")
        old = procs["valkey-0"]
        assert str(old["port"]) in before, before
        os.kill(old["pid"], signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            while str(old["port"]) in redis(sentinel_port, pw, "SENTINEL", "get-master-addr-by-name", "mxstack"):
                assert time.monotonic() - t0 < 60, "Sentinel did not promote a replica"
                await send(i); i += 1
                await asyncio.sleep(0.5)
            t1 = time.monotonic()
            while "role:master" not in redis(master_port, pw, "INFO", "replication"):
                assert time.monotonic() - t1 < 30, "the master endpoint did not follow the failover"
                await asyncio.sleep(0.5)
            # Synapse keeps working without a restart: sends on the workers, sync on the synchrotron.
            for _ in range(20):
                await send(i); i += 1
        finally:
            os.kill(old["pid"], signal.SIGCONT)
        # No message lost: everything whose send returned 200 is in the room.
        deadline, seen = time.monotonic() + 60, set()
        token = None
        while time.monotonic() < deadline:
            m = await b.room_messages(rid, start=token, limit=100, direction=MessageDirection.back)
            if isinstance(m, RoomMessagesResponse):
                seen |= set(bodies(m.chunk))
                token = m.end
                if not m.chunk or not m.end:
                    if set(ok_bodies) <= seen:
                        break
                    token = None
            await asyncio.sleep(0.5)
        missing = set(ok_bodies) - seen
        assert not missing, f"{len(missing)} acknowledged messages are missing: {sorted(missing)[:10]}"
        assert len(ok_bodies) > 40
        await a.close(); await b.close()
        return recovery

    recovery = asyncio.run(main())
    print("recovery seconds:", recovery)
