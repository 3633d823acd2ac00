"""Large valid requests: server memory and health-check latency while 62 MiB JSON requests are parsed.

The iris LogisticRegression bundle is served by one `python -m mlops_server` process. The
script sends one V2 JSON request of about 62 MiB (rows of 4 FP64 numbers), then 4 of them at
once, and meanwhile polls `/v2/health/ready` on its own connection. It reports, per phase:

- the server's peak RSS above its idle RSS (VmHWM from /proc after resetting it through
  /proc/PID/clear_refs), in MiB and as a multiple of the body size;
- the health checks' latency (median, p99, max) while the big requests ran;
- the big requests' status codes and wall time.

    python benchmarks/serving/bench_big_requests.py [--mib 62] [--concurrent 4] [--code DIR]

``--code DIR`` serves with the mlops_server package found in DIR (for example a `git
archive` of an older commit's plugins/mlops-server) to measure "before" on the same
machine in the same run; the default is the installed package. ``--max-inflight`` is
passed to the server when given (the 4-at-once phase is then partly answered 503).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_value(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(key)


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def make_bundle(folder: Path) -> Path:
    from mlops_core.bundle import save_bundle
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    save_bundle(LogisticRegression(max_iter=1000).fit(X, y), folder / "iris", example=X[:3])
    return folder / "iris"


def make_body(mib: float) -> bytes:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = int(mib * (1 << 20) / (4 * 20))  # about 20 bytes per number as JSON
    data = (rng.random((rows, 4)) * 8).tolist()
    return json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [rows, 4],
                                   "data": data}]}).encode()


def post(url: str, body: bytes, out: list, i: int) -> None:
    start = time.perf_counter()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            r.read()
            out[i] = (r.status, time.perf_counter() - start)
    except urllib.error.HTTPError as exc:
        out[i] = (exc.code, time.perf_counter() - start)


def health_poller(base: str, stop: threading.Event, samples: list) -> None:
    import http.client

    host, port = base.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    while not stop.is_set():
        start = time.perf_counter()
        conn.request("GET", "/v2/health/ready")
        conn.getresponse().read()
        samples.append(time.perf_counter() - start)
        time.sleep(0.01)
    conn.close()


def phase(pid: int, base: str, body: bytes, n: int) -> dict:
    url = base + "/v2/models/iris/infer"
    idle = status_value(pid, "VmRSS")
    reset_peak(pid)
    samples: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=health_poller, args=(base, stop, samples))
    poller.start()
    results: list = [None] * n
    threads = [threading.Thread(target=post, args=(url, body, results, i)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    stop.set()
    poller.join()
    peak = status_value(pid, "VmHWM")
    samples.sort()
    return {
        "requests": n, "body_mib": round(len(body) / 2**20, 1), "codes": [r[0] for r in results],
        "wall_s": round(wall, 2), "idle_rss_mib": round(idle / 2**20), "peak_rss_mib": round(peak / 2**20),
        "peak_above_idle_mib": round((peak - idle) / 2**20),
        "peak_above_idle_x_body": round((peak - idle) / len(body), 2),
        "health_checks": len(samples),
        "health_median_ms": round(statistics.median(samples) * 1000, 1) if samples else None,
        "health_p99_ms": round(samples[int(len(samples) * 0.99) - 1] * 1000, 1) if samples else None,
        "health_max_ms": round(samples[-1] * 1000, 1) if samples else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=float, default=62)
    ap.add_argument("--concurrent", type=int, default=4)
    ap.add_argument("--code", default=None, help="folder holding the mlops_server package to measure")
    ap.add_argument("--max-inflight", type=int, default=None, help="--max-inflight-body-bytes for the server")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(Path(tmp))
        body = make_body(args.mib)
        port = free_port()
        env = dict(os.environ)
        if args.code:
            env["PYTHONPATH"] = os.pathsep.join([args.code, env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "mlops_server", "--bundle", str(bundle), "--port", str(port),
               "--max-body-bytes", str(len(body) + 1024), "--log-level", "warning"]
        if args.max_inflight:
            cmd += ["--max-inflight-body-bytes", str(args.max_inflight)]
        proc = subprocess.Popen(cmd, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(base + "/v2/health/ready", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the server did not become ready")
                time.sleep(0.1)
            report = {"code": args.code or "installed mlops_server",
                      "one": phase(proc.pid, base, body, 1),
                      f"{args.concurrent}_at_once": phase(proc.pid, base, body, args.concurrent)}
        finally:
            proc.terminate()
            proc.wait(30)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
