"""Version-creation rate: the sqlite registry plugin vs MLflow's model registry on SQLite.

    .venv/bin/python benchmarks/bench_registry.py        # needs .venv-bench with mlflow (make bench-venv)

Four measurements, each in fresh processes and a fresh temporary folder:
``SqliteRegistry.create_version`` and ``MlflowClient().create_model_version`` (on a
``sqlite:///`` tracking/registry URI), by one process and by 8 processes writing
versions of one shared model at the same time. Every writer opens its client and
registers a few warm-up versions of a private model first; then all are started
together, and the rate is the versions created divided by the time from the first
writer's start to the last writer's end. The numbers handed out are checked for
gaps and duplicates, and failed calls are counted.

Target from the registry issue: ours >= 10x MLflow's rate, single and multi-process.
MLflow runs in its own interpreter: MLOPS_BENCH_PEER_PYTHON (default .venv-bench/bin/python).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import OURS, PEER, missing_peer_message, peer_has, print_table  # noqa: E402

SCRIPT = str(Path(__file__).resolve())
MODEL = "bench-model"
WARMUP = 5
TARGET = 10.0


# ------------------------------------------------------------------ children
def _ours_client(db: str):
    from mlops_core.entities import ArtifactRef
    from mlops_sqlite_registry.registry import SqliteRegistry

    registry = SqliteRegistry(db)

    def create(model: str, i: int) -> int:
        artifact = ArtifactRef(uri="file:///bench/store", digest=f"sha256:{os.getpid():032x}{i:032x}")
        return registry.create_version(model, artifact).version

    return create, (lambda model: None)


def _mlflow_client(db: str):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def create(model: str, i: int) -> int:
        return int(client.create_model_version(model, source=f"file:///bench/store/{os.getpid()}/{i}").version)

    def ensure_model(model: str) -> None:
        try:
            client.create_registered_model(model)
        except MlflowException as exc:
            if "already exists" not in str(exc).lower():
                raise

    return create, ensure_model


CLIENTS = {"ours": _ours_client, "mlflow": _mlflow_client}


def child_setup(kind: str, db: str) -> None:
    """Create the database (schema migrations) and the shared model, before any timing."""
    _create, ensure_model = CLIENTS[kind](db)
    ensure_model(MODEL)
    print("OK", flush=True)


def child_worker(kind: str, db: str, count: int) -> None:
    """Open a client, warm up, say READY, wait for GO on stdin, create ``count`` versions."""
    create, ensure_model = CLIENTS[kind](db)
    warm = f"warmup-{os.getpid()}"
    ensure_model(warm)
    for i in range(WARMUP):
        create(warm, i)
    print("READY", flush=True)
    sys.stdin.readline()
    numbers, errors, first_error = [], 0, None
    start = time.time()
    for i in range(count):
        try:
            numbers.append(create(MODEL, i))
        except Exception as exc:  # counted and reported: a failed registration is a result too
            errors += 1
            first_error = first_error or " ".join(f"{type(exc).__name__}: {exc}".split())[:240]
    end = time.time()
    print(json.dumps({"start": start, "end": end, "numbers": numbers, "errors": errors, "first_error": first_error}),
          flush=True)


# --------------------------------------------------------------- coordinator
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONWARNINGS": "ignore"})
    return env


def measure(python: str, kind: str, processes: int, count: int) -> dict:
    """Run ``processes`` fresh writers of ``count`` versions each against a fresh database."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-registry-{kind}-"))
    db = str(folder / "registry.db")
    logs = []
    try:
        setup = subprocess.run([python, SCRIPT, "_setup", kind, db], capture_output=True, text=True, env=_env())
        if setup.returncode != 0:
            raise RuntimeError(f"{kind} setup failed:\n{setup.stderr[-3000:]}")
        workers = []
        for n in range(processes):
            log = open(folder / f"worker-{n}.log", "w+")
            logs.append(log)
            workers.append(subprocess.Popen([python, SCRIPT, "_worker", kind, db, str(count)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=log, text=True, env=_env()))
        for proc in workers:
            if proc.stdout.readline().strip() != "READY":
                proc.wait()
                logs[workers.index(proc)].seek(0)
                raise RuntimeError(f"{kind} worker failed to start:\n{logs[workers.index(proc)].read()[-3000:]}")
        for proc in workers:  # all writers are connected and warm: start them together
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        reports = []
        for n, proc in enumerate(workers):
            out, _ = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                logs[n].seek(0)
                raise RuntimeError(f"{kind} worker failed:\n{logs[n].read()[-3000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for log in logs:
            log.close()
        shutil.rmtree(folder, ignore_errors=True)

    numbers = sorted(n for r in reports for n in r["numbers"])
    created = len(numbers)
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    gapless = numbers == list(range(1, created + 1))
    return {
        "kind": kind, "processes": processes, "requested": processes * count, "created": created,
        "errors": sum(r["errors"] for r in reports),
        "first_error": next((r["first_error"] for r in reports if r["first_error"]), None),
        "seconds": seconds, "rate": created / seconds if seconds > 0 else float("inf"),
        "numbering": "1..n, no gap/dup" if gapless else f"{len(set(numbers))} distinct of {created}, max {max(numbers, default=0)}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8, help="writers in the multi-process runs (default 8)")
    parser.add_argument("--ours", type=int, default=2000, help="versions per writer for ours (default 2000)")
    parser.add_argument("--mlflow", type=int, default=200, help="versions per writer for MLflow (default 200)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()

    results = []
    for processes in (1, args.processes):
        results.append(measure(OURS, "ours", processes, args.ours))
    have_peer = peer_has("mlflow")
    peer_version = None
    if have_peer:
        peer_version = subprocess.run([PEER, "-c", "import mlflow; print(mlflow.__version__)"], capture_output=True,
                                      text=True).stdout.strip()
        for processes in (1, args.processes):
            results.append(measure(PEER, "mlflow", processes, args.mlflow))

    label = {"ours": "mlops-sqlite-registry", "mlflow": f"mlflow {peer_version} (sqlite)"}
    print_table(
        "Registry: version creation, fresh processes, one shared model",
        ["backend", "processes", "versions", "errors", "seconds", "versions/s", "numbering"],
        [[label[r["kind"]], r["processes"], r["created"], r["errors"], r["seconds"], f"{r['rate']:,.0f}",
          r["numbering"]] for r in results],
    )
    for r in results:
        if r["first_error"]:
            print(f"  first error ({label[r['kind']]}, {r['processes']} processes): {r['first_error']}")

    status = 0
    if have_peer:
        rows = []
        for processes in (1, args.processes):
            ours = next(r for r in results if r["kind"] == "ours" and r["processes"] == processes)
            peer = next(r for r in results if r["kind"] == "mlflow" and r["processes"] == processes)
            ratio = ours["rate"] / peer["rate"] if peer["rate"] else float("inf")
            rows.append([f"{processes} process{'es' if processes > 1 else ''}", f"{ours['rate']:,.0f}",
                         f"{peer['rate']:,.0f}", f"{ratio:,.1f}x", "met" if ratio >= TARGET else "MISSED"])
            status |= ratio < TARGET
        print_table(f"Ratio ours / MLflow (target >= {TARGET:g}x)",
                    ["writers", "ours/s", "mlflow/s", "ratio", "target"], rows)
    else:
        print(f"\nMLflow side skipped: {missing_peer_message('mlflow')}")
    if args.json:
        print(json.dumps({"results": results, "peer": peer_version}))
    return int(status)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_setup":
        child_setup(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_worker":
        child_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(main())
