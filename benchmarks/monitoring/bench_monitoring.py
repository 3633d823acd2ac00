"""Monitoring overhead: serving throughput with no monitor vs the default monitors, A/B alternated in one run.

One small scikit-learn model (LogisticRegression, 4 features) is served by
``python -m mlops_server`` in several configurations at once, each in its own process:

* ``none`` (A): no monitor listens (the server then builds no prediction events at all);
* ``all`` (B): the ``prometheus``, ``drift`` and ``log`` monitors with their defaults
  (log samples 10 % of calls), plus the drift profile of the version;
* optional extras (``--extra``): ``no-op listener`` (one plugin listening and doing nothing),
  ``all, log 100%``, ``all + otel`` and ``all + otel 10%`` (``trace_sample_rate = 0.1``;
  both need ``mlops-monitors[otel]`` and export to a local OTLP/HTTP sink started by this script).

``wrk`` (Debian package ``wrk``, a load generator written in C) drives each server in turn
with keep-alive connections, at each concurrency of ``--concurrency`` (default 1, 8 and 32).
Every round measures A and B back to back in alternating order (A B, then B A, ...), so
drift in machine load hits both alike, and the overhead of a round is ``1 - B/A`` of that
pair. The table reports the median over rounds and the spread (min..max and the
interquartile range) of the per-round overheads: on a shared machine the spread matters.
``--mode concurrent`` loads A and B at the same time instead (two wrk processes), so a
swing in the machine's load hits both within the same seconds; each server then gets
less CPU, which is fine for a ratio.

    python benchmarks/monitoring/bench_monitoring.py [--duration 5] [--rounds 9] [--concurrency 1,8,32]

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

ALL = '[[monitors]]\nbackend = "prometheus"\n[[monitors]]\nbackend = "drift"\n[[monitors]]\nbackend = "log"\n'
CONFIGS = {
    "none": None,
    "all": ALL,
}
EXTRAS = {
    "no-op listener": "",
    "all, log 100%": ALL.replace('backend = "log"\n', 'backend = "log"\nsample_rate = 1.0\n'),
    "all + otel": ALL + '[[monitors]]\nbackend = "otel"\nendpoint = "{otlp}"\n',
    "all + otel 10%": ALL + '[[monitors]]\nbackend = "otel"\nendpoint = "{otlp}"\ntrace_sample_rate = 0.1\n',
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


def start_wrk(url: str, body: str, concurrency: int, duration: float, work: Path) -> subprocess.Popen:
    script = work / "post.lua"
    if not script.exists():
        script.write_text('wrk.method = "POST"\n' f"wrk.body = {json.dumps(body)}\n"
                          'wrk.headers["Content-Type"] = "application/json"\n')
    return subprocess.Popen(["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "-s", str(script),
                             url + "/v2/models/bench/infer"], stdout=subprocess.PIPE, text=True)


def parse_wrk(proc: subprocess.Popen) -> dict:
    out = proc.communicate()[0]
    if proc.returncode:
        raise SystemExit(f"wrk failed ({proc.returncode}): {out[-500:]}")

    def latency_ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": latency_ms("50"), "p99_ms": latency_ms("99"), "errors": int(errors.group(1)) if errors else 0}


def wrk(url: str, body: str, concurrency: int, duration: float, work: Path) -> dict:
    return parse_wrk(start_wrk(url, body, concurrency, duration, work))


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class OtlpSink:
    """A loopback HTTP endpoint that accepts OTLP/HTTP posts and answers 200 (the benchmark only needs a sink)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def spread(values: list[float]) -> dict:
    qs = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": qs[0], "q3": qs[2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    ap.add_argument("--rounds", type=int, default=9, help="A/B rounds per concurrency (default 9)")
    ap.add_argument("--concurrency", default="1,8,32", help="wrk connections, comma-separated (default 1,8,32)")
    ap.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    ap.add_argument("--mode", choices=("alternate", "concurrent"), default="alternate",
                    help="alternate: A then B (order flipped every round); concurrent: A and B loaded at the same "
                         "time by two wrk processes (steadier ratios on a busy machine; each server gets less CPU)")
    ap.add_argument("--extra", action="append", default=[], choices=sorted(EXTRAS),
                    help="also measure this configuration (repeatable)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk (scripts/system-packages.txt)")
    levels = [int(c) for c in args.concurrency.split(",")]
    row = [5.1, 3.5, 1.4, 0.2]
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [args.rows, 4], "datatype": "FP64",
                                   "data": row * args.rows}]})
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-monitoring-"))
    servers: list[Server] = []
    sink = OtlpSink() if any("otel" in name for name in args.extra) else None
    configs = dict(CONFIGS)
    for name in args.extra:
        configs[name] = EXTRAS[name].replace("{otlp}", sink.url if sink else "")
    try:
        bundle, train = build_model(work)
        servers = [Server(label, bundle, work, stack, train) for label, stack in configs.items()]
        base, others = servers[0], servers[1:]
        for s in servers:  # warm-up: model, connections, monitors built on the first event
            wrk(s.url, body, 8, 2, work)
        results: dict[int, dict[str, list[dict]]] = {c: {s.label: [] for s in servers} for c in levels}
        for r in range(args.rounds):
            for c in levels:
                for other in others:
                    pair = [base, other] if r % 2 == 0 else [other, base]
                    if args.mode == "concurrent":  # both at once: every load swing hits A and B alike
                        cpus = [s.cpu_seconds() for s in pair]
                        procs = [start_wrk(s.url, body, c, args.duration, work) for s in pair]
                        outs = [parse_wrk(p) for p in procs]
                        runs = [(s, res, cpu) for s, res, cpu in zip(pair, outs, cpus)]
                    else:
                        runs = []
                        for s in pair:
                            cpu = s.cpu_seconds()
                            runs.append((s, wrk(s.url, body, c, args.duration, work), cpu))
                    for s, res, cpu in runs:
                        res["cpu_us_per_request"] = (s.cpu_seconds() - cpu) / max(res["requests"], 1) * 1e6
                        res["round"] = r
                        if s is base and other is not others[0]:
                            res["extra_pair"] = other.label
                        results[c][s.label].append(res)
                        print(f"round {r + 1} c={c:<3} {s.label:<16} {res['rps']:8.0f} req/s  "
                              f"p99 {res['p99_ms']:.2f} ms  cpu {res['cpu_us_per_request']:.0f} us/req",
                              file=sys.stderr)
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
    print(f"\nmlops-server, 1 process, wrk -t1, {args.rows} row(s)/request, {args.rounds} A/B rounds x "
          f"{args.duration:g} s per concurrency, mode {args.mode}; cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("overhead = 1 - B/A of each back-to-back pair; median [IQR] (min..max) over rounds\n")
    header = (f"{'c':>3}  {'monitors':<16}{'req/s A':>9}{'req/s B':>9}{'overhead':>10}{'IQR':>17}{'min..max':>18}"
              f"{'cpu/req':>13}{'p99 B ms':>10}")
    print(header)
    print("-" * len(header))
    rows = []
    for c in levels:
        base_runs = results[c][base.label]
        for other in others:
            b_runs = results[c][other.label]
            a_runs = [x for x in base_runs if x.get("extra_pair", others[0].label) == other.label]
            ratios = [(1 - b["rps"] / a["rps"]) * 100 for a, b in zip(a_runs, b_runs)]
            cpu = [(b["cpu_us_per_request"] / a["cpu_us_per_request"] - 1) * 100 for a, b in zip(a_runs, b_runs)]
            sp, cp = spread(ratios), spread(cpu)
            a_rps = statistics.median(x["rps"] for x in a_runs)
            b_rps = statistics.median(x["rps"] for x in b_runs)
            p99 = statistics.median(x["p99_ms"] for x in b_runs)
            iqr = f"[{sp['q1']:.1f}, {sp['q3']:.1f}]"
            rng = f"({sp['min']:.1f}..{sp['max']:.1f})"
            print(f"{c:>3}  {other.label:<16}{a_rps:>9.0f}{b_rps:>9.0f}{sp['median']:>9.1f}%{iqr:>17}{rng:>18}"
                  f"{cp['median']:>+12.1f}%{p99:>10.2f}")
            rows.append({"concurrency": c, "monitors": other.label, "rps_none": a_rps, "rps_monitored": b_rps,
                         "overhead_pct": sp, "cpu_overhead_pct": cp, "p99_ms": p99,
                         "rounds": {"none": a_runs, other.label: b_runs}})
    print("\ncpu/req: change of server CPU time per request (B vs A), median over rounds")
    for label, h in health.items():
        if label != base.label:
            dropped = h["server_events_dropped"] + h["monitor_events_dropped"]
            print(f"{label}: prometheus counted {h['monitor_requests_counted']:.0f} of "
                  f"{h['server_requests']:.0f} requests; dropped {dropped:.0f}; hook errors {h['hook_errors']:.0f}; "
                  f"monitor threads {h['monitor_cpu_s'] / max(h['server_requests'], 1) * 1e6:.1f} us/request")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitoring.json").write_text(json.dumps({"mode": args.mode, "rows": args.rows, "duration": args.duration,
                                                     "rounds": args.rounds, "results": rows, "health": health},
                                                    indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
