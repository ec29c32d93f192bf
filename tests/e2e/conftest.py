"""End-to-end fixtures: a real local stack started with `mxstack up`, real users, a real client.

Everything goes through the HAProxy router, exactly as a client would reach the stack.
"""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# synapse.redaction_retention_period of the test stack: short, so main censors during the run.
REDACTION_RETENTION = "30s"
# The one address the test stack's coturn may relay to (calls.allowed_peer_ips).
TURN_ALLOWED_PEER = "127.0.0.1"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "last(start=None): run after every other test; `start` names a session fixture "
                   "that is set up before the first test (so what it starts overlaps the others)")


def pytest_collection_modifyitems(config, items):
    # Stable: the order of the other tests, and of the `last` ones among themselves, is kept.
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.fixture(scope="session", autouse=True)
def start_early(request):
    """Sets up the `start` fixture of every selected `last` test before the first test runs."""
    for item in request.session.items:
        m = item.get_closest_marker("last")
        if m is not None and m.kwargs.get("start"):
            request.getfixturevalue(m.kwargs["start"])


def mxstack_bin() -> str:
    b = os.environ.get("MXSTACK_BIN")
    if b:
        return b
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    for profile in ("release", "debug"):
        p = Path(target) / profile / "mxstack"
        if p.exists():
            return str(p)
    raise RuntimeError("mxstack binary not found: build it (cargo build -p mxstack) or set MXSTACK_BIN")


def run(*args, check=True, timeout=600):
    r = subprocess.run([mxstack_bin(), *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"mxstack {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


class Stack:
    def __init__(self, directory: Path):
        self.dir = directory
        self.config = str(directory / "mxstack.yaml")
        self.status = self.refresh()
        self.url = self.status["client_url"]
        self.state = Path(self.status["state_dir"])
        self._users = 0
        self._run = os.urandom(3).hex()
        self._admin = None

    def refresh(self):
        return json.loads(run("status", "--config", self.config, "--json").stdout)

    def user(self, name=None, admin=False, ratelimited=False):
        self._users += 1
        # Unique per run, so a reused stack never refuses a name.
        name = f"{name or 'user'}-{self._run}-{self._users}"
        u = json.loads(run("user", "add", "--config", self.config, name, *(["--admin"] if admin else []), "--json").stdout)
        if not ratelimited:
            # Test users send faster than Synapse's default message rate limit allows a person to.
            self.admin_request("POST", f"/_synapse/admin/v1/users/{u['user_id']}/override_ratelimit",
                               {"messages_per_second": 0, "burst_count": 0})
        return u

    def admin_request(self, method, path, body=None):
        import urllib.request
        if self._admin is None:
            self._admin = json.loads(run("user", "add", "--config", self.config, f"admin-{self._run}", "--admin", "--json").stdout)
        req = urllib.request.Request(self.url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self._admin['access_token']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    def log(self, process):
        return (self.state / "logs" / f"{process}.log").read_text(errors="replace")

    def pid(self, process):
        for p in self.refresh()["processes"]:
            if p["name"] == process:
                return p["pid"], p["restarts"], p["state"]
        raise KeyError(process)

    def psql(self, db, sql):
        """`sql` as PostgreSQL's superuser over the stack's socket; the unaligned output."""
        port = next(p["port"] for p in self.refresh()["processes"] if p["name"] == "postgres")
        r = subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c",
                            f"psql -X -tA -h '{self.state / 'run'}' -p {port} -U postgres -d {db}"],
                           input=sql, capture_output=True, text=True, timeout=60, cwd="/")
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def secret(self, key):
        for line in (self.dir / "secrets.yaml").read_text().splitlines():
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip().strip('"')
        raise KeyError(key)


@pytest.fixture(scope="session")
def censor_material(stack, tmp_path_factory):
    """Messages, an edit and redactions, made before the first test: Synapse's censor loop
    (test_li.py) then runs while the other tests do."""
    from test_li import make_censor_material  # loaded by pytest before any fixture runs
    return make_censor_material(stack, tmp_path_factory.mktemp("censor"))


@pytest.fixture(scope="session")
def console_material(stack, tmp_path_factory):
    """alice and bob's encrypted conversation with an edit and a redaction, her key backup and
    escrowed recovery key (e2ee_material.py), made before the first test so that Synapse's censor
    loop censors the redaction during the run (test_li_console.py's last test reads the original
    from the replica's history through the console)."""
    from e2ee_material import make_e2ee_material
    return make_e2ee_material(stack, tmp_path_factory.mktemp("nio"))


@pytest.fixture(scope="session")
def stack():
    reuse = os.environ.get("MXSTACK_E2E_REUSE")
    if reuse:
        # Development: run against a stack that is already up; leave it running.
        yield Stack(Path(reuse))
        return
    # PostgreSQL runs as the postgres user, so the state directory must be reachable by it.
    base = Path(tempfile.mkdtemp(prefix="mxstack-e2e-", dir=os.environ.get("MXSTACK_E2E_DIR", "/var/tmp")))
    base.chmod(0o755)
    run("init", "--domain", "e2e.mxstack.test", "--scale", "1k", "--features", "antivirus,monitoring,li,calls", "--dir", str(base))
    # Synapse censors redacted events older than this on its first censor run, 5 minutes after
    # the background worker starts (test_li.py waits for it; 7d, the default, would never do).
    config = base / "mxstack.yaml"
    c = yaml.safe_load(config.read_text())
    c.setdefault("synapse", {})["redaction_retention_period"] = REDACTION_RETENTION
    # test_calls.py: one loopback peer coturn may relay to, so that a refusal of another one
    # (127.0.0.2) is denied-peer-ip at work and not only coturn's own loopback block.
    c.setdefault("calls", {})["allowed_peer_ips"] = [TURN_ALLOWED_PEER]
    config.write_text(yaml.safe_dump(c, sort_keys=False))
    port = os.environ.get("MXSTACK_E2E_PORT", "19000")
    # Two processes per scalable worker group, so sticky routing has a choice to make.
    up = run("up", "--config", str(base / "mxstack.yaml"), "--base-port", port, "--replicas", "2", "--json", timeout=900)
    assert json.loads(up.stdout)["ready"] is True
    s = Stack(base)
    try:
        yield s
    finally:
        run("down", "--config", s.config, "--purge", check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)
