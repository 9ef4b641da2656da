#!/usr/bin/env python3
"""The gRPC service config the broker ships (proto/sessionbroker/v1/
service_config.json; docs/retries.md) is accepted by a real gRPC channel,
retries what it says it retries, and names only methods that exist.

* Every method it names is an rpc of that service in proto/ (or of
  grpc.health.v1), and none of them is one that needs a request_id to be
  retried safely (Execute, ExecuteBatch, BeginSession, BeginTransaction,
  Commit: those are retried by the caller, with the same id).
* A channel created with it (grpc.service_config, Debian's python3-grpcio)
  retries a method it names: an in-process server answers UNAVAILABLE twice,
  then OK, and the call succeeds after three attempts; a method it does not
  name fails at the first UNAVAILABLE.

Usage: service_config_test.py REPO_ROOT. Runs under unittest.
"""

import json
import os
import re
import sys
import threading
import unittest
from concurrent import futures
from typing import Dict, List, Set, Tuple

import grpc

ROOT = sys.argv.pop(1) if len(sys.argv) > 1 else os.getcwd()
CONFIG = os.path.join(ROOT, "proto", "sessionbroker", "v1", "service_config.json")
NEEDS_REQUEST_ID = {"Execute", "ExecuteBatch", "BeginSession", "BeginTransaction", "Commit"}
HEALTH = {"grpc.health.v1.Health": {"Check", "Watch"}}


def proto_methods() -> Dict[str, Set[str]]:
    """Fully qualified service name -> its rpc names, from proto/*.proto."""
    out: Dict[str, Set[str]] = dict(HEALTH)
    folder = os.path.join(ROOT, "proto", "sessionbroker", "v1")
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".proto"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            text = f.read()
        package = re.search(r"^package\s+([\w.]+);", text, re.M).group(1)
        for service, body in re.findall(r"^service\s+(\w+)\s*\{(.*?)^\}", text, re.M | re.S):
            out[f"{package}.{service}"] = set(re.findall(r"^\s*rpc\s+(\w+)\s*\(", body, re.M))
    return out


def configured() -> Tuple[dict, List[Tuple[str, str]]]:
    """The parsed config and every (service, method) its retry policies name."""
    with open(CONFIG, encoding="utf-8") as f:
        config = json.load(f)
    names = [(n["service"], n["method"]) for mc in config["methodConfig"] for n in mc["name"]
             if "retryPolicy" in mc]
    return config, names


class FlakyHandler(grpc.GenericRpcHandler):
    """Answers every unary call UNAVAILABLE `failures` times per method, then
    OK with an empty message; counts attempts per method."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: Dict[str, int] = {}
        self.lock = threading.Lock()

    def service(self, handler_call_details):
        method = handler_call_details.method

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self.lock:
                self.attempts[method] = self.attempts.get(method, 0) + 1
                attempt = self.attempts[method]
            if attempt <= self.failures:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unreachable")
            return b""

        return grpc.unary_unary_rpc_method_handler(answer)


class ServiceConfigTest(unittest.TestCase):
    def test_every_named_method_exists_and_none_needs_a_request_id(self) -> None:
        methods = proto_methods()
        _, names = configured()
        self.assertTrue(names)
        for service, method in names:
            self.assertIn(service, methods, f"{service} is not a service of proto/")
            self.assertIn(method, methods[service], f"{service}/{method} is not an rpc")
            if service == "sessionbroker.v1.SessionBroker":
                self.assertNotIn(method, NEEDS_REQUEST_ID,
                                 f"{method} is only safe to retry with a request_id")

    def test_a_channel_with_the_config_retries_the_named_methods_only(self) -> None:
        config, names = configured()
        handler = FlakyHandler(failures=2)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            options = [("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1)]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                for service, method in names:
                    call = channel.unary_unary(f"/{service}/{method}")
                    self.assertEqual(call(b"", timeout=30), b"", f"{service}/{method}")
                    self.assertEqual(handler.attempts[f"/{service}/{method}"], 3)
                unnamed = "/sessionbroker.v1.SessionBroker/Execute"
                with self.assertRaises(grpc.RpcError) as failed:
                    channel.unary_unary(unnamed)(b"", timeout=30)
                self.assertEqual(failed.exception.code(), grpc.StatusCode.UNAVAILABLE)
                self.assertEqual(handler.attempts[unnamed], 1)
        finally:
            server.stop(None)


if __name__ == "__main__":
    unittest.main()
