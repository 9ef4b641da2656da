"""sessionbroker.aio: the DB-API's semantics over asyncio (grpc.aio).

    from sessionbroker import aio
    conn = await aio.connect("127.0.0.1:50051", client_id="billing")
    cur = conn.cursor()
    await cur.execute("SELECT id, note FROM t WHERE id = %(id)s", {"id": 1})
    rows = await cur.fetchall()
    await conn.commit()
    await conn.close()

A named cursor, ``conn.cursor("big")``, streams its result (StreamExecute)
instead of holding it: ``async for row in cur`` (or ``await cur.fetchmany()``)
reads rows as they arrive, so a result of any size passes in bounded memory,
as ``sessionbroker.dbapi``'s ServerCursor does for blocking code.

Everything but the I/O is the DB-API module's: the same paramstyle
("pyformat", and "format"), types, exceptions (``sessionbroker.dbapi``'s
classes, re-exported here), transaction rules (the first statement begins a
transaction; ``autocommit``), the transaction idle limit
(BROKER_TX_IDLE_TIMEOUT, see ``sessionbroker.dbapi``) and ``is_disconnect``.
A connection is a broker session held by the process's one KeepAlive stream
(shared with blocking connections; it runs on its own thread, so holding a
session never blocks the event loop).

Threads and loops: a connection belongs to the event loop that created it
(gRPC's aio channels are per loop: one channel per loop and target is shared
by that loop's connections and closed with the last of them; close your
connections before the loop ends). Calls on one connection are serialized by an
asyncio.Lock; a cursor must not be used by two tasks at once.
"""

import asyncio
import collections
import weakref
from typing import (Any, AsyncIterator, Deque, Dict, List, Mapping, Optional, Sequence,
                    Tuple)

import grpc
import grpc.aio

from sessionbroker import _core
from sessionbroker._channel import CHANNEL_OPTIONS, channel_for, resolve_credentials
from sessionbroker._errors import (DatabaseError, DataError, Error, IntegrityError, InterfaceError,
                                   InternalError, NotSupportedError, OperationalError,
                                   ProgrammingError, Warning, error_from_rpc, is_disconnect)
from sessionbroker._keepalive import SessionLease, keepalive_for
from sessionbroker._listen import (Event, Gap, Notification, confirmation_from, event_from,
                                   request_for)
from sessionbroker._pb import broker_pb2, broker_pb2_grpc
from sessionbroker._pipeline_aio import AioPipelineMux, MuxKey
from sessionbroker._types import (BINARY, DATETIME, NUMBER, ROWID, STRING, Binary, Date,
                                  DateFromTicks, Json, Time, TimeFromTicks, Timestamp,
                                  TimestampFromTicks)

__all__ = [
    "apilevel", "threadsafety", "paramstyle", "connect", "AsyncConnection", "AsyncCursor",
    "AsyncServerCursor",
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID", "Binary", "Date", "Time", "Timestamp",
    "DateFromTicks", "TimeFromTicks", "TimestampFromTicks", "Json", "is_disconnect",
    "listen", "AsyncListener", "Notification", "Gap",
]

apilevel = "2.0"
threadsafety = 1  # a connection belongs to one event loop
paramstyle = "pyformat"

DEFAULT_CONNECT_TIMEOUT = 30.0
_END_SESSION_TIMEOUT = 5.0

class _LoopChannels:
    """The channels of one event loop, shared by its connections and closed
    when the last connection using one closes (a grpc.aio channel left open
    when its loop ends fails noisily at interpreter exit). Used only from the
    loop's thread."""

    def __init__(self) -> None:
        self.channels: Dict[Tuple[str, int], List[Any]] = {}  # key -> [channel, users]
        # The shared Pipeline stream of each channel and call metadata.
        self.muxes: Dict[MuxKey, AioPipelineMux] = {}

    def acquire(self, target: str,
                credentials: Optional[grpc.ChannelCredentials]) -> Tuple[Any, grpc.aio.Channel]:
        key = (target, id(credentials) if credentials is not None else 0)
        entry = self.channels.get(key)
        if entry is None:
            if credentials is None:
                channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            entry = self.channels[key] = [channel, 0]
        entry[1] += 1
        return key, entry[0]

    def acquire_mux(self, key: Tuple[str, int], metadata) -> AioPipelineMux:
        """The mux of an acquired channel and this call metadata, for one more user."""
        mux = self.muxes.get((key, metadata))
        if mux is None:
            mux = self.muxes[(key, metadata)] = AioPipelineMux(self.channels[key][0], metadata)
        mux.users += 1
        return mux

    async def release_mux(self, key: Tuple[str, int], metadata) -> None:
        """One user less; the last one closes the mux's stream (before the
        channel is released)."""
        mux = self.muxes.get((key, metadata))
        if mux is None:
            return
        mux.users -= 1
        if mux.users == 0:
            del self.muxes[(key, metadata)]
            await mux.close()

    async def release(self, key: Tuple[str, int]) -> None:
        entry = self.channels.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self.channels[key]
            await entry[0].close()


