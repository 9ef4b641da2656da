"""The postgresql+sessionbroker dialect: how it reads its URL, registers
itself, and does what only the DB-API layer decides (isolation, autocommit,
read-only, pinging and disconnects, native types, executemany, what it
refuses), against a live broker."""

from __future__ import annotations

import decimal
import uuid

import pytest
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    create_engine,
    exc,
    literal,
    select,
    text,
)
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from sessionbroker import dbapi
from sessionbroker.sqlalchemy.base import SessionBrokerDialect


def _connect_args(url: str):
    return SessionBrokerDialect().create_connect_args(make_url(url))


# ---- the URL ------------------------------------------------------------------


def test_the_url_names_the_broker_and_query_parameters_become_connect_arguments() -> None:
    assert _connect_args(
        "postgresql+sessionbroker://broker.internal:6000/?client_id=billing&timeout=2.5"
        "&label=worker&ttl=30"
    ) == (
        ["broker.internal:6000"],
        {"client_id": "billing", "timeout": 2.5, "label": "worker", "ttl": 30.0},
    )


def test_the_port_defaults_to_the_brokers_and_ipv6_hosts_are_bracketed() -> None:
    assert _connect_args("postgresql+sessionbroker://broker/") == (["broker:50051"], {})
    assert _connect_args("postgresql+sessionbroker://[::1]:7/") == (["[::1]:7"], {})


@pytest.mark.parametrize(
    "url, message",
    [
        ("postgresql+sessionbroker://broker:1/appdb", "name the broker, not a database"),
        ("postgresql+sessionbroker://scott:tiger@broker:1/", "no user or password"),
        ("postgresql+sessionbroker://broker:1/?timeout=soon", "timeout='soon' is not a valid"),
        ("postgresql+sessionbroker://broker:1/?label=a&label=b", "more than once"),
    ],
)
def test_urls_the_dialect_cannot_honour_are_refused_with_the_reason(
    url: str, message: str
) -> None:
    with pytest.raises(exc.ArgumentError, match=message):
        _connect_args(url)


def test_the_dialect_is_registered_under_postgresql_sessionbroker() -> None:
    assert registry.load("postgresql.sessionbroker") is SessionBrokerDialect
    engine = create_engine("postgresql+sessionbroker://broker:1/")
    assert isinstance(engine.dialect, SessionBrokerDialect)
    assert engine.dialect.dbapi is dbapi
    assert engine.dialect.paramstyle == dbapi.paramstyle


# ---- against the broker ----------------------------------------------------------


def test_first_connect_learns_the_server_version_and_default_schema(broker_engine: Engine) -> None:
    with broker_engine.connect() as conn:
        assert conn.dialect.server_version_info >= (10,)
        assert conn.dialect.default_schema_name == "public"
        assert conn.dialect.default_isolation_level == "READ COMMITTED"
        assert conn.execute(select(literal(41) + 1)).scalar() == 42


@pytest.mark.parametrize("level", ["SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED"])
def test_the_isolation_level_applies_to_the_transactions_a_connection_begins(
    broker_engine: Engine, level: str
) -> None:
    with broker_engine.connect().execution_options(isolation_level=level) as conn:
        assert conn.get_isolation_level() == level
        assert conn.exec_driver_sql("show transaction isolation level").scalar() == level.lower()
    # Returned to the pool, the connection is back at the default.
    with broker_engine.connect() as conn:
        level = conn.exec_driver_sql("show transaction isolation level").scalar()
        assert level == "read committed"


def test_autocommit_makes_each_statement_its_own_transaction(broker_engine: Engine) -> None:
    with broker_engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS sa_autocommit")
        conn.exec_driver_sql("CREATE TABLE sa_autocommit (n int)")
    try:
        with broker_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            assert conn.get_isolation_level() == "AUTOCOMMIT"
            conn.exec_driver_sql("INSERT INTO sa_autocommit VALUES (1)")
            # Visible to another session at once: nothing waits for a commit.
            with broker_engine.connect() as other:
                assert other.exec_driver_sql("SELECT count(*) FROM sa_autocommit").scalar() == 1
    finally:
        with broker_engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE sa_autocommit")


def test_a_readonly_connection_refuses_writes_with_postgresqls_error(
    broker_engine: Engine,
) -> None:
    with broker_engine.connect().execution_options(postgresql_readonly=True) as conn:
        with pytest.raises(exc.DBAPIError) as info:
            conn.exec_driver_sql("CREATE TABLE sa_never (n int)")
        assert info.value.orig.pgcode == "25006"


