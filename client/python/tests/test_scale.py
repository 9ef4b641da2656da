"""Large values, large and NULL-heavy results, and many threads at once."""

import os
import threading

from sessionbroker import dbapi

MIB = 1 << 20


def test_a_one_mebibyte_value_round_trips_as_text_and_bytea(conn, table_name):
    text = "x" * (MIB - 1) + "✓"
    blob = os.urandom(MIB)
    cur = conn.cursor()
    cur.execute(f"CREATE TEMP TABLE {table_name} (t text, b bytea)")
    cur.execute(f"INSERT INTO {table_name} VALUES (%s, %s)", [text, blob])
    cur.execute(f"SELECT t, b, length(t), length(b) FROM {table_name}")
    assert cur.fetchone() == (text, blob, MIB, MIB)
    conn.rollback()


def test_a_hundred_thousand_rows_arrive_complete_and_in_order(conn):
    cur = conn.cursor()
    cur.execute("SELECT g, 'row ' || g FROM generate_series(1, 100000) AS g")
    assert cur.rowcount == 100000
    first = cur.fetchmany(10)
    assert first[0] == (1, "row 1") and first[-1] == (10, "row 10")
    rest = cur.fetchall()
    assert len(rest) == 99990
    assert rest[-1] == (100000, "row 100000")
    assert all(r[0] == i for i, r in enumerate(rest, start=11))
    conn.rollback()


def test_null_heavy_results_keep_every_null_and_every_value(conn):
    columns = ", ".join(f"CASE WHEN g % {k} = 0 THEN g END AS c{k}" for k in range(2, 42))
    cur = conn.cursor()
    cur.execute(f"SELECT g, {columns}, NULL::text AS never FROM generate_series(1, 2000) AS g")
    rows = cur.fetchall()
    assert len(rows) == 2000 and len(cur.description) == 42
    for row in rows:
        g = row[0]
        assert row[1:41] == tuple(g if g % k == 0 else None for k in range(2, 42))
        assert row[41] is None
    conn.rollback()


def test_thirty_two_threads_each_with_a_connection_work_at_once(broker_target, table_name):
    setup = dbapi.connect(broker_target)
    setup.cursor().execute(f"CREATE TABLE {table_name} (worker int, n int)")
    setup.commit()
    start = threading.Barrier(32)
    errors = []

    def work(worker: int) -> None:
        try:
            conn = dbapi.connect(broker_target, client_id=f"thread-{worker}")
            try:
                start.wait()
                cur = conn.cursor()
                for n in range(10):
                    cur.execute(f"INSERT INTO {table_name} VALUES (%s, %s)", [worker, n])
                    cur.execute(f"SELECT count(*) FROM {table_name} WHERE worker = %s", [worker])
                    assert cur.fetchone() == (n + 1,)
                    conn.commit()
            finally:
                conn.close()
        except BaseException as e:  # reported below, with the worker
            errors.append((worker, e))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cur = setup.cursor()
    cur.execute(f"SELECT worker, count(*) FROM {table_name} GROUP BY worker ORDER BY worker")
    assert cur.fetchall() == [(w, 10) for w in range(32)]
    cur.execute(f"DROP TABLE {table_name}")
    setup.commit()
    setup.close()


def test_one_connection_shared_by_threads_serializes_their_calls(conn, table_name):
    cur = conn.cursor()
    # A real table: temporary ones end with the transaction's connection.
    cur.execute(f"CREATE TABLE {table_name} (n int)")
    conn.commit()
    errors = []

    def work(worker: int) -> None:
        try:
            own = conn.cursor()  # threadsafety 2: connections shared, cursors not
            for n in range(20):
                own.execute(f"INSERT INTO {table_name} VALUES (%s)", [worker * 100 + n])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    conn.commit()
    cur.execute(f"SELECT count(DISTINCT n) FROM {table_name}")
    assert cur.fetchone() == (160,)
    cur.execute(f"DROP TABLE {table_name}")
    conn.commit()
