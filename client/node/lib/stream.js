'use strict';
// RowStream: a streamed query (StreamExecute, docs/streaming.md) as a
// Readable stream of rows in object mode, in the spirit of pg-query-stream
// and pg-cursor: `for await (const row of broker.stream(sql, values))`, or
// `.pipe()` into a Writable.
//
// Back pressure: rows are pushed only while the Readable's buffer is under
// its highWaterMark (rows, default 100); beyond it the gRPC call is paused,
// so grpc-js stops reading messages, HTTP/2 flow control stops the broker,
// and the broker stops reading from PostgreSQL. Memory is bounded by the
// highWaterMark plus one message of rows (at most
// BROKER_STREAM_WINDOW_BYTES / 4 bytes) plus gRPC's flow-control windows.
//
// Events: 'fields' (the columns, before any row: [{name, dataTypeID,
// dataTypeName}]), 'data' (each row), 'end' (the result was complete:
// `command` and `rowCount` are then set), 'error' (a DatabaseError: the
// statement failed, also mid-result; the rows before it are not a complete
// result), 'close'. destroy() (or breaking out of `for await`) cancels the
// call, which cancels the statement in PostgreSQL.
//
// Single-threaded (Node): no locking.

const {Readable} = require('node:stream');
const grpc = require('@grpc/grpc-js');
const {DatabaseError, fromServiceError} = require('./errors');
const {decoder} = require('./types');

const DEFAULT_HIGH_WATER_MARK = 100;

function rowCountOf(tag) {
  const last = tag.split(' ').pop();
  return /^\d+$/.test(last) ? Number(last) : null;
}

class RowStream extends Readable {
  /**
   * @param {function(): ?object} start opens the gRPC call (a readable of
   *   StreamExecuteResponse messages), or returns null when there is none
   *   to open (the caller then destroys the stream with the reason).
   * @param {{rowMode?: 'array', int8: string, highWaterMark?: number,
   *   signal?: AbortSignal}} options
   */
  constructor(start, options) {
    super({objectMode: true, highWaterMark: options.highWaterMark || DEFAULT_HIGH_WATER_MARK});
    /** The result's columns, once 'fields' was emitted (null before). */
    this.fields = null;
    /** After 'end': the command tag's first word ('SELECT', 'INSERT', ...). */
    this.command = null;
    /** After 'end': the command tag's count (null for commands without one). */
    this.rowCount = null;
    this._rowMode = options.rowMode;
    this._int8 = options.int8;
    this._decoders = [];
    this._ended = false; // the `end` message arrived
    this._signal = options.signal;
    this._onAbort = null;
    if (this._signal) {
      if (this._signal.aborted) {
        process.nextTick(() => this.destroy(this._signal.reason));
        this._call = null;
        return;
      }
      this._onAbort = () => this.destroy(this._signal.reason);
      this._signal.addEventListener('abort', this._onAbort, {once: true});
    }
    // null: the stream fails before any call (its creator destroys it).
    this._call = start();
    if (!this._call) return;
    this._call.on('data', (message) => this._message(message));
    this._call.on('error', (err) => {
      if (this.destroyed) return;
      this.destroy(fromServiceError(err));
    });
    this._call.on('end', () => {
      if (this.destroyed) return;
      if (!this._ended) {
        this.destroy(new DatabaseError('the broker ended the stream without its end message: ' +
          'the rows read are not the whole result', {grpcCode: grpc.status.DATA_LOSS}));
        return;
      }
      this.push(null);
    });
  }

  _message(message) {
    switch (message.kind) {
      case 'columns': {
        const columns = (message.columns && message.columns.columns) || [];
        this.fields = columns.map((c) => ({
          name: c.name,
          dataTypeID: c.type_oid || 0,
          dataTypeName: c.type_name || '',
        }));
        this._decoders = this.fields.map((f) => decoder(f.dataTypeName, {int8: this._int8}));
        this.emit('fields', this.fields);
        break;
      }
      case 'rows': {
        let more = true;
        for (const row of (message.rows && message.rows.rows) || []) {
          more = this.push(this._decode(row));
        }
        // Over the highWaterMark: stop reading the call until _read asks.
        if (!more) this._call.pause();
        break;
      }
      case 'end': {
        const tag = message.end.command_tag || '';
        this.command = tag.split(' ')[0] || null;
        this.rowCount = rowCountOf(tag);
        this._ended = true;
        break;
      }
      default:
        break;
    }
  }

  _decode(row) {
    const cells = row.values || [];
    if (this._rowMode === 'array') return cells.map((v, i) => this._decoders[i](v));
    const out = {};
    for (let i = 0; i < cells.length; i++) out[this.fields[i].name] = this._decoders[i](cells[i]);
    return out;
  }

  _read() {
    if (this._call) this._call.resume();
  }

  _destroy(err, callback) {
    if (this._onAbort) this._signal.removeEventListener('abort', this._onAbort);
    if (this._call && !this._ended) this._call.cancel();
    callback(err);
  }
}

module.exports = {RowStream};
