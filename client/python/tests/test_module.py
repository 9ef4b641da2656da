"""PEP 249 module-level interface and the driver's pure parts (no broker):
attributes, type objects, constructors, the exception hierarchy, placeholder
translation and the mapping from SQLSTATEs and gRPC codes to exceptions."""

import datetime
import decimal
import time
import uuid

import grpc
import pytest

from sessionbroker import _errors, aio, dbapi
from sessionbroker._pb import broker_pb2
from sessionbroker._sql import translate
from sessionbroker._types import to_value


def test_module_globals_are_pep249s():
    assert dbapi.apilevel == "2.0"
    assert dbapi.threadsafety == 2
    assert dbapi.paramstyle == "pyformat"
    assert callable(dbapi.connect)


def test_exception_hierarchy_is_pep249s():
    assert issubclass(dbapi.Warning, Exception)
    assert issubclass(dbapi.Error, Exception)
    assert not issubclass(dbapi.Warning, dbapi.Error)
    assert issubclass(dbapi.InterfaceError, dbapi.Error)
    assert issubclass(dbapi.DatabaseError, dbapi.Error)
    for cls in (dbapi.DataError, dbapi.OperationalError, dbapi.IntegrityError,
                dbapi.InternalError, dbapi.ProgrammingError, dbapi.NotSupportedError):
        assert issubclass(cls, dbapi.DatabaseError)
    # The same classes on connections (PEP 249's optional extension) and in aio.
    for name in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError",
                 "OperationalError", "IntegrityError", "InternalError", "ProgrammingError",
                 "NotSupportedError"):
        assert getattr(dbapi.Connection, name) is getattr(dbapi, name)
        assert getattr(aio, name) is getattr(dbapi, name)


def test_type_objects_compare_equal_to_their_oids():
    assert dbapi.STRING == 25 and dbapi.STRING == 1043 and dbapi.STRING != 23
    assert dbapi.BINARY == 17
    assert dbapi.NUMBER == 20 and dbapi.NUMBER == 1700 and dbapi.NUMBER == 701
    assert dbapi.DATETIME == 1184 and dbapi.DATETIME == 1082 and dbapi.DATETIME == 1186
    assert dbapi.ROWID == 26
    assert 23 == dbapi.NUMBER  # from either side


def test_constructors_build_python_values():
    assert dbapi.Date(2024, 2, 29) == datetime.date(2024, 2, 29)
    assert dbapi.Time(12, 34, 56) == datetime.time(12, 34, 56)
    assert dbapi.Timestamp(2024, 2, 29, 1, 2, 3) == datetime.datetime(2024, 2, 29, 1, 2, 3)
    assert dbapi.Binary(b"\x00\x01") == b"\x00\x01"
    now = time.time()
    local = time.localtime(now)
    assert dbapi.DateFromTicks(now) == datetime.date(*local[:3])
    assert dbapi.TimeFromTicks(now) == datetime.time(*local[3:6])
    assert dbapi.TimestampFromTicks(now) == datetime.datetime(*local[:6])


class TestTranslate:
    def test_format_placeholders_become_dollar_numbers(self):
        assert translate("SELECT %s, %s", (1, 2)) == ("SELECT $1, $2", [1, 2])

    def test_named_placeholders_reuse_one_number_per_name(self):
        sql, values = translate("SELECT %(a)s, %(b)s, %(a)s", {"a": 1, "b": 2, "unused": 3})
        assert (sql, values) == ("SELECT $1, $2, $1", [1, 2])

    def test_double_percent_is_a_literal_percent(self):
        assert translate("SELECT 7 %% 3, %s", [1]) == ("SELECT 7 % 3, $1", [1])

    def test_without_parameters_the_sql_is_sent_as_it_is(self):
        assert translate("SELECT '%s', 7 %% 3", None) == ("SELECT '%s', 7 %% 3", [])

    def test_percent_inside_literals_identifiers_and_comments_is_no_placeholder(self):
        sql = ("SELECT 'a%sb', 'c%%d', E'\\'%s', \"col%s\", $$%s$$, $t$%(x)s$t$ "
               "-- %s\n/* %s /* %s */ */ , %s")
        out, values = translate(sql, [9])
        assert out == ("SELECT 'a%sb', 'c%d', E'\\'%s', \"col%s\", $$%s$$, $t$%(x)s$t$ "
                       "-- %s\n/* %s /* %s */ */ , $1")
        assert values == [9]

    def test_a_lone_percent_outside_literals_is_a_programming_error(self):
        with pytest.raises(dbapi.ProgrammingError, match="%%"):
            translate("SELECT 7 % 3, %s", [1])

    def test_wrong_parameter_counts_and_kinds_are_programming_errors(self):
        with pytest.raises(dbapi.ProgrammingError, match="1 %s placeholders but 2"):
            translate("SELECT %s", [1, 2])
        with pytest.raises(dbapi.ProgrammingError, match="no value"):
            translate("SELECT %(a)s", {"b": 1})
        with pytest.raises(dbapi.ProgrammingError, match="mapping"):
            translate("SELECT %s", {"a": 1})
        with pytest.raises(dbapi.ProgrammingError, match="sequence"):
            translate("SELECT %(a)s", [1])
        with pytest.raises(dbapi.ProgrammingError, match="mixes"):
            translate("SELECT %s, %(a)s", [1])
        with pytest.raises(dbapi.ProgrammingError, match="sequence or a mapping"):
            translate("SELECT %s", "x")

    def test_an_empty_parameter_list_still_reads_double_percent(self):
        assert translate("SELECT 7 %% 3", []) == ("SELECT 7 % 3", [])


