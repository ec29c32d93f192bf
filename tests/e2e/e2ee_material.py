"""E2EE material on a running stack, made by a real client, for tests of the LI side's decryption.

`make_e2ee_material(stack, workdir)` (stack: conftest.Stack; workdir: a directory for the clients'
stores) makes, through the router:

- users alice and bob, each a matrix-nio 0.26 AsyncClient with encryption (vodozemac) on the device
  `mxstack user add` created; a room with m.room.encryption (m.megolm.v1.aes-sha2); each trusts
  the other's device; encrypted messages sent with nio: alice "e2ee-1 <run>", bob "e2ee-2 <run>"
  (alice decrypts it, so she holds bob's inbound session), alice "e2ee-3 <run>" and its edit
  (m.new_content, m.relates_to m.replace; nio copies m.relates_to into the clear content of the
  m.room.encrypted event, as Element does), alice "e2ee-4 <run>", then redacted;
  an unencrypted room with one message of alice ("plain-1 <run>") for contrast;
- alice's server-side key backup as Element makes it (nio has none): a vodozemac.PkDecryption key
  pair, POST room_keys/version (m.megolm_backup.v1.curve25519-aes-sha2, auth_data signed by her
  device), every inbound Megolm session of hers exported at its first known index, encrypted
  with vodozemac.PkEncryption to {ephemeral, ciphertext, mac} and PUT to room_keys/keys; read
  back, each session decrypted with the backup key and each encrypted event of the room decrypted
  with the session from the backup (so the format round-trips end to end);
- secret storage for alice (m.secret_storage.v1.aes-hmac-sha2 default key, the backup key stored
  as the m.megolm_backup.v1 secret) and its recovery key;
- escrow through the router: a random recovery key is refused (400), alice's accepted (200).

Returned dict (JSON-serialisable):

    {"run": "<hex>", "elapsed_s": 12.3,
     "users": {"alice": {"user_id", "device_id", "access_token", "password", "curve25519", "ed25519"},
               "bob":   {... the same}},
     "room_id": "!enc:...", "plain_room_id": "!plain:...",
     "events": [   # the encrypted room, in send order; every one is m.room.encrypted on the server
        {"event_id", "room_id", "sender", "ts", "plaintext", "kind": "message", "session_id", "sender_key"},
        ...  e2ee-1 (alice), e2ee-2 (bob), e2ee-3 (alice),
        {... "kind": "edit", "plaintext": "e2ee-3 <run> edited" (m.new_content.body),
             "body": "* e2ee-3 <run> edited" (fallback body), "replaces": "<e2ee-3's event id>"},
        {... "kind": "redacted", "plaintext": "e2ee-4 <run>", "redacted_by": "<redaction event id>"}],
     "plain_events": [{"event_id", "room_id", "sender", "ts", "plaintext": "plain-1 <run>", "kind": "plain"}],
     "recovery_key": "EsT... (base58, groups of 4)",
     "backup_version": "1", "backup_public_key": "<unpadded base64>",
     "backup_private_key": "<unpadded base64, the m.megolm_backup.v1 secret>",
     "backup_sessions": [{"room_id", "session_id", "sender_key", "first_message_index", "sender": "alice"|"bob"}],
     "secret_storage_key_id": "<id>",
     "escrow": {"wrong_status": 400, "wrong_response": {...}, "status": 200, "response": {...}}}

`ts` is origin_server_ts as the server returns it (GET /rooms/{room}/event/{id}).
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import vodozemac
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nio import (AsyncClient, AsyncClientConfig, JoinResponse, KeysQueryResponse, KeysUploadResponse,
                 RoomCreateResponse, RoomMessageText, RoomRedactResponse,
                 RoomSendResponse, SyncResponse)

ESCROW = "/_synapse/client/mxstack/escrow"
MEGOLM = "m.megolm.v1.aes-sha2"
BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


# --- shared with test_escrow.py: plain client-API calls, recovery keys and secret storage -------

def b64(b: bytes) -> str:
    """Unpadded base64, as Matrix writes keys."""
    return base64.b64encode(b).decode().rstrip("=")


def unb64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def call(base, method, path, body=None, token=None):
    """(status, JSON body) of one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def recovery_key_text(key: bytes) -> str:
    """The recovery key of a 32-byte secret-storage key (spec: Key representation)."""
    raw = b"\x8b\x01" + key
    parity = 0
    for b in raw:
        parity ^= b
    raw += bytes([parity])
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    out = "1" * (len(raw) - len(raw.lstrip(b"\x00"))) + out
    return " ".join(out[i:i + 4] for i in range(0, len(out), 4))


