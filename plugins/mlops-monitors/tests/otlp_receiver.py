"""A protocol-level OTLP/HTTP receiver for the otel monitor's tests, run as its own process on a loopback port.

The third-party receivers are Arize Phoenix (traces, ``phoenix_receiver.py``) and
VictoriaMetrics (metrics, ``victoria_metrics.py``); they serve back what they
stored, but not every wire-level field (span kind, the resource on spans, exact
data points). This receiver checks those: it speaks the protocol on the wire
(``POST /v1/traces`` and ``/v1/metrics``, ``application/x-protobuf``, optional
gzip) and decodes every request with the official protobuf definitions
(``opentelemetry-proto``: ``ExportTraceServiceRequest``,
``ExportMetricsServiceRequest``), answering with the protocol's response
messages. Nothing of the SDK's in-memory machinery is involved: the exporter
under test only sees bytes on a socket.

Every decoded request is appended as one JSON line (``MessageToDict``) to the
file given on the command line; ``GET /counts`` answers ``{"traces": n, "metrics": n}``.

    python otlp_receiver.py PORT OUT.jsonl
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                           ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                       ExportTraceServiceResponse)

SIGNALS = {
    "/v1/traces": ("traces", ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": ("metrics", ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    lock = threading.Lock()
    counts = {"traces": 0, "metrics": 0}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            signal = SIGNALS.get(self.path)
            if signal is None:
                self._answer(404, b"no such OTLP signal", "text/plain")
                return
            name, request_type, response_type = signal
            if self.headers.get("content-type", "").split(";")[0].strip() != "application/x-protobuf":
                self._answer(415, b"only OTLP/HTTP protobuf is accepted", "text/plain")
                return
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                raw = gzip.decompress(raw)
            message = request_type()
            try:
                message.ParseFromString(raw)
            except Exception as exc:  # a malformed body is the client's error, as the spec says
                self._answer(400, str(exc).encode(), "text/plain")
                return
            record = {"signal": name, "headers": {k.lower(): v for k, v in self.headers.items()},
                      "body": MessageToDict(message)}
            with lock:
                counts[name] += 1
                with open(out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            self._answer(200, response_type().SerializeToString(), "application/x-protobuf")

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                body = json.dumps(counts).encode()
            self._answer(200, body, "application/json")

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
