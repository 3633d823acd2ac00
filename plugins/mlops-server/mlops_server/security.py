"""Authentication (bearer token) and TLS settings of the server.

Where the token comes from, first found wins:

1. ``--auth-token-file FILE`` (the whole file, surrounding whitespace stripped);
2. the ``MLOPS_SERVER_AUTH_TOKEN`` environment variable;
3. the stack file's ``[server]`` table: ``auth_token_file = "..."`` (relative to the stack
   file) or ``auth_token = "..."``.

There is no ``--auth-token VALUE`` option on purpose: a command line is readable by every
local user (``ps``), which is what the token protects against. ``public_health`` (the
``--public-health`` flag, or ``public_health = true`` under ``[server]``) leaves the health
endpoints open for probes that cannot send a header.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any, Mapping

import attrs

from mlops_core.errors import ConfigError

__all__ = ["AuthSettings", "resolve_auth", "TOKEN_ENV", "Authenticator", "ssl_options"]

TOKEN_ENV = "MLOPS_SERVER_AUTH_TOKEN"
#: Paths a token-protected server still answers without the token when public_health is on.
HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/ping", "/health"})


@attrs.frozen
class AuthSettings:
    token: str | None = attrs.field(default=None, repr=False)
    public_health: bool = False
    source: str = "none"


def _read_token(path: Path, where: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the auth token file {path} ({where}): {exc}",
                          hint="give a readable file that holds only the token") from None
    if not token:
        raise ConfigError(f"the auth token file {path} ({where}) is empty", hint="write the token into it")
    return token


def _stack_server_table() -> tuple[Mapping[str, Any], Path | None]:
    """The ``[server]`` table of the stack file, if there is one (read as every mlops command reads it)."""
    from mlops_core.stack import find_config_file

    path = find_config_file()
    if path is None:
        return {}, None
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read stack file {path}: {exc}", hint="fix the TOML syntax") from None
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("mlops", {})
    table = data.get("server", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[server] in {path} must be a table", hint='for example:\n[server]\nauth_token_file = "token"')
    return table, path


def _readable_stack_table() -> tuple[Mapping[str, Any], Path | None]:
    """The ``[server]`` table, or nothing when the stack file cannot be read.

    An unreadable stack file only turns its settings off (logged), as it does for the
    monitors: the server still serves. A deployment that must never run without its
    token should give it with ``--auth-token-file`` or the environment variable, which do
    not depend on the stack file.
    """
    try:
        return _stack_server_table()
    except ConfigError as exc:
        import logging

        logging.getLogger("mlops_server").error(
            "cannot read the stack configuration, so its [server] settings (auth token) are not used: %s%s",
            exc, f" ({exc.hint})" if getattr(exc, "hint", None) else "")
        return {}, None


def resolve_auth(token_file: str | None, public_health: bool | None,
                 env: Mapping[str, str] | None = None) -> AuthSettings:
    """The token and health policy from the command line, the environment or the stack file."""
    env = os.environ if env is None else env
    table, stack_path = _readable_stack_table()
    if public_health is None:
        public_health = bool(table.get("public_health", False))
    if token_file:
        return AuthSettings(_read_token(Path(token_file), "--auth-token-file"), public_health, "file")
    if env.get(TOKEN_ENV):
        return AuthSettings(env[TOKEN_ENV].strip(), public_health, TOKEN_ENV)
    if "auth_token_file" in table:
        assert stack_path is not None
        path = Path(str(table["auth_token_file"]))
        if not path.is_absolute():
            path = stack_path.parent / path
        return AuthSettings(_read_token(path, f"[server] auth_token_file in {stack_path}"), public_health,
                            str(stack_path))
    if "auth_token" in table:
        token = table["auth_token"]
        if not isinstance(token, str) or not token.strip():
            raise ConfigError(f"[server] auth_token in {stack_path} must be a non-empty string")
        return AuthSettings(token.strip(), public_health, str(stack_path))
    return AuthSettings(None, public_health)


class Authenticator:
    """Checks ``Authorization: Bearer <token>`` in constant time."""

    def __init__(self, token: str, public_health: bool) -> None:
        self._expected = b"bearer " + token.encode("utf-8")
        self._public = HEALTH_PATHS if public_health else frozenset()

    def allows(self, path: str, headers: list[tuple[bytes, bytes]]) -> bool:
        if path in self._public:
            return True
        for name, value in headers:
            if name == b"authorization":
                # The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
                given = value[:7].lower() + value[7:]
                return hmac.compare_digest(given, self._expected)
        return False


def ssl_options(certfile: str | None, keyfile: str | None, client_ca: str | None) -> dict[str, Any]:
    """uvicorn ``Config`` keywords for TLS, and mutual TLS when ``client_ca`` is given."""
    if not certfile:
        return {}
    import ssl

    for what, path in (("certificate", certfile), ("key", keyfile), ("client CA", client_ca)):
        if path and not Path(path).is_file():
            raise ConfigError(f"the TLS {what} file {path} does not exist", hint="check the --tls-* paths")
    options: dict[str, Any] = {"ssl_certfile": certfile, "ssl_keyfile": keyfile}
    if client_ca:
        options["ssl_ca_certs"] = client_ca
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options
