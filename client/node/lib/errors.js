'use strict';
// Failed calls as DatabaseError, shaped like node-postgres' DatabaseError.
//
// `.code` is the SQLSTATE PostgreSQL reported (from the SqlErrorDetail in
// the grpc-status-details-bin trailer, else the `sqlstate` trailer); the
// other fields of PostgreSQL's error carry node-postgres' names (severity,
// detail, hint, position, schema, table, column, dataType, constraint), plus
// what the broker adds: `.grpcCode` (a number, grpc.status), `.reason` (the
// `sessionbroker-reason` trailer: SESSION_EXPIRED, TX_IDLE_TIMEOUT, ...),
// `.statementIndex` (a batch's failing statement) and `.retryable` (the
// rule transaction() retries by, docs/errors.md).
//
// Pure functions; errors are plain objects once built.

const {status} = require('@grpc/grpc-js');
const {load} = require('./proto');

const DETAIL_TYPE = 'sessionbroker.v1.SqlErrorDetail';

// sessionbroker-reason tokens after which the session itself is gone:
// retrying on it can never succeed (docs/sessions.md#errors).
const SESSION_GONE = new Set([
  'SESSION_NOT_FOUND', 'SESSION_EXPIRED', 'SESSION_ORPHANED', 'SESSION_MAX_LIFETIME',
  'SESSION_ENDED', 'BROKER_SHUTDOWN',
]);

class DatabaseError extends Error {
  constructor(message, fields = {}) {
    super(message);
    this.name = 'DatabaseError';
    /** SQLSTATE, e.g. '23505'; undefined for errors of the broker's own. */
    this.code = fields.code;
    /** The gRPC status code of the call (grpc.status.*). */
    this.grpcCode = fields.grpcCode;
    this.reason = fields.reason;
    this.severity = fields.severity;
    this.detail = fields.detail;
    this.hint = fields.hint;
    /** 1-based character position in the SQL, as a string (node-postgres does so). */
    this.position = fields.position;
    this.schema = fields.schema;
    this.table = fields.table;
    this.column = fields.column;
    this.dataType = fields.dataType;
    this.constraint = fields.constraint;
    this.statementIndex = fields.statementIndex;
  }

  /**
   * The transaction may succeed if run again from its start: a
   * serialization failure or deadlock (40001, 40P01), or ABORTED (the broker
   * rolled the transaction back: lock not available, idle or open too
   * long) while the session itself lives on. Not after a statement of the
   * transaction failed for its own reasons (TX_STATEMENT_FAILED).
   */
  get retryable() {
    if (this.code === '40001' || this.code === '40P01') return true;
    if (this.grpcCode !== status.ABORTED) return false;
    return this.reason !== 'TX_STATEMENT_FAILED' && !SESSION_GONE.has(this.reason);
  }
}

function first(metadata, key) {
  if (!metadata || typeof metadata.get !== 'function') return undefined;
  const values = metadata.get(key);
  return values.length > 0 ? values[0] : undefined;
}

function sqlErrorDetail(raw) {
  if (!Buffer.isBuffer(raw)) return null;
  try {
    const {RpcStatus, SqlErrorDetail} = load();
    const rpcStatus = RpcStatus.decode(raw);
    for (const any of rpcStatus.details || []) {
      if (String(any.type_url).split('/').pop() === DETAIL_TYPE) {
        return SqlErrorDetail.toObject(SqlErrorDetail.decode(any.value), {defaults: true});
      }
    }
  } catch (e) {
    // A malformed trailer must not hide the error itself.
  }
  return null;
}

function orUndefined(s) {
  return s === '' || s === null || s === undefined ? undefined : s;
}

/** The DatabaseError for a failed call (a grpc-js ServiceError). */
function fromServiceError(err) {
  const metadata = err.metadata;
  const detail = sqlErrorDetail(first(metadata, 'grpc-status-details-bin')) || {};
  const sqlstate = orUndefined(detail.sqlstate) || orUndefined(first(metadata, 'sqlstate'));
  const reason = orUndefined(first(metadata, 'sessionbroker-reason'));
  const message = err.details || err.message;
  const e = new DatabaseError(message, {
    code: typeof sqlstate === 'string' ? sqlstate : undefined,
    grpcCode: err.code,
    reason: typeof reason === 'string' ? reason : undefined,
    severity: orUndefined(detail.severity),
    detail: orUndefined(detail.detail),
    hint: orUndefined(detail.hint),
    position: detail.position ? String(detail.position) : undefined,
    schema: orUndefined(detail.schema_name),
    table: orUndefined(detail.table_name),
    column: orUndefined(detail.column_name),
    dataType: orUndefined(detail.data_type_name),
    constraint: orUndefined(detail.constraint_name),
    statementIndex: detail.statement_index || undefined,
  });
  e.cause = err;
  return e;
}

/**
 * A failed Pipeline result (PipelineResult with `status`, `sqlstate` and
 * `reason`) as the grpc-js ServiceError the unary call would have failed
 * with: the same code and message, and the trailers the broker would have
 * sent (sqlstate, sessionbroker-reason, grpc-status-details-bin holding the
 * status with its SqlErrorDetail). fromServiceError() maps it as it maps a
 * unary call's error, so both paths give the same DatabaseError.
 */
function serviceErrorOfPipelineStatus(result) {
  const rpcStatus = result.status || {};
  const code = Number(rpcStatus.code) || status.UNKNOWN;
  const message = rpcStatus.message || '';
  const {Metadata} = require('@grpc/grpc-js');
  const metadata = new Metadata();
  if (result.sqlstate) metadata.set('sqlstate', result.sqlstate);
  if (result.reason) metadata.set('sessionbroker-reason', result.reason);
  if ((rpcStatus.details || []).length > 0) {
    const {RpcStatus} = load();
    const encoded = RpcStatus.encode(RpcStatus.fromObject({
      code,
      message,
      details: rpcStatus.details.map((any) => ({type_url: any.type_url, value: any.value})),
    })).finish();
    metadata.set('grpc-status-details-bin', Buffer.from(encoded));
  }
  const err = new Error(`${code} ${status[code] || code}: ${message}`);
  err.code = code;
  err.details = message;
  err.metadata = metadata;
  return err;
}

module.exports = {DatabaseError, fromServiceError, serviceErrorOfPipelineStatus, SESSION_GONE};
