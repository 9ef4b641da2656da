'use strict';
// Test fixture: a session broker child process started from
// $SB_BROKER_BINARY against $SB_TEST_DATABASE_URL, as
// tests/support/broker_process.cc starts one for the C++ tests: it binds
// port 0 and reports its address in BROKER_PORT_FILE; no drain window
// (BROKER_DRAIN_SECONDS=0) so that it stops at once. Without either
// variable the fixture throws: these tests need both (they fail, never skip).
//
// startBroker() registers the process so that it is killed when the test
// process exits for any reason (a failed assertion, an uncaught error), and
// stop() ends it with SIGTERM. Kept outside test/ so that `node --test
// test/` does not take it for a test file.

const {spawn} = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const {setTimeout: sleep} = require('node:timers/promises');

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: these tests need a live PostgreSQL ` +
                    '(SB_TEST_DATABASE_URL, e.g. from scripts/pg start) and the broker binary ' +
                    '(SB_BROKER_BINARY, build/server/session-broker)');
  }
  return value;
}

function readPorts(file) {
  const ports = {};
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    return ports;
  }
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) ports[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return ports;
}

/** Starts a broker with `env` on top of the test defaults; resolves to {target, stop, log}. */
async function startBroker(env = {}) {
  const binary = requiredEnv('SB_BROKER_BINARY');
  const databaseUrl = requiredEnv('SB_TEST_DATABASE_URL');
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), 'sb-nodebroker.'));
  const portFile = path.join(dir, 'ports');
  const logPath = path.join(dir, 'log');
  const logFd = fs.openSync(logPath, 'w');
  const child = spawn(binary, [], {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      BROKER_LISTEN_ADDR: '127.0.0.1:0',
      BROKER_METRICS_ADDR: '127.0.0.1:0',
      BROKER_PORT_FILE: portFile,
      BROKER_ENV_FILE: '',
      BROKER_HEALTH_CHECK_INTERVAL: '0.2',
      BROKER_DRAIN_SECONDS: '0',
      BROKER_SHUTDOWN_GRACE_SECONDS: '5',
      DB_POOL_SIZE: '8',
      DB_MAX_OVERFLOW: '8',
      BROKER_SESSION_ORPHAN_GRACE: '2',
      ...env,
    },
    stdio: ['ignore', logFd, logFd],
  });
  fs.closeSync(logFd);
  running.add(child);
  let exited = null;
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => {
    exited = {code, signal};
    running.delete(child);
    resolve(exited);
  }));
  const log = () => fs.readFileSync(logPath, 'utf8');
  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10000);
      await exit;
      clearTimeout(killer);
    }
    fs.rmSync(dir, {recursive: true, force: true});
  };
  // The broker renames the port file into place complete: no partial reads.
  for (let i = 0; i < 3000; i++) {
    const ports = readPorts(portFile);
    if (ports.grpc) return {target: ports.grpc, stop, log, pid: child.pid};
    if (exited) {
      const text = log();
      await stop();
      throw new Error(`the broker exited (${JSON.stringify(exited)}) before listening; ` +
                      `its log:\n${text}`);
    }
    await sleep(10);
  }
  const text = log();
  await stop();
  throw new Error(`the broker wrote no port file within 30 s; its log:\n${text}`);
}

/** A table name no other test uses (tests share one database). */
function tableName(prefix = 't') {
  return `${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
}

/** Polls `check` (async, truthy when done) at most `tries` times, 50 ms apart. */
async function waitUntil(check, tries = 200) {
  for (let i = 0; i < tries; i++) {
    const value = await check();
    if (value) return value;
    await sleep(50);
  }
  throw new Error(`the condition did not hold after ${tries} tries`);
}

module.exports = {startBroker, tableName, waitUntil};
