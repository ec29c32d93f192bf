#!/usr/bin/env python3
"""Issue 18: how long the run-proof takes to bring a rendered site's application layer up as
containers (to the JSON line that says ready) and to remove it, with warm images.

    python3 bench/run_proof.py --runs 3 [--mxstack BIN] [--run-proof BIN] [--subnet 10.89.95.0]

Writes bench/results/run_proof.json. Needs `mxstack images build` done (the lock in
/var/cache/mxstack/images) and the same runtime as the test command."""
import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mxstack", default="/var/cache/mxstack/target/debug/mxstack")
    ap.add_argument("--run-proof", default="/var/cache/mxstack/target/debug/mxstack-run-proof")
    ap.add_argument("--lock", default="/var/cache/mxstack/images/images.lock")
    ap.add_argument("--subnet", default="10.89.95.0")
    a = ap.parse_args()
    site = Path(tempfile.mkdtemp(prefix="mxstack-bench-proof-", dir="/var/tmp"))
    subprocess.run([a.mxstack, "init", "--domain", "bench.mxstack.test", "--scale", "100", "--features",
                    "antivirus,li", "--dir", str(site)], check=True, capture_output=True)
    c = yaml.safe_load((site / "mxstack.yaml").read_text())
    c.setdefault("antivirus", {})["signature_updates"] = False
    c.setdefault("li", {})["allowed_cidrs"] = ["198.51.100.0/24"]
    (site / "mxstack.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
    runs = []
    for i in range(a.runs):
        t0 = time.monotonic()
        p = subprocess.Popen([a.run_proof, "--config", str(site / "mxstack.yaml"), "--lock", a.lock,
                              "--work", str(site / "work"), "--subnet", a.subnet, "--prefix", "rpbench-"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = json.loads(p.stdout.readline())
        ready = time.monotonic() - t0
        t1 = time.monotonic()
        p.stdin.close()
        p.wait(timeout=600)
        down = time.monotonic() - t1
        runs.append({"ready": line["ready"], "pods": len(line.get("pods", {})), "ready_s": round(ready, 1),
                     "teardown_s": round(down, 1)})
        print(runs[-1], flush=True)
    out = {"what": "mxstack-run-proof: rendered 100-user antivirus+li site, application layer as podman containers",
           "runs": runs,
           "median_ready_s": statistics.median(r["ready_s"] for r in runs),
           "median_teardown_s": statistics.median(r["teardown_s"] for r in runs)}
    shutil.rmtree(site, ignore_errors=True)
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/run_proof.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
