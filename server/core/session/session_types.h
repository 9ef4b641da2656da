// The values the session layer's public API speaks in: what BeginSession and
// BeginTransaction ask for, a session as callers see it, and the payload URL
// of the statuses the layer produces. Plain values; SessionManager
// (session_manager.h) is their home for callers, which include it.
#ifndef SESSIONBROKER_SERVER_CORE_SESSION_SESSION_TYPES_H_
#define SESSIONBROKER_SERVER_CORE_SESSION_SESSION_TYPES_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/core/sql/session_settings.h"
#include "server/storage/db_connection.h"

namespace sessionbroker::core {

// Payload of the statuses the session layer produces itself: one of the
// reason tokens below, so clients can tell them apart without parsing text.
inline constexpr absl::string_view kSessionReasonPayloadUrl =
    "type.googleapis.com/sessionbroker.v1.SessionReason";

using Isolation = storage::TransactionOptions::Isolation;

// What BeginSession asks for.
struct SessionSpec {
  absl::Duration ttl = absl::ZeroDuration();  // zero: default_ttl
  bool read_only = false;
  Isolation isolation = Isolation::kDefault;
  SessionSettings settings;
  std::string label;
  std::string client_id;
  // The PostgreSQL role the session's statements run as ("" = the broker's).
  std::string database_role;
};

// A session as callers see it.
struct SessionInfo {
  std::string name;
  std::string label;
  std::string client_id;
  absl::Time create_time;
  absl::Time expire_time;
  absl::Time max_expire_time;
  absl::Duration ttl;
  bool read_only = false;
  Isolation isolation = Isolation::kDefault;
  SessionSettings settings;
  bool in_transaction = false;
  bool transaction_aborted = false;
  std::string abort_reason;
  absl::Time transaction_start_time = absl::InfinitePast();
  bool held_by_stream = false;
  int queued_calls = 0;
};

// Who makes a call that names a session. A caller that does not see every
// session finds only those its client began: another client's session (live
// or remembered as ended) answers exactly as a name that never existed
// (NOT_FOUND, same message), so names cannot be probed. Default: sees all
// (no clients file, or tests of other rules).
struct Caller {
  std::string client_id;
  // An admin client, or a broker without a clients file (where client ids
  // are self-declared and prove nothing).
  bool sees_all = true;

  bool Owns(absl::string_view owner) const { return sees_all || owner == client_id; }
};

// BeginTransaction's options; the session's own apply where these say nothing.
struct TransactionSpec {
  Isolation isolation = Isolation::kDefault;
  bool read_only = false;
  bool deferrable = false;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_SESSION_SESSION_TYPES_H_
