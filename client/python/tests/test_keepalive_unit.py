"""The KeepAlive manager against a scripted stub (no broker): it holds again
every session when its stream breaks, and marks sessions the broker reports
ended."""

import queue
import threading

import grpc
from dbapi_helpers import wait_until

from sessionbroker._keepalive import KeepAlive, SessionLease
from sessionbroker._pb import broker_pb2


class BrokenStream(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE


class ScriptedStub:
    """KeepAlive calls: the first breaks after its first request; later ones
    record their requests and answer with what the test puts in `replies`."""

    def __init__(self):
        self.calls = 0
        self.requests = queue.SimpleQueue()  # (call number, request)
        self.replies = queue.SimpleQueue()
        self.lock = threading.Lock()

    def KeepAlive(self, request_iterator, metadata=()):  # noqa: N802 - gRPC's name
        with self.lock:
            self.calls += 1
            call = self.calls

        first_request = threading.Event()

        def reader():
            for request in request_iterator:
                self.requests.put((call, request))
                first_request.set()

        threading.Thread(target=reader, daemon=True).start()

        def responses():
            if call == 1:
                first_request.wait()  # the stream broke after its first request
                raise BrokenStream()
            while True:
                reply = self.replies.get()
                if reply is None:
                    return
                yield reply

        return responses()


def test_a_broken_stream_is_reopened_holding_every_session_again():
    keepalive = KeepAlive(channel=grpc.insecure_channel("127.0.0.1:1"), metadata=())
    stub = ScriptedStub()
    keepalive._stub = stub
    a, b = SessionLease("a"), SessionLease("b")
    keepalive.hold(a)
    keepalive.hold(b)
    # The second stream's first request holds both sessions at once.
    requests = []
    while not requests or requests[-1][0] < 2:
        requests.append(stub.requests.get(timeout=30))
    call, first = requests[-1]
    assert sorted(first.hold) == ["a", "b"]
    # The broker reports one of them ended: it is marked and no longer held.
    response = broker_pb2.KeepAliveResponse()
    response.sessions.add(name="a", state=broker_pb2.SessionState.ENDED, reason="lifetime")
    stub.replies.put(response)
    wait_until(lambda: a.ended is not None, "the ENDED report reaches the lease")
    assert a.ended == "lifetime" and b.ended is None
    assert keepalive.held_names() == ["b"]
    # Releasing the last one ends the stream and its thread.
    keepalive.release(b)
    stub.replies.put(None)
    wait_until(lambda: keepalive._thread is None, "the KeepAlive thread ends")
