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
On drain the broker answers the calls it reads after the drain began with
DRAINING and ends the stream UNAVAILABLE with the trailer
``sessionbroker-reason: DRAINING`` once every running call's result was
sent: the stream's sent calls without a result were never read, so they go
unary as refused ones do (the draining broker refuses them UNAVAILABLE, or
another instance serves them), never as lost; the next stream opens after
the backoff. What is shared with the asyncio mux (outcomes, the not-run
decisions, the reopen policy) is in ``_pipeline_common``.

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

from sessionbroker._pb import broker_pb2, broker_pb2_grpc
from sessionbroker._pipeline_common import (LOST_SUFFIX, Metadata, MuxStats, ReopenPolicy,
                                            StreamEnd, capacity, is_not_run_refusal, outcome,
                                            pipeline_call, status_parts)

__all__ = ["LOST_SUFFIX", "Metadata", "MuxStats", "PipelineCallError", "PipelineMux",
           "deadline_error", "is_not_run_refusal", "mux_for", "pipeline_call", "status_parts"]

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


def deadline_error() -> PipelineCallError:
    """What a unary call whose deadline passed raises (gRPC's own status)."""
    return PipelineCallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


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
                self.capacity = capacity(response.limits)
                self.ready = True
                mux.stats.streams_opened += 1
                mux.reopen.opened()
            for result in response.results:
                p = self.pending.pop(result.id, None)
                if p is None or p.abandoned:
                    continue
                if is_not_run_refusal(result):
                    p.unsent = True
                    mux.stats.fallbacks += 1
                else:
                    p.outcome = outcome(result, PipelineCallError)
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
        self.reopen = ReopenPolicy()
        self._users = 0
        self._active = 0  # calls of this mux in flight, unary or streamed
        self._stream: Optional[_Stream] = None
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
        return self.reopen.unimplemented

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
            if concurrent and not self.reopen.unimplemented:
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
            if self._users <= 0 or not self.reopen.may_open():
                return None
            stream = self._stream = _Stream(self)
            stream.thread.start()
            return None
        if not stream.ready or len(stream.pending) >= stream.capacity:
            return None
        return stream

    def _stream_ended(self, stream: _Stream, code: Optional[grpc.StatusCode], details: str,
                      trailers: Metadata) -> None:
        """The reader thread saw its stream end: its calls not yet sent go unary;
        its sent calls without a result go unary too when the broker ended it
        by its drain (never read), else fail as lost. Decides when a new
        stream may open."""
        end = StreamEnd(code, details, trailers)
        wake: List[_Pending] = []
        with self.lock:
            stream.ended = True
            if self._stream is stream:
                self._stream = None
            self.reopen.ended(end, stream.ready)
            for p in stream.pending.values():
                if p.abandoned:
                    continue
                if p.sent and not end.draining:
                    p.outcome = PipelineCallError(*end.lost_parts())
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