_loops: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopChannels]" = (
    weakref.WeakKeyDictionary())


def _loop_channels() -> _LoopChannels:
    return _loops.setdefault(asyncio.get_running_loop(), _LoopChannels())


class AsyncConnection:
    """An asyncio connection: one broker session. Create it with :func:`connect`."""

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

    def __init__(self, target: str, *, client_id: Optional[str], token: Optional[str],
                 timeout: Optional[float],
                 credentials: Optional[grpc.ChannelCredentials], autocommit: bool,
                 isolation_level: Optional[str], pipeline: bool = True) -> None:
        self.target = target
        self.client_id = client_id
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._core = _core.SessionCore(autocommit=autocommit, isolation_level=isolation_level)
        self._core.metadata = _core.call_metadata(client_id, token)
        self._channels = _loop_channels()
        self._channel_key, channel = self._channels.acquire(target, credentials)
        self._channel_released = False
        self._stub = broker_pb2_grpc.SessionBrokerStub(channel)
        #: The shared Pipeline stream's router for concurrent calls; None: unary only.
        self._mux: Optional[AioPipelineMux] = (
            self._channels.acquire_mux(self._channel_key, self._core.metadata)
            if pipeline else None)
        self._keepalive = keepalive_for(channel_for(target, credentials), self._core.metadata,
                                        target)

    async def _open(self, request: "broker_pb2.BeginSessionRequest",
                    connect_timeout: Optional[float]) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if connect_timeout is None else loop.time() + connect_timeout
        attempt = 0
        try:
            while True:
                attempt += 1
                remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
                try:
                    session = await self._stub.BeginSession(request, timeout=remaining,
                                                            metadata=self._core.metadata,
                                                            wait_for_ready=True)
                    break
                except grpc.aio.AioRpcError as e:
                    left = None if deadline is None else deadline - loop.time()
                    delay = _core.begin_session_retry_delay(e.code(), attempt, left)
                    if delay is None:
                        raise error_from_rpc(e, context=f"cannot open a session on the broker at "
                                             f"{self.target}: ") from None
                    await asyncio.sleep(delay)
        except BaseException:
            await self._release_channel()
            raise
        self._core.name = session.name
        self._core.lease = SessionLease(session.name)
        self._keepalive.hold(self._core.lease)
        # Dropped without close(): stop holding the session (no RPC from a
        # finalizer); its lease then runs out with its ttl.
        finalizer = weakref.finalize(self, self._keepalive.release, self._core.lease)
        finalizer.atexit = False

    # ---- attributes ----------------------------------------------------------------

    @property
    def session_name(self) -> str:
        return self._core.name

    @property
    def closed(self) -> int:
        """0 while usable, 1 after close(), 2 when the session is gone (discard it)."""
        return self._core.status

    @property
    def in_transaction(self) -> bool:
        return self._core.in_transaction

    @property
    def autocommit(self) -> bool:
        return self._core.autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._core.check_outside_transaction("autocommit")
        self._core.autocommit = bool(value)

    @property
    def isolation_level(self) -> Optional[str]:
        return self._core.isolation_level

    @isolation_level.setter
    def isolation_level(self, level: Optional[str]) -> None:
        self._core.check_outside_transaction("isolation_level")
        self._core.isolation = _core.isolation_enum(level)

    @property
    def readonly(self) -> bool:
        return self._core.readonly

    @readonly.setter
    def readonly(self, value: bool) -> None:
        self._core.check_outside_transaction("readonly")
        self._core.readonly = bool(value)

    @property
    def deferrable(self) -> bool:
        return self._core.deferrable

    @deferrable.setter
    def deferrable(self, value: bool) -> None:
        self._core.check_outside_transaction("deferrable")
        self._core.deferrable = bool(value)

    # ---- methods ---------------------------------------------------------------------

    async def ping(self) -> None:
        """Asks the broker whether the session is still open (GetSession: no
        database work). Raises OperationalError, for which ``is_disconnect`` is
        true, when the broker ended it or cannot be reached."""
        async with self._lock:
            self._core.check_usable()
            try:
                await self._stub.GetSession(broker_pb2.GetSessionRequest(session=self._core.name),
                                            timeout=self.timeout, metadata=self._core.metadata)
            except grpc.aio.AioRpcError as e:
                raise self._core.failed(e, "ping failed: ") from None

    def cursor(self, name: Optional[str] = None) -> "AsyncCursor":
        """A new cursor; with ``name``, a server-side (named) cursor whose
        results stream (:class:`AsyncServerCursor`)."""
        self._core.check_usable()
        return AsyncCursor(self) if name is None else AsyncServerCursor(self, name)

    async def commit(self) -> None:
        async with self._lock:
            self._core.check_usable()
            if not self._core.in_transaction:
                return
            try:
                await self._stub.Commit(broker_pb2.CommitRequest(session=self._core.name),
                                        timeout=self.timeout, metadata=self._core.metadata)
            except grpc.aio.AioRpcError as e:
                raise self._core.failed(e, "commit failed: ") from None
            finally:
                self._core.in_transaction = False

    async def rollback(self) -> None:
        async with self._lock:
            self._core.check_usable()
            if not self._core.in_transaction:
                return
            try:
                await self._stub.Rollback(broker_pb2.RollbackRequest(session=self._core.name),
                                          timeout=self.timeout, metadata=self._core.metadata)
            except grpc.aio.AioRpcError as e:
                raise self._core.failed(e, "rollback failed: ") from None
            self._core.in_transaction = False

    async def close(self) -> None:
        """Ends the session (rolling back an open transaction). Idempotent."""
        async with self._lock:
            if self._core.closed:
                return
            ended_by_broker = self._core.lease is not None and self._core.lease.ended is not None
            self._core.closed = True
            try:
                if self._core.lease is not None and not ended_by_broker:
                    await self._stub.EndSession(
                        broker_pb2.EndSessionRequest(session=self._core.name),
                        timeout=_END_SESSION_TIMEOUT, metadata=self._core.metadata)
            except grpc.aio.AioRpcError:
                pass  # already ended, or the broker is gone: its lease runs out
            finally:
                if self._core.lease is not None:
                    self._keepalive.release(self._core.lease)
                self._core.in_transaction = False
                await self._release_channel()

    async def _release_channel(self) -> None:
        if not self._channel_released:
            self._channel_released = True
            if self._mux is not None:
                await self._channels.release_mux(self._channel_key, self._core.metadata)
            await self._channels.release(self._channel_key)

    async def __aenter__(self) -> "AsyncConnection":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        try:
            if self._core.status == 0:
                if exc_type is None:
                    await self.commit()
                else:
                    await self.rollback()
        finally:
            await self.close()

    # ---- calls on behalf of cursors ------------------------------------------------

    async def _begin_if_needed(self) -> None:
        begin = self._core.begin_request()
        if begin is None:
            return
        try:
            await self._stub.BeginTransaction(begin, timeout=self.timeout,
                                              metadata=self._core.metadata)
        except grpc.aio.AioRpcError as e:
            raise self._core.failed(e, "cannot begin a transaction: ") from None
        self._core.in_transaction = True

    async def _execute(self, sql: str, values: list) -> "broker_pb2.ExecuteResponse":
        async with self._lock:
            self._core.check_usable()
            await self._begin_if_needed()
            try:
                return await self._call("execute", self._core.execute_request(sql, values),
                                        self._stub.Execute)
            except grpc.aio.AioRpcError as e:
                raise self._core.failed(e, "") from None

    async def _call(self, body: str, request: Any, method: Any) -> Any:
        """An Execute ("execute") or ExecuteBatch ("execute_batch") call: on
        the loop's shared Pipeline stream while other calls are in flight on
        the channel, else unary (``method``); raises the unary call's AioRpcError."""
        metadata = self._core.metadata
        if self._mux is None:
            return await method(request, timeout=self.timeout, metadata=metadata)
        return await self._mux.call(body, request, self.timeout,
                                    lambda t: method(request, timeout=t, metadata=metadata))

    async def _stream(self, sql: str, values: list) -> "grpc.aio.UnaryStreamCall":
        """Starts a StreamExecute call in the session (beginning its
        transaction first unless autocommit)."""
        async with self._lock:
            self._core.check_usable()
            await self._begin_if_needed()
            return self._stub.StreamExecute(self._core.execute_request(sql, values),
                                            timeout=self.timeout, metadata=self._core.metadata)

    async def _execute_many(self, statements: List[Tuple[str, list]]) -> List[
            "broker_pb2.ExecuteResponse"]:
        async with self._lock:
            self._core.check_usable()
            try:
                if self._core.autocommit:
                    return [await self._call("execute", self._core.execute_request(s, v),
                                             self._stub.Execute)
                            for s, v in statements]
                await self._begin_if_needed()
                response = await self._call(
                    "execute_batch", self._core.batch_request(_core.batch_statements(statements)),
                    self._stub.ExecuteBatch)
                return list(response.results)
            except grpc.aio.AioRpcError as e:
                raise self._core.failed(e, "") from None


