'use strict';
// The shared Pipeline stream (lib/pipeline.js) against a live broker: calls
// are multiplexed over it with the unary calls' results and errors,
// deadlines and aborts cancel by id, the advertised limits queue calls
// locally, a broken stream fails what it carried as a lost unary call and
// leaves new calls to the unary path, a drained stream (result reason or
// stream trailer DRAINING) hands its calls that never ran to the unary path,
// a broker without Pipeline is served unary, and `pipeline: false` never
// opens the stream.
//
// Which RPCs a Broker made is observed with a grpc-js client interceptor
// (channelOptions.interceptors): the broker exports no per-method counters.

const assert = require('node:assert/strict');
const {spawn} = require('node:child_process');
const path = require('node:path');
const {after, before, test} = require('node:test');
const grpc = require('@grpc/grpc-js');
const {Broker, DatabaseError, grpcStatus} = require('..');
const {load} = require('../lib/proto');
const {startBroker, tableName, waitUntil} = require('../test-support/broker-process');

let broker;
let db;

before(async () => {
  broker = await startBroker();
  db = new Broker({target: broker.target, clientId: 'node-pipeline'});
});

after(async () => {
  if (db) await db.close();
  if (broker) await broker.stop();
});

/** Counts the RPCs started on a channel by method name ('Execute', 'Pipeline', ...). */
function methodCounter() {
  const counts = {};
  const interceptor = (options, nextCall) => {
    const method = options.method_definition.path.split('/').pop();
    counts[method] = (counts[method] || 0) + 1;
    return new grpc.InterceptingCall(nextCall(options));
  };
  return {counts, channelOptions: {interceptors: [interceptor]}};
}

// Backends running a statement that contains `marker`, seen from another connection.
async function running(marker) {
  const {rows} = await db.query(
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = \'active\' ' +
    'AND pid <> pg_backend_pid() AND position($1 in query) > 0', [marker]);
  return rows[0].n;
}

// The fields a caller can observe on a DatabaseError.
function observable(e) {
  assert.ok(e instanceof DatabaseError, `not a DatabaseError: ${e}`);
  const {name, message, code, grpcCode, reason, severity, detail, hint, position, schema, table,
    column, dataType, constraint, statementIndex, retryable} = e;
  return {name, message, code, grpcCode, reason, severity, detail, hint, position, schema, table,
    column, dataType, constraint, statementIndex, retryable};
}

test('200 concurrent queries are answered correctly over one Pipeline stream, no unary call',
  async () => {
    const {counts, channelOptions} = methodCounter();
    const piped = new Broker({target: broker.target, channelOptions});
    try {
      const results = await Promise.all(Array.from({length: 200}, (_, i) =>
        piped.query('SELECT $1::int8 * 2 AS twice, $2::text AS label', [i, `call ${i}`])));
      results.forEach((r, i) => {
        assert.deepEqual(r.rows, [{twice: BigInt(2 * i), label: `call ${i}`}]);
        assert.equal(r.command, 'SELECT');
        assert.equal(r.rowCount, 1);
      });
      assert.equal(counts.Execute, undefined);
      assert.equal(counts.Pipeline, 1);
    } finally {
      await piped.close();
    }
  });

test('queries issued in the same turn go out together: one call until the broker\'s limits ' +
     'arrive, then the other 99 in one message', async () => {
  const sent = [];
  const interceptor = (options, nextCall) => new grpc.InterceptingCall(nextCall(options), {
    sendMessage(message, next) {
      if (options.method_definition.path.endsWith('/Pipeline')) sent.push(message.calls.length);
      next(message);
    },
  });
  const piped = new Broker({target: broker.target, channelOptions: {interceptors: [interceptor]}});
  try {
    const results = await Promise.all(Array.from({length: 100}, (_, i) =>
      piped.query('SELECT $1::int4 AS n', [i])));
    assert.deepEqual(results.map((r) => r.rows[0].n), Array.from({length: 100}, (_, i) => i));
    assert.deepEqual(sent, [1, 99]);
  } finally {
    await piped.close();
  }
});

