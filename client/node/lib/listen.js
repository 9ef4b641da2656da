'use strict';
// Subscription: LISTEN/NOTIFY through the broker's Listen stream
// (docs/notifications.md), as node-postgres users know it: an EventEmitter
// emitting 'notification' with {channel, payload, processId}.
//
//   const sub = await broker.listen(['orders']);  // resolves once listening
//   sub.on('notification', (msg) => ...);
//   sub.on('gap', (gap) => ...);   // {reason: 'reconnected'|'overflow', dropped, listenerPid}
//   sub.on('error', (err) => ...); // the stream broke: subscribe again
//   await sub.close();
//
// broker.listen() resolves once the broker LISTENs on every channel, so a
// NOTIFY committed afterwards is delivered; events are held until the
// caller's code after the `await` has run, so handlers attached right away
// miss nothing. A 'gap' says notifications may have been missed (the
// broker's listener connection was replaced, or this subscriber read too
// slowly): re-read whatever the notifications were about.
//
// A broken stream (the broker drains or restarts, the network fails) is not
// reconnected behind the caller's back: 'error' is emitted with a
// DatabaseError (UNAVAILABLE), then 'end', as node-postgres emits 'error' on
// a lost connection. As with any EventEmitter, an 'error' without a
// listener throws: attach one. close() cancels the stream (then only 'end').
//
// Single-threaded (Node): no locking.

const {EventEmitter} = require('node:events');
const grpc = require('@grpc/grpc-js');
const {DatabaseError, fromServiceError} = require('./errors');

const GAP_REASONS = {RECONNECTED: 'reconnected', OVERFLOW: 'overflow'};

class Subscription extends EventEmitter {
  constructor(call) {
    super();
    /** The channels listened to, deduplicated, in the order first given. */
    this.channels = [];
    /** The backend pid of the broker's listener connection (updated by gaps). */
    this.listenerPid = 0;
    this._call = call;
    this._closed = false;
    this._ended = false;
  }

  /** Resolves with this subscription once the broker confirmed it listens. */
  _start() {
    return new Promise((resolve, reject) => {
      let confirmed = false;
      this._call.on('data', (message) => {
        if (!confirmed) {
          if (message.event !== 'listening') {
            this._call.cancel();
            reject(new DatabaseError('the broker\'s Listen stream did not begin with its ' +
              'confirmation', {grpcCode: grpc.status.INTERNAL}));
            return;
          }
          confirmed = true;
          this.channels = [...(message.listening.channels || [])];
          this.listenerPid = message.listening.listener_pid || 0;
          // Held until the caller's continuation has attached its handlers.
          this._call.pause();
          resolve(this);
          setImmediate(() => this._call.resume());
          return;
        }
        this._event(message);
      });
      this._call.on('error', (err) => {
        if (!confirmed) {
          reject(fromServiceError(err));
          return;
        }
        if (this._closed && err.code === grpc.status.CANCELLED) return;
        this.emit('error', fromServiceError(err));
      });
      this._call.on('end', () => {
        if (!confirmed) {
          reject(new DatabaseError('the broker ended the Listen stream before listening',
            {grpcCode: grpc.status.UNAVAILABLE}));
        }
      });
      this._call.on('close', () => this._end());
      this._call.on('status', () => this._end());
    });
  }

  _event(message) {
    if (message.event === 'notification') {
      const n = message.notification;
      this.emit('notification', {
        channel: n.channel,
        payload: n.payload || '',
        processId: n.sender_pid || 0,
      });
    } else if (message.event === 'gap') {
      const g = message.gap;
      this.listenerPid = g.listener_pid || this.listenerPid;
      this.emit('gap', {
        reason: GAP_REASONS[g.reason] || 'unspecified',
        dropped: Number(g.dropped || 0),
        listenerPid: g.listener_pid || 0,
      });
    }
  }

  _end() {
    if (this._ended) return;
    this._ended = true;
    this.emit('end');
  }

  /** The stream has ended ('end' was emitted). */
  get ended() {
    return this._ended;
  }

  /** Stops listening (the broker UNLISTENs channels no one else needs); resolves at 'end'. */
  close() {
    if (this._ended) return Promise.resolve();
    const ended = new Promise((resolve) => this.once('end', resolve));
    if (!this._closed) {
      this._closed = true;
      this._call.cancel();
    }
    return ended;
  }
}

module.exports = {Subscription};
