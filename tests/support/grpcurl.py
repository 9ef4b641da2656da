#!/usr/bin/python3
"""A reflection-only grpcurl, for running the docs' grpcurl examples in CI.

grpcurl itself is not packaged by Debian. This tool takes grpcurl's command
line (the part the docs use) and, like grpcurl without -proto/-protoset,
learns every type from the server's reflection service alone: it asks
grpc.reflection.v1 first and falls back to v1alpha when the server does not
implement v1 (GRPCURL_REFLECTION=v1alpha forces the old protocol, so a test
can check that both are served).

    grpcurl.py [flags] ADDRESS list [SERVICE]
    grpcurl.py [flags] ADDRESS describe [SYMBOL]
    grpcurl.py [flags] ADDRESS SERVICE/METHOD

Flags (one or two dashes, "-flag value" or "-flag=value"): -plaintext,
-d DATA ("@" reads the messages from stdin as they arrive), -H 'key: value'
(repeatable), -max-time SECONDS, -emit-defaults, -v.

Output follows grpcurl: each response message as indented JSON with
lowerCamelCase names; an RPC error as "ERROR:\\n  Code: ...\\n  Message: ..."
on stderr and exit status 64 + the gRPC code; a usage or reflection error
exits 2 (grpcurl uses 1..3).

Test hook, not in grpcurl: GRPCURL_STOP_AFTER=N ends a call after N
responses (cancelling it) and exits 0, so an example that streams forever
(Health/Watch, WatchPoolStatus) can run in a test.

The reflection stubs are generated at start with protoc from the official
protos of Debian's grpc-proto (/usr/share/grpc-proto, or GRPC_PROTO_DIR)
into a temporary directory. Single-threaded apart from gRPC's own threads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Iterator, List, Optional, Sequence, Tuple

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import (Descriptor, EnumDescriptor, FieldDescriptor,
                                        MethodDescriptor, ServiceDescriptor)

USAGE_EXIT = 2
RPC_ERROR_BASE = 64

GO_CODE_NAMES = {
    "CANCELLED": "Canceled",
}


def code_name(code: grpc.StatusCode) -> str:
    """grpcurl's (Go's) spelling of a status code: DEADLINE_EXCEEDED -> DeadlineExceeded."""
    name = code.name
    return GO_CODE_NAMES.get(name, "".join(p.capitalize() for p in name.split("_")))


class UsageError(Exception):
    """A bad command line, or a symbol reflection cannot resolve."""


@dataclass
class Options:
    """The parsed command line."""

    plaintext: bool = False
    data: Optional[str] = None
    headers: List[Tuple[str, str]] = field(default_factory=list)
    max_time: Optional[float] = None
    emit_defaults: bool = False
    verbose: bool = False
    address: str = ""
    verb: str = ""
    symbol: str = ""


def parse_args(argv: Sequence[str]) -> Options:
    """Parses grpcurl's syntax: flags first, then address and verb or method."""
    opts = Options()
    with_value = {"d", "H", "max-time", "connect-timeout", "format"}
    args = list(argv)
    positional: List[str] = []
    while args:
        arg = args.pop(0)
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name = arg.lstrip("-")
        value: Optional[str] = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in with_value and value is None:
            if not args:
                raise UsageError(f"flag -{name} needs a value")
            value = args.pop(0)
        if name == "plaintext":
            opts.plaintext = True
        elif name == "d":
            opts.data = value
        elif name == "H":
            key, sep, val = (value or "").partition(":")
            if not sep:
                raise UsageError(f"-H wants 'key: value', got {value!r}")
            opts.headers.append((key.strip().lower(), val.strip()))
        elif name == "max-time":
            opts.max_time = float(value or "0")
        elif name == "emit-defaults":
            opts.emit_defaults = True
        elif name == "v":
            opts.verbose = True
        elif name in ("connect-timeout", "format"):
            if name == "format" and value != "json":
                raise UsageError("only -format json is supported")
        else:
            raise UsageError(f"unknown flag -{name} (this tool knows: -plaintext -d -H "
                             "-max-time -emit-defaults -v)")
    if not positional:
        raise UsageError("no address given")
    opts.address = positional.pop(0)
    if not positional:
        raise UsageError("give list, describe or SERVICE/METHOD after the address")
    if positional[0] in ("list", "describe"):
        opts.verb = positional.pop(0)
    else:
        opts.verb = "invoke"
    if positional:
        opts.symbol = positional.pop(0)
    if positional:
        raise UsageError(f"too many arguments: {' '.join(positional)}")
    if opts.verb == "invoke" and not opts.symbol:
        raise UsageError("no method given")
    return opts


