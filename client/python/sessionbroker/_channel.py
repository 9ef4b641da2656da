"""One gRPC channel per (target, credentials) per process, shared by every
connection to that broker.

gRPC channels are thread-safe and multiplex calls, so sharing one is cheaper
than a channel (an HTTP/2 connection) per DB-API connection. Channels live
until the process exits. ``channel_for`` is thread-safe (a module lock).
"""

import threading
from typing import Dict, Optional, Tuple

import grpc

# Results are bounded by the broker (BROKER_MAX_RESULT_BYTES); the client
# takes whatever it sends rather than gRPC's 4 MiB default.
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)

_lock = threading.Lock()
_channels: Dict[Tuple[str, int], grpc.Channel] = {}


def channel_for(target: str, credentials: Optional[grpc.ChannelCredentials]) -> grpc.Channel:
    """The process's channel to ``target``: plaintext without ``credentials``,
    TLS (or whatever the credentials say) with them."""
    key = (target, id(credentials) if credentials is not None else 0)
    with _lock:
        channel = _channels.get(key)
        if channel is None:
            if credentials is None:
                channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            _channels[key] = channel
        return channel
