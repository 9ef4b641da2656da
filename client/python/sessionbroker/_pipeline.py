"""Concurrent Execute/ExecuteBatch calls of blocking connections, multiplexed
over one shared ``SessionBroker.Pipeline`` stream per channel and call
metadata (docs/pipeline.md); the unary calls are the fallback.

**Policy.** A call goes on the stream only while another call of the same
mux (unary or streamed) is in flight: a lone caller always makes a unary
call, because in Python the hand-offs of the stream (the caller's thread ->
gRPC's request thread -> the reader thread -> the caller's thread) cost more
latency than a unary call's own round trip (docs/clients.md has the
numbers). The stream is opened lazily by the first concurrent call (which
itself still goes unary) and used once its first message (the broker's
limits) has arrived; calls beyond the advertised in-flight limits go unary.

**Semantics are the unary calls'.** A result's ``status`` becomes a
:class:`PipelineCallError`, a ``grpc.RpcError`` with the same code, message
and trailers (``sqlstate``, ``sessionbroker-reason``,
``grpc-status-details-bin``) as the unary call's error, so the caller maps
it with the same ``error_from_rpc``. A deadline becomes the call's
``timeout``; when it passes the call is cancelled by id and fails as a unary
call whose deadline passed. Fallbacks: a broker without the method
(UNIMPLEMENTED) -> unary for good; a stream that cannot be opened -> unary,
retried after a backoff; a stream that breaks -> its calls not yet sent go
unary, its calls already sent fail with the stream's status (a lost call,
never resent); a refusal of a call that did not run (reason PIPELINE_LIMIT:
the stream's own limits, or DRAINING) -> unary.
On drain the broker ends the stream UNAVAILABLE after its calls finished;
later calls go unary until a new stream opens.

**Threads.** A stream has one reader thread (it owns the gRPC call and
completes calls by id) and gRPC's own thread consuming the request iterator,
which blocks on the stream's queue and coalesces every call queued meanwhile
into one request message (no timer). Both end when the stream ends; the
mux closes its stream when its last connection releases it.

Thread-safe: one (reentrant) lock per mux guards its state and its
stream's pending calls; a pending call is completed once, under that lock,
and its caller is woken through its own Event.
"""

import itertools
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import grpc

from sessionbroker._core import duration
from sessionbroker._errors import DETAILS_KEY, REASON_KEY, SQLSTATE_KEY
from sessionbroker._pb import broker_pb2, broker_pb2_grpc

Metadata = Tuple[Tuple[str, str], ...]

# Backoff before opening a stream again after one failed to open or broke.
_BACKOFF_INITIAL = 0.1
_BACKOFF_MAX = 5.0
# The reasons of the broker's refusals of calls that did not run, so they go
# unary (server/transport/pipeline_book.h): the stream's own in-flight limits
# (BROKER_PIPELINE_MAX_IN_FLIGHT[_PER_CLIENT]), which a unary call is not
# subject to, and a call read after the broker's drain began.
_NOT_RUN_REASONS = frozenset({"PIPELINE_LIMIT", "DRAINING"})
#: What a lost call's error message ends with.
LOST_SUFFIX = (" (the call was sent on a Pipeline stream that ended before its result came: "
               "it may or may not have been applied)")
_STOP = object()


