#!/usr/bin/python3
"""The image's runtime stage, recreated without a container engine, serves.

No container engine runs in CI, so this test builds what the Dockerfile's
runtime stage would hold and runs the broker in it:
1. ``debootstrap --variant=minbase bookworm`` (what debian:bookworm-slim is
   made from) with the image's apt sources;
2. every instruction of the stage ``FROM debian:bookworm-slim AS runtime`` of
   deploy/docker/Dockerfile, as written: RUN in a chroot (so the runtime
   packages are installed by the Dockerfile's own apt-get line and the user
   by its own useradd), COPY from the repository, ENV, USER, EXPOSE, ...;
   ``COPY --from=build /src/build/X`` takes X from this build directory;
3. the broker started in the chroot as the image's USER (chroot --userspec),
   with the image's environment (ports set to 0 so the kernel chooses; the
   broker reports them in BROKER_PORT_FILE inside the chroot), against the
   test PostgreSQL (SB_TEST_DATABASE_URL, on the host's loopback);
4. every probe of deploy/k8s/base/deployment.yaml asked as the kubelet would
   (gRPC health Check with the probe's service name, or HTTP GET), expecting
   SERVING / 200; then SIGTERM, expecting a clean exit.

The root filesystem is cached under BUILD_DIR/deploy/rootfs, keyed by a hash
of the debootstrap command, the stage's instructions and the files they copy:
the first run downloads bookworm (about a minute), later runs reuse it. It
needs root (chroot, debootstrap) and the network to deb.debian.org on the
first run; without root it fails and says so (CI runs as root).

Usage: rootfs_test.py PATH_TO_SESSION_BROKER BUILD_DIR (ctest label deploy).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from typing import Dict, List, Optional, Tuple

import deploy_support as ds

BROKER = ""
BUILD_DIR = ""

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# debian:bookworm-slim's apt sources (/etc/apt/sources.list.d/debian.sources).
IMAGE_SOURCES = f"""Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# Docker's default PATH for a Linux image.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The build stage's WORKDIR and build folder, as deploy/docker/Dockerfile has them.
BUILD_STAGE_PREFIX = "/src/build/"
HEALTH_PROTO_ROOT = "/usr/share/grpc-proto"
HEALTH_PROTO = "grpc/health/v1/health.proto"


def log(message: str) -> None:
    """Progress on stderr (ctest shows it on failure and with -V)."""
    print(f"rootfs_test: {message}", file=sys.stderr, flush=True)


def sha256(*parts: bytes) -> str:
    """A short hex digest of PARTS."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def run(args: List[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs ARGS, failing with its output if it fails."""
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n"
                           f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


class RuntimeImage:
    """The runtime stage, recreated: a root filesystem and the image's config."""

    def __init__(self, rootfs: str, env: Dict[str, str], user: str, workdir: str,
                 entrypoint: List[str], exposed: List[str], stop_signal: str) -> None:
        self.rootfs = rootfs
        self.env = env
        self.user = user
        self.workdir = workdir
        self.entrypoint = entrypoint
        self.exposed = exposed
        self.stop_signal = stop_signal

    def path(self, inside: str) -> str:
        """The host path of INSIDE (an absolute path in the image)."""
        return os.path.join(self.rootfs, inside.lstrip("/"))

    def uid_gid(self) -> Tuple[int, int]:
        """USER as numbers, looked up in the image's passwd/group if named."""
        user, _, group = self.user.partition(":")

        def lookup(name: str, database: str) -> int:
            if name.isdigit():
                return int(name)
            with open(self.path(f"/etc/{database}"), encoding="utf-8") as f:
                for line in f:
                    fields = line.split(":")
                    if fields[0] == name:
                        return int(fields[2])
            raise LookupError(f"USER {self.user}: no {name} in the image's /etc/{database}")

        uid = lookup(user or "0", "passwd")
        if group:
            return uid, lookup(group, "group")
        with open(self.path("/etc/passwd"), encoding="utf-8") as f:
            for line in f:
                fields = line.split(":")
                if int(fields[2]) == uid:
                    return uid, int(fields[3])
        return uid, uid


