// The interface of the pipelined execution engine (issue 14): one-shot
// statements from different callers sent back to back on a small hot set of
// connections in libpq's pipeline mode, each followed by its own Sync, so
// each runs in its own implicit transaction and one caller's error never
// touches another's. A batch (SubmitBatch) goes out as its statements back to
// back under ONE Sync: one implicit transaction, all or nothing (an error
// makes PostgreSQL skip the rest up to the Sync, and nothing before it
// commits). The core routes eligible Execute and ExecuteBatch calls here; the libpq
// event loop that implements it is pq_pipeline_loop.h (the only code that
// includes libpq for it). No libpq here, so the core and its tests' fakes can
// use it.
//
// What callers may rely on:
//  - `done` runs exactly once per Submit or SubmitBatch, on the engine's loop thread, never
//    inside Submit or Cancel; it must not block (it runs between the loop's
//    socket reads).
//  - A call answered early (Cancel, deadline) may still run on the server:
//    it was already sent, in autocommit, and its result is discarded. A
//    cancel request is sent to the server only while the call heads its
//    connection's queue, so it cannot stop another caller's statement (a
//    late one that does is retried once: see pq_pipeline_loop.h).
//  - A lost connection answers the calls it had sent with UNAVAILABLE (a
//    write may or may not have been applied); calls not yet sent wait for
//    another connection.
//
// Thread safety: Submit, Cancel and Stats are thread-safe.
//
// CompletionRound (below) lets the loop's answers of one turn go out
// together: the engine opens a round on its thread around each turn, and a
// `done` that would start I/O for its result (a stream's write) defers that
// to the round's end, so results completed in one turn share one write.
#ifndef SESSIONBROKER_SERVER_STORAGE_PIPELINE_ENGINE_H_
#define SESSIONBROKER_SERVER_STORAGE_PIPELINE_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/storage/value.h"

namespace sessionbroker::storage {

struct PipelineCall {
  // Its parameters' types are the ones their kinds imply: named types
  // (Statement::param_types) need a lookup the engine does not do, so such
  // statements are not routed here. `cacheable` statements are prepared
  // (once per connection, in the same round trip as their first run).
  Statement statement;
  // As ExecuteOptions::max_result_bytes: a result over it fails its own
  // caller only, with RESOURCE_EXHAUSTED.
  size_t max_result_bytes = 0;
  // Past it the call is answered DEADLINE_EXCEEDED: at once if it was not
  // sent yet; if it was, at once too, and a cancel request goes out when it
  // heads its connection's queue.
  absl::Time deadline = absl::InfiniteFuture();
  // Who asks (the caller's client id; "" for none) and its weight in the
  // engine's fair queue (ClientQuota::weight, at least 1): calls waiting for
  // a hot connection are taken round robin across clients, `weight` per turn
  // (pipeline_fair_queue.h).
  std::string client_id;
  int weight = 1;
};

using PipelineDone = absl::AnyInvocable<void(absl::StatusOr<QueryResult>) &&>;

// Statements run in one implicit transaction (one Sync after the last).
// Errors are reported as the pooled ExecuteBatch reports them: the failed
// statement's status prefixed "statement <k> of <n>: " and its SqlErrorDetail
// with statement_index k (storage::ForStatement). The results are read after
// the Sync, so a result over `max_result_bytes` (the batch's results
// together, as the pooled path counts them) fails the batch though its
// statements committed: the core sends writes only without RETURNING
// (Pipelinable), and `writes` makes that error say the batch committed.
struct PipelineBatch {
  std::vector<Statement> statements;  // at least one; param types as PipelineCall's
  size_t max_result_bytes = 0;
  // Some statement writes (a catalog-proved INSERT, UPDATE or DELETE).
  bool writes = false;
  absl::Time deadline = absl::InfiniteFuture();
  std::string client_id;  // as PipelineCall's: one entry of the fair queue
  int weight = 1;
};

using PipelineBatchDone = absl::AnyInvocable<void(absl::StatusOr<std::vector<QueryResult>>) &&>;

// Counters and gauges for pool status and metrics.
struct PipelineStats {
  int loops = 0;                     // event-loop threads the hot set is divided among
  int connections = 0;               // configured hot set
  int connections_up = 0;            // connected and in pipeline mode
  int64_t in_flight = 0;             // calls sent, not yet answered by the server
  int64_t queued = 0;                // calls waiting for a connection
  uint64_t statements = 0;           // sent (retries included; a batch counts each)
  uint64_t batches = 0;              // SubmitBatch calls sent (retries included)
  uint64_t flushes = 0;              // dispatch rounds that wrote to a connection
  uint64_t cancels_sent = 0;         // statements a cancel request was sent for
  uint64_t cancel_resends = 0;       // requests sent again: the statement still ran
  uint64_t retries = 0;              // statements sent again (stray cancel, stale prepare)
  uint64_t connection_failures = 0;  // connects that failed and connections lost
  uint64_t recycles = 0;             // connections closed for their age and reopened
  int max_depth = 0;                 // statements in flight per connection, at most
  uint64_t calls = 0;                // calls answered (errors, deadlines, cancels included)
  uint64_t errors = 0;               // calls answered with an error status
  // Statements written per connection per dispatch round, a moving average
  // over roughly the last 100 flushes (0 before the first).
  double recent_statements_per_flush = 0;
};

// One batch of completions on the current thread. While a round is open on
// a thread, Defer() queues work to run when the round closes (in the order
// deferred, on the same thread, with no round open); with none open it
// refuses and the caller acts at once. Rounds do not nest: an inner one is
// inert. Thread-compatible: each object lives on the stack of one thread.
class CompletionRound {
 public:
  using Action = absl::AnyInvocable<void() &&>;

  CompletionRound() : owner_(current_ == nullptr) {
    if (owner_) current_ = this;
  }
  ~CompletionRound() {
    if (!owner_) return;
    current_ = nullptr;
    // What an action defers now runs at once (no round is open), so this
    // list does not grow while it is run.
    for (Action& action : deferred_) std::move(action)();
  }
  CompletionRound(const CompletionRound&) = delete;
  CompletionRound& operator=(const CompletionRound&) = delete;

  // Whether a round is open on this thread.
  static bool Open() { return current_ != nullptr; }
  // Queues `action` for the end of this thread's round; false (and `action`
  // untouched) when none is open.
  static bool Defer(Action& action) {
    if (current_ == nullptr) return false;
    current_->deferred_.push_back(std::move(action));
    return true;
  }

 private:
  static inline thread_local CompletionRound* current_ = nullptr;
  const bool owner_;
  std::vector<Action> deferred_;
};

class PipelineEngine {
 public:
  virtual ~PipelineEngine() = default;

  // Queues `call`; returns an id for Cancel().
  virtual uint64_t Submit(PipelineCall call, PipelineDone done) = 0;

  // Queues `batch` (its statements, then one Sync); returns an id for
  // Cancel(), which cancels the batch as a unit. A statement stopped by a
  // cancel request nobody in the engine sent (57014) rolled the whole
  // implicit transaction back, so the batch is retried once, as a whole.
  virtual uint64_t SubmitBatch(PipelineBatch batch, PipelineBatchDone done) = 0;

  // Answers the call `id` with `why` unless it was answered already, and
  // asks the server to cancel it if it is running (now, or once it heads its
  // connection's queue). Unknown or finished ids are ignored.
  virtual void Cancel(uint64_t id, absl::Status why) = 0;

  virtual PipelineStats Stats() const = 0;
};

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_PIPELINE_ENGINE_H_