def load_reflection_stubs(work_dir: str) -> dict:
    """protoc --python_out for both reflection versions; returns version -> module."""
    proto_dir = os.environ.get("GRPC_PROTO_DIR", "/usr/share/grpc-proto")
    files = {v: f"grpc/reflection/{v}/reflection.proto" for v in ("v1", "v1alpha")}
    missing = [f for f in files.values() if not os.path.exists(os.path.join(proto_dir, f))]
    if missing:
        raise UsageError(f"{missing[0]} not found under {proto_dir}: install grpc-proto")
    subprocess.run(["protoc", f"--proto_path={proto_dir}", f"--python_out={work_dir}",
                    *files.values()], check=True)
    modules = {}
    for version, proto in files.items():
        path = os.path.join(work_dir, proto.replace(".proto", "_pb2.py"))
        # Loaded under a name of its own: "grpc.reflection..." is grpcio's package.
        spec = importlib.util.spec_from_file_location(f"_sb_reflection_{version}_pb2", path)
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[version] = module
    return modules


class Reflection:
    """Resolves services and types through the server's reflection service."""

    def __init__(self, channel: grpc.Channel, stubs: dict, metadata: list) -> None:
        self._channel = channel
        self._stubs = stubs
        self._metadata = metadata
        forced = os.environ.get("GRPCURL_REFLECTION")
        self._versions = [forced] if forced else ["v1", "v1alpha"]
        self._files: dict = {}
        self.pool = descriptor_pool.DescriptorPool()

    def _ask(self, **request_fields):
        """One request on a ServerReflectionInfo stream, in the first version served."""
        last_error: Optional[grpc.RpcError] = None
        for version in list(self._versions):
            module = self._stubs[version]
            call = self._channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=module.ServerReflectionRequest.SerializeToString,
                response_deserializer=module.ServerReflectionResponse.FromString)
            request = module.ServerReflectionRequest(**request_fields)
            try:
                responses = list(call(iter([request]), metadata=self._metadata, timeout=30))
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED and len(self._versions) > 1:
                    self._versions.remove(version)
                    last_error = error
                    continue
                raise
            self._versions = [version]
            response = responses[0]
            if response.HasField("error_response"):
                raise UsageError(f"server reflection: {response.error_response.error_message}")
            return response
        raise last_error  # type: ignore[misc]

    def list_services(self) -> List[str]:
        """The services the server says it serves."""
        response = self._ask(list_services="")
        return sorted(s.name for s in response.list_services_response.service)

    def _add_files(self, response) -> None:
        """Adds the files of a response to the pool, each after its imports."""
        new = {}
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if proto.name not in self._files:
                new[proto.name] = proto

        def add(name: str) -> None:
            if name in self._files or name not in new:
                return
            for dependency in new[name].dependency:
                add(dependency)
            self._files[name] = new[name]
            self.pool.Add(new[name])

        for name in new:
            add(name)

    def load_symbol(self, symbol: str) -> None:
        """Fetches the file defining `symbol`, with its dependencies."""
        self._add_files(self._ask(file_containing_symbol=symbol))

    def find(self, symbol: str):
        """The descriptor of a service, method, message, enum or field."""
        symbol = symbol.lstrip(".")
        candidates = [symbol]
        if "/" in symbol:
            candidates = [symbol.replace("/", ".")]
        for name in candidates:
            try:
                self.load_symbol(name)
            except UsageError:
                parent = name.rsplit(".", 1)[0]
                self.load_symbol(parent)
            for finder in (self.pool.FindServiceByName, self.pool.FindMessageTypeByName,
                           self.pool.FindEnumTypeByName):
                try:
                    return finder(name)
                except KeyError:
                    pass
            parent, _, member = name.rpartition(".")
            try:
                return self.pool.FindServiceByName(parent).FindMethodByName(member)
            except KeyError:
                pass
            try:
                return self.pool.FindMessageTypeByName(parent).fields_by_name[member]
            except KeyError:
                pass
        raise UsageError(f"symbol not found: {symbol}")


# ---- describe: descriptors as .proto text ------------------------------------

SCALAR_NAMES = {
    FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64", FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32", FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32", FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64", FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
}


def type_name(f: FieldDescriptor) -> str:
    """A field's type as written in a .proto file."""
    if f.message_type is not None:
        return "." + f.message_type.full_name
    if f.enum_type is not None:
        return "." + f.enum_type.full_name
    return SCALAR_NAMES[f.type]