def chroot_run(rootfs: str, command: str, env: Dict[str, str], user: str) -> None:
    """A Dockerfile RUN: /bin/sh -c COMMAND in ROOTFS as USER with ENV."""
    args = ["chroot"]
    if user:
        args.append(f"--userspec={user}")
    args += [rootfs, "/bin/sh", "-c", command]
    full_env = {"PATH": DEFAULT_PATH, "HOME": "/root"}
    full_env.update(env)
    run(args, env=full_env)


def build_minbase(cache: str) -> str:
    """debootstrap minbase with the image's apt sources, cached; returns its dir."""
    command = ["debootstrap", "--variant=minbase", SUITE, "ROOTFS", MIRROR]
    key = sha256(" ".join(command).encode(), IMAGE_SOURCES.encode())
    final = os.path.join(cache, f"minbase-{key}")
    if os.path.exists(os.path.join(final, ".complete")):
        log(f"reusing {final}")
        return final
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is not installed: run scripts/install-deps")
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    log(f"debootstrap --variant=minbase {SUITE} into {partial} (the first run downloads it)")
    started = time.monotonic()
    run([c if c != "ROOTFS" else partial for c in command])
    # As debian:bookworm-slim: deb822 sources with updates and security; no
    # package cache left behind.
    os.remove(os.path.join(partial, "etc/apt/sources.list"))
    with open(os.path.join(partial, "etc/apt/sources.list.d/debian.sources"), "w") as f:
        f.write(IMAGE_SOURCES)
    chroot_run(partial, "apt-get clean", {}, "")
    log(f"debootstrap took {time.monotonic() - started:.0f} s")
    open(os.path.join(partial, ".complete"), "w").close()
    os.rename(partial, final)
    return final


