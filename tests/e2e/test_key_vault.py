"""The key vault as `mxstack up` runs it (feature li): a user of the running stack escrows the key of
its key backup through the router and Synapse main's escrow module into the real vault; the LI
side retrieves it with the retrieval API key and decrypts it with the vault identity from
secrets.yaml (the real `age` CLI)."""

import base64
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import nacl.public

ESCROW = "/_synapse/client/mxstack/escrow"


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def call(url, method, body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def vault_url(stack):
    for line in (stack.state / "key-vault" / "key-vault.yaml").read_text().splitlines():
        if line.startswith("listen:"):
            return "http://" + line.split(":", 1)[1].strip().strip("'\"")
    raise AssertionError("no listen in key-vault.yaml")


def signed_warrant(stack, users, case_ref="E2E", warrant_id=1, expires_in_ms=60_000, issued_ago_ms=0, seed=None):
    """An X-Mxstack-Warrant value as the LI console makes it (crates/key-vault/src/warrant.rs):
    `v1.<claim>.<Ed25519 signature>` with the console's key from secrets.yaml."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = seed or base64.b64decode(stack.secret("li_console_signing_key"))
    now = int(time.time() * 1000)
    claim = json.dumps({"warrant_id": warrant_id, "case_ref": case_ref, "users": users,
                        "expires_ms": now + expires_in_ms, "issued_ms": now - issued_ago_ms}).encode()
    sig = Ed25519PrivateKey.from_private_bytes(seed).sign(claim)
    url = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
    return f"v1.{url(claim)}.{url(sig)}"


def test_escrow_into_the_running_vault_and_retrieve(stack, tmp_path):
    u = stack.user("escrow")
    user_id, auth = u["user_id"], {"Authorization": "Bearer " + u["access_token"]}
    priv = nacl.public.PrivateKey.generate()
    code, r = call(stack.url + "/_matrix/client/v3/room_keys/version", "POST",
                   {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                    "auth_data": {"public_key": b64(priv.public_key.encode())}}, auth)
    assert code == 200, r
    backup_version = r["version"]
    key = b64(priv.encode())

    # A key that does not open the current backup is refused, and nothing reaches the vault.
    wrong = b64(nacl.public.PrivateKey.generate().encode())
    code, r = call(stack.url + ESCROW, "POST", {"kind": "backup_key", "key": wrong}, auth)
    assert code == 400, r
    code, r = call(stack.url + ESCROW, "POST", {"kind": "backup_key", "key": key}, auth)
    assert code == 200, r
    assert r["escrowed"] is True and r["user_id"] == user_id and r["vault_version"] == 1, r

    vault = vault_url(stack) + "/v1/keys/" + urllib.parse.quote(user_id, safe="")
    warrant = {"X-Mxstack-Warrant": signed_warrant(stack, [user_id], case_ref="W-E2E-1")}
    # The store key cannot retrieve; without a warrant reference nothing is returned.
    store = {"Authorization": "Bearer " + stack.secret("key_vault_store_api_key")}
    code, r = call(vault, "GET", headers={**store, **warrant})
    assert code == 401, r
    retrieval = {"Authorization": "Bearer " + stack.secret("key_vault_retrieval_api_key")}
    code, r = call(vault, "GET", headers=retrieval)
    assert code == 400, r
    # The vault releases keys only under a claim the LI console signed, naming the user, fresh and
    # unexpired: the retrieval key alone (or with a free-text reference) gets nothing.
    for refused in ("W-E2E-1", signed_warrant(stack, ["@someone-else:e2e.mxstack.test"]),
                    signed_warrant(stack, [user_id], expires_in_ms=-1),
                    signed_warrant(stack, [user_id], issued_ago_ms=600_000),
                    signed_warrant(stack, [user_id], seed=b"\x01" * 32)):
        code, r = call(vault, "GET", headers={**retrieval, "X-Mxstack-Warrant": refused})
        assert code == 403 and r["errcode"] == "WARRANT_REFUSED" and "keys" not in r, r
    code, r = call(vault, "GET", headers={**retrieval, **warrant})
    assert code == 200, r
    assert r["user_id"] == user_id and r["warrant"] == "W-E2E-1 (console warrant #1)"
    assert len(r["keys"]) == 1, r
    got = r["keys"][0]
    assert got["kind"] == "backup_key" and got["backup_version"] == backup_version
    assert key not in json.dumps(r)

    identity = tmp_path / "identity.txt"
    identity.write_text(stack.secret("key_vault_age_identity") + "\n")
    identity.chmod(0o600)
    out = subprocess.run(["age", "-d", "-i", str(identity)], input=got["ciphertext"].encode(),
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() == key
