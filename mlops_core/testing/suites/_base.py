"""What every conformance suite shares: capability flags, a per-test namespace, helpers.

Importing this module imports pytest: only test code imports the suites.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest

__all__ = ["ConformanceSuite", "declared_capabilities"]


class ConformanceSuite:
    """Base of the component suites (the fsspec abstract-test pattern).

    Subclass a suite in a ``test_*.py`` module as ``class TestMyThing(<Suite>)``
    and define one fixture, ``backend``, that returns (or yields, then closes) a
    fresh backend instance. Optional features are capability flags: class
    attributes listed in ``CAPABILITIES``; set one to False and the tests that
    need it skip, each with a reason naming the flag.
    """

    #: flag name -> what the backend promises when the flag is True.
    CAPABILITIES: ClassVar[dict[str, str]] = {}

    def require(self, flag: str) -> None:
        """Skip the running test unless the backend declares ``flag``."""
        if flag not in self.CAPABILITIES:
            raise AttributeError(f"{type(self).__name__} has no capability flag {flag!r}")
        if not getattr(self, flag):
            pytest.skip(f"{type(self).__name__}.{flag} is False: the backend does not claim that it "
                        f"{self.CAPABILITIES[flag]} (set {flag} = True to run this test)")

    @pytest.fixture
    def ns(self) -> str:
        """A fresh name prefix per test, so the suites also run against a shared, persistent backend."""
        return f"kit{uuid.uuid4().hex[:10]}"


def declared_capabilities(suite: type[ConformanceSuite]) -> dict[str, Any]:
    """The flags of a suite class and their values (for reports and docs)."""
    return {flag: getattr(suite, flag) for flag in suite.CAPABILITIES}
