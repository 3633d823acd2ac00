"""ONNX serving benchmark: the same ONNX model served by mlops-server and by MLServer, same load generator.

The model is scikit-learn's LogisticRegression on iris converted to ONNX with
skl2onnx (input ``X`` FP32 [-1, 4]; outputs ``label`` and ``probabilities``),
saved once as ``model.onnx``. Both servers run it with onnxruntime, one intra-op
thread, and get the same V2 JSON body (one row) from ``wrk`` with keep-alive
connections at concurrency 1, 8 and 32, round-robin in one run.

* ours: ``python -m mlops_server --bundle`` on an ``onnx`` format bundle;
* MLServer 1.7.1: there is no official ONNX runtime for MLServer (``mlserver-onnx``
  is not published on PyPI; the ONNX runtime was dropped from MLServer's repo), so
  it serves the model with a small custom ``MLModel`` class on onnxruntime
  (``ONNX_MODEL`` below), decoding and encoding with MLServer's own NumpyCodec, in
  its best measured configuration (``parallel_workers: 0``).

    python benchmarks/serving/bench_onnx.py [--duration 10] [--concurrency 1 8 32] [--rounds 1]

MLServer runs from MLOPS_BENCH_PEER_PYTHON (default .venv-bench/bin/python;
``make bench-venv``). Results also go to benchmarks/results/serving-onnx.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_serving as bs  # noqa: E402  (the shared load generator, process and CPU accounting)

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]})

ONNX_MODEL = textwrap.dedent('''
    """An MLServer runtime for ONNX models on onnxruntime (MLServer ships none)."""
    import numpy as np
    import onnxruntime as ort
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse
    from mlserver.utils import get_model_uri


    class OnnxRuntimeModel(MLModel):
        async def load(self) -> bool:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            uri = await get_model_uri(self._settings)
            self._session = ort.InferenceSession(uri, sess_options=options, providers=["CPUExecutionProvider"])
            self._inputs = {i.name: i for i in self._session.get_inputs()}
            self._outputs = [o.name for o in self._session.get_outputs()]
            return True

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            feeds = {}
            for request_input in payload.inputs:
                arr = self.decode(request_input, default_codec=NumpyCodec)
                feeds[request_input.name] = np.asarray(arr, dtype=np.float32)
            results = self._session.run(self._outputs, feeds)
            return InferenceResponse(
                model_name=self.name, model_version=self.version, id=payload.id,
                outputs=[NumpyCodec.encode_output(name, value) for name, value in zip(self._outputs, results)],
            )
''')


def make_model(workdir: Path) -> Path:
    sys.path.insert(0, str(bs.ROOT))
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlops_core.bundle import save_bundle

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    info = save_bundle(model, workdir / "iris-onnx", format="onnx", example=X[:2].astype("float32"))
    return info.path


def our_server(bundle: Path, workdir: Path) -> bs.Server:
    port = bs.free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlops_server", "--bundle", str(bundle), "--name", "iris", "--port", str(port),
           "--log-level", "warning"]
    return bs.Server("mlops-server onnx", cmd, url + "/v2/health/ready", url + "/v2/models/iris/infer", BODY, workdir,
                     env={"MLOPS_ONNX_INTRA_OP_THREADS": "1"})


def mlserver(bundle: Path, workdir: Path) -> bs.Server | None:
    if not (bs.peer_has("mlserver") and bs.peer_has("onnxruntime")):
        print(f"MLServer or onnxruntime missing: {bs.PEER_PYTHON} -m pip install -r benchmarks/requirements.txt")
        return None
    root = workdir / "mlserver-onnx"
    model_dir = root / "iris"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle / "model.onnx", model_dir / "model.onnx")  # the very same bytes
    (root / "onnx_model.py").write_text(ONNX_MODEL)
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "onnx_model.OnnxRuntimeModel", "parameters": {"uri": "./model.onnx"}}))
    port = bs.free_port()
    (root / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": bs.free_port(), "metrics_port": bs.free_port(), "host": "127.0.0.1",
        "parallel_workers": 0, "debug": False}))
    url = f"http://127.0.0.1:{port}"
    cmd = [str(Path(bs.PEER_PYTHON).with_name("mlserver")), "start", str(root)]
    env = {**bs.peer_env(), "PYTHONPATH": str(root)}
    return bs.Server("MLServer onnxruntime (custom)", cmd, url + "/v2/health/ready", url + "/v2/models/iris/infer",
                     BODY, workdir, check_url=url + "/v2/models/iris/ready", env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    bundle = make_model(workdir)
    servers = [our_server(bundle, workdir)]
    peer = mlserver(bundle, workdir)
    if peer is not None:
        servers.append(peer)
    print(f"# ONNX serving benchmark: {os.cpu_count()} CPUs, wrk -t1, keep-alive, {args.duration:g} s per point, "
          f"{args.rounds} round(s); 1-row LogisticRegression(iris) as ONNX, onnxruntime with 1 thread on both sides")
    running: list[bs.Server] = []
    try:
        running = bs.start_servers(servers, 32, tail=8)
        # Both must give the same answer before their speed means anything.
        answers = {server.label: json.loads(server.answer) for server in running}
        labels = {k: next(o["data"] for o in v["outputs"] if o["name"] == "label") for k, v in answers.items()}
        print(f"  answers (label): {labels}")
        if len({json.dumps(v) for v in labels.values()}) > 1:
            print("  the servers disagree; not measuring")
            return 1
        results = bs.measure(running, args.concurrency, args.rounds, args.duration, workdir, 32)
    finally:
        for server in running:
            server.stop()
    bs.print_results(results, args.concurrency, 32)
    cs = args.concurrency
    if len(results) == 2:
        ours, peer_label = list(results)
        print("\nratios (ours / MLServer): throughput x, p99 latency x (lower is better); target at c=32: >= 2x rps, p99 < 1x")
        for c in cs:
            o, p = results[ours]["points"][c], results[peer_label]["points"][c]
            print(f"  c={c:<3} {o['rps'] / max(p['rps'], 1e-9):5.2f}x rps   p99 {o['p99_ms'] / max(p['p99_ms'], 1e-9):4.2f}x")
    out = bs.ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving-onnx.json").write_text(json.dumps(results, indent=2, default=str))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
