"""sessionbroker.dbapi: a PEP 249 (DB-API 2.0) driver for PostgreSQL through the session broker.

    import sessionbroker.dbapi as sb
    conn = sb.connect("127.0.0.1:50051", client_id="billing")
    cur = conn.cursor()
    cur.execute("INSERT INTO t (id, note) VALUES (%(id)s, %(note)s)", {"id": 1, "note": "a"})
    conn.commit()
    conn.close()

**A connection is a broker session.** ``connect`` leases one (BeginSession)
and the process's single KeepAlive stream holds it for as long as the
connection is open; ``close()`` ends it (EndSession, which rolls back an open
transaction). The session costs the broker about a kilobyte and no database
connection: a pooled PostgreSQL connection is pinned to it only while a
transaction is open.

**Transactions** follow PEP 249: the first statement after connect, commit()
or rollback() begins one (BeginTransaction, then the statement in it);
``commit()`` and ``rollback()`` end it. With ``autocommit = True`` each
statement runs in the session by itself, without a transaction.
``isolation_level`` ("READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE" or
None for the session's), ``readonly`` and ``deferrable`` apply to the
transactions begun after they are set (psycopg2's ``set_session`` sets them
together); changing them inside a transaction is a ProgrammingError.

**The transaction idle limit.** The broker rolls back a transaction in which
no statement has run for ``BROKER_TX_IDLE_TIMEOUT`` (10 s by default) and one
open longer than ``BROKER_TX_MAX_DURATION`` (5 min), so that no client can hold
a database connection hostage. The next statement (or commit) on that
connection raises OperationalError naming the limit (``.reason`` is
"TX_IDLE_TIMEOUT" or "TX_MAX_DURATION"), nothing of the transaction was
committed, and the connection reports itself broken (``closed == 2``,
``is_disconnect(err)``) so that a pool discards it. Keep transactions short
or ask the operator for a longer limit; do slow work outside them.

**paramstyle is "pyformat"** (``%(name)s``), and "format" (``%s``) works as
well, exactly as in psycopg2, which is what SQLAlchemy's PostgreSQL compiler
writes: with parameters, ``%%`` is a literal ``%``; without parameters
(``execute(sql)``) the SQL is sent as it is. The placeholders become
PostgreSQL's ``$1..$n`` and the values travel separately, typed (they are
never spliced into the SQL text). A ``%`` inside a string literal, quoted
identifier or comment is never a placeholder.

**Types** both ways (see ``sessionbroker._types``): None, bool, int, float,
Decimal (numeric), str, bytes (bytea), date, time, datetime (timestamptz when
aware, timestamp when naive), timedelta (interval), UUID, dict and
``Json(...)`` (jsonb), lists and tuples (arrays, nested lists for
multi-dimensional arrays; a list is always an array, wrap it in ``Json`` to
send a JSON array). Results are decoded from each column's type: numeric ->
Decimal, json/jsonb -> parsed, bytea -> bytes, arrays -> lists, timestamps
-> datetime (timestamptz aware), 'infinity' dates and timestamps -> the
type's max (and min for '-infinity') as psycopg2 does, types without a
Python counterpart -> str. A value that cannot be converted raises DataError.

**Errors** are PEP 249's hierarchy, chosen from the SQLSTATE as psycopg2
does (23 IntegrityError, 42 ProgrammingError, 22 DataError, 40 and 08/53/57
OperationalError, 0A NotSupportedError, XX InternalError) or from the gRPC
status. Each carries ``.sqlstate`` (``.pgcode``), ``.pgerror``,
``.grpc_code``, ``.reason`` (the broker's sessionbroker-reason token) and
PostgreSQL's fields (``.detail``, ``.hint``, ``.constraint_name``,
``.table_name``, ``.column_name``, ``.schema_name``, ``.datatype_name``,
``.message_primary``; also under ``.diag``).

**Threads** (threadsafety 2): the module, its gRPC channel and KeepAlive
stream are shared by every connection; a connection may be shared between
threads (each call holds the connection's lock, and the broker runs one
session's calls one at a time), a cursor may not. While several threads'
calls are in flight on the channel, their Execute/ExecuteBatch calls share
one Pipeline stream (``sessionbroker._pipeline``; a lone call is unary; the
same results and errors; ``connect(pipeline=False)`` switches it off).

**Savepoints**: ``SAVEPOINT``, ``RELEASE SAVEPOINT`` and ``ROLLBACK TO
SAVEPOINT`` statements work inside a transaction, as in PostgreSQL: after a
failed statement the transaction is aborted (25P02) until a ROLLBACK TO. In
autocommit mode the broker refuses them (ProgrammingError), as it refuses
other transaction control statements (BEGIN, COMMIT, ...) everywhere.

Server-side (named) cursors, ``connection.cursor("name")``, stream their
results through StreamExecute (ServerCursor); SQLAlchemy's ``stream_results``
and ``yield_per`` use them.

Not supported: callproc (NotSupportedError), COPY, LISTEN/NOTIFY and
two-phase commit.
"""

