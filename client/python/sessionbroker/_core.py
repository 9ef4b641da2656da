"""What the blocking (dbapi) and asyncio (aio) connections share: the session
and transaction bookkeeping, request building and result decoding. Neither
I/O nor locking happens here; the two front ends do the calls.

A ``SessionCore`` is owned by one connection and guarded by it (the dbapi
connection's lock; the aio connection's single event loop). A ``Result`` is
immutable once built.
"""

import datetime as _dt
import os
import uuid
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import duration_pb2

from sessionbroker._errors import (Error, InterfaceError, OperationalError, ProgrammingError,
                                   error_from_rpc)
from sessionbroker._keepalive import SessionLease
from sessionbroker._pb import broker_pb2
from sessionbroker._sql import placeholder_names, translate
from sessionbroker._types import from_value, to_value

#: The environment variable a bearer token is read from when ``token`` is not given.
TOKEN_ENV = "SB_TOKEN"


def call_metadata(client_id: Optional[str],
                  token: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    """The metadata every call carries: ``authorization: Bearer <token>`` (the
    broker's clients file; ``token`` None: ``$SB_TOKEN`` if set) and
    ``x-client-id`` (only a hint once the broker authenticates callers)."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    metadata: List[Tuple[str, str]] = []
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    if client_id:
        metadata.append(("x-client-id", client_id))
    return tuple(metadata)


ISOLATION_LEVELS = {
    None: broker_pb2.ISOLATION_LEVEL_UNSPECIFIED,
    "DEFAULT": broker_pb2.ISOLATION_LEVEL_UNSPECIFIED,
    # PostgreSQL runs READ UNCOMMITTED as READ COMMITTED.
    "READ UNCOMMITTED": broker_pb2.READ_COMMITTED,
    "READ COMMITTED": broker_pb2.READ_COMMITTED,
    "REPEATABLE READ": broker_pb2.REPEATABLE_READ,
    "SERIALIZABLE": broker_pb2.SERIALIZABLE,
}
_LEVEL_NAMES = {broker_pb2.READ_COMMITTED: "READ COMMITTED",
                broker_pb2.REPEATABLE_READ: "REPEATABLE READ",
                broker_pb2.SERIALIZABLE: "SERIALIZABLE"}

Params = Union[Sequence[Any], Mapping[str, Any], None]


def isolation_enum(level: Optional[str]) -> int:
    """The proto enum for an isolation level name ("SERIALIZABLE", ...)."""
    key = level.upper().replace("_", " ") if isinstance(level, str) else level
    if key not in ISOLATION_LEVELS:
        raise ProgrammingError(f"unknown isolation level {level!r}; use one of "
                               "READ COMMITTED, REPEATABLE READ, SERIALIZABLE or None")
    return ISOLATION_LEVELS[key]


def duration(seconds: Optional[float]):
    """A google.protobuf.Duration, or None."""
    if seconds is None:
        return None
    d = duration_pb2.Duration()
    d.FromTimedelta(_dt.timedelta(seconds=seconds))
    return d


def begin_session_request(
        *, ttl: Optional[float], label: str, read_only: bool, isolation_level: Optional[str],
        settings: Optional[Mapping[str, str]]) -> "broker_pb2.BeginSessionRequest":
    """The BeginSession request for connect()'s arguments, with a request_id of
    its own that every attempt of this connect() sends."""
    req = broker_pb2.BeginSessionRequest(request_id=str(uuid.uuid4()),
                                         label=label or "", read_only=bool(read_only),
                                         isolation=isolation_enum(isolation_level),
                                         settings={str(k): str(v) for k, v in
                                                   (settings or {}).items()})
    if ttl is not None:
        req.ttl.CopyFrom(duration(ttl))
    return req


#: Attempts of BeginSession while it fails UNAVAILABLE. The call waits for a
#: connection (``wait_for_ready``), so UNAVAILABLE means the connection broke
#: under it: typically an idle HTTP/2 connection that the broker, a proxy or a
#: NAT closed just as the call went out ("Socket closed"), which the next
#: attempt replaces. Every attempt carries the same ``request_id``, so a
#: broker that opened the session for an attempt whose answer was lost
#: answers the retry with that session instead of leasing a second one
#: (docs/retries.md).
BEGIN_SESSION_ATTEMPTS = 3
_BEGIN_SESSION_BACKOFF = 0.05
# An attempt needs this much of the connect timeout left after its backoff;
# with less, the last UNAVAILABLE (which says what went wrong) is raised
# rather than a DEADLINE_EXCEEDED from an attempt that had no chance.
_BEGIN_SESSION_MIN_ATTEMPT = 0.25


def begin_session_retry_delay(code: Optional[grpc.StatusCode], attempt: int,
                              remaining: Optional[float]) -> Optional[float]:
    """Seconds to wait before BeginSession's next attempt, after attempt number
    ``attempt`` (1-based) failed with ``code`` and ``remaining`` seconds of the
    connect timeout are left (None: no timeout); None: give up."""
    if code != grpc.StatusCode.UNAVAILABLE or attempt >= BEGIN_SESSION_ATTEMPTS:
        return None
    delay = _BEGIN_SESSION_BACKOFF * (2 ** (attempt - 1))
    if remaining is not None and remaining < delay + _BEGIN_SESSION_MIN_ATTEMPT:
        return None
    return delay


def statement(operation: str, parameters: Params) -> Tuple[str, List["broker_pb2.Value"]]:
    """The SQL with $n and its parameters as Values (DataError/ProgrammingError
    before anything is sent)."""
    if not isinstance(operation, str):
        raise ProgrammingError(f"the SQL must be a str, not {type(operation).__name__}")
    sql, values = translate(operation, parameters)
    return sql, [to_value(v) for v in values]


def declare_types(operation: str, parameters: Params, values: List["broker_pb2.Value"],
                  declared: Any) -> None:
    """Applies a cursor's setinputsizes() to the Values of `parameters`: each
    type name declared for a parameter (a sequence by position, or a mapping
    by %(name)s) becomes its Value.type; other items are ignored."""
    if not declared or parameters is None:
        return
    if isinstance(declared, Mapping):
        if not isinstance(parameters, Mapping):
            return
        types = [declared.get(name) for name in placeholder_names(operation)]
    else:
        types = list(declared)
    for value, type_name in zip(values, types):
        if isinstance(type_name, str) and type_name:
            value.type = type_name


def rowcount_of(response: "broker_pb2.ExecuteResponse") -> int:
    """Rows affected or returned as the command tag says; -1 when it says none
    (DDL, SET, ...), as psycopg2 reports."""
    tail = response.command_tag.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else -1


class Result:
    """One statement's result: its description and its rows, decoded lazily."""

    __slots__ = ("description", "rows", "type_names", "rowcount", "statusmessage")

    def __init__(self, response: "broker_pb2.ExecuteResponse") -> None:
        columns = response.columns
        self.description: Optional[Tuple[Tuple[Any, ...], ...]] = tuple(
            (c.name, c.type_oid, None, None, None, None, None) for c in columns) or None
        self.type_names = tuple(c.type_name for c in columns)
        self.rows = response.rows
        self.rowcount = rowcount_of(response)
        self.statusmessage: str = response.command_tag

    def row(self, index: int) -> Tuple[Any, ...]:
        names = self.type_names
        return tuple(from_value(v, names[i]) for i, v in enumerate(self.rows[index].values))


class SessionCore:
    """The state of one connection's broker session."""

    def __init__(self, *, autocommit: bool, isolation_level: Optional[str]) -> None:
        self.name: str = ""
        self.lease: Optional[SessionLease] = None
        self.metadata: Tuple[Tuple[str, str], ...] = ()
        self.in_transaction = False
        self.autocommit = bool(autocommit)
        # Per transaction (BeginTransaction); None: the session's own.
        self.isolation: int = broker_pb2.ISOLATION_LEVEL_UNSPECIFIED
        self.session_isolation: int = isolation_enum(isolation_level)
        self.readonly = False
        self.deferrable = False
        self.closed = False
        self.broken: Optional[Error] = None

    # ---- state checks --------------------------------------------------------

    def check_usable(self) -> None:
        """Raises InterfaceError when closed, OperationalError when the session is gone."""
        if self.closed:
            raise InterfaceError("the connection is closed")
        if self.broken is None and self.lease is not None and self.lease.ended is not None:
            self.broken = OperationalError(
                f"the broker ended session {self.name}: {self.lease.ended}; the connection "
                "is no longer usable (open a new one)", disconnect=True, reason=None)
        if self.broken is not None:
            raise type(self.broken)(
                str(self.broken), sqlstate=self.broken.sqlstate, grpc_code=self.broken.grpc_code,
                reason=self.broken.reason, disconnect=True)

    def check_outside_transaction(self, what: str) -> None:
        if self.in_transaction:
            raise ProgrammingError(f"{what} cannot be changed inside a transaction: "
                                   "commit() or rollback() first")

    @property
    def status(self) -> int:
        """psycopg2's ``closed``: 0 open, 1 closed by close(), 2 broken."""
        if self.closed:
            return 1
        if self.broken is not None or (self.lease is not None and self.lease.ended is not None):
            return 2
        return 0

    @property
    def isolation_level(self) -> Optional[str]:
        level = self.isolation or self.session_isolation
        return _LEVEL_NAMES.get(level)

    # ---- requests ------------------------------------------------------------

    def begin_request(self) -> Optional["broker_pb2.BeginTransactionRequest"]:
        """The BeginTransaction the next statement needs, or None."""
        if self.autocommit or self.in_transaction:
            return None
        return broker_pb2.BeginTransactionRequest(session=self.name, isolation=self.isolation,
                                                  read_only=self.readonly,
                                                  deferrable=self.deferrable)

    def execute_request(self, sql: str, values,
                        request_id: str = "") -> "broker_pb2.ExecuteRequest":
        return broker_pb2.ExecuteRequest(sql=sql, params=values, session=self.name,
                                         request_id=request_id)

    def batch_request(self, statements) -> "broker_pb2.ExecuteBatchRequest":
        return broker_pb2.ExecuteBatchRequest(statements=statements, session=self.name)

    # ---- outcomes ------------------------------------------------------------

    def failed(self, error: grpc.RpcError, context: str) -> Error:
        """The exception for a failed call; a disconnect marks the connection broken."""
        err = error_from_rpc(error, context=context)
        if err.disconnect and self.broken is None:
            self.broken = err
        return err


def batch_statements(sql_and_values: List[Tuple[str, list]]) -> List["broker_pb2.Statement"]:
    """ExecuteBatch's statements from (SQL, values) pairs."""
    return [broker_pb2.Statement(sql=s, params=v) for s, v in sql_and_values]

