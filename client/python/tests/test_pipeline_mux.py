"""The blocking client's shared Pipeline stream (sessionbroker._pipeline):
concurrent calls are answered correctly on it, a lone caller stays unary,
errors and deadlines are the unary calls', a broken stream fails what it sent
and nothing else, a broker without the method is remembered, the option
switches it off, and no thread outlives the connections.

The broker has no counter of Pipeline calls (its /metrics count statements,
not how they arrived), so what went on the stream is read from the mux's
own counters (``MuxStats``: results received by id on the stream). Each test
uses a client id of its own, so it gets a mux (and a stream) of its own.
"""

import contextlib
import threading
import time
import uuid
from concurrent import futures
from typing import Callable, Iterator

import grpc
import pytest

from sessionbroker import dbapi
from sessionbroker._pb import broker_pb2, broker_pb2_grpc
from sessionbroker._pipeline import LOST_SUFFIX, PipelineMux

# Polls for a state the code reaches by itself; only a failing test waits this long.
_POLL_LIMIT = 30.0


def _client() -> str:
    return f"mux-{uuid.uuid4().hex[:10]}"


def _wait_for(what: str, condition: Callable[[], bool], step: Callable[[], None] = None) -> None:
    end = time.monotonic() + _POLL_LIMIT
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"never happened: {what}")
        if step is not None:
            step()
        time.sleep(0.01)


@contextlib.contextmanager
def another_call_in_flight(mux: PipelineMux) -> Iterator[None]:
    """Makes the mux see one more call in flight, as while another thread's
    call runs: every call made meanwhile is a concurrent one."""
    with mux.lock:
        mux._active += 1
    try:
        yield
    finally:
        with mux.lock:
            mux._active -= 1


def _stream_ready(conn: dbapi.Connection) -> None:
    """Opens the mux's stream (with another call in flight) and waits for its limits."""
    mux = conn._mux
    cur = conn.cursor()

    def ready() -> bool:
        stream = mux._stream
        return stream is not None and stream.ready

    with another_call_in_flight(mux):
        _wait_for("the Pipeline stream is ready", ready, lambda: cur.execute("SELECT 1"))


def _error_of(fn: Callable[[], object]) -> dbapi.Error:
    try:
        fn()
    except dbapi.Error as e:
        return e
    pytest.fail("no error raised")


_ERROR_FIELDS = ("message", "sqlstate", "grpc_code", "reason", "disconnect", "severity",
                 "message_primary", "detail", "hint", "position", "schema_name", "table_name",
                 "column_name", "datatype_name", "constraint_name", "statement_index")


def _assert_same_error(streamed: dbapi.Error, unary: dbapi.Error) -> None:
    assert type(streamed) is type(unary)
    for field in _ERROR_FIELDS:
        assert getattr(streamed, field) == getattr(unary, field), field


def test_32_threads_concurrent_calls_are_answered_correctly_on_the_shared_stream(broker_target):
    client = _client()
    conns = [dbapi.connect(broker_target, client_id=client, autocommit=(i % 2 == 0))
             for i in range(32)]
    wrong = []

    def work(i: int) -> None:
        conn = conns[i]
        cur = conn.cursor()
        for k in range(40):
            cur.execute("SELECT %s::int8 * 2 AS twice, %s AS tag", (i * 1000 + k, f"t{i}"))
            if cur.fetchall() != [(2 * (i * 1000 + k), f"t{i}")]:
                wrong.append((i, k))
        cur.executemany("SELECT %s::int8", [(1,), (2,)])
        if cur.rowcount != 2:
            wrong.append((i, "executemany"))
        conn.commit()

    try:
        with futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(work, range(32)))
        stats = conns[0]._mux.stats
        assert wrong == []
        assert stats.streams_opened >= 1
        assert stats.stream_calls > 0
        assert stats.lost_calls == 0
        assert stats.stream_calls + stats.unary_calls == 32 * 42 - 16 * 1  # autocommit: 2 Executes
    finally:
        for conn in conns:
            conn.close()