class AsyncCursor:
    """An asyncio cursor; results are held in memory. One task at a time."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.arraysize = 1
        self._result: Optional[_core.Result] = None
        self._pos = 0
        self._rowcount = -1
        self._closed = False
        # setinputsizes() for the next execute/executemany only.
        self._input_types: Any = None

    lastrowid = None

    @property
    def description(self) -> Optional[Tuple[Tuple[Any, ...], ...]]:
        return self._result.description if self._result is not None else None

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def statusmessage(self) -> Optional[str]:
        return self._result.statusmessage if self._result is not None else None

    @property
    def closed(self) -> bool:
        return self._closed or self.connection.closed != 0

    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        if self.connection.closed == 1:
            raise InterfaceError("the connection is closed")

    async def execute(self, operation: str, parameters: _core.Params = None) -> None:
        self._check()
        sql, values = _core.statement(operation, parameters)
        _core.declare_types(operation, parameters, values, self._input_types)
        self._input_types = None
        self._result = None
        self._rowcount = -1
        response = await self.connection._execute(sql, values)
        self._result = _core.Result(response)
        self._rowcount = self._result.rowcount
        self._pos = 0

    async def executemany(self, operation: str,
                          seq_of_parameters: Sequence[_core.Params]) -> None:
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
        responses = await self.connection._execute_many(statements)
        counts = [_core.rowcount_of(r) for r in responses]
        self._rowcount = -1 if any(c < 0 for c in counts) else sum(counts)

    async def callproc(self, procname: str, parameters: Sequence[Any] = ()) -> None:
        raise NotSupportedError("callproc is not supported; use execute('CALL ...')")

    def _need_result(self) -> _core.Result:
        self._check()
        if self._result is None or self._result.description is None:
            raise ProgrammingError("no results to fetch: the last statement returned no rows")
        return self._result

    async def fetchone(self) -> Optional[Tuple[Any, ...]]:
        result = self._need_result()
        if self._pos >= len(result.rows):
            return None
        self._pos += 1
        return result.row(self._pos - 1)

    async def fetchmany(self, size: Optional[int] = None) -> List[Tuple[Any, ...]]:
        result = self._need_result()
        size = self.arraysize if size is None else size
        end = min(self._pos + max(size, 0), len(result.rows))
        rows = [result.row(i) for i in range(self._pos, end)]
        self._pos = end
        return rows

    async def fetchall(self) -> List[Tuple[Any, ...]]:
        result = self._need_result()
        rows = [result.row(i) for i in range(self._pos, len(result.rows))]
        self._pos = len(result.rows)
        return rows

    def setinputsizes(self, sizes: Any) -> None:
        """Declares the types of the next execute's parameters, as
        ``sessionbroker.dbapi.Cursor.setinputsizes`` does."""
        self._input_types = sizes

    def setoutputsize(self, size: Any, column: Optional[int] = None) -> None:
        """Does nothing (PEP 249 allows it)."""

    async def close(self) -> None:
        self._closed = True
        self._result = None

    def __aiter__(self) -> AsyncIterator[Tuple[Any, ...]]:
        return self

    async def __anext__(self) -> Tuple[Any, ...]:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row

    async def __aenter__(self) -> "AsyncCursor":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.close()


class AsyncServerCursor(AsyncCursor):
    """A named (server-side) cursor, as ``connection.cursor(name)`` makes it:
    execute() starts a StreamExecute call and returns once the columns are
    known; fetch*() and ``async for`` read the rows as they arrive, one
    message (at most BROKER_STREAM_WINDOW_BYTES / 4 bytes of rows) at a
    time, so a result of any size passes in bounded memory and a slow reader
    holds the broker back (docs/streaming.md). An error mid-result is raised
    by the fetch that reaches it. ``sessionbroker.dbapi.ServerCursor``'s
    rules: while a stream is read in a transaction the session's other calls
    wait for it (read it to the end or close the cursor first); rowcount and
    statusmessage are known once the last row was read; the name is the
    client's own (nothing is DECLAREd on the server). One task at a time."""

    def __init__(self, connection: AsyncConnection, name: str) -> None:
        super().__init__(connection)
        #: The cursor's name (the client's own).
        self.name = name
        self._call: Any = None
        self._buffer: Deque[Any] = collections.deque()
        self._description: Optional[Tuple[Tuple[Any, ...], ...]] = None
        self._type_names: Tuple[str, ...] = ()
        self._status: Optional[str] = None
        self._done = True
        self._fetched = 0

    @property
    def description(self) -> Optional[Tuple[Tuple[Any, ...], ...]]:
        """As AsyncCursor.description, known as soon as execute() returns."""
        return self._description

    @property
    def statusmessage(self) -> Optional[str]:
        """The command tag, once the last row was read."""
        return self._status

    @property
    def rownumber(self) -> Optional[int]:
        """Rows fetched so far (None before execute)."""
        return self._fetched if self._call is not None else None

    async def execute(self, operation: str, parameters: _core.Params = None) -> None:
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
        self._call = await self.connection._stream(sql, values)
        self._done = False
        first = await self._next_message()
        if first is not None and first.HasField("columns"):
            columns = first.columns.columns
            self._description = tuple(
                (c.name, c.type_oid, None, None, None, None, None) for c in columns) or None
            self._type_names = tuple(c.type_name for c in columns)

    async def executemany(self, operation: str,
                          seq_of_parameters: Sequence[_core.Params]) -> None:
        """Not supported on a named cursor (as in psycopg2)."""
        raise ProgrammingError("executemany is not supported on a named (server-side) cursor")

    async def _next_message(self) -> Optional["broker_pb2.StreamExecuteResponse"]:
        """Reads the next message into the buffer; None once the stream ended."""
        if self._done or self._call is None:
            return None
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as e:
            self._done = True
            raise self.connection._core.failed(e, "") from None
        if message is grpc.aio.EOF:
            self._done = True
            return None
        if message.HasField("rows"):
            self._buffer.extend(message.rows.rows)
        elif message.HasField("end"):
            self._status = message.end.command_tag
            tail = self._status.rsplit(" ", 1)[-1]
            self._rowcount = int(tail) if tail.isdigit() else -1
        return message

    def _need_stream(self) -> None:
        self._check()
        if self._call is None or self._description is None:
            raise ProgrammingError("no results to fetch: the last statement returned no rows")

    async def fetchone(self) -> Optional[Tuple[Any, ...]]:
        """The next row (reading the stream when the rows read are used up),
        or None when there are no more."""
        self._need_stream()
        while not self._buffer and not self._done:
            await self._next_message()
        if not self._buffer:
            return None
        self._fetched += 1
        row = self._buffer.popleft()
        names = self._type_names
        return tuple(_core.from_value(v, names[i]) for i, v in enumerate(row.values))

    async def fetchmany(self, size: Optional[int] = None) -> List[Tuple[Any, ...]]:
        """Up to ``size`` (default: arraysize) more rows."""
        size = self.arraysize if size is None else size
        rows = []
        for _ in range(max(size, 0)):
            row = await self.fetchone()
            if row is None:
                break
            rows.append(row)
        return rows

    async def fetchall(self) -> List[Tuple[Any, ...]]:
        """Every remaining row (read to the end of the stream)."""
        rows = []
        while True:
            row = await self.fetchone()
            if row is None:
                return rows
            rows.append(row)

    def _end_stream(self) -> None:
        """Cancels a stream not read to its end (the broker then cancels the
        statement in PostgreSQL)."""
        if self._call is not None and not self._done:
            self._call.cancel()
        self._call = None
        self._done = True
        self._buffer.clear()

    async def close(self) -> None:
        """Ends the stream (cancelling it if unread) and frees the cursor."""
        self._end_stream()
        await super().close()


