"""Issue 23 item 2: overload is refused fast at the router, not left to time out.

On the shared stack: a burst of concurrent sends far above what the event-creating workers are
given at once (`maxconn` per server, `crate::backpressure`) must be answered within about a
second each. The ones the router cannot place within its queue timeout get 429 M_LIMIT_EXCEEDED
with `Retry-After` (the router's answer, recognisable by its text), the others 200; no request
waits for a client timeout, and every acknowledged message is in the room afterwards. The
rendered limits are read from the router's own config, so the test follows the sizing.
"""
import concurrent.futures
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

BURST = 150


def send(url, token, room, i):
    req = urllib.request.Request(
        f"{url}/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/bp-{time.time_ns()}-{i}",
        method="PUT", data=json.dumps({"msgtype": "m.text", "body": f"burst {i}"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return 200, time.monotonic() - start, json.loads(r.read())["event_id"], None, None
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        return e.code, time.monotonic() - start, None, e.headers.get("Retry-After"), body


def test_a_burst_beyond_the_workers_slots_is_refused_fast_with_retry_after(stack):
    cfg = (stack.state / "haproxy" / "haproxy.cfg").read_text()
    queue_ms = int(re.search(r"timeout queue (\d+)ms", cfg).group(1))
    slots = [int(m) for m in re.findall(r"server synapse-generic-\d+ \S+ check maxconn (\d+)", cfg)]
    assert slots and queue_ms < 1000, (slots, queue_ms)
    assert BURST > 4 * sum(slots), "the burst must exceed what the workers are handed at once"
    user = stack.user("burst")
    token = user["access_token"]
    req = urllib.request.Request(f"{stack.url}/_matrix/client/v3/createRoom", method="POST", data=b"{}",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    room = json.loads(urllib.request.urlopen(req, timeout=30).read())["room_id"]

    with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
        results = list(pool.map(lambda i: send(stack.url, token, room, i), range(BURST)))

    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    other = [r for r in results if r[0] not in (200, 429)]
    slowest_refusal = max((r[1] for r in refused), default=0)
    print(f"burst of {BURST}: {len(ok)} sent, {len(refused)} refused (slowest refusal "
          f"{slowest_refusal * 1000:.0f} ms, queue timeout {queue_ms} ms, slots {slots}), {len(other)} other")
    assert not other, other[:3]
    assert ok, "nothing got through"
    assert refused, "nothing was refused: the burst did not exceed the slots"
    for code, took, _, retry_after, body in refused:
        assert retry_after and int(retry_after) >= 1, retry_after
        err = json.loads(body)
        assert err["errcode"] == "M_LIMIT_EXCEEDED" and "busy" in err["error"] and err["retry_after_ms"] > 0, err
        assert took < 1.0 + queue_ms / 1000, f"a refusal took {took:.2f} s"

    # What was acknowledged is there.
    for _, _, event_id, _, _ in ok:
        r = urllib.request.Request(f"{stack.url}/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/event/{urllib.parse.quote(event_id)}",
                                   headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(r, timeout=30) as resp:
            assert json.loads(resp.read())["event_id"] == event_id


def test_federation_goes_first_in_every_queue(stack):
    cfg = (stack.state / "haproxy" / "haproxy.cfg").read_text()
    assert re.search(r"http-request set-priority-class int\(-\d+\) if \{ path_beg /_matrix/federation/ /_matrix/key/ \}", cfg)
    assert "option abortonclose" in cfg
