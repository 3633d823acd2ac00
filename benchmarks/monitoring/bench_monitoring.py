"""Monitoring overhead: serving throughput with no monitor vs all monitors on, side by side in one run.

One small scikit-learn model (LogisticRegression, 4 features) is served by
``python -m mlops_server`` in three configurations at once, each in its own process:

* ``none``: no monitor listens (the server then builds no prediction events at all);
* ``no-op listener``: one plugin that listens and does nothing: the server's own
  cost of building and delivering events, with no monitor work at all;
* ``all``: the ``prometheus``, ``drift`` and ``log`` monitors with their defaults
  (log samples 10 % of calls), plus the drift profile of the version;
* ``all, log 100%``: the same with every call logged (replay fidelity).

The monitored servers build the stack's monitors themselves (MLOPS_CONFIG).
``wrk`` (Debian package ``wrk``) drives each in turn with keep-alive connections
at fixed concurrency; rounds are interleaved (none, all, all-100 %, none, ...)
so drift in machine load hits every configuration alike. Medians over rounds.

    python benchmarks/monitoring/bench_monitoring.py [--duration 10] [--rounds 3] [--concurrency 8] [--rows 1]

Results also go to benchmarks/results/monitoring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("MLOPS_BENCH_PYTHON", sys.executable)

CONFIGS = {
    "none": None,
    "no-op listener": "",
    "all": '[[monitors]]\nbackend = "prometheus"\n[[monitors]]\nbackend = "drift"\n[[monitors]]\nbackend = "log"\n',
    "all, log 100%": ('[[monitors]]\nbackend = "prometheus"\n[[monitors]]\nbackend = "drift"\n'
                      '[[monitors]]\nbackend = "log"\nsample_rate = 1.0\n'),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def build_model(work: Path) -> tuple[Path, Path]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from mlops_core.bundle import save_bundle

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 4)) * [0.8, 0.4, 1.7, 0.7] + [5.8, 3.0, 3.7, 1.2]
    y = (x[:, 2] > 3.7).astype(int)
    bundle = save_bundle(LogisticRegression().fit(x, y), work / "bundle", example=x[:5])
    np.save(work / "train.npy", x)
    return bundle.path, work / "train.npy"


class Server:
    def __init__(self, label: str, bundle: Path, work: Path, stack: str | None, train: Path) -> None:
        self.label = label
        self.port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("MLOPS_PLUGIN_MODULES", None)
        if stack == "":
            env["MLOPS_CONFIG"] = str(work / "empty.toml")
            (work / "empty.toml").write_text(f'home = "{work / "home-none"}"\n')
            env["MLOPS_PLUGIN_MODULES"] = "noop_listener"
            env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
        elif stack is not None:
            folder = work / re.sub(r"\W+", "-", label)
            folder.mkdir()
            (folder / "mlops.toml").write_text(f'home = "{folder / "home"}"\n[storage]\nbackend = "fsspec"\n'
                                               f'url = "{folder / "store"}"\n' + stack)
            env["MLOPS_CONFIG"] = str(folder / "mlops.toml")
            subprocess.run([PYTHON, "-m", "mlops_core.cli", "monitor", "profile", "models:/bench/1",
                            "--data", str(train)], env=env, check=True, capture_output=True)
        else:
            env["MLOPS_CONFIG"] = str(work / "empty.toml")
            (work / "empty.toml").write_text(f'home = "{work / "home-none"}"\n')
        self.log = open(work / f"server-{self.port}.log", "wb")
        self.proc = subprocess.Popen([PYTHON, "-m", "mlops_server", "--bundle", str(bundle), "--name", "bench",
                                      "--model-version", "1", "--port", str(self.port), "--log-level", "warning"],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                get(self.url + "/v2/health/ready")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"{label} server exited: {(work / f'server-{self.port}.log').read_text()[-2000:]}")
                time.sleep(0.2)
        raise SystemExit(f"{label} server did not become ready")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (Linux /proc), a load-robust cost measure."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self) -> str:
        return get(self.url + "/metrics", timeout=10).decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def wrk(url: str, body: str, concurrency: int, duration: float, work: Path) -> dict:
    script = work / "post.lua"
    script.write_text('wrk.method = "POST"\n' f"wrk.body = {json.dumps(body)}\n"
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "-s", str(script),
                          url + "/v2/models/bench/infer"], capture_output=True, text=True, check=True).stdout

    def latency_ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": latency_ms("50"), "p99_ms": latency_ms("99"), "errors": int(errors.group(1)) if errors else 0}


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--concurrency", type=int, default=8, help="wrk connections (default 8)")
    ap.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    row = [5.1, 3.5, 1.4, 0.2]
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [args.rows, 4], "datatype": "FP64",
                                   "data": row * args.rows}]})
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-monitoring-"))
    servers: list[Server] = []
    try:
        bundle, train = build_model(work)
        servers = [Server(label, bundle, work, stack, train) for label, stack in CONFIGS.items()]
        for s in servers:  # warm-up: model, connections, monitors built on the first event
            wrk(s.url, body, args.concurrency, 2, work)
        results: dict[str, list[dict]] = {s.label: [] for s in servers}
        for r in range(args.rounds):
            for s in servers:
                cpu = s.cpu_seconds()
                res = wrk(s.url, body, args.concurrency, args.duration, work)
                res["cpu_us_per_request"] = (s.cpu_seconds() - cpu) / max(res["requests"], 1) * 1e6
                results[s.label].append(res)
                print(f"round {r + 1} {s.label:<14} {res['rps']:8.0f} req/s  p50 {res['p50_ms']:.2f} ms  "
                      f"p99 {res['p99_ms']:.2f} ms  cpu {res['cpu_us_per_request']:.0f} us/req", file=sys.stderr)
        time.sleep(2)  # let the monitors drain before reading their counters
        health = {}
        for s in servers:
            text = s.metrics()
            health[s.label] = {
                "monitor_requests_counted": metric(text, "mlops_requests_total"),
                "server_requests": metric(text, "mlops_server_requests_total"),
                "server_events_dropped": metric(text, "mlops_server_hook_events_dropped_total"),
                "monitor_events_dropped": metric(text, "mlops_monitor_events_dropped_total"),
                "hook_errors": metric(text, "mlops_hook_errors_total"),
                "monitor_cpu_s": metric(text, "mlops_monitor_cpu_seconds_total"),
            }
    finally:
        for s in servers:
            s.stop()
    base = statistics.median(x["rps"] for x in results["none"])
    base_cpu = statistics.median(x["cpu_us_per_request"] for x in results["none"])
    rows = []
    print(f"\nmlops-server, 1 process, wrk -t1 -c{args.concurrency}, {args.rows} row(s)/request, "
          f"{args.rounds} x {args.duration:g}s interleaved, medians; cores: {os.cpu_count()}\n")
    header = (f"{'monitors':<16}{'req/s':>10}{'overhead':>10}{'cpu us/req':>12}{'cpu overhead':>14}"
              f"{'bg us/req':>11}{'p50 ms':>9}{'p99 ms':>9}{'counted':>10}{'dropped':>9}")
    print(header)
    print("-" * len(header))
    for label, res in results.items():
        rps = statistics.median(x["rps"] for x in res)
        p50 = statistics.median(x["p50_ms"] for x in res)
        p99 = statistics.median(x["p99_ms"] for x in res)
        h = health[label]
        overhead = (base - rps) / base * 100
        cpu = statistics.median(x["cpu_us_per_request"] for x in res)
        cpu_overhead = (cpu - base_cpu) / base_cpu * 100
        dropped = h["server_events_dropped"] + h["monitor_events_dropped"]
        counted = f"{h['monitor_requests_counted']:.0f}" if label != "none" else "-"
        served = h["server_requests"] or 1
        bg = h["monitor_cpu_s"] / served * 1e6
        h["monitor_cpu_us_per_request"] = bg
        print(f"{label:<16}{rps:>10.0f}{overhead:>9.1f}%{cpu:>12.0f}{cpu_overhead:>13.1f}%{bg:>11.1f}"
              f"{p50:>9.2f}{p99:>9.2f}{counted:>10}{dropped:>9.0f}")
        rows.append({"monitors": label, "rps": rps, "overhead_pct": overhead, "cpu_us_per_request": cpu,
                     "cpu_overhead_pct": cpu_overhead, "p50_ms": p50, "p99_ms": p99,
                     "rounds": res, **h})
    print("\ncpu us/req: server process CPU time per request (robust to a busy machine; throughput is not)")
    print("bg us/req: CPU the monitors' background threads spent per request (mlops_monitor_cpu_seconds_total)")
    print("counted: requests the prometheus monitor saw; dropped: events dropped by the server's dispatcher "
          "or a monitor's queue (never the prediction itself)")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitoring.json").write_text(json.dumps({"concurrency": args.concurrency, "rows": args.rows,
                                                     "duration": args.duration, "results": rows}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
