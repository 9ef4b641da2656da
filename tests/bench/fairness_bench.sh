#!/usr/bin/env bash
# tests/bench/fairness_bench.sh — the fair-queuing arm of the benchmark suite
# (./scripts/bench runs it; docs/benchmarks.md, "Fair shares under a flood",
# has the numbers). A quiet client runs `SELECT 1` in a closed loop (one call
# outstanding) while a flooder keeps the pool saturated with slow statements
# (`SELECT pg_sleep(...)`, many callers); the quiet client's latency and
# errors are measured three ways:
#   unloaded   no flood (fair queuing on)
#   fair       the flood, BROKER_FAIR_QUEUING=true
#   fifo       the flood, BROKER_FAIR_QUEUING=false (one FIFO queue)
#   reserved   the flood, fair queuing, and a clients file that gives the
#              quiet client `reserved_connections: 1` (both authenticate
#              with tokens; docs/security.md, "Reserved floors")
# Each arm gets a fresh broker (DB_POOL_SIZE=POOL, DB_MAX_OVERFLOW=0,
# DB_POOL_TIMEOUT=POOL_TIMEOUT, BROKER_PIPELINE_CONNECTIONS=0: every call
# queues for the pool, whose fair queuing is what is measured). Nothing is asserted: the summary is printed
# (and written to OUT/fairness.md) for a human to read.
#
#   tests/bench/fairness_bench.sh --url URL --bin BUILD_DIR --out DIR
#       [--pool 4] [--pool-timeout 1] [--flood 64] [--sleep 0.1]
#       [--duration 5] [--warmup 1]
set -euo pipefail

URL=
BIN=
OUT=
POOL=4
POOL_TIMEOUT=1
FLOOD=64
SLEEP=0.1
DURATION=5
WARMUP=1
while (($#)); do
  case $1 in
    --url) URL=$2; shift ;;
    --bin) BIN=$2; shift ;;
    --out) OUT=$2; shift ;;
    --pool) POOL=$2; shift ;;
    --pool-timeout) POOL_TIMEOUT=$2; shift ;;
    --flood) FLOOD=$2; shift ;;
    --sleep) SLEEP=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    *) echo "fairness_bench: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $URL && -n $BIN && -n $OUT ]] || { echo "usage: see the header of $0" >&2; exit 2; }
