"""Key escrow through real Synapse 1.163.2 with mxstack_synapse.escrow.KeyEscrow loaded.

A single-process Synapse (SQLite, temp dir) and an HTTP receiver standing in for the key vault's
store API (POST /v1/keys, Bearer store API key). Key backups and secret storage are made through
the client API as a client does (PyNaCl key pair; SSSS per the spec), then keys are escrowed
through the module's endpoint and through `mxstack escrow`.
"""

import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nacl.public
import pytest

from conftest import mxstack_bin
# Shared with e2ee_material.make_e2ee_material (the same client-side recovery key and secret storage).
from e2ee_material import b64, call, recovery_key_text, setup_secret_storage

REPO = Path(__file__).resolve().parents[2]
ESCROW = "/_synapse/client/mxstack/escrow"
STORE_KEY = "store-" + secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vault:
    """Stands in for the key vault's store endpoint; records what it accepted."""

    def __init__(self):
        self.received, self.refused = [], 0
        vault = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/keys" or self.headers.get("Authorization") != "Bearer " + STORE_KEY:
                    vault.refused += 1
                    out = b'{"error":"bad api key"}'
                    self.send_response(401)
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                doc = json.loads(body)
                vault.received.append(doc)
                n = sum(1 for d in vault.received if d["user_id"] == doc["user_id"])
                out = json.dumps({"user_id": doc["user_id"], "version": n}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def hs(tmp_path_factory):
    d = tmp_path_factory.mktemp("escrow-synapse")
    vault = Vault()
    port = free_port()
    shared = secrets.token_hex(16)
    key_file = d / "store_api_key"
    key_file.write_text(STORE_KEY + "\n")
    key_file.chmod(0o600)
    cfg = {
        "server_name": "escrow.test",
        "public_baseurl": "http://127.0.0.1:%d/" % port,
        "report_stats": False,
        "pid_file": str(d / "hs.pid"),
        "signing_key_path": str(d / "signing.key"),
        "media_store_path": str(d / "media"),
        "database": {"name": "sqlite3", "args": {"database": str(d / "hs.db")}},
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                       "resources": [{"names": ["client"], "compress": False}]}],
        "registration_shared_secret": shared,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "trusted_key_servers": [],
        "enable_registration": False,
        "rc_login": {"address": {"per_second": 100, "burst_count": 100}},
        "modules": [{"module": "mxstack_synapse.escrow.KeyEscrow",
                     "config": {"vault_url": vault.url, "api_key_path": str(key_file), "timeout_secs": 5}}],
    }
    (d / "homeserver.yaml").write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    py = sys.executable
    subprocess.run([py, "-m", "synapse.app.homeserver", "-c", str(d / "homeserver.yaml"), "--generate-keys"],
                   check=True, env=env, capture_output=True, cwd=d)
    log = open(d / "synapse.log", "wb")
    proc = subprocess.Popen([py, "-m", "synapse.app.homeserver", "-c", str(d / "homeserver.yaml")],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=d)
    base = "http://127.0.0.1:%d" % port
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=2).read()
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("Synapse did not start:\n" + (d / "synapse.log").read_text()[-3000:])
            time.sleep(0.3)

    def register(name):
        _, n = call(base, "GET", "/_synapse/admin/v1/register")
        pw = secrets.token_hex(8)
        mac = hmac.new(shared.encode(), b"\x00".join([n["nonce"].encode(), name.encode(), pw.encode(), b"notadmin"]),
                       hashlib.sha1).hexdigest()
        code, r = call(base, "POST", "/_synapse/admin/v1/register",
                       {"nonce": n["nonce"], "username": name, "password": pw, "admin": False, "mac": mac})
        assert code == 200, r
        return r["user_id"], r["access_token"]

    yield {"base": base, "vault": vault, "register": register, "dir": d, "key_file": key_file}
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    vault.server.shutdown()


def make_backup(base, token):
    priv = nacl.public.PrivateKey.generate()
    code, r = call(base, "POST", "/_matrix/client/v3/room_keys/version",
                   {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                    "auth_data": {"public_key": b64(priv.public_key.encode())}}, token)
    assert code == 200, r
    return b64(priv.encode()), r["version"]


