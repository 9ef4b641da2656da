'use strict';
// @sessionbroker/client: the Node.js client of the PostgreSQL session broker,
// in node-postgres' shape (docs/clients.md, "Node.js"). See lib/broker.js for
// the Broker and its sessions, lib/types.js for values, lib/errors.js for
// DatabaseError, lib/keepalive.js for the shared KeepAlive stream,
// lib/stream.js for streamed queries, lib/listen.js for LISTEN/NOTIFY,
// lib/pipeline.js for the shared Pipeline stream queries travel on.

const {status} = require('@grpc/grpc-js');
const {Broker, Session, Transaction} = require('./lib/broker');
const {DatabaseError} = require('./lib/errors');
const {RowStream} = require('./lib/stream');
const {Subscription} = require('./lib/listen');
const {typed, json, TypedValue, JsonValue} = require('./lib/types');
const {protoDir} = require('./lib/proto');

module.exports = {
  Broker,
  Session,
  Transaction,
  RowStream,
  Subscription,
  DatabaseError,
  typed,
  json,
  TypedValue,
  JsonValue,
  /** gRPC status codes (DatabaseError.grpcCode), as @grpc/grpc-js numbers them. */
  grpcStatus: status,
  /** Where the .proto files this package loads live. */
  protoDir,
};
