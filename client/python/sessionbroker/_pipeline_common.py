"""What the blocking (``_pipeline``) and asyncio (``_pipeline_aio``) shared
``SessionBroker.Pipeline`` streams have in common: the Pipeline protocol as
the client reads it, free of threads and tasks.

- A result's outcome: the response, or an error shaped as the unary call's
  (its code, message and trailers rebuilt from the result's status), through
  an error type each mux passes in (``grpc.RpcError`` or
  ``grpc.aio.AioRpcError``).
- Which refusals mean "not run" (reason tokens ``PIPELINE_LIMIT`` and
  ``DRAINING``, never the message text): such calls go unary.
- How a stream ended (:class:`StreamEnd`): a stream the broker ended by its
  drain (non-OK, trailer ``sessionbroker-reason: DRAINING``) ended once
  every running call's result was sent, so each sent call without a result
  was never read and goes unary; after any other end such a call is lost
  (it may or may not have run) and fails with the stream's status.
- When a new stream may open (:class:`ReopenPolicy`): never again after
  UNIMPLEMENTED, after a backoff when a stream failed to open or the broker
  drained, at once after another break of a stream that served.

Owned by each mux (one ReopenPolicy per mux); the functions are pure. Not
thread-safe by itself: a ReopenPolicy is guarded by its mux (the blocking
mux's lock, or the asyncio mux's event loop).
"""

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import grpc

from sessionbroker._core import duration
from sessionbroker._errors import DETAILS_KEY, REASON_KEY, SQLSTATE_KEY
from sessionbroker._pb import broker_pb2

Metadata = Tuple[Tuple[str, Any], ...]
#: Builds a mux's error from (code, details, trailers).
ErrorFactory = Callable[[grpc.StatusCode, str, Metadata], BaseException]

# Backoff before opening a stream again after one failed to open or drained.
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
#: The reason token of a drain (server/transport/pipeline_book.h): on a result,
#: the call was read after the drain began; on the stream's end, every call
#: without a result was never read.
DRAINING = "DRAINING"
#: The reason token of a refusal by the stream's own in-flight limits
#: (BROKER_PIPELINE_MAX_IN_FLIGHT[_PER_CLIENT]), which a unary call is not subject to.
PIPELINE_LIMIT = "PIPELINE_LIMIT"
NOT_RUN_REASONS = frozenset({PIPELINE_LIMIT, DRAINING})
#: What a lost call's error message ends with.
LOST_SUFFIX = (" (the call was sent on a Pipeline stream that ended before its result came: "
               "it may or may not have been applied)")

_CODES = {c.value[0]: c for c in grpc.StatusCode}


def status_parts(status: "broker_pb2.RpcStatus", sqlstate: str,
                 reason: str) -> Tuple[grpc.StatusCode, str, Metadata]:
    """(code, message, trailers) of a Pipeline result's status: what the unary
    call would have ended with (its trailers rebuilt from the status)."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    trailers: List[Tuple[str, Any]] = []
    if sqlstate:
        trailers.append((SQLSTATE_KEY, sqlstate))
    if reason:
        trailers.append((REASON_KEY, reason))
    if status.details:
        trailers.append((DETAILS_KEY, status.SerializeToString()))
    return code, status.message, tuple(trailers)


def is_not_run_refusal(result: "broker_pb2.PipelineResult") -> bool:
    """The broker refused the call on the stream without running it (its
    in-flight limits, or its drain): the call goes unary. Told by the
    result's reason token, never by its message."""
    return result.WhichOneof("outcome") == "status" and result.reason in NOT_RUN_REASONS


def pipeline_call(call_id: int, body: str, request: Any,
                  timeout: Optional[float]) -> "broker_pb2.PipelineCall":
    """The PipelineCall for an ``execute`` or ``execute_batch`` request."""
    call = broker_pb2.PipelineCall(id=call_id, **{body: request})
    if timeout is not None:
        call.timeout.CopyFrom(duration(max(timeout, 0.001)))
    return call


