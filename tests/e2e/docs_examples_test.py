#!/usr/bin/python3
"""Runs every grpcurl example of README.md and docs/*.md against a real broker.

A broken example fails CI. Each fenced ```sh (bash, shell) block that calls
grpcurl is an example. The blocks of one file run in order in one bash
process (so a block may use a variable an earlier one set, as a reader
would), with `grpcurl` on PATH being tests/support/grpcurl.py: reflection
only, no proto files, as grpcurl works. 127.0.0.1:50051 and 127.0.0.1:9464 in
the text become the test broker's addresses. Every grpcurl call must exit 0,
and every other command must succeed (an ERR trap reports any that fails).

Markers, in an HTML comment on the line(s) just before a block's fence
(invisible when the Markdown is rendered; several joined with ";"):

  <!-- example: stream N -->        streaming calls in the block end after N
                                    responses (Watch streams run forever)
  <!-- example: fails CODE -->      every grpcurl call in the block must fail
                                    with CODE (grpcurl's name: DeadlineExceeded)

and a hidden setup step, run at its place in the file's order:

  <!-- example-setup
  grpcurl -plaintext -d '{"sql": "CREATE TABLE ..."}' 127.0.0.1:50051 ...
  -->

The run uses a database of its own, created and dropped here, so examples
may create tables. Afterwards the same client, forced to reflection v1alpha,
must list and describe exactly what v1 did.

Usage: docs_examples_test.py BROKER_BINARY SOURCE_DIR (SB_TEST_DATABASE_URL
must name a PostgreSQL the test may create databases in; without it the test
fails).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

GRPC_CODES = {
    "OK": 0, "Canceled": 1, "Unknown": 2, "InvalidArgument": 3, "DeadlineExceeded": 4,
    "NotFound": 5, "AlreadyExists": 6, "PermissionDenied": 7, "ResourceExhausted": 8,
    "FailedPrecondition": 9, "Aborted": 10, "OutOfRange": 11, "Unimplemented": 12,
    "Internal": 13, "Unavailable": 14, "DataLoss": 15, "Unauthenticated": 16,
}
RPC_ERROR_BASE = 64  # grpcurl exits 64 + the code of a failed call
DOC_GRPC_ADDR = "127.0.0.1:50051"
DOC_METRICS_ADDR = "127.0.0.1:9464"
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*example:\s*(.*?)\s*-->\s*$")
SHELLS = {"sh", "bash", "shell"}
# A bound on a whole file's run, so a hung example fails with a report
# instead of hanging CI; not a measure of how long anything should take.
FILE_RUN_LIMIT_SECONDS = 300


class ExampleError(Exception):
    """An example that failed, or a marker that makes no sense."""


@dataclass
class Block:
    """One step of a file's run: an example block or a hidden setup step."""

    source: str  # "README.md:123"
    text: str
    is_example: bool
    stream: int = 0
    fails: str = ""


def parse_marker(text: str, where: str) -> Dict[str, str]:
    """`stream 1; fails DeadlineExceeded` -> {"stream": "1", "fails": ...}."""
    options = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, value = part.partition(" ")
        if key not in ("stream", "fails"):
            raise ExampleError(f"{where}: unknown example marker {key!r}")
        if key == "fails" and value not in GRPC_CODES:
            raise ExampleError(f"{where}: 'fails {value}' names no gRPC code")
        if key == "stream" and not value.isdigit():
            raise ExampleError(f"{where}: 'stream {value}' wants a number of responses")
        options[key] = value
    return options


def extract(path: Path, name: str) -> List[Block]:
    """The example blocks and setup steps of one Markdown file, in order."""
    lines = path.read_text().split("\n")
    blocks: List[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("<!-- example-setup"):
            start = i
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "-->":
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ExampleError(f"{name}:{start + 1}: example-setup has no closing -->")
            blocks.append(Block(f"{name}:{start + 1}", "\n".join(body), is_example=False))
            i += 1
            continue
        fence = FENCE.match(line)
        if not fence:
            i += 1
            continue
        start = i
        language = fence.group(1)
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        text = "\n".join(body)
        if language not in SHELLS or not re.search(r"(^|[\s($|])grpcurl\s", text):
            continue
        options: Dict[str, str] = {}
        j = start - 1
        while j >= 0 and MARKER.match(lines[j]):
            options.update(parse_marker(MARKER.match(lines[j]).group(1), f"{name}:{j + 1}"))
            j -= 1
        blocks.append(Block(f"{name}:{start + 1}", text, is_example=True,
                            stream=int(options.get("stream", "0")),
                            fails=options.get("fails", "")))
    return blocks


def database_url_for(base: str, dbname: str) -> str:
    """`base` (a URL or a key=value string) pointed at database `dbname`."""
    if base.startswith(("postgres://", "postgresql://")):
        parts = urllib.parse.urlsplit(base)
        return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))
    return f"{base} dbname={dbname}"