class PipelineCallError(grpc.RpcError):
    """A failed call, shaped as the unary call's ``grpc.RpcError``: ``code()``,
    ``details()`` and ``trailing_metadata()`` as that call would have had."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: Metadata = ()) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailers = trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Metadata:
        return self._trailers

    def __str__(self) -> str:
        return f"{self._code.name}: {self._details}"


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
    return result.WhichOneof("outcome") == "status" and result.reason in _NOT_RUN_REASONS


def pipeline_call(call_id: int, body: str, request: Any,
                  timeout: Optional[float]) -> "broker_pb2.PipelineCall":
    """The PipelineCall for an ``execute`` or ``execute_batch`` request."""
    call = broker_pb2.PipelineCall(id=call_id, **{body: request})
    if timeout is not None:
        call.timeout.CopyFrom(duration(max(timeout, 0.001)))
    return call


def outcome(result: "broker_pb2.PipelineResult") -> Any:
    """The response of a successful result, or a PipelineCallError."""
    kind = result.WhichOneof("outcome")
    if kind == "status":
        return PipelineCallError(*status_parts(result.status, result.sqlstate, result.reason))
    if kind is None:
        return PipelineCallError(grpc.StatusCode.INTERNAL,
                                 f"the broker answered call {result.id} with no outcome")
    return getattr(result, kind)


def deadline_error() -> PipelineCallError:
    """What a unary call whose deadline passed raises (gRPC's own status)."""
    return PipelineCallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


def lost_error(code: Optional[grpc.StatusCode], details: str,
               trailers: Metadata) -> PipelineCallError:
    """The error of a call sent on a stream that ended before its result:
    the stream's status, as a unary call lost with the connection gets it."""
    if code is None or code == grpc.StatusCode.OK:
        code, details = grpc.StatusCode.UNAVAILABLE, "the Pipeline stream ended"
    return PipelineCallError(code, (details or code.name) + LOST_SUFFIX, trailers)


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
        #: Calls queued for a stream that went unary instead (stream ended before
        #: sending them, or the stream's limits refused them).
        self.fallbacks = 0
        #: Calls sent on a stream that ended before their result (raised, never resent).
        self.lost_calls = 0
        #: Calls cancelled by id because their deadline passed.
        self.cancelled_calls = 0

    def as_dict(self) -> Dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Pending:
    """One call queued or in flight on a stream."""

    __slots__ = ("id", "message", "sent", "abandoned", "done", "outcome", "unsent")

    def __init__(self, call_id: int, message: "broker_pb2.PipelineCall") -> None:
        self.id = call_id
        self.message = message
        self.sent = False
        self.abandoned = False  # the caller gave up (deadline): drop its result
        self.done = threading.Event()
        self.outcome: Any = None
        self.unsent = False  # the stream ended before sending it: go unary


class _Stream:
    """One Pipeline stream: its queue, its pending calls and its reader thread.
    Its state is guarded by the owning mux's lock."""

    def __init__(self, mux: "PipelineMux") -> None:
        self.mux = mux
        self.queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self.pending: Dict[int, _Pending] = {}
        self.capacity = 0  # calls in flight allowed; 0 until the limits arrived
        self.ready = False
        self.ended = False
        self.call: Any = None
        self.thread = threading.Thread(target=self._run, name=mux.thread_name, daemon=True)

    def _requests(self):
        """The request iterator gRPC's thread consumes: blocks for the next
        item, then takes everything queued meanwhile into one message."""
        q = self.queue
        lock = self.mux.lock
        stats = self.mux.stats
        while True:
            item = q.get()
            items = [item]
            while True:
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            request = broker_pb2.PipelineRequest()
            stop = False
            with lock:
                for it in items:
                    if it is _STOP:
                        stop = True
                    elif isinstance(it, int):
                        request.cancel.append(it)
                    elif not it.abandoned and not it.unsent and not self.ended:
                        it.sent = True
                        request.calls.append(it.message)
                if request.calls or request.cancel:
                    stats.stream_messages += 1
            if request.calls or request.cancel:
                yield request
            if stop:
                return

    def _run(self) -> None:
        code: Optional[grpc.StatusCode] = None
        details = ""
        trailers: Metadata = ()
        try:
            self.call = self.mux.stub.Pipeline(self._requests(), metadata=self.mux.metadata)
            with self.mux.lock:
                if self.ended:  # closed while opening
                    self.call.cancel()
            for response in self.call:
                self._received(response)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
            details = (e.details() if hasattr(e, "details") else "") or ""
            try:
                trailers = tuple(e.trailing_metadata() or ())
            except Exception:
                trailers = ()
        except Exception as e:  # never let the thread die with calls waiting
            code, details = grpc.StatusCode.INTERNAL, f"the Pipeline stream failed: {e!r}"
            if self.call is not None:
                self.call.cancel()
        finally:
            self.queue.put(_STOP)  # ends gRPC's request thread if still waiting
            self.mux._stream_ended(self, code, details, trailers)

    def _received(self, response: "broker_pb2.PipelineResponse") -> None:
        mux = self.mux
        wake: List[_Pending] = []
        with mux.lock:
            if response.HasField("limits") and not self.ready:
                limits = response.limits
                cap = limits.max_in_flight_per_stream or 1
                if limits.max_in_flight_per_client:
                    cap = min(cap, limits.max_in_flight_per_client)
                self.capacity = cap
                self.ready = True
                mux.stats.streams_opened += 1
                mux.backoff = _BACKOFF_INITIAL
            for result in response.results:
                p = self.pending.pop(result.id, None)
                if p is None or p.abandoned:
                    continue
                if is_not_run_refusal(result):
                    p.unsent = True
                    mux.stats.fallbacks += 1
                else:
                    p.outcome = outcome(result)
                    mux.stats.stream_calls += 1
                wake.append(p)
        for p in wake:
            p.done.set()


class PipelineMux:
    """The shared stream of one channel and call metadata, and the policy that
    routes calls to it or to their unary call."""

    def __init__(self, channel: grpc.Channel, metadata: Metadata,
                 thread_name: str = "sessionbroker-pipeline") -> None:
        self.stub = broker_pb2_grpc.SessionBrokerStub(channel)
        self.metadata = metadata
        self.thread_name = thread_name
        # Reentrant: a connection's finalizer (release) may run, through the
        # garbage collector, on a thread that holds it.
        self.lock = threading.RLock()
        self.stats = MuxStats()
        self.backoff = _BACKOFF_INITIAL
        self._users = 0
        self._active = 0  # calls of this mux in flight, unary or streamed
        self._stream: Optional[_Stream] = None
        self._retry_at = 0.0
        self._unimplemented = False
        self._ids = itertools.count(1)

    # ---- users -----------------------------------------------------------------

    def acquire(self) -> None:
        """A connection uses this mux from now until ``release``."""
        with self.lock:
            self._users += 1

    def release(self, wait: bool = True) -> None:
        """A connection stopped using the mux; the last one closes its stream
        (``wait``: and joins its reader thread; False from a finalizer)."""
        with self.lock:
            self._users -= 1
            if self._users > 0:
                return
            stream = self._stream
            self._stream = None
            if stream is not None:
                stream.ended = True
        if stream is not None:
            self._close(stream, wait)

    def close(self) -> None:
        """Ends the stream now (its threads end with it); calls still waiting on
        it fail as lost or go unary. The mux opens a new stream when needed."""
        with self.lock:
            stream = self._stream
            self._stream = None
            if stream is not None:
                stream.ended = True
        if stream is not None:
            self._close(stream)

    def _close(self, stream: _Stream, wait: bool = True) -> None:
        stream.queue.put(_STOP)
        call = stream.call
        if call is not None:
            call.cancel()
        if (wait and stream.thread.ident is not None
                and stream.thread is not threading.current_thread()):
            stream.thread.join()

    @property
    def unimplemented(self) -> bool:
        """The broker has no Pipeline method: every call goes unary."""
        return self._unimplemented

    def threads(self) -> List[threading.Thread]:
        """The stream's reader thread, if one runs (for tests)."""
        with self.lock:
            s = self._stream
            return [s.thread] if s is not None and s.thread.is_alive() else []

    # ---- calls -----------------------------------------------------------------

    def call(self, body: str, request: Any, timeout: Optional[float],
             unary: Callable[[Optional[float]], Any]) -> Any:
        """Runs one call (``body`` "execute" or "execute_batch" with its request)
        on the stream or as ``unary(timeout)``; returns the response or raises
        the grpc.RpcError the unary call would raise."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending: Optional[_Pending] = None
        stream: Optional[_Stream] = None
        with self.lock:
            concurrent = self._active > 0
            self._active += 1
            if concurrent and not self._unimplemented:
                stream = self._stream_for_call_locked()
                if stream is not None:
                    call_id = next(self._ids)
                    pending = _Pending(call_id, pipeline_call(call_id, body, request, timeout))
                    stream.pending[call_id] = pending
            if pending is None:
                self.stats.unary_calls += 1
        try:
            if pending is None:
                return unary(timeout)
            stream.queue.put(pending)
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not pending.done.wait(remaining):
                with self.lock:
                    if not pending.done.is_set():
                        pending.abandoned = True
                        self.stats.cancelled_calls += 1
                        if pending.sent and not stream.ended:
                            stream.queue.put(pending.id)
                        else:
                            stream.pending.pop(pending.id, None)
                        raise deadline_error()
            if pending.unsent:
                with self.lock:
                    self.stats.unary_calls += 1
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise deadline_error()
                return unary(remaining)
            if isinstance(pending.outcome, grpc.RpcError):
                raise pending.outcome
            return pending.outcome
        finally:
            with self.lock:
                self._active -= 1

    def _stream_for_call_locked(self) -> Optional[_Stream]:
        """The stream a concurrent call may use now, or None (go unary);
        opens one in the background when there is none."""
        stream = self._stream
        if stream is None:
            if self._users <= 0 or time.monotonic() < self._retry_at:
                return None
            stream = self._stream = _Stream(self)
            stream.thread.start()
            return None
        if not stream.ready or len(stream.pending) >= stream.capacity:
            return None
        return stream

    def _stream_ended(self, stream: _Stream, code: Optional[grpc.StatusCode], details: str,
                      trailers: Metadata) -> None:
        """The reader thread saw its stream end: fail the calls it sent, send
        the others unary, and decide when a new stream may open."""
        wake: List[_Pending] = []
        with self.lock:
            stream.ended = True
            served = stream.ready
            if self._stream is stream:
                self._stream = None
            if code == grpc.StatusCode.UNIMPLEMENTED and not served:
                self._unimplemented = True
            elif code != grpc.StatusCode.OK or not served:
                self._retry_at = time.monotonic() + (0.0 if served else self.backoff)
                if not served:
                    self.backoff = min(self.backoff * 2, _BACKOFF_MAX)
            for p in stream.pending.values():
                if p.abandoned:
                    continue
                if p.sent:
                    p.outcome = lost_error(code, details, trailers)
                    self.stats.lost_calls += 1
                else:
                    p.unsent = True
                    self.stats.fallbacks += 1
                wake.append(p)
            stream.pending.clear()
        for p in wake:
            p.done.set()


_registry_lock = threading.Lock()
_registry: Dict[Tuple[int, Metadata], PipelineMux] = {}


def mux_for(channel: grpc.Channel, metadata: Metadata, target: str = "") -> PipelineMux:
    """The process's mux for this channel and call metadata (one stream is
    authenticated as one client, so connections with other credentials get
    a mux of their own)."""
    key = (id(channel), metadata)
    with _registry_lock:
        mux = _registry.get(key)
        if mux is None:
            client = dict(metadata).get("x-client-id", "")
            name = " ".join(filter(None, ("sessionbroker-pipeline", target, client)))
            mux = _registry[key] = PipelineMux(channel, metadata, name)
        return mux