test('with pipeline: false every query is a unary Execute and no stream opens', async () => {
  const {counts, channelOptions} = methodCounter();
  const unary = new Broker({target: broker.target, pipeline: false, channelOptions});
  try {
    const results = await Promise.all(Array.from({length: 20}, (_, i) =>
      unary.query('SELECT $1::int4 AS n', [i])));
    assert.deepEqual(results.map((r) => r.rows[0].n), Array.from({length: 20}, (_, i) => i));
    assert.equal(counts.Execute, 20);
    assert.equal(counts.Pipeline, undefined);
  } finally {
    await unary.close();
  }
});

test('a failing statement gives the same DatabaseError over the stream and unary', async () => {
  const unary = new Broker({target: broker.target, pipeline: false});
  const table = tableName('pipe_err');
  try {
    await db.query(`CREATE TABLE ${table} (id int CONSTRAINT ${table}_pk PRIMARY KEY)`);
    await db.query(`INSERT INTO ${table} VALUES (1)`);
    const statements = [
      ['SELECT 1 / 0', []],
      [`INSERT INTO ${table} VALUES ($1)`, [1]],
      ['SELECT * FROM no_such_table_anywhere', []],
      ['SELEC 1', []],
      ['SELECT $1::int4', ['not a number']],
    ];
    for (const [sql, values] of statements) {
      const viaStream = await db.query(sql, values).catch((e) => e);
      const viaUnary = await unary.query(sql, values).catch((e) => e);
      assert.deepEqual(observable(viaStream), observable(viaUnary), sql);
      assert.ok(viaStream.code, `${sql}: a SQLSTATE`);
    }
    const unique = await db.query(`INSERT INTO ${table} VALUES (1)`).catch((e) => e);
    assert.equal(unique.code, '23505');
    assert.equal(unique.constraint, `${table}_pk`);
    assert.equal(unique.table, table);
  } finally {
    await db.query(`DROP TABLE IF EXISTS ${table}`);
    await unary.close();
  }
});

test('a session\'s errors with a reason are the same over the stream and unary', async () => {
  const unary = new Broker({target: broker.target, pipeline: false});
  try {
    const viaStream = await db.session({ttlMs: 300, keepAlive: false});
    const viaUnary = await unary.session({ttlMs: 300, keepAlive: false});
    // No call renews the leases meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const a = await viaStream.query('SELECT 1').catch((e) => e);
    const b = await viaUnary.query('SELECT 1').catch((e) => e);
    assert.equal(a.reason, 'SESSION_EXPIRED');
    assert.deepEqual({...observable(a), message: undefined},
      {...observable(b), message: undefined});
    const shape = (e, name) => e.message.replace(name, 'S').replace(/\d{4}-[\d:.TZ-]+/g, 'T');
    assert.equal(shape(a, viaStream.name), shape(b, viaUnary.name));
  } finally {
    await unary.close();
  }
});

test('a session\'s transaction runs over the stream', async () => {
  const {counts, channelOptions} = methodCounter();
  const piped = new Broker({target: broker.target, channelOptions});
  const table = tableName('pipe_tx');
  try {
    await piped.query(`CREATE TABLE ${table} (n int)`);
    const total = await piped.transaction(async (tx) => {
      await tx.query(`INSERT INTO ${table} VALUES (1), (2)`);
      const {rows} = await tx.query(`SELECT sum(n)::int AS s FROM ${table}`);
      return rows[0].s;
    });
    assert.equal(total, 3);
    assert.equal(counts.Execute, undefined);
    assert.equal(counts.BeginTransaction, 1);
    assert.equal(counts.Commit, 1);
  } finally {
    await piped.query(`DROP TABLE IF EXISTS ${table}`);
    await piped.close();
  }
});

