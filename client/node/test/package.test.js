'use strict';
// The package as published: `npm pack` carries the .proto files it loads
// (copied in by prepack), the packed copy loads them from itself, and the
// TypeScript declarations type-check a usage program (tsc --noEmit).

const assert = require('node:assert/strict');
const {execFileSync} = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const {test} = require('node:test');

const PACKAGE = path.join(__dirname, '..');
const NPM = process.env.npm_execpath && process.env.npm_execpath.endsWith('.js') ?
  [process.execPath, process.env.npm_execpath] : ['npm'];

test('npm pack carries the protos, and the packed package loads its own copy', () => {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), 'sb-nodepack.'));
  try {
    const [cmd, ...args] = NPM;
    const out = execFileSync(cmd, [...args, 'pack', '--json', '--pack-destination', dir],
      {cwd: PACKAGE, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']});
    const [info] = JSON.parse(out);
    const files = info.files.map((f) => f.path);
    for (const f of ['index.js', 'index.d.ts', 'lib/broker.js', 'proto/sessionbroker/v1/broker.proto',
      'proto/sessionbroker/v1/monitor.proto']) {
      assert.ok(files.includes(f), `${f} is missing from the package: ${files.join(', ')}`);
    }
    assert.ok(!files.some((f) => f.startsWith('test') || f.startsWith('node_modules')));
    execFileSync('tar', ['-xzf', path.join(dir, info.filename), '-C', dir]);
    const packed = path.join(dir, 'package');
    const script = 'const c = require(process.argv[1]); console.log(c.protoDir());' +
      'c.Broker && new c.Broker({target: "127.0.0.1:1"}).close();';
    const loaded = execFileSync(process.execPath, ['-e', script, packed], {
      encoding: 'utf8',
      env: {...process.env, NODE_PATH: path.join(PACKAGE, 'node_modules')},
    }).trim();
    assert.equal(loaded, path.join(packed, 'proto'));
  } finally {
    fs.rmSync(dir, {recursive: true, force: true});
  }
});

test('the TypeScript declarations check a usage program (tsc --noEmit)', () => {
  const tsc = path.join(PACKAGE, 'node_modules', 'typescript', 'bin', 'tsc');
  execFileSync(process.execPath, [tsc, '--noEmit', '-p', path.join(__dirname, 'types')],
    {encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']});
});
