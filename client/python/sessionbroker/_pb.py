"""The generated gRPC stubs, imported in one place.

They are generated from proto/ at build time (an installed package has them)
or, in the source tree, by ``sessionbroker._codegen.generate()`` (the tests
call it). Importing this module without them raises ImportError saying so.
Module objects only: thread-safe.
"""

try:
    from sessionbroker.v1 import broker_pb2, broker_pb2_grpc
except ImportError as e:  # pragma: no cover - the source tree before generation
    raise ImportError(
        "sessionbroker's gRPC stubs are missing: install the package "
        "(pip install --no-build-isolation ./client/python) or, in the source tree, run "
        "`/usr/bin/python3 client/python/sessionbroker/_codegen.py`") from e

__all__ = ["broker_pb2", "broker_pb2_grpc"]
