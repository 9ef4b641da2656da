'use strict';
// broker.transaction(): commit, rollback, retry on a real serialization
// failure between two sessions; explicit sessions with begin/commit/rollback.

const assert = require('node:assert/strict');
const {after, before, test} = require('node:test');
const {Broker, DatabaseError, grpcStatus} = require('..');
const {startBroker, tableName} = require('../test-support/broker-process');

let broker;
let db;
const table = tableName('tx');

before(async () => {
  broker = await startBroker();
  db = new Broker({target: broker.target, clientId: 'node-tx'});
  await db.query(`CREATE TABLE ${table} (id serial PRIMARY KEY, grp int NOT NULL, note text)`);
});

after(async () => {
  if (db) {
    await db.query(`DROP TABLE IF EXISTS ${table}`);
    await db.close();
  }
  if (broker) await broker.stop();
});

async function count(grp) {
  const {rows} = await db.query(`SELECT count(*)::int AS n FROM ${table} WHERE grp = $1`, [grp]);
  return rows[0].n;
}

test('transaction() commits what its function did and resolves to its result', async () => {
  const result = await db.transaction(async (tx) => {
    await tx.query(`INSERT INTO ${table} (grp) VALUES ($1), ($1)`, [1]);
    const {rows} = await tx.query(`SELECT count(*)::int AS n FROM ${table} WHERE grp = 1`);
    return rows[0].n;
  });
  assert.equal(result, 2);
  assert.equal(await count(1), 2);
});

test('transaction() rolls back when its function throws, and rethrows', async () => {
  const failure = new Error('changed my mind');
  await assert.rejects(db.transaction(async (tx) => {
    await tx.query(`INSERT INTO ${table} (grp) VALUES (2)`);
    throw failure;
  }), (e) => e === failure);
  assert.equal(await count(2), 0);
});

test('a non-retryable database error is thrown at once, after one attempt', async () => {
  let attempts = 0;
  const e = await db.transaction(async (tx) => {
    attempts += 1;
    await tx.query(`INSERT INTO ${table} (grp) VALUES (3)`);
    await tx.query('SELECT 1/0');
  }).catch((err) => err);
  assert.ok(e instanceof DatabaseError);
  assert.equal(e.code, '22012');
  assert.equal(attempts, 1);
  assert.equal(await count(3), 0);
});

// Two SERIALIZABLE transactions that each read what the other writes: the
// first to commit wins, the second fails with 40001 and is run again.
test('a serialization failure between two sessions is retried and then commits', async () => {
  let arrived = 0;
  let release;
  const bothRead = new Promise((resolve) => { release = resolve; });
  const attempts = {a: [], b: []};
  const run = (who) => db.transaction(async (tx) => {
    attempts[who].push(tx.attempt);
    const {rows} = await tx.query(`SELECT count(*)::int AS n FROM ${table} WHERE grp = 4`);
    if (tx.attempt === 1) {
      arrived += 1;
      if (arrived === 2) release();
      await bothRead; // both have read before either writes
    }
    await tx.query(`INSERT INTO ${table} (grp, note) VALUES (4, $1)`, [`${who} saw ${rows[0].n}`]);
    return rows[0].n;
  }, {isolation: 'serializable'});
  const [a, b] = await Promise.all([run('a'), run('b')]);
  // One ran once and saw nothing; the other failed once, ran again, saw 1.
  assert.deepEqual([a, b].sort(), [0, 1]);
  assert.deepEqual([attempts.a.length, attempts.b.length].sort(), [1, 2]);
  assert.equal(await count(4), 2);
});

test('maxAttempts bounds the retries: the last retryable error is thrown', async () => {
  let attempts = 0;
  const e = await db.transaction(async (tx) => {
    attempts += 1;
    await tx.query('DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = \'40001\', ' +
                   'MESSAGE = \'simulated serialization failure\'; END $$');
  }, {maxAttempts: 3}).catch((err) => err);
  assert.equal(e.code, '40001');
  assert.equal(e.grpcCode, grpcStatus.ABORTED);
  assert.equal(e.retryable, true);
  assert.equal(attempts, 3);
});

test('a read-only transaction refuses writes with PostgreSQL\'s 25006', async () => {
  const e = await db.transaction(async (tx) => {
    await tx.query(`INSERT INTO ${table} (grp) VALUES (5)`);
  }, {readOnly: true}).catch((err) => err);
  assert.equal(e.code, '25006');
});

test('an explicit session: statements outside and inside its transactions, commit and ' +
     'rollback', async () => {
  const session = await db.session({label: 'node-test', settings: {application_name: 'nodetest'}});
  try {
    const {rows} = await session.query('SELECT current_setting(\'application_name\') AS app');
    assert.deepEqual(rows, [{app: 'nodetest'}]);
    await session.begin({isolation: 'repeatable read'});
    await session.query(`INSERT INTO ${table} (grp) VALUES (6)`);
    assert.equal(await count(6), 0); // not yet committed
    await session.commit();
    assert.equal(await count(6), 1);
    await session.begin();
    await session.query(`INSERT INTO ${table} (grp) VALUES (6)`);
    assert.equal(await session.rollback(), true);
    assert.equal(await count(6), 1);
  } finally {
    await session.end();
  }
  assert.equal(session.ended, 'ended by this client');
  await assert.rejects(session.query('SELECT 1'), /has ended/);
});
