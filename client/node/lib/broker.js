'use strict';
// Broker: the client of one session broker, in node-postgres' shape.
//
// A Broker owns one gRPC channel, one KeepAlive stream (lib/keepalive.js)
// holding every session it opened, and the set of those sessions (so that
// close() ends them). broker.query() runs one statement in autocommit mode
// on any pooled connection; broker.session() leases a session for
// multi-statement transactions; broker.stream() reads a result of any size
// as a Readable of rows with back pressure (lib/stream.js); broker.listen()
// subscribes to LISTEN/NOTIFY channels (lib/listen.js); every query
// (one-shot or in a session) goes over the Broker's shared Pipeline stream
// (lib/pipeline.js) unless `pipeline: false`, with unary Execute as the
// fallback;
// broker.transaction(fn) runs fn in a
// session's transaction and runs it again when it failed in a way a retry
// can fix (serialization failure, deadlock, ABORTED). BeginSession (of
// session() and transaction()) is made again, with one request_id for all
// attempts, when it fails UNAVAILABLE. Every call takes an
// AbortSignal (`signal`: the call is cancelled in the broker, and a running
// statement in PostgreSQL) and a deadline (`deadlineMs`, default the
// Broker's: the broker turns it into the statement's timeout).
//
// Node runs it on one thread: a Broker and its Sessions may be used by any
// number of concurrent async tasks; calls on one session run one at a time
// in the broker, in arrival order.

const {randomUUID} = require('node:crypto');
const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');
const {setTimeout: sleep} = require('node:timers/promises');
const {load} = require('./proto');
const {DatabaseError, fromServiceError} = require('./errors');
const {KeepAlive, Lease} = require('./keepalive');
const {toValue, decoder} = require('./types');
const {RowStream} = require('./stream');
const {Subscription} = require('./listen');
const {SharedPipeline} = require('./pipeline');

const DEFAULT_DEADLINE_MS = 60000;
const END_SESSION_DEADLINE_MS = 5000;
const MAX_MESSAGE_BYTES = 64 << 20;

// Attempts of BeginSession while it fails UNAVAILABLE (session(), and so
// transaction()): the connection broke under the call (a broker restart or
// rolling deploy, an idle connection a proxy or NAT closed just as the call
// went out), which the next attempt replaces. Every attempt carries the same
// request_id, so a broker that opened the session for an attempt whose
// answer was lost answers the retry with that session instead of leasing a
// second one (docs/retries.md). The Python and C++ clients do the same.
const BEGIN_SESSION_ATTEMPTS = 3;
const BEGIN_SESSION_BACKOFF_MS = 50;
// An attempt needs this much of the call's deadline left after its backoff;
// with less, the last UNAVAILABLE (which says what went wrong) is thrown
// rather than a DEADLINE_EXCEEDED from an attempt that had no chance.
const BEGIN_SESSION_MIN_ATTEMPT_MS = 250;

/**
 * Milliseconds to wait before BeginSession's next attempt, after attempt
 * number `attempt` (1-based) failed with `err` and `remainingMs` of the
 * call's deadline is left (null: no deadline); null: give up.
 */
function beginSessionRetryDelay(err, attempt, remainingMs) {
  if (!(err instanceof DatabaseError) || err.grpcCode !== grpc.status.UNAVAILABLE ||
      attempt >= BEGIN_SESSION_ATTEMPTS) {
    return null;
  }
  const delay = BEGIN_SESSION_BACKOFF_MS * 2 ** (attempt - 1);
  if (remainingMs !== null && remainingMs < delay + BEGIN_SESSION_MIN_ATTEMPT_MS) return null;
  return delay;
}

const ISOLATION = {
  'default': 'ISOLATION_LEVEL_UNSPECIFIED',
  'read committed': 'READ_COMMITTED',
  'repeatable read': 'REPEATABLE_READ',
  'serializable': 'SERIALIZABLE',
};

function isolationLevel(isolation) {
  if (isolation === undefined || isolation === null) return 'ISOLATION_LEVEL_UNSPECIFIED';
  const key = String(isolation).toLowerCase().replace(/_/g, ' ');
  const level = ISOLATION[key];
  if (!level) {
    throw new TypeError(`unknown isolation level ${JSON.stringify(isolation)}; use ` +
                        "'read committed', 'repeatable read' or 'serializable'");
  }
  return level;
}

function duration(ms) {
  const seconds = Math.floor(ms / 1000);
  return {seconds: String(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6)};
}

function abortReason(signal) {
  if (signal.reason !== undefined) return signal.reason;
  const e = new Error('This operation was aborted');
  e.name = 'AbortError';
  return e;
}

