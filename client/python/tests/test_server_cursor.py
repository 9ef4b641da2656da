"""Named (server-side) cursors: ``connection.cursor(name)`` streams its
result through StreamExecute, in autocommit and inside a transaction, with
the same values, errors and command tag as an ordinary cursor."""

import pytest

from sessionbroker import dbapi


def test_named_cursor_streams_every_row_with_types_and_nulls(conn):
    conn.autocommit = True
    cur = conn.cursor("big")
    assert isinstance(cur, dbapi.ServerCursor)
    cur.execute("SELECT g AS n, NULLIF(g %% 3, 0) AS m, 'r' || g AS t "
                "FROM generate_series(1, %s) g", (50000,))
    assert [d[0] for d in cur.description] == ["n", "m", "t"]
    assert cur.rowcount == -1  # not known before the end
    first = cur.fetchone()
    assert first == (1, 1, "r1")
    assert cur.fetchmany(2) == [(2, 2, "r2"), (3, None, "r3")]
    rest = cur.fetchall()
    assert len(rest) == 49997
    assert rest[-1] == (50000, 2, "r50000")
    assert cur.fetchone() is None
    assert cur.rowcount == 50000
    assert cur.statusmessage == "SELECT 50000"
    cur.close()


def test_named_cursor_iterates_and_an_empty_result_has_a_description(conn):
    cur = conn.cursor("empty")
    cur.execute("SELECT 1 AS one WHERE false")
    assert cur.description[0][0] == "one"
    assert list(cur) == []
    assert cur.statusmessage == "SELECT 0"
    conn.rollback()


def test_an_error_mid_stream_raises_after_the_rows_before_it(conn):
    conn.autocommit = True
    cur = conn.cursor("failing")
    cur.execute("SELECT 1 / (3000 - g) FROM generate_series(1, 5000) g")
    got = 0
    with pytest.raises(dbapi.DataError) as info:
        while cur.fetchone() is not None:
            got += 1
    assert info.value.sqlstate == "22012"
    assert got == 2999


def test_named_cursor_inside_a_transaction_sees_its_writes(conn, table_name):
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} (n int)")
    cur.execute(f"INSERT INTO {table_name} SELECT generate_series(1, 100)")
    streamed = conn.cursor("in_tx")
    streamed.execute(f"SELECT n FROM {table_name} ORDER BY n")
    assert [r[0] for r in streamed.fetchall()] == list(range(1, 101))
    streamed.close()
    conn.rollback()
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NULL", (table_name,))
    assert cur.fetchone() == (True,)


def test_closing_an_unread_named_cursor_leaves_the_connection_usable(conn):
    conn.autocommit = True
    cur = conn.cursor("abandoned")
    cur.execute("SELECT generate_series(1, 100000000)")
    assert cur.fetchone() == (1,)
    cur.close()
    other = conn.cursor()
    other.execute("SELECT 7")
    assert other.fetchone() == (7,)
