"""pytest plugin for the compliance suite run: starts a broker before
SQLAlchemy's plugin reads its database URL, points --dburi at it, prepares
the schemas the suite expects, prints the passed/failed/skipped counts, and
stops the broker at the end.

SQLAlchemy's plugin resolves --dburi at session start (plugin_base's
post-configure steps), so setting the option in pytest_configure is early
enough. The broker is the one client/python/tests/conftest.py starts for the other
Python tests (its BrokerProcess: SB_BROKER_BINARY serving
SB_TEST_DATABASE_URL; both are required, the run fails without them, never
skips); that conftest is loaded here as a plain module, because this run's
rootdir (this folder's setup.cfg) keeps pytest from loading it as a conftest.
Single-threaded, like pytest.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Optional

import pytest

_PYTHON_TESTS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _python_tests_conftest() -> Any:
    """client/python/tests/conftest.py (it also generates the gRPC stubs)."""
    spec = importlib.util.spec_from_file_location(
        "sessionbroker_python_tests_conftest", os.path.join(_PYTHON_TESTS, "conftest.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_broker: Optional[Any] = None

# The suite reflects "every table in the schema", so it runs in a database
# of its own, created for the run and dropped after it; no other test's
# tables can show up in its reflection.
_DATABASE = "sb_sqla_suite"

# The suite drops and recreates tables of the same name with other column
# types from one test to the next. A statement the broker has prepared on a
# pooled connection then fails once with 0A000 "cached plan must not change
# result type" inside a transaction (docs/design.md, statement cache;
# docs/clients.md says what applications see after a migration). The suite
# runs with the broker's statement cache off so that each test sees only its
# own behaviour; tests/sqlalchemy/test_dialect.py specifies the cached case.
_SUITE_BROKER_ENV = {"BROKER_STATEMENT_CACHE_SIZE": "0"}


def _admin_execute(database_url: str, *statements: str) -> None:
    """Runs `statements` in autocommit straight on PostgreSQL (psycopg2)."""
    import psycopg2

    connection = psycopg2.connect(database_url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()

# The schemas SQLAlchemy's suite creates objects in (requirements.schemas).
_SCHEMAS = ("test_schema", "test_schema_2")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    global _broker
    if getattr(config.option, "dburi", None):
        return  # an explicit --dburi: run against that instead
    from sqlalchemy.engine import make_url

    tests = _python_tests_conftest()
    for name in ("SB_TEST_DATABASE_URL", "SB_BROKER_BINARY"):
        if not os.environ.get(name):
            # A usage error (exit status 4): the run fails, it never skips.
            raise pytest.UsageError(
                "%s is not set: the compliance suite needs a live PostgreSQL "
                "(SB_TEST_DATABASE_URL) and the broker binary (SB_BROKER_BINARY)" % name
            )
    admin_url = os.environ["SB_TEST_DATABASE_URL"]
    _admin_execute(
        admin_url,
        "DROP DATABASE IF EXISTS %s WITH (FORCE)" % _DATABASE,
        "CREATE DATABASE %s" % _DATABASE,
    )
    config._sb_admin_url = admin_url
    suite_url = make_url(admin_url).set(database=_DATABASE).render_as_string(hide_password=False)
    _broker = tests.BrokerProcess(
        os.environ["SB_BROKER_BINARY"],
        suite_url,
        dict(tests.TEST_BROKER_ENV, **_SUITE_BROKER_ENV),
    )
    url = "postgresql+sessionbroker://%s/" % _broker.target
    config.option.dburi = [url, url.replace("+sessionbroker:", "+sessionbroker_async:")]
    import sqlalchemy

    import sessionbroker.sqlalchemy  # noqa: F401

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        for schema in _SCHEMAS:
            connection.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS %s" % schema)
    engine.dispose()


def pytest_unconfigure(config: pytest.Config) -> None:
    global _broker
    if _broker is not None:
        _broker.stop()
        _broker = None
        _admin_execute(config._sb_admin_url, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % _DATABASE)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    counts = {
        key: len(terminalreporter.stats.get(key, []))
        for key in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
    }
    terminalreporter.write_line(
        "sqlalchemy dialect compliance suite "
        "(postgresql+sessionbroker, postgresql+sessionbroker_async): "
        + ", ".join("%s=%d" % item for item in counts.items())
    )
