"""Run the ASGI app under uvicorn (httptools parser, uvloop loop), one process or several.

Lifecycle of one server process:

1. Without ``--reuse-port`` or ``--listen-from``: bind at once, load models in the
   background. ``/v2/health/live`` answers 200 right away; ``/v2/health/ready``
   says 503 until every model is loaded and answered its warm-up prediction.
2. With ``--reuse-port`` or ``--listen-from`` (rolling updates: the next version
   starts while the old one still serves): load and warm up *first*, take the
   socket afterwards, so no connection ever waits on a process that cannot answer
   it. If a model fails to load the process exits with status 3 without listening.
3. SIGTERM or SIGINT: stop accepting (connections already queued on the
   listener are accepted first, then the listener closes), let in-flight
   requests finish (up to ``drain_timeout``), give idle keep-alive connections
   ``protocol.DRAIN_IDLE_S`` for a request already on its way, exit 0.

Connections are guarded by the limits of :mod:`.protocol` (header size and time,
body time, idle keep-alive, connection count); requests by the app's (body size,
in-flight body bytes, queue, timeout, optional bearer token); TLS and mutual TLS
come from uvicorn's ``ssl_*`` settings.

``workers > 1`` starts that many such processes under a small supervisor that
forwards SIGTERM and exits with the worst child status. With ``--listen-from``
every worker takes the same held socket; otherwise each binds the port with
SO_REUSEPORT (the kernel spreads connections).

Rolling updates (:data:`GRACEFUL_HANDOVER`): a socket holder
(``python -m mlops_server.holder``, started once per deployment) keeps the
listening socket, and each server takes it with ``--listen-from`` once ready
(see :mod:`.listener`). Old and new servers accept from one queue, and the queue
outlives any server, so the old one can stop at any moment without a connection
being reset. Together with the keep-alive drain, a client loses no request when
the old server stops, whether it keeps its connection or opens one per request.

The stack's monitors (``[[monitors]]`` or ``MLOPS_MONITORS``) are built in every
serving process before the models load, so they receive its prediction events
and add to ``/metrics``; they are closed (flushed) on exit. An unreadable stack
configuration only turns them off (logged); a configured monitor that cannot be
built stops the server with status 5, naming it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from typing import Any, Generator, Sequence

from .config import ServerConfig

log = logging.getLogger("mlops_server")

__all__ = ["serve", "bind_socket", "EXIT_LOAD_FAILED", "EXIT_MONITOR_FAILED", "GRACEFUL_HANDOVER"]

EXIT_LOAD_FAILED = 3
EXIT_BIND_FAILED = 4
EXIT_MONITOR_FAILED = 5

#: A server replaced by another one that shares its held socket (``--listen-from``) loses no
#: request: both accept from one queue that outlives them, queued connections are accepted before
#: a server lets go of the socket, idle keep-alive connections get a last request. With plain
#: ``--reuse-port`` the kernel spreads connections over the listeners, and a connection queued on
#: one in the instant it closes is reset (see :mod:`mlops_server.listener`).
GRACEFUL_HANDOVER = True


def bind_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """Bind and listen (SO_REUSEPORT with ``reuse_port``); the listening socket."""
    from .listener import bind_listener

    return bind_listener(host, port, reuse_port=reuse_port).sock


def _setup_logging(level: str, log_format: str = "text") -> None:
    if log_format == "json":
        from mlops_core.jsonlog import configure

        configure(level)
        return
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s", stream=sys.stderr)


def _uvicorn_server(app: Any, config: ServerConfig, listener: Any = None) -> Any:
    import asyncio
    import functools

    import uvicorn

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - Windows
        loop = "asyncio"
    from .protocol import ConnectionLimits, http_protocol_class
    from .security import ssl_options

    limits = ConnectionLimits(max_header_bytes=config.max_header_bytes, header_timeout=config.header_timeout,
                              body_timeout=config.body_timeout,
                              max_connections=config.max_connections or _default_max_connections())
    ucfg = uvicorn.Config(
        app, host=config.host, port=config.port, loop=loop, http=http_protocol_class(limits), lifespan="on",
        access_log=False, log_level=config.log_level, timeout_keep_alive=config.keep_alive,  # type: ignore[arg-type]
        timeout_graceful_shutdown=int(max(1, config.drain_timeout)), server_header=False, date_header=False,
        log_config=None, **ssl_options(config.tls_certfile, config.tls_keyfile, config.tls_client_ca),
    )

    class _Server(uvicorn.Server):
        # uvicorn re-raises the captured SIGTERM after a graceful shutdown, which makes the
        # exit status "killed by signal"; a drained server exits 0 instead.
        @contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn closes the listener at once, and the kernel resets every connection still
            # queued on it when this was its last descriptor. Accept those first, close, and serve
            # them like the others while draining.
            if listener is not None:
                loop = asyncio.get_running_loop()

                def close_listeners() -> None:
                    for server in getattr(self, "servers", []):
                        server.close()

                pending = listener.close(close_listeners)
                factory = functools.partial(self.config.http_protocol_class, config=self.config,
                                            server_state=self.server_state, app_state=self.lifespan.state,
                                            _loop=loop)
                for conn in pending:
                    try:
                        await loop.connect_accepted_socket(factory, conn, ssl=self.config.ssl)
                    except Exception as exc:  # noqa: BLE001 - one bad connection must not stop the drain
                        log.warning("could not serve a connection accepted while draining: %s", exc)
                        conn.close()
                sockets = []
            await super().shutdown(sockets=sockets)

    return _Server(ucfg)


#: File descriptors kept out of the connection limit: model files, threads' pipes, logs, the listener.
FD_RESERVE = 128


def _default_max_connections() -> int | None:
    """Raise the soft open-file limit to the hard one, and keep ``FD_RESERVE`` of it for the process itself."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return None
    return max(16, soft - FD_RESERVE)


