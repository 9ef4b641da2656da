"""The ``postgresql+sessionbroker`` SQLAlchemy 1.4 dialect.

SQLAlchemy's own PostgreSQL dialect (``PGDialect``: compiler, DDL, types and
reflection) over the ``sessionbroker.dbapi`` PEP 249 module, so that an
application moves from ``postgresql+psycopg2://`` to the broker by changing
its URL. Only the DB-API layer differs:

- a DB-API connection is a broker *session* (a lease, not a database
  connection); SQLAlchemy's pool therefore pools sessions, and its transaction
  is the broker's session transaction (``BeginTransaction`` .. ``Commit``);
- isolation level, read-only and deferrable are attributes of the DB-API
  connection that apply to the transactions it begins (the broker resets
  every ``SET SESSION ...`` when a transaction ends, so PostgreSQL's session
  characteristics cannot carry them);
- results arrive as native Python values already (``Decimal``, ``dict``,
  ``list``, ``UUID``, ``datetime``), so the type processors that PGDialect's
  text-based drivers need are switched off here rather than run twice;
- ``do_ping`` asks the broker whether the session is alive without taking a
  database connection.

Thread safety: a dialect instance is shared by every thread using its engine
and holds no per-connection state; the DB-API connections it is handed are
used by one thread at a time, as SQLAlchemy's pool guarantees.
"""

from __future__ import annotations

import decimal
import itertools
import json as _json
import uuid
from typing import Any, Callable, Dict, List, Tuple

from sqlalchemy import exc
from sqlalchemy import processors
from sqlalchemy import types as sqltypes
from sqlalchemy import util
from sqlalchemy.dialects.postgresql import ARRAY as PGARRAY
from sqlalchemy.dialects.postgresql.base import PGExecutionContext
from sqlalchemy.dialects.postgresql import INTERVAL, JSON, JSONB, UUID
from sqlalchemy.dialects.postgresql.base import (
    _DECIMAL_TYPES,
    _FLOAT_TYPES,
    _INT_TYPES,
    PGDialect,
    _ColonCast,
)
from sqlalchemy.engine.url import URL

#: The broker's port when the URL names none (the broker's default listen
#: port, BROKER_LISTEN_ADDR).
DEFAULT_PORT = 50051

# URL query parameters and the type connect() expects for each; any other
# query parameter is passed to sessionbroker.dbapi.connect() as a string,
# except "setting.NAME=VALUE", which becomes settings={"NAME": "VALUE"} (the
# PostgreSQL settings of the session, docs/sessions.md).
_QUERY_TYPES: Dict[str, Callable[[str], Any]] = {
    "timeout": float,
    "connect_timeout": float,
    "ttl": float,
    "read_only": util.asbool,
    "autocommit": util.asbool,
    # TLS: ?tls=true, and tls_ca / tls_cert / tls_key as file paths.
    "tls": util.asbool,
    # ?pipeline=false: unary calls only (no shared Pipeline stream).
    "pipeline": util.asbool,
}
_SETTING_PREFIX = "setting."




def _raw(connection):
    """The DB-API connection itself: SQLAlchemy may hand the dialect its pool's
    proxy (_ConnectionFairy), which reads attributes through but would keep
    an attribute set on it to itself."""
    return getattr(connection, "dbapi_connection", connection)


class _SBNumeric(sqltypes.Numeric):
    """numeric columns: the DB-API returns Decimal (and float for float
    columns) already. Parameters are declared numeric, so a float bound to a
    numeric column is read by PostgreSQL as the decimal text it prints as,
    as it would be over psycopg2."""

    def get_dbapi_type(self, dbapi):
        return "numeric"

    def bind_processor(self, dialect):
        return None

    def result_processor(self, dialect, coltype):
        if self.asdecimal:
            if coltype in _FLOAT_TYPES:
                return processors.to_decimal_processor_factory(
                    decimal.Decimal,
                    self._effective_decimal_return_scale,
                )
            if coltype in _DECIMAL_TYPES or coltype in _INT_TYPES:
                return None
        else:
            if coltype in _FLOAT_TYPES:
                return None
            if coltype in _DECIMAL_TYPES or coltype in _INT_TYPES:
                return processors.to_float
        raise exc.InvalidRequestError("Unknown PG numeric type: %d" % coltype)


def _json_result_processor(dialect):
    """json and jsonb: the DB-API decodes documents itself (dict, list, str,
    ...), so nothing is left to do; unless the engine was given its own
    json_deserializer, which then reads the document's text."""
    deserializer = dialect._json_deserializer
    if deserializer is None:
        return None

    def process(value):
        if value is None:
            return None
        return deserializer(_json.dumps(value))

    return process


class _SBFloat(_SBNumeric):
    """float columns."""

    def get_dbapi_type(self, dbapi):
        return "float8"


class _SBJSON(JSON):
    """json, decoded by the DB-API."""

    def get_dbapi_type(self, dbapi):
        return "json"

    def result_processor(self, dialect, coltype):
        return _json_result_processor(dialect)


