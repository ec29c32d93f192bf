"""Key escrow: a logged-in user's client hands its E2EE key to the LI key vault, through Synapse.

    POST /_synapse/client/mxstack/escrow        Authorization: Bearer <the user's access token>
    {"kind": "backup_key" | "recovery_key", "key": "<secret>"}
    -> 200 {"escrowed": true, "kind": ..., "backup_version": "<v>", "vault_version": n}

The key is checked against the user's CURRENT server-side key backup before it is forwarded, so
the vault only ever holds keys that open that backup:

- backup_key: the unpadded base64 Curve25519 private key of an m.megolm_backup.v1.curve25519-aes-sha2
  backup; its public key must equal the backup's auth_data.public_key.
- recovery_key: the secret-storage recovery key (base58, 0x8B 0x01 prefix, parity byte). It must
  decrypt (MAC checked) the m.megolm_backup.v1 secret in the user's account data, and that backup
  key must match the backup as above.

A key that does not match, or a user without a backup, gets 400 M_INVALID_PARAM and nothing is
forwarded. The vault's store API key is read from `api_key_path` (or the environment variable
`api_key_env`) at each request, never from homeserver.yaml. Vault errors give 502. The key is
never logged.

    modules:
      - module: mxstack_synapse.escrow.KeyEscrow
        config: {vault_url: "http://key-vault:8092", api_key_path: /mxstack/secrets/key-vault/api_key,
                 timeout_secs: 10}

Synapse has no public module API for key backups: the backup is read with the main datastore's
get_e2e_room_keys_version_info (the function Synapse's own GET room_keys/version uses).
"""

import base64
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping

import nacl.public
from twisted.internet.error import ConnectionRefusedError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from synapse.api.errors import Codes, HttpResponseException, StoreError, SynapseError
from synapse.http.server import DirectServeJsonResource
from synapse.http.servlet import parse_json_object_from_request
from synapse.logging.context import make_deferred_yieldable, run_in_background
from synapse.module_api import ModuleApi
from synapse.util.async_helpers import timeout_deferred

try:  # Synapse 1.163's Clock.sleep takes a Duration; earlier ones seconds as a float
    from synapse.util.duration import Duration

    _RETRY_DELAY = Duration(seconds=1)
except ImportError:
    _RETRY_DELAY = 1.0

logger = logging.getLogger(__name__)

__all__ = ["KeyEscrow"]

PATH = "/_synapse/client/mxstack/escrow"
BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
SSSS_ALGORITHM = "m.secret_storage.v1.aes-hmac-sha2"
BACKUP_SECRET = "m.megolm_backup.v1"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _invalid(msg: str) -> SynapseError:
    return SynapseError(400, msg, Codes.INVALID_PARAM)


def _b64decode(s: str) -> bytes:
    s = s.strip()
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def backup_public_key(private_b64: str) -> str:
    """The unpadded base64 Curve25519 public key of an unpadded base64 private key."""
    try:
        raw = _b64decode(private_b64)
    except Exception:
        raise _invalid("key is not base64")
    if len(raw) != 32:
        raise _invalid("key is not a 32-byte Curve25519 private key")
    pub = nacl.public.PrivateKey(raw).public_key.encode()
    return base64.b64encode(pub).decode().rstrip("=")


def decode_recovery_key(text: str) -> bytes:
    """The 32-byte secret-storage key of a recovery key (spec: Key representation)."""
    digits = "".join(text.split())
    n = 0
    for ch in digits:
        i = BASE58.find(ch)
        if i < 0:
            raise _invalid("recovery key is not base58")
        n = n * 58 + i
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    raw = b"\x00" * (len(digits) - len(digits.lstrip("1"))) + raw
    parity = 0
    for b in raw:
        parity ^= b
    if len(raw) != 35 or raw[:2] != b"\x8b\x01" or parity != 0:
        raise _invalid("not a recovery key (prefix, length or parity byte wrong)")
    return raw[2:34]


def _ssss_keys(key: bytes, name: str) -> tuple:
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=b"\x00" * 32, info=name.encode()).derive(key)
    return okm[:32], okm[32:]


