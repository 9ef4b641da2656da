"""The asyncio twin of ``sessionbroker._pipeline``: concurrent Execute and
ExecuteBatch calls of one event loop's connections share one
``SessionBroker.Pipeline`` stream per channel and call metadata.

The policy, semantics and fallbacks are ``_pipeline``'s (read its
docstring): a call goes on the stream only while another call of the mux is
in flight; errors are the unary call's (``grpc.aio.AioRpcError`` with the
same code, message and trailers); a passed deadline cancels the call by id;
UNIMPLEMENTED -> unary for good; a stream that cannot open -> unary with a
backoff; a broken stream -> unsent calls go unary, sent ones fail as lost;
a stream the broker ended by its drain (trailer ``sessionbroker-reason:
DRAINING``) -> its sent calls without a result were never read and go unary
too, and the next stream opens after the backoff. The shared parts
(outcomes, not-run decisions, reopen policy) are ``_pipeline_common``'s.

Tasks: a stream has a writer task (one write in flight; everything queued
while it writes goes into the next message, no timer) and a reader task
(completes calls' futures by id). Both end with the stream; the mux closes
its stream when the loop's last connection using it closes.

Not thread-safe: a mux belongs to the event loop that made it, and all of
its state is touched from that loop only.
"""

import asyncio
import itertools
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import grpc
import grpc.aio

from sessionbroker._pb import broker_pb2, broker_pb2_grpc
from sessionbroker._pipeline_common import (Metadata, MuxStats, ReopenPolicy, StreamEnd,
                                            capacity, is_not_run_refusal, outcome,
                                            pipeline_call)


def _aio_error(code: grpc.StatusCode, details: str,
               trailers: Metadata = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers),
                                details)


class _Pending:
    __slots__ = ("id", "message", "sent", "abandoned", "future", "unsent")

    def __init__(self, call_id: int, message: "broker_pb2.PipelineCall",
                 future: "asyncio.Future") -> None:
        self.id = call_id
        self.message = message
        self.sent = False
        self.abandoned = False
        self.future = future
        self.unsent = False

    def finish(self, value: Any = None) -> None:
        if not self.future.done():
            self.future.set_result(value)


class _AioStream:
    """One Pipeline stream of a mux, with its writer and reader tasks."""

    def __init__(self, mux: "AioPipelineMux") -> None:
        self.mux = mux
        self.pending: Dict[int, _Pending] = {}
        self.outbox: List[Any] = []  # _Pending or a cancelled id
        self.wake = asyncio.Event()
        self.stopping = False
        self.capacity = 0
        self.ready = False
        self.ended = False
        self.call = mux.stub.Pipeline(metadata=mux.metadata)
        self.reader = asyncio.ensure_future(self._read())
        self.writer = asyncio.ensure_future(self._write())

    def send(self, item: Any) -> None:
        self.outbox.append(item)
        self.wake.set()

    async def _write(self) -> None:
        stats = self.mux.stats
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                items, self.outbox = self.outbox, []
                request = broker_pb2.PipelineRequest()
                for it in items:
                    if isinstance(it, int):
                        request.cancel.append(it)
                    elif not it.abandoned and not it.unsent and not self.ended:
                        it.sent = True
                        request.calls.append(it.message)
                if request.calls or request.cancel:
                    stats.stream_messages += 1
                    await self.call.write(request)
                if self.stopping and not self.outbox:
                    await self.call.done_writing()
                    return
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the stream ended: the reader reports how

    async def _read(self) -> None:
        code: Optional[grpc.StatusCode] = None
        details = ""
        trailers: Metadata = ()
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    break
                self._received(response)
            code = await self.call.code()
            details = await self.call.details() or ""
        except grpc.aio.AioRpcError as e:
            code, details = e.code(), e.details() or ""
            trailers = tuple(e.trailing_metadata() or ())
        except asyncio.CancelledError:
            code, details = grpc.StatusCode.CANCELLED, "the Pipeline stream was closed"
        finally:
            self.writer.cancel()
            self.mux._stream_ended(self, code, details, trailers)

    def _received(self, response: "broker_pb2.PipelineResponse") -> None:
        mux = self.mux
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
                p.finish()
            else:
                mux.stats.stream_calls += 1
                p.finish(outcome(result, _aio_error))

    async def close(self) -> None:
        """Half-closes, cancels the call and waits for both tasks."""
        self.ended = True
        self.stopping = True
        self.wake.set()
        self.call.cancel()
        await asyncio.gather(self.reader, self.writer, return_exceptions=True)