def test_a_lone_caller_makes_unary_calls_and_opens_no_stream(broker_target):
    conn = dbapi.connect(broker_target, client_id=_client(), autocommit=True)
    try:
        cur = conn.cursor()
        for n in range(20):
            cur.execute("SELECT %s::int8", (n,))
            assert cur.fetchone() == (n,)
        assert conn._mux.stats.unary_calls == 20
        assert conn._mux.stats.stream_calls == 0
        assert conn._mux.threads() == []
    finally:
        conn.close()


@pytest.mark.parametrize("autocommit", [True, False])
def test_a_failing_statement_raises_the_same_error_on_the_stream_as_unary(broker_target,
                                                                          table_name, autocommit):
    client = _client()
    setup = dbapi.connect(broker_target, client_id=client, autocommit=True)
    streamed = dbapi.connect(broker_target, client_id=client, autocommit=autocommit)
    unary = dbapi.connect(broker_target, client_id=client, autocommit=autocommit, pipeline=False)
    try:
        setup.cursor().execute(f"CREATE TABLE {table_name} (id int PRIMARY KEY, note text "
                               f"CONSTRAINT {table_name}_note CHECK (note <> 'bad'))")
        setup.cursor().execute(f"INSERT INTO {table_name} VALUES (1, 'a')")
        cases = [
            ("SELECT 1 / 0", None),
            (f"INSERT INTO {table_name} VALUES (1, 'dup')", None),
            (f"INSERT INTO {table_name} VALUES (2, 'bad')", None),
            ("SELEC 1", None),
            ("SELECT no_such_column FROM " + table_name, None),
            ("SELECT %s::int4", (1 << 40,)),
            ("BEGIN", None),  # refused by the broker itself, no SQLSTATE
        ]
        _stream_ready(streamed)
        mux = streamed._mux
        for sql, params in cases:
            before = mux.stats.stream_calls
            with another_call_in_flight(mux):
                on_stream = _error_of(lambda: streamed.cursor().execute(sql, params))
            assert mux.stats.stream_calls == before + 1, sql
            plain = _error_of(lambda: unary.cursor().execute(sql, params))
            _assert_same_error(on_stream, plain)
            if not autocommit:
                streamed.rollback()
                unary.rollback()
        # executemany: an ExecuteBatch inside the transaction, or Executes one by one.
        rows = [(10, "x"), (11, "bad"), (12, "y")]
        with another_call_in_flight(mux):
            on_stream = _error_of(lambda: streamed.cursor().executemany(
                f"INSERT INTO {table_name} VALUES (%s, %s)", rows))
        setup.cursor().execute(f"DELETE FROM {table_name} WHERE id >= 10")
        plain = _error_of(lambda: unary.cursor().executemany(
            f"INSERT INTO {table_name} VALUES (%s, %s)", rows))
        _assert_same_error(on_stream, plain)
        assert plain.sqlstate == "23514"
    finally:
        for conn in (streamed, unary, setup):
            with contextlib.suppress(dbapi.Error):
                conn.rollback()
        setup.cursor().execute(f"DROP TABLE IF EXISTS {table_name}")
        for conn in (streamed, unary, setup):
            conn.close()


