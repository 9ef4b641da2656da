"""PEP 249's connection and cursor methods against the live broker:
executemany, fetch*, arraysize, rowcount, description, iteration, context
managers, autocommit and transaction characteristics."""

import grpc
import pytest
from dbapi_helpers import wait_until

from sessionbroker import dbapi
from sessionbroker._pb import broker_pb2, broker_pb2_grpc


def _session(target, name):
    stub = broker_pb2_grpc.SessionBrokerStub(grpc.insecure_channel(target))
    return stub.GetSession(broker_pb2.GetSessionRequest(session=name), timeout=10)


def _held(target, name):
    session = _session(target, name)
    return session if session.held_by_stream else None


@pytest.fixture
def numbers(conn, table_name):
    cur = conn.cursor()
    cur.execute(f"CREATE TEMP TABLE {table_name} (n int, s text)")
    cur.executemany(f"INSERT INTO {table_name} VALUES (%s, %s)",
                    [(i, f"s{i}") for i in range(1, 6)])
    return table_name


def test_executemany_inserts_every_row_in_one_transaction(conn, numbers):
    cur = conn.cursor()
    assert cur.rowcount == -1
    cur.executemany(f"INSERT INTO {numbers} VALUES (%(n)s, %(s)s)",
                    [{"n": 10, "s": "a"}, {"n": 11, "s": "b"}])
    assert cur.rowcount == 2
    assert cur.description is None
    cur.execute(f"SELECT n FROM {numbers} ORDER BY n")
    assert [r[0] for r in cur.fetchall()] == [1, 2, 3, 4, 5, 10, 11]
    assert conn.in_transaction
    cur.executemany(f"INSERT INTO {numbers} VALUES (%s, %s)", [])
    assert cur.rowcount == 0
    conn.rollback()


def test_executemany_is_all_or_nothing_inside_the_transaction(conn, table_name):
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} (n int PRIMARY KEY)")
    conn.commit()
    try:
        with pytest.raises(dbapi.IntegrityError):
            cur.executemany(f"INSERT INTO {table_name} VALUES (%s)", [(1,), (2,), (1,)])
        conn.rollback()
        cur.execute(f"SELECT count(*) FROM {table_name}")
        assert cur.fetchone() == (0,)
    finally:
        conn.rollback()
        cur.execute(f"DROP TABLE {table_name}")
        conn.commit()


def test_fetchone_fetchmany_fetchall_walk_the_result(conn, numbers):
    cur = conn.cursor()
    cur.execute(f"SELECT n, s FROM {numbers} ORDER BY n")
    assert cur.rowcount == 5
    assert cur.rownumber == 0
    assert cur.fetchone() == (1, "s1")
    assert cur.arraysize == 1
    assert cur.fetchmany() == [(2, "s2")]
    cur.arraysize = 2
    assert cur.fetchmany() == [(3, "s3"), (4, "s4")]
    assert cur.fetchmany(10) == [(5, "s5")]
    assert cur.fetchmany(10) == []
    assert cur.fetchone() is None
    assert cur.fetchall() == []
    conn.rollback()


def test_a_cursor_iterates_over_its_rows(conn, numbers):
    with conn.cursor() as cur:
        cur.execute(f"SELECT n FROM {numbers} ORDER BY n")
        assert [r[0] for r in cur] == [1, 2, 3, 4, 5]
    assert cur.closed
    conn.rollback()


def test_description_and_rowcount_for_statements_without_rows(conn, numbers):
    cur = conn.cursor()
    cur.execute(f"UPDATE {numbers} SET s = 'x' WHERE n > %s", [2])
    assert cur.rowcount == 3
    assert cur.description is None
    assert cur.statusmessage == "UPDATE 3"
    with pytest.raises(dbapi.ProgrammingError, match="no results"):
        cur.fetchone()
    cur.execute("CREATE TEMP TABLE no_count_ddl (a int)")
    assert cur.rowcount == -1
    assert cur.lastrowid is None
    conn.rollback()


def test_description_has_seven_items_and_the_type_oid(conn):
    cur = conn.cursor()
    cur.execute("SELECT 1::int8 AS a, 'x'::text AS b, now() AS c, '\\x00'::bytea AS d")
    assert [len(d) for d in cur.description] == [7, 7, 7, 7]
    assert [d[0] for d in cur.description] == ["a", "b", "c", "d"]
    assert cur.description[0][1] == dbapi.NUMBER
    assert cur.description[1][1] == dbapi.STRING
    assert cur.description[2][1] == dbapi.DATETIME
    assert cur.description[3][1] == dbapi.BINARY
    conn.rollback()