def recreate_runtime_stage() -> RuntimeImage:
    """Builds (or reuses) the runtime stage's root filesystem."""
    stage = ds.stage("runtime")
    if stage.image != "debian:bookworm-slim":
        raise AssertionError(f"the runtime stage is FROM {stage.image}; this test recreates "
                             "debian:bookworm-slim only")
    cache = os.path.join(BUILD_DIR, "deploy", "rootfs")
    os.makedirs(cache, exist_ok=True)
    base = build_minbase(cache)

    # The instructions that shape the filesystem, and the files they copy from
    # the repository, make the key; COPY --from=build happens on every run.
    parts = [base.encode()]
    late_copies: List[Tuple[str, str]] = []
    for ins in stage.instructions:
        if ins.keyword == "COPY" and ins.flags.get("from"):
            if ins.flags["from"] != "build":
                raise AssertionError(f"Dockerfile:{ins.line}: COPY --from={ins.flags['from']}")
            src, dst = ins.args.split()
            if not src.startswith(BUILD_STAGE_PREFIX):
                raise AssertionError(
                    f"Dockerfile:{ins.line}: {src} is outside {BUILD_STAGE_PREFIX}")
            late_copies.append((os.path.join(BUILD_DIR, src[len(BUILD_STAGE_PREFIX):]), dst))
            continue
        if ins.keyword == "RUN" and late_copies:
            raise AssertionError(f"Dockerfile:{ins.line}: a RUN after COPY --from=build; "
                                 "rootfs_test caches everything before those copies")
        parts.append(ins.text().encode())
        if ins.keyword == "COPY":
            for src in ins.args.split()[:-1]:
                with open(os.path.join(ds.ROOT, src), "rb") as f:
                    parts.append(f.read())
    key = sha256(*parts)
    rootfs = os.path.join(cache, f"runtime-{key}")

    env: Dict[str, str] = {}
    user, workdir, entrypoint, exposed, stop_signal = "", "/", [], [], "SIGTERM"
    complete = os.path.exists(os.path.join(rootfs, ".complete"))
    if complete:
        log(f"reusing {rootfs}")
    else:
        for old in os.listdir(cache):  # earlier keys: free the disk
            if old.startswith("runtime-"):
                shutil.rmtree(os.path.join(cache, old), ignore_errors=True)
        partial = rootfs + ".partial"
        log(f"copying {base} to {partial}")
        run(["cp", "-a", base, partial])
        os.remove(os.path.join(partial, ".complete"))
    started = time.monotonic()
    target = rootfs if complete else rootfs + ".partial"
    for ins in stage.instructions:
        kw = ins.keyword
        if kw == "RUN":
            if not complete:
                log(f"RUN (Dockerfile:{ins.line}) {ins.args[:100]}")
                chroot_run(target, ins.args, env, user)
        elif kw == "COPY":
            if ins.flags.get("from"):
                continue
            *sources, dst = ins.args.split()
            if not complete:
                for src in sources:
                    to = os.path.join(target, dst.lstrip("/"))
                    if dst.endswith("/"):
                        os.makedirs(to, exist_ok=True)
                        to = os.path.join(to, os.path.basename(src))
                    os.makedirs(os.path.dirname(to), exist_ok=True)
                    shutil.copy2(os.path.join(ds.ROOT, src), to)
                    os.chown(to, 0, 0)
        elif kw == "ENV":
            env.update(ds.parse_env_instruction(ins.args))
        elif kw == "USER":
            user = ins.args
        elif kw == "WORKDIR":
            workdir = os.path.join(workdir, ins.args)
            if not complete:
                os.makedirs(os.path.join(target, workdir.lstrip("/")), exist_ok=True)
        elif kw == "EXPOSE":
            exposed += ins.args.split()
        elif kw == "STOPSIGNAL":
            stop_signal = ins.args
        elif kw == "ENTRYPOINT":
            entrypoint = ds.exec_form(ins.args)
        elif kw in ("LABEL", "CMD"):
            pass
        else:
            raise AssertionError(f"Dockerfile:{ins.line}: rootfs_test does not recreate {kw} "
                                 "instructions yet; teach it (recreate_runtime_stage)")
    if not complete:
        log(f"runtime stage recreated in {time.monotonic() - started:.0f} s")
        open(os.path.join(target, ".complete"), "w").close()
        os.rename(target, rootfs)
    for src, dst in late_copies:
        to = os.path.join(rootfs, dst.lstrip("/"))
        os.makedirs(os.path.dirname(to), exist_ok=True)
        shutil.copy2(src, to)
        os.chown(to, 0, 0)
        os.chmod(to, 0o755)
    return RuntimeImage(rootfs, env, user, workdir, entrypoint, exposed, stop_signal)