def test_a_passed_deadline_cancels_the_call_on_the_stream_as_unary(broker_target):
    client = _client()
    marker = uuid.uuid4().hex
    sql = f"SELECT pg_sleep(30) /* {marker} */"
    conn = dbapi.connect(broker_target, client_id=client, autocommit=True, timeout=0.5)
    unary = dbapi.connect(broker_target, client_id=client, autocommit=True, timeout=0.5,
                          pipeline=False)
    watcher = dbapi.connect(broker_target, client_id=client, autocommit=True, pipeline=False)
    try:
        _stream_ready(conn)
        mux = conn._mux
        answered = mux.stats.stream_calls
        with another_call_in_flight(mux):
            on_stream = _error_of(lambda: conn.cursor().execute(sql))
        # The call ends once, as a deadline: by the client's own timer (it
        # cancels the call by id) or, when that fires late on a busy machine,
        # by the broker's deadline for the same timeout (a DEADLINE_EXCEEDED result).
        assert mux.stats.cancelled_calls + (mux.stats.stream_calls - answered) == 1
        plain = _error_of(lambda: unary.cursor().execute(sql))
        assert isinstance(on_stream, dbapi.OperationalError)
        assert type(on_stream) is type(plain)
        assert on_stream.grpc_code == plain.grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED
        # Either side's timer may fire first, on either path: the client's
        # (no SQLSTATE) or the broker's, which cancelled the statement (57014).
        assert on_stream.sqlstate in (None, "57014")
        assert plain.sqlstate in (None, "57014")

        def still_running() -> bool:
            cur = watcher.cursor()
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                        "AND pid <> pg_backend_pid()", (f"%{marker}%",))
            return cur.fetchone()[0] == 0

        _wait_for("the statement was cancelled in PostgreSQL", still_running)
        # The stream goes on: the next call is answered on it.
        before = mux.stats.stream_calls
        with another_call_in_flight(mux):
            cur = conn.cursor()
            cur.execute("SELECT 7")
            assert cur.fetchone() == (7,)
        assert mux.stats.stream_calls == before + 1
    finally:
        for c in (conn, unary, watcher):
            c.close()


def test_calls_lost_with_a_killed_broker_fail_as_maybe_applied_and_a_new_broker_is_used(
        broker_factory):
    broker = broker_factory({})
    target = broker.target
    client = _client()
    conn = dbapi.connect(target, client_id=client, autocommit=True)
    unary = dbapi.connect(target, client_id=client, autocommit=True, pipeline=False)
    _stream_ready(conn)
    mux = conn._mux
    outcomes = {}

    def run(name: str, c: dbapi.Connection) -> None:
        outcomes[name] = _error_of(lambda: c.cursor().execute("SELECT pg_sleep(5)"))

    with another_call_in_flight(mux):
        threads = [threading.Thread(target=run, args=("stream", conn)),
                   threading.Thread(target=run, args=("unary", unary))]
        for t in threads:
            t.start()

        def sent() -> bool:
            with mux.lock:
                stream = mux._stream
                return stream is not None and any(p.sent for p in stream.pending.values())

        _wait_for("the call was sent on the stream", sent)
        broker.process.kill()
        for t in threads:
            t.join()
    lost, plain = outcomes["stream"], outcomes["unary"]
    assert isinstance(lost, dbapi.OperationalError) and isinstance(plain, dbapi.OperationalError)
    assert lost.grpc_code == plain.grpc_code == grpc.StatusCode.UNAVAILABLE
    assert lost.disconnect and plain.disconnect
    assert lost.message.endswith(LOST_SUFFIX)
    assert mux.stats.lost_calls == 1
    assert mux.threads() == []
    conn.close()
    unary.close()

    # A broker back on the same address: new connections, a new stream.
    restarted = broker_factory({"BROKER_LISTEN_ADDR": target})
    assert restarted.target == target
    again = [dbapi.connect(target, client_id=client, autocommit=True) for _ in range(2)]
    try:
        _stream_ready(again[0])
        with another_call_in_flight(mux):
            cur = again[1].cursor()
            cur.execute("SELECT 42")
            assert cur.fetchone() == (42,)
        assert again[0]._mux is mux
        assert mux.stats.streams_opened == 2
    finally:
        for c in again:
            c.close()