def psql(url: str, sql: str) -> None:
    """Runs one statement with psql, failing loudly."""
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                   check=True, stdout=subprocess.DEVNULL)


class Broker:
    """The broker binary on ports of its own choosing (BROKER_PORT_FILE)."""

    def __init__(self, binary: str, database_url: str, work: Path) -> None:
        self.port_file = work / "ports"
        self.log_path = work / "broker.log"
        env = dict(os.environ)
        env.update(DATABASE_URL=database_url, BROKER_LISTEN_ADDR="127.0.0.1:0",
                   BROKER_METRICS_ADDR="127.0.0.1:0", BROKER_PORT_FILE=str(self.port_file),
                   BROKER_ENV_FILE="", BROKER_HEALTH_CHECK_INTERVAL="0.2",
                   BROKER_DRAIN_SECONDS="0")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([binary], env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.ports: Dict[str, str] = {}
        for _ in range(600):
            if self.process.poll() is not None:
                raise ExampleError(f"the broker exited at start:\n{self.log_text()}")
            if self.port_file.exists():
                self.ports = dict(line.split("=", 1)
                                  for line in self.port_file.read_text().split())
                break
            time.sleep(0.05)
        else:
            raise ExampleError(f"the broker wrote no port file:\n{self.log_text()}")

    def log_text(self) -> str:
        """What the broker logged so far."""
        self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        """SIGTERM, then its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self.log.close()


def wrapper_script(tool: Path, log: Path) -> str:
    """The `grpcurl` put on PATH: runs the tool and records each call."""
    return f"""#!/bin/bash
args="$*"
args="${{args//$'\\n'/ }}"
args="${{args//$'\\t'/ }}"
printf 'start\\t%s\\t%s\\n' "$SB_EXAMPLE_BLOCK" "$args" >> {shlex.quote(str(log))}
/usr/bin/python3 {shlex.quote(str(tool))} "$@"
rc=$?
printf 'end\\t%s\\t%s\\t%s\\n' "$SB_EXAMPLE_BLOCK" "$rc" "$args" >> {shlex.quote(str(log))}
exit $rc
"""


def run_file(name: str, blocks: List[Block], env: Dict[str, str], work: Path,
             ports: Dict[str, str]) -> List[str]:
    """Runs one file's blocks in one bash; returns the failures found."""
    log = Path(env["SB_EXAMPLE_LOG"])
    log.write_text("")
    script = ["set -o pipefail",
              "trap '[[ -n $SB_EXAMPLE_EXPECT ]] || echo \"__SB_FAILED $SB_EXAMPLE_BLOCK: "
              "$BASH_COMMAND\" >&2' ERR"]
    for index, block in enumerate(blocks):
        text = block.text.replace(DOC_GRPC_ADDR, ports["grpc"])
        text = text.replace(DOC_METRICS_ADDR, ports.get("metrics", DOC_METRICS_ADDR))
        expect = block.fails or "''"
        stop_after = block.stream or "''"
        script.append(f"export SB_EXAMPLE_BLOCK={index} SB_EXAMPLE_EXPECT={expect} "
                      f"GRPCURL_STOP_AFTER={stop_after}")
        script.append(text)
    script.append("export SB_EXAMPLE_BLOCK=end SB_EXAMPLE_EXPECT=''")
    script.append("wait")
    try:
        result = subprocess.run(["bash", "--noprofile", "--norc", "-c", "\n".join(script)],
                                env=env, cwd=work, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=FILE_RUN_LIMIT_SECONDS)
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired as timeout:
        output = f"{timeout.stdout or ''}{timeout.stderr or ''}\n(the run did not end)"
    failures: List[str] = []
    started: Dict[str, List[str]] = {}
    ended: Dict[str, List[tuple]] = {}
    for line in log.read_text().splitlines():
        fields = line.split("\t")
        if fields[0] == "start":
            started.setdefault(fields[1], []).append(fields[2])
        else:
            ended.setdefault(fields[1], []).append((int(fields[2]), fields[3]))
    for index, block in enumerate(blocks):
        key = str(index)
        calls = ended.get(key, [])
        if len(calls) != len(started.get(key, [])):
            failures.append(f"{block.source}: a grpcurl call never ended")
        if block.is_example and not calls:
            failures.append(f"{block.source}: no grpcurl call ran (a shell error before it?)")
        for rc, args in calls:
            want = RPC_ERROR_BASE + GRPC_CODES[block.fails] if block.fails else 0
            if rc != want:
                failures.append(f"{block.source}: grpcurl {args}: exit {rc}, want {want}"
                                + (f" ({block.fails})" if block.fails else ""))
    for line in output.splitlines():
        match = re.match(r"__SB_FAILED (\S+): (.*)", line)
        if match:
            index = match.group(1)
            where = blocks[int(index)].source if index.isdigit() else index
            failures.append(f"{where}: command failed: {match.group(2)}")
        elif "command not found" in line or "syntax error" in line:
            failures.append(f"{name}: {line}")
    if failures:
        failures.append(f"--- output of {name} ---\n{output}")
    return failures


def check_reflection_versions(env: Dict[str, str], tool: Path, address: str) -> List[str]:
    """list and describe answer the same through reflection v1 and v1alpha."""
    failures = []
    outputs = {}
    for version in ("v1", "v1alpha"):
        version_env = dict(env, GRPCURL_REFLECTION=version)
        for verb in ("list", "describe"):
            result = subprocess.run(["/usr/bin/python3", str(tool), "-plaintext", address, verb],
                                    env=version_env, capture_output=True, text=True)
            if result.returncode != 0:
                failures.append(f"reflection {version} {verb}: {result.stderr}")
            outputs[(version, verb)] = result.stdout
    for verb in ("list", "describe"):
        if outputs[("v1", verb)] != outputs[("v1alpha", verb)]:
            failures.append(f"reflection v1 and v1alpha disagree on {verb}")
    for service in ("grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection", "sessionbroker.v1.SessionBroker",
                    "sessionbroker.v1.PoolMonitor"):
        if service not in outputs[("v1", "list")].split():
            failures.append(f"reflection does not list {service}")
    return failures


def main() -> int:
    """Runs every file's examples; prints what failed; exit 1 on any failure."""
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, source = os.path.abspath(sys.argv[1]), Path(sys.argv[2]).resolve()
    base_url = os.environ.get("SB_TEST_DATABASE_URL", "")
    if not base_url:
        print("SB_TEST_DATABASE_URL is not set: this test needs a PostgreSQL "
              "(./scripts/dev test sets it)", file=sys.stderr)
        return 1
    tool = source / "tests/support/grpcurl.py"
    files = [source / "README.md"] + sorted((source / "docs").glob("*.md"))
    plan = [(str(f.relative_to(source)), extract(f, str(f.relative_to(source)))) for f in files]
    plan = [(name, blocks) for name, blocks in plan if any(b.is_example for b in blocks)]
    dbname = f"sb_docs_examples_{os.getpid()}"
    psql(base_url, f"CREATE DATABASE {dbname}")
    failures: List[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="sb-docs-examples-") as tmp:
            work = Path(tmp)
            broker = Broker(binary, database_url_for(base_url, dbname), work)
            try:
                bin_dir = work / "bin"
                bin_dir.mkdir()
                wrapper = bin_dir / "grpcurl"
                wrapper.write_text(wrapper_script(tool, work / "calls.log"))
                wrapper.chmod(0o755)
                env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin')}",
                           SB_EXAMPLE_LOG=str(work / "calls.log"))
                ready = subprocess.run(
                    ["bash", "-c", "for i in $(seq 200); do grpcurl -plaintext -d "
                     "'{\"service\": \"sessionbroker.v1.SessionBroker\"}' \"$1\" "
                     "grpc.health.v1.Health/Check 2>/dev/null | grep -q '\"SERVING\"' && exit 0; "
                     "sleep 0.1; done; exit 1", "-", broker.ports["grpc"]],
                    env=dict(env, SB_EXAMPLE_BLOCK="ready", SB_EXAMPLE_LOG="/dev/null"),
                    capture_output=True)
                if ready.returncode != 0:
                    raise ExampleError(f"the broker never became ready:\n{broker.log_text()}")
                total = 0
                for name, blocks in plan:
                    examples = sum(b.is_example for b in blocks)
                    total += examples
                    file_failures = run_file(name, blocks, env, work, broker.ports)
                    print(f"{name}: {examples} example blocks, "
                          f"{'ok' if not file_failures else 'FAILED'}")
                    failures += file_failures
                failures += check_reflection_versions(env, tool, broker.ports["grpc"])
                print(f"{total} example blocks in {len(plan)} files")
            finally:
                code = broker.stop()
                if code != 0:
                    failures.append(f"the broker exited {code}:\n{broker.log_text()}")
    except ExampleError as error:
        failures.append(str(error))
    finally:
        psql(base_url, f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
