"""Issue 16: mxstack used as its README's install section says, away from the repository.

The binary is installed with `cargo install --path crates/cli` (into a root of the test's own, so a
developer's ~/.cargo/bin is left alone), the runtime with `mxstack setup` (its default home,
/opt/mxstack as root; idempotent), and then a site in a directory of its own goes
init -> up -> user add -> a logged-in request through the router -> down, with no MXSTACK_VENV and
nothing of the checkout in reach. A second stack on the ports of the running shared stack fails at
once, names the port, and leaves the shared stack alone.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, run

INSTALL_PORT = "19500"


@pytest.fixture
def reachable_tmp():
    """A directory PostgreSQL (running as postgres) can reach: pytest's tmp_path sits under a
    0700 directory, which `up` rightly refuses."""
    d = Path(tempfile.mkdtemp(prefix="mxstack-install-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def installed_env(tmp: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("MXSTACK_VENV", "MXSTACK_HOME")}
    env["PATH"] = f"{tmp / 'root' / 'bin'}:{env['PATH']}"
    return env


def sh(args, env, cwd, timeout=900, check=True):
    r = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def test_installed_binary_runs_a_site_outside_the_repository(reachable_tmp):
    tmp_path = reachable_tmp
    env = installed_env(tmp_path)
    cargo = os.environ.get("CARGO", "cargo")
    sh([cargo, "install", "--path", str(ROOT / "crates/cli"), "--debug", "--locked",
        "--root", str(tmp_path / "root")], env, ROOT)
    mx = str(tmp_path / "root" / "bin" / "mxstack")
    setup = json.loads(sh([mx, "setup", "--json"], env, tmp_path).stdout)
    assert setup["ok"] is True, setup
    assert Path(setup["venv"]).is_relative_to(setup["home"])
    doctor = json.loads(sh([mx, "doctor", "--json"], env, tmp_path).stdout)
    venv = next(c for c in doctor["checks"] if c["what"] == "venv")
    assert venv["found"].endswith("(mxstack setup)"), venv

    site = tmp_path / "site"
    sh([mx, "init", "--domain", "installed.test", "--scale", "100", "--features", "", "--dir", str(site)], env, tmp_path)
    cfg = str(site / "mxstack.yaml")
    try:
        up = json.loads(sh([mx, "up", "--config", cfg, "--base-port", INSTALL_PORT, "--json"], env, site).stdout)
        assert up["ready"] is True
        user = json.loads(sh([mx, "user", "add", "--config", cfg, "alice", "--json"], env, site).stdout)
        req = urllib.request.Request(up["client_url"] + "/_matrix/client/v3/account/whoami",
                                     headers={"Authorization": f"Bearer {user['access_token']}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert json.loads(r.read())["user_id"] == "@alice:installed.test"
        # Synapse runs from the runtime's home, not from the checkout.
        status = json.loads(sh([mx, "status", "--config", cfg, "--json"], env, site).stdout)
        synapse = next(p for p in status["processes"] if p["name"] == "synapse-main")
        cmdline = Path(f"/proc/{synapse['pid']}/cmdline").read_bytes().decode()
        assert cmdline.startswith(str(Path(setup["venv"]) / "bin")), cmdline
    finally:
        sh([mx, "down", "--config", cfg, "--purge"], env, site, timeout=300, check=False)
    assert sh([mx, "status", "--config", cfg], env, site, check=False).returncode == 3


def test_second_stack_on_the_ports_of_a_running_one_fails_at_once(stack, reachable_tmp):
    tmp_path = reachable_tmp
    run("init", "--domain", "other.test", "--scale", "100", "--features", "", "--dir", str(tmp_path))
    port = stack.url.rsplit(":", 1)[1]
    t0 = time.monotonic()
    r = run("up", "--config", str(tmp_path / "mxstack.yaml"), "--base-port", port, "--json", check=False)
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert took < 5, took
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert f"port {port} (router) is already in use by pid" in lines[0], lines[0]
    assert "--base-port" in lines[0]
    assert json.loads(r.stdout) == {"ready": False, "error": lines[0][len("error: "):]}
    assert not (tmp_path / ".mxstack-state").exists()
    # The running stack did not notice.
    assert stack.refresh()["phase"] == "ready"
    assert all(p["state"] in ("ready", "done") for p in stack.refresh()["processes"])
