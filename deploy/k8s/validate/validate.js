// deploy/k8s/validate/validate.js — validates rendered Kubernetes objects
// against the OpenAPI schemas of the Kubernetes API (npm kubernetes-models)
// and of the Prometheus Operator's CRDs (@kubernetes-models/prometheus-operator),
// offline.
//
//   node validate.js OBJECTS.json...
//
// Each file holds a JSON array of objects (tests/deploy renders the kustomize
// output and converts it; this script parses no YAML). Every object must be of
// a kind the schemas know; each is checked for types, required fields and
// enums. These schemas, like the API server's non-strict decoding, allow
// unknown fields: tests/deploy/manifests_test.py asserts the fields that
// matter by path. Prints one line per object; exits 1 if any object fails.
// Runs on Node 18 (Debian bookworm) and later; modules are resolved from
// NODE_PATH or next to this file.
'use strict';

const fs = require('fs');

// apiVersion -> the package folder holding its models.
function modelPath(apiVersion, kind) {
  const slash = apiVersion.indexOf('/');
  const group = slash < 0 ? '' : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  if (group === 'monitoring.coreos.com') {
    return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  }
  return group === '' ? `kubernetes-models/${version}/${kind}`
                      : `kubernetes-models/${group}/${version}/${kind}`;
}

function loadModel(apiVersion, kind) {
  const path = modelPath(apiVersion, kind);
  let mod;
  try {
    mod = require(path);
  } catch (e) {
    // An unknown group or version has no folder (not found), an unknown kind
    // no export in the package's exports map (not exported).
    if (e && (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED')) {
      return null;
    }
    throw e;
  }
  return mod[kind] || null;
}

function describe(obj) {
  const meta = obj && obj.metadata ? obj.metadata : {};
  const ns = meta.namespace ? `${meta.namespace}/` : '';
  return `${obj && obj.apiVersion}/${obj && obj.kind} ${ns}${meta.name}`;
}

function validateObject(obj) {
  if (!obj || typeof obj !== 'object' || !obj.apiVersion || !obj.kind) {
    return ['not a Kubernetes object (no apiVersion or kind)'];
  }
  const Model = loadModel(obj.apiVersion, obj.kind);
  if (!Model) return [`no schema for ${obj.apiVersion} ${obj.kind}`];
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    const details = e && Array.isArray(e.errors)
      ? e.errors.map((err) => `${err.instancePath || '/'} ${err.message}`)
      : [String(e && e.message ? e.message : e)];
    return details;
  }
}

function main(argv) {
  if (argv.length === 0) {
    process.stderr.write('usage: node validate.js OBJECTS.json...\n');
    return 2;
  }
  let failed = 0;
  let checked = 0;
  for (const file of argv) {
    const objects = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (!Array.isArray(objects) || objects.length === 0) {
      process.stdout.write(`FAIL ${file}: expected a non-empty JSON array of objects\n`);
      failed++;
      continue;
    }
    for (const obj of objects) {
      checked++;
      const errors = validateObject(obj);
      if (errors.length === 0) {
        process.stdout.write(`ok   ${describe(obj)} (${file})\n`);
      } else {
        failed++;
        process.stdout.write(`FAIL ${describe(obj)} (${file})\n`);
        for (const err of errors) process.stdout.write(`       ${err}\n`);
      }
    }
  }
  process.stdout.write(`${checked - failed} valid, ${failed} invalid\n`);
  return failed === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
