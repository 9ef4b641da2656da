// Helpers for the broker's structured log lines, which read as key=value
// pairs ("pool: event=connect_failed error=\"...\" retry_in=200ms") in text
// logs and inside the "msg" of JSON logs.
//
// A free-text value goes through Quoted. How it renders is process-wide, set
// once by the logging setup (server/logging.cc) before other threads start:
// in text style (the default, so any logger shows readable fields) it is the
// value in double quotes, escaped by EscapeForLogText; in marked style it is
// the raw value between kLogFieldBegin and kLogFieldEnd, for a structured
// formatter (JSON) to escape once in its own format instead of escaping the
// text escapes again.
//
// Pure functions apart from the style, which is an atomic; thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_LOG_FIELDS_H_
#define SESSIONBROKER_SERVER_CORE_BASE_LOG_FIELDS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sessionbroker::core {

enum class LogFieldStyle { kText, kMarked };

// ASCII record and unit separator: control characters, which never reach a
// log line unescaped otherwise (Quoted replaces them inside a marked value).
inline constexpr char kLogFieldBegin = '\x1e';
inline constexpr char kLogFieldEnd = '\x1f';

// Sets how Quoted renders; call before other threads log.
void SetLogFieldStyle(LogFieldStyle style);
LogFieldStyle GetLogFieldStyle();

// A free-text value as one field: `"` + EscapeForLogText(value) + `"` in
// text style; kLogFieldBegin + value + kLogFieldEnd in marked style (with
// any of the two marker bytes in the value replaced by '?', as text style
// replaces control characters).
std::string Quoted(absl::string_view value);

// A duration rounded to the millisecond ("1.234s", "15ms", "0").
inline std::string Millis(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Milliseconds(1)));
}

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_LOG_FIELDS_H_