def test_a_draining_broker_answers_the_running_call_and_later_calls_go_unary(broker_factory):
    broker = broker_factory({"BROKER_DRAIN_SECONDS": "0"})
    client = _client()
    conn = dbapi.connect(broker.target, client_id=client, autocommit=True)
    watcher = dbapi.connect(broker.target, client_id=client, autocommit=True, pipeline=False)
    _stream_ready(conn)
    mux = conn._mux
    streamed_before = mux.stats.stream_calls
    marker = uuid.uuid4().hex
    result = {}

    def run() -> None:
        cur = conn.cursor()
        cur.execute(f"SELECT pg_sleep(1), 'done' /* {marker} */")
        result["row"] = cur.fetchone()

    def running() -> bool:
        cur = watcher.cursor()
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                    "AND pid <> pg_backend_pid()", (f"%{marker}%",))
        return cur.fetchone()[0] == 1

    with another_call_in_flight(mux):
        t = threading.Thread(target=run)
        t.start()
        # Running in PostgreSQL, so the broker has read it: a drain lets it finish.
        _wait_for("the call runs in PostgreSQL", running)
        broker.process.terminate()
        t.join()
    assert result["row"][1] == "done"
    assert mux.stats.stream_calls == streamed_before + 1
    assert mux.stats.lost_calls == 0
    _wait_for("the drained stream ended", lambda: mux.threads() == [])
    assert mux._stream is None  # the next concurrent call goes unary (and opens a new one)
    conn.close()
    watcher.close()


def _lock_holder(broker_target: str, key: int) -> dbapi.Connection:
    """A connection to the test session's broker (not the one that drains)
    whose open transaction holds the advisory lock ``key`` exclusively: calls
    that take it shared wait, running, until the holder commits."""
    holder = dbapi.connect(broker_target, client_id=_client())
    holder.cursor().execute("SELECT pg_advisory_xact_lock(%s)", (key,))
    return holder


