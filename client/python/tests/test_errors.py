"""Every PEP 249 exception class reached through the live broker, with the
SQLSTATE and the fields the broker reports."""

import pytest

from sessionbroker import dbapi

RAISER = """
CREATE OR REPLACE FUNCTION pg_temp.raise_sqlstate(code text) RETURNS void
LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'raised %', code USING ERRCODE = code; END $$
"""


@pytest.mark.parametrize("sqlstate,cls", [
    ("23514", dbapi.IntegrityError),
    ("22003", dbapi.DataError),
    ("42601", dbapi.ProgrammingError),
    ("40001", dbapi.OperationalError),
    ("40P01", dbapi.OperationalError),
    ("0A000", dbapi.NotSupportedError),
    ("XX000", dbapi.InternalError),
    ("P0001", dbapi.InternalError),
    ("53100", dbapi.OperationalError),
    ("01000", dbapi.DatabaseError),
])
def test_a_raised_sqlstate_reaches_its_exception_class(conn, sqlstate, cls):
    cur = conn.cursor()
    cur.execute(RAISER)
    with pytest.raises(dbapi.DatabaseError) as info:
        cur.execute("SELECT pg_temp.raise_sqlstate(%s)", [sqlstate])
    assert type(info.value) is cls
    assert info.value.sqlstate == info.value.pgcode == sqlstate
    assert f"raised {sqlstate}" in info.value.pgerror
    assert info.value.grpc_code is not None
    conn.rollback()


def test_a_unique_violation_is_an_integrity_error_naming_its_constraint(conn, table_name):
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} (id int CONSTRAINT {table_name}_pk PRIMARY KEY)")
    conn.commit()
    try:
        cur.execute(f"INSERT INTO {table_name} VALUES (1)")
        conn.commit()
        with pytest.raises(dbapi.IntegrityError) as info:
            cur.execute(f"INSERT INTO {table_name} VALUES (%s)", [1])
        err = info.value
        assert err.sqlstate == "23505"
        assert f"{table_name}_pk" in err.pgerror
        # PostgreSQL's fields, from the SqlErrorDetail the broker sends.
        assert err.constraint_name == f"{table_name}_pk"
        assert err.table_name == table_name and err.schema_name == "public"
        assert err.detail == "Key (id)=(1) already exists."
        assert err.message_primary.startswith("duplicate key value violates unique constraint")
        assert err.severity == "ERROR"
        assert err.diag.constraint_name == err.constraint_name
        conn.rollback()
    finally:
        cur.execute(f"DROP TABLE {table_name}")
        conn.commit()


def test_an_undefined_table_is_a_programming_error(conn):
    cur = conn.cursor()
    with pytest.raises(dbapi.ProgrammingError) as info:
        cur.execute("SELECT * FROM no_such_table_anywhere")
    assert info.value.sqlstate == "42P01"
    assert not dbapi.is_disconnect(info.value)
    conn.rollback()


def test_after_a_failed_statement_the_transaction_is_aborted_until_rollback(conn):
    cur = conn.cursor()
    cur.execute("SELECT 1")
    with pytest.raises(dbapi.DataError):
        cur.execute("SELECT 1 / 0")
    assert conn.in_transaction
    with pytest.raises(dbapi.InternalError) as info:
        cur.execute("SELECT 1")
    assert info.value.reason == "TX_STATEMENT_FAILED"
    conn.rollback()
    cur.execute("SELECT 2")
    assert cur.fetchone() == (2,)
    conn.rollback()


def test_a_failed_commit_ends_the_transaction(conn):
    cur = conn.cursor()
    with pytest.raises(dbapi.DataError):
        cur.execute("SELECT 1 / 0")
    with pytest.raises(dbapi.DatabaseError):
        conn.commit()
    assert not conn.in_transaction
    cur.execute("SELECT 3")
    assert cur.fetchone() == (3,)
    conn.rollback()


