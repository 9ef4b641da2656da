"""sessionbroker.aio's shared Pipeline stream (sessionbroker._pipeline_aio):
the asyncio equivalents of test_pipeline_mux.py. Each test runs its own
event loop; what went on the stream is read from the mux's counters (the
broker has no counter of Pipeline calls)."""

import asyncio
import contextlib
import time
import uuid
from concurrent import futures
from typing import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from sessionbroker import aio, dbapi
from sessionbroker._pb import broker_pb2, broker_pb2_grpc
from sessionbroker._pipeline import LOST_SUFFIX
from sessionbroker._pipeline_aio import AioPipelineMux

_POLL_LIMIT = 30.0


def _client() -> str:
    return f"amux-{uuid.uuid4().hex[:10]}"


async def _wait_for(what: str, condition: Callable[[], bool],
                    step: Callable[[], Awaitable[None]] = None) -> None:
    end = time.monotonic() + _POLL_LIMIT
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"never happened: {what}")
        if step is not None:
            await step()
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def another_call_in_flight(mux: AioPipelineMux) -> AsyncIterator[None]:
    """Makes the mux see one more call in flight: calls made meanwhile are concurrent."""
    mux._active += 1
    try:
        yield
    finally:
        mux._active -= 1


async def _stream_ready(conn: aio.AsyncConnection) -> None:
    mux = conn._mux
    cur = conn.cursor()

    def ready() -> bool:
        return mux._stream is not None and mux._stream.ready

    async with another_call_in_flight(mux):
        await _wait_for("the Pipeline stream is ready", ready, lambda: cur.execute("SELECT 1"))


async def _error_of(make: Callable[[], Awaitable[object]]) -> dbapi.Error:
    try:
        await make()
    except dbapi.Error as e:
        return e
    pytest.fail("no error raised")


_ERROR_FIELDS = ("message", "sqlstate", "grpc_code", "reason", "disconnect", "severity",
                 "message_primary", "detail", "hint", "position", "constraint_name",
                 "table_name", "statement_index")


def test_32_tasks_concurrent_calls_are_answered_correctly_on_the_shared_stream(broker_target):
    async def main():
        client = _client()
        conns = [await aio.connect(broker_target, client_id=client, autocommit=(i % 2 == 0))
                 for i in range(32)]
        wrong = []

        async def work(i: int) -> None:
            conn = conns[i]
            cur = conn.cursor()
            for k in range(30):
                await cur.execute("SELECT %s::int8 * 2, %s", (i * 1000 + k, f"t{i}"))
                if await cur.fetchall() != [(2 * (i * 1000 + k), f"t{i}")]:
                    wrong.append((i, k))
            await cur.executemany("SELECT %s::int8", [(1,), (2,)])
            if cur.rowcount != 2:
                wrong.append((i, "executemany"))
            await conn.commit()

        try:
            await asyncio.gather(*(work(i) for i in range(32)))
            stats = conns[0]._mux.stats
            assert wrong == []
            assert stats.streams_opened == 1
            assert stats.stream_calls > 0
            assert stats.lost_calls == 0
            assert stats.stream_calls + stats.unary_calls == 32 * 32 - 16
        finally:
            mux = conns[0]._mux
            for conn in conns:
                await conn.close()
        assert mux.tasks() == []

        # gRPC's own task that receives the cancelled stream's status ends a
        # few loop turns after the cancel; nothing else may be left behind.
        def others() -> list:
            return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

        await _wait_for("every task has ended", lambda: not others())

    asyncio.run(main())


def test_a_lone_task_makes_unary_calls(broker_target):
    async def main():
        conn = await aio.connect(broker_target, client_id=_client(), autocommit=True)
        try:
            cur = conn.cursor()
            for n in range(10):
                await cur.execute("SELECT %s::int8", (n,))
                assert await cur.fetchone() == (n,)
            assert conn._mux.stats.unary_calls == 10
            assert conn._mux.stats.stream_calls == 0
            assert conn._mux.tasks() == []
        finally:
            await conn.close()

    asyncio.run(main())