import collections
import threading
import time
import uuid
import weakref
from typing import Any, Deque, Iterator, List, Mapping, Optional, Sequence, Tuple

import grpc

from sessionbroker import _core
from sessionbroker._channel import channel_for, resolve_credentials
from sessionbroker._errors import (DatabaseError, DataError, Error, IntegrityError, InterfaceError,
                                   InternalError, NotSupportedError, OperationalError,
                                   ProgrammingError, Warning, error_from_rpc, is_disconnect)
from sessionbroker._keepalive import SessionLease, keepalive_for
from sessionbroker._listen import Gap, Listener, Notification, listen
from sessionbroker._pipeline import PipelineMux, mux_for
from sessionbroker._pb import broker_pb2, broker_pb2_grpc
from sessionbroker._types import (BINARY, DATETIME, NUMBER, ROWID, STRING, Binary, Date,
                                  DateFromTicks, Json, Time, TimeFromTicks, Timestamp,
                                  TimestampFromTicks)

__all__ = [
    "apilevel", "threadsafety", "paramstyle", "connect", "Connection", "Cursor",
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID", "Binary", "Date", "Time", "Timestamp",
    "DateFromTicks", "TimeFromTicks", "TimestampFromTicks", "Json", "is_disconnect",
    "listen", "Listener", "Notification", "Gap",
]

apilevel = "2.0"
threadsafety = 2
paramstyle = "pyformat"

#: Seconds connect() waits for the broker (to become reachable and answer BeginSession).
DEFAULT_CONNECT_TIMEOUT = 30.0
#: Seconds close() waits for EndSession.
_END_SESSION_TIMEOUT = 5.0
# retry_writes: attempts per statement, the first backoff (doubling), and what
# is retried: the broker or the network failed (UNAVAILABLE), or the first
# attempt with the id is still running or was rolled back (ABORTED).
_WRITE_ATTEMPTS = 4
_WRITE_BACKOFF = 0.1
_RETRYABLE_WRITE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)


def _abandon(stub, keepalive, lease: SessionLease, metadata,
             mux: Optional[PipelineMux]) -> None:
    """A connection garbage-collected while open: stop holding its session and
    end it without waiting (no blocking call in a finalizer)."""
    keepalive.release(lease)
    if mux is not None:
        mux.release(wait=False)
    try:
        stub.EndSession.future(broker_pb2.EndSessionRequest(session=lease.name),
                               metadata=metadata, timeout=_END_SESSION_TIMEOUT)
    except Exception:  # the process may be shutting down; the lease then runs out
        pass


