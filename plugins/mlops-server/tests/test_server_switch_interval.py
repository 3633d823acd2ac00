"""A server with monitors shortens the GIL switch interval, so monitor bursts do not hold up requests."""

from __future__ import annotations

import sys

import pytest

from mlops_server import server


@pytest.fixture
def restore_interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_default_is_half_a_millisecond(monkeypatch, restore_interval):
    monkeypatch.delenv("MLOPS_SERVER_SWITCH_INTERVAL_S", raising=False)
    server._shorten_gil_switch_interval()
    assert sys.getswitchinterval() == pytest.approx(0.0005)


def test_the_environment_sets_another_value_and_a_bad_one_is_refused_with_a_warning(monkeypatch, caplog,
                                                                                     restore_interval):
    monkeypatch.setenv("MLOPS_SERVER_SWITCH_INTERVAL_S", "0.005")
    server._shorten_gil_switch_interval()
    assert sys.getswitchinterval() == pytest.approx(0.005)
    monkeypatch.setenv("MLOPS_SERVER_SWITCH_INTERVAL_S", "-1")
    server._shorten_gil_switch_interval()
    assert sys.getswitchinterval() == pytest.approx(0.005)  # kept
    assert "not a positive number of seconds" in caplog.text
