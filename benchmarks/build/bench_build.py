"""Build time and image size: mlops-oci's daemonless builder vs the Dockerfile MLflow generates.

    .venv/bin/python benchmarks/build/bench_build.py [--skip-mlflow]

Both build the same small scikit-learn model (LogisticRegression on iris) on the same
locally made base (Debian bookworm + python3 by debootstrap, in the shared base cache
~/.cache/mlops-core/bases; no public registry is reachable here):

* ours: ``mlops_core.api.build(..., push=True)`` with the ``oci`` builder, pushing to a
  local docker-registry. "cold" = empty wheel and layer cache under the stack home (pip's
  own HTTP cache may be warm); "warm, model-only change" = a new version of the model
  with the cache filled; "warm, no change" = the same version again.
* MLflow: ``mlflow models generate-dockerfile`` (peer venv: $MLOPS_BENCH_PEER_PYTHON,
  default .venv-bench/bin/python), FROM rewritten to the local base plus pip (MLflow's
  Dockerfile calls ``pip`` and ``python``; bookworm's minbase has neither), built with
  ``podman build`` (vfs storage, runc: what works on this machine). "cold" = --no-cache;
  "warm, model-only change" = podman's layer cache, new model files.

Sizes are what podman reports for each image after it has it locally (uncompressed),
plus our compressed size (what a registry stores). Single runs: the machine is 2 shared
cores, so treat the times as rough; the ratios are the point. Nothing asserts on time.
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "mlops-oci" / "tests"))
PEER = os.environ.get("MLOPS_BENCH_PEER_PYTHON", str(ROOT / ".venv-bench" / "bin" / "python"))


def sh(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=env, check=check, capture_output=True, text=True)


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()

    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mlops_core.api as api
    from conftest import PodmanService, Registry
    from oci_testkit import debootstrap_base_layout, make_stack

    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    (work / "registry").mkdir()
    (work / "podman").mkdir()
    registry = Registry(work / "registry")
    podman = PodmanService(work / "podman", [registry.host])
    rows: list[tuple[str, str, str]] = []
    results: dict[str, float] = {}
    try:
        t, layout = timed(debootstrap_base_layout)
        print(f"base image (debootstrap bookworm + python3, cached): {t:.1f} s", file=sys.stderr)
        base = f"{registry.host}/base/python:bookworm"
        sh("skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:python", f"docker://{base}")

        x, y = load_iris(return_X_y=True)
        m1 = LogisticRegression(max_iter=500).fit(x, y)
        m2 = LogisticRegression(max_iter=500, C=0.5).fit(x, y)

        # ---------------------------------------------------------------- ours
        stack = make_stack(work / "home", base=base, repository=f"{registry.host}/models")
        v1 = api.register("iris", m1, example=x[:3], stack=stack)
        v2 = api.register("iris", m2, example=x[:3], stack=stack)
        results["ours_cold"], img1 = timed(lambda: api.build(v1.uri, push=True, stack=stack))
        results["ours_warm"], img2 = timed(lambda: api.build(v2.uri, push=True, stack=stack))
        uploaded_warm = stack.builder.last_report.push.bytes_uploaded
        results["ours_noop"], _ = timed(lambda: api.build(v2.uri, push=True, stack=stack))
        results["ours_compressed"] = img2.size
        podman.podman("pull", "--tls-verify=false", img2.reference)
        results["ours_size"] = int(podman.podman("image", "inspect", img2.reference, "--format", "{{.Size}}").stdout)
        print(f"ours: cold {results['ours_cold']:.1f} s, warm {results['ours_warm']:.1f} s "
              f"(uploaded {uploaded_warm} B), no-op {results['ours_noop']:.2f} s", file=sys.stderr)

        # ---------------------------------------------------------------- MLflow
        mlflow_note = ""
        if not args.skip_mlflow:
            if not Path(PEER).exists():
                mlflow_note = f"peer interpreter {PEER} missing: MLflow column skipped"
            else:
                mlflow_note = run_mlflow(work, podman, base, results)

        rows.append(("build, cold", f"{results['ours_cold']:.1f} s", _fmt(results, "mlflow_cold", " s")))
        rows.append(("build, warm cache, model-only change", f"{results['ours_warm']:.1f} s", _fmt(results, "mlflow_warm", " s")))
        rows.append(("build, warm cache, no change", f"{results['ours_noop']:.2f} s", "-"))
        rows.append(("image size (podman, uncompressed)", mib(results["ours_size"]),
                     mib(results["mlflow_size"]) if "mlflow_size" in results else "n/a"))
        rows.append(("image size (compressed, in registry)", mib(results["ours_compressed"]), "-"))
        rows.append(("bytes pushed for the model-only change", f"{uploaded_warm / 1024:.0f} KiB", "-"))
        print()
        print(f"| {'what':40} | {'mlops-oci':>12} | {'MLflow Dockerfile':>18} | {'ratio':>7} |")
        print(f"|{'-' * 42}|{'-' * 14}|{'-' * 20}|{'-' * 9}|")
        for what, ours, theirs in rows:
            print(f"| {what:40} | {ours:>12} | {theirs:>18} | {_ratio(ours, theirs):>7} |")
        print(f"\nbase image: Debian bookworm minbase + python3 (made with debootstrap, {mib(_layout_size(layout))} compressed)")
        if mlflow_note:
            print(f"MLflow: {mlflow_note}")
        return 0
    finally:
        podman.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def _layout_size(layout: Path) -> int:
    return sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())


def _fmt(results: dict, key: str, unit: str) -> str:
    return f"{results[key]:.1f}{unit}" if key in results else "failed/n.a."


def _ratio(ours: str, theirs: str) -> str:
    try:
        a = float(ours.split()[0])
        b = float(theirs.split()[0])
    except (ValueError, IndexError):
        return ""
    return f"{b / a:.1f}x" if a else ""


def run_mlflow(work: Path, podman, base: str, results: dict) -> str:
    """Generate MLflow's Dockerfile, point it at the local base (+pip), build it cold and warm."""
    script = (
        "import sys, mlflow.sklearn\n"
        "from sklearn.datasets import load_iris\nfrom sklearn.linear_model import LogisticRegression\n"
        "x, y = load_iris(return_X_y=True)\n"
        "mlflow.sklearn.save_model(LogisticRegression(max_iter=500, C=float(sys.argv[2])).fit(x, y), sys.argv[1])\n"
    )
    sh(PEER, "-c", script, str(work / "mlmodel1"), "1.0")
    sh(PEER, "-c", script, str(work / "mlmodel2"), "0.5")
    mlflow_bin = str(Path(PEER).parent / "mlflow")
    out = work / "mlflow-ctx"
    sh(mlflow_bin, "models", "generate-dockerfile", "-m", str(work / "mlmodel1"), "-d", str(out))
    dockerfile = (out / "Dockerfile").read_text()
    original_from = next(line for line in dockerfile.splitlines() if line.startswith("FROM "))
    # MLflow's Dockerfile runs `pip` and `python`: give the local base both (not timed).
    pip_base = "localhost/bench/python-pip:bookworm"
    (work / "pipbase").mkdir()
    # This machine reaches PyPI through an egress proxy with its own CA: the build containers must
    # trust it too, or pip inside MLflow's build fails with CERTIFICATE_VERIFY_FAILED.
    ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    shutil.copyfile(ca, work / "pipbase" / "host-ca.crt")
    (work / "pipbase" / "Dockerfile").write_text(
        f"FROM {base}\nCOPY host-ca.crt /etc/ssl/certs/host-ca.crt\n"
        "ENV PIP_CERT=/etc/ssl/certs/host-ca.crt SSL_CERT_FILE=/etc/ssl/certs/host-ca.crt\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends python3-pip python-is-python3 "
        "&& rm -rf /var/lib/apt/lists/*\nENV PIP_BREAK_SYSTEM_PACKAGES=1\n")
    t = time.perf_counter()
    prep = podman.podman("build", "--tls-verify=false", "--network", "host", "-t", pip_base, str(work / "pipbase"), check=False)
    prep_s = time.perf_counter() - t
    if prep.returncode != 0:
        return f"could not make the pip base: {prep.stderr[-800:]}"
    (out / "Dockerfile").write_text(dockerfile.replace(original_from, f"FROM {pip_base}", 1))
    t = time.perf_counter()
    cold = podman.podman("build", "--no-cache", "--network", "host", "-t", "localhost/bench/mlflow:1", str(out), check=False)
    cold_s = time.perf_counter() - t
    if cold.returncode != 0:
        return (f"`podman build` of MLflow's Dockerfile failed after {cold_s:.0f} s ({original_from} rewritten "
                f"to the local base + pip): {cold.stderr.strip()[-1500:]}")
    results["mlflow_cold"] = cold_s
    results["mlflow_size"] = int(podman.podman("image", "inspect", "localhost/bench/mlflow:1", "--format", "{{.Size}}").stdout)
    model_dir = next((out / "model_dir").iterdir())
    shutil.rmtree(model_dir)
    shutil.copytree(work / "mlmodel2", model_dir)
    t = time.perf_counter()
    warm = podman.podman("build", "--network", "host", "-t", "localhost/bench/mlflow:2", str(out), check=False)
    if warm.returncode == 0:
        results["mlflow_warm"] = time.perf_counter() - t
    return (f"{original_from} rewritten to the local base + python3-pip and the host's CA bundle "
            f"(that prep build took {prep_s:.0f} s and is not counted); `pip install mlflow` and the model's requirements come from PyPI during the build")


if __name__ == "__main__":
    sys.exit(main())
