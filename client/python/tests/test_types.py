"""Every supported Python type both ways through the broker and PostgreSQL:
parameters into typed columns and back, results decoded from the column
type, arrays (nested, with NULLs), and DataError for what cannot convert."""

import datetime as dt
import decimal
import uuid

import pytest

from sessionbroker import dbapi

UTC = dt.timezone.utc
PLUS2 = dt.timezone(dt.timedelta(hours=2))

# (column type, Python value sent, value expected back)
ROUND_TRIPS = [
    ("int2", 32767, 32767),
    ("int4", -2147483648, -2147483648),
    ("int8", 9223372036854775807, 9223372036854775807),
    ("numeric", 10 ** 30, decimal.Decimal(10 ** 30)),  # beyond int64: sent as numeric
    ("float8", 0.1, 0.1),
    ("float8", float("inf"), float("inf")),
    ("float4", 1.5, 1.5),
    ("numeric", decimal.Decimal("12345678901234567890.123456789"),
     decimal.Decimal("12345678901234567890.123456789")),
    ("numeric", decimal.Decimal("-0.000100"), decimal.Decimal("-0.000100")),
    ("bool", True, True),
    ("bool", False, False),
    ("text", "héllo 'quoted' %s \\ ✓", "héllo 'quoted' %s \\ ✓"),
    ("varchar(10)", "short", "short"),
    ("char(4)", "ab", "ab  "),
    ("bytea", bytes(range(256)), bytes(range(256))),
    ("bytea", bytearray(b"\x00\xff"), b"\x00\xff"),
    ("bytea", memoryview(b"mv"), b"mv"),
    ("date", dt.date(2024, 2, 29), dt.date(2024, 2, 29)),
    ("time", dt.time(12, 34, 56, 789000), dt.time(12, 34, 56, 789000)),
    ("timetz", dt.time(12, 34, 56, tzinfo=PLUS2), dt.time(12, 34, 56, tzinfo=PLUS2)),
    ("timestamp", dt.datetime(2024, 2, 29, 12, 34, 56, 123456),
     dt.datetime(2024, 2, 29, 12, 34, 56, 123456)),
    ("timestamptz", dt.datetime(2024, 2, 29, 12, 34, 56, tzinfo=PLUS2),
     dt.datetime(2024, 2, 29, 10, 34, 56, tzinfo=UTC)),
    ("interval", dt.timedelta(days=1, hours=2, microseconds=5),
     dt.timedelta(days=1, hours=2, microseconds=5)),
    ("interval", dt.timedelta(days=-3, seconds=10), dt.timedelta(days=-3, seconds=10)),
    ("uuid", uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
     uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    ("jsonb", {"b": [1, 2.5, None, "x"], "a": {"n": True}},
     {"a": {"n": True}, "b": [1, 2.5, None, "x"]}),
    ("json", dbapi.Json([1, "two"]), [1, "two"]),
    ("jsonb", dbapi.Json("just a string"), "just a string"),
    ("int4[]", [1, None, 3], [1, None, 3]),
    ("int8[]", [[1, 2], [3, 4]], [[1, 2], [3, 4]]),
    ("text[]", ["a", "b,c", 'd"e', None, ""], ["a", "b,c", 'd"e', None, ""]),
    ("text[]", [], []),
    ("numeric[]", [decimal.Decimal("1.5"), None], [decimal.Decimal("1.5"), None]),
    ("bool[]", [True, False], [True, False]),
    ("float8[]", [0.5, -1e300], [0.5, -1e300]),
    ("bytea[]", [b"\x00\x01", None], [b"\x00\x01", None]),
    ("date[]", [dt.date(2020, 1, 1), None], [dt.date(2020, 1, 1), None]),
    ("timestamptz[]", [dt.datetime(2020, 1, 1, tzinfo=UTC)], [dt.datetime(2020, 1, 1,
                                                                           tzinfo=UTC)]),
    ("uuid[]", [uuid.UUID(int=1)], [uuid.UUID(int=1)]),
    ("jsonb[]", [dbapi.Json({"a": 1}), {"b": 2}], [{"a": 1}, {"b": 2}]),
    ("interval[]", [dt.timedelta(seconds=90)], [dt.timedelta(seconds=90)]),
    ("int4[]", ((1, 2), (3, 4)), [[1, 2], [3, 4]]),  # tuples are arrays too
]


@pytest.mark.parametrize("column_type,sent,expected", ROUND_TRIPS,
                         ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(ROUND_TRIPS)])
def test_a_value_round_trips_through_a_typed_column(conn, table_name, column_type, sent,
                                                    expected):
    cur = conn.cursor()
    cur.execute(f"CREATE TEMP TABLE {table_name} (v {column_type})")
    cur.execute(f"INSERT INTO {table_name} VALUES (%s), (%s)", [sent, None])
    cur.execute(f"SELECT v FROM {table_name}")
    rows = cur.fetchall()
    assert rows == [(expected,), (None,)]
    assert type(rows[0][0]) is type(expected)
    conn.rollback()