@pytest.mark.parametrize("autocommit", [True, False])
def test_a_failing_statement_raises_the_same_error_on_the_stream_as_unary(broker_target,
                                                                          table_name, autocommit):
    async def main():
        client = _client()
        setup = await aio.connect(broker_target, client_id=client, autocommit=True)
        streamed = await aio.connect(broker_target, client_id=client, autocommit=autocommit)
        unary = await aio.connect(broker_target, client_id=client, autocommit=autocommit,
                                  pipeline=False)
        try:
            await setup.cursor().execute(
                f"CREATE TABLE {table_name} (id int PRIMARY KEY, note text "
                f"CONSTRAINT {table_name}_note CHECK (note <> 'bad'))")
            await setup.cursor().execute(f"INSERT INTO {table_name} VALUES (1, 'a')")
            await _stream_ready(streamed)
            mux = streamed._mux
            cases = [("SELECT 1 / 0", None), (f"INSERT INTO {table_name} VALUES (1, 'x')", None),
                     ("SELEC 1", None), ("SELECT %s::int4", (1 << 40,)), ("BEGIN", None)]
            for sql, params in cases:
                before = mux.stats.stream_calls
                async with another_call_in_flight(mux):
                    on_stream = await _error_of(lambda: streamed.cursor().execute(sql, params))
                assert mux.stats.stream_calls == before + 1, sql
                plain = await _error_of(lambda: unary.cursor().execute(sql, params))
                assert type(on_stream) is type(plain)
                for field in _ERROR_FIELDS:
                    assert getattr(on_stream, field) == getattr(plain, field), (sql, field)
                if not autocommit:
                    await streamed.rollback()
                    await unary.rollback()
            rows = [(10, "x"), (11, "bad")]
            async with another_call_in_flight(mux):
                on_stream = await _error_of(lambda: streamed.cursor().executemany(
                    f"INSERT INTO {table_name} VALUES (%s, %s)", rows))
            await setup.cursor().execute(f"DELETE FROM {table_name} WHERE id >= 10")
            plain = await _error_of(lambda: unary.cursor().executemany(
                f"INSERT INTO {table_name} VALUES (%s, %s)", rows))
            assert type(on_stream) is type(plain)
            for field in _ERROR_FIELDS:
                assert getattr(on_stream, field) == getattr(plain, field), field
        finally:
            for conn in (streamed, unary):
                with contextlib.suppress(dbapi.Error):
                    await conn.rollback()
            await setup.cursor().execute(f"DROP TABLE IF EXISTS {table_name}")
            for conn in (streamed, unary, setup):
                await conn.close()

    asyncio.run(main())


def test_a_passed_deadline_cancels_the_call_on_the_stream_as_unary(broker_target):
    async def main():
        client = _client()
        marker = uuid.uuid4().hex
        sql = f"SELECT pg_sleep(30) /* {marker} */"
        conn = await aio.connect(broker_target, client_id=client, autocommit=True, timeout=0.5)
        unary = await aio.connect(broker_target, client_id=client, autocommit=True,
                                  timeout=0.5, pipeline=False)
        watcher = await aio.connect(broker_target, client_id=client, autocommit=True,
                                    pipeline=False)
        try:
            await _stream_ready(conn)
            mux = conn._mux
            answered = mux.stats.stream_calls
            async with another_call_in_flight(mux):
                on_stream = await _error_of(lambda: conn.cursor().execute(sql))
            # The call ends once, as a deadline: by the client's own timer (it
            # cancels the call by id) or, when that fires late on a busy machine,
            # by the broker's deadline for the same timeout (a DEADLINE_EXCEEDED result).
            assert mux.stats.cancelled_calls + (mux.stats.stream_calls - answered) == 1
            plain = await _error_of(lambda: unary.cursor().execute(sql))
            assert type(on_stream) is type(plain)
            assert on_stream.grpc_code == plain.grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED
            # Either side's timer may fire first, on either path: the client's
            # (no SQLSTATE) or the broker's, which cancelled the statement (57014).
            assert on_stream.sqlstate in (None, "57014")
            assert plain.sqlstate in (None, "57014")

            gone = []

            async def check() -> None:
                cur = watcher.cursor()
                await cur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                                  "AND pid <> pg_backend_pid()", (f"%{marker}%",))
                gone.append((await cur.fetchone())[0] == 0)

            await _wait_for("the statement was cancelled in PostgreSQL",
                            lambda: bool(gone) and gone[-1], check)
        finally:
            for c in (conn, unary, watcher):
                await c.close()

    asyncio.run(main())