def test_results_are_native_python_values_processed_once(broker_engine: Engine) -> None:
    with broker_engine.connect() as conn:
        row = conn.execute(
            select(
                literal(decimal.Decimal("1.10"), Numeric(10, 2)),
                literal(decimal.Decimal("2.5"), Numeric(asdecimal=False)),
                literal(0.25, Float()),
                literal(0.5, Float(asdecimal=True)),
                text("'{\"a\": [1, 2]}'::jsonb"),
                text("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid"),
                text("ARRAY[1, 2, 3]"),
            )
        ).one()
    assert row[0] == decimal.Decimal("1.10") and isinstance(row[0], decimal.Decimal)
    assert row[1] == 2.5 and isinstance(row[1], float)
    assert row[2] == 0.25 and isinstance(row[2], float)
    assert row[3] == decimal.Decimal("0.5")
    assert row[4] == {"a": [1, 2]}
    assert row[5] == uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert row[6] == [1, 2, 3]


def test_typed_columns_filter_with_typed_parameters(broker_engine: Engine) -> None:
    metadata = MetaData()
    table = Table(
        "sa_typed",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("small", ARRAY(Integer)),
        Column("doc", JSONB),
        Column("u", UUID(as_uuid=False)),
    )
    metadata.drop_all(broker_engine)
    metadata.create_all(broker_engine)
    try:
        u = "b1ffcd00-ad1c-4ef8-bb6d-6bb9bd380a22"
        with broker_engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 1, "small": [1, 2], "doc": {"k": [7]}, "u": u}])
            assert conn.execute(select(table.c.id).where(table.c.small == [1, 2])).scalar() == 1
            assert conn.execute(select(table.c.doc["k"][0].as_integer())).scalar() == 7
            assert conn.execute(select(table.c.u).where(table.c.u == u)).scalar() == u
    finally:
        metadata.drop_all(broker_engine)


def test_executemany_reports_the_total_rowcount(broker_engine: Engine) -> None:
    metadata = MetaData()
    table = Table(
        "sa_many", metadata, Column("id", Integer, primary_key=True), Column("v", String(10))
    )
    metadata.drop_all(broker_engine)
    metadata.create_all(broker_engine)
    try:
        with broker_engine.begin() as conn:
            conn.execute(table.insert(), [{"id": i, "v": "a"} for i in range(10)])
            result = conn.execute(
                table.update().where(table.c.id == bindparam("k")),
                [{"k": 1, "v": "b"}, {"k": 2, "v": "b"}, {"k": 99, "v": "b"}],
            )
            assert result.rowcount == 2
        with broker_engine.connect() as conn:
            values = conn.execute(select(table.c.v).where(table.c.id < 3).order_by(table.c.id))
            assert values.scalars().all() == ["a", "b", "b"]
    finally:
        metadata.drop_all(broker_engine)


