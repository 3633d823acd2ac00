"""The one user-facing error hierarchy.

Every expected failure raises a subclass of :class:`MlopsError`. The message says
what went wrong *and what to do about it*; the CLI prints it without a traceback
and exits with the class's ``exit_code`` (documented in ``docs/cli.md``).
"""

from __future__ import annotations

__all__ = [
    "MlopsError",
    "ConfigError",
    "PluginError",
    "BackendNotFoundError",
    "NotFoundError",
    "AlreadyExistsError",
    "IntegrityError",
    "InvalidInputError",
    "BackendUnavailableError",
]


class MlopsError(Exception):
    """Base of every error mlops-core raises on purpose."""

    #: Process exit code the CLI uses for this kind of error.
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)


class InvalidInputError(MlopsError, ValueError):
    """The caller passed something malformed (a bad name, URI, signature, tensor...)."""

    exit_code = 2


class ConfigError(MlopsError):
    """The stack configuration (``mlops.toml`` or environment) is wrong."""

    exit_code = 3


class PluginError(MlopsError):
    """A plugin failed to load, or two plugins disagree (for example a duplicate backend name)."""

    exit_code = 4


class BackendNotFoundError(ConfigError):
    """The stack names a backend that no installed plugin offers."""


class NotFoundError(MlopsError, LookupError):
    """A model, version, alias, artifact or deployment does not exist."""

    exit_code = 5


class AlreadyExistsError(MlopsError):
    """Creating something that already exists (and overwriting was not asked for)."""

    exit_code = 6


class IntegrityError(MlopsError):
    """Stored bytes do not match their recorded digest: a tampered or truncated artifact."""

    exit_code = 7


class BackendUnavailableError(MlopsError):
    """A backend service (database, object store, registry, engine) cannot be reached."""

    exit_code = 8
