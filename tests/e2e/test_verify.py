"""`mxstack verify` against real stacks.

- The suite's shared stack (features antivirus, monitoring, li, calls): every applicable check
  passes, the rest are SKIP with their reason, and the throwaway user is gone afterwards.
- TLS for real: a CA and server certificates made here (Python `cryptography`, i.e. OpenSSL), and
  an HAProxy started by this test terminating TLS in front of the shared stack's router: a good
  certificate passes; an expired one and one for another name fail with a message that says so.
- A second, small stack of this module's own (base port 22000; features antivirus, li,
  monitoring), broken three ways. The supervisor restarts a process that exits (1 s backoff), so
  "stopped" is SIGSTOP to the process's group (each process runs in a group of its own) and to
  its direct children (PostgreSQL's backends call setsid(), so they leave the postmaster's group:
  stopping the group alone left li-sync's connections answering), and SIGCONT restores it: (a) a Synapse
  worker, (b) clamd, (c) the LI replica's PostgreSQL. Each time verify exits 1 with the check
  that names the stopped component; afterwards it passes again.
"""
import datetime
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import Stack, run

SMALL_PORT = 22000
TLS_PORT = 22590  # and the next two: expired, wrong name

# Checks that cannot apply to a local stack (no edge: no .well-known, TLS or LI gate) or to the
# suite's features (federation off).
LOCAL_SKIPS = {"MX-VERIFY-002", "MX-VERIFY-003", "MX-VERIFY-004", "MX-VERIFY-005", "MX-VERIFY-012"}


def verify(*args, expect=None, timeout=600):
    r = run("verify", *args, "--json", check=False, timeout=timeout)
    assert r.returncode in (0, 1), f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    report = json.loads(r.stdout)
    if expect is not None:
        assert r.returncode == expect, f"exit {r.returncode}, expected {expect}:\n{r.stdout}"
    return r, {x["id"]: x for x in report["results"]}


def test_verify_passes_every_applicable_check_against_the_stack(stack):
    r, results = verify("--config", stack.config, expect=0)
    for rid, x in results.items():
        want = "SKIP" if rid in LOCAL_SKIPS else "PASS"
        assert x["status"] == want, f"{rid} {x['title']}: {x['status']}: {x['detail']}"
        assert x["detail"], rid
    assert "plain HTTP" in results["MX-VERIFY-004"]["detail"]
    # No secret reaches the output.
    for secret in (stack.secret("registration_shared_secret"),):
        assert secret not in r.stdout + r.stderr
    # The throwaway user was deactivated and erased.
    user = results["MX-VERIFY-006"]["detail"].split()[1]
    assert user.startswith("@mxstack-verify-"), user
    u = stack.admin_request("GET", f"/_synapse/admin/v2/users/{user}")
    assert u["deactivated"] is True and u["erased"] is True, u
    # Its room is gone.
    room = results["MX-VERIFY-007"]["detail"].split()[1].rstrip(":")
    rooms = stack.admin_request("GET", "/_synapse/admin/v1/rooms?limit=500")
    assert room not in [x["room_id"] for x in rooms["rooms"]]