BENCH=$BIN/tests/bench/broker-bench
BROKER=$BIN/server/session-broker
mkdir -p "$OUT/fairness"
TMP=$(mktemp -d /tmp/fairness-bench.XXXXXX)
BROKER_PID=
FLOOD_PID=
cleanup() {
  [[ -n $FLOOD_PID ]] && kill "$FLOOD_PID" 2>/dev/null && wait "$FLOOD_PID" 2>/dev/null
  [[ -n $BROKER_PID ]] && kill -TERM "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
log() { echo "fairness: $*" >&2; }

# start_broker NAME [VAR=VALUE...]: a fresh broker on port 0 (its port file
# says where), ready once it has served a statement.
start_broker() {
  local name=$1 ports=$TMP/$1.ports i
  shift
  (
    cd "$TMP"
    exec env DATABASE_URL="$URL" BROKER_LISTEN_ADDR=127.0.0.1:0 BROKER_METRICS_ADDR=off \
      BROKER_PORT_FILE="$ports" BROKER_DRAIN_SECONDS=0 BROKER_ENV_FILE= \
      DB_POOL_SIZE="$POOL" DB_MAX_OVERFLOW=0 DB_POOL_TIMEOUT="$POOL_TIMEOUT" LOG_LEVEL=error \
      BROKER_PIPELINE_CONNECTIONS=0 "$@" "$BROKER"
  ) >"$OUT/fairness/broker-$name.log" 2>&1 &
  BROKER_PID=$!
  ADDR=
  for ((i = 0; i < 100; i++)); do
    [[ -f $ports ]] && { ADDR=$(sed -n 's/^grpc=//p' "$ports"); break; }
    sleep 0.1
  done
  [[ -n $ADDR ]] || { cat "$OUT/fairness/broker-$name.log" >&2; exit 1; }
  "$BENCH" --target="$ADDR" --mode=execute --sql="SELECT 1" --requests=1 --token="$QUIET_TOKEN" \
    >/dev/null 2>&1
}
stop_broker() {
  kill -TERM "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=
}
# Tokens for the reserved arm's clients file (empty: no clients file).
QUIET_TOKEN=
FLOOD_TOKEN=
quiet() {
  "$BENCH" --target="$ADDR" --mode=execute --sql="SELECT 1" --client_id=quiet --callers=1 \
    --token="$QUIET_TOKEN" \
    --duration="${DURATION}s" --warmup="${WARMUP}s" --call_timeout=30s --json --label="$1" \
    >"$OUT/fairness/$1.json"
}
flood() {
  "$BENCH" --target="$ADDR" --mode=execute --sql="SELECT pg_sleep($SLEEP)" --client_id=flooder \
    --token="$FLOOD_TOKEN" \
    --callers="$FLOOD" --channels=4 --duration=3600s --warmup=0s --call_timeout=60s \
    >/dev/null 2>&1 &
  FLOOD_PID=$!
  # Let it fill the pool and the queue before the quiet client starts.
  sleep 1
}
stop_flood() {
  kill "$FLOOD_PID" 2>/dev/null || true
  wait "$FLOOD_PID" 2>/dev/null || true
  FLOOD_PID=
}

log "unloaded"
start_broker unloaded BROKER_FAIR_QUEUING=true
quiet unloaded
stop_broker
for arm in fair fifo; do
  log "$arm: $FLOOD flooders × pg_sleep($SLEEP) on a pool of $POOL"
  start_broker "$arm" BROKER_FAIR_QUEUING=$([[ $arm == fair ]] && echo true || echo false)
  flood
  quiet "$arm"
  stop_flood
  stop_broker
done

log "reserved: the same flood, the quiet client with reserved_connections: 1"
QUIET_TOKEN=quiet-bench-token-$$-5e8a1c
FLOOD_TOKEN=flooder-bench-token-$$-9b2d47
hash_token() { printf '%s\n' "$1" | "$BROKER" hash-token; }
cat >"$TMP/clients.yaml" <<YAML
clients:
  - id: quiet
    token_hashes: ["$(hash_token "$QUIET_TOKEN")"]
    reserved_connections: 1
  - id: flooder
    token_hashes: ["$(hash_token "$FLOOD_TOKEN")"]
YAML
start_broker reserved BROKER_FAIR_QUEUING=true BROKER_CLIENTS_FILE="$TMP/clients.yaml"
flood
quiet reserved
stop_flood
stop_broker

/usr/bin/python3 - "$OUT/fairness" "$POOL" "$POOL_TIMEOUT" "$FLOOD" "$SLEEP" <<'EOF' |
import json
import sys

out, pool, timeout, flood, sleep = sys.argv[1:]
rows = []
base = None
for arm in ("unloaded", "fair", "fifo", "reserved"):
    with open(f"{out}/{arm}.json") as f:
        r = json.load(f)
    p99 = r["p99_us"] / 1000
    base = p99 if arm == "unloaded" else base
    ratio = f"{p99 / base:.1f}×" if base else "-"
    rows.append(f"| {arm} | {r['calls']} | {r['p50_us'] / 1000:.2f} | {p99:.2f} | {ratio} "
                f"| {r['max_us'] / 1000:.1f} | {r['errors']} |")
print(f"Quiet client, `SELECT 1`, 1 caller; flood: {flood} callers of "
      f"`SELECT pg_sleep({sleep})`; DB_POOL_SIZE={pool}, DB_POOL_TIMEOUT={timeout}s.\n")
print("| arm | calls | p50 ms | p99 ms | p99 / unloaded | max ms | errors |")
print("|---|---|---|---|---|---|---|")
print("\n".join(rows))
EOF
  tee "$OUT/fairness.md"
