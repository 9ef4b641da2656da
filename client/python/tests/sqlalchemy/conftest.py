"""Fixtures of the SQLAlchemy tests: engines on postgresql+sessionbroker
(through the broker that tests/conftest.py's broker_target starts) and on
psycopg2 straight to SB_TEST_DATABASE_URL (for parity). The compliance suite
in suite/ runs separately (its own pytest run and conftest)."""

from __future__ import annotations

import os
import sys

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sessionbroker.sqlalchemy  # noqa: E402,F401  (registers the dialects)

collect_ignore = ["suite", "alembic_fixture"]


@pytest.fixture(scope="session")
def broker_url(broker_target) -> str:
    """postgresql+sessionbroker://HOST:PORT/ of the test broker."""
    return "postgresql+sessionbroker://%s/" % broker_target


@pytest.fixture
def broker_engine(broker_url: str):
    engine = create_engine(broker_url, future=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def module_broker_engine(broker_url: str):
    engine = create_engine(broker_url, future=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def psycopg2_url() -> str:
    """SB_TEST_DATABASE_URL for SQLAlchemy's psycopg2 dialect."""
    url = os.environ.get("SB_TEST_DATABASE_URL")
    if not url:
        pytest.fail("SB_TEST_DATABASE_URL is not set: these tests need a PostgreSQL")
    return str(make_url(url).set(drivername="postgresql+psycopg2"))


@pytest.fixture(scope="module")
def psycopg2_engine(psycopg2_url: str):
    engine = create_engine(psycopg2_url, future=True)
    yield engine
    engine.dispose()


@pytest.fixture
def one_connection_broker_url(broker_process):
    """A broker of its own with a pool of one database connection (so that a
    test knows which connection serves it); its URL."""
    broker = type(broker_process)(
        os.environ["SB_BROKER_BINARY"],
        os.environ["SB_TEST_DATABASE_URL"],
        {"DB_POOL_SIZE": "1", "DB_MAX_OVERFLOW": "0", "BROKER_DRAIN_SECONDS": "0"},
    )
    try:
        yield "postgresql+sessionbroker://%s/" % broker.target
    finally:
        broker.stop()
