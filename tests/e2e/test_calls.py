"""Issue 17's next component, issue 20's first part: coturn under `mxstack up` with `calls`.

A real user asks Synapse for TURN credentials through the router; coturn (Debian's 4.6) accepts
them for an allocation over UDP and TCP, refuses a wrong password, and refuses to relay to a
loopback peer (the denied-peer-ip ranges that keep TURN from reaching inside the network).
"""
import json
import re
import subprocess
import urllib.request

import pytest


def turn_server(stack, user):
    req = urllib.request.Request(stack.url + "/_matrix/client/v3/voip/turnServer",
                                 headers={"Authorization": "Bearer " + user["access_token"]})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def uclient(port, username, password, tcp=False):
    """One client allocating a relay and asking it for a channel to a loopback peer."""
    args = ["turnutils_uclient", "-p", str(port), "-u", username, "-w", password,
            "-n", "1", "-m", "1", "-l", "100", "-e", "127.0.0.1", "-r", "3480"]
    if tcp:
        args.append("-t")
    r = subprocess.run(args + ["127.0.0.1"], capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def turn(stack):
    creds = turn_server(stack, stack.user("caller"))
    ports = {int(m.group(1)) for u in creds["uris"] for m in [re.match(r"turn:127\.0\.0\.1:(\d+)\?", u)] if m}
    assert len(ports) == 1, creds["uris"]
    return creds, ports.pop()


def test_synapse_hands_out_turn_credentials_for_the_local_coturn(turn):
    creds, port = turn
    assert {u.split("?")[1] for u in creds["uris"]} == {"transport=udp", "transport=tcp"}
    # TURN REST credentials: "<expiry>:<user id>", valid for turn_user_lifetime (1h).
    expiry, user_id = creds["username"].split(":", 1)
    assert user_id.startswith("@caller-") and int(expiry) > 0
    assert creds["ttl"] == 3600


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_coturn_allocates_with_synapse_credentials_and_refuses_loopback_peers(turn, tcp):
    creds, port = turn
    out = uclient(port, creds["username"], creds["password"], tcp=tcp)
    assert "Cannot complete Allocation" not in out, out
    # The allocation succeeded; relaying to 127.0.0.1 is what denied-peer-ip forbids.
    assert "403 (Forbidden IP)" in out, out


def test_coturn_refuses_a_wrong_password(turn, stack):
    creds, port = turn
    out = uclient(port, creds["username"], "not-the-hmac")
    assert "Cannot complete Allocation" in out, out
    # The shared secret never reaches coturn's log.
    assert stack.secret("turn_shared_secret") not in stack.log("coturn")
