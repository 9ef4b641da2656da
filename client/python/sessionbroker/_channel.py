"""One gRPC channel per (target, credentials) per process, shared by every
connection to that broker; and TLS credentials from PEM files (``tls_ca``,
``tls_cert``, ``tls_key`` of ``connect()``), one object per set of files and
their modification times, so that connections with the same files share a
channel and a rotated client certificate is read again by the next connect.

gRPC channels are thread-safe and multiplex calls, so sharing one is cheaper
than a channel (an HTTP/2 connection) per DB-API connection. Channels live
until the process exits. ``channel_for`` is thread-safe (a module lock).
"""

import os
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


_tls_lock = threading.Lock()
_tls: Dict[Tuple[Tuple[str, int], ...], grpc.ChannelCredentials] = {}


def _read(path: Optional[str], what: str) -> Optional[bytes]:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror}") from None


def tls_credentials(ca: Optional[str] = None, cert: Optional[str] = None,
                    key: Optional[str] = None) -> grpc.ChannelCredentials:
    """TLS channel credentials: the broker's certificate verified against the
    PEM bundle ``ca`` (None: the system's roots), and for mutual TLS the
    client certificate chain ``cert`` with its private key ``key`` (both or
    neither). ValueError naming the file when one cannot be read."""
    if bool(cert) != bool(key):
        raise ValueError("tls_cert and tls_key go together: a client certificate needs its key")
    stamp = []
    for path in (ca, cert, key):
        try:
            stamp.append((path or "", os.stat(path).st_mtime_ns if path else 0))
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror}") from None
    cache_key = tuple(stamp)
    with _tls_lock:
        credentials = _tls.get(cache_key)
        if credentials is None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(ca, "the CA bundle (tls_ca)"),
                private_key=_read(key, "the client key (tls_key)"),
                certificate_chain=_read(cert, "the client certificate (tls_cert)"))
            _tls[cache_key] = credentials
        return credentials


def resolve_credentials(credentials: Optional[grpc.ChannelCredentials], tls: bool,
                        tls_ca: Optional[str], tls_cert: Optional[str],
                        tls_key: Optional[str]) -> Optional[grpc.ChannelCredentials]:
    """``connect()``'s credentials: explicit ones, or TLS from the tls_* files
    when ``tls`` or any of them is given, or None (plaintext)."""
    wants_tls = tls or bool(tls_ca or tls_cert or tls_key)
    if credentials is not None and wants_tls:
        raise ValueError("give either credentials or the tls options, not both")
    if not wants_tls:
        return credentials
    return tls_credentials(tls_ca, tls_cert, tls_key)
