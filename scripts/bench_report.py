#!/usr/bin/env python3
"""Helpers of scripts/bench: turn pgbench logs into the numbers broker-bench
prints, record the machine, and write the report (medians of the repeats,
ratios against the anchors). Standard library only.

  bench_report.py env --out FILE ...        machine and settings, as JSON
  bench_report.py pgbench-log ... FILES     one pgbench run, as broker-bench JSON
  bench_report.py report DIR                report.md (markdown) on stdout
  bench_report.py check DIR                 exit 1 if an arm had errors or no calls
  bench_report.py measure --out F [--pooler PID] [--postmaster PID] -- CMD...
                                            run CMD; record the CPU time it, the
                                            pooler and PostgreSQL spent meanwhile
"""

import argparse
import glob
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys


def nearest_rank(sorted_values, q):
    if not sorted_values:
        return 0
    k = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[k - 1]


def cmd_pgbench_log(args):
    window_start = args.start + args.warmup
    window_end = window_start + args.duration
    latencies = []
    failed = 0
    for path in args.files:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 6:
                    continue
                # client_id transaction_no time script_no time_epoch time_us
                done = int(fields[4]) + int(fields[5]) / 1e6
                if not (window_start <= done < window_end):
                    continue
                if not fields[2].isdigit():  # "failed" or "skipped"
                    failed += 1
                    continue
                latencies.append(int(fields[2]))
    latencies.sort()
    stdout = open(args.stdout).read() if args.stdout else ""
    m = re.search(r"number of failed transactions: (\d+)", stdout)
    reported_failures = int(m.group(1)) if m else 0
    errors = max(failed, reported_failures) + (1 if args.exit_code != 0 else 0)
    out = {
        "label": args.name,
        "mode": "pgbench",
        "callers": args.clients,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "calls": len(latencies),
        "throughput": len(latencies) / args.duration,
        "p50_us": nearest_rank(latencies, 0.50),
        "p90_us": nearest_rank(latencies, 0.90),
        "p99_us": nearest_rank(latencies, 0.99),
        "max_us": latencies[-1] if latencies else 0,
        "errors": errors,
    }
    if args.exit_code != 0:
        out["first_error"] = "pgbench exited with %d: %s" % (
            args.exit_code, stdout.strip().splitlines()[-1:] or "")
    json.dump(out, sys.stdout)
    print()


