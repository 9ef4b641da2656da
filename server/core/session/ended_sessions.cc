#include "server/core/session/ended_sessions.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/session/session_status.h"

namespace sessionbroker::core {

using session_internal::TimeText;
using session_internal::WithReason;

EndedSessions::EndedSessions(int capacity, absl::Duration remember_for)
    : capacity_(capacity), remember_for_(remember_for) {}

void EndedSessions::Remember(const std::string& name, EndedSession ended) {
  const absl::Time now = ended.at;
  ended_.insert_or_assign(name, std::move(ended));
  order_.emplace_back(now, name);
  while (!order_.empty() && (static_cast<int>(order_.size()) > capacity_ ||
                             order_.front().first + remember_for_ < now)) {
    ended_.erase(order_.front().second);
    order_.pop_front();
  }
}

const EndedSession* EndedSessions::Find(absl::string_view name, absl::Time now) const {
  auto it = ended_.find(name);
  // Remember prunes only when another session ends: check the age here too,
  // so an old entry is never reported.
  if (it == ended_.end() || now > it->second.at + remember_for_) return nullptr;
  return &it->second;
}

absl::Status EndedSessions::StatusOf(absl::string_view name, const EndedSession& ended) {
  static constexpr absl::string_view kTokens[] = {"SESSION_ENDED", "SESSION_EXPIRED",
                                                  "SESSION_ORPHANED", "SESSION_MAX_LIFETIME",
                                                  "BROKER_SHUTDOWN"};
  return WithReason(
      absl::FailedPreconditionError(absl::StrCat("session ", name, " ended at ", TimeText(ended.at),
                                                 ": ", ended.detail, "; begin a new session")),
      kTokens[static_cast<int>(ended.reason)]);
}

}  // namespace sessionbroker::core