def test_a_savepoint_recovers_a_transaction_from_a_failed_statement(conn):
    """After a failure following a SAVEPOINT, the transaction is aborted
    (25P02) until ROLLBACK TO; then it goes on and commits."""
    cur = conn.cursor()
    cur.execute("SAVEPOINT before_division")
    cur.execute("SELECT 41")
    with pytest.raises(dbapi.DataError) as failed:
        cur.execute("SELECT 1 / 0")
    assert failed.value.sqlstate == "22012"
    with pytest.raises(dbapi.Error) as aborted:
        cur.execute("SELECT 2")
    assert aborted.value.sqlstate == "25P02"
    cur.execute("ROLLBACK TO SAVEPOINT before_division")
    cur.execute("SELECT 3")
    assert cur.fetchone() == (3,)
    conn.commit()


def test_savepoints_in_autocommit_are_refused(conn):
    conn.autocommit = True
    with pytest.raises(dbapi.ProgrammingError, match="only inside a session's transaction"):
        conn.cursor().execute("SAVEPOINT s")


def test_broker_refusals_without_sqlstate_map_from_the_grpc_code(conn):
    cur = conn.cursor()
    with pytest.raises(dbapi.ProgrammingError) as info:
        cur.execute("SELECT 1; SELECT 2")  # several statements: INVALID_ARGUMENT
    assert info.value.sqlstate is None
    assert info.value.grpc_code.name == "INVALID_ARGUMENT"
    with pytest.raises(dbapi.ProgrammingError):
        cur.execute("BEGIN")  # transaction control is the driver's
    conn.rollback()


def test_a_statement_over_its_deadline_is_an_operational_error(broker_target):
    conn = dbapi.connect(broker_target, timeout=0.2)
    try:
        with pytest.raises(dbapi.OperationalError) as info:
            conn.cursor().execute("SELECT pg_sleep(30)")
        assert info.value.grpc_code.name == "DEADLINE_EXCEEDED"
    finally:
        conn.close()


def test_interface_errors_for_closed_cursors_and_connections(broker_target):
    conn = dbapi.connect(broker_target)
    cur = conn.cursor()
    cur.close()
    with pytest.raises(dbapi.InterfaceError):
        cur.execute("SELECT 1")
    cur = conn.cursor()
    conn.close()
    with pytest.raises(dbapi.InterfaceError):
        cur.execute("SELECT 1")
    with pytest.raises(dbapi.InterfaceError):
        conn.commit()
    with pytest.raises(dbapi.InterfaceError):
        conn.rollback()


def test_an_unreachable_broker_is_an_operational_error():
    with pytest.raises(dbapi.OperationalError) as info:
        dbapi.connect("127.0.0.1:1", connect_timeout=0.3)
    # connect() waits for the broker until connect_timeout.
    assert info.value.grpc_code.name in ("DEADLINE_EXCEEDED", "UNAVAILABLE")
    assert "cannot open a session on the broker at 127.0.0.1:1" in str(info.value)



def test_error_fields_name_the_column_the_type_and_the_position(conn, table_name):
    cur = conn.cursor()
    cur.execute(f"CREATE TEMP TABLE {table_name} (id int NOT NULL)")
    with pytest.raises(dbapi.IntegrityError) as info:
        cur.execute(f"INSERT INTO {table_name} VALUES (%s)", [None])
    assert info.value.sqlstate == "23502"
    assert (info.value.table_name, info.value.column_name) == (table_name, "id")
    conn.rollback()
    cur.execute("CREATE DOMAIN pg_temp.positive AS int CHECK (VALUE > 0)")
    with pytest.raises(dbapi.IntegrityError) as info:
        cur.execute("SELECT (-1)::pg_temp.positive")
    assert info.value.sqlstate == "23514" and info.value.datatype_name == "positive"
    conn.rollback()
    with pytest.raises(dbapi.ProgrammingError) as info:
        cur.execute("SELECT nosuchcolumn FROM pg_class")
    assert info.value.sqlstate == "42703" and info.value.position == 8
    conn.rollback()


def test_a_batch_error_names_the_failing_statement(conn, table_name):
    cur = conn.cursor()
    cur.execute(f"CREATE TEMP TABLE {table_name} (id int PRIMARY KEY)")
    with pytest.raises(dbapi.IntegrityError) as info:
        cur.executemany(f"INSERT INTO {table_name} VALUES (%s)", [(1,), (2,), (2,)])
    assert info.value.statement_index == 3
    conn.rollback()
