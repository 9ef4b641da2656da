// The libpq implementation of PipelineEngine (pipeline_engine.h): one or
// more event-loop threads (Options::loops), each owning its share of a small
// hot set of connections on libpq's asynchronous API, plus per loop one helper
// thread that sends cancel requests (PQcancel opens a connection of its own
// and blocks, which a loop never does).
//
// How it works:
//  - Submit hands a call to the loop with the fewest calls open (an atomic
//    count per loop, no lock shared by the loops); the id it returns names
//    that loop, so Cancel goes straight to it. The hot connections are
//    divided among the loops (counts differing by at most one).
//  - Calls waiting for a connection queue per client id and are taken round
//    robin, `weight` per client per turn (pipeline_fair_queue.h), so a
//    flooding client cannot put another's statement behind its backlog;
//    with Options::fair_queuing false, one FIFO.
//  - Each connection connects without blocking (PQconnectStart /
//    PQconnectPoll), applies the broker's baseline settings (the same as
//    pq_connection.h's), switches to non-blocking mode and enters pipeline
//    mode. A failed connect or a lost connection is retried after the
//    caller's backoff (Options::backoff, the pool's ReconnectBackoff when
//    wired by the broker).
//  - Submissions and cancels reach the loop through an inbox and an eventfd.
//    Each loop turn (a CompletionRound, pipeline_engine.h) reads what the
//    sockets have, answers what completed, handles deadlines and cancels,
//    then runs one dispatch round: queued
//    calls go to connections as pipeline_dispatch.h chooses, each as
//    [Parse,] Bind/Execute, Sync, and every connection written to is flushed
//    once at the end of the round (the socket is corked with TCP_CORK while
//    the round writes, because libpq 15's PQpipelineSync flushes every time).
//  - A cacheable statement is prepared on a connection under a name of its
//    own (per SQL text and parameter types, pq_codec.h), in the same round
//    trip as its first run; up to Options::statement_cache_size per
//    connection, beyond that unprepared. A prepared copy that went stale
//    (26000, or 0A000 "cached plan must not change result type" after DDL
//    changed a `SELECT *`'s columns) is dropped, deallocated on the server
//    ahead of the next statement the connection sends (0A000), and the
//    statement retried once, prepared afresh (it failed under its own Sync:
//    nothing was applied).
//  - A batch (SubmitBatch) goes out as each statement's [Parse,]
//    Bind/Execute and one Sync after the last: one implicit transaction, one
//    queue entry and one unit for the depth cap, cancelled as a unit. Its
//    results are read after the Sync; the first error is the batch's
//    (storage::ForStatement names the statement), the statements after it
//    were skipped and nothing of it committed, so a stale prepared copy or a
//    stray 57014 (below) retries the whole batch once.
//  - A statement that fails with 57014 "canceling statement due to user
//    request" though nobody cancelled it was hit by a cancel meant for the
//    statement before it (a cancel request hits whatever the backend runs);
//    it ran under its own Sync, so nothing was applied, and it is retried
//    once.
//  - Columns of types that are not built in are named from a cache shared
//    by the loop's connections, filled by a pipelined catalog lookup.
//
// Ownership: the loop owns its connections and threads; the destructor
// answers every call still open with UNAVAILABLE and joins the threads.
// Thread safety: as PipelineEngine.
#ifndef SESSIONBROKER_SERVER_STORAGE_PQ_PIPELINE_LOOP_H_
#define SESSIONBROKER_SERVER_STORAGE_PQ_PIPELINE_LOOP_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "server/storage/pipeline_dispatch.h"
#include "server/storage/pipeline_engine.h"

namespace sessionbroker::storage {

class PqPipelineLoop final : public PipelineEngine {
 public:
  struct Options {
    // A libpq connection string with the pool's defaults already added
    // (ConninfoWithDefaults).
    std::string conninfo;
    int connections = 2;
    // Event-loop threads the connections are divided among: at least 1, at
    // most `connections` (a loop with no connection would only add a hop).
    int loops = 1;
    // Serve waiting calls round robin across client ids (the pool's
    // BROKER_FAIR_QUEUING); false: one FIFO.
    bool fair_queuing = true;
    DispatchLimits limits;
    int statement_cache_size = 100;
    // Delay before reconnecting after `failures` consecutive failures (>= 1).
    std::function<absl::Duration(int failures)> backoff;
    // A connection older than this is closed once it has nothing in flight
    // (it takes no new statements meanwhile) and opened again, as the pool
    // recycles its own (DB_POOL_RECYCLE); connection i of n recycles at
    // recycle * (1 - 0.1 * i / n), so they do not all go at once.
    // absl::InfiniteDuration(): never.
    absl::Duration recycle = absl::InfiniteDuration();
    // Cork each connection's socket while a dispatch round writes to it.
    bool cork = true;
    // The time deadlines are compared with.
    std::function<absl::Time()> now;
  };

  explicit PqPipelineLoop(Options options);
  ~PqPipelineLoop() override;

  PqPipelineLoop(const PqPipelineLoop&) = delete;
  PqPipelineLoop& operator=(const PqPipelineLoop&) = delete;

  uint64_t Submit(PipelineCall call, PipelineDone done) override;
  uint64_t SubmitBatch(PipelineBatch batch, PipelineBatchDone done) override;
  void Cancel(uint64_t id, absl::Status why) override;
  PipelineStats Stats() const override;

  // The server process ids of the connections that are up (for tests and
  // logs: matching pg_stat_activity).
  std::vector<int> BackendPids() const;

 private:
  class Impl;  // one event loop
  // The loop a new call (or batch) goes to.
  size_t PickLoop();

  std::vector<std::unique_ptr<Impl>> loops_;
  // Where Submit starts looking for the least-loaded loop.
  std::atomic<uint64_t> next_{0};
};

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_PQ_PIPELINE_LOOP_H_
