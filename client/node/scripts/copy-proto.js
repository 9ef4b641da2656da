'use strict';
// prepack: copies the repository's proto/ files into this package's proto/
// folder (git-ignored), so that the published package carries the contract
// it loads at run time (lib/proto.js). Run by `npm pack` / `npm publish`.
// postpack (`--clean`) removes the copy again, so that the source tree never
// loads a stale copy instead of the repository's proto/.

const fs = require('node:fs');
const path = require('node:path');

const source = path.join(__dirname, '..', '..', '..', 'proto');
const target = path.join(__dirname, '..', 'proto');

function copyProtos(from, to) {
  let count = 0;
  for (const entry of fs.readdirSync(from, {withFileTypes: true})) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isDirectory()) {
      count += copyProtos(src, dst);
    } else if (entry.name.endsWith('.proto')) {
      fs.mkdirSync(to, {recursive: true});
      fs.copyFileSync(src, dst);
      count += 1;
    }
  }
  return count;
}

if (process.argv[2] === '--clean') {
  fs.rmSync(target, {recursive: true, force: true});
  process.exit(0);
}
if (!fs.existsSync(path.join(source, 'sessionbroker', 'v1', 'broker.proto'))) {
  console.error(`copy-proto: ${source} has no sessionbroker/v1/broker.proto; ` +
                'pack the package from the repository (client/node)');
  process.exit(1);
}
fs.rmSync(target, {recursive: true, force: true});
const count = copyProtos(source, target);
console.error(`copy-proto: ${count} .proto files copied into ${target}`);
