// Type declarations of @sessionbroker/client (hand-written; checked by
// test/package.test.js, which runs `tsc --noEmit` on test/types/usage.ts).

import type {ChannelCredentials, ChannelOptions, status} from '@grpc/grpc-js';
import {EventEmitter} from 'node:events';
import {Readable} from 'node:stream';

/** How int8 (bigint) columns come back: BigInt (default), decimal string, or number (lossy beyond 2^53). */
export type Int8Mode = 'bigint' | 'string' | 'number';

export type IsolationLevel =
  | 'read committed' | 'repeatable read' | 'serializable' | 'default'
  | 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE' | 'DEFAULT';

export interface BrokerOptions {
  /** host:port of the broker (default: $SESSIONBROKER_TARGET). */
  target?: string;
  /** Sent as x-client-id on every call (the broker's per-client quotas and views). */
  clientId?: string;
  /** Bearer token the broker's clients file knows this service by, sent as
   * `authorization: Bearer <token>` on every call; default `$SB_TOKEN`. */
  token?: string;
  /** Channel credentials (default: insecure). */
  credentials?: ChannelCredentials;
  /**
   * TLS from PEM files instead of credentials: true (the system's roots), or
   * the CA bundle the broker's certificate must chain to and, for mutual TLS,
   * a client certificate with its key (both or neither).
   */
  tls?: true | {ca?: string; cert?: string; key?: string};
  /** Deadline of every call in milliseconds (default 60000); null or Infinity: none. */
  deadlineMs?: number | null;
  int8?: Int8Mode;
  /** Extra @grpc/grpc-js channel options. */
  channelOptions?: ChannelOptions;
  /**
   * Route every query (broker.query(), a session's and a transaction's)
   * over one shared Pipeline stream, several calls per message (default
   * true); false: one unary Execute call each. Results and errors are the
   * same either way; a broker without Pipeline is served unary.
   */
  pipeline?: boolean;
}

export interface CallOptions {
  /** Cancels the call (and its statement in PostgreSQL); the promise rejects with signal.reason. */
  signal?: AbortSignal;
  /** This call's deadline in milliseconds; null or Infinity: none. */
  deadlineMs?: number | null;
}

export interface QueryOptions extends CallOptions {
  rowMode?: 'array';
  /** PostgreSQL type names by parameter position (Value.type); null/undefined: the value's own. */
  types?: ReadonlyArray<string | null | undefined>;
}

export interface QueryConfig<V extends unknown[] = unknown[]> extends QueryOptions {
  text: string;
  values?: V;
}

export interface QueryArrayConfig<V extends unknown[] = unknown[]> extends QueryConfig<V> {
  rowMode: 'array';
}

export interface FieldDef {
  name: string;
  /** pg_type.oid of the column's type. */
  dataTypeID: number;
  /** pg_type.typname, e.g. 'int4', '_text' for text[]. */
  dataTypeName: string;
}

export interface QueryResult<R = any> {
  /** The command tag's first word: 'SELECT', 'INSERT', 'CREATE', ... */
  command: string | null;
  /** The command tag's count; null for commands that report none. */
  rowCount: number | null;
  rows: R[];
  fields: FieldDef[];
}

export interface QueryArrayResult<R extends any[] = any[]> extends QueryResult<R> {}

export interface StreamOptions extends QueryOptions {
  /** Rows buffered before the call is paused (back pressure; default 100). */
  highWaterMark?: number;
}

export interface StreamConfig<V extends unknown[] = unknown[]> extends StreamOptions {
  text: string;
  values?: V;
}

/**
 * A streamed result (StreamExecute): a Readable of rows in object mode, also
 * an async iterable. 'fields' comes before the first row; after 'end',
 * command and rowCount are set; 'error' carries a DatabaseError.
 * destroy() cancels the statement in PostgreSQL.
 */
