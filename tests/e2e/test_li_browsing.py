"""LI browsing stack (issue 5, item 4) on the running local stack: the working copy refreshed from
the replica on demand (`mxstack li refresh-working-copy`), and Synapse LI, with the config
Kubernetes renders, serving it: an investigator logs in and reads what main's users wrote, while
main's session tokens, registration and federation do not work there.
"""
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from conftest import run
from test_li import sql


def call(base, method, path, token=None, body=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw or b"{}")
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}


def synapse_li(stack):
    for p in stack.refresh()["processes"]:
        if p["name"] == "synapse-li":
            return p
    raise AssertionError("mxstack up runs no synapse-li with feature li")


def test_synapse_li_serves_the_working_copy_refreshed_from_the_replica(stack):
    u = stack.user("witness")
    status, room = call(stack.url, "POST", "/_matrix/client/v3/createRoom", u["access_token"], {"name": "case 17"})
    assert status == 200, room
    room_id = room["room_id"]
    body = f"meet at the harbour {os.urandom(4).hex()}"
    status, sent = call(stack.url, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/t1",
                        u["access_token"], {"msgtype": "m.text", "body": body})
    assert status == 200, sent
    event_id = sent["event_id"].replace("'", "''")
    deadline = time.time() + 60
    while sql(stack, "replica", f"SELECT count(*) FROM events WHERE event_id = '{event_id}'") != "1":
        assert time.time() < deadline, "the event did not reach the replica"
        time.sleep(0.5)

    before = synapse_li(stack)
    r = json.loads(run("li", "refresh-working-copy", "--config", stack.config, "--json").stdout)
    assert r["rows_copied"] > 0 and r["tables"] > 100, r
    assert r["credentials_removed"] >= 1, "main's access tokens are not carried over"
    assert r["sequences_set"] >= 1, r
    status_text = run("li", "status", "--config", stack.config, check=False).stdout
    assert "working copy: last run success" in status_text, status_text

    # Synapse LI caches what it read: the command restarted it on the new copy and waited for it.
    after = synapse_li(stack)
    assert r["synapse_li_restarted_pid"] == after["pid"] != before["pid"], (before, after, r)
    assert after["state"] == "ready", after
    li = f"http://127.0.0.1:{after['port']}"

    # A session token of the production server means nothing on the LI instance.
    status, err = call(li, "GET", "/_matrix/client/v3/account/whoami", u["access_token"])
    assert status == 401 and err["errcode"] == "M_UNKNOWN_TOKEN", (status, err)
    # No registration, no federation listener.
    status, _ = call(li, "POST", "/_matrix/client/v3/register", body={"username": "intruder", "password": "x" * 16})
    assert status in (403, 404), status
    status, _ = call(li, "GET", "/_matrix/federation/v1/version")
    assert status == 404, status

    # The account and the conversation are in the copy: log in and read it.
    status, login = call(li, "POST", "/_matrix/client/v3/login", body={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": u["user_id"]},
        "password": u["password"]})
    assert status == 200, login
    status, msgs = call(li, "GET", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages?dir=b&limit=50",
                        login["access_token"])
    assert status == 200, msgs
    assert body in [e.get("content", {}).get("body") for e in msgs["chunk"]], msgs
    # Synapse LI found every sequence ahead of its table (it refuses to start otherwise) and logged
    # no error while serving.
    log = stack.log("synapse-li")
    assert "IncorrectDatabaseSetup" not in log
    # The working copy has what Synapse expects: no missing relation or constraint (e.g. a
    # background update validating one of main's foreign keys).
    assert "does not exist" not in log, [l for l in log.splitlines() if "does not exist" in l][:5]