def field_text(f: FieldDescriptor) -> str:
    """One field declaration."""
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        key, value = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
        return f"map<{type_name(key)}, {type_name(value)}> {f.name} = {f.number};"
    label = "repeated " if f.label == FieldDescriptor.LABEL_REPEATED else ""
    return f"{label}{type_name(f)} {f.name} = {f.number};"


def enum_text(e: EnumDescriptor, indent: str = "") -> str:
    """An enum as .proto text."""
    lines = [f"{indent}enum {e.name} {{"]
    lines += [f"{indent}  {v.name} = {v.number};" for v in e.values]
    return "\n".join(lines + [f"{indent}}}"])


def message_text(m: Descriptor, indent: str = "") -> str:
    """A message (with nested types, oneofs, maps) as .proto text."""
    lines = [f"{indent}message {m.name} {{"]
    inner = indent + "  "
    for nested in m.nested_types:
        if not nested.GetOptions().map_entry:
            lines.append(message_text(nested, inner))
    for nested_enum in m.enum_types:
        lines.append(enum_text(nested_enum, inner))
    in_oneof = set()
    for oneof in m.oneofs:
        if len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name:
            continue  # a proto3 optional field
        lines.append(f"{inner}oneof {oneof.name} {{")
        lines += [f"{inner}  {field_text(f)}" for f in oneof.fields]
        lines.append(f"{inner}}}")
        in_oneof.update(f.name for f in oneof.fields)
    for f in m.fields:
        if f.name not in in_oneof:
            optional = "optional " if f.containing_oneof is not None else ""
            lines.append(f"{inner}{optional}{field_text(f)}")
    return "\n".join(lines + [f"{indent}}}"])


def method_text(method: MethodDescriptor, indent: str = "") -> str:
    """An rpc line."""
    client = "stream " if getattr(method, "client_streaming", False) else ""
    server = "stream " if getattr(method, "server_streaming", False) else ""
    return (f"{indent}rpc {method.name} ( {client}.{method.input_type.full_name} ) "
            f"returns ( {server}.{method.output_type.full_name} );")


def service_text(s: ServiceDescriptor) -> str:
    """A service as .proto text."""
    lines = [f"service {s.name} {{"] + [method_text(m, "  ") for m in s.methods]
    return "\n".join(lines + ["}"])


def describe(reflection: Reflection, symbol: str) -> str:
    """What grpcurl's describe prints for one symbol."""
    d = reflection.find(symbol)
    name = d.full_name
    if isinstance(d, ServiceDescriptor):
        return f"{name} is a service:\n{service_text(d)}"
    if isinstance(d, MethodDescriptor):
        return f"{name} is a method:\n{method_text(d)}"
    if isinstance(d, Descriptor):
        return f"{name} is a message:\n{message_text(d)}"
    if isinstance(d, EnumDescriptor):
        return f"{name} is an enum:\n{enum_text(d)}"
    return f"{name} is a field:\n{field_text(d)}"


# ---- invoke -------------------------------------------------------------------


def json_messages_from_text(text: str) -> Iterator[dict]:
    """The JSON objects in `text`, which holds zero or more separated by whitespace."""
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        value, pos = decoder.raw_decode(text, pos)
        yield value


def json_messages_from_stdin() -> Iterator[dict]:
    """JSON objects from stdin, each yielded as soon as it is complete (streams)."""
    decoder = json.JSONDecoder()
    buffer = ""
    fd = sys.stdin.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if chunk:
            buffer += chunk.decode()
        while True:
            stripped = buffer.lstrip()
            if not stripped:
                buffer = ""
                break
            try:
                value, end = decoder.raw_decode(stripped)
            except json.JSONDecodeError:
                if not chunk:
                    raise UsageError(f"incomplete JSON on stdin: {stripped[:80]!r}")
                buffer = stripped
                break
            buffer = stripped[end:]
            yield value
        if not chunk:
            return


def to_json(message, emit_defaults: bool) -> str:
    """A response as grpcurl prints it.

    google.protobuf.Any fields (an RpcStatus's SqlErrorDetail in a Pipeline
    result) are resolved in the reflection pool the message came from, as
    grpcurl resolves them through reflection.
    """
    return json_format.MessageToJson(message, including_default_value_fields=emit_defaults,
                                     indent=2, descriptor_pool=message.DESCRIPTOR.file.pool)


def print_metadata(title: str, metadata) -> None:
    """-v: headers or trailers."""
    print(f"\n{title}:", file=sys.stderr)
    for key, value in metadata or ():
        print(f"{key}: {value}", file=sys.stderr)


