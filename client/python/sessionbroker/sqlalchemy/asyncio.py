"""The ``postgresql+sessionbroker_async`` dialect, for ``sqlalchemy.ext.asyncio``.

SQLAlchemy 1.4 runs an asyncio driver through a synchronous PEP 249 facade
whose methods await the driver inside SQLAlchemy's greenlet bridge
(``await_only``), as its asyncpg dialect does; this module is that facade over
``sessionbroker.aio``. Everything else (compiler, types, isolation,
pre-ping, disconnect detection) is the synchronous dialect's
(``sessionbroker.sqlalchemy.base``), since the aio connection has the same
attributes and errors as the DB-API one.

A cursor's whole result is awaited at execute() (the broker returns results
whole), so fetching never awaits. ``?async_fallback=true`` in the URL runs it
from plain synchronous code (SQLAlchemy's test mode), as for asyncpg.

Threads and loops: an adapted connection belongs to the event loop that
opened it (grpc.aio's rule); SQLAlchemy's AsyncAdaptedQueuePool hands each to
one task at a time. Dispose the engine (``await engine.dispose()``) before its
loop ends.
"""

from __future__ import annotations

import collections
from typing import Any, Deque, List, Optional, Sequence, Tuple

from sqlalchemy import pool, util
from sqlalchemy.engine import AdaptedConnection
from sqlalchemy.util.concurrency import await_fallback, await_only

from .base import SessionBrokerDialect


class AsyncAdapt_sessionbroker_cursor:
    """A PEP 249 cursor over an ``aio.AsyncCursor``."""

    __slots__ = ("_adapt_connection", "_cursor", "_rows", "arraysize")

    server_side = False

    def __init__(self, adapt_connection: "AsyncAdapt_sessionbroker_connection") -> None:
        self._adapt_connection = adapt_connection
        self._cursor = adapt_connection._connection.cursor()
        self._rows: Deque[Tuple[Any, ...]] = collections.deque()
        self.arraysize = 1

    @property
    def description(self):
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    lastrowid = None

    def setinputsizes(self, sizes: Any) -> None:
        self._cursor.setinputsizes(sizes)

    def execute(self, operation: str, parameters: Any = None) -> None:
        self._adapt_connection.await_(self._execute(operation, parameters))

    async def _execute(self, operation: str, parameters: Any) -> None:
        self._rows.clear()
        await self._cursor.execute(operation, parameters)
        if self._cursor.description is not None:
            self._rows.extend(await self._cursor.fetchall())

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        self._rows.clear()
        self._adapt_connection.await_(self._cursor.executemany(operation, seq_of_parameters))

    def fetchone(self) -> Optional[Tuple[Any, ...]]:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: Optional[int] = None) -> List[Tuple[Any, ...]]:
        count = self.arraysize if size is None else size
        return [self._rows.popleft() for _ in range(min(count, len(self._rows)))]

    def fetchall(self) -> List[Tuple[Any, ...]]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __iter__(self):
        while self._rows:
            yield self._rows.popleft()

    def close(self) -> None:
        # The aio cursor holds nothing on the broker (its result is in
        # memory, already copied here): dropping it is all closing needs, and
        # SQLAlchemy may close cursors where no await is possible.
        self._rows.clear()


class AsyncAdapt_sessionbroker_connection(AdaptedConnection):
    """A PEP 249 connection over an ``aio.AsyncConnection`` (one broker session)."""

    __slots__ = ("dbapi",)

    await_ = staticmethod(await_only)

    def __init__(self, dbapi: "AsyncAdapt_sessionbroker_dbapi", connection: Any) -> None:
        self.dbapi = dbapi
        self._connection = connection

    # The transaction characteristics and state: the aio connection's own.
    @property
    def autocommit(self) -> bool:
        return self._connection.autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._connection.autocommit = value

    @property
    def isolation_level(self) -> Optional[str]:
        return self._connection.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: Optional[str]) -> None:
        self._connection.isolation_level = value

    @property
    def readonly(self) -> bool:
        return self._connection.readonly

    @readonly.setter
    def readonly(self, value: bool) -> None:
        self._connection.readonly = value

    @property
    def deferrable(self) -> bool:
        return self._connection.deferrable

    @deferrable.setter
    def deferrable(self, value: bool) -> None:
        self._connection.deferrable = value

    @property
    def closed(self) -> int:
        return self._connection.closed

    @property
    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    @property
    def session_name(self) -> str:
        return self._connection.session_name

    def cursor(self) -> AsyncAdapt_sessionbroker_cursor:
        return AsyncAdapt_sessionbroker_cursor(self)

    def ping(self) -> None:
        self.await_(self._connection.ping())

    def commit(self) -> None:
        self.await_(self._connection.commit())

    def rollback(self) -> None:
        self.await_(self._connection.rollback())

    def close(self) -> None:
        self.await_(self._connection.close())


class AsyncAdaptFallback_sessionbroker_connection(AsyncAdapt_sessionbroker_connection):
    """For ?async_fallback=true: awaits from outside a greenlet too."""

    __slots__ = ()

    await_ = staticmethod(await_fallback)


class AsyncAdapt_sessionbroker_dbapi:
    """The module-like object the dialect uses as its DB-API: connect(),
    paramstyle, the exception classes and is_disconnect of sessionbroker.aio."""

    def __init__(self, aio: Any) -> None:
        self.aio = aio
        self.paramstyle = aio.paramstyle
        self.apilevel = aio.apilevel
        self.threadsafety = aio.threadsafety
        for name in (
            "Warning",
            "Error",
            "InterfaceError",
            "DatabaseError",
            "DataError",
            "OperationalError",
            "IntegrityError",
            "InternalError",
            "ProgrammingError",
            "NotSupportedError",
            "STRING",
            "BINARY",
            "NUMBER",
            "DATETIME",
            "ROWID",
            "Binary",
            "is_disconnect",
        ):
            setattr(self, name, getattr(aio, name))

    def connect(self, *args: Any, **kwargs: Any) -> AsyncAdapt_sessionbroker_connection:
        if util.asbool(kwargs.pop("async_fallback", False)):
            return AsyncAdaptFallback_sessionbroker_connection(
                self, await_fallback(self.aio.connect(*args, **kwargs))
            )
        return AsyncAdapt_sessionbroker_connection(
            self, await_only(self.aio.connect(*args, **kwargs))
        )


class AsyncSessionBrokerDialect(SessionBrokerDialect):
    """``postgresql+sessionbroker_async://HOST:PORT/`` for create_async_engine."""

    driver = "sessionbroker_async"
    is_async = True
    supports_statement_cache = True
    # sessionbroker.aio has no streaming cursor: stream_results buffers, as
    # SQLAlchemy does for drivers without server-side cursors.
    supports_server_side_cursors = False

    @classmethod
    def dbapi(cls):
        """sessionbroker.aio behind the synchronous facade."""
        from sessionbroker import aio

        return AsyncAdapt_sessionbroker_dbapi(aio)

    @classmethod
    def get_pool_class(cls, url):
        if util.asbool(url.query.get("async_fallback", False)):
            return pool.FallbackAsyncAdaptedQueuePool
        return pool.AsyncAdaptedQueuePool

    def create_connect_args(self, url):
        args, kwargs = super().create_connect_args(url.difference_update_query(["async_fallback"]))
        if "async_fallback" in url.query:
            kwargs["async_fallback"] = url.query["async_fallback"]
        return args, kwargs

    def get_driver_connection(self, connection):
        return connection._connection


dialect = AsyncSessionBrokerDialect
