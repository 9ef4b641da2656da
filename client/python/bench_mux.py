"""Indicative A/B of the blocking client: N threads, each with its own
autocommit connection, running ``SELECT $1::int8`` through one channel with
the shared Pipeline stream on (``pipeline=True``) and off (unary calls only),
arms interleaved. Also the lone caller's median latency in both modes (a
lone caller always goes unary: this shows what the stream would cost it).

    /usr/bin/python3 client/python/bench_mux.py --target 127.0.0.1:50051 \\
        --threads 1,8,32 --seconds 3 --repeats 2

Needs the generated stubs (``/usr/bin/python3 client/python/sessionbroker/_codegen.py``).
Prints one line per arm; numbers depend on the machine and its load.
Single-threaded driver code; the connections' threads are its own.
"""

import argparse
import os
import statistics
import sys
import threading
import time
from typing import List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionbroker import dbapi  # noqa: E402


def run_arm(target: str, threads: int, seconds: float, pipeline: bool) -> Tuple[float, float]:
    """(calls per second, fraction of calls answered on the stream)."""
    client = f"bench-{'stream' if pipeline else 'unary'}-{threads}-{time.monotonic_ns()}"
    conns = [dbapi.connect(target, client_id=client, autocommit=True, pipeline=pipeline)
             for _ in range(threads)]
    counts = [0] * threads
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        cur = conns[i].cursor()
        start.wait()
        n = 0
        while not stop.is_set():
            cur.execute("SELECT %s::int8", (n,))
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    streamed = 0.0
    if pipeline:
        stats = conns[0]._mux.stats
        total = stats.stream_calls + stats.unary_calls
        streamed = stats.stream_calls / total if total else 0.0
    for c in conns:
        c.close()
    return sum(counts) / elapsed, streamed


def lone_latency(target: str, calls: int, force_stream: bool) -> float:
    """Median latency (µs) of one caller; ``force_stream`` pretends another call
    is in flight so that every call goes on the stream."""
    client = f"bench-lone-{force_stream}-{time.monotonic_ns()}"
    conn = dbapi.connect(target, client_id=client, autocommit=True)
    mux = conn._mux
    cur = conn.cursor()
    if force_stream:
        with mux.lock:
            mux._active += 1
        while mux.stats.streams_opened == 0:
            cur.execute("SELECT 1")
            time.sleep(0.01)
    samples: List[float] = []
    for n in range(calls):
        t0 = time.perf_counter()
        cur.execute("SELECT %s::int8", (n,))
        samples.append((time.perf_counter() - t0) * 1e6)
    if force_stream:
        assert mux.stats.stream_calls >= calls
        with mux.lock:
            mux._active -= 1
    conn.close()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--threads", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lone-calls", type=int, default=2000)
    args = parser.parse_args()
    print(f"load average at start: {open('/proc/loadavg').read().strip()}")
    for r in range(args.repeats):
        for unary_first in (True,):
            u = lone_latency(args.target, args.lone_calls, False)
            s = lone_latency(args.target, args.lone_calls, True)
            print(f"repeat {r}: lone caller median: unary {u:.0f} us, stream {s:.0f} us "
                  f"({s / u:.2f}x)")
        for n in (int(x) for x in args.threads.split(",")):
            unary, _ = run_arm(args.target, n, args.seconds, False)
            stream, share = run_arm(args.target, n, args.seconds, True)
            print(f"repeat {r}: {n:3d} threads: unary {unary:7.0f}/s, pipeline=True "
                  f"{stream:7.0f}/s ({stream / unary:.2f}x; {share:.0%} on the stream)")
    print(f"load average at end: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