class _SBJSONB(JSONB):
    """jsonb, decoded by the DB-API."""

    def get_dbapi_type(self, dbapi):
        return "jsonb"

    def result_processor(self, dialect, coltype):
        return _json_result_processor(dialect)


class _SBUUID(UUID):
    """uuid: the DB-API returns uuid.UUID; str for as_uuid=False columns."""

    def get_dbapi_type(self, dbapi):
        return "uuid"

    def bind_processor(self, dialect):
        if self.as_uuid:
            return None

        def process(value):
            # A str parameter travels untyped and PostgreSQL infers uuid;
            # sending it as uuid.UUID types it explicitly.
            if value is not None and not isinstance(value, uuid.UUID):
                value = uuid.UUID(value)
            return value

        return process

    def result_processor(self, dialect, coltype):
        if self.as_uuid:
            return None

        def process(value):
            if value is not None:
                value = str(value)
            return value

        return process


class _SBBoolean(sqltypes.Boolean):
    """bool, declared (a NULL stays a typed NULL)."""

    def get_dbapi_type(self, dbapi):
        return "bool"


class _SBDate(sqltypes.Date):
    """date, declared: a datetime bound to it is read as a date, as
    psycopg2's literal would be."""

    def get_dbapi_type(self, dbapi):
        return "date"


class _SBDateTime(sqltypes.DateTime):
    """timestamp or timestamptz as the column says, whatever the value's tzinfo."""

    def get_dbapi_type(self, dbapi):
        return "timestamptz" if self.timezone else "timestamp"


class _SBTime(sqltypes.Time):
    """time or timetz as the column says."""

    def get_dbapi_type(self, dbapi):
        return "timetz" if self.timezone else "time"


class _SBInterval(INTERVAL):
    """interval, for sqltypes.Interval too."""

    def get_dbapi_type(self, dbapi):
        return "interval"

    @classmethod
    def adapt_emulated_to_native(cls, interval, **kw):
        return cls(precision=interval.second_precision)


class _SBARRAY(PGARRAY):
    """Arrays: the parameter is cast to the column's array type.

    The DB-API types a list from its elements (int4[] for small ints, text
    elements left to inference), which need not be the column's type:
    ``int8[] = int4[]`` or ``varchar[] = text[]`` has no operator in
    PostgreSQL. So the bind is cast to the declared type, as SQLAlchemy's
    psycopg2 and pg8000 dialects do.
    """

    def bind_expression(self, bindvalue):
        return _ColonCast(bindvalue, self)


class SessionBrokerExecutionContext(PGExecutionContext):
    """Creates the named cursor SQLAlchemy asks for with stream_results."""

    def create_server_side_cursor(self) -> Any:
        """A sessionbroker.dbapi.ServerCursor (streams via StreamExecute)."""
        return self._dbapi_connection.cursor("sqlalchemy_%x_%x" % (id(self), next(_cursor_ids)))


_cursor_ids = itertools.count(1)


