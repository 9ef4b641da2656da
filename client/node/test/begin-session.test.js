'use strict';
// BeginSession (broker.session(), broker.transaction()) is made again when
// it fails UNAVAILABLE (a connection that broke under the call), at most 3
// attempts within the call's deadline, every attempt with the same
// request_id; any other error is thrown at once. Driven against an
// in-process gRPC server whose BeginSession fails as scripted (a broker
// cannot be made to drop a connection at a chosen moment), and against the
// real broker for what the retry relies on: a BeginSession repeated with its
// request_id gets the session the first one opened.

const assert = require('node:assert/strict');
const {after, before, test} = require('node:test');
const grpc = require('@grpc/grpc-js');
const {Broker, DatabaseError, grpcStatus} = require('..');
const {load} = require('../lib/proto');
const {startBroker} = require('../test-support/broker-process');

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * A fake broker whose BeginSession fails with the next of `failures` (gRPC
 * codes), then succeeds; it records every BeginSession request and the
 * session calls that follow, and answers them as the broker does.
 */
async function scriptedBroker(failures) {
  const {SessionBroker} = load();
  const server = new grpc.Server();
  const seen = {begins: [], calls: []};
  let sessions = 0;
  const ok = (name) => (call, callback) => {
    seen.calls.push(`${name} ${call.request.session}`);
    callback(null, {});
  };
  server.addService(SessionBroker.service, {
    BeginSession(call, callback) {
      seen.begins.push(call.request);
      seen.calls.push('BeginSession');
      const code = failures.shift();
      if (code !== undefined) {
        callback({code, details: `scripted failure ${seen.begins.length}`});
        return;
      }
      callback(null, {name: `sessions/s${++sessions}`});
    },
    BeginTransaction: ok('BeginTransaction'),
    Commit: ok('Commit'),
    Rollback: ok('Rollback'),
    EndSession: ok('EndSession'),
    KeepAlive(call) {
      call.on('data', (request) => call.write({sessions: (request.hold || []).map(
        (name) => ({name, state: 'HELD'}))}));
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0',
    grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  const ids = () => seen.begins.map((r) => r.request_id);
  return {target: `127.0.0.1:${port}`, seen, ids, stop: () => server.forceShutdown()};
}

/** Runs fn(fake, client) against a fresh fake scripted with `failures`. */
async function withFake(failures, fn) {
  const fake = await scriptedBroker(failures);
  const client = new Broker({target: fake.target, clientId: 'retry', pipeline: false});
  try {
    await fn(fake, client);
  } finally {
    await client.close();
    fake.stop();
  }
}

test('a BeginSession that fails UNAVAILABLE is made again, every attempt with one request_id',
  () => withFake([grpcStatus.UNAVAILABLE, grpcStatus.UNAVAILABLE], async (fake, client) => {
    const session = await client.session();
    assert.equal(session.name, 'sessions/s1');
    assert.equal(fake.seen.begins.length, 3);
    // An id of the client's own, within the broker's alphabet and length.
    const [id] = fake.ids();
    assert.match(id, UUID);
    assert.deepEqual(fake.ids(), [id, id, id]);
    await session.end();
  }));

test('a caller\'s requestId is sent on every attempt, with the request repeated exactly',
  () => withFake([grpcStatus.UNAVAILABLE], async (fake, client) => {
    const session = await client.session({requestId: 'order-42-session', label: 'billing',
      settings: {search_path: 'app'}, keepAlive: false});
    assert.deepEqual(fake.ids(), ['order-42-session', 'order-42-session']);
    assert.deepEqual(fake.seen.begins[1], fake.seen.begins[0]);
    await session.end();
  }));

test('separate session() calls send separate request_ids', () => withFake([],
  async (fake, client) => {
    await client.session({keepAlive: false});
    await client.session({keepAlive: false});
    const [a, b] = fake.ids();
    assert.match(a, UUID);
    assert.notEqual(a, b);
  }));

test('BeginSession gives up after 3 attempts with the last UNAVAILABLE',
  () => withFake(Array(4).fill(grpcStatus.UNAVAILABLE), async (fake, client) => {
    const e = await client.session().catch((err) => err);
    assert.ok(e instanceof DatabaseError, `not a DatabaseError: ${e}`);
    assert.equal(e.grpcCode, grpcStatus.UNAVAILABLE);
    assert.match(e.message, /scripted failure 3/);
    assert.equal(fake.seen.begins.length, 3);
  }));

for (const code of ['RESOURCE_EXHAUSTED', 'INVALID_ARGUMENT', 'ABORTED']) {
  test(`BeginSession failing ${code} is thrown at once`,
    () => withFake([grpcStatus[code]], async (fake, client) => {
      const e = await client.session().catch((err) => err);
      assert.ok(e instanceof DatabaseError, `not a DatabaseError: ${e}`);
      assert.equal(e.grpcCode, grpcStatus[code]);
      assert.equal(fake.seen.begins.length, 1);
    }));
}

test('no attempt starts without time for it within the deadline: the UNAVAILABLE is thrown',
  // Less than the first backoff (50 ms) plus the 250 ms an attempt needs.
  () => withFake(Array(3).fill(grpcStatus.UNAVAILABLE), async (fake, client) => {
    const e = await client.session({deadlineMs: 290}).catch((err) => err);
    assert.equal(e.grpcCode, grpcStatus.UNAVAILABLE);
    assert.equal(fake.seen.begins.length, 1);
  }));

test('without a deadline the attempts are bounded by their number alone',
  () => withFake(Array(2).fill(grpcStatus.UNAVAILABLE), async (fake, client) => {
    const session = await client.session({deadlineMs: null, keepAlive: false});
    assert.equal(session.name, 'sessions/s1');
    assert.equal(fake.seen.begins.length, 3);
  }));

test('an abort during the backoff ends the retries with the abort\'s reason',
  () => withFake(Array(3).fill(grpcStatus.UNAVAILABLE), async (fake, client) => {
    const controller = new AbortController();
    const reason = new Error('stop');
    const failed = client.session({signal: controller.signal}).catch((err) => err);
    // Aborted once the fake saw the first attempt: the abort lands in that
    // attempt, the backoff after it or the second attempt, and in each case
    // the call ends with its reason and no attempt follows.
    while (fake.seen.begins.length < 1) await new Promise((r) => setImmediate(r));
    controller.abort(reason);
    assert.equal(await failed, reason);
    assert.ok(fake.seen.begins.length <= 2);
  }));

test('transaction() retries the BeginSession of its session', () => withFake(
  [grpcStatus.UNAVAILABLE], async (fake, client) => {
    const result = await client.transaction(async (tx) => tx.attempt);
    assert.equal(result, 1);
    assert.deepEqual(fake.seen.calls, ['BeginSession', 'BeginSession',
      'BeginTransaction sessions/s1', 'Commit sessions/s1', 'EndSession sessions/s1']);
    const [id] = fake.ids();
    assert.deepEqual(fake.ids(), [id, id]);
  }));

// ---- against the real broker --------------------------------------------

let broker;
let db;

before(async () => {
  broker = await startBroker();
  db = new Broker({target: broker.target, clientId: 'node-begin'});
});

after(async () => {
  if (db) await db.close();
  if (broker) await broker.stop();
});

/** The names of the sessions of this file's client the broker lists (ListSessions). */
async function openSessions() {
  const response = await db._unary('ListSessions', {client_id: 'node-begin'});
  return (response.sessions || []).map((s) => s.name);
}

test('the broker answers a BeginSession repeated with its request_id with the same session',
  async () => {
    // The first attempt, whose answer the client never saw, and the retry:
    // one session, not two.
    const requestId = `node-begin-${process.pid}-${Date.now()}`;
    const first = await db.session({requestId});
    const again = await db.session({requestId});
    try {
      assert.equal(again.name, first.name);
      assert.deepEqual(await openSessions(), [first.name]);
    } finally {
      await first.end();
      await again.end().catch(() => {});
    }
    assert.deepEqual(await openSessions(), []);
  });

test('session() calls without a requestId lease sessions of their own', async () => {
  const a = await db.session();
  const b = await db.session();
  try {
    assert.notEqual(a.name, b.name);
    assert.deepEqual((await openSessions()).sort(), [a.name, b.name].sort());
  } finally {
    await a.end();
    await b.end();
  }
});