class Connection:
    """A DB-API connection: one broker session. Create it with :func:`connect`."""

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(self, target: str, *, client_id: Optional[str] = None,
                 token: Optional[str] = None,
                 timeout: Optional[float] = None,
                 connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
                 ttl: Optional[float] = None, label: str = "", read_only: bool = False,
                 isolation_level: Optional[str] = None,
                 settings: Optional[Mapping[str, str]] = None,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 autocommit: bool = False, retry_writes: bool = False,
                 pipeline: bool = True) -> None:
        self.target = target
        self.client_id = client_id
        #: Autocommit statements outside a transaction get a request_id each and are
        #: retried with it (docs/retries.md).
        self.retry_writes = retry_writes
        #: Deadline in seconds of each call (statements, commit, ...); None: the broker's limits.
        self.timeout = timeout
        self._lock = threading.RLock()
        self._core = _core.SessionCore(autocommit=autocommit, isolation_level=isolation_level)
        self._core.metadata = _core.call_metadata(client_id, token)
        channel = channel_for(target, credentials)
        self._stub = broker_pb2_grpc.SessionBrokerStub(channel)
        request = _core.begin_session_request(ttl=ttl, label=label, read_only=read_only,
                                              isolation_level=isolation_level, settings=settings)
        deadline = None if connect_timeout is None else time.monotonic() + connect_timeout
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                session = self._stub.BeginSession(request, timeout=remaining,
                                                  metadata=self._core.metadata,
                                                  wait_for_ready=True)
                break
            except grpc.RpcError as e:
                left = None if deadline is None else deadline - time.monotonic()
                delay = _core.begin_session_retry_delay(e.code(), attempt, left)
                if delay is None:
                    raise error_from_rpc(
                        e, context=f"cannot open a session on the broker at {target}: ") from None
                time.sleep(delay)
        self._core.name = session.name
        self._core.lease = SessionLease(session.name)
        self._keepalive = keepalive_for(channel, self._core.metadata, target)
        self._keepalive.hold(self._core.lease)
        #: The shared Pipeline stream's router for concurrent calls; None: unary only.
        self._mux: Optional[PipelineMux] = (mux_for(channel, self._core.metadata, target)
                                            if pipeline else None)
        if self._mux is not None:
            self._mux.acquire()
        self._finalizer = weakref.finalize(self, _abandon, self._stub, self._keepalive,
                                           self._core.lease, self._core.metadata, self._mux)
        self._finalizer.atexit = False  # at exit the stream closes; the orphan grace ends it

    # ---- attributes ----------------------------------------------------------------

    @property
    def session_name(self) -> str:
        """The broker session's name (Session.name)."""
        return self._core.name

    @property
    def closed(self) -> int:
        """0 while usable, 1 after close(), 2 when the broker ended the session
        (or it is otherwise unusable): a pool must discard it (psycopg2's values)."""
        return self._core.status

    @property
    def in_transaction(self) -> bool:
        """A transaction is open (begun by a statement, not yet committed or rolled back)."""
        return self._core.in_transaction

    @property
    def autocommit(self) -> bool:
        """True: statements run without a transaction, each committed at once."""
        return self._core.autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        with self._lock:
            self._core.check_outside_transaction("autocommit")
            self._core.autocommit = bool(value)

    @property
    def isolation_level(self) -> Optional[str]:
        """The isolation level of the next transactions, or None for the database's default."""
        return self._core.isolation_level

    @isolation_level.setter
    def isolation_level(self, level: Optional[str]) -> None:
        with self._lock:
            self._core.check_outside_transaction("isolation_level")
            self._core.isolation = _core.isolation_enum(level)

    @property
    def readonly(self) -> bool:
        """The next transactions are READ ONLY."""
        return self._core.readonly

    @readonly.setter
    def readonly(self, value: bool) -> None:
        with self._lock:
            self._core.check_outside_transaction("readonly")
            self._core.readonly = bool(value)

    @property
    def deferrable(self) -> bool:
        """The next transactions are DEFERRABLE (with SERIALIZABLE and readonly)."""
        return self._core.deferrable

    @deferrable.setter
    def deferrable(self, value: bool) -> None:
        with self._lock:
            self._core.check_outside_transaction("deferrable")
            self._core.deferrable = bool(value)

    def set_session(self, isolation_level: Optional[str] = None, readonly: Optional[bool] = None,
                    deferrable: Optional[bool] = None,
                    autocommit: Optional[bool] = None) -> None:
        """psycopg2's set_session: sets the given transaction characteristics."""
        with self._lock:
            self._core.check_outside_transaction("the session characteristics")
            if isolation_level is not None:
                self.isolation_level = isolation_level
            if readonly is not None:
                self.readonly = readonly
            if deferrable is not None:
                self.deferrable = deferrable
            if autocommit is not None:
                self.autocommit = autocommit

    def ping(self) -> None:
        """Asks the broker whether the session is still open (GetSession: no
        database work, no transaction). Raises OperationalError, for which
        ``is_disconnect`` is true, when the broker ended it or cannot be
        reached: what a pool's pre-ping needs."""
        with self._lock:
            self._core.check_usable()
            try:
                self._stub.GetSession(broker_pb2.GetSessionRequest(session=self._core.name),
                                      timeout=self.timeout, metadata=self._core.metadata)
            except grpc.RpcError as e:
                raise self._core.failed(e, "ping failed: ") from None

    # ---- PEP 249 methods -----------------------------------------------------------

    def cursor(self, name: Optional[str] = None) -> "Cursor":
        """A new cursor on this connection; with ``name``, a server-side
        (named) cursor whose results stream (ServerCursor)."""
        with self._lock:
            self._core.check_usable()
            return Cursor(self) if name is None else ServerCursor(self, name)

    def commit(self) -> None:
        """Commits the open transaction; nothing to do without one."""
        with self._lock:
            self._core.check_usable()
            if not self._core.in_transaction:
                return
            try:
                self._stub.Commit(broker_pb2.CommitRequest(session=self._core.name),
                                  timeout=self.timeout, metadata=self._core.metadata)
            except grpc.RpcError as e:
                raise self._core.failed(e, "commit failed: ") from None
            finally:
                # The broker closes the transaction whether Commit succeeds or not.
                self._core.in_transaction = False

    def rollback(self) -> None:
        """Rolls back the open transaction; nothing to do without one."""
        with self._lock:
            self._core.check_usable()
            if not self._core.in_transaction:
                return
            try:
                self._stub.Rollback(broker_pb2.RollbackRequest(session=self._core.name),
                                    timeout=self.timeout, metadata=self._core.metadata)
            except grpc.RpcError as e:
                raise self._core.failed(e, "rollback failed: ") from None
            self._core.in_transaction = False

    def close(self) -> None:
        """Ends the session (an open transaction is rolled back). Idempotent;
        never raises for a session the broker already ended."""
        with self._lock:
            if self._core.closed:
                return
            ended_by_broker = self._core.lease.ended is not None
            self._core.closed = True
            self._finalizer.detach()
            try:
                if not ended_by_broker:
                    self._stub.EndSession(broker_pb2.EndSessionRequest(session=self._core.name),
                                          timeout=_END_SESSION_TIMEOUT,
                                          metadata=self._core.metadata)
            except grpc.RpcError:
                pass  # already ended, or the broker is gone: its lease runs out
            finally:
                self._keepalive.release(self._core.lease)
                if self._mux is not None:
                    self._mux.release()
                self._core.in_transaction = False

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Commits on success and rolls back on an exception (as psycopg2 does),
        then closes."""
        try:
            if not self._core.closed and self._core.status == 0:
                if exc_type is None:
                    self.commit()
                else:
                    self.rollback()
        finally:
            self.close()

    # ---- calls on behalf of cursors ------------------------------------------------

    def _begin_if_needed(self) -> None:
        begin = self._core.begin_request()
        if begin is None:
            return
        try:
            self._stub.BeginTransaction(begin, timeout=self.timeout, metadata=self._core.metadata)
        except grpc.RpcError as e:
            raise self._core.failed(e, "cannot begin a transaction: ") from None
        self._core.in_transaction = True

    def _execute(self, sql: str, values: list,
                 request_id: Optional[str] = None) -> "broker_pb2.ExecuteResponse":
        with self._lock:
            self._core.check_usable()
            self._begin_if_needed()
            retrying = (request_id is None and self.retry_writes and self._core.autocommit
                        and not self._core.in_transaction)
            if retrying:
                request_id = str(uuid.uuid4())
            request = self._core.execute_request(sql, values, request_id or "")
            attempt = 1
            while True:
                try:
                    return self._call("execute", request, self._stub.Execute)
                except grpc.RpcError as e:
                    # The same request_id makes the retry return the first outcome
                    # if the lost attempt did run (docs/retries.md).
                    if (not retrying or attempt >= _WRITE_ATTEMPTS
                            or e.code() not in _RETRYABLE_WRITE_CODES):
                        raise self._core.failed(e, "") from None
                time.sleep(_WRITE_BACKOFF * 2 ** (attempt - 1))
                attempt += 1

    def _call(self, body: str, request: Any, method: Any) -> Any:
        """An Execute ("execute") or ExecuteBatch ("execute_batch") call: on
        the shared Pipeline stream while other calls are in flight on the
        channel, else unary (``method``); raises the unary call's grpc.RpcError."""
        metadata = self._core.metadata
        if self._mux is None:
            return method(request, timeout=self.timeout, metadata=metadata)
        return self._mux.call(body, request, self.timeout,
                              lambda t: method(request, timeout=t, metadata=metadata))

    def _stream(self, sql: str, values: list) -> Iterator["broker_pb2.StreamExecuteResponse"]:
        with self._lock:
            self._core.check_usable()
            self._begin_if_needed()
            return self._stub.StreamExecute(self._core.execute_request(sql, values),
                                            timeout=self.timeout, metadata=self._core.metadata)

    def _execute_many(self, statements: List[Tuple[str, list]]) -> List[
            "broker_pb2.ExecuteResponse"]:
        with self._lock:
            self._core.check_usable()
            try:
                if self._core.autocommit:
                    # PEP 249 autocommit: each statement commits by itself.
                    return [self._call("execute", self._core.execute_request(s, v),
                                       self._stub.Execute)
                            for s, v in statements]
                self._begin_if_needed()
                response = self._call("execute_batch",
                                      self._core.batch_request(_core.batch_statements(statements)),
                                      self._stub.ExecuteBatch)
                return list(response.results)
            except grpc.RpcError as e:
                raise self._core.failed(e, "") from None


