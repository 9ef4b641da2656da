// How the session layer words its statuses: instants and durations as its
// messages print them, the machine-readable reason payload, and copies of a
// status that share nothing with the original. Shared by SessionManager,
// TransactionMachine and EndedSessions so that every message reads the same.
// Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_SESSION_SESSION_STATUS_H_
#define SESSIONBROKER_SERVER_CORE_SESSION_SESSION_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sessionbroker::core::session_internal {

// 2023-11-14T22:13:20.000Z
std::string TimeText(absl::Time t);
// Truncated to milliseconds: "5m", "1.5s".
std::string DurationText(absl::Duration d);

// `status` carrying `token` as its kSessionReasonPayloadUrl payload.
absl::Status WithReason(absl::Status status, absl::string_view token);

// `status` with another code and a prefix on its message, sharing nothing
// with it. Copies of an absl::Status (and of its payload Cords) share
// reference-counted reps, and Debian's Abseil drops those counts in
// uninstrumented code: when a copy reaches another thread while one stays
// behind, ThreadSanitizer cannot see the synchronisation and reports a false
// race on the final delete (see ConnectionPool::Acquire). So statuses go to
// callers and to the runner moved, and what is derived from a status the
// session layer keeps (a transaction's abort reason, an ended session's) is
// built afresh here, payload bytes included (storage::Recode would share the
// payload Cords).
absl::Status Fresh(const absl::Status& status, absl::StatusCode code, absl::string_view prefix);
// Fresh with the same code and message.
absl::Status Detached(const absl::Status& status);

}  // namespace sessionbroker::core::session_internal

#endif  // SESSIONBROKER_SERVER_CORE_SESSION_SESSION_STATUS_H_
