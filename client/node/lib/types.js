'use strict';
// JavaScript values <-> the broker's Value messages (docs/types.md).
//
// Parameters (toValue), typed as the Python driver types them (so the same
// SQL resolves the same way from both): null/undefined -> NULL; boolean ->
// bool; a number that is an integer -> int4 when it fits (so int4-only
// functions such as substr(s, $1) resolve), else int8 while it is a safe
// integer; any other number -> float8; bigint -> int8 (numeric beyond int8);
// string -> untyped text (PostgreSQL infers the type from the context, as for
// a quoted literal); Buffer/Uint8Array -> bytea; Date -> timestamptz; arrays
// -> PostgreSQL arrays (nested for several dimensions, typed elem[] when all
// elements share one type); plain objects -> jsonb; json(x) -> jsonb of any
// document (a JSON array, where a bare array would be a PostgreSQL array);
// typed(x, 'uuid') -> x sent as the named type (Value.type).
//
// Results (decoder): by the column's PostgreSQL type name, never guessed
// from the text, as node-postgres decodes them: int8 -> BigInt (or string
// or number: the int8 option), int2/int4/oid -> number, float4/float8 ->
// number, numeric -> string (exact), bool, bytea -> Buffer, json/jsonb ->
// parsed, timestamptz -> Date, timestamp and date -> Date in local time
// ('infinity' -> Infinity, '-infinity' -> -Infinity), arrays -> (nested)
// arrays, every other type -> the server's text (uuid, interval, time, ...).
//
// Pure functions and immutable objects.

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** A parameter sent as the PostgreSQL type `type` (Value.type). */
class TypedValue {
  constructor(value, type) {
    if (typeof type !== 'string' || type === '') {
      throw new TypeError('typed(value, type): type must be a PostgreSQL type name, e.g. "uuid"');
    }
    this.value = value;
    this.type = type;
    Object.freeze(this);
  }
}

/** A parameter sent as a JSON document (jsonb), whatever its shape. */
class JsonValue {
  constructor(value) {
    this.value = value;
    Object.freeze(this);
  }
}

function typed(value, type) {
  return new TypedValue(value, type);
}

function json(value) {
  return new JsonValue(value);
}

function checkText(s, what) {
  if (s.includes('\u0000')) {
    throw new TypeError(`${what} contains a NUL character, which PostgreSQL text cannot hold`);
  }
  return s;
}

function jsonText(x) {
  let text;
  try {
    text = JSON.stringify(x);
  } catch (e) {
    throw new TypeError(`cannot encode the parameter as JSON: ${e.message}`);
  }
  if (text === undefined) throw new TypeError('the parameter has no JSON form');
  return checkText(text, 'a JSON document');
}

