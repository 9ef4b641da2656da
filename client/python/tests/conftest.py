"""pytest fixtures: a session broker started from $SB_BROKER_BINARY against
$SB_TEST_DATABASE_URL, once per test session, and connections to it.

The broker binds port 0 and reports its ports in BROKER_PORT_FILE (as
tests/support/broker_process.cc does for the C++ tests); it is killed when the
session ends, also after failures. Without SB_TEST_DATABASE_URL or
SB_BROKER_BINARY the fixture fails (never skips): these tests need both.

The stubs are generated into the source tree first (``_codegen.generate``),
and the source tree is put first on sys.path so that the tests exercise it,
not an installed copy.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Dict, Iterator

import pytest

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PACKAGE_ROOT)

from sessionbroker import _codegen  # noqa: E402

_codegen.generate()


class BrokerProcess:
    """A broker child process with its own port file and log."""

    def __init__(self, binary: str, database_url: str, env: Dict[str, str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="sb-pybroker.", dir=os.environ.get("TMPDIR"))
        self.port_file = os.path.join(self.dir, "ports")
        self.log_path = os.path.join(self.dir, "log")
        full_env = dict(os.environ)
        full_env.update({
            "DATABASE_URL": database_url,
            "BROKER_LISTEN_ADDR": "127.0.0.1:0",
            "BROKER_METRICS_ADDR": "127.0.0.1:0",
            "BROKER_PORT_FILE": self.port_file,
            "BROKER_ENV_FILE": "",
            "BROKER_HEALTH_CHECK_INTERVAL": "0.2",
            "BROKER_SHUTDOWN_GRACE_SECONDS": "5",
        })
        full_env.update(env)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([binary], env=full_env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.target = self._wait_for_port(30.0)

    def _wait_for_port(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        while True:
            ports = {}
            if os.path.exists(self.port_file):
                with open(self.port_file, encoding="utf-8") as f:
                    for line in f:
                        key, _, value = line.strip().partition("=")
                        ports[key] = value
            if "grpc" in ports:
                return ports["grpc"]
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the broker exited with {self.process.returncode} before "
                                   f"listening; its log:\n{self.log()}")
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"the broker wrote no port file within {timeout}s; its "
                                   f"log:\n{self.log()}")
            time.sleep(0.01)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: these tests need a live PostgreSQL "
                    "(SB_TEST_DATABASE_URL, e.g. from scripts/pg start) and the broker binary "
                    "(SB_BROKER_BINARY, build/server/session-broker)", pytrace=False)
    return value


# Broker settings of the test broker: results up to 64 MiB (the 100k-row
# test), a short orphan grace so that KeepAlive tests run quickly, and no
# drain window on SIGTERM (no endpoints to converge here; the default 10 s
# made every broker stop wait; tests of the drain set their own).
TEST_BROKER_ENV = {
    "BROKER_DRAIN_SECONDS": "0",
    "BROKER_MAX_RESULT_BYTES": str(64 << 20),
    "BROKER_SESSION_ORPHAN_GRACE": "2",
    "DB_POOL_SIZE": "8",
    "DB_MAX_OVERFLOW": "8",
}


@pytest.fixture(scope="session")
def broker_process() -> Iterator[BrokerProcess]:
    """The test session's broker process."""
    binary = _required_env("SB_BROKER_BINARY")
    database_url = _required_env("SB_TEST_DATABASE_URL")
    broker = BrokerProcess(binary, database_url, TEST_BROKER_ENV)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def broker_target(broker_process: BrokerProcess) -> str:
    """"127.0.0.1:PORT" of a broker serving SB_TEST_DATABASE_URL."""
    return broker_process.target


@pytest.fixture
def conn(broker_target: str):
    """A fresh DB-API connection, closed after the test."""
    from sessionbroker import dbapi
    connection = dbapi.connect(broker_target, client_id="pytest")
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def table_name() -> str:
    """A table name no other test uses (tests share one database)."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def broker_factory():
    """Starts extra brokers with their own settings (e.g. a short
    BROKER_TX_IDLE_TIMEOUT); each is stopped when the module's tests end."""
    binary = _required_env("SB_BROKER_BINARY")
    database_url = _required_env("SB_TEST_DATABASE_URL")
    started = []

    def start(env: Dict[str, str]) -> BrokerProcess:
        broker = BrokerProcess(binary, database_url, {**TEST_BROKER_ENV, **env})
        started.append(broker)
        return broker

    try:
        yield start
    finally:
        for broker in started:
            broker.stop()

