// Helpers for the broker's structured log lines, which read as key=value
// pairs ("pool: event=connect_failed error=\"...\" retry_in=200ms") in text
// logs and inside the "msg" of JSON logs. Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_LOG_FIELDS_H_
#define SESSIONBROKER_SERVER_CORE_BASE_LOG_FIELDS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sessionbroker::core {

// A value in double quotes, with `"`, `\` and control characters escaped, so
// that a message with spaces stays one field.
inline std::string Quoted(absl::string_view value) {
  std::string out;
  out.reserve(value.size() + 2);
  out.push_back('"');
  for (const char c : value) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out.push_back(static_cast<unsigned char>(c) < 0x20 ? '?' : c);
    }
  }
  out.push_back('"');
  return out;
}

// A duration rounded to the millisecond ("1.234s", "15ms", "0").
inline std::string Millis(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Milliseconds(1)));
}

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_LOG_FIELDS_H_
