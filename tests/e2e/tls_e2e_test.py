#!/usr/bin/python3
"""Transport security of the broker binary, end to end (docs/security.md).

TLS and mutual TLS on the gRPC port, what clients refuse (an expired
certificate, one for another host, one from another CA), certificate rotation
on disk while a session's KeepAlive stream and calls run, the refusal to serve
plaintext beyond loopback, HTTPS metrics, and TLS to PostgreSQL with
sslmode=verify-full. Every certificate is made here, at test time, with
Debian's openssl (tests/support/tls_certs.py).

Calls go through raw grpc.health.v1 Check calls (no stubs needed), through
the Python driver (client/python), whose TLS options are tested with it, and
through the generated SessionBroker stubs for the certificate as the caller's
identity (a clients file mapping a SPIFFE URI SAN and a subject to clients).

Usage: tls_e2e_test.py BROKER_BINARY SOURCE_DIR; SB_TEST_DATABASE_URL must name
a PostgreSQL (without it the test fails, never skips).
"""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple

import grpc

BROKER = ""
ROOT = ""
DATABASE_URL = ""
SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}
PASSWORD = "s3cret-pw-7f3a"  # put in DATABASE_URL to prove it never leaks


def wait_for(condition, what: str, timeout: float = 60.0):
    """Polls CONDITION until it returns something true; fails after TIMEOUT
    (a bound on a hang, not on how fast the broker is)."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Broker:
    """A broker child process on port 0 with its own port file and log."""

    def __init__(self, env: Dict[str, str], database_url: Optional[str] = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="sb-tls-broker.")
        self.log_path = os.path.join(self.dir, "log")
        port_file = os.path.join(self.dir, "ports")
        full = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": database_url or DATABASE_URL,
            "BROKER_LISTEN_ADDR": "127.0.0.1:0",
            "BROKER_METRICS_ADDR": "127.0.0.1:0",
            "BROKER_PORT_FILE": port_file,
            "BROKER_ENV_FILE": "",
            "BROKER_HEALTH_CHECK_INTERVAL": "0.2",
            "BROKER_DRAIN_SECONDS": "0",
            "BROKER_SHUTDOWN_GRACE_SECONDS": "2",
        }
        full.update(env)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([BROKER], env=full, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        ports: Dict[str, str] = {}

        def read_ports() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the broker exited with {self.process.returncode}:\n"
                                     f"{self.log()}")
            if not os.path.exists(port_file):
                return False
            with open(port_file, encoding="utf-8") as f:
                ports.update(line.strip().split("=", 1) for line in f if "=" in line)
            return "grpc" in ports

        wait_for(read_ports, "the port file")
        self.grpc_port = int(ports["grpc"].rsplit(":", 1)[1])
        self.metrics_port = int(ports["metrics"].rsplit(":", 1)[1]) if "metrics" in ports else 0

    def target(self, host: str = "localhost") -> str:
        return f"{host}:{self.grpc_port}"

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_to_exit(env: Dict[str, str]) -> Tuple[int, str]:
    """Runs the broker with ENV (plus the defaults of Broker) expecting it to
    exit by itself; returns its exit code and output."""
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": DATABASE_URL,
            "BROKER_ENV_FILE": "", "BROKER_LISTEN_ADDR": "127.0.0.1:0",
            "BROKER_METRICS_ADDR": "127.0.0.1:0"}
    full.update(env)
    result = subprocess.run([BROKER], env=full, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def credentials(certs: Dict[str, str], ca: str = "ca",
                client: Optional[str] = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=read(certs[ca] + ".pem"),
        private_key=read(certs[client] + ".key") if client else None,
        certificate_chain=read(certs[client] + ".pem") if client else None)


def health_check(target: str, creds: Optional[grpc.ChannelCredentials]) -> bytes:
    """One grpc.health.v1 Check on a new channel (a new TLS handshake)."""
    channel = (grpc.secure_channel(target, creds) if creds is not None
               else grpc.insecure_channel(target))
    with channel:
        return channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)


def health_fails(target: str, creds: Optional[grpc.ChannelCredentials]) -> grpc.StatusCode:
    try:
        health_check(target, creds)
    except grpc.RpcError as e:
        return e.code()
    raise AssertionError(f"a call to {target} succeeded that should have failed")


def leaf_der(pem_path: str) -> bytes:
    with open(pem_path, encoding="ascii") as f:
        text = f.read()
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(text[:end])


def served_certificate(port: int, ca_file: str, alpn: Optional[str] = "h2") -> bytes:
    """The DER certificate a new TLS connection to localhost:PORT is served."""
    context = ssl.create_default_context(cafile=ca_file)
    if alpn:
        context.set_alpn_protocols([alpn])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def replace_file(path: str, data: bytes) -> None:
    """Writes DATA aside and renames it over PATH, as kubelet and cert-manager
    swap files: a reader sees the old or the new file."""
    temp = path + ".new"
    with open(temp, "wb") as f:
        f.write(data)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


class TlsE2eTest(unittest.TestCase):
    certs: Dict[str, str] = {}
    cert_dir = ""

    @classmethod
    def setUpClass(cls) -> None:
        cls.cert_dir = tempfile.mkdtemp(prefix="sb-tls-certs.")
        # The PostgreSQL server (user postgres when run as root) reads its
        # copies made by scripts/pg; the directory only has to be traversable.
        os.chmod(cls.cert_dir, 0o755)
        cls.certs = tls_certs.make_certs(cls.cert_dir)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.cert_dir, ignore_errors=True)

    def tls_env(self, name: str = "server", **extra: str) -> Dict[str, str]:
        env = {"BROKER_TLS_CERT": self.certs[name] + ".pem",
               "BROKER_TLS_KEY": self.certs[name] + ".key"}
        env.update(extra)
        return env

    def start(self, env: Dict[str, str], database_url: Optional[str] = None) -> Broker:
        broker = Broker(env, database_url)
        self.addCleanup(broker.stop)
        return broker

    # --- TLS on the gRPC port --------------------------------------------------

    def test_tls_call_works_and_a_plaintext_client_is_refused(self) -> None:
        broker = self.start(self.tls_env())
        self.assertEqual(health_check(broker.target(), credentials(self.certs)), SERVING)
        self.assertEqual(health_check(broker.target("127.0.0.1"), credentials(self.certs)),
                         SERVING)
        self.assertEqual(health_fails(broker.target("127.0.0.1"), None),
                         grpc.StatusCode.UNAVAILABLE)
        self.assertIn("; transport TLS; ", broker.log())

    def test_client_refuses_expired_wrong_host_and_foreign_ca_certificates(self) -> None:
        logs = {}
        for name in ("expired", "wronghost", "otherca_server"):
            with self.subTest(certificate=name):
                broker = self.start(self.tls_env(name))
                self.assertEqual(health_fails(broker.target(), credentials(self.certs)),
                                 grpc.StatusCode.UNAVAILABLE)
                logs[name] = broker.log()
        # The broker serves an expired certificate (clients refuse it) but says so.
        self.assertIn("expired at 2020-01-02", logs["expired"])
        self.assertNotIn("expired", logs["wronghost"])

    def test_mutual_tls_require_refuses_no_certificate_and_a_foreign_one(self) -> None:
        broker = self.start(self.tls_env(BROKER_TLS_CLIENT_CA=self.certs["ca"] + ".pem"))
        self.assertEqual(health_check(broker.target(), credentials(self.certs, client="client")),
                         SERVING)
        self.assertEqual(health_fails(broker.target(), credentials(self.certs)),
                         grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(
            health_fails(broker.target(), credentials(self.certs, client="otherca_client")),
            grpc.StatusCode.UNAVAILABLE)
        self.assertIn("client certificates required", broker.log())

    def test_mutual_tls_optional_accepts_no_certificate_but_verifies_one_given(self) -> None:
        broker = self.start(self.tls_env(BROKER_TLS_CLIENT_CA=self.certs["ca"] + ".pem",
                                         BROKER_TLS_CLIENT_AUTH="optional"))
        self.assertEqual(health_check(broker.target(), credentials(self.certs)), SERVING)
        self.assertEqual(health_check(broker.target(), credentials(self.certs, client="client")),
                         SERVING)
        self.assertEqual(
            health_fails(broker.target(), credentials(self.certs, client="otherca_client")),
            grpc.StatusCode.UNAVAILABLE)

    # --- the certificate as the caller's identity -----------------------------

    def test_mutual_tls_identity_keeps_each_client_to_its_own_sessions(self) -> None:
        clients_file = os.path.join(self.cert_dir, "clients.yaml")
        with open(clients_file, "w", encoding="utf-8") as f:
            f.write("clients:\n"
                    f"  - id: orders\n    spiffe_ids: [\"{tls_certs.SPIFFE_ID}\"]\n"
                    "  - id: billing\n    cert_subjects: [\"CN=billing,O=shop\"]\n")
        self.addCleanup(os.remove, clients_file)
        broker = self.start(self.tls_env(BROKER_TLS_CLIENT_CA=self.certs["ca"] + ".pem",
                                         BROKER_TLS_CLIENT_AUTH="require",
                                         BROKER_METRICS_TLS="true",
                                         BROKER_CLIENTS_FILE=clients_file))
        pb, pb_grpc = _pb.broker_pb2, _pb.broker_pb2_grpc

        def stub(client: str):
            channel = grpc.secure_channel(broker.target(),
                                          credentials(self.certs, client=client))
            self.addCleanup(channel.close)
            return pb_grpc.SessionBrokerStub(channel)

        orders, billing = stub("client"), stub("subject_client")
        wait_for(lambda: readiness_tls(broker.target(), self.certs) == "SERVING", "readiness")
        mine = orders.BeginSession(pb.BeginSessionRequest(), timeout=10).name
        theirs = billing.BeginSession(pb.BeginSessionRequest(), timeout=10).name
        self.assertEqual(orders.GetSession(pb.GetSessionRequest(session=mine), timeout=10).name,
                         mine)
        # Another client's session is not found, exactly as a name that never existed.
        for own, other in ((orders, theirs), (billing, mine)):
            with self.assertRaises(grpc.RpcError) as denied:
                own.GetSession(pb.GetSessionRequest(session=other), timeout=10)
            self.assertEqual(denied.exception.code(), grpc.StatusCode.NOT_FOUND)
            with self.assertRaises(grpc.RpcError) as denied:
                own.Execute(pb.ExecuteRequest(sql="SELECT 1", session=other), timeout=10)
            self.assertEqual(denied.exception.code(), grpc.StatusCode.NOT_FOUND)
        listed = orders.ListSessions(pb.ListSessionsRequest(), timeout=10)
        self.assertEqual([s.name for s in listed.sessions], [mine])

        # A transaction pins a connection: the pool counts it under the
        # certificate's client id, whatever x-client-id claims.
        orders.BeginTransaction(pb.BeginTransactionRequest(session=mine), timeout=10,
                                metadata=(("x-client-id", "billing"),))
        context = ssl.create_default_context(cafile=self.certs["ca"] + ".pem")
        url = f"https://localhost:{broker.metrics_port}/metrics"
        with urllib.request.urlopen(url, context=context, timeout=10) as r:
            metrics = r.read().decode()
        self.assertIn('sessionbroker_client_connections_in_use{client="orders"} 1', metrics)
        self.assertNotIn('sessionbroker_client_connections_in_use{client="billing"} 1', metrics)
        orders.Rollback(pb.RollbackRequest(session=mine), timeout=10)

        # A certificate the CA signed but the clients file does not map.
        with self.assertRaises(grpc.RpcError) as unmapped:
            stub("unmapped_client").Execute(pb.ExecuteRequest(sql="SELECT 1"), timeout=10)
        self.assertEqual(unmapped.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("CN=stranger", unmapped.exception.details())

    def test_a_bad_certificate_or_key_at_start_refuses_to_start_naming_the_file(self) -> None:
        garbage = os.path.join(self.cert_dir, "garbage.pem")
        with open(garbage, "w", encoding="ascii") as f:
            f.write("not a certificate\n")
        key_text = read(self.certs["server2"] + ".key").decode()
        key_body = key_text.splitlines()[1]
        cases = [
            ({"BROKER_TLS_CERT": self.certs["server"] + ".pem",
              "BROKER_TLS_KEY": self.certs["server2"] + ".key"}, "does not belong"),
            ({"BROKER_TLS_CERT": garbage, "BROKER_TLS_KEY": self.certs["server"] + ".key"},
             "holds no PEM certificate"),
            ({"BROKER_TLS_CERT": self.certs["server"] + ".pem", "BROKER_TLS_KEY": garbage},
             "holds no unencrypted PEM private key"),
            ({"BROKER_TLS_CERT": os.path.join(self.cert_dir, "missing.pem"),
              "BROKER_TLS_KEY": self.certs["server"] + ".key"}, "cannot read"),
            (self.tls_env(BROKER_TLS_CLIENT_CA=garbage), "BROKER_TLS_CLIENT_CA"),
        ]
        for env, message in cases:
            with self.subTest(message=message):
                code, output = run_to_exit(env)
                self.assertEqual(code, 1, output)
                self.assertIn("cannot start", output)
                self.assertIn(message, output)
                self.assertNotIn(key_body, output)
                self.assertNotIn("PRIVATE KEY-----\n", output)

    # --- plaintext only on loopback ---------------------------------------------

    def test_plaintext_beyond_loopback_refuses_to_start_unless_allowed(self) -> None:
        for name in ("BROKER_LISTEN_ADDR", "BROKER_METRICS_ADDR"):
            with self.subTest(listener=name):
                code, output = run_to_exit({name: "0.0.0.0:0"})
                self.assertEqual(code, 2, output)
                self.assertIn(f"{name}=0.0.0.0:0 would serve plaintext", output)
                self.assertIn("BROKER_ALLOW_INSECURE=true", output)
        allowed = self.start({"BROKER_LISTEN_ADDR": "0.0.0.0:0",
                              "BROKER_METRICS_ADDR": "0.0.0.0:0",
                              "BROKER_ALLOW_INSECURE": "true"})
        self.assertEqual(health_check(allowed.target("127.0.0.1"), None), SERVING)
        tls = self.start(self.tls_env(BROKER_LISTEN_ADDR="0.0.0.0:0", BROKER_METRICS_TLS="true",
                                      BROKER_METRICS_ADDR="0.0.0.0:0"))
        self.assertEqual(health_check(tls.target(), credentials(self.certs)), SERVING)

    # --- HTTPS metrics ----------------------------------------------------------

    def test_metrics_and_probes_over_https_with_the_grpc_certificate(self) -> None:
        broker = self.start(self.tls_env(BROKER_METRICS_TLS="true"))
        context = ssl.create_default_context(cafile=self.certs["ca"] + ".pem")
        url = f"https://localhost:{broker.metrics_port}"
        with urllib.request.urlopen(url + "/metrics", context=context, timeout=10) as r:
            self.assertEqual(r.status, 200)
            self.assertIn(b"sessionbroker_", r.read())
        with urllib.request.urlopen(url + "/livez", context=context, timeout=10) as r:
            self.assertEqual(r.read(), b"ok\n")
        self.assertEqual(served_certificate(broker.metrics_port, self.certs["ca"] + ".pem", None),
                         leaf_der(self.certs["server"] + ".pem"))
        with self.assertRaises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/livez", timeout=10)
        self.assertIn(f"https://127.0.0.1:{broker.metrics_port}/metrics", broker.log())

    # --- rotation ---------------------------------------------------------------

    def test_rotation_on_disk_serves_the_new_certificate_and_no_call_fails(self) -> None:
        live = tempfile.mkdtemp(prefix="sb-tls-live.")
        self.addCleanup(shutil.rmtree, live, True)
        cert, key = os.path.join(live, "tls.crt"), os.path.join(live, "tls.key")
        shutil.copy(self.certs["server"] + ".pem", cert)
        shutil.copy(self.certs["server"] + ".key", key)
        broker = self.start({"BROKER_TLS_CERT": cert, "BROKER_TLS_KEY": key,
                             "BROKER_TLS_RELOAD_SECONDS": "1", "BROKER_METRICS_TLS": "true"})
        ca = self.certs["ca"] + ".pem"
        old, new = leaf_der(self.certs["server"] + ".pem"), leaf_der(self.certs["server2"] + ".pem")
        self.assertEqual(served_certificate(broker.grpc_port, ca), old)

        # A session (its KeepAlive stream holds it) running statements on one
        # connection, and new connections calling Check, all through the swap.
        conn = dbapi.connect(broker.target(), tls_ca=ca, autocommit=True, client_id="rotation")
        self.addCleanup(conn.close)
        errors: List[str] = []
        counts = {"session": 0, "new_connections": 0}
        stop = threading.Event()

        def session_loop() -> None:
            cur = conn.cursor()
            while not stop.is_set():
                try:
                    cur.execute("SELECT 1")
                    cur.fetchall()
                    counts["session"] += 1
                except Exception as e:  # noqa: BLE001 - every failure is the finding
                    errors.append(f"session: {e}")

        def new_connection_loop() -> None:
            while not stop.is_set():
                try:
                    health_check(broker.target(), credentials(self.certs))
                    counts["new_connections"] += 1
                except grpc.RpcError as e:
                    errors.append(f"new connection: {e.code()} {e.details()}")

        threads = [threading.Thread(target=session_loop),
                   threading.Thread(target=new_connection_loop)]
        for t in threads:
            t.start()
        try:
            # A broken file is refused and logged; the old certificate stays.
            replace_file(cert, b"-----BEGIN CERTIFICATE-----\ntruncated\n")
            wait_for(lambda: "still serving the previous certificate" in broker.log(),
                     "the refusal of a broken certificate in the log")
            self.assertEqual(served_certificate(broker.grpc_port, ca), old)
            # cert-manager's rotation: a new key and certificate.
            replace_file(key, read(self.certs["server2"] + ".key"))
            replace_file(cert, read(self.certs["server2"] + ".pem"))
            wait_for(lambda: served_certificate(broker.grpc_port, ca) == new,
                     "new connections to be served the new certificate")
            wait_for(lambda: served_certificate(broker.metrics_port, ca, None) == new,
                     "HTTPS to be served the new certificate")
            # Calls keep running on both kinds of connection after the swap.
            after = dict(counts)
            wait_for(lambda: counts["session"] > after["session"] + 20
                     and counts["new_connections"] > after["new_connections"] + 5,
                     "calls after the rotation")
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [])
        self.assertIn("reloaded the certificate", broker.log())
        # The session held across the rotation is the same one, still usable.
        cur = conn.cursor()
        cur.execute("SELECT 41 + 1")
        self.assertEqual(cur.fetchall(), [(42,)])

    # --- TLS to PostgreSQL --------------------------------------------------------

    def test_postgres_verify_full_and_a_wrong_root_certificate(self) -> None:
        pg_dir = tempfile.mkdtemp(prefix="sb-tls-pg.")
        os.chmod(pg_dir, 0o711)
        self.addCleanup(shutil.rmtree, pg_dir, True)
        env = dict(os.environ, PG_SSL_CERT=self.certs["server"] + ".pem",
                   PG_SSL_KEY=self.certs["server"] + ".key")
        url = subprocess.run([os.path.join(ROOT, "scripts", "pg"), "start", pg_dir + "/pg"],
                             env=env, check=True, capture_output=True, text=True).stdout.strip()
        self.addCleanup(subprocess.run, [os.path.join(ROOT, "scripts", "pg"), "stop",
                                         pg_dir + "/pg"], capture_output=True)
        port = url.rsplit(":", 1)[1].split("/", 1)[0]

        def database_url(root: str) -> str:
            return (f"postgresql://postgres:{PASSWORD}@localhost:{port}/postgres"
                    f"?sslmode=verify-full&sslrootcert={self.certs[root]}.pem")

        good = self.start({}, database_url("ca"))
        wait_for(lambda: "health: database reachable" in good.log(), "the database reachable")
        conn = dbapi.connect(good.target("127.0.0.1"), autocommit=True)
        self.addCleanup(conn.close)
        cur = conn.cursor()
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        self.assertEqual(cur.fetchall(), [(True,)])

        bad = self.start({}, database_url("otherca"))
        readyz = f"http://127.0.0.1:{bad.metrics_port}/readyz"

        def not_ready_reason() -> str:
            try:
                urllib.request.urlopen(readyz, timeout=10)
            except urllib.error.HTTPError as e:
                body = e.read().decode()
                return body if "certificate verify failed" in body else ""
            return ""

        reason = wait_for(not_ready_reason, "readiness to name the certificate failure")
        self.assertIn("the database is unreachable", reason)
        self.assertEqual(readiness(bad.target("127.0.0.1")), "NOT_SERVING")
        bad_conn = dbapi.connect(bad.target("127.0.0.1"), autocommit=True)
        self.addCleanup(bad_conn.close)
        with self.assertRaises(dbapi.OperationalError) as failure:
            bad_conn.cursor().execute("SELECT 1")
        with urllib.request.urlopen(f"http://127.0.0.1:{bad.metrics_port}/metrics",
                                    timeout=10) as r:
            metrics = r.read().decode()
        for where, text in (("readyz", reason), ("error", str(failure.exception)),
                            ("metrics", metrics), ("log", bad.log()), ("good log", good.log())):
            self.assertNotIn(PASSWORD, text, f"the password leaked into the {where}")


def readiness_tls(target: str, certs: Dict[str, str]) -> str:
    """The readiness status over mutual TLS (the ``client`` certificate)."""
    service = b"sessionbroker.v1.SessionBroker"
    with grpc.secure_channel(target, credentials(certs, client="client")) as channel:
        response = channel.unary_unary("/grpc.health.v1.Health/Check")(
            b"\x0a" + bytes([len(service)]) + service, timeout=10)
    return {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(response, repr(response))


def readiness(target: str) -> str:
    """The grpc.health.v1 status of the readiness service (plaintext)."""
    service = b"sessionbroker.v1.SessionBroker"
    with grpc.insecure_channel(target) as channel:
        response = channel.unary_unary("/grpc.health.v1.Health/Check")(
            b"\x0a" + bytes([len(service)]) + service, timeout=10)
    return {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(response, repr(response))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: tls_e2e_test.py BROKER_BINARY SOURCE_DIR")
    BROKER, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    del sys.argv[1:3]
    DATABASE_URL = os.environ.get("SB_TEST_DATABASE_URL", "")
    if not DATABASE_URL:
        sys.exit("SB_TEST_DATABASE_URL is not set: this test needs a live PostgreSQL "
                 "(scripts/pg start DIR prints one)")
    sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
    sys.path.insert(0, os.path.join(ROOT, "client", "python"))
    import tls_certs  # noqa: E402
    from sessionbroker import _codegen  # noqa: E402
    _codegen.generate()
    from sessionbroker import dbapi  # noqa: E402
    from sessionbroker import _pb  # noqa: E402
    unittest.main(verbosity=2)