def ssss_encrypt(key: bytes, name: str, plaintext: bytes) -> dict:
    """One m.secret_storage.v1.aes-hmac-sha2 secret: HKDF-SHA256, AES-256-CTR, HMAC-SHA256."""
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=b"\x00" * 32, info=name.encode()).derive(key)
    iv = bytearray(os.urandom(16))
    iv[8] &= 0x7F
    enc = Cipher(algorithms.AES(okm[:32]), modes.CTR(bytes(iv))).encryptor()
    ct = enc.update(plaintext) + enc.finalize()
    mac = hmac.new(okm[32:], ct, hashlib.sha256).digest()
    return {"iv": base64.b64encode(bytes(iv)).decode(), "ciphertext": base64.b64encode(ct).decode(),
            "mac": base64.b64encode(mac).decode()}


def setup_secret_storage(base, user_id, token, backup_key_b64, with_key_id=False):
    """Secret storage as a client sets it up: a default key and the backup key stored under it.
    Returns the recovery key (and the key id with `with_key_id`)."""
    ssss = os.urandom(32)
    key_id = secrets.token_hex(8)
    check = ssss_encrypt(ssss, "", b"\x00" * 32)
    put = lambda t, c: call(base, "PUT", f"/_matrix/client/v3/user/{user_id}/account_data/{t}", c, token)
    assert put(f"m.secret_storage.key.{key_id}", {"algorithm": "m.secret_storage.v1.aes-hmac-sha2",
                                                   "iv": check["iv"], "mac": check["mac"]})[0] == 200
    assert put("m.secret_storage.default_key", {"key": key_id})[0] == 200
    enc = ssss_encrypt(ssss, "m.megolm_backup.v1", backup_key_b64.encode())
    assert put("m.megolm_backup.v1", {"encrypted": {key_id: enc}})[0] == 200
    recovery = recovery_key_text(ssss)
    return (recovery, key_id) if with_key_id else recovery


# --- the material ---------------------------------------------------------------------------------

# Timelines as long as the run, so an incremental sync is never "limited".
FULL = {"room": {"timeline": {"limit": 100}}}


def canonical_json(o) -> str:
    return json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


async def _client(stack, user, store: Path) -> AsyncClient:
    """nio with encryption on the device `mxstack user add` made (no password login: Synapse
    limits logins per address), its device keys uploaded."""
    store.mkdir(parents=True, exist_ok=True)
    c = AsyncClient(stack.url, user["user_id"], device_id=user["device_id"], store_path=str(store),
                    config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False))
    c.restore_login(user["user_id"], user["device_id"], user["access_token"])
    assert c.olm is not None, "nio has no encryption support (vodozemac missing?)"
    r = await c.sync(timeout=0, full_state=True, sync_filter=FULL)
    assert isinstance(r, SyncResponse), r
    if c.should_upload_keys:
        r = await c.keys_upload()
        assert isinstance(r, KeysUploadResponse), r
    return c


