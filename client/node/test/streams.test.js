'use strict';
// Streamed queries (broker.stream: a Readable of rows with back pressure)
// and LISTEN/NOTIFY (broker.listen: an EventEmitter of notifications and
// gaps), against a live broker.

const assert = require('node:assert/strict');
const {once} = require('node:events');
const {after, before, test} = require('node:test');
const {Broker, DatabaseError, grpcStatus} = require('..');
const {startBroker, tableName, waitUntil} = require('../test-support/broker-process');

let broker;
let db;

before(async () => {
  broker = await startBroker();
  db = new Broker({target: broker.target, clientId: 'node-streams'});
});

after(async () => {
  if (db) await db.close();
  if (broker) await broker.stop();
});

// 100,000 rows of 1,000 bytes: 25 times Execute's 4 MiB cap. The set-
// returning function in the select list yields row by row (in FROM,
// PostgreSQL would materialize the series first).
const BIG_ROWS = 100000;
function bigQuery(marker) {
  return `SELECT n, repeat('x', 1000) AS body FROM (SELECT generate_series(1, ${BIG_ROWS}) AS n) s` +
    ` /* ${marker} */`;
}

// Backends running a statement that contains `marker` (and in `waitEvent`).
async function backends(marker, waitEvent) {
  const {rows} = await db.query(
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = \'active\' ' +
    'AND pid <> pg_backend_pid() AND position($1 in query) > 0 ' +
    'AND ($2::text IS NULL OR wait_event = $2)', [marker, waitEvent || null]);
  return rows[0].n;
}

test('a result over Execute\'s cap streams whole: fields first, every row, then the tag',
  async () => {
    const marker = `whole_${process.pid}`;
    const e = await db.query(bigQuery(marker)).catch((err) => err);
    assert.equal(e.grpcCode, grpcStatus.RESOURCE_EXHAUSTED);

    const stream = db.stream(bigQuery(marker));
    let fieldsBeforeRows = null;
    stream.once('fields', (fields) => {
      fieldsBeforeRows = fields.map((f) => `${f.name}:${f.dataTypeName}`);
    });
    let count = 0;
    let sum = 0;
    for await (const row of stream) {
      if (count === 0) {
        assert.deepEqual(fieldsBeforeRows, ['n:int4', 'body:text']);
        assert.equal(row.body.length, 1000);
      }
      count++;
      sum += row.n;
    }
    assert.equal(count, BIG_ROWS);
    assert.equal(sum, BIG_ROWS * (BIG_ROWS + 1) / 2);
    assert.equal(stream.command, 'SELECT');
    assert.equal(stream.rowCount, BIG_ROWS);
  });

test('a stream nobody reads buffers at most its highWaterMark and a message, and ' +
     'PostgreSQL waits to write; reading resumes it to the last row', async () => {
  const marker = `backpressure_${process.pid}`;
  const stream = db.stream(bigQuery(marker), [], {highWaterMark: 50});
  await waitUntil(async () => (await backends(marker, 'ClientWrite')) === 1);
  // One message holds at most BROKER_STREAM_WINDOW_BYTES / 4 (256 KiB): 262 such rows.
  assert.ok(stream.readableLength <= 50 + 262, `buffered ${stream.readableLength} rows`);
  let count = 0;
  for await (const row of stream) {
    void row;
    count++;
  }
  assert.equal(count, BIG_ROWS);
});

test('destroying a stream mid-result cancels the statement in PostgreSQL', async () => {
  const marker = `destroy_${process.pid}`;
  const stream = db.stream(`SELECT generate_series(1, 100000000) AS g /* ${marker} */`);
  for await (const row of stream) {
    assert.equal(row.g, 1);
    break; // destroys the stream
  }
  assert.equal(stream.destroyed, true);
  await waitUntil(async () => (await backends(marker)) === 0);
});

test('an AbortSignal destroys the stream with its reason', async () => {
  const controller = new AbortController();
  const stream = db.stream('SELECT generate_series(1, 100000000) AS g', [],
    {signal: controller.signal});
  await once(stream, 'fields');
  const reason = new Error('enough');
  controller.abort(reason);
  const [err] = await once(stream, 'error').catch((e) => [e]);
  assert.equal(err, reason);
});

test('a statement that fails before its first row is the stream\'s error', async () => {
  const stream = db.stream('SELECT * FROM no_such_table_here');
  await assert.rejects(async () => {
    for await (const row of stream) void row;
  }, (e) => e instanceof DatabaseError && e.code === '42P01' &&
    /no_such_table_here/.test(e.message));
});