function isPlainObject(x) {
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

function describe(x) {
  if (x === null) return 'null';
  if (typeof x !== 'object') return typeof x;
  return (x.constructor && x.constructor.name) || 'object';
}

// Fills `v` (a plain Value object) from x; returns the PostgreSQL type to
// name in Value.type, or null for the type the case implies.
function fill(v, x) {
  if (x === null || x === undefined) {
    v.null_value = 'NULL_VALUE';
    return null;
  }
  switch (typeof x) {
    case 'boolean':
      v.bool_value = x;
      return null;
    case 'number':
      if (Number.isInteger(x) && x >= INT32_MIN && x <= INT32_MAX) {
        v.int64_value = String(x === 0 ? 0 : x); // -0 is 0
        return 'int4';
      }
      if (Number.isSafeInteger(x)) {
        v.int64_value = String(x);
        return null;
      }
      v.double_value = x;
      return null;
    case 'bigint':
      if (x >= INT64_MIN && x <= INT64_MAX) {
        v.int64_value = x.toString();
      } else {
        v.numeric_value = x.toString();
      }
      return null;
    case 'string':
      v.string_value = checkText(x, 'a string parameter');
      return null;
    case 'object':
      break;
    default:
      throw new TypeError(`cannot send a ${typeof x} as a PostgreSQL parameter`);
  }
  if (x instanceof TypedValue) {
    const inner = {};
    fill(inner, x.value);
    Object.assign(v, inner);
    return x.type;
  }
  if (x instanceof JsonValue) {
    v.json_value = jsonText(x.value);
    return null;
  }
  if (x instanceof Uint8Array) { // Buffer too
    v.bytes_value = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
    return null;
  }
  if (x instanceof Date) {
    if (Number.isNaN(x.getTime())) throw new TypeError('cannot send an invalid Date');
    v.string_value = x.toISOString();
    return 'timestamptz';
  }
  if (Array.isArray(x)) {
    const values = [];
    const types = new Set();
    for (const element of x) {
      const e = {};
      const t = fill(e, element);
      values.push(e);
      if (element === null || element === undefined) continue;
      if (Array.isArray(element)) {
        if (t !== null) types.add(t.slice(0, -2)); // the sub-array's element type
      } else {
        types.add(t);
      }
    }
    v.array_value = {values};
    if (types.size === 1) {
      const [t] = types;
      if (t !== null) return `${t}[]`;
    }
    return null;
  }
  if (typeof x.toPostgres === 'function') { // node-postgres' custom type hook
    return fill(v, x.toPostgres());
  }
  if (isPlainObject(x)) {
    v.json_value = jsonText(x);
    return null;
  }
  throw new TypeError(`cannot send a ${describe(x)} as a PostgreSQL parameter (supported: ` +
                      'null, undefined, boolean, number, bigint, string, Buffer, Uint8Array, ' +
                      'Date, arrays, plain objects, json(x), typed(x, type))');
}

/**
 * One parameter as a Value message; `type` (a per-query override, the
 * `types` option) wins over the type the value implies.
 */
function toValue(x, type) {
  const v = {};
  const implied = fill(v, x);
  const t = type || implied;
  if (t) v.type = t;
  return v;
}

// ---- results ----------------------------------------------------------------

const TIMESTAMP = new RegExp(
  '^(\\d{4,})-(\\d\\d)-(\\d\\d)(?:[ T](\\d\\d):(\\d\\d):(\\d\\d)(\\.\\d+)?)?' +
  '(?:([+-])(\\d\\d)(?::?(\\d\\d))?(?::?(\\d\\d))?)?( BC)?$');

// node-postgres' rules (pg-types): a zone in the text -> that instant; none
// (timestamp, date) -> local time. Years before 100 and BC are honoured.
function parseDateTime(text, typeName) {
  if (text === 'infinity') return Infinity;
  if (text === '-infinity') return -Infinity;
  const m = TIMESTAMP.exec(text);
  if (!m) throw new TypeError(`cannot read the ${typeName} value ${JSON.stringify(text)}`);
  let year = Number(m[1]);
  if (m[12]) year = 1 - year;
  const month = Number(m[2]) - 1;
  const day = Number(m[3]);
  const hour = Number(m[4] || 0);
  const minute = Number(m[5] || 0);
  const second = Number(m[6] || 0);
  const ms = m[7] ? Math.floor(Number(`0${m[7]}`) * 1000) : 0;
  const d = new Date(0);
  if (m[8]) {
    d.setUTCFullYear(year, month, day);
    d.setUTCHours(hour, minute, second, ms);
    const sign = m[8] === '-' ? -1 : 1;
    const offset = sign * (Number(m[9]) * 3600 + Number(m[10] || 0) * 60 + Number(m[11] || 0));
    return new Date(d.getTime() - offset * 1000);
  }
  d.setFullYear(year, month, day);
  d.setHours(hour, minute, second, ms);
  return d;
}

const TEXT_DECODERS = {
  timestamptz: parseDateTime,
  timestamp: parseDateTime,
  date: parseDateTime,
  // json and jsonb come as json_value; text here only if a future broker
  // sends them so.
  json: (t) => JSON.parse(t),
  jsonb: (t) => JSON.parse(t),
};

function int8Decoder(mode) {
  switch (mode) {
    case undefined:
    case 'bigint':
      return (s) => BigInt(s);
    case 'string':
      return (s) => s;
    case 'number':
      return (s) => Number(s);
    default:
      throw new TypeError(`int8 must be 'bigint', 'string' or 'number', not ${String(mode)}`);
  }
}

/**
 * A function decoding one cell (a Value) of a column of PostgreSQL type
 * `typeName` ("int4", "_text" for text[]).
 */
function decoder(typeName, options = {}) {
  const int8 = int8Decoder(options.int8);
  const elementName = typeName.startsWith('_') ? typeName.slice(1) : typeName;
  let element = null; // built on the first array cell
  const text = TEXT_DECODERS[typeName];
  const decode = (v) => {
    switch (v.kind) {
      case undefined:
      case 'null_value':
        return null;
      case 'int64_value':
        return typeName === 'int8' ? int8(v.int64_value) : Number(v.int64_value);
      case 'double_value':
        return v.double_value;
      case 'bool_value':
        return v.bool_value;
      case 'string_value':
        return text ? text(v.string_value, typeName) : v.string_value;
      case 'numeric_value':
        return v.numeric_value;
      case 'bytes_value':
        return Buffer.from(v.bytes_value);
      case 'json_value':
        return JSON.parse(v.json_value);
      case 'array_value':
        if (element === null) element = decoder(elementName, options);
        return v.array_value.values.map(element);
      default:
        throw new TypeError(`a result value of an unknown kind (${v.kind})`);
    }
  };
  return decode;
}

module.exports = {toValue, decoder, typed, json, TypedValue, JsonValue, parseDateTime};