async def connect(target: str, *, client_id: Optional[str] = None,
                  token: Optional[str] = None,
                  timeout: Optional[float] = None,
                  connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
                  ttl: Optional[float] = None, label: str = "", read_only: bool = False,
                  isolation_level: Optional[str] = None,
                  settings: Optional[Mapping[str, str]] = None,
                  credentials: Optional[grpc.ChannelCredentials] = None,
                  autocommit: bool = False, tls: bool = False, tls_ca: Optional[str] = None,
                  tls_cert: Optional[str] = None,
                  tls_key: Optional[str] = None, pipeline: bool = True) -> AsyncConnection:
    """Leases a broker session; the arguments are ``sessionbroker.dbapi.connect``'s
    (``pipeline``: the loop's connections share a Pipeline stream for
    concurrent Execute/ExecuteBatch calls; False: unary calls only)."""
    credentials = resolve_credentials(credentials, tls, tls_ca, tls_cert, tls_key)
    conn = AsyncConnection(target, client_id=client_id, token=token, timeout=timeout,
                           credentials=credentials,
                           autocommit=autocommit, isolation_level=isolation_level,
                           pipeline=pipeline)
    await conn._open(_core.begin_session_request(ttl=ttl, label=label, read_only=read_only,
                                                 isolation_level=isolation_level,
                                                 settings=settings), connect_timeout)
    return conn


