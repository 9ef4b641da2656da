"""Alembic (Debian's alembic package) upgrades and downgrades migrations
through the postgresql+sessionbroker dialect: DDL, an ENUM type, an identity
column, a bulk insert, a rename and a data backfill, each step checked by
reflecting the schema through the same dialect."""

from __future__ import annotations

import os
from decimal import Decimal

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alembic_fixture")


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", FIXTURE)
    config.attributes["connection"] = connection
    return config


def _run(engine: Engine, fn, revision: str) -> None:
    with engine.begin() as connection:
        fn(_config(connection), revision)


def _current(engine: Engine):
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _columns(engine: Engine, table: str):
    return [c["name"] for c in inspect(engine).get_columns(table)]


def _enum_exists(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text("SELECT count(*) FROM pg_type WHERE typname = 'mig_task_state'")
            ).scalar()
        )


def test_migrations_upgrade_and_downgrade_through_the_dialect(broker_engine: Engine) -> None:
    engine = broker_engine
    assert [s.revision for s in ScriptDirectory.from_config(_config(None)).walk_revisions()] == [
        "b2",
        "a1",
    ]
    _run(engine, command.downgrade, "base")  # a clean slate if a run was interrupted
    assert _current(engine) is None

    _run(engine, command.upgrade, "a1")
    assert _current(engine) == "a1"
    inspector = inspect(engine)
    assert {"mig_project", "mig_task", "alembic_version"} <= set(inspector.get_table_names())
    assert _columns(engine, "mig_project") == ["id", "name"]
    assert [i["name"] for i in inspector.get_indexes("mig_task")] == ["mig_task_project_idx"]
    fks = inspector.get_foreign_keys("mig_task")
    assert [(fk["referred_table"], fk["constrained_columns"]) for fk in fks] == [
        ("mig_project", ["project_id"])
    ]
    assert _enum_exists(engine)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO mig_task (project_id, state) VALUES (1, 'open')"))
        assert connection.execute(text("SELECT id, state FROM mig_task")).all() == [(1, "open")]

    _run(engine, command.upgrade, "head")
    assert _current(engine) == "b2"
    assert _columns(engine, "mig_project") == ["id", "title", "budget"]
    with engine.connect() as connection:
        assert connection.execute(
            text("SELECT title, budget FROM mig_project ORDER BY id")
        ).all() == [("broker", Decimal("1000.50")), ("dialect", Decimal("0.00"))]

    _run(engine, command.downgrade, "a1")
    assert _current(engine) == "a1"
    assert _columns(engine, "mig_project") == ["id", "name"]

    _run(engine, command.downgrade, "base")
    assert _current(engine) is None
    assert not {"mig_project", "mig_task"} & set(inspect(engine).get_table_names())
    assert not _enum_exists(engine)


def test_a_failing_migration_leaves_nothing_behind(broker_engine: Engine) -> None:
    """PostgreSQL's DDL is transactional, and so it stays through the broker:
    a migration that fails half-way is rolled back whole."""
    engine = broker_engine
    _run(engine, command.downgrade, "base")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE mig_task (blocker int)"))
    try:
        try:
            _run(engine, command.upgrade, "a1")
        except Exception as err:  # the CREATE TABLE mig_task fails
            assert getattr(err, "orig", None) is not None
            assert err.orig.pgcode == "42P07"
        else:
            raise AssertionError("the upgrade should have failed")
        assert _current(engine) is None
        assert "mig_project" not in inspect(engine).get_table_names()
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE mig_task"))
