'use strict';
// SharedPipeline: a Broker's Execute calls multiplexed over one Pipeline
// stream (docs/pipeline.md), with the unary call as the fallback.
//
// Why: a unary gRPC call costs a full HTTP/2 stream of CPU on both sides;
// calls on one stream, several per message, cost a fraction of it. Every
// Execute a Broker makes (broker.query(), session.query(), a transaction's
// queries) goes through here unless the Broker was made with
// `pipeline: false`.
//
// How:
// - The stream opens lazily with the first call and is half-closed once
//   nothing is in flight or queued at the end of an event-loop turn (an open
//   call holds a ref on the channel's socket; closing when idle keeps the
//   process free to exit, as with unary calls). A caller that awaits one
//   query and issues the next in its continuation keeps it open.
// - Calls are queued and flushed on a microtask; one write is in flight at a
//   time (its callback, and 'drain' when write() returned false), and what
//   queued meanwhile goes into the next message. No timer: a lone call is
//   written at once.
// - Results complete the callers' promises by id. A result's status is
//   turned into the DatabaseError the unary call would have given, through
//   the same mapping (errors.serviceErrorOfPipelineStatus then
//   fromServiceError).
// - Limits: at most one call in flight before the broker's first message
//   (its limits) arrived, then at most the tighter of the stream and client
//   limits; more are queued here, never refused. A call the broker refuses
//   for those limits all the same (the client's other streams count too)
//   did not run and goes unary.
// - Size: a message is kept under 64 KiB (estimated) and a call over 16 KiB
//   goes unary: the broker's BROKER_MAX_REQUEST_BYTES bounds a whole
//   message, and a message over it would end the stream with every call on
//   it, while a unary call over it fails alone.
// - A deadline becomes the call's `timeout` (the remaining time when it is
//   written) and a local timer, as grpc-js keeps for a unary call; the timer
//   and an AbortSignal reject the caller at once and send `cancel: [id]`.
// - A broker without Pipeline (UNIMPLEMENTED): the calls on that stream did
//   not run and go unary, as does every later call (remembered). A stream
//   the broker ends by its drain (UNAVAILABLE with the trailer
//   `sessionbroker-reason: DRAINING`, read by token, never by message) ended
//   once every running call's result was sent: its written calls without a
//   result were never read, so they go unary as calls refused with DRAINING
//   do (the draining broker refuses them UNAVAILABLE, or another instance
//   serves them). A stream that fails or ends otherwise: calls already
//   written reject with the stream's error mapped as a unary call's
//   (UNAVAILABLE: they may or may not have run; never resent). Either way
//   calls not yet written go unary, and so do new calls for a pause that
//   grows while streams keep failing (1 s to 30 s) before a new stream is
//   tried.
//
// Node runs it on one thread: no locks; all state changes happen in
// callbacks of the event loop. Owned by its Broker.

const grpc = require('@grpc/grpc-js');
const {fromServiceError, serviceErrorOfPipelineStatus} = require('./errors');

const RETRY_INITIAL_MS = 1000;
const RETRY_MAX_MS = 30000;
// One request message is bounded by the broker's BROKER_MAX_REQUEST_BYTES
// (16 MiB by default, at least 1 KiB), which the client does not know, and
// a message over it ends the stream with every call on it. So messages are
// kept under MESSAGE_BUDGET_BYTES, and a call larger than
// UNARY_ABOVE_BYTES goes unary, where a size error is that call's alone.
const MESSAGE_BUDGET_BYTES = 64 * 1024;
// The reasons of the broker's refusals of calls that did not run
// (server/transport/pipeline_book.h), so the call goes unary: PIPELINE_LIMIT
// (the stream's or the client's Pipeline limit, which a unary call is not
// bound by) and DRAINING (read after the broker's drain began).
const DRAINING = 'DRAINING';
const NOT_RUN_REASONS = new Set(['PIPELINE_LIMIT', DRAINING]);
const REASON_KEY = 'sessionbroker-reason';
const UNARY_ABOVE_BYTES = 16 * 1024;

// An upper estimate of a request's encoded size: its strings' UTF-8 bytes,
// its buffers' bytes and a few bytes of framing per field.
function estimatedBytes(value) {
  if (typeof value === 'string') return Buffer.byteLength(value) + 6;
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return value.length + 6;
  if (Array.isArray(value)) {
    let n = 6;
    for (const v of value) n += estimatedBytes(v);
    return n;
  }
  if (value !== null && typeof value === 'object') {
    let n = 6;
    for (const key of Object.keys(value)) n += estimatedBytes(value[key]) + 2;
    return n;
  }
  return 11;
}