def test_pre_ping_replaces_a_session_the_broker_ended(broker_url: str) -> None:
    engine = create_engine(broker_url, future=True, pool_size=1, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            first = conn.connection.dbapi_connection
            conn.execute(select(literal(1))).scalar()
        _end_session_behind_the_pools_back(first)
        with engine.connect() as conn:
            assert conn.execute(select(literal(2))).scalar() == 2
            assert conn.connection.dbapi_connection is not first
    finally:
        engine.dispose()


def test_without_pre_ping_an_ended_session_invalidates_the_connection(broker_url: str) -> None:
    engine = create_engine(broker_url, future=True, pool_size=1)
    try:
        with engine.connect() as conn:
            first = conn.connection.dbapi_connection
        _end_session_behind_the_pools_back(first)
        with engine.connect() as conn:
            with pytest.raises(exc.DBAPIError) as info:
                conn.execute(select(literal(1)))
            assert info.value.connection_invalidated
        with engine.connect() as conn:  # the pool opened a fresh session
            assert conn.execute(select(literal(3))).scalar() == 3
    finally:
        engine.dispose()


def _end_session_behind_the_pools_back(dbapi_connection) -> None:
    """Ends the broker session of `dbapi_connection` with EndSession from a
    separate client, as the broker does when a lease runs out."""
    from sessionbroker.v1 import broker_pb2, broker_pb2_grpc
    import grpc

    with grpc.insecure_channel(dbapi_connection.target) as channel:
        broker_pb2_grpc.SessionBrokerStub(channel).EndSession(
            broker_pb2.EndSessionRequest(session=dbapi_connection.session_name)
        )


def test_begin_nested_recovers_from_a_failed_statement(broker_engine: Engine) -> None:
    """A savepoint (begin_nested) survives a failed statement: SQLAlchemy
    rolls back to it and the outer transaction commits the good rows."""
    metadata = MetaData()
    table = Table("sa_savepoints", metadata, Column("id", Integer, primary_key=True))
    metadata.drop_all(broker_engine)
    metadata.create_all(broker_engine)
    try:
        with broker_engine.begin() as conn:
            conn.execute(table.insert(), {"id": 1})
            with pytest.raises(exc.IntegrityError):
                with conn.begin_nested():
                    conn.execute(table.insert(), {"id": 2})
                    conn.execute(table.insert(), {"id": 1})  # duplicate: 23505
            nested = conn.begin_nested()
            conn.execute(table.insert(), {"id": 3})
            nested.commit()  # RELEASE SAVEPOINT
            conn.execute(table.insert(), {"id": 4})
        with broker_engine.connect() as conn:
            ids = conn.execute(select(table.c.id).order_by(table.c.id)).scalars().all()
        assert ids == [1, 3, 4]
        with Session(broker_engine) as session:
            session.execute(table.insert(), {"id": 5})
            with pytest.raises(exc.IntegrityError):
                with session.begin_nested():  # the ORM emits SAVEPOINT at first use
                    session.execute(table.insert(), {"id": 5})
            session.execute(table.insert(), {"id": 6})
            session.commit()
        with broker_engine.connect() as conn:
            assert conn.execute(select(table.c.id).where(table.c.id > 4)).scalars().all() == [5, 6]
    finally:
        metadata.drop_all(broker_engine)


def test_stream_results_buffers_the_whole_result(broker_engine: Engine) -> None:
    with broker_engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(
            text("SELECT generate_series(1, 5)")
        )
        assert result.scalars().all() == [1, 2, 3, 4, 5]


def test_after_a_column_changes_type_a_cached_statement_fails_once_in_a_transaction(
    one_connection_broker_url: str,
) -> None:
    """The broker prepares a statement the second time it runs on a pooled
    connection. When a migration then changes the type of a column it
    returns, PostgreSQL refuses the stale plan (0A000); inside a transaction
    the broker cannot run it again unprepared, so that transaction fails,
    once, with NotSupportedError, and the next one works (docs/clients.md)."""
    engine = create_engine(one_connection_broker_url, future=True)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS sa_stale")
            conn.exec_driver_sql("CREATE TABLE sa_stale (v int)")
            conn.exec_driver_sql("INSERT INTO sa_stale VALUES (7)")
        for _ in range(2):  # the second run prepares it
            with engine.connect() as conn:
                assert conn.execute(text("SELECT v FROM sa_stale")).scalar() == 7
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE sa_stale ALTER COLUMN v TYPE text")
        with engine.connect() as conn:
            with pytest.raises(exc.NotSupportedError) as info:
                conn.execute(text("SELECT v FROM sa_stale"))
            assert info.value.orig.pgcode == "0A000"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT v FROM sa_stale")).scalar() == "7"
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # Outside a transaction the broker retries unprepared by itself.
            conn.exec_driver_sql("ALTER TABLE sa_stale ALTER COLUMN v TYPE int USING v::int")
            assert conn.execute(text("SELECT v FROM sa_stale")).scalar() == 7
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS sa_stale")
        engine.dispose()


def test_stream_results_and_yield_per_read_through_a_server_side_cursor(broker_engine) -> None:
    from sqlalchemy import text

    from sessionbroker import dbapi

    with broker_engine.connect() as connection:
        result = connection.execution_options(stream_results=True).execute(
            text("SELECT g AS n FROM generate_series(1, 20000) g"))
        assert isinstance(result.cursor, dbapi.ServerCursor)
        total = 0
        count = 0
        for partition in result.partitions(1000):
            count += len(partition)
            total += sum(row.n for row in partition)
        assert count == 20000
        assert total == 20000 * 20001 // 2
        rows = connection.execution_options(yield_per=500).execute(
            text("SELECT 'x' || g AS s FROM generate_series(1, 1200) g")).all()
        assert rows[-1].s == "x1200"
