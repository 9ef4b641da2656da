// EndedSessions: the memory of sessions that ended, so that a call naming one
// is told "ended at T, because R" (FAILED_PRECONDITION, with a reason token)
// rather than "not found". Bounded twice: at most `capacity` entries, and an
// entry older than `remember_for` is neither reported nor kept once a newer
// one arrives; the oldest go first.
//
// Owns its entries (copies of the names and details). Thread-compatible:
// SessionManager guards it with its own mutex.
#ifndef SESSIONBROKER_SERVER_CORE_SESSION_ENDED_SESSIONS_H_
#define SESSIONBROKER_SERVER_CORE_SESSION_ENDED_SESSIONS_H_

#include <cstddef>
#include <list>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sessionbroker::core {

// Why a session ended; each has its own reason token (see StatusOf).
enum class EndReason { kClient, kExpired, kOrphaned, kLifetime, kShutdown };

struct EndedSession {
  EndReason reason = EndReason::kClient;
  absl::Time at;
  // Says why, for people: "its lease expired: ...".
  std::string detail;
  // Whose it was: to any other client it is as unknown as a name that never
  // existed (SessionManager's ownership rule).
  std::string client_id;
};

class EndedSessions final {
 public:
  // capacity <= 0 remembers nothing.
  EndedSessions(int capacity, absl::Duration remember_for);
  EndedSessions(const EndedSessions&) = delete;
  EndedSessions& operator=(const EndedSessions&) = delete;

  // Remembers that `name` ended; `ended.at` is taken as the newest time so
  // far. Forgets what is now beyond the bounds.
  void Remember(const std::string& name, EndedSession ended);
  // How `name` ended, if it is remembered and ended no more than
  // remember_for before `now`; nullptr otherwise. Valid until the next
  // Remember.
  const EndedSession* Find(absl::string_view name, absl::Time now) const;
  // Whether `name` is remembered at all, whatever its age: a new session
  // never takes a name that could still be reported as ended.
  bool Contains(absl::string_view name) const { return ended_.contains(name); }
  size_t size() const { return ended_.size(); }

  // What a call on the ended session `name` gets: FAILED_PRECONDITION saying
  // when and why, with the reason token (SESSION_ENDED, SESSION_EXPIRED,
  // SESSION_ORPHANED, SESSION_MAX_LIFETIME, BROKER_SHUTDOWN).
  static absl::Status StatusOf(absl::string_view name, const EndedSession& ended);

 private:
  const int capacity_;
  const absl::Duration remember_for_;
  absl::flat_hash_map<std::string, EndedSession> ended_;
  // (when, name), oldest first: the order of forgetting.
  std::list<std::pair<absl::Time, std::string>> order_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_SESSION_ENDED_SESSIONS_H_
