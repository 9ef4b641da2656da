"""The driver over TLS: connect()'s tls, tls_ca, tls_cert and tls_key (DB-API
and asyncio) and the same options as SQLAlchemy URL query parameters, against
brokers serving TLS and mutual TLS with certificates made here by openssl
(tests/support/tls_certs.py)."""

import asyncio
import os
import shutil
import sys
import tempfile
from typing import Dict, Iterator

import grpc
import pytest

from sessionbroker import aio, dbapi

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "tests", "support"))
import tls_certs  # noqa: E402


@pytest.fixture(scope="module")
def certs() -> Iterator[Dict[str, str]]:
    """The test CA and certificates, in a directory removed afterwards."""
    directory = tempfile.mkdtemp(prefix="sb-pytls.")
    try:
        yield tls_certs.make_certs(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def mtls_target(broker_factory, certs) -> str:
    """"localhost:PORT" of a broker that requires client certificates."""
    broker = broker_factory({"BROKER_TLS_CERT": certs["server"] + ".pem",
                             "BROKER_TLS_KEY": certs["server"] + ".key",
                             "BROKER_TLS_CLIENT_CA": certs["ca"] + ".pem"})
    return "localhost:" + broker.target.rsplit(":", 1)[1]


def _client_tls(certs: Dict[str, str], client: str = "client") -> Dict[str, str]:
    return {"tls_ca": certs["ca"] + ".pem", "tls_cert": certs[client] + ".pem",
            "tls_key": certs[client] + ".key"}


def test_mutual_tls_connection_runs_statements(mtls_target, certs):
    conn = dbapi.connect(mtls_target, autocommit=True, **_client_tls(certs))
    try:
        cur = conn.cursor()
        cur.execute("SELECT %s::int + 1", (41,))
        assert cur.fetchall() == [(42,)]
    finally:
        conn.close()


def test_without_a_client_certificate_or_plaintext_the_broker_refuses(mtls_target, certs):
    with pytest.raises(dbapi.OperationalError):
        dbapi.connect(mtls_target, tls_ca=certs["ca"] + ".pem", connect_timeout=2)
    with pytest.raises(dbapi.OperationalError):
        dbapi.connect(mtls_target, connect_timeout=2)
    with pytest.raises(dbapi.OperationalError):
        dbapi.connect(mtls_target, connect_timeout=2, **_client_tls(certs, "otherca_client"))


def test_a_broker_certificate_from_another_ca_is_refused(broker_factory, certs):
    broker = broker_factory({"BROKER_TLS_CERT": certs["otherca_server"] + ".pem",
                             "BROKER_TLS_KEY": certs["otherca_server"] + ".key"})
    target = "localhost:" + broker.target.rsplit(":", 1)[1]
    with pytest.raises(dbapi.OperationalError):
        dbapi.connect(target, tls_ca=certs["ca"] + ".pem", connect_timeout=2)
    conn = dbapi.connect(target, tls_ca=certs["otherca"] + ".pem")
    conn.close()


def test_asyncio_connection_over_mutual_tls(mtls_target, certs):
    async def run():
        conn = await aio.connect(mtls_target, autocommit=True, **_client_tls(certs))
        try:
            cur = conn.cursor()
            await cur.execute("SELECT 'over tls'")
            return await cur.fetchall()
        finally:
            await conn.close()

    assert asyncio.run(run()) == [("over tls",)]


def test_sqlalchemy_url_query_carries_the_tls_options(mtls_target, certs):
    from sqlalchemy import create_engine, text

    import sessionbroker.sqlalchemy  # noqa: F401  (registers the dialect)
    tls = _client_tls(certs)
    engine = create_engine(f"postgresql+sessionbroker://{mtls_target}/?tls=true"
                           f"&tls_ca={tls['tls_ca']}&tls_cert={tls['tls_cert']}"
                           f"&tls_key={tls['tls_key']}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 7")).scalar() == 7
    finally:
        engine.dispose()


def test_tls_options_that_cannot_work_are_refused_before_connecting(certs):
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        dbapi.connect("localhost:1", tls_cert=certs["client"] + ".pem")
    with pytest.raises(ValueError, match="either credentials or the tls options"):
        dbapi.connect("localhost:1", tls=True, credentials=grpc.ssl_channel_credentials())
    with pytest.raises(ValueError, match="cannot read"):
        dbapi.connect("localhost:1", tls_ca=certs["ca"] + ".missing")
