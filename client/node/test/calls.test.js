'use strict';
// Cancellation, deadlines, the shared KeepAlive stream, concurrency and
// close(), against a live broker.

const assert = require('node:assert/strict');
const {after, before, test} = require('node:test');
const {setTimeout: sleep} = require('node:timers/promises');
const {Broker, grpcStatus} = require('..');
const {startBroker, tableName, waitUntil} = require('../test-support/broker-process');

let broker;
let db;

before(async () => {
  broker = await startBroker();
  db = new Broker({target: broker.target, clientId: 'node-calls'});
});

after(async () => {
  if (db) await db.close();
  if (broker) await broker.stop();
});

// Backends running a statement that contains `marker`, seen from another connection.
async function running(marker) {
  const {rows} = await db.query(
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = \'active\' ' +
    'AND pid <> pg_backend_pid() AND position($1 in query) > 0', [marker]);
  return rows[0].n;
}

test('an AbortSignal cancels a running pg_sleep and the broker frees its connection',
  async () => {
    const marker = `abort_${process.pid}`;
    const controller = new AbortController();
    const call = db.query(`SELECT pg_sleep(60) /* ${marker} */`, [],
      {signal: controller.signal});
    await waitUntil(async () => (await running(marker)) === 1);
    controller.abort();
    await assert.rejects(call, (e) => e.name === 'AbortError');
    await waitUntil(async () => (await running(marker)) === 0);
  });

test('an AbortSignal already aborted rejects with its reason without calling', async () => {
  const reason = new Error('not wanted');
  await assert.rejects(db.query('SELECT 1', [], {signal: AbortSignal.abort(reason)}),
    (e) => e === reason);
});

test('a deadline cancels the statement in PostgreSQL and fails with DEADLINE_EXCEEDED',
  async () => {
    const marker = `deadline_${process.pid}`;
    const e = await db.query(`SELECT pg_sleep(60) /* ${marker} */`, [], {deadlineMs: 300})
      .catch((err) => err);
    assert.equal(e.grpcCode, grpcStatus.DEADLINE_EXCEEDED);
    await waitUntil(async () => (await running(marker)) === 0);
  });

test('a Broker\'s deadlineMs applies to every call', async () => {
  const short = new Broker({target: broker.target, deadlineMs: 300});
  try {
    const e = await short.query('SELECT pg_sleep(60)').catch((err) => err);
    assert.equal(e.grpcCode, grpcStatus.DEADLINE_EXCEEDED);
  } finally {
    await short.close();
  }
});

test('the KeepAlive stream keeps a session alive past its ttl; without it the lease ends',
  async () => {
    const held = await db.session({ttlMs: 500});
    const unheld = await db.session({ttlMs: 500, keepAlive: false});
    try {
      // The hold travels on the stream, after session() resolved.
      await waitUntil(async () => (await held.info()).heldByStream);
      assert.equal((await unheld.info()).heldByStream, false);
      // Wait for the unheld lease to run out (no call renews it meanwhile).
      await sleep(2000);
      const e = await unheld.query('SELECT 1').catch((err) => err);
      assert.equal(e.reason, 'SESSION_EXPIRED');
      assert.deepEqual((await held.query('SELECT 1 AS one')).rows, [{one: 1}]);
      assert.equal(held.ended, null);
    } finally {
      await held.end();
      await unheld.end();
    }
  });

test('one KeepAlive stream holds every session of a Broker, and closes when none is left',
  async () => {
    const own = new Broker({target: broker.target, clientId: 'node-ka'});
    try {
      const sessions = await Promise.all([1, 2, 3].map(() => own.session()));
      assert.deepEqual(own._keepAlive.heldNames(), sessions.map((s) => s.name).sort());
      assert.equal(own._keepAlive.streaming, true);
      await Promise.all(sessions.map((s) => s.end()));
      assert.deepEqual(own._keepAlive.heldNames(), []);
      assert.equal(own._keepAlive.streaming, false);
    } finally {
      await own.close();
    }
  });

test('a held session the broker ends is reported on the stream, and its calls then fail ' +
     'at once', async () => {
  const session = await db.session();
  const other = new Broker({target: broker.target});
  try {
    await waitUntil(async () => (await session.info()).heldByStream);
    // Ended from elsewhere (an operator's EndSession): the stream says so.
    await other._unary('EndSession', {session: session.name});
    await waitUntil(() => session.ended !== null);
    assert.match(session.ended, /EndSession was called/);
    const e = await session.query('SELECT 1').catch((err) => err);
    assert.equal(e.grpcCode, grpcStatus.FAILED_PRECONDITION);
    assert.match(e.message, /the broker ended session/);
    assert.ok(!db._keepAlive.heldNames().includes(session.name));
  } finally {
    await session.end();
    await other.close();
  }
});

test('100 parallel queries each get their own answer', async () => {
  const results = await Promise.all(Array.from({length: 100},
    (_, i) => db.query('SELECT $1::int4 * 2 AS n, pg_sleep(0.01)', [i])));
  assert.deepEqual(results.map((r) => r.rows[0].n), Array.from({length: 100}, (_, i) => i * 2));
});

test('close() ends the Broker\'s sessions (rolling back their transactions) and refuses ' +
     'later calls', async () => {
  const table = tableName('close');
  await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v int)`);
  try {
    await db.query(`INSERT INTO ${table} VALUES (1, 0)`);
    const closing = new Broker({target: broker.target, clientId: 'node-close'});
    const session = await closing.session();
    await session.begin();
    await session.query(`UPDATE ${table} SET v = 1 WHERE id = 1`); // holds the row lock
    await closing.close();
    assert.equal(closing.closed, true);
    await assert.rejects(closing.query('SELECT 1'), /closed/);
    // The lock is gone and the update was rolled back.
    const {rows} = await db.query(`UPDATE ${table} SET v = v + 10 WHERE id = 1 RETURNING v`,
      [], {deadlineMs: 5000});
    assert.deepEqual(rows, [{v: 10}]);
    await closing.close(); // twice is fine
  } finally {
    await db.query(`DROP TABLE ${table}`);
  }
});