test('a deadline over the stream fails DEADLINE_EXCEEDED and cancels the statement; the stream ' +
     'goes on', async () => {
  const marker = `pipe_deadline_${process.pid}`;
  const other = db.query('SELECT pg_sleep(0.5) AS slept');
  const e = await db.query(`SELECT pg_sleep(60) /* ${marker} */`, [], {deadlineMs: 300})
    .catch((err) => err);
  assert.equal(e.grpcCode, grpcStatus.DEADLINE_EXCEEDED);
  assert.ok(e instanceof DatabaseError);
  await waitUntil(async () => (await running(marker)) === 0);
  assert.equal((await other).rowCount, 1);
});

test('a query\'s deadline travels as its call\'s timeout; without one the call has none',
  async () => {
    const sent = [];
    const interceptor = (options, nextCall) => new grpc.InterceptingCall(nextCall(options), {
      sendMessage(message, next) {
        sent.push(...message.calls);
        next(message);
      },
    });
    const piped = new Broker({target: broker.target, deadlineMs: null,
      channelOptions: {interceptors: [interceptor]}});
    try {
      await piped.query('SELECT 1', [], {deadlineMs: 2000});
      await piped.query('SELECT 2');
      assert.equal(sent.length, 2);
      const ms = Number(sent[0].timeout.seconds) * 1000 + sent[0].timeout.nanos / 1e6;
      assert.ok(ms > 0 && ms <= 2000, `timeout ${ms} ms`);
      assert.equal(sent[1].timeout, undefined);
    } finally {
      await piped.close();
    }
  });

test('an AbortSignal over the stream rejects with its reason and cancels the statement',
  async () => {
    const marker = `pipe_abort_${process.pid}`;
    const controller = new AbortController();
    const call = db.query(`SELECT pg_sleep(60) /* ${marker} */`, [], {signal: controller.signal});
    await waitUntil(async () => (await running(marker)) === 1);
    const reason = new Error('no longer wanted');
    controller.abort(reason);
    await assert.rejects(call, (err) => err === reason);
    await waitUntil(async () => (await running(marker)) === 0);
    assert.deepEqual((await db.query('SELECT 7 AS n')).rows, [{n: 7}]);
  });

test('an AbortSignal aborted before the call rejects without calling', async () => {
  const {counts, channelOptions} = methodCounter();
  const piped = new Broker({target: broker.target, channelOptions});
  try {
    const reason = new Error('not wanted');
    await assert.rejects(piped.query('SELECT 1', [], {signal: AbortSignal.abort(reason)}),
      (err) => err === reason);
    assert.deepEqual(counts, {});
  } finally {
    await piped.close();
  }
});

test('calls beyond the advertised in-flight limit wait on the client, none is refused',
  async () => {
    const limited = await startBroker({BROKER_PIPELINE_MAX_IN_FLIGHT: '3'});
    const {counts, channelOptions} = methodCounter();
    const piped = new Broker({target: limited.target, channelOptions});
    try {
      const results = await Promise.all(Array.from({length: 40}, (_, i) =>
        piped.query('SELECT $1::int4 AS n, pg_sleep(0.01)', [i])));
      assert.deepEqual(results.map((r) => r.rows[0].n), Array.from({length: 40}, (_, i) => i));
      assert.equal(counts.Execute, undefined);
    } finally {
      await piped.close();
      await limited.stop();
    }
  });

test('calls refused for the client\'s Pipeline limit (over all its streams) go unary: none ' +
     'fails', async () => {
  const limited = await startBroker({BROKER_PIPELINE_MAX_IN_FLIGHT_PER_CLIENT: '2'});
  const brokers = [1, 2].map(() => new Broker({target: limited.target, clientId: 'shared'}));
  try {
    const results = await Promise.all(brokers.flatMap((b, k) => Array.from({length: 10}, (_, i) =>
      b.query('SELECT $1::int4 AS n, pg_sleep(0.05)', [k * 10 + i]))));
    assert.deepEqual(results.map((r) => r.rows[0].n), Array.from({length: 20}, (_, i) => i));
  } finally {
    for (const b of brokers) await b.close();
    await limited.stop();
  }
});

