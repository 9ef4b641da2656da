'use strict';
// Values both ways through a live broker: every parameter kind the package
// sends and every column type it decodes (docs/types.md), NULLs, the int8
// modes, typed() and json(), rowMode 'array', fields, command and rowCount.

const assert = require('node:assert/strict');
const {after, before, describe, test} = require('node:test');
const {Broker, typed, json} = require('..');
const {startBroker, tableName} = require('../test-support/broker-process');

let broker;
let db;

before(async () => {
  broker = await startBroker();
  db = new Broker({target: broker.target, clientId: 'node-types'});
});

after(async () => {
  if (db) await db.close();
  if (broker) await broker.stop();
});

async function one(sql, values, options) {
  const result = await db.query(sql, values, options);
  assert.equal(result.rows.length, 1);
  return result.rows[0];
}

describe('parameters', () => {
  test('a small integer number is sent as int4, so int4-only functions resolve', async () => {
    const row = await one('SELECT $1 AS v, pg_typeof($1)::text AS t, substr(\'abcdef\', $2) AS s',
      [7, 3]);
    assert.deepEqual(row, {v: 7, t: 'integer', s: 'cdef'});
  });

  test('an integer number beyond int4 is sent as int8', async () => {
    const row = await one('SELECT $1 AS v, pg_typeof($1)::text AS t', [2 ** 40]);
    assert.deepEqual(row, {v: 2n ** 40n, t: 'bigint'});
  });

  test('a non-integer number is sent as float8, exactly', async () => {
    const row = await one('SELECT $1 AS v, pg_typeof($1)::text AS t', [0.1]);
    assert.deepEqual(row, {v: 0.1, t: 'double precision'});
    const special = await one('SELECT $1 AS a, $2 AS b, $3 AS c', [NaN, Infinity, -Infinity]);
    assert.deepEqual(special, {a: NaN, b: Infinity, c: -Infinity});
  });

  test('a bigint is sent as int8, and beyond int8 as numeric', async () => {
    const max = 2n ** 63n - 1n;
    const row = await one('SELECT $1 AS v, pg_typeof($1)::text AS t, $2 AS big, ' +
                          'pg_typeof($2)::text AS bt', [max, max + 1n]);
    assert.deepEqual(row, {v: max, t: 'bigint', big: '9223372036854775808', bt: 'numeric'});
  });

  test('a string is untyped: PostgreSQL infers its type from the context', async () => {
    assert.deepEqual(await one('SELECT $1 AS v', ['héllo ☃']), {v: 'héllo ☃'});
    assert.deepEqual(await one('SELECT $1::int4 + 1 AS n, $2::date AS d', ['41', '2024-02-29']),
      {n: 42, d: new Date(2024, 1, 29)});
  });

  test('booleans, NULL and undefined', async () => {
    const row = await one('SELECT $1 AS a, $2 AS b, $3::text AS c, $4::int4 AS d',
      [true, false, null, undefined]);
    assert.deepEqual(row, {a: true, b: false, c: null, d: null});
  });

  test('a Buffer or Uint8Array is sent as bytea, every byte value intact', async () => {
    const all = Buffer.from(Array.from({length: 256}, (_, i) => i));
    const row = await one('SELECT $1 AS a, $2 AS b, pg_typeof($1)::text AS t',
      [all, new Uint8Array([0, 1, 2])]);
    assert.deepEqual(row.a, all);
    assert.deepEqual(row.b, Buffer.from([0, 1, 2]));
    assert.equal(row.t, 'bytea');
  });

  test('a Date is sent as timestamptz and comes back as the same instant', async () => {
    const at = new Date(Date.UTC(2024, 1, 29, 12, 34, 56, 789));
    const row = await one('SELECT $1 AS v, pg_typeof($1)::text AS t', [at]);
    assert.equal(row.t, 'timestamp with time zone');
    assert.equal(row.v.getTime(), at.getTime());
  });

  test('a plain object is sent as jsonb; json() sends any document', async () => {
    const row = await one('SELECT $1 AS o, pg_typeof($1)::text AS t, $2 AS a, $3 AS s',
      [{b: 1, a: [true, null, 'x']}, json([1, {c: 2}]), json('text')]);
    assert.deepEqual(row, {o: {a: [true, null, 'x'], b: 1}, t: 'jsonb', a: [1, {c: 2}], s: 'text'});
  });

  test('arrays are PostgreSQL arrays, typed by their elements, nested for dimensions', async () => {
    // Arrays of strings are untyped, as strings are: $2 takes the type the
    // context gives it (text[] here, uuid[] in uuid_column = ANY($2)).
    const row = await one('SELECT $1 AS ints, pg_typeof($1)::text AS it, $2::text[] AS texts, ' +
                          '$3 AS grid, pg_typeof($3)::text AS gt, $4::int4[] AS empty, ' +
                          '$5 AS floats, $6 AS bools',
    [[1, null, 3], ['a', 'b "q"', null], [[1, 2], [3, 4]], [], [1.5, 2.5], [true, false]]);
    assert.deepEqual(row, {
      ints: [1, null, 3], it: 'integer[]', texts: ['a', 'b "q"', null],
      grid: [[1, 2], [3, 4]], gt: 'integer[]', empty: [], floats: [1.5, 2.5],
      bools: [true, false],
    });
  });

  test('typed(value, type) sends the value as the named type', async () => {
    const row = await one('SELECT $1 AS u, pg_typeof($1)::text AS ut, $2 AS d, ' +
                          'pg_typeof($2)::text AS dt, $3 AS n, pg_typeof($3)::text AS nt',
    [typed('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'uuid'), typed('2026-12-02', 'date'),
      typed(7, 'int2')]);
    assert.equal(row.u, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
    assert.equal(row.ut, 'uuid');
    assert.ok(row.d instanceof Date);
    assert.equal(row.dt, 'date');
    assert.deepEqual([row.n, row.nt], [7, 'smallint']);
  });

  test('the types option names each parameter\'s type', async () => {
    const row = await one('SELECT $1 AS a, pg_typeof($1)::text AS t, $2 AS b',
      ['{1,2}', 'x'], {types: ['int8[]']});
    assert.deepEqual(row, {a: [1n, 2n], t: 'bigint[]', b: 'x'});
  });

  test('a value of an unsupported kind is a TypeError before anything is sent', async () => {
    await assert.rejects(db.query('SELECT $1', [Symbol('s')]), TypeError);
    await assert.rejects(db.query('SELECT $1', [new Map()]), /cannot send a Map/);
    await assert.rejects(db.query('SELECT $1', ['a\u0000b']), /NUL character/);
    await assert.rejects(db.query('SELECT $1', [new Date(NaN)]), /invalid Date/);
  });

  test('an object with toPostgres() is sent as what it returns, as node-postgres does', async () => {
    const money = {toPostgres: () => '12.50'};
    assert.deepEqual(await one('SELECT $1::numeric AS v', [money]), {v: '12.50'});
  });
});

describe('results', () => {
  test('each column type decodes to its JavaScript value', async () => {
    const row = await one(`SELECT 1::int2 AS i2, 2::int4 AS i4, 3::int8 AS i8,
      1.5::float4 AS f4, 2.25::float8 AS f8, 12345678901234567890.123456789::numeric AS num,
      true AS b, 'x'::text AS t, 'v'::varchar AS vc, 'ab'::char(4) AS ch,
      '\\x00ff'::bytea AS by, '{"b":1,"a":2}'::json AS j, '{"b":1,"a":2}'::jsonb AS jb,
      'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,
      '2024-02-29 12:34:56.789+02'::timestamptz AS tz,
      '12:34:56'::time AS tm, '1 day 02:00:00'::interval AS iv, 'infinity'::timestamptz AS inf,
      '-infinity'::date AS ninf, 26::oid AS o, '127.0.0.1'::inet AS ip`);
    assert.deepEqual(row, {
      i2: 1, i4: 2, i8: 3n, f4: 1.5, f8: 2.25, num: '12345678901234567890.123456789', b: true,
      t: 'x', vc: 'v', ch: 'ab  ', by: Buffer.from([0, 255]), j: {b: 1, a: 2}, jb: {a: 2, b: 1},
      u: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', tz: new Date('2024-02-29T10:34:56.789Z'),
      tm: '12:34:56', iv: 'P1DT2H', inf: Infinity, ninf: -Infinity, o: 26, ip: '127.0.0.1',
    });
  });

  test('timestamp and date come back as Dates in local time, as node-postgres reads them',
    async () => {
      const row = await one('SELECT \'2024-02-29 12:34:56.5\'::timestamp AS ts, ' +
                            '\'2024-02-29\'::date AS d, \'0044-03-15\'::date AS old, ' +
                            '\'0044-03-15 BC\'::date AS bc');
      assert.deepEqual(row.ts, new Date(2024, 1, 29, 12, 34, 56, 500));
      assert.deepEqual(row.d, new Date(2024, 1, 29));
      const old = new Date(2000, 2, 15);
      old.setFullYear(44);
      assert.deepEqual(row.old, old);
      assert.equal(row.bc.getFullYear(), -43);
    });

  test('NULL of every type is null, also inside arrays', async () => {
    const row = await one(`SELECT NULL::int8 AS a, NULL::bytea AS b, NULL::jsonb AS c,
      NULL::timestamptz AS d, NULL::numeric AS e, NULL::bool AS f, NULL::text[] AS g,
      ARRAY[NULL, 1]::int8[] AS h`);
    assert.deepEqual(row, {a: null, b: null, c: null, d: null, e: null, f: null, g: null,
      h: [null, 1n]});
  });

  test('arrays of each element type decode element by element', async () => {
    const row = await one(`SELECT ARRAY[1,2]::int8[] AS i8, ARRAY['1.50']::numeric[] AS num,
      ARRAY['2024-01-01 00:00:00+00']::timestamptz[] AS tz, ARRAY['\\x01']::bytea[] AS by,
      ARRAY['{"a":1}']::jsonb[] AS js, '{{a,b},{c,NULL}}'::text[] AS grid, '{}'::int4[] AS e`);
    assert.deepEqual(row, {
      i8: [1n, 2n], num: ['1.50'], tz: [new Date('2024-01-01T00:00:00Z')],
      by: [Buffer.from([1])], js: [{a: 1}], grid: [['a', 'b'], ['c', null]], e: [],
    });
  });

  test('int8 comes back as BigInt by default, as a string or a number on request', async () => {
    const sql = 'SELECT 9007199254740993::int8 AS big, ARRAY[5]::int8[] AS arr';
    assert.deepEqual(await one(sql), {big: 9007199254740993n, arr: [5n]});
    const asString = new Broker({target: broker.target, int8: 'string'});
    const asNumber = new Broker({target: broker.target, int8: 'number'});
    try {
      assert.deepEqual((await asString.query(sql)).rows[0], {big: '9007199254740993', arr: ['5']});
      assert.deepEqual((await asNumber.query(sql)).rows[0], {big: 9007199254740992, arr: [5]});
    } finally {
      await asString.close();
      await asNumber.close();
    }
    assert.throws(() => new Broker({target: broker.target, int8: 'long'}), /int8 must be/);
  });

  test('rowMode array gives rows as arrays; fields describe the columns', async () => {
    const result = await db.query({text: 'SELECT 1 AS a, \'x\'::text AS a', rowMode: 'array'});
    assert.deepEqual(result.rows, [[1, 'x']]);
    assert.deepEqual(result.fields, [
      {name: 'a', dataTypeID: 23, dataTypeName: 'int4'},
      {name: 'a', dataTypeID: 25, dataTypeName: 'text'},
    ]);
  });

  test('command and rowCount come from the command tag, as node-postgres reports them',
    async () => {
      const t = tableName();
      const created = await db.query(`CREATE TABLE ${t} (id int)`);
      assert.deepEqual([created.command, created.rowCount, created.rows], ['CREATE', null, []]);
      try {
        const inserted = await db.query(`INSERT INTO ${t} SELECT generate_series(1, 3)`);
        assert.deepEqual([inserted.command, inserted.rowCount], ['INSERT', 3]);
        const updated = await db.query(`UPDATE ${t} SET id = id + 1 WHERE id > $1`, [1]);
        assert.deepEqual([updated.command, updated.rowCount], ['UPDATE', 2]);
        const selected = await db.query(`SELECT id FROM ${t} ORDER BY id`);
        assert.deepEqual([selected.command, selected.rowCount, selected.rows],
          ['SELECT', 3, [{id: 1}, {id: 3}, {id: 4}]]);
      } finally {
        await db.query(`DROP TABLE ${t}`);
      }
    });
});