class AsyncListener:
    """An async iterator of Notification and Gap events (``sessionbroker.dbapi.listen``'s
    semantics). Create it with :func:`listen`; it belongs to the loop that created it."""

    def __init__(self, target: str, channels: Sequence[str], *, client_id: Optional[str],
                 credentials: Optional[grpc.ChannelCredentials]) -> None:
        self.target = target
        self._channels = _loop_channels()
        self._channel_key, channel = self._channels.acquire(target, credentials)
        self._released = False
        self._closed = False
        metadata = (("x-client-id", client_id),) if client_id else ()
        stub = broker_pb2_grpc.SessionBrokerStub(channel)
        self._call = stub.Listen(request_for(channels), metadata=metadata, wait_for_ready=True)
        #: Set once confirmed: the channels listened to and the listener connection's pid.
        self.channels: Tuple[str, ...] = ()
        self.listener_pid = 0

    async def _open(self) -> None:
        try:
            first = await self._call.read()
        except grpc.aio.AioRpcError as e:
            await self._release()
            raise error_from_rpc(e, context=f"cannot listen at {self.target}: ") from None
        if first is grpc.aio.EOF:
            await self._release()
            raise InterfaceError("the broker ended the Listen stream before confirming it")
        self.channels, self.listener_pid = confirmation_from(first)

    def __aiter__(self) -> "AsyncListener":
        return self

    async def __anext__(self) -> Event:
        while True:
            try:
                response = await self._call.read()
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as e:
                await self._release()
                if self._closed or isinstance(e, asyncio.CancelledError):
                    raise StopAsyncIteration from None
                raise error_from_rpc(e) from None
            if response is grpc.aio.EOF:
                await self._release()
                raise StopAsyncIteration
            event = event_from(response)
            if event is not None:
                return event

    async def close(self) -> None:
        """Cancels the stream; the broker UNLISTENs channels nobody else listens to."""
        self._closed = True
        self._call.cancel()
        await self._release()

    async def _release(self) -> None:
        if not self._released:
            self._released = True
            await self._channels.release(self._channel_key)

    async def __aenter__(self) -> "AsyncListener":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.close()


async def listen(target: str, channels: Sequence[str], *, client_id: Optional[str] = None,
                 credentials: Optional[grpc.ChannelCredentials] = None) -> AsyncListener:
    """Subscribes to ``channels``; returns once the broker confirms (see
    ``sessionbroker.dbapi.listen``): ``async for event in listener``."""
    listener = AsyncListener(target, channels, client_id=client_id, credentials=credentials)
    await listener._open()
    return listener