def test_callproc_and_nextset_are_not_supported_and_size_hints_do_nothing(conn):
    cur = conn.cursor()
    with pytest.raises(dbapi.NotSupportedError):
        cur.callproc("f", [1])
    with pytest.raises(dbapi.NotSupportedError):
        cur.nextset()
    cur.setinputsizes([10])
    cur.setoutputsize(10)
    cur.setoutputsize(10, 0)
    cur.execute("SELECT 1")
    assert cur.fetchall() == [(1,)]
    conn.rollback()


def test_autocommit_runs_statements_without_a_transaction(broker_target, conn, table_name):
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} (n int)")
    cur.executemany(f"INSERT INTO {table_name} VALUES (%s)", [(1,), (2,)])
    assert cur.rowcount == 2
    assert not conn.in_transaction
    assert not _session(broker_target, conn.session_name).in_transaction
    other = dbapi.connect(broker_target)
    try:
        ocur = other.cursor()
        ocur.execute(f"SELECT count(*) FROM {table_name}")
        assert ocur.fetchone() == (2,)
        other.rollback()
    finally:
        other.close()
    cur.execute(f"DROP TABLE {table_name}")
    conn.autocommit = False
    cur.execute("SELECT 1")
    assert _session(broker_target, conn.session_name).in_transaction
    with pytest.raises(dbapi.ProgrammingError, match="inside a transaction"):
        conn.autocommit = True
    conn.rollback()


def test_isolation_level_and_read_only_apply_to_the_next_transaction(conn):
    assert conn.isolation_level is None
    conn.isolation_level = "SERIALIZABLE"
    conn.readonly = True
    cur = conn.cursor()
    cur.execute("SELECT current_setting('transaction_isolation'), "
                "current_setting('transaction_read_only')")
    assert cur.fetchone() == ("serializable", "on")
    with pytest.raises(dbapi.ProgrammingError):
        conn.isolation_level = "READ COMMITTED"
    conn.rollback()
    conn.set_session(isolation_level="REPEATABLE READ", readonly=False)
    assert conn.isolation_level == "REPEATABLE READ"
    cur.execute("SELECT current_setting('transaction_isolation'), "
                "current_setting('transaction_read_only')")
    assert cur.fetchone() == ("repeatable read", "off")
    conn.rollback()
    with pytest.raises(dbapi.ProgrammingError, match="unknown isolation level"):
        conn.isolation_level = "CHAOS"


def test_session_options_of_connect_reach_the_broker(broker_target):
    conn = dbapi.connect(broker_target, label="pytest-options", read_only=True,
                         isolation_level="REPEATABLE READ", ttl=30,
                         settings={"application_name": "sb-pytest"})
    try:
        # The KeepAlive stream takes the hold asynchronously (the lease covers
        # the moment in between).
        session = wait_until(lambda: _held(broker_target, conn.session_name),
                             "the KeepAlive stream holds the session")
        assert session.label == "pytest-options" and session.read_only
        assert session.isolation == broker_pb2.REPEATABLE_READ
        assert session.ttl.seconds == 30
        cur = conn.cursor()
        cur.execute("SELECT current_setting('application_name'), "
                    "current_setting('transaction_isolation')")
        assert cur.fetchone() == ("sb-pytest", "repeatable read")
        with pytest.raises(dbapi.InternalError) as info:  # 25006, read-only transaction
            cur.execute("CREATE TABLE ro_session_nope (a int)")
        assert info.value.sqlstate == "25006"
        conn.rollback()
    finally:
        conn.close()


def test_the_connection_context_manager_commits_or_rolls_back_then_closes(broker_target,
                                                                          table_name):
    with dbapi.connect(broker_target) as conn:
        conn.cursor().execute(f"CREATE TABLE {table_name} (n int)")
    assert conn.closed == 1
    with pytest.raises(ZeroDivisionError):
        with dbapi.connect(broker_target) as conn:
            conn.cursor().execute(f"INSERT INTO {table_name} VALUES (1)")
            raise ZeroDivisionError
    with dbapi.connect(broker_target) as conn:
        cur = conn.cursor()
        cur.execute(f"SELECT count(*) FROM {table_name}")
        assert cur.fetchone() == (0,)
        cur.execute(f"DROP TABLE {table_name}")


def test_sql_without_parameters_is_sent_verbatim(conn):
    cur = conn.cursor()
    cur.execute("SELECT '100%', 7 % 3")
    assert cur.fetchone() == ("100%", 1)
    cur.execute("SELECT %s || '%%', 7 %% 3", ["50"])
    assert cur.fetchone() == ("50%", 1)
    conn.rollback()
