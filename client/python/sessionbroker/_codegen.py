"""Generates the gRPC stubs (``sessionbroker/v1/broker_pb2*.py``) from proto/.

Used by the setuptools build (setup.py's build_py hook) and by the tests for
the source tree; the generated files are never committed (.gitignore).

The generator is Debian's python3-grpc-tools (1.14.1, bundling protoc 3.5.1).
Its output uses protobuf's older descriptor API; it was checked to compile
broker.proto and to import under Debian's python3-protobuf 3.21 (Python
package 4.21) with both the C++ and the pure-Python implementation and with
warnings turned into errors. The files land in the ``sessionbroker.v1``
subpackage of this package because the generated code imports
``sessionbroker.v1.broker_pb2`` by the proto's own path.

Imports nothing from the rest of the package and no generated code, so it
runs before the stubs exist. Not thread-safe: one generation at a time.
"""

import os
import sys
import tempfile
from typing import Optional

PROTO_FILES = ("sessionbroker/v1/broker.proto",)
_HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(_HERE)  # client/python


def default_proto_dir() -> str:
    """The repository's proto/ folder (client/python/../../proto), or $SB_PROTO_DIR."""
    return os.environ.get("SB_PROTO_DIR") or os.path.normpath(
        os.path.join(PACKAGE_ROOT, "..", "..", "proto"))


def _up_to_date(out_dir: str, proto_dir: str) -> bool:
    if not os.path.exists(os.path.join(out_dir, "sessionbroker", "v1", "__init__.py")):
        return False
    for proto in PROTO_FILES:
        src = os.path.join(proto_dir, proto)
        stem = os.path.join(out_dir, proto[:-len(".proto")])
        for generated in (stem + "_pb2.py", stem + "_pb2_grpc.py"):
            if not os.path.exists(generated) or os.path.getmtime(generated) < os.path.getmtime(src):
                return False
    return True


def generate(out_dir: Optional[str] = None, proto_dir: Optional[str] = None,
             force: bool = False) -> str:
    """Writes the stubs under ``out_dir`` (default: this source tree).

    ``out_dir`` is the folder that holds the ``sessionbroker`` package; the
    stubs go to ``out_dir/sessionbroker/v1/``. Skips the work when they are
    newer than the .proto files unless ``force``. Returns the stubs' folder.
    Raises RuntimeError with protoc's message when generation fails.
    """
    out_dir = out_dir or PACKAGE_ROOT
    proto_dir = proto_dir or default_proto_dir()
    target = os.path.join(out_dir, "sessionbroker", "v1")
    if not os.path.isdir(proto_dir):
        raise RuntimeError(f"cannot generate the gRPC stubs: no proto folder at {proto_dir} "
                           "(set SB_PROTO_DIR to the repository's proto/)")
    if not force and _up_to_date(out_dir, proto_dir):
        return target
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as e:  # pragma: no cover - depends on the system
        raise RuntimeError("generating the gRPC stubs needs grpc_tools "
                           "(Debian package python3-grpc-tools)") from e
    # Generated into a scratch folder, then moved into place file by file
    # (os.replace is atomic): test programs running in parallel may generate
    # at the same time, and none may import a half-written file.
    os.makedirs(target, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".stubs-") as scratch:
        # The well-known types (any, duration, ...) ship with grpc_tools.
        well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
                f"--python_out={scratch}", f"--grpc_python_out={scratch}"]
        args += [os.path.join(proto_dir, p) for p in PROTO_FILES]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(PROTO_FILES)} (see its message above)")
        generated = os.path.join(scratch, "sessionbroker", "v1")
        with open(os.path.join(generated, "__init__.py"), "w", encoding="utf-8") as f:
            f.write('"""Generated gRPC stubs of sessionbroker.v1 (from proto/; never edited)."""\n')
        # __init__.py last: the stubs are complete once the package exists.
        names = sorted(os.listdir(generated), key=lambda n: n == "__init__.py")
        for name in names:
            os.replace(os.path.join(generated, name), os.path.join(target, name))
    return target


if __name__ == "__main__":
    print(generate(*(sys.argv[1:2] or [None]), force=True))
