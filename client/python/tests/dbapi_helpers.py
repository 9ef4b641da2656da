"""Helpers for the DB-API tests (imported by name: pytest puts this folder on
sys.path). Stateless; thread-safe."""

import time

import pytest


def wait_until(predicate, what: str, timeout: float = 30.0):
    """Polls predicate until it returns a true value (returned); fails after
    timeout with ``what``. For conditions the broker reaches on its own time
    (a lease running out, a transaction rolled back), never as a speed bound."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)