def _start_monitors() -> tuple[Any, int | None]:
    """Build the stack's configured monitors in this process; (stack or None, exit status or None).

    ``mlops_core.api.get_stack()`` reads MLOPS_CONFIG / mlops.toml / MLOPS_HOME /
    MLOPS_MONITORS as every mlops command does. A stack that cannot be read turns
    monitoring off (logged) and the bundles are served all the same; a monitor that
    is configured but cannot be built is an error naming it (status 5): serving
    without the monitoring someone asked for would go unnoticed.
    """
    try:
        from mlops_core import api

        stack = api.get_stack()
    except Exception as exc:  # ConfigError, a broken stack file, an unreadable MLOPS_CONFIG...
        hint = getattr(exc, "hint", None)
        log.error("cannot read the stack configuration, so no stack monitor runs in this server: %s%s",
                  exc, f" ({hint})" if hint else "")
        return None, None
    configured = list(stack.config.monitors)
    if not configured:
        return stack, None
    try:
        monitors = stack.start_monitors()
    except Exception as exc:
        # start_monitors is all or nothing and names the monitor: "monitor #2 ('drift') ...".
        failed = next((f"{mc.backend!r} (monitor {i + 1} of {len(configured)})" for i, mc in enumerate(configured)
                       if f"#{i + 1} ({mc.backend!r})" in str(exc)),
                      ", ".join(repr(mc.backend) for mc in configured))
        hint = getattr(exc, "hint", None)
        log.error("the stack monitor %s configured in %s cannot be started: %s%s", failed, stack.config.source,
                  exc, f" ({hint})" if hint else "")
        return stack, EXIT_MONITOR_FAILED
    log.info("stack monitors: %s (from %s)", ", ".join(mc.backend for mc in configured), stack.config.source)
    _shorten_gil_switch_interval()
    del monitors
    return stack, None


#: How long a monitor's background thread may keep the GIL while the serving thread waits for it.
MONITOR_SWITCH_INTERVAL_S = 0.0005


def _shorten_gil_switch_interval() -> None:
    """Let the serving thread take the GIL back from monitor threads within 0.5 ms instead of 5 ms.

    Monitors work off the request path, on their own threads, once a second; but a
    thread holding the GIL keeps it for up to ``sys.getswitchinterval()`` (5 ms by
    default) while the event loop waits. With one connection, that put ~1% of calls
    behind a monitor's burst: p99 0.6 ms without monitors, 3.1 ms with the default
    monitors; 1.1 ms with this interval, throughput unchanged within noise
    (benchmarks/monitoring/bench_monitoring.py). ``MLOPS_SERVER_SWITCH_INTERVAL_S``
    sets another value (Python's default is 0.005).
    """
    value = os.environ.get("MLOPS_SERVER_SWITCH_INTERVAL_S")
    try:
        interval = float(value) if value else MONITOR_SWITCH_INTERVAL_S
        sys.setswitchinterval(interval)
    except ValueError as exc:
        log.warning("MLOPS_SERVER_SWITCH_INTERVAL_S=%r is not a positive number of seconds (%s); keeping %g s",
                    value, exc, sys.getswitchinterval())


def _close_stack(stack: Any) -> None:
    if stack is None:
        return
    try:
        from mlops_core import api

        api.set_stack(None)  # closes the process-wide stack: monitors flush and unregister
    except Exception:
        log.exception("closing the stack's monitors failed")


