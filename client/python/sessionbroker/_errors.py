"""PEP 249's exception hierarchy and the mapping from broker errors to it.

A failed RPC becomes one exception class chosen from, in order: the
SQLSTATE (the ``sqlstate`` trailer, or the SqlErrorDetail of the
``grpc-status-details-bin`` trailer when the broker sends one), the
``sessionbroker-reason`` trailer (sessions and transactions the broker
ended), and the gRPC status code. Each exception carries what the broker
said: ``.sqlstate``/``.pgcode``, ``.pgerror``, ``.grpc_code``, ``.reason``,
PostgreSQL's error fields (``.detail``, ``.hint``, ``.constraint_name``, ...,
also as ``.diag`` like psycopg2) and ``.disconnect``: the session behind the
connection is gone (or unusable), so a pool must discard the connection
(``is_disconnect``).

Pure functions and immutable-after-construction exceptions: thread-safe.
"""

from typing import Any, Optional, Sequence, Tuple

import grpc

__all__ = [
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "is_disconnect", "error_from_rpc",
]

SQLSTATE_KEY = "sqlstate"
REASON_KEY = "sessionbroker-reason"
DETAILS_KEY = "grpc-status-details-bin"
_DETAIL_TYPE = "sessionbroker.v1.SqlErrorDetail"

# sessionbroker-reason tokens after which the session (or the transaction the
# application believes it is in) is gone for good: the connection is invalid.
# TX_IDLE_TIMEOUT / TX_MAX_DURATION only roll the transaction back, but the
# application's work is lost as surely as when PgBouncer's
# idle_transaction_timeout closes a client connection, which psycopg2 reports
# as a disconnect; a pool then starts afresh with a new session.
DISCONNECT_REASONS = frozenset({
    "SESSION_NOT_FOUND", "SESSION_EXPIRED", "SESSION_ORPHANED", "SESSION_MAX_LIFETIME",
    "SESSION_ENDED", "BROKER_SHUTDOWN", "TX_IDLE_TIMEOUT", "TX_MAX_DURATION",
})


class Warning(Exception):  # noqa: A001 - the name PEP 249 prescribes
    """Important warnings (PEP 249); the driver raises none today."""


class Error(Exception):
    """Base class of every error of this module (PEP 249)."""

    def __init__(self, message: str = "", *, sqlstate: Optional[str] = None,
                 grpc_code: Optional[grpc.StatusCode] = None, reason: Optional[str] = None,
                 detail_fields: Optional[dict] = None, disconnect: bool = False) -> None:
        super().__init__(message)
        fields = detail_fields or {}
        self.message: str = message
        #: The five-character SQLSTATE PostgreSQL reported, or None.
        self.sqlstate: Optional[str] = sqlstate or None
        #: The gRPC status code of the failed call, or None for client-side errors.
        self.grpc_code: Optional[grpc.StatusCode] = grpc_code
        #: The broker's ``sessionbroker-reason`` token (e.g. "TX_IDLE_TIMEOUT"), or None.
        self.reason: Optional[str] = reason or None
        #: The session is gone or unusable: discard the connection.
        self.disconnect: bool = disconnect
        self.severity: Optional[str] = fields.get("severity") or None
        self.message_primary: Optional[str] = fields.get("message") or None
        self.detail: Optional[str] = fields.get("detail") or None
        self.hint: Optional[str] = fields.get("hint") or None
        self.position: Optional[int] = fields.get("position") or None
        self.schema_name: Optional[str] = fields.get("schema_name") or None
        self.table_name: Optional[str] = fields.get("table_name") or None
        self.column_name: Optional[str] = fields.get("column_name") or None
        self.datatype_name: Optional[str] = fields.get("data_type_name") or None
        self.constraint_name: Optional[str] = fields.get("constraint_name") or None
        self.statement_index: Optional[int] = fields.get("statement_index") or None

    @property
    def pgcode(self) -> Optional[str]:
        """psycopg2's name for :attr:`sqlstate`."""
        return self.sqlstate

    @property
    def pgerror(self) -> str:
        """The error message as the broker sent it (psycopg2's name)."""
        return self.message

    @property
    def diag(self) -> "Error":
        """psycopg2-style diagnostics: the same fields (``diag.constraint_name``, ...)."""
        return self

    @property
    def sqlstate_class(self) -> Optional[str]:
        """The SQLSTATE's class, its first two characters ("23"), or None."""
        return self.sqlstate[:2] if self.sqlstate else None


class InterfaceError(Error):
    """Misuse of the driver itself: a closed connection or cursor, a bad argument."""


class DatabaseError(Error):
    """Errors of the database or the broker (PEP 249)."""


class DataError(DatabaseError):
    """Bad data: a value out of range, bad input syntax (SQLSTATE 22), or a
    Python value the driver cannot convert."""


class OperationalError(DatabaseError):
    """The database or the broker could not do it: connection or session lost,
    deadline, pool exhausted, serialization failure (SQLSTATE 08, 40, 53, 57, ...)."""


class IntegrityError(DatabaseError):
    """A constraint was violated (SQLSTATE 23)."""


class InternalError(DatabaseError):
    """The database's or the broker's internal state (SQLSTATE XX, 25, P0, ...)."""


