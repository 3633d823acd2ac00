"""CPU per small request through the server's whole HTTP stack, in one process, without the network.

On a shared 2-core machine `bench_serving.py`'s requests per second move by 2-3x between
runs of the same code, which hides a few percent of overhead. This benchmark feeds raw
HTTP/1.1 requests (keep-alive, the iris V2 JSON body of bench_serving.py) to the server's
connection protocol (httptools parser, uvicorn cycle, the ASGI app, the model) on a fake
transport, and measures process CPU time per request. Each code version runs in its own
interpreter, alternately, several rounds; the median round is reported.

    python benchmarks/serving/bench_request_overhead.py [--requests 20000] [--rounds 5] [--before DIR]

``--before DIR`` is a folder holding an older ``mlops_server`` package (for example
``git archive <commit> plugins/mlops-server | tar -x -C DIR`` then
DIR/plugins/mlops-server): it is measured against the installed one and the ratio printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

WORKER = textwrap.dedent('''
    import asyncio, json, sys, time
    import uvicorn
    from uvicorn.server import ServerState
    from mlops_server.app import ModelServerApp
    from mlops_server.config import BundleSpec, ServerConfig
    from mlops_server.models import ServedModel

    bundle, n = sys.argv[1], int(sys.argv[2])
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                                   "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()
    request = (b"POST /v2/models/iris/infer HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Type: application/json\\r\\n"
               b"Content-Length: %d\\r\\n\\r\\n" % len(body)) + body
    config = ServerConfig(bundles=(BundleSpec(bundle, "iris"),))
    model = ServedModel(bundle, name="iris")
    model.load()
    app = ModelServerApp(config, [model], preloaded=True)
    try:
        from mlops_server.protocol import ConnectionLimits, http_protocol_class
        cls = http_protocol_class(ConnectionLimits(max_connections=1000))
    except ImportError:  # the code before mlops_server.protocol existed
        from mlops_server.server import _draining_httptools_protocol
        cls = _draining_httptools_protocol()

    class Transport(asyncio.Transport):
        def __init__(self):
            super().__init__()
            self.out = bytearray()
            self.closing = False
        def write(self, data): self.out += data
        def is_closing(self): return self.closing
        def close(self): self.closing = True
        def get_extra_info(self, name, default=None):
            return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8080)}.get(name, default)
        def pause_reading(self): pass
        def resume_reading(self): pass
        def can_write_eof(self): return True
        def write_eof(self): pass

    async def main():
        loop = asyncio.get_running_loop()
        ucfg = uvicorn.Config(app, http=cls, lifespan="off", access_log=False, log_config=None,
                              server_header=False, date_header=False)
        ucfg.load()
        await app.startup()
        proto = cls(config=ucfg, server_state=ServerState(), app_state={}, _loop=loop)
        t = Transport()
        proto.connection_made(t)
        async def one():
            t.out.clear()
            proto.data_received(request)
            while not t.out.endswith(b"]}]}"):
                await asyncio.sleep(0)
        for _ in range(2000):
            await one()
        assert t.out.startswith(b"HTTP/1.1 200"), bytes(t.out[:200])
        start = time.process_time()
        for _ in range(n):
            await one()
        print(json.dumps({"cpu_us": (time.process_time() - start) / n * 1e6}))
        proto.connection_lost(None)

    import uvloop
    uvloop.run(main())
''')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", default=None, help="folder with the older mlops_server package")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from mlops_core.bundle import save_bundle
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        X, y = load_iris(return_X_y=True)
        bundle = Path(tmp) / "iris"
        save_bundle(LogisticRegression(max_iter=1000).fit(X, y), bundle, example=X[:2])
        script = Path(tmp) / "worker.py"
        script.write_text(WORKER)
        versions = {"installed": None}
        if args.before:
            versions = {"before": args.before, "installed": None}
        samples: dict[str, list[float]] = {k: [] for k in versions}
        for _ in range(args.rounds):
            for label, path in versions.items():
                env = dict(os.environ)
                if path:
                    env["PYTHONPATH"] = os.pathsep.join([path, env.get("PYTHONPATH", "")])
                out = subprocess.run([sys.executable, str(script), str(bundle), str(args.requests)], env=env,
                                     capture_output=True, text=True, check=True)
                samples[label].append(json.loads(out.stdout.strip().splitlines()[-1])["cpu_us"])
    report = {label: {"median_cpu_us_per_request": round(statistics.median(v), 1),
                      "rounds": [round(x, 1) for x in v]} for label, v in samples.items()}
    if args.before:
        report["installed_vs_before"] = round(report["installed"]["median_cpu_us_per_request"]
                                              / report["before"]["median_cpu_us_per_request"], 3)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
