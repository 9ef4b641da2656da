#include "server/core/exec/request_ledger.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace sessionbroker::core {
namespace {

// Bookkeeping per entry beyond its strings (map slot, queue item): a rough
// figure, so that many tiny entries still count against max_bytes.
constexpr size_t kEntryOverheadBytes = 128;

}  // namespace

RequestLedger::RequestLedger(const Clock& clock, RequestLedgerOptions options)
    : clock_(clock), options_(options) {}

std::string RequestLedger::Key(absl::string_view scope, absl::string_view request_id) {
  // The scope (a client id) may hold any character but NUL-free request ids
  // are checked by the caller; the length prefix keeps keys unambiguous.
  return absl::StrCat(scope.size(), ":", scope, "/", request_id);
}

size_t RequestLedger::Cost(const std::string& key, const Entry& entry) {
  return 2 * key.size() + entry.fingerprint.size() + entry.outcome.size() + kEntryOverheadBytes;
}

RequestLedger::Claim RequestLedger::Begin(absl::string_view scope, absl::string_view request_id,
                                          absl::string_view fingerprint) {
  const absl::Time now = clock_.Now();
  std::string key = Key(scope, request_id);
  MutexLock lock(&mu_);
  TrimLocked(now);
  Claim claim;
  if (auto it = entries_.find(key); it != entries_.end()) {
    const Entry& e = it->second;
    if (e.fingerprint != fingerprint) {
      claim.kind = Claim::Kind::kMismatch;
    } else if (!e.done) {
      claim.kind = Claim::Kind::kRunning;
    } else if (e.omitted) {
      claim.kind = Claim::Kind::kOmitted;
    } else {
      claim.kind = Claim::Kind::kReplay;
      claim.outcome = e.outcome;
    }
    return claim;
  }
  Entry entry;
  entry.fingerprint = std::string(fingerprint);
  entry.created = now;
  entry.generation = next_generation_++;
  bytes_ += Cost(key, entry);
  order_.push_back(Queued{key, entry.generation});
  entries_.emplace(std::move(key), std::move(entry));
  TrimLocked(now);
  return claim;
}

void RequestLedger::Complete(absl::string_view scope, absl::string_view request_id,
                             std::string outcome) {
  const std::string key = Key(scope, request_id);
  MutexLock lock(&mu_);
  auto it = entries_.find(key);
  // Forgotten meanwhile (over max_bytes): a retry simply runs again.
  if (it == entries_.end() || it->second.done) return;
  Entry& e = it->second;
  bytes_ -= Cost(key, e);
  e.done = true;
  if (outcome.size() > options_.max_outcome_bytes) {
    e.omitted = true;
  } else {
    e.outcome = std::move(outcome);
  }
  bytes_ += Cost(key, e);
  TrimLocked(clock_.Now());
}

void RequestLedger::Abandon(absl::string_view scope, absl::string_view request_id) {
  const std::string key = Key(scope, request_id);
  MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.done) return;
  EraseLocked(key);
}

void RequestLedger::EraseLocked(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  bytes_ -= Cost(key, it->second);
  entries_.erase(it);
}

void RequestLedger::TrimLocked(absl::Time now) {
  while (!order_.empty()) {
    const Queued& oldest = order_.front();
    auto it = entries_.find(oldest.key);
    if (it == entries_.end() || it->second.generation != oldest.generation) {
      order_.pop_front();  // stale: that claim was abandoned or replaced
      continue;
    }
    const bool expired = now - it->second.created >= options_.window;
    if (!expired && bytes_ <= options_.max_bytes) break;
    EraseLocked(oldest.key);
    order_.pop_front();
  }
}

size_t RequestLedger::entries() const {
  MutexLock lock(&mu_);
  return entries_.size();
}

size_t RequestLedger::bytes() const {
  MutexLock lock(&mu_);
  return bytes_;
}

}  // namespace sessionbroker::core