class ProgrammingError(DatabaseError):
    """Wrong SQL or a wrong call: syntax error, unknown table, wrong parameters (SQLSTATE 42)."""


class NotSupportedError(DatabaseError):
    """Not supported by PostgreSQL (SQLSTATE 0A) or by this driver."""


def class_for_sqlstate(sqlstate: str) -> type:
    """The PEP 249 class for a SQLSTATE, following psycopg2's table."""
    c0, c1 = sqlstate[0], sqlstate[1]
    cls = sqlstate[:2]
    if cls == "0A":
        return NotSupportedError
    if c0 == "0":
        return OperationalError if cls == "08" else DatabaseError
    if c0 == "2":
        if c1 in "01":
            return ProgrammingError
        if c1 == "2":
            return DataError
        if c1 == "3":
            return IntegrityError
        if c1 in "45BDF":
            return InternalError
        if c1 in "678":
            return OperationalError
    if c0 == "3":
        if c1 == "4":
            return OperationalError
        if c1 in "89B":
            return InternalError
        if c1 in "DF":
            return ProgrammingError
    if c0 == "4":
        if c1 == "0":
            return OperationalError  # 40001 serialization failure, 40P01 deadlock
        if c1 in "24":
            return ProgrammingError
    if c0 == "5" and c1 in "345789":
        return OperationalError
    if c0 in "FH":
        return OperationalError
    if c0 in "PX":
        return InternalError
    return DatabaseError


_CODE_CLASSES = {
    grpc.StatusCode.UNAVAILABLE: OperationalError,
    grpc.StatusCode.DEADLINE_EXCEEDED: OperationalError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OperationalError,
    grpc.StatusCode.ABORTED: OperationalError,
    grpc.StatusCode.CANCELLED: OperationalError,
    grpc.StatusCode.NOT_FOUND: OperationalError,
    grpc.StatusCode.FAILED_PRECONDITION: OperationalError,
    grpc.StatusCode.PERMISSION_DENIED: OperationalError,
    grpc.StatusCode.UNAUTHENTICATED: OperationalError,
    grpc.StatusCode.INVALID_ARGUMENT: ProgrammingError,
    grpc.StatusCode.OUT_OF_RANGE: DataError,
    grpc.StatusCode.ALREADY_EXISTS: IntegrityError,
    grpc.StatusCode.UNIMPLEMENTED: NotSupportedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
}


def _metadata_value(metadata: Optional[Sequence[Tuple[str, Any]]], key: str) -> Any:
    for k, v in metadata or ():
        if k == key:
            return v
    return None


def _sql_error_detail(raw: Any) -> Optional[dict]:
    """The SqlErrorDetail fields from a grpc-status-details-bin value, or None."""
    if not isinstance(raw, (bytes, bytearray)):
        return None
    from sessionbroker._pb import broker_pb2  # generated; imported late
    status = broker_pb2.RpcStatus()
    try:
        status.ParseFromString(bytes(raw))
    except Exception:  # a malformed trailer must not hide the error itself
        return None
    for any_detail in status.details:
        if any_detail.type_url.rsplit("/", 1)[-1] == _DETAIL_TYPE:
            detail = broker_pb2.SqlErrorDetail()
            if any_detail.Unpack(detail):
                return {f.name: v for f, v in detail.ListFields()}
    return None


def error_from_rpc(error: grpc.RpcError, *, context: str = "") -> Error:
    """The PEP 249 exception for a failed call (sync ``grpc.RpcError`` or
    ``grpc.aio.AioRpcError``). ``context`` prefixes the message ("BeginSession: ")."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or str(error)
    try:
        trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    except Exception:
        trailers = None
    trailers = tuple(trailers or ())
    fields = _sql_error_detail(_metadata_value(trailers, DETAILS_KEY))
    sqlstate = (fields or {}).get("sqlstate") or _metadata_value(trailers, SQLSTATE_KEY)
    if isinstance(sqlstate, bytes):
        sqlstate = sqlstate.decode("ascii", "replace")
    reason = _metadata_value(trailers, REASON_KEY)
    if isinstance(reason, bytes):
        reason = reason.decode("ascii", "replace")
    disconnect = reason in DISCONNECT_REASONS or (
        code == grpc.StatusCode.UNAVAILABLE and (not sqlstate or sqlstate[:2] in ("08", "57")))
    if sqlstate and len(sqlstate) == 5:
        cls = class_for_sqlstate(sqlstate)
    elif reason == "TX_STATEMENT_FAILED":
        # psycopg2's InFailedSqlTransaction (25P02) is an InternalError.
        cls = InternalError
    else:
        cls = _CODE_CLASSES.get(code, DatabaseError)
    if disconnect and cls is not OperationalError and not issubclass(cls, OperationalError):
        cls = OperationalError
    text = f"{context}{message}" if context else message
    return cls(text, sqlstate=sqlstate, grpc_code=code, reason=reason, detail_fields=fields,
               disconnect=disconnect)


def is_disconnect(error: BaseException) -> bool:
    """True when ``error`` means the connection is unusable and a pool must
    discard it: its session ended (lease expired, orphaned, ended, broker
    shutdown), the broker rolled its transaction back for idling or running
    too long, the broker is unreachable, or the connection was closed."""
    if isinstance(error, Error):
        return error.disconnect
    return False