class AioPipelineMux:
    """The shared stream of one loop's channel and call metadata, and the
    policy that routes calls to it or to their unary call."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Metadata) -> None:
        self.stub = broker_pb2_grpc.SessionBrokerStub(channel)
        self.metadata = metadata
        self.stats = MuxStats()
        self.reopen = ReopenPolicy()
        self.users = 0
        self._active = 0
        self._stream: Optional[_AioStream] = None
        self._ids = itertools.count(1)

    @property
    def unimplemented(self) -> bool:
        """The broker has no Pipeline method: every call goes unary."""
        return self.reopen.unimplemented

    def tasks(self) -> List["asyncio.Task"]:
        """The current stream's tasks still running (for tests)."""
        s = self._stream
        return [t for t in (s.reader, s.writer) if not t.done()] if s is not None else []

    async def close(self) -> None:
        """Ends the stream and waits for its tasks."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    async def call(self, body: str, request: Any, timeout: Optional[float],
                   unary: Callable[[Optional[float]], Awaitable[Any]]) -> Any:
        """As ``_pipeline.PipelineMux.call``: the response, or the
        grpc.aio.AioRpcError the unary call would raise."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending: Optional[_Pending] = None
        stream: Optional[_AioStream] = None
        concurrent = self._active > 0
        self._active += 1
        try:
            if concurrent and not self.reopen.unimplemented:
                stream = self._stream_for_call()
                if stream is not None:
                    call_id = next(self._ids)
                    pending = _Pending(call_id, pipeline_call(call_id, body, request, timeout),
                                       asyncio.get_running_loop().create_future())
                    stream.pending[call_id] = pending
                    stream.send(pending)
            if pending is None:
                self.stats.unary_calls += 1
                return await unary(timeout)
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                if remaining is None:
                    value = await pending.future
                else:
                    value = await asyncio.wait_for(pending.future, remaining)
            except (asyncio.TimeoutError, asyncio.CancelledError) as e:
                answered = pending.future.done() and not pending.future.cancelled()
                if not answered:
                    # Given up (deadline, or the awaiting task was cancelled):
                    # cancel it by id if sent, else it is never sent.
                    pending.abandoned = True
                    if pending.sent and not stream.ended:
                        stream.send(pending.id)
                    else:
                        stream.pending.pop(pending.id, None)
                if isinstance(e, asyncio.CancelledError):
                    raise
                if not answered:
                    self.stats.cancelled_calls += 1
                    raise _aio_error(grpc.StatusCode.DEADLINE_EXCEEDED,
                                     "Deadline Exceeded") from None
                value = pending.future.result()
            if pending.unsent:
                self.stats.unary_calls += 1
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _aio_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
                return await unary(remaining)
            if isinstance(value, BaseException):
                raise value
            return value
        finally:
            self._active -= 1

    def _stream_for_call(self) -> Optional[_AioStream]:
        stream = self._stream
        if stream is None:
            if self.users <= 0 or not self.reopen.may_open():
                return None
            self._stream = _AioStream(self)
            return None
        if not stream.ready or len(stream.pending) >= stream.capacity:
            return None
        return stream

    def _stream_ended(self, stream: _AioStream, code: Optional[grpc.StatusCode], details: str,
                      trailers: Metadata) -> None:
        """As ``_pipeline.PipelineMux._stream_ended``: unsent calls, and on a
        drain's end sent calls without a result, go unary; other sent calls
        fail as lost."""
        end = StreamEnd(code, details, trailers)
        stream.ended = True
        if self._stream is stream:
            self._stream = None
        self.reopen.ended(end, stream.ready)
        for p in stream.pending.values():
            if p.abandoned:
                continue
            if p.sent and not end.draining:
                self.stats.lost_calls += 1
                p.finish(_aio_error(*end.lost_parts()))
            else:
                p.unsent = True
                self.stats.fallbacks += 1
                p.finish()
        stream.pending.clear()


MuxKey = Tuple[Tuple[str, int], Metadata]
