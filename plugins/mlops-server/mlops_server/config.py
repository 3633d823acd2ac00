"""Server settings, shared by ``python -m mlops_server``, ``mlops serve`` and the process deployer."""

from __future__ import annotations

import attrs

__all__ = ["ServerConfig", "BundleSpec"]


def _positive(_inst: object, attr: attrs.Attribute, value: float | int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attr.name} must be positive, got {value}")


@attrs.frozen
class BundleSpec:
    """A bundle folder to serve, under a name and optional version."""

    path: str
    name: str | None = None
    version: str | None = None


@attrs.frozen
class ServerConfig:
    """Everything one server process needs. Defaults suit a small model on a small machine."""

    bundles: tuple[BundleSpec, ...] = attrs.field(converter=tuple)
    host: str = "127.0.0.1"
    port: int = 8080
    reuse_port: bool = False
    workers: int = attrs.field(default=1, validator=_positive)
    #: Adaptive batching is off unless max_batch_size > 1.
    max_batch_size: int = attrs.field(default=1, validator=_positive)
    max_batch_wait_ms: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    #: Per-request prediction timeout in seconds (None: no timeout).
    timeout: float | None = attrs.field(default=None, validator=_positive)
    max_body_bytes: int = attrs.field(default=64 << 20, validator=_positive)
    #: Requests admitted to a model and not yet answered, beyond which new ones get 503 + Retry-After.
    max_queue: int = attrs.field(default=256, validator=_positive)
    #: "auto" runs fast models on the event loop and slow ones in threads.
    executor: str = attrs.field(default="auto", validator=attrs.validators.in_(("auto", "inline", "thread")))
    threads: int = attrs.field(default=1, validator=_positive)
    #: Seconds to let in-flight requests finish on SIGTERM before they are cancelled.
    drain_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Seconds an idle keep-alive connection stays open between two requests.
    keep_alive: float = attrs.field(default=5.0, validator=_positive)
    #: Largest request line + headers; larger gets 431 and the connection is closed.
    max_header_bytes: int = attrs.field(default=64 << 10, validator=_positive)
    #: Seconds from a connection's opening (or a request's first byte) to its complete headers; else 408.
    header_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Seconds from a request's headers to its complete body; else 408.
    body_timeout: float = attrs.field(default=60.0, validator=_positive)
    #: Open connections beyond which a request gets 503 + Retry-After (None: the file limit minus a reserve).
    max_connections: int | None = attrs.field(default=None, validator=_positive)
    #: Request bodies of at least LARGE_BODY bytes being read or parsed at once, in bytes, beyond which
    #: a large request gets 503 + Retry-After (bounds the memory that big requests take together).
    max_inflight_body_bytes: int = attrs.field(default=256 << 20, validator=_positive)
    #: Bearer token every request must carry (``Authorization: Bearer <token>``); None: no authentication.
    auth_token: str | None = attrs.field(default=None, repr=False)
    #: With a token: whether the health endpoints (/v2/health/*, /ping, /health) stay open (for probes).
    public_health: bool = False
    #: TLS: certificate chain and key (PEM); both or neither.
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    #: mTLS: CA bundle (PEM) that client certificates must chain to; clients without one are refused.
    tls_client_ca: str | None = None
    log_level: str = "info"
    #: "json": every log line, plus one record per request (model, version, request id, latency,
    #: status), as JSON objects on stdout for container and Kubernetes log collectors.
    log_format: str = attrs.field(default="text", validator=attrs.validators.in_(("text", "json")))
    #: Unix socket of a socket holder (``python -m mlops_server.holder``) that keeps the listening
    #: socket; the server asks it for the socket once its models are ready instead of binding
    #: (see mlops_server.listener). None: the server binds ``host:port`` itself.
    listen_from: str | None = None

    def __attrs_post_init__(self) -> None:
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("TLS needs both a certificate file and a key file")
        if self.tls_client_ca and not self.tls_certfile:
            raise ValueError("client certificates (mTLS) need TLS: give a certificate file and a key file too")
        if self.auth_token is not None and (not self.auth_token or any(c.isspace() for c in self.auth_token)):
            raise ValueError("the auth token must be non-empty and without whitespace")

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1