def capacity(limits: "broker_pb2.PipelineLimits") -> int:
    """The calls a stream may have in flight: the tighter of the broker's
    advertised per-stream and per-client limits (0 = none)."""
    cap = limits.max_in_flight_per_stream or 1
    if limits.max_in_flight_per_client:
        cap = min(cap, limits.max_in_flight_per_client)
    return cap


def outcome(result: "broker_pb2.PipelineResult", error: ErrorFactory) -> Any:
    """The response of a successful result, or ``error(...)`` of its status."""
    kind = result.WhichOneof("outcome")
    if kind == "status":
        return error(*status_parts(result.status, result.sqlstate, result.reason))
    if kind is None:
        return error(grpc.StatusCode.INTERNAL,
                     f"the broker answered call {result.id} with no outcome", ())
    return getattr(result, kind)


def trailer(trailers: Optional[Sequence[Tuple[str, Any]]], key: str) -> str:
    """The value of a text trailer ("" when absent)."""
    for k, v in trailers or ():
        if k == key:
            return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)
    return ""


class MuxStats:
    """Counters of one mux (for tests, benchmarks and diagnostics)."""

    __slots__ = ("unary_calls", "stream_calls", "stream_messages", "streams_opened",
                 "fallbacks", "lost_calls", "cancelled_calls")

    def __init__(self) -> None:
        #: Calls made unary (lone callers, no stream ready, fallbacks).
        self.unary_calls = 0
        #: Calls answered on a stream.
        self.stream_calls = 0
        #: Request messages written on streams (several calls each when coalesced).
        self.stream_messages = 0
        #: Streams whose first message (the limits) arrived.
        self.streams_opened = 0
        #: Calls queued for a stream that went unary instead (the stream ended
        #: before sending them, the broker refused them as not run, or its
        #: drain ended the stream before reading them).
        self.fallbacks = 0
        #: Calls sent on a stream that ended before their result (raised, never resent).
        self.lost_calls = 0
        #: Calls cancelled by id because their deadline passed.
        self.cancelled_calls = 0

    def as_dict(self) -> Dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class StreamEnd:
    """How a stream ended (its status and trailers; code None: it never got
    one), and what that means for its sent calls without a result."""

    __slots__ = ("code", "details", "trailers", "draining")

    def __init__(self, code: Optional[grpc.StatusCode], details: str,
                 trailers: Metadata) -> None:
        self.code = code
        self.details = details
        self.trailers = trailers
        #: Ended by the broker's drain after every running call's result was
        #: sent: a sent call without a result was never read (not run).
        self.draining = (code is not None and code != grpc.StatusCode.OK
                         and trailer(trailers, REASON_KEY) == DRAINING)

    def lost_parts(self) -> Tuple[grpc.StatusCode, str, Metadata]:
        """(code, details, trailers) of a sent call lost with the stream: the
        stream's status, as a unary call lost with its connection gets it."""
        code, details = self.code, self.details
        if code is None or code == grpc.StatusCode.OK:
            code, details = grpc.StatusCode.UNAVAILABLE, "the Pipeline stream ended"
        return code, (details or code.name) + LOST_SUFFIX, self.trailers


class ReopenPolicy:
    """When a mux may open a new stream, after how its streams ended."""

    __slots__ = ("backoff", "retry_at", "unimplemented")

    def __init__(self) -> None:
        self.backoff = BACKOFF_INITIAL
        self.retry_at = 0.0
        #: The broker has no Pipeline method: every call goes unary for good.
        self.unimplemented = False

    def may_open(self) -> bool:
        """A new stream may open now."""
        return not self.unimplemented and time.monotonic() >= self.retry_at

    def opened(self) -> None:
        """A stream's first message (the limits) arrived: the broker serves."""
        self.backoff = BACKOFF_INITIAL

    def ended(self, end: StreamEnd, served: bool) -> None:
        """A stream ended; ``served``: its limits had arrived."""
        if end.code == grpc.StatusCode.UNIMPLEMENTED and not served:
            self.unimplemented = True
        elif end.draining or not served:
            # It never opened, or the broker drains (it refuses a new stream):
            # unary for a while, longer each time.
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        elif end.code != grpc.StatusCode.OK:
            self.retry_at = time.monotonic()
