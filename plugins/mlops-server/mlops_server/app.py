"""The model server as a raw ASGI application (no web framework on the hot path).

Routes (Open Inference Protocol V2, plus MLflow's and Prometheus'):

=========================================  ====================================
``GET  /v2``                               server metadata
``GET  /v2/health/live``                   200 while the process serves
``GET  /v2/health/ready``                  200 once every model is loaded and warm
``GET  /v2/models/{m}[/versions/{v}]``     model metadata (signature, state, error)
``GET  /v2/models/{m}[/versions/{v}]/ready``
``POST /v2/models/{m}[/versions/{v}]/infer``  prediction (JSON or binary tensors)
``POST /invocations``                      MLflow scoring protocol
``GET  /ping``, ``/health``                MLflow's health check
``GET  /metrics``                          Prometheus text: server counters + plugins'
=========================================  ====================================

Errors are ``{"error": "..."}`` with 4xx for the client's mistakes, 503 (with
Retry-After) when overloaded or not ready, 504 on a prediction timeout.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import deque
from functools import partial
from typing import Any, Callable

import numpy as np

from . import codec
from ._version import __version__
from .batching import AdaptiveBatcher
from .bodies import LARGE_BODY, BodyReader
from .codec import TensorError
from .config import ServerConfig
from .invocations import parse_invocation, predictions_body
from .metrics import ServerMetrics
from .models import RequestError, ServedModel
from .responses import HttpError, Send
from .responses import error_body as _error
from .responses import respond as _respond
from .v2 import decode_request, encode_response

log = logging.getLogger("mlops_server")

__all__ = ["ModelServerApp", "HttpError"]

_JSON = [(b"content-type", b"application/json")]
_PROM = b"text/plain; version=0.0.4; charset=utf-8"
_HOOK = "mlops_predictions_served"


class _CallBuffer:
    """Calls of one model version since the last hand-off, filled on the event loop.

    Per-call numbers go into fixed-size numpy arrays (a store each, no object per
    call); tensors and the few strings are kept by reference. The whole buffer is
    handed to the dispatcher thread when it is full or ``FLUSH_S`` after its first
    call, so the background thread wakes once per buffer, never per request.
    """

    __slots__ = ("model", "version", "n", "latency", "rows", "ts", "errors", "request_ids", "traceparents",
                 "inputs", "outputs")

    def __init__(self, model: str, version: int | None, capacity: int) -> None:
        self.model = model
        self.version = version
        self.n = 0
        self.latency = np.empty(capacity, dtype=np.float64)
        self.rows = np.empty(capacity, dtype=np.int64)
        self.ts = np.empty(capacity, dtype=np.float64)
        self.errors: list[str | None] = []
        self.request_ids: list[str | None] = []
        self.traceparents: list[str | None] = []
        self.inputs: list[dict] = []
        self.outputs: list[Any] = []

    def to_batch(self) -> Any:
        """The :class:`~mlops_core.entities.PredictionBatch` of this buffer (on the dispatcher thread)."""
        from mlops_core.entities import PredictionBatch

        n = self.n
        names_in: dict[str, None] = {}
        for call in self.inputs:
            names_in.update(dict.fromkeys(call))
        outputs = [dict(o) if not isinstance(o, dict) else o for o in self.outputs]
        names_out: dict[str, None] = {}
        for call in outputs:
            names_out.update(dict.fromkeys(call))
        return PredictionBatch(
            model=self.model, version=self.version, count=n, latency_s=self.latency[:n], batch_size=self.rows[:n],
            timestamp=self.ts[:n], errors=self.errors, request_ids=self.request_ids,
            inputs={name: [call.get(name) for call in self.inputs] for name in names_in},
            outputs={name: [call.get(name) for call in outputs] for name in names_out},
            traceparents=self.traceparents)


class _EventDispatcher:
    """Hands whole buffers of served calls to the plugins on one background thread.

    The request path (on the event loop) writes one call into the model's
    :class:`_CallBuffer`: three numpy stores and a few list appends, no lock, no
    object per call, no thread wake-up. A full buffer, or one ``FLUSH_S`` old, is
    queued for the thread, which turns it into one ``PredictionBatch`` and calls
    ``hooks.predictions_batch`` once (plugins that take only single events get
    them one by one from the core's facade). Waking a thread per event made the
    handover the largest part of the monitoring overhead; building an event and
    broadcasting it per call was the next. When listeners fall behind by more
    than ``max_pending`` buffers, new buffers are dropped and counted.
    """

    #: A buffer is handed over at most this long after its first call: monitors see calls this late
    #: (no metric scrape or drift window notices 1 s). Each hand-off wakes the dispatcher thread and,
    #: through it, each monitor's thread: every wake-up is a GIL hand-over, and on a busy machine the
    #: woken thread can be descheduled while it holds the GIL, stalling the event loop. With 0.2 s
    #: these stalls were the largest share of the overhead left at c=32 (py-spy, --gil); fewer,
    #: larger batches also cut the monitors' fixed per-batch work.
    FLUSH_S = 1.0
    CAPACITY = 4096

    def __init__(self, hooks: Any, metrics: ServerMetrics, loop: asyncio.AbstractEventLoop | None,
                 max_pending: int = 64) -> None:
        self._hooks = hooks
        self._metrics = metrics
        self._loop = loop
        self._max_pending = max_pending
        self._buffers: dict[tuple[str, int | None], _CallBuffer] = {}
        self._pending: deque[_CallBuffer] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="mlops-prediction-events", daemon=True)
        self._thread.start()

    # -------------------------------------------------- event loop side
    def add(self, model: str, version: int | None, arrays: dict, outputs: Any, elapsed: float, rows: int,
            error: str | None, request_id: str | None, traceparent: str | None) -> None:
        key = (model, version)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = _CallBuffer(model, version, self.CAPACITY)
        i = buf.n
        buf.latency[i] = elapsed
        buf.rows[i] = rows
        buf.ts[i] = time.time()
        buf.errors.append(error)
        buf.request_ids.append(request_id)
        buf.traceparents.append(traceparent)
        buf.inputs.append(arrays)
        buf.outputs.append(outputs)
        buf.n = i + 1
        if i == 0:
            loop = self._loop
            if loop is not None:
                loop.call_later(self.FLUSH_S, self._flush_if_current, key, buf)
            else:  # no loop known (tests driving the app directly): hand over call by call
                self._hand_off(key)
                return
        if buf.n >= self.CAPACITY:
            self._hand_off(key)

    def _flush_if_current(self, key: tuple[str, int | None], buf: _CallBuffer) -> None:
        if self._buffers.get(key) is buf and buf.n:
            self._hand_off(key)

    def _hand_off(self, key: tuple[str, int | None]) -> None:
        buf = self._buffers.pop(key)
        if len(self._pending) >= self._max_pending:
            self._metrics.hook_events_dropped += buf.n
            return
        self._metrics.hook_events += buf.n
        self._pending.append(buf)
        self._wake.set()

    def flush(self) -> None:
        """Hand every partly filled buffer over now (on the loop, at shutdown)."""
        for key in list(self._buffers):
            if self._buffers[key].n:
                self._hand_off(key)

    # ------------------------------------------------------ thread side
    def _run(self) -> None:
        pending = self._pending
        hooks = self._hooks
        batch_api = hasattr(hooks, "predictions_batch")
        while True:
            self._wake.wait()
            self._wake.clear()
            while pending:
                buf = pending.popleft()
                try:
                    batch = buf.to_batch()
                    if batch_api:
                        hooks.predictions_batch(batch)
                    else:  # pragma: no cover - a core without batch delivery
                        for event in batch.events():
                            hooks.predictions_served(event)
                except BaseException:  # the facade isolates plugins already; this guards the thread itself
                    log.exception("delivering prediction events failed")
            if self._closing:
                return

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (within ``timeout``), then stop the thread."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)


class ModelServerApp:
    """ASGI app serving a set of :class:`ServedModel`."""

    def __init__(self, config: ServerConfig, models: list[ServedModel] | None = None, *, preloaded: bool = False,
                 events: Any = None) -> None:
        self.config = config
        #: The stack's event dispatcher (its monitors and the installed plugins); None: the installed plugins'.
        self._events = events
        if models is None:
            models = [ServedModel(b.path, name=b.name, version=b.version, threads=config.threads,
                                  executor=config.executor) for b in config.bundles]
        self.models = models
        self.by_name = {m.name: m for m in models}
        if len(self.by_name) != len(models):
            raise ValueError("two bundles are served under the same model name; give them distinct --name")
        self.preloaded = preloaded
        self.metrics = ServerMetrics()
        self.pending = 0  # requests admitted to a model queue or thread and not finished
        self.timeout = config.timeout
        self.max_body = config.max_body_bytes
        self.max_queue = config.max_queue
        self.reader = BodyReader(config.max_body_bytes, config.max_inflight_body_bytes, self.metrics)
        self._auth: Any = None
        if config.auth_token:
            from .security import Authenticator

            self._auth = Authenticator(config.auth_token, config.public_health)
        self._parse_pool: Any = None  # threads that decode large bodies, off the event loop
        self._listening = False
        self._hooks: Any = None
        self._dispatcher: _EventDispatcher | None = None
        self._generation: int | None = None  # hooks.generation when listeners were last checked
        self._versions: dict[str, int | None] = {}
        self._access_log = config.log_format == "json"
        self._access = logging.getLogger("mlops_server.access")
        self._loader: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server_meta = codec.dumps({"name": "mlops-server", "version": __version__,
                                         "extensions": ["binary_tensor_data", "model_metadata_state"]})
        if preloaded:
            self._attach_batchers()

    # ------------------------------------------------------------ lifecycle
    @property
    def ready(self) -> bool:
        return all(m.ready for m in self.models) and bool(self.models)

    def load_models(self) -> None:
        """Load every model (blocking); failures stay recorded on the model."""
        for m in self.models:
            m.load()
        self._attach_batchers()
        # Objects alive now (models, libraries) live as long as the process: keep them out of
        # the collector's way so full collections stay short on the hot path.
        import gc

        gc.collect()
        gc.freeze()
        failed = [m for m in self.models if not m.ready]
        if failed:
            log.error("not ready: %s", "; ".join(f"{m.name}: {m.error}" for m in failed))

    def _attach_batchers(self) -> None:
        if self.config.batching:
            for m in self.models:
                if m.ready and m.batcher is None and self._batchable(m):
                    m.batcher = AdaptiveBatcher(m, self.config.max_batch_size, self.config.max_batch_wait_ms / 1000)

    @staticmethod
    def _batchable(m: ServedModel) -> bool:
        # Every input must have a variable first (batch) dimension; without a signature we cannot know.
        return bool(m.inputs) and all(len(t.shape) >= 1 and t.shape[0] == -1 for t in m.inputs.values())

    async def startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            from mlops_core.plugins import get_plugin_manager

            self._hooks = self._events if self._events is not None else get_plugin_manager().hooks
        except Exception:  # pragma: no cover - the core is a hard dependency
            log.exception("plugin manager unavailable; prediction events are off")
        self._check_listeners()
        if not self.preloaded:
            # Serve liveness (and honest "not ready") while models load.
            self._loader = threading.Thread(target=self.load_models, name="mlops-model-loader", daemon=True)
            self._loader.start()

    def _listens(self) -> bool:
        """Per answered request: the cached answer unless a plugin was (un)registered since."""
        hooks = self._hooks
        if hooks is None:
            return False
        if getattr(hooks, "generation", None) == self._generation:
            return self._listening
        return self._check_listeners()

    def _check_listeners(self) -> bool:
        """Whether a plugin listens for prediction events; re-asked only when plugins changed.

        ``hooks.generation`` changes on every plugin (un)registration, so the per-request
        cost is one integer compare; a monitor registered at any time is seen by the
        next request.
        """
        hooks = self._hooks
        if hooks is None:
            return False
        self._generation = getattr(hooks, "generation", None)  # None with a core that has no counter: ask once
        try:
            ask = getattr(hooks, "has_prediction_listeners", None)
            self._listening = ask() if ask is not None else hooks.has_listeners(_HOOK)
        except Exception:
            self._listening = False
        if self._listening and self._dispatcher is None:
            self._dispatcher = _EventDispatcher(hooks, self.metrics, self._loop)
        return self._listening

    async def shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.flush()
            await asyncio.get_running_loop().run_in_executor(None, self._dispatcher.close)
        for m in self.models:
            m.close()
        if self._parse_pool is not None:
            self._parse_pool.shutdown(wait=False)

    # -------------------------------------------------------------- ASGI
    async def __call__(self, scope: dict, receive: Callable, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Callable, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict, receive: Callable, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if self._auth is not None and not self._auth.allows(path, scope["headers"]):
                raise HttpError(401, "this server requires 'Authorization: Bearer <token>'",
                                [(b"www-authenticate", b'Bearer realm="mlops-server"')])
            if method == "POST":
                if path.startswith("/v2/models/") and path.endswith("/infer"):
                    await self._infer(path, scope, receive, send)
                    return
                if path == "/invocations":
                    await self._invocations(scope, receive, send)
                    return
            elif method in ("GET", "HEAD"):
                await self._get(path, send)
                return
            if path in ("/v2", "/v2/health/live", "/v2/health/ready", "/metrics", "/ping", "/health", "/version") \
                    or path.startswith("/v2/models/"):
                allowed = b"POST" if path.endswith("/infer") else b"GET, HEAD"
                raise HttpError(405, f"method {method} not allowed on {path}", [(b"allow", allowed)])
            raise HttpError(404, f"no route {method} {path}")
        except HttpError as exc:
            await _respond(send, exc.status, _error(exc.message), extra=exc.headers)
        except Exception as exc:  # a bug of ours: still answer, and say so in the log
            log.exception("unexpected error on %s %s", method, path)
            await _respond(send, 500, _error(f"internal server error: {type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------ GET
    async def _get(self, path: str, send: Send) -> None:
        if path == "/v2/health/ready":
            ok = self.ready
            await _respond(send, 200 if ok else 503, b'{"ready":true}' if ok else b'{"ready":false}')
        elif path == "/v2/health/live":
            await _respond(send, 200, b'{"live":true}')
        elif path == "/v2" or path == "/v2/":
            await _respond(send, 200, self._server_meta)
        elif path == "/metrics":
            text = self.metrics.render(self.models, self.pending, [m.batcher for m in self.models if m.batcher])
            if self._hooks is not None:
                try:
                    text += self._hooks.collect_metrics()
                except Exception:
                    log.exception("a plugin failed in mlops_collect_metrics")
            await _respond(send, 200, text.encode("utf-8"), content_type=_PROM)
        elif path in ("/ping", "/health"):
            ok = self.ready
            await _respond(send, 200 if ok else 503, b"\n" if ok else b'{"ready":false}\n')
        elif path == "/version":
            await _respond(send, 200, __version__.encode())
        elif path.startswith("/v2/models/"):
            model, rest = self._route_model(path)
            if rest == "":
                await _respond(send, 200, codec.dumps(model.metadata()))
            elif rest == "/ready":
                body = {"name": model.name, "ready": model.ready}
                if model.error:
                    body["error"] = model.error
                await _respond(send, 200 if model.ready else 503, codec.dumps(body))
            elif rest == "/infer":
                raise HttpError(405, f"use POST for {path}", [(b"allow", b"POST")])
            else:
                raise HttpError(404, f"no route GET {path}")
        else:
            raise HttpError(404, f"no route GET {path}")

    def _route_model(self, path: str) -> tuple[ServedModel, str]:
        """``/v2/models/{name}[/versions/{v}]{rest}`` -> (model, rest)."""
        tail = path[len("/v2/models/"):]
        name, sep, rest = tail.partition("/")
        rest = sep + rest
        model = self.by_name.get(name)
        if model is None:
            known = ", ".join(sorted(self.by_name)) or "none"
            raise HttpError(404, f"unknown model {name!r}; this server serves: {known}"[:500])
        if rest.startswith("/versions/"):
            version, sep, rest = rest[len("/versions/"):].partition("/")
            rest = sep + rest
            if version != (model.version or ""):
                have = model.version or "no version"
                raise HttpError(404, f"model {name!r} has no version {version!r} here (serving {have})"[:500])
        return model, rest

    # ------------------------------------------------------------ bodies
    async def _off_loop(self, size: int, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (decoding a body) on a worker thread when the body is large, so the loop keeps serving."""
        if size < LARGE_BODY:
            return fn()
        if self._parse_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._parse_pool = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="mlops-parse")
        loop = self._loop or asyncio.get_running_loop()
        return await loop.run_in_executor(self._parse_pool, fn)

    # ------------------------------------------------------------ predict
    async def _run_model(self, model: ServedModel, arrays: dict[str, np.ndarray], rows: int) -> list:
        """Predict through the batcher, inline on the loop, or in the model's thread pool."""
        batcher = model.batcher
        if batcher is None and model.runs_inline(rows):
            return model.predict(arrays)  # fast model, small request: no thread hop, no queue
        if self.pending >= self.max_queue:
            self.metrics.shed += 1
            raise HttpError(503, f"server overloaded: {self.pending} requests already queued (limit "
                                 f"{self.max_queue}); retry later", [(b"retry-after", b"1")])
        self.pending += 1
        if batcher is not None:
            fut: asyncio.Future = batcher.submit(arrays, rows)
            try:
                if fut.done():
                    return fut.result()
                return await (asyncio.wait_for(fut, self.timeout) if self.timeout else fut)
            except asyncio.TimeoutError:
                self.metrics.timeouts += 1
                raise HttpError(504, f"prediction timed out after {self.timeout:g} s") from None
            finally:
                self.pending -= 1
        loop = self._loop or asyncio.get_running_loop()
        cf = model.executor.submit(model.predict, arrays)
        # The slot frees when the thread is really done, not when the client stops waiting.
        cf.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._release))
        try:
            wrapped = asyncio.wrap_future(cf, loop=loop)
            return await (asyncio.wait_for(wrapped, self.timeout) if self.timeout else wrapped)
        except asyncio.TimeoutError:
            self.metrics.timeouts += 1
            raise HttpError(504, f"prediction timed out after {self.timeout:g} s") from None

    def _release(self) -> None:
        self.pending -= 1

    def _check_ready(self, model: ServedModel) -> None:
        if not model.ready:
            why = f": {model.error}" if model.error else " (still loading)"
            raise HttpError(503, f"model {model.name!r} is not ready{why}"[:2000], [(b"retry-after", b"1")])

    async def _predict(self, model: ServedModel, arrays: dict[str, np.ndarray], rows: int) -> list:
        try:
            return await self._run_model(model, arrays, rows)
        except (HttpError, asyncio.CancelledError):
            raise
        except (ValueError, TypeError, KeyError, IndexError, TensorError) as exc:
            # The input passed the signature but the model refused it (NaN, unseen category...).
            raise HttpError(400, f"model {model.name!r} could not predict on this input: "
                                 f"{type(exc).__name__}: {exc}"[:2000]) from None
        except Exception as exc:
            log.exception("model %r raised while predicting", model.name)
            raise HttpError(500, f"model {model.name!r} failed: {type(exc).__name__}: {exc}"[:2000]) from None

    async def _infer(self, path: str, scope: dict, receive: Callable, send: Send) -> None:
        start = time.perf_counter()
        model, rest = self._route_model(path)
        if rest != "/infer":
            raise HttpError(404, f"no route POST {path}")
        status = 500
        rows = 0
        reserved = 0
        request_id = traceparent = None
        try:
            self._check_ready(model)
            body, headers, reserved = await self.reader.read(scope, receive)
            request_id, traceparent = _request_ids(headers)
            header_length = headers.get(b"inference-header-content-length")
            request, arrays = await self._off_loop(len(body), partial(decode_request, model, body, header_length))
            del body  # the arrays hold the data now; let a large body go before predicting
            if request_id is None:
                request_id = request.get("id")
            elif "id" not in request:
                request["id"] = request_id  # the V2 response echoes it
            rows = model.rows(arrays)
            try:
                outputs = await self._predict(model, arrays, rows)
            except HttpError as exc:
                self._emit_failure(model, arrays, start, rows, exc, request_id, traceparent)
                raise
            payload, chunks, json_len = encode_response(model, request, outputs)
            extra = _rid_header(request_id)
            if chunks:
                extra = (extra or []) + [(b"inference-header-content-length", str(json_len).encode())]
                await _respond(send, 200, payload, content_type=b"application/octet-stream", extra=extra)
            else:
                await _respond(send, 200, payload, extra=extra)
            status = 200
        except HttpError as exc:
            status = exc.status
            exc.headers.extend(_rid_header(request_id) or ())
            raise
        finally:
            self.reader.release(reserved)
            elapsed = time.perf_counter() - start
            self.metrics.observe(model.name, "infer", status, elapsed, rows)
            if self._access_log:
                self._log_request(model, "infer", status, elapsed, rows, request_id)
        if self._listens():
            self._emit(model, arrays, outputs, elapsed, rows, None, request_id, traceparent)

    async def _invocations(self, scope: dict, receive: Callable, send: Send) -> None:
        start = time.perf_counter()
        if len(self.models) != 1:
            raise HttpError(400, "/invocations needs a server with exactly one model; "
                                 "use /v2/models/{name}/infer")
        model = self.models[0]
        status = 500
        rows = 0
        reserved = 0
        request_id = traceparent = None
        try:
            self._check_ready(model)
            body, headers, reserved = await self.reader.read(scope, receive)
            request_id, traceparent = _request_ids(headers)
            ctype = headers.get(b"content-type", b"application/json").decode("latin-1").lower()
            arrays = await self._off_loop(len(body), partial(_invocation_arrays, model, body, ctype))
            del body
            rows = model.rows(arrays)
            try:
                outputs = await self._predict(model, arrays, rows)
            except HttpError as exc:
                self._emit_failure(model, arrays, start, rows, exc, request_id, traceparent)
                raise
            await _respond(send, 200, codec.dumps(predictions_body(outputs)),
                           extra=_rid_header(request_id))
            status = 200
        except HttpError as exc:
            status = exc.status
            exc.headers.extend(_rid_header(request_id) or ())
            raise
        finally:
            self.reader.release(reserved)
            elapsed = time.perf_counter() - start
            self.metrics.observe(model.name, "invocations", status, elapsed, rows)
            if self._access_log:
                self._log_request(model, "invocations", status, elapsed, rows, request_id)
        if self._listens():
            self._emit(model, arrays, outputs, elapsed, rows, None, request_id, traceparent)

    def _log_request(self, model: ServedModel, route: str, status: int, elapsed: float, rows: int,
                     request_id: str | None) -> None:
        """One JSON access record per request (``log_format = "json"``)."""
        try:
            self._access.info("request", extra={"fields": {
                "model": model.name, "version": model.version, "route": route, "status": status,
                "request_id": request_id, "latency_ms": round(elapsed * 1000, 3), "rows": rows}})
        except Exception:  # never let logging hurt serving
            pass

    def _emit(self, model: ServedModel, arrays: dict, outputs: Any, elapsed: float, rows: int,
              error: str | None = None, request_id: str | None = None, traceparent: str | None = None) -> None:
        try:
            version = self._versions.get(model.name, -1)
            if version == -1:
                version = self._versions[model.name] = (int(model.version) if model.version
                                                        and model.version.isdigit() else None)
            assert self._dispatcher is not None
            self._dispatcher.add(model.name, version, arrays, outputs, elapsed, rows, error, request_id, traceparent)
        except Exception:  # never let monitoring hurt serving
            log.exception("could not queue a prediction event")

    def _emit_failure(self, model: ServedModel, arrays: dict, start: float, rows: int, exc: HttpError,
                      request_id: str | None = None, traceparent: str | None = None) -> None:
        """A prediction that passed validation but got no answer: the model raised, timed out, or was shed."""
        if self._listens():
            self._emit(model, arrays, [], time.perf_counter() - start, rows, exc.message, request_id, traceparent)