def test_a_drain_never_loses_a_call_running_ones_finish_and_unread_ones_fail_as_not_run(
        broker_factory, broker_target):
    # A drain window of 1 s, and a grace long enough for the calls held by the lock.
    broker = broker_factory({"BROKER_DRAIN_SECONDS": "1", "BROKER_SHUTDOWN_GRACE_SECONDS": "60"})
    key, keeper_key = (int(uuid.uuid4().int % (1 << 62)) for _ in range(2))
    marker, keeper_marker = uuid.uuid4().hex, uuid.uuid4().hex
    holder = _lock_holder(broker_target, key)
    # Holds a unary call running on the draining broker until the end, so that
    # the broker still answers the calls that go unary (and has not shut its
    # server down, which would cancel them).
    keeper_holder = _lock_holder(broker_target, keeper_key)
    watcher = dbapi.connect(broker_target, client_id=_client(), autocommit=True, pipeline=False)
    client = _client()
    # A connection per call (a connection runs one call at a time); one mux.
    names = ("held0", "held1", "read", "unread")
    conns = {name: dbapi.connect(broker.target, client_id=client, autocommit=True)
             for name in names}
    conns["keeper"] = dbapi.connect(broker.target, client_id=client, autocommit=True,
                                    pipeline=False)
    probe = dbapi.connect(broker.target, client_id=client, autocommit=True, pipeline=False)
    _stream_ready(conns["held0"])
    mux = conns["held0"]._mux
    assert all(conns[name]._mux is mux for name in names)
    outcomes: dict = {}

    def run(name: str, sql: str) -> None:
        try:
            cur = conns[name].cursor()
            cur.execute(sql)
            outcomes[name] = cur.fetchone()
        except dbapi.Error as e:
            outcomes[name] = e

    def waiting_for_the_lock(tag: str) -> int:
        cur = watcher.cursor()
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE %s AND pid <> pg_backend_pid()", (f"%{tag}%",))
        return cur.fetchone()[0]

    def drain_began() -> bool:
        try:
            probe.cursor().execute("SELECT 1")
            return False
        except dbapi.OperationalError as e:
            assert e.grpc_code == grpc.StatusCode.UNAVAILABLE
            return True

    def sent(count: int) -> Callable[[], bool]:
        def check() -> bool:
            with mux.lock:
                stream = mux._stream
                return stream is not None and sum(p.sent for p in stream.pending.values()) == count
        return check

    held_sql = f"SELECT pg_advisory_xact_lock_shared({key}), 'ran' /* {marker} */"
    keeper_sql = (f"SELECT pg_advisory_xact_lock_shared({keeper_key}), 'kept' "
                  f"/* {keeper_marker} */")
    keeper = threading.Thread(target=run, args=("keeper", keeper_sql))
    try:
        keeper.start()
        _wait_for("the keeper waits for its lock", lambda: waiting_for_the_lock(keeper_marker) == 1)
        with another_call_in_flight(mux):
            held = [threading.Thread(target=run, args=(f"held{i}", held_sql)) for i in range(2)]
            for t in held:
                t.start()
            # Both were sent; one waits for the lock in PostgreSQL (the other may
            # wait behind it on the same pipelined connection).
            _wait_for("both calls were sent on the stream", sent(2))
            _wait_for("a call waits for the lock", lambda: waiting_for_the_lock(marker) >= 1)
            broker.process.terminate()
            _wait_for("the drain window is over (unary calls are refused)", drain_began)
            # Read after the drain began: answered DRAINING, so it goes unary and
            # is refused there.
            read = threading.Thread(target=run, args=("read", "SELECT 'read'"))
            read.start()
            read.join()
            # The broker reads no further message: this call waits, unread,
            # until the stream ends by the drain.
            unread = threading.Thread(target=run, args=("unread", "SELECT 'unread'"))
            unread.start()
            _wait_for("the last call was sent on the stream", sent(3))
            holder.commit()
            for t in held + [unread]:
                t.join()
        keeper_holder.commit()
        keeper.join()
    finally:
        holder.close()
        keeper_holder.close()
    assert outcomes["held0"] == outcomes["held1"] == ("", "ran")
    assert outcomes["keeper"] == ("", "kept")
    for name in ("read", "unread"):
        error = outcomes[name]
        assert isinstance(error, dbapi.OperationalError), (name, error)
        assert error.grpc_code == grpc.StatusCode.UNAVAILABLE, (name, error)
        assert not error.message.endswith(LOST_SUFFIX), (name, error)
    assert mux.stats.lost_calls == 0
    assert mux.stats.fallbacks == 2
    assert mux.stats.stream_calls >= 2
    assert mux._stream is None
    assert broker.process.wait(timeout=_POLL_LIMIT) == 0
    for c in [*conns.values(), probe, watcher]:
        c.close()


def test_the_option_off_makes_every_call_unary(broker_target):
    before = set(threading.enumerate())
    conns = [dbapi.connect(broker_target, client_id=_client(), autocommit=True, pipeline=False)
             for _ in range(8)]
    try:
        def work(conn: dbapi.Connection) -> None:
            for n in range(20):
                cur = conn.cursor()
                cur.execute("SELECT %s::int8", (n,))
                assert cur.fetchone() == (n,)

        with futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(work, conns))
        assert all(c._mux is None for c in conns)
        assert not [t for t in set(threading.enumerate()) - before
                    if t.name.startswith("sessionbroker-pipeline")]
    finally:
        for c in conns:
            c.close()


def test_the_sqlalchemy_url_switches_the_stream_off():
    from sqlalchemy.engine import make_url

    from sessionbroker.sqlalchemy.base import SessionBrokerDialect
    _, kwargs = SessionBrokerDialect().create_connect_args(
        make_url("postgresql+sessionbroker://127.0.0.1:50051/?pipeline=false"))
    assert kwargs["pipeline"] is False


def test_no_thread_outlives_the_connections(broker_target):
    before = set(threading.enumerate())
    client = _client()
    conns = [dbapi.connect(broker_target, client_id=client, autocommit=True) for _ in range(16)]

    def work(conn: dbapi.Connection) -> None:
        for _ in range(30):
            conn.cursor().execute("SELECT 1")

    with futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(work, conns))
    mux = conns[0]._mux
    assert mux.stats.stream_calls > 0
    for c in conns:
        c.close()
    assert mux.threads() == []
    _wait_for("every thread the connections started has ended",
              lambda: set(threading.enumerate()) <= before)


