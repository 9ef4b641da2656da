"""LISTEN/NOTIFY through the broker's ``Listen`` stream: the event types and
the blocking iterator (``sessionbroker.dbapi.listen``); the asyncio iterator
is ``sessionbroker.aio.listen``.

    import sessionbroker.dbapi as sb
    with sb.listen("127.0.0.1:50051", ["orders"], client_id="billing") as events:
        for event in events:          # Notification or Gap
            if isinstance(event, sb.Gap):
                resync()              # notifications may have been missed
            else:
                handle(event.channel, event.payload, event.sender_pid)

``listen`` returns once the broker confirms the subscription, so a NOTIFY
committed after it returns is delivered. Channel names are used exactly as
given (never folded to lower case). A ``Gap`` says notifications may have been
missed: the broker's listener connection was replaced (``reason ==
"RECONNECTED"``) or this reader was too slow and ``dropped`` notifications
were discarded (``"OVERFLOW"``). The stream ends with an Error when the broker
drains (OperationalError, UNAVAILABLE: listen again, on another instance) or
refuses the request.

A Listener is used from one thread at a time; ``close()`` may be called from
any thread (it cancels the stream, and the iteration then stops).
"""

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple, Union

import grpc

from sessionbroker._channel import channel_for
from sessionbroker._errors import InterfaceError, error_from_rpc
from sessionbroker._pb import broker_pb2, broker_pb2_grpc


@dataclass(frozen=True)
class Notification:
    """One NOTIFY: its channel, payload ("" when none) and the sender's backend pid."""

    channel: str
    payload: str
    sender_pid: int


@dataclass(frozen=True)
class Gap:
    """Notifications may have been missed before the next event.

    reason: "RECONNECTED" (the listener connection was replaced) or "OVERFLOW"
    (this reader was too slow; ``dropped`` notifications were discarded).
    """

    reason: str
    dropped: int
    listener_pid: int


Event = Union[Notification, Gap]


def request_for(channels: Sequence[str]) -> "broker_pb2.ListenRequest":
    """The ListenRequest for ``channels`` (a single str is one channel)."""
    if isinstance(channels, str):
        channels = [channels]
    return broker_pb2.ListenRequest(channels=list(channels))


def event_from(response: "broker_pb2.ListenResponse") -> Optional[Event]:
    """The Notification or Gap a response carries (None for anything else)."""
    kind = response.WhichOneof("event")
    if kind == "notification":
        n = response.notification
        return Notification(n.channel, n.payload, n.sender_pid)
    if kind == "gap":
        g = response.gap
        return Gap(broker_pb2.ListenGap.Reason.Name(g.reason), g.dropped, g.listener_pid)
    return None


def confirmation_from(response: "broker_pb2.ListenResponse") -> Tuple[Tuple[str, ...], int]:
    """(channels, listener_pid) of the stream's first message, which must confirm."""
    if response.WhichOneof("event") != "listening":
        raise InterfaceError("the broker's Listen stream did not start with its confirmation")
    return tuple(response.listening.channels), response.listening.listener_pid


class Listener:
    """A blocking iterator of Notification and Gap events. Create it with ``listen``."""

    def __init__(self, target: str, channels: Sequence[str], *, client_id: Optional[str] = None,
                 credentials: Optional[grpc.ChannelCredentials] = None) -> None:
        stub = broker_pb2_grpc.SessionBrokerStub(channel_for(target, credentials))
        metadata = (("x-client-id", client_id),) if client_id else ()
        self._closed = False
        self._call = stub.Listen(request_for(channels), metadata=metadata, wait_for_ready=True)
        try:
            first = next(self._call)
        except StopIteration:
            raise InterfaceError("the broker ended the Listen stream before confirming it"
                                 ) from None
        except grpc.RpcError as e:
            raise error_from_rpc(e, context=f"cannot listen at {target}: ") from None
        #: The channels listened to (deduplicated) and the broker's listener connection's pid.
        self.channels, self.listener_pid = confirmation_from(first)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while True:
            try:
                response = next(self._call)
            except grpc.RpcError as e:
                if self._closed:
                    raise StopIteration from None
                raise error_from_rpc(e) from None
            event = event_from(response)
            if event is not None:
                return event

    def close(self) -> None:
        """Cancels the stream; the broker UNLISTENs channels nobody else listens to."""
        self._closed = True
        self._call.cancel()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def listen(target: str, channels: Sequence[str], *, client_id: Optional[str] = None,
           credentials: Optional[grpc.ChannelCredentials] = None) -> Listener:
    """Subscribes to ``channels`` at the broker ``target`` ("host:port") and
    returns, once the subscription is confirmed, an iterator of events."""
    return Listener(target, channels, client_id=client_id, credentials=credentials)
