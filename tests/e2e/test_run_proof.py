"""Issue 18, the run-proof: the Kubernetes output really runs.

`mxstack render` of a 100-user site with antivirus and li; its application layer (Synapse main
and every worker, the HAProxy router, the content scanner, ClamAV, li-sync, the key vault, the
LI console, with Valkey + Sentinel, the Valkey master endpoint and SeaweedFS from their rendered
StatefulSets) runs as real containers from the images `mxstack images build` made here, each as
its pod spec says (crates/kube-podman: env from Secrets, mounts, user, read-only root, probes).
PostgreSQL is a CloudNativePG stand-in under the Cluster's Service names. Then a real client
(matrix-nio) goes through the router container: register, log in, create a room, send, sync,
upload and download media, and an EICAR upload is refused. Everything runs on a podman network
the test creates (10.89.<n>.0/24), never on another address.
"""
import asyncio
import hashlib
import shutil
import hmac
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from nio import (AsyncClient, AsyncClientConfig, DownloadResponse, JoinResponse, LoginResponse, RoomCreateResponse,
                 RoomSendResponse, SyncResponse, UploadResponse)

from conftest import mxstack_bin, run

SUBNET = os.environ.get("MXSTACK_RUN_PROOF_SUBNET", "10.89.91.0")
# Every podman object of this test carries it (another proof on the machine uses its own).
PREFIX = "rpe2e-"
IMAGES = os.environ.get("MXSTACK_IMAGES_CACHE", "/var/cache/mxstack/images")
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def podman(*args):
    env = dict(os.environ, CONTAINERS_CONF=f"{IMAGES}/containers.conf")
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def proof():
    site = Path(tempfile.mkdtemp(prefix="mxstack-run-proof-", dir="/var/tmp"))
    run("init", "--domain", "proof.mxstack.test", "--scale", "100", "--features", "antivirus,li", "--dir", str(site))
    config = site / "mxstack.yaml"
    c = yaml.safe_load(config.read_text())
    # Air-gapped antivirus (no freshclam: no internet here); the proof seeds the signatures.
    c.setdefault("antivirus", {})["signature_updates"] = False
    c.setdefault("li", {})["allowed_cidrs"] = ["198.51.100.0/24"]
    config.write_text(yaml.safe_dump(c, sort_keys=False))
    started = time.monotonic()
    built = json.loads(run("images", "build", "--out", IMAGES, "--binary", mxstack_bin(), "--json",
                           timeout=1800).stdout)
    images_s = time.monotonic() - started
    log = open(site / "run-proof.log", "w")
    p = subprocess.Popen([str(Path(mxstack_bin()).with_name("mxstack-run-proof")), "--config", str(config),
                          "--work", str(site / "work"), "--subnet", SUBNET, "--lock", built["lock"], "--prefix", PREFIX],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    line = p.stdout.readline()
    info = json.loads(line) if line else {"ready": False, "error": "no output"}
    info["site"], info["secrets"] = site, yaml.safe_load((site / "secrets.yaml").read_text())
    print(f"images build {images_s:.0f} s; run-proof ready {time.monotonic() - started - images_s:.0f} s")
    try:
        assert info["ready"], f"{info.get('error')}\n{(site / 'run-proof.log').read_text()[-3000:]}"
        yield info
    finally:
        p.stdin.close()
        p.wait(timeout=600)
        log.close()
        # The site holds its secrets.yaml: nothing of it stays behind.
        shutil.rmtree(site, ignore_errors=True)


def http(url, method="GET", body=None, token=None, ctype="application/json"):
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def register(proof, name, password):
    """Shared-secret registration (Synapse's admin API) through the router."""
    url = proof["router"] + "/_synapse/admin/v1/register"
    nonce = json.loads(http(url)[1])["nonce"]
    mac = hmac.new(proof["secrets"]["registration_shared_secret"].encode(),
                   b"\0".join([nonce.encode(), name.encode(), password.encode(), b"notadmin"]),
                   hashlib.sha1).hexdigest()
    s, b = http(url, "POST", {"nonce": nonce, "username": name, "password": password, "mac": mac})
    assert s == 200, b
    return json.loads(b)["user_id"]


def test_a_client_through_the_router_container(proof, tmp_path):
    async def flow():
        alice_id, bob_id = register(proof, "alice", "alice-pw-1"), register(proof, "bob", "bob-pw-1")
        plain = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False)
        alice = AsyncClient(proof["router"], alice_id, store_path=str(tmp_path), config=plain)
        bob = AsyncClient(proof["router"], bob_id, store_path=str(tmp_path), config=plain)
        try:
            assert isinstance(await alice.login("alice-pw-1"), LoginResponse)
            assert isinstance(await bob.login("bob-pw-1"), LoginResponse)
            room = await alice.room_create(invite=[bob_id])
            assert isinstance(room, RoomCreateResponse), room
            assert isinstance(await bob.join(room.room_id), JoinResponse)
            sent = await alice.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": "through podman"})
            assert isinstance(sent, RoomSendResponse), sent
            deadline = time.monotonic() + 60
            seen = False
            while not seen and time.monotonic() < deadline:
                r = await bob.sync(timeout=2000)
                assert isinstance(r, SyncResponse), r
                joined = r.rooms.join.get(room.room_id)
                seen = bool(joined) and any(getattr(e, "body", None) == "through podman" for e in joined.timeline.events)
            assert seen, "bob never saw the message"
            payload = os.urandom(20000)
            up, _ = await alice.upload(lambda *_: payload, content_type="application/octet-stream", filesize=len(payload))
            assert isinstance(up, UploadResponse), up
            down = await bob.download(up.content_uri)
            assert isinstance(down, DownloadResponse) and down.body == payload
        finally:
            await alice.close()
            await bob.close()
    asyncio.run(flow())


