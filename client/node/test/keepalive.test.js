'use strict';
// The KeepAlive stream's bookkeeping against scripted streams (no broker):
// one stream for every session, hold/release messages, reopening a broken
// stream holding everything again, ENDED reports, closing when idle.

const assert = require('node:assert/strict');
const {EventEmitter} = require('node:events');
const {test} = require('node:test');
const {KeepAlive, Lease} = require('../lib/keepalive');
const {waitUntil} = require('../test-support/broker-process');

class FakeCall extends EventEmitter {
  constructor() {
    super();
    this.written = [];
    this.ended = false;
  }
  write(message) {
    assert.equal(this.ended, false, 'write after end');
    this.written.push(message);
  }
  end() {
    this.ended = true;
  }
  fail() {
    this.emit('error', new Error('14 UNAVAILABLE: connection reset'));
    this.emit('status', {code: 14});
  }
}

function harness() {
  const calls = [];
  const keepAlive = new KeepAlive(() => {
    const call = new FakeCall();
    calls.push(call);
    return call;
  });
  return {calls, keepAlive};
}

test('the first hold opens one stream; later holds and releases travel on it', () => {
  const {calls, keepAlive} = harness();
  const a = new Lease('a');
  const b = new Lease('b');
  keepAlive.hold(a);
  keepAlive.hold(b);
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0].written, [{hold: ['a']}, {hold: ['b']}]);
  keepAlive.release(a);
  assert.deepEqual(calls[0].written.at(-1), {release: ['a']});
  assert.equal(calls[0].ended, false);
  keepAlive.release(b);
  assert.equal(calls[0].ended, true, 'the stream is half-closed once nothing is held');
  assert.equal(keepAlive.streaming, false);
  keepAlive.release(b); // twice: nothing more is sent
  assert.deepEqual(calls[0].written.at(-1), {release: ['b']});
});

test('a broken stream is reopened and holds every session again', async () => {
  const {calls, keepAlive} = harness();
  keepAlive.hold(new Lease('a'));
  keepAlive.hold(new Lease('b'));
  calls[0].fail();
  assert.equal(keepAlive.streaming, false);
  await waitUntil(() => calls.length === 2);
  assert.deepEqual(calls[1].written, [{hold: ['a', 'b']}]);
  keepAlive.close();
  assert.equal(calls[1].ended, true);
});

test('a stream the broker closes while sessions are held is reopened too', async () => {
  const {calls, keepAlive} = harness();
  keepAlive.hold(new Lease('a'));
  calls[0].emit('status', {code: 0});
  await waitUntil(() => calls.length === 2);
  assert.deepEqual(calls[1].written, [{hold: ['a']}]);
  keepAlive.close();
});

test('an ENDED or NOT_FOUND report ends the lease with its reason; the last one closes the ' +
     'stream', () => {
  const {calls, keepAlive} = harness();
  const a = new Lease('a');
  const b = new Lease('b');
  keepAlive.hold(a);
  keepAlive.hold(b);
  calls[0].emit('data', {sessions: [{name: 'a', state: 'HELD'}, {name: 'b', state: 'HELD'}]});
  assert.deepEqual([a.ended, b.ended], [null, null]);
  calls[0].emit('data', {sessions: [{name: 'a', state: 'ENDED', reason: 'lifetime reached'}]});
  assert.equal(a.ended, 'lifetime reached');
  assert.deepEqual(keepAlive.heldNames(), ['b']);
  calls[0].emit('data', {sessions: [{name: 'b', state: 'NOT_FOUND'}]});
  assert.equal(b.ended, 'the broker no longer knows this session');
  assert.equal(calls[0].ended, true);
  calls[0].emit('status', {code: 0}); // the broker's end of the closed stream
  assert.equal(calls.length, 1, 'nothing held: no new stream');
});

test('a hold after the stream closed opens a new stream; close() ends everything', () => {
  const {calls, keepAlive} = harness();
  const a = new Lease('a');
  keepAlive.hold(a);
  keepAlive.release(a);
  keepAlive.hold(new Lease('c'));
  assert.equal(calls.length, 2);
  assert.deepEqual(calls[1].written, [{hold: ['c']}]);
  calls[0].emit('status', {code: 0}); // the old stream's end changes nothing
  assert.equal(keepAlive.streaming, true);
  keepAlive.close();
  assert.equal(calls[1].ended, true);
  keepAlive.hold(new Lease('d'));
  assert.equal(calls.length, 2, 'a closed KeepAlive opens no stream');
});
