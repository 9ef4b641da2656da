// One escaper per output format the broker writes text into: text log
// fields, JSON strings (JSON logs) and Prometheus label values. Each keeps
// its format's quoting rules in one place, and each output is valid UTF-8:
// an invalid UTF-8 byte in the input becomes U+FFFD. Pure functions;
// thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_ESCAPE_H_
#define SESSIONBROKER_SERVER_CORE_BASE_ESCAPE_H_

#include <string>

#include "absl/strings/string_view.h"

namespace sessionbroker::core {

// The inside of a double-quoted text log field: `"`, `\`, newline, carriage
// return and tab backslash-escaped (\" \\ \n \r \t), other control
// characters (below 0x20) replaced by '?', so a field stays on one line and
// one token. No quotes around it.
std::string EscapeForLogText(absl::string_view value);

// Appends `value` to `out` as a JSON string, quotes included (RFC 8259):
// \" \\ \n \r \t, other control characters as \u00XX.
void AppendJsonString(absl::string_view value, std::string* out);

// A Prometheus label value (text exposition format 0.0.4): \ " and newline
// escaped as \\ \" \n; everything else as is. No quotes around it.
std::string EscapePrometheusLabel(absl::string_view value);

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_ESCAPE_H_
