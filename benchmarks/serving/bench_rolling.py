"""Requests served and failed while the process deployer rolls a deployment between two versions N times.

    .venv/bin/python benchmarks/serving/bench_rolling.py --updates 6

Eight clients (six keep-alive, two with a new connection per request; no retries)
POST V2 requests to the deployment's stable URL the whole time; the deployment is
updated v1 -> v2 -> v1 ... ``--updates`` times. Prints one JSON line: requests
served, failed (with the first errors), and the time each update took. Runs in a
private temporary MLOPS_HOME and deletes the deployment at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--between", type=int, default=300, help="requests completed between two updates")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-rolling-"))
    (root / "mlops.toml").write_text('[deployer]\nbackend = "process"\n')
    os.environ.update(MLOPS_HOME=str(root / "home"), MLOPS_CONFIG=str(root / "mlops.toml"))

    import numpy as np
    from sklearn.linear_model import LinearRegression

    import mlops_core
    from mlops_core.testing.load import LoadGenerator

    x = np.random.RandomState(0).rand(64, 2)
    mlops_core.register("adder", LinearRegression().fit(x, x.sum(axis=1)), example=x[:3])
    mlops_core.register("adder", LinearRegression().fit(x, 2 * x.sum(axis=1) + 100), example=x[:3])
    rows = [[1.0, 2.0], [3.0, 4.0]]
    answers = {(3.0, 7.0): 1, (106.0, 114.0): 2}
    body = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 2],
                                   "data": [v for r in rows for v in r]}]}).encode()

    def identify(data: bytes) -> int | None:
        return answers.get(tuple(round(v, 6) for v in json.loads(data)["outputs"][0]["data"]))

    deployment = mlops_core.deploy("models:/adder/1", name="bench-rolling", wait=300)
    took = []
    try:
        with LoadGenerator(deployment.url, "/v2/models/adder/infer", body, identify=identify) as load:
            load.wait_for(args.between, timeout=600)
            for i in range(args.updates):
                start = time.monotonic()
                mlops_core.deploy(f"models:/adder/{2 - i % 2}", name="bench-rolling", wait=300)
                took.append(time.monotonic() - start)
                load.wait_for(args.between, timeout=600)
        failed = load.failures()
        print(json.dumps({"updates": args.updates, "requests": len(load.outcomes),
                          "served": len(load.outcomes) - len(failed), "failed": len(failed),
                          "first_errors": [o.error for o in failed[:3]],
                          "update_seconds_median": round(statistics.median(took), 2),
                          "load_average": os.getloadavg()}))
    finally:
        mlops_core.undeploy("bench-rolling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
