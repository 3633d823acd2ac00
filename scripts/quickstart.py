"""The main job end to end on the embedded defaults (run by `make quickstart`).

train -> save a bundle -> register (alias staging) -> build an OCI image ->
deploy as a local process -> V2 predictions -> metrics and drift ->
promote to production -> roll back -> tear down.

Each step prints the equivalent CLI command. The stack lives in a fresh
folder (./quickstart-run by default) so it never touches your own .mlops.
Steps whose plugin is not installed are reported and skipped, never faked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import time
import urllib.request
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

WORKDIR = Path(os.environ.get("QUICKSTART_DIR", "quickstart-run")).resolve()


def step(title: str, cli: str) -> None:
    print(f"\n== {title}\n   $ {cli}", flush=True)


def post_json(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def choose_base_image() -> None:
    """Use python:3.11-slim when its registry is reachable; otherwise make a local base with debootstrap."""
    import socket

    if os.environ.get("MLOPS_BUILDER__BASE"):
        return
    try:
        socket.getaddrinfo("registry-1.docker.io", 443)
        return
    except OSError:
        pass
    step("no public registry reachable: make a local Python base image", "mlops image base")
    try:
        from mlops_oci.localbase import base_reference

        os.environ["MLOPS_BUILDER__BASE"] = base_reference()
        print(f"   base = {os.environ['MLOPS_BUILDER__BASE']}")
    except Exception as exc:  # ImportError, or no debootstrap/root: the build step will say why
        print(f"   cannot make a local base: {exc}")


STACK_FILE = """\
# The embedded defaults for storage, registry, builder and deployer, plus three monitors.
[[monitors]]
backend = "prometheus"

[[monitors]]
backend = "drift"

[[monitors]]
backend = "log"
sample_rate = 1.0
"""


def enable_monitors() -> bool:
    """Prometheus metrics, drift and prediction logs, when the mlops-monitors plugin is installed."""
    try:
        import mlops_monitors  # noqa: F401
    except ImportError:
        return False
    step("configure the stack: monitors on top of the embedded defaults", "cat mlops.toml")
    (WORKDIR / "mlops.toml").write_text(STACK_FILE)
    print("   " + STACK_FILE.replace("\n", "\n   "))
    return True


MONITORS = False


def main() -> int:
    global MONITORS
    choose_base_image()
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    os.chdir(WORKDIR)
    MONITORS = enable_monitors()
    os.environ["MLOPS_HOME"] = str(WORKDIR / ".mlops")
    import mlops_core as mlops
    from mlops_core.errors import BackendNotFoundError, BackendUnavailableError

    step("train a model", "python train.py")
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)

    step("save it as a bundle (the example rows become the drift reference)",
         "mlops_core.save(model, 'iris-bundle', example=X)")
    bundle = mlops.save(model, "iris-bundle", example=X)
    print(f"   format={bundle.manifest['format']} digest={bundle.digest[:23]}... "
          f"requirements={[r['name'] for r in bundle.manifest['requirements']]}")

    step("register version 1 as staging", "mlops models save iris-bundle --name iris --alias staging")
    v1 = mlops.register("iris", bundle, alias="staging", description="logistic regression on iris")
    print(f"   {v1.uri} aliases={list(v1.aliases)}")
    loaded = mlops.load("models:/iris@staging")
    assert (loaded.predict(X[:5]) == model.predict(X[:5])).all()
    print("   loaded models:/iris@staging back: predictions match")

    step("build an OCI image (no daemon)", "mlops build models:/iris@staging")
    try:
        image = mlops.build("models:/iris@staging")
        print(f"   {image.reference} {image.digest} layout={image.layout}")
    except (BackendNotFoundError, BackendUnavailableError) as exc:
        print(f"   skipped: {exc.message}\n   ({exc.hint})")

    step("deploy it as a local process", "mlops deploy models:/iris@staging --name iris")
    try:
        dep = mlops.deploy("models:/iris@staging", name="iris")
    except BackendNotFoundError as exc:
        print(f"   skipped: {exc.message} ({exc.hint})")
        return 0
    print(f"   {dep.name}: {dep.state} at {dep.url}")
    try:
        step("send V2 predictions", f"mlops predict iris --input rows.json")
        body = {"id": "q1", "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [3, 4], "data": X[[0, 60, 120]].tolist()}]}
        answer = post_json(f"{dep.url}/v2/models/iris/infer", body)
        print(f"   {answer['outputs'][0]['data']} (expected {model.predict(X[[0, 60, 120]]).tolist()})")
        step("send traffic whose petal length drifted (+2 cm)", "a loop of V2 requests")
        rng = np.random.default_rng(0)
        for _ in range(40):
            rows = X[rng.integers(0, len(X), 20)].copy()
            rows[:, 2] += 2.0
            post_json(f"{dep.url}/v2/models/iris/infer",
                      {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [20, 4], "data": rows.tolist()}]})
        time.sleep(2.5)  # the drift monitor scores its window about once a second

        step("metrics", f"curl {dep.url}/metrics")
        with urllib.request.urlopen(f"{dep.url}/metrics", timeout=10) as resp:
            lines = [l for l in resp.read().decode().splitlines()
                     if l.startswith(("mlops_requests_total", "mlops_predictions_total", "mlops_drift_detected"))
                     and 'model="iris"' in l]
        print("   " + "\n   ".join(lines[:12]) if lines else "   (no monitor configured)")

        step("register version 2 and promote it to production",
             "mlops models save ... --name iris && mlops models alias iris production 2 && mlops deploy models:/iris@production --name iris")
        v2 = mlops.register("iris", LogisticRegression(C=0.5, max_iter=500).fit(X, y), example=X[:5])
        mlops.set_alias("iris", "production", v2.version)
        dep = mlops.deploy("models:/iris@production", name="iris")
        print(f"   now serving version {dep.version} (previous {dep.previous_version})")

        step("roll back", "mlops deployments rollback iris")
        dep = mlops.rollback("iris")
        print(f"   now serving version {dep.version}")
    finally:
        step("tear down", "mlops deployments delete iris")
        mlops.undeploy("iris")
        print("   deleted")
    if MONITORS:
        mlops_cli = str(Path(sys.executable).with_name("mlops"))
        step("drift status", "mlops monitor status iris")
        subprocess.run([mlops_cli, "monitor", "status", "iris"], check=True)
        step("drift report of the logged predictions", "mlops monitor report models:/iris/1 -o drift-report.html")
        subprocess.run([mlops_cli, "monitor", "report", "models:/iris/1", "-o", str(WORKDIR / "drift-report.html")],
                       check=True)
    print("\nquickstart finished: every step ran for real on the embedded stack in", WORKDIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