def ssss_decrypt(key: bytes, name: str, enc: dict) -> str:
    """Decrypts one m.secret_storage.v1.aes-hmac-sha2 secret; refuses it if the MAC differs."""
    aes_key, mac_key = _ssss_keys(key, name)
    try:
        iv, ciphertext, mac = (_b64decode(enc[k]) for k in ("iv", "ciphertext", "mac"))
    except Exception:
        raise _invalid("the stored %s secret is malformed" % name)
    if not hmac.compare_digest(hmac.new(mac_key, ciphertext, hashlib.sha256).digest(), mac):
        raise _invalid("recovery key does not decrypt the key backup secret (MAC mismatch)")
    dec = Cipher(algorithms.AES(aes_key), modes.CTR(iv)).decryptor()
    return (dec.update(ciphertext) + dec.finalize()).decode("utf-8", "replace")


class _EscrowResource(DirectServeJsonResource):
    def __init__(self, escrow: "KeyEscrow"):
        super().__init__(clock=escrow._clock)
        self._e = escrow

    async def _async_render_POST(self, request):
        return await self._e.handle(request)


class KeyEscrow:
    def __init__(self, config: dict, api: ModuleApi):
        self._api = api
        self._config = config
        self._http = api.http_client
        self._clock = api._hs.get_clock()
        # Private access (no public ModuleApi for key backups): the main datastore.
        self._store = api._hs.get_datastores().main
        api.register_web_resource(PATH, _EscrowResource(self))

    @staticmethod
    def parse_config(config: dict) -> dict:
        name = "mxstack_synapse.escrow.KeyEscrow"
        url = config.get("vault_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise Exception(f"{name}: `vault_url` must be an http(s) URL")
        path, env = config.get("api_key_path"), config.get("api_key_env")
        if not (isinstance(path, str) and path.startswith("/")) and not (isinstance(env, str) and env):
            raise Exception(f"{name}: set `api_key_path` (absolute file path) or `api_key_env`")
        timeout = config.get("timeout_secs", 10)
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise Exception(f"{name}: `timeout_secs` must be a positive number")
        return {
            "vault_url": url.rstrip("/"),
            "api_key_path": path if isinstance(path, str) else None,
            "api_key_env": env if isinstance(env, str) else None,
            "timeout_secs": float(timeout),
        }

    def _api_key(self) -> str:
        c = self._config
        try:
            if c["api_key_path"]:
                with open(c["api_key_path"], encoding="utf-8") as f:
                    key = f.read().strip()
            else:
                key = os.environ.get(c["api_key_env"], "").strip()
        except OSError as e:
            logger.error("key vault API key unreadable (%s)", type(e).__name__)
            key = ""
        if not key:
            raise SynapseError(503, "Key escrow is not configured on this server", Codes.UNKNOWN)
        return key

    async def handle(self, request):
        requester = await self._api.get_user_by_req(request)
        user_id = requester.user.to_string()
        body = parse_json_object_from_request(request)
        kind, key = body.get("kind"), body.get("key")
        if kind not in ("backup_key", "recovery_key"):
            raise _invalid("`kind` must be backup_key or recovery_key")
        if not isinstance(key, str) or not key.strip() or len(key) > 4096:
            raise _invalid("`key` must be a non-empty string")
        key = key.strip()

        try:
            backup = await self._store.get_e2e_room_keys_version_info(user_id)
        except StoreError as e:
            if e.code != 404:
                raise
            raise _invalid("you have no server-side key backup: create one first")
        if backup.get("algorithm") != BACKUP_ALGORITHM:
            raise _invalid("your key backup's algorithm is not " + BACKUP_ALGORITHM)
        expected = (backup.get("auth_data") or {}).get("public_key")
        if not isinstance(expected, str):
            raise _invalid("your key backup has no auth_data.public_key")

        if kind == "backup_key":
            backup_key = key
        else:
            backup_key = await self._backup_key_from_secret_storage(user_id, decode_recovery_key(key))
        if not hmac.compare_digest(backup_public_key(backup_key), expected.rstrip("=")):
            raise _invalid(
                "the key does not match your current key backup (version %s)" % backup["version"]
            )

        payload = {
            "user_id": user_id,
            "kind": kind,
            "backup_version": str(backup["version"]),
            "key": key,
        }
        if requester.device_id:
            payload["device_id"] = requester.device_id
        stored = await self._forward(payload)
        logger.info("escrowed a %s of %s for backup version %s", kind, user_id, backup["version"])
        return 200, {
            "escrowed": True,
            "user_id": user_id,
            "kind": kind,
            "backup_version": str(backup["version"]),
            "vault_version": stored.get("version"),
        }

    async def _backup_key_from_secret_storage(self, user_id: str, ssss_key: bytes) -> str:
        ad = self._api.account_data_manager
        default = await ad.get_global(user_id, "m.secret_storage.default_key") or {}
        key_id = default.get("key")
        if not isinstance(key_id, str):
            raise _invalid("you have no default secret storage key (m.secret_storage.default_key)")
        desc = await ad.get_global(user_id, "m.secret_storage.key." + key_id) or {}
        if desc.get("algorithm") != SSSS_ALGORITHM:
            raise _invalid("your secret storage key's algorithm is not " + SSSS_ALGORITHM)
        if desc.get("iv") and desc.get("mac"):
            # The key's own check: 32 zero bytes encrypted under the name "".
            check = {"iv": desc["iv"], "mac": desc["mac"]}
            aes_key, mac_key = _ssss_keys(ssss_key, "")
            try:
                iv = _b64decode(check["iv"])
            except Exception:
                raise _invalid("your secret storage key description is malformed")
            enc = Cipher(algorithms.AES(aes_key), modes.CTR(iv)).encryptor()
            ct = enc.update(b"\x00" * 32) + enc.finalize()
            mac = base64.b64encode(hmac.new(mac_key, ct, hashlib.sha256).digest()).decode()
            if not hmac.compare_digest(mac.rstrip("="), check["mac"].rstrip("=")):
                raise _invalid("the recovery key is not your default secret storage key")
        secret = await ad.get_global(user_id, BACKUP_SECRET) or {}
        enc = (secret.get("encrypted") or {}).get(key_id)
        if not isinstance(enc, Mapping):  # account data comes back as immutabledict
            raise _invalid("your key backup key is not in secret storage (m.megolm_backup.v1)")
        return ssss_decrypt(ssss_key, BACKUP_SECRET, enc)

    async def _forward(self, payload: dict) -> dict:
        # One retry, a second later, when the vault refused the key (401/403) or the connection:
        # `mxstack rotate` rewrites the key file and restarts the vault (docs/ROTATION.md), and in
        # both cases nothing was stored, so a retry cannot append a second version. A timeout or
        # a 5xx may have stored it: not retried.
        try:
            return await self._forward_once(payload)
        except _Retryable:
            await self._clock.sleep(_RETRY_DELAY)
        try:
            return await self._forward_once(payload)
        except _Retryable as e:
            raise e.error

    async def _forward_once(self, payload: dict) -> dict:
        url = self._config["vault_url"] + "/v1/keys"
        headers = {"Authorization": ["Bearer " + self._api_key()]}
        try:
            d = run_in_background(self._http.post_json_get_json, url, payload, headers=headers)
            return await make_deferred_yieldable(
                timeout_deferred(deferred=d, timeout=self._config["timeout_secs"], clock=self._clock)
            )
        except HttpResponseException as e:
            logger.warning("key vault refused the key: HTTP %s", e.code)
            reason = "the key vault refused the API key" if e.code in (401, 403) else "HTTP %s" % e.code
            error = SynapseError(502, "Key vault error: " + reason, Codes.UNKNOWN)
            if e.code in (401, 403):
                raise _Retryable(error)
            raise error
        except ConnectionRefusedError as e:
            logger.warning("key vault refused the connection (%s)", type(e).__name__)
            raise _Retryable(SynapseError(502, "Key vault unreachable", Codes.UNKNOWN))
        except Exception as e:  # timeout, bad JSON
            logger.warning("key vault unreachable (%s)", type(e).__name__)
            raise SynapseError(502, "Key vault unreachable", Codes.UNKNOWN)


class _Retryable(Exception):
    """A vault answer after which nothing was stored: `error` if the retry fails too."""

    def __init__(self, error: SynapseError):
        super().__init__(str(error))
        self.error = error