export class RowStream<R = any> extends Readable {
  private constructor();
  /** The columns, once 'fields' was emitted; null before. */
  readonly fields: FieldDef[] | null;
  /** After 'end': the command tag's first word. */
  readonly command: string | null;
  /** After 'end': the command tag's count. */
  readonly rowCount: number | null;
  [Symbol.asyncIterator](): AsyncIterableIterator<R>;
  on(event: 'fields', listener: (fields: FieldDef[]) => void): this;
  on(event: 'data', listener: (row: R) => void): this;
  on(event: 'error', listener: (err: DatabaseError | Error) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** A NOTIFY, as node-postgres' 'notification' event has it. */
export interface Notification {
  channel: string;
  /** '' when NOTIFY gave no payload. */
  payload: string;
  /** The backend pid of the session that sent the NOTIFY. */
  processId: number;
}

/** Notifications may have been missed before the next event. */
export interface NotificationGap {
  reason: 'reconnected' | 'overflow' | 'unspecified';
  /** overflow: how many of the oldest were dropped. */
  dropped: number;
  /** The broker's listener connection now in use. */
  listenerPid: number;
}

/**
 * A LISTEN subscription (Broker.listen). A broken stream emits 'error'
 * (then 'end') and is not reconnected: subscribe again.
 */
export class Subscription extends EventEmitter {
  private constructor();
  readonly channels: string[];
  readonly listenerPid: number;
  readonly ended: boolean;
  on(event: 'notification', listener: (msg: Notification) => void): this;
  on(event: 'gap', listener: (gap: NotificationGap) => void): this;
  on(event: 'error', listener: (err: DatabaseError) => void): this;
  on(event: 'end', listener: () => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  /** Stops listening; resolves once the stream has ended. */
  close(): Promise<void>;
}

/** Something that can stream a statement's rows: a Broker, a Session, a Transaction. */
export interface Streamable {
  stream<R = any, V extends unknown[] = unknown[]>(
    config: StreamConfig<V>, values?: V): RowStream<R>;
  stream<R = any, V extends unknown[] = unknown[]>(
    text: string, values?: V, options?: StreamOptions): RowStream<R>;
}

/** Something that can run statements: a Broker, a Session, a Transaction. */
export interface Queryable {
  query<R extends any[] = any[], V extends unknown[] = unknown[]>(
    config: QueryArrayConfig<V>, values?: V): Promise<QueryArrayResult<R>>;
  query<R = any, V extends unknown[] = unknown[]>(
    config: QueryConfig<V>, values?: V): Promise<QueryResult<R>>;
  query<R = any, V extends unknown[] = unknown[]>(
    text: string, values?: V, options?: QueryOptions): Promise<QueryResult<R>>;
}

export interface SessionOptions extends CallOptions {
  /** Lease length in milliseconds (default: the broker's BROKER_SESSION_DEFAULT_TTL). */
  ttlMs?: number;
  readOnly?: boolean;
  isolation?: IsolationLevel;
  /** PostgreSQL settings for every statement of the session (docs/sessions.md). */
  settings?: Record<string, string>;
  label?: string;
  /** Hold the session on the Broker's KeepAlive stream (default true). */
  keepAlive?: boolean;
  /**
   * BeginSession's request_id (docs/retries.md): at most 128 of A-Z a-z 0-9
   * - _ . : ~; default a random UUID. Every attempt of the call carries it
   * (BeginSession is made again, up to 3 attempts within the deadline, when
   * it fails UNAVAILABLE), and a call repeated with it, the same options and
   * clientId gets the same session, not a second one.
   */
  requestId?: string;
}

export interface BeginOptions extends CallOptions {
  isolation?: IsolationLevel;
  readOnly?: boolean;
  deferrable?: boolean;
}

export interface TransactionOptions extends SessionOptions {
  deferrable?: boolean;
  /** Runs of the function in all, the first included (default 5). */
  maxAttempts?: number;
}

export interface SessionInfo {
  name: string;
  label: string;
  clientId: string;
  readOnly: boolean;
  inTransaction: boolean;
  transactionAborted: boolean;
  abortReason: string;
  heldByStream: boolean;
  createTime: Date | null;
  expireTime: Date | null;
  maxExpireTime: Date | null;
  settings: Record<string, string>;
}

export class Session implements Queryable, Streamable {
  private constructor();
  readonly name: string;
  /** Why the session ended (the broker's reason, or 'ended by this client'), else null. */
  readonly ended: string | null;
  query<R extends any[] = any[], V extends unknown[] = unknown[]>(
    config: QueryArrayConfig<V>, values?: V): Promise<QueryArrayResult<R>>;
  query<R = any, V extends unknown[] = unknown[]>(
    config: QueryConfig<V>, values?: V): Promise<QueryResult<R>>;
  query<R = any, V extends unknown[] = unknown[]>(
    text: string, values?: V, options?: QueryOptions): Promise<QueryResult<R>>;
  stream<R = any, V extends unknown[] = unknown[]>(
    config: StreamConfig<V>, values?: V): RowStream<R>;
  stream<R = any, V extends unknown[] = unknown[]>(
    text: string, values?: V, options?: StreamOptions): RowStream<R>;
  info(options?: CallOptions): Promise<SessionInfo>;
  begin(options?: BeginOptions): Promise<void>;
  commit(options?: CallOptions): Promise<void>;
  /** True if a transaction was rolled back (false when none was open or the broker had). */
  rollback(options?: CallOptions): Promise<boolean>;
  /** Ends the session (rolling back an open transaction). Idempotent. */
  end(): Promise<void>;
}

export class Transaction implements Queryable, Streamable {
  private constructor();
  readonly session: Session;
  /** 1 for the first run of the function, 2 for its first retry, ... */
  readonly attempt: number;
  query<R extends any[] = any[], V extends unknown[] = unknown[]>(
    config: QueryArrayConfig<V>, values?: V): Promise<QueryArrayResult<R>>;
  query<R = any, V extends unknown[] = unknown[]>(
    config: QueryConfig<V>, values?: V): Promise<QueryResult<R>>;
  query<R = any, V extends unknown[] = unknown[]>(
    text: string, values?: V, options?: QueryOptions): Promise<QueryResult<R>>;
  stream<R = any, V extends unknown[] = unknown[]>(
    config: StreamConfig<V>, values?: V): RowStream<R>;
  stream<R = any, V extends unknown[] = unknown[]>(
    text: string, values?: V, options?: StreamOptions): RowStream<R>;
}

export class Broker implements Queryable, Streamable {
  constructor(options?: BrokerOptions);
  readonly target: string;
  readonly clientId: string;
  readonly deadlineMs: number | null;
  readonly closed: boolean;
  query<R extends any[] = any[], V extends unknown[] = unknown[]>(
    config: QueryArrayConfig<V>, values?: V): Promise<QueryArrayResult<R>>;
  query<R = any, V extends unknown[] = unknown[]>(
    config: QueryConfig<V>, values?: V): Promise<QueryResult<R>>;
  query<R = any, V extends unknown[] = unknown[]>(
    text: string, values?: V, options?: QueryOptions): Promise<QueryResult<R>>;
  stream<R = any, V extends unknown[] = unknown[]>(
    config: StreamConfig<V>, values?: V): RowStream<R>;
  stream<R = any, V extends unknown[] = unknown[]>(
    text: string, values?: V, options?: StreamOptions): RowStream<R>;
  /** Subscribes to LISTEN/NOTIFY channels; resolves once the broker listens. */
  listen(channels: string | string[], options?: CallOptions): Promise<Subscription>;
  session(options?: SessionOptions): Promise<Session>;
  transaction<T>(fn: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T>;
  close(): Promise<void>;
}

export class DatabaseError extends Error {
  constructor(message: string, fields?: Partial<DatabaseError>);
  /** SQLSTATE, e.g. '23505'; undefined for errors of the broker's own. */
  code: string | undefined;
  /** The call's gRPC status code (grpcStatus). */
  grpcCode: status | undefined;
  /** The broker's sessionbroker-reason token: 'SESSION_EXPIRED', 'TX_IDLE_TIMEOUT', ... */
  reason: string | undefined;
  severity: string | undefined;
  detail: string | undefined;
  hint: string | undefined;
  /** 1-based character position in the SQL, as a string (as node-postgres has it). */
  position: string | undefined;
  schema: string | undefined;
  table: string | undefined;
  column: string | undefined;
  dataType: string | undefined;
  constraint: string | undefined;
  /** In a batch: the 1-based index of the failing statement. */
  statementIndex: number | undefined;
  /** A retry of the whole transaction may succeed (what transaction() retries on). */
  readonly retryable: boolean;
}

export class TypedValue<T = unknown> {
  private constructor();
  readonly value: T;
  readonly type: string;
}

export class JsonValue<T = unknown> {
  private constructor();
  readonly value: T;
}

/** A parameter sent as the named PostgreSQL type: typed('a0ee...', 'uuid'). */
export function typed<T>(value: T, type: string): TypedValue<T>;
/** A parameter sent as a JSON document (jsonb), also an array or a scalar. */
export function json<T>(value: T): JsonValue<T>;

export const grpcStatus: typeof status;
/** The folder of the .proto files this package loads. */
export function protoDir(): string;
