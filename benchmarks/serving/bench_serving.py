"""Serving benchmark: mlops-server vs `mlflow models serve` vs MLServer, same model, same load generator.

One small scikit-learn model (LogisticRegression on iris, one row per request) is
served by each server in turn on a loopback port and driven by ONE load
generator, `wrk` (Debian package `wrk`), with keep-alive connections at
concurrency 1, 8 and 32 for a bounded time each. Our server and MLServer get
the same V2 JSON body; MLflow gets its `/invocations` body (dataframe_split).

    python benchmarks/serving/bench_serving.py [--duration 10] [--concurrency 1 8 32] [--rounds 1]

Peers run in their own virtualenv: interpreter from MLOPS_BENCH_PEER_PYTHON
(default /work/main/.venv-bench/bin/python), with `pip install -r
benchmarks/requirements.txt`. A missing peer is reported with what to
install, and our side is still measured. Results also go to
benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = os.environ.get("MLOPS_BENCH_PEER_PYTHON", str(ROOT / ".venv-bench" / "bin" / "python"))
ROW = [5.1, 3.5, 1.4, 0.2]
V2_BODY = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]})
MLFLOW_BODY = json.dumps({"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [ROW]}})

TRAIN = textwrap.dedent("""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def http_post(url: str, body: str) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body.encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def group_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


def group_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return total / 1024


class Server:
    """A server process started in its own session (so its workers stop with it)."""

    def __init__(self, label: str, cmd: list[str], ready_url: str, url: str, body: str, workdir: Path,
                 env: dict | None = None, check_url: str | None = None) -> None:
        self.label, self.cmd, self.ready_url, self.url, self.body = label, cmd, ready_url, url, body
        self.check_url = check_url
        self.log = workdir / f"{re.sub(r'[^a-z0-9]+', '-', label.lower())}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.startup_s = float("nan")
        self.rss_mb = float("nan")

    def start(self, timeout: float = 120) -> None:
        t0 = time.perf_counter()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True, cwd=self.log.parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; see {self.log}")
            if http_get(self.ready_url) == 200 and (self.check_url is None or http_get(self.check_url) == 200):
                status, text = http_post(self.url, self.body)
                if status == 200:
                    self.startup_s = time.perf_counter() - t0
                    self.answer = text
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} not ready after {timeout} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.rss_mb = group_rss_mb(self.proc.pid)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def wrk(url: str, body: str, concurrency: int, duration: float, workdir: Path) -> dict:
    script = workdir / "post.lua"
    script.write_text('wrk.method = "POST"\n'
                      f"wrk.body = {json.dumps(body)}\n"
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=duration + 60)
    text = out.stdout

    def latency(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": latency("50%"), "p99_ms": latency("99%"),
        "requests": int(total.group(1)) if total else 0,
        "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0),
    }


# ------------------------------------------------------------------- servers
def our_servers(workdir: Path) -> list[Server]:
    sys.path.insert(0, str(ROOT))
    from mlops_core.bundle import save_bundle

    ns: dict = {}
    exec(TRAIN, ns)
    bundle = workdir / "iris"
    if not bundle.exists():
        save_bundle(ns["model"], bundle, example=ns["X"][:2])
    out = []
    variants = [
        ("mlops-server", []),
        ("mlops-server batching", ["--max-batch-size", "32", "--max-batch-wait-ms", "1"]),
    ]
    for label, extra in variants:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "mlops_server", "--bundle", str(bundle), "--port", str(port),
               "--log-level", "warning", *extra]
        out.append(Server(label, cmd, url + "/v2/health/ready", url + "/v2/models/iris/infer", V2_BODY, workdir))
    return out


