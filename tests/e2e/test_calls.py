"""Issue 17's next component, issue 20's first part: coturn under `mxstack up` with `calls`.

A real user asks Synapse for TURN credentials through the router; coturn (Debian's 4.6) accepts
them for an allocation over UDP and TCP and refuses a wrong password. The denied-peer-ip ranges
that keep TURN from reaching inside the network are shown at work with loopback addresses only:
the test stack allows exactly one peer, 127.0.0.1 (calls.allowed_peer_ips), to which media flows
through the relay, while 127.0.0.2, in the denied 127.0.0.0/8 range, is refused. No test asks
coturn to relay anywhere else.
"""
import os
import signal
import socket
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


def uclient(port, username, password, tcp=False, peer="127.0.0.2", peer_port=3480, messages=1):
    """One client allocating a relay and sending `messages` through it to a loopback peer."""
    args = ["turnutils_uclient", "-p", str(port), "-u", username, "-w", password,
            "-n", str(messages), "-m", "1", "-l", "100", "-e", peer, "-r", str(peer_port)]
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
def test_coturn_allocates_with_synapse_credentials_and_refuses_a_denied_peer(turn, tcp):
    creds, port = turn
    out = uclient(port, creds["username"], creds["password"], tcp=tcp, peer="127.0.0.2")
    assert "Cannot complete Allocation" not in out, out
    # The allocation succeeded; relaying to 127.0.0.2 is what denied-peer-ip forbids.
    assert "403 (Forbidden IP)" in out, out


@pytest.fixture
def echo_peer():
    """turnutils_peer, a UDP echo peer, on 127.0.0.1 (the one allowed peer address)."""
    from conftest import TURN_ALLOWED_PEER
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((TURN_ALLOWED_PEER, 0))
    peer_port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen(["turnutils_peer", "-L", TURN_ALLOWED_PEER, "-p", str(peer_port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield TURN_ALLOWED_PEER, peer_port
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)


def test_media_flows_through_the_relay_to_the_allowed_peer_only(turn, echo_peer):
    creds, port = turn
    peer, peer_port = echo_peer
    out = uclient(port, creds["username"], creds["password"], peer=peer, peer_port=peer_port, messages=5)
    assert "403 (Forbidden IP)" not in out, out
    # The last count is the total over the run (earlier lines are progress).
    counts = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", out)
    assert counts and int(counts[-1][0]) > 0 and counts[-1][0] == counts[-1][1], out
    # The same peer port on a denied address: refused.
    out = uclient(port, creds["username"], creds["password"], peer="127.0.0.2", peer_port=peer_port, messages=5)
    assert "403 (Forbidden IP)" in out, out


def test_coturn_accepted_every_denied_range(stack):
    # coturn skips an address line it cannot parse (a CIDR, say) with an error and runs on:
    # every denied-peer-ip line must have been taken.
    log = stack.log("coturn")
    assert "Wrong address format" not in log, [l for l in log.splitlines() if "Wrong address" in l]


def test_coturn_refuses_a_wrong_password(turn, stack):
    creds, port = turn
    out = uclient(port, creds["username"], "not-the-hmac")
    assert "Cannot complete Allocation" in out, out
    # The shared secret never reaches coturn's log.
    assert stack.secret("turn_shared_secret") not in stack.log("coturn")