// node-postgres' rowCount: the command tag's count, null when it has none.
function rowCountOf(tag) {
  const last = tag.split(' ').pop();
  return /^\d+$/.test(last) ? Number(last) : null;
}

/** Normalizes node-postgres' call forms: (text, values, options) or ({text, values, ...}). */
function queryArgs(textOrConfig, values, options) {
  let config;
  if (typeof textOrConfig === 'string') {
    if (values !== undefined && values !== null && !Array.isArray(values)) {
      // query(text, options)
      config = {...values, text: textOrConfig};
    } else {
      config = {...(options || {}), text: textOrConfig, values: values || []};
    }
  } else if (textOrConfig && typeof textOrConfig.text === 'string') {
    config = {...textOrConfig, ...(Array.isArray(values) ? {values} : values || {}),
      ...(options || {})};
  } else {
    throw new TypeError('query(text, values, options): text must be a string of SQL');
  }
  if (config.values === undefined || config.values === null) config.values = [];
  if (!Array.isArray(config.values)) throw new TypeError('query values must be an array');
  if (config.rowMode !== undefined && config.rowMode !== 'array') {
    throw new TypeError(`rowMode must be 'array' or absent, not ${String(config.rowMode)}`);
  }
  return config;
}

/**
 * The channel's credentials: options.credentials as given, or TLS from the
 * PEM files of options.tls ({ca, cert, key}: the CA bundle the broker's
 * certificate must chain to, default the system's roots; a client
 * certificate and its key for mutual TLS, both or neither), or insecure.
 */
function channelCredentials(options) {
  if (options.tls && options.credentials) {
    throw new TypeError('new Broker(): give either credentials or tls, not both');
  }
  if (!options.tls) return options.credentials || grpc.credentials.createInsecure();
  const {ca, cert, key} = options.tls === true ? {} : options.tls;
  if (Boolean(cert) !== Boolean(key)) {
    throw new TypeError('new Broker({tls}): tls.cert and tls.key go together');
  }
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(ca), read(key), read(cert));
}

class Broker {
  constructor(options = {}) {
    const target = options.target || process.env.SESSIONBROKER_TARGET;
    if (!target) throw new TypeError('new Broker({target}): the broker\'s address is required');
    this.target = target;
    this.clientId = options.clientId || '';
    this.deadlineMs = options.deadlineMs === undefined ? DEFAULT_DEADLINE_MS : options.deadlineMs;
    this._int8 = options.int8 || 'bigint';
    decoder('int8', {int8: this._int8}); // validates the option now
    const {SessionBroker} = load();
    this._client = new SessionBroker(target, channelCredentials(options), {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      ...(options.channelOptions || {}),
    });
    this._metadata = new grpc.Metadata();
    // The bearer token of the broker's clients file, on every call (KeepAlive
    // too); never kept on the object where it could be logged.
    const token = options.token || process.env.SB_TOKEN || '';
    if (token) this._metadata.set('authorization', `Bearer ${token}`);
    if (this.clientId) this._metadata.set('x-client-id', this.clientId);
    this._keepAlive = new KeepAlive(() => this._client.KeepAlive(this._metadata.clone()));
    this._sessions = new Set();
    // Open streams and subscriptions, cancelled by close().
    this._streams = new Set();
    // Every Execute (query(), a session's and a transaction's queries) goes
    // over one shared Pipeline stream (lib/pipeline.js) unless switched off.
    this._pipeline = options.pipeline === false ? null : new SharedPipeline(
      () => this._client.Pipeline(this._metadata.clone()),
      (request, callOptions) => this._unary('Execute', request, callOptions));
    this._closed = false;
  }

  /** Runs one statement in autocommit mode. */
  query(textOrConfig, values, options) {
    return this._execute('', textOrConfig, values, options);
  }

  /**
   * Runs one statement in autocommit mode and streams its rows
   * (StreamExecute): a Readable in object mode (lib/stream.js). No deadline
   * unless options.deadlineMs sets one: a stream lasts as long as it is read.
   */
  stream(textOrConfig, values, options) {
    return this._stream('', textOrConfig, values, options);
  }

