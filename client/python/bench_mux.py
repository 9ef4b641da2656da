"""Indicative A/B of the Python clients: N threads (dbapi) or N asyncio tasks
(aio), each with its own autocommit connection, running ``SELECT $1::int8``
through one channel with the shared Pipeline stream on (``pipeline=True``)
and off (unary calls only), arms interleaved. Also the lone caller's median latency in both modes (a
lone caller always goes unary: this shows what the stream would cost it).

    /usr/bin/python3 client/python/bench_mux.py --target 127.0.0.1:50051 \\
        --threads 1,8,32 --seconds 3 --repeats 2

Needs the generated stubs (``/usr/bin/python3 client/python/sessionbroker/_codegen.py``).
Prints one line per arm; numbers depend on the machine and its load.
Single-threaded driver code; the connections' threads are its own.
"""

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from typing import List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionbroker import aio, dbapi  # noqa: E402


def _broker_cpu(pid: int) -> float:
    """CPU seconds the broker process used so far (0 without --broker-pid)."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """CPU per call of this process (all its threads) and of the broker."""

    def __init__(self, broker_pid: int) -> None:
        self.broker_pid = broker_pid
        self.client0 = time.process_time()
        self.broker0 = _broker_cpu(broker_pid)

    def per_call(self, calls: int) -> str:
        client = (time.process_time() - self.client0) / max(calls, 1) * 1e6
        text = f"client {client:.0f} us/call"
        if self.broker_pid:
            broker = (_broker_cpu(self.broker_pid) - self.broker0) / max(calls, 1) * 1e6
            text += f", broker {broker:.0f} us/call"
        return text


def run_arm(target: str, threads: int, seconds: float, pipeline: bool,
            broker_pid: int = 0) -> Tuple[float, float, str]:
    """(calls per second, fraction of calls answered on the stream, CPU per call)."""
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
    cpu = Cpu(broker_pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    cpu_text = cpu.per_call(sum(counts))
    streamed = 0.0
    if pipeline:
        stats = conns[0]._mux.stats
        total = stats.stream_calls + stats.unary_calls
        streamed = stats.stream_calls / total if total else 0.0
    for c in conns:
        c.close()
    return sum(counts) / elapsed, streamed, cpu_text


def run_aio_arm(target: str, tasks: int, seconds: float, pipeline: bool,
                broker_pid: int = 0) -> Tuple[float, str]:
    """(calls per second, CPU per call) of ``tasks`` asyncio tasks, each with
    its own connection."""

    async def main() -> float:
        client = f"bench-aio-{pipeline}-{tasks}-{time.monotonic_ns()}"
        conns = [await aio.connect(target, client_id=client, autocommit=True,
                                   pipeline=pipeline) for _ in range(tasks)]
        stop = False
        counts = [0] * tasks

        async def work(i: int) -> None:
            cur = conns[i].cursor()
            n = 0
            while not stop:
                await cur.execute("SELECT %s::int8", (n,))
                n += 1
            counts[i] = n

        cpu = Cpu(broker_pid)
        t0 = time.monotonic()
        runners = [asyncio.ensure_future(work(i)) for i in range(tasks)]
        await asyncio.sleep(seconds)
        stop = True
        await asyncio.gather(*runners)
        elapsed = time.monotonic() - t0
        cpu_text = cpu.per_call(sum(counts))
        for c in conns:
            await c.close()
        return sum(counts) / elapsed, cpu_text

    return asyncio.run(main())


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
    parser.add_argument("--broker-pid", type=int, default=0,
                        help="the broker's pid, to report its CPU per call too")
    args = parser.parse_args()
    print(f"load average at start: {open('/proc/loadavg').read().strip()}")
    for r in range(args.repeats):
        u = lone_latency(args.target, args.lone_calls, False)
        s = lone_latency(args.target, args.lone_calls, True)
        print(f"repeat {r}: lone caller median: unary {u:.0f} us, stream {s:.0f} us "
              f"({s / u:.2f}x)")
        for n in (int(x) for x in args.threads.split(",")):
            unary, _, ucpu = run_arm(args.target, n, args.seconds, False, args.broker_pid)
            stream, share, scpu = run_arm(args.target, n, args.seconds, True, args.broker_pid)
            print(f"repeat {r}: {n:3d} threads: unary {unary:7.0f}/s ({ucpu}), pipeline=True "
                  f"{stream:7.0f}/s ({scpu}) = {stream / unary:.2f}x; {share:.0%} on the stream")
            unary, ucpu = run_aio_arm(args.target, n, args.seconds, False, args.broker_pid)
            stream, scpu = run_aio_arm(args.target, n, args.seconds, True, args.broker_pid)
            print(f"repeat {r}: {n:3d} asyncio tasks: unary {unary:7.0f}/s ({ucpu}), "
                  f"pipeline=True {stream:7.0f}/s ({scpu}) = {stream / unary:.2f}x")
    print(f"load average at end: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
