"""Antivirus in the media path (issue 4), through the router of the running local stack.

Uploads go to a media worker, whose module hands the file to the content scanner; downloads and
thumbnails go from the router to the scanner, which fetches them from the media workers and
passes on only what clamd (with the project's EICAR test signature) finds clean.
"""
import base64
import io
import json
import os
import signal
import struct
import time
import urllib.error
import urllib.request
import zlib

import boto3
import pytest
import vodozemac
from botocore.config import Config as BotoConfig
from nio.crypto.attachments import encrypt_attachment

from test_local_stack import router_lines

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def http(stack, method, path, body=None, token=None, ctype="application/octet-stream", timeout=60):
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(stack.url + path, method=method, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def upload(stack, token, data, name="file.bin", ctype="application/octet-stream"):
    s, b, _ = http(stack, "POST", f"/_matrix/media/v3/upload?filename={name}", data, token, ctype)
    return s, (json.loads(b) if b.startswith(b"{") else b)


def media_id(mxc):
    return mxc[len("mxc://"):].split("/", 1)


def s3(stack):
    return boto3.client("s3", endpoint_url=stack.status["s3_endpoint"], region_name="us-east-1",
                        aws_access_key_id=stack.secret("s3_access_key"),
                        aws_secret_access_key=stack.secret("s3_secret_key"),
                        config=BotoConfig(s3={"addressing_style": "path"}))


def object_key(mid):
    return f"local_content/{mid[:2]}/{mid[2:4]}/{mid[4:]}"


def png(width=64, height=64):
    """A real PNG (RGB gradient), so Synapse can make thumbnails of it."""
    raw = b"".join(b"\x00" + bytes(c for x in range(width) for c in (x * 4 % 256, y * 4 % 256, 128))
                   for y in range(height))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def scanner_metric(stack, name):
    port = next(p["port"] for p in stack.refresh()["processes"] if p["name"] == "content-scanner")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name))


@pytest.fixture(scope="module")
def alice(stack):
    return stack.user("av-alice")


def test_eicar_upload_is_refused_and_never_stored(stack, alice):
    client = s3(stack)
    bucket = stack.status["s3_bucket"]
    before = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    s, body = upload(stack, alice["access_token"], b"harmless prefix " + EICAR)
    assert s == 400, (s, body)
    after = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert after == before, f"an object reached S3: {after - before}"
    assert "upload refused" in stack.log("content-scanner")
    # A clean upload right after is unaffected.
    s, body = upload(stack, alice["access_token"], os.urandom(4096))
    assert s == 200 and body["content_uri"].startswith("mxc://")


def test_clean_media_passes_byte_identical_through_the_scanner(stack, alice):
    payload = os.urandom(300 * 1024)
    s, body = upload(stack, alice["access_token"], payload)
    assert s == 200
    server, mid = media_id(body["content_uri"])
    scans = scanner_metric(stack, "mxstack_scanner_verdicts_total")
    s, got, headers = http(stack, "GET", f"/_matrix/client/v1/media/download/{server}/{mid}", token=alice["access_token"])
    assert s == 200 and got == payload
    assert scanner_metric(stack, "mxstack_scanner_verdicts_total") > scans
    backends = {l[0] for l in router_lines(stack) if l[5].startswith(f"/_matrix/client/v1/media/download/{server}/{mid}")}
    assert backends == {"content-scanner"}, backends


def test_object_replaced_in_s3_is_refused_on_download(stack, alice):
    payload = os.urandom(8192)
    s, body = upload(stack, alice["access_token"], payload)
    assert s == 200
    server, mid = media_id(body["content_uri"])
    path = f"/_matrix/client/v1/media/download/{server}/{mid}"
    assert http(stack, "GET", path, token=alice["access_token"])[0] == 200  # scanned clean, cached
    # Bypass every upload check: write malware straight into the bucket, and drop the media
    # worker's local copy so Synapse serves what S3 holds.
    # Same length as the original: Synapse serves the length its database recorded.
    tampered = payload[:100] + EICAR + payload[100 + len(EICAR):]
    assert len(tampered) == len(payload)
    s3(stack).put_object(Bucket=stack.status["s3_bucket"], Key=object_key(mid), Body=tampered)
    local = stack.state / "synapse" / "data" / "media" / object_key(mid)
    local.unlink()
    s, got, _ = http(stack, "GET", path, token=alice["access_token"])
    assert s == 403, (s, got[:200])
    assert json.loads(got)["reason"] == "MCS_MEDIA_NOT_CLEAN"