def load_health_module():
    """grpc.health.v1's messages, generated from grpc-proto's health.proto."""
    out = tempfile.mkdtemp(prefix="sb-health-")
    try:
        run(["protoc", f"-I{HEALTH_PROTO_ROOT}", f"--python_out={out}", HEALTH_PROTO])
        path = os.path.join(out, HEALTH_PROTO.replace(".proto", "_pb2.py"))
        # Loaded by path: its package name "grpc" would clash with grpcio's.
        spec = importlib.util.spec_from_file_location("sb_health_pb2", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        shutil.rmtree(out, ignore_errors=True)


class Broker:
    """The broker running in the recreated image, as a container would run it."""

    started = 0  # brokers started by this process: each gets its own port file

    def __init__(self, image: RuntimeImage, database_url: str, log_path: str) -> None:
        self.image = image
        uid, gid = image.uid_gid()
        if image.workdir != "/":
            raise AssertionError("rootfs_test runs the entrypoint in / (chroot); "
                                 f"the image's WORKDIR is {image.workdir}")
        Broker.started += 1
        self.port_file = f"/tmp/session-broker-ports-{os.getpid()}-{Broker.started}"
        env = {"PATH": DEFAULT_PATH, "HOME": "/nonexistent"}
        env.update(image.env)
        # The image's addresses with port 0: the kernel chooses, the broker
        # says which in its port file (inside the image).
        for name in ("BROKER_LISTEN_ADDR", "BROKER_METRICS_ADDR"):
            host, _ = ds.host_port(env[name])
            env[name] = f"{host}:0"
        env["BROKER_PORT_FILE"] = self.port_file
        # The drain's order and timing are tests/e2e's; here a stop only has
        # to end cleanly, so it need not wait out the drain window.
        env["BROKER_DRAIN_SECONDS"] = "0"
        env["DATABASE_URL"] = database_url
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            ["chroot", f"--userspec={uid}:{gid}", image.rootfs, *image.entrypoint],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.grpc_address, self.metrics_address = self._wait_for_ports()

    def _wait_for_ports(self) -> Tuple[str, str]:
        path = self.image.path(self.port_file)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the broker exited with {self.process.returncode} "
                                     f"before listening:\n{self.log_text()}")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    lines = dict(line.strip().split("=", 1) for line in f if "=" in line)
                return lines["grpc"], lines["metrics"]
            time.sleep(0.05)
        raise AssertionError(f"no port file after 30 s:\n{self.log_text()}")

    def log_text(self) -> str:
        """What the broker logged so far."""
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-6000:]

    def loopback(self, address: str) -> str:
        """ADDRESS with a wildcard host replaced by 127.0.0.1."""
        host, port = ds.host_port(address)
        return f"127.0.0.1:{port}" if host in ("0.0.0.0", "::", "") else f"{host}:{port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> Optional[int]:
        """Sends SIG and waits; kills it if it does not exit. Its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self.log.close()
                return None
        self.log.close()
        return self.process.returncode


class RuntimeImageTest(unittest.TestCase):
    """The recreated runtime stage runs the broker, as the image would."""

    image: RuntimeImage
    broker: Broker
    health = None
    scratch = ""

    @classmethod
    def setUpClass(cls) -> None:
        started = time.monotonic()
        cls.image = recreate_runtime_stage()
        log(f"root filesystem ready in {time.monotonic() - started:.1f} s")
        cls.health = load_health_module()
        cls.scratch = tempfile.mkdtemp(prefix="sb-rootfs-test-")
        cls.broker = Broker(cls.image, os.environ["SB_TEST_DATABASE_URL"],
                            os.path.join(cls.scratch, "broker.log"))

    @classmethod
    def tearDownClass(cls) -> None:
        if getattr(cls, "broker", None):
            cls.broker.stop()
            port_file = cls.image.path(cls.broker.port_file)
            if os.path.exists(port_file):
                os.remove(port_file)
        shutil.rmtree(cls.scratch, ignore_errors=True)

    def check_health(self, service: str, timeout: float = 30) -> str:
        """grpc.health.v1.Health/Check(SERVICE) until SERVING or TIMEOUT; the last status."""
        import grpc  # python3-grpcio: imported here so a missing package names itself
        health = self.health
        status = "no answer"
        with grpc.insecure_channel(self.broker.loopback(self.broker.grpc_address)) as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health.HealthCheckRequest.SerializeToString,
                response_deserializer=health.HealthCheckResponse.FromString)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    reply = check(health.HealthCheckRequest(service=service), timeout=5)
                    status = health.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.RpcError as e:
                    status = f"{e.code().name}: {e.details()}"
                if status == "SERVING":
                    break
                time.sleep(0.2)
        return status

    def http_get(self, path: str) -> int:
        """The status of GET PATH on the broker's metrics/probe port."""
        url = f"http://{self.broker.loopback(self.broker.metrics_address)}{path}"
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    status = reply.status
            except urllib.error.HTTPError as e:
                status = e.code
            if status == 200:
                break
            time.sleep(0.2)
        return status

    def test_every_library_resolves_inside_the_image(self) -> None:
        out = run(["chroot", self.image.rootfs, "ldd", self.image.entrypoint[0]]).stdout
        self.assertNotIn("not found", out)
        self.assertIn("libpq.so", out)

    def test_broker_runs_as_the_images_non_root_user(self) -> None:
        uid, gid = self.image.uid_gid()
        self.assertNotEqual(uid, 0, "the image's USER is root")
        with open(f"/proc/{self.broker.process.pid}/status", encoding="utf-8") as f:
            fields = dict(line.split(":", 1) for line in f)
        self.assertEqual(fields["Uid"].split(), [str(uid)] * 4)
        self.assertEqual(fields["Gid"].split(), [str(gid)] * 4)

    def test_broker_answers_every_probe_of_the_deployment(self) -> None:
        deployment = ds.load_yaml(os.path.join(ds.K8S_BASE, "deployment.yaml"))
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        probes = {k: v for k, v in container.items() if k.endswith("Probe")}
        self.assertEqual(set(probes), {"startupProbe", "livenessProbe", "readinessProbe"})
        for kind, probe in sorted(probes.items()):
            with self.subTest(probe=kind):
                if "grpc" in probe:
                    service = probe["grpc"].get("service", "")
                    self.assertEqual(self.check_health(service), "SERVING",
                                     f"{kind} asks service {service!r}\n{self.broker.log_text()}")
                elif "httpGet" in probe:
                    # The HTTP probes live on the metrics port (manifests_test
                    # checks the number), served here at its kernel-chosen port.
                    metrics_port = ds.host_port(self.image.env["BROKER_METRICS_ADDR"])[1]
                    self.assertIn(probe["httpGet"]["port"], ("metrics", metrics_port))
                    self.assertEqual(self.http_get(probe["httpGet"]["path"]), 200)
                else:
                    self.fail(f"{kind}: only grpc and httpGet probes are checked here")

    def test_prestop_command_exists_in_the_image(self) -> None:
        deployment = ds.load_yaml(os.path.join(ds.K8S_BASE, "deployment.yaml"))
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertTrue(os.access(self.image.path(command[0]), os.X_OK),
                        f"{command[0]} is not in the image")

    def test_stop_signal_drains_and_exits_cleanly(self) -> None:
        # A second broker of its own, so the other tests keep theirs.
        broker = Broker(self.image, os.environ["SB_TEST_DATABASE_URL"],
                        os.path.join(self.scratch, "broker-stop.log"))
        sig = signal.Signals[self.image.stop_signal]
        code = broker.stop(sig)
        self.assertEqual(code, 0, broker.log_text())
        self.assertFalse(os.path.exists(self.image.path(broker.port_file)),
                         "the broker did not remove its port file on a clean shutdown")


def main() -> None:
    """Checks what the test needs, then runs it."""
    global BROKER, BUILD_DIR
    if len(sys.argv) < 3:
        sys.exit("usage: rootfs_test.py PATH_TO_SESSION_BROKER BUILD_DIR")
    BROKER = os.path.abspath(sys.argv.pop(1))
    BUILD_DIR = os.path.abspath(sys.argv.pop(1))
    if os.geteuid() != 0:
        sys.exit("rootfs_test: FAILED: this test needs root (debootstrap and chroot build and "
                 "enter the image's root filesystem); CI runs as root. Run it as root: "
                 "sudo ctest --test-dir build -L deploy")
    if not os.environ.get("SB_TEST_DATABASE_URL"):
        sys.exit("rootfs_test: FAILED: SB_TEST_DATABASE_URL is not set (./scripts/dev test sets "
                 "it; or: export SB_TEST_DATABASE_URL=$(scripts/pg start DIR))")
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
