'use strict';
// Indicative comparison of one-shot queries over unary Execute calls and over
// the shared Pipeline stream (lib/pipeline.js): for each number of concurrent
// callers, the arms alternate (unary, stream, unary, stream, ...) so that
// both see the same machine load; prints queries/s and the median and p99
// latency per arm and repeat. Not a test: timings depend on the machine.
//
//   SB_BROKER_BINARY=build/server/session-broker SB_TEST_DATABASE_URL=... \
//     node client/node/scripts/bench-pipeline.js [callers,...] [queries per caller] [repeats]
//
// It starts its own broker (test-support/broker-process.js) and stops it.

const {Broker} = require('..');
const {startBroker} = require('../test-support/broker-process');

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

async function run(db, callers, perCaller) {
  const latencies = [];
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({length: callers}, async () => {
    for (let i = 0; i < perCaller; i++) {
      const t0 = process.hrtime.bigint();
      await db.query('SELECT 1 AS one');
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e3);
    }
  }));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  return {
    qps: Math.round(callers * perCaller / seconds),
    p50: Math.round(percentile(latencies, 0.5)),
    p99: Math.round(percentile(latencies, 0.99)),
  };
}

async function main() {
  const callerCounts = (process.argv[2] || '1,16,64').split(',').map(Number);
  const perCaller = Number(process.argv[3] || 500);
  const repeats = Number(process.argv[4] || 2);
  const broker = await startBroker();
  const arms = {
    unary: new Broker({target: broker.target, pipeline: false}),
    stream: new Broker({target: broker.target}),
  };
  try {
    for (const db of Object.values(arms)) await run(db, 4, 50); // warm up
    for (const callers of callerCounts) {
      for (let r = 1; r <= repeats; r++) {
        for (const [name, db] of Object.entries(arms)) {
          const {qps, p50, p99} = await run(db, callers, Math.max(1, Math.round(perCaller)));
          console.log(`callers=${callers} repeat=${r} ${name.padEnd(6)} ${qps} q/s ` +
                      `p50 ${p50} us p99 ${p99} us`);
        }
      }
    }
  } finally {
    for (const db of Object.values(arms)) await db.close();
    await broker.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
