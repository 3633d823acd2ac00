"""Build the example command models (Node.js and Go) as mlops-core bundles.

    python contrib/command-models/command_models.py OUT_DIR      # writes OUT_DIR/node-model and OUT_DIR/go-model

Both implement the same linear classifier (``weights.json``) behind the same V2
signature, so the same client checks apply to both. :func:`expected` computes
the right answers in numpy for those checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "scores", "datatype": "FP64", "shape": [-1, 3]},
                {"name": "label", "datatype": "INT64", "shape": [-1]}],
    "input_kind": "ndarray",
}


def expected(x):  # the right answers, computed independently of both programs
    import numpy as np

    w = json.loads((HERE / "weights.json").read_text())
    scores = np.asarray(x, dtype=np.float64) @ np.asarray(w["weights"]).T + np.asarray(w["bias"])
    return scores, scores.argmax(axis=1)


def node_model():
    from mlops_formats.command_format import CommandModel

    return CommandModel(HERE / "node", ["node", "model.js"], SIGNATURE, requires=["node"])


def node_model_with_runtime(build_dir: Path):
    """The Node.js model with the ``node`` executable itself in the bundle (about 100 MB).

    For images whose base has no Node.js: the program folder then holds everything
    the model needs. ``node`` from the NodeSource/official builds links only glibc and
    libstdc++, which Debian bases have.
    """
    from mlops_formats.command_format import CommandModel

    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed")
    out = Path(build_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.js", "weights.json"):
        shutil.copyfile(HERE / "node" / name, out / name)
    shutil.copyfile(os.path.realpath(node), out / "node")
    return CommandModel(out, ["./node", "model.js"], SIGNATURE, executables=["node"])


def go_model(build_dir: Path | None = None):
    """Compile the Go model into a static binary (needs ``go``, Debian's golang-go) and describe it."""
    from mlops_formats.command_format import CommandModel

    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the Go example needs the Go compiler: apt-get install golang-go")
    out = Path(build_dir or tempfile.mkdtemp(prefix="go-model-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-trimpath", "GO111MODULE": "on",
           "GOCACHE": str(Path(tempfile.gettempdir()) / "mlops-go-cache"), "GOPATH": str(Path(tempfile.gettempdir()) / "mlops-gopath")}
    subprocess.run([go, "build", "-ldflags=-s -w -buildid=", "-o", str(out / "model"), "."], cwd=HERE / "go",
                   env=env, check=True)
    shutil.copyfile(HERE / "go" / "weights.json", out / "weights.json")
    return CommandModel(out, ["./model"], SIGNATURE)


if __name__ == "__main__":
    import mlops_core

    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "command-bundles")
    for name, model in (("node-model", node_model()), ("go-model", go_model())):
        info = mlops_core.save(model, dest / name, overwrite=True)
        print(f"{name}: {info.path} ({info.manifest['format']}, {info.digest[:19]}...)")
