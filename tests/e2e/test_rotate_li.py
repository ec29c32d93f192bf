"""Rotation of the S3 keys, the key vault API keys, the LI passwords and the LiveKit keys under
load (`mxstack rotate`, docs/ROTATION.md).

Its own stack (features li and calls, one process per worker group, base port 24500). A client
keeps sending messages and uploading media through the router while the secrets rotate in one
run, interrupted after `accept` (when SeaweedFS and the key vault must accept the old and the
new value alike) and resumed. Afterwards: every acknowledged message is in the room and every
acknowledged upload downloads; the old S3 keys get 403 from SeaweedFS for each identity, the old
PostgreSQL passwords are refused on main and on the LI cluster, the old vault keys get 401, and a
LiveKit token from rtc-auth verifies with the new key only (LiveKit's own SDK; no LiveKit server
runs on this machine). The replica still follows main (its subscription moved to the new
password) and PostgreSQL archives WAL with the new S3 key. No secret value is printed.
"""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import yaml
import nacl.public
import pytest
from botocore.config import Config as BotoConfig
from livekit import api

from conftest import Stack, run
from test_key_vault import call as vault_call, vault_url
from test_li import li_status, sql, wait_replica
from test_li_console import Browserless, add_account, new_warrant, room_path
from test_rotate import Load, call, rotate

BASE_PORT = 24500
DOMAIN = "rotate-li.mxstack.test"
ESCROW = "/_synapse/client/mxstack/escrow"

# What the test names; each access key brings its secret key, the LiveKit key its secret.
NAMES = ["s3_access_key", "li_s3_access_key", "li_browsing_s3_access_key", "key_vault_store_api_key",
         "key_vault_retrieval_api_key", "li_replication_password", "li_db_password",
         "li_working_copy_db_password", "li_console_db_password", "li_gate_password", "livekit_api_key"]
ROTATED = NAMES + ["s3_secret_key", "li_s3_secret_key", "li_browsing_s3_secret_key", "livekit_api_secret"]
S3_PAIRS = [("s3_access_key", "s3_secret_key"), ("li_s3_access_key", "li_s3_secret_key"),
            ("li_browsing_s3_access_key", "li_browsing_s3_secret_key")]
# (secret, role, which cluster, database)
ROLES = [("li_replication_password", "li_replicator", "postgres", "synapse"),
         ("li_db_password", "li_sync", "postgres-li", "synapse_li"),
         ("li_working_copy_db_password", "synapse_li", "postgres-li", "synapse_li_work"),
         ("li_console_db_password", "li_console", "postgres-li", "synapse_li")]


