"""The DB-API connection and cursor against a live broker: statements,
fetching, transactions, close."""

import grpc
import pytest

from sessionbroker import dbapi
from sessionbroker._pb import broker_pb2, broker_pb2_grpc


def _session_status(target: str, name: str) -> grpc.StatusCode:
    stub = broker_pb2_grpc.SessionBrokerStub(grpc.insecure_channel(target))
    try:
        stub.GetSession(broker_pb2.GetSessionRequest(session=name), timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def test_execute_and_fetch_return_typed_rows(conn):
    cur = conn.cursor()
    cur.execute("SELECT %s::int4 + 1 AS n, %s::text AS t", [41, "hi"])
    assert [d[0] for d in cur.description] == ["n", "t"]
    assert cur.description[0][1] == 23 and cur.description[1][1] == 25
    assert cur.fetchall() == [(42, "hi")]
    assert cur.rowcount == 1


def test_commit_makes_writes_visible_to_other_connections(broker_target, conn, table_name):
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    conn.commit()
    cur.execute(f"INSERT INTO {table_name} VALUES (%s)", [1])
    assert conn.in_transaction
    other = dbapi.connect(broker_target)
    try:
        ocur = other.cursor()
        ocur.execute(f"SELECT count(*) FROM {table_name}")
        assert ocur.fetchone() == (0,)
        other.rollback()
        conn.commit()
        assert not conn.in_transaction
        ocur.execute(f"SELECT count(*) FROM {table_name}")
        assert ocur.fetchone() == (1,)
        ocur.execute(f"DROP TABLE {table_name}")
        other.commit()
    finally:
        other.close()


def test_rollback_discards_the_transaction(conn, table_name):
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} (id int)")
    conn.commit()
    cur.execute(f"INSERT INTO {table_name} VALUES (1)")
    conn.rollback()
    cur.execute(f"SELECT count(*) FROM {table_name}")
    assert cur.fetchone() == (0,)
    cur.execute(f"DROP TABLE {table_name}")
    conn.commit()


def test_close_ends_the_session(broker_target):
    conn = dbapi.connect(broker_target)
    name = conn.session_name
    assert _session_status(broker_target, name) == grpc.StatusCode.OK
    conn.close()
    assert conn.closed == 1
    # The broker remembers ended sessions for a while: "it ended", not NOT_FOUND.
    assert _session_status(broker_target, name) == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(dbapi.InterfaceError):
        conn.cursor()
    conn.close()  # idempotent
