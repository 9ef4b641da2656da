"""sessionbroker.aio's named cursors against the live broker: a result of
any size streamed (StreamExecute) and read with ``async for`` or fetch*(),
its errors, inside a transaction, and cancelled when closed unread. Each test
runs its own event loop (asyncio.run)."""

import asyncio

import pytest

from sessionbroker import aio, dbapi


def run(coro):
    return asyncio.run(coro)


def test_a_named_cursor_streams_a_large_result_row_by_row(broker_target):
    # 20,000 rows of 1,000 bytes: five times Execute's default 4 MiB cap.
    query = ("SELECT n, repeat('x', 1000) AS body "
             "FROM (SELECT generate_series(1, %s) AS n) s")

    async def main():
        async with await aio.connect(broker_target, autocommit=True) as conn:
            cur = conn.cursor("big")
            assert isinstance(cur, aio.AsyncServerCursor)
            await cur.execute(query, (20000,))
            assert [d[0] for d in cur.description] == ["n", "body"]
            assert cur.rowcount == -1  # not known before the end
            assert await cur.fetchone() == (1, "x" * 1000)
            assert [r[0] for r in await cur.fetchmany(2)] == [2, 3]
            count, total = 3, 6
            async for n, body in cur:
                count += 1
                total += n
                assert len(body) == 1000
            assert count == 20000
            assert total == 20000 * 20001 // 2
            assert await cur.fetchone() is None
            assert cur.rowcount == 20000
            assert cur.statusmessage == "SELECT 20000"
            await cur.close()

    run(main())


def test_an_error_mid_stream_is_raised_by_the_fetch_that_reaches_it(broker_target):
    async def main():
        async with await aio.connect(broker_target, autocommit=True) as conn:
            cur = conn.cursor("failing")
            await cur.execute("SELECT 1 / (3000 - g) FROM generate_series(1, 5000) g")
            got = 0
            with pytest.raises(dbapi.DataError) as info:
                while await cur.fetchone() is not None:
                    got += 1
            assert info.value.sqlstate == "22012"
            assert got == 2999
            cur = conn.cursor("missing")
            with pytest.raises(dbapi.ProgrammingError) as info:
                await cur.execute("SELECT * FROM no_such_table_here")
                await cur.fetchone()
            assert info.value.sqlstate == "42P01"

    run(main())


def test_a_named_cursor_in_a_transaction_sees_its_writes(broker_target, table_name):
    async def main():
        async with await aio.connect(broker_target) as conn:
            cur = conn.cursor()
            await cur.execute(f"CREATE TABLE {table_name} (n int)")
            await cur.execute(f"INSERT INTO {table_name} SELECT generate_series(1, 100)")
            streamed = conn.cursor("in_tx")
            await streamed.execute(f"SELECT n FROM {table_name} ORDER BY n")
            assert [r[0] for r in await streamed.fetchall()] == list(range(1, 101))
            await streamed.close()
            await conn.rollback()
            await cur.execute("SELECT to_regclass(%s) IS NULL", (table_name,))
            assert await cur.fetchone() == (True,)

    run(main())


def test_closing_an_unread_named_cursor_cancels_its_statement(broker_target):
    marker = "aio_abandoned_stream"

    async def main():
        async with await aio.connect(broker_target, autocommit=True) as conn:
            cur = conn.cursor("abandoned")
            await cur.execute(f"SELECT generate_series(1, 100000000) /* {marker} */")
            assert await cur.fetchone() == (1,)
            await cur.close()
            check = conn.cursor()

            async def running() -> int:
                await check.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND pid <> pg_backend_pid() AND position(%s in query) > 0", (marker,))
                return (await check.fetchone())[0]

            for _ in range(200):
                if await running() == 0:
                    break
                await asyncio.sleep(0.05)
            assert await running() == 0
            with pytest.raises(dbapi.ProgrammingError):
                await conn.cursor("many").executemany("SELECT 1", [()])

    run(main())