@pytest.fixture(scope="module")
def li_stack():
    base = Path(tempfile.mkdtemp(prefix="mxstack-rotate-li-e2e-", dir=os.environ.get("MXSTACK_E2E_DIR", "/var/tmp")))
    base.chmod(0o755)
    run("init", "--domain", DOMAIN, "--scale", "1k", "--features", "li,calls", "--dir", str(base))
    try:
        up = run("up", "--config", str(base / "mxstack.yaml"), "--base-port", str(BASE_PORT),
                 "--replicas", "1", "--json", timeout=900)
        assert json.loads(up.stdout)["ready"] is True
        s = Stack(base)
        deadline = time.monotonic() + 180
        while not li_status(s).get("healthy"):
            assert time.monotonic() < deadline, li_status(s).get("problems")
            time.sleep(1)
        yield s
    finally:
        run("down", "--config", str(base / "mxstack.yaml"), "--purge", check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def s3_error(stack, access, secret):
    """None when SeaweedFS accepts the key pair (a listing of any bucket it may list), else the
    error code and HTTP status it answered."""
    c = boto3.client("s3", endpoint_url=stack.status["s3_endpoint"], region_name="us-east-1",
                     aws_access_key_id=access, aws_secret_access_key=secret,
                     config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    # Every bucket of the stack by name: with feature li main's key lists only main's buckets
    # (docs/BACKUP.md), so it cannot name the LI ones.
    c_yaml = yaml.safe_load(Path(stack.config).read_text())
    media = c_yaml.get("media", {}).get("bucket", "synapse-media")
    backups = c_yaml.get("backup", {}).get("bucket", "pg-backups")
    buckets = [media, c_yaml.get("li", {}).get("media_bucket", f"{media}-li"), backups, c_yaml.get("backup", {}).get("li_bucket", f"{backups}-li")]
    last = None
    for b in buckets:
        try:
            c.list_objects_v2(Bucket=b, MaxKeys=1)
            return None
        except Exception as e:
            meta = getattr(e, "response", {})
            last = (meta.get("Error", {}).get("Code"), meta.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            if last[0] == "InvalidAccessKeyId" or last[0] == "SignatureDoesNotMatch":
                return last
    return last


def pg_login(stack, cluster, role, db, password):
    (port,) = [p["port"] for p in stack.refresh()["processes"] if p["name"] == cluster]
    r = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", role, "-d", db, "-tAc", "select 1"],
                       capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"})
    return r.returncode == 0


def vault_status(stack, which, key):
    """The vault's HTTP status for a request with `key`: 401 when it refuses the key."""
    auth = {"Authorization": "Bearer " + key}
    if which == "store":
        code, _ = vault_call(vault_url(stack) + "/v1/keys", "POST", {}, auth)
    else:
        code, _ = vault_call(vault_url(stack) + "/v1/keys/" + urllib.parse.quote("@x:" + DOMAIN), "GET", headers=auth)
    return code


def escrow(stack, user, key):
    return vault_call(stack.url + ESCROW, "POST", {"kind": "backup_key", "key": key},
                      {"Authorization": "Bearer " + user["access_token"]})


def backup_key(stack, user):
    """A key backup of `user` and its private key (what escrow accepts)."""
    b64 = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    priv = nacl.public.PrivateKey.generate()
    code, r = vault_call(stack.url + "/_matrix/client/v3/room_keys/version", "POST",
                         {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                          "auth_data": {"public_key": b64(priv.public_key.encode())}},
                         {"Authorization": "Bearer " + user["access_token"]})
    assert code == 200, r
    return b64(priv.encode())


def livekit_jwt(stack, user, room):
    port = next(p["port"] for p in stack.refresh()["processes"] if p["name"] == "rtc-auth")
    t = call(stack, user["access_token"], "POST",
             f"/_matrix/client/v3/user/{urllib.parse.quote(user['user_id'])}/openid/request_token", {})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/sfu/get", method="POST",
                                 data=json.dumps({"room": room, "openid_token": t,
                                                  "device_id": user["device_id"]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["jwt"]


def livekit_accepts(key, secret, jwt):
    try:
        api.TokenVerifier(key, secret).verify(jwt)
        return True
    except Exception:
        return False


class Uploads:
    """Uploads a small file every 0.5 s through the router (the media worker stores it in S3
    synchronously); records every acknowledged content URI and the failed attempts."""

    def __init__(self, stack, token):
        self.stack, self.token = stack, token
        self.acked, self.failures, self.reasons, self.stop = [], 0, [], threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            req = urllib.request.Request(self.stack.url + "/_matrix/media/v3/upload?filename=f.bin", method="POST",
                                         data=f"upload {n} ".encode() * 50,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/octet-stream"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    self.acked.append((json.load(r)["content_uri"], n))
            except urllib.error.HTTPError as e:
                self.failures += 1
                self.reasons.append(f"HTTP {e.code} at {time.strftime('%H:%M:%S')}")
            except (urllib.error.URLError, OSError, KeyError) as e:
                self.failures += 1
                self.reasons.append(f"{type(e).__name__} at {time.strftime('%H:%M:%S')}")
            time.sleep(0.5)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=120)


def vault_metric(stack, name):
    with urllib.request.urlopen(vault_url(stack) + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise KeyError(name)


def archived(stack):
    return int(sql(stack, "main", "SELECT archived_count FROM pg_stat_archiver"))


def test_s3_vault_li_and_livekit_secrets_rotate_under_load(li_stack):
    s = li_stack
    alice = s.user("alice")
    room = call(s, alice["access_token"], "POST", "/_matrix/client/v3/createRoom", {"name": "load"})["room_id"]
    old = {k: s.secret(k) for k in ROTATED}
    key = backup_key(s, alice)
    code, r = escrow(s, alice, key)
    assert code == 200, r
    before_jwt = livekit_jwt(s, alice, room)
    assert livekit_accepts(old["livekit_api_key"], old["livekit_api_secret"], before_jwt)
    started = time.monotonic()

    with Load(s, alice["access_token"], room) as load, Uploads(s, alice["access_token"]) as uploads:
        time.sleep(3)
        r = rotate(s, *NAMES, env={"MXSTACK_ROTATE_INTERRUPT_AFTER": "accept"})
        assert r.returncode == 75, r.stdout + r.stderr
        outputs = r.stdout + r.stderr
        # Between accept and retire SeaweedFS and the key vault accept the old and the new value.
        for ak, sk in S3_PAIRS:
            assert s3_error(s, old[ak], old[sk]) is None, f"{ak}: the old pair is refused during the rotation"
            assert s3_error(s, s.secret(ak), s.secret(sk)) is None, f"{ak}: the new pair is refused"
        for which in ("store", "retrieval"):
            name = f"key_vault_{which}_api_key"
            assert vault_status(s, which, old[name]) != 401, name
            assert vault_status(s, which, s.secret(name)) != 401, name
        r = rotate(s, *NAMES)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "resuming the rotation of" in r.stdout and "at phase switch" in r.stdout, r.stdout
        outputs += r.stdout + r.stderr
        time.sleep(3)
    took = time.monotonic() - started
    new = {k: s.secret(k) for k in ROTATED}
    # Booleans first: pytest would print the operands of a failed comparison.
    for k in ROTATED:
        rotated, printed = new[k] != old[k], old[k] in outputs or new[k] in outputs
        assert rotated, f"{k} was not rotated"
        assert not printed, f"{k} printed"

    # 0 acknowledged messages and uploads lost.
    assert len(load.acked) > 20, len(load.acked)
    for event_id in load.acked:
        call(s, alice["access_token"], "GET", f"/_matrix/client/v3/rooms/{room}/event/{event_id}")
    assert len(uploads.acked) > 10, len(uploads.acked)
    for uri, n in uploads.acked:
        server, media = uri[len("mxc://"):].split("/", 1)
        req = urllib.request.Request(s.url + f"/_matrix/client/v1/media/download/{server}/{media}",
                                     headers={"Authorization": f"Bearer {alice['access_token']}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.read() == f"upload {n} ".encode() * 50
    print(f"rotation took {took:.0f}s; {len(load.acked)} messages acknowledged, {load.failures} failed attempts "
          f"retried; {len(uploads.acked)} uploads acknowledged, {uploads.failures} failed {uploads.reasons}")

    # S3: the old pair of every identity is refused (403), the new one accepted.
    for ak, sk in S3_PAIRS:
        assert s3_error(s, old[ak], old[sk]) in (("InvalidAccessKeyId", 403), ("SignatureDoesNotMatch", 403)), ak
        assert s3_error(s, new[ak], new[sk]) is None, ak
    # PostgreSQL: the old passwords are refused, the new ones accepted.
    for secret, role, cluster, db in ROLES:
        assert not pg_login(s, cluster, role, db, old[secret]), f"{role}: old password accepted"
        assert pg_login(s, cluster, role, db, new[secret]), f"{role}: new password refused"
    # The key vault: the old keys get 401; Synapse main escrows with the new one.
    for which in ("store", "retrieval"):
        name = f"key_vault_{which}_api_key"
        assert vault_status(s, which, old[name]) == 401, name
        assert vault_status(s, which, new[name]) != 401, name
    code, r = escrow(s, alice, key)
    assert code == 200 and r["vault_version"] == 2, r
    # LiveKit: rtc-auth signs with the new key; a token of the old key would not verify.
    jwt = livekit_jwt(s, alice, room)
    assert livekit_accepts(new["livekit_api_key"], new["livekit_api_secret"], jwt)
    assert not livekit_accepts(old["livekit_api_key"], old["livekit_api_secret"], jwt)
    assert not livekit_accepts(new["livekit_api_key"], new["livekit_api_secret"], before_jwt)

    # The replica follows main through the subscription, now on the new password.
    moved = f"password={new['li_replication_password']} " in sql(s, "replica", "SELECT subconninfo FROM pg_subscription") + " "
    assert moved, "the subscription still connects with the old password"
    after = call(s, alice["access_token"], "PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/after-rotation",
                 {"msgtype": "m.text", "body": "after the rotation"})["event_id"]
    wait_replica(s, f"SELECT count(*) FROM events WHERE event_id = '{after}'", "1", timeout=120)
    # The LI console reads the replica with its new password and retrieves alice's escrowed key
    # from the vault with the new retrieval key.
    accounts = {role: add_account(s, f"{role[:3]}-rot", role) for role in ("investigator", "supervisor")}
    port = next(p["port"] for p in s.refresh()["processes"] if p["name"] == "li-console")
    inv = Browserless(f"http://127.0.0.1:{port}").login(accounts["investigator"])
    sup = Browserless(f"http://127.0.0.1:{port}").login(accounts["supervisor"])
    wid, _ = new_warrant(inv, users=[alice["user_id"]])
    sup.get(f"/warrants/{wid}")
    status, text = sup.post(f"/warrants/{wid}/decide", {"decision": "approve"})
    assert status == 200 and "active" in text, text[:300]
    status, text = inv.get(room_path(wid, room))
    assert status == 200 and "after the rotation" in text, text[:500]
    assert vault_metric(s, "mxstack_keyvault_retrievals_total") >= 1
    # PostgreSQL archives WAL with the new S3 key (barman reads the credentials file at each run).
    n = archived(s)
    sql(s, "main", "SELECT pg_switch_wal()")
    deadline = time.monotonic() + 90
    while archived(s) <= n:
        assert time.monotonic() < deadline, "no WAL archived with the new S3 key"
        time.sleep(1)

    # No value, old or new, in any process's log or the supervisor's. The one exception is
    # SeaweedFS's own line for a refused request, which names the access key id it was signed
    # with (the public half, sent in every request; never the secret key): the old ids appear
    # there because this test presents them after the retire.
    leaks = []
    for log in sorted((s.state / "logs").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if log.name == "seaweedfs.log" and "InvalidAccessKeyId: attempted key" in line:
                line = line.replace(line.split("'")[1], "") if line.count("'") >= 2 else line
            found = [k for k in ROTATED if old[k] in line or new[k] in line]
            if found:
                # The line with every value blanked names the cause without printing a secret.
                for k in ROTATED:
                    line = line.replace(old[k], f"<old {k}>").replace(new[k], f"<new {k}>")
                leaks.append(f"{log.name}: {line[:400]}")
    assert not leaks, leaks[:10]
    assert not (s.state / "rotation.json").exists()
    assert "previous." not in (s.dir / "secrets.yaml").read_text()
    states = {p["name"]: p["state"] for p in s.refresh()["processes"]}
    assert all(v in ("ready", "done") for v in states.values()), states
