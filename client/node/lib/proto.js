'use strict';
// The broker's contract loaded at run time from its .proto files: the gRPC
// service (through @grpc/proto-loader) and the error messages read from the
// grpc-status-details-bin trailer (RpcStatus, SqlErrorDetail, through
// protobufjs, proto-loader's own parser).
//
// Where the .proto files come from: an installed package carries a copy in
// its proto/ folder (written by `npm pack`'s prepack step,
// scripts/copy-proto.js); in the repository's source tree, where that copy
// is not made, they are read from the repository's proto/ folder. Nothing
// generated is committed.
//
// Loaded once per process, on first use; the results are immutable.

const fs = require('node:fs');
const path = require('node:path');

const PROTO_FILE = 'sessionbroker/v1/broker.proto';
const CANDIDATES = [
  path.join(__dirname, '..', 'proto'), // inside the package (npm pack)
  path.join(__dirname, '..', '..', '..', 'proto'), // the repository's source tree
];

let loaded = null;

function protoDir() {
  for (const dir of CANDIDATES) {
    if (fs.existsSync(path.join(dir, PROTO_FILE))) return dir;
  }
  throw new Error(`@sessionbroker/client: ${PROTO_FILE} was found neither in the package ` +
                  `(${CANDIDATES[0]}) nor in the repository (${CANDIDATES[1]})`);
}

// The options both the service stubs and the error decoder use: field names
// as the .proto spells them, int64 as decimal strings (exact; converted by
// lib/types.js), enums as their names, the oneof case named in `kind`.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  arrays: true,
  oneofs: true,
};

function load() {
  if (loaded) return loaded;
  const grpc = require('@grpc/grpc-js');
  const protoLoader = require('@grpc/proto-loader');
  const protobuf = require('protobufjs');
  const dir = protoDir();
  const definition = protoLoader.loadSync(PROTO_FILE, {...LOADER_OPTIONS, includeDirs: [dir]});
  const pkg = grpc.loadPackageDefinition(definition);
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    // google/protobuf/*.proto come with protobufjs (its bundled well-known
    // types); everything else from the proto directory.
    if (target.startsWith('google/protobuf/')) return target;
    return path.join(dir, target);
  };
  root.loadSync(PROTO_FILE, {keepCase: true});
  loaded = Object.freeze({
    dir,
    SessionBroker: pkg.sessionbroker.v1.SessionBroker,
    RpcStatus: root.lookupType('sessionbroker.v1.RpcStatus'),
    SqlErrorDetail: root.lookupType('sessionbroker.v1.SqlErrorDetail'),
  });
  return loaded;
}

module.exports = {load, protoDir, LOADER_OPTIONS};