def test_an_eicar_upload_is_refused(proof):
    uid = register(proof, "carol", "carol-pw-1")
    s, b = http(proof["router"] + "/_matrix/client/v3/login", "POST",
                {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": uid}, "password": "carol-pw-1"})
    token = json.loads(b)["access_token"]
    s, b = http(proof["router"] + "/_matrix/media/v3/upload?filename=e.com", "POST", b"x " + EICAR, token,
                "application/octet-stream")
    assert s == 400, (s, b)


def test_li_replicates_from_main(proof):
    url = f"http://{proof['pods']['li-sync-0']}:8091/status"
    deadline, status = time.monotonic() + 120, {}
    while time.monotonic() < deadline:
        status = json.loads(http(url)[1]).get("status") or {}
        if status.get("subscribed") and status.get("apply_worker_running"):
            break
        time.sleep(2)
    assert status.get("subscription_enabled") and status.get("apply_worker_running"), status


def test_containers_run_as_their_pod_specs_say(proof):
    """What podman applied, read back: users and read-only roots as rendered."""
    rendered = Path(proof["site"]) / "rendered"
    run("render", "--config", str(Path(proof["site"]) / "mxstack.yaml"), "--out", str(rendered))
    expected = {}
    for f in rendered.glob("*/*.yaml"):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d["kind"] in ("Deployment", "StatefulSet"):
                spec = d["spec"]["template"]["spec"]
                for c in spec["containers"]:
                    uid = (c.get("securityContext") or {}).get("runAsUser") or spec["securityContext"].get("runAsUser")
                    ro = (c.get("securityContext") or {}).get("readOnlyRootFilesystem", False)
                    expected[(d["metadata"]["name"], c["name"])] = (uid, ro)
    checked = 0
    for pod in proof["pods"]:
        workload = pod.rsplit("-", 1)[0]
        for (w, cname), (uid, ro) in expected.items():
            if w != workload:
                continue
            out = podman("inspect", f"{PREFIX}{pod}-{cname}", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}")
            if out.returncode != 0:  # Jobs' containers are gone once they completed
                continue
            user, readonly = out.stdout.split()
            assert user.split(":")[0] == str(uid), (pod, cname, user, uid)
            assert readonly == ("true" if ro else "false"), (pod, cname)
            checked += 1
    assert checked >= 25, checked