def invoke(channel: grpc.Channel, reflection: Reflection, opts: Options) -> int:
    """Calls SERVICE/METHOD; prints the responses; returns the exit status."""
    method = reflection.find(opts.symbol)
    if not isinstance(method, MethodDescriptor):
        raise UsageError(f"{opts.symbol} is not a method")
    factory = message_factory.MessageFactory(reflection.pool)
    request_class = factory.GetPrototype(method.input_type)
    response_class = factory.GetPrototype(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    client_streaming = getattr(method, "client_streaming", False)
    server_streaming = getattr(method, "server_streaming", False)

    def parse(obj: dict):
        return json_format.ParseDict(obj, request_class())

    if opts.data == "@":
        requests: Iterator = (parse(o) for o in json_messages_from_stdin())
    elif opts.data is not None:
        requests = (parse(o) for o in json_messages_from_text(opts.data))
    else:
        requests = iter([request_class()])
    stop_after = int(os.environ.get("GRPCURL_STOP_AFTER", "0") or "0")
    kwargs = dict(request_serializer=request_class.SerializeToString,
                  response_deserializer=response_class.FromString)
    call_args = dict(metadata=opts.headers or None, timeout=opts.max_time)
    try:
        if not client_streaming:
            items = list(requests)
            if len(items) != 1:
                raise UsageError(f"{path} takes exactly one request message, got {len(items)}")
            if not server_streaming:
                response, call = channel.unary_unary(path, **kwargs).with_call(items[0],
                                                                               **call_args)
                if opts.verbose:
                    print_metadata("Response headers received", call.initial_metadata())
                print(to_json(response, opts.emit_defaults), flush=True)
                if opts.verbose:
                    print_metadata("Response trailers received", call.trailing_metadata())
                return 0
            call = channel.unary_stream(path, **kwargs)(items[0], **call_args)
        elif not server_streaming:
            response, call = channel.stream_unary(path, **kwargs).with_call(requests, **call_args)
            print(to_json(response, opts.emit_defaults), flush=True)
            return 0
        else:
            call = channel.stream_stream(path, **kwargs)(requests, **call_args)
        received = 0
        for response in call:
            print(to_json(response, opts.emit_defaults), flush=True)
            received += 1
            if stop_after and received >= stop_after:
                call.cancel()
                return 0
        if opts.verbose:
            print_metadata("Response trailers received", call.trailing_metadata())
        return 0
    except grpc.RpcError as error:
        if stop_after and error.code() == grpc.StatusCode.CANCELLED:
            return 0
        print(f"ERROR:\n  Code: {code_name(error.code())}\n  Message: {error.details()}",
              file=sys.stderr)
        if opts.verbose:
            print_metadata("Response trailers received", error.trailing_metadata())
        return RPC_ERROR_BASE + error.code().value[0]


def run(argv: Sequence[str]) -> int:
    """The whole command; returns the exit status."""
    opts = parse_args(argv)
    if opts.plaintext:
        channel = grpc.insecure_channel(opts.address)
    else:
        channel = grpc.secure_channel(opts.address, grpc.ssl_channel_credentials())
    with tempfile.TemporaryDirectory(prefix="grpcurl-stubs-") as work_dir, channel:
        reflection = Reflection(channel, load_reflection_stubs(work_dir), opts.headers)
        if opts.verb == "list":
            if opts.symbol:
                service = reflection.find(opts.symbol)
                if not isinstance(service, ServiceDescriptor):
                    raise UsageError(f"{opts.symbol} is not a service")
                names = [m.full_name for m in service.methods]
            else:
                names = reflection.list_services()
            print("\n".join(names))
            return 0
        if opts.verb == "describe":
            symbols = [opts.symbol] if opts.symbol else reflection.list_services()
            print("\n\n".join(describe(reflection, s) for s in symbols))
            return 0
        return invoke(channel, reflection, opts)


def main() -> int:
    """Entry point: grpcurl's exit statuses."""
    try:
        return run(sys.argv[1:])
    except UsageError as error:
        print(f"Failed: {error}", file=sys.stderr)
        return USAGE_EXIT
    except grpc.RpcError as error:
        print(f"Failed to reach the server's reflection service: {code_name(error.code())}: "
              f"{error.details()}", file=sys.stderr)
        return USAGE_EXIT
    except (json.JSONDecodeError, json_format.ParseError) as error:
        print(f"Error invoking method: bad request JSON: {error}", file=sys.stderr)
        return USAGE_EXIT


if __name__ == "__main__":
    # A broken pipe (| head) or Ctrl-C ends quietly, as grpcurl does.
    threading.excepthook = lambda args: None
    sys.exit(main())