class Cursor:
    """A DB-API cursor. Results are held in memory (the broker's unary
    results are bounded by BROKER_MAX_RESULT_BYTES). Not thread-safe."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        #: Rows fetchmany() returns by default.
        self.arraysize = 1
        self._result: Optional[_core.Result] = None
        self._pos = 0
        self._rowcount = -1
        self._closed = False
        # setinputsizes() for the next execute/executemany only.
        self._input_types: Any = None

    @property
    def description(self) -> Optional[Tuple[Tuple[Any, ...], ...]]:
        """One 7-tuple per column: (name, type_code = PostgreSQL type OID, None x 5);
        None when the last statement returned no rows."""
        return self._result.description if self._result is not None else None

    @property
    def rowcount(self) -> int:
        """Rows the last statement returned or affected; -1 when unknown."""
        return self._rowcount

    @property
    def rownumber(self) -> Optional[int]:
        """Index of the next row to fetch in the current result."""
        return self._pos if self._result is not None else None

    @property
    def statusmessage(self) -> Optional[str]:
        """The last statement's command tag ("INSERT 0 1")."""
        return self._result.statusmessage if self._result is not None else None

    lastrowid = None
    """Always None: PostgreSQL has no row ids; use RETURNING."""

    @property
    def closed(self) -> bool:
        return self._closed or self.connection.closed != 0

    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        if self.connection.closed == 1:
            raise InterfaceError("the connection is closed")

    def execute(self, operation: str, parameters: _core.Params = None, *,
                request_id: Optional[str] = None) -> None:
        """Runs one statement with parameters bound to its placeholders.

        request_id: makes a retry of this statement with the same id return
        the first outcome instead of running it twice (docs/retries.md); at
        most 128 of A-Z a-z 0-9 - _ . : ~ (a UUID). None: the connection's
        retry_writes decides."""
        self._check()
        sql, values = _core.statement(operation, parameters)
        _core.declare_types(operation, parameters, values, self._input_types)
        self._input_types = None
        self._result = None
        self._rowcount = -1
        response = self.connection._execute(sql, values, request_id)
        self._result = _core.Result(response)
        self._rowcount = self._result.rowcount
        self._pos = 0

    def executemany(self, operation: str, seq_of_parameters: Sequence[_core.Params]) -> None:
        """Runs the statement once per parameter set: as one ExecuteBatch (one
        round trip, inside the transaction) unless in autocommit."""
        self._check()
        statements = [_core.statement(operation, p) for p in seq_of_parameters]
        for p, (_, values) in zip(seq_of_parameters, statements):
            _core.declare_types(operation, p, values, self._input_types)
        self._input_types = None
        self._result = None
        self._rowcount = -1
        if not statements:
            self._rowcount = 0
            return
        responses = self.connection._execute_many(statements)
        counts = [_core.rowcount_of(r) for r in responses]
        self._rowcount = -1 if any(c < 0 for c in counts) else sum(counts)

    def callproc(self, procname: str, parameters: Sequence[Any] = ()) -> None:
        """Not supported: use ``execute("CALL proc(%s)")`` or ``SELECT f(%s)``."""
        raise NotSupportedError("callproc is not supported; use execute('CALL ...') or "
                                "execute('SELECT f(...)')")

    def _need_result(self) -> _core.Result:
        self._check()
        if self._result is None or self._result.description is None:
            raise ProgrammingError("no results to fetch: the last statement returned no rows")
        return self._result

    def fetchone(self) -> Optional[Tuple[Any, ...]]:
        """The next row, or None when there are no more."""
        result = self._need_result()
        if self._pos >= len(result.rows):
            return None
        self._pos += 1
        return result.row(self._pos - 1)

    def fetchmany(self, size: Optional[int] = None) -> List[Tuple[Any, ...]]:
        """Up to ``size`` (default: arraysize) more rows."""
        result = self._need_result()
        size = self.arraysize if size is None else size
        end = min(self._pos + max(size, 0), len(result.rows))
        rows = [result.row(i) for i in range(self._pos, end)]
        self._pos = end
        return rows

    def fetchall(self) -> List[Tuple[Any, ...]]:
        """Every remaining row."""
        result = self._need_result()
        rows = [result.row(i) for i in range(self._pos, len(result.rows))]
        self._pos = len(result.rows)
        return rows

    def setinputsizes(self, sizes: Any) -> None:
        """Declares the PostgreSQL types of the next execute's (or
        executemany's) parameters: a sequence (for %s placeholders) or a
        mapping by name (for %(name)s) whose items are type names as SQL
        spells them ("date", "timestamptz", "uuid", ...) or None. A declared
        type is sent as the parameter's Value.type, also for None (a typed
        NULL); the value must be in that type's input form. Other items
        (sizes, type objects) are ignored, as PEP 249 allows."""
        self._input_types = sizes

    def setoutputsize(self, size: Any, column: Optional[int] = None) -> None:
        """Does nothing (PEP 249 allows it)."""

    def nextset(self) -> None:
        """Not supported: a statement has one result."""
        raise NotSupportedError("a statement has one result set; nextset is not supported")

    def close(self) -> None:
        """Frees the result; the cursor is unusable afterwards."""
        self._closed = True
        self._result = None

    def __iter__(self) -> Iterator[Tuple[Any, ...]]:
        return self

    def __next__(self) -> Tuple[Any, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def connect(target: str, *, client_id: Optional[str] = None, token: Optional[str] = None,
            timeout: Optional[float] = None,
            connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
            ttl: Optional[float] = None, label: str = "", read_only: bool = False,
            isolation_level: Optional[str] = None, settings: Optional[Mapping[str, str]] = None,
            credentials: Optional[grpc.ChannelCredentials] = None,
            autocommit: bool = False, retry_writes: bool = False, tls: bool = False,
            tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
            tls_key: Optional[str] = None, pipeline: bool = True) -> Connection:
    """Opens a connection: leases a broker session at ``target`` ("host:port").

    client_id: sent as x-client-id (the broker's per-service quotas and listings);
        a broker with a clients file ignores it and uses the token's client.
    token: the bearer token the broker's clients file knows this service by, sent
        as ``authorization: Bearer <token>`` on every call (KeepAlive too).
        None: the SB_TOKEN environment variable, if set.
    timeout: deadline in seconds of each later call; the broker turns it into the
        statement's timeout. None: only the broker's own limits.
    connect_timeout: how long to wait for the broker to answer BeginSession.
    ttl: the session's lease in seconds (default: the broker's); the KeepAlive
        stream renews it while the process lives.
    label: shown to operators (ListSessions, logs).
    read_only: every transaction of the session is READ ONLY and statements that
        change session state are refused.
    isolation_level: the session's isolation level ("READ COMMITTED",
        "REPEATABLE READ", "SERIALIZABLE"; None: the database's default).
    settings: PostgreSQL settings for every statement (search_path, TimeZone,
        statement_timeout, application_name, app.* ...; docs/sessions.md).
    credentials: grpc.ChannelCredentials for TLS; None: plaintext (or the tls options).
    autocommit: start in autocommit mode.
    retry_writes: in autocommit mode, each execute() outside a transaction gets
        a request_id of its own (a UUID) and is retried with it, up to 4
        attempts, on UNAVAILABLE or ABORTED: a retry whose lost first attempt
        ran gets that attempt's outcome instead of running twice
        (docs/retries.md). Off by default.
    tls: connect over TLS, verifying the broker's certificate against the
        system's roots or ``tls_ca``; implied by any tls_* option.
    tls_ca: PEM file of the CA bundle the broker's certificate must chain to.
    tls_cert, tls_key: PEM files of a client certificate and its key, for a
        broker that asks for one (mutual TLS).
    pipeline: while other calls are in flight on the same channel (other
        threads' connections), send Execute and ExecuteBatch calls over one
        shared Pipeline stream instead of a unary call each (fewer round trips
        and less CPU under concurrency; the same results and errors). A lone
        call is always unary. False: unary calls only.
    """
    credentials = resolve_credentials(credentials, tls, tls_ca, tls_cert, tls_key)
    return Connection(target, client_id=client_id, token=token, timeout=timeout,
                      connect_timeout=connect_timeout, ttl=ttl, label=label, read_only=read_only,
                      isolation_level=isolation_level, settings=settings, credentials=credentials,
                      autocommit=autocommit, retry_writes=retry_writes, pipeline=pipeline)


class ServerCursor(Cursor):
    """A named (server-side) cursor, as ``connection.cursor(name)`` makes it:
    execute() starts a StreamExecute call, and fetch*() read its rows as they
    arrive, so a result of any size passes in bounded memory on both sides
    (the broker reads from PostgreSQL only as fast as this cursor is read;
    docs/streaming.md). SQLAlchemy's ``stream_results`` / ``yield_per`` use
    it. The name is the client's own (no DECLARE runs on the server).

    While a stream is being read in a transaction, the session's other calls
    wait for it (a session runs one call at a time): read it to the end or
    close the cursor before running other statements on the connection.
    rowcount is -1 until the last row was read. Not thread-safe."""

    def __init__(self, connection: Connection, name: str) -> None:
        super().__init__(connection)
        #: The cursor's name (the client's own; nothing is declared server-side).
        self.name = name
        #: Rows a fetch reads ahead at most is what the broker sends per message;
        #: kept for psycopg2 compatibility.
        self.itersize = 2000
        self._stream: Any = None
        self._buffer: Deque[Any] = collections.deque()
        self._description: Optional[Tuple[Tuple[Any, ...], ...]] = None
        self._type_names: Tuple[str, ...] = ()
        self._status: Optional[str] = None
        self._done = True
        self._fetched = 0

    @property
    def description(self) -> Optional[Tuple[Tuple[Any, ...], ...]]:
        """As Cursor.description, known as soon as execute() returns."""
        return self._description

    @property
    def statusmessage(self) -> Optional[str]:
        """The command tag, once the last row was read."""
        return self._status

    @property
    def rownumber(self) -> Optional[int]:
        return self._fetched if self._stream is not None else None

    def execute(self, operation: str, parameters: _core.Params = None) -> None:
        """Starts the statement; returns once its columns are known."""
        self._check()
        self._end_stream()
        sql, values = _core.statement(operation, parameters)
        _core.declare_types(operation, parameters, values, self._input_types)
        self._input_types = None
        self._rowcount = -1
        self._status = None
        self._description = None
        self._fetched = 0
        self._stream = self.connection._stream(sql, values)
        self._done = False
        first = self._next_message()
        if first is not None and first.HasField("columns"):
            columns = first.columns.columns
            self._description = tuple(
                (c.name, c.type_oid, None, None, None, None, None) for c in columns) or None
            self._type_names = tuple(c.type_name for c in columns)

    def executemany(self, operation: str, seq_of_parameters: Sequence[_core.Params]) -> None:
        """Not supported on a named cursor (as in psycopg2)."""
        raise ProgrammingError("executemany is not supported on a named (server-side) cursor")

    def _next_message(self) -> Optional["broker_pb2.StreamExecuteResponse"]:
        """Reads the next message into the buffer; None once the stream ended."""
        if self._done or self._stream is None:
            return None
        try:
            message = next(self._stream)
        except StopIteration:
            self._done = True
            return None
        except grpc.RpcError as e:
            self._done = True
            raise self.connection._core.failed(e, "") from None
        if message.HasField("rows"):
            self._buffer.extend(message.rows.rows)
        elif message.HasField("end"):
            self._status = message.end.command_tag
            tail = self._status.rsplit(" ", 1)[-1]
            self._rowcount = int(tail) if tail.isdigit() else -1
        return message

    def _need_stream(self) -> None:
        self._check()
        if self._stream is None or self._description is None:
            raise ProgrammingError("no results to fetch: the last statement returned no rows")

    def _decode(self, row: Any) -> Tuple[Any, ...]:
        names = self._type_names
        return tuple(_core.from_value(v, names[i]) for i, v in enumerate(row.values))

    def fetchone(self) -> Optional[Tuple[Any, ...]]:
        """The next row, or None when there are no more."""
        self._need_stream()
        while not self._buffer and not self._done:
            self._next_message()
        if not self._buffer:
            return None
        self._fetched += 1
        return self._decode(self._buffer.popleft())

    def fetchmany(self, size: Optional[int] = None) -> List[Tuple[Any, ...]]:
        """Up to ``size`` (default: arraysize) more rows."""
        size = self.arraysize if size is None else size
        rows = []
        for _ in range(max(size, 0)):
            row = self.fetchone()
            if row is None:
                break
            rows.append(row)
        return rows

    def fetchall(self) -> List[Tuple[Any, ...]]:
        """Every remaining row (read to the end of the stream)."""
        rows = []
        while True:
            row = self.fetchone()
            if row is None:
                return rows
            rows.append(row)

    def _end_stream(self) -> None:
        """Cancels a stream not read to its end (the broker then cancels the
        statement in PostgreSQL)."""
        if self._stream is not None and not self._done:
            self._stream.cancel()
        self._stream = None
        self._done = True
        self._buffer.clear()

    def close(self) -> None:
        """Ends the stream (cancelling it if unread) and frees the cursor."""
        self._end_stream()
        super().close()
