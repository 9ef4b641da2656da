'use strict';
// The complete example of docs/clients.md ("## Node.js") runs as printed
// there, against a test broker, and prints what the page says it prints.

const assert = require('node:assert/strict');
const {execFile} = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const {promisify} = require('node:util');
const {after, before, test} = require('node:test');
const {startBroker} = require('../test-support/broker-process');

const DOCS = path.join(__dirname, '..', '..', '..', 'docs', 'clients.md');

let broker;

before(async () => {
  broker = await startBroker();
});

after(async () => {
  if (broker) await broker.stop();
});

function example() {
  const section = fs.readFileSync(DOCS, 'utf8').split('\n## Node.js\n')[1]
    .split('\n## ')[0].split('### A complete example')[1];
  const code = /```js\n([\s\S]*?)```/.exec(section)[1];
  const printed = /prints\n\n```\n([\s\S]*?)```/.exec(section)[1];
  return {code, printed};
}

test('the documented example runs and prints what the docs say', async () => {
  const {code, printed} = example();
  assert.ok(code.includes('\'broker.internal:50051\''));
  assert.ok(code.includes('require(\'@sessionbroker/client\')'));
  const runnable = code.replace('\'broker.internal:50051\'', JSON.stringify(broker.target))
    .replace('require(\'@sessionbroker/client\')',
      `require(${JSON.stringify(path.join(__dirname, '..'))})`);
  const {stdout} = await promisify(execFile)(process.execPath, ['-e', runnable]);
  assert.equal(stdout, printed);
});