// The stream was ended by the broker's drain: a non-OK status whose trailers
// carry the DRAINING reason token.
function endedByDrain(status) {
  if (status.code === grpc.status.OK || !status.metadata) return false;
  const values = status.metadata.get(REASON_KEY);
  return values.length > 0 && String(values[0]) === DRAINING;
}

function abortReason(signal) {
  if (signal.reason !== undefined) return signal.reason;
  const e = new Error('This operation was aborted');
  e.name = 'AbortError';
  return e;
}

function duration(ms) {
  const whole = Math.max(0, ms);
  const seconds = Math.floor(whole / 1000);
  return {seconds: String(seconds), nanos: Math.round((whole - seconds * 1000) * 1e6)};
}

// The error grpc-js gives a unary call whose deadline passed on the client.
function deadlineError(deadlineMs) {
  const err = new Error(`${grpc.status.DEADLINE_EXCEEDED} DEADLINE_EXCEEDED: ` +
                        `Deadline exceeded after ${(deadlineMs / 1000).toFixed(3)}s`);
  err.code = grpc.status.DEADLINE_EXCEEDED;
  err.details = `Deadline exceeded after ${(deadlineMs / 1000).toFixed(3)}s`;
  err.metadata = new grpc.Metadata();
  return fromServiceError(err);
}

/** One caller's call: queued, then written to a stream, then settled. */
class Entry {
  constructor(id, request, deadlineMs, signal, resolve, reject) {
    this.id = id;
    this.request = request;
    this.deadlineMs = deadlineMs;
    this.deadlineAt = deadlineMs === null ? null : Date.now() + deadlineMs;
    this.signal = signal;
    this.resolve = resolve;
    this.reject = reject;
    this.settled = false;
    this.stream = null; // the Stream it was written to
    this.timer = null;
    this.onAbort = null;
    this.bytes = 0; // estimatedBytes(request)
  }
}

/** One Pipeline call (grpc-js duplex) and what is in flight on it. */
class Stream {
  constructor(call) {
    this.call = call;
    this.limit = 1; // until the broker's limits arrive
    this.limitsKnown = false;
    this.inFlight = new Map(); // id (string) -> Entry, until its result arrives
    this.cancels = []; // ids to cancel in the next message
    this.writing = false;
    this.ending = false; // half-closed by us
    this.done = false;
  }
}

class SharedPipeline {
  /**
   * @param {function(): object} open starts a Pipeline call (a grpc-js
   *     ClientDuplexStream with the Broker's metadata).
   * @param {function(object, object): Promise} unary runs an Execute request
   *     as a unary call with {deadlineMs, signal} options.
   */
  constructor(open, unary) {
    this._open = open;
    this._unary = unary;
    this._stream = null;
    this._queue = [];
    this._nextId = 1;
    this._flushQueued = false;
    this._idleCheckQueued = false;
    this._unsupported = false;
    this._retryAt = 0;
    this._retryMs = RETRY_INITIAL_MS;
    this._closed = false;
    /**
     * Counters for diagnostics: calls answered on a stream, calls made unary,
     * streams opened, written calls a drained stream handed back to unary.
     */
    this.stats = {streamCalls: 0, unaryCalls: 0, streamsOpened: 0, drainHandedBack: 0};
  }

  /** Whether new calls go to a stream now (else unary). */
  get usable() {
    return !this._closed && this._streamAllowed();
  }

  /**
   * Runs an Execute request: on the shared stream while it is usable, else
   * unary. `deadlineMs` null means none. Resolves to the ExecuteResponse.
   */
  execute(request, deadlineMs, signal) {
    if (!this.usable) return this._viaUnary(request, deadlineMs, signal);
    const bytes = estimatedBytes(request);
    if (bytes > UNARY_ABOVE_BYTES) return this._viaUnary(request, deadlineMs, signal);
    return new Promise((resolve, reject) => {
      const entry = new Entry(String(this._nextId++), request, deadlineMs, signal, resolve,
        reject);
      entry.bytes = bytes;
      if (deadlineMs !== null) {
        entry.timer = setTimeout(() => this._giveUp(entry, deadlineError(deadlineMs)),
          Math.max(0, deadlineMs));
      }
      if (signal) {
        entry.onAbort = () => this._giveUp(entry, abortReason(signal));
        signal.addEventListener('abort', entry.onAbort, {once: true});
      }
      this._queue.push(entry);
      this._scheduleFlush();
    });
  }