def serve_one(config: ServerConfig) -> int:
    """Run one server process until SIGTERM; returns the exit status."""
    _setup_logging(config.log_level, config.log_format)
    # A SIGTERM that arrives while models load (before uvicorn handles signals) must still end
    # the process cleanly, not kill it mid-way with "terminated by signal".
    stop: dict[str, Any] = {"requested": False, "server": None}

    def early_exit(sig: int, _frame: Any) -> None:
        stop["requested"] = True
        if stop["server"] is not None:
            stop["server"].should_exit = True

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, early_exit)
    stack, status = _start_monitors()
    try:
        if status is not None:
            return status
        return _serve_one(config, stop, stack.events if stack is not None else None)
    finally:
        _close_stack(stack)


def _serve_one(config: ServerConfig, stop: dict[str, Any], events: Any = None) -> int:
    from .app import ModelServerApp

    preload = config.reuse_port or config.listen_from is not None
    try:
        app = ModelServerApp(config, preloaded=preload, events=events)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if preload:
        app.load_models()
        if stop["requested"]:
            log.info("stopped before serving (signal received while loading)")
            return 0
        if not app.ready:
            log.error("not listening on %s:%s because a model failed to load (--reuse-port and --listen-from "
                      "load before listening)", config.host, config.port)
            return EXIT_LOAD_FAILED
    try:
        listener = _listener(config)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        return EXIT_BIND_FAILED
    try:
        server = _uvicorn_server(app, config, listener)
        stop["server"] = server
        if stop["requested"]:
            return 0
        log.info("mlops-server %s listening on http://%s:%s (%d model(s)%s)", _version(), config.host, config.port,
                 len(app.models), f", batching up to {config.max_batch_size} rows / {config.max_batch_wait_ms:g} ms"
                 if config.batching else "")
        server.run(sockets=[listener.sock])
        if not server.started:
            return EXIT_BIND_FAILED
    finally:
        for conn in listener.close():  # no-op after a normal shutdown
            conn.close()
    log.info("mlops-server drained and stopped")
    return 0


def _listener(config: ServerConfig) -> Any:
    from .listener import bind_listener, receive_listener

    if config.listen_from is not None:
        listener = receive_listener(config.listen_from, host=config.host, port=config.port)
        log.info("took the listening socket of %s:%s from the socket holder %s", config.host, config.port,
                 config.listen_from)
        return listener
    return bind_listener(config.host, config.port, reuse_port=config.reuse_port)


def _version() -> str:
    from ._version import __version__

    return __version__


def serve(config: ServerConfig, argv: Sequence[str] | None = None) -> int:
    """Serve with ``config.workers`` processes; ``argv`` re-creates the command line for the workers."""
    if config.workers <= 1:
        return serve_one(config)
    _setup_logging(config.log_level, config.log_format)
    if argv is None:
        raise ValueError("several workers need the command line to start them with")
    # With --listen-from every worker takes the holder's socket (argv keeps the flag); otherwise
    # each binds the port with SO_REUSEPORT and the kernel spreads connections over them.
    cmd = [sys.executable, "-m", "mlops_server", *_strip_workers(argv), "--workers", "1"]
    if config.listen_from is None:
        cmd.append("--reuse-port")
    # The token reaches the workers through their environment (readable only by this user), never argv.
    env = {**os.environ, "MLOPS_SERVER_AUTH_TOKEN": config.auth_token} if config.auth_token else None
    children = [subprocess.Popen(cmd, env=env) for _ in range(config.workers)]
    log.info("supervisor %d started %d workers: %s", os.getpid(), len(children), [c.pid for c in children])
    stopping = threading.Event()

    def forward(sig: int, _frame: Any) -> None:
        stopping.set()
        for c in children:
            if c.poll() is None:
                try:
                    c.send_signal(sig)
                except ProcessLookupError:
                    pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = []
    for c in children:
        while True:
            try:
                codes.append(c.wait())
                break
            except KeyboardInterrupt:  # pragma: no cover
                continue
        if not stopping.is_set():
            # One worker gone on its own: stop the others so the deployer sees a failure, not half a server.
            log.error("worker %d exited with %s; stopping the others", c.pid, codes[-1])
            forward(signal.SIGTERM, None)
    if stopping.is_set():
        # A worker still starting when we forwarded SIGTERM may die of the signal's default
        # action before installing its handler: that is the stop we asked for, not a failure.
        codes = [0 if c == -signal.SIGTERM else c for c in codes]
    return max((abs(c) for c in codes if c), default=0)


def _strip_workers(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers=") or arg == "--reuse-port":
            continue
        out.append(arg)
    return out