  /**
   * Subscribes to LISTEN/NOTIFY channels (a name or an array of 1 to 64,
   * used exactly as given: 'Orders' needs NOTIFY "Orders"); resolves with a
   * Subscription (lib/listen.js) once the broker listens on all of them.
   */
  async listen(channels, options = {}) {
    if (this._closed) throw new Error('the Broker is closed');
    const names = typeof channels === 'string' ? [channels] : [...(channels || [])];
    const signal = options.signal;
    if (signal && signal.aborted) throw abortReason(signal);
    const call = this._client.Listen({channels: names}, this._metadata.clone(),
      this._streamCallOptions(options));
    const subscription = new Subscription(call);
    this._streams.add(subscription);
    subscription.once('end', () => this._streams.delete(subscription));
    if (signal) {
      const onAbort = () => subscription.close();
      signal.addEventListener('abort', onAbort, {once: true});
      subscription.once('end', () => signal.removeEventListener('abort', onAbort));
    }
    try {
      return await subscription._start();
    } catch (err) {
      if (signal && signal.aborted) throw abortReason(signal);
      throw err;
    }
  }

  /**
   * Leases a session (docs/sessions.md), held by this Broker's KeepAlive
   * stream until session.end() (keepAlive: false leaves it to its ttl).
   * BeginSession carries options.requestId, or a random UUID, and is made
   * again with it when it fails UNAVAILABLE (_beginSession).
   */
  async session(options = {}) {
    const request = {
      read_only: Boolean(options.readOnly),
      isolation: isolationLevel(options.isolation),
      settings: {...(options.settings || {})},
      label: options.label || '',
      request_id: options.requestId || randomUUID(),
    };
    if (options.ttlMs !== undefined) request.ttl = duration(options.ttlMs);
    const response = await this._beginSession(request, options);
    const session = new Session(this, response.name, options.keepAlive !== false);
    this._sessions.add(session);
    if (session._held) this._keepAlive.hold(session._lease);
    return session;
  }

