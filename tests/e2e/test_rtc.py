"""Issue 20, MatrixRTC for Element Call: the authorization service (`mxstack serve rtc-auth`)
under `mxstack up` with `calls`, against the stack's real Synapse.

A real user gets an OpenID token from Synapse through the router and exchanges it at the
service, on both of lk-jwt-service's endpoints, for a LiveKit token; the official LiveKit server
SDK (livekit-api) verifies it with the stack's LiveKit secret: signature, identity, room, grants.
A forged token, a token Synapse has expired, a token of another user's claim and one naming a
foreign server are refused. Synapse answers the settings Element Call needs (MSC4143 transports,
MSC3266 room summary, MSC4140 delayed events with their maximum, MSC4222 state_after).
"""
import base64
import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import psycopg2
import pytest
from livekit import api

SERVER = "e2e.mxstack.test"


def call(url, method="GET", body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}"), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), {k.lower(): v for k, v in e.headers.items()}


def lk_name(*parts):
    """lk-jwt-service's LiveKit names: unpadded base64 of SHA-256 over the JSON array (Go's
    compact encoding)."""
    digest = hashlib.sha256(json.dumps(list(parts), separators=(",", ":")).encode()).digest()
    return base64.b64encode(digest).decode().rstrip("=")


@pytest.fixture(scope="module")
def rtc(stack):
    port = next(p["port"] for p in stack.refresh()["processes"] if p["name"] == "rtc-auth")
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def verifier(stack):
    return api.TokenVerifier(stack.secret("livekit_api_key"), stack.secret("livekit_api_secret"))


@pytest.fixture(scope="module")
def caller(stack):
    u = stack.user("rtc")
    status, room, _ = call(stack.url + "/_matrix/client/v3/createRoom", "POST", {"name": "call"}, u["access_token"])
    assert status == 200, room
    u["room_id"] = room["room_id"]
    return u


def openid(stack, user):
    status, t, _ = call(stack.url + f"/_matrix/client/v3/user/{urllib.parse.quote(user['user_id'])}/openid/request_token",
                        "POST", {}, user["access_token"])
    assert status == 200, t
    assert t["matrix_server_name"] == SERVER and t["token_type"] == "Bearer"
    return t


