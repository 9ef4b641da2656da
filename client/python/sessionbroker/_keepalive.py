"""One KeepAlive stream per process (per broker and client id) that holds
every open session of the process: a process with one client id has one.

A connection registers its session with ``hold`` (after BeginSession) and
drops it with ``release`` (before EndSession). While the stream is open the
broker never lets those sessions expire; if the process dies its sockets
close and the broker ends them after BROKER_SESSION_ORPHAN_GRACE, so a
crashed application frees its transactions' connections in seconds.

One daemon thread per stream reads the broker's answers: when the broker
reports a held session ENDED (its lifetime, an EndSession from elsewhere,
shutdown) or NOT_FOUND, the session's ``SessionLease.ended`` is set to the
reason so that the connection reports itself broken. When the stream breaks
(the broker restarted, the network blipped) the thread opens a new one at
once with a short backoff and holds every session again, well within the
orphan grace. The thread and its stream end when the last session is
released or ended, and start again with the next ``hold``.

Thread-safe: ``hold``/``release`` may be called from any thread; the state is
guarded by one lock, and the stream's request iterator reads a queue owned by
that stream alone.
"""

import queue
import threading
import time
from typing import Dict, Optional, Tuple

import grpc

from sessionbroker._pb import broker_pb2, broker_pb2_grpc

_STOP = object()
_BACKOFF_INITIAL = 0.05
_BACKOFF_MAX = 1.0


class SessionLease:
    """What the KeepAlive thread knows about one held session."""

    __slots__ = ("name", "ended")

    def __init__(self, name: str) -> None:
        self.name = name
        #: Why the broker ended the session, once it did (str), else None.
        self.ended: Optional[str] = None


class KeepAlive:
    """The KeepAlive stream of one channel and client id."""

    def __init__(self, channel: grpc.Channel, metadata: Tuple[Tuple[str, str], ...],
                 thread_name: str = "sessionbroker-keepalive") -> None:
        self.thread_name = thread_name
        self._stub = broker_pb2_grpc.SessionBrokerStub(channel)
        self._metadata = metadata
        self._lock = threading.Lock()
        self._held: Dict[str, SessionLease] = {}
        self._queue: Optional["queue.SimpleQueue"] = None  # the current stream's requests
        self._thread: Optional[threading.Thread] = None
        self._call = None

    def hold(self, lease: SessionLease) -> None:
        """Holds the session from now until ``release``."""
        with self._lock:
            self._held[lease.name] = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.thread_name,
                                                daemon=True)
                self._thread.start()
            elif self._queue is not None:
                self._queue.put(broker_pb2.KeepAliveRequest(hold=[lease.name]))

    def release(self, lease: SessionLease) -> None:
        """Stops holding the session (its lease then runs on with its ttl)."""
        with self._lock:
            if self._held.pop(lease.name, None) is None:
                return
            if self._queue is not None:
                self._queue.put(broker_pb2.KeepAliveRequest(release=[lease.name]))
            self._stop_if_idle_locked()

    def _stop_if_idle_locked(self) -> None:
        """Nothing held any more: let the stream end (with self._lock held)."""
        if not self._held and self._queue is not None:
            self._queue.put(_STOP)

    def held_names(self) -> list:
        """The sessions held now (for tests and diagnostics)."""
        with self._lock:
            return sorted(self._held)

    def _requests(self, q: "queue.SimpleQueue"):
        with self._lock:
            names = sorted(self._held)
        if names:
            yield broker_pb2.KeepAliveRequest(hold=names)
        while True:
            item = q.get()
            if item is _STOP:
                with self._lock:
                    if not self._held or self._queue is not q:
                        return
                continue
            yield item

    def _run(self) -> None:
        backoff = _BACKOFF_INITIAL
        while True:
            q: "queue.SimpleQueue" = queue.SimpleQueue()
            with self._lock:
                if not self._held:
                    self._thread = None
                    self._queue = None
                    return
                self._queue = q
            call = None
            try:
                call = self._stub.KeepAlive(self._requests(q), metadata=self._metadata)
                for response in call:
                    backoff = _BACKOFF_INITIAL
                    self._apply(response)
            except Exception:  # grpc.RpcError, or anything else: never let the thread die
                cancel = getattr(call, "cancel", None)
                if cancel is not None:
                    cancel()  # a stream still open (an error of ours) is abandoned
            # The stream ended: we stopped sending (nothing held), the broker
            # closed it, or it broke. Open a new one if sessions are still
            # held, after a pause that grows while streams keep ending.
            with self._lock:
                self._queue = None
                again = bool(self._held)
            q.put(_STOP)  # ends the old request iterator
            if again:
                time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    def _apply(self, response: "broker_pb2.KeepAliveResponse") -> None:
        ended = (broker_pb2.SessionState.ENDED, broker_pb2.SessionState.NOT_FOUND)
        with self._lock:
            for state in response.sessions:
                if state.state in ended:
                    lease = self._held.pop(state.name, None)
                    if lease is not None:
                        lease.ended = state.reason or (
                            "the broker no longer knows this session" if
                            state.state == broker_pb2.SessionState.NOT_FOUND else
                            "the broker ended the session")
            self._stop_if_idle_locked()


_registry_lock = threading.Lock()
_registry: Dict[Tuple[int, Tuple[Tuple[str, str], ...]], KeepAlive] = {}


def keepalive_for(channel: grpc.Channel, metadata: Tuple[Tuple[str, str], ...],
                  target: str = "") -> KeepAlive:
    """The process's KeepAlive for this channel and call metadata (client id)."""
    key = (id(channel), metadata)
    with _registry_lock:
        keepalive = _registry.get(key)
        if keepalive is None:
            client = dict(metadata).get("x-client-id", "")
            name = " ".join(filter(None, ("sessionbroker-keepalive", target, client)))
            keepalive = _registry[key] = KeepAlive(channel, metadata, name)
        return keepalive