async def _sync_until(c: AsyncClient, predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await c.sync(timeout=1000, sync_filter=FULL)
        assert isinstance(r, SyncResponse), r
        if c.should_query_keys:
            assert isinstance(await c.keys_query(), KeysQueryResponse)
        if predicate(r):
            return r
    raise AssertionError(f"{c.user_id}: {what} not seen within {timeout:.0f}s")


def _decrypted(room_id, body):
    """A sync predicate: a decrypted text message with this body arrived in room_id (an event
    nio could not decrypt stays a MegolmEvent and does not count)."""
    def p(r):
        room = r.rooms.join.get(room_id)
        return room is not None and any(isinstance(e, RoomMessageText) and e.body == body for e in room.timeline.events)
    return p


def _trust(c: AsyncClient, other_user_id: str) -> str:
    """Verifies every device of the other user that nio knows; returns the (one) device id."""
    devices = list(c.device_store.active_user_devices(other_user_id))
    assert devices, f"{c.user_id} knows no device of {other_user_id}"
    for d in devices:
        c.verify_device(d)
    return devices[0].id


async def _send(c: AsyncClient, room_id, content) -> str:
    r = await c.room_send(room_id, "m.room.message", content)
    assert isinstance(r, RoomSendResponse), r
    return r.event_id


async def _event(c: AsyncClient, room_id, event_id) -> dict:
    """The event as the server returns it: GET /rooms/{room}/event/{id}. Not nio's room_get_event:
    it decrypts what it can and its event's `source` is then the decrypted payload."""
    code, r = call(c.homeserver, "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(event_id)}", None,
                   c.access_token)
    assert code == 200, r
    return r


def _session_data(public_key_b64: str, session: dict) -> dict:
    """m.megolm_backup.v1.curve25519-aes-sha2 session_data of one session."""
    m = vodozemac.PkEncryption.from_key(vodozemac.Curve25519PublicKey.from_base64(public_key_b64)).encrypt(
        json.dumps(session).encode())
    return {"ephemeral": b64(m.ephemeral_key), "ciphertext": b64(m.ciphertext), "mac": b64(m.mac)}


def _open_session_data(backup_key: vodozemac.PkDecryption, data: dict) -> dict:
    m = vodozemac.Message.from_base64(data["ciphertext"], data["mac"], data["ephemeral"])
    return json.loads(bytes(backup_key.decrypt(m)))


async def _make(stack, workdir: Path) -> dict:
    started = time.monotonic()
    run = stack._run
    ua, ub = stack.user("alice"), stack.user("bob")
    a = await _client(stack, ua, workdir / "alice")
    b = await _client(stack, ub, workdir / "bob")
    try:
        return await _material(stack, run, ua, ub, a, b, started)
    finally:
        await a.close()
        await b.close()


async def _material(stack, run, ua, ub, a: AsyncClient, b: AsyncClient, started) -> dict:
    out = {"run": run, "users": {}, "events": [], "plain_events": []}
    for name, u, c in (("alice", ua, a), ("bob", ub, b)):
        keys = c.olm.account.identity_keys
        out["users"][name] = {"user_id": u["user_id"], "device_id": c.device_id, "access_token": c.access_token,
                              "password": u.get("password"), "curve25519": keys["curve25519"],
                              "ed25519": keys["ed25519"]}

    # The encrypted room: alice creates it with m.room.encryption and invites bob, bob joins.
    r = await a.room_create(name=f"e2ee {run}", invite=[ub["user_id"]], initial_state=[
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}])
    assert isinstance(r, RoomCreateResponse), r
    room = out["room_id"] = r.room_id
    await _sync_until(b, lambda r: room in r.rooms.invite, "the invite")
    assert isinstance(await b.join(room), JoinResponse)
    for c in (a, b):
        await _sync_until(c, lambda r, c=c: room in c.rooms and c.rooms[room].encrypted
                          and ub["user_id"] in c.rooms[room].users, "the encrypted room with bob joined")
    # Both know the other's device (a key query after the membership change) and trust it.
    for c, other in ((a, ub), (b, ua)):
        await _sync_until(c, lambda r, c=c, other=other: any(True for _ in c.device_store.active_user_devices(other["user_id"])),
                          f"the device of {other['user_id']}")
        assert _trust(c, other["user_id"]) == other["device_id"]

    def record(c, event_id, plaintext, kind, source, **extra):
        content = source["content"]
        assert source["type"] == "m.room.encrypted" and content["algorithm"] == MEGOLM, source
        assert plaintext not in json.dumps(source), "the plaintext is on the wire"
        e = {"event_id": event_id, "room_id": room, "sender": c.user_id, "ts": source["origin_server_ts"],
             "plaintext": plaintext, "kind": kind, "session_id": content["session_id"],
             "sender_key": content.get("sender_key"), **extra}
        out["events"].append(e)
        return e

    wire = {}  # event id -> the event as sent, for the round-trip check (e2ee-4's content goes with the redaction)

    async def send(c, content, kind, plaintext, **extra):
        event_id = await _send(c, room, content)
        wire[event_id] = await _event(c, room, event_id)
        return record(c, event_id, plaintext, kind, wire[event_id], **extra)

    t1, t2, t3, t4 = (f"e2ee-{i} {run}" for i in range(1, 5))
    await send(a, {"msgtype": "m.text", "body": t1}, "message", t1)
    await _sync_until(b, _decrypted(room, t1), f"bob decrypting {t1!r}")
    await send(b, {"msgtype": "m.text", "body": t2}, "message", t2)
    # Alice decrypts bob's message: she now holds bob's inbound Megolm session.
    await _sync_until(a, _decrypted(room, t2), f"alice decrypting {t2!r}")
    m3 = await send(a, {"msgtype": "m.text", "body": t3}, "message", t3)
    edited = f"{t3} edited"
    relates = {"rel_type": "m.replace", "event_id": m3["event_id"]}
    edit = await send(a, {"msgtype": "m.text", "body": f"* {edited}", "m.new_content": {"msgtype": "m.text", "body": edited},
                          "m.relates_to": relates}, "edit", edited, body=f"* {edited}", replaces=m3["event_id"])
    # nio (AsyncClient.encrypt) copies m.relates_to into the clear content of m.room.encrypted,
    # as Element does; it also stays in the encrypted payload (the spec: the clear one counts).
    assert wire[edit["event_id"]]["content"].get("m.relates_to") == relates, wire[edit["event_id"]]
    m4 = await send(a, {"msgtype": "m.text", "body": t4}, "redacted", t4)
    red = await a.room_redact(room, m4["event_id"], reason="e2ee material")
    assert isinstance(red, RoomRedactResponse), red
    m4["redacted_by"] = red.event_id
    redacted = await _event(a, room, m4["event_id"])
    assert "ciphertext" not in redacted["content"], redacted

    # For contrast: an unencrypted room with one plain message.
    r = await a.room_create(name=f"plain {run}")
    assert isinstance(r, RoomCreateResponse), r
    plain = out["plain_room_id"] = r.room_id
    await _sync_until(a, lambda r: plain in a.rooms, "the plain room")
    p1 = f"plain-1 {run}"
    pid = await _send(a, plain, {"msgtype": "m.text", "body": p1})
    src = await _event(a, plain, pid)
    assert src["type"] == "m.room.message" and src["content"]["body"] == p1, src
    out["plain_events"].append({"event_id": pid, "room_id": plain, "sender": a.user_id, "ts": src["origin_server_ts"],
                                "plaintext": p1, "kind": "plain"})

    # Key backup as Element makes it (nio has no server-side backup).
    base, token = stack.url, a.access_token
    backup_key = vodozemac.PkDecryption()
    public = backup_key.public_key.to_base64()
    auth_data = {"public_key": public}
    auth_data["signatures"] = {a.user_id: {f"ed25519:{a.device_id}": a.olm.account.sign(canonical_json(auth_data))}}
    code, r = call(base, "POST", "/_matrix/client/v3/room_keys/version",
                   {"algorithm": BACKUP_ALGORITHM, "auth_data": auth_data}, token)
    assert code == 200, r
    version = r["version"]
    alice_curve, bob_curve = out["users"]["alice"]["curve25519"], out["users"]["bob"]["curve25519"]
    who = {alice_curve: "alice", bob_curve: "bob"}
    sessions, exported = [], {}
    for s in a.olm.inbound_group_store:
        if s.room_id != room:
            continue
        session = {"algorithm": MEGOLM, "sender_key": s.sender_key,
                   "session_key": s.export_session(s.first_known_index),
                   "sender_claimed_keys": {"ed25519": s.ed25519}, "forwarding_curve25519_key_chain": []}
        exported[s.id] = session
        code, r = call(base, "PUT", f"/_matrix/client/v3/room_keys/keys/{q(room)}/{q(s.id)}?version={q(version)}",
                       {"first_message_index": s.first_known_index, "forwarded_count": 0, "is_verified": True,
                        "session_data": _session_data(public, session)}, token)
        assert code == 200, r
        sessions.append({"room_id": room, "session_id": s.id, "sender_key": s.sender_key,
                         "first_message_index": s.first_known_index, "sender": who.get(s.sender_key)})
    assert sorted(x["sender"] for x in sessions) == ["alice", "bob"], sessions
    assert {e["session_id"] for e in out["events"]} <= set(exported), (out["events"], sessions)

    # Read back: every session opens with the backup key, and each event of the room decrypts
    # with the session from the backup (imported as a client restoring a backup would).
    code, r = call(base, "GET", f"/_matrix/client/v3/room_keys/keys?version={q(version)}", None, token)
    assert code == 200, r
    backed = r["rooms"][room]["sessions"]
    assert set(backed) == set(exported), (list(backed), list(exported))
    restored = {}
    for sid, k in backed.items():
        session = _open_session_data(backup_key, k["session_data"])
        assert session == exported[sid], (session, exported[sid])
        restored[sid] = vodozemac.InboundGroupSession.import_session(vodozemac.ExportedSessionKey(session["session_key"]))
    for e in out["events"]:
        content = wire[e["event_id"]]["content"]
        d = restored[content["session_id"]].decrypt(vodozemac.MegolmMessage.from_base64(content["ciphertext"]))
        payload = json.loads(bytes(d.plaintext))
        assert payload["room_id"] == room and payload["type"] == "m.room.message", payload
        got = payload["content"]
        if e["kind"] == "edit":
            assert got["m.new_content"]["body"] == e["plaintext"] and got["body"] == e["body"], got
        else:
            assert got["body"] == e["plaintext"], got

    # Secret storage with the backup key; its recovery key escrowed through the router.
    backup_private = backup_key.key.to_base64()
    recovery, key_id = setup_secret_storage(base, a.user_id, token, backup_private, with_key_id=True)
    wrong = recovery_key_text(os.urandom(32))
    wcode, wr = call(base, "POST", ESCROW, {"kind": "recovery_key", "key": wrong}, token)
    assert wcode == 400 and wr.get("errcode") == "M_INVALID_PARAM", (wcode, wr)
    code, r = call(base, "POST", ESCROW, {"kind": "recovery_key", "key": recovery}, token)
    assert code == 200 and r["escrowed"] is True and r["kind"] == "recovery_key", (code, r)
    assert r["user_id"] == a.user_id and r["backup_version"] == str(version), r

    out.update({"recovery_key": recovery, "backup_version": str(version), "backup_public_key": public,
                "backup_private_key": backup_private, "backup_sessions": sessions,
                "secret_storage_key_id": key_id,
                "escrow": {"wrong_status": wcode, "wrong_response": wr, "status": code, "response": r},
                "elapsed_s": round(time.monotonic() - started, 1)})
    return out


def make_e2ee_material(stack, workdir) -> dict:
    """See the module docstring. Blocking; runs its own event loop."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_make(stack, workdir))
