"""Settings of the fsspec store, as the ``[storage]`` table of a stack file gives them."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["FsspecStorageConfig"]


def _check_url(_inst: Any, _attr: Any, value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"url must be a non-empty string (got {value!r})")


@attrs.frozen
class FsspecStorageConfig:
    """``url``: where the store's root is (default: the local folder ``<stack home>/artifacts``).

    ``storage_options``: keyword arguments for the fsspec filesystem, for example
    ``{"endpoint_url": "http://127.0.0.1:9000", "key": "...", "secret": "..."}`` for s3fs.
    """

    url: str | None = attrs.field(default=None, validator=_check_url)
    storage_options: dict[str, Any] = attrs.field(factory=dict, converter=dict)