@pytest.mark.parametrize("sqlstate,cls", [
    ("23505", dbapi.IntegrityError), ("23503", dbapi.IntegrityError),
    ("42P01", dbapi.ProgrammingError), ("42601", dbapi.ProgrammingError),
    ("22012", dbapi.DataError), ("22P02", dbapi.DataError),
    ("40001", dbapi.OperationalError), ("40P01", dbapi.OperationalError),
    ("0A000", dbapi.NotSupportedError), ("08006", dbapi.OperationalError),
    ("53300", dbapi.OperationalError), ("57014", dbapi.OperationalError),
    ("55P03", dbapi.OperationalError), ("XX000", dbapi.InternalError),
    ("25P02", dbapi.InternalError), ("P0001", dbapi.InternalError),
    ("3D000", dbapi.ProgrammingError), ("21000", dbapi.ProgrammingError),
    ("01000", dbapi.DatabaseError),
])
def test_sqlstate_classes_map_as_psycopg2_does(sqlstate, cls):
    assert _errors.class_for_sqlstate(sqlstate) is cls


class FakeRpcError(grpc.RpcError):
    """What grpc raises for a failed call: code, details, trailing metadata."""

    def __init__(self, code, details, trailers=()):
        super().__init__(details)
        self._code, self._details, self._trailers = code, details, tuple(trailers)

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailers


def _details_trailer(**fields) -> bytes:
    detail = broker_pb2.SqlErrorDetail(**fields)
    status = broker_pb2.RpcStatus(code=6, message="m")
    status.details.add().Pack(detail)
    return status.SerializeToString()


