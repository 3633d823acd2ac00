"""Settings of the fsspec store, as the ``[storage]`` table of a stack file gives them."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["FsspecStorageConfig"]


def _to_options(value: Any) -> dict[str, Any]:
    """A mapping, or a JSON object as text (what ``MLOPS_STORAGE__STORAGE_OPTIONS`` gives)."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ValueError(f"storage_options must be a table or a JSON object ({exc})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"storage_options must be a table or a JSON object, not {type(value).__name__}")
    return dict(value)


def _check_url(_inst: Any, _attr: Any, value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"url must be a non-empty string (got {value!r})")


@attrs.frozen
class FsspecStorageConfig:
    """``url``: where the store's root is (default: the local folder ``<stack home>/artifacts``).

    ``storage_options``: keyword arguments for the fsspec filesystem, for example
    ``{"endpoint_url": "http://127.0.0.1:9000", "key": "...", "secret": "..."}`` for s3fs.
    From the environment, give it as JSON text. A relative local ``url`` is taken from the
    stack file's folder (the current folder without a stack file).
    """

    url: str | None = attrs.field(default=None, validator=_check_url)
    storage_options: dict[str, Any] = attrs.field(factory=dict, converter=_to_options)
