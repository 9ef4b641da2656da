'use strict';
// The tls option ({ca, cert, key} PEM files) against a broker that requires
// client certificates, with certificates made at test time by openssl
// (tests/support/tls_certs.py).

const assert = require('node:assert/strict');
const {execFileSync} = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const {after, before, test} = require('node:test');
const {Broker, grpcStatus} = require('..');
const {startBroker, waitUntil} = require('../test-support/broker-process');

const SUPPORT = path.join(__dirname, '..', '..', '..', 'tests', 'support');
let certs;
let broker;
let target;

before(async () => {
  certs = fs.mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), 'sb-nodetls.'));
  execFileSync('/usr/bin/python3',
               ['-c', 'import sys, tls_certs; tls_certs.make_certs(sys.argv[1])', certs],
               {cwd: SUPPORT});
  broker = await startBroker({
    BROKER_TLS_CERT: path.join(certs, 'server.pem'),
    BROKER_TLS_KEY: path.join(certs, 'server.key'),
    BROKER_TLS_CLIENT_CA: path.join(certs, 'ca.pem'),
  });
  // The certificate names localhost and 127.0.0.1.
  target = `localhost:${broker.target.split(':').pop()}`;
});

after(async () => {
  if (broker) await broker.stop();
  if (certs) fs.rmSync(certs, {recursive: true, force: true});
});

const file = (name) => path.join(certs, name);

test('a client certificate over TLS runs queries and sessions', async () => {
  const db = new Broker({target, tls: {ca: file('ca.pem'), cert: file('client.pem'),
    key: file('client.key')}});
  try {
    await waitUntil(async () => {
      try {
        return (await db.query('SELECT $1::int + 1 AS n', [41])).rows[0].n === 42;
      } catch (e) {
        return false;
      }
    });
    const session = await db.session();
    const {rows} = await session.query('SELECT \'over tls\' AS t');
    assert.equal(rows[0].t, 'over tls');
    await session.end();
  } finally {
    await db.close();
  }
});

test('without a client certificate the broker refuses the call', async () => {
  const db = new Broker({target, tls: {ca: file('ca.pem')}, deadlineMs: 5000});
  try {
    await assert.rejects(db.query('SELECT 1'), (e) => e.grpcCode === grpcStatus.UNAVAILABLE);
  } finally {
    await db.close();
  }
});

test('a cert without its key, or tls with credentials, is refused at once', () => {
  assert.throws(() => new Broker({target, tls: {cert: file('client.pem')}}), /go together/);
  assert.throws(() => new Broker({target, tls: true, credentials: {}}), /either credentials/);
});