class _ExecuteOnly(broker_pb2_grpc.SessionBrokerServicer):
    """A broker of an older version: Execute, and no Pipeline method."""

    def Execute(self, request, context):
        return broker_pb2.ExecuteResponse(command_tag="SELECT 1")


def test_a_broker_without_the_method_is_remembered_and_calls_stay_unary():
    server = grpc.server(futures.ThreadPoolExecutor(4))
    broker_pb2_grpc.add_SessionBrokerServicer_to_server(_ExecuteOnly(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = broker_pb2_grpc.SessionBrokerStub(channel)
    mux = PipelineMux(channel, ())
    mux.acquire()
    try:
        request = broker_pb2.ExecuteRequest(sql="SELECT 1")

        def call() -> "broker_pb2.ExecuteResponse":
            return mux.call("execute", request, 5.0,
                            lambda t: stub.Execute(request, timeout=t))

        with another_call_in_flight(mux):
            _wait_for("the broker's UNIMPLEMENTED is remembered", lambda: mux.unimplemented,
                      call)
            for _ in range(5):
                assert call().command_tag == "SELECT 1"
        assert mux.stats.stream_calls == 0
        assert mux.stats.streams_opened == 0
        assert mux.threads() == []
    finally:
        mux.release()
        channel.close()
        server.stop(None)


def _idle_stream(mux: PipelineMux):
    """A ready stream of the mux whose messages nobody sends (its threads are
    never started), so that calls stay queued: the state just before a break."""
    from sessionbroker._pipeline import _Stream
    stream = _Stream(mux)
    stream.ready = True
    stream.capacity = 8
    with mux.lock:
        mux._stream = stream
    return stream


def _call_in_thread(mux: PipelineMux, unary) -> dict:
    """Starts a concurrent call in a thread; its outcome lands in the dict."""
    outcome: dict = {}
    request = broker_pb2.ExecuteRequest(sql="SELECT 1")

    def run() -> None:
        try:
            outcome["value"] = mux.call("execute", request, None, unary)
        except grpc.RpcError as e:
            outcome["error"] = e

    outcome["thread"] = threading.Thread(target=run)
    outcome["thread"].start()
    return outcome


def test_calls_not_yet_sent_when_the_stream_breaks_go_unary_and_sent_ones_are_lost():
    channel = grpc.insecure_channel("127.0.0.1:1")  # never dialled: the stream is not started
    mux = PipelineMux(channel, ())
    mux.acquire()
    stream = _idle_stream(mux)
    unary_calls = []

    def unary(timeout):
        unary_calls.append(timeout)
        return "unary answer"

    with another_call_in_flight(mux):
        queued = _call_in_thread(mux, unary)
        sent = _call_in_thread(mux, unary)
        _wait_for("both calls are queued on the stream", lambda: len(stream.pending) == 2)
        with mux.lock:
            first = min(stream.pending)
            stream.pending[first].sent = True  # as if gRPC's thread had taken it
        mux._stream_ended(stream, grpc.StatusCode.UNAVAILABLE, "Socket closed", ())
        queued["thread"].join()
        sent["thread"].join()
    outcomes = [queued, sent]
    lost = [o for o in outcomes if "error" in o]
    answered = [o for o in outcomes if "value" in o]
    assert len(lost) == 1 and len(answered) == 1
    assert answered[0]["value"] == "unary answer" and unary_calls == [None]
    error = lost[0]["error"]
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "Socket closed" + LOST_SUFFIX
    assert mux.stats.lost_calls == 1 and mux.stats.fallbacks == 1
    mux.release()
    channel.close()


@pytest.mark.parametrize("reason,not_run", [("DRAINING", True), ("PIPELINE_LIMIT", False),
                                             ("", False)])
def test_sent_calls_of_a_stream_ended_by_the_drain_go_unary_and_of_other_ends_are_lost(
        reason, not_run):
    channel = grpc.insecure_channel("127.0.0.1:1")
    mux = PipelineMux(channel, ())
    mux.acquire()
    stream = _idle_stream(mux)
    unary_calls = []

    def unary(timeout):
        unary_calls.append(timeout)
        return "unary answer"

    with another_call_in_flight(mux):
        call = _call_in_thread(mux, unary)
        _wait_for("the call is queued on the stream", lambda: len(stream.pending) == 1)
        with mux.lock:
            next(iter(stream.pending.values())).sent = True
        trailers = (("sessionbroker-reason", reason),) if reason else ()
        retry_at_before = mux.reopen.retry_at
        mux._stream_ended(stream, grpc.StatusCode.UNAVAILABLE,
                          "the broker is shutting down", trailers)
        call["thread"].join()
    if not_run:
        assert call["value"] == "unary answer" and unary_calls == [None]
        assert mux.stats.lost_calls == 0 and mux.stats.fallbacks == 1
        # No new stream to the draining broker before the backoff, which grows.
        assert mux.reopen.retry_at > retry_at_before
        assert mux.reopen.backoff > 0.1
    else:
        error = call["error"]
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == "the broker is shutting down" + LOST_SUFFIX
        assert unary_calls == []
        assert mux.stats.lost_calls == 1 and mux.stats.fallbacks == 0
    mux.release()
    channel.close()


def test_a_stream_that_ended_ok_or_without_a_status_is_not_taken_for_a_drain():
    from sessionbroker._pipeline_common import StreamEnd
    drained = (("sessionbroker-reason", "DRAINING"),)
    assert StreamEnd(grpc.StatusCode.UNAVAILABLE, "x", drained).draining
    assert StreamEnd(grpc.StatusCode.UNAVAILABLE, "x", (("sessionbroker-reason", b"DRAINING"),)
                     ).draining
    assert not StreamEnd(grpc.StatusCode.OK, "", drained).draining
    assert not StreamEnd(None, "", drained).draining
    # By the token only, never by the message text.
    assert not StreamEnd(grpc.StatusCode.UNAVAILABLE, "DRAINING", ()).draining


@pytest.mark.parametrize("reason", ["PIPELINE_LIMIT", "DRAINING"])
def test_a_refusal_of_a_call_that_did_not_run_goes_unary_and_other_errors_do_not(reason):
    channel = grpc.insecure_channel("127.0.0.1:1")
    mux = PipelineMux(channel, ())
    mux.acquire()
    stream = _idle_stream(mux)
    with another_call_in_flight(mux):
        refused = _call_in_thread(mux, lambda t: "unary answer")
        exhausted = _call_in_thread(mux, lambda t: "unary answer")
        _wait_for("both calls are queued on the stream", lambda: len(stream.pending) == 2)
        first, second = sorted(stream.pending)
        code = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        stream._received(broker_pb2.PipelineResponse(results=[
            broker_pb2.PipelineResult(
                id=first, reason=reason, status=broker_pb2.RpcStatus(
                    code=code, message="the stream has 8 calls in flight, its limit "
                    "(BROKER_PIPELINE_MAX_IN_FLIGHT, advertised in the stream's first message)")),
            broker_pb2.PipelineResult(id=second, status=broker_pb2.RpcStatus(
                code=code, message="too many waiters for a connection"))]))
        refused["thread"].join()
        exhausted["thread"].join()
    by_id = {first: None, second: None}
    for o in (refused, exhausted):
        if "value" in o:
            by_id[first] = o
        else:
            by_id[second] = o
    assert by_id[first]["value"] == "unary answer"
    assert by_id[second]["error"].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert by_id[second]["error"].details() == "too many waiters for a connection"
    mux.release()
    channel.close()
