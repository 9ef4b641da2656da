"""Against a broker with a clients file: the token (argument or $SB_TOKEN)
goes out as ``authorization: Bearer`` on every call, KeepAlive included, and
the broker knows the connection by the token's client, not by client_id."""

import os
import subprocess
import tempfile
import uuid

import grpc
import pytest

from sessionbroker import aio, dbapi
from sessionbroker._pb import broker_pb2, broker_pb2_grpc

TOKEN = f"py-client-token-{uuid.uuid4().hex}"
ADMIN_TOKEN = f"py-admin-token-{uuid.uuid4().hex}"


def _hash(token: str) -> str:
    out = subprocess.run([os.environ["SB_BROKER_BINARY"], "hash-token"], input=token + "\n",
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def auth_broker(broker_factory):
    directory = tempfile.mkdtemp(prefix="sb-pyauth.")
    path = os.path.join(directory, "clients.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write("clients:\n"
                f"  - id: pyapp\n    token_hashes: [\"{_hash(TOKEN)}\"]\n"
                f"  - id: ops\n    token_hashes: [\"{_hash(ADMIN_TOKEN)}\"]\n"
                "    roles: [admin]\n")
    broker = broker_factory({"BROKER_CLIENTS_FILE": path})
    yield broker
    os.remove(path)
    os.rmdir(directory)


def _sessions_of(target: str, client_id: str):
    stub = broker_pb2_grpc.SessionBrokerStub(grpc.insecure_channel(target))
    response = stub.ListSessions(broker_pb2.ListSessionsRequest(client_id=client_id), timeout=10,
                                 metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),))
    return list(response.sessions)


def test_token_authenticates_every_call_as_its_client(auth_broker):
    conn = dbapi.connect(auth_broker.target, token=TOKEN, client_id="someone-else")
    try:
        cur = conn.cursor()
        cur.execute("SELECT 41 + 1")
        assert cur.fetchone() == (42,)
        conn.commit()
        sessions = _sessions_of(auth_broker.target, "pyapp")
        assert [s.name for s in sessions] == [conn._core.name]
        # Held by the KeepAlive stream, which carried the token too.
        assert sessions[0].held_by_stream
        assert _sessions_of(auth_broker.target, "someone-else") == []
    finally:
        conn.close()


def test_token_comes_from_sb_token_when_not_given(auth_broker, monkeypatch):
    monkeypatch.setenv("SB_TOKEN", TOKEN)
    conn = dbapi.connect(auth_broker.target)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_missing_or_wrong_token_is_refused_saying_what_to_send(auth_broker, monkeypatch):
    monkeypatch.delenv("SB_TOKEN", raising=False)
    with pytest.raises(dbapi.Error) as missing:
        dbapi.connect(auth_broker.target)
    assert "authorization: Bearer" in str(missing.value)
    with pytest.raises(dbapi.Error) as wrong:
        dbapi.connect(auth_broker.target, token="wrong-token-0123456789abcdef")
    assert "wrong-token" not in str(wrong.value)


def test_aio_connection_sends_the_token(auth_broker):
    import asyncio

    async def run():
        conn = await aio.connect(auth_broker.target, token=TOKEN)
        try:
            cur = conn.cursor()
            await cur.execute("SELECT 7")
            return await cur.fetchone()
        finally:
            await conn.close()

    assert asyncio.run(run()) == (7,)
