"""Issue 23 item 1: `mxstack loadtest` against a real stack.

A stack of this module's own (base port 27000, or the next free block up to 27900 when a
neighbour's connections hold one of its ports; no optional feature, one process per group)
takes a short load of 20 CCU at the seed's peak (80 messages/min): the run passes its SLO,
every acknowledged message reaches every member, and its users and rooms are gone afterwards.
A 10x spike is shed fast, loses nothing and recovers. Ctrl-C during the load still removes them. A wrong URL and missing credentials are refused with exit 2 and one clear message.
"""
import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import Stack, mxstack_bin, run

BASES = range(27000, 28000, 100)


@pytest.fixture(scope="module")
def lt_stack():
    base = Path(tempfile.mkdtemp(prefix="mxstack-loadtest-", dir="/var/tmp"))
    base.chmod(0o755)
    run("init", "--domain", "loadtest.mxstack.test", "--scale", "100", "--features", "", "--dir", str(base))
    config = str(base / "mxstack.yaml")
    try:
        for port in BASES:
            r = run("up", "--config", config, "--base-port", str(port), "--replicas", "1", "--json",
                    check=False, timeout=900)
            if r.returncode == 0:
                break
            assert "already in use" in r.stderr, r.stderr
        else:
            pytest.fail("no free port block in 27000-27999")
        yield Stack(base)
    finally:
        run("down", "--config", config, "--purge", check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def loadtest(*args, timeout=240):
    return subprocess.run([mxstack_bin(), "loadtest", *args], capture_output=True, text=True, timeout=timeout)


def test_short_run_holds_the_promise_and_cleans_up(lt_stack):
    r = loadtest("--url", lt_stack.url, "--ccu", "20", "--duration", "20s", "--grace", "30s",
                 "--config", lt_stack.config, "--seed", "20261206", "--json")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    res = json.loads(r.stdout)
    # The seed is reported, so the same load can be run again.
    assert res["inputs"]["seed"] == 20261206 and "--seed 20261206" in r.stderr
    print(json.dumps({k: res[k] for k in ("verdict", "send_latency_ms", "delivery_latency_ms", "goodput",
                                          "error_rate", "acknowledged_but_never_delivered", "generator",
                                          "setup", "cleanup")}))
    assert res["schema"] == "mxstack-loadtest/3"
    assert res["verdict"] == "pass", res["reasons"]
    assert res["acknowledged_but_never_delivered"] == 0
    assert res["delivery_latency_ms"]["p99"] is not None
    assert res["delivery_latency_ms"]["p99"] <= 1000
    assert res["send_latency_ms"]["p99"] is not None
    assert res["inputs"]["rates"]["messages_per_min"] == 80
    assert res["setup"]["users"] == 20 and res["setup"]["rooms"] == 15
    step = res["steps"][0]
    assert step["acknowledged"] > 0 and step["deliveries"] >= step["acknowledged"]
    assert step["requests"]["sync"]["ok"] > 0
    assert res["generator"]["saturated"] is False
    # The live progress line went to stderr, never a secret.
    assert "syncs open 20/20" in r.stderr
    assert lt_stack.secret("registration_shared_secret") not in r.stdout + r.stderr
    # Cleanup: no user of the run is active any more, its rooms are purged (Synapse purges in
    # the background; loadtest waits for every purge before it returns).
    assert res["cleanup"]["errors"] == 0, r.stderr[-3000:]
    assert res["cleanup"]["rooms_purged"] == 15
    assert res["cleanup"]["purges_unfinished"] == 0
    assert res["cleanup"]["users_deactivated"] == 21  # 20 users and the run's admin
    prefix = f"mxlt-{res['run_id']}-"
    users = lt_stack.admin_request("GET", f"/_synapse/admin/v2/users?name={prefix}&deactivated=false&limit=100")
    assert users["total"] == 0, users
    gone = lt_stack.admin_request("GET", f"/_synapse/admin/v2/users?name={prefix}&deactivated=true&limit=100")
    assert gone["total"] == 21
    rooms = lt_stack.admin_request("GET", f"/_synapse/admin/v1/rooms?search_term={prefix}")
    assert rooms["total_rooms"] == 0, rooms


def test_a_spike_is_shed_fast_loses_nothing_and_recovers(lt_stack):
    """10x the tier's rate for 20 s between two calm phases: refusals (if any) come fast, every
    acknowledged message arrives, and p99 is back within the SLO soon after the spike."""
    r = loadtest("--url", lt_stack.url, "--ccu", "20", "--duration", "15s", "--spike", "10",
                 "--spike-duration", "20s", "--grace", "30s", "--config", lt_stack.config, "--json",
                 timeout=300)
    res = json.loads(r.stdout)
    print(json.dumps({"verdict": res["verdict"], "reasons": res["reasons"], "spike": res["spike"]}))
    assert [s["phase"] for s in res["steps"]] == ["before", "spike", "after"]
    assert [s["target_per_min"] for s in res["steps"]] == [80, 800, 80]
    sp = res["spike"]
    assert sp["goodput_per_min"] > 80, "the spike raised the acknowledged rate"
    assert sp["acknowledged_but_never_delivered"] == 0
    assert sp["refused_under_1s"] is None or sp["refused_under_1s"] >= 0.99, sp
    assert sp["recovery_s"] is not None and sp["recovery_s"] <= 30, sp
    assert r.returncode == 0 and res["verdict"] == "pass", res["reasons"]


def test_ctrl_c_still_cleans_up(lt_stack, tmp_path):
    err = tmp_path / "stderr"
    with open(err, "w") as e:
        p = subprocess.Popen([mxstack_bin(), "loadtest", "--url", lt_stack.url, "--ccu", "4", "--duration", "120s",
                              "--config", lt_stack.config, "--json"], stdout=subprocess.PIPE, stderr=e, text=True)
        deadline = time.monotonic() + 90
        while "step 1" not in err.read_text():
            assert p.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=120)
    assert p.returncode == 1, err.read_text()
    res = json.loads(out)
    assert res["interrupted"] is True and res["verdict"] == "fail"
    assert res["cleanup"]["users_deactivated"] == 5 and res["cleanup"]["errors"] == 0
    users = lt_stack.admin_request("GET", f"/_synapse/admin/v2/users?name=mxlt-{res['run_id']}-&deactivated=false")
    assert users["total"] == 0, users


def test_bad_input_is_refused_with_one_clear_error(lt_stack):
    # Nothing listens on the last port of the range (the stack's blocks end well before it).
    r = loadtest("--url", "http://127.0.0.1:27999", "--ccu", "20", "--duration", "5s",
                 "--config", lt_stack.config, "--json", timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert "cannot reach http://127.0.0.1:27999" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = loadtest("--url", lt_stack.url, "--ccu", "20", timeout=60)
    assert r.returncode == 2
    assert "--admin-token" in r.stderr and "--config" in r.stderr
    r = loadtest("--url", lt_stack.url, "--ccu", "20", "--admin-token", "not-a-token", timeout=60)
    assert r.returncode == 2
    assert "--admin-token is not accepted" in r.stderr
    assert "not-a-token" not in r.stderr
