"""Issue 21: the local stack's Prometheus fires the same alerts Kubernetes gets, and they resolve.

Two faults at once on the suite's shared stack (so the waits overlap), run last because they
disturb it:
- a generic Synapse worker is killed and cannot come back while its metrics port is held (a bound socket
  that never accepts: Synapse fails to bind and exits, the supervisor retries with backoff, and
  Prometheus' scrapes of the port time out). SynapseDown must fire within its `for` plus a scrape
  interval, the scrape's timeout and two evaluation intervals, and resolve once the port is released and the supervisor's next
  restart succeeds;
- clamd is stopped (SIGSTOP: the process is there and the supervisor sees nothing wrong, but it
  answers nothing). ClamdUnavailable must fire the same way and resolve after SIGCONT.

`mxstack status --json` is what is asked: it lists Prometheus' pending and firing alerts.
"""
import json
import os
import signal
import socket
import time
import urllib.parse
import urllib.request

import pytest

from conftest import run

SCRAPE = 5  # crates/local/src/monitoring.rs SCRAPE_INTERVAL_SECS (also the evaluation interval)
FOR = {"SynapseDown": 120, "ClamdUnavailable": 120}  # the rules' `for`
TIMEOUT = 4  # the scrape timeout: a held port is seen as down only when it ends
SLACK = 10  # the status call, and an evaluation late on a busy machine
# Worst case from the fault to firing: the wait for the next scrape, its timeout, the evaluation
# that makes the alert pending, its `for`, the evaluation that fires it (CI once took over the
# earlier bound of `for` + 2 intervals + 10 s, which left 1 s for everything else).
BOUND = {name: f + 3 * SCRAPE + TIMEOUT + SLACK for name, f in FOR.items()}


def alerts(stack):
    return json.loads(run("status", "--config", stack.config, "--json").stdout).get("alerts")


def firing(stack, name, **labels):
    return [a for a in alerts(stack) or []
            if a["alert"] == name and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def present(stack, name):
    return [a for a in alerts(stack) or [] if a["alert"] == name]


def prometheus_port(stack):
    return next(p["port"] for p in stack.refresh()["processes"] if p["name"] == "prometheus")


def metrics_port(stack, pod):
    """The port Prometheus scrapes `pod` on (from its targets)."""
    url = f"http://127.0.0.1:{prometheus_port(stack)}/api/v1/targets"
    targets = json.load(urllib.request.urlopen(url, timeout=10))["data"]["activeTargets"]
    t = next(t for t in targets if t["labels"].get("pod") == pod)
    return urllib.parse.urlparse(t["scrapeUrl"]).port


def hold(port):
    """A socket bound to the port that never accepts: a connect succeeds, a request times out."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Prometheus' connections to the killed worker linger in TIME_WAIT on this port.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.time() + 10
    while True:
        try:
            s.bind(("127.0.0.1", port))
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    s.listen(1)
    return s


def wait_for(stack, what, predicate, within):
    start = time.time()
    while time.time() - start < within:
        if predicate():
            return time.time() - start
        time.sleep(2)
    raise AssertionError(f"{what} not within {within:.0f} s; alerts: {alerts(stack)}")


@pytest.mark.last
def test_a_killed_worker_and_a_stopped_clamd_fire_their_alerts_which_resolve(stack):
    assert alerts(stack) is not None, "status lists no alerts: is the local Prometheus running?"
    for name in FOR:
        wait_for(stack, f"no {name} before the faults", lambda: not present(stack, name), 60)

    # A second generic worker where there is one: its peer keeps serving the suite's clients.
    WORKER = max(p["name"] for p in stack.refresh()["processes"] if p["name"].startswith("synapse-generic-"))
    port = metrics_port(stack, WORKER)
    worker, _, state = stack.pid(WORKER)
    clamd, _, clamd_state = stack.pid("clamd")
    assert state == "ready" and clamd_state == "ready"

    os.kill(worker, signal.SIGKILL)
    held = hold(port)
    os.kill(clamd, signal.SIGSTOP)
    try:
        took = {}
        start = time.time()
        took["SynapseDown"] = wait_for(
            stack, "SynapseDown firing", lambda: firing(stack, "SynapseDown", pod=WORKER),
            BOUND["SynapseDown"])
        took["ClamdUnavailable"] = wait_for(
            stack, "ClamdUnavailable firing", lambda: firing(stack, "ClamdUnavailable"),
            BOUND["ClamdUnavailable"] - (time.time() - start))
        took["ClamdUnavailable"] = time.time() - start
        print(f"fired after {took} s (for {FOR})")
        # Firing, not before its time: the rule's `for` holds.
        assert took["SynapseDown"] >= FOR["SynapseDown"] - SCRAPE, took
    finally:
        held.close()
        os.kill(clamd, signal.SIGCONT)

    # The supervisor's next restart (backoff at most 30 s) binds the port again.
    resolved = wait_for(stack, "SynapseDown resolved", lambda: not present(stack, "SynapseDown"), 30 + 30 + 3 * SCRAPE)
    wait_for(stack, "ClamdUnavailable resolved", lambda: not present(stack, "ClamdUnavailable"), 3 * SCRAPE + SLACK)
    print(f"SynapseDown resolved {resolved:.0f} s after the port was released")
    _, restarts, state = stack.pid(WORKER)
    assert state == "ready" and restarts >= 1, (state, restarts)
