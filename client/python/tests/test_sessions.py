"""A connection is a broker session: held by the process's one KeepAlive
stream, ended by close(), and reported broken (a disconnect) when the broker
ends it or rolls its transaction back for idling."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import pytest
from dbapi_helpers import wait_until

from sessionbroker import dbapi
from sessionbroker._pb import broker_pb2, broker_pb2_grpc


def _stub(target):
    return broker_pb2_grpc.SessionBrokerStub(grpc.insecure_channel(target))


def _end_reason(target, name):
    """The sessionbroker-reason GetSession reports for an ended session, or None."""
    try:
        _stub(target).GetSession(broker_pb2.GetSessionRequest(session=name), timeout=10)
        return None
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()
        return dict(e.trailing_metadata()).get("sessionbroker-reason")


def _get(target, name):
    """The session, or the gRPC code GetSession failed with."""
    try:
        return _stub(target).GetSession(broker_pb2.GetSessionRequest(session=name), timeout=10)
    except grpc.RpcError as e:
        return e.code()


def test_keepalive_keeps_a_session_alive_past_its_ttl(broker_target):
    # The control: a session nobody holds ends when its 1 s ttl runs out.
    stub = _stub(broker_target)
    ttl = broker_pb2.BeginSessionRequest(label="unheld")
    ttl.ttl.seconds = 1
    unheld = stub.BeginSession(ttl, timeout=10).name
    conn = dbapi.connect(broker_target, ttl=1)
    try:
        wait_until(lambda: _get(broker_target, unheld) == grpc.StatusCode.FAILED_PRECONDITION,
                   "the unheld session's 1 s lease runs out")
        time.sleep(1.5)  # and then longer than the connection's ttl again
        session = _get(broker_target, conn.session_name)
        assert isinstance(session, broker_pb2.Session) and session.held_by_stream
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        conn.commit()
    finally:
        conn.close()


def test_one_keepalive_stream_holds_every_connection_of_the_process(broker_target):
    conns = [dbapi.connect(broker_target) for _ in range(5)]
    try:
        keepalives = {id(c._keepalive) for c in conns}
        assert len(keepalives) == 1
        held = conns[0]._keepalive.held_names()
        assert {c.session_name for c in conns} <= set(held)
        name = conns[0]._keepalive.thread_name
        assert broker_target in name
        assert [t.name for t in threading.enumerate()].count(name) == 1
        for c in conns:
            wait_until(lambda: _get(broker_target, c.session_name).held_by_stream,
                       "the stream holds every session")
    finally:
        for c in conns:
            c.close()
    assert not {c.session_name for c in conns} & set(conns[0]._keepalive.held_names())
    # With nothing held the stream and its thread end.
    wait_until(lambda: name not in [t.name for t in threading.enumerate()],
               "the KeepAlive thread ends with the last session it held")


def test_close_ends_the_session_and_rolls_back_its_transaction(broker_target, table_name):
    conn = dbapi.connect(broker_target)
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} (n int)")
    conn.close()
    assert _end_reason(broker_target, conn.session_name) == "SESSION_ENDED"
    other = dbapi.connect(broker_target)
    try:
        ocur = other.cursor()
        ocur.execute("SELECT to_regclass(%s) IS NULL", [table_name])
        assert ocur.fetchone() == (True,)
    finally:
        other.close()


def test_a_session_the_broker_ended_makes_the_connection_a_disconnect(broker_target):
    conn = dbapi.connect(broker_target)
    _stub(broker_target).EndSession(broker_pb2.EndSessionRequest(session=conn.session_name),
                                    timeout=10)
    # The KeepAlive stream hears of it and the connection reports itself broken.
    wait_until(lambda: conn.closed == 2, "the KeepAlive stream reports the session ended")
    with pytest.raises(dbapi.OperationalError) as info:
        conn.cursor().execute("SELECT 1")
    assert dbapi.is_disconnect(info.value)
    assert conn.session_name in str(info.value)
    with pytest.raises(dbapi.OperationalError):
        conn.rollback()
    conn.close()  # never raises for an ended session
    assert conn.closed == 1


def test_a_statement_on_an_ended_session_reports_the_reason(broker_target):
    conn = dbapi.connect(broker_target)
    # Not held any more: the broker's answer to the statement itself decides.
    conn._keepalive.release(conn._core.lease)
    _stub(broker_target).EndSession(broker_pb2.EndSessionRequest(session=conn.session_name),
                                    timeout=10)
    with pytest.raises(dbapi.OperationalError) as info:
        conn.cursor().execute("SELECT 1")
    assert info.value.reason == "SESSION_ENDED"
    assert dbapi.is_disconnect(info.value)
    assert conn.closed == 2
    conn.close()


@pytest.fixture(scope="module")
def idle_broker(broker_factory):
    """A broker that rolls back transactions idle for 0.3 s."""
    return broker_factory({"BROKER_TX_IDLE_TIMEOUT": "0.3"})


def test_a_transaction_rolled_back_for_idling_is_a_disconnect(idle_broker, table_name):
    target = idle_broker.target
    conn = dbapi.connect(target)
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} (n int)")
    wait_until(lambda: _get(target, conn.session_name).transaction_aborted,
               "the broker rolls back the idle transaction")
    with pytest.raises(dbapi.OperationalError) as info:
        cur.execute("SELECT 1")
    err = info.value
    assert err.reason == "TX_IDLE_TIMEOUT"
    assert "BROKER_TX_IDLE_TIMEOUT" in str(err)
    assert dbapi.is_disconnect(err) and conn.closed == 2
    conn.close()
    # close() ended the session even though the connection was broken.
    assert _end_reason(target, conn.session_name) == "SESSION_ENDED"
    other = dbapi.connect(target, autocommit=True)
    try:
        ocur = other.cursor()
        ocur.execute("SELECT to_regclass(%s) IS NULL", [table_name])
        assert ocur.fetchone() == (True,)  # nothing of it was committed
    finally:
        other.close()


def test_ping_succeeds_on_an_open_session_and_is_a_disconnect_on_an_ended_one(broker_target):
    conn = dbapi.connect(broker_target)
    conn.ping()
    assert not conn.in_transaction  # no database work, no transaction
    conn._keepalive.release(conn._core.lease)
    _stub(broker_target).EndSession(broker_pb2.EndSessionRequest(session=conn.session_name),
                                    timeout=10)
    with pytest.raises(dbapi.OperationalError) as info:
        conn.ping()
    assert dbapi.is_disconnect(info.value) and info.value.reason == "SESSION_ENDED"
    assert conn.closed == 2
    conn.close()


def test_a_killed_process_sessions_end_after_the_orphan_grace(broker_target):
    # A child process opens a transaction (pinning a pooled connection) and
    # is killed; its KeepAlive stream breaks and the broker ends the session
    # after BROKER_SESSION_ORPHAN_GRACE (2 s in the test broker), long before
    # the session's 1 h ttl.
    child_code = textwrap.dedent("""
        import sys, time
        sys.path.insert(0, sys.argv[2])
        from sessionbroker import dbapi
        conn = dbapi.connect(sys.argv[1], ttl=3600)
        conn.cursor().execute("SELECT 1")
        print(conn.session_name, flush=True)
        time.sleep(3600)
    """)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-c", child_code, broker_target, package_root],
                             stdout=subprocess.PIPE, text=True)
    try:
        name = child.stdout.readline().strip()
        assert name, "the child printed no session name"
        wait_until(lambda: _get(broker_target, name).held_by_stream, "the child holds it")
        assert _get(broker_target, name).in_transaction
    finally:
        child.kill()
        child.wait()
    wait_until(lambda: _end_reason(broker_target, name) == "SESSION_ORPHANED",
               "the broker ends the orphaned session")
