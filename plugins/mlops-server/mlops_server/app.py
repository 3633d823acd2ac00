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


class _EventDispatcher:
    """Delivers prediction events to plugins on one background thread, so a slow listener never stalls serving.

    The request path only appends to a deque (atomic under the GIL, no lock) and
    wakes the thread when it is idle; the thread then drains everything queued in
    one go, at most every ``BATCH_DELAY_S``. Waking a thread per event (a
    ``queue.Queue``) made the handover the largest part of the monitoring overhead.
    The buffer is bounded: when listeners fall behind, events are dropped and counted.
    """

    #: After a wake-up, wait this long so a burst of requests is drained as one batch.
    #: Measured with a no-op listener at ~4,000 req/s: 2 ms cost ~50 us of server CPU
    #: per request (the thread contends for the GIL on every short drain), 50 ms ~19 us.
    #: Monitors see events at most this late, which no metric or drift window notices.
    BATCH_DELAY_S = 0.05

    def __init__(self, hooks: Any, metrics: ServerMetrics, maxsize: int = 10_000) -> None:
        self._hooks = hooks
        self._metrics = metrics
        self._maxsize = maxsize
        self._events: deque[tuple] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="mlops-prediction-events", daemon=True)
        self._thread.start()

    def emit(self, event_args: tuple) -> None:
        if len(self._events) >= self._maxsize:
            self._metrics.hook_events_dropped += 1
            return
        self._events.append(event_args)
        self._metrics.hook_events += 1
        if not self._wake.is_set():  # the thread is asleep: one wake-up per batch, not per event
            self._wake.set()

    def _run(self) -> None:
        from mlops_core.entities import PredictionEvent

        events = self._events
        while True:
            self._wake.wait()
            if not self._closing:
                time.sleep(self.BATCH_DELAY_S)
            self._wake.clear()
            while events:
                item = events.popleft()
                try:
                    self._hooks.predictions_served(PredictionEvent(*item))
                except BaseException:  # the facade isolates plugins already; this guards the thread itself
                    log.exception("delivering a prediction event failed")
            if self._closing:
                return

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (within ``timeout``), then stop the thread."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)


class ModelServerApp:
    """ASGI app serving a set of :class:`ServedModel`."""

    def __init__(self, config: ServerConfig, models: list[ServedModel] | None = None, *, preloaded: bool = False) -> None:
        self.config = config
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

            self._hooks = get_plugin_manager().hooks
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
            self._listening = hooks.has_listeners(_HOOK)
        except Exception:
            self._listening = False
        if self._listening and self._dispatcher is None:
            self._dispatcher = _EventDispatcher(hooks, self.metrics)
        return self._listening

    async def shutdown(self) -> None:
        if self._dispatcher is not None:
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
        try:
            self._check_ready(model)
            body, headers, reserved = await self.reader.read(scope, receive)
            header_length = headers.get(b"inference-header-content-length")
            request, arrays = await self._off_loop(len(body), partial(decode_request, model, body, header_length))
            del body  # the arrays hold the data now; let a large body go before predicting
            rows = model.rows(arrays)
            try:
                outputs = await self._predict(model, arrays, rows)
            except HttpError as exc:
                self._emit_failure(model, arrays, start, rows, exc)
                raise
            payload, chunks, json_len = encode_response(model, request, outputs)
            if chunks:
                await _respond(send, 200, payload, content_type=b"application/octet-stream",
                               extra=[(b"inference-header-content-length", str(json_len).encode())])
            else:
                await _respond(send, 200, payload)
            status = 200
        except HttpError as exc:
            status = exc.status
            raise
        finally:
            self.reader.release(reserved)
            elapsed = time.perf_counter() - start
            self.metrics.observe(model.name, "infer", status, elapsed, rows)
        if self._listens():
            self._emit(model, arrays, outputs, elapsed, rows)

    async def _invocations(self, scope: dict, receive: Callable, send: Send) -> None:
        start = time.perf_counter()
        if len(self.models) != 1:
            raise HttpError(400, "/invocations needs a server with exactly one model; "
                                 "use /v2/models/{name}/infer")
        model = self.models[0]
        status = 500
        rows = 0
        reserved = 0
        try:
            self._check_ready(model)
            body, headers, reserved = await self.reader.read(scope, receive)
            ctype = headers.get(b"content-type", b"application/json").decode("latin-1").lower()
            arrays = await self._off_loop(len(body), partial(_invocation_arrays, model, body, ctype))
            del body
            rows = model.rows(arrays)
            try:
                outputs = await self._predict(model, arrays, rows)
            except HttpError as exc:
                self._emit_failure(model, arrays, start, rows, exc)
                raise
            await _respond(send, 200, codec.dumps(predictions_body(outputs)))
            status = 200
        except HttpError as exc:
            status = exc.status
            raise
        finally:
            self.reader.release(reserved)
            elapsed = time.perf_counter() - start
            self.metrics.observe(model.name, "invocations", status, elapsed, rows)
        if self._listens():
            self._emit(model, arrays, outputs, elapsed, rows)

    def _emit(self, model: ServedModel, arrays: dict, outputs: Any, elapsed: float, rows: int,
              error: str | None = None) -> None:
        try:
            version = int(model.version) if model.version and model.version.isdigit() else None
            assert self._dispatcher is not None
            self._dispatcher.emit((model.name, version, arrays, dict(outputs), elapsed, rows, error, time.time()))
        except Exception:  # never let monitoring hurt serving
            log.exception("could not queue a prediction event")

    def _emit_failure(self, model: ServedModel, arrays: dict, start: float, rows: int, exc: HttpError) -> None:
        """A prediction that passed validation but got no answer: the model raised, timed out, or was shed."""
        if self._listens():
            self._emit(model, arrays, {}, time.perf_counter() - start, rows, exc.message)


# ------------------------------------------------------------------ helpers
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