test('large calls go unary and a burst of medium ones is split into messages under the ' +
     'broker\'s request size limit', async () => {
  const small = await startBroker({BROKER_MAX_REQUEST_BYTES: String(128 * 1024)});
  const {counts, channelOptions} = methodCounter();
  const piped = new Broker({target: small.target, channelOptions});
  try {
    const medium = 'm'.repeat(8 * 1024);
    const results = await Promise.all(Array.from({length: 40}, (_, i) =>
      piped.query('SELECT length($1::text) + $2::int4 AS n', [medium, i])));
    assert.deepEqual(results.map((r) => r.rows[0].n),
      Array.from({length: 40}, (_, i) => medium.length + i));
    assert.equal(counts.Execute, undefined);
    const large = 'l'.repeat(64 * 1024);
    const {rows} = await piped.query('SELECT length($1::text) AS n', [large]);
    assert.deepEqual(rows, [{n: large.length}]);
    assert.equal(counts.Execute, 1);
    // Over the broker's limit: the unary call's own error.
    const e = await piped.query('SELECT length($1::text)', ['x'.repeat(256 * 1024)])
      .catch((err) => err);
    assert.equal(e.grpcCode, grpcStatus.RESOURCE_EXHAUSTED);
    assert.deepEqual((await piped.query('SELECT 1 AS one')).rows, [{one: 1}]);
  } finally {
    await piped.close();
    await small.stop();
  }
});

test('a broker killed mid-flight fails the calls on the stream as it fails unary calls, ' +
     'without resending; after its restart queries succeed again', async () => {
  // Each sleep on a connection of its own (no pipelined engine), so that all
  // six are seen running before the kill.
  let victim = await startBroker({BROKER_PIPELINE_CONNECTIONS: '0'});
  const target = victim.target;
  const {counts, channelOptions} = methodCounter();
  const piped = new Broker({target, channelOptions});
  const unary = new Broker({target, pipeline: false});
  const table = tableName('pipe_kill');
  try {
    await unary.query(`CREATE TABLE ${table} (n int)`);
    const marker = `pipe_kill_${process.pid}`;
    const onStream = Array.from({length: 5}, () => piped.query(
      `INSERT INTO ${table} SELECT 1 FROM pg_sleep(1) /* ${marker} */`).catch((e) => e));
    const onUnary = unary.query(`SELECT pg_sleep(1) /* ${marker} */`).catch((e) => e);
    await waitUntil(async () => (await running(marker)) === 6);
    process.kill(victim.pid, 'SIGKILL');
    const streamErrors = await Promise.all(onStream);
    const unaryError = await onUnary;
    assert.equal(unaryError.grpcCode, grpcStatus.UNAVAILABLE);
    for (const e of streamErrors) {
      assert.ok(e instanceof DatabaseError);
      assert.equal(e.grpcCode, unaryError.grpcCode);
    }
    assert.equal(counts.Execute, undefined); // nothing was resent unary
    await victim.stop();
    victim = await startBroker({BROKER_LISTEN_ADDR: target, BROKER_PIPELINE_CONNECTIONS: '0'});
    // The backends the killed broker left finish their sleep; the writes
    // that reached PostgreSQL ran once each, never twice.
    await waitUntil(async () => (await running(marker)) === 0);
    const {rows} = await db.query(`SELECT count(*)::int AS n FROM ${table}`);
    assert.ok(rows[0].n <= 5);
    const after = await waitUntil(async () => piped.query('SELECT 42 AS n').catch(() => null));
    assert.deepEqual(after.rows, [{n: 42}]);
  } finally {
    await db.query(`DROP TABLE IF EXISTS ${table}`).catch(() => {});
    await piped.close();
    await unary.close();
    await victim.stop();
  }
});

