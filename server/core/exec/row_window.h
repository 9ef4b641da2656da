// RowWindow: the rows of one streamed statement on their way from the
// connection that reads them (the producer: a pool thread, through
// storage::RowSink) to the RPC that writes them (the consumer: gRPC
// reactions, which never block).
//
// Rows are grouped into chunks of at most chunk_bytes (window_bytes / 4; a
// single larger row is a chunk of its own). The producer blocks while the
// chunks published and not yet written, plus the one being gathered, hold
// more than window_bytes and something is still unwritten, so a reader that
// stops reading stops the reading from PostgreSQL: per call the broker holds
// at most about window_bytes (or one row, if larger) of rows.
//
// Consumer protocol: `ready` runs (on the producer's thread, with no lock
// held) when a chunk is published while the consumer is idle; the consumer
// then calls Take() after each write until it returns nothing, which makes
// it idle again. Close() (the RPC ended) makes the producer's next or
// blocked call fail with the given status.
//
// Thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_EXEC_ROW_WINDOW_H_
#define SESSIONBROKER_SERVER_CORE_EXEC_ROW_WINDOW_H_

#include <cstddef>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "server/core/base/mutex.h"
#include "server/storage/db_connection.h"
#include "server/storage/value.h"

namespace sessionbroker::core {

class RowWindow final : public storage::RowSink {
 public:
  struct Chunk {
    // The first chunk carries the columns (and no rows).
    bool has_columns = false;
    std::vector<storage::Column> columns;
    std::vector<std::vector<storage::Value>> rows;
    size_t bytes = 0;
  };

  RowWindow(size_t window_bytes, absl::AnyInvocable<void()> ready);
  RowWindow(const RowWindow&) = delete;
  RowWindow& operator=(const RowWindow&) = delete;

  // Producer (storage::RowSink).
  absl::Status Columns(std::vector<storage::Column> columns) override;
  absl::Status Row(std::vector<storage::Value> row, size_t bytes) override;
  // The statement is being cancelled: as Close(why).
  void Stop(absl::Status why) override { Close(std::move(why)); }
  // Producer: publishes the rows gathered so far (the statement has ended).
  void Flush();

  // Consumer: the next chunk to write, or nothing (the consumer is idle
  // until `ready` runs again). The chunk taken before is taken as written:
  // its bytes leave the window.
  std::optional<Chunk> Take();
  // Consumer: the RPC is over; the producer stops with `why`.
  void Close(absl::Status why);

  // The most bytes the window held at once (rows published, being written,
  // or gathered), for tests and metrics.
  size_t peak_bytes() const;
  // True while the producer waits for room (the consumer is behind).
  bool producer_waiting() const;

 private:
  // Publishes the gathered chunk; true if `ready_` must run (after unlock).
  bool PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t HeldLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t window_bytes_;
  const size_t chunk_bytes_;
  absl::AnyInvocable<void()> ready_;

  mutable Mutex mu_;
  CondVar room_;
  Chunk gathering_ ABSL_GUARDED_BY(mu_);
  std::deque<Chunk> published_ ABSL_GUARDED_BY(mu_);
  size_t published_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t writing_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool consumer_idle_ ABSL_GUARDED_BY(mu_) = true;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status why_closed_ ABSL_GUARDED_BY(mu_);
  size_t peak_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool producer_waiting_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_EXEC_ROW_WINDOW_H_