  /**
   * Runs fn(tx) in a transaction of a new session and commits it; runs it
   * again from its start (in a new transaction) when it failed with an
   * error a retry can fix (DatabaseError.retryable), at most maxAttempts
   * times in all, with a growing, jittered pause between attempts. Any
   * other error rolls back and is thrown. The session ends in every case.
   */
  async transaction(fn, options = {}) {
    const maxAttempts = options.maxAttempts === undefined ? 5 : options.maxAttempts;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
      throw new TypeError('maxAttempts must be a positive integer');
    }
    const callOptions = {signal: options.signal, deadlineMs: options.deadlineMs};
    const session = await this.session({...options, isolation: undefined, readOnly: undefined,
      ...callOptions});
    try {
      for (let attempt = 1; ; attempt++) {
        await session.begin({isolation: options.isolation, readOnly: options.readOnly,
          deferrable: options.deferrable, ...callOptions});
        try {
          const result = await fn(new Transaction(session, attempt, callOptions));
          await session.commit(callOptions);
          return result;
        } catch (err) {
          // Acknowledges a transaction the broker rolled back (it must be,
          // before the next BeginTransaction), or rolls back ours.
          await session.rollback({deadlineMs: END_SESSION_DEADLINE_MS}).catch(() => {});
          const retry = err instanceof DatabaseError && err.retryable &&
            attempt < maxAttempts && !(options.signal && options.signal.aborted);
          if (!retry) throw err;
          const ceiling = Math.min(1000, 20 * 2 ** (attempt - 1));
          await sleep(ceiling / 2 + Math.random() * ceiling / 2, undefined,
                      options.signal ? {signal: options.signal} : undefined);
        }
      }
    } finally {
      await session.end().catch(() => {});
    }
  }

  /**
   * Ends every session this Broker opened (rolling back their open
   * transactions), closes the KeepAlive stream and the channel. Later calls
   * fail; calls in flight finish.
   */
  async close() {
    if (this._closed) return;
    this._closed = true;
    for (const open of [...this._streams]) {
      if (open instanceof Subscription) open.close();
      else open.destroy();
    }
    if (this._pipeline) this._pipeline.close();
    const sessions = [...this._sessions];
    await Promise.allSettled(sessions.map((s) => s._end(true)));
    this._keepAlive.close();
    this._client.close();
  }

  get closed() {
    return this._closed;
  }

  // ---- internals ---------------------------------------------------------

  /**
   * BeginSession, made again while it fails UNAVAILABLE: at most
   * BEGIN_SESSION_ATTEMPTS in all, with one request (its request_id
   * included) and within one deadline, options.deadlineMs from now.
   */
  async _beginSession(request, options) {
    const deadlineMs = options.deadlineMs === undefined ? this.deadlineMs : options.deadlineMs;
    const deadline = deadlineMs !== null && Number.isFinite(deadlineMs) ?
      Date.now() + deadlineMs : null;
    const signal = options.signal;
    for (let attempt = 1; ; attempt++) {
      const remaining = deadline === null ? null : Math.max(deadline - Date.now(), 0);
      try {
        return await this._unary('BeginSession', request, {signal, deadlineMs: remaining});
      } catch (err) {
        const left = deadline === null ? null : deadline - Date.now();
        const delay = beginSessionRetryDelay(err, attempt, left);
        if (delay === null) throw err;
        try {
          await sleep(delay, undefined, signal ? {signal} : undefined);
        } catch (aborted) {
          throw signal && signal.aborted ? abortReason(signal) : aborted;
        }
      }
    }
  }

  _unary(method, request, options = {}, {allowClosed = false} = {}) {
    return new Promise((resolve, reject) => {
      if (this._closed && !allowClosed) {
        reject(new Error('the Broker is closed'));
        return;
      }
      const signal = options.signal;
      if (signal && signal.aborted) {
        reject(abortReason(signal));
        return;
      }
      const deadlineMs = options.deadlineMs === undefined ? this.deadlineMs : options.deadlineMs;
      const callOptions = {};
      if (deadlineMs !== null && Number.isFinite(deadlineMs)) {
        callOptions.deadline = new Date(Date.now() + deadlineMs);
      }
      let onAbort = null;
      const call = this._client[method](request, this._metadata.clone(), callOptions,
        (err, response) => {
          if (onAbort) signal.removeEventListener('abort', onAbort);
          if (!err) {
            resolve(response);
          } else if (signal && signal.aborted && err.code === grpc.status.CANCELLED) {
            reject(abortReason(signal));
          } else {
            reject(fromServiceError(err));
          }
        });
      if (signal) {
        onAbort = () => call.cancel();
        signal.addEventListener('abort', onAbort, {once: true});
      }
    });
  }

  async _execute(sessionName, textOrConfig, values, options) {
    const config = queryArgs(textOrConfig, values, options);
    const types = config.types || [];
    const params = config.values.map((v, i) => toValue(v, types[i]));
    const request = {sql: config.text, params, session: sessionName};
    let response;
    if (this._pipeline && this._pipeline.usable) {
      const signal = config.signal;
      if (signal && signal.aborted) throw abortReason(signal);
      let deadlineMs = config.deadlineMs === undefined ? this.deadlineMs : config.deadlineMs;
      if (deadlineMs === null || !Number.isFinite(deadlineMs)) deadlineMs = null;
      response = await this._pipeline.execute(request, deadlineMs, signal);
    } else {
      response = await this._unary('Execute', request, config);
    }
    return this._result(response, config.rowMode);
  }

  _streamCallOptions(options) {
    const callOptions = {};
    if (options.deadlineMs !== undefined && options.deadlineMs !== null &&
        Number.isFinite(options.deadlineMs)) {
      callOptions.deadline = new Date(Date.now() + options.deadlineMs);
    }
    return callOptions;
  }

  _stream(sessionName, textOrConfig, values, options) {
    const config = queryArgs(textOrConfig, values, options);
    const types = config.types || [];
    const params = config.values.map((v, i) => toValue(v, types[i]));
    const closed = this._closed;
    const stream = new RowStream(() => (closed ? null : this._client.StreamExecute(
      {sql: config.text, params, session: sessionName}, this._metadata.clone(),
      this._streamCallOptions(config))), {rowMode: config.rowMode, int8: this._int8, highWaterMark: config.highWaterMark,
      signal: config.signal});
    if (closed) {
      process.nextTick(() => stream.destroy(new Error('the Broker is closed')));
    } else {
      this._streams.add(stream);
      stream.once('close', () => this._streams.delete(stream));
    }
    return stream;
  }

  _result(response, rowMode) {
    const columns = response.columns || [];
    const fields = columns.map((c) => ({
      name: c.name,
      dataTypeID: c.type_oid || 0,
      dataTypeName: c.type_name || '',
    }));
    const decoders = fields.map((f) => decoder(f.dataTypeName, {int8: this._int8}));
    const rows = (response.rows || []).map((row) => {
      const cells = row.values || [];
      if (rowMode === 'array') return cells.map((v, i) => decoders[i](v));
      const out = {};
      for (let i = 0; i < cells.length; i++) out[fields[i].name] = decoders[i](cells[i]);
      return out;
    });
    const tag = response.command_tag || '';
    return {
      command: tag.split(' ')[0] || null,
      rowCount: rowCountOf(tag),
      rows,
      fields,
    };
  }
}

/** A leased session (Broker.session()): statements, transactions, end(). */
class Session {
  constructor(broker, name, held) {
    this._broker = broker;
    this.name = name;
    this._lease = new Lease(name);
    this._held = held;
    this._endedLocally = false;
  }