test('a draining broker finishes the calls running on the stream; later calls fail ' +
     'UNAVAILABLE as unary ones do', async () => {
  const draining = await startBroker();
  const piped = new Broker({target: draining.target});
  try {
    const marker = `pipe_drain_${process.pid}`;
    const call = piped.query(`SELECT 'done' AS s, pg_sleep(1) /* ${marker} */`);
    await waitUntil(async () => (await running(marker)) === 1);
    const stopped = draining.stop();
    assert.deepEqual((await call).rows.map((r) => r.s), ['done']);
    await stopped;
    const later = await piped.query('SELECT 1').catch((e) => e);
    assert.equal(later.grpcCode, grpcStatus.UNAVAILABLE);
  } finally {
    await piped.close();
    await draining.stop();
  }
});

test('a drain loses no call: calls running on the stream return their rows, one read after ' +
     'the drain began (result DRAINING) and one left unread (stream trailer DRAINING) go ' +
     'unary and fail UNAVAILABLE there', async () => {
  // A drain window of 1 s, and a grace long enough for the calls held by the lock.
  const draining = await startBroker({BROKER_DRAIN_SECONDS: '1',
    BROKER_SHUTDOWN_GRACE_SECONDS: '60'});
  const {counts, channelOptions} = methodCounter();
  const piped = new Broker({target: draining.target, channelOptions});
  const probe = new Broker({target: draining.target, pipeline: false});
  const key = String(Math.floor(Math.random() * 2 ** 40));
  const marker = `pipe_drain_lock_${process.pid}_${key}`;
  const keeperKey = String(Number(key) + 1);
  const keeperMarker = `pipe_drain_keeper_${process.pid}_${keeperKey}`;
  // On the test file's broker (not the one that drains): a transaction holds
  // an advisory lock, so the calls that take it shared run until it commits.
  const holdLock = (lockKey) => {
    let release;
    const released = new Promise((resolve) => {
      release = resolve;
    });
    let locked;
    const holding = new Promise((resolve) => {
      locked = resolve;
    });
    const done = db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock($1::int8)', [lockKey]);
      locked();
      await released;
    });
    return {holding, release, done};
  };
  const holder = holdLock(key);
  // Holds a unary call running on the draining broker until the end, so that
  // the broker still answers the calls that go unary (and has not shut its
  // server down, which would cancel them).
  const keeperHolder = holdLock(keeperKey);
  const stopped = {promise: null};
  try {
    await holder.holding;
    await keeperHolder.holding;
    const keeper = probe.query(
      `SELECT pg_advisory_xact_lock_shared(${keeperKey}), 'kept' AS s /* ${keeperMarker} */`);
    await waitUntil(async () => (await running(keeperMarker)) === 1);
    const heldSql = `SELECT pg_advisory_xact_lock_shared(${key}), 'ran' AS s /* ${marker} */`;
    const held = [piped.query(heldSql), piped.query(heldSql)];
    const pipeline = piped._pipeline;
    // Both written; one waits for the lock in PostgreSQL (the other may wait
    // behind it on the same pipelined connection).
    await waitUntil(() => pipeline._stream !== null && pipeline._stream.inFlight.size === 2);
    await waitUntil(async () => (await running(marker)) >= 1);
    stopped.promise = draining.stop();
    await waitUntil(() => probe.query('SELECT 1').then(() => false, (e) => {
      assert.equal(e.grpcCode, grpcStatus.UNAVAILABLE);
      return true;
    }));
    // Read after the drain began: answered DRAINING on the stream, so it
    // goes unary and is refused there.
    const executesBefore = counts.Execute || 0;
    const read = await piped.query('SELECT 1').catch((e) => e);
    assert.equal(counts.Execute, executesBefore + 1);
    // The broker reads no further message: this one waits, unread, until the
    // stream ends by the drain.
    const unread = piped.query('SELECT 2').catch((e) => e);
    await waitUntil(() => pipeline._stream !== null && pipeline._stream.inFlight.size === 3);
    holder.release();
    await holder.done;
    const rows = await Promise.all(held);
    assert.deepEqual(rows.map((r) => r.rows[0].s), ['ran', 'ran']);
    for (const e of [read, await unread]) {
      assert.ok(e instanceof DatabaseError, `not a DatabaseError: ${e}`);
      assert.equal(e.grpcCode, grpcStatus.UNAVAILABLE);
    }
    assert.equal(pipeline.stats.drainHandedBack, 1);
    assert.equal(counts.Execute, executesBefore + 2);
    assert.equal(counts.Pipeline, 1);
    keeperHolder.release();
    await keeperHolder.done;
    assert.deepEqual((await keeper).rows.map((r) => r.s), ['kept']);
    await stopped.promise;
  } finally {
    for (const h of [holder, keeperHolder]) {
      h.release();
      await h.done.catch(() => {});
    }
    await piped.close();
    await probe.close();
    await draining.stop();
  }
});