def test_escrow_checks_the_key_against_the_current_backup(hs):
    base, vault = hs["base"], hs["vault"]
    user_id, token = hs["register"]("alice")

    # No access token: Synapse's 401, nothing forwarded.
    code, r = call(base, "POST", ESCROW, {"kind": "backup_key", "key": "x"})
    assert code == 401 and r["errcode"] == "M_MISSING_TOKEN", r
    # No backup yet.
    some_key = b64(bytes(nacl.public.PrivateKey.generate()))
    code, r = call(base, "POST", ESCROW, {"kind": "backup_key", "key": some_key}, token)
    assert code == 400 and r["errcode"] == "M_INVALID_PARAM" and "no server-side key backup" in r["error"], r
    assert vault.received == []

    key, version = make_backup(base, token)
    # A different key: refused, nothing forwarded.
    code, r = call(base, "POST", ESCROW, {"kind": "backup_key", "key": some_key}, token)
    assert code == 400 and r["errcode"] == "M_INVALID_PARAM" and "does not match" in r["error"], r
    code, r = call(base, "POST", ESCROW, {"kind": "backup_key", "key": "not base64!"}, token)
    assert code == 400, r
    code, r = call(base, "POST", ESCROW, {"kind": "something", "key": key}, token)
    assert code == 400, r
    assert vault.received == []

    # The matching key: forwarded with the store API key and the backup version.
    code, r = call(base, "POST", ESCROW, {"kind": "backup_key", "key": key}, token)
    assert code == 200, r
    assert r == {"escrowed": True, "user_id": user_id, "kind": "backup_key",
                 "backup_version": version, "vault_version": 1}
    assert len(vault.received) == 1
    got = vault.received[0]
    assert got["user_id"] == user_id and got["kind"] == "backup_key" and got["key"] == key
    assert got["backup_version"] == version and got["device_id"]

    # A newer backup replaces the current one: the old key no longer matches.
    key2, version2 = make_backup(base, token)
    assert version2 != version
    code, r = call(base, "POST", ESCROW, {"kind": "backup_key", "key": key}, token)
    assert code == 400 and "does not match" in r["error"], r
    code, r = call(base, "POST", ESCROW, {"kind": "backup_key", "key": key2}, token)
    assert code == 200 and r["backup_version"] == version2 and r["vault_version"] == 2, r
    assert len(vault.received) == 2

    # The key is never logged.
    assert key not in (hs["dir"] / "synapse.log").read_text()


def test_recovery_key_opens_secret_storage(hs):
    base, vault = hs["base"], hs["vault"]
    user_id, token = hs["register"]("bob")
    key, version = make_backup(base, token)
    before = len(vault.received)
    # No secret storage yet.
    wrong = recovery_key_text(os.urandom(32))
    code, r = call(base, "POST", ESCROW, {"kind": "recovery_key", "key": wrong}, token)
    assert code == 400 and "secret storage" in r["error"], r

    recovery = setup_secret_storage(base, user_id, token, key)
    code, r = call(base, "POST", ESCROW, {"kind": "recovery_key", "key": wrong}, token)
    assert code == 400 and r["errcode"] == "M_INVALID_PARAM", r
    # A typo (parity byte catches it).
    typo = recovery[:-1] + ("a" if recovery[-1] != "a" else "b")
    code, r = call(base, "POST", ESCROW, {"kind": "recovery_key", "key": typo}, token)
    assert code == 400, r
    assert len(vault.received) == before

    code, r = call(base, "POST", ESCROW, {"kind": "recovery_key", "key": recovery}, token)
    assert code == 200 and r["kind"] == "recovery_key" and r["backup_version"] == version, r
    got = vault.received[-1]
    assert got["kind"] == "recovery_key" and got["key"] == recovery.strip() and got["user_id"] == user_id

    # Secret storage holding a backup key that does not open the current backup: refused.
    make_backup(base, token)
    code, r = call(base, "POST", ESCROW, {"kind": "recovery_key", "key": recovery}, token)
    assert code == 400 and "does not match" in r["error"], r
    assert len(vault.received) == before + 1


def test_vault_errors_are_502(hs):
    base, vault = hs["base"], hs["vault"]
    _, token = hs["register"]("carol")
    key, _ = make_backup(base, token)
    kf = hs["key_file"]
    kf.write_text("a-wrong-store-api-key")
    try:
        refused = vault.refused
        code, r = call(base, "POST", ESCROW, {"kind": "backup_key", "key": key}, token)
        assert code == 502 and "refused the API key" in r["error"], r
        # The module retries once after a refusal (a rotation's moment, docs/ROTATION.md).
        assert vault.refused == refused + 2
    finally:
        kf.write_text(STORE_KEY)


def test_mxstack_escrow_reference_client(hs, tmp_path):
    base, vault = hs["base"], hs["vault"]
    user_id, token = hs["register"]("dave")
    key, version = make_backup(base, token)
    (tmp_path / "token").write_text(token)
    (tmp_path / "key").write_text(key + "\n")
    (tmp_path / "wrong").write_text(b64(bytes(nacl.public.PrivateKey.generate())))
    exe = mxstack_bin()
    args = [exe, "escrow", "--homeserver", base, "--access-token-file", str(tmp_path / "token"),
            "--kind", "backup_key"]
    r = subprocess.run(args + ["--key-file", str(tmp_path / "key")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert user_id in r.stdout and f"version {version}" in r.stdout
    assert vault.received[-1]["user_id"] == user_id and vault.received[-1]["key"] == key

    n = len(vault.received)
    r = subprocess.run(args + ["--key-file", str(tmp_path / "wrong")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "HTTP 400 M_INVALID_PARAM" in r.stderr and "does not match" in r.stderr, r.stderr
    r = subprocess.run(args + ["--key-file", str(tmp_path / "wrong"), "--json"], capture_output=True, text=True,
                       timeout=60)
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["status"] == 400 and out["response"]["errcode"] == "M_INVALID_PARAM"
    assert len(vault.received) == n

    # Token from the environment; a bad token is Synapse's 401.
    r = subprocess.run([exe, "escrow", "--homeserver", base, "--kind", "backup_key", "--key-file",
                        str(tmp_path / "key"), "--json"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MXSTACK_ACCESS_TOKEN="not-a-token"))
    assert json.loads(r.stdout)["status"] == 401
