"""Issue 22 item 3: `mxstack upgrade --synapse VERSION` on a running stack under load.

(Both versions have database schema 94, so `--apply` takes the rolling path; the path of a
schema-changing release is taken back to 1.162.0 with `--coordinated`.)

A stack of this module's own (base port 25000, features li) starts on Synapse 1.162.0 (pinned
before its first `up`), a real client (matrix-nio) keeps sending messages, and the stack is
upgraded to 1.163.2, the runtime's own version. Every message Synapse acknowledged must be there
afterwards, the LI replica must be current, and both versions' configs are proven by the plan
(`synapse.config` of each version loads every process's files).
"""
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from nio import AsyncClient

from conftest import Stack, run
from load import Load, missing

PORT = 25000
OLD, NEW = "1.162.0", "1.163.2"


@pytest.fixture(scope="module")
def old_stack():
    base = Path(tempfile.mkdtemp(prefix="mxstack-upgrade-", dir="/var/tmp"))
    base.chmod(0o755)
    run("init", "--domain", "upgrade.mxstack.test", "--scale", "1k", "--features", "li", "--dir", str(base))
    config = str(base / "mxstack.yaml")
    try:
        pinned = json.loads(run("upgrade", "--config", config, "--synapse", OLD, "--apply", "--json", timeout=900).stdout)
        assert pinned == {"pinned": OLD, "fresh_stack": True}, pinned
        run("up", "--config", config, "--base-port", str(PORT), "--replicas", "1", "--json", timeout=900)
        yield Stack(base)
    finally:
        run("down", "--config", config, "--purge", check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def server_version(stack):
    return stack.admin_request("GET", "/_synapse/admin/v1/server_version")["server_version"]


def test_upgrade_under_load_loses_no_acknowledged_message_and_keeps_li_current(old_stack):
    stack = old_stack
    assert server_version(stack).startswith(OLD)
    # The plan alone proves the running version's configs and changes nothing.
    plan = json.loads(run("upgrade", "--config", stack.config, "--synapse", OLD, "--json").stdout)
    assert plan["configs_proven"] and plan["refused"] is None and "applied" not in plan, plan

    user = stack.user("load")
    c_room = asyncio.run(create_room(stack, user))
    load = Load(stack, user, [c_room])
    load.thread.start()
    time.sleep(5)
    r = run("upgrade", "--config", stack.config, "--synapse", NEW, "--apply", "--json", timeout=900)
    report = json.loads(r.stdout)
    time.sleep(5)
    load.stop.set()
    load.thread.join(60)
    print(f"upgrade: {report.get('applied')}; {len(load.acked)} acknowledged, {load.failed} not acknowledged during it")

    assert report["configs_proven"] and report["refused"] is None, report
    assert report["current"]["version"].startswith(OLD) and report["target"]["version"].startswith(NEW), report
    # 1.162.0 and 1.163.2 share schema 94: a rolling restart, nothing else stops.
    assert report["applied"]["mode"] == "rolling", report
    assert report["applied"]["li_schema_current_after_seconds"] is not None, report
    assert server_version(stack).startswith(NEW)
    assert len(load.acked) > 100, (len(load.acked), load.failed)
    lost = asyncio.run(missing(stack, user, load.acked))
    assert lost == [], f"{len(lost)} acknowledged messages lost: {lost[:5]}"
    # The new version's background updates go on changing main's schema after it started;
    # li-sync absorbs each change on its next check (`li status` exits 0 once all is current).
    deadline = time.time() + 120
    while True:
        r = run("li", "status", "--config", stack.config, "--json", check=False)
        li = json.loads(r.stdout)
        if r.returncode == 0 or time.time() > deadline:
            break
        time.sleep(3)
    assert r.returncode == 0, li
    assert li["subscription_enabled"] and li["apply_worker_running"] and not li["schema_behind"], li


async def create_room(stack, user):
    c = AsyncClient(stack.url, user["user_id"])
    c.restore_login(user["user_id"], user["device_id"], user["access_token"])
    r = await c.room_create(name="upgrade load")
    await c.close()
    return r.room_id


def test_a_bad_version_is_refused_before_anything_stops(old_stack):
    r = run("upgrade", "--config", old_stack.config, "--synapse", "1.163", check=False)
    assert r.returncode != 0 and "not a Synapse version" in r.stderr, r.stderr
    assert old_stack.refresh()["phase"] == "ready"


def synapse_pids(stack):
    return {p["name"]: p["pid"] for p in stack.refresh()["processes"] if p["name"].startswith("synapse-")}


def test_a_config_the_new_version_rejects_is_refused_before_anything_stops(old_stack):
    """The proof loads every process's files in the target version: one that does not load
    refuses the upgrade, names the process, and nothing stops or is pinned. (No Synapse release
    that installs here rejects mxstack's config, so one worker's file is made unloadable.)"""
    stack = old_stack
    worker = stack.state / "synapse" / "workers" / "synapse-generic-0.yaml"
    original = worker.read_text()
    before = synapse_pids(stack)
    pin = stack.state / "synapse-venv"
    pinned = pin.read_text() if pin.exists() else None
    try:
        worker.write_text(original + "federation_client_minimum_tls_version: \"9.9\"\n")
        r = run("upgrade", "--config", stack.config, "--synapse", OLD, "--apply", "--json", check=False, timeout=900)
    finally:
        worker.write_text(original)
    report = json.loads(r.stdout)
    assert r.returncode == 1 and not report["configs_proven"], report
    assert "synapse-generic-0" in report["refused"] and "applied" not in report, report
    assert synapse_pids(stack) == before
    assert (pin.read_text() if pin.exists() else None) == pinned
    assert server_version(stack).startswith(NEW)


def test_coordinated_downgrade_under_load_stops_every_synapse_process_and_loses_nothing(old_stack):
    """`--coordinated`: the path of a schema-changing release (every Synapse process stops, main
    starts and migrates first, then the workers), taken here from 1.163.2 back to 1.162.0, which
    share schema 94. PostgreSQL and the router keep running."""
    stack = old_stack
    user = stack.user("coordinated")
    room = asyncio.run(create_room(stack, user))
    keep = {n: p for n, p in ((p["name"], p["pid"]) for p in stack.refresh()["processes"]) if n in ("postgres", "router")}
    before = synapse_pids(stack)
    load = Load(stack, user, [room])
    load.thread.start()
    time.sleep(5)
    r = run("upgrade", "--config", stack.config, "--synapse", OLD, "--apply", "--coordinated", "--json", timeout=1200)
    time.sleep(5)
    load.stop.set()
    load.thread.join(60)
    report = json.loads(r.stdout)
    applied = report["applied"]
    print(f"coordinated: {applied['took_seconds']:.1f} s; {len(load.acked)} acknowledged, {load.failed} not acknowledged")
    assert applied["mode"] == "coordinated", report
    after = synapse_pids(stack)
    assert all(after[n] != pid for n, pid in before.items()), (before, after)
    assert {n: p for n, p in ((p["name"], p["pid"]) for p in stack.refresh()["processes"]) if n in keep} == keep
    assert server_version(stack).startswith(OLD)
    lost = asyncio.run(missing(stack, user, load.acked))
    assert len(load.acked) > 50 and lost == [], (len(load.acked), lost[:5])


def test_kubernetes_plan_names_the_mode_and_apply_sets_only_the_image(old_stack):
    stack = old_stack
    config = Path(stack.config)
    text = config.read_text()
    image = next(l.split(":", 1)[1].strip() for l in text.splitlines() if l.strip().startswith("synapse: "))
    current = image.rsplit(":", 1)[1]
    target = OLD if current != OLD else NEW
    plan = json.loads(run("upgrade", "--kubernetes", "--config", stack.config, "--synapse", target, "--json", timeout=900).stdout)
    assert plan["mode"] == "rolling" and plan["configs_proven"] and plan["refused"] is None, plan
    assert config.read_text() == text
    run("upgrade", "--kubernetes", "--config", stack.config, "--synapse", target, "--apply", "--json", timeout=900)
    assert config.read_text() == text.replace(image, image.rsplit(":", 1)[0] + ":" + target)
    # Pinned by digest (the config check refuses `latest`): no version to plan from.
    config.write_text(text.replace(image, "ghcr.io/mxstack/synapse@sha256:" + "ab" * 32))
    try:
        r = run("upgrade", "--kubernetes", "--config", stack.config, "--synapse", target, check=False)
        assert r.returncode != 0 and "does not end in a Synapse version tag" in r.stderr, r.stderr
    finally:
        config.write_text(text)
