// RequestLedger: the broker's in-memory memory of calls that carried a
// request_id (BeginSession, and BeginTransaction, Commit, Execute and
// ExecuteBatch in a session), so that a retry gets the first call's outcome
// instead of doing the work twice (docs/retries.md).
//
//  * Keyed by (scope, request_id); the scope is the caller's client id, so one
//    client can never see (or block) another's outcomes.
//  * A claim remembers the request's fingerprint (a hash of its body): a
//    retry with the same id and another body is refused, never answered with
//    the first body's outcome.
//  * Only successes are remembered: a call that failed is forgotten
//    (Abandon), so its retry runs again, as a one-shot write whose attempt
//    failed does (nothing of a failed call was committed).
//  * Outcomes live for the window, and in at most max_bytes in total: the
//    oldest are forgotten first (their retries then run again). An outcome
//    over max_outcome_bytes is remembered without its bytes (kOmitted).
//  * A claim while the first call with that id still runs answers kRunning
//    (the transport turns it into ABORTED: retry later).
//
// Nothing survives a restart: sessions do not either. Thread-safe; the clock
// must outlive it.
#ifndef SESSIONBROKER_SERVER_CORE_EXEC_REQUEST_LEDGER_H_
#define SESSIONBROKER_SERVER_CORE_EXEC_REQUEST_LEDGER_H_

#include <cstddef>
#include <deque>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/core/base/clock.h"
#include "server/core/base/mutex.h"

namespace sessionbroker::core {

struct RequestLedgerOptions {
  // How long an outcome is remembered (BROKER_REQUEST_ID_WINDOW).
  absl::Duration window = absl::Hours(24);
  // All remembered outcomes together (BROKER_REQUEST_ID_MEMORY_BYTES).
  size_t max_bytes = 64 << 20;
  // One outcome's bytes at most (BROKER_REQUEST_OUTCOME_MAX_BYTES).
  size_t max_outcome_bytes = 64 << 10;
};

class RequestLedger final {
 public:
  struct Claim {
    enum class Kind {
      // No earlier call (or it failed, or was forgotten): run it, then
      // Complete() or Abandon().
      kRun,
      // An earlier call with this id and body succeeded: `outcome` is its
      // serialized response.
      kReplay,
      // It succeeded, but its response was over max_outcome_bytes.
      kOmitted,
      // The id was used for a different request body.
      kMismatch,
      // The first call with this id has not finished yet.
      kRunning,
    };
    Kind kind = Kind::kRun;
    std::string outcome;
  };

  RequestLedger(const Clock& clock, RequestLedgerOptions options);
  RequestLedger(const RequestLedger&) = delete;
  RequestLedger& operator=(const RequestLedger&) = delete;

  Claim Begin(absl::string_view scope, absl::string_view request_id, absl::string_view fingerprint);
  // The claimed call succeeded with this serialized response.
  void Complete(absl::string_view scope, absl::string_view request_id, std::string outcome);
  // The claimed call failed: forget the id.
  void Abandon(absl::string_view scope, absl::string_view request_id);

  const RequestLedgerOptions& options() const { return options_; }
  size_t entries() const;
  size_t bytes() const;

 private:
  struct Entry {
    std::string fingerprint;
    std::string outcome;
    absl::Time created;
    bool done = false;
    bool omitted = false;
    // Identifies this entry in order_ (an id reused after expiry or
    // Abandon gets a new generation).
    uint64_t generation = 0;
  };
  struct Queued {
    std::string key;
    uint64_t generation;
  };

  static std::string Key(absl::string_view scope, absl::string_view request_id);
  static size_t Cost(const std::string& key, const Entry& entry);
  void EraseLocked(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets expired entries, then the oldest finished ones while over
  // max_bytes.
  void TrimLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock& clock_;
  const RequestLedgerOptions options_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  // Claims in creation order (stale items, whose entry is gone or newer,
  // are skipped).
  std::deque<Queued> order_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_EXEC_REQUEST_LEDGER_H_
