// One escaper per output format the broker writes text into: text log
// fields, JSON strings (JSON logs) and Prometheus label values; and
// Abbreviated, for text a caller sent that an error message repeats. Each keeps
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

// The most characters (bytes) of caller-supplied text (a session name, a
// setting's name) an error message repeats: a message must stay far below
// gRPC's 8 KiB metadata limit, or the caller gets RESOURCE_EXHAUSTED instead
// of the error.
inline constexpr size_t kMaxEchoedChars = 128;

// `text` if it has at most kMaxEchoedChars bytes; else its first
// kMaxEchoedChars bytes (fewer, not to split a UTF-8 character) and "...".
std::string Abbreviated(absl::string_view text);

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_ESCAPE_H_
