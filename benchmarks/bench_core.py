"""mlops-core vs MLflow, side by side in one run: start-up and save+load of a 100 MiB model.

    .venv/bin/python benchmarks/bench_core.py            # needs .venv-bench with mlflow (make bench-venv)

Targets from issue 2: cold import at most 1/10 of MLflow's; save+load at least 2x faster.
Each figure is the median of fresh processes; the table prints ratios (peer / ours).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import OURS, PEER, missing_peer_message, peer_has, print_table, run_json, time_command  # noqa: E402

MLOPS_CLI = str(Path(OURS).with_name("mlops"))
MLFLOW_CLI = str(Path(PEER).with_name("mlflow"))

SAVE_LOAD_OURS = r"""
import json, sys, time, numpy as np
import mlops_core
class Big:
    def __init__(self, w): self.w = w
    def predict(self, x): return x @ self.w[: x.shape[1]]
model = Big(np.random.default_rng(0).random(100 * 1024 * 1024 // 8))
t = time.perf_counter(); mlops_core.save_bundle(model, sys.argv[1]); save = time.perf_counter() - t
t = time.perf_counter(); m = mlops_core.load_bundle(sys.argv[1]).model; load = time.perf_counter() - t
assert m.w.shape == model.w.shape
print(json.dumps({"save": save, "load": load}))
"""

SAVE_LOAD_MLFLOW = r"""
import json, sys, time, numpy as np
import mlflow.pyfunc
class Big(mlflow.pyfunc.PythonModel):
    def __init__(self, w): self.w = w
    def predict(self, context, model_input, params=None): return model_input
model = Big(np.random.default_rng(0).random(100 * 1024 * 1024 // 8))
t = time.perf_counter(); mlflow.pyfunc.save_model(sys.argv[1], python_model=model); save = time.perf_counter() - t
t = time.perf_counter(); m = mlflow.pyfunc.load_model(sys.argv[1]); load = time.perf_counter() - t
print(json.dumps({"save": save, "load": load}))
"""


def save_load(python: str, code: str, runs: int = 3) -> tuple[float, float]:
    saves, loads = [], []
    for _ in range(runs):
        tmp = tempfile.mkdtemp(prefix="bench-save-")
        try:
            r = run_json(python, code, os.path.join(tmp, "model"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        saves.append(r["save"])
        loads.append(r["load"])
    return sorted(saves)[len(saves) // 2], sorted(loads)[len(loads) // 2]


def main() -> int:
    have_mlflow = peer_has("mlflow")
    if not have_mlflow:
        print(missing_peer_message("MLflow"))
    bare = time_command([OURS, "-c", "pass"])
    rows = []
    ours_import = time_command([OURS, "-c", "import mlops_core"])
    ours_help = time_command([MLOPS_CLI, "--help"])
    if have_mlflow:
        peer_import = time_command([PEER, "-c", "import mlflow"], runs=5)
        peer_help = time_command([MLFLOW_CLI, "--help"], runs=5)
        rows.append(["cold import (s)", ours_import, peer_import, f"{peer_import / ours_import:.1f}x"])
        rows.append(["import minus bare interpreter (s)", ours_import - bare, peer_import - bare,
                     f"{(peer_import - bare) / max(ours_import - bare, 1e-4):.1f}x"])
        rows.append(["CLI --help (s)", ours_help, peer_help, f"{peer_help / ours_help:.1f}x"])
    else:
        rows += [["cold import (s)", ours_import, "-", "-"], ["CLI --help (s)", ours_help, "-", "-"]]
    ours_save, ours_load = save_load(OURS, SAVE_LOAD_OURS)
    if have_mlflow:
        peer_save, peer_load = save_load(PEER, SAVE_LOAD_MLFLOW)
        rows.append(["save 100 MiB model (s)", ours_save, peer_save, f"{peer_save / ours_save:.1f}x"])
        rows.append(["load 100 MiB model (s)", ours_load, peer_load, f"{peer_load / ours_load:.1f}x"])
        rows.append(["save + load (s)", ours_save + ours_load, peer_save + peer_load,
                     f"{(peer_save + peer_load) / (ours_save + ours_load):.1f}x"])
    else:
        rows += [["save 100 MiB model (s)", ours_save, "-", "-"], ["load 100 MiB model (s)", ours_load, "-", "-"]]
    print_table(f"mlops-core vs MLflow (medians; bare interpreter {bare:.3f} s)",
                ["what", "mlops-core", "MLflow", "ratio (MLflow / ours)"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