  /** Why the broker ended the session (reported on the KeepAlive stream), or null. */
  get ended() {
    if (this._lease.ended) return this._lease.ended;
    return this._endedLocally ? 'ended by this client' : null;
  }

  query(textOrConfig, values, options) {
    const gone = this._check();
    if (gone) return Promise.reject(gone);
    return this._broker._execute(this.name, textOrConfig, values, options);
  }

  /**
   * Streams one statement's rows in this session (inside its transaction if
   * one is open), as Broker.stream(). Read it to its end (or destroy it)
   * before the session's next call: the broker runs them one at a time.
   */
  stream(textOrConfig, values, options) {
    const gone = this._check();
    if (gone) {
      const failed = new RowStream(() => null, {int8: this._broker._int8});
      process.nextTick(() => failed.destroy(gone));
      return failed;
    }
    return this._broker._stream(this.name, textOrConfig, values, options);
  }

  /** The broker's view of the session now (GetSession). */
  async info(options = {}) {
    const gone = this._check();
    if (gone) throw gone;
    const s = await this._broker._unary('GetSession', {session: this.name}, options);
    const time = (t) => (t ? new Date(Number(t.seconds) * 1000 + Math.floor((t.nanos || 0) / 1e6)) :
      null);
    return {
      name: s.name,
      label: s.label || '',
      clientId: s.client_id || '',
      readOnly: Boolean(s.read_only),
      inTransaction: Boolean(s.in_transaction),
      transactionAborted: Boolean(s.transaction_aborted),
      abortReason: s.abort_reason || '',
      heldByStream: Boolean(s.held_by_stream),
      createTime: time(s.create_time),
      expireTime: time(s.expire_time),
      maxExpireTime: time(s.max_expire_time),
      settings: {...(s.settings || {})},
    };
  }

  /** BeginTransaction: the session's next statements run in one transaction. */
  async begin(options = {}) {
    const gone = this._check();
    if (gone) throw gone;
    await this._broker._unary('BeginTransaction', {
      session: this.name,
      isolation: isolationLevel(options.isolation),
      read_only: Boolean(options.readOnly),
      deferrable: Boolean(options.deferrable),
    }, options);
  }

  async commit(options = {}) {
    const gone = this._check();
    if (gone) throw gone;
    await this._broker._unary('Commit', {session: this.name}, options);
  }

  /** Rolls back (also acknowledges a transaction the broker rolled back); true if it did. */
  async rollback(options = {}) {
    const gone = this._check();
    if (gone) throw gone;
    const response = await this._broker._unary('Rollback', {session: this.name}, options);
    return Boolean(response.rolled_back);
  }

  /** Ends the session, rolling back an open transaction. Idempotent. */
  end() {
    return this._end(false);
  }

  async _end(closing) {
    if (this._endedLocally) return;
    this._endedLocally = true;
    this._broker._sessions.delete(this);
    if (this._held) this._broker._keepAlive.release(this._lease);
    if (this._lease.ended) return;
    try {
      await this._broker._unary('EndSession', {session: this.name},
        {deadlineMs: END_SESSION_DEADLINE_MS}, {allowClosed: closing});
    } catch (err) {
      // A session the broker already ended is ended.
      if (!(err instanceof DatabaseError) || (err.grpcCode !== grpc.status.NOT_FOUND &&
          err.grpcCode !== grpc.status.FAILED_PRECONDITION)) {
        throw err;
      }
    }
  }

  _check() {
    if (this._endedLocally) return new Error(`session ${this.name} has ended`);
    if (this._lease.ended) {
      return new DatabaseError(`the broker ended session ${this.name}: ${this._lease.ended}`, {
        grpcCode: grpc.status.FAILED_PRECONDITION,
      });
    }
    return null;
  }
}

/** What broker.transaction() passes to its function: query() in the transaction. */
class Transaction {
  constructor(session, attempt, callOptions) {
    this.session = session;
    /** 1 for the first run of the function, 2 for its first retry, ... */
    this.attempt = attempt;
    this._callOptions = callOptions;
  }

  query(textOrConfig, values, options) {
    const config = queryArgs(textOrConfig, values, options);
    if (config.signal === undefined) config.signal = this._callOptions.signal;
    if (config.deadlineMs === undefined) config.deadlineMs = this._callOptions.deadlineMs;
    return this.session.query(config);
  }

  stream(textOrConfig, values, options) {
    const config = queryArgs(textOrConfig, values, options);
    if (config.signal === undefined) config.signal = this._callOptions.signal;
    return this.session.stream(config);
  }
}

module.exports = {Broker, Session, Transaction};
