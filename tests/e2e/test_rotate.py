"""Secret rotation under load (`mxstack rotate`, docs/ROTATION.md).

Its own small stack (features antivirus and calls, one process per worker group, base port 24000):
a client keeps sending messages through the router while every rotatable secret is rotated
(one of them interrupted halfway and resumed). Afterwards every acknowledged message is in the
room, and each old value is refused: shared-secret registration, Valkey AUTH, PostgreSQL login,
TURN credentials, the content scanner's public key, the S3 key. The LI secrets rotate in
test_rotate_li.py (a stack with li). No secret value is printed.
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import Stack, run, mxstack_bin
from test_calls import turn_server, uclient

BASE_PORT = 24000


@pytest.fixture(scope="module")
def rot_stack():
    base = Path(tempfile.mkdtemp(prefix="mxstack-rotate-e2e-", dir=os.environ.get("MXSTACK_E2E_DIR", "/var/tmp")))
    base.chmod(0o755)
    run("init", "--domain", "rotate.mxstack.test", "--scale", "1k", "--features", "antivirus,calls", "--dir", str(base))
    try:
        up = run("up", "--config", str(base / "mxstack.yaml"), "--base-port", str(BASE_PORT),
                 "--replicas", "1", "--json", timeout=900)
        assert json.loads(up.stdout)["ready"] is True
        yield Stack(base)
    finally:
        run("down", "--config", str(base / "mxstack.yaml"), "--purge", check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def call(stack, token, method, path, body=None, timeout=15):
    req = urllib.request.Request(stack.url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


class Load:
    """Sends a message every 0.2 s; a failed send is retried with the same transaction id (so
    Synapse deduplicates it) until it is acknowledged. Records every acknowledged event id."""

    def __init__(self, stack, token, room):
        self.stack, self.token, self.room = stack, token, room
        self.acked, self.failures, self.stop = [], 0, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            txn = f"load-{n}"
            deadline = time.time() + 90
            while time.time() < deadline:
                try:
                    r = call(self.stack, self.token, "PUT",
                             f"/_matrix/client/v3/rooms/{self.room}/send/m.room.message/{txn}",
                             {"msgtype": "m.text", "body": f"message {n}"})
                    self.acked.append(r["event_id"])
                    break
                except (urllib.error.URLError, OSError, KeyError):
                    self.failures += 1
                    time.sleep(0.5)
            time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=120)


def rotate(stack, *args, env=None):
    r = subprocess.run([mxstack_bin(), "rotate", *args, "--config", stack.config],
                       capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    return r


def redis_auth(port, password):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n".encode())
        return s.recv(128).decode()


def pg_login(port, password):
    r = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "synapse", "-d", "synapse",
                        "-tAc", "select 1"], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"})
    return r.returncode == 0


def shared_secret_register(stack, secret, name):
    """Synapse's admin registration with an HMAC of `secret`: the HTTP status."""
    with urllib.request.urlopen(stack.url + "/_synapse/admin/v1/register", timeout=10) as r:
        nonce = json.load(r)["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), name.encode(), b"Pass-word-1", b"notadmin"]))
    body = {"nonce": nonce, "username": name, "password": "Pass-word-1", "admin": False, "mac": mac.hexdigest()}
    req = urllib.request.Request(stack.url + "/_synapse/admin/v1/register", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def turn_password(secret, username):
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def allocates(port, username, password):
    return "Cannot complete Allocation" not in uclient(port, username, password)


def scanner_key(stack):
    with urllib.request.urlopen(stack.url + "/_matrix/media_proxy/unstable/public_key", timeout=10) as r:
        return json.load(r)["public_key"]


def s3_refusal(stack, access, secret):
    """None when SeaweedFS lists the buckets for this key pair, else its error code and status."""
    import boto3
    from botocore.config import Config as BotoConfig
    c = boto3.client("s3", endpoint_url=stack.status["s3_endpoint"], region_name="us-east-1",
                     aws_access_key_id=access, aws_secret_access_key=secret,
                     config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    try:
        c.list_buckets()
        return None
    except Exception as e:
        meta = getattr(e, "response", {})
        return meta.get("Error", {}).get("Code"), meta.get("ResponseMetadata", {}).get("HTTPStatusCode")


def replication_call(stack, secret):
    """A harmless replication request to main (an empty range of the caches stream; the last
    path segment is the endpoint's transaction id) with `secret` as its bearer: Synapse answers 200 for the current worker_replication_secret and
    refuses any other (its auth check raises: 500)."""
    cfg = yaml.safe_load((stack.state / "synapse" / "config" / "homeserver.yaml").read_text())
    port = cfg["instance_map"]["main"]["port"]
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/_synapse/replication/get_repl_stream_updates/caches/t{time.monotonic_ns()}"
        "?from_token=0&upto_token=0",
        headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def ports(stack, prefix):
    return [p["port"] for p in stack.refresh()["processes"] if p["name"].startswith(prefix) and p["port"]]


def test_every_rotatable_secret_rotates_under_load_without_losing_a_message(rot_stack):
    s = rot_stack
    alice = s.user("alice")
    room = call(s, alice["access_token"], "POST", "/_matrix/client/v3/createRoom", {"name": "load"})["room_id"]
    old = {k: s.secret(k) for k in ["registration_shared_secret", "redis_password", "synapse_db_password",
                                     "turn_shared_secret", "s3_access_key", "s3_secret_key",
                                     "worker_replication_secret"]}
    assert replication_call(s, old["worker_replication_secret"]) == 200
    creds = turn_server(s, alice)
    turn_port = int(creds["uris"][0].split(":")[2].split("?")[0])
    old_key = scanner_key(s)
    (pg_port,) = [p["port"] for p in s.refresh()["processes"] if p["name"] == "postgres"]
    assert allocates(turn_port, creds["username"], creds["password"])

    with Load(s, alice["access_token"], room) as load:
        time.sleep(3)
        # Interrupted after coturn accepts both secrets: old and new credentials both work.
        r = rotate(s, "turn_shared_secret", env={"MXSTACK_ROTATE_INTERRUPT_AFTER": "accept"})
        assert r.returncode == 75, r.stdout + r.stderr
        new_turn = s.secret("turn_shared_secret")
        assert new_turn != old["turn_shared_secret"]
        assert allocates(turn_port, creds["username"], creds["password"])
        assert allocates(turn_port, creds["username"], turn_password(new_turn, creds["username"]))
        # Re-run: it says where it resumes, and finishes.
        r = rotate(s, "turn_shared_secret")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "resuming the rotation of turn_shared_secret at phase switch" in r.stdout, r.stdout
        assert not allocates(turn_port, creds["username"], creds["password"])
        assert allocates(turn_port, creds["username"], turn_password(new_turn, creds["username"]))
        # Everything else rotatable, with one rolling restart.
        r = rotate(s, "--all-rotatable")
        assert r.returncode == 0, r.stdout + r.stderr
        time.sleep(3)
    output = r.stdout + r.stderr
    for k, v in old.items():
        assert v not in output and s.secret(k) not in output, f"{k} printed"

    # 0 acknowledged messages lost: every acknowledged event is in the room.
    assert len(load.acked) > 20, load.acked
    for event_id in load.acked:
        call(s, alice["access_token"], "GET", f"/_matrix/client/v3/rooms/{room}/event/{event_id}")
    print(f"{len(load.acked)} messages acknowledged, {load.failures} failed attempts retried")

    # The old values are refused, the new ones accepted.
    assert shared_secret_register(s, old["registration_shared_secret"], f"old-{os.getpid()}") in (401, 403)
    assert shared_secret_register(s, s.secret("registration_shared_secret"), f"new-{os.getpid()}") == 200
    for port in ports(s, "valkey-"):
        if port in ports(s, "valkey-master"):
            continue
        assert "WRONGPASS" in redis_auth(port, old["redis_password"])
        assert redis_auth(port, s.secret("redis_password")).startswith("+OK")
    assert not pg_login(pg_port, old["synapse_db_password"])
    assert pg_login(pg_port, s.secret("synapse_db_password"))
    fresh = turn_server(s, alice)
    assert fresh["password"] == turn_password(s.secret("turn_shared_secret"), fresh["username"])
    assert allocates(turn_port, fresh["username"], fresh["password"])
    assert not allocates(turn_port, fresh["username"], turn_password(old["turn_shared_secret"], fresh["username"]))
    assert scanner_key(s) != old_key
    assert replication_call(s, old["worker_replication_secret"]) != 200
    assert replication_call(s, s.secret("worker_replication_secret")) == 200
    assert s3_refusal(s, old["s3_access_key"], old["s3_secret_key"]) == ("InvalidAccessKeyId", 403)
    assert s3_refusal(s, s.secret("s3_access_key"), s.secret("s3_secret_key")) is None
    # Nothing is left half done, and every process is up.
    assert not (s.state / "rotation.json").exists()
    assert "previous." not in (s.dir / "secrets.yaml").read_text()
    states = {p["name"]: p["state"] for p in s.refresh()["processes"]}
    assert all(v in ("ready", "done") for v in states.values()), states


def test_a_secret_that_is_no_rotation_is_refused_with_the_reason(rot_stack):
    r = rotate(rot_stack, "synapse_signing_key")
    assert r.returncode != 0
    assert "federation identity" in r.stderr, r.stderr