def test_a_cancelled_task_cancels_its_call_on_the_stream(broker_target):
    async def main():
        client = _client()
        marker = uuid.uuid4().hex
        conn = await aio.connect(broker_target, client_id=client, autocommit=True)
        watcher = await aio.connect(broker_target, client_id=client, autocommit=True,
                                    pipeline=False)
        counts = []

        async def count() -> None:
            cur = watcher.cursor()
            await cur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                              "AND pid <> pg_backend_pid()", (f"%{marker}%",))
            counts.append((await cur.fetchone())[0])

        try:
            await _stream_ready(conn)
            mux = conn._mux
            async with another_call_in_flight(mux):
                task = asyncio.ensure_future(
                    conn.cursor().execute(f"SELECT pg_sleep(30) /* {marker} */"))
                await _wait_for("the call runs in PostgreSQL",
                                lambda: bool(counts) and counts[-1] == 1, count)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            counts.clear()
            await _wait_for("the statement was cancelled in PostgreSQL",
                            lambda: bool(counts) and counts[-1] == 0, count)
            assert mux.stats.unary_calls >= 1 and mux.stats.stream_calls == 0
        finally:
            await watcher.close()
            await conn.close()

    asyncio.run(main())


def test_calls_lost_with_a_killed_broker_fail_as_maybe_applied(broker_factory):
    broker = broker_factory({})

    async def main():
        client = _client()
        conn = await aio.connect(broker.target, client_id=client, autocommit=True)
        await _stream_ready(conn)
        mux = conn._mux
        async with another_call_in_flight(mux):
            task = asyncio.ensure_future(
                _error_of(lambda: conn.cursor().execute("SELECT pg_sleep(5)")))

            def sent() -> bool:
                s = mux._stream
                return s is not None and any(p.sent for p in s.pending.values())

            await _wait_for("the call was sent on the stream", sent)
            broker.process.kill()
            lost = await task
        assert isinstance(lost, dbapi.OperationalError)
        assert lost.grpc_code == grpc.StatusCode.UNAVAILABLE
        assert lost.disconnect
        assert lost.message.endswith(LOST_SUFFIX)
        assert mux.stats.lost_calls == 1
        assert mux.tasks() == []
        await conn.close()

    asyncio.run(main())


def test_a_drain_never_loses_a_call_running_ones_finish_and_unread_ones_fail_as_not_run(
        broker_factory, broker_target):
    # A drain window of 1 s, and a grace long enough for the calls held by the lock.
    broker = broker_factory({"BROKER_DRAIN_SECONDS": "1", "BROKER_SHUTDOWN_GRACE_SECONDS": "60"})
    key, keeper_key = (int(uuid.uuid4().int % (1 << 62)) for _ in range(2))
    marker, keeper_marker = uuid.uuid4().hex, uuid.uuid4().hex

    async def main():
        # On the test session's broker (not the one that drains): transactions
        # holding advisory locks, so the calls that take them shared run until
        # they commit, and a watcher of pg_stat_activity.
        holder = await aio.connect(broker_target, client_id=_client())
        await holder.cursor().execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        # Holds a unary call running on the draining broker until the end, so
        # that the broker still answers the calls that go unary (and has not
        # shut its server down, which would cancel them).
        keeper_holder = await aio.connect(broker_target, client_id=_client())
        await keeper_holder.cursor().execute("SELECT pg_advisory_xact_lock(%s)", (keeper_key,))
        watcher = await aio.connect(broker_target, client_id=_client(), autocommit=True,
                                    pipeline=False)
        client = _client()
        # A connection per call (a connection runs one call at a time); one mux.
        names = ("held0", "held1", "read", "unread")
        conns = {name: await aio.connect(broker.target, client_id=client, autocommit=True)
                 for name in names}
        conns["keeper"] = await aio.connect(broker.target, client_id=client, autocommit=True,
                                            pipeline=False)
        probe = await aio.connect(broker.target, client_id=client, autocommit=True,
                                  pipeline=False)
        await _stream_ready(conns["held0"])
        mux = conns["held0"]._mux
        assert all(conns[name]._mux is mux for name in names)

        async def run(name: str, sql: str):
            try:
                cur = conns[name].cursor()
                await cur.execute(sql)
                return await cur.fetchone()
            except dbapi.Error as e:
                return e

        waiting = {marker: 0, keeper_marker: 0}

        def count_waiting(tag: str) -> Callable[[], Awaitable[None]]:
            async def count() -> None:
                cur = watcher.cursor()
                await cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type "
                                  "= 'Lock' AND query LIKE %s AND pid <> pg_backend_pid()",
                                  (f"%{tag}%",))
                waiting[tag] = (await cur.fetchone())[0]
            return count

        drained = [False]

        async def probe_drain() -> None:
            try:
                await probe.cursor().execute("SELECT 1")
            except dbapi.OperationalError as e:
                assert e.grpc_code == grpc.StatusCode.UNAVAILABLE
                drained[0] = True

        def sent(count: int) -> Callable[[], bool]:
            def check() -> bool:
                s = mux._stream
                return s is not None and sum(p.sent for p in s.pending.values()) == count
            return check

        held_sql = f"SELECT pg_advisory_xact_lock_shared({key}), 'ran' /* {marker} */"
        keeper_sql = (f"SELECT pg_advisory_xact_lock_shared({keeper_key}), 'kept' "
                      f"/* {keeper_marker} */")
        keeper = asyncio.ensure_future(run("keeper", keeper_sql))
        try:
            await _wait_for("the keeper waits for its lock", lambda: waiting[keeper_marker] == 1,
                            count_waiting(keeper_marker))
            async with another_call_in_flight(mux):
                held = [asyncio.ensure_future(run(f"held{i}", held_sql)) for i in range(2)]
                # Both were sent; one waits for the lock in PostgreSQL (the other
                # may wait behind it on the same pipelined connection).
                await _wait_for("both calls were sent on the stream", sent(2))
                await _wait_for("a call waits for the lock", lambda: waiting[marker] >= 1,
                                count_waiting(marker))
                broker.process.terminate()
                await _wait_for("the drain window is over (unary calls are refused)",
                                lambda: drained[0], probe_drain)
                # Read after the drain began: answered DRAINING, goes unary, refused.
                read = await run("read", "SELECT 'read'")
                # The broker reads no further message: this one waits, unread,
                # until the stream ends by the drain.
                unread = asyncio.ensure_future(run("unread", "SELECT 'unread'"))
                await _wait_for("the last call was sent on the stream", sent(3))
                await holder.commit()
                results = await asyncio.gather(*held)
                unread = await unread
            await keeper_holder.commit()
            kept = await keeper
        finally:
            await holder.close()
            await keeper_holder.close()
        assert results == [("", "ran"), ("", "ran")]
        assert kept == ("", "kept")
        for error in (read, unread):
            assert isinstance(error, dbapi.OperationalError), error
            assert error.grpc_code == grpc.StatusCode.UNAVAILABLE, error
            assert not error.message.endswith(LOST_SUFFIX), error
        assert mux.stats.lost_calls == 0
        assert mux.stats.fallbacks == 2
        assert mux.stats.stream_calls >= 2
        assert mux._stream is None
        for c in [*conns.values(), probe, watcher]:
            await c.close()

    asyncio.run(main())
    assert broker.process.wait(timeout=_POLL_LIMIT) == 0


