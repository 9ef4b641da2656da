'use strict';
// Errors as node-postgres reports them: DatabaseError with the SQLSTATE in
// .code and PostgreSQL's fields read from the SqlErrorDetail of the
// grpc-status-details-bin trailer (docs/errors.md), plus .grpcCode and the
// broker's .reason.

const assert = require('node:assert/strict');
const {after, before, test} = require('node:test');
const {Broker, DatabaseError, grpcStatus} = require('..');
const {startBroker, tableName} = require('../test-support/broker-process');

let broker;
let db;
const table = tableName('errs');

before(async () => {
  broker = await startBroker();
  db = new Broker({target: broker.target, clientId: 'node-errors'});
  await db.query(`CREATE DOMAIN ${table}_pos AS int CHECK (VALUE > 0)`);
  await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, email text UNIQUE NOT NULL,
                  n ${table}_pos)`);
  await db.query(`INSERT INTO ${table} (id, email) VALUES (1, 'a@example.com')`);
});

after(async () => {
  if (db) {
    await db.query(`DROP TABLE IF EXISTS ${table}`);
    await db.query(`DROP DOMAIN IF EXISTS ${table}_pos`);
    await db.close();
  }
  if (broker) await broker.stop();
});

async function failure(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail('the call succeeded');
}

test('a unique violation carries code 23505, its constraint, table, schema and detail',
  async () => {
    const e = await failure(db.query(`INSERT INTO ${table} (id, email) VALUES ($1, $2)`,
      [2, 'a@example.com']));
    assert.ok(e instanceof DatabaseError);
    assert.ok(e instanceof Error);
    assert.equal(e.code, '23505');
    assert.equal(e.grpcCode, grpcStatus.ALREADY_EXISTS);
    assert.equal(e.constraint, `${table}_email_key`);
    assert.equal(e.table, table);
    assert.equal(e.schema, 'public');
    assert.equal(e.detail, 'Key (email)=(a@example.com) already exists.');
    assert.equal(e.severity, 'ERROR');
    assert.match(e.message, /duplicate key value violates unique constraint/);
    assert.equal(e.retryable, false);
  });

test('a not-null violation names the column', async () => {
  const e = await failure(db.query(`INSERT INTO ${table} (id, email) VALUES (3, NULL)`));
  assert.deepEqual([e.code, e.column, e.table], ['23502', 'email', table]);
  assert.equal(e.grpcCode, grpcStatus.FAILED_PRECONDITION);
});

test('a domain check violation names the data type', async () => {
  const e = await failure(db.query(`INSERT INTO ${table} (id, email, n) VALUES (4, 'x', -1)`));
  assert.deepEqual([e.code, e.dataType], ['23514', `${table}_pos`]);
});

test('a syntax error carries its position (a string, as node-postgres has it)', async () => {
  const e = await failure(db.query('SELECT 1 FROM WHERE'));
  assert.deepEqual([e.code, e.position, e.grpcCode], ['42601', '15', grpcStatus.INVALID_ARGUMENT]);
});

test('an unknown function carries the hint', async () => {
  const e = await failure(db.query('SELECT no_such_function($1)', [1]));
  assert.equal(e.code, '42883');
  assert.match(e.hint, /No function matches/);
});

test('errors of the broker\'s own have a gRPC code and no SQLSTATE', async () => {
  const e = await failure(db.query('SELECT 1; SELECT 2'));
  assert.equal(e.grpcCode, grpcStatus.INVALID_ARGUMENT);
  assert.equal(e.code, undefined);
  assert.equal(e.constraint, undefined);
});

test('a statement after a failed one in a transaction is ABORTED with the broker\'s reason, ' +
     'and not retryable', async () => {
  const session = await db.session();
  try {
    await session.begin();
    await failure(session.query('SELECT 1/0'));
    const e = await failure(session.query('SELECT 1'));
    assert.equal(e.grpcCode, grpcStatus.ABORTED);
    assert.equal(e.reason, 'TX_STATEMENT_FAILED');
    assert.equal(e.retryable, false);
    assert.equal(await session.rollback(), false);
    assert.deepEqual((await session.query('SELECT 1 AS one')).rows, [{one: 1}]);
  } finally {
    await session.end();
  }
});

test('a call on a session that ended fails with the session\'s reason', async () => {
  const session = await db.session({keepAlive: false});
  const other = new Broker({target: broker.target});
  try {
    // Ended from elsewhere: the broker says why on the next call.
    await other._unary('EndSession', {session: session.name});
    const e = await failure(session.query('SELECT 1'));
    assert.equal(e.grpcCode, grpcStatus.FAILED_PRECONDITION);
    assert.equal(e.reason, 'SESSION_ENDED');
    await session.end(); // already ended: still resolves
  } finally {
    await other.close();
  }
});
