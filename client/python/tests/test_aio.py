"""sessionbroker.aio against the live broker: the DB-API's semantics, types
and errors over asyncio. Each test runs its own event loop (asyncio.run)."""

import asyncio
import datetime as dt
import decimal

import grpc
import pytest

from sessionbroker import aio, dbapi
from sessionbroker._pb import broker_pb2, broker_pb2_grpc


def run(coro):
    return asyncio.run(coro)


def test_execute_fetch_commit_and_close(broker_target, table_name):
    async def main():
        conn = await aio.connect(broker_target, client_id="pytest-aio")
        cur = conn.cursor()
        await cur.execute(f"CREATE TABLE {table_name} (n int, d numeric, t timestamptz)")
        await cur.executemany(f"INSERT INTO {table_name} VALUES (%s, %s, %s)",
                              [(i, decimal.Decimal(f"{i}.5"),
                                dt.datetime(2024, 1, i, tzinfo=dt.timezone.utc))
                               for i in range(1, 4)])
        assert cur.rowcount == 3
        await conn.commit()
        await cur.execute(f"SELECT n, d, t FROM {table_name} ORDER BY n")
        assert cur.description[0][:2] == ("n", 23)
        assert await cur.fetchone() == (1, decimal.Decimal("1.5"),
                                        dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
        assert len(await cur.fetchmany(1)) == 1
        rest = [row async for row in cur]
        assert [r[0] for r in rest] == [3]
        assert await cur.fetchall() == []
        await cur.execute(f"DROP TABLE {table_name}")
        await conn.commit()
        name = conn.session_name
        await conn.close()
        assert conn.closed == 1
        return name

    name = run(main())
    stub = broker_pb2_grpc.SessionBrokerStub(grpc.insecure_channel(broker_target))
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSession(broker_pb2.GetSessionRequest(session=name), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_rollback_and_errors_are_the_dbapi_ones(broker_target):
    async def main():
        async with await aio.connect(broker_target) as conn:
            cur = conn.cursor()
            await cur.execute("SELECT 1")
            assert conn.in_transaction
            with pytest.raises(dbapi.DataError) as info:
                await cur.execute("SELECT 1 / 0")
            assert info.value.sqlstate == "22012"
            with pytest.raises(aio.InternalError):
                await cur.execute("SELECT 1")
            await conn.rollback()
            assert not conn.in_transaction
            with pytest.raises(aio.ProgrammingError):
                await cur.execute("SELECT * FROM no_such_table_anywhere")
            await conn.rollback()
            with pytest.raises(aio.NotSupportedError):
                await cur.callproc("f")
            with pytest.raises(aio.ProgrammingError, match="no results"):
                await cur.execute("SET LOCAL work_mem = '8MB'")
                await cur.fetchone()
            await conn.rollback()
        assert conn.closed == 1
        with pytest.raises(aio.InterfaceError):
            conn.cursor()

    run(main())


def test_autocommit_and_isolation(broker_target):
    async def main():
        conn = await aio.connect(broker_target, autocommit=True)
        try:
            cur = conn.cursor()
            await cur.execute("SELECT 1")
            assert not conn.in_transaction
            conn.autocommit = False
            conn.isolation_level = "SERIALIZABLE"
            await cur.execute("SELECT current_setting('transaction_isolation')")
            assert await cur.fetchone() == ("serializable",)
            with pytest.raises(aio.ProgrammingError):
                conn.autocommit = True
            await conn.rollback()
        finally:
            await conn.close()

    run(main())


def test_many_connections_run_concurrently_on_one_loop(broker_target):
    async def one(i):
        conn = await aio.connect(broker_target)
        try:
            cur = conn.cursor()
            await cur.execute("SELECT %s::int4 * 2, pg_sleep(0.05)", [i])
            (doubled, _), = await cur.fetchall()
            await conn.commit()
            return doubled
        finally:
            await conn.close()

    async def main():
        return await asyncio.gather(*(one(i) for i in range(32)))

    assert run(main()) == [i * 2 for i in range(32)]


def test_a_session_the_broker_ended_is_a_disconnect(broker_target):
    async def main():
        conn = await aio.connect(broker_target)
        await conn.ping()
        conn._keepalive.release(conn._core.lease)
        stub = broker_pb2_grpc.SessionBrokerStub(grpc.insecure_channel(broker_target))
        stub.EndSession(broker_pb2.EndSessionRequest(session=conn.session_name), timeout=10)
        with pytest.raises(aio.OperationalError) as info:
            await conn.cursor().execute("SELECT 1")
        assert aio.is_disconnect(info.value) and info.value.reason == "SESSION_ENDED"
        assert conn.closed == 2
        with pytest.raises(aio.OperationalError):
            await conn.ping()
        await conn.close()

    run(main())


def test_an_unreachable_broker_is_an_operational_error():
    async def main():
        with pytest.raises(aio.OperationalError):
            await aio.connect("127.0.0.1:1", connect_timeout=0.3)

    run(main())