class SessionBrokerDialect(PGDialect):
    """``postgresql+sessionbroker://HOST:PORT/?client_id=...``."""

    driver = "sessionbroker"
    supports_statement_cache = True
    supports_unicode_statements = True
    supports_unicode_binds = True
    supports_native_decimal = True
    # PEP 249's executemany: the rowcount is the sum over the parameter sets.
    supports_sane_multi_rowcount = True
    # stream_results=True / yield_per use a named cursor of the DB-API
    # driver, which reads the result through StreamExecute as it is fetched.
    supports_server_side_cursors = True
    execution_ctx_cls = SessionBrokerExecutionContext
    use_native_uuid = True
    # Parameters whose Python value leaves their PostgreSQL type open (None,
    # above all: a NULL in "CASE WHEN $1 IS NULL ..." has no type to infer)
    # are declared with their column type's name through setinputsizes(),
    # which sessionbroker.dbapi sends as Value.type; see do_set_input_sizes.
    use_setinputsizes = True

    colspecs = util.update_copy(
        PGDialect.colspecs,
        {
            sqltypes.Numeric: _SBNumeric,
            sqltypes.Float: _SBFloat,
            sqltypes.Boolean: _SBBoolean,
            sqltypes.Date: _SBDate,
            sqltypes.DateTime: _SBDateTime,
            sqltypes.Time: _SBTime,
            sqltypes.Interval: _SBInterval,
            INTERVAL: _SBInterval,
            sqltypes.JSON: _SBJSON,
            JSONB: _SBJSONB,
            UUID: _SBUUID,
            sqltypes.ARRAY: _SBARRAY,
        },
    )

    # The broker's IsolationLevel has no READ UNCOMMITTED (PostgreSQL runs
    # it as READ COMMITTED anyway), so the dialect does not offer it.
    _isolation_lookup = {
        "AUTOCOMMIT",
        "READ COMMITTED",
        "REPEATABLE READ",
        "SERIALIZABLE",
    }

    @classmethod
    def dbapi(cls):
        """The PEP 249 module: sessionbroker.dbapi."""
        from sessionbroker import dbapi

        return dbapi

    def create_connect_args(self, url: URL) -> Tuple[List[Any], Dict[str, Any]]:
        """``HOST:PORT`` becomes the target; query parameters become keyword
        arguments of ``sessionbroker.dbapi.connect()``."""
        if url.database:
            raise exc.ArgumentError(
                "postgresql+sessionbroker URLs name the broker, not a "
                "database: the broker's DATABASE_URL chooses the database; "
                "use postgresql+sessionbroker://HOST:PORT/ (got database %r)"
                % url.database
            )
        if url.username or url.password:
            raise exc.ArgumentError(
                "postgresql+sessionbroker URLs carry no user or password: the "
                "broker holds the database credentials; name the calling "
                "service with ?client_id=..."
            )
        host = url.host or "localhost"
        if ":" in host and not host.startswith("["):
            host = "[%s]" % host  # an IPv6 literal
        target = "%s:%d" % (host, url.port or DEFAULT_PORT)
        kwargs: Dict[str, Any] = {}
        settings: Dict[str, str] = {}
        for key, value in url.query.items():
            if isinstance(value, tuple):
                raise exc.ArgumentError(
                    "URL parameter %r is given more than once" % key
                )
            if key.startswith(_SETTING_PREFIX):
                settings[key[len(_SETTING_PREFIX):]] = value
                continue
            convert = _QUERY_TYPES.get(key, str)
            try:
                kwargs[key] = convert(value)
            except ValueError as err:
                raise exc.ArgumentError(
                    "URL parameter %s=%r is not a valid %s"
                    % (key, value, getattr(convert, "__name__", "value"))
                ) from err
        if settings:
            kwargs["settings"] = settings
        return ([target], kwargs)

    def do_set_input_sizes(self, cursor, list_of_tuples, context) -> None:
        """Declares the PostgreSQL type of each parameter whose SQLAlchemy type
        names one (get_dbapi_type returns a type name: dates and times,
        numeric, bool, uuid, json); the others stay as the DB-API types them
        (text stays untyped, so that PostgreSQL infers it from the context,
        as it does with psycopg2's literals)."""
        if self.positional:
            cursor.setinputsizes(
                [dbtype if isinstance(dbtype, str) else None for _, dbtype, _ in list_of_tuples]
            )
        else:
            cursor.setinputsizes(
                {key: dbtype for key, dbtype, _ in list_of_tuples if isinstance(dbtype, str)}
            )

    # ---- isolation, read-only, deferrable -------------------------------

    def set_isolation_level(self, connection, level: str) -> None:
        level = level.replace("_", " ")
        if level not in self._isolation_lookup:
            raise exc.ArgumentError(
                "Invalid value '%s' for isolation_level. "
                "Valid isolation levels for %s are %s"
                % (level, self.name, ", ".join(sorted(self._isolation_lookup)))
            )
        connection = _raw(connection)
        if level == "AUTOCOMMIT":
            connection.autocommit = True
            return
        connection.autocommit = False
        connection.isolation_level = level

    def get_isolation_level(self, connection) -> str:
        connection = _raw(connection)
        if connection.autocommit:
            return "AUTOCOMMIT"
        if connection.isolation_level is not None:
            return connection.isolation_level
        # The session's default, which is the database's. Outside a
        # transaction it is asked in autocommit, so that no transaction (and
        # no database connection) is held only to read it.
        if connection.in_transaction:
            return super().get_isolation_level(connection)
        connection.autocommit = True
        try:
            return super().get_isolation_level(connection)
        finally:
            connection.autocommit = False

    def set_readonly(self, connection, value: bool) -> None:
        _raw(connection).readonly = bool(value)

    def get_readonly(self, connection) -> bool:
        return bool(connection.readonly)

    def set_deferrable(self, connection, value: bool) -> None:
        _raw(connection).deferrable = bool(value)

    def get_deferrable(self, connection) -> bool:
        return bool(connection.deferrable)

    # ---- liveness -----------------------------------------------------------

    def do_ping(self, dbapi_connection) -> bool:
        """True while the broker session is alive; asks the broker only."""
        try:
            dbapi_connection.ping()
        except self.dbapi.Error as err:
            if self.is_disconnect(err, dbapi_connection, None):
                return False
            raise
        return True

    def is_disconnect(self, e, connection, cursor) -> bool:
        """The session is gone (ended, expired, broker unreachable): the pool
        must discard this connection and open a new session."""
        if not isinstance(e, self.dbapi.Error):
            return False
        if connection is not None and connection.closed:
            return True
        return self.dbapi.is_disconnect(e)

    # ---- not supported (docs/clients.md) ------------------------------------
    # Savepoints (begin_nested) are SQLAlchemy's defaults: SAVEPOINT,
    # RELEASE SAVEPOINT and ROLLBACK TO SAVEPOINT statements, which the broker
    # runs inside the session's transaction as PostgreSQL does.

    def do_begin_twophase(self, connection, xid) -> None:
        raise NotImplementedError(
            "postgresql+sessionbroker does not support two-phase "
            "transactions: PREPARE TRANSACTION would leave a transaction "
            "behind its session, and the broker refuses it"
        )


dialect = SessionBrokerDialect