@pytest.mark.parametrize("sql,expected", [
    ("SELECT 'infinity'::date", dt.date.max),
    ("SELECT '-infinity'::date", dt.date.min),
    ("SELECT 'infinity'::timestamp", dt.datetime.max),
    ("SELECT '-infinity'::timestamptz", dt.datetime.min.replace(tzinfo=UTC)),
    ("SELECT 'P1Y2M3DT4H5M6.5S'::interval", dt.timedelta(days=365 + 60 + 3, hours=4, minutes=5,
                                                        seconds=6.5)),
    ("SELECT '-1 day -00:00:01.25'::interval", -dt.timedelta(days=1, seconds=1.25)),
    ("SELECT 'NaN'::numeric", "NaN"),
    ("SELECT 'NaN'::float8", "NaN"),
    ("SELECT 42::oid", 42),
    ("SELECT '192.168.0.0/24'::inet", "192.168.0.0/24"),
    ("SELECT '(1,2)'::point", "(1,2)"),
    ("SELECT ARRAY['10.0.0.1'::inet]", ["10.0.0.1"]),
    ("SELECT '{{1,NULL},{3,4}}'::int4[]", [[1, None], [3, 4]]),
    ("SELECT '[0:1]={5,6}'::int4[]", [5, 6]),
    ("SELECT 'name'::name, 'c'::\"char\"", ("name", "c")),
    ("SELECT '2024-02-29 12:00:00+05:30'::timestamptz",
     dt.datetime(2024, 2, 29, 6, 30, tzinfo=UTC)),
])
def test_results_are_decoded_from_the_column_type(conn, sql, expected):
    cur = conn.cursor()
    cur.execute(sql)
    row = cur.fetchone()
    value = row if len(row) > 1 else row[0]
    if expected == "NaN":
        assert value != value  # NaN, as Decimal or float
    else:
        assert value == expected
    conn.rollback()


def test_the_session_time_zone_shapes_timestamptz_results(broker_target):
    conn = dbapi.connect(broker_target, settings={"TimeZone": "Asia/Kolkata"})
    try:
        cur = conn.cursor()
        cur.execute("SELECT '2024-02-29 00:00:00+00'::timestamptz")
        (value,) = cur.fetchone()
        assert value == dt.datetime(2024, 2, 29, tzinfo=UTC)
        assert value.utcoffset() == dt.timedelta(hours=5, minutes=30)
    finally:
        conn.close()


def test_unconvertible_parameters_are_data_errors_before_anything_is_sent(conn):
    cur = conn.cursor()
    with pytest.raises(dbapi.DataError, match="cannot send a builtins.object"):
        cur.execute("SELECT %s", [object()])
    with pytest.raises(dbapi.DataError, match="NUL"):
        cur.execute("SELECT %s", ["a\x00b"])
    with pytest.raises(dbapi.DataError, match="JSON"):
        cur.execute("SELECT %s", [{"a": object()}])
    with pytest.raises(dbapi.DataError, match="signaling"):
        cur.execute("SELECT %s", [decimal.Decimal("sNaN")])
    assert not conn.in_transaction  # nothing reached the broker


def test_unrepresentable_results_are_data_errors(conn):
    cur = conn.cursor()
    cur.execute("SELECT '0044-03-15 BC'::date")
    with pytest.raises(dbapi.DataError, match="before year 1"):
        cur.fetchone()
    cur.execute("SELECT '24:00:00'::time")
    with pytest.raises(dbapi.DataError, match="end of day"):
        cur.fetchone()
    cur.execute("SELECT '10000-01-01'::date")
    with pytest.raises(dbapi.DataError, match="cannot convert the date"):
        cur.fetchone()
    conn.rollback()


def test_a_database_data_error_carries_its_sqlstate(conn):
    cur = conn.cursor()
    with pytest.raises(dbapi.DataError) as info:
        cur.execute("SELECT %s::int4", ["not a number"])
    assert info.value.sqlstate == "22P02"
    conn.rollback()


@pytest.mark.parametrize("value,oid", [
    (41, 23), (1 << 40, 20), (10 ** 30, 1700), (0.5, 701), (decimal.Decimal("1.5"), 1700),
    (True, 16), (b"\x01", 17), ("text", 25), (dt.date(2024, 2, 29), 1082),
    (dt.datetime(2024, 2, 29), 1114), (dt.datetime(2024, 2, 29, tzinfo=UTC), 1184),
    (dt.time(1, 2), 1083), (dt.time(1, 2, tzinfo=UTC), 1266), (dt.timedelta(hours=1), 1186),
    (uuid.UUID(int=7), 2950), ({"a": 1}, 3802), ([1, 2], 1007), ([[1], [2]], 1007),
    ([dt.date(2024, 1, 1)], 1182),
], ids=lambda v: type(v).__name__)
def test_a_bare_parameter_comes_back_as_its_own_type(conn, value, oid):
    cur = conn.cursor()
    cur.execute("SELECT %s", [value])
    assert cur.description[0][1] == oid
    (back,) = cur.fetchone()
    assert back == (value if not isinstance(value, tuple) else list(value))
    conn.rollback()


def test_small_ints_fit_int4_only_functions_and_big_ones_still_compute(conn):
    cur = conn.cursor()
    cur.execute("SELECT substr('abcdef', %s), %s + 1, repeat('x', %s)", [3, 1 << 40, 2])
    assert cur.fetchone() == ("cdef", (1 << 40) + 1, "xx")
    conn.rollback()