  /** Half-closes the stream once every queued call was written; calls in flight finish. */
  close() {
    this._closed = true;
    this._scheduleFlush();
  }

  // ---- internals ---------------------------------------------------------

  // A stream may be used (calls queued before close() still may).
  _streamAllowed() {
    return !this._unsupported && Date.now() >= this._retryAt;
  }

  _viaUnary(request, deadlineMs, signal) {
    this.stats.unaryCalls++;
    return this._unary(request, {deadlineMs, signal});
  }

  // Settles a call's promise once; the first outcome wins.
  _settle(entry, err, value) {
    if (entry.settled) return;
    entry.settled = true;
    if (entry.timer) clearTimeout(entry.timer);
    if (entry.onAbort) entry.signal.removeEventListener('abort', entry.onAbort);
    if (err) entry.reject(err);
    else entry.resolve(value);
  }

  // A deadline or an abort: the caller is answered now; a written call is
  // cancelled in the broker (its slot frees when the broker answers it).
  _giveUp(entry, err) {
    if (entry.settled) return;
    this._settle(entry, err);
    const stream = entry.stream;
    if (stream === null) {
      const at = this._queue.indexOf(entry);
      if (at >= 0) this._queue.splice(at, 1);
      this._scheduleIdleCheck();
    } else if (!stream.done && !stream.ending && stream.inFlight.has(entry.id)) {
      stream.cancels.push(entry.id);
      this._scheduleFlush();
    }
  }

  // A call that never reached a stream, or that the broker did not run
  // (UNIMPLEMENTED, refused for the Pipeline limits), runs unary with what is
  // left of its deadline.
  _toUnary(entry) {
    if (entry.settled) return;
    let left = null;
    if (entry.deadlineAt !== null) left = Math.max(0, entry.deadlineAt - Date.now());
    // The unary call takes over the caller's signal and deadline.
    if (entry.timer) clearTimeout(entry.timer);
    if (entry.onAbort) entry.signal.removeEventListener('abort', entry.onAbort);
    entry.timer = null;
    entry.onAbort = null;
    this._viaUnary(entry.request, left, entry.signal).then(
      (value) => this._settle(entry, null, value), (err) => this._settle(entry, err));
  }

  _scheduleFlush() {
    if (this._flushQueued) return;
    this._flushQueued = true;
    queueMicrotask(() => {
      this._flushQueued = false;
      this._flush();
    });
  }

  _scheduleIdleCheck() {
    if (this._idleCheckQueued) return;
    this._idleCheckQueued = true;
    setImmediate(() => {
      this._idleCheckQueued = false;
      const stream = this._stream;
      if (stream && !stream.writing && this._queue.length === 0 &&
          stream.inFlight.size === 0 && stream.cancels.length === 0) {
        this._end(stream);
      }
    });
  }

  _end(stream) {
    stream.ending = true;
    if (this._stream === stream) this._stream = null;
    stream.call.end();
  }

  _flush() {
    if (this._queue.length > 0 && !this._stream && !this._streamAllowed()) {
      // No stream now: what is queued goes unary.
      for (const entry of this._queue.splice(0)) this._toUnary(entry);
      return;
    }
    if (this._queue.length > 0 && !this._stream && !this._startStream()) {
      // The channel cannot start a call (it was closed): unary gives the error.
      for (const entry of this._queue.splice(0)) this._toUnary(entry);
      return;
    }
    const stream = this._stream;
    if (!stream || stream.writing) return;
    const calls = [];
    const room = stream.limit - stream.inFlight.size;
    let bytes = 0;
    while (calls.length < room && this._queue.length > 0) {
      const entry = this._queue[0];
      if (!entry.settled && calls.length > 0 && bytes + entry.bytes > MESSAGE_BUDGET_BYTES) break;
      this._queue.shift();
      if (entry.settled) continue;
      bytes += entry.bytes + 16;
      const call = {id: entry.id, execute: entry.request};
      if (entry.deadlineAt !== null) call.timeout = duration(entry.deadlineAt - Date.now());
      entry.stream = stream;
      stream.inFlight.set(entry.id, entry);
      calls.push(call);
    }
    const cancel = stream.cancels.splice(0);
    if (calls.length === 0 && cancel.length === 0) {
      if (this._closed && this._queue.length === 0) this._end(stream);
      return;
    }
    stream.writing = true;
    let written = false;
    let drained = true;
    const release = () => {
      if (!written || !drained) return;
      stream.writing = false;
      this._flush();
      this._scheduleIdleCheck();
    };
    const ok = stream.call.write({calls, cancel}, () => {
      written = true;
      release();
    });
    if (!ok) {
      drained = false;
      stream.call.once('drain', () => {
        drained = true;
        release();
      });
    }
  }