class TestErrorFromRpc:
    def test_sqlstate_trailer_chooses_the_class(self):
        err = _errors.error_from_rpc(FakeRpcError(
            grpc.StatusCode.ALREADY_EXISTS, "duplicate key [SQLSTATE 23505]",
            [("sqlstate", "23505")]))
        assert type(err) is dbapi.IntegrityError
        assert err.sqlstate == err.pgcode == "23505"
        assert err.grpc_code == grpc.StatusCode.ALREADY_EXISTS
        assert err.pgerror == "duplicate key [SQLSTATE 23505]"
        assert err.constraint_name is None and not err.disconnect

    def test_sql_error_detail_fills_the_diagnostic_fields(self):
        trailer = _details_trailer(sqlstate="23505", severity="ERROR", message="duplicate key",
                                   detail="Key (id)=(1) already exists.", hint="h",
                                   schema_name="public", table_name="t", column_name="c",
                                   data_type_name="int4", constraint_name="t_pkey", position=3)
        err = _errors.error_from_rpc(FakeRpcError(
            grpc.StatusCode.ALREADY_EXISTS, "duplicate key [SQLSTATE 23505]",
            [("sqlstate", "23505"), ("grpc-status-details-bin", trailer)]))
        assert type(err) is dbapi.IntegrityError
        assert (err.constraint_name, err.table_name, err.schema_name, err.column_name,
                err.datatype_name) == ("t_pkey", "t", "public", "c", "int4")
        assert err.detail == "Key (id)=(1) already exists." and err.hint == "h"
        assert err.message_primary == "duplicate key" and err.severity == "ERROR"
        assert err.diag.constraint_name == "t_pkey" and err.position == 3

    def test_a_malformed_details_trailer_falls_back_to_the_sqlstate_trailer(self):
        err = _errors.error_from_rpc(FakeRpcError(
            grpc.StatusCode.INVALID_ARGUMENT, "x", [("sqlstate", "22012"),
                                                    ("grpc-status-details-bin", b"\xff\x00")]))
        assert type(err) is dbapi.DataError and err.sqlstate == "22012"

    @pytest.mark.parametrize("code,cls", [
        (grpc.StatusCode.UNAVAILABLE, dbapi.OperationalError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, dbapi.OperationalError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, dbapi.OperationalError),
        (grpc.StatusCode.INVALID_ARGUMENT, dbapi.ProgrammingError),
        (grpc.StatusCode.UNIMPLEMENTED, dbapi.NotSupportedError),
        (grpc.StatusCode.INTERNAL, dbapi.InternalError),
        (grpc.StatusCode.UNKNOWN, dbapi.DatabaseError),
    ])
    def test_codes_without_sqlstate_choose_the_class(self, code, cls):
        err = _errors.error_from_rpc(FakeRpcError(code, "m"))
        assert type(err) is cls and err.sqlstate is None and err.grpc_code == code

    @pytest.mark.parametrize("reason", sorted(_errors.DISCONNECT_REASONS))
    def test_ended_sessions_are_disconnects(self, reason):
        err = _errors.error_from_rpc(FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "ended",
                                                  [("sessionbroker-reason", reason)]))
        assert isinstance(err, dbapi.OperationalError)
        assert err.reason == reason and dbapi.is_disconnect(err)

    def test_unavailable_is_a_disconnect_and_a_statement_error_is_not(self):
        assert dbapi.is_disconnect(_errors.error_from_rpc(
            FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")))
        assert not dbapi.is_disconnect(_errors.error_from_rpc(FakeRpcError(
            grpc.StatusCode.INVALID_ARGUMENT, "syntax", [("sqlstate", "42601")])))
        assert not dbapi.is_disconnect(ValueError("not ours"))

    def test_a_statement_failed_earlier_in_the_transaction_is_an_internal_error(self):
        err = _errors.error_from_rpc(FakeRpcError(
            grpc.StatusCode.ABORTED, "aborted", [("sessionbroker-reason", "TX_STATEMENT_FAILED")]))
        assert type(err) is dbapi.InternalError and not err.disconnect


@pytest.mark.parametrize("value,case,type_name", [
    (None, "null_value", ""),
    (True, "bool_value", ""),
    (7, "int64_value", "int4"),
    (-(1 << 31), "int64_value", "int4"),
    (1 << 31, "int64_value", ""),
    (1 << 63, "numeric_value", ""),
    (0.5, "double_value", ""),
    (decimal.Decimal("1.50"), "numeric_value", ""),
    ("text", "string_value", ""),
    (b"\x00", "bytes_value", ""),
    (datetime.date(2024, 2, 29), "string_value", "date"),
    (datetime.datetime(2024, 2, 29), "string_value", "timestamp"),
    (datetime.datetime(2024, 2, 29, tzinfo=datetime.timezone.utc), "string_value",
     "timestamptz"),
    (datetime.time(1, 2), "string_value", "time"),
    (datetime.time(1, 2, tzinfo=datetime.timezone.utc), "string_value", "timetz"),
    (datetime.timedelta(seconds=1), "string_value", "interval"),
    (uuid.UUID(int=1), "string_value", "uuid"),
    ({"a": 1}, "json_value", ""),
    (dbapi.Json([1]), "json_value", ""),
    ([1, None, 2], "array_value", "int4[]"),
    ([[1], [2]], "array_value", "int4[]"),
    ([datetime.date(2024, 1, 1)], "array_value", "date[]"),
    ([1, 1 << 40], "array_value", ""),  # mixed: the server implies int8[] from the cases
    (["a", "b"], "array_value", ""),  # text elements: left to PostgreSQL
    ([], "array_value", ""),
])
def test_parameters_carry_their_case_and_type(value, case, type_name):
    v = to_value(value)
    assert v.WhichOneof("kind") == case
    assert v.type == type_name


def test_parameter_texts_are_postgresql_input_forms():
    assert to_value(datetime.datetime(2024, 2, 29, 1, 2, 3, 4)).string_value == \
        "2024-02-29 01:02:03.000004"
    assert to_value(datetime.timedelta(days=-1, seconds=5, microseconds=6)).string_value == \
        "-1 days 5 seconds 6 microseconds"
    assert to_value(decimal.Decimal("NaN")).numeric_value == "NaN"
    assert to_value({"k": "v"}).json_value == '{"k": "v"}'
    assert to_value(dbapi.Json({"k": 1}, dumps=lambda o: "custom")).json_value == "custom"