/**
 * A fake broker whose Pipeline answers the calls of its first message with
 * results refused DRAINING and ends the stream at the next message with
 * UNAVAILABLE and `trailers`; its Execute serves every call (as another
 * instance would).
 */
async function drainingFake(trailers) {
  const {SessionBroker} = load();
  const server = new grpc.Server();
  const seen = {messages: 0, executes: []};
  server.addService(SessionBroker.service, {
    Execute(call, callback) {
      seen.executes.push(call.request.sql);
      callback(null, {columns: [{name: 'sql', type_name: 'text'}],
        rows: [{values: [{string_value: call.request.sql}]}], command_tag: 'SELECT 1'});
    },
    Pipeline(call) {
      call.write({limits: {max_in_flight_per_stream: 8, max_in_flight_per_client: 8}});
      call.on('data', (request) => {
        if (++seen.messages === 1) {
          call.write({results: request.calls.map((c) => ({id: c.id, reason: 'DRAINING',
            status: {code: grpc.status.UNAVAILABLE,
              message: 'the broker is shutting down; retry on another instance'}}))});
        } else {
          const metadata = new grpc.Metadata();
          for (const [k, v] of Object.entries(trailers)) metadata.set(k, v);
          call.emit('error', {code: grpc.status.UNAVAILABLE,
            details: 'the broker is shutting down (DRAINING)', metadata});
        }
      });
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0',
    grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return {target: `127.0.0.1:${port}`, seen, stop: () => server.forceShutdown()};
}

test('a result refused DRAINING and the calls of a stream ended with the DRAINING trailer ' +
     'go unary; no stream opens again before the pause', async () => {
  const fake = await drainingFake({'sessionbroker-reason': 'DRAINING'});
  const {counts, channelOptions} = methodCounter();
  const piped = new Broker({target: fake.target, channelOptions});
  try {
    const refused = await piped.query('SELECT refused');
    assert.deepEqual(refused.rows, [{sql: 'SELECT refused'}]);
    const unread = await piped.query('SELECT unread');
    assert.deepEqual(unread.rows, [{sql: 'SELECT unread'}]);
    assert.equal(piped._pipeline.stats.drainHandedBack, 1);
    const streams = counts.Pipeline;
    const next = await piped.query('SELECT next');
    assert.deepEqual(next.rows, [{sql: 'SELECT next'}]);
    assert.equal(counts.Pipeline, streams);
    assert.deepEqual(fake.seen.executes, ['SELECT refused', 'SELECT unread', 'SELECT next']);
  } finally {
    await piped.close();
    fake.stop();
  }
});

for (const [what, trailers] of [['no reason trailer', {}],
  ['another reason', {'sessionbroker-reason': 'PIPELINE_LIMIT'}]]) {
  test(`the calls of a stream ended UNAVAILABLE with ${what} fail as lost, never resent`,
    async () => {
      const fake = await drainingFake(trailers);
      const piped = new Broker({target: fake.target});
      try {
        await piped.query('SELECT refused');
        const lost = await piped.query('SELECT lost').catch((e) => e);
        assert.ok(lost instanceof DatabaseError, `not a DatabaseError: ${lost}`);
        assert.equal(lost.grpcCode, grpcStatus.UNAVAILABLE);
        // The message names the drain, but only the trailer's token counts.
        assert.match(lost.message, /DRAINING/);
        assert.equal(piped._pipeline.stats.drainHandedBack, 0);
        assert.deepEqual(fake.seen.executes, ['SELECT refused']);
      } finally {
        await piped.close();
        fake.stop();
      }
    });
}

test('a broker that cannot be reached fails queries UNAVAILABLE as unary calls do; the next ' +
     'ones go unary', async () => {
  const gone = await startBroker();
  const target = gone.target;
  await gone.stop();
  const {counts, channelOptions} = methodCounter();
  const piped = new Broker({target, channelOptions});
  const unary = new Broker({target, pipeline: false});
  try {
    const viaStream = await Promise.all(Array.from({length: 3}, () =>
      piped.query('SELECT 1').catch((e) => e)));
    // Within the pause after a failed stream: unary.
    const next = await piped.query('SELECT 1').catch((e) => e);
    const viaUnary = await unary.query('SELECT 1').catch((e) => e);
    assert.equal(viaUnary.grpcCode, grpcStatus.UNAVAILABLE);
    for (const e of [...viaStream, next]) {
      assert.ok(e instanceof DatabaseError);
      assert.equal(e.grpcCode, grpcStatus.UNAVAILABLE);
    }
    assert.equal(counts.Pipeline, 1);
    assert.ok(counts.Execute >= 1);
  } finally {
    await piped.close();
    await unary.close();
  }
});

test('a broker without the Pipeline method is served unary, and the client remembers it',
  async () => {
    const {SessionBroker} = load();
    const server = new grpc.Server();
    let executes = 0;
    server.addService(SessionBroker.service, {
      Execute(call, callback) {
        executes++;
        callback(null, {columns: [{name: 'sql', type_name: 'text'}],
          rows: [{values: [{string_value: call.request.sql}]}], command_tag: 'SELECT 1'});
      },
    });
    const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0',
      grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    const {counts, channelOptions} = methodCounter();
    const old = new Broker({target: `127.0.0.1:${port}`, channelOptions});
    try {
      const first = await Promise.all(Array.from({length: 10}, (_, i) => old.query(`SELECT ${i}`)));
      assert.deepEqual(first.map((r) => r.rows[0].sql),
        Array.from({length: 10}, (_, i) => `SELECT ${i}`));
      const second = await Promise.all([old.query('SELECT a'), old.query('SELECT b')]);
      assert.deepEqual(second.map((r) => r.rows[0].sql), ['SELECT a', 'SELECT b']);
      assert.equal(counts.Pipeline, 1);
      assert.equal(executes, 12);
    } finally {
      await old.close();
      server.forceShutdown();
    }
  });

test('a Broker left open after its queries does not keep the process alive', async () => {
  const script = `
    const {Broker} = require(${JSON.stringify(path.join(__dirname, '..'))});
    const db = new Broker({target: ${JSON.stringify(broker.target)}});
    Promise.all(Array.from({length: 50}, (_, i) => db.query('SELECT $1::int4 AS n', [i])))
      .then((rs) => console.log(rs.length, db._pipeline.stats.streamCalls));`;
  const child = spawn(process.execPath, ['-e', script], {stdio: ['ignore', 'pipe', 'inherit']});
  let out = '';
  child.stdout.on('data', (chunk) => {
    out += chunk;
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 60000);
  const [code, signal] = await new Promise((resolve) =>
    child.on('exit', (c, s) => resolve([c, s])));
  clearTimeout(killer);
  assert.equal(signal, null, 'the process had to be killed: something kept it alive');
  assert.equal(code, 0);
  assert.equal(out.trim(), '50 50');
});
