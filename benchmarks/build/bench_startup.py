"""Container start -> model ready, with and without build-time bytecode (issue 14.7).

    .venv/bin/python benchmarks/build/bench_startup.py [--rounds 3]

Builds the same scikit-learn model (LogisticRegression on iris) twice with the ``oci``
builder on the local debootstrap base (shared base cache): once with
``compile_bytecode = false`` (the image as before: no .pyc, PYTHONDONTWRITEBYTECODE) and
once with the default (unchecked-hash .pyc for the deps and runtime layers). Each image
is pulled into a private podman storage straight from its OCI layout, then started
``--rounds`` times (host network, a free port); the time is from just before
``podman run -d`` to the first 200 of ``/v2/models/iris/versions/1/ready``, polled
every 20 ms. Medians are printed with the
ratio. The machine is 2 shared cores: the ratio is the point. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "mlops-oci" / "tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mlops_core.api as api
    from mlops_oci.localbase import base_reference
    from oci_testkit import make_stack

    work = Path(tempfile.mkdtemp(prefix="mlops-pm-", dir="/tmp"))
    flags = ["--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs",
             "--cgroup-manager", "cgroupfs", "--runtime", "runc"]
    def podman(*a: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["podman", *flags, *a], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(a)} failed: {done.stderr.strip()[-1500:]}")
        return done

    try:
        x, y = load_iris(return_X_y=True)
        model = LogisticRegression(max_iter=500).fit(x, y)
        base = base_reference()
        results: dict[str, list[float]] = {}
        for label, compile_bytecode in (("without .pyc (before)", False), ("with .pyc (after)", True)):
            stack = make_stack(work / ("home-pyc" if compile_bytecode else "home-nopyc"), base=base,
                               compile_bytecode=compile_bytecode)
            version = api.register("iris", model, example=x[:3], stack=stack)
            t = time.perf_counter()
            image = api.build(version.uri, stack=stack)
            build_s = time.perf_counter() - t
            tag = f"localhost/bench/iris:{'pyc' if compile_bytecode else 'nopyc'}"
            image_id = podman("pull", "-q", f"oci:{image.layout}:v1").stdout.split()[-1]
            podman("tag", image_id, tag)
            times = []
            for _ in range(args.rounds):
                port = free_port()
                start = time.perf_counter()
                cid = podman("run", "-d", "--network", "host", "--ulimit", "nofile=1024:1024",
                             "--ulimit", "nproc=1024:1024", tag,
                             "--port", str(port)).stdout.strip()
                url = f"http://127.0.0.1:{port}/v2/models/iris/versions/1/ready"
                while True:
                    try:
                        with urllib.request.urlopen(url, timeout=1) as resp:
                            if resp.status == 200:
                                break
                    except OSError:
                        pass
                    if time.perf_counter() - start > 300:
                        raise RuntimeError(podman("logs", cid, check=False).stdout[-2000:])
                    time.sleep(0.02)
                times.append(time.perf_counter() - start)
                podman("rm", "-f", cid, check=False)
            results[label] = times
            print(f"{label:24s} build {build_s:6.1f} s   start->ready " +
                  ", ".join(f"{t:.2f}" for t in times) + f" s   median {statistics.median(times):.2f} s", flush=True)
        before, after = (statistics.median(v) for v in results.values())
        print(f"\nstart -> ready: {before:.2f} s -> {after:.2f} s  ({before / after:.2f}x faster)")
    finally:
        podman("rm", "--all", "--force", check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
