"""Settings fields every batch engine shares, for engines' attrs config classes.

``mlops batch --address/--workers`` sets ``address`` and ``workers`` on whichever
engine is chosen, and settings from ``MLOPS_*`` environment variables arrive as
text, so every engine needs the same two fields with the same conversions. An
engine plugin declares them with :func:`address_field` and :func:`workers_field`
instead of writing its own converters::

    @attrs.frozen
    class MyEngineConfig:
        address: str | None = address_field()
        workers: int | None = workers_field()

The helpers below are public for an engine's other optional settings.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["address_field", "workers_field", "optional_text", "optional_int", "at_least"]


def optional_text(value: Any) -> str | None:
    """``None`` for an empty or missing value, the text otherwise."""
    return str(value) if value not in (None, "") else None


def optional_int(value: Any) -> int | None:
    """``None`` for an empty or missing value, an int otherwise (``"4"`` from the environment is 4)."""
    return None if value in (None, "") else int(value)


def at_least(n: int) -> Any:
    """An attrs validator: ``None``, or at least ``n`` (the error names the setting and the bound)."""
    def check(_instance: Any, attribute: Any, value: Any) -> None:
        if value is not None and value < n:
            raise ValueError(f"{attribute.name} must be at least {n}, got {value}")

    return check


def address_field() -> Any:
    """The cluster address (``--address``); ``None`` means the engine starts its own local cluster."""
    return attrs.field(default=None, converter=optional_text)


def workers_field() -> Any:
    """Worker processes or cores (``--workers``); ``None`` means the engine's default, else at least 1."""
    return attrs.field(default=None, converter=optional_int, validator=at_least(1))
