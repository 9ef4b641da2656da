// Process-wide logging setup: spdlog to stderr, as human-readable text or as
// one JSON object per line (LOG_FORMAT=json) for log shippers.
//
// In JSON, a free-text field (core::Quoted: error="...", client="...") is a
// member of its own, escaped once as a JSON string, instead of text escapes
// inside "msg" escaped again:
//   {"ts":"...","level":"warn","thread":7,
//    "msg":"pool: event=connect_failed failures_in_row=1 retry_in=104ms",
//    "error":"connection to server ... failed: ...\n"}
// The rest of the message stays in "msg" as key=value text.
#ifndef SESSIONBROKER_SERVER_LOGGING_H_
#define SESSIONBROKER_SERVER_LOGGING_H_

#include <memory>
#include <string>

#include "spdlog/formatter.h"

namespace sessionbroker {

// `level`: trace|debug|info|warn|error|critical|off; `format`: text|json.
// Sets core::Quoted's style to match. Call once, before other threads start.
void InitLogging(const std::string& level, const std::string& format);

// The formatter InitLogging installs for `format` (text|json). A JSON
// formatter lifts out fields only when Quoted runs in marked style
// (core::SetLogFieldStyle), as InitLogging("...", "json") sets it.
std::unique_ptr<spdlog::formatter> MakeLogFormatter(const std::string& format);

}  // namespace sessionbroker

#endif  // SESSIONBROKER_SERVER_LOGGING_H_