def metric(rtc, name):
    with urllib.request.urlopen(rtc + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise KeyError(name)


def test_sfu_get_exchanges_a_real_openid_token_for_a_livekit_token(stack, rtc, verifier, caller):
    status, body, headers = call(rtc + "/sfu/get", "POST", {
        "room": caller["room_id"], "openid_token": openid(stack, caller), "device_id": caller["device_id"]})
    assert status == 200, body
    assert headers.get("access-control-allow-origin") == "*"
    assert body["url"] == "wss://livekit." + SERVER
    claims = verifier.verify(body["jwt"])  # HS256 signature with the stack's LiveKit secret, iss, exp
    assert claims.identity == f"{caller['user_id']}:{caller['device_id']}"
    v = claims.video
    assert v.room == lk_name(caller["room_id"], "m.call#ROOM")
    assert v.room_join is True and v.can_publish is True and v.can_subscribe is True
    assert v.can_update_own_metadata is True
    assert not v.room_create and not v.room_admin and not v.room_list
    # The same token does not verify with another secret.
    with pytest.raises(Exception):
        api.TokenVerifier(stack.secret("livekit_api_key"), "not-the-secret-of-this-stack-but-long-enough").verify(body["jwt"])


def test_get_token_binds_the_member_and_slot(stack, rtc, verifier, caller):
    member = {"id": "member-1", "claimed_user_id": caller["user_id"], "claimed_device_id": caller["device_id"]}
    status, body, _ = call(rtc + "/get_token", "POST", {
        "room_id": caller["room_id"], "slot_id": "m.call#ROOM", "openid_token": openid(stack, caller), "member": member})
    assert status == 200, body
    claims = verifier.verify(body["jwt"])
    assert claims.identity == lk_name(caller["user_id"], caller["device_id"], "member-1")
    assert claims.video.room == lk_name(caller["room_id"], "m.call#ROOM")
    assert claims.video.room_join is True and not claims.video.room_create
    # A member claiming to be someone else is refused, whatever the token.
    other = dict(member, claimed_user_id=f"@someone-else:{SERVER}")
    status, body, _ = call(rtc + "/get_token", "POST", {
        "room_id": caller["room_id"], "slot_id": "m.call#ROOM", "openid_token": openid(stack, caller), "member": other})
    assert (status, body.get("errcode")) == (401, "M_UNAUTHORIZED") and "jwt" not in body


def test_a_forged_token_is_refused(rtc, caller):
    forged = {"access_token": base64.urlsafe_b64encode(os.urandom(18)).decode(), "token_type": "Bearer",
              "matrix_server_name": SERVER, "expires_in": 3600}
    status, body, _ = call(rtc + "/sfu/get", "POST", {"room": caller["room_id"], "openid_token": forged, "device_id": "X"})
    assert (status, body.get("errcode")) == (401, "M_UNAUTHORIZED") and "jwt" not in body


def test_a_token_synapse_has_expired_is_refused(stack, rtc, caller):
    """Synapse's OpenID tokens live an hour; this one is made to have expired in Synapse's own
    table, so the refusal comes from Synapse's userinfo answer."""
    t = openid(stack, caller)
    body = {"room": caller["room_id"], "openid_token": t, "device_id": caller["device_id"]}
    assert call(rtc + "/sfu/get", "POST", body)[0] == 200
    with psycopg2.connect(stack.refresh()["postgres_dsn"]) as db, db.cursor() as cur:
        cur.execute("UPDATE open_id_tokens SET ts_valid_until_ms = 1000 WHERE token = %s", (t["access_token"],))
        assert cur.rowcount == 1
    status, resp, _ = call(rtc + "/sfu/get", "POST", body)
    assert (status, resp.get("errcode")) == (401, "M_UNAUTHORIZED") and "jwt" not in resp


def test_a_foreign_servers_token_is_refused_without_asking_it(stack, rtc, caller):
    before_refused = metric(rtc, 'mxstack_rtc_auth_refused_total{reason="foreign_server"}')
    before_errors = metric(rtc, "mxstack_rtc_auth_homeserver_errors_total")
    t = dict(openid(stack, caller), matrix_server_name="matrix.org")
    status, body, _ = call(rtc + "/sfu/get", "POST", {"room": caller["room_id"], "openid_token": t, "device_id": "X"})
    assert (status, body.get("errcode")) == (403, "M_FORBIDDEN") and "jwt" not in body
    assert metric(rtc, 'mxstack_rtc_auth_refused_total{reason="foreign_server"}') == before_refused + 1
    # No lookup was tried (there is no route to matrix.org here: a lookup would count an error).
    assert metric(rtc, "mxstack_rtc_auth_homeserver_errors_total") == before_errors
    assert "matrix.org" not in stack.log("rtc-auth").split("refused:")[0]


def test_health_and_cors_preflight(rtc):
    with urllib.request.urlopen(rtc + "/healthz", timeout=10) as r:
        assert r.status == 200
    req = urllib.request.Request(rtc + "/get_token", method="OPTIONS")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"


def test_synapse_serves_what_element_call_needs(stack, caller):
    tok = caller["access_token"]
    status, t, _ = call(stack.url + "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", token=tok)
    assert status == 200, t
    assert t["rtc_transports"] == [{"type": "livekit", "livekit_service_url": f"https://livekit-jwt.{SERVER}"}]
    room = urllib.parse.quote(caller["room_id"])
    status, s, _ = call(stack.url + f"/_matrix/client/v1/room_summary/{room}", token=tok)
    assert status == 200 and s["room_id"] == caller["room_id"], s
    # MSC4140: a delayed event is accepted up to the configured maximum (24h), refused beyond.
    def send(txn, delay_ms):
        return stack.url + f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}?org.matrix.msc4140.delay={delay_ms}"
    status, d, _ = call(send("d1", 60_000), "PUT", {"msgtype": "m.text", "body": "later"}, tok)
    assert status == 200 and "delay_id" in d, d
    status, d, _ = call(send("d2", 25 * 3600 * 1000), "PUT", {"msgtype": "m.text", "body": "too late"}, tok)
    assert status == 400 and d.get("errcode") == "ORG.MATRIX.MSC4140_DELAY_TOO_LARGE", d
    assert "86400000ms" in d["error"], d
    # MSC4222: sync answers with state_after when asked.
    status, sync, _ = call(stack.url + "/_matrix/client/v3/sync?timeout=0&org.matrix.msc4222.use_state_after=true", token=tok)
    assert status == 200
    joined = sync["rooms"]["join"][caller["room_id"]]
    assert "org.matrix.msc4222.state_after" in joined and "state" not in joined, list(joined)
