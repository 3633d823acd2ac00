"""Shared helpers for the side-by-side benchmarks: interpreters, timing, table printing."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = os.environ.get("MLOPS_BENCH_PYTHON", sys.executable)
PEER = os.environ.get("MLOPS_BENCH_PEER_PYTHON", str(REPO / ".venv-bench" / "bin" / "python"))


def peer_has(module: str) -> bool:
    """True when the peer interpreter exists and can import ``module``."""
    if not Path(PEER).exists():
        return False
    return subprocess.run([PEER, "-c", f"import {module}"], capture_output=True).returncode == 0


def missing_peer_message(what: str) -> str:
    return (f"peer {what} not found in {PEER}: create it with `make bench-venv` "
            f"(pip install -r benchmarks/requirements.txt into .venv-bench) or set MLOPS_BENCH_PEER_PYTHON")


def time_command(cmd: list[str], runs: int = 7, env: dict | None = None) -> float:
    """Median wall time of a fresh process, after one warm-up run (page cache, .pyc files)."""
    subprocess.run(cmd, capture_output=True, env=env, check=True)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_json(python: str, code: str, *args: str, env: dict | None = None) -> dict:
    """Run a Python snippet that prints one JSON line last; return it parsed."""
    import json

    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(title: str, headers: list[str], rows: list[list[object]]) -> None:
    cells = [headers] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
