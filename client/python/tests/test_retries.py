"""Request ids through the DB-API driver (docs/retries.md): an explicit
request_id on execute(), and retry_writes, which gives each autocommit
statement an id of its own and retries it with that id when the answer is
lost. A lost answer is simulated by a stub that forwards the call to the live
broker and then reports UNAVAILABLE, as a broken network would after the
statement ran."""

from typing import List

import grpc
import pytest

from sessionbroker import dbapi


class _LostAnswer(grpc.RpcError):
    """What a call whose response never arrived raises."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "Socket closed"

    def trailing_metadata(self):
        return ()


class _LosingStub:
    """Forwards every call to the real stub; the first `lose` Execute answers
    are dropped after the broker ran the statement. Records the request ids."""

    def __init__(self, real, lose: int) -> None:
        self._real = real
        self._lose = lose
        self.request_ids: List[str] = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def Execute(self, request, **kwargs):  # noqa: N802 (the RPC's name)
        self.request_ids.append(request.request_id)
        response = self._real.Execute(request, **kwargs)
        if self._lose > 0:
            self._lose -= 1
            raise _LostAnswer()
        return response


@pytest.fixture
def rows(conn, table_name):
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} (id serial PRIMARY KEY, v text)")
    yield table_name
    cur.execute(f"DROP TABLE {table_name}")


def _count(conn, table: str, v: str) -> int:
    cur = conn.cursor()
    cur.execute(f"SELECT count(*) FROM {table} WHERE v = %s", (v,))
    return cur.fetchone()[0]


def test_an_execute_retried_with_its_request_id_runs_once_and_returns_the_first_rows(conn, rows):
    cur = conn.cursor()
    sql = f"INSERT INTO {rows} (v) VALUES (%s) RETURNING id"
    cur.execute(sql, ("once",), request_id="py-req-1")
    first = cur.fetchall()
    cur.execute(sql, ("once",), request_id="py-req-1")
    assert cur.fetchall() == first
    assert _count(conn, rows, "once") == 1


def test_the_same_request_id_with_other_parameters_is_a_programming_error(conn, rows):
    cur = conn.cursor()
    sql = f"INSERT INTO {rows} (v) VALUES (%s)"
    cur.execute(sql, ("a",), request_id="py-req-2")
    with pytest.raises(dbapi.ProgrammingError, match="different request"):
        cur.execute(sql, ("b",), request_id="py-req-2")
    assert _count(conn, rows, "b") == 0


def test_a_malformed_request_id_is_refused_before_anything_runs(conn, rows):
    cur = conn.cursor()
    with pytest.raises(dbapi.ProgrammingError, match="at most 128"):
        cur.execute(f"INSERT INTO {rows} (v) VALUES ('x')", request_id="x" * 129)
    assert _count(conn, rows, "x") == 0


def test_retry_writes_retries_a_lost_answer_with_the_same_id_and_writes_once(
        broker_target, table_name):
    conn = dbapi.connect(broker_target, client_id="pytest", autocommit=True, retry_writes=True)
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE {table_name} (id serial PRIMARY KEY, v text)")
        stub = _LosingStub(conn._stub, lose=2)
        conn._stub = stub
        cur.execute(f"INSERT INTO {table_name} (v) VALUES (%s) RETURNING id", ("lost",))
        assert cur.rowcount == 1
        assert len(stub.request_ids) == 3
        assert stub.request_ids[0] and len(set(stub.request_ids)) == 1
        assert _count(conn, table_name, "lost") == 1
        cur.execute(f"DROP TABLE {table_name}")
    finally:
        conn.close()


def test_retry_writes_gives_each_execute_an_id_of_its_own(broker_target, table_name):
    conn = dbapi.connect(broker_target, client_id="pytest", autocommit=True, retry_writes=True)
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE {table_name} (v text)")
        stub = _LosingStub(conn._stub, lose=0)
        conn._stub = stub
        for _ in range(2):
            cur.execute(f"INSERT INTO {table_name} (v) VALUES ('twice')")
        assert _count(conn, table_name, "twice") == 2
        assert len(set(stub.request_ids[:2])) == 2
        cur.execute(f"DROP TABLE {table_name}")
    finally:
        conn.close()


def test_retry_writes_gives_no_id_inside_a_transaction_and_does_not_retry(broker_target,
                                                                           table_name):
    conn = dbapi.connect(broker_target, client_id="pytest", retry_writes=True)
    try:
        cur = conn.cursor()
        stub = _LosingStub(conn._stub, lose=1)
        conn._stub = stub
        with pytest.raises(dbapi.OperationalError):
            cur.execute("SELECT 1")
        assert stub.request_ids == [""]
    finally:
        conn.close()