def test_thumbnails_are_scanned(stack, alice):
    s, body = upload(stack, alice["access_token"], png(), name="pic.png", ctype="image/png")
    assert s == 200
    server, mid = media_id(body["content_uri"])
    scans = scanner_metric(stack, "mxstack_scanner_verdicts_total")
    s, got, headers = http(stack, "GET", f"/_matrix/client/v1/media/thumbnail/{server}/{mid}?width=32&height=32&method=scale",
                           token=alice["access_token"])
    assert s == 200, got[:200]
    assert headers.get("Content-Type", "").startswith("image/")
    assert scanner_metric(stack, "mxstack_scanner_verdicts_total") > scans
    backends = {l[0] for l in router_lines(stack) if "/media/thumbnail/" in l[5] and mid in l[5]}
    assert backends == {"content-scanner"}, backends


def test_no_or_bad_token_never_gets_cached_bytes(stack, alice):
    payload = os.urandom(2048)
    s, body = upload(stack, alice["access_token"], payload)
    server, mid = media_id(body["content_uri"])
    for path in (f"/_matrix/client/v1/media/download/{server}/{mid}",
                 f"/_matrix/media_proxy/unstable/download/{server}/{mid}"):
        s, got, _ = http(stack, "GET", path, token=alice["access_token"])
        assert (s, got) == (200, payload), path  # now the verdict is cached
        for token in (None, "not-a-token"):
            s, got, _ = http(stack, "GET", path, token=token)
            assert s in (401, 404), (path, token, s)
            assert payload not in got


def test_encrypted_attachments_scan_encrypted_and_download_encrypted(stack, alice):
    token = alice["access_token"]
    results = {}
    for label, plain in (("clean", os.urandom(50_000)), ("infected", b"data " + EICAR + b" more")):
        cipher, keys = encrypt_attachment(plain)
        # The ciphertext itself looks random: the upload scan passes it.
        s, body = upload(stack, token, cipher)
        assert s == 200, (label, body)
        meta = {"file": {**keys, "url": body["content_uri"]}}
        s, scan, _ = http(stack, "POST", "/_matrix/media_proxy/unstable/scan_encrypted", meta, token)
        assert s == 200, scan
        s2, dl, _ = http(stack, "POST", "/_matrix/media_proxy/unstable/download_encrypted", meta, token)
        results[label] = (json.loads(scan)["clean"], s2, dl == cipher)
        # The same request with the metadata encrypted to the scanner's public key.
        s, pk, _ = http(stack, "GET", "/_matrix/media_proxy/unstable/public_key")
        assert s == 200
        msg = vodozemac.PkEncryption.from_key(
            vodozemac.Curve25519PublicKey.from_base64(json.loads(pk)["public_key"])).encrypt(json.dumps(meta).encode())
        unpadded = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
        enc = {"encrypted_body": {"ciphertext": unpadded(msg.ciphertext), "mac": unpadded(msg.mac),
                                  "ephemeral": unpadded(msg.ephemeral_key)}}
        s, scan2, _ = http(stack, "POST", "/_matrix/media_proxy/unstable/scan_encrypted", enc, token)
        assert s == 200 and json.loads(scan2)["clean"] == json.loads(scan)["clean"], scan2
    assert results["clean"] == (True, 200, True)
    assert results["infected"][:2] == (False, 403)
    # Metadata that does not match the file is refused as undecryptable, not scanned as clean.
    cipher, keys = encrypt_attachment(b"x" * 1000)
    s, body = upload(stack, token, cipher)
    keys["hashes"]["sha256"] = base64.b64encode(b"\0" * 32).decode().rstrip("=")
    s, out, _ = http(stack, "POST", "/_matrix/media_proxy/unstable/scan_encrypted",
                     {"file": {**keys, "url": body["content_uri"]}}, token)
    assert s == 400 and json.loads(out)["reason"] == "MCS_MEDIA_FAILED_TO_DECRYPT"


def test_clamd_stopped_gives_scan_error_not_infected_and_recovers(stack, alice):
    token = alice["access_token"]
    payload = os.urandom(5000)
    s, body = upload(stack, token, payload)
    server, mid = media_id(body["content_uri"])
    path = f"/_matrix/client/v1/media/download/{server}/{mid}"
    pid, _, _ = stack.pid("clamd")
    os.kill(pid, signal.SIGSTOP)
    try:
        s, got, headers = http(stack, "GET", path, token=token, timeout=120)
        assert s == 503, (s, got[:200])
        assert json.loads(got)["reason"] == "MCS_SCAN_UNAVAILABLE"
        assert "Retry-After" in headers
        # Uploads fail closed too: nothing unscanned is stored.
        s, out = upload(stack, token, os.urandom(1000))
        assert s == 503, (s, out)
        assert scanner_metric(stack, "mxstack_scanner_clamd_errors_total") >= 2
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.time() + 30
    while True:
        s, got, _ = http(stack, "GET", path, token=token)
        if s == 200 or time.time() > deadline:
            break
        time.sleep(1)
    assert (s, got) == (200, payload)