test('a statement that fails mid-result ends the rows with its DatabaseError', async () => {
  const stream = db.stream('SELECT 1 / (3 - g) AS x FROM generate_series(1, 5) g');
  const rows = [];
  await assert.rejects(async () => {
    for await (const row of stream) rows.push(row.x);
  }, (e) => e instanceof DatabaseError && e.code === '22012');
  assert.ok(rows.length <= 2);
  assert.equal(stream.rowCount, null);
});

test('rowMode array, int8 and parameters apply to streamed rows', async () => {
  const rows = [];
  for await (const row of db.stream({text: 'SELECT $1::int8 AS big, $2::text AS t',
    values: [9007199254740993n, 'x'], rowMode: 'array'})) {
    rows.push(row);
  }
  assert.deepEqual(rows, [[9007199254740993n, 'x']]);
});

test('a session\'s stream reads its transaction\'s uncommitted rows; an ended session\'s ' +
     'stream fails', async () => {
  const table = tableName('stream');
  const session = await db.session();
  try {
    await session.query(`CREATE TABLE ${table} (v int4)`);
    await session.begin();
    await session.query(`INSERT INTO ${table} SELECT generate_series(1, 1000)`);
    let count = 0;
    for await (const row of session.stream(`SELECT v FROM ${table}`)) {
      void row;
      count++;
    }
    assert.equal(count, 1000);
    await session.rollback();
    const {rows} = await db.query(`SELECT count(*)::int AS n FROM ${table}`);
    assert.equal(rows[0].n, 0);
  } finally {
    await db.query(`DROP TABLE IF EXISTS ${table}`);
    await session.end();
  }
  const [err] = await once(session.stream('SELECT 1'), 'error').catch((e) => [e]);
  assert.match(err.message, /has ended/);
});

test('a NOTIFY sent through query() arrives as a notification with channel, payload and ' +
     'the sender\'s pid', async () => {
  const channel = tableName('chan');
  const sub = await db.listen([channel, channel]);
  try {
    assert.deepEqual(sub.channels, [channel]);
    assert.ok(sub.listenerPid > 0);
    const arrived = once(sub, 'notification');
    const {rows} = await db.query('SELECT pg_notify($1, $2), pg_backend_pid() AS pid',
      [channel, 'order 42']);
    const [msg] = await arrived;
    assert.deepEqual(msg, {channel, payload: 'order 42', processId: rows[0].pid});
  } finally {
    await sub.close();
  }
  assert.equal(sub.ended, true);
});

test('a lost listener connection is a reconnected gap, and notifications go on', async () => {
  const channel = tableName('gap');
  const sub = await db.listen(channel);
  try {
    const oldPid = sub.listenerPid;
    const gapped = once(sub, 'gap');
    await db.query('SELECT pg_terminate_backend($1)', [oldPid]);
    const [gap] = await gapped;
    assert.equal(gap.reason, 'reconnected');
    assert.notEqual(gap.listenerPid, oldPid);
    assert.equal(sub.listenerPid, gap.listenerPid);
    const arrived = once(sub, 'notification');
    await db.query(`NOTIFY ${channel}, 'after'`);
    assert.equal((await arrived)[0].payload, 'after');
  } finally {
    await sub.close();
  }
});

test('a broker that shuts down ends a subscription with an UNAVAILABLE error, then end',
  async () => {
    const own = await startBroker();
    const client = new Broker({target: own.target});
    try {
      const sub = await client.listen('shutdown');
      const failed = once(sub, 'error');
      // (events.once would reject on the 'error' that comes first.)
      const ended = new Promise((resolve) => sub.once('end', resolve));
      await own.stop();
      const [err] = await failed;
      assert.equal(err.grpcCode, grpcStatus.UNAVAILABLE);
      await ended;
    } finally {
      await client.close();
      await own.stop();
    }
  });

test('a bad channel list rejects with INVALID_ARGUMENT', async () => {
  await assert.rejects(db.listen([]), (e) => e.grpcCode === grpcStatus.INVALID_ARGUMENT);
  await assert.rejects(db.listen(['c'.repeat(64)]),
    (e) => e.grpcCode === grpcStatus.INVALID_ARGUMENT);
});

test('close() ends open subscriptions and streams', async () => {
  const closing = new Broker({target: broker.target});
  const sub = await closing.listen('closing');
  const stream = closing.stream('SELECT generate_series(1, 100000000) AS g');
  await once(stream, 'fields');
  const ended = once(sub, 'end');
  await closing.close();
  await ended;
  assert.equal(stream.destroyed, true);
  await assert.rejects(closing.listen('again'), /closed/);
});