# ------------------------------------------------------------------ helpers
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_REQUEST_ID = re.compile(r"^[!-~]{1,200}$")  # printable ASCII, no spaces: safe to echo in a header


def _request_ids(headers: dict) -> tuple[str | None, str | None]:
    """(request id, traceparent) of a call: ``X-Request-ID``, else the W3C trace id of ``traceparent``."""
    traceparent = headers.get(b"traceparent")
    if traceparent is not None:
        traceparent = traceparent.decode("latin-1").strip().lower()
        match = _TRACEPARENT.match(traceparent)
        if match is None or match.group(1) == "0" * 32:
            traceparent = None
    rid = headers.get(b"x-request-id")
    if rid is not None:
        rid = rid.decode("latin-1").strip()
        if not _REQUEST_ID.match(rid):
            rid = None
    if rid is None and traceparent is not None:
        rid = traceparent[3:35]
    return rid, traceparent


def _rid_header(request_id: str | None) -> list[tuple[bytes, bytes]] | None:
    if request_id is None or not _REQUEST_ID.match(request_id):
        return None
    return [(b"x-request-id", request_id.encode("ascii"))]


#: Threads decoding large bodies (each holds the GIL only in short stretches: numpy, orjson pieces).
PARSE_THREADS = 2


def _invocation_arrays(model: ServedModel, body: Any, content_type: str) -> dict[str, np.ndarray]:
    try:
        raw = parse_invocation(model, body, content_type)
        return model.check_inputs([(n, codec.datatype_of(a.dtype), a) for n, a in raw.items()])
    except (RequestError, TensorError) as exc:
        raise HttpError(400, str(exc)) from None
    except (ValueError, TypeError, OverflowError) as exc:  # numpy refusing a malformed table
        raise HttpError(400, f"cannot read the request as a table: {exc}"[:500]) from None
