"""connect() opens its session again when BeginSession fails UNAVAILABLE (a
connection that broke under the call), within connect_timeout and a few
attempts, and gives up at once on any other error. Driven against an
in-process gRPC server whose BeginSession fails as scripted: a broker cannot
be made to drop a connection at a chosen moment. (The real case: an idle
connection closed by the broker's keepalive watchdog, a proxy or a NAT as
the call went out, which gRPC reports as UNAVAILABLE "Socket closed".)"""

import asyncio
import threading
from concurrent import futures
from typing import Iterator, List

import grpc
import pytest

from sessionbroker import _core, aio, dbapi
from sessionbroker._pb import broker_pb2, broker_pb2_grpc


class ScriptedBroker(broker_pb2_grpc.SessionBrokerServicer):
    """BeginSession fails with the next code of ``failures``, then succeeds;
    EndSession and KeepAlive answer as the broker does for a session."""

    def __init__(self, failures: List[grpc.StatusCode]) -> None:
        self.failures = list(failures)
        self.begins = 0
        self.request_ids: List[str] = []
        self.ended: List[str] = []
        self.lock = threading.Lock()

    def BeginSession(self, request, context):  # noqa: N802 - gRPC's name
        with self.lock:
            self.begins += 1
            self.request_ids.append(request.request_id)
            n = self.begins
            code = self.failures.pop(0) if self.failures else None
        if code is not None:
            context.abort(code, f"scripted failure {n}")
        return broker_pb2.Session(name=f"sessions/s{n}")

    def EndSession(self, request, context):  # noqa: N802
        with self.lock:
            self.ended.append(request.session)
        return broker_pb2.EndSessionResponse()

    def KeepAlive(self, request_iterator, context) -> Iterator:  # noqa: N802
        for _ in request_iterator:
            pass
        return iter(())


@pytest.fixture
def scripted():
    """(servicer factory, target): an in-process server per test."""
    servers = []

    def start(failures: List[grpc.StatusCode]):
        servicer = ScriptedBroker(failures)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        broker_pb2_grpc.add_SessionBrokerServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return servicer, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


def test_separate_connects_send_separate_request_ids(scripted):
    servicer, target = scripted([])
    for _ in range(2):
        dbapi.connect(target, client_id="retry").close()
    assert len(set(servicer.request_ids)) == 2


def test_a_connection_that_breaks_under_begin_session_is_retried(scripted):
    servicer, target = scripted([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE])
    conn = dbapi.connect(target, client_id="retry")
    try:
        assert servicer.begins == 3
        assert conn._core.name == "sessions/s3"
        # One request id for all attempts: a broker that opened a session for
        # an attempt whose answer was lost answers the retry with it.
        assert len(set(servicer.request_ids)) == 1 and servicer.request_ids[0]
    finally:
        conn.close()
    assert servicer.ended == ["sessions/s3"]


def test_begin_session_gives_up_after_its_attempts(scripted):
    servicer, target = scripted([grpc.StatusCode.UNAVAILABLE] * _core.BEGIN_SESSION_ATTEMPTS)
    with pytest.raises(dbapi.OperationalError) as raised:
        dbapi.connect(target, client_id="retry")
    assert servicer.begins == _core.BEGIN_SESSION_ATTEMPTS
    assert raised.value.grpc_code == grpc.StatusCode.UNAVAILABLE
    assert f"scripted failure {_core.BEGIN_SESSION_ATTEMPTS}" in str(raised.value)


def test_other_errors_of_begin_session_are_not_retried(scripted):
    servicer, target = scripted([grpc.StatusCode.RESOURCE_EXHAUSTED])
    with pytest.raises(dbapi.OperationalError) as raised:
        dbapi.connect(target, client_id="retry")
    assert servicer.begins == 1
    assert raised.value.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_no_retry_outlives_the_connect_timeout():
    # Too little time left for another attempt: the UNAVAILABLE is raised
    # rather than a deadline from an attempt that had no chance.
    assert _core.begin_session_retry_delay(grpc.StatusCode.UNAVAILABLE, 1, 0.01) is None
    assert _core.begin_session_retry_delay(grpc.StatusCode.UNAVAILABLE, 1, 0.2) is None
    assert _core.begin_session_retry_delay(grpc.StatusCode.UNAVAILABLE, 1, None) > 0
    assert _core.begin_session_retry_delay(grpc.StatusCode.UNAVAILABLE, 1, 5.0) > 0


def test_the_asyncio_connection_retries_begin_session_too(scripted):
    servicer, target = scripted([grpc.StatusCode.UNAVAILABLE])

    async def main():
        conn = await aio.connect(target, client_id="retry")
        try:
            assert servicer.begins == 2
        finally:
            await conn.close()

    asyncio.run(main())
    assert servicer.ended == ["sessions/s2"]


def test_the_broker_answers_a_repeated_begin_session_with_the_same_session(broker_target):
    # What the retry relies on, against the real broker: the second attempt
    # of one connect() (same request_id) gets the session the first opened.
    from sessionbroker._channel import channel_for
    stub = broker_pb2_grpc.SessionBrokerStub(channel_for(broker_target, None))
    metadata = _core.call_metadata("retry", None)
    request = _core.begin_session_request(ttl=None, label="", read_only=False,
                                          isolation_level=None, settings=None)
    first = stub.BeginSession(request, metadata=metadata, timeout=10)
    again = stub.BeginSession(request, metadata=metadata, timeout=10)
    try:
        assert again.name == first.name
    finally:
        stub.EndSession(broker_pb2.EndSessionRequest(session=first.name), metadata=metadata,
                        timeout=10)