def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, children=False):
    """utime+stime (and the reaped children's, with children=True) in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # fields[0] is the state (field 3): utime is field 14, stime 15, cutime 16, cstime 17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def proc_context_switches(pid):
    """Voluntary + involuntary context switches of all of a process's threads."""
    total = 0
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0
    for task in tasks:
        try:
            with open("/proc/%d/task/%s/status" % (pid, task)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def postgres_cpu(postmaster):
    """CPU of the cluster: the postmaster, its live children, and those it reaped."""
    if not postmaster:
        return 0.0
    total = proc_cpu(postmaster, children=True)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == postmaster:
            total += proc_cpu(int(entry))
    return total


def cmd_measure(args):
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    pooler0 = proc_cpu(args.pooler) if args.pooler else 0.0
    cs0 = proc_context_switches(args.pooler) if args.pooler else 0
    pg0 = postgres_cpu(args.postmaster)
    rc = subprocess.call(cmd)
    pooler1 = proc_cpu(args.pooler) if args.pooler else 0.0
    cs1 = proc_context_switches(args.pooler) if args.pooler else 0
    pg1 = postgres_cpu(args.postmaster)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(args.out, "w") as f:
        json.dump({"loadgen_cpu_s": usage.ru_utime + usage.ru_stime,
                   "pooler_cpu_s": pooler1 - pooler0, "postgres_cpu_s": pg1 - pg0,
                   "pooler_context_switches": cs1 - cs0}, f)
    sys.exit(rc)


def cmd_env(args):
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        "cores": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "postgres": run(["pgbench", "--version"]).replace("pgbench", "PostgreSQL"),
        "pgbouncer": run(["pgbouncer", "--version"]).splitlines()[0] if run(["pgbouncer", "--version"]) else "?",
        "commit": run(["git", "-C", root, "rev-parse", "--short", "HEAD"]),
        "dirty": bool(run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])),
        "date": run(["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
        "pool": args.pool,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "repeats": args.repeats,
        "smoke": args.smoke == "1",
    }
    with open(args.out, "w") as f:
        json.dump(env, f, indent=1)


def load_runs(directory):
    runs = {}
    for path in glob.glob(os.path.join(directory, "raw", "*.json")):
        name = os.path.basename(path)[:-5]
        if name in ("env", "idle") or name.startswith("micro-") or name.endswith(".cpu"):
            continue
        with open(path) as f:
            runs[name] = json.load(f)
        cpu_path = path[:-5] + ".cpu.json"
        if os.path.exists(cpu_path):
            with open(cpu_path) as f:
                cpu = json.load(f)
            # Per call over the whole run (warm-up included): the run's CPU
            # divided by the calls it made in all, estimated from the
            # measured rate.
            run = runs[name]
            total_calls = run.get("throughput", 0) * (
                run.get("duration_s", 0) + run.get("warmup_s", 0) or 1)
            if total_calls:
                for key in ("loadgen", "pooler", "postgres"):
                    run[key + "_us_per_call"] = cpu[key + "_cpu_s"] * 1e6 / total_calls
                if "pooler_context_switches" in cpu:
                    run["pooler_cs_per_call"] = cpu["pooler_context_switches"] / total_calls
    return runs


def median_of(runs, prefix, key):
    """Median of `key` over the repeats named PREFIX-rN."""
    values = [run[key] for name, run in runs.items()
              if re.fullmatch(re.escape(prefix) + r"-r\d+", name) and key in run]
    return statistics.median(values) if values else None


def fmt_tps(v):
    return "–" if v is None else "{:,.0f}".format(v)


def fmt_ms(us):
    return "–" if us is None else "{:.2f}".format(us / 1000.0)


def ratio(a, b):
    return None if a is None or not b else a / b


def fmt_ratio(r):
    return "–" if r is None else "{:.2f}×".format(r)


def micro_rows(directory, name):
    path = os.path.join(directory, "raw", "micro-%s.json" % name)
    if not os.path.exists(path):
        return []
    data = json.load(open(path))
    rows = []
    for b in data.get("benchmarks", []):
        agg = b.get("aggregate_name")
        if agg not in (None, "median"):
            continue
        label = b.get("run_name", b["name"])
        per_item = ""
        if "items_per_second" in b and b["items_per_second"]:
            per_item = "{:,.0f}/s".format(b["items_per_second"])
        rows.append((label, "{:.1f} {}".format(b["real_time"], b.get("time_unit", "ns")),
                     "{:.1f} {}".format(b["cpu_time"], b.get("time_unit", "ns")), per_item))
    return rows


def clients_of(runs, prefix):
    found = set()
    for name in runs:
        m = re.fullmatch(re.escape(prefix) + r"-c(\d+)-r\d+", name)
        if m:
            found.add(int(m.group(1)))
    return sorted(found)


INT8_ARMS = (("execute-off", "unary, pipelining off"), ("execute-on", "unary, pipelining on"),
              ("pipeline-off", "stream, pipelining off"), ("pipeline-on", "stream, pipelining on"))


def int8_section(runs):
    """The int8 arms: unary and stream, pipelining off and on, against PgBouncer."""
    clients = clients_of(runs, "int8-pgbouncer")
    if not clients:
        return
    p = print
    p("## `SELECT $1::int8`: unary and stream calls, pipelining off and on")
    p()
    p("A relation-free statement, which the pipelined engine takes when it is on "
      "(BROKER_PIPELINE_CONNECTIONS > 0, out of the same pool); PgBouncer runs the same "
      "statement (pgbench -M extended). Ratios are against PgBouncer's median; `cs` and `CPU` "
      "are the broker process's context switches and CPU µs per call (warm-up included).")
    p()
    p("| clients | arm | tps | /PgBouncer | p50 ms | p99 ms | p99/PgBouncer | cs/call "
      "| CPU µs/call |")
    p("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in clients:
        bt = median_of(runs, "int8-pgbouncer-c%d" % c, "throughput")
        b99 = median_of(runs, "int8-pgbouncer-c%d" % c, "p99_us")
        p("| %d | PgBouncer | %s | 1.00× | %s | %s | 1.00× | – | %s |" % (
            c, fmt_tps(bt), fmt_ms(median_of(runs, "int8-pgbouncer-c%d" % c, "p50_us")),
            fmt_ms(b99), fmt_us(median_of(runs, "int8-pgbouncer-c%d" % c, "pooler_us_per_call"))))
        for arm, label in INT8_ARMS:
            prefix = "int8-%s-c%d" % (arm, c)
            t = median_of(runs, prefix, "throughput")
            if t is None:
                continue
            q99 = median_of(runs, prefix, "p99_us")
            cs = median_of(runs, prefix, "pooler_cs_per_call")
            p("| %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                c, label, fmt_tps(t), fmt_ratio(ratio(t, bt)),
                fmt_ms(median_of(runs, prefix, "p50_us")), fmt_ms(q99),
                fmt_ratio(ratio(q99, b99)), "–" if cs is None else "%.1f" % cs,
                fmt_us(median_of(runs, prefix, "pooler_us_per_call"))))
    p()


TX_ARMS = (("broker", "session: BeginTransaction, 3 × Execute, Commit"),
           ("batch-off", "ExecuteBatch, unary, pipelining off"),
           ("pipebatch-off", "execute_batch on a stream, pipelining off"),
           ("batch-on", "ExecuteBatch, unary, pipelining on"),
           ("pipebatch-on", "execute_batch on a stream, pipelining on"))


def tx_section(runs):
    """The 3-statement transaction as a session, a unary batch and a stream batch."""
    if not clients_of(runs, "tx3-batch-off") and not clients_of(runs, "txint8-batch-off"):
        return
    p = print
    p("## A transaction of 3 statements: session, ExecuteBatch, stream batch")
    p()
    p("One all-or-nothing transaction per unit. `tx3` is the pgbench-like UPDATE, SELECT, "
      "INSERT on the pgbench tables, which the catalog proves free of user code "
      "(BROKER_PIPELINE_TABLE_WRITES): the pipelined engine sends the batch under one Sync "
      "when it is on, else it takes a pooled connection without the reset; `txint8` is "
      "`SELECT $1::int8` three times, relation-free, which the engine takes the same way. PgBouncer runs BEGIN, "
      "the 3 statements, END (pgbench script; txint8 with -M extended). Ratios are against "
      "PgBouncer's median; CPU is the broker's µs per transaction (warm-up included).")
    p()
    p("| workload | clients | arm | tx/s | /PgBouncer | p50 ms | p99 ms | CPU µs/tx |")
    p("|---|---:|---|---:|---:|---:|---:|---:|")
    for tx in ("tx3", "txint8"):
        for c in clients_of(runs, "%s-pgbouncer" % tx):
            bt = median_of(runs, "%s-pgbouncer-c%d" % (tx, c), "throughput")
            p("| %s | %d | PgBouncer | %s | 1.00× | %s | %s | – |" % (
                tx, c, fmt_tps(bt), fmt_ms(median_of(runs, "%s-pgbouncer-c%d" % (tx, c), "p50_us")),
                fmt_ms(median_of(runs, "%s-pgbouncer-c%d" % (tx, c), "p99_us"))))
            for arm, label in TX_ARMS:
                prefix = "%s-%s-c%d" % (tx, arm, c)
                t = median_of(runs, prefix, "throughput")
                if t is None:
                    continue
                p("| %s | %d | %s | %s | %s | %s | %s | %s |" % (
                    tx, c, label, fmt_tps(t), fmt_ratio(ratio(t, bt)),
                    fmt_ms(median_of(runs, prefix, "p50_us")),
                    fmt_ms(median_of(runs, prefix, "p99_us")),
                    fmt_us(median_of(runs, prefix, "pooler_us_per_call"))))
    p()


def table_reads_section(runs):
    """The SELECT by primary key on the pipelined broker (a catalog-proved table read)."""
    clients = clients_of(runs, "select-on-execute")
    if not clients:
        return
    p = print
    p("## SELECT by primary key, pipelining on (catalog-proved table read)")
    p()
    p("`SELECT abalance FROM pgbench_accounts WHERE aid = $1` on the broker with "
      "BROKER_PIPELINE_CONNECTIONS > 0: the catalog shows the read runs no user code "
      "(BROKER_PIPELINE_TABLE_READS), so the engine takes it. Off and PgBouncer come from the "
      "SELECT arms above (same run, not interleaved with these).")
    p()
    p("| clients | arm | tps | /PgBouncer | p50 ms | p99 ms | CPU µs/call |")
    p("|---:|---|---:|---:|---:|---:|---:|")
    for c in clients:
        bt = median_of(runs, "select-pgbouncer-c%d" % c, "throughput")
        for prefix, label in (("select-pgbouncer", "PgBouncer"),
                              ("select-broker", "unary, pipelining off"),
                              ("select-on-execute", "unary, pipelining on"),
                              ("select-pipeline", "stream, pipelining off"),
                              ("select-on-pipeline", "stream, pipelining on")):
            name = "%s-c%d" % (prefix, c)
            t = median_of(runs, name, "throughput")
            if t is None:
                continue
            p("| %d | %s | %s | %s | %s | %s | %s |" % (
                c, label, fmt_tps(t), fmt_ratio(ratio(t, bt)),
                fmt_ms(median_of(runs, name, "p50_us")), fmt_ms(median_of(runs, name, "p99_us")),
                fmt_us(median_of(runs, name, "pooler_us_per_call"))))
    p()


def fmt_us(v):
    return "–" if v is None else "{:.0f}".format(v)


def cmd_report(args):
    d = args.dir
    env = json.load(open(os.path.join(d, "raw", "env.json")))
    runs = load_runs(d)
    p = print
    p("# Benchmark run %s%s" % (env["date"], " (smoke)" if env["smoke"] else ""))
    p()
    p("Commit `%s`%s; %s cores (%s), kernel %s; %s; %s." % (
        env["commit"], " with local changes" if env["dirty"] else "", env["cores"], env["cpu"],
        env["kernel"], env["postgres"], env["pgbouncer"]))
    p("Pool P = %d (broker: DB_POOL_SIZE=%d, DB_MAX_OVERFLOW=0; PgBouncer: transaction mode, "
      "default_pool_size=%d). Each arm: %ss warm-up, then %ss measured; %d repeat(s), arms "
      "interleaved, medians shown. No process is pinned: load generator, pooler and PostgreSQL "
      "share all %s cores in every arm." % (
          env["pool"], env["pool"], env["pool"], env["warmup_s"], env["duration_s"],
          env["repeats"], env["cores"]))
    p()
    p("## SELECT by primary key (`SELECT abalance FROM pgbench_accounts WHERE aid = $1`)")
    p()
    p("| clients | direct tps | PgBouncer tps | broker tps | broker/PgBouncer | broker/direct "
      "| p99 direct ms | p99 PgBouncer ms | p99 broker ms | p99 broker/PgBouncer |")
    p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in clients_of(runs, "select-broker"):
        t = {a: median_of(runs, "select-%s-c%d" % (a, c), "throughput")
             for a in ("direct", "pgbouncer", "broker")}
        q = {a: median_of(runs, "select-%s-c%d" % (a, c), "p99_us")
             for a in ("direct", "pgbouncer", "broker")}
        p("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            c, fmt_tps(t["direct"]), fmt_tps(t["pgbouncer"]), fmt_tps(t["broker"]),
            fmt_ratio(ratio(t["broker"], t["pgbouncer"])), fmt_ratio(ratio(t["broker"], t["direct"])),
            fmt_ms(q["direct"]), fmt_ms(q["pgbouncer"]), fmt_ms(q["broker"]),
                fmt_ratio(ratio(q["broker"], q["pgbouncer"]))))
    p()
    if clients_of(runs, "select-pipeline"):
        p("The same SELECT as calls on Pipeline streams (broker-bench --mode=pipeline: the "
          "callers multiplexed over one stream per channel, each awaiting its own result):")
        p()
        p("| clients | pipeline tps | pipeline/PgBouncer | pipeline/unary Execute | p99 pipeline ms "
          "| p99 pipeline/PgBouncer | calls per message | results per message |")
        p("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in clients_of(runs, "select-pipeline"):
            t = {a: median_of(runs, "select-%s-c%d" % (a, c), "throughput")
                 for a in ("pgbouncer", "broker", "pipeline")}
            q = {a: median_of(runs, "select-%s-c%d" % (a, c), "p99_us")
                 for a in ("pgbouncer", "pipeline")}
            cpm = median_of(runs, "select-pipeline-c%d" % c, "calls_per_message")
            rpm = median_of(runs, "select-pipeline-c%d" % c, "results_per_message")
            p("| %d | %s | %s | %s | %s | %s | %s | %s |" % (
                c, fmt_tps(t["pipeline"]), fmt_ratio(ratio(t["pipeline"], t["pgbouncer"])),
                fmt_ratio(ratio(t["pipeline"], t["broker"])), fmt_ms(q["pipeline"]),
                fmt_ratio(ratio(q["pipeline"], q["pgbouncer"])),
                "–" if cpm is None else "%.1f" % cpm, "–" if rpm is None else "%.1f" % rpm))
        p()
    p("CPU per call (µs; the run's CPU time over its calls, warm-up included): what each "
      "arm costs the machine, by process. `loadgen` is pgbench or broker-bench, `pooler` is "
      "PgBouncer or the broker, `postgres` is every PostgreSQL process.")
    p()
    p("| clients | arm | loadgen | pooler | postgres | total |")
    p("|---:|---|---:|---:|---:|---:|")
    for c in clients_of(runs, "select-broker"):
        for a in ("direct", "pgbouncer", "broker", "pipeline"):
            parts = [median_of(runs, "select-%s-c%d" % (a, c), k + "_us_per_call")
                     for k in ("loadgen", "pooler", "postgres")]
            if parts[0] is None:
                continue
            p("| %d | %s | %.1f | %s | %.1f | %.1f |" % (
                c, a, parts[0], "–" if a == "direct" else "%.1f" % parts[1], parts[2],
                sum(x or 0 for x in parts)))
    for a in ("health",):
        parts = [median_of(runs, "%s-c1" % a, k + "_us_per_call")
                 for k in ("loadgen", "pooler", "postgres")]
        if parts[0] is not None:
            p("| 1 | bare gRPC (Health/Check) | %.1f | %.1f | %.1f | %.1f |" % (
                parts[0], parts[1], parts[2], sum(x or 0 for x in parts)))
    p()
    b50 = median_of(runs, "select-broker-c1", "p50_us")
    d50 = median_of(runs, "select-direct-c1", "p50_us")
    h50 = median_of(runs, "health-c1", "p50_us")
    if None not in (b50, d50, h50):
        p("One caller: broker p50 %.1f µs, direct p50 %.1f µs, bare gRPC (Health/Check on the "
          "same broker) p50 %.1f µs. Broker overhead over direct = %.1f µs = **%.2f×** the bare "
          "gRPC round trip (target ≤ 1.2×)." % (b50, d50, h50, b50 - d50, (b50 - d50) / h50))
        p()
    variants = [("nocache", "BROKER_STATEMENT_CACHE_SIZE=0 (no prepared statements)")]
    rows = []
    for variant, setting in variants:
        for c in clients_of(runs, "select-%s" % variant):
            on_t = median_of(runs, "select-broker-c%d" % c, "throughput")
            off_t = median_of(runs, "select-%s-c%d" % (variant, c), "throughput")
            on_l = median_of(runs, "select-broker-c%d" % c, "p50_us")
            off_l = median_of(runs, "select-%s-c%d" % (variant, c), "p50_us")
            on_cpu = median_of(runs, "select-broker-c%d" % c, "pooler_us_per_call")
            off_cpu = median_of(runs, "select-%s-c%d" % (variant, c), "pooler_us_per_call")
            rows.append("| %s | %d | %s | %s | %s | %s | %s | %s |" % (
                setting, c, fmt_tps(off_t), fmt_tps(on_t), fmt_ratio(ratio(on_t, off_t)),
                "–" if off_l is None or on_l is None else "%.0f → %.0f" % (off_l, on_l),
                "–" if off_cpu is None or on_cpu is None else "%.0f → %.0f" % (off_cpu, on_cpu),
                "–" if off_cpu is None or on_cpu is None else fmt_ratio(ratio(on_cpu, off_cpu))))
    int8_section(runs)
    table_reads_section(runs)
    if rows:
        p("## Optimisations switched off (same run)")
        p()
        p("Each row is the SELECT arm against a broker with one optimisation turned off, "
          "compared with the pipelining-off broker above.")
        p()
        p("| broker started with | clients | tps off | tps on | on/off | p50 µs off → on "
          "| broker CPU µs/call off → on | CPU on/off |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            p(row)
        p()
    reset_clients = clients_of(runs, "reset-needed")
    if reset_clients:
        p("## The session reset")
        p()
        p("`SELECT $1::int8` (provably stateless: no reset) against `SELECT $1::int8 + 0` "
          "(an operator: reset in the same pipeline), same broker.")
        p()
        p("| clients | tps no reset | tps with reset | with/without | p50 µs without → with "
          "| PostgreSQL CPU µs/call without → with |")
        p("|---:|---:|---:|---:|---:|---:|")
        for c in reset_clients:
            nt = median_of(runs, "reset-none-c%d" % c, "throughput")
            wt = median_of(runs, "reset-needed-c%d" % c, "throughput")
            nl = median_of(runs, "reset-none-c%d" % c, "p50_us")
            wl = median_of(runs, "reset-needed-c%d" % c, "p50_us")
            nc = median_of(runs, "reset-none-c%d" % c, "postgres_us_per_call")
            wc = median_of(runs, "reset-needed-c%d" % c, "postgres_us_per_call")
            p("| %d | %s | %s | %s | %s | %s |" % (
                c, fmt_tps(nt), fmt_tps(wt), fmt_ratio(ratio(wt, nt)),
                "–" if nl is None or wl is None else "%.0f → %.0f" % (nl, wl),
                "–" if nc is None or wc is None else "%.0f → %.0f" % (nc, wc)))
        p()
    p("## Sessions")
    p()
    p("A transaction of 3 statements (UPDATE, SELECT, INSERT on the pgbench tables): through "
      "a broker session it is BeginTransaction, 3 × Execute, Commit; through PgBouncer it is "
      "BEGIN, the 3 statements, END (pgbench script).")
    p()
    p("| clients | PgBouncer tx/s | broker tx/s | broker/PgBouncer | p99 PgBouncer ms "
      "| p99 broker ms |")
    p("|---:|---:|---:|---:|---:|---:|")
    for c in clients_of(runs, "tx3-broker"):
        tb = median_of(runs, "tx3-pgbouncer-c%d" % c, "throughput")
        bb = median_of(runs, "tx3-broker-c%d" % c, "throughput")
        p("| %d | %s | %s | %s | %s | %s |" % (
            c, fmt_tps(tb), fmt_tps(bb), fmt_ratio(ratio(bb, tb)),
            fmt_ms(median_of(runs, "tx3-pgbouncer-c%d" % c, "p99_us")),
            fmt_ms(median_of(runs, "tx3-broker-c%d" % c, "p99_us"))))
    p()
    tx_section(runs)
    churn = median_of(runs, "churn-broker-c16", "throughput")
    if churn is not None:
        p("BeginSession + EndSession, 16 callers: **%s pairs/s** (p99 %s ms)." % (
            fmt_tps(churn), fmt_ms(median_of(runs, "churn-broker-c16", "p99_us"))))
        p()
    idle_path = os.path.join(d, "raw", "idle.json")
    if os.path.exists(idle_path):
        idle = json.load(open(idle_path))
        p("Idle sessions (broker RSS from /proc, sessions opened by BeginSession and left idle):")
        p()
        p("| sessions open | broker RSS MiB | bytes/session since start | bytes/session since previous step | errors |")
        p("|---:|---:|---:|---:|---:|")
        for step in idle.get("steps", []):
            p("| {:,} | {:.1f} | {:.0f} | {:.0f} | {} |".format(
                step["sessions"], step["rss_bytes"] / 1048576.0,
                step["bytes_per_session"], step["bytes_per_session_step"],
                step.get("errors", idle.get("errors", 0))))
        p()
    for name, title in (("pool_benchmark", "Pool checkout + return (fake connections)"),
                        ("conversion_benchmark", "proto ↔ value conversion")):
        rows = micro_rows(d, name)
        if not rows:
            continue
        p("## %s" % title)
        p()
        p("| benchmark | real time | CPU time | rate |")
        p("|---|---:|---:|---:|")
        for row in rows:
            p("| `%s` | %s | %s | %s |" % row)
        p()


def cmd_check(args):
    bad = []
    for name, run in sorted(load_runs(args.dir).items()):
        if run.get("errors", 0) or not run.get("calls", 0):
            bad.append("%s: %d errors, %d calls%s" % (
                name, run.get("errors", 0), run.get("calls", 0),
                (": " + run["first_error"]) if run.get("first_error") else ""))
        # A Pipeline run: every call sent got exactly one result.
        if run.get("mode") in ("pipeline", "pipeline-batch") and (
                run.get("submitted") != run.get("answered") or not run.get("submitted")):
            bad.append("%s: %s pipeline calls sent, %s answered" % (
                name, run.get("submitted"), run.get("answered")))
    idle_path = os.path.join(args.dir, "raw", "idle.json")
    if os.path.exists(idle_path) and json.load(open(idle_path)).get("errors", 0):
        bad.append("idle sessions: errors while opening sessions")
    for line in bad:
        print("bench: " + line, file=sys.stderr)
    return 1 if bad else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env")
    e.add_argument("--out", required=True)
    e.add_argument("--pool", type=int, required=True)
    e.add_argument("--duration", type=float, required=True)
    e.add_argument("--warmup", type=float, required=True)
    e.add_argument("--repeats", type=int, required=True)
    e.add_argument("--smoke", default="0")
    e.add_argument("--broker", default="")
    g = sub.add_parser("pgbench-log")
    g.add_argument("--name", required=True)
    g.add_argument("--clients", type=int, required=True)
    g.add_argument("--start", type=float, required=True)
    g.add_argument("--warmup", type=float, required=True)
    g.add_argument("--duration", type=float, required=True)
    g.add_argument("--exit-code", type=int, default=0)
    g.add_argument("--stdout", default="")
    g.add_argument("files", nargs="*")
    r = sub.add_parser("report")
    r.add_argument("dir")
    c = sub.add_parser("check")
    c.add_argument("dir")
    m = sub.add_parser("measure")
    m.add_argument("--out", required=True)
    m.add_argument("--pooler", type=int, default=0)
    m.add_argument("--postmaster", type=int, default=0)
    m.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.cmd == "env":
        cmd_env(args)
    elif args.cmd == "pgbench-log":
        cmd_pgbench_log(args)
    elif args.cmd == "report":
        cmd_report(args)
    elif args.cmd == "measure":
        cmd_measure(args)
    else:
        sys.exit(cmd_check(args))


if __name__ == "__main__":
    main()