  // Opens a stream; false if the channel refused to start the call.
  _startStream() {
    let call;
    try {
      call = this._open();
    } catch (err) {
      return false;
    }
    const stream = new Stream(call);
    this._stream = stream;
    this.stats.streamsOpened++;
    call.on('data', (response) => this._onResponse(stream, response));
    // 'error' comes for every status but OK, before 'status'.
    let failure = null;
    call.on('error', (err) => {
      failure = err;
    });
    call.on('status', (status) => this._onEnd(stream, status, failure));
    return true;
  }

  _onResponse(stream, response) {
    if (response.limits) {
      const perStream = Number(response.limits.max_in_flight_per_stream) || 1;
      const perClient = Number(response.limits.max_in_flight_per_client) || Infinity;
      stream.limit = Math.max(1, Math.min(perStream, perClient));
      stream.limitsKnown = true;
      // A stream that got this far works: the next failure starts the pause afresh.
      this._retryMs = RETRY_INITIAL_MS;
    }
    for (const result of response.results || []) {
      const entry = stream.inFlight.get(String(result.id));
      if (!entry) continue;
      stream.inFlight.delete(entry.id);
      if (result.outcome === 'execute') {
        this.stats.streamCalls++;
        this._settle(entry, null, result.execute);
      } else if (result.outcome === 'status' && NOT_RUN_REASONS.has(result.reason)) {
        this._toUnary(entry);
      } else if (result.outcome === 'status') {
        this.stats.streamCalls++;
        this._settle(entry, fromServiceError(serviceErrorOfPipelineStatus(result)));
      } else {
        this._settle(entry, fromServiceError(serviceErrorOfPipelineStatus({
          status: {code: grpc.status.INTERNAL,
            message: `the broker answered Pipeline call ${entry.id} with no outcome`},
        })));
      }
    }
    this._flush();
    this._scheduleIdleCheck();
  }

  _onEnd(stream, status, failure) {
    if (stream.done) return;
    stream.done = true;
    if (this._stream === stream) this._stream = null;
    const written = [...stream.inFlight.values()];
    stream.inFlight.clear();
    if (status.code === grpc.status.UNIMPLEMENTED) {
      // The broker has no Pipeline: nothing ran. Unary from now on.
      this._unsupported = true;
      for (const entry of written) this._toUnary(entry);
    } else if (endedByDrain(status)) {
      // Every call the broker read has its result: the others never ran.
      this._retryAt = Date.now() + this._retryMs;
      this._retryMs = Math.min(RETRY_MAX_MS, this._retryMs * 2);
      this.stats.drainHandedBack += written.length;
      for (const entry of written) this._toUnary(entry);
    } else {
      if (status.code !== grpc.status.OK || written.length > 0) {
        this._retryAt = Date.now() + this._retryMs;
        this._retryMs = Math.min(RETRY_MAX_MS, this._retryMs * 2);
      }
      // Written calls may have run: they fail as a lost unary call would.
      const failed = status.code === grpc.status.OK ? null : Object.assign(
        new Error(`${status.code} ${grpc.status[status.code]}: ${status.details}`),
        {code: status.code, details: status.details, metadata: status.metadata});
      const err = failure || failed || Object.assign(
        new Error(`${grpc.status.UNAVAILABLE} UNAVAILABLE: the Pipeline stream ended ` +
                  'before the call\'s result'),
        {code: grpc.status.UNAVAILABLE, details: 'the Pipeline stream ended before the ' +
          'call\'s result', metadata: status.metadata || new grpc.Metadata()});
      for (const entry of written) this._settle(entry, fromServiceError(err));
    }
    this._flush();
  }
}

module.exports = {SharedPipeline};