def peer_env() -> dict[str, str]:
    # Peers start helper commands (mlflow runs `uvicorn` through bash): their venv's bin comes first.
    return {"PATH": f"{Path(PEER_PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(Path(PEER_PYTHON).parent.parent)}


def peer_has(module: str) -> bool:
    if not Path(PEER_PYTHON).exists():
        return False
    return subprocess.run([PEER_PYTHON, "-c", f"import {module}"], capture_output=True).returncode == 0


def mlflow_server(workdir: Path) -> Server | None:
    if not peer_has("mlflow"):
        print(f"MLflow missing: {PEER_PYTHON} -m pip install -r benchmarks/requirements.txt "
              "(set MLOPS_BENCH_PEER_PYTHON to use another interpreter)")
        return None
    model_dir = workdir / "mlflow-iris"
    if not model_dir.exists():
        subprocess.run([PEER_PYTHON, "-c", TRAIN + textwrap.dedent(f"""
            import pandas as pd, mlflow.sklearn
            from mlflow.models import infer_signature
            df = pd.DataFrame(X, columns=list("abcd"))
            mlflow.sklearn.save_model(model, {str(model_dir)!r}, signature=infer_signature(df, model.predict(df)))
        """)], check=True, capture_output=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_bin = str(Path(PEER_PYTHON).with_name("mlflow"))
    cmd = [mlflow_bin, "models", "serve", "-m", str(model_dir), "-h", "127.0.0.1", "-p", str(port),
           "--env-manager", "local"]
    return Server("MLflow 3 models serve", cmd, url + "/ping", url + "/invocations", MLFLOW_BODY, workdir,
                  env=peer_env())


def mlserver_servers(workdir: Path) -> list[Server]:
    if not (peer_has("mlserver") and peer_has("mlserver_sklearn")):
        print(f"MLServer missing: {PEER_PYTHON} -m pip install 'mlserver==1.7.1' 'mlserver-sklearn==1.7.1' "
              "'uvloop<0.22' scikit-learn")
        return []
    out = []
    for label, extra in [("MLServer parallel_workers=0", {}),
                         ("MLServer batching 32/5ms", {"max_batch_size": 32, "max_batch_time": 0.005})]:
        root = workdir / re.sub(r"[^a-z0-9]+", "-", label.lower())
        model_dir = root / "iris"
        model_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([PEER_PYTHON, "-c", TRAIN + f"import joblib; joblib.dump(model, {str(model_dir / 'model.joblib')!r})"],
                       check=True, capture_output=True)
        (model_dir / "model-settings.json").write_text(json.dumps({
            "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib"}, **extra}))
        port = free_port()
        (root / "settings.json").write_text(json.dumps({
            "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1",
            "parallel_workers": 0, "debug": False}))
        url = f"http://127.0.0.1:{port}"
        cmd = [str(Path(PEER_PYTHON).with_name("mlserver")), "start", str(root)]
        out.append(Server(label, cmd, url + "/v2/health/ready", url + "/v2/models/iris/infer", V2_BODY, workdir,
                          check_url=url + "/v2/models/iris/ready", env=peer_env()))
    return out


# --------------------------------------------------------------------- main
def start_servers(servers: list[Server], width: int, tail: int = 6) -> list[Server]:
    """Start each server in turn (fair start-up times); the ones that came up. Failures print their log tail."""
    running = []
    for server in servers:
        try:
            server.start()
        except RuntimeError as exc:
            lines = server.log.read_text(errors="replace").strip().splitlines()[-tail:]
            print(f"{server.label}: {exc}\n    " + "\n    ".join(lines))
            server.stop()
            continue
        running.append(server)
        print(f"  {server.label:<{width}} ready in {server.startup_s:.2f} s", flush=True)
    return running


def measure(running: list[Server], concurrency: list[int], rounds: int, duration: float, workdir: Path,
            width: int) -> dict[str, dict]:
    """Warm up, then every point round-robin over the servers; per server the median round by req/s.

    Round-robin: every server sees the same share of whatever else the machine is doing.
    """
    for server in running:
        wrk(server.url, server.body, max(concurrency), min(3.0, duration), workdir)  # warm-up
    samples: dict[tuple[str, int], list[dict]] = {}
    for rnd in range(rounds):
        for c in concurrency:
            for server in running:
                assert server.proc is not None
                cpu0 = group_cpu_s(server.proc.pid)
                point = wrk(server.url, server.body, c, duration, workdir)
                cpu = group_cpu_s(server.proc.pid) - cpu0
                point["cpu_us_per_req"] = cpu / point["requests"] * 1e6 if point["requests"] else float("nan")
                samples.setdefault((server.label, c), []).append(point)
                print(f"  round {rnd + 1} {server.label:<{width}} c={c:<3} {point['rps']:>8.0f} req/s  "
                      f"p50 {point['p50_ms']:7.2f} ms  p99 {point['p99_ms']:7.2f} ms  "
                      f"server CPU {point['cpu_us_per_req']:6.0f} us/req  errors {point['errors']}", flush=True)
    results = {}
    for server in running:
        points = {}
        for c in concurrency:
            runs = sorted(samples[(server.label, c)], key=lambda r: r["rps"])
            points[c] = runs[len(runs) // 2]
        results[server.label] = {"startup_s": server.startup_s, "rss_mb": server.rss_mb, "points": points}
    return results


def print_results(results: dict[str, dict], concurrency: list[int], width: int) -> None:
    """The table; CPU us = server CPU time per request (all its processes), the figure least moved by other load."""
    print()
    header = f"{'server':<{width}} {'start s':>7} {'RSS MB':>7} " + " ".join(
        f"{'c=' + str(c) + ' req/s':>12} {'p50 ms':>7} {'p99 ms':>7} {'CPU us':>6}" for c in concurrency)
    print(header)
    print("-" * len(header))
    for label, r in results.items():
        cells = " ".join(f"{r['points'][c]['rps']:>12.0f} {r['points'][c]['p50_ms']:>7.2f} {r['points'][c]['p99_ms']:>7.2f}"
                         f" {r['points'][c]['cpu_us_per_req']:>6.0f}" for c in concurrency)
        print(f"{label:<{width}} {r['startup_s']:>7.2f} {r['rss_mb']:>7.0f} {cells}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per point (default 10)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every point (servers interleaved); the median round by req/s is kept")
    parser.add_argument("--only", nargs="*", default=None, help="labels (substring) of the servers to run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    servers = our_servers(workdir)
    peer = mlflow_server(workdir)
    if peer is not None:
        servers.append(peer)
    servers += mlserver_servers(workdir)
    if args.only:
        servers = [s for s in servers if any(o.lower() in s.label.lower() for o in args.only)]
    cpu = os.environ.get("OPENBLAS_CORETYPE")
    print(f"# serving benchmark: {os.cpu_count()} CPUs, wrk -t1, keep-alive, {args.duration:g} s per point, "
          f"{args.rounds} round(s); 1-row LogisticRegression(iris); OPENBLAS_CORETYPE={cpu}")
    running: list[Server] = []
    try:
        running = start_servers(servers, 30)
        results = measure(running, args.concurrency, args.rounds, args.duration, workdir, 30)
    finally:
        for server in running:
            server.stop()
    print_results(results, args.concurrency, 30)
    cs = args.concurrency
    ours = [k for k in results if k.startswith("mlops-server")]
    peers = [k for k in results if not k.startswith("mlops-server")]
    if ours and peers:
        print("\nratios (ours / peer): throughput x, p99 latency x (lower is better)")
        for o in ours:
            for p in peers:
                cells = "  ".join(
                    f"c={c}: {results[o]['points'][c]['rps'] / max(results[p]['points'][c]['rps'], 1e-9):5.2f}x rps, "
                    f"p99 {results[o]['points'][c]['p99_ms'] / max(results[p]['points'][c]['p99_ms'], 1e-9):4.2f}x"
                    for c in cs)
                print(f"  {o} vs {p}: {cells}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps(results, indent=2, default=str))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
