// Which PostgreSQL settings a session may carry (BeginSessionRequest.settings)
// and how their names are normalised. The broker applies them with SET LOCAL
// semantics at the start of every transaction it runs for the session, so the
// list only admits settings that are safe to change per transaction and that
// do not alter how the broker itself reads results (DateStyle, IntervalStyle,
// extra_float_digits, bytea_output, standard_conforming_strings stay fixed) or
// who the caller is (role, session_authorization are refused).
//
// Custom settings with a dotted name ("app.tenant_id", "request.jwt.claims")
// are allowed: row-level security policies read them with current_setting().
// Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_SQL_SESSION_SETTINGS_H_
#define SESSIONBROKER_SERVER_CORE_SQL_SESSION_SETTINGS_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sessionbroker::core {

using SessionSettings = std::vector<std::pair<std::string, std::string>>;

inline constexpr int kMaxSessionSettings = 32;
inline constexpr size_t kMaxSettingValueBytes = 4096;

// The built-in names a session may set (lower case), for docs and messages.
const std::vector<std::string>& AllowedSessionSettings();

// Checks and normalises the settings: names lower-cased and allowed, values
// without NUL bytes and at most kMaxSettingValueBytes, at most
// kMaxSessionSettings of them, sorted by name. INVALID_ARGUMENT naming the
// offending setting otherwise. Values are checked by PostgreSQL itself.
absl::StatusOr<SessionSettings> NormalizeSessionSettings(SessionSettings settings);

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_SQL_SESSION_SETTINGS_H_