def test_the_option_off_makes_every_call_unary(broker_target):
    async def main():
        conns = [await aio.connect(broker_target, client_id=_client(), autocommit=True,
                                   pipeline=False) for _ in range(8)]
        try:
            async def work(conn) -> None:
                for n in range(10):
                    cur = conn.cursor()
                    await cur.execute("SELECT %s::int8", (n,))
                    assert await cur.fetchone() == (n,)

            await asyncio.gather(*(work(c) for c in conns))
            assert all(c._mux is None for c in conns)
        finally:
            for c in conns:
                await c.close()

    asyncio.run(main())


class _ExecuteOnly(broker_pb2_grpc.SessionBrokerServicer):
    """A broker of an older version: Execute, and no Pipeline method."""

    def Execute(self, request, context):
        return broker_pb2.ExecuteResponse(command_tag="SELECT 1")


def test_a_broker_without_the_method_is_remembered_and_calls_stay_unary():
    server = grpc.server(futures.ThreadPoolExecutor(4))
    broker_pb2_grpc.add_SessionBrokerServicer_to_server(_ExecuteOnly(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    async def main():
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = broker_pb2_grpc.SessionBrokerStub(channel)
        mux = AioPipelineMux(channel, ())
        mux.users += 1
        request = broker_pb2.ExecuteRequest(sql="SELECT 1")

        async def call() -> None:
            response = await mux.call("execute", request, 5.0,
                                      lambda t: stub.Execute(request, timeout=t))
            assert response.command_tag == "SELECT 1"

        try:
            async with another_call_in_flight(mux):
                await _wait_for("the broker's UNIMPLEMENTED is remembered",
                                lambda: mux.unimplemented, call)
                for _ in range(5):
                    await call()
            assert mux.stats.stream_calls == 0
            assert mux.tasks() == []
        finally:
            await mux.close()
            await channel.close()

    try:
        asyncio.run(main())
    finally:
        server.stop(None)