def make_pki(d: Path, host: str):
    """A CA, and three server certificates signed by it: good, expired, for another name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mxstack verify test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - day).not_valid_after(now + 30 * day)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(pem(ca))
    for name, dns, start, end in [("good", host, now - day, now + 90 * day),
                                  ("expired", host, now - 60 * day, now - 2 * day),
                                  ("wrong-name", "other.example.test", now - day, now + 90 * day)]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)])).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        (d / f"{name}.pem").write_bytes(pem(cert) + key_pem)


@pytest.fixture(scope="module")
def tls_front(stack):
    """HAProxy terminating TLS on three ports (good, expired, wrong-name certificate) in front of
    the stack's router. Stopped by its PID."""
    d = Path(tempfile.mkdtemp(prefix="mxstack-verify-tls-", dir="/var/tmp"))
    make_pki(d, "matrix.e2e.mxstack.test")
    router = stack.url.rsplit(":", 1)[1]
    fronts = "".join(
        f"frontend f{i}\n    bind 127.0.0.1:{TLS_PORT + i} ssl crt {d / name}.pem\n    default_backend router\n"
        for i, name in enumerate(["good", "expired", "wrong-name"]))
    (d / "haproxy.cfg").write_text(
        "global\n    maxconn 100\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n"
        f"    timeout server 60s\n{fronts}backend router\n    server r 127.0.0.1:{router}\n")
    p = subprocess.Popen(["haproxy", "-db", "-f", str(d / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                         stderr=open(d / "haproxy.log", "w"))
    time.sleep(1)
    assert p.poll() is None, (d / "haproxy.log").read_text()
    try:
        yield d
    finally:
        p.terminate()
        p.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


def verify_tls(stack, d, port):
    return verify("--config", stack.config, "--url", f"https://matrix.e2e.mxstack.test:{port}",
                  "--ca", str(d / "ca.pem"), "--connect-to", "127.0.0.1")


def test_verify_passes_tls_with_a_trusted_certificate_and_talks_through_it(stack, tls_front):
    _, results = verify_tls(stack, tls_front, TLS_PORT)
    tls = results["MX-VERIFY-004"]
    assert tls["status"] == "PASS", tls
    assert "matrix.e2e.mxstack.test" in tls["detail"] and "days left" in tls["detail"]
    # The client API, the admin API and the throwaway user's checks went through the terminator.
    for rid in ("MX-VERIFY-001", "MX-VERIFY-006", "MX-VERIFY-007", "MX-VERIFY-008", "MX-VERIFY-015"):
        assert results[rid]["status"] == "PASS", results[rid]
    # Without the CA, the same certificate is not trusted.
    _, results = verify("--config", stack.config, "--url", f"https://matrix.e2e.mxstack.test:{TLS_PORT}",
                        "--connect-to", "127.0.0.1", expect=1)
    assert results["MX-VERIFY-004"]["status"] == "FAIL"
    assert "trusted CA" in results["MX-VERIFY-004"]["detail"]


def test_verify_fails_an_expired_certificate(stack, tls_front):
    _, results = verify_tls(stack, tls_front, TLS_PORT + 1)
    tls = results["MX-VERIFY-004"]
    assert tls["status"] == "FAIL" and "expired" in tls["detail"], tls
    assert tls["fix"]


def test_verify_fails_a_certificate_for_another_name(stack, tls_front):
    _, results = verify_tls(stack, tls_front, TLS_PORT + 2)
    tls = results["MX-VERIFY-004"]
    assert tls["status"] == "FAIL", tls
    assert "not valid for matrix.e2e.mxstack.test" in tls["detail"] and "other.example.test" in tls["detail"], tls


@pytest.fixture(scope="module")
def small():
    """A stack of this module's own, to break (the suite's shared stack is never touched)."""
    base = Path(tempfile.mkdtemp(prefix="mxstack-verify-small-", dir="/var/tmp"))
    base.chmod(0o755)
    run("init", "--domain", "verify.mxstack.test", "--scale", "1k", "--features", "antivirus,li,monitoring",
        "--dir", str(base))
    config = str(base / "mxstack.yaml")
    try:
        up = run("up", "--config", config, "--base-port", str(SMALL_PORT), "--replicas", "1", "--json", timeout=900)
        assert json.loads(up.stdout)["ready"] is True
        yield Stack(base)
    finally:
        run("down", "--config", config, "--purge", check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def children(pid):
    """Direct children of pid (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


class Stopped:
    """SIGSTOP for the block, SIGCONT after: the process's group, and its direct children (each
    PostgreSQL backend calls setsid(), so it leaves its postmaster's group)."""

    def __init__(self, stack, name):
        self.pid, _, state = stack.pid(name)
        assert state == "ready" and self.pid, (name, state)

    def signal(self, sig):
        os.killpg(self.pid, sig)
        for c in children(self.pid):
            try:
                os.kill(c, sig)
            except ProcessLookupError:
                pass

    def __enter__(self):
        self.signal(signal.SIGSTOP)

    def __exit__(self, *exc):
        self.signal(signal.SIGCONT)


def test_small_stack_passes_before_it_is_broken(small):
    _, results = verify("--config", small.config, expect=0)
    assert results["MX-VERIFY-013"]["status"] == "PASS"
    assert results["MX-VERIFY-010"]["status"] == "SKIP"  # calls off


def test_a_stopped_worker_fails_the_synapse_metrics_check_naming_it(small):
    with Stopped(small, "synapse-generic-0"):
        time.sleep(8)  # the router's health checks take it out of its pool
        _, results = verify("--config", small.config, expect=1)
    m = results["MX-VERIFY-013"]
    assert m["status"] == "FAIL" and "synapse-generic-0" in m["detail"], m
    assert "synapse-main" not in m["detail"], m
    assert m["fix"]


def test_a_stopped_clamd_fails_the_antivirus_check_naming_clamd(small):
    with Stopped(small, "clamd"):
        _, results = verify("--config", small.config, expect=1)
    av = results["MX-VERIFY-009"]
    assert av["status"] == "FAIL" and "clamd" in av["detail"], av


def test_a_stopped_li_replica_fails_the_lag_check(small):
    with Stopped(small, "postgres-li"):
        time.sleep(35)  # li-sync's status turns stale (30 s)
        _, results = verify("--config", small.config, expect=1)
    lag = results["MX-VERIFY-011"]
    assert lag["status"] == "FAIL" and "LI replica" in lag["detail"], lag


def test_the_small_stack_passes_again_once_restored(small):
    deadline = time.time() + 120
    while True:
        r, results = verify("--config", small.config)
        if r.returncode == 0 or time.time() > deadline:
            break
        time.sleep(5)
    assert r.returncode == 0, {k: v for k, v in results.items() if v["status"] == "FAIL"}
