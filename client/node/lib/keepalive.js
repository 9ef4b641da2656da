'use strict';
// The one KeepAlive stream of a Broker: it holds every open session of that
// Broker (docs/sessions.md, "KeepAlive: a lease bound to a stream").
//
// While the stream is open the broker never lets those sessions expire; if
// the process dies its socket closes and the broker ends them after
// BROKER_SESSION_ORPHAN_GRACE, so a crashed service frees its transactions'
// connections in seconds. The stream opens with the first hold() and is
// half-closed when the last session is released or ended (half-closing it
// releases what it holds, so it is closed only when nothing is held). When
// the broker reports a held session ENDED or NOT_FOUND, the session's lease
// records why (`lease.ended`) and later calls on it fail at once. When the
// stream breaks (the broker restarted, the network blipped) a new one is
// opened after a short pause that grows while streams keep breaking, and it
// holds every session again, well within the orphan grace.
//
// The same design as the Python driver's (client/python/sessionbroker/
// _keepalive.py), on Node's single thread: no locks, all state changes
// happen in callbacks of the event loop.

const BACKOFF_INITIAL_MS = 50;
const BACKOFF_MAX_MS = 1000;

/** What the KeepAlive stream knows about one held session. */
class Lease {
  constructor(name) {
    this.name = name;
    /** Why the broker ended the session, once it did; else null. */
    this.ended = null;
  }
}

class KeepAlive {
  /**
   * @param {function(): object} open starts a KeepAlive call (a grpc-js
   *     ClientDuplexStream with the Broker's metadata).
   */
  constructor(open) {
    this._open = open;
    this._held = new Map();
    this._call = null;
    this._timer = null;
    this._backoff = BACKOFF_INITIAL_MS;
    this._closed = false;
  }

  /** Holds the session from now until release(). */
  hold(lease) {
    if (this._closed) return;
    this._held.set(lease.name, lease);
    if (this._call) {
      this._call.write({hold: [lease.name]});
    } else if (!this._timer) {
      this._start();
    }
  }

  /** Stops holding the session (its lease then runs on with its ttl). */
  release(lease) {
    if (!this._held.delete(lease.name)) return;
    if (this._call) this._call.write({release: [lease.name]});
    this._stopIfIdle();
  }

  /** The names of the sessions held now (diagnostics and tests). */
  heldNames() {
    return [...this._held.keys()].sort();
  }

  /** True while a stream is open. */
  get streaming() {
    return this._call !== null;
  }

  /** Ends the stream for good (Broker.close()). */
  close() {
    this._closed = true;
    this._held.clear();
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    this._endCall();
  }

  _start() {
    this._timer = null;
    if (this._closed || this._held.size === 0) return;
    const call = this._open();
    this._call = call;
    call.on('data', (response) => {
      this._backoff = BACKOFF_INITIAL_MS;
      this._apply(response);
    });
    // A failed stream reports its status in 'status' too; this listener
    // only keeps the error from being thrown as unhandled.
    call.on('error', () => {});
    call.on('status', () => this._ended(call));
    call.write({hold: this.heldNames()});
  }

  _ended(call) {
    if (call !== this._call) return; // a stream we closed ourselves
    this._call = null;
    if (this._closed || this._held.size === 0) return;
    const delay = this._backoff;
    this._backoff = Math.min(this._backoff * 2, BACKOFF_MAX_MS);
    this._timer = setTimeout(() => this._start(), delay);
  }

  _apply(response) {
    for (const state of response.sessions || []) {
      if (state.state !== 'ENDED' && state.state !== 'NOT_FOUND') continue;
      const lease = this._held.get(state.name);
      if (!lease) continue;
      this._held.delete(state.name);
      lease.ended = state.reason || (state.state === 'NOT_FOUND' ?
        'the broker no longer knows this session' : 'the broker ended the session');
    }
    this._stopIfIdle();
  }

  _stopIfIdle() {
    if (this._held.size > 0) return;
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    this._endCall();
  }

  _endCall() {
    const call = this._call;
    this._call = null;
    if (call) call.end();
  }
}

module.exports = {KeepAlive, Lease};
